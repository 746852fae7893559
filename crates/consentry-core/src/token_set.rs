//! The token set the Worker keeps for a consent: what it seals at rest (AES-GCM under
//! `CONSENTRY_KEY`) and reads back to call the provider's API, refresh or revoke. One
//! format, written and read here.

use serde_json::{json, Value};

use crate::error::{Error, ErrorCode, Result};
use crate::revocation::RevocableToken;
use crate::scope::Scopes;
use crate::secret::{AccessToken, PrivateKeyJwk, RefreshToken};
use crate::token_response::TokenResponse;

/// The tokens of one grant. Debug shows no token.
#[derive(Debug)]
pub struct TokenSet {
    access_token: AccessToken,
    token_type: String,
    refresh_token: Option<RefreshToken>,
    scopes: Scopes,
    dpop_key: Option<PrivateKeyJwk>,
    auth_time: Option<u64>,
}

impl TokenSet {
    /// A token set from its parts (`token_type` as the `Authorization` scheme, e.g. `Bearer`).
    pub fn new(
        access_token: AccessToken,
        token_type: &str,
        refresh_token: Option<RefreshToken>,
        scopes: Scopes,
    ) -> Self {
        TokenSet {
            access_token,
            token_type: token_type.to_owned(),
            refresh_token,
            scopes,
            dpop_key: None,
            auth_time: None,
        }
    }

    /// This set with the private DPoP key its tokens are bound to
    /// ([RFC 9449](https://www.rfc-editor.org/rfc/rfc9449)): sealed with them, used for every
    /// proof of the grant (refreshes, data API calls).
    pub fn with_dpop_key(mut self, key: PrivateKeyJwk) -> Result<Self> {
        // Checked here, so that a set is never sealed that could not be read back.
        if !serde_json::from_slice::<Value>(key.secret().as_bytes()).is_ok_and(|key| key.is_object()) {
            return Err(Error::new(
                ErrorCode::JwkInvalid,
                "a DPoP key must be a JSON JWK",
            ));
        }
        self.dpop_key = Some(key);
        Ok(self)
    }

    /// Keeps the first id_token's `auth_time` with the tokens: every refreshed id_token that
    /// names one must name the same ([OpenID Connect Core §12.2](https://openid.net/specs/openid-connect-core-1_0.html#RefreshTokenResponse)).
    pub fn set_auth_time(&mut self, auth_time: Option<u64>) {
        self.auth_time = auth_time;
    }

    /// The grant's first id_token's `auth_time`, when it had one.
    pub fn auth_time(&self) -> Option<u64> {
        self.auth_time
    }

    /// The private DPoP key (a JWK), when the grant is DPoP-bound.
    pub fn dpop_key(&self) -> Option<&PrivateKeyJwk> {
        self.dpop_key.as_ref()
    }

    /// The tokens after a refresh answered with `response`
    /// ([RFC 6749 §6](https://www.rfc-editor.org/rfc/rfc6749#section-6)): the new access
    /// token, the new refresh token when the provider rotated it, else this one's, and the
    /// scopes the response names (or these, when it names none).
    pub fn refreshed(&self, response: &TokenResponse) -> Self {
        TokenSet {
            access_token: response.access_token().clone(),
            token_type: response.token_type().scheme().to_owned(),
            refresh_token: response
                .refresh_token()
                .or(self.refresh_token.as_ref())
                .cloned(),
            scopes: response.scopes().clone(),
            dpop_key: self.dpop_key.clone(),
            auth_time: self.auth_time,
        }
    }

    /// The tokens a token response granted.
    pub fn from_response(response: &TokenResponse) -> Self {
        TokenSet {
            access_token: response.access_token().clone(),
            token_type: response.token_type().scheme().to_owned(),
            refresh_token: response.refresh_token().cloned(),
            scopes: response.scopes().clone(),
            dpop_key: None,
            auth_time: None,
        }
    }

    /// The tokens a token endpoint's answer holds even though the answer was refused (a 200
    /// whose `expires_in` or `id_token` does not hold up): the provider issued them all the
    /// same, so they are to be revoked. `None` when the body names no access token.
    pub fn issued_in(body: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(body).ok()?;
        let text = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
        };
        Some(TokenSet {
            access_token: AccessToken::new(text("access_token")?),
            token_type: text("token_type").unwrap_or("Bearer").to_owned(),
            refresh_token: text("refresh_token").map(RefreshToken::new),
            scopes: Scopes::default(),
            dpop_key: None,
            auth_time: None,
        })
    }

    /// The plaintext to seal: JSON holding the tokens. Seal it at once; never log it.
    pub fn to_plaintext(&self) -> String {
        let mut plaintext = json!({
            "access_token": self.access_token.secret(),
            "token_type": self.token_type,
            "scope": self.scopes.to_wire(),
        });
        if let Some(refresh_token) = &self.refresh_token {
            plaintext["refresh_token"] = refresh_token.secret().into();
        }
        if let Some(auth_time) = self.auth_time {
            plaintext["auth_time"] = auth_time.into();
        }
        if let Some(key) = &self.dpop_key {
            // A JSON object: checked by with_dpop_key.
            plaintext["dpop_key"] = serde_json::from_slice(key.secret().as_bytes()).unwrap_or(Value::Null);
        }
        plaintext.to_string()
    }

    /// Reads back what [`to_plaintext`](Self::to_plaintext) wrote, once unsealed.
    pub fn parse(plaintext: &[u8]) -> Result<Self> {
        let unreadable =
            || Error::new(ErrorCode::RecordUnreadable, "a stored token set is unreadable");
        let value: Value = serde_json::from_slice(plaintext).map_err(|_| unreadable())?;
        let text = |name: &str| value.get(name).and_then(Value::as_str);
        Ok(TokenSet {
            access_token: AccessToken::new(text("access_token").ok_or_else(unreadable)?),
            token_type: text("token_type").ok_or_else(unreadable)?.to_owned(),
            refresh_token: text("refresh_token").map(RefreshToken::new),
            scopes: Scopes::parse(text("scope").unwrap_or_default())?,
            dpop_key: match value.get("dpop_key") {
                None => None,
                Some(key @ Value::Object(_)) => Some(PrivateKeyJwk::new(key.to_string())),
                Some(_) => return Err(unreadable()),
            },
            auth_time: match value.get("auth_time") {
                None => None,
                Some(auth_time) => Some(auth_time.as_u64().ok_or_else(unreadable)?),
            },
        })
    }

    /// The `Authorization` scheme the access token is sent with (`Bearer`).
    pub fn token_type(&self) -> &str {
        &self.token_type
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The refresh token, if the grant has one.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// The scopes granted.
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    /// The token whose revocation ends the grant: the refresh token when there is one
    /// ([RFC 7009 §2.1](https://www.rfc-editor.org/rfc/rfc7009#section-2.1)).
    pub fn revocable(&self) -> RevocableToken<'_> {
        match &self.refresh_token {
            Some(refresh_token) => RevocableToken::Refresh(refresh_token),
            None => RevocableToken::Access(&self.access_token),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token_response::process_token_response;

    #[test]
    fn tokens_in_a_refused_answer_are_found_to_revoke() {
        let found = TokenSet::issued_in(
            br#"{"access_token":"at","refresh_token":"rt","expires_in":"soon"}"#,
        )
        .expect("tokens");
        assert_eq!(found.access_token().secret(), "at");
        assert!(
            matches!(found.revocable(), RevocableToken::Refresh(token) if token.secret() == "rt")
        );
        assert!(TokenSet::issued_in(br#"{"error":"invalid_grant"}"#).is_none());
        assert!(TokenSet::issued_in(b"<html>").is_none());
        assert!(TokenSet::issued_in(br#"{"access_token":""}"#).is_none());
    }

    fn response(body: &str) -> TokenResponse {
        let requested = Scopes::parse("accounts offline_access").expect("scopes");
        process_token_response(200, Some("application/json"), body.as_bytes(), &requested)
            .expect("valid")
    }

    #[test]
    fn round_trips_and_prefers_the_refresh_token_for_revocation() {
        let set = TokenSet::from_response(&response(
            r#"{"access_token":"at-1","token_type":"Bearer","refresh_token":"rt-1","scope":"accounts offline_access"}"#,
        ));
        let read = TokenSet::parse(set.to_plaintext().as_bytes()).expect("readable");
        assert_eq!(read.access_token().secret(), "at-1");
        assert_eq!(read.refresh_token().map(RefreshToken::secret), Some("rt-1"));
        assert_eq!(read.scopes().to_wire(), "accounts offline_access");
        assert!(
            matches!(read.revocable(), RevocableToken::Refresh(token) if token.secret() == "rt-1")
        );
        assert!(!format!("{read:?}").contains("at-1"));
    }

    #[test]
    fn a_refresh_keeps_the_old_refresh_token_unless_it_was_rotated() {
        let set = TokenSet::from_response(&response(
            r#"{"access_token":"at-1","token_type":"Bearer","refresh_token":"rt-1"}"#,
        ));
        let kept = set.refreshed(&response(
            r#"{"access_token":"at-2","token_type":"bearer"}"#,
        ));
        assert_eq!(kept.access_token().secret(), "at-2");
        assert_eq!(kept.refresh_token().map(RefreshToken::secret), Some("rt-1"));
        assert_eq!(kept.token_type(), "Bearer");
        let rotated = kept.refreshed(&response(
            r#"{"access_token":"at-3","token_type":"Bearer","refresh_token":"rt-2","scope":"accounts"}"#,
        ));
        assert_eq!(
            rotated.refresh_token().map(RefreshToken::secret),
            Some("rt-2")
        );
        assert_eq!(rotated.scopes().to_wire(), "accounts");
    }

    #[test]
    fn a_dpop_key_is_sealed_with_the_tokens_and_kept_by_refreshes() {
        let key =
            PrivateKeyJwk::new(r#"{"kty":"EC","crv":"P-256","x":"x","y":"y","d":"secret-d"}"#);
        let set = TokenSet::from_response(&response(
            r#"{"access_token":"at-1","token_type":"DPoP","refresh_token":"rt-1"}"#,
        ))
        .with_dpop_key(key)
        .expect("a JWK");
        let read = TokenSet::parse(set.to_plaintext().as_bytes()).expect("readable");
        let kept = read.dpop_key().expect("kept").secret();
        assert!(kept.contains("secret-d"));
        assert_eq!(read.token_type(), "DPoP");
        let refreshed = read.refreshed(&response(r#"{"access_token":"at-2","token_type":"DPoP"}"#));
        assert!(refreshed.dpop_key().is_some(), "the key outlives a refresh");
        assert!(
            !format!("{refreshed:?}").contains("secret-d"),
            "Debug shows no key"
        );
    }

    #[test]
    fn the_first_auth_time_is_sealed_with_the_tokens_and_kept_by_refreshes() {
        let mut set = TokenSet::from_response(&response(
            r#"{"access_token":"at-1","token_type":"Bearer","refresh_token":"rt-1"}"#,
        ));
        assert_eq!(set.auth_time(), None);
        set.set_auth_time(Some(1_700_000_000));
        let read = TokenSet::parse(set.to_plaintext().as_bytes()).expect("readable");
        assert_eq!(read.auth_time(), Some(1_700_000_000));
        let refreshed = read.refreshed(&response(r#"{"access_token":"at-2","token_type":"Bearer"}"#));
        assert_eq!(refreshed.auth_time(), Some(1_700_000_000));
        // A set written before auth_time was kept reads as having none; a damaged one fails.
        let old = br#"{"access_token":"at","token_type":"Bearer","scope":""}"#;
        assert_eq!(TokenSet::parse(old).expect("readable").auth_time(), None);
        let bad = br#"{"access_token":"at","token_type":"Bearer","auth_time":"soon"}"#;
        let error = TokenSet::parse(bad).expect_err("not a number");
        assert_eq!(error.code(), &ErrorCode::RecordUnreadable);
    }

    #[test]
    fn without_a_refresh_token_the_access_token_is_revoked() {
        let set = TokenSet::from_response(&response(
            r#"{"access_token":"at-2","token_type":"Bearer"}"#,
        ));
        let read = TokenSet::parse(set.to_plaintext().as_bytes()).expect("readable");
        assert!(read.refresh_token().is_none());
        assert!(
            matches!(read.revocable(), RevocableToken::Access(token) if token.secret() == "at-2")
        );
        let error = TokenSet::parse(b"{\"token_type\":\"Bearer\"}").expect_err("no access token");
        assert_eq!(error.code(), &ErrorCode::RecordUnreadable);
    }
}
