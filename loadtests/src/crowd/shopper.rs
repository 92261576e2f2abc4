//! One simulated shopper (or bot), from arrival to leaving, and what it observed.
//!
//! A **shopper** behaves like the waiting page in a browser: it opens the protected page (the
//! waiting page comes back with a ticket cookie), polls `/.flashgate/status` when the server
//! says (`poll_after_ms`), and when the status says `admitted` opens the page again, which
//! claims the entry and brings a pass. It may give up on the way (after its patience, saying
//! so or not). Once in, it browses, may add to the cart and check out, and may end its session.
//!
//! A **bot** ignores `poll_after_ms` and polls every `bots.poll_every`, sends a script's
//! headers, and — with `bots.group > 1` — passes its ticket to the other bots of its group,
//! who poll with it, and then its pass, which they all browse with (replay).
//!
//! Every request's outcome is recorded in the shopper's [`Record`]; the analysis turns the
//! records into the run's checks and figures.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::jar::Jar;
use super::metrics::Endpoint;
use super::run::{Reply, Req, Run, SendError};
use super::scenario::FirstRequest;
use super::token::{peek, Peeked};
use crate::rng::SplitMix64;

/// How a shopper's visit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// Admitted and finished browsing.
    Done,
    /// Gave up waiting without a word (stopped polling).
    Abandoned,
    /// Gave up waiting and said so (`POST /.flashgate/leave`).
    LeftQueue,
    /// The sale sold out.
    SoldOut,
    /// The sale is closed (or draining: no new tickets).
    Closed,
    /// Answered with a bot challenge (a simulated shopper does not solve proofs of work).
    Challenged,
    /// Too many failed requests.
    Errors,
    /// The run stopped first.
    #[default]
    Stopped,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Done => "done",
            End::Abandoned => "abandoned",
            End::LeftQueue => "left_queue",
            End::SoldOut => "sold_out",
            End::Closed => "closed",
            End::Challenged => "challenged",
            End::Errors => "errors",
            End::Stopped => "stopped",
        }
    }
}

/// What one shopper saw. Times are milliseconds since the start of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Record {
    pub id: u32,
    pub bot: bool,
    /// A bot without a ticket of its own (it uses its group's).
    pub follower: bool,
    pub node: u16,
    /// Will not give up by design (the `all_admitted` check covers these).
    pub persistent: bool,
    pub arrived_ms: u64,
    pub ticket: Option<u64>,
    /// Place in the admission order (`serving + position` from a status), which differs from
    /// the ticket number in a shuffled pre-queue.
    pub order: Option<u64>,
    /// The ticket was issued while the room was in its pre-queue.
    pub prequeue: bool,
    pub waited: bool,
    /// Last time the server said "wait".
    pub last_wait_ms: Option<u64>,
    /// When the pass arrived.
    pub admitted_ms: Option<u64>,
    /// The poll interval in force when admitted.
    pub poll_after_ms: u64,
    /// The server's minute of entry (from the pass).
    pub pass_minute: Option<u32>,
    /// First ETA band seen while the line moved: (when, low s, mid s, high s).
    pub eta: Option<(u64, u64, u64, u64)>,
    pub polls: u32,
    /// Times the shopper lost its ticket and joined again.
    pub requeued: u32,
    /// Times the status said "your turn" but the entry was refused (minute or room full).
    pub claims_refused: u32,
    pub pages: u32,
    pub carted: bool,
    pub ordered: bool,
    pub left: bool,
    pub failures: u32,
    /// Bots: pages served with a shared pass, and refused.
    pub replay_ok: u32,
    pub replay_refused: u32,
    pub end: End,
    pub end_ms: u64,
}

/// What a bot group shares: its ticket cookie, then its pass cookie.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub ticket: Option<String>,
    pub pass: Option<String>,
}

/// The fields of the status JSON the simulator reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatusJson {
    #[serde(default)]
    pub state: String,
    pub ticket: Option<u64>,
    pub position: Option<u64>,
    pub serving: Option<u64>,
    pub poll_after_ms: Option<u64>,
    #[serde(default)]
    pub admitted: bool,
    pub eta_seconds: Option<u64>,
    pub eta_low_seconds: Option<u64>,
    pub eta_high_seconds: Option<u64>,
    /// Size of the shuffled pre-queue, once drawn.
    pub prequeue_count: Option<u64>,
}

/// How a response to the protected page reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A pass was set (or the page came through with the pass we hold).
    In,
    /// A ticket was set or renewed: wait.
    Wait,
    SoldOut,
    Closed,
    Challenged,
    /// Try again after `Retry-After` (429, 503 with Retry-After, other 5xx).
    Retry,
}

struct Shopper {
    run: Arc<Run>,
    rec: Record,
    jar: Jar,
    rng: SplitMix64,
    node: usize,
    pass_name: String,
    ticket_name: String,
    status_path: String,
    leave_path: String,
    poll_after: Duration,
    bot: bool,
    client: std::net::Ipv4Addr,
    stop: tokio::sync::watch::Receiver<bool>,
}

/// Runs shopper `id`; `role` is `Some((group, leader))` for a bot.
pub async fn run_one(run: Arc<Run>, id: u32, role: Option<(usize, bool)>) {
    let sc = &run.scenario;
    let mut rng = SplitMix64::stream(sc.seed, u64::from(id) + 1);
    let node = id as usize % run.nodes().max(1);
    let bot = role.is_some();
    let persistent = bot || !rng.chance(sc.shopper.give_up_share);
    let rec = Record {
        id,
        bot,
        follower: role.is_some_and(|(_, leader)| !leader),
        node: node as u16,
        persistent,
        arrived_ms: run.elapsed_ms(),
        ..Record::default()
    };
    run.metrics.arrivals.add(run.elapsed(), 1);
    let room = sc.room.clone();
    let mut s = Shopper {
        stop: run.stop_rx(),
        rec,
        jar: Jar::default(),
        rng,
        node,
        pass_name: format!("fg_p_{room}"),
        ticket_name: format!("fg_t_{room}"),
        status_path: format!("/.flashgate/status?room={room}"),
        leave_path: format!("/.flashgate/leave?room={room}"),
        poll_after: Duration::from_secs(1),
        bot,
        client: super::run::client_address(id),
        run: run.clone(),
    };
    let end = match role {
        None => s.shop_visit().await,
        Some((g, true)) => s.bot_leader(g).await,
        Some((g, false)) => s.bot_follower(g).await,
    };
    let mut rec = s.rec;
    if rec.waited && rec.admitted_ms.is_none() {
        run.metrics.waiting_now.fetch_sub(1, Ordering::Relaxed);
    }
    if matches!(end, End::Abandoned | End::LeftQueue) {
        run.metrics.gave_up.add(run.elapsed(), 1);
    }
    rec.end = end;
    rec.end_ms = run.elapsed_ms();
    run.records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(rec);
    if !bot {
        run.humans_done.fetch_add(1, Ordering::Relaxed);
    }
    run.done.fetch_add(1, Ordering::Relaxed);
}

/// `d` scaled by a random factor in 50–150 %.
fn jitter(rng: &mut SplitMix64, d: Duration) -> Duration {
    d.mul_f64(0.5 + rng.unit())
}

impl Shopper {
    async fn send(
        &mut self,
        ep: Endpoint,
        post: bool,
        path: &str,
        json: bool,
        form: Option<String>,
    ) -> Result<Reply, SendError> {
        let cookie = self.jar.header();
        self.send_with(ep, post, path, json, form, cookie).await
    }

    async fn send_with(
        &mut self,
        ep: Endpoint,
        post: bool,
        path: &str,
        json: bool,
        form: Option<String>,
        cookie: Option<String>,
    ) -> Result<Reply, SendError> {
        let r = self
            .run
            .send(
                self.node,
                Req {
                    ep,
                    post,
                    path,
                    json,
                    bot: self.bot,
                    cookie,
                    form,
                    client: self.client,
                },
            )
            .await;
        if let Err(SendError::Failed(_)) = r {
            self.rec.failures += 1;
        }
        r
    }

    fn failed_too_often(&self) -> bool {
        self.rec.failures > self.run.scenario.shopper.max_errors
    }

    /// Reads a response to the protected page; counts unexpected answers as failures.
    fn answer(&mut self, ep: Endpoint, r: &Reply) -> Answer {
        r.absorb(&mut self.jar);
        if r.sets(&self.pass_name) && r.status < 400 {
            return Answer::In;
        }
        if r.sets(&self.ticket_name) {
            return Answer::Wait;
        }
        let at = self.run.elapsed();
        match r.status {
            200..=399 => Answer::In,
            410 => Answer::SoldOut,
            403 => Answer::Challenged,
            503 if r.retry_after.is_none() => Answer::Closed,
            code => {
                self.rec.failures += 1;
                self.run
                    .metrics
                    .error(at, format!("{} http {code}", ep.as_str()));
                Answer::Retry
            }
        }
    }

    fn became_waiting(&mut self) {
        if !self.rec.waited {
            self.rec.waited = true;
            self.run.metrics.waiting_now.fetch_add(1, Ordering::Relaxed);
        }
        self.rec.last_wait_ms = Some(self.run.elapsed_ms());
    }

    fn became_admitted(&mut self) {
        let now = self.run.elapsed_ms();
        self.rec.admitted_ms = Some(now);
        self.rec.poll_after_ms = self.poll_after.as_millis() as u64;
        if self.rec.waited {
            self.run.metrics.waiting_now.fetch_sub(1, Ordering::Relaxed);
        }
        self.run.metrics.admissions.add(self.run.elapsed(), 1);
        self.run.admitted.fetch_add(1, Ordering::Relaxed);
        if let Some(Peeked::Pass {
            ticket,
            checkin_minute,
            ..
        }) = self.jar.get(&self.pass_name).and_then(peek)
        {
            if ticket > 0 {
                self.rec.ticket.get_or_insert(ticket);
            }
            self.rec.pass_minute = Some(checkin_minute);
        }
    }

    /// Notes what a status (or waiting JSON) says.
    fn observe(&mut self, st: &StatusJson) {
        if let Some(t) = st.ticket {
            self.rec.ticket = Some(t);
        }
        if st.state == "prequeue" && self.rec.polls <= 1 {
            self.rec.prequeue = true;
        }
        // Tickets numbered before the draw were shuffled (a fresh room numbers from 1).
        if let (Some(n), Some(t)) = (st.prequeue_count, self.rec.ticket) {
            if t <= n {
                self.rec.prequeue = true;
            }
        }
        if let (Some(p), Some(s)) = (st.position, st.serving) {
            if !st.admitted {
                let order = s + p;
                self.rec.order = Some(self.rec.order.map_or(order, |o| o.min(order)));
            }
        }
        if let Some(ms) = st.poll_after_ms {
            self.poll_after = Duration::from_millis(ms.clamp(100, 120_000));
        }
        if self.rec.eta.is_none() && st.state == "queueing" {
            if let (Some(lo), Some(mid), Some(hi)) =
                (st.eta_low_seconds, st.eta_seconds, st.eta_high_seconds)
            {
                self.rec.eta = Some((self.run.elapsed_ms(), lo, mid, hi));
            }
        }
    }

    fn ticket_from_cookie(&mut self) {
        if self.rec.ticket.is_none() {
            if let Some(Peeked::Ticket { number, .. }) =
                self.jar.get(&self.ticket_name).and_then(peek)
            {
                self.rec.ticket = Some(number);
            }
        }
    }

    /// Opens the protected page until the shopper holds a ticket or a pass.
    async fn join(&mut self, ep: Endpoint) -> Result<Answer, End> {
        let json = !self.bot && self.run.scenario.shopper.first_request == FirstRequest::Json;
        let path = self.run.scenario.path.clone();
        loop {
            match self.send(ep, false, &path, json, None).await {
                Err(SendError::Stopped) => return Err(End::Stopped),
                Err(SendError::Failed(_)) => {
                    if self.failed_too_often() {
                        return Err(End::Errors);
                    }
                    if !self.run.sleep(&mut self.stop, Duration::from_secs(1)).await {
                        return Err(End::Stopped);
                    }
                }
                Ok(r) => match self.answer(ep, &r) {
                    Answer::In => return Ok(Answer::In),
                    Answer::Wait => {
                        if let Some(ra) = r.retry_after {
                            self.poll_after = ra.max(Duration::from_millis(100));
                        }
                        if json {
                            if let Ok(st) = serde_json::from_slice::<StatusJson>(&r.body) {
                                self.observe(&st);
                            }
                        }
                        self.ticket_from_cookie();
                        return Ok(Answer::Wait);
                    }
                    Answer::SoldOut => return Err(End::SoldOut),
                    Answer::Closed => return Err(End::Closed),
                    Answer::Challenged => return Err(End::Challenged),
                    Answer::Retry => {
                        if self.failed_too_often() {
                            return Err(End::Errors);
                        }
                        let wait = r.retry_after.unwrap_or(Duration::from_secs(1));
                        if !self.run.sleep(&mut self.stop, wait).await {
                            return Err(End::Stopped);
                        }
                    }
                },
            }
        }
    }

    /// Waits in line until admitted. `poll_every` overrides the server's pace (bots);
    /// `give_up_after` is the shopper's patience.
    async fn wait_turn(
        &mut self,
        poll_every: Option<Duration>,
        give_up_after: Option<Duration>,
    ) -> Result<(), End> {
        let since = self.run.elapsed();
        self.became_waiting();
        loop {
            // Like the waiting page: the server's interval, jittered ±10 % (a bot: its own).
            let mut pause = match poll_every {
                Some(every) => every,
                None => self.poll_after.mul_f64(0.9 + 0.2 * self.rng.unit()),
            };
            if let Some(p) = give_up_after {
                let waited = self.run.elapsed().saturating_sub(since);
                if waited >= p {
                    return Err(self.give_up().await);
                }
                pause = pause.min(p - waited);
            }
            if !self.run.sleep(&mut self.stop, pause).await {
                return Err(End::Stopped);
            }
            if give_up_after.is_some_and(|p| self.run.elapsed().saturating_sub(since) >= p) {
                continue;
            }
            let status_path = self.status_path.clone();
            let r = match self
                .send(Endpoint::Status, false, &status_path, true, None)
                .await
            {
                Err(SendError::Stopped) => return Err(End::Stopped),
                Err(SendError::Failed(_)) if self.failed_too_often() => return Err(End::Errors),
                Err(SendError::Failed(_)) => continue,
                Ok(r) => r,
            };
            self.rec.polls += 1;
            r.absorb(&mut self.jar);
            if r.status == 403 {
                // Bot defence blocked this client.
                return Err(End::Challenged);
            }
            if r.status != 200 {
                let at = self.run.elapsed();
                self.run
                    .metrics
                    .error(at, format!("status http {}", r.status));
                self.rec.failures += 1;
                if self.failed_too_often() {
                    return Err(End::Errors);
                }
                if let Some(ra) = r.retry_after {
                    if !self.run.sleep(&mut self.stop, ra).await {
                        return Err(End::Stopped);
                    }
                }
                continue;
            }
            let Ok(st) = serde_json::from_slice::<StatusJson>(&r.body) else {
                let at = self.run.elapsed();
                self.run.metrics.error(at, "status bad json");
                self.rec.failures += 1;
                continue;
            };
            self.observe(&st);
            match st.state.as_str() {
                "sold_out" => return Err(End::SoldOut),
                "closed" => return Err(End::Closed),
                _ => {}
            }
            if st.admitted {
                // Our turn: open the page again, which claims the entry.
                match self.join(Endpoint::Claim).await? {
                    Answer::In => return Ok(()),
                    // The store said not yet: this minute's entries or the room are full.
                    _ => {
                        self.rec.claims_refused += 1;
                        self.became_waiting();
                    }
                }
            } else if st.ticket.is_none() {
                // The ticket is gone (expired, given up, or refused): join again.
                self.rec.requeued += 1;
                self.jar.remove(&self.ticket_name);
                if self.join(Endpoint::Join).await? == Answer::In {
                    return Ok(());
                }
                self.became_waiting();
            } else {
                self.became_waiting();
            }
        }
    }

    async fn give_up(&mut self) -> End {
        let sc = &self.run.scenario;
        if self.rng.chance(sc.shopper.leave_queue_share) {
            let leave = self.leave_path.clone();
            if let Ok(r) = self.send(Endpoint::Leave, true, &leave, true, None).await {
                r.absorb(&mut self.jar);
                self.rec.left = r.status == 200;
            }
            End::LeftQueue
        } else {
            End::Abandoned
        }
    }

    /// A human shopper's visit.
    async fn shop_visit(&mut self) -> End {
        let sh = self.run.scenario.shopper.clone();
        let patience = (!self.rec.persistent).then(|| jitter(&mut self.rng, sh.patience));
        match self.join(Endpoint::Join).await {
            Err(end) => return end,
            Ok(Answer::In) => {}
            Ok(_) => {
                if let Err(end) = self.wait_turn(None, patience).await {
                    return end;
                }
            }
        }
        self.became_admitted();
        self.run.metrics.in_shop_now.fetch_add(1, Ordering::Relaxed);
        let end = self.browse(&sh).await;
        self.run.metrics.in_shop_now.fetch_sub(1, Ordering::Relaxed);
        end
    }

    async fn browse(&mut self, sh: &super::scenario::Shopper) -> End {
        match self.shop(sh).await {
            Ok(()) => End::Done,
            Err(end) => end,
        }
    }

    /// Pages, maybe a cart and a checkout, maybe leaving: what an admitted shopper does.
    /// `Err` when the run stopped.
    async fn shop(&mut self, sh: &super::scenario::Shopper) -> Result<(), End> {
        let pages = self.rng.between(sh.browse.0, sh.browse.1);
        for _ in 0..pages {
            self.think(sh.think).await?;
            let i = (self.rng.next_u64() % sh.pages.len().max(1) as u64) as usize;
            let Some(page) = sh.pages.get(i).cloned() else {
                break;
            };
            match self.step(Endpoint::Page, false, &page, false, None).await? {
                Some(status) if status < 400 => self.rec.pages += 1,
                Some(status) => self.error(format!("page http {status}")),
                None => {}
            }
        }
        if self.rng.chance(sh.add_to_cart) {
            self.think(sh.think).await?;
            let i = (self.rng.next_u64() % sh.skus.len().max(1) as u64) as usize;
            let sku = sh.skus.get(i).cloned().unwrap_or_default();
            let form = Some(format!("sku={sku}&qty=1"));
            if let Some(status) = self
                .step(Endpoint::Cart, true, "/cart", false, form)
                .await?
            {
                self.rec.carted = status < 400;
                if status >= 400 {
                    self.error(format!("cart http {status}"));
                }
            }
        }
        if self.rec.carted && self.rng.chance(sh.checkout) {
            self.think(sh.think).await?;
            let form = Some(String::new());
            let answer = self.step(Endpoint::Checkout, true, "/checkout", false, form);
            if let Some(status) = answer.await? {
                // 409: that product sold out — a normal end of a flash sale, not an error.
                self.rec.ordered = status < 400;
                if status >= 400 && status != 409 {
                    self.error(format!("checkout http {status}"));
                }
            }
        }
        if self.rng.chance(sh.leave) {
            let leave = self.leave_path.clone();
            if let Some(status) = self.step(Endpoint::Leave, true, &leave, true, None).await? {
                self.rec.left = status == 200;
            }
        }
        Ok(())
    }

    /// Waits a jittered `think` time; `Err` when the run stops meanwhile.
    async fn think(&mut self, think: std::time::Duration) -> Result<(), End> {
        let pause = jitter(&mut self.rng, think);
        if self.run.sleep(&mut self.stop, pause).await {
            Ok(())
        } else {
            Err(End::Stopped)
        }
    }

    /// [`Self::send`], keeping the cookies of the answer: its status, or `None` when the
    /// request failed (counted where it failed); `Err` when the run stopped.
    async fn step(
        &mut self,
        ep: Endpoint,
        post: bool,
        path: &str,
        json: bool,
        form: Option<String>,
    ) -> Result<Option<u16>, End> {
        match self.send(ep, post, path, json, form).await {
            Err(SendError::Stopped) => Err(End::Stopped),
            Err(SendError::Failed(_)) => Ok(None),
            Ok(r) => {
                r.absorb(&mut self.jar);
                Ok(Some(r.status))
            }
        }
    }

    /// Records an error now.
    fn error(&self, what: String) {
        let at = self.run.elapsed();
        self.run.metrics.error(at, what);
    }

    /// A bot with its own ticket: polls fast, shares its ticket and then its pass.
    async fn bot_leader(&mut self, group: usize) -> End {
        let every = self.run.scenario.bots.poll_every;
        let shared = self.run.groups.get(group).cloned();
        let admitted = match self.join(Endpoint::Join).await {
            Err(end) => return end,
            Ok(Answer::In) => true,
            Ok(_) => false,
        };
        if let (Some(g), Some(t)) = (&shared, self.jar.get(&self.ticket_name)) {
            let cookie = format!("{}={t}", self.ticket_name);
            g.send_modify(|s| s.ticket = Some(cookie));
        }
        if !admitted {
            if let Err(end) = self.wait_turn(Some(every), None).await {
                return end;
            }
        }
        self.became_admitted();
        if let (Some(g), Some(p)) = (&shared, self.jar.get(&self.pass_name)) {
            let cookie = format!("{}={p}", self.pass_name);
            g.send_modify(|s| s.pass = Some(cookie));
        }
        let pages = self.run.scenario.shopper.pages.clone();
        for k in 0..self.run.scenario.bots.pages {
            let Some(page) = pages.get(k as usize % pages.len().max(1)).cloned() else {
                break;
            };
            match self.step(Endpoint::Page, false, &page, false, None).await {
                Err(end) => return end,
                Ok(Some(status)) if status < 400 => self.rec.pages += 1,
                Ok(_) => {}
            }
        }
        End::Done
    }

    /// A bot without a ticket of its own: polls with the group's ticket, then browses with
    /// the group's pass.
    async fn bot_follower(&mut self, group: usize) -> End {
        let every = self.run.scenario.bots.poll_every;
        let Some(mut shared) = self.run.groups.get(group).map(|g| g.subscribe()) else {
            return End::Done;
        };
        let status_path = self.status_path.clone();
        let pass = loop {
            let now = shared.borrow().clone();
            if let Some(p) = now.pass {
                break p;
            }
            if let Some(t) = now.ticket {
                if !self.rec.waited {
                    self.rec.waited = true;
                    self.run.metrics.waiting_now.fetch_add(1, Ordering::Relaxed);
                }
                match self
                    .send_with(Endpoint::Status, false, &status_path, true, None, Some(t))
                    .await
                {
                    Err(SendError::Stopped) => return End::Stopped,
                    Err(SendError::Failed(_)) => {}
                    Ok(_) => self.rec.polls += 1,
                }
            }
            if self.run.stopping() {
                return End::Stopped;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shared.changed() => {}
                _ = self.stop.changed() => return End::Stopped,
            }
        };
        if self.rec.waited {
            self.rec.waited = false;
            self.run.metrics.waiting_now.fetch_sub(1, Ordering::Relaxed);
        }
        let pages = self.run.scenario.shopper.pages.clone();
        for k in 0..self.run.scenario.bots.pages {
            let Some(page) = pages.get(k as usize % pages.len().max(1)).cloned() else {
                break;
            };
            match self
                .send_with(
                    Endpoint::Page,
                    false,
                    &page,
                    false,
                    None,
                    Some(pass.clone()),
                )
                .await
            {
                Err(SendError::Stopped) => return End::Stopped,
                Err(SendError::Failed(_)) => {}
                Ok(r) => {
                    // Served with the shared pass, or sent to the line / refused.
                    if r.status < 400 && !r.sets(&self.ticket_name) {
                        self.rec.replay_ok += 1;
                    } else {
                        self.rec.replay_refused += 1;
                    }
                }
            }
        }
        End::Done
    }
}
