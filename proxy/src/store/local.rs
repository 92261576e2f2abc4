//! What a node keeps per room so that a store failure costs as little as possible: its
//! high-water marks (to re-seed a store that lost state) and the floor-rate bucket (to admit a
//! few shoppers while the store is unreachable, under `on_store_error = "admit_at_floor_rate"`).

use std::collections::VecDeque;
use std::num::NonZeroU32;

use waitroom::controller;
use waitroom::settings::RoomSettings;
use waitroom::store::{HighWater, Store, StoreError};
use waitroom::{RoomSnapshot, UnixMillis};

use crate::gcra::Gcra;

/// How many ticket-counter increases between reads are remembered for the re-seed margin.
const GROWTH_SAMPLES: usize = 64;

/// A node's high-water marks of one room, and how fast its ticket counter grows.
#[derive(Debug, Default)]
pub struct Marks {
    hw: HighWater,
    growth: VecDeque<u64>,
    /// Whether anything was observed yet (the first read is a jump, not growth).
    primed: bool,
}

impl Marks {
    /// The marks as last observed.
    pub fn high_water(&self) -> &HighWater {
        &self.hw
    }

    /// Records a snapshot that is not behind the marks.
    pub fn observe(&mut self, snap: &RoomSnapshot) {
        let grew = snap.issued.saturating_sub(self.hw.issued);
        if std::mem::replace(&mut self.primed, true) {
            if self.growth.len() == GROWTH_SAMPLES {
                self.growth.pop_front();
            }
            self.growth.push_back(grew);
        }
        self.hw.observe(snap);
    }

    /// Tickets that other nodes may have numbered after this node's last read: twice the
    /// largest growth of the counter seen between two reads lately.
    pub fn margin(&self) -> u64 {
        self.growth.iter().max().copied().unwrap_or(0) * 2
    }

    /// The marks to re-seed with: the ticket counter moves past the margin, so that no number
    /// another node handed out just before the loss is handed out again.
    pub fn reseed_marks(&self) -> HighWater {
        let mut hw = self.hw.clone();
        hw.issued += self.margin();
        hw
    }
}

/// What one room sync did.
#[derive(Debug)]
pub struct Synced {
    pub snapshot: RoomSnapshot,
    /// The store was behind the marks and has been re-seeded (with these marks).
    pub reseeded: Option<HighWater>,
}

/// One sync of one room: snapshot → re-seed if the store is behind this node's marks →
/// controller slice (plan, compare-and-set). Safe to run on every node every slice: re-seeding
/// only raises numbers, and it happens before any commit this node makes.
///
/// `rate_factor` (origin-aware admission, in `(0, 1]`) scales the rate the controller plans
/// with for this slice only; it is never stored, and operator overrides remain the base.
pub async fn sync_room<S: Store + ?Sized>(
    store: &S,
    settings: &RoomSettings,
    marks: &parking_lot::Mutex<Marks>,
    now: UnixMillis,
    rate_factor: f64,
) -> Result<Synced, StoreError> {
    let id = settings.id.as_str();
    let mut reseeded = None;
    for _ in 0..3 {
        let mut snap = store.snapshot(id, now).await?;
        if marks.lock().high_water().behind(&snap) {
            let seed = marks.lock().reseed_marks();
            store.reseed(id, &seed).await?;
            snap = store.snapshot(id, now).await?;
            if marks.lock().high_water().behind(&snap) {
                return Err(StoreError::Protocol(format!(
                    "room {id}: still behind this node's marks after re-seeding"
                )));
            }
            reseeded = Some(seed);
        }
        marks.lock().observe(&snap);
        let planned = if rate_factor < 1.0 {
            let mut scaled = snap.clone();
            let base = waitroom::room::Effective::at(settings, &snap.overrides, snap.time)
                .new_users_per_minute;
            scaled.overrides.new_users_per_minute =
                Some(((f64::from(base) * rate_factor).round() as u32).max(1));
            std::borrow::Cow::Owned(scaled)
        } else {
            std::borrow::Cow::Borrowed(&snap)
        };
        let Some(mut next) = controller::plan(settings, &planned, snap.time) else {
            return Ok(Synced {
                snapshot: snap,
                reseeded,
            });
        };
        if store.commit(id, snap.ctl.version, &next).await? {
            next.version = snap.ctl.version + 1;
            snap.ctl = next;
            marks.lock().observe(&snap);
            return Ok(Synced {
                snapshot: snap,
                reseeded,
            });
        }
    }
    // Lost three races in a row: another node is ticking this room; its result is as good.
    let snap = store.snapshot(id, now).await?;
    if !marks.lock().high_water().behind(&snap) {
        marks.lock().observe(&snap);
    }
    Ok(Synced {
        snapshot: snap,
        reseeded,
    })
}

/// The floor-rate bucket: at most `per_minute` admissions a minute, with a burst of one
/// second's worth (at least one) — [`Gcra::per_minute_smooth`] on a theoretical arrival time.
/// Node-local: a fleet of N nodes admits up to N × `per_minute`.
#[derive(Debug, Default)]
pub struct FloorBucket {
    /// Theoretical arrival time, in microseconds since the epoch.
    tat_us: u64,
}

impl FloorBucket {
    /// Takes one admission at `now` if the rate allows it.
    pub fn try_take(&mut self, now: UnixMillis, per_minute: u32) -> bool {
        let Some(per_minute) = NonZeroU32::new(per_minute) else {
            return false;
        };
        let now_us = now.0.saturating_mul(1000);
        Gcra::per_minute_smooth(per_minute)
            .apply(&mut self.tat_us, now_us)
            .is_none()
    }
}

#[cfg(test)]
mod tests {
    use waitroom::{MemoryStore, RoomSettings};

    use super::*;

    #[test]
    fn floor_bucket_keeps_the_rate() {
        let mut b = FloorBucket::default();
        let t0 = UnixMillis(1_800_000_000_000);
        // 6 a minute: one every 10 s, no burst.
        assert!(b.try_take(t0, 6));
        assert!(!b.try_take(t0, 6));
        assert!(!b.try_take(UnixMillis(t0.0 + 9_999), 6));
        assert!(b.try_take(UnixMillis(t0.0 + 10_000), 6));
        // Over a long run, exactly the rate.
        let mut b = FloorBucket::default();
        let taken = (0..600_000u64)
            .step_by(100)
            .filter(|ms| b.try_take(UnixMillis(t0.0 + ms), 120))
            .count();
        // 10 minutes at 120 a minute, plus the initial burst of two.
        assert!((1200..=1202).contains(&taken), "{taken}");
        // 600 a minute: bursts of up to 10 (one second's worth).
        let mut b = FloorBucket::default();
        assert_eq!((0..50).filter(|_| b.try_take(t0, 600)).count(), 10);
        assert!(!FloorBucket::default().try_take(t0, 0));
    }

    #[test]
    fn margin_is_twice_the_fastest_growth_seen() {
        let mut m = Marks::default();
        let snap = |issued| RoomSnapshot {
            issued,
            ..RoomSnapshot::default()
        };
        m.observe(&snap(0));
        assert_eq!(m.margin(), 0);
        for i in [10, 15, 45, 50] {
            m.observe(&snap(i));
        }
        assert_eq!(m.margin(), 60);
        assert_eq!(m.reseed_marks().issued, 110);
        assert_eq!(m.high_water().issued, 50);
    }

    #[tokio::test]
    async fn a_store_that_lost_state_is_reseeded_before_the_next_commit() {
        let settings = RoomSettings::new(
            "r",
            std::num::NonZeroU32::new(600).expect("nonzero"),
            std::num::NonZeroU32::new(1000).expect("nonzero"),
        );
        let store = MemoryStore::new();
        let marks = parking_lot::Mutex::new(Marks::default());
        let t0 = UnixMillis(1_800_000_000_000);
        let mut last = None;
        for i in 0..20u64 {
            store.issue("r", 5).await.expect("issue");
            let s = sync_room(&store, &settings, &marks, UnixMillis(t0.0 + i * 1000), 1.0)
                .await
                .expect("sync");
            assert!(s.reseeded.is_none());
            last = Some(s.snapshot);
        }
        let before = last.expect("synced");
        assert!(before.ctl.serving > 0);
        // The store restarts empty.
        let store = MemoryStore::new();
        let s = sync_room(&store, &settings, &marks, UnixMillis(t0.0 + 20_000), 1.0)
            .await
            .expect("sync");
        let seed = s.reseeded.expect("re-seeded");
        assert!(s.snapshot.ctl.serving >= before.ctl.serving);
        assert!(s.snapshot.ctl.version > before.ctl.version);
        assert_eq!(
            s.snapshot.issued,
            before.issued + 10,
            "margin: twice 5 per read"
        );
        assert_eq!(seed.issued, before.issued + 10);
        assert!(s.snapshot.ctl.admitted_total >= before.ctl.admitted_total);
        // New numbers continue past the margin.
        assert_eq!(store.issue("r", 1).await, Ok(before.issued + 11));
    }
}
