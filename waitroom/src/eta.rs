//! Honest waiting-time estimates.
//!
//! The estimate divides the people ahead by the *measured* admission rate: the least-squares
//! slope of the room's total admissions over the last two minutes of readings. A slope is
//! robust to the controller admitting in per-slice steps (an average of instantaneous rates is
//! not), so two polls a few seconds apart give estimates that differ by about those few
//! seconds. The band comes from how much the last minute's slope differs from the two-minute
//! one (at least ±10 %). Until a minute of data exists it falls back to the configured rate.

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::UnixMillis;

const WINDOW_SECS: f64 = 120.0;
const MIN_SPAN_SECS: f64 = 60.0;

/// An estimated wait with a low/high band.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EtaBand {
    pub mid: Duration,
    pub low: Duration,
    pub high: Duration,
}

/// Admission-rate history of one room, fed from successive snapshots.
#[derive(Debug, Clone, Default)]
pub struct EtaEstimator {
    /// (seconds since the epoch, total admissions), at least 1 s apart, last two minutes.
    samples: VecDeque<(f64, f64)>,
}

impl EtaEstimator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds in a reading of the room's total admissions at `now`.
    pub fn observe(&mut self, now: UnixMillis, admitted_total: u64) {
        let t = now.0 as f64 / 1000.0;
        if let Some(&(last, _)) = self.samples.back() {
            if t - last < 1.0 {
                return;
            }
        }
        self.samples.push_back((t, admitted_total as f64));
        while self
            .samples
            .front()
            .is_some_and(|&(t0, _)| t - t0 > WINDOW_SECS)
        {
            self.samples.pop_front();
        }
    }

    fn slope(&self, since: f64) -> Option<f64> {
        let pts: Vec<(f64, f64)> = self
            .samples
            .iter()
            .copied()
            .filter(|p| p.0 >= since)
            .collect();
        let n = pts.len() as f64;
        if pts.len() < 3 {
            return None;
        }
        let (mx, my) = pts
            .iter()
            .fold((0.0, 0.0), |(a, b), p| (a + p.0 / n, b + p.1 / n));
        let (sxy, sxx) = pts.iter().fold((0.0, 0.0), |(a, b), p| {
            (a + (p.0 - mx) * (p.1 - my), b + (p.0 - mx) * (p.0 - mx))
        });
        (sxx > 0.0).then(|| sxy / sxx)
    }

    /// Measured admissions per second, once a minute of data exists.
    pub fn measured_rate(&self) -> Option<f64> {
        let (first, last) = (self.samples.front()?.0, self.samples.back()?.0);
        if last - first < MIN_SPAN_SECS {
            return None;
        }
        self.slope(first).filter(|r| *r > 0.0)
    }

    /// Wait for someone with `ahead` people in front, falling back to `configured_per_minute`.
    pub fn estimate(&self, ahead: u64, configured_per_minute: f64) -> Option<EtaBand> {
        let (rate, rel) = match self.measured_rate() {
            Some(r) => {
                let last = self.samples.back().map_or(0.0, |p| p.0);
                let recent = self.slope(last - MIN_SPAN_SECS).unwrap_or(r);
                (r, ((recent - r).abs() / r + 0.1).clamp(0.1, 0.5))
            }
            None if configured_per_minute > 0.0 => (configured_per_minute / 60.0, 0.25),
            None => return None,
        };
        // Your own admission is one more step after the `ahead` people.
        let secs = (ahead as f64 + 1.0) / rate;
        let cap = |s: f64| Duration::from_secs_f64(s.clamp(0.0, 30.0 * 86_400.0));
        Some(EtaBand {
            mid: cap(secs),
            low: cap(secs / (1.0 + rel)),
            high: cap(secs / (1.0 - rel)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_then_measures() {
        let mut e = EtaEstimator::new();
        let fallback = e.estimate(59, 60.0).expect("fallback");
        assert_eq!(fallback.mid, Duration::from_secs(60));
        assert!(fallback.low < fallback.mid && fallback.mid < fallback.high);
        // Measured: 2 per second for two minutes.
        for s in 0..=125u64 {
            e.observe(UnixMillis::from_secs(1000 + s), s * 2);
        }
        let m = e.estimate(119, 60.0).expect("measured");
        assert!((m.mid.as_secs_f64() - 60.0).abs() < 1.0, "{m:?}");
        assert_eq!(EtaEstimator::new().estimate(5, 0.0), None);
    }

    #[test]
    fn steady_polls_do_not_jump() {
        let mut e = EtaEstimator::new();
        let mut admitted = 0;
        let mut last: Option<Duration> = None;
        for s in 0..600u64 {
            admitted += if s % 3 == 0 { 3 } else { 0 }; // bursty ticks, 1/s on average
            e.observe(UnixMillis::from_secs(s), admitted);
            if s > 120 && s % 5 == 0 {
                let ahead = 1000 - admitted;
                let eta = e.estimate(ahead, 60.0).expect("eta").mid;
                if let Some(prev) = last {
                    // 5 s passed: the estimate should drop by about 5 s, within 1 % + 2 s.
                    let step = prev.as_secs_f64() - eta.as_secs_f64();
                    let slack = 0.01 * eta.as_secs_f64() + 2.0;
                    assert!((step - 5.0).abs() <= slack, "ETA moved by {step} s in 5 s");
                }
                last = Some(eta);
            }
        }
    }
}
