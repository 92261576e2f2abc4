//! The numbers a store keeps per room, and the room states shoppers see.
//!
//! Ownership of the fields decides what needs to be atomic:
//! - `issued` is only ever incremented (ticket issue);
//! - active-minute buckets and claim counters are changed by claims, check-ins and releases;
//! - [`ControllerState`] is owned by the controller and replaced as a whole with a
//!   compare-and-set on its `version` (one winner per time slice, any node may try);
//! - [`Overrides`] are replaced by operators.
//!
//! Concurrent changes to the first two only ever *loosen* the controller's constraints (more
//! tickets to admit from; a claim moves one unit from "pending" to "active"; a release frees
//! one), so a controller decision computed from a slightly older snapshot never breaks a cap.

use crate::time::UnixMillis;

/// What a shopper (and the operator) sees the room doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomState {
    /// Nobody is waiting: arrivals go straight in.
    Idle,
    /// An event's pre-queue is open: tickets are handed out, nobody is admitted yet.
    Prequeue,
    /// Arrivals wait their turn.
    Queueing,
    /// An operator paused admissions.
    Paused,
    /// Every new arrival queues and nobody is admitted (operator switch).
    QueueAll,
    /// No new tickets; those already waiting are still admitted.
    Draining,
    /// The sale is sold out: nobody else is admitted.
    SoldOut,
    /// The sale is closed (method `reject`, or a drained room).
    Closed,
}

impl RoomState {
    pub const ALL: [RoomState; 8] = [
        Self::Idle,
        Self::Prequeue,
        Self::Queueing,
        Self::Paused,
        Self::QueueAll,
        Self::Draining,
        Self::SoldOut,
        Self::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Prequeue => "prequeue",
            Self::Queueing => "queueing",
            Self::Paused => "paused",
            Self::QueueAll => "queue_all",
            Self::Draining => "draining",
            Self::SoldOut => "sold_out",
            Self::Closed => "closed",
        }
    }
}

/// Live changes made by operators; they win over the config and the current event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub new_users_per_minute: Option<u32>,
    pub total_active_users: Option<u32>,
    pub paused: bool,
    pub queue_all: bool,
    pub drain: bool,
    pub sold_out: bool,
    pub message: Option<String>,
}

/// Shoppers whose last check-in fell in `minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteCount {
    pub minute: u32,
    pub count: u64,
}

/// One advance of the serving number, kept while its admissions may still be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvanceRecord {
    pub at: UnixMillis,
    /// Serving number after this advance: it admitted positions
    /// `serving_after - admitted + 1 ..= serving_after`.
    pub serving_after: u64,
    pub admitted: u64,
    /// Claims of those positions so far (kept by the claim path, not by the controller).
    pub claimed: u64,
}

/// Ticket numbers `lo+1 ..= hi` are placed in a keyed random order (positions stay in that
/// range). Used for the shuffled pre-queue and for the draws of `random` rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuffleRange {
    pub lo: u64,
    pub hi: u64,
    pub seed: [u8; 32],
}

/// The controller's own numbers, replaced as a whole by compare-and-set on `version`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControllerState {
    pub version: u64,
    /// Start of the last slice the controller ran in (idempotence per slice).
    pub last_tick: UnixMillis,
    pub serving: u64,
    /// Rate budget carried between slices, in thousandths of an admission.
    pub credit_milli: u64,
    /// UTC minute of `advanced_in_minute`.
    pub minute: u32,
    pub advanced_in_minute: u64,
    /// Advances still inside the claim window (with claims merged in by the store).
    pub history: Vec<AdvanceRecord>,
    /// Shuffled ranges not yet fully admitted.
    pub ranges: Vec<ShuffleRange>,
    /// Smoothed share of admissions never claimed, in thousandths.
    pub noshow_milli: u32,
    /// Random-room draws made so far.
    pub draws: u64,
    /// Event whose pre-queue was seen open, and the ticket counter then.
    pub prequeue_event: u32,
    pub prequeue_base: u64,
    /// Event whose start (and shuffle) has been applied.
    pub started_event: u32,
    /// Size of that event's shuffled pre-queue (shown for audits).
    pub prequeue_count: u64,
    /// Total admissions (serving advances) ever; with claims this gives no-shows.
    pub admitted_total: u64,
}

/// A consistent read of one room.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomSnapshot {
    /// Store time of the read (Redis `TIME`, or the caller's clock for the memory store).
    pub time: UnixMillis,
    pub issued: u64,
    /// Tickets that have entered (claims) ever.
    pub claimed_total: u64,
    /// Active shoppers by check-in minute (only live minutes).
    pub active: Vec<MinuteCount>,
    /// Claims in the current minute (the hard per-minute entry cap).
    pub claims_minute: u32,
    pub claims_in_minute: u64,
    pub ctl: ControllerState,
    pub overrides: Overrides,
}

impl RoomSnapshot {
    /// Active shoppers counted in the minutes `now_minute - session_minutes ..= now_minute`.
    pub fn active_total(&self, now_minute: u32, session_minutes: u32) -> u64 {
        let oldest = now_minute.saturating_sub(session_minutes);
        self.active
            .iter()
            .filter(|m| m.minute >= oldest && m.minute <= now_minute)
            .map(|m| m.count)
            .sum()
    }

    /// Admissions inside the claim window not yet claimed: capacity reserved for them.
    pub fn pending(&self, now: UnixMillis, claim_window: std::time::Duration) -> u64 {
        self.ctl
            .history
            .iter()
            .filter(|r| now.since(r.at) < claim_window)
            .map(|r| r.admitted.saturating_sub(r.claimed))
            .sum()
    }

    /// Tickets issued but not yet admitted.
    pub fn waiting(&self) -> u64 {
        self.issued.saturating_sub(self.ctl.serving)
    }
}
