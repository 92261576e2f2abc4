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
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::proxy::Session;
use pingora::Result;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, watch};

use super::credentials::Outgoing;
use super::status::Asker;
use super::Gate;
use crate::clock;
use crate::pages::Status;
use crate::rooms::RoomRuntime;

/// A comment line that keeps intermediaries from timing an idle stream out.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
/// How often an idle stream writes [`KEEP_ALIVE`] (and looks at its answer again, which may
/// drift with the measured admission rate though the room did not change).
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(25);
/// The longest a stream lasts; see [`Schedule`].
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// The quickest a stream near the front of the line is pushed a new answer.
const FRONT_GAP: Duration = Duration::from_secs(1);
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
        let mut h = ResponseHeader::build(200, Some(5))?;
        h.insert_header("content-type", "text/event-stream")?;
        h.insert_header("cache-control", "no-store")?;
        h.insert_header("x-accel-buffering", "no")?;
        out.write(&mut h)?;
        let json = first.to_json();
        let open = Bytes::from(format!("retry: 2000\ndata: {json}\n\n"));
        let watch = Watch::new(asker, room, &first, &json, *changes.borrow());
        let gauge = self.node.metrics.event_streams.clone();
        gauge.inc();
        let held = Open(gauge);
        if detachable(s) && !watch.schedule.done {
            s.write_response_header(Box::new(h.clone()), false).await?;
            s.write_response_body(Some(open), false).await?;
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
        s.write_response_header(Box::new(h), false).await?;
        s.write_response_body(Some(open), false).await?;
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
            Step::Write(chunk) => s.write_response_body(Some(chunk), false).await?,
        }
    }
    s.write_response_body(None, true).await
}

/// Whether this request's connection can leave Pingora after the head: a plain-TCP HTTP/1.x
/// GET (not TLS, not HTTP/2, not a Unix socket).
fn detachable(s: &Session) -> bool {
    let plain_tcp = s.digest().is_some_and(|d| {
        d.ssl_digest.is_none()
            && d.socket_digest
                .as_ref()
                .and_then(|sd| sd.peer_addr())
                .is_some_and(|a| a.as_inet().is_some())
    });
    plain_tcp
        && s.req_header().method == http::Method::GET
        && s.downstream_session.as_http1().is_some()
}

/// Takes the connection out of Pingora (see the module docs): Pingora keeps a stand-in session
/// that has "sent" `head` and will not be reused.
async fn detach(s: &mut Session, head: ResponseHeader) -> Result<TcpStream> {
    let raw = s.downstream_session.to_h1_raw();
    let mut stand_in = ServerSession::new_http1(Box::new(L4Stream::from(
        VirtualSocketStream::new(Box::new(Detached { head: raw })),
    )));
    stand_in.read_request().await?;
    let real = std::mem::replace(&mut *s.downstream_session, stand_in);
    s.downstream_session
        .write_response_header(Box::new(head))
        .await?;
    s.set_keepalive(None);
    let ServerSession::H1(real) = real else {
        return Err(pingora::Error::explain(
            pingora::ErrorType::InternalError,
            "an event stream can leave only an HTTP/1 session",
        ));
    };
    let mut stream = real.into_inner();
    stream
        .flush()
        .await
        .map_err(|e| pingora::Error::because(pingora::ErrorType::WriteError, "flush", e))?;
    let own = duplicate(&stream)
        .map_err(|e| pingora::Error::because(pingora::ErrorType::InternalError, "dup", e))?;
    drop(stream); // closes Pingora's descriptor; the socket lives on in `own`
    let sock = TcpStream::from(own);
    // Already so (the flag belongs to the socket, which tokio made non-blocking); a hub must
    // never block on one slow client, so say it anyway.
    sock.set_nonblocking(true).map_err(|e| {
        pingora::Error::because(pingora::ErrorType::InternalError, "nonblocking", e)
    })?;
    Ok(sock)
}

/// A descriptor of our own for `stream`'s socket (`F_DUPFD_CLOEXEC`).
#[allow(unsafe_code)]
fn duplicate(stream: &pingora::protocols::Stream) -> std::io::Result<OwnedFd> {
    // SAFETY: `stream` owns the descriptor `id()` names (a plain TCP socket, checked by
    // `detachable`) and outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.id()) };
    fd.try_clone_to_owned()
}

/// The stand-in's socket: reads give the replayed request head once, then end; writes vanish.
#[derive(Debug)]
struct Detached {
    head: Bytes,
}

impl VirtualSocket for Detached {
    fn set_socket_option(&self, _opt: VirtualSockOpt) -> std::io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for Detached {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.head.len().min(buf.remaining());
        let part = self.head.split_to(n);
        buf.put_slice(&part);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Detached {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
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
                    Step::Write(chunk) => {
                        (chunk.as_ref() != KEEP_ALIVE || h.still_there()) && h.send(&chunk)
                    }
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
}

impl Watch {
    fn new(asker: Asker, room: &RoomRuntime, first: &Status, json: &str, generation: u64) -> Self {
        let spread = asker.ticket.as_ref().map_or(0, |t| t.number);
        Self {
            asker,
            schedule: Schedule::new(Instant::now(), &room.cfg.settings, first, spread),
            last: hash(json),
            generation,
        }
    }

    /// Wakes at `now`: the new answer if it changed, a keep-alive when one is due, or nothing.
    fn step(&mut self, room: &RoomRuntime, now: Instant) -> Step {
        match self.schedule.on_wake(now) {
            Wake::Nothing => Step::Nothing,
            Wake::End => Step::End,
            Wake::Recompute { keep_alive } => {
                let (st, _) = self.asker.status(room, clock::now());
                let json = st.to_json();
                self.schedule.recomputed(now, &st);
                let h = hash(&json);
                if h != self.last {
                    self.last = h;
                    self.schedule.wrote(now);
                    Step::Write(Bytes::from(format!("data: {json}\n\n")))
                } else if keep_alive {
                    Step::Write(Bytes::from_static(KEEP_ALIVE))
                } else {
                    Step::Nothing
                }
            }
        }
    }
}

fn hash(s: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(s)
}

/// When a stream wakes and what it does then: a sans-io schedule, so the hub and the
/// on-Pingora loop are only I/O.
///
/// A stream costs nothing between wake-ups: it waits on its room's change signal (advanced only
/// when an answer could differ, see `RoomView::same_answers`) and on one deadline, the earliest
/// of its keep-alive, its lifetime's end and — after a change — the time it may push again. It
/// pushes at most once per gap: one second near the front of the line (a serving-number change
/// reaches those shoppers within a second), the status's `poll_after` elsewhere (so a stream
/// never costs more than the polling it replaces). It verifies no token: the credentials were
/// read once when it opened, and it ends (the browser reconnects with the ticket the stream's
/// response renewed) `abandon_after` less a margin (an eighth of it, at least two poll
/// intervals) after it opened, before that ticket would lapse. It also ends once the answer is
/// final (admitted, sold out, closed).
#[derive(Debug)]
struct Schedule {
    end: Instant,
    keep_alive_at: Instant,
    /// Not before: the end of the current push gap.
    next_push: Instant,
    gap: Duration,
    /// The room changed and the answer has not been looked at since.
    dirty: bool,
    done: bool,
}

/// What a stream does on waking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Nothing,
    End,
    /// Compute the answer again; write it if it changed, or a keep-alive if `keep_alive`.
    Recompute {
        keep_alive: bool,
    },
}

impl Schedule {
    /// `spread` (the ticket's number) shortens the lifetime by up to half the margin, so that
    /// streams opened together (after a restart, say) do not all reconnect in the same second.
    fn new(now: Instant, settings: &waitroom::RoomSettings, first: &Status, spread: u64) -> Self {
        // The stream's response renewed the ticket for `abandon_after`; the browser reconnects
        // (after the stream's `retry`, 2 s) with that ticket well before it lapses.
        let margin = (settings.abandon_after / 8).max(settings.poll_interval * 2);
        let sixty_fourths = (spread.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as u32;
        let lifetime = settings
            .abandon_after
            .saturating_sub(margin + margin / 2 * sixty_fourths / 64)
            .clamp(Duration::from_secs(1), MAX_LIFETIME);
        let gap = push_gap(first);
        Self {
            end: now + lifetime,
            keep_alive_at: now + KEEP_ALIVE_EVERY,
            next_push: now + gap,
            gap,
            dirty: false,
            done: is_final(first),
        }
    }

    fn next_wake(&self) -> Instant {
        let mut at = self.keep_alive_at.min(self.end);
        if self.dirty {
            at = at.min(self.next_push);
        }
        at
    }

    fn on_wake(&mut self, now: Instant) -> Wake {
        if now >= self.end {
            return Wake::End;
        }
        let keep_alive = now >= self.keep_alive_at;
        if keep_alive {
            self.keep_alive_at = now + KEEP_ALIVE_EVERY;
        }
        if (self.dirty && now >= self.next_push) || keep_alive {
            return Wake::Recompute { keep_alive };
        }
        Wake::Nothing
    }

    fn recomputed(&mut self, now: Instant, st: &Status) {
        self.dirty = false;
        self.gap = push_gap(st);
        self.next_push = self.next_push.max(now);
        self.done = is_final(st);
    }

    fn wrote(&mut self, now: Instant) {
        self.next_push = now + self.gap;
        self.keep_alive_at = now + KEEP_ALIVE_EVERY;
    }
}

/// The least time between two pushes for a shopper told `st`.
fn push_gap(st: &Status) -> Duration {
    let poll = Duration::from_millis(st.poll_after_ms);
    let near_front = st.position.is_some_and(|p| p <= 1)
        || st
            .eta_low_seconds
            .is_some_and(|low| Duration::from_secs(low) <= poll * 2);
    if near_front {
        FRONT_GAP
    } else {
        poll.max(FRONT_GAP)
    }
}

/// Whether nothing can change this answer any more.
fn is_final(st: &Status) -> bool {
    st.admitted || matches!(st.state, "sold_out" | "closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(position: u64, poll_ms: u64) -> Status {
        let mut st = Status::bare(
            "drop",
            waitroom::RoomState::Queueing,
            0,
            Duration::ZERO,
            None,
        );
        st.position = Some(position);
        st.poll_after_ms = poll_ms;
        st
    }

    fn settings() -> waitroom::RoomSettings {
        let nz = |n| std::num::NonZeroU32::new(n).expect("non-zero");
        waitroom::RoomSettings::new("drop", nz(60), nz(500))
    }

    #[test]
    fn an_idle_stream_wakes_only_for_keep_alives_and_its_end() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, &settings(), &waiting(500, 20_000), 0);
        assert_eq!(s.next_wake(), t0 + KEEP_ALIVE_EVERY);
        let at = s.next_wake();
        assert_eq!(s.on_wake(at), Wake::Recompute { keep_alive: true });
        s.recomputed(at, &waiting(500, 20_000));
        assert_eq!(s.next_wake(), at + KEEP_ALIVE_EVERY);
        // abandon_after 120 s, poll 5 s: the stream ends at 105 s.
        assert_eq!(
            s.on_wake(t0 + Duration::from_secs(104)),
            Wake::Recompute { keep_alive: true }
        );
        assert_eq!(s.on_wake(t0 + Duration::from_secs(105)), Wake::End);
    }

    #[test]
    fn streams_opened_together_end_apart_and_before_their_ticket_lapses() {
        let t0 = Instant::now();
        let ends: std::collections::BTreeSet<_> = (1..=100)
            .map(|n| Schedule::new(t0, &settings(), &waiting(500, 5_000), n).end)
            .collect();
        // abandon_after 120 s, margin 15 s: between 97.5 s and 105 s, spread out.
        assert!(ends.len() > 30, "{} distinct ends", ends.len());
        let (first, last) = (*ends.first().expect("some"), *ends.last().expect("some"));
        assert!(
            first >= t0 + Duration::from_millis(97_500),
            "{:?}",
            first - t0
        );
        assert!(last <= t0 + Duration::from_secs(105), "{:?}", last - t0);
    }

    #[test]
    fn a_change_is_pushed_after_the_gap_not_before() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, &settings(), &waiting(500, 20_000), 0);
        let soon = t0 + Duration::from_secs(1);
        s.dirty = true;
        assert_eq!(s.on_wake(soon), Wake::Nothing);
        // Far back: the gap is the poll interval (20 s), before the keep-alive (25 s).
        assert_eq!(s.next_wake(), t0 + Duration::from_secs(20));
        let at = s.next_wake();
        assert_eq!(s.on_wake(at), Wake::Recompute { keep_alive: false });
        s.recomputed(at, &waiting(400, 20_000));
        s.wrote(at);
        assert!(!s.dirty);
    }

    #[test]
    fn near_the_front_a_change_arrives_within_a_second() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, &settings(), &waiting(1, 5_000), 0);
        s.dirty = true;
        assert_eq!(s.on_wake(t0 + Duration::from_millis(300)), Wake::Nothing);
        assert_eq!(s.next_wake(), t0 + FRONT_GAP);
        assert_eq!(
            s.on_wake(t0 + FRONT_GAP),
            Wake::Recompute { keep_alive: false }
        );
    }

    #[test]
    fn a_final_answer_ends_the_stream() {
        let mut st = waiting(1, 5_000);
        st.admitted = true;
        assert!(Schedule::new(Instant::now(), &settings(), &st, 0).done);
    }

    #[test]
    fn the_stand_in_replays_the_head_then_ends() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let head = Bytes::from_static(
                b"GET /.flashgate/events?room=drop HTTP/1.1\r\nHost: shop\r\n\r\n",
            );
            let sock = Detached { head };
            let mut s = ServerSession::new_http1(Box::new(L4Stream::from(
                VirtualSocketStream::new(Box::new(sock)),
            )));
            assert!(s.read_request().await.expect("parses"));
            assert_eq!(s.req_header().uri.path(), "/.flashgate/events");
            let h = ResponseHeader::build(200, None).expect("head");
            s.write_response_header(Box::new(h))
                .await
                .expect("vanishes");
            s.set_keepalive(None);
            assert!(
                s.finish().await.expect("finishes").is_none(),
                "never reused"
            );
        });
    }
}
