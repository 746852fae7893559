//! `POST /auth/start` (DESIGN.md flow step 3): the form the SPA submits into the popup.
//! Checks `Origin` and every field, stores the transaction under the hash of `state` for
//! 10 minutes, binds it to this browser with a cookie, and sends the popup to the provider.

use consentry_core::cookie::{
    binding_cookie_name, cookie_value, set_cookie, stored_hash, BINDING_SECS, SESSION_COOKIE,
};
use consentry_core::encoding::form_value;
use consentry_core::start::FIELD_STATE;
use consentry_core::user_assertion::parse_user_id;
use consentry_core::{
    verify_user_assertion, Error, ErrorCode, Nonce, Outcome, OutcomePage, Result, StartRequest,
    State, StateKey, WebOrigin,
};
use worker::{Env, Request, Response};

use super::config::{self, Config};
use super::dpop::DpopKey;
use super::provider_client::ProviderClient;
use super::store::{NewTransaction, Store, UserRow};
use super::{limits, moneyhub};
use super::{log_ending, now, open_store, random_token, read_form, respond};
use crate::random::random_bytes;

/// A transaction's lifetime: the provider must send the user back within it. The binding
/// cookie lapses with it, and the SDK's default timeout is as long.
pub(crate) const TRANSACTION_SECS: u64 = BINDING_SECS;

/// The error of a flow whose transaction outlived [`TRANSACTION_SECS`].
pub(crate) fn transaction_expired() -> Error {
    Error::new(
        ErrorCode::TransactionExpired,
        format!(
            "the flow took longer than {} minutes; start it again",
            TRANSACTION_SECS / 60
        ),
    )
}

pub(super) async fn handle(
    mut request: Request,
    env: &Env,
    config: &Config,
) -> worker::Result<Response> {
    let origin = request.headers().get("Origin")?;
    let origin = match config.allowed_origins.check(origin.as_deref()) {
        Ok(origin) => origin.clone(),
        Err(error) => {
            let page = OutcomePage::for_error(&error, 403);
            log_ending("start", None, &page, Some(error.code()));
            return respond::page(&page, &[]);
        }
    };
    // The start is a same-site request: the SameSite=Strict session cookie comes along, and
    // the flow records which session its grant will replace.
    let cookies = request.headers().get("Cookie")?.unwrap_or_default();
    let current_session = cookie_value(&cookies, SESSION_COOKIE).map(stored_hash);
    let body = read_form(&mut request).await;
    let limited = limits::check(env, limits::START, &limits::client_ip(&request)).await;
    let started = match (&body, &limited) {
        (Ok(body), Ok(())) => start(body, env, config, &origin, current_session.as_deref()).await,
        (Err(error), _) | (_, Err(error)) => Err(error.clone()),
    };
    match started {
        Ok((location, binding_cookie)) => respond::see_other(&location, &binding_cookie),
        Err(error) => {
            // The SPA learns at once why its flow did not start, when there is a flow to name.
            let state = body.ok().as_deref().and_then(form_state);
            let page = match state {
                Some(state) => {
                    OutcomePage::for_outcome(&Outcome::from_error(state, &error), &origin)
                }
                None => OutcomePage::for_error(&error, OutcomePage::status_without_flow(&error)),
            };
            log_ending("start", None, &page, Some(error.code()));
            respond::page(&page, &[])
        }
    }
}

/// Runs the start; gives the provider URL and the binding cookie.
async fn start(
    body: &str,
    env: &Env,
    config: &Config,
    origin: &WebOrigin,
    current_session: Option<&str>,
) -> Result<(String, String)> {
    let form = StartRequest::parse(body)?;
    let provider = config.provider(&form.provider)?;
    let now = now();
    let store = open_store(env)?;
    let user_id = trusted_user(env, config, &store, &form.user, now).await?.id;
    let scopes = provider.flow_scopes(form.scope.as_ref(), form.provider_hint.as_deref())?;
    // Discovery (and, below, PAR) run before the flow is stored: a provider that refuses
    // leaves no flow behind. A provider whose metadata cannot keep the profile's promises is
    // refused here, at the first start.
    let client = ProviderClient::connect(provider, config.http_timeout_ms, now).await?;
    provider.check_metadata(&client.metadata)?;
    // The app user's profile at the provider, from the Worker's records; Moneyhub's is made
    // on the user's first flow.
    let provider_user = match provider.needs_provider_user() {
        true => Some(moneyhub::profile(&client, env, &store, &user_id, now).await?),
        false => None,
    };
    let nonce = match provider.sends_nonce(&scopes) {
        true => Some(Nonce::from_random_bytes(&random_bytes()?)),
        false => None,
    };
    let mut authorization_request = provider.build_authorization_request(
        &provider.redirect_url(&config.public_origin)?,
        &scopes,
        &form.state,
        &form.code_verifier.challenge(),
        nonce.as_ref(),
        form.provider_hint.as_deref(),
        provider_user.as_deref(),
    )?;
    // The consent's DPoP key pair, made here; its thumbprint binds the code (dpop_jkt).
    let dpop_key = match provider.uses_dpop() {
        true => Some(DpopKey::generate(provider.dpop_alg()).await?),
        false => None,
    };
    if let Some(dpop_key) = &dpop_key {
        authorization_request = authorization_request.with_dpop_jkt(&dpop_key.thumbprint()?);
    }
    let location = client
        .authorization_url(env, &authorization_request, now)
        .await?;

    let key = form.state.storage_key();
    let binding = random_token()?;
    let sealing_key = config::sealing_key(env)?;
    let sealed_verifier = sealing_key
        .seal(key.as_str(), form.code_verifier.secret().as_bytes())
        .await?;
    let sealed_dpop_key = match &dpop_key {
        Some(dpop_key) => Some(
            sealing_key
                .seal(&dpop_key_aad(&key), dpop_key.private().secret().as_bytes())
                .await?,
        ),
        None => None,
    };
    store
        .insert_transaction(&NewTransaction {
            state_key: key.as_str(),
            binding_hash: &stored_hash(&binding),
            provider: provider.id(),
            user_id: &user_id,
            origin: origin.as_str(),
            scopes: &scopes.to_wire(),
            nonce: nonce.as_ref().map(Nonce::as_str),
            sealed_verifier: &sealed_verifier,
            replaces_session: current_session,
            provider_subject: provider_user.as_deref(),
            sealed_dpop_key: sealed_dpop_key.as_deref(),
            created_at: now,
            expires_at: now + TRANSACTION_SECS,
        })
        .await?;
    // The cookie lapses with the transaction (the stored `expires_at` is what counts); the
    // callback sets it again so the SPA can read the outcome.
    let cookie = set_cookie(
        &binding_cookie_name(&key),
        &binding,
        TRANSACTION_SECS,
        provider.binding_same_site(),
    );
    Ok((location, cookie))
}

/// The associated data a flow's DPoP key is sealed under: not the verifier's, so neither
/// ciphertext opens in the other's place.
pub(crate) fn dpop_key_aad(key: &StateKey) -> String {
    format!("dpop:{}", key.as_str())
}

/// The app user a reference names, trusted as `CONSENTRY_DEMO_USERS` says: a seeded user id
/// in the demo, otherwise the `sub` of an HS256 assertion from the app's backend. The start
/// form's `user` field and the account routes' `Authorization: Bearer` are both read here.
pub(super) async fn trusted_user(
    env: &Env,
    config: &Config,
    store: &Store,
    user: &str,
    now: u64,
) -> Result<UserRow> {
    if config.demo_users {
        let id = parse_user_id(user)?;
        return store.user(id).await?.ok_or_else(no_demo_user);
    }
    let secret = config::user_secret(env)?;
    let audience = config.public_origin.as_str();
    let user = verify_user_assertion(user, secret.secret().as_bytes(), audience, now)?;
    let name = user.name.as_deref().unwrap_or(&user.id);
    store.ensure_user(&user.id, name, now).await?;
    Ok(UserRow {
        name: name.to_owned(),
        id: user.id,
    })
}

/// A demo user id that is no user's.
pub(super) fn no_demo_user() -> Error {
    Error::new(ErrorCode::InvalidUser, "no demo user has this id")
}

/// The form's `state`, if it is one: to address a refused start's outcome to its flow.
fn form_state(body: &str) -> Option<State> {
    form_value(body, FIELD_STATE).and_then(|state| State::parse(&state).ok())
}
