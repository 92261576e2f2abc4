//! The storage interface: numbers in, numbers out.
//!
//! A store keeps the per-room counters described in [`crate::state`] and applies changes
//! atomically. It makes no admission decisions beyond the few comparisons that must be atomic
//! with a write (a claim's capacity and per-minute checks, the controller's compare-and-set);
//! the numbers it compares with are computed by the core and passed in.
//!
//! Two implementations: [`crate::memory::MemoryStore`] (embedded default) here, and the Redis
//! adapter in the proxy. Both are exercised by the same simulation.

use std::time::Duration;

use async_trait::async_trait;

use crate::state::{ControllerState, MinuteCount, Overrides, RoomSnapshot};
use crate::time::UnixMillis;

/// A store failure. The gate applies the room's `on_store_error` policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store returned unexpected data: {0}")]
    Protocol(String),
}

/// What a claim must respect, computed by the core from the effective settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimRequest {
    pub ticket: u64,
    /// The ticket's queue position (≤ serving, or the claim is refused).
    pub position: u64,
    /// The minute the new pass checks in to.
    pub minute: u32,
    pub now: UnixMillis,
    pub claim_window: Duration,
    /// Hard cap of entries per UTC minute.
    pub max_per_minute: u64,
    /// Active-user cap, checked for claims outside their reservation.
    pub cap: u64,
    pub session_minutes: u32,
    /// Passthrough rooms count entries but enforce neither cap.
    pub unlimited: bool,
}

/// The result of a claim.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The ticket entered and is now counted as active.
    Entered,
    /// This ticket already entered once (a replay, or a second tab).
    AlreadyEntered,
    /// The position is beyond the serving number.
    NotYet,
    /// The reservation expired and the room is full right now: try again shortly.
    Full,
    /// This minute's entries are used up: try again next minute.
    MinuteFull,
    /// The ticket was given up (leave) and cannot enter.
    Ended,
}

/// The result of moving a pass holder to the current minute.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckIn {
    Moved,
    /// The session was ended (leave or revoke): the pass must not be honoured any more.
    Ended,
}

/// What a node has seen of a room: the floor the store's numbers must not fall below.
///
/// A node records every snapshot it reads ([`HighWater::observe`]). If a later snapshot is
/// [`behind`](HighWater::behind) (Redis restarted empty, or a failover lost writes), the node
/// calls [`Store::reseed`] before committing anything, so that the ticket counter, the serving
/// number and the entry counts never go backwards. Counts that legitimately fall (active
/// minutes, claims per minute) are merged by maximum, which can only over-count: the caps stay
/// safe.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HighWater {
    /// Highest ticket counter seen, plus a margin for tickets other nodes numbered after this
    /// node's last read (see the proxy's `rooms` module).
    pub issued: u64,
    pub claimed_total: u64,
    /// The newest controller state seen (history records carry their claims).
    pub ctl: ControllerState,
    /// Active shoppers by check-in minute, as last seen.
    pub active: Vec<MinuteCount>,
    pub claims_minute: u32,
    pub claims_in_minute: u64,
    /// The live overrides last seen: restored if the store has none at all (a pause must not
    /// be lifted by a Redis restart).
    pub overrides: Overrides,
}

impl HighWater {
    /// Records a snapshot that is not [`behind`](Self::behind) (it becomes the new floor).
    pub fn observe(&mut self, snap: &RoomSnapshot) {
        self.issued = self.issued.max(snap.issued);
        self.claimed_total = self.claimed_total.max(snap.claimed_total);
        if snap.ctl.version >= self.ctl.version {
            self.ctl = snap.ctl.clone();
        }
        self.active = snap.active.clone();
        self.claims_minute = snap.claims_minute;
        self.claims_in_minute = snap.claims_in_minute;
        self.overrides = snap.overrides.clone();
    }

    /// Whether `snap` shows the store behind what this node saw: one of the numbers that only
    /// ever grow went backwards.
    pub fn behind(&self, snap: &RoomSnapshot) -> bool {
        snap.issued < self.issued
            || snap.claimed_total < self.claimed_total
            || snap.ctl.version < self.ctl.version
            || snap.ctl.serving < self.ctl.serving
            || snap.ctl.admitted_total < self.ctl.admitted_total
    }

    /// The controller state a reseed writes over `current`, or `None` if `current` is not
    /// behind. When the stored state is older than the one seen, the seen one is restored
    /// (history, credit, shuffle ranges included); counters are raised to the maximum of both;
    /// the version jumps past both, so a commit planned on a pre-loss snapshot can never win.
    pub fn merged_ctl(&self, current: &ControllerState) -> Option<ControllerState> {
        let hw = &self.ctl;
        if current.version >= hw.version
            && current.serving >= hw.serving
            && current.admitted_total >= hw.admitted_total
        {
            return None;
        }
        let mut c = if current.version < hw.version {
            hw.clone()
        } else {
            current.clone()
        };
        c.serving = current.serving.max(hw.serving);
        c.admitted_total = current.admitted_total.max(hw.admitted_total);
        c.draws = current.draws.max(hw.draws);
        c.version = current.version.max(hw.version) + 1;
        Some(c)
    }
}

/// What a store call returns.
pub type StoreResult<T> = Result<T, StoreError>;

/// The counters of all rooms.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Numbers `count` new tickets; returns the first (numbers are consecutive).
    async fn issue(&self, room: &str, count: u64) -> StoreResult<u64>;

    /// A consistent read of the room (`now` is used by stores without a clock of their own).
    async fn snapshot(&self, room: &str, now: UnixMillis) -> StoreResult<RoomSnapshot>;

    /// Replaces the controller state if its version is still `expected`. Returns whether it won.
    async fn commit(&self, room: &str, expected: u64, next: &ControllerState) -> StoreResult<bool>;

    /// Lets an admitted ticket enter: exactly once per ticket, counted in `minute`. Refused
    /// with `NotYet` while the room's overrides say paused, queue_all or sold_out, so a node
    /// whose view predates the change cannot let anyone in.
    async fn claim(&self, room: &str, req: &ClaimRequest) -> StoreResult<ClaimOutcome>;

    /// Moves a pass holder's count from minute `from` to minute `to`. Ticket numbers start at
    /// 1; a pass for ticket 0 was minted without the store (the proxy's floor-rate policy
    /// during an outage) and is not counted: its check-ins change nothing.
    async fn check_in(&self, room: &str, ticket: u64, from: u32, to: u32) -> StoreResult<CheckIn>;

    /// Ends a ticket or session (leave, revoke): frees its active count in `minute` (if it
    /// entered) at once, and refuses the ticket from now on.
    async fn release(&self, room: &str, ticket: u64, minute: Option<u32>) -> StoreResult<()>;

    /// Replaces the live overrides of a room.
    async fn set_overrides(&self, room: &str, overrides: &Overrides) -> StoreResult<()>;

    /// Raises the room's numbers to at least `marks` (see [`HighWater`]), atomically: the ticket
    /// counter, entries ever, the controller state ([`HighWater::merged_ctl`], by
    /// compare-and-set), claims per advance, active minutes and this minute's entries, each by
    /// maximum; the overrides only if the store has none. Numbers already above the marks are
    /// left alone, so any node may call it.
    async fn reseed(&self, room: &str, marks: &HighWater) -> StoreResult<()>;
}
