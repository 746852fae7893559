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

/// The browser build's allocator: a small free list, since the page's Wasm allocates only a
/// few short strings per flow and dlmalloc would be most of the module's size.
#[cfg(all(feature = "browser", target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());

#[cfg(feature = "edge")]
mod edge;
