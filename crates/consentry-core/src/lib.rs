//! consentry-core: the sans-IO OAuth 2.0 / OpenID Connect protocol core.
#![forbid(unsafe_code)]

pub mod client_auth;
pub mod encoding;
pub mod error;
pub mod jws;
pub mod pkce;
pub mod scope;
pub mod secret;
pub mod state;
pub mod url;

pub use error::{Error, ErrorCode, OAuthErrorCode, Result};
