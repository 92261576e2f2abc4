//! `/.flashgate/events`: server-sent events, pushed.
//!
//! A stream opens like any reply: Pingora writes its head (with the renewed ticket) and the
//! first status. Then, on a plain HTTP/1.1 connection, the stream leaves Pingora: its socket
//! moves to its room's [`Hub`], one task per room that holds every stream of that room as a
//! non-blocking socket and a [`Watch`] of about 200 bytes. Pingora's per-connection state (its
//! task, the proxy and listener futures, the head and write buffers: ~30 KB measured with
//! DHAT, see docs/performance.md) is freed as soon as the head is sent, and an idle stream costs
//! the node one `send` per keep-alive and nothing else: no task to wake, no timer of its own.
//!
//! Streams over TLS or HTTP/2 cannot be handed a raw socket (the bytes need framing or
//! encryption); they stay on Pingora and run the same [`Watch`] in their own task.
//!
//! How a stream leaves Pingora: the response is close-delimited (no length, no chunking), so
//! what follows the head is plain bytes. Pingora must neither reuse nor shut down the socket
//! (a shutdown would send FIN), so the request's session is swapped for a stand-in replaying the
//! same request head over a [`Detached`] virtual socket; Pingora logs and finishes the stand-in,
//! and the real session is taken apart: its socket is flushed, its descriptor duplicated into a
//! `std::net::TcpStream` for the hub, and the original closed.

use std::io::Write as _;
use std::net::TcpStream;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::proxy::Session;
use pingora::Result;
use prometheus::IntGauge;
use tokio::sync::{mpsc, watch};

use super::credentials::Outgoing;
use super::reply::event_stream_head;
use super::status::Asker;
use super::Gate;
use crate::clock;
use crate::node::Live;
use crate::pages::Status;
use crate::rooms::RoomRuntime;

mod detach;
mod schedule;

use detach::{detach, detachable};
use schedule::{renew_every, Schedule, Wake};

/// What an idle stream writes now and then so that intermediaries do not time it out, when it
/// has no ticket to renew (see [`Watch::step`]).
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
/// A hub looks at its streams at most this often (besides room changes): keep-alives and
/// lifetimes need no finer clock, and a pass looks at every stream of the room.
const HUB_TICK: Duration = Duration::from_millis(250);

impl Gate {
    /// Opens a server-sent-events stream for `asker`, whose first answer is `first` (read after
    /// `changes` subscribed, so no change is missed), and hands it to its room's hub.
    pub(super) async fn events(
        &self,
        s: &mut Session,
        room: &Arc<RoomRuntime>,
        asker: Asker,
        first: Status,
        changes: watch::Receiver<u64>,
        out: Outgoing,
    ) -> Result<()> {
        // The keys that sign the stream's renewals: this config's, or a newer one's.
        let live = self.node.live();
        let h = event_stream_head(&out)?;
        let json = first.to_json();
        let open = Bytes::from(format!(
            "retry: 2000\n{}data: {json}\n\n",
            IdLine(out.ticket_token())
        ));
        let watch = Watch::new(asker, room, live, &first, &json, *changes.borrow());
        self.node.metrics.event_streams_opened.inc();
        let gauge = self.node.metrics.event_streams.clone();
        gauge.inc();
        let held = Open(gauge);
        let leaves = detachable(s) && !watch.schedule.done;
        s.write_response_header(Box::new(h.clone()), false).await?;
        s.write_response_body(Some(open), false).await?;
        if leaves {
            let sock = detach(s, h).await?;
            self.hubs.hand_over(
                room,
                Held {
                    sock,
                    watch,
                    _open: held,
                },
            );
            return Ok(());
        }
        run_on_pingora(s, room, watch, changes).await?;
        drop(held);
        Ok(())
    }
}

/// A stream that cannot leave Pingora (TLS, HTTP/2, HEAD): the same [`Watch`] in this
/// request's task.
async fn run_on_pingora(
    s: &mut Session,
    room: &RoomRuntime,
    mut watch: Watch,
    mut changes: watch::Receiver<u64>,
) -> Result<()> {
    while !watch.schedule.done {
        let wake = watch.schedule.next_wake();
        tokio::select! {
            r = changes.changed(), if !watch.schedule.dirty => match r {
                Ok(()) => watch.schedule.dirty = true,
                Err(_) => break, // the room is gone
            },
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        match watch.step(room, Instant::now()) {
            Step::Nothing => {}
            Step::End => break,
            Step::Write(chunk) | Step::KeepAlive(chunk) => {
                s.write_response_body(Some(chunk), false).await?
            }
        }
    }
    s.write_response_body(None, true).await
}

/// Counts an open stream in `flashgate_event_streams` while it lives.
#[derive(Debug)]
struct Open(IntGauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A stream in a hub: its socket and its [`Watch`].
#[derive(Debug)]
struct Held {
    sock: TcpStream,
    watch: Watch,
    _open: Open,
}

impl Held {
    /// Writes all of `bytes` at once, or gives the stream up: a socket that cannot take a few
    /// hundred bytes (its buffer holds tens of kilobytes) belongs to a client that stopped
    /// reading, and its browser reconnects.
    fn send(&mut self, bytes: &[u8]) -> bool {
        matches!(self.sock.write(bytes), Ok(n) if n == bytes.len())
    }

    /// Whether the client is still there: it sends nothing on an event stream, so anything to
    /// read (its close, most often) ends the stream.
    fn still_there(&self) -> bool {
        let mut one = [0u8; 1];
        matches!(self.sock.peek(&mut one), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Every room's hub on this node.
#[derive(Debug, Default)]
pub(crate) struct Hubs(parking_lot::Mutex<Vec<(Weak<RoomRuntime>, mpsc::UnboundedSender<Held>)>>);

impl Hubs {
    /// Gives `held` to the hub of `room` (this runtime of it: streams opened before a reload
    /// stay with the settings they opened under), starting the hub if it has none.
    fn hand_over(&self, room: &Arc<RoomRuntime>, held: Held) {
        let mut hubs = self.0.lock();
        hubs.retain(|(r, tx)| r.strong_count() > 0 && !tx.is_closed());
        let held = match hubs.iter().find(|(r, _)| r.as_ptr() == Arc::as_ptr(room)) {
            Some((_, tx)) => match tx.send(held) {
                Ok(()) => return,
                Err(back) => back.0, // that hub just ended
            },
            None => held,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(held);
        tokio::spawn(Hub::new(room.clone(), rx).run());
        hubs.retain(|(r, _)| r.as_ptr() != Arc::as_ptr(room));
        hubs.push((Arc::downgrade(room), tx));
    }
}

/// One room's streams: woken by a new stream, a change of the room's view, or the earliest
/// deadline among its streams (rounded up to [`HUB_TICK`]). It ends when it holds no stream.
struct Hub {
    room: Arc<RoomRuntime>,
    rx: mpsc::UnboundedReceiver<Held>,
    changes: watch::Receiver<u64>,
    held: Vec<Held>,
}

impl Hub {
    fn new(room: Arc<RoomRuntime>, rx: mpsc::UnboundedReceiver<Held>) -> Self {
        let changes = room.changes();
        Self {
            room,
            rx,
            changes,
            held: Vec::new(),
        }
    }

    /// Adds a stream; one that opened before a change this hub has already seen looks again.
    fn add(&mut self, mut h: Held) -> Instant {
        if h.watch.generation != *self.changes.borrow() {
            h.watch.schedule.dirty = true;
        }
        let at = h.watch.schedule.next_wake();
        self.held.push(h);
        at
    }

    async fn run(mut self) {
        let mut next: Option<Instant> = None;
        loop {
            let due = tokio::select! {
                h = self.rx.recv() => match h {
                    Some(h) => {
                        let at = self.add(h);
                        next = Some(next.map_or(at, |n| n.min(at)));
                        false
                    }
                    None => return,
                },
                r = self.changes.changed() => match r {
                    Ok(()) => {
                        for h in &mut self.held {
                            h.watch.schedule.dirty = true;
                        }
                        true
                    }
                    Err(_) => return, // the room is gone: dropping the sockets ends the streams
                },
                () = sleep_until(next) => true,
            };
            if !due {
                continue;
            }
            let now = Instant::now();
            let room = &self.room;
            let mut earliest: Option<Instant> = None;
            self.held.retain_mut(|h| {
                let keep = match h.watch.step(room, now) {
                    Step::Nothing => true,
                    Step::End => false,
                    Step::Write(chunk) => h.send(&chunk),
                    Step::KeepAlive(chunk) => h.still_there() && h.send(&chunk),
                } && !h.watch.schedule.done;
                if keep {
                    let at = h.watch.schedule.next_wake();
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                }
                keep
            });
            next = earliest.map(|e| e.max(now + HUB_TICK));
            if self.held.is_empty() {
                // Close the door, then take whatever came in meanwhile.
                self.rx.close();
                while let Ok(h) = self.rx.try_recv() {
                    let at = self.add(h);
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
                if self.held.is_empty() {
                    return;
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// One stream's state: who it answers, when it may push, and what it said last.
#[derive(Debug)]
struct Watch {
    asker: Asker,
    /// The config the stream opened under: its keys sign the renewed tickets.
    live: Arc<Live>,
    /// When the ticket is renewed next (the stream's response renewed it when it opened).
    renew_at: Instant,
    schedule: Schedule,
    /// A hash of the last answer written (answers are compared, not kept).
    last: u64,
    /// The room's change generation the first answer was computed after.
    generation: u64,
}

/// What a stream does now.
#[derive(Debug)]
enum Step {
    Nothing,
    End,
    Write(Bytes),
    /// Nothing new to say, but the stream should show it is alive (if the client still is).
    KeepAlive(Bytes),
}

impl Watch {
    fn new(
        asker: Asker,
        room: &RoomRuntime,
        live: Arc<Live>,
        first: &Status,
        json: &str,
        generation: u64,
    ) -> Self {
        let spread = asker.ticket.as_ref().map_or(0, |t| t.number);
        let now = Instant::now();
        Self {
            asker,
            live,
            renew_at: now + renew_every(&room.cfg.settings),
            schedule: Schedule::new(now, &room.cfg.settings, first, spread),
            last: hash(json),
            generation,
        }
    }

    /// Wakes at `now`: the new answer if it changed, a keep-alive when one is due, or nothing.
    ///
    /// What it writes renews the shopper's ticket in the event's `id` once a third of
    /// `abandon_after` has passed since the last renewal (and in a final answer): the browser
    /// sends the last id back as `Last-Event-ID` when it reconnects, and the waiting page
    /// sends it as `X-Flashgate-Token` before it leaves the stream (to poll, or to go in). So
    /// an open stream keeps its place for as long as its client takes what it writes, as
    /// polling would, and a stream need not end before the ticket its response set lapses. A
    /// keep-alive that renews is an empty `renew` event (the page only keeps its id); one that
    /// does not is a comment.
    fn step(&mut self, room: &RoomRuntime, now: Instant) -> Step {
        match self.schedule.on_wake(now) {
            Wake::Nothing => Step::Nothing,
            Wake::End => Step::End,
            Wake::Recompute { keep_alive } => {
                let (st, renewed) = self.asker.status(room, clock::now());
                let json = st.to_json();
                self.schedule.recomputed(now, &st);
                let due = now >= self.renew_at || self.schedule.done;
                let token = renewed
                    .filter(|_| due)
                    .map(|t| self.live.config.keys.sign_ticket(&t));
                if token.is_some() {
                    self.renew_at = now + renew_every(&room.cfg.settings);
                }
                let id = IdLine(token.as_deref());
                let h = hash(&json);
                if h != self.last {
                    self.last = h;
                    self.schedule.wrote(now);
                    Step::Write(Bytes::from(format!("{id}data: {json}\n\n")))
                } else if !keep_alive {
                    Step::Nothing
                } else if token.is_some() {
                    Step::KeepAlive(Bytes::from(format!("event: renew\n{id}data\n\n")))
                } else {
                    Step::KeepAlive(Bytes::from_static(KEEP_ALIVE))
                }
            }
        }
    }
}

/// An event's `id:` line holding a renewed ticket, or nothing.
struct IdLine<'a>(Option<&'a str>);

impl std::fmt::Display for IdLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(token) => writeln!(f, "id: {token}"),
            None => Ok(()),
        }
    }
}

fn hash(s: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(s)
}
