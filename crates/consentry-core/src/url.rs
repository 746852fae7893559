//! URLs the protocol trusts: issuers, endpoints and the redirect URI.
//!
//! Only `https` is accepted, or `http` on a loopback host for local development
//! ([RFC 8252 §8.3](https://www.rfc-editor.org/rfc/rfc8252#section-8.3)); never a fragment,
//! never user-info. Issuers are compared as exact strings, as RFC 8414 §3.3 and RFC 9207 say.

use crate::encoding::form_encode;
use crate::error::{Error, ErrorCode, Result};

/// The host of a URL's authority (`host`, `host:port`, `[v6]:port`), without the port.
fn host_of(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    }
}

/// Whether a host is a loopback one, where plain http and demo shortcuts are allowed.
fn is_loopback_host(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

fn check_url(url: &str, what: &str) -> Result<()> {
    let invalid = |why: &str| Err(Error::new(ErrorCode::InvalidUrl, format!("{what} {why}")));
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if !is_loopback_host(host_of(authority)) {
            return invalid("must use https (http is allowed only on a loopback host)");
        }
        rest
    } else {
        return invalid("must be an absolute https URL");
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || authority.starts_with(':') {
        return invalid("has no host");
    }
    if authority.contains('@') {
        return invalid("must not contain user information");
    }
    if url.contains('#') {
        return invalid("must not contain a fragment");
    }
    if url
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b >= 0x80)
    {
        return invalid("must not contain spaces, control or non-ASCII characters");
    }
    Ok(())
}

/// An authorization server's issuer identifier ([RFC 8414 §2](https://www.rfc-editor.org/rfc/rfc8414#section-2)):
/// https, no query, no fragment, compared as an exact string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerUrl(String);

impl IssuerUrl {
    /// Accepts an issuer identifier.
    pub fn parse(issuer: &str) -> Result<Self> {
        check_url(issuer, "issuer")?;
        if issuer.contains('?') {
            return Err(Error::new(
                ErrorCode::InvalidUrl,
                "issuer must not contain a query",
            ));
        }
        Ok(IssuerUrl(issuer.to_owned()))
    }

    /// The issuer string, exactly as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The discovery document's URL: `/.well-known/openid-configuration` appended to the
    /// issuer ([OpenID Connect Discovery §4](https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfig)).
    pub fn openid_configuration_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.0.trim_end_matches('/')
        )
    }

    /// The issuer's origin: scheme, host and port, without its path (Moneyhub's identity
    /// service serves `/users` there, beside the issuer's `/oidc`).
    pub fn origin(&self) -> &str {
        self.split_origin().0
    }

    fn split_origin(&self) -> (&str, &str) {
        let scheme_end = self.0.find("://").map_or(0, |i| i + 3);
        let path_start = self.0[scheme_end..]
            .find('/')
            .map_or(self.0.len(), |i| scheme_end + i);
        self.0.split_at(path_start)
    }

    /// The RFC 8414 metadata URL: the well-known segment goes between host and path
    /// ([RFC 8414 §3.1](https://www.rfc-editor.org/rfc/rfc8414#section-3.1)).
    pub fn oauth_authorization_server_url(&self) -> String {
        let (origin, path) = self.split_origin();
        format!(
            "{origin}/.well-known/oauth-authorization-server{}",
            path.trim_end_matches('/')
        )
    }
}

/// An endpoint of the authorization server (authorization, token, PAR, JWKS, revocation, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    /// Accepts an endpoint URL (it may already carry a query).
    pub fn parse(url: &str) -> Result<Self> {
        check_url(url, "endpoint")?;
        Ok(EndpointUrl(url.to_owned()))
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This URL with `pairs` appended to its query, form-encoded.
    pub fn with_query<'a>(&self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        let query = form_encode(pairs);
        let separator = match self.0.contains('?') {
            true if self.0.ends_with('?') || self.0.ends_with('&') => "",
            true => "&",
            false => "?",
        };
        format!("{}{separator}{query}", self.0)
    }
}

/// The client's `redirect_uri` ([RFC 6749 §3.1.2](https://www.rfc-editor.org/rfc/rfc6749#section-3.1.2)):
/// an absolute URL with no fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUrl(String);

impl RedirectUrl {
    /// Accepts a redirect URI.
    pub fn parse(url: &str) -> Result<Self> {
        check_url(url, "redirect_uri")?;
        Ok(RedirectUrl(url.to_owned()))
    }

    /// The URI as text, sent byte for byte in the authorization and token requests.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A web origin ([RFC 6454](https://www.rfc-editor.org/rfc/rfc6454)): `scheme://host[:port]`,
/// as browsers send it in `Origin` and as `postMessage` targets it. Lower-case, no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebOrigin(String);

impl WebOrigin {
    /// Accepts an origin: https (or http on a loopback host), with no path, query or
    /// trailing slash. Case is folded, as browsers serialize origins in lower case.
    pub fn parse(origin: &str) -> Result<Self> {
        let origin = origin.trim().to_ascii_lowercase();
        check_url(&origin, "an origin")?;
        let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        if authority.contains(['/', '?']) {
            return Err(Error::new(
                ErrorCode::InvalidUrl,
                "an origin is scheme://host[:port], with no path or trailing slash",
            ));
        }
        Ok(WebOrigin(origin))
    }

    /// The origin as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the host is a loopback one (`localhost`, `127.0.0.1`, `[::1]`): a developer's
    /// machine, where demo shortcuts are allowed.
    pub fn is_loopback(&self) -> bool {
        let authority = self.0.split_once("://").map_or("", |(_, rest)| rest);
        is_loopback_host(host_of(authority))
    }
}

/// `CONSENTRY_ALLOWED_ORIGINS`: the SPA origins allowed to start flows and receive outcomes.
/// Membership is exact string equality with the browser's `Origin`.
#[derive(Debug, Clone)]
pub struct AllowedOrigins(Vec<WebOrigin>);

impl AllowedOrigins {
    /// Parses the comma-separated list; it must name at least one origin.
    pub fn parse(list: &str) -> Result<Self> {
        let origins = list
            .split(',')
            .filter(|origin| !origin.trim().is_empty())
            .map(WebOrigin::parse)
            .collect::<Result<Vec<_>>>()
            .map_err(|error| {
                Error::new(
                    ErrorCode::InvalidConfiguration,
                    format!("CONSENTRY_ALLOWED_ORIGINS: {}", error.description()),
                )
            })?;
        if origins.is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidConfiguration,
                "CONSENTRY_ALLOWED_ORIGINS names no origin",
            ));
        }
        Ok(AllowedOrigins(origins))
    }

    /// The allowed origin equal to a request's `Origin` header, or
    /// [`ErrorCode::OriginNotAllowed`] (also when the header is absent or `null`).
    pub fn check(&self, origin: Option<&str>) -> Result<&WebOrigin> {
        let origin = origin.ok_or_else(|| {
            Error::new(
                ErrorCode::OriginNotAllowed,
                "the request has no Origin header",
            )
        })?;
        self.0
            .iter()
            .find(|allowed| allowed.as_str() == origin)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::OriginNotAllowed,
                    "the request's Origin is not in CONSENTRY_ALLOWED_ORIGINS",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins_are_recognised() {
        for local in [
            "http://localhost:8787",
            "http://127.0.0.1",
            "http://[::1]:9000",
            "https://localhost",
        ] {
            assert!(
                WebOrigin::parse(local).expect(local).is_loopback(),
                "{local}"
            );
        }
        for public in [
            "https://app.example",
            "https://localhost.example",
            "https://127.0.0.1.example",
        ] {
            assert!(
                !WebOrigin::parse(public).expect(public).is_loopback(),
                "{public}"
            );
        }
    }

    #[test]
    fn origins_are_exact_and_pathless() {
        let allowed =
            AllowedOrigins::parse("https://App.example, http://localhost:8787").expect("valid");
        assert_eq!(
            allowed
                .check(Some("https://app.example"))
                .map(WebOrigin::as_str),
            Ok("https://app.example")
        );
        for refused in [
            None,
            Some("null"),
            Some("https://app.example.evil"),
            Some("https://app.example:443"),
            Some("http://app.example"),
        ] {
            let code = allowed.check(refused).map_err(|e| e.code().clone());
            assert_eq!(code.err(), Some(ErrorCode::OriginNotAllowed), "{refused:?}");
        }
        for bad in [
            "",
            " , ",
            "https://app.example/",
            "https://app.example/path",
            "http://app.example",
        ] {
            let code = AllowedOrigins::parse(bad)
                .map(|_| ())
                .map_err(|e| e.code().clone());
            assert_eq!(code, Err(ErrorCode::InvalidConfiguration), "{bad:?}");
        }
    }

    #[test]
    fn https_and_loopback_http_are_accepted() {
        for good in [
            "https://bank.example",
            "https://bank.example:8443/oidc",
            "http://localhost:3000",
            "http://127.0.0.1:9000/op",
            "http://[::1]:9000",
        ] {
            assert!(IssuerUrl::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn unsafe_urls_are_rejected() {
        for bad in [
            "http://bank.example",
            "ftp://bank.example",
            "https://",
            "https://user:pw@bank.example",
            "https://bank.example/#frag",
            "https://bank example",
            "bank.example",
            "http://localhost.evil.example",
        ] {
            let code = EndpointUrl::parse(bad).map_err(|e| e.code().clone());
            assert_eq!(code, Err(ErrorCode::InvalidUrl), "{bad}");
        }
        assert!(IssuerUrl::parse("https://bank.example?tenant=1").is_err());
        assert!(EndpointUrl::parse("https://bank.example/auth?tenant=1").is_ok());
    }

    #[test]
    fn query_is_appended_to_existing_query() {
        let plain = EndpointUrl::parse("https://bank.example/auth").expect("valid");
        assert_eq!(
            plain.with_query([("a", "1 2")]),
            "https://bank.example/auth?a=1+2"
        );
        let with_query = EndpointUrl::parse("https://bank.example/auth?t=x").expect("valid");
        assert_eq!(
            with_query.with_query([("a", "1")]),
            "https://bank.example/auth?t=x&a=1"
        );
    }

    #[test]
    fn well_known_urls() {
        let issuer = IssuerUrl::parse("https://bank.example/tenant/").expect("valid");
        assert_eq!(
            issuer.openid_configuration_url(),
            "https://bank.example/tenant/.well-known/openid-configuration"
        );
        assert_eq!(
            issuer.oauth_authorization_server_url(),
            "https://bank.example/.well-known/oauth-authorization-server/tenant"
        );
        let root = IssuerUrl::parse("https://bank.example").expect("valid");
        assert_eq!(
            root.oauth_authorization_server_url(),
            "https://bank.example/.well-known/oauth-authorization-server"
        );
    }
}
