//! The pure rate-limit steps: GCRA (the generic cell rate algorithm, as in `governor`) and a
//! two-window rate meter. State is a number or two kept in a table slot; time is an argument
//! (microseconds since the epoch), so tests run on a fake clock and nothing sleeps.

use std::num::NonZeroU32;
use std::time::Duration;

/// Microseconds per minute.
const MINUTE_US: u64 = 60_000_000;

/// A GCRA limit: `burst` requests at once, then one per `interval`.
///
/// The state is the theoretical arrival time (TAT) of the next request. A request at `now` is
/// allowed when `max(tat, now) - now <= tolerance`, where `tolerance = interval * (burst - 1)`;
/// an allowed request moves the TAT on by one interval, a refused one leaves it alone (so a
/// client hammering a limit does not push its own retry time further out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    interval_us: u64,
    tolerance_us: u64,
}

impl Gcra {
    /// `n` per minute with a burst of `n` (a whole minute's quota may come at once).
    pub fn per_minute(n: NonZeroU32) -> Self {
        Self::new(MINUTE_US / u64::from(n.get()), n.get())
    }

    /// `n` per minute with a burst of one second's worth (at least one): a smooth rate, as
    /// the store-outage floor admits (`store::local::FloorBucket`).
    pub fn per_minute_smooth(n: NonZeroU32) -> Self {
        Self::new(MINUTE_US / u64::from(n.get()), (n.get() / 60).max(1))
    }

    /// `n` per `window` with a burst of `n`.
    pub fn per_window(n: NonZeroU32, window: Duration) -> Self {
        let us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        Self::new(us / u64::from(n.get()), n.get())
    }

    /// One request per `interval_us`, `burst` at once.
    pub fn new(interval_us: u64, burst: u32) -> Self {
        let interval_us = interval_us.max(1);
        Self {
            interval_us,
            tolerance_us: interval_us.saturating_mul(u64::from(burst.max(1)) - 1),
        }
    }

    /// One request at `now`: `Ok(new_tat)` when allowed, `Err(retry_after_us)` when not.
    pub fn step(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let tat = tat.max(now);
        let ahead = tat - now;
        if ahead > self.tolerance_us {
            Err(ahead - self.tolerance_us)
        } else {
            Ok(tat + self.interval_us)
        }
    }

    /// Applies a step to `tat` in place; returns the retry time when refused.
    pub fn apply(&self, tat: &mut u64, now: u64) -> Option<Duration> {
        match self.step(*tat, now) {
            Ok(next) => {
                *tat = next;
                None
            }
            Err(wait) => Some(Duration::from_micros(wait)),
        }
    }
}

/// Events per second over a sliding second: the previous whole second weighted by how much of
/// it still overlaps the window, plus the current second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowRate {
    second: u64,
    current: u32,
    previous: u32,
}

impl WindowRate {
    /// Counts one event at `now_us`.
    pub fn record(&mut self, now_us: u64) {
        self.roll(now_us);
        self.current = self.current.saturating_add(1);
    }

    /// The estimated rate at `now_us` (events per second).
    pub fn rate(&self, now_us: u64) -> f64 {
        let mut me = *self;
        me.roll(now_us);
        let into = (now_us % 1_000_000) as f64 / 1e6;
        f64::from(me.previous) * (1.0 - into) + f64::from(me.current)
    }

    fn roll(&mut self, now_us: u64) {
        let s = now_us / 1_000_000;
        if s == self.second {
            return;
        }
        self.previous = if s == self.second + 1 {
            self.current
        } else {
            0
        };
        self.current = 0;
        self.second = s;
    }

    /// When this meter carries no information any more.
    pub fn idle_at(&self) -> u64 {
        (self.second + 2) * 1_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn a_smooth_minute_rate_bursts_one_second_at_most() {
        let n = |n| NonZeroU32::new(n).expect("non-zero");
        let t0 = 1_000 * S;
        // 6 a minute: one every 10 s, no burst.
        let g = Gcra::per_minute_smooth(n(6));
        let mut tat = 0;
        assert_eq!(g.apply(&mut tat, t0), None);
        assert_eq!(g.apply(&mut tat, t0), Some(Duration::from_secs(10)));
        // 600 a minute: bursts of up to 10 (one second's worth).
        let g = Gcra::per_minute_smooth(n(600));
        let mut tat = 0;
        assert_eq!(
            (0..50).filter(|_| g.apply(&mut tat, t0).is_none()).count(),
            10
        );
    }

    #[test]
    fn a_minute_quota_then_one_per_interval() {
        let g = Gcra::per_minute(NonZeroU32::new(6).expect("non-zero"));
        let mut tat = 0;
        let t0 = 1_000 * S;
        for i in 0..6 {
            assert_eq!(g.apply(&mut tat, t0), None, "burst request {i}");
        }
        // The seventh waits one interval (10 s).
        assert_eq!(g.apply(&mut tat, t0), Some(Duration::from_secs(10)));
        // Refusals do not push the retry time out.
        assert_eq!(g.apply(&mut tat, t0 + 5 * S), Some(Duration::from_secs(5)));
        assert_eq!(g.apply(&mut tat, t0 + 10 * S), None);
        assert_eq!(
            g.apply(&mut tat, t0 + 10 * S),
            Some(Duration::from_secs(10))
        );
        // After a quiet minute the whole burst is back.
        let later = t0 + 120 * S;
        for _ in 0..6 {
            assert_eq!(g.apply(&mut tat, later), None);
        }
        assert!(g.apply(&mut tat, later).is_some());
    }

    #[test]
    fn the_long_run_rate_is_the_limit() {
        let g = Gcra::per_minute(NonZeroU32::new(60).expect("non-zero"));
        let mut tat = 0;
        let mut allowed = 0;
        // A request every 100 ms for ten minutes.
        for i in 0..6_000u64 {
            if g.apply(&mut tat, 5_000 * S + i * 100_000).is_none() {
                allowed += 1;
            }
        }
        // 600 s at 1/s plus the initial burst of 60.
        assert!((659..=661).contains(&allowed), "{allowed}");
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let g = Gcra::new(S, 1);
        let mut tat = 0;
        assert_eq!(g.apply(&mut tat, 100 * S), None);
        assert_eq!(g.apply(&mut tat, 50 * S), Some(Duration::from_secs(51)));
        let w = Gcra::per_window(
            NonZeroU32::new(2).expect("non-zero"),
            Duration::from_secs(10),
        );
        assert_eq!(w, Gcra::new(5 * S, 2));
    }

    #[test]
    fn window_rate() {
        let mut r = WindowRate::default();
        let t = 10 * S;
        for _ in 0..100 {
            r.record(t);
        }
        assert!((r.rate(t) - 100.0).abs() < 1e-9);
        // Half-way through the next second, half of the previous still counts.
        assert!((r.rate(t + S + S / 2) - 50.0).abs() < 1e-9);
        r.record(t + S + S / 2);
        assert!((r.rate(t + S + S / 2) - 51.0).abs() < 1e-9);
        // Two seconds later nothing is left.
        assert_eq!(r.rate(t + 3 * S), 0.0);
        assert_eq!(r.idle_at(), 13 * S);
    }
}
