//! Background refreshes (stale-while-revalidate): a plain HTTP/1.1 GET to one server of the
//! route's pool, made outside Pingora's proxy path.
//!
//! [`HttpFetcher`] uses Pingora's own HTTP/1.x client (`pingora::connectors::http::v1`), so
//! framing (Content-Length, chunked, close-delimited), informational responses and per-read
//! timeouts behave as on the proxy path; keep-alive connections are pooled. [`Fetcher`] is the
//! seam for tests and other transports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use pingora::connectors::http::v1::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::upstreams::peer::HttpPeer;

/// Marks requests made by a background refresh (the origin may log or ignore them).
pub const REFRESH_HEADER: &str = "x-flashgate-refresh";

/// One refresh request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The pool (upstream name) to ask.
    pub pool: String,
    /// The shopper-facing host (the pool's `host` setting, if any, wins).
    pub host: String,
    pub path_and_query: String,
    /// The request headers the stored variant was chosen by (`Vary`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Larger bodies fail with [`FetchError::TooLarge`].
    pub max_body: usize,
}

/// A complete response.
#[derive(Debug)]
pub struct Fetched {
    pub header: ResponseHeader,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no pool named {0:?}")]
    NoPool(String),
    #[error("no healthy server in pool {0:?}")]
    NoServer(String),
    #[error("origin: {0}")]
    Http(String),
    #[error("response body larger than the cache's max_object")]
    TooLarge,
    #[error("timed out")]
    Timeout,
}

/// Fetches one resource from an origin pool.
#[async_trait]
pub trait Fetcher: Send + Sync + std::fmt::Debug {
    async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, FetchError>;
}

/// Where and how to reach one pool.
#[derive(Clone)]
pub struct FetchTarget {
    pub lb: Arc<LoadBalancer<RoundRobin>>,
    /// Overrides the `Host` header (the pool's `host` setting).
    pub host: Option<String>,
    pub connect_timeout: Duration,
    /// Per read; the whole fetch is also bounded by connect + 2 × read.
    pub read_timeout: Duration,
}

impl std::fmt::Debug for FetchTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchTarget")
            .field("host", &self.host)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

/// The production fetcher: Pingora's HTTP/1.x client over the pools' load balancers (so the
/// health checks apply to refreshes too).
pub struct HttpFetcher {
    connector: Connector,
    targets: BTreeMap<String, FetchTarget>,
}

impl std::fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFetcher")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl HttpFetcher {
    pub fn new(targets: BTreeMap<String, FetchTarget>) -> Self {
        Self {
            connector: Connector::new(None),
            targets,
        }
    }

    async fn exchange(
        &self,
        t: &FetchTarget,
        req: &FetchRequest,
        peer: &HttpPeer,
    ) -> Result<Fetched, FetchError> {
        let http = |e: Box<pingora::Error>| FetchError::Http(e.to_string());
        let (mut session, _reused) = self.connector.get_http_session(peer).await.map_err(http)?;
        session.read_timeout = Some(t.read_timeout);
        session.write_timeout = Some(t.read_timeout);
        let mut head =
            RequestHeader::build("GET", req.path_and_query.as_bytes(), None).map_err(http)?;
        for (k, v) in &req.headers {
            head.append_header(k.clone(), v.clone()).map_err(http)?;
        }
        head.insert_header(http::header::HOST, t.host.as_deref().unwrap_or(&req.host))
            .map_err(http)?;
        head.insert_header(http::header::USER_AGENT, "flashgate-refresh")
            .map_err(http)?;
        head.insert_header(REFRESH_HEADER, "1").map_err(http)?;
        session
            .write_request_header(Box::new(head))
            .await
            .map_err(http)?;
        session.finish_body().await.map_err(http)?;
        // Informational (1xx) responses come before the real one.
        let mut header = None;
        for _ in 0..8 {
            session.read_response().await.map_err(http)?;
            if let Some(h) = session.resp_header() {
                if !h.status.is_informational() {
                    header = Some(h.clone());
                    break;
                }
            }
        }
        let header = header.ok_or_else(|| FetchError::Http("no final response".into()))?;
        let mut body = BytesMut::new();
        while let Some(chunk) = session.read_body_ref().await.map_err(http)? {
            if body.len() + chunk.len() > req.max_body {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(chunk);
        }
        self.connector
            .release_http_session(session, peer, Some(Duration::from_secs(60)))
            .await;
        Ok(Fetched {
            header,
            body: body.freeze(),
        })
    }
}

#[async_trait]
impl Fetcher for HttpFetcher {
    async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, FetchError> {
        let t = self
            .targets
            .get(&req.pool)
            .ok_or_else(|| FetchError::NoPool(req.pool.clone()))?;
        let backend =
            t.lb.select(b"", 256)
                .ok_or_else(|| FetchError::NoServer(req.pool.clone()))?;
        let mut peer = HttpPeer::new(&backend, false, String::new());
        peer.options.connection_timeout = Some(t.connect_timeout);
        peer.options.read_timeout = Some(t.read_timeout);
        peer.options.write_timeout = Some(t.read_timeout);
        let deadline = t.connect_timeout + t.read_timeout * 2;
        tokio::time::timeout(deadline, self.exchange(t, req, &peer))
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}
