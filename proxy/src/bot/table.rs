//! A fixed-size, sharded, set-associative table: the only per-client memory the bot engine
//! has. It is allocated once at its full size and never grows, however many addresses,
//! tickets or prefixes an attacker sends.
//!
//! Keys are 64-bit keyed hashes (SipHash with a random per-process key, so an attacker cannot
//! aim at one bucket). A key lives in one bucket of [`WAYS`] slots; a new key takes an empty
//! slot, else a slot whose entry has gone idle (its state equals a fresh one, so nothing is
//! lost), else the slot whose entry goes idle soonest — the one carrying the least
//! information. That last case is an *eviction*, counted.
//!
//! Failure mode, by design: under a flood of distinct keys, entries are evicted early and the
//! evicted client's limit state starts afresh (the limit fails open for that client, never
//! closed for an innocent one). Heavily used keys go idle last and so survive longest.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Slots per bucket.
pub const WAYS: usize = 8;
const MAX_SHARDS: usize = 64;

/// A table value: `Default` is the fresh state.
pub trait Expiring: Copy + Default {
    /// Microseconds since the epoch after which this entry equals a fresh one.
    fn idle_at(&self) -> u64;
}

/// One shard: `buckets_per_shard * WAYS` slots behind one lock.
type Shard<V> = Mutex<Box<[Slot<V>]>>;

#[derive(Debug, Clone, Copy, Default)]
struct Slot<V> {
    /// 0 = empty.
    key: u64,
    value: V,
}

/// See the module docs.
#[derive(Debug)]
pub struct BoundedTable<V> {
    shards: Box<[Shard<V>]>,
    buckets_per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
    evictions: AtomicU64,
}

impl<V: Expiring> BoundedTable<V> {
    /// A table of at least `slots` slots (rounded up to a power of two, at least one bucket
    /// per shard).
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(WAYS).next_power_of_two();
        let buckets = slots / WAYS;
        let shards = buckets.clamp(1, MAX_SHARDS);
        let buckets_per_shard = buckets / shards;
        let shards = (0..shards)
            .map(|_| Mutex::new(vec![Slot::default(); buckets_per_shard * WAYS].into_boxed_slice()))
            .collect();
        Self {
            shards,
            buckets_per_shard,
            hasher: Default::default(),
            evictions: AtomicU64::new(0),
        }
    }

    /// The keyed hash of `k` (never 0).
    pub fn key(&self, k: impl Hash) -> u64 {
        self.hasher.hash_one(k).max(1)
    }

    /// Total slots (fixed).
    pub fn capacity(&self) -> usize {
        self.shards.len() * self.buckets_per_shard * WAYS
    }

    /// Occupied slots (idle ones included). Walks the table: for tests and diagnostics.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().iter().filter(|e| e.key != 0).count())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries displaced before they went idle, since start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn locate(&self, key: u64) -> (usize, usize) {
        let shard = (key >> 40) as usize % self.shards.len();
        let bucket = key as usize % self.buckets_per_shard;
        (shard, bucket * WAYS)
    }

    /// Runs `f` on the entry for `key`, creating a fresh one if needed. Returns `f`'s result
    /// and whether an entry was evicted to make room.
    pub fn update<R>(&self, key: u64, now_us: u64, f: impl FnOnce(&mut V) -> R) -> (R, bool) {
        let key = key.max(1);
        let (shard, start) = self.locate(key);
        let mut slots = self.shards[shard].lock();
        let bucket = &mut slots[start..start + WAYS];
        if let Some(e) = bucket.iter_mut().find(|e| e.key == key) {
            return (f(&mut e.value), false);
        }
        // An empty slot, else an idle one, else the one that goes idle soonest.
        let mut pick = 0;
        let mut best = u64::MAX;
        for (i, e) in bucket.iter().enumerate() {
            let idle = if e.key == 0 { 0 } else { e.value.idle_at() };
            if idle < best {
                best = idle;
                pick = i;
            }
            if idle == 0 {
                break;
            }
        }
        let evicted = best > now_us;
        if evicted {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        let e = &mut bucket[pick];
        *e = Slot {
            key,
            value: V::default(),
        };
        (f(&mut e.value), evicted)
    }

    /// The entry for `key`, if present (no insertion).
    pub fn get(&self, key: u64) -> Option<V> {
        let key = key.max(1);
        let (shard, start) = self.locate(key);
        let slots = self.shards[shard].lock();
        slots[start..start + WAYS]
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, Default)]
    struct Until(u64);
    impl Expiring for Until {
        fn idle_at(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn sizes_are_fixed_and_rounded() {
        let t: BoundedTable<Until> = BoundedTable::new(1000);
        assert_eq!(t.capacity(), 1024);
        assert!(t.is_empty());
        let tiny: BoundedTable<Until> = BoundedTable::new(1);
        assert_eq!(tiny.capacity(), WAYS);
    }

    #[test]
    fn a_key_keeps_its_entry() {
        let t: BoundedTable<Until> = BoundedTable::new(1024);
        let k = t.key(("ip", 42u32));
        assert_eq!(t.update(k, 0, |v| v.0 = 99), ((), false));
        assert_eq!(t.get(k).map(|v| v.0), Some(99));
        assert_eq!(t.update(k, 0, |v| v.0), (99, false));
        assert_eq!(t.len(), 1);
        assert!(t.get(t.key(("ip", 43u32))).is_none());
    }

    #[test]
    fn a_flood_never_grows_the_table() {
        let t: BoundedTable<Until> = BoundedTable::new(4096);
        let cap = t.capacity();
        let now = 1_000;
        for i in 0..200_000u64 {
            let k = t.key(i);
            t.update(k, now, |v| v.0 = now + 60_000_000);
        }
        assert_eq!(t.len(), cap, "full, and not one slot more");
        assert_eq!(t.capacity(), cap);
        assert!(t.evictions() >= 200_000 - cap as u64);
    }

    #[test]
    fn idle_entries_are_reused_before_live_ones_are_evicted() {
        let t: BoundedTable<Until> = BoundedTable::new(WAYS);
        // Fill the single bucket: one long-lived entry, the rest idle at 10.
        let keep = t.key("keep");
        t.update(keep, 0, |v| v.0 = 1_000_000);
        for i in 0..WAYS - 1 {
            t.update(t.key(i), 0, |v| v.0 = 10);
        }
        // After time 10 the idle ones are reused without an eviction.
        for i in 100..100 + WAYS - 1 {
            let (_, evicted) = t.update(t.key(i), 20, |v| v.0 = 500);
            assert!(!evicted);
        }
        assert_eq!(t.evictions(), 0);
        // Now everything is live: the soonest-idle entry goes, the long-lived one stays.
        let (_, evicted) = t.update(t.key("new"), 30, |v| v.0 = 600);
        assert!(evicted);
        assert_eq!(t.get(keep).map(|v| v.0), Some(1_000_000));
        assert_eq!(t.len(), WAYS);
    }
}
