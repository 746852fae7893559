//! A consent as `GET /auth/consents` lists it (DESIGN.md, wire contract): what the user
//! granted, to which provider, and whether it still holds. Never a token.

use serde::Serialize;

use crate::outcome::format_rfc3339;

/// Where a consent stands.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentStatus {
    /// Granted and not yet lapsed.
    Active,
    /// Withdrawn by the user.
    Revoked,
    /// Past the provider's limit (e.g. 90 days in open banking), or lapsed: the provider
    /// refused to refresh its tokens (`invalid_grant`). The user must connect again.
    Expired,
}

impl ConsentStatus {
    /// The status at `now`: a stored `revoked` stays revoked; anything else that lapsed or
    /// is past `expires_at` has expired.
    pub fn at(revoked: bool, lapsed: bool, expires_at: Option<u64>, now: u64) -> Self {
        match (revoked, lapsed, expires_at) {
            (true, _, _) => ConsentStatus::Revoked,
            (false, true, _) => ConsentStatus::Expired,
            (false, false, Some(expires_at)) if expires_at <= now => ConsentStatus::Expired,
            _ => ConsentStatus::Active,
        }
    }
}

/// A consent as the store keeps it (Unix seconds, scopes space-separated).
#[derive(Debug, Clone, Copy)]
pub struct StoredConsent<'a> {
    /// The consent's id.
    pub id: &'a str,
    /// The provider id.
    pub provider: &'a str,
    /// The app user.
    pub user: &'a str,
    /// The scopes granted, space-separated.
    pub scopes: &'a str,
    /// When it was granted.
    pub granted_at: u64,
    /// When it lapses by the provider's terms.
    pub expires_at: Option<u64>,
    /// When the user revoked it.
    pub revoked_at: Option<u64>,
    /// When the provider refused to refresh its tokens.
    pub lapsed_at: Option<u64>,
    /// The provider-side subject or connection it reaches (see [`ConsentRecord::account`]).
    pub account: Option<&'a str>,
}

impl StoredConsent<'_> {
    /// Where it stands at `now`.
    pub fn status(&self, now: u64) -> ConsentStatus {
        ConsentStatus::at(
            self.revoked_at.is_some(),
            self.lapsed_at.is_some(),
            self.expires_at,
            now,
        )
    }
}

/// One consent, as listed to its user. Times are RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentRecord {
    /// The consent's id (for `DELETE /auth/consents/{id}`).
    pub id: String,
    /// The provider id.
    pub provider: String,
    /// The provider's display name.
    pub provider_name: String,
    /// The app user it belongs to.
    pub user: String,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// Where it stands now.
    pub status: ConsentStatus,
    /// When it was granted.
    pub granted_at: String,
    /// When it lapses, if the provider limits it.
    pub expires_at: Option<String>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
    /// The provider-side subject or connection the consent reaches, when the provider tells
    /// it (the id_token's `sub`, TrueLayer's `credentials_id`, Moneyhub's `mh:con_id`, an
    /// OFP `consent_id`), so that a person can tell two consents apart.
    pub account: Option<String>,
}

impl ConsentRecord {
    /// The record of a stored consent, as of `now`. When it lapsed (the provider refused a
    /// refresh), that time is shown as its `expires_at`.
    pub fn new(stored: &StoredConsent<'_>, provider_name: &str, now: u64) -> Self {
        let expires_at = match (stored.lapsed_at, stored.expires_at) {
            (Some(lapsed), Some(expires)) => Some(lapsed.min(expires)),
            (lapsed, expires) => lapsed.or(expires),
        };
        ConsentRecord {
            id: stored.id.to_owned(),
            provider: stored.provider.to_owned(),
            provider_name: provider_name.to_owned(),
            user: stored.user.to_owned(),
            scopes: stored
                .scopes
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            status: stored.status(now),
            granted_at: format_rfc3339(stored.granted_at),
            expires_at: expires_at.map(format_rfc3339),
            revoked_at: stored.revoked_at.map(format_rfc3339),
            account: stored.account.map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRANTED: u64 = 1_790_000_000;

    #[test]
    fn status_follows_revocation_then_lapse_then_expiry() {
        let limit = Some(GRANTED + 90 * 86_400);
        assert_eq!(
            ConsentStatus::at(false, false, limit, GRANTED),
            ConsentStatus::Active
        );
        assert_eq!(
            ConsentStatus::at(false, false, None, u64::MAX),
            ConsentStatus::Active
        );
        assert_eq!(
            ConsentStatus::at(false, false, limit, GRANTED + 90 * 86_400),
            ConsentStatus::Expired
        );
        assert_eq!(
            ConsentStatus::at(false, true, limit, GRANTED),
            ConsentStatus::Expired,
            "a refused refresh lapses the consent"
        );
        assert_eq!(
            ConsentStatus::at(true, true, limit, GRANTED + 91 * 86_400),
            ConsentStatus::Revoked
        );
    }

    #[test]
    fn serializes_to_the_wire_shape() {
        let stored = StoredConsent {
            id: "cns_1",
            provider: "bank",
            user: "usr_alice",
            scopes: "openid  accounts",
            granted_at: GRANTED,
            expires_at: None,
            revoked_at: Some(GRANTED + 60),
            lapsed_at: None,
            account: Some("alice"),
        };
        let record = ConsentRecord::new(&stored, "Bank", GRANTED + 120);
        let json = serde_json::to_value(&record).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "id": "cns_1", "provider": "bank", "provider_name": "Bank", "user": "usr_alice",
                "scopes": ["openid", "accounts"], "status": "revoked",
                "granted_at": format_rfc3339(GRANTED), "expires_at": null,
                "revoked_at": format_rfc3339(GRANTED + 60), "account": "alice",
            })
        );
        let lapsed = StoredConsent {
            revoked_at: None,
            lapsed_at: Some(GRANTED + 30),
            expires_at: Some(GRANTED + 90 * 86_400),
            ..stored
        };
        let record = ConsentRecord::new(&lapsed, "Bank", GRANTED + 120);
        assert_eq!(record.status, ConsentStatus::Expired);
        assert_eq!(
            record.expires_at.as_deref(),
            Some(format_rfc3339(GRANTED + 30).as_str())
        );
    }
}
