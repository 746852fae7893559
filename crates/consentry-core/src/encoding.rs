//! Byte and text encodings the protocol needs: unpadded base64url
//! ([RFC 4648 §5](https://www.rfc-editor.org/rfc/rfc4648#section-5), as JOSE and PKCE use it),
//! `application/x-www-form-urlencoded`, and SHA-256.

use alloc::borrow::Cow;

use sha2::{Digest, Sha256};

use crate::prelude::*;

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes bytes as base64url without padding.
pub fn base64url_encode(bytes: &[u8]) -> String {
    base64_encode_with(bytes, BASE64URL, false)
}

/// Encodes bytes as standard padded base64
/// ([RFC 4648 §4](https://www.rfc-editor.org/rfc/rfc4648#section-4)), as HTTP Basic uses it.
pub fn base64_encode(bytes: &[u8]) -> String {
    base64_encode_with(bytes, BASE64, true)
}

fn base64_encode_with(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for &sextet in &sextets[..chunk.len() + 1] {
            out.push(char::from(alphabet[sextet as usize]));
        }
        if pad {
            out.extend(core::iter::repeat_n('=', 3 - chunk.len()));
        }
    }
    out
}

/// Decodes unpadded base64url; `None` on any character outside the alphabet, on padding,
/// on an impossible length, or on non-zero trailing bits (so each input has one decoding).
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    }
    let input = text.as_bytes();
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    for chunk in input.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = chunk.len() - 1;
        if bytes[keep..].iter().any(|&b| b != 0) && chunk.len() < 4 {
            return None;
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// base64url(SHA-256(`data`)): the S256 challenge, the state's storage key, a JWK
/// thumbprint, DPoP's `ath`, and what the store keeps of a cookie value.
pub fn sha256_base64url(data: &[u8]) -> String {
    base64url_encode(&sha256(data))
}

#[cfg(feature = "std")]
/// Serializes name/value pairs as `application/x-www-form-urlencoded`.
pub fn form_encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[cfg(feature = "std")]
/// Percent-encodes one component the way `application/x-www-form-urlencoded` does
/// (used for the client id and secret of `client_secret_basic`, RFC 6749 §2.3.1).
pub fn form_encode_component(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(feature = "std")]
/// Parses `application/x-www-form-urlencoded` (a query string or a form body) into pairs,
/// in order, duplicates kept.
pub fn form_decode(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

#[cfg(feature = "std")]
/// The value of a form field that occurs exactly once (absent or repeated: `None`).
pub fn form_value(body: &str, name: &str) -> Option<String> {
    let mut values = form_decode(body).into_iter().filter(|(key, _)| key == name);
    match (values.next(), values.next()) {
        (Some((_, value)), None) => Some(value),
        _ => None,
    }
}

/// Whether `text` is only RFC 3986 unreserved characters, `[A-Za-z0-9-._~]`: the alphabet
/// of PKCE verifiers and of the states consentry accepts, which never need escaping.
pub fn is_unreserved(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `text` as it may stand in a log line: characters other than `[A-Za-z0-9_.:~-]` are
/// percent-encoded, so a value from outside (a provider's error string) can neither end the
/// line nor pose as another `name=value` field of it.
pub fn log_field(text: &str) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'~' | b'-');
    if text.bytes().all(plain) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// A message from elsewhere (a storage error's text) as it may stand in a log line: control
/// characters are escaped (`\n`, `\u{7}`), so it cannot end the line and start a forged one.
pub fn log_message(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors_without_padding() {
        // RFC 4648 §10, padding removed.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url_encode(plain.as_bytes()), encoded);
            assert_eq!(base64url_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base64url_encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64_encode(&[0xfb, 0xff]), "+/8=");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64url_decode("-_8"), Some(vec![0xfb, 0xff]));
    }

    #[test]
    fn base64url_rejects_padding_other_alphabets_and_bad_lengths() {
        assert_eq!(base64url_decode("Zg=="), None);
        assert_eq!(base64url_decode("+/8"), None);
        assert_eq!(base64url_decode("Zm9vY"), None);
        // "Zh" has non-zero trailing bits: a second spelling of "f" that must not decode.
        assert_eq!(base64url_decode("Zh"), None);
    }

    #[test]
    fn form_encoding_round_trips_and_keeps_duplicates() {
        let body = form_encode([("a b", "c&d=e"), ("x", "1"), ("x", "2")]);
        assert_eq!(body, "a+b=c%26d%3De&x=1&x=2");
        assert_eq!(
            form_decode(&body),
            vec![
                ("a b".to_owned(), "c&d=e".to_owned()),
                ("x".to_owned(), "1".to_owned()),
                ("x".to_owned(), "2".to_owned()),
            ]
        );
    }

    #[test]
    fn sha256_of_abc() {
        // FIPS 180-2 Appendix B.1.
        assert_eq!(
            sha256_base64url(b"abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }

    #[test]
    fn log_fields_cannot_end_a_line_or_add_a_field() {
        assert_eq!(log_field("token_exchange_failed"), "token_exchange_failed");
        assert_eq!(
            log_field("mh:consent-expired.v2~"),
            "mh:consent-expired.v2~"
        );
        assert_eq!(
            log_field("x http=200\nconsentry: forged"),
            "x%20http%3D200%0Aconsentry:%20forged"
        );
        assert_eq!(log_field("é"), "%C3%A9");
        assert_eq!(
            log_message("no such table: consents"),
            "no such table: consents"
        );
        assert_eq!(
            log_message("injected\nconsentry: forged \"x\" 'y'"),
            "injected\\nconsentry: forged \"x\" 'y'"
        );
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
