//! A minimal HTTP/1.1 client over one keep-alive TCP connection, for load generation.
//!
//! It writes a request prepared once as bytes, parses the response head with `httparse`, and
//! skips the body (`Content-Length`, chunked, or until close) without copying it anywhere. That
//! is all a load generator needs, and it keeps the generator's CPU cost per request a fraction
//! of a general-purpose client's — which matters when the generator shares two cores with the
//! proxy it measures. One response header can be captured (a cookie to save, a cache marker).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// What a load generator needs to know about a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body_bytes: usize,
    /// Whether the connection may be used again.
    pub keep_alive: bool,
    /// The captured header value, if asked for and present (see [`Capture`]).
    pub captured: Option<String>,
}

/// A header to capture: the first one named `name` (any case) whose value starts with
/// `prefix`. For `Set-Cookie` only the `name=value` part (before the first `;`) is kept.
#[derive(Debug, Clone, Copy)]
pub struct Capture<'a> {
    pub name: &'a str,
    pub prefix: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed by the server")]
    Closed,
    #[error("bad response: {0}")]
    Parse(String),
}

impl Http1Error {
    /// A short, stable name for counting errors by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Io(_) => "io",
            Self::Closed => "closed",
            Self::Parse(_) => "parse",
        }
    }
}

/// Builds the bytes of a request. `headers` are `Name: value` lines without CRLF.
pub fn request_bytes(
    method: &str,
    authority: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
) -> Vec<u8> {
    let mut s = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" || method == "PUT" || method == "PATCH" {
        s.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    s.push_str("\r\n");
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

impl Conn {
    /// Connects to `authority` (`host:port`, `[v6]:port`).
    pub async fn connect(authority: &str) -> Result<Self, Http1Error> {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(Http1Error::Connect)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
        })
    }

    /// Sends `request` and reads the whole response. `head_only`: the request was a HEAD.
    pub async fn round_trip(
        &mut self,
        request: &[u8],
        head_only: bool,
        capture: Option<Capture<'_>>,
    ) -> Result<Response, Http1Error> {
        self.stream.write_all(request).await?;
        let (status, framing, keep_alive, captured) = self.read_head(capture).await?;
        let framing = if head_only || status < 200 || status == 204 || status == 304 {
            Framing::None
        } else {
            framing
        };
        let (body_bytes, keep_alive) = match framing {
            Framing::None => (0, keep_alive),
            Framing::Length(n) => {
                self.skip(n).await?;
                (n, keep_alive)
            }
            Framing::Chunked => (self.skip_chunked().await?, keep_alive),
            Framing::UntilClose => (self.skip_to_close().await, false),
        };
        Ok(Response {
            status,
            body_bytes,
            keep_alive,
            captured,
        })
    }

    async fn read_head(
        &mut self,
        capture: Option<Capture<'_>>,
    ) -> Result<(u16, Framing, bool, Option<String>), Http1Error> {
        loop {
            let parsed = {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete(n)) => {
                        let status = resp.code.unwrap_or(0);
                        let mut framing = Framing::UntilClose;
                        let mut keep_alive = resp.version == Some(1);
                        let mut captured = None;
                        for h in resp.headers.iter() {
                            let v = std::str::from_utf8(h.value).unwrap_or("");
                            if h.name.eq_ignore_ascii_case("content-length") {
                                let n = v.trim().parse().map_err(|_| {
                                    Http1Error::Parse(format!("content-length {v:?}"))
                                })?;
                                if !matches!(framing, Framing::Chunked) {
                                    framing = Framing::Length(n);
                                }
                            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                                if v.to_ascii_lowercase().contains("chunked") {
                                    framing = Framing::Chunked;
                                }
                            } else if h.name.eq_ignore_ascii_case("connection") {
                                let v = v.to_ascii_lowercase();
                                if v.contains("close") {
                                    keep_alive = false;
                                } else if v.contains("keep-alive") {
                                    keep_alive = true;
                                }
                            }
                            if let Some(c) = capture {
                                if captured.is_none()
                                    && h.name.eq_ignore_ascii_case(c.name)
                                    && v.starts_with(c.prefix)
                                {
                                    let keep = if c.name.eq_ignore_ascii_case("set-cookie") {
                                        v.split(';').next().unwrap_or(v)
                                    } else {
                                        v
                                    };
                                    captured = Some(keep.trim().to_owned());
                                }
                            }
                        }
                        Some((n, status, framing, keep_alive, captured))
                    }
                    Ok(httparse::Status::Partial) => None,
                    Err(e) => return Err(Http1Error::Parse(e.to_string())),
                }
            };
            match parsed {
                Some((n, status, framing, keep_alive, captured)) => {
                    self.start += n;
                    return Ok((status, framing, keep_alive, captured));
                }
                None if self.end - self.start > MAX_HEAD => {
                    return Err(Http1Error::Parse("response head too large".into()))
                }
                None => self.fill().await?,
            }
        }
    }

    /// Reads more bytes into the buffer (compacting or growing it first if full).
    async fn fill(&mut self) -> Result<(), Http1Error> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.buf.len() * 2;
                self.buf.resize(len, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(Http1Error::Closed);
        }
        self.end += n;
        Ok(())
    }

    async fn skip(&mut self, mut n: usize) -> Result<(), Http1Error> {
        loop {
            let avail = self.end - self.start;
            if avail >= n {
                self.start += n;
                return Ok(());
            }
            n -= avail;
            self.start = self.end;
            self.fill().await?;
        }
    }

    async fn line(&mut self) -> Result<String, Http1Error> {
        loop {
            let window = &self.buf[self.start..self.end];
            if let Some(i) = window.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&window[..i]).into_owned();
                self.start += i + 2;
                return Ok(l);
            }
            if window.len() > MAX_HEAD {
                return Err(Http1Error::Parse("chunk line too long".into()));
            }
            self.fill().await?;
        }
    }

    async fn skip_chunked(&mut self) -> Result<usize, Http1Error> {
        let mut total = 0;
        loop {
            let l = self.line().await?;
            let size = l.split(';').next().unwrap_or("").trim();
            let n = usize::from_str_radix(size, 16)
                .map_err(|_| Http1Error::Parse(format!("chunk size {size:?}")))?;
            if n == 0 {
                // Trailers, then an empty line.
                while !self.line().await?.is_empty() {}
                return Ok(total);
            }
            self.skip(n + 2).await?;
            total += n;
        }
    }

    async fn skip_to_close(&mut self) -> usize {
        let mut total = self.end - self.start;
        self.start = self.end;
        loop {
            match self.fill().await {
                Ok(()) => {
                    total += self.end - self.start;
                    self.start = self.end;
                }
                Err(_) => return total,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request (one per read, enough for these tests) with the next
    /// canned response.
    async fn canned(responses: Vec<&'static [u8]>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut buf = vec![0; 4096];
            for r in responses {
                let _ = s.read(&mut buf).await;
                // Split the write to exercise partial reads.
                let (a, b) = r.split_at(r.len() / 2);
                s.write_all(a).await.expect("write");
                s.flush().await.expect("flush");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                s.write_all(b).await.expect("write");
            }
        });
        addr
    }

    #[tokio::test]
    async fn lengths_chunks_capture_and_close() {
        let addr = canned(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: other=1\r\nSet-Cookie: fg_t_r=abc; Path=/; HttpOnly\r\n\r\nhello",
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close",
        ])
        .await;
        let mut c = Conn::connect(&addr).await.expect("connect");
        let req = request_bytes("GET", &addr, "/", &["Accept: */*".into()], b"");
        let cap = Capture {
            name: "set-cookie",
            prefix: "fg_t_",
        };
        let r = c.round_trip(&req, false, Some(cap)).await.expect("first");
        assert_eq!(
            (r.status, r.body_bytes, r.keep_alive),
            (200, 5, true),
            "{r:?}"
        );
        assert_eq!(r.captured.as_deref(), Some("fg_t_r=abc"));
        let r = c.round_trip(&req, false, None).await.expect("chunked");
        assert_eq!((r.status, r.body_bytes), (404, 7));
        let r = c.round_trip(&req, false, None).await.expect("204");
        assert_eq!((r.status, r.body_bytes), (204, 0));
        let r = c.round_trip(&req, false, None).await.expect("close");
        assert_eq!((r.status, r.body_bytes, r.keep_alive), (200, 11, false));
    }

    #[test]
    fn request_has_host_and_length() {
        let r = request_bytes("POST", "127.0.0.1:1", "/cart", &[], b"sku=A");
        let s = String::from_utf8(r).expect("utf8");
        assert!(s.starts_with("POST /cart HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(s.ends_with("Content-Length: 5\r\n\r\nsku=A"));
    }
}
