//! The `state` parameter ([RFC 6749 §10.12](https://www.rfc-editor.org/rfc/rfc6749#section-10.12))
//! and the OpenID Connect `nonce`: opaque random values that bind a response to its request.

use crate::encoding::{base64url_encode, is_unreserved, sha256_base64url};
use crate::error::{Error, ErrorCode, Result};
use crate::prelude::*;

/// Minimum random bytes in a generated `state` or `nonce` (128 bits).
pub const MIN_RANDOM_BYTES: usize = 16;

/// Longest `state` accepted from outside.
pub const MAX_STATE_LEN: usize = 255;

/// An opaque `state` value.
///
/// Generated from at least 16 random bytes; when it comes back, it must be 1 to 255
/// characters of `[A-Za-z0-9-._~]` (unreserved URL characters, so it never needs escaping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State(String);

impl State {
    /// A fresh state from 16 bytes of the platform's CSPRNG (128 bits, 22 characters).
    pub fn from_random_bytes(random: &[u8; MIN_RANDOM_BYTES]) -> Self {
        State(base64url_encode(random))
    }

    /// Accepts a state that arrived from a browser or a redirect.
    pub fn parse(state: &str) -> Result<Self> {
        let valid_length = (1..=MAX_STATE_LEN).contains(&state.len());
        let valid_chars = is_unreserved(state);
        if valid_length && valid_chars {
            Ok(State(state.to_owned()))
        } else {
            Err(Error::new(
                ErrorCode::InvalidState,
                "state must be 1 to 255 characters of A-Z a-z 0-9 - . _ ~",
            ))
        }
    }

    /// The state string, as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key a transaction is stored under: base64url(SHA-256(state)), so the raw value
    /// that travels through URLs is never a database key.
    pub fn storage_key(&self) -> StateKey {
        StateKey(sha256_base64url(self.0.as_bytes()))
    }
}

/// The storage key of a transaction, derived from its [`State`] by [`State::storage_key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateKey(String);

impl StateKey {
    /// The key as text (43 base64url characters).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An OpenID Connect `nonce`
/// ([Core §3.1.2.1](https://openid.net/specs/openid-connect-core-1_0.html#AuthRequest)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nonce(String);

impl Nonce {
    /// A fresh nonce from 16 bytes of the platform's CSPRNG (128 bits).
    pub fn from_random_bytes(random: &[u8; MIN_RANDOM_BYTES]) -> Self {
        Nonce(base64url_encode(random))
    }

    /// A nonce read back from storage.
    pub fn new(nonce: impl Into<String>) -> Self {
        Nonce(nonce.into())
    }

    /// The nonce string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_state_has_at_least_128_bits_and_parses_back() {
        let state = State::from_random_bytes(&[42; 16]);
        assert_eq!(state.as_str().len(), 22);
        assert_eq!(State::parse(state.as_str()), Ok(state));
    }

    #[test]
    fn incoming_state_length_and_charset_are_enforced() {
        assert!(State::parse(&"s".repeat(255)).is_ok());
        for bad in [
            String::new(),
            "s".repeat(256),
            "a b".into(),
            "a&b=c".into(),
            "<script>".into(),
            "é".into(),
        ] {
            let code = State::parse(&bad).map_err(|e| e.code().clone());
            assert_eq!(code, Err(ErrorCode::InvalidState), "{bad:?}");
        }
    }

    #[test]
    fn storage_key_is_a_hash_not_the_state() {
        let state = State::parse("af0ifjsldkj").expect("valid");
        let key = state.storage_key();
        // base64url(SHA-256("af0ifjsldkj")), computed independently (Node's crypto).
        assert_eq!(key.as_str(), "bOhtX8F73IMjSPeVAqxyTQiEkXHxVyptgiWb4BWYG30");
        assert_eq!(
            key,
            State::parse("af0ifjsldkj").expect("valid").storage_key()
        );
        assert_ne!(
            key,
            State::parse("af0ifjsldkk").expect("valid").storage_key()
        );
    }

    #[test]
    fn nonce_is_128_bits_of_base64url() {
        assert_eq!(
            Nonce::from_random_bytes(&[0xff; 16]).as_str(),
            "_____________________w"
        );
    }
}
