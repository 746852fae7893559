//! The Cloudflare Worker adapter (workers-rs). Routes are described in `shared/DESIGN.md`
//! (wire contract); every protocol decision is delegated to `consentry_core`.

use worker::{event, Context, Env, Request, Response, Result};

/// The Worker's entry point. Until the routes land (issue 3), every path is an honest
/// `404` in the one error shape, `{ code, description }`, never cached.
#[event(fetch)]
pub async fn fetch(_request: Request, _env: Env, _ctx: Context) -> Result<Response> {
    let body = serde_json::json!({"code": "not_found", "description": "no such route"});
    let mut response = Response::from_json(&body)?.with_status(404);
    response.headers_mut().set("Cache-Control", "no-store")?;
    Ok(response)
}
