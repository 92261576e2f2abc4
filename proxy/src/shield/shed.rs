//! Load shedding: a concurrency limit per origin pool with shares by route priority.
//!
//! With `max_concurrent = N`:
//! - `essential` routes may use all N slots;
//! - `default`, `catalog` and `bypass` routes at most `N · (1 − essential_reserve)`;
//! - `optional` routes at most `N · optional_share` (and never more than the previous line),
//!   and none at all while the pool's p95 latency is above its `latency_target`.
//!
//! The counter is exact (an atomic add, undone on refusal), so the limit is never exceeded;
//! under a race a request may be refused that would just have fit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::routing::RouteKind;

use super::latency::PoolStats;
use super::settings::PoolShield;

/// Who gets origin capacity first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Optional,
    Normal,
    Essential,
}

impl Priority {
    pub fn of(kind: RouteKind) -> Self {
        match kind {
            RouteKind::Essential => Self::Essential,
            RouteKind::Optional => Self::Optional,
            RouteKind::Default | RouteKind::Catalog | RouteKind::Bypass => Self::Normal,
        }
    }
}

/// Why a request was not let through to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// The pool's slots for this priority are taken.
    Saturated,
    /// The pool's p95 latency is above its target (optional routes only).
    Slow,
}

impl ShedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Saturated => "saturated",
            Self::Slow => "slow",
        }
    }
}

/// A refusal: serve a stale copy if there is one, else 503 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Shed {
    pub reason: ShedReason,
    /// Whole seconds, at least 1.
    pub retry_after: Duration,
}

/// One pool's shedding state and statistics.
#[derive(Debug)]
pub struct PoolState {
    pub name: String,
    pub stats: PoolStats,
    inflight: AtomicU32,
    limits: Option<Limits>,
    latency_target: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    essential: u32,
    normal: u32,
    optional: u32,
}

impl PoolState {
    pub fn new(name: &str, cfg: &PoolShield, origin: Instant) -> Self {
        let limits = cfg.max_concurrent.map(|n| {
            let n = n.get();
            let share = |f: f64| ((f64::from(n) * f).floor() as u32).clamp(1, n);
            let normal = share(1.0 - cfg.essential_reserve);
            Limits {
                essential: n,
                normal,
                optional: share(cfg.optional_share).min(normal),
            }
        });
        Self {
            name: name.to_owned(),
            stats: PoolStats::new(origin),
            inflight: AtomicU32::new(0),
            limits,
            latency_target: cfg.latency_target,
        }
    }

    /// Requests holding a permit now.
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Whether recent p95 latency is above the pool's target.
    pub fn is_slow(&self, now: Instant) -> bool {
        self.latency_target
            .is_some_and(|t| self.stats.snapshot(now).p95.is_some_and(|p95| p95 > t))
    }

    pub fn admit(self: &Arc<Self>, priority: Priority, now: Instant) -> Result<Permit, Shed> {
        if priority == Priority::Optional && self.is_slow(now) {
            let p95 = self.stats.snapshot(now).p95.unwrap_or(Duration::ZERO);
            return Err(Shed {
                reason: ShedReason::Slow,
                retry_after: Duration::from_secs(p95.as_secs_f64().ceil().clamp(1.0, 30.0) as u64),
            });
        }
        let limit = self.limits.map_or(u32::MAX, |l| match priority {
            Priority::Essential => l.essential,
            Priority::Normal => l.normal,
            Priority::Optional => l.optional,
        });
        let before = self.inflight.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return Err(Shed {
                reason: ShedReason::Saturated,
                retry_after: Duration::from_secs(1),
            });
        }
        Ok(Permit {
            pool: Some(self.clone()),
        })
    }
}

/// A slot in a pool's concurrency limit, released on drop. Keep it in the request's context
/// until the origin exchange is over.
#[derive(Debug)]
#[must_use]
pub struct Permit {
    pool: Option<Arc<PoolState>>,
}

impl Permit {
    /// A permit for a pool the shield does not know (never refused, counts nothing).
    pub fn unlimited() -> Self {
        Self { pool: None }
    }

    pub fn pool(&self) -> Option<&str> {
        self.pool.as_ref().map(|p| p.name.as_str())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(p) = &self.pool {
            p.inflight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn pool(max: u32, optional_share: f64, reserve: f64) -> Arc<PoolState> {
        let cfg = PoolShield {
            max_concurrent: NonZeroU32::new(max),
            optional_share,
            essential_reserve: reserve,
            latency_target: Some(Duration::from_millis(200)),
        };
        Arc::new(PoolState::new("shop", &cfg, Instant::now()))
    }

    fn fill(p: &Arc<PoolState>, prio: Priority, now: Instant) -> Vec<Permit> {
        let mut v = Vec::new();
        while let Ok(permit) = p.admit(prio, now) {
            v.push(permit);
            assert!(v.len() <= 1000, "a limit applies");
        }
        v
    }

    #[test]
    fn shares_by_priority() {
        let now = Instant::now();
        let p = pool(10, 0.3, 0.2);
        let optional = fill(&p, Priority::Optional, now);
        assert_eq!(optional.len(), 3, "optional: 30 % of 10");
        let normal = fill(&p, Priority::Normal, now);
        assert_eq!(optional.len() + normal.len(), 8, "normal: up to 80 %");
        let essential = fill(&p, Priority::Essential, now);
        assert_eq!(p.inflight(), 10);
        assert_eq!(essential.len(), 2, "the reserve is essential's");
        let shed = p.admit(Priority::Essential, now).expect_err("full");
        assert_eq!(shed.reason, ShedReason::Saturated);
        assert_eq!(shed.retry_after, Duration::from_secs(1));
        // Releasing slots frees them; optional is still capped by its share of the total.
        drop(normal);
        assert_eq!(p.inflight(), 5);
        assert!(
            p.admit(Priority::Optional, now).is_err(),
            "3 optional in flight"
        );
        let more = fill(&p, Priority::Normal, now);
        assert_eq!(more.len(), 3);
        drop((optional, essential, more));
        assert_eq!(p.inflight(), 0, "permits release on drop");
    }

    #[test]
    fn optional_is_shed_first_when_saturated() {
        let now = Instant::now();
        let p = pool(4, 0.5, 0.25);
        let _normal = fill(&p, Priority::Normal, now);
        assert_eq!(p.inflight(), 3);
        assert!(p.admit(Priority::Optional, now).is_err());
        assert!(p.admit(Priority::Essential, now).is_ok());
    }

    #[test]
    fn slow_pool_sheds_optional_only() {
        let now = Instant::now();
        let p = pool(100, 0.5, 0.2);
        for _ in 0..20 {
            p.stats.record(now, Duration::from_millis(1500), true);
        }
        assert!(p.is_slow(now));
        let shed = p.admit(Priority::Optional, now).expect_err("slow");
        assert_eq!(shed.reason, ShedReason::Slow);
        assert_eq!(shed.retry_after, Duration::from_secs(2));
        assert!(p.admit(Priority::Normal, now).is_ok());
        assert!(p.admit(Priority::Essential, now).is_ok());
        assert_eq!(p.inflight(), 0, "temporaries dropped");
    }

    #[test]
    fn tiny_limits_still_admit_someone() {
        let now = Instant::now();
        let p = pool(1, 0.1, 0.9);
        let a = p.admit(Priority::Optional, now).expect("one slot");
        assert!(p.admit(Priority::Essential, now).is_err());
        drop(a);
        let unlimited = Arc::new(PoolState::new("x", &PoolShield::default(), now));
        let many = fill_n(&unlimited, 500, now);
        assert_eq!(unlimited.inflight(), 500);
        drop(many);
    }

    fn fill_n(p: &Arc<PoolState>, n: usize, now: Instant) -> Vec<Permit> {
        (0..n)
            .map(|_| p.admit(Priority::Optional, now).expect("unlimited"))
            .collect()
    }
}
