//! What a request carries for a room — its pass and its ticket — read and verified once, and
//! what the response will set ([`Outgoing`]).
//!
//! Tokens come from the room's cookies (`fg_p_<room>`, `fg_t_<room>`) or the
//! `X-Flashgate-Token` header (apps without cookies; it may hold either kind, verification
//! tells which). A bad, forged, foreign or expired token is no token: the shopper is queued
//! again, never admitted and never shown an error. An expired one is still opened (signature,
//! room and client checked, expiry not) so the event stream can say whose session ended or
//! whose place was lost. A pass whose session this node saw end (leave, revoke) is no pass.
//!
//! Admission, status polls, server-sent events, leave and feedback all use the one
//! [`Credentials`] a request produces.

use std::time::Duration;

use pingora::http::{RequestHeader, ResponseHeader};
use waitroom::token::{Expect, TokenError};
use waitroom::{KeyRing, Pass, Ticket, UnixMillis};

use crate::http_util::{clear_cookie, room_cookies, set_cookie, CookieAttrs};
use crate::rooms::RoomRuntime;

/// Header carrying a ticket or pass for apps that keep no cookies (both directions).
pub const TOKEN_HEADER: &str = "x-flashgate-token";
pub(crate) const TOKEN_NAME: http::HeaderName = http::HeaderName::from_static(TOKEN_HEADER);
/// What a reconnecting `EventSource` sends back: the id of the last event it saw.
const LAST_EVENT_ID: http::HeaderName = http::HeaderName::from_static("last-event-id");

/// The request's verified tokens for one room.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    /// A valid pass whose session has not ended on this node.
    pub(crate) pass: Option<Pass>,
    /// A valid ticket (looked at by admission only when there is no pass).
    pub(crate) ticket: Option<Ticket>,
    /// The pass behind an expired pass token: its session ended by expiry.
    pub(crate) expired_pass: Option<Pass>,
    /// The ticket behind an expired ticket token: its place was lost by not polling.
    pub(crate) expired_ticket: Option<Ticket>,
    /// The client binding tokens for this request must carry (and new ones get).
    pub(crate) binding: u64,
}

impl Credentials {
    /// Reads and verifies the request's tokens for `room`.
    pub(crate) fn read(
        req: &RequestHeader,
        room: &RoomRuntime,
        keys: &KeyRing,
        client: Option<std::net::IpAddr>,
        now: UnixMillis,
    ) -> Self {
        let ua = req
            .headers
            .get(http::header::USER_AGENT)
            .map_or(&b""[..], |v| v.as_bytes());
        let expect = Expect {
            room: room.id(),
            binding: room.cfg.binding.value(ua, client),
            now,
            leeway: room.cfg.settings.token_leeway,
        };
        let cookies = || req.headers.get_all("cookie").iter().map(|v| v.as_bytes());
        let header_token = req.headers.get(TOKEN_NAME).and_then(|v| v.to_str().ok());
        let (pass_cookie, ticket_cookie) = room_cookies(cookies(), room.id());
        let pass_tok = pass_cookie.or(header_token);

        let mut c = Credentials {
            binding: expect.binding,
            ..Credentials::default()
        };
        if let Some(t) = pass_tok {
            match keys.verify_pass(t, &expect) {
                Ok(p) if !room.is_ended(p.ticket) => c.pass = Some(p),
                Ok(_) => {}
                Err(TokenError::Expired) => {
                    c.expired_pass = keys.verify_pass(t, &ignoring_expiry(&expect)).ok();
                }
                Err(_) => {}
            }
        }
        // A ticket from the cookie, else the token header, else `Last-Event-ID`: an event
        // stream renews its ticket in each event's id (see `push`), which the browser sends
        // back when it reconnects, and the waiting page sends in the token header, while the
        // cookie still holds the ticket the stream opened with. The first valid one counts; a
        // header holding a valid pass holds no ticket (not verified twice).
        let from_stream = match c.pass {
            None => req.headers.get(LAST_EVENT_ID).and_then(|v| v.to_str().ok()),
            Some(_) => None,
        };
        for t in [ticket_cookie, header_token, from_stream]
            .into_iter()
            .flatten()
        {
            if c.pass.is_some() && Some(t) == pass_tok {
                continue;
            }
            match keys.verify_ticket(t, &expect) {
                Ok(tk) => {
                    c.ticket = Some(tk);
                    c.expired_ticket = None;
                    break;
                }
                Err(TokenError::Expired) if c.expired_ticket.is_none() => {
                    c.expired_ticket = keys.verify_ticket(t, &ignoring_expiry(&expect)).ok();
                }
                Err(_) => {}
            }
        }
        c
    }

    /// The ticket admission works with: none while a valid pass is there.
    pub(crate) fn waiting_ticket(&self) -> Option<&Ticket> {
        self.ticket.as_ref().filter(|_| self.pass.is_none())
    }

    /// Who this request is to bot defence.
    pub(crate) fn bot_credential(&self) -> crate::bot::Credential {
        match (&self.pass, self.waiting_ticket()) {
            (Some(p), _) => crate::bot::Credential::Pass(p.ticket),
            (None, Some(t)) => crate::bot::Credential::Ticket(t.number),
            (None, None) => crate::bot::Credential::None,
        }
    }
}

/// `expect` with a leeway so long that no token is past it (signature, room and client still
/// checked).
fn ignoring_expiry<'a>(expect: &Expect<'a>) -> Expect<'a> {
    Expect {
        leeway: Duration::from_secs(u64::from(u32::MAX)),
        ..*expect
    }
}

/// What a response does with one of the room's cookies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum CookieOp {
    #[default]
    Keep,
    /// Set it to this token for this long.
    Set {
        token: String,
        max_age: Duration,
    },
    Clear,
}

/// The room cookies a response sets, by kind: origin commands edit them by kind (a revoke
/// turns the pass into [`CookieOp::Clear`]), and they are written as headers only at the end.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    /// The room the cookies belong to.
    room: Option<std::sync::Arc<str>>,
    pub(crate) pass: CookieOp,
    pub(crate) ticket: CookieOp,
    pub(crate) secure: bool,
}

impl Outgoing {
    pub(crate) fn for_room(room: &RoomRuntime, secure: bool) -> Self {
        Self {
            room: Some(room.name().clone()),
            secure,
            ..Self::default()
        }
    }

    /// Signs `p` into the pass cookie (and the token header).
    pub(crate) fn set_pass(&mut self, keys: &KeyRing, p: &Pass, now: UnixMillis) {
        let left = Duration::from_secs(p.expires_at.saturating_sub(now.secs()));
        self.pass = CookieOp::Set {
            token: keys.sign_pass(p),
            max_age: left,
        };
    }

    /// Signs `t` into the ticket cookie (and the token header), kept for `max_age`.
    pub(crate) fn set_ticket(&mut self, keys: &KeyRing, t: &Ticket, max_age: Duration) {
        self.ticket = CookieOp::Set {
            token: keys.sign_ticket(t),
            max_age,
        };
    }

    /// The ticket token this response sets, if it sets one.
    pub(crate) fn ticket_token(&self) -> Option<&str> {
        match &self.ticket {
            CookieOp::Set { token, .. } => Some(token),
            CookieOp::Keep | CookieOp::Clear => None,
        }
    }

    /// Whether there is anything to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.pass == CookieOp::Keep && self.ticket == CookieOp::Keep
    }

    /// The `Set-Cookie` values, and the token for `X-Flashgate-Token` (a new pass wins over a
    /// new ticket).
    pub(crate) fn render(&self) -> (Vec<String>, Option<&str>) {
        let Some(room) = &self.room else {
            return (Vec::new(), None);
        };
        let mut cookies = Vec::new();
        let mut token = None;
        for (prefix, op) in [("fg_p_", &self.pass), ("fg_t_", &self.ticket)] {
            let name = format!("{prefix}{room}");
            match op {
                CookieOp::Keep => {}
                CookieOp::Set { token: t, max_age } => {
                    let attrs = CookieAttrs {
                        secure: self.secure,
                        max_age: Some(max_age.as_secs().max(1)),
                    };
                    cookies.push(set_cookie(&name, t, attrs));
                    token = token.or(Some(t.as_str()));
                }
                CookieOp::Clear => cookies.push(clear_cookie(&name, self.secure)),
            }
        }
        (cookies, token)
    }

    /// Writes the cookies and the token header into plain header fields.
    pub(crate) fn write_map(&self, h: &mut http::HeaderMap) -> pingora::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let (cookies, token) = self.render();
        for c in cookies {
            h.append(http::header::SET_COOKIE, super::upstream::value(c)?);
        }
        if let Some(t) = token {
            h.insert(TOKEN_NAME, super::upstream::value(t.to_owned())?);
        }
        Ok(())
    }

    /// Writes the cookies and the token header into `resp`.
    pub(crate) fn write(&self, resp: &mut ResponseHeader) -> pingora::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        super::upstream::edit_response(resp, |h| self.write_map(h))
    }
}
