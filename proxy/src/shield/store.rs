//! The stored objects and the byte-bounded moka cache that holds them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use moka::sync::Cache;
use moka::Expiry;
use pingora::http::ResponseHeader;

use crate::routing::prefix_matches;

/// Response header telling how the response was served.
pub const CACHE_HEADER: &str = "x-flashgate-cache";
/// [`CACHE_HEADER`] as a header name (no parsing per response).
pub const CACHE_HEADER_NAME: http::HeaderName = http::HeaderName::from_static(CACHE_HEADER);

/// The value of [`CACHE_HEADER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Fresh from the cache (also after waiting for another request's fetch).
    Hit,
    /// Fetched from the origin (and stored if cacheable).
    Miss,
    /// A stale copy: during revalidation, a slow origin, an origin error or shedding.
    Stale,
    /// Not cacheable; went to the origin.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
        }
    }
}

/// Per-object bookkeeping added to its weight (the map node, the `Arc`s, moka's metadata).
const OVERHEAD: usize = 256;

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    pub status: u16,
    pub body: Bytes,
    /// When the response header arrived.
    pub stored_at: Instant,
    /// The `Age` the origin reported.
    pub initial_age: Duration,
    pub fresh_until: Instant,
    /// End of the stale-while-revalidate window.
    pub revalidate_until: Instant,
    /// End of the stale-if-error window.
    pub error_until: Instant,
    pub(crate) family: String,
    pub(crate) host: String,
    pub(crate) path: String,
    /// The request headers this variant was chosen by (empty: no `Vary`).
    pub(crate) vary: Arc<[HeaderName]>,
    /// The origin's headers (minus hop-by-hop fields, `Content-Length`, `Age`, `Set-Cookie`
    /// and `X-Flashgate-*`) and `Content-Length`, built once when stored: a hit clones it (no
    /// header-name conversion or hashing per response).
    pub(crate) head: ResponseHeader,
}

impl Entry {
    /// Seconds since the origin produced it (our `Age`).
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.fresh_until
    }

    /// Last instant at which the entry may be served in any way.
    pub fn stale_until(&self) -> Instant {
        self.revalidate_until.max(self.error_until)
    }

    /// The stored part of the response header: the origin's `headers` and `Content-Length`
    /// (room for the few the caller adds).
    pub(crate) fn stored_head(
        status: u16,
        headers: &[(HeaderName, HeaderValue)],
        body_len: usize,
    ) -> pingora::Result<ResponseHeader> {
        let mut h = ResponseHeader::build(status, Some(headers.len() + 6))?;
        for (k, v) in headers {
            h.append_header(k.clone(), v.clone())?;
        }
        if status != 204 {
            // RFC 9110 §8.6: no Content-Length on 204.
            h.insert_header(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(body_len),
            )?;
        }
        Ok(h)
    }

    /// A response header for this entry: stored headers, `Content-Length`, `Age` and
    /// `X-Flashgate-Cache`. Set-Cookie, request ids and the like are the caller's to add.
    pub fn response_header(
        &self,
        now: Instant,
        status: CacheStatus,
    ) -> pingora::Result<ResponseHeader> {
        let mut h = self.head.clone();
        h.insert_header(
            http::header::AGE,
            http::HeaderValue::from(self.age(now).as_secs()),
        )?;
        h.insert_header(
            CACHE_HEADER_NAME,
            http::HeaderValue::from_static(status.as_str()),
        )?;
        Ok(h)
    }

    pub(crate) fn weight(&self) -> usize {
        // Pingora keeps each name twice (the map and its case-preserving copy).
        let headers: usize = self
            .head
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() * 2 + v.len() + 64)
            .sum();
        OVERHEAD
            + self.family.len() * 2
            + self.path.len()
            + self.host.len()
            + headers
            + self.body.len()
    }
}

/// The family record of a varying resource: which request headers select the variant.
#[derive(Debug)]
pub struct VaryRecord {
    pub(crate) names: Arc<[HeaderName]>,
    pub(crate) family: String,
    pub(crate) host: String,
    pub(crate) path: String,
    /// As long as the variant written with it.
    pub(crate) lifetime: Duration,
}

/// A cache value.
#[derive(Debug, Clone)]
pub enum Stored {
    Object(Arc<Entry>),
    Vary(Arc<VaryRecord>),
}

impl Stored {
    fn weight(&self, key: &str) -> u32 {
        let w = key.len()
            + match self {
                Self::Object(e) => e.weight(),
                Self::Vary(v) => {
                    OVERHEAD
                        + v.family.len()
                        + v.host.len()
                        + v.path.len()
                        + v.names.iter().map(|n| n.as_str().len() + 16).sum::<usize>()
                }
            };
        u32::try_from(w).unwrap_or(u32::MAX)
    }

    fn lifetime(&self) -> Duration {
        match self {
            Self::Object(e) => e.stale_until().saturating_duration_since(e.stored_at),
            Self::Vary(v) => v.lifetime,
        }
    }

    fn family(&self) -> &str {
        match self {
            Self::Object(e) => &e.family,
            Self::Vary(v) => &v.family,
        }
    }

    fn host_path(&self) -> (&str, &str) {
        match self {
            Self::Object(e) => (&e.host, &e.path),
            Self::Vary(v) => (&v.host, &v.path),
        }
    }
}

/// Removes an entry from memory once nothing may serve it any more (plus a second, so a
/// lookup at the boundary still finds it and counts it as a miss by its own clock).
struct ByLifetime;

impl Expiry<String, Stored> for ByLifetime {
    fn expire_after_create(&self, _k: &String, v: &Stored, _at: Instant) -> Option<Duration> {
        Some(v.lifetime() + Duration::from_secs(1))
    }

    fn expire_after_update(
        &self,
        _k: &String,
        v: &Stored,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.lifetime() + Duration::from_secs(1))
    }
}

/// What to purge (admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// One resource, all its variants: `host` (any when `None`) and `path?query` as a shopper
    /// would request it.
    Key {
        host: Option<String>,
        path_and_query: String,
    },
    /// Everything under a path prefix (whole segments, like routes), on one host or all.
    Prefix {
        host: Option<String>,
        path: String,
    },
    All,
}

/// Why a purge request was refused (answered 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurgeError {
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("{0}: unknown field (url, prefix, all, host)")]
    UnknownField(String),
    #[error("{0}: must be a string")]
    NotAString(&'static str),
    #[error("{0}: must start with '/'")]
    NotAPath(&'static str),
    #[error("all: purges every host; drop host, or use prefix \"/\" with host")]
    AllWithHost,
    #[error("give exactly one of url, prefix or \"all\": true")]
    NotOne,
}

impl Purge {
    /// Reads the admin API's JSON body: `{"url": "/products/x?a=1"}`, `{"prefix":
    /// "/products"}` or `{"all": true}`, each with an optional `"host"`.
    pub fn from_json(v: &serde_json::Value) -> Result<Purge, PurgeError> {
        let obj = v.as_object().ok_or(PurgeError::NotAnObject)?;
        for k in obj.keys() {
            if !["url", "prefix", "all", "host"].contains(&k.as_str()) {
                return Err(PurgeError::UnknownField(k.clone()));
            }
        }
        let host = match obj.get("host") {
            None | Some(serde_json::Value::Null) => None,
            Some(h) => Some(
                h.as_str()
                    .ok_or(PurgeError::NotAString("host"))?
                    .to_ascii_lowercase(),
            ),
        };
        let path = |k: &'static str, v: &serde_json::Value| -> Result<String, PurgeError> {
            match v.as_str() {
                Some(s) if s.starts_with('/') => Ok(s.to_owned()),
                Some(_) => Err(PurgeError::NotAPath(k)),
                None => Err(PurgeError::NotAString(k)),
            }
        };
        match (obj.get("url"), obj.get("prefix"), obj.get("all")) {
            (Some(u), None, None) => Ok(Purge::Key {
                host,
                path_and_query: path("url", u)?,
            }),
            (None, Some(p), None) => Ok(Purge::Prefix {
                host,
                path: path("prefix", p)?,
            }),
            (None, None, Some(serde_json::Value::Bool(true))) if host.is_none() => Ok(Purge::All),
            (None, None, Some(serde_json::Value::Bool(true))) => Err(PurgeError::AllWithHost),
            _ => Err(PurgeError::NotOne),
        }
    }
}

/// The catalog cache: byte-bounded (moka's weigher), TinyLFU admission and eviction, each
/// object expiring when its last stale window closes.
pub struct Store {
    cache: Cache<String, Stored>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl Store {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &String, v: &Stored| v.weight(k))
                .expire_after(ByLifetime)
                .build(),
        }
    }

    pub fn get(&self, key: &str) -> Option<Stored> {
        self.cache.get(key)
    }

    pub fn insert(&self, key: String, value: Stored) {
        self.cache.insert(key, value);
    }

    /// Removes what `p` names; returns how many stored objects (variants and family records)
    /// went. A scan: fine for an operator's action, not for the request path.
    pub fn purge(&self, p: &Purge) -> u64 {
        if *p == Purge::All {
            self.cache.run_pending_tasks();
            let n = self.cache.entry_count();
            self.cache.invalidate_all();
            self.cache.run_pending_tasks();
            return n;
        }
        let family = match p {
            Purge::Key {
                host,
                path_and_query,
            } => super::key::CacheKey::new(
                &http::Method::GET,
                host.as_deref().unwrap_or(""),
                path_and_query,
            )
            .ok()
            .map(|k| (host.is_none(), k)),
            Purge::Prefix { .. } | Purge::All => None,
        };
        let matches = |v: &Stored| -> bool {
            let (h, path) = v.host_path();
            match p {
                Purge::Key { host, .. } => family.as_ref().is_some_and(|(any_host, k)| {
                    if *any_host {
                        // Same resource on any host: compare the family without its host.
                        v.family()
                            .strip_prefix("GET ")
                            .and_then(|f| f.strip_prefix(h))
                            == k.family().strip_prefix("GET ")
                    } else {
                        host.as_deref() == Some(h) && v.family() == k.family()
                    }
                }),
                Purge::Prefix { host, path: prefix } => {
                    host.as_deref().is_none_or(|x| x == h) && prefix_matches(prefix, path)
                }
                Purge::All => true,
            }
        };
        let doomed: Vec<Arc<String>> = self
            .cache
            .iter()
            .filter(|(_, v)| matches(v))
            .map(|(k, _)| k)
            .collect();
        for k in &doomed {
            self.cache.invalidate(k.as_str());
        }
        self.cache.run_pending_tasks();
        doomed.len() as u64
    }

    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Applies moka's pending evictions (tests and gauges want exact numbers).
    pub fn sync(&self) {
        self.cache.run_pending_tasks();
    }
}
