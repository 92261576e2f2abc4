//! Validated bot-defence settings: per room ([`BotSettings`], from `[rooms.bot]`) and per node
//! ([`BotGlobal`], from `[bot]`). Built only by `config` (which names the offending key on
//! error); every value here is already in range.

use std::num::NonZeroU32;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;

/// Lowest and highest challenge difficulty (leading zero bits of SHA-256). 28 bits is ~268
/// million hashes on average: minutes on a phone, which is already more than any shopper
/// should be asked for.
pub const MIN_DIFFICULTY: u8 = 1;
pub const MAX_DIFFICULTY: u8 = 28;

/// Score points per extra difficulty bit for a suspicious client (score 40 → +2 bits).
pub const POINTS_PER_BIT: u32 = 20;

/// What the engine does with its verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// No checks at all (the default: existing rooms behave exactly as before).
    #[default]
    Off,
    /// Score, count and record what would have happened; always allow.
    Shadow,
    /// Act on the verdicts.
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Shadow => "shadow",
            Self::Enforce => "enforce",
        }
    }
}

/// When a new arrival must solve a proof-of-work challenge before it gets a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChallengeMode {
    /// Never (scores still lead to tarpit or block).
    Off,
    /// When the score reaches `challenge_at`, or while joins exceed the pressure threshold.
    #[default]
    Suspicious,
    /// Every new arrival.
    Always,
}

/// What a challenge and its "challenge passed" token are tied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassBinding {
    /// A solved challenge works from anywhere (farms can share one solution).
    None,
    /// The exact `User-Agent`.
    UserAgent,
    /// The client's /24 (IPv4) or /64 (IPv6).
    #[default]
    IpPrefix,
}

/// GCRA limits; `None` disables a limit (config value 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// New arrivals (requests without ticket or pass) per client address per minute.
    pub joins_per_minute_per_ip: Option<NonZeroU32>,
    /// Status polls / event-stream connects per ticket per minute.
    pub polls_per_minute_per_ticket: Option<NonZeroU32>,
    /// Requests per client address per minute on the room's routes (any credential).
    pub requests_per_minute_per_ip: Option<NonZeroU32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            joins_per_minute_per_ip: NonZeroU32::new(30),
            polls_per_minute_per_ticket: NonZeroU32::new(60),
            requests_per_minute_per_ip: NonZeroU32::new(600),
        }
    }
}

/// Score thresholds and the parameters of the counting signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Score from which a new arrival is challenged (challenge mode `suspicious`).
    pub challenge_at: u32,
    /// Score from which a client is tarpitted (waits forever, never admitted).
    pub tarpit_at: u32,
    /// Score from which a client is refused (403).
    pub block_at: u32,
    /// Join attempts from one /24 or /64 within `prefix_window` that count as "many".
    /// `None` disables the signal.
    pub tickets_per_prefix: Option<NonZeroU32>,
    pub prefix_window: Duration,
    /// Distinct /24 or /64 prefixes one ticket or pass may be seen from before it counts as
    /// shared.
    pub addresses_per_token: u8,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            challenge_at: 30,
            tarpit_at: 60,
            block_at: 100,
            tickets_per_prefix: NonZeroU32::new(200),
            prefix_window: Duration::from_secs(600),
            addresses_per_token: 5,
        }
    }
}

/// A room's bot defence (`[rooms.bot]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotSettings {
    pub mode: Mode,
    pub challenge: ChallengeMode,
    /// Base difficulty in leading zero bits.
    pub difficulty: u8,
    /// Ceiling for automatic raises (suspicion, join pressure).
    pub max_difficulty: u8,
    /// How long an issued challenge may be solved and submitted.
    pub challenge_ttl: Duration,
    /// How long a solved challenge spares the client another one (`fg_c_<room>`).
    pub pass_ttl: Duration,
    pub pass_binding: PassBinding,
    /// Join attempts per second on this node above which the room is "under pressure": in
    /// `suspicious` mode every new arrival is challenged, and difficulty rises by one bit per
    /// doubling. `None`: never.
    pub pressure_joins_per_second: Option<NonZeroU32>,
    pub limits: Limits,
    pub thresholds: Thresholds,
}

impl Default for BotSettings {
    fn default() -> Self {
        Self {
            mode: Mode::Off,
            challenge: ChallengeMode::Suspicious,
            difficulty: 18,
            max_difficulty: 24,
            challenge_ttl: Duration::from_secs(120),
            pass_ttl: Duration::from_secs(1800),
            pass_binding: PassBinding::IpPrefix,
            pressure_joins_per_second: NonZeroU32::new(100),
            limits: Limits::default(),
            thresholds: Thresholds::default(),
        }
    }
}

/// How a header rule compares the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    /// The whole value, byte for byte.
    Equals(String),
    /// A substring, ignoring ASCII case (stored lowercase).
    Contains(String),
}

/// A deny- or allow-list entry on a request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    pub name: HeaderName,
    pub matcher: HeaderMatch,
}

impl HeaderRule {
    /// Whether any value of the header matches.
    pub fn matches(&self, headers: &http::HeaderMap) -> bool {
        headers.get_all(&self.name).iter().any(|v| {
            let v = v.as_bytes();
            match &self.matcher {
                HeaderMatch::Equals(want) => v == want.as_bytes(),
                HeaderMatch::Contains(needle) => contains_ignore_case(v, needle.as_bytes()),
            }
        })
    }
}

/// `needle` must be lowercase.
pub(crate) fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || hay.windows(needle.len()).any(|w| {
            w.iter()
                .zip(needle)
                .all(|(a, b)| a.to_ascii_lowercase() == *b)
        })
}

/// Node-wide bot settings (`[bot]`): client lists and memory bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotGlobal {
    /// Slots of each fixed-size table (per-address, per-prefix, per-ticket). Memory is
    /// allocated once: 16–48 bytes per slot per table (about 6 MB at the default).
    pub table_slots: usize,
    /// Solved challenge ids remembered for replay refusal (about 40 bytes each).
    pub replay_slots: usize,
    /// Never checked (office, load testers, partners).
    pub allow_cidrs: Vec<IpNet>,
    /// Always refused.
    pub deny_cidrs: Vec<IpNet>,
    /// Verified crawlers (e.g. published search-engine ranges): skip the room on catalog
    /// routes only.
    pub crawler_cidrs: Vec<IpNet>,
    pub allow_headers: Vec<HeaderRule>,
    pub deny_headers: Vec<HeaderRule>,
}

pub const MIN_SLOTS: usize = 1024;
pub const MAX_SLOTS: usize = 1 << 24;

impl Default for BotGlobal {
    fn default() -> Self {
        Self {
            table_slots: 65_536,
            replay_slots: 262_144,
            allow_cidrs: Vec::new(),
            deny_cidrs: Vec::new(),
            crawler_cidrs: Vec::new(),
            allow_headers: Vec::new(),
            deny_headers: Vec::new(),
        }
    }
}
