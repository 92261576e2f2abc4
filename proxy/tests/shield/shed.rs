//! A saturated pool sheds optional routes before essential ones.

use super::*;

/// `max_concurrent = 4`: essential routes may use 4 slots, default ones 2, optional ones 1.
fn limited_pool(origin: &Origin) -> Config {
    let keys = Table::new()
        .set("connect_timeout", "500ms")
        .set("read_timeout", "10s")
        .set("max_concurrent", 4)
        .set("essential_reserve", 0.5)
        .set("optional_share", 0.25);
    let products = catalog("/api/products", Some("1s"), Some("0s"), Some("1m"));
    let routes = vec![
        Route::new("/cart").kind("essential"),
        Route::new("/api/inventory").kind("optional"),
        products.kind("optional"),
    ];
    own_pool(origin, "limited", keys, routes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saturated_pool_sheds_optional_routes_before_essential_ones() {
    let (origin, fg, c) = start(limited_pool).await;
    let shop = &origin.shop;
    let warm = get(&c, &fg.url("/api/products")).await;
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
        let (c, u) = (c.clone(), fg.url(&format!("/echo?hog={n}")));
        tokio::spawn(async move { get(&c, &u).await })
    };
    let first = hog(1);
    wait_until("one slot taken", Duration::from_secs(5), || {
        (shop.path_requests("/echo") == 1).then_some(())
    })
    .await;

    // One slot taken: optional routes (1 slot) are shed, the others pass.
    let shed = get(&c, &fg.url("/api/inventory")).await;
    assert_shed(&shed, 1);
    assert_eq!(shop.path_requests("/api/inventory"), 0);
    assert_eq!(
        get(&c, &fg.url("/healthz")).await.status,
        200,
        "default routes pass"
    );
    assert_eq!(
        get(&c, &fg.url("/cart")).await.status,
        200,
        "essential routes pass"
    );

    let second = hog(2);
    wait_until("two slots taken", Duration::from_secs(5), || {
        (shop.path_requests("/echo") == 2).then_some(())
    })
    .await;

    // Two taken: default routes (2 slots) are shed too; essential ones keep their share.
    assert_eq!(get(&c, &fg.url("/healthz")).await.status, 503);
    assert_eq!(get(&c, &fg.url("/api/inventory")).await.status, 503);
    for _ in 0..3 {
        let g = get(&c, &fg.url("/cart")).await;
        assert_eq!(g.status, 200, "essential routes still pass");
    }
    assert_eq!(shop.path_requests("/cart"), 4);
    // A shed optional route with a cached copy gets the copy (once past its 1 s TTL).
    let g = past_ttl(
        &c,
        &fg,
        "/api/products",
        Duration::from_secs(5),
        "a stale copy",
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
        &fg.url("/api/inventory"),
        Duration::from_secs(5),
        "capacity",
        |g| g.status == 200,
    )
    .await;
    assert_eq!(g.status, 200);
    assert_eq!(shop.path_requests("/api/inventory"), 1);
}
