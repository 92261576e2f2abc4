//! The request as the gate sees it: who sent it (client address, TLS, trust in the proxy in
//! front), its id, and whether its head is acceptable at all.
//!
//! The peer's trust is decided once, here; `X-Forwarded-For` and `X-Forwarded-Proto` are
//! believed only from a peer in `server.trusted_proxies`, both for the client address (bot
//! limits, bindings) and for what the origin is told ([`Client::forwarded_for`]).

use std::net::IpAddr;

use pingora::http::RequestHeader;
use pingora::proxy::Session;

use crate::config::Config;
use crate::http_util::client_ip;

/// Largest request head (target and header fields) forwarded; larger ones get 431.
pub const MAX_REQUEST_HEAD: usize = 32 * 1024;

/// Who sent the request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Client {
    pub(crate) request_id: String,
    /// The TCP peer.
    pub(crate) peer: Option<IpAddr>,
    /// The peer is one of `server.trusted_proxies`.
    pub(crate) peer_trusted: bool,
    /// The shopper's address: the peer, or what a trusted peer says it forwarded.
    pub(crate) addr: Option<IpAddr>,
    /// The shopper reached us over HTTPS: cookies get `Secure`, the origin gets
    /// `X-Forwarded-Proto: https`.
    pub(crate) secure: bool,
}

impl Client {
    /// Reads the request's origin. `secure_cookies`: TLS ends in front of us, whatever the
    /// request says.
    pub(crate) fn read(s: &Session, config: &Config, secure_cookies: bool) -> Self {
        let req = s.req_header();
        let peer = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let trusted = &config.server.trusted_proxies;
        let peer_trusted = peer.is_some_and(|p| trusted.iter().any(|n| n.contains(&p)));
        let addr = client_ip(peer, header(req, "x-forwarded-for"), trusted);
        // HTTPS: our own TLS listener (H1 or H2), or TLS ended by a proxy we trust.
        let over_tls = s.digest().is_some_and(|d| d.ssl_digest.is_some());
        let proxied_https = peer_trusted
            && header(req, "x-forwarded-proto")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        Self {
            request_id: request_id(),
            peer,
            peer_trusted,
            addr,
            secure: secure_cookies || over_tls || proxied_https,
        }
    }

    /// The `X-Forwarded-For` the origin gets: a trusted chain extended by the peer, anything
    /// else replaced by it; `None` without a peer address (a Unix socket).
    pub(crate) fn forwarded_for(&self, req: &RequestHeader) -> Option<String> {
        let peer = self.peer?;
        Some(match header(req, "x-forwarded-for") {
            Some(chain) if self.peer_trusted => format!("{chain}, {peer}"),
            _ => peer.to_string(),
        })
    }
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

/// A header's value as text, if it is text.
pub(crate) fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The request's host, lower case, without port or trailing dot.
pub(crate) fn host_of(req: &RequestHeader) -> String {
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

/// Why a request is refused before anything else looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// RFC 9112 §3.2: a missing (HTTP/1.1), repeated or malformed `Host`. A host the rooms
    /// cannot read must not slip past a host-scoped room.
    BadHost(&'static str),
    /// Pingora reads heads of up to 1 MiB; browsers never send more than a few KiB, and the
    /// origin should not have to swallow the rest (nginx refuses above 4 × 8 KiB).
    HeadTooLarge,
    /// A path no route or room can be matched against safely.
    BadPath,
}

impl Refusal {
    /// Status, body, and whether the connection closes.
    pub(crate) fn answer(self) -> (u16, &'static str, bool) {
        match self {
            Refusal::BadHost(why) => (400, why, true),
            Refusal::HeadTooLarge => (431, "request header too large\n", true),
            Refusal::BadPath => (400, "bad request path\n", false),
        }
    }
}

/// The head checks every request passes first.
pub(crate) fn check_head(req: &RequestHeader) -> Result<(), Refusal> {
    if let Some(why) = bad_host(req) {
        return Err(Refusal::BadHost(why));
    }
    if head_bytes(req) > MAX_REQUEST_HEAD {
        return Err(Refusal::HeadTooLarge);
    }
    Ok(())
}

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
