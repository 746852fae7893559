//! The app-user reference of a start request (DESIGN.md, configuration contract,
//! `CONSENTRY_DEMO_USERS`).
//!
//! Outside the demo, the browser cannot be trusted to say which app user it is: the app's
//! backend signs a short-lived HS256 assertion with `CONSENTRY_USER_SECRET`
//! (`{"sub": "<user id>", "aud": "<CONSENTRY_PUBLIC_URL>", "exp": ..., "name": "..."}`), and
//! the Worker accepts the `sub` of an assertion that verifies, is addressed to it, and has
//! not expired. The audience keeps the app's other HS256 JWTs (its own sessions, say) from
//! passing as consentry assertions if the app reuses the secret.

use crate::error::{Error, ErrorCode, Result};
use crate::id_token::DEFAULT_CLOCK_TOLERANCE;
use crate::jws::JwsAlgorithm;
use crate::jwt::UnverifiedJwt;

/// The longest user id accepted.
pub const MAX_USER_ID_LEN: usize = 128;

/// The longest lifetime (`exp` - `iat`, or `exp` - now) an assertion may claim: 5 minutes.
/// It is made just before the flow starts and is a bearer credential until it expires.
pub const MAX_ASSERTION_LIFETIME_SECS: u64 = 300;

/// The shortest `CONSENTRY_USER_SECRET` accepted: 32 bytes, the HS256 output size
/// ([RFC 7518 §3.2](https://www.rfc-editor.org/rfc/rfc7518#section-3.2)).
pub const MIN_SECRET_LEN: usize = 32;

/// An app user, as the Worker records consents against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUser {
    /// The app's own user id.
    pub id: String,
    /// A display name, when the assertion carries one.
    pub name: Option<String>,
}

/// Checks a demo user id's shape (the Worker then looks it up in the users table).
pub fn parse_user_id(user: &str) -> Result<&str> {
    if user.len() <= MAX_USER_ID_LEN && is_identifier(user) {
        Ok(user)
    } else {
        Err(invalid_user(
            "the user id must be 1-128 letters, digits, - or _",
        ))
    }
}

/// Verifies an HS256 user assertion
/// ([RFC 7519](https://www.rfc-editor.org/rfc/rfc7519), [RFC 7518 §3.2](https://www.rfc-editor.org/rfc/rfc7518#section-3.2))
/// against `secret` at `now` (Unix seconds): signature, `aud` equal to (or containing)
/// `audience`, `exp` (required, not passed, at most five minutes ahead), `nbf`/`iat` not in
/// the future, and `sub` a well-formed user id.
///
/// Every failure is [`ErrorCode::InvalidUser`], except a secret shorter than
/// [`MIN_SECRET_LEN`] ([`ErrorCode::InvalidConfiguration`]); the description never quotes
/// the assertion.
pub fn verify_user_assertion(
    assertion: &str,
    secret: &[u8],
    audience: &str,
    now: u64,
) -> Result<AppUser> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(Error::new(
            ErrorCode::InvalidConfiguration,
            "CONSENTRY_USER_SECRET must be at least 32 bytes",
        ));
    }
    let jwt = UnverifiedJwt::parse(assertion, &[JwsAlgorithm::HS256])
        .and_then(|jwt| jwt.verify_hs256(secret))
        .map_err(|error| match error.code() {
            ErrorCode::InvalidConfiguration => error,
            _ => invalid_user(
                "the user assertion is not an HS256 JWT signed with CONSENTRY_USER_SECRET",
            ),
        })?;
    let claims = jwt.claims();
    let addressed = match claims.get("aud") {
        Some(serde_json::Value::String(aud)) => aud == audience,
        Some(serde_json::Value::Array(auds)) => {
            auds.iter().any(|aud| aud.as_str() == Some(audience))
        }
        _ => false,
    };
    if !addressed {
        return Err(invalid_user(
            "the user assertion's aud is not this Worker's public URL",
        ));
    }
    let number = |name: &str| claims.get(name).and_then(serde_json::Value::as_u64);
    let exp = number("exp").ok_or_else(|| invalid_user("the user assertion has no exp"))?;
    if exp.saturating_add(DEFAULT_CLOCK_TOLERANCE) <= now {
        return Err(invalid_user("the user assertion has expired"));
    }
    let issued = number("iat").unwrap_or(now);
    if exp > issued.max(now).saturating_add(MAX_ASSERTION_LIFETIME_SECS) {
        return Err(invalid_user(
            "the user assertion lives longer than five minutes",
        ));
    }
    for name in ["iat", "nbf"] {
        if number(name).is_some_and(|at| at > now.saturating_add(DEFAULT_CLOCK_TOLERANCE)) {
            return Err(invalid_user(&format!(
                "the user assertion's {name} is in the future"
            )));
        }
    }
    let sub = claims
        .get("sub")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| invalid_user("the user assertion has no sub"))?;
    let id = parse_user_id(sub)?.to_owned();
    let name = claims
        .get("name")
        .and_then(serde_json::Value::as_str)
        .filter(|name| !name.is_empty() && name.len() <= 200 && !name.chars().any(char::is_control))
        .map(str::to_owned);
    Ok(AppUser { id, name })
}

fn invalid_user(description: &str) -> Error {
    Error::new(ErrorCode::InvalidUser, description)
}

/// A user id: ASCII letters, digits, `-` and `_`.
fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::test_support::sign_hs256;

    const SECRET: &[u8] = b"app-backend-shared-secret-32-bytes!!";
    const AUD: &str = "https://consent.example";
    const NOW: u64 = 1_790_000_000;

    fn assertion(claims: serde_json::Value, secret: &[u8]) -> String {
        sign_hs256(&claims, secret)
    }

    fn refused(claims: serde_json::Value) -> String {
        let error = verify_user_assertion(&assertion(claims, SECRET), SECRET, AUD, NOW)
            .expect_err("must be refused");
        assert_eq!(error.code(), &ErrorCode::InvalidUser);
        error.description().to_owned()
    }

    #[test]
    fn a_fresh_assertion_names_its_user() {
        let claims = serde_json::json!(
            {"sub": "usr_42", "aud": AUD, "name": "Ada", "iat": NOW, "exp": NOW + 300}
        );
        let user =
            verify_user_assertion(&assertion(claims, SECRET), SECRET, AUD, NOW).expect("valid");
        assert_eq!(
            user,
            AppUser {
                id: "usr_42".into(),
                name: Some("Ada".into())
            }
        );
        let listed = serde_json::json!({"sub": "usr_42", "aud": ["other", AUD], "exp": NOW + 300});
        assert!(verify_user_assertion(&assertion(listed, SECRET), SECRET, AUD, NOW).is_ok());
    }

    #[test]
    fn forged_expired_misaddressed_or_malformed_assertions_are_refused() {
        let forged = assertion(
            serde_json::json!({"sub": "usr_42", "aud": AUD, "exp": NOW + 300}),
            b"another-secret-of-thirty-two-bytes!!",
        );
        let error = verify_user_assertion(&forged, SECRET, AUD, NOW).expect_err("forged");
        assert_eq!(error.code(), &ErrorCode::InvalidUser);
        assert!(!error.description().contains(&forged));

        let claims = |extra: serde_json::Value| {
            let mut claims = serde_json::json!({"sub": "usr_42", "aud": AUD, "exp": NOW + 300});
            for (name, value) in extra.as_object().expect("object") {
                match value {
                    serde_json::Value::Null => claims.as_object_mut().expect("object").remove(name),
                    value => claims
                        .as_object_mut()
                        .expect("object")
                        .insert(name.clone(), value.clone()),
                };
            }
            claims
        };
        assert!(refused(claims(serde_json::json!({"exp": NOW - 61}))).contains("expired"));
        assert!(refused(claims(serde_json::json!({"exp": null}))).contains("no exp"));
        assert!(refused(claims(serde_json::json!({"exp": NOW + 600}))).contains("five minutes"));
        // Extreme signed values are refused, never overflow.
        assert!(refused(claims(serde_json::json!({"exp": u64::MAX}))).contains("five minutes"));
        assert!(refused(claims(serde_json::json!({"nbf": u64::MAX}))).contains("nbf"));
        assert!(refused(claims(serde_json::json!({"nbf": NOW + 600}))).contains("nbf"));
        assert!(refused(claims(serde_json::json!({"sub": null}))).contains("no sub"));
        refused(claims(serde_json::json!({"sub": "../admin"})));
        // The app's own HS256 JWTs (same secret, not addressed to this Worker) do not pass.
        assert!(refused(claims(serde_json::json!({"aud": null}))).contains("aud"));
        assert!(refused(claims(serde_json::json!({"aud": "https://app.example"}))).contains("aud"));
        assert_eq!(
            verify_user_assertion("usr_alice", SECRET, AUD, NOW)
                .expect_err("not a JWT")
                .code(),
            &ErrorCode::InvalidUser
        );
        let short = verify_user_assertion("a.b.c", b"short", AUD, NOW).expect_err("short key");
        assert_eq!(short.code(), &ErrorCode::InvalidConfiguration);
    }

    #[test]
    fn demo_user_ids_are_plain_identifiers() {
        assert_eq!(parse_user_id("usr_alice").expect("valid"), "usr_alice");
        for bad in ["", "usr alice", "usr'--", &"u".repeat(129)] {
            assert_eq!(
                parse_user_id(bad).expect_err(bad).code(),
                &ErrorCode::InvalidUser
            );
        }
    }
}
