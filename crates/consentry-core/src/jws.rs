//! Producing compact JWS ([RFC 7515 §7.1](https://www.rfc-editor.org/rfc/rfc7515#section-7.1))
//! without holding a key: the core builds the signing input, the platform (WebCrypto) signs
//! it, and the core assembles the result.

use serde_json::{Map, Value};

use crate::encoding::base64url_encode;
use crate::error::{Error, ErrorCode, Result};

/// A JWS algorithm consentry can sign or verify with
/// ([RFC 7518 §3.1](https://www.rfc-editor.org/rfc/rfc7518#section-3.1)). `none` is not one.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    /// RSASSA-PSS with SHA-256 (FAPI 2.0's preferred RSA algorithm).
    PS256,
    /// ECDSA P-256 with SHA-256; the signature is `r || s`, 64 bytes.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (common for id_tokens; not allowed by FAPI 2.0).
    RS256,
    /// HMAC SHA-256 with a shared secret (Connect-style access tokens).
    HS256,
    /// EdDSA with Ed25519 ([RFC 8037](https://www.rfc-editor.org/rfc/rfc8037)).
    EdDSA,
}

impl JwsAlgorithm {
    /// Reads an `alg` value; anything unknown, including `none`, is an error.
    pub fn parse(alg: &str) -> Result<Self> {
        match alg {
            "PS256" => Ok(JwsAlgorithm::PS256),
            "ES256" => Ok(JwsAlgorithm::ES256),
            "RS256" => Ok(JwsAlgorithm::RS256),
            "HS256" => Ok(JwsAlgorithm::HS256),
            "EdDSA" => Ok(JwsAlgorithm::EdDSA),
            _ => Err(Error::new(
                ErrorCode::JwtAlgNotAllowed,
                "unsupported JWS alg (only PS256, ES256, RS256, HS256, EdDSA; never none)",
            )),
        }
    }

    /// This algorithm if it signs with a private key; HS256 is refused with
    /// [`ErrorCode::JwtAlgNotAllowed`], naming `purpose` (client assertions, request objects
    /// and DPoP proofs are never signed with a shared secret).
    pub fn require_asymmetric(self, purpose: &str) -> Result<Self> {
        match self {
            JwsAlgorithm::HS256 => Err(Error::new(
                ErrorCode::JwtAlgNotAllowed,
                format!("{purpose} must be signed with PS256, ES256, RS256 or EdDSA, not HS256"),
            )),
            asymmetric => Ok(asymmetric),
        }
    }

    /// Whether a JWK of type `kty` (and curve `crv`) can sign or verify with this algorithm:
    /// RSA for PS256/RS256, EC P-256 for ES256, OKP Ed25519 for EdDSA
    /// ([RFC 7518 §6](https://www.rfc-editor.org/rfc/rfc7518#section-6),
    /// [RFC 8037 §2](https://www.rfc-editor.org/rfc/rfc8037#section-2)). HS256 fits no JWK:
    /// its key is a shared secret.
    pub fn fits_jwk(self, kty: &str, crv: Option<&str>) -> bool {
        match self {
            JwsAlgorithm::PS256 | JwsAlgorithm::RS256 => kty == "RSA",
            JwsAlgorithm::ES256 => kty == "EC" && crv == Some("P-256"),
            JwsAlgorithm::EdDSA => kty == "OKP" && crv == Some("Ed25519"),
            JwsAlgorithm::HS256 => false,
        }
    }

    /// The `alg` string.
    pub fn as_str(self) -> &'static str {
        match self {
            JwsAlgorithm::PS256 => "PS256",
            JwsAlgorithm::ES256 => "ES256",
            JwsAlgorithm::RS256 => "RS256",
            JwsAlgorithm::HS256 => "HS256",
            JwsAlgorithm::EdDSA => "EdDSA",
        }
    }
}

/// A JWS to be signed: its protected header and its claims, serialized once.
#[derive(Debug, Clone)]
pub struct JwsSigningInput {
    signing_input: String,
    alg: JwsAlgorithm,
}

impl JwsSigningInput {
    /// Builds `BASE64URL(header) . BASE64URL(claims)` for a header with `alg`, `typ`,
    /// an optional `kid` and any `extra` header members (e.g. DPoP's `jwk`).
    pub fn new(
        alg: JwsAlgorithm,
        typ: &str,
        kid: Option<&str>,
        extra_header: Map<String, Value>,
        claims: &Value,
    ) -> Self {
        let mut header = Map::new();
        header.insert("alg".into(), alg.as_str().into());
        header.insert("typ".into(), typ.into());
        if let Some(kid) = kid {
            header.insert("kid".into(), kid.into());
        }
        header.extend(extra_header);
        let signing_input = format!(
            "{}.{}",
            base64url_encode(Value::Object(header).to_string().as_bytes()),
            base64url_encode(claims.to_string().as_bytes())
        );
        JwsSigningInput { signing_input, alg }
    }

    /// The algorithm the platform must sign with.
    pub fn alg(&self) -> JwsAlgorithm {
        self.alg
    }

    /// The bytes to sign.
    pub fn as_bytes(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    /// The compact JWS: signing input, `.`, base64url of the platform's signature
    /// (for ES256, the 64-byte `r || s` that WebCrypto returns).
    pub fn assemble(self, signature: &[u8]) -> String {
        format!("{}.{}", self.signing_input, base64url_encode(signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::base64url_decode;
    use serde_json::json;

    #[test]
    fn none_and_unknown_algorithms_are_refused() {
        for bad in ["none", "None", "HS512", ""] {
            let code = JwsAlgorithm::parse(bad).map_err(|e| e.code().clone());
            assert_eq!(code, Err(ErrorCode::JwtAlgNotAllowed));
        }
        assert_eq!(JwsAlgorithm::parse("PS256"), Ok(JwsAlgorithm::PS256));
    }

    #[test]
    fn each_algorithm_fits_only_its_key_type() {
        assert!(JwsAlgorithm::PS256.fits_jwk("RSA", None));
        assert!(JwsAlgorithm::RS256.fits_jwk("RSA", None));
        assert!(JwsAlgorithm::ES256.fits_jwk("EC", Some("P-256")));
        assert!(!JwsAlgorithm::ES256.fits_jwk("EC", Some("P-384")));
        assert!(!JwsAlgorithm::ES256.fits_jwk("RSA", None));
        assert!(JwsAlgorithm::EdDSA.fits_jwk("OKP", Some("Ed25519")));
        assert!(!JwsAlgorithm::EdDSA.fits_jwk("OKP", Some("X25519")));
        assert!(!JwsAlgorithm::HS256.fits_jwk("oct", None));
        assert_eq!(
            JwsAlgorithm::HS256
                .require_asymmetric("a test")
                .map_err(|e| e.code().clone()),
            Err(ErrorCode::JwtAlgNotAllowed)
        );
        assert_eq!(
            JwsAlgorithm::ES256.require_asymmetric("a test"),
            Ok(JwsAlgorithm::ES256)
        );
    }

    #[test]
    fn signing_input_is_header_dot_claims() {
        let input = JwsSigningInput::new(
            JwsAlgorithm::ES256,
            "JWT",
            Some("k1"),
            Map::new(),
            &json!({"iss": "client"}),
        );
        let text = std::str::from_utf8(input.as_bytes()).expect("ascii");
        let (header, claims) = text.split_once('.').expect("two parts");
        let header: Value =
            serde_json::from_slice(&base64url_decode(header).expect("b64")).expect("json");
        assert_eq!(header, json!({"alg": "ES256", "typ": "JWT", "kid": "k1"}));
        assert_eq!(
            base64url_decode(claims).expect("b64"),
            br#"{"iss":"client"}"#
        );
        let jws = input.assemble(&[0xfb, 0xff]);
        assert!(jws.ends_with(".-_8"));
        assert_eq!(jws.split('.').count(), 3);
    }
}
