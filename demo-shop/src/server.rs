//! The accept loop, and hyper serving each connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::http::{Request, Response, MAX_BODY};
use super::{bump, routes, Shop};

/// How long `serve` waits for open connections after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest accepted request head; a bigger one is answered 431.
const MAX_HEAD: usize = 16 * 1024;
/// Pause after an accept error that is not about a single connection (typically running out of
/// file descriptors). Without it the loop would spin on the same error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(super) async fn serve(
    shop: Shop,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(%local, shop = %shop.name(), "shop: serving");
    // Each connection gets a private halt channel: it costs a connection an atomic check per
    // wake-up, where a shared watch channel would have every connection take one lock.
    let mut halts: Vec<oneshot::Sender<Halt>> = Vec::new();
    let mut down = shop.inner.down.subscribe();
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            changed = down.changed() => {
                if changed.is_ok() && *down.borrow_and_update() {
                    // Playing dead: open connections are dropped at once, idle ones too.
                    for halt in halts.drain(..) {
                        let _ = halt.send(Halt::Down);
                    }
                }
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        reap(&mut conns);
        halts.retain(|h| !h.is_closed());
        match accepted {
            Ok((stream, peer)) => {
                if shop.is_down() {
                    // Playing dead: the client sees the connection close before any response,
                    // like a crashed origin.
                    drop(stream);
                    continue;
                }
                bump(&shop.inner.counters.connections, 1);
                // Responses leave in one write each; Nagle's algorithm could only delay them.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "shop: set_nodelay failed");
                }
                let (halt, halted) = oneshot::channel();
                halts.push(halt);
                conns.spawn(connection(shop.clone(), stream, peer, halted));
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, "shop: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }

    drop(listener);
    for halt in halts.drain(..) {
        let _ = halt.send(Halt::Stop);
    }
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

/// Collects finished connection tasks so the `JoinSet` does not grow with every connection
/// ever accepted.
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

/// Errors that concern only the connection being accepted; the listener itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Why a request gets no response: the shop went down while it was on its way.
#[derive(Debug)]
struct PlayingDead;

impl std::fmt::Display for PlayingDead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the shop is down")
    }
}

impl std::error::Error for PlayingDead {}

/// Why a connection is told to end.
#[derive(Debug, Clone, Copy)]
enum Halt {
    /// The shop plays dead: drop the connection at once, even mid-request.
    Down,
    /// `serve` is shutting down: finish the request in progress, then close.
    Stop,
}

/// Serves one connection with hyper until either side closes it, the shop goes down (the
/// connection is dropped at once, even when idle) or shutdown begins (the request in progress
/// finishes, then the connection closes).
async fn connection(
    shop: Shop,
    stream: TcpStream,
    peer: SocketAddr,
    mut halted: oneshot::Receiver<Halt>,
) {
    let svc_shop = shop.clone();
    let service = service_fn(move |req| answer(svc_shop.clone(), peer, req));
    // No header-read timeout: hyper arms a timer for every request when it has one, which costs
    // the benchmark origin about 5 % of its throughput; the shop sits behind Flashgate or a
    // load generator, not in front of slow clients. No Date header and lower-case names, as
    // cheap as the hand-written server it replaces. (`pipeline_flush` would batch pipelined
    // responses, but then hyper never sends its 400 for a malformed request.)
    let conn = http1::Builder::new()
        .max_header_size(MAX_HEAD)
        .auto_date_header(false)
        // One buffer, one write per response: small responses on loopback gain nothing from
        // writev.
        .writev(false)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        biased;
        halt = &mut halted => match halt {
            Ok(Halt::Down) => return,
            // Stopping, or `serve` itself is gone.
            Ok(Halt::Stop) | Err(_) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        },
        ended = conn.as_mut() => ended,
    };
    if let Err(e) = ended {
        if e.is_parse() || e.is_parse_too_large() || e.is_parse_status() {
            bump(&shop.inner.counters.bad_requests, 1);
        }
        tracing::debug!(%peer, error = %e, "shop: connection ended");
    }
}

/// Answers one request: the latency the shop is told to add, the body read (at most
/// [`MAX_BODY`], else 413), then the router.
async fn answer(
    shop: Shop,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, PlayingDead> {
    if shop.is_down() {
        return Err(PlayingDead);
    }
    // Counted on arrival, so a test sees a slow request as soon as it reaches the origin.
    shop.count_path(req.uri().path());
    let latency = shop.latency_for(req.uri().path());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Ok(too_large(&shop));
    }
    // Most requests (every GET) have no body: nothing to collect, nothing to allocate.
    let body = if body.is_end_stream() {
        Bytes::new()
    } else {
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Ok(too_large(&shop));
            }
            // The client went away mid-body: nobody is left to answer.
            Err(_) => return Err(PlayingDead),
        }
    };
    let request = Request::new(&parts, &body);
    Ok(routes::handle(&shop, &request, peer).into_hyper())
}

/// 413, and the connection closes: the rest of the body is not worth reading.
fn too_large(shop: &Shop) -> hyper::Response<Full<Bytes>> {
    bump(&shop.inner.counters.bad_requests, 1);
    let mut r = Response::text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    r.close = true;
    r.into_hyper()
}
