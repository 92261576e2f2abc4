//! A circuit breaker in front of a store, so that a dead Redis costs requests nothing.
//!
//! - **closed**: calls go through; [`BreakerConfig::threshold`] transport failures in a row
//!   (`StoreError::Unavailable`) open it;
//! - **open**: calls fail at once with `Unavailable`, for a backoff that starts at
//!   [`BreakerConfig::min_open`] and doubles on each failed probe up to
//!   [`BreakerConfig::max_open`];
//! - **half-open**: after the backoff, the next call is let through as a probe (the others still
//!   fail at once); success closes the breaker, failure opens it again.
//!
//! The probe first replaces the store's connection with a fresh one ([`Reconnect`]): the old
//! one may be dead (Redis restarted) and would fail the probe once more, costing a whole
//! backoff. The backoff is short ([`BreakerConfig::max_open`] is 500 ms) because a probe costs
//! Redis one connection and a `PING` per node: calls resume within about a second of Redis
//! answering again (measured in `proxy/tests/chaos/store.rs`).
//!
//! A probe that never reports (its request was dropped) is forgotten after
//! [`BreakerConfig::probe_timeout`], and another call probes. Answers that Redis gave but we
//! could not use (`StoreError::Protocol`) prove Redis alive: they count as successes.
//!
//! Every change of mode logs one line and is counted in `flashgate_store_mode_changes_total`;
//! `flashgate_store_degraded` is 1 while the breaker is not closed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use waitroom::state::{ControllerState, Overrides, RoomSnapshot};
use waitroom::store::{
    CheckIn, ClaimOutcome, ClaimRequest, HighWater, Store, StoreError, StoreResult,
};
use waitroom::UnixMillis;

use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    pub threshold: u32,
    pub min_open: Duration,
    pub max_open: Duration,
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            threshold: 3,
            min_open: Duration::from_millis(250),
            max_open: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(3),
        }
    }
}

/// A store whose connection can be replaced by a fresh one: the breaker's probe does so before
/// its call.
#[async_trait]
pub trait Reconnect {
    /// Opens a new connection and checks that it answers; later calls use it. An error leaves
    /// the store as it was.
    async fn reconnect(&self) -> StoreResult<()>;
}

/// The breaker's mode (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Closed,
    Open,
    HalfOpen,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open => "open",
            Mode::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, backoff: Duration },
    HalfOpen { since: Instant, backoff: Duration },
}

/// A [`Store`] wrapped in a circuit breaker.
#[derive(Debug)]
pub struct Breaker<S> {
    inner: S,
    cfg: BreakerConfig,
    state: Mutex<State>,
    metrics: Option<Arc<Metrics>>,
}

/// What a call may do.
enum Permit {
    Go,
    /// This call is the half-open probe.
    Probe,
}

impl<S: Store + Reconnect> Breaker<S> {
    pub fn new(inner: S, cfg: BreakerConfig, metrics: Option<Arc<Metrics>>) -> Self {
        if let Some(m) = &metrics {
            m.store_degraded.set(0);
        }
        Self {
            inner,
            cfg,
            state: Mutex::new(State::Closed { failures: 0 }),
            metrics,
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn mode(&self) -> Mode {
        match *self.state.lock() {
            State::Closed { .. } => Mode::Closed,
            State::Open { .. } => Mode::Open,
            State::HalfOpen { .. } => Mode::HalfOpen,
        }
    }

    fn changed(&self, to: Mode, why: &str) {
        match to {
            Mode::Closed => tracing::info!(mode = to.as_str(), "store circuit closed: {why}"),
            Mode::Open | Mode::HalfOpen => {
                tracing::warn!(mode = to.as_str(), "store circuit {}: {why}", to.as_str())
            }
        }
        if let Some(m) = &self.metrics {
            m.store_mode_changes.with_label_values(&[to.as_str()]).inc();
            m.store_degraded.set(i64::from(to != Mode::Closed));
        }
    }

    fn admit(&self) -> Result<Permit, StoreError> {
        let now = Instant::now();
        let mut st = self.state.lock();
        match *st {
            State::Closed { .. } => Ok(Permit::Go),
            State::Open { until, backoff } if now >= until => {
                *st = State::HalfOpen {
                    since: now,
                    backoff,
                };
                drop(st);
                self.changed(Mode::HalfOpen, "probing the store");
                Ok(Permit::Probe)
            }
            State::HalfOpen { since, backoff }
                if now.duration_since(since) >= self.cfg.probe_timeout =>
            {
                // The last probe never reported (dropped): probe again.
                *st = State::HalfOpen {
                    since: now,
                    backoff,
                };
                Ok(Permit::Probe)
            }
            State::Open { .. } | State::HalfOpen { .. } => Err(StoreError::Unavailable(
                "store circuit open: failing fast".into(),
            )),
        }
    }

    fn report(&self, permit: Permit, ok: bool, err: Option<&StoreError>) {
        let mut st = self.state.lock();
        let change = match (&mut *st, permit, ok) {
            (State::Closed { failures }, Permit::Go, true) => {
                *failures = 0;
                None
            }
            (State::Closed { failures }, Permit::Go, false) => {
                *failures += 1;
                if *failures >= self.cfg.threshold {
                    let backoff = self.cfg.min_open;
                    *st = State::Open {
                        until: Instant::now() + backoff,
                        backoff,
                    };
                    Some(Mode::Open)
                } else {
                    None
                }
            }
            (State::HalfOpen { .. }, Permit::Probe, true) => {
                *st = State::Closed { failures: 0 };
                Some(Mode::Closed)
            }
            (State::HalfOpen { backoff, .. }, Permit::Probe, false) => {
                let backoff = (*backoff * 2).min(self.cfg.max_open);
                *st = State::Open {
                    until: Instant::now() + backoff,
                    backoff,
                };
                Some(Mode::Open)
            }
            // A late answer to a call let through in another mode: the current mode stands,
            // except that any success proves the store reachable.
            (State::Open { .. } | State::HalfOpen { .. }, _, true) => {
                *st = State::Closed { failures: 0 };
                Some(Mode::Closed)
            }
            (_, _, _) => None,
        };
        drop(st);
        if let Some(m) = change {
            let why = match (m, err) {
                (Mode::Closed, _) => "the store answered".to_owned(),
                (_, Some(e)) => e.to_string(),
                (_, None) => String::new(),
            };
            self.changed(m, &why);
        }
    }

    async fn run<T, F>(&self, f: impl FnOnce() -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let permit = self.admit()?;
        if let Permit::Probe = permit {
            if let Err(e) = self.inner.reconnect().await {
                self.report(permit, false, Some(&e));
                return Err(e);
            }
        }
        let r = f().await;
        match &r {
            Err(e @ StoreError::Unavailable(_)) => self.report(permit, false, Some(e)),
            Ok(_) | Err(StoreError::Protocol(_)) => self.report(permit, true, None),
        }
        r
    }
}

#[async_trait]
impl<S: Store + Reconnect> Store for Breaker<S> {
    async fn issue(&self, room: &str, count: u64) -> StoreResult<u64> {
        self.run(|| self.inner.issue(room, count)).await
    }

    async fn snapshot(&self, room: &str, now: UnixMillis) -> StoreResult<RoomSnapshot> {
        self.run(|| self.inner.snapshot(room, now)).await
    }

    async fn commit(&self, room: &str, expected: u64, next: &ControllerState) -> StoreResult<bool> {
        self.run(|| self.inner.commit(room, expected, next)).await
    }

    async fn claim(&self, room: &str, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
        self.run(|| self.inner.claim(room, req)).await
    }

    async fn check_in(&self, room: &str, ticket: u64, from: u32, to: u32) -> StoreResult<CheckIn> {
        self.run(|| self.inner.check_in(room, ticket, from, to))
            .await
    }

    async fn release(&self, room: &str, ticket: u64, minute: Option<u32>) -> StoreResult<()> {
        self.run(|| self.inner.release(room, ticket, minute)).await
    }

    async fn set_overrides(&self, room: &str, overrides: &Overrides) -> StoreResult<()> {
        self.run(|| self.inner.set_overrides(room, overrides)).await
    }

    async fn reseed(&self, room: &str, marks: &HighWater) -> StoreResult<()> {
        self.run(|| self.inner.reseed(room, marks)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use waitroom::MemoryStore;

    use super::*;

    /// A memory store that can be switched off.
    #[derive(Debug, Default)]
    struct Flaky {
        inner: MemoryStore,
        down: AtomicBool,
        calls: AtomicU32,
        reconnects: AtomicU32,
    }

    #[async_trait]
    impl Reconnect for Flaky {
        async fn reconnect(&self) -> StoreResult<()> {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
            self.check()
        }
    }

    impl Flaky {
        fn check(&self) -> Result<(), StoreError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.down.load(Ordering::Relaxed) {
                Err(StoreError::Unavailable("down".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl Store for Flaky {
        async fn issue(&self, room: &str, count: u64) -> StoreResult<u64> {
            self.check()?;
            self.inner.issue(room, count).await
        }
        async fn snapshot(&self, room: &str, now: UnixMillis) -> StoreResult<RoomSnapshot> {
            self.check()?;
            self.inner.snapshot(room, now).await
        }
        async fn commit(&self, r: &str, e: u64, n: &ControllerState) -> StoreResult<bool> {
            self.check()?;
            self.inner.commit(r, e, n).await
        }
        async fn claim(&self, r: &str, q: &ClaimRequest) -> StoreResult<ClaimOutcome> {
            self.check()?;
            self.inner.claim(r, q).await
        }
        async fn check_in(&self, r: &str, t: u64, f: u32, to: u32) -> StoreResult<CheckIn> {
            self.check()?;
            self.inner.check_in(r, t, f, to).await
        }
        async fn release(&self, r: &str, t: u64, m: Option<u32>) -> StoreResult<()> {
            self.check()?;
            self.inner.release(r, t, m).await
        }
        async fn set_overrides(&self, r: &str, o: &Overrides) -> StoreResult<()> {
            self.check()?;
            self.inner.set_overrides(r, o).await
        }
        async fn reseed(&self, r: &str, m: &HighWater) -> StoreResult<()> {
            self.check()?;
            self.inner.reseed(r, m).await
        }
    }

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            threshold: 3,
            min_open: Duration::from_millis(30),
            max_open: Duration::from_millis(100),
            probe_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn opens_fails_fast_probes_and_closes() {
        let metrics = Arc::new(Metrics::new());
        let b = Breaker::new(Flaky::default(), cfg(), Some(metrics.clone()));
        assert_eq!(b.issue("r", 1).await, Ok(1));
        b.inner().down.store(true, Ordering::Relaxed);
        for _ in 0..3 {
            assert!(b.issue("r", 1).await.is_err());
        }
        assert_eq!(b.mode(), Mode::Open);
        assert_eq!(metrics.store_degraded.get(), 1);
        // Open: no call reaches the store.
        let before = b.inner().calls.load(Ordering::Relaxed);
        for _ in 0..100 {
            assert!(matches!(
                b.issue("r", 1).await,
                Err(StoreError::Unavailable(m)) if m.contains("circuit open")
            ));
        }
        assert_eq!(b.inner().calls.load(Ordering::Relaxed), before);
        // After the backoff one probe goes through; it fails: open again, longer.
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.inner().calls.load(Ordering::Relaxed) == before {
            assert!(Instant::now() < deadline, "no probe");
            let _ = b.issue("r", 1).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(b.mode(), Mode::Open);
        // The store comes back: the next probe closes the breaker.
        b.inner().down.store(false, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.issue("r", 1).await.is_err() {
            assert!(Instant::now() < deadline, "never closed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(b.mode(), Mode::Closed);
        assert_eq!(metrics.store_degraded.get(), 0);
        // Each probe reconnected first; calls while closed never do.
        assert_eq!(b.inner().reconnects.load(Ordering::Relaxed), 2);
        assert_eq!(b.issue("r", 1).await.map(|_| ()), Ok(()));
        assert_eq!(b.inner().reconnects.load(Ordering::Relaxed), 2);
        let changes = |m: &str| metrics.store_mode_changes.with_label_values(&[m]).get();
        assert_eq!(changes("open"), 2);
        assert_eq!(changes("half_open"), 2);
        assert_eq!(changes("closed"), 1);
    }

    #[tokio::test]
    async fn protocol_errors_do_not_open_it() {
        #[derive(Debug, Default)]
        struct Garbled(MemoryStore);
        #[async_trait]
        impl Store for Garbled {
            async fn issue(&self, _: &str, _: u64) -> StoreResult<u64> {
                Err(StoreError::Protocol("garbled".into()))
            }
            async fn snapshot(&self, r: &str, n: UnixMillis) -> StoreResult<RoomSnapshot> {
                self.0.snapshot(r, n).await
            }
            async fn commit(&self, r: &str, e: u64, n: &ControllerState) -> StoreResult<bool> {
                self.0.commit(r, e, n).await
            }
            async fn claim(&self, r: &str, q: &ClaimRequest) -> StoreResult<ClaimOutcome> {
                self.0.claim(r, q).await
            }
            async fn check_in(&self, r: &str, t: u64, f: u32, to: u32) -> StoreResult<CheckIn> {
                self.0.check_in(r, t, f, to).await
            }
            async fn release(&self, r: &str, t: u64, m: Option<u32>) -> StoreResult<()> {
                self.0.release(r, t, m).await
            }
            async fn set_overrides(&self, r: &str, o: &Overrides) -> StoreResult<()> {
                self.0.set_overrides(r, o).await
            }
            async fn reseed(&self, r: &str, m: &HighWater) -> StoreResult<()> {
                self.0.reseed(r, m).await
            }
        }
        #[async_trait]
        impl Reconnect for Garbled {
            async fn reconnect(&self) -> StoreResult<()> {
                Ok(())
            }
        }
        let b = Breaker::new(Garbled::default(), cfg(), None);
        for _ in 0..10 {
            assert!(matches!(
                b.issue("r", 1).await,
                Err(StoreError::Protocol(_))
            ));
        }
        assert_eq!(b.mode(), Mode::Closed);
    }
}
