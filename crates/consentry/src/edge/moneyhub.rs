//! Moneyhub's calls beside the flow (PROVIDERS.md, "Moneyhub"): the app user's profile, made
//! once with a `user:create` token and kept by the Worker (never named by the browser), and
//! the end of one bank connection with a `connection:delete` token.
//!
//! Two starts for a user without a profile must not make two: the first to claim the making
//! in D1 ([`Store::claim_provider_user`]) makes it, others wait for it to be recorded.

use std::time::Duration;

use consentry_core::encoding::base64url_encode;
use consentry_core::moneyhub::{
    build_create_user_request, build_delete_connection_request, process_create_user_response,
    process_delete_connection_response, CONNECTION_DELETE_SCOPE, USER_CREATE_SCOPE,
};
use consentry_core::{Error, ErrorCode, Result, Scopes};
use worker::{Delay, Env};

use super::now_ms;
use super::provider_client::ProviderClient;
use super::store::Store;
use crate::random::random_bytes;

/// The app user's profile at the provider: the one on record, or one made now.
pub(crate) async fn profile(
    client: &ProviderClient<'_>,
    env: &Env,
    store: &Store,
    user_id: &str,
    now: u64,
) -> Result<String> {
    let provider = client.config.id();
    // Long enough for the holder's two calls, each within the HTTP timeout, and the store.
    let claim_ms = 2 * u64::from(client.timeout_ms()) + 5_000;
    let claim = base64url_encode(&random_bytes::<12>()?);
    // Two rounds at most: a claim whose holder died lapses, and the second round takes it.
    for _ in 0..2 {
        if let Some(profile) = store.provider_user(user_id, provider).await? {
            return Ok(profile);
        }
        let claimed_at = now_ms();
        if store
            .claim_provider_user(user_id, provider, &claim, claimed_at, claimed_at + claim_ms)
            .await?
        {
            return make_and_record(client, env, store, user_id, &claim, now).await;
        }
        // Another start is making it: wait for its record, as long as its claim can last.
        let give_up_ms = claimed_at + claim_ms;
        let mut pause_ms = 100;
        while now_ms() < give_up_ms {
            Delay::from(Duration::from_millis(pause_ms)).await;
            if let Some(profile) = store.provider_user(user_id, provider).await? {
                return Ok(profile);
            }
            pause_ms = (pause_ms * 2).min(1_000);
        }
    }
    Err(Error::new(
        ErrorCode::ProviderUserPending,
        "another start is making this user's Moneyhub profile and has not finished; try again",
    ))
}

/// Makes the profile under `claim` and records it (the first one recorded stands, should
/// two have been made), or gives the claim up.
async fn make_and_record(
    client: &ProviderClient<'_>,
    env: &Env,
    store: &Store,
    user_id: &str,
    claim: &str,
    now: u64,
) -> Result<String> {
    let provider = client.config.id();
    match make_profile(client, env, user_id, now).await {
        Ok(profile) => {
            store
                .record_provider_user(user_id, provider, &profile, claim, now)
                .await?;
            Ok(store
                .provider_user(user_id, provider)
                .await?
                .unwrap_or(profile))
        }
        Err(error) => {
            store
                .release_provider_user_claim(user_id, provider, claim)
                .await?;
            Err(error)
        }
    }
}

/// `POST /users` with a `user:create` token: the new profile's `userId`.
async fn make_profile(
    client: &ProviderClient<'_>,
    env: &Env,
    user_id: &str,
    now: u64,
) -> Result<String> {
    let endpoint = users_endpoint(client)?;
    // Moneyhub refusing the token is a profile it will not make; its OAuth code is kept in
    // the description.
    let token = client
        .client_credentials(
            env,
            &scope(USER_CREATE_SCOPE)?,
            None,
            ErrorCode::ProviderUserMissing,
            now,
        )
        .await
        .map_err(|error| match error.code() {
            ErrorCode::OAuth(code) => Error::new(
                ErrorCode::ProviderUserMissing,
                format!(
                    "Moneyhub refused the user:create token ({}): no profile was made",
                    code.as_str()
                ),
            ),
            _ => error,
        })?;
    let request = build_create_user_request(endpoint, token.access_token(), user_id);
    let answer = client
        .send(&request, "users API", ErrorCode::ProviderUserMissing)
        .await?;
    process_create_user_response(answer.status, &answer.body)
}

/// Deletes the connection `connection_id` of profile `user_id` at Moneyhub, leaving the
/// profile's other connections.
pub(crate) async fn delete_connection(
    client: &ProviderClient<'_>,
    env: &Env,
    user_id: &str,
    connection_id: &str,
    now: u64,
) -> Result<()> {
    let endpoint = users_endpoint(client)?;
    let token = client
        .client_credentials(
            env,
            &scope(CONNECTION_DELETE_SCOPE)?,
            None,
            ErrorCode::RevocationFailed,
            now,
        )
        .await?;
    let request =
        build_delete_connection_request(endpoint, token.access_token(), user_id, connection_id);
    let answer = client
        .send(&request, "users API", ErrorCode::RevocationFailed)
        .await?;
    process_delete_connection_response(answer.status)
}

fn users_endpoint<'a>(client: &'a ProviderClient<'_>) -> Result<&'a consentry_core::EndpointUrl> {
    client.config.users_endpoint().ok_or_else(|| {
        Error::new(
            ErrorCode::InvalidConfiguration,
            "this provider has no Moneyhub users API",
        )
    })
}

fn scope(scope: &str) -> Result<Scopes> {
    Scopes::parse(scope)
}
