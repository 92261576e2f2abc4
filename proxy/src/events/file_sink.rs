//! The file sink: JSON lines appended to a file, rotated by size.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::sink::{Batch, Delivery, SinkError};

#[derive(Debug)]
pub(super) struct FileCfg {
    pub(super) path: PathBuf,
    pub(super) max_bytes: u64,
    pub(super) keep: u32,
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
    pub(super) fn new(cfg: FileCfg) -> Self {
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
    pub(super) fn send(&mut self, batch: &mut Batch) -> Result<(), SinkError> {
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
            Some(source) => Err(SinkError::File {
                path: self.writer.cfg.path.clone(),
                source,
            }),
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
