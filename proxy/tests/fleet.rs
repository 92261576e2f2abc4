//! A fleet: two `flashgate` processes sharing one real `redis-server` (started by the test on a
//! free port), in front of a real origin. One queue, one order and one rate whichever node a
//! shopper hits; operator changes reach every node; a Redis outage and a Redis restart that
//! lost everything cost pass holders nothing and move nobody backwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;
use testkit::RedisServer;
use testkit::{shopper, Bot, Config, Node, Origin, Room};

/// Joins the line at `fg` (the room must be queueing); rooms here are told apart by host.
async fn join(fg: &Node, c: &reqwest::Client, host: &str) -> u64 {
    shopper::join(c, &fg.url("/echo"), &[("host", host)]).await
}

/// (status, whether the origin answered) for `/echo` at `fg` with `Host: host`.
async fn enter(fg: &Node, c: &reqwest::Client, host: &str) -> (u16, bool) {
    shopper::enter(c, &fg.url("/echo"), &[("host", host)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_one_queue_one_order_one_rate() {
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    // One sale: 240 new shoppers a minute (4 a second), polled every second.
    let sale = Room::new("drop").rate(240).capacity(1000).poll("1s");
    let cfg = Config::new(origin.addr).redis(redis.url());
    let [a, b] = Node::fleet(&cfg.room(sale.windows("60s", "10s")))
        .await
        .map(Arc::new);

    // A live change on node A is what shoppers on node B see within a second.
    let watcher = b.shopper();
    a.patch_room("drop", json!({"paused": true})).await;
    let changed = Instant::now();
    b.wait_status(&watcher, "drop", Duration::from_secs(1), |st| {
        st["state"] == "paused"
    })
    .await;
    eprintln!(
        "pause on node A seen on node B after {:?}",
        changed.elapsed()
    );

    // Shoppers arrive at both nodes: one ticket counter.
    const N: u64 = 24;
    let mut joins = Vec::new();
    for i in 0..N {
        let fg = [&a, &b][(i % 2) as usize].clone();
        joins.push(tokio::spawn(async move {
            let c = fg.shopper();
            let t = join(&fg, &c, "shop.test").await;
            (fg, c, t)
        }));
    }
    let mut shoppers = Vec::new();
    for j in joins {
        shoppers.push(j.await.expect("join"));
    }
    let mut tickets: Vec<u64> = shoppers.iter().map(|(_, _, t)| *t).collect();
    tickets.sort_unstable();
    assert_eq!(
        tickets,
        (1..=N).collect::<Vec<_>>(),
        "unique, from one counter"
    );

    // Open on node B; everyone polls their own node and enters when admitted.
    let entries: Arc<Mutex<Vec<(u64, Duration)>>> = Arc::default();
    let started = Instant::now();
    b.patch_room("drop", json!({"paused": false})).await;
    let mut tasks = Vec::new();
    for (fg, c, ticket) in shoppers {
        let entries = entries.clone();
        tasks.push(tokio::spawn(async move {
            let deadline = started + Duration::from_secs(40);
            loop {
                let st = fg.status(&c, "drop").await;
                let serving = st["serving"].as_u64().expect("serving");
                if st["admitted"] == true {
                    assert!(ticket <= serving, "admitted past serving: {st}");
                    if enter(&fg, &c, "shop.test").await.1 {
                        entries.lock().push((ticket, started.elapsed()));
                        return (fg, c);
                    }
                } else if st["state"] == "queueing" {
                    assert!(
                        ticket > serving,
                        "ticket {ticket} waits behind serving: {st}"
                    );
                }
                assert!(Instant::now() < deadline, "ticket {ticket} never admitted");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    let mut admitted = Vec::new();
    for t in tasks {
        admitted.push(t.await.expect("shopper"));
    }
    let entries = entries.lock().clone();
    assert_eq!(entries.len() as u64, N);

    // One order: nobody enters well before a lower ticket (polls are 100 ms apart, a node's
    // view up to 50 ms old, so allow a few hundred ms).
    shopper::assert_entered_in_order(&entries, Duration::from_millis(600));
    // One rate: 240 a minute is 4 a second fleet-wide, plus what was open before the pause
    // (the idle room's one-slice lead: 4) and at most two slices of credit (8).
    let span = entries.iter().map(|e| e.1).max().expect("entries");
    let allowed = 4.0 * span.as_secs_f64() + 4.0 + 8.0 + 1.0;
    assert!(
        (N as f64) <= allowed,
        "{N} entries in {span:?}: faster than the rate"
    );
    assert!(
        span >= Duration::from_secs(2),
        "{N} entries in {span:?}: too fast"
    );
    let report = a.room("drop").await;
    assert_eq!(report["entered_total"], N, "{report}");
    assert_eq!(
        origin.shop.stats().requests,
        N,
        "the origin saw exactly the admitted"
    );

    polls_cost_redis_nothing(&redis, &a, &b).await;

    // A node dies: its shoppers carry on at the other node with the same cookies.
    let (fg_a_shopper, c) = admitted
        .into_iter()
        .find(|(fg, _)| Arc::ptr_eq(fg, &a))
        .expect("someone entered at node A");
    drop(fg_a_shopper);
    let Ok(a) = Arc::try_unwrap(a) else {
        panic!("node A still shared")
    };
    drop(a);
    assert_eq!(enter(&b, &c, "shop.test").await, (200, true));
}

/// Two rooms told apart by host: `q` queues while the store is down, `f` admits 6 a minute
/// per node.
fn two_rooms(cfg: Config) -> Config {
    let q = Room::new("q").hosts(&["q.test"]).rate(600).capacity(1000);
    let f = Room::new("f").hosts(&["f.test"]).rate(600).capacity(1000);
    cfg.room(q.poll("1s").windows("60s", "10s"))
        .room(f.floor_rate(6))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_then_restart_empty() {
    let mut redis = RedisServer::start();
    let origin = Origin::start().await;
    let [a, b] = Node::fleet(&two_rooms(Config::new(origin.addr).redis(redis.url()))).await;

    // A pass holder, then a held line of six spread over both nodes.
    let holder = a.shopper();
    assert_eq!(enter(&a, &holder, "q.test").await, (200, true));
    a.patch_room("q", json!({"paused": true})).await;
    let within = Duration::from_secs(5);
    b.wait_status(&b.shopper(), "q", within, |st| st["state"] == "paused")
        .await;
    let mut line = Vec::new();
    for i in 0..6 {
        let fg = if i % 2 == 0 { &a } else { &b };
        let c = fg.shopper();
        let t = join(fg, &c, "q.test").await;
        line.push((i % 2, c, t));
    }
    let before = a.room("q").await;
    let issued_before = before["tickets_issued"].as_u64().expect("issued");
    let serving_before = before["serving"].as_u64().expect("serving");
    let node = |i: usize| if i == 0 { &a } else { &b };
    let mut positions = Vec::new();
    for (n, c, _) in &line {
        positions.push(node(*n).status(c, "q").await["position"].as_u64());
    }

    // Redis dies mid-sale.
    redis.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.readyz().await != 503 || b.readyz().await != 503 {
        assert!(Instant::now() < deadline, "readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Pass holders keep shopping, on either node.
    assert_eq!(enter(&a, &holder, "q.test").await, (200, true));
    assert_eq!(enter(&b, &holder, "q.test").await, (200, true));
    // Waiting shoppers keep their place (answered from the nodes' views).
    for ((n, c, _), p) in line.iter().zip(&positions) {
        assert_eq!(&node(*n).status(c, "q").await["position"].as_u64(), p);
    }
    // `queue`: a new arrival is asked to wait: the room's waiting answer without a ticket
    // (its status code, never a 5xx) and Retry-After.
    let r = shopper::get(
        &a.shopper(),
        &a.url("/echo"),
        &[("host", "q.test"), ("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("retry-after").is_some());
    let st = r.json();
    assert!(st["ticket"].is_null() && st["method"].is_null(), "{st}");
    // `admit_at_floor_rate`: each node lets one in (6 a minute, no burst), then waits.
    for fg in [&a, &b] {
        assert_eq!(enter(fg, &fg.shopper(), "f.test").await, (200, true));
        let (code, entered) = enter(fg, &fg.shopper(), "f.test").await;
        assert_eq!((code, entered), (200, false));
    }
    let m = a.metrics().await;
    assert_eq!(m.value("flashgate_store_degraded"), 1.0, "{m}");
    assert_eq!(m.value("flashgate_floor_admissions_total{room=\"f\"}"), 1.0);
    assert!(m.value("flashgate_store_mode_changes_total{mode=\"open\"}") >= 1.0);

    // Redis comes back empty: the nodes re-seed it from their high-water marks.
    redis.restart_empty();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut serving_seen = serving_before;
    while a.readyz().await != 200 || b.readyz().await != 200 {
        assert!(Instant::now() < deadline, "readyz never came back");
        let s = a.room("q").await["serving"].as_u64().expect("serving");
        assert!(
            s >= serving_seen,
            "serving went back from {serving_seen} to {s}"
        );
        serving_seen = s;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = a.room("q").await;
    assert!(after["serving"].as_u64() >= Some(serving_before), "{after}");
    assert!(
        after["tickets_issued"].as_u64() >= Some(issued_before),
        "{after}"
    );
    assert_eq!(
        after["paused"], true,
        "the pause survived the Redis restart"
    );
    let reseeds_of = "flashgate_store_reseeds_total{room=\"q\"}";
    let reseeds = a.metric(reseeds_of).await + b.metric(reseeds_of).await;
    assert!(reseeds >= 1.0, "nobody re-seeded");
    for ((n, c, _), p) in line.iter().zip(&positions) {
        let now = node(*n).status(c, "q").await["position"].as_u64();
        assert!(now <= *p, "position went back from {p:?} to {now:?}");
    }
    // New arrivals get numbers nobody holds.
    let newcomer = b.shopper();
    let t = join(&b, &newcomer, "q.test").await;
    assert!(
        t > issued_before,
        "ticket {t} reused (issued before: {issued_before})"
    );
    // The line moves on, in order: the first of the line enters first.
    b.patch_room("q", json!({"paused": false})).await;
    let first = line.iter().min_by_key(|(_, _, t)| *t).expect("line");
    let deadline = Instant::now() + Duration::from_secs(20);
    while node(first.0).status(&first.1, "q").await["admitted"] != true {
        assert!(Instant::now() < deadline, "the line never moved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(enter(node(first.0), &first.1, "q.test").await, (200, true));
    assert_eq!(enter(&a, &holder, "q.test").await, (200, true));
}

/// Redis calls per status poll: polls are answered from each node's view, so a poll storm
/// costs Redis what the same time without polls costs (the background refresh).
async fn polls_cost_redis_nothing(redis: &RedisServer, a: &Arc<Node>, b: &Arc<Node>) {
    let quiet = Instant::now();
    let before = redis.client_calls();
    tokio::time::sleep(Duration::from_secs(1)).await; // a measurement period, not a wait
    let idle = redis.client_calls() - before;
    let idle_rate = idle as f64 / quiet.elapsed().as_secs_f64();
    let before = redis.client_calls();
    let storm = Instant::now();
    let polls: u32 = 2000;
    let mut pollers = Vec::new();
    for p in 0..4u32 {
        let fg = if p % 2 == 0 { a.clone() } else { b.clone() };
        pollers.push(tokio::spawn(async move {
            let c = fg.shopper();
            for _ in 0..polls / 4 {
                fg.status(&c, "drop").await;
            }
        }));
    }
    for p in pollers {
        p.await.expect("poller");
    }
    let took = storm.elapsed().as_secs_f64();
    let calls = redis.client_calls() - before;
    eprintln!(
        "poll storm: {polls} polls over 2 nodes in {took:.2}s ({:.0}/s): {calls} Redis calls \
         ({:.4} per poll); the same time without polls: {:.0} calls (background refresh, \
         snapshot_interval 50ms)",
        f64::from(polls) / took,
        calls as f64 / f64::from(polls),
        idle_rate * took,
    );
    assert!(
        calls as f64 <= idle_rate * took * 1.5 + 10.0,
        "{calls} calls during the storm: polls reach Redis"
    );
}

/// A fleet on a Redis that speaks only TLS to it, wants a client certificate
/// (`tls-auth-clients yes`) and an ACL user with docs/redis.md's rules: `rediss://` and
/// `[store.tls]` (CA, certificate, key) give the store, the event stream (sharing the store's
/// Redis) and bot defence one TLS connection each. A shopper joins at one node and enters at
/// the other; a pause reaches both; the events arrive; nothing was refused by the ACL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_on_a_tls_redis_with_client_certificates() {
    let pki = testkit::TestPki::new(true);
    let redis = RedisServer::start_tls(pki.server.clone());
    // An ACL user with no more than docs/redis.md's rules.
    redis.acl_user("flashgate", "fg-secret", testkit::FLASHGATE_ACL);
    let origin = Origin::start().await;
    let d = pki.dir.display();
    let url = redis
        .tls_url()
        .replace("rediss://", "rediss://flashgate:fg-secret@");
    let store = format!(
        "kind = \"redis\"\nurl = \"{url}\"\nsnapshot_interval = \"50ms\"\n\
         [store.tls]\nca_file = \"{d}/ca.pem\"\ncert_file = \"{d}/client.pem\"\n\
         key_file = \"{d}/client.key\""
    );
    let events = testkit::config::Table::new()
        .set("sink", "redis")
        .set("stream", "flashgate:tls-events")
        .set("batch", 1);
    let room = Room::new("drop").poll("1s").bot(Bot::shadow());
    let cfg = Config::new(origin.addr)
        .store(store)
        .table("events", events)
        .room(room);
    let [a, b] = Node::fleet(&cfg).await;
    a.patch_room("drop", json!({"paused": true})).await;
    let c = a.shopper();
    let ticket = join(&a, &c, "shop.test").await;
    b.wait_status(&c, "drop", Duration::from_secs(5), |st| {
        st["ticket"] == ticket && st["state"] == "paused"
    })
    .await;
    b.patch_room("drop", json!({"paused": false})).await;
    b.wait_status(&c, "drop", Duration::from_secs(10), |st| {
        st["admitted"] == true
    })
    .await;
    assert_eq!(enter(&b, &c, "shop.test").await, (200, true));
    // All of it went over TLS (the plain port is the kit's own): scripts ran, events arrived.
    assert!(redis.calls("evalsha") + redis.calls("eval") > 0);
    testkit::wait_for("the events", Duration::from_secs(10), || async {
        redis
            .cmd::<u64>(redis::cmd("XLEN").arg("flashgate:tls-events"))
            .is_ok_and(|n| n >= 2)
    })
    .await;
    // Bot defence's fleet-wide join limit, on its own connection.
    let keys: Vec<String> = redis.cmd(redis::cmd("KEYS").arg("*")).expect("KEYS");
    assert!(
        keys.iter().any(|k| k.starts_with("{fg:drop}:jl:")),
        "{keys:?}"
    );
    let acl: Vec<redis::Value> = redis.cmd(redis::cmd("ACL").arg("LOG")).expect("ACL LOG");
    assert!(acl.is_empty(), "the ACL refused something: {acl:?}");
    a.assert_no_panic();
    b.assert_no_panic();
}
