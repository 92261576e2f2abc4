//! The origin: slow, erroring, down.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_slow_erroring_and_down() {
    let origin = Origin::start().await;
    let node = Node::start(&Config::new(origin.addr).read_timeout("1s").room(sale())).await;
    let fg = &node;
    fg.wait_room("drop", "the first slot", |r| {
        r["serving"].as_u64() >= Some(1)
    })
    .await;
    let holder = fg.shopper();
    assert_eq!(enter(fg, &holder).await, (200, true));
    fg.patch_room("drop", json!({"paused": true})).await;
    let waiter = fg.shopper();
    let mut w = Watch::new(join(fg, &waiter).await);

    // Slow: the origin takes 3 s, the pool's read timeout is 1 s.
    origin.shop.set_latency(Duration::from_secs(3));
    let t = Instant::now();
    let r = holder
        .get(format!("{}/echo", fg.base))
        .send()
        .await
        .expect("answer");
    let took = t.elapsed();
    let code = r.status().as_u16();
    assert!(code == 502 || code == 504, "slow origin: {code}");
    assert!(r.headers().get("retry-after").is_some(), "Retry-After");
    assert!(r
        .text()
        .await
        .unwrap_or_default()
        .contains("The shop is busy"));
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    // Meanwhile the waiting room does not wait on the origin.
    let t = Instant::now();
    w.observe(&fg.status(&waiter, "drop").await, "origin slow");
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "a poll waited on the origin"
    );
    origin.shop.set_latency(Duration::ZERO);

    // Erroring: the origin's own 5xx goes through untouched (no stale copy on this route);
    // the shopper's pass is not touched either.
    origin.shop.set_failing(Some(500));
    let r = get(fg, &holder, "/echo").await;
    assert_eq!(r.status(), 500, "the origin's answer");
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .all(|v| !v.to_str().unwrap_or("").starts_with("fg_p_drop=;")),
        "an origin error must not end the session"
    );
    origin.shop.set_failing(Some(503));
    assert_eq!(get(fg, &holder, "/echo").await.status(), 503);
    origin.shop.set_failing(None);

    // Down: connections are cut. A branded 502 with Retry-After.
    origin.shop.set_down(true);
    let r = get(fg, &holder, "/echo").await;
    assert_eq!(r.status(), 502, "origin down");
    assert!(r.headers().get("retry-after").is_some());
    // New arrivals are still queued by the room, which never needs the origin.
    let newcomer = fg.shopper();
    let (code, st, _) = get_json(&newcomer, &format!("{}/echo", fg.base)).await;
    assert_eq!(code, 200, "{st}");
    assert!(st["ticket"].as_u64().is_some(), "{st}");
    w.observe(&fg.status(&waiter, "drop").await, "origin down");

    // Back: the same pass works, the waiter's place is intact and the line moves.
    origin.shop.set_down(false);
    assert_eq!(
        enter(fg, &holder).await,
        (200, true),
        "the pass survived the outage"
    );
    fg.patch_room("drop", json!({"paused": false})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = fg.status(&waiter, "drop").await;
        w.observe(&st, "recovery");
        if st["admitted"] == true && enter(fg, &waiter).await == (200, true) {
            break;
        }
        assert!(Instant::now() < deadline, "the waiter never got in: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = fg.metrics().await;
    assert!(
        m.value("flashgate_requests_total{decision=\"upstream_error\"}") >= 2.0,
        "{m}"
    );
    node.assert_no_panic();
}
