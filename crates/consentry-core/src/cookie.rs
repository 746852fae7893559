//! The Worker's two cookies ([RFC 6265bis](https://datatracker.ietf.org/doc/draft-ietf-httpbis-rfc6265bis/)),
//! both `__Host-` prefixed (Secure, `Path=/`, no `Domain`: no sibling subdomain can set or
//! shadow them) and HttpOnly (no script reads them).
//!
//! * The **binding cookie**, one per flow, ties a transaction to the browser that started it.
//!   `SameSite=Lax`, which the provider's redirect (a top-level `GET`) carries, or `None`
//!   for a provider that answers with `response_mode=form_post`, a cross-site `POST` that
//!   `Lax` would strip ([`crate::ProviderConfig::binding_same_site`]). It lives
//!   [`BINDING_SECS`], the transaction's own lifetime, and the callback that consumes the
//!   flow sets it again on its answer for as long, so that the SPA can read the outcome. It
//!   is named after the state's storage key, so two flows in one browser do not overwrite
//!   each other's binding.
//! * The **session cookie** names the app user whose consents the browser may list and
//!   revoke. `SameSite=Strict`: only the app's own same-site requests carry it, so no other
//!   site can make the browser act on a consent.
//!
//! Values are 32 random bytes in base64url; the store keeps only their SHA-256.

use crate::state::StateKey;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "__Host-consentry-session";
/// The prefix of each flow's binding cookie name.
pub const BINDING_COOKIE_PREFIX: &str = "__Host-consentry-tx-";
/// The binding cookie's `Max-Age`: 10 minutes, the transaction's lifetime, and again from
/// the callback for reading the outcome.
pub const BINDING_SECS: u64 = 10 * 60;
/// How much of the state's storage key goes into the binding cookie's name.
const BINDING_NAME_KEY_CHARS: usize = 16;

/// The `SameSite` attribute.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Only same-site requests carry the cookie.
    Strict,
    /// Same-site requests and cross-site top-level `GET` navigations carry the cookie.
    Lax,
    /// Every request (requires `Secure`).
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// What the store keeps of a cookie value: base64url(SHA-256(value)). A database read does
/// not yield a working cookie.
pub fn stored_hash(value: &str) -> String {
    crate::encoding::sha256_base64url(value.as_bytes())
}

/// The binding cookie's name for the flow whose state has this storage key.
pub fn binding_cookie_name(key: &StateKey) -> String {
    let key = key.as_str();
    format!(
        "{BINDING_COOKIE_PREFIX}{}",
        &key[..BINDING_NAME_KEY_CHARS.min(key.len())]
    )
}

/// A `Set-Cookie` header value for a `__Host-` cookie: `Path=/`, `Secure`, `HttpOnly`.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64, same_site: SameSite) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; Secure; SameSite={}",
        same_site.as_str()
    )
}

/// A `Set-Cookie` header value that deletes the cookie now.
pub fn clear_cookie(name: &str, same_site: SameSite) -> String {
    set_cookie(name, "", 0, same_site)
}

/// The value of the first cookie called `name` in a `Cookie` request header.
pub fn cookie_value<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    cookie_header.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    #[test]
    fn binding_cookies_are_per_flow_and_host_prefixed() {
        let one = State::from_random_bytes(&[1; 16]).storage_key();
        let two = State::from_random_bytes(&[2; 16]).storage_key();
        let name = binding_cookie_name(&one);
        assert!(name.starts_with("__Host-consentry-tx-"));
        assert_eq!(name.len(), BINDING_COOKIE_PREFIX.len() + 16);
        assert_ne!(name, binding_cookie_name(&two));
        assert_eq!(
            set_cookie(&name, "v", BINDING_SECS, SameSite::Lax),
            format!("{name}=v; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax")
        );
        assert_eq!(
            set_cookie(&name, "v", BINDING_SECS, SameSite::None),
            format!("{name}=v; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=None")
        );
        assert_eq!(
            clear_cookie(SESSION_COOKIE, SameSite::Strict),
            "__Host-consentry-session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
        );
    }

    #[test]
    fn reads_the_named_cookie_only() {
        let header = "a=1; __Host-consentry-session=abc; __Host-consentry-session-x=no";
        assert_eq!(cookie_value(header, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie_value(header, "a"), Some("1"));
        assert_eq!(cookie_value(header, "__Host-consentry"), None);
        assert_eq!(cookie_value("", SESSION_COOKIE), None);
    }
}
