//! A real `flashgate run` process: started on a [`Config`], awaited until it answers, its
//! stderr captured line by line (and echoed, so a failing test shows it), killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{shopper, wait_for, wait_until, Config, Metrics, ADMIN_TOKEN_ENV, DEADLINE};

/// The `flashgate` binary of this build: `FLASHGATE_BIN` if set, else next to the test
/// executable's `deps/` directory, where cargo puts it before it runs the package's
/// integration tests.
pub fn flashgate_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("FLASHGATE_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().expect("the test executable's directory");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("the profile directory")
    } else {
        dir
    };
    let bin = dir.join(format!("flashgate{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "no flashgate binary at {} (build it, or set FLASHGATE_BIN)",
        bin.display()
    );
    bin
}

/// Runs the `flashgate` binary to its end (a CLI command); `env` is added to the environment
/// and an admin token or log filter the test's own environment may hold is not passed on.
pub fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(flashgate_bin());
    c.args(args)
        .env_remove("FLASHGATE_ADMIN_TOKEN")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run flashgate")
}

/// When [`Node::launch`] returns.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Both listeners answer and `/readyz` says ready (the store answers too).
    #[default]
    Ready,
    /// Both listeners answer (`/healthz`); the store may still be unreachable.
    Listening,
}

/// How a node is started, beyond its config.
#[derive(Debug, Default, Clone)]
pub struct Launch {
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// `RUST_LOG`; `warn` when unset.
    pub rust_log: Option<&'static str>,
    pub ready: Ready,
}

impl Launch {
    /// With `RUST_LOG` set to `filter`.
    pub fn log(filter: &'static str) -> Self {
        Self {
            rust_log: Some(filter),
            ..Self::default()
        }
    }

    /// With one more environment variable.
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A running `flashgate run`.
#[derive(Debug)]
pub struct Node {
    child: Option<Child>,
    /// The public listener, e.g. `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin listener.
    pub admin: String,
    /// The config file (rewrite it, then reload).
    pub config: PathBuf,
    /// What it was started with.
    pub cfg: Config,
    pub launch: Launch,
    logs: Arc<Mutex<Vec<String>>>,
    /// The thread that reads the current process's stderr into `logs`.
    reader: Option<std::thread::JoinHandle<()>>,
    /// The first process of a config owns its temp dir; an upgraded one shares it.
    owns_dir: bool,
}

impl Node {
    /// Starts a node on `cfg` (log level `warn`) and waits until it is ready.
    pub async fn start(cfg: &Config) -> Self {
        Self::launch(cfg, Launch::default()).await
    }

    /// Starts a node on `cfg` as `how` says and waits as `how.ready` says.
    pub async fn launch(cfg: &Config, how: Launch) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "flashgate-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("flashgate.toml");
        std::fs::write(&config, cfg.render()).expect("write config");
        let mut node = Self {
            child: None,
            base: cfg.base(),
            admin: cfg.admin(),
            config,
            cfg: cfg.clone(),
            launch: how,
            logs: Arc::default(),
            reader: None,
            owns_dir: true,
        };
        node.spawn(false);
        node.wait_started().await;
        node
    }

    /// `N` nodes of one fleet, each on `cfg` with ports of its own (give `cfg` a Redis store),
    /// started one after the other.
    pub async fn fleet<const N: usize>(cfg: &Config) -> [Self; N] {
        let mut nodes = Vec::with_capacity(N);
        for _ in 0..N {
            nodes.push(Self::start(&cfg.clone().fresh_ports()).await);
        }
        nodes.try_into().expect("N nodes")
    }

    /// Starts `flashgate run -c config` (with `--upgrade` when asked), stderr captured.
    fn spawn(&mut self, upgrade: bool) {
        let mut cmd = Command::new(flashgate_bin());
        cmd.args(["run", "-c"])
            .arg(&self.config)
            .env("RUST_LOG", self.launch.rust_log.unwrap_or("warn"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if upgrade {
            cmd.arg("--upgrade");
        }
        if let Some(token) = &self.cfg.base.server.admin_token {
            cmd.env(ADMIN_TOKEN_ENV, token);
        }
        for (k, v) in &self.launch.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn flashgate");
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = self.logs.clone();
        let pid = child.id();
        // The reader thread inherits the test's output capture: the lines show when it fails.
        self.reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[flashgate {pid}] {line}");
                sink.lock().expect("log lock").push(line);
            }
        }));
        self.child = Some(child);
    }

    async fn wait_started(&mut self) {
        let c = reqwest::Client::new();
        let asset = format!("{}/.flashgate/assets/waiting.css", self.base);
        let probe = match self.launch.ready {
            Ready::Ready => format!("{}/readyz", self.admin),
            Ready::Listening => format!("{}/healthz", self.admin),
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            let a = c.get(&asset).send().await.map(|r| r.status().is_success());
            let b = c.get(&probe).send().await.map(|r| r.status().is_success());
            if matches!((a, b), (Ok(true), Ok(true))) {
                return;
            }
            assert!(
                self.is_running(),
                "flashgate exited before it was ready; its log:\n{}",
                self.log_text()
            );
            assert!(
                Instant::now() < deadline,
                "flashgate did not become ready in {DEADLINE:?}; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A second process on the same config, started with `--upgrade`: it waits for this one
    /// to hand its listening sockets over (on SIGQUIT). Not awaited: the sockets are not its
    /// own until then.
    pub fn upgrade(&self) -> Self {
        let mut next = Self {
            child: None,
            base: self.base.clone(),
            admin: self.admin.clone(),
            config: self.config.clone(),
            cfg: self.cfg.clone(),
            launch: self.launch.clone(),
            logs: Arc::default(),
            reader: None,
            owns_dir: false,
        };
        next.spawn(true);
        next
    }

    /// SIGKILL: no graceful shutdown, no goodbye to anyone. Waits for the process to end and
    /// for its last log line to be read.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Kills the node and starts it again on the same config and ports; its log goes on.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn(false);
        self.wait_started().await;
    }

    /// SIGTERM, then waits (up to `within`) for a graceful exit; whether it exited successfully.
    pub async fn stop(&mut self, within: Duration) -> bool {
        self.signal("TERM");
        self.wait_exit(within).await
    }

    /// Writes `cfg` as the node's config file (it takes effect on reload).
    pub fn rewrite(&self, cfg: &Config) {
        std::fs::write(&self.config, cfg.render()).expect("rewrite config");
    }

    /// The process id (for signals and `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    /// Whether the process is still running (a panic that aborts, or an exit, ends it).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` (e.g. "HUP", "KILL", "QUIT") with kill(1).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1) on PATH")
            .success();
        assert!(ok, "kill -{signal} {}", self.pid());
    }

    /// Waits for the process to exit by itself; returns whether it exited successfully.
    pub async fn wait_exit(&mut self, within: Duration) -> bool {
        let child = self.child.as_mut().expect("node running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "flashgate did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its stderr so far, a line an entry (across restarts).
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Its stderr so far as one text.
    pub fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    /// Waits for a log line that satisfies `pred`; returns it.
    pub async fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_until(&format!("a log line for {what}"), DEADLINE, || {
            self.logs
                .lock()
                .expect("log lock")
                .iter()
                .find(|l| pred(l))
                .cloned()
        })
        .await
    }

    /// Panics if its stderr shows a Rust panic.
    pub fn assert_no_panic(&self) {
        let log = self.log_text();
        assert!(!log.contains("panicked"), "flashgate panicked:\n{log}");
    }

    /// The resident set size in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// A client that keeps cookies, like a browser, and does not follow redirects.
    pub fn shopper(&self) -> reqwest::Client {
        shopper::browser()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The room's status as the waiting page asks for it; must answer 200.
    pub async fn status(&self, c: &reqwest::Client, room: &str) -> Value {
        shopper::status(self, c, room).await
    }

    /// Polls the room's status (every 10 ms) until `cond` holds — a live change reached this
    /// node, say; returns that status. Panics after `within`.
    pub async fn wait_status(
        &self,
        c: &reqwest::Client,
        room: &str,
        within: Duration,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let st = self.status(c, room).await;
            if cond(&st) {
                return st;
            }
            assert!(Instant::now() < deadline, "{room}: not in {within:?}: {st}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls the room's status as a waiting page would (at the pace it is told, at most every
    /// 500 ms) until the shopper is admitted; returns that status. Panics after `within`.
    pub async fn wait_admitted(&self, c: &reqwest::Client, room: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let st = self.status(c, room).await;
            if st["admitted"] == true {
                return st;
            }
            assert!(Instant::now() < deadline, "not admitted in time: {st}");
            let after = st["poll_after_ms"].as_u64().unwrap_or(1000).min(500);
            tokio::time::sleep(Duration::from_millis(after)).await;
        }
    }

    /// Waits as a waiting page does until admitted to `room`, then GETs `path` — polling again
    /// if the entry was refused — until the pass cookie `fg_p_ROOM` is set; returns that reply.
    /// Panics after `within`.
    pub async fn enter_when_admitted(
        &self,
        c: &reqwest::Client,
        room: &str,
        path: &str,
        within: Duration,
    ) -> shopper::Reply {
        let deadline = Instant::now() + within;
        let cookie = format!("fg_p_{room}");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_admitted(c, room, left).await;
            let r = shopper::get(c, &self.url(path), &[]).await;
            if r.set_cookie(&cookie).is_some() {
                return r;
            }
            assert!(Instant::now() < deadline, "{room}: no pass: {}", r.status);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An admin request, with the bearer token when the node has one: (status, JSON body, or
    /// the text as a JSON string).
    pub async fn admin_req(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = reqwest::Client::new().request(m, format!("{}{path}", self.admin));
        if let Some(t) = &self.cfg.base.server.admin_token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("admin reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("admin body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    /// The admin report of `room`.
    pub async fn room(&self, room: &str) -> Value {
        let (code, v) = self
            .admin_req("GET", &format!("/api/rooms/{room}"), None)
            .await;
        assert_eq!(code, 200, "GET room {room}: {v}");
        v
    }

    /// A live change to `room` (must succeed); returns the new report.
    pub async fn patch_room(&self, room: &str, body: Value) -> Value {
        let (code, v) = self
            .admin_req("PATCH", &format!("/api/rooms/{room}"), Some(body))
            .await;
        assert_eq!(code, 200, "PATCH {room}: {v}");
        v
    }

    /// Polls the admin report of `room` until `cond` holds.
    pub async fn wait_room(&self, room: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let r = self.room(room).await;
            if cond(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {r}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The node's Prometheus text.
    pub async fn metrics_text(&self) -> String {
        let mut r = reqwest::Client::new().get(format!("{}/metrics", self.admin));
        if let Some(t) = &self.cfg.base.server.admin_token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.expect("admin reachable");
        assert_eq!(resp.status(), 200, "GET /metrics");
        resp.text().await.expect("metrics text")
    }

    /// The node's metrics, parsed.
    pub async fn metrics(&self) -> Metrics {
        Metrics::parse(&self.metrics_text().await)
    }

    /// The value of one metric sample (`name{labels}` as written on the page; 0 if absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        self.metrics().await.value(sample)
    }

    /// The status code of `/readyz` (0 when the admin listener does not answer).
    pub async fn readyz(&self) -> u16 {
        reqwest::get(format!("{}/readyz", self.admin))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Waits until `/readyz` answers `code`.
    pub async fn wait_readyz(&self, code: u16) {
        wait_for(&format!("/readyz {code}"), DEADLINE, || async {
            self.readyz().await == code
        })
        .await;
    }

    /// The directory of its config file (for certificates and event files next to it).
    pub fn dir(&self) -> &Path {
        self.config.parent().expect("config dir")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if self.owns_dir {
            if let Some(dir) = self.config.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
