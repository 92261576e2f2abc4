//! Single use of solved challenges.
//!
//! A challenge is stateless until it is solved; then its id (the nonce) must be remembered
//! until the challenge expires, so the same solution cannot be redeemed twice. After expiry
//! the challenge itself is refused, so the id can be forgotten: memory is bounded by
//! (solutions per second × challenge TTL), and a hard cap on top.
//!
//! [`MemoryReplay`] is one node's memory: a solution replayed against *another* node is not
//! caught by it. A fleet on Redis uses [`super::fleet::RedisShared`] instead (one
//! `SET … NX PX` per redemption; a Redis error is `Err(ReplayError::Store)`, and the gate
//! answers 503 so the shopper's page retries). The node installs it when the store is Redis.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use async_trait::async_trait;
use parking_lot::Mutex;
use waitroom::UnixMillis;

use super::challenge::ChallengeId;

/// Why an id could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The hard cap is reached with nothing expired to drop. Refusing (fail closed) keeps
    /// solutions single-use; the page retries after a moment.
    #[error("replay cache is full")]
    Full,
    /// A shared store did not answer.
    #[error("replay store error")]
    Store,
}

/// Records redeemed challenge ids. Implementations must be atomic per id: of two concurrent
/// calls with one id, exactly one gets `Ok(true)`.
#[async_trait]
pub trait ReplayGuard: Send + Sync + fmt::Debug {
    /// Marks `id` (of `room`) used until `expires_at`. `Ok(true)` the first time, `Ok(false)`
    /// for a replay.
    async fn first_use(
        &self,
        room: &str,
        id: &ChallengeId,
        expires_at: UnixMillis,
        now: UnixMillis,
    ) -> Result<bool, ReplayError>;
}

/// Width of one time bucket.
const BUCKET_MS: u64 = 10_000;

/// This node's replay memory: ids grouped in 10-second buckets by expiry time; a bucket is
/// dropped whole once its last challenge has expired. At most `cap` ids are held.
#[derive(Debug)]
pub struct MemoryReplay {
    inner: Mutex<Buckets>,
    cap: usize,
}

#[derive(Debug, Default)]
struct Buckets {
    by_expiry: BTreeMap<u64, HashSet<u128>>,
    len: usize,
}

impl MemoryReplay {
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Buckets::default()),
            cap: cap.max(1),
        }
    }

    /// Ids currently held.
    pub fn len(&self) -> usize {
        self.inner.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The synchronous core of [`ReplayGuard::first_use`]. The room is not needed: ids are
    /// random 128-bit nonces, unique across rooms.
    pub fn insert(
        &self,
        id: &ChallengeId,
        expires_at: UnixMillis,
        now: UnixMillis,
    ) -> Result<bool, ReplayError> {
        let id = u128::from_be_bytes(*id);
        let bucket = expires_at.0 / BUCKET_MS;
        let mut b = self.inner.lock();
        if b.by_expiry.get(&bucket).is_some_and(|s| s.contains(&id)) {
            return Ok(false);
        }
        if b.len >= self.cap {
            // Drop buckets whose every challenge has expired: (bucket + 1) * width <= now.
            let live_from = now.0 / BUCKET_MS;
            let kept = b.by_expiry.split_off(&live_from);
            let dropped: usize = b.by_expiry.values().map(HashSet::len).sum();
            b.by_expiry = kept;
            b.len -= dropped;
            if b.len >= self.cap {
                return Err(ReplayError::Full);
            }
        }
        b.by_expiry.entry(bucket).or_default().insert(id);
        b.len += 1;
        Ok(true)
    }

    /// Drops expired buckets (also done lazily when full).
    pub fn purge(&self, now: UnixMillis) {
        let mut b = self.inner.lock();
        let kept = b.by_expiry.split_off(&(now.0 / BUCKET_MS));
        let dropped: usize = b.by_expiry.values().map(HashSet::len).sum();
        b.by_expiry = kept;
        b.len -= dropped;
    }
}

#[async_trait]
impl ReplayGuard for MemoryReplay {
    async fn first_use(
        &self,
        _room: &str,
        id: &ChallengeId,
        expires_at: UnixMillis,
        now: UnixMillis,
    ) -> Result<bool, ReplayError> {
        self.insert(id, expires_at, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> ChallengeId {
        n.to_be_bytes()
    }

    #[test]
    fn second_use_is_a_replay() {
        let r = MemoryReplay::new(100);
        let t = UnixMillis(1_000_000);
        let exp = UnixMillis(1_120_000);
        assert_eq!(r.insert(&id(1), exp, t), Ok(true));
        assert_eq!(r.insert(&id(1), exp, t), Ok(false));
        assert_eq!(r.insert(&id(2), exp, t), Ok(true));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn memory_is_capped_and_expired_ids_make_room() {
        let r = MemoryReplay::new(1000);
        let t = UnixMillis(1_000_000);
        let exp = UnixMillis(1_120_000);
        for n in 0..1000 {
            assert_eq!(r.insert(&id(n), exp, t), Ok(true));
        }
        // Full with live ids: refuse rather than forget one.
        assert_eq!(r.insert(&id(5000), exp, t), Err(ReplayError::Full));
        assert_eq!(r.len(), r.capacity());
        // Still remembers every live one.
        assert_eq!(r.insert(&id(999), exp, t), Ok(false));
        // Once they have expired their bucket goes and there is room again.
        let later = UnixMillis(exp.0 + BUCKET_MS);
        assert_eq!(
            r.insert(&id(5000), UnixMillis(later.0 + 120_000), later),
            Ok(true)
        );
        assert_eq!(r.len(), 1);
        r.purge(UnixMillis(later.0 + 10 * 120_000));
        assert!(r.is_empty());
    }

    #[test]
    fn the_trait_is_the_same_memory() {
        let r = MemoryReplay::new(10);
        let t = UnixMillis(1_000_000);
        let exp = UnixMillis(1_060_000);
        let first = futures_now(r.first_use("drop", &id(7), exp, t));
        assert_eq!(first, Ok(true));
        assert_eq!(futures_now(r.first_use("drop", &id(7), exp, t)), Ok(false));
    }

    /// Polls a future that never waits (the memory guard is synchronous inside).
    pub(crate) fn futures_now<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(f)
    }
}
