//! The event schema, version 1 (`"v": 1`), as the types that produce it.
//!
//! A serialized event is one flat JSON object: the envelope (`v`, `id`, `time`, `unix_ms`,
//! `node`, `room`, `ticket`), then `kind` and the fields of that kind. `docs/events.md` shows an
//! example of every kind. Adding an optional field is a compatible change; renaming or removing
//! a field, or changing its meaning, bumps `v`.
//!
//! Free text that reaches an event (a shopper's feedback comment, an operator's room message)
//! goes through [`clean_text`]: control and bidi characters are removed, whitespace collapsed,
//! length bounded, and anything shaped like a token (a long run of base64url characters) is
//! replaced by `[redacted]`. The types make that unavoidable: [`Comment`] and [`Text`] can only be
//! built through it. No event carries a token, a key or the admin bearer token (see
//! [`Actor::admin`]).

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use waitroom::{Overrides, UnixMillis};

/// The version of the JSON schema this module writes.
pub const SCHEMA_VERSION: u8 = 1;

/// Longest feedback comment accepted, in characters (after cleaning).
pub const MAX_COMMENT_CHARS: usize = 500;

/// Longest room message carried in a `room_state_changed` event, in characters.
pub const MAX_TEXT_CHARS: usize = 1024;

/// A run of at least this many base64url characters is treated as a possible token.
pub const TOKEN_RUN: usize = 32;

/// What the gate hands to [`super::Events::emit`]; the module adds id, time and node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The room id (from the config: `a-z0-9-_`, at most 32 bytes).
    pub room: Arc<str>,
    /// The shopper's ticket number, where there is one.
    pub ticket: Option<u64>,
    pub kind: EventKind,
}

impl Event {
    /// An event about `room` (pass an `Arc<str>` to share the room's id instead of copying it).
    pub fn new(room: impl Into<Arc<str>>, kind: EventKind) -> Self {
        Self {
            room: room.into(),
            ticket: None,
            kind,
        }
    }

    /// The same event about ticket `number`.
    #[must_use]
    pub fn with_ticket(mut self, number: u64) -> Self {
        self.ticket = Some(number);
        self
    }
}

/// What happened. Serialized as `"kind": "<snake_case name>"` plus the variant's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A new arrival got a place in line. `serving` is the serving number at that moment, so
    /// `ticket - serving` is roughly how many were ahead.
    TicketIssued { serving: u64 },
    /// The ticket's turn came and its claim succeeded: a pass was minted and the shopper went
    /// in. In Flashgate admission and pass claim are one atomic step (the store's claim), so
    /// this is also "pass claimed". At most once per ticket.
    Admitted {
        /// From ticket issue to entry.
        waited_ms: u64,
    },
    /// An admitted shopper's session ended.
    SessionEnded { reason: EndReason },
    /// A place in line was given up.
    Abandoned { reason: AbandonReason },
    /// A bot challenge was answered wrongly (or too late, or twice).
    ChallengeFailed { reason: ChallengeFailure },
    /// A live room setting changed. `before` / `after` are a bool, a number (or `null` when
    /// the config's value applies again) or a string (or `null`), matching `what`.
    ///
    /// The values are boxed: a room changes a few times a sale, a ticket is issued per shopper,
    /// and every event is moved through the hand-off buffer at the size of the largest kind.
    RoomStateChanged {
        what: Setting,
        before: Box<SettingValue>,
        after: Box<SettingValue>,
        by: Actor,
    },
    /// A shopper rated the wait.
    Feedback {
        rating: Rating,
        comment: Option<Comment>,
    },
}

impl EventKind {
    /// The `kind` field: also the Redis stream entry's `kind` field and the metrics label.
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }

    /// The kind's place in [`Self::NAMES`] (counters are kept per kind in that order).
    pub fn index(&self) -> usize {
        match self {
            Self::TicketIssued { .. } => 0,
            Self::Admitted { .. } => 1,
            Self::SessionEnded { .. } => 2,
            Self::Abandoned { .. } => 3,
            Self::ChallengeFailed { .. } => 4,
            Self::RoomStateChanged { .. } => 5,
            Self::Feedback { .. } => 6,
        }
    }

    /// Every kind name, for metrics and documentation.
    pub const NAMES: [&'static str; 7] = [
        "ticket_issued",
        "admitted",
        "session_ended",
        "abandoned",
        "challenge_failed",
        "room_state_changed",
        "feedback",
    ];

    /// `Admitted` for a ticket issued at `issued_at_secs` (the ticket's `issued_at`), now.
    pub fn admitted(issued_at_secs: u64, now: UnixMillis) -> Self {
        Self::Admitted {
            waited_ms: now.since(UnixMillis::from_secs(issued_at_secs)).as_millis() as u64,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `POST /.flashgate/leave` with a pass.
    Leave,
    /// The pass expired (observed when an expired pass is presented).
    Expiry,
    /// The origin sent `X-Flashgate-Command: revoke`.
    Revoke,
}

/// Why a place in line was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbandonReason {
    /// `POST /.flashgate/leave` with a ticket.
    Left,
    /// The ticket was not renewed within `abandon_after` (observed when it comes back).
    Expired,
}

/// Why a challenge answer was refused (the shopper's side of it; server trouble is not an
/// event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeFailure {
    /// The proof of work does not meet the difficulty.
    WrongSolution,
    /// The challenge was answered after it expired.
    Expired,
    /// A solution that was already used.
    Replayed,
    /// The challenge's signature does not verify.
    Forged,
    /// The challenge was issued to another client.
    WrongClient,
    /// Unparseable, or for another room.
    Malformed,
}

impl ChallengeFailure {
    /// The event for a refused answer, if the refusal is about the answer (not about this
    /// node's replay store or rate limits).
    pub fn from_bot(e: crate::bot::ChallengeError) -> Option<Self> {
        use crate::bot::ChallengeError as E;
        match e {
            E::InsufficientWork => Some(Self::WrongSolution),
            E::Expired => Some(Self::Expired),
            E::Replayed => Some(Self::Replayed),
            E::Forged => Some(Self::Forged),
            E::WrongClient => Some(Self::WrongClient),
            E::Malformed | E::WrongRoom => Some(Self::Malformed),
            E::ReplayCacheFull | E::ReplayStoreError | E::Limited => None,
        }
    }
}

/// The live room setting a `room_state_changed` event is about (the admin PATCH field names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    Paused,
    QueueAll,
    Drain,
    SoldOut,
    /// The admission rate.
    NewUsersPerMinute,
    /// The capacity.
    TotalActiveUsers,
    Message,
}

/// The value of a [`Setting`] before or after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SettingValue {
    Flag(bool),
    /// `None`: no override, the config's value applies.
    Number(Option<u32>),
    Text(Option<Text>),
}

/// Who changed a room: serialized as `"admin:<fingerprint>"`, `"admin"`, `"origin"` or
/// `"config"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The admin API. The fingerprint is the first 6 bytes of SHA-256 of the bearer token, in
    /// hex: it tells tokens apart after a rotation without revealing them. `None` when the
    /// admin API has no token (loopback only).
    Admin(Option<[u8; 6]>),
    /// The origin, through `X-Flashgate-Command`.
    Origin,
    /// A config load or reload.
    Config,
}

impl Actor {
    /// The admin API, identified by the token the request was authorized with (if any).
    pub fn admin(token: Option<&str>) -> Self {
        Self::Admin(token.map(|t| {
            let d = ring::digest::digest(&ring::digest::SHA256, t.as_bytes());
            let mut fp = [0u8; 6];
            fp.copy_from_slice(&d.as_ref()[..6]);
            fp
        }))
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admin(None) => f.write_str("admin"),
            Self::Admin(Some(fp)) => {
                f.write_str("admin:")?;
                fp.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Self::Origin => f.write_str("origin"),
            Self::Config => f.write_str("config"),
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A feedback rating, 1 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Rating(u8);

impl Rating {
    pub fn new(n: u8) -> Option<Self> {
        (1..=5).contains(&n).then_some(Self(n))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// A cleaned feedback comment (see [`clean_text`]), at most [`MAX_COMMENT_CHARS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Comment(String);

impl Comment {
    /// Cleans `raw`; `Ok(None)` when nothing is left, `Err` when it is too long.
    pub fn new(raw: &str) -> Result<Option<Self>, FeedbackError> {
        let s = clean_text(raw);
        if s.chars().count() > MAX_COMMENT_CHARS {
            return Err(FeedbackError::CommentTooLong);
        }
        Ok((!s.is_empty()).then_some(Self(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Cleaned free text (see [`clean_text`]), cut to [`MAX_TEXT_CHARS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Text(String);

impl Text {
    pub fn new(raw: &str) -> Self {
        Self(clean_text(raw).chars().take(MAX_TEXT_CHARS).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Makes free text safe to publish: drops control, format and bidi characters, collapses
/// whitespace, trims, and replaces token-shaped runs (≥ [`TOKEN_RUN`] base64url characters) by
/// `[redacted]`, so a pasted cookie or bearer token never reaches the stream.
pub fn clean_text(raw: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in raw.chars() {
        if c.is_whitespace() || c.is_control() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        } else if !is_invisible(c) {
            word.push(c);
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = String::new();
    for w in words {
        if !out.is_empty() {
            out.push(' ');
        }
        redact_into(&mut out, &w);
    }
    out
}

/// Zero-width and bidi formatting characters (they can disguise text on a dashboard).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

fn is_b64url(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Appends `word` with every run of ≥ TOKEN_RUN base64url characters (counting through `.`,
/// `/` and `+`, as in JWTs and standard base64) replaced by `[redacted]`.
fn redact_into(out: &mut String, word: &str) {
    let mut run = String::new();
    let flush = |out: &mut String, run: &mut String| {
        let core = run.chars().filter(|c| is_b64url(*c)).count();
        if core >= TOKEN_RUN {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in word.chars() {
        if is_b64url(c) || matches!(c, '.' | '/' | '+') {
            run.push(c);
        } else {
            flush(out, &mut run);
            out.push(c);
        }
    }
    flush(out, &mut run);
}

/// A feedback submission that cannot be accepted (the endpoint answers 400 with the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    #[error("rating must be an integer from 1 to 5")]
    Rating,
    #[error("comment must be at most 500 characters")]
    CommentTooLong,
    #[error(
        "body must be JSON {{\"rating\": 1-5, \"comment\": \"...\"}} or a form with rating and \
         comment, at most 4096 bytes"
    )]
    Body,
}

/// Largest feedback body accepted.
pub const MAX_FEEDBACK_BODY: usize = 4096;

/// Parses a `POST /.flashgate/feedback` body: JSON (`application/json`) or a form
/// (`application/x-www-form-urlencoded`, also the default), with `rating` (1-5) and an optional
/// `comment`.
pub fn parse_feedback(content_type: Option<&str>, body: &[u8]) -> Result<EventKind, FeedbackError> {
    if body.len() > MAX_FEEDBACK_BODY {
        return Err(FeedbackError::Body);
    }
    let is_json = content_type.is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    let (rating, comment) = if is_json {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| FeedbackError::Body)?;
        let obj = v.as_object().ok_or(FeedbackError::Body)?;
        if obj.keys().any(|k| k != "rating" && k != "comment") {
            return Err(FeedbackError::Body);
        }
        let rating = obj
            .get("rating")
            .and_then(serde_json::Value::as_u64)
            .ok_or(FeedbackError::Rating)?;
        let comment = match obj.get("comment") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(FeedbackError::Body),
        };
        (rating, comment)
    } else {
        let text = std::str::from_utf8(body).map_err(|_| FeedbackError::Body)?;
        let form = Some(text.trim());
        let rating = crate::http_util::query_param(form, "rating")
            .and_then(|r| r.trim().parse::<u64>().ok())
            .ok_or(FeedbackError::Rating)?;
        let comment = crate::http_util::query_param(form, "comment").map(|c| c.into_owned());
        (rating, comment)
    };
    let rating = u8::try_from(rating)
        .ok()
        .and_then(Rating::new)
        .ok_or(FeedbackError::Rating)?;
    let comment = match comment {
        Some(c) => Comment::new(&c)?,
        None => None,
    };
    Ok(EventKind::Feedback { rating, comment })
}

/// One `room_state_changed` kind per setting that differs between `before` and `after`.
pub fn room_changes(before: &Overrides, after: &Overrides, by: &Actor) -> Vec<EventKind> {
    let mut out = Vec::new();
    let mut push = |what, b: SettingValue, a: SettingValue| {
        if a != b {
            out.push(EventKind::RoomStateChanged {
                what,
                before: Box::new(b),
                after: Box::new(a),
                by: by.clone(),
            });
        }
    };
    use SettingValue::{Flag, Number};
    push(Setting::Paused, Flag(before.paused), Flag(after.paused));
    push(
        Setting::QueueAll,
        Flag(before.queue_all),
        Flag(after.queue_all),
    );
    push(Setting::Drain, Flag(before.drain), Flag(after.drain));
    push(
        Setting::SoldOut,
        Flag(before.sold_out),
        Flag(after.sold_out),
    );
    push(
        Setting::NewUsersPerMinute,
        Number(before.new_users_per_minute),
        Number(after.new_users_per_minute),
    );
    push(
        Setting::TotalActiveUsers,
        Number(before.total_active_users),
        Number(after.total_active_users),
    );
    let text = |m: &Option<String>| SettingValue::Text(m.as_deref().map(Text::new));
    push(
        Setting::Message,
        text(&before.message),
        text(&after.message),
    );
    out
}
