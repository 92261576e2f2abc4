//! The controller: advances the serving number once per time slice.
//!
//! Each slice it lets in `min(rate budget, free capacity, people waiting + lead)` more
//! positions:
//! - **rate budget**: credit accrues continuously at `new_users_per_minute`, compensated for the
//!   measured no-show share (`rate / (1 - noshow)`, bounded by `max_noshow`), carried over in
//!   thousandths so fractional rates are exact over time; at most two slices of credit are
//!   banked, and a pause forfeits it, so a backlog never turns into a burst. Advances in one UTC
//!   minute never exceed the compensated rate, and *entries* (claims) in one minute never exceed
//!   `new_users_per_minute` — that cap is checked atomically by the store on each claim.
//! - **free capacity**: `total_active_users − active − pending`, where pending counts admissions
//!   inside the claim window that nobody has claimed yet. So active users never exceed the cap
//!   at admission time, no-shows included.
//! - **lead**: when nobody waits, serving may run one slice of budget ahead of the ticket
//!   counter, so arrivals in a quiet room go straight in without waiting for a slice.
//!
//! At an event's start it freezes the pre-queue (tickets issued since the pre-queue opened) into
//! a shuffled range; in `random` rooms it closes a draw over everyone waiting whenever the
//! previous draw is used up.
//!
//! [`plan`] is pure. [`tick`] reads, plans and commits with compare-and-set, so any number of
//! nodes may call it every slice: at most one commit per slice wins, the others see the slice
//! done and stop.

use crate::room::{admits, draw_seed, event_seed, Effective, Phase};
use crate::settings::{QueueingMethod, RoomSettings};
use crate::state::{AdvanceRecord, ControllerState, RoomSnapshot, ShuffleRange};
use crate::store::{Store, StoreError};
use crate::time::UnixMillis;

/// Computes the next controller state, or `None` if this slice was already done.
pub fn plan(
    settings: &RoomSettings,
    snap: &RoomSnapshot,
    now: UnixMillis,
) -> Option<ControllerState> {
    let tick_ms = (settings.tick.as_millis() as u64).max(1);
    let slice = UnixMillis(now.0 / tick_ms * tick_ms);
    let old = &snap.ctl;
    if old.version > 0 && old.last_tick >= slice {
        return None;
    }
    let elapsed_ms = if old.version == 0 {
        tick_ms
    } else {
        slice.0.saturating_sub(old.last_tick.0).min(tick_ms * 2)
    };
    let eff = Effective::at(settings, &snap.overrides, now);
    let mut c = old.clone();
    c.last_tick = slice;

    // No-shows are learned only while shoppers can actually enter: admissions that expire in a
    // pre-queue, a pause or a closed room were unclaimable, not abandoned (counting them would
    // push the compensation to its ceiling and over-admit after the start).
    let learn = admits(eff.state(snap))
        && matches!(eff.method, QueueingMethod::Fifo | QueueingMethod::Random);
    expire_history(settings, snap, &mut c, now, learn);
    apply_phase(
        settings,
        snap,
        &eff,
        &mut c,
        now,
        UnixMillis(slice.0 + 2 * tick_ms),
    );

    let state = eff.state(snap);
    if !admits(state) || eff.method != QueueingMethod::Fifo && eff.method != QueueingMethod::Random
    {
        c.credit_milli = 0;
        c.ranges.retain(|r| r.hi > c.serving);
        return Some(c);
    }

    // Rate budget, compensated for no-shows.
    let noshow = u64::from(c.noshow_milli).min((settings.max_noshow * 1000.0) as u64);
    let rate = u64::from(eff.new_users_per_minute);
    let rate_eff_milli_per_min = rate * 1_000_000 / (1000 - noshow); // thousandths per minute
    let per_slice_milli = rate_eff_milli_per_min * tick_ms / 60_000;
    let credit_cap = (per_slice_milli * 2).max(1000);
    if old.version == 0 {
        // A room that has never run is a room at rest: its bank is full.
        c.credit_milli = credit_cap;
    }
    c.credit_milli += rate_eff_milli_per_min * elapsed_ms / 60_000;
    c.credit_milli = c.credit_milli.min(credit_cap);
    if c.minute != now.minute() {
        c.minute = now.minute();
        c.advanced_in_minute = 0;
    }
    let minute_cap = rate_eff_milli_per_min.div_ceil(1000);
    // Never admit more than this minute can still let in: entries are capped exactly per
    // minute, and positions admitted beyond the cap would wait for the next minute and then
    // enter by when they poll rather than by their place (FIFO). Expected claims of pending
    // admissions are discounted by the measured no-show share.
    let claims_now = if snap.claims_minute == now.minute() {
        snap.claims_in_minute
    } else {
        0
    };
    let pending_now: u64 = c
        .history
        .iter()
        .map(|r| r.admitted.saturating_sub(r.claimed))
        .sum();
    let expected = pending_now * (1000 - noshow) / 1000;
    let minute_room = rate.saturating_sub(claims_now + expected);
    let budget = (c.credit_milli / 1000)
        .min(minute_cap.saturating_sub(c.advanced_in_minute))
        .min(minute_room);

    // Free capacity.
    let active = snap.active_total(now.minute(), eff.session_minutes());
    let pending: u64 = c
        .history
        .iter()
        .map(|r| r.admitted.saturating_sub(r.claimed))
        .sum();
    let free = u64::from(eff.total_active_users).saturating_sub(active + pending);

    // How far serving may go.
    let lead = if eff.drain {
        0
    } else {
        per_slice_milli.div_ceil(1000).max(1)
    };
    let mut target = snap.issued + lead;
    if eff.method == QueueingMethod::Random && snap.issued > c.serving {
        let open = c.ranges.iter().find(|r| r.hi > c.serving).copied();
        let range = match open {
            Some(r) => r,
            None => {
                c.draws += 1;
                let r = ShuffleRange {
                    lo: c.serving,
                    hi: snap.issued,
                    seed: draw_seed(settings, c.draws),
                };
                c.ranges.push(r);
                r
            }
        };
        target = range.hi;
    }

    let delta = budget.min(free).min(target.saturating_sub(c.serving));
    if delta > 0 {
        c.serving += delta;
        c.credit_milli -= delta * 1000;
        c.advanced_in_minute += delta;
        c.admitted_total += delta;
        c.history.push(AdvanceRecord {
            at: now,
            serving_after: c.serving,
            admitted: delta,
            claimed: 0,
        });
    }
    c.ranges.retain(|r| r.hi > c.serving);
    Some(c)
}

/// Drops advances whose claim window has passed, learning the no-show share from them.
fn expire_history(
    settings: &RoomSettings,
    snap: &RoomSnapshot,
    c: &mut ControllerState,
    now: UnixMillis,
    learn: bool,
) {
    let window = settings.claim_window;
    let mut kept = Vec::with_capacity(c.history.len() + 1);
    for r in c.history.drain(..) {
        if now.since(r.at) < window {
            kept.push(r);
            continue;
        }
        if !learn {
            continue;
        }
        // Positions beyond the ticket counter were lead slots nobody arrived for: not no-shows.
        let phantom = r.serving_after.saturating_sub(snap.issued).min(r.admitted);
        let real = r.admitted - phantom;
        if real == 0 {
            continue;
        }
        let shown = r.claimed.min(real);
        let sample = (real - shown) * 1000 / real;
        // EWMA weighted by the batch size: big batches teach more than single admissions.
        let weight = (real * 1000 / (real + 20)).min(500);
        let cur = u64::from(c.noshow_milli);
        c.noshow_milli = ((cur * (1000 - weight) + sample * weight) / 1000) as u32;
    }
    c.history = kept;
}

/// Pre-queue bookkeeping and the start-of-event shuffle.
fn apply_phase(
    settings: &RoomSettings,
    snap: &RoomSnapshot,
    eff: &Effective<'_>,
    c: &mut ControllerState,
    now: UnixMillis,
    horizon: UnixMillis,
) {
    let Some(event) = eff.event else {
        // A pre-queue opening before the end of the next slice: note the ticket counter now.
        // Noting it at the first tick inside the pre-queue would leave the tickets handed out
        // between the opening and that tick (which may run late in its slice) out of the
        // shuffle, in front of it.
        if let Some(next) = settings.next_event(now) {
            if next.prequeue_at.is_some_and(|p| p < horizon) && c.prequeue_event != next.id {
                c.prequeue_event = next.id;
                c.prequeue_base = snap.issued;
            }
        }
        return;
    };
    match eff.phase {
        Phase::Normal => {}
        Phase::Prequeue => {
            if c.prequeue_event != event.id {
                c.prequeue_event = event.id;
                c.prequeue_base = snap.issued;
            }
        }
        Phase::Live => {
            if c.started_event == event.id {
                return;
            }
            c.started_event = event.id;
            // Tickets issued since the pre-queue opened, or everyone waiting if no node saw the
            // pre-queue open (e.g. the fleet started after the start time).
            let lo = if c.prequeue_event == event.id {
                c.prequeue_base
            } else {
                c.serving.min(snap.issued)
            };
            let hi = snap.issued;
            c.prequeue_count = hi.saturating_sub(lo);
            if event.shuffle && c.prequeue_count > 1 {
                c.ranges.push(ShuffleRange {
                    lo,
                    hi,
                    seed: event_seed(settings, event),
                });
            }
        }
    }
}

/// Runs one controller slice against a store: read, plan, compare-and-set. Returns the room as
/// it stands afterwards. Safe to call from every node every slice.
pub async fn tick<S: Store + ?Sized>(
    store: &S,
    settings: &RoomSettings,
    now: UnixMillis,
) -> Result<RoomSnapshot, StoreError> {
    for _ in 0..3 {
        let mut snap = store.snapshot(&settings.id, now).await?;
        let Some(mut next) = plan(settings, &snap, snap.time) else {
            return Ok(snap);
        };
        if store.commit(&settings.id, snap.ctl.version, &next).await? {
            next.version = snap.ctl.version + 1;
            snap.ctl = next;
            return Ok(snap);
        }
    }
    // Lost three races in a row: another node is ticking this room; its result is as good.
    store.snapshot(&settings.id, now).await
}
