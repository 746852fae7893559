//! Hostile input at volume for every parser that reads untrusted bytes (proptest, on the
//! stable toolchain): random input, and valid samples mutated byte by byte. Three properties
//! each time:
//!
//! * no panic (a panic fails the test, with the shrunk input);
//! * every rejection has a stable code: its wire string reads back as the same code, and is
//!   one of consentry's snake_case codes or an RFC 6749 error string;
//! * no error text quotes a secret: what the input carried (a code, a verifier, a JWT, an
//!   assertion), or for a provider's answer, what the request sent and the tokens the
//!   answer itself holds.
//!
//! `CONSENTRY_FUZZ_CASES` sets the inputs per parser (default 10,000: seconds in the test
//! command); for a long run by hand:
//!
//! ```sh
//! CONSENTRY_FUZZ_CASES=200000 cargo test -p consentry-core --release --test fuzz -- --nocapture
//! ```

use consentry_core::api::{choose_consent, ApiCall, ConsentCandidate};
use consentry_core::cookie::cookie_value;
use consentry_core::discovery::process_discovery_response;
use consentry_core::jwk::JwkSet;
use consentry_core::jwt::UnverifiedJwt;
use consentry_core::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Secrets in the samples: long and random-looking, so that no fixed text of an error
/// message contains one by chance.
const CODE: &str = "SplxlOBeZQQYbYS6WxSbIA-f4ke";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const ACCESS: &str = "2YotnFZFEjr1zCsicMWpAA-access";
const REFRESH: &str = "tGzv3JOkF0XG5Qx2TlKWIA-refresh";
const USER_SECRET: &[u8] = b"a-user-assertion-secret-of-32-bytes!";

fn cases() -> u32 {
    std::env::var("CONSENTRY_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(10_000)
}

/// Runs `check` on `cases()` inputs from `strategy`, and says how fast it went.
fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let started = std::time::Instant::now();
    runner
        .run(&strategy, |input| {
            check(input);
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{name}: {failure}"));
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz {name}: {} inputs in {secs:.2} s, {:.0} per second",
        cases(),
        f64::from(cases()) / secs
    );
}

/// Random text, or `samples` mutated: characters replaced, inserted and removed, halves cut.
fn text_from(samples: &'static [&'static str]) -> impl Strategy<Value = String> {
    let mutated = (
        prop::sample::select(samples),
        prop::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0..4u8), 0..12),
    )
        .prop_map(|(sample, edits)| {
            let mut chars: Vec<char> = sample.chars().collect();
            for (at, c, kind) in edits {
                let len = chars.len();
                match kind {
                    0 if len > 0 => chars[at.index(len)] = c,
                    1 => chars.insert(at.index(len + 1), c),
                    2 if len > 0 => {
                        chars.remove(at.index(len));
                    }
                    _ => chars.truncate(at.index(len + 1)),
                }
            }
            chars.into_iter().collect::<String>()
        });
    prop_oneof![3 => mutated, 1 => any::<String>(), 1 => "[ -~]{0,200}"]
}

/// The same for bytes (bodies), including invalid UTF-8.
fn bytes_from(samples: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => text_from(samples).prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
}

/// A rejection's code is stable and its text quotes none of `secrets`.
fn assert_clean(error: &Error, secrets: &[&str]) {
    let code = error.code();
    let wire = code.as_str();
    assert_eq!(
        &ErrorCode::parse(wire),
        code,
        "{wire} reads back as the same code"
    );
    assert!(
        !wire.is_empty()
            && wire.len() <= 64
            && wire
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'),
        "{wire:?} is no stable code"
    );
    for secret in secrets {
        assert!(
            secret.len() < 8 || !error.description().contains(secret),
            "{wire}: the description quotes a secret: {}",
            error.description()
        );
    }
}

fn check<T>(result: Result<T>, secrets: &[&str]) {
    if let Err(error) = result {
        assert_clean(&error, secrets);
    }
}

#[test]
fn callback_query_and_form() {
    static SAMPLES: &[&str] = &[
        "code=SplxlOBeZQQYbYS6WxSbIA-f4ke&state=af0ifjsldkjAAAAAAAAAAAAA&iss=https%3A%2F%2Fbank.example",
        "error=access_denied&error_description=The+user+said+no&state=af0ifjsldkjAAAAAAAAAAAAA",
        "state=af0ifjsldkjAAAAAAAAAAAAA&code=SplxlOBeZQQYbYS6WxSbIA-f4ke&code=x",
    ];
    let state = State::parse("af0ifjsldkjAAAAAAAAAAAAA").expect("state");
    let issuer = IssuerUrl::parse("https://bank.example").expect("issuer");
    fuzz(
        "callback",
        text_from(SAMPLES),
        |query| match AuthorizationResponse::parse(&query) {
            Ok(response) => check(
                validate_authorization_response(response, &state, &issuer, true),
                &[CODE],
            ),
            Err(error) => assert_clean(&error, &[CODE]),
        },
    );
}

#[test]
fn start_form() {
    static SAMPLES: &[&str] = &[
        "provider=local-bank&state=af0ifjsldkjAAAAAAAAAAAAA&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk&user=usr_alice",
        "provider=bank&state=af0ifjsldkjAAAAAAAAAAAAA&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&user=eyJhbGciOiJIUzI1NiJ9.e30.sig&scope=accounts+balance&provider_hint=ob-bank",
    ];
    fuzz("start form", text_from(SAMPLES), |form| {
        check(StartRequest::parse(&form), &[VERIFIER]);
    });
}

#[test]
fn token_refresh_par_and_revocation_answers() {
    static SAMPLES: &[&str] = &[
        r#"{"access_token":"2YotnFZFEjr1zCsicMWpAA-access","token_type":"Bearer","expires_in":3600,"refresh_token":"tGzv3JOkF0XG5Qx2TlKWIA-refresh","scope":"accounts"}"#,
        r#"{"error":"invalid_grant","error_description":"code SplxlOBeZQQYbYS6WxSbIA-f4ke was used"}"#,
        r#"{"request_uri":"urn:ietf:params:oauth:request_uri:6esc_11ACC5bwc014ltc14eY22c","expires_in":60}"#,
        r#"{"access_token":"2YotnFZFEjr1zCsicMWpAA-access","token_type":"DPoP","id_token":"eyJhbGciOiJSUzI1NiJ9.e30.c2ln"}"#,
    ];
    let scopes = Scopes::parse("openid accounts").expect("scopes");
    let plain = Scopes::parse("accounts").expect("scopes");
    let statuses = prop::sample::select(&[200u16, 201, 400, 401, 500, 302][..]);
    fuzz(
        "token answers",
        (statuses, bytes_from(SAMPLES)),
        |(status, body)| {
            // As the Worker reads them: a provider's description that repeats what the
            // request sent (the code and verifier, the refresh token) is withheld.
            let json = Some("application/json");
            let exchange = [CODE, VERIFIER];
            let answer = process_token_response(status, json, &body, &scopes);
            check(
                answer.map_err(|error| error.withholding(&exchange)),
                &exchange,
            );
            let answer = process_token_response(status, None, &body, &plain);
            check(
                answer.map_err(|error| error.withholding(&exchange)),
                &exchange,
            );
            let answer = process_refresh_response(status, json, &body, &scopes);
            check(
                answer.map_err(|error| error.withholding(&[REFRESH])),
                &[REFRESH],
            );
            // PAR carries no code or token, and a revocation answer is never quoted.
            check(process_par_response(status, &body), &[]);
            check(
                process_revocation_response(status, &body),
                &[ACCESS, REFRESH, CODE],
            );
        },
    );
}

#[test]
fn discovery_and_jwks_documents() {
    static SAMPLES: &[&str] = &[
        r#"{"issuer":"https://bank.example","authorization_endpoint":"https://bank.example/auth","token_endpoint":"https://bank.example/token","jwks_uri":"https://bank.example/jwks","code_challenge_methods_supported":["S256"],"response_types_supported":["code"]}"#,
        r#"{"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","use":"sig","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB"},{"kty":"EC","crv":"P-256","kid":"k2","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#,
    ];
    let issuer = IssuerUrl::parse("https://bank.example").expect("issuer");
    fuzz("discovery, JWKS", bytes_from(SAMPLES), |body| {
        check(process_discovery_response(&issuer, 200, &body), &[]);
        check(JwkSet::parse(&body), &[]);
    });
}

#[test]
fn jwts_and_user_assertions() {
    // An id_token-shaped JWT and an HS256 user assertion (header, claims, signature).
    static SAMPLES: &[&str] = &[
        "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2JhbmsuZXhhbXBsZSIsInN1YiI6ImFsaWNlIiwiYXVkIjoiYXBwIiwiZXhwIjoxOTAwMDAwMDAwLCJpYXQiOjE3MDAwMDAwMDB9.c2lnbmF0dXJl",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c3JfYWxpY2UiLCJhdWQiOiJodHRwczovL2NvbnNlbnQuZXhhbXBsZSIsImV4cCI6MTkwMDAwMDAwMH0.bm90LWEtcmVhbC1zaWduYXR1cmU",
        "eyJhbGciOiJub25lIn0.e30.",
    ];
    let allowed = [
        JwsAlgorithm::RS256,
        JwsAlgorithm::ES256,
        JwsAlgorithm::PS256,
    ];
    fuzz("JWTs, user assertions", text_from(SAMPLES), |jwt| {
        // The JWT itself is what must never be quoted back.
        let quoted: &[&str] = &[jwt.as_str()];
        let quoted = if jwt.len() >= 8 { quoted } else { &[] };
        check(UnverifiedJwt::parse(&jwt, &allowed), quoted);
        check(
            verify_user_assertion(&jwt, USER_SECRET, "https://consent.example", 1_800_000_000),
            quoted,
        );
    });
}

#[test]
fn api_paths_consent_header_and_cookies() {
    static SAMPLES: &[&str] = &[
        "/accounts/acc-1/balance",
        "/accounts/%2e%2e/transactions",
        "/accounts/acc-1/transactions?limit=5&from=2024-01-01",
        "cns_4f1c2a9d0b7e; __Host-consentry-session=SplxlOBeZQQYbYS6WxSbIA-f4ke",
    ];
    let provider = ProviderConfig::parse_list(
        r#"[{"id":"bank","profile":"generic","issuer":"https://bank.example","client_id":"app",
            "scopes":["accounts"],"authorization_endpoint":"https://bank.example/authorize",
            "token_endpoint":"https://bank.example/token","api_base_url":"https://bank.example/data",
            "api_paths":["/accounts"]}]"#,
    )
    .expect("config")
    .remove(0);
    let candidates = [
        ConsentCandidate {
            id: "cns_4f1c2a9d0b7e",
            status: ConsentStatus::Active,
        },
        ConsentCandidate {
            id: "cns_revoked",
            status: ConsentStatus::Revoked,
        },
    ];
    let methods = prop::sample::select(&["GET", "POST", "DELETE", "PUT", "get", ""][..]);
    fuzz(
        "/api path, consent header, cookies",
        (methods, text_from(SAMPLES), text_from(SAMPLES)),
        |(method, path, other)| {
            let (path, query) = path
                .split_once('?')
                .map_or((path.as_str(), None), |(p, q)| (p, Some(q)));
            check(ApiCall::parse(&provider, method, path, query), &[CODE]);
            check(choose_consent(Some(&other), &candidates), &[]);
            // Cookies: a value, if any, is a slice of the header, never more.
            if let Some(value) = cookie_value(&other, "__Host-consentry-session") {
                assert!(other.contains(value));
            }
        },
    );
}

#[test]
fn outcome_messages_and_sealed_token_sets() {
    static SAMPLES: &[&str] = &[
        r#"{"type":"consentry:outcome","v":1,"state":"af0ifjsldkjAAAAAAAAAAAAA","status":"granted","consent":{"id":"cns_1","provider":"bank","user":"usr_alice","scopes":["accounts"],"granted_at":"2026-01-01T00:00:00Z","expires_at":null}}"#,
        r#"{"type":"consentry:outcome","v":1,"state":"af0ifjsldkjAAAAAAAAAAAAA","status":"failed","error":"access_denied","error_description":"no"}"#,
        r#"{"access_token":"2YotnFZFEjr1zCsicMWpAA-access","refresh_token":"tGzv3JOkF0XG5Qx2TlKWIA-refresh","token_type":"Bearer","scopes":["accounts"]}"#,
    ];
    fuzz("outcomes, token sets", bytes_from(SAMPLES), |body| {
        check(Outcome::parse(&String::from_utf8_lossy(&body)), &[]);
        check(TokenSet::parse(&body), &[ACCESS, REFRESH]);
    });
}

#[test]
fn stored_sealed_values_and_sealing_keys() {
    use consentry_core::sealing::{SealingKey, SealingKeys};
    const KEY: &str = "q2Nk0pC3kx2a6k8Vd0mXyH1u3yTt7cS5bQpYcD2fG4A";
    static SAMPLES: &[&str] = &[
        "Ab3_xY9z.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        "q2Nk0pC3kx2a6k8Vd0mXyH1u3yTt7cS5bQpYcD2fG4A",
    ];
    let keys = SealingKeys::new(
        SealingKey::parse("CONSENTRY_KEY", KEY).expect("a valid key"),
        None,
    );
    fuzz("sealed values, sealing keys", text_from(SAMPLES), |text| {
        check(keys.to_open(&text), &[KEY]);
        check(SealingKey::parse("CONSENTRY_KEY_PREVIOUS", &text), &[KEY]);
    });
}
