//! The two sinks. Each takes a batch of serialized events and marks every record `Sent`,
//! `Rejected` (refused for good: dropped and counted) or leaves it `Pending` (retry later).
//! `send` returns `Err` when something is left to retry, so the pump backs off.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redis::{RedisResult, RetryMethod};

use crate::config::EventSink;

/// Connecting to Redis gives up after this long (then the batch is retried with backoff).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A script call or pipeline gives up after this long (reading or writing).
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    Pending,
    Sent,
    Rejected,
}

/// The events of one delivery, serialized: their JSON lines back to back in one buffer (each
/// ending in `\n`, exactly as the file sink writes them), and per line what the sinks and the
/// counters need. The encoder writes straight into `text`, so a line is copied once, into the
/// buffer the sink writes from; `text` and `lines` keep their capacity from batch to batch.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub text: Vec<u8>,
    pub lines: Vec<Line>,
}

/// One event of a [`Batch`].
#[derive(Debug)]
pub(super) struct Line {
    /// Where the line (with its `\n`) ends in `text`; it starts where the previous one ends.
    end: usize,
    /// The kind's index in [`EventKind::NAMES`](super::EventKind::NAMES).
    pub kind: usize,
    pub room: Arc<str>,
    /// The room's own stream key (Redis), if it has one.
    pub stream: Option<Arc<str>>,
    pub state: Delivery,
}

impl Line {
    pub fn kind_name(&self) -> &'static str {
        super::EventKind::NAMES[self.kind]
    }
}

impl Batch {
    pub fn with_capacity(lines: usize) -> Self {
        Self {
            text: Vec::with_capacity(lines * 256),
            lines: Vec::with_capacity(lines),
        }
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Ends the line written to `text` since the last one (it must hold no newline).
    pub fn end_line(&mut self, kind: usize, room: Arc<str>, stream: Option<Arc<str>>) {
        self.text.push(b'\n');
        self.lines.push(Line {
            end: self.text.len(),
            kind,
            room,
            stream,
            state: Delivery::Pending,
        });
    }

    /// The text of the lines `lines` (each with its newline).
    pub fn text_of(&self, lines: std::ops::Range<usize>) -> &[u8] {
        let start = lines.start.checked_sub(1).map_or(0, |p| self.lines[p].end);
        let end = lines.end.checked_sub(1).map_or(0, |l| self.lines[l].end);
        &self.text[start..end.max(start)]
    }

    /// Line `i`'s JSON text, without its newline.
    pub fn json(&self, i: usize) -> &[u8] {
        let start = i.checked_sub(1).map_or(0, |p| self.lines[p].end);
        &self.text[start..self.lines[i].end - 1]
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
            } => Self::Redis(Box::new(RedisSink {
                url: url.clone(),
                stream: stream.clone(),
                maxlen: maxlen.get(),
                conn: None,
                timeout: Duration::ZERO,
                script: redis::Script::new(ADD_SCRIPT),
                scripted: true,
                frame: Frame::default(),
                own: Vec::new(),
            })),
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

    /// Delivers the batch's pending lines, marking each `Sent` or `Rejected` (or leaving it
    /// pending, with `Err`). Blocks the calling thread (the events service's own) for at most
    /// about `timeout` waiting for Redis; a file write is not bounded.
    pub fn send(&mut self, batch: &mut Batch, timeout: Duration) -> Result<(), String> {
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

/// Adds a batch's entries to one stream: `KEYS[1]` the stream, `ARGV[1]` the `MAXLEN ~`
/// bound, `ARGV[2..4]` the entries' `event` (JSON), `kind` and `room` fields, one entry per
/// line (each `\n`-terminated; none of them holds a newline). Returns the refusals as a flat
/// array of (0-based entry index, error text); empty when every entry was added. Each `XADD`
/// runs under `pcall`, so a refused entry does not stop the others.
///
/// Three blobs rather than three arguments per entry: the batch's JSON lines are already one
/// buffer, sent as they are, and the node frames eight arguments instead of 3 × 256.
///
/// The stream is trimmed once per batch (`XTRIM MAXLEN ~` after the `XADD`s) rather than by
/// every `XADD`: three arguments fewer for Redis to take from Lua per entry, 10 % less of
/// Redis's CPU per event (4.80 → 4.33 µs, five alternating runs of 400 calls of 256 entries
/// against an idle Redis, `loadtests/results/2026-11-28T1300-events.md`). The stream may
/// hold up to one batch more than the bound between two calls.
const ADD_SCRIPT: &str = r"
local events, kinds, rooms = ARGV[2], ARGV[3], ARGV[4]
local failed = {}
local e, k, r, n = 1, 1, 1, 0
while e <= #events do
  local e2 = string.find(events, '\n', e, true)
  local k2 = string.find(kinds, '\n', k, true)
  local r2 = string.find(rooms, '\n', r, true)
  if not (e2 and k2 and r2) then
    return redis.error_reply('ERR flashgate: malformed event batch')
  end
  local res = redis.pcall('XADD', KEYS[1], '*',
    'event', string.sub(events, e, e2 - 1),
    'kind', string.sub(kinds, k, k2 - 1),
    'room', string.sub(rooms, r, r2 - 1))
  if type(res) == 'table' and res.err then
    failed[#failed + 1] = n
    failed[#failed + 1] = res.err
  end
  e, k, r, n = e2 + 1, k2 + 1, r2 + 1, n + 1
end
redis.pcall('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])
return failed
";

/// One plain (blocking) connection on the events service's own thread, opened lazily and
/// dropped (re-opened on the next attempt) after any failure other than a refusal.
///
/// A batch goes out as one `EVALSHA` of [`ADD_SCRIPT`] per stream (usually one): a single
/// command and a single reply, where a pipeline of one `XADD` per event had the node frame
/// every command, parse every reply and wake for each part of the replies as Redis streamed
/// them: the events thread used 7.8 % of a saturated node's CPU, with the script 2.9–3.2 %
/// through the multiplexed async connection and 2.1–2.3 % as it is now
/// (`loadtests/events-bench.sh 5 10 redis`; the file sink's: 1.8–2.8 %). A server that
/// refuses scripts (an ACL without `EVALSHA`/`EVAL`, scripting disabled) gets
/// pipelined `XADD`s instead, from then on.
///
/// The script call is framed here (RESP, [`Frame`]) and written with one `write(2)` from a
/// buffer kept between batches, on a blocking connection (redis-rs's `Connection`: it opens,
/// authenticates and selects the database from the URL, and parses the reply). Through the
/// multiplexed async connection the batch's text was copied three times before the socket
/// (into a `Cmd`, packed into a new `Vec`, into the connection task's write buffer) and crossed
/// two task hand-offs: `perf` put a sixth of the events thread's time in `memmove`. Blocking is
/// fine here for the reason the file sink's is: the service's runtime is its own, and nothing
/// else runs on it; a slow Redis holds up only delivery (read and write time out after
/// [`RESPONSE_TIMEOUT`]).
pub(super) struct RedisSink {
    url: String,
    stream: String,
    maxlen: u64,
    conn: Option<redis::Connection>,
    /// The read and write timeout set on `conn`.
    timeout: Duration,
    script: redis::Script,
    /// False once the server refused the script: pipelined `XADD`s from then on.
    scripted: bool,
    /// The script call being sent (kept for its capacity).
    frame: Frame,
    /// A group's JSON lines when a batch spans several streams (kept for its capacity).
    own: Vec<u8>,
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("stream", &self.stream)
            .field("connected", &self.conn.is_some())
            .field("scripted", &self.scripted)
            .finish_non_exhaustive()
    }
}

/// One script call: lines of the batch (by index), all for stream `key`.
#[derive(Debug, Clone)]
struct Call {
    key: Arc<str>,
    lines: Vec<usize>,
}

/// How a scripted attempt ended when it did not deliver.
enum ScriptError {
    /// The server does not run scripts for us: fall back to pipelines.
    Refused(String),
    /// Anything else: retry the batch later.
    Failed(String),
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

/// A command in RESP, the Redis protocol: `*<argc>\r\n` then each argument as a bulk string,
/// `$<len>\r\n<bytes>\r\n`.
#[derive(Debug, Default)]
pub(super) struct Frame {
    pub bytes: Vec<u8>,
}

impl Frame {
    /// Starts a command of `argc` arguments (after those already framed: a pipeline).
    pub fn start(&mut self, argc: usize) {
        self.bytes.push(b'*');
        self.bytes
            .extend_from_slice(itoa::Buffer::new().format(argc).as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
    }

    pub fn arg(&mut self, arg: &[u8]) {
        self.arg_from(arg.len(), |out| out.extend_from_slice(arg));
    }

    /// An argument of `len` bytes, written by `write` (which must write exactly `len`).
    pub fn arg_from(&mut self, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        self.bytes.push(b'$');
        self.bytes
            .extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
        let at = self.bytes.len();
        write(&mut self.bytes);
        debug_assert_eq!(self.bytes.len() - at, len, "argument length");
        self.bytes.extend_from_slice(b"\r\n");
    }

    /// Appends a script call of [`ADD_SCRIPT`]: `verb` (`EVALSHA` or `EVAL`) with `script` (its hash
    /// or text), for the lines `lines` whose JSON text is `events`, to stream `key`.
    pub fn script_call<'a>(
        &mut self,
        verb: &str,
        script: &str,
        key: &str,
        maxlen: u64,
        events: &[u8],
        lines: impl Iterator<Item = &'a Line> + Clone,
    ) {
        self.start(8);
        self.arg(verb.as_bytes());
        self.arg(script.as_bytes());
        self.arg(b"1");
        self.arg(key.as_bytes());
        self.arg(itoa::Buffer::new().format(maxlen).as_bytes());
        self.arg(events);
        let kinds = lines.clone().map(|l| l.kind_name().len() + 1).sum();
        self.arg_from(kinds, |out| {
            for l in lines.clone() {
                out.extend_from_slice(l.kind_name().as_bytes());
                out.push(b'\n');
            }
        });
        let rooms = lines.clone().map(|l| l.room.len() + 1).sum();
        self.arg_from(rooms, |out| {
            for l in lines {
                out.extend_from_slice(l.room.as_bytes());
                out.push(b'\n');
            }
        });
    }
}

impl RedisSink {
    /// The connection, opened if need be, with its timeouts set to `timeout` (at most
    /// [`RESPONSE_TIMEOUT`]).
    fn connect(&mut self, timeout: Duration) -> Result<(), String> {
        let timeout = timeout.clamp(Duration::from_millis(1), RESPONSE_TIMEOUT);
        if self.conn.is_none() {
            let client = redis::Client::open(self.url.as_str()).map_err(|e| e.to_string())?;
            let conn = client
                .get_connection_with_timeout(timeout.min(CONNECT_TIMEOUT))
                .map_err(|e| format!("connect: {e}"))?;
            self.conn = Some(conn);
            self.timeout = Duration::ZERO;
        }
        if self.timeout != timeout {
            if let Some(c) = &self.conn {
                c.set_read_timeout(Some(timeout))
                    .and_then(|()| c.set_write_timeout(Some(timeout)))
                    .map_err(|e| {
                        self.conn = None;
                        e.to_string()
                    })?;
            }
            self.timeout = timeout;
        }
        Ok(())
    }

    fn send(&mut self, batch: &mut Batch, timeout: Duration) -> Result<(), String> {
        let pending = |batch: &Batch| -> Vec<usize> {
            (0..batch.len())
                .filter(|&i| batch.lines[i].state == Delivery::Pending)
                .collect()
        };
        let todo = pending(batch);
        if todo.is_empty() {
            return Ok(());
        }
        self.connect(timeout)?;
        if self.scripted {
            match self.send_scripted(batch, &todo) {
                Ok(()) => return Ok(()),
                Err(ScriptError::Failed(e)) => return Err(e),
                Err(ScriptError::Refused(e)) => {
                    tracing::warn!(
                        error = %e,
                        "Redis refused the event script; sending pipelined XADDs from now on"
                    );
                    self.scripted = false;
                }
            }
        }
        // After a refusal, only what no earlier script call of this batch delivered.
        let todo = pending(batch);
        self.send_pipelined(batch, &todo)
    }

    /// The script calls for the lines `pending`: one per stream, in the order the streams first
    /// appear (entries of one stream keep their order). All are written at once and their
    /// replies read after; a call Redis does not know the script for (`NOSCRIPT`) is made again
    /// with `EVAL`.
    fn send_scripted(&mut self, batch: &mut Batch, pending: &[usize]) -> Result<(), ScriptError> {
        let mut streams: Vec<Option<Arc<str>>> = Vec::new();
        for &i in pending {
            let s = &batch.lines[i].stream;
            if !streams.contains(s) {
                streams.push(s.clone());
            }
        }
        let mut calls: Vec<Call> = Vec::new();
        for stream in &streams {
            let group: Vec<usize> = pending
                .iter()
                .copied()
                .filter(|&i| &batch.lines[i].stream == stream)
                .collect();
            calls.push(Call {
                key: stream
                    .clone()
                    .unwrap_or_else(|| self.stream.as_str().into()),
                lines: group,
            });
        }
        let sha = self.script.get_hash().to_owned();
        let (mut replies, mut broken) = self.call_scripts(batch, &calls, "EVALSHA", &sha);
        let no_script = redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);
        let unknown: Vec<usize> = (0..replies.len())
            .filter(|&c| matches!(&replies[c], Err(e) if e.kind() == no_script))
            .collect();
        if !unknown.is_empty() && broken.is_none() {
            let again: Vec<Call> = unknown.iter().map(|&c| calls[c].clone()).collect();
            let (answers, b) = self.call_scripts(batch, &again, "EVAL", ADD_SCRIPT);
            for (c, r) in unknown.iter().zip(answers) {
                replies[*c] = r;
            }
            broken = b;
        }
        let mut retry = None;
        let mut refused = None;
        // The server's refusal of the script itself (not of an entry): fall back to XADDs.
        let mut script_refused = None;
        for (call, reply) in calls.iter().zip(replies) {
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    let refusal = matches!(
                        e.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::NoPerm
                                | redis::ServerErrorKind::ResponseError
                                | redis::ServerErrorKind::NoScript
                        )
                    );
                    if refusal {
                        script_refused.get_or_insert(e.to_string());
                    } else {
                        retry.get_or_insert(e.to_string());
                    }
                    continue;
                }
            };
            for &i in &call.lines {
                batch.lines[i].state = Delivery::Sent;
            }
            for (n, err) in failures(&reply) {
                let Some(&i) = call.lines.get(n) else {
                    continue;
                };
                if transient(&err) {
                    batch.lines[i].state = Delivery::Pending;
                    retry.get_or_insert(err);
                } else {
                    batch.lines[i].state = Delivery::Rejected;
                    refused.get_or_insert(err);
                }
            }
        }
        if let Some(e) = refused {
            tracing::warn!(error = %e, "Redis refused event entries; dropped as rejected");
        }
        if let Some(e) = broken.or(retry) {
            return Err(ScriptError::Failed(e));
        }
        script_refused.map_or(Ok(()), |e| Err(ScriptError::Refused(e)))
    }

    /// Writes the script calls `calls` (`verb` `EVALSHA` with the hash, or `EVAL` with the
    /// text) in one go and reads their replies, in order. When the connection fails part way,
    /// the calls answered so far have their replies and the rest none; the error comes second.
    fn call_scripts(
        &mut self,
        batch: &Batch,
        calls: &[Call],
        verb: &str,
        script: &str,
    ) -> (Vec<redis::RedisResult<redis::Value>>, Option<String>) {
        self.frame.bytes.clear();
        for call in calls {
            // A call's JSON lines: a slice of the batch's text when its lines are consecutive
            // (the usual case: one stream, nothing left over from a failure), else copied.
            let first = call.lines[0];
            let consecutive = call.lines.iter().enumerate().all(|(n, &i)| i == first + n);
            let events = if consecutive {
                batch.text_of(first..first + call.lines.len())
            } else {
                self.own.clear();
                for &i in &call.lines {
                    self.own.extend_from_slice(batch.json(i));
                    self.own.push(b'\n');
                }
                &self.own[..]
            };
            self.frame.script_call(
                verb,
                script,
                &call.key,
                self.maxlen,
                events,
                call.lines.iter().map(|&i| &batch.lines[i]),
            );
        }
        let Some(conn) = self.conn.as_mut() else {
            return (Vec::new(), Some("not connected".to_owned()));
        };
        if let Err(e) = conn.send_packed_command(&self.frame.bytes) {
            self.conn = None;
            return (Vec::new(), Some(e.to_string()));
        }
        let mut replies = Vec::with_capacity(calls.len());
        for _ in calls {
            match conn.recv_response().and_then(redis::Value::extract_error) {
                Err(e) if !matches!(e.kind(), redis::ErrorKind::Server(_)) => {
                    // The connection is in doubt: the calls not answered may or may not have run.
                    self.conn = None;
                    return (replies, Some(e.to_string()));
                }
                r => replies.push(r),
            }
        }
        (replies, None)
    }

    /// One `XADD` per entry, pipelined: for servers that do not run scripts.
    fn send_pipelined(&mut self, batch: &mut Batch, pending: &[usize]) -> Result<(), String> {
        let mut pipe = redis::pipe();
        // One reply per entry: a refused entry does not fail the others.
        pipe.ignore_errors();
        for &i in pending {
            let r = &batch.lines[i];
            pipe.cmd("XADD")
                .arg(r.stream.as_deref().unwrap_or(&self.stream))
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg("*")
                .arg("event")
                .arg(batch.json(i))
                .arg("kind")
                .arg(r.kind_name())
                .arg("room")
                .arg(&*r.room);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("not connected".to_owned());
        };
        let replies: Vec<RedisResult<String>> = match pipe.query(conn) {
            Ok(r) => r,
            Err(e) => {
                // Whatever went wrong, the next attempt starts from a fresh connection.
                self.conn = None;
                return Err(e.to_string());
            }
        };
        let mut retry = None;
        let mut refused = None;
        let mut answered = 0;
        for (&i, reply) in pending.iter().zip(replies) {
            answered += 1;
            match reply {
                Ok(_) => batch.lines[i].state = Delivery::Sent,
                Err(e) if matches!(e.retry_method(), RetryMethod::NoRetry) => {
                    batch.lines[i].state = Delivery::Rejected;
                    refused.get_or_insert(e);
                }
                Err(e) => {
                    retry.get_or_insert(e);
                }
            }
        }
        if let Some(e) = refused {
            tracing::warn!(error = %e, "Redis refused event entries; dropped as rejected");
        }
        match retry {
            Some(e) => Err(e.to_string()),
            None if answered < pending.len() => Err("short pipeline reply".to_owned()),
            None => Ok(()),
        }
    }
}

/// The refusals in [`ADD_SCRIPT`]'s reply: (entry index, error text).
pub(super) fn failures(reply: &redis::Value) -> Vec<(usize, String)> {
    let redis::Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .chunks(2)
        .filter_map(|pair| match pair {
            [redis::Value::Int(n), err] => {
                let text = match err {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    redis::Value::SimpleString(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                Some((usize::try_from(*n).ok()?, text))
            }
            _ => None,
        })
        .collect()
}

#[derive(Debug)]
struct FileCfg {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
}

/// JSON lines appended to `path`; before a write would take it past `max_bytes`, it is rotated
/// to `path.1` (and `path.1` to `path.2`, …, the oldest beyond `keep` deleted). With `keep = 0`
/// the file is started afresh instead. Disk use stays under `(keep + 1) × max_bytes`.
///
/// The write is a plain blocking `write(2)` on the events service's own thread (Pingora gives
/// each background service a runtime of its own, and nothing else runs there): appending a
/// batch is a copy into the page cache, cheaper than the two thread hand-offs per batch that
/// tokio's blocking pool would add (those were most of the sink's cost at 60,000 events/s,
/// `loadtests/events-bench.sh`). A disk that stalls stalls only delivery: the buffer fills and
/// new events are dropped and counted, as with any stalled sink.
#[derive(Debug)]
pub(super) struct FileSink {
    writer: Writer,
    /// Where each line of the batch being written ends (kept between batches).
    ends: Vec<usize>,
}

#[derive(Debug)]
struct Writer {
    cfg: FileCfg,
    file: Option<File>,
    size: u64,
}

impl FileSink {
    fn new(cfg: FileCfg) -> Self {
        Self {
            writer: Writer {
                cfg,
                file: None,
                size: 0,
            },
            ends: Vec::new(),
        }
    }

    /// Appends the batch's text (every line of it is pending: the service settles the batch
    /// after each attempt).
    fn send(&mut self, batch: &mut Batch) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        debug_assert!(batch.lines.iter().all(|l| l.state == Delivery::Pending));
        self.ends.clear();
        self.ends.extend(batch.lines.iter().map(|l| l.end));
        let (written, err) = match self.writer.write_lines(&batch.text, &self.ends) {
            Ok(n) => (n, None),
            Err((n, e)) => (n, Some(e)),
        };
        for l in batch.lines.iter_mut().take(written) {
            l.state = Delivery::Sent;
        }
        match err {
            Some(e) => Err(format!("{}: {e}", self.writer.cfg.path.display())),
            None => Ok(()),
        }
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn ignore_missing(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl Writer {
    fn open(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&self.cfg.path)?;
            self.size = f.metadata()?.len();
            // A write that failed half way left a partial line: end it, so every line that
            // follows is whole JSON (the partial one is skipped by readers).
            let mut last = [0u8; 1];
            if self.size > 0 && f.read_at(&mut last, self.size - 1)? == 1 && last[0] != b'\n' {
                f.write_all(b"\n")?;
                self.size += 1;
            }
            self.file = Some(f);
        }
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("file not open"))
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let path = &self.cfg.path;
        if self.cfg.keep == 0 {
            ignore_missing(std::fs::remove_file(path))?;
        } else {
            ignore_missing(std::fs::remove_file(numbered(path, self.cfg.keep)))?;
            for n in (1..self.cfg.keep).rev() {
                ignore_missing(std::fs::rename(numbered(path, n), numbered(path, n + 1)))?;
            }
            ignore_missing(std::fs::rename(path, numbered(path, 1)))?;
        }
        self.size = 0;
        Ok(())
    }

    /// Writes the lines of `buf` (ending at `ends`), rotating as needed. Returns how many
    /// lines were written, also on error.
    fn write_lines(
        &mut self,
        buf: &[u8],
        ends: &[usize],
    ) -> Result<usize, (usize, std::io::Error)> {
        let mut done = 0; // lines written
        let mut start = 0; // byte offset of line `done`
        while done < ends.len() {
            self.open().map_err(|e| (done, e))?;
            // As many whole lines as fit in the current file (at least one in an empty file).
            let room = self.cfg.max_bytes.saturating_sub(self.size);
            let mut upto = done;
            while upto < ends.len()
                && ((ends[upto] - start) as u64 <= room || self.size == 0 && upto == done)
            {
                upto += 1;
            }
            if upto == done {
                self.rotate().map_err(|e| (done, e))?;
                continue;
            }
            let end = ends[upto - 1];
            let file = self.open().map_err(|e| (done, e))?;
            if let Err(e) = file.write_all(&buf[start..end]) {
                self.file = None;
                return Err((done, e));
            }
            self.size += (end - start) as u64;
            done = upto;
            start = end;
        }
        Ok(done)
    }
}
