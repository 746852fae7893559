//! consentry's one Wasm crate.
#[cfg(all(feature = "browser", feature = "edge"))]
compile_error!("x");
