//! The Worker's configuration (DESIGN.md, configuration contract), read from `Env` per
//! request and checked by the core. Secrets are read here and nowhere else, each wrapped in
//! a redacting newtype on the line it is read (`worker::Secret`'s Debug prints its value).

use consentry_core::sealing::{SealingKey, SealingKeys};
use consentry_core::secret::{ClientSecret, PrivateKeyJwk, UserAssertionSecret};
use consentry_core::{AllowedOrigins, Error, ErrorCode, ProviderConfig, Result, WebOrigin};
use worker::Env;

use super::webcrypto::Sealer;

/// How long a provider has to answer, unless `CONSENTRY_HTTP_TIMEOUT_MS` says otherwise.
const DEFAULT_HTTP_TIMEOUT_MS: u32 = 10_000;

/// The validated configuration of one request.
#[derive(Clone)]
pub(crate) struct Config {
    pub public_origin: WebOrigin,
    pub allowed_origins: AllowedOrigins,
    pub providers: Vec<ProviderConfig>,
    pub demo_users: bool,
    pub http_timeout_ms: u32,
}

impl Config {
    /// Reads and checks the vars. A missing or malformed one is `invalid_configuration`.
    pub(crate) fn from_env(env: &Env) -> Result<Config> {
        let public_origin =
            WebOrigin::parse(&required_var(env, "CONSENTRY_PUBLIC_URL")?).map_err(|error| {
                config_error(&format!("CONSENTRY_PUBLIC_URL: {}", error.description()))
            })?;
        let allowed_origins =
            AllowedOrigins::parse(&required_var(env, "CONSENTRY_ALLOWED_ORIGINS")?)?;
        let providers = ProviderConfig::parse_list(&required_var(env, "CONSENTRY_PROVIDERS")?)?;
        let demo_users = var(env, "CONSENTRY_DEMO_USERS").as_deref() == Some("true");
        // Demo users let anyone act as any seeded user: only ever on a developer's machine.
        if demo_users && !public_origin.is_loopback() {
            return Err(config_error(
                "CONSENTRY_DEMO_USERS=true lets any visitor act as any demo user; it is refused \
                 unless CONSENTRY_PUBLIC_URL is a loopback origin (localhost, 127.0.0.1, [::1])",
            ));
        }
        let http_timeout_ms = match var(env, "CONSENTRY_HTTP_TIMEOUT_MS") {
            None => DEFAULT_HTTP_TIMEOUT_MS,
            Some(ms) => ms
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|ms| (100..=60_000).contains(ms))
                .ok_or_else(|| config_error("CONSENTRY_HTTP_TIMEOUT_MS must be 100 to 60000"))?,
        };
        Ok(Config {
            public_origin,
            allowed_origins,
            providers,
            demo_users,
            http_timeout_ms,
        })
    }

    /// The configured provider with this id.
    pub(crate) fn provider(&self, id: &str) -> Result<&ProviderConfig> {
        self.providers
            .iter()
            .find(|provider| provider.id() == id)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::UnknownProvider,
                    "no provider is configured with this id",
                )
            })
    }
}

/// `CONSENTRY_KEY`, the AES-GCM key for tokens and verifiers at rest, and during a rotation
/// `CONSENTRY_KEY_PREVIOUS`, which still opens what it sealed (README, "Rotating
/// CONSENTRY_KEY").
pub(crate) fn sealing_key(env: &Env) -> Result<Sealer> {
    let text = secret(env, "CONSENTRY_KEY")
        .ok_or_else(|| config_error("the secret CONSENTRY_KEY is not set"))?;
    let current = SealingKey::parse("CONSENTRY_KEY", &text)?;
    let previous = secret(env, "CONSENTRY_KEY_PREVIOUS")
        .map(|text| SealingKey::parse("CONSENTRY_KEY_PREVIOUS", &text))
        .transpose()?;
    Ok(Sealer(SealingKeys::new(current, previous)))
}

/// `{ID}_CLIENT_SECRET` for a provider.
pub(crate) fn client_secret(env: &Env, provider: &ProviderConfig) -> Result<ClientSecret> {
    let name = provider.client_secret_name();
    secret(env, &name)
        .map(ClientSecret::new)
        .ok_or_else(|| config_error(&format!("the secret {name} is not set")))
}

/// `{ID}_PRIVATE_JWK` for a provider.
pub(crate) fn private_jwk(env: &Env, provider: &ProviderConfig) -> Result<PrivateKeyJwk> {
    let name = provider.private_jwk_name();
    secret(env, &name)
        .map(PrivateKeyJwk::new)
        .ok_or_else(|| config_error(&format!("the secret {name} is not set")))
}

/// `CONSENTRY_USER_SECRET`, the HS256 key of user assertions (outside the demo).
pub(crate) fn user_secret(env: &Env) -> Result<UserAssertionSecret> {
    secret(env, "CONSENTRY_USER_SECRET")
        .map(UserAssertionSecret::new)
        .ok_or_else(|| {
            config_error("CONSENTRY_DEMO_USERS is not true and CONSENTRY_USER_SECRET is not set")
        })
}

fn secret(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .ok()
        .map(|secret| secret.to_string())
        .filter(|value| !value.is_empty())
}

fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|var| var.to_string())
}

fn required_var(env: &Env, name: &str) -> Result<String> {
    var(env, name)
        .filter(|value| !value.trim().is_empty())
        .ok_or_else(|| config_error(&format!("the var {name} is not set")))
}

fn config_error(description: &str) -> Error {
    Error::new(ErrorCode::InvalidConfiguration, description.to_owned())
}
