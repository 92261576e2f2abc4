//! Demo shop: the origin server Flashgate protects in demos, integration
//! tests and benchmarks.
//!
//! It plays the part of a small cosmetics store running a limited drop, so
//! that the proxy can be exercised end to end against something realistic:
//! cacheable catalog pages, a private cart, a checkout that races for scarce
//! stock, and the `X-Flashgate-Command` response headers with which an origin
//! steers the waiting room (`sold-out` when the last unit sells, `revoke`
//! when a shopper is done).
//!
//! HTTP/1.1 is hyper's (module `server`: keep-alive, pipelining, `Expect: 100-continue`,
//! chunked bodies, and clean refusals of malformed input); the shop adds a body limit (413),
//! the faults below, and its counters. It is its own crate so that the proxy carries no HTTP
//! server of its own, and it is the benchmark origin, so a request costs it one small
//! allocation for the header list and one for the response body at most.
//!
//! # Endpoints
//!
//! | Route | Purpose |
//! | --- | --- |
//! | `GET /`, `GET /products`, `GET /api/products` | catalog (`Cache-Control: public, max-age=5`) |
//! | `GET /products/{sku}`, `GET /api/products/{sku}` | product page (cacheable too) |
//! | `POST /cart` (`sku`, `qty`; form or JSON), `GET /cart` | cart kept in the shop's own `shop_cart` cookie |
//! | `POST /checkout` (`sku`+`qty`, or the cart) | places an order; 201, or 409 when sold out |
//! | `GET /api/inventory` | live stock levels |
//! | `POST /logout-queue`, `GET /done` | "thanks" page carrying `X-Flashgate-Command: revoke` |
//! | `GET /healthz` | liveness |
//! | `ANY /echo` | JSON echo of the request as received, for asserting what the proxy forwards |
//! | `GET /api/stats` | [`ShopStats`] as JSON, for load tests running the shop in another process |
//!
//! HTML is served unless the client sends `Accept: application/json` or the
//! path is under `/api/`. Cacheable pages outside `/api/` say `Vary: Accept`,
//! so a shared cache keeps the two forms apart.
//!
//! # Misbehaving on purpose
//!
//! Tests and benchmarks turn a healthy shop into a struggling one at run
//! time, without restarting it: [`Shop::set_latency`] (every request),
//! [`Shop::set_failing`] (every request answered with one status),
//! [`Shop::set_path_fault`] (latency, status or response headers for one
//! path prefix) and [`Shop::set_down`] (connections refused). Requests are
//! counted per exact path ([`Shop::path_requests`]) whether or not a fault
//! answered them, so a test can count what reached the origin.

mod cart;
mod http;
mod inventory;
mod pages;
mod routes;
mod server;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use inventory::Inventory;

/// Name of the response header with which an origin sends commands to
/// Flashgate. Flashgate acts on it and strips it before the client sees it.
pub const COMMAND_HEADER: &str = "X-Flashgate-Command";

/// One item for sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Stable identifier, used in URLs and in the cart cookie, hence limited
    /// to 1–64 characters of `[A-Za-z0-9_-]`.
    pub sku: String,
    pub name: String,
    pub price_cents: u64,
    /// Units available when the shop starts.
    pub stock: u32,
}

/// What the shop sells and how it behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShopConfig {
    pub products: Vec<Product>,
    /// Shown in page titles and headers.
    pub name: String,
    /// Artificial delay added before every response. Lets tests and
    /// benchmarks model a slow origin (and so queue build-up in Flashgate)
    /// without a real backend. Zero by default. Written as `latency_ms` in
    /// config files.
    #[serde(rename = "latency_ms", with = "millis")]
    pub latency: Duration,
}

impl ShopConfig {
    /// A cosmetics launch: one heavily hyped limited-edition kit (the first
    /// product, 500 units — the thing everybody queues for) plus four
    /// regular products with deeper stock.
    pub fn demo() -> Self {
        let product = |sku: &str, name: &str, price_cents, stock| Product {
            sku: sku.to_owned(),
            name: name.to_owned(),
            price_cents,
            stock,
        };
        ShopConfig {
            name: "Aurora Beauty".to_owned(),
            products: vec![
                product(
                    "AURORA-LIP-KIT",
                    "Aurora Lip Kit — Limited Edition",
                    3_200,
                    500,
                ),
                product("NOVA-HIGHLIGHTER", "Nova Glow Highlighter", 2_800, 2_000),
                product("ECLIPSE-PALETTE", "Eclipse Eyeshadow Palette", 5_400, 1_500),
                product("DEW-SETTING-SPRAY", "Dew Setting Spray", 2_200, 5_000),
                product("HALO-BRUSH-SET", "Halo Brush Set", 4_600, 1_000),
            ],
            latency: Duration::ZERO,
        }
    }

    /// Checks the constraints that URLs and the cart cookie rely on.
    pub fn validate(&self) -> Result<(), ShopConfigError> {
        let mut seen = std::collections::HashSet::new();
        for p in &self.products {
            if !valid_sku(&p.sku) {
                return Err(ShopConfigError::InvalidSku(p.sku.clone()));
            }
            if !seen.insert(p.sku.as_str()) {
                return Err(ShopConfigError::DuplicateSku(p.sku.clone()));
            }
        }
        Ok(())
    }
}

impl Default for ShopConfig {
    /// The demo catalog, so that a config file only needs to override what
    /// it cares about.
    fn default() -> Self {
        Self::demo()
    }
}

fn valid_sku(sku: &str) -> bool {
    (1..=64).contains(&sku.len())
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A product in a [`ShopConfig`] that the shop cannot serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShopConfigError {
    /// The SKU is empty, longer than 64 bytes, or not `[A-Za-z0-9_-]`.
    InvalidSku(String),
    DuplicateSku(String),
}

impl fmt::Display for ShopConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShopConfigError::InvalidSku(sku) => write!(
                f,
                "invalid SKU {sku:?}: use 1-64 characters of A-Z, a-z, 0-9, '-' and '_'"
            ),
            ShopConfigError::DuplicateSku(sku) => write!(f, "duplicate SKU {sku:?}"),
        }
    }
}

impl std::error::Error for ShopConfigError {}

/// Request counts per kind of endpoint, so tests can check where traffic
/// went (e.g. that cached catalog pages stop reaching the origin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PathCounts {
    /// `/`, `/products`, `/api/products`.
    pub catalog: u64,
    /// `/products/{sku}`, `/api/products/{sku}`.
    pub product: u64,
    pub cart: u64,
    pub checkout: u64,
    pub inventory: u64,
    /// `/logout-queue` and `/done`.
    pub queue: u64,
    pub health: u64,
    pub echo: u64,
    pub stats: u64,
    /// Anything that matched no route.
    pub other: u64,
}

/// A snapshot of the shop's counters since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShopStats {
    /// TCP connections accepted (and not refused because the shop was down).
    /// With keep-alive this stays far below `requests`.
    pub connections: u64,
    /// Well-formed requests received.
    pub requests: u64,
    /// Requests carrying a cookie whose name starts with `fg_`. Flashgate
    /// must strip its own cookies before forwarding, so behind the proxy
    /// this must stay zero.
    pub requests_with_fg_cookie: u64,
    /// Requests refused before reaching the router: malformed (400, 431, counted per
    /// connection that ended on a parse error) or with a body over the limit (413).
    pub bad_requests: u64,
    pub orders: u64,
    pub units_sold: u64,
    /// Checkouts answered 409 for lack of stock.
    pub sold_out_rejections: u64,
    pub by_path: PathCounts,
}

/// Internal counter for one [`PathCounts`] field.
#[derive(Debug, Clone, Copy)]
enum PathClass {
    Catalog,
    Product,
    Cart,
    Checkout,
    Inventory,
    Queue,
    Health,
    Echo,
    Stats,
    Other,
}

impl PathClass {
    const COUNT: usize = PathClass::Other as usize + 1;

    /// The class of `path` whatever the method (the router's classes do not depend on it).
    fn of(path: &str) -> Self {
        match path {
            "/" | "/products" | "/api/products" => Self::Catalog,
            "/cart" | "/api/cart" => Self::Cart,
            "/checkout" | "/api/checkout" => Self::Checkout,
            "/api/inventory" => Self::Inventory,
            "/logout-queue" | "/done" => Self::Queue,
            "/healthz" => Self::Health,
            "/echo" => Self::Echo,
            "/api/stats" => Self::Stats,
            _ if path.starts_with("/products/") || path.starts_with("/api/products/") => {
                Self::Product
            }
            _ => Self::Other,
        }
    }
}

/// At most this many distinct paths are counted one by one (see
/// [`Shop::path_requests`]); requests for paths beyond are counted only in
/// [`ShopStats`]. Bounds the memory a crawler of random URLs can cost.
pub const MAX_COUNTED_PATHS: usize = 4096;

/// Misbehaviour for one path prefix, set with [`Shop::set_path_fault`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathFault {
    /// Delay before answering, instead of the shop-wide latency.
    pub latency: Option<Duration>,
    /// Answer with this status (an error page, `Cache-Control: private,
    /// no-store`) instead of handling the request. Invalid codes answer 500.
    pub status: Option<u16>,
    /// Replaces the response's `Cache-Control` (e.g. `"private"` on a
    /// catalog page, to check that a proxy does not share it).
    pub cache_control: Option<&'static str>,
    /// Extra header fields added to the response, e.g. `("Set-Cookie", ..)`.
    pub headers: Vec<(&'static str, String)>,
}

/// Header fields a [`PathFault`] adds to responses.
type ExtraHeaders = Vec<(&'static str, String)>;

/// The faults in force: shop-wide knobs and per-prefix rules.
#[derive(Debug, Default)]
struct Faults {
    /// Shop-wide latency in microseconds.
    latency_us: AtomicU64,
    /// Shop-wide failure status; 0 = answer normally.
    failing: AtomicU32,
    /// Per-prefix rules; the longest matching prefix wins.
    paths: RwLock<Vec<(String, PathFault)>>,
    /// Whether `paths` has any rule: the common case (none) takes no lock.
    any_paths: AtomicBool,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    requests_with_fg_cookie: AtomicU64,
    bad_requests: AtomicU64,
    orders: AtomicU64,
    units_sold: AtomicU64,
    sold_out_rejections: AtomicU64,
    by_path: [AtomicU64; PathClass::COUNT],
    /// Requests per exact path (at most [`MAX_COUNTED_PATHS`] paths).
    exact: Mutex<HashMap<String, u64>>,
}

/// Increments a statistics counter. Relaxed ordering: the counters are
/// independent tallies read only for reporting.
fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

#[derive(Debug)]
struct ShopInner {
    name: String,
    faults: Faults,
    inventory: Inventory,
    counters: Counters,
    /// `true` while the shop plays dead. A watch channel rather than a bare
    /// flag so that idle keep-alive connections notice immediately and
    /// close, instead of only on their next request.
    down: watch::Sender<bool>,
}

/// The demo shop. Cheap to clone: all clones share the same inventory,
/// counters and up/down switch, so a test can keep one to inspect while
/// another is serving.
#[derive(Debug, Clone)]
pub struct Shop {
    inner: Arc<ShopInner>,
}

impl Shop {
    /// Builds a shop, leaving out (with a warning) any product that fails
    /// [`ShopConfig::validate`] — a demo should come up even with a sloppy
    /// config. Use [`Shop::try_new`] to reject such configs instead.
    pub fn new(cfg: ShopConfig) -> Self {
        let mut seen = std::collections::HashSet::new();
        let products = cfg
            .products
            .into_iter()
            .filter(|p| {
                let ok = valid_sku(&p.sku) && seen.insert(p.sku.clone());
                if !ok {
                    tracing::warn!(sku = %p.sku, "shop: skipping product with invalid or duplicate SKU");
                }
                ok
            })
            .collect();
        Self::build(cfg.name, products, cfg.latency)
    }

    /// Builds a shop, failing on the first product that
    /// [`ShopConfig::validate`] rejects.
    pub fn try_new(cfg: ShopConfig) -> Result<Self, ShopConfigError> {
        cfg.validate()?;
        Ok(Self::build(cfg.name, cfg.products, cfg.latency))
    }

    fn build(name: String, products: Vec<Product>, latency: Duration) -> Self {
        let faults = Faults::default();
        faults
            .latency_us
            .store(duration_us(latency), Ordering::Relaxed);
        Shop {
            inner: Arc::new(ShopInner {
                name,
                faults,
                inventory: Inventory::new(products),
                counters: Counters::default(),
                down: watch::Sender::new(false),
            }),
        }
    }

    /// Serves HTTP on an already-bound listener until `shutdown` resolves.
    ///
    /// Taking a bound listener (rather than an address) lets tests bind
    /// `127.0.0.1:0` and learn the port before the server starts, with no
    /// race. On shutdown the listener is closed at once, connections finish
    /// the request they are working on, and the call returns when all
    /// connections are gone (or after a short grace period).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        server::serve(self, listener, shutdown).await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ShopStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let path = |class: PathClass| get(&c.by_path[class as usize]);
        ShopStats {
            connections: get(&c.connections),
            requests: get(&c.requests),
            requests_with_fg_cookie: get(&c.requests_with_fg_cookie),
            bad_requests: get(&c.bad_requests),
            orders: get(&c.orders),
            units_sold: get(&c.units_sold),
            sold_out_rejections: get(&c.sold_out_rejections),
            by_path: PathCounts {
                catalog: path(PathClass::Catalog),
                product: path(PathClass::Product),
                cart: path(PathClass::Cart),
                checkout: path(PathClass::Checkout),
                inventory: path(PathClass::Inventory),
                queue: path(PathClass::Queue),
                health: path(PathClass::Health),
                echo: path(PathClass::Echo),
                stats: path(PathClass::Stats),
                other: path(PathClass::Other),
            },
        }
    }

    /// Simulates an origin outage. While down, new connections are closed
    /// as soon as they are accepted and existing ones are closed without a
    /// response — the harshest failure a proxy sees, used to test
    /// Flashgate's error page and retry behaviour. `set_down(false)` brings
    /// the shop back; listeners keep running throughout.
    pub fn set_down(&self, down: bool) {
        self.inner.down.send_replace(down);
    }

    pub fn is_down(&self) -> bool {
        *self.inner.down.borrow()
    }

    /// Delays every response by `latency` from now on (replacing
    /// [`ShopConfig::latency`]); paths with a [`PathFault::latency`] keep
    /// theirs. Requests already waiting keep the delay they started with.
    pub fn set_latency(&self, latency: Duration) {
        self.inner
            .faults
            .latency_us
            .store(duration_us(latency), Ordering::Relaxed);
    }

    /// Answers every request with `status` (an error page that may not be
    /// cached) instead of handling it, until `set_failing(None)`. Paths with a
    /// [`PathFault::status`] keep theirs. Failed requests are still counted.
    pub fn set_failing(&self, status: Option<u16>) {
        self.inner
            .faults
            .failing
            .store(status.map_or(0, u32::from), Ordering::Relaxed);
    }

    /// Sets (or with `None` clears) the misbehaviour of every path that
    /// starts with `prefix`. Field by field, the longest matching prefix
    /// that sets the field wins, else the shop-wide knob applies.
    pub fn set_path_fault(&self, prefix: &str, fault: Option<PathFault>) {
        let mut paths = self.inner.faults.paths.write();
        paths.retain(|(p, _)| p != prefix);
        if let Some(f) = fault {
            paths.push((prefix.to_owned(), f));
            paths.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        }
        self.inner
            .faults
            .any_paths
            .store(!paths.is_empty(), Ordering::Relaxed);
    }

    /// Well-formed requests received for exactly `path` (no query), since the
    /// shop was created, whatever the method or answer. Counted on arrival,
    /// before any latency, so a request still being delayed is included.
    pub fn path_requests(&self, path: &str) -> u64 {
        self.inner
            .counters
            .exact
            .lock()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// The delay before answering a request for `path`.
    fn latency_for(&self, path: &str) -> Duration {
        let f = &self.inner.faults;
        self.path_fault(path, |p| p.latency)
            .unwrap_or_else(|| Duration::from_micros(f.latency_us.load(Ordering::Relaxed)))
    }

    /// The status to fail a request for `path` with, if any.
    fn failing_for(&self, path: &str) -> Option<u16> {
        self.path_fault(path, |p| p.status).or_else(|| {
            match self.inner.faults.failing.load(Ordering::Relaxed) {
                0 => None,
                s => Some(u16::try_from(s).unwrap_or(500)),
            }
        })
    }

    /// `field` of the longest-prefix rule for `path` that sets it.
    fn path_fault<T>(&self, path: &str, field: impl Fn(&PathFault) -> Option<T>) -> Option<T> {
        if !self.inner.faults.any_paths.load(Ordering::Relaxed) {
            return None;
        }
        let paths = self.inner.faults.paths.read();
        paths
            .iter()
            .filter(|(p, _)| path.starts_with(p.as_str()))
            .find_map(|(_, f)| field(f))
    }

    /// Header changes for a response to `path`: the `Cache-Control` to use
    /// and extra fields, each from the longest matching rule that sets it.
    fn response_overrides(&self, path: &str) -> (Option<&'static str>, Option<ExtraHeaders>) {
        (
            self.path_fault(path, |f| f.cache_control),
            self.path_fault(path, |f| (!f.headers.is_empty()).then(|| f.headers.clone())),
        )
    }

    /// Counts one request for exactly `path`.
    fn count_path(&self, path: &str) {
        let mut exact = self.inner.counters.exact.lock();
        if let Some(n) = exact.get_mut(path) {
            *n += 1;
        } else if exact.len() < MAX_COUNTED_PATHS {
            exact.insert(path.to_owned(), 1);
        }
    }

    /// Shop name from the config.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Units of `sku` currently in stock, or `None` for an unknown SKU.
    pub fn stock(&self, sku: &str) -> Option<u32> {
        self.inner.inventory.find(sku).map(|(_, item)| item.stock())
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Serde adapter storing a [`Duration`] as whole milliseconds, the unit
/// people actually write in config files.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests;
