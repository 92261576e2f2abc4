//! Time as a plain value.
//!
//! `waitroom` never reads a clock: every function that needs "now" takes a [`UnixMillis`].
//! The proxy reads the wall clock (or Redis `TIME`) and passes it in; tests pass a fake one.

use std::time::Duration;

/// Milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// Builds a timestamp from whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Whole seconds (rounded down).
    pub const fn secs(self) -> u64 {
        self.0 / 1000
    }

    /// The UTC minute this instant falls in (minutes since the epoch).
    pub const fn minute(self) -> u32 {
        // u32 minutes last until the year 10136.
        (self.0 / 60_000) as u32
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d.as_millis() as u64))
    }

    /// `self - d`, saturating at the epoch.
    pub fn minus(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(d.as_millis() as u64))
    }

    /// Time elapsed from `earlier` to `self` (zero if `earlier` is later).
    pub fn since(self, earlier: UnixMillis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// Whole minutes in `d`, at least one.
pub(crate) fn whole_minutes(d: Duration) -> u32 {
    (d.as_secs().div_ceil(60)).max(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_and_arithmetic() {
        let t = UnixMillis::from_secs(3_600);
        assert_eq!(t.minute(), 60);
        assert_eq!(t.plus(Duration::from_secs(59)).minute(), 60);
        assert_eq!(t.plus(Duration::from_secs(60)).minute(), 61);
        assert_eq!(t.minus(Duration::from_secs(7_200)), UnixMillis(0));
        assert_eq!(t.since(t.plus(Duration::from_secs(1))), Duration::ZERO);
        assert_eq!(whole_minutes(Duration::from_secs(61)), 2);
        assert_eq!(whole_minutes(Duration::ZERO), 1);
    }
}
