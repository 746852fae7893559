//! TrueLayer's own reads (PROVIDERS.md, "TrueLayer"): the connection a grant reaches, from
//! `GET /data/v1/me` after the exchange, whose `credentials_id` tells a person's consents
//! apart. Answers come in TrueLayer's envelope, `{"results": [...], "status": "Succeeded"}`.

use serde_json::Value;

use crate::error::{Error, ErrorCode, Result};
use crate::http::HttpRequest;
use crate::secret::AccessToken;

/// The longest `credentials_id` kept.
const MAX_CREDENTIALS_ID_LEN: usize = 255;

/// `GET {url}` with the grant's access token.
pub fn build_me_request(url: &str, token: &AccessToken) -> HttpRequest {
    HttpRequest::get_json(url).with_header("Authorization", format!("Bearer {}", token.secret()))
}

/// The connection's `credentials_id` from `/data/v1/me`'s answer.
pub fn process_me_response(status: u16, body: &[u8]) -> Result<String> {
    if status != 200 {
        return Err(Error::new(
            ErrorCode::UpstreamError,
            format!("TrueLayer's /me answered HTTP {status}"),
        ));
    }
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    answer["results"]
        .as_array()
        .and_then(|results| results.first())
        .and_then(|connection| connection["credentials_id"].as_str())
        .filter(|id| {
            (1..=MAX_CREDENTIALS_ID_LEN).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidProviderResponse,
                "TrueLayer's /me answered without a credentials_id",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_is_read_from_the_results_envelope() {
        let request = build_me_request(
            "https://api.truelayer-sandbox.com/data/v1/me",
            &AccessToken::new("at"),
        );
        assert_eq!(request.header("Authorization"), Some("Bearer at"));
        let body = br#"{"results":[{"client_id":"c","credentials_id":"6L/W6LEjGrh2hg","provider":{"provider_id":"mock"}}],"status":"Succeeded"}"#;
        assert_eq!(
            process_me_response(200, body).expect("read"),
            "6L/W6LEjGrh2hg"
        );
        let code =
            |status, body: &[u8]| process_me_response(status, body).map_err(|e| e.code().clone());
        assert_eq!(code(401, body), Err(ErrorCode::UpstreamError));
        for bad in [
            &br#"{"results":[]}"#[..],
            br#"{"results":[{"credentials_id":""}]}"#,
            br#"{"credentials_id":"x"}"#,
            b"<html>",
        ] {
            assert_eq!(code(200, bad), Err(ErrorCode::InvalidProviderResponse));
        }
    }
}
