//! The request as the gate sees it: who sent it (client address, TLS, trust in the proxy in
//! front), its id, and whether its head is acceptable at all.
//!
//! The peer's trust is decided once, here; `X-Forwarded-For` and `X-Forwarded-Proto` are
//! believed only from a peer in `server.trusted_proxies`, both for the client address (bot
//! limits, bindings) and for what the origin is told ([`Client::forwarded_for`]).

use std::net::IpAddr;

use pingora::http::RequestHeader;
use pingora::proxy::Session;

use std::sync::Arc;

use crate::config::{Config, Route};
use crate::http_util::{canonical_path, client_ip, BadPath};
use crate::node::Live;
use crate::rooms::RoomRuntime;
use crate::routing::{longest, RouteKind};

/// Header names the gate reads or writes on every request, parsed once (a name given as text
/// is parsed again on each lookup).
pub(crate) const X_FORWARDED_FOR: http::HeaderName =
    http::HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: http::HeaderName =
    http::HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Largest request head (target and header fields) forwarded; larger ones get 431.
pub const MAX_REQUEST_HEAD: usize = 32 * 1024;

/// Who sent the request.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// Made once, sent to the origin and back to the shopper as `X-Request-Id`.
    pub(crate) request_id: http::HeaderValue,
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
        // Forwarding headers are read only from a peer we trust (anyone can send them).
        let forwarded = |name: http::HeaderName| {
            peer_trusted
                .then(|| req.headers.get(name).and_then(|v| v.to_str().ok()))
                .flatten()
        };
        let addr = client_ip(peer, forwarded(X_FORWARDED_FOR), trusted);
        // HTTPS: our own TLS listener (H1 or H2), or TLS ended by a proxy we trust.
        let over_tls = s.digest().is_some_and(|d| d.ssl_digest.is_some());
        let proxied_https =
            forwarded(X_FORWARDED_PROTO).is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
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
        let chain = req.headers.get(X_FORWARDED_FOR);
        let mut value = String::with_capacity(48);
        if let Some(chain) = chain.and_then(|v| v.to_str().ok()) {
            if self.peer_trusted {
                value.push_str(chain);
                value.push_str(", ");
            }
        }
        push_ip(&mut value, peer);
        Some(value)
    }

    /// The request id as text (for the access log).
    pub(crate) fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }
}

impl Default for Client {
    fn default() -> Self {
        Self {
            request_id: http::HeaderValue::from_static(""),
            peer: None,
            peer_trusted: false,
            addr: None,
            secure: false,
        }
    }
}

/// A request id: 24 hex digits, a random per-process prefix and a counter. Unique per node and
/// cheap (no system call per request); it need not be unpredictable.
fn request_id() -> http::HeaderValue {
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
    let mut id = Vec::with_capacity(24);
    for shift in (0..24).rev() {
        id.push(b"0123456789abcdef"[((n >> (shift * 4)) & 0xf) as usize]);
    }
    // Hex digits are a valid header value; the bytes are taken over, not copied.
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from(id))
        .unwrap_or_else(|_| http::HeaderValue::from_static(""))
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

/// Where a request goes.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// The route's index in the config.
    pub(crate) route: Option<usize>,
    /// The route's kind (`None`: no route for this path).
    pub(crate) kind: Option<RouteKind>,
    /// The room that gates it.
    pub(crate) room: Option<Arc<RoomRuntime>>,
}

/// The route index for `host` + `path`.
fn route_for(routes: &[Route], host: &str, path: &str) -> Option<usize> {
    let candidates = routes.iter().enumerate().filter_map(|(i, r)| {
        let here = r.host.as_deref().is_none_or(|h| h == host);
        // A host-specific route beats a wildcard of equal length.
        here.then_some((i, r.path.as_str(), usize::from(r.host.is_some())))
    });
    longest(candidates, path)
}

/// The route and room of a request; `Err` for a path that cannot be normalised.
pub(crate) fn find(live: &Live, host: &str, path: &str, method: &str) -> Result<Found, BadPath> {
    let canon = canonical_path(path)?;
    let routes = &live.config.routes;
    let raw_route = route_for(routes, host, path);
    let canon_route = if canon == path {
        raw_route
    } else {
        route_for(routes, host, &canon)
    };
    let Some(route) = raw_route.or(canon_route) else {
        return Ok(Found::default());
    };
    let kind = routes[route].kind;
    let canon_bypass = canon_route.is_none_or(|i| routes[i].kind == RouteKind::Bypass);
    let room = if kind != RouteKind::Bypass || !canon_bypass {
        live.rooms
            .find(host, path, method)
            .or_else(|| live.rooms.find(host, &canon, method))
            .cloned()
    } else {
        None
    };
    Ok(Found {
        route: Some(route),
        kind: Some(kind),
        room,
    })
}

/// Appends `ip` as text: an IPv4 address through `itoa` (a quarter of the instructions of
/// `Display`, which runs on every forwarded request), IPv6 through `Display`.
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::push_ip;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "203.0.113.255",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("an address");
            let mut out = String::from("x, ");
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x, {ip}"));
        }
    }
}
