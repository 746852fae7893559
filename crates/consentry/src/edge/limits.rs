//! Rate limits, on Cloudflare's rate-limiting bindings (`[[ratelimits]]` in wrangler.toml;
//! `wrangler dev` runs them locally, in memory): `/auth/start` and `/auth/callback/{provider}`
//! per client IP, before they read or write anything; `/api` per session (or per user,
//! for a `Bearer` caller) once the caller is known, so that made-up credentials get no bucket of their
//! own, and before any refresh or call upstream. Over its limit a request is answered 429
//! `rate_limited` with `Retry-After`.
//!
//! The bindings count per Cloudflare location and are permissive by design: they blunt
//! floods (random callbacks, start storms), they are not a quota. A Worker deployed without
//! a binding is not limited on that route; a binding that fails lets the request through
//! and logs it, so that a limiter's outage never locks people out of their bank.

use consentry_core::{Error, ErrorCode, Result};
use js_sys::futures::JsFuture;
use js_sys::{Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use worker::{Env, Request};

/// The binding that limits `/auth/start`, per client IP.
pub(crate) const START: &str = "CONSENTRY_LIMIT_START";
/// The binding that limits `/auth/callback/{provider}`, per client IP.
pub(crate) const CALLBACK: &str = "CONSENTRY_LIMIT_CALLBACK";
/// The binding that limits `/api`, per session or per user.
pub(crate) const API: &str = "CONSENTRY_LIMIT_API";

/// `Retry-After` on a 429 (the longest period a rate-limiting binding can have), and on a
/// 503 (storage down).
pub(crate) const RETRY_AFTER_SECS: &str = "60";

#[wasm_bindgen]
extern "C" {
    /// A rate-limiting binding: `limit({key})` resolves to `{success}`.
    type RateLimit;

    #[wasm_bindgen(method, catch)]
    fn limit(this: &RateLimit, options: &JsValue) -> std::result::Result<Promise, JsValue>;
}

/// The client's IP, as Cloudflare's edge (or `wrangler dev`) sets it.
pub(crate) fn client_ip(request: &Request) -> String {
    request
        .headers()
        .get("CF-Connecting-IP")
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Counts one request against `binding` under `key`; `rate_limited` when it is over.
pub(crate) async fn check(env: &Env, binding: &str, key: &str) -> Result<()> {
    let limiter = match Reflect::get(env, &binding.into()) {
        Ok(limiter) if limiter.is_object() => limiter.unchecked_into::<RateLimit>(),
        _ => return Ok(()),
    };
    let options = Object::new();
    // Reflect::set on a fresh plain object cannot fail.
    let _ = Reflect::set(&options, &"key".into(), &key.into());
    let verdict = match limiter.limit(&options) {
        Ok(promise) => JsFuture::from(promise).await,
        Err(error) => Err(error),
    };
    let allowed = verdict
        .ok()
        .and_then(|outcome| Reflect::get(&outcome, &"success".into()).ok())
        .and_then(|success| success.as_bool());
    match allowed {
        Some(true) => Ok(()),
        Some(false) => Err(Error::new(
            ErrorCode::RateLimited,
            "too many requests; try again in a minute",
        )),
        None => {
            worker::console_warn!("consentry: rate limit binding={binding} failed; not limited");
            Ok(())
        }
    }
}
