//! Processing the token endpoint's answer
//! ([RFC 6749 §5.1](https://www.rfc-editor.org/rfc/rfc6749#section-5.1),
//! [§5.2](https://www.rfc-editor.org/rfc/rfc6749#section-5.2)).
//!
//! Three kinds of failure stay apart, so the caller can tell them apart and none of them
//! ever carries the body: the server's OAuth error ([`ErrorCode::OAuth`], RFC string kept);
//! an answer that is not a token response at all, 5xx or not JSON
//! ([`ErrorCode::TokenExchangeFailed`]); and JSON that breaks the rules
//! ([`ErrorCode::InvalidTokenResponse`], [`ErrorCode::IdTokenMissing`]).

use serde_json::{Map, Value};

use crate::error::{Error, ErrorCode, Result};
use crate::scope::Scopes;
use crate::secret::{AccessToken, IdToken, RefreshToken};

/// The `token_type` of an access token, compared case-insensitively (RFC 6749 §7.1).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenType {
    /// `Bearer` ([RFC 6750](https://www.rfc-editor.org/rfc/rfc6750)).
    Bearer,
    /// `DPoP`, a sender-constrained token ([RFC 9449](https://www.rfc-editor.org/rfc/rfc9449)).
    DPoP,
    /// Any other type, lower-cased.
    Other(String),
}

impl TokenType {
    fn parse(token_type: &str) -> Self {
        match token_type.to_ascii_lowercase().as_str() {
            "bearer" => TokenType::Bearer,
            "dpop" => TokenType::DPoP,
            other => TokenType::Other(other.to_owned()),
        }
    }

    /// The scheme to use in an `Authorization` header.
    pub fn scheme(&self) -> &str {
        match self {
            TokenType::Bearer => "Bearer",
            TokenType::DPoP => "DPoP",
            TokenType::Other(other) => other,
        }
    }
}

/// A successful token response. Secrets stay in their redacted newtypes.
#[derive(Debug)]
pub struct TokenResponse {
    access_token: AccessToken,
    token_type: TokenType,
    expires_in: Option<u64>,
    refresh_token: Option<RefreshToken>,
    scopes: Scopes,
    id_token: Option<IdToken>,
    authorization_details: Option<Value>,
}

impl TokenResponse {
    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The token type.
    pub fn token_type(&self) -> &TokenType {
        &self.token_type
    }

    /// Seconds until the access token expires, when the server said.
    pub fn expires_in(&self) -> Option<u64> {
        self.expires_in
    }

    /// The refresh token, if one was issued.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// The granted scopes: the response's `scope`, or the requested scopes when it has none
    /// (RFC 6749 §5.1).
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    /// The id_token, still to be verified with [`crate::jwt`] and [`crate::id_token`].
    pub fn id_token(&self) -> Option<&IdToken> {
        self.id_token.as_ref()
    }

    /// The `authorization_details` the server granted
    /// ([RFC 9396 §7](https://www.rfc-editor.org/rfc/rfc9396#section-7)), an array.
    pub fn authorization_details(&self) -> Option<&Value> {
        self.authorization_details.as_ref()
    }

    /// Checks the token type against how the request was made: a request with a DPoP proof
    /// must get a `DPoP` token, and one without must not
    /// ([RFC 9449 §5](https://www.rfc-editor.org/rfc/rfc9449#section-5)); any other type
    /// than `Bearer` or `DPoP` is one consentry cannot use.
    pub fn require_token_type(&self, dpop_bound: bool) -> Result<()> {
        match (&self.token_type, dpop_bound) {
            (TokenType::DPoP, true) | (TokenType::Bearer, false) => Ok(()),
            (TokenType::Bearer, true) => Err(invalid(
                "token_type is Bearer, but the request was DPoP-bound: the token is not sender-constrained",
            )),
            (TokenType::DPoP, false) => Err(invalid(
                "token_type is DPoP, but the request carried no proof",
            )),
            (TokenType::Other(_), _) => Err(invalid("token_type is neither Bearer nor DPoP")),
        }
    }
}

fn invalid(why: &str) -> Error {
    Error::new(ErrorCode::InvalidTokenResponse, why.to_owned())
}

/// A string member that may be absent; present, it must be a non-empty string (`null`
/// included: a `"refresh_token": null` refuses the whole answer, as oauth4webapi does).
fn optional_string<'a>(object: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>> {
    match object.get(name) {
        None => Ok(None),
        Some(Value::String(text)) if !text.is_empty() => Ok(Some(text)),
        Some(_) => Err(invalid(&format!("{name} must be a non-empty string"))),
    }
}

/// Processes the token endpoint's `status`, `Content-Type` and `body`.
///
/// `requested` are the scopes the request asked for: they stand in for an absent `scope`,
/// and when they include `openid` the response must carry an `id_token`.
pub fn process_token_response(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    requested: &Scopes,
) -> Result<TokenResponse> {
    process(status, content_type, body, requested, true)
}

/// Processes the answer to a refresh token grant
/// ([RFC 6749 §6](https://www.rfc-editor.org/rfc/rfc6749#section-6)) as
/// [`process_token_response`] does, except that an `id_token` is optional
/// ([OpenID Connect Core §12.2](https://openid.net/specs/openid-connect-core-1_0.html#RefreshTokenResponse)).
/// `granted` are the grant's scopes, which an absent `scope` keeps.
pub fn process_refresh_response(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    granted: &Scopes,
) -> Result<TokenResponse> {
    process(status, content_type, body, granted, false)
}

fn process(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    requested: &Scopes,
    id_token_required_for_openid: bool,
) -> Result<TokenResponse> {
    let json_declared = content_type.is_some_and(|value| {
        let media_type = value.split(';').next().unwrap_or_default().trim();
        media_type.eq_ignore_ascii_case("application/json") || media_type.ends_with("+json")
    });
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(Value::Object(object)) = &parsed {
        if let Some(error) = object.get("error") {
            let Some(error) = error.as_str().filter(|error| !error.is_empty()) else {
                return Err(invalid("error must be a string"));
            };
            let description = object.get("error_description").and_then(Value::as_str);
            // Tokens an error answer carries anyway are never repeated in what is shown.
            let issued: Vec<&str> = ["access_token", "refresh_token", "id_token"]
                .iter()
                .filter_map(|name| object.get(*name).and_then(Value::as_str))
                .collect();
            return Err(Error::oauth(error, description).withholding(&issued));
        }
    }
    if status >= 500 {
        return Err(Error::new(
            ErrorCode::TokenExchangeFailed,
            format!("token endpoint answered HTTP {status}"),
        ));
    }
    let looks_like_json = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['));
    let object = match parsed {
        Some(Value::Object(object)) if status == 200 => object,
        _ if status != 200 => {
            return Err(Error::new(
                ErrorCode::TokenExchangeFailed,
                format!("token endpoint answered HTTP {status} without an OAuth error"),
            ))
        }
        Some(_) => return Err(invalid("token response is not a JSON object")),
        None if json_declared || looks_like_json => {
            return Err(invalid("token response is not valid JSON"))
        }
        None => {
            return Err(Error::new(
                ErrorCode::TokenExchangeFailed,
                "token endpoint answered something that is not JSON",
            ))
        }
    };

    let access_token = optional_string(&object, "access_token")?
        .ok_or_else(|| invalid("access_token is missing"))?;
    let token_type =
        optional_string(&object, "token_type")?.ok_or_else(|| invalid("token_type is missing"))?;
    let expires_in = match object.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or_else(|| invalid("expires_in must be a non-negative integer"))?,
        ),
    };
    let scopes = match optional_string(&object, "scope")? {
        Some(scope) => Scopes::parse(scope).map_err(|_| invalid("scope is malformed"))?,
        None => requested.clone(),
    };
    let id_token = optional_string(&object, "id_token")?.map(IdToken::new);
    if id_token_required_for_openid && requested.contains("openid") && id_token.is_none() {
        return Err(Error::new(
            ErrorCode::IdTokenMissing,
            "openid was requested but the token response has no id_token",
        ));
    }
    let authorization_details = match object.get("authorization_details") {
        None | Some(Value::Null) => None,
        Some(details @ Value::Array(_)) => Some(details.clone()),
        Some(_) => return Err(invalid("authorization_details must be an array")),
    };
    Ok(TokenResponse {
        access_token: AccessToken::new(access_token),
        token_type: TokenType::parse(token_type),
        expires_in,
        refresh_token: optional_string(&object, "refresh_token")?.map(RefreshToken::new),
        scopes,
        id_token,
        authorization_details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::OAuthErrorCode;

    const JSON: Option<&str> = Some("application/json;charset=UTF-8");

    fn scopes(scope: &str) -> Scopes {
        Scopes::parse(scope).expect("valid")
    }

    fn failure(status: u16, content_type: Option<&str>, body: &str, requested: &str) -> Error {
        process_token_response(status, content_type, body.as_bytes(), &scopes(requested))
            .expect_err("must fail")
    }

    #[test]
    fn an_error_answer_never_repeats_a_token_it_carries() {
        let body = br#"{"error":"invalid_request","error_description":"token at-9f2c1e7b7d aside","access_token":"at-9f2c1e7b7d"}"#;
        let scopes = Scopes::parse("accounts").expect("scopes");
        let error = process_token_response(400, Some("application/json"), body, &scopes)
            .expect_err("an error answer");
        assert_eq!(error.code().as_str(), "invalid_request");
        assert!(!error.description().contains("at-9f2c1e7b7d"), "{}", error.description());
    }

    #[test]
    fn the_token_type_must_fit_the_proof_and_details_are_kept() {
        let answer = |token_type: &str| {
            let body = format!(
                r#"{{"access_token":"at","token_type":"{token_type}","authorization_details":[{{"type":"t","consent_id":"c1"}}]}}"#
            );
            process_token_response(200, JSON, body.as_bytes(), &scopes("accounts")).expect("valid")
        };
        assert!(answer("DPoP").require_token_type(true).is_ok());
        assert!(answer("bearer").require_token_type(false).is_ok());
        for (token_type, dpop) in [
            ("Bearer", true),
            ("DPoP", false),
            ("mac", false),
            ("mac", true),
        ] {
            let refused = answer(token_type)
                .require_token_type(dpop)
                .expect_err("refused");
            assert_eq!(
                refused.code(),
                &ErrorCode::InvalidTokenResponse,
                "{token_type} {dpop}"
            );
        }
        assert_eq!(
            answer("DPoP").authorization_details().expect("kept")[0]["consent_id"],
            "c1"
        );
        let bad = failure(
            200,
            JSON,
            r#"{"access_token":"at","token_type":"Bearer","authorization_details":{}}"#,
            "accounts",
        );
        assert_eq!(bad.code(), &ErrorCode::InvalidTokenResponse);
    }

    #[test]
    fn a_refresh_answer_need_not_carry_an_id_token() {
        let body = br#"{"access_token":"at","token_type":"Bearer","expires_in":120}"#;
        let refreshed = process_refresh_response(200, JSON, body, &scopes("openid accounts"))
            .expect("an id_token is optional on refresh");
        assert_eq!(refreshed.scopes(), &scopes("openid accounts"));
        assert_eq!(
            failure(
                200,
                JSON,
                r#"{"access_token":"at","token_type":"Bearer"}"#,
                "openid accounts"
            )
            .code(),
            &ErrorCode::IdTokenMissing,
            "but required on the code exchange"
        );
        let refused = process_refresh_response(
            400,
            JSON,
            br#"{"error":"invalid_grant"}"#,
            &scopes("accounts"),
        )
        .expect_err("refused");
        assert_eq!(
            refused.code(),
            &ErrorCode::OAuth(OAuthErrorCode::InvalidGrant)
        );
    }

    #[test]
    fn rfc6749_example_response_is_accepted() {
        // RFC 6749 §5.1.
        let body = r#"{"access_token":"2YotnFZFEjr1zCsicMWpAA","token_type":"example","expires_in":3600,"refresh_token":"tGzv3JOkF0XG5Qx2TlKWIA","example_parameter":"example_value"}"#;
        let response =
            process_token_response(200, JSON, body.as_bytes(), &scopes("accounts")).expect("valid");
        assert_eq!(response.access_token().secret(), "2YotnFZFEjr1zCsicMWpAA");
        assert_eq!(response.token_type(), &TokenType::Other("example".into()));
        assert_eq!(response.expires_in(), Some(3600));
        assert_eq!(
            response.refresh_token().map(RefreshToken::secret),
            Some("tGzv3JOkF0XG5Qx2TlKWIA")
        );
        assert_eq!(
            response.scopes(),
            &scopes("accounts"),
            "absent scope means the requested one"
        );
        let debug = format!("{response:?}");
        assert!(
            !debug.contains("2YotnFZFEjr1zCsicMWpAA") && !debug.contains("tGzv3JOkF0XG5Qx2TlKWIA")
        );
    }

    #[test]
    fn token_type_is_case_insensitive_and_expires_in_optional() {
        for (token_type, expected) in [
            ("bearer", TokenType::Bearer),
            ("BEARER", TokenType::Bearer),
            ("DPoP", TokenType::DPoP),
            ("dpop", TokenType::DPoP),
        ] {
            let body = format!(
                r#"{{"access_token":"a","token_type":"{token_type}","scope":"accounts balance"}}"#
            );
            let response = process_token_response(200, JSON, body.as_bytes(), &scopes("accounts"))
                .expect("valid");
            assert_eq!(response.token_type(), &expected);
            assert_eq!(response.expires_in(), None);
            assert_eq!(
                response.scopes(),
                &scopes("accounts balance"),
                "the granted scope wins"
            );
        }
    }

    #[test]
    fn id_token_is_required_when_openid_was_asked() {
        let without = failure(
            200,
            JSON,
            r#"{"access_token":"a","token_type":"Bearer"}"#,
            "openid accounts",
        );
        assert_eq!(without.code(), &ErrorCode::IdTokenMissing);
        let with = process_token_response(
            200,
            JSON,
            br#"{"access_token":"a","token_type":"Bearer","id_token":"h.p.s"}"#,
            &scopes("openid"),
        )
        .expect("valid");
        assert_eq!(with.id_token().map(IdToken::secret), Some("h.p.s"));
    }

    #[test]
    fn malformed_success_bodies_are_invalid_token_responses() {
        for body in [
            "[]",
            r#""access_token""#,
            "{",
            r#"{"access_token":"a","token_type":"Bearer""#,
            r#"{"token_type":"Bearer"}"#,
            r#"{"access_token":"","token_type":"Bearer"}"#,
            r#"{"access_token":42,"token_type":"Bearer"}"#,
            r#"{"access_token":"a"}"#,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":"3600"}"#,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":-1}"#,
            r#"{"access_token":"a","token_type":"Bearer","refresh_token":7}"#,
            r#"{"access_token":"a","token_type":"Bearer","scope":["a"]}"#,
            r#"{"access_token":"a","token_type":"Bearer","id_token":{}}"#,
            r#"{"access_token":"a","token_type":"Bearer","refresh_token":null}"#,
            r#"{"access_token":"a","token_type":"Bearer","scope":null}"#,
            r#"{"access_token":null,"token_type":"Bearer"}"#,
        ] {
            let error = failure(200, JSON, body, "accounts");
            assert_eq!(error.code(), &ErrorCode::InvalidTokenResponse, "{body}");
        }
    }

    #[test]
    fn oauth_error_bodies_keep_the_rfc_error() {
        let error = failure(
            400,
            JSON,
            r#"{"error":"invalid_grant","error_description":"code expired"}"#,
            "accounts",
        );
        assert_eq!(
            error.code(),
            &ErrorCode::OAuth(OAuthErrorCode::InvalidGrant)
        );
        assert_eq!(error.description(), "code expired");
        // Back-channel descriptions are bounded like front-channel ones.
        let long = format!(
            r#"{{"error":"invalid_grant","error_description":"{}"}}"#,
            "x".repeat(5000)
        );
        let error = failure(400, JSON, &long, "accounts");
        assert_eq!(
            error.description().len(),
            crate::error::MAX_ERROR_DESCRIPTION_LEN
        );
        let error = failure(401, JSON, r#"{"error":"invalid_client"}"#, "accounts");
        assert_eq!(error.code().as_str(), "invalid_client");
        let error = failure(400, JSON, r#"{"error":"use_dpop_nonce"}"#, "accounts");
        assert_eq!(
            error.code(),
            &ErrorCode::OAuth(OAuthErrorCode::UseDpopNonce)
        );
    }

    #[test]
    fn non_json_and_5xx_answers_are_exchange_failures() {
        for (status, content_type, body) in [
            (500, Some("text/html"), "<html>Internal error</html>"),
            (502, None, ""),
            (
                503,
                JSON,
                r#"{"access_token":"leak","token_type":"Bearer"}"#,
            ),
            (200, Some("text/html"), "<html>login</html>"),
            (200, None, "garbage"),
            (400, Some("text/plain"), "bad request"),
            (302, None, ""),
        ] {
            let error = failure(status, content_type, body, "accounts");
            assert_eq!(
                error.code(),
                &ErrorCode::TokenExchangeFailed,
                "{status} {body}"
            );
            assert!(
                !error.description().contains(body) || body.is_empty(),
                "no body in the error"
            );
        }
    }
}
