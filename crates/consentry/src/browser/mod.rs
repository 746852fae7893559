//! The browser adapter, exported to JavaScript with wasm-bindgen and wrapped by the package's
//! hand-written loader (`pkg/consentry.js`), which owns `window`: the popup, the form and the
//! listeners.
//!
//! Everything here is synchronous, so a flow's secrets exist before the click's task ends
//! and the popup opens in the same tick. The start form is built and checked here, by the
//! same core the Worker parses it with. The outcome message is checked in the loader: the
//! core's parser needs serde_json, which would make this module four times its size.

use consentry_core::{Error, PkceCodeVerifier, StartRequest, State};
use wasm_bindgen::prelude::*;

use crate::random::random_bytes;

/// Converts a core error to the one JavaScript error shape, `{ code, description }`; the
/// loader turns it into a `ConsentError`.
fn to_js_error(error: Error) -> JsValue {
    let object = js_sys::Object::new();
    // Setting a property on a fresh plain object cannot fail.
    let _ = js_sys::Reflect::set(&object, &"code".into(), &error.code().as_str().into());
    let _ = js_sys::Reflect::set(&object, &"description".into(), &error.description().into());
    object.into()
}

/// Starts a flow: draws a fresh PKCE verifier (32 bytes) and an opaque `state` (16 bytes)
/// from `crypto.getRandomValues`, derives the verifier's S256 challenge, checks the fields by
/// the Worker's own rules, and returns the start form as alternating names and values, for
/// the hidden inputs of the form POSTed into the popup.
///
/// The form holds the verifier: it belongs in that POST body only, never in a URL or in
/// storage. Throws `{ code, description }` for a bad field.
#[wasm_bindgen(js_name = startForm)]
pub fn start_form(
    provider: &str,
    user: &str,
    scope: Option<String>,
    provider_hint: Option<String>,
) -> Result<Vec<String>, JsValue> {
    let verifier = PkceCodeVerifier::from_random_bytes(&random_bytes().map_err(to_js_error)?);
    let state = State::from_random_bytes(&random_bytes().map_err(to_js_error)?);
    let start = StartRequest::new(
        provider,
        state,
        verifier,
        user,
        scope.as_deref(),
        provider_hint.as_deref(),
    )
    .map_err(to_js_error)?;
    Ok(start
        .form_fields()
        .into_iter()
        .flat_map(|(name, value)| [name.to_owned(), value])
        .collect())
}
