//! A live access token for a consent (DESIGN.md, "Using a consent", step 3), refreshed one at
//! a time per consent across every isolate.
//!
//! The lock is a lease in the consent's `token_sets` row in D1, which every isolate sees:
//! a caller that finds the token stale takes the lease with one conditional `UPDATE` (free,
//! and the set still the generation it read), refreshes, seals and stores the new set as the
//! next generation, and only then answers. Callers that find the lease taken poll the row
//! until the generation moves on (and use the new token), the refresh is recorded as failed
//! (and say so), or the lease runs out (and take it themselves). Isolate memory plays no
//! part.
//!
//! The lease is sized for what its holder sends once it holds it: the grant (twice at most,
//! when a DPoP server asks for a nonce) and one JWKS refetch (a new signing key), each within
//! the HTTP timeout, and the store; discovery and the JWKS are fetched before it is taken. A
//! holder outlasts it only if the provider's tokens name keys even a fresh JWKS lacks,
//! storage stalls past its budget, or a refused set is revoked at the provider before the
//! consent lapses (up to two more timeouts): then a second caller may refresh the same generation,
//! and a rotating provider's `invalid_grant` lapses the consent. A holder that dies leaves a
//! lease that lapses in the same way: there is no state that loops.

use std::time::Duration;

use consentry_core::api::{access_expiry, consent_expired, needs_refresh};
use consentry_core::authorization_details;
use consentry_core::encoding::{base64url_encode, log_field};
use consentry_core::{
    build_refresh_token_request, process_refresh_response, Error, ErrorCode, JwsAlgorithm,
    OAuthErrorCode, ProviderConfig, Result, Scopes, TokenResponse, TokenSet,
};
use worker::{Delay, Env};

use super::config::{self, Config};
use super::dpop::DpopKey;
use super::now_ms;
use super::provider_client::{ExpectedIdToken, ProviderClient};
use super::store::{ConsentRow, RefreshedSet, Store, TokenRow};
use crate::random::random_bytes;

/// What the lease keeps beyond the network: sealing and storing (four tries, 1 s of pauses).
const STORE_BUDGET_MS: u64 = 5_000;

/// The longest a waiter pauses between two looks at the row.
const MAX_PAUSE_MS: u64 = 2_000;

/// A consent's tokens, fit for a call, and the generation they belong to.
pub(crate) struct LiveToken {
    pub tokens: TokenSet,
    pub generation: i64,
}

/// What finding a live token needs.
pub(crate) struct TokenSource<'a> {
    pub env: &'a Env,
    pub config: &'a Config,
    pub provider: &'a ProviderConfig,
    pub store: &'a Store,
}

/// Why a call cannot have a live token.
pub(crate) enum NoToken {
    /// The consent is over: revoked or lapsed, or the provider refused to refresh it now.
    Expired(Error),
    /// A refresh could not be done just now (the provider failed, or storage did).
    Failed(Error),
    /// A refresh was asked for after an upstream 401, but the grant has no refresh token:
    /// the data API's own answer stands.
    CannotRefresh,
}

impl From<Error> for NoToken {
    fn from(error: Error) -> Self {
        NoToken::Failed(error)
    }
}

/// The lease's length: the grant sent twice (a DPoP nonce retry) and a JWKS refetch, each
/// within the HTTP timeout, and the store.
fn lease_ms(http_timeout_ms: u32) -> u64 {
    3 * u64::from(http_timeout_ms) + STORE_BUDGET_MS
}

impl TokenSource<'_> {
    /// The consent's tokens, refreshed first when they live less than 30 s more, or when
    /// `stale` names the generation a data API just refused (an upstream 401): then a set of
    /// a later generation is used, refreshed by this call or by another one meanwhile.
    /// `read`: the set as the caller just read it with the consent (`Some(None)`: no tokens
    /// held), taken for the first look instead of reading it again.
    pub(crate) async fn live_token(
        &self,
        consent: &ConsentRow,
        stale: Option<i64>,
        mut read: Option<Option<TokenRow>>,
    ) -> Result<LiveToken, NoToken> {
        let lease_ms = lease_ms(self.config.http_timeout_ms);
        let started_ms = now_ms();
        // A waiter gives up once a whole lease has passed: its holder is gone, or stuck.
        let give_up_ms = started_ms + lease_ms + STORE_BUDGET_MS;
        let mut first_generation = None;
        let mut client = None;
        let mut pause_ms = 25;
        loop {
            // A read or a lease attempt that storage refuses under contention (D1 answers
            // errors under load) is tried again until the waiter gives up.
            let row = match read.take() {
                Some(row) => Ok(row),
                None => self.store.token_set(&consent.id).await,
            };
            let row = match row {
                Ok(Some(row)) => Some(row),
                Ok(None) => return Err(NoToken::Expired(consent_expired())),
                Err(error) if now_ms() > give_up_ms => return Err(NoToken::Failed(error)),
                Err(_) => None,
            };
            if let Some(row) = row {
                let now = now_ms() / 1000;
                let first = *first_generation.get_or_insert(row.generation);
                let refused = stale.is_some_and(|generation| row.generation <= generation);
                // A set another caller refreshed while this one waited is used while it lives
                // at all, even inside the margin (a provider's tokens may live under 30 s).
                let fresh = !needs_refresh(row.access_expires_at, now)
                    || (row.generation > first
                        && row
                            .access_expires_at
                            .is_none_or(|expires_at| expires_at > now));
                if !refused && fresh {
                    return Ok(LiveToken {
                        tokens: self.open(consent, &row.sealed).await?,
                        generation: row.generation,
                    });
                }
                if row
                    .refresh_failed_at
                    .is_some_and(|failed| failed >= started_ms)
                {
                    return Err(NoToken::Failed(refresh_failed(
                        "the provider could not refresh the token just now; try again",
                    )));
                }
                if now_ms() > give_up_ms {
                    return Err(NoToken::Failed(refresh_failed(
                        "a refresh of this consent's token is taking too long; try again",
                    )));
                }
                if row.refresh_lock_until <= now_ms() {
                    // What the refresh needs from the network besides the grant, fetched
                    // before the lease is taken: the lease then covers only the grant.
                    if client.is_none() {
                        client = Some(self.prepare(now).await?);
                    }
                    let now_ms = now_ms();
                    let lease = base64url_encode(&random_bytes::<12>()?);
                    let taken = self
                        .store
                        .take_refresh_lease(
                            &consent.id,
                            row.generation,
                            &lease,
                            now_ms,
                            now_ms + lease_ms,
                        )
                        .await;
                    if let (Ok(true), Some(client)) = (taken, client.as_ref()) {
                        return self.refresh(client, consent, &row, &lease, stale).await;
                    }
                    // Another caller took it first (or storage was busy): look again.
                }
            }
            Delay::from(Duration::from_millis(pause_ms)).await;
            pause_ms = (pause_ms * 2).min(MAX_PAUSE_MS);
        }
    }

    /// Discovery and the JWKS, cached per isolate: the refresh's network needs but the grant.
    async fn prepare(&self, now: u64) -> Result<ProviderClient<'_>> {
        let client =
            ProviderClient::connect(self.provider, self.config.http_timeout_ms, now).await?;
        let jwt_access_tokens = self
            .provider
            .access_token_signing_algs()
            .iter()
            .any(|alg| *alg != JwsAlgorithm::HS256);
        if self.provider.scopes().contains("openid") || jwt_access_tokens {
            client.prefetch_jwks(now).await?;
        }
        Ok(client)
    }

    /// Refreshes under `lease`: the new set is stored (a rotated refresh token included)
    /// before anything is answered.
    async fn refresh(
        &self,
        client: &ProviderClient<'_>,
        consent: &ConsentRow,
        row: &TokenRow,
        lease: &str,
        stale: Option<i64>,
    ) -> Result<LiveToken, NoToken> {
        let outcome = self.try_refresh(client, consent, row, stale).await;
        let now_ms = now_ms();
        match outcome {
            Ok(tokens) => Ok(tokens),
            Err(Refusal::Lapse(error)) => {
                log_refresh(consent, "lapsed", &error);
                // Under this lease only: a holder whose lease was lost must not wipe a set
                // that another one has stored since.
                match self
                    .store
                    .lapse_consent(&consent.id, lease, now_ms / 1000)
                    .await?
                {
                    true => Err(NoToken::Expired(consent_expired())),
                    false => Err(NoToken::Failed(refresh_failed(
                        "another refresh of this consent landed first; try again",
                    ))),
                }
            }
            Err(Refusal::Gone) => Err(NoToken::Expired(consent_expired())),
            Err(Refusal::NoRefreshToken) => {
                self.store
                    .release_refresh_lease(&consent.id, lease, None)
                    .await?;
                Err(NoToken::CannotRefresh)
            }
            Err(Refusal::Failed(error)) => {
                log_refresh(consent, "failed", &error);
                self.store
                    .release_refresh_lease(&consent.id, lease, Some(now_ms))
                    .await?;
                Err(NoToken::Failed(match error.code() {
                    ErrorCode::StorageFailed | ErrorCode::RecordUnreadable => error,
                    _ => refresh_failed("the provider could not refresh the token; try again"),
                }))
            }
        }
    }

    async fn try_refresh(
        &self,
        client: &ProviderClient<'_>,
        consent: &ConsentRow,
        row: &TokenRow,
        stale: Option<i64>,
    ) -> Result<LiveToken, Refusal> {
        let tokens = self.open(consent, &row.sealed).await?;
        let minted = self.provider.data_token_scopes().is_some();
        if !minted && tokens.refresh_token().is_none() {
            // After an upstream 401 the data API's answer stands; a token that ran out with
            // nothing to renew it ends the consent.
            return Err(match stale {
                Some(_) => Refusal::NoRefreshToken,
                None => Refusal::Lapse(Error::new(
                    ErrorCode::ConsentExpired,
                    "the access token expired and the grant has no refresh token",
                )),
            });
        }
        let now = now_ms() / 1000;
        let response = match self.provider.data_token_scopes() {
            Some(scopes) => self.mint(client, consent, scopes, now).await,
            None => self.refresh_grant(client, &tokens, now).await,
        }
        .map_err(|error| match error.code() {
            ErrorCode::OAuth(OAuthErrorCode::InvalidGrant) => Refusal::Lapse(error),
            _ => Refusal::Failed(error),
        })?;
        let refreshed = tokens.refreshed(&response);
        let (access_expires_at, unchecked) = match self
            .check_refreshed(client, consent, &tokens, &response, now)
            .await
        {
            Ok(token_exp) => (access_expiry(response.expires_in(), token_exp, now), None),
            // Not checkable just now (a JWKS unreachable): a rotated refresh token must
            // not be lost with the answer, so the set is stored with its unchecked access
            // token expired at once (never used: the next call refreshes again), and this
            // refresh fails, its waiters told so.
            Err(Refusal::Failed(error)) if response.refresh_token().is_some() => {
                (Some(now), Some(error))
            }
            // The consent ends: the tokens just issued for it are nobody's.
            Err(refusal @ Refusal::Lapse(_)) => {
                self.revoke_orphan(consent, &refreshed).await;
                return Err(refusal);
            }
            Err(refusal) => return Err(refusal),
        };
        let sealed = config::sealing_key(self.env)?
            .seal(&consent.id, refreshed.to_plaintext().as_bytes())
            .await?;
        let set = RefreshedSet {
            sealed: &sealed,
            access_expires_at,
            failed_at_ms: unchecked.as_ref().map(|_| now_ms()),
        };
        self.store_refreshed(consent, row, &set, now, &refreshed)
            .await?;
        if let Some(error) = unchecked {
            return Err(Refusal::Failed(error));
        }
        Ok(LiveToken {
            tokens: refreshed,
            generation: row.generation + 1,
        })
    }

    /// The refresh token grant (RFC 6749 §6), with a proof of the grant's key when it is
    /// DPoP-bound (RFC 9449 §5).
    async fn refresh_grant(
        &self,
        client: &ProviderClient<'_>,
        tokens: &TokenSet,
        now: u64,
    ) -> Result<TokenResponse> {
        let Some(refresh_token) = tokens.refresh_token() else {
            return Err(refresh_failed("the grant has no refresh token"));
        };
        // Each attempt authenticates afresh: a client assertion is single use.
        let send = |proof: Option<String>| async move {
            let auth = client.authentication(self.env, now).await?;
            let mut request = build_refresh_token_request(
                &client.metadata.token_endpoint,
                &auth,
                refresh_token,
                None,
            );
            if let Some(proof) = proof {
                request = request.with_header("DPoP", proof);
            }
            client
                .send(&request, "token endpoint", ErrorCode::RefreshFailed)
                .await
        };
        let answer = match tokens.dpop_key() {
            None if self.provider.uses_dpop() => {
                return Err(Error::new(
                    ErrorCode::RecordUnreadable,
                    "this DPoP-bound consent has lost its key",
                ))
            }
            None => send(None).await?,
            Some(private) => {
                let key = DpopKey::from_private(self.provider.dpop_alg(), private.clone())?;
                key.send_with_proof(
                    "POST",
                    client.metadata.token_endpoint.as_str(),
                    None,
                    now,
                    |proof| send(Some(proof)),
                )
                .await?
            }
        };
        // A provider's description that repeats the refresh token or the client secret is
        // not passed on.
        let client_secret = config::client_secret(self.env, self.provider).ok();
        let sent = [
            refresh_token.secret(),
            client_secret.as_ref().map_or("", |secret| secret.secret()),
        ];
        let response = process_refresh_response(
            answer.status,
            answer.content_type.as_deref(),
            &answer.body,
            tokens.scopes(),
        )
        .map_err(|error| error.withholding(&sent))?;
        response.require_token_type(self.provider.uses_dpop())?;
        Ok(response)
    }

    /// A fresh data token where the provider mints those apart from the consent (Moneyhub:
    /// `client_credentials` with the data scopes and the consent's profile as `sub`).
    async fn mint(
        &self,
        client: &ProviderClient<'_>,
        consent: &ConsentRow,
        scopes: &Scopes,
        now: u64,
    ) -> Result<TokenResponse> {
        let profile = consent.provider_subject.as_deref().ok_or_else(|| {
            Error::new(
                ErrorCode::RecordUnreadable,
                "this consent has lost the profile its data tokens are for",
            )
        })?;
        client
            .client_credentials(
                self.env,
                scopes,
                Some(profile),
                ErrorCode::RefreshFailed,
                now,
            )
            .await
    }

    /// What a refreshed grant must still say: the platform still authorizes it (RFC 9396 §7),
    /// a refreshed id_token is the same end-user's, from the same authentication (OpenID
    /// Connect Core §12.2: `sub`, and `auth_time` when it names one), and a JWT
    /// access token checks out (Connect). One that does not ends the consent, since its
    /// refresh token may already have been rotated away; one that could not be checked (a
    /// JWKS unreachable after a key rotation) fails the refresh. Gives the verified JWT
    /// access token's `exp`, if it is one.
    async fn check_refreshed(
        &self,
        client: &ProviderClient<'_>,
        consent: &ConsentRow,
        tokens: &TokenSet,
        response: &TokenResponse,
        now: u64,
    ) -> Result<Option<u64>, Refusal> {
        if let (Some(granted), Some(requested)) = (
            response.authorization_details(),
            self.provider.authorization_details(),
        ) {
            authorization_details::granted(granted, requested, now).map_err(Refusal::Lapse)?;
        }
        let verdict = |error: Error| {
            let refused = error.code().is_jwt_rejection()
                || matches!(
                    error.code(),
                    ErrorCode::IdTokenInvalid | ErrorCode::TokenExchangeFailed
                );
            match refused {
                true => Refusal::Lapse(error),
                false => Refusal::Failed(error),
            }
        };
        if let Some(id_token) = response.id_token() {
            let expected = ExpectedIdToken {
                nonce: None,
                subject: consent.provider_subject.as_deref(),
                fresh_login: false,
                first_auth_time: tokens.auth_time(),
            };
            client
                .verify_id_token(self.env, id_token, &expected, now)
                .await
                .map_err(verdict)?;
        }
        let access = client
            .verify_access_token(
                self.env,
                response.access_token(),
                consent.provider_subject.as_deref(),
                now,
            )
            .await
            .map_err(verdict)?;
        Ok(access.map(|access| access.exp))
    }

    /// Stores the refreshed set. The provider may have rotated the refresh token, so this
    /// matters more than anything else here: a refused write is tried again (it is
    /// conditional on the generation, so it cannot apply twice), and a write whose answer
    /// was lost is recognized by reading the row back.
    async fn store_refreshed(
        &self,
        consent: &ConsentRow,
        row: &TokenRow,
        set: &RefreshedSet<'_>,
        now: u64,
        refreshed: &TokenSet,
    ) -> Result<(), Refusal> {
        let mut stored = Ok(false);
        for pause_ms in [0, 50, 200, 800] {
            if pause_ms > 0 {
                Delay::from(Duration::from_millis(pause_ms)).await;
            }
            stored = self
                .store
                .store_refreshed(&consent.id, row.generation, set, now)
                .await;
            if matches!(stored, Ok(true)) {
                return Ok(());
            }
        }
        match (stored, self.store.token_set(&consent.id).await) {
            // The write landed; only its answer was lost.
            (_, Ok(Some(now_stored))) if now_stored.sealed == set.sealed => Ok(()),
            // Revoked (or lapsed) meanwhile: the new tokens are nobody's; end them too.
            (_, Ok(None)) => {
                self.revoke_orphan(consent, refreshed).await;
                Err(Refusal::Gone)
            }
            (Err(error), _) | (Ok(_), Err(error)) => Err(Refusal::Failed(error)),
            (Ok(_), Ok(Some(_))) => Err(Refusal::Failed(refresh_failed(
                "another refresh of this consent landed first; try again",
            ))),
        }
    }

    /// Revokes tokens no consent holds any more (best effort, logged by code).
    async fn revoke_orphan(&self, consent: &ConsentRow, tokens: &TokenSet) {
        let now = now_ms() / 1000;
        let client = ProviderClient::connect(self.provider, self.config.http_timeout_ms, now).await;
        let revoked = match client {
            Ok(client) => client.revoke(self.env, tokens.revocable(), now).await,
            Err(error) => Err(error),
        };
        if let Err(error) = revoked {
            warn(
                consent,
                "refreshed tokens of a revoked consent not revoked",
                &error,
            );
        }
    }

    /// Opens a consent's sealed set. One that only `CONSENTRY_KEY_PREVIOUS` opens is sealed
    /// again under the current key and written back, unless the set changed meanwhile, so
    /// that a rotation moves every set in use. Best effort: if that fails, the next read
    /// tries again.
    async fn open(&self, consent: &ConsentRow, sealed: &str) -> Result<TokenSet> {
        let sealer = config::sealing_key(self.env)?;
        let (plaintext, key) = sealer.open(&consent.id, sealed).await?;
        if key.id() != sealer.0.current().id() {
            let moved = match sealer.seal(&consent.id, &plaintext).await {
                Ok(resealed) => self.store.reseal(&consent.id, sealed, &resealed).await,
                Err(error) => Err(error),
            };
            if let Err(error) = moved {
                warn(consent, "token set left under the previous key", &error);
            }
        }
        TokenSet::parse(&plaintext)
    }
}

/// How a refresh under a lease did not yield a stored set.
enum Refusal {
    /// The provider refused it for good (`invalid_grant`, an id_token for someone else, a
    /// token that ran out with nothing to renew it): the consent lapses.
    Lapse(Error),
    /// The consent was revoked while the refresh ran.
    Gone,
    /// After an upstream 401, the grant has no refresh token to try.
    NoRefreshToken,
    /// It could not be done just now.
    Failed(Error),
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Refusal::Failed(error)
    }
}

/// Logs how a refresh ended badly: provider and code, never a value.
fn log_refresh(consent: &ConsentRow, how: &str, error: &Error) {
    worker::console_warn!(
        "consentry: refresh provider={} {how} code={}",
        consent.provider,
        log_field(error.code().as_str())
    );
}

/// Logs what went wrong with a consent's tokens, best effort: provider and code, never a value.
fn warn(consent: &ConsentRow, what: &str, error: &Error) {
    worker::console_warn!(
        "consentry: {what} provider={} code={}",
        consent.provider,
        log_field(error.code().as_str())
    );
}

fn refresh_failed(description: &str) -> Error {
    Error::new(ErrorCode::RefreshFailed, description)
}
