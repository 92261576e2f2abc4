//! Recent latency and error share of one origin pool: a lock-free histogram over two rotating
//! windows, read as "the last 5 to 10 seconds".
//!
//! Approximate by design: p95 is the upper bound of the bucket holding the 95th percentile
//! (buckets grow by 2^¼ ≈ 19 %, so it overestimates by less than 19 %), and a sample that races
//! with a window rotation may be lost. Both are fine for shedding and admission decisions.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Length of one window; statistics cover the current and the previous one.
pub const WINDOW: Duration = Duration::from_secs(5);

/// Fewer samples than this and the p95 is not trusted (`None`).
pub const MIN_SAMPLES: u32 = 10;

const BUCKETS: usize = 76;
/// Upper bound of bucket 0, in microseconds; bucket `i` ends at `BASE_US · 2^(i/4)`.
const BASE_US: f64 = 250.0;

fn bucket_of(latency: Duration) -> usize {
    let us = latency.as_micros() as f64;
    if us <= BASE_US {
        return 0;
    }
    let i = (4.0 * (us / BASE_US).log2()).ceil();
    (i as usize).min(BUCKETS - 1)
}

fn bucket_bound(i: usize) -> Duration {
    Duration::from_micros((BASE_US * 2f64.powf(i as f64 / 4.0)) as u64)
}

#[derive(Debug)]
struct Window {
    /// Which window number these counts belong to (`u64::MAX`: never used).
    epoch: AtomicU64,
    counts: [AtomicU32; BUCKETS],
    errors: AtomicU32,
    total: AtomicU32,
}

impl Window {
    fn new() -> Self {
        Self {
            epoch: AtomicU64::new(u64::MAX),
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
            errors: AtomicU32::new(0),
            total: AtomicU32::new(0),
        }
    }
}

/// What a pool looked like recently.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolSnapshot {
    pub samples: u32,
    pub errors: u32,
    /// `None` below [`MIN_SAMPLES`].
    pub p95: Option<Duration>,
}

impl PoolSnapshot {
    /// Errors / samples (0 without samples).
    pub fn error_rate(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            f64::from(self.errors) / f64::from(self.samples)
        }
    }
}

/// Latency and errors of one pool.
#[derive(Debug)]
pub struct PoolStats {
    origin: Instant,
    windows: [Window; 2],
}

impl PoolStats {
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            windows: [Window::new(), Window::new()],
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_millis() / WINDOW.as_millis()) as u64
    }

    /// One origin exchange: time to the response header (or to the failure), and whether it
    /// failed (5xx, timeout, refused).
    pub fn record(&self, now: Instant, latency: Duration, ok: bool) {
        let epoch = self.epoch(now);
        let w = &self.windows[(epoch % 2) as usize];
        let seen = w.epoch.load(Ordering::Acquire);
        if seen != epoch
            && w.epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for c in &w.counts {
                c.store(0, Ordering::Relaxed);
            }
            w.errors.store(0, Ordering::Relaxed);
            w.total.store(0, Ordering::Relaxed);
        }
        w.counts[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
        w.total.fetch_add(1, Ordering::Relaxed);
        if !ok {
            w.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self, now: Instant) -> PoolSnapshot {
        let epoch = self.epoch(now);
        let mut counts = [0u32; BUCKETS];
        let (mut samples, mut errors) = (0u32, 0u32);
        for w in &self.windows {
            let e = w.epoch.load(Ordering::Acquire);
            if e != epoch && e.checked_add(1) != Some(epoch) {
                continue;
            }
            for (sum, c) in counts.iter_mut().zip(&w.counts) {
                *sum = sum.saturating_add(c.load(Ordering::Relaxed));
            }
            samples = samples.saturating_add(w.total.load(Ordering::Relaxed));
            errors = errors.saturating_add(w.errors.load(Ordering::Relaxed));
        }
        let p95 = (samples >= MIN_SAMPLES).then(|| {
            let rank = (u64::from(samples) * 95).div_ceil(100);
            let mut seen = 0u64;
            for (i, c) in counts.iter().enumerate() {
                seen += u64::from(*c);
                if seen >= rank {
                    return bucket_bound(i);
                }
            }
            bucket_bound(BUCKETS - 1)
        });
        PoolSnapshot {
            samples,
            errors,
            p95,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn buckets_are_monotonic_and_tight() {
        for us in [
            1u64,
            250,
            251,
            1_000,
            9_999,
            300_000,
            2_000_000,
            100_000_000,
        ] {
            let d = Duration::from_micros(us);
            let b = bucket_of(d);
            assert!(bucket_bound(b) >= d || b == BUCKETS - 1, "{us}");
            if b > 0 && b < BUCKETS - 1 {
                assert!(bucket_bound(b - 1) < d, "{us}");
                assert!(bucket_bound(b).as_secs_f64() <= d.as_secs_f64() * 1.19 + 1e-6);
            }
        }
    }

    #[test]
    fn p95_and_error_rate() {
        let t0 = Instant::now();
        let s = PoolStats::new(t0);
        assert_eq!(s.snapshot(t0).p95, None);
        for i in 0..100u64 {
            // 94 fast, 6 slow: p95 is slow.
            let lat = if i < 94 { ms(10) } else { ms(800) };
            s.record(t0, lat, i % 10 != 0);
        }
        let snap = s.snapshot(t0);
        assert_eq!(snap.samples, 100);
        assert_eq!(snap.errors, 10);
        assert!((snap.error_rate() - 0.1).abs() < 1e-9);
        let p95 = snap.p95.expect("enough samples");
        assert!(p95 >= ms(800) && p95 < ms(960), "{p95:?}");

        // 96 fast: p95 is fast.
        let s = PoolStats::new(t0);
        for i in 0..100u64 {
            s.record(t0, if i < 96 { ms(10) } else { ms(800) }, true);
        }
        let p95 = s.snapshot(t0).p95.expect("enough samples");
        assert!(p95 >= ms(10) && p95 < ms(12), "{p95:?}");
    }

    #[test]
    fn old_windows_are_forgotten() {
        let t0 = Instant::now();
        let s = PoolStats::new(t0);
        for _ in 0..20 {
            s.record(t0, ms(900), false);
        }
        // Still counted in the next window...
        assert_eq!(s.snapshot(t0 + WINDOW).samples, 20);
        // ...gone after two.
        assert_eq!(s.snapshot(t0 + WINDOW * 2).samples, 0);
        // New samples replace the old window's counts.
        for _ in 0..12 {
            s.record(t0 + WINDOW * 2, ms(5), true);
        }
        let snap = s.snapshot(t0 + WINDOW * 2);
        assert_eq!((snap.samples, snap.errors), (12, 0));
        assert!(snap.p95.expect("samples") < ms(6));
    }
}
