//! A live access token for a consent (DESIGN.md, "Using a consent", step 3), refreshed one at
//! a time per consent across every isolate.
//!
//! The lock is a lease in the consent's `token_sets` row in D1, which every isolate sees:
//! a caller that finds the token stale takes the lease with one conditional `UPDATE` (free,
//! and the set still the generation it read), refreshes, seals and stores the new set as the
//! next generation, and only then answers. Callers that find the lease taken poll the row
//! until the generation moves on (and use the new token), the refresh is recorded as failed
//! (and say so), or the lease runs out (and take it themselves). Isolate memory plays no
//! part. A holder that dies mid-refresh leaves a lease that lapses after the HTTP timeout
//! plus a margin; with a rotating provider its successor's refresh then meets
//! `invalid_grant`, which lapses the consent for good: there is no state that loops.

use std::time::Duration;

use consentry_core::api::{consent_expired, needs_refresh};
use consentry_core::encoding::{base64url_encode, log_field};
use consentry_core::{
    build_refresh_token_request, process_refresh_response, Error, ErrorCode, OAuthErrorCode,
    ProviderConfig, Result, TokenSet,
};
use worker::{Delay, Env};

use super::config::{self, Config};
use super::provider_client::{ExpectedIdToken, ProviderClient};
use super::store::{ConsentRow, Store, TokenRow};
use crate::random::random_bytes;

/// How long a refresh lease is held beyond the HTTP timeout of the refresh request itself.
const LEASE_MARGIN_MS: u64 = 5_000;

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
}

impl NoToken {
    pub(crate) fn into_error(self) -> Error {
        match self {
            NoToken::Expired(error) | NoToken::Failed(error) => error,
        }
    }
}

impl From<Error> for NoToken {
    fn from(error: Error) -> Self {
        NoToken::Failed(error)
    }
}

impl TokenSource<'_> {
    /// The consent's tokens, refreshed first when they live less than 30 s more, or when
    /// `stale` names the generation a data API just refused (an upstream 401): then a set of
    /// a later generation is used, refreshed by this call or by another one meanwhile.
    pub(crate) async fn live_token(
        &self,
        consent: &ConsentRow,
        stale: Option<i64>,
    ) -> Result<LiveToken, NoToken> {
        let lease_ms = u64::from(self.config.http_timeout_ms) + LEASE_MARGIN_MS;
        let started_ms = now_ms();
        // Past this a waiter gives up: the longest a holder may keep the lease, twice.
        let give_up_ms = started_ms + 2 * lease_ms;
        let mut pause_ms = 25;
        loop {
            // A read or a lease attempt that storage refuses under contention (D1 answers
            // errors under load) is tried again until the waiter gives up.
            let row = match self.store.token_set(&consent.id).await {
                Ok(Some(row)) => Some(row),
                Ok(None) => return Err(NoToken::Expired(consent_expired())),
                Err(error) if now_ms() > give_up_ms => return Err(NoToken::Failed(error)),
                Err(_) => None,
            };
            if let Some(row) = row {
                let now = now_ms() / 1000;
                let refused = stale.is_some_and(|generation| row.generation <= generation);
                if !refused && !needs_refresh(row.access_expires_at, now) {
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
                let now_ms = now_ms();
                if now_ms > give_up_ms {
                    return Err(NoToken::Failed(refresh_failed(
                        "a refresh of this consent's token is taking too long; try again",
                    )));
                }
                if row.refresh_lock_until <= now_ms {
                    let lease = base64url_encode(&random_bytes::<12>()?);
                    let until_ms = now_ms + lease_ms;
                    let taken = self
                        .store
                        .take_refresh_lease(&consent.id, row.generation, &lease, now_ms, until_ms)
                        .await;
                    if let Ok(true) = taken {
                        return self.refresh(consent, &row, &lease).await;
                    }
                    // Another caller took it first (or storage was busy): wait and look again.
                }
            }
            Delay::from(Duration::from_millis(pause_ms)).await;
            pause_ms = (pause_ms * 2).min(250);
        }
    }

    /// Refreshes under the lease `lease`: the new set is stored (a rotated refresh token
    /// included) before anything is answered.
    async fn refresh(
        &self,
        consent: &ConsentRow,
        row: &TokenRow,
        lease: &str,
    ) -> Result<LiveToken, NoToken> {
        match self.try_refresh(consent, row).await {
            Ok(tokens) => Ok(tokens),
            Err(NoToken::Expired(error)) => {
                worker::console_warn!(
                    "consentry: refresh provider={} lapsed code={}",
                    consent.provider,
                    log_field(error.code().as_str())
                );
                self.store
                    .lapse_consent(&consent.id, now_ms() / 1000)
                    .await?;
                Err(NoToken::Expired(consent_expired()))
            }
            Err(NoToken::Failed(error)) => {
                worker::console_warn!(
                    "consentry: refresh provider={} failed code={}",
                    consent.provider,
                    log_field(error.code().as_str())
                );
                self.store
                    .release_failed_refresh(&consent.id, lease, now_ms())
                    .await?;
                Err(NoToken::Failed(match error.code() {
                    ErrorCode::StorageFailed => error,
                    _ => refresh_failed("the provider could not refresh the token; try again"),
                }))
            }
        }
    }

    async fn try_refresh(
        &self,
        consent: &ConsentRow,
        row: &TokenRow,
    ) -> Result<LiveToken, NoToken> {
        let tokens = self.open(consent, &row.sealed).await?;
        let Some(refresh_token) = tokens.refresh_token() else {
            return Err(NoToken::Expired(Error::new(
                ErrorCode::ConsentExpired,
                "the access token expired and the grant has no refresh token",
            )));
        };
        let now = now_ms() / 1000;
        let client =
            ProviderClient::connect(self.provider, self.config.http_timeout_ms, now).await?;
        let auth = client.authentication(self.env, now).await?;
        let request = build_refresh_token_request(
            &client.metadata.token_endpoint,
            &auth,
            refresh_token,
            None,
        );
        let answer = client
            .send(&request, "token endpoint", ErrorCode::RefreshFailed)
            .await?;
        let response = match process_refresh_response(
            answer.status,
            answer.content_type.as_deref(),
            &answer.body,
            tokens.scopes(),
        ) {
            Ok(response) => response,
            Err(error) if error.code() == &ErrorCode::OAuth(OAuthErrorCode::InvalidGrant) => {
                return Err(NoToken::Expired(error))
            }
            Err(error) => return Err(NoToken::Failed(error)),
        };
        // A refreshed id_token must be the same end-user's, from the same issuer, for us
        // (OpenID Connect Core §12.2); otherwise the new tokens are discarded and the consent
        // ends, since its refresh token may already have been rotated away.
        if let Some(id_token) = response.id_token() {
            let expected = ExpectedIdToken {
                nonce: None,
                subject: consent.provider_subject.as_deref(),
                fresh_login: false,
            };
            client
                .verify_id_token(self.env, id_token, &expected, now)
                .await
                .map_err(NoToken::Expired)?;
        }
        let refreshed = tokens.refreshed(&response);
        let sealed = config::sealing_key(self.env)?
            .seal(&consent.id, refreshed.to_plaintext().as_bytes())
            .await?;
        let access_expires_at = response
            .expires_in()
            .map(|seconds| now.saturating_add(seconds));
        // The provider may have rotated the refresh token: storing the new set matters more
        // than anything else here, so a refused write is tried again (it is conditional on
        // the generation, so a retry cannot apply twice).
        let mut stored = self
            .store
            .store_refreshed(&consent.id, row.generation, &sealed, access_expires_at, now)
            .await;
        for pause_ms in [50, 200, 800] {
            if stored.is_ok() {
                break;
            }
            Delay::from(Duration::from_millis(pause_ms)).await;
            stored = self
                .store
                .store_refreshed(&consent.id, row.generation, &sealed, access_expires_at, now)
                .await;
        }
        if !stored? {
            return Err(NoToken::Failed(refresh_failed(
                "another refresh of this consent landed first; try again",
            )));
        }
        Ok(LiveToken {
            tokens: refreshed,
            generation: row.generation + 1,
        })
    }

    async fn open(&self, consent: &ConsentRow, sealed: &str) -> Result<TokenSet> {
        let plaintext = config::sealing_key(self.env)?
            .open(&consent.id, sealed)
            .await?;
        TokenSet::parse(&plaintext)
    }
}

fn refresh_failed(description: &str) -> Error {
    Error::new(ErrorCode::RefreshFailed, description)
}

/// The time in Unix milliseconds: leases need finer time than the core's seconds.
fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}
