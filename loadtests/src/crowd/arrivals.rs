//! The arrival curve: when each simulated shopper turns up.

use std::time::Duration;

use super::scenario::{Arrival, Shape};
use crate::rng::SplitMix64;

/// Arrival offsets from the start of the run, sorted. `scale` multiplies every segment's
/// shopper count (a quick rehearsal of a big scenario: `--scale 0.1`).
pub fn schedule(arrivals: &[Arrival], seed: u64, scale: f64) -> Vec<Duration> {
    let mut out = Vec::new();
    for (k, a) in arrivals.iter().enumerate() {
        let n = ((a.shoppers as f64) * scale).round().max(1.0) as u64;
        let mut rng = SplitMix64::stream(seed, 0xA1A1 + k as u64);
        let over = a.over.as_secs_f64();
        let mut segment: Vec<f64> = (0..n)
            .map(|i| {
                // Evenly spread quantiles, or random ones for Poisson.
                let u = match a.shape {
                    Shape::Poisson => rng.unit(),
                    _ => (i as f64 + 0.5) / n as f64,
                };
                let f = match a.shape {
                    Shape::Uniform | Shape::Poisson => u,
                    // Rate rising linearly from 0: the CDF is f², so invert with a square root.
                    Shape::Ramp => u.sqrt(),
                    // Rate falling linearly to 0: the CDF is 1 - (1 - f)².
                    Shape::Decay => 1.0 - (1.0 - u).sqrt(),
                };
                f * over
            })
            .collect();
        if a.shape == Shape::Poisson {
            segment.sort_by(f64::total_cmp);
        }
        out.extend(
            segment
                .into_iter()
                .map(|s| a.start + Duration::from_secs_f64(s)),
        );
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: u64, shoppers: u64, over: u64, shape: Shape) -> Arrival {
        Arrival {
            start: Duration::from_secs(start),
            shoppers,
            over: Duration::from_secs(over),
            shape,
        }
    }

    fn in_first_half(s: &[Duration], start: u64, over: u64) -> usize {
        let mid = Duration::from_secs_f64(start as f64 + over as f64 / 2.0);
        s.iter().filter(|t| **t < mid).count()
    }

    #[test]
    fn shapes_and_segments() {
        let s = schedule(&[seg(0, 1000, 10, Shape::Uniform)], 1, 1.0);
        assert_eq!(s.len(), 1000);
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
        assert!(*s.last().expect("some") < Duration::from_secs(10));
        assert_eq!(in_first_half(&s, 0, 10), 500);

        let ramp = schedule(&[seg(0, 1000, 10, Shape::Ramp)], 1, 1.0);
        assert_eq!(in_first_half(&ramp, 0, 10), 250);
        let decay = schedule(&[seg(0, 1000, 10, Shape::Decay)], 1, 1.0);
        assert_eq!(in_first_half(&decay, 0, 10), 750);
        let p = schedule(&[seg(0, 10_000, 10, Shape::Poisson)], 9, 1.0);
        assert!((4_800..5_200).contains(&in_first_half(&p, 0, 10)));
        assert_eq!(p, schedule(&[seg(0, 10_000, 10, Shape::Poisson)], 9, 1.0));

        // A background trickle plus a spike, scaled down tenfold.
        let both = schedule(
            &[
                seg(0, 600, 60, Shape::Uniform),
                seg(20, 2000, 2, Shape::Uniform),
            ],
            1,
            0.1,
        );
        assert_eq!(both.len(), 260);
        let spike = both
            .iter()
            .filter(|t| (Duration::from_secs(20)..Duration::from_secs(22)).contains(*t))
            .count();
        assert_eq!(spike, 202);
    }
}
