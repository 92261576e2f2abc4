//! Event ids: 128 bits written as 26 characters of Crockford base32, the ULID text format, so
//! ids sort by time as strings.
//!
//! Layout: 48 bits of Unix milliseconds, 32 bits chosen at random when the process starts, 48
//! bits of a per-process counter. Within one process every id is distinct (the counter); two
//! processes collide only if they draw the same 32-bit instance *and* reach the same counter
//! value in the same millisecond. Making one costs an atomic increment: no lock, no syscall.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use waitroom::UnixMillis;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// One event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(pub u128);

impl EventId {
    /// The 26-character text form.
    pub fn encode(self) -> [u8; 26] {
        let mut out = [0u8; 26];
        let mut v = self.0;
        for slot in out.iter_mut().rev() {
            *slot = CROCKFORD[(v & 31) as usize];
            v >>= 5;
        }
        out
    }

    /// The milliseconds part.
    pub fn millis(self) -> u64 {
        (self.0 >> 80) as u64
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.encode();
        // Always ASCII.
        f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
    }
}

/// Makes ids for one process.
#[derive(Debug)]
pub struct IdGen {
    instance: u32,
    counter: AtomicU64,
}

impl IdGen {
    /// A generator with a random instance number.
    pub fn new() -> Self {
        let mut b = [0u8; 4];
        // A failing OS RNG leaves a fixed instance: ids stay unique within the process.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
        Self::with_instance(u32::from_be_bytes(b))
    }

    pub fn with_instance(instance: u32) -> Self {
        Self {
            instance,
            counter: AtomicU64::new(0),
        }
    }

    pub fn next(&self, at: UnixMillis) -> EventId {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) & ((1 << 48) - 1);
        let ms = u128::from(at.0 & ((1 << 48) - 1));
        EventId((ms << 80) | (u128::from(self.instance) << 48) | u128::from(n))
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}
