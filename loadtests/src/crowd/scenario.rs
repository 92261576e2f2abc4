//! Scenario files: what crowd to send, how it behaves, what a run must show.
//!
//! Two layers, as in the proxy's config: [`ScenarioFile`] is the TOML as written (unknown keys
//! are refused), [`Scenario`] the validated form with durations and URLs parsed. Every error
//! names the file and the key: `scenarios/x.toml: shopper.give_up_share: must be between 0 and 1`.
//! See `loadtests/scenarios/*.toml` for commented examples.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::target::{check_target, HttpUrl};

/// Longest run a scenario may ask for.
pub const MAX_RUN: Duration = Duration::from_secs(3600);
/// Most requests a scenario may ask for.
pub const MAX_REQUESTS: u64 = 50_000_000;
/// Most shoppers a scenario may describe.
pub const MAX_SHOPPERS: u64 = 2_000_000;

/// A scenario error: `FILE: key: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}{sep}{reason}", sep = if key.is_empty() { "" } else { ": " })]
pub struct ScenarioError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Short name, used in output paths (default: the file name).
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Flashgate nodes; shoppers are spread over them round robin.
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
    /// Admin API of the nodes (optional): room numbers are read from the first each second.
    #[serde(default)]
    pub admin: Vec<String>,
    /// Environment variable holding the admin bearer token, if the API needs one.
    pub admin_token_env: Option<String>,
    /// The room the crowd queues for.
    pub room: String,
    /// The protected page shoppers open first (and again when their turn comes).
    pub path: String,
    /// Hard cap on the run's length.
    #[serde(default = "default_max_duration")]
    pub max_duration: String,
    /// Hard cap on requests sent.
    #[serde(default = "default_max_requests")]
    pub max_requests: u64,
    /// Seed of the crowd: the same seed makes the same arrivals and choices.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The arrival curve: one or more segments, added up.
    pub arrivals: Vec<ArrivalSection>,
    #[serde(default)]
    pub shopper: ShopperSection,
    #[serde(default)]
    pub bots: BotSection,
    #[serde(default)]
    pub client: ClientSection,
    #[serde(default)]
    pub checks: ChecksSection,
    /// Start the shop, Redis and Flashgate nodes for this run (`crowd --spawn`).
    pub spawn: Option<SpawnSection>,
}

fn default_targets() -> Vec<String> {
    vec!["http://127.0.0.1:8080".into()]
}
fn default_max_duration() -> String {
    "5m".into()
}
fn default_max_requests() -> u64 {
    2_000_000
}
fn default_seed() -> u64 {
    1
}

/// `shoppers` arrive from `start` over `over`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrivalSection {
    #[serde(default = "zero")]
    pub start: String,
    pub shoppers: u64,
    pub over: String,
    /// `uniform` (evenly spaced), `poisson` (random, same mean), `ramp` (rate rising linearly
    /// from zero), `decay` (rate falling linearly to zero: a rush right at `start`).
    #[serde(default = "default_shape")]
    pub shape: String,
}

fn zero() -> String {
    "0s".into()
}
fn default_shape() -> String {
    "uniform".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopperSection {
    /// `html` (a browser: the waiting page, then status polls as its script does) or `json`.
    #[serde(default = "default_first")]
    pub first_request: String,
    /// Share of shoppers who give up if they have waited `patience`.
    #[serde(default)]
    pub give_up_share: f64,
    /// How long an impatient shopper waits (each one 50–150 % of this).
    #[serde(default = "default_patience")]
    pub patience: String,
    /// Share of those giving up who say so (`POST /.flashgate/leave`); the rest just close the
    /// tab and stop polling.
    #[serde(default = "half")]
    pub leave_queue_share: f64,
    /// Pages an admitted shopper opens, `[min, max]`.
    #[serde(default = "default_browse")]
    pub browse: [u32; 2],
    #[serde(default = "default_pages")]
    pub pages: Vec<String>,
    /// Pause between pages (each one 50–150 % of this).
    #[serde(default = "default_think")]
    pub think: String,
    /// Probability of adding to the cart (`POST /cart`, form `sku`, `qty=1`).
    #[serde(default = "half")]
    pub add_to_cart: f64,
    /// Probability of checking out (`POST /checkout`) with a cart.
    #[serde(default = "half")]
    pub checkout: f64,
    #[serde(default = "default_skus")]
    pub skus: Vec<String>,
    /// Probability of ending the session at the end (`POST /.flashgate/leave`).
    #[serde(default = "default_leave")]
    pub leave: f64,
    /// Transport errors and 5xx a shopper tolerates before giving up.
    #[serde(default = "default_max_errors")]
    pub max_errors: u32,
}

fn default_first() -> String {
    "html".into()
}
fn default_patience() -> String {
    "2m".into()
}
fn half() -> f64 {
    0.5
}
fn default_browse() -> [u32; 2] {
    [1, 3]
}
fn default_pages() -> Vec<String> {
    vec!["/products".into()]
}
fn default_think() -> String {
    "500ms".into()
}
fn default_skus() -> Vec<String> {
    vec!["DEW-SETTING-SPRAY".into()]
}
fn default_leave() -> f64 {
    0.7
}
fn default_max_errors() -> u32 {
    20
}

impl Default for ShopperSection {
    fn default() -> Self {
        Self {
            first_request: default_first(),
            give_up_share: 0.0,
            patience: default_patience(),
            leave_queue_share: half(),
            browse: default_browse(),
            pages: default_pages(),
            think: default_think(),
            add_to_cart: half(),
            checkout: half(),
            skus: default_skus(),
            leave: default_leave(),
            max_errors: default_max_errors(),
        }
    }
}

/// Bots: a share of arrivals that poll as fast as they like, look like scripts, and pass one
/// ticket (and then its pass) around a group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotSection {
    #[serde(default)]
    pub share: f64,
    /// Poll interval of a bot, whatever the server says.
    #[serde(default = "default_bot_poll")]
    pub poll_every: String,
    #[serde(default = "default_bot_ua")]
    pub user_agent: String,
    /// Whether bots send `Accept-Language` (browsers always do).
    #[serde(default)]
    pub accept_language: bool,
    /// Bots sharing one ticket and, once admitted, one pass (1: no sharing).
    #[serde(default = "one")]
    pub group: u32,
    /// Pages each bot opens once admitted (or with the group's pass).
    #[serde(default = "default_bot_pages")]
    pub pages: u32,
}

fn default_bot_poll() -> String {
    "250ms".into()
}
fn default_bot_ua() -> String {
    "curl/8.5.0".into()
}
fn one() -> u32 {
    1
}
fn default_bot_pages() -> u32 {
    3
}

impl Default for BotSection {
    fn default() -> Self {
        Self {
            share: 0.0,
            poll_every: default_bot_poll(),
            user_agent: default_bot_ua(),
            accept_language: false,
            group: one(),
            pages: default_bot_pages(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// Requests in flight at once per node (and so at most that many connections per node).
    #[serde(default = "default_conns")]
    pub max_connections: usize,
    #[serde(default = "default_timeout")]
    pub request_timeout: String,
    #[serde(default = "default_browser_ua")]
    pub user_agent: String,
    /// Send each shopper's own client address in `X-Forwarded-For` (from 198.18.0.0/15, the
    /// range set aside for benchmarks), as a load balancer in front of the nodes would. The
    /// simulator runs on one address; without this, per-address limits of bot defence see the
    /// whole crowd as one client. Nodes believe it only from `server.trusted_proxies` (spawned
    /// nodes trust loopback).
    #[serde(default = "yes")]
    pub forwarded_for: bool,
}

fn default_conns() -> usize {
    256
}
fn default_timeout() -> String {
    "10s".into()
}
fn default_browser_ua() -> String {
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
     Chrome/131.0.0.0 Safari/537.36 flashgate-crowd"
        .into()
}

impl Default for ClientSection {
    fn default() -> Self {
        Self {
            max_connections: default_conns(),
            request_timeout: default_timeout(),
            user_agent: default_browser_ua(),
            forwarded_for: true,
        }
    }
}

/// What the run must show; the simulator exits non-zero when a check fails.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksSection {
    /// Every shopper who does not give up by design is admitted before the run ends.
    #[serde(default)]
    pub all_admitted: bool,
    /// No FIFO inversions (checked when the room's method is `fifo`).
    #[serde(default = "yes")]
    pub fifo: bool,
    /// How far apart two nodes' views of the serving number may be (snapshot refresh).
    #[serde(default = "default_fifo_tolerance")]
    pub fifo_tolerance: String,
    /// The admission rate to check against (default: the room's, from the admin API).
    pub rate_per_minute: Option<u32>,
    /// Measured entries per minute while the line is long must be within this share of the
    /// rate (e.g. 0.05); not checked when absent.
    pub rate_tolerance: Option<f64>,
    /// Entries in every window of this length stay under the rate plus the controller's bank.
    #[serde(default = "default_window")]
    pub window: String,
    /// The room's controller tick (one slice of budget).
    #[serde(default = "default_tick")]
    pub tick: String,
    /// Active shoppers never above the room's cap (needs the admin API).
    #[serde(default = "yes")]
    pub cap: bool,
    /// Most human requests that may fail (transport errors and 5xx), as a share.
    pub max_error_share: Option<f64>,
}

fn yes() -> bool {
    true
}
fn default_fifo_tolerance() -> String {
    "1s".into()
}
fn default_window() -> String {
    "10s".into()
}
fn default_tick() -> String {
    "1s".into()
}

impl Default for ChecksSection {
    fn default() -> Self {
        Self {
            all_admitted: false,
            fifo: true,
            fifo_tolerance: default_fifo_tolerance(),
            rate_per_minute: None,
            rate_tolerance: None,
            window: default_window(),
            tick: default_tick(),
            cap: true,
            max_error_share: None,
        }
    }
}

/// The processes `crowd --spawn` starts: the demo shop, Redis when asked, and `nodes`
/// Flashgate nodes with one room.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnSection {
    #[serde(default = "one_u8")]
    pub nodes: u8,
    /// `memory` (one node) or `redis`.
    #[serde(default = "default_store")]
    pub store: String,
    /// Worker threads per node.
    #[serde(default = "default_threads")]
    pub threads: usize,
    #[serde(default = "default_snapshot")]
    pub snapshot_interval: String,
    /// The room's keys after `id` (TOML, as in a Flashgate config: `paths`,
    /// `new_users_per_minute`, ..., `[[rooms.events]]`). `{{t+30s}}` is replaced by the RFC 3339
    /// time 30 s after the arrivals start.
    pub room: String,
    /// More config placed before the room (`[[routes]]`, `[cache]`...).
    #[serde(default)]
    pub extra: String,
}

fn one_u8() -> u8 {
    1
}
fn default_store() -> String {
    "memory".into()
}
fn default_threads() -> usize {
    2
}
fn default_snapshot() -> String {
    "200ms".into()
}

/// A validated arrival segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub start: Duration,
    pub shoppers: u64,
    pub over: Duration,
    pub shape: Shape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Uniform,
    Poisson,
    Ramp,
    Decay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstRequest {
    Html,
    Json,
}

#[derive(Debug, Clone)]
pub struct Shopper {
    pub first_request: FirstRequest,
    pub give_up_share: f64,
    pub patience: Duration,
    pub leave_queue_share: f64,
    pub browse: (u32, u32),
    pub pages: Vec<String>,
    pub think: Duration,
    pub add_to_cart: f64,
    pub checkout: f64,
    pub skus: Vec<String>,
    pub leave: f64,
    pub max_errors: u32,
}

#[derive(Debug, Clone)]
pub struct Bots {
    pub share: f64,
    pub poll_every: Duration,
    pub user_agent: String,
    pub accept_language: bool,
    pub group: u32,
    pub pages: u32,
}

#[derive(Debug, Clone)]
pub struct Client {
    pub max_connections: usize,
    pub request_timeout: Duration,
    pub user_agent: String,
    pub forwarded_for: bool,
}

#[derive(Debug, Clone)]
pub struct Checks {
    pub all_admitted: bool,
    pub fifo: bool,
    pub fifo_tolerance: Duration,
    pub rate_per_minute: Option<u32>,
    pub rate_tolerance: Option<f64>,
    pub window: Duration,
    pub tick: Duration,
    pub cap: bool,
    pub max_error_share: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Memory,
    Redis,
}

#[derive(Debug, Clone)]
pub struct Spawn {
    pub nodes: u8,
    pub store: Store,
    pub threads: usize,
    pub snapshot_interval: String,
    pub room: String,
    pub extra: String,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub file: String,
    pub name: String,
    pub description: String,
    pub targets: Vec<HttpUrl>,
    pub admin: Vec<HttpUrl>,
    pub admin_token_env: Option<String>,
    pub room: String,
    pub path: String,
    pub max_duration: Duration,
    pub max_requests: u64,
    pub seed: u64,
    pub arrivals: Vec<Arrival>,
    pub shopper: Shopper,
    pub bots: Bots,
    pub client: Client,
    pub checks: Checks,
    pub spawn: Option<Spawn>,
}

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.file.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn duration(&self, key: &str, s: &str) -> Result<Duration, ScenarioError> {
        humantime::parse_duration(s).map_err(|e| {
            self.err(
                key,
                format!("not a duration ({e}); write e.g. \"30s\", \"2m\""),
            )
        })
    }

    fn share(&self, key: &str, v: f64) -> Result<f64, ScenarioError> {
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(self.err(key, "must be between 0 and 1"))
        }
    }

    fn path(&self, key: &str, p: &str) -> Result<String, ScenarioError> {
        if !p.starts_with('/') || p.contains(char::is_whitespace) {
            return Err(self.err(key, "must be a path starting with / and without spaces"));
        }
        Ok(p.to_owned())
    }
}

impl Scenario {
    /// Reads and validates a scenario file. `allow_remote` lifts the loopback-only rule.
    pub fn load(path: &Path, allow_remote: bool) -> Result<Self, ScenarioError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: name.clone(),
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&name, &text, allow_remote)
    }

    /// Parses and validates scenario text; `file` names it in errors.
    pub fn parse(file: &str, text: &str, allow_remote: bool) -> Result<Self, ScenarioError> {
        let ctx = Ctx { file };
        let de = toml::Deserializer::parse(text).map_err(|e| ctx.err("", first_line(&e)))?;
        let raw: ScenarioFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            ctx.err(key, first_line(e.inner()))
        })?;
        build(&ctx, raw, allow_remote)
    }

    /// Shoppers in all arrival segments.
    pub fn total_shoppers(&self) -> u64 {
        self.arrivals.iter().map(|a| a.shoppers).sum()
    }
}

fn first_line(e: &impl std::fmt::Display) -> String {
    let s = e.to_string();
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let pos = lines
        .first()
        .and_then(|l| l.strip_prefix("TOML parse error at "))
        .map(str::to_owned);
    let reason = lines
        .iter()
        .rev()
        .find(|l| !l.contains('|') && !l.starts_with('^') && !l.starts_with("TOML parse error"))
        .copied()
        .unwrap_or("invalid TOML");
    match pos {
        Some(p) => format!("{reason} ({p})"),
        None => reason.to_owned(),
    }
}

fn build(ctx: &Ctx<'_>, f: ScenarioFile, allow_remote: bool) -> Result<Scenario, ScenarioError> {
    let name = f.name.clone().unwrap_or_else(|| {
        Path::new(ctx.file)
            .file_stem()
            .map_or_else(|| "crowd".into(), |s| s.to_string_lossy().into_owned())
    });
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ctx.err("name", "letters, digits, - and _ only"));
    }
    let urls = |key: &str, list: &[String]| -> Result<Vec<HttpUrl>, ScenarioError> {
        list.iter()
            .enumerate()
            .map(|(i, u)| {
                check_target(u, allow_remote)
                    .map_err(|e| ctx.err(format!("{key}[{i}]"), e.to_string()))
            })
            .collect()
    };
    let targets = urls("targets", &f.targets)?;
    if targets.is_empty() {
        return Err(ctx.err("targets", "name at least one Flashgate node"));
    }
    let admin = urls("admin", &f.admin)?;
    if f.room.is_empty() || f.room.len() > 64 {
        return Err(ctx.err("room", "must be 1 to 64 characters"));
    }
    let path = ctx.path("path", &f.path)?;
    let max_duration = ctx.duration("max_duration", &f.max_duration)?;
    if max_duration.is_zero() || max_duration > MAX_RUN {
        return Err(ctx.err("max_duration", "must be more than 0 and at most 1h"));
    }
    if f.max_requests == 0 || f.max_requests > MAX_REQUESTS {
        return Err(ctx.err("max_requests", "must be between 1 and 50000000"));
    }

    if f.arrivals.is_empty() {
        return Err(ctx.err("arrivals", "describe at least one [[arrivals]] segment"));
    }
    let mut arrivals = Vec::new();
    let mut total = 0u64;
    for (i, a) in f.arrivals.iter().enumerate() {
        let key = |k: &str| format!("arrivals[{i}].{k}");
        let start = ctx.duration(&key("start"), &a.start)?;
        let over = ctx.duration(&key("over"), &a.over)?;
        if a.shoppers == 0 {
            return Err(ctx.err(key("shoppers"), "must be > 0"));
        }
        total += a.shoppers;
        let shape = match a.shape.as_str() {
            "uniform" => Shape::Uniform,
            "poisson" => Shape::Poisson,
            "ramp" => Shape::Ramp,
            "decay" => Shape::Decay,
            _ => {
                return Err(ctx.err(
                    key("shape"),
                    "must be \"uniform\", \"poisson\", \"ramp\" or \"decay\"",
                ))
            }
        };
        if start + over > max_duration {
            return Err(ctx.err(key("over"), "the segment ends after max_duration"));
        }
        arrivals.push(Arrival {
            start,
            shoppers: a.shoppers,
            over,
            shape,
        });
    }
    if total > MAX_SHOPPERS {
        return Err(ctx.err("arrivals", "at most 2000000 shoppers in all"));
    }

    let s = &f.shopper;
    let first_request = match s.first_request.as_str() {
        "html" => FirstRequest::Html,
        "json" => FirstRequest::Json,
        _ => return Err(ctx.err("shopper.first_request", "must be \"html\" or \"json\"")),
    };
    if s.browse[0] > s.browse[1] || s.browse[1] > 1000 {
        return Err(ctx.err("shopper.browse", "write [min, max] with min <= max <= 1000"));
    }
    let pages = s
        .pages
        .iter()
        .enumerate()
        .map(|(i, p)| ctx.path(&format!("shopper.pages[{i}]"), p))
        .collect::<Result<Vec<_>, _>>()?;
    if pages.is_empty() && s.browse[1] > 0 {
        return Err(ctx.err("shopper.pages", "name at least one page to browse"));
    }
    if s.skus.is_empty()
        || s.skus.iter().any(|k| {
            k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    {
        return Err(ctx.err(
            "shopper.skus",
            "name at least one SKU (letters, digits, - and _)",
        ));
    }
    let shopper = Shopper {
        first_request,
        give_up_share: ctx.share("shopper.give_up_share", s.give_up_share)?,
        patience: ctx.duration("shopper.patience", &s.patience)?,
        leave_queue_share: ctx.share("shopper.leave_queue_share", s.leave_queue_share)?,
        browse: (s.browse[0], s.browse[1]),
        pages,
        think: ctx.duration("shopper.think", &s.think)?,
        add_to_cart: ctx.share("shopper.add_to_cart", s.add_to_cart)?,
        checkout: ctx.share("shopper.checkout", s.checkout)?,
        skus: s.skus.clone(),
        leave: ctx.share("shopper.leave", s.leave)?,
        max_errors: s.max_errors,
    };

    let b = &f.bots;
    let poll_every = ctx.duration("bots.poll_every", &b.poll_every)?;
    if poll_every < Duration::from_millis(10) {
        return Err(ctx.err("bots.poll_every", "must be at least 10ms"));
    }
    if b.group == 0 || b.group > 1000 {
        return Err(ctx.err("bots.group", "must be between 1 and 1000"));
    }
    if b.user_agent.contains(['\r', '\n']) {
        return Err(ctx.err("bots.user_agent", "must be one line"));
    }
    let bots = Bots {
        share: ctx.share("bots.share", b.share)?,
        poll_every,
        user_agent: b.user_agent.clone(),
        accept_language: b.accept_language,
        group: b.group,
        pages: b.pages,
    };

    let c = &f.client;
    if c.max_connections == 0 || c.max_connections > 10_000 {
        return Err(ctx.err("client.max_connections", "must be between 1 and 10000"));
    }
    let request_timeout = ctx.duration("client.request_timeout", &c.request_timeout)?;
    if request_timeout.is_zero() {
        return Err(ctx.err("client.request_timeout", "must be > 0"));
    }
    if c.user_agent.contains(['\r', '\n']) {
        return Err(ctx.err("client.user_agent", "must be one line"));
    }
    let client = Client {
        max_connections: c.max_connections,
        request_timeout,
        user_agent: c.user_agent.clone(),
        forwarded_for: c.forwarded_for,
    };

    let k = &f.checks;
    if let Some(t) = k.rate_tolerance {
        if !(t > 0.0 && t < 1.0) {
            return Err(ctx.err("checks.rate_tolerance", "must be between 0 and 1"));
        }
    }
    if k.rate_per_minute == Some(0) {
        return Err(ctx.err("checks.rate_per_minute", "must be > 0"));
    }
    let window = ctx.duration("checks.window", &k.window)?;
    if window < Duration::from_secs(1) {
        return Err(ctx.err("checks.window", "must be at least 1s"));
    }
    let tick = ctx.duration("checks.tick", &k.tick)?;
    if tick.is_zero() {
        return Err(ctx.err("checks.tick", "must be > 0"));
    }
    let checks = Checks {
        all_admitted: k.all_admitted,
        fifo: k.fifo,
        fifo_tolerance: ctx.duration("checks.fifo_tolerance", &k.fifo_tolerance)?,
        rate_per_minute: k.rate_per_minute,
        rate_tolerance: k.rate_tolerance,
        window,
        tick,
        cap: k.cap,
        max_error_share: match k.max_error_share {
            Some(v) => Some(ctx.share("checks.max_error_share", v)?),
            None => None,
        },
    };

    let spawn = match &f.spawn {
        None => None,
        Some(sp) => {
            let store = match sp.store.as_str() {
                "memory" => Store::Memory,
                "redis" => Store::Redis,
                _ => return Err(ctx.err("spawn.store", "must be \"memory\" or \"redis\"")),
            };
            if sp.nodes == 0 || sp.nodes > 8 {
                return Err(ctx.err("spawn.nodes", "must be between 1 and 8"));
            }
            if sp.nodes > 1 && store == Store::Memory {
                return Err(ctx.err(
                    "spawn.nodes",
                    "several nodes share one room only on Redis: set spawn.store = \"redis\"",
                ));
            }
            if sp.threads == 0 || sp.threads > 64 {
                return Err(ctx.err("spawn.threads", "must be between 1 and 64"));
            }
            ctx.duration("spawn.snapshot_interval", &sp.snapshot_interval)?;
            if sp.room.contains("[[rooms]]") || sp.room.contains("\nid ") {
                return Err(ctx.err(
                    "spawn.room",
                    "give the room's keys only: the id and the [[rooms]] header are added",
                ));
            }
            Some(Spawn {
                nodes: sp.nodes,
                store,
                threads: sp.threads,
                snapshot_interval: sp.snapshot_interval.clone(),
                room: sp.room.clone(),
                extra: sp.extra.clone(),
            })
        }
    };

    Ok(Scenario {
        file: ctx.file.to_owned(),
        name,
        description: f.description,
        targets,
        admin,
        admin_token_env: f.admin_token_env,
        room: f.room,
        path,
        max_duration,
        max_requests: f.max_requests,
        seed: f.seed,
        arrivals,
        shopper,
        bots,
        client,
        checks,
        spawn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
room = "drop"
path = "/products/X"
[[arrivals]]
shoppers = 10
over = "1s"
"#;

    fn err(extra: &str) -> String {
        Scenario::parse("s.toml", &format!("{MIN}{extra}"), false)
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn minimal_scenario_has_bounded_defaults() {
        let s = Scenario::parse("dir/minimal.toml", MIN, false).expect("valid");
        assert_eq!(s.name, "minimal");
        assert_eq!(s.targets[0].authority(), "127.0.0.1:8080");
        assert_eq!(s.max_duration, Duration::from_secs(300));
        assert_eq!(s.max_requests, 2_000_000);
        assert_eq!(s.total_shoppers(), 10);
        assert_eq!(s.bots.share, 0.0);
        assert!(s.spawn.is_none());
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            err("[shopper]\ngive_up_share = 2.0\n"),
            "s.toml: shopper.give_up_share: must be between 0 and 1"
        );
        let top = Scenario::parse("s.toml", &format!("colour = 1\n{MIN}"), false)
            .expect_err("unknown key")
            .to_string();
        assert!(
            top.starts_with("s.toml: colour: unknown field `colour`"),
            "{top}"
        );
        assert!(
            err("colour = 1\n").starts_with("s.toml: arrivals[0].colour: unknown field `colour`")
        );
        assert!(err("[bots]\nshare = 0.1\nspeed = 3\n")
            .starts_with("s.toml: bots.speed: unknown field `speed`"));
        assert_eq!(
            err("[[arrivals]]\nshoppers = 5\nover = \"soon\"\n")
                .split(" (")
                .next(),
            Some("s.toml: arrivals[1].over: not a duration")
        );
        assert_eq!(
            err("[[arrivals]]\nshoppers = 5\nover = \"1h\"\n"),
            "s.toml: arrivals[1].over: the segment ends after max_duration"
        );
        assert_eq!(
            err("[spawn]\nnodes = 2\nroom = \"paths = ['/']\"\n"),
            "s.toml: spawn.nodes: several nodes share one room only on Redis: set spawn.store = \"redis\""
        );
    }

    #[test]
    fn remote_targets_are_refused_unless_allowed() {
        let text = format!("targets = [\"http://10.1.2.3:8080\"]\n{MIN}");
        let e = Scenario::parse("s.toml", &text, false).expect_err("remote");
        assert!(
            e.to_string()
                .starts_with("s.toml: targets[0]: http://10.1.2.3:8080: refusing"),
            "{e}"
        );
        assert!(Scenario::parse("s.toml", &text, true).is_ok());
    }

    #[test]
    fn shipped_scenarios_are_valid() {
        let files = testkit::toml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios"));
        for p in &files {
            Scenario::load(p, false).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(files.len() >= 4, "smoke, launch, spike and bots at least");
    }
}
