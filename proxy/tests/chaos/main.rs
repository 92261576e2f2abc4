//! Chaos: a sale keeps going while its parts fail. Real `flashgate` processes, a real
//! `redis-server` and a real origin on loopback; each scenario runs a small crowd through a
//! fault and asserts, throughout:
//!
//! - no admitted shopper loses access (their pass keeps working, on every node);
//! - no waiting shopper's position moves back, and nobody's ticket changes;
//! - admissions stay within the room's rate (plus the documented excess, where there is one);
//! - every answer is clean: the waiting page, the shop, or a branded 5xx with `Retry-After`;
//! - no node panics (its stderr is captured and scanned).
//!
//! What `proxy/tests/fleet.rs` already covers is not repeated here (Redis killed and restarted
//! empty with two nodes, the floor rate, a node dying for good). Results and the guarantees
//! they back are in `docs/reliability.md`.

mod origin;
mod reload;
mod restart;
mod skew;
mod store;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use testkit::shopper::{self, get_json, Base};
use testkit::RedisServer;
use testkit::{free_port, Bot, Config, Launch, Node, Origin, Room};

// ---------------------------------------------------------------------------------------------
// Harness: the scenario's own vocabulary over the test kit.

/// A fleet node on the Redis at `url` running `rooms`, with `env`.
async fn on_redis(origin: SocketAddr, url: &str, rooms: &[Room], env: &[(&str, &str)]) -> Node {
    let how = env
        .iter()
        .fold(Launch::default(), |how, (k, v)| how.env(k, v));
    let cfg = rooms
        .iter()
        .cloned()
        .fold(Config::new(origin).redis(url), Config::room);
    Node::launch(&cfg, how).await
}

/// GET `path` through the gate as a JSON client.
async fn get(fg: &(impl Base + ?Sized), c: &reqwest::Client, path: &str) -> reqwest::Response {
    c.get(format!("{}{path}", fg.base()))
        .header("accept", "application/json")
        .send()
        .await
        .expect("request")
}

/// Joins the line at `/echo` (the room must be holding it); returns the ticket number.
async fn join(fg: &(impl Base + ?Sized), c: &reqwest::Client) -> u64 {
    shopper::join(c, &format!("{}/echo", fg.base()), &[]).await
}

/// `(status, whether the origin answered)` for `/echo`.
async fn enter(fg: &(impl Base + ?Sized), c: &reqwest::Client) -> (u16, bool) {
    shopper::enter(c, &format!("{}/echo", fg.base()), &[]).await
}

/// A waiting shopper's history: the ticket must never change and the position never grow.
#[derive(Debug, Clone)]
struct Watch {
    ticket: u64,
    last: u64,
}

impl Watch {
    fn new(ticket: u64) -> Self {
        Self {
            ticket,
            last: u64::MAX,
        }
    }

    /// Checks one status answer. "Your turn" is position 0 or 1 (1 while this minute's entries
    /// are used up): both count as the front.
    fn observe(&mut self, st: &Value, what: &str) {
        if st["admitted"] == true {
            self.last = 1;
            return;
        }
        assert_eq!(
            st["ticket"].as_u64(),
            Some(self.ticket),
            "{what}: ticket {} lost or changed: {st}",
            self.ticket
        );
        if let Some(p) = st["position"].as_u64() {
            let p = p.max(1);
            assert!(
                p <= self.last,
                "{what}: ticket {} moved back from {} to {p}: {st}",
                self.ticket,
                self.last
            );
            self.last = p;
        }
    }
}

/// Entries must not outrun the rate: at most `per_sec` a second over their span, plus the
/// idle room's one-slice lead and two slices of carried credit (as in `fleet.rs`), plus
/// `excess` (a documented extra, e.g. the re-seed bound).
fn assert_within_rate(entries: &[(u64, Duration)], per_sec: f64, excess: f64, what: &str) {
    let span = entries.iter().map(|e| e.1).max().unwrap_or_default();
    let first = entries.iter().map(|e| e.1).min().unwrap_or_default();
    let span = span.saturating_sub(first);
    let allowed = per_sec * span.as_secs_f64() + 3.0 * per_sec + 1.0 + excess;
    eprintln!(
        "{what}: {} entries in {span:?} (allowed {allowed:.1})",
        entries.len()
    );
    assert!(
        entries.len() as f64 <= allowed,
        "{what}: {} entries in {span:?}, more than the rate allows ({allowed:.1})",
        entries.len()
    );
}

/// The sale every scenario runs: 240 new shoppers a minute (4 a second), polled every second.
fn sale() -> Room {
    Room::new("drop")
        .rate(240)
        .capacity(1000)
        .poll("1s")
        .windows("60s", "10s")
}

/// A Redis, the origin, and two nodes of a fleet on them running [`sale`].
async fn fleet_of_two() -> (RedisServer, Origin, Node, Node) {
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    let [a, b] = Node::fleet(&Config::new(origin.addr).redis(redis.url()).room(sale())).await;
    (redis, origin, a, b)
}

/// A pass holder on `a` (who entered with the first slot), then the line held on both nodes.
async fn holder_then_pause(a: &Node, b: &Node) -> reqwest::Client {
    let holder = a.shopper();
    a.wait_room("drop", "the first slot", |r| {
        r["serving"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(enter(a, &holder).await, (200, true));
    pause(a, b).await;
    holder
}

/// `n` shoppers join the held line, the `i`th on `a` when `on_a(i)`, else on `b`; each is
/// watched from its first status. The node index in each entry is 0 for `a`, 1 for `b`.
async fn held_line(
    a: &Node,
    b: &Node,
    n: usize,
    on_a: impl Fn(usize) -> bool,
) -> Vec<(usize, reqwest::Client, Watch)> {
    let mut line = Vec::new();
    for i in 0..n {
        let fg = if on_a(i) { a } else { b };
        let c = fg.shopper();
        let mut w = Watch::new(join(fg, &c).await);
        w.observe(&fg.status(&c, "drop").await, "joined");
        line.push((usize::from(!on_a(i)), c, w));
    }
    line
}

/// Opens the line (on `b`) and waits for every waiter of `line` to enter at its own node:
/// (who entered, the entries' tickets and times).
async fn release_line(
    a: &Node,
    b: &Node,
    line: Vec<(usize, reqwest::Client, Watch)>,
) -> (Vec<(usize, reqwest::Client)>, Vec<(u64, Duration)>) {
    let nodes: Vec<String> = vec![a.base.clone(), b.base.clone()];
    let entries: Arc<Mutex<Vec<(u64, Duration)>>> = Arc::default();
    let started = Instant::now();
    b.patch_room("drop", json!({"paused": false})).await;
    let admitted = run_line(
        nodes,
        line,
        started,
        entries.clone(),
        Duration::from_secs(30),
    )
    .await;
    let entries = entries.lock().clone();
    (admitted, entries)
}

/// Holds the line on `a` and waits until `b` sees it.
async fn pause(a: &Node, b: &Node) {
    a.patch_room("drop", json!({"paused": true})).await;
    let within = Duration::from_secs(5);
    b.wait_status(&b.shopper(), "drop", within, |st| st["state"] == "paused")
        .await;
}

/// A pass holder who keeps shopping on every node in `nodes` until `stop`; returns how many
/// requests were served. Any answer but the origin's is a lost session.
fn keep_shopping(
    nodes: Vec<String>,
    c: reqwest::Client,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            for fg in &nodes {
                assert_eq!(
                    enter(fg, &c).await,
                    (200, true),
                    "a pass holder lost access"
                );
                n += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n
    })
}

/// Waits for every waiter (node index, client, watch) to be admitted, polling its own node and
/// entering when told; records (ticket, time) of each entry.
async fn run_line(
    nodes: Vec<String>,
    line: Vec<(usize, reqwest::Client, Watch)>,
    started: Instant,
    entries: Arc<Mutex<Vec<(u64, Duration)>>>,
    within: Duration,
) -> Vec<(usize, reqwest::Client)> {
    let mut tasks = Vec::new();
    for (n, c, mut w) in line {
        let nodes = nodes.clone();
        let entries = entries.clone();
        tasks.push(tokio::spawn(async move {
            let fg = &nodes[n];
            let deadline = Instant::now() + within;
            loop {
                let st = shopper::status(fg, &c, "drop").await;
                w.observe(&st, "waiting");
                if st["admitted"] == true {
                    let (code, ok) = enter(fg, &c).await;
                    if ok {
                        entries.lock().push((w.ticket, started.elapsed()));
                        return (n, c);
                    }
                    assert!(code < 500 || code == 503, "entering: {code}");
                }
                assert!(
                    Instant::now() < deadline,
                    "ticket {} never admitted: {st}",
                    w.ticket
                );
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.expect("waiter"));
    }
    done
}
