//! From what the shoppers observed to the run's figures and checks.
//!
//! The checks, each computed from the clients' own observations (and the admin API where
//! named), so a run can be judged without trusting the server's counters:
//!
//! - **FIFO inversions** (fifo rooms): shopper *a* is inverted when some shopper *b* later in
//!   the admission order (a higher ticket, or a later place in a shuffled pre-queue) got its
//!   pass more than one poll interval of *a* (plus `fifo_tolerance`, the view lag between
//!   nodes) before *a* did. A shopper only learns its turn has come at its next poll, so
//!   anything within one poll interval is the client's delay, not the server's order.
//! - **Entries per minute**: entries in each server minute (read from the passes) never exceed
//!   the rate; and in every `window`, entries stay under the rate (compensated for the
//!   measured no-shows) for the window plus one poll interval, plus the controller's bank (two
//!   slices of budget) and its lead (one slice).
//! - **Rate accuracy** (`rate_tolerance`): entries per minute while the line is long enough to
//!   keep the rate busy, against the target.
//! - **Cap**: active shoppers read from the admin API never above `total_active_users`.
//! - **All admitted**: every shopper who does not give up by design got in.
//! - **Errors**: human requests that failed (transport, 5xx), as a share of all.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::metrics::LatencySummary;
use super::run::{AdminSample, RunOutput};
use super::shopper::{End, Record};

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub arrived: u64,
    pub humans: u64,
    pub bots: u64,
    pub admitted: u64,
    pub admitted_humans: u64,
    pub admitted_without_wait: u64,
    pub waited: u64,
    pub gave_up: u64,
    pub left_queue: u64,
    pub sold_out: u64,
    pub closed: u64,
    pub challenged: u64,
    pub errors: u64,
    pub stopped_waiting: u64,
    pub persistent_not_admitted: u64,
    pub requeued: u64,
    pub claims_refused: u64,
    pub pages: u64,
    pub carts: u64,
    pub orders: u64,
    pub sessions_ended: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Distribution {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Distribution {
    pub fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        let r = |x: f64| (x * 100.0).round() / 100.0;
        Self {
            count: v.len() as u64,
            mean: r(v.iter().sum::<f64>() / v.len() as f64),
            p50: r(q(0.5)),
            p90: r(q(0.9)),
            p99: r(q(0.99)),
            max: r(*v.last().unwrap_or(&0.0)),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RateFigures {
    /// The target, per minute (scenario or admin API).
    pub target_per_minute: Option<u32>,
    /// Entries per minute while the line was long, and over which seconds.
    pub measured_per_minute: Option<f64>,
    pub measured_from_s: Option<u64>,
    pub measured_to_s: Option<u64>,
    /// Entries per server minute (UTC minute number → entries).
    pub per_minute: BTreeMap<u32, u64>,
    pub window_s: u64,
    pub max_in_window: u64,
    pub window_bound: Option<f64>,
    pub max_noshow_ratio: f64,
    /// Seconds with a long line during which the cap, not the rate, limited admissions.
    pub cap_limited_s: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FifoExample {
    pub order: u64,
    pub admitted_s: f64,
    pub later_order: u64,
    pub later_admitted_s: f64,
    pub lag_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FifoFigures {
    pub applies: bool,
    pub method: String,
    pub checked: u64,
    pub inversions: u64,
    pub worst_lag_s: f64,
    pub examples: Vec<FifoExample>,
    /// Order keys of inverted shoppers (for the plot).
    #[serde(skip)]
    pub inverted: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CapFigures {
    pub cap: Option<u32>,
    pub max_active: Option<u64>,
    pub samples: u64,
    pub violations: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EtaFigures {
    /// Shoppers whose first ETA band (while the line moved) is compared with their real wait.
    pub compared: u64,
    /// Share whose real remaining wait fell inside the band (± one poll interval).
    pub in_band: f64,
    /// Median of real remaining wait / ETA midpoint.
    pub median_ratio: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BotFigures {
    pub bots: u64,
    pub admitted: u64,
    pub polls: u64,
    pub replay_ok: u64,
    pub replay_refused: u64,
    pub challenged: u64,
    /// Median wait of admitted bots and humans, seconds.
    pub median_wait_bots_s: f64,
    pub median_wait_humans_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub arrivals: Vec<u64>,
    pub admissions: Vec<u64>,
    pub gave_up: Vec<u64>,
    pub waiting: Vec<u64>,
    pub in_shop: Vec<u64>,
    pub requests: Vec<u64>,
    pub failures: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RedisFigures {
    /// Script calls (one round trip each) during the run, background refreshes included.
    pub calls: u64,
    pub per_arrival: f64,
    pub per_request: f64,
    pub used_memory_bytes: u64,
    pub by_command: BTreeMap<String, u64>,
}

/// Everything a run produced: written as `result.json`, and the source of the report.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub scenario: String,
    pub file: String,
    pub description: String,
    pub command: String,
    pub started_at: String,
    pub duration_s: f64,
    pub stopped_by: String,
    pub targets: Vec<String>,
    pub admin: Vec<String>,
    pub room: String,
    pub spawned: Option<String>,
    pub arrivals_planned: u64,
    pub requests: u64,
    pub counts: Counts,
    pub rate: RateFigures,
    pub wait_s: Distribution,
    pub wait_hist: Vec<(f64, u64)>,
    pub eta: EtaFigures,
    pub fifo: FifoFigures,
    pub cap: CapFigures,
    pub latency: Vec<LatencySummary>,
    pub client_queue: LatencySummary,
    pub errors: BTreeMap<String, u64>,
    pub statuses: BTreeMap<String, u64>,
    pub bots: BotFigures,
    pub redis: Option<RedisFigures>,
    pub series: Series,
    pub admin_samples: Vec<AdminSample>,
    pub checks: Vec<Check>,
    pub passed: bool,
    /// Admission order and time of each admitted shopper (for the FIFO plot), seconds.
    #[serde(skip)]
    pub admissions: Vec<(f64, u64, bool)>,
}

/// FIFO inversions among admitted shoppers (see the module docs). Each shopper counts once;
/// tickets shared by a bot group count once (the earliest entry).
pub fn fifo_inversions(records: &[Record], tolerance: Duration) -> FifoFigures {
    let mut by_order: BTreeMap<u64, (u64, u64)> = BTreeMap::new(); // order -> (admitted, slack)
    for r in records {
        let (Some(at), false) = (r.admitted_ms, r.follower) else {
            continue;
        };
        let order = match (r.order, r.ticket, r.prequeue) {
            (Some(o), _, _) => o,
            (None, Some(t), false) if t > 0 => t,
            _ => continue,
        };
        // Polls are jittered ±10 %, as the waiting page does.
        let slack = r.poll_after_ms * 11 / 10 + tolerance.as_millis() as u64;
        let e = by_order.entry(order).or_insert((at, slack));
        if at < e.0 {
            *e = (at, slack);
        }
    }
    let mut out = FifoFigures {
        checked: by_order.len() as u64,
        ..FifoFigures::default()
    };
    // Sweep from the back of the line: the earliest entry among everyone behind.
    let mut earliest_behind: Option<(u64, u64)> = None; // (admitted, order)
    for (&order, &(at, slack)) in by_order.iter().rev() {
        if let Some((b_at, b_order)) = earliest_behind {
            if at > b_at + slack {
                out.inversions += 1;
                out.inverted.push(order);
                let lag = (at - b_at) as f64 / 1000.0;
                if lag > out.worst_lag_s {
                    out.worst_lag_s = lag;
                }
                if out.examples.len() < 10 {
                    out.examples.push(FifoExample {
                        order,
                        admitted_s: at as f64 / 1000.0,
                        later_order: b_order,
                        later_admitted_s: b_at as f64 / 1000.0,
                        lag_s: lag,
                    });
                }
            }
        }
        if earliest_behind.is_none_or(|(b_at, _)| at < b_at) {
            earliest_behind = Some((at, order));
        }
    }
    out
}

/// The most entries in any window of `window` (times in ms, sorted).
pub fn max_in_window(times_ms: &[u64], window: Duration) -> u64 {
    let w = window.as_millis() as u64;
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times_ms.len() {
        while times_ms[hi] - times_ms[lo] >= w {
            lo += 1;
        }
        best = best.max((hi - lo + 1) as u64);
    }
    best
}

fn share(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Analyses a finished run.
pub fn analyse(
    out: &RunOutput,
    command: &str,
    spawned: Option<String>,
    redis: Option<RedisFigures>,
) -> RunResult {
    let run = &out.run;
    let sc = &run.scenario;
    let m = &run.metrics;
    let recs = &out.records;
    let secs = out.duration.as_secs() as usize + 1;

    // Counts.
    let mut c = Counts::default();
    for r in recs {
        c.arrived += 1;
        if r.bot {
            c.bots += 1;
        } else {
            c.humans += 1;
        }
        if r.admitted_ms.is_some() {
            c.admitted += 1;
            if !r.bot {
                c.admitted_humans += 1;
            }
            if !r.waited {
                c.admitted_without_wait += 1;
            }
        }
        c.waited += u64::from(r.waited);
        c.requeued += u64::from(r.requeued);
        c.claims_refused += u64::from(r.claims_refused);
        c.pages += u64::from(r.pages);
        c.carts += u64::from(r.carted);
        c.orders += u64::from(r.ordered);
        c.sessions_ended += u64::from(r.left && r.admitted_ms.is_some());
        match r.end {
            End::Abandoned => c.gave_up += 1,
            End::LeftQueue => {
                c.gave_up += 1;
                c.left_queue += 1;
            }
            End::SoldOut => c.sold_out += 1,
            End::Closed => c.closed += 1,
            End::Challenged => c.challenged += 1,
            End::Errors => c.errors += 1,
            End::Stopped if r.admitted_ms.is_none() => c.stopped_waiting += 1,
            End::Stopped | End::Done => {}
        }
        if !r.bot && r.persistent && r.admitted_ms.is_none() {
            c.persistent_not_admitted += 1;
        }
    }

    // The room as the admin API saw it.
    let admin = &out.admin;
    let method = admin.iter().find(|s| !s.method.is_empty()).map_or_else(
        || "fifo (assumed: no admin API)".to_owned(),
        |s| s.method.clone(),
    );
    let target = sc.checks.rate_per_minute.or_else(|| {
        admin
            .iter()
            .rev()
            .find(|s| s.state == "queueing")
            .or_else(|| admin.last())
            .map(|s| s.new_users_per_minute)
            .filter(|r| *r > 0)
    });
    let max_noshow = admin.iter().map(|s| s.noshow_ratio).fold(0.0, f64::max);

    // Entries: every admitted shopper with its own ticket (bot followers share one).
    let mut entries: Vec<&Record> = recs
        .iter()
        .filter(|r| r.admitted_ms.is_some() && !r.follower)
        .collect();
    entries.sort_by_key(|r| r.admitted_ms);
    let times: Vec<u64> = entries.iter().filter_map(|r| r.admitted_ms).collect();
    let mut per_minute: BTreeMap<u32, u64> = BTreeMap::new();
    for r in &entries {
        if let Some(mn) = r.pass_minute {
            *per_minute.entry(mn).or_default() += 1;
        }
    }
    let max_poll = entries.iter().map(|r| r.poll_after_ms).max().unwrap_or(0);
    let window = sc.checks.window;
    let max_win = max_in_window(&times, window);
    let window_bound = target.map(|t| {
        let rate = f64::from(t) / (1.0 - max_noshow.min(0.9));
        let slice = rate * sc.checks.tick.as_secs_f64() / 60.0;
        let span = window.as_secs_f64()
            + max_poll as f64 / 1000.0
            + sc.checks.fifo_tolerance.as_secs_f64();
        rate * span / 60.0 + 3.0 * slice
    });

    // Rate while the line was long and the room had space: the seconds when enough shoppers
    // waited that the controller always had someone to admit (a poll interval and two slices
    // of admissions, at least 20), and — from the admin API — the cap left room for as many.
    // Measured over the longest such stretch, minus its first poll interval (entries lag
    // admissions by up to one poll).
    let waiting = m.waiting.values(secs);
    let (mut measured, mut from_s, mut to_s) = (None, None, None);
    let mut cap_limited_s = 0u64;
    if let Some(t) = target {
        let per_s = f64::from(t) / 60.0;
        let span = max_poll as f64 / 1000.0 + 2.0 * sc.checks.tick.as_secs_f64();
        let threshold = (per_s * span).max(20.0) as u64;
        let full = |sec: usize| -> bool {
            let end = (sec as u64 + 1) * 1000;
            let i = admin.partition_point(|a| a.t_ms <= end);
            i.checked_sub(1)
                .and_then(|i| admin.get(i))
                .is_some_and(|a| {
                    a.total_active_users > 0
                        && a.active as f64 + per_s * span >= f64::from(a.total_active_users)
                })
        };
        let long: Vec<bool> = waiting.iter().map(|w| *w >= threshold).collect();
        let ok: Vec<bool> = long
            .iter()
            .enumerate()
            .map(|(sec, l)| *l && !full(sec))
            .collect();
        cap_limited_s = long.iter().zip(&ok).filter(|(l, o)| **l && !**o).count() as u64;
        let (mut best, mut run_start) = (None::<(usize, usize)>, None::<usize>);
        for (sec, good) in ok.iter().chain(std::iter::once(&false)).enumerate() {
            match (good, run_start) {
                (true, None) => run_start = Some(sec),
                (false, Some(a)) => {
                    if best.is_none_or(|(x, y)| sec - a > y - x) {
                        best = Some((a, sec));
                    }
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some((a, b)) = best {
            let a_ms = a as u64 * 1000 + max_poll;
            let b_ms = b as u64 * 1000;
            if b_ms > a_ms + 10_000 {
                let n = times.iter().filter(|t| (a_ms..b_ms).contains(*t)).count();
                measured = Some((n as f64 * 60_000.0 / (b_ms - a_ms) as f64 * 10.0).round() / 10.0);
                from_s = Some(a_ms / 1000);
                to_s = Some(b_ms / 1000);
            }
        }
    }
    let rate = RateFigures {
        target_per_minute: target,
        measured_per_minute: measured,
        measured_from_s: from_s,
        measured_to_s: to_s,
        per_minute: per_minute.clone(),
        window_s: window.as_secs(),
        max_in_window: max_win,
        window_bound: window_bound.map(|b| (b * 10.0).round() / 10.0),
        max_noshow_ratio: max_noshow,
        cap_limited_s,
    };

    // Waits.
    let waits: Vec<f64> = recs
        .iter()
        .filter(|r| !r.bot && r.waited)
        .filter_map(|r| r.admitted_ms.map(|a| (a - r.arrived_ms) as f64 / 1000.0))
        .collect();
    let wait_s = Distribution::of(waits.clone());
    let wait_hist = histogram(&waits, 40);
    let median = |mut v: Vec<f64>| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2] * 100.0).round() / 100.0
    };

    // ETA: the first band seen while the line moved, against the real remaining wait.
    let mut eta_n = 0u64;
    let mut eta_in = 0u64;
    let mut ratios = Vec::new();
    for r in recs.iter().filter(|r| !r.bot) {
        if let (Some((at, lo, mid, hi)), Some(adm)) = (r.eta, r.admitted_ms) {
            let real = adm.saturating_sub(at) as f64 / 1000.0;
            let slack = r.poll_after_ms as f64 * 1.1 / 1000.0;
            eta_n += 1;
            if real + slack >= lo as f64 && real - slack <= hi as f64 {
                eta_in += 1;
            }
            if mid > 0 {
                ratios.push(real / mid as f64);
            }
        }
    }
    let eta = EtaFigures {
        compared: eta_n,
        in_band: (share(eta_in, eta_n) * 1000.0).round() / 1000.0,
        median_ratio: median(ratios),
    };

    // FIFO.
    let fifo_applies = sc.checks.fifo && method.starts_with("fifo");
    let mut fifo = fifo_inversions(recs, sc.checks.fifo_tolerance);
    fifo.applies = fifo_applies;
    fifo.method = method.clone();
    let inverted: std::collections::HashSet<u64> = fifo.inverted.iter().copied().collect();
    let admissions: Vec<(f64, u64, bool)> = recs
        .iter()
        .filter(|r| !r.follower)
        .filter_map(|r| {
            let at = r.admitted_ms?;
            let order = r.order.or(if r.prequeue { None } else { r.ticket })?;
            Some((at as f64 / 1000.0, order, inverted.contains(&order)))
        })
        .collect();

    // Cap.
    let cap_value = admin.iter().map(|s| s.total_active_users).max();
    let cap = CapFigures {
        cap: cap_value,
        max_active: admin.iter().map(|s| s.active).max(),
        samples: admin.len() as u64,
        violations: admin
            .iter()
            .filter(|s| s.total_active_users > 0 && s.active > u64::from(s.total_active_users))
            .count() as u64,
    };

    // Bots.
    let bot_waits: Vec<f64> = recs
        .iter()
        .filter(|r| r.bot && r.waited && !r.follower)
        .filter_map(|r| r.admitted_ms.map(|a| (a - r.arrived_ms) as f64 / 1000.0))
        .collect();
    let bots = BotFigures {
        bots: c.bots,
        admitted: recs
            .iter()
            .filter(|r| r.bot && !r.follower && r.admitted_ms.is_some())
            .count() as u64,
        polls: recs
            .iter()
            .filter(|r| r.bot)
            .map(|r| u64::from(r.polls))
            .sum(),
        replay_ok: recs.iter().map(|r| u64::from(r.replay_ok)).sum(),
        replay_refused: recs.iter().map(|r| u64::from(r.replay_refused)).sum(),
        challenged: recs
            .iter()
            .filter(|r| r.bot && r.end == End::Challenged)
            .count() as u64,
        median_wait_bots_s: median(bot_waits),
        median_wait_humans_s: median(waits),
    };

    let errors = m.errors();
    let requests = m
        .requests_total
        .load(std::sync::atomic::Ordering::Relaxed)
        .min(sc.max_requests);

    // Checks.
    let mut checks = Vec::new();
    let mut check = |name: &str, passed: bool, detail: String| {
        checks.push(Check {
            name: name.to_owned(),
            passed,
            detail,
        });
    };
    if sc.checks.all_admitted {
        check(
            "all persistent shoppers admitted",
            c.persistent_not_admitted == 0,
            format!(
                "{} of {} persistent shoppers not admitted",
                c.persistent_not_admitted,
                recs.iter().filter(|r| !r.bot && r.persistent).count()
            ),
        );
    }
    if fifo_applies {
        check(
            "no FIFO inversions",
            fifo.inversions == 0,
            format!(
                "{} inversions among {} admitted shoppers (worst lag {:.1} s)",
                fifo.inversions, fifo.checked, fifo.worst_lag_s
            ),
        );
    }
    if let Some(t) = target {
        let worst = per_minute.values().max().copied().unwrap_or(0);
        check(
            "entries per minute <= rate",
            worst <= u64::from(t),
            format!("busiest server minute: {worst} entries, rate {t}/min"),
        );
        if let Some(bound) = window_bound {
            check(
                &format!("entries in any {} s <= rate + bank", window.as_secs()),
                (max_win as f64) <= bound,
                format!(
                    "most in {} s: {max_win}, bound {:.1} (rate {t}/min, no-show up to {:.0} %, poll {} ms)",
                    window.as_secs(),
                    bound,
                    max_noshow * 100.0,
                    max_poll
                ),
            );
        }
    }
    if let Some(tol) = sc.checks.rate_tolerance {
        match (target, measured) {
            (Some(t), Some(mm)) => {
                let dev = (mm - f64::from(t)) / f64::from(t);
                check(
                    "admission rate within tolerance",
                    dev.abs() <= tol,
                    format!(
                        "{mm:.1}/min measured over {}–{} s against {t}/min ({:+.1} %, tolerance ±{:.0} %)",
                        from_s.unwrap_or(0),
                        to_s.unwrap_or(0),
                        dev * 100.0,
                        tol * 100.0
                    ),
                );
            }
            _ => check(
                "admission rate within tolerance",
                false,
                "not measurable: no target rate, or the line was not long for 10 s".into(),
            ),
        }
    }
    if sc.checks.cap {
        if admin.is_empty() {
            if !sc.admin.is_empty() {
                check(
                    "active <= cap",
                    false,
                    "the admin API never answered".into(),
                );
            }
        } else {
            check(
                "active <= cap",
                cap.violations == 0,
                format!(
                    "max active {} of cap {} over {} samples; {} above",
                    cap.max_active.unwrap_or(0),
                    cap.cap.unwrap_or(0),
                    cap.samples,
                    cap.violations
                ),
            );
        }
    }
    if let Some(max) = sc.checks.max_error_share {
        let human_failures: u64 = recs
            .iter()
            .filter(|r| !r.bot)
            .map(|r| u64::from(r.failures))
            .sum();
        let s = share(human_failures, requests);
        check(
            "errors under the limit",
            s <= max,
            format!(
                "{human_failures} failed shopper requests of {requests} ({:.2} %)",
                s * 100.0
            ),
        );
    }
    let passed = checks.iter().all(|c| c.passed);

    RunResult {
        scenario: sc.name.clone(),
        file: sc.file.clone(),
        description: sc.description.clone(),
        command: command.to_owned(),
        started_at: humantime::format_rfc3339_seconds(out.started_at).to_string(),
        duration_s: (out.duration.as_secs_f64() * 10.0).round() / 10.0,
        stopped_by: out.stopped_by.as_str().to_owned(),
        targets: sc.targets.iter().map(|t| t.origin()).collect(),
        admin: sc.admin.iter().map(|t| t.origin()).collect(),
        room: sc.room.clone(),
        spawned,
        arrivals_planned: out.arrivals_planned as u64,
        requests,
        counts: c,
        rate,
        wait_s,
        wait_hist,
        eta,
        fifo,
        cap,
        latency: m.latency_summary(),
        client_queue: m.client_queue_summary(),
        errors,
        statuses: m.statuses(),
        bots,
        redis,
        series: Series {
            arrivals: m.arrivals.values(secs),
            admissions: m.admissions.values(secs),
            gave_up: m.gave_up.values(secs),
            waiting,
            in_shop: m.in_shop.values(secs),
            requests: m.requests.values(secs),
            failures: m.failures.values(secs),
        },
        admin_samples: admin.clone(),
        checks,
        passed,
        admissions,
    }
}

/// `bins` equal-width bins over `0..=max`: (bin start, count).
fn histogram(v: &[f64], bins: usize) -> Vec<(f64, u64)> {
    let max = v.iter().copied().fold(0.0, f64::max);
    if v.is_empty() || max <= 0.0 {
        return Vec::new();
    }
    let width = max / bins as f64;
    let mut h = vec![0u64; bins];
    for x in v {
        let i = ((x / width) as usize).min(bins - 1);
        h[i] += 1;
    }
    h.into_iter()
        .enumerate()
        .map(|(i, n)| (((i as f64 * width) * 100.0).round() / 100.0, n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(ticket: u64, at_ms: u64, poll_ms: u64) -> Record {
        Record {
            ticket: Some(ticket),
            admitted_ms: Some(at_ms),
            poll_after_ms: poll_ms,
            waited: true,
            ..Record::default()
        }
    }

    #[test]
    fn inversions_allow_one_poll_interval() {
        let tol = Duration::from_millis(500);
        // In order, or out of order by less than a poll interval (+ tolerance): fine.
        let ok = vec![
            admitted(1, 1_000, 2_000),
            admitted(2, 1_100, 2_000),
            admitted(3, 900, 2_000),
            admitted(4, 3_400, 2_000),
            admitted(5, 2_000, 2_000),
        ];
        let f = fifo_inversions(&ok, tol);
        assert_eq!((f.checked, f.inversions), (5, 0));
        // Ticket 2 got in 3 s after ticket 5 while polling every second: inverted.
        let bad = vec![
            admitted(1, 1_000, 1_000),
            admitted(2, 5_000, 1_000),
            admitted(5, 2_000, 1_000),
            admitted(6, 2_100, 1_000),
        ];
        let f = fifo_inversions(&bad, tol);
        assert_eq!(f.inversions, 1);
        assert_eq!(f.inverted, vec![2]);
        assert_eq!(f.examples[0].later_order, 5);
        assert!((f.worst_lag_s - 3.0).abs() < 1e-9);
    }

    #[test]
    fn shuffled_prequeue_uses_the_drawn_order() {
        let tol = Duration::ZERO;
        let mut a = admitted(1, 10_000, 1_000);
        a.prequeue = true;
        a.order = Some(3);
        let mut b = admitted(2, 1_000, 1_000);
        b.prequeue = true;
        b.order = Some(1);
        // A pre-queue ticket whose drawn place was never seen is left out.
        let mut c = admitted(3, 20_000, 1_000);
        c.prequeue = true;
        let f = fifo_inversions(&[a, b, c], tol);
        assert_eq!((f.checked, f.inversions), (2, 0));
    }

    #[test]
    fn windows_and_distributions() {
        let t = [0, 100, 900, 1_000, 1_999, 2_000, 5_000];
        assert_eq!(max_in_window(&t, Duration::from_secs(1)), 3);
        assert_eq!(max_in_window(&t, Duration::from_secs(2)), 5);
        assert_eq!(max_in_window(&[], Duration::from_secs(2)), 0);
        let d = Distribution::of((1..=100).map(f64::from).collect());
        assert_eq!((d.count, d.p50, d.p99, d.max), (100, 51.0, 99.0, 100.0));
        let h = histogram(&[0.0, 1.0, 2.0, 4.0], 4);
        assert_eq!(h.iter().map(|b| b.1).collect::<Vec<_>>(), vec![1, 1, 1, 1]);
    }
}
