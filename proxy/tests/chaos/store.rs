//! Redis: flushed mid-sale; hung (SIGSTOP) and back; killed and restarted, with the time
//! admissions take to resume.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_flushed_mid_sale() {
    let (redis, _origin, a, b) = fleet_of_two().await;
    let (fa, fb) = (&a, &b);

    // A pass holder, then a held line of 24 over both nodes.
    let holder = holder_then_pause(fa, fb).await;
    let line = held_line(fa, fb, 24, |i| i % 2 == 0).await;
    let issued_before = fa.room("drop").await["tickets_issued"]
        .as_u64()
        .expect("issued");

    // The line moves (4 a second); the holder shops on both nodes; a monitor checks that no
    // node's serving number ever goes back.
    let nodes: Vec<String> = vec![fa.base.clone(), fb.base.clone()];
    let stop = Arc::new(AtomicBool::new(false));
    let shopping = keep_shopping(nodes.clone(), holder, stop.clone());
    let monitor = monitor_serving(nodes.clone(), stop.clone());
    let entries: Arc<Mutex<Vec<(u64, Duration)>>> = Arc::default();
    let started = Instant::now();
    fb.patch_room("drop", json!({"paused": false})).await;
    let waiters = tokio::spawn(run_line(
        nodes.clone(),
        line,
        started,
        entries.clone(),
        Duration::from_secs(40),
    ));

    // FLUSHALL once a few are in: Redis is up but has forgotten everything.
    let deadline = Instant::now() + Duration::from_secs(20);
    while entries.lock().len() < 4 {
        assert!(Instant::now() < deadline, "the line never moved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let () = redis.cmd(&redis::cmd("FLUSHALL")).expect("FLUSHALL");
    let flushed_at = started.elapsed();

    // A newcomer after the flush gets a number nobody holds.
    let newcomer = fa.shopper();
    let deadline = Instant::now() + Duration::from_secs(10);
    let t = loop {
        let r = get(fa, &newcomer, "/echo").await;
        let code = r.status().as_u16();
        let st: Value = r.json().await.unwrap_or_default();
        assert!(code == 200 || code == 503, "newcomer: {code} {st}");
        if let Some(t) = st["ticket"].as_u64() {
            break t;
        }
        if st["method"] == "GET" {
            break 0; // admitted at once: the line was already through
        }
        assert!(Instant::now() < deadline, "no ticket after the flush: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        t == 0 || t > issued_before,
        "ticket {t} handed out again (issued before the flush: {issued_before})"
    );

    let admitted = waiters.await.expect("the line");
    stop.store(true, Ordering::Relaxed);
    let served = shopping.await.expect("holder");
    let samples = monitor.await.expect("monitor");
    assert_eq!(admitted.len(), 24);
    // Everyone admitted keeps access on both nodes.
    for (_, c) in &admitted {
        for fg in &nodes {
            assert_eq!(enter(fg, c).await, (200, true));
        }
    }
    let reseeds_of = "flashgate_store_reseeds_total{room=\"drop\"}";
    let reseeds = fa.metric(reseeds_of).await + fb.metric(reseeds_of).await;
    assert!(reseeds >= 1.0, "nobody re-seeded the flushed room");
    // The re-seed may let in up to one slice (4) more than the rate (docs/redis.md).
    let entries = entries.lock().clone();
    assert_within_rate(&entries, 4.0, 4.0, "FLUSHALL mid-sale");
    eprintln!(
        "FLUSHALL at {flushed_at:?}: {reseeds} re-seeds, holder served {served} times, \
         {samples} serving samples, newcomer ticket {t} (issued before {issued_before})"
    );
    a.assert_no_panic();
    b.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_hangs_then_recovers() {
    let (redis, _origin, a, b) = fleet_of_two().await;
    let (fa, fb) = (&a, &b);
    let holder = holder_then_pause(fa, fb).await;
    let mut line = held_line(fa, fb, 6, |i| i % 2 == 0).await;
    let node = |i: usize| if i == 0 { fa } else { fb };

    // Redis stops answering (SIGSTOP): connections stay open, nothing comes back.
    redis.freeze();
    let frozen = Instant::now();
    // Pass holders: served by both nodes, never waiting on Redis.
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        for fg in [fa, fb] {
            let t = Instant::now();
            assert_eq!(
                enter(fg, &holder).await,
                (200, true),
                "holder during the hang"
            );
            worst = worst.max(t.elapsed());
        }
    }
    assert!(
        worst < Duration::from_millis(500),
        "a pass holder waited {worst:?} on a hung Redis"
    );
    // Waiting shoppers keep their place (answered from the nodes' views).
    for (n, c, w) in &mut line {
        let t = Instant::now();
        w.observe(&node(*n).status(c, "drop").await, "during the hang");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "a poll waited on Redis"
        );
    }
    // New arrivals: the room's waiting answer without a ticket (its status code, never a
    // 5xx, and Retry-After), within the store's timeouts.
    let mut newcomers = 0;
    let mut worst_new = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = Instant::now();
        let r = get(fa, &fa.shopper(), "/echo").await;
        let took = t.elapsed();
        worst_new = worst_new.max(took);
        assert!(
            took < Duration::from_millis(2500),
            "a new arrival waited {took:?} on a hung Redis"
        );
        let code = r.status().as_u16();
        let retry = r.headers().get("retry-after").is_some();
        let st: Value = r.json().await.expect("JSON");
        assert_eq!(code, 200, "new arrival during the hang: {st}");
        assert!(st["method"].is_null(), "the origin answered: {st}");
        if st["ticket"].is_null() {
            assert!(retry, "no Retry-After: {st}");
            newcomers += 1;
            if newcomers >= 3 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "new arrivals never got the store-error answer"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while fa.readyz().await != 503 {
        assert!(
            Instant::now() < deadline,
            "readyz never turned 503 during the hang"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hung_for = frozen.elapsed();

    // Redis answers again, with its data: the line moves on, nobody moved back.
    redis.thaw();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fa.readyz().await != 200 || fb.readyz().await != 200 {
        assert!(Instant::now() < deadline, "readyz never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered_after = frozen.elapsed();
    let (admitted, entries) = release_line(fa, fb, line).await;
    assert_eq!(admitted.len(), 6);
    assert_eq!(enter(fb, &holder).await, (200, true));
    assert_within_rate(&entries, 4.0, 0.0, "after a Redis hang");
    eprintln!(
        "Redis hung {hung_for:?}: holder worst {worst:?}, {newcomers} newcomers told to wait \
         (worst {worst_new:?}); ready again {recovered_after:?} after the freeze"
    );
    a.assert_no_panic();
    b.assert_no_panic();
}

/// Polls every node's serving number until `stop`, asserting it never goes back; returns how
/// many samples it took.
fn monitor_serving(nodes: Vec<String>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut last = [0u64; 2];
        let mut samples = 0;
        while !stop.load(Ordering::Relaxed) {
            for (i, fg) in nodes.iter().enumerate() {
                let c = reqwest::Client::new();
                let s = shopper::status(fg, &c, "drop").await["serving"]
                    .as_u64()
                    .expect("serving");
                assert!(
                    s >= last[i],
                    "node {i}: serving went back from {} to {s}",
                    last[i]
                );
                last[i] = s;
                samples += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        samples
    })
}

/// A Redis killed mid-sale and started again (empty): no shopper sees a 5xx — a new arrival
/// gets the room's waiting answer (its status code, Retry-After, a page that reloads itself),
/// a shopper whose turn came and whose entry cannot be claimed is told "you're next" — and
/// once Redis answers again admissions resume within a second (the breaker's probe opens a
/// fresh connection; the figure is printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_shoppers_wait_and_admissions_resume_within_a_second() {
    let mut redis = RedisServer::start();
    let origin = Origin::start().await;
    let room = sale().status_code(202);
    let [a, b] = Node::fleet(&Config::new(origin.addr).redis(redis.url()).room(room)).await;
    let (fa, fb) = (&a, &b);

    // Whose turn came, not yet in: joined while the line was held, then let through.
    let _holder = holder_then_pause(fa, fb).await;
    let next = fa.shopper();
    let r = get(fa, &next, "/echo").await;
    assert_eq!(r.status().as_u16(), 202, "the room's status code");
    let st: Value = r.json().await.expect("JSON");
    let ticket = st["ticket"].as_u64().expect("a ticket");
    fb.patch_room("drop", json!({"paused": false})).await;
    let within = Duration::from_secs(10);
    fa.wait_status(&next, "drop", within, |st| st["admitted"] == true)
        .await;

    redis.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fa.readyz().await != 503 || fb.readyz().await != 503 {
        assert!(Instant::now() < deadline, "readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Three seconds of outage: long enough for a breaker that doubles its backoff to be
    // waiting seconds between probes. Every answer meanwhile is a waiting answer.
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(3) {
        outage_answers_are_waiting_answers(fa, &next, ticket).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let echoes = origin.shop.stats().by_path.echo;

    // Redis answers again (empty; the nodes re-seed it): how long until admissions resume.
    redis.restart_empty();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(20);
    loop {
        let (code, entered) = enter(fa, &next).await;
        if entered {
            break;
        }
        assert!(code < 500, "entering after the outage: {code}");
        assert!(Instant::now() < deadline, "ticket {ticket} never entered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resumed = back.elapsed();
    // A newcomer is numbered again (or let straight in, if the line is through by now).
    let newcomer = fb.shopper();
    let t = loop {
        let r = get(fb, &newcomer, "/echo").await;
        assert!(r.status().as_u16() < 500, "newcomer: {}", r.status());
        let st: Value = r.json().await.expect("JSON");
        if let Some(t) = st["ticket"].as_u64() {
            break t;
        }
        if st["method"] == "GET" {
            break u64::MAX; // admitted at once: no number to check
        }
        assert!(
            Instant::now() < deadline,
            "no ticket after the outage: {st}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let numbering = back.elapsed();
    assert!(
        t > ticket,
        "ticket {t} handed out again (the next was {ticket})"
    );
    assert!(
        origin.shop.stats().by_path.echo > echoes,
        "the shopper who was next entered"
    );
    eprintln!(
        "Redis killed and restarted: admissions resumed {resumed:?} after Redis answered \
         again; a newcomer was numbered {numbering:?} after"
    );
    assert!(
        resumed < Duration::from_millis(1500),
        "admissions resumed {resumed:?} after Redis answered again"
    );
    a.assert_no_panic();
    b.assert_no_panic();
}

/// During the outage: the shopper whose turn came (`next`, holding `ticket`) is told "you're
/// next"; newcomers get the room's waiting answer without a ticket, as JSON and as a page that
/// reloads itself. The room's status code (202) and Retry-After everywhere, never a 5xx.
async fn outage_answers_are_waiting_answers(fa: &Node, next: &reqwest::Client, ticket: u64) {
    // Its status says "next" too, not "admitted" (the page would reload into "you're next"
    // at once, again and again): it is asked again at the room's cadence.
    let st = fa.status(next, "drop").await;
    assert_eq!(st["admitted"], false, "{st}");
    assert_eq!(
        (st["ticket"].as_u64(), st["position"].as_u64()),
        (Some(ticket), Some(1))
    );
    for _ in 0..3 {
        let r = get(fa, next, "/echo").await;
        let code = r.status().as_u16();
        let retry = r.headers().get("retry-after").cloned();
        let st: Value = r.json().await.expect("JSON");
        assert_eq!(code, 202, "you're next, during the outage: {st}");
        assert!(retry.is_some(), "Retry-After");
        assert_eq!(st["ticket"], ticket, "{st}");
        assert_eq!(
            (st["position"].as_u64(), st["ahead"].as_u64()),
            (Some(1), Some(0))
        );
    }
    let r = get(fa, &fa.shopper(), "/echo").await;
    assert_eq!(r.status().as_u16(), 202);
    assert!(r.headers().get("retry-after").is_some());
    let st: Value = r.json().await.expect("JSON");
    assert!(st["ticket"].is_null() && st["method"].is_null(), "{st}");
    assert_eq!(st["room"], "drop");
    let page = shopper::send(
        fa.shopper()
            .get(fa.url("/echo"))
            .header("accept", "text/html"),
    )
    .await;
    assert_eq!(page.status, 202);
    let retry = page.header("retry-after").expect("Retry-After");
    let body = &page.body;
    assert!(
        body.contains(&format!("http-equiv=\"refresh\" content=\"{retry}\"")),
        "the page reloads itself after Retry-After: {body}"
    );
}
