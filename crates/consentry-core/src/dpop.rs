//! Sender-constrained tokens with DPoP ([RFC 9449](https://www.rfc-editor.org/rfc/rfc9449))
//! and JWK thumbprints ([RFC 7638](https://www.rfc-editor.org/rfc/rfc7638)).
//!
//! The core builds the proof's signing input from the public key, the request and the
//! platform's clock and random bytes; the platform signs it with the private key (WebCrypto)
//! and [`JwsSigningInput::assemble`] gives the `DPoP` header value.

use serde_json::{Map, Value};

use crate::encoding::{base64url_encode, sha256_base64url};
use crate::error::{Error, ErrorCode, Result};
use crate::jwk::PRIVATE_MEMBERS;
use crate::jws::{JwsAlgorithm, JwsSigningInput};
use crate::secret::AccessToken;
use crate::url::EndpointUrl;

/// The `typ` header of a DPoP proof ([RFC 9449 §4.2](https://www.rfc-editor.org/rfc/rfc9449#section-4.2)).
pub const DPOP_PROOF_TYPE: &str = "dpop+jwt";

/// Random bytes in a proof's `jti`: 128 bits, above the 96 that
/// [RFC 9449 §4.2](https://www.rfc-editor.org/rfc/rfc9449#section-4.2) suggests.
pub const JTI_RANDOM_BYTES: usize = 16;

fn jwk_invalid(description: impl Into<String>) -> Error {
    Error::new(ErrorCode::JwkInvalid, description)
}

/// The members that identify a key of each type, already in lexicographic order
/// ([RFC 7638 §3.2](https://www.rfc-editor.org/rfc/rfc7638#section-3.2), RFC 8037 §2).
fn thumbprint_members(kty: &str) -> Result<&'static [&'static str]> {
    match kty {
        "RSA" => Ok(&["e", "kty", "n"]),
        "EC" => Ok(&["crv", "kty", "x", "y"]),
        "OKP" => Ok(&["crv", "kty", "x"]),
        _ => Err(jwk_invalid("JWK kty must be RSA, EC or OKP")),
    }
}

fn jwk_string<'a>(jwk: &'a Map<String, Value>, member: &str) -> Result<&'a str> {
    jwk.get(member)
        .and_then(Value::as_str)
        .ok_or_else(|| jwk_invalid(format!("JWK member {member} is missing or not a string")))
}

/// The JWK SHA-256 thumbprint of a key, base64url
/// ([RFC 7638 §3](https://www.rfc-editor.org/rfc/rfc7638#section-3)): the required members
/// only, in lexicographic order, without whitespace, hashed with SHA-256.
///
/// Used as DPoP's `jkt` ([RFC 9449 §10](https://www.rfc-editor.org/rfc/rfc9449#section-10)).
/// Fails with [`ErrorCode::JwkInvalid`] for a `kty` other than RSA, EC or OKP, or when a
/// required member is missing or not a string.
pub fn jwk_thumbprint(public_jwk: &Map<String, Value>) -> Result<String> {
    let members = thumbprint_members(jwk_string(public_jwk, "kty")?)?;
    // Inserted in lexicographic order, so the text is canonical whether or not serde_json
    // keeps insertion order.
    let mut canonical = Map::new();
    for &member in members {
        canonical.insert(member.to_owned(), jwk_string(public_jwk, member)?.into());
    }
    Ok(sha256_base64url(
        Value::Object(canonical).to_string().as_bytes(),
    ))
}

/// The public key of a private JWK: its required public members only
/// ([RFC 7638 §3.2](https://www.rfc-editor.org/rfc/rfc7638#section-3.2)), what a DPoP proof's
/// `jwk` header carries. Fails with [`ErrorCode::JwkInvalid`] for another `kty` or a missing
/// member.
pub fn public_jwk(private_jwk: &Map<String, Value>) -> Result<Map<String, Value>> {
    let members = thumbprint_members(jwk_string(private_jwk, "kty")?)?;
    members
        .iter()
        .map(|&member| Ok((member.to_owned(), jwk_string(private_jwk, member)?.into())))
        .collect()
}

fn check_public_jwk(alg: JwsAlgorithm, public_jwk: &Map<String, Value>) -> Result<()> {
    alg.require_asymmetric("a DPoP proof")?;
    if let Some(member) = PRIVATE_MEMBERS
        .iter()
        .find(|member| public_jwk.contains_key(**member))
    {
        return Err(jwk_invalid(format!(
            "the DPoP jwk header must be a public key, but it has the private member {member}"
        )));
    }
    let crv = public_jwk.get("crv").and_then(Value::as_str);
    if !alg.fits_jwk(jwk_string(public_jwk, "kty")?, crv) {
        return Err(jwk_invalid(format!(
            "the DPoP jwk is not a key {} can sign with",
            alg.as_str()
        )));
    }
    jwk_thumbprint(public_jwk)?;
    Ok(())
}

/// The `htu` claim: the target URI without query and fragment
/// ([RFC 9449 §4.2](https://www.rfc-editor.org/rfc/rfc9449#section-4.2)).
fn htu_without_query_and_fragment(htu: &str) -> Result<String> {
    let target = htu.split(['?', '#']).next().unwrap_or_default();
    EndpointUrl::parse(target).map(|url| url.as_str().to_owned())
}

/// A DPoP proof JWT ready to be signed
/// ([RFC 9449 §4.2](https://www.rfc-editor.org/rfc/rfc9449#section-4.2)).
///
/// ```
/// # use consentry_core::dpop::DpopProof;
/// # use consentry_core::jws::JwsAlgorithm;
/// # use consentry_core::secret::AccessToken;
/// let public_jwk = serde_json::json!({
///     "kty": "EC", "crv": "P-256",
///     "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
///     "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
/// });
/// let public_jwk = public_jwk.as_object().expect("an object");
/// let proof = DpopProof::new(
///     JwsAlgorithm::ES256, public_jwk, "GET", "https://resource.example.org/protectedresource",
///     1_562_262_618, &[7; 16],
/// )?
/// .with_access_token(&AccessToken::new("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"))
/// .into_signing_input();
/// // The platform signs `proof.as_bytes()` with the private key, then:
/// let dpop_header = proof.assemble(&[0; 64]);
/// assert_eq!(dpop_header.split('.').count(), 3);
/// # Ok::<(), consentry_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DpopProof {
    alg: JwsAlgorithm,
    public_jwk: Map<String, Value>,
    claims: Map<String, Value>,
}

impl DpopProof {
    /// A proof for the request `htm` (the HTTP method) to `htu` (its URI; query and fragment
    /// are dropped), issued at `now` (Unix seconds), with a `jti` from the platform's
    /// random bytes.
    ///
    /// `public_jwk` goes into the `jwk` header and must be the public key matching `alg`;
    /// a JWK with private members fails with [`ErrorCode::JwkInvalid`], a symmetric `alg`
    /// (HS256) with [`ErrorCode::JwtAlgNotAllowed`].
    pub fn new(
        alg: JwsAlgorithm,
        public_jwk: &Map<String, Value>,
        htm: &str,
        htu: &str,
        now: u64,
        jti_random: &[u8; JTI_RANDOM_BYTES],
    ) -> Result<Self> {
        check_public_jwk(alg, public_jwk)?;
        let mut claims = Map::new();
        claims.insert("jti".into(), base64url_encode(jti_random).into());
        claims.insert("htm".into(), htm.into());
        claims.insert("htu".into(), htu_without_query_and_fragment(htu)?.into());
        claims.insert("iat".into(), now.into());
        Ok(DpopProof {
            alg,
            public_jwk: public_jwk.clone(),
            claims,
        })
    }

    /// Adds the server-provided `nonce` from a `DPoP-Nonce` header
    /// ([RFC 9449 §8](https://www.rfc-editor.org/rfc/rfc9449#section-8)).
    pub fn with_nonce(mut self, nonce: &str) -> Self {
        self.claims.insert("nonce".into(), nonce.into());
        self
    }

    /// Binds the proof to the access token it accompanies: `ath` is base64url(SHA-256(token))
    /// ([RFC 9449 §4.2](https://www.rfc-editor.org/rfc/rfc9449#section-4.2), §7).
    pub fn with_access_token(mut self, access_token: &AccessToken) -> Self {
        let ath = sha256_base64url(access_token.secret().as_bytes());
        self.claims.insert("ath".into(), ath.into());
        self
    }

    /// The JWS signing input: header `typ` `dpop+jwt`, `alg` and `jwk`, then the claims.
    pub fn into_signing_input(self) -> JwsSigningInput {
        let mut header = Map::new();
        header.insert("jwk".into(), Value::Object(self.public_jwk));
        JwsSigningInput::new(
            self.alg,
            DPOP_PROOF_TYPE,
            None,
            header,
            &Value::Object(self.claims),
        )
    }
}

/// The longest server nonce consentry echoes.
const MAX_NONCE_LEN: usize = 512;

/// A server nonce as RFC 9449 §8.1 allows it: 1 or more `NQCHAR` (`%x21 / %x23-5B /
/// %x5D-7E`), at most 512 of them. Anything else is not echoed.
pub fn valid_nonce(nonce: &str) -> Option<&str> {
    let nonce = nonce.trim();
    let valid = (1..=MAX_NONCE_LEN).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E));
    valid.then_some(nonce)
}

/// The nonce a server asks a retry to carry, if its answer is such a request
/// ([RFC 9449 §8](https://www.rfc-editor.org/rfc/rfc9449#section-8), §9): an authorization
/// server's 400 with the error `use_dpop_nonce`, or a resource server's 401 whose
/// `WWW-Authenticate` names `DPoP` with `error="use_dpop_nonce"`; either way with a valid
/// `DPoP-Nonce` header. One retry with it is the whole of the protocol.
pub fn nonce_to_retry_with<'a>(
    status: u16,
    body: &[u8],
    www_authenticate: Option<&str>,
    dpop_nonce: Option<&'a str>,
) -> Option<&'a str> {
    let nonce = dpop_nonce.and_then(valid_nonce)?;
    let from_authorization_server = status == 400
        && serde_json::from_slice::<Value>(body)
            .ok()
            .is_some_and(|body| {
                body.get("error").and_then(Value::as_str) == Some("use_dpop_nonce")
            });
    let from_resource_server = status == 401 && www_authenticate.is_some_and(asks_for_dpop_nonce);
    (from_authorization_server || from_resource_server).then_some(nonce)
}

/// Whether a `WWW-Authenticate` value holds a `DPoP` challenge with
/// `error="use_dpop_nonce"` (quoted or not, RFC 9110 §11.6.1), wherever among the challenges.
fn asks_for_dpop_nonce(www_authenticate: &str) -> bool {
    let lower = www_authenticate.to_ascii_lowercase();
    let mut dpop_seen = false;
    for part in lower.split(',') {
        let part = part.trim();
        // A part that starts a challenge names its scheme first: "dpop error=...".
        let (first, rest) = part.split_once(' ').unwrap_or((part, ""));
        let param = if first.contains('=') {
            part
        } else {
            dpop_seen = first == "dpop";
            rest.trim()
        };
        if dpop_seen {
            let value = param
                .strip_prefix("error")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|value| value.trim().trim_matches('"'));
            if value == Some("use_dpop_nonce") {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_jwks_public_half_is_its_required_public_members() {
        let private = serde_json::json!({"kty": "EC", "crv": "P-256", "x": "X", "y": "Y", "d": "D", "ext": true, "key_ops": ["sign"]});
        let public = public_jwk(private.as_object().expect("object")).expect("public");
        assert_eq!(
            Value::Object(public),
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": "X", "y": "Y"})
        );
        let broken = serde_json::json!({"kty": "EC", "crv": "P-256", "x": "X"});
        assert!(public_jwk(broken.as_object().expect("object")).is_err());
    }
    use crate::encoding::base64url_decode;
    use serde_json::json;

    const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    /// The public key of the RFC 9449 §4.1 example proof.
    fn rfc9449_public_jwk() -> Map<String, Value> {
        object(json!({
            "kty": "EC",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
            "crv": "P-256"
        }))
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().expect("a JSON object").clone()
    }

    fn decode_part(part: &str) -> Value {
        serde_json::from_slice(&base64url_decode(part).expect("base64url")).expect("JSON")
    }

    fn header_and_claims(input: &JwsSigningInput) -> (Value, Value) {
        let text = std::str::from_utf8(input.as_bytes()).expect("ASCII");
        let (header, claims) = text.split_once('.').expect("header.claims");
        (decode_part(header), decode_part(claims))
    }

    fn new_proof(public_jwk: &Map<String, Value>, htu: &str) -> Result<DpopProof> {
        DpopProof::new(
            JwsAlgorithm::ES256,
            public_jwk,
            "POST",
            htu,
            1_562_262_616,
            &[0xab; 16],
        )
    }

    #[test]
    fn a_nonce_retry_is_asked_for_only_as_rfc_9449_says() {
        let body = br#"{"error":"use_dpop_nonce","error_description":"Authorization server requires nonce in DPoP proof"}"#;
        assert_eq!(
            nonce_to_retry_with(400, body, None, Some("eyJ7S_zG.eyJH0-Z.HX4w-7v")),
            Some("eyJ7S_zG.eyJH0-Z.HX4w-7v")
        );
        let challenge = r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#;
        assert_eq!(
            nonce_to_retry_with(401, b"", Some(challenge), Some("n-1")),
            Some("n-1")
        );
        assert_eq!(
            nonce_to_retry_with(
                401,
                b"",
                Some(r#"Bearer error="use_dpop_nonce""#),
                Some("n-1")
            ),
            None,
            "not a DPoP challenge"
        );
        assert_eq!(
            nonce_to_retry_with(400, br#"{"error":"invalid_grant"}"#, None, Some("n-1")),
            None
        );
        assert_eq!(
            nonce_to_retry_with(400, body, None, None),
            None,
            "no nonce to retry with"
        );
        assert_eq!(
            nonce_to_retry_with(400, body, None, Some("bad\"nonce")),
            None
        );
        assert_eq!(valid_nonce(&"n".repeat(513)), None);
        // Wherever the DPoP challenge stands, quoted or not; never panicking on odd bytes.
        let second = r#"Bearer realm="api", DPoP algs="ES256", error="use_dpop_nonce""#;
        assert_eq!(
            nonce_to_retry_with(401, b"", Some(second), Some("n-2")),
            Some("n-2")
        );
        assert_eq!(
            nonce_to_retry_with(401, b"", Some("dpop error=use_dpop_nonce"), Some("n-3")),
            Some("n-3")
        );
        assert_eq!(
            nonce_to_retry_with(401, b"", Some("DPoP error=\"invalid_token\""), Some("n-4")),
            None
        );
        assert_eq!(
            nonce_to_retry_with(401, b"", Some("Dé€P error=\"use_dpop_nonce\""), Some("n-5")),
            None
        );
        assert_eq!(
            nonce_to_retry_with(401, b"", Some("\u{e9}\u{e9}\u{e9}"), Some("n-6")),
            None
        );
    }

    #[test]
    fn rfc7638_section_3_1_thumbprint() {
        let jwk = object(json!({
            "kty": "RSA",
            "n": RFC7638_N,
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }));
        assert_eq!(
            jwk_thumbprint(&jwk).expect("valid RSA key"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn thumbprint_needs_a_known_kty_and_its_members() {
        for bad in [
            json!({"kty": "oct", "k": "GawgguFyGrWKav7AX4VKUg"}),
            json!({"n": RFC7638_N, "e": "AQAB"}),
            json!({"kty": "RSA", "n": RFC7638_N}),
            json!({"kty": "EC", "crv": "P-256", "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": 5}),
        ] {
            let code = jwk_thumbprint(&object(bad.clone())).map_err(|e| e.code().clone());
            assert_eq!(code, Err(ErrorCode::JwkInvalid), "{bad}");
        }
    }

    #[test]
    fn proof_has_dpop_header_and_claims() {
        let jwk = rfc9449_public_jwk();
        let input = new_proof(&jwk, "https://server.example.com/token")
            .expect("valid proof")
            .with_nonce("eyJ7S_zG.eyJH0-Z.HX4w-7v")
            .into_signing_input();
        assert_eq!(input.alg(), JwsAlgorithm::ES256);
        let (header, claims) = header_and_claims(&input);
        assert_eq!(
            header,
            json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": Value::Object(jwk)})
        );
        assert_eq!(
            claims,
            json!({
                "jti": base64url_encode(&[0xab; 16]),
                "htm": "POST",
                "htu": "https://server.example.com/token",
                "iat": 1_562_262_616,
                "nonce": "eyJ7S_zG.eyJH0-Z.HX4w-7v"
            })
        );
    }

    #[test]
    fn htu_drops_query_and_fragment() {
        let input = new_proof(
            &rfc9449_public_jwk(),
            "https://resource.example.org/accounts?from=2024-01-01&page=2",
        )
        .expect("valid proof")
        .into_signing_input();
        let (_, claims) = header_and_claims(&input);
        assert_eq!(claims["htu"], "https://resource.example.org/accounts");
        let error = new_proof(&rfc9449_public_jwk(), "/token").expect_err("not absolute");
        assert_eq!(error.code(), &ErrorCode::InvalidUrl);
    }

    #[test]
    fn ath_is_the_hash_of_the_access_token() {
        // The access token and `ath` of the RFC 9449 §7.1 example, recomputed with
        // python3 hashlib.sha256 + base64.urlsafe_b64encode (padding removed).
        let token = AccessToken::new("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU");
        let input = new_proof(
            &rfc9449_public_jwk(),
            "https://resource.example.org/protectedresource",
        )
        .expect("valid proof")
        .with_access_token(&token)
        .into_signing_input();
        let (_, claims) = header_and_claims(&input);
        assert_eq!(claims["ath"], "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
        assert!(!String::from_utf8_lossy(input.as_bytes()).contains(token.secret()));
    }

    #[test]
    fn private_key_is_refused() {
        let mut private_jwk = rfc9449_public_jwk();
        private_jwk.insert(
            "d".into(),
            "870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE".into(),
        );
        let error = new_proof(&private_jwk, "https://server.example.com/token")
            .expect_err("private key must not be published");
        assert_eq!(error.code(), &ErrorCode::JwkInvalid);
        assert!(!error.description().contains("870MB6"));
    }

    #[test]
    fn symmetric_alg_and_mismatched_key_are_refused() {
        let jwk = rfc9449_public_jwk();
        let hs256 = DpopProof::new(
            JwsAlgorithm::HS256,
            &jwk,
            "POST",
            "https://as.example/token",
            0,
            &[1; 16],
        );
        assert_eq!(
            hs256.err().map(|e| e.code().clone()),
            Some(ErrorCode::JwtAlgNotAllowed)
        );
        let ps256 = DpopProof::new(
            JwsAlgorithm::PS256,
            &jwk,
            "POST",
            "https://as.example/token",
            0,
            &[1; 16],
        );
        assert_eq!(
            ps256.err().map(|e| e.code().clone()),
            Some(ErrorCode::JwkInvalid)
        );
        // EdDSA signs with Ed25519 keys only: an X25519 (key agreement) key is refused.
        let x25519 = object(
            json!({"kty": "OKP", "crv": "X25519", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}),
        );
        let ed25519 = object(
            json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
        );
        let eddsa = |jwk: &Map<String, Value>| {
            DpopProof::new(
                JwsAlgorithm::EdDSA,
                jwk,
                "POST",
                "https://as.example/token",
                0,
                &[1; 16],
            )
            .map(|_| ())
            .map_err(|e| e.code().clone())
        };
        assert_eq!(eddsa(&x25519), Err(ErrorCode::JwkInvalid));
        assert_eq!(eddsa(&ed25519), Ok(()));
    }
}
