//! Test harness: a real `flashgate` process and a real origin (the demo shop) on ephemeral
//! loopback ports. Readiness is awaited by polling the admin API with a deadline — never a
//! fixed sleep.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use flashgate::shop::{Shop, ShopConfig};
use tokio::sync::oneshot;

pub mod redis;

/// The inline secret every test config uses (tests forge tokens with it).
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// A port nobody listens on right now, below the kernel's ephemeral range. A port from
/// `bind(0)` comes from that range, and until the node binds it any outgoing connection on the
/// machine (another test's client or proxy) may take it as its local port — a node then waits
/// for it in vain (seen once under a full `make test`). Ports below the range are handed out by
/// nobody but this function, which gives each caller in the process a different one.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(LOWEST);
    if span >= 1_000 {
        // Test binaries run one after another; a different start per process keeps a port
        // that a previous binary's node left in TIME_WAIT out of the way.
        let start = std::process::id().wrapping_mul(2_654_435_761) % span;
        for _ in 0..span {
            // 7,919 is prime: consecutive calls spread over the span.
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = LOWEST + (start + n.wrapping_mul(7_919)) % span;
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
                drop(l);
                return port as u16;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// The demo shop on an ephemeral port, inside the test's runtime.
pub struct Origin {
    pub shop: Shop,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Origin {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let shop = Shop::new(ShopConfig::demo());
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
            stop: Some(tx),
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A running `flashgate run` process.
pub struct Flashgate {
    child: Child,
    pub base: String,
    pub admin: String,
    pub config: PathBuf,
    /// Where its stderr goes, when started with [`Launch::log`] (kept after the process ends).
    pub log: Option<PathBuf>,
}

/// How [`Flashgate::launch`] starts a node: extra environment, and a file for its stderr.
#[derive(Debug, Default, Clone)]
pub struct Launch {
    pub env: Vec<(String, String)>,
    /// Capture stderr in this file (for scanning logs for panics and secrets).
    pub log: Option<PathBuf>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A config with one upstream `shop` at `origin`, a catch-all route, and `extra` appended
/// (rooms, more routes).
pub fn config(port: u16, admin: u16, origin: SocketAddr, extra: &str) -> String {
    config_with_store(port, admin, origin, r#"snapshot_interval = "50ms""#, extra)
}

/// [`config`] with `store` as the body of the `[store]` table.
pub fn config_with_store(
    port: u16,
    admin: u16,
    origin: SocketAddr,
    store: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
admin_listen = "127.0.0.1:{admin}"
threads = 2

[keys]
active = 1
[[keys.key]]
id = 1
secret = "{SECRET}"

[store]
{store}

[upstreams.shop]
servers = ["{origin}"]
connect_timeout = "500ms"
read_timeout = "5s"

[[routes]]
path = "/"
upstream = "shop"

{extra}
"#
    )
}

impl Flashgate {
    /// Starts flashgate with `extra` config (see [`config`]) in front of `origin`.
    pub async fn start(origin: SocketAddr, extra: &str) -> Self {
        let (port, admin) = (free_port(), free_port());
        Self::start_with(&config(port, admin, origin, extra), port, admin).await
    }

    /// Starts flashgate on the Redis at `redis_url` (a fleet: start several on one Redis).
    pub async fn start_on_redis(origin: SocketAddr, redis_url: &str, extra: &str) -> Self {
        let (port, admin) = (free_port(), free_port());
        let store = format!(
            "kind = \"redis\"\nurl = \"{redis_url}\"\nsnapshot_interval = \"50ms\"\nbatch_window = \"2ms\""
        );
        Self::start_with(
            &config_with_store(port, admin, origin, &store, extra),
            port,
            admin,
        )
        .await
    }

    /// The node's Prometheus metrics text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .expect("admin reachable")
            .text()
            .await
            .expect("metrics text")
    }

    /// The status code of `/readyz`.
    pub async fn readyz(&self) -> u16 {
        reqwest::get(format!("{}/readyz", self.admin))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    pub async fn start_with(text: &str, port: u16, admin: u16) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "flashgate-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("flashgate.toml");
        std::fs::write(&path, text).expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_flashgate"))
            .args(["run", "-c"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn flashgate");
        let fg = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            config: path,
            log: None,
        };
        fg.wait_ready().await;
        fg
    }

    /// Starts flashgate with config `text` on `port`/`admin`, with `how`'s environment and
    /// stderr capture (RUST_LOG defaults to `warn`; set it in `how.env` to change that).
    pub async fn launch(text: &str, port: u16, admin: u16, how: Launch) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "flashgate-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("flashgate.toml");
        std::fs::write(&path, text).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flashgate"));
        cmd.args(["run", "-c"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        for (k, v) in &how.env {
            cmd.env(k, v);
        }
        match &how.log {
            Some(file) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)
                    .expect("log file");
                cmd.stderr(Stdio::from(f));
            }
            None => {
                cmd.stderr(Stdio::inherit());
            }
        }
        let child = cmd.spawn().expect("spawn flashgate");
        let fg = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            config: path,
            log: how.log,
        };
        fg.wait_ready().await;
        fg
    }

    /// The process id (for signals and `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (a panic that aborts, or an exit, ends it).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. "HUP", "KILL") with kill(1).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1)")
            .success();
        assert!(ok, "kill -{signal} {}", self.pid());
    }

    /// The captured stderr so far (empty without [`Launch::log`]).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Panics if the captured stderr shows a Rust panic.
    pub fn assert_no_panic(&self) {
        let log = self.log_text();
        assert!(
            !log.contains("panicked"),
            "flashgate panicked (log {:?}):\n{log}",
            self.log
        );
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

    async fn wait_ready(&self) {
        let c = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let asset = format!("{}/.flashgate/assets/waiting.css", self.base);
        let ready = format!("{}/readyz", self.admin);
        loop {
            let a = c.get(&asset).send().await.map(|r| r.status().is_success());
            let b = c.get(&ready).send().await.map(|r| r.status().is_success());
            if matches!((a, b), (Ok(true), Ok(true))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "flashgate did not become ready in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client that keeps cookies, like a browser, and does not follow redirects.
    pub fn shopper(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    pub async fn patch_room(&self, room: &str, body: serde_json::Value) -> serde_json::Value {
        let r = reqwest::Client::new()
            .patch(format!("{}/api/rooms/{room}", self.admin))
            .json(&body)
            .send()
            .await
            .expect("admin reachable");
        assert_eq!(r.status(), 200, "PATCH {room}");
        r.json().await.expect("room report")
    }

    pub async fn room(&self, room: &str) -> serde_json::Value {
        reqwest::get(format!("{}/api/rooms/{room}", self.admin))
            .await
            .expect("admin reachable")
            .json()
            .await
            .expect("room report")
    }

    /// Polls the admin report of `room` until `cond` holds (deadline 30 s).
    pub async fn wait_room(
        &self,
        room: &str,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
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
}

impl Drop for Flashgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.config.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// GET with `Accept: application/json`.
pub async fn get_json(
    c: &reqwest::Client,
    url: &str,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let r = c
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, body, headers)
}
