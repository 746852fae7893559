//! The whole authorization code flow through the core's public API, against an in-memory
//! authorization server that checks what a real one checks: registered redirect URI, PKCE
//! S256, single-use codes, client authentication, and that signs an id_token.

use std::collections::HashMap;

use consentry_core::discovery::{process_discovery_response, ProviderMetadata};
use consentry_core::encoding::{base64url_decode, base64url_encode, form_decode, sha256};
use consentry_core::id_token::{validate_id_token_claims, IdTokenValidation};
use consentry_core::jwt::UnverifiedJwt;
use consentry_core::outcome::{format_rfc3339, Consent, Outcome, OutcomeStatus};
use consentry_core::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const ISSUER: &str = "https://bank.example";
const CLIENT_ID: &str = "consentry-demo";
const CLIENT_SECRET: &str = "a client secret long enough for HS256 keys";
const REDIRECT: &str = "https://consent.example/auth/callback/bank";
const NOW: u64 = 1_790_000_000;

/// What the fake server remembers about an issued code.
struct Grant {
    redirect_uri: String,
    code_challenge: String,
    scope: String,
    nonce: Option<String>,
    user: String,
}

/// An authorization server in memory, strict where a real one is.
#[derive(Default)]
struct FakeBank {
    codes: HashMap<String, Grant>,
    pushed: HashMap<String, Vec<(String, String)>>,
    issued: u32,
}

struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn oauth_error(status: u16, error: &str) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body: json!({"error": error, "error_description": "refused by the fake bank"})
            .to_string()
            .into_bytes(),
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(known, _)| known == name)
        .map(|(_, value)| value.as_str())
}

fn sign_hs256(claims: &Value, key: &[u8]) -> String {
    let input = JwsSigningInput::new(
        JwsAlgorithm::HS256,
        "JWT",
        None,
        serde_json::Map::new(),
        claims,
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(input.as_bytes());
    input.assemble(&mac.finalize().into_bytes())
}

impl FakeBank {
    fn discovery(&self) -> Vec<u8> {
        json!({
            "issuer": ISSUER,
            "authorization_endpoint": format!("{ISSUER}/auth"),
            "token_endpoint": format!("{ISSUER}/token"),
            "pushed_authorization_request_endpoint": format!("{ISSUER}/par"),
            "jwks_uri": format!("{ISSUER}/jwks"),
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        })
        .to_string()
        .into_bytes()
    }

    fn client_authenticated(&self, request: &HttpRequest, params: &[(String, String)]) -> bool {
        if let Some(basic) = request.header("Authorization") {
            let encoded = basic.trim_start_matches("Basic ").trim_end_matches('=');
            let decoded = base64url_decode(&encoded.replace('+', "-").replace('/', "_"))
                .and_then(|bytes| String::from_utf8(bytes).ok());
            let expected = format!("{CLIENT_ID}:{}", CLIENT_SECRET.replace(' ', "+"));
            return decoded.as_deref() == Some(expected.as_str());
        }
        param(params, "client_id") == Some(CLIENT_ID)
            && param(params, "client_secret") == Some(CLIENT_SECRET)
    }

    /// The user at the consent page: approves or denies; returns the redirect's query.
    fn authorize(&mut self, url: &str, user: &str, approve: bool) -> String {
        let query = url.split_once('?').expect("query").1;
        let mut params = form_decode(query);
        if let Some(request_uri) = param(&params, "request_uri") {
            assert_eq!(param(&params, "client_id"), Some(CLIENT_ID));
            assert_eq!(
                params.len(),
                2,
                "after PAR only client_id and request_uri travel"
            );
            params = self.pushed.remove(request_uri).expect("known request_uri");
        }
        assert_eq!(param(&params, "response_type"), Some("code"));
        assert_eq!(param(&params, "client_id"), Some(CLIENT_ID));
        assert_eq!(param(&params, "redirect_uri"), Some(REDIRECT));
        assert_eq!(param(&params, "code_challenge_method"), Some("S256"));
        assert!(param(&params, "code_verifier").is_none());
        let state = param(&params, "state").expect("state");
        let mut reply = vec![("state", state.to_owned()), ("iss", ISSUER.to_owned())];
        if approve {
            self.issued += 1;
            let code = format!(
                "code-{}-{}",
                self.issued,
                base64url_encode(&[self.issued as u8; 12])
            );
            self.codes.insert(
                code.clone(),
                Grant {
                    redirect_uri: REDIRECT.into(),
                    code_challenge: param(&params, "code_challenge").expect("challenge").into(),
                    scope: param(&params, "scope").unwrap_or_default().into(),
                    nonce: param(&params, "nonce").map(str::to_owned),
                    user: user.into(),
                },
            );
            reply.insert(0, ("code", code));
        } else {
            reply.insert(0, ("error", "access_denied".into()));
            reply.insert(
                1,
                (
                    "error_description",
                    "The user declined <b>consent</b>".into(),
                ),
            );
        }
        consentry_core::encoding::form_encode(reply.iter().map(|(n, v)| (*n, v.as_str())))
    }

    fn par(&mut self, request: &HttpRequest) -> Answer {
        let params = form_decode(request.body());
        if !self.client_authenticated(request, &params) {
            return oauth_error(401, "invalid_client");
        }
        let request_uri = format!("urn:ietf:params:oauth:request_uri:{}", self.pushed.len());
        self.pushed.insert(request_uri.clone(), params);
        Answer {
            status: 201,
            content_type: "application/json",
            body: json!({"request_uri": request_uri, "expires_in": 60})
                .to_string()
                .into_bytes(),
        }
    }

    fn token(&mut self, request: &HttpRequest) -> Answer {
        assert_eq!(request.method(), "POST");
        assert_eq!(request.url(), format!("{ISSUER}/token"));
        let params = form_decode(request.body());
        if !self.client_authenticated(request, &params) {
            return oauth_error(401, "invalid_client");
        }
        if param(&params, "grant_type") != Some("authorization_code") {
            return oauth_error(400, "unsupported_grant_type");
        }
        // Single use: the code is gone whatever happens next.
        let Some(grant) = param(&params, "code").and_then(|code| self.codes.remove(code)) else {
            return oauth_error(400, "invalid_grant");
        };
        let verifier = param(&params, "code_verifier").unwrap_or_default();
        if base64url_encode(&sha256(verifier.as_bytes())) != grant.code_challenge
            || param(&params, "redirect_uri") != Some(grant.redirect_uri.as_str())
        {
            return oauth_error(400, "invalid_grant");
        }
        let mut body = json!({
            "access_token": format!("at-{}", self.issued),
            "token_type": "bearer",
            "expires_in": 3600,
            "refresh_token": format!("rt-{}", self.issued),
            "scope": grant.scope,
        });
        if grant.scope.split(' ').any(|scope| scope == "openid") {
            let mut claims = json!({
                "iss": ISSUER, "sub": grant.user, "aud": CLIENT_ID,
                "iat": NOW, "exp": NOW + 300, "auth_time": NOW - 10,
            });
            if let Some(nonce) = grant.nonce {
                claims["nonce"] = nonce.into();
            }
            body["id_token"] = sign_hs256(&claims, CLIENT_SECRET.as_bytes()).into();
        }
        Answer {
            status: 200,
            content_type: "application/json;charset=utf-8",
            body: body.to_string().into_bytes(),
        }
    }
}

fn provider(extra: &str) -> ProviderConfig {
    ProviderConfig::parse_list(&format!(
        r#"[{{"id":"bank","profile":"generic","issuer":"{ISSUER}","client_id":"{CLIENT_ID}",
             "scopes":["openid","accounts","offline_access"],"id_token_signing_algs":["HS256"]{extra}}}]"#
    ))
    .expect("valid configuration")
    .remove(0)
}

/// What the browser and the Worker hold between start and callback.
struct Transaction {
    state: State,
    verifier: PkceCodeVerifier,
    nonce: Nonce,
    scopes: Scopes,
}

/// The Worker's start: a transaction and the authorization request for it, plus the
/// front-channel URL that carries the request in its query.
fn start(bank: &FakeBank, provider: &ProviderConfig, seed: u8) -> (Transaction, String) {
    let (transaction, request, metadata) = start_request(bank, provider, seed);
    let url = request.to_url(&metadata.authorization_endpoint);
    (transaction, url)
}

fn start_request(
    bank: &FakeBank,
    provider: &ProviderConfig,
    seed: u8,
) -> (Transaction, AuthorizationRequest, ProviderMetadata) {
    let metadata =
        process_discovery_response(provider.issuer(), 200, &bank.discovery()).expect("discovery");
    let transaction = Transaction {
        state: State::from_random_bytes(&[seed; 16]),
        verifier: PkceCodeVerifier::from_random_bytes(&[seed; 32]),
        nonce: Nonce::from_random_bytes(&[seed ^ 0xff; 16]),
        scopes: provider.scopes_for(None).expect("scopes"),
    };
    let request = provider
        .build_authorization_request(
            &RedirectUrl::parse(REDIRECT).expect("valid"),
            &transaction.scopes,
            &transaction.state,
            &transaction.verifier.challenge(),
            Some(&transaction.nonce),
            None,
            None,
        )
        .expect("request");
    (transaction, request, metadata)
}

/// The Worker's callback: validate, exchange, verify the id_token, build the outcome.
fn callback(
    bank: &mut FakeBank,
    provider: &ProviderConfig,
    tx: Transaction,
    query: &str,
) -> Result<Outcome> {
    let metadata = process_discovery_response(provider.issuer(), 200, &bank.discovery())?;
    let response = AuthorizationResponse::parse(query)?;
    assert_eq!(
        response.state().as_ref(),
        Some(&tx.state),
        "the state finds the transaction"
    );
    let validated = validate_authorization_response(
        response,
        &tx.state,
        provider.issuer(),
        provider.requires_iss(&metadata),
    )?;
    let auth = ClientAuthentication::ClientSecretBasic(
        provider.client_id().clone(),
        ClientSecret::new(CLIENT_SECRET),
    );
    let http = build_authorization_code_request(
        &metadata.token_endpoint,
        &auth,
        validated,
        &RedirectUrl::parse(REDIRECT)?,
        tx.verifier,
        &[],
    )?;
    let answer = bank.token(&http);
    let tokens = process_token_response(
        answer.status,
        Some(answer.content_type),
        &answer.body,
        &tx.scopes,
    )?;
    let id_token = tokens.id_token().expect("openid was requested");
    let jwt = UnverifiedJwt::parse(id_token.secret(), provider.id_token_signing_algs())?
        .verify_hs256(CLIENT_SECRET.as_bytes())?;
    let claims = validate_id_token_claims(
        &jwt,
        &IdTokenValidation::new(provider.issuer(), provider.client_id(), NOW + 5)
            .with_nonce(&tx.nonce),
    )?;
    Ok(Outcome::granted(
        tx.state,
        Consent {
            id: "consent-1".into(),
            provider: provider.id().into(),
            user: claims.sub().into(),
            scopes: tokens.scopes().iter().map(str::to_owned).collect(),
            granted_at: format_rfc3339(NOW),
            expires_at: tokens.expires_in().map(|secs| format_rfc3339(NOW + secs)),
        },
    ))
}

#[test]
fn full_code_flow_grants_a_consent_and_the_outcome_holds_no_secret() {
    let mut bank = FakeBank::default();
    let provider = provider("");
    let (tx, url) = start(&bank, &provider, 1);
    let verifier_text = tx.verifier.secret().to_owned();
    assert!(
        url.starts_with("https://bank.example/auth?response_type=code&client_id=consentry-demo")
    );
    assert!(!url.contains(&verifier_text));

    let query = bank.authorize(&url, "alice", true);
    let code = form_decode(&query).remove(0).1;
    let outcome = callback(&mut bank, &provider, tx, &query).expect("granted");

    assert_eq!(outcome.status(), OutcomeStatus::Granted);
    let consent = outcome.consent().expect("consent");
    assert_eq!(consent.user, "alice");
    assert_eq!(consent.scopes, ["openid", "accounts", "offline_access"]);
    let json = outcome.to_json();
    for secret in [code.as_str(), verifier_text.as_str(), "at-1", "rt-1", "eyJ"] {
        assert!(!json.contains(secret), "outcome leaks {secret}");
    }
    assert!(bank.codes.is_empty(), "the code was consumed");
}

#[test]
fn a_replayed_code_is_refused_with_the_rfc_error() {
    let mut bank = FakeBank::default();
    let provider = provider("");
    let (first, url) = start(&bank, &provider, 2);
    let replay = Transaction {
        state: first.state.clone(),
        verifier: PkceCodeVerifier::parse(first.verifier.secret()).expect("valid"),
        nonce: first.nonce.clone(),
        scopes: first.scopes.clone(),
    };
    let query = bank.authorize(&url, "bob", true);
    callback(&mut bank, &provider, first, &query).expect("first exchange");
    let error = callback(&mut bank, &provider, replay, &query).expect_err("replay");
    assert_eq!(
        error.code(),
        &ErrorCode::OAuth(OAuthErrorCode::InvalidGrant)
    );
}

#[test]
fn a_wrong_verifier_is_refused() {
    let mut bank = FakeBank::default();
    let provider = provider("");
    let (tx, url) = start(&bank, &provider, 3);
    let query = bank.authorize(&url, "carol", true);
    let forged = Transaction {
        verifier: PkceCodeVerifier::from_random_bytes(&[99; 32]),
        ..tx
    };
    let error = callback(&mut bank, &provider, forged, &query).expect_err("wrong verifier");
    assert_eq!(error.code().as_str(), "invalid_grant");
}

#[test]
fn denial_at_the_bank_becomes_a_denied_outcome() {
    let mut bank = FakeBank::default();
    let provider = provider("");
    let (tx, url) = start(&bank, &provider, 4);
    let state = tx.state.clone();
    let query = bank.authorize(&url, "alice", false);
    let error = callback(&mut bank, &provider, tx, &query).expect_err("denied");
    assert_eq!(
        error.code(),
        &ErrorCode::OAuth(OAuthErrorCode::AccessDenied)
    );
    let outcome = Outcome::from_error(state, &error);
    assert_eq!(outcome.status(), OutcomeStatus::Denied);
    let parsed = Outcome::parse(&outcome.to_json()).expect("round trip");
    assert_eq!(
        parsed
            .error()
            .map(|e| e.description().to_owned())
            .as_deref(),
        Some("The user declined <b>consent</b>")
    );
}

#[test]
fn a_response_from_another_issuer_is_a_mix_up() {
    let mut bank = FakeBank::default();
    let provider = provider("");
    let (tx, url) = start(&bank, &provider, 5);
    let query = bank
        .authorize(&url, "alice", true)
        .replace("bank.example", "evil.example");
    let error = callback(&mut bank, &provider, tx, &query).expect_err("mix-up");
    assert_eq!(error.code(), &ErrorCode::IssMismatch);
    assert_eq!(bank.codes.len(), 1, "no exchange was attempted");
}

#[test]
fn a_callback_for_another_flow_is_a_state_mismatch() {
    let mut bank = FakeBank::default();
    let provider = provider("");
    let (_, url) = start(&bank, &provider, 6);
    let (other, _) = start(&bank, &provider, 7);
    let query = bank.authorize(&url, "alice", true);
    let response = AuthorizationResponse::parse(&query).expect("parses");
    let issuer = IssuerUrl::parse(ISSUER).expect("valid");
    let refused = validate_authorization_response(response, &other.state, &issuer, true)
        .expect_err("another flow's state");
    assert_eq!(refused.code(), &ErrorCode::StateMismatch);
}

#[test]
fn pushed_authorization_request_flow() {
    let mut bank = FakeBank::default();
    let provider = provider(r#","par":true,"auth_method":"client_secret_post""#);
    assert!(provider.uses_par());
    let (tx, request, metadata) = start_request(&bank, &provider, 8);
    let front_channel_url = request.to_url(&metadata.authorization_endpoint);
    // Push the parameters instead of sending them on the front channel.
    let auth = ClientAuthentication::ClientSecretPost(
        provider.client_id().clone(),
        ClientSecret::new(CLIENT_SECRET),
    );
    let par_endpoint = metadata
        .pushed_authorization_request_endpoint
        .clone()
        .expect("advertised");
    let answer = bank.par(&request.build_par_request(&par_endpoint, &auth));
    let pushed = process_par_response(answer.status, &answer.body).expect("pushed");
    let url = pushed.authorization_url(&metadata.authorization_endpoint, provider.client_id());
    assert!(url.len() < front_channel_url.len());
    assert!(!url.contains("code_challenge") && !url.contains("state="));

    let query = bank.authorize(&url, "bob", true);
    let outcome = callback(&mut bank, &provider, tx, &query).expect("granted");
    assert_eq!(outcome.consent().map(|c| c.user.as_str()), Some("bob"));

    let wrong_secret = ClientAuthentication::ClientSecretPost(
        provider.client_id().clone(),
        ClientSecret::new("nope"),
    );
    let answer = bank.par(&request.build_par_request(&par_endpoint, &wrong_secret));
    let error = process_par_response(answer.status, &answer.body).expect_err("unauthenticated");
    assert_eq!(error.code().as_str(), "invalid_client");
}
