//! Unit tests: schema, sanitizing, ids, the non-blocking buffer, the file sink, shutdown.
//! The Redis sink is tested against a real `redis-server` in `proxy/tests/events.rs`.

use std::collections::BTreeMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pingora::services::background::BackgroundService;
use waitroom::{KeyRing, Overrides, Pass, Ticket, UnixMillis};

use super::*;
use crate::config::{EventSink, EventsConfig, RoomEvents};
use crate::metrics::Metrics;

const SECRET: &str = "events-test-secret-0123456789abcdef-xyz";
const ADMIN_TOKEN: &str = "admin-bearer-token-0123456789";

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

fn cfg(sink: EventSink, buffer: usize, batch: usize) -> EventsConfig {
    EventsConfig {
        sink,
        buffer: nz(buffer),
        batch: nz(batch),
        node: "test-node".into(),
        rooms: BTreeMap::new(),
        ..EventsConfig::default()
    }
}

fn keys() -> KeyRing {
    KeyRing::new(&[(1, SECRET.as_bytes())], 1).expect("key ring")
}

/// A real ticket and pass token, as a shopper's cookies would hold them.
fn tokens() -> (String, String) {
    let k = keys();
    let t = k.sign_ticket(&Ticket {
        room: "drop".into(),
        event: 0,
        number: 42,
        issued_at: 1_800_000_000,
        last_seen: 1_800_000_000,
        expires_at: 1_800_000_120,
        binding: 0,
        serving_at_issue: 10,
    });
    let p = k.sign_pass(&Pass {
        room: "drop".into(),
        event: 0,
        ticket: 42,
        admitted_at: 1_800_000_100,
        checkin_minute: 30_000_001,
        expires_at: 1_800_000_700,
        binding: 0,
        fixed_session: false,
    });
    (t, p)
}

/// One event of every kind, with free text that tries to smuggle tokens and secrets out.
fn every_kind() -> Vec<Event> {
    let (t, p) = tokens();
    // What a shopper could paste: their own cookies, and (improbably) a signing secret.
    let nasty = format!("great wait! my cookie fg_t_drop={t}; and pass {p} key {SECRET}");
    let before = Overrides::default();
    let after = Overrides {
        new_users_per_minute: Some(120),
        total_active_users: Some(500),
        paused: true,
        queue_all: true,
        drain: true,
        sold_out: true,
        message: Some(nasty.clone()),
    };
    let mut v = vec![
        Event::new("drop", EventKind::TicketIssued { serving: 10 }).with_ticket(42),
        Event::new(
            "drop",
            EventKind::admitted(1_800_000_000, UnixMillis(1_800_000_061_500)),
        )
        .with_ticket(42),
        Event::new(
            "drop",
            EventKind::SessionEnded {
                reason: EndReason::Leave,
            },
        )
        .with_ticket(42),
        Event::new(
            "drop",
            EventKind::SessionEnded {
                reason: EndReason::Expiry,
            },
        )
        .with_ticket(43),
        Event::new(
            "drop",
            EventKind::SessionEnded {
                reason: EndReason::Revoke,
            },
        )
        .with_ticket(44),
        Event::new(
            "drop",
            EventKind::Abandoned {
                reason: AbandonReason::Left,
            },
        )
        .with_ticket(45),
        Event::new(
            "drop",
            EventKind::Abandoned {
                reason: AbandonReason::Expired,
            },
        )
        .with_ticket(46),
        Event::new(
            "drop",
            EventKind::ChallengeFailed {
                reason: ChallengeFailure::WrongSolution,
            },
        ),
        Event::new(
            "drop",
            parse_feedback(
                Some("application/json"),
                serde_json::json!({"rating": 4, "comment": nasty})
                    .to_string()
                    .as_bytes(),
            )
            .expect("valid feedback"),
        )
        .with_ticket(42),
    ];
    for by in [
        Actor::admin(Some(ADMIN_TOKEN)),
        Actor::admin(None),
        Actor::Origin,
        Actor::Config,
    ] {
        for k in room_changes(&before, &after, &by) {
            v.push(Event::new("drop", k));
        }
    }
    v
}

fn json_of(e: &Event) -> String {
    to_json(
        e,
        id::IdGen::with_instance(7).next(UnixMillis(1_800_000_061_500)),
        UnixMillis(1_800_000_061_500),
        "edge-1",
    )
}

/// Runs of at least `TOKEN_RUN` base64url characters.
fn token_like(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| w.len() >= schema::TOKEN_RUN)
        .map(str::to_owned)
        .collect()
}

/// The file sink at `path`, rotated past `max_bytes`, keeping `keep_files` old files.
fn file_sink(path: PathBuf, max_bytes: u64, keep_files: u32) -> EventSink {
    EventSink::File {
        path,
        max_bytes: NonZeroU64::new(max_bytes).expect("non-zero"),
        keep_files,
    }
}

#[test]
fn no_event_of_any_kind_carries_a_token_or_secret() {
    let (t, p) = tokens();
    let all = every_kind();
    let mut kinds: Vec<&str> = all.iter().map(|e| e.kind.name()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut names = EventKind::NAMES.to_vec();
    names.sort_unstable();
    assert_eq!(kinds, names, "the sample covers every kind");
    for e in &all {
        let json = json_of(e);
        // `name()` (by index into NAMES) is the serialized kind.
        let tag = format!("\"kind\":\"{}\"", e.kind.name());
        assert!(json.contains(&tag), "{tag} in {json}");
        for needle in [t.as_str(), p.as_str(), SECRET, ADMIN_TOKEN] {
            assert!(!json.contains(needle), "leak in {json}");
        }
        assert_eq!(token_like(&json), Vec::<String>::new(), "{json}");
    }
}

#[test]
fn envelope_and_fields_are_the_documented_schema() {
    let e = Event::new(
        "drop",
        EventKind::admitted(1_800_000_000, UnixMillis(1_800_000_061_500)),
    )
    .with_ticket(42);
    let id = id::IdGen::with_instance(7).next(UnixMillis(1_800_000_061_500));
    let json = to_json(&e, id, UnixMillis(1_800_000_061_500), "edge-1");
    assert_eq!(
        json,
        format!(
            "{{\"v\":1,\"id\":\"{id}\",\"time\":\"2027-01-15T08:01:01.500Z\",\
             \"unix_ms\":1800000061500,\"node\":\"edge-1\",\"room\":\"drop\",\"ticket\":42,\
             \"kind\":\"admitted\",\"waited_ms\":61500}}"
        )
    );
    // Every kind: the envelope is complete and `kind` is its name.
    for e in every_kind() {
        let v: serde_json::Value = serde_json::from_str(&json_of(&e)).expect("valid JSON");
        for f in [
            "v", "id", "time", "unix_ms", "node", "room", "ticket", "kind",
        ] {
            assert!(v.get(f).is_some(), "{f} missing in {v}");
        }
        assert_eq!(v["v"], 1);
        assert_eq!(v["kind"], e.kind.name());
    }
    let change = room_changes(
        &Overrides::default(),
        &Overrides {
            new_users_per_minute: Some(120),
            ..Overrides::default()
        },
        &Actor::admin(Some(ADMIN_TOKEN)),
    );
    let v: serde_json::Value =
        serde_json::from_str(&json_of(&Event::new("drop", change[0].clone()))).expect("JSON");
    assert_eq!(v["what"], "new_users_per_minute");
    assert_eq!(v["before"], serde_json::Value::Null);
    assert_eq!(v["after"], 120);
    let by = v["by"].as_str().expect("by is a string");
    assert!(
        by.starts_with("admin:") && by.len() == "admin:".len() + 12,
        "{by}"
    );
    assert_eq!(v["ticket"], serde_json::Value::Null);
}

#[test]
fn kinds_written_directly_match_serde() {
    for kind in [
        EventKind::TicketIssued { serving: 0 },
        EventKind::TicketIssued { serving: u64::MAX },
        EventKind::Admitted { waited_ms: 61_500 },
    ] {
        let e = Event::new("drop", kind.clone()).with_ticket(7);
        let got = json_of(&e);
        let by_serde = serde_json::to_string(&kind).expect("serializes");
        assert!(
            got.ends_with(&format!(",{}", &by_serde[1..])),
            "{got} does not end with {by_serde}"
        );
        serde_json::from_str::<serde_json::Value>(&got).expect("valid JSON");
    }
}

#[test]
fn room_changes_lists_only_what_changed() {
    let before = Overrides {
        paused: true,
        new_users_per_minute: Some(60),
        ..Overrides::default()
    };
    let after = Overrides {
        paused: false,
        new_users_per_minute: Some(60),
        sold_out: true,
        ..Overrides::default()
    };
    let k = room_changes(&before, &after, &Actor::Origin);
    let what: Vec<Setting> = k
        .iter()
        .map(|k| match k {
            EventKind::RoomStateChanged { what, .. } => *what,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(what, vec![Setting::Paused, Setting::SoldOut]);
    assert!(room_changes(&before, &before, &Actor::Config).is_empty());
}

#[test]
fn free_text_is_cleaned() {
    assert_eq!(clean_text("  hello\n\n\tworld\u{0007} "), "hello world");
    assert_eq!(clean_text("a\u{202E}b\u{200B}c"), "abc");
    let tok = "A".repeat(schema::TOKEN_RUN);
    assert_eq!(clean_text(&format!("x {tok} y")), "x [redacted] y");
    assert_eq!(
        clean_text(&format!("cookie={tok}.{tok};")),
        "cookie=[redacted];"
    );
    let short = "A".repeat(schema::TOKEN_RUN - 1);
    assert_eq!(clean_text(&short), short);
    assert_eq!(clean_text("café 👍 ok"), "café 👍 ok");
}

#[test]
fn feedback_contract() {
    let k = parse_feedback(None, b"rating=5&comment=Quick+and+fair%21").expect("form");
    assert_eq!(
        k,
        EventKind::Feedback {
            rating: Rating::new(5).expect("rating"),
            comment: Comment::new("Quick and fair!").expect("comment"),
        }
    );
    let k = parse_feedback(Some("application/json; charset=utf-8"), br#"{"rating":1}"#)
        .expect("json without comment");
    assert!(matches!(k, EventKind::Feedback { comment: None, .. }));
    let k = parse_feedback(None, b"rating=3&comment=%20%0A%20").expect("blank comment");
    assert!(matches!(k, EventKind::Feedback { comment: None, .. }));
    for (ct, body, want) in [
        (None, &b"rating=0"[..], FeedbackError::Rating),
        (None, b"rating=6", FeedbackError::Rating),
        (None, b"rating=x", FeedbackError::Rating),
        (None, b"comment=hi", FeedbackError::Rating),
        (
            Some("application/json"),
            br#"{"rating":"5"}"#,
            FeedbackError::Rating,
        ),
        (
            Some("application/json"),
            br#"{"rating":300}"#,
            FeedbackError::Rating,
        ),
        (Some("application/json"), b"[5]", FeedbackError::Body),
        (
            Some("application/json"),
            br#"{"rating":5,"x":1}"#,
            FeedbackError::Body,
        ),
        (
            Some("application/json"),
            br#"{"rating":5,"comment":7}"#,
            FeedbackError::Body,
        ),
        (None, &[0xff, 0xfe], FeedbackError::Body),
    ] {
        assert_eq!(parse_feedback(ct, body), Err(want), "{body:?}");
    }
    let long = format!(
        "rating=4&comment={}",
        "word+".repeat(schema::MAX_COMMENT_CHARS / 5 + 2)
    );
    assert_eq!(
        parse_feedback(None, long.as_bytes()),
        Err(FeedbackError::CommentTooLong)
    );
    let huge = format!("rating=4&comment={}", "a ".repeat(MAX_FEEDBACK_BODY));
    assert_eq!(
        parse_feedback(None, huge.as_bytes()),
        Err(FeedbackError::Body)
    );
}

#[test]
fn ids_are_ulid_shaped_unique_and_time_ordered() {
    let g = id::IdGen::new();
    let a = g.next(UnixMillis(1_000));
    let b = g.next(UnixMillis(1_000));
    let c = g.next(UnixMillis(2_000));
    assert_ne!(a, b);
    assert!(a.to_string() < c.to_string() && b.to_string() < c.to_string());
    assert_eq!(a.to_string().len(), 26);
    assert_eq!(c.millis(), 2_000);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10_000 {
        assert!(seen.insert(g.next(UnixMillis(5))));
    }
    // Two processes (instances) never produce the same id for the same counter and time.
    let other = id::IdGen::with_instance(1);
    let mine = id::IdGen::with_instance(2);
    assert_ne!(other.next(UnixMillis(9)), mine.next(UnixMillis(9)));
}

#[test]
fn disabled_emits_nothing() {
    let m = Metrics::new();
    let (ev, svc) = Events::new(&EventsConfig::default(), &m);
    assert!(svc.is_none() && !ev.is_enabled());
    ev.emit(Event::new("drop", EventKind::TicketIssued { serving: 0 }));
    Events::disabled().emit(Event::new("drop", EventKind::TicketIssued { serving: 0 }));
}

/// `emit` is a plain function: this test has no async runtime at all, so it could not wait for
/// the sink even if it tried. With nothing draining the buffer, everything past `buffer` is
/// dropped and counted.
#[test]
fn full_buffer_drops_and_counts_without_a_runtime() {
    let m = Metrics::new();
    let sink = file_sink(PathBuf::from("/nonexistent/never-opened.jsonl"), 1, 0);
    let (ev, svc) = Events::new(&cfg(sink, 8, 4), &m);
    assert!(svc.is_some());
    let emit: fn(&Events, Event) = Events::emit;
    for n in 0..1_000 {
        emit(
            &ev,
            Event::new("drop", EventKind::TicketIssued { serving: 0 }).with_ticket(n),
        );
    }
    let dropped = m.events_dropped.with_label_values(&["buffer_full"]).get();
    assert_eq!(dropped, 1_000 - 8);
}

#[test]
fn a_room_can_opt_out() {
    let m = Metrics::new();
    let sink = file_sink(PathBuf::from("/nonexistent/never-opened.jsonl"), 1, 0);
    let mut c = cfg(sink, 2, 1);
    c.rooms.insert("quiet".into(), RoomEvents::Off);
    let (ev, _svc) = Events::new(&c, &m);
    for _ in 0..10 {
        ev.emit(Event::new("quiet", EventKind::TicketIssued { serving: 0 }));
    }
    assert_eq!(
        m.events_dropped.with_label_values(&["buffer_full"]).get(),
        0
    );
    for _ in 0..3 {
        ev.emit(Event::new("loud", EventKind::TicketIssued { serving: 0 }));
    }
    assert_eq!(
        m.events_dropped.with_label_values(&["buffer_full"]).get(),
        1
    );
}

static DIRS: AtomicU32 = AtomicU32::new(0);

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "flashgate-events-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Polls `f` until it holds; panics after 10 s.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is whole JSON"))
        .collect()
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

async fn run_file_sink(max_bytes: u64, keep: u32, n: u64) -> (PathBuf, Metrics) {
    let dir = temp_dir();
    let path = dir.join("sub/events.jsonl");
    let m = Metrics::new();
    let sink = file_sink(path.clone(), max_bytes, keep);
    let (ev, svc) = Events::new(&cfg(sink, 10_000, 64), &m);
    let svc = svc.expect("service");
    let (stop, watch) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { svc.start(watch).await });
    for t in 1..=n {
        ev.emit(Event::new("drop", EventKind::TicketIssued { serving: 0 }).with_ticket(t));
    }
    let sent = m.events_sent.with_label_values(&["ticket_issued"]);
    until("all events written", || sent.get() == n).await;
    stop.send(true).expect("service running");
    task.await.expect("service stops");
    (path, m)
}

#[tokio::test]
async fn file_sink_rotates_and_keeps_k_files() {
    let (path, m) = run_file_sink(4096, 2, 400).await;
    assert_eq!(
        m.events_dropped.with_label_values(&["buffer_full"]).get(),
        0
    );
    let files = [path.clone(), numbered(&path, 1), numbered(&path, 2)];
    let mut newest_first = Vec::new();
    for f in &files {
        let size = std::fs::metadata(f).expect("file exists").len();
        assert!(size <= 4096, "{} is {size} bytes", f.display());
        newest_first.push(lines(f));
    }
    assert!(
        !numbered(&path, 3).exists(),
        "only keep_files rotated files"
    );
    // Oldest to newest, the kept lines are the last tickets, consecutive and in order.
    let kept: Vec<u64> = newest_first
        .iter()
        .rev()
        .flatten()
        .map(|v| v["ticket"].as_u64().expect("ticket"))
        .collect();
    assert_eq!(kept.last(), Some(&400));
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
    assert!(kept.len() > 20);
}

#[tokio::test]
async fn file_sink_without_kept_files_is_bounded() {
    let (path, _m) = run_file_sink(4096, 0, 300).await;
    let size = std::fs::metadata(&path).expect("file").len();
    assert!(size <= 4096);
    assert!(!numbered(&path, 1).exists());
    let last = lines(&path);
    assert_eq!(last.last().and_then(|v| v["ticket"].as_u64()), Some(300));
}

#[tokio::test]
async fn shutdown_flushes_the_buffer_then_refuses() {
    let dir = temp_dir();
    let path = dir.join("events.jsonl");
    let m = Metrics::new();
    let sink = file_sink(path.clone(), 1 << 20, 1);
    let (ev, svc) = Events::new(&cfg(sink, 1_000, 16), &m);
    let svc = svc.expect("service");
    // Shutdown is signalled before the service even starts: what was emitted is still written.
    for t in 1..=100 {
        ev.emit(Event::new("drop", EventKind::TicketIssued { serving: 0 }).with_ticket(t));
    }
    let (stop, watch) = tokio::sync::watch::channel(false);
    stop.send(true).expect("receiver alive");
    svc.start(watch).await;
    assert_eq!(lines(&path).len(), 100);
    ev.emit(Event::new("drop", EventKind::TicketIssued { serving: 0 }));
    assert_eq!(m.events_dropped.with_label_values(&["shutdown"]).get(), 1);
}

#[test]
fn a_partial_line_is_ended_before_appending() {
    let dir = temp_dir();
    let path = dir.join("events.jsonl");
    std::fs::write(&path, b"{\"v\":1,\"trunc").expect("write");
    let mut s = sink::Sink::new(&file_sink(path.clone(), 1 << 20, 1));
    let mut batch = sink::Batch::lines();
    batch.push(of_kind(1, "drop"), None, |t, _| {
        t.extend_from_slice(b"{\"v\":1}")
    });
    s.send(&mut batch, Duration::from_secs(1)).expect("written");
    assert_eq!(batch.lines[0].state, sink::Delivery::Sent);
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text, "{\"v\":1,\"trunc\n{\"v\":1}\n");
}

/// What the request path hands to the delivery task stays small (the docs say 72 bytes): a
/// kind that grows past the others should box its fields.
#[test]
fn a_stamped_event_is_72_bytes() {
    assert_eq!(std::mem::size_of::<super::Stamped>(), 72);
}

/// An event of kind `NAMES[kind]` (ticket issued or admitted) about `room`, for tests that
/// write their own text for it.
fn of_kind(kind: usize, room: &str) -> Event {
    let kind = match kind {
        0 => EventKind::TicketIssued { serving: 0 },
        _ => EventKind::Admitted { waited_ms: 0 },
    };
    Event::new(room, kind)
}

/// Parses a pipeline with redis-rs's parser into each command's arguments: `n` commands, then
/// nothing more (the parser keeps what it read ahead, so the input's end is its end of file).
fn commands(mut input: &[u8], n: usize) -> Vec<Vec<String>> {
    let mut parser = redis::Parser::new();
    let mut out = Vec::new();
    for _ in 0..n {
        let redis::Value::Array(args) = parser.parse_value(&mut input).expect("a command") else {
            panic!("not a command");
        };
        out.push(
            args.iter()
                .map(|v| match v {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => panic!("not a bulk string: {other:?}"),
                })
                .collect(),
        );
    }
    match parser.parse_value(&mut input) {
        Err(e) if e.is_io_error() => {}
        other => panic!("more after {n} commands: {other:?}"),
    }
    out
}

/// Marks every line of `b` sent and settles it: nothing is left, text included.
fn settle_all(b: &mut sink::Batch) {
    b.lines
        .iter_mut()
        .for_each(|l| l.state = sink::Delivery::Sent);
    b.settle(|_| {});
    assert!(b.is_empty() && b.text.is_empty());
}

fn xadd(key: &str, event: &str, kind: usize, room: &str) -> Vec<String> {
    let kind = EventKind::NAMES[kind];
    ["XADD", key, "*", "event", event, "kind", kind, "room", room]
        .map(String::from)
        .to_vec()
}

/// Events framed as `XADD`s as they are serialized: the text's length goes before it, with
/// room left for three digits, so texts of one, two, four and five digits' length move over.
#[test]
fn xadds_are_framed_as_resp_whatever_the_texts_length() {
    let mut batch = sink::Batch::new(sink::Layout::Xadd(sink::Xadds::new("s:events".into())), 4);
    let texts: Vec<String> = [1, 99, 100, 999, 1000, 12_345]
        .into_iter()
        .map(|n| "x".repeat(n))
        .collect();
    let vip: Option<std::sync::Arc<str>> = Some("s:vip".into());
    for (n, text) in texts.iter().enumerate() {
        let stream = (n % 2 == 1).then(|| vip.clone()).flatten();
        batch.push(of_kind(n % 2, "drop"), stream, |t, _| {
            t.extend_from_slice(text.as_bytes())
        });
    }
    let mut want = Vec::new();
    for (n, text) in texts.iter().enumerate() {
        let key = if n % 2 == 1 { "s:vip" } else { "s:events" };
        want.push(xadd(key, text, n % 2, "drop"));
    }
    let mut framed = Vec::new();
    for i in 0..batch.len() {
        framed.extend_from_slice(batch.framed(i));
    }
    assert_eq!(framed, batch.text, "the lines cover the text");
    assert_eq!(commands(&batch.text, want.len()), want);
}

/// A whole batch's pipeline as the Redis sink writes it: every entry to its stream with its
/// kind and room, in order, then one `XTRIM` per stream — across more kinds and rooms than the
/// framing cache keeps, over two batches (the second framed from what the first left), and
/// after a partial failure (only the pending entries go again).
#[test]
fn a_batch_pipeline_reads_back_entry_for_entry() {
    let mut batch = sink::Batch::new(sink::Layout::Xadd(sink::Xadds::new("s:all".into())), 8);
    let rooms = ["a", "b", "a", "c", "d", "d", "e", "a"];
    let mut want = Vec::new();
    let mut s = sink::RedisSink::new("redis://127.0.0.1:1".into(), "s:all".into(), 500);
    let trim = |key: &str| {
        ["XTRIM", key, "MAXLEN", "~", "500"]
            .map(String::from)
            .to_vec()
    };
    for round in 0..2 {
        want.clear();
        for (n, room) in rooms.iter().enumerate() {
            let json = format!("{{\"n\":{n},\"round\":{round}}}");
            let stream: Option<std::sync::Arc<str>> = (*room == "e").then(|| "s:e".into());
            batch.push(of_kind(n % 2, room), stream.clone(), |t, _| {
                t.extend_from_slice(json.as_bytes())
            });
            want.push(xadd(
                stream.as_deref().unwrap_or("s:all"),
                &json,
                n % 2,
                room,
            ));
        }
        let mut all = want.clone();
        all.extend([trim("s:all"), trim("s:e")]);
        assert_eq!(commands(&s.pipeline(&mut batch), all.len()), all);
        // Every other one sent: the rest go again (all to s:all), and then nothing.
        for (i, l) in batch.lines.iter_mut().enumerate() {
            if i % 2 == 0 {
                l.state = sink::Delivery::Sent;
            }
        }
        batch.settle(|_| {});
        let mut again: Vec<_> = want.iter().skip(1).step_by(2).cloned().collect();
        again.push(trim("s:all"));
        assert_eq!(commands(&s.pipeline(&mut batch), again.len()), again);
        settle_all(&mut batch);
    }
}

/// The reply scanner: every RESP2 reply type, replies cut anywhere (more to read), and
/// what is not RESP2.
#[test]
fn replies_are_scanned_whole_or_asked_for_more() {
    use resp::{scan, Scan};
    let replies: &[(&[u8], Result<(), String>)] = &[
        (b"$15\r\n1732800000000-0\r\n", Ok(())),
        (
            b"-WRONGTYPE Operation against a key\r\n",
            Err("WRONGTYPE Operation against a key".into()),
        ),
        (b":12\r\n", Ok(())),
        (b"+OK\r\n", Ok(())),
        (b"$-1\r\n", Ok(())),
        (b"$0\r\n\r\n", Ok(())),
        (b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", Ok(())),
        (b"*-1\r\n", Ok(())),
    ];
    for (bytes, want) in replies {
        let mut joined = bytes.to_vec();
        joined.extend_from_slice(b"+next\r\n");
        assert_eq!(
            scan(&joined),
            Scan::Reply(bytes.len(), want.clone()),
            "{bytes:?}"
        );
        for cut in 0..bytes.len() {
            assert_eq!(scan(&bytes[..cut]), Scan::More, "{bytes:?} cut at {cut}");
        }
    }
    assert!(matches!(scan(b"$3\r\nabcde\r\n"), Scan::Bad(_)));
    assert!(matches!(scan(b"$x\r\n"), Scan::Bad(_)));
    assert!(matches!(scan(b"%1\r\n"), Scan::Bad(_)));
    let deep = "*1\r\n".repeat(20);
    assert!(matches!(scan(deep.as_bytes()), Scan::Bad(_)));
    assert!(
        sink::transient("LOADING Redis is loading"),
        "loading passes"
    );
    assert!(
        !sink::transient("WRONGTYPE Operation against a key"),
        "a wrong type is for good"
    );
}

/// The Redis sink's pacing: no sleep before it has measured a batch or for small batches; after
/// a batch the reader had to wait for, the sleep is the measured time plus the margin; after
/// one whose replies were all there, a little shorter each time; never above the cap.
#[test]
fn the_redis_sink_sleeps_about_as_long_as_redis_takes() {
    use sink::Pace;
    let ms = Duration::from_millis;
    let mut p = Pace::default();
    assert_eq!(p.wait(256), None, "nothing measured yet");
    // 256 events answered 1 ms after the write, the reader blocked for most of it.
    p.record(256, ms(1), Duration::from_micros(900));
    let first = p.wait(256).expect("paced");
    assert!((1_090..=1_110).contains(&first.as_micros()), "{first:?}");
    assert_eq!(
        p.wait(Pace::MIN_EVENTS - 1),
        None,
        "small batches are not paced"
    );
    let half = p.wait(128).expect("paced");
    assert!(
        (540..=560).contains(&half.as_micros()),
        "in proportion: {half:?}"
    );
    // Replies all there on waking: each sleep a little shorter.
    p.record(256, first, Duration::from_micros(5));
    let shorter = p.wait(256).expect("paced");
    assert!(
        shorter < first && shorter > first * 9 / 10,
        "{shorter:?} after {first:?}"
    );
    // The reader had to wait again: back to the measured time plus the margin.
    p.record(256, ms(2), ms(1));
    let again = p.wait(256).expect("paced");
    assert!((2_190..=2_210).contains(&again.as_micros()), "{again:?}");
    // Small batches teach nothing; a huge estimate is capped.
    p.record(10, ms(500), ms(500));
    assert_eq!(p.wait(256), Some(again));
    p.record(256, Duration::from_secs(5), Duration::from_secs(5));
    assert_eq!(p.wait(256), Some(Pace::MAX_WAIT));
}

/// A batch after a partial failure keeps only its pending lines, in order, with their text.
#[test]
fn a_batch_keeps_its_pending_lines_in_order() {
    let mut b = sink::Batch::lines();
    // Each line's stream tells it apart (a file sink ignores it).
    for (n, room) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        b.push(of_kind(n % 2, room), Some(room.into()), |t, _| {
            t.extend_from_slice(format!("{{\"n\":{n}}}").as_bytes())
        });
    }
    for (i, state) in [
        sink::Delivery::Sent,
        sink::Delivery::Pending,
        sink::Delivery::Rejected,
        sink::Delivery::Pending,
        sink::Delivery::Sent,
    ]
    .into_iter()
    .enumerate()
    {
        b.lines[i].state = state;
    }
    let mut settled = Vec::new();
    let name = |l: &sink::Line| l.stream.as_deref().unwrap_or_default().to_owned();
    b.settle(|l| settled.push((name(l), l.state)));
    assert_eq!(
        settled,
        [
            ("a".into(), sink::Delivery::Sent),
            ("c".into(), sink::Delivery::Rejected),
            ("e".into(), sink::Delivery::Sent)
        ]
    );
    assert_eq!(b.len(), 2);
    assert_eq!(
        (b.framed(0), b.framed(1)),
        (&b"{\"n\":1}\n"[..], &b"{\"n\":3}\n"[..])
    );
    assert_eq!(b.text, b"{\"n\":1}\n{\"n\":3}\n");
    assert_eq!(
        (name(&b.lines[0]), name(&b.lines[1])),
        ("b".into(), "d".into())
    );
    // A line added after the kept ones starts where they end.
    b.push(of_kind(0, "f"), None, |t, _| t.extend_from_slice(b"{}"));
    assert_eq!(b.framed(2), b"{}\n");
    settle_all(&mut b);
}

#[test]
fn bot_refusals_map_to_challenge_failures() {
    let mapped: Vec<ChallengeFailure> = crate::bot::ChallengeError::ALL
        .into_iter()
        .filter_map(ChallengeFailure::from_bot)
        .collect();
    assert_eq!(mapped.len(), 7, "server-side refusals are not events");
    assert_eq!(
        ChallengeFailure::from_bot(crate::bot::ChallengeError::InsufficientWork),
        Some(ChallengeFailure::WrongSolution)
    );
    assert_eq!(
        ChallengeFailure::from_bot(crate::bot::ChallengeError::Limited),
        None
    );
}
