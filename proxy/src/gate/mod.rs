//! The gate: Flashgate's `ProxyHttp` implementation, a pipeline of small steps between Pingora
//! and the `waitroom` core. Each phase below only delegates:
//!
//! | step | file |
//! |---|---|
//! | head checks, request id, client address and TLS trust | [`request`] |
//! | the room's pass and ticket, read and verified once; the cookies a response sets | [`credentials`] |
//! | one typed outcome per request (forward, wait, next, reject, bot, degraded) | [`admission`] |
//! | `/.flashgate/*`: assets, status, events, challenge, leave, feedback | [`shopper_api`] |
//! | what a waiting shopper is told (polls and pushes alike) | [`status`] |
//! | server-sent events: streams held by one hub per room, off Pingora | [`push`] |
//! | every response the gate writes itself, HTML/JSON negotiation, CSP | [`reply`] |
//! | origin shield, server choice, header hygiene, origin commands | [`upstream`] |
//!
//! The origin is never touched by a shopper without a valid pass on a protected route. A valid
//! pass costs one HMAC and no store call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use waitroom::{Pass, UnixMillis};

use crate::clock;
use crate::config::{Branding, RouteKind};
use crate::events::{Event, EventKind};
use crate::metrics::Outcome;
use crate::node::{Live, Node};
use crate::pages::Pages;
use crate::rooms::RoomRuntime;
use crate::shield::{CacheStatus, CACHE_HEADER_NAME};

mod admission;
mod credentials;
mod push;
mod reply;
mod request;
mod shopper_api;
mod status;
mod upstream;

use credentials::{Credentials, Outgoing};
use request::{Client, Refusal};
use upstream::ShieldCtx;

/// The proxy service.
#[derive(Debug)]
pub struct Gate {
    /// The node: the config in force (swapped on reload), the store, metrics, events.
    pub node: Arc<Node>,
    pub pages: Pages,
    /// Mark every cookie `Secure` even on plain-HTTP listeners (TLS ends in front of us). Each
    /// request is also secure on its own when it came over TLS, or through a trusted proxy
    /// that says `X-Forwarded-Proto: https` (see [`request::Client`]).
    pub secure_cookies: bool,
    pub default_branding: Branding,
    /// The rooms' server-sent-event hubs (see [`push`]).
    pub(crate) hubs: push::Hubs,
}

/// Per-request state, boxed: Pingora keeps a request's context in its request future twice
/// and that future is moved into a box for every request (`process_new`), so each byte of
/// context was copied three times a request. Unboxed (496 bytes) it made the future 14,864
/// bytes against bare Pingora's ~13,400 (`RUSTC_BOOTSTRAP=1 cargo rustc --release -p flashgate
/// --lib -- -Zprint-type-sizes`); one allocation costs less than the copies.
#[derive(Debug)]
pub struct Ctx(Box<State>);

impl std::ops::Deref for Ctx {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

impl std::ops::DerefMut for Ctx {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.0
    }
}

/// What a request's [`Ctx`] holds.
#[derive(Debug)]
pub struct State {
    /// The config this request runs under, start to end (a reload does not change it midway).
    live: Arc<Live>,
    client: Client,
    route: Option<usize>,
    room: Option<Arc<RoomRuntime>>,
    /// The pass this request was let in with (revoke needs it).
    pass: Option<Pass>,
    /// The room cookies (and token header) the response sets.
    out: Outgoing,
    outcome: Outcome,
    /// Bot defence said: this shopper waits forever (an "infinite queue").
    tarpit: bool,
    /// When the request started, and the origin's status (for the access log).
    started: Instant,
    upstream_status: Option<u16>,
    shield: ShieldCtx,
}

impl Gate {
    /// Emits an event for `room` that happened at `at` (the request's clock reading; never
    /// blocks; off unless configured).
    fn emit(&self, room: &RoomRuntime, kind: EventKind, ticket: u64, at: UnixMillis) {
        if self.node.events.is_enabled() {
            let mut e = Event::new(room.name().clone(), kind);
            if ticket != 0 {
                e = e.with_ticket(ticket);
            }
            self.node.events.emit_at(e, at);
        }
    }

    /// A session or a place ended (leave, revoke): counted by `label` and sent to the event
    /// stream.
    fn ended(&self, room: &RoomRuntime, label: &str, kind: EventKind, ticket: u64, at: UnixMillis) {
        self.node
            .metrics
            .sessions_ended
            .with_label_values(&[room.id(), label])
            .inc();
        self.emit(room, kind, ticket, at);
    }

    /// Answers a refused request.
    async fn refuse(s: &mut Session, ctx: &mut Ctx, why: Refusal) -> Result<bool> {
        ctx.outcome = Outcome::BadRequest;
        let (status, body, close) = why.answer();
        let headers = [("connection", "close".to_owned())];
        let headers: &[(&str, String)] = if close { &headers } else { &[] };
        reply::respond(s, status, "text/plain", body, headers).await?;
        Ok(true)
    }

    /// The room part of `request_filter`: `Ok(true)` when the gate answered.
    async fn room_gate(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: Arc<RoomRuntime>,
        kind: RouteKind,
        now: UnixMillis,
    ) -> Result<bool> {
        ctx.out = Outgoing::for_room(&room, ctx.client.secure);
        ctx.room = Some(room.clone());
        let keys = &ctx.live.config.keys;
        let creds = Credentials::read(s.req_header(), &room, keys, ctx.client.addr, now);
        let admission = self.admit(s, ctx, &room, kind, creds, now).await;
        self.answer(s, ctx, &room, admission).await
    }
}

#[async_trait]
impl ProxyHttp for Gate {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx(Box::new(State {
            live: self.node.live(),
            client: Client::default(),
            route: None,
            room: None,
            pass: None,
            out: Outgoing::default(),
            outcome: Outcome::Forwarded,
            tarpit: false,
            started: Instant::now(),
            upstream_status: None,
            shield: ShieldCtx::default(),
        }))
    }

    async fn early_request_filter(&self, s: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.client = Client::read(s, &ctx.live.config, self.secure_cookies);
        Ok(())
    }

    async fn request_filter(&self, s: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let now = clock::now();
        if let Err(why) = request::check_head(s.req_header()) {
            return Self::refuse(s, ctx, why).await;
        }
        let path = s.req_header().uri.path().to_owned();
        if let Some(rest) = path.strip_prefix("/.flashgate/") {
            self.shopper_api(s, ctx, rest, now).await?;
            return Ok(true);
        }
        let host = request::host_of(s.req_header());
        let live = ctx.live.clone();
        let Ok(found) = request::find(&live, &host, &path, s.req_header().method.as_str()) else {
            return Self::refuse(s, ctx, Refusal::BadPath).await;
        };
        ctx.route = found.route;
        let Some(kind) = found.kind else {
            ctx.outcome = Outcome::NotFound;
            reply::respond(s, 404, "text/plain", "no route for this path\n", &[]).await?;
            return Ok(true);
        };
        if let Some(room) = found.room {
            if self.room_gate(s, ctx, room, kind, now).await? {
                return Ok(true);
            }
        }
        // Past the room (or no room): the origin shield decides between cache, origin and shed.
        self.shield_request(s, ctx, &host).await
    }

    async fn upstream_peer(&self, _s: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        self.peer(ctx)
    }

    fn fail_to_connect(
        &self,
        _s: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the origin: safe to try another server of the pool, once each.
        if self.may_retry(ctx) {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        s: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.upstream_request(s, up, ctx)
    }

    async fn upstream_response_filter(
        &self,
        s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.upstream_response(s, resp, ctx)
    }

    async fn response_filter(
        &self,
        _s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream::edit_response(resp, |h| {
            ctx.out.write_map(h)?;
            h.insert(request::X_REQUEST_ID, ctx.client.request_id.clone());
            if let Some(st) = ctx.shield.status {
                h.insert(
                    CACHE_HEADER_NAME,
                    http::HeaderValue::from_static(st.as_str()),
                );
            }
            Ok(())
        })
    }

    fn response_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let (Some(f), Some(b)) = (ctx.shield.fill.as_mut(), body.as_ref()) {
            f.chunk(b);
        }
        if end_of_stream {
            if let Some(f) = ctx.shield.fill.take() {
                let _ = f.finish(); // stores the copy and wakes the coalesced followers
            }
            ctx.shield.permit = None; // the origin exchange is over: free the pool slot
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, s: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        ctx.shield.release();
        // Pingora 0.9.1 closes the shopper's connection after a failed proxy attempt whatever
        // `can_reuse_downstream` says (it is honoured only before peer selection). Say so in
        // the response (`Connection: close`), or a keep-alive client sends its next request
        // into a closing socket and gets a reset.
        s.set_keepalive(None);
        let code = match e.etype() {
            ErrorType::HTTPStatus(c) => *c,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code >= 500 {
            ctx.outcome = Outcome::UpstreamError;
            if let (Some(entry), None) = (self.origin_failed(s, ctx), s.response_written()) {
                ctx.shield.status = Some(CacheStatus::Stale);
                if self
                    .cached(s, ctx, &entry, CacheStatus::Stale)
                    .await
                    .is_ok()
                {
                    ctx.outcome = Outcome::Cached;
                    return FailToProxy {
                        error_code: entry.status,
                        can_reuse_downstream: true,
                    };
                }
            }
        }
        if code > 0 {
            let _ = self.proxy_error(s, ctx, code).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: code > 0 && code < 500,
        }
    }

    /// A failure the shopper never saw (a stale copy answered it) is not an error to log once
    /// per request during an outage; `flashgate_cache_results_total{result="stale"}` and the
    /// upstream metrics count it.
    fn suppress_error_log(&self, _s: &Session, ctx: &Ctx, _e: &Error) -> bool {
        ctx.outcome == Outcome::Cached
    }

    async fn logging(&self, s: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        self.node.metrics.request(ctx.outcome);
        if !ctx.live.config.server.access_log {
            return;
        }
        // One event per request. The path only: a query string may carry what it should not.
        let status = s.response_written().map_or(0, |r| r.status.as_u16());
        tracing::info!(
            target: "flashgate::access",
            id = ctx.client.request_id(),
            client = ?ctx.client.addr,
            method = %s.req_header().method,
            path = %s.req_header().uri.path(),
            status,
            upstream_status = ctx.upstream_status,
            duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            decision = ctx.outcome.as_str(),
            room = ctx.room.as_ref().map(|r| r.id()),
            cache = ctx.shield.status.map(|c| c.as_str()),
            error = e.map(|e| e.to_string()),
        );
    }
}
