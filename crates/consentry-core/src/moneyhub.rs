//! Moneyhub's own calls (PROVIDERS.md, "Moneyhub"): the user profile a person's connections
//! live under, made once per app user; the bank a flow connects, as an `id:<bankId>` scope;
//! and the end of one connection. The tokens these calls carry are `client_credentials`
//! tokens ([`build_client_credentials_request`](crate::build_client_credentials_request))
//! with the scopes named here.

use serde_json::{json, Value};

use crate::api::encode_segment;
use crate::error::{Error, ErrorCode, Result};
use crate::http::HttpRequest;
use crate::secret::AccessToken;
use crate::url::EndpointUrl;

/// The scope of the token that makes a user profile.
pub const USER_CREATE_SCOPE: &str = "user:create";

/// The scope of the token that deletes a connection.
pub const CONNECTION_DELETE_SCOPE: &str = "connection:delete";

/// The longest bank id or profile id accepted.
const MAX_ID_LEN: usize = 128;

/// The scope that names the bank a flow connects, from the start form's `provider_hint`:
/// `id:<bankId>`, the id being 1-64 characters of `A-Z a-z 0-9 - _`.
pub fn bank_scope(bank_id: &str) -> Result<String> {
    let valid = (1..=64).contains(&bank_id.len())
        && bank_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match valid {
        true => Ok(format!("id:{bank_id}")),
        false => Err(Error::new(
            ErrorCode::InvalidParameter,
            "a Moneyhub bank id (provider_hint) is 1-64 characters of A-Z a-z 0-9 - _",
        )),
    }
}

/// `POST {users_endpoint}` with `{"clientUserId": <app user id>}` and a `user:create` token:
/// the app user's profile at Moneyhub.
pub fn build_create_user_request(
    users_endpoint: &EndpointUrl,
    token: &AccessToken,
    app_user_id: &str,
) -> HttpRequest {
    HttpRequest::new("POST", users_endpoint.as_str())
        .with_header("Authorization", format!("Bearer {}", token.secret()))
        .with_header("Content-Type", "application/json")
        .with_header("Accept", "application/json")
        .with_body(json!({ "clientUserId": app_user_id }).to_string())
}

/// The new profile's `userId` from the users API's answer (a 2xx JSON object).
pub fn process_create_user_response(status: u16, body: &[u8]) -> Result<String> {
    if !(200..300).contains(&status) {
        return Err(Error::new(
            ErrorCode::ProviderUserMissing,
            format!("Moneyhub's users API answered HTTP {status}: no profile was made"),
        ));
    }
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    answer
        .get("userId")
        .and_then(Value::as_str)
        .filter(|id| is_id(id))
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidProviderResponse,
                "Moneyhub's users API answered without a usable userId",
            )
        })
}

/// `DELETE {users_endpoint}/{userId}/connections/{connectionId}` with a `connection:delete`
/// token: ends one bank connection and leaves the profile's others.
pub fn build_delete_connection_request(
    users_endpoint: &EndpointUrl,
    token: &AccessToken,
    user_id: &str,
    connection_id: &str,
) -> HttpRequest {
    let mut url = users_endpoint.as_str().trim_end_matches('/').to_owned();
    for segment in [user_id, "connections", connection_id] {
        url.push('/');
        encode_segment(segment, &mut url);
    }
    HttpRequest::new("DELETE", url)
        .with_header("Authorization", format!("Bearer {}", token.secret()))
        .with_header("Accept", "application/json")
}

/// Whether the connection is gone: a 2xx, or a 404 (it was gone already).
pub fn process_delete_connection_response(status: u16) -> Result<()> {
    match status {
        200..=299 | 404 => Ok(()),
        _ => Err(Error::new(
            ErrorCode::RevocationFailed,
            format!("Moneyhub answered HTTP {status} to deleting the connection"),
        )),
    }
}

fn is_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> EndpointUrl {
        EndpointUrl::parse("https://identity.moneyhub.co.uk/users").expect("valid")
    }

    #[test]
    fn a_bank_scope_names_one_plain_bank_id() {
        assert_eq!(
            bank_scope("1ffe704d39629a929c8e293880fb449a").expect("valid"),
            "id:1ffe704d39629a929c8e293880fb449a"
        );
        for bad in ["", "a b", "id:x", "x/y", "é", &"a".repeat(65)] {
            assert!(bank_scope(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_profile_is_made_with_the_app_users_id_and_read_back() {
        let request = build_create_user_request(&endpoint(), &AccessToken::new("tok"), "usr_alice");
        assert_eq!(request.method(), "POST");
        assert_eq!(request.url(), "https://identity.moneyhub.co.uk/users");
        assert_eq!(request.header("Authorization"), Some("Bearer tok"));
        let body: Value = serde_json::from_str(request.body()).expect("json");
        assert_eq!(body, json!({"clientUserId": "usr_alice"}));
        assert!(
            !format!("{request:?}").contains("tok"),
            "Debug hides the token"
        );

        let made = process_create_user_response(
            201,
            br#"{"userId":"5c82a4f1","clientUserId":"usr_alice"}"#,
        );
        assert_eq!(made.expect("made"), "5c82a4f1");
        let codes = |status, body: &[u8]| {
            process_create_user_response(status, body).map_err(|error| error.code().clone())
        };
        assert_eq!(codes(403, b"{}"), Err(ErrorCode::ProviderUserMissing));
        for body in [
            &b"{}"[..],
            br#"{"userId":""}"#,
            br#"{"userId":7}"#,
            b"not json",
            br#"{"userId":"a b"}"#,
        ] {
            assert_eq!(codes(201, body), Err(ErrorCode::InvalidProviderResponse));
        }
    }

    #[test]
    fn a_connection_is_deleted_under_its_profile_with_encoded_segments() {
        let request = build_delete_connection_request(
            &endpoint(),
            &AccessToken::new("tok"),
            "5c82a4f1",
            "1ffe:b5/d9",
        );
        assert_eq!(request.method(), "DELETE");
        assert_eq!(
            request.url(),
            "https://identity.moneyhub.co.uk/users/5c82a4f1/connections/1ffe%3Ab5%2Fd9"
        );
        assert!(process_delete_connection_response(204).is_ok());
        assert!(
            process_delete_connection_response(404).is_ok(),
            "already gone"
        );
        assert_eq!(
            process_delete_connection_response(500).map_err(|e| e.code().clone()),
            Err(ErrorCode::RevocationFailed)
        );
    }
}
