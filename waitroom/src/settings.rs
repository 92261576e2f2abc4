//! Validated room settings.
//!
//! The proxy's TOML layer converts its surface types into these; anything that reaches the core
//! is already valid (`NonZeroU32` rates, ordered event times, bounded durations). Validation
//! errors name the field relative to the room (`events[1].starts_at`), so the config layer can
//! prefix the file and the room (`config/sale.toml: rooms[0].events[1].starts_at: ...`).

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use crate::time::UnixMillis;

/// How waiting shoppers are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueingMethod {
    /// First come, first served (the pre-queue of an event is shuffled once at its start).
    Fifo,
    /// A lottery among everyone waiting at each draw (see [`crate::shuffle`]).
    Random,
    /// Nobody waits; arrivals are counted and get a pass.
    Passthrough,
    /// The sale is closed: everyone without a pass sees the closed page.
    Reject,
}

impl QueueingMethod {
    pub const ALL: [QueueingMethod; 4] =
        [Self::Fifo, Self::Random, Self::Passthrough, Self::Reject];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fifo => "fifo",
            Self::Random => "random",
            Self::Passthrough => "passthrough",
            Self::Reject => "reject",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Whether activity extends an admitted session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionMode {
    /// Each request renews the session (at most once a minute).
    Sliding,
    /// The session ends `session_duration` after admission, whatever the shopper does.
    Fixed,
}

/// A sale window with optional overrides of the room's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSettings {
    pub name: String,
    /// Stable id carried in tokens (FNV-1a of the name, never 0).
    pub id: u32,
    /// When the pre-queue opens (shoppers get a ticket and a countdown, nobody is admitted).
    pub prequeue_at: Option<UnixMillis>,
    pub starts_at: UnixMillis,
    pub ends_at: UnixMillis,
    /// Shuffle the pre-queue at the start (otherwise the pre-queue is FIFO).
    pub shuffle: bool,
    pub new_users_per_minute: Option<NonZeroU32>,
    pub total_active_users: Option<NonZeroU32>,
    pub session_duration: Option<Duration>,
    pub session_mode: Option<SessionMode>,
    pub method: Option<QueueingMethod>,
    pub message: Option<String>,
}

impl EventSettings {
    /// The sale window `name` from `starts_at` to `ends_at`, with a pre-queue from
    /// `prequeue_at` (shuffled at the start when `shuffle`), and none of the room's settings
    /// overridden.
    pub fn window(
        name: &str,
        prequeue_at: Option<UnixMillis>,
        starts_at: UnixMillis,
        ends_at: UnixMillis,
        shuffle: bool,
    ) -> Self {
        Self {
            name: name.to_owned(),
            id: Self::id_for(name),
            prequeue_at,
            starts_at,
            ends_at,
            shuffle,
            new_users_per_minute: None,
            total_active_users: None,
            session_duration: None,
            session_mode: None,
            method: None,
            message: None,
        }
    }

    /// The stable event id for a name.
    pub fn id_for(name: &str) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        for b in name.as_bytes() {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h.max(1)
    }
}

/// Everything the core needs to know about one room.
#[derive(Clone, PartialEq)]
pub struct RoomSettings {
    /// `[a-z0-9_-]{1,32}`: used in cookie names and store keys.
    pub id: String,
    pub new_users_per_minute: NonZeroU32,
    pub total_active_users: NonZeroU32,
    pub session_duration: Duration,
    pub session_mode: SessionMode,
    pub method: QueueingMethod,
    /// A waiting ticket that has not polled for this long loses its place.
    pub abandon_after: Duration,
    /// An admission not claimed within this window stops reserving capacity.
    pub claim_window: Duration,
    /// How often waiting clients are told to poll.
    pub poll_interval: Duration,
    /// Controller slice: the serving number advances at most once per slice.
    pub tick: Duration,
    /// Clock skew tolerated when checking token times.
    pub token_leeway: Duration,
    /// Upper bound of the no-show compensation: the release rate is at most
    /// `rate / (1 - max_noshow)`.
    pub max_noshow: f64,
    pub events: Vec<EventSettings>,
    pub message: Option<String>,
    /// Secret the shuffle seeds derive from (never shown).
    pub seed_secret: [u8; 32],
}

impl fmt::Debug for RoomSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomSettings")
            .field("id", &self.id)
            .field("new_users_per_minute", &self.new_users_per_minute)
            .field("total_active_users", &self.total_active_users)
            .field("session_duration", &self.session_duration)
            .field("session_mode", &self.session_mode)
            .field("method", &self.method)
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

/// A rule a [`RoomSettings`] broke: the field path (relative to the room) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SettingsError {
    pub field: String,
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Bounds enforced by [`RoomSettings::validate`].
pub mod limits {
    use std::time::Duration;
    pub const MIN_SESSION: Duration = Duration::from_secs(60);
    pub const MAX_SESSION: Duration = Duration::from_secs(24 * 3600);
    pub const MIN_POLL: Duration = Duration::from_secs(1);
    pub const MAX_POLL: Duration = Duration::from_secs(120);
    pub const MIN_TICK: Duration = Duration::from_millis(100);
    pub const MAX_TICK: Duration = Duration::from_secs(10);
    pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
    pub const MAX_EVENTS: usize = 64;
    pub const MAX_MESSAGE: usize = 1024;
}

/// Whether `id` is a valid room id.
pub fn valid_room_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl RoomSettings {
    /// Settings with sensible defaults for everything but the two numbers.
    pub fn new(id: &str, new_users_per_minute: NonZeroU32, total_active_users: NonZeroU32) -> Self {
        Self {
            id: id.to_owned(),
            new_users_per_minute,
            total_active_users,
            session_duration: Duration::from_secs(10 * 60),
            session_mode: SessionMode::Sliding,
            method: QueueingMethod::Fifo,
            abandon_after: Duration::from_secs(120),
            claim_window: Duration::from_secs(60),
            poll_interval: Duration::from_secs(5),
            tick: Duration::from_secs(1),
            token_leeway: Duration::from_secs(5),
            max_noshow: 0.5,
            events: Vec::new(),
            message: None,
            seed_secret: [0u8; 32],
        }
    }

    /// Checks every rule; the first broken one is returned.
    pub fn validate(&self) -> Result<(), SettingsError> {
        use limits::*;
        if !valid_room_id(&self.id) {
            return Err(err("id", "must be 1-32 characters of a-z, 0-9, '-' or '_'"));
        }
        let session = |field: &str, d: Duration| {
            if d < MIN_SESSION || d > MAX_SESSION {
                Err(err(field, "must be between 1 minute and 24 hours"))
            } else {
                Ok(())
            }
        };
        session("session_duration", self.session_duration)?;
        if self.poll_interval < MIN_POLL || self.poll_interval > MAX_POLL {
            return Err(err("poll_interval", "must be between 1 s and 120 s"));
        }
        if self.abandon_after < self.poll_interval * 3 {
            return Err(err(
                "abandon_after",
                "must be at least 3 poll intervals, or shoppers who poll on time lose their place",
            ));
        }
        if self.claim_window < self.poll_interval * 2 {
            return Err(err(
                "claim_window",
                "must be at least 2 poll intervals, or admitted shoppers miss their turn",
            ));
        }
        if self.tick < MIN_TICK || self.tick > MAX_TICK {
            return Err(err("tick", "must be between 100 ms and 10 s"));
        }
        if self.token_leeway > MAX_LEEWAY {
            return Err(err("token_leeway", "must be at most 5 minutes"));
        }
        if !(0.0..=0.9).contains(&self.max_noshow) {
            return Err(err("max_noshow", "must be between 0.0 and 0.9"));
        }
        if self.message.as_ref().is_some_and(|m| m.len() > MAX_MESSAGE) {
            return Err(err("message", "must be at most 1024 bytes"));
        }
        if self.events.len() > MAX_EVENTS {
            return Err(err("events", "at most 64 events per room"));
        }
        for (i, e) in self.events.iter().enumerate() {
            let f = |name: &str| format!("events[{i}].{name}");
            if e.name.is_empty() {
                return Err(err(f("name"), "must not be empty"));
            }
            if self.events[..i].iter().any(|o| o.id == e.id) {
                return Err(err(f("name"), "must be unique in the room"));
            }
            if e.ends_at <= e.starts_at {
                return Err(err(f("ends_at"), "must be after starts_at"));
            }
            if let Some(p) = e.prequeue_at {
                if p >= e.starts_at {
                    return Err(err(f("prequeue_at"), "must be before starts_at"));
                }
            }
            if e.shuffle && e.prequeue_at.is_none() {
                return Err(err(
                    f("shuffle"),
                    "needs prequeue_at: only a pre-queue is shuffled",
                ));
            }
            if let Some(d) = e.session_duration {
                session(&f("session_duration"), d)?;
            }
            if e.message.as_ref().is_some_and(|m| m.len() > MAX_MESSAGE) {
                return Err(err(f("message"), "must be at most 1024 bytes"));
            }
            let open = e.prequeue_at.unwrap_or(e.starts_at);
            for (j, o) in self.events[..i].iter().enumerate() {
                let o_open = o.prequeue_at.unwrap_or(o.starts_at);
                if open < o.ends_at && o_open < e.ends_at {
                    return Err(err(f("starts_at"), format!("overlaps events[{j}]")));
                }
            }
        }
        Ok(())
    }

    /// The event whose window (pre-queue to end) contains `now`.
    pub fn event_at(&self, now: UnixMillis) -> Option<&EventSettings> {
        self.events
            .iter()
            .find(|e| e.prequeue_at.unwrap_or(e.starts_at) <= now && now < e.ends_at)
    }

    /// The next event that has not ended.
    pub fn next_event(&self, now: UnixMillis) -> Option<&EventSettings> {
        self.events
            .iter()
            .filter(|e| now < e.ends_at)
            .min_by_key(|e| e.starts_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    fn event(name: &str, pre: Option<u64>, start: u64, end: u64) -> EventSettings {
        let (starts_at, ends_at) = (UnixMillis::from_secs(start), UnixMillis::from_secs(end));
        let prequeue_at = pre.map(UnixMillis::from_secs);
        EventSettings::window(name, prequeue_at, starts_at, ends_at, pre.is_some())
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(
            RoomSettings::new("drop", nz(60), nz(500)).validate(),
            Ok(())
        );
    }

    /// One bad value per rule, each with its field path.
    #[test]
    fn each_rule_names_its_field() {
        let base = RoomSettings::new("drop", nz(60), nz(500));
        type Mutation = Box<dyn Fn(&mut RoomSettings)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.id = "Drop!".into()), "id"),
            (
                Box::new(|s| s.session_duration = Duration::from_secs(5)),
                "session_duration",
            ),
            (
                Box::new(|s| s.poll_interval = Duration::ZERO),
                "poll_interval",
            ),
            (
                Box::new(|s| s.abandon_after = Duration::from_secs(6)),
                "abandon_after",
            ),
            (
                Box::new(|s| s.claim_window = Duration::from_secs(6)),
                "claim_window",
            ),
            (Box::new(|s| s.tick = Duration::from_secs(60)), "tick"),
            (
                Box::new(|s| s.token_leeway = Duration::from_secs(600)),
                "token_leeway",
            ),
            (Box::new(|s| s.max_noshow = 1.5), "max_noshow"),
            (Box::new(|s| s.message = Some("x".repeat(2000))), "message"),
            (
                Box::new(|s| s.events = vec![event("", None, 10, 20)]),
                "events[0].name",
            ),
            (
                Box::new(|s| s.events = vec![event("a", None, 20, 20)]),
                "events[0].ends_at",
            ),
            (
                Box::new(|s| s.events = vec![event("a", Some(30), 20, 40)]),
                "events[0].prequeue_at",
            ),
            (
                Box::new(|s| {
                    let mut e = event("a", None, 20, 40);
                    e.shuffle = true;
                    s.events = vec![e];
                }),
                "events[0].shuffle",
            ),
            (
                Box::new(|s| s.events = vec![event("a", None, 10, 40), event("a", None, 50, 60)]),
                "events[1].name",
            ),
            (
                Box::new(|s| {
                    s.events = vec![event("a", None, 10, 40), event("b", Some(30), 50, 60)]
                }),
                "events[1].starts_at",
            ),
        ];
        for (mutate, field) in cases {
            let mut s = base.clone();
            mutate(&mut s);
            let e = s.validate().expect_err(field);
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn method_names_round_trip() {
        for m in QueueingMethod::ALL {
            assert_eq!(QueueingMethod::parse(m.as_str()), Some(m));
        }
        assert_eq!(QueueingMethod::parse("lifo"), None);
    }

    #[test]
    fn event_lookup() {
        let mut s = RoomSettings::new("drop", nz(60), nz(500));
        s.events = vec![event("a", Some(100), 200, 300), event("b", None, 400, 500)];
        assert_eq!(s.event_at(UnixMillis::from_secs(99)), None);
        assert_eq!(
            s.event_at(UnixMillis::from_secs(100))
                .map(|e| e.name.as_str()),
            Some("a")
        );
        assert_eq!(s.event_at(UnixMillis::from_secs(300)), None);
        assert_eq!(
            s.next_event(UnixMillis::from_secs(300))
                .map(|e| e.name.as_str()),
            Some("b")
        );
    }
}
