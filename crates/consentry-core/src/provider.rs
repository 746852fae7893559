//! Provider configuration (`CONSENTRY_PROVIDERS`) and the profiles that decide how each kind
//! of provider is spoken to: generic OIDC / OAuth 2, TrueLayer, Connect, Moneyhub, FAPI 2.0.
//!
//! A profile turns into concrete choices once, here: whether the request is pushed (PAR),
//! whether it is a signed request object, how the client authenticates, which id_token
//! algorithms are trusted, whether `iss` is required and whether tokens are DPoP-bound.
//! A configuration that would weaken what a profile demands is refused, not corrected.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::authorization_request::AuthorizationRequest;
use crate::client_auth::{ClientAuthMethod, ClientId};
use crate::cookie::SameSite;
use crate::discovery::ProviderMetadata;
use crate::error::{Error, ErrorCode, Result};
use crate::jws::JwsAlgorithm;
use crate::pkce::PkceCodeChallenge;
use crate::scope::Scopes;
use crate::state::{Nonce, State};
use crate::start::is_provider_id;
use crate::url::{EndpointUrl, IssuerUrl, RedirectUrl, WebOrigin};

/// Where each provider's redirect URI lives under the Worker's public origin: one path per
/// provider, `/auth/callback/{provider id}` (DESIGN.md, wire contract). A response that comes
/// back on one provider's URI can only end a flow started with that provider, which is what
/// defeats the mix-up attack ([RFC 9700 §4.4.2](https://www.rfc-editor.org/rfc/rfc9700#section-4.4.2))
/// even with a provider that sends no `iss`.
pub const CALLBACK_PATH_PREFIX: &str = "/auth/callback/";

/// The provider id a callback path names (`/auth/callback/{id}`), when it is a well-formed
/// id; `None` for any other path.
pub fn callback_provider_id(path: &str) -> Option<&str> {
    path.strip_prefix(CALLBACK_PATH_PREFIX)
        .filter(|id| is_provider_id(id))
}

/// The kind of provider, which fixes the protocol choices (DESIGN.md, "Providers").
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A standard OpenID Connect or OAuth 2 provider: query request, PKCE, discovery.
    Generic,
    /// TrueLayer: auth link with `providers`, `client_secret_post`, no id_token.
    TrueLayer,
    /// A Fewlines-style Connect provider: query request, JWT access tokens.
    Connect,
    /// Moneyhub: PAR with a request object, `claims`, `prompt=consent`.
    Moneyhub,
    /// FAPI 2.0 Security Profile: PAR only, JAR, `private_key_jwt`, `iss`, DPoP.
    Fapi2,
}

impl Profile {
    fn parse(profile: &str) -> Result<Self> {
        match profile {
            "generic" | "oidc" | "oauth2" => Ok(Profile::Generic),
            "truelayer" => Ok(Profile::TrueLayer),
            "connect" => Ok(Profile::Connect),
            "moneyhub" => Ok(Profile::Moneyhub),
            "fapi2" => Ok(Profile::Fapi2),
            _ => Err(config_error(
                "profile must be generic, truelayer, connect, moneyhub or fapi2",
            )),
        }
    }

    /// The profile's name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Generic => "generic",
            Profile::TrueLayer => "truelayer",
            Profile::Connect => "connect",
            Profile::Moneyhub => "moneyhub",
            Profile::Fapi2 => "fapi2",
        }
    }

    fn default_auth_method(self) -> ClientAuthMethod {
        match self {
            Profile::TrueLayer | Profile::Connect => ClientAuthMethod::ClientSecretPost,
            Profile::Moneyhub | Profile::Fapi2 => ClientAuthMethod::PrivateKeyJwt,
            Profile::Generic => ClientAuthMethod::ClientSecretBasic,
        }
    }
}

fn config_error(why: &str) -> Error {
    Error::new(ErrorCode::InvalidConfiguration, why.to_owned())
}

/// One entry of `CONSENTRY_PROVIDERS` as written by the operator.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    id: String,
    profile: String,
    issuer: String,
    client_id: String,
    #[serde(default)]
    auth_method: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    pushed_authorization_request_endpoint: Option<String>,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    #[serde(default)]
    par: Option<bool>,
    #[serde(default)]
    request_object: Option<bool>,
    #[serde(default)]
    dpop: Option<bool>,
    #[serde(default)]
    require_iss: Option<bool>,
    #[serde(default)]
    signing_alg: Option<String>,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    id_token_signing_algs: Option<Vec<String>>,
    #[serde(default)]
    authorization_params: Map<String, Value>,
    #[serde(default)]
    authorization_details: Option<Value>,
    #[serde(default)]
    api_base_url: Option<String>,
    #[serde(default)]
    api_paths: Vec<String>,
    #[serde(default)]
    api_methods: Option<Vec<String>>,
    #[serde(default)]
    consent_days: Option<u64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    users_endpoint: Option<String>,
    #[serde(default)]
    data_scopes: Vec<String>,
    #[serde(default)]
    access_token_signing_algs: Option<Vec<String>>,
}

/// The id_token claim in which Moneyhub names the consent it recorded.
const MONEYHUB_CONSENT_ID_CLAIM: &str = "mh:con_id";

/// The id_token claim in which Moneyhub describes that consent (its `expirationDateTime`).
const MONEYHUB_CONSENT_CLAIM: &str = "mh:consent";

/// A provider, validated: everything the Worker needs to run a flow with it.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    id: String,
    name: String,
    profile: Profile,
    issuer: IssuerUrl,
    explicit_metadata: Option<ProviderMetadata>,
    client_id: ClientId,
    auth_method: ClientAuthMethod,
    scopes: Scopes,
    par: bool,
    request_object: bool,
    dpop: bool,
    require_iss: Option<bool>,
    signing_alg: JwsAlgorithm,
    key_id: Option<String>,
    id_token_signing_algs: Vec<JwsAlgorithm>,
    authorization_params: Vec<(String, String)>,
    authorization_details: Option<Value>,
    api_base_url: Option<EndpointUrl>,
    api_paths: Vec<Vec<String>>,
    api_methods: Vec<&'static str>,
    consent_days: Option<u64>,
    users_endpoint: Option<EndpointUrl>,
    data_scopes: Scopes,
    access_token_signing_algs: Vec<JwsAlgorithm>,
}

impl ProviderConfig {
    /// Parses `CONSENTRY_PROVIDERS`: a JSON array of providers with unique ids.
    pub fn parse_list(json: &str) -> Result<Vec<ProviderConfig>> {
        let entries: Vec<ProviderEntry> = serde_json::from_slice(json.as_bytes()).map_err(|error| {
            config_error(&format!(
                "CONSENTRY_PROVIDERS is not a valid provider list (line {}, column {}): {}",
                error.line(),
                error.column(),
                match error.classify() {
                    serde_json::error::Category::Data =>
                        "a field is missing, unknown or of the wrong type",
                    _ => "malformed JSON",
                }
            ))
        })?;
        let mut providers: Vec<ProviderConfig> = Vec::with_capacity(entries.len());
        for entry in entries {
            let provider = ProviderConfig::from_entry(entry)?;
            if providers.iter().any(|known| known.id == provider.id) {
                return Err(config_error(&format!(
                    "provider id {} is used twice",
                    provider.id
                )));
            }
            providers.push(provider);
        }
        Ok(providers)
    }

    fn from_entry(entry: ProviderEntry) -> Result<Self> {
        if !is_provider_id(&entry.id) {
            return Err(config_error(
                "provider id must be 1-32 characters of a-z 0-9 -",
            ));
        }
        let profile = Profile::parse(&entry.profile)?;
        let issuer = IssuerUrl::parse(&entry.issuer)?;
        let auth_method = match &entry.auth_method {
            Some(method) => ClientAuthMethod::parse(method)?,
            None => profile.default_auth_method(),
        };
        let strict = matches!(profile, Profile::Fapi2);
        let pushed = matches!(profile, Profile::Fapi2 | Profile::Moneyhub);
        let par = entry.par.unwrap_or(pushed);
        let request_object = entry.request_object.unwrap_or(pushed);
        let dpop = entry.dpop.unwrap_or(strict);
        if strict
            && !(par && request_object && dpop && auth_method == ClientAuthMethod::PrivateKeyJwt)
        {
            return Err(config_error(
                "the fapi2 profile requires par, request_object, dpop and private_key_jwt",
            ));
        }
        if strict && entry.authorization_endpoint.is_some() {
            return Err(config_error(
                "the fapi2 profile reads its endpoints and promises from discovery (RFC 8414): give no explicit endpoints",
            ));
        }
        if strict && entry.require_iss == Some(false) {
            return Err(config_error("the fapi2 profile requires the iss parameter"));
        }
        if request_object && !par {
            return Err(config_error("request_object is sent by PAR: set par too"));
        }
        let signing_alg = match &entry.signing_alg {
            Some(alg) => JwsAlgorithm::parse(alg)
                .map_err(|_| config_error("signing_alg is not supported"))?,
            None => JwsAlgorithm::PS256,
        };
        let strict_algs = [
            JwsAlgorithm::PS256,
            JwsAlgorithm::ES256,
            JwsAlgorithm::EdDSA,
        ];
        if signing_alg == JwsAlgorithm::HS256 || (strict && !strict_algs.contains(&signing_alg)) {
            return Err(config_error(
                "signing_alg must be asymmetric (PS256, ES256 or EdDSA under fapi2)",
            ));
        }
        let id_token_signing_algs = match &entry.id_token_signing_algs {
            Some(algs) => algs
                .iter()
                .map(|alg| {
                    JwsAlgorithm::parse(alg)
                        .map_err(|_| config_error("id_token_signing_algs has an unsupported alg"))
                })
                .collect::<Result<Vec<_>>>()?,
            None if strict => vec![JwsAlgorithm::PS256, JwsAlgorithm::ES256],
            None => vec![
                JwsAlgorithm::RS256,
                JwsAlgorithm::PS256,
                JwsAlgorithm::ES256,
            ],
        };
        if id_token_signing_algs.is_empty()
            || (strict
                && id_token_signing_algs
                    .iter()
                    .any(|alg| !strict_algs.contains(alg)))
        {
            return Err(config_error(
                "id_token_signing_algs must be non-empty (PS256, ES256 or EdDSA under fapi2)",
            ));
        }
        let scopes = Scopes::from_tokens(entry.scopes.iter().map(String::as_str))
            .map_err(|_| config_error("scopes has an invalid scope token"))?;
        let explicit_metadata = explicit_metadata(&entry, &issuer)?;
        let authorization_params = entry
            .authorization_params
            .iter()
            .map(|(name, value)| match value {
                Value::String(text) => Ok((name.clone(), text.clone())),
                Value::Number(_) | Value::Bool(_) | Value::Object(_) | Value::Array(_) => {
                    Ok((name.clone(), value.to_string()))
                }
                Value::Null => Err(config_error("authorization_params values must not be null")),
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(details) = &entry.authorization_details {
            crate::authorization_details::check_configured(details)?;
            if authorization_params
                .iter()
                .any(|(name, _)| name == "authorization_details")
            {
                return Err(config_error(
                    "give authorization_details once: as its own field, not in authorization_params",
                ));
            }
        }
        if profile == Profile::Moneyhub
            && authorization_params
                .iter()
                .any(|(name, _)| name == "claims")
        {
            return Err(config_error(
                "the moneyhub profile builds claims itself (the profile's sub comes from the Worker)",
            ));
        }
        // Fail at configuration time, not at the first login, when an extra is not allowed.
        for (name, value) in &authorization_params {
            AuthorizationRequest::check_param(name, value)?;
            // The Worker enforces max_age on the id_token's auth_time, so it must be a number.
            if name == "max_age" && value.parse::<u64>().is_err() {
                return Err(config_error(
                    "authorization_params.max_age must be whole seconds",
                ));
            }
        }
        let api_base_url = entry
            .api_base_url
            .as_deref()
            .map(EndpointUrl::parse)
            .transpose()?;
        let api_paths = entry
            .api_paths
            .iter()
            .map(|path| crate::api::allow_listed_segments(path))
            .collect::<Result<Vec<_>>>()?;
        let api_methods = match &entry.api_methods {
            None => vec!["GET"],
            Some(methods) => methods
                .iter()
                .map(|method| crate::api::allow_listed_method(method))
                .collect::<Result<Vec<_>>>()?,
        };
        let extras = ProfileExtras::from_entry(&entry, profile, &issuer, &scopes)?;
        let provider = ProviderConfig {
            name: entry.name.clone().unwrap_or_else(|| entry.id.clone()),
            id: entry.id,
            profile,
            issuer,
            explicit_metadata,
            client_id: ClientId::new(entry.client_id),
            auth_method,
            scopes,
            par,
            request_object,
            dpop,
            require_iss: if strict {
                Some(true)
            } else {
                entry.require_iss
            },
            signing_alg,
            key_id: entry.key_id,
            id_token_signing_algs,
            authorization_params,
            authorization_details: entry.authorization_details.clone(),
            api_base_url,
            api_paths,
            api_methods,
            consent_days: entry.consent_days.or(match profile {
                Profile::TrueLayer => Some(90),
                _ => None,
            }),
            users_endpoint: extras.users_endpoint,
            data_scopes: extras.data_scopes,
            access_token_signing_algs: extras.access_token_signing_algs,
        };
        Ok(provider)
    }

    /// The provider's id, as used in `/auth/start` and `/api/{provider}/...`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// This provider's `redirect_uri`: `{public_origin}/auth/callback/{id}`, never derived
    /// from a request's `Host`. It is registered with the provider and sent, byte for byte,
    /// in the authorization and token requests.
    pub fn redirect_url(&self, public_origin: &WebOrigin) -> Result<RedirectUrl> {
        RedirectUrl::parse(&format!(
            "{}{CALLBACK_PATH_PREFIX}{}",
            public_origin.as_str(),
            self.id
        ))
    }

    /// Whether a flow needs the app user's profile at the provider, from the Worker's own
    /// records (Moneyhub: the `userId` its `claims` request names as `sub`). The browser
    /// never chooses it.
    pub fn needs_provider_user(&self) -> bool {
        matches!(self.profile, Profile::Moneyhub)
    }

    /// A display name (the id unless configured).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The configured issuer identifier.
    pub fn issuer(&self) -> &IssuerUrl {
        &self.issuer
    }

    /// Endpoints given in the configuration; `None` means the Worker must run discovery
    /// against [`IssuerUrl::openid_configuration_url`].
    pub fn explicit_metadata(&self) -> Option<&ProviderMetadata> {
        self.explicit_metadata.as_ref()
    }

    /// The client id at this provider.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// How the client authenticates.
    pub fn auth_method(&self) -> ClientAuthMethod {
        self.auth_method
    }

    /// The scopes requested by default; a start request may ask for a subset only.
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    /// Whether the authorization request is pushed (RFC 9126).
    pub fn uses_par(&self) -> bool {
        self.par
    }

    /// Whether the pushed request is a signed request object (RFC 9101).
    pub fn uses_request_object(&self) -> bool {
        self.request_object
    }

    /// Whether tokens are DPoP-bound (RFC 9449).
    pub fn uses_dpop(&self) -> bool {
        self.dpop
    }

    /// The algorithm of the DPoP keys the Worker makes per consent (ECDSA P-256).
    pub fn dpop_alg(&self) -> JwsAlgorithm {
        JwsAlgorithm::ES256
    }

    /// Checks what the provider's metadata must say for this profile, so that a provider
    /// that cannot hold the profile's promises is refused at the first start rather than
    /// half-used (`invalid_configuration`). Under `fapi2` (FAPI 2.0 Security Profile §5):
    /// PAR required (`require_pushed_authorization_requests`) and its endpoint named, the
    /// `iss` response parameter, DPoP with the algorithm the Worker signs proofs with, and
    /// `private_key_jwt` among the token endpoint's methods when it lists them. Any provider
    /// configured for PAR or DPoP must name the endpoint or the algorithm.
    pub fn check_metadata(&self, metadata: &ProviderMetadata) -> Result<()> {
        let refused = |why: &str| {
            Err(config_error(&format!(
                "provider {}: the authorization server's metadata {why}",
                self.id
            )))
        };
        if self.par && metadata.pushed_authorization_request_endpoint.is_none() {
            return refused("names no pushed_authorization_request_endpoint");
        }
        if self.dpop {
            let alg = self.dpop_alg().as_str();
            let algs = metadata
                .dpop_signing_alg_values_supported
                .as_deref()
                .unwrap_or_default();
            if !algs.iter().any(|known| known == alg) {
                return refused(&format!(
                    "does not list {alg} in dpop_signing_alg_values_supported"
                ));
            }
        }
        if self.profile == Profile::Fapi2 {
            if !metadata.require_pushed_authorization_requests {
                return refused("does not require pushed authorization requests (FAPI 2.0)");
            }
            if !metadata.authorization_response_iss_parameter_supported {
                return refused("does not advertise the iss response parameter (RFC 9207)");
            }
            // Absent, the list means client_secret_basic (RFC 8414 §2).
            let methods = metadata.token_endpoint_auth_methods_supported.as_deref();
            if !methods.is_some_and(|methods| methods.iter().any(|m| m == "private_key_jwt")) {
                return refused("does not accept private_key_jwt client authentication");
            }
            let pkce = metadata.code_challenge_methods_supported.as_deref();
            if !pkce.is_some_and(|methods| methods.iter().any(|m| m == "S256")) {
                return refused("does not list S256 in code_challenge_methods_supported");
            }
        }
        Ok(())
    }

    /// Whether the authorization response must carry `iss`: the configuration's word, or
    /// else what discovery advertised (RFC 9207 §3). A server that advertises `iss` always
    /// sends it, so its absence is an attack signal (§2.4).
    pub fn requires_iss(&self, metadata: &ProviderMetadata) -> bool {
        self.require_iss
            .unwrap_or(metadata.authorization_response_iss_parameter_supported)
    }

    /// The `max_age` the configured `authorization_params` ask for, if any: the id_token's
    /// `auth_time` must then be at most that old (OpenID Connect Core §3.1.2.1).
    pub fn max_age(&self) -> Option<u64> {
        self.authorization_params
            .iter()
            .find(|(name, _)| name == "max_age")
            .and_then(|(_, value)| value.parse().ok())
    }

    /// Whether the provider answers with a cross-site `POST` (`response_mode=form_post`,
    /// or `form_post.jwt`) rather than a redirect: then only a `SameSite=None` binding cookie
    /// comes back on the callback.
    pub fn callback_is_post(&self) -> bool {
        self.authorization_params
            .iter()
            .any(|(name, value)| name == "response_mode" && value.starts_with("form_post"))
    }

    /// The `SameSite` of this provider's binding cookie: `None` when its callback is a
    /// cross-site `POST`, else `Lax`, which a top-level `GET` from the provider carries.
    pub fn binding_same_site(&self) -> SameSite {
        if self.callback_is_post() {
            SameSite::None
        } else {
            SameSite::Lax
        }
    }

    /// The algorithm for client assertions, request objects and DPoP proofs.
    pub fn signing_alg(&self) -> JwsAlgorithm {
        self.signing_alg
    }

    /// The `kid` of the client's signing key, if configured.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// The id_token `alg` allow-list pinned for this provider.
    pub fn id_token_signing_algs(&self) -> &[JwsAlgorithm] {
        &self.id_token_signing_algs
    }

    /// The data API's base URL, if the Worker proxies one for this provider.
    pub fn api_base_url(&self) -> Option<&EndpointUrl> {
        self.api_base_url.as_ref()
    }

    /// Whether a data-API path, as decoded segments, may be proxied: an `api_paths` entry
    /// must be a prefix of it in whole segments (`/accounts` allows `/accounts` and
    /// everything below it, never `/accountsX`).
    pub fn allows_api_segments(&self, segments: &[String]) -> bool {
        self.api_paths
            .iter()
            .any(|allowed| segments.starts_with(allowed))
    }

    /// Whether the data API may be called with `method` (`api_methods`, default `GET`).
    pub fn allows_api_method(&self, method: &str) -> bool {
        self.api_methods.contains(&method)
    }

    /// The `authorization_details` configured for this provider, if any (their placeholders
    /// unfilled).
    pub fn authorization_details(&self) -> Option<&Value> {
        self.authorization_details.as_ref()
    }

    /// The id_token claim that carries the provider's own consent id, if its profile has
    /// one (Moneyhub: `mh:con_id`).
    pub fn consent_id_claim(&self) -> Option<&'static str> {
        match self.profile {
            Profile::Moneyhub => Some(MONEYHUB_CONSENT_ID_CLAIM),
            _ => None,
        }
    }

    /// The provider's own id of the consent a verified id_token confirms
    /// ([`consent_id_claim`](Self::consent_id_claim)). Where the profile has one it is
    /// required, 1-255 printable ASCII characters: the Worker ends the grant by it (Moneyhub
    /// deletes the connection), so a grant it cannot name is refused (`id_token_invalid`).
    pub fn consent_id_in(&self, claims: &crate::id_token::IdTokenClaims) -> Result<Option<String>> {
        let Some(name) = self.consent_id_claim() else {
            return Ok(None);
        };
        claims
            .claim(name)
            .and_then(Value::as_str)
            .filter(|id| (1..=255).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
            .map(|id| Some(id.to_owned()))
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::IdTokenInvalid,
                    format!("id_token {name} is missing or not a usable id"),
                )
            })
    }

    /// When the consent an id_token confirms ends, if the provider says so there (Moneyhub:
    /// `mh:consent.expirationDateTime`, RFC 3339); a time already past is ignored.
    pub fn consent_expiry(&self, claims: &crate::id_token::IdTokenClaims, now: u64) -> Option<u64> {
        match self.profile {
            Profile::Moneyhub => claims
                .claim(MONEYHUB_CONSENT_CLAIM)
                .and_then(|consent| consent.get("expirationDateTime"))
                .and_then(Value::as_str)
                .and_then(crate::outcome::parse_rfc3339)
                .filter(|expires_at| *expires_at > now),
            _ => None,
        }
    }

    /// How long a consent lasts, in days, when the provider's terms fix it (TrueLayer: 90).
    pub fn consent_days(&self) -> Option<u64> {
        self.consent_days
    }

    /// Whether the front channel carries a `nonce` for `scopes`: always with `openid`
    /// (OpenID Connect Core §3.1.2.1), and on every TrueLayer auth link, which takes one
    /// though no id_token comes back to hold it (PROVIDERS.md).
    pub fn sends_nonce(&self, scopes: &Scopes) -> bool {
        scopes.contains("openid") || self.profile == Profile::TrueLayer
    }

    /// Moneyhub's users API (`POST {it}` makes a profile, `DELETE
    /// {it}/{userId}/connections/{connectionId}` ends a connection): `users_endpoint`, or
    /// `/users` at the issuer's origin.
    pub fn users_endpoint(&self) -> Option<&EndpointUrl> {
        self.users_endpoint.as_ref()
    }

    /// The scopes of the tokens the data API takes, when the provider mints those apart
    /// from the consent (Moneyhub: a `client_credentials` grant with these scopes and the
    /// profile as `sub`); `None` when the consent's own access token reads the data.
    pub fn data_token_scopes(&self) -> Option<&Scopes> {
        match self.profile {
            Profile::Moneyhub => Some(&self.data_scopes),
            _ => None,
        }
    }

    /// The extra parameters of the code exchange: Moneyhub's `sub` (the profile the flow
    /// asked for), none elsewhere.
    pub fn exchange_params<'a>(
        &self,
        provider_subject: Option<&'a str>,
    ) -> Vec<(&'static str, &'a str)> {
        match (self.profile, provider_subject) {
            (Profile::Moneyhub, Some(subject)) => vec![("sub", subject)],
            _ => Vec::new(),
        }
    }

    /// Where the connection a grant reaches is read after the exchange, when the token
    /// response does not say (TrueLayer: `{api_base_url}/me`, whose `credentials_id` becomes
    /// the consent's `account`).
    pub fn account_lookup_url(&self) -> Option<String> {
        match (self.profile, &self.api_base_url) {
            (Profile::TrueLayer, Some(base)) => {
                Some(format!("{}/me", base.as_str().trim_end_matches('/')))
            }
            _ => None,
        }
    }

    /// The algorithms the provider's JWT access tokens may be signed with, when the client
    /// must verify them before trusting the grant (Connect: HS256 with the client secret by
    /// default, or RS256 / ES256 against its JWKS); empty when access tokens are opaque to
    /// the client.
    pub fn access_token_signing_algs(&self) -> &[JwsAlgorithm] {
        &self.access_token_signing_algs
    }

    /// Whether a data API's answer says the consent itself is gone, not just its token
    /// (TrueLayer: 403 `access_denied`, "reconnect"): the consent then lapses.
    pub fn answer_withdraws_consent(&self, status: u16, body: &[u8]) -> bool {
        self.profile == Profile::TrueLayer
            && status == 403
            && serde_json::from_slice::<Value>(body)
                .is_ok_and(|answer| answer["error"] == "access_denied")
    }

    /// The scopes of one flow: [`scopes_for`](Self::scopes_for) and, for Moneyhub, the bank
    /// to connect, `id:<bankId>` from the start form's `provider_hint` (in place of any
    /// configured `id:` scope). A Moneyhub flow that names no bank is refused.
    pub fn flow_scopes(
        &self,
        requested: Option<&Scopes>,
        provider_hint: Option<&str>,
    ) -> Result<Scopes> {
        let scopes = self.scopes_for(requested)?;
        if self.profile != Profile::Moneyhub {
            return Ok(scopes);
        }
        let scopes = match provider_hint.filter(|hint| !hint.is_empty()) {
            Some(bank) => {
                let bank_scope = crate::moneyhub::bank_scope(bank)?;
                Scopes::from_tokens(
                    scopes
                        .iter()
                        .filter(|scope| !scope.starts_with("id:"))
                        .chain([bank_scope.as_str()]),
                )?
            }
            None => scopes,
        };
        // Checked here, before any profile is made for a flow that could not use it.
        check_moneyhub_scopes(&scopes, provider_hint)?;
        Ok(scopes)
    }

    /// The name of the Worker secret holding this provider's client secret:
    /// `{ID}_CLIENT_SECRET`, the id upper-cased with `-` as `_`.
    pub fn client_secret_name(&self) -> String {
        format!("{}_CLIENT_SECRET", self.secret_prefix())
    }

    /// The name of the Worker secret holding this provider's private JWK: `{ID}_PRIVATE_JWK`.
    pub fn private_jwk_name(&self) -> String {
        format!("{}_PRIVATE_JWK", self.secret_prefix())
    }

    fn secret_prefix(&self) -> String {
        self.id.to_ascii_uppercase().replace('-', "_")
    }

    /// The scopes for one flow: the configured ones, or `requested` if it is a subset.
    pub fn scopes_for(&self, requested: Option<&Scopes>) -> Result<Scopes> {
        match requested {
            Some(requested) if !requested.is_empty() => {
                match requested.iter().find(|scope| !self.scopes.contains(scope)) {
                    Some(extra) => Err(Error::new(
                        ErrorCode::OAuth(crate::error::OAuthErrorCode::InvalidScope),
                        format!("scope {extra} is not configured for provider {}", self.id),
                    )),
                    None => Ok(requested.clone()),
                }
            }
            _ => Ok(self.scopes.clone()),
        }
    }

    /// Builds the authorization request for one flow, with the profile's parameters and
    /// the configured `authorization_params`. `nonce` must be given when `scopes` has
    /// `openid`. `provider_hint`, the browser's, fills the configured
    /// `authorization_details`' placeholder, or becomes `provider_id` (TrueLayer) or
    /// `login_hint` (generic, Connect, FAPI 2.0); for Moneyhub it is the bank, which
    /// [`flow_scopes`](Self::flow_scopes) has put in `scopes` as `id:<bankId>`. `provider_user` is
    /// the Worker's own record of the app user's profile at the provider: Moneyhub's
    /// `claims` request it as the id_token's `sub`, and a Moneyhub flow without it is
    /// [`ErrorCode::ProviderUserMissing`] (see [`needs_provider_user`](Self::needs_provider_user)).
    #[allow(clippy::too_many_arguments)]
    pub fn build_authorization_request(
        &self,
        redirect_uri: &RedirectUrl,
        scopes: &Scopes,
        state: &State,
        code_challenge: &PkceCodeChallenge,
        nonce: Option<&Nonce>,
        provider_hint: Option<&str>,
        provider_user: Option<&str>,
    ) -> Result<AuthorizationRequest> {
        let mut request =
            AuthorizationRequest::new(&self.client_id, redirect_uri, scopes, state, code_challenge);
        match (self.sends_nonce(scopes), nonce) {
            (true, Some(nonce)) => request = request.with_nonce(nonce),
            (true, None) => {
                return Err(Error::new(
                    ErrorCode::InvalidParameter,
                    "this request needs a nonce (openid, or a TrueLayer auth link)",
                ))
            }
            (false, _) => {}
        }
        self.apply_extras(request, scopes, provider_hint, provider_user)
    }

    fn apply_extras(
        &self,
        mut request: AuthorizationRequest,
        scopes: &Scopes,
        provider_hint: Option<&str>,
        provider_user: Option<&str>,
    ) -> Result<AuthorizationRequest> {
        for (name, value) in &self.authorization_params {
            request = request.with_param(name, value)?;
        }
        let mut hint = provider_hint.filter(|hint| !hint.is_empty());
        // The hint fills the configured details' placeholder (an OFP's dp_id: the bank), and
        // is then used up.
        if let Some(details) = &self.authorization_details {
            let filled = crate::authorization_details::fill(details, hint);
            request = request.with_param("authorization_details", &filled.to_string())?;
            if crate::authorization_details::uses_provider_hint(details) {
                hint = None;
            }
        }
        match self.profile {
            Profile::TrueLayer => {
                if let Some(hint) = hint {
                    request = request.with_param("provider_id", hint)?;
                }
            }
            Profile::Moneyhub => {
                // The hint is the bank, already in the scopes as `id:<bankId>`
                // (flow_scopes); the profile a consent is recorded against is never the
                // browser's pick: anyone could aim their connection at another's profile.
                check_moneyhub_scopes(scopes, hint)?;
                let sub = provider_user.ok_or_else(|| {
                    Error::new(
                        ErrorCode::ProviderUserMissing,
                        "this app user has no Moneyhub profile recorded yet",
                    )
                })?;
                if request.param("prompt").is_none() {
                    request = request.with_param("prompt", "consent")?;
                }
                let mut id_token = serde_json::json!({});
                id_token[MONEYHUB_CONSENT_ID_CLAIM] = serde_json::json!({"essential": true});
                id_token["sub"] = serde_json::json!({"essential": true, "value": sub});
                request = request.with_param(
                    "claims",
                    &serde_json::json!({"id_token": id_token}).to_string(),
                )?;
            }
            Profile::Generic | Profile::Connect | Profile::Fapi2 => {
                if let Some(hint) = hint {
                    request = request.with_param("login_hint", hint)?;
                }
            }
        }
        Ok(request)
    }
}

/// The options only one profile takes, checked against the profile: each is refused on any
/// other, so that a configuration never says something the Worker would silently ignore.
struct ProfileExtras {
    users_endpoint: Option<EndpointUrl>,
    data_scopes: Scopes,
    access_token_signing_algs: Vec<JwsAlgorithm>,
}

impl ProfileExtras {
    fn from_entry(
        entry: &ProviderEntry,
        profile: Profile,
        issuer: &IssuerUrl,
        scopes: &Scopes,
    ) -> Result<Self> {
        let only_for = |given: bool, wanted: Profile, field: &str| match given && profile != wanted
        {
            true => Err(config_error(&format!(
                "{field} is an option of the {} profile only",
                wanted.as_str()
            ))),
            false => Ok(()),
        };
        only_for(
            entry.users_endpoint.is_some(),
            Profile::Moneyhub,
            "users_endpoint",
        )?;
        only_for(
            !entry.data_scopes.is_empty(),
            Profile::Moneyhub,
            "data_scopes",
        )?;
        only_for(
            entry.access_token_signing_algs.is_some(),
            Profile::Connect,
            "access_token_signing_algs",
        )?;
        if profile == Profile::TrueLayer {
            // TrueLayer publishes no discovery document and issues no id_token.
            if entry.authorization_endpoint.is_none() {
                return Err(config_error(
                    "the truelayer profile has no discovery: give authorization_endpoint and token_endpoint",
                ));
            }
            if scopes.contains("openid") {
                return Err(config_error(
                    "the truelayer profile issues no id_token: openid is not one of its scopes",
                ));
            }
        }
        let data_scopes = Scopes::from_tokens(entry.data_scopes.iter().map(String::as_str))
            .map_err(|_| config_error("data_scopes has an invalid scope token"))?;
        if profile == Profile::Moneyhub && entry.api_base_url.is_some() && data_scopes.is_empty() {
            return Err(config_error(
                "the moneyhub profile reads data with client_credentials tokens: give data_scopes",
            ));
        }
        let users_endpoint = match (profile, &entry.users_endpoint) {
            (Profile::Moneyhub, Some(url)) => Some(EndpointUrl::parse(url)?),
            // The identity service's root: /users beside /oidc.
            (Profile::Moneyhub, None) => {
                Some(EndpointUrl::parse(&format!("{}/users", issuer.origin()))?)
            }
            _ => None,
        };
        let access_token_signing_algs = match (profile, &entry.access_token_signing_algs) {
            (Profile::Connect, None) => vec![JwsAlgorithm::HS256],
            (Profile::Connect, Some(algs)) if !algs.is_empty() => algs
                .iter()
                .map(|alg| {
                    JwsAlgorithm::parse(alg).map_err(|_| {
                        config_error("access_token_signing_algs has an unsupported alg")
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            (Profile::Connect, Some(_)) => {
                return Err(config_error("access_token_signing_algs must not be empty"))
            }
            _ => Vec::new(),
        };
        // The client secret or the JWKS, never either: a token could otherwise pick the key
        // it is checked with by its header.
        let symmetric = access_token_signing_algs.contains(&JwsAlgorithm::HS256);
        if symmetric && access_token_signing_algs.len() > 1 {
            return Err(config_error(
                "access_token_signing_algs is HS256 alone (the client secret) or asymmetric algorithms (the JWKS), not both",
            ));
        }
        Ok(ProfileExtras {
            users_endpoint,
            data_scopes,
            access_token_signing_algs,
        })
    }
}

/// What a Moneyhub flow's scopes must hold: `openid` (the profile is bound through the
/// id_token: no openid, no binding) and exactly one bank, `id:<bankId>`, the hint's when one
/// names it.
fn check_moneyhub_scopes(scopes: &Scopes, provider_hint: Option<&str>) -> Result<()> {
    let refused = |why: &str| Err(Error::new(ErrorCode::InvalidParameter, why.to_owned()));
    if !scopes.contains("openid") {
        return refused(
            "a moneyhub flow needs the openid scope: its profile is checked in the id_token",
        );
    }
    let mut banks = scopes.iter().filter_map(|scope| scope.strip_prefix("id:"));
    match (
        banks.next(),
        banks.next(),
        provider_hint.filter(|hint| !hint.is_empty()),
    ) {
        (Some(bank), None, Some(hint)) if bank != hint => {
            refused("a moneyhub flow's provider_hint is the bank, and must be its id: scope")
        }
        (Some(_), None, _) => Ok(()),
        _ => refused("a moneyhub flow connects exactly one bank: provider_hint names its bank id"),
    }
}

fn explicit_metadata(
    entry: &ProviderEntry,
    issuer: &IssuerUrl,
) -> Result<Option<ProviderMetadata>> {
    let (authorization, token) = match (&entry.authorization_endpoint, &entry.token_endpoint) {
        (None, None) => return Ok(None),
        (Some(authorization), Some(token)) => (authorization, token),
        _ => {
            return Err(config_error(
                "give both authorization_endpoint and token_endpoint, or neither (discovery)",
            ))
        }
    };
    let optional = |url: &Option<String>| url.as_deref().map(EndpointUrl::parse).transpose();
    let mut metadata = ProviderMetadata::new(
        issuer.clone(),
        EndpointUrl::parse(authorization)?,
        EndpointUrl::parse(token)?,
    );
    metadata.jwks_uri = optional(&entry.jwks_uri)?;
    metadata.pushed_authorization_request_endpoint =
        optional(&entry.pushed_authorization_request_endpoint)?;
    metadata.revocation_endpoint = optional(&entry.revocation_endpoint)?;
    Ok(Some(metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkce::PkceCodeVerifier;

    fn one(json: &str) -> Result<ProviderConfig> {
        ProviderConfig::parse_list(&format!("[{json}]")).map(|mut list| list.remove(0))
    }

    fn request_for(
        provider: &ProviderConfig,
        scope: &str,
        hint: Option<&str>,
    ) -> Result<AuthorizationRequest> {
        request_for_user(provider, scope, hint, None)
    }

    fn request_for_user(
        provider: &ProviderConfig,
        scope: &str,
        hint: Option<&str>,
        provider_user: Option<&str>,
    ) -> Result<AuthorizationRequest> {
        let scopes = Scopes::parse(scope).expect("valid");
        provider.build_authorization_request(
            &RedirectUrl::parse("https://consent.example/auth/callback/b").expect("valid"),
            &scopes,
            &State::parse("st").expect("valid"),
            &PkceCodeVerifier::from_random_bytes(&[2; 32]).challenge(),
            Some(&Nonce::new("n")),
            hint,
            provider_user,
        )
    }

    #[test]
    fn generic_provider_uses_discovery_and_defaults() {
        let provider = one(r#"{"id":"local-bank","profile":"generic","issuer":"http://localhost:9000","client_id":"app","scopes":["openid","accounts","offline_access"]}"#)
            .expect("valid");
        assert_eq!(provider.auth_method(), ClientAuthMethod::ClientSecretBasic);
        assert!(provider.explicit_metadata().is_none());
        assert!(!provider.uses_par() && !provider.uses_dpop());
        assert_eq!(provider.client_secret_name(), "LOCAL_BANK_CLIENT_SECRET");
        assert_eq!(provider.private_jwk_name(), "LOCAL_BANK_PRIVATE_JWK");
        let request =
            request_for(&provider, "openid accounts", Some("alice@example.com")).expect("valid");
        assert_eq!(request.param("nonce"), Some("n"));
        assert_eq!(request.param("login_hint"), Some("alice@example.com"));
    }

    #[test]
    fn truelayer_moneyhub_and_fapi2_profiles() {
        let truelayer = one(r#"{"id":"truelayer","profile":"truelayer","issuer":"https://auth.truelayer-sandbox.com","client_id":"sandbox-app","scopes":["info","accounts","offline_access"],
            "authorization_endpoint":"https://auth.truelayer-sandbox.com/","token_endpoint":"https://auth.truelayer-sandbox.com/connect/token",
            "authorization_params":{"providers":"uk-ob-all uk-oauth-all","response_mode":"form_post"}}"#).expect("valid");
        assert_eq!(truelayer.auth_method(), ClientAuthMethod::ClientSecretPost);
        assert_eq!(truelayer.consent_days(), Some(90));
        let request = request_for(&truelayer, "info accounts", Some("ob-monzo")).expect("valid");
        assert_eq!(request.param("providers"), Some("uk-ob-all uk-oauth-all"));
        assert_eq!(request.param("provider_id"), Some("ob-monzo"));
        assert_eq!(request.param("response_mode"), Some("form_post"));
        assert_eq!(truelayer.binding_same_site(), SameSite::None);

        assert!(
            truelayer.sends_nonce(&Scopes::parse("info").expect("valid")),
            "every auth link has a nonce"
        );
        assert_eq!(request.param("nonce"), Some("n"));
        assert_eq!(
            truelayer.account_lookup_url(),
            None,
            "no api_base_url, no lookup"
        );
        let with_api = one(r#"{"id":"truelayer","profile":"truelayer","issuer":"https://auth.truelayer-sandbox.com","client_id":"sandbox-app","scopes":["info"],
            "authorization_endpoint":"https://auth.truelayer-sandbox.com/","token_endpoint":"https://auth.truelayer-sandbox.com/connect/token",
            "api_base_url":"https://api.truelayer-sandbox.com/data/v1/"}"#).expect("valid");
        assert_eq!(
            with_api.account_lookup_url().as_deref(),
            Some("https://api.truelayer-sandbox.com/data/v1/me")
        );
        assert!(with_api.answer_withdraws_consent(
            403,
            br#"{"error":"access_denied","error_description":"gone"}"#
        ));
        assert!(!with_api.answer_withdraws_consent(403, br#"{"error":"insufficient_scope"}"#));
        assert!(!with_api.answer_withdraws_consent(401, br#"{"error":"access_denied"}"#));

        let moneyhub = one(r#"{"id":"moneyhub","profile":"moneyhub","issuer":"https://identity.moneyhub.co.uk/oidc","client_id":"mh","scopes":["openid"],
            "api_base_url":"https://api.moneyhub.co.uk/v3","data_scopes":["accounts:read","transactions:read:all"]}"#).expect("valid");
        assert!(moneyhub.uses_par() && moneyhub.uses_request_object());
        assert!(moneyhub.needs_provider_user());
        assert_eq!(
            moneyhub.users_endpoint().map(EndpointUrl::as_str),
            Some("https://identity.moneyhub.co.uk/users"),
            "beside /oidc on the identity host"
        );
        assert_eq!(
            moneyhub.data_token_scopes().map(Scopes::to_wire).as_deref(),
            Some("accounts:read transactions:read:all")
        );
        assert_eq!(
            moneyhub.exchange_params(Some("mh-user-1")),
            [("sub", "mh-user-1")]
        );
        let scopes = moneyhub.flow_scopes(None, Some("harbour")).expect("a bank");
        assert_eq!(scopes.to_wire(), "openid id:harbour");
        let request = request_for_user(
            &moneyhub,
            &scopes.to_wire(),
            Some("harbour"),
            Some("mh-user-1"),
        )
        .expect("valid");
        assert_eq!(request.param("scope"), Some("openid id:harbour"));
        assert_eq!(request.param("prompt"), Some("consent"));
        assert_eq!(request.param("login_hint"), None);
        let claims: Value =
            serde_json::from_str(request.param("claims").expect("claims")).expect("json");
        assert_eq!(claims["id_token"]["sub"]["value"], "mh-user-1");
        assert_eq!(claims["id_token"]["sub"]["essential"], true);
        assert_eq!(claims["id_token"]["mh:con_id"]["essential"], true);
        assert_eq!(moneyhub.consent_id_claim(), Some("mh:con_id"));

        let fapi = one(r#"{"id":"ofp","profile":"fapi2","issuer":"https://ofp.example","client_id":"c","scopes":["openid","accounts"],"signing_alg":"ES256","key_id":"k1"}"#).expect("valid");
        assert!(fapi.uses_par() && fapi.uses_request_object() && fapi.uses_dpop());
        assert_eq!(fapi.consent_id_claim(), None);
        assert_eq!(fapi.binding_same_site(), SameSite::Lax, "its redirect is a GET");
        assert_eq!(fapi.auth_method(), ClientAuthMethod::PrivateKeyJwt);
        assert_eq!(
            fapi.id_token_signing_algs(),
            [JwsAlgorithm::PS256, JwsAlgorithm::ES256]
        );
        let metadata = ProviderMetadata::new(
            fapi.issuer().clone(),
            EndpointUrl::parse("https://ofp.example/auth").expect("valid"),
            EndpointUrl::parse("https://ofp.example/token").expect("valid"),
        );
        assert!(
            fapi.requires_iss(&metadata),
            "fapi2 requires iss even if discovery is silent"
        );
    }

    #[test]
    fn the_browser_picks_the_moneyhub_bank_never_the_profile() {
        let moneyhub = one(r#"{"id":"moneyhub","profile":"moneyhub","issuer":"https://identity.moneyhub.co.uk/oidc","client_id":"mh","scopes":["openid","id:default-bank"]}"#).expect("valid");
        let scopes = |hint| {
            moneyhub
                .flow_scopes(None, hint)
                .map(|scopes| scopes.to_wire())
                .map_err(|error| error.code().clone())
        };
        assert_eq!(
            scopes(None),
            Ok("openid id:default-bank".into()),
            "the configured bank"
        );
        assert_eq!(
            scopes(Some("harbour")),
            Ok("openid id:harbour".into()),
            "the hint's in its place"
        );
        assert_eq!(scopes(Some("a b")), Err(ErrorCode::InvalidParameter));
        assert_eq!(scopes(Some("x\"id:y")), Err(ErrorCode::InvalidParameter));
        let without_openid = Scopes::parse("id:default-bank").expect("valid");
        assert_eq!(
            moneyhub
                .flow_scopes(Some(&without_openid), None)
                .map_err(|error| error.code().clone()),
            Err(ErrorCode::InvalidParameter),
            "refused before any profile is made"
        );
        let no_bank = one(r#"{"id":"moneyhub","profile":"moneyhub","issuer":"https://identity.moneyhub.co.uk/oidc","client_id":"mh","scopes":["openid"]}"#).expect("valid");
        assert_eq!(
            no_bank
                .flow_scopes(None, None)
                .map_err(|error| error.code().clone()),
            Err(ErrorCode::InvalidParameter),
            "a flow names its bank"
        );
        let code = |scope: &str, hint, user| {
            request_for_user(&moneyhub, scope, hint, user)
                .map(|_| ())
                .map_err(|error| error.code().clone())
        };
        assert_eq!(
            code("openid id:default-bank", None, None),
            Err(ErrorCode::ProviderUserMissing)
        );
        assert_eq!(
            code(
                "openid id:default-bank",
                Some("mh-user-of-someone-else"),
                Some("mh-user-1")
            ),
            Err(ErrorCode::InvalidParameter),
            "a hint is the bank's id, never the profile"
        );
        assert_eq!(
            code("openid id:a id:b", None, Some("mh-user-1")),
            Err(ErrorCode::InvalidParameter),
            "one bank per flow"
        );
        assert_eq!(
            code("id:default-bank", None, Some("mh-user-1")),
            Err(ErrorCode::InvalidParameter),
            "no openid, no sub binding"
        );
        // Nor can configuration swap in its own claims (and so drop the sub binding).
        let configured_claims = one(
            r#"{"id":"moneyhub","profile":"moneyhub","issuer":"https://identity.moneyhub.co.uk/oidc","client_id":"mh","authorization_params":{"claims":{"id_token":{}}}}"#,
        );
        assert_eq!(
            configured_claims
                .map(|_| ())
                .map_err(|error| error.code().clone()),
            Err(ErrorCode::InvalidConfiguration)
        );
        let generic =
            one(r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c"}"#)
                .expect("valid");
        assert!(!generic.needs_provider_user());
        assert_eq!(generic.data_token_scopes(), None);
        assert!(generic.exchange_params(Some("x")).is_empty());
        assert_eq!(
            generic
                .flow_scopes(None, Some("harbour"))
                .expect("hint ignored")
                .to_wire(),
            "",
            "a hint adds no scope elsewhere"
        );
    }

    #[test]
    fn a_moneyhub_id_token_names_its_connection_and_when_it_ends() {
        use crate::id_token::{validate_id_token_claims, IdTokenValidation};
        let moneyhub = one(r#"{"id":"moneyhub","profile":"moneyhub","issuer":"https://identity.moneyhub.co.uk/oidc","client_id":"mh","scopes":["openid","id:b"]}"#).expect("valid");
        let now = 1_790_000_000;
        let claims = |consent: Value| {
            let jwt = crate::jwt::test_support::verified_hs256(&serde_json::json!({
                "iss": "https://identity.moneyhub.co.uk/oidc", "aud": "mh", "sub": "u",
                "exp": now + 60, "iat": now, "mh:consent": consent,
            }));
            let issuer = moneyhub.issuer().clone();
            validate_id_token_claims(
                &jwt,
                &IdTokenValidation::new(&issuer, moneyhub.client_id(), now),
            )
            .expect("valid")
        };
        let ends = claims(serde_json::json!({"expirationDateTime": "2026-10-01T00:00:00Z"}));
        assert_eq!(moneyhub.consent_expiry(&ends, now), Some(1_790_812_800));
        for silent in [
            serde_json::json!({}),
            serde_json::json!({"expirationDateTime": "soon"}),
            serde_json::json!({"expirationDateTime": "2020-01-01T00:00:00Z"}),
        ] {
            assert_eq!(moneyhub.consent_expiry(&claims(silent), now), None);
        }
        let generic = one(r#"{"id":"b","profile":"generic","issuer":"https://identity.moneyhub.co.uk/oidc","client_id":"mh"}"#).expect("valid");
        assert_eq!(generic.consent_expiry(&ends, now), None);
        assert_eq!(generic.consent_id_in(&ends).expect("none asked"), None);
        // mh:con_id is required: the connection is ended by it.
        let code = |claims: &crate::id_token::IdTokenClaims| {
            moneyhub
                .consent_id_in(claims)
                .map_err(|error| error.code().clone())
        };
        assert_eq!(code(&ends), Err(ErrorCode::IdTokenInvalid), "absent");
        let with_id = |id: Value| {
            let jwt = crate::jwt::test_support::verified_hs256(&serde_json::json!({
                "iss": "https://identity.moneyhub.co.uk/oidc", "aud": "mh", "sub": "u",
                "exp": now + 60, "iat": now, "mh:con_id": id,
            }));
            let issuer = moneyhub.issuer().clone();
            validate_id_token_claims(
                &jwt,
                &IdTokenValidation::new(&issuer, moneyhub.client_id(), now),
            )
            .expect("valid")
        };
        assert_eq!(
            code(&with_id(serde_json::json!("bank:5f3c"))),
            Ok(Some("bank:5f3c".into()))
        );
        for bad in [
            serde_json::json!(""),
            serde_json::json!(7),
            serde_json::json!("a b"),
            serde_json::json!("x".repeat(256)),
        ] {
            assert_eq!(
                code(&with_id(bad.clone())),
                Err(ErrorCode::IdTokenInvalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn connect_access_tokens_are_verified_hs256_unless_configured() {
        let connect = one(r#"{"id":"connect","profile":"connect","issuer":"https://connect.example","client_id":"c"}"#).expect("valid");
        assert_eq!(connect.access_token_signing_algs(), [JwsAlgorithm::HS256]);
        assert_eq!(connect.auth_method(), ClientAuthMethod::ClientSecretPost);
        let jwks = one(r#"{"id":"connect","profile":"connect","issuer":"https://connect.example","client_id":"c","access_token_signing_algs":["RS256","ES256"]}"#).expect("valid");
        assert_eq!(
            jwks.access_token_signing_algs(),
            [JwsAlgorithm::RS256, JwsAlgorithm::ES256]
        );
        let generic =
            one(r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c"}"#)
                .expect("valid");
        assert!(
            generic.access_token_signing_algs().is_empty(),
            "opaque elsewhere"
        );
    }

    #[test]
    fn each_provider_has_its_own_redirect_uri() {
        let providers = ProviderConfig::parse_list(
            r#"[{"id":"bank-a","profile":"generic","issuer":"https://a.example","client_id":"c"},
                {"id":"bank-b","profile":"generic","issuer":"https://b.example","client_id":"c"}]"#,
        )
        .expect("valid");
        let origin = WebOrigin::parse("https://consent.example").expect("valid");
        let uris: Vec<String> = providers
            .iter()
            .map(|provider| {
                provider
                    .redirect_url(&origin)
                    .expect("valid")
                    .as_str()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            uris,
            [
                "https://consent.example/auth/callback/bank-a",
                "https://consent.example/auth/callback/bank-b"
            ]
        );
        assert_eq!(
            callback_provider_id("/auth/callback/bank-a"),
            Some("bank-a")
        );
        for not_a_callback in [
            "/auth/callback",
            "/auth/callback/",
            "/auth/callback/bank-a/x",
            "/auth/callback/Bank-A",
            "/auth/callback/bank%2Da",
            "/auth/callbackbank-a",
        ] {
            assert_eq!(
                callback_provider_id(not_a_callback),
                None,
                "{not_a_callback}"
            );
        }
    }

    #[test]
    fn fapi2_metadata_must_require_par_iss_and_our_dpop_alg() {
        let fapi = one(r#"{"id":"ofp","profile":"fapi2","issuer":"https://ofp.example","client_id":"c","key_id":"k1"}"#).expect("valid");
        let good = || {
            let mut metadata = ProviderMetadata::new(
                fapi.issuer().clone(),
                EndpointUrl::parse("https://ofp.example/auth").expect("valid"),
                EndpointUrl::parse("https://ofp.example/token").expect("valid"),
            );
            metadata.pushed_authorization_request_endpoint =
                Some(EndpointUrl::parse("https://ofp.example/par").expect("valid"));
            metadata.require_pushed_authorization_requests = true;
            metadata.authorization_response_iss_parameter_supported = true;
            metadata.dpop_signing_alg_values_supported = Some(vec!["PS256".into(), "ES256".into()]);
            metadata.token_endpoint_auth_methods_supported = Some(vec!["private_key_jwt".into()]);
            metadata.code_challenge_methods_supported = Some(vec!["S256".into()]);
            metadata
        };
        assert!(fapi.check_metadata(&good()).is_ok());
        let weakened: [fn(&mut ProviderMetadata); 7] = [
            |m| m.require_pushed_authorization_requests = false,
            |m| m.pushed_authorization_request_endpoint = None,
            |m| m.authorization_response_iss_parameter_supported = false,
            |m| m.dpop_signing_alg_values_supported = Some(vec!["PS256".into()]),
            |m| m.token_endpoint_auth_methods_supported = Some(vec!["client_secret_basic".into()]),
            |m| m.token_endpoint_auth_methods_supported = None,
            |m| m.code_challenge_methods_supported = None,
        ];
        for (i, weaken) in weakened.iter().enumerate() {
            let mut metadata = good();
            weaken(&mut metadata);
            let code = fapi.check_metadata(&metadata).map_err(|e| e.code().clone());
            assert_eq!(code, Err(ErrorCode::InvalidConfiguration), "case {i}");
        }
        let generic =
            one(r#"{"id":"b","profile":"generic","issuer":"https://ofp.example","client_id":"c"}"#)
                .expect("valid");
        let mut plain = good();
        plain.require_pushed_authorization_requests = false;
        plain.dpop_signing_alg_values_supported = None;
        assert!(
            generic.check_metadata(&plain).is_ok(),
            "nothing asked of a generic provider"
        );
    }

    #[test]
    fn authorization_details_take_the_hint_in_place_of_login_hint() {
        let fapi = one(r#"{"id":"ofp","profile":"fapi2","issuer":"https://ofp.example","client_id":"c","scopes":["openid","accounts"],
            "authorization_details":[{"type":"urn:openfinance-ml:account-access-consent:v1.2","consent":{"dp_id":"{provider_hint}","permissions":["read_accounts"]}}]}"#).expect("valid");
        let request = request_for(&fapi, "openid accounts", Some("bank-042")).expect("valid");
        let details: Value =
            serde_json::from_str(request.param("authorization_details").expect("sent"))
                .expect("json");
        assert_eq!(details[0]["consent"]["dp_id"], "bank-042");
        assert_eq!(
            request.param("login_hint"),
            None,
            "the hint went into the details"
        );
        let picker = request_for(&fapi, "openid accounts", None).expect("valid");
        let details: Value =
            serde_json::from_str(picker.param("authorization_details").expect("sent"))
                .expect("json");
        assert!(details[0]["consent"].get("dp_id").is_none());
        let twice = one(
            r#"{"id":"ofp","profile":"generic","issuer":"https://ofp.example","client_id":"c",
            "authorization_details":[{"type":"t"}],"authorization_params":{"authorization_details":[{"type":"t"}]}}"#,
        );
        assert!(twice.is_err(), "given once only");
        let jkt = request.with_dpop_jkt("thumb");
        assert_eq!(jkt.param("dpop_jkt"), Some("thumb"));
    }

    #[test]
    fn max_age_in_authorization_params_is_enforced_on_the_id_token() {
        let with = one(r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c","authorization_params":{"max_age":300}}"#).expect("valid");
        assert_eq!(with.max_age(), Some(300));
        let without =
            one(r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c"}"#)
                .expect("valid");
        assert_eq!(without.max_age(), None);
    }

    #[test]
    fn configurations_that_weaken_a_profile_are_refused() {
        for bad in [
            r#"{"id":"ofp","profile":"fapi2","issuer":"https://ofp.example","client_id":"c","auth_method":"client_secret_basic"}"#,
            r#"{"id":"ofp","profile":"fapi2","issuer":"https://ofp.example","client_id":"c","par":false}"#,
            r#"{"id":"ofp","profile":"fapi2","issuer":"https://ofp.example","client_id":"c","signing_alg":"RS256"}"#,
            r#"{"id":"ofp","profile":"fapi2","issuer":"https://ofp.example","client_id":"c","id_token_signing_algs":["RS256"]}"#,
            r#"{"id":"ofp","profile":"fapi2","issuer":"https://ofp.example","client_id":"c","require_iss":false}"#,
            r#"{"id":"ofp","profile":"fapi2","issuer":"https://ofp.example","client_id":"c","authorization_endpoint":"https://ofp.example/a","token_endpoint":"https://ofp.example/t"}"#,
            r#"{"id":"Bad_Id","profile":"generic","issuer":"https://b.example","client_id":"c"}"#,
            r#"{"id":"b","profile":"nope","issuer":"https://b.example","client_id":"c"}"#,
            r#"{"id":"b","profile":"generic","issuer":"http://b.example","client_id":"c"}"#,
            r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c","authorization_endpoint":"https://b.example/a"}"#,
            r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c","authorization_params":{"state":"fixed"}}"#,
            r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c","client_secret":"oops"}"#,
            r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c","signing_alg":"HS256"}"#,
            r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c","authorization_params":{"max_age":"soon"}}"#,
            r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c","api_paths":["/../admin"]}"#,
            r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c","data_scopes":["accounts:read"]}"#,
            r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c","users_endpoint":"https://b.example/users"}"#,
            r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c","access_token_signing_algs":["HS256"]}"#,
            r#"{"id":"c","profile":"connect","issuer":"https://c.example","client_id":"c","access_token_signing_algs":[]}"#,
            r#"{"id":"c","profile":"connect","issuer":"https://c.example","client_id":"c","access_token_signing_algs":["RS256","HS256"]}"#,
            r#"{"id":"m","profile":"moneyhub","issuer":"https://m.example/oidc","client_id":"c","api_base_url":"https://api.m.example/v3"}"#,
            r#"{"id":"t","profile":"truelayer","issuer":"https://auth.t.example","client_id":"c"}"#,
            r#"{"id":"t","profile":"truelayer","issuer":"https://auth.t.example","client_id":"c","scopes":["openid","info"],"authorization_endpoint":"https://auth.t.example/","token_endpoint":"https://auth.t.example/connect/token"}"#,
        ] {
            let code = one(bad).map(|_| ()).map_err(|e| e.code().clone());
            assert!(
                matches!(
                    code,
                    Err(ErrorCode::InvalidConfiguration
                        | ErrorCode::InvalidUrl
                        | ErrorCode::InvalidParameter)
                ),
                "{bad}: {code:?}"
            );
        }
        let twice = ProviderConfig::parse_list(
            r#"[{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c"},{"id":"b","profile":"generic","issuer":"https://c.example","client_id":"c"}]"#,
        );
        assert!(twice.is_err());
        let secret_in_error =
            ProviderConfig::parse_list(r#"[{"id":"b","client_secret":"hunter2"}]"#)
                .expect_err("unknown field");
        assert!(!secret_in_error.description().contains("hunter2"));
    }

    #[test]
    fn scopes_for_a_flow_are_a_subset_of_the_configured_ones() {
        let provider = one(r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c","scopes":["openid","accounts"]}"#).expect("valid");
        assert_eq!(
            provider.scopes_for(None).expect("default").to_wire(),
            "openid accounts"
        );
        let narrower = Scopes::parse("accounts").expect("valid");
        assert_eq!(
            provider.scopes_for(Some(&narrower)).expect("subset"),
            narrower
        );
        let wider = Scopes::parse("accounts payments").expect("valid");
        assert_eq!(
            provider
                .scopes_for(Some(&wider))
                .map_err(|e| e.code().as_str().to_owned()),
            Err("invalid_scope".to_owned())
        );
        let missing_nonce = provider.build_authorization_request(
            &RedirectUrl::parse("https://consent.example/cb").expect("valid"),
            &Scopes::parse("openid").expect("valid"),
            &State::parse("s").expect("valid"),
            &PkceCodeVerifier::from_random_bytes(&[2; 32]).challenge(),
            None,
            None,
            None,
        );
        assert!(missing_nonce.is_err());
    }

    #[test]
    fn api_paths_are_allow_listed_at_segment_boundaries() {
        let provider = one(r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c","api_base_url":"https://api.b.example/data/v1","api_paths":["/accounts","/cards/"]}"#).expect("valid");
        let segments = |path: &str| -> Vec<String> {
            path.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        assert!(provider.allows_api_segments(&segments("/accounts")));
        assert!(provider.allows_api_segments(&segments("/accounts/123/transactions")));
        assert!(provider.allows_api_segments(&segments("/cards/9")));
        assert!(!provider.allows_api_segments(&segments("/accountsx")));
        assert!(!provider.allows_api_segments(&segments("/admin")));
        assert!(!provider.allows_api_segments(&[]));
        assert!(provider.allows_api_method("GET"));
        assert!(!provider.allows_api_method("POST"));
        let writes = one(r#"{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c","api_paths":["/payments"],"api_methods":["GET","post"]}"#).expect("valid");
        assert!(writes.allows_api_method("POST"));
        for bad in [
            r#""api_methods":["CONNECT"]"#,
            r#""api_paths":["accounts"]"#,
            r#""api_paths":["/a/../b"]"#,
            r#""api_paths":["/"]"#,
        ] {
            let json = format!(
                r#"{{"id":"b","profile":"generic","issuer":"https://b.example","client_id":"c",{bad}}}"#
            );
            assert!(one(&json).is_err(), "{bad}");
        }
    }
}
