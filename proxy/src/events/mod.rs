//! The queue/admission event stream: ticket issued, admitted, session ended, abandoned,
//! challenge failed, room state changed, feedback — published to Redis Streams or a JSON-lines
//! file for the shop's own e-mail, analytics and inventory jobs. Schema and examples:
//! `docs/events.md`; the types: [`schema`].
//!
//! ```text
//!  request path                         background service ("events")
//!  ───────────────                      ───────────────────────────────
//!  Events::emit(Event) ──push──▶ [bounded buffer] ──take──▶ batch ──▶ pipelined XADDs
//!     never awaits;                  `[events] buffer`        ≤ `batch`   or file append
//!     full ⇒ drop + count                                                 retry with backoff
//! ```
//!
//! Guarantees and failure modes (each has a test, in `proxy/tests/events.rs` or
//! `proxy/src/events/tests.rs`):
//!
//! - **Never on the critical path.** [`Events::emit_at`] is a synchronous function: it stamps
//!   the event with the request's clock reading and pushes it into a bounded buffer under a
//!   short lock ([`buffer`]); the id, the room's stream and the JSON text are made by the
//!   delivery task. It cannot wait for the sink. With the sink off, it is one branch. It wakes
//!   the delivery task only when the buffer was empty; under load the task lingers
//!   (`events.linger`, 50 ms by default: [`EventsConfig::linger`]) after each delivery and
//!   takes what accumulated, so events are delivered in batches at most about the linger late
//!   and the request path makes no system call for them.
//! - **Bounded memory.** At most `buffer` events wait in memory, plus one batch in flight.
//!   When the buffer is full the new event is dropped and counted in
//!   `flashgate_events_dropped_total{reason="buffer_full"}`.
//! - **At least once while the sink is healthy.** A batch is removed only when the sink
//!   confirmed it (Redis answered each of its `XADD`s; the file write
//!   returned). A failed batch is retried with exponential backoff (50 ms doubling to 5 s) for
//!   as long as it takes; new events keep buffering meanwhile. A batch that failed half way is
//!   sent again, so consumers may see an event twice: deduplicate by `id`.
//! - **When the sink is down for long**: the batch in flight is kept and retried, the buffer
//!   fills in `buffer / event rate` seconds, and from then on every new event is dropped and
//!   counted; `flashgate_events_sink_errors_total` grows with every failed attempt. When the
//!   sink comes back, the kept batch and the buffer are delivered (oldest first) and no more are
//!   dropped. Requests and admissions are unaffected throughout.
//! - **Rejected events**: an entry Redis refuses for good (e.g. `WRONGTYPE` because the key is
//!   not a stream, `NOPERM`) is dropped and counted as `reason="rejected"`, without holding
//!   back the others.
//! - **Shutdown**: the service stops taking new events, spends at most [`FLUSH_ON_SHUTDOWN`]
//!   delivering what is buffered (a Redis that stops answering mid-call can make it up to twice
//!   that: the call's write and read each time out after the time left), and counts the rest as
//!   `reason="shutdown"`.
//! - **Order**: events leave in the order they were emitted on this node (one channel, one
//!   consumer), so events about one ticket are in order as long as one node emits them. Events
//!   from several nodes interleave by arrival; `unix_ms` and `id` sort by time.
//!
//! Configuration (`[events]`, `[rooms.event_stream]`) is read at start; changing it needs a
//! restart (a reload keeps the running stream).

mod buffer;
mod file_sink;
pub mod id;
mod resp;
pub mod schema;
pub mod settings;
mod sink;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{IntCounter, IntGauge};
use waitroom::{Overrides, UnixMillis};

use crate::clock;
use crate::metrics::Metrics;
pub use settings::{EventSink, EventsConfig, RoomEvents};

pub use id::EventId;
pub use schema::{
    clean_text, parse_feedback, room_changes, AbandonReason, Actor, ChallengeFailure, Comment,
    EndReason, Event, EventKind, FeedbackError, Rating, Setting, SettingValue, Text,
    MAX_FEEDBACK_BODY, SCHEMA_VERSION,
};

use buffer::{Buffer, Push};
use sink::{Batch, Delivery, Sink};

/// How long the service keeps delivering after shutdown is signalled.
pub const FLUSH_ON_SHUTDOWN: Duration = Duration::from_secs(2);

/// First and longest wait between attempts while the sink fails.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// An event and when it was emitted: what the request path hands over (72 bytes; the rare
/// large kinds box their fields). The delivery task adds the id and the room's stream.
#[derive(Debug)]
struct Stamped {
    at: UnixMillis,
    event: Event,
}

#[derive(Debug)]
enum Route {
    Off,
    Stream(Arc<str>),
}

type Routes = Arc<HashMap<String, Route>>;

#[derive(Debug)]
struct Inner {
    buf: Arc<Buffer<Stamped>>,
    rooms: Routes,
    dropped_full: IntCounter,
    dropped_shutdown: IntCounter,
}

/// The handle the gate and the admin API emit through. Cheap to clone (one `Arc`).
#[derive(Debug, Clone, Default)]
pub struct Events {
    inner: Option<Arc<Inner>>,
}

impl Events {
    /// A handle that drops everything silently (sink off).
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// The handle and, unless the sink is off, the background service that delivers what it
    /// emits (add it to the server with
    /// `pingora::services::background::background_service("events", svc)`).
    pub fn new(cfg: &EventsConfig, metrics: &Metrics) -> (Self, Option<EventsService>) {
        if cfg.sink == EventSink::Off {
            return (Self::disabled(), None);
        }
        let buf = Arc::new(Buffer::new(cfg.buffer.get()));
        let dropped = |reason: &str| metrics.events_dropped.with_label_values(&[reason]);
        let rooms: Routes = cfg
            .rooms
            .iter()
            .map(|(room, r)| {
                let route = match r {
                    RoomEvents::Off => Route::Off,
                    RoomEvents::Stream(s) => Route::Stream(Arc::from(s.as_str())),
                };
                (room.clone(), route)
            })
            .collect::<HashMap<_, _>>()
            .into();
        let inner = Inner {
            buf: buf.clone(),
            rooms: rooms.clone(),
            dropped_full: dropped("buffer_full"),
            dropped_shutdown: dropped("shutdown"),
        };
        let sent = EventKind::NAMES.map(|k| metrics.events_sent.with_label_values(&[k]));
        let svc = EventsService {
            buf,
            rooms,
            started: AtomicBool::new(false),
            sink: cfg.sink.clone(),
            batch: cfg.batch.get(),
            linger: cfg.linger,
            node: cfg.node.clone(),
            sent,
            dropped_rejected: dropped("rejected"),
            dropped_shutdown: inner.dropped_shutdown.clone(),
            sink_errors: metrics
                .events_sink_errors
                .with_label_values(&[sink_name(&cfg.sink)]),
            pending: metrics.events_pending.clone(),
        };
        (
            Self {
                inner: Some(Arc::new(inner)),
            },
            Some(svc),
        )
    }

    /// Whether emitted events go anywhere (lets a caller skip building an event).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues `e` for delivery. Never waits and never fails: when the buffer is full (the sink
    /// is slow or down) the event is dropped and counted. Events of rooms with
    /// `[rooms.event_stream] enabled = false` are ignored.
    pub fn emit(&self, e: Event) {
        if self.inner.is_some() {
            self.emit_at(e, clock::now());
        }
    }

    /// [`Self::emit`] for an event that happened at `at` (a request's own clock reading: the
    /// request path reads the clock once).
    pub fn emit_at(&self, e: Event, at: UnixMillis) {
        let Some(inner) = &self.inner else { return };
        if !inner.rooms.is_empty() && matches!(inner.rooms.get(&*e.room), Some(Route::Off)) {
            return;
        }
        let stamped = Stamped { at, event: e };
        match inner.buf.push(stamped) {
            Push::Queued => {}
            Push::Full => inner.dropped_full.inc(),
            Push::Closed => inner.dropped_shutdown.inc(),
        }
    }

    /// One `room_state_changed` event per live setting that differs between `before` and
    /// `after` (the admin PATCH, the origin's sold-out command).
    pub fn emit_room_changes(&self, room: &str, before: &Overrides, after: &Overrides, by: &Actor) {
        if !self.is_enabled() {
            return;
        }
        for kind in room_changes(before, after, by) {
            self.emit(Event::new(room, kind));
        }
    }
}

fn sink_name(s: &EventSink) -> &'static str {
    match s {
        EventSink::Off => "off",
        EventSink::Redis { .. } => "redis",
        EventSink::File { .. } => "file",
    }
}

/// RFC 3339 in UTC with milliseconds: `2026-11-27T18:00:01.234Z`.
pub fn rfc3339(at: UnixMillis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at.0)).to_string()
}

/// The JSON text of one event, exactly as the sinks write it.
pub fn to_json(e: &Event, id: EventId, at: UnixMillis, node: &str) -> String {
    // Only ASCII digits, escaped JSON and serde_json's output go in.
    let mut out = Vec::with_capacity(256);
    Encoder::new(node).write(&mut out, e, id, at);
    String::from_utf8(out).unwrap_or_default()
}

/// Writes the JSON envelope (see `docs/events.md`):
/// `{"v":1,"id":…,"time":…,"unix_ms":…,"node":…,"room":…,"ticket":…,"kind":…, <kind's fields>}`.
///
/// Written by hand rather than by a derived `Serialize` with `#[serde(flatten)]`: the delivery
/// task serializes every event, and this is several times cheaper (no intermediate map, the
/// node name escaped once, the time's date part formatted once a second). The kind and its
/// fields still go through serde, so the schema has one definition.
#[derive(Debug)]
pub struct Encoder {
    /// `"node":"<escaped name>",`
    node_field: String,
    /// The second `second_text` was formatted for.
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    second_text: String,
}

impl Encoder {
    /// An encoder for the events of node `node`.
    pub fn new(node: &str) -> Self {
        let quoted = serde_json::to_string(node).unwrap_or_else(|_| "\"\"".to_owned());
        Self {
            node_field: format!("\"node\":{quoted},"),
            second: None,
            second_text: String::new(),
        }
    }

    /// Appends the event's JSON text to `out`.
    pub fn write(&mut self, out: &mut Vec<u8>, e: &Event, id: EventId, at: UnixMillis) {
        let secs = at.0 / 1000;
        if self.second != Some(secs) {
            let t = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
            self.second_text = t.to_string();
            self.second_text.truncate(19);
            self.second = Some(secs);
        }
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b"{\"v\":");
        out.extend_from_slice(num.format(SCHEMA_VERSION).as_bytes());
        out.extend_from_slice(b",\"id\":\"");
        out.extend_from_slice(&id.encode());
        out.extend_from_slice(b"\",\"time\":\"");
        out.extend_from_slice(self.second_text.as_bytes());
        let ms = at.0 % 1000;
        out.extend_from_slice(&[
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
            b'"',
            b',',
        ]);
        out.extend_from_slice(b"\"unix_ms\":");
        out.extend_from_slice(num.format(at.0).as_bytes());
        out.push(b',');
        out.extend_from_slice(self.node_field.as_bytes());
        out.extend_from_slice(b"\"room\":");
        if e.room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            // A configured room id (`a-z0-9-_`): nothing to escape.
            out.push(b'"');
            out.extend_from_slice(e.room.as_bytes());
            out.push(b'"');
        } else {
            // Strings into a Vec cannot fail to serialize.
            let _ = serde_json::to_writer(&mut *out, &*e.room);
        }
        out.extend_from_slice(b",\"ticket\":");
        match e.ticket {
            Some(t) => out.extend_from_slice(num.format(t).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b',');
        // The two kinds that come with every shopper, written directly (the same text serde
        // writes: `kinds_written_directly_match_serde` checks).
        match &e.kind {
            EventKind::TicketIssued { serving } => {
                out.extend_from_slice(b"\"kind\":\"ticket_issued\",\"serving\":");
                out.extend_from_slice(num.format(*serving).as_bytes());
                out.push(b'}');
                return;
            }
            EventKind::Admitted { waited_ms } => {
                out.extend_from_slice(b"\"kind\":\"admitted\",\"waited_ms\":");
                out.extend_from_slice(num.format(*waited_ms).as_bytes());
                out.push(b'}');
                return;
            }
            _ => {}
        }
        // The kind serializes as an object, `{"kind":"…",…}`: its members continue ours.
        let start = out.len();
        let _ = serde_json::to_writer(&mut *out, &e.kind);
        if out.get(start) == Some(&b'{') {
            out.remove(start);
        } else {
            // Not an object (cannot happen with the derived impl): keep the JSON valid.
            out.truncate(start);
            out.extend_from_slice(b"\"kind\":null}");
        }
    }
}

/// The delivery loop's own state: events taken from the buffer, the id generator, the encoder.
#[derive(Debug)]
struct Work {
    taken: Vec<Stamped>,
    ids: id::IdGen,
    enc: Encoder,
}

/// The background service that drains the buffer into the sink.
#[derive(Debug)]
pub struct EventsService {
    buf: Arc<Buffer<Stamped>>,
    rooms: Routes,
    started: AtomicBool,
    sink: EventSink,
    batch: usize,
    linger: Duration,
    node: String,
    /// `flashgate_events_sent_total` by kind, in [`EventKind::NAMES`] order.
    sent: [IntCounter; EventKind::NAMES.len()],
    dropped_rejected: IntCounter,
    dropped_shutdown: IntCounter,
    sink_errors: IntCounter,
    /// `flashgate_events_pending`: what waits for the sink (the delivery lag an operator sees).
    pending: IntGauge,
}

#[async_trait]
impl BackgroundService for EventsService {
    async fn start(&self, shutdown: ShutdownWatch) {
        // Started once per process; a second start would deliver out of order.
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        self.run(shutdown).await;
    }
}

impl EventsService {
    /// Tops `batch` up with events already buffered (never waits), each given its id and
    /// written as JSON straight into the batch's text, framed for the sink. Serializing happens
    /// here, after the buffer's lock is released.
    fn fill(&self, w: &mut Work, batch: &mut Batch) {
        self.buf
            .take(self.batch.saturating_sub(batch.len()), &mut w.taken);
        for Stamped { at, event } in w.taken.drain(..) {
            // Ids are given in emit order (one buffer, one task): unique, led by the millisecond.
            let id = w.ids.next(at);
            let stream = if self.rooms.is_empty() {
                None
            } else {
                match self.rooms.get(&*event.room) {
                    Some(Route::Stream(s)) => Some(s.clone()),
                    _ => None,
                }
            };
            batch.push(event, stream, |text, e| w.enc.write(text, e, id, at));
        }
    }

    /// Publishes how many events wait for the sink (once per delivery attempt: one lock).
    fn show_pending(&self, batch: &Batch) {
        self.pending.set((self.buf.len() + batch.len()) as i64);
    }

    /// Counts what the sink settled and keeps only what must be retried.
    fn settle(&self, batch: &mut Batch) {
        let mut sent = [0u64; EventKind::NAMES.len()];
        let mut rejected = 0;
        batch.settle(|l| match l.state {
            Delivery::Sent => sent[l.kind] += 1,
            _ => rejected += 1,
        });
        for (c, n) in self.sent.iter().zip(sent) {
            if n > 0 {
                c.inc_by(n);
            }
        }
        if rejected > 0 {
            self.dropped_rejected.inc_by(rejected);
        }
    }

    async fn run(&self, mut shutdown: ShutdownWatch) {
        let mut sink = Sink::new(&self.sink);
        let mut batch = Batch::new(sink.layout(), self.batch);
        let mut w = Work {
            taken: Vec::with_capacity(self.batch),
            ids: id::IdGen::new(),
            enc: Encoder::new(&self.node),
        };
        let mut backoff = BACKOFF_MIN;
        let mut failing = false;
        loop {
            if batch.is_empty() {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = self.buf.ready() => {}
                }
            }
            self.fill(&mut w, &mut batch);
            self.show_pending(&batch);
            let result = sink.send(&mut batch, sink::RESPONSE_TIMEOUT);
            self.settle(&mut batch);
            self.show_pending(&batch);
            let pause = match result {
                Ok(()) => {
                    if failing {
                        tracing::info!(sink = sink_name(&self.sink), "event sink reachable again");
                        failing = false;
                    }
                    backoff = BACKOFF_MIN;
                    // Less than a batch waiting: give it a moment to become one.
                    (self.buf.len() < self.batch && !self.linger.is_zero()).then_some(self.linger)
                }
                Err(e) => {
                    self.sink_errors.inc();
                    if !failing {
                        tracing::warn!(
                            sink = sink_name(&self.sink),
                            error = %e,
                            "event sink failing; buffering and retrying (full buffer drops events)"
                        );
                        failing = true;
                    } else {
                        tracing::debug!(error = %e, "event sink still failing");
                    }
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    Some(wait)
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
        self.finish(sink, batch, w).await;
    }

    /// Shutdown: refuse new events, deliver what is buffered for at most
    /// [`FLUSH_ON_SHUTDOWN`], count the rest as dropped.
    async fn finish(&self, mut sink: Sink, mut batch: Batch, mut w: Work) {
        self.buf.close();
        let deadline = Instant::now() + FLUSH_ON_SHUTDOWN;
        loop {
            self.fill(&mut w, &mut batch);
            let left = deadline.saturating_duration_since(Instant::now());
            if batch.is_empty() || left.is_zero() {
                break;
            }
            let ok = sink.send(&mut batch, left).is_ok();
            self.settle(&mut batch);
            if !ok {
                break;
            }
        }
        let lost = (batch.len() + self.buf.len()) as u64;
        if lost > 0 {
            tracing::warn!(lost, "events not delivered at shutdown");
            self.dropped_shutdown.inc_by(lost);
        }
        self.pending.set(0);
    }
}
