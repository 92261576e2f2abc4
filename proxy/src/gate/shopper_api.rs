//! `/.flashgate/*`: the waiting page's assets, the status poll, server-sent events, the
//! proof-of-work challenge, leaving the line and rating the wait.
//!
//! Each route reads the request's [`Credentials`] once. Polls and event streams share one
//! status computation ([`Asker::status`]), answered from the node's view of the room: no
//! store call per poll. Event streams are pushed from their room's hub ([`super::push`]).

use std::sync::Arc;

use pingora::proxy::Session;
use pingora::Result;
use waitroom::UnixMillis;

use super::credentials::{CookieOp, Credentials, Outgoing};
use super::reply::{asset, json_wanted, post_only, respond, respond_with};
use super::request::header;
use super::status::Asker;
use super::{Ctx, Gate};
use crate::bot::{self, RequestFacts, RouteClass, Verdict};
use crate::clock;
use crate::events::{AbandonReason, EndReason, EventKind};
use crate::http_util::{query_param, safe_return_path};
use crate::metrics::Outcome;
use crate::pages::{WAITING_CSS, WAITING_JS};
use crate::rooms::RoomRuntime;

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
    /// event of a stream (see [`super::push`]).
    async fn poll(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &Arc<RoomRuntime>,
        tarpit: bool,
        creds: &Credentials,
        stream: bool,
    ) -> Result<()> {
        // A stream subscribes before the status is read: a change from then on is not missed.
        let changes = stream.then(|| room.changes());
        let return_to = query_param(s.req_header().uri.query(), "return")
            .filter(|r| safe_return_path(r))
            .map(|r| r.into_owned());
        let asker = Asker::new(creds, tarpit, return_to);
        let (first, renewed) = asker.status(room, clock::now());
        let out = self.renewal(ctx, room, renewed.as_ref());
        match changes {
            Some(changes) => self.events(s, room, asker, first, changes, out).await,
            None => {
                let retry = (first.poll_after_ms / 1000).max(1).to_string();
                let headers = [("retry-after", retry)];
                respond_with(s, 200, JSON, first.to_json(), &headers, &out).await
            }
        }
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
