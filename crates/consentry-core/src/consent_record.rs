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
    /// Past the provider's limit (e.g. 90 days in open banking).
    Expired,
}

impl ConsentStatus {
    /// The status at `now`: a stored `revoked` stays revoked; anything else past
    /// `expires_at` has expired.
    pub fn at(revoked: bool, expires_at: Option<u64>, now: u64) -> Self {
        match (revoked, expires_at) {
            (true, _) => ConsentStatus::Revoked,
            (false, Some(expires_at)) if expires_at <= now => ConsentStatus::Expired,
            _ => ConsentStatus::Active,
        }
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
}

impl ConsentRecord {
    /// A record from stored values (Unix seconds, scopes space-separated), as of `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: &str,
        provider: &str,
        provider_name: &str,
        user: &str,
        scopes: &str,
        granted_at: u64,
        expires_at: Option<u64>,
        revoked_at: Option<u64>,
        now: u64,
    ) -> Self {
        ConsentRecord {
            id: id.to_owned(),
            provider: provider.to_owned(),
            provider_name: provider_name.to_owned(),
            user: user.to_owned(),
            scopes: scopes.split_whitespace().map(str::to_owned).collect(),
            status: ConsentStatus::at(revoked_at.is_some(), expires_at, now),
            granted_at: format_rfc3339(granted_at),
            expires_at: expires_at.map(format_rfc3339),
            revoked_at: revoked_at.map(format_rfc3339),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRANTED: u64 = 1_790_000_000;

    #[test]
    fn status_follows_revocation_then_expiry() {
        let limit = Some(GRANTED + 90 * 86_400);
        assert_eq!(
            ConsentStatus::at(false, limit, GRANTED),
            ConsentStatus::Active
        );
        assert_eq!(
            ConsentStatus::at(false, None, u64::MAX),
            ConsentStatus::Active
        );
        assert_eq!(
            ConsentStatus::at(false, limit, GRANTED + 90 * 86_400),
            ConsentStatus::Expired
        );
        assert_eq!(
            ConsentStatus::at(true, limit, GRANTED + 91 * 86_400),
            ConsentStatus::Revoked
        );
    }

    #[test]
    fn serializes_to_the_wire_shape() {
        let record = ConsentRecord::new(
            "cns_1",
            "bank",
            "Bank",
            "usr_alice",
            "openid  accounts",
            GRANTED,
            None,
            Some(GRANTED + 60),
            GRANTED + 120,
        );
        let json = serde_json::to_value(&record).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "id": "cns_1", "provider": "bank", "provider_name": "Bank", "user": "usr_alice",
                "scopes": ["openid", "accounts"], "status": "revoked",
                "granted_at": format_rfc3339(GRANTED), "expires_at": null,
                "revoked_at": format_rfc3339(GRANTED + 60),
            })
        );
    }
}
