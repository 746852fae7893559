//! Responses the Worker sends to the browser: the outcome page, JSON in the one error shape
//! `{code, description}`, and the start redirect. None is ever cached; none carries a code,
//! a verifier or a token.

use consentry_core::outcome_page::OUTCOME_PAGE_HEADERS;
use consentry_core::{Error, OutcomePage, WebOrigin};
use worker::{Headers, Response, Result};

/// A JSON body with `status`; CORS headers for `cors_origin` when the caller is an allowed
/// cross-origin SPA.
pub(crate) fn json(status: u16, body: &str, cors_origin: Option<&WebOrigin>) -> Result<Response> {
    let headers = api_headers(cors_origin)?;
    headers.set("Content-Type", "application/json")?;
    Ok(Response::ok(body)?
        .with_status(status)
        .with_headers(headers))
}

/// An error on a JSON route, in the one error shape.
pub(crate) fn json_error(error: &Error, cors_origin: Option<&WebOrigin>) -> Result<Response> {
    json_error_with_status(error, error.code().http_status(), cors_origin)
}

/// An error on a JSON route with a status other than its code's own.
pub(crate) fn json_error_with_status(
    error: &Error,
    status: u16,
    cors_origin: Option<&WebOrigin>,
) -> Result<Response> {
    let body = serde_json::json!({
        "code": error.code().as_str(),
        "description": error.description(),
    });
    let response = json(status, &body.to_string(), cors_origin)?;
    retry_after(response, status)
}

/// A 429 says when to try again; so does a 503 (storage unavailable).
fn retry_after(response: Response, status: u16) -> Result<Response> {
    if matches!(status, 429 | 503) {
        response
            .headers()
            .set("Retry-After", super::limits::RETRY_AFTER_SECS)?;
    }
    Ok(response)
}

/// The header that marks an `/api` answer as the data API's own (status and body passed
/// through), as against one of the Worker's `{code, description}` errors.
pub(crate) const UPSTREAM_HEADER: &str = "X-Consentry-Upstream";

/// A data API's answer, passed through: its status, `Content-Type` and body, and nothing
/// else of its headers (no `Set-Cookie`); never cached.
pub(crate) fn upstream(
    status: u16,
    content_type: Option<&str>,
    body: Vec<u8>,
    cors_origin: Option<&WebOrigin>,
) -> Result<Response> {
    let headers = api_headers(cors_origin)?;
    if let Some(content_type) = content_type {
        headers.set("Content-Type", content_type)?;
    }
    headers.set(UPSTREAM_HEADER, "1")?;
    if cors_origin.is_some() {
        headers.set("Access-Control-Expose-Headers", UPSTREAM_HEADER)?;
    }
    Ok(Response::from_bytes(body)?
        .with_status(status)
        .with_headers(headers))
}

/// An empty `204`, with `Set-Cookie` when given.
pub(crate) fn no_content(
    set_cookie: Option<&str>,
    cors_origin: Option<&WebOrigin>,
) -> Result<Response> {
    let headers = api_headers(cors_origin)?;
    if let Some(cookie) = set_cookie {
        headers.append("Set-Cookie", cookie)?;
    }
    Ok(Response::empty()?.with_status(204).with_headers(headers))
}

fn api_headers(cors_origin: Option<&WebOrigin>) -> Result<Headers> {
    let headers = Headers::new();
    headers.set("Cache-Control", "no-store")?;
    headers.set("X-Content-Type-Options", "nosniff")?;
    if let Some(origin) = cors_origin {
        headers.set("Access-Control-Allow-Origin", origin.as_str())?;
        headers.set("Access-Control-Allow-Credentials", "true")?;
        headers.set("Vary", "Origin")?;
    }
    Ok(headers)
}

/// The answer to a CORS preflight from an allowed origin.
pub(crate) fn preflight(origin: &WebOrigin) -> Result<Response> {
    let headers = Headers::new();
    headers.set("Access-Control-Allow-Origin", origin.as_str())?;
    headers.set("Access-Control-Allow-Credentials", "true")?;
    headers.set(
        "Access-Control-Allow-Methods",
        "GET, POST, PUT, PATCH, DELETE",
    )?;
    headers.set(
        "Access-Control-Allow-Headers",
        "X-Consentry, Authorization, X-Consentry-Consent, Content-Type",
    )?;
    headers.set("Access-Control-Max-Age", "600")?;
    headers.set("Vary", "Origin")?;
    Ok(Response::empty()?.with_status(204).with_headers(headers))
}

/// An outcome page with its strict headers, and each `Set-Cookie` given.
pub(crate) fn page(page: &OutcomePage, set_cookies: &[String]) -> Result<Response> {
    let headers = Headers::new();
    for (name, value) in OUTCOME_PAGE_HEADERS {
        headers.set(name, value)?;
    }
    headers.set(
        "Content-Security-Policy",
        &OutcomePage::content_security_policy(),
    )?;
    for cookie in set_cookies {
        headers.append("Set-Cookie", cookie)?;
    }
    let response = Response::ok(page.html())?
        .with_status(page.status())
        .with_headers(headers);
    retry_after(response, page.status())
}

/// `303 See Other` to the provider, setting the flow's binding cookie.
pub(crate) fn see_other(location: &str, set_cookie: &str) -> Result<Response> {
    let headers = Headers::new();
    headers.set("Location", location)?;
    headers.set("Cache-Control", "no-store")?;
    headers.set("Referrer-Policy", "no-referrer")?;
    headers.append("Set-Cookie", set_cookie)?;
    Ok(Response::empty()?.with_status(303).with_headers(headers))
}
