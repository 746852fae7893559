//! The browser adapter, exported to JavaScript with wasm-bindgen.
//!
//! Everything here runs synchronously, so the popup can open in the same tick as the click.

use consentry_core::pkce::VERIFIER_RANDOM_BYTES;
use consentry_core::{Error, PkceCodeVerifier, State};
use wasm_bindgen::prelude::*;

use crate::random::random_bytes;

/// Converts a core error to the one JavaScript error shape, `{ code, description }`.
fn to_js_error(error: Error) -> JsValue {
    let object = js_sys::Object::new();
    // Setting a property on a fresh plain object cannot fail.
    let _ = js_sys::Reflect::set(&object, &"code".into(), &error.code().as_str().into());
    let _ = js_sys::Reflect::set(&object, &"description".into(), &error.description().into());
    object.into()
}

/// The secrets of one flow: a PKCE verifier (32 random bytes), its S256 challenge and an
/// opaque state (128 bits), made synchronously in Wasm.
///
/// The verifier leaves Wasm only to be written into the POST form submitted to the popup.
#[wasm_bindgen]
pub struct FlowSecrets {
    verifier: PkceCodeVerifier,
    state: State,
}

#[wasm_bindgen]
impl FlowSecrets {
    /// Draws fresh secrets from `crypto.getRandomValues`.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Result<FlowSecrets, JsValue> {
        let verifier = PkceCodeVerifier::from_random_bytes(
            &random_bytes::<VERIFIER_RANDOM_BYTES>().map_err(to_js_error)?,
        );
        let state = State::from_random_bytes(&random_bytes::<16>().map_err(to_js_error)?)
            .map_err(to_js_error)?;
        Ok(FlowSecrets { verifier, state })
    }

    /// The opaque `state`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        self.state.as_str().to_owned()
    }

    /// The S256 `code_challenge` of the verifier.
    #[wasm_bindgen(getter, js_name = codeChallenge)]
    pub fn code_challenge(&self) -> String {
        self.verifier.challenge().as_str().to_owned()
    }

    /// The verifier, for the form field of the start request and nothing else.
    #[wasm_bindgen(js_name = codeVerifierForForm)]
    pub fn code_verifier_for_form(&self) -> String {
        self.verifier.secret().to_owned()
    }
}
