//! The queue/admission event stream: ticket issued, admitted, session ended, abandoned,
//! challenge failed, room state changed, feedback — published to Redis Streams or a JSON-lines
//! file for the shop's own e-mail, analytics and inventory jobs. Schema and examples:
//! `docs/events.md`; the types: [`schema`].
//!
//! ```text
//!  request path                         background service ("events")
//!  ───────────────                      ───────────────────────────────
//!  Events::emit(Event) ──try_send──▶ [bounded buffer] ──recv──▶ batch ──▶ XADD … (pipelined)
//!     never awaits;                     `[events] buffer`          ≤ `batch`   or file append
//!     full ⇒ drop + count                                          retry with backoff
//! ```
//!
//! Guarantees and failure modes (each has a test, in `proxy/tests/events.rs` or
//! `proxy/src/events/tests.rs`):
//!
//! - **Never on the critical path.** [`Events::emit`] is a synchronous function: it stamps the
//!   event (an atomic increment for the id, one clock read) and `try_send`s it into a bounded
//!   channel. It cannot wait for the sink. With the sink off, it is one branch.
//! - **Bounded memory.** At most `buffer` events wait in memory, plus one batch in flight.
//!   When the buffer is full the new event is dropped and counted in
//!   `flashgate_events_dropped_total{reason="buffer_full"}`.
//! - **At least once while the sink is healthy.** A batch is removed only when the sink
//!   confirmed it (Redis replied with an entry id; the file write returned). A failed batch is
//!   retried with exponential backoff (50 ms doubling to 5 s) for as long as it takes; new events
//!   keep buffering meanwhile. A batch that failed half way is sent again, so consumers may see
//!   an event twice: deduplicate by `id`.
//! - **When the sink is down for long**: the batch in flight is kept and retried, the buffer
//!   fills in `buffer / event rate` seconds, and from then on every new event is dropped and
//!   counted; `flashgate_events_sink_errors_total` grows with every failed attempt. When the
//!   sink comes back, the kept batch and the buffer are delivered (oldest first) and no more are
//!   dropped. Requests and admissions are unaffected throughout.
//! - **Rejected events**: an entry Redis refuses for good (e.g. `WRONGTYPE` because the key is
//!   not a stream, `NOPERM`) is dropped and counted as `reason="rejected"`, without holding
//!   back the others.
//! - **Shutdown**: the service stops taking new events, spends at most [`FLUSH_ON_SHUTDOWN`]
//!   delivering what is buffered, and counts the rest as `reason="shutdown"`.
//! - **Order**: events leave in the order they were emitted on this node (one channel, one
//!   consumer), so events about one ticket are in order as long as one node emits them. Events
//!   from several nodes interleave by arrival; `unix_ms` and `id` sort by time.
//!
//! Configuration (`[events]`, `[rooms.event_stream]`) is read at start; changing it needs a
//! restart (a reload keeps the running stream).

pub mod id;
pub mod schema;
mod sink;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntCounter;
use serde::Serialize;
use tokio::sync::mpsc::{self, error::TrySendError};
use waitroom::{Overrides, UnixMillis};

use crate::clock;
use crate::config::{EventSink, EventsConfig, RoomEvents};
use crate::metrics::Metrics;

pub use id::EventId;
pub use schema::{
    clean_text, parse_feedback, room_changes, AbandonReason, Actor, ChallengeFailure, Comment,
    EndReason, Event, EventKind, FeedbackError, Rating, Setting, SettingValue, Text,
    MAX_FEEDBACK_BODY, SCHEMA_VERSION,
};

use sink::{Delivery, Record, Sink};

/// How long the service keeps delivering after shutdown is signalled.
pub const FLUSH_ON_SHUTDOWN: Duration = Duration::from_secs(2);

/// First and longest wait between attempts while the sink fails.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// An event with what the module adds: id, time, and the room's stream (if not the default).
#[derive(Debug)]
struct Stamped {
    id: EventId,
    at: UnixMillis,
    stream: Option<Arc<str>>,
    event: Event,
}

#[derive(Debug)]
enum Route {
    Off,
    Stream(Arc<str>),
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Stamped>,
    ids: id::IdGen,
    rooms: HashMap<String, Route>,
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
        let (tx, rx) = mpsc::channel(cfg.buffer.get());
        let dropped = |reason: &str| metrics.events_dropped.with_label_values(&[reason]);
        let rooms = cfg
            .rooms
            .iter()
            .map(|(room, r)| {
                let route = match r {
                    RoomEvents::Off => Route::Off,
                    RoomEvents::Stream(s) => Route::Stream(Arc::from(s.as_str())),
                };
                (room.clone(), route)
            })
            .collect();
        let inner = Inner {
            tx,
            ids: id::IdGen::new(),
            rooms,
            dropped_full: dropped("buffer_full"),
            dropped_shutdown: dropped("shutdown"),
        };
        let sent = EventKind::NAMES
            .iter()
            .map(|k| (*k, metrics.events_sent.with_label_values(&[*k])))
            .collect();
        let svc = EventsService {
            rx: Mutex::new(Some(rx)),
            sink: cfg.sink.clone(),
            batch: cfg.batch.get(),
            node: cfg.node.clone(),
            sent,
            dropped_rejected: dropped("rejected"),
            dropped_shutdown: inner.dropped_shutdown.clone(),
            sink_errors: metrics
                .events_sink_errors
                .with_label_values(&[sink_name(&cfg.sink)]),
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
        let Some(inner) = &self.inner else { return };
        let stream = if inner.rooms.is_empty() {
            None
        } else {
            match inner.rooms.get(e.room.as_str()) {
                Some(Route::Off) => return,
                Some(Route::Stream(s)) => Some(s.clone()),
                None => None,
            }
        };
        let at = clock::now();
        let stamped = Stamped {
            id: inner.ids.next(at),
            at,
            stream,
            event: e,
        };
        match inner.tx.try_send(stamped) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => inner.dropped_full.inc(),
            Err(TrySendError::Closed(_)) => inner.dropped_shutdown.inc(),
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

/// The JSON envelope (see `docs/events.md`).
#[derive(Serialize)]
struct Wire<'a> {
    v: u8,
    id: &'a str,
    time: &'a str,
    unix_ms: u64,
    node: &'a str,
    room: &'a str,
    ticket: Option<u64>,
    #[serde(flatten)]
    kind: &'a EventKind,
}

/// RFC 3339 in UTC with milliseconds: `2026-11-27T18:00:01.234Z`.
pub fn rfc3339(at: UnixMillis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at.0)).to_string()
}

/// The JSON text of one event, exactly as the sinks write it.
pub fn to_json(e: &Event, id: EventId, at: UnixMillis, node: &str) -> String {
    let id = id.to_string();
    let time = rfc3339(at);
    let wire = Wire {
        v: SCHEMA_VERSION,
        id: &id,
        time: &time,
        unix_ms: at.0,
        node,
        room: &e.room,
        ticket: e.ticket,
        kind: &e.kind,
    };
    // Plain structs, strings and numbers: serialization cannot fail.
    serde_json::to_string(&wire).unwrap_or_default()
}

/// The background service that drains the buffer into the sink.
#[derive(Debug)]
pub struct EventsService {
    rx: Mutex<Option<mpsc::Receiver<Stamped>>>,
    sink: EventSink,
    batch: usize,
    node: String,
    sent: HashMap<&'static str, IntCounter>,
    dropped_rejected: IntCounter,
    dropped_shutdown: IntCounter,
    sink_errors: IntCounter,
}

#[async_trait]
impl BackgroundService for EventsService {
    async fn start(&self, shutdown: ShutdownWatch) {
        // Started once per process; a second start has nothing to drain.
        let Some(rx) = self.rx.lock().take() else {
            return;
        };
        self.run(rx, shutdown).await;
    }
}

impl EventsService {
    fn record(&self, s: Stamped) -> Record {
        Record {
            json: to_json(&s.event, s.id, s.at, &self.node),
            kind: s.event.kind.name(),
            room: s.event.room,
            stream: s.stream,
            state: Delivery::Pending,
        }
    }

    /// Tops `batch` up with events already buffered (never waits).
    fn fill(&self, rx: &mut mpsc::Receiver<Stamped>, batch: &mut Vec<Record>) {
        while batch.len() < self.batch {
            match rx.try_recv() {
                Ok(s) => batch.push(self.record(s)),
                Err(_) => break,
            }
        }
    }

    /// Counts what the sink settled and keeps only what must be retried.
    fn settle(&self, batch: &mut Vec<Record>) {
        batch.retain(|r| match r.state {
            Delivery::Sent => {
                if let Some(c) = self.sent.get(r.kind) {
                    c.inc();
                }
                false
            }
            Delivery::Rejected => {
                self.dropped_rejected.inc();
                false
            }
            Delivery::Pending => true,
        });
    }

    async fn run(&self, mut rx: mpsc::Receiver<Stamped>, mut shutdown: ShutdownWatch) {
        let mut sink = Sink::new(&self.sink);
        let mut batch: Vec<Record> = Vec::with_capacity(self.batch);
        let mut backoff = BACKOFF_MIN;
        let mut failing = false;
        loop {
            if batch.is_empty() {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    got = rx.recv() => match got {
                        Some(s) => batch.push(self.record(s)),
                        None => break,
                    },
                }
            }
            self.fill(&mut rx, &mut batch);
            let result = sink.send(&mut batch).await;
            self.settle(&mut batch);
            match result {
                Ok(()) => {
                    if failing {
                        tracing::info!(sink = sink_name(&self.sink), "event sink reachable again");
                        failing = false;
                    }
                    backoff = BACKOFF_MIN;
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
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.finish(rx, sink, batch).await;
    }

    /// Shutdown: refuse new events, deliver what is buffered for at most
    /// [`FLUSH_ON_SHUTDOWN`], count the rest as dropped.
    async fn finish(
        &self,
        mut rx: mpsc::Receiver<Stamped>,
        mut sink: Sink,
        mut batch: Vec<Record>,
    ) {
        rx.close();
        let deadline = Instant::now() + FLUSH_ON_SHUTDOWN;
        loop {
            self.fill(&mut rx, &mut batch);
            let left = deadline.saturating_duration_since(Instant::now());
            if batch.is_empty() || left.is_zero() {
                break;
            }
            let ok = matches!(
                tokio::time::timeout(left, sink.send(&mut batch)).await,
                Ok(Ok(()))
            );
            self.settle(&mut batch);
            if !ok {
                break;
            }
        }
        let mut lost = batch.len() as u64;
        while rx.try_recv().is_ok() {
            lost += 1;
        }
        if lost > 0 {
            tracing::warn!(lost, "events not delivered at shutdown");
            self.dropped_shutdown.inc_by(lost);
        }
    }
}
