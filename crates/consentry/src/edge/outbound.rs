//! Requests from the Worker to a provider: the core's [`HttpRequest`] sent with `fetch`,
//! redirects never followed (a token endpoint that redirects is an error, not a hop; a data
//! API's redirect is answered as `upstream_redirect`), one deadline for the whole exchange
//! including the body, and a cap on what is read, counted while the body streams in so that
//! an endless chunked answer is cut off at the cap rather than buffered.

use consentry_core::{Error, ErrorCode, HttpRequest};
use js_sys::futures::JsFuture;
use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{
    AbortSignal, Headers, ReadableStreamDefaultReader, Request, RequestInit, RequestRedirect,
    Response, WorkerGlobalScope,
};

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
///
/// Built on web-sys's `fetch` and stream reader rather than worker's `Fetch` and
/// `Response::stream`: those convert the request's `cf` options with serde_wasm_bindgen and
/// read through wasm-streams' adapters, which together weigh more than this function.
pub(crate) async fn send(
    request: &HttpRequest,
    timeout_ms: u32,
) -> Result<ProviderResponse, Unanswered> {
    let failed = |_| Unanswered::Failed;
    let headers = Headers::new().map_err(failed)?;
    for (name, value) in request.headers() {
        headers.set(name, value).map_err(failed)?;
    }
    let signal = AbortSignal::timeout_with_u32(timeout_ms);
    let init = RequestInit::new();
    init.set_method(request.method());
    init.set_headers(&headers);
    init.set_redirect(RequestRedirect::Manual);
    init.set_signal(Some(&signal));
    if request.method() != "GET" {
        init.set_body(&JsValue::from_str(request.body()));
    }
    let outgoing = Request::new_with_str_and_init(request.url(), &init).map_err(failed)?;
    let settle = |_| match signal.aborted() {
        true => Unanswered::TimedOut,
        false => Unanswered::Failed,
    };
    let global: WorkerGlobalScope = js_sys::global().unchecked_into();
    let response: Response = JsFuture::from(global.fetch_with_request(&outgoing))
        .await
        .map_err(settle)?
        .unchecked_into();
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let declared_len = header("Content-Length").and_then(|len| len.parse::<usize>().ok());
    if declared_len.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(Unanswered::TooLarge);
    }
    let mut body = Vec::with_capacity(declared_len.unwrap_or(0));
    // A response without a body (a 204, a redirect) has no stream to read.
    if let Some(stream) = response.body() {
        let reader: ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
        loop {
            let chunk = JsFuture::from(reader.read()).await.map_err(settle)?;
            let done = Reflect::get(&chunk, &"done".into()).map_err(failed)?;
            if done.is_truthy() {
                break;
            }
            let chunk: Uint8Array = Reflect::get(&chunk, &"value".into())
                .map_err(failed)?
                .dyn_into()
                .map_err(failed)?;
            if body.len() + chunk.length() as usize > MAX_BODY_BYTES {
                // Cancelling stops the read; the deadline ends the connection.
                let _ = reader.cancel();
                return Err(Unanswered::TooLarge);
            }
            body.extend_from_slice(&chunk.to_vec());
        }
    }
    Ok(ProviderResponse {
        status: response.status(),
        content_type: header("Content-Type"),
        body,
        dpop_nonce: header("DPoP-Nonce"),
        www_authenticate: header("WWW-Authenticate"),
    })
}
