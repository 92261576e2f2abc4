//! The `events-consumer` example against a real `redis-server` (a child on a free port, never
//! the machine's 6379): Flashgate's event stream publishes a few events, the consumer reads
//! them with a consumer group, prints them and the admissions line, and acknowledges them.

use std::collections::BTreeMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::time::{Duration, Instant};

use flashgate::config::{EventSink, EventsConfig};
use flashgate::events::{Event, EventKind, Events};
use flashgate::metrics::Metrics;
use pingora::services::background::BackgroundService;
use testkit::RedisServer;
use waitroom::UnixMillis;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_reads_acks_and_counts_admissions() {
    let redis = RedisServer::start();
    let cfg = EventsConfig {
        sink: EventSink::Redis {
            url: redis.url(),
            stream: "shop:events".into(),
            maxlen: NonZeroU64::new(10_000).expect("non-zero"),
            tls: None,
        },
        buffer: NonZeroUsize::new(1_000).expect("non-zero"),
        batch: NonZeroUsize::new(64).expect("non-zero"),
        node: "edge-1".into(),
        rooms: BTreeMap::new(),
        ..EventsConfig::default()
    };
    let metrics = Metrics::new();
    let (events, svc) = Events::new(&cfg, &metrics);
    let svc = svc.expect("service");
    let (stop, watch) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { svc.start(watch).await });

    for t in 1..=12 {
        events.emit(Event::new("drop", EventKind::TicketIssued { serving: 0 }).with_ticket(t));
    }
    for t in 1..=8 {
        let now = UnixMillis(1_800_000_000_000);
        events.emit(Event::new("drop", EventKind::admitted(1_800_000_000, now)).with_ticket(t));
    }
    let sent = || -> u64 {
        ["ticket_issued", "admitted"]
            .iter()
            .map(|k| metrics.events_sent.with_label_values(&[*k]).get())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while sent() < 20 {
        assert!(Instant::now() < deadline, "events not published");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
    task.await.expect("service stops");

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_events-consumer"))
        .args(["--url", &redis.url(), "--stream", "shop:events"])
        .args(["--group", "analytics", "--consumer", "c1", "--start", "0"])
        .args(["--count", "20", "--print"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("the consumer stops after --count events")
        .expect("consumer runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(json.len(), 20, "{stdout}");
    assert!(json.iter().all(|v| v["v"] == 1 && v["node"] == "edge-1"));
    // Events were stamped just now, so all of them fall in the last minute.
    assert!(
        stdout.contains("drop: 8 admitted/min, 12 joined/min"),
        "{stdout}"
    );
    // Everything read was acknowledged.
    let pending: redis::Value = redis
        .cmd(redis::cmd("XPENDING").arg("shop:events").arg("analytics"))
        .expect("XPENDING");
    let redis::Value::Array(summary) = pending else {
        panic!("unexpected XPENDING reply {pending:?}")
    };
    assert_eq!(summary.first(), Some(&redis::Value::Int(0)));
}
