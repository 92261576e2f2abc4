//! `/.flashgate/*`: the waiting page's assets, the status poll, server-sent events, the
//! proof-of-work challenge, leaving the line and rating the wait.
//!
//! Each route reads the request's [`Credentials`] once. Polls and event streams share one
//! status computation ([`Gate::status_of`]), answered from the node's view of the room: no
//! store call per poll.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;
use waitroom::{Credential, Decision, UnixMillis};

use super::credentials::{CookieOp, Credentials, Outgoing};
use super::reply::{asset, json_wanted, post_only, respond, respond_with};
use super::request::header;
use super::{Ctx, Gate};
use crate::bot::{self, RequestFacts, RouteClass, Verdict};
use crate::clock;
use crate::events::{AbandonReason, EndReason, EventKind};
use crate::http_util::{query_param, safe_return_path};
use crate::metrics::Outcome;
use crate::pages::{Status, WAITING_CSS, WAITING_JS};
use crate::rooms::RoomRuntime;

/// A comment line that keeps intermediaries from timing an idle stream out.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
/// How often an idle stream writes [`KEEP_ALIVE`] (and looks at its answer again, which may
/// drift with the measured admission rate though the room did not change).
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(25);
/// The longest a stream lasts; see [`Stream`].
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// The quickest a stream near the front of the line is pushed a new answer.
const FRONT_GAP: Duration = Duration::from_secs(1);

const JSON: &str = "application/json";

/// The routes under `/.flashgate/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Asset(&'static str, &'static str),
    Challenge,
    Status,
    Events,
    Leave,
    Feedback,
    NotFound,
}

impl Route {
    /// Routes that change something: POST only (anything else gets 405).
    fn post_only(self) -> bool {
        matches!(self, Route::Challenge | Route::Leave | Route::Feedback)
    }

    fn of(rest: &str) -> Self {
        match rest {
            "assets/waiting.css" => Route::Asset("text/css; charset=utf-8", WAITING_CSS),
            "assets/waiting.js" => Route::Asset("text/javascript; charset=utf-8", WAITING_JS),
            "challenge" => Route::Challenge,
            "status" => Route::Status,
            "events" => Route::Events,
            "leave" => Route::Leave,
            "feedback" => Route::Feedback,
            other => bot::page::ASSETS
                .iter()
                .find(|(p, _, _)| *p == other)
                .map_or(Route::NotFound, |(_, ctype, body)| {
                    Route::Asset(ctype, body)
                }),
        }
    }
}

impl Gate {
    /// Serves `/.flashgate/<rest>`.
    pub(crate) async fn shopper_api(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        rest: &str,
        now: UnixMillis,
    ) -> Result<()> {
        ctx.outcome = Outcome::Reserved;
        let route = Route::of(rest);
        if route.post_only() && !post_only(s).await? {
            return Ok(());
        }
        match route {
            Route::Asset(ctype, body) => return asset(s, ctype, body).await,
            Route::NotFound => return respond(s, 404, "text/plain", "not found\n", &[]).await,
            Route::Challenge => return self.challenge(s, ctx, now).await,
            Route::Status | Route::Events | Route::Leave | Route::Feedback => {}
        }
        let query = s.req_header().uri.query();
        let room = query_param(query, "room").and_then(|id| ctx.live.rooms.by_id(&id).cloned());
        let Some(room) = room else {
            let body = r#"{"error":"unknown room"}"#;
            return respond(s, 404, JSON, body, &[]).await;
        };
        let keys = &ctx.live.config.keys;
        let creds = Credentials::read(s.req_header(), &room, keys, ctx.client.addr, now);
        match route {
            Route::Status | Route::Events => {
                // Poll limits and the infinite queue apply to polls too.
                let tarpit = match self.poll_verdict(s, ctx, &room, &creds, now) {
                    Verdict::Tarpit => true,
                    v @ (Verdict::Block(_) | Verdict::Limited { .. }) => {
                        return self.bot(s, ctx, &room, v).await
                    }
                    Verdict::Allow | Verdict::Bypass | Verdict::Challenge(_) => false,
                };
                let stream = route == Route::Events;
                self.poll(s, ctx, &room, tarpit, &creds, stream).await
            }
            Route::Feedback => self.feedback(s, &room, &creds, now).await,
            Route::Leave => self.leave(s, ctx, &room, &creds, now).await,
            Route::Asset(..) | Route::NotFound | Route::Challenge => Ok(()),
        }
    }

    /// The bot verdict for a status poll or event stream of `room`.
    fn poll_verdict(
        &self,
        s: &Session,
        ctx: &Ctx,
        room: &RoomRuntime,
        creds: &Credentials,
        now: UnixMillis,
    ) -> Verdict {
        let mut facts = RequestFacts::new(&s.req_header().headers, ctx.client.addr, now);
        facts.tls = ctx.client.secure;
        facts.route = RouteClass::Poll;
        facts.credential = creds.bot_credential();
        facts.poll_after = Some(room.cfg.settings.poll_interval);
        self.node.bot.check(room.id(), &room.cfg.bot, &facts)
    }

    /// Reads a request body of at most `max` bytes (`None` when larger).
    async fn read_body(s: &mut Session, max: usize) -> Result<Option<Vec<u8>>> {
        let mut body = Vec::new();
        while let Some(chunk) = s.read_request_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() > max {
                return Ok(None);
            }
        }
        Ok(Some(body))
    }

    /// `POST /.flashgate/challenge`: verifies a proof-of-work solution and sets the
    /// challenge-passed cookie.
    async fn challenge(&self, s: &mut Session, ctx: &mut Ctx, now: UnixMillis) -> Result<()> {
        let Some(body) = Self::read_body(s, bot::MAX_SOLUTION_BODY).await? else {
            let body = r#"{"ok":false,"error":"too_large"}"#;
            return respond(s, 413, JSON, body, &[]).await;
        };
        let sol = match bot::parse_solution(&body) {
            Ok(sol) => sol,
            Err(e) => {
                let r = bot::page::solution_response(&Err(e), None, ctx.client.secure);
                return respond(s, r.status, JSON, r.body, &[]).await;
            }
        };
        let Some(room) = ctx.live.rooms.by_id(&sol.room).cloned() else {
            let body = r#"{"ok":false,"error":"unknown room"}"#;
            return respond(s, 404, JSON, body, &[]).await;
        };
        let mut facts = RequestFacts::new(&s.req_header().headers, ctx.client.addr, now);
        facts.tls = ctx.client.secure;
        let result = self
            .node
            .bot
            .accept_solution(room.id(), &room.cfg.bot, &sol, &facts)
            .await;
        if let Err(e) = &result {
            if let Some(reason) = crate::events::ChallengeFailure::from_bot(*e) {
                self.emit(&room, EventKind::ChallengeFailed { reason }, 0, now);
            }
        }
        let r = bot::page::solution_response(&result, sol.return_to.as_deref(), ctx.client.secure);
        let mut headers = Vec::new();
        if let Some(c) = r.set_cookie {
            headers.push(("set-cookie", c));
        }
        if let Some(retry) = r.retry_after {
            headers.push(("retry-after", retry.to_string()));
        }
        respond(s, r.status, JSON, r.body, &headers).await
    }

    /// `POST /.flashgate/feedback?room=ID`: a waiting or admitted shopper rates the wait
    /// (`rating` 1-5, optional short `comment`): counted in the room's report and metrics and
    /// sent to the event stream, once per ticket on this node (429 after that). A form post
    /// gets 303 back to `return`, JSON gets 204.
    async fn feedback(
        &self,
        s: &mut Session,
        room: &RoomRuntime,
        creds: &Credentials,
        now: UnixMillis,
    ) -> Result<()> {
        let rater = creds
            .pass
            .as_ref()
            .map(|p| (p.event, p.ticket))
            .or_else(|| creds.ticket.as_ref().map(|t| (t.event, t.number)));
        // Ticket 0 is shared by every pass minted at the floor rate while the store failed:
        // those shoppers never waited, and one rating each could not be enforced.
        let Some((event, number)) = rater.filter(|(_, n)| *n != 0) else {
            let body = r#"{"error":"a ticket or pass for this room is needed"}"#;
            return respond(s, 403, JSON, body, &[]).await;
        };
        let ctype = header(s.req_header(), "content-type").map(str::to_owned);
        let json = ctype.as_deref().is_some_and(|c| c.contains("json"));
        let return_to = query_param(s.req_header().uri.query(), "return")
            .filter(|r| safe_return_path(r))
            .map(|r| r.into_owned())
            .unwrap_or_else(|| "/".into());
        let Some(body) = Self::read_body(s, crate::events::MAX_FEEDBACK_BODY).await? else {
            return respond(s, 413, JSON, r#"{"error":"too large"}"#, &[]).await;
        };
        let kind = match crate::events::parse_feedback(ctype.as_deref(), &body) {
            Ok(kind) => kind,
            Err(e) => {
                let body = serde_json::json!({ "error": e.to_string() }).to_string();
                return respond(s, 400, JSON, body, &[]).await;
            }
        };
        let EventKind::Feedback { rating, .. } = &kind else {
            // `parse_feedback` makes nothing else.
            return respond(s, 400, JSON, r#"{"error":"not a rating"}"#, &[]).await;
        };
        let rating = rating.get();
        // One rating per ticket (a pass carries its ticket's number) on this node.
        if !room.record_feedback(event, number, rating) {
            return if json {
                let body = r#"{"error":"this ticket has already rated the wait"}"#;
                respond(s, 429, JSON, body, &[]).await
            } else {
                let back = crate::http_util::escape_html(&return_to);
                let html = format!(
                    "<!doctype html><meta charset=\"utf-8\"><title>Thank you</title>\
                     <p>You have already rated your wait. Thank you!</p>\
                     <p><a href=\"{back}\">Back to your place in line</a></p>\n"
                );
                respond(s, 429, "text/html; charset=utf-8", html, &[]).await
            };
        }
        self.node
            .metrics
            .feedback
            .with_label_values(&[room.id(), &rating.to_string()])
            .inc();
        self.emit(room, kind, number, now);
        if json {
            respond(s, 204, JSON, "", &[]).await
        } else {
            // `#fg-thanks` is the waiting page's "thanks" note (shown by CSS :target).
            let location = format!("{return_to}#fg-thanks");
            let headers = [("location", location)];
            respond(s, 303, "text/plain", "Thank you!\n", &headers).await
        }
    }

    /// The status of the request's ticket, from the node's view (no store call), and the
    /// renewed ticket that keeps the place (signed only for a response: see [`Self::renewal`]).
    pub(crate) fn status_of(
        &self,
        req: &RequestHeader,
        room: &RoomRuntime,
        tarpit: bool,
        creds: &Credentials,
        now: UnixMillis,
    ) -> (Status, Option<waitroom::Ticket>) {
        let view = room.view();
        let settings = &room.cfg.settings;
        let return_to = query_param(req.uri.query(), "return")
            .filter(|r| safe_return_path(r))
            .map(|r| r.into_owned());
        let mut bare = Status::bare(
            room.id(),
            view.state,
            view.serving(),
            settings.poll_interval,
            view.message.clone(),
        );
        if creds.pass.is_some() {
            bare.admitted = true;
            bare.redirect = return_to;
            return (bare, None);
        }
        let Some(t) = creds.ticket.as_ref() else {
            return (bare, None);
        };
        match view.decide(settings, Credential::Ticket(t), now) {
            Decision::Wait(w) => (Status::waiting(room.id(), &w), Some(w.renewed)),
            Decision::Admit(req) if tarpit || !view.likely_claimable(&req) => {
                // Your turn, but this minute's entries are used up or the room is full: next.
                let mut w = view.wait_info(settings, t, Some(view.serving() + 1), now);
                w.position = Some(1);
                w.ahead = Some(0);
                (Status::waiting(room.id(), &w), Some(w.renewed))
            }
            Decision::Admit(_) => {
                // Your turn: the claim happens on the next page request, which carries the ticket.
                bare.ticket = Some(t.number);
                bare.position = Some(0);
                bare.ahead = Some(0);
                bare.admitted = true;
                bare.redirect = return_to;
                let mut renewed = t.clone();
                renewed.last_seen = now.secs();
                renewed.expires_at = now.plus(settings.abandon_after).secs();
                (bare, Some(renewed))
            }
            Decision::Reject(_) | Decision::NeedTicket | Decision::Allow { .. } => (bare, None),
        }
    }

    /// The cookies that renew `ticket` (if any) for `room`.
    fn renewal(
        &self,
        ctx: &Ctx,
        room: &RoomRuntime,
        ticket: Option<&waitroom::Ticket>,
    ) -> Outgoing {
        let mut out = Outgoing::for_room(room, ctx.client.secure);
        if let Some(t) = ticket {
            let keys = &ctx.live.config.keys;
            out.set_ticket(keys, t, room.cfg.settings.abandon_after);
        }
        out
    }

    /// A status poll or an event stream: the status now, as one JSON answer or as the first
    /// event of a stream (see [`Stream`]).
    async fn poll(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        tarpit: bool,
        creds: &Credentials,
        stream: bool,
    ) -> Result<()> {
        // A stream subscribes before the status is read: a change from then on is not missed.
        let changes = stream.then(|| room.changes());
        let (first, renewed) = self.status_of(s.req_header(), room, tarpit, creds, clock::now());
        let out = self.renewal(ctx, room, renewed.as_ref());
        match changes {
            Some(changes) => {
                self.events(s, room, tarpit, creds, changes, first, out)
                    .await
            }
            None => {
                let retry = (first.poll_after_ms / 1000).max(1).to_string();
                let headers = [("retry-after", retry)];
                respond_with(s, 200, JSON, first.to_json(), &headers, &out).await
            }
        }
    }

    /// Server-sent events: the status pushed when it changes. See [`Stream`].
    #[allow(clippy::too_many_arguments)]
    async fn events(
        &self,
        s: &mut Session,
        room: &RoomRuntime,
        tarpit: bool,
        creds: &Credentials,
        mut changes: tokio::sync::watch::Receiver<u64>,
        first: Status,
        out: Outgoing,
    ) -> Result<()> {
        let mut h = ResponseHeader::build(200, Some(5))?;
        h.insert_header("content-type", "text/event-stream")?;
        h.insert_header("cache-control", "no-store")?;
        h.insert_header("x-accel-buffering", "no")?;
        out.write(&mut h)?;
        s.write_response_header(Box::new(h), false).await?;
        let mut last = first.to_json();
        s.write_response_body(
            Some(Bytes::from(format!("retry: 2000\ndata: {last}\n\n"))),
            false,
        )
        .await?;
        let settings = &room.cfg.settings;
        let mut stream = Stream::new(Instant::now(), settings, &first);
        while !stream.done {
            let wake = stream.next_wake();
            let changed = tokio::select! {
                r = changes.changed(), if !stream.dirty => match r {
                    Ok(()) => true,
                    Err(_) => break, // the room is gone (a reload removed it)
                },
                () = tokio::time::sleep_until(wake.into()) => false,
            };
            let at = Instant::now();
            let chunk = match stream.on_wake(at, changed) {
                Wake::Nothing => continue,
                Wake::End => break,
                Wake::Recompute { keep_alive } => {
                    let now = clock::now();
                    let (st, _) = self.status_of(s.req_header(), room, tarpit, creds, now);
                    let json = st.to_json();
                    stream.recomputed(at, &st);
                    if json != last {
                        let chunk = Bytes::from(format!("data: {json}\n\n"));
                        last = json;
                        stream.wrote(at);
                        chunk
                    } else if keep_alive {
                        Bytes::from_static(KEEP_ALIVE)
                    } else {
                        continue;
                    }
                }
            };
            s.write_response_body(Some(chunk), false).await?;
        }
        s.write_response_body(None, true).await
    }

    /// Gives up a place or ends a session, freeing capacity at once.
    async fn leave(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        creds: &Credentials,
        now: UnixMillis,
    ) -> Result<()> {
        let store = &self.node.store;
        let mut left = false;
        if let Some(p) = &creds.pass {
            room.mark_ended(p.ticket);
            left |= store
                .release(room.id(), p.ticket, Some(p.checkin_minute))
                .await
                .is_ok();
            let ended = EventKind::SessionEnded {
                reason: EndReason::Leave,
            };
            self.ended(room, "leave", ended, p.ticket, now);
        }
        if let Some(t) = &creds.ticket {
            left |= store.release(room.id(), t.number, None).await.is_ok();
            let gave_up = EventKind::Abandoned {
                reason: AbandonReason::Left,
            };
            self.ended(room, "leave_queue", gave_up, t.number, now);
        }
        let mut out = Outgoing::for_room(room, ctx.client.secure);
        out.pass = CookieOp::Clear;
        out.ticket = CookieOp::Clear;
        if json_wanted(s) {
            let body = format!("{{\"left\":{left}}}");
            respond_with(s, 200, JSON, body, &[], &out).await
        } else {
            let headers = [("location", "/".into())];
            respond_with(s, 303, "text/plain", "You left the line.\n", &headers, &out).await
        }
    }
}

/// When a server-sent-events stream wakes and what it does then: a sans-io schedule, so the
/// loop in [`Gate::events`] is only I/O.
///
/// A stream costs nothing between wake-ups: it waits on its room's change signal (advanced only
/// when an answer could differ, see `RoomView::same_answers`) and on one timer, the earliest of
/// its keep-alive, its lifetime's end and — after a change — the time it may push again. It
/// pushes at most once per gap: one second near the front of the line (a serving-number change
/// reaches those shoppers within a second), the status's `poll_after` elsewhere (so a stream
/// never costs more than the polling it replaces). It verifies no token: the credentials were
/// read once when it opened, and it ends (the browser reconnects with the ticket the stream's
/// response renewed) `abandon_after` less a margin (an eighth of it, at least two poll
/// intervals) after it opened, before that ticket would lapse. It also ends once the answer is final (admitted, sold out, closed).
#[derive(Debug)]
struct Stream {
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

impl Stream {
    fn new(now: Instant, settings: &waitroom::RoomSettings, first: &Status) -> Self {
        // The stream's response renewed the ticket for `abandon_after`; the browser reconnects
        // (after the stream's `retry`, 2 s) with that ticket well before it lapses.
        let margin = (settings.abandon_after / 8).max(settings.poll_interval * 2);
        let lifetime = settings
            .abandon_after
            .saturating_sub(margin)
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

    fn on_wake(&mut self, now: Instant, changed: bool) -> Wake {
        self.dirty |= changed;
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
        let mut s = Stream::new(t0, &settings(), &waiting(500, 20_000));
        assert_eq!(s.next_wake(), t0 + KEEP_ALIVE_EVERY);
        let at = s.next_wake();
        assert_eq!(s.on_wake(at, false), Wake::Recompute { keep_alive: true });
        s.recomputed(at, &waiting(500, 20_000));
        assert_eq!(s.next_wake(), at + KEEP_ALIVE_EVERY);
        // abandon_after 120 s, poll 5 s: the stream ends at 105 s.
        assert_eq!(
            s.on_wake(t0 + Duration::from_secs(104), false),
            Wake::Recompute { keep_alive: true }
        );
        assert_eq!(s.on_wake(t0 + Duration::from_secs(105), false), Wake::End);
    }

    #[test]
    fn a_change_is_pushed_after_the_gap_not_before() {
        let t0 = Instant::now();
        let mut s = Stream::new(t0, &settings(), &waiting(500, 20_000));
        let soon = t0 + Duration::from_secs(1);
        assert_eq!(s.on_wake(soon, true), Wake::Nothing);
        assert!(s.dirty);
        // Far back: the gap is the poll interval (20 s), before the keep-alive (25 s).
        assert_eq!(s.next_wake(), t0 + Duration::from_secs(20));
        let at = s.next_wake();
        assert_eq!(s.on_wake(at, false), Wake::Recompute { keep_alive: false });
        s.recomputed(at, &waiting(400, 20_000));
        s.wrote(at);
        assert!(!s.dirty);
    }

    #[test]
    fn near_the_front_a_change_arrives_within_a_second() {
        let t0 = Instant::now();
        let mut s = Stream::new(t0, &settings(), &waiting(1, 5_000));
        let at = t0 + Duration::from_millis(300);
        assert_eq!(s.on_wake(at, true), Wake::Nothing);
        assert_eq!(s.next_wake(), t0 + FRONT_GAP);
        assert_eq!(
            s.on_wake(t0 + FRONT_GAP, false),
            Wake::Recompute { keep_alive: false }
        );
    }

    #[test]
    fn a_final_answer_ends_the_stream() {
        let mut st = waiting(1, 5_000);
        st.admitted = true;
        assert!(Stream::new(Instant::now(), &settings(), &st).done);
    }
}
