//! Origin-aware admission: a per-room factor in `[min_factor, 1]` by which the room's
//! configured new-users-per-minute is multiplied.
//!
//! AIMD, one step per second (steps missed while nobody asked are applied together, at most
//! [`MAX_CATCH_UP`]):
//! - **degraded** (p95 latency above `latency_target`, or error share above `error_target`,
//!   over the room's pools' last 5–10 s): `factor ← max(min_factor, factor × 0.75)`;
//! - **healthy** (or too few samples to tell): `factor ← min(1, factor + 0.05)`.
//!
//! So a sustained problem takes the rate from 1 to 0.25 in 5 s, and a recovered origin gets it
//! back from 0.25 to 1 in 15 s once its window has cleared (up to 10 s later). Decreasing fast
//! and increasing slowly is what keeps a struggling origin from being pushed over again the
//! moment it answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::latency::{PoolSnapshot, MIN_SAMPLES};
use super::settings::OriginAware;
use super::shed::PoolState;

pub const STEP: Duration = Duration::from_secs(1);
pub const DECREASE: f64 = 0.75;
pub const INCREASE: f64 = 0.05;
pub const MAX_CATCH_UP: u32 = 30;

/// What the pools said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Healthy,
    Degraded,
    /// Too few samples: treated as healthy (nothing says the origin is struggling).
    NoData,
}

/// Reads the pools' snapshots: degraded if any pool is.
pub fn assess(pools: &[PoolSnapshot], cfg: &OriginAware) -> Signal {
    let mut signal = Signal::NoData;
    for s in pools {
        if s.samples < MIN_SAMPLES {
            continue;
        }
        let slow = s.p95.is_some_and(|p| p > cfg.latency_target);
        if slow || s.error_rate() > cfg.error_target {
            return Signal::Degraded;
        }
        signal = Signal::Healthy;
    }
    signal
}

/// One AIMD step.
pub fn next_factor(factor: f64, signal: Signal, cfg: &OriginAware) -> f64 {
    match signal {
        Signal::Degraded => (factor * DECREASE).max(cfg.min_factor),
        Signal::Healthy | Signal::NoData => (factor + INCREASE).min(1.0),
    }
}

#[derive(Debug)]
struct State {
    factor: f64,
    last_step: Instant,
}

/// The controller of one room.
#[derive(Debug)]
pub struct OriginHealth {
    cfg: OriginAware,
    pools: Vec<Arc<PoolState>>,
    state: Mutex<State>,
}

impl OriginHealth {
    pub fn new(cfg: OriginAware, pools: Vec<Arc<PoolState>>, now: Instant) -> Self {
        Self {
            cfg,
            pools,
            state: Mutex::new(State {
                factor: 1.0,
                last_step: now,
            }),
        }
    }

    /// The factor now, stepping the controller for every whole second since the last step.
    pub fn factor(&self, now: Instant) -> f64 {
        let mut st = self.state.lock();
        let elapsed = now.saturating_duration_since(st.last_step);
        let steps = (elapsed.as_millis() / STEP.as_millis()) as u32;
        if steps == 0 {
            return st.factor;
        }
        st.last_step += STEP * steps;
        let snaps: Vec<PoolSnapshot> = self.pools.iter().map(|p| p.stats.snapshot(now)).collect();
        let signal = assess(&snaps, &self.cfg);
        for _ in 0..steps.min(MAX_CATCH_UP) {
            st.factor = next_factor(st.factor, signal, &self.cfg);
        }
        st.factor
    }

    pub fn pools(&self) -> impl Iterator<Item = &str> {
        self.pools.iter().map(|p| p.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shield::settings::PoolShield;

    fn cfg() -> OriginAware {
        OriginAware {
            min_factor: 0.25,
            latency_target: Duration::from_millis(300),
            error_target: 0.02,
        }
    }

    fn snap(samples: u32, errors: u32, p95_ms: u64) -> PoolSnapshot {
        PoolSnapshot {
            samples,
            errors,
            p95: Some(Duration::from_millis(p95_ms)),
        }
    }

    #[test]
    fn assessment() {
        let c = cfg();
        assert_eq!(assess(&[], &c), Signal::NoData);
        assert_eq!(assess(&[snap(5, 5, 9000)], &c), Signal::NoData, "too few");
        assert_eq!(assess(&[snap(100, 1, 100)], &c), Signal::Healthy);
        assert_eq!(
            assess(&[snap(100, 3, 100)], &c),
            Signal::Degraded,
            "3 % errors"
        );
        assert_eq!(assess(&[snap(100, 0, 400)], &c), Signal::Degraded, "slow");
        assert_eq!(
            assess(&[snap(100, 0, 100), snap(100, 0, 900)], &c),
            Signal::Degraded,
            "any pool"
        );
    }

    #[test]
    fn aimd_steps_stay_in_bounds() {
        let c = cfg();
        let mut f = 1.0;
        let mut seen = vec![f];
        for _ in 0..10 {
            f = next_factor(f, Signal::Degraded, &c);
            seen.push(f);
        }
        assert!((seen[1] - 0.75).abs() < 1e-9);
        assert!((f - 0.25).abs() < 1e-9, "floored at min_factor");
        assert!(seen.windows(2).all(|w| w[1] <= w[0]));
        let mut steps = 0;
        while f < 1.0 {
            f = next_factor(f, Signal::Healthy, &c);
            steps += 1;
        }
        assert_eq!(steps, 15, "0.25 → 1 in 15 healthy steps");
        assert_eq!(f, 1.0);
        assert_eq!(next_factor(1.0, Signal::NoData, &c), 1.0);
    }

    /// Synthetic samples through the real pool statistics: the factor falls while the origin
    /// is slow and erroring, and recovers gradually once it is well again.
    #[test]
    fn controller_follows_the_origin() {
        let t0 = Instant::now();
        let pool = Arc::new(PoolState::new("shop", &PoolShield::default(), t0));
        let h = OriginHealth::new(cfg(), vec![pool.clone()], t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let feed = |now: Instant, ms: u64, ok: bool| {
            for _ in 0..50 {
                pool.stats.record(now, Duration::from_millis(ms), ok);
            }
        };
        // Healthy: stays at 1.
        for s in 0..5 {
            feed(at(s), 50, true);
            assert_eq!(h.factor(at(s + 1)), 1.0);
        }
        // Degraded (2 s latency) for 6 s: falls to the floor and never below.
        let mut last = 1.0;
        for s in 5..11 {
            feed(at(s), 2000, true);
            let f = h.factor(at(s + 1));
            assert!(f < last || f == 0.25, "falls: {f} after {last}");
            assert!(f >= 0.25);
            last = f;
        }
        assert_eq!(last, 0.25);
        // Errors alone also count.
        feed(at(11), 50, false);
        assert_eq!(h.factor(at(12)), 0.25);
        // Recovered: the slow samples age out of the 5–10 s window, then +0.05 a second.
        let mut s = 12;
        let mut f = 0.25;
        while f < 1.0 {
            feed(at(s), 50, true);
            let next = h.factor(at(s + 1));
            assert!(next >= f, "never falls while healthy");
            assert!(next - f <= INCREASE + 1e-9, "gradual");
            f = next;
            s += 1;
            assert!(s < 60, "recovers within a minute");
        }
        // Nobody asked for 30 s: the missed healthy steps are applied at once.
        assert_eq!(h.factor(at(s + 30)), 1.0);
    }
}
