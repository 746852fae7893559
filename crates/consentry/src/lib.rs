//! consentry: the one Wasm crate, built twice.
//!
//! * `--features browser` gives the npm package (`pkg/`): PKCE, state and the popup flow in
//!   a single-page app. `window` exists only in [`browser`](crate) code.
//! * `--features edge` gives the Cloudflare Worker: the callback, the secret-holding code
//!   exchange, token storage and consent tracking. `Env`, `Fetch` and D1 exist only there.
//!
//! Both adapters stay thin: every protocol decision lives in [`consentry_core`], so the
//! browser and the Worker share the wire types by construction.
//!
//! The browser build is `no_std`, over the core's `no_std` subset: nothing in the page's
//! module can format text or unwind, so a panic (which the checks leave no path to) is a
//! trap, and the module carries no formatting machinery.
#![cfg_attr(all(feature = "browser", not(feature = "edge")), no_std)]

#[cfg(all(feature = "browser", feature = "edge"))]
compile_error!(
    "consentry: features `browser` and `edge` are mutually exclusive. Build the npm package \
     with `--features browser` and the Worker with `--features edge`, one at a time."
);

#[cfg(feature = "edge")]
mod random;

#[cfg(feature = "browser")]
extern crate alloc;

#[cfg(feature = "browser")]
pub mod browser;

/// Without `std` there is no panic runtime: a panic traps, and JavaScript sees a
/// `RuntimeError` from the call.
#[cfg(all(feature = "browser", not(feature = "edge"), target_arch = "wasm32"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// The browser build's allocator: a small free list, since the page's Wasm allocates only a
/// few short strings per flow and dlmalloc would be most of the module's size.
#[cfg(all(feature = "browser", target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());

#[cfg(feature = "edge")]
mod edge;
