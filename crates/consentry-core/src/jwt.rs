//! Reading a compact JWS ([RFC 7515 §7.1](https://www.rfc-editor.org/rfc/rfc7515#section-7.1))
//! that carries JWT claims ([RFC 7519 §7.2](https://www.rfc-editor.org/rfc/rfc7519#section-7.2)),
//! and recording that its signature verified.
//!
//! [`UnverifiedJwt::parse`] checks the structure, the pinned `alg` allow-list and `crit`. Then
//! exactly one of two doors leads to a [`VerifiedJwt`]:
//!
//! - HS256: the core computes the MAC itself ([`UnverifiedJwt::verify_hs256`]);
//! - PS256, ES256, RS256, EdDSA: the platform (WebCrypto) verifies with the key that
//!   [`JwkSet::select`](crate::jwk::JwkSet::select) chose, and the core records the verdict
//!   ([`UnverifiedJwt::into_verified`]).
//!
//! Claims are validated only on a [`VerifiedJwt`] (see [`crate::id_token`]), so a claim is
//! never trusted before its signature.

use std::fmt;

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::encoding::base64url_decode;
use crate::error::{Error, ErrorCode, Result};
use crate::jws::JwsAlgorithm;

/// Length of an ES256 signature as JWS carries it: `r || s`, 32 bytes each
/// ([RFC 7518 §3.4](https://www.rfc-editor.org/rfc/rfc7518#section-3.4)).
pub const ES256_SIGNATURE_LEN: usize = 64;

fn malformed(description: impl Into<String>) -> Error {
    Error::new(ErrorCode::JwtMalformed, description)
}

fn alg_not_allowed(description: impl Into<String>) -> Error {
    Error::new(ErrorCode::JwtAlgNotAllowed, description)
}

/// The JOSE header of a JWS ([RFC 7515 §4.1](https://www.rfc-editor.org/rfc/rfc7515#section-4.1)):
/// the members consentry acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtHeader {
    alg: JwsAlgorithm,
    kid: Option<String>,
    typ: Option<String>,
}

impl JwtHeader {
    /// Reads the header: no `crit`, and an `alg` that is known and on the allow-list.
    fn from_json(header: &Map<String, Value>, allowed: &[JwsAlgorithm]) -> Result<Self> {
        if header.contains_key("crit") {
            return Err(Error::new(
                ErrorCode::JwtCritUnsupported,
                "JWT header has crit; consentry understands no critical header extensions",
            ));
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| alg_not_allowed("JWT header has no alg string"))?;
        let alg = JwsAlgorithm::parse(alg)?;
        if !allowed.contains(&alg) {
            return Err(alg_not_allowed(format!(
                "JWT alg {} is not on the allow-list for this provider",
                alg.as_str()
            )));
        }
        Ok(JwtHeader {
            alg,
            kid: optional_header_string(header, "kid")?,
            typ: optional_header_string(header, "typ")?,
        })
    }

    /// `alg` ([RFC 7515 §4.1.1](https://www.rfc-editor.org/rfc/rfc7515#section-4.1.1)):
    /// always one of the allowed algorithms, never `none`.
    pub fn alg(&self) -> JwsAlgorithm {
        self.alg
    }

    /// `kid` ([RFC 7515 §4.1.4](https://www.rfc-editor.org/rfc/rfc7515#section-4.1.4)):
    /// names the JWKS key that signed.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// `typ` ([RFC 7515 §4.1.9](https://www.rfc-editor.org/rfc/rfc7515#section-4.1.9)),
    /// e.g. `JWT` or `at+jwt`.
    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }
}

fn optional_header_string(header: &Map<String, Value>, name: &str) -> Result<Option<String>> {
    match header.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(malformed(format!("JWT header {name} is not a string"))),
    }
}

fn decode_segment(segment: &str, name: &str) -> Result<Vec<u8>> {
    base64url_decode(segment).ok_or_else(|| malformed(format!("JWT {name} is not base64url")))
}

fn decode_json_object(segment: &str, name: &str) -> Result<Map<String, Value>> {
    match serde_json::from_slice(&decode_segment(segment, name)?) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(malformed(format!("JWT {name} is not a JSON object"))),
    }
}

fn decode_signature(segment: &str, alg: JwsAlgorithm) -> Result<Vec<u8>> {
    let signature = decode_segment(segment, "signature")?;
    if signature.is_empty() {
        return Err(malformed("JWT signature is empty"));
    }
    if alg == JwsAlgorithm::ES256 && signature.len() != ES256_SIGNATURE_LEN {
        return Err(malformed("ES256 JWT signature must be 64 bytes (r || s)"));
    }
    Ok(signature)
}

/// A compact JWS whose structure and `alg` are acceptable but whose signature has not been
/// checked yet ([RFC 7515 §5.2](https://www.rfc-editor.org/rfc/rfc7515#section-5.2), steps 1-7).
///
/// Its claims are deliberately not reachable: verify first, with
/// [`verify_hs256`](Self::verify_hs256) or [`into_verified`](Self::into_verified).
/// `Debug` shows only the header, since the rest is nearly the whole token.
pub struct UnverifiedJwt {
    header: JwtHeader,
    claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

impl UnverifiedJwt {
    /// Parses a compact JWS ([RFC 7515 §7.1](https://www.rfc-editor.org/rfc/rfc7515#section-7.1))
    /// whose payload is a JWT Claims Set ([RFC 7519 §7.2](https://www.rfc-editor.org/rfc/rfc7519#section-7.2)).
    ///
    /// Exactly three strict base64url segments; header and payload JSON objects; a non-empty
    /// signature (64 bytes for ES256). `alg` must be in `allowed` (`none` never is) or the
    /// result is [`ErrorCode::JwtAlgNotAllowed`]; a `crit` header is
    /// [`ErrorCode::JwtCritUnsupported`]; anything else wrong is [`ErrorCode::JwtMalformed`].
    pub fn parse(compact: &str, allowed: &[JwsAlgorithm]) -> Result<Self> {
        let segments: Vec<&str> = compact.split('.').collect();
        let [encoded_header, encoded_payload, encoded_signature] = segments[..] else {
            return Err(malformed(
                "a JWT must have exactly three segments: header.payload.signature",
            ));
        };
        let header = JwtHeader::from_json(&decode_json_object(encoded_header, "header")?, allowed)?;
        let claims = decode_json_object(encoded_payload, "payload")?;
        let signature = decode_signature(encoded_signature, header.alg)?;
        Ok(UnverifiedJwt {
            header,
            claims,
            signing_input: format!("{encoded_header}.{encoded_payload}"),
            signature,
        })
    }

    /// The JOSE header, to choose the verification key by.
    pub fn header(&self) -> &JwtHeader {
        &self.header
    }

    /// The JWS Signing Input, `BASE64URL(header) . BASE64URL(payload)` exactly as received
    /// ([RFC 7515 §5.2](https://www.rfc-editor.org/rfc/rfc7515#section-5.2) step 8).
    pub fn signing_input(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    /// The decoded JWS Signature (for ES256, `r || s` as WebCrypto's ECDSA verify expects).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Verifies an HS256 JWS with the shared key
    /// ([RFC 7518 §3.2](https://www.rfc-editor.org/rfc/rfc7518#section-3.2)), comparing the
    /// MAC in constant time.
    ///
    /// Fails with [`ErrorCode::JwtAlgNotAllowed`] if the JWT is not HS256,
    /// [`ErrorCode::InvalidConfiguration`] if `key` is empty, and
    /// [`ErrorCode::JwtSignatureInvalid`] if the MAC does not match.
    pub fn verify_hs256(self, key: &[u8]) -> Result<VerifiedJwt> {
        if self.header.alg != JwsAlgorithm::HS256 {
            return Err(alg_not_allowed(format!(
                "verify_hs256 verifies HS256 only; this JWT is {}",
                self.header.alg.as_str()
            )));
        }
        if key.is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidConfiguration,
                "the HS256 key is empty",
            ));
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(key)
            .map_err(|_| Error::new(ErrorCode::InvalidConfiguration, "unusable HS256 key"))?;
        mac.update(self.signing_input());
        mac.verify_slice(&self.signature)
            .map_err(|_| signature_invalid())?;
        Ok(self.into_verified_unchecked())
    }

    /// Records the platform's verdict on an asymmetric signature (PS256, ES256, RS256, EdDSA;
    /// [RFC 7515 §5.2](https://www.rfc-editor.org/rfc/rfc7515#section-5.2) step 8).
    ///
    /// The adapter must pass exactly the result of verifying [`signature()`](Self::signature)
    /// over [`signing_input()`](Self::signing_input) with the key that
    /// [`JwkSet::select`](crate::jwk::JwkSet::select) chose for [`header()`](Self::header),
    /// imported from [`Jwk::public_json`](crate::jwk::Jwk::public_json): in WebCrypto,
    /// `RSASSA-PKCS1-v1_5`/SHA-256 for RS256, `RSA-PSS` with `saltLength: 32` for PS256,
    /// `ECDSA` P-256/SHA-256 for ES256, `Ed25519` for EdDSA. `false` gives
    /// [`ErrorCode::JwtSignatureInvalid`]. HS256 is refused here
    /// ([`ErrorCode::JwtAlgNotAllowed`]): the core verifies it with
    /// [`verify_hs256`](Self::verify_hs256).
    pub fn into_verified(self, signature_valid: bool) -> Result<VerifiedJwt> {
        if self.header.alg == JwsAlgorithm::HS256 {
            return Err(alg_not_allowed(
                "HS256 is verified by verify_hs256, not by the platform",
            ));
        }
        if !signature_valid {
            return Err(signature_invalid());
        }
        Ok(self.into_verified_unchecked())
    }

    fn into_verified_unchecked(self) -> VerifiedJwt {
        VerifiedJwt {
            header: self.header,
            claims: self.claims,
        }
    }
}

impl fmt::Debug for UnverifiedJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnverifiedJwt")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

fn signature_invalid() -> Error {
    Error::new(
        ErrorCode::JwtSignatureInvalid,
        "JWT signature does not verify",
    )
}

/// A JWT whose signature verified
/// ([RFC 7519 §7.2](https://www.rfc-editor.org/rfc/rfc7519#section-7.2)); only
/// [`UnverifiedJwt::verify_hs256`] and [`UnverifiedJwt::into_verified`] make one.
///
/// Its claims are authentic but not yet validated: pass it to
/// [`validate_id_token_claims`](crate::id_token::validate_id_token_claims) or
/// [`validate_jwt_access_token_claims`](crate::id_token::validate_jwt_access_token_claims).
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    header: JwtHeader,
    claims: Map<String, Value>,
}

impl VerifiedJwt {
    /// The JOSE header.
    pub fn header(&self) -> &JwtHeader {
        &self.header
    }

    /// The JWT Claims Set ([RFC 7519 §4](https://www.rfc-editor.org/rfc/rfc7519#section-4)).
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
}

/// Builders of signed test tokens, shared by the tests of the modules that read JWTs.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::encoding::base64url_encode;
    use crate::jws::JwsSigningInput;

    /// The HS256 key every test token is signed with.
    pub(crate) const TEST_KEY: &[u8] = b"a test key of at least thirty-two bytes";

    /// A compact JWS of raw header and payload text and raw signature bytes.
    pub(crate) fn compact(header: &str, payload: &str, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            base64url_encode(header.as_bytes()),
            base64url_encode(payload.as_bytes()),
            base64url_encode(signature)
        )
    }

    /// An HS256 JWT of `claims`, signed with `key`.
    pub(crate) fn sign_hs256(claims: &Value, key: &[u8]) -> String {
        let input = JwsSigningInput::new(JwsAlgorithm::HS256, "JWT", None, Map::new(), claims);
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(input.as_bytes());
        let tag = mac.finalize().into_bytes();
        input.assemble(&tag)
    }

    /// `claims` signed with [`TEST_KEY`], parsed and verified.
    pub(crate) fn verified_hs256(claims: &Value) -> VerifiedJwt {
        UnverifiedJwt::parse(&sign_hs256(claims, TEST_KEY), &[JwsAlgorithm::HS256])
            .expect("well formed")
            .verify_hs256(TEST_KEY)
            .expect("signed with TEST_KEY")
    }

    /// The header of a token with this `alg` and optional `kid`.
    pub(crate) fn header(alg: JwsAlgorithm, kid: Option<&str>) -> JwtHeader {
        let mut header = serde_json::json!({ "alg": alg.as_str() });
        if let Some(kid) = kid {
            header["kid"] = kid.into();
        }
        let token = compact(&header.to_string(), "{}", &[7; ES256_SIGNATURE_LEN]);
        UnverifiedJwt::parse(&token, &[alg])
            .expect("well formed")
            .header()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::encoding::base64url_encode;
    use serde_json::json;

    // RFC 7515 Appendix A.1: the JWS and the JWK `k` it was made with.
    const A1_HEADER: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9";
    const A1_PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
    const A1_SIGNATURE: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const A1_K: &str =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

    fn a1_jws() -> String {
        format!("{A1_HEADER}.{A1_PAYLOAD}.{A1_SIGNATURE}")
    }

    fn a1_key() -> Vec<u8> {
        base64url_decode(A1_K).expect("RFC key is base64url")
    }

    fn code_of<T: fmt::Debug>(result: Result<T>) -> ErrorCode {
        result.expect_err("expected an error").code().clone()
    }

    #[test]
    fn rfc7515_a1_hs256_example_verifies_with_its_key() {
        assert_eq!(
            base64url_decode(A1_HEADER).expect("b64"),
            b"{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}"
        );
        let jwt = UnverifiedJwt::parse(&a1_jws(), &[JwsAlgorithm::HS256]).expect("valid JWS");
        assert_eq!(
            jwt.signing_input(),
            format!("{A1_HEADER}.{A1_PAYLOAD}").as_bytes()
        );
        assert_eq!(jwt.signature().len(), 32);
        let verified = jwt.verify_hs256(&a1_key()).expect("RFC signature verifies");
        assert_eq!(verified.header().alg(), JwsAlgorithm::HS256);
        assert_eq!(verified.header().typ(), Some("JWT"));
        assert_eq!(verified.header().kid(), None);
        assert_eq!(verified.claims()["iss"], "joe");
        assert_eq!(verified.claims()["exp"], 1_300_819_380);
        assert_eq!(verified.claims()["http://example.com/is_root"], true);
    }

    #[test]
    fn flipped_signature_byte_fails() {
        let mut signature = base64url_decode(A1_SIGNATURE).expect("b64");
        signature[0] ^= 1;
        let token = format!("{A1_HEADER}.{A1_PAYLOAD}.{}", base64url_encode(&signature));
        let jwt = UnverifiedJwt::parse(&token, &[JwsAlgorithm::HS256]).expect("well formed");
        assert_eq!(
            code_of(jwt.verify_hs256(&a1_key())),
            ErrorCode::JwtSignatureInvalid
        );
    }

    #[test]
    fn flipped_payload_byte_fails() {
        let mut payload = base64url_decode(A1_PAYLOAD).expect("b64");
        let digit = payload
            .iter()
            .position(|&b| b == b'8')
            .expect("exp has an 8");
        payload[digit] = b'9';
        let token = format!("{A1_HEADER}.{}.{A1_SIGNATURE}", base64url_encode(&payload));
        let jwt = UnverifiedJwt::parse(&token, &[JwsAlgorithm::HS256]).expect("well formed");
        assert_eq!(
            code_of(jwt.verify_hs256(&a1_key())),
            ErrorCode::JwtSignatureInvalid
        );
    }

    #[test]
    fn another_key_fails() {
        let mut key = a1_key();
        key[5] ^= 0x80;
        let jwt = UnverifiedJwt::parse(&a1_jws(), &[JwsAlgorithm::HS256]).expect("valid JWS");
        assert_eq!(
            code_of(jwt.verify_hs256(&key)),
            ErrorCode::JwtSignatureInvalid
        );
        let jwt = UnverifiedJwt::parse(&a1_jws(), &[JwsAlgorithm::HS256]).expect("valid JWS");
        assert_eq!(
            code_of(jwt.verify_hs256(b"")),
            ErrorCode::InvalidConfiguration
        );
    }

    #[test]
    fn own_hs256_tokens_round_trip() {
        let verified = verified_hs256(&json!({"sub": "alice"}));
        assert_eq!(verified.claims()["sub"], "alice");
    }

    #[test]
    fn alg_none_unknown_missing_or_not_allowed_is_refused() {
        let allowed = [JwsAlgorithm::RS256, JwsAlgorithm::ES256];
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"PS256"}"#,
            r#"{"alg":7}"#,
            r#"{"typ":"JWT"}"#,
        ] {
            let token = compact(header, "{}", &[1; 64]);
            let result = UnverifiedJwt::parse(&token, &allowed);
            assert_eq!(code_of(result), ErrorCode::JwtAlgNotAllowed, "{header}");
        }
        let unsigned = format!("{}.e30.", base64url_encode(br#"{"alg":"none"}"#));
        let result = UnverifiedJwt::parse(&unsigned, &allowed);
        assert_eq!(code_of(result), ErrorCode::JwtAlgNotAllowed);
        assert!(UnverifiedJwt::parse(&compact(r#"{"alg":"RS256"}"#, "{}", &[1]), &allowed).is_ok());
    }

    #[test]
    fn an_empty_allow_list_allows_nothing() {
        let result = UnverifiedJwt::parse(&a1_jws(), &[]);
        assert_eq!(code_of(result), ErrorCode::JwtAlgNotAllowed);
    }

    #[test]
    fn crit_header_is_refused() {
        let token = compact(r#"{"alg":"HS256","crit":["exp"],"exp":1}"#, "{}", &[1; 32]);
        let result = UnverifiedJwt::parse(&token, &[JwsAlgorithm::HS256]);
        assert_eq!(code_of(result), ErrorCode::JwtCritUnsupported);
    }

    #[test]
    fn broken_structure_is_malformed() {
        let header = base64url_encode(br#"{"alg":"HS256"}"#);
        let good = compact(r#"{"alg":"HS256"}"#, "{}", &[1; 32]);
        let cases = [
            ("two segments", format!("{header}.e30")),
            ("four segments", format!("{good}.e30")),
            ("bad base64 header", format!("{header}=.e30.AQ")),
            ("bad base64 payload", format!("{header}.e30+.AQ")),
            ("bad base64 signature", format!("{header}.e30.A/")),
            ("empty signature", format!("{header}.e30.")),
            ("header not JSON", compact("alg=HS256", "{}", &[1])),
            (
                "header not an object",
                compact(r#"["alg","HS256"]"#, "{}", &[1]),
            ),
            (
                "payload not JSON",
                compact(r#"{"alg":"HS256"}"#, "sub=1", &[1]),
            ),
            (
                "payload not an object",
                compact(r#"{"alg":"HS256"}"#, r#""sub""#, &[1]),
            ),
            (
                "kid not a string",
                compact(r#"{"alg":"HS256","kid":1}"#, "{}", &[1]),
            ),
            (
                "typ not a string",
                compact(r#"{"alg":"HS256","typ":{}}"#, "{}", &[1]),
            ),
            ("empty", String::new()),
        ];
        for (case, token) in cases {
            let result = UnverifiedJwt::parse(&token, &[JwsAlgorithm::HS256]);
            assert_eq!(code_of(result), ErrorCode::JwtMalformed, "{case}");
        }
        assert!(UnverifiedJwt::parse(&good, &[JwsAlgorithm::HS256]).is_ok());
    }

    #[test]
    fn es256_signature_must_be_r_concat_s() {
        let header = r#"{"alg":"ES256","kid":"k1"}"#;
        for length in [63, 65, 72] {
            let token = compact(header, "{}", &vec![1; length]);
            let result = UnverifiedJwt::parse(&token, &[JwsAlgorithm::ES256]);
            assert_eq!(code_of(result), ErrorCode::JwtMalformed, "{length} bytes");
        }
        let token = compact(header, r#"{"sub":"x"}"#, &[1; 64]);
        let jwt = UnverifiedJwt::parse(&token, &[JwsAlgorithm::ES256]).expect("64 bytes");
        assert_eq!(jwt.header().kid(), Some("k1"));
        let verified = jwt.into_verified(true).expect("platform said valid");
        assert_eq!(verified.claims()["sub"], "x");
    }

    #[test]
    fn platform_verdict_false_is_signature_invalid() {
        let token = compact(r#"{"alg":"PS256"}"#, "{}", &[1; 256]);
        let jwt = UnverifiedJwt::parse(&token, &[JwsAlgorithm::PS256]).expect("well formed");
        assert_eq!(
            code_of(jwt.into_verified(false)),
            ErrorCode::JwtSignatureInvalid
        );
    }

    #[test]
    fn each_algorithm_goes_through_its_own_door() {
        let jwt = UnverifiedJwt::parse(&a1_jws(), &[JwsAlgorithm::HS256]).expect("valid");
        assert_eq!(
            code_of(jwt.into_verified(true)),
            ErrorCode::JwtAlgNotAllowed
        );
        let token = compact(r#"{"alg":"RS256"}"#, "{}", &[1; 256]);
        let jwt = UnverifiedJwt::parse(&token, &[JwsAlgorithm::RS256]).expect("well formed");
        assert_eq!(
            code_of(jwt.verify_hs256(b"key")),
            ErrorCode::JwtAlgNotAllowed
        );
    }

    #[test]
    fn errors_and_debug_never_show_the_token() {
        let jwt = UnverifiedJwt::parse(&a1_jws(), &[JwsAlgorithm::HS256]).expect("valid");
        let debug = format!("{jwt:?}");
        assert!(debug.contains("HS256"));
        assert!(!debug.contains(A1_PAYLOAD) && !debug.contains("joe"));
        let error = jwt.verify_hs256(b"wrong").expect_err("wrong key");
        assert!(!error.description().contains(A1_HEADER));
        assert!(!error.description().contains(A1_SIGNATURE));
    }
}
