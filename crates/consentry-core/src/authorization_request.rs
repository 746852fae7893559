//! The authorization request: as a front-channel URL
//! ([RFC 6749 §4.1.1](https://www.rfc-editor.org/rfc/rfc6749#section-4.1.1)), as a pushed
//! authorization request ([RFC 9126](https://www.rfc-editor.org/rfc/rfc9126)), and as a
//! signed request object ([RFC 9101](https://www.rfc-editor.org/rfc/rfc9101)).

use serde_json::{Map, Value};

use crate::client_auth::{ClientAuthentication, ClientId};
use crate::encoding::base64url_encode;
use crate::error::{Error, ErrorCode, Result};
use crate::http::HttpRequest;
use crate::jws::{JwsAlgorithm, JwsSigningInput};
use crate::pkce::PkceCodeChallenge;
use crate::scope::Scopes;
use crate::state::{Nonce, State};
use crate::url::{EndpointUrl, IssuerUrl, RedirectUrl};

/// Lifetime of a request object; FAPI 2.0 allows at most 60 minutes between `nbf` and `exp`.
pub const REQUEST_OBJECT_LIFETIME_SECS: u64 = 300;

/// Parameters the request sets itself; extras may not override them.
const RESERVED_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "request",
    "request_uri",
    "dpop_jkt",
];

/// Parameters whose value is JSON, written as JSON (not a string) inside a request object.
const JSON_VALUED_PARAMS: &[&str] = &["claims", "authorization_details", "max_age"];

/// An authorization code request with PKCE S256: the parameters, in order, before they are
/// turned into a URL, a PAR body or a request object.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    client_id: ClientId,
    params: Vec<(String, String)>,
}

impl AuthorizationRequest {
    /// `response_type=code` with the client, redirect URI, scope, state and S256 challenge.
    pub fn new(
        client_id: &ClientId,
        redirect_uri: &RedirectUrl,
        scopes: &Scopes,
        state: &State,
        code_challenge: &PkceCodeChallenge,
    ) -> Self {
        let mut params = vec![
            ("response_type".to_owned(), "code".to_owned()),
            ("client_id".to_owned(), client_id.as_str().to_owned()),
            ("redirect_uri".to_owned(), redirect_uri.as_str().to_owned()),
        ];
        if !scopes.is_empty() {
            params.push(("scope".to_owned(), scopes.to_wire()));
        }
        params.extend([
            ("state".to_owned(), state.as_str().to_owned()),
            (
                "code_challenge".to_owned(),
                code_challenge.as_str().to_owned(),
            ),
            (
                "code_challenge_method".to_owned(),
                PkceCodeChallenge::METHOD.to_owned(),
            ),
        ]);
        AuthorizationRequest {
            client_id: client_id.clone(),
            params,
        }
    }

    /// Adds the OpenID Connect `nonce`.
    pub fn with_nonce(mut self, nonce: &Nonce) -> Self {
        self.params
            .push(("nonce".to_owned(), nonce.as_str().to_owned()));
        self
    }

    /// Binds the authorization code to a DPoP key: `dpop_jkt` is the key's JWK thumbprint
    /// ([RFC 9449 §10](https://www.rfc-editor.org/rfc/rfc9449#section-10)), so the code can be
    /// exchanged only with proofs signed by that key.
    pub fn with_dpop_jkt(mut self, jkt: &str) -> Self {
        self.params.push(("dpop_jkt".to_owned(), jkt.to_owned()));
        self
    }

    /// Adds a provider extra such as `prompt`, `max_age`, `claims`, `response_mode`,
    /// `providers` or `authorization_details`. A parameter the request sets itself, or one
    /// already added, is refused.
    pub fn with_param(mut self, name: &str, value: &str) -> Result<Self> {
        AuthorizationRequest::check_param(name, value)?;
        if self.param(name).is_some() {
            return Err(Error::new(
                ErrorCode::InvalidParameter,
                format!("authorization parameter {name} is already set"),
            ));
        }
        self.params.push((name.to_owned(), value.to_owned()));
        Ok(self)
    }

    /// Whether `name=value` may be added as an extra: not a parameter the request sets
    /// itself, and valid JSON where the parameter is JSON-valued (`claims`, `max_age`, ...).
    pub fn check_param(name: &str, value: &str) -> Result<()> {
        if RESERVED_PARAMS.contains(&name) {
            return Err(Error::new(
                ErrorCode::InvalidParameter,
                format!(
                    "authorization parameter {name} is set by consentry and cannot be overridden"
                ),
            ));
        }
        if JSON_VALUED_PARAMS.contains(&name) && serde_json::from_slice::<Value>(value.as_bytes()).is_err() {
            return Err(Error::new(
                ErrorCode::InvalidParameter,
                format!("authorization parameter {name} must be JSON"),
            ));
        }
        Ok(())
    }

    /// The value of a parameter, if set.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
    }

    /// All parameters, in order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The front-channel authorization URL carrying every parameter in the query.
    pub fn to_url(&self, authorization_endpoint: &EndpointUrl) -> String {
        authorization_endpoint.with_query(self.params())
    }

    /// A pushed authorization request carrying every parameter in the body, with the
    /// client authenticated as at the token endpoint (RFC 9126 §2.1).
    pub fn build_par_request(
        &self,
        par_endpoint: &EndpointUrl,
        auth: &ClientAuthentication,
    ) -> HttpRequest {
        let params: Vec<(&str, &str)> = self.params().collect();
        auth.form_post(par_endpoint.as_str(), &params)
    }

    /// The signing input of a request object (RFC 9101 §4) holding every parameter, plus
    /// `iss` = client id, `aud` = the issuer, `iat`, `nbf` = `now`, `exp` five minutes later
    /// and a unique `jti`; `typ` is `oauth-authz-req+jwt`. The platform signs it.
    pub fn build_request_object(
        &self,
        issuer: &IssuerUrl,
        alg: JwsAlgorithm,
        kid: Option<&str>,
        now: u64,
        jti_random: &[u8; 16],
    ) -> Result<JwsSigningInput> {
        let alg = alg.require_asymmetric("a request object")?;
        let mut claims = Map::new();
        for (name, value) in self.params() {
            let value = match JSON_VALUED_PARAMS.contains(&name) {
                true => serde_json::from_slice(value.as_bytes()).unwrap_or_else(|_| value.into()),
                false => Value::from(value),
            };
            claims.insert(name.to_owned(), value);
        }
        claims.insert("iss".into(), self.client_id.as_str().into());
        claims.insert("aud".into(), issuer.as_str().into());
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.into());
        claims.insert("exp".into(), (now + REQUEST_OBJECT_LIFETIME_SECS).into());
        claims.insert("jti".into(), base64url_encode(jti_random).into());
        Ok(JwsSigningInput::new(
            alg,
            "oauth-authz-req+jwt",
            kid,
            Map::new(),
            &Value::Object(claims),
        ))
    }

    /// A pushed authorization request whose only authorization parameter is the signed
    /// request object (RFC 9126 §3), with the client authenticated.
    pub fn build_par_request_with_request_object(
        &self,
        par_endpoint: &EndpointUrl,
        auth: &ClientAuthentication,
        request_object: &str,
    ) -> HttpRequest {
        auth.form_post(
            par_endpoint.as_str(),
            &[
                ("client_id", self.client_id.as_str()),
                ("request", request_object),
            ],
        )
    }
}

/// A successful pushed authorization response (RFC 9126 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedAuthorizationResponse {
    request_uri: String,
    expires_in: u64,
}

impl PushedAuthorizationResponse {
    /// The `request_uri` to send on the front channel.
    pub fn request_uri(&self) -> &str {
        &self.request_uri
    }

    /// Seconds the `request_uri` stays valid.
    pub fn expires_in(&self) -> u64 {
        self.expires_in
    }

    /// The front-channel URL after a PAR: only `client_id` and `request_uri` (RFC 9126 §4).
    pub fn authorization_url(
        &self,
        authorization_endpoint: &EndpointUrl,
        client_id: &ClientId,
    ) -> String {
        authorization_endpoint.with_query([
            ("client_id", client_id.as_str()),
            ("request_uri", self.request_uri.as_str()),
        ])
    }
}

/// Processes the PAR endpoint's answer: `201` with `request_uri` and `expires_in`, or an
/// OAuth error body (kept with its RFC string), or [`ErrorCode::ParFailed`].
pub fn process_par_response(status: u16, body: &[u8]) -> Result<PushedAuthorizationResponse> {
    let json: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    if let Some(error) = json.as_ref().and_then(|object| object.get("error")) {
        let description = json
            .as_ref()
            .and_then(|object| object.get("error_description"))
            .and_then(Value::as_str);
        return Err(match error.as_str() {
            Some(error) => Error::oauth(error, description),
            None => Error::new(ErrorCode::ParFailed, "PAR error is not a string"),
        });
    }
    let failed = |why: &str| Err(Error::new(ErrorCode::ParFailed, why.to_owned()));
    if status != 201 && status != 200 {
        return failed(&format!("PAR endpoint answered HTTP {status}"));
    }
    let Some(object) = json else {
        return failed("PAR response is not a JSON object");
    };
    let request_uri = object.get("request_uri").and_then(Value::as_str);
    let expires_in = object.get("expires_in").and_then(Value::as_u64);
    match (request_uri, expires_in) {
        (Some(request_uri), Some(expires_in)) if !request_uri.is_empty() && expires_in > 0 => {
            Ok(PushedAuthorizationResponse {
                request_uri: request_uri.to_owned(),
                expires_in,
            })
        }
        _ => failed("PAR response needs a string request_uri and a positive expires_in"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{base64url_decode, form_decode};
    use crate::pkce::PkceCodeVerifier;
    use crate::secret::{ClientAssertion, ClientSecret};
    use serde_json::json;

    fn request() -> AuthorizationRequest {
        let verifier = PkceCodeVerifier::from_random_bytes(&[1; 32]);
        AuthorizationRequest::new(
            &ClientId::new("app"),
            &RedirectUrl::parse("https://consent.example/auth/callback").expect("valid"),
            &Scopes::parse("openid accounts").expect("valid"),
            &State::parse("st4te").expect("valid"),
            &verifier.challenge(),
        )
    }

    #[test]
    fn query_url_carries_every_parameter() {
        let verifier = PkceCodeVerifier::from_random_bytes(&[1; 32]);
        let url = request()
            .with_nonce(&Nonce::new("n0nce"))
            .with_param("prompt", "consent")
            .and_then(|r| r.with_param("max_age", "300"))
            .and_then(|r| r.with_param("providers", "uk-ob-all uk-oauth-all"))
            .expect("extras are fine")
            .to_url(&EndpointUrl::parse("https://bank.example/authorize").expect("valid"));
        let (base, query) = url.split_once('?').expect("has a query");
        assert_eq!(base, "https://bank.example/authorize");
        let expected = [
            ("response_type", "code"),
            ("client_id", "app"),
            ("redirect_uri", "https://consent.example/auth/callback"),
            ("scope", "openid accounts"),
            ("state", "st4te"),
            ("code_challenge", verifier.challenge().as_str()),
            ("code_challenge_method", "S256"),
            ("nonce", "n0nce"),
            ("prompt", "consent"),
            ("max_age", "300"),
            ("providers", "uk-ob-all uk-oauth-all"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()));
        assert_eq!(form_decode(query), expected);
        assert!(
            !url.contains(verifier.secret()),
            "the verifier never travels"
        );
    }

    #[test]
    fn reserved_duplicate_and_malformed_extras_are_refused() {
        for (name, value) in [
            ("state", "x"),
            ("redirect_uri", "https://evil.example"),
            ("claims", "{not json"),
        ] {
            let code = request()
                .with_param(name, value)
                .map(|_| ())
                .map_err(|e| e.code().clone());
            assert_eq!(code, Err(ErrorCode::InvalidParameter), "{name}");
        }
        let twice = request()
            .with_param("prompt", "login")
            .and_then(|r| r.with_param("prompt", "consent"));
        assert!(twice.is_err());
    }

    #[test]
    fn par_body_holds_parameters_and_client_authentication() {
        let par = EndpointUrl::parse("https://bank.example/par").expect("valid");
        let auth =
            ClientAuthentication::ClientSecretPost(ClientId::new("app"), ClientSecret::new("s"));
        let http = request().build_par_request(&par, &auth);
        assert_eq!(http.url(), "https://bank.example/par");
        let params = form_decode(http.body());
        assert_eq!(
            params
                .iter()
                .filter(|(name, _)| name == "client_id")
                .count(),
            1
        );
        assert!(params.contains(&("code_challenge_method".into(), "S256".into())));
        assert!(params.contains(&("client_secret".into(), "s".into())));

        let jwt_auth = ClientAuthentication::PrivateKeyJwt(
            ClientId::new("app"),
            ClientAssertion::new("a.b.c"),
        );
        let jar = request().build_par_request_with_request_object(&par, &jwt_auth, "h.p.s");
        let names: Vec<String> = form_decode(jar.body())
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            names,
            [
                "client_id",
                "request",
                "client_assertion_type",
                "client_assertion"
            ]
        );
    }

    #[test]
    fn request_object_claims_follow_rfc9101_and_fapi() {
        let issuer = IssuerUrl::parse("https://bank.example").expect("valid");
        let input = request()
            .with_param("claims", r#"{"id_token":{"sub":{"value":"u1"}}}"#)
            .and_then(|r| r.with_param("max_age", "600"))
            .expect("valid")
            .build_request_object(&issuer, JwsAlgorithm::PS256, Some("k1"), 1_000, &[5; 16])
            .expect("asymmetric");
        let text = std::str::from_utf8(input.as_bytes()).expect("ascii");
        let (header, claims) = text.split_once('.').expect("two segments");
        let header: Value =
            serde_json::from_slice(&base64url_decode(header).expect("b64")).expect("json");
        assert_eq!(header["typ"], "oauth-authz-req+jwt");
        let claims: Value =
            serde_json::from_slice(&base64url_decode(claims).expect("b64")).expect("json");
        assert_eq!(claims["iss"], "app");
        assert_eq!(claims["aud"], "https://bank.example");
        assert_eq!(claims["client_id"], "app");
        assert_eq!(claims["state"], "st4te");
        assert_eq!(claims["nbf"], 1_000);
        assert_eq!(claims["exp"], 1_300);
        assert_eq!(claims["max_age"], 600);
        assert_eq!(
            claims["claims"],
            json!({"id_token": {"sub": {"value": "u1"}}})
        );
    }

    #[test]
    fn par_response_success_and_failures() {
        let ok = process_par_response(
            201,
            br#"{"request_uri":"urn:ietf:params:oauth:request_uri:6esc_11ACC5bwc014ltc14eY22c","expires_in":60}"#,
        )
        .expect("valid");
        assert_eq!(ok.expires_in(), 60);
        let url = ok.authorization_url(
            &EndpointUrl::parse("https://bank.example/authorize").expect("valid"),
            &ClientId::new("app"),
        );
        assert_eq!(
            url,
            "https://bank.example/authorize?client_id=app&request_uri=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3A6esc_11ACC5bwc014ltc14eY22c"
        );

        let denied = process_par_response(
            400,
            br#"{"error":"invalid_request_object","error_description":"bad sig"}"#,
        )
        .expect_err("error body");
        assert_eq!(denied.code().as_str(), "invalid_request_object");
        assert_eq!(denied.description(), "bad sig");
        for (status, body) in [
            (500, &b"<html>oops</html>"[..]),
            (201, b"{}"),
            (201, br#"{"request_uri":"x","expires_in":"60"}"#),
            (302, b""),
        ] {
            let code = process_par_response(status, body).map_err(|e| e.code().clone());
            assert_eq!(code, Err(ErrorCode::ParFailed), "{status}");
        }
    }
}
