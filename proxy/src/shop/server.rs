//! Accept loop and per-connection request loop.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::http::{self, Parsed, Version};
use super::{bump, routes, Shop};

/// How long a keep-alive connection may sit idle (or a client may take to
/// send a request) before we hang up. Bounds what a slow or vanished client
/// can hold on to.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long writing one batch of responses may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `serve` waits for open connections after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long, and how much, we keep reading after deciding to close; see
/// [`linger_close`].
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;
/// Free space guaranteed before each read. Large enough that a typical
/// request arrives in one read.
const READ_CHUNK: usize = 8 * 1024;
/// Pause after an accept error that is not about a single connection
/// (typically running out of file descriptors). Without it the loop would
/// spin on the same error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(super) async fn serve(
    shop: Shop,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(%local, shop = %shop.name(), "shop: serving");
    // Tells connections to finish up. Separate from the shop's `down` switch
    // because shutdown belongs to this `serve` call, not to the shop.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        reap(&mut conns);
        match accepted {
            Ok((stream, peer)) => {
                if shop.is_down() {
                    // Playing dead: the client sees the connection close
                    // before any response, like a crashed origin.
                    drop(stream);
                    continue;
                }
                bump(&shop.inner.counters.connections, 1);
                // Each batch of responses is written at once, so Nagle's
                // algorithm could only delay them.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "shop: set_nodelay failed");
                }
                conns.spawn(connection(shop.clone(), stream, peer, stop_rx.clone()));
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, "shop: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }

    drop(listener);
    stop_tx.send_replace(true);
    let drained = timeout(SHUTDOWN_GRACE, async {
        while let Some(res) = conns.join_next().await {
            log_join_error(res);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            "shop: aborting connections after grace period"
        );
        conns.shutdown().await;
    }
    tracing::info!(%local, "shop: stopped");
    Ok(())
}

/// Collects finished connection tasks so the `JoinSet` does not grow with
/// every connection ever accepted.
fn reap(conns: &mut JoinSet<()>) {
    while let Some(res) = conns.try_join_next() {
        log_join_error(res);
    }
}

fn log_join_error(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            tracing::error!(error = %e, "shop: connection task panicked");
        }
    }
}

/// Errors that concern only the connection being accepted; the listener
/// itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Serves requests on one connection until either side wants to close.
///
/// Requests already buffered are answered before reading again, and their
/// responses leave in a single write, so pipelined requests cost one
/// syscall per batch rather than per request.
async fn connection(
    shop: Shop,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let mut down = shop.inner.down.subscribe();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::with_capacity(READ_CHUNK);
    let mut sent_continue = false;
    loop {
        let mut close = false;
        loop {
            match http::parse(&buf) {
                Ok(Parsed::Complete { request, len }) => {
                    if shop.is_down() {
                        return;
                    }
                    // Counted on arrival, so a test sees a slow request as soon as it
                    // reaches the origin.
                    shop.count_path(request.path);
                    let latency = shop.latency_for(request.path);
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    let response = routes::handle(&shop, &request, peer);
                    // Once shutdown has begun, say so, so the client does
                    // not reuse a connection that is about to go away.
                    let keep_alive = request.keep_alive && !response.close && !*stop.borrow();
                    response.write_to(&mut out, request.version, request.is_head(), keep_alive);
                    buf.advance(len);
                    sent_continue = false;
                    if !keep_alive {
                        close = true;
                        break;
                    }
                }
                Ok(Parsed::Partial { expect_continue }) => {
                    if expect_continue && !sent_continue {
                        out.extend_from_slice(http::CONTINUE);
                        sent_continue = true;
                    }
                    break;
                }
                Err(err) => {
                    bump(&shop.inner.counters.bad_requests, 1);
                    tracing::debug!(%peer, error = err.message(), "shop: rejecting request");
                    routes::parse_error(err).write_to(&mut out, Version::Http11, false, false);
                    close = true;
                    break;
                }
            }
        }

        if !out.is_empty() {
            match timeout(WRITE_TIMEOUT, stream.write_all(&out)).await {
                Ok(Ok(())) => out.clear(),
                _ => return,
            }
        }
        if close {
            linger_close(stream).await;
            return;
        }

        buf.reserve(READ_CHUNK);
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopping| *stopping) => return,
            _ = down.wait_for(|down| *down) => return,
            read = timeout(IDLE_TIMEOUT, stream.read_buf(&mut buf)) => match read {
                Ok(Ok(n)) if n > 0 => {}
                // EOF, error or idle timeout. A half-received request is
                // simply dropped: there is nobody left to answer.
                _ => return,
            },
        }
    }
}

/// Closes a connection without destroying the last response.
///
/// If a socket is closed while unread input is pending, the kernel sends
/// RST, and the peer may discard our final response (e.g. a 413 for a body
/// it is still uploading) before reading it. So: send FIN, then read and
/// discard input for a short while, until the client closes its side.
async fn linger_close(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let _ = timeout(LINGER_TIME, async {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}
