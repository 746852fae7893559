//! Using a consent: the Worker's `/api/{provider}/{path}` (DESIGN.md, "Using a consent").
//!
//! What can be decided without I/O is decided here: which of the user's consents a call
//! uses ([`choose_consent`]), whether a path and method may reach the provider's data API
//! ([`ApiCall::parse`], on decoded whole segments against `api_paths` and `api_methods`),
//! the upstream request itself ([`ApiCall::build_request`]: only the token, `Accept` and, for
//! writes, the body and its `Content-Type`), and when a token must be refreshed first
//! ([`needs_refresh`]).

use crate::consent_record::ConsentStatus;
use crate::error::{Error, ErrorCode, OAuthErrorCode, Result};
use crate::http::HttpRequest;
use crate::token_set::TokenSet;
use crate::url::EndpointUrl;

/// A token is refreshed before use when it lives less than this many seconds more.
pub const REFRESH_MARGIN_SECS: u64 = 30;

/// The request header that names the consent a call uses.
pub const CONSENT_HEADER: &str = "X-Consentry-Consent";

/// The longest path (after `/api/{provider}`) and query accepted.
pub const MAX_API_PATH_LEN: usize = 2048;

/// The largest request body passed on to a data API.
pub const MAX_API_BODY_BYTES: usize = 64 * 1024;

/// The methods a provider's `api_methods` may allow.
const API_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Whether a token that expires at `access_expires_at` (Unix seconds; `None` when the
/// provider did not say) must be refreshed before a call at `now`. A token of unknown
/// lifetime is used until the data API answers 401.
pub fn needs_refresh(access_expires_at: Option<u64>, now: u64) -> bool {
    access_expires_at.is_some_and(|expires_at| expires_at < now.saturating_add(REFRESH_MARGIN_SECS))
}

/// When an access token stops being usable: the earlier of what the token response's
/// `expires_in` says (from `now`) and, for a JWT access token, its verified `exp`; `None` when
/// neither says.
pub fn access_expiry(expires_in: Option<u64>, jwt_exp: Option<u64>, now: u64) -> Option<u64> {
    let from_response = expires_in.map(|seconds| now.saturating_add(seconds));
    match (from_response, jwt_exp) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One of the user's consents with the provider, as [`choose_consent`] weighs it.
#[derive(Debug, Clone, Copy)]
pub struct ConsentCandidate<'a> {
    /// The consent's id.
    pub id: &'a str,
    /// Where it stands now.
    pub status: ConsentStatus,
}

/// Which consent a call uses: the one `named` (the `X-Consentry-Consent` header), which
/// must be among the user's consents with this provider and active; else the user's one
/// active consent with it. Gives the chosen candidate's index.
///
/// Errors: a named consent that is not among them is `consent_not_found` (another user's id
/// included: nothing tells them apart); a named one revoked or lapsed is `consent_expired`;
/// none active is `consent_required`; several and none named is `consent_ambiguous`.
pub fn choose_consent(named: Option<&str>, candidates: &[ConsentCandidate<'_>]) -> Result<usize> {
    if let Some(named) = named {
        let index = candidates
            .iter()
            .position(|candidate| candidate.id == named)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::ConsentNotFound,
                    "no consent of yours with this provider has this id",
                )
            })?;
        return match candidates[index].status {
            ConsentStatus::Active => Ok(index),
            _ => Err(consent_expired()),
        };
    }
    let mut active = candidates
        .iter()
        .enumerate()
        .filter(|(_, candidate)| candidate.status == ConsentStatus::Active);
    match (active.next(), active.next()) {
        (Some((index, _)), None) => Ok(index),
        (None, _) => Err(Error::new(
            ErrorCode::OAuth(OAuthErrorCode::ConsentRequired),
            "connect this provider first: there is no active consent with it",
        )),
        (Some(_), Some(_)) => Err(Error::new(
            ErrorCode::ConsentAmbiguous,
            format!("several consents with this provider are active: name one in {CONSENT_HEADER}"),
        )),
    }
}

/// The error of a consent that was revoked, lapsed, or whose refresh the provider refused.
pub fn consent_expired() -> Error {
    Error::new(
        ErrorCode::ConsentExpired,
        "this consent is no longer valid: connect the provider again",
    )
}

/// A data-API call that passed the provider's allow-lists: its method, its path as decoded
/// segments, and its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCall {
    method: &'static str,
    segments: Vec<String>,
    query: Option<String>,
}

impl ApiCall {
    /// Checks a call's `method`, `raw_path` (what follows `/api/{provider}`, still
    /// percent-encoded, starting with `/`) and `raw_query` (without `?`) against the
    /// provider's `api_methods` and `api_paths`.
    ///
    /// The path is decoded segment by segment and refused, as `invalid_api_path`, when a
    /// segment is empty (`//`), `.` or `..` (also as `%2e%2e`), or decodes to a `/`, `\`,
    /// `@`, `:` (a scheme or an authority), a control character or invalid UTF-8; then it
    /// must lie under an `api_paths` entry in whole segments. Nothing of the raw path goes
    /// upstream: the URL is rebuilt from the decoded segments, each re-encoded.
    pub fn parse(
        provider: &crate::provider::ProviderConfig,
        method: &str,
        raw_path: &str,
        raw_query: Option<&str>,
    ) -> Result<ApiCall> {
        let method = API_METHODS
            .iter()
            .find(|known| **known == method)
            .copied()
            .filter(|method| provider.allows_api_method(method))
            .ok_or_else(|| {
                invalid_api_path("this method is not allowed for this provider's API")
            })?;
        if raw_path.len() > MAX_API_PATH_LEN {
            return Err(invalid_api_path("the path is too long"));
        }
        let segments = decode_segments(raw_path)?;
        if !provider.allows_api_segments(&segments) {
            return Err(invalid_api_path(
                "the path is not under any of this provider's api_paths",
            ));
        }
        let query = match raw_query.filter(|query| !query.is_empty()) {
            None => None,
            Some(query) if query.len() <= MAX_API_PATH_LEN && is_query_text(query) => {
                Some(query.to_owned())
            }
            Some(_) => return Err(invalid_api_path("the query is malformed or too long")),
        };
        Ok(ApiCall {
            method,
            segments,
            query,
        })
    }

    /// The method.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The path's decoded segments.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The upstream URL: `base`, then each segment re-encoded, then the query.
    pub fn upstream_url(&self, base: &EndpointUrl) -> String {
        let mut url = base.as_str().trim_end_matches('/').to_owned();
        for segment in &self.segments {
            url.push('/');
            encode_segment(segment, &mut url);
        }
        if let Some(query) = &self.query {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// The request to the data API: the consent's token as `Authorization: Bearer <token>`,
    /// or for a DPoP-bound grant `Authorization: DPoP <token>` with `dpop_proof` (signed over
    /// this method and URL, with `ath`; RFC 9449 §7), `Accept`, and for writes the body with
    /// its `Content-Type`. Nothing else of the browser's request. A DPoP token without a
    /// proof, or a token of another type, is `invalid_configuration`, never sent.
    pub fn build_request(
        &self,
        base: &EndpointUrl,
        tokens: &TokenSet,
        accept: Option<&str>,
        body: Option<(&str, String)>,
        dpop_proof: Option<&str>,
    ) -> Result<HttpRequest> {
        let scheme = match (tokens.token_type(), dpop_proof) {
            (kind, _) if kind.eq_ignore_ascii_case("Bearer") => "Bearer",
            (kind, Some(_)) if kind.eq_ignore_ascii_case("DPoP") => "DPoP",
            _ => {
                return Err(Error::new(
                    ErrorCode::InvalidConfiguration,
                    "this consent's access token needs a DPoP proof or is of an unknown type",
                ))
            }
        };
        let accept = accept
            .filter(|accept| accept.len() <= 256 && is_header_text(accept))
            .unwrap_or("application/json");
        let mut request = HttpRequest::new(self.method, self.upstream_url(base))
            .with_header(
                "Authorization",
                format!("{scheme} {}", tokens.access_token().secret()),
            )
            .with_header("Accept", accept);
        if scheme == "DPoP" {
            request = request.with_header("DPoP", dpop_proof.unwrap_or_default());
        }
        if let Some((content_type, body)) = body {
            request = request
                .with_header("Content-Type", content_type)
                .with_body(body);
        }
        Ok(request)
    }
}

/// Checks an `api_paths` entry from the configuration: `/` and one or more segments, by
/// the same rules as a call's path. Gives the segments.
pub(crate) fn allow_listed_segments(path: &str) -> Result<Vec<String>> {
    let configuration = |_| {
        Error::new(
            ErrorCode::InvalidConfiguration,
            "api_paths entries must be paths like /accounts: / and plain segments, no . or ..",
        )
    };
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    decode_segments(trimmed).map_err(configuration)
}

/// Checks an `api_methods` entry from the configuration.
pub(crate) fn allow_listed_method(method: &str) -> Result<&'static str> {
    let upper = method.to_ascii_uppercase();
    API_METHODS
        .iter()
        .find(|known| **known == upper)
        .copied()
        .ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidConfiguration,
                "api_methods entries must be GET, POST, PUT, PATCH or DELETE",
            )
        })
}

fn invalid_api_path(why: &str) -> Error {
    Error::new(ErrorCode::InvalidApiPath, why)
}

fn decode_segments(raw_path: &str) -> Result<Vec<String>> {
    let rest = raw_path
        .strip_prefix('/')
        .ok_or_else(|| invalid_api_path("the path must start with /"))?;
    if rest.is_empty() {
        return Err(invalid_api_path("the path names nothing"));
    }
    rest.split('/').map(decode_segment).collect()
}

fn decode_segment(raw: &str) -> Result<String> {
    if raw.is_empty() {
        return Err(invalid_api_path("the path has an empty segment (//)"));
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| invalid_api_path("the path has a malformed %-escape"))?;
                decoded.push(hex);
                i += 3;
            }
            byte => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    let segment = String::from_utf8(decoded)
        .map_err(|_| invalid_api_path("the path does not decode to UTF-8"))?;
    if segment == "." || segment == ".." {
        return Err(invalid_api_path("the path has a . or .. segment"));
    }
    if segment
        .chars()
        .any(|c| matches!(c, '/' | '\\' | '@' | ':') || c.is_control())
    {
        return Err(invalid_api_path(
            "the path has a /, \\, @, : or control character inside a segment",
        ));
    }
    Ok(segment)
}

/// Percent-encodes a decoded segment for a URL path: unreserved characters and the
/// sub-delimiters stay, everything else (`%`, `?`, `#`, spaces, non-ASCII) is escaped.
pub(crate) fn encode_segment(segment: &str, out: &mut String) {
    for byte in segment.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// A query as a URL carries it: printable ASCII without spaces or `#`.
fn is_query_text(query: &str) -> bool {
    query.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

fn is_header_text(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_expires_at_the_earlier_of_expires_in_and_its_exp() {
        assert_eq!(
            access_expiry(Some(3600), Some(1_000_500), 1_000_000),
            Some(1_000_500)
        );
        assert_eq!(
            access_expiry(Some(60), Some(1_000_500), 1_000_000),
            Some(1_000_060)
        );
        assert_eq!(access_expiry(None, Some(7), 1_000_000), Some(7));
        assert_eq!(access_expiry(Some(60), None, 1_000_000), Some(1_000_060));
        assert_eq!(access_expiry(None, None, 1_000_000), None);
    }
    use crate::provider::ProviderConfig;
    use crate::scope::Scopes;
    use crate::secret::AccessToken;

    fn provider() -> ProviderConfig {
        ProviderConfig::parse_list(
            r#"[{"id":"bank","profile":"generic","issuer":"https://bank.example","client_id":"c",
                 "api_base_url":"https://api.bank.example/data/v1/","api_paths":["/accounts","/me"]}]"#,
        )
        .expect("valid")
        .remove(0)
    }

    fn code_of(method: &str, path: &str) -> Option<ErrorCode> {
        ApiCall::parse(&provider(), method, path, None)
            .err()
            .map(|error| error.code().clone())
    }

    #[test]
    fn allow_listed_paths_are_rebuilt_from_decoded_segments() {
        let call = ApiCall::parse(
            &provider(),
            "GET",
            "/accounts/acc%201/balance",
            Some("from=2026-01-01&to=2026-02-01"),
        )
        .expect("allowed");
        assert_eq!(call.segments(), ["accounts", "acc 1", "balance"]);
        let base = provider().api_base_url().expect("configured").clone();
        assert_eq!(
            call.upstream_url(&base),
            "https://api.bank.example/data/v1/accounts/acc%201/balance?from=2026-01-01&to=2026-02-01"
        );
        assert!(ApiCall::parse(&provider(), "GET", "/me", None).is_ok());
    }

    #[test]
    fn traversal_encoded_separators_authorities_and_schemes_are_refused() {
        for path in [
            "/accounts/../admin",
            "/accounts/%2e%2e/admin",
            "/accounts/%2E%2E",
            "/accounts/.",
            "/accounts%2fadmin",
            "/accounts/a%2Fb",
            "/accounts/a%5cb",
            "/accounts/a\\b",
            "/accounts/@evil",
            "/@evil/accounts",
            "//evil/accounts",
            "/accounts//evil",
            "/accounts/https://evil",
            "/https://evil",
            "/accounts/%00",
            "/accounts/%zz",
            "/accounts/%c3%28",
            "/",
            "accounts",
            "/accountsx",
            "/admin",
        ] {
            assert_eq!(
                code_of("GET", path),
                Some(ErrorCode::InvalidApiPath),
                "{path}"
            );
        }
        let long = format!("/accounts/{}", "a".repeat(MAX_API_PATH_LEN));
        assert_eq!(code_of("GET", &long), Some(ErrorCode::InvalidApiPath));
    }

    #[test]
    fn methods_outside_api_methods_are_refused() {
        for method in ["POST", "DELETE", "get", "CONNECT", "TRACE"] {
            assert_eq!(
                code_of(method, "/accounts"),
                Some(ErrorCode::InvalidApiPath),
                "{method}"
            );
        }
    }

    #[test]
    fn a_query_with_a_fragment_or_spaces_is_refused() {
        for query in ["a=1#x", "a=1 2", "a=\u{7f}"] {
            let refused = ApiCall::parse(&provider(), "GET", "/accounts", Some(query));
            assert!(refused.is_err(), "{query:?}");
        }
    }

    #[test]
    fn the_upstream_request_carries_the_token_and_nothing_of_the_browser() {
        let tokens = TokenSet::new(
            AccessToken::new("at-123"),
            "Bearer",
            None,
            Scopes::parse("accounts").expect("valid"),
        );
        let call = ApiCall::parse(&provider(), "GET", "/accounts", None).expect("allowed");
        let base = provider().api_base_url().expect("configured").clone();
        let request = call
            .build_request(
                &base,
                &tokens,
                Some("application/json\r\nX-Evil: 1"),
                None,
                None,
            )
            .expect("a bearer token");
        assert_eq!(request.method(), "GET");
        assert_eq!(request.header("Authorization"), Some("Bearer at-123"));
        assert_eq!(
            request.header("Accept"),
            Some("application/json"),
            "a header injection falls back to the default"
        );
        let names: Vec<&str> = request.headers().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["Authorization", "Accept"]);
        assert!(!format!("{request:?}").contains("at-123"));
        let bound = TokenSet::new(
            AccessToken::new("at-9"),
            "DPoP",
            None,
            Scopes::parse("accounts").expect("valid"),
        );
        let refused = call
            .build_request(&base, &bound, None, None, None)
            .map(|_| ());
        assert_eq!(
            refused.map_err(|error| error.code().clone()),
            Err(ErrorCode::InvalidConfiguration),
            "a DPoP-bound token is never sent without its proof"
        );
        let proved = call
            .build_request(&base, &bound, None, None, Some("ey.proof.sig"))
            .expect("with a proof");
        assert_eq!(proved.header("Authorization"), Some("DPoP at-9"));
        assert_eq!(proved.header("DPoP"), Some("ey.proof.sig"));
    }

    #[test]
    fn refresh_happens_inside_the_margin_and_never_for_unknown_lifetimes() {
        assert!(needs_refresh(Some(1_000), 1_000));
        assert!(needs_refresh(Some(1_029), 1_000));
        assert!(!needs_refresh(Some(1_030), 1_000));
        assert!(!needs_refresh(None, u64::MAX));
    }

    #[test]
    fn consent_choice_follows_the_contract() {
        let active = |id| ConsentCandidate {
            id,
            status: ConsentStatus::Active,
        };
        let expired = |id| ConsentCandidate {
            id,
            status: ConsentStatus::Expired,
        };
        let revoked = |id| ConsentCandidate {
            id,
            status: ConsentStatus::Revoked,
        };
        let code = |named, list: &[ConsentCandidate<'_>]| {
            choose_consent(named, list).map_err(|e| e.code().as_str().to_owned())
        };
        assert_eq!(code(None, &[revoked("a"), active("b")]), Ok(1));
        assert_eq!(code(None, &[]), Err("consent_required".into()));
        assert_eq!(
            code(None, &[expired("a"), revoked("b")]),
            Err("consent_required".into())
        );
        assert_eq!(
            code(None, &[active("a"), active("b")]),
            Err("consent_ambiguous".into())
        );
        assert_eq!(code(Some("b"), &[active("a"), active("b")]), Ok(1));
        assert_eq!(
            code(Some("a"), &[expired("a")]),
            Err("consent_expired".into())
        );
        assert_eq!(
            code(Some("a"), &[revoked("a")]),
            Err("consent_expired".into())
        );
        assert_eq!(
            code(Some("zz"), &[active("a")]),
            Err("consent_not_found".into())
        );
    }
}
