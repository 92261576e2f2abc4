//! The crowd simulator end to end: `crowd loadtests/scenarios/smoke.toml --spawn` starts the
//! demo shop, a `redis-server` and two Flashgate nodes on free loopback ports, sends 2,000
//! shoppers at them over 20 s, and must report every persistent shopper admitted, no FIFO
//! inversion, entries within the rate (and its bank), active shoppers under the cap — and
//! write its result, report and plots.
//!
//! The `flashgate` binary belongs to another package, so the test builds it first (a no-op
//! after `cargo test --workspace`, which has built it already) next to this package's `crowd`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadtests/ has a parent")
        .to_path_buf()
}

/// Newest modification time of the files under `dir`.
fn newest(dir: &Path) -> Option<SystemTime> {
    let mut best = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        best = best.max(t);
    }
    best
}

/// The `flashgate` binary beside this package's `crowd` (same target dir and profile), built
/// first when it is missing or older than its sources. (`cargo test --workspace` has built it
/// already; building it again here with other feature unification would only relink it.)
fn flashgate() -> PathBuf {
    let crowd = Path::new(env!("CARGO_BIN_EXE_crowd"));
    let dir = crowd.parent().expect("crowd's directory");
    let bin = dir.join("flashgate");
    let root = workspace_root();
    let sources = ["proxy", "waitroom", "static"]
        .iter()
        .filter_map(|d| newest(&root.join(d).join(if *d == "static" { "" } else { "src" })))
        .max();
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if built.is_none() || sources > built {
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(p) => p.to_owned(),
        };
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "flashgate", "--bin", "flashgate"])
            .args(["--profile", &profile])
            .current_dir(&root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build -p flashgate failed");
    }
    assert!(bin.is_file(), "{} after the build", bin.display());
    bin
}

fn run_crowd(args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crowd"))
        .args(args)
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("crowd starts");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "crowd ran longer than {limit:?}\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn smoke_scenario_admits_everyone_in_order_within_rate_and_cap() {
    let bin = flashgate();
    let out = std::env::temp_dir().join(format!("crowd-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let started = Instant::now();
    let (code, stdout, stderr) = run_crowd(
        &[
            "loadtests/scenarios/smoke.toml",
            "--spawn",
            "--quiet",
            "--flashgate",
            bin.to_str().expect("utf-8 path"),
            "--out",
            out.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(120),
    );
    let took = started.elapsed();
    assert_eq!(code, 0, "crowd failed:\n{stdout}\n{stderr}");

    let text = std::fs::read_to_string(out.join("result.json")).expect("result.json written");
    let r: serde_json::Value = serde_json::from_str(&text).expect("result.json is JSON");
    assert_eq!(r["passed"], true, "{stdout}");
    assert_eq!(
        r["stopped_by"], "completed",
        "every shopper finished before the cap"
    );
    let names: Vec<&str> = r["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    for want in [
        "all persistent shoppers admitted",
        "no FIFO inversions",
        "entries per minute <= rate",
        "entries in any 10 s <= rate + bank",
        "active <= cap",
    ] {
        assert!(
            names.contains(&want),
            "check {want:?} missing from {names:?}"
        );
    }
    assert_eq!(r["counts"]["arrived"], 2000);
    assert_eq!(r["counts"]["persistent_not_admitted"], 0);
    assert_eq!(r["fifo"]["inversions"], 0);
    assert!(r["fifo"]["checked"].as_u64().expect("checked") > 1800);
    assert_eq!(r["cap"]["violations"], 0);
    // Entries in the busiest server minute and in any 10 s stay under the room's 3,600/min
    // (the 10 s bound adds one poll interval and the controller's bank).
    let busiest = r["rate"]["per_minute"]
        .as_object()
        .expect("per minute")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .max()
        .expect("entries");
    assert!(busiest <= 3600, "{busiest}");
    let most = r["rate"]["max_in_window"].as_f64().expect("window");
    let bound = r["rate"]["window_bound"].as_f64().expect("bound");
    assert!(most <= bound, "{most} > {bound}");
    assert!(r["redis"]["calls"].as_u64().expect("redis calls") > 0);

    for f in [
        "report.md",
        "rates.svg",
        "queue.svg",
        "active.svg",
        "wait.svg",
        "fifo.svg",
        "latency.svg",
    ] {
        let len = std::fs::metadata(out.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 500, "{f} written ({len} bytes)");
    }
    let report = std::fs::read_to_string(out.join("report.md")).expect("report");
    assert!(report.contains("## Checks: all passed"), "{report}");
    assert!(took < Duration::from_secs(90), "took {took:?}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn refuses_remote_targets_and_bad_scenarios() {
    let (code, _, stderr) = run_crowd(
        &[
            "loadtests/scenarios/smoke.toml",
            "--target",
            "http://192.0.2.10:8080",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("refusing to send load to 192.0.2.10"),
        "{stderr}"
    );

    let bad = std::env::temp_dir().join(format!("crowd-bad-{}.toml", std::process::id()));
    std::fs::write(
        &bad,
        "room = \"r\"\npath = \"/\"\n[[arrivals]]\nshoppers = 1\nover = \"1s\"\n[shopper]\nleave = 3\n",
    )
    .expect("write");
    let (code, _, stderr) = run_crowd(&[bad.to_str().expect("utf-8")], Duration::from_secs(30));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("shopper.leave: must be between 0 and 1"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(bad);
}
