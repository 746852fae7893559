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
    choose_consent, consent_expired, ApiCall, ConsentCandidate, CONSENT_HEADER, MAX_API_BODY_BYTES,
};
use consentry_core::encoding::log_field;
use consentry_core::{Error, ErrorCode, HttpRequest, ProviderConfig, Result};
use worker::{Env, Method, Request, Response};

use super::caller::Caller;
use super::config::Config;
use super::dpop::DpopKey;
use super::outbound::{self, ProviderResponse, Unanswered};
use super::store::{ConsentRow, ConsentWithTokens, Store};
use super::tokens::{LiveToken, NoToken, TokenSource};
use super::{limits, now, open_store, raw_query, read_body, respond, FORM};

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

/// Why a call cannot have a live token, as the route answers it.
fn refused_for(
    why: NoToken,
    first_answer: Option<ProviderResponse>,
) -> Result<ProviderResponse, Refused> {
    match why {
        // A consent whose refresh the provider refused answers 401, as an expired session
        // would: the SPA must send its user through the flow again.
        NoToken::Expired(error) => Err(Refused {
            error,
            status: Some(401),
        }),
        NoToken::Failed(error) => Err(error.into()),
        // Nothing to refresh with after an upstream 401: that 401 is the answer.
        NoToken::CannotRefresh => first_answer.ok_or_else(|| {
            Refused::from(Error::new(
                ErrorCode::ConsentExpired,
                "the consent's token cannot be renewed",
            ))
        }),
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
    let query = raw_query(request);
    let api_call = ApiCall::parse(
        provider,
        method_name(&request.method()),
        raw_path,
        query.as_deref(),
    )?;
    let body = read_call_body(request, &api_call).await?;

    let store = open_store(env)?;
    let now = now();
    let (consents, limit_key) = caller
        .consents_with_tokens(env, config, &store, provider.id(), now)
        .await?;
    // Counted once the caller is known: made-up credentials get no bucket of their own.
    limits::check(env, limits::API, &limit_key).await?;
    let (consent, token_set) = choose(consents, request, now)?;
    let tokens = TokenSource {
        env,
        config,
        provider,
        store: &store,
    };
    let accept = request.headers().get("Accept").ok().flatten();
    let send = |live: LiveToken| {
        let (api_call, accept, body) = (&api_call, accept.as_deref(), &body);
        async move {
            let build = |proof: Option<&str>| {
                api_call.build_request(base, &live.tokens, accept, body.clone(), proof)
            };
            let answer = match live.tokens.dpop_key() {
                None => send_upstream(build(None)?, config.http_timeout_ms).await?,
                // A DPoP-bound grant: a proof per call, `ath` included, the resource
                // server's nonce obeyed once.
                Some(private) => {
                    let key = DpopKey::from_private(provider.dpop_alg(), private.clone())?;
                    key.send_with_proof(
                        api_call.method(),
                        &api_call.upstream_url(base),
                        Some(live.tokens.access_token()),
                        super::now(),
                        |proof| {
                            let request = build(Some(&proof));
                            async move { send_upstream(request?, config.http_timeout_ms).await }
                        },
                    )
                    .await?
                }
            };
            withhold_echoed_token(answer, &live)
        }
    };
    let live = match tokens.live_token(&consent, None, Some(token_set)).await {
        Ok(live) => live,
        Err(why) => return refused_for(why, None),
    };
    let generation = live.generation;
    let answer = send(live).await?;
    if answer.status != 401 {
        return withdrawn_or(answer, &store, &consent, provider).await;
    }
    // A token thought live, refused: one forced refresh, one retry, and whatever the data
    // API says then is the answer.
    worker::console_log!(
        "consentry: api provider={} upstream=401 refreshing",
        provider.id()
    );
    match tokens.live_token(&consent, Some(generation), None).await {
        Ok(live) => withdrawn_or(send(live).await?, &store, &consent, provider).await,
        Err(why) => refused_for(why, Some(answer)),
    }
}

/// The answer, unless it says the consent itself is gone at the provider (TrueLayer's 403
/// `access_denied`): then the consent lapses here too, its tokens are forgotten, and the
/// call answers 401 `consent_expired`, as a refresh the provider refused does: the user must
/// connect again.
async fn withdrawn_or(
    answer: ProviderResponse,
    store: &Store,
    consent: &ConsentRow,
    provider: &ProviderConfig,
) -> Result<ProviderResponse, Refused> {
    if !provider.answer_withdraws_consent(answer.status, &answer.body) {
        return Ok(answer);
    }
    worker::console_warn!(
        "consentry: api provider={} consent withdrawn at the provider",
        provider.id()
    );
    store.withdraw_consent(&consent.id, now()).await?;
    Err(Refused {
        error: consent_expired(),
        status: Some(401),
    })
}

/// An answer that holds the very access token it was called with (some APIs echo the bearer
/// value in an error) does not reach the browser.
fn withhold_echoed_token(answer: ProviderResponse, live: &LiveToken) -> Result<ProviderResponse> {
    let token = live.tokens.access_token().secret().as_bytes();
    let echoed = !token.is_empty()
        && answer
            .body
            .windows(token.len())
            .any(|window| window == token);
    if echoed {
        return Err(Error::new(
            ErrorCode::UpstreamError,
            "the data API's answer held the access token, so it is withheld",
        ));
    }
    Ok(answer)
}

/// The consent the call uses, among the user's consents with this provider, with its token
/// set as read with it.
fn choose(
    mut consents: Vec<ConsentWithTokens>,
    request: &Request,
    now: u64,
) -> Result<ConsentWithTokens> {
    let named = request.headers().get(CONSENT_HEADER).ok().flatten();
    let candidates: Vec<ConsentCandidate<'_>> = consents
        .iter()
        .map(|(row, _)| ConsentCandidate {
            id: &row.id,
            status: row.stored().status(now),
        })
        .collect();
    let index = choose_consent(named.as_deref(), &candidates)?;
    Ok(consents.swap_remove(index))
}

/// The body of a write, with its `Content-Type`: JSON or a form, at most 64 KiB, declared
/// up front. A `GET` or `DELETE` sends none.
async fn read_call_body(
    request: &mut Request,
    call: &ApiCall,
) -> Result<Option<(&'static str, String)>> {
    if matches!(call.method(), "GET" | "DELETE") {
        return Ok(None);
    }
    read_body(request, &["application/json", FORM], MAX_API_BODY_BYTES)
        .await
        .map(Some)
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
