//! The event stream against a real `redis-server` (started by the test on a free port, killed
//! and restarted by it): exact events in order, per-room streams and opt-out, a bounded stream,
//! and a stopped Redis that makes events drop and count while `emit` never waits.
//!
//! These drive [`flashgate::events::Events`] directly; gate-level tests live with the gate.

use std::collections::{BTreeMap, HashSet};
use std::num::{NonZeroU64, NonZeroUsize};
use std::time::{Duration, Instant};

use flashgate::config::{EventSink, EventsConfig, RoomEvents};
use flashgate::events::{
    AbandonReason, Actor, ChallengeFailure, EndReason, Event, EventKind, Events, EventsService,
};
use flashgate::metrics::Metrics;
use pingora::services::background::BackgroundService;
use testkit::RedisServer;
use tokio::sync::watch;
use waitroom::{Overrides, UnixMillis};

fn config(redis: &RedisServer, stream: &str, buffer: usize, batch: usize) -> EventsConfig {
    config_at(&redis.url(), stream, buffer, batch)
}

/// The same for the Redis at `url` (a user, a password, a database in it).
fn config_at(url: &str, stream: &str, buffer: usize, batch: usize) -> EventsConfig {
    EventsConfig {
        sink: EventSink::Redis {
            url: url.into(),
            stream: stream.into(),
            maxlen: NonZeroU64::new(100_000).expect("non-zero"),
            tls: None,
        },
        buffer: NonZeroUsize::new(buffer).expect("non-zero"),
        batch: NonZeroUsize::new(batch).expect("non-zero"),
        node: "test-node".into(),
        rooms: BTreeMap::new(),
        ..EventsConfig::default()
    }
}

/// The service running as Pingora would run it; stopped (and awaited) on drop of the sender.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(svc: EventsService) -> Running {
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { svc.start(rx).await });
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.expect("service ends");
    }
}

/// Starts a service for `cfg` (a Redis sink), emits tickets 1–10 and waits until the sink has
/// counted a failed attempt (`what`).
async fn ten_until_refused(cfg: &EventsConfig, metrics: &Metrics, what: &str) -> Running {
    let (events, svc) = Events::new(cfg, metrics);
    let running = start(svc.expect("service"));
    for t in 1..=10 {
        events.emit(issued("drop", t));
    }
    let errors = metrics.events_sink_errors.with_label_values(&["redis"]);
    until(what, 20, || errors.get() >= 1).await;
    running
}

/// Polls `f` until it holds, up to `secs`.
async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The entries of `stream`: (kind field, room field, parsed `event` JSON).
fn entries(redis: &RedisServer, stream: &str) -> Vec<(String, String, serde_json::Value)> {
    entries_at(&redis.url(), stream)
}

/// The entries of `stream` at `url` (a database other than 0, say).
fn entries_at(url: &str, stream: &str) -> Vec<(String, String, serde_json::Value)> {
    let mut conn = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .expect("connect");
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .expect("XRANGE");
    reply
        .ids
        .iter()
        .map(|e| {
            let kind: String = e.get("kind").expect("kind field");
            let room: String = e.get("room").expect("room field");
            let json: String = e.get("event").expect("event field");
            let v: serde_json::Value = serde_json::from_str(&json).expect("event is JSON");
            (kind, room, v)
        })
        .collect()
}

/// The ticket numbers of `stream`'s entries at `url`, in stream order.
fn tickets_at(url: &str, stream: &str) -> Vec<u64> {
    entries_at(url, stream)
        .iter()
        .map(|(_, _, v)| v["ticket"].as_u64().expect("ticket"))
        .collect()
}

/// No event was dropped, for any reason.
fn assert_none_dropped(metrics: &Metrics) {
    for reason in ["buffer_full", "rejected", "shutdown"] {
        assert_eq!(
            metrics.events_dropped.with_label_values(&[reason]).get(),
            0,
            "dropped: {reason}"
        );
    }
}

fn xlen(redis: &RedisServer, stream: &str) -> u64 {
    redis.cmd(redis::cmd("XLEN").arg(stream)).expect("XLEN")
}

fn issued(room: &str, t: u64) -> Event {
    Event::new(room, EventKind::TicketIssued { serving: 0 }).with_ticket(t)
}

/// A sale in miniature, in the order a gate would emit it: 30 arrivals; 20 enter, of whom 5
/// leave and 1 is revoked; 5 leave the line and 1 comes back too late; the operator pauses;
/// a bot fails a challenge; a shopper rates the wait.
fn sale(room: &str) -> Vec<Event> {
    let now = UnixMillis(1_800_000_060_000);
    let mut v = Vec::new();
    for t in 1..=30 {
        v.push(issued(room, t));
        // Entries interleave with arrivals, as they do in a live room.
        if t > 10 {
            v.push(Event::new(room, EventKind::admitted(1_800_000_000, now)).with_ticket(t - 10));
        }
    }
    for t in 1..=5 {
        let reason = EndReason::Leave;
        v.push(Event::new(room, EventKind::SessionEnded { reason }).with_ticket(t));
    }
    let revoke = EndReason::Revoke;
    v.push(Event::new(room, EventKind::SessionEnded { reason: revoke }).with_ticket(6));
    for t in 21..=25 {
        let reason = AbandonReason::Left;
        v.push(Event::new(room, EventKind::Abandoned { reason }).with_ticket(t));
    }
    let expired = AbandonReason::Expired;
    v.push(Event::new(room, EventKind::Abandoned { reason: expired }).with_ticket(26));
    let paused = Overrides {
        paused: true,
        ..Overrides::default()
    };
    let by = Actor::admin(Some("an-admin-token-0123456789"));
    for k in flashgate::events::room_changes(&Overrides::default(), &paused, &by) {
        v.push(Event::new(room, k));
    }
    let reason = ChallengeFailure::WrongSolution;
    v.push(Event::new(room, EventKind::ChallengeFailed { reason }));
    let fb = flashgate::events::parse_feedback(None, b"rating=5&comment=fair+and+fast")
        .expect("feedback");
    v.push(Event::new(room, fb).with_ticket(1));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_reaches_redis_exactly_and_in_order() {
    let redis = RedisServer::start();
    let metrics = Metrics::new();
    // A small batch: the run takes many round trips.
    let mut cfg = config(&redis, "test:events", 1_000, 8);
    cfg.rooms.insert("quiet".into(), RoomEvents::Off);
    cfg.rooms
        .insert("vip".into(), RoomEvents::Stream("test:vip".into()));
    let (events, svc) = Events::new(&cfg, &metrics);
    let running = start(svc.expect("a service for the redis sink"));

    let want = sale("drop");
    for e in &want {
        events.emit(e.clone());
        // Opted out: never reaches any stream.
        events.emit(issued("quiet", 1));
    }
    events.emit(issued("vip", 7));
    let n = want.len() as u64;
    until("every event in Redis", 20, || {
        xlen(&redis, "test:events") >= n
    })
    .await;
    until("the vip event", 20, || xlen(&redis, "test:vip") >= 1).await;

    let got = entries(&redis, "test:events");
    assert_eq!(got.len(), want.len(), "exactly the events emitted, no more");
    let mut ids = HashSet::new();
    for ((kind, room, v), e) in got.iter().zip(&want) {
        // Same order as emitted, field for field.
        assert_eq!(kind, e.kind.name());
        assert_eq!(room, "drop");
        assert_eq!(v["v"], 1);
        assert_eq!(v["kind"], e.kind.name());
        assert_eq!(v["room"], "drop");
        assert_eq!(v["node"], "test-node");
        assert_eq!(v["ticket"].as_u64(), e.ticket);
        assert!(v["unix_ms"].as_u64().is_some_and(|t| t > 1_700_000_000_000));
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(
            ids.insert(v["id"].as_str().expect("id").to_owned()),
            "ids unique"
        );
    }
    // Per ticket, the life story in order.
    let story = |t: u64| -> Vec<String> {
        got.iter()
            .filter(|(_, _, v)| v["ticket"].as_u64() == Some(t))
            .map(|(k, _, _)| k.clone())
            .collect()
    };
    assert_eq!(
        story(1),
        ["ticket_issued", "admitted", "session_ended", "feedback"]
    );
    assert_eq!(story(6), ["ticket_issued", "admitted", "session_ended"]);
    assert_eq!(story(15), ["ticket_issued", "admitted"]);
    assert_eq!(story(21), ["ticket_issued", "abandoned"]);
    assert_eq!(story(26), ["ticket_issued", "abandoned"]);
    assert_eq!(story(30), ["ticket_issued"]);
    let paused = &got
        .iter()
        .find(|(k, _, _)| k == "room_state_changed")
        .expect("state change")
        .2;
    assert_eq!(
        (&paused["what"], &paused["before"], &paused["after"]),
        (&"paused".into(), &false.into(), &true.into())
    );

    let vip = entries(&redis, "test:vip");
    assert_eq!(vip.len(), 1);
    assert_eq!((vip[0].1.as_str(), &vip[0].2["ticket"]), ("vip", &7.into()));

    let sent: u64 = flashgate::events::EventKind::NAMES
        .iter()
        .map(|k| metrics.events_sent.with_label_values(&[*k]).get())
        .sum();
    assert_eq!(sent, n + 1);
    assert_none_dropped(&metrics);
    // One XADD per event, and far fewer XTRIMs (one per stream per batch); no script.
    assert_eq!(redis.calls("xadd"), n + 1);
    let trims = redis.calls("xtrim");
    assert!((2..n).contains(&trims), "{trims} XTRIMs for {n} events");
    assert_eq!(redis.calls("evalsha") + redis.calls("eval"), 0);
    running.stop().await;
}

/// A Redis user allowed nothing but `XADD` and `XTRIM` on the event keys (and `SELECT`), the
/// stream in database 3: the sink authenticates with the URL's user and password, selects the
/// database, and delivers every event, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_only_xadd_and_xtrim_gets_every_event() {
    let redis = RedisServer::start();
    let _: () = redis
        .cmd(
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg("events")
                .arg("on")
                .arg(">events-secret")
                .arg("resetkeys")
                .arg("~test:*")
                .arg("-@all")
                .arg("+xadd")
                .arg("+xtrim")
                .arg("+select"),
        )
        .expect("ACL SETUSER");
    let metrics = Metrics::new();
    let url = format!("redis://events:events-secret@127.0.0.1:{}/3", redis.port);
    let (events, svc) = Events::new(&config_at(&url, "test:acl", 1_000, 8), &metrics);
    let running = start(svc.expect("service"));
    for t in 1..=40 {
        events.emit(issued("drop", t));
    }
    let sent = metrics.events_sent.with_label_values(&["ticket_issued"]);
    until("all sent", 20, || sent.get() == 40).await;
    let tickets = tickets_at(&format!("{}/3", redis.url()), "test:acl");
    assert_eq!(tickets, (1..=40).collect::<Vec<_>>(), "all, in order, once");
    assert_eq!(xlen(&redis, "test:acl"), 0, "nothing in database 0");
    assert_eq!(redis.calls("xadd"), 40);
    assert_none_dropped(&metrics);
    assert_eq!(
        metrics
            .events_sink_errors
            .with_label_values(&["redis"])
            .get(),
        0,
        "no failed attempt"
    );
    running.stop().await;
}

/// A wrong password is a failed attempt (retried with backoff, counted), not a panic and not a
/// lost event: once the user exists, everything buffered is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_retried_until_it_works() {
    let redis = RedisServer::start();
    let metrics = Metrics::new();
    let url = format!("redis://late:late-secret@127.0.0.1:{}", redis.port);
    let running = ten_until_refused(
        &config_at(&url, "test:login", 1_000, 8),
        &metrics,
        "a refused login",
    )
    .await;
    assert_eq!(xlen(&redis, "test:login"), 0);
    let _: () = redis
        .cmd(
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg("late")
                .arg("on")
                .arg(">late-secret")
                .arg("~*")
                .arg("+@all"),
        )
        .expect("ACL SETUSER");
    let sent = metrics.events_sent.with_label_values(&["ticket_issued"]);
    until("all sent", 20, || sent.get() == 10).await;
    let tickets = tickets_at(&redis.url(), "test:login");
    assert_eq!(tickets, (1..=10).collect::<Vec<_>>());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_stays_bounded() {
    let redis = RedisServer::start();
    let metrics = Metrics::new();
    let mut cfg = config(&redis, "test:bounded", 5_000, 256);
    cfg.sink = EventSink::Redis {
        url: redis.url(),
        stream: "test:bounded".into(),
        maxlen: NonZeroU64::new(100).expect("non-zero"),
        tls: None,
    };
    let (events, svc) = Events::new(&cfg, &metrics);
    let running = start(svc.expect("service"));
    for t in 0..3_000 {
        events.emit(issued("drop", t));
    }
    let sent = metrics.events_sent.with_label_values(&["ticket_issued"]);
    until("all sent", 20, || sent.get() == 3_000).await;
    // `MAXLEN ~` trims whole radix-tree nodes (100 entries each by default): near 100, never
    // the 3000 written.
    let len = xlen(&redis, "test:bounded");
    assert!((100..=300).contains(&len), "XLEN {len}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_drops_and_counts_and_emit_never_waits() {
    let mut redis = RedisServer::start();
    let metrics = Metrics::new();
    let (buffer, batch) = (64, 16);
    let cfg = config(&redis, "test:outage", buffer, batch);
    let (events, svc) = Events::new(&cfg, &metrics);
    let running = start(svc.expect("service"));
    let sent = || {
        metrics
            .events_sent
            .with_label_values(&["ticket_issued"])
            .get()
    };
    let dropped = || {
        metrics
            .events_dropped
            .with_label_values(&["buffer_full"])
            .get()
    };

    for t in 0..10 {
        events.emit(issued("drop", t));
    }
    until("healthy delivery", 20, || sent() == 10).await;

    redis.kill();
    // `emit` is a plain `fn`: it cannot await the dead sink. 1000 calls return with the buffer
    // full, each one dropped and counted.
    let emit: fn(&Events, Event) = Events::emit;
    for t in 1_000..2_000 {
        emit(&events, issued("drop", t));
    }
    let lost = dropped();
    assert!(
        lost >= 1_000 - (buffer + batch) as u64,
        "at most buffer + one batch are kept, {lost} dropped"
    );
    assert_eq!(sent(), 10, "nothing delivered while Redis is down");
    let errors = metrics.events_sink_errors.with_label_values(&["redis"]);
    until("failed attempts counted", 20, || errors.get() >= 1).await;
    // The backlog is visible: everything kept waits for the sink.
    let kept = 1_000 - lost;
    let pending = || metrics.events_pending.get() as u64;
    until("backlog shown", 20, || pending() == kept).await;

    // Redis comes back (empty): what was kept is delivered, exactly once, in order.
    redis.restart_empty();
    until("kept events delivered", 30, || sent() == 10 + kept).await;
    until("backlog cleared", 20, || pending() == 0).await;
    let got = entries(&redis, "test:outage");
    assert_eq!(got.len() as u64, kept);
    let tickets: Vec<u64> = got
        .iter()
        .map(|(_, _, v)| v["ticket"].as_u64().expect("ticket"))
        .collect();
    assert!(tickets.windows(2).all(|w| w[0] < w[1]), "{tickets:?}");
    assert_eq!(
        tickets.first(),
        Some(&1_000),
        "the oldest are kept, the newest dropped"
    );
    assert_eq!(
        metrics
            .events_dropped
            .with_label_values(&["rejected"])
            .get(),
        0
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_entries_are_dropped_without_holding_back_the_rest() {
    let redis = RedisServer::start();
    // A key of the wrong type: every XADD to it fails with WRONGTYPE.
    let _: () = redis
        .cmd(redis::cmd("SET").arg("test:wrong").arg("x"))
        .expect("SET");
    let metrics = Metrics::new();
    let mut cfg = config(&redis, "test:ok", 100, 10);
    cfg.rooms
        .insert("broken".into(), RoomEvents::Stream("test:wrong".into()));
    let (events, svc) = Events::new(&cfg, &metrics);
    let running = start(svc.expect("service"));
    for t in 0..6 {
        events.emit(issued(if t % 2 == 0 { "drop" } else { "broken" }, t));
    }
    let rejected = metrics.events_dropped.with_label_values(&["rejected"]);
    until("refusals counted", 20, || rejected.get() == 3).await;
    until("the others delivered", 20, || xlen(&redis, "test:ok") == 3).await;
    running.stop().await;
}

/// A Redis that refuses writes for now (`READONLY`: here a replica whose primary is down) gets
/// the batch again once it takes writes, on the same connection, and nothing is dropped:
/// a refusal that says "later" is not a broken connection and not a rejection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_redis_gets_the_batch_again_on_the_same_connection() {
    let redis = RedisServer::start();
    let nobody = testkit::free_port();
    let _: () = redis
        .cmd(redis::cmd("REPLICAOF").arg("127.0.0.1").arg(nobody))
        .expect("REPLICAOF");
    let metrics = Metrics::new();
    let running = ten_until_refused(
        &config(&redis, "test:later", 1_000, 8),
        &metrics,
        "a refused attempt",
    )
    .await;
    // The sink's connection: the client whose last command was one of its pipeline's.
    let sink_client = || -> Option<String> {
        let list: String = redis.cmd(redis::cmd("CLIENT").arg("LIST")).ok()?;
        list.lines()
            .find(|l| l.contains("cmd=xadd") || l.contains("cmd=xtrim"))
            .and_then(|l| l.split_whitespace().find(|f| f.starts_with("id=")))
            .map(str::to_owned)
    };
    let during = sink_client().expect("the sink is connected");
    assert_eq!(xlen(&redis, "test:later"), 0);
    let _: () = redis
        .cmd(redis::cmd("REPLICAOF").arg("NO").arg("ONE"))
        .expect("REPLICAOF NO ONE");
    let sent = metrics.events_sent.with_label_values(&["ticket_issued"]);
    until("all sent", 20, || sent.get() == 10).await;
    let tickets = tickets_at(&redis.url(), "test:later");
    assert_eq!(tickets, (1..=10).collect::<Vec<_>>(), "all, in order, once");
    assert_eq!(
        sink_client(),
        Some(during),
        "the same connection throughout"
    );
    assert_none_dropped(&metrics);
    running.stop().await;
}

/// `rediss://`: the sink speaks TLS (rustls), trusting `[store.tls]`'s CA and presenting its
/// client certificate to a Redis that requires one; with a CA that did not sign the server's
/// certificate nothing is written and the failures are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_to_a_tls_redis_and_a_wrong_ca_sends_nothing() {
    let pki = testkit::TestPki::new(true);
    let redis = RedisServer::start_tls(pki.server.clone());
    let tls = |ca: String| flashgate::store::RedisTls {
        ca: Some(ca.into_bytes()),
        client: Some(flashgate::store::ClientIdentity {
            cert: pki.client_cert.clone().into_bytes(),
            key: pki.client_key.clone().into_bytes(),
        }),
    };
    let with = |stream: &str, tls| {
        let mut cfg = config_at(&redis.tls_url(), stream, 1_000, 64);
        cfg.sink = EventSink::Redis {
            url: redis.tls_url(),
            stream: stream.into(),
            maxlen: NonZeroU64::new(100_000).expect("non-zero"),
            tls: Some(tls),
        };
        cfg
    };

    let metrics = Metrics::new();
    let (events, svc) = Events::new(&with("test:tls", tls(pki.ca_pem.clone())), &metrics);
    let running = start(svc.expect("service"));
    for t in 1..=10 {
        events.emit(issued("drop", t));
    }
    let sent = metrics.events_sent.with_label_values(&["ticket_issued"]);
    until("all sent over TLS", 20, || sent.get() == 10).await;
    // Read back on the server's plain port.
    assert_eq!(
        tickets_at(&redis.url(), "test:tls"),
        (1..=10).collect::<Vec<_>>()
    );
    assert_none_dropped(&metrics);
    running.stop().await;

    let stranger = testkit::TestPki::new(false);
    let metrics = Metrics::new();
    let cfg = with("test:stranger", tls(stranger.ca_pem.clone()));
    let running = ten_until_refused(&cfg, &metrics, "a refused TLS handshake").await;
    assert_eq!(xlen(&redis, "test:stranger"), 0);
    running.stop().await;
}
