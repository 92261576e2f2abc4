//! Configuration: the TOML file ([`file`]) converted into validated settings ([`Config`]).
//!
//! Every error names the file and the dotted key: `config/sale.toml: rooms[0].paths[1]: must
//! start with '/'`. `flashgate check` and reload use the same path, so a file that passes
//! `check` loads, and a reload of a bad file is refused with the same message while the old
//! config stays in force.

mod bot;
mod event_stream;
pub mod file;
mod shield;

pub use crate::events::settings::{EventSink, EventsConfig, RoomEvents};

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use waitroom::settings::{valid_room_id, EventSettings, QueueingMethod, RoomSettings, SessionMode};
use waitroom::{Binding, KeyRing, UnixMillis};

use file::{EventSection, FileConfig, RoomSection};

/// A config problem: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

pub use crate::routing::{prefix_matches, RouteKind};

#[derive(Debug, Clone)]
pub struct Route {
    pub host: Option<String>,
    pub path: String,
    pub upstream: String,
    pub kind: RouteKind,
    /// Origin shield: caching, stale windows, latency budget.
    pub shield: crate::shield::RouteShield,
}

pub use crate::upstream::{HealthCheck, Upstream};

impl crate::shield::RouteInfo for Route {
    fn upstream(&self) -> &str {
        &self.upstream
    }
    fn kind(&self) -> RouteKind {
        self.kind
    }
    fn shield(&self) -> &crate::shield::RouteShield {
        &self.shield
    }
}

/// What new arrivals get while the store is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    Queue,
    AdmitAtFloorRate,
}

pub use crate::pages::Branding;

/// A room: its core settings plus what the proxy needs to match and present it.
#[derive(Debug, Clone)]
pub struct Room {
    pub settings: RoomSettings,
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    pub methods: Vec<String>,
    pub status_code: u16,
    pub binding: Binding,
    pub on_store_error: OnStoreError,
    /// Origin-aware admission (`[rooms.origin_aware]`; off by default).
    pub origin_aware: Option<crate::shield::OriginAware>,
    /// New shoppers per minute this node admits from a local bucket while the store fails
    /// (`admit_at_floor_rate`; 0 with `queue`).
    pub floor_rate_per_minute: u32,
    pub branding: Branding,
    /// Bot defence (`[rooms.bot]`; off by default).
    pub bot: crate::bot::BotSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis {
        url: String,
        cluster: bool,
        /// Arrivals collected into one ticket-numbering call (zero: no batching).
        batch_window: Duration,
        /// `[store.tls]`: the CA and client certificate for `rediss` URLs.
        tls: Option<crate::store::RedisTls>,
    },
}

#[derive(Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    /// HTTPS listeners and the certificate they serve (`tls_listen`, `tls_cert`, `tls_key`).
    pub tls: Option<Tls>,
    pub threads: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub admin_listen: SocketAddr,
    pub admin_token: Option<String>,
    pub log_json: bool,
    /// One access event per request (`server.access_log`).
    pub access_log: bool,
    pub grace_period: Duration,
    /// The client connection's write buffer in bytes (`server.write_buffer`).
    pub write_buffer: usize,
}

impl fmt::Debug for Server {
    // The admin token is a secret: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("threads", &self.threads)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("admin_listen", &self.admin_listen)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("log_json", &self.log_json)
            .field("grace_period", &self.grace_period)
            .field("write_buffer", &self.write_buffer)
            .finish()
    }
}

/// The TLS listeners: addresses, and the certificate pair read (and checked) at load.
#[derive(Debug, Clone)]
pub struct Tls {
    pub listen: Vec<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pair: crate::tls::CertPair,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub server: Server,
    pub keys: KeyRing,
    pub store: StoreKind,
    pub snapshot_interval: Duration,
    pub upstreams: BTreeMap<String, Upstream>,
    pub routes: Vec<Route>,
    pub rooms: Vec<Room>,
    /// The origin shield's catalog cache (`[cache]`).
    pub cache: crate::shield::CacheSettings,
    /// Node-wide bot defence (`[bot]`).
    pub bot: crate::bot::BotGlobal,
    /// The queue/admission event stream (`[events]`, `[rooms.event_stream]`).
    pub events: EventsConfig,
}

/// Collects the context for error messages.
struct Ctx<'a> {
    file: &'a str,
    now: UnixMillis,
}

impl Ctx<'_> {
    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn duration(&self, key: &str, s: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(s).map_err(|e| {
            self.err(
                key,
                format!("not a duration ({e}); write e.g. \"30s\", \"10m\""),
            )
        })
    }

    /// `v` as a duration between `lo` and `hi` (each with its text for the message), or
    /// `default` when absent.
    fn duration_between(
        &self,
        key: &str,
        v: Option<&String>,
        default: Duration,
        (lo, lo_text): (Duration, &str),
        (hi, hi_text): (Duration, &str),
    ) -> Result<Duration, ConfigError> {
        let Some(s) = v else { return Ok(default) };
        let d = self.duration(key, s)?;
        if d < lo || d > hi {
            return Err(self.err(key, format!("must be between {lo_text} and {hi_text}")));
        }
        Ok(d)
    }

    fn time(&self, key: &str, s: &str) -> Result<UnixMillis, ConfigError> {
        if let Some(rel) = s.strip_prefix('+') {
            return Ok(self.now.plus(self.duration(key, rel)?));
        }
        let t = humantime::parse_rfc3339_weak(s).map_err(|_| {
            self.err(
                key,
                "not a time; write RFC 3339 (\"2026-11-27T18:00:00Z\") or \"+90s\"",
            )
        })?;
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| self.err(key, "must be after 1970"))?
            .as_millis() as u64;
        Ok(UnixMillis(ms))
    }
}

/// A Redis URL Flashgate can connect to: `redis://` or `unix://`, and one redis-rs reads.
/// `rediss://` is refused here rather than at the first connection: this build has no TLS client
/// for Redis (reach a TLS-only Redis through a local TLS tunnel, e.g. stunnel on 127.0.0.1).
/// A Redis URL: `redis://`, `rediss://` (TLS), `unix://`, or a Sentinel URL
/// (`redis+sentinel://`, `rediss+sentinel://`).
fn check_redis_url(ctx: &Ctx<'_>, key: &str, url: &str) -> Result<(), ConfigError> {
    use crate::store::connect::SentinelUrl;
    match SentinelUrl::parse(url) {
        Ok(Some(_)) => return Ok(()),
        Ok(None) => {}
        Err(e) => return Err(ctx.err(key, e.to_string())),
    }
    if !["redis://", "rediss://", "unix://"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        return Err(ctx.err(
            key,
            "must start with redis://, rediss:// (TLS), unix:// or redis+sentinel://",
        ));
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| ctx.err(key, format!("not a Redis URL: {e}")))
}

/// The store's Redis URL: with `cluster`, one or more seed nodes (comma-separated URLs, all
/// plain or all TLS); a Sentinel URL names a master, not a Cluster.
fn check_store_url(ctx: &Ctx<'_>, url: &str, cluster: bool) -> Result<(), ConfigError> {
    if !cluster {
        return check_redis_url(ctx, "store.url", url);
    }
    if url.contains("+sentinel://") {
        return Err(ctx.err(
            "store.url",
            "a Sentinel URL names one master, not a Cluster: set cluster = false",
        ));
    }
    let seeds: Vec<&str> = url.split(',').map(str::trim).collect();
    for seed in &seeds {
        check_redis_url(ctx, "store.url", seed)?;
    }
    let tls = seeds[0].starts_with("rediss://");
    if seeds.iter().any(|s| s.starts_with("rediss://") != tls) {
        return Err(ctx.err(
            "store.url",
            "the seed nodes must be all redis:// or all rediss://",
        ));
    }
    Ok(())
}

/// `[store.tls]`: the PEM files read and checked now (a CA that parses, a client certificate
/// that matches its key), each problem naming its key and file.
fn build_store_tls(
    ctx: &Ctx<'_>,
    t: &file::StoreTlsSection,
) -> Result<crate::store::RedisTls, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let ca = match &t.ca_file {
        None => None,
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| ctx.err("store.tls.ca_file", format!("cannot read {path}: {e}")))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    ctx.err(
                        "store.tls.ca_file",
                        format!("{path}: not a PEM certificate ({e})"),
                    )
                })?;
            if certs.is_empty() {
                return Err(ctx.err(
                    "store.tls.ca_file",
                    format!("{path}: no PEM certificate in the file"),
                ));
            }
            Some(pem)
        }
    };
    let client = match (&t.cert_file, &t.key_file) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ctx.err(
                "store.tls.key_file",
                "cert_file needs the certificate's key_file",
            ))
        }
        (None, Some(_)) => {
            return Err(ctx.err(
                "store.tls.cert_file",
                "key_file needs the certificate it belongs to (cert_file)",
            ))
        }
        (Some(c), Some(k)) => {
            crate::tls::load(Path::new(c), Path::new(k)).map_err(|e| {
                let which = match e.file {
                    crate::tls::PemFile::Cert => "store.tls.cert_file",
                    crate::tls::PemFile::Key => "store.tls.key_file",
                };
                ctx.err(which, e.reason)
            })?;
            let read = |p: &str, key: &str| {
                std::fs::read(p).map_err(|e| ctx.err(key, format!("cannot read {p}: {e}")))
            };
            Some(crate::store::ClientIdentity {
                cert: read(c, "store.tls.cert_file")?,
                key: read(k, "store.tls.key_file")?,
            })
        }
    };
    Ok(crate::store::RedisTls { ca, client })
}

impl Config {
    /// Reads, parses and validates `path`. `now` anchors relative event times (`+90s`).
    pub fn load(path: &Path, now: UnixMillis) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&name, &text, now)
    }

    /// Parses and validates config text; `name` is used in error messages.
    pub fn parse(name: &str, text: &str, now: UnixMillis) -> Result<Config, ConfigError> {
        let ctx = Ctx { file: name, now };
        let de = toml::Deserializer::parse(text).map_err(|e| ctx.err("", syntax_message(&e)))?;
        let raw: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            ctx.err(key, strip_toml_noise(&e.inner().to_string()))
        })?;
        build(&ctx, raw).map(|mut c| {
            c.source = PathBuf::from(name);
            c
        })
    }
}

fn syntax_message(e: &toml::de::Error) -> String {
    strip_toml_noise(&e.to_string())
}

/// toml's messages span several lines with a source excerpt: keep the message and the
/// position, as `reason (line 3, column 1)`.
fn strip_toml_noise(msg: &str) -> String {
    let lines: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
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

fn build(ctx: &Ctx<'_>, raw: FileConfig) -> Result<Config, ConfigError> {
    let server = build_server(ctx, &raw.server)?;
    let keys = build_keys(ctx, &raw.keys)?;
    let (store, snapshot_interval) = build_store(ctx, &raw.store)?;
    let cache = shield::build_cache(ctx, &raw.cache)?;

    if raw.upstreams.is_empty() {
        return Err(ctx.err("upstreams", "at least one upstream is needed"));
    }
    let mut upstreams = BTreeMap::new();
    for (name, u) in &raw.upstreams {
        let key = format!("upstreams.{name}");
        upstreams.insert(name.clone(), build_upstream(ctx, &key, name, u)?);
    }

    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let key = |f: &str| format!("routes[{i}].{f}");
        check_path(ctx, &key("path"), &r.path)?;
        if !upstreams.contains_key(&r.upstream) {
            return Err(ctx.err(
                key("upstream"),
                format!("no upstream named {:?}", r.upstream),
            ));
        }
        let kind = match r.kind.as_str() {
            "default" => RouteKind::Default,
            "catalog" => RouteKind::Catalog,
            "bypass" => RouteKind::Bypass,
            "essential" => RouteKind::Essential,
            "optional" => RouteKind::Optional,
            _ => {
                return Err(ctx.err(
                    key("kind"),
                    "must be one of default, catalog, bypass, essential, optional",
                ))
            }
        };
        routes.push(Route {
            host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
            path: r.path.clone(),
            upstream: r.upstream.clone(),
            kind,
            shield: shield::build_route(ctx, i, r, kind, &cache)?,
        });
    }
    if routes.is_empty() {
        if upstreams.len() == 1 {
            let only = upstreams.keys().next().cloned().unwrap_or_default();
            routes.push(Route {
                host: None,
                path: "/".into(),
                upstream: only,
                kind: RouteKind::Default,
                shield: crate::shield::RouteShield::default(),
            });
        } else {
            return Err(ctx.err(
                "routes",
                "with several upstreams, routes must say which serves what",
            ));
        }
    }

    let seed_secret = keys.derive_stable(b"flashgate shuffle seed secret v1");
    let mut rooms: Vec<Room> = Vec::new();
    for (i, r) in raw.rooms.iter().enumerate() {
        let room = build_room(ctx, i, r, seed_secret)?;
        if rooms.iter().any(|o| o.settings.id == room.settings.id) {
            return Err(ctx.err(format!("rooms[{i}].id"), "must be unique"));
        }
        for (j, p) in room.paths.iter().enumerate() {
            let other = rooms.iter().position(|o| {
                o.paths.contains(p)
                    && (o.hosts.is_empty()
                        || room.hosts.is_empty()
                        || o.hosts.iter().any(|h| room.hosts.contains(h)))
                    && (o.methods.is_empty()
                        || room.methods.is_empty()
                        || o.methods.iter().any(|m| room.methods.contains(m)))
            });
            if let Some(o) = other {
                return Err(ctx.err(
                    format!("rooms[{i}].paths[{j}]"),
                    format!(
                        "{p:?} is already protected by rooms[{o}] for the same hosts and methods"
                    ),
                ));
            }
            let covered = routes
                .iter()
                .any(|rt| prefix_matches(&rt.path, p) && rt.kind != RouteKind::Bypass);
            if !covered {
                return Err(ctx.err(
                    format!("rooms[{i}].paths[{j}]"),
                    format!("no route forwards {p:?} to an upstream"),
                ));
            }
        }
        rooms.push(room);
    }

    let bot = bot::build_global(ctx, &raw.bot)?;
    let events = event_stream::build(ctx, &raw.events, &raw.rooms, &store)?;
    Ok(Config {
        source: PathBuf::new(),
        cache,
        bot,
        events,
        server,
        keys,
        store,
        snapshot_interval,
        upstreams,
        routes,
        rooms,
    })
}

fn check_path(ctx: &Ctx<'_>, key: &str, p: &str) -> Result<(), ConfigError> {
    if !p.starts_with('/') {
        return Err(ctx.err(key, "must start with '/'"));
    }
    if p.starts_with("/.flashgate") {
        return Err(ctx.err(key, "paths under /.flashgate/ are reserved"));
    }
    if p.contains(['?', '#', '*', ' ']) {
        return Err(ctx.err(
            key,
            "a plain path prefix: no query, fragment, wildcard or space",
        ));
    }
    Ok(())
}

fn socket(ctx: &Ctx<'_>, key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    // Resolved once here; never per request (Pingora's peer resolution blocks and panics).
    s.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| {
            ctx.err(
                key,
                format!("{s:?} is not an address (ip:port) or resolvable host:port"),
            )
        })
}

fn build_server(ctx: &Ctx<'_>, s: &file::ServerSection) -> Result<Server, ConfigError> {
    if s.listen.is_empty() {
        return Err(ctx.err("server.listen", "at least one address is needed"));
    }
    let listen = s
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| socket(ctx, &format!("server.listen[{i}]"), a))
        .collect::<Result<Vec<_>, _>>()?;
    if s.threads == 0 || s.threads > 256 {
        return Err(ctx.err("server.threads", "must be between 1 and 256"));
    }
    let mut trusted = Vec::new();
    for (i, t) in s.trusted_proxies.iter().enumerate() {
        let net = t
            .parse::<IpNet>()
            .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                ctx.err(
                    format!("server.trusted_proxies[{i}]"),
                    "not an IP address or CIDR",
                )
            })?;
        trusted.push(net);
    }
    let admin_listen = socket(ctx, "server.admin_listen", &s.admin_listen)?;
    let admin_token = match (&s.admin_token_env, &s.admin_token_file) {
        (Some(_), Some(_)) => {
            return Err(ctx.err(
                "server.admin_token_env",
                "set admin_token_env or admin_token_file, not both",
            ))
        }
        (Some(var), None) => Some(std::env::var(var).map_err(|_| {
            ctx.err(
                "server.admin_token_env",
                format!("environment variable {var} is not set"),
            )
        })?),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    ctx.err(
                        "server.admin_token_file",
                        format!("cannot read {path}: {e}"),
                    )
                })?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
        return Err(ctx.err(
            "server.admin_token_env",
            "the admin token must have at least 16 characters",
        ));
    }
    if !admin_listen.ip().is_loopback() && admin_token.is_none() {
        return Err(ctx.err(
            "server.admin_listen",
            "a non-loopback admin listener needs admin_token_env or admin_token_file",
        ));
    }
    let tls = build_tls(ctx, s, &listen, admin_listen)?;
    let log_json = match s.log_format.as_str() {
        "text" => false,
        "json" => true,
        _ => return Err(ctx.err("server.log_format", "must be \"text\" or \"json\"")),
    };
    Ok(Server {
        listen,
        tls,
        threads: s.threads,
        trusted_proxies: trusted,
        admin_listen,
        admin_token,
        log_json,
        access_log: s.access_log,
        grace_period: ctx.duration("server.grace_period", &s.grace_period)?,
        write_buffer: shield::size_between(
            ctx,
            "server.write_buffer",
            &s.write_buffer,
            0,
            crate::shield::settings::MIB,
        )? as usize,
    })
}

fn build_tls(
    ctx: &Ctx<'_>,
    s: &file::ServerSection,
    plain: &[SocketAddr],
    admin: SocketAddr,
) -> Result<Option<Tls>, ConfigError> {
    let (cert, key) =
        match (s.tls_listen.is_empty(), &s.tls_cert, &s.tls_key) {
            (true, None, None) => return Ok(None),
            (true, _, _) => return Err(ctx.err(
                "server.tls_listen",
                "tls_cert and tls_key are only used with tls_listen: add an address or remove them",
            )),
            (false, None, _) => {
                return Err(ctx.err(
                    "server.tls_cert",
                    "tls_listen needs a PEM certificate chain file",
                ))
            }
            (false, Some(_), None) => {
                return Err(ctx.err("server.tls_key", "tls_listen needs a PEM private key file"))
            }
            (false, Some(c), Some(k)) => (PathBuf::from(c), PathBuf::from(k)),
        };
    let mut listen = Vec::new();
    for (i, a) in s.tls_listen.iter().enumerate() {
        let key = format!("server.tls_listen[{i}]");
        let addr = socket(ctx, &key, a)?;
        if let Some(j) = plain.iter().position(|p| *p == addr) {
            return Err(ctx.err(key, format!("{addr} is already server.listen[{j}]")));
        }
        if addr == admin || listen.contains(&addr) {
            return Err(ctx.err(key, format!("{addr} is used twice")));
        }
        listen.push(addr);
    }
    let pair = crate::tls::load(&cert, &key).map_err(|e| {
        let which = match e.file {
            crate::tls::PemFile::Cert => "server.tls_cert",
            crate::tls::PemFile::Key => "server.tls_key",
        };
        ctx.err(which, e.reason)
    })?;
    Ok(Some(Tls {
        listen,
        cert,
        key,
        pair,
    }))
}

fn build_keys(ctx: &Ctx<'_>, k: &file::KeysSection) -> Result<KeyRing, ConfigError> {
    if k.keys.is_empty() {
        return Err(ctx.err(
            "keys.key",
            "at least one key is needed (see `flashgate keygen`)",
        ));
    }
    let mut secrets: Vec<(u8, Vec<u8>)> = Vec::new();
    for (i, key) in k.keys.iter().enumerate() {
        let f = |name: &str| format!("keys.key[{i}].{name}");
        let secret = match (&key.secret_env, &key.secret_file, &key.secret) {
            (Some(var), None, None) => std::env::var(var).map_err(|_| {
                ctx.err(
                    f("secret_env"),
                    format!("environment variable {var} is not set"),
                )
            })?,
            (None, Some(path), None) => std::fs::read_to_string(path)
                .map_err(|e| ctx.err(f("secret_file"), format!("cannot read {path}: {e}")))?
                .trim()
                .to_owned(),
            (None, None, Some(s)) => s.clone(),
            _ => {
                return Err(ctx.err(
                    format!("keys.key[{i}]"),
                    "set exactly one of secret_env, secret_file or secret",
                ))
            }
        };
        if secret.len() < 32 {
            return Err(ctx.err(
                f("secret"),
                "must have at least 32 characters (`flashgate keygen` makes one)",
            ));
        }
        if secrets.iter().any(|(id, _)| *id == key.id) {
            return Err(ctx.err(f("id"), "must be unique"));
        }
        secrets.push((key.id, secret.into_bytes()));
    }
    let refs: Vec<(u8, &[u8])> = secrets.iter().map(|(id, s)| (*id, s.as_slice())).collect();
    KeyRing::new(&refs, k.active).map_err(|e| ctx.err("keys.active", e.to_string()))
}

fn build_store(
    ctx: &Ctx<'_>,
    s: &file::StoreSection,
) -> Result<(StoreKind, Duration), ConfigError> {
    let kind = match (s.kind.as_str(), &s.url) {
        ("memory", None) if s.tls.is_some() => {
            return Err(ctx.err("store.tls", "only used with kind = \"redis\""))
        }
        ("memory", None) => StoreKind::Memory,
        ("memory", Some(_)) => return Err(ctx.err("store.url", "only used with kind = \"redis\"")),
        ("redis", Some(url)) => {
            check_store_url(ctx, url, s.cluster)?;
            let tls = match &s.tls {
                None => None,
                Some(t) if url.contains("rediss") => Some(build_store_tls(ctx, t)?),
                Some(_) => return Err(ctx.err("store.tls", "only used with a rediss:// (TLS) url")),
            };
            StoreKind::Redis {
                url: url.clone(),
                cluster: s.cluster,
                batch_window: Duration::ZERO,
                tls,
            }
        }
        ("redis", None) => return Err(ctx.err("store.url", "kind = \"redis\" needs a url")),
        _ => return Err(ctx.err("store.kind", "must be \"memory\" or \"redis\"")),
    };
    let every = ctx.duration("store.snapshot_interval", &s.snapshot_interval)?;
    if every < Duration::from_millis(20) || every > Duration::from_secs(5) {
        return Err(ctx.err("store.snapshot_interval", "must be between 20ms and 5s"));
    }
    let window = ctx.duration("store.batch_window", &s.batch_window)?;
    if window > Duration::from_millis(50) {
        return Err(ctx.err(
            "store.batch_window",
            "must be at most 50ms (it delays every new arrival); \"0ms\" turns batching off",
        ));
    }
    let kind = match kind {
        StoreKind::Redis {
            url, cluster, tls, ..
        } => StoreKind::Redis {
            url,
            cluster,
            batch_window: window,
            tls,
        },
        StoreKind::Memory => StoreKind::Memory,
    };
    Ok((kind, every))
}

fn build_upstream(
    ctx: &Ctx<'_>,
    key: &str,
    name: &str,
    u: &file::UpstreamSection,
) -> Result<Upstream, ConfigError> {
    if u.servers.is_empty() {
        return Err(ctx.err(format!("{key}.servers"), "at least one server is needed"));
    }
    let servers = u
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| socket(ctx, &format!("{key}.servers[{i}]"), s))
        .collect::<Result<Vec<_>, _>>()?;
    let health = match &u.health_check {
        None => None,
        Some(h) => {
            let interval = ctx.duration(&format!("{key}.health_check.interval"), &h.interval)?;
            if interval < Duration::from_millis(100) {
                return Err(ctx.err(
                    format!("{key}.health_check.interval"),
                    "must be at least 100ms",
                ));
            }
            match h.kind.as_str() {
                "http" => {
                    if !h.path.starts_with('/') {
                        return Err(
                            ctx.err(format!("{key}.health_check.path"), "must start with '/'")
                        );
                    }
                    Some(HealthCheck::Http {
                        path: h.path.clone(),
                        interval,
                    })
                }
                "tcp" => Some(HealthCheck::Tcp { interval }),
                _ => {
                    return Err(ctx.err(
                        format!("{key}.health_check.kind"),
                        "must be \"http\" or \"tcp\"",
                    ))
                }
            }
        }
    };
    Ok(Upstream {
        name: name.to_owned(),
        servers,
        connect_timeout: ctx.duration(&format!("{key}.connect_timeout"), &u.connect_timeout)?,
        read_timeout: ctx.duration(&format!("{key}.read_timeout"), &u.read_timeout)?,
        host: u.host.clone(),
        health,
        shield: shield::build_pool(ctx, key, u)?,
    })
}

fn nz(ctx: &Ctx<'_>, key: &str, n: u32) -> Result<NonZeroU32, ConfigError> {
    NonZeroU32::new(n).ok_or_else(|| ctx.err(key, "must be > 0"))
}

fn method(ctx: &Ctx<'_>, key: &str, s: &str) -> Result<QueueingMethod, ConfigError> {
    QueueingMethod::parse(s)
        .ok_or_else(|| ctx.err(key, "must be one of fifo, random, passthrough, reject"))
}

fn renewal(ctx: &Ctx<'_>, key: &str, s: &str) -> Result<SessionMode, ConfigError> {
    match s {
        "sliding" => Ok(SessionMode::Sliding),
        "fixed" => Ok(SessionMode::Fixed),
        _ => Err(ctx.err(key, "must be \"sliding\" or \"fixed\"")),
    }
}

fn color(
    ctx: &Ctx<'_>,
    key: &str,
    v: &Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    let Some(c) = v else {
        return Ok(default.to_owned());
    };
    let hex = c.strip_prefix('#').unwrap_or("");
    if (hex.len() == 3 || hex.len() == 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(c.to_ascii_lowercase())
    } else {
        Err(ctx.err(key, "must be a hex colour like \"#1a2b3c\""))
    }
}

fn build_room(
    ctx: &Ctx<'_>,
    i: usize,
    r: &RoomSection,
    seed_secret: [u8; 32],
) -> Result<Room, ConfigError> {
    let key = |f: &str| format!("rooms[{i}].{f}");
    if !valid_room_id(&r.id) {
        return Err(ctx.err(key("id"), "must be 1-32 characters of a-z, 0-9, '-' or '_'"));
    }
    if r.paths.is_empty() {
        return Err(ctx.err(key("paths"), "at least one path prefix is needed"));
    }
    for (j, p) in r.paths.iter().enumerate() {
        check_path(ctx, &key(&format!("paths[{j}]")), p)?;
    }
    let mut methods = Vec::new();
    for (j, m) in r.methods.iter().enumerate() {
        let up = m.to_ascii_uppercase();
        if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(&up.as_str()) {
            return Err(ctx.err(key(&format!("methods[{j}]")), "not an HTTP method"));
        }
        methods.push(up);
    }
    let mut s = RoomSettings::new(
        &r.id,
        nz(ctx, &key("new_users_per_minute"), r.new_users_per_minute)?,
        nz(ctx, &key("total_active_users"), r.total_active_users)?,
    );
    s.session_duration = ctx.duration(&key("session_duration"), &r.session_duration)?;
    s.session_mode = renewal(ctx, &key("session_renewal"), &r.session_renewal)?;
    s.method = method(ctx, &key("queueing_method"), &r.queueing_method)?;
    s.abandon_after = ctx.duration(&key("abandon_after"), &r.abandon_after)?;
    s.claim_window = ctx.duration(&key("claim_window"), &r.claim_window)?;
    s.poll_interval = ctx.duration(&key("poll_interval"), &r.poll_interval)?;
    s.tick = ctx.duration(&key("tick"), &r.tick)?;
    s.token_leeway = ctx.duration(&key("token_leeway"), &r.token_leeway)?;
    s.max_noshow = r.max_noshow_compensation;
    s.message = r.message.clone();
    s.seed_secret = seed_secret;
    for (j, e) in r.events.iter().enumerate() {
        s.events
            .push(build_event(ctx, &key(&format!("events[{j}]")), e)?);
    }
    // The core's own rules; its field names are relative to the room.
    s.validate().map_err(|e| {
        let field = match e.field.as_str() {
            "max_noshow" => "max_noshow_compensation".to_owned(),
            "session_mode" => "session_renewal".to_owned(),
            "method" => "queueing_method".to_owned(),
            other => other.to_owned(),
        };
        ctx.err(key(&field), e.reason)
    })?;
    if ![200, 202, 429].contains(&r.queueing_status_code) {
        return Err(ctx.err(key("queueing_status_code"), "must be 200, 202 or 429"));
    }
    let binding = match r.binding.as_str() {
        "none" => Binding::None,
        "user_agent" => Binding::UserAgent,
        "ip_prefix" => {
            if r.ip_prefix_v4 == 0 || r.ip_prefix_v4 > 32 {
                return Err(ctx.err(key("ip_prefix_v4"), "must be between 1 and 32"));
            }
            if r.ip_prefix_v6 == 0 || r.ip_prefix_v6 > 128 {
                return Err(ctx.err(key("ip_prefix_v6"), "must be between 1 and 128"));
            }
            Binding::IpPrefix {
                v4: r.ip_prefix_v4,
                v6: r.ip_prefix_v6,
            }
        }
        _ => return Err(ctx.err(key("binding"), "must be one of none, user_agent, ip_prefix")),
    };
    let on_store_error = match r.on_store_error.as_str() {
        "queue" => OnStoreError::Queue,
        "admit_at_floor_rate" => OnStoreError::AdmitAtFloorRate,
        _ => {
            return Err(ctx.err(
                key("on_store_error"),
                "must be \"queue\" or \"admit_at_floor_rate\"",
            ))
        }
    };
    let floor_rate_per_minute = match (on_store_error, r.floor_rate_per_minute) {
        (OnStoreError::AdmitAtFloorRate, Some(n)) if n > 0 => n,
        (OnStoreError::AdmitAtFloorRate, _) => {
            return Err(ctx.err(
                key("floor_rate_per_minute"),
                "must be > 0 when on_store_error = \"admit_at_floor_rate\"",
            ))
        }
        (OnStoreError::Queue, None) => 0,
        (OnStoreError::Queue, Some(_)) => {
            return Err(ctx.err(
                key("floor_rate_per_minute"),
                "only used with on_store_error = \"admit_at_floor_rate\"",
            ))
        }
    };
    let title = r
        .page
        .title
        .clone()
        .unwrap_or_else(|| "You're in line".to_owned());
    if title.len() > 200 {
        return Err(ctx.err(key("page.title"), "must be at most 200 bytes"));
    }
    let logo_url = r.page.logo_url.clone().unwrap_or_default();
    if !(logo_url.is_empty()
        || (logo_url.starts_with('/') && !logo_url.starts_with("//"))
        || logo_url.starts_with("https://"))
    {
        return Err(ctx.err(
            key("page.logo_url"),
            "must be a path on this site (\"/img/logo.svg\") or an https:// URL",
        ));
    }
    let bot = bot::build_room(ctx, &key("bot"), r.bot.as_ref())?;
    Ok(Room {
        settings: s,
        bot,
        hosts: r.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        paths: r.paths.clone(),
        methods,
        status_code: r.queueing_status_code,
        binding,
        on_store_error,
        origin_aware: shield::build_origin_aware(
            ctx,
            &key("origin_aware"),
            r.origin_aware.as_ref(),
        )?,
        floor_rate_per_minute,
        branding: Branding {
            title,
            logo_url,
            brand_color: color(
                ctx,
                &key("page.brand_color"),
                &r.page.brand_color,
                "#5b2a86",
            )?,
            background_color: color(
                ctx,
                &key("page.background_color"),
                &r.page.background_color,
                "#faf7fc",
            )?,
        },
    })
}

fn build_event(ctx: &Ctx<'_>, key: &str, e: &EventSection) -> Result<EventSettings, ConfigError> {
    let f = |name: &str| format!("{key}.{name}");
    Ok(EventSettings {
        name: e.name.clone(),
        id: EventSettings::id_for(&e.name),
        prequeue_at: e
            .prequeue_at
            .as_ref()
            .map(|p| ctx.time(&f("prequeue_at"), p))
            .transpose()?,
        starts_at: ctx.time(&f("starts_at"), &e.starts_at)?,
        ends_at: ctx.time(&f("ends_at"), &e.ends_at)?,
        shuffle: e.shuffle,
        new_users_per_minute: e
            .new_users_per_minute
            .map(|n| nz(ctx, &f("new_users_per_minute"), n))
            .transpose()?,
        total_active_users: e
            .total_active_users
            .map(|n| nz(ctx, &f("total_active_users"), n))
            .transpose()?,
        session_duration: e
            .session_duration
            .as_ref()
            .map(|d| ctx.duration(&f("session_duration"), d))
            .transpose()?,
        session_mode: e
            .session_renewal
            .as_ref()
            .map(|m| renewal(ctx, &f("session_renewal"), m))
            .transpose()?,
        method: e
            .queueing_method
            .as_ref()
            .map(|m| method(ctx, &f("queueing_method"), m))
            .transpose()?,
        message: e.message.clone(),
    })
}

#[cfg(test)]
pub(crate) mod test_fixture;
#[cfg(test)]
mod tests;
