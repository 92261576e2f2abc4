//! The TOML surface: what operators write. Every table rejects unknown keys, so a typo is an
//! error that names the key instead of a setting silently ignored.
//!
//! These types only describe the file; [`super::Config`] holds the validated settings.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    pub keys: KeysSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSection>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    #[serde(default)]
    pub rooms: Vec<RoomSection>,
    /// The origin shield's catalog cache (`docs/origin-shield.md`).
    #[serde(default)]
    pub cache: CacheSection,
    /// The queue/admission event stream (`docs/events.md`); off by default.
    #[serde(default)]
    pub events: EventsSection,
    /// Node-wide bot-defence settings (client lists, memory bounds).
    #[serde(default)]
    pub bot: BotGlobalSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// HTTPS listeners (HTTP/2 and HTTP/1.1 through ALPN); they need `tls_cert` and `tls_key`.
    #[serde(default)]
    pub tls_listen: Vec<String>,
    /// PEM certificate chain, leaf first (re-read on reload).
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`: PKCS#8, PKCS#1 or SEC1 (re-read on reload).
    pub tls_key: Option<String>,
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs or addresses).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Name of the environment variable holding the admin bearer token.
    pub admin_token_env: Option<String>,
    /// File holding the admin bearer token.
    pub admin_token_file: Option<String>,
    /// `text` or `json` access/event logs.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// One access event per request (target `flashgate::access`, level info).
    #[serde(default = "default_true")]
    pub access_log: bool,
    /// Seconds in-flight requests get on shutdown.
    #[serde(default = "default_grace")]
    pub grace_period: String,
    /// Bytes of a response gathered before each write to a client connection (default
    /// 16KiB): a response this small leaves in one write.
    #[serde(default = "default_write_buffer")]
    pub write_buffer: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            threads: default_threads(),
            trusted_proxies: Vec::new(),
            admin_listen: default_admin_listen(),
            admin_token_env: None,
            admin_token_file: None,
            log_format: default_log_format(),
            access_log: true,
            grace_period: default_grace(),
            write_buffer: default_write_buffer(),
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["0.0.0.0:8080".into()]
}
fn default_threads() -> usize {
    2
}
fn default_admin_listen() -> String {
    "127.0.0.1:9901".into()
}
fn default_log_format() -> String {
    "text".into()
}
fn default_write_buffer() -> String {
    "16KiB".into()
}
fn default_grace() -> String {
    "10s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    /// The key id new tokens are signed with.
    pub active: u8,
    #[serde(rename = "key")]
    pub keys: Vec<KeySection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    pub id: u8,
    /// Name of an environment variable holding the secret (recommended).
    pub secret_env: Option<String>,
    /// Path of a file holding the secret (recommended).
    pub secret_file: Option<String>,
    /// The secret inline: for demos and tests only.
    pub secret: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `memory` (one node) or `redis` (a fleet).
    #[serde(default = "default_store_kind")]
    pub kind: String,
    pub url: Option<String>,
    #[serde(default)]
    pub cluster: bool,
    /// How often each node refreshes its local picture of every room.
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval: String,
    /// How long new arrivals are collected to be numbered with one Redis call ("0ms": off).
    #[serde(default = "default_batch_window")]
    pub batch_window: String,
    /// TLS to Redis beyond the `rediss://` URL: a CA and a client certificate.
    pub tls: Option<StoreTlsSection>,
}

/// `[store.tls]`: PEM files, read when the config is loaded.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreTlsSection {
    /// The CA certificate(s) that sign the Redis server's certificate (default: the system's).
    pub ca_file: Option<String>,
    /// A client certificate chain, for Redis set up with `tls-auth-clients yes`.
    pub cert_file: Option<String>,
    /// The client certificate's private key.
    pub key_file: Option<String>,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            kind: default_store_kind(),
            url: None,
            cluster: false,
            snapshot_interval: default_snapshot_interval(),
            batch_window: default_batch_window(),
            tls: None,
        }
    }
}

fn default_store_kind() -> String {
    "memory".into()
}
fn default_snapshot_interval() -> String {
    "200ms".into()
}
fn default_batch_window() -> String {
    "2ms".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `ip:port` or `host:port` (resolved once, at load).
    pub servers: Vec<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: String,
    /// Sent as the `Host` header upstream (default: the shopper's `Host`).
    pub host: Option<String>,
    pub health_check: Option<HealthSection>,
    /// Origin shield: requests in flight to this pool at most (default: unlimited).
    pub max_concurrent: Option<u32>,
    /// Origin shield: share of `max_concurrent` optional routes may use (default 0.5).
    pub optional_share: Option<f64>,
    /// Origin shield: share of `max_concurrent` only essential routes may use (default 0.2).
    pub essential_reserve: Option<f64>,
    /// Origin shield: p95 latency above which optional routes are shed (default: none).
    pub latency_target: Option<String>,
}

fn default_connect_timeout() -> String {
    "2s".into()
}
fn default_read_timeout() -> String {
    "30s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// `http` (GET `path`, expects 2xx) or `tcp` (connect only).
    #[serde(default = "default_health_kind")]
    pub kind: String,
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval")]
    pub interval: String,
}

fn default_health_kind() -> String {
    "http".into()
}
fn default_health_path() -> String {
    "/".into()
}
fn default_health_interval() -> String {
    "2s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Path prefix, matched on whole segments (`/shop` matches `/shop/x`, not `/shopping`).
    pub path: String,
    /// Host to match (default: any).
    pub host: Option<String>,
    pub upstream: String,
    /// `default`, `catalog`, `bypass`, `essential` or `optional`.
    #[serde(default = "default_route_kind")]
    pub kind: String,
    /// Origin shield: cache this route's responses this long, whatever the origin's
    /// `max-age` says (also turns caching on for kinds other than `catalog`).
    pub cache_ttl: Option<String>,
    /// Origin shield: stale-while-revalidate window when the origin names none.
    pub stale_while_revalidate: Option<String>,
    /// Origin shield: stale-if-error window when the origin names none.
    pub stale_if_error: Option<String>,
    /// Origin shield: serve stale when the pool's p95 latency is above this.
    pub latency_budget: Option<String>,
}

fn default_route_kind() -> String {
    "default".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSection {
    pub id: String,
    /// Hosts this room covers (default: any).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path prefixes this room protects.
    pub paths: Vec<String>,
    /// Methods this room protects (default: all).
    #[serde(default)]
    pub methods: Vec<String>,
    pub new_users_per_minute: u32,
    pub total_active_users: u32,
    #[serde(default = "default_session")]
    pub session_duration: String,
    /// `sliding` (renewed by activity) or `fixed`.
    #[serde(default = "default_renewal")]
    pub session_renewal: String,
    #[serde(default = "default_method")]
    pub queueing_method: String,
    /// Status code of the waiting page: 200, 202 or 429.
    #[serde(default = "default_status")]
    pub queueing_status_code: u16,
    #[serde(default = "default_abandon")]
    pub abandon_after: String,
    #[serde(default = "default_claim")]
    pub claim_window: String,
    #[serde(default = "default_poll")]
    pub poll_interval: String,
    #[serde(default = "default_tick")]
    pub tick: String,
    #[serde(default = "default_leeway")]
    pub token_leeway: String,
    #[serde(default = "default_noshow")]
    pub max_noshow_compensation: f64,
    /// `none`, `user_agent` or `ip_prefix`.
    #[serde(default = "default_binding")]
    pub binding: String,
    #[serde(default = "default_v4")]
    pub ip_prefix_v4: u8,
    #[serde(default = "default_v6")]
    pub ip_prefix_v6: u8,
    /// `queue` or `admit_at_floor_rate` (used with the Redis store).
    #[serde(default = "default_on_store_error")]
    pub on_store_error: String,
    /// New shoppers per minute each node admits on its own while the store is unreachable
    /// (required with `on_store_error = "admit_at_floor_rate"`).
    pub floor_rate_per_minute: Option<u32>,
    pub message: Option<String>,
    /// Origin-aware admission (`[rooms.origin_aware]`; default: off).
    pub origin_aware: Option<OriginAwareSection>,
    #[serde(default)]
    pub page: PageSection,
    #[serde(default)]
    pub events: Vec<EventSection>,
    /// Where this room's queue/admission events go (`[rooms.event_stream]`; not the sale
    /// windows above).
    pub event_stream: Option<RoomEventStreamSection>,
    /// Bot defence for this room (default: off).
    pub bot: Option<RoomBotSection>,
}

fn default_session() -> String {
    "10m".into()
}
fn default_renewal() -> String {
    "sliding".into()
}
fn default_method() -> String {
    "fifo".into()
}
fn default_status() -> u16 {
    200
}
fn default_abandon() -> String {
    "2m".into()
}
fn default_claim() -> String {
    "60s".into()
}
fn default_poll() -> String {
    "5s".into()
}
fn default_tick() -> String {
    "1s".into()
}
fn default_leeway() -> String {
    "5s".into()
}
fn default_noshow() -> f64 {
    0.5
}
fn default_binding() -> String {
    "none".into()
}
fn default_v4() -> u8 {
    24
}
fn default_v6() -> u8 {
    64
}
fn default_on_store_error() -> String {
    "queue".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageSection {
    pub title: Option<String>,
    pub logo_url: Option<String>,
    pub brand_color: Option<String>,
    pub background_color: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSection {
    pub name: String,
    /// RFC 3339 (`2026-11-27T18:00:00Z`), or `+DURATION` from when the config is loaded
    /// (for demos and tests).
    pub prequeue_at: Option<String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(default)]
    pub shuffle: bool,
    pub new_users_per_minute: Option<u32>,
    pub total_active_users: Option<u32>,
    pub session_duration: Option<String>,
    pub session_renewal: Option<String>,
    pub queueing_method: Option<String>,
    pub message: Option<String>,
}

/// `[bot]`: node-wide bot-defence settings. See `docs/bot-defence.md`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotGlobalSection {
    /// Slots of each fixed-size per-client table (default 65536).
    pub table_slots: Option<usize>,
    /// Solved challenges remembered for replay refusal (default 262144).
    pub replay_slots: Option<usize>,
    #[serde(default)]
    pub allow_cidrs: Vec<String>,
    #[serde(default)]
    pub deny_cidrs: Vec<String>,
    /// Verified crawler ranges: they skip rooms on catalog routes only.
    #[serde(default)]
    pub crawler_cidrs: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<HeaderRuleSection>,
    #[serde(default)]
    pub deny_headers: Vec<HeaderRuleSection>,
}

/// `{ name = "user-agent", contains = "EvilBot" }` or `{ name = "x-partner", equals = "…" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRuleSection {
    pub name: String,
    pub equals: Option<String>,
    pub contains: Option<String>,
}

/// `[rooms.bot]`: a room's bot defence. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomBotSection {
    /// `off`, `shadow` or `enforce`.
    pub mode: Option<String>,
    /// `off`, `suspicious` or `always`.
    pub challenge: Option<String>,
    pub difficulty: Option<u8>,
    pub max_difficulty: Option<u8>,
    pub challenge_ttl: Option<String>,
    pub pass_ttl: Option<String>,
    /// `none`, `user_agent` or `ip_prefix`.
    pub pass_binding: Option<String>,
    /// 0 turns the pressure response off.
    pub pressure_joins_per_second: Option<u32>,
    #[serde(default)]
    pub limits: BotLimitsSection,
    #[serde(default)]
    pub thresholds: BotThresholdsSection,
}

/// `[rooms.bot.limits]`: 0 turns a limit off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotLimitsSection {
    pub joins_per_minute_per_ip: Option<u32>,
    pub polls_per_minute_per_ticket: Option<u32>,
    pub requests_per_minute_per_ip: Option<u32>,
}

/// `[rooms.bot.thresholds]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotThresholdsSection {
    pub challenge_at: Option<u32>,
    pub tarpit_at: Option<u32>,
    pub block_at: Option<u32>,
    /// 0 turns the signal off.
    pub tickets_per_prefix: Option<u32>,
    pub prefix_window: Option<String>,
    pub addresses_per_token: Option<u8>,
}

/// `[events]`: the queue/admission event stream (`docs/events.md`). Every key is optional;
/// defaults are applied and checked in `config::event_stream`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// `off` (default), `redis` or `file`.
    pub sink: Option<String>,
    /// Redis URL (default: the `[store]` URL when the store is a single Redis).
    pub url: Option<String>,
    /// Redis stream key (default `flashgate:events`).
    pub stream: Option<String>,
    /// Approximate stream length kept (`XADD MAXLEN ~`; default 100000).
    pub maxlen: Option<u64>,
    /// JSON-lines file.
    pub path: Option<String>,
    /// Size at which the file is rotated (default 64 MiB).
    pub max_bytes: Option<u64>,
    /// Rotated files kept (default 5; 0: start afresh instead).
    pub keep_files: Option<u32>,
    /// Events held in memory while the sink is slow or down (default 10000).
    pub buffer: Option<usize>,
    /// Most events per delivery (default 4096).
    pub batch: Option<usize>,
    /// How long delivery waits for more events after a delivery that emptied the buffer
    /// (default 50ms).
    pub linger: Option<String>,
    /// This node's name in events (default: the host name, or `node-<pid>`).
    pub node: Option<String>,
}

/// `[rooms.event_stream]`: a room's routing of its events.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomEventStreamSection {
    /// `false`: this room emits no events.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Another Redis stream key for this room's events.
    pub stream: Option<String>,
}

fn default_true() -> bool {
    true
}

/// `[cache]`: the origin shield's catalog cache (see `docs/origin-shield.md`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Memory bound: `"256MiB"`, `"64MB"`, or bytes.
    #[serde(default = "default_cache_max_bytes")]
    pub max_bytes: String,
    /// Largest body stored.
    #[serde(default = "default_cache_max_object")]
    pub max_object: String,
    /// Freshness when neither the route nor the origin says.
    #[serde(default = "default_cache_ttl")]
    pub default_ttl: String,
    #[serde(default = "default_cache_swr")]
    pub stale_while_revalidate: String,
    #[serde(default = "default_cache_sie")]
    pub stale_if_error: String,
    /// Cap on stale windows, whoever sets them.
    #[serde(default = "default_cache_max_stale")]
    pub max_stale: String,
    /// How long a request waits for another's fetch of the same page.
    #[serde(default = "default_cache_lock_timeout")]
    pub lock_timeout: String,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            max_bytes: default_cache_max_bytes(),
            max_object: default_cache_max_object(),
            default_ttl: default_cache_ttl(),
            stale_while_revalidate: default_cache_swr(),
            stale_if_error: default_cache_sie(),
            max_stale: default_cache_max_stale(),
            lock_timeout: default_cache_lock_timeout(),
        }
    }
}

fn default_cache_max_bytes() -> String {
    "256MiB".into()
}
fn default_cache_max_object() -> String {
    "1MiB".into()
}
fn default_cache_ttl() -> String {
    "10s".into()
}
fn default_cache_swr() -> String {
    "10s".into()
}
fn default_cache_sie() -> String {
    "5m".into()
}
fn default_cache_max_stale() -> String {
    "1h".into()
}
fn default_cache_lock_timeout() -> String {
    "5s".into()
}

/// `[rooms.origin_aware]`: the room's admission rate follows the origin's health.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginAwareSection {
    /// The rate never goes below this share of the configured rate (default 0.25).
    pub min_factor: Option<f64>,
    /// p95 latency above this counts as degraded (default "300ms").
    pub latency_target: Option<String>,
    /// Error share above this counts as degraded (default 0.02).
    pub error_target: Option<f64>,
}
