//! Stale copies: stale-while-revalidate, a slow pool's budget, origin errors and outages.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_origin_is_hidden_by_stale_while_revalidate() {
    let origin = Origin::start().await;
    let products = catalog("/products", Some("1s"), Some("30s"), None);
    let fg = Node::start(&Config::new(origin.addr).route(products)).await;
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
    let (origin, fg, c) = start(slow_pool_routes).await;
    let shop = &origin.shop;
    assert_eq!(
        get(&c, &fg.url("/api/products")).await.cache(),
        Some("miss")
    );
    assert_eq!(get(&c, &fg.url("/products")).await.cache(), Some("miss"));

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
        let (c, u) = (c.clone(), fg.url(&format!("/echo?n={i}")));
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
    let shed = get(&c, &fg.url("/api/inventory")).await;
    assert_shed(&shed, 2);
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
    assert_eq!(get(&c, &fg.url("/healthz")).await.status, 200);

    // With a budget: the stale copy at once, and one refresh behind it.
    let g = get(&c, &fg.url("/api/products")).await;
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
        let g = get(&c, &fg.url("/api/products")).await;
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
        let (c, u) = (c.clone(), fg.url("/products"));
        tokio::spawn(async move { get(&c, &u).await })
    };
    wait_until(
        "the leader to reach the origin",
        Duration::from_secs(5),
        || (shop.path_requests("/products") == 2).then_some(()),
    )
    .await;
    let meanwhile = get(&c, &fg.url("/products")).await;
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
    let products = catalog("/products", Some("1s"), Some("0s"), Some("1m"));
    // A short stale-if-error window, to see it end.
    let api = catalog("/api/products", Some("1s"), Some("0s"), Some("1s"));
    let fg = Node::start(&Config::new(origin.addr).route(products).route(api)).await;
    let c = shopper::client();
    let shop = &origin.shop;
    let warm = get(&c, &fg.url("/products")).await;
    assert_eq!((warm.status, warm.cache()), (200, Some("miss")));
    let api_warmed = Instant::now();
    assert_eq!(
        get(&c, &fg.url("/api/products")).await.cache(),
        Some("miss")
    );

    shop.set_failing(Some(500));
    // Uncached routes show the origin's error as it is.
    assert_eq!(get(&c, &fg.url("/echo")).await.status, 500);

    // A short window: hits for 1 s (TTL), stale copies for 1 s more (stale-if-error), then the
    // origin's error shows.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answers = Vec::new();
    let failed = loop {
        let g = get(&c, &fg.url("/api/products")).await;
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
    let g = past_ttl(
        &c,
        &fg,
        "/products",
        Duration::from_secs(10),
        "a revalidation",
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
        let g = get(&c, &fg.url("/products")).await;
        assert_eq!((g.status, g.cache()), (200, Some("stale")));
        assert_eq!(g.body, warm.body);
    }

    // The origin down (connections closed unanswered): still the stale copy.
    shop.set_failing(None);
    shop.set_down(true);
    let before = shop.stats().requests;
    for _ in 0..3 {
        let g = get(&c, &fg.url("/products")).await;
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
        &fg.url("/products"),
        Duration::from_secs(10),
        "a fresh fill",
        |g| g.cache() == Some("miss"),
    )
    .await;
    assert_eq!(back.status, 200);
    assert_eq!(get(&c, &fg.url("/products")).await.cache(), Some("hit"));
}

/// Catalog routes without stale-while-revalidate on a pool that should answer within 1 s: past
/// its TTL a copy is only good for errors, or while the pool is slower than the route's
/// latency budget.
fn slow_pool_routes(origin: &Origin) -> Config {
    let keys = Table::new()
        .set("read_timeout", "10s")
        .set("latency_target", "1s");
    let api = catalog("/api/products", Some("1s"), Some("0s"), Some("1m"));
    let routes = vec![
        Route::new("/api/inventory").kind("optional"),
        api.set("latency_budget", "300ms"),
        catalog("/products", Some("1s"), Some("0s"), Some("1m")),
    ];
    own_pool(origin, "storefront", keys, routes)
}
