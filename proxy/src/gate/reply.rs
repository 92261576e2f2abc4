//! Every response the gate writes itself: the one map from an admission outcome to a reply
//! ([`Gate::answer`]), the pages and JSON of waiting, closed, bot and error answers, cached
//! copies, assets, and plain refusals.
//!
//! HTML or JSON is negotiated here only (`Accept: application/json` and no `text/html`), our
//! pages get their Content-Security-Policy here only, and every response carries a
//! Content-Length so keep-alive survives.

use std::time::Instant;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use waitroom::{RejectReason, RoomView, WaitInfo};

use super::admission::Admission;
use super::credentials::Outgoing;
use super::request::{header, X_REQUEST_ID};
use super::{Ctx, Gate};
use crate::bot::Verdict;
use crate::http_util::wants_json;
use crate::metrics::Outcome;
use crate::pages::{Status, WaitingPage};
use crate::rooms::RoomRuntime;
use crate::shield::{CacheStatus, Entry};

/// Content-Security-Policy of Flashgate's own pages (waiting, challenge, closed, error).
pub const PAGE_CSP: &str =
    "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; \
     style-src-attr 'unsafe-inline'; img-src 'self' https: data:; connect-src 'self'; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";

/// Whether the request asks for JSON rather than a page.
pub(crate) fn json_wanted(s: &Session) -> bool {
    wants_json(header(s.req_header(), "accept"))
}

/// A response written by the gate itself, with the room cookies in `out`.
pub(crate) async fn respond_with(
    s: &mut Session,
    status: u16,
    content_type: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, String)],
    out: &Outgoing,
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
    out.write(&mut h)?;
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

/// The head of a server-sent-events stream (no length: the body lasts until the stream ends),
/// with the room cookies `out` sets.
pub(crate) fn event_stream_head(out: &Outgoing) -> Result<ResponseHeader> {
    let mut h = ResponseHeader::build(200, Some(5))?;
    h.insert_header("content-type", "text/event-stream")?;
    h.insert_header("cache-control", "no-store")?;
    h.insert_header("x-accel-buffering", "no")?;
    out.write(&mut h)?;
    Ok(h)
}

/// A response written by the gate itself, setting no room cookie.
pub(crate) async fn respond(
    s: &mut Session,
    status: u16,
    content_type: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, String)],
) -> Result<()> {
    respond_with(s, status, content_type, body, headers, &Outgoing::default()).await
}

/// Answers 405 unless the request is a POST; `Ok(true)` when it is one.
pub(crate) async fn post_only(s: &mut Session) -> Result<bool> {
    if s.req_header().method == http::Method::POST {
        return Ok(true);
    }
    let allow = [("allow", "POST".into())];
    respond(s, 405, "text/plain", "use POST\n", &allow).await?;
    Ok(false)
}

/// A compiled-in asset (our page's CSS and script), cacheable by the browser.
pub(crate) async fn asset(s: &mut Session, ctype: &str, body: &'static str) -> Result<()> {
    let body = Bytes::from_static(body.as_bytes());
    let mut h = ResponseHeader::build(200, Some(3))?;
    h.insert_header("content-type", ctype)?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "public, max-age=300")?;
    s.write_response_header(Box::new(h), false).await?;
    s.write_response_body(Some(body), true).await
}

impl Gate {
    /// The one map from an admission outcome to what the shopper gets. `Ok(true)` when a
    /// response was written (the origin is not contacted).
    pub(crate) async fn answer(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        admission: Admission,
    ) -> Result<bool> {
        match admission {
            Admission::Forward => return Ok(false),
            Admission::Wait(w) | Admission::Next(w) => {
                ctx.outcome = Outcome::Queued;
                self.wait(s, ctx, room, &w).await?;
            }
            Admission::Reject(r) => {
                ctx.outcome = Outcome::Rejected;
                self.reject(s, room, r).await?;
            }
            Admission::Bot(v) => self.bot(s, ctx, room, v).await?,
            Admission::Degraded(view) => {
                ctx.outcome = Outcome::StoreError;
                self.degraded(s, room, &view).await?;
            }
        }
        Ok(true)
    }

    /// The waiting page or JSON, renewing the ticket so the place is kept.
    async fn wait(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        w: &WaitInfo,
    ) -> Result<()> {
        let st = &mut **ctx;
        st.out.set_ticket(
            &st.live.config.keys,
            &w.renewed,
            room.cfg.settings.abandon_after,
        );
        let status = Status::waiting(room.id(), w);
        let headers = [("retry-after", w.poll_after.as_secs().max(1).to_string())];
        let code = room.cfg.status_code;
        if json_wanted(s) {
            respond_with(s, code, JSON, status.to_json(), &headers, &ctx.out).await
        } else {
            let uri = &s.req_header().uri;
            let return_to = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
            let html = self.pages.render_waiting(&WaitingPage {
                room: room.id(),
                branding: &room.cfg.branding,
                status: &status,
                return_to: &return_to,
            });
            respond_with(s, code, HTML, html, &headers, &ctx.out).await
        }
    }

    /// The closed, sold-out or draining answer.
    async fn reject(&self, s: &mut Session, room: &RoomRuntime, r: RejectReason) -> Result<()> {
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
        if json_wanted(s) {
            let st = Status::bare(
                room.id(),
                view.state,
                view.serving(),
                room.cfg.settings.poll_interval,
                Some(message),
            );
            respond(s, code, JSON, st.to_json(), &[]).await
        } else {
            let html = self
                .pages
                .render_closed(&room.cfg.branding, headline, &message);
            respond(s, code, HTML, html, &[]).await
        }
    }

    /// "Please wait" while the store cannot number a new arrival (policy `queue`): the room's
    /// waiting status code (200/202/429, never a 5xx: behind a CDN a 5xx becomes the CDN's error
    /// page) with Retry-After; the page reloads itself after that long (meta refresh) and gets
    /// its ticket once the store answers.
    async fn degraded(&self, s: &mut Session, room: &RoomRuntime, view: &RoomView) -> Result<()> {
        let retry = room.cfg.settings.poll_interval.as_secs().max(1);
        let headers = [("retry-after", retry.to_string())];
        let code = room.cfg.status_code;
        let msg = "We're handling a lot of shoppers right now. Please stay on this page.";
        if json_wanted(s) {
            let mut st = Status::bare(
                room.id(),
                view.state,
                view.serving(),
                room.cfg.settings.poll_interval,
                Some(msg.into()),
            );
            st.poll_after_ms = retry * 1000;
            respond(s, code, JSON, st.to_json(), &headers).await
        } else {
            let html = self
                .pages
                .render_error(&room.cfg.branding, "Just a moment", msg, retry);
            respond(s, code, HTML, html, &headers).await
        }
    }

    /// Answers a bot verdict: the challenge page (or JSON), 403 or 429.
    pub(crate) async fn bot(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        v: Verdict,
    ) -> Result<()> {
        ctx.outcome = Outcome::Bot;
        let json = json_wanted(s);
        match v {
            Verdict::Challenge(c) => {
                if json {
                    respond(s, 403, JSON, c.to_json(), &[]).await
                } else {
                    let back = s
                        .req_header()
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned();
                    let html = self.node.bot.page().render(&room.cfg.branding, &c, &back);
                    respond(s, 403, HTML, html, &[]).await
                }
            }
            Verdict::Limited { .. } => {
                let retry = v.retry_after_secs().unwrap_or(1);
                let headers = [("retry-after", retry.to_string())];
                if json {
                    let body = r#"{"error":"too many requests"}"#;
                    respond(s, 429, JSON, body, &headers).await
                } else {
                    let msg = "Too many requests from your connection. Please wait a moment.";
                    let html = self
                        .pages
                        .render_error(&room.cfg.branding, "Slow down", msg, retry);
                    respond(s, 429, HTML, html, &headers).await
                }
            }
            Verdict::Block(_) | Verdict::Allow | Verdict::Bypass | Verdict::Tarpit => {
                let html = self.pages.render_error(
                    &room.cfg.branding,
                    "Access denied",
                    "This request was refused.",
                    0,
                );
                respond(s, 403, HTML, html, &[]).await
            }
        }
    }

    /// The shop's part is shedding load and no copy is at hand: 503 with Retry-After.
    pub(crate) async fn shed(&self, s: &mut Session, ctx: &Ctx, retry: u64) -> Result<()> {
        let html = self.pages.render_error(
            self.branding_for(ctx),
            "The shop is busy",
            "This part of the shop is taking a short break so checkout stays fast. Please try again in a moment.",
            retry,
        );
        respond(s, 503, HTML, html, &[("retry-after", retry.to_string())]).await
    }

    /// The origin could not be reached (code ≥ 500) or the request was bad (4xx).
    pub(crate) async fn proxy_error(&self, s: &mut Session, ctx: &Ctx, code: u16) -> Result<()> {
        let retry = 10;
        let (headline, msg) = if code >= 500 {
            (
                "The shop is busy",
                "We couldn't reach the shop just now. This page will try again shortly.",
            )
        } else {
            ("Bad request", "The request could not be understood.")
        };
        let html = self
            .pages
            .render_error(self.branding_for(ctx), headline, msg, retry);
        let headers = [("retry-after", retry.to_string())];
        respond(s, code, HTML, html, &headers).await
    }

    /// Writes a cached response (with the shopper's cookies, which never enter the cache).
    pub(crate) async fn cached(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        e: &Entry,
        status: CacheStatus,
    ) -> Result<()> {
        let mut h = e.response_header(Instant::now(), status)?;
        ctx.out.write(&mut h)?;
        ctx.out = Outgoing::default();
        h.insert_header(X_REQUEST_ID, ctx.client.request_id.clone())?;
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

    fn branding_for<'a>(&'a self, ctx: &'a Ctx) -> &'a crate::config::Branding {
        ctx.room
            .as_ref()
            .map_or(&self.default_branding, |r| &r.cfg.branding)
    }
}
