//! The origin shield: what stands between a flash-sale crowd and the shop's servers.
//!
//! | concern | where |
//! |---|---|
//! | cache keys, query normalisation, `Vary` | [`key`] |
//! | what may be stored and for how long (`Cache-Control`) | [`policy`] |
//! | stored entries, the byte-bounded moka cache, purge | [`store`] |
//! | coalescing: one origin fetch per key, [`FillGuard`] / [`Waiter`] | [`fill`] |
//! | background refresh (stale-while-revalidate) | [`refresh`] |
//! | pool latency (p95) and error share | [`latency`] |
//! | concurrency limits and shedding by route priority | [`shed`] |
//! | origin-aware admission factor | [`health`] |
//! | validated settings | [`settings`] |
//!
//! The engine does no proxying itself: the gate drives it from Pingora's phases (see
//! `docs/origin-shield.md` for the exact calls). Time is an argument (`now: Instant`), so tests
//! run on synthetic clocks. The engine reads a clock only to anchor its statistics windows
//! (once, in [`Shield::new`]) and tokio's clock to measure how long a request waited for
//! another's fetch or how long a background refresh took.
//!
//! Guarantees and their limits:
//! - **Bounded memory**: stored objects are weighed (body + headers + key + 256 bytes) and
//!   moka keeps the weighted total ≤ `[cache] max_bytes` (eviction is applied asynchronously,
//!   so the bound holds once pending work has run — [`Shield::cache_bytes`] reports it).
//!   Admission is TinyLFU: a one-off key may be refused when the cache is full of hotter ones,
//!   which is what protects hot catalog pages from cache-busting crawls.
//! - **Never shared**: `private`, `no-store`, `no-cache`, `Set-Cookie`, `Vary: *`, origin
//!   commands, requests with `Authorization` (see [`policy`]).
//! - **One fetch per key** on this node, for misses and for revalidations; a fleet of N nodes
//!   makes up to N.
//! - **No leaks**: a fill that ends in any way other than [`FillGuard::finish`] releases its
//!   waiters and its slot (the guard's `Drop`).

pub mod fill;
pub mod health;
pub mod key;
pub mod latency;
pub mod policy;
pub mod refresh;
pub mod settings;
pub mod shed;
pub mod store;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderMap;
use moka::sync::Cache;
use parking_lot::Mutex;
use prometheus::IntCounter;

use crate::metrics::Metrics;
use crate::routing::RouteKind;

pub use fill::{FillGuard, FillState, Waiter};
pub use health::OriginHealth;
pub use key::{Bypass, CacheKey};
pub use latency::PoolSnapshot;
pub use policy::NotStored;
pub use refresh::{FetchError, FetchRequest, FetchTarget, Fetched, Fetcher, HttpFetcher};
pub use settings::{CacheSettings, OriginAware, PoolShield, RouteShield};
pub use shed::{Permit, Priority, Shed, ShedReason};
pub use store::{CacheStatus, Entry, Purge, PurgeError, CACHE_HEADER, CACHE_HEADER_NAME};

use fill::{register, FillMap};
use key::variant_key;
use shed::PoolState;
use store::{Store, Stored};

/// How long a key whose response said "do not share" bypasses the cache (and coalescing).
pub const UNCACHEABLE_FOR: Duration = Duration::from_secs(10);

/// Background refreshes give up after this long, whatever the pool's timeouts.
pub const REFRESH_DEADLINE: Duration = Duration::from_secs(60);

/// Values of the `result` label of `flashgate_cache_results_total`.
const RESULTS: [&str; 5] = ["hit", "miss", "stale", "bypass", "coalesced"];
const HIT: usize = 0;
const MISS: usize = 1;
const STALE: usize = 2;
const BYPASS: usize = 3;
const COALESCED: usize = 4;

const KINDS: [RouteKind; 5] = [
    RouteKind::Default,
    RouteKind::Catalog,
    RouteKind::Bypass,
    RouteKind::Essential,
    RouteKind::Optional,
];

fn kind_index(kind: RouteKind) -> usize {
    match kind {
        RouteKind::Default => 0,
        RouteKind::Catalog => 1,
        RouteKind::Bypass => 2,
        RouteKind::Essential => 3,
        RouteKind::Optional => 4,
    }
}

/// What the shield is built from, assembled by the config from `[cache]`, `[upstreams]` and
/// the rooms' `[rooms.origin_aware]`.
#[derive(Debug, Clone)]
pub struct ShieldPlan {
    pub cache: CacheSettings,
    /// Each pool's shield settings, by pool name.
    pub pools: Vec<(String, PoolShield)>,
    /// Rooms with origin-aware admission.
    pub rooms: Vec<OriginAwareRoom>,
}

/// A room whose admission follows the health of the pools its shoppers reach.
#[derive(Debug, Clone)]
pub struct OriginAwareRoom {
    pub id: String,
    pub settings: OriginAware,
    /// The pools of the routes under, or above, the room's paths.
    pub pools: Vec<String>,
}

/// What the shield reads of a route: its pool, its kind and its shield settings. Routes
/// belong to the config (`config::Route` implements this); the shield depends on none of it.
pub trait RouteInfo {
    /// The pool (`[upstreams.<name>]`) the route forwards to.
    fn upstream(&self) -> &str;
    fn kind(&self) -> RouteKind;
    fn shield(&self) -> &RouteShield;
}

/// The `kind` label of a route.
pub fn kind_label(kind: RouteKind) -> &'static str {
    match kind {
        RouteKind::Default => "default",
        RouteKind::Catalog => "catalog",
        RouteKind::Bypass => "bypass",
        RouteKind::Essential => "essential",
        RouteKind::Optional => "optional",
    }
}

/// What to do with a request, once known.
#[derive(Debug)]
#[must_use]
pub enum Resolved {
    /// Answer with this fresh entry (`X-Flashgate-Cache: hit`); the origin is not contacted.
    Hit(Arc<Entry>),
    /// Answer with this stale entry (`stale`): it is being revalidated, or the origin is slower
    /// than the route's latency budget. Any refresh is already running.
    Stale(Arc<Entry>),
    /// Go to the origin (`miss`). With a guard, this request fetches for everyone: feed it the
    /// response. Without (HEAD, a failed leader, the wait timed out), just proxy.
    Miss(Option<FillGuard>),
    /// Go to the origin, do not store (`bypass`).
    Bypass(Bypass),
}

impl Resolved {
    /// The `X-Flashgate-Cache` value for the response.
    pub fn cache_status(&self) -> CacheStatus {
        match self {
            Self::Hit(_) => CacheStatus::Hit,
            Self::Stale(_) => CacheStatus::Stale,
            Self::Miss(_) => CacheStatus::Miss,
            Self::Bypass(_) => CacheStatus::Bypass,
        }
    }
}

/// A lookup: resolved at once, or waiting for another request's fetch of the same key.
#[derive(Debug)]
#[must_use]
pub enum Lookup {
    Ready(Resolved),
    Wait(Waiter),
}

/// The shared engine state (one per process; cloning [`Shield`] shares it).
pub(crate) struct Inner {
    pub(crate) settings: CacheSettings,
    pub(crate) store: Store,
    uncacheable: Cache<String, ()>,
    pub(crate) fills: FillMap,
    /// Bumped by every purge; fills started before a purge do not store.
    pub(crate) epoch: AtomicU64,
    pools: HashMap<String, Arc<PoolState>>,
    rooms: HashMap<String, OriginHealth>,
    fetcher: Option<Arc<dyn Fetcher>>,
    metrics: Arc<Metrics>,
    /// `flashgate_cache_results_total` children, resolved once (kind × result).
    results: Vec<IntCounter>,
}

impl Inner {
    pub(crate) fn remember_uncacheable(&self, family: &str) {
        self.uncacheable.insert(family.to_owned(), ());
    }

    pub(crate) fn stored(&self) {
        self.metrics
            .cache_bytes
            .set(i64::try_from(self.store.weighted_size()).unwrap_or(i64::MAX));
        self.metrics
            .cache_entries
            .set(i64::try_from(self.store.entry_count()).unwrap_or(i64::MAX));
    }
}

/// The origin shield engine. Cheap to clone.
#[derive(Clone)]
pub struct Shield {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Shield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shield")
            .field("settings", &self.inner.settings)
            .field("store", &self.inner.store)
            .field("pools", &self.inner.pools.keys().collect::<Vec<_>>())
            .field("rooms", &self.inner.rooms.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Shield {
    /// Builds the engine from its plan (`Config::shield_plan`). `fetcher` makes
    /// stale-while-revalidate refreshes (an `HttpFetcher` over the pools in production);
    /// without one, stale entries are served until their revalidation window closes and then
    /// fetched by a request.
    pub fn new(plan: ShieldPlan, metrics: Arc<Metrics>, fetcher: Option<Arc<dyn Fetcher>>) -> Self {
        let now = Instant::now();
        let pools: HashMap<String, Arc<PoolState>> = plan
            .pools
            .iter()
            .map(|(name, p)| (name.clone(), Arc::new(PoolState::new(name, p, now))))
            .collect();
        let mut rooms = HashMap::new();
        for room in plan.rooms {
            let room_pools = room
                .pools
                .iter()
                .filter_map(|n| pools.get(n).cloned())
                .collect();
            rooms.insert(room.id, OriginHealth::new(room.settings, room_pools, now));
        }
        let settings = plan.cache;
        let results = KINDS
            .iter()
            .flat_map(|k| {
                RESULTS.iter().map(|r| {
                    metrics
                        .cache_results
                        .with_label_values(&[kind_label(*k), r])
                })
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                store: Store::new(settings.max_bytes),
                uncacheable: Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(UNCACHEABLE_FOR)
                    .build(),
                settings,
                fills: Mutex::new(HashMap::new()),
                epoch: AtomicU64::new(0),
                pools,
                rooms,
                fetcher,
                metrics,
                results,
            }),
        }
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.inner.settings
    }

    fn count(&self, kind: RouteKind, result: usize) {
        if let Some(c) = self
            .inner
            .results
            .get(kind_index(kind) * RESULTS.len() + result)
        {
            c.inc();
        }
    }

    fn count_resolved(&self, kind: RouteKind, r: &Resolved) {
        let result = match r {
            // Routes without caching are not cache traffic.
            Resolved::Bypass(Bypass::Route) => return,
            Resolved::Hit(_) => HIT,
            Resolved::Stale(_) => STALE,
            Resolved::Miss(_) => MISS,
            Resolved::Bypass(_) => BYPASS,
        };
        self.count(kind, result);
    }

    /// The entry for a request, if any, and the key it is (or would be) stored under.
    /// The variant key is `None` when the resource does not vary (its key is the family);
    /// nothing is allocated on that path.
    fn find(&self, key: &CacheKey, headers: &HeaderMap) -> (Option<String>, Option<Arc<Entry>>) {
        match self.inner.store.get(key.family()) {
            Some(Stored::Object(e)) => (None, Some(e)),
            Some(Stored::Vary(v)) => {
                let k = variant_key(key.family(), &v.names, headers);
                match self.inner.store.get(&k) {
                    Some(Stored::Object(e)) => (Some(k), Some(e)),
                    Some(Stored::Vary(_)) | None => (Some(k), None),
                }
            }
            None => (None, None),
        }
    }

    /// The cache decision for a request on `route` (sync; no waiting). Call after the room
    /// gate has let the request through. Counts the result in
    /// `flashgate_cache_results_total` unless it is [`Lookup::Wait`].
    pub fn lookup(
        &self,
        route: &impl RouteInfo,
        key: &CacheKey,
        headers: &HeaderMap,
        now: Instant,
    ) -> Lookup {
        let l = self.lookup_uncounted(route, key, headers, now);
        if let Lookup::Ready(r) = &l {
            self.count_resolved(route.kind(), r);
        }
        l
    }

    fn lookup_uncounted(
        &self,
        route: &impl RouteInfo,
        key: &CacheKey,
        headers: &HeaderMap,
        now: Instant,
    ) -> Lookup {
        if !route.shield().cache {
            return Lookup::Ready(Resolved::Bypass(Bypass::Route));
        }
        let (variant, entry) = self.find(key, headers);
        let entry = match entry {
            Some(e) if e.is_fresh(now) => return Lookup::Ready(Resolved::Hit(e)),
            other => other,
        };
        let store_key = variant.unwrap_or_else(|| key.family().to_owned());
        let Some(entry) = entry else {
            return self.miss(route, key, headers, store_key, now);
        };
        if now < entry.revalidate_until {
            self.try_refresh(route, key, headers, &store_key, &entry, now);
            return Lookup::Ready(Resolved::Stale(entry));
        }
        if now >= entry.error_until {
            return self.miss(route, key, headers, store_key, now);
        }
        // Inside the stale-if-error window only. A slow origin: stale now, refresh behind.
        let slow = route.shield().latency_budget.is_some_and(|budget| {
            self.inner
                .pools
                .get(route.upstream())
                .and_then(|p| p.stats.snapshot(now).p95)
                .is_some_and(|p95| p95 > budget)
        });
        if slow {
            self.try_refresh(route, key, headers, &store_key, &entry, now);
            return Lookup::Ready(Resolved::Stale(entry));
        }
        // Otherwise one request revalidates through the proxy path while the others get the
        // stale copy rather than waiting for it (stale while updating).
        if key.is_head() {
            return Lookup::Ready(Resolved::Miss(None));
        }
        let mut map = self.inner.fills.lock();
        match register(&mut map, &store_key) {
            Ok(slot) => {
                drop(map);
                Lookup::Ready(Resolved::Miss(Some(
                    self.guard(route, key, headers, store_key, slot),
                )))
            }
            Err(Some(_)) => Lookup::Ready(Resolved::Stale(entry)),
            Err(None) => Lookup::Ready(Resolved::Miss(None)),
        }
    }

    fn guard(
        &self,
        route: &impl RouteInfo,
        key: &CacheKey,
        headers: &HeaderMap,
        store_key: String,
        slot: Arc<fill::FillSlot>,
    ) -> FillGuard {
        FillGuard::new(
            self.inner.clone(),
            store_key,
            slot,
            key.family(),
            key.host(),
            key.path(),
            headers,
            route.shield(),
        )
    }

    fn miss(
        &self,
        route: &impl RouteInfo,
        key: &CacheKey,
        headers: &HeaderMap,
        store_key: String,
        now: Instant,
    ) -> Lookup {
        if self.inner.uncacheable.contains_key(key.family()) {
            return Lookup::Ready(Resolved::Bypass(Bypass::Uncacheable));
        }
        if key.is_head() {
            return Lookup::Ready(Resolved::Miss(None));
        }
        let mut map = self.inner.fills.lock();
        // The leader may have stored and left the map since we looked.
        if let (_, Some(e)) = self.find(key, headers) {
            if e.is_fresh(now) {
                return Lookup::Ready(Resolved::Hit(e));
            }
        }
        match register(&mut map, &store_key) {
            Ok(slot) => {
                drop(map);
                Lookup::Ready(Resolved::Miss(Some(
                    self.guard(route, key, headers, store_key, slot),
                )))
            }
            Err(Some(w)) => Lookup::Wait(w),
            Err(None) => Lookup::Ready(Resolved::Miss(None)),
        }
    }

    /// Starts one background refresh of `store_key` unless a fetch of it is in flight (or no
    /// fetcher / runtime is available). Returns whether one started.
    fn try_refresh(
        &self,
        route: &impl RouteInfo,
        key: &CacheKey,
        headers: &HeaderMap,
        store_key: &str,
        entry: &Entry,
        now: Instant,
    ) -> bool {
        let Some(fetcher) = self.inner.fetcher.clone() else {
            return false;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let slot = {
            let mut map = self.inner.fills.lock();
            match register(&mut map, store_key) {
                Ok(slot) => slot,
                Err(_) => return false,
            }
        };
        let mut guard = self.guard(route, key, headers, store_key.to_owned(), slot);
        let req = FetchRequest {
            pool: route.upstream().to_owned(),
            host: key.host().to_owned(),
            path_and_query: key.path_and_query().to_owned(),
            headers: entry
                .vary
                .iter()
                .flat_map(|n| {
                    headers
                        .get_all(n)
                        .iter()
                        .map(move |v| (n.clone(), v.clone()))
                })
                .collect(),
            max_body: self.inner.settings.max_object,
        };
        let pool = self.inner.pools.get(route.upstream()).cloned();
        let metrics = self.inner.metrics.clone();
        rt.spawn(async move {
            let started = tokio::time::Instant::now();
            let res = tokio::time::timeout(REFRESH_DEADLINE, fetcher.fetch(&req)).await;
            // The caller's clock, advanced by the real (or test-paused) time the fetch took.
            let at = now + started.elapsed();
            let result = match res {
                Ok(Ok(f)) => {
                    if let Some(p) = &pool {
                        p.stats
                            .record(at, started.elapsed(), f.header.status.as_u16() < 500);
                    }
                    let stored = guard.header(&f.header, at).is_ok() && {
                        guard.chunk(&f.body);
                        guard.finish().is_ok()
                    };
                    if stored {
                        "stored"
                    } else {
                        "not_stored"
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, path = %req.path_and_query, "cache refresh failed");
                    if let Some(p) = &pool {
                        p.stats.record(at, started.elapsed(), false);
                    }
                    "failed"
                }
                Err(_) => "failed",
            };
            metrics.cache_refreshes.with_label_values(&[result]).inc();
        });
        true
    }

    /// Waits (bounded by `[cache] lock_timeout`) for the fetch `waiter` follows, then decides
    /// again: usually a [`Resolved::Hit`] (counted as `coalesced`). If the fetch failed or
    /// timed out: a stale copy if one is inside its windows, else [`Resolved::Miss`]`(None)`
    /// (go to the origin alone). If the response may not be shared: [`Resolved::Bypass`].
    pub async fn follow(
        &self,
        waiter: Waiter,
        route: &impl RouteInfo,
        key: &CacheKey,
        headers: &HeaderMap,
        now: Instant,
    ) -> Resolved {
        let started = tokio::time::Instant::now();
        let limit = self.inner.settings.lock_timeout;
        let mut waiter = waiter;
        loop {
            let state = waiter.wait(limit.saturating_sub(started.elapsed())).await;
            let at = now + started.elapsed();
            let resolved = match state {
                Some(FillState::Stored) => match self.lookup_uncounted(route, key, headers, at) {
                    Lookup::Ready(Resolved::Hit(e)) => {
                        self.count(route.kind(), COALESCED);
                        return Resolved::Hit(e);
                    }
                    Lookup::Ready(r) => r,
                    // Another variant (`Vary`) is being fetched now: follow that one.
                    Lookup::Wait(w) => {
                        waiter = w;
                        continue;
                    }
                },
                Some(FillState::NotStored(r)) if r.remember() => {
                    Resolved::Bypass(Bypass::Uncacheable)
                }
                Some(FillState::NotStored(_) | FillState::Failed | FillState::Pending) | None => {
                    match self.stale_entry(route, key, headers, at) {
                        Some(e) => Resolved::Stale(e),
                        None => Resolved::Miss(None),
                    }
                }
            };
            self.count_resolved(route.kind(), &resolved);
            return resolved;
        }
    }

    /// [`lookup`](Self::lookup), then [`follow`](Self::follow) if another request is
    /// fetching the key: the one call `request_filter` needs.
    pub async fn resolve(
        &self,
        route: &impl RouteInfo,
        key: &CacheKey,
        headers: &HeaderMap,
        now: Instant,
    ) -> Resolved {
        match self.lookup(route, key, headers, now) {
            Lookup::Ready(r) => r,
            Lookup::Wait(w) => self.follow(w, route, key, headers, now).await,
        }
    }

    fn stale_entry(
        &self,
        route: &impl RouteInfo,
        key: &CacheKey,
        headers: &HeaderMap,
        now: Instant,
    ) -> Option<Arc<Entry>> {
        if !route.shield().cache {
            return None;
        }
        self.find(key, headers).1.filter(|e| now < e.stale_until())
    }

    /// A copy to serve instead of an error: the origin failed (5xx, timeout, refused, no
    /// healthy server) or the request was shed. Any stored entry inside its stale-if-error or
    /// stale-while-revalidate window (or still fresh). Counted as `stale` when found.
    pub fn stale_for(
        &self,
        route: &impl RouteInfo,
        key: &CacheKey,
        headers: &HeaderMap,
        now: Instant,
    ) -> Option<Arc<Entry>> {
        let e = self.stale_entry(route, key, headers, now)?;
        self.count(route.kind(), STALE);
        Some(e)
    }

    /// A slot in the route's pool, or a refusal (`Shed`): then serve
    /// [`stale_for`](Self::stale_for) if any, else 503 with `Retry-After`. Keep the permit in
    /// the request context until the origin exchange ends.
    pub fn admit(&self, route: &impl RouteInfo, now: Instant) -> Result<Permit, Shed> {
        let Some(pool) = self.inner.pools.get(route.upstream()) else {
            return Ok(Permit::unlimited());
        };
        pool.admit(Priority::of(route.kind()), now)
            .inspect_err(|shed| {
                self.inner
                    .metrics
                    .shed
                    .with_label_values(&[
                        pool.name.as_str(),
                        kind_label(route.kind()),
                        shed.reason.as_str(),
                    ])
                    .inc();
            })
    }

    /// One origin exchange of `pool`: time to the response header (or to the failure), and
    /// whether it went well (`false` for 5xx, timeouts, refused connections). Feeds shedding
    /// (`latency_target`), latency budgets and origin-aware admission.
    pub fn record(&self, pool: &str, latency: Duration, ok: bool, now: Instant) {
        if let Some(p) = self.inner.pools.get(pool) {
            p.stats.record(now, latency, ok);
        }
    }

    /// A pool's recent latency and errors, and its requests in flight.
    pub fn pool_snapshot(&self, pool: &str, now: Instant) -> Option<(PoolSnapshot, u32)> {
        self.inner
            .pools
            .get(pool)
            .map(|p| (p.stats.snapshot(now), p.inflight()))
    }

    /// The factor by which a room's new-users-per-minute is multiplied now: in
    /// `[min_factor, 1]` for rooms with `[rooms.origin_aware]`, 1 for others. Steps the
    /// room's controller (call it from the room tick) and sets the metric.
    pub fn origin_factor(&self, room: &str, now: Instant) -> f64 {
        let Some(h) = self.inner.rooms.get(room) else {
            return 1.0;
        };
        let f = h.factor(now);
        self.inner
            .metrics
            .origin_factor
            .with_label_values(&[room])
            .set(f);
        f
    }

    /// Removes stored responses (admin API); returns how many objects went. Fetches in
    /// flight when the purge happens do not store their response.
    pub fn purge(&self, p: &Purge) -> u64 {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        let n = self.inner.store.purge(p);
        self.inner.uncacheable.invalidate_all();
        self.inner.stored();
        n
    }

    /// Weighted size of the cache in bytes (after applying moka's pending evictions).
    pub fn cache_bytes(&self) -> u64 {
        self.inner.store.sync();
        self.inner.store.weighted_size()
    }

    /// Stored objects (variants and `Vary` records).
    pub fn cache_entries(&self) -> u64 {
        self.inner.store.sync();
        self.inner.store.entry_count()
    }

    /// Fetches in flight (coalescing slots): 0 when idle.
    pub fn fills_in_flight(&self) -> usize {
        self.inner.fills.lock().len()
    }

    /// A waiter on the fetch of `store_key` in flight, if any (tests, diagnostics).
    pub fn watch_fill(&self, store_key: &str) -> Option<Waiter> {
        let mut map = self.inner.fills.lock();
        if !map.contains_key(store_key) {
            return None;
        }
        register(&mut map, store_key).err().flatten()
    }
}
