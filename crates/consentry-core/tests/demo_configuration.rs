//! The demo's provider configuration (`CONSENTRY_PROVIDERS` in `wrangler.toml`) is JSON inside
//! a TOML string, which nothing else checks before the Worker starts: here it must parse with
//! the core's strict rules and point at the local bank as `bank/bank.mjs` sets it up.

use std::path::Path;

use consentry_core::{ClientAuthMethod, Profile, ProviderConfig};

fn repo_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn wrangler_var(name: &str) -> String {
    let wrangler = repo_file("wrangler.toml");
    let line = wrangler
        .lines()
        .find(|line| line.starts_with(&format!("{name} = ")))
        .unwrap_or_else(|| panic!("wrangler.toml has no {name}"));
    let value = line.split_once(" = ").expect("name = value").1.trim();
    // A one-line TOML literal ('...') or basic ("...") string without escapes.
    value[1..value.len() - 1].to_owned()
}

#[test]
fn demo_providers_parse_and_match_the_local_bank() {
    let providers = ProviderConfig::parse_list(&wrangler_var("CONSENTRY_PROVIDERS"))
        .expect("CONSENTRY_PROVIDERS in wrangler.toml is a valid provider list");
    let bank = providers
        .iter()
        .find(|provider| provider.id() == "local-bank")
        .expect("the demo has the local bank");
    assert_eq!(bank.issuer().as_str(), "http://localhost:9000");
    assert_eq!(bank.auth_method(), ClientAuthMethod::ClientSecretBasic);
    assert_eq!(bank.client_secret_name(), "LOCAL_BANK_CLIENT_SECRET");
    assert_eq!(
        bank.api_base_url().map(|url| url.as_str()),
        Some("http://localhost:9000/data/v1"),
        "the demo reads the bank's data API (bank/data-api.mjs)"
    );
    assert!(bank.allows_api_segments(&[
        "accounts".to_owned(),
        "acc-alice-current".to_owned(),
        "balance".to_owned()
    ]));

    let bank_source = repo_file("bank/bank.mjs");
    assert!(repo_file("bank/data-api.mjs").contains("/data/v1/accounts"));
    assert!(bank_source.contains(&format!("client_id: '{}'", bank.client_id().as_str())));
    assert!(bank_source.contains("process.env.BANK_PORT || 9000"));
    assert!(bank_source.contains("token_endpoint_auth_method: 'client_secret_basic'"));
    let public_url = wrangler_var("CONSENTRY_PUBLIC_URL");
    assert!(
        bank_source.contains(&format!("'{public_url}/auth/callback/local-bank'")),
        "the bank's default redirect URI is the Worker's callback for the local bank"
    );
}

#[test]
fn demo_providers_match_their_emulations() {
    let providers = ProviderConfig::parse_list(&wrangler_var("CONSENTRY_PROVIDERS"))
        .expect("CONSENTRY_PROVIDERS in wrangler.toml is a valid provider list");
    let public_url = wrangler_var("CONSENTRY_PUBLIC_URL");
    // id, profile, the emulation, its port default, and how it names its client.
    for (id, profile, source, port, client_default) in [
        (
            "truelayer",
            Profile::TrueLayer,
            "bank/truelayer.mjs",
            "TRUELAYER_PORT || 9002",
            "clientId = 'consentry-truelayer'",
        ),
        (
            "moneyhub",
            Profile::Moneyhub,
            "bank/moneyhub.mjs",
            "MONEYHUB_PORT || 9003",
            "clientId = 'consentry-moneyhub'",
        ),
        (
            "connect",
            Profile::Connect,
            "bank/connect.mjs",
            "CONNECT_PORT || 9004",
            "clientId = 'consentry-connect'",
        ),
    ] {
        let provider = providers
            .iter()
            .find(|provider| provider.id() == id)
            .unwrap_or_else(|| panic!("the demo has {id}"));
        assert_eq!(provider.profile(), profile, "{id}");
        let emulation = repo_file(source);
        assert!(
            emulation.contains(port),
            "{id}: {source} listens where the demo points"
        );
        assert!(
            emulation.contains(client_default),
            "{id}: {source}'s client"
        );
        let port_number = port.rsplit(' ').next().expect("a port");
        assert!(
            provider
                .issuer()
                .as_str()
                .starts_with(&format!("http://localhost:{port_number}")),
            "{id}"
        );
        assert!(
            emulation.contains(&format!("{public_url}/auth/callback/{id}")),
            "{id}: {source}'s default redirect URI is the Worker's callback for it"
        );
    }
    let demo = repo_file("scripts/demo");
    for source in [
        "bank/truelayer.mjs",
        "bank/moneyhub.mjs",
        "bank/connect.mjs",
    ] {
        assert!(
            demo.contains(&format!("node {source}")),
            "scripts/demo starts {source}"
        );
    }
}
