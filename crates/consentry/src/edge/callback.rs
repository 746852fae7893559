//! `GET|POST /auth/callback/{provider}` (DESIGN.md flow step 5): consumes the transaction
//! exactly once, checks the binding cookie, that the flow was started with the provider whose
//! redirect URI this is, `iss` and `state`, exchanges the code with the provider's client
//! authentication, verifies the id_token, seals the tokens, records the consent and a fresh
//! session, and renders the outcome page that posts only the outcome to the opener.
//!
//! Once a flow is consumed its ending no longer depends on the browser: the exchange and
//! the recording run under `waitUntil`, and the response is answered from that same work, so
//! a popup closed mid-exchange still leaves an outcome for `/auth/outcome` to report.

use consentry_core::api::access_expiry;
use consentry_core::cookie::{
    binding_cookie_name, cookie_value, set_cookie, stored_hash, SameSite, BINDING_SECS,
    SESSION_COOKIE,
};
use consentry_core::encoding::{base64url_encode, log_field};
use consentry_core::outcome::format_rfc3339;
use consentry_core::{authorization_details, truelayer};
use consentry_core::{
    process_token_response, validate_authorization_response, AuthorizationCodeGrant,
    AuthorizationResponse, Consent, Error, ErrorCode, Nonce, Outcome, OutcomePage,
    PkceCodeVerifier, PrivateKeyJwk, ProviderConfig, Result, Scopes, State, StateKey, TokenSet,
    WebOrigin,
};
use futures_channel::oneshot;
use worker::{Context, Env, Method, Request, Response};

use super::config::{self, Config};
use super::dpop::DpopKey;
use super::provider_client::{ExpectedIdToken, GrantAtProvider, ProviderClient};
use super::start::{dpop_key_aad, transaction_expired};
use super::store::{Consumed, NewConsent, NewSession, Store, Transaction};
use super::{log_ending, now, open_store, random_token, raw_query, read_form, respond};
use crate::random::random_bytes;

/// A session's lifetime: 12 hours.
pub(crate) const SESSION_SECS: u64 = 12 * 3600;

/// How long after its consumption a flow's ending can take at most: discovery, the token
/// request, two JWKS fetches and a read of the provider's account (TrueLayer's `/me`), each
/// bounded by the HTTP timeout, and 30 s for the rest (WebCrypto, D1; also what `waitUntil`
/// is granted once the client has gone). A consumed flow with no outcome after that was cut
/// off: `/auth/outcome` says so.
pub(crate) fn ending_deadline_secs(http_timeout_ms: u32) -> u64 {
    5 * u64::from(http_timeout_ms).div_ceil(1000) + 30
}

/// The outcome error of a flow whose ending was never recorded.
pub(crate) fn exchange_interrupted() -> Error {
    Error::new(
        ErrorCode::ExchangeInterrupted,
        "the flow came back, but its code exchange was cut off before it was recorded; start it again",
    )
}

pub(super) async fn handle(
    mut request: Request,
    env: &Env,
    config: &Config,
    provider: &ProviderConfig,
    ctx: &Context,
) -> worker::Result<Response> {
    let cookies = request.headers().get("Cookie")?.unwrap_or_default();
    let params = match request.method() {
        Method::Post => read_form(&mut request).await,
        _ => Ok(raw_query(&request).unwrap_or_default()),
    };
    // From the lookup on, the work runs under waitUntil whether or not the browser waits, so
    // a flow consumed gets its ending recorded; should even that be cut off (production
    // grants waitUntil 30 s once the client is gone), /auth/outcome reads the flow as
    // interrupted after its ending deadline.
    let (sender, receiver) = oneshot::channel();
    let work = run(
        env.clone(),
        config.clone(),
        provider.id().to_owned(),
        params,
        cookies,
    );
    ctx.wait_until(async move {
        // The receiver is gone when the client went away: the ending is recorded anyway.
        let _ = sender.send(work.await);
    });
    let Ending {
        page,
        code,
        set_cookies,
    } = match receiver.await {
        Ok(ending) => ending,
        // Only if the work was dropped unfinished: what it recorded, if anything, is what
        // /auth/outcome reports.
        Err(_) => Ending {
            page: OutcomePage::for_error(&exchange_interrupted(), 400),
            code: Some(ErrorCode::ExchangeInterrupted),
            set_cookies: Vec::new(),
        },
    };
    log_ending("callback", Some(provider.id()), &page, code.as_ref());
    respond::page(&page, &set_cookies)
}

/// Claims the flow, then ends it.
async fn run(
    env: Env,
    config: Config,
    provider_id: String,
    params: Result<String>,
    cookies: String,
) -> Ending {
    let claimed = match (params, config.provider(&provider_id)) {
        (Ok(params), Ok(provider)) => claim_flow(&env, provider, &params, &cookies).await,
        (Err(error), _) | (_, Err(error)) => Err(error),
    };
    match claimed {
        Ok(claimed) => {
            let binding_cookie = claimed.binding_cookie.clone();
            let mut ending = end_flow(env, config, claimed).await;
            ending.set_cookies.push(binding_cookie);
            ending
        }
        // Nothing was consumed: no outcome to post, nothing recorded. Storage that is down
        // says so (503, Retry-After): the same callback can land once it is back.
        Err(error) => Ending {
            page: OutcomePage::for_error(&error, OutcomePage::status_without_flow(&error)),
            code: Some(error.code().clone()),
            set_cookies: Vec::new(),
        },
    }
}

/// A flow this request consumed, with everything its ending needs.
struct Claimed {
    store: Store,
    response: AuthorizationResponse,
    state: State,
    key: StateKey,
    transaction: Transaction,
    /// The session cookie's hash, when this callback carries it (only a same-site redirect).
    callback_session: Option<String>,
    /// The binding cookie set again for [`BINDING_SECS`] from now, so that the SPA can read
    /// the outcome after a callback that came late in the flow's 10 minutes.
    binding_cookie: String,
    now: u64,
}

/// How a consumed flow ended: its page, its code, and the session cookie when granted.
struct Ending {
    page: OutcomePage,
    code: Option<ErrorCode>,
    set_cookies: Vec<String>,
}

/// Finds and consumes the flow of `provider` (whose redirect URI this is); an error here
/// means no flow was consumed and nothing recorded.
async fn claim_flow(
    env: &Env,
    provider: &ProviderConfig,
    params: &str,
    cookies: &str,
) -> Result<Claimed> {
    let response = AuthorizationResponse::parse(params)?;
    let state = response
        .state()
        .ok_or_else(|| Error::new(ErrorCode::MissingParameter, "the callback carries no state"))?;
    let key = state.storage_key();
    let binding_name = binding_cookie_name(&key);
    let binding = cookie_value(cookies, &binding_name);
    let binding_hash = binding.map(stored_hash);
    let store = open_store(env)?;
    let now = now();
    let transaction = match store
        .consume_transaction(key.as_str(), binding_hash.as_deref(), provider.id(), now)
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
        Consumed::Expired => return Err(transaction_expired()),
        Consumed::ProviderMismatch => {
            return Err(Error::new(
                ErrorCode::ProviderMismatch,
                format!(
                    "this flow was started with another provider than {}: the response came \
                     back on the wrong redirect URI and is not used",
                    provider.id()
                ),
            ))
        }
        Consumed::Replayed => {
            return Err(Error::new(
                ErrorCode::TransactionReplayed,
                "this flow has already ended; its callback cannot be used again",
            ))
        }
    };
    Ok(Claimed {
        store,
        response,
        state,
        key,
        transaction,
        callback_session: cookie_value(cookies, SESSION_COOKIE).map(stored_hash),
        // Taken means the request held the binding cookie.
        binding_cookie: set_cookie(
            &binding_name,
            binding.unwrap_or_default(),
            BINDING_SECS,
            provider.binding_same_site(),
        ),
        now,
    })
}

/// Exchanges and records a consumed flow; every ending, failures included, is recorded as
/// the flow's outcome (or logged when even that cannot be stored).
async fn end_flow(env: Env, config: Config, claimed: Claimed) -> Ending {
    let Claimed {
        store,
        response,
        state,
        key,
        transaction,
        callback_session,
        binding_cookie: _,
        now,
    } = claimed;
    let origin = match WebOrigin::parse(&transaction.origin) {
        Ok(origin) => origin,
        // A damaged row: recorded, but with no origin to post the outcome to.
        Err(error) => {
            record_failure(&store, &key, Outcome::from_error(state, &error)).await;
            return Ending {
                page: OutcomePage::for_error(&error, 400),
                code: Some(error.code().clone()),
                set_cookies: Vec::new(),
            };
        }
    };
    let granted = match exchange(&env, &config, &transaction, response, &state, &key, now).await {
        Ok(grant) => {
            // The session this browser held when it started the flow, and the one it holds
            // now if the redirect was same-site, end with the grant.
            let replaces = [
                transaction.replaces_session.as_deref(),
                callback_session.as_deref(),
            ];
            match record_grant(&store, &transaction, &state, &key, &grant, replaces, now).await {
                Ok(recorded) => Ok(recorded),
                Err(error) => Err(Failure {
                    // Ended at the provider only when it is certain no consent holds it: if
                    // even that cannot be read, the write may have landed, and it is left.
                    unrecorded: match store.consent_stored(&grant.consent_id).await {
                        Ok(false) => Some(Unrecorded {
                            tokens: grant.tokens,
                            profile: grant.provider_subject,
                            connection: grant.provider_consent_id,
                        }),
                        Ok(true) => None,
                        Err(unknown) => {
                            worker::console_warn!(
                                "consentry: grant neither stored nor ended provider={} code={}",
                                log_field(&transaction.provider),
                                log_field(unknown.code().as_str())
                            );
                            None
                        }
                    },
                    error,
                }),
            }
        }
        Err(failure) => Err(failure),
    };
    let (outcome, set_cookies) = match granted {
        Ok((outcome, session_cookie)) => (outcome, vec![session_cookie]),
        Err(Failure { error, unrecorded }) => {
            let outcome = record_failure(&store, &key, Outcome::from_error(state, &error)).await;
            if let Some(unrecorded) = unrecorded {
                revoke_unrecorded_grant(&env, &config, &transaction, &unrecorded, now).await;
            }
            (outcome, Vec::new())
        }
    };
    Ending {
        page: OutcomePage::for_outcome(&outcome, &origin),
        code: outcome.error().map(|error| error.code().clone()),
        set_cookies,
    }
}

/// Why a consumed flow did not end in a stored grant, and, when the provider had already
/// issued tokens that nothing keeps, the grant to end.
struct Failure {
    error: Error,
    unrecorded: Option<Unrecorded>,
}

/// A grant the provider made that no consent holds: its tokens, and where the provider
/// keeps it when it says (Moneyhub: the connection, under the profile).
struct Unrecorded {
    tokens: TokenSet,
    profile: Option<String>,
    connection: Option<String>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            unrecorded: None,
        }
    }
}

/// Records a failed flow's outcome, trying twice: a flow that came back must not read as
/// pending. The first outcome recorded stands (an `exchange_interrupted` that
/// `/auth/outcome` recorded while this ending overran its deadline, say): the outcome given
/// back is the one on record. If nothing can be recorded, `/auth/outcome` reports the flow
/// as interrupted once its ending deadline has passed.
async fn record_failure(store: &Store, key: &StateKey, outcome: Outcome) -> Outcome {
    let json = outcome.to_json();
    for attempt in 1..=2 {
        match store.record_outcome(key.as_str(), &json).await {
            Ok(true) => return outcome,
            Ok(false) => {
                return store
                    .recorded_outcome(key.as_str())
                    .await
                    .unwrap_or(outcome)
            }
            Err(failure) => worker::console_error!(
                "consentry: outcome not recorded (attempt {attempt}): {}",
                log_field(failure.code().as_str())
            ),
        }
    }
    outcome
}

/// A grant the provider made for a flow that did not end in a stored grant is ended at the
/// provider ([`ProviderClient::end_grant`]: RFC 7009 on the refresh token, which ends the
/// grant, when there is one; Moneyhub's connection deleted), so that no live grant is left
/// that nobody can use or see. Best effort: a provider with no way to end it, or an end that
/// fails, is logged by code only.
async fn revoke_unrecorded_grant(
    env: &Env,
    config: &Config,
    transaction: &Transaction,
    unrecorded: &Unrecorded,
    now: u64,
) {
    let grant = GrantAtProvider {
        tokens: Some(&unrecorded.tokens),
        profile: unrecorded.profile.as_deref(),
        connection: unrecorded.connection.as_deref(),
    };
    let revoked = match config.provider(&transaction.provider) {
        Ok(provider) => {
            match ProviderClient::connect(provider, config.http_timeout_ms, now).await {
                Ok(client) => client.end_grant(env, &grant, now).await,
                Err(error) => Err(error),
            }
        }
        Err(error) => Err(error),
    };
    match revoked {
        Ok(true) => worker::console_warn!(
            "consentry: grant not stored; revoked at provider={}",
            transaction.provider
        ),
        Ok(false) => worker::console_warn!(
            "consentry: grant not stored; provider={} offers no way to end it",
            transaction.provider
        ),
        Err(error) => worker::console_error!(
            "consentry: grant not stored nor revoked at provider={}: {}",
            transaction.provider,
            log_field(error.code().as_str())
        ),
    }
}

/// What a successful code exchange yields, before it is stored.
struct Grant {
    tokens: TokenSet,
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
) -> Result<Grant, Failure> {
    if transaction.expires_at <= now {
        return Err(transaction_expired().into());
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
        Some(sealed) => sealing_key.open(key.as_str(), sealed).await?.0,
        None => {
            return Err(
                Error::new(ErrorCode::RecordUnreadable, "the flow's verifier is gone").into(),
            )
        }
    };
    let verifier = String::from_utf8(verifier)
        .map_err(|_| {
            Error::new(
                ErrorCode::RecordUnreadable,
                "the flow's verifier is unreadable",
            )
        })
        .and_then(|verifier| PkceCodeVerifier::parse(&verifier))?;
    let grant = AuthorizationCodeGrant::new(
        validated,
        &provider.redirect_url(&config.public_origin)?,
        verifier,
        &provider.exchange_params(transaction.provider_subject.as_deref()),
    )?;
    // Each attempt authenticates afresh (a client assertion is single use).
    let send = |proof: Option<String>| {
        let (client, grant) = (&client, &grant);
        async move {
            let auth = client.authentication(env, now).await?;
            let mut request = grant.token_request(&client.metadata.token_endpoint, &auth)?;
            if let Some(proof) = proof {
                request = request.with_header("DPoP", proof);
            }
            client
                .send(&request, "token endpoint", ErrorCode::TokenExchangeFailed)
                .await
        }
    };
    // The code is presented once; a DPoP server's nonce challenge (the code unspent, RFC
    // 9449 §8) is the one answer it is presented again for.
    let dpop_key = open_dpop_key(env, provider, transaction, key).await?;
    let answer = match &dpop_key {
        None => send(None).await?,
        Some(dpop_key) => {
            dpop_key
                .send_with_proof(
                    "POST",
                    client.metadata.token_endpoint.as_str(),
                    None,
                    now,
                    |proof| send(Some(proof)),
                )
                .await?
        }
    };
    let requested = Scopes::parse(&transaction.scopes)?;
    let tokens = match process_token_response(
        answer.status,
        answer.content_type.as_deref(),
        &answer.body,
        &requested,
    ) {
        Ok(tokens) => tokens,
        // An answer refused for what it says (no id_token, a malformed expires_in) may
        // still hold tokens the provider issued: they are revoked too. A provider's
        // description that repeats what was sent is not shown.
        Err(error) => {
            let client_secret = config::client_secret(env, provider).ok();
            let [code, verifier] = grant.secrets();
            let sent = [
                code,
                verifier,
                client_secret.as_ref().map_or("", |s| s.secret()),
            ];
            return Err(Failure {
                error: error.withholding(&sent),
                unrecorded: TokenSet::issued_in(&answer.body).map(|tokens| Unrecorded {
                    tokens,
                    profile: transaction.provider_subject.clone(),
                    connection: None,
                }),
            });
        }
    };
    // The provider has issued tokens: from here a failure must not leave them live.
    let unrecorded = |error: Error, tokens: TokenSet| Failure {
        error,
        unrecorded: Some(Unrecorded {
            tokens,
            profile: transaction.provider_subject.clone(),
            connection: None,
        }),
    };
    let mut token_set = TokenSet::from_response(&tokens);
    if let Some(dpop_key) = dpop_key {
        token_set = match token_set.with_dpop_key(dpop_key.private().clone()) {
            Ok(token_set) => token_set,
            Err(error) => return Err(unrecorded(error, TokenSet::from_response(&tokens))),
        };
    }
    let verified = match tokens.require_token_type(provider.uses_dpop()) {
        Ok(()) => {
            verify_grant(
                env,
                &client,
                transaction,
                &tokens,
                &mut token_set,
                &sealing_key,
                now,
            )
            .await
        }
        Err(error) => Err(error),
    };
    match verified {
        Ok(verified) => Ok(verified.into_grant(token_set, &tokens, provider, now)),
        Err(error) => Err(unrecorded(error, token_set)),
    }
}

/// The flow's DPoP key, unsealed, for a provider that binds tokens to one.
async fn open_dpop_key(
    env: &Env,
    provider: &ProviderConfig,
    transaction: &Transaction,
    key: &StateKey,
) -> Result<Option<DpopKey>> {
    if !provider.uses_dpop() {
        return Ok(None);
    }
    let sealed = transaction
        .sealed_dpop_key
        .as_deref()
        .ok_or_else(|| Error::new(ErrorCode::RecordUnreadable, "the flow's DPoP key is gone"))?;
    let (private, _) = config::sealing_key(env)?
        .open(&dpop_key_aad(key), sealed)
        .await?;
    let private = String::from_utf8(private).map_err(|_| {
        Error::new(
            ErrorCode::RecordUnreadable,
            "the flow's DPoP key is unreadable",
        )
    })?;
    DpopKey::from_private(provider.dpop_alg(), PrivateKeyJwk::new(private)).map(Some)
}

/// What the checks of a token response yield: what the verified id_token (or JWT access
/// token) and the provider say about the grant, and the sealed tokens.
struct Verified {
    provider_subject: Option<String>,
    provider_consent_id: Option<String>,
    details: authorization_details::GrantedDetails,
    /// When a verified JWT access token says it expires.
    token_exp: Option<u64>,
    /// When the verified id_token says the consent ends (Moneyhub's `mh:consent`).
    consent_expires_at: Option<u64>,
    consent_id: String,
    sealed_tokens: String,
}

impl Verified {
    fn into_grant(
        self,
        tokens: TokenSet,
        response: &consentry_core::TokenResponse,
        provider: &ProviderConfig,
        now: u64,
    ) -> Grant {
        // What the granted authorization_details say (RFC 9396: an OFP's consent id and
        // expiry) comes first; else the id_token's claims, and the profile's fixed term.
        let details = self.details;
        let access_expires_at = match provider.data_token_scopes() {
            // The code's token reads no data (Moneyhub): the first call mints a data token.
            Some(_) => Some(now),
            None => access_expiry(response.expires_in(), self.token_exp, now),
        };
        Grant {
            tokens,
            scopes: response.scopes().clone(),
            sealed_tokens: self.sealed_tokens,
            access_expires_at,
            consent_expires_at: details.expires_at.or(self.consent_expires_at).or_else(|| {
                provider
                    .consent_days()
                    .map(|days| now.saturating_add(days.saturating_mul(86_400)))
            }),
            provider_subject: self.provider_subject,
            provider_consent_id: details.consent_id.or(self.provider_consent_id),
            consent_id: self.consent_id,
        }
    }
}

/// Verifies the id_token (when there is one, and requires one when the flow asked for a
/// profile) and seals the tokens under a fresh consent id.
async fn verify_grant(
    env: &Env,
    client: &ProviderClient<'_>,
    transaction: &Transaction,
    tokens: &consentry_core::TokenResponse,
    token_set: &mut TokenSet,
    sealing_key: &super::webcrypto::Sealer,
    now: u64,
) -> Result<Verified> {
    let provider = client.config;
    let expected_subject = transaction.provider_subject.as_deref();
    let claims = match tokens.id_token() {
        Some(id_token) => {
            let nonce = transaction.nonce.clone().map(Nonce::new);
            let expected = ExpectedIdToken {
                nonce: nonce.as_ref(),
                subject: expected_subject,
                fresh_login: true,
                first_auth_time: None,
            };
            Some(
                client
                    .verify_id_token(env, id_token, &expected, now)
                    .await?,
            )
        }
        // The flow asked for a profile: only an id_token naming it proves it was granted.
        None if expected_subject.is_some() => {
            return Err(Error::new(
                ErrorCode::IdTokenMissing,
                "the flow asked for a provider profile, and no id_token names it",
            ))
        }
        None => None,
    };
    // A provider whose access token is a JWT for us (Connect) has it checked before anything
    // is kept; it must name the id_token's user, when there is one.
    let access = client
        .verify_access_token(
            env,
            tokens.access_token(),
            claims.as_ref().map(|claims| claims.sub()),
            now,
        )
        .await?;

    // The platform's word on the consent it recorded (RFC 9396 §7): only details of a type
    // the flow asked for count, and one not Authorized is no grant.
    let details = match (
        tokens.authorization_details(),
        provider.authorization_details(),
    ) {
        (Some(granted), Some(requested)) => {
            authorization_details::granted(granted, requested, now)?
        }
        _ => authorization_details::GrantedDetails::default(),
    };
    let consent_id = format!("cns_{}", base64url_encode(&random_bytes::<16>()?));
    token_set.set_auth_time(claims.as_ref().and_then(|claims| claims.auth_time()));
    let sealed_tokens = sealing_key
        .seal(&consent_id, token_set.to_plaintext().as_bytes())
        .await?;
    let provider_consent_id = match (provider.account_lookup_url(), &claims) {
        (Some(url), _) => look_up_account(client, &url, tokens).await,
        (None, Some(claims)) => provider.consent_id_in(claims)?,
        (None, None) => None,
    };
    Ok(Verified {
        provider_subject: claims
            .as_ref()
            .map(|claims| claims.sub().to_owned())
            .or_else(|| access.as_ref().map(|access| access.sub.clone())),
        provider_consent_id,
        details,
        token_exp: access.map(|access| access.exp),
        consent_expires_at: claims
            .as_ref()
            .and_then(|claims| provider.consent_expiry(claims, now)),
        consent_id,
        sealed_tokens,
    })
}

/// The connection a grant reaches, read from the provider after the exchange (TrueLayer's
/// `/data/v1/me`: its `credentials_id`). The consent is the user's either way: a lookup that
/// fails leaves its `account` unknown and is logged by code.
async fn look_up_account(
    client: &ProviderClient<'_>,
    url: &str,
    tokens: &consentry_core::TokenResponse,
) -> Option<String> {
    let request = truelayer::build_me_request(url, tokens.access_token());
    let looked_up = match client
        .send(&request, "data API", ErrorCode::UpstreamUnreachable)
        .await
    {
        Ok(answer) => truelayer::process_me_response(answer.status, &answer.body),
        Err(error) => Err(error),
    };
    match looked_up {
        Ok(account) => Some(account),
        Err(error) => {
            worker::console_warn!(
                "consentry: account lookup provider={} code={}",
                client.config.id(),
                log_field(error.code().as_str())
            );
            None
        }
    }
}

/// Stores the grant, its outcome and a fresh session in one batch; gives the outcome and
/// the session cookie.
async fn record_grant(
    store: &Store,
    transaction: &Transaction,
    state: &State,
    key: &StateKey,
    grant: &Grant,
    replaces_sessions: [Option<&str>; 2],
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
                replaces: replaces_sessions,
            },
        )
        .await?;
    let cookie = set_cookie(SESSION_COOKIE, &session, SESSION_SECS, SameSite::Strict);
    Ok((outcome, cookie))
}
