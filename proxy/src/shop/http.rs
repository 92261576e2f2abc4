//! A deliberately small HTTP/1.1 request parser and response writer.
//!
//! The shop only ever talks to Flashgate, load generators and tests, so it
//! does not need a full HTTP stack — but it *is* on the hot path of every
//! benchmark, and integration tests feed it odd input on purpose. The parser
//! therefore works on borrowed slices of the connection buffer (no per-header
//! allocations), is strict about anything that could make two parties
//! disagree on message boundaries (request smuggling), and reports every
//! problem as a [`ParseError`] instead of panicking.

use std::borrow::Cow;

use http::StatusCode;

/// Largest accepted request head (request line + headers). Bigger heads are
/// answered with 431 instead of buffering without bound.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Largest accepted request body. The shop only receives tiny forms and JSON
/// documents; anything bigger is a client bug or an attack.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Upper bound on header fields, so a head of many tiny fields cannot make
/// us build a huge index.
pub(crate) const MAX_HEADERS: usize = 100;

/// The interim response sent when a client asked for `Expect: 100-continue`
/// and we are willing to read its body.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Protocol version of a request. Only 1.0 and 1.1 are spoken here; the
/// difference matters for the keep-alive default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    Http10,
    Http11,
}

impl Version {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// One header field, borrowed from the connection buffer.
///
/// The value stays raw bytes because HTTP allows obs-text (bytes >= 0x80)
/// that is not necessarily UTF-8; callers convert when they need text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header<'a> {
    pub(crate) name: &'a str,
    pub(crate) value: &'a [u8],
}

/// A fully received request, borrowing from the connection buffer.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    /// The request target exactly as sent (origin-form after stripping an
    /// absolute-form scheme and authority).
    pub(crate) target: &'a str,
    /// `target` up to the first `?`.
    pub(crate) path: &'a str,
    /// `target` after the first `?`, without the `?` (empty when absent).
    pub(crate) query: &'a str,
    pub(crate) version: Version,
    pub(crate) headers: Vec<Header<'a>>,
    pub(crate) body: &'a [u8],
    /// Whether the client allows the connection to be reused afterwards.
    pub(crate) keep_alive: bool,
}

impl<'a> Request<'a> {
    /// First value of header `name` (ASCII case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// All values of header `name`, in order of appearance. Needed for
    /// fields such as `Cookie` that clients may legitimately repeat.
    pub(crate) fn headers_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = &'a [u8]> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    pub(crate) fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Outcome of trying to parse the bytes buffered so far.
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    /// A whole request is buffered; it occupies the first `len` bytes.
    Complete { request: Request<'a>, len: usize },
    /// More bytes are needed. `expect_continue` is set once the head is
    /// complete and the client is waiting for `100 Continue` before sending
    /// the body.
    Partial { expect_continue: bool },
}

/// Why a request was rejected. Every variant closes the connection: after a
/// framing error we can no longer know where the next request starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    BadRequest(&'static str),
    HeadTooLarge,
    BodyTooLarge,
    /// `Transfer-Encoding` is not supported; rejecting it outright also rules
    /// out CL/TE smuggling ambiguities.
    TransferEncoding,
    VersionNotSupported,
}

impl ParseError {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ParseError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ParseError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ParseError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ParseError::TransferEncoding => StatusCode::NOT_IMPLEMENTED,
            ParseError::VersionNotSupported => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            ParseError::BadRequest(why) => why,
            ParseError::HeadTooLarge => "request head too large",
            ParseError::BodyTooLarge => "request body too large",
            ParseError::TransferEncoding => "transfer-encoding is not supported",
            ParseError::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are supported",
        }
    }
}

/// Parses the request at the start of `buf`.
///
/// Called again with the same buffer after every read until it returns
/// `Complete`; re-parsing a head of at most [`MAX_HEAD`] bytes is cheaper
/// than carrying partial parser state across reads.
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed<'_>, ParseError> {
    // RFC 9112 §2.2: ignore empty lines received before the request line
    // (some clients send a stray CRLF after a POST body).
    let start = skip_leading_empty_lines(buf);
    let Some(head_end) = find_head_end(&buf[start..]) else {
        if buf.len() > MAX_HEAD {
            return Err(ParseError::HeadTooLarge);
        }
        return Ok(Parsed::Partial {
            expect_continue: false,
        });
    };
    let head_len = start + head_end;
    if head_len > MAX_HEAD {
        return Err(ParseError::HeadTooLarge);
    }
    let head = &buf[start..head_len];
    let mut lines = HeadLines { rest: head };

    let request_line = lines
        .next()
        .ok_or(ParseError::BadRequest("empty request"))??;
    let (method, target, path, query, version) = parse_request_line(request_line)?;

    let mut framing = Framing::default();
    let mut headers = Vec::with_capacity(16);
    for line in lines {
        let header = parse_header_line(line?)?;
        if headers.len() == MAX_HEADERS {
            return Err(ParseError::HeadTooLarge);
        }
        framing.observe(&header)?;
        headers.push(header);
    }
    if framing.transfer_encoding {
        return Err(ParseError::TransferEncoding);
    }

    let body_len = framing.content_length.unwrap_or(0);
    if body_len > MAX_BODY as u64 {
        return Err(ParseError::BodyTooLarge);
    }
    // Lossless: bounded by MAX_BODY above.
    let body_len = body_len as usize;
    let total = head_len + body_len;
    if buf.len() < total {
        return Ok(Parsed::Partial {
            expect_continue: framing.expect_continue,
        });
    }

    let keep_alive = match version {
        Version::Http11 => !framing.conn_close,
        Version::Http10 => framing.conn_keep_alive && !framing.conn_close,
    };
    Ok(Parsed::Complete {
        request: Request {
            method,
            target,
            path,
            query,
            version,
            headers,
            body: &buf[head_len..total],
            keep_alive,
        },
        len: total,
    })
}

fn skip_leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

/// Returns the length of the head including its terminating empty line.
/// Bare LF line endings are tolerated (RFC 9112 §2.2 allows it), which keeps
/// hand-typed `nc` sessions working.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let limit = buf.len().min(MAX_HEAD + 1);
    let mut i = 0;
    while i < limit {
        if buf[i] == b'\n' {
            match buf.get(i + 1..) {
                Some([b'\n', ..]) => return Some(i + 2),
                Some([b'\r', b'\n', ..]) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// Iterates over the lines of a complete head, without their line endings.
/// A CR that is not directly followed by LF is an error: it is a classic
/// ingredient of header-injection and smuggling attempts.
struct HeadLines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for HeadLines<'a> {
    type Item = Result<&'a [u8], ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let nl = self.rest.iter().position(|&b| b == b'\n')?;
        let mut line = &self.rest[..nl];
        self.rest = &self.rest[nl + 1..];
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        if line.is_empty() {
            // The terminating empty line.
            return None;
        }
        if line.contains(&b'\r') {
            return Some(Err(ParseError::BadRequest("bare CR in request head")));
        }
        Some(Ok(line))
    }
}

type RequestLine<'a> = (&'a str, &'a str, &'a str, &'a str, Version);

fn parse_request_line(line: &[u8]) -> Result<RequestLine<'_>, ParseError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadRequest("malformed request line"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadRequest("invalid method"));
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(ParseError::BadRequest("invalid request target"));
    }
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(ParseError::VersionNotSupported);
        }
        _ => return Err(ParseError::BadRequest("invalid HTTP version")),
    };
    // Both were checked to be ASCII above, so these conversions cannot fail.
    let method =
        std::str::from_utf8(method).map_err(|_| ParseError::BadRequest("invalid method"))?;
    let target = std::str::from_utf8(target)
        .map_err(|_| ParseError::BadRequest("invalid request target"))?;
    let target = origin_form(target)?;
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    };
    Ok((method, target, path, query, version))
}

/// Reduces a request target to origin-form. Servers must accept
/// absolute-form (RFC 9112 §3.2.2) even though proxies rarely send it to an
/// origin; asterisk-form is passed through for `OPTIONS *`.
fn origin_form(target: &str) -> Result<&str, ParseError> {
    if target.starts_with('/') || target == "*" {
        return Ok(target);
    }
    let lower_prefix = |p: &str| {
        target
            .get(..p.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(p))
    };
    let after_scheme = if lower_prefix("http://") {
        &target[7..]
    } else if lower_prefix("https://") {
        &target[8..]
    } else {
        return Err(ParseError::BadRequest("invalid request target"));
    };
    match after_scheme.find(['/', '?']) {
        Some(i) if after_scheme.as_bytes()[i] == b'/' => Ok(&after_scheme[i..]),
        // "http://host?q" has an empty path, which means "/" — but we cannot
        // borrow a "/" in front of the query, so treat it as malformed; no
        // real client sends it.
        Some(_) => Err(ParseError::BadRequest("invalid request target")),
        None => Ok("/"),
    }
}

fn parse_header_line(line: &[u8]) -> Result<Header<'_>, ParseError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        // RFC 9112 §5.2: obsolete line folding must be rejected (or
        // unfolded); rejecting is simpler and safer.
        return Err(ParseError::BadRequest("obsolete header line folding"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(ParseError::BadRequest("header line without colon"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // No whitespace is allowed between the field name and the colon
    // (RFC 9112 §5.1); the tchar check rejects it.
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadRequest("invalid header name"));
    }
    let value = trim_ows(value);
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(ParseError::BadRequest("control character in header value"));
    }
    let name =
        std::str::from_utf8(name).map_err(|_| ParseError::BadRequest("invalid header name"))?;
    Ok(Header { name, value })
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The header fields that decide how the message is framed and whether the
/// connection survives it.
#[derive(Debug, Default)]
struct Framing {
    content_length: Option<u64>,
    transfer_encoding: bool,
    conn_close: bool,
    conn_keep_alive: bool,
    expect_continue: bool,
    seen_host: bool,
}

impl Framing {
    fn observe(&mut self, h: &Header<'_>) -> Result<(), ParseError> {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // Several fields, or a list, are acceptable only when every
            // value agrees (RFC 9112 §6.3); anything else is a smuggling
            // vector.
            for part in h.value.split(|&b| b == b',') {
                let n = parse_decimal(trim_ows(part))
                    .ok_or(ParseError::BadRequest("invalid content-length"))?;
                match self.content_length {
                    Some(prev) if prev != n => {
                        return Err(ParseError::BadRequest("conflicting content-length"));
                    }
                    _ => self.content_length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(trim_ows) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.conn_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.conn_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            self.expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("host") {
            if self.seen_host {
                return Err(ParseError::BadRequest("duplicate host header"));
            }
            self.seen_host = true;
        }
        Ok(())
    }
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
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

    /// Appends the serialised response to `out`. `head_only` omits the body
    /// (but keeps its `Content-Length`, as HEAD requires); `keep_alive` says
    /// whether the connection stays open afterwards.
    pub(crate) fn write_to(
        &self,
        out: &mut Vec<u8>,
        version: Version,
        head_only: bool,
        keep_alive: bool,
    ) {
        use std::io::Write as _;
        let reason = self.status.canonical_reason().unwrap_or("");
        // Writing into a Vec cannot fail, so the io::Results are ignored.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: {}\r\n",
            self.status.as_u16(),
            reason,
            self.content_type,
            self.body.len(),
            self.cache_control,
        );
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if version == Version::Http10 {
            // 1.0 clients close by default; tell them we honour keep-alive.
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
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

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse(buf) {
            Ok(Parsed::Complete { request, len }) => (request, len),
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    #[test]
    fn parses_simple_get() {
        let raw = b"GET /products/X?y=1 HTTP/1.1\r\nHost: a\r\nX-Thing:  v  \r\n\r\n";
        let (req, len) = complete(raw);
        assert_eq!(len, raw.len());
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/products/X?y=1");
        assert_eq!(req.path, "/products/X");
        assert_eq!(req.query, "y=1");
        assert_eq!(req.version, Version::Http11);
        assert_eq!(req.header("x-thing"), Some(&b"v"[..]));
        assert!(req.keep_alive);
        assert!(req.body.is_empty());
    }

    #[test]
    fn parses_body_and_leaves_pipelined_bytes() {
        let raw = b"POST /cart HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n";
        let (req, len) = complete(raw);
        assert_eq!(req.body, b"hello");
        let (next, _) = complete(&raw[len..]);
        assert_eq!(next.path, "/");
    }

    #[test]
    fn every_prefix_is_partial() {
        let raw = b"POST /cart HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        for cut in 0..raw.len() {
            assert!(
                matches!(parse(&raw[..cut]), Ok(Parsed::Partial { .. })),
                "prefix of {cut} bytes"
            );
        }
        complete(raw);
    }

    #[test]
    fn tolerates_bare_lf_and_leading_empty_lines() {
        let raw = b"\r\n\nGET /healthz HTTP/1.1\nHost: a\n\n";
        let (req, len) = complete(raw);
        assert_eq!(req.path, "/healthz");
        assert_eq!(req.header("host"), Some(&b"a"[..]));
        assert_eq!(len, raw.len());
    }

    #[test]
    fn keep_alive_defaults() {
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(
            complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n")
                .0
                .keep_alive
        );
    }

    #[test]
    fn absolute_form_is_reduced_to_origin_form() {
        assert_eq!(
            complete(b"GET http://shop/a?b HTTP/1.1\r\n\r\n").0.path,
            "/a"
        );
        assert_eq!(complete(b"GET HTTP://shop HTTP/1.1\r\n\r\n").0.path, "/");
    }

    #[test]
    fn expect_continue_is_reported_once_head_is_complete() {
        let raw = b"POST /cart HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert!(matches!(
            parse(raw),
            Ok(Parsed::Partial {
                expect_continue: true
            })
        ));
        assert!(matches!(
            parse(&raw[..20]),
            Ok(Parsed::Partial {
                expect_continue: false
            })
        ));
    }

    #[test]
    fn rejects_malformed_input() {
        let cases: &[(&[u8], u16)] = &[
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET /  HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1 x\r\n\r\n", 400),
            (b"G@T / HTTP/1.1\r\n\r\n", 400),
            (b"GET nopath HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET / HTTX/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nNo colon\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nName : v\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n", 413),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
        ];
        for (raw, status) in cases {
            match parse(raw) {
                Err(e) => assert_eq!(
                    e.status().as_u16(),
                    *status,
                    "{}",
                    String::from_utf8_lossy(raw)
                ),
                Ok(p) => panic!("{} parsed as {p:?}", String::from_utf8_lossy(raw)),
            }
        }
    }

    #[test]
    fn agreeing_duplicate_content_lengths_are_accepted() {
        let (req, _) =
            complete(b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(req.body, b"ok");
    }

    #[test]
    fn oversized_head_is_rejected_without_waiting_for_the_end() {
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        raw.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse(&raw).err(), Some(ParseError::HeadTooLarge));
    }

    #[test]
    fn too_many_headers_are_rejected() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(parse(&raw).err(), Some(ParseError::HeadTooLarge));
    }

    /// Cheap deterministic fuzzing: random and mutated inputs must never
    /// panic, and a reported length must never exceed the buffer.
    #[test]
    fn random_input_never_panics() {
        let seed = b"POST /cart?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: close\r\n\r\nab=c";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut buf = seed.to_vec();
            for _ in 0..(next() % 6) {
                let pos = (next() as usize) % buf.len();
                match next() % 3 {
                    0 => buf[pos] = next() as u8,
                    1 => {
                        buf.remove(pos);
                    }
                    _ => buf.insert(pos, b"\r\n: \x00"[(next() % 5) as usize]),
                }
            }
            if let Ok(Parsed::Complete { len, .. }) = parse(&buf) {
                assert!(len <= buf.len());
            }
            let noise: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
            let _ = parse(&noise);
        }
    }

    #[test]
    fn response_serialisation() {
        let mut out = Vec::new();
        Response::text(StatusCode::OK, "ok")
            .header("X-A", "b")
            .write_to(&mut out, Version::Http10, false, true);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\
             Cache-Control: private, no-store\r\nConnection: keep-alive\r\nX-A: b\r\n\r\nok"
        );
        out.clear();
        Response::text(StatusCode::OK, "ok").write_to(&mut out, Version::Http11, true, false);
        assert!(out.ends_with(
            b"Content-Length: 2\r\nCache-Control: private, no-store\r\nConnection: close\r\n\r\n"
        ));
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
