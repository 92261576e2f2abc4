//! Hot reload: by SIGHUP and by the admin API, under load; refused files and restart-only keys.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_by_sighup_and_api_under_load_drops_nothing() {
    // A slow origin keeps requests in flight at every moment of the reloads.
    let origin = Origin::with_latency(Duration::from_millis(40)).await;
    let mut cfg = base(&origin).room(room("drop", "/echo", 6000, "before"));
    let node = start(&cfg).await;
    assert_eq!(node.room("drop").await["new_users_per_minute"], 6000);

    let load = Load::start(&node.base, 4, false);
    load.advance(20).await;

    // A request already at the origin when the reload lands finishes normally.
    let before = origin.shop.stats().requests;
    let slow = tokio::spawn({
        let url = format!("{}/products", node.base);
        async move { reqwest::get(url).await.map(|r| r.status().as_u16()) }
    });
    wait_for(
        "the slow request to reach the origin",
        Duration::from_secs(10),
        || async { origin.shop.stats().requests > before },
    )
    .await;

    // 1. SIGHUP: a new rate, a new message, a new room.
    cfg.rest.rooms = vec![
        room("drop", "/echo", 7000, "after SIGHUP"),
        room("extra", "/cart", 30, "new room"),
    ];
    node.rewrite(&cfg);
    node.signal("HUP");
    node.wait_log("the SIGHUP reload", |l| {
        l.contains("flashgate::audit")
            && l.contains("by=\"SIGHUP\"")
            && l.contains("reloaded")
            && l.contains("2 rooms")
    })
    .await;
    let r = node.room("drop").await;
    assert_eq!(r["new_users_per_minute"], 7000, "{r}");
    assert_eq!(r["message"], "after SIGHUP");
    assert_eq!(node.room("extra").await["new_users_per_minute"], 30);
    assert_eq!(
        slow.await.expect("task").ok(),
        Some(200),
        "in-flight request"
    );
    load.advance(20).await;

    // 2. The admin API: answers only once the new config is in force.
    cfg.rest.rooms = vec![
        room("drop", "/echo", 7000, "after API"),
        room("extra", "/cart", 45, "new room"),
    ];
    node.rewrite(&cfg);
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["reloaded"], true);
    assert!(
        body["summary"]
            .as_str()
            .is_some_and(|s| s.contains("2 rooms")),
        "{body}"
    );
    assert_eq!(node.room("drop").await["message"], "after API");
    assert_eq!(node.room("extra").await["new_users_per_minute"], 45);
    // The new room gates its path at once.
    let (code, st, _) = get_json(&reqwest::Client::new(), &format!("{}/cart", node.base)).await;
    assert!(code == 200 || code == 202, "{code} {st}");
    load.advance(20).await;

    // A reload touches no connection: not even a keep-alive race, so no retry at all.
    let (ok, _, errors) = load.finish().await;
    assert!(
        errors.is_empty(),
        "requests failed during reloads: {errors:?}"
    );
    assert!(ok >= 60, "the load ran ({ok} requests)");
    let m = node.metrics_text().await;
    assert!(
        m.contains("flashgate_reloads_total{result=\"ok\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_refuses_bad_files_and_restart_only_changes() {
    let origin = Origin::start().await;
    let mut cfg = base(&origin).room(room("drop", "/echo", 60, "steady"));
    let node = start(&cfg).await;
    let file = node.config.display().to_string();

    // An invalid value: refused with FILE: dotted.key: reason, the old config stays.
    cfg.rest.rooms = vec![room("drop", "/echo", 0, "steady")];
    node.rewrite(&cfg);
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    let expected = format!("{file}: rooms[0].new_users_per_minute: must be > 0");
    assert_eq!(code, 422);
    assert_eq!(body["error"], expected.as_str());
    assert_eq!(node.room("drop").await["new_users_per_minute"], 60);
    let line = node
        .wait_log("the refused API reload", |l| {
            l.contains("reload refused") && l.contains("by=\"admin API\"")
        })
        .await;
    assert!(line.contains(&expected), "{line}");

    // The same through SIGHUP: the log says it, and why.
    node.signal("HUP");
    let line = node
        .wait_log("the refused SIGHUP reload", |l| {
            l.contains("reload refused") && l.contains("by=\"SIGHUP\"")
        })
        .await;
    assert!(line.contains(&expected), "{line}");
    assert!(line.contains("ERROR"), "logged as an error: {line}");
    assert_eq!(node.room("drop").await["new_users_per_minute"], 60);

    // A syntax error names the file and the position.
    std::fs::write(&node.config, "[server\nlisten = 1").expect("write");
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 422);
    let msg = body["error"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(&format!("{file}: ")) && msg.contains("line 1"),
        "{msg}"
    );

    // A new listen address needs a restart: refused, and the node still serves the old one.
    let moved = free_port();
    let text = cfg.render().replace(
        &format!("listen = [\"127.0.0.1:{}\"]", node.cfg.port),
        &format!("listen = [\"127.0.0.1:{moved}\"]"),
    );
    let text = text.replace("new_users_per_minute = 0", "new_users_per_minute = 60");
    std::fs::write(&node.config, text).expect("write");
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 422);
    assert_eq!(
        body["error"],
        format!(
            "{file}: server.listen: needs a restart (`flashgate run --upgrade` hands the sockets over)"
        )
        .as_str()
    );
    let r = shopper::get(&reqwest::Client::new(), &node.url("/products"), &[]).await;
    assert_eq!(r.status, 200, "the old listener still serves");
    assert!(reqwest::get(format!("http://127.0.0.1:{moved}/products"))
        .await
        .is_err());

    // So does the catalog cache's size (the cache is built at start); a restart message again.
    cfg.rest.rooms = vec![room("drop", "/echo", 60, "steady")];
    let cache = Table::new().set("max_bytes", "64MiB");
    node.rewrite(&cfg.clone().table("cache", cache));
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 422);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("{file}: cache: needs a restart"))),
        "{body}"
    );

    // The same file without the listener change reloads.
    cfg.rest.rooms = vec![room("drop", "/echo", 61, "steady")];
    node.rewrite(&cfg);
    let (code, _) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 200);
    assert_eq!(node.room("drop").await["new_users_per_minute"], 61);
    let m = node.metrics_text().await;
    assert!(
        m.contains("flashgate_reloads_total{result=\"refused\"} 5"),
        "{m}"
    );
    assert!(
        m.contains("flashgate_reloads_total{result=\"ok\"} 1"),
        "{m}"
    );
}

/// A reload does not cut server-sent events: a stream opened before it stays with its room's
/// hub (the room as it was; the view and its change signal carry over), one opened after it
/// goes to the new room's hub, and both are pushed the room's next change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_streams_are_pushed_across_a_reload() {
    let origin = Origin::start().await;
    let mut cfg = base(&origin).room(room("drop", "/echo", 60, "steady"));
    let node = start(&cfg).await;
    node.patch_room("drop", json!({"paused": true})).await;
    let open = |c: reqwest::Client| {
        let node = &node;
        async move {
            let _ = get_json(&c, &node.url("/echo")).await; // a ticket
            let mut sse = Events::open(&c, &node.url("/.flashgate/events?room=drop")).await;
            assert_eq!(sse.next(Duration::from_secs(20)).await["state"], "paused");
            sse
        }
    };
    let mut before = open(node.shopper()).await;

    cfg.rest.rooms = vec![room("drop", "/echo", 120, "reloaded")];
    node.rewrite(&cfg);
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 200, "{body}");
    let mut after = open(node.shopper()).await;
    assert_eq!(node.metric("flashgate_event_streams").await, 2.0);

    node.patch_room("drop", json!({"paused": false})).await;
    for sse in [&mut before, &mut after] {
        sse.next_where(Duration::from_secs(10), |st| st["admitted"] == true)
            .await;
    }
}
