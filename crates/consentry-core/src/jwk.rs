//! JSON Web Keys ([RFC 7517](https://www.rfc-editor.org/rfc/rfc7517)) an authorization server
//! publishes at its `jwks_uri`, and the choice of the one key that verifies a JWT.
//!
//! Only public signature keys survive [`JwkSet::parse`]: symmetric `oct` keys and key types
//! consentry cannot verify with are dropped, and private members are stripped, so a [`Jwk`]
//! never holds secret material. [`JwkSet::select`] picks the key by `alg`, `use`, `kty`, `crv`
//! and `kid`; the platform imports [`Jwk::public_json`] (WebCrypto `importKey("jwk", ...)`)
//! and verifies.

use serde_json::{Map, Value};

use crate::error::{Error, ErrorCode, Result};
use crate::jws::JwsAlgorithm;
use crate::jwt::JwtHeader;

/// Members that hold private or symmetric key material
/// ([RFC 7518 §6.2.2](https://www.rfc-editor.org/rfc/rfc7518#section-6.2.2),
/// [§6.3.2](https://www.rfc-editor.org/rfc/rfc7518#section-6.3.2),
/// [§6.4.1](https://www.rfc-editor.org/rfc/rfc7518#section-6.4.1)): never kept.
pub(crate) const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Key types consentry verifies with: RSA (PS256, RS256), EC (ES256), OKP (EdDSA).
const SIGNATURE_KEY_TYPES: &[&str] = &["RSA", "EC", "OKP"];

fn invalid(description: &str) -> Error {
    Error::new(ErrorCode::JwkInvalid, description)
}

fn not_found(description: impl Into<String>) -> Error {
    Error::new(ErrorCode::JwkNotFound, description)
}

/// A public signature key from a JWKS ([RFC 7517 §4](https://www.rfc-editor.org/rfc/rfc7517#section-4)).
#[derive(Debug, Clone, PartialEq)]
pub struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    key_use: Option<String>,
    crv: Option<String>,
    public_members: Map<String, Value>,
}

impl Jwk {
    /// Reads one member of a JWKS `keys` array; `None` for a key type consentry never
    /// verifies with (including `oct`), which is skipped rather than refused.
    fn from_jwks_member(member: &Value) -> Result<Option<Self>> {
        let object = member
            .as_object()
            .ok_or_else(|| invalid("every JWKS key must be a JSON object"))?;
        let kty = optional_string(object, "kty")?
            .ok_or_else(|| invalid("every JWKS key needs a kty string"))?;
        if !SIGNATURE_KEY_TYPES.contains(&kty.as_str()) {
            return Ok(None);
        }
        let mut public_members = object.clone();
        public_members.retain(|name, _| !PRIVATE_MEMBERS.contains(&name.as_str()));
        Ok(Some(Jwk {
            kty,
            kid: optional_string(object, "kid")?,
            alg: optional_string(object, "alg")?,
            key_use: optional_string(object, "use")?,
            crv: optional_string(object, "crv")?,
            public_members,
        }))
    }

    /// `kty` ([RFC 7517 §4.1](https://www.rfc-editor.org/rfc/rfc7517#section-4.1)):
    /// `RSA`, `EC` or `OKP`.
    pub fn kty(&self) -> &str {
        &self.kty
    }

    /// `kid` ([RFC 7517 §4.5](https://www.rfc-editor.org/rfc/rfc7517#section-4.5)).
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// `alg` ([RFC 7517 §4.4](https://www.rfc-editor.org/rfc/rfc7517#section-4.4)), if the
    /// key is pinned to one algorithm.
    pub fn alg(&self) -> Option<&str> {
        self.alg.as_deref()
    }

    /// `use` ([RFC 7517 §4.2](https://www.rfc-editor.org/rfc/rfc7517#section-4.2)):
    /// `sig`, `enc`, or absent.
    pub fn key_use(&self) -> Option<&str> {
        self.key_use.as_deref()
    }

    /// `crv` ([RFC 7518 §6.2.1.1](https://www.rfc-editor.org/rfc/rfc7518#section-6.2.1.1),
    /// [RFC 8037 §2](https://www.rfc-editor.org/rfc/rfc8037#section-2)) of an EC or OKP key.
    pub fn crv(&self) -> Option<&str> {
        self.crv.as_deref()
    }

    /// The key as a JWK JSON object without any private member (`d`, `p`, `q`, `dp`, `dq`,
    /// `qi`, `oth`, `k`), ready for WebCrypto `importKey("jwk", ...)`
    /// ([RFC 7517 §4](https://www.rfc-editor.org/rfc/rfc7517#section-4)).
    pub fn public_json(&self) -> Value {
        Value::Object(self.public_members.clone())
    }

    /// Whether this key may verify a JWS with `alg`: a signature key
    /// ([RFC 7517 §4.2](https://www.rfc-editor.org/rfc/rfc7517#section-4.2)) not pinned to
    /// another algorithm ([§4.4](https://www.rfc-editor.org/rfc/rfc7517#section-4.4)) of the
    /// type and curve the algorithm needs.
    fn can_verify(&self, alg: JwsAlgorithm) -> bool {
        let for_signatures = self.key_use().is_none_or(|key_use| key_use == "sig");
        let for_this_alg = self.alg().is_none_or(|key_alg| key_alg == alg.as_str());
        for_signatures && for_this_alg && alg.fits_jwk(&self.kty, self.crv())
    }
}

fn optional_string(object: &Map<String, Value>, name: &str) -> Result<Option<String>> {
    match object.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(invalid(
            "JWKS key members kty, kid, alg, use and crv must be strings",
        )),
    }
}

/// A JWK Set ([RFC 7517 §5](https://www.rfc-editor.org/rfc/rfc7517#section-5)): the
/// provider's public signature keys.
#[derive(Debug, Clone, PartialEq)]
pub struct JwkSet {
    keys: Vec<Jwk>,
}

impl JwkSet {
    /// Reads a JWKS document: a JSON object with a `keys` array of objects, each with a
    /// string `kty` ([RFC 7517 §5](https://www.rfc-editor.org/rfc/rfc7517#section-5)), else
    /// [`ErrorCode::JwkInvalid`].
    ///
    /// Keys of a type consentry does not verify with are skipped, as §5 allows; symmetric
    /// `oct` keys are always dropped, since a shared secret never comes from a JWKS.
    pub fn parse(json: &[u8]) -> Result<Self> {
        let document: Value =
            serde_json::from_slice(json).map_err(|_| invalid("JWKS is not JSON"))?;
        let members = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("JWKS must be a JSON object with a keys array"))?;
        let keys = members
            .iter()
            .map(Jwk::from_jwks_member)
            .collect::<Result<Vec<_>>>()?;
        Ok(JwkSet {
            keys: keys.into_iter().flatten().collect(),
        })
    }

    /// The keys kept.
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// Chooses the key that verifies a JWT with this header
    /// ([RFC 7515 §6](https://www.rfc-editor.org/rfc/rfc7515#section-6),
    /// [OpenID Connect Core §10.1.1](https://openid.net/specs/openid-connect-core-1_0.html#RotateSigKeys)).
    ///
    /// Candidates are keys with `use` absent or `sig`, `alg` absent or equal to the header's,
    /// and a type that fits it (RSA for PS256/RS256, EC P-256 for ES256, OKP Ed25519 for
    /// EdDSA; HS256 is [`ErrorCode::JwtAlgNotAllowed`]). With a header `kid`, the one candidate with that `kid`;
    /// without, the only candidate. Anything else is [`ErrorCode::JwkNotFound`].
    ///
    /// The provider may have rotated its keys: on `JwkNotFound` the adapter fetches the JWKS
    /// again, once, and selects from the new set before giving up.
    pub fn select(&self, header: &JwtHeader) -> Result<&Jwk> {
        let alg = header.alg();
        if alg == JwsAlgorithm::HS256 {
            // Not JwkNotFound: that would send the adapter to refetch the JWKS for nothing.
            return Err(Error::new(
                ErrorCode::JwtAlgNotAllowed,
                "HS256 JWTs are verified with the shared secret, never with a JWKS key",
            ));
        }
        let candidates = self.keys.iter().filter(|key| key.can_verify(alg));
        match header.kid() {
            Some(kid) => only_one(
                candidates.filter(|key| key.kid() == Some(kid)),
                format!("no {} key in the JWKS has the JWT's kid", alg.as_str()),
                format!(
                    "several {} keys in the JWKS share the JWT's kid",
                    alg.as_str()
                ),
            ),
            None => only_one(
                candidates,
                format!("no key in the JWKS fits {}", alg.as_str()),
                format!(
                    "several keys in the JWKS fit {}; the JWT needs a kid to choose one",
                    alg.as_str()
                ),
            ),
        }
    }
}

fn only_one<'a>(
    mut keys: impl Iterator<Item = &'a Jwk>,
    when_none: String,
    when_several: String,
) -> Result<&'a Jwk> {
    match (keys.next(), keys.next()) {
        (Some(key), None) => Ok(key),
        (None, _) => Err(not_found(when_none)),
        (Some(_), Some(_)) => Err(not_found(when_several)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::test_support::header;
    use serde_json::json;

    fn rsa(kid: Option<&str>) -> Value {
        let mut key = json!({"kty": "RSA", "n": "0vx7agoebGcQSuuPiLJXZpt", "e": "AQAB"});
        if let Some(kid) = kid {
            key["kid"] = kid.into();
        }
        key
    }

    fn ec(kid: &str) -> Value {
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": "f83OJ3D2", "y": "x_FEzRu9"})
    }

    fn jwks(keys: &[Value]) -> JwkSet {
        JwkSet::parse(json!({ "keys": keys }).to_string().as_bytes()).expect("valid JWKS")
    }

    fn selected_kid<'a>(set: &'a JwkSet, alg: JwsAlgorithm, kid: Option<&str>) -> Option<&'a str> {
        set.select(&header(alg, kid))
            .expect("a key is selected")
            .kid()
    }

    fn not_found_description(set: &JwkSet, alg: JwsAlgorithm, kid: Option<&str>) -> String {
        let error = set.select(&header(alg, kid)).expect_err("no key fits");
        assert_eq!(error.code(), &ErrorCode::JwkNotFound);
        error.description().to_owned()
    }

    #[test]
    fn single_key_without_kid_is_selected() {
        let set = jwks(&[rsa(None)]);
        let key = set
            .select(&header(JwsAlgorithm::RS256, None))
            .expect("one candidate");
        assert_eq!(key.kty(), "RSA");
        assert_eq!(key.kid(), None);
    }

    #[test]
    fn two_candidates_without_kid_need_a_kid() {
        let set = jwks(&[rsa(Some("a")), rsa(Some("b"))]);
        let description = not_found_description(&set, JwsAlgorithm::RS256, None);
        assert!(description.contains("kid"), "{description}");
    }

    #[test]
    fn kid_chooses_among_candidates() {
        let set = jwks(&[ec("k1"), ec("k2"), rsa(Some("k3"))]);
        assert_eq!(
            selected_kid(&set, JwsAlgorithm::ES256, Some("k2")),
            Some("k2")
        );
        assert_eq!(
            selected_kid(&set, JwsAlgorithm::ES256, Some("k1")),
            Some("k1")
        );
        assert_eq!(
            selected_kid(&set, JwsAlgorithm::PS256, Some("k3")),
            Some("k3")
        );
    }

    #[test]
    fn unknown_kid_is_not_found() {
        let set = jwks(&[ec("k1"), ec("k2")]);
        not_found_description(&set, JwsAlgorithm::ES256, Some("rotated-away"));
        // Even a single candidate is not used when the JWT names another kid.
        let set = jwks(&[ec("k1")]);
        not_found_description(&set, JwsAlgorithm::ES256, Some("k9"));
    }

    #[test]
    fn encryption_keys_are_skipped() {
        let mut enc = rsa(Some("enc"));
        enc["use"] = "enc".into();
        let mut sig = rsa(Some("sig"));
        sig["use"] = "sig".into();
        let set = jwks(&[enc, sig]);
        assert_eq!(selected_kid(&set, JwsAlgorithm::RS256, None), Some("sig"));
        not_found_description(&set, JwsAlgorithm::RS256, Some("enc"));
    }

    #[test]
    fn oct_keys_are_dropped() {
        let set = jwks(&[
            json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
            rsa(None),
        ]);
        assert_eq!(set.keys().len(), 1);
        assert_eq!(set.keys()[0].kty(), "RSA");
        for kid in [Some("hmac"), None] {
            let error = set
                .select(&header(JwsAlgorithm::HS256, kid))
                .expect_err("HS256 never selects a JWKS key");
            assert_eq!(error.code(), &ErrorCode::JwtAlgNotAllowed);
        }
    }

    #[test]
    fn unknown_key_types_are_skipped_not_refused() {
        let set = jwks(&[json!({"kty": "PQC", "kid": 5}), ec("k1")]);
        assert_eq!(set.keys().len(), 1);
    }

    #[test]
    fn ec_key_is_not_selected_for_rs256() {
        let set = jwks(&[ec("k1")]);
        not_found_description(&set, JwsAlgorithm::RS256, None);
        not_found_description(&set, JwsAlgorithm::PS256, Some("k1"));
        assert_eq!(selected_kid(&set, JwsAlgorithm::ES256, None), Some("k1"));
    }

    #[test]
    fn curve_and_alg_members_must_fit() {
        let p384 = json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "a", "y": "b"});
        let x25519 = json!({"kty": "OKP", "crv": "X25519", "kid": "x", "x": "a"});
        let ed25519 = json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "a"});
        let mut pinned_rs256 = rsa(Some("rs"));
        pinned_rs256["alg"] = "RS256".into();
        let set = jwks(&[p384, x25519, ed25519, pinned_rs256]);
        not_found_description(&set, JwsAlgorithm::ES256, None);
        assert_eq!(selected_kid(&set, JwsAlgorithm::EdDSA, None), Some("ed"));
        assert_eq!(selected_kid(&set, JwsAlgorithm::RS256, None), Some("rs"));
        not_found_description(&set, JwsAlgorithm::PS256, None);
    }

    #[test]
    fn public_json_strips_private_members() {
        let mut private = rsa(Some("leaked"));
        for member in PRIVATE_MEMBERS {
            private[*member] = "private-material".into();
        }
        let set = jwks(&[private]);
        let public = set.keys()[0].public_json();
        assert_eq!(public, rsa(Some("leaked")));
        assert!(public.get("d").is_none());
        assert!(!format!("{set:?}").contains("private-material"));
    }

    #[test]
    fn malformed_jwks_is_invalid() {
        for bad in [
            "not json",
            "[]",
            r#"{"keys": {}}"#,
            r#"{"key": []}"#,
            r#"{"keys": ["RSA"]}"#,
            r#"{"keys": [{"n": "AQAB"}]}"#,
            r#"{"keys": [{"kty": 1}]}"#,
            r#"{"keys": [{"kty": "RSA", "kid": 7}]}"#,
        ] {
            let code = JwkSet::parse(bad.as_bytes()).map_err(|e| e.code().clone());
            assert_eq!(code, Err(ErrorCode::JwkInvalid), "{bad}");
        }
        assert_eq!(
            JwkSet::parse(br#"{"keys": []}"#).expect("empty set").keys(),
            &[]
        );
    }
}
