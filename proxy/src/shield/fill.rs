//! Coalescing: one origin fetch per key at a time.
//!
//! The first miss for a key registers a slot in the in-flight map and gets a [`FillGuard`]; the
//! misses that follow get a [`Waiter`] on that slot. The guard is fed the origin's response
//! (header, body chunks, end) by whoever fetches it — the gate's proxy path, or a background
//! refresh — and on [`FillGuard::finish`] stores the entry and wakes the waiters. A guard that
//! is dropped without finishing (origin error, client gone, panic) wakes them too, with
//! [`FillState::Failed`], and its slot leaves the map: no path leaks an entry.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;
use pingora::http::{RequestHeader, ResponseHeader};
use tokio::sync::watch;

use super::key::{variant_key, vary_of, Vary};
use super::policy::{lifetimes, Lifetimes, NotStored};
use super::settings::RouteShield;
use super::store::{Entry, Stored, VaryRecord};
use super::Inner;

/// At most this many fetches are coalesced at once; beyond, misses go to the origin on their
/// own (uncached) rather than growing the map without bound.
pub const MAX_FILLS: usize = 10_000;

/// How a fill ended, as its waiters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillState {
    Pending,
    /// The entry is in the cache.
    Stored,
    /// The response came but may not be stored.
    NotStored(NotStored),
    /// No complete response: the fetch failed or was abandoned.
    Failed,
}

#[derive(Debug)]
pub(crate) struct FillSlot {
    tx: watch::Sender<FillState>,
}

pub(crate) type FillMap = Mutex<HashMap<String, Arc<FillSlot>>>;

/// Registers a fill for `key` unless one is in flight: `Ok(slot)` for the new leader,
/// `Err(Some(waiter))` to follow the current one, `Err(None)` when the map is full.
pub(crate) fn register(
    map: &mut HashMap<String, Arc<FillSlot>>,
    key: &str,
) -> Result<Arc<FillSlot>, Option<Waiter>> {
    if let Some(slot) = map.get(key) {
        return Err(Some(Waiter {
            rx: slot.tx.subscribe(),
        }));
    }
    if map.len() >= MAX_FILLS {
        return Err(None);
    }
    let (tx, _) = watch::channel(FillState::Pending);
    let slot = Arc::new(FillSlot { tx });
    map.insert(key.to_owned(), slot.clone());
    Ok(slot)
}

/// A request waiting for another request's fetch of the same key.
#[derive(Debug)]
#[must_use]
pub struct Waiter {
    rx: watch::Receiver<FillState>,
}

impl Waiter {
    /// Waits until the fill ends, at most `timeout` (`None` on timeout).
    pub async fn wait(mut self, timeout: Duration) -> Option<FillState> {
        let done = tokio::time::timeout(timeout, self.rx.wait_for(|s| *s != FillState::Pending));
        match done.await {
            Ok(Ok(state)) => Some(*state),
            // The sender is gone without a word: only possible if the guard leaked its slot.
            Ok(Err(_)) => Some(FillState::Failed),
            Err(_) => None,
        }
    }
}

enum Phase {
    AwaitingHeader,
    Storing(Box<Pending>),
    NotStoring(NotStored),
}

struct Pending {
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    vary: Arc<[HeaderName]>,
    life: Lifetimes,
    stored_at: Instant,
    body: BytesMut,
}

/// The right (and duty) to fetch one key and store the response. Feed it from
/// `upstream_response_filter` ([`header`](Self::header)) and `response_body_filter`
/// ([`chunk`](Self::chunk), then [`finish`](Self::finish) at end of stream). Dropping it
/// unfinished counts as a failed fetch.
#[must_use]
pub struct FillGuard {
    // Boxed: the guard travels inside `Resolved` and the request context.
    s: Box<GuardState>,
}

struct GuardState {
    inner: Arc<Inner>,
    key: String,
    slot: Arc<FillSlot>,
    family: String,
    host: String,
    path: String,
    request: HeaderMap,
    route: RouteShield,
    epoch: u64,
    phase: Phase,
    signalled: bool,
}

impl std::fmt::Debug for FillGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillGuard")
            .field("key", &self.s.key)
            .field("signalled", &self.s.signalled)
            .finish_non_exhaustive()
    }
}

/// Headers never stored: hop-by-hop fields, framing, our own, and per-response ones.
fn kept(name: &HeaderName, connection_tokens: &[String]) -> bool {
    const DROP: [&str; 11] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "age",
        "set-cookie",
        "proxy-authenticate",
    ];
    let n = name.as_str();
    !(DROP.contains(&n)
        || n.starts_with("x-flashgate-")
        || connection_tokens.iter().any(|t| t == n))
}

/// Conditional and range request headers: a leader must fetch the full response, not a 304
/// or 206 meant for one browser's copy.
const CONDITIONALS: [&str; 6] = [
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "range",
];

impl FillGuard {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inner: Arc<Inner>,
        key: String,
        slot: Arc<FillSlot>,
        family: &str,
        host: &str,
        path: &str,
        request: &HeaderMap,
        route: &RouteShield,
    ) -> Self {
        let epoch = inner.epoch.load(Ordering::Acquire);
        let s = Box::new(GuardState {
            inner,
            key,
            slot,
            family: family.to_owned(),
            host: host.to_owned(),
            path: path.to_owned(),
            request: request.clone(),
            route: route.clone(),
            epoch,
            phase: Phase::AwaitingHeader,
            signalled: false,
        });
        Self { s }
    }

    /// The key being filled (the family, or a `Vary` variant).
    pub fn key(&self) -> &str {
        &self.s.key
    }

    /// Call from `upstream_request_filter`: removes the shopper's conditional and range
    /// headers so the origin answers with the full, storable response.
    pub fn prepare_upstream_request(&self, req: &mut RequestHeader) {
        for h in CONDITIONALS {
            req.remove_header(h);
        }
    }

    /// Call from `upstream_response_filter` with the origin's response header (before your own
    /// per-shopper changes such as `Set-Cookie`). When the response may not be stored, the
    /// waiters are released at once and the reason returned; later calls do nothing.
    pub fn header(&mut self, resp: &ResponseHeader, now: Instant) -> Result<(), NotStored> {
        self.s.header(resp, now)
    }

    /// Call from `response_body_filter` with each body chunk. Past `[cache] max_object` the
    /// fill is abandoned (the response still streams to the shopper).
    pub fn chunk(&mut self, data: &[u8]) {
        self.s.chunk(data)
    }

    /// Call at the end of the body: stores the entry, wakes the waiters and returns the entry.
    pub fn finish(mut self) -> Result<Arc<Entry>, NotStored> {
        self.s.finish()
    }
}

impl GuardState {
    fn header(&mut self, resp: &ResponseHeader, now: Instant) -> Result<(), NotStored> {
        match &self.phase {
            Phase::AwaitingHeader => {}
            Phase::Storing(_) => return Ok(()),
            Phase::NotStoring(r) => return Err(*r),
        }
        let status = resp.status.as_u16();
        let life = match lifetimes(status, &resp.headers, &self.route, &self.inner.settings) {
            Ok(l) => l,
            Err(r) => return Err(self.abandon(r)),
        };
        let declared = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.inner.settings.max_object as u64) {
            return Err(self.abandon(NotStored::TooLarge));
        }
        let vary: Arc<[HeaderName]> = match vary_of(&resp.headers) {
            Vary::None => Arc::from(Vec::new()),
            Vary::Names(n) => Arc::from(n),
            // `lifetimes` refuses `Vary: *` already.
            Vary::Star => return Err(self.abandon(NotStored::VaryStar)),
        };
        let connection_tokens: Vec<String> = resp
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        let headers = resp
            .headers
            .iter()
            .filter(|(k, _)| kept(k, &connection_tokens))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.phase = Phase::Storing(Box::new(Pending {
            status,
            headers,
            vary,
            life,
            stored_at: now,
            body: BytesMut::with_capacity(declared.map_or(0, |n| n as usize)),
        }));
        Ok(())
    }

    fn chunk(&mut self, data: &[u8]) {
        let max = self.inner.settings.max_object;
        let too_large = match &mut self.phase {
            Phase::Storing(p) if p.body.len() + data.len() > max => true,
            Phase::Storing(p) => {
                p.body.extend_from_slice(data);
                false
            }
            Phase::AwaitingHeader | Phase::NotStoring(_) => false,
        };
        if too_large {
            self.abandon(NotStored::TooLarge);
        }
    }

    fn finish(&mut self) -> Result<Arc<Entry>, NotStored> {
        let phase = std::mem::replace(&mut self.phase, Phase::NotStoring(NotStored::Incomplete));
        let p = match phase {
            Phase::Storing(p) => p,
            Phase::AwaitingHeader => return Err(self.abandon(NotStored::Incomplete)),
            Phase::NotStoring(r) => return Err(r),
        };
        if self.inner.epoch.load(Ordering::Acquire) != self.epoch {
            // Purged while we fetched: what we hold may be exactly what was purged.
            return Err(self.abandon(NotStored::Purged));
        }
        let Pending {
            status,
            headers,
            vary,
            life,
            stored_at,
            body,
        } = *p;
        let fresh_until = stored_at + life.fresh;
        let Ok(head) = Entry::stored_head(status, &headers, body.len()) else {
            // Stored names and values are valid already; a failure here stores nothing.
            return Err(self.abandon(NotStored::Incomplete));
        };
        let entry = Arc::new(Entry {
            status,
            body: Bytes::from(body),
            stored_at,
            initial_age: life.initial_age,
            fresh_until,
            revalidate_until: fresh_until + life.stale_while_revalidate,
            error_until: fresh_until + life.stale_if_error,
            family: self.family.clone(),
            host: self.host.clone(),
            path: self.path.clone(),
            vary: vary.clone(),
            head,
        });
        if vary.is_empty() {
            self.inner
                .store
                .insert(self.family.clone(), Stored::Object(entry.clone()));
        } else {
            let lifetime = entry.stale_until().saturating_duration_since(stored_at);
            self.inner.store.insert(
                self.family.clone(),
                Stored::Vary(Arc::new(VaryRecord {
                    names: vary.clone(),
                    family: self.family.clone(),
                    host: self.host.clone(),
                    path: self.path.clone(),
                    lifetime,
                })),
            );
            let key = variant_key(&self.family, &vary, &self.request);
            self.inner.store.insert(key, Stored::Object(entry.clone()));
        }
        self.inner.stored();
        self.signal(FillState::Stored);
        Ok(entry)
    }

    /// Ends the fill without storing; remembers keys whose responses said "do not share".
    fn abandon(&mut self, reason: NotStored) -> NotStored {
        self.phase = Phase::NotStoring(reason);
        if reason.remember() {
            self.inner.remember_uncacheable(&self.family);
        }
        self.signal(FillState::NotStored(reason));
        reason
    }

    fn signal(&mut self, state: FillState) {
        if self.signalled {
            return;
        }
        self.signalled = true;
        {
            let mut map = self.inner.fills.lock();
            if map
                .get(&self.key)
                .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
            {
                map.remove(&self.key);
            }
        }
        self.slot.tx.send_replace(state);
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.s.signal(FillState::Failed);
    }
}
