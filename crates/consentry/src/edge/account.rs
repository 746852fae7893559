//! The SPA's JSON routes (DESIGN.md flow steps 6 and 7): the recorded outcome of a flow, the
//! session user's consents, revoking one, logging out, and the demo's user list. Each
//! requires `X-Consentry: 1` and, where the browser sends one, an allowed `Origin`
//! ([`Caller`]).
//!
//! The consent routes act for the session's user, or for the user sent as
//! `Authorization: Bearer <user reference>`: an app with several users of its own reads each
//! one's consents without a session per user.

use consentry_core::cookie::{
    binding_cookie_name, clear_cookie, cookie_value, stored_hash, SameSite, SESSION_COOKIE,
};
use consentry_core::encoding::{constant_time_eq, form_value, log_field};
use consentry_core::outcome::format_rfc3339;
use consentry_core::{ConsentRecord, Error, ErrorCode, Outcome, Result, State, TokenSet};
use serde_json::{json, Value};
use worker::{Env, Method, Request, Response};

use super::callback::{ending_deadline_secs, exchange_interrupted};
use super::caller::Caller;
use super::config::{self, Config};
use super::provider_client::{GrantAtProvider, ProviderClient};
use super::start::transaction_expired;
use super::store::{ConsentRow, Store, UserRow};
use super::{now, open_store, raw_query, respond};

/// The SPA's routes.
enum Route {
    Outcome,
    Consents,
    Revoke(String),
    Logout,
    DemoUsers,
}

impl Route {
    fn find(method: &Method, path: &str, config: &Config) -> Option<Route> {
        match (method, path) {
            (Method::Get, "/auth/outcome") => Some(Route::Outcome),
            (Method::Get, "/auth/consents") => Some(Route::Consents),
            (Method::Post, "/auth/logout") => Some(Route::Logout),
            (Method::Get, "/auth/demo/users") if config.demo_users => Some(Route::DemoUsers),
            (Method::Delete, path) => path
                .strip_prefix("/auth/consents/")
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .map(|id| Route::Revoke(id.to_owned())),
            _ => None,
        }
    }
}

/// One request to a JSON route, after its guards.
struct Call<'a> {
    env: &'a Env,
    config: &'a Config,
    store: Store,
    caller: Caller,
    now: u64,
}

pub(super) async fn handle(
    request: Request,
    env: &Env,
    config: &Config,
) -> worker::Result<Response> {
    let caller = Caller::of(&request, config);
    let cors_origin = caller.cors_origin.clone();
    let Some(route) = Route::find(&request.method(), &request.path(), config) else {
        let error = Error::new(ErrorCode::NotFound, "no such route");
        return respond::json_error(&error, cors_origin.as_ref());
    };
    let answered = match caller.guard(config) {
        Ok(()) => serve(route, &request, env, config, caller).await,
        Err(error) => Err(error),
    };
    match answered {
        Ok(Answer::Json(body)) => respond::json(200, &body.to_string(), cors_origin.as_ref()),
        Ok(Answer::Outcome(outcome)) => {
            respond::json(200, &outcome.to_json(), cors_origin.as_ref())
        }
        Ok(Answer::Empty(cookie)) => respond::no_content(cookie.as_deref(), cors_origin.as_ref()),
        Err(error) => respond::json_error(&error, cors_origin.as_ref()),
    }
}

enum Answer {
    Json(Value),
    Outcome(Outcome),
    Empty(Option<String>),
}

async fn serve(
    route: Route,
    request: &Request,
    env: &Env,
    config: &Config,
    caller: Caller,
) -> Result<Answer> {
    let call = Call {
        env,
        config,
        store: open_store(env)?,
        caller,
        now: now(),
    };
    match route {
        Route::Outcome => call
            .outcome(&raw_query(request).unwrap_or_default())
            .await
            .map(Answer::Outcome),
        Route::Consents => call.consents().await.map(Answer::Json),
        Route::Revoke(id) => call.revoke(&id).await.map(Answer::Json),
        Route::Logout => call.logout().await.map(Answer::Empty),
        Route::DemoUsers => call.demo_users().await.map(Answer::Json),
    }
}

impl Call<'_> {
    /// `GET /auth/outcome?state=...`: the outcome of a flow this browser started (its
    /// binding cookie proves it), `outcome_pending` while the provider has not answered;
    /// `transaction_expired` for a flow that never came back, cookie or not.
    async fn outcome(&self, query: &str) -> Result<Outcome> {
        let state = form_value(query, "state")
            .ok_or_else(|| Error::new(ErrorCode::MissingParameter, "outcome needs one ?state="))?;
        let state = State::parse(&state)?;
        let key = state.storage_key();
        let not_bound = || {
            Error::new(
                ErrorCode::TransactionNotBound,
                "this browser did not start the flow (its binding cookie is missing)",
            )
        };
        let flow = self
            .store
            .recorded_flow(key.as_str())
            .await?
            .ok_or_else(|| Error::new(ErrorCode::UnknownTransaction, "no flow has this state"))?;
        // A flow that never came back and is past its deadline is read as expired by whoever
        // names it: its binding cookie lapsed with it, and its record says nothing else.
        let lapsed =
            flow.outcome.is_none() && flow.consumed_at.is_none() && flow.expires_at <= self.now;
        if !lapsed {
            let binding = cookie_value(&self.caller.cookies, &binding_cookie_name(&key))
                .ok_or_else(not_bound)?;
            if !constant_time_eq(
                stored_hash(binding).as_bytes(),
                flow.binding_hash.as_bytes(),
            ) {
                return Err(not_bound());
            }
        }
        match flow.outcome {
            // Read back through the wire schema: a damaged row is an error, not a message.
            Some(outcome) => Outcome::parse(&outcome).map_err(|_| {
                Error::new(
                    ErrorCode::RecordUnreadable,
                    "the recorded outcome is unreadable",
                )
            }),
            // Consumed, yet no ending recorded past the longest an ending can take: recorded
            // as interrupted, so that an ending that still lands later cannot contradict it.
            None if flow.consumed_at.is_some_and(|consumed_at| {
                self.now > consumed_at + ending_deadline_secs(self.config.http_timeout_ms)
            }) =>
            {
                let interrupted = Outcome::from_error(state, &exchange_interrupted());
                match self
                    .store
                    .record_outcome(key.as_str(), &interrupted.to_json())
                    .await?
                {
                    true => Ok(interrupted),
                    false => self.store.recorded_outcome(key.as_str()).await,
                }
            }
            None if lapsed => Ok(Outcome::from_error(state, &transaction_expired())),
            None => Err(Error::new(
                ErrorCode::OutcomePending,
                "the flow has not come back from the provider yet",
            )),
        }
    }

    /// The user a consent route acts for.
    async fn account_user(&self) -> Result<UserRow> {
        self.caller
            .user(self.env, self.config, &self.store, self.now)
            .await
    }

    /// `GET /auth/consents`: the session user's consents, no tokens.
    async fn consents(&self) -> Result<Value> {
        let user = self.account_user().await?;
        let consents = self.store.consents(&user.id).await?;
        let consents: Vec<ConsentRecord> = consents
            .iter()
            .map(|row| self.consent_record(row))
            .collect();
        Ok(json!({
            "user": {"id": user.id, "name": user.name},
            "consents": consents,
        }))
    }

    fn consent_record(&self, row: &ConsentRow) -> ConsentRecord {
        let provider_name = self
            .config
            .provider(&row.provider)
            .map_or(row.provider.as_str(), |provider| provider.name());
        ConsentRecord::new(&row.stored(), provider_name, self.now)
    }

    /// `DELETE /auth/consents/{id}`: end the grant at the provider (RFC 7009 where it has an
    /// endpoint, Moneyhub's connection delete), then forget the tokens and report whether the
    /// provider confirmed. A Moneyhub connection the provider did not delete stays: the
    /// consent is left active and the call fails with `revocation_failed`.
    async fn revoke(&self, consent_id: &str) -> Result<Value> {
        let user = self.account_user().await?;
        let not_found = || {
            Error::new(
                ErrorCode::ConsentNotFound,
                "no consent of yours has this id",
            )
        };
        let (consent, sealed) = self
            .store
            .consent(&user.id, consent_id)
            .await?
            .ok_or_else(not_found)?;
        let provider_revoked = match self
            .try_revoke_at_provider(&consent, sealed.as_deref())
            .await
        {
            Ok(revoked) => revoked,
            Err(error) => {
                worker::console_warn!(
                    "consentry: revoke provider={} code={}",
                    consent.provider,
                    log_field(error.code().as_str())
                );
                // A Moneyhub connection stays readable through the profile's data tokens
                // (the user's other Moneyhub consents mint them) until Moneyhub deletes it:
                // the consent is not called revoked before it does.
                if self.keeps_connection(&consent) {
                    return Err(Error::new(
                        ErrorCode::RevocationFailed,
                        "the provider did not delete the connection; it stays active: try again",
                    ));
                }
                false
            }
        };
        self.store.revoke_consent(&consent.id, self.now).await?;
        let revoked_at = consent.revoked_at.unwrap_or(self.now);
        Ok(json!({
            "id": consent.id,
            "status": "revoked",
            "revoked_at": format_rfc3339(revoked_at),
            "provider_revoked": provider_revoked,
        }))
    }

    /// Whether the consent is a connection the provider keeps and the Worker ends by its id
    /// (Moneyhub's `mh:con_id`, deleted under the profile).
    fn keeps_connection(&self, consent: &ConsentRow) -> bool {
        self.config
            .provider(&consent.provider)
            .is_ok_and(|provider| provider.users_endpoint().is_some())
            && consent.provider_consent_id.is_some()
    }

    /// Ends the grant at the provider ([`ProviderClient::end_grant`]): its tokens revoked
    /// (RFC 7009), or Moneyhub's connection deleted, which needs none of the grant's tokens (a
    /// lapsed consent's connection is deleted too). Whether the provider confirmed it.
    async fn try_revoke_at_provider(
        &self,
        consent: &ConsentRow,
        sealed: Option<&str>,
    ) -> Result<bool> {
        let provider = self.config.provider(&consent.provider)?;
        let connection_known = self.keeps_connection(consent);
        if sealed.is_none() && !connection_known {
            return Ok(false);
        }
        let client =
            ProviderClient::connect(provider, self.config.http_timeout_ms, self.now).await?;
        let tokens = match sealed {
            Some(sealed) if !connection_known && client.metadata.revocation_endpoint.is_some() => {
                let (plaintext, _) = config::sealing_key(self.env)?
                    .open(&consent.id, sealed)
                    .await?;
                Some(TokenSet::parse(&plaintext)?)
            }
            _ => None,
        };
        let grant = GrantAtProvider {
            tokens: tokens.as_ref(),
            profile: consent.provider_subject.as_deref(),
            connection: consent.provider_consent_id.as_deref(),
        };
        client.end_grant(self.env, &grant, self.now).await
    }

    /// `POST /auth/logout`: ends the session, here and in the browser.
    async fn logout(&self) -> Result<Option<String>> {
        if let Some(session) = cookie_value(&self.caller.cookies, SESSION_COOKIE) {
            self.store.delete_session(&stored_hash(session)).await?;
        }
        Ok(Some(clear_cookie(SESSION_COOKIE, SameSite::Strict)))
    }

    /// `GET /auth/demo/users` (only with `CONSENTRY_DEMO_USERS=true`).
    async fn demo_users(&self) -> Result<Value> {
        let users = self.store.users().await?;
        Ok(Value::Array(
            users
                .into_iter()
                .map(|user| json!({"id": user.id, "name": user.name}))
                .collect(),
        ))
    }
}
