//! The page the popup shows at the end of a flow (DESIGN.md flow step 5): it posts the
//! [`Outcome`] to the opener at the exact SPA origin stored with the transaction, then
//! closes.
//!
//! Every string in it is escaped, provider-supplied ones included; its one script and one
//! style are fixed text allowed by hash, so the Content-Security-Policy allows nothing else.
//! The outcome travels in a `data-` attribute rather than inside the script, so the script
//! (and its hash) never changes.

use crate::encoding::{base64_encode, sha256};
use crate::error::{Error, ErrorCode};
use crate::outcome::{Outcome, OutcomeStatus};
use crate::url::WebOrigin;

/// The id of the element that carries the outcome (`data-outcome`, `data-target-origin`,
/// `data-error`).
pub const OUTCOME_ELEMENT_ID: &str = "consentry-outcome";

/// Headers every outcome page is served with, besides its Content-Security-Policy.
pub const OUTCOME_PAGE_HEADERS: [(&str, &str); 5] = [
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
];

const SCRIPT: &str = r#"(function(){var m=document.getElementById("consentry-outcome"),o=m.getAttribute("data-outcome"),t=m.getAttribute("data-target-origin");if(!o||!t)return;try{if(window.opener)window.opener.postMessage(JSON.parse(o),t)}catch(e){}setTimeout(function(){window.close()},100)})();"#;

const STYLE: &str = "body{margin:0;font:16px/1.5 system-ui,sans-serif;color:#1c2430;background:#f4f6fa;display:grid;place-items:center;min-height:100vh}main{max-width:26rem;padding:2rem;background:#fff;border-radius:12px;box-shadow:0 4px 24px rgba(20,30,50,.08)}h1{font-size:1.25rem;margin:0 0 .5rem}.granted h1{color:#137a4b}.denied h1,.failed h1{color:#b3261e}code{background:#eef1f6;padding:0 .25rem;border-radius:4px}.hint{color:#5b6576;font-size:.875rem}";

/// A rendered outcome page: HTTP status, HTML and its Content-Security-Policy.
#[derive(Debug, Clone)]
pub struct OutcomePage {
    status: u16,
    html: String,
}

impl OutcomePage {
    /// The page for a recorded outcome, posted to `target_origin`: `200` when granted,
    /// `429` for a start over its rate limit, `400` otherwise (DESIGN.md, wire contract).
    pub fn for_outcome(outcome: &Outcome, target_origin: &WebOrigin) -> Self {
        let (class, headline) = match outcome.status() {
            OutcomeStatus::Granted => ("granted", "Bank connected"),
            OutcomeStatus::Denied => ("denied", "Consent declined"),
            _ => ("failed", "Connection failed"),
        };
        let error = outcome.error();
        let detail = match &error {
            None => "Your consent is recorded. This window closes by itself.".to_owned(),
            Some(error) => describe(error),
        };
        let status = match &error {
            None => 200,
            Some(error) if error.code() == &ErrorCode::RateLimited => 429,
            Some(_) => 400,
        };
        let code = error.as_ref().map(|error| error.code().as_str().to_owned());
        OutcomePage {
            status,
            html: render(
                class,
                headline,
                &detail,
                code.as_deref().unwrap_or(""),
                &outcome.to_json(),
                target_origin.as_str(),
            ),
        }
    }

    /// A page for a request that has no flow to report to (unknown state, a refused start):
    /// nothing is posted; the error is shown. `status` is the HTTP status to answer with.
    pub fn for_error(error: &Error, status: u16) -> Self {
        OutcomePage {
            status,
            html: render(
                "failed",
                "Connection failed",
                &describe(error),
                error.code().as_str(),
                "",
                "",
            ),
        }
    }

    /// The status of a page for a request that claimed no flow ([`for_error`](Self::for_error)):
    /// `429` over a rate limit and `503` with storage down, which the same request may get
    /// past later (the Worker adds `Retry-After`), else `400`.
    pub fn status_without_flow(error: &Error) -> u16 {
        match error.code() {
            ErrorCode::RateLimited => 429,
            ErrorCode::StorageFailed => 503,
            _ => 400,
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The HTML document.
    pub fn html(&self) -> &str {
        &self.html
    }

    /// The page's Content-Security-Policy: nothing but its own script and style (by hash),
    /// never framed, no forms, no base URI.
    pub fn content_security_policy() -> String {
        format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'none'",
            csp_hash(SCRIPT),
            csp_hash(STYLE)
        )
    }
}

/// Escapes text for HTML content and double-quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn describe(error: &Error) -> String {
    let description = error.description();
    if description.is_empty() {
        format!("The flow ended with {}.", error.code())
    } else {
        description.to_owned()
    }
}

fn csp_hash(source: &str) -> String {
    format!("sha256-{}", base64_encode(&sha256(source.as_bytes())))
}

fn render(
    class: &str,
    headline: &str,
    detail: &str,
    code: &str,
    outcome_json: &str,
    target_origin: &str,
) -> String {
    let code_line = if code.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"hint\">Error code: <code>{}</code></p>",
            escape_html(code)
        )
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{headline}</title><style>{STYLE}</style></head><body>\
         <main id=\"{OUTCOME_ELEMENT_ID}\" class=\"{class}\" data-error=\"{code}\" \
         data-outcome=\"{outcome}\" data-target-origin=\"{origin}\">\
         <h1>{headline}</h1><p>{detail}</p>{code_line}\
         <p class=\"hint\">You can close this window.</p></main>\
         <script>{SCRIPT}</script></body></html>",
        headline = escape_html(headline),
        code = escape_html(code),
        outcome = escape_html(outcome_json),
        origin = escape_html(target_origin),
        detail = escape_html(detail),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Consent;
    use crate::state::State;

    fn state() -> State {
        State::from_random_bytes(&[3; 16])
    }

    fn origin() -> WebOrigin {
        WebOrigin::parse("https://app.example").expect("origin")
    }

    fn unescape(text: &str) -> String {
        text.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    fn attribute(html: &str, name: &str) -> String {
        let start = html.find(&format!("{name}=\"")).expect("attribute") + name.len() + 2;
        let end = start + html[start..].find('"').expect("closing quote");
        unescape(&html[start..end])
    }

    #[test]
    fn a_grant_posts_the_outcome_to_the_stored_origin() {
        let consent = Consent {
            id: "cns_1".into(),
            provider: "local-bank".into(),
            user: "usr_alice".into(),
            scopes: vec!["accounts".into()],
            granted_at: "2026-11-21T10:00:00Z".into(),
            expires_at: None,
        };
        let outcome = Outcome::granted(state(), consent);
        let page = OutcomePage::for_outcome(&outcome, &origin());
        assert_eq!(page.status(), 200);
        assert_eq!(attribute(page.html(), "data-outcome"), outcome.to_json());
        assert_eq!(
            attribute(page.html(), "data-target-origin"),
            "https://app.example"
        );
        assert_eq!(attribute(page.html(), "data-error"), "");
        let parsed = Outcome::parse(&attribute(page.html(), "data-outcome")).expect("schema");
        assert_eq!(parsed, outcome);
    }

    #[test]
    fn provider_markup_is_shown_as_text_and_round_trips() {
        let hostile = r#"<script>alert(1)</script><img src=x onerror="alert(2)"> & 'q'"#;
        let outcome = Outcome::from_error(state(), &Error::oauth("access_denied", Some(hostile)));
        let page = OutcomePage::for_outcome(&outcome, &origin());
        assert_eq!(page.status(), 400);
        assert!(!page.html().contains("<script>alert"));
        assert!(!page.html().contains("<img"));
        assert!(page
            .html()
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        let parsed = Outcome::parse(&attribute(page.html(), "data-outcome")).expect("schema");
        assert_eq!(parsed.error().expect("error").description(), hostile);
        assert_eq!(attribute(page.html(), "data-error"), "access_denied");
        assert_eq!(page.html().matches("<script>").count(), 1);
    }

    #[test]
    fn a_start_over_its_rate_limit_is_429_and_still_told_to_the_opener() {
        let limited = Error::new(ErrorCode::RateLimited, "too many requests");
        let page = OutcomePage::for_outcome(&Outcome::from_error(state(), &limited), &origin());
        assert_eq!(page.status(), 429);
        assert_eq!(attribute(page.html(), "data-target-origin"), origin().as_str());
        let other = Error::new(ErrorCode::StateMismatch, "no");
        let page = OutcomePage::for_outcome(&Outcome::from_error(state(), &other), &origin());
        assert_eq!(page.status(), 400);
    }

    #[test]
    fn a_request_that_claimed_no_flow_says_when_retrying_can_help() {
        let status = |code| OutcomePage::status_without_flow(&Error::new(code, "x"));
        assert_eq!(status(ErrorCode::RateLimited), 429);
        assert_eq!(status(ErrorCode::StorageFailed), 503);
        assert_eq!(status(ErrorCode::UnknownTransaction), 400);
        assert_eq!(status(ErrorCode::RecordUnreadable), 400);
    }

    #[test]
    fn an_error_without_a_flow_posts_nothing() {
        let error = Error::new(ErrorCode::UnknownTransaction, "no flow with this state");
        let page = OutcomePage::for_error(&error, 400);
        assert_eq!(page.status(), 400);
        assert_eq!(attribute(page.html(), "data-outcome"), "");
        assert_eq!(attribute(page.html(), "data-target-origin"), "");
        assert_eq!(attribute(page.html(), "data-error"), "unknown_transaction");
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let html = OutcomePage::for_error(&Error::new(ErrorCode::NotFound, "x"), 404)
            .html()
            .to_owned();
        let script =
            &html[html.find("<script>").expect("script") + 8..html.find("</script>").expect("end")];
        let style =
            &html[html.find("<style>").expect("style") + 7..html.find("</style>").expect("end")];
        let policy = OutcomePage::content_security_policy();
        assert!(policy.contains(&format!("script-src '{}'", csp_hash(script))));
        assert!(policy.contains(&format!("style-src '{}'", csp_hash(style))));
        assert!(policy.starts_with("default-src 'none'"));
        assert!(policy.contains("frame-ancestors 'none'"));
        // A known SHA-256 (FIPS 180-2 "abc"), so csp_hash cannot drift from what browsers hash.
        assert_eq!(
            csp_hash("abc"),
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }
}
