//! Node-local room state: each room's latest [`RoomView`], refreshed from the store a few times a
//! second by one background task, read lock-free by every request.
//!
//! The refresh also runs the controller slice ([`crate::store::local::sync_room`]: snapshot,
//! re-seed if the store lost state, plan, compare-and-set); with the memory store this node is
//! the only controller, with Redis every node tries and one wins per slice. Status polls and
//! waiting pages are answered from the view: no store call per poll.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use waitroom::eta::EtaEstimator;
use waitroom::{RoomSnapshot, RoomView, Store, UnixMillis};

use crate::clock;
use crate::config::Room;
use crate::metrics::Metrics;
use crate::shield::Shield;
use crate::store::local::{sync_room, FloorBucket, Marks};

/// How many ended sessions a node remembers (leave / revoke), so that a copied pass is refused
/// on this node right away; other nodes learn it at the pass's next minute check-in.
const ENDED_MEMORY: usize = 100_000;

/// Slots in the per-room check-in table (a power of two).
const CHECKIN_SLOTS: usize = 1 << 16;

/// Remembers, per ticket, the last minute this node checked the shopper in, so that a client
/// that keeps sending an old pass (an app, a script) causes at most one store call a minute.
/// Direct-mapped and lock-free: a collision only costs an extra, harmless check-in.
struct CheckIns(Vec<AtomicU64>);

impl std::fmt::Debug for CheckIns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckIns")
            .field("slots", &self.0.len())
            .finish()
    }
}

impl CheckIns {
    fn new() -> Self {
        Self((0..CHECKIN_SLOTS).map(|_| AtomicU64::new(0)).collect())
    }

    /// Whether `ticket` still needs a check-in for `minute` on this node; records it if so.
    fn first_in_minute(&self, ticket: u64, minute: u32) -> bool {
        let slot = (ticket.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize % CHECKIN_SLOTS;
        let value = (ticket << 24) | u64::from(minute & 0xff_ffff);
        self.0[slot].swap(value, Ordering::Relaxed) != value
    }
}

/// How many raters a node remembers per room, so that each ticket rates the wait once (see
/// [`RoomRuntime::record_feedback`]).
const RATED_MEMORY: usize = ENDED_MEMORY;

/// A bounded set: the oldest entries are forgotten first.
#[derive(Debug, Default)]
struct Recent {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Recent {
    /// Adds `v`; `false` when it was there already.
    fn insert(&mut self, v: u64) -> bool {
        self.insert_bounded(v, ENDED_MEMORY)
    }

    fn insert_bounded(&mut self, v: u64, cap: usize) -> bool {
        if !self.set.insert(v) {
            return false;
        }
        self.order.push_back(v);
        if self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// The wait ratings this node accepted for one room: counts of 1 to 5.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackCounts {
    pub by_rating: [u64; 5],
}

impl FeedbackCounts {
    pub fn count(&self) -> u64 {
        self.by_rating.iter().sum()
    }

    /// The mean rating (1-5), or `None` before the first one.
    pub fn average(&self) -> Option<f64> {
        let n = self.count();
        let sum: u64 = (1..=5u64).zip(self.by_rating).map(|(r, c)| r * c).sum();
        (n > 0).then(|| sum as f64 / n as f64)
    }
}

/// One room on this node.
#[derive(Debug)]
pub struct RoomRuntime {
    pub cfg: Room,
    /// What a reload carries over when the room keeps its id: its view, ETA history, ended
    /// sessions, check-ins and high-water marks.
    shared: Arc<Shared>,
    /// The id, shared with every event about the room (no allocation per event).
    name: Arc<str>,
    /// Admissions while the store fails (`admit_at_floor_rate`); reset by a reload, since its
    /// rate may change.
    floor: Mutex<FloorBucket>,
}

#[derive(Debug)]
struct Shared {
    view: ArcSwap<RoomView>,
    /// Advanced whenever a new view would answer some shopper differently
    /// ([`RoomView::same_answers`]): server-sent-event streams wait on it instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
    eta: Mutex<EtaEstimator>,
    /// Read on every pass check, written on leave/revoke: a read-write lock.
    ended: parking_lot::RwLock<Recent>,
    checkins: CheckIns,
    store_ok: AtomicBool,
    /// High-water marks of the store's numbers, to re-seed a store that lost state.
    marks: Mutex<Marks>,
    /// One sync of this room at a time on this node (the background sync and an admin read
    /// may both refresh): a sync holding an older snapshot must never compare it with marks a
    /// concurrent sync has just raised, or it would see the store "behind" and re-seed it.
    sync: tokio::sync::Mutex<()>,
    /// Origin-aware admission: the factor of the last sync (`f64` bits; 1 for other rooms).
    origin_factor: AtomicU64,
    /// Feedback pulse: tickets that rated the wait on this node, and the ratings by value.
    rated: Mutex<Recent>,
    ratings: [AtomicU64; 5],
}

impl RoomRuntime {
    fn new(cfg: Room) -> Self {
        let eta = EtaEstimator::new();
        let snap = RoomSnapshot {
            time: clock::now(),
            ..RoomSnapshot::default()
        };
        let view = RoomView::new(&cfg.settings, snap, &eta);
        let name = Arc::from(cfg.settings.id.as_str());
        Self {
            cfg,
            shared: Arc::new(Shared {
                view: ArcSwap::from_pointee(view),
                changes: tokio::sync::watch::Sender::new(0),
                eta: Mutex::new(eta),
                ended: parking_lot::RwLock::new(Recent::default()),
                checkins: CheckIns::new(),
                store_ok: AtomicBool::new(true),
                marks: Mutex::new(Marks::default()),
                sync: tokio::sync::Mutex::new(()),
                origin_factor: AtomicU64::new(1.0f64.to_bits()),
                rated: Mutex::new(Recent::default()),
                ratings: Default::default(),
            }),
            name,
            floor: Mutex::new(FloorBucket::default()),
        }
    }

    /// The same room under a new config (a reload): live state carries over, and the view is
    /// rebuilt with the new settings at once.
    fn reconfigured(&self, cfg: Room) -> Self {
        let r = Self {
            cfg,
            shared: self.shared.clone(),
            name: self.name.clone(),
            floor: Mutex::new(FloorBucket::default()),
        };
        let snap = r.view().snapshot.clone();
        r.install_view(snap);
        r
    }

    pub fn id(&self) -> &str {
        &self.cfg.settings.id
    }

    /// The id as a shared string (for events).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The latest view (lock-free).
    pub fn view(&self) -> Arc<RoomView> {
        self.shared.view.load_full()
    }

    /// Installs a fresh snapshot.
    pub fn install(&self, snap: RoomSnapshot) {
        self.shared
            .eta
            .lock()
            .observe(snap.time, snap.ctl.admitted_total);
        self.install_view(snap);
    }

    fn install_view(&self, snap: RoomSnapshot) {
        let eta = self.shared.eta.lock();
        let mut view = RoomView::new(&self.cfg.settings, snap, &eta);
        drop(eta);
        // The rate the controller planned with (see `sync_room`), so that the ETA fallback and
        // the admin report tell the truth while the origin holds admission back.
        let factor = self.origin_factor();
        if factor < 1.0 {
            view.new_users_per_minute =
                ((f64::from(view.new_users_per_minute) * factor).round() as u32).max(1);
        }
        let view = Arc::new(view);
        let old = self.shared.view.swap(view.clone());
        if !old.same_answers(&view) {
            self.shared
                .changes
                .send_modify(|generation| *generation += 1);
        }
    }

    /// Wakes when the room's view changes what a shopper would be told (see
    /// [`RoomView::same_answers`]); the current view counts as seen.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// The origin-health factor of the last sync: in `[min_factor, 1]` for rooms with
    /// `[rooms.origin_aware]`, always 1 for the others.
    pub fn origin_factor(&self) -> f64 {
        f64::from_bits(self.shared.origin_factor.load(Ordering::Relaxed))
    }

    /// Whether this node should check `ticket` in for `minute` (at most once a minute).
    pub fn should_check_in(&self, ticket: u64, minute: u32) -> bool {
        self.shared.checkins.first_in_minute(ticket, minute)
    }

    pub fn mark_ended(&self, ticket: u64) {
        // Ticket 0 is shared by every pass minted at the floor rate: it cannot be ended alone.
        if ticket != 0 {
            self.shared.ended.write().insert(ticket);
        }
    }

    /// Whether a new shopper may be let in without the store, under `admit_at_floor_rate`
    /// (a node-local GCRA bucket of `floor_rate_per_minute`).
    pub fn floor_admit(&self, now: UnixMillis) -> bool {
        self.floor
            .lock()
            .try_take(now, self.cfg.floor_rate_per_minute)
    }

    /// Counts a wait rating (1-5) from ticket `ticket` of sale event `event`, once per ticket
    /// on this node: `false` (nothing counted) when that ticket has rated here before. The
    /// node remembers the last [`RATED_MEMORY`] raters of the room; a reload keeps them.
    pub fn record_feedback(&self, event: u32, ticket: u64, rating: u8) -> bool {
        let Some(slot) = usize::from(rating)
            .checked_sub(1)
            .and_then(|i| self.shared.ratings.get(i))
        else {
            return false;
        };
        // Ticket numbers are per room; the event keeps two sale windows' tickets apart.
        let key = ticket ^ u64::from(event).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        if !self.shared.rated.lock().insert_bounded(key, RATED_MEMORY) {
            return false;
        }
        slot.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The ratings this node accepted since it started (a reload keeps them).
    pub fn feedback(&self) -> FeedbackCounts {
        FeedbackCounts {
            by_rating: std::array::from_fn(|i| self.shared.ratings[i].load(Ordering::Relaxed)),
        }
    }

    pub fn is_ended(&self, ticket: u64) -> bool {
        self.shared.ended.read().set.contains(&ticket)
    }

    pub fn store_ok(&self) -> bool {
        self.shared.store_ok.load(Ordering::Relaxed)
    }

    fn set_store_ok(&self, ok: bool) {
        if self.shared.store_ok.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!(room = self.id(), "store reachable again");
            } else {
                tracing::warn!(
                    room = self.id(),
                    "store unreachable: keeping the last room view"
                );
            }
        }
    }
}

/// All rooms of the running config, and the store they share.
#[derive(Debug)]
pub struct Rooms {
    rooms: Vec<Arc<RoomRuntime>>,
    pub store: Arc<dyn Store>,
    pub refresh_every: Duration,
    metrics: Option<Arc<Metrics>>,
    /// Origin-aware admission: the shield's origin-health factor scales the planned rate.
    shield: Option<Shield>,
}

impl Rooms {
    pub fn new(rooms: Vec<Room>, store: Arc<dyn Store>, refresh_every: Duration) -> Self {
        Self {
            rooms: rooms
                .into_iter()
                .map(|r| Arc::new(RoomRuntime::new(r)))
                .collect(),
            store,
            refresh_every,
            metrics: None,
            shield: None,
        }
    }

    /// The rooms of a new config, carrying over the live state of every room that keeps its id.
    pub fn reconfigured(&self, rooms: Vec<Room>) -> Self {
        Self {
            rooms: rooms
                .into_iter()
                .map(|cfg| match self.by_id(&cfg.settings.id) {
                    Some(old) => Arc::new(old.reconfigured(cfg)),
                    None => Arc::new(RoomRuntime::new(cfg)),
                })
                .collect(),
            store: self.store.clone(),
            refresh_every: self.refresh_every,
            metrics: self.metrics.clone(),
            shield: self.shield.clone(),
        }
    }

    /// Scales each room's planned rate by the shield's origin-health factor (rooms with
    /// `[rooms.origin_aware]`; 1 for the others).
    pub fn with_shield(mut self, shield: Shield) -> Self {
        self.shield = Some(shield);
        self
    }

    /// Counts re-seeds in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn all(&self) -> &[Arc<RoomRuntime>] {
        &self.rooms
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<RoomRuntime>> {
        self.rooms.iter().find(|r| r.id() == id)
    }

    /// The room protecting `host` + `path` + `method`: the longest matching path prefix wins.
    pub fn find(&self, host: &str, path: &str, method: &str) -> Option<&Arc<RoomRuntime>> {
        let candidates = self.rooms.iter().enumerate().flat_map(|(i, r)| {
            let c = &r.cfg;
            let here = (c.hosts.is_empty() || c.hosts.iter().any(|h| h == host))
                && (c.methods.is_empty() || c.methods.iter().any(|m| m == method));
            let paths = if here { &c.paths[..] } else { &[] };
            paths.iter().map(move |p| (i, p.as_str(), 0))
        });
        crate::routing::longest(candidates, path).map(|i| &self.rooms[i])
    }

    /// Runs the controller slice and refreshes every room's view once.
    pub async fn refresh(&self) {
        for r in &self.rooms {
            let factor = self
                .shield
                .as_ref()
                .map_or(1.0, |s| s.origin_factor(r.id(), std::time::Instant::now()));
            r.shared
                .origin_factor
                .store(factor.to_bits(), Ordering::Relaxed);
            let _one_sync = r.shared.sync.lock().await;
            let synced = sync_room(
                self.store.as_ref(),
                &r.cfg.settings,
                &r.shared.marks,
                clock::now(),
                factor,
            );
            match synced.await {
                Ok(s) => {
                    if let Some(marks) = &s.reseeded {
                        tracing::warn!(
                            room = r.id(),
                            issued = marks.issued,
                            serving = marks.ctl.serving,
                            admitted_total = marks.ctl.admitted_total,
                            claimed_total = marks.claimed_total,
                            "store was behind this node's high-water marks (Redis lost state): \
                             re-seeded"
                        );
                        if let Some(m) = &self.metrics {
                            m.store_reseeds.with_label_values(&[r.id()]).inc();
                        }
                    }
                    r.set_store_ok(true);
                    r.install(s.snapshot);
                }
                Err(e) => {
                    tracing::debug!(room = r.id(), error = %e, "room refresh failed");
                    r.set_store_ok(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_in_at_most_once_a_minute() {
        let c = CheckIns::new();
        assert!(c.first_in_minute(7, 100));
        assert!(!c.first_in_minute(7, 100));
        assert!(c.first_in_minute(8, 100));
        assert!(c.first_in_minute(7, 101));
        assert!(!c.first_in_minute(7, 101));
    }

    #[test]
    fn recent_is_bounded() {
        let mut r = Recent::default();
        for i in 0..(ENDED_MEMORY as u64 + 10) {
            r.insert(i);
        }
        assert_eq!(r.set.len(), ENDED_MEMORY);
        assert!(!r.set.contains(&0));
        assert!(r.insert(0), "forgotten, so new again");
        assert!(!r.insert(0));
    }

    #[test]
    fn one_rating_per_ticket_and_event() {
        use crate::config::test_fixture::{self, with_shop, Room};
        let drop = Room::new("drop").paths(&["/"]);
        let mut cfg = test_fixture::parse("t.toml", &with_shop(&drop.to_string()));
        let r = RoomRuntime::new(cfg.rooms.remove(0));
        assert_eq!(r.feedback().average(), None);
        assert!(r.record_feedback(0, 7, 5));
        assert!(!r.record_feedback(0, 7, 1), "the same ticket again");
        assert!(r.record_feedback(1, 7, 2), "ticket 7 of another sale event");
        assert!(r.record_feedback(0, 8, 2));
        assert!(!r.record_feedback(0, 9, 0) && !r.record_feedback(0, 9, 6));
        assert!(
            r.record_feedback(0, 9, 4),
            "a refused value does not use the rating up"
        );
        let f = r.feedback();
        assert_eq!(f.by_rating, [0, 2, 0, 1, 1]);
        assert_eq!(f.count(), 4);
        assert_eq!(f.average(), Some(13.0 / 4.0));
    }
}
