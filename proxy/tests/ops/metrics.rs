//! `/metrics`: a strictly valid page after traffic, every metric documented.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_page_after_traffic() {
    let origin = Origin::start().await;
    let cfg = base(&origin).room(room("drop", "/echo", 600, "hi"));
    let node = start(&cfg).await;
    let (code, _) = node
        .admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": true})))
        .await;
    assert_eq!(code, 200);
    // Queued while paused, admitted after, then forwarded with the pass; an unprotected page.
    let shopper = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let (code, _, _) = get_json(&shopper, &format!("{}/echo", node.base)).await;
    assert_eq!(code, 202);
    node.admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": false})))
        .await;
    node.wait_admitted(&shopper, "drop", Duration::from_secs(20))
        .await;
    for _ in 0..3 {
        let r = shopper::get(&shopper, &node.url("/echo"), &[]).await;
        assert_eq!(r.status, 200, "forwarded");
    }
    let r = reqwest::get(format!("{}/products", node.base))
        .await
        .expect("page");
    assert_eq!(r.status(), 200);

    // The room gauges follow the store within a sync interval.
    wait_for("room gauges", Duration::from_secs(20), || async {
        let samples = Metrics::parse_strict(&node.metrics_text().await);
        samples
            .get("flashgate_active_users{room=\"drop\"}")
            .is_some_and(|v| v >= 1.0)
    })
    .await;
    let samples = Metrics::parse_strict(&node.metrics_text().await);
    let at_least = |series: &str, n: f64| {
        let v = samples
            .get(series)
            .unwrap_or_else(|| panic!("missing {series}"));
        assert!(v >= n, "{series} = {v}, expected at least {n}");
    };
    at_least("flashgate_requests_total{decision=\"queued\"}", 1.0);
    at_least("flashgate_requests_total{decision=\"admitted\"}", 1.0);
    at_least("flashgate_requests_total{decision=\"forwarded\"}", 3.0);
    at_least("flashgate_requests_total{decision=\"reserved\"}", 1.0);
    at_least("flashgate_tickets_issued_total{room=\"drop\"}", 1.0);
    at_least("flashgate_admissions_total{room=\"drop\"}", 1.0);
    at_least("flashgate_serving_number{room=\"drop\"}", 1.0);
    at_least("flashgate_tickets_number{room=\"drop\"}", 1.0);
    at_least("flashgate_active_users{room=\"drop\"}", 1.0);
    at_least(
        "flashgate_admission_target_per_minute{room=\"drop\"}",
        600.0,
    );
    at_least("flashgate_room_state{room=\"drop\",state=\"paused\"}", 0.0);
    at_least(
        "flashgate_upstream_seconds_count{class=\"2xx\",pool=\"shop\"}",
        4.0,
    );
    at_least(
        "flashgate_upstream_seconds_bucket{class=\"2xx\",pool=\"shop\",le=\"+Inf\"}",
        4.0,
    );
    at_least(
        "flashgate_upstream_seconds_sum{class=\"2xx\",pool=\"shop\"}",
        0.0,
    );
    assert_eq!(samples.get("flashgate_store_degraded"), Some(0.0));
    // Exactly one state is set per room.
    let states = samples.sum("flashgate_room_state", &[("room", "drop")]);
    assert_eq!(states, 1.0);
}

/// Every metric the binary registers is documented in docs/operations.md, and every metric
/// the doc names exists.
#[test]
fn every_metric_is_documented() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .expect("docs/operations.md");
    let names = flashgate::metrics::Metrics::new().names;
    for name in names.all() {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is not documented in docs/operations.md"
        );
    }
    for name in flashgate::monitoring::metric_names(&doc) {
        assert!(names.knows(name), "docs/operations.md names unknown {name}");
    }
}
