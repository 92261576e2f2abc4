//! What may be stored, and for how long: `Cache-Control` parsing, the never-cache rules and the
//! freshness / stale windows of a response.

use std::time::Duration;

use http::header::HeaderMap;

use super::key::{vary_of, Vary};
use super::settings::{CacheSettings, RouteShield};

/// Statuses the cache stores. 404 and 410 are stored for at most [`NEGATIVE_TTL_CAP`], so
/// a page that goes live during a sale shows up quickly.
pub const CACHEABLE_STATUSES: [u16; 8] = [200, 203, 204, 300, 301, 308, 404, 410];

/// The longest a 404 or 410 stays fresh.
pub const NEGATIVE_TTL_CAP: Duration = Duration::from_secs(10);

/// No freshness or stale window is longer than this (keeps `Instant` arithmetic safe).
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Response header through which the origin gives Flashgate commands: such a response is
/// addressed to one shopper and never shared.
pub const COMMAND_HEADER: &str = "x-flashgate-command";

/// The directives of a response's `Cache-Control` that the shield reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    /// `must-revalidate` or `proxy-revalidate`: no stale serving.
    pub must_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

/// Parses every `Cache-Control` field line (and `Pragma: no-cache` when there is no
/// `Cache-Control`). Directive names are case-insensitive; `no-cache="field"` and
/// `private="field"` count as the bare directive (the stricter reading); a malformed delta
/// counts as 0 (RFC 9111 §4.2.1: treat as stale).
pub fn parse_cache_control(headers: &HeaderMap) -> CacheControl {
    let mut cc = CacheControl::default();
    let mut any = false;
    for v in headers.get_all(http::header::CACHE_CONTROL) {
        any = true;
        let text = String::from_utf8_lossy(v.as_bytes());
        for d in split_directives(&text) {
            let (name, arg) = match d.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (d.trim(), None),
            };
            let delta = || Some(arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0));
            match name.to_ascii_lowercase().as_str() {
                "no-store" => cc.no_store = true,
                "no-cache" => cc.no_cache = true,
                "private" => cc.private = true,
                "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                "max-age" => cc.max_age = delta(),
                "s-maxage" => cc.s_maxage = delta(),
                "stale-while-revalidate" => cc.stale_while_revalidate = delta(),
                "stale-if-error" => cc.stale_if_error = delta(),
                _ => {}
            }
        }
    }
    if !any {
        cc.no_cache = headers.get_all(http::header::PRAGMA).iter().any(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .to_ascii_lowercase()
                .contains("no-cache")
        });
    }
    cc
}

/// Splits on commas outside quoted strings (`private="a, b"` is one directive).
fn split_directives(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect()
}

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// A status outside [`CACHEABLE_STATUSES`] (5xx, 206, 302, 304…). Not remembered: the
    /// next request tries again.
    Status(u16),
    NoStore,
    Private,
    NoCache,
    SetCookie,
    VaryStar,
    /// The response carries an origin command (`X-Flashgate-Command`).
    Command,
    /// The freshness lifetime is zero (`max-age=0`, or `Age` ≥ lifetime).
    ZeroTtl,
    /// The body exceeds `[cache] max_object`.
    TooLarge,
    /// The cache was purged while the response was being fetched.
    Purged,
    /// The fill ended without a complete response (no header, or the body was cut).
    Incomplete,
}

impl NotStored {
    /// Whether the key should bypass the cache for a while (the response itself said so, as
    /// opposed to a transient failure).
    pub fn remember(self) -> bool {
        match self {
            Self::NoStore
            | Self::Private
            | Self::NoCache
            | Self::SetCookie
            | Self::VaryStar
            | Self::Command
            | Self::ZeroTtl
            | Self::TooLarge => true,
            Self::Status(_) | Self::Purged | Self::Incomplete => false,
        }
    }
}

/// How long a stored response is fresh, then servable stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Remaining freshness (the lifetime minus the origin's `Age`).
    pub fresh: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// The `Age` the origin reported, carried on into our own `Age`.
    pub initial_age: Duration,
}

/// Decides whether a response may be stored, and its lifetimes. The rules, in order:
/// status in [`CACHEABLE_STATUSES`]; no `no-store`, `private`, `no-cache`; no `Set-Cookie`;
/// no `Vary: *`; no origin command. Freshness: the route's `cache_ttl`, else `s-maxage`, else
/// `max-age`, else `[cache] default_ttl`, minus the origin's `Age`; 404/410 capped at
/// [`NEGATIVE_TTL_CAP`]. Stale windows: the origin's `stale-while-revalidate` /
/// `stale-if-error`, else the route's, capped by `[cache] max_stale`; both zero under
/// `must-revalidate` / `proxy-revalidate`.
pub fn lifetimes(
    status: u16,
    headers: &HeaderMap,
    route: &RouteShield,
    global: &CacheSettings,
) -> Result<Lifetimes, NotStored> {
    if !CACHEABLE_STATUSES.contains(&status) {
        return Err(NotStored::Status(status));
    }
    let cc = parse_cache_control(headers);
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if cc.no_cache {
        return Err(NotStored::NoCache);
    }
    if headers.contains_key(http::header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if vary_of(headers) == Vary::Star {
        return Err(NotStored::VaryStar);
    }
    if headers.contains_key(COMMAND_HEADER) {
        return Err(NotStored::Command);
    }
    let secs = |s: u64| Duration::from_secs(s).min(MAX_LIFETIME);
    let mut ttl = route
        .cache_ttl
        .or(cc.s_maxage.map(secs))
        .or(cc.max_age.map(secs))
        .unwrap_or(global.default_ttl)
        .min(MAX_LIFETIME);
    if matches!(status, 404 | 410) {
        ttl = ttl.min(NEGATIVE_TTL_CAP);
    }
    let initial_age = headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, secs);
    let fresh = ttl.saturating_sub(initial_age);
    if fresh.is_zero() {
        return Err(NotStored::ZeroTtl);
    }
    let (swr, sie) = if cc.must_revalidate {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (
            cc.stale_while_revalidate
                .map_or(route.stale_while_revalidate, secs)
                .min(global.max_stale),
            cc.stale_if_error
                .map_or(route.stale_if_error, secs)
                .min(global.max_stale),
        )
    };
    Ok(Lifetimes {
        fresh,
        stale_while_revalidate: swr,
        stale_if_error: sie,
        initial_age,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn route() -> RouteShield {
        RouteShield {
            cache: true,
            cache_ttl: None,
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(300),
            latency_budget: None,
        }
    }

    fn global() -> CacheSettings {
        CacheSettings::default()
    }

    fn life(status: u16, h: &[(&'static str, &'static str)]) -> Result<Lifetimes, NotStored> {
        lifetimes(status, &headers(h), &route(), &global())
    }

    #[test]
    fn cache_control_parsing() {
        let cc = parse_cache_control(&headers(&[
            ("cache-control", "Public, MAX-AGE=60, s-maxage=\"120\""),
            (
                "cache-control",
                "stale-while-revalidate=30,stale-if-error=600",
            ),
        ]));
        assert_eq!(cc.max_age, Some(60));
        assert_eq!(cc.s_maxage, Some(120));
        assert_eq!(cc.stale_while_revalidate, Some(30));
        assert_eq!(cc.stale_if_error, Some(600));
        assert!(!cc.no_store && !cc.private && !cc.no_cache);

        let cc = parse_cache_control(&headers(&[(
            "cache-control",
            "private=\"x-a, x-b\", max-age=oops",
        )]));
        assert!(cc.private);
        assert_eq!(cc.max_age, Some(0));

        let cc = parse_cache_control(&headers(&[("pragma", "no-cache")]));
        assert!(cc.no_cache);
        let cc = parse_cache_control(&headers(&[
            ("pragma", "no-cache"),
            ("cache-control", "max-age=5"),
        ]));
        assert!(!cc.no_cache, "Cache-Control wins over Pragma");
    }

    #[test]
    fn never_cache_rules_each() {
        type Case = (u16, &'static [(&'static str, &'static str)], NotStored);
        let cases: [Case; 9] = [
            (
                500,
                &[("cache-control", "max-age=60")],
                NotStored::Status(500),
            ),
            (
                206,
                &[("cache-control", "max-age=60")],
                NotStored::Status(206),
            ),
            (302, &[], NotStored::Status(302)),
            (
                200,
                &[("cache-control", "max-age=60, no-store")],
                NotStored::NoStore,
            ),
            (
                200,
                &[("cache-control", "private, max-age=60")],
                NotStored::Private,
            ),
            (
                200,
                &[("cache-control", "no-cache=\"set-cookie\"")],
                NotStored::NoCache,
            ),
            (
                200,
                &[
                    ("set-cookie", "a=b"),
                    ("cache-control", "public, max-age=60"),
                ],
                NotStored::SetCookie,
            ),
            (200, &[("vary", "accept, *")], NotStored::VaryStar),
            (
                200,
                &[("x-flashgate-command", "sold-out")],
                NotStored::Command,
            ),
        ];
        for (status, h, want) in cases {
            assert_eq!(life(status, h), Err(want), "{status} {h:?}");
        }
        assert_eq!(
            life(200, &[("cache-control", "max-age=0")]),
            Err(NotStored::ZeroTtl)
        );
        assert_eq!(
            life(200, &[("cache-control", "max-age=60"), ("age", "60")]),
            Err(NotStored::ZeroTtl)
        );
    }

    #[test]
    fn cacheable_statuses_store() {
        for s in CACHEABLE_STATUSES {
            assert!(life(s, &[("cache-control", "max-age=60")]).is_ok(), "{s}");
        }
    }

    #[test]
    fn ttl_precedence() {
        // s-maxage beats max-age.
        let l = life(200, &[("cache-control", "max-age=5, s-maxage=50")]).expect("ok");
        assert_eq!(l.fresh, Duration::from_secs(50));
        let l = life(200, &[("cache-control", "max-age=5")]).expect("ok");
        assert_eq!(l.fresh, Duration::from_secs(5));
        // Nothing said: the default.
        let l = life(200, &[]).expect("ok");
        assert_eq!(l.fresh, global().default_ttl);
        // The route's cache_ttl overrides the origin.
        let mut r = route();
        r.cache_ttl = Some(Duration::from_secs(30));
        let l = lifetimes(
            200,
            &headers(&[("cache-control", "s-maxage=5")]),
            &r,
            &global(),
        )
        .expect("ok");
        assert_eq!(l.fresh, Duration::from_secs(30));
        // ...but never the never-cache rules.
        assert_eq!(
            lifetimes(
                200,
                &headers(&[("cache-control", "no-store")]),
                &r,
                &global()
            ),
            Err(NotStored::NoStore)
        );
        // Age counts against freshness and is carried on.
        let l = life(200, &[("cache-control", "max-age=60"), ("age", "20")]).expect("ok");
        assert_eq!(l.fresh, Duration::from_secs(40));
        assert_eq!(l.initial_age, Duration::from_secs(20));
        // 404 is capped.
        let l = life(404, &[("cache-control", "max-age=3600")]).expect("ok");
        assert_eq!(l.fresh, NEGATIVE_TTL_CAP);
        // Absurd values are clamped.
        let l = life(200, &[("cache-control", "max-age=99999999999999")]).expect("ok");
        assert_eq!(l.fresh, MAX_LIFETIME);
    }

    #[test]
    fn stale_windows() {
        let l = life(200, &[("cache-control", "max-age=5")]).expect("ok");
        assert_eq!(l.stale_while_revalidate, Duration::from_secs(10));
        assert_eq!(l.stale_if_error, Duration::from_secs(300));
        let l = life(
            200,
            &[(
                "cache-control",
                "max-age=5, stale-while-revalidate=2, stale-if-error=99999",
            )],
        )
        .expect("ok");
        assert_eq!(l.stale_while_revalidate, Duration::from_secs(2));
        assert_eq!(l.stale_if_error, global().max_stale, "capped");
        let l = life(200, &[("cache-control", "max-age=5, must-revalidate")]).expect("ok");
        assert_eq!(l.stale_while_revalidate, Duration::ZERO);
        assert_eq!(l.stale_if_error, Duration::ZERO);
    }
}
