//! Client identification and authentication at the token, PAR and revocation endpoints
//! ([RFC 6749 §2.3](https://www.rfc-editor.org/rfc/rfc6749#section-2.3),
//! [RFC 7523 §2.2](https://www.rfc-editor.org/rfc/rfc7523#section-2.2),
//! [OpenID Connect Core §9](https://openid.net/specs/openid-connect-core-1_0.html#ClientAuthentication)).

use serde_json::{json, Map};

use crate::encoding::{base64_encode, base64url_encode, form_encode_component};
use crate::error::{Error, ErrorCode, Result};
use crate::http::HttpRequest;
use crate::jws::{JwsAlgorithm, JwsSigningInput};
use crate::secret::{ClientAssertion, ClientSecret};

/// Lifetime of a client assertion: short, as FAPI 2.0 and RFC 7523 §3 advise.
pub const CLIENT_ASSERTION_LIFETIME_SECS: u64 = 60;

/// The `client_assertion_type` of `private_key_jwt` (RFC 7523 §2.2).
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client identifier ([RFC 6749 §2.2](https://www.rfc-editor.org/rfc/rfc6749#section-2.2)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(String);

impl ClientId {
    /// Wraps a client id.
    pub fn new(client_id: impl Into<String>) -> Self {
        ClientId(client_id.into())
    }

    /// The client id string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How the client authenticates (`token_endpoint_auth_method` values,
/// [RFC 7591 §2](https://www.rfc-editor.org/rfc/rfc7591#section-2)).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT signed with the client's private key (RFC 7523).
    PrivateKeyJwt,
}

impl ClientAuthMethod {
    /// Reads a `token_endpoint_auth_method` value.
    pub fn parse(method: &str) -> Result<Self> {
        match method {
            "client_secret_basic" => Ok(ClientAuthMethod::ClientSecretBasic),
            "client_secret_post" => Ok(ClientAuthMethod::ClientSecretPost),
            "private_key_jwt" => Ok(ClientAuthMethod::PrivateKeyJwt),
            _ => Err(Error::new(
                ErrorCode::InvalidConfiguration,
                "auth_method must be client_secret_basic, client_secret_post or private_key_jwt",
            )),
        }
    }

    /// The registered name of the method.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// The client credentials for one request, ready to apply.
///
/// For `private_key_jwt`, build the assertion with [`build_client_assertion`], have the
/// platform sign it, and wrap the result in [`ClientAssertion`]: one assertion per request.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientAuthentication {
    /// `client_secret_basic`.
    ClientSecretBasic(ClientId, ClientSecret),
    /// `client_secret_post`.
    ClientSecretPost(ClientId, ClientSecret),
    /// `private_key_jwt` with a freshly signed assertion.
    PrivateKeyJwt(ClientId, ClientAssertion),
}

impl ClientAuthentication {
    /// The client id these credentials are for.
    pub fn client_id(&self) -> &ClientId {
        match self {
            ClientAuthentication::ClientSecretBasic(id, _)
            | ClientAuthentication::ClientSecretPost(id, _)
            | ClientAuthentication::PrivateKeyJwt(id, _) => id,
        }
    }

    /// The form parameters these credentials add to a request body.
    pub(crate) fn form_params(&self) -> Vec<(&'static str, &str)> {
        match self {
            ClientAuthentication::ClientSecretBasic(..) => Vec::new(),
            ClientAuthentication::ClientSecretPost(id, secret) => {
                vec![
                    ("client_id", id.as_str()),
                    ("client_secret", secret.secret()),
                ]
            }
            ClientAuthentication::PrivateKeyJwt(id, assertion) => vec![
                ("client_id", id.as_str()),
                ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
                ("client_assertion", assertion.secret()),
            ],
        }
    }

    /// The `Authorization` header these credentials need, if any: for
    /// `client_secret_basic`, id and secret are each form-encoded first (RFC 6749 §2.3.1).
    pub(crate) fn authorization_header(&self) -> Option<String> {
        match self {
            ClientAuthentication::ClientSecretBasic(id, secret) => {
                let pair = format!(
                    "{}:{}",
                    form_encode_component(id.as_str()),
                    form_encode_component(secret.secret())
                );
                Some(format!("Basic {}", base64_encode(pair.as_bytes())))
            }
            _ => None,
        }
    }

    /// A form `POST` to `url` with `params` and these credentials applied. A `client_id`
    /// already among `params` is not repeated.
    pub(crate) fn form_post(&self, url: &str, params: &[(&str, &str)]) -> HttpRequest {
        let has_client_id = params.iter().any(|(name, _)| *name == "client_id");
        let credentials = self
            .form_params()
            .into_iter()
            .filter(|(name, _)| !(has_client_id && *name == "client_id"));
        let body = crate::encoding::form_encode(params.iter().copied().chain(credentials));
        let request = HttpRequest::form_post(url, body);
        match self.authorization_header() {
            Some(header) => request.with_header("Authorization", header),
            None => request,
        }
    }
}

/// The signing input of a `private_key_jwt` client assertion (RFC 7523 §3): `iss` = `sub` =
/// the client id, `aud` = the issuer identifier as a single string (as FAPI 2.0 requires),
/// a unique `jti` from `jti_random`, `iat` = `now`, `exp` 60 seconds later.
///
/// Only asymmetric algorithms are allowed: `client_secret_jwt` is not supported.
pub fn build_client_assertion(
    client_id: &ClientId,
    issuer: &str,
    alg: JwsAlgorithm,
    kid: Option<&str>,
    now: u64,
    jti_random: &[u8; 16],
) -> Result<JwsSigningInput> {
    let alg = alg.require_asymmetric("a private_key_jwt client assertion")?;
    let claims = json!({
        "iss": client_id.as_str(),
        "sub": client_id.as_str(),
        "aud": issuer,
        "jti": base64url_encode(jti_random),
        "iat": now,
        "exp": now + CLIENT_ASSERTION_LIFETIME_SECS,
    });
    Ok(JwsSigningInput::new(alg, "JWT", kid, Map::new(), &claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{base64url_decode, form_decode};
    use serde_json::Value;

    fn decode_segment(segment: &str) -> Value {
        serde_json::from_slice(&base64url_decode(segment).expect("b64")).expect("json")
    }

    #[test]
    fn basic_form_encodes_id_and_secret_before_base64() {
        // RFC 6749 §2.3.1: "application/x-www-form-urlencoded" first, then Basic.
        let auth = ClientAuthentication::ClientSecretBasic(
            ClientId::new("bank app"),
            ClientSecret::new("p:ss/wörd+%"),
        );
        // base64("bank+app:p%3Ass%2Fw%C3%B6rd%2B%25")
        assert_eq!(
            auth.authorization_header().as_deref(),
            Some("Basic YmFuaythcHA6cCUzQXNzJTJGdyVDMyVCNnJkJTJCJTI1")
        );
        let request = auth.form_post("https://bank.example/token", &[("grant_type", "x")]);
        assert_eq!(request.body(), "grant_type=x");
    }

    #[test]
    fn post_puts_credentials_in_the_body() {
        let auth =
            ClientAuthentication::ClientSecretPost(ClientId::new("app"), ClientSecret::new("s"));
        let request = auth.form_post("https://bank.example/token", &[("grant_type", "x")]);
        assert_eq!(request.header("Authorization"), None);
        assert_eq!(
            form_decode(request.body()),
            [
                ("grant_type", "x"),
                ("client_id", "app"),
                ("client_secret", "s")
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }

    #[test]
    fn client_assertion_claims_follow_rfc7523_and_fapi() {
        let input = build_client_assertion(
            &ClientId::new("app"),
            "https://bank.example",
            JwsAlgorithm::PS256,
            Some("key-1"),
            1_700_000_000,
            &[3; 16],
        )
        .expect("asymmetric alg");
        let text = std::str::from_utf8(input.as_bytes()).expect("ascii");
        let (header, claims) = text.split_once('.').expect("two segments");
        assert_eq!(
            decode_segment(header),
            json!({"alg": "PS256", "typ": "JWT", "kid": "key-1"})
        );
        let claims = decode_segment(claims);
        assert_eq!(claims["iss"], "app");
        assert_eq!(claims["sub"], "app");
        assert_eq!(claims["aud"], "https://bank.example");
        assert_eq!(claims["iat"], 1_700_000_000u64);
        assert_eq!(claims["exp"], 1_700_000_060u64);
        assert_eq!(claims["jti"], base64url_encode(&[3; 16]));

        let other = build_client_assertion(
            &ClientId::new("app"),
            "https://bank.example",
            JwsAlgorithm::PS256,
            None,
            1_700_000_000,
            &[4; 16],
        )
        .expect("asymmetric alg");
        assert_ne!(
            other.as_bytes(),
            input.as_bytes(),
            "jti makes each assertion unique"
        );

        let assertion = ClientAssertion::new(input.assemble(&[1, 2, 3]));
        let auth = ClientAuthentication::PrivateKeyJwt(ClientId::new("app"), assertion);
        let request = auth.form_post("https://bank.example/token", &[]);
        let params = form_decode(request.body());
        assert_eq!(
            params[1],
            (
                "client_assertion_type".into(),
                JWT_BEARER_ASSERTION_TYPE.into()
            )
        );
        assert!(params[2].1.starts_with("eyJ"));
    }

    #[test]
    fn hs256_is_not_a_client_assertion_algorithm() {
        let result = build_client_assertion(
            &ClientId::new("app"),
            "https://bank.example",
            JwsAlgorithm::HS256,
            None,
            0,
            &[0; 16],
        );
        assert_eq!(
            result.map(|_| ()).map_err(|e| e.code().clone()),
            Err(ErrorCode::JwtAlgNotAllowed)
        );
    }
}
