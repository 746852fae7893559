//! The outcome of a consent flow, as it crosses from the Worker to the browser.
//!
//! One JSON object, posted to the opener by the callback page and returned by
//! `GET /auth/outcome` (DESIGN.md, "Wire contract"):
//!
//! ```json
//! {"type":"consentry:outcome","v":1,"state":"...","status":"granted","consent":{...}}
//! {"type":"consentry:outcome","v":1,"state":"...","status":"denied","error":"access_denied","error_description":"..."}
//! ```
//!
//! It carries the flow's `state` and either the recorded consent or an error code; never an
//! authorization code, a verifier or a token. Additional members are ignored when parsing,
//! so the contract can grow without breaking older readers.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{Error, ErrorCode, OAuthErrorCode, Result};
use crate::state::State;

/// The `type` member that marks a consentry outcome message.
pub const OUTCOME_TYPE: &str = "consentry:outcome";

/// The version `v` of the outcome wire format this crate reads and writes.
pub const OUTCOME_VERSION: u64 = 1;

/// A consent the user granted to the app at a provider, as the browser may see it: no token.
///
/// `granted_at` and `expires_at` are RFC 3339 UTC timestamps (see [`format_rfc3339`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// The consent's identifier in consentry's store.
    pub id: String,
    /// The provider id it was granted at.
    pub provider: String,
    /// The app user it belongs to.
    pub user: String,
    /// The scopes granted ([RFC 6749 §3.3](https://www.rfc-editor.org/rfc/rfc6749#section-3.3)).
    pub scopes: Vec<String>,
    /// When it was granted.
    pub granted_at: String,
    /// When it lapses, if the provider limits it (e.g. 90 days in open banking).
    pub expires_at: Option<String>,
}

/// How a flow ended: the outcome's `status` member.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeStatus {
    /// The user consented and the code exchange succeeded.
    Granted,
    /// The user (or the provider on their behalf) refused: RFC 6749 `access_denied`
    /// ([§4.1.2.1](https://www.rfc-editor.org/rfc/rfc6749#section-4.1.2.1)).
    Denied,
    /// Anything else went wrong: a provider error or one of the SDK's own codes.
    Failed,
}

impl OutcomeStatus {
    /// The `status` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeStatus::Granted => "granted",
            OutcomeStatus::Denied => "denied",
            OutcomeStatus::Failed => "failed",
        }
    }

    /// Reads a `status` string; anything but the three known ones is
    /// [`ErrorCode::InvalidOutcome`].
    pub fn parse(status: &str) -> Result<Self> {
        match status {
            "granted" => Ok(OutcomeStatus::Granted),
            "denied" => Ok(OutcomeStatus::Denied),
            "failed" => Ok(OutcomeStatus::Failed),
            _ => Err(invalid_outcome("status must be granted, denied or failed")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Granted(Consent),
    Denied(Error),
    Failed(Error),
}

/// The outcome of one flow, keyed by its `state` (DESIGN.md, "Wire contract").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    state: State,
    verdict: Verdict,
}

impl Outcome {
    /// The flow identified by `state` ended with `consent` granted.
    pub fn granted(state: State, consent: Consent) -> Self {
        Outcome {
            state,
            verdict: Verdict::Granted(consent),
        }
    }

    /// The flow identified by `state` ended with `error`: `denied` for the RFC
    /// `access_denied` ([RFC 6749 §4.1.2.1](https://www.rfc-editor.org/rfc/rfc6749#section-4.1.2.1)),
    /// `failed` for anything else. The error's wire code and description are kept.
    pub fn from_error(state: State, error: &Error) -> Self {
        // Normalized through the wire string so an outcome equals its own parsed JSON.
        let error = Error::new(ErrorCode::parse(error.code().as_str()), error.description());
        let verdict = match error.code() {
            ErrorCode::OAuth(OAuthErrorCode::AccessDenied) => Verdict::Denied(error),
            _ => Verdict::Failed(error),
        };
        Outcome { state, verdict }
    }

    /// The `state` of the flow this outcome ends.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether consent was granted, denied or the flow failed.
    pub fn status(&self) -> OutcomeStatus {
        match self.verdict {
            Verdict::Granted(_) => OutcomeStatus::Granted,
            Verdict::Denied(_) => OutcomeStatus::Denied,
            Verdict::Failed(_) => OutcomeStatus::Failed,
        }
    }

    /// The consent, when granted.
    pub fn consent(&self) -> Option<&Consent> {
        match &self.verdict {
            Verdict::Granted(consent) => Some(consent),
            Verdict::Denied(_) | Verdict::Failed(_) => None,
        }
    }

    /// The error, when denied or failed: its code read back with [`ErrorCode::parse`] and its
    /// description (empty when the outcome had none).
    pub fn error(&self) -> Option<Error> {
        match &self.verdict {
            Verdict::Granted(_) => None,
            Verdict::Denied(error) | Verdict::Failed(error) => Some(error.clone()),
        }
    }

    /// The outcome as the wire JSON object. Text is JSON-escaped only: HTML escaping is the
    /// job of whatever embeds it in a page.
    pub fn to_json(&self) -> String {
        let mut message = json!({
            "type": OUTCOME_TYPE,
            "v": OUTCOME_VERSION,
            "state": self.state.as_str(),
            "status": self.status().as_str(),
        });
        match &self.verdict {
            Verdict::Granted(consent) => message["consent"] = json!(consent),
            Verdict::Denied(error) | Verdict::Failed(error) => {
                message["error"] = error.code().as_str().into();
                if !error.description().is_empty() {
                    message["error_description"] = error.description().into();
                }
            }
        }
        message.to_string()
    }

    /// Reads an outcome strictly: `type` is `consentry:outcome`, `v` is 1, `state` is a valid
    /// [`State`], `status` is known, a granted outcome has a complete `consent` and any other
    /// a string `error`. Anything else is [`ErrorCode::InvalidOutcome`]; unknown members are
    /// ignored.
    pub fn parse(json: &str) -> Result<Outcome> {
        let Ok(Value::Object(message)) = serde_json::from_slice::<Value>(json.as_bytes()) else {
            return Err(invalid_outcome("an outcome must be a JSON object"));
        };
        if message.get("type").and_then(Value::as_str) != Some(OUTCOME_TYPE) {
            return Err(invalid_outcome("type must be consentry:outcome"));
        }
        if message.get("v").and_then(Value::as_u64) != Some(OUTCOME_VERSION) {
            return Err(invalid_outcome("v must be 1"));
        }
        let state = required_string(&message, "state")?;
        let state = State::parse(state).map_err(|_| invalid_outcome("state is not valid"))?;
        let verdict = match OutcomeStatus::parse(required_string(&message, "status")?)? {
            OutcomeStatus::Granted => Verdict::Granted(parse_consent(&message)?),
            OutcomeStatus::Denied => Verdict::Denied(parse_error(&message)?),
            OutcomeStatus::Failed => Verdict::Failed(parse_error(&message)?),
        };
        Ok(Outcome { state, verdict })
    }
}

fn invalid_outcome(description: &str) -> Error {
    Error::new(ErrorCode::InvalidOutcome, description)
}

fn required_string<'a>(message: &'a Map<String, Value>, name: &str) -> Result<&'a str> {
    message
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_outcome(&format!("{name} must be a string")))
}

fn parse_consent(message: &Map<String, Value>) -> Result<Consent> {
    let consent = message
        .get("consent")
        .ok_or_else(|| invalid_outcome("a granted outcome needs a consent"))?;
    Consent::deserialize(consent).map_err(|_| invalid_outcome("the consent is incomplete"))
}

fn parse_error(message: &Map<String, Value>) -> Result<Error> {
    let code = required_string(message, "error")?;
    if code.is_empty() {
        return Err(invalid_outcome("error must not be empty"));
    }
    let description = match message.get("error_description") {
        None => "",
        Some(Value::String(description)) => description,
        Some(_) => return Err(invalid_outcome("error_description must be a string")),
    };
    Ok(Error::new(ErrorCode::parse(code), description))
}

/// Formats Unix seconds as an RFC 3339 UTC timestamp `YYYY-MM-DDTHH:MM:SSZ`
/// ([RFC 3339 §5.6](https://www.rfc-editor.org/rfc/rfc3339#section-5.6)), e.g. `0` is
/// `1970-01-01T00:00:00Z`. The clock is the caller's: pass the platform's `now`.
pub fn format_rfc3339(unix_seconds: u64) -> String {
    let (year, month, day) = civil_from_days(unix_seconds / 86_400);
    let seconds_of_day = unix_seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds_of_day / 3_600,
        seconds_of_day % 3_600 / 60,
        seconds_of_day % 60
    )
}

/// Reads an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS`, optional fraction, then `Z` or
/// `±HH:MM`) as Unix seconds, fractions dropped; `None` for anything else or a time before
/// 1970. The inverse of [`format_rfc3339`] for its own output.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<u64> {
        let part = bytes.get(from..from + len)?;
        part.iter().all(u8::is_ascii_digit).then(|| {
            part.iter()
                .fold(0u64, |acc, digit| acc * 10 + u64::from(digit - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if bytes.len() < 20
        || separators.iter().any(|(at, sep)| bytes[*at] != *sep)
        || !matches!(bytes[10], b'T' | b't' | b' ')
    {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction.find(|c: char| !c.is_ascii_digit())?;
        if end == 0 {
            return None;
        }
        rest = &fraction[end..];
    }
    let offset: i64 = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()) =>
        {
            let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'+' {
                offset
            } else {
                -offset
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day)?;
    let local = days.checked_mul(86_400)? + (hour * 3600 + minute * 60 + second) as i64;
    u64::try_from(local - offset).ok()
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil);
/// `None` for a day the month does not have.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day > month_days[(month - 1) as usize] {
        return None;
    }
    let (year, month, day) = (year as i64, month as i64, day as i64);
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

/// The proleptic Gregorian date of a day count since 1970-01-01, after Howard Hinnant's
/// `civil_from_days` (the inverse of days-from-civil), restricted to days on or after the
/// epoch so every step stays unsigned.
/// <https://howardhinnant.github.io/date_algorithms.html#civil_from_days>
fn civil_from_days(days_since_epoch: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of each year.
    let days = days_since_epoch + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::parse("Yk9wL3Q2c0VnR1pnM2xKaA").expect("valid state")
    }

    fn consent() -> Consent {
        Consent {
            id: "cns_01HZX3".into(),
            provider: "moneyhub".into(),
            user: "alice".into(),
            scopes: vec!["openid".into(), "accounts:read".into()],
            granted_at: format_rfc3339(1_709_164_800),
            expires_at: Some(format_rfc3339(1_709_164_800 + 90 * 86_400)),
        }
    }

    fn parse_error_code(json: &str) -> Option<ErrorCode> {
        Outcome::parse(json).err().map(|error| error.code().clone())
    }

    #[test]
    fn rfc3339_timestamps_read_back() {
        for seconds in [0, 951_782_400, 1_709_164_800, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&format_rfc3339(seconds)), Some(seconds));
        }
        assert_eq!(
            parse_rfc3339("2026-03-01T12:30:00.123456+01:00"),
            Some(1_772_364_600)
        );
        assert_eq!(
            parse_rfc3339("2026-03-01T12:30:00-00:30"),
            Some(1_772_370_000)
        );
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-03-01",
            "2026-03-01T00:00:00",
            "1969-12-31T23:59:59Z",
            "2026-03-01T00:00:00.Z",
            "x026-03-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn granted_outcome_round_trips() {
        let outcome = Outcome::granted(state(), consent());
        let json = outcome.to_json();
        let wire: Value = serde_json::from_str(&json).expect("json");
        assert_eq!(wire["type"], "consentry:outcome");
        assert_eq!(wire["v"], 1);
        assert_eq!(wire["status"], "granted");
        assert_eq!(wire["consent"]["granted_at"], "2024-02-29T00:00:00Z");
        assert_eq!(wire["consent"]["expires_at"], "2024-05-29T00:00:00Z");
        let parsed = Outcome::parse(&json).expect("valid outcome");
        assert_eq!(parsed, outcome);
        assert_eq!(parsed.status(), OutcomeStatus::Granted);
        assert_eq!(parsed.consent(), Some(&consent()));
        assert_eq!(parsed.error(), None);
    }

    #[test]
    fn consent_without_expiry_is_null_on_the_wire() {
        let open_ended = Consent {
            expires_at: None,
            ..consent()
        };
        let json = Outcome::granted(state(), open_ended.clone()).to_json();
        let wire: Value = serde_json::from_str(&json).expect("json");
        assert_eq!(wire["consent"]["expires_at"], Value::Null);
        let parsed = Outcome::parse(&json).expect("valid outcome");
        assert_eq!(parsed.consent(), Some(&open_ended));
    }

    #[test]
    fn denied_outcome_has_the_exact_wire_shape() {
        let error = Error::oauth("access_denied", Some("The user cancelled"));
        let outcome = Outcome::from_error(state(), &error);
        assert_eq!(outcome.status(), OutcomeStatus::Denied);
        let wire: Value = serde_json::from_str(&outcome.to_json()).expect("json");
        assert_eq!(
            wire,
            json!({"type":"consentry:outcome","v":1,"state":"Yk9wL3Q2c0VnR1pnM2xKaA","status":"denied","error":"access_denied","error_description":"The user cancelled"})
        );
        let parsed = Outcome::parse(&outcome.to_json()).expect("valid outcome");
        assert_eq!(parsed, outcome);
        assert_eq!(parsed.error(), Some(error));
        assert_eq!(parsed.consent(), None);
    }

    #[test]
    fn failed_outcome_round_trips_and_omits_an_empty_description() {
        let error = Error::new(ErrorCode::StateMismatch, "");
        let outcome = Outcome::from_error(state(), &error);
        assert_eq!(outcome.status(), OutcomeStatus::Failed);
        let json = outcome.to_json();
        let wire: Value = serde_json::from_str(&json).expect("json");
        assert_eq!(
            wire,
            json!({"type":"consentry:outcome","v":1,"state":"Yk9wL3Q2c0VnR1pnM2xKaA","status":"failed","error":"state_mismatch"})
        );
        let parsed = Outcome::parse(&json).expect("valid outcome");
        assert_eq!(parsed, outcome);
        assert_eq!(
            parsed.error().map(|e| e.code().clone()),
            Some(ErrorCode::StateMismatch)
        );
    }

    #[test]
    fn provider_errors_other_than_access_denied_fail_and_keep_their_string() {
        for code in ["server_error", "mh_consent_expired"] {
            let outcome = Outcome::from_error(state(), &Error::oauth(code, None));
            assert_eq!(outcome.status(), OutcomeStatus::Failed);
            assert!(outcome.to_json().contains(&format!(r#""error":"{code}""#)));
        }
    }

    #[test]
    fn html_in_error_description_is_kept_as_data_in_valid_json() {
        let description = r#"</script><script>alert("x")</script> & 'quotes' \ done"#;
        let error = Error::oauth("invalid_request", Some(description));
        let json = Outcome::from_error(state(), &error).to_json();
        let value: Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(value["error_description"], description);
        let parsed = Outcome::parse(&json).expect("valid outcome");
        assert_eq!(
            parsed.error().map(|e| e.description().to_owned()),
            Some(description.into())
        );
    }

    #[test]
    fn strict_parse_rejects_what_the_contract_does_not_allow() {
        let state = "Yk9wL3Q2c0VnR1pnM2xKaA";
        for bad in [
            "not json".to_owned(),
            "[]".to_owned(),
            format!(r#"{{"type":"other","v":1,"state":"{state}","status":"failed","error":"timeout"}}"#),
            format!(r#"{{"v":1,"state":"{state}","status":"failed","error":"timeout"}}"#),
            format!(r#"{{"type":"consentry:outcome","v":2,"state":"{state}","status":"failed","error":"timeout"}}"#),
            format!(r#"{{"type":"consentry:outcome","v":"1","state":"{state}","status":"failed","error":"timeout"}}"#),
            r#"{"type":"consentry:outcome","v":1,"state":"a b","status":"failed","error":"timeout"}"#.to_owned(),
            r#"{"type":"consentry:outcome","v":1,"status":"failed","error":"timeout"}"#.to_owned(),
            format!(r#"{{"type":"consentry:outcome","v":1,"state":"{state}","status":"pending","error":"timeout"}}"#),
            format!(r#"{{"type":"consentry:outcome","v":1,"state":"{state}","status":"granted"}}"#),
            format!(r#"{{"type":"consentry:outcome","v":1,"state":"{state}","status":"granted","consent":{{"id":"c1","provider":"p"}}}}"#),
            format!(r#"{{"type":"consentry:outcome","v":1,"state":"{state}","status":"denied"}}"#),
            format!(r#"{{"type":"consentry:outcome","v":1,"state":"{state}","status":"failed","error":7}}"#),
            format!(r#"{{"type":"consentry:outcome","v":1,"state":"{state}","status":"failed","error":"timeout","error_description":1}}"#),
        ] {
            assert_eq!(parse_error_code(&bad), Some(ErrorCode::InvalidOutcome), "{bad}");
        }
    }

    #[test]
    fn unknown_members_are_ignored() {
        let json = r#"{"type":"consentry:outcome","v":1,"state":"abc","status":"failed","error":"popup_closed","at":"later"}"#;
        let parsed = Outcome::parse(json).expect("additions are allowed");
        assert_eq!(
            parsed.error().map(|e| e.code().clone()),
            Some(ErrorCode::PopupClosed)
        );
    }

    #[test]
    fn rfc3339_dates_across_leap_days_and_2038() {
        for (seconds, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_234_567_890, "2009-02-13T23:31:30Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (2_147_483_648, "2038-01-19T03:14:08Z"),
            (4_107_542_399, "2100-02-28T23:59:59Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(format_rfc3339(seconds), text, "{seconds}");
        }
    }
}
