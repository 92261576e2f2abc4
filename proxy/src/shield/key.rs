//! Cache keys: method + host + path + normalised query, then the request's values of the
//! headers the response named in `Vary`.
//!
//! A key *family* (`GET shop.example/products?page=2&sort=new`) identifies a resource; when
//! its response varies, each variant is stored under the family plus the request's values of
//! the `Vary` headers, and the family itself holds the list of those header names.

use http::header::{HeaderMap, HeaderName};
use http::Method;
use pingora::http::RequestHeader;

use crate::http_util::strip_own_cookies;

/// Why a request is not served from or stored in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// The route does not cache (neither `kind = "catalog"` nor `cache_ttl`).
    Route,
    /// Only GET and HEAD are cached.
    Method,
    /// Requests with `Authorization` are never answered from the shared cache.
    Authorization,
    /// Range requests go to the origin (partial content is not stored).
    Range,
    /// A recent response for this key could not be stored (`private`, `no-store`,
    /// `Set-Cookie`, `Vary: *`, too large…): for a few seconds the key goes straight through.
    Uncacheable,
}

impl Bypass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Route => "route",
            Self::Method => "method",
            Self::Authorization => "authorization",
            Self::Range => "range",
            Self::Uncacheable => "uncacheable",
        }
    }
}

/// The cache identity of one request, computed once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    family: String,
    head: bool,
    host: String,
    path: String,
    path_and_query: String,
}

impl CacheKey {
    /// The key of a request. `host` is the routing host (lowercase, without port), as the gate
    /// computes it. Fails with the reason when the request must bypass the cache.
    pub fn from_request(req: &RequestHeader, host: &str) -> Result<CacheKey, Bypass> {
        if req.headers.contains_key(http::header::AUTHORIZATION) {
            return Err(Bypass::Authorization);
        }
        if req.headers.contains_key(http::header::RANGE) {
            return Err(Bypass::Range);
        }
        let pq = req
            .uri
            .path_and_query()
            .map_or_else(|| req.uri.path(), |pq| pq.as_str());
        Self::new(&req.method, host, pq)
    }

    /// The key of `method host path_and_query` (no header checks).
    pub fn new(method: &Method, host: &str, path_and_query: &str) -> Result<CacheKey, Bypass> {
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return Err(Bypass::Method),
        };
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        let host = host.to_ascii_lowercase();
        Ok(CacheKey {
            // HEAD is answered from the GET entry, so both share the GET family.
            family: family(&host, path, query),
            head,
            host,
            path: path.to_owned(),
            path_and_query: path_and_query.to_owned(),
        })
    }

    /// `GET host/path?sorted-query`: the resource, before `Vary`.
    pub fn family(&self) -> &str {
        &self.family
    }

    /// The request was HEAD: it may be answered from the GET entry, but never fills one.
    pub fn is_head(&self) -> bool {
        self.head
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// As the shopper sent it (used by background refreshes).
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }
}

fn family(host: &str, path: &str, query: Option<&str>) -> String {
    let q = query.map(normalise_query).unwrap_or_default();
    let mut s = String::with_capacity(5 + host.len() + path.len() + q.len());
    s.push_str("GET ");
    s.push_str(host);
    s.push_str(path);
    if !q.is_empty() {
        s.push('?');
        s.push_str(&q);
    }
    s
}

/// Sorts the query's parameters by name (stable: repeated names keep their order, since
/// `a=2&a=1` may mean a list), dropping empty pairs. Values are left as sent (no re-encoding).
pub fn normalise_query(q: &str) -> String {
    let mut pairs: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_by(|a, b| param_name(a).cmp(param_name(b)));
    pairs.join("&")
}

fn param_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(n, _)| n)
}

/// What a response's `Vary` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// No `Vary`: one response for everyone.
    None,
    /// `Vary: *`: never cached.
    Star,
    /// Lowercase, sorted, deduplicated header names.
    Names(Vec<HeaderName>),
}

/// Reads every `Vary` header of a response.
pub fn vary_of(headers: &HeaderMap) -> Vary {
    let mut names = Vec::new();
    for v in headers.get_all(http::header::VARY) {
        let Ok(v) = v.to_str() else {
            // An unreadable Vary: we cannot honour it, so we must not share the response.
            return Vary::Star;
        };
        for n in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if n == "*" {
                return Vary::Star;
            }
            match HeaderName::from_bytes(n.as_bytes()) {
                Ok(h) => names.push(h),
                Err(_) => return Vary::Star,
            }
        }
    }
    if names.is_empty() {
        return Vary::None;
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Vary::Names(names)
}

/// The variant key: the family, then `name=value` for each varying header, one per line
/// (header values cannot contain line breaks, so the encoding is unambiguous).
pub fn variant_key(family: &str, names: &[HeaderName], req: &HeaderMap) -> String {
    let mut s = String::with_capacity(family.len() + names.len() * 24);
    s.push_str(family);
    for n in names {
        s.push('\n');
        s.push_str(n.as_str());
        s.push('=');
        s.push_str(&vary_value(n, req));
    }
    s
}

/// A request's value of one varying header, normalised so that equivalent requests share a
/// variant: all field lines joined; `Accept-Encoding` as its sorted acceptable codings;
/// `Cookie` without Flashgate's own `fg_` cookies (the origin never sees those).
pub fn vary_value(name: &HeaderName, req: &HeaderMap) -> String {
    let joined = req
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join(if name == http::header::COOKIE {
            "; "
        } else {
            ", "
        });
    if name == http::header::ACCEPT_ENCODING {
        let mut codings: Vec<String> = joined
            .split(',')
            .filter_map(|c| {
                let mut parts = c.split(';').map(str::trim);
                let coding = parts.next()?.to_ascii_lowercase();
                let refused = parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                (!coding.is_empty() && !refused).then_some(coding)
            })
            .collect();
        codings.sort();
        codings.dedup();
        return codings.join(",");
    }
    if name == http::header::COOKIE {
        return strip_own_cookies(&joined).unwrap_or_default();
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, uri.as_bytes(), None).expect("request");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    #[test]
    fn query_params_are_sorted_stably() {
        assert_eq!(normalise_query("b=2&a=1"), "a=1&b=2");
        assert_eq!(normalise_query("a=2&b=1&a=1"), "a=2&a=1&b=1");
        assert_eq!(normalise_query("&&x=1&"), "x=1");
        assert_eq!(normalise_query(""), "");
        assert_eq!(normalise_query("flag&a=1"), "a=1&flag");
    }

    #[test]
    fn family_ignores_param_order_host_case_and_empty_query() {
        let a = CacheKey::new(&Method::GET, "Shop.Example", "/p?b=2&a=1").expect("key");
        let b = CacheKey::new(&Method::GET, "shop.example", "/p?a=1&b=2").expect("key");
        let c = CacheKey::new(&Method::GET, "shop.example", "/p?").expect("key");
        let d = CacheKey::new(&Method::GET, "shop.example", "/p").expect("key");
        assert_eq!(a.family(), b.family());
        assert_eq!(a.family(), "GET shop.example/p?a=1&b=2");
        assert_eq!(c.family(), d.family());
        assert_ne!(a.family(), d.family());
        // Paths are case-sensitive; hosts are not.
        let e = CacheKey::new(&Method::GET, "shop.example", "/P").expect("key");
        assert_ne!(d.family(), e.family());
    }

    #[test]
    fn head_shares_the_get_family() {
        let g = CacheKey::new(&Method::GET, "h", "/x").expect("key");
        let h = CacheKey::new(&Method::HEAD, "h", "/x").expect("key");
        assert_eq!(g.family(), h.family());
        assert!(h.is_head() && !g.is_head());
    }

    #[test]
    fn request_rules() {
        let k = CacheKey::from_request(&req("GET", "/a?z=1&y=2", &[]), "h").expect("cacheable");
        assert_eq!(k.family(), "GET h/a?y=2&z=1");
        assert_eq!(k.path(), "/a");
        assert_eq!(k.path_and_query(), "/a?z=1&y=2");
        for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            assert_eq!(
                CacheKey::from_request(&req(m, "/a", &[]), "h"),
                Err(Bypass::Method)
            );
        }
        assert_eq!(
            CacheKey::from_request(&req("GET", "/a", &[("authorization", "Bearer x")]), "h"),
            Err(Bypass::Authorization)
        );
        assert_eq!(
            CacheKey::from_request(&req("GET", "/a", &[("range", "bytes=0-1")]), "h"),
            Err(Bypass::Range)
        );
    }

    #[test]
    fn vary_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(vary_of(&h), Vary::None);
        h.append(
            "vary",
            HeaderValue::from_static("Accept-Encoding, accept-language"),
        );
        h.append("vary", HeaderValue::from_static("accept-encoding"));
        assert_eq!(
            vary_of(&h),
            Vary::Names(vec![
                HeaderName::from_static("accept-encoding"),
                HeaderName::from_static("accept-language")
            ])
        );
        h.append("vary", HeaderValue::from_static("*"));
        assert_eq!(vary_of(&h), Vary::Star);
    }

    #[test]
    fn vary_values_are_normalised() {
        let ae = HeaderName::from_static("accept-encoding");
        let mut a = HeaderMap::new();
        a.insert(
            "accept-encoding",
            HeaderValue::from_static("gzip, br;q=0.9, zstd;q=0"),
        );
        let mut b = HeaderMap::new();
        b.insert("accept-encoding", HeaderValue::from_static("BR,gzip"));
        assert_eq!(vary_value(&ae, &a), "br,gzip");
        assert_eq!(vary_value(&ae, &a), vary_value(&ae, &b));

        let cookie = HeaderName::from_static("cookie");
        let mut c = HeaderMap::new();
        c.insert(
            "cookie",
            HeaderValue::from_static("fg_p_launch=abc; theme=dark"),
        );
        let mut d = HeaderMap::new();
        d.insert(
            "cookie",
            HeaderValue::from_static("theme=dark; fg_t_launch=zzz"),
        );
        assert_eq!(vary_value(&cookie, &c), "theme=dark");
        assert_eq!(vary_value(&cookie, &c), vary_value(&cookie, &d));

        let lang = HeaderName::from_static("accept-language");
        let names = [lang.clone()];
        let mut en = HeaderMap::new();
        en.insert("accept-language", HeaderValue::from_static("en"));
        let mut fr = HeaderMap::new();
        fr.insert("accept-language", HeaderValue::from_static("fr"));
        let none = HeaderMap::new();
        let ken = variant_key("GET h/", &names, &en);
        assert_eq!(ken, "GET h/\naccept-language=en");
        assert_ne!(ken, variant_key("GET h/", &names, &fr));
        assert_eq!(
            variant_key("GET h/", &names, &none),
            "GET h/\naccept-language="
        );
    }
}
