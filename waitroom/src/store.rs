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

use crate::state::{ControllerState, Overrides, RoomSnapshot};
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

/// The counters of all rooms.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Numbers `count` new tickets; returns the first (numbers are consecutive).
    async fn issue(&self, room: &str, count: u64) -> Result<u64, StoreError>;

    /// A consistent read of the room (`now` is used by stores without a clock of their own).
    async fn snapshot(&self, room: &str, now: UnixMillis) -> Result<RoomSnapshot, StoreError>;

    /// Replaces the controller state if its version is still `expected`. Returns whether it won.
    async fn commit(
        &self,
        room: &str,
        expected: u64,
        next: &ControllerState,
    ) -> Result<bool, StoreError>;

    /// Lets an admitted ticket enter: exactly once per ticket, counted in `minute`.
    async fn claim(&self, room: &str, req: &ClaimRequest) -> Result<ClaimOutcome, StoreError>;

    /// Moves a pass holder's count from minute `from` to minute `to`.
    async fn check_in(
        &self,
        room: &str,
        ticket: u64,
        from: u32,
        to: u32,
    ) -> Result<CheckIn, StoreError>;

    /// Ends a ticket or session (leave, revoke): frees its active count in `minute` (if it
    /// entered) at once, and refuses the ticket from now on.
    async fn release(&self, room: &str, ticket: u64, minute: Option<u32>)
        -> Result<(), StoreError>;

    /// Replaces the live overrides of a room.
    async fn set_overrides(&self, room: &str, overrides: &Overrides) -> Result<(), StoreError>;
}
