//! # waitroom — Flashgate's admission core
//!
//! A sans-io state machine for fair virtual waiting rooms: no clock reads (time is an
//! argument), no randomness source (seeds derive from keys), no network, no runtime. The proxy
//! moves bytes; this crate decides.
//!
//! | concern | where |
//! |---|---|
//! | signed tickets and passes, key rotation, client binding | [`token`] |
//! | validated room and event settings | [`settings`] |
//! | settings in force now (event, live overrides), room state | [`room`] |
//! | the per-room numbers a store keeps | [`state`] |
//! | advancing the serving number (rate, capacity, no-shows, shuffle) | [`controller`] |
//! | what to do with one request | [`admission`] |
//! | waiting-time estimates | [`eta`] |
//! | the auditable shuffle | [`shuffle`] |
//! | the storage interface, and the in-memory store | [`store`], [`memory`] |
//!
//! ## Guarantees
//! Checked after every step of the seeded simulation (`tests/simulation.rs`) and by the
//! property tests: entries per minute never exceed `new_users_per_minute`; active shoppers never
//! exceed `total_active_users` at admission; the serving number never decreases; only tickets at
//! positions ≤ serving enter, in position order of admission; each ticket enters at most once;
//! nobody enters while paused; the pre-queue order equals [`shuffle::order`] of the revealed
//! seed; tokens verify before expiry and never after.

#![forbid(unsafe_code)]

pub mod admission;
pub mod controller;
pub mod entry;
pub mod eta;
pub mod memory;
pub mod room;
pub mod settings;
pub mod shuffle;
pub mod state;
pub mod store;
pub mod time;
pub mod token;

pub use admission::{Credential, Decision, RejectReason, RoomView, WaitInfo};
pub use memory::MemoryStore;
pub use settings::{EventSettings, QueueingMethod, RoomSettings, SessionMode};
pub use state::{Overrides, RoomSnapshot, RoomState};
pub use store::{CheckIn, ClaimOutcome, ClaimRequest, HighWater, Store, StoreError, StoreResult};
pub use time::UnixMillis;
pub use token::{Binding, KeyRing, Pass, Ticket, TokenError};
