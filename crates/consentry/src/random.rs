//! Random bytes from the platform's CSPRNG (`crypto.getRandomValues`, through getrandom's
//! `wasm_js` backend), the one source of randomness the core is handed.

use consentry_core::{Error, ErrorCode, Result};

/// `N` bytes from the platform's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| {
        Error::new(
            ErrorCode::InvalidConfiguration,
            "the platform has no cryptographically secure random number generator",
        )
    })?;
    Ok(bytes)
}
