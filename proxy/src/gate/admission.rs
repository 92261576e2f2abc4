//! The room gate: one typed outcome per request ([`Admission`]) from the request's
//! [`Credentials`], bot defence, the room's view and — only for newcomers and tickets whose
//! turn has come — the store.
//!
//! A valid pass is forwarded with no store round trip (one HMAC); the at-most-once-a-minute
//! check-in it may cause runs in a spawned task. Every other rule of the issue/claim exchange
//! lives in [`waitroom::entry`]; this file makes the store calls it asks for, counts and emits
//! what happened, and applies the room's `on_store_error` policy when the store fails
//! ([`StoreError`] is matched by type, never by its text).

use std::sync::Arc;

use pingora::proxy::Session;
use waitroom::entry::{Entry, Finish, Input, Step};
use waitroom::{Credential, Decision, RejectReason, RoomView, StoreError, UnixMillis, WaitInfo};

use super::credentials::Credentials;
use super::{Ctx, Gate};
use crate::bot::{RequestFacts, RouteClass, Verdict};
use crate::config::{OnStoreError, RouteKind};
use crate::events::{AbandonReason, EndReason, EventKind};
use crate::metrics::Outcome;
use crate::rooms::RoomRuntime;

/// What the gate does with a request for a room.
#[must_use]
#[derive(Debug)]
pub(crate) enum Admission {
    /// Go on to the origin: a valid pass, a pass minted just now, a bypass verdict, or a room
    /// that lets this request through.
    Forward,
    /// Keep waiting (the renewed ticket is in the response's cookies).
    Wait(Box<WaitInfo>),
    /// Your turn, but not this instant: position 1, ask again shortly.
    Next(Box<WaitInfo>),
    /// The sale is closed, sold out or draining.
    Reject(RejectReason),
    /// Bot defence answers (challenge, limit, block).
    Bot(Verdict),
    /// The store could not number a new arrival and the room's policy is to keep shoppers
    /// waiting: the room's waiting answer without a ticket, retried by the page itself.
    Degraded(Arc<RoomView>),
}

/// Why admission could not finish the exchange with the store.
#[derive(Debug)]
enum Trouble {
    /// The store failed this call; `next` is what the shopper is told instead when a ticket
    /// whose turn came could not be claimed ("you're next", see [`Entry::unanswered`]).
    Store {
        op: &'static str,
        error: StoreError,
        next: Option<Box<WaitInfo>>,
    },
    /// The store kept handing back used tickets.
    Stuck,
}

impl Gate {
    /// Admission for `room`: see the module docs.
    pub(crate) async fn admit(
        &self,
        s: &Session,
        ctx: &mut Ctx,
        room: &Arc<RoomRuntime>,
        route: RouteKind,
        creds: Credentials,
        now: UnixMillis,
    ) -> Admission {
        let view = room.view();
        let settings = &room.cfg.settings;
        if let Some(p) = &creds.expired_pass {
            let ended = EventKind::SessionEnded {
                reason: EndReason::Expiry,
            };
            self.emit(room, ended, p.ticket, now);
        }
        if let (None, Some(old)) = (&creds.pass, &creds.expired_ticket) {
            // The place was lost by not polling: the shopper joins again at the back.
            let lost = EventKind::Abandoned {
                reason: AbandonReason::Expired,
            };
            self.emit(room, lost, old.number, now);
        }

        // Bot defence, before any store work.
        let mut facts = RequestFacts::new(&s.req_header().headers, ctx.client.addr, now);
        facts.tls = ctx.client.secure;
        facts.route = if route == RouteKind::Catalog {
            RouteClass::Catalog
        } else {
            RouteClass::Protected
        };
        facts.credential = creds.bot_credential();
        facts.poll_after = Some(settings.poll_interval);
        // A fleet also asks Redis about joins per address (one call per join).
        let verdict = self
            .node
            .bot
            .check_fleet(room.id(), &room.cfg.bot, &facts)
            .await;
        match verdict {
            Verdict::Allow => {}
            Verdict::Bypass => return Admission::Forward,
            Verdict::Tarpit => ctx.tarpit = true,
            v @ (Verdict::Challenge(_) | Verdict::Block(_) | Verdict::Limited { .. }) => {
                return Admission::Bot(v)
            }
        }

        // 1. A valid pass: forward, with no store round trip.
        if let Some(p) = creds.pass {
            // A pass is always let through; the view says whether to renew it.
            if let Decision::Allow { renewed, check_in } =
                view.decide(settings, Credential::Pass(&p), now)
            {
                // Once a minute per ticket on this node: check in and send the renewed pass.
                // A client that keeps sending the old pass (a script, a lost response) is not
                // re-signed on every request: its pass stays valid and is renewed next minute.
                // Ticket 0 (floor-rate passes) is shared, so each of its holders is renewed.
                let first = match check_in {
                    Some((from, to)) if room.should_check_in(p.ticket, to) => {
                        self.spawn_check_in(room.clone(), p.ticket, from, to);
                        true
                    }
                    _ => false,
                };
                match renewed.filter(|_| first || p.ticket == 0) {
                    Some(r) => {
                        let st = &mut **ctx;
                        st.out.set_pass(&st.live.config.keys, &r, now);
                        ctx.pass = Some(r);
                    }
                    None => ctx.pass = Some(p),
                }
            }
            return Admission::Forward;
        }

        // 2. A ticket, or none: the issue/claim exchange.
        let binding = creds.binding;
        match self.exchange(ctx, room, &view, creds, now).await {
            Ok(a) => a,
            Err(trouble) => self.store_failed(ctx, room, view, trouble, binding, now),
        }
    }

    /// Runs [`waitroom::entry`] against the store.
    async fn exchange(
        &self,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        view: &RoomView,
        creds: Credentials,
        now: UnixMillis,
    ) -> Result<Admission, Trouble> {
        let settings = &room.cfg.settings;
        let ticket = creds.ticket.filter(|_| creds.pass.is_none());
        let mut entry = Entry::new(view, settings, ticket, creds.binding, ctx.tarpit, now);
        let mut input = Input::Start;
        loop {
            input = match entry.step(input) {
                Step::Issue => {
                    let number = self.node.store.issue(room.id(), 1).await.map_err(|error| {
                        Trouble::Store {
                            op: "issue",
                            error,
                            next: None,
                        }
                    })?;
                    self.node
                        .metrics
                        .tickets
                        .with_label_values(&[room.id()])
                        .inc();
                    let issued = EventKind::TicketIssued {
                        serving: view.serving(),
                    };
                    self.emit(room, issued, number, now);
                    if ctx.tarpit {
                        self.node.bot.tarpit_ticket(room.id(), number, now);
                    }
                    Input::Issued(number)
                }
                Step::Claim(req) => {
                    let outcome = match self.node.store.claim(room.id(), &req).await {
                        Ok(o) => o,
                        Err(error) => {
                            let next = match entry.unanswered() {
                                Some(Finish::Next(w)) => Some(w),
                                _ => None,
                            };
                            return Err(Trouble::Store {
                                op: "claim",
                                error,
                                next,
                            });
                        }
                    };
                    Input::Claimed(outcome)
                }
                Step::Done(Finish::Entered { ticket, pass }) => {
                    self.let_in(ctx, room, pass, now);
                    let admitted = EventKind::admitted(ticket.issued_at, now);
                    self.emit(room, admitted, ticket.number, now);
                    return Ok(Admission::Forward);
                }
                Step::Done(Finish::Wait(w)) => return Ok(Admission::Wait(w)),
                Step::Done(Finish::Next(w)) => return Ok(Admission::Next(w)),
                Step::Done(Finish::Reject(r)) => return Ok(Admission::Reject(r)),
                Step::Done(Finish::Forward) => return Ok(Admission::Forward),
                Step::Done(Finish::Stuck) => return Err(Trouble::Stuck),
            }
        }
    }

    /// The room's `on_store_error` policy.
    fn store_failed(
        &self,
        ctx: &mut Ctx,
        room: &RoomRuntime,
        view: Arc<RoomView>,
        trouble: Trouble,
        binding: u64,
        now: UnixMillis,
    ) -> Admission {
        let (op, error, next) = match trouble {
            Trouble::Store { op, error, next } => (op, Some(error), next),
            Trouble::Stuck => ("claim", None, None),
        };
        self.node
            .metrics
            .store_errors
            .with_label_values(&[op])
            .inc();
        // Per request at debug only: during an outage the store's circuit breaker logs each
        // change of mode once, and the counter above counts the failures.
        tracing::debug!(
            room = room.id(),
            op,
            error = error
                .as_ref()
                .map_or("ticket could not be placed".into(), |e| e.to_string()),
            "store error; policy {:?}",
            room.cfg.on_store_error
        );
        // `admit_at_floor_rate`: while the store fails, a room that is admitting lets new
        // shoppers in from this node's own GCRA bucket of `floor_rate_per_minute`. Such a pass
        // carries ticket 0 (real numbers start at 1): it is not counted in the store's active
        // users, cannot be revoked on its own, and simply expires with its session. Everyone
        // else waits, as with `queue`: a ticket whose claim failed is told "you're next" (it
        // enters once the store answers), a new arrival gets the room's waiting answer without
        // a ticket. Never a 5xx: the store failing is Flashgate's trouble, not the shopper's.
        let admitting = matches!(
            view.state,
            waitroom::RoomState::Idle
                | waitroom::RoomState::Queueing
                | waitroom::RoomState::Draining
        );
        // A tarpitted client (bot defence) is never admitted, the store failing or not.
        if room.cfg.on_store_error == OnStoreError::AdmitAtFloorRate
            && error.is_some()
            && admitting
            && !ctx.tarpit
            && room.floor_admit(now)
        {
            let settings = &room.cfg.settings;
            let ticket = view.new_ticket(settings, 0, binding, now);
            let p = view.new_pass(settings, &ticket, now);
            self.let_in(ctx, room, p, now);
            self.node
                .metrics
                .floor_admissions
                .with_label_values(&[room.id()])
                .inc();
            return Admission::Forward;
        }
        match next {
            Some(w) => Admission::Next(w),
            None => Admission::Degraded(view),
        }
    }

    /// A new pass: sent in place of the ticket, counted as an admission.
    fn let_in(&self, ctx: &mut Ctx, room: &RoomRuntime, pass: waitroom::Pass, now: UnixMillis) {
        let st = &mut **ctx;
        st.out.set_pass(&st.live.config.keys, &pass, now);
        ctx.out.ticket = super::credentials::CookieOp::Clear;
        ctx.pass = Some(pass);
        ctx.outcome = Outcome::Admitted;
        self.node
            .metrics
            .admissions
            .with_label_values(&[room.id()])
            .inc();
    }

    fn spawn_check_in(&self, room: Arc<RoomRuntime>, ticket: u64, from: u32, to: u32) {
        let store = self.node.store.clone();
        let metrics = self.node.metrics.clone();
        tokio::spawn(async move {
            match store.check_in(room.id(), ticket, from, to).await {
                Ok(waitroom::CheckIn::Moved) => {}
                Ok(waitroom::CheckIn::Ended) => room.mark_ended(ticket),
                Err(_) => metrics.store_errors.with_label_values(&["check_in"]).inc(),
            }
        });
    }
}
