//! A node's life: zero-downtime upgrade, graceful SIGTERM, JSON logs without secrets.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_hands_the_sockets_over_without_dropping_requests() {
    let origin = Origin::with_latency(Duration::from_millis(20)).await;
    let cfg = base(&origin)
        .server_line("grace_period = \"1s\"")
        .room(room("drop", "/echo", 6000, "hi"));
    let mut old = start(&cfg).await;
    let load = Load::start(&old.base, 4, true);
    load.advance(20).await;

    // The new binary waits on the upgrade socket (named after the first listen port).
    let sock = PathBuf::from(format!("/tmp/flashgate-{}-upgrade.sock", old.cfg.port));
    let _ = std::fs::remove_file(&sock);
    let mut new = old.upgrade();
    wait_for(
        "the new process to wait for the sockets",
        Duration::from_secs(20),
        || async { sock.exists() },
    )
    .await;
    old.signal("QUIT");
    old.wait_log("the handover", |l| l.contains("listener sockets sent"))
        .await;
    // The old process finishes what it has and exits; the new one serves on the same sockets.
    assert!(
        old.wait_exit(Duration::from_secs(30)).await,
        "old exits cleanly"
    );
    load.advance(50).await;
    // The listening sockets never close, and requests in flight finish. Idle keep-alive
    // connections of the old process are closed when it starts shutting down: a request sent
    // on one at that instant sees the connection close before any response, and a client
    // retries it on a new connection (browsers do for idempotent requests). At most one such
    // race per connection; the retry always succeeds.
    let (ok, retries, errors) = load.finish().await;
    assert!(
        errors.is_empty(),
        "requests failed during the upgrade: {errors:?}"
    );
    assert!(
        retries.len() <= 4,
        "one race per connection at most: {retries:?}"
    );
    assert!(
        retries
            .iter()
            .all(|r| r.contains("IncompleteMessage") || r.to_ascii_lowercase().contains("reset")),
        "only closed-connection races: {retries:?}"
    );
    assert!(ok >= 70);
    let (code, _) = new.admin_req("GET", "/api/rooms/drop", None).await;
    assert_eq!(code, 200, "the admin listener moved too");
    assert!(new.is_running(), "new still runs");
    drop(new);
    let _ = std::fs::remove_file(&sock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_requests_in_flight_finish() {
    let origin = Origin::with_latency(Duration::from_millis(1200)).await;
    let cfg = base(&origin).server_line("grace_period = \"3s\"");
    let mut node = start(&cfg).await;
    let before = origin.shop.stats().requests;
    let slow = tokio::spawn({
        let url = format!("{}/products", node.base);
        async move {
            let r = reqwest::get(url).await?;
            let status = r.status().as_u16();
            let body = r.text().await?;
            Ok::<_, reqwest::Error>((status, body.len()))
        }
    });
    wait_for(
        "the request to reach the origin",
        Duration::from_secs(10),
        || async { origin.shop.stats().requests > before },
    )
    .await;
    let sent = Instant::now();
    node.signal("TERM");
    let (status, len) = slow
        .await
        .expect("task")
        .expect("the in-flight request completes");
    assert_eq!(status, 200);
    assert!(len > 0);
    assert!(node.wait_exit(Duration::from_secs(30)).await, "clean exit");
    assert!(
        sent.elapsed() >= Duration::from_millis(500),
        "the process waited for the request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_logs_never_carry_secrets() {
    let origin = Origin::start().await;
    let key_secret = "ops-signing-secret-5c1e8a7f2b9d4e6a0c3f";
    let cfg = base(&origin)
        .admin_token(ADMIN_TOKEN)
        .server_line("log_format = \"json\"\ngrace_period = \"1s\"")
        .secret_env("FG_OPS_KEY")
        .room(room("drop", "/echo", 600, "hi"));
    let how = Launch {
        rust_log: Some("debug"),
        ..info()
    }
    .env("FG_OPS_KEY", key_secret);
    let mut node = Node::launch(&cfg, how).await;
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 200, "{body}");

    // Traffic that mints and presents every kind of token.
    let mut secrets = vec![ADMIN_TOKEN.to_owned(), key_secret.to_owned()];
    node.admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": true})))
        .await;
    let shopper = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let r = shopper::get(&shopper, &node.url("/echo"), &[]).await;
    let ticket = r.header("x-flashgate-token").expect("ticket").to_owned();
    secrets.push(ticket.clone());
    node.admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": false})))
        .await;
    node.wait_admitted(&shopper, "drop", Duration::from_secs(20))
        .await;
    let r = shopper::get(&shopper, &node.url("/echo"), &[]).await;
    assert_eq!(r.status, 200);
    let pass = r
        .set_cookie("fg_p_drop")
        .and_then(|c| c.strip_prefix("fg_p_drop="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let pass = pass.expect("pass");
    assert!(!pass.is_empty());
    secrets.push(pass.clone());
    let plain = reqwest::Client::new();
    let r = shopper::get(&plain, &node.url("/echo"), &[("x-flashgate-token", &pass)]).await;
    assert_eq!(r.status, 200, "with the pass in a header");
    // A wrong admin token must not be logged either.
    let wrong = "ops-wrong-token-9d8c7b6a5f4e3d2c";
    secrets.push(wrong.to_owned());
    let r = shopper::send(
        plain
            .get(format!("{}/api/rooms", node.admin))
            .bearer_auth(wrong),
    )
    .await;
    assert_eq!(r.status, 401);
    // A refused reload prints the config's problem, not its secrets.
    std::fs::write(
        &node.config,
        cfg.render().replace("threads = 2", "threads = 0"),
    )
    .expect("write");
    let (code, _) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 422);

    // Stop with SIGTERM so the log is complete, then scan it.
    node.signal("TERM");
    node.wait_exit(Duration::from_secs(30)).await;
    let lines = node.log_lines();
    assert!(lines.len() >= 5, "something was logged");
    let mut json_lines = 0;
    for l in &lines {
        for s in &secrets {
            assert!(!l.contains(s.as_str()), "a secret in the log: {l}");
        }
        if serde_json::from_str::<Value>(l).is_ok() {
            json_lines += 1;
        }
    }
    assert_eq!(json_lines, lines.len(), "every line is JSON: {lines:?}");
}
