//! Prometheus metrics (`flashgate_*`). Label values come from closed sets (decisions, results)
//! or from the config (room ids, pool names), never from requests.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// What the gate did with a request (the `decision` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded with a valid pass (or bypass / unprotected route).
    Forwarded,
    /// Admitted now: a pass was minted and the request forwarded.
    Admitted,
    /// Shown the waiting page or JSON.
    Queued,
    /// Sale closed or sold out.
    Rejected,
    /// A reserved endpoint (/.flashgate/*).
    Reserved,
    /// The store failed and the room's policy applied.
    StoreError,
    /// Origin unreachable or failing.
    UpstreamError,
    NotFound,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::Admitted => "admitted",
            Self::Queued => "queued",
            Self::Rejected => "rejected",
            Self::Reserved => "reserved",
            Self::StoreError => "store_error",
            Self::UpstreamError => "upstream_error",
            Self::NotFound => "not_found",
        }
    }
}

/// All metrics of one process, in their own registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub tickets: IntCounterVec,
    pub admissions: IntCounterVec,
    pub sessions_ended: IntCounterVec,
    pub serving: IntGaugeVec,
    pub issued: IntGaugeVec,
    pub active: IntGaugeVec,
    pub store_errors: IntCounterVec,
    pub upstream_seconds: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let requests = counter(
            "flashgate_requests_total",
            "Requests by gate decision",
            &["decision"],
        );
        let tickets = counter(
            "flashgate_tickets_issued_total",
            "Queue tickets issued",
            &["room"],
        );
        let admissions = counter(
            "flashgate_admissions_total",
            "Tickets that entered (passes minted)",
            &["room"],
        );
        let sessions_ended = counter(
            "flashgate_sessions_ended_total",
            "Sessions or places given up, by reason",
            &["room", "reason"],
        );
        let serving = gauge(
            "flashgate_serving_number",
            "Current serving number",
            &["room"],
        );
        let issued = gauge(
            "flashgate_tickets_number",
            "Tickets issued so far (ticket counter)",
            &["room"],
        );
        let active = gauge(
            "flashgate_active_users",
            "Active shoppers counted in the room",
            &["room"],
        );
        let store_errors = counter(
            "flashgate_store_errors_total",
            "Store operations that failed",
            &["op"],
        );
        let upstream_seconds = HistogramVec::new(
            HistogramOpts::new(
                "flashgate_upstream_seconds",
                "Time to the origin's response header",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["pool", "class"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(upstream_seconds.clone()))
            .expect("metric registered once");
        Self {
            registry,
            requests,
            tickets,
            admissions,
            sessions_ended,
            serving,
            issued,
            active,
            store_errors,
            upstream_seconds,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
