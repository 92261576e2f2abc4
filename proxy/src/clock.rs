//! The one place the proxy reads the wall clock; the core gets time as an argument.
//!
//! **Test-only skew.** `FLASHGATE_CLOCK_SKEW_MS` (a signed integer of milliseconds, read once
//! per process) offsets every reading, so a test can run nodes whose clocks disagree without
//! touching the machine's clock (`proxy/tests/chaos.rs`, clock skew within the token leeway).
//! It has no use in production: keep nodes on NTP. A node started with it logs a warning.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use waitroom::UnixMillis;

/// The environment variable holding the test-only clock offset in milliseconds.
pub const SKEW_ENV: &str = "FLASHGATE_CLOCK_SKEW_MS";

/// The offset added to every reading (0 unless [`SKEW_ENV`] holds a valid integer).
pub fn skew_ms() -> i64 {
    static SKEW: OnceLock<i64> = OnceLock::new();
    *SKEW.get_or_init(|| {
        std::env::var(SKEW_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0)
    })
}

/// Now, in milliseconds since the Unix epoch (plus the test-only skew, if any).
pub fn now() -> UnixMillis {
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    UnixMillis(real.saturating_add_signed(skew_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_the_system_clock_plus_the_skew() {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        assert!(now().0.abs_diff(real.saturating_add_signed(skew_ms())) < 1_000);
    }
}
