//! The HTTP requests the core asks its adapter to send, as plain values.
//!
//! The core never performs I/O: it returns an [`HttpRequest`] and later processes the
//! status, headers and body the adapter got back. The adapter must not follow redirects
//! from token, PAR or revocation endpoints, and must apply a timeout.

use std::fmt;

/// An HTTP request to send. Its `Debug` shows the method, URL and header names only: header
/// values and the body may hold credentials.
#[derive(Clone)]
pub struct HttpRequest {
    method: &'static str,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl HttpRequest {
    /// A request with no headers and no body yet (a data-API call).
    pub fn new(method: &'static str, url: impl Into<String>) -> Self {
        HttpRequest {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// This request with `body`.
    pub fn with_body(mut self, body: String) -> Self {
        self.body = body;
        self
    }

    /// A `POST` of an `application/x-www-form-urlencoded` body that expects JSON back.
    pub fn form_post(url: impl Into<String>, body: String) -> Self {
        HttpRequest {
            method: "POST",
            url: url.into(),
            headers: vec![
                ("Content-Type", "application/x-www-form-urlencoded".into()),
                ("Accept", "application/json".into()),
            ],
            body,
        }
    }

    /// A `GET` that expects JSON back (discovery, JWKS, data APIs).
    pub fn get_json(url: impl Into<String>) -> Self {
        HttpRequest {
            method: "GET",
            url: url.into(),
            headers: vec![("Accept", "application/json".into())],
            body: String::new(),
        }
    }

    /// This request with one more header (e.g. `DPoP`).
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The method.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The absolute URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The headers, in order. Values may be credentials: never log them.
    pub fn headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }

    /// The value of the first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body. It may hold credentials: never log it.
    pub fn body(&self) -> &str {
        &self.body
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| *name).collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &names)
            .field(
                "body",
                &format_args!("[{} bytes redacted]", self.body.len()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_header_values_and_body() {
        let request = HttpRequest::form_post("https://bank.example/token", "code=abc".into())
            .with_header("Authorization", "Basic c2VjcmV0");
        let debug = format!("{request:?}");
        assert!(debug.contains("Authorization"));
        assert!(!debug.contains("c2VjcmV0"));
        assert!(!debug.contains("code=abc"));
        assert_eq!(request.header("authorization"), Some("Basic c2VjcmV0"));
    }
}
