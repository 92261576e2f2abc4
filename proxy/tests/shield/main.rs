//! The origin shield end to end: a real flashgate process in front of the demo shop, real
//! HTTP over loopback. The shop's run-time knobs (`set_latency`, `set_failing`,
//! `set_path_fault`, `set_down`) play the struggling origin, and its per-path counters count
//! what reached it. Nothing sleeps to synchronise: every wait polls an observable state
//! (a response header, a counter, the admin API) under a deadline. Latency assertions only
//! separate "answered from the cache" from "waited for a 2 s origin", with wide margins.

mod admission;
mod cache;
mod shed;
mod stale;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashgate::shop::{PathFault, Shop};
use serde_json::{json, Value};
use testkit::config::Table;
use testkit::shopper::{self, Poll, Reply as Got};
use testkit::{wait_until, Config, Node, Origin, Room, Route};
use tokio::task::JoinSet;

/// How slow the "slow origin" is.
const SLOW: Duration = Duration::from_secs(2);
/// A response that took less than this did not wait for the slow origin (which takes
/// [`SLOW`]): the margin absorbs a loaded machine.
const FAST: Duration = Duration::from_millis(1500);

/// The demo shop, a node in front of it on `config(&origin)`, and a client without cookies.
async fn start(config: impl FnOnce(&Origin) -> Config) -> (Origin, Node, reqwest::Client) {
    let origin = Origin::start().await;
    let fg = Node::start(&config(&origin)).await;
    (origin, fg, shopper::client())
}

async fn get(c: &reqwest::Client, url: &str) -> Got {
    shopper::get(c, url, &[]).await
}

/// Repeats `GET url` (every 20 ms) until `done` holds for the response (deadline `within`);
/// returns it.
async fn get_until(
    c: &reqwest::Client,
    url: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&Got) -> bool,
) -> Got {
    let poll = Poll::every(Duration::from_millis(20)).within(within);
    shopper::get_until(c, url, &[], poll, what, done).await
}

/// Repeats `GET path` at `fg` until the answer is no longer a fresh hit (the copy passed its TTL):
/// stale, revalidated, or an error (deadline `within`); returns it.
async fn past_ttl(c: &reqwest::Client, fg: &Node, path: &str, within: Duration, what: &str) -> Got {
    get_until(c, &fg.url(path), within, what, |g| g.cache() != Some("hit")).await
}

/// A shed answer: 503 with a `Retry-After` of at least `secs`.
fn assert_shed(g: &Got, secs: u64) {
    assert_eq!(g.status, 503);
    assert!(g.retry_after() >= secs, "{:?}", g.header("retry-after"));
}

async fn purge(fg: &Node, body: Value) -> (u16, Value) {
    fg.admin_req("POST", "/api/cache/purge", Some(body)).await
}

async fn cache_report(fg: &Node) -> Value {
    let (code, report) = fg.admin_req("GET", "/api/cache", None).await;
    assert_eq!(code, 200, "{report}");
    report
}

/// The origin as the pool `name` (with `keys` beyond its server) serving `routes`, the shop's
/// own `/echo` and `/healthz` among them, beside the base config's `shop` pool.
fn own_pool(origin: &Origin, name: &str, keys: Table, routes: Vec<Route>) -> Config {
    let pool = keys.set("servers", [origin.addr.to_string().as_str()]);
    let basics = [Route::new("/echo"), Route::new("/healthz")];
    basics
        .into_iter()
        .chain(routes)
        .fold(Config::new(origin.addr).upstream(name, pool), |cfg, r| {
            cfg.route(r.upstream(name))
        })
}

/// A catalog route at `path` (to the `shop` pool): cached for `ttl`, served stale while it
/// revalidates for `swr` and on origin errors for `sie` (`None`: the `[cache]` default).
fn catalog(path: &str, ttl: Option<&str>, swr: Option<&str>, sie: Option<&str>) -> Route {
    let mut r = Route::new(path).kind("catalog");
    for (key, value) in [
        ("cache_ttl", ttl),
        ("stale_while_revalidate", swr),
        ("stale_if_error", sie),
    ] {
        if let Some(v) = value {
            r = r.set(key, v);
        }
    }
    r
}
