//! The issue/claim exchange (`waitroom::entry`): unit tests of each path and a property test
//! against a model store that remembers which tickets entered or were given up.
//!
//! Properties: an exchange numbers at most one ticket; it never claims a ticket the store
//! reported as used, and never claims a held ticket; a pass is minted only from a claim the
//! store answered `Entered`, for the ticket claimed; across any number of requests replaying
//! any tickets, each ticket enters at most once; and every exchange ends within a few steps.

use std::collections::HashSet;
use std::num::NonZeroU32;

use proptest::prelude::*;
use waitroom::entry::{Entry, Finish, Input, Step};
use waitroom::eta::EtaEstimator;
use waitroom::{
    ClaimOutcome, Overrides, RejectReason, RoomSettings, RoomSnapshot, RoomView, Ticket, UnixMillis,
};

const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

fn settings() -> RoomSettings {
    let nz = |n| NonZeroU32::new(n).expect("non-zero");
    RoomSettings::new("drop", nz(60), nz(500))
}

fn view(settings: &RoomSettings, serving: u64, issued: u64, overrides: Overrides) -> RoomView {
    let mut snap = RoomSnapshot {
        time: NOW,
        issued,
        overrides,
        ..RoomSnapshot::default()
    };
    snap.ctl.serving = serving;
    RoomView::new(settings, snap, &EtaEstimator::new())
}

/// A room serving 10 with 20 tickets issued, no overrides.
fn busy(settings: &RoomSettings) -> RoomView {
    view(settings, 10, 20, Overrides::default())
}

/// The entry of the holder of ticket 7 (its turn has come), `held` back or not.
fn holder_of_7<'a>(v: &'a RoomView, s: &'a RoomSettings, held: bool) -> Entry<'a> {
    Entry::new(v, s, Some(ticket(v, s, 7)), 0, held, NOW)
}

fn ticket(view: &RoomView, settings: &RoomSettings, number: u64) -> Ticket {
    view.new_ticket(settings, number, 0, NOW)
}

/// Runs an exchange against fixed answers: the store numbers `next_number` and answers
/// every claim with `claim`. Returns the steps taken and the finish.
fn run(entry: &mut Entry<'_>, next_number: u64, claim: ClaimOutcome) -> (Vec<Step>, Finish) {
    let mut steps = Vec::new();
    let mut input = Input::Start;
    loop {
        let step = entry.step(input);
        steps.push(step.clone());
        input = match step {
            Step::Issue => Input::Issued(next_number),
            Step::Claim(_) => Input::Claimed(claim),
            Step::Done(f) => return (steps, f),
        };
    }
}

#[test]
fn a_newcomer_gets_one_ticket_and_waits_behind_the_serving_number() {
    let s = settings();
    let v = busy(&s);
    let mut e = Entry::new(&v, &s, None, 0, false, NOW);
    let (steps, finish) = run(&mut e, 21, ClaimOutcome::Entered);
    assert_eq!(steps.iter().filter(|s| **s == Step::Issue).count(), 1);
    let Finish::Wait(w) = finish else {
        panic!("expected a wait, got {finish:?}")
    };
    assert_eq!(w.renewed.number, 21);
    assert_eq!(w.position, Some(11));
    assert!(e.issued());
}

#[test]
fn a_ticket_whose_turn_came_claims_and_gets_a_pass_for_itself() {
    let s = settings();
    let v = busy(&s);
    let mut e = holder_of_7(&v, &s, false);
    let (steps, finish) = run(&mut e, 99, ClaimOutcome::Entered);
    assert!(matches!(steps[0], Step::Claim(ref r) if r.ticket == 7));
    let Finish::Entered { ticket, pass } = finish else {
        panic!("expected an entry, got {finish:?}")
    };
    assert_eq!((ticket.number, pass.ticket), (7, 7));
    assert!(!e.issued());
}

#[test]
fn a_used_ticket_gets_one_new_place_at_the_back() {
    let s = settings();
    let v = busy(&s);
    for used in [ClaimOutcome::AlreadyEntered, ClaimOutcome::Ended] {
        let mut e = holder_of_7(&v, &s, false);
        let (steps, finish) = run(&mut e, 21, used);
        assert_eq!(steps.len(), 3, "claim, issue, wait: {steps:?}");
        let Finish::Wait(w) = finish else {
            panic!("expected a wait, got {finish:?}")
        };
        assert_eq!(w.renewed.number, 21);
    }
}

#[test]
fn a_store_that_hands_back_used_numbers_ends_stuck() {
    let s = settings();
    let v = busy(&s);
    let mut e = holder_of_7(&v, &s, false);
    // The new number is inside the serving range and used as well.
    let (steps, finish) = run(&mut e, 8, ClaimOutcome::AlreadyEntered);
    assert_eq!(finish, Finish::Stuck);
    assert_eq!(steps.iter().filter(|s| **s == Step::Issue).count(), 1);
}

#[test]
fn a_held_ticket_is_told_it_is_next_and_never_claims() {
    let s = settings();
    let v = busy(&s);
    let mut e = holder_of_7(&v, &s, true);
    let (steps, finish) = run(&mut e, 21, ClaimOutcome::Entered);
    assert_eq!(steps.len(), 1);
    let Finish::Next(w) = finish else {
        panic!("expected next, got {finish:?}")
    };
    assert_eq!((w.position, w.ahead), (Some(1), Some(0)));
}

#[test]
fn a_full_room_says_next() {
    let s = settings();
    let v = busy(&s);
    for busy in [
        ClaimOutcome::Full,
        ClaimOutcome::MinuteFull,
        ClaimOutcome::NotYet,
    ] {
        let mut e = holder_of_7(&v, &s, false);
        let (_, finish) = run(&mut e, 21, busy);
        assert!(matches!(finish, Finish::Next(ref w) if w.renewed.number == 7));
    }
}

#[test]
fn a_claim_the_store_did_not_answer_is_next_and_a_failed_issue_has_no_answer() {
    let s = settings();
    let v = busy(&s);
    // Ticket 7's turn came; its claim went out and nothing came back: "you're next".
    let mut e = holder_of_7(&v, &s, false);
    assert!(matches!(e.step(Input::Start), Step::Claim(ref r) if r.ticket == 7));
    let Some(Finish::Next(w)) = e.unanswered() else {
        panic!("expected next, got {:?}", e.unanswered())
    };
    assert_eq!(
        (w.renewed.number, w.position, w.ahead),
        (7, Some(1), Some(0))
    );
    // Nobody admitted: the claim was never answered, so a later one may still enter.
    assert!(matches!(
        e.step(Input::Claimed(ClaimOutcome::Entered)),
        Step::Done(Finish::Entered { .. })
    ));
    // A newcomer whose number could not be issued: no ticket, nothing to wait with.
    let mut e = Entry::new(&v, &s, None, 0, false, NOW);
    assert_eq!(e.step(Input::Start), Step::Issue);
    assert_eq!(e.unanswered(), None);
    // Before any step there is nothing in flight either.
    assert_eq!(holder_of_7(&v, &s, false).unanswered(), None);
}

#[test]
fn a_sold_out_room_rejects_without_a_store_call() {
    let s = settings();
    let v = view(
        &s,
        10,
        20,
        Overrides {
            sold_out: true,
            ..Overrides::default()
        },
    );
    let mut e = Entry::new(&v, &s, None, 0, false, NOW);
    let (steps, finish) = run(&mut e, 21, ClaimOutcome::Entered);
    assert_eq!(steps.len(), 1);
    assert_eq!(finish, Finish::Reject(RejectReason::SoldOut));
}

#[test]
fn answers_nobody_asked_for_end_the_exchange() {
    let s = settings();
    let v = busy(&s);
    let mut e = Entry::new(&v, &s, None, 0, false, NOW);
    assert_eq!(
        e.step(Input::Claimed(ClaimOutcome::Entered)),
        Step::Done(Finish::Stuck)
    );
    let mut e = holder_of_7(&v, &s, false);
    assert_eq!(e.step(Input::Issued(30)), Step::Done(Finish::Stuck));
}

/// The store's truth, as the property test's model: the counter and each ticket's fate.
#[derive(Debug, Default)]
struct Model {
    counter: u64,
    entered: HashSet<u64>,
    ended: HashSet<u64>,
}

#[derive(Debug, Clone)]
struct Request {
    /// The ticket the request carries (a number; `None`: no ticket).
    ticket: Option<u64>,
    hold: bool,
    /// How the store answers a claim of a fresh ticket (index into the busy answers).
    busy: Option<u8>,
}

fn request() -> impl Strategy<Value = Request> {
    (
        proptest::option::of(1u64..40),
        proptest::bool::weighted(0.1),
        proptest::option::of(0u8..3),
    )
        .prop_map(|(ticket, hold, busy)| Request { ticket, hold, busy })
}

proptest! {
    #[test]
    fn no_ticket_gets_two_places_or_enters_twice(
        serving in 0u64..40,
        issued in 0u64..40,
        paused in proptest::bool::weighted(0.1),
        ended in proptest::collection::hash_set(1u64..40, 0..5),
        requests in proptest::collection::vec(request(), 1..40),
    ) {
        let s = settings();
        let v = view(&s, serving, issued, Overrides { paused, ..Overrides::default() });
        let mut model = Model { counter: issued.max(serving), ended, ..Model::default() };
        let mut entries = 0u64;
        for r in requests {
            let t = r.ticket.map(|n| ticket(&v, &s, n));
            let mut e = Entry::new(&v, &s, t, 0, r.hold, NOW);
            let mut input = Input::Start;
            let mut issues = 0;
            let mut claimed: Vec<u64> = Vec::new();
            let mut used: Vec<u64> = Vec::new();
            let mut last_claim = None;
            let mut steps = 0;
            let finish = loop {
                steps += 1;
                prop_assert!(steps <= 8, "an exchange must end");
                match e.step(input) {
                    Step::Issue => {
                        issues += 1;
                        prop_assert!(issues <= 1, "two new places for one request");
                        model.counter += 1;
                        input = Input::Issued(model.counter);
                    }
                    Step::Claim(req) => {
                        prop_assert!(!r.hold, "a held ticket claimed");
                        prop_assert!(!used.contains(&req.ticket), "a used ticket claimed again");
                        prop_assert!(req.position <= v.serving(), "claimed before its turn");
                        claimed.push(req.ticket);
                        let outcome = if model.entered.contains(&req.ticket) {
                            ClaimOutcome::AlreadyEntered
                        } else if model.ended.contains(&req.ticket) {
                            ClaimOutcome::Ended
                        } else {
                            match r.busy {
                                None => ClaimOutcome::Entered,
                                Some(0) => ClaimOutcome::Full,
                                Some(1) => ClaimOutcome::MinuteFull,
                                Some(_) => ClaimOutcome::NotYet,
                            }
                        };
                        if outcome == ClaimOutcome::Entered {
                            model.entered.insert(req.ticket);
                        }
                        if matches!(outcome, ClaimOutcome::AlreadyEntered | ClaimOutcome::Ended) {
                            used.push(req.ticket);
                        }
                        last_claim = Some((req.ticket, outcome));
                        input = Input::Claimed(outcome);
                    }
                    Step::Done(f) => break f,
                }
            };
            match finish {
                Finish::Entered { ticket, pass } => {
                    prop_assert_eq!(last_claim, Some((ticket.number, ClaimOutcome::Entered)));
                    prop_assert_eq!(pass.ticket, ticket.number);
                    entries += 1;
                }
                Finish::Wait(w) | Finish::Next(w) => {
                    prop_assert!(!used.contains(&w.renewed.number), "kept a used ticket");
                }
                Finish::Reject(_) | Finish::Forward | Finish::Stuck => {}
            }
        }
        // Each ticket entered at most once: the model counts distinct entries.
        prop_assert_eq!(entries, model.entered.len() as u64);
    }
}

#[test]
fn a_view_changes_its_answers_only_when_something_shown_changes() {
    let s = settings();
    let a = view(&s, 10, 20, Overrides::default());
    // A later read with more tickets issued and the controller's bookkeeping moved on.
    let mut snap = a.snapshot.clone();
    snap.time = UnixMillis(NOW.0 + 200);
    snap.issued += 5;
    snap.ctl.version += 1;
    snap.ctl.last_tick = snap.time;
    let b = RoomView::new(&s, snap, &EtaEstimator::new());
    assert!(a.same_answers(&b));
    let moved = view(&s, 11, 20, Overrides::default());
    assert!(!a.same_answers(&moved));
    let paused = view(
        &s,
        10,
        20,
        Overrides {
            paused: true,
            ..Overrides::default()
        },
    );
    assert!(!a.same_answers(&paused));
}
