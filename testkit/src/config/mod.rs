//! The typed config builder: one base config for every node a test starts (listeners on free
//! ports, the test signing key, a store, the origin as the `shop` pool behind a catch-all
//! route), with the parts a test varies as fields — instead of a base TOML pasted per file —
//! and its rooms as typed [`Room`]s.

mod room;
mod route;

pub use room::{quote, rooms, Bot, Room, Table, Value};
pub use route::Route;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::{free_port, ADMIN_TOKEN_ENV, SECRET};

/// `[events]` written to the file `path` (one JSON event a line).
pub fn events_file(path: &std::path::Path) -> Table {
    Table::new()
        .set("sink", "file")
        .set("path", path.display().to_string())
}

/// Where the node keeps its room state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// The in-memory store (one node), snapshots every 50 ms.
    Memory,
    /// A fleet's Redis at this URL, snapshots every 50 ms, arrivals batched for 2 ms.
    Redis(String),
    /// The body of the `[store]` table as written.
    Raw(String),
}

/// Where the node's signing key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// [`SECRET`](crate::SECRET), inline.
    Test,
    /// This key, inline.
    Inline(String),
    /// `secret_env = NAME`: the key is in that environment variable (set it with
    /// [`Launch::env`](crate::Launch)).
    Env(String),
}

/// A node's config. [`Config::new`] picks free ports; the builder methods set the rest.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub admin_port: u16,
    /// The TLS listener's port (listened on only with [`Config::tls`]).
    pub tls_port: u16,
    /// What every node's file has: `[server]`, `[keys]`, `[store]`, the `shop` pool.
    pub base: Base,
    /// What follows the catch-all route.
    pub rest: Rest,
}

/// The sections every node's file has.
#[derive(Debug, Clone)]
pub struct Base {
    pub server: Server,
    pub secret: Secret,
    pub store: Store,
    pub shop: Shop,
    /// The whole file as written (a shipped config), instead of the base and the rest: the
    /// ports then only say where the node listens.
    pub text: Option<String>,
}

/// `[server]`, beyond the listeners.
#[derive(Debug, Clone)]
pub struct Server {
    pub threads: usize,
    /// `trusted_proxies` (X-Forwarded-For from these addresses is believed).
    pub trusted_proxies: Vec<String>,
    /// The admin API's bearer token, read from [`ADMIN_TOKEN_ENV`] by the node.
    pub admin_token: Option<String>,
    /// `tls_cert`, `tls_key`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// More lines, as written.
    pub lines: String,
}

/// `[upstreams.shop]`: the origin.
#[derive(Debug, Clone)]
pub struct Shop {
    /// The pool's one server.
    pub origin: SocketAddr,
    /// Connect and read timeouts.
    pub timeouts: (&'static str, &'static str),
    /// More lines (e.g. a health check).
    pub lines: String,
}

/// What follows the catch-all route.
#[derive(Debug, Clone, Default)]
pub struct Rest {
    /// More tables and routes, as text.
    pub extra: String,
    /// The rooms, after `extra`.
    pub rooms: Vec<Room>,
}

impl Config {
    /// The base config in front of `origin`, on three free ports.
    pub fn new(origin: SocketAddr) -> Self {
        let server = Server {
            threads: 2,
            trusted_proxies: Vec::new(),
            admin_token: None,
            tls: None,
            lines: String::new(),
        };
        let shop = Shop {
            origin,
            timeouts: ("500ms", "5s"),
            lines: String::new(),
        };
        let base = Base {
            server,
            secret: Secret::Test,
            store: Store::Memory,
            shop,
            text: None,
        };
        Self {
            port: free_port(),
            admin_port: free_port(),
            tls_port: free_port(),
            base,
            rest: Rest::default(),
        }
    }

    /// A config file as written that listens on `port` and `admin_port`.
    pub fn from_text(text: impl Into<String>, port: u16, admin_port: u16) -> Self {
        let unreachable = SocketAddr::from(([127, 0, 0, 1], 9));
        let mut cfg = Self::new(unreachable).ports(port, admin_port);
        cfg.base.text = Some(text.into());
        cfg
    }

    /// Listens on `port` and `admin_port` instead (for a file that is only parsed).
    #[must_use]
    pub fn ports(mut self, port: u16, admin_port: u16) -> Self {
        self.port = port;
        self.admin_port = admin_port;
        self
    }

    /// The same config on three new free ports (another node of a fleet).
    #[must_use]
    pub fn fresh_ports(mut self) -> Self {
        self.port = free_port();
        self.admin_port = free_port();
        self.tls_port = free_port();
        self
    }

    /// Rooms, routes and tables after the base (replaces what was there).
    #[must_use]
    pub fn extra(mut self, extra: impl Into<String>) -> Self {
        self.rest.extra = extra.into();
        self
    }

    /// One more top-level table, `[name]` (e.g. `bot`, `events`, `cache`), after `extra`.
    #[must_use]
    pub fn table(mut self, name: &str, table: Table) -> Self {
        self.rest.extra.push_str(&format!("\n[{name}]\n{table}"));
        self
    }

    /// One more route, after the catch-all `/` to the `shop` pool.
    #[must_use]
    pub fn route(mut self, route: Route) -> Self {
        self.rest.extra.push_str(&route.to_string());
        self
    }

    /// One more pool, `[upstreams.NAME]` (give it `servers`).
    #[must_use]
    pub fn upstream(self, name: &str, keys: Table) -> Self {
        self.table(&format!("upstreams.{name}"), keys)
    }

    /// One more room.
    #[must_use]
    pub fn room(mut self, room: Room) -> Self {
        self.rest.rooms.push(room);
        self
    }

    /// A fleet node on the Redis at `url`.
    #[must_use]
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.base.store = Store::Redis(url.into());
        self
    }

    /// `body` as the `[store]` table.
    #[must_use]
    pub fn store(mut self, body: impl Into<String>) -> Self {
        self.base.store = Store::Raw(body.into());
        self
    }

    /// Believes `X-Forwarded-For` from loopback (tests play clients at many addresses).
    #[must_use]
    pub fn trusting_loopback(self) -> Self {
        self.trusting(&["127.0.0.1/32"])
    }

    /// The admin API wants this bearer token.
    #[must_use]
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.base.server.admin_token = Some(token.into());
        self
    }

    /// The TLS listener with this certificate and key.
    #[must_use]
    pub fn tls(mut self, cert: PathBuf, key: PathBuf) -> Self {
        self.base.server.tls = Some((cert, key));
        self
    }

    /// The signing key from the environment variable `var`.
    #[must_use]
    pub fn secret_env(mut self, var: impl Into<String>) -> Self {
        self.base.secret = Secret::Env(var.into());
        self
    }

    /// The `shop` pool's read timeout, e.g. `"10s"`.
    #[must_use]
    pub fn read_timeout(mut self, timeout: &'static str) -> Self {
        self.base.shop.timeouts.1 = timeout;
        self
    }

    /// The `shop` pool's connect timeout, e.g. `"1s"`.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: &'static str) -> Self {
        self.base.shop.timeouts.0 = timeout;
        self
    }

    /// `threads` worker threads (2 unless set).
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.base.server.threads = threads;
        self
    }

    /// Believes `X-Forwarded-For` from `proxies` (addresses or CIDRs).
    #[must_use]
    pub fn trusting(mut self, proxies: &[&str]) -> Self {
        self.base.server.trusted_proxies = proxies.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    /// This signing key, inline (instead of [`SECRET`]).
    #[must_use]
    pub fn secret(mut self, key: &str) -> Self {
        self.base.secret = Secret::Inline(key.to_owned());
        self
    }

    /// One more line for `[server]`.
    #[must_use]
    pub fn server_line(mut self, line: &str) -> Self {
        self.base.server.lines.push_str(line);
        self.base.server.lines.push('\n');
        self
    }

    /// One more line for `[upstreams.shop]`.
    #[must_use]
    pub fn pool_line(mut self, line: &str) -> Self {
        self.base.shop.lines.push_str(line);
        self.base.shop.lines.push('\n');
        self
    }

    /// The public listener's URL.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The admin listener's URL.
    pub fn admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let Base {
            server,
            secret,
            store,
            shop,
            text,
        } = &self.base;
        if let Some(text) = text {
            return text.clone();
        }
        let (port, admin_port) = (self.port, self.admin_port);
        let threads = server.threads;
        let server = server.render(self.tls_port);
        let secret = match secret {
            Secret::Test => format!("secret = \"{SECRET}\""),
            Secret::Inline(key) => format!("secret = {}", quote(key)),
            Secret::Env(var) => format!("secret_env = \"{var}\""),
        };
        let store = match store {
            Store::Memory => "snapshot_interval = \"50ms\"".to_owned(),
            Store::Redis(url) => format!(
                "kind = \"redis\"\nurl = \"{url}\"\nsnapshot_interval = \"50ms\"\nbatch_window = \"2ms\""
            ),
            Store::Raw(body) => body.clone(),
        };
        let Shop {
            origin,
            timeouts: (connect_timeout, read_timeout),
            lines: pool,
        } = shop;
        format!(
            r#"
[server]
listen = ["127.0.0.1:{port}"]
admin_listen = "127.0.0.1:{admin_port}"
threads = {threads}
{server}
[keys]
active = 1
[[keys.key]]
id = 1
{secret}

[store]
{store}

[upstreams.shop]
servers = ["{origin}"]
connect_timeout = "{connect_timeout}"
read_timeout = "{read_timeout}"
{pool}
[[routes]]
path = "/"
upstream = "shop"

{extra}{rooms}
"#,
            extra = self.rest.extra,
            rooms = rooms(&self.rest.rooms),
        )
    }
}

impl Server {
    /// The lines of `[server]` after the listeners (`tls_port` for a TLS listener).
    fn render(&self, tls_port: u16) -> String {
        let mut out = String::new();
        if !self.trusted_proxies.is_empty() {
            let list: Vec<String> = self.trusted_proxies.iter().map(|p| quote(p)).collect();
            let _ = writeln!(out, "trusted_proxies = [{}]", list.join(", "));
        }
        if self.admin_token.is_some() {
            let _ = writeln!(out, "admin_token_env = \"{ADMIN_TOKEN_ENV}\"");
        }
        if let Some((cert, key)) = &self.tls {
            let _ = writeln!(
                out,
                "tls_listen = [\"127.0.0.1:{tls_port}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"",
                cert.display(),
                key.display()
            );
        }
        out.push_str(&self.lines);
        out
    }
}
