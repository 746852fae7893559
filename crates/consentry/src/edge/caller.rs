//! Who calls a JSON route (the account routes and `/api`): the guards every one of them runs
//! (`X-Consentry: 1`, and an allowed `Origin` where the browser sends one), the origin the
//! answer's CORS headers name, and the app user the call acts for: the session's, or the one
//! `Authorization: Bearer <user reference>` names, trusted exactly as the start form's `user`
//! is (a demo id, or an HS256 assertion from the app's backend). The reference travels in
//! that header, never a URL, and is never logged or echoed.

use consentry_core::cookie::{cookie_value, stored_hash, SESSION_COOKIE};
use consentry_core::start::user_reference_from_authorization;
use consentry_core::user_assertion::parse_user_id;
use consentry_core::{Error, ErrorCode, Result, WebOrigin};
use worker::{Env, Request};

use super::config::Config;
use super::start::{no_demo_user, trusted_user};
use super::store::{ConsentWithTokens, Store, UserLookup, UserRow};

/// What a JSON route knows of its caller once the request is read.
pub(crate) struct Caller {
    /// The allowed origin to answer with CORS headers, when the browser sent one.
    pub cors_origin: Option<WebOrigin>,
    origin: Option<String>,
    csrf_header: Option<String>,
    /// The `Cookie` header (empty when none).
    pub cookies: String,
    authorization: Option<String>,
}

impl Caller {
    /// Reads the caller off `request`.
    pub(crate) fn of(request: &Request, config: &Config) -> Caller {
        let header = |name: &str| request.headers().get(name).ok().flatten();
        let origin = header("Origin");
        Caller {
            cors_origin: origin
                .as_deref()
                .and_then(|origin| config.allowed_origins.check(Some(origin)).ok())
                .cloned(),
            origin,
            csrf_header: header("X-Consentry"),
            cookies: header("Cookie").unwrap_or_default(),
            authorization: header("Authorization"),
        }
    }

    /// The static anti-CSRF header, and the `Origin` when the browser sends one.
    pub(crate) fn guard(&self, config: &Config) -> Result<()> {
        if self.csrf_header.as_deref() != Some("1") {
            return Err(Error::new(
                ErrorCode::CsrfHeaderMissing,
                "JSON routes need the header X-Consentry: 1",
            ));
        }
        if let Some(origin) = &self.origin {
            config.allowed_origins.check(Some(origin))?;
        }
        Ok(())
    }

    /// The user the call acts for: the one `Authorization: Bearer` names, else the
    /// session's.
    pub(crate) async fn user(
        &self,
        env: &Env,
        config: &Config,
        store: &Store,
        now: u64,
    ) -> Result<UserRow> {
        let Some(authorization) = &self.authorization else {
            return self.session_user(store, now).await;
        };
        let reference = user_reference_from_authorization(authorization)?;
        trusted_user(env, config, store, reference, now).await
    }

    async fn session_user(&self, store: &Store, now: u64) -> Result<UserRow> {
        let session = cookie_value(&self.cookies, SESSION_COOKIE).ok_or_else(session_required)?;
        store
            .session_user(&stored_hash(session), now)
            .await?
            .ok_or_else(session_required)
    }

    /// The consents with `provider` of the user the call acts for (found as [`Caller::user`]
    /// finds them), each with its token set: the user and the consents read in one round
    /// trip (an asserted user is recorded first). With them, what `/api`'s rate limit counts
    /// this caller under: its session's hash, or a hash of the user id a `Bearer` reference
    /// names (so that a fresh assertion for the same user is no fresh bucket).
    pub(crate) async fn consents_with_tokens(
        &self,
        env: &Env,
        config: &Config,
        store: &Store,
        provider: &str,
        now: u64,
    ) -> Result<(Vec<ConsentWithTokens>, String)> {
        let (session, asserted);
        let (lookup, unknown): (UserLookup<'_>, fn() -> Error) = match &self.authorization {
            None => {
                let value =
                    cookie_value(&self.cookies, SESSION_COOKIE).ok_or_else(session_required)?;
                session = stored_hash(value);
                (UserLookup::Session(&session), session_required)
            }
            Some(authorization) if config.demo_users => {
                let reference = user_reference_from_authorization(authorization)?;
                (UserLookup::Id(parse_user_id(reference)?), no_demo_user)
            }
            // An asserted user is recorded (a write) before the read.
            Some(_) => {
                asserted = self.user(env, config, store, now).await?.id;
                (UserLookup::Id(&asserted), user_not_recorded)
            }
        };
        let limit_key = match lookup {
            UserLookup::Session(session) => session.to_owned(),
            UserLookup::Id(id) => stored_hash(&format!("user:{id}")),
        };
        let consents = store
            .user_with_consents(lookup, provider, now)
            .await?
            .ok_or_else(unknown)?;
        Ok((consents, limit_key))
    }
}

fn session_required() -> Error {
    Error::new(
        ErrorCode::SessionRequired,
        "connect a bank first: no session",
    )
}

/// An asserted user gone between being recorded and being read (deleted meanwhile).
fn user_not_recorded() -> Error {
    Error::new(ErrorCode::InvalidUser, "this user is no longer recorded")
}
