//! Prometheus metrics (`flashgate_*`). Label values come from closed sets (decisions, results)
//! or from the config (room ids, pool names), never from requests.

use std::collections::BTreeSet;
use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
// Origin shield gauges (fractional factors).
use prometheus::GaugeVec;

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
    /// Bot defence answered (challenge, 403 or 429).
    Bot,
    /// Answered from the catalog cache.
    Cached,
    /// Shed by the origin shield (stale copy or 503).
    Shed,
    /// Origin unreachable or failing.
    UpstreamError,
    NotFound,
    /// Refused before routing: a malformed Host or request path (400).
    BadRequest,
}

impl Outcome {
    /// Every outcome, in declaration order (index = `self as usize`).
    pub const ALL: [Outcome; 12] = [
        Self::Forwarded,
        Self::Admitted,
        Self::Queued,
        Self::Rejected,
        Self::Reserved,
        Self::StoreError,
        Self::Bot,
        Self::Cached,
        Self::Shed,
        Self::UpstreamError,
        Self::NotFound,
        Self::BadRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::Admitted => "admitted",
            Self::Queued => "queued",
            Self::Rejected => "rejected",
            Self::Reserved => "reserved",
            Self::StoreError => "store_error",
            Self::Bot => "bot",
            Self::Cached => "cached",
            Self::Shed => "shed",
            Self::UpstreamError => "upstream_error",
            Self::NotFound => "not_found",
            Self::BadRequest => "bad_request",
        }
    }
}

/// The metric family names a process exports (what dashboards and alert rules may use).
#[derive(Debug, Clone, Default)]
pub struct MetricNames {
    pub plain: BTreeSet<String>,
    pub histograms: BTreeSet<String>,
}

impl MetricNames {
    /// Whether `series` is one of ours: a family name, or a histogram's `_bucket`, `_sum` or
    /// `_count` series.
    pub fn knows(&self, series: &str) -> bool {
        self.plain.contains(series)
            || self.histograms.contains(series)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                series
                    .strip_suffix(suffix)
                    .is_some_and(|base| self.histograms.contains(base))
            })
    }

    /// Every name, histograms included.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        self.plain
            .iter()
            .chain(&self.histograms)
            .map(String::as_str)
    }
}

/// All metrics of one process, in their own registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// The name of every family registered, with or without samples.
    pub names: Arc<MetricNames>,
    pub requests: IntCounterVec,
    /// `requests` resolved once per outcome: counting a request is one atomic add.
    requests_by: Vec<prometheus::IntCounter>,
    pub tickets: IntCounterVec,
    pub admissions: IntCounterVec,
    pub sessions_ended: IntCounterVec,
    pub serving: IntGaugeVec,
    pub issued: IntGaugeVec,
    pub active: IntGaugeVec,
    /// 1 for the state each room is in, 0 for the others: `room`, `state` (`RoomState::ALL`).
    pub room_state: IntGaugeVec,
    /// The admission rate in force per room (overrides and origin-aware factor applied).
    pub admission_target: IntGaugeVec,
    /// Config reloads (SIGHUP or `POST /api/reload`) by `result` (`ok`, `refused`).
    pub reloads: IntCounterVec,
    pub store_errors: IntCounterVec,
    /// 1 while the store's circuit breaker is open or half-open.
    pub store_degraded: IntGauge,
    /// Changes of the breaker's mode (`open`, `half_open`, `closed`).
    pub store_mode_changes: IntCounterVec,
    /// Rooms re-seeded from this node's high-water marks (the store had lost state).
    pub store_reseeds: IntCounterVec,
    /// Shoppers admitted from the node-local floor bucket while the store failed.
    pub floor_admissions: IntCounterVec,
    pub upstream_seconds: HistogramVec,
    /// Origin shield: catalog cache lookups by route kind and result (`hit`, `miss`, `stale`,
    /// `bypass`, `coalesced`).
    pub cache_results: IntCounterVec,
    /// Origin shield: weighted size of the catalog cache, in bytes.
    pub cache_bytes: IntGauge,
    /// Origin shield: objects in the catalog cache.
    pub cache_entries: IntGauge,
    /// Origin shield: background refreshes by result (`stored`, `not_stored`, `failed`).
    pub cache_refreshes: IntCounterVec,
    /// Origin shield: requests refused by a pool's concurrency limit or latency target, by
    /// `pool`, route `kind` and `reason` (`saturated`, `slow`).
    pub shed: IntCounterVec,
    /// Origin shield: origin-aware admission factor per room (1 = configured rate).
    pub origin_factor: GaugeVec,
    /// Bot engine decisions: `room`, `mode` (enforce|shadow), `action`, `reason` (see
    /// `bot::Action`, `bot::Reason`).
    pub bot_actions: IntCounterVec,
    /// Bot signals that fired: `room`, `signal` (see `bot::Signal`).
    pub bot_signals: IntCounterVec,
    /// Challenges issued and solutions by result: `room`, `result` (`issued`, `solved`, or a
    /// `bot::ChallengeError` label).
    pub bot_challenges: IntCounterVec,
    /// Bot table entries displaced before they went idle: `table`.
    pub bot_evictions: IntCounterVec,
    /// Events delivered to the sink: `kind` (see `events::EventKind::NAMES`).
    pub events_sent: IntCounterVec,
    /// Events dropped: `reason` (`buffer_full`, `rejected`, `shutdown`).
    pub events_dropped: IntCounterVec,
    /// Failed delivery attempts (each is retried): `sink` (`redis`, `file`).
    pub events_sink_errors: IntCounterVec,
    /// Events waiting for the sink: buffered plus the batch being delivered.
    pub events_pending: IntGauge,
    /// Feedback pulse: wait ratings accepted, by `room` and `rating` (`1` to `5`).
    pub feedback: IntCounterVec,
    /// Server-sent-event streams (`/.flashgate/events`) this node holds open.
    pub event_streams: IntGauge,
    /// Server-sent-event streams opened (a browser reopens one when the node ends it).
    pub event_streams_opened: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        // Every family is registered through `reg`, which also records its name (a registry
        // lists only families that have samples; `flashgate check` needs them all).
        let names = std::cell::RefCell::new(MetricNames::default());
        let reg = |c: Box<dyn Collector>, histogram: bool| {
            for d in c.desc() {
                let mut n = names.borrow_mut();
                if histogram {
                    n.histograms.insert(d.fq_name.clone());
                } else {
                    n.plain.insert(d.fq_name.clone());
                }
            }
            registry.register(c).expect("metric registered once");
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            reg(Box::new(c.clone()), false);
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            reg(Box::new(g.clone()), false);
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
        let room_state = gauge(
            "flashgate_room_state",
            "1 for the state the room is in (idle, prequeue, queueing, paused, queue_all, draining, sold_out, closed)",
            &["room", "state"],
        );
        let admission_target = gauge(
            "flashgate_admission_target_per_minute",
            "New shoppers per minute the room admits now (overrides and origin factor applied)",
            &["room"],
        );
        let reloads = counter(
            "flashgate_reloads_total",
            "Config reloads (SIGHUP or admin API), by result (ok, refused)",
            &["result"],
        );
        let store_errors = counter(
            "flashgate_store_errors_total",
            "Store operations that failed",
            &["op"],
        );
        let store_degraded = IntGauge::with_opts(Opts::new(
            "flashgate_store_degraded",
            "1 while the store circuit breaker is open or half-open (calls fail fast)",
        ))
        .expect("static metric definition");
        reg(Box::new(store_degraded.clone()), false);
        let store_mode_changes = counter(
            "flashgate_store_mode_changes_total",
            "Store circuit breaker mode changes, by the mode entered",
            &["mode"],
        );
        let store_reseeds = counter(
            "flashgate_store_reseeds_total",
            "Rooms re-seeded from this node's high-water marks after the store lost state",
            &["room"],
        );
        let floor_admissions = counter(
            "flashgate_floor_admissions_total",
            "Shoppers admitted from the node-local floor-rate bucket while the store failed",
            &["room"],
        );
        let bot_actions = counter(
            "flashgate_bot_actions_total",
            "Bot-defence decisions by mode, action and reason",
            &["room", "mode", "action", "reason"],
        );
        let bot_signals = counter(
            "flashgate_bot_signals_total",
            "Bot-defence signals that fired",
            &["room", "signal"],
        );
        let bot_challenges = counter(
            "flashgate_bot_challenges_total",
            "Proof-of-work challenges issued and solutions by result",
            &["room", "result"],
        );
        let bot_evictions = counter(
            "flashgate_bot_table_evictions_total",
            "Bot-defence table entries evicted before going idle (a flood of distinct keys)",
            &["table"],
        );
        let events_sent = counter(
            "flashgate_events_sent_total",
            "Queue/admission events delivered to the event sink",
            &["kind"],
        );
        let events_dropped = counter(
            "flashgate_events_dropped_total",
            "Queue/admission events dropped (buffer full, refused by the sink, or shutdown)",
            &["reason"],
        );
        let events_sink_errors = counter(
            "flashgate_events_sink_errors_total",
            "Failed event deliveries (the batch is kept and retried)",
            &["sink"],
        );
        let events_pending = IntGauge::with_opts(Opts::new(
            "flashgate_events_pending",
            "Queue/admission events waiting for the sink: buffered plus the batch being delivered",
        ))
        .expect("static metric definition");
        reg(Box::new(events_pending.clone()), false);
        let event_streams = IntGauge::with_opts(Opts::new(
            "flashgate_event_streams",
            "Server-sent-event streams (/.flashgate/events) this node holds open",
        ))
        .expect("static metric definition");
        reg(Box::new(event_streams.clone()), false);
        let event_streams_opened = IntCounter::with_opts(Opts::new(
            "flashgate_event_streams_opened_total",
            "Server-sent-event streams opened (a browser reopens one when the node ends it)",
        ))
        .expect("static metric definition");
        reg(Box::new(event_streams_opened.clone()), false);
        let feedback = counter(
            "flashgate_feedback_total",
            "Wait ratings from the waiting page (one per ticket per node), by rating 1-5",
            &["room", "rating"],
        );
        let cache_results = counter(
            "flashgate_cache_results_total",
            "Catalog cache lookups by route kind and result",
            &["kind", "result"],
        );
        let cache_refreshes = counter(
            "flashgate_cache_refreshes_total",
            "Background refreshes of stale catalog entries, by result",
            &["result"],
        );
        let shed = counter(
            "flashgate_shed_total",
            "Requests refused by a pool's concurrency limit or latency target",
            &["pool", "kind", "reason"],
        );
        let plain_gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(Opts::new(name, help)).expect("static metric definition");
            reg(Box::new(g.clone()), false);
            g
        };
        let cache_bytes = plain_gauge(
            "flashgate_cache_bytes",
            "Weighted size of the catalog cache in bytes",
        );
        let cache_entries = plain_gauge("flashgate_cache_entries", "Objects in the catalog cache");
        let origin_factor = GaugeVec::new(
            Opts::new(
                "flashgate_origin_health_factor",
                "Origin-aware admission factor applied to the room's rate (1 = configured)",
            ),
            &["room"],
        )
        .expect("static metric definition");
        reg(Box::new(origin_factor.clone()), false);
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
        reg(Box::new(upstream_seconds.clone()), true);
        let names = Arc::new(names.into_inner());
        Self {
            registry,
            names,
            requests_by: Outcome::ALL
                .iter()
                .map(|o| requests.with_label_values(&[o.as_str()]))
                .collect(),
            requests,
            tickets,
            admissions,
            sessions_ended,
            serving,
            issued,
            active,
            room_state,
            admission_target,
            reloads,
            store_errors,
            store_degraded,
            store_mode_changes,
            store_reseeds,
            floor_admissions,
            upstream_seconds,
            cache_results,
            cache_bytes,
            cache_entries,
            cache_refreshes,
            shed,
            origin_factor,
            bot_actions,
            bot_signals,
            bot_challenges,
            bot_evictions,
            events_sent,
            events_dropped,
            events_sink_errors,
            events_pending,
            feedback,
            event_streams,
            event_streams_opened,
        }
    }

    /// Counts one request with its decision.
    pub fn request(&self, o: Outcome) {
        if let Some(c) = self.requests_by.get(o as usize) {
            c.inc();
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_defined_here_is_listed() {
        let m = Metrics::new();
        let all = include_str!("metrics.rs");
        let src = all.split(concat!("#[cfg(", "test)]")).next().unwrap_or(all);
        let needle = concat!("\"", "flash", "gate_");
        let mut n = 0;
        for (i, _) in src.match_indices(needle) {
            let name: String = src[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(m.names.knows(&name), "{name} is registered without `reg`");
            n += 1;
        }
        assert!(n >= 20, "found {n} metric names");
        assert_eq!(m.names.all().count(), n, "one definition per family");
    }

    #[test]
    fn histogram_series_are_known() {
        let n = Metrics::new().names;
        assert!(n.knows("flashgate_upstream_seconds_bucket"));
        assert!(n.knows("flashgate_upstream_seconds_sum"));
        assert!(n.knows("flashgate_upstream_seconds_count"));
        assert!(n.knows("flashgate_requests_total"));
        assert!(
            !n.knows("flashgate_requests_total_count"),
            "not a histogram"
        );
        assert!(!n.knows("flashgate_nope_total"));
    }
}
