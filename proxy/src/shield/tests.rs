//! Engine tests: a real config, synthetic clocks, the gate's part played by hand, and the
//! demo shop (and a few raw TCP origins) on 127.0.0.1:0 for the refresh fetcher.
//!
//! Nothing sleeps to synchronise: waiting is on the engine's own signals, and time-based
//! cases run on tokio's paused clock or on `Instant`s passed in.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderMap;
use http::{HeaderValue, Method};
use pingora::http::ResponseHeader;
use pingora::lb::LoadBalancer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::config::test_fixture::{self, Room, Table, KEYS};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::shop::{Shop, ShopConfig};

const LIMIT: Duration = Duration::from_secs(10);

/// What a test adds to [`config`]: lines for `[cache]`, the shop pool and the catch-all
/// catalog route, and the shop's port.
#[derive(Debug, Clone, Copy)]
struct Lines {
    cache: &'static str,
    pool: &'static str,
    catalog_route: &'static str,
    port: u16,
}

impl Default for Lines {
    /// Nothing added; the shop on port 9 (nothing listens: these tests fetch nothing).
    fn default() -> Self {
        Self {
            cache: "",
            pool: "",
            catalog_route: "",
            port: 9,
        }
    }
}

impl Lines {
    fn cache(cache: &'static str) -> Self {
        Self {
            cache,
            ..Self::default()
        }
    }

    fn pool(pool: &'static str) -> Self {
        Self {
            pool,
            ..Self::default()
        }
    }

    fn catalog_route(catalog_route: &'static str) -> Self {
        Self {
            catalog_route,
            ..Self::default()
        }
    }

    fn on_port(port: u16) -> Self {
        Self {
            port,
            ..Self::default()
        }
    }
}

/// [`config`] with nothing added.
fn plain() -> Config {
    config(Lines::default())
}

/// The shop behind a catalog route for everything, essential, optional and default routes,
/// and a room over the whole shop that follows the origin's health; `lines` added.
fn config(lines: Lines) -> Config {
    let Lines {
        cache,
        pool,
        catalog_route,
        port,
    } = lines;
    let health = Table::new()
        .set("min_factor", 0.5)
        .set("latency_target", "200ms");
    let launch = Room::new("launch")
        .paths(&["/"])
        .table("origin_aware", health);
    let shop = test_fixture::shop_pool(&format!("127.0.0.1:{port}"));
    let routes = [
        test_fixture::route("/", Some("catalog"), catalog_route),
        test_fixture::route("/checkout", Some("essential"), ""),
        test_fixture::route("/reviews", Some("optional"), ""),
        test_fixture::route("/account", None, ""),
    ]
    .concat();
    let text = format!(
        "{KEYS}\n[cache]\n{cache}\n{shop}connect_timeout = \"1s\"\nread_timeout = \"2s\"\n\
         {pool}\n{routes}{launch}"
    );
    test_fixture::parse("test.toml", &text)
}

struct Rig {
    cfg: Config,
    shield: Shield,
    metrics: Arc<Metrics>,
}

impl Rig {
    fn new(cfg: Config) -> Self {
        Self::with_fetcher(cfg, None)
    }

    fn with_fetcher(cfg: Config, fetcher: Option<Arc<dyn Fetcher>>) -> Self {
        let metrics = Arc::new(Metrics::new());
        let shield = Shield::new(cfg.shield_plan(), metrics.clone(), fetcher);
        Self {
            cfg,
            shield,
            metrics,
        }
    }

    fn catalog(&self) -> &crate::config::Route {
        &self.cfg.routes[0]
    }

    fn route(&self, path: &str) -> &crate::config::Route {
        self.cfg
            .routes
            .iter()
            .find(|r| r.path == path)
            .expect("route in the test config")
    }

    fn results(&self, result: &str) -> u64 {
        self.metrics
            .cache_results
            .with_label_values(&["catalog", result])
            .get()
    }

    fn lookup(&self, key: &CacheKey, h: &HeaderMap, now: Instant) -> Lookup {
        self.shield.lookup(self.catalog(), key, h, now)
    }

    /// A lookup that must resolve at once.
    fn ready(&self, key: &CacheKey, h: &HeaderMap, now: Instant) -> Resolved {
        match self.lookup(key, h, now) {
            Lookup::Ready(r) => r,
            Lookup::Wait(_) => panic!("unexpected wait for {}", key.family()),
        }
    }

    fn leader(&self, key: &CacheKey, h: &HeaderMap, now: Instant) -> FillGuard {
        match self.ready(key, h, now) {
            Resolved::Miss(Some(g)) => g,
            other => panic!("expected a leader, got {other:?}"),
        }
    }

    /// Stores `body` for `key` at `now`, as a 200 with `Cache-Control: cache_control`.
    fn store(&self, key: &CacheKey, cache_control: &str, body: &str, now: Instant) {
        let r = resp(200, &[("cache-control", cache_control)]);
        fill(self.leader(key, &no_headers(), now), &r, body, now).expect("stored");
    }
}

/// A rig on [`plain`], the key of `pq`, no request headers, and the time now: a lookup's
/// arguments for a fresh cache.
fn fresh(pq: &str) -> (Rig, CacheKey, HeaderMap, Instant) {
    (Rig::new(plain()), key(pq), no_headers(), Instant::now())
}

fn key(pq: &str) -> CacheKey {
    CacheKey::new(&Method::GET, "shop.example", pq).expect("GET key")
}

fn no_headers() -> HeaderMap {
    HeaderMap::new()
}

fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in list {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

fn resp(status: u16, list: &[(&str, &str)]) -> ResponseHeader {
    let mut r = ResponseHeader::build(status, None).expect("response");
    for (k, v) in list {
        r.append_header(k.to_string(), v.to_string())
            .expect("header");
    }
    r
}

/// Plays the gate's response path: header, body in two chunks, end.
fn fill(
    mut g: FillGuard,
    r: &ResponseHeader,
    body: &str,
    now: Instant,
) -> Result<Arc<Entry>, NotStored> {
    g.header(r, now)?;
    let (a, b) = body.split_at(body.len() / 2);
    g.chunk(a.as_bytes());
    g.chunk(b.as_bytes());
    g.finish()
}

fn body(e: &Entry) -> &str {
    std::str::from_utf8(&e.body).expect("utf-8 body")
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn miss_fill_hit_and_the_response_header() {
    let (rig, k, _, t0) = fresh("/products?b=2&a=1");
    let g = rig.leader(&k, &no_headers(), t0);
    let r = resp(
        200,
        &[
            ("cache-control", "public, max-age=60"),
            ("content-type", "text/html"),
            ("content-length", "11"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("x-flashgate-debug", "1"),
            ("etag", "\"v1\""),
        ],
    );
    fill(g, &r, "hello world", t0).expect("stored");
    assert_eq!(rig.shield.fills_in_flight(), 0);

    // Same resource, parameters in another order.
    let Resolved::Hit(e) = rig.ready(&key("/products?a=1&b=2"), &no_headers(), t0 + secs(3)) else {
        panic!("expected a hit");
    };
    assert_eq!(body(&e), "hello world");
    let h = e
        .response_header(t0 + secs(3), CacheStatus::Hit)
        .expect("header");
    assert_eq!(h.status.as_u16(), 200);
    let get = |n: &str| h.headers.get(n).and_then(|v| v.to_str().ok());
    assert_eq!(get("age"), Some("3"));
    assert_eq!(get("content-length"), Some("11"));
    assert_eq!(get(CACHE_HEADER), Some("hit"));
    assert_eq!(get("etag"), Some("\"v1\""));
    assert_eq!(get("content-type"), Some("text/html"));
    for gone in [
        "connection",
        "x-hop",
        "transfer-encoding",
        "x-flashgate-debug",
    ] {
        assert_eq!(get(gone), None, "{gone} is not stored");
    }
    assert_eq!(rig.results("miss"), 1);
    assert_eq!(rig.results("hit"), 1);
}

#[test]
fn routes_without_caching_and_uncacheable_requests_bypass() {
    let rig = Rig::new(plain());
    let account = rig.route("/account");
    match rig
        .shield
        .lookup(account, &key("/account"), &no_headers(), Instant::now())
    {
        Lookup::Ready(Resolved::Bypass(Bypass::Route)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.results("bypass"), 0, "not cache traffic");
}

#[test]
fn stale_windows_in_order() {
    let (rig, k, _, t0) = fresh("/p");
    rig.store(
        &k,
        "max-age=10, stale-while-revalidate=5, stale-if-error=60",
        "v1",
        t0,
    );
    let h = no_headers();

    assert!(matches!(rig.ready(&k, &h, t0 + secs(9)), Resolved::Hit(_)));
    // Stale-while-revalidate window: stale at once (no fetcher here, so no refresh).
    assert!(matches!(
        rig.ready(&k, &h, t0 + secs(12)),
        Resolved::Stale(_)
    ));
    // Stale-if-error window: one request revalidates, the others get the stale copy.
    let leader = rig.leader(&k, &h, t0 + secs(20));
    for _ in 0..3 {
        assert!(matches!(
            rig.ready(&k, &h, t0 + secs(20)),
            Resolved::Stale(_)
        ));
    }
    // The revalidation fails: the copy is still there for the error path.
    drop(leader);
    let e = rig
        .shield
        .stale_for(rig.catalog(), &k, &h, t0 + secs(20))
        .expect("inside stale-if-error");
    assert_eq!(body(&e), "v1");
    // Past every window: a plain miss, nothing to fall back on.
    let after = t0 + secs(71);
    assert!(rig.shield.stale_for(rig.catalog(), &k, &h, after).is_none());
    assert!(matches!(rig.ready(&k, &h, after), Resolved::Miss(Some(_))));
    assert_eq!(rig.shield.fills_in_flight(), 0, "the dropped guard left");
}

#[test]
fn must_revalidate_disables_stale() {
    let (rig, k, _, t0) = fresh("/strict");
    rig.store(&k, "max-age=10, must-revalidate", "x", t0);
    assert!(rig
        .shield
        .stale_for(rig.catalog(), &k, &no_headers(), t0 + secs(11))
        .is_none());
}

#[test]
fn slow_origin_past_the_budget_gets_stale() {
    let rig = Rig::new(config(Lines::catalog_route("latency_budget = \"100ms\"")));
    let t0 = Instant::now();
    let k = key("/slow");
    rig.store(&k, "max-age=1, stale-while-revalidate=0", "old", t0);
    let later = t0 + secs(3);
    // A fast origin: the request revalidates itself.
    for _ in 0..20 {
        rig.shield
            .record("shop", Duration::from_millis(20), true, later);
    }
    let g = rig.leader(&k, &no_headers(), later);
    drop(g);
    // A slow origin: stale at once.
    for _ in 0..40 {
        rig.shield
            .record("shop", Duration::from_secs(2), true, later);
    }
    assert!(matches!(
        rig.ready(&k, &no_headers(), later),
        Resolved::Stale(_)
    ));
}

#[tokio::test]
async fn one_leader_many_waiters_all_served() {
    let (rig, k, h, t0) = fresh("/drop");
    let leader = rig.leader(&k, &h, t0);
    let mut waiters = Vec::new();
    for _ in 0..99 {
        match rig.lookup(&k, &h, t0) {
            Lookup::Wait(w) => waiters.push(w),
            Lookup::Ready(r) => panic!("only one leader, got {r:?}"),
        }
    }
    let shield = rig.shield.clone();
    let route = rig.catalog().clone();
    let tasks: Vec<_> = waiters
        .into_iter()
        .map(|w| {
            let (shield, route, k) = (shield.clone(), route.clone(), k.clone());
            tokio::spawn(async move { shield.follow(w, &route, &k, &HeaderMap::new(), t0).await })
        })
        .collect();
    fill(
        leader,
        &resp(200, &[("cache-control", "max-age=30")]),
        "page",
        t0,
    )
    .expect("stored");
    for t in tasks {
        match tokio::time::timeout(LIMIT, t)
            .await
            .expect("woken")
            .expect("task")
        {
            Resolved::Hit(e) => assert_eq!(body(&e), "page"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rig.results("coalesced"), 99);
    assert_eq!(rig.results("miss"), 1);
    assert_eq!(rig.shield.fills_in_flight(), 0);
}

/// 100 concurrent requests on a multi-threaded runtime: exactly one goes to the "origin".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_origin_request() {
    let rig = Rig::new(plain());
    let origin_requests = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let shield = rig.shield.clone();
            let route = rig.catalog().clone();
            let origin = origin_requests.clone();
            tokio::spawn(async move {
                let k = key("/hot");
                match shield.resolve(&route, &k, &HeaderMap::new(), t0).await {
                    Resolved::Miss(Some(mut g)) => {
                        origin.fetch_add(1, Ordering::SeqCst);
                        // Let the others pile up behind us.
                        tokio::task::yield_now().await;
                        g.header(&resp(200, &[("cache-control", "max-age=30")]), t0)
                            .expect("cacheable");
                        g.chunk(b"hot page");
                        g.finish().expect("stored");
                        true
                    }
                    Resolved::Hit(e) => {
                        assert_eq!(&e.body[..], b"hot page");
                        false
                    }
                    other => panic!("{other:?}"),
                }
            })
        })
        .collect();
    let mut leaders = 0;
    for t in tasks {
        leaders += usize::from(
            tokio::time::timeout(LIMIT, t)
                .await
                .expect("done")
                .expect("task"),
        );
    }
    assert_eq!(leaders, 1);
    assert_eq!(origin_requests.load(Ordering::SeqCst), 1);
    assert_eq!(rig.shield.fills_in_flight(), 0);
}

#[tokio::test]
async fn a_dropped_leader_releases_its_waiters_and_slot() {
    let (rig, k, h, t0) = fresh("/fails");
    let leader = rig.leader(&k, &h, t0);
    let waiters: Vec<Waiter> = (0..10)
        .map(|_| match rig.lookup(&k, &h, t0) {
            Lookup::Wait(w) => w,
            Lookup::Ready(r) => panic!("{r:?}"),
        })
        .collect();
    drop(leader);
    assert_eq!(rig.shield.fills_in_flight(), 0, "no leak");
    for w in waiters {
        let r = tokio::time::timeout(LIMIT, rig.shield.follow(w, rig.catalog(), &k, &h, t0))
            .await
            .expect("woken at once");
        assert!(
            matches!(r, Resolved::Miss(None)),
            "{r:?}: go to the origin alone"
        );
    }
    // Nothing is stuck: the next request leads a new fetch.
    let again = rig.leader(&k, &h, t0);
    // A 5xx is not stored and not remembered.
    assert_eq!(
        fill(again, &resp(503, &[]), "down", t0).map(|_| ()),
        Err(NotStored::Status(503))
    );
    assert!(matches!(rig.ready(&k, &h, t0), Resolved::Miss(Some(_))));
}

#[tokio::test]
async fn an_uncacheable_response_releases_waiters_and_is_remembered() {
    let (rig, k, h, t0) = fresh("/me");
    let mut leader = rig.leader(&k, &h, t0);
    let Lookup::Wait(w) = rig.lookup(&k, &h, t0) else {
        panic!("should wait");
    };
    let r = resp(
        200,
        &[("set-cookie", "sid=1"), ("cache-control", "max-age=60")],
    );
    assert_eq!(leader.header(&r, t0), Err(NotStored::SetCookie));
    // Released at the header, before the body.
    let followed = tokio::time::timeout(LIMIT, rig.shield.follow(w, rig.catalog(), &k, &h, t0))
        .await
        .expect("woken");
    assert!(matches!(followed, Resolved::Bypass(Bypass::Uncacheable)));
    leader.chunk(b"private");
    assert_eq!(leader.finish().map(|_| ()), Err(NotStored::SetCookie));
    // The next requests go straight through, without coalescing.
    for _ in 0..3 {
        assert!(matches!(
            rig.ready(&k, &h, t0),
            Resolved::Bypass(Bypass::Uncacheable)
        ));
    }
    // A purge forgets it.
    rig.shield.purge(&Purge::All);
    assert!(matches!(rig.ready(&k, &h, t0), Resolved::Miss(Some(_))));
}

#[tokio::test(start_paused = true)]
async fn waiting_is_bounded_by_the_lock_timeout() {
    let rig = Rig::new(config(Lines::cache("lock_timeout = \"2s\"")));
    let t0 = Instant::now();
    let k = key("/stuck");
    let h = no_headers();
    let _leader = rig.leader(&k, &h, t0);
    let Lookup::Wait(w) = rig.lookup(&k, &h, t0) else {
        panic!("should wait");
    };
    let started = tokio::time::Instant::now();
    let r = rig.shield.follow(w, rig.catalog(), &k, &h, t0).await;
    assert!(matches!(r, Resolved::Miss(None)), "{r:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test]
async fn vary_selects_variants() {
    let (rig, k, _, t0) = fresh("/i18n");
    let en = headers(&[("accept-language", "en")]);
    let fr = headers(&[("accept-language", "fr")]);
    let r = |lang: &str| {
        resp(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("vary", "Accept-Language"),
                ("content-language", lang),
            ],
        )
    };
    // en leads (the key's Vary is not known yet); fr follows the same fetch...
    let leader = rig.leader(&k, &en, t0);
    let Lookup::Wait(w) = rig.lookup(&k, &fr, t0) else {
        panic!("fr waits on the family");
    };
    fill(leader, &r("en"), "hello", t0).expect("stored");
    // ...wakes, sees the response varies, and fetches its own variant.
    let Resolved::Miss(Some(fr_leader)) = rig.shield.follow(w, rig.catalog(), &k, &fr, t0).await
    else {
        panic!("fr needs its own variant");
    };
    fill(fr_leader, &r("fr"), "bonjour", t0).expect("stored");
    let hit = |h: &HeaderMap| match rig.ready(&k, h, t0 + secs(1)) {
        Resolved::Hit(e) => body(&e).to_owned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(hit(&en), "hello");
    assert_eq!(hit(&fr), "bonjour");
    // A third language is a miss for its own variant, not a wrong answer.
    let de = headers(&[("accept-language", "de")]);
    assert!(matches!(rig.ready(&k, &de, t0), Resolved::Miss(Some(_))));
    // Family record + two variants.
    assert_eq!(rig.shield.cache_entries(), 3);
}

#[test]
fn head_is_answered_from_get_and_never_fills() {
    let rig = Rig::new(plain());
    let t0 = Instant::now();
    let head = CacheKey::new(&Method::HEAD, "shop.example", "/h").expect("key");
    assert!(matches!(
        rig.ready(&head, &no_headers(), t0),
        Resolved::Miss(None)
    ));
    assert_eq!(rig.shield.fills_in_flight(), 0);
    let g = rig.leader(&key("/h"), &no_headers(), t0);
    fill(
        g,
        &resp(200, &[("cache-control", "max-age=60")]),
        "body",
        t0,
    )
    .expect("stored");
    assert!(matches!(
        rig.ready(&head, &no_headers(), t0),
        Resolved::Hit(_)
    ));
}

#[test]
fn memory_stays_within_max_bytes() {
    let rig = Rig::new(config(Lines::cache(
        "max_bytes = \"1MiB\"\nmax_object = \"64KiB\"",
    )));
    let t0 = Instant::now();
    let page = "x".repeat(32 * 1024);
    for i in 0..100 {
        let k = key(&format!("/big/{i}"));
        let g = rig.leader(&k, &no_headers(), t0);
        fill(
            g,
            &resp(200, &[("cache-control", "max-age=600")]),
            &page,
            t0,
        )
        .expect("stored");
    }
    // 100 × 32 KiB = 3.2 MiB offered.
    let used = rig.shield.cache_bytes();
    assert!(used <= 1024 * 1024, "weighted size {used} > max_bytes");
    assert!(used > 0 && rig.shield.cache_entries() > 0);
    assert!(rig.metrics.cache_bytes.get() > 0, "gauge follows");
}

#[test]
fn bodies_over_max_object_are_not_stored() {
    let rig = Rig::new(config(Lines::cache("max_object = \"1KiB\"")));
    let t0 = Instant::now();
    let cc = ("cache-control", "max-age=60");
    // Announced by Content-Length: refused at the header.
    let mut g = rig.leader(&key("/a"), &no_headers(), t0);
    assert_eq!(
        g.header(&resp(200, &[cc, ("content-length", "5000")]), t0),
        Err(NotStored::TooLarge)
    );
    drop(g);
    // Streamed: refused when the body passes the limit.
    let g = rig.leader(&key("/b"), &no_headers(), t0);
    let big = "y".repeat(3000);
    assert_eq!(
        fill(g, &resp(200, &[cc]), &big, t0).map(|_| ()),
        Err(NotStored::TooLarge)
    );
    assert_eq!(rig.shield.cache_entries(), 0);
    assert!(matches!(
        rig.ready(&key("/b"), &no_headers(), t0),
        Resolved::Bypass(Bypass::Uncacheable)
    ));
}

#[test]
fn purge_by_key_prefix_and_all() {
    let rig = Rig::new(plain());
    let t0 = Instant::now();
    let ok = resp(200, &[("cache-control", "max-age=600")]);
    for pq in ["/products/a", "/products/b?x=1", "/productsx", "/about"] {
        fill(rig.leader(&key(pq), &no_headers(), t0), &ok, pq, t0).expect("stored");
    }
    let n = rig.shield.purge(&Purge::Prefix {
        host: None,
        path: "/products".into(),
    });
    assert_eq!(n, 2, "whole segments: /productsx stays");
    let n = rig.shield.purge(&Purge::Key {
        host: Some("shop.example".into()),
        path_and_query: "/about".into(),
    });
    assert_eq!(n, 1);
    let n = rig.shield.purge(&Purge::Key {
        host: Some("other.example".into()),
        path_and_query: "/productsx".into(),
    });
    assert_eq!(n, 0, "another host");
    let n = rig.shield.purge(&Purge::Key {
        host: None,
        path_and_query: "/productsx".into(),
    });
    assert_eq!(n, 1, "any host");
    fill(rig.leader(&key("/x"), &no_headers(), t0), &ok, "x", t0).expect("stored");
    assert_eq!(rig.shield.purge(&Purge::All), 1);
    assert_eq!(rig.shield.cache_entries(), 0);

    // A fetch in flight during a purge does not store what may be the purged content.
    let g = rig.leader(&key("/racing"), &no_headers(), t0);
    rig.shield.purge(&Purge::All);
    assert_eq!(fill(g, &ok, "old", t0).map(|_| ()), Err(NotStored::Purged));
}

#[test]
fn purge_requests_from_json() {
    let p = |s: &str| Purge::from_json(&serde_json::from_str(s).expect("json"));
    assert_eq!(
        p(r#"{"url": "/p?a=1", "host": "Shop.Example"}"#),
        Ok(Purge::Key {
            host: Some("shop.example".into()),
            path_and_query: "/p?a=1".into()
        })
    );
    assert_eq!(
        p(r#"{"prefix": "/products"}"#),
        Ok(Purge::Prefix {
            host: None,
            path: "/products".into()
        })
    );
    assert_eq!(p(r#"{"all": true}"#), Ok(Purge::All));
    assert!(p(r#"{"url": "p"}"#).is_err());
    assert!(p(r#"{"url": "/a", "prefix": "/b"}"#).is_err());
    assert!(p(r#"{"all": false}"#).is_err());
    assert!(p(r#"{"everything": true}"#).is_err());
    assert!(p(r#"[1]"#).is_err());
}

#[test]
fn shedding_through_the_engine() {
    let rig = Rig::new(config(Lines::pool(
        "max_concurrent = 4\noptional_share = 0.25\nessential_reserve = 0.25",
    )));
    let now = Instant::now();
    let optional = rig.route("/reviews");
    let essential = rig.route("/checkout");
    let catalog = rig.catalog();
    let a = rig.shield.admit(optional, now).expect("first optional");
    let shed = rig
        .shield
        .admit(optional, now)
        .expect_err("optional share is 1");
    assert_eq!(shed.reason, ShedReason::Saturated);
    let b = rig.shield.admit(catalog, now).expect("normal");
    let c = rig.shield.admit(catalog, now).expect("normal");
    assert!(
        rig.shield.admit(catalog, now).is_err(),
        "normal may use 3 of 4"
    );
    let d = rig.shield.admit(essential, now).expect("the reserve");
    assert!(rig.shield.admit(essential, now).is_err(), "full");
    assert_eq!(rig.shield.pool_snapshot("shop", now).map(|s| s.1), Some(4));
    drop((a, b, c, d));
    assert_eq!(rig.shield.pool_snapshot("shop", now).map(|s| s.1), Some(0));
    let shed = |kind: &str| {
        rig.metrics
            .shed
            .with_label_values(&["shop", kind, "saturated"])
            .get()
    };
    assert_eq!(
        (shed("optional"), shed("catalog"), shed("essential")),
        (1, 1, 1)
    );
}

#[test]
fn origin_factor_follows_pool_health() {
    let rig = Rig::new(plain());
    let t0 = Instant::now();
    assert_eq!(rig.shield.origin_factor("launch", t0), 1.0);
    assert_eq!(rig.shield.origin_factor("no-such-room", t0), 1.0);
    let mut f = 1.0;
    for s in 1..=8 {
        for _ in 0..20 {
            rig.shield
                .record("shop", Duration::from_secs(1), true, t0 + secs(s));
        }
        f = rig.shield.origin_factor("launch", t0 + secs(s));
    }
    assert_eq!(f, 0.5, "floored at the room's min_factor");
    let gauge = rig
        .metrics
        .origin_factor
        .with_label_values(&["launch"])
        .get();
    assert_eq!(gauge, 0.5);
}

// ---- The refresh fetcher against real origins on 127.0.0.1:0 ----

struct RunningShop {
    shop: Shop,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for RunningShop {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start_shop() -> RunningShop {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shop = Shop::try_new(ShopConfig::demo()).expect("shop");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(shop.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    RunningShop {
        shop,
        addr,
        stop: Some(stop),
    }
}

fn fetcher_for(addr: SocketAddr, read_timeout: Duration) -> HttpFetcher {
    let lb = LoadBalancer::try_from_iter([addr.to_string()]).expect("lb");
    let mut targets = BTreeMap::new();
    targets.insert(
        "shop".to_owned(),
        FetchTarget {
            lb: Arc::new(lb),
            host: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout,
        },
    );
    HttpFetcher::new(targets)
}

fn fetch_req(pq: &str) -> FetchRequest {
    FetchRequest {
        pool: "shop".into(),
        host: "shop.example".into(),
        path_and_query: pq.into(),
        headers: vec![(
            http::header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("en"),
        )],
        max_body: 1024 * 1024,
    }
}

#[tokio::test]
async fn fetcher_gets_a_catalog_page_from_the_demo_shop() {
    let shop = start_shop().await;
    let f = fetcher_for(shop.addr, Duration::from_secs(2));
    let got = tokio::time::timeout(LIMIT, f.fetch(&fetch_req("/api/products")))
        .await
        .expect("in time")
        .expect("fetched");
    assert_eq!(got.header.status.as_u16(), 200);
    let cc = got
        .header
        .headers
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(cc.contains("max-age"), "{cc}");
    let json: serde_json::Value = serde_json::from_slice(&got.body).expect("json body");
    assert!(json.to_string().contains("AURORA-LIP-KIT"));
    // Keep-alive: a second fetch works on the pooled connection.
    f.fetch(&fetch_req("/api/products")).await.expect("again");
    assert_eq!(shop.shop.stats().by_path.catalog, 2);
    // Unknown pool, and bodies over the limit.
    let mut other = fetch_req("/");
    other.pool = "nope".into();
    assert!(matches!(f.fetch(&other).await, Err(FetchError::NoPool(_))));
    let mut small = fetch_req("/api/products");
    small.max_body = 10;
    assert!(matches!(f.fetch(&small).await, Err(FetchError::TooLarge)));
}

/// An origin that answers every connection with `reply` (after reading the request head).
async fn raw_origin(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if !reply.is_empty() {
                    let _ = s.write_all(reply).await;
                    let _ = s.shutdown().await;
                } else {
                    // Never answer; hold the connection until the client gives up.
                    let _ = s.read(&mut chunk).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn fetcher_reads_chunked_and_close_delimited_bodies() {
    let chunked = raw_origin(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=5\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
    )
    .await;
    let got = fetcher_for(chunked, Duration::from_secs(2))
        .fetch(&fetch_req("/c"))
        .await
        .expect("chunked");
    assert_eq!(got.header.status.as_u16(), 200);
    assert_eq!(got.body, Bytes::from_static(b"hello, world"));

    let close = raw_origin(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end").await;
    let got = fetcher_for(close, Duration::from_secs(2))
        .fetch(&fetch_req("/d"))
        .await
        .expect("close-delimited");
    assert_eq!(got.body, Bytes::from_static(b"until the end"));
}

#[tokio::test]
async fn fetcher_times_out_and_reports_refused_connections() {
    let silent = raw_origin(b"").await;
    let started = std::time::Instant::now();
    let err = fetcher_for(silent, Duration::from_millis(200))
        .fetch(&fetch_req("/s"))
        .await
        .expect_err("no answer");
    assert!(
        matches!(err, FetchError::Http(_) | FetchError::Timeout),
        "{err}"
    );
    assert!(started.elapsed() < LIMIT);

    // A port nobody listens on (bound, then released).
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let err = fetcher_for(gone, Duration::from_millis(200))
        .fetch(&fetch_req("/r"))
        .await
        .expect_err("refused");
    assert!(matches!(err, FetchError::Http(_)), "{err}");
}

/// Stale-while-revalidate end to end: many stale lookups, one background refresh against the
/// demo shop, then fresh hits with the shop's page.
#[tokio::test]
async fn stale_while_revalidate_refreshes_once_from_the_shop() {
    let shop = start_shop().await;
    let cfg = config(Lines::on_port(shop.addr.port()));
    let fetcher: Arc<dyn Fetcher> = Arc::new(fetcher_for(shop.addr, Duration::from_secs(2)));
    let rig = Rig::with_fetcher(cfg, Some(fetcher));
    let t0 = Instant::now();
    let k = key("/api/products");
    rig.store(
        &k,
        "max-age=1, stale-while-revalidate=60",
        "old catalog",
        t0,
    );

    let stale_at = t0 + secs(2);
    for _ in 0..20 {
        match rig.ready(&k, &no_headers(), stale_at) {
            Resolved::Stale(e) => assert_eq!(body(&e), "old catalog"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rig.shield.fills_in_flight(), 1, "one refresh in flight");
    if let Some(w) = rig.shield.watch_fill(k.family()) {
        let state = w.wait(LIMIT).await;
        assert_eq!(state, Some(FillState::Stored));
    }
    let Resolved::Hit(e) = rig.ready(&k, &no_headers(), stale_at + Duration::from_millis(500))
    else {
        panic!("refreshed entry is fresh");
    };
    assert!(body(&e).contains("AURORA-LIP-KIT"), "the shop's page");
    assert_eq!(
        shop.shop.stats().by_path.catalog,
        1,
        "exactly one origin request"
    );
    assert_eq!(
        rig.metrics
            .cache_refreshes
            .with_label_values(&["stored"])
            .get(),
        1
    );
    let (snap, _) = rig.shield.pool_snapshot("shop", stale_at).expect("pool");
    assert_eq!(snap.samples, 1, "the refresh fed the pool's statistics");
}

/// The gate keeps these in its per-request context, which Pingora requires to be Send + Sync.
#[test]
fn context_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Shield>();
    check::<FillGuard>();
    check::<Permit>();
    check::<CacheKey>();
    check::<Resolved>();
    check::<Arc<Entry>>();
    check::<Waiter>();
}

#[test]
fn no_content_is_served_without_a_length() {
    let rig = Rig::new(plain());
    let t0 = Instant::now();
    let g = rig.leader(&key("/ping"), &no_headers(), t0);
    let e = fill(g, &resp(204, &[("cache-control", "max-age=60")]), "", t0).expect("stored");
    let h = e.response_header(t0, CacheStatus::Hit).expect("header");
    assert_eq!(h.status.as_u16(), 204);
    assert!(h.headers.get("content-length").is_none());
    assert_eq!(
        h.headers.get(CACHE_HEADER).and_then(|v| v.to_str().ok()),
        Some("hit")
    );
}
