//! WebCrypto (`crypto.subtle`) for the Worker: AES-GCM sealing of secrets at rest, and the
//! asymmetric signatures the core cannot make (client assertions, request objects) or check
//! (id_tokens). The core hands over the bytes to sign or verify; nothing here decides.

use consentry_core::sealing::{unreadable, SealingKey, SealingKeys};
use consentry_core::{Error, ErrorCode, JwsAlgorithm, PrivateKeyJwk, Result};
use js_sys::futures::JsFuture;
use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use crate::random::random_bytes;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = SubtleCrypto)]
    type Subtle;

    #[wasm_bindgen(thread_local_v2, js_namespace = crypto, js_name = subtle)]
    static SUBTLE: Subtle;

    #[wasm_bindgen(method, catch, js_name = importKey)]
    fn import_key(
        this: &Subtle,
        format: &str,
        key_data: &JsValue,
        algorithm: &JsValue,
        extractable: bool,
        usages: &Array,
    ) -> std::result::Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch, js_name = generateKey)]
    fn generate_key(
        this: &Subtle,
        algorithm: &JsValue,
        extractable: bool,
        usages: &Array,
    ) -> std::result::Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch, js_name = exportKey)]
    fn export_key(
        this: &Subtle,
        format: &str,
        key: &JsValue,
    ) -> std::result::Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn encrypt(
        this: &Subtle,
        algorithm: &JsValue,
        key: &JsValue,
        data: &Uint8Array,
    ) -> std::result::Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn decrypt(
        this: &Subtle,
        algorithm: &JsValue,
        key: &JsValue,
        data: &Uint8Array,
    ) -> std::result::Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn sign(
        this: &Subtle,
        algorithm: &JsValue,
        key: &JsValue,
        data: &Uint8Array,
    ) -> std::result::Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn verify(
        this: &Subtle,
        algorithm: &JsValue,
        key: &JsValue,
        signature: &Uint8Array,
        data: &Uint8Array,
    ) -> std::result::Result<Promise, JsValue>;
}

/// AES-GCM's nonce length: 96 bits, fresh from the CSPRNG for every seal.
const IV_LEN: usize = 12;

/// The JWK members WebCrypto needs to import a key; `alg`, `use`, `key_ops` and `kid` are
/// left out so a JWK that names them differently from WebCrypto still imports.
const KEY_MEMBERS: [&str; 12] = [
    "kty", "crv", "x", "y", "n", "e", "d", "p", "q", "dp", "dq", "qi",
];

/// The keys that seal tokens and verifiers at rest (`CONSENTRY_KEY`, and during a rotation
/// `CONSENTRY_KEY_PREVIOUS`): AES-256-GCM, each value bound to its record by the additional
/// data. Which key seals and which opens is the core's ([`SealingKeys`]).
pub(crate) struct Sealer(pub(crate) SealingKeys);

impl Sealer {
    async fn crypto_key(key: &SealingKey) -> Result<JsValue> {
        let usages = Array::of2(&"encrypt".into(), &"decrypt".into());
        let raw = Uint8Array::from(&key.secret()[..]);
        let promise =
            SUBTLE.with(|subtle| subtle.import_key("raw", &raw, &"AES-GCM".into(), false, &usages));
        settle(
            promise,
            ErrorCode::InvalidConfiguration,
            "a sealing key does not import as an AES-GCM key",
        )
        .await
    }

    /// Encrypts `plaintext` bound to `aad` (the row it belongs to) under the current key, as
    /// the store keeps it: `{key id}.base64url(iv || ciphertext+tag)`.
    pub(crate) async fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<String> {
        let iv: [u8; IV_LEN] = random_bytes()?;
        let current = self.0.current();
        let key = Self::crypto_key(current).await?;
        let params = aes_gcm_params(&iv, aad)?;
        let promise =
            SUBTLE.with(|subtle| subtle.encrypt(&params, &key, &Uint8Array::from(plaintext)));
        let ciphertext = settle_bytes(promise, ErrorCode::StorageFailed, "AES-GCM failed").await?;
        Ok(current.label(&[&iv[..], &ciphertext].concat()))
    }

    /// Decrypts what [`seal`](Self::seal) made for the same `aad`, under the key it names,
    /// and says which key that was; a ciphertext moved to another row (another `aad`) or
    /// altered fails.
    pub(crate) async fn open(&self, aad: &str, stored: &str) -> Result<(Vec<u8>, &SealingKey)> {
        let (keys, sealed) = self.0.to_open(stored)?;
        if sealed.len() <= IV_LEN {
            return Err(unreadable());
        }
        let (iv, ciphertext) = sealed.split_at(IV_LEN);
        let params = aes_gcm_params(iv, aad)?;
        for key in keys {
            let crypto_key = Self::crypto_key(key).await?;
            let promise = SUBTLE
                .with(|subtle| subtle.decrypt(&params, &crypto_key, &Uint8Array::from(ciphertext)));
            if let Ok(promise) = promise {
                if let Ok(plaintext) = JsFuture::from(promise).await {
                    return Ok((Uint8Array::new(&plaintext).to_vec(), key));
                }
            }
        }
        Err(unreadable())
    }
}

fn aes_gcm_params(iv: &[u8], aad: &str) -> Result<JsValue> {
    object(&[
        ("name", "AES-GCM".into()),
        ("iv", Uint8Array::from(iv).into()),
        ("additionalData", Uint8Array::from(aad.as_bytes()).into()),
    ])
}

/// A fresh key pair for `alg` (ES256: ECDSA P-256), made by WebCrypto: its private key as a
/// JWK, to seal at once (it never leaves the Worker otherwise).
pub(crate) async fn generate_private_key(alg: JwsAlgorithm) -> Result<PrivateKeyJwk> {
    let failed = || {
        Error::new(
            ErrorCode::InvalidConfiguration,
            "WebCrypto could not make a key pair",
        )
    };
    let usages = Array::of2(&"sign".into(), &"verify".into());
    let algorithm = import_params(alg)?;
    let pair = settle(
        SUBTLE.with(|subtle| subtle.generate_key(&algorithm, true, &usages)),
        ErrorCode::InvalidConfiguration,
        "WebCrypto could not make a key pair",
    )
    .await?;
    let private_key = Reflect::get(&pair, &"privateKey".into()).map_err(|_| failed())?;
    let exported = settle(
        SUBTLE.with(|subtle| subtle.export_key("jwk", &private_key)),
        ErrorCode::InvalidConfiguration,
        "WebCrypto could not export the key",
    )
    .await?;
    js_sys::JSON::stringify(&exported)
        .ok()
        .and_then(|text| text.as_string())
        .map(PrivateKeyJwk::new)
        .ok_or_else(failed)
}

/// Signs a JWS signing input with a private JWK (`{ID}_PRIVATE_JWK`) for `alg`.
pub(crate) async fn sign(
    private_jwk: &serde_json::Value,
    alg: JwsAlgorithm,
    signing_input: &[u8],
) -> Result<Vec<u8>> {
    let key = import_jwk(private_jwk, alg, "sign").await?;
    let params = signature_params(alg)?;
    let promise =
        SUBTLE.with(|subtle| subtle.sign(&params, &key, &Uint8Array::from(signing_input)));
    settle_bytes(
        promise,
        ErrorCode::InvalidConfiguration,
        "WebCrypto could not sign with the private JWK",
    )
    .await
}

/// Verifies a JWS signature with a public JWK (from the provider's JWKS) for `alg`.
pub(crate) async fn verify(
    public_jwk: &serde_json::Value,
    alg: JwsAlgorithm,
    signing_input: &[u8],
    signature: &[u8],
) -> Result<bool> {
    let key = import_jwk(public_jwk, alg, "verify").await?;
    let params = signature_params(alg)?;
    let promise = SUBTLE.with(|subtle| {
        subtle.verify(
            &params,
            &key,
            &Uint8Array::from(signature),
            &Uint8Array::from(signing_input),
        )
    });
    let valid = settle(
        promise,
        ErrorCode::JwtSignatureInvalid,
        "WebCrypto could not verify the signature",
    )
    .await?;
    Ok(valid.as_bool().unwrap_or(false))
}

async fn import_jwk(jwk: &serde_json::Value, alg: JwsAlgorithm, usage: &str) -> Result<JsValue> {
    let invalid = |why: &str| Error::new(ErrorCode::JwkInvalid, why.to_owned());
    let members = jwk
        .as_object()
        .ok_or_else(|| invalid("the JWK is not a JSON object"))?;
    let kty = members
        .get("kty")
        .and_then(|kty| kty.as_str())
        .unwrap_or("");
    let crv = members.get("crv").and_then(|crv| crv.as_str());
    if !alg.fits_jwk(kty, crv) {
        return Err(invalid(&format!("the JWK does not fit {}", alg.as_str())));
    }
    let key_data = Object::new();
    for name in KEY_MEMBERS {
        if let Some(value) = members.get(name).and_then(|value| value.as_str()) {
            set(&key_data, name, value.into())?;
        }
    }
    let usages = Array::of1(&usage.into());
    let algorithm = import_params(alg)?;
    let promise =
        SUBTLE.with(|subtle| subtle.import_key("jwk", &key_data, &algorithm, false, &usages));
    JsFuture::from(promise.map_err(|_| invalid("WebCrypto refused the JWK"))?)
        .await
        .map_err(|_| invalid("WebCrypto refused the JWK"))
}

fn import_params(alg: JwsAlgorithm) -> Result<JsValue> {
    match alg {
        JwsAlgorithm::RS256 => object(&[
            ("name", "RSASSA-PKCS1-v1_5".into()),
            ("hash", "SHA-256".into()),
        ]),
        JwsAlgorithm::PS256 => object(&[("name", "RSA-PSS".into()), ("hash", "SHA-256".into())]),
        JwsAlgorithm::ES256 => object(&[("name", "ECDSA".into()), ("namedCurve", "P-256".into())]),
        JwsAlgorithm::EdDSA => object(&[("name", "Ed25519".into())]),
        _ => Err(Error::new(
            ErrorCode::JwtAlgNotAllowed,
            format!("{} is not signed with WebCrypto", alg.as_str()),
        )),
    }
}

fn signature_params(alg: JwsAlgorithm) -> Result<JsValue> {
    match alg {
        JwsAlgorithm::RS256 => object(&[("name", "RSASSA-PKCS1-v1_5".into())]),
        JwsAlgorithm::PS256 => object(&[("name", "RSA-PSS".into()), ("saltLength", 32.into())]),
        JwsAlgorithm::ES256 => object(&[("name", "ECDSA".into()), ("hash", "SHA-256".into())]),
        _ => import_params(alg),
    }
}

fn object(members: &[(&str, JsValue)]) -> Result<JsValue> {
    let object = Object::new();
    for (name, value) in members {
        set(&object, name, value.clone())?;
    }
    Ok(object.into())
}

fn set(object: &Object, name: &str, value: JsValue) -> Result<()> {
    Reflect::set(object, &name.into(), &value)
        .map(|_| ())
        .map_err(|_| Error::new(ErrorCode::InvalidConfiguration, "WebCrypto parameters"))
}

async fn settle(
    promise: std::result::Result<Promise, JsValue>,
    code: ErrorCode,
    failure: &str,
) -> Result<JsValue> {
    let failed = || Error::new(code.clone(), failure.to_owned());
    JsFuture::from(promise.map_err(|_| failed())?)
        .await
        .map_err(|_| failed())
}

/// [`settle`] for operations that give an `ArrayBuffer`.
async fn settle_bytes(
    promise: std::result::Result<Promise, JsValue>,
    code: ErrorCode,
    failure: &str,
) -> Result<Vec<u8>> {
    let buffer = settle(promise, code, failure).await?;
    Ok(Uint8Array::new(&buffer).to_vec())
}
