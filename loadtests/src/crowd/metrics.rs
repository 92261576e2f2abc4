//! What a run counts while it runs: per-second series, latency histograms per endpoint, status
//! codes and errors by kind. Shared by every simulated shopper, so everything is an atomic or
//! a short-held lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// The kinds of request a shopper makes; latency is kept per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// First request for the protected page (ticket issue, or straight in).
    Join,
    /// `GET /.flashgate/status`.
    Status,
    /// The protected page again when the turn has come (the claim).
    Claim,
    /// Browsing with a pass.
    Page,
    /// `POST /cart`.
    Cart,
    /// `POST /checkout`.
    Checkout,
    /// `POST /.flashgate/leave`.
    Leave,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Join,
        Endpoint::Status,
        Endpoint::Claim,
        Endpoint::Page,
        Endpoint::Cart,
        Endpoint::Checkout,
        Endpoint::Leave,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Join => "join",
            Endpoint::Status => "status",
            Endpoint::Claim => "claim",
            Endpoint::Page => "page",
            Endpoint::Cart => "cart",
            Endpoint::Checkout => "checkout",
            Endpoint::Leave => "leave",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A counter per second of the run.
#[derive(Debug)]
pub struct Series(Vec<AtomicU64>);

impl Series {
    fn new(secs: usize) -> Self {
        Self((0..secs).map(|_| AtomicU64::new(0)).collect())
    }

    pub fn add(&self, at: Duration, n: u64) {
        let i = (at.as_secs() as usize).min(self.0.len().saturating_sub(1));
        if let Some(c) = self.0.get(i) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Sets second `i` (for sampled gauges).
    pub fn set(&self, i: usize, v: u64) {
        if let Some(c) = self.0.get(i) {
            c.store(v, Ordering::Relaxed);
        }
    }

    /// The first `secs` values.
    pub fn values(&self, secs: usize) -> Vec<u64> {
        self.0
            .iter()
            .take(secs)
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Everything counted during a run.
#[derive(Debug)]
pub struct Metrics {
    pub arrivals: Series,
    pub admissions: Series,
    pub gave_up: Series,
    pub requests: Series,
    pub failures: Series,
    /// Sampled each second: shoppers told to wait, and shoppers in the shop.
    pub waiting: Series,
    pub in_shop: Series,
    pub waiting_now: AtomicI64,
    pub in_shop_now: AtomicI64,
    pub requests_total: AtomicU64,
    latency: Vec<Mutex<Histogram<u64>>>,
    /// Time spent waiting for a connection slot in the simulator itself.
    client_queue: Mutex<Histogram<u64>>,
    statuses: Mutex<BTreeMap<(Endpoint, u16), u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

/// Latency percentiles of one endpoint, in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencySummary {
    pub endpoint: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

fn summarize(name: &str, h: &Histogram<u64>) -> LatencySummary {
    LatencySummary {
        endpoint: name.to_owned(),
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

impl Metrics {
    /// Counters for a run of at most `secs` seconds.
    pub fn new(secs: usize) -> Self {
        let secs = secs + 2;
        Self {
            arrivals: Series::new(secs),
            admissions: Series::new(secs),
            gave_up: Series::new(secs),
            requests: Series::new(secs),
            failures: Series::new(secs),
            waiting: Series::new(secs),
            in_shop: Series::new(secs),
            waiting_now: AtomicI64::new(0),
            in_shop_now: AtomicI64::new(0),
            requests_total: AtomicU64::new(0),
            latency: Endpoint::ALL
                .iter()
                .map(|_| Mutex::new(histogram()))
                .collect(),
            client_queue: Mutex::new(histogram()),
            statuses: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn latency(&self, ep: Endpoint, d: Duration) {
        if let Some(h) = self.latency.get(ep.index()) {
            let mut h = h.lock().unwrap_or_else(|p| p.into_inner());
            let _ = h.record(d.as_micros().max(1) as u64);
        }
    }

    pub fn client_queue(&self, d: Duration) {
        let mut h = self.client_queue.lock().unwrap_or_else(|p| p.into_inner());
        let _ = h.record(d.as_micros().max(1) as u64);
    }

    pub fn status(&self, ep: Endpoint, code: u16) {
        let mut m = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((ep, code)).or_default() += 1;
    }

    /// Counts a failure of `kind` at `at` (transport errors, 5xx, unexpected answers).
    pub fn error(&self, at: Duration, kind: impl Into<String>) {
        self.failures.add(at, 1);
        let mut m = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(kind.into()).or_default() += 1;
    }

    pub fn latency_summary(&self) -> Vec<LatencySummary> {
        Endpoint::ALL
            .iter()
            .filter_map(|ep| {
                let h = self.latency.get(ep.index())?;
                let h = h.lock().unwrap_or_else(|p| p.into_inner());
                (!h.is_empty()).then(|| summarize(ep.as_str(), &h))
            })
            .collect()
    }

    pub fn client_queue_summary(&self) -> LatencySummary {
        let h = self.client_queue.lock().unwrap_or_else(|p| p.into_inner());
        summarize("client_queue", &h)
    }

    /// Status codes seen, as `endpoint status` → count.
    pub fn statuses(&self) -> BTreeMap<String, u64> {
        let m = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|((ep, code), n)| (format!("{} {code}", ep.as_str()), *n))
            .collect()
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
