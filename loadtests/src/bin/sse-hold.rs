//! Holds N idle server-sent-event waiters on one Flashgate node, for `loadtests/sse-bench.sh`.
//!
//! 1. Takes N tickets: N requests to a paused room's path (JSON), each keeping its ticket
//!    cookie.
//! 2. Opens one `/.flashgate/events` stream per ticket and reads its first event; prints
//!    `READY <n>` once every stream is open.
//! 3. Holds them for `--hold` seconds, reading whatever the node sends. A stream the node
//!    ends is opened again at once with the ticket its response renewed, as a browser's
//!    `EventSource` does (after its `retry`). Then prints one line of counts and exits.
//!
//! Loopback only, bounded by N and `--hold`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use loadtests::http1::{request_bytes, Capture, Conn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
struct Args {
    /// The node, `127.0.0.1:PORT`.
    #[arg(long)]
    target: String,
    /// The room's id.
    #[arg(long)]
    room: String,
    /// A path inside the room (it must be paused, so that every request gets a ticket).
    #[arg(long)]
    path: String,
    #[arg(long, default_value_t = 9000)]
    waiters: usize,
    /// Seconds to hold the streams once all are open.
    #[arg(long, default_value_t = 60)]
    hold: u64,
}

#[derive(Debug, Default)]
struct Counts {
    opened: AtomicU64,
    reopened: AtomicU64,
    data: AtomicU64,
    keep_alives: AtomicU64,
    errors: AtomicU64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let cookie = format!("fg_t_{}=", args.room);
    // 1. Tickets, over a few keep-alive connections.
    let tickets = match take_tickets(&args, &cookie).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sse-hold: taking tickets: {e}");
            std::process::exit(1);
        }
    };
    // 2. The streams.
    let counts = Arc::new(Counts::default());
    let deadline = Arc::new(std::sync::OnceLock::<Instant>::new());
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(tickets.len());
    for t in tickets {
        let (target, room) = (args.target.clone(), args.room.clone());
        let (counts, deadline, ready) = (counts.clone(), deadline.clone(), ready_tx.clone());
        tasks.push(tokio::spawn(async move {
            hold(&target, &room, t, &counts, &deadline, ready).await
        }));
    }
    drop(ready_tx);
    let mut open = 0;
    while open < tasks.len() {
        match ready_rx.recv().await {
            Some(()) => open += 1,
            None => break,
        }
    }
    println!("READY {open}");
    let _ = deadline.set(Instant::now() + Duration::from_secs(args.hold));
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "waiters={} opened={} reopened={} data={} keep_alives={} errors={}",
        open,
        counts.opened.load(Ordering::Relaxed),
        counts.reopened.load(Ordering::Relaxed),
        counts.data.load(Ordering::Relaxed),
        counts.keep_alives.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
    );
}

async fn take_tickets(args: &Args, cookie: &str) -> Result<Vec<String>, String> {
    let req = request_bytes(
        "GET",
        &args.target,
        &args.path,
        &["Accept: application/json".into()],
        b"",
    );
    let per = args.waiters.div_ceil(16);
    let mut jobs = Vec::new();
    for i in 0..16 {
        let n = per.min(args.waiters.saturating_sub(i * per));
        let (target, req, cookie) = (args.target.clone(), req.clone(), cookie.to_owned());
        jobs.push(tokio::spawn(async move {
            let mut got = Vec::with_capacity(n);
            let mut conn = None;
            while got.len() < n {
                let c = match conn.take() {
                    Some(c) => c,
                    None => Conn::connect(&target).await.map_err(|e| e.to_string())?,
                };
                let mut c: Conn = c;
                let capture = Capture {
                    name: "set-cookie",
                    prefix: &cookie,
                };
                let r = c
                    .round_trip(&req, false, Some(capture))
                    .await
                    .map_err(|e| e.to_string())?;
                match r.captured {
                    Some(t) => got.push(t),
                    None => return Err(format!("no ticket cookie (status {})", r.status)),
                }
                if r.keep_alive {
                    conn = Some(c);
                }
            }
            Ok::<_, String>(got)
        }));
    }
    let mut all = Vec::with_capacity(args.waiters);
    for j in jobs {
        all.extend(j.await.map_err(|e| e.to_string())??);
    }
    Ok(all)
}

/// One waiter: open, read the first event, say so, then read until the deadline, reopening
/// with the renewed ticket when the node ends the stream.
async fn hold(
    target: &str,
    room: &str,
    mut ticket: String,
    counts: &Counts,
    deadline: &std::sync::OnceLock<Instant>,
    ready: tokio::sync::mpsc::UnboundedSender<()>,
) {
    let mut ready = Some(ready);
    let mut buf = vec![0u8; 2048];
    // The ticket the stream renewed last (its events' ids), sent back as a browser does.
    let mut last_id: Option<String> = None;
    loop {
        if deadline.get().is_some_and(|d| Instant::now() >= *d) {
            return;
        }
        let opened = open(target, room, &ticket, last_id.as_deref(), &mut buf).await;
        let (mut stream, renewed, first) = match opened {
            Ok(o) => o,
            Err(e) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("sse-hold: {e}");
                return;
            }
        };
        if let Some(t) = renewed {
            ticket = t;
        }
        match ready.take() {
            Some(r) => {
                counts.opened.fetch_add(1, Ordering::Relaxed);
                let _ = r.send(());
            }
            None => {
                counts.reopened.fetch_add(1, Ordering::Relaxed);
            }
        }
        count(&first, counts, &mut last_id);
        loop {
            let read = match deadline.get() {
                Some(d) => {
                    let d = tokio::time::Instant::from_std(*d);
                    match tokio::time::timeout_at(d, stream.read(&mut buf)).await {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                }
                // Not all open yet: read without a deadline (it comes with the next wake).
                None => {
                    tokio::select! {
                        r = stream.read(&mut buf) => r,
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            match read {
                Ok(0) => break, // the node ended the stream: reopen
                Ok(n) => count(&buf[..n], counts, &mut last_id),
                Err(_) => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

/// Counts what `bytes` hold and notes the last event id (each event arrives in one write).
fn count(bytes: &[u8], counts: &Counts, last_id: &mut Option<String>) {
    let text = String::from_utf8_lossy(bytes);
    let data = text.matches("data: ").count() as u64;
    let kept = (text.matches(": keep-alive").count() + text.matches("event: renew").count()) as u64;
    counts.data.fetch_add(data, Ordering::Relaxed);
    counts.keep_alives.fetch_add(kept, Ordering::Relaxed);
    if let Some(id) = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
    {
        *last_id = Some(id.to_owned());
    }
}

/// Opens a stream: returns it, the renewed ticket cookie, and the bytes read after the head.
async fn open(
    target: &str,
    room: &str,
    ticket: &str,
    last_id: Option<&str>,
    buf: &mut [u8],
) -> Result<(TcpStream, Option<String>, Vec<u8>), String> {
    let mut s = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut headers = vec![
        format!("Cookie: {ticket}"),
        "Accept: text/event-stream".into(),
    ];
    if let Some(id) = last_id {
        headers.push(format!("Last-Event-ID: {id}"));
    }
    let req = request_bytes(
        "GET",
        target,
        &format!("/.flashgate/events?room={room}"),
        &headers,
        b"",
    );
    s.write_all(&req).await.map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::new();
    loop {
        let n = s.read(buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the head".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).into_owned();
            if !text.starts_with("HTTP/1.1 200") {
                return Err(format!(
                    "stream refused: {}",
                    text.lines().next().unwrap_or("")
                ));
            }
            let prefix = format!("fg_t_{room}=");
            let renewed = text.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                let value = value.trim();
                (name.eq_ignore_ascii_case("set-cookie") && value.starts_with(&prefix))
                    .then(|| value.split(';').next().unwrap_or(value).to_owned())
            });
            return Ok((s, renewed, head[end + 4..].to_vec()));
        }
    }
}
