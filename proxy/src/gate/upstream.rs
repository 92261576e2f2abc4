//! The way to the origin: the origin shield's part of a request ([`ShieldCtx`]: cache, coalesced
//! fills, pool slots, stale copies), the choice of a server, what the origin is sent and
//! not sent (queue tokens never leave the edge), and the commands the origin sends back
//! (`X-Flashgate-Command: revoke | sold-out`).

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::Backend;
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::credentials::{CookieOp, TOKEN_NAME};
use super::request::{X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID};
use super::{Ctx, Gate};
use crate::clock;
use crate::config::Route;
use crate::events::{Actor, EndReason, EventKind};
use crate::http_util::strip_own_cookies;
use crate::metrics::Outcome;
use crate::node::Live;
use crate::shield::{CacheKey, CacheStatus, Entry, FillGuard, Permit, Resolved};

/// Response header through which the origin gives commands (stripped before the shopper).
pub const COMMAND_HEADER: &str = "x-flashgate-command";

/// The origin shield's state for one request.
#[derive(Debug, Default)]
pub(crate) struct ShieldCtx {
    /// The cache key, when the route caches and the request is cacheable.
    pub(crate) key: Option<CacheKey>,
    /// What the cache did (for `X-Flashgate-Cache` and the access log).
    pub(crate) status: Option<CacheStatus>,
    /// The fill this request leads (its followers wait for it).
    pub(crate) fill: Option<FillGuard>,
    /// The pool slot it holds.
    pub(crate) permit: Option<Permit>,
    /// A stale copy to serve if the origin fails.
    pub(crate) stale: Option<Arc<Entry>>,
    /// Servers already tried (a retry goes to another).
    pub(crate) tried: Vec<Backend>,
    /// When the request to the origin started.
    pub(crate) started: Option<Instant>,
}

impl ShieldCtx {
    /// The origin exchange is over or abandoned: followers stop waiting, the slot is free.
    pub(crate) fn release(&mut self) {
        self.fill = None;
        self.permit = None;
    }
}

/// Edits a request head's fields as plain `http` parts.
///
/// Pingora keeps the shopper's header-name case in a second map, and through it every insert of
/// a name `http` does not know (`x-forwarded-for`, `x-request-id`, ...) parses the name again
/// and allocates it twice; the map is also kept in step on every removal. Dropping it for the
/// origin's copy of the head (whose header case the origin does not care about: HTTP field
/// names are case-insensitive) took the gate's header work for a pass holder from ~12,600 to
/// ~2,000 instructions a request (`loadtests/pass-callgrind.sh`, docs/performance.md). The
/// request target is kept as sent, and so is an HTTP/2 end-of-stream flag.
pub(crate) fn edit_request(
    up: &mut RequestHeader,
    edit: impl FnOnce(&mut HeaderMap) -> Result<()>,
) -> Result<()> {
    let raw_target = {
        let raw = up.raw_path();
        let from_uri = up.uri.path_and_query().map(|p| p.as_str().as_bytes());
        (from_uri != Some(raw)).then(|| raw.to_vec())
    };
    let end_stream = up.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(up, placeholder).into();
    let edited = edit(&mut parts.headers);
    *up = RequestHeader::from(parts);
    if let Some(raw) = raw_target {
        up.set_raw_path(&raw)?;
    }
    if let Some(end) = end_stream {
        up.set_send_end_stream(end);
    }
    edited
}

/// Edits a response head's fields as plain `http` parts (see [`edit_request`]); a reason
/// phrase other than the status's own is kept.
pub(crate) fn edit_response(
    resp: &mut ResponseHeader,
    edit: impl FnOnce(&mut HeaderMap) -> Result<()>,
) -> Result<()> {
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, placeholder).into();
    let edited = edit(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
    if let Some(reason) = reason {
        resp.set_reason_phrase(Some(&reason))?;
    }
    edited
}

/// A header value from text we built (taken over, not copied).
pub(crate) fn value(text: String) -> Result<HeaderValue> {
    HeaderValue::try_from(text)
        .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "invalid header value"))
}

/// Removes Flashgate's own cookies (`fg_*`) from the `Cookie` fields; the rest is kept, in
/// one field. Touches nothing when no own cookie is there.
fn strip_own_cookies_from(h: &mut HeaderMap) {
    let cookie = http::header::COOKIE;
    let ours = h
        .get_all(&cookie)
        .iter()
        .any(|v| v.as_bytes().windows(3).any(|w| w == b"fg_"));
    if !ours {
        return;
    }
    let kept: Vec<String> = h
        .get_all(&cookie)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(strip_own_cookies)
        .collect();
    h.remove(&cookie);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::try_from(kept.join("; ")) {
            h.insert(cookie, v);
        }
    }
}

fn route_of(ctx: &Ctx) -> Option<(Arc<Live>, usize)> {
    ctx.route.map(|i| (ctx.live.clone(), i))
}

fn route(live: &Live, i: usize) -> &Route {
    &live.config.routes[i]
}

impl Gate {
    /// The origin shield's part of `request_filter`: a fresh or stale cached copy, a coalesced
    /// wait for another request's fetch, or a pool slot for the origin (optional routes are shed
    /// first when the pool is saturated or slow). Returns `true` when it answered.
    pub(crate) async fn shield_request(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        host: &str,
    ) -> Result<bool> {
        let Some((live, i)) = route_of(ctx) else {
            return Ok(false);
        };
        let route = route(&live, i);
        let shield = &self.node.shield;
        let now = Instant::now();
        if route.shield.cache {
            match CacheKey::from_request(s.req_header(), host) {
                Err(_) => ctx.shield.status = Some(CacheStatus::Bypass),
                Ok(key) => {
                    let r = shield
                        .resolve(route, &key, &s.req_header().headers, now)
                        .await;
                    let status = r.cache_status();
                    ctx.shield.status = Some(status);
                    match r {
                        Resolved::Hit(e) | Resolved::Stale(e) => {
                            self.cached(s, ctx, &e, status).await?;
                            return Ok(true);
                        }
                        Resolved::Miss(fill) => ctx.shield.fill = fill,
                        Resolved::Bypass(_) => {}
                    }
                    ctx.shield.key = Some(key);
                }
            }
        }
        match shield.admit(route, now) {
            Ok(p) => ctx.shield.permit = Some(p),
            Err(shed) => {
                ctx.shield.fill = None; // followers stop waiting for this request now
                let stale = ctx
                    .shield
                    .key
                    .as_ref()
                    .and_then(|k| shield.stale_for(route, k, &s.req_header().headers, now));
                ctx.outcome = Outcome::Shed;
                match stale {
                    Some(e) => self.cached(s, ctx, &e, CacheStatus::Stale).await?,
                    None => {
                        let retry = shed.retry_after.as_secs().max(1);
                        self.shed(s, ctx, retry).await?;
                    }
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A healthy server of the route's pool not tried yet.
    pub(crate) fn peer(&self, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .map(|i| &ctx.live.config.routes[i])
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let pool = ctx.live.pools.get(&route.upstream).ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "route names an unknown pool")
        })?;
        let tried = &ctx.shield.tried;
        let backend = pool.select(tried).ok_or_else(|| {
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
        ctx.shield.tried.push(backend);
        ctx.shield.started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    /// Whether a failed connection may go to another server (nothing reached the origin).
    pub(crate) fn may_retry(&self, ctx: &Ctx) -> bool {
        let servers = ctx
            .route
            .and_then(|i| ctx.live.pools.get(&ctx.live.config.routes[i].upstream))
            .map_or(0, |p| p.cfg.servers.len());
        ctx.shield.tried.len() < servers
    }

    /// What the origin is sent: no queue tokens, the forwarded-for chain, the scheme, the
    /// request id, and the pool's `Host` if it names one.
    pub(crate) fn upstream_request(
        &self,
        s: &Session,
        up: &mut RequestHeader,
        ctx: &Ctx,
    ) -> Result<()> {
        if let Some(f) = &ctx.shield.fill {
            f.prepare_upstream_request(up); // the leader fetches a full, storable 200
        }
        let xff = ctx.client.forwarded_for(s.req_header());
        let host = ctx
            .route
            .and_then(|i| ctx.live.pools.get(&ctx.live.config.routes[i].upstream))
            .and_then(|p| p.cfg.host.as_deref());
        edit_request(up, |h| {
            // The origin never sees queue tokens.
            strip_own_cookies_from(h);
            h.remove(TOKEN_NAME);
            if let Some(xff) = xff {
                h.insert(X_FORWARDED_FOR, value(xff)?);
            }
            let proto = if ctx.client.secure { "https" } else { "http" };
            h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
            h.insert(X_REQUEST_ID, ctx.client.request_id.clone());
            if let Some(host) = host {
                h.insert(http::header::HOST, value(host.to_owned())?);
            }
            Ok(())
        })
    }

    /// The origin's answer, before any per-shopper change: the shield records it (health,
    /// latency, the fill), an error with a stale copy at hand becomes that copy, and origin
    /// commands are carried out and stripped.
    pub(crate) fn upstream_response(
        &self,
        s: &Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        if let Some((live, i)) = route_of(ctx) {
            let route = route(&live, i);
            let now = Instant::now();
            let status = resp.status.as_u16();
            if let Some(t) = ctx.shield.started {
                self.node
                    .shield
                    .record(&route.upstream, t.elapsed(), status < 500, now);
            }
            if status >= 500 {
                let stale = ctx.shield.key.as_ref().and_then(|k| {
                    self.node
                        .shield
                        .stale_for(route, k, &s.req_header().headers, now)
                });
                if let Some(e) = stale {
                    // Nothing was written downstream yet: fail_to_proxy answers with the copy.
                    ctx.shield.fill = None;
                    ctx.shield.stale = Some(e);
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(status),
                        "origin error: serving a stale copy",
                    ));
                }
            }
            if let Some(f) = ctx.shield.fill.as_mut() {
                if f.header(resp, now).is_err() {
                    ctx.shield.fill = None; // not storable: followers go to the origin themselves
                }
            }
            if let Some(t) = ctx.shield.started {
                let class = match status {
                    200..=299 => "2xx",
                    300..=399 => "3xx",
                    400..=499 => "4xx",
                    _ => "5xx",
                };
                self.node
                    .metrics
                    .upstream_seconds
                    .with_label_values(&[route.upstream.as_str(), class])
                    .observe(t.elapsed().as_secs_f64());
            }
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

    /// The origin failed (code ≥ 500): record it and find a stale copy to answer with.
    pub(crate) fn origin_failed(&self, s: &Session, ctx: &mut Ctx) -> Option<Arc<Entry>> {
        if ctx.shield.stale.is_none() {
            if let Some((live, i)) = route_of(ctx) {
                let route = route(&live, i);
                let now = Instant::now();
                if let Some(t) = ctx.shield.started {
                    self.node
                        .shield
                        .record(&route.upstream, t.elapsed(), false, now);
                }
                ctx.shield.stale = ctx.shield.key.as_ref().and_then(|k| {
                    self.node
                        .shield
                        .stale_for(route, k, &s.req_header().headers, now)
                });
            }
        }
        ctx.shield.stale.take()
    }

    /// Carries out `X-Flashgate-Command` from the origin.
    fn origin_command(&self, cmd: &str, ctx: &mut Ctx) {
        let Some(room) = ctx.room.clone() else { return };
        for c in cmd.split(',').map(str::trim) {
            match c {
                "revoke" => {
                    let Some(p) = ctx.pass.take() else { continue };
                    room.mark_ended(p.ticket);
                    // A renewed or new pass must not go out; the old one is cleared instead.
                    ctx.out.pass = CookieOp::Clear;
                    let ended = EventKind::SessionEnded {
                        reason: EndReason::Revoke,
                    };
                    self.ended(&room, "revoke", ended, p.ticket, clock::now());
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
}
