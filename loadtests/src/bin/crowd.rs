//! `crowd`: the flash-sale crowd simulator.
//!
//! ```text
//! crowd loadtests/scenarios/smoke.toml --spawn          # starts shop, Redis, nodes itself
//! crowd loadtests/scenarios/launch.toml                 # against the scenario's targets
//! crowd my.toml --target http://127.0.0.1:8080 --admin http://127.0.0.1:9901 --out /tmp/run
//! ```
//!
//! Writes `result.json`, `report.md` and SVG plots to `--out` (default
//! `loadtests/results/tmp/crowd-<name>-<time>/`), prints a progress line every second, and
//! exits 0 when every check of the scenario passed, 1 when one failed, 2 when the run could not
//! be made (bad scenario, refused target, nothing to spawn).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use loadtests::crowd::analysis::{analyse, RedisFigures};
use loadtests::crowd::run::{execute, RunOptions};
use loadtests::crowd::scenario::Scenario;
use loadtests::crowd::spawn::{command_calls, redis_info, script_calls, used_memory, Fleet};
use loadtests::crowd::{plots, report};
use loadtests::target::check_target;

#[derive(Parser, Debug)]
#[command(name = "crowd", about = "Flash-sale crowd simulator for Flashgate")]
struct Args {
    /// The scenario file (TOML).
    scenario: PathBuf,
    /// Output directory for result.json, report.md and the plots.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start the shop, Redis and the Flashgate nodes described in the scenario's [spawn].
    #[arg(long)]
    spawn: bool,
    /// The flashgate binary for --spawn (default: next to this binary, then PATH).
    #[arg(long)]
    flashgate: Option<PathBuf>,
    /// Flashgate node(s), replacing the scenario's targets.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Admin API URL(s), replacing the scenario's.
    #[arg(long = "admin")]
    admin: Vec<String>,
    /// Multiply every arrival segment's shoppers (e.g. 0.1 for a quick rehearsal).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Allow targets that are not on this machine's loopback interface.
    #[arg(long)]
    allow_remote: bool,
}

fn flashgate_binary(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("--flashgate {}: no such file", p.display()))
        };
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let p = dir.join("flashgate");
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("flashgate");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err("no flashgate binary found: build it (cargo build --release -p flashgate) or pass --flashgate PATH".into())
}

fn default_out(name: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "");
    let base = if Path::new("loadtests").is_dir() {
        PathBuf::from("loadtests/results/tmp")
    } else {
        PathBuf::from(".")
    };
    base.join(format!("crowd-{name}-{stamp}"))
}

async fn redis_snapshot(url: &str) -> Option<(std::collections::BTreeMap<String, u64>, u64)> {
    let stats = redis_info(url, "commandstats").await.ok()?;
    let mem = redis_info(url, "memory").await.ok()?;
    Some((command_calls(&stats), used_memory(&mem).unwrap_or(0)))
}

async fn main_async(args: Args) -> Result<bool, String> {
    if !(args.scale > 0.0 && args.scale <= 10.0) {
        return Err("--scale must be > 0 and at most 10".into());
    }
    let mut sc = Scenario::load(&args.scenario, args.allow_remote).map_err(|e| e.to_string())?;
    let check = |list: &[String]| {
        list.iter()
            .map(|u| check_target(u, args.allow_remote).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()
    };
    if !args.targets.is_empty() {
        sc.targets = check(&args.targets)?;
    }
    if !args.admin.is_empty() {
        sc.admin = check(&args.admin)?;
    }
    let out = args.out.clone().unwrap_or_else(|| default_out(&sc.name));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;

    // Spawned runs: event times in the room count from the first arrival, planned a few
    // seconds ahead (on a whole second) so that the nodes are up by then.
    let mut fleet = None;
    let mut spawned = None;
    if args.spawn {
        let spec = sc
            .spawn
            .clone()
            .ok_or_else(|| format!("{}: --spawn needs a [spawn] table", sc.file))?;
        let bin = flashgate_binary(args.flashgate.clone())?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|e| e.to_string())?;
        // Only rooms with event times need the arrivals to start on a planned second.
        let margin = if spec.room.contains("{{t+") { 6 } else { 0 };
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs() + margin);
        // Ctrl-C while starting drops the half-started fleet, which stops what it started.
        let f = tokio::select! {
            f = Fleet::start(&spec, &sc.room, &bin, start, &out) => f?,
            _ = tokio::signal::ctrl_c() => return Err("interrupted".into()),
        };
        sc.targets = f.targets.clone();
        sc.admin = f.admin.clone();
        spawned = Some(f.summary.clone());
        if !args.quiet {
            eprintln!("crowd: {}", f.summary);
        }
        match start.duration_since(SystemTime::now()) {
            Ok(wait) => tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tokio::signal::ctrl_c() => return Err("interrupted".into()),
            },
            Err(_) if margin == 0 => {}
            Err(_) => eprintln!(
                "crowd: the fleet took more than 6 s to start; event times in the room are early by {:?}",
                SystemTime::now().duration_since(start).unwrap_or_default()
            ),
        }
        fleet = Some(f);
    }
    let redis_url = fleet.as_ref().and_then(|f| f.redis_url.clone());
    let before = match &redis_url {
        Some(u) => redis_snapshot(u).await,
        None => None,
    };

    if !args.quiet {
        eprintln!(
            "crowd: {} — {} shoppers against {} node(s), at most {} s and {} requests; output in {}",
            sc.name,
            (sc.total_shoppers() as f64 * args.scale).round(),
            sc.targets.len(),
            sc.max_duration.as_secs(),
            sc.max_requests,
            out.display()
        );
    }
    let opts = RunOptions {
        scale: args.scale,
        progress: !args.quiet,
    };
    let output = execute(sc, &opts).await?;

    let redis = match (&redis_url, before) {
        (Some(u), Some((b, _))) => redis_snapshot(u).await.map(|(a, mem)| {
            let by_command: std::collections::BTreeMap<String, u64> = a
                .iter()
                .filter(|(k, _)| k.as_str() != "info")
                .map(|(k, v)| (k.clone(), v.saturating_sub(b.get(k).copied().unwrap_or(0))))
                .filter(|(_, v)| *v > 0)
                .collect();
            let calls = script_calls(&by_command);
            let arrivals = output.records.len().max(1) as f64;
            let requests = output
                .run
                .metrics
                .requests_total
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(1) as f64;
            RedisFigures {
                calls,
                per_arrival: (calls as f64 / arrivals * 1000.0).round() / 1000.0,
                per_request: (calls as f64 / requests * 10_000.0).round() / 10_000.0,
                used_memory_bytes: mem,
                by_command,
            }
        }),
        _ => None,
    };
    if let Some(mut f) = fleet.take() {
        f.stop();
    }

    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let result = analyse(&output, &command, spawned, redis);
    let json = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
    std::fs::write(out.join("result.json"), json).map_err(|e| format!("result.json: {e}"))?;
    let plot_files = plots::write_all(&out, &result)?;
    std::fs::write(
        out.join("report.md"),
        report::markdown(&result, &plot_files),
    )
    .map_err(|e| format!("report.md: {e}"))?;

    println!(
        "crowd: {} in {:.1} s ({}): {} arrived, {} admitted, {} gave up, {} requests",
        result.scenario,
        result.duration_s,
        result.stopped_by,
        result.counts.arrived,
        result.counts.admitted,
        result.counts.gave_up,
        result.requests
    );
    for c in &result.checks {
        println!(
            "  {} {}: {}",
            if c.passed { "pass" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    println!("  report: {}", out.join("report.md").display());
    Ok(result.passed)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crowd: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(main_async(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("crowd: {e}");
            ExitCode::from(2)
        }
    }
}
