//! Rich authorization requests ([RFC 9396](https://www.rfc-editor.org/rfc/rfc9396)): the
//! `authorization_details` a provider's configuration asks for, with per-flow values filled
//! in, and what a token response grants back (a platform's consent id and expiry).
//!
//! In the configuration, a string value `"{provider_hint}"` anywhere in a detail stands for
//! the start form's `provider_hint` (e.g. an Open Finance Platform's `consent.dp_id`, the
//! bank to connect); without a hint the member is left out, and the platform shows its own
//! bank picker.

use serde_json::{Map, Value};

use crate::error::{Error, ErrorCode, Result};
use crate::outcome::parse_rfc3339;

/// The placeholder for the start form's `provider_hint`.
pub const PROVIDER_HINT: &str = "{provider_hint}";

/// Checks configured `authorization_details`: a non-empty array of objects, each with a
/// string `type` ([RFC 9396 §2](https://www.rfc-editor.org/rfc/rfc9396#section-2)).
pub fn check_configured(details: &Value) -> Result<()> {
    let valid = details.as_array().is_some_and(|details| {
        !details.is_empty()
            && details.iter().all(|detail| {
                detail
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|kind| !kind.is_empty())
            })
    });
    if valid {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::InvalidConfiguration,
            "authorization_details must be a non-empty array of objects, each with a string type",
        ))
    }
}

/// Whether the configured details use the `provider_hint` placeholder.
pub fn uses_provider_hint(details: &Value) -> bool {
    match details {
        Value::String(text) => text == PROVIDER_HINT,
        Value::Array(items) => items.iter().any(uses_provider_hint),
        Value::Object(members) => members.values().any(uses_provider_hint),
        _ => false,
    }
}

/// The details for one flow: each `"{provider_hint}"` replaced by `hint`, or its member left
/// out when there is none.
pub fn fill(details: &Value, hint: Option<&str>) -> Value {
    match details {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|item| hint.is_some() || item.as_str() != Some(PROVIDER_HINT))
                .map(|item| fill(item, hint))
                .collect(),
        ),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .filter(|(_, value)| hint.is_some() || value.as_str() != Some(PROVIDER_HINT))
                .map(|(name, value)| (name.clone(), fill(value, hint)))
                .collect::<Map<String, Value>>(),
        ),
        Value::String(text) if text == PROVIDER_HINT => {
            Value::String(hint.unwrap_or_default().to_owned())
        }
        other => other.clone(),
    }
}

/// What a token response's `authorization_details` grant back, as consentry keeps it on the
/// consent: the provider's consent id and when the consent lapses, where the details say
/// (an Open Finance Platform's `consent_id` and `expiration_datetime`, at the top of a detail
/// or in its `consent` member). The first detail that names them wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantedDetails {
    /// The provider's id of the consent it recorded.
    pub consent_id: Option<String>,
    /// When it lapses, Unix seconds.
    pub expires_at: Option<u64>,
}

/// Reads [`GrantedDetails`] from a token response's `authorization_details`, taking only
/// details of a `type` the flow asked for (`requested`, the configured details). A detail
/// that carries a `status` other than `Authorized` means the platform did not authorize the
/// consent: that is `invalid_token_response`, and nothing is kept. An expiry already past at
/// `now` is ignored.
pub fn granted(details: &Value, requested: &Value, now: u64) -> Result<GrantedDetails> {
    let types: Vec<&str> = requested
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|detail| detail.get("type").and_then(Value::as_str))
        .collect();
    let mut granted = GrantedDetails::default();
    for detail in details.as_array().into_iter().flatten() {
        let asked = detail
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|kind| types.contains(&kind));
        if !asked {
            continue;
        }
        if let Some(status) = detail.get("status") {
            if status.as_str() != Some("Authorized") {
                return Err(Error::new(
                    ErrorCode::InvalidTokenResponse,
                    "the platform's authorization_details say the consent is not Authorized",
                ));
            }
        }
        let places = [Some(detail), detail.get("consent")];
        for place in places.into_iter().flatten() {
            if granted.consent_id.is_none() {
                granted.consent_id = place
                    .get("consent_id")
                    .and_then(Value::as_str)
                    .filter(|id| (1..=255).contains(&id.len()))
                    .map(str::to_owned);
            }
            if granted.expires_at.is_none() {
                granted.expires_at = place
                    .get("expiration_datetime")
                    .and_then(Value::as_str)
                    .and_then(parse_rfc3339)
                    .filter(|expires_at| *expires_at > now);
            }
        }
    }
    Ok(granted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn configured() -> Value {
        json!([{
            "type": "urn:openfinance-ml:account-access-consent:v1.2",
            "consent": {
                "dp_id": "{provider_hint}",
                "permissions": ["read_accounts", "read_balances"],
            }
        }])
    }

    #[test]
    fn the_hint_fills_the_placeholder_or_its_member_goes() {
        assert!(check_configured(&configured()).is_ok());
        assert!(uses_provider_hint(&configured()));
        let filled = fill(&configured(), Some("bank-042"));
        assert_eq!(filled[0]["consent"]["dp_id"], "bank-042");
        assert_eq!(filled[0]["consent"]["permissions"][1], "read_balances");
        let picker = fill(&configured(), None);
        assert!(
            picker[0]["consent"].get("dp_id").is_none(),
            "no hint: the platform's picker"
        );
        assert_eq!(
            picker[0]["type"],
            "urn:openfinance-ml:account-access-consent:v1.2"
        );
    }

    #[test]
    fn configured_details_must_be_typed_objects() {
        for bad in [
            json!({}),
            json!([]),
            json!([{"consent": {}}]),
            json!([{"type": 1}]),
            json!(["x"]),
        ] {
            assert!(check_configured(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_granted_consent_id_and_expiry_are_read() {
        let answer = json!([{
            "type": "urn:openfinance-ml:account-access-consent:v1.2",
            "consent": {"dp_id": "bank-042", "expiration_datetime": "2027-03-01T00:00:00Z"},
            "consent_id": "ofp-consent-7",
            "status": "Authorized",
        }]);
        let now = 1_790_000_000;
        assert_eq!(
            granted(&answer, &configured(), now).expect("authorized"),
            GrantedDetails {
                consent_id: Some("ofp-consent-7".into()),
                expires_at: Some(1_803_859_200),
            }
        );
        assert_eq!(
            granted(&json!("nope"), &configured(), now).expect("nothing"),
            GrantedDetails::default()
        );
        // Only what was asked for; a past expiry is no expiry.
        let other = json!([{"type": "urn:other", "consent_id": "forged"}]);
        assert_eq!(
            granted(&other, &configured(), now).expect("ignored"),
            GrantedDetails::default()
        );
        let past = granted(&answer, &configured(), 1_900_000_000).expect("authorized");
        assert_eq!(past.expires_at, None);
        // A consent the platform did not authorize is no grant.
        let mut rejected = answer.clone();
        rejected[0]["status"] = json!("Rejected");
        let error = granted(&rejected, &configured(), now).expect_err("not authorized");
        assert_eq!(error.code(), &ErrorCode::InvalidTokenResponse);
    }
}
