//! Getting a shopper without a valid pass a place, or in: the issue/claim exchange with the
//! store, as a sans-io state machine.
//!
//! A request carries a verified ticket or nothing. [`Entry`] says which store call comes next
//! ([`Step::Issue`]: number a new arrival; [`Step::Claim`]: claim the entry of a ticket whose
//! turn has come), the adapter makes it and feeds the answer back ([`Input`]), until the entry
//! ends in a [`Finish`]. The adapter does only I/O; every rule lives here:
//!
//! - at most one new number per request: a request never takes two places;
//! - a ticket the store reports as used (it entered before, or was given up) is never claimed
//!   again in the same exchange: the shopper gets one new place at the back instead;
//! - a held ticket (bot defence's infinite queue) is always told "you're next" and never claims;
//! - a pass is minted only from a claim the store answered [`ClaimOutcome::Entered`], for the
//!   ticket that was claimed;
//! - the exchange is bounded: at most three decisions, so a store that keeps handing back used
//!   tickets ends in [`Finish::Stuck`], never a loop.

use crate::admission::{Credential, Decision, RejectReason, RoomView, WaitInfo};
use crate::settings::RoomSettings;
use crate::store::{ClaimOutcome, ClaimRequest};
use crate::time::UnixMillis;
use crate::token::{Pass, Ticket};

/// Decisions an exchange may take before it gives up ([`Finish::Stuck`]).
const MAX_ROUNDS: u8 = 3;

/// What the adapter tells the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Begin.
    Start,
    /// The store numbered a new ticket (after [`Step::Issue`]).
    Issued(u64),
    /// The store answered a claim (after [`Step::Claim`]).
    Claimed(ClaimOutcome),
}

/// What the adapter does next.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Number one new ticket, then feed back [`Input::Issued`].
    Issue,
    /// Claim this entry, then feed back [`Input::Claimed`].
    Claim(ClaimRequest),
    /// The exchange is over.
    Done(Finish),
}

/// How the exchange ended.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// The claim succeeded: send `pass` (minted for `ticket`), drop the ticket.
    Entered { ticket: Ticket, pass: Pass },
    /// Keep waiting with this (renewed) ticket.
    Wait(Box<WaitInfo>),
    /// The ticket's turn has come but it cannot enter this instant (the room is momentarily
    /// full, this minute's entries are used up, or the ticket is held): position 1.
    Next(Box<WaitInfo>),
    /// Not now: the closed / sold-out page.
    Reject(RejectReason),
    /// Nothing to do: the room lets this request through as it is.
    Forward,
    /// The store kept handing back used tickets: answer "please wait", don't loop.
    Stuck,
}

/// One request's exchange. Built from what the request carries; see the module docs.
#[derive(Debug)]
pub struct Entry<'a> {
    view: &'a RoomView,
    settings: &'a RoomSettings,
    now: UnixMillis,
    binding: u64,
    hold: bool,
    ticket: Option<Ticket>,
    issued: bool,
    rounds: u8,
    /// The ticket number of the claim in flight.
    claiming: Option<u64>,
    /// Tickets the store reported as used in this exchange.
    used: Vec<u64>,
}

impl<'a> Entry<'a> {
    /// `ticket`: the request's verified ticket, if any. `binding`: the client binding a new
    /// ticket gets. `hold`: never let this ticket in (bot defence's infinite queue).
    pub fn new(
        view: &'a RoomView,
        settings: &'a RoomSettings,
        ticket: Option<Ticket>,
        binding: u64,
        hold: bool,
        now: UnixMillis,
    ) -> Self {
        Self {
            view,
            settings,
            now,
            binding,
            hold,
            ticket,
            issued: false,
            rounds: 0,
            claiming: None,
            used: Vec::new(),
        }
    }

    /// The ticket the exchange holds now (the request's, or the one just issued).
    pub fn ticket(&self) -> Option<&Ticket> {
        self.ticket.as_ref()
    }

    /// Whether this exchange numbered a new ticket.
    pub fn issued(&self) -> bool {
        self.issued
    }

    /// What the shopper is told when the store did not answer the last step: a claim that
    /// could not be made is "you're next" ([`Finish::Next`]: the ticket's turn has come, it
    /// enters once the store answers); a number that could not be issued has no answer here
    /// (`None`: there is no ticket to wait with).
    pub fn unanswered(&self) -> Option<Finish> {
        match (self.claiming, &self.ticket) {
            (Some(_), Some(_)) => match self.next() {
                Step::Done(f) => Some(f),
                Step::Issue | Step::Claim(_) => None,
            },
            _ => None,
        }
    }

    /// Feeds the last answer in; returns what to do next. An input that does not answer the
    /// last step (an `Issued` nobody asked for, say) ends the exchange as [`Finish::Stuck`].
    pub fn step(&mut self, input: Input) -> Step {
        match input {
            Input::Start => {}
            Input::Issued(number) => {
                if self.issued || self.ticket.is_some() || self.claiming.is_some() {
                    return Step::Done(Finish::Stuck);
                }
                self.issued = true;
                let t = self
                    .view
                    .new_ticket(self.settings, number, self.binding, self.now);
                self.ticket = Some(t);
            }
            Input::Claimed(outcome) => {
                let Some(number) = self.claiming.take() else {
                    return Step::Done(Finish::Stuck);
                };
                match outcome {
                    ClaimOutcome::Entered => {
                        let Some(ticket) = self.ticket.take() else {
                            return Step::Done(Finish::Stuck);
                        };
                        let pass = self.view.new_pass(self.settings, &ticket, self.now);
                        return Step::Done(Finish::Entered { ticket, pass });
                    }
                    // Used up (entered before, or given up): a new place, at most once.
                    ClaimOutcome::AlreadyEntered | ClaimOutcome::Ended => {
                        self.used.push(number);
                        self.ticket = None;
                    }
                    // Your turn, but the room is momentarily full or held: you are next.
                    ClaimOutcome::NotYet | ClaimOutcome::Full | ClaimOutcome::MinuteFull => {
                        return self.next();
                    }
                }
            }
        }
        self.decide()
    }

    fn decide(&mut self) -> Step {
        if self.rounds >= MAX_ROUNDS {
            return Step::Done(Finish::Stuck);
        }
        self.rounds += 1;
        let decision = match &self.ticket {
            Some(t) => self
                .view
                .decide(self.settings, Credential::Ticket(t), self.now),
            None => self.view.decide(self.settings, Credential::None, self.now),
        };
        match decision {
            Decision::NeedTicket if self.issued => Step::Done(Finish::Stuck),
            Decision::NeedTicket => Step::Issue,
            Decision::Admit(req) => match &self.ticket {
                Some(_) if self.hold => self.next(),
                Some(t) if self.used.contains(&t.number) => Step::Done(Finish::Stuck),
                Some(t) => {
                    self.claiming = Some(t.number);
                    Step::Claim(req)
                }
                None => Step::Done(Finish::Stuck),
            },
            Decision::Wait(w) => Step::Done(Finish::Wait(w)),
            Decision::Reject(r) => Step::Done(Finish::Reject(r)),
            Decision::Allow { .. } => Step::Done(Finish::Forward),
        }
    }

    /// "You're next": the ticket's turn has come but it cannot enter this instant.
    fn next(&self) -> Step {
        let Some(t) = &self.ticket else {
            return Step::Done(Finish::Stuck);
        };
        let serving = self.view.serving();
        let mut w = self
            .view
            .wait_info(self.settings, t, Some(serving + 1), self.now);
        w.position = Some(1);
        w.ahead = Some(0);
        Step::Done(Finish::Next(Box::new(w)))
    }
}
