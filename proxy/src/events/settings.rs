//! The validated event-stream settings (`[events]`, `[rooms.event_stream]`), owned by the
//! events module and built by [`crate::config`] from the TOML surface.

use std::collections::BTreeMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

pub(crate) const DEFAULT_BUFFER: usize = 10_000;
pub(crate) const DEFAULT_BATCH: usize = 4096;
/// See [`EventsConfig::linger`]; why 50 ms: `docs/events.md`, "What an event costs".
pub(crate) const DEFAULT_LINGER: Duration = Duration::from_millis(50);

/// Where events are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSink {
    Off,
    /// `XADD stream MAXLEN ~ maxlen * event <json> kind <kind> room <room>`.
    Redis {
        url: String,
        stream: String,
        maxlen: NonZeroU64,
        /// The CA and client certificate for a `rediss://` url (`[store.tls]`).
        tls: Option<crate::store::RedisTls>,
    },
    /// JSON lines; `path` is rotated to `path.1` … `path.<keep_files>` when it would pass
    /// `max_bytes`.
    File {
        path: PathBuf,
        max_bytes: NonZeroU64,
        keep_files: u32,
    },
}

/// A room's own routing, when it differs from the global sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvents {
    /// `enabled = false`: this room emits nothing.
    Off,
    /// `stream = "..."`: this room's events go to another Redis stream.
    Stream(String),
}

/// The validated `[events]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    pub sink: EventSink,
    /// Events held in memory while the sink is slow or down; more are dropped and counted.
    pub buffer: NonZeroUsize,
    /// Most events per delivery (one pipelined round trip, or one file write).
    pub batch: NonZeroUsize,
    /// After a delivery that emptied the buffer, how long delivery waits for more events before
    /// it takes the next batch: the most an event waits under load, and what turns a stream of
    /// single events into batches (fewer, larger batches cost the node less).
    pub linger: Duration,
    /// This node's name in every event.
    pub node: String,
    /// Rooms whose `[rooms.event_stream]` differs from the default, by room id.
    pub rooms: BTreeMap<String, RoomEvents>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            sink: EventSink::Off,
            buffer: NonZeroUsize::new(DEFAULT_BUFFER).unwrap_or(NonZeroUsize::MIN),
            batch: NonZeroUsize::new(DEFAULT_BATCH).unwrap_or(NonZeroUsize::MIN),
            linger: DEFAULT_LINGER,
            node: default_node(),
            rooms: BTreeMap::new(),
        }
    }
}

/// The host name (sanitized to the node-name alphabet), or `node-<pid>`.
pub fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = host
        .trim()
        .chars()
        .map(|c| if node_char(c) { c } else { '-' })
        .take(64)
        .collect();
    if clean.is_empty() {
        format!("node-{}", std::process::id())
    } else {
        clean
    }
}

pub(crate) fn node_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}
