//! Running a scenario: one shared HTTP client, one task per simulated shopper, a spawner that
//! releases shoppers on the arrival curve, an admin sampler, a progress line, and the stop
//! conditions (everyone done, the maximum duration, the maximum number of requests).
//!
//! Efficiency: tens of thousands of shoppers are tens of thousands of mostly sleeping tokio
//! tasks sharing one `reqwest::Client`. Each keeps its cookies by hand ([`Jar`]), and requests
//! in flight are capped per node by a semaphore, so the simulator never opens more than
//! `client.max_connections` connections to a node. Time spent waiting for that semaphore is
//! reported separately ("client queue"): if it grows, the simulator, not the proxy, is the
//! bottleneck.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Semaphore};

use super::arrivals::schedule;
use super::jar::Jar;
use super::metrics::{Endpoint, Metrics};
use super::scenario::Scenario;
use super::shopper::{self, Group, Record};
use crate::rng::SplitMix64;
use crate::target::HttpUrl;

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every shopper finished.
    Completed,
    MaxDuration,
    MaxRequests,
    /// Ctrl-C.
    Interrupted,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Completed => "completed",
            StopReason::MaxDuration => "max_duration",
            StopReason::MaxRequests => "max_requests",
            StopReason::Interrupted => "interrupted",
        }
    }
}

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Multiplies every arrival segment's shopper count.
    pub scale: f64,
    /// Print a progress line to stderr each second.
    pub progress: bool,
}

/// One reading of the admin API's room report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdminSample {
    #[serde(default)]
    pub t_ms: u64,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub tickets_issued: u64,
    #[serde(default)]
    pub serving: u64,
    #[serde(default)]
    pub waiting: u64,
    #[serde(default)]
    pub active: u64,
    #[serde(default)]
    pub entered_total: u64,
    #[serde(default)]
    pub admitted_total: u64,
    #[serde(default)]
    pub new_users_per_minute: u32,
    #[serde(default)]
    pub total_active_users: u32,
    #[serde(default)]
    pub noshow_ratio: f64,
}

/// Shopper `id`'s client address: one of 198.18.0.0/15 (RFC 2544's benchmarking range),
/// scattered so that consecutive shoppers land in different /24s.
pub fn client_address(id: u32) -> std::net::Ipv4Addr {
    let n = id.wrapping_mul(2_654_435_761) >> 15; // 17 bits
    std::net::Ipv4Addr::from(0xC612_0000u32 | n)
}

/// A request as a shopper describes it.
#[derive(Debug, Clone)]
pub struct Req<'a> {
    pub ep: Endpoint,
    pub post: bool,
    pub path: &'a str,
    pub json: bool,
    pub bot: bool,
    pub cookie: Option<String>,
    pub form: Option<String>,
    /// Sent as `X-Forwarded-For` when the scenario asks for it.
    pub client: std::net::Ipv4Addr,
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub set_cookies: Vec<String>,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Reply {
    /// Applies the response's cookies to `jar`.
    pub fn absorb(&self, jar: &mut Jar) {
        for c in &self.set_cookies {
            jar.absorb(c);
        }
    }

    /// Whether the response sets cookie `name` to a non-empty value.
    pub fn sets(&self, name: &str) -> bool {
        self.set_cookies.iter().any(|c| {
            c.split(';')
                .next()
                .and_then(|p| p.split_once('='))
                .is_some_and(|(n, v)| n.trim() == name && !v.trim().is_empty())
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The run is stopping: the shopper ends.
    Stopped,
    /// Transport failure of this kind (already counted).
    Failed(&'static str),
}

/// Shared by every shopper of a run.
#[derive(Debug)]
pub struct Run {
    pub scenario: Scenario,
    pub metrics: Metrics,
    pub t0: Instant,
    client: reqwest::Client,
    nodes: Vec<(String, Semaphore)>,
    stopping: AtomicBool,
    stop_tx: watch::Sender<bool>,
    stop_reason: Mutex<Option<StopReason>>,
    pub records: Mutex<Vec<Record>>,
    pub groups: Vec<watch::Sender<Group>>,
    pub humans_total: AtomicU64,
    pub humans_done: AtomicU64,
    pub spawned: AtomicU64,
    pub done: AtomicU64,
    pub admitted: AtomicU64,
}

impl Run {
    /// Time since the start of the run.
    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    pub fn stop_rx(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }

    pub fn stop(&self, why: StopReason) {
        let mut r = self.stop_reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(why);
        }
        self.stopping.store(true, Ordering::Relaxed);
        let _ = self.stop_tx.send(true);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Sleeps for `d`; `false` if the run is stopping (at once, not after `d`).
    pub async fn sleep(&self, stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => !*stop.borrow(),
            _ = stop.changed() => false,
        }
    }

    /// Sends one request to node `node`, counting it, its latency and its status.
    pub async fn send(&self, node: usize, req: Req<'_>) -> Result<Reply, SendError> {
        if self.stopping() {
            return Err(SendError::Stopped);
        }
        let sc = &self.scenario;
        let n = self.metrics.requests_total.fetch_add(1, Ordering::Relaxed);
        if n >= sc.max_requests {
            self.stop(StopReason::MaxRequests);
            return Err(SendError::Stopped);
        }
        let Some((base, slots)) = self.nodes.get(node % self.nodes.len().max(1)) else {
            return Err(SendError::Stopped);
        };
        let queued = Instant::now();
        let Ok(_permit) = slots.acquire().await else {
            return Err(SendError::Stopped);
        };
        self.metrics.client_queue(queued.elapsed());
        let url = format!("{base}{}", req.path);
        let mut b = if req.post {
            self.client.post(&url)
        } else {
            self.client.get(&url)
        };
        let accept = if req.json {
            "application/json"
        } else if req.bot {
            "*/*"
        } else {
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        };
        b = b.header("accept", accept);
        if req.bot {
            b = b.header("user-agent", sc.bots.user_agent.as_str());
            if sc.bots.accept_language {
                b = b.header("accept-language", "en-US,en;q=0.9");
            }
        } else {
            b = b
                .header("user-agent", sc.client.user_agent.as_str())
                .header("accept-language", "en-GB,en;q=0.9")
                .header("accept-encoding", "identity");
        }
        if sc.client.forwarded_for {
            b = b.header("x-forwarded-for", req.client.to_string());
        }
        if let Some(c) = &req.cookie {
            b = b.header("cookie", c.as_str());
        }
        if req.post {
            b = b
                .header("content-type", "application/x-www-form-urlencoded")
                .body(req.form.clone().unwrap_or_default());
        }
        let now = self.elapsed();
        self.metrics.requests.add(now, 1);
        let started = Instant::now();
        let result = async {
            let r = b.send().await?;
            let status = r.status().as_u16();
            let set_cookies = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect();
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = r.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>(Reply {
                status,
                set_cookies,
                retry_after,
                body,
            })
        }
        .await;
        match result {
            Ok(reply) => {
                self.metrics.latency(req.ep, started.elapsed());
                self.metrics.status(req.ep, reply.status);
                Ok(reply)
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else if e.is_body() || e.is_decode() {
                    "body"
                } else {
                    "io"
                };
                self.metrics
                    .error(now, format!("{} {kind}", req.ep.as_str()));
                Err(SendError::Failed(kind))
            }
        }
    }
}

/// The result of running a scenario.
#[derive(Debug)]
pub struct RunOutput {
    pub run: Arc<Run>,
    pub records: Vec<Record>,
    pub admin: Vec<AdminSample>,
    pub duration: Duration,
    pub stopped_by: StopReason,
    pub started_at: SystemTime,
    pub arrivals_planned: usize,
}

/// Reads the room report from the first admin URL that answers.
async fn sample_admin(
    client: &reqwest::Client,
    admin: &[HttpUrl],
    room: &str,
    token: Option<&str>,
) -> Option<AdminSample> {
    for a in admin {
        let mut b = client.get(format!("{}/api/rooms/{room}", a.origin()));
        if let Some(t) = token {
            b = b.bearer_auth(t);
        }
        let Ok(r) = b.send().await else { continue };
        if !r.status().is_success() {
            continue;
        }
        if let Ok(s) = r.json::<AdminSample>().await {
            return Some(s);
        }
    }
    None
}

/// Runs `sc` to the end (or to a cap) and returns what was observed.
pub async fn execute(sc: Scenario, opts: &RunOptions) -> Result<RunOutput, String> {
    let arrivals = schedule(&sc.arrivals, sc.seed, opts.scale);
    let secs = sc.max_duration.as_secs() as usize + 5;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(sc.client.max_connections)
        .pool_idle_timeout(Duration::from_secs(30))
        .timeout(sc.client.request_timeout)
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let admin_client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let token = match &sc.admin_token_env {
        Some(v) => Some(
            std::env::var(v)
                .map_err(|_| format!("admin_token_env: environment variable {v} is not set"))?,
        ),
        None => None,
    };

    // Who is a bot, and which bots share a ticket.
    let mut rng = SplitMix64::stream(sc.seed, 0xB075);
    let kinds: Vec<bool> = arrivals
        .iter()
        .map(|_| sc.bots.share > 0.0 && rng.chance(sc.bots.share))
        .collect();
    let bots = kinds.iter().filter(|b| **b).count();
    let group_size = sc.bots.group.max(1) as usize;
    let groups = (0..bots.div_ceil(group_size))
        .map(|_| watch::channel(Group::default()).0)
        .collect();
    let humans = (arrivals.len() - bots) as u64;

    let (stop_tx, _) = watch::channel(false);
    let nodes = sc
        .targets
        .iter()
        .map(|t| (t.origin(), Semaphore::new(sc.client.max_connections)))
        .collect();
    let started_at = SystemTime::now();
    let run = Arc::new(Run {
        metrics: Metrics::new(secs),
        t0: Instant::now(),
        client,
        nodes,
        stopping: AtomicBool::new(false),
        stop_tx,
        stop_reason: Mutex::new(None),
        records: Mutex::new(Vec::with_capacity(arrivals.len())),
        groups,
        humans_total: AtomicU64::new(humans),
        humans_done: AtomicU64::new(0),
        spawned: AtomicU64::new(0),
        done: AtomicU64::new(0),
        admitted: AtomicU64::new(0),
        scenario: sc,
    });

    // The admin sampler: one reading a second, aligned to the run's seconds.
    let admin_samples = Arc::new(Mutex::new(Vec::<AdminSample>::new()));
    let sampler = {
        let run = run.clone();
        let samples = admin_samples.clone();
        let admin = run.scenario.admin.clone();
        let room = run.scenario.room.clone();
        tokio::spawn(async move {
            if admin.is_empty() {
                return;
            }
            let mut stop = run.stop_rx();
            let mut k = 0u64;
            loop {
                let t_ms = run.elapsed_ms();
                if let Some(mut s) =
                    sample_admin(&admin_client, &admin, &room, token.as_deref()).await
                {
                    s.t_ms = t_ms;
                    samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                }
                k += 1;
                let next = run.t0 + Duration::from_secs(k);
                let wait = next.saturating_duration_since(Instant::now());
                if !run.sleep(&mut stop, wait).await {
                    // One last reading after the stop, for the final numbers.
                    if let Some(mut s) =
                        sample_admin(&admin_client, &admin, &room, token.as_deref()).await
                    {
                        s.t_ms = run.elapsed_ms();
                        samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                    }
                    return;
                }
            }
        })
    };

    // The spawner: releases shoppers on the arrival curve.
    let arrivals_planned = arrivals.len();
    let spawner = {
        let run = run.clone();
        tokio::spawn(async move {
            let mut stop = run.stop_rx();
            let mut bot_index = 0usize;
            for (i, at) in arrivals.iter().enumerate() {
                let wait = (run.t0 + *at).saturating_duration_since(Instant::now());
                // Timers tick in milliseconds: shoppers due within one are released together
                // rather than each rounded up to a whole millisecond (which would cap the
                // arrival rate at 1,000 a second).
                if wait > Duration::from_millis(1) && !run.sleep(&mut stop, wait).await {
                    return;
                }
                if run.stopping() {
                    return;
                }
                let bot = kinds[i];
                let role = if bot {
                    let g = bot_index / group_size;
                    let leader = bot_index.is_multiple_of(group_size);
                    bot_index += 1;
                    Some((g, leader))
                } else {
                    None
                };
                run.spawned.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(shopper::run_one(run.clone(), i as u32, role));
            }
        })
    };

    // Ctrl-C stops the run like a cap: the report is still written, spawned processes stopped.
    let interrupter = {
        let run = run.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                run.stop(StopReason::Interrupted);
            }
        })
    };

    // The main loop: gauges, progress, stop conditions.
    let tty = std::io::stderr().is_terminal();
    let mut last_requests = 0u64;
    let mut last_admitted = 0u64;
    let mut second = 0u64;
    let mut stop = run.stop_rx();
    loop {
        second += 1;
        let next = run.t0 + Duration::from_secs(second);
        let wait = next.saturating_duration_since(Instant::now());
        run.sleep(&mut stop, wait).await;
        let i = (second - 1) as usize;
        let m = &run.metrics;
        let waiting = m.waiting_now.load(Ordering::Relaxed).max(0) as u64;
        let in_shop = m.in_shop_now.load(Ordering::Relaxed).max(0) as u64;
        m.waiting.set(i, waiting);
        m.in_shop.set(i, in_shop);
        let requests = m.requests_total.load(Ordering::Relaxed);
        let admitted = run.admitted.load(Ordering::Relaxed);
        if opts.progress && (tty || second.is_multiple_of(5) || run.stopping()) {
            let admin = admin_samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last()
                .map(|s| {
                    format!(
                        "  | room {} serving {} active {}/{}",
                        s.state, s.serving, s.active, s.total_active_users
                    )
                })
                .unwrap_or_default();
            let line = format!(
                "[{:>4}s/{}s] arrived {}/{}  waiting {}  in shop {}  admitted {} (+{}/s)  done {}  requests {} (+{}/s)  failures {}{}",
                second,
                run.scenario.max_duration.as_secs(),
                run.spawned.load(Ordering::Relaxed),
                arrivals_planned,
                waiting,
                in_shop,
                admitted,
                admitted - last_admitted,
                run.done.load(Ordering::Relaxed),
                requests,
                requests.saturating_sub(last_requests),
                m.errors().values().sum::<u64>(),
                admin
            );
            let mut err = std::io::stderr().lock();
            if tty {
                let _ = write!(err, "\r\x1b[2K{line}");
            } else {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
        }
        last_requests = requests;
        last_admitted = admitted;

        if run.stopping() {
            break;
        }
        let all_spawned = spawner.is_finished();
        if all_spawned
            && run.humans_done.load(Ordering::Relaxed) >= run.humans_total.load(Ordering::Relaxed)
        {
            run.stop(StopReason::Completed);
            break;
        }
        if run.elapsed() >= run.scenario.max_duration {
            run.stop(StopReason::MaxDuration);
            break;
        }
    }
    if opts.progress && tty {
        eprintln!();
    }
    // Shoppers see the stop at their next sleep or request; give requests in flight their
    // timeout to finish.
    let grace = run.scenario.client.request_timeout + Duration::from_secs(1);
    let deadline = Instant::now() + grace;
    while run.done.load(Ordering::Relaxed) < run.spawned.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    interrupter.abort();
    let _ = spawner.await;
    let _ = sampler.await;
    let duration = run.elapsed();
    let stopped_by = run
        .stop_reason
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or(StopReason::Completed);
    let records = std::mem::take(&mut *run.records.lock().unwrap_or_else(|p| p.into_inner()));
    let admin = std::mem::take(&mut *admin_samples.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(RunOutput {
        run,
        records,
        admin,
        duration,
        stopped_by,
        started_at,
        arrivals_planned,
    })
}

#[cfg(test)]
mod tests {
    use super::client_address;

    #[test]
    fn client_addresses_are_in_the_benchmark_range_and_spread() {
        let net = ipnet_contains;
        let mut prefixes = std::collections::HashSet::new();
        for id in 0..1000u32 {
            let a = client_address(id);
            assert!(net(a), "{a}");
            let o = a.octets();
            prefixes.insert((o[1], o[2]));
        }
        assert!(prefixes.len() > 400, "{}", prefixes.len());
        assert_ne!(client_address(1), client_address(2));
    }

    fn ipnet_contains(a: std::net::Ipv4Addr) -> bool {
        let o = a.octets();
        o[0] == 198 && (o[1] == 18 || o[1] == 19)
    }
}
