//! The challenge page and the answers of `POST /.flashgate/challenge`.
//!
//! The page (`static/challenge.html`) is a template like the waiting page: every value is
//! HTML-escaped and placed only in text or double-quoted attributes. Its script
//! (`challenge.js`) starts Web Workers (`pow-worker.js`) that search for the counter, shows
//! progress, posts the solution and reloads the original URL. Without JavaScript the page says
//! plainly that this check needs it.

use std::borrow::Cow;

use crate::http_util::safe_return_path;
use crate::pages::Branding;
use crate::pages::Template;

use super::challenge::{Challenge, ChallengeError};
use super::Passed;

pub const CHALLENGE_HTML: &str = include_str!("../../../static/challenge.html");
pub const CHALLENGE_JS: &str = include_str!("../../../static/challenge.js");
pub const POW_WORKER_JS: &str = include_str!("../../../static/pow-worker.js");

/// Where the page posts solutions.
pub const SUBMIT_PATH: &str = "/.flashgate/challenge";

/// Static files the challenge page loads, as `(path under /.flashgate/, content type,
/// body)`. The gate serves them like `waiting.css` (`Cache-Control: public, max-age=300`).
pub const ASSETS: [(&str, &str, &str); 2] = [
    (
        "assets/challenge.js",
        "text/javascript; charset=utf-8",
        CHALLENGE_JS,
    ),
    (
        "assets/pow-worker.js",
        "text/javascript; charset=utf-8",
        POW_WORKER_JS,
    ),
];

/// The parsed challenge page.
#[derive(Debug, Clone)]
pub struct ChallengePage {
    template: Template,
}

impl Default for ChallengePage {
    fn default() -> Self {
        Self {
            template: Template::parse(CHALLENGE_HTML),
        }
    }
}

/// Every placeholder the page may use.
pub const PLACEHOLDERS: [&str; 12] = [
    "title",
    "logo_url",
    "brand_color",
    "background_color",
    "asset_base",
    "room",
    "challenge",
    "difficulty",
    "expires_at_ms",
    "submit_url",
    "return_to",
    "expected_hashes",
];

impl ChallengePage {
    /// Placeholder names, for tests.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.template.vars()
    }

    /// The page for `challenge`. `return_to` is where to go once solved (the requested path
    /// and query; anything not same-site becomes `/`).
    pub fn render(&self, branding: &Branding, challenge: &Challenge, return_to: &str) -> String {
        let return_to = if safe_return_path(return_to) {
            return_to
        } else {
            "/"
        };
        self.template.render(|name| {
            let v: Cow<'_, str> = match name {
                "title" => Cow::Owned(branding.title.clone()),
                "logo_url" => Cow::Owned(branding.logo_url.clone()),
                "brand_color" => Cow::Owned(branding.brand_color.clone()),
                "background_color" => Cow::Owned(branding.background_color.clone()),
                "asset_base" => Cow::Borrowed("/.flashgate/assets"),
                "room" => Cow::Owned(challenge.room.clone()),
                "challenge" => Cow::Owned(challenge.token.clone()),
                "difficulty" => Cow::Owned(challenge.difficulty.to_string()),
                "expires_at_ms" => Cow::Owned(challenge.expires_at.0.to_string()),
                "submit_url" => Cow::Borrowed(SUBMIT_PATH),
                "return_to" => Cow::Owned(return_to.to_owned()),
                "expected_hashes" => Cow::Owned(format_count(1u64 << challenge.difficulty)),
                _ => return None,
            };
            Some(v)
        })
    }
}

/// `1234567` → `1,234,567`.
fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The answer to `POST /.flashgate/challenge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolutionResponse {
    pub status: u16,
    /// `application/json`.
    pub body: String,
    /// A `Set-Cookie` value for the challenge-passed token, on success.
    pub set_cookie: Option<String>,
    /// `Retry-After` seconds, when the client should wait.
    pub retry_after: Option<u64>,
}

/// Builds the answer: `200 {"ok":true,"redirect":"/drops/x"}` with the pass cookie, or
/// `4xx/5xx {"ok":false,"error":"expired","retry":true}` (`retry`: fetch a new challenge).
pub fn solution_response(
    result: &Result<Passed, ChallengeError>,
    return_to: Option<&str>,
    secure: bool,
) -> SolutionResponse {
    match result {
        Ok(p) => {
            let redirect = return_to.filter(|r| safe_return_path(r)).unwrap_or("/");
            SolutionResponse {
                status: 200,
                body: serde_json::json!({ "ok": true, "redirect": redirect, "token": p.token })
                    .to_string(),
                set_cookie: Some(p.set_cookie(secure)),
                retry_after: None,
            }
        }
        Err(e) => {
            let retry_after = match e.http_status() {
                429 => Some(10),
                503 => Some(2),
                _ => None,
            };
            SolutionResponse {
                status: e.http_status(),
                body: serde_json::json!({
                    "ok": false,
                    "error": e.as_str(),
                    "retry": e.retry_with_new_challenge(),
                })
                .to_string(),
                set_cookie: None,
                retry_after,
            }
        }
    }
}
