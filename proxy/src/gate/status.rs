//! What a waiting shopper is told: one computation for status polls and server-sent-event
//! pushes, answered from the node's view of the room (no store call, no token verified: the
//! [`Asker`] holds what the request's credentials said when they were read).

use waitroom::{Credential, Decision, Ticket, UnixMillis};

use super::credentials::Credentials;
use crate::pages::Status;
use crate::rooms::RoomRuntime;

/// Who asks for a status: what their credentials said, read once (a stream keeps this for its
/// life instead of verifying its token again).
#[derive(Debug, Clone)]
pub(crate) struct Asker {
    /// A valid pass: already in.
    pub(crate) admitted: bool,
    /// A valid ticket (when there is no pass).
    pub(crate) ticket: Option<Ticket>,
    /// Bot defence keeps this shopper waiting (an "infinite queue").
    pub(crate) tarpit: bool,
    /// Where to send the shopper once in (a checked same-site path from `?return=`).
    pub(crate) return_to: Option<String>,
}

impl Asker {
    pub(crate) fn new(creds: &Credentials, tarpit: bool, return_to: Option<String>) -> Self {
        Self {
            admitted: creds.pass.is_some(),
            ticket: if creds.pass.is_some() {
                None
            } else {
                creds.ticket.clone()
            },
            tarpit,
            return_to,
        }
    }

    /// The asker's status in `room` now, and the renewed ticket that keeps the place (to be
    /// signed only for a response that can set it).
    pub(crate) fn status(&self, room: &RoomRuntime, now: UnixMillis) -> (Status, Option<Ticket>) {
        let view = room.view();
        let settings = &room.cfg.settings;
        let mut bare = Status::bare(
            room.id(),
            view.state,
            view.serving(),
            settings.poll_interval,
            view.message.clone(),
        );
        if self.admitted {
            bare.admitted = true;
            bare.redirect = self.return_to.clone();
            return (bare, None);
        }
        let Some(t) = self.ticket.as_ref() else {
            return (bare, None);
        };
        match view.decide(settings, Credential::Ticket(t), now) {
            Decision::Wait(w) => (Status::waiting(room.id(), &w), Some(w.renewed)),
            Decision::Admit(req)
                if self.tarpit || !view.likely_claimable(&req) || !room.store_ok() =>
            {
                // Your turn, but this minute's entries are used up, the room is full, or the
                // store cannot be reached to claim the entry (the page would reload into
                // "you're next" at once, again and again): next, asked again at the cadence.
                let mut w = view.wait_info(settings, t, Some(view.serving() + 1), now);
                w.position = Some(1);
                w.ahead = Some(0);
                (Status::waiting(room.id(), &w), Some(w.renewed))
            }
            Decision::Admit(_) => {
                // Your turn: the claim happens on the next page request, which carries the ticket.
                bare.ticket = Some(t.number);
                bare.position = Some(0);
                bare.ahead = Some(0);
                bare.admitted = true;
                bare.redirect = self.return_to.clone();
                let mut renewed = t.clone();
                renewed.last_seen = now.secs();
                renewed.expires_at = now.plus(settings.abandon_after).secs();
                (bare, Some(renewed))
            }
            Decision::Reject(_) | Decision::NeedTicket | Decision::Allow { .. } => (bare, None),
        }
    }
}
