//! The Worker's side of talking to a provider: discovery and JWKS (cached per isolate),
//! client authentication (a secret, or a `private_key_jwt` assertion signed with WebCrypto),
//! PAR, the code exchange, id_token and JWT access token verification, and ending a grant
//! (RFC 7009, or Moneyhub's connection delete). Every request and every protocol verdict is
//! the core's; this file moves bytes and signatures, and sorts a failed check into "refused"
//! or "not checkable just now".

use std::cell::RefCell;
use std::collections::HashMap;

use consentry_core::discovery::{process_discovery_response, ProviderMetadata};
use consentry_core::id_token::{
    validate_id_token_claims, validate_jwt_access_token_claims, AccessTokenClaims, IdTokenClaims,
    IdTokenValidation, DEFAULT_CLOCK_TOLERANCE,
};
use consentry_core::jwk::JwkSet;
use consentry_core::jwt::{UnverifiedJwt, VerifiedJwt};
use consentry_core::secret::ClientAssertion;
use consentry_core::{
    build_client_assertion, build_client_credentials_request, build_revocation_request,
    process_par_response, process_refresh_response, process_revocation_response, AccessToken,
    AuthorizationRequest, ClientAuthMethod, ClientAuthentication, Error, ErrorCode, HttpRequest,
    IdToken, JwsAlgorithm, JwsSigningInput, Nonce, ProviderConfig, Result, RevocableToken, Scopes,
    TokenResponse, TokenSet,
};
use worker::Env;

use super::config;
use super::outbound::{self, ProviderResponse};
use super::webcrypto;
use crate::random::random_bytes;

/// How long discovered metadata and a JWKS are reused within one isolate.
const CACHE_SECS: u64 = 600;

/// How old a cached JWKS must be before a token naming a key it lacks makes the Worker fetch
/// it again (per isolate and JWKS URI).
const JWKS_REFETCH_SECS: u64 = 60;

thread_local! {
    static METADATA: RefCell<HashMap<String, (u64, ProviderMetadata)>> = RefCell::new(HashMap::new());
    static JWKS: RefCell<HashMap<String, (u64, JwkSet)>> = RefCell::new(HashMap::new());
}

/// What an id_token must say beyond the issuer and the client, which are always checked.
pub(crate) struct ExpectedIdToken<'a> {
    /// The `nonce` the authentication request sent.
    pub nonce: Option<&'a Nonce>,
    /// The `sub` it must name: the profile the flow asked for, or, on a refresh, the one the
    /// grant's first id_token named (OpenID Connect Core §12.2).
    pub subject: Option<&'a str>,
    /// Whether it answers a login just made, so that the configured `max_age` applies to its
    /// `auth_time` (not on a refresh).
    pub fresh_login: bool,
    /// On a refresh, the grant's first id_token's `auth_time`, which any `auth_time` must
    /// repeat (OpenID Connect Core §12.2).
    pub first_auth_time: Option<u64>,
}

/// A grant as the provider keeps it, to end it there ([`ProviderClient::end_grant`]).
pub(crate) struct GrantAtProvider<'a> {
    /// Its tokens, if still held.
    pub tokens: Option<&'a TokenSet>,
    /// The app user's profile at the provider (Moneyhub's `userId`).
    pub profile: Option<&'a str>,
    /// The provider's own id of the grant (Moneyhub's connection, `mh:con_id`).
    pub connection: Option<&'a str>,
}

/// One provider, for the length of one request.
pub(crate) struct ProviderClient<'a> {
    pub config: &'a ProviderConfig,
    pub metadata: ProviderMetadata,
    timeout_ms: u32,
}

impl<'a> ProviderClient<'a> {
    /// The provider's metadata: configured endpoints, or discovery (RFC 8414 / OpenID
    /// Discovery), reused for ten minutes.
    pub(crate) async fn connect(
        config: &'a ProviderConfig,
        timeout_ms: u32,
        now: u64,
    ) -> Result<ProviderClient<'a>> {
        let metadata = match config.explicit_metadata() {
            Some(metadata) => metadata.clone(),
            None => discover(config, timeout_ms, now).await?,
        };
        Ok(ProviderClient {
            config,
            metadata,
            timeout_ms,
        })
    }

    /// How long the provider has to answer one request.
    pub(crate) fn timeout_ms(&self) -> u32 {
        self.timeout_ms
    }

    /// Sends one request to the provider; no answer in time is `code`, said plainly.
    pub(crate) async fn send(
        &self,
        request: &HttpRequest,
        endpoint: &str,
        code: ErrorCode,
    ) -> Result<ProviderResponse> {
        outbound::exchange(request, endpoint, code, self.timeout_ms).await
    }

    /// Fresh client credentials for one request to the token, PAR or revocation endpoint.
    pub(crate) async fn authentication(&self, env: &Env, now: u64) -> Result<ClientAuthentication> {
        let client_id = self.config.client_id().clone();
        match self.config.auth_method() {
            ClientAuthMethod::ClientSecretBasic => Ok(ClientAuthentication::ClientSecretBasic(
                client_id,
                config::client_secret(env, self.config)?,
            )),
            ClientAuthMethod::ClientSecretPost => Ok(ClientAuthentication::ClientSecretPost(
                client_id,
                config::client_secret(env, self.config)?,
            )),
            ClientAuthMethod::PrivateKeyJwt => {
                let input = build_client_assertion(
                    &client_id,
                    self.metadata.issuer.as_str(),
                    self.config.signing_alg(),
                    self.config.key_id(),
                    now,
                    &random_bytes()?,
                )?;
                let assertion = self.sign(env, input).await?;
                Ok(ClientAuthentication::PrivateKeyJwt(
                    client_id,
                    ClientAssertion::new(assertion),
                ))
            }
            other => Err(Error::new(
                ErrorCode::InvalidConfiguration,
                format!("client authentication {} is not supported", other.as_str()),
            )),
        }
    }

    /// The front-channel URL for `request`: the plain authorization URL, or, for PAR
    /// providers, the request pushed first (with a signed request object when configured)
    /// and only `client_id` + `request_uri` on the front channel.
    pub(crate) async fn authorization_url(
        &self,
        env: &Env,
        request: &AuthorizationRequest,
        now: u64,
    ) -> Result<String> {
        let par_endpoint = match &self.metadata.pushed_authorization_request_endpoint {
            Some(endpoint) if self.config.uses_par() => endpoint,
            None if self.config.uses_par() => {
                return Err(Error::new(
                    ErrorCode::InvalidConfiguration,
                    "the provider is configured for PAR but names no PAR endpoint",
                ))
            }
            _ => return Ok(request.to_url(&self.metadata.authorization_endpoint)),
        };
        let auth = self.authentication(env, now).await?;
        let push = if self.config.uses_request_object() {
            let input = request.build_request_object(
                &self.metadata.issuer,
                self.config.signing_alg(),
                self.config.key_id(),
                now,
                &random_bytes()?,
            )?;
            let request_object = self.sign(env, input).await?;
            request.build_par_request_with_request_object(par_endpoint, &auth, &request_object)
        } else {
            request.build_par_request(par_endpoint, &auth)
        };
        let answer = self
            .send(&push, "PAR endpoint", ErrorCode::ParFailed)
            .await?;
        // A provider's description that repeats the client secret is not shown.
        let client_secret = config::client_secret(env, self.config).ok();
        let sent = [client_secret.as_ref().map_or("", |secret| secret.secret())];
        let pushed = process_par_response(answer.status, &answer.body)
            .map_err(|error| error.withholding(&sent))?;
        Ok(pushed.authorization_url(
            &self.metadata.authorization_endpoint,
            self.config.client_id(),
        ))
    }

    /// Ends a grant at the provider. Moneyhub: its connection is deleted under the profile
    /// (with a `connection:delete` token of the client's, none of the grant's); otherwise, or
    /// when the connection is not known, the grant's
    /// refresh token, else its access token, is revoked (RFC 7009). `Ok(false)` when there is
    /// no way (no revocation endpoint, or nothing known to end); an error when the provider
    /// did not confirm.
    pub(crate) async fn end_grant(
        &self,
        env: &Env,
        grant: &GrantAtProvider<'_>,
        now: u64,
    ) -> Result<bool> {
        if let (Some(_), Some(profile), Some(connection)) = (
            self.config.users_endpoint(),
            grant.profile,
            grant.connection,
        ) {
            return super::moneyhub::delete_connection(self, env, profile, connection, now)
                .await
                .map(|()| true);
        }
        match grant.tokens {
            Some(tokens) => self.revoke(env, tokens.revocable(), now).await,
            None => Ok(false),
        }
    }

    /// Revokes `token` at the provider (RFC 7009). `Ok(false)` when the provider has no
    /// revocation endpoint; an error when it did not confirm.
    pub(crate) async fn revoke(
        &self,
        env: &Env,
        token: RevocableToken<'_>,
        now: u64,
    ) -> Result<bool> {
        let Some(endpoint) = &self.metadata.revocation_endpoint else {
            return Ok(false);
        };
        let auth = self.authentication(env, now).await?;
        let request = build_revocation_request(endpoint, &auth, token);
        let answer = self
            .send(&request, "revocation endpoint", ErrorCode::RevocationFailed)
            .await?;
        process_revocation_response(answer.status, &answer.body)?;
        Ok(true)
    }

    /// Verifies an id_token: the signature ([`verify_jwt`](Self::verify_jwt): WebCrypto
    /// against the provider's JWKS, one refetch when no key fits, as after a rotation, or the
    /// client secret for HS256); then its claims with the core, as `expected` says.
    pub(crate) async fn verify_id_token(
        &self,
        env: &Env,
        id_token: &IdToken,
        expected: &ExpectedIdToken<'_>,
        now: u64,
    ) -> Result<IdTokenClaims> {
        let verified = self
            .verify_jwt(
                env,
                id_token.secret(),
                self.config.id_token_signing_algs(),
                now,
            )
            .await?;
        let mut validation =
            IdTokenValidation::new(&self.metadata.issuer, self.config.client_id(), now);
        validation = match expected.nonce {
            Some(nonce) => validation.with_nonce(nonce),
            None if expected.fresh_login => validation.with_no_nonce_sent(),
            None => validation,
        };
        if let Some(max_age) = self.config.max_age().filter(|_| expected.fresh_login) {
            validation = validation.with_max_age(max_age);
        }
        if let Some(subject) = expected.subject {
            validation = validation.with_subject(subject);
        }
        if let Some(auth_time) = expected.first_auth_time {
            validation = validation.with_first_auth_time(auth_time);
        }
        validate_id_token_claims(&verified, &validation)
    }

    /// Verifies a JWT access token, for a provider whose tokens the client must check before
    /// it trusts a grant (Connect: `access_token_signing_algs`): the signature (HS256 with the
    /// client secret, else against the JWKS), then `iss`, `aud` = this client, `exp`, `iat` and
    /// `sub` (`subject`, when given) with the core. `None` for a provider whose access tokens are opaque to us. A
    /// token that fails is `token_exchange_failed`, its description naming what failed; one
    /// that cannot be checked just now (its JWKS unreachable) keeps that error's code.
    pub(crate) async fn verify_access_token(
        &self,
        env: &Env,
        access_token: &AccessToken,
        subject: Option<&str>,
        now: u64,
    ) -> Result<Option<AccessTokenClaims>> {
        let algs = self.config.access_token_signing_algs();
        if algs.is_empty() {
            return Ok(None);
        }
        // A token that fails its checks is the provider's fault: `token_exchange_failed`.
        // One that cannot be checked just now (the JWKS unreachable) keeps its own code.
        let verified = self
            .verify_jwt(env, access_token.secret(), algs, now)
            .await
            .map_err(|error| match error.code().is_jwt_rejection() {
                true => Error::new(
                    ErrorCode::TokenExchangeFailed,
                    format!(
                        "the access token is not this provider's JWT: {}",
                        error.description()
                    ),
                ),
                false => error,
            })?;
        validate_jwt_access_token_claims(
            &verified,
            &self.metadata.issuer,
            self.config.client_id(),
            subject,
            now,
            DEFAULT_CLOCK_TOLERANCE,
        )
        .map(Some)
    }

    /// A `client_credentials` token with `scopes` (and Moneyhub's `sub`, the profile it acts
    /// for, when given), its refusal coded `code`.
    pub(crate) async fn client_credentials(
        &self,
        env: &Env,
        scopes: &Scopes,
        sub: Option<&str>,
        code: ErrorCode,
        now: u64,
    ) -> Result<TokenResponse> {
        let auth = self.authentication(env, now).await?;
        let request =
            build_client_credentials_request(&self.metadata.token_endpoint, &auth, scopes, sub);
        let answer = self.send(&request, "token endpoint", code).await?;
        let client_secret = config::client_secret(env, self.config).ok();
        let sent = [client_secret.as_ref().map_or("", |secret| secret.secret())];
        let response = process_refresh_response(
            answer.status,
            answer.content_type.as_deref(),
            &answer.body,
            scopes,
        )
        .map_err(|error| error.withholding(&sent))?;
        response.require_token_type(false)?;
        Ok(response)
    }

    /// A JWT's signature, checked against `algs`: HS256 with the client secret (OpenID
    /// Connect Core §10.1), anything else against the provider's JWKS.
    async fn verify_jwt(
        &self,
        env: &Env,
        compact: &str,
        algs: &[JwsAlgorithm],
        now: u64,
    ) -> Result<VerifiedJwt> {
        let jwt = UnverifiedJwt::parse(compact, algs)?;
        match jwt.header().alg() {
            JwsAlgorithm::HS256 => {
                let secret = config::client_secret(env, self.config)?;
                jwt.verify_hs256(secret.secret().as_bytes())
            }
            _ => self.verify_with_jwks(jwt, now).await,
        }
    }

    /// Fetches the provider's JWKS now unless a fresh copy is cached, so that verifying an
    /// id_token or a JWT access token later is local in the usual case (a refresh fetches it
    /// before taking its lease). Nothing to do for a provider without one.
    pub(crate) async fn prefetch_jwks(&self, now: u64) -> Result<()> {
        match &self.metadata.jwks_uri {
            Some(uri) => self.jwks(uri.as_str(), false, now).await.map(|_| ()),
            None => Ok(()),
        }
    }

    async fn verify_with_jwks(&self, jwt: UnverifiedJwt, now: u64) -> Result<VerifiedJwt> {
        let jwks_uri = self.metadata.jwks_uri.as_ref().ok_or_else(|| {
            Error::new(
                ErrorCode::DiscoveryInvalid,
                "the provider issues id_tokens but names no jwks_uri",
            )
        })?;
        let (mut jwks, cached_at) = self.jwks(jwks_uri.as_str(), false, now).await?;
        let key = match (jwks.select(jwt.header()), cached_at) {
            // An unknown kid: the provider may have rotated. Refetch once, and only a set at
            // least a minute old (C10), so that a stream of tokens naming made-up keys cannot
            // become a stream of requests to the provider. Within the minute the token is
            // refused, but not judged: a refresh that meets it fails and can be retried.
            (Err(error), Some(cached_at)) if error.code() == &ErrorCode::JwkNotFound => {
                if now < cached_at + JWKS_REFETCH_SECS {
                    return Err(Error::new(
                        ErrorCode::JwkNotYetKnown,
                        "the token names a key the provider's JWKS, fetched under a minute \
                         ago, does not hold; it is fetched again at most once a minute",
                    ));
                }
                jwks = self.jwks(jwks_uri.as_str(), true, now).await?.0;
                jwks.select(jwt.header())?
            }
            (selected, _) => selected?,
        };
        let valid = webcrypto::verify(
            &key.public_json(),
            jwt.header().alg(),
            jwt.signing_input(),
            jwt.signature(),
        )
        .await?;
        jwt.into_verified(valid)
    }

    /// The JWKS at `uri`, and when it was fetched if it comes from the cache.
    async fn jwks(&self, uri: &str, refresh: bool, now: u64) -> Result<(JwkSet, Option<u64>)> {
        if !refresh {
            if let Some((jwks, fetched_at)) = cached(&JWKS, uri, now) {
                return Ok((jwks, Some(fetched_at)));
            }
        }
        let answer = self
            .send(
                &HttpRequest::get_json(uri),
                "JWKS endpoint",
                ErrorCode::ProviderUnreachable,
            )
            .await?;
        if answer.status != 200 {
            return Err(Error::new(
                ErrorCode::JwkInvalid,
                format!("the JWKS endpoint answered HTTP {}", answer.status),
            ));
        }
        let jwks = JwkSet::parse(&answer.body)?;
        remember(&JWKS, uri, now, &jwks);
        Ok((jwks, None))
    }

    async fn sign(&self, env: &Env, input: JwsSigningInput) -> Result<String> {
        let jwk = config::private_jwk(env, self.config)?;
        let jwk: serde_json::Value =
            serde_json::from_slice(jwk.secret().as_bytes()).map_err(|_| {
                Error::new(
                    ErrorCode::InvalidConfiguration,
                    format!("{} is not a JSON JWK", self.config.private_jwk_name()),
                )
            })?;
        let signature = webcrypto::sign(&jwk, input.alg(), input.as_bytes()).await?;
        Ok(input.assemble(&signature))
    }
}

async fn discover(config: &ProviderConfig, timeout_ms: u32, now: u64) -> Result<ProviderMetadata> {
    let issuer = config.issuer();
    if let Some((metadata, _)) = cached(&METADATA, issuer.as_str(), now) {
        return Ok(metadata);
    }
    let request = HttpRequest::get_json(issuer.openid_configuration_url());
    let answer = outbound::exchange(
        &request,
        "discovery endpoint",
        ErrorCode::ProviderUnreachable,
        timeout_ms,
    )
    .await?;
    let metadata = process_discovery_response(issuer, answer.status, &answer.body)?;
    remember(&METADATA, issuer.as_str(), now, &metadata);
    Ok(metadata)
}

type Cache<T> = &'static std::thread::LocalKey<RefCell<HashMap<String, (u64, T)>>>;

fn remember<T: Clone + 'static>(cache: Cache<T>, key: &str, now: u64, value: &T) {
    cache.with(|cache| {
        cache
            .borrow_mut()
            .insert(key.to_owned(), (now, value.clone()))
    });
}

/// A cached value while it is fresh, and when it was fetched.
fn cached<T: Clone + 'static>(cache: Cache<T>, key: &str, now: u64) -> Option<(T, u64)> {
    cache.with(|cache| {
        cache
            .borrow()
            .get(key)
            .filter(|(fetched_at, _)| now < fetched_at + CACHE_SECS)
            .map(|(fetched_at, value)| (value.clone(), *fetched_at))
    })
}
