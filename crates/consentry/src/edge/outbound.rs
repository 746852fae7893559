//! Requests from the Worker to a provider: the core's [`HttpRequest`] sent with `fetch`,
//! redirects never followed (a token endpoint that redirects is an error, not a hop; a data
//! API's redirect is answered as `upstream_redirect`), one deadline for the whole exchange
//! including the body, and a cap on what is read, counted while the body streams in so that
//! an endless chunked answer is cut off at the cap rather than buffered.

use consentry_core::{Error, ErrorCode, HttpRequest};
use futures_util::StreamExt;
use worker::{Fetch, Headers, Method, Request, RequestInit, RequestRedirect};

/// The most of a provider's response body the Worker reads.
const MAX_BODY_BYTES: usize = 1 << 20;

/// A provider's answer, as the core's `process_*` functions take it.
pub(crate) struct ProviderResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// `DPoP-Nonce` (RFC 9449 §8, §9): the nonce the server wants in the next proof.
    pub dpop_nonce: Option<String>,
    /// `WWW-Authenticate`: a resource server's challenge (e.g. `use_dpop_nonce`).
    pub www_authenticate: Option<String>,
}

/// Sends `request` to the provider's `endpoint` (named in errors) within `timeout_ms`; no
/// answer is an error with `code` that says what happened, never what was sent.
pub(crate) async fn exchange(
    request: &HttpRequest,
    endpoint: &str,
    code: ErrorCode,
    timeout_ms: u32,
) -> Result<ProviderResponse, Error> {
    send(request, timeout_ms)
        .await
        .map_err(|why| Error::new(code, why.describe(endpoint, timeout_ms)))
}

/// Why a provider request produced no response to process.
pub(crate) enum Unanswered {
    /// The deadline passed (the endpoint hung, or was too slow).
    TimedOut,
    /// The request failed before an answer: DNS, TLS, connection.
    Failed,
    /// The body is larger than [`MAX_BODY_BYTES`]; reading stopped there.
    TooLarge,
}

impl Unanswered {
    /// A sentence for an error description: what happened, never what was sent.
    pub(crate) fn describe(&self, endpoint: &str, timeout_ms: u32) -> String {
        match self {
            Unanswered::TimedOut => {
                format!("the {endpoint} did not answer within {timeout_ms} ms")
            }
            Unanswered::Failed => format!("the {endpoint} could not be reached"),
            Unanswered::TooLarge => {
                format!("the {endpoint} answered with more than {MAX_BODY_BYTES} bytes")
            }
        }
    }
}

/// Sends `request` and reads the answer within `timeout_ms`. The request is sent once:
/// nothing here retries, so an authorization code is never presented twice. A redirect is
/// returned as it came (status and all), never followed.
pub(crate) async fn send(
    request: &HttpRequest,
    timeout_ms: u32,
) -> Result<ProviderResponse, Unanswered> {
    let headers = Headers::new();
    let failed = |_| Unanswered::Failed;
    for (name, value) in request.headers() {
        headers.set(name, value).map_err(failed)?;
    }
    let mut init = RequestInit::new();
    init.with_headers(headers)
        .with_redirect(RequestRedirect::Manual)
        .with_method(Method::from(request.method().to_owned()));
    if request.method() != "GET" {
        init.with_body(Some(request.body().into()));
    }
    let outgoing = Request::new_with_init(request.url(), &init).map_err(failed)?;
    let signal = worker::AbortSignal::from(web_sys::AbortSignal::timeout_with_u32(timeout_ms));
    let settle = |error: worker::Error| {
        if signal.aborted() {
            Unanswered::TimedOut
        } else {
            drop(error);
            Unanswered::Failed
        }
    };
    let mut response = Fetch::Request(outgoing)
        .send_with_signal(&signal)
        .await
        .map_err(settle)?;
    let declared_len = response
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|len| len.parse::<usize>().ok());
    if declared_len.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(Unanswered::TooLarge);
    }
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let content_type = header("Content-Type");
    let dpop_nonce = header("DPoP-Nonce");
    let www_authenticate = header("WWW-Authenticate");
    let status = response.status_code();
    let mut body = Vec::with_capacity(declared_len.unwrap_or(0));
    // A response without a body (a 204, a redirect) has no stream to read.
    if let Ok(mut stream) = response.stream() {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(settle)?;
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                // Dropping the stream stops the read; the deadline ends the connection.
                return Err(Unanswered::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
    }
    Ok(ProviderResponse {
        status,
        content_type,
        body,
        dpop_nonce,
        www_authenticate,
    })
}
