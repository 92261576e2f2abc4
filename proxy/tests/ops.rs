//! Operations end to end, against a real `flashgate run` process and a real origin on ephemeral
//! loopback ports: hot reload (SIGHUP and `POST /api/reload`) under load, refused reloads, the
//! admin API and its token, audit logs, `/readyz`, `/metrics`, the `flashgate` CLI, the TLS
//! listener (HTTPS, HTTP/2, `Secure` cookies, certificate rotation), graceful shutdown on
//! SIGTERM, and logs that never carry a secret.
//!
//! Nothing here waits by sleeping: every wait polls for the state it needs, with a deadline.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{free_port, get_json, SECRET};
use flashgate::shop::{Shop, ShopConfig};
use serde_json::{json, Value};
use tokio::sync::oneshot;

const BIN: &str = env!("CARGO_BIN_EXE_flashgate");
const TOKEN_ENV: &str = "FG_OPS_ADMIN_TOKEN";
const ADMIN_TOKEN: &str = "ops-admin-token-7f3a9c2e1b5d4a60";

/// A room on the origin's `/echo`, with `rate` and `message` to change on reload.
fn room(id: &str, path: &str, rate: u32, message: &str) -> String {
    format!(
        r#"
[[rooms]]
id = "{id}"
paths = ["{path}"]
new_users_per_minute = {rate}
total_active_users = 1000
poll_interval = "1s"
abandon_after = "30s"
claim_window = "10s"
queueing_status_code = 202
message = "{message}"
"#
    )
}

/// The demo shop with `latency` before every response, on an ephemeral port.
struct Origin {
    shop: Shop,
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Origin {
    async fn start(latency: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let shop = Shop::new(ShopConfig {
            latency,
            ..ShopConfig::demo()
        });
        let (tx, rx) = oneshot::channel::<()>();
        let s = shop.clone();
        tokio::spawn(async move {
            let _ = s
                .serve(listener, async move {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            shop,
            addr,
            _stop: tx,
        }
    }
}

/// What a node is started with; `server` lines go into `[server]`, `store` is the body of
/// `[store]`, `extra` follows the routes (rooms).
#[derive(Clone, Default)]
struct Setup {
    server: String,
    store: Option<String>,
    extra: String,
    token: bool,
    tls: Option<(PathBuf, PathBuf)>,
    rust_log: Option<&'static str>,
    /// The signing key from this environment variable (set in `env`) instead of inline.
    secret_env: Option<&'static str>,
    env: Vec<(String, String)>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A running `flashgate run` with its stderr captured line by line (and echoed, so a failing
/// test shows it).
struct Node {
    child: Child,
    port: u16,
    admin_port: u16,
    tls_port: u16,
    origin: SocketAddr,
    base: String,
    admin: String,
    config: PathBuf,
    dir: PathBuf,
    token: Option<String>,
    logs: Arc<Mutex<Vec<String>>>,
    setup: Setup,
    /// The first process of a config owns its temp dir; an upgraded one shares it.
    owns_dir: bool,
}

/// Starts `flashgate run -c config` (with `--upgrade` when asked), stderr captured.
fn spawn(config: &Path, setup: &Setup, upgrade: bool) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "-c"])
        .arg(config)
        .env("RUST_LOG", setup.rust_log.unwrap_or("info"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if upgrade {
        cmd.arg("--upgrade");
    }
    if setup.token {
        cmd.env(TOKEN_ENV, ADMIN_TOKEN);
    }
    for (k, v) in &setup.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn flashgate");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().expect("piped stderr");
    let sink = logs.clone();
    let pid = child.id();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[flashgate {pid}] {line}");
            sink.lock().expect("log lock").push(line);
        }
    });
    (child, logs)
}

fn config_text(node: &Node, s: &Setup) -> String {
    config_for(node.port, node.admin_port, node.tls_port, node.origin, s)
}

fn config_for(port: u16, admin: u16, tls_port: u16, origin: SocketAddr, s: &Setup) -> String {
    let token = if s.token {
        format!("admin_token_env = \"{TOKEN_ENV}\"\n")
    } else {
        String::new()
    };
    let tls = s.tls.as_ref().map_or(String::new(), |(cert, key)| {
        format!(
            "tls_listen = [\"127.0.0.1:{tls_port}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        )
    });
    let secret = s.secret_env.map_or_else(
        || format!("secret = \"{SECRET}\""),
        |var| format!("secret_env = \"{var}\""),
    );
    let store = s
        .store
        .clone()
        .unwrap_or_else(|| "snapshot_interval = \"50ms\"".to_owned());
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
admin_listen = "127.0.0.1:{admin}"
threads = 2
{token}{tls}{server}

[keys]
active = 1
[[keys.key]]
id = 1
{secret}

[store]
{store}

[upstreams.shop]
servers = ["{origin}"]
connect_timeout = "500ms"
read_timeout = "10s"

[[routes]]
path = "/"
upstream = "shop"

{extra}
"#,
        server = s.server,
        extra = s.extra,
    )
}

impl Node {
    async fn start(origin: SocketAddr, setup: &Setup) -> Self {
        let (port, admin_port, tls_port) = (free_port(), free_port(), free_port());
        let dir = std::env::temp_dir().join(format!(
            "flashgate-ops-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("flashgate.toml");
        std::fs::write(
            &config,
            config_for(port, admin_port, tls_port, origin, setup),
        )
        .expect("write config");
        let (child, logs) = spawn(&config, setup, false);
        let node = Self {
            child,
            port,
            admin_port,
            tls_port,
            origin,
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            config,
            dir,
            token: setup.token.then(|| ADMIN_TOKEN.to_owned()),
            logs,
            setup: setup.clone(),
            owns_dir: true,
        };
        node.wait_up().await;
        node
    }

    /// A second process on the same config, started with `--upgrade`: it waits for this one
    /// to hand its listening sockets over (on SIGQUIT).
    fn upgrade(&self) -> Self {
        let (child, logs) = spawn(&self.config, &self.setup, true);
        Self {
            child,
            port: self.port,
            admin_port: self.admin_port,
            tls_port: self.tls_port,
            origin: self.origin,
            base: self.base.clone(),
            admin: self.admin.clone(),
            config: self.config.clone(),
            dir: self.dir.clone(),
            token: self.token.clone(),
            logs,
            setup: self.setup.clone(),
            owns_dir: false,
        }
    }

    /// Both listeners answer (readiness of the store is a separate question: `/readyz`).
    async fn wait_up(&self) {
        let c = reqwest::Client::new();
        let asset = format!("{}/.flashgate/assets/waiting.css", self.base);
        let health = format!("{}/healthz", self.admin);
        wait_for("flashgate to listen", Duration::from_secs(30), || async {
            let a = c.get(&asset).send().await.map(|r| r.status().is_success());
            let b = c.get(&health).send().await.map(|r| r.status().is_success());
            matches!((a, b), (Ok(true), Ok(true)))
        })
        .await;
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .expect("kill(1) on PATH")
            .success();
        assert!(ok, "kill {sig} {}", self.pid());
    }

    fn rewrite(&self, setup: &Setup) {
        std::fs::write(&self.config, config_text(self, setup)).expect("rewrite config");
    }

    /// An admin request, with the bearer token when the node has one.
    async fn admin_req(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let c = reqwest::Client::new();
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = c.request(m, format!("{}{path}", self.admin));
        if let Some(t) = &self.token {
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

    async fn room(&self, id: &str) -> Value {
        let (code, v) = self
            .admin_req("GET", &format!("/api/rooms/{id}"), None)
            .await;
        assert_eq!(code, 200, "GET room {id}: {v}");
        v
    }

    async fn metrics(&self) -> String {
        let c = reqwest::Client::new();
        let mut r = c.get(format!("{}/metrics", self.admin));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.expect("admin reachable");
        assert_eq!(resp.status(), 200);
        resp.text().await.expect("metrics text")
    }

    fn log_lines(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Waits for a log line that satisfies `pred`; returns it.
    async fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.log_lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            assert!(Instant::now() < deadline, "no log line for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit by itself; returns whether it exited successfully.
    async fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "flashgate did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `cond` until it holds (deadline).
async fn wait_for<F, Fut>(what: &str, within: Duration, cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the `flashgate` binary; `env` is added to the environment.
fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("FLASHGATE_ADMIN_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run flashgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Clients that hit the gate in a loop until stopped: a room path (each request a new
/// arrival) and an unprotected origin path, over keep-alive connections. Counts successes;
/// any transport error or 5xx is recorded. With `retry`, a GET whose reused connection was
/// closed under it is sent once more, as browsers do — and counted as a retry.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    retries: Arc<Mutex<Vec<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(base: &str, clients: usize, retry: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let retries = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|i| {
                let (stop, ok) = (stop.clone(), ok.clone());
                let (retries, errors) = (retries.clone(), errors.clone());
                let url = if i % 2 == 0 {
                    format!("{base}/echo")
                } else {
                    format!("{base}/products")
                };
                tokio::spawn(async move {
                    let c = reqwest::Client::new(); // keep-alive connections
                                                    // Bounded: the loop ends when stopped, or after 20 000 requests at most.
                    for _ in 0..20_000 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let mut sent = c.get(&url).send().await;
                        if let (true, Err(e)) = (retry, &sent) {
                            retries.lock().expect("lock").push(format!("{url}: {e:?}"));
                            sent = c.get(&url).send().await;
                        }
                        match sent {
                            Ok(r) if r.status().as_u16() < 500 => {
                                let _ = r.bytes().await;
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => errors
                                .lock()
                                .expect("lock")
                                .push(format!("{url}: {}", r.status())),
                            Err(e) => errors.lock().expect("lock").push(format!("{url}: {e:?}")),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            retries,
            errors,
            tasks,
        }
    }

    fn count(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests have succeeded.
    async fn advance(&self, n: u64) {
        let target = self.count() + n;
        wait_for("the load to advance", Duration::from_secs(30), || async {
            self.count() >= target
        })
        .await;
    }

    /// Stops the clients: (successes, retries, errors).
    async fn finish(self) -> (u64, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let retries = self.retries.lock().expect("lock").clone();
        let errors = self.errors.lock().expect("lock").clone();
        (self.ok.load(Ordering::Relaxed), retries, errors)
    }
}

// ---------------------------------------------------------------------------------------------
// Hot reload
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_by_sighup_and_api_under_load_drops_nothing() {
    // A slow origin keeps requests in flight at every moment of the reloads.
    let origin = Origin::start(Duration::from_millis(40)).await;
    let mut setup = Setup {
        extra: room("drop", "/echo", 6000, "before"),
        ..Setup::default()
    };
    let node = Node::start(origin.addr, &setup).await;
    assert_eq!(node.room("drop").await["new_users_per_minute"], 6000);

    let load = Load::start(&node.base, 4, false);
    load.advance(20).await;

    // A request already at the origin when the reload lands finishes normally.
    let before = origin.shop.stats().requests;
    let slow = tokio::spawn({
        let url = format!("{}/products", node.base);
        async move { reqwest::get(url).await.map(|r| r.status().as_u16()) }
    });
    wait_for(
        "the slow request to reach the origin",
        Duration::from_secs(10),
        || async { origin.shop.stats().requests > before },
    )
    .await;

    // 1. SIGHUP: a new rate, a new message, a new room.
    setup.extra = format!(
        "{}{}",
        room("drop", "/echo", 7000, "after SIGHUP"),
        room("extra", "/cart", 30, "new room")
    );
    node.rewrite(&setup);
    node.signal("-HUP");
    node.wait_log("the SIGHUP reload", |l| {
        l.contains("flashgate::audit")
            && l.contains("by=\"SIGHUP\"")
            && l.contains("reloaded")
            && l.contains("2 rooms")
    })
    .await;
    let r = node.room("drop").await;
    assert_eq!(r["new_users_per_minute"], 7000, "{r}");
    assert_eq!(r["message"], "after SIGHUP");
    assert_eq!(node.room("extra").await["new_users_per_minute"], 30);
    assert_eq!(
        slow.await.expect("task").ok(),
        Some(200),
        "in-flight request"
    );
    load.advance(20).await;

    // 2. The admin API: answers only once the new config is in force.
    setup.extra = format!(
        "{}{}",
        room("drop", "/echo", 7000, "after API"),
        room("extra", "/cart", 45, "new room")
    );
    node.rewrite(&setup);
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["reloaded"], true);
    assert!(
        body["summary"]
            .as_str()
            .is_some_and(|s| s.contains("2 rooms")),
        "{body}"
    );
    assert_eq!(node.room("drop").await["message"], "after API");
    assert_eq!(node.room("extra").await["new_users_per_minute"], 45);
    // The new room gates its path at once.
    let (code, st, _) = get_json(&reqwest::Client::new(), &format!("{}/cart", node.base)).await;
    assert!(code == 200 || code == 202, "{code} {st}");
    load.advance(20).await;

    // A reload touches no connection: not even a keep-alive race, so no retry at all.
    let (ok, _, errors) = load.finish().await;
    assert!(
        errors.is_empty(),
        "requests failed during reloads: {errors:?}"
    );
    assert!(ok >= 60, "the load ran ({ok} requests)");
    let m = node.metrics().await;
    assert!(
        m.contains("flashgate_reloads_total{result=\"ok\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_refuses_bad_files_and_restart_only_changes() {
    let origin = Origin::start(Duration::ZERO).await;
    let mut setup = Setup {
        extra: room("drop", "/echo", 60, "steady"),
        ..Setup::default()
    };
    let node = Node::start(origin.addr, &setup).await;
    let file = node.config.display().to_string();

    // An invalid value: refused with FILE: dotted.key: reason, the old config stays.
    setup.extra = room("drop", "/echo", 0, "steady");
    node.rewrite(&setup);
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    let expected = format!("{file}: rooms[0].new_users_per_minute: must be > 0");
    assert_eq!(code, 422);
    assert_eq!(body["error"], expected.as_str());
    assert_eq!(node.room("drop").await["new_users_per_minute"], 60);
    let line = node
        .wait_log("the refused API reload", |l| {
            l.contains("reload refused") && l.contains("by=\"admin API\"")
        })
        .await;
    assert!(line.contains(&expected), "{line}");

    // The same through SIGHUP: the log says it, and why.
    node.signal("-HUP");
    let line = node
        .wait_log("the refused SIGHUP reload", |l| {
            l.contains("reload refused") && l.contains("by=\"SIGHUP\"")
        })
        .await;
    assert!(line.contains(&expected), "{line}");
    assert!(line.contains("ERROR"), "logged as an error: {line}");
    assert_eq!(node.room("drop").await["new_users_per_minute"], 60);

    // A syntax error names the file and the position.
    std::fs::write(&node.config, "[server\nlisten = 1").expect("write");
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 422);
    let msg = body["error"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(&format!("{file}: ")) && msg.contains("line 1"),
        "{msg}"
    );

    // A new listen address needs a restart: refused, and the node still serves the old one.
    let moved = free_port();
    let text = config_text(&node, &setup).replace(
        &format!("listen = [\"127.0.0.1:{}\"]", node.port),
        &format!("listen = [\"127.0.0.1:{moved}\"]"),
    );
    let text = text.replace("new_users_per_minute = 0", "new_users_per_minute = 60");
    std::fs::write(&node.config, text).expect("write");
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 422);
    assert_eq!(
        body["error"],
        format!(
            "{file}: server.listen: needs a restart (`flashgate run --upgrade` hands the sockets over)"
        )
        .as_str()
    );
    let r = reqwest::get(format!("{}/products", node.base))
        .await
        .expect("old listener still serves");
    assert_eq!(r.status(), 200);
    assert!(reqwest::get(format!("http://127.0.0.1:{moved}/products"))
        .await
        .is_err());

    // So does the catalog cache's size (the cache is built at start); a restart message again.
    setup.extra = format!(
        "{}\n[cache]\nmax_bytes = \"64MiB\"\n",
        room("drop", "/echo", 60, "steady")
    );
    node.rewrite(&setup);
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 422);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("{file}: cache: needs a restart"))),
        "{body}"
    );

    // The same file without the listener change reloads.
    setup.extra = room("drop", "/echo", 61, "steady");
    node.rewrite(&setup);
    let (code, _) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 200);
    assert_eq!(node.room("drop").await["new_users_per_minute"], 61);
    let m = node.metrics().await;
    assert!(
        m.contains("flashgate_reloads_total{result=\"refused\"} 5"),
        "{m}"
    );
    assert!(
        m.contains("flashgate_reloads_total{result=\"ok\"} 1"),
        "{m}"
    );
}

// ---------------------------------------------------------------------------------------------
// Admin API
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_api_needs_the_token_and_audits_changes() {
    let origin = Origin::start(Duration::ZERO).await;
    let setup = Setup {
        token: true,
        extra: room("drop", "/echo", 60, "hello"),
        ..Setup::default()
    };
    let node = Node::start(origin.addr, &setup).await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", node.admin);

    // Health and readiness are for probes: no token.
    for p in ["/healthz", "/readyz"] {
        let r = c.get(url(p)).send().await.expect("probe");
        assert_eq!(r.status(), 200, "{p}");
    }
    // Everything else: 401 without the token, with a wrong one, or with another scheme.
    for (m, p) in [
        ("GET", "/metrics"),
        ("GET", "/api/rooms"),
        ("GET", "/api/rooms/drop"),
        ("PATCH", "/api/rooms/drop"),
        ("POST", "/api/reload"),
        ("POST", "/api/cache/purge"),
    ] {
        let m = reqwest::Method::from_bytes(m.as_bytes()).expect("method");
        let none = c.request(m.clone(), url(p)).send().await.expect("admin");
        assert_eq!(none.status(), 401, "{m} {p} without a token");
        let body: Value = none.json().await.expect("json error");
        assert_eq!(body["error"], "missing or wrong bearer token");
        let wrong = c
            .request(m.clone(), url(p))
            .bearer_auth("ops-admin-token-7f3a9c2e1b5d4a61")
            .send()
            .await
            .expect("admin");
        assert_eq!(wrong.status(), 401, "{m} {p} with a wrong token");
        let basic = c
            .request(m, url(p))
            .header("authorization", format!("Basic {ADMIN_TOKEN}"))
            .send()
            .await
            .expect("admin");
        assert_eq!(basic.status(), 401, "{p} with another scheme");
    }

    // PATCH: applied, visible on GET, audited with who, before and after.
    let (code, after) = node
        .admin_req(
            "PATCH",
            "/api/rooms/drop",
            Some(json!({"new_users_per_minute": 90, "message": "Back at 6"})),
        )
        .await;
    assert_eq!(code, 200, "{after}");
    let r = node.room("drop").await;
    assert_eq!(r["new_users_per_minute"], 90);
    assert_eq!(r["message"], "Back at 6");
    let audit = node
        .wait_log("the audit line", |l| {
            l.contains("flashgate::audit") && l.contains("room overrides changed")
        })
        .await;
    assert!(
        audit.contains("room=\"drop\"") || audit.contains("room=drop"),
        "{audit}"
    );
    assert!(audit.contains("actor=admin:"), "who changed it: {audit}");
    assert!(
        audit.contains("new_users_per_minute: None"),
        "before: {audit}"
    );
    assert!(
        audit.contains("new_users_per_minute: Some(90)"),
        "after: {audit}"
    );
    assert!(!audit.contains(ADMIN_TOKEN), "never the token itself");

    // Bad requests get clear answers.
    let send = |m: &str, p: &str, body: &'static str| {
        let m = reqwest::Method::from_bytes(m.as_bytes()).expect("method");
        c.request(m, url(p))
            .bearer_auth(ADMIN_TOKEN)
            .body(body)
            .send()
    };
    let r = send("PATCH", "/api/rooms/drop", "{not json")
        .await
        .expect("admin");
    assert_eq!(r.status(), 400);
    let r = send("PATCH", "/api/rooms/drop", r#"{"pause": true}"#)
        .await
        .expect("admin");
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "pause: unknown field"
    );
    let r = send("PATCH", "/api/rooms/drop", r#"{"new_users_per_minute": 0}"#)
        .await
        .expect("admin");
    assert_eq!(r.status(), 422);
    let r = send("GET", "/api/rooms/nope", "").await.expect("admin");
    assert_eq!(r.status(), 404);
    let r = send("DELETE", "/api/rooms/drop", "").await.expect("admin");
    assert_eq!(r.status(), 405);
    let r = send("GET", "/api/nothing", "").await.expect("admin");
    assert_eq!(r.status(), 404);
    // Nothing of that changed the room.
    assert_eq!(node.room("drop").await["new_users_per_minute"], 90);
    let (code, rooms) = node.admin_req("GET", "/api/rooms", None).await;
    assert_eq!(code, 200);
    assert_eq!(rooms.as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_follows_the_store_and_metrics_show_its_errors() {
    let origin = Origin::start(Duration::ZERO).await;
    let mut redis = RedisServer::start();
    let setup = Setup {
        store: Some(format!(
            "kind = \"redis\"\nurl = \"{}\"\nsnapshot_interval = \"50ms\"",
            redis.url()
        )),
        extra: room("drop", "/echo", 60, "hi"),
        ..Setup::default()
    };
    let node = Node::start(origin.addr, &setup).await;
    let readyz = || async {
        let r = reqwest::get(format!("{}/readyz", node.admin))
            .await
            .expect("admin");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    wait_for("ready", Duration::from_secs(20), || async {
        readyz().await.0 == 200
    })
    .await;
    assert_eq!(readyz().await, (200, "ready\n".to_owned()));

    redis.kill();
    wait_for("not ready", Duration::from_secs(20), || async {
        readyz().await.0 == 503
    })
    .await;
    assert_eq!(readyz().await.1, "store unavailable\n");
    // An arrival while the store is down: counted as a store error, and it gets an answer.
    let r = reqwest::get(format!("{}/echo", node.base))
        .await
        .expect("gate answers");
    assert!(r.status().as_u16() < 600);
    wait_for("store metrics", Duration::from_secs(20), || async {
        let m = node.metrics().await;
        m.contains("flashgate_store_errors_total{") && m.contains("flashgate_store_degraded 1")
    })
    .await;

    redis.restart_empty();
    wait_for("ready again", Duration::from_secs(30), || async {
        readyz().await.0 == 200
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Parses the Prometheus text format strictly enough to catch a broken page: every sample
/// line is `name{labels} value` with a number, every family has HELP and TYPE.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut typed = std::collections::BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("TYPE name");
            let kind = parts.next().expect("TYPE kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("number: {line}"));
        let name = series.split('{').next().unwrap_or("");
        assert!(name.starts_with("flashgate_"), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| typed.contains(*b)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample before its TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        samples.push((series.to_owned(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_page_after_traffic() {
    let origin = Origin::start(Duration::ZERO).await;
    let setup = Setup {
        extra: room("drop", "/echo", 600, "hi"),
        ..Setup::default()
    };
    let node = Node::start(origin.addr, &setup).await;
    let (code, _) = node
        .admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": true})))
        .await;
    assert_eq!(code, 200);
    // Queued while paused, admitted after, then forwarded with the pass; an unprotected page.
    let shopper = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let (code, _, _) = get_json(&shopper, &format!("{}/echo", node.base)).await;
    assert_eq!(code, 202);
    node.admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": false})))
        .await;
    wait_for("admission", Duration::from_secs(20), || async {
        let (_, st, _) = get_json(
            &shopper,
            &format!("{}/.flashgate/status?room=drop", node.base),
        )
        .await;
        st["admitted"] == json!(true)
    })
    .await;
    for _ in 0..3 {
        let r = shopper
            .get(format!("{}/echo", node.base))
            .send()
            .await
            .expect("forwarded");
        assert_eq!(r.status(), 200);
    }
    let r = reqwest::get(format!("{}/products", node.base))
        .await
        .expect("page");
    assert_eq!(r.status(), 200);

    // The room gauges follow the store within a sync interval.
    wait_for("room gauges", Duration::from_secs(20), || async {
        let samples = parse_metrics(&node.metrics().await);
        sample(&samples, "flashgate_active_users{room=\"drop\"}").is_some_and(|v| v >= 1.0)
    })
    .await;
    let samples = parse_metrics(&node.metrics().await);
    let at_least = |series: &str, n: f64| {
        let v = sample(&samples, series).unwrap_or_else(|| panic!("missing {series}"));
        assert!(v >= n, "{series} = {v}, expected at least {n}");
    };
    at_least("flashgate_requests_total{decision=\"queued\"}", 1.0);
    at_least("flashgate_requests_total{decision=\"admitted\"}", 1.0);
    at_least("flashgate_requests_total{decision=\"forwarded\"}", 3.0);
    at_least("flashgate_requests_total{decision=\"reserved\"}", 1.0);
    at_least("flashgate_tickets_issued_total{room=\"drop\"}", 1.0);
    at_least("flashgate_admissions_total{room=\"drop\"}", 1.0);
    at_least("flashgate_serving_number{room=\"drop\"}", 1.0);
    at_least("flashgate_tickets_number{room=\"drop\"}", 1.0);
    at_least("flashgate_active_users{room=\"drop\"}", 1.0);
    at_least(
        "flashgate_admission_target_per_minute{room=\"drop\"}",
        600.0,
    );
    at_least("flashgate_room_state{room=\"drop\",state=\"paused\"}", 0.0);
    at_least(
        "flashgate_upstream_seconds_count{class=\"2xx\",pool=\"shop\"}",
        4.0,
    );
    at_least(
        "flashgate_upstream_seconds_bucket{class=\"2xx\",pool=\"shop\",le=\"+Inf\"}",
        4.0,
    );
    at_least(
        "flashgate_upstream_seconds_sum{class=\"2xx\",pool=\"shop\"}",
        0.0,
    );
    assert_eq!(sample(&samples, "flashgate_store_degraded"), Some(0.0));
    // Exactly one state is set per room.
    let states: f64 = samples
        .iter()
        .filter(|(s, _)| s.starts_with("flashgate_room_state{room=\"drop\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(states, 1.0);
}

/// Every metric the binary registers is documented in docs/operations.md, and every metric
/// the doc names exists.
#[test]
fn every_metric_is_documented() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .expect("docs/operations.md");
    let names = flashgate::metrics::Metrics::new().names;
    for name in names.all() {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is not documented in docs/operations.md"
        );
    }
    for name in flashgate::monitoring::metric_names(&doc) {
        assert!(names.knows(name), "docs/operations.md names unknown {name}");
    }
}

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------

#[test]
fn help_for_every_command() {
    let commands: &[&[&str]] = &[
        &[],
        &["run"],
        &["demo"],
        &["shop"],
        &["check"],
        &["keygen"],
        &["admin"],
        &["admin", "rooms"],
        &["admin", "room"],
        &["admin", "set"],
        &["admin", "pause"],
        &["admin", "resume"],
        &["admin", "drain"],
        &["admin", "sold-out"],
        &["admin", "reload"],
        &["admin", "health"],
        &["token"],
        &["token", "inspect"],
    ];
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = cli(&args, &[]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(stdout.contains("Usage: flashgate"), "{args:?}: {stdout}");
        assert!(stdout.lines().count() >= 3, "{args:?} explains itself");
    }
    let top = text(&cli(&["--help"], &[]).stdout);
    for sub in ["run", "demo", "shop", "check", "keygen", "admin", "token"] {
        assert!(top.contains(&format!("  {sub} ")), "--help lists {sub}");
    }
}

#[test]
fn keygen_prints_fresh_secrets() {
    let a = cli(&["keygen"], &[]);
    let b = cli(&["keygen"], &[]);
    assert!(a.status.success() && b.status.success());
    let (a, b) = (text(&a.stdout), text(&b.stdout));
    for k in [&a, &b] {
        let k = k.trim_end();
        assert_eq!(k.len(), 64, "{k}");
        assert!(k.bytes().all(|c| c.is_ascii_hexdigit()), "{k}");
    }
    assert_ne!(a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_cli_against_a_running_node() {
    let origin = Origin::start(Duration::ZERO).await;
    let setup = Setup {
        token: true,
        extra: room("drop", "/echo", 60, "hi"),
        ..Setup::default()
    };
    let node = Node::start(origin.addr, &setup).await;
    let url = format!("127.0.0.1:{}", node.admin_port);
    let with_token = [("FLASHGATE_ADMIN_TOKEN", ADMIN_TOKEN)];
    let admin = |args: &[&str], env: &[(&str, &str)]| {
        let mut a = vec!["admin", "--url", url.as_str()];
        a.extend_from_slice(args);
        cli(&a, env)
    };
    let ok = |args: &[&str]| {
        let out = admin(args, &with_token);
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };

    // Without the token: refused with the API's answer, exit 2.
    let out = admin(&["rooms"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("admin API answered 401"),
        "{}",
        text(&out.stderr)
    );
    // Health needs none.
    let out = admin(&["health"], &[]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "ready");
    // The token can come from another variable.
    let out = cli(
        &["admin", "--url", &url, "--token-env", "MY_TOKEN", "rooms"],
        &[("MY_TOKEN", ADMIN_TOKEN)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let rooms: Value = serde_json::from_str(&ok(&["rooms"])).expect("rooms JSON");
    assert_eq!(rooms[0]["id"], "drop");
    let one: Value = serde_json::from_str(&ok(&["room", "drop"])).expect("room JSON");
    assert_eq!(one["new_users_per_minute"], 60);

    let set: Value = serde_json::from_str(&ok(&[
        "set",
        "drop",
        "new_users_per_minute=77",
        "message=Back soon",
    ]))
    .expect("set JSON");
    assert_eq!(set["new_users_per_minute"], 77);
    assert_eq!(set["message"], "Back soon");
    assert_eq!(node.room("drop").await["new_users_per_minute"], 77);

    ok(&["pause", "drop"]);
    let r = node.room("drop").await;
    assert_eq!(
        (r["paused"].clone(), r["state"].clone()),
        (json!(true), json!("paused"))
    );
    ok(&["resume", "drop"]);
    assert_eq!(node.room("drop").await["paused"], false);
    ok(&["drain", "drop"]);
    assert_eq!(node.room("drop").await["drain"], true);
    ok(&["sold-out", "drop"]);
    let r = node.room("drop").await;
    assert_eq!(
        (r["sold_out"].clone(), r["state"].clone()),
        (json!(true), json!("sold_out"))
    );
    ok(&[
        "set",
        "drop",
        "sold_out=false",
        "drain=false",
        "message=null",
    ]);
    let r = node.room("drop").await;
    assert_eq!(r["sold_out"], false);
    assert_eq!(
        r["message"], "hi",
        "null clears the override: the config's message"
    );

    let reload: Value = serde_json::from_str(&ok(&["reload"])).expect("reload JSON");
    assert_eq!(reload["reloaded"], true);

    // Errors: unknown room, bad key, unreachable node.
    let out = admin(&["room", "nope"], &with_token);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("404"));
    let out = admin(&["set", "drop", "pause=true"], &with_token);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("pause: unknown field"));
    let out = admin(&["set", "drop", "oops"], &with_token);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("expected key=value"));
    let closed = format!("127.0.0.1:{}", free_port());
    let out = cli(&["admin", "--url", &closed, "health"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot reach the admin API"));

    // The audit log has every change.
    let audits = node
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("flashgate::audit"))
        .count();
    assert!(audits >= 6, "{audits} audit lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_inspect_on_a_real_ticket() {
    let origin = Origin::start(Duration::ZERO).await;
    let setup = Setup {
        extra: room("drop", "/echo", 60, "hi"),
        ..Setup::default()
    };
    let node = Node::start(origin.addr, &setup).await;
    node.admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": true})))
        .await;
    let (code, st, headers) =
        get_json(&reqwest::Client::new(), &format!("{}/echo", node.base)).await;
    assert_eq!(code, 202);
    let token = headers
        .get("x-flashgate-token")
        .and_then(|v| v.to_str().ok())
        .expect("ticket token")
        .to_owned();
    let config = node.config.display().to_string();
    let out = cli(&["token", "inspect", &token, "-c", &config], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("Ticket"), "{printed}");
    assert!(printed.contains("\"drop\""), "{printed}");
    assert!(
        printed.contains(&format!("number: {}", st["ticket"])),
        "{printed}"
    );

    // A forged token (one character changed) does not verify.
    let mut forged = token.clone().into_bytes();
    let i = forged.len() - 3;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let out = cli(&["token", "inspect", &forged, "-c", &config], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("token does not verify"));
}

// ---------------------------------------------------------------------------------------------
// `flashgate check` on the monitoring files
// ---------------------------------------------------------------------------------------------

#[test]
fn check_verifies_monitoring_metric_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dash = root.join("config/monitoring/grafana-dashboard.json");
    let alerts = root.join("config/monitoring/alerts.yml");
    let out = cli(
        &[
            "check",
            dash.to_str().expect("path"),
            alerts.to_str().expect("path"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("grafana-dashboard.json: ok ("), "{stdout}");
    assert!(stdout.contains("alerts.yml: ok ("), "{stdout}");

    let dir = std::env::temp_dir().join(format!("flashgate-ops-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bogus = dir.join("alerts.yml");
    let original = std::fs::read_to_string(&alerts).expect("alerts");
    std::fs::write(
        &bogus,
        original.replace("flashgate_store_degraded", "flashgate_store_is_sad"),
    )
    .expect("write");
    let broken_json = dir.join("dash.json");
    std::fs::write(&broken_json, "{\"panels\": [").expect("write");
    let out = cli(
        &[
            "check",
            bogus.to_str().expect("path"),
            broken_json.to_str().expect("path"),
            dash.to_str().expect("path"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: unknown metric flashgate_store_is_sad",
            bogus.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}: not JSON", broken_json.display())),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// A fresh self-signed certificate for 127.0.0.1 and localhost, written as PEM.
fn write_cert(dir: &Path, tag: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("self-signed certificate");
    let (cert, key) = (
        dir.join(format!("{tag}-cert.pem")),
        dir.join(format!("{tag}-key.pem")),
    );
    std::fs::write(&cert, c.cert.pem()).expect("write cert");
    std::fs::write(&key, c.signing_key.serialize_pem()).expect("write key");
    (cert, key, c.cert.der().to_vec())
}

fn https_client(h2: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none());
    let b = if h2 { b } else { b.http1_only() };
    b.build().expect("https client")
}

fn peer_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_listener_serves_the_gate_with_secure_cookies() {
    let origin = Origin::start(Duration::ZERO).await;
    let dir = std::env::temp_dir().join(format!("flashgate-ops-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key, der1) = write_cert(&dir, "one");
    let setup = Setup {
        tls: Some((cert.clone(), key.clone())),
        extra: room("drop", "/echo", 600, "over TLS"),
        ..Setup::default()
    };
    let node = Node::start(origin.addr, &setup).await;
    let https = format!("https://127.0.0.1:{}", node.tls_port);
    node.admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": true})))
        .await;

    // HTTP/2 through ALPN: the waiting page, with Secure cookies.
    let shopper = https_client(true);
    let r = shopper
        .get(format!("{https}/echo"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 202);
    assert_eq!(peer_cert(&r), der1);
    let cookies = set_cookies(&r);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("fg_t_drop=") && c.ends_with("; Secure")),
        "{cookies:?}"
    );
    let html = r.text().await.expect("page");
    assert!(html.contains("over TLS"), "the waiting page");

    // Admitted over HTTPS: the pass cookie is Secure, the origin hears https.
    node.admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": false})))
        .await;
    wait_for("admission over TLS", Duration::from_secs(20), || async {
        let (_, st, _) = get_json(&shopper, &format!("{https}/.flashgate/status?room=drop")).await;
        st["admitted"] == json!(true)
    })
    .await;
    let r = shopper
        .get(format!("{https}/echo"))
        .send()
        .await
        .expect("forwarded");
    assert_eq!(r.status(), 200);
    let cookies = set_cookies(&r);
    assert!(
        cookies.iter().all(|c| c.contains("; Secure")),
        "every cookie Secure: {cookies:?}"
    );
    let echo: Value = r.json().await.expect("echo");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    // HTTP/1.1 over TLS works too.
    let h1 = https_client(false);
    let r = h1.get(format!("{https}/echo")).send().await.expect("h1");
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert!(set_cookies(&r).iter().all(|c| c.contains("; Secure")));

    // The plain listener of the same node: no Secure, http to the origin.
    let plain = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let (code, _, _) = get_json(&plain, &format!("{}/echo", node.base)).await;
    assert!(code == 200 || code == 202);
    let r = plain
        .get(format!("{}/echo", node.base))
        .send()
        .await
        .expect("plain");
    assert!(set_cookies(&r).iter().all(|c| !c.contains("Secure")));

    // A reload picks up a renewed certificate for new connections.
    let (cert2, key2, der2) = write_cert(&dir, "two");
    std::fs::copy(&cert2, &cert).expect("renew cert");
    std::fs::copy(&key2, &key).expect("renew key");
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body["summary"]
            .as_str()
            .is_some_and(|s| s.contains("new TLS certificate")),
        "{body}"
    );
    let r = https_client(true)
        .get(format!("{https}/products"))
        .send()
        .await
        .expect("new connection");
    assert_eq!(peer_cert(&r), der2);

    // A broken key is refused by name; the renewed certificate stays in service.
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("break key");
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 422);
    let msg = body["error"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(&format!("{}: server.tls_key: ", node.config.display())),
        "{msg}"
    );
    let r = https_client(true)
        .get(format!("{https}/products"))
        .send()
        .await
        .expect("still serving");
    assert_eq!(peer_cert(&r), der2);

    // A node whose certificate cannot be read does not start without its TLS listener: it
    // refuses to start, naming the key.
    let bad = dir.join("bad.toml");
    let bad_text = config_text(&node, &setup).replace(
        &format!("tls_cert = \"{}\"", cert.display()),
        "tls_cert = \"/nonexistent/cert.pem\"",
    );
    std::fs::write(&bad, bad_text).expect("write");
    let out = cli(&["run", "-c", bad.to_str().expect("path")], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!(
            "{}: server.tls_cert: cannot read /nonexistent/cert.pem",
            bad.display()
        )),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Shutdown, upgrade and logs
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_hands_the_sockets_over_without_dropping_requests() {
    let origin = Origin::start(Duration::from_millis(20)).await;
    let setup = Setup {
        server: "grace_period = \"1s\"".to_owned(),
        extra: room("drop", "/echo", 6000, "hi"),
        ..Setup::default()
    };
    let mut old = Node::start(origin.addr, &setup).await;
    let load = Load::start(&old.base, 4, true);
    load.advance(20).await;

    // The new binary waits on the upgrade socket (named after the first listen port).
    let sock = PathBuf::from(format!("/tmp/flashgate-{}-upgrade.sock", old.port));
    let _ = std::fs::remove_file(&sock);
    let mut new = old.upgrade();
    wait_for(
        "the new process to wait for the sockets",
        Duration::from_secs(20),
        || async { sock.exists() },
    )
    .await;
    old.signal("-QUIT");
    old.wait_log("the handover", |l| l.contains("listener sockets sent"))
        .await;
    // The old process finishes what it has and exits; the new one serves on the same sockets.
    assert!(
        old.wait_exit(Duration::from_secs(30)).await,
        "old exits cleanly"
    );
    load.advance(50).await;
    // The listening sockets never close, and requests in flight finish. Idle keep-alive
    // connections of the old process are closed when it starts shutting down: a request sent
    // on one at that instant sees the connection close before any response, and a client
    // retries it on a new connection (browsers do for idempotent requests). At most one such
    // race per connection; the retry always succeeds.
    let (ok, retries, errors) = load.finish().await;
    assert!(
        errors.is_empty(),
        "requests failed during the upgrade: {errors:?}"
    );
    assert!(
        retries.len() <= 4,
        "one race per connection at most: {retries:?}"
    );
    assert!(
        retries
            .iter()
            .all(|r| r.contains("IncompleteMessage") || r.to_ascii_lowercase().contains("reset")),
        "only closed-connection races: {retries:?}"
    );
    assert!(ok >= 70);
    let (code, _) = new.admin_req("GET", "/api/rooms/drop", None).await;
    assert_eq!(code, 200, "the admin listener moved too");
    assert!(
        new.child.try_wait().expect("try_wait").is_none(),
        "new still runs"
    );
    drop(new);
    let _ = std::fs::remove_file(&sock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_requests_in_flight_finish() {
    let origin = Origin::start(Duration::from_millis(1200)).await;
    let setup = Setup {
        server: "grace_period = \"3s\"".to_owned(),
        ..Setup::default()
    };
    let mut node = Node::start(origin.addr, &setup).await;
    let before = origin.shop.stats().requests;
    let slow = tokio::spawn({
        let url = format!("{}/products", node.base);
        async move {
            let r = reqwest::get(url).await?;
            let status = r.status().as_u16();
            let body = r.text().await?;
            Ok::<_, reqwest::Error>((status, body.len()))
        }
    });
    wait_for(
        "the request to reach the origin",
        Duration::from_secs(10),
        || async { origin.shop.stats().requests > before },
    )
    .await;
    let sent = Instant::now();
    node.signal("-TERM");
    let (status, len) = slow
        .await
        .expect("task")
        .expect("the in-flight request completes");
    assert_eq!(status, 200);
    assert!(len > 0);
    assert!(node.wait_exit(Duration::from_secs(30)).await, "clean exit");
    assert!(
        sent.elapsed() >= Duration::from_millis(500),
        "the process waited for the request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_logs_never_carry_secrets() {
    let origin = Origin::start(Duration::ZERO).await;
    let key_secret = "ops-signing-secret-5c1e8a7f2b9d4e6a0c3f";
    let setup = Setup {
        token: true,
        server: "log_format = \"json\"\ngrace_period = \"1s\"".to_owned(),
        rust_log: Some("debug"),
        secret_env: Some("FG_OPS_KEY"),
        env: vec![("FG_OPS_KEY".to_owned(), key_secret.to_owned())],
        extra: room("drop", "/echo", 600, "hi"),
        ..Setup::default()
    };
    let mut node = Node::start(origin.addr, &setup).await;
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 200, "{body}");

    // Traffic that mints and presents every kind of token.
    let mut secrets = vec![ADMIN_TOKEN.to_owned(), key_secret.to_owned()];
    node.admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": true})))
        .await;
    let shopper = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let r = shopper
        .get(format!("{}/echo", node.base))
        .send()
        .await
        .expect("queued");
    let ticket = r
        .headers()
        .get("x-flashgate-token")
        .and_then(|v| v.to_str().ok())
        .expect("ticket")
        .to_owned();
    secrets.push(ticket.clone());
    node.admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": false})))
        .await;
    wait_for("admission", Duration::from_secs(20), || async {
        let (_, st, _) = get_json(
            &shopper,
            &format!("{}/.flashgate/status?room=drop", node.base),
        )
        .await;
        st["admitted"] == json!(true)
    })
    .await;
    let r = shopper
        .get(format!("{}/echo", node.base))
        .send()
        .await
        .expect("entry");
    assert_eq!(r.status(), 200);
    let pass = set_cookies(&r)
        .iter()
        .find_map(|c| c.strip_prefix("fg_p_drop="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let pass = pass.expect("pass");
    assert!(!pass.is_empty());
    secrets.push(pass.clone());
    let r = reqwest::Client::new()
        .get(format!("{}/echo", node.base))
        .header("x-flashgate-token", &pass)
        .send()
        .await
        .expect("with the pass in a header");
    assert_eq!(r.status(), 200);
    // A wrong admin token must not be logged either.
    let wrong = "ops-wrong-token-9d8c7b6a5f4e3d2c";
    secrets.push(wrong.to_owned());
    let r = reqwest::Client::new()
        .get(format!("{}/api/rooms", node.admin))
        .bearer_auth(wrong)
        .send()
        .await
        .expect("admin");
    assert_eq!(r.status(), 401);
    // A refused reload prints the config's problem, not its secrets.
    std::fs::write(
        &node.config,
        config_text(&node, &setup).replace("threads = 2", "threads = 0"),
    )
    .expect("write");
    let (code, _) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 422);

    // Stop with SIGTERM so the log is complete, then scan it.
    node.signal("-TERM");
    node.wait_exit(Duration::from_secs(30)).await;
    let lines = node.log_lines();
    assert!(lines.len() >= 5, "something was logged");
    let mut json_lines = 0;
    for l in &lines {
        for s in &secrets {
            assert!(!l.contains(s.as_str()), "a secret in the log: {l}");
        }
        if serde_json::from_str::<Value>(l).is_ok() {
            json_lines += 1;
        }
    }
    assert_eq!(json_lines, lines.len(), "every line is JSON: {lines:?}");
}
