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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
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
    /// Seconds in-flight requests get on shutdown.
    #[serde(default = "default_grace")]
    pub grace_period: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            threads: default_threads(),
            trusted_proxies: Vec::new(),
            admin_listen: default_admin_listen(),
            admin_token_env: None,
            admin_token_file: None,
            log_format: default_log_format(),
            grace_period: default_grace(),
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
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            kind: default_store_kind(),
            url: None,
            cluster: false,
            snapshot_interval: default_snapshot_interval(),
        }
    }
}

fn default_store_kind() -> String {
    "memory".into()
}
fn default_snapshot_interval() -> String {
    "200ms".into()
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
    pub message: Option<String>,
    #[serde(default)]
    pub page: PageSection,
    #[serde(default)]
    pub events: Vec<EventSection>,
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
