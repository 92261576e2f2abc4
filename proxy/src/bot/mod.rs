//! Bot defence and abuse limits: the engine the gate asks before a request reaches a room.
//!
//! Per request the gate builds [`RequestFacts`] (client address, headers, which kind of route,
//! which credential the request carries) and calls [`BotGuard::check`]. The answer is a
//! [`Verdict`]: allow, bypass the room (verified crawler on a catalog route), solve a
//! proof-of-work [`Challenge`] first, tarpit (a waiting room that never admits), block, or
//! 429 with a retry time.
//!
//! | concern | where |
//! |---|---|
//! | settings per room (`[rooms.bot]`) and per node (`[bot]`) | [`settings`] |
//! | signed challenges, the work check, "challenge passed" tokens | [`challenge`] |
//! | single use of solutions, on this node | [`replay`] |
//! | state a fleet shares through Redis: single use, joins per address | [`fleet`] |
//! | header and behaviour signals, their weights | [`signals`] |
//! | GCRA limits and the join-pressure meter | [`gcra`] |
//! | the fixed-size tables holding all per-client state | [`table`] |
//! | the challenge page and the answers to `POST /.flashgate/challenge` | [`page`] |
//!
//! Guarantees (each backed by a test in `bot/tests.rs` or the submodules):
//! - `mode = "off"` (the default) does nothing and touches no state;
//! - `mode = "shadow"` scores, limits and counts exactly as `enforce` would, records the would-be
//!   action in `flashgate_bot_actions_total{mode="shadow"}`, and always returns
//!   [`Verdict::Allow`];
//! - a solution verifies in O(1) (one HMAC, one SHA-256) and is redeemed at most once per
//!   [`replay::ReplayGuard`]; a wrong counter, another room, another client, an expired or a
//!   forged challenge is refused;
//! - per-client memory is fixed at start (`[bot] table_slots` per table) and never grows with
//!   the number of addresses, prefixes or tokens seen; under a flood the least informative
//!   entries are evicted first (limits then fail open for the evicted key, never closed);
//! - with a fleet on Redis ([`fleet::RedisShared`], installed by the node): a solution is
//!   redeemed at most once across all nodes, and joins per address are limited fleet-wide by
//!   [`BotGuard::check_fleet`]; when Redis fails, solutions are refused (fail closed) and
//!   joins fall back to each node's own limit (fail open). Tests: `fleet`, `bot/tests.rs`,
//!   and `proxy/tests/bots.rs` against a real `redis-server`;
//! - nothing here reads a clock: `now` comes in [`RequestFacts`] (the fleet join limit runs
//!   on Redis `TIME`).
//!
//! What it cannot do: tell a patient human from a patient bot running a real browser on a
//! residential address. Proof of work raises the cost of each ticket; it does not make a farm
//! impossible. See `docs/bot-defence.md`.

pub mod challenge;
pub mod fleet;
pub use crate::gcra;
pub mod page;
pub mod replay;
pub mod settings;
pub mod signals;
pub mod table;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use ipnet::IpNet;
use prometheus::IntCounterVec;
use ring::rand::SecureRandom as _;
use waitroom::{Binding, UnixMillis};

use crate::http_util::{cookie, query_param, set_cookie, CookieAttrs};
use crate::metrics::Metrics;

pub use challenge::{Challenge, ChallengeError, ChallengeId, PassInfo, Signer, Solved};
pub use fleet::{RedisShared, SharedJoinLimit};
pub use gcra::Gcra;
pub use page::ChallengePage;
pub use replay::{MemoryReplay, ReplayError, ReplayGuard};
pub use settings::{
    BotGlobal, BotSettings, ChallengeMode, HeaderMatch, HeaderRule, Limits, Mode, PassBinding,
    Thresholds,
};
pub use signals::{Signal, Signals};
use table::{BoundedTable, Expiring};

/// The purpose string the gate derives the engine's secret with:
/// `BotGuard::new(&cfg.bot, cfg.keys.derive(bot::KEY_PURPOSE), &metrics)`.
pub const KEY_PURPOSE: &[u8] = b"flashgate bot defence v1";
/// Header carrying the "challenge passed" token for apps without cookies.
pub const CHALLENGE_HEADER: &str = "x-flashgate-challenge";
/// Largest body of `POST /.flashgate/challenge` worth reading.
pub const MAX_SOLUTION_BODY: usize = 2048;
/// How long a ticket or pass is remembered after it was last seen (shared-token detection).
const TOKEN_MEMORY: Duration = Duration::from_secs(15 * 60);
/// How long a tarpitted ticket stays tarpitted after it was last seen.
const TARPIT_MEMORY: Duration = Duration::from_secs(60 * 60);
/// Per-room meters (join pressure).
const ROOM_SLOTS: usize = 1024;

/// The challenge-passed cookie of `room`.
pub fn challenge_cookie_name(room: &str) -> String {
    format!("fg_c_{room}")
}

/// Which kind of route the request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// A room's route (kind default, essential or optional).
    Protected,
    /// A room's route of kind `catalog` (the only place the crawler bypass applies).
    Catalog,
    /// `/.flashgate/status` or `/.flashgate/events` of a room.
    Poll,
}

/// The credential the gate found (already verified by the gate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// No valid ticket or pass: a new arrival (a *join*).
    None,
    /// A valid ticket with this number.
    Ticket(u64),
    /// A valid pass, of this ticket number.
    Pass(u64),
}

/// What the engine needs to know about a request. Everything is an input: no clock reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub now: UnixMillis,
    /// The client address as the gate determined it (`http_util::client_ip`: X-Forwarded-For
    /// only from trusted proxies).
    pub client: Option<IpAddr>,
    pub headers: &'a HeaderMap,
    /// Whether the client reached us over TLS (browsers send `Sec-Fetch-*` only then).
    pub tls: bool,
    pub route: RouteClass,
    pub credential: Credential,
    /// The shortest `poll_after` the room hands out (its `poll_interval`); polls much faster
    /// than this are a signal.
    pub poll_after: Option<Duration>,
}

impl<'a> RequestFacts<'a> {
    /// A new arrival on a protected route; set the other fields as needed.
    pub fn new(headers: &'a HeaderMap, client: Option<IpAddr>, now: UnixMillis) -> Self {
        Self {
            now,
            client,
            headers,
            tls: false,
            route: RouteClass::Protected,
            credential: Credential::None,
            poll_after: None,
        }
    }

    fn user_agent(&self) -> &'a [u8] {
        self.headers
            .get(http::header::USER_AGENT)
            .map_or(&[][..], |v| v.as_bytes())
    }
}

/// Which limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    JoinsPerIp,
    PollsPerTicket,
    RequestsPerIp,
}

impl LimitKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::JoinsPerIp => "joins_per_ip",
            Self::PollsPerTicket => "polls_per_ticket",
            Self::RequestsPerIp => "requests_per_ip",
        }
    }
}

/// Why an action was taken (the `reason` metric label; a closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No signal fired.
    Clean,
    /// Signals fired, but below every threshold.
    LowScore,
    AllowList,
    Crawler,
    /// Would have been challenged, but carries a valid challenge-passed token.
    ChallengePassed,
    DenyList,
    /// Challenge mode `always`.
    Always,
    /// Joins above the room's pressure threshold (challenge mode `suspicious`).
    Pressure,
    /// A ticket tarpitted before stays tarpitted.
    Tarpitted,
    Signal(Signal),
    Limit(LimitKind),
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::LowScore => "low_score",
            Self::AllowList => "allow_list",
            Self::Crawler => "crawler",
            Self::ChallengePassed => "challenge_passed",
            Self::DenyList => "deny_list",
            Self::Always => "always",
            Self::Pressure => "pressure",
            Self::Tarpitted => "tarpitted",
            Self::Signal(s) => s.as_str(),
            Self::Limit(l) => l.as_str(),
        }
    }

    /// Every label value (for docs and tests).
    pub fn all() -> Vec<Reason> {
        let mut v = vec![
            Self::Clean,
            Self::LowScore,
            Self::AllowList,
            Self::Crawler,
            Self::ChallengePassed,
            Self::DenyList,
            Self::Always,
            Self::Pressure,
            Self::Tarpitted,
        ];
        v.extend(Signal::ALL.map(Self::Signal));
        v.extend(
            [
                LimitKind::JoinsPerIp,
                LimitKind::PollsPerTicket,
                LimitKind::RequestsPerIp,
            ]
            .map(Self::Limit),
        );
        v
    }
}

/// The action, without its payload (the `action` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Bypass,
    Challenge,
    Tarpit,
    Block,
    Limited,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Allow,
        Action::Bypass,
        Action::Challenge,
        Action::Tarpit,
        Action::Block,
        Action::Limited,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Bypass => "bypass",
            Self::Challenge => "challenge",
            Self::Tarpit => "tarpit",
            Self::Block => "block",
            Self::Limited => "limited",
        }
    }
}

/// What the gate must do with the request.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Carry on with the room gate as usual.
    Allow,
    /// Verified crawler on a catalog route: forward without the room gate and without
    /// counting it as a shopper.
    Bypass,
    /// Serve the challenge page (HTML) or the challenge JSON; issue no ticket.
    Challenge(Challenge),
    /// Serve a waiting page that never admits: with a ticket, never claim it; on a join,
    /// issue the ticket, then [`BotGuard::tarpit_ticket`] it.
    Tarpit,
    /// 403.
    Block(Reason),
    /// 429 with `Retry-After`.
    Limited {
        retry_after: Duration,
        limit: LimitKind,
    },
}

impl Verdict {
    /// The HTTP status the gate answers with (`None`: the room decides, as for any request).
    pub const fn http_status(&self) -> Option<u16> {
        match self {
            Verdict::Allow | Verdict::Bypass | Verdict::Tarpit => None,
            Verdict::Challenge(_) | Verdict::Block(_) => Some(403),
            Verdict::Limited { .. } => Some(429),
        }
    }

    /// `Retry-After` seconds for a 429 (at least 1).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Verdict::Limited { retry_after, .. } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
            }
            Verdict::Allow
            | Verdict::Bypass
            | Verdict::Challenge(_)
            | Verdict::Tarpit
            | Verdict::Block(_) => None,
        }
    }
}

/// The reasoning behind a verdict, whatever the mode (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assessment {
    /// What `enforce` does (in `shadow`, what would have been done).
    pub action: Action,
    pub reason: Reason,
    pub score: u32,
    pub signals: Signals,
    /// The difficulty a challenge gets (base, raised for score and pressure, capped).
    pub difficulty: u8,
    /// For [`Action::Limited`]: when to retry, and which limit.
    pub limited: Option<(Duration, LimitKind)>,
}

/// A redeemed solution: the "challenge passed" token for the cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub cookie_name: String,
    pub token: String,
    pub expires_at: UnixMillis,
    pub max_age: Duration,
}

impl Passed {
    /// The `Set-Cookie` value (HttpOnly, SameSite=Lax, Path=/, Secure over TLS).
    pub fn set_cookie(&self, secure: bool) -> String {
        set_cookie(
            &self.cookie_name,
            &self.token,
            CookieAttrs {
                secure,
                max_age: Some(self.max_age.as_secs().max(1)),
            },
        )
    }
}

/// The form fields of `POST /.flashgate/challenge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solution<'a> {
    pub room: Cow<'a, str>,
    pub challenge: Cow<'a, str>,
    pub counter: u64,
    /// Where the page wants to go next (checked with `safe_return_path` before use).
    pub return_to: Option<Cow<'a, str>>,
}

/// Parses a form-encoded (`application/x-www-form-urlencoded`) solution body.
pub fn parse_solution(body: &[u8]) -> Result<Solution<'_>, ChallengeError> {
    if body.len() > MAX_SOLUTION_BODY {
        return Err(ChallengeError::Malformed);
    }
    let form = std::str::from_utf8(body).map_err(|_| ChallengeError::Malformed)?;
    let field = |name| query_param(Some(form), name).filter(|v| !v.is_empty());
    let counter = field("counter")
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or(ChallengeError::Malformed)?;
    Ok(Solution {
        room: field("room").ok_or(ChallengeError::Malformed)?,
        challenge: field("challenge").ok_or(ChallengeError::Malformed)?,
        counter,
        return_to: field("return"),
    })
}

/// The metric handles the engine writes.
#[derive(Debug, Clone)]
struct BotMetrics {
    actions: IntCounterVec,
    signals: IntCounterVec,
    challenges: IntCounterVec,
    evictions: IntCounterVec,
}

/// Per address (a v4 address or a v6 /64).
#[derive(Debug, Clone, Copy, Default)]
struct AddrEntry {
    join_tat: u64,
    request_tat: u64,
}

impl Expiring for AddrEntry {
    fn idle_at(&self) -> u64 {
        self.join_tat.max(self.request_tat)
    }
}

/// Per /24 or /64: join attempts.
#[derive(Debug, Clone, Copy, Default)]
struct PrefixEntry {
    tat: u64,
}

impl Expiring for PrefixEntry {
    fn idle_at(&self) -> u64 {
        self.tat
    }
}

/// Per ticket number (a pass carries its ticket's number, so both share an entry).
#[derive(Debug, Clone, Copy, Default)]
struct TokenEntry {
    poll_tat: u64,
    pace_tat: u64,
    /// One bit per client prefix seen (keyed hash mod 64).
    prefixes: u64,
    keep_until: u64,
    tarpit: bool,
}

impl Expiring for TokenEntry {
    fn idle_at(&self) -> u64 {
        self.poll_tat.max(self.pace_tat).max(self.keep_until)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct RoomEntry {
    joins: gcra::WindowRate,
}

impl Expiring for RoomEntry {
    fn idle_at(&self) -> u64 {
        self.joins.idle_at()
    }
}

#[derive(Hash)]
enum AddrKey {
    V4(u32),
    V6(u64),
}

/// The address key for limits: a v4 address, or a v6 /64 (one host's usual allocation).
fn addr_key(ip: IpAddr) -> AddrKey {
    match ip {
        IpAddr::V4(a) => AddrKey::V4(u32::from(a)),
        IpAddr::V6(a) => AddrKey::V6((u128::from(a) >> 64) as u64),
    }
}

/// The prefix key: a v4 /24 or a v6 /64.
fn prefix_key(ip: IpAddr) -> AddrKey {
    match ip {
        IpAddr::V4(a) => AddrKey::V4(u32::from(a) & 0xffff_ff00),
        IpAddr::V6(a) => AddrKey::V6((u128::from(a) >> 64) as u64),
    }
}

fn in_nets(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

fn micros(t: UnixMillis) -> u64 {
    t.0.saturating_mul(1000)
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The engine: one per node, shared by every room and request (all methods take `&self`).
#[derive(Debug)]
pub struct BotGuard {
    global: BotGlobal,
    signer: Signer,
    replay: Arc<dyn ReplayGuard>,
    /// The fleet's join limit per address (Redis), asked after this node's own.
    shared_joins: Option<Arc<dyn SharedJoinLimit>>,
    addrs: BoundedTable<AddrEntry>,
    prefixes: BoundedTable<PrefixEntry>,
    tokens: BoundedTable<TokenEntry>,
    rooms: BoundedTable<RoomEntry>,
    rng: ring::rand::SystemRandom,
    fallback_nonce: AtomicU64,
    metrics: BotMetrics,
    page: ChallengePage,
}

/// What the per-token step found.
struct TokenStep {
    limited: Option<Duration>,
    signals: Signals,
    tarpitted: bool,
}

impl BotGuard {
    /// The engine for a node. `secret`: 32 bytes derived from the config's key ring
    /// ([`KEY_PURPOSE`]). Allocates its tables at full size now.
    pub fn new(global: &BotGlobal, secret: [u8; 32], metrics: &Metrics) -> Self {
        let slots = global.table_slots;
        Self {
            global: global.clone(),
            signer: Signer::new(&secret),
            replay: Arc::new(MemoryReplay::new(global.replay_slots)),
            shared_joins: None,
            addrs: BoundedTable::new(slots),
            prefixes: BoundedTable::new(slots),
            tokens: BoundedTable::new(slots),
            rooms: BoundedTable::new(ROOM_SLOTS),
            rng: ring::rand::SystemRandom::new(),
            fallback_nonce: AtomicU64::new(0),
            metrics: BotMetrics {
                actions: metrics.bot_actions.clone(),
                signals: metrics.bot_signals.clone(),
                challenges: metrics.bot_challenges.clone(),
                evictions: metrics.bot_evictions.clone(),
            },
            page: ChallengePage::default(),
        }
    }

    /// Replaces the node-local replay memory (e.g. with a Redis-backed guard for a fleet).
    pub fn with_replay(mut self, replay: Arc<dyn ReplayGuard>) -> Self {
        self.replay = replay;
        self
    }

    /// Adds a fleet-wide join limit per address, asked by [`check_fleet`](Self::check_fleet)
    /// after this node's own limit passed.
    pub fn with_shared_join_limit(mut self, limit: Arc<dyn SharedJoinLimit>) -> Self {
        self.shared_joins = Some(limit);
        self
    }

    /// The challenge page template.
    pub fn page(&self) -> &ChallengePage {
        &self.page
    }

    /// Checks a request for `room` (a configured room id). Updates the limiters; records
    /// metrics; in `shadow` mode always allows.
    pub fn check(&self, room: &str, cfg: &BotSettings, f: &RequestFacts<'_>) -> Verdict {
        self.check_detailed(room, cfg, f).0
    }

    /// [`check`](Self::check) plus the reasoning (for access logs).
    pub fn check_detailed(
        &self,
        room: &str,
        cfg: &BotSettings,
        f: &RequestFacts<'_>,
    ) -> (Verdict, Option<Assessment>) {
        if cfg.mode == Mode::Off {
            return (Verdict::Allow, None);
        }
        let a = self.assess(room, cfg, f);
        self.record(room, cfg.mode, &a);
        let v = match cfg.mode {
            Mode::Enforce => self.enforce(room, cfg, f, &a),
            Mode::Shadow | Mode::Off => Verdict::Allow,
        };
        (v, Some(a))
    }

    /// [`check`](Self::check), plus the fleet-wide join limit when one is installed: a join
    /// that this node would let through (allow, challenge or tarpit) costs one call to the
    /// shared limiter, which may turn it into [`Verdict::Limited`]. Recorded once, like
    /// `check`. When the shared limiter is unavailable, this node's own limit stands alone.
    pub async fn check_fleet(
        &self,
        room: &str,
        cfg: &BotSettings,
        f: &RequestFacts<'_>,
    ) -> Verdict {
        if cfg.mode == Mode::Off {
            return Verdict::Allow;
        }
        let mut a = self.assess(room, cfg, f);
        if let (Some(shared), Some(per_minute), Some(ip)) = (
            &self.shared_joins,
            cfg.limits.joins_per_minute_per_ip,
            f.client,
        ) {
            let joining = f.credential == Credential::None && f.route != RouteClass::Poll;
            let passed_locally =
                matches!(a.action, Action::Allow | Action::Challenge | Action::Tarpit)
                    && a.reason != Reason::AllowList;
            if joining && passed_locally {
                if let Ok(Some(wait)) = shared.join(room, ip, per_minute).await {
                    let kind = LimitKind::JoinsPerIp;
                    a.action = Action::Limited;
                    a.reason = Reason::Limit(kind);
                    a.limited = Some((wait, kind));
                }
            }
        }
        self.record(room, cfg.mode, &a);
        match cfg.mode {
            Mode::Enforce => self.enforce(room, cfg, f, &a),
            Mode::Shadow | Mode::Off => Verdict::Allow,
        }
    }

    fn enforce(
        &self,
        room: &str,
        cfg: &BotSettings,
        f: &RequestFacts<'_>,
        a: &Assessment,
    ) -> Verdict {
        match a.action {
            Action::Allow => Verdict::Allow,
            Action::Bypass => Verdict::Bypass,
            Action::Challenge => {
                Verdict::Challenge(self.issue_challenge(room, cfg, a.difficulty, f))
            }
            Action::Tarpit => {
                if let Credential::Ticket(n) = f.credential {
                    self.tarpit_ticket(room, n, f.now);
                }
                Verdict::Tarpit
            }
            Action::Block => Verdict::Block(a.reason),
            Action::Limited => {
                let (retry_after, limit) = a
                    .limited
                    .unwrap_or((Duration::from_secs(1), LimitKind::RequestsPerIp));
                Verdict::Limited { retry_after, limit }
            }
        }
    }

    fn record(&self, room: &str, mode: Mode, a: &Assessment) {
        self.metrics
            .actions
            .with_label_values(&[room, mode.as_str(), a.action.as_str(), a.reason.as_str()])
            .inc();
        for s in a.signals.iter() {
            self.metrics
                .signals
                .with_label_values(&[room, s.as_str()])
                .inc();
        }
        if mode == Mode::Shadow && a.action != Action::Allow {
            tracing::debug!(
                room,
                action = a.action.as_str(),
                reason = a.reason.as_str(),
                score = a.score,
                "bot defence (shadow): would have acted"
            );
        }
    }

    fn evicted(&self, table: &str, evicted: bool) {
        if evicted {
            self.metrics.evictions.with_label_values(&[table]).inc();
        }
    }

    /// Scores and limits a request as `enforce` would, updating the limiter state, without
    /// acting or recording metrics.
    pub fn assess(&self, room: &str, cfg: &BotSettings, f: &RequestFacts<'_>) -> Assessment {
        let now = micros(f.now);
        let client = f.client.map(|ip| ip.to_canonical());
        let done = |action, reason| Assessment {
            action,
            reason,
            score: 0,
            signals: Signals::default(),
            difficulty: cfg.difficulty,
            limited: None,
        };

        // 1. Lists, then the crawler bypass.
        let g = &self.global;
        if client.is_some_and(|ip| in_nets(&g.deny_cidrs, ip))
            || g.deny_headers.iter().any(|r| r.matches(f.headers))
        {
            return done(Action::Block, Reason::DenyList);
        }
        if client.is_some_and(|ip| in_nets(&g.allow_cidrs, ip))
            || g.allow_headers.iter().any(|r| r.matches(f.headers))
        {
            return done(Action::Allow, Reason::AllowList);
        }
        if f.route == RouteClass::Catalog && client.is_some_and(|ip| in_nets(&g.crawler_cidrs, ip))
        {
            return done(Action::Bypass, Reason::Crawler);
        }

        // 2. Per-address limits. Polls with a token are limited per token instead.
        let joining = f.credential == Credential::None && f.route != RouteClass::Poll;
        let counts_request = f.route != RouteClass::Poll || f.credential == Credential::None;
        if let Some(ip) = client {
            if let Some((wait, kind)) = self.limit_addr(room, cfg, ip, counts_request, joining, now)
            {
                let mut a = done(Action::Limited, Reason::Limit(kind));
                a.limited = Some((wait, kind));
                return a;
            }
        }

        // 3. Per-token state: poll limit and pace, shared tokens, sticky tarpit.
        let mut signals = Signals::default();
        let mut tarpitted = false;
        if let Credential::Ticket(n) | Credential::Pass(n) = f.credential {
            let step = self.token_step(room, cfg, n, client, f, now);
            if let Some(wait) = step.limited {
                let kind = LimitKind::PollsPerTicket;
                let mut a = done(Action::Limited, Reason::Limit(kind));
                a.limited = Some((wait, kind));
                return a;
            }
            signals = step.signals;
            tarpitted = step.tarpitted;
        } else if f.route == RouteClass::Poll {
            // A status poll without a ticket reveals nothing and costs nothing.
            return done(Action::Allow, Reason::Clean);
        }

        // 4. Header signals (a pass holder was scored when it joined).
        if !matches!(f.credential, Credential::Pass(_)) {
            for s in signals::header_signals(f.headers, f.tls).iter() {
                signals.insert(s);
            }
        }

        // 5. Joins: many from one prefix; the room's join pressure.
        let mut pressure_bits = 0;
        if joining {
            if let (Some(ip), Some(n)) = (client, cfg.thresholds.tickets_per_prefix) {
                let g = Gcra::per_window(n, cfg.thresholds.prefix_window);
                let key = self.prefixes.key((room, prefix_key(ip)));
                let (over, ev) = self
                    .prefixes
                    .update(key, now, |e| g.apply(&mut e.tat, now).is_some());
                self.evicted("prefixes", ev);
                if over {
                    signals.insert(Signal::PrefixTickets);
                }
            }
            pressure_bits = self.pressure_bits(room, cfg, now);
        }

        let score = signals.score();
        let strongest = signals.strongest().map_or(Reason::LowScore, Reason::Signal);
        let extra = score / settings::POINTS_PER_BIT + u32::from(pressure_bits);
        let difficulty = u32::from(cfg.difficulty)
            .saturating_add(extra)
            .min(u32::from(cfg.max_difficulty)) as u8;
        let t = &cfg.thresholds;
        let allow = if signals.is_empty() {
            Reason::Clean
        } else {
            Reason::LowScore
        };
        let (action, reason) = match f.credential {
            Credential::Pass(_) => {
                if score >= t.block_at {
                    (Action::Block, strongest)
                } else {
                    (Action::Allow, allow)
                }
            }
            Credential::Ticket(_) => {
                if score >= t.block_at {
                    (Action::Block, strongest)
                } else if tarpitted {
                    (Action::Tarpit, Reason::Tarpitted)
                } else if score >= t.tarpit_at {
                    (Action::Tarpit, strongest)
                } else {
                    (Action::Allow, allow)
                }
            }
            Credential::None => {
                let challenge = match cfg.challenge {
                    ChallengeMode::Off => None,
                    ChallengeMode::Always => Some(Reason::Always),
                    ChallengeMode::Suspicious if score >= t.challenge_at => Some(strongest),
                    ChallengeMode::Suspicious if pressure_bits > 0 => Some(Reason::Pressure),
                    ChallengeMode::Suspicious => None,
                };
                if score >= t.block_at {
                    (Action::Block, strongest)
                } else if score >= t.tarpit_at {
                    (Action::Tarpit, strongest)
                } else if let Some(r) = challenge {
                    if self.has_pass(room, cfg, f) {
                        (Action::Allow, Reason::ChallengePassed)
                    } else {
                        (Action::Challenge, r)
                    }
                } else {
                    (Action::Allow, allow)
                }
            }
        };
        Assessment {
            action,
            reason,
            score,
            signals,
            difficulty,
            limited: None,
        }
    }

    fn limit_addr(
        &self,
        room: &str,
        cfg: &BotSettings,
        ip: IpAddr,
        counts_request: bool,
        joining: bool,
        now: u64,
    ) -> Option<(Duration, LimitKind)> {
        let req = cfg
            .limits
            .requests_per_minute_per_ip
            .filter(|_| counts_request)
            .map(Gcra::per_minute);
        let join = cfg
            .limits
            .joins_per_minute_per_ip
            .filter(|_| joining)
            .map(Gcra::per_minute);
        if req.is_none() && join.is_none() {
            return None;
        }
        let key = self.addrs.key((room, addr_key(ip)));
        let (out, ev) = self.addrs.update(key, now, |e| {
            // Check both before charging either, so a refused join costs no request quota.
            let r = req.map(|g| g.step(e.request_tat, now));
            let j = join.map(|g| g.step(e.join_tat, now));
            match (r, j) {
                (Some(Err(w)), _) => Some((Duration::from_micros(w), LimitKind::RequestsPerIp)),
                (_, Some(Err(w))) => Some((Duration::from_micros(w), LimitKind::JoinsPerIp)),
                (r, j) => {
                    if let Some(Ok(t)) = r {
                        e.request_tat = t;
                    }
                    if let Some(Ok(t)) = j {
                        e.join_tat = t;
                    }
                    None
                }
            }
        });
        self.evicted("addresses", ev);
        out
    }

    fn token_step(
        &self,
        room: &str,
        cfg: &BotSettings,
        ticket: u64,
        client: Option<IpAddr>,
        f: &RequestFacts<'_>,
        now: u64,
    ) -> TokenStep {
        let poll = f.route == RouteClass::Poll;
        let limit = cfg
            .limits
            .polls_per_minute_per_ticket
            .filter(|_| poll)
            .map(Gcra::per_minute);
        // Several tabs share a ticket: up to 3 polls per interval, bursts of 6.
        let pace = f
            .poll_after
            .filter(|_| poll)
            .map(|p| Gcra::new(us(p) / 3, 6));
        let prefix_bit = client.map(|ip| 1u64 << (self.tokens.key(prefix_key(ip)) % 64));
        let key = self.tokens.key((room, ticket));
        let max_prefixes = u32::from(cfg.thresholds.addresses_per_token);
        let (step, ev) = self.tokens.update(key, now, |e| {
            e.keep_until = e.keep_until.max(now.saturating_add(us(TOKEN_MEMORY)));
            let mut signals = Signals::default();
            if let Some(bit) = prefix_bit {
                e.prefixes |= bit;
            }
            if e.prefixes.count_ones() >= max_prefixes {
                signals.insert(Signal::SharedToken);
            }
            if let Some(g) = pace {
                if g.apply(&mut e.pace_tat, now).is_some() {
                    signals.insert(Signal::PollTooFast);
                }
            }
            let limited = limit.and_then(|g| g.apply(&mut e.poll_tat, now));
            TokenStep {
                limited,
                signals,
                tarpitted: e.tarpit,
            }
        });
        self.evicted("tokens", ev);
        step
    }

    /// Extra difficulty bits for join pressure (records this join): one bit from the
    /// threshold, one more per doubling.
    fn pressure_bits(&self, room: &str, cfg: &BotSettings, now: u64) -> u8 {
        let key = self.rooms.key(room);
        let (rate, ev) = self.rooms.update(key, now, |e| {
            e.joins.record(now);
            e.joins.rate(now)
        });
        self.evicted("rooms", ev);
        let Some(limit) = cfg.pressure_joins_per_second else {
            return 0;
        };
        let ratio = rate / f64::from(limit.get());
        if ratio < 1.0 {
            0
        } else {
            (1.0 + ratio.log2()).min(16.0) as u8
        }
    }

    /// Marks a ticket as tarpitted: every later request with it is tarpitted too (as long as
    /// this node remembers it; see the table's eviction rule).
    pub fn tarpit_ticket(&self, room: &str, ticket: u64, now: UnixMillis) {
        let now = micros(now);
        let key = self.tokens.key((room, ticket));
        let (_, ev) = self.tokens.update(key, now, |e| {
            e.tarpit = true;
            e.keep_until = e.keep_until.max(now.saturating_add(us(TARPIT_MEMORY)));
        });
        self.evicted("tokens", ev);
    }

    /// The client binding for challenges and passes of a room.
    pub fn binding(&self, cfg: &BotSettings, f: &RequestFacts<'_>) -> u64 {
        let b = match cfg.pass_binding {
            PassBinding::None => return 0,
            PassBinding::UserAgent => Binding::UserAgent,
            PassBinding::IpPrefix => Binding::IpPrefix { v4: 24, v6: 64 },
        };
        b.value(f.user_agent(), f.client.map(|ip| ip.to_canonical()))
    }

    /// Whether the request carries a valid challenge-passed token for `room` (cookie
    /// `fg_c_<room>` or the `X-Flashgate-Challenge` header).
    pub fn has_pass(&self, room: &str, cfg: &BotSettings, f: &RequestFacts<'_>) -> bool {
        let name = challenge_cookie_name(room);
        let cookies = f.headers.get_all(http::header::COOKIE);
        let from_cookie = cookie(cookies.iter().map(|v| v.as_bytes()), &name);
        let from_header = f
            .headers
            .get(CHALLENGE_HEADER)
            .and_then(|v| v.to_str().ok());
        let binding = self.binding(cfg, f);
        [from_cookie, from_header]
            .into_iter()
            .flatten()
            .any(|t| self.signer.verify_pass(room, t, binding, f.now).is_ok())
    }

    /// Issues a challenge for `room` at `difficulty`, bound to the requesting client.
    pub fn issue_challenge(
        &self,
        room: &str,
        cfg: &BotSettings,
        difficulty: u8,
        f: &RequestFacts<'_>,
    ) -> Challenge {
        let mut nonce = [0u8; 16];
        if self.rng.fill(&mut nonce).is_err() {
            // Unique per node even without the OS RNG; only uniqueness matters for a nonce.
            let n = self.fallback_nonce.fetch_add(1, Ordering::Relaxed);
            let salt = self.tokens.key(("nonce", n, f.now.0));
            nonce[..8].copy_from_slice(&salt.to_be_bytes());
            nonce[8..].copy_from_slice(&n.to_be_bytes());
        }
        let difficulty = difficulty.clamp(settings::MIN_DIFFICULTY, settings::MAX_DIFFICULTY);
        self.metrics
            .challenges
            .with_label_values(&[room, "issued"])
            .inc();
        self.signer.challenge(
            room,
            difficulty,
            self.binding(cfg, f),
            f.now,
            cfg.challenge_ttl,
            nonce,
        )
    }

    /// Checks a solution without redeeming it: one HMAC, one SHA-256, no state.
    pub fn verify_solution(
        &self,
        room: &str,
        cfg: &BotSettings,
        challenge: &str,
        counter: u64,
        f: &RequestFacts<'_>,
    ) -> Result<Solved, ChallengeError> {
        self.signer
            .verify_solution(room, challenge, counter, self.binding(cfg, f), f.now)
    }

    /// The whole of `POST /.flashgate/challenge` after the body is parsed and the room found:
    /// the per-address request limit, verification, single use, and the pass token.
    /// Records `flashgate_bot_challenges_total{result}`.
    pub async fn accept_solution(
        &self,
        room: &str,
        cfg: &BotSettings,
        solution: &Solution<'_>,
        f: &RequestFacts<'_>,
    ) -> Result<Passed, ChallengeError> {
        let r = self.redeem(room, cfg, solution, f).await;
        let label = match &r {
            Ok(_) => "solved",
            Err(e) => e.as_str(),
        };
        self.metrics
            .challenges
            .with_label_values(&[room, label])
            .inc();
        r
    }

    async fn redeem(
        &self,
        room: &str,
        cfg: &BotSettings,
        solution: &Solution<'_>,
        f: &RequestFacts<'_>,
    ) -> Result<Passed, ChallengeError> {
        if solution.room != room {
            return Err(ChallengeError::WrongRoom);
        }
        if let Some(ip) = f.client.map(|ip| ip.to_canonical()) {
            if self
                .limit_addr(room, cfg, ip, true, false, micros(f.now))
                .is_some()
            {
                return Err(ChallengeError::Limited);
            }
        }
        let solved = self.verify_solution(room, cfg, &solution.challenge, solution.counter, f)?;
        match self
            .replay
            .first_use(room, &solved.id, solved.expires_at, f.now)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Err(ChallengeError::Replayed),
            Err(ReplayError::Full) => return Err(ChallengeError::ReplayCacheFull),
            Err(ReplayError::Store) => return Err(ChallengeError::ReplayStoreError),
        }
        let (token, expires_at) = self.signer.pass(&solved, f.now, cfg.pass_ttl);
        Ok(Passed {
            cookie_name: challenge_cookie_name(room),
            token,
            expires_at,
            max_age: cfg.pass_ttl,
        })
    }

    /// Table occupancy as `(name, occupied, capacity)`; walks every table (diagnostics,
    /// tests).
    pub fn tables(&self) -> [(&'static str, usize, usize); 4] {
        [
            ("addresses", self.addrs.len(), self.addrs.capacity()),
            ("prefixes", self.prefixes.len(), self.prefixes.capacity()),
            ("tokens", self.tokens.len(), self.tokens.capacity()),
            ("rooms", self.rooms.len(), self.rooms.capacity()),
        ]
    }
}

#[cfg(test)]
mod tests;
