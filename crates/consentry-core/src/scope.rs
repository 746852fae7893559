//! Scopes ([RFC 6749 §3.3](https://www.rfc-editor.org/rfc/rfc6749#section-3.3)).

use crate::error::{Error, ErrorCode, Result};
use crate::prelude::*;

/// An ordered set of scope tokens, written space-delimited on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(Vec<String>);

impl Scopes {
    /// Parses a space-delimited scope string; each token must be `%x21 / %x23-5B / %x5D-7E`.
    /// Repeated tokens are kept once, in first-seen order.
    pub fn parse(scope: &str) -> Result<Self> {
        Scopes::from_tokens(scope.split(' ').filter(|token| !token.is_empty()))
    }

    /// Builds scopes from individual tokens, validating each.
    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let mut scopes = Vec::<String>::new();
        for token in tokens {
            let valid = !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if !valid {
                return Err(Error::new(
                    ErrorCode::InvalidParameter,
                    "a scope token may hold only printable ASCII other than space, \" and \\",
                ));
            }
            if !scopes.iter().any(|known| known == token) {
                scopes.push(token.to_owned());
            }
        }
        Ok(Scopes(scopes))
    }

    /// Whether `token` is one of these scopes.
    pub fn contains(&self, token: &str) -> bool {
        self.0.iter().any(|known| known == token)
    }

    /// Whether there are no scopes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tokens in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The space-delimited wire form.
    pub fn to_wire(&self) -> String {
        // A loop, not `join`: the browser module carries this, and `join`'s generic copy
        // costs it half a kilobyte.
        let mut wire = String::new();
        for token in &self.0 {
            if !wire.is_empty() {
                wire.push(' ');
            }
            wire.push_str(token);
        }
        wire
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dedupes_and_writes_back() {
        let scopes = Scopes::parse("openid  accounts openid offline_access").expect("valid");
        assert_eq!(scopes.to_wire(), "openid accounts offline_access");
        assert!(scopes.contains("accounts"));
        assert!(!scopes.contains("balance"));
        assert!(Scopes::parse("").expect("empty is fine").is_empty());
    }

    #[test]
    fn rejects_quote_backslash_and_non_ascii() {
        for bad in ["a\"b", "a\\b", "é", "tab\tscope"] {
            assert!(Scopes::parse(bad).is_err(), "{bad:?}");
        }
    }
}
