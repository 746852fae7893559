//! id_token validation ([OpenID Connect Core §3.1.3.7](https://openid.net/specs/openid-connect-core-1_0.html#IDTokenValidation))
//! and the claims checks of JWT access tokens.
//!
//! Both take a [`VerifiedJwt`], so claims are read only after the signature verified.
//! `now` is unix seconds from the caller; the core never reads a clock. Times are compared
//! with a clock tolerance (60 seconds unless changed) for skew between client and server.

use std::fmt;

use serde_json::{Map, Value};

use crate::client_auth::ClientId;
use crate::encoding::constant_time_eq;
use crate::error::{Error, ErrorCode, Result};
use crate::jwt::VerifiedJwt;
use crate::state::Nonce;
use crate::url::IssuerUrl;

/// Clock skew tolerated between client and authorization server, in seconds.
pub const DEFAULT_CLOCK_TOLERANCE: u64 = 60;

/// Longest `sub` accepted ([OpenID Connect Core §2](https://openid.net/specs/openid-connect-core-1_0.html#IDToken)).
pub const MAX_SUB_LEN: usize = 255;

/// What an id_token must match
/// ([OpenID Connect Core §3.1.3.7](https://openid.net/specs/openid-connect-core-1_0.html#IDTokenValidation)).
#[derive(Debug, Clone)]
pub struct IdTokenValidation<'a> {
    issuer: &'a IssuerUrl,
    client_id: &'a ClientId,
    nonce: Option<&'a Nonce>,
    no_nonce_sent: bool,
    subject: Option<&'a str>,
    first_auth_time: Option<u64>,
    max_age: Option<u64>,
    now: u64,
    clock_tolerance: u64,
}

impl<'a> IdTokenValidation<'a> {
    /// Expect this issuer and client at `now` (unix seconds), with no nonce, no `max_age`
    /// and [`DEFAULT_CLOCK_TOLERANCE`].
    pub fn new(issuer: &'a IssuerUrl, client_id: &'a ClientId, now: u64) -> Self {
        IdTokenValidation {
            issuer,
            client_id,
            nonce: None,
            no_nonce_sent: false,
            subject: None,
            first_auth_time: None,
            max_age: None,
            now,
            clock_tolerance: DEFAULT_CLOCK_TOLERANCE,
        }
    }

    /// Expect the `nonce` sent in the authentication request
    /// ([Core §3.1.2.1](https://openid.net/specs/openid-connect-core-1_0.html#AuthRequest)):
    /// the id_token must then carry it.
    pub fn with_nonce(mut self, nonce: &'a Nonce) -> Self {
        self.nonce = Some(nonce);
        self
    }

    /// The authentication request this id_token answers sent no `nonce`: one that carries a
    /// nonce answers some other request and is refused (Core §3.1.3.7 step 11). Not for a
    /// refresh, whose id_token may repeat the first one's nonce.
    pub fn with_no_nonce_sent(mut self) -> Self {
        self.no_nonce_sent = true;
        self
    }

    /// Expect this `sub`: the one the authentication request asked for (a `claims` request
    /// with a `sub` value, as Moneyhub's are), or the one an earlier id_token of the same
    /// grant carried ([Core §12.2](https://openid.net/specs/openid-connect-core-1_0.html#RefreshTokenResponse)).
    pub fn with_subject(mut self, subject: &'a str) -> Self {
        self.subject = Some(subject);
        self
    }

    /// A refresh of a grant whose first id_token said the end-user authenticated at
    /// `auth_time`: an id_token that names an `auth_time` must name that one (Core §12.2: it
    /// represents the original authentication, not the refresh).
    pub fn with_first_auth_time(mut self, auth_time: u64) -> Self {
        self.first_auth_time = Some(auth_time);
        self
    }

    /// Expect an authentication no older than the `max_age` (seconds) sent in the
    /// authentication request: the id_token must then carry `auth_time`.
    pub fn with_max_age(mut self, max_age: u64) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Tolerate this much clock skew, in seconds. Every second added also accepts an
    /// expired token for one more second: keep it small.
    pub fn with_clock_tolerance(mut self, clock_tolerance: u64) -> Self {
        self.clock_tolerance = clock_tolerance;
        self
    }

    fn window(&self) -> TimeWindow {
        TimeWindow {
            now: self.now,
            tolerance: self.clock_tolerance,
        }
    }
}

/// The claims of a validated id_token
/// ([OpenID Connect Core §2](https://openid.net/specs/openid-connect-core-1_0.html#IDToken));
/// only [`validate_id_token_claims`] makes one.
#[derive(Debug, Clone)]
pub struct IdTokenClaims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: u64,
    iat: u64,
    nonce: Option<String>,
    auth_time: Option<u64>,
    azp: Option<String>,
    claims: Map<String, Value>,
}

impl IdTokenClaims {
    /// `iss`: the issuer, equal to the configured one.
    pub fn iss(&self) -> &str {
        &self.iss
    }

    /// `sub`: the end-user's identifier at the issuer, 1 to 255 characters.
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// `aud`: the audiences, this client among them.
    pub fn aud(&self) -> &[String] {
        &self.aud
    }

    /// `exp`: expiry, unix seconds.
    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// `iat`: issue time, unix seconds.
    pub fn iat(&self) -> u64 {
        self.iat
    }

    /// `nonce`, equal to the expected one when one was expected.
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// `auth_time`: when the end-user authenticated, unix seconds.
    pub fn auth_time(&self) -> Option<u64> {
        self.auth_time
    }

    /// `azp`: the authorized party, this client when present.
    pub fn azp(&self) -> Option<&str> {
        self.azp.as_deref()
    }

    /// Every claim as received, including provider-specific ones.
    pub fn extra(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// One claim by name, e.g. Moneyhub's `mh:con_id`.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }
}

/// The oldest an id_token's `iat` may be when it is validated: an hour, as oauth4webapi
/// allows front-channel id_tokens; consentry reads each right after the token endpoint
/// issues it.
pub const MAX_ID_TOKEN_AGE_SECS: u64 = 3600;

/// Validates the claims of a verified id_token
/// ([OpenID Connect Core §3.1.3.7](https://openid.net/specs/openid-connect-core-1_0.html#IDTokenValidation),
/// steps 2-5 and 9-13).
///
/// `iss` equals the issuer exactly; `aud` (a string or an array of strings) contains the
/// client id; `azp` is required when `aud` has several entries and must be the client id when
/// present; `exp`, `iat` and `sub` are required; `nonce` must equal the expected one;
/// with `max_age`, `auth_time` is required and recent enough; `nbf`, if present, has passed;
/// `iat` is at most [`MAX_ID_TOKEN_AGE_SECS`] old.
/// Every failure is [`ErrorCode::IdTokenInvalid`], its description naming the claim.
pub fn validate_id_token_claims(
    jwt: &VerifiedJwt,
    expected: &IdTokenValidation<'_>,
) -> Result<IdTokenClaims> {
    let claims = ClaimsSet::id_token(jwt.claims());
    let window = expected.window();
    let client_id = expected.client_id.as_str();
    let iss = check_issuer(&claims, expected.issuer)?;
    let aud = check_audience(&claims, client_id, "this client")?;
    let azp = check_authorized_party(&claims, &aud, client_id)?;
    let exp = check_expiry(&claims, window)?;
    let iat = claims.required_numeric_date("iat")?;
    window.check_not_in_future(&claims, "iat", iat)?;
    // An id_token is read as soon as it is issued: one an hour old is a replay.
    if iat.saturating_add(MAX_ID_TOKEN_AGE_SECS) < window.now.saturating_sub(window.tolerance) {
        return Err(claims.invalid(format_args!(
            "iat is more than {MAX_ID_TOKEN_AGE_SECS} s in the past"
        )));
    }
    check_not_before(&claims, window)?;
    let sub = check_subject(&claims, expected.subject)?;
    let nonce = check_nonce(&claims, expected.nonce, expected.no_nonce_sent)?;
    let auth_time = check_auth_time(&claims, expected.max_age, window)?;
    if let (Some(auth_time), Some(first)) = (auth_time, expected.first_auth_time) {
        if auth_time != first {
            return Err(claims.invalid("auth_time is not the first authentication's"));
        }
    }
    Ok(IdTokenClaims {
        iss: iss.to_owned(),
        sub: sub.to_owned(),
        aud,
        exp,
        iat,
        nonce: nonce.map(str::to_owned),
        auth_time,
        azp: azp.map(str::to_owned),
        claims: jwt.claims().clone(),
    })
}

/// What a verified JWT access token says that the Worker keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenClaims {
    /// The end-user the token acts for.
    pub sub: String,
    /// When it expires (Unix seconds).
    pub exp: u64,
}

/// Validates the claims of a verified JWT access token that the client must check before it
/// trusts the grant (a Connect provider's; [RFC 7519 §4.1](https://www.rfc-editor.org/rfc/rfc7519#section-4.1),
/// [RFC 9068 §4](https://www.rfc-editor.org/rfc/rfc9068#section-4)): `iss` is the issuer
/// exactly, `aud` (a string or an array) contains this client, `exp` has not passed, `iat` is
/// present and not in the future, `nbf` (if present) has passed, `sub` is 1-255 characters
/// and, when `subject` is given, exactly it (the id_token's, or the grant's), each within
/// `clock_tolerance` seconds. Every failure is [`ErrorCode::TokenExchangeFailed`], its
/// description naming the claim.
pub fn validate_jwt_access_token_claims(
    jwt: &VerifiedJwt,
    issuer: &IssuerUrl,
    client_id: &ClientId,
    subject: Option<&str>,
    now: u64,
    clock_tolerance: u64,
) -> Result<AccessTokenClaims> {
    let claims = ClaimsSet::access_token(jwt.claims());
    let window = TimeWindow {
        now,
        tolerance: clock_tolerance,
    };
    check_issuer(&claims, issuer)?;
    check_audience(&claims, client_id.as_str(), "this client")?;
    let exp = check_expiry(&claims, window)?;
    let iat = claims.required_numeric_date("iat")?;
    window.check_not_in_future(&claims, "iat", iat)?;
    check_not_before(&claims, window)?;
    let sub = check_subject(&claims, subject)?;
    Ok(AccessTokenClaims {
        sub: sub.to_owned(),
        exp,
    })
}

/// A JWT Claims Set ([RFC 7519 §4](https://www.rfc-editor.org/rfc/rfc7519#section-4)) read
/// for one kind of token, so that every failure carries that token's name and error code.
struct ClaimsSet<'a> {
    claims: &'a Map<String, Value>,
    token: &'static str,
    code: ErrorCode,
}

impl<'a> ClaimsSet<'a> {
    fn id_token(claims: &'a Map<String, Value>) -> Self {
        ClaimsSet {
            claims,
            token: "id_token",
            code: ErrorCode::IdTokenInvalid,
        }
    }

    fn access_token(claims: &'a Map<String, Value>) -> Self {
        ClaimsSet {
            claims,
            token: "access token",
            code: ErrorCode::TokenExchangeFailed,
        }
    }

    fn invalid(&self, why: impl fmt::Display) -> Error {
        Error::new(self.code.clone(), format!("{} {why}", self.token))
    }

    fn string(&self, name: &str) -> Result<Option<&'a str>> {
        match self.claims.get(name) {
            None => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(_) => Err(self.invalid(format_args!("{name} is not a string"))),
        }
    }

    fn required_string(&self, name: &str) -> Result<&'a str> {
        self.string(name)?
            .ok_or_else(|| self.invalid(format_args!("{name} is missing")))
    }

    /// A NumericDate ([RFC 7519 §2](https://www.rfc-editor.org/rfc/rfc7519#section-2)),
    /// fractions dropped.
    fn numeric_date(&self, name: &str) -> Result<Option<u64>> {
        let Some(value) = self.claims.get(name) else {
            return Ok(None);
        };
        let seconds = value.as_u64().or_else(|| {
            value
                .as_f64()
                .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
                .map(|seconds| seconds as u64)
        });
        match seconds {
            Some(seconds) => Ok(Some(seconds)),
            None => Err(self.invalid(format_args!("{name} is not a non-negative number"))),
        }
    }

    fn required_numeric_date(&self, name: &str) -> Result<u64> {
        self.numeric_date(name)?
            .ok_or_else(|| self.invalid(format_args!("{name} is missing")))
    }

    /// `aud` ([RFC 7519 §4.1.3](https://www.rfc-editor.org/rfc/rfc7519#section-4.1.3)):
    /// a string or an array of strings.
    fn audiences(&self) -> Result<Vec<String>> {
        let not_strings = || self.invalid("aud is not a string or an array of strings");
        match self.claims.get("aud") {
            None => Err(self.invalid("aud is missing")),
            Some(Value::String(audience)) => Ok(vec![audience.clone()]),
            Some(Value::Array(audiences)) => audiences
                .iter()
                .map(|audience| audience.as_str().map(str::to_owned).ok_or_else(not_strings))
                .collect(),
            Some(_) => Err(not_strings()),
        }
    }
}

/// `now` and the clock skew tolerated around it, unix seconds.
#[derive(Debug, Clone, Copy)]
struct TimeWindow {
    now: u64,
    tolerance: u64,
}

impl TimeWindow {
    fn check_not_in_future(&self, claims: &ClaimsSet<'_>, name: &str, date: u64) -> Result<()> {
        if date > self.now.saturating_add(self.tolerance) {
            return Err(claims.invalid(format_args!("{name} is in the future")));
        }
        Ok(())
    }
}

fn check_issuer<'a>(claims: &ClaimsSet<'a>, issuer: &IssuerUrl) -> Result<&'a str> {
    let iss = claims.required_string("iss")?;
    if iss != issuer.as_str() {
        return Err(claims.invalid(format_args!(
            "iss is not the configured issuer {}",
            issuer.as_str()
        )));
    }
    Ok(iss)
}

fn check_audience(claims: &ClaimsSet<'_>, audience: &str, whom: &str) -> Result<Vec<String>> {
    let audiences = claims.audiences()?;
    if !audiences.iter().any(|aud| aud == audience) {
        return Err(claims.invalid(format_args!("aud does not include {whom}")));
    }
    Ok(audiences)
}

/// `azp` ([OpenID Connect Core §2](https://openid.net/specs/openid-connect-core-1_0.html#IDToken),
/// §3.1.3.7 steps 4-5).
fn check_authorized_party<'a>(
    claims: &ClaimsSet<'a>,
    audiences: &[String],
    client_id: &str,
) -> Result<Option<&'a str>> {
    match claims.string("azp")? {
        None if audiences.len() > 1 => {
            Err(claims.invalid("azp is required when aud has several entries"))
        }
        Some(azp) if azp != client_id => Err(claims.invalid("azp is not this client")),
        azp => Ok(azp),
    }
}

fn check_expiry(claims: &ClaimsSet<'_>, window: TimeWindow) -> Result<u64> {
    let exp = claims.required_numeric_date("exp")?;
    if window.now > exp.saturating_add(window.tolerance) {
        return Err(claims.invalid("exp has passed"));
    }
    Ok(exp)
}

fn check_not_before(claims: &ClaimsSet<'_>, window: TimeWindow) -> Result<()> {
    match claims.numeric_date("nbf")? {
        Some(nbf) => window.check_not_in_future(claims, "nbf", nbf),
        None => Ok(()),
    }
}

fn check_subject<'a>(claims: &ClaimsSet<'a>, expected: Option<&str>) -> Result<&'a str> {
    let sub = claims.required_string("sub")?;
    if sub.is_empty() || sub.chars().count() > MAX_SUB_LEN {
        return Err(claims.invalid("sub must be 1 to 255 characters"));
    }
    if expected.is_some_and(|expected| expected != sub) {
        return Err(claims.invalid("sub is not the subject this flow asked for"));
    }
    Ok(sub)
}

fn check_nonce<'a>(
    claims: &ClaimsSet<'a>,
    expected: Option<&Nonce>,
    no_nonce_sent: bool,
) -> Result<Option<&'a str>> {
    let nonce = claims.string("nonce")?;
    let Some(expected) = expected else {
        if no_nonce_sent && nonce.is_some() {
            return Err(claims.invalid("nonce is present but none was sent"));
        }
        return Ok(nonce);
    };
    match nonce {
        None => Err(claims.invalid("nonce is missing but one was sent")),
        Some(nonce) if constant_time_eq(nonce.as_bytes(), expected.as_str().as_bytes()) => {
            Ok(Some(nonce))
        }
        Some(_) => Err(claims.invalid("nonce does not match the one sent")),
    }
}

/// `auth_time` against `max_age` ([OpenID Connect Core §3.1.3.7](https://openid.net/specs/openid-connect-core-1_0.html#IDTokenValidation) step 13).
fn check_auth_time(
    claims: &ClaimsSet<'_>,
    max_age: Option<u64>,
    window: TimeWindow,
) -> Result<Option<u64>> {
    let auth_time = claims.numeric_date("auth_time")?;
    let Some(max_age) = max_age else {
        return Ok(auth_time);
    };
    let auth_time =
        auth_time.ok_or_else(|| claims.invalid("auth_time is missing but max_age was sent"))?;
    let latest_accepted = auth_time
        .saturating_add(max_age)
        .saturating_add(window.tolerance);
    if window.now > latest_accepted {
        return Err(claims.invalid("auth_time is older than max_age allows"));
    }
    Ok(Some(auth_time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::test_support::verified_hs256;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const ISSUER: &str = "https://identity.moneyhub.co.uk/oidc";
    const CLIENT: &str = "client-123";
    const NONCE: &str = "n-0S6_WzA2Mj";
    const SUB: &str = "user-7f3a";

    fn valid_claims() -> Value {
        json!({
            "iss": ISSUER,
            "sub": SUB,
            "aud": CLIENT,
            "exp": NOW + 300,
            "iat": NOW - 10,
            "nonce": NONCE,
            "auth_time": NOW - 20,
            "mh:con_id": "consent-42",
        })
    }

    fn validate_with(
        claims: &Value,
        nonce: Option<&str>,
        customize: impl FnOnce(IdTokenValidation<'_>) -> IdTokenValidation<'_>,
    ) -> Result<IdTokenClaims> {
        let issuer = IssuerUrl::parse(ISSUER).expect("valid issuer");
        let client_id = ClientId::new(CLIENT);
        let nonce = nonce.map(Nonce::new);
        let mut expected = IdTokenValidation::new(&issuer, &client_id, NOW);
        if let Some(nonce) = &nonce {
            expected = expected.with_nonce(nonce);
        }
        validate_id_token_claims(&verified_hs256(claims), &customize(expected))
    }

    fn validate(claims: &Value) -> Result<IdTokenClaims> {
        validate_with(claims, Some(NONCE), |expected| expected)
    }

    /// Asserts the claims fail with `IdTokenInvalid`, naming `claim` and leaking no value.
    fn assert_rejected(result: Result<IdTokenClaims>, claim: &str) {
        let error = result.expect_err("claims must be rejected");
        assert_eq!(error.code(), &ErrorCode::IdTokenInvalid);
        let description = error.description();
        assert!(description.starts_with("id_token "), "{description}");
        assert!(
            description.contains(claim),
            "{description} should name {claim}"
        );
        assert!(
            !description.contains(NONCE) && !description.contains(SUB),
            "{description}"
        );
    }

    fn without(claim: &str) -> Value {
        let mut claims = valid_claims();
        claims
            .as_object_mut()
            .expect("claims are an object")
            .remove(claim);
        claims
    }

    fn with(claim: &str, value: Value) -> Value {
        let mut claims = valid_claims();
        claims[claim] = value;
        claims
    }

    #[test]
    fn valid_claims_pass_and_are_readable() {
        let claims = validate(&valid_claims()).expect("valid id_token");
        assert_eq!(claims.iss(), ISSUER);
        assert_eq!(claims.sub(), SUB);
        assert_eq!(claims.aud(), [CLIENT.to_owned()]);
        assert_eq!(claims.exp(), NOW + 300);
        assert_eq!(claims.iat(), NOW - 10);
        assert_eq!(claims.nonce(), Some(NONCE));
        assert_eq!(claims.auth_time(), Some(NOW - 20));
        assert_eq!(claims.azp(), None);
        assert_eq!(claims.claim("mh:con_id"), Some(&json!("consent-42")));
        assert_eq!(claims.extra().len(), 8);
    }

    #[test]
    fn wrong_iss_is_rejected() {
        assert_rejected(validate(&with("iss", json!("https://evil.example"))), "iss");
        // Exact string comparison: a trailing slash is another issuer.
        assert_rejected(validate(&with("iss", json!(format!("{ISSUER}/")))), "iss");
        assert_rejected(validate(&without("iss")), "iss");
    }

    #[test]
    fn aud_without_the_client_is_rejected() {
        assert_rejected(validate(&with("aud", json!("another-client"))), "aud");
        assert_rejected(validate(&with("aud", json!(["a", "b"]))), "aud");
        assert_rejected(validate(&with("aud", json!([CLIENT, 7]))), "aud");
        assert_rejected(validate(&without("aud")), "aud");
    }

    #[test]
    fn aud_array_with_other_entries_needs_azp() {
        let several = with("aud", json!([CLIENT, "resource-server"]));
        assert_rejected(validate(&several), "azp");
        let mut with_azp = several.clone();
        with_azp["azp"] = CLIENT.into();
        let claims = validate(&with_azp).expect("azp names this client");
        assert_eq!(claims.azp(), Some(CLIENT));
        assert!(validate(&with("aud", json!([CLIENT]))).is_ok());
    }

    #[test]
    fn azp_of_another_client_is_rejected() {
        assert_rejected(validate(&with("azp", json!("another-client"))), "azp");
    }

    #[test]
    fn exp_beyond_tolerance_is_rejected() {
        let expired = with("exp", json!(NOW - DEFAULT_CLOCK_TOLERANCE - 1));
        assert_rejected(validate(&expired), "exp");
        let tighter = with("exp", json!(NOW - 5));
        assert_rejected(
            validate_with(&tighter, Some(NONCE), |expected| {
                expected.with_clock_tolerance(0)
            }),
            "exp",
        );
        assert_rejected(validate(&without("exp")), "exp");
        assert_rejected(validate(&with("exp", json!("1700000300"))), "exp");
    }

    #[test]
    fn exp_within_tolerance_passes() {
        assert!(validate(&with("exp", json!(NOW - DEFAULT_CLOCK_TOLERANCE))).is_ok());
        assert!(validate(&with("exp", json!(NOW))).is_ok());
        assert!(validate(&with("exp", json!((NOW + 1) as f64 + 0.5))).is_ok());
    }

    #[test]
    fn iat_over_an_hour_old_or_not_a_number_is_rejected() {
        let stale = with("iat", json!(NOW - MAX_ID_TOKEN_AGE_SECS - DEFAULT_CLOCK_TOLERANCE - 1));
        assert_rejected(validate(&stale), "iat");
        assert!(validate(&with("iat", json!(NOW - MAX_ID_TOKEN_AGE_SECS))).is_ok());
        assert_rejected(validate(&with("iat", json!("1700000000"))), "iat");
        assert_rejected(validate(&with("iat", json!(1.5e9))), "iat");
    }

    #[test]
    fn iat_in_the_future_is_rejected() {
        let future = with("iat", json!(NOW + DEFAULT_CLOCK_TOLERANCE + 1));
        assert_rejected(validate(&future), "iat");
        assert!(validate(&with("iat", json!(NOW + DEFAULT_CLOCK_TOLERANCE))).is_ok());
        assert_rejected(validate(&without("iat")), "iat");
    }

    #[test]
    fn nbf_in_the_future_is_rejected() {
        let future = with("nbf", json!(NOW + DEFAULT_CLOCK_TOLERANCE + 1));
        assert_rejected(validate(&future), "nbf");
        assert!(validate(&with("nbf", json!(NOW))).is_ok());
    }

    #[test]
    fn missing_or_bad_sub_is_rejected() {
        assert_rejected(validate(&without("sub")), "sub");
        assert_rejected(validate(&with("sub", json!(""))), "sub");
        assert_rejected(validate(&with("sub", json!("s".repeat(256)))), "sub");
        assert_rejected(validate(&with("sub", json!(42))), "sub");
        assert!(validate(&with("sub", json!("s".repeat(255)))).is_ok());
    }

    #[test]
    fn an_expected_subject_must_be_the_sub() {
        let asked = validate_with(&valid_claims(), Some(NONCE), |expected| {
            expected.with_subject(SUB)
        });
        assert_eq!(asked.expect("the asked-for subject").sub(), SUB);
        let other = validate_with(
            &with("sub", json!("mh-user-of-someone-else")),
            Some(NONCE),
            |expected| expected.with_subject(SUB),
        );
        assert_rejected(other, "sub");
    }

    #[test]
    fn missing_nonce_is_rejected_when_one_was_sent() {
        assert_rejected(validate(&without("nonce")), "nonce");
        let claims = validate_with(&without("nonce"), None, |expected| expected);
        assert_eq!(claims.expect("no nonce was sent").nonce(), None);
    }

    #[test]
    fn a_nonce_is_refused_when_none_was_sent_at_login_but_not_on_refresh() {
        let login = validate_with(&valid_claims(), None, |expected| expected.with_no_nonce_sent());
        assert_rejected(login, "nonce is present but none was sent");
        let refresh = validate_with(&valid_claims(), None, |expected| expected);
        assert_eq!(refresh.expect("a refresh may repeat it").nonce(), Some(NONCE));
        let none = validate_with(&without("nonce"), None, |expected| expected.with_no_nonce_sent());
        assert_eq!(none.expect("no nonce, none sent").nonce(), None);
    }

    #[test]
    fn a_refreshed_id_token_must_keep_the_grants_iss_aud_azp_sub_and_auth_time() {
        // As the Worker checks a refresh: no nonce, the grant's sub and first auth_time.
        let refresh = |claims: &Value| {
            validate_with(claims, None, |expected| {
                expected.with_subject(SUB).with_first_auth_time(NOW - 20)
            })
        };
        assert!(refresh(&valid_claims()).is_ok());
        assert!(refresh(&without("auth_time")).is_ok(), "auth_time is optional");
        assert_rejected(refresh(&with("auth_time", json!(NOW - 5))), "auth_time is not the first");
        assert_rejected(refresh(&with("iss", json!(format!("{ISSUER}/")))), "iss");
        assert_rejected(refresh(&with("aud", json!("another-client"))), "aud");
        assert_rejected(refresh(&with("azp", json!("another-client"))), "azp");
        assert_rejected(refresh(&with("sub", json!("someone-else"))), "sub");
    }

    #[test]
    fn mismatched_nonce_is_rejected() {
        assert_rejected(validate(&with("nonce", json!("n-0S6_WzA2Mk"))), "nonce");
        assert_rejected(
            validate(&with("nonce", json!(format!("{NONCE}x")))),
            "nonce",
        );
    }

    #[test]
    fn auth_time_is_required_with_max_age() {
        let result = validate_with(&without("auth_time"), Some(NONCE), |expected| {
            expected.with_max_age(600)
        });
        assert_rejected(result, "auth_time");
        assert!(validate(&without("auth_time")).is_ok());
    }

    #[test]
    fn auth_time_older_than_max_age_is_rejected() {
        let old = with("auth_time", json!(NOW - 600 - DEFAULT_CLOCK_TOLERANCE - 1));
        let result = validate_with(&old, Some(NONCE), |expected| expected.with_max_age(600));
        assert_rejected(result, "auth_time");
        let recent = with("auth_time", json!(NOW - 600));
        assert!(validate_with(&recent, Some(NONCE), |expected| expected.with_max_age(600)).is_ok());
        assert_rejected(
            validate(&with("auth_time", json!("yesterday"))),
            "auth_time",
        );
    }

    fn access_token_claims() -> Value {
        json!({"iss": ISSUER, "aud": ["other-api", CLIENT], "exp": NOW + 60, "iat": NOW - 5, "sub": "u"})
    }

    fn validate_access_token(claims: &Value) -> Result<AccessTokenClaims> {
        let issuer = IssuerUrl::parse(ISSUER).expect("valid issuer");
        let jwt = verified_hs256(claims);
        validate_jwt_access_token_claims(&jwt, &issuer, &ClientId::new(CLIENT), None, NOW, 0)
    }

    #[test]
    fn jwt_access_tokens_must_be_this_issuers_for_this_client_live_and_someones() {
        let valid = validate_access_token(&access_token_claims()).expect("valid access token");
        assert_eq!(
            valid,
            AccessTokenClaims {
                sub: "u".into(),
                exp: NOW + 60
            }
        );
        let issuer = IssuerUrl::parse(ISSUER).expect("valid issuer");
        let jwt = verified_hs256(&access_token_claims());
        let expect = |subject| {
            validate_jwt_access_token_claims(
                &jwt,
                &issuer,
                &ClientId::new(CLIENT),
                Some(subject),
                NOW,
                0,
            )
            .map_err(|error| error.code().clone())
        };
        assert!(expect("u").is_ok(), "the expected user");
        assert_eq!(expect("someone-else"), Err(ErrorCode::TokenExchangeFailed));
        let mut string_aud = access_token_claims();
        string_aud["aud"] = json!(CLIENT);
        assert!(validate_access_token(&string_aud).is_ok());
        type Break = fn(&mut Value);
        let broken: [(&str, Break); 10] = [
            ("iss", |c| c["iss"] = json!("https://other.example")),
            ("iss", |c| {
                c.as_object_mut().expect("object").remove("iss");
            }),
            ("aud", |c| c["aud"] = json!(["other-api"])),
            ("aud", |c| c["aud"] = json!(5)),
            ("exp", |c| c["exp"] = json!(NOW - 1)),
            ("exp", |c| {
                c.as_object_mut().expect("object").remove("exp");
            }),
            ("iat", |c| c["iat"] = json!(NOW + 1)),
            ("iat", |c| {
                c.as_object_mut().expect("object").remove("iat");
            }),
            ("nbf", |c| c["nbf"] = json!(NOW + 1)),
            ("sub", |c| {
                c.as_object_mut().expect("object").remove("sub");
            }),
        ];
        for (claim, breaks) in broken {
            let mut claims = access_token_claims();
            breaks(&mut claims);
            let error = validate_access_token(&claims).expect_err(claim);
            assert_eq!(error.code(), &ErrorCode::TokenExchangeFailed, "{claim}");
            assert!(
                error.description().contains(claim),
                "{claim}: {}",
                error.description()
            );
        }
    }
}
