//! Validated origin-shield settings (built by [`crate::config`] from the TOML surface).
//!
//! Every type has a `Default` that means "as before the shield existed": no cache outside
//! `catalog` routes, no concurrency limit, no origin-aware admission.

use std::num::NonZeroU32;
use std::time::Duration;

/// `[cache]`: the catalog cache as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// Upper bound of the cache's weighted size (bodies, headers, keys and a fixed overhead).
    pub max_bytes: u64,
    /// Largest body stored; bigger responses are passed through uncached.
    pub max_object: usize,
    /// Freshness of a cached route's response when neither the route (`cache_ttl`) nor the
    /// origin (`s-maxage`, `max-age`) says.
    pub default_ttl: Duration,
    /// Default stale-while-revalidate window of cached routes.
    pub stale_while_revalidate: Duration,
    /// Default stale-if-error window of cached routes.
    pub stale_if_error: Duration,
    /// Cap on both stale windows, whoever sets them (route or origin).
    pub max_stale: Duration,
    /// How long a request waits for another request's origin fetch of the same key.
    pub lock_timeout: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_bytes: 256 * MIB,
            max_object: MIB as usize,
            default_ttl: Duration::from_secs(10),
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(300),
            max_stale: Duration::from_secs(3600),
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// Per-route shield settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteShield {
    /// Responses of this route are cached (`kind = "catalog"`, or `cache_ttl` set).
    pub cache: bool,
    /// Overrides the origin's `s-maxage` / `max-age` when set.
    pub cache_ttl: Option<Duration>,
    /// Used when the origin's `Cache-Control` has no `stale-while-revalidate`.
    pub stale_while_revalidate: Duration,
    /// Used when the origin's `Cache-Control` has no `stale-if-error`.
    pub stale_if_error: Duration,
    /// When the pool's recent p95 latency is above this, a stale copy (inside its
    /// stale-if-error window) is served at once and one refresh runs in the background.
    pub latency_budget: Option<Duration>,
}

/// Per-pool shield settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolShield {
    /// Requests in flight to this pool at most (`None`: unlimited).
    pub max_concurrent: Option<NonZeroU32>,
    /// Share of `max_concurrent` that `optional` routes may occupy.
    pub optional_share: f64,
    /// Share of `max_concurrent` that only `essential` routes may occupy.
    pub essential_reserve: f64,
    /// When the pool's recent p95 latency is above this, `optional` routes are shed.
    pub latency_target: Option<Duration>,
}

impl Default for PoolShield {
    fn default() -> Self {
        Self {
            max_concurrent: None,
            optional_share: 0.5,
            essential_reserve: 0.2,
            latency_target: None,
        }
    }
}

/// `[rooms.origin_aware]`: the room's admission rate follows its origin's health.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginAware {
    /// The rate never drops below this share of the configured rate.
    pub min_factor: f64,
    /// p95 latency above this counts as degraded.
    pub latency_target: Duration,
    /// Error share (5xx, timeouts, refused connections) above this counts as degraded.
    pub error_target: f64,
}

impl Default for OriginAware {
    fn default() -> Self {
        Self {
            min_factor: 0.25,
            latency_target: Duration::from_millis(300),
            error_target: 0.02,
        }
    }
}

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// Parses a size: `"256MiB"`, `"64MB"`, `"512KiB"`, `"1GiB"`, `"1048576"` (bytes). Binary
/// (KiB, MiB, GiB) and decimal (KB, MB, GB) units; case-insensitive; spaces allowed.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("256MiB"), Some(256 * MIB));
        assert_eq!(parse_bytes("1 mib"), Some(MIB));
        assert_eq!(parse_bytes("64MB"), Some(64_000_000));
        assert_eq!(parse_bytes("512KiB"), Some(512 * KIB));
        assert_eq!(parse_bytes("1048576"), Some(MIB));
        assert_eq!(parse_bytes("2GiB"), Some(2 * GIB));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("1.5MiB"), None);
        assert_eq!(parse_bytes(""), None);
        assert_eq!(parse_bytes("99999999999999999999GiB"), None);
    }
}
