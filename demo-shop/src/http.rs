//! The shop's view of a request and its response type, between hyper and the handlers.
//!
//! hyper parses and frames HTTP/1.1 (keep-alive, pipelining, `Expect: 100-continue`, chunked
//! bodies, and the refusals of malformed input); the handlers see a [`Request`] that borrows
//! from hyper's request parts and the collected body, and answer a [`Response`], which is
//! turned into hyper's at the end.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{
    AsHeaderName, HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE,
};
use http::StatusCode;
use http_body_util::Full;

/// Largest accepted request body. The shop only receives tiny forms and JSON documents;
/// anything bigger is a client bug or an attack (413).
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// A fully received request: hyper's request parts and the collected body, borrowed.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    /// The request target in origin form (path and query).
    pub(crate) target: &'a str,
    /// `target` up to the first `?`.
    pub(crate) path: &'a str,
    /// `target` after the first `?`, without the `?` (empty when absent).
    pub(crate) query: &'a str,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub(crate) version: &'static str,
    /// The header fields (names lower case), values as raw bytes: HTTP allows obs-text
    /// (bytes >= 0x80) that is not necessarily UTF-8; callers convert when they need text.
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The view of hyper's request `parts` with `body`. Allocates nothing.
    pub(crate) fn new(parts: &'a http::request::Parts, body: &'a [u8]) -> Self {
        let target = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let version = if parts.version == http::Version::HTTP_10 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        };
        Self {
            method: parts.method.as_str(),
            target,
            path,
            query,
            version,
            headers: &parts.headers,
            body,
        }
    }

    /// First value of header `name` (a `http::header` constant costs no parsing).
    pub(crate) fn header(&self, name: impl AsHeaderName) -> Option<&'a [u8]> {
        self.headers.get(name).map(HeaderValue::as_bytes)
    }

    /// All values of header `name`, in order of appearance. Needed for
    /// fields such as `Cookie` that clients may legitimately repeat.
    pub(crate) fn headers_named(
        &self,
        name: impl AsHeaderName,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .get_all(name)
            .into_iter()
            .map(HeaderValue::as_bytes)
    }
}

/// A response ready to be serialised. Bodies are always sent with
/// `Content-Length` so that keep-alive framing is trivial for the peer.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static str,
    pub(crate) cache_control: &'static str,
    /// Additional header fields. Usually empty, in which case the `Vec`
    /// never allocates.
    pub(crate) headers: Vec<(&'static str, Cow<'static, str>)>,
    pub(crate) body: Cow<'static, [u8]>,
    /// Forces `Connection: close` regardless of what the client asked for.
    pub(crate) close: bool,
}

pub(crate) const TEXT: &str = "text/plain; charset=utf-8";
pub(crate) const HTML: &str = "text/html; charset=utf-8";
pub(crate) const JSON: &str = "application/json";
pub(crate) const NO_STORE: &str = "private, no-store";

impl Response {
    pub(crate) fn new(
        status: StatusCode,
        content_type: &'static str,
        body: impl Into<Cow<'static, [u8]>>,
    ) -> Self {
        Response {
            status,
            content_type,
            cache_control: NO_STORE,
            headers: Vec::new(),
            body: body.into(),
            close: false,
        }
    }

    pub(crate) fn text(status: StatusCode, body: &'static str) -> Self {
        Self::new(status, TEXT, body.as_bytes())
    }

    pub(crate) fn html(status: StatusCode, body: String) -> Self {
        Self::new(status, HTML, body.into_bytes())
    }

    /// Serialises `value` as JSON. Serialising the shop's own plain structs
    /// cannot fail in practice, but a 500 beats a panic if it ever does.
    pub(crate) fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::new(status, JSON, body),
            Err(_) => Self::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed to encode response",
            ),
        }
    }

    pub(crate) fn cache(mut self, cache_control: &'static str) -> Self {
        self.cache_control = cache_control;
        self
    }

    pub(crate) fn header(
        mut self,
        name: &'static str,
        value: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The response for hyper. `close` becomes `Connection: close`, which hyper honours by
    /// closing the connection after this response; a HEAD response keeps the body's length in
    /// `Content-Length` and hyper sends no body.
    pub(crate) fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let body = match self.body {
            Cow::Borrowed(b) => Bytes::from_static(b),
            Cow::Owned(v) => Bytes::from(v),
        };
        let mut r = hyper::Response::new(Full::new(body));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        h.insert(CACHE_CONTROL, HeaderValue::from_static(self.cache_control));
        if self.close {
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        for (name, value) in self.headers {
            let value = match value {
                Cow::Borrowed(v) => HeaderValue::from_static(v),
                Cow::Owned(v) => match HeaderValue::try_from(v) {
                    Ok(v) => v,
                    // Only the shop's own values get here; a bad one is dropped, not sent.
                    Err(_) => continue,
                },
            };
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                h.append(name, value);
            }
        }
        r
    }
}

/// ASCII case-insensitive substring search, for sloppy-but-sufficient checks
/// such as "does Accept mention application/json".
pub(crate) fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Decodes one `application/x-www-form-urlencoded` component. Invalid
/// percent escapes are kept literally rather than rejected: this is what
/// browsers do and the shop validates the decoded values anyway.
pub(crate) fn form_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Looks up `key` in an urlencoded form (or query string) and decodes it.
pub(crate) fn form_value(form: &[u8], key: &str) -> Option<String> {
    form.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        (form_decode(k) == key).then(|| form_decode(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_view_of_hyper_parts() {
        let (parts, ()) = http::Request::post("/echo?x=1&y=2")
            .header("Cookie", "a=1")
            .header("cookie", "b=2")
            .body(())
            .expect("request")
            .into_parts();
        let r = Request::new(&parts, b"hi");
        assert_eq!((r.method, r.target), ("POST", "/echo?x=1&y=2"));
        assert_eq!(
            (r.path, r.query, r.version),
            ("/echo", "x=1&y=2", "HTTP/1.1")
        );
        assert_eq!(r.header("COOKIE"), Some(&b"a=1"[..]));
        let cookies: Vec<&[u8]> = r.headers_named("cookie").collect();
        assert_eq!(cookies, [&b"a=1"[..], &b"b=2"[..]]);
        assert_eq!(r.body, b"hi");
    }

    #[test]
    fn response_for_hyper() {
        let r = Response::text(StatusCode::OK, "ok")
            .header("X-A", "b")
            .into_hyper();
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h["content-type"], "text/plain; charset=utf-8");
        assert_eq!(h["cache-control"], "private, no-store");
        assert_eq!(h["x-a"], "b");
        assert!(h.get("connection").is_none());
        let mut closing = Response::text(StatusCode::PAYLOAD_TOO_LARGE, "too large");
        closing.close = true;
        assert_eq!(closing.into_hyper().headers()["connection"], "close");
    }

    #[test]
    fn form_helpers() {
        let form = b"sku=AURORA-LIP-KIT&qty=2&note=a+b%21%zz";
        assert_eq!(form_value(form, "sku").as_deref(), Some("AURORA-LIP-KIT"));
        assert_eq!(form_value(form, "qty").as_deref(), Some("2"));
        assert_eq!(form_value(form, "note").as_deref(), Some("a b!%zz"));
        assert_eq!(form_value(form, "missing"), None);
        assert!(contains_ignore_ascii_case(
            b"text/html, Application/JSON",
            b"application/json"
        ));
    }
}
