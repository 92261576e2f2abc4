//! Hostile clients against a running flashgate, over raw TCP: a corpus of malformed and
//! smuggling requests, tricks that try to get past a room by path or `Host`, a slowloris crowd
//! and a flood. Each malformed request gets a clean 4xx or a closed connection (or, for input
//! HTTP tolerates, an ordinary answer) — never a 5xx from flashgate, never a panic; the origin
//! never receives a request for a protected path; memory stays bounded.
//!
//! The origin here is deliberately naive (`RawOrigin`): it frames bodies by `Content-Length`
//! when present, the way request-smuggling victims do, and records every request line it
//! parses, so a request smuggled past flashgate's framing would show up in its log.

mod bypass;
mod floods;
mod malformed;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use testkit::{shopper, Config, Node, Room, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An origin that answers every request `200` with the request path as its body.
struct RawOrigin {
    addr: std::net::SocketAddr,
    /// Request lines as parsed (`GET /x HTTP/1.1`).
    seen: Arc<Mutex<Vec<String>>>,
    /// Requests that arrived with both Content-Length and Transfer-Encoding.
    ambiguous: Arc<AtomicU64>,
}

impl RawOrigin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let ambiguous: Arc<AtomicU64> = Arc::default();
        let (s, a) = (seen.clone(), ambiguous.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, s.clone(), a.clone()));
            }
        });
        Self {
            addr,
            seen,
            ambiguous,
        }
    }

    fn paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .iter()
            .filter_map(|l| l.split(' ').nth(1).map(str::to_owned))
            .collect()
    }
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match conn.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn serve(mut conn: TcpStream, seen: Arc<Mutex<Vec<String>>>, ambiguous: Arc<AtomicU64>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !read_more(&mut conn, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let mut cl = None;
        let mut chunked = false;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => cl = v.trim().parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                    _ => {}
                }
            }
        }
        if cl.is_some() && chunked {
            ambiguous.fetch_add(1, Ordering::Relaxed);
        }
        // Naive framing: Content-Length wins.
        if let Some(n) = cl {
            while buf.len() < n {
                if !read_more(&mut conn, &mut buf).await {
                    return;
                }
            }
            buf.drain(..n);
        } else if chunked {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&buf, b"\r\n") {
                        break i;
                    }
                    if !read_more(&mut conn, &mut buf).await {
                        return;
                    }
                };
                let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or(0);
                buf.drain(..line_end + 2);
                while buf.len() < size + 2 {
                    if !read_more(&mut conn, &mut buf).await {
                        return;
                    }
                }
                buf.drain(..size + 2);
                if size == 0 {
                    break;
                }
            }
        }
        let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
        seen.lock().push(request_line);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{path}",
            path.len()
        );
        if conn.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// What a raw exchange produced.
#[derive(Debug)]
struct Reply {
    /// The first final (non-1xx) status, if a response head arrived.
    status: Option<u16>,
    raw: Vec<u8>,
}

impl Reply {
    fn body_text(&self) -> String {
        let raw = String::from_utf8_lossy(&self.raw);
        raw.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }
}

/// [`exchange`] with a 300 ms idle time and a 3 s limit.
async fn ask(port: u16, bytes: &[u8]) -> Reply {
    exchange(
        port,
        bytes,
        Duration::from_millis(300),
        Duration::from_secs(3),
    )
    .await
}

/// [`ask`] on a task of its own; `tag` comes back with the reply.
fn probe<T: Send + 'static>(
    port: u16,
    bytes: Vec<u8>,
    tag: T,
) -> tokio::task::JoinHandle<(T, Reply)> {
    tokio::spawn(async move { (tag, ask(port, &bytes).await) })
}

/// Writes `bytes` (as much as the server takes) and reads until the server closes, the
/// connection goes idle for `idle` after a response started, or `limit` passes.
async fn exchange(port: u16, bytes: &[u8], idle: Duration, limit: Duration) -> Reply {
    let mut conn = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to flashgate");
    let _ = conn.write_all(bytes).await;
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        let wait = if raw.is_empty() { left } else { idle.min(left) };
        if wait.is_zero() {
            break;
        }
        match tokio::time::timeout(wait, conn.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split("\r\n")
        .filter_map(|l| {
            l.strip_prefix("HTTP/1.1 ")
                .or_else(|| l.strip_prefix("HTTP/1.0 "))
        })
        .filter_map(|l| l.get(..3).and_then(|c| c.parse::<u16>().ok()))
        .find(|c| *c >= 200);
    Reply { status, raw }
}

/// What a malformed request must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// A 4xx, or the connection closed without an answer.
    Refused,
    /// Input HTTP tolerates (bare LF, obs-text): any answer below 500, or closed.
    Clean,
    /// The room's waiting answer: JSON, `"state": "paused"`; the origin is not contacted.
    Queued,
}

/// A bypass route (`/static`) and a room over `/drops` on `shop.test`.
fn config(origin: &RawOrigin) -> Config {
    let drop = Room::new("drop").hosts(&["shop.test"]).paths(&["/drops"]);
    Config::new(origin.addr)
        .route(Route::new("/static").kind("bypass"))
        .room(drop)
}

fn req(head: &str) -> Vec<u8> {
    head.replace('\n', "\r\n").into_bytes()
}

/// The corpus: (name, bytes, what it must get).
fn corpus() -> Vec<(&'static str, Vec<u8>, Want)> {
    let mut c: Vec<(&'static str, Vec<u8>, Want)> = vec![
        (
            "oversized header (100 KB)",
            [
                b"GET /open HTTP/1.1\r\nHost: shop.test\r\nX-Big: ".as_slice(),
                &vec![b'a'; 100_000],
                b"\r\nConnection: close\r\n\r\n",
            ]
            .concat(),
            Want::Refused,
        ),
        (
            "oversized header (2 MB)",
            [
                b"GET /open HTTP/1.1\r\nHost: shop.test\r\nX-Big: ".as_slice(),
                &vec![b'a'; 2_000_000],
                b"\r\n\r\n",
            ]
            .concat(),
            Want::Refused,
        ),
        (
            "300 headers",
            {
                let mut h = b"GET /open HTTP/1.1\r\nHost: shop.test\r\n".to_vec();
                for i in 0..300 {
                    h.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
                }
                h.extend_from_slice(b"Connection: close\r\n\r\n");
                h
            },
            Want::Refused,
        ),
        (
            "oversized URI (200 KB)",
            [
                b"GET /".as_slice(),
                &vec![b'a'; 200_000],
                b" HTTP/1.1\r\nHost: shop.test\r\n\r\n",
            ]
            .concat(),
            Want::Refused,
        ),
        ("duplicate Host", req("GET /open HTTP/1.1\nHost: shop.test\nHost: evil.test\nConnection: close\n\n"), Want::Refused),
        ("missing Host (HTTP/1.1)", req("GET /drops/x HTTP/1.1\nConnection: close\n\n"), Want::Refused),
        ("Host with a space", req("GET /drops/x HTTP/1.1\nHost: shop test\nConnection: close\n\n"), Want::Refused),
        ("Host with a slash", req("GET /drops/x HTTP/1.1\nHost: shop.test/x\nConnection: close\n\n"), Want::Refused),
        ("Host with userinfo", req("GET /drops/x HTTP/1.1\nHost: a@shop.test\nConnection: close\n\n"), Want::Refused),
        ("Host with a bad port", req("GET /drops/x HTTP/1.1\nHost: shop.test:99x\nConnection: close\n\n"), Want::Refused),
        ("Host non-UTF8", b"GET /drops/x HTTP/1.1\r\nHost: \xff\xfe.test\r\nConnection: close\r\n\r\n".to_vec(), Want::Refused),
        ("Host with NUL", b"GET /drops/x HTTP/1.1\r\nHost: shop\x00.test\r\nConnection: close\r\n\r\n".to_vec(), Want::Refused),
        ("two Content-Length", req("POST /open HTTP/1.1\nHost: shop.test\nContent-Length: 4\nContent-Length: 5\nConnection: close\n\nabcde"), Want::Refused),
        ("negative Content-Length", req("POST /open HTTP/1.1\nHost: shop.test\nContent-Length: -1\nConnection: close\n\n"), Want::Refused),
        ("huge Content-Length", req("POST /open HTTP/1.1\nHost: shop.test\nContent-Length: 99999999999999999999999\nConnection: close\n\n"), Want::Refused),
        ("Transfer-Encoding: xchunked", req("POST /open HTTP/1.1\nHost: shop.test\nTransfer-Encoding: xchunked\nConnection: close\n\n0\n\n"), Want::Refused),
        ("Transfer-Encoding: chunked, identity", req("POST /open HTTP/1.1\nHost: shop.test\nTransfer-Encoding: chunked, identity\nConnection: close\n\n0\n\n"), Want::Refused),
        ("space before colon", req("POST /open HTTP/1.1\nHost: shop.test\nTransfer-Encoding : chunked\nConnection: close\n\n0\n\n"), Want::Refused),
        ("bad chunk size", req("POST /open HTTP/1.1\nHost: shop.test\nTransfer-Encoding: chunked\nConnection: close\n\nzz\nabc\n0\n\n"), Want::Refused),
        ("obs-fold", req("GET /open HTTP/1.1\nHost: shop.test\nX-A: a\n b\nConnection: close\n\n"), Want::Refused),
        ("header without colon", req("GET /open HTTP/1.1\nHost: shop.test\nXA\nConnection: close\n\n"), Want::Refused),
        ("control byte in a header", b"GET /open HTTP/1.1\r\nHost: shop.test\r\nX-A: a\x01b\r\nConnection: close\r\n\r\n".to_vec(), Want::Refused),
        ("non-UTF8 path", b"GET /\xff\xfe HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n".to_vec(), Want::Refused),
        ("NUL in the path", b"GET /drops\x00/x HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n".to_vec(), Want::Refused),
        ("%00 in the path", req("GET /drops%00/x HTTP/1.1\nHost: shop.test\nConnection: close\n\n"), Want::Refused),
        ("method with 8-bit bytes", b"G\xffT /open HTTP/1.1\r\nHost: shop.test\r\n\r\n".to_vec(), Want::Refused),
        ("TLS hello on the plain port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\x00\x00".to_vec(), Want::Refused),
        ("HTTP/2 preface on HTTP/1", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), Want::Refused),
        ("HTTP/0.9", b"GET /\r\n".to_vec(), Want::Refused),
        ("HTTP/9.9", req("GET / HTTP/9.9\nHost: shop.test\n\n"), Want::Refused),
        ("absolute-form to another host", req("GET http://evil.test/drops/x HTTP/1.1\nHost: shop.test\nConnection: close\n\n"), Want::Refused),
        ("CONNECT", req("CONNECT evil.test:443 HTTP/1.1\nHost: evil.test:443\n\n"), Want::Refused),
        ("binary garbage", b"\x00\x01\x02garbage\r\n\r\n".to_vec(), Want::Refused),
        ("bare LF line ends", b"GET /open HTTP/1.1\nHost: shop.test\nConnection: close\n\n".to_vec(), Want::Clean),
        ("obs-text in a header value", b"GET /open HTTP/1.1\r\nHost: shop.test\r\nX-A: \xff\xfe\x80\r\nConnection: close\r\n\r\n".to_vec(), Want::Clean),
        ("body cut short", req("POST /open HTTP/1.1\nHost: shop.test\nContent-Length: 100\n\nabc"), Want::Clean),
        ("challenge: garbage body", b"POST /.flashgate/challenge HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 7\r\nConnection: close\r\n\r\n\xff\x00=&&=x".to_vec(), Want::Refused),
        ("challenge: 1 MB body", [b"POST /.flashgate/challenge HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n".as_slice(), &vec![b'a'; 1_000_000]].concat(), Want::Refused),
        ("status: garbage room", req("GET /.flashgate/status?room=%ff%fe%00%zz HTTP/1.1\nHost: shop.test\nConnection: close\n\n"), Want::Refused),
        ("feedback: no ticket", req("POST /.flashgate/feedback?room=drop HTTP/1.1\nHost: shop.test\nContent-Length: 8\nConnection: close\n\nrating=9"), Want::Refused),
        ("leave: GET", req("GET /.flashgate/leave?room=drop HTTP/1.1\nHost: shop.test\nConnection: close\n\n"), Want::Refused),
        ("invalid cookies", b"GET /drops/x HTTP/1.1\r\nHost: shop.test\r\nAccept: application/json\r\nCookie: fg_p_drop=%%%; fg_t_drop=====\xff; ;;==; fg_p_drop=\"\r\nConnection: close\r\n\r\n".to_vec(), Want::Queued),
        ("forged token header", req("GET /drops/x HTTP/1.1\nHost: shop.test\nAccept: application/json\nX-Flashgate-Token: AQIBBGRyb3AAAAAAAAAAAAAAAAEAAAAAawoaQgHIs6MAAAAAawocmgAAAAAAAAAAAGf6TqAdRvCyY3KvdTjFFsEWJkT1lTlKTsTMsesi9KXX\nConnection: close\n\n"), Want::Queued),
        ("large cookie (12 KB)", [b"GET /drops/x HTTP/1.1\r\nHost: shop.test\r\nAccept: application/json\r\nCookie: fg_p_drop=".as_slice(), &vec![b'A'; 12_000], b"\r\nConnection: close\r\n\r\n"].concat(), Want::Queued),
        ("oversized cookie (60 KB)", [b"GET /drops/x HTTP/1.1\r\nHost: shop.test\r\nCookie: fg_p_drop=".as_slice(), &vec![b'A'; 60_000], b"\r\nConnection: close\r\n\r\n"].concat(), Want::Refused),
    ];
    c.extend(smuggling());
    c
}

/// Smuggling: every inner request targets the protected path; none may reach the origin.
fn smuggling() -> Vec<(&'static str, Vec<u8>, Want)> {
    let inner = "GET /drops/smuggled HTTP/1.1\r\nHost: shop.test\r\n\r\n";
    let post = "POST /open HTTP/1.1\r\nHost: shop.test\r\n";
    // A `Content-Length` that covers a zero chunk and the inner request, and a
    // `Transfer-Encoding` header as written here: the two framings disagree.
    let cl_te = |te: &str| {
        let cl = 5 + inner.len();
        format!("{post}Content-Length: {cl}\r\n{te}\r\n\r\n0\r\n\r\n{inner}")
    };
    let te_cl = format!(
        "{post}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n",
        inner.len()
    );
    let get_body = format!(
        "GET /open HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    );
    let extension =
        format!("{post}Transfer-Encoding: chunked\r\n\r\n3;x=\"\r\n{inner}\"\r\nabc\r\n0\r\n\r\n");
    [
        ("CL.TE smuggling", cl_te("Transfer-Encoding: chunked")),
        ("TE.CL smuggling", te_cl),
        ("TE obfuscated (tab)", cl_te("Transfer-Encoding:\tchunked")),
        ("TE obfuscated (case)", cl_te("transfer-encoding: CHUNKED")),
        ("GET with a body hiding a request", get_body),
        ("chunk extension hiding a request", extension),
    ]
    .into_iter()
    .map(|(name, text)| (name, text.into_bytes(), Want::Clean))
    .collect()
}

async fn start(origin: &RawOrigin) -> (Node, u16) {
    let fg = Node::start(&config(origin)).await;
    // Hold the line: whatever reaches the room is queued, so anything at the origin under
    // /drops got past the room.
    fg.patch_room("drop", json!({"paused": true})).await;
    let port = fg.cfg.port;
    (fg, port)
}
