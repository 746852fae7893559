//! DPoP (RFC 9449) for the grants of providers that bind tokens to a key (`fapi2`): the key
//! pair made per consent by WebCrypto at `/auth/start`, and the proofs it signs for the token
//! request, every refresh and every data API call. The core builds each proof's signing
//! input ([`DpopProof`]) and reads the servers' nonce challenges; this file signs and sends.
//!
//! Servers' nonces (`DPoP-Nonce`) are kept per isolate, per server origin and role
//! (authorization server or resource server), for the next proof to that server; a request
//! the server answers with a nonce challenge is sent once more with the new nonce, never
//! more.

use std::cell::RefCell;
use std::collections::HashMap;

use consentry_core::dpop::{
    jwk_thumbprint, nonce_to_retry_with, public_jwk, valid_nonce, DpopProof,
};
use consentry_core::{AccessToken, Error, ErrorCode, JwsAlgorithm, PrivateKeyJwk, Result};
use serde_json::{Map, Value};

use super::outbound::ProviderResponse;
use super::webcrypto;
use crate::random::random_bytes;

thread_local! {
    static NONCES: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
}

/// A grant's DPoP key: the private JWK (sealed at rest, never in a response or a log) and
/// its public half, which goes into every proof's `jwk` header.
pub(crate) struct DpopKey {
    alg: JwsAlgorithm,
    private: PrivateKeyJwk,
    public: Map<String, Value>,
}

impl DpopKey {
    /// A fresh key pair for `alg`, made by WebCrypto.
    pub(crate) async fn generate(alg: JwsAlgorithm) -> Result<DpopKey> {
        DpopKey::from_private(alg, webcrypto::generate_private_key(alg).await?)
    }

    /// The key from its private JWK, as unsealed.
    pub(crate) fn from_private(alg: JwsAlgorithm, private: PrivateKeyJwk) -> Result<DpopKey> {
        let unreadable = || {
            Error::new(
                ErrorCode::RecordUnreadable,
                "a stored DPoP key is unreadable",
            )
        };
        let jwk: Value =
            serde_json::from_slice(private.secret().as_bytes()).map_err(|_| unreadable())?;
        let public = public_jwk(jwk.as_object().ok_or_else(unreadable)?)?;
        Ok(DpopKey {
            alg,
            private,
            public,
        })
    }

    /// The private JWK, to seal.
    pub(crate) fn private(&self) -> &PrivateKeyJwk {
        &self.private
    }

    /// The key's JWK thumbprint: `dpop_jkt` on the authorization request, `cnf.jkt` of the
    /// tokens it binds.
    pub(crate) fn thumbprint(&self) -> Result<String> {
        jwk_thumbprint(&self.public)
    }

    async fn proof(
        &self,
        htm: &str,
        htu: &str,
        access_token: Option<&AccessToken>,
        nonce: Option<&str>,
        now: u64,
    ) -> Result<String> {
        let mut proof = DpopProof::new(self.alg, &self.public, htm, htu, now, &random_bytes()?)?;
        if let Some(nonce) = nonce {
            proof = proof.with_nonce(nonce);
        }
        if let Some(access_token) = access_token {
            proof = proof.with_access_token(access_token);
        }
        let input = proof.into_signing_input();
        let jwk: Value =
            serde_json::from_slice(self.private.secret().as_bytes()).map_err(|_| {
                Error::new(
                    ErrorCode::RecordUnreadable,
                    "a stored DPoP key is unreadable",
                )
            })?;
        let signature = webcrypto::sign(&jwk, self.alg, input.as_bytes()).await?;
        Ok(input.assemble(&signature))
    }

    /// Runs `attempt` (which builds and sends one request carrying the proof it is given)
    /// with a proof for `htm` `htu` (and `ath` of `access_token` at a resource server),
    /// carrying the server's last nonce when one is known; when the server answers with a
    /// nonce challenge, runs it once more with a proof carrying that nonce. Each attempt
    /// builds its request afresh: a client assertion, like a proof, is single use.
    pub(crate) async fn send_with_proof<A, F>(
        &self,
        htm: &str,
        htu: &str,
        access_token: Option<&AccessToken>,
        now: u64,
        attempt: A,
    ) -> Result<ProviderResponse>
    where
        A: Fn(String) -> F,
        F: std::future::Future<Output = Result<ProviderResponse>>,
    {
        // An authorization server's nonces and a resource server's are separate (RFC 9449
        // §8, §9), even on one origin: a proof with `ath` goes to a resource server.
        let role = if access_token.is_some() {
            "resource"
        } else {
            "authorization"
        };
        let server = format!("{role} {}", origin_of(htu));
        let mut nonce = NONCES.with(|nonces| nonces.borrow().get(&server).cloned());
        let mut retried = false;
        loop {
            let proof = self
                .proof(htm, htu, access_token, nonce.as_deref(), now)
                .await?;
            let answer = attempt(proof).await?;
            if let Some(fresh) = answer.dpop_nonce.as_deref().and_then(valid_nonce) {
                NONCES.with(|nonces| nonces.borrow_mut().insert(server.clone(), fresh.to_owned()));
            }
            let challenge = nonce_to_retry_with(
                answer.status,
                &answer.body,
                answer.www_authenticate.as_deref(),
                answer.dpop_nonce.as_deref(),
            );
            match challenge {
                Some(asked) if !retried && Some(asked) != nonce.as_deref() => {
                    nonce = Some(asked.to_owned());
                    retried = true;
                }
                _ => return Ok(answer),
            }
        }
    }
}

/// `scheme://host[:port]` of a URL: the key of the nonce cache.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            format!("{scheme}://{host}")
        }
        None => url.to_owned(),
    }
}
