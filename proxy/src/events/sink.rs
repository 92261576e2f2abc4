//! The sinks (the Redis one here, the file one in `file_sink`). Each takes a batch of serialized events and marks every record `Sent`,
//! `Rejected` (refused for good: dropped and counted) or leaves it `Pending` (retry later).
//! `send` returns `Err` when something is left to retry, so the pump backs off.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::file_sink::{FileCfg, FileSink};
use super::resp::{self, ConnError, Frame};
use super::settings::EventSink;

/// Connecting to Redis gives up after this long (then the batch is retried with backoff).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A batch's pipeline gives up after this long (reading or writing).
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    Pending,
    Sent,
    Rejected,
}

/// The events of one delivery, serialized as their sink writes them, back to back in one
/// buffer, and per event what the sinks and the counters need. The encoder writes each event's
/// JSON straight into `text`, between the framing its sink needs ([`Layout`]), so the sink
/// writes `text` as it is: an event's text is copied once, into the buffer the sink writes
/// from. `text` and `lines` keep their capacity from batch to batch.
#[derive(Debug)]
pub(super) struct Batch {
    pub text: Vec<u8>,
    pub lines: Vec<Line>,
    layout: Layout,
}

/// How a [`Batch`] frames each event's JSON text.
#[derive(Debug)]
pub(super) enum Layout {
    /// JSON lines, each ending in `\n` (the file sink).
    Lines,
    /// One `XADD <stream> * event <json> kind <kind> room <room>` in RESP per event (the Redis
    /// sink), to the room's own stream or this one.
    Xadd(Xadds),
}

/// One event of a [`Batch`].
#[derive(Debug)]
pub(super) struct Line {
    /// Where the event's framed text ends in `text`; it starts where the previous one ends.
    pub(super) end: usize,
    /// The kind's index in [`EventKind::NAMES`](super::EventKind::NAMES).
    pub kind: usize,
    /// The room's own stream key (Redis), if it has one.
    pub stream: Option<Arc<str>>,
    pub state: Delivery,
}

impl Batch {
    pub fn new(layout: Layout, lines: usize) -> Self {
        Self {
            text: Vec::with_capacity(lines * 256),
            lines: Vec::with_capacity(lines),
            layout,
        }
    }

    /// A batch of JSON lines.
    #[cfg(test)]
    pub fn lines() -> Self {
        Self::new(Layout::Lines, 0)
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Adds `event`, going to `stream` (its room's own, if it has one): `write` appends its
    /// JSON text (no newline) to the buffer it is given.
    pub fn push(
        &mut self,
        event: super::Event,
        stream: Option<Arc<str>>,
        write: impl FnOnce(&mut Vec<u8>, &super::Event),
    ) {
        let kind = event.kind.index();
        let text = &mut self.text;
        match &mut self.layout {
            Layout::Lines => {
                write(text, &event);
                text.push(b'\n');
            }
            Layout::Xadd(x) => {
                let shape = x.shape(kind, &event.room, &stream);
                text.extend_from_slice(&shape.head);
                // The text's length goes before it: room for the usual three digits, moved
                // over for the rare text shorter than 100 bytes or longer than 999.
                let digits = text.len() + 1;
                text.extend_from_slice(b"$000\r\n");
                let start = text.len();
                write(text, &event);
                let mut len = itoa::Buffer::new();
                let len = len.format(text.len() - start).as_bytes();
                if len.len() == 3 {
                    text[digits..digits + 3].copy_from_slice(len);
                } else {
                    text.splice(digits..digits + 3, len.iter().copied());
                }
                text.extend_from_slice(&shape.tail);
            }
        }
        self.lines.push(Line {
            end: self.text.len(),
            kind,
            stream,
            state: Delivery::Pending,
        });
    }

    /// Line `i` as its sink writes it (a JSON line with its `\n`, or an `XADD`).
    #[cfg(test)]
    pub fn framed(&self, i: usize) -> &[u8] {
        let start = i.checked_sub(1).map_or(0, |p| self.lines[p].end);
        &self.text[start..self.lines[i].end]
    }

    /// Removes the lines the sink settled (sent or rejected), passing each to `settled`; the
    /// pending ones stay, in order. Usually every line was sent and this only empties the
    /// batch; after a partial failure the pending lines' text is moved together.
    pub fn settle(&mut self, mut settled: impl FnMut(&Line)) {
        let (mut start, mut kept_bytes, mut kept) = (0, 0, 0);
        for i in 0..self.lines.len() {
            let end = self.lines[i].end;
            if self.lines[i].state == Delivery::Pending {
                if start != kept_bytes {
                    self.text.copy_within(start..end, kept_bytes);
                }
                kept_bytes += end - start;
                self.lines[i].end = kept_bytes;
                // Lines before `i` and from `kept` on are settled: the order of pending lines stays.
                self.lines.swap(kept, i);
                kept += 1;
            } else {
                settled(&self.lines[i]);
            }
            start = end;
        }
        self.lines.truncate(kept);
        self.text.truncate(kept_bytes);
    }
}

/// The framing of the Redis sink's `XADD`s, kept from batch to batch.
#[derive(Debug)]
pub(super) struct Xadds {
    /// The stream of rooms without one of their own.
    stream: String,
    /// The framing by stream, kind and room, and the one used last.
    shapes: Vec<Shape>,
    last: usize,
}

/// The framing of the `XADD`s of one stream, kind and room: the parts before and after the
/// event's length and text ([`Frame::xadd_parts`]), framed once rather than per entry.
#[derive(Debug)]
struct Shape {
    stream: Option<Arc<str>>,
    kind: usize,
    room: Arc<str>,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Shape {
    /// Beyond this many (rooms × kinds, in practice a few dozen) the cache starts afresh (in
    /// unit tests after a few, so that they cover it).
    const MAX_KEPT: usize = if cfg!(test) { 3 } else { 1024 };
}

impl Xadds {
    pub fn new(stream: String) -> Self {
        Self {
            stream,
            shapes: Vec::new(),
            last: 0,
        }
    }

    fn shape(&mut self, kind: usize, room: &Arc<str>, stream: &Option<Arc<str>>) -> &Shape {
        // `Arc<str>`'s `==` compares the pointers first: a room's events share its id.
        let hit = |s: &Shape| s.kind == kind && s.room == *room && s.stream == *stream;
        if !self.shapes.get(self.last).is_some_and(hit) {
            self.last = match self.shapes.iter().position(hit) {
                Some(at) => at,
                None => {
                    if self.shapes.len() >= Shape::MAX_KEPT {
                        self.shapes.clear();
                    }
                    let key = stream.as_deref().unwrap_or(&self.stream);
                    let (head, tail) = Frame::xadd_parts(key, super::EventKind::NAMES[kind], room);
                    self.shapes.push(Shape {
                        stream: stream.clone(),
                        kind,
                        room: room.clone(),
                        head,
                        tail,
                    });
                    self.shapes.len() - 1
                }
            };
        }
        &self.shapes[self.last]
    }
}

#[derive(Debug)]
pub(super) enum Sink {
    Off,
    /// Boxed: the connection and buffers are large, and there is one sink per process.
    Redis(Box<RedisSink>),
    File(FileSink),
}

impl Sink {
    pub fn new(cfg: &EventSink) -> Self {
        match cfg {
            EventSink::Off => Self::Off,
            EventSink::Redis {
                url,
                stream,
                maxlen,
                tls,
            } => Self::Redis(Box::new(
                RedisSink::new(url.clone(), stream.clone(), maxlen.get()).with_tls(tls.clone()),
            )),
            EventSink::File {
                path,
                max_bytes,
                keep_files,
            } => Self::File(FileSink::new(FileCfg {
                path: path.clone(),
                max_bytes: max_bytes.get(),
                keep: *keep_files,
            })),
        }
    }

    /// How this sink's batches frame their events.
    pub fn layout(&self) -> Layout {
        match self {
            Self::Redis(s) => Layout::Xadd(Xadds::new(s.stream.clone())),
            Self::Off | Self::File(_) => Layout::Lines,
        }
    }

    /// Delivers the batch's pending lines, marking each `Sent` or `Rejected` (or leaving it
    /// pending, with `Err`). Blocks the calling thread (the events service's own) for at most
    /// about `timeout` waiting for Redis; a file write is not bounded.
    pub fn send(&mut self, batch: &mut Batch, timeout: Duration) -> Result<(), SinkError> {
        match self {
            Self::Off => {
                for r in &mut batch.lines {
                    r.state = Delivery::Rejected;
                }
                Ok(())
            }
            Self::Redis(s) => s.send(batch, timeout),
            Self::File(s) => s.send(batch),
        }
    }
}

/// Why a batch was not delivered (its pending lines are tried again).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The Redis connection failed; the next attempt opens a new one.
    #[error(transparent)]
    Redis(#[from] ConnError),
    /// Redis said to try again later (`LOADING`, `READONLY`, …): its error reply's text.
    #[error("{0}")]
    TryLater(String),
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One blocking connection ([`resp::Conn`]) on the events service's own thread, opened lazily
/// and dropped (re-opened on the next attempt) after any failure other than a refusal.
///
/// A batch goes out as one pipeline, written with one `write(2)`: an `XADD` per event, framed
/// in the batch as the event was serialized ([`Layout::Xadd`]), then one
/// `XTRIM <stream> MAXLEN ~ <maxlen>` per stream of the batch, added for the write; the replies
/// (an entry id per `XADD`, a refusal's text, the count trimmed) are scanned where they were
/// read. (Serializing into a buffer of JSON and framing the `XADD`s from it at send time copied
/// every event's text once more: 8.8 % of the events thread's CPU in `perf`.)
///
/// Earlier versions: a pipeline built with redis-rs (a `Cmd` per event, a parsed `Value` per
/// reply, the multiplexed async connection) made the events thread 7.8 % of a saturated node's
/// CPU; one `EVALSHA` of a Lua script that ran the `XADD`s on the server brought the node down
/// to 2.1–2.3 %, but cost Redis 4–5 µs per event (the Lua calls) and held it for the whole
/// batch (≈ 1.3 ms for 256 events), which every other client of that Redis waited out. Plain
/// `XADD`s cost Redis about half as much (2.5–3.4 µs per event in the benchmark, against
/// 5.1–6.4 µs), and Redis serves other clients between the 16 KB parts it reads of a pipeline
/// (`loadtests/results/2026-11-28T1430-events.md`; 0.8 µs on a faster machine:
/// `…T1900-events.md`). Blocking is fine here for the reason the
/// file sink's is: the service's runtime is its own and nothing else runs on it; a slow Redis
/// holds up only delivery (reads and writes time out after [`RESPONSE_TIMEOUT`]).
pub(super) struct RedisSink {
    url: String,
    /// The CA and client certificate for a `rediss://` url.
    tls: Option<crate::store::RedisTls>,
    stream: String,
    maxlen: u64,
    conn: Option<resp::Conn>,
    /// The streams of the batch being sent, in order of first appearance.
    streams: Vec<Option<Arc<str>>>,
    /// Whether a refused `XTRIM` has been logged (once per connection).
    trim_warned: bool,
    pace: Pace,
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("stream", &self.stream)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

/// How long Redis takes to answer a batch, per event, so the sink can sleep until the replies
/// are all there and read them without blocking.
///
/// Redis reads a long pipeline 16 KB at a time and answers each part before it reads the next,
/// so a reader that blocks at once is woken for every part: four per 256-event batch, each by
/// the other core (Redis's). Each wake-up takes the node's core from its worker thread and
/// costs the worker more than its own time.
///
/// The sleep aims just past the expected time: when the replies were all there on waking, the
/// next sleep is a little shorter ([`Pace::SHRINK`]); when the reader still had to wait, the
/// estimate becomes the time measured, plus a tenth ([`Pace::MARGIN`]). Batches smaller than
/// [`Pace::MIN_EVENTS`] are not paced (they are cheap, and the round trip dominates them); no
/// sleep is longer than [`Pace::MAX_WAIT`].
#[derive(Debug, Default)]
pub(super) struct Pace {
    ns_per_event: f64,
}

impl Pace {
    pub const MIN_EVENTS: usize = 64;
    pub const MAX_WAIT: Duration = Duration::from_millis(10);
    const MARGIN: f64 = 1.1;
    const SHRINK: f64 = 0.98;
    /// Reading the replies took longer than this after the sleep: the reader blocked.
    const BLOCKED: Duration = Duration::from_micros(50);

    pub fn wait(&self, events: usize) -> Option<Duration> {
        if events < Self::MIN_EVENTS || self.ns_per_event <= 0.0 {
            return None;
        }
        let ns = self.ns_per_event * events as f64;
        Some(Duration::from_nanos(ns as u64).min(Self::MAX_WAIT))
    }

    /// A batch of `events` was answered `took` after it was written, the last `reading` of it
    /// spent reading after the sleep.
    pub fn record(&mut self, events: usize, took: Duration, reading: Duration) {
        if events < Self::MIN_EVENTS {
            return;
        }
        if self.ns_per_event <= 0.0 || reading > Self::BLOCKED {
            self.ns_per_event = took.as_nanos() as f64 / events as f64 * Self::MARGIN;
        } else {
            self.ns_per_event *= Self::SHRINK;
        }
    }
}

/// Whether Redis may accept an entry it refused with this error later (the codes redis-rs
/// retries); any other refusal is for good.
pub(super) fn transient(err: &str) -> bool {
    let code = err.split_whitespace().next().unwrap_or("");
    matches!(
        code,
        "TRYAGAIN"
            | "MASTERDOWN"
            | "CLUSTERDOWN"
            | "LOADING"
            | "READONLY"
            | "MOVED"
            | "ASK"
            | "BUSY"
    )
}

impl RedisSink {
    pub(super) fn new(url: String, stream: String, maxlen: u64) -> Self {
        Self {
            url,
            tls: None,
            stream,
            maxlen,
            conn: None,
            streams: Vec::new(),
            trim_warned: false,
            pace: Pace::default(),
        }
    }

    /// Trusts `tls`'s CA and presents its client certificate on a `rediss://` url.
    pub(super) fn with_tls(mut self, tls: Option<crate::store::RedisTls>) -> Self {
        self.tls = tls;
        self
    }

    /// The connection, opened if need be, with its timeouts set to `timeout` (at most
    /// [`RESPONSE_TIMEOUT`]).
    fn connect(&mut self, timeout: Duration) -> Result<(), ConnError> {
        let timeout = timeout.clamp(Duration::from_millis(1), RESPONSE_TIMEOUT);
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                self.trim_warned = false;
                self.conn.insert(resp::Conn::open(
                    &self.url,
                    timeout.min(CONNECT_TIMEOUT),
                    self.tls.as_ref(),
                )?)
            }
        };
        if let Err(e) = conn.set_timeout(timeout) {
            self.conn = None;
            return Err(e);
        }
        Ok(())
    }

    /// Notes the streams of the batch's entries and appends an `XTRIM` for each: the batch's
    /// text is then the whole pipeline. Returns where the `XADD`s end.
    fn add_trims(&mut self, batch: &mut Batch) -> usize {
        self.streams.clear();
        let mut last = None;
        for line in &batch.lines {
            if last != Some(&line.stream) {
                if !self.streams.contains(&line.stream) {
                    self.streams.push(line.stream.clone());
                }
                last = Some(&line.stream);
            }
        }
        let xadds = batch.text.len();
        let maxlen = itoa::Buffer::new().format(self.maxlen).to_owned();
        let mut f = Frame(&mut batch.text);
        for stream in &self.streams {
            let key = stream.as_deref().unwrap_or(&self.stream);
            f.command(&[b"XTRIM", key.as_bytes(), b"MAXLEN", b"~", maxlen.as_bytes()]);
        }
        xadds
    }

    /// The pipeline for `batch`, as it goes on the wire (for tests).
    #[cfg(test)]
    pub(super) fn pipeline(&mut self, batch: &mut Batch) -> Vec<u8> {
        let xadds = self.add_trims(batch);
        let bytes = batch.text.clone();
        batch.text.truncate(xadds);
        bytes
    }

    /// Sends the batch's entries (every one of them is pending: the service settles the batch
    /// after each attempt).
    fn send(&mut self, batch: &mut Batch, timeout: Duration) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        debug_assert!(batch.lines.iter().all(|l| l.state == Delivery::Pending));
        debug_assert!(matches!(batch.layout, Layout::Xadd(_)));
        self.connect(timeout)?;
        match self.exchange(batch) {
            Ok(None) => Ok(()),
            // Redis said to try again later (`LOADING`, `READONLY`, …): the connection is fine.
            Ok(Some(reply)) => Err(SinkError::TryLater(reply)),
            Err(e) => {
                // The connection is in doubt: the next attempt starts from a fresh one. Entries
                // whose reply did not come may have been added: they are sent again (at least
                // once).
                self.conn = None;
                Err(e.into())
            }
        }
    }

    /// Writes the framed pipeline and reads its replies, marking each line. `Ok(Some(_))` when
    /// Redis left a line pending for now, `Err` when the connection failed.
    fn exchange(&mut self, batch: &mut Batch) -> Result<Option<String>, ConnError> {
        let xadds = self.add_trims(batch);
        let Some(conn) = self.conn.as_mut() else {
            batch.text.truncate(xadds);
            return Err(ConnError::NotConnected);
        };
        let written = conn.write(&batch.text);
        batch.text.truncate(xadds);
        written?;
        let written = Instant::now();
        let events = batch.len();
        if let Some(wait) = self.pace.wait(events) {
            std::thread::sleep(wait);
        }
        let woke = Instant::now();
        let mut retry = None;
        let mut refused = None;
        let mut failed = None;
        for line in &mut batch.lines {
            match conn.reply() {
                Ok(Ok(())) => line.state = Delivery::Sent,
                Ok(Err(e)) if transient(&e) => {
                    retry.get_or_insert(e);
                }
                Ok(Err(e)) => {
                    line.state = Delivery::Rejected;
                    refused.get_or_insert(e);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = refused {
            tracing::warn!(error = %e, "Redis refused event entries; dropped as rejected");
        }
        if let Some(e) = failed {
            return Err(e);
        }
        self.pace.record(events, written.elapsed(), woke.elapsed());
        for _ in 0..self.streams.len() {
            match conn.reply()? {
                Ok(()) => {}
                Err(e) if !self.trim_warned => {
                    tracing::warn!(
                        error = %e,
                        "Redis refused XTRIM: the event stream is not trimmed (the user needs XTRIM)"
                    );
                    self.trim_warned = true;
                }
                Err(_) => {}
            }
        }
        Ok(retry)
    }
}
