//! The one place the proxy reads the wall clock; the core gets time as an argument.

use std::time::{SystemTime, UNIX_EPOCH};

use waitroom::UnixMillis;

/// Now, in milliseconds since the Unix epoch.
pub fn now() -> UnixMillis {
    UnixMillis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}
