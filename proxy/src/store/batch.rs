//! Ticket-issue batching: the arrivals of a few milliseconds are numbered with one store call.
//!
//! The first `issue` for a room opens a batch and schedules its flush `window` later (in a task
//! of its own, so a dropped request cannot strand the others); issues arriving meanwhile join
//! the batch. The flush asks the store for the batch's total in one call (one `INCRBY` inside
//! the issue script) and hands the numbers out in arrival order. Arrivals during the flush's
//! round trip open the next batch. A store error fails the whole batch (each caller then
//! applies its room's `on_store_error` policy).
//!
//! Cost: up to `window` of extra latency for a new arrival (never for pass holders or polls);
//! gain: store calls per arrival fall from 1 to `1 / (arrivals per window)`. A zero window
//! turns batching off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use waitroom::state::{ControllerState, Overrides, RoomSnapshot};
use waitroom::store::{
    CheckIn, ClaimOutcome, ClaimRequest, HighWater, Store, StoreError, StoreResult,
};
use waitroom::UnixMillis;

type Reply = oneshot::Sender<Result<u64, StoreError>>;
type Pending = Arc<Mutex<HashMap<String, Vec<(u64, Reply)>>>>;

/// A [`Store`] whose `issue` calls are batched; everything else passes through.
#[derive(Debug)]
pub struct BatchingStore<S> {
    inner: Arc<S>,
    window: Duration,
    pending: Pending,
}

impl<S: Store> BatchingStore<S> {
    pub fn new(inner: Arc<S>, window: Duration) -> Self {
        Self {
            inner,
            window,
            pending: Arc::default(),
        }
    }

    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    async fn flush(inner: Arc<S>, pending: Pending, room: String, window: Duration) {
        tokio::time::sleep(window).await;
        let batch = pending.lock().remove(&room).unwrap_or_default();
        let total: u64 = batch.iter().map(|(n, _)| n).sum();
        match inner.issue(&room, total).await {
            Ok(first) => {
                let mut next = first;
                for (n, reply) in batch {
                    let _ = reply.send(Ok(next));
                    next += n;
                }
            }
            Err(e) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

store_layer!(impl [S: Store] Store for BatchingStore<S> { issue: batched_issue });

impl<S: Store> BatchingStore<S> {
    /// `issue` through the batch: the first arrival of a window opens it, and one call to the
    /// inner store numbers everyone who arrived in it.
    async fn batched_issue(&self, room: &str, count: u64) -> StoreResult<u64> {
        if self.window.is_zero() || count == 0 {
            return self.inner.issue(room, count).await;
        }
        let (tx, rx) = oneshot::channel();
        let opened = {
            let mut p = self.pending.lock();
            let batch = p.entry(room.to_owned()).or_default();
            batch.push((count, tx));
            batch.len() == 1
        };
        if opened {
            tokio::spawn(Self::flush(
                self.inner.clone(),
                self.pending.clone(),
                room.to_owned(),
                self.window,
            ));
        }
        rx.await
            .map_err(|_| StoreError::Unavailable("ticket batch was dropped".into()))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use waitroom::MemoryStore;

    use super::*;

    /// Counts issue calls.
    #[derive(Debug, Default)]
    struct Counting {
        inner: MemoryStore,
        issues: AtomicU64,
    }

    store_layer!(impl Store for Counting { issue: counted_issue });

    impl Counting {
        async fn counted_issue(&self, room: &str, count: u64) -> StoreResult<u64> {
            self.issues.fetch_add(1, Ordering::Relaxed);
            self.inner.issue(room, count).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_arrivals_share_calls_and_get_unique_numbers_in_order() {
        let store = Arc::new(BatchingStore::new(
            Arc::new(Counting::default()),
            Duration::from_millis(20),
        ));
        let n = 500u64;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let s = store.clone();
                let room = if i % 2 == 0 { "a" } else { "b" };
                tokio::spawn(async move { (room, s.issue(room, 1).await) })
            })
            .collect();
        let mut got: HashMap<&str, Vec<u64>> = HashMap::new();
        for t in tasks {
            let (room, r) = t.await.expect("task");
            got.entry(room).or_default().push(r.expect("issued"));
        }
        for (room, mut nums) in got {
            nums.sort_unstable();
            assert_eq!(nums, (1..=n / 2).collect::<Vec<_>>(), "room {room}");
        }
        let calls = store.inner().issues.load(Ordering::Relaxed);
        assert!(calls < n / 10, "{calls} issue calls for {n} arrivals");

        // In one task, sequential arrivals are numbered in arrival order.
        let a = store.issue("c", 1).await.expect("a");
        let b = store.issue("c", 3).await.expect("b");
        let c = store.issue("c", 1).await.expect("c");
        assert_eq!((a, b, c), (1, 2, 5));
    }

    #[tokio::test]
    async fn a_batch_is_numbered_in_arrival_order() {
        let store = BatchingStore::new(Arc::new(Counting::default()), Duration::from_millis(20));
        // Polled in this order within one window: one call, consecutive numbers in order.
        let (a, b, c) = tokio::join!(
            store.issue("r", 1),
            store.issue("r", 2),
            store.issue("r", 1)
        );
        assert_eq!((a, b, c), (Ok(1), Ok(2), Ok(4)));
        assert_eq!(store.inner().issues.load(Ordering::Relaxed), 1);
    }
}
