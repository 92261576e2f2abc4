//! Small pieces of HTTP the gate needs: cookies, the client's address, query strings, HTML
//! escaping. Each is a pure function with unit tests; none allocates more than it returns.

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::IpNet;

/// The value of cookie `name` from all `Cookie` headers, if present.
pub fn cookie<'a>(headers: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a str> {
    for h in headers {
        let Ok(h) = std::str::from_utf8(h) else {
            continue;
        };
        for pair in h.split(';') {
            let pair = pair.trim();
            if let Some((k, v)) = pair.split_once('=') {
                if k.trim() == name {
                    return Some(v.trim().trim_matches('"'));
                }
            }
        }
    }
    None
}

/// The values of a room's pass and ticket cookies (`fg_p_<room>`, `fg_t_<room>`), from one
/// scan of the `Cookie` headers (the first of each wins).
pub fn room_cookies<'a>(
    headers: impl Iterator<Item = &'a [u8]>,
    room: &str,
) -> (Option<&'a str>, Option<&'a str>) {
    let (mut pass, mut ticket) = (None, None);
    for h in headers {
        let Ok(h) = std::str::from_utf8(h) else {
            continue;
        };
        for pair in h.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            let Some(rest) = k.trim().strip_prefix("fg_") else {
                continue;
            };
            let slot = match rest.split_at_checked(2) {
                Some(("p_", r)) if r == room => &mut pass,
                Some(("t_", r)) if r == room => &mut ticket,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v.trim().trim_matches('"'));
            }
        }
    }
    (pass, ticket)
}

/// A `Cookie` header value without Flashgate's own cookies (`fg_*`), or `None` when nothing is
/// left. The origin never sees queue tokens.
pub fn strip_own_cookies(header: &str) -> Option<String> {
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with("fg_"))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Attributes for a `Set-Cookie`.
#[derive(Debug, Clone, Copy)]
pub struct CookieAttrs {
    pub secure: bool,
    /// `None` for a session cookie.
    pub max_age: Option<u64>,
}

/// A `Set-Cookie` header value: HttpOnly, SameSite=Lax, Path=/ and Secure over TLS.
pub fn set_cookie(name: &str, value: &str, attrs: CookieAttrs) -> String {
    let mut s = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = attrs.max_age {
        s.push_str(&format!("; Max-Age={age}"));
    }
    if attrs.secure {
        s.push_str("; Secure");
    }
    s
}

/// A `Set-Cookie` that deletes `name`.
pub fn clear_cookie(name: &str, secure: bool) -> String {
    set_cookie(
        name,
        "",
        CookieAttrs {
            secure,
            max_age: Some(0),
        },
    )
}

/// The client's address: the TCP peer, or — only when the peer is a trusted proxy — the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: Option<IpAddr>, xff: Option<&str>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(xff) = xff else { return Some(peer) };
    let mut last = peer;
    for part in xff.rsplit(',') {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => last = ip,
            Ok(ip) => return Some(ip),
            // Garbage in the chain: stop believing it.
            Err(_) => return Some(last),
        }
    }
    Some(last)
}

/// The decoded value of query parameter `name`.
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = || {
            let pair = b.get(i + 1..i + 3)?;
            u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()
        };
        match (b[i], hex()) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Percent-encodes a path-and-query for use as a query parameter value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes text for HTML element content and double-quoted attribute values (one
/// implementation, shared with the demo shop's pages).
pub use fg_html::escape as escape_html;

/// Whether a same-site return path is safe to redirect to (no scheme, no `//host`).
///
/// Control characters are refused anywhere: browsers drop tabs and newlines from URLs, so
/// `/\t/evil.example` would otherwise become the protocol-relative `//evil.example`.
pub fn safe_return_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/\\")
        && !p.bytes().any(|b| b.is_ascii_control())
}

/// A request path that cannot be served: it carries a control character or a NUL, raw or
/// percent-encoded (`%00`, `%0A`, ...). The gate answers 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPath;

/// The path as an origin might read it, for choosing routes and rooms: percent-escapes decoded
/// (`%64rop` is `drop`, `%2F` is `/`), `\` read as `/`, `;parameters` dropped from each
/// segment, runs of `/` merged and dot-segments (`.`, `..`) removed.
///
/// Common origins normalise paths this way (nginx merges slashes and resolves dot-segments,
/// servlet containers drop `;jsessionid=`, many frameworks decode escapes before routing), so
/// the gate must not let `//drops/x` or `/x/../drops/x` past a room on `/drops`. The gate
/// protects a request when its raw *or* canonical path falls in a room, and forwards the raw
/// path unchanged. Borrowed when the path needs no change (the common case).
pub fn canonical_path(raw: &str) -> Result<Cow<'_, str>, BadPath> {
    let b = raw.as_bytes();
    if b.iter().any(|c| c.is_ascii_control()) {
        return Err(BadPath);
    }
    let plain = b.first() == Some(&b'/')
        && !b.iter().any(|c| matches!(c, b'%' | b'\\' | b';'))
        && !raw.contains("//")
        && !raw.split('/').any(|seg| seg == "." || seg == "..");
    if plain {
        return Ok(Cow::Borrowed(raw));
    }
    // Decode every escape; an invalid one stays as it is.
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                decoded.push(v);
                i += 3;
            }
            (c, _) => {
                decoded.push(c);
                i += 1;
            }
        }
    }
    if decoded.iter().any(|c| c.is_ascii_control()) {
        return Err(BadPath);
    }
    // Segments, without `;parameters`, empty segments (merged slashes) and dot-segments.
    let mut out: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for seg in decoded.split(|c| *c == b'/' || *c == b'\\') {
        let seg = seg.split(|c| *c == b';').next().unwrap_or_default();
        trailing = false;
        match seg {
            b"" => trailing = true,
            b"." => trailing = true,
            b".." => {
                out.pop();
                trailing = true;
            }
            s => out.push(s),
        }
    }
    let mut path = Vec::with_capacity(decoded.len() + 1);
    for seg in &out {
        path.push(b'/');
        path.extend_from_slice(seg);
    }
    if trailing || out.is_empty() {
        path.push(b'/');
    }
    Ok(Cow::Owned(String::from_utf8_lossy(&path).into_owned()))
}

/// Whether a `Host` header value is a well-formed host with an optional port: a name or IPv4
/// address of letters, digits, `-`, `.` and `_`, or a bracketed IPv6 literal. Anything else
/// (spaces, `/`, `@`, non-ASCII, an empty name) is a bad request.
pub fn valid_host(h: &str) -> bool {
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
        {
            return false;
        }
        match after.strip_prefix(':') {
            _ if after.is_empty() => return true,
            None => return false,
            port => ("v6", port),
        }
    } else {
        match h.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        }
    };
    let name_ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    let port_ok = match port {
        None => true,
        // RFC 3986 allows an empty port (`shop.test:`).
        Some(p) => p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()),
    };
    name_ok && port_ok
}

/// Whether the client prefers JSON: `Accept` names `application/json` and not `text/html`.
pub fn wants_json(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        let h: [&[u8]; 2] = [b"a=1; fg_t_drop=abc", b"fg_p_drop=\"xyz\""];
        assert_eq!(cookie(h.iter().copied(), "fg_t_drop"), Some("abc"));
        assert_eq!(cookie(h.iter().copied(), "fg_p_drop"), Some("xyz"));
        assert_eq!(cookie(h.iter().copied(), "fg_t"), None);
        assert_eq!(
            room_cookies(h.iter().copied(), "drop"),
            (Some("xyz"), Some("abc"))
        );
        assert_eq!(room_cookies(h.iter().copied(), "dro"), (None, None));
        let twice: [&[u8]; 1] = [b"fg_p_drop=first; fg_p_drop=second; fg_t_=x"];
        assert_eq!(
            room_cookies(twice.iter().copied(), "drop"),
            (Some("first"), None)
        );
        let bad: [&[u8]; 1] = [b"\xff\xfe=; ;;=;x"];
        assert_eq!(cookie(bad.iter().copied(), "x"), None);
        assert_eq!(
            strip_own_cookies("a=1; fg_t_x=2; b=3"),
            Some("a=1; b=3".into())
        );
        assert_eq!(strip_own_cookies("fg_p_x=2"), None);
        let c = set_cookie(
            "fg_p_drop",
            "v",
            CookieAttrs {
                secure: true,
                max_age: Some(60),
            },
        );
        assert_eq!(
            c,
            "fg_p_drop=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        assert!(clear_cookie("fg_t_drop", false).contains("Max-Age=0"));
    }

    #[test]
    fn canonical_paths_read_like_an_origin_would() {
        let c = |p: &str| canonical_path(p).map(|c| c.into_owned());
        assert!(matches!(canonical_path("/drops/x"), Ok(Cow::Borrowed(_))));
        for (raw, canon) in [
            ("/drops/x", "/drops/x"),
            ("//drops/x", "/drops/x"),
            ("/./drops/x", "/drops/x"),
            ("/a/../drops/x", "/drops/x"),
            ("/%64rops/x", "/drops/x"),
            ("/drops%2Fx", "/drops/x"),
            ("/drops%2fx", "/drops/x"),
            ("/%2e%2e/drops", "/drops"),
            ("/drops;jsessionid=1/x", "/drops/x"),
            ("/drops\\x", "/drops/x"),
            ("/drops/", "/drops/"),
            ("/drops/.", "/drops/"),
            ("/drops/x/..", "/drops/"),
            ("/../../", "/"),
            ("/", "/"),
            ("", "/"),
            ("/%zz/%", "/%zz/%"),
        ] {
            assert_eq!(c(raw).as_deref(), Ok(canon), "{raw}");
        }
        assert_eq!(c("/drops%00"), Err(BadPath));
        assert_eq!(c("/drops%0a"), Err(BadPath));
        assert_eq!(c("/a\tb"), Err(BadPath));
    }

    #[test]
    fn hosts() {
        for ok in [
            "shop.test",
            "SHOP.test:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8443",
            "a_b.internal",
            "shop.test:",
            "[::1]:",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "a@b",
            "a:b",
            "a:1:2",
            ":80",
            "a:123456",
            "[::1",
            "[]",
            "[::1]x",
            "\u{e9}.test",
            "a\u{0}b",
        ] {
            assert!(!valid_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn xff_is_believed_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        // Untrusted peer: XFF ignored.
        assert_eq!(
            client_ip(Some(ip("203.0.113.9")), Some("1.2.3.4"), &trusted),
            Some(ip("203.0.113.9"))
        );
        // Trusted peer: right-most untrusted entry.
        assert_eq!(
            client_ip(
                Some(ip("10.0.0.2")),
                Some("1.2.3.4, 198.51.100.7, 10.0.0.5"),
                &trusted
            ),
            Some(ip("198.51.100.7"))
        );
        // Garbage in the chain stops the walk.
        assert_eq!(
            client_ip(Some(ip("10.0.0.2")), Some("junk, 10.0.0.5"), &trusted),
            Some(ip("10.0.0.5"))
        );
        assert_eq!(
            client_ip(Some(ip("10.0.0.2")), None, &trusted),
            Some(ip("10.0.0.2"))
        );
    }

    #[test]
    fn queries_and_escaping() {
        assert_eq!(
            query_param(Some("room=drop&x=1"), "room").as_deref(),
            Some("drop")
        );
        assert_eq!(
            query_param(Some("return=%2Fdrops%2Fa%3Fb%3D1"), "return").as_deref(),
            Some("/drops/a?b=1")
        );
        assert_eq!(query_param(Some("a=%zz%"), "a").as_deref(), Some("%zz%"));
        assert_eq!(query_param(None, "room"), None);
        assert_eq!(percent_encode("/a b?c=1"), "/a%20b%3Fc%3D1");
        assert_eq!(
            escape_html("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
        assert!(safe_return_path("/drops/a?b=1"));
        assert!(!safe_return_path("//evil.example"));
        assert!(!safe_return_path("https://evil.example"));
        assert!(
            !safe_return_path("/\t/evil.example"),
            "browsers drop the tab"
        );
        assert!(!safe_return_path("/\n/evil.example"));
        assert!(wants_json(Some("application/json")));
        assert!(!wants_json(Some("text/html,application/json;q=0.9")));
        assert!(!wants_json(None));
    }
}
