//! The shopper-facing pages and the status JSON.
//!
//! Templates in `static/` are compiled into the binary and parsed once into literal and
//! placeholder segments; rendering escapes every value (merchant strings included), so a room
//! message of `<script>` shows as text.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use waitroom::shuffle::hex;
use waitroom::{RoomState, WaitInfo};

use crate::http_util::{escape_html, percent_encode};

/// Page branding (validated by [`crate::config`]: colours are hex, URLs relative or https).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branding {
    pub title: String,
    pub logo_url: String,
    pub brand_color: String,
    pub background_color: String,
}

pub const WAITING_HTML: &str = include_str!("../../static/waiting.html");
pub const CLOSED_HTML: &str = include_str!("../../static/closed.html");
pub const ERROR_HTML: &str = include_str!("../../static/error.html");
pub const WAITING_CSS: &str = include_str!("../../static/waiting.css");
pub const WAITING_JS: &str = include_str!("../../static/waiting.js");

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Lit(String),
    Var(String),
}

/// A template with `{{name}}` placeholders, parsed once.
#[derive(Debug, Clone)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    pub fn parse(src: &str) -> Self {
        let mut segments = Vec::new();
        let mut rest = src;
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start + 2..].find("}}") else {
                break;
            };
            segments.push(Segment::Lit(rest[..start].to_owned()));
            segments.push(Segment::Var(
                rest[start + 2..start + 2 + len].trim().to_owned(),
            ));
            rest = &rest[start + 2 + len + 2..];
        }
        segments.push(Segment::Lit(rest.to_owned()));
        Self { segments }
    }

    /// Placeholder names, for tests.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(v) => Some(v.as_str()),
            Segment::Lit(_) => None,
        })
    }

    /// Renders with `value(name)`, HTML-escaping every value. Unknown names render empty.
    pub fn render<'a>(&self, value: impl Fn(&str) -> Option<std::borrow::Cow<'a, str>>) -> String {
        let mut out = String::with_capacity(8 * 1024);
        for s in &self.segments {
            match s {
                Segment::Lit(l) => out.push_str(l),
                Segment::Var(v) => {
                    if let Some(val) = value(v) {
                        out.push_str(&escape_html(&val));
                    }
                }
            }
        }
        out
    }
}

/// All templates, parsed.
#[derive(Debug, Clone)]
pub struct Pages {
    pub waiting: Template,
    pub closed: Template,
    pub error: Template,
}

impl Default for Pages {
    fn default() -> Self {
        Self {
            waiting: Template::parse(WAITING_HTML),
            closed: Template::parse(CLOSED_HTML),
            error: Template::parse(ERROR_HTML),
        }
    }
}

/// Human wording of an ETA band, e.g. "about 4–6 minutes".
pub fn eta_text(low: Duration, high: Duration) -> String {
    let (lo, hi) = (low.as_secs(), high.as_secs());
    if hi < 60 {
        return "less than a minute".into();
    }
    let fmt = |s: u64| -> (u64, &'static str) {
        if s >= 2 * 3600 {
            (s.div_ceil(3600), "hours")
        } else {
            (s.div_ceil(60).max(1), "minutes")
        }
    };
    let (a, ua) = fmt(lo.max(60));
    let (b, ub) = fmt(hi);
    if a == b && ua == ub {
        format!("about {a} {ua}")
    } else if ua == ub {
        format!("about {a}–{b} {ub}")
    } else {
        format!("about {a} {ua} – {b} {ub}")
    }
}

/// The JSON a waiting client polls (and the SSE stream sends).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub room: String,
    pub state: &'static str,
    pub ticket: Option<u64>,
    pub position: Option<u64>,
    pub ahead: Option<u64>,
    /// The room's serving number: positions up to it may enter.
    pub serving: u64,
    pub eta_seconds: Option<u64>,
    pub eta_low_seconds: Option<u64>,
    pub eta_high_seconds: Option<u64>,
    pub poll_after_ms: u64,
    pub starts_at: Option<String>,
    pub message: Option<String>,
    pub seed_hash: Option<String>,
    pub seed: Option<String>,
    pub prequeue_count: Option<u64>,
    pub progress: Option<f64>,
    pub admitted: bool,
    pub redirect: Option<String>,
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

impl Status {
    /// Status of a waiting ticket.
    pub fn waiting(room: &str, w: &WaitInfo) -> Self {
        Self {
            room: room.to_owned(),
            state: w.state.as_str(),
            ticket: Some(w.ticket),
            position: w.position,
            ahead: w.ahead,
            serving: w.serving,
            eta_seconds: w.eta.map(|e| e.mid.as_secs()),
            eta_low_seconds: w.eta.map(|e| e.low.as_secs()),
            eta_high_seconds: w.eta.map(|e| e.high.as_secs()),
            poll_after_ms: w.poll_after.as_millis() as u64,
            starts_at: w.starts_at.map(|t| rfc3339(t.0)),
            message: w.message.clone(),
            seed_hash: w.seed_hash.map(|h| hex(&h)),
            seed: w.seed.map(|s| hex(&s)),
            prequeue_count: w.prequeue_count,
            progress: w.progress,
            admitted: false,
            redirect: None,
        }
    }

    /// Status without a ticket (or with one whose turn has come).
    pub fn bare(
        room: &str,
        state: RoomState,
        serving: u64,
        poll_after: Duration,
        message: Option<String>,
    ) -> Self {
        Self {
            room: room.to_owned(),
            state: state.as_str(),
            ticket: None,
            position: None,
            ahead: None,
            serving,
            eta_seconds: None,
            eta_low_seconds: None,
            eta_high_seconds: None,
            poll_after_ms: poll_after.as_millis() as u64,
            starts_at: None,
            message,
            seed_hash: None,
            seed: None,
            prequeue_count: None,
            progress: None,
            admitted: false,
            redirect: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// Headline for each state.
pub fn headline(state: RoomState) -> &'static str {
    match state {
        RoomState::Idle => "You're almost in",
        RoomState::Prequeue => "The sale starts soon",
        RoomState::Queueing => "You're in line",
        RoomState::Paused => "The line is paused",
        RoomState::QueueAll => "The shop is very busy",
        RoomState::Draining => "The sale is ending",
        RoomState::SoldOut => "Sold out",
        RoomState::Closed => "The sale has closed",
    }
}

/// What the waiting page needs besides the status.
#[derive(Debug)]
pub struct WaitingPage<'a> {
    pub room: &'a str,
    pub branding: &'a Branding,
    pub status: &'a Status,
    pub return_to: &'a str,
}

impl Pages {
    pub fn render_waiting(&self, p: &WaitingPage<'_>) -> String {
        use std::borrow::Cow;
        let s = p.status;
        let refresh = (s.poll_after_ms / 1000).clamp(2, 60);
        let room_q = format!("?room={}", p.room);
        let progress = s.progress.map_or(0, |v| (v * 100.0).round() as u64);
        let eta = match (s.eta_low_seconds, s.eta_high_seconds) {
            (Some(lo), Some(hi)) => eta_text(Duration::from_secs(lo), Duration::from_secs(hi)),
            _ => "not known yet".into(),
        };
        let opt = |v: Option<u64>| v.map_or_else(|| "–".to_owned(), |n| n.to_string());
        self.waiting.render(|name| {
            let v: Cow<'_, str> = match name {
                "title" => Cow::Owned(p.branding.title.clone()),
                "room" => Cow::Owned(p.room.to_owned()),
                "logo_url" => Cow::Owned(p.branding.logo_url.clone()),
                "brand_color" => Cow::Owned(p.branding.brand_color.clone()),
                "background_color" => Cow::Owned(p.branding.background_color.clone()),
                "state" => Cow::Borrowed(s.state),
                "headline" => Cow::Borrowed(headline_str(s.state)),
                "message" => Cow::Owned(s.message.clone().unwrap_or_default()),
                "position" => Cow::Owned(opt(s.position)),
                "ahead" => Cow::Owned(opt(s.ahead)),
                "eta_text" => Cow::Owned(eta.clone()),
                "progress_percent" => Cow::Owned(progress.to_string()),
                "starts_at_iso" => Cow::Owned(s.starts_at.clone().unwrap_or_default()),
                "refresh_seconds" => Cow::Owned(refresh.to_string()),
                "status_url" => Cow::Owned(format!("/.flashgate/status{room_q}")),
                "events_url" => Cow::Owned(format!("/.flashgate/events{room_q}")),
                "leave_url" => Cow::Owned(format!("/.flashgate/leave{room_q}")),
                // The form's 303 comes back to this page (see `gate::feedback`).
                "feedback_url" => Cow::Owned(format!(
                    "/.flashgate/feedback{room_q}&return={}",
                    percent_encode(p.return_to)
                )),
                "return_to" => Cow::Owned(p.return_to.to_owned()),
                "asset_base" => Cow::Borrowed("/.flashgate/assets"),
                "seed_hash" => Cow::Owned(s.seed_hash.clone().unwrap_or_default()),
                "prequeue_count" => Cow::Owned(opt(s.prequeue_count)),
                _ => return None,
            };
            Some(v)
        })
    }

    /// The closed / sold-out page.
    pub fn render_closed(&self, branding: &Branding, headline: &str, message: &str) -> String {
        self.closed
            .render(|name| brand_var(branding, name, headline, message, 0))
    }

    /// The branded "shop is busy" page for 502/503.
    pub fn render_error(
        &self,
        branding: &Branding,
        headline: &str,
        message: &str,
        retry: u64,
    ) -> String {
        self.error
            .render(|name| brand_var(branding, name, headline, message, retry))
    }
}

fn headline_str(state: &str) -> &'static str {
    RoomState::ALL
        .into_iter()
        .find(|s| s.as_str() == state)
        .map_or("You're in line", headline)
}

fn brand_var<'a>(
    b: &Branding,
    name: &str,
    headline: &str,
    message: &str,
    retry: u64,
) -> Option<std::borrow::Cow<'a, str>> {
    let mut s = String::new();
    match name {
        "title" => s.push_str(&b.title),
        "headline" => s.push_str(headline),
        "message" => s.push_str(message),
        "brand_color" => s.push_str(&b.brand_color),
        "background_color" => s.push_str(&b.background_color),
        "logo_url" => s.push_str(&b.logo_url),
        "asset_base" => s.push_str("/.flashgate/assets"),
        "retry_seconds" => {
            let _ = write!(s, "{retry}");
        }
        _ => return None,
    }
    Some(std::borrow::Cow::Owned(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn branding() -> Branding {
        Branding {
            title: "Aurora <Beauty>".into(),
            logo_url: String::new(),
            brand_color: "#112233".into(),
            background_color: "#ffffff".into(),
        }
    }

    #[test]
    fn every_placeholder_is_known() {
        let known = [
            "title",
            "room",
            "logo_url",
            "brand_color",
            "background_color",
            "state",
            "headline",
            "message",
            "position",
            "ahead",
            "eta_text",
            "progress_percent",
            "starts_at_iso",
            "refresh_seconds",
            "status_url",
            "events_url",
            "leave_url",
            "feedback_url",
            "return_to",
            "asset_base",
            "seed_hash",
            "prequeue_count",
            "retry_seconds",
        ];
        let pages = Pages::default();
        for t in [&pages.waiting, &pages.closed, &pages.error] {
            for v in t.vars() {
                assert!(known.contains(&v), "unknown placeholder {v}");
            }
        }
    }

    #[test]
    fn merchant_strings_are_escaped() {
        let pages = Pages::default();
        let mut st = Status::bare("drop", RoomState::Queueing, 0, Duration::from_secs(5), None);
        st.message = Some("<script>alert(1)</script>".into());
        let html = pages.render_waiting(&WaitingPage {
            room: "drop",
            branding: &branding(),
            status: &st,
            return_to: "/drops/\"><script>",
        });
        assert!(!html.contains("<script>alert(1)"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("Aurora &lt;Beauty&gt;"));
        assert!(!html.contains("\"><script>"));
        assert!(
            html.contains(
                "action=\"/.flashgate/feedback?room=drop&amp;return=/drops/%22%3E%3Cscript%3E\""
            ),
            "the feedback form comes back to the page, encoded"
        );
        assert!(!html.contains("{{"), "all placeholders filled");
        let closed = pages.render_closed(&branding(), "Sold out", "<b>bye</b>");
        assert!(closed.contains("&lt;b&gt;bye"));
    }

    #[test]
    fn eta_wording() {
        let s = Duration::from_secs;
        assert_eq!(eta_text(s(10), s(50)), "less than a minute");
        assert_eq!(eta_text(s(200), s(230)), "about 4 minutes");
        assert_eq!(eta_text(s(200), s(350)), "about 4–6 minutes");
        assert_eq!(eta_text(s(3 * 3600), s(4 * 3600)), "about 3–4 hours");
    }
}
