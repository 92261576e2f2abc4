//! The origin shield end to end: a real flashgate process in front of the demo shop, real
//! HTTP over loopback. The shop's run-time knobs (`set_latency`, `set_failing`,
//! `set_path_fault`, `set_down`) play the struggling origin, and its per-path counters count
//! what reached it. Nothing sleeps to synchronise: every wait polls an observable state
//! (a response header, a counter, the admin API) under a deadline. Latency assertions only
//! separate "answered from the cache" from "waited for a 2 s origin", with wide margins.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashgate::shop::PathFault;
use serde_json::{json, Value};
use testkit::shopper::{self, Reply as Got};
use testkit::{wait_until, Config, Node, Origin};
use tokio::task::JoinSet;

/// How slow the "slow origin" is.
const SLOW: Duration = Duration::from_secs(2);
/// A response that took less than this did not wait for the slow origin (which takes
/// [`SLOW`]): the margin absorbs a loaded machine.
const FAST: Duration = Duration::from_millis(1500);

async fn get(c: &reqwest::Client, url: &str) -> Got {
    shopper::get(c, url, &[]).await
}

/// Repeats `GET url` until `done` holds for the response (deadline `within`); returns it.
async fn get_until(
    c: &reqwest::Client,
    url: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&Got) -> bool,
) -> Got {
    let deadline = Instant::now() + within;
    loop {
        let g = get(c, url).await;
        if done(&g) {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last: {} {:?}",
            g.status,
            g.cache()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn purge(fg: &Node, body: Value) -> (u16, Value) {
    fg.admin_req("POST", "/api/cache/purge", Some(body)).await
}

async fn cache_report(fg: &Node) -> Value {
    let (code, report) = fg.admin_req("GET", "/api/cache", None).await;
    assert_eq!(code, 200, "{report}");
    report
}

/// Extra config: a route of `kind = "catalog"` at `path` on the `shop` pool, with `keys`.
fn catalog_route(path: &str, keys: &str) -> String {
    format!("[[routes]]\npath = \"{path}\"\nupstream = \"shop\"\nkind = \"catalog\"\n{keys}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalog_is_cached_never_shares_private_responses_and_purges() {
    let origin = Origin::start().await;
    // `cache_ttl` overrides the shop's `max-age=5`, but never the never-cache rules.
    let fg = Node::start(
        &Config::new(origin.addr).extra(catalog_route("/products", "cache_ttl = \"1m\"")),
    )
    .await;
    let c = shopper::client();
    let shop = &origin.shop;
    let url = |p: &str| format!("{}{p}", fg.base);

    let first = get(&c, &url("/products")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.cache(), Some("miss"));
    assert!(first.headers.get("x-request-id").is_some());
    let second = get(&c, &url("/products")).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.cache(), Some("hit"));
    assert!(
        second.age().is_some(),
        "a hit carries Age: {:?}",
        second.headers
    );
    assert_eq!(second.body, first.body);
    assert_eq!(
        second.headers.get("cache-control").map(|v| v.as_bytes()),
        Some(&b"public, max-age=5"[..]),
        "the origin's headers are kept"
    );
    assert_eq!(
        shop.path_requests("/products"),
        1,
        "the hit never reached the origin"
    );

    // HEAD is answered from the GET entry.
    let head = c.head(url("/products")).send().await.expect("head");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["x-flashgate-cache"], "hit");
    assert_eq!(shop.path_requests("/products"), 1);

    // The query is normalised: parameter order does not make a new entry.
    assert_eq!(
        get(&c, &url("/products?b=2&a=1")).await.cache(),
        Some("miss")
    );
    assert_eq!(
        get(&c, &url("/products?a=1&b=2")).await.cache(),
        Some("hit")
    );
    assert_eq!(shop.path_requests("/products"), 2);

    // The shop varies its pages on Accept (HTML or JSON): two variants, never mixed up.
    let json_accept = [("accept", "application/json")];
    let j1 = shopper::get(&c, &url("/products/NOVA-HIGHLIGHTER"), &json_accept).await;
    let h1 = get(&c, &url("/products/NOVA-HIGHLIGHTER")).await;
    let j2 = shopper::get(&c, &url("/products/NOVA-HIGHLIGHTER"), &json_accept).await;
    let h2 = get(&c, &url("/products/NOVA-HIGHLIGHTER")).await;
    assert_eq!((j1.cache(), h1.cache()), (Some("miss"), Some("miss")));
    assert_eq!((j2.cache(), h2.cache()), (Some("hit"), Some("hit")));
    assert!(j2.body.starts_with('{') && h2.body.starts_with("<!doctype html>"));
    assert_eq!(shop.path_requests("/products/NOVA-HIGHLIGHTER"), 2);

    // Never shared: private, no-store, Set-Cookie — whatever the route's cache_ttl says.
    let fault = |cache_control: Option<&'static str>, cookie: bool| PathFault {
        cache_control,
        headers: if cookie {
            vec![("Set-Cookie", "recently_viewed=ECLIPSE; Path=/".to_owned())]
        } else {
            Vec::new()
        },
        ..PathFault::default()
    };
    let private = [
        (
            "/products/AURORA-LIP-KIT",
            fault(Some("private, max-age=60"), false),
        ),
        (
            "/products/DEW-SETTING-SPRAY",
            fault(Some("no-store"), false),
        ),
        ("/products/ECLIPSE-PALETTE", fault(None, true)),
    ];
    for (path, f) in &private {
        shop.set_path_fault(path, Some(f.clone()));
    }
    for (path, f) in &private {
        for i in 0..3u64 {
            let g = get(&c, &url(path)).await;
            assert_eq!(g.status, 200, "{path}");
            assert!(
                matches!(g.cache(), Some("miss" | "bypass")),
                "{path} #{i}: {:?}",
                g.cache()
            );
            assert_eq!(
                shop.path_requests(path),
                i + 1,
                "{path}: every request reaches the origin"
            );
            if !f.headers.is_empty() {
                assert_eq!(
                    g.headers.get("set-cookie").map(|v| v.as_bytes()),
                    Some(&b"recently_viewed=ECLIPSE; Path=/"[..]),
                    "the shopper still gets the cookie"
                );
            }
        }
    }

    // Purge through the admin API: by URL, by prefix, everything.
    let before = cache_report(&fg).await;
    assert!(before["entries"].as_u64() >= Some(3), "{before}");
    assert!(before["bytes"].as_u64() > Some(0), "{before}");
    // The page varies on Accept: its variant and its Vary record go.
    assert_eq!(
        purge(&fg, json!({"url": "/products"})).await,
        (200, json!({"purged": 2}))
    );
    assert_eq!(get(&c, &url("/products")).await.cache(), Some("miss"));
    assert_eq!(shop.path_requests("/products"), 3);
    assert_eq!(get(&c, &url("/products")).await.cache(), Some("hit"));
    // A prefix is whole path segments, like a route's: the page and everything under it.
    let (code, n) = purge(&fg, json!({"prefix": "/products/NOVA-HIGHLIGHTER"})).await;
    assert_eq!(code, 200);
    assert_eq!(n, json!({"purged": 3}), "two variants and the Vary record");
    assert_eq!(
        get(&c, &url("/products/NOVA-HIGHLIGHTER")).await.cache(),
        Some("miss")
    );
    assert_eq!(
        get(&c, &url("/products")).await.cache(),
        Some("hit"),
        "outside the prefix"
    );
    let (code, _) = purge(&fg, json!({"all": true})).await;
    assert_eq!(code, 200);
    assert_eq!(cache_report(&fg).await["entries"], 0);
    assert_eq!(get(&c, &url("/products")).await.cache(), Some("miss"));
    let (code, err) = purge(&fg, json!({"path": "/products"})).await;
    assert_eq!(code, 400, "{err}");
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown field")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_origin_is_hidden_by_stale_while_revalidate() {
    let origin = Origin::start().await;
    let extra = catalog_route(
        "/products",
        "cache_ttl = \"1s\"\nstale_while_revalidate = \"30s\"",
    );
    let fg = Node::start(&Config::new(origin.addr).extra(&extra)).await;
    let c = shopper::client();
    let shop = &origin.shop;
    let url = format!("{}/products", fg.base);

    let warm = get(&c, &url).await;
    assert_eq!(warm.cache(), Some("miss"));
    shop.set_latency(SLOW);

    // Hits until the copy turns stale; the first stale answer starts one background refresh.
    let first_stale = get_until(&c, &url, Duration::from_secs(10), "a stale copy", |g| {
        assert!(g.took < FAST, "answered from the cache, took {:?}", g.took);
        g.cache() == Some("stale")
    })
    .await;
    let stale_at = Instant::now();
    assert_eq!(first_stale.status, 200);
    assert_eq!(first_stale.body, warm.body);
    assert!(first_stale.age() >= Some(1), "{:?}", first_stale.age());
    wait_until(
        "the refresh to reach the origin",
        Duration::from_secs(5),
        || (shop.path_requests("/products") == 2).then_some(()),
    )
    .await;

    // A crowd meanwhile: all answered at once from the stale copy, no second refresh.
    let mut crowd = JoinSet::new();
    for _ in 0..10 {
        let (c, url) = (c.clone(), url.clone());
        crowd.spawn(async move {
            let mut got = Vec::new();
            for _ in 0..5 {
                got.push(get(&c, &url).await);
            }
            got
        });
    }
    let mut answers = 0;
    while let Some(got) = crowd.join_next().await {
        for g in got.expect("crowd task") {
            assert_eq!(g.status, 200);
            assert_eq!(g.cache(), Some("stale"));
            assert!(
                g.took < FAST,
                "a crowd request waited for the origin: {:?}",
                g.took
            );
            answers += 1;
        }
    }
    assert_eq!(answers, 50);
    // The refresh takes SLOW and its result is fresh for 1 s after that, so until then no
    // other request may have reached the origin.
    if stale_at.elapsed() < SLOW {
        assert_eq!(
            shop.path_requests("/products"),
            2,
            "exactly one refresh in flight"
        );
    }

    // The refresh lands: hits again, without any shopper having waited.
    let hit = get_until(
        &c,
        &url,
        Duration::from_secs(10),
        "the refreshed copy",
        |g| {
            assert!(g.took < FAST, "took {:?}", g.took);
            g.cache() == Some("hit")
        },
    )
    .await;
    assert_eq!(hit.status, 200);
    assert!(shop.path_requests("/products") <= 3);
    let stored = fg
        .metrics()
        .await
        .first("flashgate_cache_refreshes_total", &[("result", "stored")]);
    assert!(stored >= Some(1.0), "{stored:?}");
    shop.set_latency(Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_pool_serves_stale_within_the_budget_and_sheds_optional_routes() {
    let origin = Origin::start().await;
    // Catalog routes without stale-while-revalidate: past its TTL a copy is only good for
    // errors, or while the pool is slower than the route's latency budget.
    let extra = format!(
        r#"
[upstreams.storefront]
servers = ["{origin}"]
read_timeout = "10s"
latency_target = "1s"

[[routes]]
path = "/echo"
upstream = "storefront"

[[routes]]
path = "/healthz"
upstream = "storefront"

[[routes]]
path = "/api/inventory"
upstream = "storefront"
kind = "optional"

[[routes]]
path = "/api/products"
upstream = "storefront"
kind = "catalog"
cache_ttl = "1s"
stale_while_revalidate = "0s"
stale_if_error = "1m"
latency_budget = "300ms"

[[routes]]
path = "/products"
upstream = "storefront"
kind = "catalog"
cache_ttl = "1s"
stale_while_revalidate = "0s"
stale_if_error = "1m"
"#,
        origin = origin.addr
    );
    let fg = Node::start(&Config::new(origin.addr).extra(&extra)).await;
    let c = shopper::client();
    let shop = &origin.shop;
    let url = |p: &str| format!("{}{p}", fg.base);
    assert_eq!(get(&c, &url("/api/products")).await.cache(), Some("miss"));
    assert_eq!(get(&c, &url("/products")).await.cache(), Some("miss"));

    // The origin turns slow (but for its health check); a dozen uncached requests tell the
    // pool's p95 (10 samples needed).
    shop.set_latency(SLOW);
    shop.set_path_fault(
        "/healthz",
        Some(PathFault {
            latency: Some(Duration::ZERO),
            ..PathFault::default()
        }),
    );
    let mut slow = JoinSet::new();
    for i in 0..12 {
        let (c, u) = (c.clone(), url(&format!("/echo?n={i}")));
        slow.spawn(async move { get(&c, &u).await });
    }
    while let Some(g) = slow.join_next().await {
        let g = g.expect("slow request");
        assert_eq!(g.status, 200);
        assert!(
            g.took >= SLOW / 2,
            "the origin really is slow: {:?}",
            g.took
        );
    }
    // Both copies are past their TTL by now (the slow requests took SLOW).

    // The pool's p95 is above its latency target: optional routes are shed, with a
    // Retry-After of about the p95; the others still go to the origin.
    let shed = get(&c, &url("/api/inventory")).await;
    assert_eq!(shed.status, 503);
    let retry = shed
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok());
    assert!(
        retry.and_then(|r| r.parse::<u64>().ok()) >= Some(2),
        "{retry:?}"
    );
    assert_eq!(shop.path_requests("/api/inventory"), 0);
    let slow_shed = fg.metrics().await.first(
        "flashgate_shed_total",
        &[
            ("pool", "storefront"),
            ("kind", "optional"),
            ("reason", "slow"),
        ],
    );
    assert_eq!(slow_shed, Some(1.0));
    assert_eq!(get(&c, &url("/healthz")).await.status, 200);

    // With a budget: the stale copy at once, and one refresh behind it.
    let g = get(&c, &url("/api/products")).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.cache(), Some("stale"));
    assert!(g.took < FAST, "{:?}", g.took);
    wait_until(
        "the refresh to reach the origin",
        Duration::from_secs(5),
        || (shop.path_requests("/api/products") == 2).then_some(()),
    )
    .await;
    for _ in 0..20 {
        let g = get(&c, &url("/api/products")).await;
        assert!(
            matches!(g.cache(), Some("stale" | "hit")),
            "{:?}",
            g.cache()
        );
        assert!(g.took < FAST, "{:?}", g.took);
    }
    assert!(
        shop.path_requests("/api/products") <= 3,
        "one refresh at a time"
    );

    // Without one: the first request revalidates through the proxy and pays the origin's
    // latency (a documented limit); requests meanwhile get the stale copy at once.
    let leader = {
        let (c, u) = (c.clone(), url("/products"));
        tokio::spawn(async move { get(&c, &u).await })
    };
    wait_until(
        "the leader to reach the origin",
        Duration::from_secs(5),
        || (shop.path_requests("/products") == 2).then_some(()),
    )
    .await;
    let meanwhile = get(&c, &url("/products")).await;
    assert_eq!(meanwhile.cache(), Some("stale"));
    assert!(meanwhile.took < FAST, "{:?}", meanwhile.took);
    let leader = leader.await.expect("leader");
    assert_eq!((leader.status, leader.cache()), (200, Some("miss")));
    assert!(leader.took >= SLOW / 2, "{:?}", leader.took);
    assert_eq!(shop.path_requests("/products"), 2);
    shop.set_latency(Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_errors_and_outages_are_answered_with_the_stale_copy() {
    let origin = Origin::start().await;
    let extra = [
        catalog_route(
            "/products",
            "cache_ttl = \"1s\"\nstale_while_revalidate = \"0s\"\nstale_if_error = \"1m\"",
        ),
        // A short stale-if-error window, to see it end.
        catalog_route(
            "/api/products",
            "cache_ttl = \"1s\"\nstale_while_revalidate = \"0s\"\nstale_if_error = \"1s\"",
        ),
    ]
    .concat();
    let fg = Node::start(&Config::new(origin.addr).extra(&extra)).await;
    let c = shopper::client();
    let shop = &origin.shop;
    let url = |p: &str| format!("{}{p}", fg.base);
    let warm = get(&c, &url("/products")).await;
    assert_eq!((warm.status, warm.cache()), (200, Some("miss")));
    let api_warmed = Instant::now();
    assert_eq!(get(&c, &url("/api/products")).await.cache(), Some("miss"));

    shop.set_failing(Some(500));
    // Uncached routes show the origin's error as it is.
    assert_eq!(get(&c, &url("/echo")).await.status, 500);

    // A short window: hits for 1 s (TTL), stale copies for 1 s more (stale-if-error), then the
    // origin's error shows.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answers = Vec::new();
    let failed = loop {
        let g = get(&c, &url("/api/products")).await;
        if g.status != 200 {
            break g;
        }
        answers.push(g.cache().map(str::to_owned));
        assert!(
            Instant::now() < deadline,
            "the window never ended: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failed.status, 500);
    assert_eq!(failed.cache(), Some("miss"));
    assert!(
        api_warmed.elapsed() >= Duration::from_secs(2),
        "not before TTL + stale-if-error: {:?}",
        api_warmed.elapsed()
    );
    assert!(
        answers.iter().any(|a| a.as_deref() == Some("stale")),
        "stale inside the window: {answers:?}"
    );

    // Once the copy is past its TTL, a request goes to the origin, gets a 500, and the gate
    // answers with the stale copy instead (upstream_response_filter → fail_to_proxy).
    let g = get_until(
        &c,
        &url("/products"),
        Duration::from_secs(10),
        "a revalidation",
        |g| g.cache() != Some("hit"),
    )
    .await;
    assert_eq!(g.status, 200, "the 500 never reaches the shopper");
    // Pingora closes the connection after a failed proxy attempt: the response says so.
    assert_eq!(
        g.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    assert_eq!(g.cache(), Some("stale"));
    assert_eq!(g.body, warm.body);
    assert!(g.age() >= Some(1), "{:?}", g.age());
    assert_eq!(
        shop.path_requests("/products"),
        2,
        "the origin was asked, and failed"
    );
    for _ in 0..3 {
        let g = get(&c, &url("/products")).await;
        assert_eq!((g.status, g.cache()), (200, Some("stale")));
        assert_eq!(g.body, warm.body);
    }

    // The origin down (connections closed unanswered): still the stale copy.
    shop.set_failing(None);
    shop.set_down(true);
    let before = shop.stats().requests;
    for _ in 0..3 {
        let g = get(&c, &url("/products")).await;
        assert_eq!((g.status, g.cache()), (200, Some("stale")), "origin down");
        assert_eq!(g.body, warm.body);
    }
    assert_eq!(
        shop.stats().requests,
        before,
        "nothing was answered by the origin"
    );
    let errors = fg.metrics().await.first(
        "flashgate_cache_results_total",
        &[("kind", "catalog"), ("result", "stale")],
    );
    assert!(errors >= Some(7.0), "{errors:?}");

    // Back up: a fresh copy again.
    shop.set_down(false);
    let back = get_until(
        &c,
        &url("/products"),
        Duration::from_secs(10),
        "a fresh fill",
        |g| g.cache() == Some("miss"),
    )
    .await;
    assert_eq!(back.status, 200);
    assert_eq!(get(&c, &url("/products")).await.cache(), Some("hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_misses_make_one_origin_request() {
    let origin = Origin::start().await;
    let fg = Node::start(&Config::new(origin.addr).extra(catalog_route("/products", ""))).await;
    let shop = &origin.shop;
    // Slow enough that the crowd arrives while the first request is still at the origin.
    shop.set_path_fault(
        "/products",
        Some(PathFault {
            latency: Some(Duration::from_millis(500)),
            ..PathFault::default()
        }),
    );
    let c = shopper::client();
    let url = format!("{}/products", fg.base);
    let start = Arc::new(tokio::sync::Barrier::new(100));
    let mut crowd = JoinSet::new();
    for _ in 0..100 {
        let (c, url, start) = (c.clone(), url.clone(), start.clone());
        crowd.spawn(async move {
            start.wait().await;
            get(&c, &url).await
        });
    }
    let mut by_cache: HashMap<String, usize> = HashMap::new();
    let mut bodies = std::collections::HashSet::new();
    while let Some(g) = crowd.join_next().await {
        let g = g.expect("crowd task");
        assert_eq!(g.status, 200);
        *by_cache
            .entry(g.cache().unwrap_or_default().to_owned())
            .or_default() += 1;
        bodies.insert(g.body);
    }
    assert_eq!(
        shop.path_requests("/products"),
        1,
        "exactly one origin request"
    );
    assert_eq!(by_cache.get("miss"), Some(&1), "{by_cache:?}");
    assert_eq!(by_cache.get("hit"), Some(&99), "{by_cache:?}");
    assert_eq!(bodies.len(), 1, "everyone got the same page");
    let coalesced = fg.metrics().await.first(
        "flashgate_cache_results_total",
        &[("kind", "catalog"), ("result", "coalesced")],
    );
    assert!(
        coalesced >= Some(1.0),
        "followers waited for the leader: {coalesced:?}"
    );
}

/// `max_concurrent = 4`: essential routes may use 4 slots, default ones 2, optional ones 1.
fn limited_pool(origin: std::net::SocketAddr) -> String {
    format!(
        r#"
[upstreams.limited]
servers = ["{origin}"]
connect_timeout = "500ms"
read_timeout = "10s"
max_concurrent = 4
essential_reserve = 0.5
optional_share = 0.25

[[routes]]
path = "/echo"
upstream = "limited"

[[routes]]
path = "/healthz"
upstream = "limited"

[[routes]]
path = "/cart"
upstream = "limited"
kind = "essential"

[[routes]]
path = "/api/inventory"
upstream = "limited"
kind = "optional"

[[routes]]
path = "/api/products"
upstream = "limited"
kind = "optional"
cache_ttl = "1s"
stale_while_revalidate = "0s"
stale_if_error = "1m"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saturated_pool_sheds_optional_routes_before_essential_ones() {
    let origin = Origin::start().await;
    let fg = Node::start(&Config::new(origin.addr).extra(limited_pool(origin.addr))).await;
    let c = shopper::client();
    let shop = &origin.shop;
    let url = |p: &str| format!("{}{p}", fg.base);
    let warm = get(&c, &url("/api/products")).await;
    assert_eq!((warm.status, warm.cache()), (200, Some("miss")));

    // Requests that hold a slot for a while: `/echo` answers after 4 s.
    shop.set_path_fault(
        "/echo",
        Some(PathFault {
            latency: Some(Duration::from_secs(4)),
            ..PathFault::default()
        }),
    );
    let hog = |n: u64| {
        let (c, u) = (c.clone(), url(&format!("/echo?hog={n}")));
        tokio::spawn(async move { get(&c, &u).await })
    };
    let first = hog(1);
    wait_until("one slot taken", Duration::from_secs(5), || {
        (shop.path_requests("/echo") == 1).then_some(())
    })
    .await;

    // One slot taken: optional routes (1 slot) are shed, the others pass.
    let shed = get(&c, &url("/api/inventory")).await;
    assert_eq!(shed.status, 503);
    let retry = shed
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok());
    assert!(
        retry.and_then(|r| r.parse::<u64>().ok()) >= Some(1),
        "{retry:?}"
    );
    assert_eq!(shop.path_requests("/api/inventory"), 0);
    assert_eq!(
        get(&c, &url("/healthz")).await.status,
        200,
        "default routes pass"
    );
    assert_eq!(
        get(&c, &url("/cart")).await.status,
        200,
        "essential routes pass"
    );

    let second = hog(2);
    wait_until("two slots taken", Duration::from_secs(5), || {
        (shop.path_requests("/echo") == 2).then_some(())
    })
    .await;

    // Two taken: default routes (2 slots) are shed too; essential ones keep their share.
    assert_eq!(get(&c, &url("/healthz")).await.status, 503);
    assert_eq!(get(&c, &url("/api/inventory")).await.status, 503);
    for _ in 0..3 {
        let g = get(&c, &url("/cart")).await;
        assert_eq!(g.status, 200, "essential routes still pass");
    }
    assert_eq!(shop.path_requests("/cart"), 4);
    // A shed optional route with a cached copy gets the copy (once past its 1 s TTL).
    let g = get_until(
        &c,
        &url("/api/products"),
        Duration::from_secs(5),
        "a stale copy",
        |g| g.cache() != Some("hit"),
    )
    .await;
    assert_eq!((g.status, g.cache()), (200, Some("stale")));
    assert_eq!(g.body, warm.body);
    assert_eq!(
        shop.path_requests("/api/products"),
        1,
        "the shed request did not reach the origin"
    );
    let optional_shed = fg.metrics().await.first(
        "flashgate_shed_total",
        &[
            ("pool", "limited"),
            ("kind", "optional"),
            ("reason", "saturated"),
        ],
    );
    assert!(optional_shed >= Some(3.0), "{optional_shed:?}");

    // The slow requests finish: capacity comes back.
    for h in [first, second] {
        assert_eq!(h.await.expect("hog").status, 200);
    }
    let g = get_until(
        &c,
        &url("/api/inventory"),
        Duration::from_secs(5),
        "capacity",
        |g| g.status == 200,
    )
    .await;
    assert_eq!(g.status, 200);
    assert_eq!(shop.path_requests("/api/inventory"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_aware_admission_follows_the_origins_health() {
    let origin = Origin::start().await;
    // 1200 a minute: 20 a second while the origin is healthy, 5 at min_factor 0.25.
    let extra = r#"
[[rooms]]
id = "drop"
paths = ["/drops"]
new_users_per_minute = 1200
total_active_users = 100000
tick = "200ms"
poll_interval = "1s"
abandon_after = "5m"
claim_window = "2m"
[rooms.origin_aware]
min_factor = 0.25
latency_target = "300ms"
error_target = 0.05
"#;
    let fg = Node::start(&Config::new(origin.addr).extra(extra)).await;
    let shop = &origin.shop;
    let c = shopper::client();

    // A long line: 400 shoppers with a ticket each (no cookies: one ticket per request).
    let mut joins = JoinSet::new();
    for w in 0..8 {
        let (c, url) = (c.clone(), format!("{}/drops/velvet", fg.base));
        joins.spawn(async move {
            for i in 0..50 {
                // The first few are let in at once (and get the shop's 404): fine.
                c.get(format!("{url}?w={w}&i={i}"))
                    .header("accept", "application/json")
                    .send()
                    .await
                    .expect("join");
            }
        });
    }
    while let Some(j) = joins.join_next().await {
        j.expect("joining task");
    }
    let room = fg.room("drop").await;
    assert!(room["tickets_issued"].as_u64() >= Some(400), "{room}");
    assert_eq!(room["origin_factor"], 1.0);
    assert_eq!(room["new_users_per_minute"], 1200);
    // Seconds of wait per shopper in line, as the ETA tells it.
    let eta_per_shopper = |r: &Value| {
        let eta = r["eta_back_of_line_seconds"].as_u64().unwrap_or(0) as f64;
        eta / r["waiting"].as_u64().unwrap_or(1).max(1) as f64
    };
    let healthy_eta = eta_per_shopper(&room);

    // Admissions per second over `window`, from the serving number.
    let rate = |window: Duration| {
        let fg = &fg;
        async move {
            let a = fg.room("drop").await;
            let t = Instant::now();
            wait_until("the window", window + Duration::from_secs(1), || {
                (t.elapsed() >= window).then_some(())
            })
            .await;
            let b = fg.room("drop").await;
            let secs = t.elapsed().as_secs_f64();
            assert!(
                b["waiting"].as_u64() > Some(0),
                "the line must not run dry: {b}"
            );
            let served = b["serving"].as_u64().unwrap_or(0) - a["serving"].as_u64().unwrap_or(0);
            served as f64 / secs
        }
    };
    let healthy = rate(Duration::from_secs(2)).await;
    assert!(healthy > 10.0, "about 20 a second: {healthy}");

    // The origin fails every request; traffic on the room's pool keeps telling the shield.
    shop.set_failing(Some(500));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (c, url, stop) = (c.clone(), format!("{}/echo", fg.base), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = c.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let low = fg
        .wait_room("drop", "the factor to fall", |r| {
            r["origin_factor"].as_f64().is_some_and(|f| f <= 0.3)
        })
        .await;
    assert!(low["new_users_per_minute"].as_u64() <= Some(360), "{low}");
    assert!(
        eta_per_shopper(&low) > healthy_eta * 2.0,
        "the ETA follows the lower rate: {low} vs {healthy_eta} s per shopper"
    );
    let gauge = fg
        .metrics()
        .await
        .first("flashgate_origin_health_factor", &[("room", "drop")]);
    assert!(gauge.is_some_and(|g| g <= 0.3), "{gauge:?}");
    let degraded = rate(Duration::from_secs(2)).await;
    assert!(
        degraded < healthy * 0.6,
        "admissions slow down with the origin: {degraded} vs {healthy}"
    );
    // Never below min_factor.
    assert!(fg.room("drop").await["origin_factor"].as_f64() >= Some(0.25));

    // The origin recovers: once its errors leave the window, the rate climbs back.
    shop.set_failing(None);
    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("traffic task");
    let up = fg
        .wait_room("drop", "the factor to recover", |r| {
            r["origin_factor"].as_f64().is_some_and(|f| f >= 0.5)
        })
        .await;
    assert!(up["new_users_per_minute"].as_u64() >= Some(600), "{up}");
    let gauge = fg
        .metrics()
        .await
        .first("flashgate_origin_health_factor", &[("room", "drop")]);
    assert!(gauge.is_some_and(|g| g >= 0.5), "{gauge:?}");
}
