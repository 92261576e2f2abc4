//! The admin API: its token, the audit log, `/readyz` following the store.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_api_needs_the_token_and_audits_changes() {
    let origin = Origin::start().await;
    let node = with_token(&origin, "hello").await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", node.admin);

    // Health and readiness are for probes: no token.
    for p in ["/healthz", "/readyz"] {
        assert_eq!(shopper::send(c.get(url(p))).await.status, 200, "{p}");
    }
    // Everything else: 401 without the token, with a wrong one, or with another scheme.
    for (m, p) in [
        ("GET", "/metrics"),
        ("GET", "/api/rooms"),
        ("GET", "/api/rooms/drop"),
        ("PATCH", "/api/rooms/drop"),
        ("POST", "/api/reload"),
        ("POST", "/api/cache/purge"),
    ] {
        let m = reqwest::Method::from_bytes(m.as_bytes()).expect("method");
        let none = shopper::send(c.request(m.clone(), url(p))).await;
        assert_eq!(none.status, 401, "{m} {p} without a token");
        assert_eq!(none.json()["error"], "missing or wrong bearer token");
        let wrong = c
            .request(m.clone(), url(p))
            .bearer_auth("ops-admin-token-7f3a9c2e1b5d4a61");
        assert_eq!(
            shopper::send(wrong).await.status,
            401,
            "{m} {p} with a wrong token"
        );
        let basic = c
            .request(m, url(p))
            .header("authorization", format!("Basic {ADMIN_TOKEN}"));
        assert_eq!(
            shopper::send(basic).await.status,
            401,
            "{p} with another scheme"
        );
    }

    // PATCH: applied, visible on GET, audited with who, before and after.
    let (code, after) = node
        .admin_req(
            "PATCH",
            "/api/rooms/drop",
            Some(json!({"new_users_per_minute": 90, "message": "Back at 6"})),
        )
        .await;
    assert_eq!(code, 200, "{after}");
    let r = node.room("drop").await;
    assert_eq!(r["new_users_per_minute"], 90);
    assert_eq!(r["message"], "Back at 6");
    let audit = node
        .wait_log("the audit line", |l| {
            l.contains("flashgate::audit") && l.contains("room overrides changed")
        })
        .await;
    assert!(
        audit.contains("room=\"drop\"") || audit.contains("room=drop"),
        "{audit}"
    );
    assert!(audit.contains("actor=admin:"), "who changed it: {audit}");
    assert!(
        audit.contains("new_users_per_minute: None"),
        "before: {audit}"
    );
    assert!(
        audit.contains("new_users_per_minute: Some(90)"),
        "after: {audit}"
    );
    assert!(!audit.contains(ADMIN_TOKEN), "never the token itself");

    // Bad requests get clear answers.
    let send = |m: &str, p: &str, body: &'static str| {
        let m = reqwest::Method::from_bytes(m.as_bytes()).expect("method");
        shopper::send(c.request(m, url(p)).bearer_auth(ADMIN_TOKEN).body(body))
    };
    let r = send("PATCH", "/api/rooms/drop", "{not json").await;
    assert_eq!(r.status, 400);
    let r = send("PATCH", "/api/rooms/drop", r#"{"pause": true}"#).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"], "pause: unknown field");
    let r = send("PATCH", "/api/rooms/drop", r#"{"new_users_per_minute": 0}"#).await;
    assert_eq!(r.status, 422);
    assert_eq!(send("GET", "/api/rooms/nope", "").await.status, 404);
    assert_eq!(send("DELETE", "/api/rooms/drop", "").await.status, 405);
    assert_eq!(send("GET", "/api/nothing", "").await.status, 404);
    // Nothing of that changed the room.
    assert_eq!(node.room("drop").await["new_users_per_minute"], 90);
    let (code, rooms) = node.admin_req("GET", "/api/rooms", None).await;
    assert_eq!(code, 200);
    assert_eq!(rooms.as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_follows_the_store_and_metrics_show_its_errors() {
    let origin = Origin::start().await;
    let mut redis = RedisServer::start();
    let store = Table::new()
        .set("kind", "redis")
        .set("url", redis.url())
        .set("snapshot_interval", "50ms");
    let cfg = base(&origin)
        .store(store.to_string())
        .room(room("drop", "/echo", 60, "hi"));
    let node = start(&cfg).await;
    let c = reqwest::Client::new();
    let readyz = || async {
        let r = shopper::send(c.get(format!("{}/readyz", node.admin))).await;
        (r.status, r.body)
    };
    wait_for("ready", Duration::from_secs(20), || async {
        readyz().await.0 == 200
    })
    .await;
    assert_eq!(readyz().await, (200, "ready\n".to_owned()));

    redis.kill();
    wait_for("not ready", Duration::from_secs(20), || async {
        readyz().await.0 == 503
    })
    .await;
    assert_eq!(readyz().await.1, "store unavailable\n");
    // An arrival while the store is down: counted as a store error, and it gets an answer.
    let r = shopper::send(c.get(node.url("/echo"))).await;
    assert!(r.status < 600, "the gate answers");
    wait_for("store metrics", Duration::from_secs(20), || async {
        let m = node.metrics_text().await;
        m.contains("flashgate_store_errors_total{") && m.contains("flashgate_store_degraded 1")
    })
    .await;

    redis.restart_empty();
    wait_for("ready again", Duration::from_secs(30), || async {
        readyz().await.0 == 200
    })
    .await;
}
