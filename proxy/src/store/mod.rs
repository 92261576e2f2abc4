//! Storage adapters: the Redis store a fleet shares, and the layers in front of it.
//!
//! A Redis-backed node stacks, from the gate inwards:
//! [`BatchingStore`] (one `INCRBY` numbers the arrivals of a few ms) →
//! [`Breaker`] (a dead Redis fails at once instead of costing a timeout per request) →
//! [`RedisStore`] (one Lua script per state change, on one Cluster slot per room).
//!
//! The single-node default is `waitroom::MemoryStore`, used directly. See `docs/redis.md` for
//! running a fleet, the key layout, and what a Redis failure costs.

pub mod batch;
pub mod breaker;
pub mod codec;
pub mod local;
pub mod lua;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use waitroom::Store;

pub use self::batch::BatchingStore;
pub use self::breaker::{Breaker, BreakerConfig};
pub use self::redis::RedisStore;
use crate::metrics::Metrics;

/// The full Redis stack for `url`: batching → breaker → Redis. Makes no connection (the first
/// call does, inside the runtime that makes it).
pub fn redis_stack(
    url: &str,
    cluster: bool,
    batch_window: Duration,
    metrics: Option<Arc<Metrics>>,
) -> Result<Arc<dyn Store>, String> {
    let redis = RedisStore::new(url, cluster)?;
    let breaker = Arc::new(Breaker::new(redis, BreakerConfig::default(), metrics));
    Ok(Arc::new(BatchingStore::new(breaker, batch_window)))
}
