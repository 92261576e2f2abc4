//! Operations end to end, against a real `flashgate run` process and a real origin on ephemeral
//! loopback ports: hot reload (SIGHUP and `POST /api/reload`) under load, refused reloads, the
//! admin API and its token, audit logs, `/readyz`, `/metrics`, the `flashgate` CLI, the TLS
//! listener (HTTPS, HTTP/2, `Secure` cookies, certificate rotation), graceful shutdown on
//! SIGTERM, and logs that never carry a secret.
//!
//! Nothing here waits by sleeping: every wait polls for the state it needs, with a deadline.

mod admin;
mod cli;
mod lifecycle;
mod metrics;
mod reload;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::config::Table;
use testkit::shopper::{self, get_json, set_cookies, Events};
use testkit::{
    cli, free_port, wait_for, Config, Launch, Metrics, Node, Origin, Ready, RedisServer, Room,
};

const ADMIN_TOKEN: &str = "ops-admin-token-7f3a9c2e1b5d4a60";

/// A room on the origin's `path`, with `rate` and `message` to change on reload.
fn room(id: &str, path: &str, rate: u32, message: &str) -> Room {
    let room = Room::new(id).paths(&[path]).rate(rate).capacity(1000);
    room.poll("1s")
        .windows("30s", "10s")
        .status_code(202)
        .message(message)
}

/// This file's base config: the origin with a 10 s read timeout (a slow origin under reloads).
fn base(origin: &Origin) -> Config {
    Config::new(origin.addr).read_timeout("10s")
}

/// How this file's nodes run: at log level `info` (the audit lines), ready once both
/// listeners answer (the store's readiness is a question of its own: `/readyz`).
fn info() -> Launch {
    Launch {
        rust_log: Some("info"),
        ready: Ready::Listening,
        ..Launch::default()
    }
}

async fn start(cfg: &Config) -> Node {
    Node::launch(cfg, info()).await
}

/// A node whose admin API wants [`ADMIN_TOKEN`], with the room `drop` showing `message`.
async fn with_token(origin: &Origin, message: &str) -> Node {
    let cfg = base(origin).admin_token(ADMIN_TOKEN);
    start(&cfg.room(room("drop", "/echo", 60, message))).await
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
