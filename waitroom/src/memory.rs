//! The embedded in-memory store: one node, no Redis.
//!
//! Ticket issue — the operation a crowd hammers — is one atomic add with no lock. Everything
//! else takes a per-room mutex for a few hundred nanoseconds; different rooms never contend,
//! and the room map is behind a read-mostly lock taken for writing only when a room first
//! appears.
//!
//! Memory is O(1) per room plus two bitmaps of one bit per ticket issued (entered, ended):
//! 1,000,000 tickets cost 250 KB.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};

use crate::state::{ControllerState, MinuteCount, Overrides, RoomSnapshot};
use crate::store::{CheckIn, ClaimOutcome, ClaimRequest, HighWater, Store, StoreResult};
use crate::time::UnixMillis;

/// Minutes of active buckets kept (the longest session plus slack).
const KEEP_MINUTES: u32 = 24 * 60 + 2;

#[derive(Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn get(&self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        self.0.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    fn set(&mut self, i: u64) {
        let (w, b) = ((i / 64) as usize, i % 64);
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << b;
    }
}

#[derive(Debug, Default)]
struct Inner {
    ctl: ControllerState,
    /// Claims per advance record, keyed by the record's `serving_after`.
    claims: BTreeMap<u64, u64>,
    active: BTreeMap<u32, u64>,
    entered: Bits,
    ended: Bits,
    claimed_total: u64,
    claims_minute: u32,
    claims_in_minute: u64,
    overrides: Overrides,
}

#[derive(Debug, Default)]
struct RoomCell {
    issued: AtomicU64,
    inner: Mutex<Inner>,
}

/// Thread-safe in-memory [`Store`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    rooms: RwLock<HashMap<String, Arc<RoomCell>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn room(&self, id: &str) -> Arc<RoomCell> {
        if let Some(r) = self.rooms.read().get(id) {
            return r.clone();
        }
        self.rooms.write().entry(id.to_owned()).or_default().clone()
    }
}

impl Inner {
    fn active_total(&self, now_minute: u32, session_minutes: u32) -> u64 {
        let oldest = now_minute.saturating_sub(session_minutes);
        self.active.range(oldest..=now_minute).map(|(_, c)| c).sum()
    }

    fn pending(&self, req: &ClaimRequest) -> u64 {
        self.ctl
            .history
            .iter()
            .filter(|r| req.now.since(r.at) < req.claim_window)
            .map(|r| {
                let claimed = self.claims.get(&r.serving_after).copied().unwrap_or(0);
                r.admitted.saturating_sub(claimed)
            })
            .sum()
    }

    fn decrement(&mut self, minute: u32) {
        if let Some(c) = self.active.get_mut(&minute) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.active.remove(&minute);
            }
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn issue(&self, room: &str, count: u64) -> StoreResult<u64> {
        let cell = self.room(room);
        Ok(cell.issued.fetch_add(count, Ordering::AcqRel) + 1)
    }

    async fn snapshot(&self, room: &str, now: UnixMillis) -> StoreResult<RoomSnapshot> {
        let cell = self.room(room);
        let mut g = cell.inner.lock();
        let oldest = now.minute().saturating_sub(KEEP_MINUTES);
        g.active.retain(|m, _| *m >= oldest);
        let mut ctl = g.ctl.clone();
        for r in &mut ctl.history {
            r.claimed = g.claims.get(&r.serving_after).copied().unwrap_or(0);
        }
        Ok(RoomSnapshot {
            time: now,
            // Read under the lock so `issued >= serving` holds in every snapshot.
            issued: cell.issued.load(Ordering::Acquire),
            claimed_total: g.claimed_total,
            active: g
                .active
                .iter()
                .map(|(m, c)| MinuteCount {
                    minute: *m,
                    count: *c,
                })
                .collect(),
            claims_minute: g.claims_minute,
            claims_in_minute: g.claims_in_minute,
            ctl,
            overrides: g.overrides.clone(),
        })
    }

    async fn commit(&self, room: &str, expected: u64, next: &ControllerState) -> StoreResult<bool> {
        let cell = self.room(room);
        let mut g = cell.inner.lock();
        if g.ctl.version != expected {
            return Ok(false);
        }
        let mut next = next.clone();
        next.version = expected + 1;
        g.claims
            .retain(|k, _| next.history.iter().any(|r| r.serving_after == *k));
        for r in &mut next.history {
            r.claimed = 0; // claims live in `claims`
        }
        g.ctl = next;
        Ok(true)
    }

    async fn claim(&self, room: &str, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
        let cell = self.room(room);
        let issued = cell.issued.load(Ordering::Acquire);
        let mut g = cell.inner.lock();
        if req.ticket == 0 || req.ticket > issued {
            return Ok(ClaimOutcome::NotYet);
        }
        if g.ended.get(req.ticket) {
            return Ok(ClaimOutcome::Ended);
        }
        if g.entered.get(req.ticket) {
            return Ok(ClaimOutcome::AlreadyEntered);
        }
        if !req.unlimited && req.position > g.ctl.serving {
            return Ok(ClaimOutcome::NotYet);
        }
        // The store, not only the (up to a refresh old) view, holds the line while paused.
        let o = &g.overrides;
        if !req.unlimited && (o.paused || o.queue_all || o.sold_out) {
            return Ok(ClaimOutcome::NotYet);
        }
        // Only a newer minute resets the count: a claim decided before the boundary that lands
        // after claims of the next minute must not wipe that minute's entries.
        if g.claims_minute < req.minute {
            g.claims_minute = req.minute;
            g.claims_in_minute = 0;
        }
        let mut reserved = None;
        if !req.unlimited {
            // A claim for a minute the store has left is retried in the current one.
            if req.minute < g.claims_minute || g.claims_in_minute >= req.max_per_minute {
                return Ok(ClaimOutcome::MinuteFull);
            }
            // The advance that admitted this position, if its reservation still holds.
            reserved = g
                .ctl
                .history
                .iter()
                .find(|r| r.serving_after >= req.position)
                .filter(|r| {
                    r.serving_after - r.admitted < req.position
                        && req.now.since(r.at) < req.claim_window
                })
                .map(|r| (r.serving_after, r.admitted))
                .filter(|(k, admitted)| g.claims.get(k).copied().unwrap_or(0) < *admitted)
                .map(|(k, _)| k);
            if reserved.is_none() {
                let used = g.active_total(req.minute, req.session_minutes) + g.pending(req);
                if used >= req.cap {
                    return Ok(ClaimOutcome::Full);
                }
            }
        }
        g.entered.set(req.ticket);
        if let Some(k) = reserved {
            *g.claims.entry(k).or_insert(0) += 1;
        }
        *g.active.entry(req.minute).or_insert(0) += 1;
        g.claims_in_minute += 1;
        g.claimed_total += 1;
        Ok(ClaimOutcome::Entered)
    }

    async fn check_in(&self, room: &str, ticket: u64, from: u32, to: u32) -> StoreResult<CheckIn> {
        if ticket == 0 {
            // Ticket numbers start at 1: a pass with ticket 0 was minted without the store
            // (the proxy's `admit_at_floor_rate` policy) and was never counted.
            return Ok(CheckIn::Moved);
        }
        let cell = self.room(room);
        let mut g = cell.inner.lock();
        if g.ended.get(ticket) {
            return Ok(CheckIn::Ended);
        }
        if from != to {
            g.decrement(from);
            *g.active.entry(to).or_insert(0) += 1;
        }
        Ok(CheckIn::Moved)
    }

    async fn release(&self, room: &str, ticket: u64, minute: Option<u32>) -> StoreResult<()> {
        let cell = self.room(room);
        let issued = cell.issued.load(Ordering::Acquire);
        let mut g = cell.inner.lock();
        if ticket == 0 || ticket > issued || g.ended.get(ticket) {
            return Ok(());
        }
        g.ended.set(ticket);
        if let (Some(m), true) = (minute, g.entered.get(ticket)) {
            g.decrement(m);
        }
        Ok(())
    }

    async fn set_overrides(&self, room: &str, overrides: &Overrides) -> StoreResult<()> {
        let cell = self.room(room);
        cell.inner.lock().overrides = overrides.clone();
        Ok(())
    }

    async fn reseed(&self, room: &str, marks: &HighWater) -> StoreResult<()> {
        let cell = self.room(room);
        let mut g = cell.inner.lock();
        cell.issued.fetch_max(marks.issued, Ordering::AcqRel);
        g.claimed_total = g.claimed_total.max(marks.claimed_total);
        if let Some(mut c) = marks.merged_ctl(&g.ctl) {
            for r in &mut c.history {
                let n = g.claims.entry(r.serving_after).or_insert(0);
                *n = (*n).max(r.claimed);
                r.claimed = 0; // claims live in `claims`
            }
            g.ctl = c;
        }
        for m in &marks.active {
            let n = g.active.entry(m.minute).or_insert(0);
            *n = (*n).max(m.count);
        }
        // This store cannot tell "never set" from "cleared": default overrides count as none.
        if g.overrides == Overrides::default() {
            g.overrides = marks.overrides.clone();
        }
        if marks.claims_minute > g.claims_minute {
            g.claims_minute = marks.claims_minute;
            g.claims_in_minute = marks.claims_in_minute;
        } else if marks.claims_minute == g.claims_minute {
            g.claims_in_minute = g.claims_in_minute.max(marks.claims_in_minute);
        }
        Ok(())
    }
}
