//! The authorization response at the redirect URI
//! ([RFC 6749 §4.1.2](https://www.rfc-editor.org/rfc/rfc6749#section-4.1.2)), as a query
//! string or a `form_post` body, and its validation in the order that defends best:
//! `iss` ([RFC 9207](https://www.rfc-editor.org/rfc/rfc9207)), then `state`, then `error`.

use crate::encoding::{constant_time_eq, form_decode};
use crate::error::{Error, ErrorCode, Result};
use crate::secret::AuthorizationCode;
use crate::state::State;
use crate::url::IssuerUrl;

/// Parameters that would mean an implicit or hybrid response: never accepted.
const FORBIDDEN_PARAMS: &[&str] = &["access_token", "id_token", "token"];

/// The longest authorization `code` accepted. RFC 6749 sets no limit; real codes are well
/// under 512 characters, and a longer one is refused before any lookup or token request.
pub const MAX_CODE_LEN: usize = 2048;

/// A parsed, not yet validated, authorization response.
///
/// Its [`state`](Self::state) finds the pending transaction; then
/// [`validate_authorization_response`] checks it against that transaction.
pub struct AuthorizationResponse {
    params: Vec<(String, String)>,
}

impl std::fmt::Debug for AuthorizationResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.params.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("AuthorizationResponse")
            .field("params", &names)
            .finish()
    }
}

impl AuthorizationResponse {
    /// Parses a redirect's query string (without `?`) or a `form_post` body. Every parameter
    /// may occur at most once ([RFC 6749 §3.1](https://www.rfc-editor.org/rfc/rfc6749#section-3.1)).
    /// A `state` that is not one consentry could have sent ([`State::parse`]) and a `code`
    /// that is not 1 to [`MAX_CODE_LEN`] `VSCHAR` (`%x20-7E`,
    /// [Appendix A.11](https://www.rfc-editor.org/rfc/rfc6749#appendix-A.11)) are refused
    /// here, before the response can be used to look anything up.
    pub fn parse(query_or_form: &str) -> Result<Self> {
        let params = form_decode(query_or_form.strip_prefix('?').unwrap_or(query_or_form));
        for (index, (name, _)) in params.iter().enumerate() {
            if params[..index].iter().any(|(earlier, _)| earlier == name) {
                return Err(Error::new(
                    ErrorCode::DuplicateParameter,
                    format!("authorization response parameter {name} occurs more than once"),
                ));
            }
        }
        if let Some((name, _)) = params
            .iter()
            .find(|(name, _)| FORBIDDEN_PARAMS.contains(&name.as_str()))
        {
            return Err(Error::new(
                ErrorCode::ForbiddenParameter,
                format!("authorization response must not carry {name}: only the code flow is used"),
            ));
        }
        let response = AuthorizationResponse { params };
        if let Some(state) = response.param("state") {
            State::parse(state)?;
        }
        if let Some(code) = response.param("code") {
            let vschar = code.bytes().all(|b| (0x20..=0x7E).contains(&b));
            if code.is_empty() || code.len() > MAX_CODE_LEN || !vschar {
                return Err(Error::new(
                    ErrorCode::InvalidParameter,
                    format!(
                        "the authorization code is not 1 to {MAX_CODE_LEN} printable ASCII characters"
                    ),
                ));
            }
        }
        Ok(response)
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
    }

    /// The `state` as received, to look the transaction up by; `None` when absent (a
    /// malformed one was refused by [`parse`](Self::parse)).
    pub fn state(&self) -> Option<State> {
        self.param("state")
            .and_then(|state| State::parse(state).ok())
    }
}

/// An authorization response that passed [`validate_authorization_response`]: it holds the
/// code, and only that function can make one. The token request takes nothing else.
#[derive(Debug)]
pub struct ValidatedAuthorizationResponse {
    code: AuthorizationCode,
}

impl ValidatedAuthorizationResponse {
    pub(crate) fn into_code(self) -> AuthorizationCode {
        self.code
    }
}

/// Validates `response` against the transaction's `expected_state` and the provider's
/// `issuer`, in this order:
///
/// 1. `iss` (RFC 9207 §2.4): when present it must equal the issuer exactly; when absent it
///    is an error if `iss_required` (discovery advertised
///    `authorization_response_iss_parameter_supported`, or the profile demands it).
/// 2. `state`: present and equal (constant time).
/// 3. `error`: the provider's error, its RFC string kept ([`ErrorCode::OAuth`]).
/// 4. `code`: present and non-empty.
pub fn validate_authorization_response(
    response: AuthorizationResponse,
    expected_state: &State,
    issuer: &IssuerUrl,
    iss_required: bool,
) -> Result<ValidatedAuthorizationResponse> {
    match response.param("iss") {
        Some(iss) if iss != issuer.as_str() => {
            return Err(Error::new(
                ErrorCode::IssMismatch,
                format!("the response's iss is not the issuer {}", issuer.as_str()),
            ))
        }
        None if iss_required => {
            return Err(Error::new(
                ErrorCode::IssMissing,
                "the authorization server sends iss with every response, but this one has none",
            ))
        }
        _ => {}
    }
    let state_matches = response.param("state").is_some_and(|state| {
        constant_time_eq(state.as_bytes(), expected_state.as_str().as_bytes())
    });
    if !state_matches {
        return Err(Error::new(
            ErrorCode::StateMismatch,
            "the response's state does not match this flow",
        ));
    }
    if let Some(error) = response.param("error") {
        return Err(Error::oauth(error, response.param("error_description")));
    }
    match response.param("code") {
        Some(code) if !code.is_empty() => Ok(ValidatedAuthorizationResponse {
            code: AuthorizationCode::new(code),
        }),
        _ => Err(Error::new(
            ErrorCode::MissingParameter,
            "the authorization response has neither code nor error",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{OAuthErrorCode, MAX_ERROR_DESCRIPTION_LEN};

    const ISSUER: &str = "https://bank.example";

    fn validate(query: &str, iss_required: bool) -> Result<ValidatedAuthorizationResponse> {
        let issuer = IssuerUrl::parse(ISSUER).expect("valid");
        let state = State::parse("xyz").expect("valid");
        validate_authorization_response(
            AuthorizationResponse::parse(query)?,
            &state,
            &issuer,
            iss_required,
        )
    }

    fn code_of(result: Result<ValidatedAuthorizationResponse>) -> ErrorCode {
        result.expect_err("must fail").code().clone()
    }

    #[test]
    fn valid_response_yields_the_code() {
        let validated = validate(
            "code=SplxlOBeZQQYbYS6WxSbIA&state=xyz&iss=https%3A%2F%2Fbank.example",
            true,
        )
        .expect("valid");
        assert_eq!(validated.into_code().secret(), "SplxlOBeZQQYbYS6WxSbIA");
        assert!(
            validate("?code=c&state=xyz", false).is_ok(),
            "iss optional when not advertised"
        );
    }

    #[test]
    fn a_parameter_given_twice_is_rejected() {
        assert_eq!(
            code_of(validate("code=a&code=b&state=xyz", false)),
            ErrorCode::DuplicateParameter
        );
        assert_eq!(
            code_of(validate("code=a&state=xyz&state=xyz", false)),
            ErrorCode::DuplicateParameter
        );
    }

    #[test]
    fn tokens_in_the_authorization_response_are_rejected() {
        for name in ["access_token", "id_token", "token"] {
            let query = format!("code=a&state=xyz&{name}=t");
            assert_eq!(
                code_of(validate(&query, false)),
                ErrorCode::ForbiddenParameter,
                "{name}"
            );
        }
    }

    #[test]
    fn iss_is_checked_exactly_and_first() {
        assert_eq!(
            code_of(validate(
                "code=a&state=xyz&iss=https%3A%2F%2Fbank.example%2F",
                false
            )),
            ErrorCode::IssMismatch
        );
        assert_eq!(
            code_of(validate(
                "code=a&state=xyz&iss=https%3A%2F%2Fevil.example",
                false
            )),
            ErrorCode::IssMismatch
        );
        assert_eq!(
            code_of(validate("code=a&state=xyz", true)),
            ErrorCode::IssMissing
        );
        // iss is checked before state: a mix-up attack is named as such.
        assert_eq!(
            code_of(validate(
                "code=a&state=other&iss=https%3A%2F%2Fevil.example",
                false
            )),
            ErrorCode::IssMismatch
        );
    }

    #[test]
    fn state_is_checked_before_error() {
        assert_eq!(
            code_of(validate("code=a&state=xyZ", false)),
            ErrorCode::StateMismatch
        );
        assert_eq!(code_of(validate("code=a", false)), ErrorCode::StateMismatch);
        // A forged error with the wrong state is a state mismatch, not a denial.
        assert_eq!(
            code_of(validate("error=access_denied&state=nope", false)),
            ErrorCode::StateMismatch
        );
    }

    #[test]
    fn provider_errors_keep_their_rfc_string() {
        let error = validate(
            "error=access_denied&error_description=The+user+said+no&state=xyz",
            false,
        )
        .expect_err("denied");
        assert_eq!(
            error.code(),
            &ErrorCode::OAuth(OAuthErrorCode::AccessDenied)
        );
        assert_eq!(error.description(), "The user said no");
        for rfc in [
            "invalid_request",
            "server_error",
            "temporarily_unavailable",
            "mh_custom_error",
        ] {
            let error = validate(&format!("error={rfc}&state=xyz"), false).expect_err("error");
            assert_eq!(error.code().as_str(), rfc);
        }
        let html = validate(
            "error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state=xyz",
            false,
        )
        .expect_err("denied");
        assert_eq!(
            html.description(),
            "<script>alert(1)</script>",
            "kept as data; escaping is the renderer's job"
        );
        let long = validate(
            &format!(
                "error=server_error&error_description={}&state=xyz",
                "a".repeat(5000)
            ),
            false,
        )
        .expect_err("error");
        assert_eq!(long.description().len(), MAX_ERROR_DESCRIPTION_LEN);
    }

    #[test]
    fn oversized_or_garbage_code_and_state_are_refused_before_any_lookup() {
        let parse_code = |query: &str| {
            AuthorizationResponse::parse(query)
                .map(|_| ())
                .map_err(|error| error.code().clone())
        };
        let long_code = format!("code={}&state=xyz", "c".repeat(MAX_CODE_LEN + 1));
        assert_eq!(parse_code(&long_code), Err(ErrorCode::InvalidParameter));
        let just_fits = format!("code={}&state=xyz", "c".repeat(MAX_CODE_LEN));
        assert_eq!(parse_code(&just_fits), Ok(()));
        for bad_code in [
            "code=a%0Ab&state=xyz",
            "code=a%00&state=xyz",
            "code=%C3%A9&state=xyz",
        ] {
            assert_eq!(
                parse_code(bad_code),
                Err(ErrorCode::InvalidParameter),
                "{bad_code}"
            );
        }
        let long_state = format!("code=c&state={}", "s".repeat(256));
        assert_eq!(parse_code(&long_state), Err(ErrorCode::InvalidState));
        for bad_state in [
            "code=c&state=a%20b",
            "code=c&state=%3Cscript%3E",
            "error=access_denied&state=",
        ] {
            assert_eq!(
                parse_code(bad_state),
                Err(ErrorCode::InvalidState),
                "{bad_state}"
            );
        }
    }

    #[test]
    fn a_provider_error_outside_rfc_6749_is_an_invalid_provider_response() {
        for error in [
            "access_denied%0Aforged",
            "transaction_replayed",
            "%22quoted%22",
        ] {
            assert_eq!(
                code_of(validate(&format!("error={error}&state=xyz"), false)),
                ErrorCode::InvalidProviderResponse,
                "{error}"
            );
        }
        // Checked after state: a forged error for another flow is still a state mismatch.
        assert_eq!(
            code_of(validate("error=transaction_replayed&state=abc", false)),
            ErrorCode::StateMismatch
        );
    }

    #[test]
    fn missing_code_is_an_error_and_form_post_bodies_parse() {
        assert_eq!(
            code_of(validate("state=xyz", false)),
            ErrorCode::MissingParameter
        );
        let response = AuthorizationResponse::parse("code=abc&state=xyz").expect("parses");
        assert_eq!(
            response.state().map(|s| s.as_str().to_owned()),
            Some("xyz".to_owned())
        );
        assert!(
            !format!("{response:?}").contains("abc"),
            "Debug hides the code"
        );
    }
}
