//! Storage adapters: the Redis store a fleet shares, and the layers in front of it.
//!
//! A Redis-backed node stacks, from the gate inwards:
//! [`BatchingStore`] (one `INCRBY` numbers the arrivals of a few ms) →
//! [`Breaker`] (a dead Redis fails at once instead of costing a timeout per request) →
//! [`RedisStore`] (one Lua script per state change, on one Cluster slot per room) →
//! [`connect`] (one Redis, a Cluster or a Sentinel's master, plain or TLS; a fresh connection
//! for each of the breaker's probes).
//!
//! The single-node default is `waitroom::MemoryStore`, used directly. See `docs/redis.md` for
//! running a fleet, the key layout, and what a Redis failure costs.

/// `impl Store for TYPE`: `issue` by the type's own method, every other call passed to
/// `self.inner` unchanged — a layer that only numbers tickets differently (the batching layer,
/// and test stores that count calls). The calling module imports the store's types.
macro_rules! store_layer {
    (impl $([$($gen:tt)*])? Store for $ty:ty { issue: $issue:ident }) => {
        #[async_trait::async_trait]
        impl $(<$($gen)*>)? waitroom::Store for $ty {
            async fn issue(&self, room: &str, count: u64) -> StoreResult<u64> {
                self.$issue(room, count).await
            }
            async fn snapshot(&self, room: &str, now: UnixMillis) -> StoreResult<RoomSnapshot> {
                self.inner.snapshot(room, now).await
            }
            async fn commit(&self, room: &str, expected: u64, next: &ControllerState) -> StoreResult<bool> {
                self.inner.commit(room, expected, next).await
            }
            async fn claim(&self, room: &str, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
                self.inner.claim(room, req).await
            }
            async fn check_in(&self, room: &str, ticket: u64, from: u32, to: u32) -> StoreResult<CheckIn> {
                self.inner.check_in(room, ticket, from, to).await
            }
            async fn release(&self, room: &str, ticket: u64, minute: Option<u32>) -> StoreResult<()> {
                self.inner.release(room, ticket, minute).await
            }
            async fn set_overrides(&self, room: &str, overrides: &Overrides) -> StoreResult<()> {
                self.inner.set_overrides(room, overrides).await
            }
            async fn reseed(&self, room: &str, marks: &HighWater) -> StoreResult<()> {
                self.inner.reseed(room, marks).await
            }
        }
    };
}

pub mod batch;
pub mod breaker;
pub mod codec;
pub mod connect;
pub mod local;
pub mod lua;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use waitroom::Store;

pub use self::batch::BatchingStore;

/// The store's Redis URL makes no client (the message names `store.url`).
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("store.url: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("store.url: {0}")]
    Sentinel(#[from] connect::BadSentinelUrl),
}
pub use self::breaker::{Breaker, BreakerConfig};
pub use self::connect::{ClientIdentity, RedisTls};
pub use self::redis::RedisStore;
use crate::metrics::Metrics;

/// The full Redis stack for `url`: batching → breaker → Redis. Makes no connection (the first
/// call does, inside the runtime that makes it).
pub fn redis_stack(
    url: &str,
    cluster: bool,
    tls: Option<&RedisTls>,
    batch_window: Duration,
    metrics: Option<Arc<Metrics>>,
) -> Result<Arc<dyn Store>, UrlError> {
    let redis = RedisStore::with_tls(url, cluster, tls)?;
    let breaker = Arc::new(Breaker::new(redis, BreakerConfig::default(), metrics));
    Ok(Arc::new(BatchingStore::new(breaker, batch_window)))
}
