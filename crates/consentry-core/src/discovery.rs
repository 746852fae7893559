//! Authorization server metadata: [RFC 8414](https://www.rfc-editor.org/rfc/rfc8414) and
//! [OpenID Connect Discovery 1.0](https://openid.net/specs/openid-connect-discovery-1_0.html).
//!
//! The platform fetches [`IssuerUrl::openid_configuration_url`] (or
//! [`IssuerUrl::oauth_authorization_server_url`]); [`process_discovery_response`] validates
//! what came back. A provider configured with explicit endpoints skips discovery and uses
//! [`ProviderMetadata::new`].

use serde_json::{Map, Value};

use crate::error::{Error, ErrorCode, Result};
use crate::pkce::PkceCodeChallenge;
use crate::url::{EndpointUrl, IssuerUrl};

/// The metadata consentry uses from an authorization server
/// ([RFC 8414 §2](https://www.rfc-editor.org/rfc/rfc8414#section-2),
/// [OpenID Connect Discovery §3](https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderMetadata)).
///
/// Members a provider did not publish are `None` (lists, endpoints) or `false` (flags).
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct ProviderMetadata {
    /// `issuer`: the issuer identifier, identical to the configured one (RFC 8414 §3.3).
    pub issuer: IssuerUrl,
    /// `authorization_endpoint` ([RFC 6749 §3.1](https://www.rfc-editor.org/rfc/rfc6749#section-3.1)).
    pub authorization_endpoint: EndpointUrl,
    /// `token_endpoint` ([RFC 6749 §3.2](https://www.rfc-editor.org/rfc/rfc6749#section-3.2)).
    pub token_endpoint: EndpointUrl,
    /// `jwks_uri`: the server's public keys ([RFC 7517 §5](https://www.rfc-editor.org/rfc/rfc7517#section-5)).
    pub jwks_uri: Option<EndpointUrl>,
    /// `pushed_authorization_request_endpoint` ([RFC 9126 §5](https://www.rfc-editor.org/rfc/rfc9126#section-5)).
    pub pushed_authorization_request_endpoint: Option<EndpointUrl>,
    /// `revocation_endpoint` ([RFC 7009 §2](https://www.rfc-editor.org/rfc/rfc7009#section-2)).
    pub revocation_endpoint: Option<EndpointUrl>,
    /// `userinfo_endpoint` ([OpenID Connect Core §5.3](https://openid.net/specs/openid-connect-core-1_0.html#UserInfo)).
    pub userinfo_endpoint: Option<EndpointUrl>,
    /// `require_pushed_authorization_requests`: the server accepts authorization requests
    /// only through PAR ([RFC 9126 §5](https://www.rfc-editor.org/rfc/rfc9126#section-5)).
    pub require_pushed_authorization_requests: bool,
    /// `authorization_response_iss_parameter_supported`: authorization responses carry `iss`
    /// ([RFC 9207 §3](https://www.rfc-editor.org/rfc/rfc9207#section-3)).
    pub authorization_response_iss_parameter_supported: bool,
    /// `code_challenge_methods_supported` ([RFC 8414 §2](https://www.rfc-editor.org/rfc/rfc8414#section-2));
    /// when present it contains `S256`.
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// `token_endpoint_auth_methods_supported` ([RFC 8414 §2](https://www.rfc-editor.org/rfc/rfc8414#section-2)).
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// `id_token_signing_alg_values_supported`
    /// ([OpenID Connect Discovery §3](https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderMetadata)).
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
    /// `dpop_signing_alg_values_supported` ([RFC 9449 §5.1](https://www.rfc-editor.org/rfc/rfc9449#section-5.1)).
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
    /// `response_modes_supported` ([RFC 8414 §2](https://www.rfc-editor.org/rfc/rfc8414#section-2)).
    pub response_modes_supported: Option<Vec<String>>,
    /// `scopes_supported` ([RFC 8414 §2](https://www.rfc-editor.org/rfc/rfc8414#section-2)).
    pub scopes_supported: Option<Vec<String>>,
}

impl ProviderMetadata {
    /// Metadata for a provider configured with explicit endpoints instead of discovery;
    /// every optional member is absent and every flag `false`.
    pub fn new(
        issuer: IssuerUrl,
        authorization_endpoint: EndpointUrl,
        token_endpoint: EndpointUrl,
    ) -> Self {
        ProviderMetadata {
            issuer,
            authorization_endpoint,
            token_endpoint,
            jwks_uri: None,
            pushed_authorization_request_endpoint: None,
            revocation_endpoint: None,
            userinfo_endpoint: None,
            require_pushed_authorization_requests: false,
            authorization_response_iss_parameter_supported: false,
            code_challenge_methods_supported: None,
            token_endpoint_auth_methods_supported: None,
            id_token_signing_alg_values_supported: None,
            dpop_signing_alg_values_supported: None,
            response_modes_supported: None,
            scopes_supported: None,
        }
    }
}

/// Validates the response to a metadata request
/// ([RFC 8414 §3.2](https://www.rfc-editor.org/rfc/rfc8414#section-3.2),
/// [OpenID Connect Discovery §4.2](https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfigurationResponse)).
///
/// `status` must be 200 and `body` a JSON object whose `issuer` is identical to
/// `expected_issuer` ([RFC 8414 §3.3](https://www.rfc-editor.org/rfc/rfc8414#section-3.3)).
/// Endpoints must be `https` (or `http` on loopback). A member that is `null` counts as
/// absent; unknown members are ignored. Fails with [`ErrorCode::DiscoveryInvalid`], or
/// [`ErrorCode::PkceNotSupported`] when `code_challenge_methods_supported` lacks `S256`.
pub fn process_discovery_response(
    expected_issuer: &IssuerUrl,
    status: u16,
    body: &[u8],
) -> Result<ProviderMetadata> {
    if status != 200 {
        return Err(discovery_invalid(format!(
            "the metadata endpoint answered HTTP {status}, not 200"
        )));
    }
    let document = MetadataDocument::parse(body)?;
    check_issuer(expected_issuer, &document)?;
    let metadata = ProviderMetadata {
        issuer: expected_issuer.clone(),
        authorization_endpoint: document.endpoint("authorization_endpoint")?,
        token_endpoint: document.endpoint("token_endpoint")?,
        jwks_uri: document.optional_endpoint("jwks_uri")?,
        pushed_authorization_request_endpoint: document
            .optional_endpoint("pushed_authorization_request_endpoint")?,
        revocation_endpoint: document.optional_endpoint("revocation_endpoint")?,
        userinfo_endpoint: document.optional_endpoint("userinfo_endpoint")?,
        require_pushed_authorization_requests: document
            .flag("require_pushed_authorization_requests")?,
        authorization_response_iss_parameter_supported: document
            .flag("authorization_response_iss_parameter_supported")?,
        code_challenge_methods_supported: document
            .string_list("code_challenge_methods_supported")?,
        token_endpoint_auth_methods_supported: document
            .string_list("token_endpoint_auth_methods_supported")?,
        id_token_signing_alg_values_supported: document
            .string_list("id_token_signing_alg_values_supported")?,
        dpop_signing_alg_values_supported: document
            .string_list("dpop_signing_alg_values_supported")?,
        response_modes_supported: document.string_list("response_modes_supported")?,
        scopes_supported: document.string_list("scopes_supported")?,
    };
    check_pkce_s256(&metadata)?;
    Ok(metadata)
}

fn discovery_invalid(description: impl Into<String>) -> Error {
    Error::new(ErrorCode::DiscoveryInvalid, description)
}

/// The most of a provider-supplied issuer an error quotes.
const MAX_QUOTED_ISSUER_LEN: usize = 255;

fn check_issuer(expected_issuer: &IssuerUrl, document: &MetadataDocument) -> Result<()> {
    let issuer = document
        .string("issuer")?
        .ok_or_else(|| discovery_invalid("the metadata has no issuer"))?;
    if issuer == expected_issuer.as_str() {
        Ok(())
    } else {
        // The issuer is a public identifier, quoted because a trailing slash is the usual
        // culprit; capped, like every provider-supplied string in an error.
        let shown: String = issuer.chars().take(MAX_QUOTED_ISSUER_LEN).collect();
        Err(discovery_invalid(format!(
            "the metadata issuer {shown:?} is not the configured issuer {:?}",
            expected_issuer.as_str()
        )))
    }
}

fn check_pkce_s256(metadata: &ProviderMetadata) -> Result<()> {
    match &metadata.code_challenge_methods_supported {
        Some(methods) if !methods.iter().any(|m| m == PkceCodeChallenge::METHOD) => {
            Err(Error::new(
                ErrorCode::PkceNotSupported,
                "code_challenge_methods_supported does not include S256",
            ))
        }
        _ => Ok(()),
    }
}

/// The metadata JSON object, read member by member so that every error names the member
/// and never quotes the body.
struct MetadataDocument(Map<String, Value>);

impl MetadataDocument {
    fn parse(body: &[u8]) -> Result<Self> {
        match serde_json::from_slice(body) {
            Ok(Value::Object(members)) => Ok(MetadataDocument(members)),
            _ => Err(discovery_invalid(
                "the metadata response is not a JSON object",
            )),
        }
    }

    fn member(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|value| !value.is_null())
    }

    fn wrong_type(name: &str, expected: &str) -> Error {
        discovery_invalid(format!("metadata member {name} is not {expected}"))
    }

    fn string(&self, name: &str) -> Result<Option<&str>> {
        self.member(name)
            .map(|value| {
                value
                    .as_str()
                    .ok_or_else(|| Self::wrong_type(name, "a string"))
            })
            .transpose()
    }

    fn optional_endpoint(&self, name: &str) -> Result<Option<EndpointUrl>> {
        self.string(name)?
            .map(|url| {
                EndpointUrl::parse(url).map_err(|error| {
                    discovery_invalid(format!("metadata member {name}: {}", error.description()))
                })
            })
            .transpose()
    }

    fn endpoint(&self, name: &str) -> Result<EndpointUrl> {
        self.optional_endpoint(name)?
            .ok_or_else(|| discovery_invalid(format!("the metadata has no {name}")))
    }

    fn flag(&self, name: &str) -> Result<bool> {
        self.member(name).map_or(Ok(false), |value| {
            value
                .as_bool()
                .ok_or_else(|| Self::wrong_type(name, "a boolean"))
        })
    }

    fn string_list(&self, name: &str) -> Result<Option<Vec<String>>> {
        let Some(value) = self.member(name) else {
            return Ok(None);
        };
        let not_a_list = || Self::wrong_type(name, "an array of strings");
        value
            .as_array()
            .ok_or_else(not_a_list)?
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(not_a_list))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The discovery document of a local `oidc-provider` (node-oidc-provider 8.x) with PAR,
    /// DPoP, revocation and RFC 9207 `iss` enabled, as served at
    /// `http://localhost:3000/.well-known/openid-configuration`.
    const OIDC_PROVIDER_DOCUMENT: &str = r#"{
        "authorization_endpoint": "http://localhost:3000/auth",
        "claims_parameter_supported": false,
        "claims_supported": ["sub", "email", "email_verified", "sid", "auth_time", "iss"],
        "code_challenge_methods_supported": ["S256"],
        "end_session_endpoint": "http://localhost:3000/session/end",
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "issuer": "http://localhost:3000",
        "jwks_uri": "http://localhost:3000/jwks",
        "authorization_response_iss_parameter_supported": true,
        "response_modes_supported": ["form_post", "fragment", "query"],
        "response_types_supported": ["code"],
        "scopes_supported": ["openid", "offline_access", "email", "profile"],
        "subject_types_supported": ["public"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_jwt", "client_secret_post",
            "private_key_jwt", "none"
        ],
        "token_endpoint_auth_signing_alg_values_supported": [
            "HS256", "RS256", "PS256", "ES256", "EdDSA"
        ],
        "token_endpoint": "http://localhost:3000/token",
        "id_token_signing_alg_values_supported": ["PS256", "RS256", "ES256"],
        "pushed_authorization_request_endpoint": "http://localhost:3000/request",
        "request_parameter_supported": true,
        "request_object_signing_alg_values_supported": ["HS256", "RS256", "PS256", "ES256", "EdDSA"],
        "require_pushed_authorization_requests": false,
        "userinfo_endpoint": "http://localhost:3000/me",
        "userinfo_signing_alg_values_supported": ["HS256", "RS256", "PS256", "ES256", "EdDSA"],
        "dpop_signing_alg_values_supported": ["ES256", "PS256", "EdDSA"],
        "revocation_endpoint": "http://localhost:3000/token/revocation",
        "introspection_endpoint": "http://localhost:3000/token/introspection",
        "claim_types_supported": ["normal"]
    }"#;

    /// The example of [RFC 8414 §3.2](https://www.rfc-editor.org/rfc/rfc8414#section-3.2).
    /// Its `service_documentation` is plain `http`: unknown members are not checked.
    const RFC8414_DOCUMENT: &str = r#"{
        "issuer": "https://server.example.com",
        "authorization_endpoint": "https://server.example.com/authorize",
        "token_endpoint": "https://server.example.com/token",
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        "userinfo_endpoint": "https://server.example.com/userinfo",
        "jwks_uri": "https://server.example.com/jwks.json",
        "registration_endpoint": "https://server.example.com/register",
        "scopes_supported": ["openid", "profile", "email", "address", "phone", "offline_access"],
        "response_types_supported": ["code", "code token"],
        "service_documentation": "http://server.example.com/service_documentation.html",
        "ui_locales_supported": ["en-US", "en-GB", "en-CA", "fr-FR", "fr-CA"]
    }"#;

    fn issuer(issuer: &str) -> IssuerUrl {
        IssuerUrl::parse(issuer).expect("valid issuer")
    }

    fn rfc8414_with(name: &str, value: Value) -> Vec<u8> {
        let mut document: Map<String, Value> =
            serde_json::from_str(RFC8414_DOCUMENT).expect("fixture is JSON");
        document.insert(name.to_owned(), value);
        Value::Object(document).to_string().into_bytes()
    }

    fn error_code(result: Result<ProviderMetadata>) -> ErrorCode {
        result.expect_err("must be rejected").code().clone()
    }

    #[test]
    fn oidc_provider_document_is_accepted() {
        let expected = issuer("http://localhost:3000");
        let metadata =
            process_discovery_response(&expected, 200, OIDC_PROVIDER_DOCUMENT.as_bytes())
                .expect("valid metadata");
        assert_eq!(metadata.issuer, expected);
        assert_eq!(
            metadata.authorization_endpoint.as_str(),
            "http://localhost:3000/auth"
        );
        assert_eq!(
            metadata.token_endpoint.as_str(),
            "http://localhost:3000/token"
        );
        assert_eq!(
            metadata
                .pushed_authorization_request_endpoint
                .as_ref()
                .map(EndpointUrl::as_str),
            Some("http://localhost:3000/request")
        );
        assert_eq!(
            metadata
                .revocation_endpoint
                .as_ref()
                .map(EndpointUrl::as_str),
            Some("http://localhost:3000/token/revocation")
        );
        assert!(metadata.jwks_uri.is_some());
        assert!(metadata.userinfo_endpoint.is_some());
        assert!(metadata.authorization_response_iss_parameter_supported);
        assert!(!metadata.require_pushed_authorization_requests);
        assert_eq!(
            metadata.dpop_signing_alg_values_supported,
            Some(vec!["ES256".into(), "PS256".into(), "EdDSA".into()])
        );
        assert_eq!(
            metadata.code_challenge_methods_supported,
            Some(vec!["S256".to_owned()])
        );
    }

    #[test]
    fn rfc8414_document_is_accepted_without_pkce_or_iss_metadata() {
        let metadata = process_discovery_response(
            &issuer("https://server.example.com"),
            200,
            RFC8414_DOCUMENT.as_bytes(),
        )
        .expect("valid metadata");
        assert_eq!(
            metadata.token_endpoint.as_str(),
            "https://server.example.com/token"
        );
        assert_eq!(metadata.code_challenge_methods_supported, None);
        assert_eq!(metadata.pushed_authorization_request_endpoint, None);
        assert!(!metadata.authorization_response_iss_parameter_supported);
        assert_eq!(
            metadata.token_endpoint_auth_methods_supported,
            Some(vec!["client_secret_basic".into(), "private_key_jwt".into()])
        );
    }

    #[test]
    fn issuer_must_match_exactly() {
        let result = process_discovery_response(
            &issuer("https://server.example.com/"),
            200,
            RFC8414_DOCUMENT.as_bytes(),
        );
        let error = result.expect_err("trailing slash differs");
        assert_eq!(error.code(), &ErrorCode::DiscoveryInvalid);
        assert!(error
            .description()
            .contains("\"https://server.example.com\""));
        assert!(error
            .description()
            .contains("\"https://server.example.com/\""));
    }

    #[test]
    fn missing_token_endpoint_is_rejected() {
        let mut document: Map<String, Value> =
            serde_json::from_str(RFC8414_DOCUMENT).expect("fixture is JSON");
        document.remove("token_endpoint");
        let body = Value::Object(document).to_string();
        let error =
            process_discovery_response(&issuer("https://server.example.com"), 200, body.as_bytes())
                .expect_err("token_endpoint is required");
        assert_eq!(error.code(), &ErrorCode::DiscoveryInvalid);
        assert!(error.description().contains("token_endpoint"));
    }

    #[test]
    fn non_200_non_json_and_non_object_bodies_are_rejected() {
        let expected = issuer("https://server.example.com");
        let secret_page = b"<html>internal error: db password hunter2</html>";
        for (status, body) in [
            (404, RFC8414_DOCUMENT.as_bytes()),
            (500, secret_page.as_slice()),
            (200, secret_page.as_slice()),
            (
                200,
                br#"[{"issuer": "https://server.example.com"}]"#.as_slice(),
            ),
            (200, b"".as_slice()),
        ] {
            let error =
                process_discovery_response(&expected, status, body).expect_err("must be rejected");
            assert_eq!(error.code(), &ErrorCode::DiscoveryInvalid);
            assert!(!error.description().contains("hunter2"));
        }
    }

    #[test]
    fn pkce_without_s256_is_rejected() {
        let expected = issuer("https://server.example.com");
        let plain_only = rfc8414_with(
            "code_challenge_methods_supported",
            serde_json::json!(["plain"]),
        );
        assert_eq!(
            error_code(process_discovery_response(&expected, 200, &plain_only)),
            ErrorCode::PkceNotSupported
        );
    }

    #[test]
    fn http_endpoint_off_loopback_is_rejected() {
        let body = rfc8414_with("token_endpoint", "http://server.example.com/token".into());
        let result = process_discovery_response(&issuer("https://server.example.com"), 200, &body);
        assert_eq!(error_code(result), ErrorCode::DiscoveryInvalid);
    }

    #[test]
    fn wrong_json_types_are_rejected() {
        let expected = issuer("https://server.example.com");
        for (name, value) in [
            ("issuer", serde_json::json!(42)),
            (
                "jwks_uri",
                serde_json::json!(["https://server.example.com/jwks"]),
            ),
            (
                "require_pushed_authorization_requests",
                serde_json::json!("true"),
            ),
            ("scopes_supported", serde_json::json!("openid profile")),
            (
                "code_challenge_methods_supported",
                serde_json::json!(["S256", 1]),
            ),
        ] {
            let body = rfc8414_with(name, value);
            let error = process_discovery_response(&expected, 200, &body)
                .expect_err("wrong type must be rejected");
            assert_eq!(error.code(), &ErrorCode::DiscoveryInvalid, "{name}");
            assert!(error.description().contains(name), "{name}");
        }
    }

    #[test]
    fn explicit_configuration_has_no_optional_metadata() {
        let metadata = ProviderMetadata::new(
            issuer("https://bank.example"),
            EndpointUrl::parse("https://bank.example/authorize").expect("valid"),
            EndpointUrl::parse("https://bank.example/token").expect("valid"),
        );
        assert!(!metadata.authorization_response_iss_parameter_supported);
        assert!(!metadata.require_pushed_authorization_requests);
        assert_eq!(metadata.scopes_supported, None);
    }
}
