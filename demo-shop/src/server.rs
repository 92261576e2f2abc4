//! The accept loop, and hyper serving each connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::http::{Request, Response, MAX_BODY};
use super::{bump, routes, Shop};

/// How long a client may take to send a request head before we hang up. Bounds what a slow or
/// vanished client can hold on to.
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
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
    // Tells connections to finish up. Separate from the shop's `down` switch because shutdown
    // belongs to this `serve` call, not to the shop.
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

/// Serves one connection with hyper until either side closes it, the shop goes down (the
/// connection is dropped at once, even when idle) or shutdown begins (the request in progress
/// finishes, then the connection closes).
async fn connection(
    shop: Shop,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let mut down = shop.inner.down.subscribe();
    let svc_shop = shop.clone();
    let service = service_fn(move |req| answer(svc_shop.clone(), peer, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD.max(8 * 1024))
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    // The watch guards are dropped inside these blocks, before anything else is awaited.
    let went_down = async {
        let _ = down.wait_for(|down| *down).await;
    };
    let stopping = async {
        let _ = stop.wait_for(|stopping| *stopping).await;
    };
    let ended = tokio::select! {
        biased;
        () = went_down => return,
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
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
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Ok(too_large(&shop));
        }
        // The client went away mid-body: nobody is left to answer.
        Err(_) => return Err(PlayingDead),
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
