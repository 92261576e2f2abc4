//! The Redis sink's connection: RESP2 over one blocking socket, commands framed into one buffer
//! (a batch's `XADD`s as its events are serialized) and written with one `write(2)`, replies
//! scanned where they were read (no value tree, nothing allocated per reply). A batch is one
//! pipelined `XADD` per event, so the reply is one short bulk string (the entry's id) per event:
//! redis-rs's parser built a `Value` for each, which on a saturated node cost more than the
//! socket work.
//!
//! redis-rs still reads the URL (host, port or unix socket path, user, password, database);
//! the connection speaks RESP2 (no `HELLO`), authenticates with `AUTH` and selects the database
//! with `SELECT` when the URL has them. A `rediss://` URL is TLS through rustls (ring), trusting
//! `[store.tls]`'s CA (or the system's roots) and presenting its client certificate.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::store::RedisTls;

use redis::{ConnectionAddr, IntoConnectionInfo};

/// Nested arrays deeper than this in a reply are refused (a reply to `XADD` or `XTRIM` has none).
const MAX_DEPTH: usize = 8;

/// Why the events sink's Redis connection failed (the connection is then dropped and opened
/// again for the next attempt). A reply Redis sent as an error is not one of these: it refused
/// one command on a working connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Url(#[from] redis::RedisError),
    #[error("connect: {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("connect: {0}: no address")]
    NoAddress(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the events sink cannot connect to {0}")]
    Unsupported(String),
    #[error("TLS: {0} is not a valid server name")]
    ServerName(String),
    #[error("TLS: {what}: {reason}")]
    TlsSetup { what: &'static str, reason: String },
    #[error("{0}")]
    Socket(io::Error),
    #[error("write: {0}")]
    Write(io::Error),
    #[error("read: {0}")]
    Read(io::Error),
    #[error("Redis closed the connection")]
    Closed,
    #[error("not connected")]
    NotConnected,
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("Redis protocol error: {0}")]
    Protocol(&'static str),
    /// Redis refused `AUTH` or `SELECT` (the text of its error reply).
    #[error("{step}: {reply}")]
    Setup { step: &'static str, reply: String },
}

/// Commands in RESP, the Redis protocol, appended to a buffer: `*<argc>\r\n` then each
/// argument as a bulk string, `$<len>\r\n<bytes>\r\n`. Several commands back to back are a
/// pipeline.
#[derive(Debug)]
pub(super) struct Frame<'a>(pub &'a mut Vec<u8>);

impl Frame<'_> {
    /// Starts a command of `argc` arguments (after those already framed).
    pub fn start(&mut self, argc: usize) {
        self.0.push(b'*');
        self.0
            .extend_from_slice(itoa::Buffer::new().format(argc).as_bytes());
        self.0.extend_from_slice(b"\r\n");
    }

    pub fn arg(&mut self, arg: &[u8]) {
        self.0.push(b'$');
        self.0
            .extend_from_slice(itoa::Buffer::new().format(arg.len()).as_bytes());
        self.0.extend_from_slice(b"\r\n");
        self.0.extend_from_slice(arg);
        self.0.extend_from_slice(b"\r\n");
    }

    /// A whole command.
    pub fn command(&mut self, args: &[&[u8]]) {
        self.start(args.len());
        for a in args {
            self.arg(a);
        }
    }

    /// The parts of `XADD <key> * event <event> kind <kind> room <room>` around the event's
    /// text, which is the same for every entry of a stream, kind and room: up to the event's
    /// length (`…$5\r\nevent`), and from the end of its text on (`\r\n$4\r\nkind…`).
    pub fn xadd_parts(key: &str, kind: &str, room: &str) -> (Vec<u8>, Vec<u8>) {
        let mut head = Vec::new();
        let mut f = Frame(&mut head);
        f.start(9);
        for a in [&b"XADD"[..], key.as_bytes(), b"*", b"event"] {
            f.arg(a);
        }
        let mut tail = b"\r\n".to_vec();
        let mut f = Frame(&mut tail);
        for a in [&b"kind"[..], kind.as_bytes(), b"room", room.as_bytes()] {
            f.arg(a);
        }
        (head, tail)
    }
}

#[derive(Debug)]
enum Socket {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Unix(UnixStream),
}

impl Socket {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s
                .set_read_timeout(Some(t))
                .and_then(|()| s.set_write_timeout(Some(t))),
            Self::Tls(s) => s
                .sock
                .set_read_timeout(Some(t))
                .and_then(|()| s.sock.set_write_timeout(Some(t))),
            Self::Unix(s) => s
                .set_read_timeout(Some(t))
                .and_then(|()| s.set_write_timeout(Some(t))),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }

    /// Sockets write through; TLS may hold the end of a record until flushed.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Tls(s) => s.flush(),
            Self::Tcp(_) | Self::Unix(_) => Ok(()),
        }
    }
}

/// One connection to Redis. Any `Err` from it leaves it in doubt: drop it and connect again.
#[derive(Debug)]
pub(super) struct Conn {
    sock: Socket,
    /// Bytes read: `buf[start..end]` are not yet scanned. Its length is its capacity (grown
    /// only for a reply longer than it).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    timeout: Duration,
}

/// The outcome of scanning for one reply.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scan {
    /// A whole reply of this many bytes: `Err` with the text of an error reply.
    Reply(usize, Result<(), String>),
    /// The reply is not all there yet.
    More,
    /// Not RESP2 (or nested deeper than anything we send asks for).
    Bad(&'static str),
}

/// Scans one RESP2 reply at the start of `b`.
pub(super) fn scan(b: &[u8]) -> Scan {
    scan_at(b, 0)
}

fn scan_at(b: &[u8], depth: usize) -> Scan {
    let Some(cr) = b.iter().position(|&c| c == b'\r') else {
        return Scan::More;
    };
    match b.get(cr + 1) {
        None => return Scan::More,
        Some(b'\n') => {}
        Some(_) => return Scan::Bad("CR without LF"),
    }
    let head = &b[1..cr];
    let after = cr + 2;
    match b[0] {
        b'+' | b':' => Scan::Reply(after, Ok(())),
        b'-' => Scan::Reply(after, Err(String::from_utf8_lossy(head).into_owned())),
        b'$' => match number(head) {
            None => Scan::Bad("bad bulk length"),
            Some(n) if n < 0 => Scan::Reply(after, Ok(())),
            Some(n) => {
                let end = usize::try_from(n).map_or(usize::MAX, |n| after.saturating_add(n));
                match b.get(end..end.saturating_add(2)) {
                    None => Scan::More,
                    Some(b"\r\n") => Scan::Reply(end + 2, Ok(())),
                    Some(_) => Scan::Bad("bulk string not ended by CRLF"),
                }
            }
        },
        b'*' => match number(head) {
            None => Scan::Bad("bad array length"),
            Some(_) if depth >= MAX_DEPTH => Scan::Bad("arrays nested too deep"),
            Some(n) => {
                let mut at = after;
                for _ in 0..n.max(0) {
                    match scan_at(&b[at..], depth + 1) {
                        Scan::Reply(len, _) => at += len,
                        other => return other,
                    }
                }
                Scan::Reply(at, Ok(()))
            }
        },
        _ => Scan::Bad("unknown reply type"),
    }
}

/// A RESP length: an optional `-` and 1 to 18 digits.
fn number(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if negative { -n } else { n })
}

/// A TCP connection to `host:port`, trying each of its addresses within `timeout`.
fn tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ConnError> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|source| ConnError::Connect {
            addr: host.to_owned(),
            source,
        })?;
    let mut last = ConnError::NoAddress(host.to_owned());
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                // The batch's last segment must not wait for an ACK of the one before.
                s.set_nodelay(true).map_err(ConnError::Socket)?;
                return Ok(s);
            }
            Err(source) => {
                last = ConnError::Connect {
                    addr: a.to_string(),
                    source,
                }
            }
        }
    }
    Err(last)
}

/// The TLS client settings: `tls`'s CA (else the system's roots) and client certificate.
fn client_config(tls: Option<&RedisTls>) -> Result<Arc<rustls::ClientConfig>, ConnError> {
    let setup = |what, reason: String| ConnError::TlsSetup { what, reason };
    let mut roots = rustls::RootCertStore::empty();
    match tls.and_then(|t| t.ca.as_deref()) {
        Some(pem) => {
            for c in CertificateDer::pem_slice_iter(pem) {
                roots.add(c.map_err(|e| setup("CA file", e.to_string()))?)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "no certificate found".to_owned(), ToString::to_string);
                return Err(setup("system roots", why));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let cfg = match tls.and_then(|t| t.client.as_ref()) {
        None => b.with_no_client_auth(),
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(&id.cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| setup("client certificate", e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(&id.key)
                .map_err(|e| setup("client key", e.to_string()))?;
            b.with_client_auth_cert(chain, key)?
        }
    };
    Ok(Arc::new(cfg))
}

impl Conn {
    /// Connects to the Redis of `url` (`redis://[user:password@]host[:port][/db]` or
    /// `unix:///path`), giving up after `timeout`, authenticates and selects the database.
    pub fn open(url: &str, timeout: Duration, tls: Option<&RedisTls>) -> Result<Self, ConnError> {
        let info = url.into_connection_info()?;
        let sock = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Socket::Tcp(tcp(host, *port, timeout)?),
            ConnectionAddr::TcpTls { host, port, .. } => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| ConnError::ServerName(host.clone()))?;
                let sock = tcp(host, *port, timeout)?;
                let conn = rustls::ClientConnection::new(client_config(tls)?, name)?;
                Socket::Tls(Box::new(rustls::StreamOwned::new(conn, sock)))
            }
            ConnectionAddr::Unix(path) => Socket::Unix(UnixStream::connect(path).map_err(
                |source| ConnError::Connect {
                    addr: path.display().to_string(),
                    source,
                },
            )?),
            other => return Err(ConnError::Unsupported(format!("{other:?}"))),
        };
        let mut conn = Conn {
            sock,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            timeout: Duration::ZERO,
        };
        conn.set_timeout(timeout)?;
        let settings = info.redis_settings();
        let mut hello = Vec::new();
        let mut f = Frame(&mut hello);
        let mut steps = Vec::new();
        if let Some(password) = settings.password() {
            match settings.username() {
                Some(user) => f.command(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => f.command(&[b"AUTH", password.as_bytes()]),
            }
            steps.push("AUTH");
        }
        if settings.db() != 0 {
            let db = itoa::Buffer::new().format(settings.db()).to_owned();
            f.command(&[b"SELECT", db.as_bytes()]);
            steps.push("SELECT");
        }
        if !steps.is_empty() {
            conn.write(&hello)?;
            for step in steps {
                conn.reply()?
                    .map_err(|reply| ConnError::Setup { step, reply })?;
            }
        }
        Ok(conn)
    }

    /// Sets the read and write timeout (if it changed).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ConnError> {
        if self.timeout != timeout {
            self.sock.set_timeouts(timeout).map_err(ConnError::Socket)?;
            self.timeout = timeout;
        }
        Ok(())
    }

    /// Writes `bytes` whole.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.sock
            .write_all(bytes)
            .and_then(|()| self.sock.flush())
            .map_err(ConnError::Write)
    }

    /// The next reply: `Ok(Err(text))` when it is an error reply (Redis refused that command),
    /// `Err` when the connection failed or the server spoke something else than RESP2.
    pub fn reply(&mut self) -> Result<Result<(), String>, ConnError> {
        loop {
            match scan(&self.buf[self.start..self.end]) {
                Scan::Reply(len, r) => {
                    self.start += len;
                    return Ok(r);
                }
                Scan::More => self.fill()?,
                Scan::Bad(why) => return Err(ConnError::Protocol(why)),
            }
        }
    }

    /// Reads more of the replies (blocking, for at most the timeout).
    fn fill(&mut self) -> Result<(), ConnError> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            // A reply not yet whole fills the rest of the buffer: move it to the front, and grow
            // the buffer if it was already there.
            if self.start == 0 {
                self.buf.resize(self.buf.len() * 2, 0);
            } else {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
        }
        match self.sock.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(ConnError::Closed),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(ConnError::Timeout(self.timeout))
            }
            Err(e) => Err(ConnError::Read(e)),
        }
    }
}
