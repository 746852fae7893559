//! Proof Key for Code Exchange ([RFC 7636](https://www.rfc-editor.org/rfc/rfc7636)), S256 only.

use crate::encoding::{base64url_encode, is_unreserved, sha256_base64url};
use crate::error::{Error, ErrorCode, Result};
use crate::prelude::*;
use crate::secret::secret_type;

/// Bytes of randomness in a generated verifier: 32 bytes give 43 base64url characters
/// ([RFC 7636 §4.1](https://www.rfc-editor.org/rfc/rfc7636#section-4.1)).
pub const VERIFIER_RANDOM_BYTES: usize = 32;

secret_type! {
    /// A PKCE `code_verifier` ([RFC 7636 §4.1](https://www.rfc-editor.org/rfc/rfc7636#section-4.1)).
    ///
    /// Not `Clone`: a verifier is made once, sent to the Worker once, used in one token request.
    validated PkceCodeVerifier
}

impl PkceCodeVerifier {
    /// A fresh verifier from 32 random bytes supplied by the platform's CSPRNG.
    pub fn from_random_bytes(random: &[u8; VERIFIER_RANDOM_BYTES]) -> Self {
        PkceCodeVerifier(base64url_encode(random))
    }

    /// Accepts a verifier that arrived from elsewhere (the browser's start request):
    /// 43 to 128 characters of `[A-Za-z0-9-._~]`, as RFC 7636 §4.1 requires.
    pub fn parse(verifier: &str) -> Result<Self> {
        let valid_length = (43..=128).contains(&verifier.len());
        let valid_chars = is_unreserved(verifier);
        if valid_length && valid_chars {
            Ok(PkceCodeVerifier(verifier.to_owned()))
        } else {
            Err(Error::new(
                ErrorCode::InvalidVerifier,
                "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~",
            ))
        }
    }

    /// The S256 `code_challenge` for this verifier (RFC 7636 §4.2).
    pub fn challenge(&self) -> PkceCodeChallenge {
        PkceCodeChallenge(sha256_base64url(self.0.as_bytes()))
    }
}

/// A PKCE `code_challenge` with method `S256`
/// ([RFC 7636 §4.2](https://www.rfc-editor.org/rfc/rfc7636#section-4.2)). Public by design.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkceCodeChallenge(String);

impl PkceCodeChallenge {
    /// The `code_challenge_method` consentry always uses.
    pub const METHOD: &'static str = "S256";

    /// The challenge string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        let random: [u8; 32] = [
            116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212,
            37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121,
        ];
        let verifier = PkceCodeVerifier::from_random_bytes(&random);
        assert_eq!(
            verifier.secret(),
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        );
        assert_eq!(
            verifier.challenge().as_str(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn generated_verifier_is_43_chars_and_parses_back() {
        let verifier = PkceCodeVerifier::from_random_bytes(&[0xff; 32]);
        assert_eq!(verifier.secret().len(), 43);
        assert!(PkceCodeVerifier::parse(verifier.secret()).is_ok());
    }

    #[test]
    fn incoming_verifier_length_and_charset_are_enforced() {
        assert!(PkceCodeVerifier::parse(&"a".repeat(43)).is_ok());
        assert!(PkceCodeVerifier::parse(&"~._-".repeat(32)).is_ok());
        for bad in [
            "a".repeat(42),
            "a".repeat(129),
            String::new(),
            format!("{}+", "a".repeat(42)),
            format!("{}=", "a".repeat(42)),
            format!("{} ", "a".repeat(42)),
            format!("{}é", "a".repeat(41)),
        ] {
            let error = PkceCodeVerifier::parse(&bad)
                .err()
                .map(|e| e.code().clone());
            assert_eq!(error, Some(ErrorCode::InvalidVerifier), "{bad:?}");
        }
    }

    #[test]
    fn verifier_debug_is_redacted() {
        let verifier = PkceCodeVerifier::from_random_bytes(&[7; 32]);
        assert_eq!(format!("{verifier:?}"), "PkceCodeVerifier([redacted])");
    }
}
