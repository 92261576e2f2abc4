//! Seeded deterministic simulation of one waiting room under a flash-sale crowd.
//!
//! Each seed builds a room (rate, capacity, session, claim window, abandonment, method, events
//! and a pause drawn from the seed), lets 10,000 shoppers arrive in a burst, and drives the
//! room exactly as the proxy does: the controller ticks every slice, every request goes through
//! [`RoomView::decide`], tickets and passes are real signed tokens, and the store is the
//! [`MemoryStore`]. Time is a fake clock advanced in 250 ms steps; nothing sleeps.
//!
//! After every step, and at every claim, the guarantees of the crate docs are checked (see
//! [`Sim::check_step`] and [`Sim::claim`]); a failure names the seed, the step and the command
//! that replays it alone:
//!
//! ```text
//! FLASHGATE_SIM_SEED=1234 cargo test -p waitroom --test simulation -- --nocapture
//! ```
//!
//! Shoppers are kept in a binary heap keyed by the time of their next action, so a step costs
//! O(actions · log n), never O(n).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures_executor::block_on;
use waitroom::controller;
use waitroom::eta::EtaEstimator;
use waitroom::room;
use waitroom::shuffle;
use waitroom::token::Expect;
use waitroom::{
    Binding, CheckIn, ClaimOutcome, ClaimRequest, Credential, Decision, EventSettings, KeyRing,
    MemoryStore, Overrides, Pass, QueueingMethod, RoomSettings, RoomState, RoomView, SessionMode,
    Store, Ticket, TokenError, UnixMillis,
};

const ROOM: &str = "drop";
const SHOPPERS: usize = 10_000;
const STEP_MS: u64 = 250;
/// Seeds run by a plain `cargo test`: each kind of scenario at least once.
const DEFAULT_SEEDS: std::ops::RangeInclusive<u64> = 1..=12;
/// A seed that has not emptied its room after this much simulated time has starved someone.
const MAX_SIM_MS: u64 = 8 * 3600 * 1000;
const SEED_VAR: &str = "FLASHGATE_SIM_SEED";

// ---------------------------------------------------------------------------------------------
// Deterministic randomness

/// splitmix64: tiny, seedable, good enough to draw a crowd.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Exponential with `mean`.
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// FIFO room, no event: the sale is the room opening to a burst.
    Fifo,
    /// Event with a pre-queue shuffled at the start, then FIFO.
    ShuffledPrequeue,
    /// Event with a FIFO pre-queue.
    FifoPrequeue,
    /// `random` room: lotteries among those waiting.
    Random,
    /// FIFO room paused for two minutes mid-sale.
    Pause,
    /// ~30 % no-shows and a deep queue: real entries must track the rate.
    NoShows,
    /// A small room with long sessions, full most of the time: the cap binds, not the rate.
    Capacity,
}

/// Seed `s` runs `KINDS[s % 12]`: seeds 1..=12 cover every kind at least once.
const KINDS: [Kind; 12] = [
    Kind::Fifo,
    Kind::ShuffledPrequeue,
    Kind::Random,
    Kind::NoShows,
    Kind::FifoPrequeue,
    Kind::Pause,
    Kind::Capacity,
    Kind::ShuffledPrequeue,
    Kind::Random,
    Kind::NoShows,
    Kind::Fifo,
    Kind::Capacity,
];

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

/// Everything a seed decides before the first step.
struct Scenario {
    seed: u64,
    kind: Kind,
    settings: RoomSettings,
    /// Effective rate and cap during the sale (the event's when there is one).
    rate: u32,
    cap: u32,
    /// Rate and cap outside the event window (the room's own settings).
    room_rate: u32,
    room_cap: u32,
    sim_start: u64,
    start: u64,
    prequeue_at: Option<u64>,
    shuffle: bool,
    event_id: u32,
    pause: Option<(u64, u64)>,
    /// Share of shoppers who wait as long as it takes.
    p_persist: f64,
    /// Share of persistent shoppers gone by the time their turn comes.
    p_noshow: f64,
    /// Mean patience of the others, seconds.
    patience_s: f64,
    /// Mean time an admitted shopper browses, seconds.
    browse_s: f64,
}

impl Scenario {
    fn new(seed: u64) -> Self {
        let kind = KINDS[(seed % KINDS.len() as u64) as usize];
        let mut rng = Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let (rate, cap, session_s) = match kind {
            Kind::NoShows => (rng.range(400, 480) as u32, 2000, 120),
            Kind::Capacity => {
                let cap = rng.range(100, 200) as u32;
                (
                    cap / 2 + rng.range(0, u64::from(cap / 2)) as u32,
                    cap,
                    rng.range(120, 240),
                )
            }
            _ => {
                let rate = rng.range(60, 600) as u32;
                (
                    rate,
                    rng.range(u64::from(rate.max(100)), 2000) as u32,
                    rng.range(120, 600),
                )
            }
        };
        // Sales start at an arbitrary millisecond: not aligned to the tick or the minute.
        let start = 1_750_000_000_000 + rng.range(0, 3_600_000);
        let mut s = RoomSettings::new(ROOM, nz(rate), nz(cap));
        s.session_duration = Duration::from_secs(session_s);
        s.session_mode = match kind {
            Kind::Random | Kind::FifoPrequeue => SessionMode::Fixed,
            _ => SessionMode::Sliding,
        };
        s.poll_interval = Duration::from_secs(5);
        s.claim_window = Duration::from_secs(match kind {
            Kind::NoShows => 30,
            Kind::Capacity => 20,
            _ => rng.range(20, 60),
        });
        s.abandon_after = Duration::from_secs(rng.range(60, 120));
        s.method = if kind == Kind::Random {
            QueueingMethod::Random
        } else {
            QueueingMethod::Fifo
        };
        for (i, b) in s.seed_secret.iter_mut().enumerate() {
            *b = (seed >> ((i % 8) * 8)) as u8 ^ i as u8;
        }
        let (mut room_rate, mut room_cap) = (rate, cap);
        let (mut prequeue_at, mut shuffle, mut event_id) = (None, false, 0);
        let mut sim_start = start - 10_000;
        if matches!(kind, Kind::ShuffledPrequeue | Kind::FifoPrequeue) {
            // The room's own numbers are smaller; the event overrides them for the sale.
            room_rate = (rate / 4).max(1);
            room_cap = (cap / 4).max(room_rate);
            s.new_users_per_minute = nz(room_rate);
            s.total_active_users = nz(room_cap);
            let pre = start - rng.range(60_000, 180_000);
            shuffle = kind == Kind::ShuffledPrequeue;
            let name = format!("launch-{seed}");
            event_id = EventSettings::id_for(&name);
            let ends_at = UnixMillis(start + 24 * 3600 * 1000);
            let window = EventSettings::window(
                &name,
                Some(UnixMillis(pre)),
                UnixMillis(start),
                ends_at,
                shuffle,
            );
            s.events.push(EventSettings {
                new_users_per_minute: Some(nz(rate)),
                total_active_users: Some(nz(cap)),
                message: Some("Launch day".into()),
                ..window
            });
            prequeue_at = Some(pre);
            sim_start = pre - 40_000;
        }
        let pause = (kind == Kind::Pause).then(|| {
            let on = sim_start + (start - sim_start + 180_000).div_ceil(STEP_MS) * STEP_MS;
            (on, on + 120_000)
        });
        let p_persist = match kind {
            Kind::NoShows => 0.95,
            Kind::Capacity => 0.1,
            // Enough persistent shoppers for ~8 minutes of entries at the rate the room can
            // sustain (rate, or capacity over the time a session occupies it); the rest lose
            // patience. This bounds the simulation's cost: every waiting minute is polls.
            _ => {
                let occupancy_s = 90.0 + session_s as f64 + 30.0;
                let sustained = f64::from(rate).min(f64::from(cap) * 60.0 / occupancy_s);
                (sustained * 8.0 / SHOPPERS as f64).clamp(0.05, 0.4)
            }
        };
        Self {
            seed,
            kind,
            settings: s,
            rate,
            cap,
            room_rate,
            room_cap,
            sim_start,
            start,
            prequeue_at,
            shuffle,
            event_id,
            pause,
            p_persist,
            p_noshow: if kind == Kind::NoShows { 0.3 } else { 0.1 },
            patience_s: if kind == Kind::Capacity { 20.0 } else { 60.0 },
            browse_s: match kind {
                Kind::NoShows | Kind::Capacity => 60.0,
                _ => 90.0,
            },
        }
    }

    fn in_event(&self, t: u64) -> bool {
        self.prequeue_at.is_some_and(|p| t >= p)
    }

    fn in_prequeue(&self, t: u64) -> bool {
        self.prequeue_at.is_some_and(|p| t >= p && t < self.start)
    }

    fn paused(&self, t: u64) -> bool {
        self.pause.is_some_and(|(on, off)| t >= on && t < off)
    }

    /// Rate and cap in force at `t`, computed from the scenario (not by the crate).
    fn rate_cap_at(&self, t: u64) -> (u32, u32) {
        if self.in_event(t) {
            (self.rate, self.cap)
        } else {
            (self.room_rate, self.room_cap)
        }
    }

    fn session_minutes(&self) -> u32 {
        (self.settings.session_duration.as_secs().div_ceil(60)).max(1) as u32
    }

    /// Most the serving number may run ahead of the ticket counter: one slice of the largest
    /// possible (fully no-show-compensated) budget, at least one.
    fn lead_bound(&self) -> u64 {
        let noshow = (self.settings.max_noshow * 1000.0) as u64;
        let tick_ms = self.settings.tick.as_millis() as u64;
        let rate = u64::from(self.rate.max(self.room_rate));
        (rate * 1_000_000 / (1000 - noshow) * tick_ms / 60_000)
            .div_ceil(1000)
            .max(1)
    }
}

// ---------------------------------------------------------------------------------------------
// Shoppers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotArrived,
    Waiting,
    Entered,
    Gone,
}

struct Shopper {
    phase: Phase,
    binding: u64,
    /// Waits as long as it takes (liveness is asserted for these unless `noshow`/`leaves`).
    persistent: bool,
    noshow: bool,
    give_up_at: u64,
    leave_waiting_at: u64,
    /// Goes silent once, at `gap_at`, for `gap_ms`.
    gap_at: u64,
    gap_ms: u64,
    /// The next poll is the return from that gap.
    returning: bool,
    browse_ms: u64,
    leave_after: bool,
    /// Comes back once after a gap close to the session length.
    edge_return: bool,
    replay: bool,
    second_tab: bool,
    ticket: Option<Ticket>,
    token: String,
    /// When the ticket was last issued or renewed (ms).
    renewed_at: u64,
    pass: Option<Pass>,
    browse_until: u64,
    entered: bool,
    /// Ground truth: the session is live (not released, `now <= expires_at`).
    live: bool,
    live_expires: u64,
}

impl Shopper {
    fn keeps_polling(&self) -> bool {
        self.persistent && !self.noshow && self.leave_waiting_at == u64::MAX
    }

    /// Holds the ticket `t` (signed: `token`), renewed at `now`, and waits.
    fn wait_with(&mut self, token: String, t: Ticket, now: u64) {
        self.token = token;
        self.ticket = Some(t);
        self.renewed_at = now;
        self.phase = Phase::Waiting;
    }

    /// Holds the pass (signed: `token`) and browses the shop from `now` for its browsing time.
    fn enter_with(&mut self, token: String, pass: Pass, now: u64) {
        self.token = token;
        self.pass = Some(pass);
        self.entered = true;
        self.phase = Phase::Entered;
        self.browse_until = now + self.browse_ms;
    }
}

/// Ground-truth count of live sessions, with lazy expiry.
#[derive(Default)]
struct Live {
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    count: u64,
}

#[derive(Default, Debug)]
struct Stats {
    decisions: u64,
    entries: u64,
    noshows: u64,
    abandoned: u64,
    left_waiting: u64,
    left_shopping: u64,
    requeued: u64,
    kept_place_after_gap: u64,
    replays: u64,
    full: u64,
    minute_full: u64,
    leeway_requests: u64,
    max_active: u64,
    max_used: u64,
    max_live: u64,
    steady_minutes: u64,
    steady_entries: u64,
    steady_min_minute: u64,
    sim_ms: u64,
}

// ---------------------------------------------------------------------------------------------
// The simulation

struct Sim {
    sc: Scenario,
    keys: KeyRing,
    store: MemoryStore,
    eta: EtaEstimator,
    view: RoomView,
    rng: Rng,
    step: u64,
    shoppers: Vec<Shopper>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    issued: u64,
    entered: Vec<bool>,
    entries_per_minute: HashMap<u32, u64>,
    prev_serving: u64,
    paused: bool,
    /// When each ticket was issued (ms), by number.
    issue_times: Vec<u64>,
    /// The first ticket handed out by a view that saw the pre-queue open.
    first_prequeue_ticket: Option<u64>,
    /// The pre-queue as frozen at the start: tickets `lo+1 ..= hi`, i.e. those issued before
    /// the controller's first tick in the live phase.
    prequeue: Option<(u64, u64)>,
    seed_hash_shown: Option<[u8; 32]>,
    start_audited: bool,
    /// `inverse[i]` = 0-based place of item `i`, per shuffled range `(lo, hi)`.
    inverses: HashMap<(u64, u64), Vec<u64>>,
    live: Live,
    /// Per minute: (queue deep at every step, steps seen).
    deep: HashMap<u32, (bool, u32)>,
    left_tickets: Vec<u64>,
    stats: Stats,
}

macro_rules! ensure {
    ($sim:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($sim.fail(format!($($fmt)+)));
        }
    };
}

/// What the position of a ticket must be, computed by the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Exact(u64),
    /// Order not drawn yet: no position, no admission.
    Undrawn,
    /// Its shuffled range was fully admitted: any position ≤ serving.
    Admitted,
}

impl Sim {
    fn new(seed: u64) -> Result<Self, String> {
        let sc = Scenario::new(seed);
        sc.settings
            .validate()
            .map_err(|e| format!("seed {seed}: invalid scenario settings: {e}"))?;
        let keys = KeyRing::new(&[(1, &[7u8; 32])], 1).expect("valid key ring");
        let store = MemoryStore::new();
        let eta = EtaEstimator::new();
        let snap = block_on(store.snapshot(ROOM, UnixMillis(sc.sim_start))).expect("snapshot");
        let view = RoomView::new(&sc.settings, snap, &eta);
        let mut rng = Rng::new(seed);
        let mut shoppers = Vec::with_capacity(SHOPPERS);
        let mut heap = BinaryHeap::with_capacity(SHOPPERS);
        for i in 0..SHOPPERS {
            let persistent = rng.chance(sc.p_persist);
            let arrive = arrival(&sc, &mut rng, persistent);
            let noshow = persistent && rng.chance(sc.p_noshow);
            let give_up_at = if persistent {
                u64::MAX
            } else {
                arrive + (rng.exp(sc.patience_s).max(10.0) * 1000.0) as u64
            };
            let leave_waiting_at = if persistent && !noshow && rng.chance(0.03) {
                arrive + rng.range(10_000, 600_000)
            } else {
                u64::MAX
            };
            let abandon_ms = sc.settings.abandon_after.as_millis() as u64;
            let (gap_at, gap_ms) = if persistent && rng.chance(0.04) {
                (
                    arrive + rng.range(10_000, 300_000),
                    rng.range(abandon_ms / 2, abandon_ms + 35_000),
                )
            } else {
                (u64::MAX, 0)
            };
            let binding = match i % 3 {
                0 => Binding::NONE,
                1 => Binding::UserAgent.value(format!("browser-{i}").as_bytes(), None),
                _ => Binding::IpPrefix { v4: 24, v6: 64 }.value(
                    b"",
                    Some(std::net::IpAddr::from([
                        10,
                        (i >> 16) as u8,
                        (i >> 8) as u8,
                        i as u8,
                    ])),
                ),
            };
            shoppers.push(Shopper {
                phase: Phase::NotArrived,
                binding,
                persistent,
                noshow,
                give_up_at,
                leave_waiting_at,
                gap_at,
                gap_ms,
                returning: false,
                browse_ms: (rng.exp(sc.browse_s) * 1000.0).min(1_200_000.0) as u64,
                leave_after: rng.chance(0.4),
                edge_return: rng.chance(0.05),
                replay: rng.chance(0.02),
                second_tab: rng.chance(0.02),
                ticket: None,
                token: String::new(),
                renewed_at: 0,
                pass: None,
                browse_until: 0,
                entered: false,
                live: false,
                live_expires: 0,
            });
            heap.push(Reverse((arrive, i as u32)));
        }
        Ok(Self {
            sc,
            keys,
            store,
            eta,
            view,
            rng,
            step: 0,
            shoppers,
            heap,
            issued: 0,
            entered: vec![false],
            entries_per_minute: HashMap::new(),
            prev_serving: 0,
            paused: false,
            issue_times: vec![0],
            first_prequeue_ticket: None,
            prequeue: None,
            seed_hash_shown: None,
            start_audited: false,
            inverses: HashMap::new(),
            live: Live::default(),
            deep: HashMap::new(),
            left_tickets: Vec::new(),
            stats: Stats::default(),
        })
    }

    fn now_step(&self) -> u64 {
        self.sc.sim_start + self.step * STEP_MS
    }

    /// A claim in the store; a store error fails the run.
    fn store_claim(&self, req: &ClaimRequest) -> Result<ClaimOutcome, String> {
        block_on(self.store.claim(ROOM, req)).map_err(|e| self.fail(e.to_string()))
    }

    fn fail(&self, msg: String) -> String {
        let t = self.now_step() as i64 - self.sc.start as i64;
        format!(
            "seed {seed} ({kind:?}) step {step} (t = {t:+} ms from the sale start): {msg}\n  \
             replay: {SEED_VAR}={seed} cargo test -p waitroom --test simulation -- --nocapture",
            seed = self.sc.seed,
            kind = self.sc.kind,
            step = self.step,
        )
    }

    /// The instant the current view was built (requests in a step use the step's view).
    fn view_time(&self) -> u64 {
        self.view.snapshot.time.0
    }

    fn leeway_s(&self) -> u64 {
        self.sc.settings.token_leeway.as_secs()
    }

    fn expect_for(&self, binding: u64, now: u64) -> Expect<'static> {
        Expect {
            room: ROOM,
            binding,
            now: UnixMillis(now),
            leeway: self.sc.settings.token_leeway,
        }
    }

    fn schedule(&mut self, at: u64, idx: usize) {
        self.heap.push(Reverse((at, idx as u32)));
    }

    fn run(mut self) -> Result<Stats, String> {
        loop {
            let t = self.now_step();
            ensure!(
                self,
                t < self.sc.start + MAX_SIM_MS,
                "liveness: the room did not empty in {} h; {} shoppers still have actions",
                MAX_SIM_MS / 3_600_000,
                self.heap.len()
            );
            if let Some((on, off)) = self.sc.pause {
                if t == on || t == off {
                    self.paused = t == on;
                    let o = Overrides {
                        paused: self.paused,
                        ..Overrides::default()
                    };
                    block_on(self.store.set_overrides(ROOM, &o))
                        .map_err(|e| self.fail(e.to_string()))?;
                }
            }
            let snap = block_on(controller::tick(
                &self.store,
                &self.sc.settings,
                UnixMillis(t),
            ))
            .map_err(|e| self.fail(format!("tick: {e}")))?;
            if self.step.is_multiple_of(16) {
                // The ETA is not under test here: a reading every 4 s keeps decisions cheap.
                self.eta.observe(snap.time, snap.ctl.admitted_total);
            }
            self.view = RoomView::new(&self.sc.settings, snap, &self.eta);
            self.check_step()?;
            while let Some(&Reverse((at, idx))) = self.heap.peek() {
                if at >= t + STEP_MS {
                    break;
                }
                self.heap.pop();
                self.act(idx as usize, at.max(t))?;
            }
            if self.heap.is_empty() {
                break;
            }
            self.step += 1;
        }
        self.finish()
    }

    // -----------------------------------------------------------------------------------------
    // Invariants checked after every step

    fn check_step(&mut self) -> Result<(), String> {
        let t = self.now_step();
        let snap = &self.view.snapshot;
        let serving = snap.ctl.serving;
        let (rate, cap) = self.sc.rate_cap_at(t);
        ensure!(
            self,
            serving >= self.prev_serving,
            "serving went back: {} -> {serving}",
            self.prev_serving
        );
        ensure!(
            self,
            serving <= snap.issued + self.sc.lead_bound(),
            "serving {serving} > issued {} + lead {}",
            snap.issued,
            self.sc.lead_bound()
        );
        ensure!(
            self,
            snap.issued == self.issued,
            "store issued {} != {} tickets handed out",
            snap.issued,
            self.issued
        );
        ensure!(
            self,
            snap.claimed_total == self.stats.entries,
            "store counts {} claims, shoppers entered {}",
            snap.claimed_total,
            self.stats.entries
        );
        let active = snap.active_total(UnixMillis(t).minute(), self.sc.session_minutes());
        let pending = snap.pending(UnixMillis(t), self.sc.settings.claim_window);
        self.stats.max_active = self.stats.max_active.max(active);
        self.stats.max_used = self.stats.max_used.max(active + pending);
        ensure!(
            self,
            active + pending <= u64::from(cap),
            "active {active} + pending {pending} > cap {cap}"
        );
        // States follow the schedule, and a room that does not admit does not advance.
        let expected_state = if self.sc.in_prequeue(t) {
            Some(RoomState::Prequeue)
        } else if self.sc.paused(t) {
            Some(RoomState::Paused)
        } else {
            None
        };
        match expected_state {
            Some(st) => {
                ensure!(
                    self,
                    self.view.state == st,
                    "state {:?}, expected {st:?}",
                    self.view.state
                );
                ensure!(
                    self,
                    serving == self.prev_serving,
                    "serving moved in state {st:?}"
                );
            }
            None => ensure!(
                self,
                matches!(self.view.state, RoomState::Idle | RoomState::Queueing),
                "state {:?} while the sale is open",
                self.view.state
            ),
        }
        ensure!(
            self,
            self.view.new_users_per_minute == rate && self.view.total_active_users == cap,
            "effective rate/cap {}/{} != {rate}/{cap}",
            self.view.new_users_per_minute,
            self.view.total_active_users
        );
        self.prev_serving = serving;
        if self.sc.kind == Kind::NoShows && t >= self.sc.start {
            let deep = snap.waiting() >= 2 * u64::from(rate);
            let e = self.deep.entry(UnixMillis(t).minute()).or_insert((true, 0));
            e.0 &= deep;
            e.1 += 1;
        }
        if self.sc.event_id != 0
            && !self.start_audited
            && snap.ctl.started_event == self.sc.event_id
        {
            self.audit_start()?;
        }
        if self.sc.kind == Kind::Random {
            self.learn_draws()?;
        }
        Ok(())
    }

    /// The first view after the event started: the pre-queue was frozen into the range of
    /// tickets issued during it, shuffled with the event seed, and every pre-queue ticket's
    /// position is its place in `shuffle::order` of that seed.
    fn audit_start(&mut self) -> Result<(), String> {
        self.start_audited = true;
        let snap = &self.view.snapshot;
        ensure!(
            self,
            snap.ctl.prequeue_event == self.sc.event_id,
            "the event started but the controller never saw its pre-queue open"
        );
        // The pre-queue is every ticket issued since the controller noted the counter (at most
        // two slices before the opening) up to its first tick of the live phase.
        let lo = snap.ctl.prequeue_base;
        let hi = self.issued;
        let first = self.first_prequeue_ticket.unwrap_or(hi + 1);
        ensure!(
            self,
            lo < first,
            "pre-queue tickets {first}..={lo} were left out of the pre-queue (base {lo})"
        );
        let opened = self.sc.prequeue_at.unwrap_or(0);
        let slack = 2 * self.sc.settings.tick.as_millis() as u64;
        for n in lo + 1..first.min(hi + 1) {
            let at = self.issue_times[n as usize];
            ensure!(
                self,
                at + slack >= opened,
                "ticket {n}, issued {} ms before the pre-queue opened, is in the pre-queue",
                opened - at
            );
        }
        self.prequeue = Some((lo, hi));
        let count = hi - lo;
        ensure!(
            self,
            snap.ctl.prequeue_count == count,
            "prequeue_count {} != {count} tickets issued in the pre-queue",
            snap.ctl.prequeue_count
        );
        if !self.sc.shuffle {
            ensure!(
                self,
                snap.ctl.ranges.is_empty(),
                "a FIFO pre-queue was shuffled"
            );
            return Ok(());
        }
        let event = &self.sc.settings.events[0];
        let seed = room::event_seed(&self.sc.settings, event);
        if count > 1 && snap.ctl.serving < hi {
            let r = snap.ctl.ranges.iter().find(|r| r.lo == lo && r.hi == hi);
            ensure!(
                self,
                r.is_some(),
                "no shuffled range ({lo}, {hi}] after the start: {:?}",
                snap.ctl.ranges
            );
            ensure!(
                self,
                r.is_some_and(|r| r.seed == seed),
                "the pre-queue range is not keyed by the event seed"
            );
        }
        let inverse = inverse_order(&seed, count);
        for n in lo + 1..=hi {
            let want = lo + 1 + inverse[(n - lo - 1) as usize];
            let got = self.view.position(n);
            ensure!(
                self,
                got == Some(want) || snap.ctl.serving >= hi,
                "pre-queue ticket {n}: position {got:?}, shuffle::order says {want}"
            );
        }
        self.inverses.insert((lo, hi), inverse);
        Ok(())
    }

    /// Random rooms: each new draw is keyed by `draw_seed(draws)` and covers the tickets
    /// waiting when it was made.
    fn learn_draws(&mut self) -> Result<(), String> {
        let snap = &self.view.snapshot;
        let mut new = Vec::new();
        for r in &snap.ctl.ranges {
            if !self.inverses.contains_key(&(r.lo, r.hi)) {
                new.push(*r);
            }
        }
        for r in new {
            let draws = self.view.snapshot.ctl.draws;
            ensure!(
                self,
                r.seed == room::draw_seed(&self.sc.settings, draws),
                "draw ({}, {}] is not keyed by draw_seed({draws})",
                r.lo,
                r.hi
            );
            ensure!(
                self,
                r.hi <= self.issued,
                "draw ({}, {}] beyond the {} tickets issued",
                r.lo,
                r.hi,
                self.issued
            );
            self.inverses
                .insert((r.lo, r.hi), inverse_order(&r.seed, r.hi - r.lo));
        }
        Ok(())
    }

    /// The position ticket `n` must have, from the scenario and the shuffle audit function.
    fn expected_position(&self, n: u64) -> Expected {
        let serving = self.view.serving();
        let snap = &self.view.snapshot;
        match self.sc.kind {
            Kind::ShuffledPrequeue => {
                if !self.sc.in_event(self.view_time()) {
                    return Expected::Exact(n);
                }
                let Some((lo, hi)) = self.prequeue else {
                    // Until the controller applies the start, no order is drawn.
                    return Expected::Undrawn;
                };
                if n <= lo || n > hi {
                    return Expected::Exact(n);
                }
                if hi - lo <= 1 {
                    return Expected::Exact(n);
                }
                if serving >= hi {
                    return Expected::Admitted;
                }
                match self.inverses.get(&(lo, hi)) {
                    Some(inv) => Expected::Exact(lo + 1 + inv[(n - lo - 1) as usize]),
                    None => Expected::Undrawn,
                }
            }
            Kind::Random => {
                for r in &snap.ctl.ranges {
                    if n > r.lo && n <= r.hi {
                        if let Some(inv) = self.inverses.get(&(r.lo, r.hi)) {
                            return Expected::Exact(r.lo + 1 + inv[(n - r.lo - 1) as usize]);
                        }
                    }
                }
                if n <= serving {
                    Expected::Admitted
                } else {
                    Expected::Undrawn
                }
            }
            Kind::Fifo | Kind::FifoPrequeue | Kind::Pause | Kind::NoShows | Kind::Capacity => {
                Expected::Exact(n)
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Shoppers' actions

    fn act(&mut self, i: usize, now: u64) -> Result<(), String> {
        match self.shoppers[i].phase {
            Phase::NotArrived => self.arrive(i, now),
            Phase::Waiting => self.poll(i, now),
            Phase::Entered => self.browse(i, now),
            Phase::Gone => Ok(()),
        }
    }

    fn arrive(&mut self, i: usize, now: u64) -> Result<(), String> {
        self.stats.decisions += 1;
        let d = self
            .view
            .decide(&self.sc.settings, Credential::None, UnixMillis(now));
        ensure!(self, d == Decision::NeedTicket, "a newcomer got {d:?}");
        let number = block_on(self.store.issue(ROOM, 1)).map_err(|e| self.fail(e.to_string()))?;
        self.issued += 1;
        ensure!(
            self,
            number == self.issued,
            "issue returned {number}, expected {}",
            self.issued
        );
        self.entered.push(false);
        self.issue_times.push(now);
        if self.sc.in_prequeue(self.view_time()) && self.first_prequeue_ticket.is_none() {
            self.first_prequeue_ticket = Some(number);
        }
        let binding = self.shoppers[i].binding;
        let t = self
            .view
            .new_ticket(&self.sc.settings, number, binding, UnixMillis(now));
        let abandon = self.sc.settings.abandon_after;
        ensure!(
            self,
            t.number == number
                && t.binding == binding
                && t.room == ROOM
                && t.last_seen == now / 1000
                && t.expires_at == UnixMillis(now).plus(abandon).secs()
                && t.event
                    == if self.sc.in_event(self.view_time()) {
                        self.sc.event_id
                    } else {
                        0
                    },
            "new ticket fields: {t:?}"
        );
        let token = self.keys.sign_ticket(&t);
        self.shoppers[i].wait_with(token, t, now);
        self.decide_ticket(i, now)
    }

    fn poll(&mut self, i: usize, now: u64) -> Result<(), String> {
        let sh = &self.shoppers[i];
        if now >= sh.leave_waiting_at {
            let number = sh.ticket.as_ref().map_or(0, |t| t.number);
            block_on(self.store.release(ROOM, number, None))
                .map_err(|e| self.fail(e.to_string()))?;
            self.left_tickets.push(number);
            self.stats.left_waiting += 1;
            self.shoppers[i].phase = Phase::Gone;
            return Ok(());
        }
        if now >= sh.give_up_at {
            self.stats.abandoned += 1;
            self.shoppers[i].phase = Phase::Gone;
            return Ok(());
        }
        if now >= sh.gap_at {
            let gap = sh.gap_ms;
            self.shoppers[i].gap_at = u64::MAX;
            self.shoppers[i].returning = true;
            self.schedule(now + gap, i);
            return Ok(());
        }
        // The ticket verifies exactly while `now <= last renewal + abandon_after (+ leeway)`.
        let abandon_ms = self.sc.settings.abandon_after.as_millis() as u64;
        let (binding, renewed_at, returning) = (sh.binding, sh.renewed_at, sh.returning);
        let valid = now / 1000 <= (renewed_at + abandon_ms) / 1000 + self.leeway_s();
        let got = self
            .keys
            .verify_ticket(&sh.token, &self.expect_for(binding, now));
        if binding != Binding::NONE && valid && self.rng.chance(0.01) {
            let other = self.expect_for(binding.wrapping_add(1).max(1), now);
            let r = self.keys.verify_ticket(&self.shoppers[i].token, &other);
            ensure!(
                self,
                r == Err(TokenError::WrongClient),
                "ticket accepted from another client: {r:?}"
            );
        }
        self.shoppers[i].returning = false;
        match got {
            Ok(t) if valid => {
                ensure!(self, Some(&t) == self.shoppers[i].ticket.as_ref(), "ticket decoded differently: {t:?}");
                if returning {
                    self.stats.kept_place_after_gap += 1;
                }
                self.decide_ticket(i, now)
            }
            Err(TokenError::Expired) if !valid => {
                // The place is lost: the shopper queues again as a newcomer.
                self.stats.requeued += 1;
                self.arrive(i, now)
            }
            other => Err(self.fail(format!(
                "ticket renewed at {renewed_at} verified at {now} (abandon_after {abandon_ms} ms): {other:?}, expected valid = {valid}"
            ))),
        }
    }

    fn decide_ticket(&mut self, i: usize, now: u64) -> Result<(), String> {
        let t = self.shoppers[i]
            .ticket
            .clone()
            .expect("waiting shopper has a ticket");
        self.stats.decisions += 1;
        let d = self
            .view
            .decide(&self.sc.settings, Credential::Ticket(&t), UnixMillis(now));
        match d {
            Decision::Wait(info) => {
                self.check_wait(&t, &info, now)?;
                if self.seed_hash_shown.is_none() && self.sc.in_prequeue(self.view_time()) {
                    self.seed_hash_shown = info.seed_hash;
                }
                self.keep_waiting(i, info.renewed, info.poll_after, now);
                Ok(())
            }
            Decision::Admit(req) => self.claim(i, &t, req, now),
            other => Err(self.fail(format!("ticket {} got {other:?}", t.number))),
        }
    }

    fn keep_waiting(&mut self, i: usize, renewed: Ticket, poll_after: Duration, now: u64) {
        let jitter = 0.8 + 0.4 * self.rng.unit();
        let next = now + ((poll_after.as_millis() as f64 * jitter) as u64).max(1);
        let sh = &mut self.shoppers[i];
        sh.token = self.keys.sign_ticket(&renewed);
        sh.ticket = Some(renewed);
        sh.renewed_at = now;
        self.schedule(next, i);
    }

    fn check_wait(&self, t: &Ticket, info: &waitroom::WaitInfo, now: u64) -> Result<(), String> {
        let s = &self.sc.settings;
        let serving = self.view.serving();
        ensure!(
            self,
            (info.state == self.view.state
                || self.view.state == RoomState::Idle && info.state == RoomState::Queueing)
                && info.ticket == t.number,
            "wait info {info:?}"
        );
        let want = match self.expected_position(t.number) {
            Expected::Exact(p) => Some(p.saturating_sub(serving).max(1)),
            Expected::Admitted => Some(1),
            Expected::Undrawn => None,
        };
        ensure!(
            self,
            info.position == want && info.ahead == want.map(|p| p - 1),
            "ticket {} (serving {serving}): position {:?} ahead {:?}, expected {want:?}",
            t.number,
            info.position,
            info.ahead
        );
        let r = &info.renewed;
        ensure!(
            self,
            r.number == t.number
                && r.binding == t.binding
                && r.issued_at == t.issued_at
                && r.last_seen == now / 1000
                && r.expires_at == UnixMillis(now).plus(s.abandon_after).secs(),
            "renewed ticket {r:?} from {t:?}"
        );
        let max_poll = (s.poll_interval * 4)
            .min(s.abandon_after / 3)
            .max(s.poll_interval);
        ensure!(
            self,
            info.poll_after >= s.poll_interval && info.poll_after <= max_poll,
            "poll_after {:?} outside [{:?}, {max_poll:?}]",
            info.poll_after,
            s.poll_interval
        );
        let vt = self.view_time();
        if self.sc.shuffle && self.sc.in_event(vt) {
            let hash = info.seed_hash;
            ensure!(
                self,
                hash.is_some(),
                "no seed hash shown during a shuffled event"
            );
            if let Some(shown) = self.seed_hash_shown {
                ensure!(self, hash == Some(shown), "the published seed hash changed");
            }
            if vt < self.sc.start {
                ensure!(
                    self,
                    info.seed.is_none(),
                    "the seed was revealed before the start"
                );
            } else {
                let seed = info.seed;
                ensure!(
                    self,
                    seed.is_some(),
                    "the seed is not revealed after the start"
                );
                let digest = seed.map(|s| sha256(&s));
                ensure!(
                    self,
                    digest == hash,
                    "SHA-256 of the revealed seed != the published hash"
                );
                let event = &s.events[0];
                ensure!(
                    self,
                    seed == Some(room::event_seed(s, event)),
                    "revealed seed != room::event_seed"
                );
            }
        }
        if self.sc.event_id != 0 && self.view.snapshot.ctl.started_event == self.sc.event_id {
            let count = self.prequeue.map_or(0, |(lo, hi)| hi - lo);
            ensure!(
                self,
                info.prequeue_count == Some(count),
                "prequeue_count {:?} != {count}",
                info.prequeue_count
            );
        }
        Ok(())
    }

    /// Admission: every entry is checked against the rate, the cap, the serving number, the
    /// position order, the schedule and the ground truth.
    fn claim(&mut self, i: usize, t: &Ticket, req: ClaimRequest, now: u64) -> Result<(), String> {
        let serving = self.view.serving();
        let (rate, cap) = self.sc.rate_cap_at(self.view_time());
        let minute = UnixMillis(now).minute();
        ensure!(
            self,
            !self.sc.in_prequeue(now) && self.view.state != RoomState::Prequeue,
            "admitted during the pre-queue: {req:?}"
        );
        ensure!(self, !self.paused, "admitted while paused: {req:?}");
        ensure!(
            self,
            req.ticket == t.number
                && req.minute == minute
                && req.max_per_minute == u64::from(rate)
                && req.cap == u64::from(cap)
                && req.session_minutes == self.sc.session_minutes()
                && req.claim_window == self.sc.settings.claim_window
                && !req.unlimited,
            "claim request {req:?} (rate {rate}, cap {cap})"
        );
        ensure!(
            self,
            req.position <= serving,
            "admitted position {} > serving {serving}",
            req.position
        );
        match self.expected_position(t.number) {
            Expected::Exact(p) => ensure!(
                self,
                req.position == p,
                "ticket {} admitted at position {}, expected {p} (serving {serving})",
                t.number,
                req.position
            ),
            Expected::Admitted => {}
            Expected::Undrawn => {
                return Err(self.fail(format!(
                    "ticket {} admitted before its order was drawn: {req:?}",
                    t.number
                )))
            }
        }
        if self.shoppers[i].noshow {
            self.stats.noshows += 1;
            self.shoppers[i].phase = Phase::Gone;
            return Ok(());
        }
        let outcome = self.store_claim(&req)?;
        match outcome {
            ClaimOutcome::Entered => self.entered(i, t, req, now),
            ClaimOutcome::Full | ClaimOutcome::MinuteFull => {
                if outcome == ClaimOutcome::MinuteFull {
                    self.stats.minute_full += 1;
                    let used = self.entries_per_minute.get(&minute).copied().unwrap_or(0);
                    ensure!(
                        self,
                        used == u64::from(rate),
                        "MinuteFull after {used} of {rate} entries"
                    );
                } else {
                    self.stats.full += 1;
                    let snap = block_on(self.store.snapshot(ROOM, UnixMillis(now)))
                        .map_err(|e| self.fail(e.to_string()))?;
                    let used = snap.active_total(minute, self.sc.session_minutes())
                        + snap.pending(UnixMillis(now), self.sc.settings.claim_window);
                    ensure!(
                        self,
                        used >= u64::from(cap),
                        "Full with {used} of {cap} used"
                    );
                }
                // The admitted shopper keeps its place: renew the ticket and come back.
                let info =
                    self.view
                        .wait_info(&self.sc.settings, t, Some(req.position), UnixMillis(now));
                self.keep_waiting(i, info.renewed, info.poll_after, now);
                Ok(())
            }
            other => Err(self.fail(format!(
                "claim of ticket {} (first try) returned {other:?}",
                t.number
            ))),
        }
    }

    fn entered(&mut self, i: usize, t: &Ticket, req: ClaimRequest, now: u64) -> Result<(), String> {
        let (rate, cap) = (req.max_per_minute, req.cap);
        let minute = req.minute;
        let n = t.number as usize;
        ensure!(self, !self.entered[n], "ticket {n} entered twice");
        self.entered[n] = true;
        self.stats.entries += 1;
        let per_minute = self.entries_per_minute.entry(minute).or_insert(0);
        *per_minute += 1;
        let per_minute = *per_minute;
        ensure!(
            self,
            per_minute <= rate,
            "{per_minute} entries in minute {minute}, rate {rate}"
        );
        // The store's view right after the claim.
        let snap = block_on(self.store.snapshot(ROOM, UnixMillis(now)))
            .map_err(|e| self.fail(e.to_string()))?;
        let active = snap.active_total(minute, self.sc.session_minutes());
        ensure!(
            self,
            active <= cap,
            "active {active} > cap {cap} right after a claim"
        );
        ensure!(
            self,
            snap.claims_minute == minute && snap.claims_in_minute == per_minute,
            "store counts {} entries in minute {}, shoppers {per_minute} in {minute}",
            snap.claims_in_minute,
            snap.claims_minute
        );
        // Ground truth: sessions live right now, this one included.
        self.expire_live(now);
        let sh = &mut self.shoppers[i];
        let pass = self.view.new_pass(&self.sc.settings, t, UnixMillis(now));
        sh.live = true;
        sh.live_expires = pass.expires_at;
        self.live.count += 1;
        self.live.heap.push(Reverse((pass.expires_at, i)));
        self.stats.max_live = self.stats.max_live.max(self.live.count);
        ensure!(
            self,
            self.live.count <= cap,
            "{} live sessions > cap {cap} at a claim",
            self.live.count
        );
        ensure!(
            self,
            self.live.count <= active,
            "{} live sessions but the store counts {active}",
            self.live.count
        );
        let fixed = self.sc.settings.session_mode == SessionMode::Fixed;
        ensure!(
            self,
            pass.ticket == t.number
                && pass.binding == t.binding
                && pass.checkin_minute == minute
                && pass.admitted_at == now / 1000
                && pass.expires_at
                    == UnixMillis(now)
                        .plus(self.sc.settings.session_duration)
                        .secs()
                && pass.fixed_session == fixed,
            "pass {pass:?} for {t:?}"
        );
        let token = self.keys.sign_pass(&pass);
        let sh = &mut self.shoppers[i];
        sh.enter_with(token, pass, now);
        let (replay, second_tab) = (sh.replay, sh.second_tab);
        // Replays: the same claim again, and the old ticket from a second tab.
        if replay {
            self.stats.replays += 1;
            let again = self.store_claim(&req)?;
            ensure!(
                self,
                again == ClaimOutcome::AlreadyEntered,
                "replayed claim returned {again:?}"
            );
        }
        if second_tab {
            self.stats.replays += 1;
            match self
                .view
                .decide(&self.sc.settings, Credential::Ticket(t), UnixMillis(now))
            {
                Decision::Admit(r) => {
                    let again = self.store_claim(&r)?;
                    ensure!(
                        self,
                        again == ClaimOutcome::AlreadyEntered,
                        "second tab's claim returned {again:?}"
                    );
                }
                other => {
                    return Err(
                        self.fail(format!("second tab with an admitted ticket got {other:?}"))
                    )
                }
            }
        }
        let gap = self.rng.range(5_000, 55_000);
        self.schedule(now + gap, i);
        Ok(())
    }

    fn expire_live(&mut self, now: u64) {
        let now_s = now / 1000;
        while let Some(&Reverse((exp, i))) = self.live.heap.peek() {
            if exp >= now_s {
                break;
            }
            self.live.heap.pop();
            let sh = &mut self.shoppers[i];
            if sh.live && sh.live_expires == exp {
                sh.live = false;
                self.live.count -= 1;
            }
        }
    }

    fn browse(&mut self, i: usize, now: u64) -> Result<(), String> {
        let sh = &self.shoppers[i];
        let pass = sh.pass.clone().expect("an entered shopper has a pass");
        let valid = now / 1000 <= pass.expires_at + self.leeway_s();
        let got = self
            .keys
            .verify_pass(&sh.token, &self.expect_for(sh.binding, now));
        match got {
            Ok(p) if valid => {
                ensure!(self, p == pass, "pass decoded differently: {p:?}");
                if now / 1000 > pass.expires_at {
                    self.stats.leeway_requests += 1;
                }
            }
            Err(TokenError::Expired) if !valid => {
                // The session is over; the shopper would queue again (not simulated).
                self.shoppers[i].phase = Phase::Gone;
                return Ok(());
            }
            other => {
                return Err(self.fail(format!(
                    "pass {pass:?} at {now}: {other:?}, expected valid = {valid}"
                )))
            }
        }
        self.stats.decisions += 1;
        let d = self
            .view
            .decide(&self.sc.settings, Credential::Pass(&pass), UnixMillis(now));
        let minute = UnixMillis(now).minute();
        let Decision::Allow { renewed, check_in } = d else {
            return Err(self.fail(format!("pass holder got {d:?}")));
        };
        // A pass is renewed and checked in on its first request of a new minute, unless only the
        // leeway let it through (its session is over).
        if minute > pass.checkin_minute && now / 1000 <= pass.expires_at {
            ensure!(
                self,
                check_in == Some((pass.checkin_minute, minute)),
                "check_in {check_in:?} in minute {minute} for {pass:?}"
            );
            let Some(r) = renewed else {
                return Err(self.fail("no renewed pass in a new minute".into()));
            };
            let fixed = self.sc.settings.session_mode == SessionMode::Fixed;
            let want_exp = if fixed {
                pass.expires_at
            } else {
                UnixMillis(now)
                    .plus(self.sc.settings.session_duration)
                    .secs()
            };
            ensure!(
                self,
                r.checkin_minute == minute && r.expires_at == want_exp,
                "renewed pass {r:?}"
            );
            // A check-in moves a session between counted minutes; if its bucket had already
            // left the active window, it would count a shopper again without a claim.
            ensure!(
                self,
                pass.checkin_minute + self.sc.session_minutes() >= minute,
                "check-in from minute {} (out of the active window) to {minute}",
                pass.checkin_minute
            );
            let moved =
                block_on(
                    self.store
                        .check_in(ROOM, pass.ticket, pass.checkin_minute, minute),
                )
                .map_err(|e| self.fail(e.to_string()))?;
            ensure!(
                self,
                moved == CheckIn::Moved,
                "check-in of a live session returned {moved:?}"
            );
            self.expire_live(now);
            // A session past its expiry (let through by the leeway only) is never renewed:
            // that would bring it back to life without a claim.
            ensure!(
                self,
                self.shoppers[i].live,
                "a session that expired at {} s was renewed at {now} ms",
                pass.expires_at
            );
            let sh = &mut self.shoppers[i];
            if r.expires_at != sh.live_expires {
                sh.live_expires = r.expires_at;
                self.live.heap.push(Reverse((r.expires_at, i)));
            }
            sh.token = self.keys.sign_pass(&r);
            sh.pass = Some(r);
        } else {
            ensure!(
                self,
                renewed.is_none() && check_in.is_none(),
                "renewal within the check-in minute or of an expired session"
            );
        }
        let sh = &mut self.shoppers[i];
        if now < sh.browse_until {
            let gap = self.rng.range(5_000, 55_000);
            self.schedule(now + gap, i);
        } else if sh.leave_after {
            let p = sh.pass.as_ref().expect("pass");
            let (ticket, m) = (p.ticket, p.checkin_minute);
            block_on(self.store.release(ROOM, ticket, Some(m)))
                .map_err(|e| self.fail(e.to_string()))?;
            let sh = &mut self.shoppers[i];
            sh.phase = Phase::Gone;
            if sh.live {
                sh.live = false;
                self.live.count -= 1;
            }
            self.stats.left_shopping += 1;
        } else if sh.edge_return {
            // One last request close to the end of the session (the expiry edge).
            sh.edge_return = false;
            let d = self.sc.settings.session_duration.as_millis() as u64;
            let gap = self
                .rng
                .range(d - 10_000, d + self.leeway_s() * 1000 + 5_000);
            self.schedule(now + gap, i);
        } else {
            sh.phase = Phase::Gone;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // After the crowd is gone

    fn finish(mut self) -> Result<Stats, String> {
        // Liveness: everyone who kept polling got in.
        let stuck: Vec<usize> = (0..self.shoppers.len())
            .filter(|&i| self.shoppers[i].keeps_polling() && !self.shoppers[i].entered)
            .collect();
        ensure!(
            self,
            stuck.is_empty(),
            "liveness: {} persistent pollers never entered (e.g. shopper {:?})",
            stuck.len(),
            stuck.first().map(|&i| (
                i,
                self.shoppers[i].phase,
                self.shoppers[i].ticket.as_ref().map(|t| t.number)
            ))
        );
        // Tickets given up cannot enter, whatever their position.
        let now = self.now_step();
        for n in self.left_tickets.clone() {
            let req = ClaimRequest {
                ticket: n,
                position: n,
                minute: UnixMillis(now).minute(),
                now: UnixMillis(now),
                claim_window: self.sc.settings.claim_window,
                max_per_minute: u64::MAX,
                cap: u64::MAX,
                session_minutes: self.sc.session_minutes(),
                unlimited: false,
            };
            let got = self.store_claim(&req)?;
            ensure!(
                self,
                got == ClaimOutcome::Ended,
                "claim of released ticket {n} returned {got:?}"
            );
        }
        if self.sc.kind == Kind::NoShows {
            let start_minute = UnixMillis(self.sc.start).minute();
            let per_minute = STEP_MS.max(1);
            let full_steps = (60_000 / per_minute) as u32;
            let mut minutes: Vec<u32> = self
                .deep
                .iter()
                .filter(|(m, (deep, steps))| {
                    **m >= start_minute + 3 && *deep && *steps == full_steps
                })
                .map(|(m, _)| *m)
                .collect();
            minutes.sort_unstable();
            let entries: Vec<u64> = minutes
                .iter()
                .map(|m| self.entries_per_minute.get(m).copied().unwrap_or(0))
                .collect();
            self.stats.steady_minutes = minutes.len() as u64;
            self.stats.steady_entries = entries.iter().sum();
            self.stats.steady_min_minute = entries.iter().copied().min().unwrap_or(0);
            ensure!(
                self,
                minutes.len() >= 5,
                "only {} steady minutes: the queue was not deep",
                minutes.len()
            );
            let mean = self.stats.steady_entries as f64 / minutes.len() as f64;
            let tracks_rate = mean >= 0.85 * f64::from(self.sc.rate);
            ensure!(
                self,
                tracks_rate,
                "no-show compensation: {mean:.1} entries/min over {} steady minutes, rate {} (per minute: {entries:?})",
                minutes.len(),
                self.sc.rate
            );
        }
        self.stats.sim_ms = now - self.sc.sim_start;
        Ok(self.stats)
    }
}

fn arrival(sc: &Scenario, rng: &mut Rng, persistent: bool) -> u64 {
    let burst = |rng: &mut Rng| sc.start + (rng.exp(15.0).min(60.0) * 1000.0) as u64;
    let later = |rng: &mut Rng| sc.start + rng.range(60_000, 20 * 60_000);
    if sc.kind == Kind::Capacity {
        // The determined crowd comes first and fills the room with real sessions; the
        // impatient trickle in behind them.
        return if persistent { burst(rng) } else { later(rng) };
    }
    let u = rng.unit();
    match sc.prequeue_at {
        // A few arrive while the room still idles before the pre-queue.
        Some(pre) if u < 0.005 => rng.range(pre - 30_000, pre - 1),
        Some(pre) if u < 0.25 => rng.range(pre, sc.start - 1),
        Some(_) if u < 0.85 => burst(rng),
        None if u < 0.8 => burst(rng),
        _ => later(rng),
    }
}

/// `inverse[i]` = the 0-based place of item `i` in `shuffle::order(seed, count)`.
fn inverse_order(seed: &[u8; 32], count: u64) -> Vec<u64> {
    let order = shuffle::order(seed, count);
    let mut inverse = vec![0u64; order.len()];
    for (place, item) in order.iter().enumerate() {
        inverse[*item as usize] = place as u64;
    }
    inverse
}

/// SHA-256, computed here rather than with `shuffle::seed_hash`: the audit must not trust it.
fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn run_seed(seed: u64) -> Result<Stats, String> {
    Sim::new(seed)?.run()
}

fn summary(seed: u64, st: &Stats) -> String {
    let sc = Scenario::new(seed);
    format!(
        "seed {seed:>4} {kind:<16} rate {rate:>3}/min cap {cap:>4} session {sess:>3}s: {mins:>3} sim-min, \
         {dec:>6} decisions, {ent:>5} entered, {ns:>4} no-shows, {ab:>4} abandoned, {lw:>3}+{ls:>4} left, \
         {rq:>3} requeued ({kept} kept their place after a gap), {rp} replays refused, {full}/{mf} full/minute-full, max active {ma} (+pending {mu}), max live {ml}, \
         {lw_req} requests in a pass's leeway{steady}",
        kind = format!("{:?}", sc.kind),
        rate = sc.rate,
        cap = sc.cap,
        sess = sc.settings.session_duration.as_secs(),
        mins = st.sim_ms / 60_000,
        dec = st.decisions,
        ent = st.entries,
        ns = st.noshows,
        ab = st.abandoned,
        lw = st.left_waiting,
        ls = st.left_shopping,
        rq = st.requeued,
        kept = st.kept_place_after_gap,
        rp = st.replays,
        full = st.full,
        mf = st.minute_full,
        ma = st.max_active,
        mu = st.max_used,
        ml = st.max_live,
        lw_req = st.leeway_requests,
        steady = if st.steady_minutes > 0 {
            format!(
                ", steady {:.1} entries/min over {} min (min {})",
                st.steady_entries as f64 / st.steady_minutes as f64,
                st.steady_minutes,
                st.steady_min_minute
            )
        } else {
            String::new()
        }
    )
}

/// Runs every seed (or only `$FLASHGATE_SIM_SEED`) on all cores and reports every failure.
#[test]
fn seeded_simulation() {
    let seeds: Vec<u64> = match std::env::var(SEED_VAR) {
        Ok(v) => vec![v
            .trim()
            .parse()
            .expect("FLASHGATE_SIM_SEED must be an unsigned integer")],
        Err(_) => DEFAULT_SEEDS.collect(),
    };
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(u64, Result<Stats, String>)>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(seeds.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(k) else { break };
                let r = std::panic::catch_unwind(|| run_seed(seed)).unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    Err(format!(
                        "seed {seed} panicked: {msg}\n  replay: {SEED_VAR}={seed} cargo test -p waitroom --test simulation -- --nocapture"
                    ))
                });
                results.lock().expect("results lock").push((seed, r));
            });
        }
    });
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(seed, _)| *seed);
    let mut failures = Vec::new();
    for (seed, r) in &results {
        match r {
            Ok(st) => eprintln!("{}", summary(*seed, st)),
            Err(e) => failures.push(e.clone()),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}
