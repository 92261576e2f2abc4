//! The catalog cache: shared pages cached, private ones never, purges, one origin request per miss.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalog_is_cached_never_shares_private_responses_and_purges() {
    let origin = Origin::start().await;
    // `cache_ttl` overrides the shop's `max-age=5`, but never the never-cache rules.
    let products = catalog("/products", Some("1m"), None, None);
    let fg = Node::start(&Config::new(origin.addr).route(products)).await;
    let c = shopper::client();
    let shop = &origin.shop;

    let first = get(&c, &fg.url("/products")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.cache(), Some("miss"));
    assert!(first.headers.get("x-request-id").is_some());
    let second = get(&c, &fg.url("/products")).await;
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
    let head = c.head(fg.url("/products")).send().await.expect("head");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["x-flashgate-cache"], "hit");
    assert_eq!(shop.path_requests("/products"), 1);

    // The query is normalised: parameter order does not make a new entry.
    assert_eq!(
        get(&c, &fg.url("/products?b=2&a=1")).await.cache(),
        Some("miss")
    );
    assert_eq!(
        get(&c, &fg.url("/products?a=1&b=2")).await.cache(),
        Some("hit")
    );
    assert_eq!(shop.path_requests("/products"), 2);

    // The shop varies its pages on Accept (HTML or JSON): two variants, never mixed up.
    let json_accept = [("accept", "application/json")];
    let j1 = shopper::get(&c, &fg.url("/products/NOVA-HIGHLIGHTER"), &json_accept).await;
    let h1 = get(&c, &fg.url("/products/NOVA-HIGHLIGHTER")).await;
    let j2 = shopper::get(&c, &fg.url("/products/NOVA-HIGHLIGHTER"), &json_accept).await;
    let h2 = get(&c, &fg.url("/products/NOVA-HIGHLIGHTER")).await;
    assert_eq!((j1.cache(), h1.cache()), (Some("miss"), Some("miss")));
    assert_eq!((j2.cache(), h2.cache()), (Some("hit"), Some("hit")));
    assert!(j2.body.starts_with('{') && h2.body.starts_with("<!doctype html>"));
    assert_eq!(shop.path_requests("/products/NOVA-HIGHLIGHTER"), 2);

    private_responses_are_never_shared(&fg, &c, shop).await;

    // Purge through the admin API: by URL, by prefix, everything.
    let before = cache_report(&fg).await;
    assert!(before["entries"].as_u64() >= Some(3), "{before}");
    assert!(before["bytes"].as_u64() > Some(0), "{before}");
    // The page varies on Accept: its variant and its Vary record go.
    assert_eq!(
        purge(&fg, json!({"url": "/products"})).await,
        (200, json!({"purged": 2}))
    );
    assert_eq!(get(&c, &fg.url("/products")).await.cache(), Some("miss"));
    assert_eq!(shop.path_requests("/products"), 3);
    assert_eq!(get(&c, &fg.url("/products")).await.cache(), Some("hit"));
    // A prefix is whole path segments, like a route's: the page and everything under it.
    let (code, n) = purge(&fg, json!({"prefix": "/products/NOVA-HIGHLIGHTER"})).await;
    assert_eq!(code, 200);
    assert_eq!(n, json!({"purged": 3}), "two variants and the Vary record");
    assert_eq!(
        get(&c, &fg.url("/products/NOVA-HIGHLIGHTER")).await.cache(),
        Some("miss")
    );
    assert_eq!(
        get(&c, &fg.url("/products")).await.cache(),
        Some("hit"),
        "outside the prefix"
    );
    let (code, _) = purge(&fg, json!({"all": true})).await;
    assert_eq!(code, 200);
    assert_eq!(cache_report(&fg).await["entries"], 0);
    assert_eq!(get(&c, &fg.url("/products")).await.cache(), Some("miss"));
    let (code, err) = purge(&fg, json!({"path": "/products"})).await;
    assert_eq!(code, 400, "{err}");
    assert!(
        shopper::text(&err["error"]).contains("unknown field"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_misses_make_one_origin_request() {
    let origin = Origin::start().await;
    let products = catalog("/products", None, None, None);
    let fg = Node::start(&Config::new(origin.addr).route(products)).await;
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

/// Never shared: private, no-store, Set-Cookie — whatever the route's cache_ttl says.
async fn private_responses_are_never_shared(fg: &Node, c: &reqwest::Client, shop: &Shop) {
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
            let g = get(c, &fg.url(path)).await;
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
}
