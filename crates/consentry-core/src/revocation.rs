//! Token revocation ([RFC 7009](https://www.rfc-editor.org/rfc/rfc7009)): what the Worker
//! sends when a user withdraws a consent, and what the provider's answer means.

use crate::client_auth::ClientAuthentication;
use crate::error::{Error, ErrorCode, Result};
use crate::http::HttpRequest;
use crate::secret::{AccessToken, RefreshToken};
use crate::url::EndpointUrl;

/// The token to revoke. Revoking the refresh token ends the whole grant at most providers
/// ([RFC 7009 §2.1](https://www.rfc-editor.org/rfc/rfc7009#section-2.1)), so prefer it.
#[derive(Debug)]
#[non_exhaustive]
pub enum RevocableToken<'a> {
    /// A refresh token (`token_type_hint=refresh_token`).
    Refresh(&'a RefreshToken),
    /// An access token (`token_type_hint=access_token`).
    Access(&'a AccessToken),
}

/// The revocation request ([RFC 7009 §2.1](https://www.rfc-editor.org/rfc/rfc7009#section-2.1)):
/// a client-authenticated form `POST` of `token` and its `token_type_hint`.
pub fn build_revocation_request(
    revocation_endpoint: &EndpointUrl,
    auth: &ClientAuthentication,
    token: RevocableToken<'_>,
) -> HttpRequest {
    let (token, hint) = match token {
        RevocableToken::Refresh(token) => (token.secret(), "refresh_token"),
        RevocableToken::Access(token) => (token.secret(), "access_token"),
    };
    let params = [
        ("token", token),
        ("token_type_hint", hint),
        ("client_id", auth.client_id().as_str()),
    ];
    auth.form_post(revocation_endpoint.as_str(), &params)
}

/// Reads the revocation response
/// ([RFC 7009 §2.2](https://www.rfc-editor.org/rfc/rfc7009#section-2.2)): `200` means the
/// token is gone, including a token the provider no longer knew. An RFC error (e.g.
/// `unsupported_token_type`, §2.2.1) is kept as it is; anything else, such as a `503`, is
/// [`ErrorCode::RevocationFailed`]. The body is never quoted.
pub fn process_revocation_response(status: u16, body: &[u8]) -> Result<()> {
    if status == 200 {
        return Ok(());
    }
    let error = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("error")?.as_str().map(str::to_owned))
        .filter(|code| !code.is_empty());
    match error {
        Some(code) if status == 400 || status == 401 => Err(Error::oauth(
            &code,
            Some("the provider refused to revoke the token"),
        )),
        _ => Err(Error::new(
            ErrorCode::RevocationFailed,
            format!("the revocation endpoint answered HTTP {status}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_auth::ClientId;
    use crate::encoding::form_decode;
    use crate::secret::ClientSecret;

    fn endpoint() -> EndpointUrl {
        EndpointUrl::parse("https://bank.example/token/revocation").expect("url")
    }

    #[test]
    fn revokes_the_refresh_token_with_client_authentication() {
        let auth = ClientAuthentication::ClientSecretBasic(
            ClientId::new("app"),
            ClientSecret::new("s3cret"),
        );
        let refresh = RefreshToken::new("rt-123");
        let request =
            build_revocation_request(&endpoint(), &auth, RevocableToken::Refresh(&refresh));
        assert_eq!(request.method(), "POST");
        assert_eq!(request.url(), "https://bank.example/token/revocation");
        assert_eq!(
            request.header("Authorization"),
            Some("Basic YXBwOnMzY3JldA==")
        );
        let fields = form_decode(request.body());
        assert!(fields.contains(&("token".into(), "rt-123".into())));
        assert!(fields.contains(&("token_type_hint".into(), "refresh_token".into())));
        assert!(fields.contains(&("client_id".into(), "app".into())));
    }

    #[test]
    fn client_secret_post_does_not_repeat_the_client_id() {
        let auth = ClientAuthentication::ClientSecretPost(
            ClientId::new("app"),
            ClientSecret::new("s3cret"),
        );
        let access = AccessToken::new("at-1");
        let request = build_revocation_request(&endpoint(), &auth, RevocableToken::Access(&access));
        let fields = form_decode(request.body());
        let ids = fields
            .iter()
            .filter(|(name, _)| name == "client_id")
            .count();
        assert_eq!(ids, 1);
        assert!(fields.contains(&("token_type_hint".into(), "access_token".into())));
        assert!(fields.contains(&("client_secret".into(), "s3cret".into())));
    }

    #[test]
    fn only_200_means_revoked() {
        assert!(process_revocation_response(200, b"").is_ok());
        let unsupported =
            process_revocation_response(400, br#"{"error":"unsupported_token_type"}"#)
                .expect_err("refused");
        assert_eq!(unsupported.code().as_str(), "unsupported_token_type");
        let down = process_revocation_response(503, b"<html>down</html>").expect_err("down");
        assert_eq!(down.code(), &ErrorCode::RevocationFailed);
        assert!(!down.description().contains("html"));
        let bare = process_revocation_response(400, br#"{"error":""}"#).expect_err("bare");
        assert_eq!(bare.code(), &ErrorCode::RevocationFailed);
    }
}
