//! When a stream wakes and what it does then.

use std::time::{Duration, Instant};

use crate::pages::Status;

/// How often an idle stream writes at most: a keep-alive that renews its ticket (and a look at
/// its answer, which may drift with the measured admission rate though the room did not
/// change). More often in a room whose tickets lapse sooner (a third of `abandon_after`).
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(25);
/// How long a stream lasts (less up to an eighth, spread by ticket); see [`Schedule`]. A
/// reconnection costs the node ~60 µs (docs/performance.md): once per ~14 minutes that is
/// ~0.07 µs per waiter-second.
const LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The quickest a stream near the front of the line is pushed a new answer.
const FRONT_GAP: Duration = Duration::from_secs(1);

/// When a stream wakes and what it does then: a sans-io schedule, so the hub and the
/// on-Pingora loop are only I/O.
///
/// A stream costs nothing between wake-ups: it waits on its room's change signal (advanced only
/// when an answer could differ, see `RoomView::same_answers`) and on one deadline, the earliest
/// of its keep-alive, its lifetime's end and — after a change — the time it may push again. It
/// pushes at most once per gap: one second near the front of the line (a serving-number change
/// reaches those shoppers within a second), the status's `poll_after` elsewhere (so a stream
/// never costs more than the polling it replaces). It verifies no token: the credentials were
/// read once when it opened. Every write renews the ticket (see `Watch::step`), so the stream
/// keeps the place while it lasts; it ends after [`LIFETIME`] (so that its client comes back
/// through the load balancer now and then, and its credentials are read again), and once the
/// answer is final (admitted, sold out, closed).
#[derive(Debug)]
pub(super) struct Schedule {
    end: Instant,
    keep_alive_at: Instant,
    keep_alive_every: Duration,
    /// Not before: the end of the current push gap.
    next_push: Instant,
    gap: Duration,
    /// The room changed and the answer has not been looked at since.
    pub(super) dirty: bool,
    /// The answer is final: the stream ends.
    pub(super) done: bool,
}

/// What a stream does on waking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    Nothing,
    End,
    /// Compute the answer again; write it if it changed, or a keep-alive if `keep_alive`.
    Recompute {
        keep_alive: bool,
    },
}

impl Schedule {
    /// `spread` (the ticket's number) shortens the lifetime by up to an eighth, so that streams
    /// opened together (after a restart, say) do not all reconnect in the same second.
    pub(super) fn new(
        now: Instant,
        settings: &waitroom::RoomSettings,
        first: &Status,
        spread: u64,
    ) -> Self {
        let sixty_fourths = (spread.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as u32;
        let lifetime = LIFETIME - LIFETIME / 8 * sixty_fourths / 64;
        // At least as often as the ticket is renewed, so that a renewal is never late.
        let keep_alive_every =
            renew_every(settings).clamp(Duration::from_secs(1), KEEP_ALIVE_EVERY);
        let gap = push_gap(first);
        Self {
            end: now + lifetime,
            keep_alive_at: now + keep_alive_every,
            keep_alive_every,
            next_push: now + gap,
            gap,
            dirty: false,
            done: is_final(first),
        }
    }

    pub(super) fn next_wake(&self) -> Instant {
        let mut at = self.keep_alive_at.min(self.end);
        if self.dirty {
            at = at.min(self.next_push);
        }
        at
    }

    pub(super) fn on_wake(&mut self, now: Instant) -> Wake {
        if now >= self.end {
            return Wake::End;
        }
        let keep_alive = now >= self.keep_alive_at;
        if keep_alive {
            self.keep_alive_at = now + self.keep_alive_every;
        }
        if (self.dirty && now >= self.next_push) || keep_alive {
            return Wake::Recompute { keep_alive };
        }
        Wake::Nothing
    }

    pub(super) fn recomputed(&mut self, now: Instant, st: &Status) {
        self.dirty = false;
        self.gap = push_gap(st);
        self.next_push = self.next_push.max(now);
        self.done = is_final(st);
    }

    pub(super) fn wrote(&mut self, now: Instant) {
        self.next_push = now + self.gap;
        self.keep_alive_at = now + self.keep_alive_every;
    }
}

/// How often a stream renews its ticket: three times per `abandon_after`, so that the last
/// renewal is still good for two thirds of it when the browser reconnects (after the stream's
/// `retry`, 2 s).
pub(super) fn renew_every(settings: &waitroom::RoomSettings) -> Duration {
    settings.abandon_after / 3
}

/// The least time between two pushes for a shopper told `st`.
fn push_gap(st: &Status) -> Duration {
    let poll = Duration::from_millis(st.poll_after_ms);
    let near_front = st.position.is_some_and(|p| p <= 1)
        || st
            .eta_low_seconds
            .is_some_and(|low| Duration::from_secs(low) <= poll * 2);
    if near_front {
        FRONT_GAP
    } else {
        poll.max(FRONT_GAP)
    }
}

/// Whether nothing can change this answer any more.
fn is_final(st: &Status) -> bool {
    st.admitted || matches!(st.state, "sold_out" | "closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(position: u64, poll_ms: u64) -> Status {
        let mut st = Status::bare(
            "drop",
            waitroom::RoomState::Queueing,
            0,
            Duration::ZERO,
            None,
        );
        st.position = Some(position);
        st.poll_after_ms = poll_ms;
        st
    }

    fn settings() -> waitroom::RoomSettings {
        let nz = |n| std::num::NonZeroU32::new(n).expect("non-zero");
        waitroom::RoomSettings::new("drop", nz(60), nz(500))
    }

    #[test]
    fn an_idle_stream_wakes_only_for_keep_alives_and_its_end() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, &settings(), &waiting(500, 20_000), 0);
        assert_eq!(s.next_wake(), t0 + KEEP_ALIVE_EVERY);
        let at = s.next_wake();
        assert_eq!(s.on_wake(at), Wake::Recompute { keep_alive: true });
        s.recomputed(at, &waiting(500, 20_000));
        assert_eq!(s.next_wake(), at + KEEP_ALIVE_EVERY);
        // Ticket 0: the whole lifetime, 15 minutes (abandon_after, 120 s, does not end it).
        assert_eq!(
            s.on_wake(t0 + LIFETIME - Duration::from_secs(1)),
            Wake::Recompute { keep_alive: true }
        );
        assert_eq!(s.on_wake(t0 + LIFETIME), Wake::End);
    }

    #[test]
    fn keep_alives_renew_a_ticket_three_times_before_it_would_lapse() {
        let t0 = Instant::now();
        let mut quick = settings();
        quick.abandon_after = Duration::from_secs(6);
        let s = Schedule::new(t0, &quick, &waiting(500, 20_000), 0);
        assert_eq!(s.next_wake(), t0 + Duration::from_secs(2));
        quick.abandon_after = Duration::from_secs(2);
        let s = Schedule::new(t0, &quick, &waiting(500, 20_000), 0);
        assert_eq!(
            s.next_wake(),
            t0 + Duration::from_secs(1),
            "at most once a second"
        );
    }

    #[test]
    fn streams_opened_together_end_apart() {
        let t0 = Instant::now();
        let ends: std::collections::BTreeSet<_> = (1..=100)
            .map(|n| Schedule::new(t0, &settings(), &waiting(500, 5_000), n).end)
            .collect();
        // Between 787.5 s and 900 s, spread out.
        assert!(ends.len() > 30, "{} distinct ends", ends.len());
        let (first, last) = (*ends.first().expect("some"), *ends.last().expect("some"));
        assert!(first >= t0 + LIFETIME * 7 / 8, "{:?}", first - t0);
        assert!(last <= t0 + LIFETIME, "{:?}", last - t0);
    }

    #[test]
    fn a_change_is_pushed_after_the_gap_not_before() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, &settings(), &waiting(500, 20_000), 0);
        let soon = t0 + Duration::from_secs(1);
        s.dirty = true;
        assert_eq!(s.on_wake(soon), Wake::Nothing);
        // Far back: the gap is the poll interval (20 s), before the keep-alive (25 s).
        assert_eq!(s.next_wake(), t0 + Duration::from_secs(20));
        let at = s.next_wake();
        assert_eq!(s.on_wake(at), Wake::Recompute { keep_alive: false });
        s.recomputed(at, &waiting(400, 20_000));
        s.wrote(at);
        assert!(!s.dirty);
    }

    #[test]
    fn near_the_front_a_change_arrives_within_a_second() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, &settings(), &waiting(1, 5_000), 0);
        s.dirty = true;
        assert_eq!(s.on_wake(t0 + Duration::from_millis(300)), Wake::Nothing);
        assert_eq!(s.next_wake(), t0 + FRONT_GAP);
        assert_eq!(
            s.on_wake(t0 + FRONT_GAP),
            Wake::Recompute { keep_alive: false }
        );
    }

    #[test]
    fn a_final_answer_ends_the_stream() {
        let mut st = waiting(1, 5_000);
        st.admitted = true;
        assert!(Schedule::new(Instant::now(), &settings(), &st, 0).done);
    }
}
