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
//! The HTTP/1.1 server is hand-written on top of `tokio::net` (module
//! `http`) because the proxy crate deliberately has no general-purpose
//! HTTP server dependency; it supports keep-alive and pipelining and never
//! panics on bad input, which matters because tests throw bad input at it.
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
//! path is under `/api/`.

mod cart;
mod http;
mod inventory;
mod pages;
mod routes;
mod server;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    /// Requests rejected by the parser (answered 400/413/431/501/505).
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
}

/// Increments a statistics counter. Relaxed ordering: the counters are
/// independent tallies read only for reporting.
fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

#[derive(Debug)]
struct ShopInner {
    name: String,
    latency: Duration,
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
        Shop {
            inner: Arc::new(ShopInner {
                name,
                latency,
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

    /// Shop name from the config.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Units of `sku` currently in stock, or `None` for an unknown SKU.
    pub fn stock(&self, sku: &str) -> Option<u32> {
        self.inner.inventory.find(sku).map(|(_, item)| item.stock())
    }
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
