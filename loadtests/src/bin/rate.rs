//! `rate`: an open-loop, fixed-rate HTTP/1.1 load generator (in the spirit of wrk2), and a
//! closed-loop "as fast as possible" mode for bulk work such as issuing a million tickets.
//!
//! Open loop (`--rate N`): request *j* is due at `start + j / N`, whatever happened to earlier
//! requests. A pacer thread releases each request at its time (an OS sleep, accurate to tens of
//! microseconds; the async runtime's timers tick in whole milliseconds), and the first free
//! keep-alive connection sends it. Latency is measured from the **scheduled** time, not the
//! send time, so a stall shows up as the latency every request scheduled during it really saw
//! (no coordinated omission). The time from the actual send is reported as service time, and
//! how late the generator itself picked requests up as `late_p99_us`.
//!
//! Closed loop (`--max`): every connection sends back to back until `--requests` or
//! `--duration` is used up; latency is from the send.
//!
//! ```text
//! rate http://127.0.0.1:8080/healthz --rate 2000 --duration 10s -H 'Cookie: fg_p_bench=...'
//! rate http://127.0.0.1:8080/ --max --requests 1000000 --connections 64 \
//!      --save-cookie fg_t_bench --save-count 1000 --save-to tickets.txt
//! rate 'http://127.0.0.1:8080/.flashgate/status?room=bench' --rate 5000 --tokens tickets.txt
//! ```
//!
//! Output: one `key=value` summary line on stdout (for scripts), or JSON with `--json`.
//! Bounded: at most 10 minutes and 20,000,000 requests a run; loopback targets only unless
//! `--allow-remote`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use loadtests::http1::{request_bytes, Capture, Conn, Http1Error};
use loadtests::target::check_target;
use tokio::sync::mpsc;

const MAX_DURATION: Duration = Duration::from_secs(600);
const MAX_REQUESTS: u64 = 20_000_000;

#[derive(Parser, Debug)]
#[command(
    name = "rate",
    about = "Open-loop fixed-rate (or closed-loop) HTTP/1.1 load generator"
)]
struct Args {
    /// Target URL (http://127.0.0.1:PORT/path; loopback only unless --allow-remote).
    url: String,
    /// Requests per second, scheduled at exact intervals (open loop).
    #[arg(long, required_unless_present = "max", conflicts_with = "max")]
    rate: Option<f64>,
    /// Closed loop: each connection sends back to back, as fast as the target answers.
    #[arg(long)]
    max: bool,
    /// Measured duration (after the warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up before measuring (requests are sent but not recorded).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Keep-alive connections.
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Stop after this many requests (warm-up included).
    #[arg(long)]
    requests: Option<u64>,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request body (sets Content-Length).
    #[arg(long, default_value = "")]
    body: String,
    /// A file of `name=value` cookies, one a line: requests rotate through them (each request
    /// carries one as its `Cookie` header).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Save the value of this response cookie (e.g. `fg_t_bench`) from the first responses.
    #[arg(long)]
    save_cookie: Option<String>,
    #[arg(long, default_value_t = 1000)]
    save_count: usize,
    /// Where to write the saved cookies (`name=value` lines).
    #[arg(long)]
    save_to: Option<PathBuf>,
    /// Count responses carrying this header with this value prefix, `Name: prefix`
    /// (e.g. `X-Flashgate-Cache: hit`).
    #[arg(long)]
    count_header: Option<String>,
    /// Give up on a request after this long (counted as a `timeout` error).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// A label printed with the results.
    #[arg(long, default_value = "")]
    label: String,
    /// Print JSON instead of the key=value line.
    #[arg(long)]
    json: bool,
    /// Allow a target that is not on this machine's loopback interface.
    #[arg(long)]
    allow_remote: bool,
}

struct Plan {
    authority: String,
    requests: Vec<Vec<u8>>,
    head_only: bool,
    rate: Option<f64>,
    start: Instant,
    warmup_end: Instant,
    end: Instant,
    total: u64,
    timeout: Duration,
    capture: Option<(String, String)>,
    capture_is_count: bool,
    save_count: usize,
}

struct Shared {
    next: AtomicU64,
    saved: Mutex<Vec<String>>,
    /// Open loop: scheduled requests, released by the pacer thread at their times.
    paced: tokio::sync::Mutex<mpsc::UnboundedReceiver<(u64, Instant)>>,
}

struct WorkerOut {
    latency: Histogram<u64>,
    /// Open loop: how late the generator itself picked a request up.
    lateness: Histogram<u64>,
    service: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<&'static str, u64>,
    header_hits: u64,
    recorded: u64,
    last_done: Option<Instant>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

async fn worker(plan: Arc<Plan>, shared: Arc<Shared>) -> WorkerOut {
    let mut out = WorkerOut {
        latency: histogram(),
        lateness: histogram(),
        service: histogram(),
        statuses: BTreeMap::new(),
        errors: BTreeMap::new(),
        header_hits: 0,
        recorded: 0,
        last_done: None,
    };
    let mut conn: Option<Conn> = None;
    tokio::time::sleep_until(plan.start.into()).await;
    loop {
        // Which request is next, and when it is due.
        let (j, scheduled) = match plan.rate {
            Some(_) => {
                // The next request the pacer released, whichever connection is free first.
                let next = shared.paced.lock().await.recv().await;
                match next {
                    Some(item) => item,
                    None => break,
                }
            }
            None => {
                let j = shared.next.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if j >= plan.total || now >= plan.end {
                    break;
                }
                (j, now)
            }
        };
        if plan.rate.is_some() && scheduled >= plan.warmup_end {
            let _ = out
                .lateness
                .record(scheduled.elapsed().as_micros().max(1) as u64);
        }
        let req = &plan.requests[(j % plan.requests.len() as u64) as usize];
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(&plan.authority).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    if scheduled >= plan.warmup_end {
                        *out.errors.entry(e.kind()).or_default() += 1;
                    }
                    // Do not spin on a refused port.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let capture = plan
            .capture
            .as_ref()
            .map(|(n, p)| Capture { name: n, prefix: p });
        let sent = Instant::now();
        let result =
            tokio::time::timeout(plan.timeout, c.round_trip(req, plan.head_only, capture)).await;
        let done = Instant::now();
        let record = scheduled >= plan.warmup_end;
        match result {
            Ok(Ok(r)) => {
                if !r.keep_alive {
                    conn = None;
                }
                if let Some(v) = r.captured {
                    if plan.capture_is_count {
                        if record {
                            out.header_hits += 1;
                        }
                    } else {
                        let mut saved = shared.saved.lock().unwrap_or_else(|p| p.into_inner());
                        if saved.len() < plan.save_count {
                            saved.push(v);
                        }
                    }
                }
                if record {
                    *out.statuses.entry(r.status).or_default() += 1;
                    let _ = out
                        .latency
                        .record((done - scheduled).as_micros().max(1) as u64);
                    let _ = out.service.record((done - sent).as_micros().max(1) as u64);
                    out.recorded += 1;
                    out.last_done = Some(done);
                }
            }
            Ok(Err(e)) => {
                conn = None;
                if record {
                    *out.errors.entry(e.kind()).or_default() += 1;
                }
                if matches!(e, Http1Error::Connect(_)) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Err(_) => {
                conn = None;
                if record {
                    *out.errors.entry("timeout").or_default() += 1;
                }
            }
        }
    }
    out
}

fn read_tokens(path: &PathBuf) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        return Err(format!("{}: no cookies in the file", path.display()));
    }
    Ok(tokens)
}

fn run(args: Args) -> Result<bool, String> {
    let url = check_target(&args.url, args.allow_remote).map_err(|e| e.to_string())?;
    if args.duration > MAX_DURATION || args.warmup > MAX_DURATION {
        return Err(format!(
            "--duration and --warmup are capped at {}",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    if args.connections == 0 || args.connections > 10_000 {
        return Err("--connections must be between 1 and 10000".into());
    }
    if let Some(r) = args.rate {
        if !(r > 0.0 && r <= 1_000_000.0) {
            return Err("--rate must be > 0 and at most 1000000".into());
        }
    }
    let total = args.requests.unwrap_or(MAX_REQUESTS).min(MAX_REQUESTS);
    for h in &args.headers {
        if !h.contains(':') {
            return Err(format!("--header {h:?}: write `Name: value`"));
        }
    }
    let cookies = match &args.tokens {
        Some(p) => read_tokens(p)?,
        None => Vec::new(),
    };
    let authority = url.authority();
    let build = |cookie: Option<&str>| {
        let mut h = args.headers.clone();
        if let Some(c) = cookie {
            h.push(format!("Cookie: {c}"));
        }
        request_bytes(
            &args.method,
            &authority,
            &url.path,
            &h,
            args.body.as_bytes(),
        )
    };
    let requests: Vec<Vec<u8>> = if cookies.is_empty() {
        vec![build(None)]
    } else {
        cookies.iter().map(|c| build(Some(c))).collect()
    };
    let (capture, capture_is_count) = match (&args.count_header, &args.save_cookie) {
        (Some(_), Some(_)) => return Err("use --count-header or --save-cookie, not both".into()),
        (Some(h), None) => {
            let (n, p) = h
                .split_once(':')
                .ok_or("--count-header: write `Name: prefix`")?;
            (Some((n.trim().to_owned(), p.trim().to_owned())), true)
        }
        (None, Some(c)) => (Some(("set-cookie".into(), format!("{c}="))), false),
        (None, None) => (None, false),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let started = Instant::now() + Duration::from_millis(50);
    let plan = Arc::new(Plan {
        authority: authority.clone(),
        requests,
        head_only: args.method.eq_ignore_ascii_case("HEAD"),
        rate: args.rate,
        start: started,
        warmup_end: started + args.warmup,
        end: started + args.warmup + args.duration,
        total,
        timeout: args.timeout,
        capture,
        capture_is_count,
        save_count: args.save_count,
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        saved: Mutex::new(Vec::new()),
        paced: tokio::sync::Mutex::new(rx),
    });
    // The pacer: an OS thread sleeping to each scheduled time (nanosleep wakes within tens of
    // microseconds; the runtime's timers tick in whole milliseconds, which would add up to a
    // millisecond of the generator's own delay to every latency).
    let mut tx = Some(tx);
    let pacer = plan.rate.zip(tx.take()).map(|(rate, tx)| {
        let plan = plan.clone();
        std::thread::spawn(move || {
            for j in 0..plan.total {
                let at = plan.start + Duration::from_secs_f64(j as f64 / rate);
                if at >= plan.end {
                    break;
                }
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if tx.send((j, at)).is_err() {
                    break;
                }
            }
        })
    });
    let outs: Vec<WorkerOut> = rt.block_on(async {
        let handles: Vec<_> = (0..args.connections as u64)
            .map(|_| tokio::spawn(worker(plan.clone(), shared.clone())))
            .collect();
        let mut outs = Vec::new();
        if let Some(p) = pacer {
            // The channel closes when the pacer is done, and the workers drain it.
            let _ = tokio::task::spawn_blocking(move || p.join()).await;
        }
        for h in handles {
            if let Ok(o) = h.await {
                outs.push(o);
            }
        }
        outs
    });

    let mut latency = histogram();
    let mut service = histogram();
    let mut lateness = histogram();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut recorded, mut hits) = (0u64, 0u64);
    let mut last = plan.warmup_end;
    for o in &outs {
        let _ = latency.add(&o.latency);
        let _ = service.add(&o.service);
        let _ = lateness.add(&o.lateness);
        for (k, v) in &o.statuses {
            *statuses.entry(*k).or_default() += v;
        }
        for (k, v) in &o.errors {
            *errors.entry(k).or_default() += v;
        }
        recorded += o.recorded;
        hits += o.header_hits;
        if let Some(d) = o.last_done {
            last = last.max(d);
        }
    }
    // Open loop: the measured span is the schedule's; closed loop: until the last answer.
    let span = match args.rate {
        Some(_) => args
            .duration
            .max(last.saturating_duration_since(plan.warmup_end)),
        None => last.saturating_duration_since(plan.warmup_end),
    }
    .as_secs_f64()
    .max(1e-3);
    if let (Some(path), false) = (&args.save_to, capture_is_count) {
        let saved = shared.saved.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = saved.join("\n");
        text.push('\n');
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let ok = statuses
        .iter()
        .filter(|(s, _)| (200..400).contains(*s))
        .map(|(_, n)| n)
        .sum::<u64>();
    let non_ok = recorded - ok;
    let err_total: u64 = errors.values().sum();
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p);
    let summary = serde_json::json!({
        "label": args.label,
        "url": args.url,
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "target_rps": args.rate,
        "connections": args.connections,
        "achieved_rps": (recorded as f64 / span * 10.0).round() / 10.0,
        "requests": recorded,
        "ok": ok,
        "non_2xx_3xx": non_ok,
        "errors": err_total,
        "errors_by_kind": errors,
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "latency_us": {
            "p50": q(&latency, 0.5), "p90": q(&latency, 0.9), "p99": q(&latency, 0.99),
            "p999": q(&latency, 0.999), "max": latency.max(), "mean": latency.mean().round(),
        },
        "service_us": {
            "p50": q(&service, 0.5), "p99": q(&service, 0.99), "max": service.max(),
        },
        "generator_lateness_us": {
            "p50": q(&lateness, 0.5), "p99": q(&lateness, 0.99), "max": lateness.max(),
        },
        "header_hits": hits,
        "saved": shared.saved.lock().map(|s| s.len()).unwrap_or(0),
        "seconds": (span * 1000.0).round() / 1000.0,
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "rate: label={} mode={} target_rps={} achieved_rps={:.1} requests={} ok={} non_2xx_3xx={} errors={} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} service_p50_us={} service_p99_us={} late_p99_us={} header_hits={} seconds={:.3}",
            if args.label.is_empty() { "-" } else { &args.label },
            if args.rate.is_some() { "open" } else { "closed" },
            args.rate.map_or_else(|| "max".to_owned(), |r| format!("{r}")),
            recorded as f64 / span,
            recorded,
            ok,
            non_ok,
            err_total,
            q(&latency, 0.5),
            q(&latency, 0.9),
            q(&latency, 0.99),
            q(&latency, 0.999),
            latency.max(),
            q(&service, 0.5),
            q(&service, 0.99),
            q(&lateness, 0.99),
            hits,
            span,
        );
        if err_total > 0 {
            eprintln!("rate: errors by kind: {errors:?}");
        }
    }
    Ok(err_total == 0)
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("rate: {e}");
            ExitCode::from(2)
        }
    }
}
