//! `GET|POST /auth/callback` (DESIGN.md flow step 5): consumes the transaction exactly once,
//! checks the binding cookie, `iss` and `state`, exchanges the code with the provider's client
//! authentication, verifies the id_token, seals the tokens, records the consent and a fresh
//! session, and renders the outcome page that posts only the outcome to the opener.

use consentry_core::cookie::{
    binding_cookie_name, cookie_value, set_cookie, stored_hash, SameSite, SESSION_COOKIE,
};
use consentry_core::encoding::base64url_encode;
use consentry_core::outcome::format_rfc3339;
use consentry_core::{
    build_authorization_code_request, process_token_response, validate_authorization_response,
    AuthorizationResponse, Consent, Error, ErrorCode, Nonce, Outcome, OutcomePage,
    PkceCodeVerifier, Result, Scopes, State, StateKey, TokenSet, WebOrigin,
};
use worker::{Env, Method, Request, Response};

use super::config::{self, Config};
use super::provider_client::ProviderClient;
use super::start::transaction_expired;
use super::store::{Consumed, NewConsent, NewSession, Store, Transaction};
use super::{log_ending, now, open_store, random_token, read_form, respond};
use crate::random::random_bytes;

/// A session's lifetime: 12 hours.
pub(crate) const SESSION_SECS: u64 = 12 * 3600;

pub(super) async fn handle(
    mut request: Request,
    env: &Env,
    config: &Config,
) -> worker::Result<Response> {
    let cookies = request.headers().get("Cookie")?.unwrap_or_default();
    let params = match request.method() {
        Method::Post => read_form(&mut request).await,
        _ => Ok(request.url()?.query().unwrap_or_default().to_owned()),
    };
    let ended = match params {
        Ok(params) => end_flow(env, config, &params, &cookies).await,
        Err(error) => Err(error),
    };
    match ended {
        Ok(Ending {
            page,
            provider,
            code,
            set_cookies,
        }) => {
            log_ending("callback", Some(&provider), &page, code.as_ref());
            respond::page(&page, &set_cookies)
        }
        Err(error) => {
            let page = OutcomePage::for_error(&error, 400);
            log_ending("callback", None, &page, Some(error.code()));
            respond::page(&page, &[])
        }
    }
}

/// How a consumed flow ended: its page, and the session cookie when granted.
struct Ending {
    page: OutcomePage,
    provider: String,
    code: Option<ErrorCode>,
    set_cookies: Vec<String>,
}

/// Finds and consumes the flow; an error here means no flow was consumed (nothing recorded).
async fn end_flow(env: &Env, config: &Config, params: &str, cookies: &str) -> Result<Ending> {
    let response = AuthorizationResponse::parse(params)?;
    let state = response
        .state()
        .ok_or_else(|| Error::new(ErrorCode::MissingParameter, "the callback carries no state"))?;
    let key = state.storage_key();
    let binding_hash = cookie_value(cookies, &binding_cookie_name(&key)).map(stored_hash);
    let store = open_store(env)?;
    let now = now();
    let transaction = match store
        .consume_transaction(key.as_str(), binding_hash.as_deref(), now)
        .await?
    {
        Consumed::Taken(transaction) => transaction,
        Consumed::Unknown => {
            return Err(Error::new(
                ErrorCode::UnknownTransaction,
                "no flow was started with this state",
            ))
        }
        Consumed::NotBound => {
            return Err(Error::new(
                ErrorCode::TransactionNotBound,
                "this flow was started in another browser (its binding cookie is missing)",
            ))
        }
        Consumed::Replayed => {
            return Err(Error::new(
                ErrorCode::TransactionReplayed,
                "this flow has already ended; its callback cannot be used again",
            ))
        }
    };
    let origin = WebOrigin::parse(&transaction.origin)?;
    let provider = transaction.provider.clone();

    // The transaction is consumed: from here every ending is recorded as the flow's outcome.
    let previous_session = cookie_value(cookies, SESSION_COOKIE).map(stored_hash);
    let granted = match exchange(env, config, &transaction, response, &state, &key, now).await {
        Ok(grant) => {
            record_grant(
                &store,
                &transaction,
                &state,
                &key,
                grant,
                previous_session,
                now,
            )
            .await
        }
        Err(error) => Err(error),
    };
    let (outcome, set_cookies) = match granted {
        Ok((outcome, session_cookie)) => (outcome, vec![session_cookie]),
        Err(error) => {
            let outcome = Outcome::from_error(state, &error);
            if let Err(failure) = store.record_outcome(key.as_str(), &outcome.to_json()).await {
                worker::console_error!("consentry: outcome not recorded: {}", failure.code());
            }
            (outcome, Vec::new())
        }
    };
    Ok(Ending {
        page: OutcomePage::for_outcome(&outcome, &origin),
        provider,
        code: outcome.error().map(|error| error.code().clone()),
        set_cookies,
    })
}

/// What a successful code exchange yields, before it is stored.
struct Grant {
    scopes: Scopes,
    sealed_tokens: String,
    access_expires_at: Option<u64>,
    consent_expires_at: Option<u64>,
    provider_subject: Option<String>,
    provider_consent_id: Option<String>,
    consent_id: String,
}

/// Validates the authorization response and exchanges the code, once, with no retry.
async fn exchange(
    env: &Env,
    config: &Config,
    transaction: &Transaction,
    response: AuthorizationResponse,
    state: &State,
    key: &StateKey,
    now: u64,
) -> Result<Grant> {
    if transaction.expires_at <= now {
        return Err(transaction_expired());
    }
    let provider = config.provider(&transaction.provider)?;
    let client = ProviderClient::connect(provider, config.http_timeout_ms, now).await?;
    let validated = validate_authorization_response(
        response,
        state,
        provider.issuer(),
        provider.requires_iss(&client.metadata),
    )?;
    let sealing_key = config::sealing_key(env)?;
    let verifier = match transaction.sealed_verifier.as_deref() {
        Some(sealed) => sealing_key.open(key.as_str(), sealed).await?,
        None => {
            return Err(Error::new(
                ErrorCode::StorageFailed,
                "the flow's verifier is gone",
            ))
        }
    };
    let verifier = String::from_utf8(verifier)
        .map_err(|_| {
            Error::new(
                ErrorCode::StorageFailed,
                "the flow's verifier is unreadable",
            )
        })
        .and_then(|verifier| PkceCodeVerifier::parse(&verifier))?;
    let auth = client.authentication(env, now).await?;
    let token_request = build_authorization_code_request(
        &client.metadata.token_endpoint,
        &auth,
        validated,
        &config.redirect_url,
        verifier,
        &[],
    )?;
    let answer = client
        .send(
            &token_request,
            "token endpoint",
            ErrorCode::TokenExchangeFailed,
        )
        .await?;
    let requested = Scopes::parse(&transaction.scopes)?;
    let tokens = process_token_response(
        answer.status,
        answer.content_type.as_deref(),
        &answer.body,
        &requested,
    )?;
    let claims = match tokens.id_token() {
        Some(id_token) => {
            let nonce = transaction.nonce.clone().map(Nonce::new);
            Some(
                client
                    .verify_id_token(env, id_token, nonce.as_ref(), now)
                    .await?,
            )
        }
        None => None,
    };

    let consent_id = format!("cns_{}", base64url_encode(&random_bytes::<16>()?));
    let sealed_tokens = sealing_key
        .seal(
            &consent_id,
            TokenSet::from_response(&tokens).to_plaintext().as_bytes(),
        )
        .await?;
    Ok(Grant {
        scopes: tokens.scopes().clone(),
        sealed_tokens,
        access_expires_at: tokens
            .expires_in()
            .map(|seconds| now.saturating_add(seconds)),
        consent_expires_at: provider
            .consent_days()
            .map(|days| now.saturating_add(days.saturating_mul(86_400))),
        provider_subject: claims.as_ref().map(|claims| claims.sub().to_owned()),
        provider_consent_id: claims
            .as_ref()
            .zip(provider.consent_id_claim())
            .and_then(|(claims, name)| claims.claim(name))
            .and_then(|value| value.as_str())
            .map(str::to_owned),
        consent_id,
    })
}

/// Stores the grant, its outcome and a fresh session in one batch; gives the outcome and
/// the session cookie.
async fn record_grant(
    store: &Store,
    transaction: &Transaction,
    state: &State,
    key: &StateKey,
    grant: Grant,
    previous_session: Option<String>,
    now: u64,
) -> Result<(Outcome, String)> {
    let expires_at = grant.consent_expires_at;
    let consent = Consent {
        id: grant.consent_id.clone(),
        provider: transaction.provider.clone(),
        user: transaction.user_id.clone(),
        scopes: grant.scopes.iter().map(str::to_owned).collect(),
        granted_at: format_rfc3339(now),
        expires_at: expires_at.map(format_rfc3339),
    };
    let outcome = Outcome::granted(state.clone(), consent);
    let session = random_token()?;
    store
        .record_grant(
            key.as_str(),
            &outcome.to_json(),
            &NewConsent {
                id: &grant.consent_id,
                user_id: &transaction.user_id,
                provider: &transaction.provider,
                scopes: &grant.scopes.to_wire(),
                granted_at: now,
                expires_at,
                provider_subject: grant.provider_subject.as_deref(),
                provider_consent_id: grant.provider_consent_id.as_deref(),
                sealed_tokens: &grant.sealed_tokens,
                access_expires_at: grant.access_expires_at,
            },
            &NewSession {
                id_hash: &stored_hash(&session),
                user_id: &transaction.user_id,
                created_at: now,
                expires_at: now + SESSION_SECS,
                replaces: previous_session.as_deref(),
            },
        )
        .await?;
    let cookie = set_cookie(SESSION_COOKIE, &session, SESSION_SECS, SameSite::Strict);
    Ok((outcome, cookie))
}
