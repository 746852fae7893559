//! The error taxonomy: RFC error strings kept exactly, and the SDK's own stable snake_case codes.
//!
//! Every failure in consentry is an [`Error`]: a [`ErrorCode`] that machines match on and a
//! human `description`. The same `{ code, description }` pair reaches JavaScript unchanged.
//! A description never holds a raw response body, a JWT, a code, a verifier or a token.

use core::fmt;

use crate::prelude::*;

/// An error code defined by an RFC, kept exactly as the authorization server sent it.
///
/// Covers [RFC 6749 §4.1.2.1](https://www.rfc-editor.org/rfc/rfc6749#section-4.1.2.1)
/// (authorization errors), [§5.2](https://www.rfc-editor.org/rfc/rfc6749#section-5.2)
/// (token errors), [OpenID Connect Core §3.1.2.6](https://openid.net/specs/openid-connect-core-1_0.html#AuthError),
/// [RFC 9126 §2.3](https://www.rfc-editor.org/rfc/rfc9126#section-2.3) and
/// [RFC 9449 §5](https://www.rfc-editor.org/rfc/rfc9449#section-5). Any other string is
/// kept as [`OAuthErrorCode::Extension`], so `as_str` always gives back what was received.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OAuthErrorCode {
    /// `invalid_request`
    InvalidRequest,
    /// `unauthorized_client`
    UnauthorizedClient,
    /// `access_denied`
    AccessDenied,
    /// `unsupported_response_type`
    UnsupportedResponseType,
    /// `invalid_scope`
    InvalidScope,
    /// `server_error`
    ServerError,
    /// `temporarily_unavailable`
    TemporarilyUnavailable,
    /// `invalid_client`
    InvalidClient,
    /// `invalid_grant`
    InvalidGrant,
    /// `unsupported_grant_type`
    UnsupportedGrantType,
    /// `interaction_required`
    InteractionRequired,
    /// `login_required`
    LoginRequired,
    /// `account_selection_required`
    AccountSelectionRequired,
    /// `consent_required`
    ConsentRequired,
    /// `invalid_request_uri`
    InvalidRequestUri,
    /// `invalid_request_object`
    InvalidRequestObject,
    /// `request_not_supported`
    RequestNotSupported,
    /// `request_uri_not_supported`
    RequestUriNotSupported,
    /// `registration_not_supported`
    RegistrationNotSupported,
    /// The server cannot revoke this type of token
    /// ([RFC 7009 §2.2.1](https://www.rfc-editor.org/rfc/rfc7009#section-2.2.1)).
    UnsupportedTokenType,
    /// `invalid_dpop_proof`
    InvalidDpopProof,
    /// `use_dpop_nonce`
    UseDpopNonce,
    /// Any other error string, kept verbatim.
    Extension(String),
}

const OAUTH_ERROR_CODES: &[(&str, OAuthErrorCode)] = &[
    ("invalid_request", OAuthErrorCode::InvalidRequest),
    ("unauthorized_client", OAuthErrorCode::UnauthorizedClient),
    ("access_denied", OAuthErrorCode::AccessDenied),
    (
        "unsupported_response_type",
        OAuthErrorCode::UnsupportedResponseType,
    ),
    ("invalid_scope", OAuthErrorCode::InvalidScope),
    ("server_error", OAuthErrorCode::ServerError),
    (
        "temporarily_unavailable",
        OAuthErrorCode::TemporarilyUnavailable,
    ),
    ("invalid_client", OAuthErrorCode::InvalidClient),
    ("invalid_grant", OAuthErrorCode::InvalidGrant),
    (
        "unsupported_grant_type",
        OAuthErrorCode::UnsupportedGrantType,
    ),
    ("interaction_required", OAuthErrorCode::InteractionRequired),
    ("login_required", OAuthErrorCode::LoginRequired),
    (
        "account_selection_required",
        OAuthErrorCode::AccountSelectionRequired,
    ),
    ("consent_required", OAuthErrorCode::ConsentRequired),
    ("invalid_request_uri", OAuthErrorCode::InvalidRequestUri),
    (
        "invalid_request_object",
        OAuthErrorCode::InvalidRequestObject,
    ),
    ("request_not_supported", OAuthErrorCode::RequestNotSupported),
    (
        "request_uri_not_supported",
        OAuthErrorCode::RequestUriNotSupported,
    ),
    (
        "registration_not_supported",
        OAuthErrorCode::RegistrationNotSupported,
    ),
    (
        "unsupported_token_type",
        OAuthErrorCode::UnsupportedTokenType,
    ),
    ("invalid_dpop_proof", OAuthErrorCode::InvalidDpopProof),
    ("use_dpop_nonce", OAuthErrorCode::UseDpopNonce),
];

impl OAuthErrorCode {
    /// Maps an `error` string as received; unknown strings become [`OAuthErrorCode::Extension`].
    pub fn parse(error: &str) -> Self {
        OAUTH_ERROR_CODES
            .iter()
            .find(|(name, _)| *name == error)
            .map(|(_, code)| code.clone())
            .unwrap_or_else(|| OAuthErrorCode::Extension(error.to_owned()))
    }

    /// The exact string of this code, as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            OAuthErrorCode::Extension(other) => other,
            known => OAUTH_ERROR_CODES
                .iter()
                .find(|(_, code)| code == known)
                .map(|(name, _)| *name)
                .unwrap_or("server_error"),
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! sdk_error_codes {
    ($($(#[$doc:meta])* $variant:ident => $code:literal,)*) => {
        /// A stable machine-readable code for an [`Error`].
        ///
        /// [`ErrorCode::OAuth`] carries an RFC error string from the authorization server;
        /// every other variant is one of the SDK's own snake_case codes, which never change
        /// once published.
        #[non_exhaustive]
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            /// The authorization server answered with an RFC error (`access_denied`, ...).
            OAuth(OAuthErrorCode),
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// The code's wire string: the RFC string for [`ErrorCode::OAuth`], else the SDK code.
            pub fn as_str(&self) -> &str {
                match self {
                    ErrorCode::OAuth(code) => code.as_str(),
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The SDK code's wire string, `None` for [`ErrorCode::OAuth`]. A `const fn`: a
            /// caller that names a few codes, each in a `const` block, carries only their
            /// strings, not the whole table (the browser module does so).
            pub const fn sdk_str(&self) -> Option<&'static str> {
                match self {
                    ErrorCode::OAuth(_) => None,
                    $(ErrorCode::$variant => Some($code),)*
                }
            }

            /// Reads a wire string back: SDK codes first, anything else as an RFC error string.
            pub fn parse(code: &str) -> Self {
                match code {
                    $($code => ErrorCode::$variant,)*
                    other => ErrorCode::OAuth(OAuthErrorCode::parse(other)),
                }
            }
        }
    };
}

sdk_error_codes! {
    /// The browser blocked the popup window.
    PopupBlocked => "popup_blocked",
    /// The user closed the popup and no outcome was recorded.
    PopupClosed => "popup_closed",
    /// The flow did not finish within its time limit.
    Timeout => "timeout",
    /// Another flow is already pending in this client.
    FlowInProgress => "flow_in_progress",
    /// The browser package was used before `await init()` finished.
    NotInitialized => "not_initialized",
    /// The browser could not reach the Worker, or it answered with something other than JSON.
    NetworkError => "network_error",
    /// The `state` returned does not match the one sent.
    StateMismatch => "state_mismatch",
    /// A `state` value is not acceptable (length or characters).
    InvalidState => "invalid_state",
    /// The `iss` authorization response parameter does not match the issuer (RFC 9207).
    IssMismatch => "iss_mismatch",
    /// The `iss` parameter is required by the issuer's metadata but absent (RFC 9207).
    IssMissing => "iss_missing",
    /// No pending transaction for this `state` (unknown, expired or already consumed).
    UnknownTransaction => "unknown_transaction",
    /// The transaction is not bound to this browser (binding cookie absent or wrong).
    TransactionNotBound => "transaction_not_bound",
    /// The transaction's 10 minutes ran out before the provider redirected back.
    TransactionExpired => "transaction_expired",
    /// The transaction was already consumed: a replayed or concurrent callback.
    TransactionReplayed => "transaction_replayed",
    /// The flow was started but has no outcome yet.
    OutcomePending => "outcome_pending",
    /// The flow came back in time, but the Worker was stopped before it recorded how the
    /// code exchange ended (the exchange may or may not have happened).
    ExchangeInterrupted => "exchange_interrupted",
    /// A parameter occurs more than once where it must occur at most once.
    DuplicateParameter => "duplicate_parameter",
    /// A required parameter is absent.
    MissingParameter => "missing_parameter",
    /// A parameter is present that must never be (e.g. a token in an authorization response).
    ForbiddenParameter => "forbidden_parameter",
    /// A PKCE code verifier is not 43-128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
    InvalidVerifier => "invalid_verifier",
    /// The token endpoint could not be reached, answered 5xx, or answered something not JSON.
    TokenExchangeFailed => "token_exchange_failed",
    /// The token endpoint answered JSON that is not a valid token response.
    InvalidTokenResponse => "invalid_token_response",
    /// `openid` was requested but the token response has no `id_token`.
    IdTokenMissing => "id_token_missing",
    /// The id_token's claims fail OpenID Connect Core §3.1.3.7.
    IdTokenInvalid => "id_token_invalid",
    /// A JWT is not a well-formed compact JWS.
    JwtMalformed => "jwt_malformed",
    /// A JWT's `alg` is not on the allow-list pinned for this provider.
    JwtAlgNotAllowed => "jwt_alg_not_allowed",
    /// A JWT header carries `crit`, which consentry does not understand.
    JwtCritUnsupported => "jwt_crit_unsupported",
    /// A JWT's signature does not verify.
    JwtSignatureInvalid => "jwt_signature_invalid",
    /// No key in the JWKS fits the JWT (wrong or missing `kid`, wrong type).
    JwkNotFound => "jwk_not_found",
    /// The JWT names a key the provider's JWKS lacks, and that JWKS was fetched under a
    /// minute ago: it is fetched again at most once a minute, so the key cannot be known
    /// yet. Not a verdict on the token (a rotation looks like this); try again shortly.
    JwkNotYetKnown => "jwk_not_yet_known",
    /// A JWK or JWKS is not well formed.
    JwkInvalid => "jwk_invalid",
    /// Discovery metadata is malformed or does not fit the configured issuer.
    DiscoveryInvalid => "discovery_invalid",
    /// The authorization server does not support PKCE with S256.
    PkceNotSupported => "pkce_not_supported",
    /// The provider configuration is malformed or incomplete.
    InvalidConfiguration => "invalid_configuration",
    /// The provider answered outside the protocol: an `error` that is not an RFC 6749 error
    /// string, or one that would read as one of consentry's own codes.
    InvalidProviderResponse => "invalid_provider_response",
    /// The callback arrived on another provider's redirect URI than the flow's own: a mix-up
    /// (RFC 9700 §4.4). The flow is not consumed and no token request is made.
    ProviderMismatch => "provider_mismatch",
    /// The provider needs a profile of the app user (Moneyhub's user) that the Worker has
    /// not recorded and could not make.
    ProviderUserMissing => "provider_user_missing",
    /// Another start is making the app user's profile at the provider just now; try again.
    ProviderUserPending => "provider_user_pending",
    /// No provider is configured under this id.
    UnknownProvider => "unknown_provider",
    /// A pushed authorization request failed (RFC 9126).
    ParFailed => "par_failed",
    /// A URL is malformed or not allowed (only `https`, or `http` on a loopback host).
    InvalidUrl => "invalid_url",
    /// The request's `Origin` is not on the allow-list.
    OriginNotAllowed => "origin_not_allowed",
    /// The anti-CSRF header `X-Consentry: 1` is absent.
    CsrfHeaderMissing => "csrf_header_missing",
    /// An outcome message does not match the wire schema.
    InvalidOutcome => "invalid_outcome",
    /// The app-user reference is not acceptable.
    InvalidUser => "invalid_user",
    /// A request parameter is not acceptable.
    InvalidParameter => "invalid_parameter",
    /// The route needs a session and the request has none (or it ended).
    SessionRequired => "session_required",
    /// No consent with this id belongs to the session's user.
    ConsentNotFound => "consent_not_found",
    /// Several of the user's consents with the provider are active, and the call names none
    /// (`X-Consentry-Consent`).
    ConsentAmbiguous => "consent_ambiguous",
    /// The consent was revoked or has lapsed, or the provider refused to refresh its tokens
    /// (`invalid_grant`): the user must connect again.
    ConsentExpired => "consent_expired",
    /// A data-API path or method is not allowed: outside `api_paths` or `api_methods`, or
    /// holding `..`, an encoded `/` or `\`, `@`, `//` or a scheme.
    InvalidApiPath => "invalid_api_path",
    /// The provider could not refresh the consent's token just now; try again.
    RefreshFailed => "refresh_failed",
    /// The provider's data API answered with a redirect, which is never followed.
    UpstreamRedirect => "upstream_redirect",
    /// The provider's data API could not be reached.
    UpstreamUnreachable => "upstream_unreachable",
    /// The provider's data API did not answer within the Worker's HTTP timeout.
    UpstreamTimeout => "upstream_timeout",
    /// The provider's data API answered with a body over the Worker's limit.
    UpstreamTooLarge => "upstream_too_large",
    /// The provider's data API answered with an error status (the browser package's code
    /// for a non-2xx answer passed through by `/api`).
    UpstreamError => "upstream_error",
    /// The provider did not confirm a token revocation (RFC 7009).
    RevocationFailed => "revocation_failed",
    /// A provider endpoint (discovery, JWKS, PAR) could not be reached in time.
    ProviderUnreachable => "provider_unreachable",
    /// consentry's own storage failed or is unavailable; nothing was half-written. Try
    /// again later.
    StorageFailed => "storage_failed",
    /// A record at rest does not open for its row: altered, moved to another row, or sealed
    /// under a key the Worker no longer has. Nothing is sent with it; retrying does not help.
    RecordUnreadable => "record_unreadable",
    /// Too many requests from this client (per IP on the popup's pages, per session on
    /// `/api`); try again after `Retry-After` seconds.
    RateLimited => "rate_limited",
    /// No such route, or not with this method.
    NotFound => "not_found",
}

impl ErrorCode {
    /// Whether the code says a JWT was refused for what it is (malformed, an algorithm not
    /// allowed, `crit`, a bad signature, a key its issuer does not publish), as against one
    /// that could not be checked just now (its JWKS unreachable).
    pub fn is_jwt_rejection(&self) -> bool {
        matches!(
            self,
            ErrorCode::JwtMalformed
                | ErrorCode::JwtAlgNotAllowed
                | ErrorCode::JwtCritUnsupported
                | ErrorCode::JwtSignatureInvalid
                | ErrorCode::JwkNotFound
        )
    }

    /// The HTTP status the Worker answers a JSON route with when it fails with this code:
    /// 401 without a session, 403 for a refused caller or a consent that cannot be used,
    /// 404 for nothing to show, 409 for an ambiguous consent, 429 over a rate limit, 500 for
    /// consentry's own configuration, 503 when its storage failed, 502 when the provider
    /// failed, 504 when it did not answer, else 400.
    pub fn http_status(&self) -> u16 {
        match self {
            ErrorCode::CsrfHeaderMissing
            | ErrorCode::OriginNotAllowed
            | ErrorCode::TransactionNotBound
            | ErrorCode::ConsentExpired
            | ErrorCode::OAuth(OAuthErrorCode::ConsentRequired) => 403,
            ErrorCode::SessionRequired => 401,
            ErrorCode::UnknownTransaction
            | ErrorCode::OutcomePending
            | ErrorCode::ConsentNotFound
            | ErrorCode::UnknownProvider
            | ErrorCode::NotFound => 404,
            ErrorCode::ConsentAmbiguous => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::UpstreamTimeout => 504,
            ErrorCode::UpstreamRedirect
            | ErrorCode::UpstreamUnreachable
            | ErrorCode::UpstreamTooLarge
            | ErrorCode::UpstreamError
            | ErrorCode::RefreshFailed => 502,
            ErrorCode::InvalidConfiguration
            | ErrorCode::ExchangeInterrupted
            | ErrorCode::RecordUnreadable => 500,
            ErrorCode::StorageFailed => 503,
            ErrorCode::ProviderUnreachable
            | ErrorCode::RevocationFailed
            | ErrorCode::InvalidProviderResponse
            | ErrorCode::OAuth(OAuthErrorCode::ServerError) => 502,
            _ => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest provider `error_description` kept ([`Error::oauth`] cuts the rest).
pub const MAX_ERROR_DESCRIPTION_LEN: usize = 512;

/// The longest provider `error` accepted; every RFC error string is under 32 characters.
pub const MAX_ERROR_CODE_LEN: usize = 64;

/// Whether `error` is an RFC 6749 error string: 1 or more `NQSCHAR`, `%x20-21 / %x23-5B /
/// %x5D-7E` ([§4.1.2.1](https://www.rfc-editor.org/rfc/rfc6749#section-4.1.2.1),
/// [Appendix A.7](https://www.rfc-editor.org/rfc/rfc6749#appendix-A.7)), at most
/// [`MAX_ERROR_CODE_LEN`] of them.
pub fn is_rfc_error_string(error: &str) -> bool {
    (1..=MAX_ERROR_CODE_LEN).contains(&error.len())
        && error
            .bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

/// A provider's `error_description` as consentry keeps it: control characters, line and
/// paragraph separators, and the invisible format characters (bidirectional marks and
/// overrides, zero-width characters, the byte-order mark) become spaces, so that it cannot
/// break a line, a log or the reading order of a page; cut to [`MAX_ERROR_DESCRIPTION_LEN`]
/// characters. Other Unicode is kept: providers localize their descriptions.
fn sanitize_description(description: &str) -> String {
    description
        .chars()
        .map(|c| match c {
            c if c.is_control() => ' ',
            // Unicode's Cf (format) characters that can hide or reorder text, and Zl / Zp.
            '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}' => ' ',
            c => c,
        })
        .take(MAX_ERROR_DESCRIPTION_LEN)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// What replaces a provider's description that repeated a credential.
const WITHHELD: &str = "the provider's description was withheld: it repeated a credential";

/// Whether `text` holds what looks like a JWS or JWT in compact form: a base64url JSON
/// header (`eyJ`, 13 characters at least) followed by a `.`.
fn holds_jws(text: &str) -> bool {
    let base64url = |b: &&u8| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_';
    text.match_indices("eyJ").any(|(at, _)| {
        let rest = &text.as_bytes()[at..];
        let header = rest.iter().take_while(base64url).count();
        header >= 13 && rest.get(header) == Some(&b'.')
    })
}

/// A consentry failure: a stable [`ErrorCode`] and a human description.
///
/// The description explains; it never quotes a response body, a JWT or a credential. The one
/// text from outside is a provider's `error_description` ([`Error::oauth`]), sanitized, and
/// withheld where it could echo what was sent ([`Error::withholding`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    description: String,
}

impl Error {
    /// An error with this code and description.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Error {
            code,
            description: description.into(),
        }
    }

    /// An error the authorization server reported, its RFC `error` string kept exactly.
    /// Its `error_description` is shown to people, stored with the outcome and never parsed:
    /// it is kept sanitized and cut to [`MAX_ERROR_DESCRIPTION_LEN`] characters, and withheld
    /// when it holds a JWS.
    ///
    /// Every string a provider sends as `error` comes through here, and two kinds are not
    /// passed on: one that is not an RFC error string ([`is_rfc_error_string`]: too long, a
    /// newline, a quote), and one that spells one of consentry's own codes
    /// (`transaction_replayed`, ...), which the app would read as the SDK's verdict. Both
    /// become [`ErrorCode::InvalidProviderResponse`], without the provider's text.
    pub fn oauth(error: &str, description: Option<&str>) -> Self {
        if !is_rfc_error_string(error) {
            return Error::new(
                ErrorCode::InvalidProviderResponse,
                format!(
                    "the provider's error is not an RFC 6749 error string (1 to \
                     {MAX_ERROR_CODE_LEN} printable ASCII characters, no quote or backslash)"
                ),
            );
        }
        let code = ErrorCode::parse(error);
        if !matches!(code, ErrorCode::OAuth(_)) {
            return Error::new(
                ErrorCode::InvalidProviderResponse,
                "the provider's error spells one of consentry's own codes; it is not passed on as one",
            );
        }
        let description = sanitize_description(description.unwrap_or_default());
        // A JWS in it is one the client signed, echoed (a client assertion, a DPoP proof, a
        // request object): not the provider's to show.
        match holds_jws(&description) {
            true => Error::new(code, WITHHELD),
            false => Error::new(code, description),
        }
    }

    /// This error, its description dropped if it holds any of `sent`: the secrets of the
    /// request it answers (an authorization code, a verifier, a client secret), which a
    /// provider echoing its input in `error_description` would otherwise show to the user
    /// and store with the outcome. Empty values are ignored. A description cut to its length
    /// limit that ends in the first 8 or more characters of a secret is dropped too: the cut
    /// would otherwise show most of it. (What the client signed per request, a client
    /// assertion, a DPoP proof or a request object, is in no such list: [`Error::oauth`]
    /// withholds any description that holds a JWS.)
    pub fn withholding(self, sent: &[&str]) -> Self {
        let description = &self.description;
        let echoes = sent.iter().any(|secret| {
            !secret.is_empty()
                && (description.contains(secret)
                    || (8..secret.len()).any(|len| {
                        secret
                            .get(..len)
                            .is_some_and(|start| description.ends_with(start))
                    }))
        });
        match echoes {
            true => Error::new(self.code, WITHHELD),
            false => self,
        }
    }

    /// The stable code.
    pub fn code(&self) -> &ErrorCode {
        &self.code
    }

    /// The human description (may be empty when the server sent none).
    pub fn description(&self) -> &str {
        &self.description
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.description.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.description)
        }
    }
}

impl core::error::Error for Error {}

/// `Result` with consentry's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_cut_short_by_the_length_limit_is_still_withheld() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let padding = "x".repeat(MAX_ERROR_DESCRIPTION_LEN - 20);
        let echoed = format!("{padding} {verifier}");
        let error = Error::oauth("invalid_grant", Some(&echoed)).withholding(&[verifier]);
        assert!(
            !error.description().contains(&verifier[..8]),
            "{}",
            error.description()
        );
        // A description that merely shares a few characters keeps its text.
        let kept = Error::oauth("invalid_grant", Some("code dBjf")).withholding(&[verifier]);
        assert_eq!(kept.description(), "code dBjf");
    }

    #[test]
    fn rfc_error_strings_round_trip_exactly() {
        for (name, code) in OAUTH_ERROR_CODES {
            assert_eq!(&OAuthErrorCode::parse(name), code);
            assert_eq!(code.as_str(), *name);
        }
        // Spelled here independently of the table, from RFC 6749 §4.1.2.1 and §5.2,
        // RFC 7009 §2.2.1, RFC 9126 §2.3 and RFC 9449 §12.2: a typo in the table fails.
        for rfc in [
            "invalid_request",
            "unauthorized_client",
            "access_denied",
            "unsupported_response_type",
            "invalid_scope",
            "server_error",
            "temporarily_unavailable",
            "invalid_client",
            "invalid_grant",
            "unsupported_grant_type",
            "unsupported_token_type",
            "invalid_request_uri",
            "invalid_request_object",
            "invalid_dpop_proof",
            "use_dpop_nonce",
        ] {
            let code = OAuthErrorCode::parse(rfc);
            assert!(
                !matches!(code, OAuthErrorCode::Extension(_)),
                "{rfc} is not in the table"
            );
            assert_eq!(code.as_str(), rfc);
        }
        let unknown = OAuthErrorCode::parse("mh_consent_expired");
        assert_eq!(
            unknown,
            OAuthErrorCode::Extension("mh_consent_expired".into())
        );
        assert_eq!(unknown.as_str(), "mh_consent_expired");
    }

    #[test]
    fn sdk_codes_are_stable_snake_case_and_parse_back() {
        for code in [
            ErrorCode::PopupBlocked,
            ErrorCode::StateMismatch,
            ErrorCode::IssMismatch,
            ErrorCode::UnknownTransaction,
            ErrorCode::TokenExchangeFailed,
            ErrorCode::IdTokenInvalid,
            ErrorCode::OriginNotAllowed,
            ErrorCode::CsrfHeaderMissing,
            ErrorCode::InvalidVerifier,
            ErrorCode::UnknownProvider,
        ] {
            let text = code.as_str();
            assert!(text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert_eq!(ErrorCode::parse(text), code);
        }
        assert_eq!(ErrorCode::PopupClosed.as_str(), "popup_closed");
        assert_eq!(
            ErrorCode::parse("access_denied"),
            ErrorCode::OAuth(OAuthErrorCode::AccessDenied)
        );
    }

    #[test]
    fn a_description_that_echoes_a_credential_is_withheld() {
        let echoed = Error::oauth("invalid_grant", Some("code SplxlOBe is not valid"));
        let withheld = echoed.clone().withholding(&["", "SplxlOBe"]);
        assert_eq!(withheld.code(), echoed.code(), "the code stays");
        assert!(!withheld.description().contains("SplxlOBe"));
        assert!(withheld.description().contains("withheld"));
        let plain = Error::oauth("invalid_grant", Some("the code expired"));
        assert_eq!(plain.clone().withholding(&["SplxlOBe", ""]), plain);
        // What the Worker signs per request is in no `sent` list: any JWS in a description
        // is withheld as the description is read.
        let assertion = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJjIn0.c2ln";
        let echoed = Error::oauth(
            "invalid_client",
            Some(&format!("bad assertion {assertion}")),
        );
        assert_eq!(echoed.description(), WITHHELD);
        let named = Error::oauth(
            "invalid_client",
            Some("client_assertion must be a JWT (eyJ...)"),
        );
        assert_eq!(
            named.description(),
            "client_assertion must be a JWT (eyJ...)"
        );
    }

    #[test]
    fn provider_error_strings_outside_rfc_6749_are_not_passed_on() {
        let code_of = |error: &str| Error::oauth(error, Some("text")).code().clone();
        for bad in [
            "",
            "access_denied\nconsentry: callback provider=x http=200",
            "access_denied\r",
            "say \"hi\"",
            "back\\slash",
            "caf\u{e9}",
            &"a".repeat(MAX_ERROR_CODE_LEN + 1),
        ] {
            assert_eq!(code_of(bad), ErrorCode::InvalidProviderResponse, "{bad:?}");
            assert!(
                !Error::oauth(bad, Some("secret text"))
                    .description()
                    .contains("secret"),
                "the provider's text is dropped"
            );
        }
        // The whole NQSCHAR set is accepted, up to the length limit.
        for good in [
            "a",
            "mh:consent_expired",
            "x-y.z ~!#[]",
            &"a".repeat(MAX_ERROR_CODE_LEN),
        ] {
            assert_eq!(code_of(good).as_str(), good, "{good:?}");
        }
    }

    #[test]
    fn a_provider_error_spelling_an_sdk_code_is_not_read_as_ours() {
        for ours in [
            "transaction_replayed",
            "state_mismatch",
            "popup_closed",
            "storage_failed",
        ] {
            let error = Error::oauth(ours, Some("forged"));
            assert_eq!(error.code(), &ErrorCode::InvalidProviderResponse, "{ours}");
        }
        // RFC strings stay themselves, also where the SDK uses the same word elsewhere.
        assert_eq!(
            Error::oauth("consent_required", None).code(),
            &ErrorCode::OAuth(OAuthErrorCode::ConsentRequired)
        );
    }

    #[test]
    fn provider_descriptions_cannot_break_a_line_or_the_reading_order() {
        let error = Error::oauth(
            "access_denied",
            Some("line one\nconsentry: forged\r\u{2028}\u{202E}gnp.exe\u{7}  Zurück\u{200F}\u{FEFF}x "),
        );
        assert_eq!(
            error.description(),
            "line one consentry: forged   gnp.exe   Zurück  x"
        );
        assert!(!error.description().chars().any(char::is_control));
    }

    #[test]
    fn display_joins_code_and_description() {
        let error = Error::oauth("access_denied", Some("The user said no"));
        assert_eq!(error.to_string(), "access_denied: The user said no");
        assert_eq!(
            Error::oauth("server_error", None).to_string(),
            "server_error"
        );
    }

    #[test]
    fn a_key_not_known_yet_is_no_verdict_on_the_token() {
        for code in [
            "jwt_malformed",
            "jwt_alg_not_allowed",
            "jwt_crit_unsupported",
            "jwt_signature_invalid",
            "jwk_not_found",
        ] {
            assert!(ErrorCode::parse(code).is_jwt_rejection(), "{code}");
        }
        // Within the JWKS cooldown, or with the JWKS unreachable: refused now, judged later.
        for code in ["jwk_not_yet_known", "jwk_invalid", "provider_unreachable"] {
            assert!(!ErrorCode::parse(code).is_jwt_rejection(), "{code}");
        }
    }

    #[test]
    fn json_route_statuses_follow_who_is_at_fault() {
        let status = |code: &str| ErrorCode::parse(code).http_status();
        assert_eq!(status("session_required"), 401);
        assert_eq!(status("csrf_header_missing"), 403);
        assert_eq!(status("transaction_not_bound"), 403);
        assert_eq!(status("outcome_pending"), 404);
        assert_eq!(status("consent_not_found"), 404);
        assert_eq!(status("storage_failed"), 503);
        assert_eq!(status("rate_limited"), 429);
        assert_eq!(status("invalid_configuration"), 500);
        assert_eq!(status("record_unreadable"), 500);
        assert_eq!(status("provider_unreachable"), 502);
        assert_eq!(status("server_error"), 502);
        assert_eq!(status("invalid_verifier"), 400);
        assert_eq!(status("access_denied"), 400);
        assert_eq!(status("consent_required"), 403);
        assert_eq!(status("consent_expired"), 403);
        assert_eq!(status("consent_ambiguous"), 409);
        assert_eq!(status("unknown_provider"), 404);
        assert_eq!(status("invalid_api_path"), 400);
        assert_eq!(status("upstream_timeout"), 504);
        assert_eq!(status("upstream_redirect"), 502);
        assert_eq!(status("refresh_failed"), 502);
        assert_eq!(status("invalid_provider_response"), 502);
        assert_eq!(status("exchange_interrupted"), 500);
    }
}
