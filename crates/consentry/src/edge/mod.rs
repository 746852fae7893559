//! The Cloudflare Worker adapter (workers-rs). Routes follow the wire contract in
//! `shared/DESIGN.md`; every protocol decision is delegated to `consentry_core`, every
//! secret stays between this Worker and the provider.
//!
//! * `POST /auth/start` ([`start`]), `GET|POST /auth/callback/{provider}` ([`callback`]):
//!   the popup's two pages. Each provider has its own redirect URI (against mix-up).
//! * `GET /auth/outcome`, `GET /auth/consents`, `DELETE /auth/consents/{id}`,
//!   `POST /auth/logout`, `GET /auth/demo/users` ([`account`]): JSON for the SPA, each
//!   requiring `X-Consentry: 1` and an allowed `Origin` where the browser sends one
//!   ([`caller`]).
//! * `/api/{provider}/{path}` ([`api`]): the provider's data API with the consent's token
//!   attached here ([`tokens`]: refreshed one at a time per consent, across isolates).
//!
//! Everything else (the demo page in `www/`) is served from the assets binding.
#![forbid(unsafe_code)]

mod account;
mod api;
mod callback;
mod caller;
mod config;
mod dpop;
mod limits;
mod moneyhub;
mod outbound;
mod provider_client;
mod respond;
mod start;
mod store;
mod tokens;
mod webcrypto;

use consentry_core::encoding::{base64url_encode, log_field};
use consentry_core::provider::callback_provider_id;
use consentry_core::{Error, ErrorCode, OutcomePage, Result};
use worker::{event, Context, Env, Method, Request, Response};

use crate::random::random_bytes;
use config::Config;
use store::Store;

/// The Worker's entry point.
#[event(fetch)]
pub async fn fetch(request: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let path = request.path();
    if !path.starts_with("/auth/") && !path.starts_with(api::API_PREFIX) {
        return respond::json_error(&Error::new(ErrorCode::NotFound, "no such route"), None);
    }
    let config = match Config::from_env(&env) {
        Ok(config) => config,
        Err(error) => {
            worker::console_error!("consentry: configuration: {}", error.description());
            return respond::json_error(&error, None);
        }
    };
    // A callback route exists for each configured provider only; `/auth/callback` alone is
    // no route (404), so no response can arrive without naming its provider.
    let callback_provider = callback_provider_id(&path).and_then(|id| config.provider(id).ok());
    // Each route's future is boxed rather than held inline in this one: measured, 0.66 KB
    // less gzipped Wasm (issue 13).
    match (request.method(), path.as_str(), callback_provider) {
        (Method::Post, "/auth/start", _) => Box::pin(start::handle(request, &env, &config)).await,
        (Method::Get | Method::Post, _, Some(provider)) => {
            // Before the flow is looked up: a flood of made-up callbacks costs no D1 read.
            let ip = limits::client_ip(&request);
            if let Err(error) = limits::check(&env, limits::CALLBACK, &ip).await {
                let page = OutcomePage::for_error(&error, OutcomePage::status_without_flow(&error));
                log_ending("callback", Some(provider.id()), &page, Some(error.code()));
                return respond::page(&page, &[]);
            }
            Box::pin(callback::handle(request, &env, &config, provider, &ctx)).await
        }
        (_, path, _)
            if path.starts_with(api::API_PREFIX) && request.method() != Method::Options =>
        {
            Box::pin(api::handle(request, &env, &config)).await
        }
        (Method::Options, _, _) => {
            let origin = request.headers().get("Origin")?;
            match config.allowed_origins.check(origin.as_deref()) {
                Ok(origin) => respond::preflight(origin),
                Err(error) => respond::json_error(&error, None),
            }
        }
        _ => Box::pin(account::handle(request, &env, &config)).await,
    }
}

/// The request's query as it arrived, without the `?` (`None` when the URL has none). Cut
/// from the URL string workerd hands over, which is already serialized: worker's
/// `Request::url` would parse it again with the `url` crate, whose IDNA tables alone are a
/// tenth of the Worker's size.
fn raw_query(request: &Request) -> Option<String> {
    let url = request.inner().url();
    let url = url.split_once('#').map_or(url.as_str(), |(url, _)| url);
    url.split_once('?').map(|(_, query)| query.to_owned())
}

/// The time, in Unix seconds: the one clock the core is handed.
fn now() -> u64 {
    now_ms() / 1000
}

/// The time in Unix milliseconds: leases and claims need finer time than the core's seconds.
fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// 32 random bytes in base64url: binding cookies and session ids.
fn random_token() -> Result<String> {
    Ok(base64url_encode(&random_bytes::<32>()?))
}

fn open_store(env: &Env) -> Result<Store> {
    env.d1("DB").map(Store::new).map_err(|_| {
        Error::new(
            ErrorCode::InvalidConfiguration,
            "the D1 binding DB is missing",
        )
    })
}

/// The form media type (the start form, a `form_post` callback).
const FORM: &str = "application/x-www-form-urlencoded";

/// Reads a form body (start, form_post callback), refusing other types and large bodies.
async fn read_form(request: &mut Request) -> Result<String> {
    read_body(request, &[FORM], 16 * 1024)
        .await
        .map(|(_, body)| body)
}

/// Reads a text body of one of the `accepted` media types and at most `max_bytes`, declared
/// up front: an undeclared or larger one is refused before anything is read (it would be
/// buffered whole). Gives the media type as accepted, and the body.
async fn read_body(
    request: &mut Request,
    accepted: &[&'static str],
    max_bytes: usize,
) -> Result<(&'static str, String)> {
    let refused = |why: String| Error::new(ErrorCode::InvalidParameter, why);
    let content_type = request.headers().get("Content-Type").ok().flatten();
    let media_type = content_type
        .as_deref()
        .and_then(|value| value.split(';').next())
        .map(str::trim)
        .and_then(|media| {
            accepted
                .iter()
                .find(|known| media.eq_ignore_ascii_case(known))
        })
        .copied()
        .ok_or_else(|| refused(format!("the body must be {}", accepted.join(" or "))))?;
    let limit = max_bytes / 1024;
    let declared_len = request
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|len| len.trim().parse::<usize>().ok());
    if declared_len.is_none_or(|len| len > max_bytes) {
        return Err(refused(format!(
            "the body must declare a Content-Length of at most {limit} KiB"
        )));
    }
    let body = request
        .text()
        .await
        .map_err(|_| refused("the body could not be read as UTF-8".to_owned()))?;
    if body.len() > max_bytes {
        return Err(refused(format!("the body is larger than {limit} KiB")));
    }
    Ok((media_type, body))
}

/// Logs how a popup page ended: route, provider, status and code. Never a value; a
/// provider's error string only escaped ([`log_field`]).
fn log_ending(route: &str, provider: Option<&str>, page: &OutcomePage, code: Option<&ErrorCode>) {
    worker::console_log!(
        "consentry: {route} provider={} http={} code={}",
        provider.unwrap_or("-"),
        page.status(),
        log_field(code.map_or("-", ErrorCode::as_str))
    );
}
