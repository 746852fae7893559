//! `/api/{provider}/{path}` (DESIGN.md, "Using a consent"): the provider's data API through
//! the Worker, with the consent's access token attached here and never in the browser.
//!
//! The caller's guards and user are the account routes' ([`Caller`]); the consent is chosen
//! by the core ([`choose_consent`]), the path and method checked by it ([`ApiCall`]) before
//! anything goes out; the token comes live from [`TokenSource`] (one refresh per consent at a
//! time, across isolates). An upstream 401 on a token thought live gets one forced refresh
//! and one retry. The answer is the upstream's status, `Content-Type` and body, with
//! `Cache-Control: no-store` and nothing else of the upstream's headers.

use consentry_core::api::{
    choose_consent, ApiCall, ConsentCandidate, CONSENT_HEADER, MAX_API_BODY_BYTES,
};
use consentry_core::encoding::log_field;
use consentry_core::{Error, ErrorCode, HttpRequest, ProviderConfig, Result};
use worker::{Env, Method, Request, Response};

use super::caller::Caller;
use super::config::Config;
use super::outbound::{self, ProviderResponse, Unanswered};
use super::store::ConsentRow;
use super::tokens::{LiveToken, NoToken, TokenSource};
use super::{now, open_store, respond};

/// The route's prefix.
pub(crate) const API_PREFIX: &str = "/api/";

/// A failed call: its error, and the status to answer with when it is not the code's own.
struct Refused {
    error: Error,
    status: Option<u16>,
}

impl From<Error> for Refused {
    fn from(error: Error) -> Self {
        Refused {
            error,
            status: None,
        }
    }
}

impl From<NoToken> for Refused {
    fn from(why: NoToken) -> Self {
        // A consent whose refresh the provider refused answers 401, as an expired session
        // would: the SPA must send its user through the flow again.
        let status = matches!(why, NoToken::Expired(_)).then_some(401);
        Refused {
            error: why.into_error(),
            status,
        }
    }
}

pub(super) async fn handle(
    mut request: Request,
    env: &Env,
    config: &Config,
) -> worker::Result<Response> {
    let caller = Caller::of(&request, config);
    match call(&mut request, env, config, &caller).await {
        Ok(answer) => respond::upstream(
            answer.status,
            answer.content_type.as_deref(),
            answer.body,
            caller.cors_origin.as_ref(),
        ),
        Err(Refused { error, status }) => {
            let status = status.unwrap_or_else(|| error.code().http_status());
            respond::json_error_with_status(&error, status, caller.cors_origin.as_ref())
        }
    }
}

async fn call(
    request: &mut Request,
    env: &Env,
    config: &Config,
    caller: &Caller,
) -> Result<ProviderResponse, Refused> {
    caller.guard(config)?;
    let path = request.path();
    let (provider_id, raw_path) = path
        .strip_prefix(API_PREFIX)
        .and_then(|rest| rest.find('/').map(|slash| rest.split_at(slash)))
        .ok_or_else(|| Error::new(ErrorCode::InvalidApiPath, "the path names no provider API"))?;
    let provider = config.provider(provider_id)?;
    let base = provider.api_base_url().ok_or_else(|| {
        Error::new(
            ErrorCode::NotFound,
            "this provider has no data API configured",
        )
    })?;
    let url = request
        .url()
        .map_err(|_| Error::new(ErrorCode::InvalidApiPath, "unreadable URL"))?;
    let api_call = ApiCall::parse(
        provider,
        method_name(&request.method()),
        raw_path,
        url.query(),
    )?;
    let body = read_body(request, &api_call).await?;

    let store = open_store(env)?;
    let now = now();
    let user = caller.user(env, config, &store, now).await?;
    let consent = choose(&store, &user.id, provider, request, now).await?;
    let tokens = TokenSource {
        env,
        config,
        provider,
        store: &store,
    };
    let accept = request.headers().get("Accept").ok().flatten();
    let send = |live: &LiveToken| {
        let upstream = api_call.build_request(base, &live.tokens, accept.as_deref(), body.clone());
        send_upstream(upstream, config.http_timeout_ms)
    };
    let live = tokens.live_token(&consent, None).await?;
    let answer = send(&live).await?;
    if answer.status != 401 {
        return Ok(answer);
    }
    // A token thought live, refused: one forced refresh, one retry, and whatever the data
    // API says then is the answer.
    worker::console_log!(
        "consentry: api provider={} upstream=401 refreshing",
        provider.id()
    );
    let live = tokens.live_token(&consent, Some(live.generation)).await?;
    Ok(send(&live).await?)
}

/// The consent the call uses, among the user's consents with this provider.
async fn choose(
    store: &super::store::Store,
    user_id: &str,
    provider: &ProviderConfig,
    request: &Request,
    now: u64,
) -> Result<ConsentRow> {
    let named = request.headers().get(CONSENT_HEADER).ok().flatten();
    let mut consents = store.consents(user_id, Some(provider.id())).await?;
    let candidates: Vec<ConsentCandidate<'_>> = consents
        .iter()
        .map(|row| ConsentCandidate {
            id: &row.id,
            status: row.stored().status(now),
        })
        .collect();
    let index = choose_consent(named.as_deref(), &candidates)?;
    Ok(consents.swap_remove(index))
}

/// The body of a write, with its `Content-Type`: JSON or a form, at most 64 KiB, declared
/// up front. A `GET` or `DELETE` sends none.
async fn read_body(
    request: &mut Request,
    call: &ApiCall,
) -> Result<Option<(&'static str, String)>> {
    if matches!(call.method(), "GET" | "DELETE") {
        return Ok(None);
    }
    let refused = |why: &str| Error::new(ErrorCode::InvalidParameter, why.to_owned());
    let content_type = request.headers().get("Content-Type").ok().flatten();
    let media_type = content_type
        .as_deref()
        .and_then(|value| value.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase());
    let content_type = match media_type.as_deref() {
        Some("application/json") => "application/json",
        Some("application/x-www-form-urlencoded") => "application/x-www-form-urlencoded",
        _ => {
            return Err(refused(
                "a data API body must be application/json or a form",
            ))
        }
    };
    let declared_len = request
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|len| len.trim().parse::<usize>().ok());
    if declared_len.is_none_or(|len| len > MAX_API_BODY_BYTES) {
        return Err(refused(
            "a data API body must declare a Content-Length of at most 64 KiB",
        ));
    }
    let body = request
        .text()
        .await
        .map_err(|_| refused("the body could not be read as UTF-8"))?;
    if body.len() > MAX_API_BODY_BYTES {
        return Err(refused("the body is larger than 64 KiB"));
    }
    Ok(Some((content_type, body)))
}

/// Sends one call to the data API. A redirect is never followed; no answer in time is
/// `upstream_timeout`, none at all `upstream_unreachable`, too much `upstream_too_large`.
async fn send_upstream(request: HttpRequest, timeout_ms: u32) -> Result<ProviderResponse> {
    let answer = outbound::send(&request, timeout_ms).await.map_err(|why| {
        let code = match why {
            Unanswered::TimedOut => ErrorCode::UpstreamTimeout,
            Unanswered::Failed => ErrorCode::UpstreamUnreachable,
            Unanswered::TooLarge => ErrorCode::UpstreamTooLarge,
        };
        Error::new(code, why.describe("data API", timeout_ms))
    })?;
    if (300..400).contains(&answer.status) {
        worker::console_warn!(
            "consentry: api upstream={} redirect not followed",
            log_field(&answer.status.to_string())
        );
        return Err(Error::new(
            ErrorCode::UpstreamRedirect,
            "the data API answered with a redirect, which is not followed",
        ));
    }
    Ok(answer)
}

fn method_name(method: &Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
        _ => "OTHER",
    }
}
