//! Operations across a fleet: two `flashgate` processes on one real `redis-server`, in front of
//! the demo shop. An operator's rate change on one node is what the other node reports and
//! tells its waiting shoppers (ETA) within the propagation bound, and a sold-out declared by
//! the origin (`X-Flashgate-Command: sold-out` on the checkout that took the last unit) reaches
//! shoppers waiting on the other node: their next poll and their event stream say `sold_out`,
//! new arrivals get the sold-out page (410), and the line stops moving.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::shopper::{get, get_json, send, Events};
use testkit::{Config, Node, Origin, RedisServer, Room};

/// How soon a change made through one node must be visible on the other. Nodes refresh their
/// view every `snapshot_interval` (50 ms in these tests); the bound leaves room for a loaded
/// CI machine.
const PROPAGATION: Duration = Duration::from_secs(2);

/// Two nodes on one Redis, with one room over `/echo` and `/checkout` at `rate` a minute.
async fn fleet(origin: &Origin, redis: &RedisServer, rate: u32) -> [Node; 2] {
    let drop = Room::new("drop").paths(&["/echo", "/checkout"]).rate(rate);
    let drop = drop.capacity(1000).poll("1s").windows("60s", "10s");
    Node::fleet(&Config::new(origin.addr).redis(redis.url()).room(drop)).await
}

/// Joins the (paused) line at `fg`; returns the shopper and the ticket number.
async fn join(fg: &Node) -> (reqwest::Client, u64) {
    let c = fg.shopper();
    let (code, st, _) = get_json(&c, &format!("{}/echo", fg.base)).await;
    assert_eq!(code, 200, "queued: {st}");
    let t = st["ticket"]
        .as_u64()
        .unwrap_or_else(|| panic!("a ticket: {st}"));
    (c, t)
}

/// `n` shoppers join the (paused) line at `fg`; returns the last one and its ticket.
async fn join_many(fg: &Node, n: usize) -> (reqwest::Client, u64) {
    let mut last = None;
    for _ in 0..n {
        last = Some(join(fg).await);
    }
    last.expect("n > 0")
}

/// Polls `f` every 10 ms until it returns `Some`, failing after `limit`; also returns how long
/// that took.
async fn within<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return (v, started.elapsed());
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The ETA the gate shows at `per_minute` with `ahead` people in front, before any admission
/// history exists (the first minute): (ahead + 1) / rate.
fn fallback_eta(ahead: u64, per_minute: u64) -> u64 {
    (ahead + 1) * 60 / per_minute
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_change_on_one_node_reaches_the_other_within_the_bound() {
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    let [a, b] = fleet(&origin, &redis, 6).await;

    // A line of 20 on node B, moving at 6 a minute.
    a.patch_room("drop", json!({"paused": true})).await;
    let (shopper, ticket) = join_many(&b, 20).await;
    assert_eq!(ticket, 20);
    a.patch_room("drop", json!({"paused": false})).await;
    let (before, _) = within(PROPAGATION, "B queueing", || async {
        let st = b.status(&shopper, "drop").await;
        (st["state"] == "queueing" && st["eta_seconds"].is_u64()).then_some(st)
    })
    .await;
    let ahead = before["ahead"].as_u64().expect("ahead");
    assert!(ahead >= 10, "the line is long: {before}");
    let eta = before["eta_seconds"].as_u64().expect("eta");
    assert!(
        eta.abs_diff(fallback_eta(ahead, 6)) <= 1,
        "ETA at 6 a minute: {before}"
    );
    assert_eq!(b.room("drop").await["new_users_per_minute"], 6);

    // The operator raises the rate on node A: node B's shoppers see the shorter wait.
    let report = a
        .patch_room("drop", json!({"new_users_per_minute": 30}))
        .await;
    assert_eq!(report["new_users_per_minute"], 30, "A at once: {report}");
    let (after, took) = within(PROPAGATION, "B's ETA at the new rate", || async {
        let st = b.status(&shopper, "drop").await;
        let ahead = st["ahead"].as_u64()?;
        let eta = st["eta_seconds"].as_u64()?;
        (eta.abs_diff(fallback_eta(ahead, 30)) <= 1).then_some(st)
    })
    .await;
    eprintln!("rate change on node A seen in node B's status after {took:?}: {after}");
    assert_eq!(after["state"], "queueing");
    assert!(
        after["eta_seconds"].as_u64() < Some(eta / 3),
        "{before} -> {after}"
    );
    // B's operator report says the same (read after the status: its refresh must not help).
    let (report, took) = within(PROPAGATION, "B's report at the new rate", || async {
        let r = b.room("drop").await;
        (r["new_users_per_minute"] == 30).then_some(r)
    })
    .await;
    assert!(took < PROPAGATION, "{report}");
    let back = report["eta_back_of_line_seconds"].as_u64().expect("ETA");
    let waiting = report["waiting"].as_u64().expect("waiting");
    assert!(
        back.abs_diff(fallback_eta(waiting, 30)) <= 1,
        "the report's ETA at the back of the line is at the new rate: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sold_out_from_the_origin_reaches_a_shopper_waiting_on_another_node() {
    const SKU: &str = "AURORA-LIP-KIT";
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    let [a, b] = fleet(&origin, &redis, 60).await;

    // The buyer is first in line at node A; twenty more wait at node B.
    a.patch_room("drop", json!({"paused": true})).await;
    let (buyer, t) = join(&a).await;
    assert_eq!(t, 1);
    let (waiter, t) = join_many(&b, 20).await;
    assert_eq!(t, 21);
    a.patch_room("drop", json!({"paused": false})).await;
    within(Duration::from_secs(20), "the buyer's turn", || async {
        (a.status(&buyer, "drop").await["admitted"] == true).then_some(())
    })
    .await;
    let (code, echo, _) = get_json(&buyer, &format!("{}/echo", a.base)).await;
    assert_eq!(
        (code, &echo["method"]),
        (200, &json!("GET")),
        "the buyer is in"
    );

    // The line moves (1 a second), and the waiter at B watches it over server-sent events.
    let serving = a.room("drop").await["serving"].as_u64().expect("serving");
    within(Duration::from_secs(10), "the line moving", || async {
        (b.room("drop").await["serving"].as_u64() > Some(serving)).then_some(())
    })
    .await;
    let mut sse = Events::open(&waiter, &b.url("/.flashgate/events?room=drop")).await;
    let first = sse.next(Duration::from_secs(5)).await;
    assert_eq!(
        (&first["state"], &first["ticket"]),
        (&json!("queueing"), &json!(21))
    );

    // Other shoppers bought all but the last 10 units directly; the buyer takes those through
    // node A, and the shop answers with `X-Flashgate-Command: sold-out`.
    let direct = reqwest::Client::new();
    while origin.shop.stock(SKU) > Some(10) {
        let checkout = direct.post(format!("http://{}/checkout", origin.addr));
        let r = send(checkout.form(&[("sku", SKU), ("qty", "10")])).await;
        assert_eq!(r.status, 201);
    }
    assert_eq!(origin.shop.stock(SKU), Some(10));
    let checkout = buyer
        .post(a.url("/checkout"))
        .header("accept", "application/json");
    let r = send(checkout.form(&[("sku", SKU), ("qty", "10")])).await;
    assert_eq!(r.status, 201);
    assert!(
        r.header("x-flashgate-command").is_none(),
        "the command is for Flashgate, not the shopper"
    );
    let order = r.json();
    assert_eq!(order["sold_out"], json!([SKU]), "{order}");
    let declared = Instant::now();

    // The waiter at node B: the next poll says sold out, and so does the open stream, which
    // then ends.
    let (st, took) = within(PROPAGATION, "sold out in B's status", || async {
        let st = b.status(&waiter, "drop").await;
        (st["state"] == "sold_out").then_some(st)
    })
    .await;
    eprintln!("sold-out from the origin at node A seen by a shopper at node B after {took:?}");
    assert_eq!(st["admitted"], false, "{st}");
    let pushed = sse
        .next_where(Duration::from_secs(5), |st| st["state"] != "queueing")
        .await;
    assert_eq!(pushed["state"], "sold_out", "{pushed}");
    assert!(
        declared.elapsed() < PROPAGATION + Duration::from_secs(1),
        "pushed {:?} after the checkout (checked each second)",
        declared.elapsed()
    );
    let end = sse.end(Duration::from_secs(5)).await;
    assert!(end.is_none(), "nothing after sold out: {end:?}");

    // The waiter cannot enter, and new arrivals at either node get the sold-out page.
    let (code, st, _) = get_json(&waiter, &format!("{}/echo", b.base)).await;
    assert_eq!((code, &st["state"]), (410, &json!("sold_out")));
    for fg in [&a, &b] {
        let (code, st, _) = get_json(&fg.shopper(), &format!("{}/echo", fg.base)).await;
        assert_eq!((code, &st["state"]), (410, &json!("sold_out")), "{st}");
        let r = get(&fg.shopper(), &fg.url("/echo"), &[]).await;
        assert_eq!(r.status, 410);
        assert!(r.body.contains("Sold out"));
    }

    // Both operators see it, and the line has stopped: the serving number no longer moves
    // although the rate (1 a second) would have moved it twice in this time.
    let stopped = a.room("drop").await;
    assert_eq!(
        (&stopped["sold_out"], &stopped["state"]),
        (&json!(true), &json!("sold_out"))
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // a measurement period, not a wait
    for fg in [&a, &b] {
        let r = fg.room("drop").await;
        assert_eq!(r["state"], "sold_out");
        assert_eq!(r["serving"], stopped["serving"], "{r}");
        assert_eq!(r["admitted_total"], stopped["admitted_total"], "{r}");
    }
    let st = b.status(&waiter, "drop").await;
    assert_eq!(st["state"], "sold_out");
}
