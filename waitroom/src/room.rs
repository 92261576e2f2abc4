//! What applies to a room right now: config, the current event and live overrides merged, and
//! the state shoppers see.

use std::time::Duration;

use ring::hmac;

use crate::settings::{EventSettings, QueueingMethod, RoomSettings, SessionMode};
use crate::state::{Overrides, RoomSnapshot, RoomState};
use crate::time::{whole_minutes, UnixMillis};

/// Where the room is in its event schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No event window contains now: the room's own settings apply.
    Normal,
    /// The event's pre-queue is open.
    Prequeue,
    /// The event is running.
    Live,
}

/// Settings in force at one instant: live overrides > current event > room config.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective<'a> {
    pub new_users_per_minute: u32,
    pub total_active_users: u32,
    pub session_duration: Duration,
    pub session_mode: SessionMode,
    pub method: QueueingMethod,
    pub event: Option<&'a EventSettings>,
    pub phase: Phase,
    pub message: Option<&'a str>,
    pub paused: bool,
    pub queue_all: bool,
    pub drain: bool,
    pub sold_out: bool,
}

impl<'a> Effective<'a> {
    /// Merges the layers at `now`.
    pub fn at(settings: &'a RoomSettings, overrides: &'a Overrides, now: UnixMillis) -> Self {
        let event = settings.event_at(now);
        let phase = match event {
            None => Phase::Normal,
            Some(e) if now < e.starts_at => Phase::Prequeue,
            Some(_) => Phase::Live,
        };
        let ev = |f: fn(&EventSettings) -> Option<u32>| event.and_then(f);
        let new_users_per_minute = overrides
            .new_users_per_minute
            .or_else(|| ev(|e| e.new_users_per_minute.map(|n| n.get())))
            .unwrap_or(settings.new_users_per_minute.get());
        let total_active_users = overrides
            .total_active_users
            .or_else(|| ev(|e| e.total_active_users.map(|n| n.get())))
            .unwrap_or(settings.total_active_users.get());
        Self {
            new_users_per_minute,
            total_active_users,
            session_duration: event
                .and_then(|e| e.session_duration)
                .unwrap_or(settings.session_duration),
            session_mode: event
                .and_then(|e| e.session_mode)
                .unwrap_or(settings.session_mode),
            method: event.and_then(|e| e.method).unwrap_or(settings.method),
            event,
            phase,
            message: overrides
                .message
                .as_deref()
                .or_else(|| event.and_then(|e| e.message.as_deref()))
                .or(settings.message.as_deref()),
            paused: overrides.paused,
            queue_all: overrides.queue_all,
            drain: overrides.drain,
            sold_out: overrides.sold_out,
        }
    }

    /// Session length in whole minutes (the active-bucket window).
    pub fn session_minutes(&self) -> u32 {
        whole_minutes(self.session_duration)
    }

    /// The state shoppers see, given the room's numbers.
    pub fn state(&self, snap: &RoomSnapshot) -> RoomState {
        if self.sold_out {
            RoomState::SoldOut
        } else if self.method == QueueingMethod::Reject {
            RoomState::Closed
        } else if self.phase == Phase::Prequeue {
            RoomState::Prequeue
        } else if self.paused {
            RoomState::Paused
        } else if self.queue_all {
            RoomState::QueueAll
        } else if self.drain {
            if snap.waiting() == 0 {
                RoomState::Closed
            } else {
                RoomState::Draining
            }
        } else if self.method == QueueingMethod::Passthrough || snap.waiting() == 0 {
            RoomState::Idle
        } else {
            RoomState::Queueing
        }
    }
}

/// Whether the serving number may move in `state`.
pub fn admits(state: RoomState) -> bool {
    match state {
        RoomState::Idle | RoomState::Queueing | RoomState::Draining => true,
        RoomState::Prequeue
        | RoomState::Paused
        | RoomState::QueueAll
        | RoomState::SoldOut
        | RoomState::Closed => false,
    }
}

/// The shuffle seed of an event: fixed by the room secret and the event name, so every node
/// derives the same one and its hash can be published before the start.
pub fn event_seed(settings: &RoomSettings, event: &EventSettings) -> [u8; 32] {
    derive_seed(settings, b"event", event.name.as_bytes())
}

/// The seed of draw number `draw` of a `random` room.
pub fn draw_seed(settings: &RoomSettings, draw: u64) -> [u8; 32] {
    derive_seed(settings, b"draw", &draw.to_be_bytes())
}

fn derive_seed(settings: &RoomSettings, kind: &[u8], what: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &settings.seed_secret);
    let mut ctx = hmac::Context::with_key(&key);
    for part in [b"fg-seed-v1".as_slice(), kind, settings.id.as_bytes(), what] {
        ctx.update(&(part.len() as u32).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}
