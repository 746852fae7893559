//! Token requests ([RFC 6749 §4.1.3](https://www.rfc-editor.org/rfc/rfc6749#section-4.1.3),
//! [§6](https://www.rfc-editor.org/rfc/rfc6749#section-6),
//! [§4.4.2](https://www.rfc-editor.org/rfc/rfc6749#section-4.4.2)) as [`HttpRequest`] values.
//! Their answers go to [`crate::token_response::process_token_response`].

use crate::authorization_response::ValidatedAuthorizationResponse;
use crate::client_auth::ClientAuthentication;
use crate::error::{Error, ErrorCode, Result};
use crate::http::HttpRequest;
use crate::pkce::PkceCodeVerifier;
use crate::scope::Scopes;
use crate::secret::RefreshToken;
use crate::url::{EndpointUrl, RedirectUrl};

/// Parameters a grant sets itself, which provider extras may not override.
const RESERVED_PARAMS: &[&str] = &[
    "grant_type",
    "code",
    "redirect_uri",
    "code_verifier",
    "refresh_token",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
];

fn check_extras(extra: &[(&str, &str)]) -> Result<()> {
    match extra
        .iter()
        .find(|(name, _)| RESERVED_PARAMS.contains(name))
    {
        Some((name, _)) => Err(Error::new(
            ErrorCode::InvalidParameter,
            format!("token request parameter {name} cannot be overridden"),
        )),
        None => Ok(()),
    }
}

/// The authorization code grant with its PKCE verifier. It takes the validated response by
/// value and the verifier by value: a code and a verifier are each used once.
/// `extra` carries provider parameters (e.g. Moneyhub's `sub`).
pub fn build_authorization_code_request(
    token_endpoint: &EndpointUrl,
    auth: &ClientAuthentication,
    response: ValidatedAuthorizationResponse,
    redirect_uri: &RedirectUrl,
    verifier: PkceCodeVerifier,
    extra: &[(&str, &str)],
) -> Result<HttpRequest> {
    AuthorizationCodeGrant::new(response, redirect_uri, verifier, extra)?
        .token_request(token_endpoint, auth)
}

/// One validated authorization response's code and the flow's verifier, to be exchanged:
/// made only from a [`ValidatedAuthorizationResponse`], and consumed with it.
///
/// A DPoP authorization server may answer the first token request with `use_dpop_nonce`
/// without spending the code ([RFC 9449 §8](https://www.rfc-editor.org/rfc/rfc9449#section-8));
/// the one retry it asks for needs a fresh client assertion (`jti` is single use), so the
/// grant builds a request per [`ClientAuthentication`].
pub struct AuthorizationCodeGrant {
    code: crate::secret::AuthorizationCode,
    verifier: PkceCodeVerifier,
    redirect_uri: RedirectUrl,
    extra: Vec<(String, String)>,
}

impl std::fmt::Debug for AuthorizationCodeGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationCodeGrant")
            .field("code", &self.code)
            .field("verifier", &self.verifier)
            .field("redirect_uri", &self.redirect_uri)
            .finish()
    }
}

impl AuthorizationCodeGrant {
    /// The grant of `response`, redeemed with `verifier` at `redirect_uri`.
    pub fn new(
        response: ValidatedAuthorizationResponse,
        redirect_uri: &RedirectUrl,
        verifier: PkceCodeVerifier,
        extra: &[(&str, &str)],
    ) -> Result<Self> {
        check_extras(extra)?;
        Ok(AuthorizationCodeGrant {
            code: response.into_code(),
            verifier,
            redirect_uri: redirect_uri.clone(),
            extra: extra
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        })
    }

    /// The code and the verifier this grant presents: what a provider's error description
    /// must not repeat ([`Error::withholding`](crate::Error::withholding)).
    pub fn secrets(&self) -> [&str; 2] {
        [self.code.secret(), self.verifier.secret()]
    }

    /// The token request, authenticated with `auth`.
    pub fn token_request(
        &self,
        token_endpoint: &EndpointUrl,
        auth: &ClientAuthentication,
    ) -> Result<HttpRequest> {
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", self.code.secret()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", self.verifier.secret()),
        ];
        params.extend(
            self.extra
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        Ok(auth.form_post(token_endpoint.as_str(), &params))
    }
}

/// The refresh token grant; `scopes` narrows the grant when given (RFC 6749 §6).
pub fn build_refresh_token_request(
    token_endpoint: &EndpointUrl,
    auth: &ClientAuthentication,
    refresh_token: &RefreshToken,
    scopes: Option<&Scopes>,
) -> HttpRequest {
    let scope = scopes.map(Scopes::to_wire);
    let mut params = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.secret()),
    ];
    if let Some(scope) = scope.as_deref().filter(|scope| !scope.is_empty()) {
        params.push(("scope", scope));
    }
    auth.form_post(token_endpoint.as_str(), &params)
}

/// The client credentials grant with `scope`, and optionally `sub` for providers that issue
/// user-scoped client tokens (Moneyhub).
pub fn build_client_credentials_request(
    token_endpoint: &EndpointUrl,
    auth: &ClientAuthentication,
    scopes: &Scopes,
    sub: Option<&str>,
) -> HttpRequest {
    let scope = scopes.to_wire();
    let mut params = vec![("grant_type", "client_credentials")];
    if !scope.is_empty() {
        params.push(("scope", &scope));
    }
    if let Some(sub) = sub {
        params.push(("sub", sub));
    }
    auth.form_post(token_endpoint.as_str(), &params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorization_response::{validate_authorization_response, AuthorizationResponse};
    use crate::client_auth::ClientId;
    use crate::encoding::form_decode;
    use crate::secret::ClientSecret;
    use crate::state::State;
    use crate::url::IssuerUrl;

    fn endpoint() -> EndpointUrl {
        EndpointUrl::parse("https://bank.example/token").expect("valid")
    }

    fn basic() -> ClientAuthentication {
        ClientAuthentication::ClientSecretBasic(ClientId::new("app"), ClientSecret::new("s"))
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn validated(code: &str) -> ValidatedAuthorizationResponse {
        let response =
            AuthorizationResponse::parse(&format!("code={code}&state=s1")).expect("parses");
        validate_authorization_response(
            response,
            &State::parse("s1").expect("valid"),
            &IssuerUrl::parse("https://bank.example").expect("valid"),
            false,
        )
        .expect("valid")
    }

    #[test]
    fn authorization_code_grant_carries_code_verifier_and_redirect() {
        let verifier = PkceCodeVerifier::parse(&"v".repeat(43)).expect("valid");
        let redirect = RedirectUrl::parse("https://consent.example/auth/callback").expect("valid");
        let request = build_authorization_code_request(
            &endpoint(),
            &basic(),
            validated("c0de"),
            &redirect,
            verifier,
            &[("sub", "user-1")],
        )
        .expect("valid");
        assert_eq!(request.method(), "POST");
        assert_eq!(request.url(), "https://bank.example/token");
        assert!(request
            .header("Authorization")
            .is_some_and(|h| h.starts_with("Basic ")));
        assert_eq!(
            form_decode(request.body()),
            pairs(&[
                ("grant_type", "authorization_code"),
                ("code", "c0de"),
                ("redirect_uri", "https://consent.example/auth/callback"),
                ("code_verifier", &"v".repeat(43)),
                ("sub", "user-1"),
            ])
        );
    }

    #[test]
    fn extras_cannot_override_grant_parameters() {
        let verifier = PkceCodeVerifier::parse(&"v".repeat(43)).expect("valid");
        let redirect = RedirectUrl::parse("https://consent.example/cb").expect("valid");
        let result = build_authorization_code_request(
            &endpoint(),
            &basic(),
            validated("c"),
            &redirect,
            verifier,
            &[("code", "other")],
        );
        assert_eq!(
            result.map(|_| ()).map_err(|e| e.code().clone()),
            Err(ErrorCode::InvalidParameter)
        );
    }

    #[test]
    fn refresh_and_client_credentials_grants() {
        let refresh =
            build_refresh_token_request(&endpoint(), &basic(), &RefreshToken::new("r1"), None);
        assert_eq!(
            form_decode(refresh.body()),
            pairs(&[("grant_type", "refresh_token"), ("refresh_token", "r1")])
        );

        let scopes = Scopes::parse("accounts:read").expect("valid");
        let narrowed = build_refresh_token_request(
            &endpoint(),
            &basic(),
            &RefreshToken::new("r1"),
            Some(&scopes),
        );
        assert!(narrowed.body().ends_with("&scope=accounts%3Aread"));

        let post =
            ClientAuthentication::ClientSecretPost(ClientId::new("app"), ClientSecret::new("s"));
        let scopes = Scopes::parse("user:create").expect("valid");
        let cc = build_client_credentials_request(&endpoint(), &post, &scopes, Some("u-9"));
        assert_eq!(
            form_decode(cc.body()),
            pairs(&[
                ("grant_type", "client_credentials"),
                ("scope", "user:create"),
                ("sub", "u-9"),
                ("client_id", "app"),
                ("client_secret", "s"),
            ])
        );
    }
}
