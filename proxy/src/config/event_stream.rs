//! `[events]` and `[rooms.event_stream]`: where queue/admission events go (see
//! `docs/events.md` and [`crate::events`]). Not to be confused with `[[rooms.events]]`, the
//! sale windows.
//!
//! With `sink = "off"` (the default) the other keys are still checked for shape but none is
//! required, so an operator can switch the stream off and on by changing one line.

use std::collections::BTreeMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use super::file::{EventsSection, RoomSection};
use super::{ConfigError, Ctx, StoreKind};
use crate::events::settings::{
    default_node, node_char, EventSink, EventsConfig, RoomEvents, DEFAULT_BATCH, DEFAULT_BUFFER,
    DEFAULT_LINGER,
};

/// Default Redis stream key.
pub const DEFAULT_STREAM: &str = "flashgate:events";
const DEFAULT_MAXLEN: u64 = 100_000;
const MIN_MAXLEN: u64 = 100;
const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
const MIN_MAX_BYTES: u64 = 64 * 1024;
const DEFAULT_KEEP_FILES: u32 = 5;
const MAX_KEEP_FILES: u32 = 100;
const MAX_BUFFER: usize = 1_000_000;
const MAX_BATCH: usize = 10_000;
const MAX_LINGER: Duration = Duration::from_secs(1);

fn valid_stream(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

const STREAM_RULE: &str = "must be 1-128 bytes without spaces or control characters";

pub(super) fn build(
    ctx: &Ctx<'_>,
    e: &EventsSection,
    rooms: &[RoomSection],
    store: &StoreKind,
) -> Result<EventsConfig, ConfigError> {
    let kind = e.sink.as_deref().unwrap_or("off");
    if !matches!(kind, "off" | "redis" | "file") {
        return Err(ctx.err("events.sink", "must be \"off\", \"redis\" or \"file\""));
    }
    // Keys of the other sink are a mistake; with "off" everything may stay in place.
    let only = |key: &str, set: bool, sink: &str| {
        if set && kind != "off" && kind != sink {
            Err(ctx.err(
                format!("events.{key}"),
                format!("only used with sink = \"{sink}\""),
            ))
        } else {
            Ok(())
        }
    };
    only("url", e.url.is_some(), "redis")?;
    only("stream", e.stream.is_some(), "redis")?;
    only("maxlen", e.maxlen.is_some(), "redis")?;
    only("path", e.path.is_some(), "file")?;
    only("max_bytes", e.max_bytes.is_some(), "file")?;
    only("keep_files", e.keep_files.is_some(), "file")?;

    if let Some(url) = &e.url {
        super::check_redis_url(ctx, "events.url", url)?;
    }
    let stream = e
        .stream
        .clone()
        .unwrap_or_else(|| DEFAULT_STREAM.to_owned());
    if !valid_stream(&stream) {
        return Err(ctx.err("events.stream", STREAM_RULE));
    }
    let maxlen = e.maxlen.unwrap_or(DEFAULT_MAXLEN);
    let maxlen = NonZeroU64::new(maxlen)
        .filter(|n| n.get() >= MIN_MAXLEN)
        .ok_or_else(|| ctx.err("events.maxlen", format!("must be at least {MIN_MAXLEN}")))?;
    let max_bytes = NonZeroU64::new(e.max_bytes.unwrap_or(DEFAULT_MAX_BYTES))
        .filter(|n| n.get() >= MIN_MAX_BYTES)
        .ok_or_else(|| {
            ctx.err(
                "events.max_bytes",
                format!("must be at least {MIN_MAX_BYTES} (64 KiB)"),
            )
        })?;
    let keep_files = e.keep_files.unwrap_or(DEFAULT_KEEP_FILES);
    if keep_files > MAX_KEEP_FILES {
        return Err(ctx.err(
            "events.keep_files",
            format!("must be at most {MAX_KEEP_FILES}"),
        ));
    }
    let buffer = NonZeroUsize::new(e.buffer.unwrap_or(DEFAULT_BUFFER))
        .filter(|n| n.get() <= MAX_BUFFER)
        .ok_or_else(|| {
            ctx.err(
                "events.buffer",
                format!("must be between 1 and {MAX_BUFFER}"),
            )
        })?;
    let batch = e.batch.unwrap_or(DEFAULT_BATCH.min(buffer.get()));
    let batch = NonZeroUsize::new(batch)
        .filter(|b| b.get() <= MAX_BATCH && b.get() <= buffer.get())
        .ok_or_else(|| {
            ctx.err(
                "events.batch",
                format!("must be between 1 and {MAX_BATCH}, and at most events.buffer"),
            )
        })?;
    let linger = ctx.duration_between(
        "events.linger",
        e.linger.as_ref(),
        DEFAULT_LINGER,
        (Duration::ZERO, "0ms"),
        (MAX_LINGER, "1s"),
    )?;
    let node = match &e.node {
        Some(n) => {
            if n.is_empty() || n.len() > 64 || !n.chars().all(node_char) {
                return Err(ctx.err(
                    "events.node",
                    "must be 1-64 characters of a-z, A-Z, 0-9, '.', '-' or '_'",
                ));
            }
            n.clone()
        }
        None => default_node(),
    };

    let sink = match kind {
        "redis" => {
            // `[store.tls]` serves every rediss:// connection of the node.
            let tls = match store {
                StoreKind::Redis { tls, .. } => tls.clone(),
                StoreKind::Memory => None,
            };
            let url = match (&e.url, store) {
                (Some(u), _) => u.clone(),
                (
                    None,
                    StoreKind::Redis {
                        url,
                        cluster: false,
                        ..
                    },
                ) => url.clone(),
                (None, _) => {
                    return Err(ctx.err(
                        "events.url",
                        "sink = \"redis\" needs a url (or a [store] with kind = \"redis\" and \
                         cluster = false to share)",
                    ))
                }
            };
            // The sink's own connection speaks to one server: it does not ask sentinels.
            if url.contains("+sentinel://") {
                let key = if e.url.is_some() {
                    "events.url"
                } else {
                    "events.sink"
                };
                return Err(ctx.err(
                    key,
                    "the events sink does not follow Sentinel: give events.url the Redis to \
                     write to (redis:// or rediss://)",
                ));
            }
            EventSink::Redis {
                url,
                stream,
                maxlen,
                tls,
            }
        }
        "file" => {
            let path = e
                .path
                .as_ref()
                .filter(|p| !p.trim().is_empty())
                .ok_or_else(|| ctx.err("events.path", "sink = \"file\" needs a path"))?;
            EventSink::File {
                path: PathBuf::from(path),
                max_bytes,
                keep_files,
            }
        }
        _ => EventSink::Off,
    };

    let mut per_room = BTreeMap::new();
    for (i, r) in rooms.iter().enumerate() {
        let Some(s) = &r.event_stream else { continue };
        let key = |f: &str| format!("rooms[{i}].event_stream.{f}");
        if let Some(stream) = &s.stream {
            if !valid_stream(stream) {
                return Err(ctx.err(key("stream"), STREAM_RULE));
            }
            if !s.enabled {
                return Err(ctx.err(key("stream"), "not used when enabled = false"));
            }
            if matches!(sink, EventSink::File { .. }) {
                return Err(ctx.err(key("stream"), "only used with events.sink = \"redis\""));
            }
        }
        match (&s.stream, s.enabled) {
            (_, false) => {
                per_room.insert(r.id.clone(), RoomEvents::Off);
            }
            (Some(stream), true) => {
                per_room.insert(r.id.clone(), RoomEvents::Stream(stream.clone()));
            }
            (None, true) => {}
        }
    }

    Ok(EventsConfig {
        sink,
        buffer,
        batch,
        linger,
        node,
        rooms: per_room,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_fixture::{self, with_shop, Room};

    fn parse(extra: &str) -> EventsConfig {
        test_fixture::parse("events.toml", &with_shop(extra)).events
    }

    #[test]
    fn off_by_default() {
        let e = parse("");
        assert_eq!(e.sink, EventSink::Off);
        assert_eq!((e.buffer.get(), e.batch.get()), (10_000, 4096));
        assert_eq!(e.linger, DEFAULT_LINGER);
        assert!(!e.node.is_empty() && e.node.len() <= 64);
        assert!(e.rooms.is_empty());
    }

    #[test]
    fn redis_shares_a_single_redis_store_url() {
        let e = parse(
            "[store]\nkind = \"redis\"\nurl = \"redis://10.0.0.5:6379/2\"\n\
             [events]\nsink = \"redis\"\nnode = \"edge-1\"\n",
        );
        assert_eq!(
            e.sink,
            EventSink::Redis {
                url: "redis://10.0.0.5:6379/2".into(),
                stream: DEFAULT_STREAM.into(),
                maxlen: NonZeroU64::new(100_000).expect("non-zero"),
                tls: None,
            }
        );
        assert_eq!(e.node, "edge-1");
    }

    #[test]
    fn rooms_opt_out_or_use_their_own_stream() {
        let room = |id: &str| Room::new(id).paths(&[&format!("/{id}")]).capacity(500);
        let rooms = testkit::config::rooms(&[
            room("quiet").table_key("event_stream", "enabled", false),
            room("drop")
                .paths(&["/drops"])
                .table_key("event_stream", "stream", "shop:drop:events"),
            room("plain"),
        ]);
        let e = parse(&format!(
            "[events]\nsink = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nbuffer = 100\n{rooms}"
        ));
        assert_eq!(
            e.batch.get(),
            100,
            "the default batch never exceeds the buffer"
        );
        assert_eq!(e.rooms.get("quiet"), Some(&RoomEvents::Off));
        assert_eq!(
            e.rooms.get("drop"),
            Some(&RoomEvents::Stream("shop:drop:events".into()))
        );
        assert_eq!(e.rooms.get("plain"), None);
    }

    #[test]
    fn switching_off_keeps_the_other_keys_valid() {
        let e = parse(
            "[events]\nsink = \"off\"\nurl = \"redis://127.0.0.1:6379\"\n\
             path = \"events.jsonl\"\nkeep_files = 3\n",
        );
        assert_eq!(e.sink, EventSink::Off);
    }

    #[test]
    fn linger_is_a_duration_up_to_a_second() {
        assert_eq!(
            parse("[events]\nlinger = \"5ms\"\n").linger,
            Duration::from_millis(5)
        );
        assert_eq!(parse("[events]\nlinger = \"0ms\"\n").linger, Duration::ZERO);
        for (v, says) in [("2s", "between 0ms and 1s"), ("soon", "not a duration")] {
            let text = with_shop(&format!("[events]\nlinger = \"{v}\"\n"));
            let err = test_fixture::refuse("events.toml", &text);
            assert_eq!(
                (err.file.as_str(), err.key.as_str()),
                ("events.toml", "events.linger")
            );
            assert!(err.reason.contains(says), "{v}: {}", err.reason);
        }
    }
}
