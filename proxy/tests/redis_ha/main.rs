//! Redis as production runs it: a six-node Cluster and a Sentinel-managed master, each failed
//! over mid-sale under a crowd of shoppers arriving, waiting and entering over two Flashgate
//! nodes (real `redis-server`s and sentinels, started by the tests on free ports).
//!
//! Checked throughout, by the crowd itself: no ticket number is held by two shoppers, no node's
//! serving number goes back, no waiting shopper's position goes back, entries keep to the
//! rooms' rate (plus the documented re-seed bound), nobody gets a 5xx, and admissions resume
//! within a few seconds of each failover (the figures are printed). Guarantees and figures:
//! `docs/redis.md`.

mod cluster;
mod sentinel;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;
use testkit::shopper::{self, Base};
use testkit::{Config, Node, Origin, Room};

/// New shoppers per minute in each room (5 a second); the crowd arrives a little faster
/// ([`ARRIVALS`]), so a line forms and moves at the rate.
pub(crate) const RATE: u64 = 300;
/// New shoppers a second in each room.
const ARRIVALS: u64 = 6;

/// What the crowd saw: entries per room (ticket, when), tickets handed out per room, answers
/// per status code, and shoppers re-queued (room, old ticket, new ticket).
#[derive(Debug, Default)]
struct Seen {
    entries: BTreeMap<String, Vec<(u64, Duration)>>,
    tickets: BTreeMap<String, Vec<u64>>,
    codes: BTreeMap<u16, u64>,
    requeued: Vec<(String, u64, u64)>,
}

struct Crowd {
    nodes: Vec<String>,
    started: Instant,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    /// Whether a shopper may be re-queued (a new, higher ticket) while waiting: only where a
    /// number may have been handed out twice (Sentinel's split brain, `sentinel.rs`).
    requeue: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn host(room: &str) -> String {
    format!("{room}.test")
}

/// GET `/echo` at `base` for `room`, as a JSON client: (status, body).
async fn get(base: &str, c: &reqwest::Client, room: &str) -> (u16, Value) {
    let h = host(room);
    shopper::get_app(c, &format!("{base}/echo"), &[("host", h.as_str())]).await
}

impl Crowd {
    /// Shoppers arriving at `per_sec` a second in each of `rooms`, alternately at each node.
    fn start(nodes: &[&Node], rooms: &[String], per_sec: u64) -> Self {
        let nodes: Vec<String> = nodes.iter().map(|n| n.base().to_owned()).collect();
        let mut crowd = Crowd {
            nodes,
            started: Instant::now(),
            seen: Arc::default(),
            stop: Arc::default(),
            requeue: Arc::default(),
            tasks: Vec::new(),
        };
        for room in rooms {
            let (nodes, seen, stop) = (crowd.nodes.clone(), crowd.seen.clone(), crowd.stop.clone());
            let requeue = crowd.requeue.clone();
            let (room, started) = (room.clone(), crowd.started);
            crowd.tasks.push(tokio::spawn(async move {
                let mut shoppers = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let base = nodes[i % nodes.len()].clone();
                    let (room, seen) = (room.clone(), seen.clone());
                    let requeue = requeue.clone();
                    shoppers.push(tokio::spawn(shop(base, room, seen, started, requeue)));
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(1000 / per_sec)).await;
                }
                for s in shoppers {
                    s.await.expect("shopper");
                }
            }));
        }
        crowd
    }

    /// Entries in `room` after `t` (since the crowd started).
    fn entries_after(&self, room: &str, t: Duration) -> usize {
        let seen = self.seen.lock();
        seen.entries
            .get(room)
            .map_or(0, |e| e.iter().filter(|(_, at)| *at > t).count())
    }

    /// Waits until someone enters `room` after `since`; returns how long after `since`.
    async fn wait_entry(&self, room: &str, since: Instant, within: Duration) -> Duration {
        let t = since.duration_since(self.started);
        loop {
            if self.entries_after(room, t) > 0 {
                let seen = self.seen.lock();
                let first = seen.entries[room]
                    .iter()
                    .map(|(_, at)| *at)
                    .filter(|at| *at > t)
                    .min()
                    .expect("an entry");
                return first - t;
            }
            assert!(
                since.elapsed() < within,
                "{room}: nobody entered for {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Keeps the crowd going for `d` (a measurement period, not a wait for anything).
    async fn run_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Stops the arrivals and waits until everyone who came is in.
    async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("arrivals");
        }
        Arc::try_unwrap(self.seen).expect("crowd done").into_inner()
    }
}

/// One shopper: joins (retrying while the store cannot number anyone), polls, enters when
/// admitted. Asserts no 5xx, an unchanged ticket and a position that never grows.
async fn shop(
    base: String,
    room: String,
    seen: Arc<Mutex<Seen>>,
    started: Instant,
    requeue: Arc<AtomicBool>,
) {
    let c = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(90);
    let note = |code: u16| {
        assert!(code < 500, "{room}: a shopper got {code}");
        *seen.lock().codes.entry(code).or_default() += 1;
    };
    let mut ticket = loop {
        let (code, st) = get(&base, &c, &room).await;
        note(code);
        if let Some(t) = st["ticket"].as_u64() {
            break t;
        }
        if st["method"] == "GET" {
            // Let straight in (no line at that moment): an entry whose number we never saw.
            let at = started.elapsed();
            seen.lock().entries.entry(room).or_default().push((0, at));
            return;
        }
        assert!(Instant::now() < deadline, "{room}: never numbered: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    seen.lock()
        .tickets
        .entry(room.clone())
        .or_default()
        .push(ticket);
    let mut last = u64::MAX;
    loop {
        let st = shopper::status(&base, &c, &room).await;
        if st["admitted"] == true {
            let (code, body) = get(&base, &c, &room).await;
            note(code);
            if body["method"] == "GET" {
                let at = started.elapsed();
                seen.lock()
                    .entries
                    .entry(room)
                    .or_default()
                    .push((ticket, at));
                return;
            }
        } else {
            let now = st["ticket"].as_u64();
            match now {
                Some(t) if t > ticket && requeue.load(Ordering::Relaxed) => {
                    // The store said this number had entered already (someone else held it):
                    // a new place at the back.
                    let mut seen = seen.lock();
                    seen.requeued.push((room.clone(), ticket, t));
                    seen.tickets.entry(room.clone()).or_default().push(t);
                    (ticket, last) = (t, u64::MAX);
                }
                _ => assert_eq!(now, Some(ticket), "{room}: ticket changed: {st}"),
            }
            if let Some(p) = st["position"].as_u64() {
                assert!(
                    p.max(1) <= last,
                    "{room}: ticket {ticket} moved back from {last} to {p}"
                );
                last = p.max(1);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{room}: ticket {ticket} never entered: {st}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls every node's serving number of each room until `stop`, asserting it never goes back.
fn monitor_serving(
    nodes: Vec<String>,
    rooms: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut last: HashMap<(usize, String), u64> = HashMap::new();
        let mut samples = 0;
        let c = reqwest::Client::new();
        while !stop.load(Ordering::Relaxed) {
            for (i, base) in nodes.iter().enumerate() {
                for room in &rooms {
                    let s = shopper::status(base, &c, room).await["serving"]
                        .as_u64()
                        .expect("serving");
                    let prev = last.entry((i, room.clone())).or_default();
                    assert!(
                        s >= *prev,
                        "node {i}, {room}: serving went back from {prev} to {s}"
                    );
                    *prev = s;
                    samples += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        samples
    })
}

fn assert_within_rate(room: &str, entries: &[(u64, Duration)], excess: f64) {
    let first = entries.iter().map(|e| e.1).min().unwrap_or_default();
    let last = entries.iter().map(|e| e.1).max().unwrap_or_default();
    let per_sec = RATE as f64 / 60.0;
    // One slice's lead and two slices of carried credit, as in the fleet tests, plus `excess`.
    let allowed = per_sec * (last - first).as_secs_f64() + 3.0 * per_sec + 1.0 + excess;
    eprintln!(
        "{room}: {} entries in {:?} (allowed {allowed:.0})",
        entries.len(),
        last - first
    );
    assert!(
        entries.len() as f64 <= allowed,
        "{room}: entries outran the rate"
    );
}

/// The longest time without an entry in `room` (between the first and the last).
fn longest_gap(seen: &Seen, room: &str) -> Duration {
    let mut at: Vec<Duration> = seen.entries[room].iter().map(|e| e.1).collect();
    at.sort_unstable();
    at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

/// No ticket number held by two shoppers, except numbers whose extra holders were re-queued
/// (allowed only where the crowd allows re-queues); and no number entered twice.
fn assert_no_ticket_twice(seen: &Seen) {
    for (room, tickets) in &seen.tickets {
        let mut held: BTreeMap<u64, usize> = BTreeMap::new();
        for t in tickets {
            *held.entry(*t).or_default() += 1;
        }
        for (t, n) in held.into_iter().filter(|(_, n)| *n > 1) {
            let requeued = seen
                .requeued
                .iter()
                .filter(|(r, old, _)| r == room && *old == t)
                .count();
            assert!(
                n - 1 <= requeued,
                "{room}: ticket {t} was handed out {n} times, {requeued} holders re-queued"
            );
        }
        let mut entered: Vec<u64> = seen.entries[room]
            .iter()
            .map(|e| e.0)
            .filter(|t| *t > 0)
            .collect();
        let queued = entered.len();
        entered.sort_unstable();
        entered.dedup();
        assert_eq!(entered.len(), queued, "{room}: a ticket entered twice");
    }
}

/// A room at its own host (`<id>.test`), [`RATE`] new shoppers a minute.
fn room(id: &str) -> Room {
    Room::new(id)
        .hosts(&[&host(id)])
        .rate(RATE as u32)
        .capacity(1000)
        .poll("1s")
        // A place is kept for 5 minutes without a poll: a machine too busy to poll for a while
        // (or a test runner paused) must not look like a lost place.
        .windows("5m", "10s")
}

/// Held by each scenario for its whole run: each starts six to nine Redis processes, two nodes
/// and a crowd, and two at once on a 2-core machine starve both.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two nodes of a fleet on the store `store` (a `[store]` body) running `rooms`.
async fn fleet(store: String, rooms: &[String]) -> (Origin, [Node; 2]) {
    let origin = Origin::start().await;
    let cfg = rooms
        .iter()
        .fold(Config::new(origin.addr).store(store), |c, r| {
            c.room(room(r))
        });
    let nodes = Node::fleet(&cfg).await;
    (origin, nodes)
}
