//! The gate: Flashgate's `ProxyHttp` implementation, a thin adapter between Pingora and the
//! `waitroom` core.
//!
//! Per request: find the route and the room, read the shopper's tokens, ask
//! [`RoomView::decide`](waitroom::RoomView::decide), and carry the decision out — forward,
//! answer with the waiting page or JSON, or the closed page. The origin is never touched by a
//! shopper without a valid pass on a protected route. A valid pass costs one HMAC and no store
//! call; the at-most-once-a-minute check-in it may cause runs in a spawned task.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::Backend;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use waitroom::store::ClaimOutcome;
use waitroom::token::{Expect, TokenError};
use waitroom::{Credential, Decision, Pass, RejectReason, RoomView, Ticket, UnixMillis, WaitInfo};

use crate::bot::{self, RequestFacts, RouteClass, Verdict};
use crate::clock;
use crate::config::{Branding, OnStoreError, RouteKind};
use crate::events::{AbandonReason, Actor, EndReason, Event, EventKind};
use crate::http_util::{
    clear_cookie, client_ip, cookie_for, query_param, safe_return_path, set_cookie,
    strip_own_cookies, wants_json, CookieAttrs,
};
use crate::metrics::Outcome;
use crate::node::{Live, Node};
use crate::pages::{Pages, Status, WaitingPage, WAITING_CSS, WAITING_JS};
use crate::rooms::RoomRuntime;
use crate::shield::{CacheKey, CacheStatus, Entry, FillGuard, Permit, Resolved, CACHE_HEADER_NAME};

/// Header carrying a ticket or pass for apps that keep no cookies (both directions).
pub const TOKEN_HEADER: &str = "x-flashgate-token";
/// Header names written on every response, parsed once.
const TOKEN_NAME: http::HeaderName = http::HeaderName::from_static(TOKEN_HEADER);
const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
/// Response header through which the origin gives commands (stripped before the shopper).
pub const COMMAND_HEADER: &str = "x-flashgate-command";

/// How long one server-sent-events response lasts before the browser reconnects (which also
/// renews the ticket cookie, so the shopper keeps the place while watching the stream).
const SSE_LIFETIME: Duration = Duration::from_secs(50);

/// The proxy service.
#[derive(Debug)]
pub struct Gate {
    /// The node: the config in force (swapped on reload), the store, metrics, events.
    pub node: Arc<Node>,
    pub pages: Pages,
    /// Mark every cookie `Secure` even on plain-HTTP listeners (TLS ends in front of us). Each
    /// request is also secure on its own when it came over TLS, or through a trusted proxy
    /// that says `X-Forwarded-Proto: https` (see `Ctx::secure`).
    pub secure_cookies: bool,
    pub default_branding: Branding,
}

/// Per-request state.
#[derive(Debug)]
pub struct Ctx {
    /// The config this request runs under, start to end (a reload does not change it midway).
    live: Arc<Live>,
    request_id: String,
    /// The shopper reached us over HTTPS: cookies get `Secure`, the origin gets
    /// `X-Forwarded-Proto: https`.
    secure: bool,
    client: Option<IpAddr>,
    route: Option<usize>,
    room: Option<Arc<RoomRuntime>>,
    /// The pass this request was let in with (revoke needs it).
    pass: Option<Pass>,
    set_cookies: Vec<String>,
    /// Token to echo in `X-Flashgate-Token` (apps without cookies).
    token_out: Option<String>,
    tried: Vec<Backend>,
    outcome: Outcome,
    upstream_started: Option<Instant>,
    /// Bot defence said: this shopper waits forever (an "infinite queue").
    tarpit: bool,
    /// When the request started, and the origin's status (for the access log).
    started: Instant,
    upstream_status: Option<u16>,
    /// Origin shield: the cache key, what the cache did, the fill this request leads, the
    /// pool slot it holds, and a stale copy to serve if the origin fails.
    cache_key: Option<CacheKey>,
    cache_status: Option<CacheStatus>,
    fill: Option<FillGuard>,
    permit: Option<Permit>,
    stale: Option<Arc<Entry>>,
}

/// A request id: 24 hex digits, a random per-process prefix and a counter. Unique per node and
/// cheap (no system call per request); it need not be unpredictable.
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 4];
        // A failing OS RNG leaves zeros: ids stay unique on this node.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
        u32::from_be_bytes(b)
    });
    // 24 hex digits, written by hand: `format!` costs a microsecond here, on every request.
    let n = (u128::from(prefix) << 64) | u128::from(COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut id = String::with_capacity(24);
    for shift in (0..24).rev() {
        id.push(char::from(
            b"0123456789abcdef"[((n >> (shift * 4)) & 0xf) as usize],
        ));
    }
    id
}

fn host_of(req: &RequestHeader) -> String {
    let raw = req
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or("");
    let host = match raw.rsplit_once(':') {
        Some((h, port))
            if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(']')
                || raw.starts_with('[') && raw.contains("]:") =>
        {
            h
        }
        _ => raw,
    };
    // `shop.test.` (the fully qualified form) names the same site as `shop.test`.
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Largest request head (target and header fields) forwarded; larger ones get 431.
pub const MAX_REQUEST_HEAD: usize = 32 * 1024;

/// The size of a request's target and header fields, as sent (near enough).
fn head_bytes(req: &RequestHeader) -> usize {
    let target = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
    req.headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + target
}

/// Why the request's `Host` is unacceptable (RFC 9112 §3.2), if it is.
fn bad_host(req: &RequestHeader) -> Option<&'static str> {
    let mut hosts = req.headers.get_all("host").iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some("more than one Host header\n"),
        (Some(h), None) => {
            let ok = h.to_str().is_ok_and(crate::http_util::valid_host);
            (!ok).then_some("malformed Host header\n")
        }
        (None, _) if req.version == http::Version::HTTP_11 && req.uri.host().is_none() => {
            Some("HTTP/1.1 needs a Host header\n")
        }
        (None, _) => None,
    }
}

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Content-Security-Policy of Flashgate's own pages (waiting, challenge, closed, error).
pub const PAGE_CSP: &str =
    "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; \
     style-src-attr 'unsafe-inline'; img-src 'self' https: data:; connect-src 'self'; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// A response written by the gate itself: always with Content-Length, so keep-alive survives.
async fn respond(
    s: &mut Session,
    status: u16,
    content_type: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, String)],
) -> Result<()> {
    let body: Bytes = body.into();
    let mut h = ResponseHeader::build(status, Some(6 + headers.len()))?;
    h.insert_header("content-type", content_type)?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "no-store")?;
    if content_type.starts_with("text/html") {
        // Our pages load only our own assets; the logo may be an https URL. The one inline
        // style attribute (brand colours on <body>) needs style-src-attr.
        h.insert_header("content-security-policy", PAGE_CSP)?;
        h.insert_header("x-content-type-options", "nosniff")?;
        h.insert_header("referrer-policy", "same-origin")?;
    }
    for (k, v) in headers {
        h.append_header(k.to_string(), v.as_str())?;
    }
    let head_only = s.req_header().method == http::Method::HEAD;
    s.write_response_header(Box::new(h), head_only).await?;
    if !head_only {
        s.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// What a request carries, verified ([`Gate::verified`]).
#[derive(Debug, Default)]
struct Verified {
    pass: Option<Pass>,
    ticket: Option<Ticket>,
}

/// Answers 405 unless the request is a POST; `Ok(true)` when it is one.
async fn post_only(s: &mut Session) -> Result<bool> {
    if s.req_header().method == http::Method::POST {
        return Ok(true);
    }
    respond(
        s,
        405,
        "text/plain",
        "use POST\n",
        &[("allow", "POST".into())],
    )
    .await?;
    Ok(false)
}

/// The pass behind an expired pass token (signature, room and client still checked).
fn expired_pass(keys: &waitroom::KeyRing, token: &str, expect: &Expect<'_>) -> Option<Pass> {
    let far = Expect {
        leeway: Duration::from_secs(u64::from(u32::MAX)),
        ..*expect
    };
    keys.verify_pass(token, &far).ok()
}

/// The ticket behind an expired ticket token (signature, room and client still checked).
fn expired_ticket(keys: &waitroom::KeyRing, token: &str, expect: &Expect<'_>) -> Option<Ticket> {
    let far = Expect {
        leeway: Duration::from_secs(u64::from(u32::MAX)),
        ..*expect
    };
    keys.verify_ticket(token, &far).ok()
}

fn pass_cookie_name(room: &str) -> String {
    format!("fg_p_{room}")
}

fn ticket_cookie_name(room: &str) -> String {
    format!("fg_t_{room}")
}

impl Gate {
    fn attrs(&self, secure: bool, max_age: Duration) -> CookieAttrs {
        CookieAttrs {
            secure,
            max_age: Some(max_age.as_secs().max(1)),
        }
    }

    /// The tokens a request carries for `room`: (pass, ticket) strings, unverified.
    fn tokens<'a>(&self, req: &'a RequestHeader, room: &str) -> (Option<&'a str>, Option<&'a str>) {
        let cookies = || req.headers.get_all("cookie").iter().map(|v| v.as_bytes());
        let pass = cookie_for(cookies(), "fg_p_", room);
        let ticket = cookie_for(cookies(), "fg_t_", room);
        let header = header(req, TOKEN_HEADER);
        // The header may hold either kind; verification tells which.
        (pass.or(header), ticket.or(header))
    }

    fn expect<'a>(
        &self,
        room: &'a RoomRuntime,
        req: &RequestHeader,
        ctx: &Ctx,
        now: UnixMillis,
    ) -> Expect<'a> {
        let ua = header(req, "user-agent").unwrap_or("");
        Expect {
            room: room.id(),
            binding: room.cfg.binding.value(ua.as_bytes(), ctx.client),
            now,
            leeway: room.cfg.settings.token_leeway,
        }
    }

    fn route_for(live: &Live, host: &str, path: &str) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (i, r) in live.config.routes.iter().enumerate() {
            if r.host.as_deref().is_some_and(|h| h != host) {
                continue;
            }
            if crate::config::prefix_matches(&r.path, path) {
                // Longest prefix wins; a host-specific route beats a wildcard of equal length.
                let score = r.path.len() * 2 + usize::from(r.host.is_some());
                if best.is_none_or(|(_, s)| score > s) {
                    best = Some((i, score));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    fn sign_pass_cookie(&self, ctx: &mut Ctx, room: &RoomRuntime, p: &Pass, now: UnixMillis) {
        let tok = ctx.live.config.keys.sign_pass(p);
        let left = Duration::from_secs(p.expires_at.saturating_sub(now.secs()));
        ctx.set_cookies.push(set_cookie(
            &pass_cookie_name(room.id()),
            &tok,
            self.attrs(ctx.secure, left),
        ));
        ctx.token_out = Some(tok);
    }

    fn ticket_cookie(&self, ctx: &Ctx, room: &RoomRuntime, t: &Ticket) -> (String, String) {
        let tok = ctx.live.config.keys.sign_ticket(t);
        let c = set_cookie(
            &ticket_cookie_name(room.id()),
            &tok,
            self.attrs(ctx.secure, room.cfg.settings.abandon_after),
        );
        (c, tok)
    }

    /// The room gate. Returns `true` when a response was written (the origin is not contacted).
    async fn gate(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &Arc<RoomRuntime>,
        route: RouteKind,
        now: UnixMillis,
    ) -> Result<bool> {
        let view = room.view();
        let settings = &room.cfg.settings;
        let keys = &ctx.live.config.keys;
        let expect = self.expect(room, s.req_header(), ctx, now);
        let (pass_tok, ticket_tok) = self.tokens(s.req_header(), room.id());

        // Verify what the request carries: a bad, forged or foreign token is no token.
        let pass = match pass_tok.map(|t| (t, keys.verify_pass(t, &expect))) {
            Some((_, Ok(p))) if !room.is_ended(p.ticket) => Some(p),
            Some((t, Err(TokenError::Expired))) => {
                if let Some(p) = expired_pass(keys, t, &expect) {
                    self.emit(
                        room,
                        EventKind::SessionEnded {
                            reason: EndReason::Expiry,
                        },
                        p.ticket,
                        now,
                    );
                }
                None
            }
            _ => None,
        };
        let mut ticket = match (
            pass.is_some(),
            ticket_tok.map(|t| (t, keys.verify_ticket(t, &expect))),
        ) {
            (false, Some((_, Ok(t)))) => Some(t),
            (false, Some((t, Err(TokenError::Expired)))) => {
                // The place was lost by not polling: the shopper joins again at the back.
                if let Some(old) = expired_ticket(keys, t, &expect) {
                    self.emit(
                        room,
                        EventKind::Abandoned {
                            reason: AbandonReason::Expired,
                        },
                        old.number,
                        now,
                    );
                }
                None
            }
            _ => None,
        };

        // Bot defence, before any store work.
        let credential = match (&pass, &ticket) {
            (Some(p), _) => bot::Credential::Pass(p.ticket),
            (None, Some(t)) => bot::Credential::Ticket(t.number),
            (None, None) => bot::Credential::None,
        };
        let mut facts = RequestFacts::new(&s.req_header().headers, ctx.client, now);
        facts.tls = ctx.secure;
        facts.route = if route == RouteKind::Catalog {
            RouteClass::Catalog
        } else {
            RouteClass::Protected
        };
        facts.credential = credential;
        facts.poll_after = Some(settings.poll_interval);
        // A fleet also asks Redis about joins per address (one call per join).
        let verdict = self
            .node
            .bot
            .check_fleet(room.id(), &room.cfg.bot, &facts)
            .await;
        match verdict {
            Verdict::Allow => {}
            Verdict::Bypass => {
                ctx.outcome = Outcome::Forwarded;
                return Ok(false);
            }
            Verdict::Tarpit => ctx.tarpit = true,
            v @ (Verdict::Challenge(_) | Verdict::Block(_) | Verdict::Limited { .. }) => {
                return self.respond_bot(s, ctx, room, v).await.map(|()| true);
            }
        }

        // 1. A valid pass: forward, with no store round trip.
        if let Some(p) = pass {
            if let Decision::Allow { renewed, check_in } =
                view.decide(settings, Credential::Pass(&p), now)
            {
                // Once a minute per ticket on this node: check in and send the renewed pass.
                // A client that keeps sending the old pass (a script, a lost response) is not
                // re-signed on every request: its pass stays valid and is renewed next minute.
                // Ticket 0 (floor-rate passes) is shared, so each of its holders is renewed.
                let first = match check_in {
                    Some((from, to)) if room.should_check_in(p.ticket, to) => {
                        self.spawn_check_in(room.clone(), p.ticket, from, to);
                        true
                    }
                    _ => false,
                };
                match renewed.filter(|_| first || p.ticket == 0) {
                    Some(r) => {
                        self.sign_pass_cookie(ctx, room, &r, now);
                        ctx.pass = Some(r);
                    }
                    None => ctx.pass = Some(p),
                }
                ctx.outcome = Outcome::Forwarded;
                return Ok(false);
            }
        }

        // 2. A ticket, or none.
        let mut issued_now = false;
        for _ in 0..3 {
            let decision = match &ticket {
                Some(t) => view.decide(settings, Credential::Ticket(t), now),
                None => view.decide(settings, Credential::None, now),
            };
            match decision {
                Decision::NeedTicket => {
                    if issued_now {
                        break;
                    }
                    let number = match self.node.store.issue(room.id(), 1).await {
                        Ok(n) => n,
                        Err(e) => {
                            return self
                                .store_failed(s, ctx, room, &view, "issue", &e.to_string())
                                .await
                        }
                    };
                    self.node
                        .metrics
                        .tickets
                        .with_label_values(&[room.id()])
                        .inc();
                    self.emit(
                        room,
                        EventKind::TicketIssued {
                            serving: view.serving(),
                        },
                        number,
                        now,
                    );
                    if ctx.tarpit {
                        self.node.bot.tarpit_ticket(room.id(), number, now);
                    }
                    issued_now = true;
                    ticket = Some(view.new_ticket(settings, number, expect.binding, now));
                }
                Decision::Admit(req) => {
                    let Some(t) = ticket.clone() else { break };
                    if ctx.tarpit {
                        // The infinite queue: always "you're next", never in.
                        return self.respond_next(s, ctx, room, &view, &t, now).await;
                    }
                    let outcome = match self.node.store.claim(room.id(), &req).await {
                        Ok(o) => o,
                        Err(e) => {
                            return self
                                .store_failed(s, ctx, room, &view, "claim", &e.to_string())
                                .await
                        }
                    };
                    match outcome {
                        ClaimOutcome::Entered => {
                            let p = view.new_pass(settings, &t, now);
                            self.sign_pass_cookie(ctx, room, &p, now);
                            ctx.set_cookies
                                .push(clear_cookie(&ticket_cookie_name(room.id()), ctx.secure));
                            ctx.pass = Some(p);
                            ctx.outcome = Outcome::Admitted;
                            self.node
                                .metrics
                                .admissions
                                .with_label_values(&[room.id()])
                                .inc();
                            self.emit(room, EventKind::admitted(t.issued_at, now), t.number, now);
                            return Ok(false);
                        }
                        // This ticket was used up (entered before, or given up): a new place.
                        ClaimOutcome::AlreadyEntered | ClaimOutcome::Ended => ticket = None,
                        // Your turn, but the room is momentarily full or held: you are next.
                        ClaimOutcome::NotYet | ClaimOutcome::Full | ClaimOutcome::MinuteFull => {
                            return self.respond_next(s, ctx, room, &view, &t, now).await;
                        }
                    }
                }
                Decision::Wait(w) => return self.respond_wait(s, ctx, room, &w).await,
                Decision::Reject(r) => return self.respond_reject(s, ctx, room, r).await,
                Decision::Allow { .. } => {
                    ctx.outcome = Outcome::Forwarded;
                    return Ok(false);
                }
            }
        }
        // Only reachable if the store keeps handing back used tickets: say so, don't loop.
        self.store_failed(s, ctx, room, &view, "claim", "ticket could not be placed")
            .await
    }

    /// "You're next": the ticket's turn has come but it cannot enter this instant.
    async fn respond_next(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        view: &RoomView,
        t: &Ticket,
        now: UnixMillis,
    ) -> Result<bool> {
        let mut w = view.wait_info(&room.cfg.settings, t, Some(view.serving() + 1), now);
        w.position = Some(1);
        w.ahead = Some(0);
        self.respond_wait(s, ctx, room, &w).await
    }

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

    /// Answers a bot verdict: the challenge page (or JSON), 403 or 429.
    async fn respond_bot(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        v: Verdict,
    ) -> Result<()> {
        ctx.outcome = Outcome::Bot;
        let json = wants_json(header(s.req_header(), "accept"));
        match v {
            Verdict::Challenge(c) => {
                if json {
                    respond(s, 403, "application/json", c.to_json(), &[]).await
                } else {
                    let back = s
                        .req_header()
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned();
                    let html = self.node.bot.page().render(&room.cfg.branding, &c, &back);
                    respond(s, 403, "text/html; charset=utf-8", html, &[]).await
                }
            }
            Verdict::Limited { .. } => {
                let retry = v.retry_after_secs().unwrap_or(1);
                let headers = [("retry-after", retry.to_string())];
                if json {
                    respond(
                        s,
                        429,
                        "application/json",
                        r#"{"error":"too many requests"}"#,
                        &headers,
                    )
                    .await
                } else {
                    let msg = "Too many requests from your connection. Please wait a moment.";
                    let html = self
                        .pages
                        .render_error(&room.cfg.branding, "Slow down", msg, retry);
                    respond(s, 429, "text/html; charset=utf-8", html, &headers).await
                }
            }
            Verdict::Block(_) | Verdict::Allow | Verdict::Bypass | Verdict::Tarpit => {
                let html = self.pages.render_error(
                    &room.cfg.branding,
                    "Access denied",
                    "This request was refused.",
                    0,
                );
                respond(s, 403, "text/html; charset=utf-8", html, &[]).await
            }
        }
    }

    fn spawn_check_in(&self, room: Arc<RoomRuntime>, ticket: u64, from: u32, to: u32) {
        let store = self.node.store.clone();
        let metrics = self.node.metrics.clone();
        tokio::spawn(async move {
            match store.check_in(room.id(), ticket, from, to).await {
                Ok(waitroom::CheckIn::Moved) => {}
                Ok(waitroom::CheckIn::Ended) => room.mark_ended(ticket),
                Err(_) => metrics.store_errors.with_label_values(&["check_in"]).inc(),
            }
        });
    }

    async fn store_failed(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        view: &RoomView,
        op: &str,
        err: &str,
    ) -> Result<bool> {
        self.node
            .metrics
            .store_errors
            .with_label_values(&[op])
            .inc();
        // Per request at debug only: during an outage the store's circuit breaker logs each
        // change of mode once, and the counter above counts the failures.
        tracing::debug!(
            room = room.id(),
            op,
            error = err,
            "store error; policy {:?}",
            room.cfg.on_store_error
        );
        ctx.outcome = Outcome::StoreError;
        // `admit_at_floor_rate`: while the store fails (errors from the store say "store ..."),
        // a room that is admitting lets new shoppers in from this node's own GCRA bucket of
        // `floor_rate_per_minute`. Such a pass carries ticket 0 (real numbers start at 1): it is
        // not counted in the store's active users, cannot be revoked on its own, and simply
        // expires with its session. Everyone else gets "please wait" below, as with `queue`.
        let now = clock::now();
        let admitting = matches!(
            view.state,
            waitroom::RoomState::Idle
                | waitroom::RoomState::Queueing
                | waitroom::RoomState::Draining
        );
        // A tarpitted client (bot defence) is never admitted, the store failing or not.
        if room.cfg.on_store_error == OnStoreError::AdmitAtFloorRate
            && err.starts_with("store ")
            && admitting
            && !ctx.tarpit
            && room.floor_admit(now)
        {
            let settings = &room.cfg.settings;
            let binding = self.expect(room, s.req_header(), ctx, now).binding;
            let ticket = view.new_ticket(settings, 0, binding, now);
            let p = view.new_pass(settings, &ticket, now);
            self.sign_pass_cookie(ctx, room, &p, now);
            ctx.set_cookies
                .push(clear_cookie(&ticket_cookie_name(room.id()), ctx.secure));
            ctx.pass = Some(p);
            ctx.outcome = Outcome::Admitted;
            self.node
                .metrics
                .admissions
                .with_label_values(&[room.id()])
                .inc();
            self.node
                .metrics
                .floor_admissions
                .with_label_values(&[room.id()])
                .inc();
            return Ok(false);
        }
        let retry = room.cfg.settings.poll_interval.as_secs().max(1);
        let wants_json = wants_json(header(s.req_header(), "accept"));
        let msg = "We're handling a lot of shoppers right now. Please stay on this page.";
        if wants_json {
            let mut st = Status::bare(
                room.id(),
                view.state,
                view.serving(),
                room.cfg.settings.poll_interval,
                Some(msg.into()),
            );
            st.poll_after_ms = retry * 1000;
            respond(
                s,
                503,
                "application/json",
                st.to_json(),
                &[("retry-after", retry.to_string())],
            )
            .await?;
        } else {
            let html = self
                .pages
                .render_error(&room.cfg.branding, "Just a moment", msg, retry);
            respond(
                s,
                503,
                "text/html; charset=utf-8",
                html,
                &[("retry-after", retry.to_string())],
            )
            .await?;
        }
        Ok(true)
    }

    async fn respond_wait(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        w: &WaitInfo,
    ) -> Result<bool> {
        ctx.outcome = Outcome::Queued;
        let (cookie, tok) = self.ticket_cookie(ctx, room, &w.renewed);
        let status = Status::waiting(room.id(), w);
        let retry = w.poll_after.as_secs().max(1).to_string();
        let headers = [
            ("set-cookie", cookie),
            ("retry-after", retry),
            (TOKEN_HEADER, tok),
        ];
        let code = room.cfg.status_code;
        if wants_json(header(s.req_header(), "accept")) {
            respond(s, code, "application/json", status.to_json(), &headers).await?;
        } else {
            let uri = &s.req_header().uri;
            let return_to = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
            let html = self.pages.render_waiting(&WaitingPage {
                room: room.id(),
                branding: &room.cfg.branding,
                status: &status,
                return_to: &return_to,
            });
            respond(s, code, "text/html; charset=utf-8", html, &headers).await?;
        }
        Ok(true)
    }

    async fn respond_reject(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        r: RejectReason,
    ) -> Result<bool> {
        ctx.outcome = Outcome::Rejected;
        let (code, headline, default_msg) = match r {
            RejectReason::SoldOut => (
                410,
                "Sold out",
                "Everything in this sale has sold out. Thank you for waiting.",
            ),
            RejectReason::Closed => (
                503,
                "The sale has closed",
                "This sale is not running right now.",
            ),
            RejectReason::Draining => (
                503,
                "The sale is ending",
                "The line is closed to new shoppers.",
            ),
        };
        let view = room.view();
        let message = view
            .message
            .clone()
            .unwrap_or_else(|| default_msg.to_owned());
        if wants_json(header(s.req_header(), "accept")) {
            let st = Status::bare(
                room.id(),
                view.state,
                view.serving(),
                room.cfg.settings.poll_interval,
                Some(message),
            );
            respond(s, code, "application/json", st.to_json(), &[]).await?;
        } else {
            let html = self
                .pages
                .render_closed(&room.cfg.branding, headline, &message);
            respond(s, code, "text/html; charset=utf-8", html, &[]).await?;
        }
        Ok(true)
    }

    /// The origin shield's part of `request_filter`: a fresh or stale cached copy, a coalesced
    /// wait for another request's fetch, or a pool slot for the origin (optional routes are shed
    /// first when the pool is saturated or slow). Returns `true` when it answered.
    async fn shield_request(&self, s: &mut Session, ctx: &mut Ctx, host: &str) -> Result<bool> {
        let Some(i) = ctx.route else { return Ok(false) };
        let live = ctx.live.clone();
        let route = &live.config.routes[i];
        let shield = &self.node.shield;
        let now = Instant::now();
        if route.shield.cache {
            match CacheKey::from_request(s.req_header(), host) {
                Err(_) => ctx.cache_status = Some(CacheStatus::Bypass),
                Ok(key) => {
                    let r = shield
                        .resolve(route, &key, &s.req_header().headers, now)
                        .await;
                    let status = r.cache_status();
                    ctx.cache_status = Some(status);
                    match r {
                        Resolved::Hit(e) | Resolved::Stale(e) => {
                            self.serve_entry(s, ctx, &e, status).await?;
                            return Ok(true);
                        }
                        Resolved::Miss(fill) => ctx.fill = fill,
                        Resolved::Bypass(_) => {}
                    }
                    ctx.cache_key = Some(key);
                }
            }
        }
        match shield.admit(route, now) {
            Ok(p) => ctx.permit = Some(p),
            Err(shed) => {
                ctx.fill = None; // followers stop waiting for this request now
                let stale = ctx
                    .cache_key
                    .as_ref()
                    .and_then(|k| shield.stale_for(route, k, &s.req_header().headers, now));
                ctx.outcome = Outcome::Shed;
                match stale {
                    Some(e) => self.serve_entry(s, ctx, &e, CacheStatus::Stale).await?,
                    None => {
                        let retry = shed.retry_after.as_secs().max(1);
                        let branding = self.branding_for(ctx);
                        let html = self.pages.render_error(
                            &branding,
                            "The shop is busy",
                            "This part of the shop is taking a short break so checkout stays fast. Please try again in a moment.",
                            retry,
                        );
                        respond(
                            s,
                            503,
                            "text/html; charset=utf-8",
                            html,
                            &[("retry-after", retry.to_string())],
                        )
                        .await?;
                    }
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Writes a cached response (with the shopper's cookies, which never enter the cache).
    async fn serve_entry(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        e: &Entry,
        status: CacheStatus,
    ) -> Result<()> {
        let mut h = e.response_header(Instant::now(), status)?;
        for c in ctx.set_cookies.drain(..) {
            h.append_header(http::header::SET_COOKIE, c)?;
        }
        if let Some(tok) = ctx.token_out.take() {
            h.insert_header(TOKEN_NAME, tok)?;
        }
        h.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        let head_only = s.req_header().method == http::Method::HEAD;
        s.write_response_header(Box::new(h), head_only).await?;
        if !head_only {
            s.write_response_body(Some(e.body.clone()), true).await?;
        }
        if ctx.outcome != Outcome::Admitted && ctx.outcome != Outcome::Shed {
            ctx.outcome = Outcome::Cached;
        }
        Ok(())
    }

    /// `/.flashgate/*`: assets, status, events, leave.
    async fn reserved(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        rest: &str,
        now: UnixMillis,
    ) -> Result<()> {
        ctx.outcome = Outcome::Reserved;
        match rest {
            "assets/waiting.css" => {
                return self.asset(s, "text/css; charset=utf-8", WAITING_CSS).await
            }
            "assets/waiting.js" => {
                return self
                    .asset(s, "text/javascript; charset=utf-8", WAITING_JS)
                    .await
            }
            "challenge" => return self.challenge(s, ctx, now).await,
            "status" | "events" | "leave" | "feedback" => {}
            other => {
                if let Some((_, ctype, body)) =
                    bot::page::ASSETS.iter().find(|(p, _, _)| *p == other)
                {
                    return self.asset(s, ctype, body).await;
                }
                return respond(s, 404, "text/plain", "not found\n", &[]).await;
            }
        }
        let query = s.req_header().uri.query();
        let room = query_param(query, "room").and_then(|id| ctx.live.rooms.by_id(&id).cloned());
        let Some(room) = room else {
            return respond(
                s,
                404,
                "application/json",
                r#"{"error":"unknown room"}"#,
                &[],
            )
            .await;
        };
        match rest {
            "status" | "events" => {
                // Poll limits and the infinite queue apply to polls too.
                let verified = self.verified(s.req_header(), ctx, &room, now);
                let tarpit = match self.poll_verdict(s, ctx, &room, &verified, now) {
                    Verdict::Tarpit => true,
                    v @ (Verdict::Block(_) | Verdict::Limited { .. }) => {
                        return self.respond_bot(s, ctx, &room, v).await
                    }
                    Verdict::Allow | Verdict::Bypass | Verdict::Challenge(_) => false,
                };
                if rest == "status" {
                    self.status(s, ctx, &room, tarpit, &verified, now).await
                } else {
                    self.events(s, ctx, &room, tarpit, &verified).await
                }
            }
            "feedback" => self.feedback(s, ctx, &room, now).await,
            _ => self.leave(s, ctx, &room, now).await,
        }
    }

    /// The bot verdict for a status poll or event stream of `room`.
    fn poll_verdict(
        &self,
        s: &Session,
        ctx: &Ctx,
        room: &RoomRuntime,
        v: &Verified,
        now: UnixMillis,
    ) -> Verdict {
        let credential = match (&v.pass, &v.ticket) {
            (Some(p), _) => bot::Credential::Pass(p.ticket),
            (None, Some(t)) => bot::Credential::Ticket(t.number),
            (None, None) => bot::Credential::None,
        };
        let mut facts = RequestFacts::new(&s.req_header().headers, ctx.client, now);
        facts.tls = ctx.secure;
        facts.route = RouteClass::Poll;
        facts.credential = credential;
        facts.poll_after = Some(room.cfg.settings.poll_interval);
        self.node.bot.check(room.id(), &room.cfg.bot, &facts)
    }

    /// The request's pass (valid and not ended) or, without one, its ticket: verified once and
    /// shared by the bot check and the status of a poll.
    fn verified(
        &self,
        req: &RequestHeader,
        ctx: &Ctx,
        room: &RoomRuntime,
        now: UnixMillis,
    ) -> Verified {
        let keys = &ctx.live.config.keys;
        let expect = self.expect(room, req, ctx, now);
        let (pass_tok, ticket_tok) = self.tokens(req, room.id());
        let pass = pass_tok
            .and_then(|t| keys.verify_pass(t, &expect).ok())
            .filter(|p| !room.is_ended(p.ticket));
        let ticket = if pass.is_some() {
            None
        } else {
            ticket_tok.and_then(|t| keys.verify_ticket(t, &expect).ok())
        };
        Verified { pass, ticket }
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
        if !post_only(s).await? {
            return Ok(());
        }
        let Some(body) = Self::read_body(s, bot::MAX_SOLUTION_BODY).await? else {
            return respond(
                s,
                413,
                "application/json",
                r#"{"ok":false,"error":"too_large"}"#,
                &[],
            )
            .await;
        };
        let sol = match bot::parse_solution(&body) {
            Ok(sol) => sol,
            Err(e) => {
                let r = bot::page::solution_response(&Err(e), None, ctx.secure);
                return respond(s, r.status, "application/json", r.body, &[]).await;
            }
        };
        let Some(room) = ctx.live.rooms.by_id(&sol.room).cloned() else {
            return respond(
                s,
                404,
                "application/json",
                r#"{"ok":false,"error":"unknown room"}"#,
                &[],
            )
            .await;
        };
        let mut facts = RequestFacts::new(&s.req_header().headers, ctx.client, now);
        facts.tls = ctx.secure;
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
        let r = bot::page::solution_response(&result, sol.return_to.as_deref(), ctx.secure);
        let mut headers = Vec::new();
        if let Some(c) = r.set_cookie {
            headers.push(("set-cookie", c));
        }
        if let Some(retry) = r.retry_after {
            headers.push(("retry-after", retry.to_string()));
        }
        respond(s, r.status, "application/json", r.body, &headers).await
    }

    /// `POST /.flashgate/feedback?room=ID`: a waiting or admitted shopper rates the wait
    /// (`rating` 1-5, optional short `comment`): counted in the room's report and metrics and
    /// sent to the event stream, once per ticket on this node (429 after that). A form post
    /// gets 303 back to `return`, JSON gets 204.
    async fn feedback(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        now: UnixMillis,
    ) -> Result<()> {
        if !post_only(s).await? {
            return Ok(());
        }
        let keys = &ctx.live.config.keys;
        let expect = self.expect(room, s.req_header(), ctx, now);
        let (pass_tok, ticket_tok) = self.tokens(s.req_header(), room.id());
        let rater = pass_tok
            .and_then(|t| keys.verify_pass(t, &expect).ok())
            .map(|p| (p.event, p.ticket))
            .or_else(|| {
                ticket_tok
                    .and_then(|t| keys.verify_ticket(t, &expect).ok())
                    .map(|t| (t.event, t.number))
            });
        // Ticket 0 is shared by every pass minted at the floor rate while the store failed:
        // those shoppers never waited, and one rating each could not be enforced.
        let Some((event, number)) = rater.filter(|(_, n)| *n != 0) else {
            return respond(
                s,
                403,
                "application/json",
                r#"{"error":"a ticket or pass for this room is needed"}"#,
                &[],
            )
            .await;
        };
        let ctype = header(s.req_header(), "content-type").map(str::to_owned);
        let json = ctype.as_deref().is_some_and(|c| c.contains("json"));
        let return_to = query_param(s.req_header().uri.query(), "return")
            .filter(|r| safe_return_path(r))
            .map(|r| r.into_owned())
            .unwrap_or_else(|| "/".into());
        let Some(body) = Self::read_body(s, crate::events::MAX_FEEDBACK_BODY).await? else {
            return respond(s, 413, "application/json", r#"{"error":"too large"}"#, &[]).await;
        };
        match crate::events::parse_feedback(ctype.as_deref(), &body) {
            Ok(kind) => {
                let EventKind::Feedback { rating, .. } = &kind else {
                    // `parse_feedback` makes nothing else.
                    let body = r#"{"error":"not a rating"}"#;
                    return respond(s, 400, "application/json", body, &[]).await;
                };
                let rating = rating.get();
                // One rating per ticket (a pass carries its ticket's number) on this node.
                if !room.record_feedback(event, number, rating) {
                    return if json {
                        let body = r#"{"error":"this ticket has already rated the wait"}"#;
                        respond(s, 429, "application/json", body, &[]).await
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
                    respond(s, 204, "application/json", "", &[]).await
                } else {
                    // `#fg-thanks` is the waiting page's "thanks" note (shown by CSS :target).
                    let location = format!("{return_to}#fg-thanks");
                    respond(
                        s,
                        303,
                        "text/plain",
                        "Thank you!\n",
                        &[("location", location)],
                    )
                    .await
                }
            }
            Err(e) => {
                let body = serde_json::json!({ "error": e.to_string() }).to_string();
                respond(s, 400, "application/json", body, &[]).await
            }
        }
    }

    async fn asset(&self, s: &mut Session, ctype: &str, body: &'static str) -> Result<()> {
        let body = Bytes::from_static(body.as_bytes());
        let mut h = ResponseHeader::build(200, Some(3))?;
        h.insert_header("content-type", ctype)?;
        h.insert_header("content-length", body.len().to_string())?;
        h.insert_header("cache-control", "public, max-age=300")?;
        s.write_response_header(Box::new(h), false).await?;
        s.write_response_body(Some(body), true).await
    }

    /// The status of the request's ticket, from the node's view (no store call), plus the
    /// renewed ticket.
    fn status_of(
        &self,
        req: &RequestHeader,
        ctx: &Ctx,
        room: &RoomRuntime,
        tarpit: bool,
        verified: &Verified,
        now: UnixMillis,
    ) -> (Status, Option<(String, String)>) {
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
        if verified.pass.is_some() {
            bare.admitted = true;
            bare.redirect = return_to;
            return (bare, None);
        }
        let Some(t) = verified.ticket.clone() else {
            return (bare, None);
        };
        match view.decide(settings, Credential::Ticket(&t), now) {
            Decision::Wait(w) => {
                let st = Status::waiting(room.id(), &w);
                (st, Some(self.ticket_cookie(ctx, room, &w.renewed)))
            }
            Decision::Admit(req) if tarpit || !view.likely_claimable(&req) => {
                // Your turn, but this minute's entries are used up or the room is full: next.
                let mut w = view.wait_info(settings, &t, Some(view.serving() + 1), now);
                w.position = Some(1);
                w.ahead = Some(0);
                let st = Status::waiting(room.id(), &w);
                (st, Some(self.ticket_cookie(ctx, room, &w.renewed)))
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
                (bare, Some(self.ticket_cookie(ctx, room, &renewed)))
            }
            Decision::Reject(_) | Decision::NeedTicket | Decision::Allow { .. } => (bare, None),
        }
    }

    async fn status(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        tarpit: bool,
        verified: &Verified,
        now: UnixMillis,
    ) -> Result<()> {
        let (st, renewed) = self.status_of(s.req_header(), ctx, room, tarpit, verified, now);
        let mut headers = vec![("retry-after", (st.poll_after_ms / 1000).max(1).to_string())];
        if let Some((cookie, tok)) = renewed {
            headers.push(("set-cookie", cookie));
            headers.push((TOKEN_HEADER, tok));
        }
        respond(s, 200, "application/json", st.to_json(), &headers).await
    }

    /// Server-sent events: the status pushed whenever it changes (checked every second), for
    /// [`SSE_LIFETIME`]; the browser then reconnects, which renews the ticket cookie.
    async fn events(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        tarpit: bool,
        verified: &Verified,
    ) -> Result<()> {
        let now = clock::now();
        let (first, renewed) = self.status_of(s.req_header(), ctx, room, tarpit, verified, now);
        let mut h = ResponseHeader::build(200, Some(5))?;
        h.insert_header("content-type", "text/event-stream")?;
        h.insert_header("cache-control", "no-store")?;
        h.insert_header("x-accel-buffering", "no")?;
        if let Some((cookie, tok)) = renewed {
            h.append_header(http::header::SET_COOKIE, cookie)?;
            h.insert_header(TOKEN_NAME, tok)?;
        }
        s.write_response_header(Box::new(h), false).await?;
        let mut last = first.to_json();
        s.write_response_body(
            Some(Bytes::from(format!("retry: 2000\ndata: {last}\n\n"))),
            false,
        )
        .await?;
        let started = Instant::now();
        let mut done = first.admitted || matches!(first.state, "sold_out" | "closed");
        while !done && started.elapsed() < SSE_LIFETIME {
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Re-verified each second: a ticket or pass may expire during the stream.
            let now = clock::now();
            let v = self.verified(s.req_header(), ctx, room, now);
            let (st, _) = self.status_of(s.req_header(), ctx, room, tarpit, &v, now);
            let json = st.to_json();
            done = st.admitted || matches!(st.state, "sold_out" | "closed");
            if json != last {
                s.write_response_body(Some(Bytes::from(format!("data: {json}\n\n"))), false)
                    .await?;
                last = json;
            } else {
                // A comment line keeps intermediaries from timing the stream out.
                s.write_response_body(Some(Bytes::from_static(b": keep-alive\n\n")), false)
                    .await?;
            }
        }
        s.write_response_body(None, true).await
    }

    /// Gives up a place or ends a session, freeing capacity at once.
    async fn leave(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        now: UnixMillis,
    ) -> Result<()> {
        if !post_only(s).await? {
            return Ok(());
        }
        let expect = self.expect(room, s.req_header(), ctx, now);
        let (pass_tok, ticket_tok) = self.tokens(s.req_header(), room.id());
        let store = &self.node.store;
        let mut left = false;
        if let Some(p) = pass_tok.and_then(|t| ctx.live.config.keys.verify_pass(t, &expect).ok()) {
            room.mark_ended(p.ticket);
            left |= store
                .release(room.id(), p.ticket, Some(p.checkin_minute))
                .await
                .is_ok();
            self.node
                .metrics
                .sessions_ended
                .with_label_values(&[room.id(), "leave"])
                .inc();
            self.emit(
                room,
                EventKind::SessionEnded {
                    reason: EndReason::Leave,
                },
                p.ticket,
                now,
            );
        }
        if let Some(t) =
            ticket_tok.and_then(|t| ctx.live.config.keys.verify_ticket(t, &expect).ok())
        {
            left |= store.release(room.id(), t.number, None).await.is_ok();
            self.node
                .metrics
                .sessions_ended
                .with_label_values(&[room.id(), "leave_queue"])
                .inc();
            self.emit(
                room,
                EventKind::Abandoned {
                    reason: AbandonReason::Left,
                },
                t.number,
                now,
            );
        }
        let clear = [
            (
                "set-cookie",
                clear_cookie(&pass_cookie_name(room.id()), ctx.secure),
            ),
            (
                "set-cookie",
                clear_cookie(&ticket_cookie_name(room.id()), ctx.secure),
            ),
        ];
        if wants_json(header(s.req_header(), "accept")) {
            respond(
                s,
                200,
                "application/json",
                format!("{{\"left\":{left}}}"),
                &clear,
            )
            .await
        } else {
            let mut headers = clear.to_vec();
            headers.push(("location", "/".into()));
            respond(s, 303, "text/plain", "You left the line.\n", &headers).await
        }
    }

    /// Carries out `X-Flashgate-Command` from the origin.
    fn origin_command(&self, cmd: &str, ctx: &mut Ctx) {
        let Some(room) = ctx.room.clone() else { return };
        for c in cmd.split(',').map(str::trim) {
            match c {
                "revoke" => {
                    let Some(p) = ctx.pass.take() else { continue };
                    room.mark_ended(p.ticket);
                    // The new pass cookie (if any) must not go out; clear the old one instead.
                    ctx.set_cookies.retain(|c| !c.starts_with("fg_p_"));
                    ctx.set_cookies
                        .push(clear_cookie(&pass_cookie_name(room.id()), ctx.secure));
                    ctx.token_out = None;
                    self.node
                        .metrics
                        .sessions_ended
                        .with_label_values(&[room.id(), "revoke"])
                        .inc();
                    self.emit(
                        &room,
                        EventKind::SessionEnded {
                            reason: EndReason::Revoke,
                        },
                        p.ticket,
                        clock::now(),
                    );
                    let store = self.node.store.clone();
                    let metrics = self.node.metrics.clone();
                    let room = room.clone();
                    tokio::spawn(async move {
                        if store
                            .release(room.id(), p.ticket, Some(p.checkin_minute))
                            .await
                            .is_err()
                        {
                            metrics.store_errors.with_label_values(&["release"]).inc();
                        }
                    });
                }
                "sold-out" => {
                    let before = room.view().snapshot.overrides.clone();
                    if before.sold_out {
                        continue;
                    }
                    let mut after = before.clone();
                    after.sold_out = true;
                    tracing::info!(target: "flashgate::audit", room = room.id(), "origin declared the sale sold out");
                    let store = self.node.store.clone();
                    let metrics = self.node.metrics.clone();
                    let events = self.node.events.clone();
                    let id = room.id().to_owned();
                    tokio::spawn(async move {
                        match store.set_overrides(&id, &after).await {
                            Ok(()) => {
                                events.emit_room_changes(&id, &before, &after, &Actor::Origin)
                            }
                            Err(_) => metrics
                                .store_errors
                                .with_label_values(&["set_overrides"])
                                .inc(),
                        }
                    });
                }
                _ => {}
            }
        }
    }

    fn branding_for(&self, ctx: &Ctx) -> Branding {
        ctx.room
            .as_ref()
            .map_or_else(|| self.default_branding.clone(), |r| r.cfg.branding.clone())
    }
}

#[async_trait]
impl ProxyHttp for Gate {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            live: self.node.live(),
            request_id: String::new(),
            secure: self.secure_cookies,
            client: None,
            route: None,
            room: None,
            pass: None,
            set_cookies: Vec::new(),
            token_out: None,
            tried: Vec::new(),
            outcome: Outcome::Forwarded,
            upstream_started: None,
            tarpit: false,
            started: Instant::now(),
            upstream_status: None,
            cache_key: None,
            cache_status: None,
            fill: None,
            permit: None,
            stale: None,
        }
    }

    async fn early_request_filter(&self, s: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.request_id = request_id();
        let peer = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        ctx.client = client_ip(
            peer,
            header(s.req_header(), "x-forwarded-for"),
            &ctx.live.config.server.trusted_proxies,
        );
        // HTTPS: our own TLS listener (H1 or H2), or TLS ended by a proxy we trust.
        let over_tls = s.digest().is_some_and(|d| d.ssl_digest.is_some());
        let proxied_https = peer.is_some_and(|p| {
            ctx.live
                .config
                .server
                .trusted_proxies
                .iter()
                .any(|n| n.contains(&p))
        }) && header(s.req_header(), "x-forwarded-proto")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        ctx.secure = self.secure_cookies || over_tls || proxied_https;
        Ok(())
    }

    async fn request_filter(&self, s: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let now = clock::now();
        let path = s.req_header().uri.path().to_owned();
        // RFC 9112 §3.2: a missing (HTTP/1.1), repeated or malformed Host is a 400. A Host the
        // rooms cannot read must not slip past a host-scoped room.
        if let Some(why) = bad_host(s.req_header()) {
            ctx.outcome = Outcome::BadRequest;
            respond(s, 400, "text/plain", why, &[("connection", "close".into())]).await?;
            return Ok(true);
        }
        // Pingora reads heads of up to 1 MiB; browsers never send more than a few KiB, and
        // the origin should not have to swallow the rest (nginx refuses above 4 × 8 KiB).
        if head_bytes(s.req_header()) > MAX_REQUEST_HEAD {
            ctx.outcome = Outcome::BadRequest;
            let close = [("connection", "close".into())];
            respond(s, 431, "text/plain", "request header too large\n", &close).await?;
            return Ok(true);
        }
        if let Some(rest) = path.strip_prefix("/.flashgate/") {
            self.reserved(s, ctx, rest, now).await?;
            return Ok(true);
        }
        // Routes and rooms see the path both as sent and as an origin may normalise it
        // (`//drops/x`, `/%64rops/x`, `/a/../drops/x`): either falling in a room is gated.
        let Ok(canon) = crate::http_util::canonical_path(&path) else {
            ctx.outcome = Outcome::BadRequest;
            respond(s, 400, "text/plain", "bad request path\n", &[]).await?;
            return Ok(true);
        };
        let host = host_of(s.req_header());
        let raw_route = Self::route_for(&ctx.live, &host, &path);
        let canon_route = if canon == path.as_str() {
            raw_route
        } else {
            Self::route_for(&ctx.live, &host, &canon)
        };
        ctx.route = raw_route.or(canon_route);
        let Some(route) = ctx.route.map(|i| &ctx.live.config.routes[i]) else {
            ctx.outcome = Outcome::NotFound;
            respond(s, 404, "text/plain", "no route for this path\n", &[]).await?;
            return Ok(true);
        };
        let kind = route.kind;
        // A bypass route skips rooms only when the path reads as bypass both ways.
        let canon_bypass =
            canon_route.is_none_or(|i| ctx.live.config.routes[i].kind == RouteKind::Bypass);
        if kind != RouteKind::Bypass || !canon_bypass {
            let method = s.req_header().method.as_str().to_owned();
            let room = ctx
                .live
                .rooms
                .find(&host, &path, &method)
                .or_else(|| ctx.live.rooms.find(&host, &canon, &method))
                .cloned();
            if let Some(room) = room {
                ctx.room = Some(room.clone());
                if self.gate(s, ctx, &room, kind, now).await? {
                    return Ok(true);
                }
            }
        }
        // Past the room (or no room): the origin shield decides between cache, origin and shed.
        self.shield_request(s, ctx, &host).await
    }

    async fn upstream_peer(&self, _s: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .map(|i| &ctx.live.config.routes[i])
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let pool = ctx.live.pools.get(&route.upstream).ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "route names an unknown pool")
        })?;
        let tried = &ctx.tried;
        let backend = pool
            .lb
            .select_with(b"", 256, |b, healthy| healthy && !tried.contains(b))
            .ok_or_else(|| {
                if tried.is_empty() {
                    Error::explain(ErrorType::HTTPStatus(503), "no healthy upstream server")
                } else {
                    // A retry (e.g. after a pooled connection the origin had closed) with every
                    // server already tried: the origin failed, which is a 502 like the first
                    // failure, not "no healthy server".
                    Error::explain(ErrorType::HTTPStatus(502), "every upstream server failed")
                }
            })?;
        let mut peer = HttpPeer::new(&backend, false, String::new());
        peer.options.connection_timeout = Some(pool.cfg.connect_timeout);
        peer.options.read_timeout = Some(pool.cfg.read_timeout);
        peer.options.write_timeout = Some(pool.cfg.read_timeout);
        ctx.tried.push(backend);
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _s: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the origin: safe to try another server of the pool, once each.
        let servers = ctx
            .route
            .and_then(|i| ctx.live.pools.get(&ctx.live.config.routes[i].upstream))
            .map_or(0, |p| p.cfg.servers.len());
        if ctx.tried.len() < servers {
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
        if let Some(f) = &ctx.fill {
            f.prepare_upstream_request(up); // the leader fetches a full, storable 200
        }
        // The origin never sees queue tokens.
        let cookies: Vec<String> = up
            .headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(strip_own_cookies)
            .collect();
        up.remove_header("cookie");
        if !cookies.is_empty() {
            up.insert_header("cookie", cookies.join("; "))?;
        }
        up.remove_header(TOKEN_HEADER);
        // X-Forwarded-For: extend a trusted chain, replace an untrusted one.
        let peer = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let peer_trusted = peer.is_some_and(|p| {
            ctx.live
                .config
                .server
                .trusted_proxies
                .iter()
                .any(|n| n.contains(&p))
        });
        let xff = match (
            peer_trusted,
            header(s.req_header(), "x-forwarded-for"),
            peer,
        ) {
            (true, Some(chain), Some(p)) => format!("{chain}, {p}"),
            (_, _, Some(p)) => p.to_string(),
            (_, _, None) => String::new(),
        };
        if !xff.is_empty() {
            up.insert_header("x-forwarded-for", xff)?;
        }
        up.insert_header(
            "x-forwarded-proto",
            if ctx.secure { "https" } else { "http" },
        )?;
        up.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        if let Some(host) = ctx
            .route
            .and_then(|i| ctx.live.pools.get(&ctx.live.config.routes[i].upstream))
            .and_then(|p| p.cfg.host.clone())
        {
            up.insert_header("host", host)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        // The shield sees the origin's own answer, before any per-shopper change.
        if let Some(i) = ctx.route {
            let live = ctx.live.clone();
            let route = &live.config.routes[i];
            let now = Instant::now();
            let status = resp.status.as_u16();
            if let Some(t) = ctx.upstream_started {
                self.node
                    .shield
                    .record(&route.upstream, t.elapsed(), status < 500, now);
            }
            if status >= 500 {
                let stale = ctx.cache_key.as_ref().and_then(|k| {
                    self.node
                        .shield
                        .stale_for(route, k, &s.req_header().headers, now)
                });
                if let Some(e) = stale {
                    // Nothing was written downstream yet: fail_to_proxy answers with the copy.
                    ctx.fill = None;
                    ctx.stale = Some(e);
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(status),
                        "origin error: serving a stale copy",
                    ));
                }
            }
            if let Some(f) = ctx.fill.as_mut() {
                if f.header(resp, now).is_err() {
                    ctx.fill = None; // not storable: followers go to the origin themselves
                }
            }
        }
        if let (Some(t), Some(i)) = (ctx.upstream_started, ctx.route) {
            let class = match resp.status.as_u16() {
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            };
            self.node
                .metrics
                .upstream_seconds
                .with_label_values(&[ctx.live.config.routes[i].upstream.as_str(), class])
                .observe(t.elapsed().as_secs_f64());
        }
        if let Some(cmd) = resp
            .headers
            .get(COMMAND_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        {
            resp.remove_header(COMMAND_HEADER);
            self.origin_command(&cmd.to_ascii_lowercase(), ctx);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        for c in ctx.set_cookies.drain(..) {
            resp.append_header(http::header::SET_COOKIE, c)?;
        }
        if let Some(tok) = ctx.token_out.take() {
            resp.insert_header(TOKEN_NAME, tok)?;
        }
        resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        if let Some(st) = ctx.cache_status {
            resp.insert_header(
                CACHE_HEADER_NAME,
                http::HeaderValue::from_static(st.as_str()),
            )?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let (Some(f), Some(b)) = (ctx.fill.as_mut(), body.as_ref()) {
            f.chunk(b);
        }
        if end_of_stream {
            if let Some(f) = ctx.fill.take() {
                let _ = f.finish(); // stores the copy and wakes the coalesced followers
            }
            ctx.permit = None; // the origin exchange is over: free the pool slot
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, s: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        ctx.fill = None; // followers stop waiting now
        ctx.permit = None;
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
            let now = Instant::now();
            if let Some(i) = ctx.route {
                let live = ctx.live.clone();
                let route = &live.config.routes[i];
                if ctx.stale.is_none() {
                    if let Some(t) = ctx.upstream_started {
                        self.node
                            .shield
                            .record(&route.upstream, t.elapsed(), false, now);
                    }
                    ctx.stale = ctx.cache_key.as_ref().and_then(|k| {
                        self.node
                            .shield
                            .stale_for(route, k, &s.req_header().headers, now)
                    });
                }
            }
            if let (Some(entry), None) = (ctx.stale.take(), s.response_written()) {
                ctx.cache_status = Some(CacheStatus::Stale);
                if self
                    .serve_entry(s, ctx, &entry, CacheStatus::Stale)
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
            let retry = 10;
            let branding = self.branding_for(ctx);
            let (headline, msg) = if code >= 500 {
                (
                    "The shop is busy",
                    "We couldn't reach the shop just now. This page will try again shortly.",
                )
            } else {
                ("Bad request", "The request could not be understood.")
            };
            let html = self.pages.render_error(&branding, headline, msg, retry);
            let headers = [("retry-after", retry.to_string())];
            let _ = respond(s, code, "text/html; charset=utf-8", html, &headers).await;
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
            id = %ctx.request_id,
            client = ?ctx.client,
            method = %s.req_header().method,
            path = %s.req_header().uri.path(),
            status,
            upstream_status = ctx.upstream_status,
            duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            decision = ctx.outcome.as_str(),
            room = ctx.room.as_ref().map(|r| r.id()),
            cache = ctx.cache_status.map(|c| c.as_str()),
            error = e.map(|e| e.to_string()),
        );
    }
}
