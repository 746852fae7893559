//! The start request: the form the browser package submits into the popup
//! (`POST {auth base}/auth/start`, DESIGN.md flow step 2).
//!
//! The field names are the wire contract, shared by the browser (which builds the form) and
//! the Worker (which parses it here). The verifier travels in a POST body, never in a URL.

#[cfg(feature = "std")]
use crate::encoding::form_decode;
use crate::error::{Error, ErrorCode, Result};
use crate::pkce::PkceCodeVerifier;
use crate::prelude::*;
use crate::scope::Scopes;
use crate::state::State;

/// The provider id field.
pub const FIELD_PROVIDER: &str = "provider";
/// The `state` field.
pub const FIELD_STATE: &str = "state";
/// The PKCE code verifier field.
pub const FIELD_CODE_VERIFIER: &str = "code_verifier";
/// The optional S256 challenge of the verifier: when present it must match
/// ([RFC 7636 §4.2](https://www.rfc-editor.org/rfc/rfc7636#section-4.2)).
pub const FIELD_CODE_CHALLENGE: &str = "code_challenge";
/// The app-user reference field: a user id (demo) or an HS256 user assertion.
pub const FIELD_USER: &str = "user";
/// The optional scope field, narrowing the provider's configured scopes.
pub const FIELD_SCOPE: &str = "scope";
/// The optional provider hint (a bank id, a login hint, a provider-side user id).
pub const FIELD_PROVIDER_HINT: &str = "provider_hint";

/// The shortest `state` a flow may start with: 128 random bits in base64url
/// ([RFC 6749 §10.10](https://www.rfc-editor.org/rfc/rfc6749#section-10.10)). The Worker
/// keys the transaction by it, so it must not be guessable.
pub const MIN_STATE_LEN: usize = 22;
/// The longest `user` value accepted (a user assertion is a compact JWT).
pub const MAX_USER_LEN: usize = 4096;
/// The longest provider hint accepted.
pub const MAX_PROVIDER_HINT_LEN: usize = 255;

/// A start request whose every field passed the core's checks. Its Debug output leaves out
/// the verifier and the user reference (which may be a bearer assertion).
pub struct StartRequest {
    /// The configured provider id the flow is for (not yet looked up).
    pub provider: String,
    /// The flow's `state`.
    pub state: State,
    /// The flow's PKCE verifier; the Worker seals it at rest and uses it once.
    pub code_verifier: PkceCodeVerifier,
    /// The app-user reference, to be trusted as `CONSENTRY_DEMO_USERS` says.
    pub user: String,
    /// Scopes asked for, if narrower than the provider's configured ones.
    pub scope: Option<Scopes>,
    /// A provider hint, if any.
    pub provider_hint: Option<String>,
}

impl StartRequest {
    #[cfg(feature = "std")]
    /// Parses the form body. Every field occurs at most once; unknown fields are ignored
    /// so the form can grow. Failures name the field, never its value.
    pub fn parse(form_body: &str) -> Result<StartRequest> {
        let fields = form_decode(form_body);
        let field = |name: &str| -> Result<Option<&str>> {
            let mut values = fields.iter().filter(|(key, _)| key == name);
            match (values.next(), values.next()) {
                (Some(_), Some(_)) => Err(Error::new(
                    ErrorCode::DuplicateParameter,
                    format!("the start form has {name} more than once"),
                )),
                (Some((_, value)), None) if !value.is_empty() => Ok(Some(value.as_str())),
                _ => Ok(None),
            }
        };
        let required = |name: &str| -> Result<&str> {
            field(name)?.ok_or_else(|| {
                Error::new(
                    ErrorCode::MissingParameter,
                    format!("the start form has no {name}"),
                )
            })
        };

        let start = StartRequest::new(
            required(FIELD_PROVIDER)?,
            State::parse(required(FIELD_STATE)?)?,
            PkceCodeVerifier::parse(required(FIELD_CODE_VERIFIER)?)?,
            required(FIELD_USER)?,
            field(FIELD_SCOPE)?,
            field(FIELD_PROVIDER_HINT)?,
        )?;
        if let Some(challenge) = field(FIELD_CODE_CHALLENGE)? {
            if challenge != start.code_verifier.challenge().as_str() {
                return Err(Error::new(
                    ErrorCode::InvalidVerifier,
                    "code_challenge is not the S256 challenge of code_verifier",
                ));
            }
        }
        Ok(start)
    }

    /// A start request from its parts, checked by the same rules as [`StartRequest::parse`]:
    /// the browser package builds its form with this, so a bad field fails before the popup
    /// opens rather than on the Worker's error page.
    pub fn new(
        provider: &str,
        state: State,
        code_verifier: PkceCodeVerifier,
        user: &str,
        scope: Option<&str>,
        provider_hint: Option<&str>,
    ) -> Result<StartRequest> {
        if !is_provider_id(provider) {
            return Err(Error::new(
                ErrorCode::UnknownProvider,
                "no provider can have this id: lower-case letters, digits and -, at most 32",
            ));
        }
        if state.as_str().len() < MIN_STATE_LEN {
            return Err(Error::new(
                ErrorCode::InvalidState,
                "a flow's state must carry at least 128 bits: 22 or more characters",
            ));
        }
        let user = check_user_reference(user)?;
        let scope = scope
            .filter(|scope| !scope.is_empty())
            .map(Scopes::parse)
            .transpose()?;
        let provider_hint = provider_hint.filter(|hint| !hint.is_empty());
        if provider_hint
            .is_some_and(|hint| hint.len() > MAX_PROVIDER_HINT_LEN || has_control_char(hint))
        {
            return Err(Error::new(
                ErrorCode::InvalidParameter,
                "the provider hint is too long or has control characters",
            ));
        }
        Ok(StartRequest {
            provider: provider.to_owned(),
            state,
            code_verifier,
            user: user.to_owned(),
            scope,
            provider_hint: provider_hint.map(str::to_owned),
        })
    }

    /// The form fields, name then value, in the order [`StartRequest::parse`] reads them,
    /// with the verifier's S256 `code_challenge` added so the Worker can check the pair
    /// arrived intact. The verifier is among them: they belong in a POST body only.
    pub fn form_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            (FIELD_PROVIDER, self.provider.clone()),
            (FIELD_STATE, self.state.as_str().to_owned()),
            (FIELD_CODE_VERIFIER, self.code_verifier.secret().to_owned()),
            (
                FIELD_CODE_CHALLENGE,
                self.code_verifier.challenge().as_str().to_owned(),
            ),
            (FIELD_USER, self.user.clone()),
        ];
        if let Some(scope) = &self.scope {
            fields.push((FIELD_SCOPE, scope.to_wire()));
        }
        if let Some(hint) = &self.provider_hint {
            fields.push((FIELD_PROVIDER_HINT, hint.clone()));
        }
        fields
    }
}

impl core::fmt::Debug for StartRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StartRequest")
            .field("provider", &self.provider)
            .field("state", &self.state)
            .field("code_verifier", &self.code_verifier)
            .field("user", &"[redacted]")
            .field("scope", &self.scope)
            .field("provider_hint", &self.provider_hint)
            .finish()
    }
}

/// Whether `id` is a provider id: 1-32 characters of `a-z 0-9 -` (it also names the
/// provider's secrets, upper-cased, `-` as `_`). Here, with the start form, because the
/// browser checks it too.
pub fn is_provider_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The shape every app-user reference must have wherever it arrives (the start form's
/// `user`, the account routes' `Authorization: Bearer`): 1 to [`MAX_USER_LEN`] characters,
/// none of them control characters. Whether it names a user is for the Worker to decide.
pub fn check_user_reference(user: &str) -> Result<&str> {
    if user.is_empty() || user.len() > MAX_USER_LEN || has_control_char(user) {
        return Err(Error::new(
            ErrorCode::InvalidUser,
            "the user reference is empty, too long or has control characters",
        ));
    }
    Ok(user)
}

/// Whether `text` holds a control character (Unicode `Cc`, as [`char::is_control`]:
/// U+0000-U+001F and U+007F-U+009F), read from its UTF-8 bytes: the browser module
/// carries this, and decoding characters costs it more than the check.
fn has_control_char(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(at, &byte)| {
        byte < 0x20
            || byte == 0x7f
            // U+0080-U+009F are C2 80 to C2 9F; in valid UTF-8, C2 always leads.
            || (byte == 0xc2 && bytes.get(at + 1).is_some_and(|next| *next <= 0x9f))
    })
}

/// The user reference an account route was sent as `Authorization: Bearer <reference>`
/// ([RFC 6750 §2.1](https://www.rfc-editor.org/rfc/rfc6750#section-2.1); the scheme is
/// case-insensitive), checked by [`check_user_reference`]. It travels in that header because
/// it may be a bearer assertion, which logs and proxies know to redact there.
pub fn user_reference_from_authorization(header: &str) -> Result<&str> {
    let reference = header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
        .map(|(_, reference)| reference.trim_start_matches(' '))
        .ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidUser,
                "the Authorization header must be Bearer and a user reference",
            )
        })?;
    check_user_reference(reference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::form_encode;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const STATE: &str = "af0ifjsldkjAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn form(extra: &[(&str, &str)]) -> String {
        let mut fields = vec![
            ("provider", "local-bank"),
            ("state", STATE),
            ("code_verifier", VERIFIER),
            ("user", "usr_alice"),
        ];
        for (name, value) in extra {
            fields.retain(|(field, _)| field != name);
            fields.push((name, value));
        }
        form_encode(fields.into_iter().filter(|(_, value)| *value != "<absent>"))
    }

    fn code_of(body: &str) -> String {
        StartRequest::parse(body)
            .expect_err("must be refused")
            .code()
            .as_str()
            .to_owned()
    }

    #[test]
    fn control_characters_are_found_in_bytes_as_char_is_control_finds_them() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let text = format!("a{c}b");
            assert_eq!(
                has_control_char(&text),
                c.is_control(),
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn new_fails_only_with_the_codes_the_browser_names() {
        // crates/consentry/src/browser names these codes alone (code_name): a check added to
        // StartRequest::new with another code must be named there too.
        let named = [
            ErrorCode::UnknownProvider,
            ErrorCode::InvalidState,
            ErrorCode::InvalidUser,
            ErrorCode::InvalidParameter,
        ];
        let verifier = || PkceCodeVerifier::parse(VERIFIER).expect("valid verifier");
        let state = || State::parse(STATE).expect("valid state");
        let long_hint = "h".repeat(MAX_PROVIDER_HINT_LEN + 1);
        let refusals = [
            StartRequest::new("Bank!", state(), verifier(), "usr_alice", None, None),
            StartRequest::new(
                "bank",
                State::parse("short").expect("valid"),
                verifier(),
                "usr_alice",
                None,
                None,
            ),
            StartRequest::new("bank", state(), verifier(), "", None, None),
            StartRequest::new("bank", state(), verifier(), "usr\u{85}", None, None),
            StartRequest::new("bank", state(), verifier(), "usr_alice", Some("a\"b"), None),
            StartRequest::new(
                "bank",
                state(),
                verifier(),
                "usr_alice",
                None,
                Some(&long_hint),
            ),
            StartRequest::new("bank", state(), verifier(), "usr_alice", None, Some("h\n")),
        ];
        for refusal in refusals {
            let code = refusal.expect_err("refused").code().clone();
            assert!(
                named.contains(&code),
                "{code:?} is not named by the browser module"
            );
        }
    }

    #[test]
    fn a_complete_form_parses() {
        let start = StartRequest::parse(&form(&[
            ("scope", "openid accounts"),
            ("provider_hint", "ob-monzo"),
            ("ignored_extension", "x"),
        ]))
        .expect("valid");
        assert_eq!(start.provider, "local-bank");
        assert_eq!(start.state.as_str(), STATE);
        assert_eq!(start.code_verifier.secret(), VERIFIER);
        assert_eq!(start.user, "usr_alice");
        assert_eq!(start.scope.expect("scope").to_wire(), "openid accounts");
        assert_eq!(start.provider_hint.as_deref(), Some("ob-monzo"));
    }

    #[test]
    fn each_bad_field_has_its_code() {
        assert_eq!(
            code_of(&form(&[("provider", "<absent>")])),
            "missing_parameter"
        );
        assert_eq!(code_of(&form(&[("user", "")])), "missing_parameter");
        // The configuration's own id rule: what parse_list refuses, start refuses too.
        for not_an_id in ["bank/../x", "Local-Bank", "local_bank", &"b".repeat(33)] {
            assert_eq!(
                code_of(&form(&[("provider", not_an_id)])),
                "unknown_provider"
            );
        }
        assert_eq!(
            code_of(&form(&[("code_verifier", "short")])),
            "invalid_verifier"
        );
        assert_eq!(
            code_of(&form(&[("code_verifier", &"a".repeat(129))])),
            "invalid_verifier"
        );
        assert_eq!(code_of(&form(&[("state", "tiny")])), "invalid_state");
        assert_eq!(code_of(&form(&[("user", "a\nb")])), "invalid_user");
        assert_eq!(
            code_of(&form(&[("provider_hint", &"h".repeat(256))])),
            "invalid_parameter"
        );
        let twice = format!("{}&state={STATE}", form(&[]));
        assert_eq!(code_of(&twice), "duplicate_parameter");
    }

    #[test]
    fn the_built_form_parses_back_to_the_same_request() {
        let built = StartRequest::new(
            "local-bank",
            State::parse(STATE).expect("state"),
            PkceCodeVerifier::parse(VERIFIER).expect("verifier"),
            "usr_alice",
            Some("openid accounts"),
            Some("ob-monzo"),
        )
        .expect("valid");
        let fields = built.form_fields();
        // RFC 7636 Appendix B: the verifier's S256 challenge travels beside it.
        assert!(fields.contains(&(
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned()
        )));
        let body = form_encode(fields.iter().map(|(name, value)| (*name, value.as_str())));
        let parsed = StartRequest::parse(&body).expect("parses");
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
        assert_eq!(parsed.code_verifier.secret(), VERIFIER);
        assert_eq!(parsed.user, "usr_alice");
    }

    #[test]
    fn building_applies_the_parse_rules() {
        let build = |provider: &str, user: &str, scope: Option<&str>| {
            StartRequest::new(
                provider,
                State::parse(STATE).expect("state"),
                PkceCodeVerifier::parse(VERIFIER).expect("verifier"),
                user,
                scope,
                None,
            )
            .map(|_| ())
            .map_err(|error| error.code().as_str().to_owned())
        };
        assert_eq!(
            build("Local Bank", "usr_alice", None),
            Err("unknown_provider".into())
        );
        assert_eq!(build("local-bank", "", None), Err("invalid_user".into()));
        assert_eq!(
            build("local-bank", "usr_alice", Some("a\"b")),
            Err("invalid_parameter".into())
        );
        assert_eq!(build("local-bank", "usr_alice", Some("")), Ok(()));
    }

    #[test]
    fn a_challenge_that_does_not_match_the_verifier_is_refused() {
        let other = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cX";
        assert_eq!(
            code_of(&form(&[("code_challenge", other)])),
            "invalid_verifier"
        );
    }

    #[test]
    fn a_user_reference_comes_from_a_bearer_authorization_only() {
        assert_eq!(
            user_reference_from_authorization("Bearer usr_alice"),
            Ok("usr_alice")
        );
        assert_eq!(
            user_reference_from_authorization("bearer  a.b.c"),
            Ok("a.b.c")
        );
        for refused in ["usr_alice", "Basic dXNyOnB3", "Bearer ", "Bearer a\u{7}b"] {
            let code = user_reference_from_authorization(refused).map_err(|e| e.code().clone());
            assert_eq!(code, Err(ErrorCode::InvalidUser), "{refused:?}");
        }
        let long = format!("Bearer {}", "x".repeat(MAX_USER_LEN + 1));
        assert!(user_reference_from_authorization(&long).is_err());
    }

    #[test]
    fn debug_hides_the_verifier_and_the_user_assertion() {
        let start =
            StartRequest::parse(&form(&[("user", "eyJhbGciOiJIUzI1NiJ9.e30.sig")])).expect("valid");
        let debug = format!("{start:?}");
        assert!(!debug.contains(VERIFIER));
        assert!(!debug.contains("eyJhbGciOiJIUzI1NiJ9"));
        assert!(debug.contains("PkceCodeVerifier([redacted])"));
    }

    #[test]
    fn errors_never_quote_the_verifier() {
        let bad = "x".repeat(42);
        let error = StartRequest::parse(&form(&[("code_verifier", &bad)])).expect_err("short");
        assert!(!error.description().contains(&bad));
    }
}
