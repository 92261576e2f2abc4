//! A small consumer of Flashgate's event stream (see `docs/events.md`): it reads the Redis
//! stream with a consumer group and prints a live admissions-per-minute line per room.
//!
//! ```text
//! events-consumer --url redis://127.0.0.1:6379 --stream flashgate:events --group shop-analytics
//! 18:00:05Z drop: 118 admitted/min, 402 joined/min | total 1200 joined, 980 admitted, ...
//! ```
//!
//! It is meant to be copied: the Redis commands are spelled out, and the pattern is the one
//! any consumer (an e-mail sender, an inventory sync) should follow:
//!
//! 1. `XGROUP CREATE <stream> <group> $ MKSTREAM` once (`BUSYGROUP` means it exists). Several
//!    copies with the same `--group` and different `--consumer` names share the work.
//! 2. On start, re-read this consumer's own delivered-but-unacknowledged entries
//!    (`XREADGROUP ... STREAMS <stream> 0`): they were being handled when it last stopped.
//! 3. Then `XREADGROUP GROUP <group> <consumer> COUNT 100 BLOCK 1000 STREAMS <stream> >`,
//!    handle each entry, and `XACK` it afterwards. A crash between the two means the entry is
//!    handled again: delivery is at least once, so deduplicate by the event's `id` (as here).
//!
//! `--count N` stops after N events (for tests and demos); `--start 0` makes a new group read
//! the stream from the beginning; `--print` echoes every event's JSON.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use redis::streams::StreamReadReply;
use redis::AsyncConnectionConfig;

#[derive(Parser, Debug)]
#[command(
    about = "Reads Flashgate's event stream with a consumer group; prints admissions per minute"
)]
struct Args {
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    url: String,
    /// The stream key (`[events] stream`).
    #[arg(long, default_value = "flashgate:events")]
    stream: String,
    /// Consumer group: copies in one group share the entries.
    #[arg(long, default_value = "flashgate-consumer")]
    group: String,
    /// This consumer's name in the group (default `consumer-<pid>`; keep it stable across
    /// restarts to pick up its own unacknowledged entries).
    #[arg(long)]
    consumer: Option<String>,
    /// Where a new group starts: `$` (new events only) or `0` (the whole stream).
    #[arg(long, default_value = "$")]
    start: String,
    /// Stop after this many events (default: run until Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
    /// Seconds between summary lines.
    #[arg(long, default_value_t = 5)]
    every: u64,
    /// Also print every event's JSON on its own line.
    #[arg(long)]
    print: bool,
}

/// How many event ids are remembered for deduplication.
const SEEN: usize = 100_000;
const MINUTE_MS: u64 = 60_000;

#[derive(Debug, Default)]
struct Room {
    /// `unix_ms` of admissions and arrivals within the last minute.
    admitted: VecDeque<u64>,
    joined: VecDeque<u64>,
    totals: BTreeMap<&'static str, u64>,
    ratings: (u64, u64),
}

#[derive(Debug, Default)]
struct Stats {
    rooms: BTreeMap<String, Room>,
    seen: HashSet<String>,
    order: VecDeque<String>,
    duplicates: u64,
    unreadable: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn clock(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

impl Stats {
    /// Counts one event (its `event` field); false if it was a duplicate or unreadable.
    fn observe(&mut self, json: &str) -> bool {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
            self.unreadable += 1;
            return false;
        };
        if v["v"] != 1 {
            // A newer schema: this consumer only knows version 1.
            self.unreadable += 1;
            return false;
        }
        let id = v["id"].as_str().unwrap_or_default().to_owned();
        if !self.seen.insert(id.clone()) {
            self.duplicates += 1;
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        let room = self
            .rooms
            .entry(v["room"].as_str().unwrap_or("?").to_owned())
            .or_default();
        let at = v["unix_ms"].as_u64().unwrap_or(0);
        let kind = match v["kind"].as_str().unwrap_or("") {
            "ticket_issued" => {
                room.joined.push_back(at);
                "joined"
            }
            "admitted" => {
                room.admitted.push_back(at);
                "admitted"
            }
            "session_ended" => "ended",
            "abandoned" => "abandoned",
            "challenge_failed" => "challenge failures",
            "room_state_changed" => "room changes",
            "feedback" => {
                if let Some(r) = v["rating"].as_u64() {
                    room.ratings.0 += 1;
                    room.ratings.1 += r;
                }
                "ratings"
            }
            _ => "other",
        };
        *room.totals.entry(kind).or_default() += 1;
        true
    }

    /// One line per room: admissions and arrivals in the last minute, and totals.
    fn lines(&mut self, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        for (id, r) in &mut self.rooms {
            for q in [&mut r.admitted, &mut r.joined] {
                while q.front().is_some_and(|t| t + MINUTE_MS < now) {
                    q.pop_front();
                }
            }
            let totals: Vec<String> = r.totals.iter().map(|(k, n)| format!("{n} {k}")).collect();
            let avg = if r.ratings.0 > 0 {
                format!(
                    " (avg rating {:.1})",
                    r.ratings.1 as f64 / r.ratings.0 as f64
                )
            } else {
                String::new()
            };
            out.push(format!(
                "{} {id}: {} admitted/min, {} joined/min | total {}{avg}",
                clock(now),
                r.admitted.len(),
                r.joined.len(),
                totals.join(", "),
            ));
        }
        if out.is_empty() {
            out.push(format!("{} no events yet", clock(now)));
        }
        if self.duplicates + self.unreadable > 0 {
            out.push(format!(
                "{} skipped {} duplicates, {} unreadable",
                clock(now),
                self.duplicates,
                self.unreadable
            ));
        }
        out
    }
}

async fn run(args: Args) -> redis::RedisResult<()> {
    let client = redis::Client::open(args.url.as_str())?;
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    let mut con = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?;
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&args.stream)
        .arg(&args.group)
        .arg(&args.start)
        .arg("MKSTREAM")
        .query_async(&mut con)
        .await;
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => return Err(e),
        _ => {}
    }
    let consumer = args
        .consumer
        .clone()
        .unwrap_or_else(|| format!("consumer-{}", std::process::id()));
    let every = Duration::from_secs(args.every.max(1));
    let mut stats = Stats::default();
    let mut handled = 0u64;
    let mut own_pending = true;
    let mut last = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while args.count.is_none_or(|n| handled < n) {
        // "0": our own unacknowledged entries first; ">": new ones.
        let from = if own_pending { "0" } else { ">" };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&args.group)
            .arg(&consumer)
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&args.stream)
            .arg(from);
        let read = cmd.query_async::<Option<StreamReadReply>>(&mut con);
        let reply = tokio::select! {
            r = read => r?,
            _ = &mut ctrl_c => break,
        };
        let entries: Vec<_> = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        if own_pending && entries.is_empty() {
            own_pending = false;
        }
        let mut ack = Vec::new();
        for e in entries {
            if args.count.is_some_and(|n| handled >= n) {
                // Left unacknowledged: the next run with this consumer name reads it again.
                break;
            }
            // Entries trimmed away by MAXLEN while pending come back without fields.
            if let Some(json) = e.get::<String>("event") {
                if stats.observe(&json) && args.print {
                    println!("{json}");
                }
            }
            ack.push(e.id);
            handled += 1;
        }
        if !ack.is_empty() {
            redis::cmd("XACK")
                .arg(&args.stream)
                .arg(&args.group)
                .arg(&ack)
                .query_async::<()>(&mut con)
                .await?;
        }
        if last.elapsed() >= every {
            last = Instant::now();
            for l in stats.lines(now_ms()) {
                println!("{l}");
            }
        }
    }
    for l in stats.lines(now_ms()) {
        println!("{l}");
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("events-consumer: {e}");
            ExitCode::FAILURE
        }
    }
}
