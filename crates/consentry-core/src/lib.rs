//! consentry-core: the OAuth 2.0 / OpenID Connect protocol core of consentry.
//!
//! This crate contains no networking code, reads no clock and draws no randomness: bytes,
//! `now` (Unix seconds) and random bytes go in; decisions and bytes come out. The browser
//! package and the Cloudflare Worker in `crates/consentry` do the I/O, the clock, the
//! randomness (`crypto.getRandomValues`) and the asymmetric signing and verifying
//! (WebCrypto); everything that can be decided without them is decided here, once.
//!
//! The default feature `std` holds the Worker's whole protocol. Without it the crate is
//! `no_std` and holds what the browser package runs in the click: [`pkce`], [`state`],
//! [`scope`], the start form's checks in [`start`], [`error`] and [`secret`].
//!
//! The protocol order is carried by types: [`validate_authorization_response`] is the only
//! way to get a [`ValidatedAuthorizationResponse`], and
//! [`build_authorization_code_request`] takes nothing else.
//!
//! ```
//! use consentry_core::*;
//!
//! # fn main() -> Result<()> {
//! // Browser: a verifier and a state from the platform's random bytes.
//! let verifier = PkceCodeVerifier::from_random_bytes(&[7; 32]);
//! let state = State::from_random_bytes(&[9; 16]);
//!
//! // Worker: the provider's configuration and its authorization URL.
//! let provider = ProviderConfig::parse_list(
//!     r#"[{"id":"bank","profile":"generic","issuer":"https://bank.example",
//!          "client_id":"app","scopes":["accounts"],
//!          "authorization_endpoint":"https://bank.example/authorize",
//!          "token_endpoint":"https://bank.example/token"}]"#,
//! )?
//! .remove(0);
//! let metadata = provider.explicit_metadata().expect("endpoints are configured");
//! let redirect = provider.redirect_url(&WebOrigin::parse("https://consent.example")?)?;
//! assert_eq!(redirect.as_str(), "https://consent.example/auth/callback/bank");
//! let scopes = provider.scopes_for(None)?;
//! let request = provider.build_authorization_request(
//!     &redirect, &scopes, &state, &verifier.challenge(), None, None, None,
//! )?;
//! let url = request.to_url(&metadata.authorization_endpoint);
//! assert!(url.starts_with("https://bank.example/authorize?response_type=code"));
//!
//! // Worker, at the callback: iss, then state, then error, then the code.
//! let callback = format!("code=SplxlOBeZQQYbYS6WxSbIA&state={}", state.as_str());
//! let response = AuthorizationResponse::parse(&callback)?;
//! let validated = validate_authorization_response(response, &state, provider.issuer(), false)?;
//! let auth = ClientAuthentication::ClientSecretBasic(
//!     provider.client_id().clone(),
//!     ClientSecret::new("from a Worker secret"),
//! );
//! let token_request = build_authorization_code_request(
//!     &metadata.token_endpoint, &auth, validated, &redirect, verifier, &[],
//! )?;
//! assert_eq!(token_request.method(), "POST");
//!
//! // Worker: what the token endpoint answered.
//! let tokens = process_token_response(
//!     200,
//!     Some("application/json"),
//!     br#"{"access_token":"at","token_type":"Bearer","expires_in":3600}"#,
//!     &scopes,
//! )?;
//! assert_eq!(tokens.expires_in(), Some(3600));
//! assert_eq!(format!("{:?}", tokens.access_token()), "AccessToken([redacted])");
//! # Ok(())
//! # }
//! ```
//!
//! Module map: [`pkce`], [`state`] (state, nonce, storage key); [`authorization_request`]
//! (query URL, PAR, request object); [`authorization_response`]; [`client_auth`];
//! [`token_request`], [`token_response`], [`token_set`] (what is sealed at rest); [`jws`] (signing inputs), [`jwt`], [`jwk`],
//! [`id_token`]; [`dpop`]; [`discovery`]; [`provider`] (configuration and profiles) and
//! the providers' own calls, [`moneyhub`] and [`truelayer`];
//! [`outcome`] (the message the browser receives) and [`outcome_page`] (the popup's last
//! page); [`start`] (the start form) and [`user_assertion`]; [`revocation`]; [`cookie`];
//! [`error`]; [`secret`]; [`sealing`] (which key seals and which opens a value at rest).
#![forbid(unsafe_code)]
// Without `std`, the browser's subset: see the feature's note in Cargo.toml.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

/// What `std`'s prelude gives, for the modules that also build without it.
mod prelude {
    pub(crate) use alloc::borrow::ToOwned;
    pub(crate) use alloc::string::String;
    pub(crate) use alloc::vec::Vec;
    pub(crate) use alloc::{format, vec};
}

pub mod encoding;
pub mod error;
pub mod pkce;
pub mod scope;
pub mod secret;
pub mod start;
pub mod state;

pub use error::{Error, ErrorCode, OAuthErrorCode, Result};
pub use pkce::{PkceCodeChallenge, PkceCodeVerifier};
pub use scope::Scopes;
pub use secret::{
    AccessToken, AuthorizationCode, ClientAssertion, ClientSecret, IdToken, PrivateKeyJwk,
    RefreshToken, UserAssertionSecret,
};
pub use start::StartRequest;
pub use state::{Nonce, State, StateKey};

/// Items that need `std` (the Worker's whole protocol), each marked so.
macro_rules! with_std {
    ($($item:item)*) => { $( #[cfg(feature = "std")] $item )* };
}

with_std! {
    pub mod api;
    pub mod authorization_details;
    pub mod authorization_request;
    pub mod authorization_response;
    pub mod client_auth;
    pub mod consent_record;
    pub mod cookie;
    pub mod discovery;
    pub mod dpop;
    pub mod http;
    pub mod id_token;
    pub mod jwk;
    pub mod jws;
    pub mod jwt;
    pub mod moneyhub;
    pub mod outcome;
    pub mod outcome_page;
    pub mod provider;
    pub mod revocation;
    pub mod sealing;
    pub mod token_request;
    pub mod token_response;
    pub mod token_set;
    pub mod truelayer;
    pub mod url;
    pub mod user_assertion;

    pub use authorization_request::{
        process_par_response, AuthorizationRequest, PushedAuthorizationResponse,
    };
    pub use authorization_response::{
        validate_authorization_response, AuthorizationResponse, ValidatedAuthorizationResponse,
    };
    pub use client_auth::{build_client_assertion, ClientAuthMethod, ClientAuthentication, ClientId};
    pub use consent_record::{ConsentRecord, ConsentStatus, StoredConsent};
    pub use http::HttpRequest;
    pub use jws::{JwsAlgorithm, JwsSigningInput};
    pub use outcome::{Consent, Outcome, OutcomeStatus};
    pub use outcome_page::OutcomePage;
    pub use provider::{Profile, ProviderConfig};
    pub use revocation::{build_revocation_request, process_revocation_response, RevocableToken};
    pub use token_request::{
        build_authorization_code_request, build_client_credentials_request,
        build_refresh_token_request, AuthorizationCodeGrant,
    };
    pub use token_response::{
        process_refresh_response, process_token_response, TokenResponse, TokenType,
    };
    pub use token_set::TokenSet;
    pub use url::{AllowedOrigins, EndpointUrl, IssuerUrl, RedirectUrl, WebOrigin};
    pub use user_assertion::{verify_user_assertion, AppUser};
}
