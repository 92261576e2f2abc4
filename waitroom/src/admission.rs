//! The admission decision: what to do with one request, given the room's view.
//!
//! The gate in the proxy turns a request into a [`Credential`] (a verified pass, a verified
//! ticket, or nothing — a bad token is nothing), asks [`RoomView::decide`], and carries out the
//! [`Decision`]. Only two decisions need the store: [`Decision::NeedTicket`] (number a new
//! arrival) and [`Decision::Admit`] (claim the entry, then mint a pass). A valid pass never needs
//! one; a waiting shopper's poll never needs one either — it is answered from the view, which
//! the node refreshes from the store a few times a second.

use std::time::Duration;

use crate::eta::{EtaBand, EtaEstimator};
use crate::room::{event_seed, Effective, Phase};
use crate::settings::{QueueingMethod, RoomSettings, SessionMode};
use crate::shuffle::{seed_hash, Permutation};
use crate::state::{RoomSnapshot, RoomState};
use crate::store::ClaimRequest;
use crate::time::UnixMillis;
use crate::token::{Pass, Ticket};

/// What the request carries, after verification.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    None,
    Ticket(&'a Ticket),
    Pass(&'a Pass),
}

/// Why a shopper cannot get in or queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The sale is closed (method `reject`, or drained and empty).
    Closed,
    /// The sale sold out.
    SoldOut,
    /// The line is closed to newcomers while it drains.
    Draining,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::SoldOut => "sold_out",
            Self::Draining => "draining",
        }
    }
}

/// Everything a waiting page or status JSON shows.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitInfo {
    pub state: RoomState,
    pub ticket: u64,
    /// Place in line among those not yet admitted (1 = next); `None` before a draw.
    pub position: Option<u64>,
    /// People in front.
    pub ahead: Option<u64>,
    /// The serving number this was computed with.
    pub serving: u64,
    pub eta: Option<EtaBand>,
    /// When to ask again.
    pub poll_after: Duration,
    /// Start of the event, while it has not started.
    pub starts_at: Option<UnixMillis>,
    pub message: Option<String>,
    /// SHA-256 of the event's shuffle seed (published from the pre-queue on).
    pub seed_hash: Option<[u8; 32]>,
    /// The seed itself, once the event started.
    pub seed: Option<[u8; 32]>,
    /// Size of the shuffled pre-queue, once drawn.
    pub prequeue_count: Option<u64>,
    /// Share of the way from joining to the front, 0..=1.
    pub progress: Option<f64>,
    /// The ticket with `last_seen` renewed: set it again so the place is kept.
    pub renewed: Ticket,
}

/// The outcome for one request. Exhaustive: the proxy maps each to a response.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A valid pass: forward to the origin. When `renewed` is set, send the new pass; when
    /// `check_in` is set, move the shopper's active count between minutes (off the request path).
    Allow {
        renewed: Option<Pass>,
        check_in: Option<(u32, u32)>,
    },
    /// No usable token and the room takes newcomers: number a ticket, then decide again.
    NeedTicket,
    /// The ticket's turn has come: claim the entry (with this request), then mint a pass.
    Admit(ClaimRequest),
    /// Keep waiting.
    Wait(Box<WaitInfo>),
    /// Not now: show the closed / sold-out page.
    Reject(RejectReason),
}

/// A node's read-only picture of one room, rebuilt from each store snapshot.
#[derive(Debug, Clone)]
pub struct RoomView {
    pub snapshot: RoomSnapshot,
    pub state: RoomState,
    pub event_id: u32,
    pub starts_at: Option<UnixMillis>,
    pub method: QueueingMethod,
    pub new_users_per_minute: u32,
    pub total_active_users: u32,
    pub session_duration: Duration,
    pub session_mode: SessionMode,
    pub session_minutes: u32,
    pub message: Option<String>,
    seed_hash: Option<[u8; 32]>,
    seed: Option<[u8; 32]>,
    perms: Vec<(u64, u64, Permutation)>,
    eta: EtaEstimator,
}

impl RoomView {
    /// Builds the view from a snapshot; `eta` carries the node's admission-rate history.
    pub fn new(settings: &RoomSettings, snapshot: RoomSnapshot, eta: &EtaEstimator) -> Self {
        let now = snapshot.time;
        let eff = Effective::at(settings, &snapshot.overrides, now);
        let state = eff.state(&snapshot);
        let (seed_hash, seed) = match eff.event {
            Some(e) if e.shuffle => {
                let s = event_seed(settings, e);
                (Some(seed_hash(&s)), (eff.phase == Phase::Live).then_some(s))
            }
            _ => (None, None),
        };
        let perms = snapshot
            .ctl
            .ranges
            .iter()
            .map(|r| (r.lo, r.hi, Permutation::new(&r.seed, r.hi - r.lo)))
            .collect();
        Self {
            state,
            event_id: eff.event.map_or(0, |e| e.id),
            starts_at: eff
                .event
                .filter(|_| eff.phase == Phase::Prequeue)
                .map(|e| e.starts_at),
            method: eff.method,
            new_users_per_minute: eff.new_users_per_minute,
            total_active_users: eff.total_active_users,
            session_duration: eff.session_duration,
            session_mode: eff.session_mode,
            session_minutes: eff.session_minutes(),
            message: eff.message.map(str::to_owned),
            seed_hash,
            seed,
            perms,
            eta: eta.clone(),
            snapshot,
        }
    }

    /// Estimated wait for someone with `ahead` people in front, while the room admits.
    pub fn eta_for(&self, ahead: u64) -> Option<EtaBand> {
        matches!(
            self.state,
            RoomState::Idle | RoomState::Queueing | RoomState::Draining
        )
        .then(|| {
            self.eta
                .estimate(ahead, f64::from(self.new_users_per_minute))
        })
        .flatten()
    }

    /// Whether every status answer computed from `other` would be the one computed from this
    /// view at the same instant: the same state, message, serving number, draws, claims and
    /// active counts, and the same admission history for the ETA. Ignores what changes on
    /// every refresh without changing an answer (the read's time, the ticket counter, the
    /// controller's slice bookkeeping), so that a room publishes a change only when there is
    /// one to push.
    pub fn same_answers(&self, other: &RoomView) -> bool {
        let (a, b) = (&self.snapshot, &other.snapshot);
        self.state == other.state
            && self.event_id == other.event_id
            && self.starts_at == other.starts_at
            && self.method == other.method
            && self.new_users_per_minute == other.new_users_per_minute
            && self.total_active_users == other.total_active_users
            && self.session_minutes == other.session_minutes
            && self.message == other.message
            && self.seed_hash == other.seed_hash
            && self.seed == other.seed
            && a.ctl.serving == b.ctl.serving
            && a.ctl.history == b.ctl.history
            && a.ctl.ranges == b.ctl.ranges
            && a.ctl.started_event == b.ctl.started_event
            && a.ctl.prequeue_count == b.ctl.prequeue_count
            && a.ctl.admitted_total == b.ctl.admitted_total
            && a.active == b.active
            && a.claims_minute == b.claims_minute
            && a.claims_in_minute == b.claims_in_minute
            && a.claimed_total == b.claimed_total
    }

    /// The serving number.
    pub fn serving(&self) -> u64 {
        self.snapshot.ctl.serving
    }

    /// The queue position of ticket `number` (positions ≤ serving may enter), or `None` while
    /// its order is not drawn yet (pre-queue before the start, or a random room's next draw).
    pub fn position(&self, number: u64) -> Option<u64> {
        for (lo, hi, p) in &self.perms {
            if number > *lo && number <= *hi {
                return Some(lo + 1 + p.position(number - lo - 1));
            }
        }
        let undrawn = match self.method {
            QueueingMethod::Random => number > self.serving(),
            // A shuffled event's order exists once the controller has applied the start: not
            // in the pre-queue, nor between the start and the controller's next slice.
            _ => self.seed_hash.is_some() && self.snapshot.ctl.started_event != self.event_id,
        };
        (!undrawn).then_some(number)
    }

    /// Decides what to do with a request at `now`.
    pub fn decide(
        &self,
        settings: &RoomSettings,
        cred: Credential<'_>,
        now: UnixMillis,
    ) -> Decision {
        match cred {
            Credential::Pass(p) => self.allow(p, now),
            Credential::None => match self.state {
                RoomState::SoldOut => Decision::Reject(RejectReason::SoldOut),
                RoomState::Closed => Decision::Reject(RejectReason::Closed),
                RoomState::Draining => Decision::Reject(RejectReason::Draining),
                RoomState::Idle
                | RoomState::Prequeue
                | RoomState::Queueing
                | RoomState::Paused
                | RoomState::QueueAll => Decision::NeedTicket,
            },
            Credential::Ticket(t) => self.ticket(settings, t, now),
        }
    }

    fn allow(&self, p: &Pass, now: UnixMillis) -> Decision {
        let minute = now.minute();
        // Past `expires_at` a pass is honoured only through the clock-skew leeway: the session
        // is over, so it is neither renewed nor checked in again (its active-minute bucket may
        // have left the window; counting it again would bypass the capacity check).
        if minute <= p.checkin_minute || now.secs() > p.expires_at {
            return Decision::Allow {
                renewed: None,
                check_in: None,
            };
        }
        let mut renewed = p.clone();
        renewed.checkin_minute = minute;
        if !p.fixed_session {
            renewed.expires_at = now.plus(self.session_duration).secs();
        }
        Decision::Allow {
            renewed: Some(renewed),
            check_in: Some((p.checkin_minute, minute)),
        }
    }

    fn ticket(&self, settings: &RoomSettings, t: &Ticket, now: UnixMillis) -> Decision {
        let position = self.position(t.number);
        let may_enter = match self.state {
            RoomState::SoldOut => return Decision::Reject(RejectReason::SoldOut),
            RoomState::Closed => return Decision::Reject(RejectReason::Closed),
            RoomState::Prequeue | RoomState::Paused | RoomState::QueueAll => false,
            RoomState::Idle | RoomState::Queueing | RoomState::Draining => true,
        };
        let unlimited = self.method == QueueingMethod::Passthrough;
        if may_enter && (unlimited || position.is_some_and(|p| p <= self.serving())) {
            return Decision::Admit(ClaimRequest {
                ticket: t.number,
                position: position.unwrap_or(t.number),
                minute: now.minute(),
                now,
                claim_window: settings.claim_window,
                max_per_minute: u64::from(self.new_users_per_minute),
                cap: u64::from(self.total_active_users),
                session_minutes: self.session_minutes,
                unlimited,
            });
        }
        Decision::Wait(Box::new(self.wait_info(settings, t, position, now)))
    }

    /// Whether a claim would likely pass the store's checks, judged from this view: the minute's
    /// entry cap and, for a lapsed reservation, the room's capacity. Status polls use it so a
    /// page is sent to the shop only when it will get in (the store still decides exactly).
    pub fn likely_claimable(&self, req: &ClaimRequest) -> bool {
        if req.unlimited {
            return true;
        }
        let snap = &self.snapshot;
        let used = if snap.claims_minute == req.minute {
            snap.claims_in_minute
        } else {
            0
        };
        if used >= req.max_per_minute {
            return false;
        }
        let reserved = snap.ctl.history.iter().any(|r| {
            r.serving_after >= req.position
                && r.serving_after - r.admitted < req.position
                && req.now.since(r.at) < req.claim_window
                && r.claimed < r.admitted
        });
        reserved
            || snap.active_total(req.minute, req.session_minutes)
                + snap.pending(req.now, req.claim_window)
                < req.cap
    }

    /// The status of a waiting ticket (also used after a claim said "not yet").
    pub fn wait_info(
        &self,
        settings: &RoomSettings,
        t: &Ticket,
        position: Option<u64>,
        now: UnixMillis,
    ) -> WaitInfo {
        let serving = self.serving();
        let place = position.map(|p| p.saturating_sub(serving).max(1));
        let ahead = place.map(|p| p - 1);
        let flowing = matches!(
            self.state,
            RoomState::Idle | RoomState::Queueing | RoomState::Draining
        );
        let configured = f64::from(self.new_users_per_minute);
        let eta = match (ahead, self.state) {
            (Some(a), _) if flowing => self.eta.estimate(a, configured),
            // Before the start: the wait after the start, plus the time to the start.
            (Some(a), RoomState::Prequeue) => {
                let to_start = self.starts_at.map_or(Duration::ZERO, |s| s.since(now));
                EtaEstimator::new()
                    .estimate(a, configured)
                    .map(|b| EtaBand {
                        mid: b.mid + to_start,
                        low: b.low + to_start,
                        high: b.high + to_start,
                    })
            }
            _ => None,
        };
        // Far back in a long line, poll less often: it spares the fleet and costs no accuracy.
        let base = settings.poll_interval;
        let poll_after = match eta {
            Some(b) if flowing => {
                (b.low / 10).clamp(base, (base * 4).min(settings.abandon_after / 3))
            }
            _ => base,
        };
        let progress = position.map(|p| {
            let span = p.saturating_sub(t.serving_at_issue).max(1) as f64;
            (serving.saturating_sub(t.serving_at_issue) as f64 / span).clamp(0.0, 1.0)
        });
        let mut renewed = t.clone();
        renewed.last_seen = now.secs();
        renewed.expires_at = now.plus(settings.abandon_after).secs();
        WaitInfo {
            // A ticket that must wait is in a queueing room, even if this view (a few ms old)
            // has not yet seen the ticket counter move.
            state: match self.state {
                RoomState::Idle => RoomState::Queueing,
                s => s,
            },
            ticket: t.number,
            position: place,
            ahead,
            serving,
            eta,
            poll_after,
            starts_at: self.starts_at,
            message: self.message.clone(),
            seed_hash: self.seed_hash,
            seed: self.seed,
            prequeue_count: (self.snapshot.ctl.started_event == self.event_id
                && self.event_id != 0)
                .then_some(self.snapshot.ctl.prequeue_count),
            progress,
            renewed,
        }
    }

    /// A new ticket for number `number`, issued at `now`.
    pub fn new_ticket(
        &self,
        settings: &RoomSettings,
        number: u64,
        binding: u64,
        now: UnixMillis,
    ) -> Ticket {
        Ticket {
            room: settings.id.clone(),
            event: self.event_id,
            number,
            issued_at: now.secs(),
            last_seen: now.secs(),
            expires_at: now.plus(settings.abandon_after).secs(),
            binding,
            serving_at_issue: self.serving(),
        }
    }

    /// The pass minted after a successful claim.
    pub fn new_pass(&self, settings: &RoomSettings, ticket: &Ticket, now: UnixMillis) -> Pass {
        Pass {
            room: settings.id.clone(),
            event: self.event_id,
            ticket: ticket.number,
            admitted_at: now.secs(),
            checkin_minute: now.minute(),
            expires_at: now.plus(self.session_duration).secs(),
            binding: ticket.binding,
            fixed_session: self.session_mode == SessionMode::Fixed,
        }
    }
}
