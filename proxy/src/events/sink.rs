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

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, RetryMethod};

use crate::config::EventSink;

/// Connecting to Redis gives up after this long (then the batch is retried with backoff).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A pipelined batch gives up after this long.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    Pending,
    Sent,
    Rejected,
}

/// One serialized event on its way out.
#[derive(Debug)]
pub(super) struct Record {
    /// The event's JSON text (UTF-8).
    pub json: Vec<u8>,
    /// The kind's index in [`EventKind::NAMES`](super::EventKind::NAMES).
    pub kind: usize,
    pub room: Arc<str>,
    /// The room's own stream key (Redis), if it has one.
    pub stream: Option<Arc<str>>,
    pub state: Delivery,
}

#[derive(Debug)]
pub(super) enum Sink {
    Off,
    Redis(RedisSink),
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
            } => Self::Redis(RedisSink {
                url: url.clone(),
                stream: stream.clone(),
                maxlen: maxlen.get(),
                conn: None,
            }),
            EventSink::File {
                path,
                max_bytes,
                keep_files,
            } => Self::File(FileSink {
                cfg: FileCfg {
                    path: path.clone(),
                    max_bytes: max_bytes.get(),
                    keep: *keep_files,
                },
                writer: None,
            }),
        }
    }

    pub async fn send(&mut self, batch: &mut [Record]) -> Result<(), String> {
        match self {
            Self::Off => {
                for r in batch.iter_mut() {
                    r.state = Delivery::Rejected;
                }
                Ok(())
            }
            Self::Redis(s) => s.send(batch).await,
            Self::File(s) => s.send(batch).await,
        }
    }
}

/// `XADD` pipelines on one multiplexed connection, opened lazily on the service's own runtime
/// and dropped (re-opened on the next attempt) after any connection-level failure.
#[derive(Debug)]
pub(super) struct RedisSink {
    url: String,
    stream: String,
    maxlen: u64,
    conn: Option<MultiplexedConnection>,
}

impl RedisSink {
    async fn connect(&mut self) -> Result<&mut MultiplexedConnection, String> {
        if self.conn.is_none() {
            let client = redis::Client::open(self.url.as_str()).map_err(|e| e.to_string())?;
            let cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT));
            let conn = client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| "no connection".to_owned())
    }

    async fn send(&mut self, batch: &mut [Record]) -> Result<(), String> {
        let pending: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].state == Delivery::Pending)
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        // One reply per entry: a refused entry does not fail the others.
        pipe.ignore_errors();
        for &i in &pending {
            let r = &batch[i];
            pipe.cmd("XADD")
                .arg(r.stream.as_deref().unwrap_or(&self.stream))
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg("*")
                .arg("event")
                .arg(&r.json)
                .arg("kind")
                .arg(super::EventKind::NAMES[r.kind])
                .arg("room")
                .arg(&*r.room);
        }
        let conn = self.connect().await?;
        let replies: Vec<RedisResult<String>> = match pipe.query_async(conn).await {
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
                Ok(_) => batch[i].state = Delivery::Sent,
                Err(e) if matches!(e.retry_method(), RetryMethod::NoRetry) => {
                    batch[i].state = Delivery::Rejected;
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

#[derive(Debug, Clone)]
struct FileCfg {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
}

/// JSON lines appended to `path`; before a write would take it past `max_bytes`, it is rotated
/// to `path.1` (and `path.1` to `path.2`, …, the oldest beyond `keep` deleted). With `keep = 0`
/// the file is started afresh instead. Disk use stays under `(keep + 1) × max_bytes`.
///
/// Writes are blocking file I/O, so they run on tokio's blocking pool.
#[derive(Debug)]
pub(super) struct FileSink {
    cfg: FileCfg,
    writer: Option<Writer>,
}

#[derive(Debug)]
struct Writer {
    cfg: FileCfg,
    file: Option<File>,
    size: u64,
}

impl FileSink {
    async fn send(&mut self, batch: &mut [Record]) -> Result<(), String> {
        let pending: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].state == Delivery::Pending)
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        // One buffer for the batch; `ends[k]` is where line k ends.
        let size = pending.iter().map(|&i| batch[i].json.len() + 1).sum();
        let mut buf = Vec::with_capacity(size);
        let mut ends = Vec::with_capacity(pending.len());
        for &i in &pending {
            buf.extend_from_slice(&batch[i].json);
            buf.push(b'\n');
            ends.push(buf.len());
        }
        let mut writer = self.writer.take().unwrap_or_else(|| Writer {
            cfg: self.cfg.clone(),
            file: None,
            size: 0,
        });
        let joined = tokio::task::spawn_blocking(move || {
            let r = writer.write_lines(&buf, &ends);
            (writer, r)
        })
        .await;
        let (writer, result) = match joined {
            Ok(x) => x,
            // The writer is lost with the task; the next attempt opens the file again.
            Err(e) => return Err(format!("file writer task failed: {e}")),
        };
        self.writer = Some(writer);
        let (written, err) = match result {
            Ok(n) => (n, None),
            Err((n, e)) => (n, Some(e)),
        };
        for &i in pending.iter().take(written) {
            batch[i].state = Delivery::Sent;
        }
        match err {
            Some(e) => Err(format!("{}: {e}", self.cfg.path.display())),
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
