//! Which key seals and which opens a value at rest (tokens, verifiers, DPoP keys), so that
//! `CONSENTRY_KEY` can be rotated without losing a record.
//!
//! A sealed value is stored as `{key id}.{base64url(iv || ciphertext+tag)}`. The key id is
//! 8 base64url characters of SHA-256 over a label and the key: it names the key without
//! revealing it. Every new seal uses the current key (`CONSENTRY_KEY`); a value is opened
//! with the key its id names, the current one or `CONSENTRY_KEY_PREVIOUS`. A value written
//! before key ids existed (no `.`) is tried with the current key, then the previous one.
//! The encryption itself (AES-256-GCM, bound to its record by the additional data) is the
//! platform's: the Worker uses WebCrypto.

use crate::encoding::{base64url_decode, base64url_encode, sha256};
use crate::prelude::*;
use crate::{Error, ErrorCode, Result};

/// How many characters of the key's hash name it.
const KEY_ID_LEN: usize = 8;

/// A 256-bit sealing key and its id. `Debug` shows the id only.
pub struct SealingKey {
    id: String,
    bytes: [u8; 32],
}

impl SealingKey {
    /// Reads a key from its base64url text (32 random bytes), as held in the secret `name`.
    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let bytes = base64url_decode(text.trim())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::InvalidConfiguration,
                    format!("{name} must be 32 random bytes in base64url"),
                )
            })?;
        let digest = sha256(&[&b"consentry sealing key id\0"[..], &bytes].concat());
        let mut id = base64url_encode(&digest);
        id.truncate(KEY_ID_LEN);
        Ok(SealingKey { id, bytes })
    }

    /// The key's id, as sealed values name it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key itself. Never log it.
    pub fn secret(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The stored form of a value this key sealed (`sealed` is `iv || ciphertext+tag`).
    pub fn label(&self, sealed: &[u8]) -> String {
        format!("{}.{}", self.id, base64url_encode(sealed))
    }
}

impl core::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SealingKey({}, [redacted])", self.id)
    }
}

/// The keys in force: the current one, which seals, and the previous one, which only opens.
#[derive(Debug)]
pub struct SealingKeys {
    current: SealingKey,
    previous: Option<SealingKey>,
}

impl SealingKeys {
    /// The keys from `CONSENTRY_KEY` and, during a rotation, `CONSENTRY_KEY_PREVIOUS`. A
    /// previous key equal to the current one is no rotation and is ignored.
    pub fn new(current: SealingKey, previous: Option<SealingKey>) -> Self {
        let previous = previous.filter(|previous| previous.bytes != current.bytes);
        SealingKeys { current, previous }
    }

    /// The key every new seal uses.
    pub fn current(&self) -> &SealingKey {
        &self.current
    }

    /// The keys to try, in order, for a stored value, and its sealed bytes. A value naming
    /// a key that is neither the current nor the previous one is `invalid_configuration`
    /// (sealed under a key that was retired too soon); a value that is not one of ours is
    /// `record_unreadable`.
    pub fn to_open(&self, stored: &str) -> Result<(Vec<&SealingKey>, Vec<u8>)> {
        let (id, sealed) = match stored.split_once('.') {
            Some((id, sealed)) if is_key_id(id) => (Some(id), sealed),
            Some(_) => return Err(unreadable()),
            None => (None, stored),
        };
        let sealed = base64url_decode(sealed).ok_or_else(unreadable)?;
        let keys: Vec<&SealingKey> = core::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .filter(|key| id.is_none_or(|id| id == key.id))
            .collect();
        match id {
            Some(id) if keys.is_empty() => Err(Error::new(
                ErrorCode::InvalidConfiguration,
                format!(
                    "a stored value is sealed under key {id}, which is neither CONSENTRY_KEY \
                     nor CONSENTRY_KEY_PREVIOUS"
                ),
            )),
            _ => Ok((keys, sealed)),
        }
    }
}

/// Whether `id` can be a key id: [`KEY_ID_LEN`] base64url characters.
fn is_key_id(id: &str) -> bool {
    id.len() == KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A stored value that does not open for its record: altered, moved, not ours, or (one from
/// before key ids) sealed under a key the Worker no longer has.
pub fn unreadable() -> Error {
    Error::new(
        ErrorCode::RecordUnreadable,
        "a sealed value does not decrypt for its record (altered, moved, or sealed under a \
         retired key)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SealingKey {
        SealingKey::parse("CONSENTRY_KEY", &base64url_encode(&[byte; 32])).expect("a valid key")
    }

    #[test]
    fn key_ids_are_short_stable_and_differ_between_keys() {
        assert_eq!(key(1).id().len(), 8);
        assert_eq!(key(1).id(), key(1).id());
        assert_ne!(key(1).id(), key(2).id());
        assert!(is_key_id(key(1).id()));
        assert_eq!(
            format!("{:?}", key(1)),
            format!("SealingKey({}, [redacted])", key(1).id())
        );
    }

    #[test]
    fn a_key_must_be_32_bytes_of_base64url_and_its_error_names_the_secret() {
        for bad in ["", "not base64!", &base64url_encode(&[1; 31]), &base64url_encode(&[1; 33])] {
            let error = SealingKey::parse("CONSENTRY_KEY_PREVIOUS", bad).expect_err(bad);
            assert_eq!(error.code(), &ErrorCode::InvalidConfiguration);
            assert!(error.description().contains("CONSENTRY_KEY_PREVIOUS"));
        }
    }

    #[test]
    fn the_current_key_seals_and_the_named_key_opens() {
        let keys = SealingKeys::new(key(2), Some(key(1)));
        let stored = keys.current().label(b"sealed bytes");
        assert!(stored.starts_with(&format!("{}.", key(2).id())));
        let (to_try, sealed) = keys.to_open(&stored).expect("named key");
        assert_eq!(sealed, b"sealed bytes");
        assert_eq!(to_try.iter().map(|k| k.id()).collect::<Vec<_>>(), [key(2).id()]);

        let old = key(1).label(b"old bytes");
        let (to_try, _) = keys.to_open(&old).expect("the previous key still opens");
        assert_eq!(to_try.iter().map(|k| k.id()).collect::<Vec<_>>(), [key(1).id()]);
    }

    #[test]
    fn a_value_from_before_key_ids_tries_the_current_key_then_the_previous() {
        let keys = SealingKeys::new(key(2), Some(key(1)));
        let (to_try, sealed) = keys.to_open(&base64url_encode(b"legacy")).expect("legacy");
        assert_eq!(sealed, b"legacy");
        let ids: Vec<_> = to_try.iter().map(|k| k.id()).collect();
        assert_eq!(ids, [key(2).id(), key(1).id()]);
    }

    #[test]
    fn a_retired_key_is_a_configuration_error_and_garbage_is_unreadable() {
        let keys = SealingKeys::new(key(3), None);
        let error = keys.to_open(&key(1).label(b"x")).expect_err("retired key");
        assert_eq!(error.code(), &ErrorCode::InvalidConfiguration);
        assert!(error.description().contains(key(1).id()));
        let long_id = format!("{}.AAAA", base64url_encode(&[7; 32]));
        for garbage in ["abc.AAAA", "Ab3_xY9z.!!!", ".", "x.y.z", "!!!", &long_id] {
            let error = keys.to_open(garbage).expect_err(garbage);
            assert_eq!(error.code(), &ErrorCode::RecordUnreadable, "{garbage}");
            assert!(!error.description().contains(&base64url_encode(&[7; 32])));
        }
    }

    #[test]
    fn a_previous_key_equal_to_the_current_one_is_ignored() {
        let keys = SealingKeys::new(key(1), Some(key(1)));
        let (to_try, _) = keys.to_open(&base64url_encode(b"legacy")).expect("legacy");
        assert_eq!(to_try.len(), 1);
    }
}
