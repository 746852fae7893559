//! consentry: the one Wasm crate, built twice.
//!
//! * `--features browser` gives the npm package (`pkg/`): PKCE, state and the popup flow in
//!   a single-page app. `window` exists only in [`browser`](crate) code.
//! * `--features edge` gives the Cloudflare Worker: the callback, the secret-holding code
//!   exchange, token storage and consent tracking. `Env`, `Fetch` and D1 exist only there.
//!
//! Both adapters stay thin: every protocol decision lives in [`consentry_core`], so the
//! browser and the Worker share the wire types by construction.

#[cfg(all(feature = "browser", feature = "edge"))]
compile_error!(
    "consentry: features `browser` and `edge` are mutually exclusive. Build the npm package \
     with `--features browser` and the Worker with `--features edge`, one at a time."
);

#[cfg(any(feature = "browser", feature = "edge"))]
mod random;

#[cfg(feature = "browser")]
pub mod browser;

#[cfg(feature = "edge")]
mod edge;
