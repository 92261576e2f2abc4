//! `crowd --spawn`: starts what a scenario runs against, on free loopback ports — the demo
//! shop (`flashgate shop`), a `redis-server` when the store is Redis, and the Flashgate nodes —
//! waits until each answers (a deadline, never a fixed sleep), and stops them all when dropped.
//! Logs go to `logs/` in the run's output directory.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use testkit::config::{quote, Table};

use super::scenario::{Spawn, Store};
use crate::target::{parse_http_url, HttpUrl};

/// The secret of spawned fleets: they live for one run, on loopback.
const SECRET: &str = "crowd-simulator-secret-not-for-production-0123456789";

/// What was started.
#[derive(Debug)]
pub struct Fleet {
    children: Vec<(String, Child)>,
    /// The nodes' public and admin URLs.
    pub targets: Vec<HttpUrl>,
    pub admin: Vec<HttpUrl>,
    /// The demo shop's URL.
    shop: String,
    pub redis_url: Option<String>,
    /// Where each process's log goes (`NAME.log`).
    logs: PathBuf,
    /// One line: what runs where.
    pub summary: String,
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Replaces each `{{t+DURATION}}` with the RFC 3339 time `start + DURATION`.
pub fn substitute_times(text: &str, start: SystemTime) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("{{t+") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 4..];
        let j = after
            .find("}}")
            .ok_or_else(|| "spawn.room: unclosed {{t+...}}".to_owned())?;
        let d = humantime::parse_duration(after[..j].trim())
            .map_err(|e| format!("spawn.room: {{{{t+{}}}}}: {e}", &after[..j]))?;
        out.push_str(&humantime::format_rfc3339_seconds(start + d).to_string());
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The config of one node: the test kit's node config ([`testkit::Config`]) in front of the
/// shop, with the scenario's threads, store, extra tables and room.
pub fn node_config(
    spawn: &Spawn,
    room: &str,
    port: u16,
    admin: u16,
    shop: u16,
    redis_url: Option<&str>,
    start: SystemTime,
) -> Result<String, String> {
    let store = Table::new();
    let store = match (spawn.store, redis_url) {
        (Store::Redis, Some(url)) => store.set("kind", "redis").set("url", url),
        _ => store.set("kind", "memory"),
    };
    let store = store.set("snapshot_interval", spawn.snapshot_interval.as_str());
    let room_body = substitute_times(&spawn.room, start)?;
    let rooms = format!(
        "{}\n\n[[rooms]]\nid = {}\n{room_body}",
        spawn.extra,
        quote(room)
    );
    let cfg = testkit::Config::new(SocketAddr::from(([127, 0, 0, 1], shop)))
        .ports(port, admin)
        .threads(spawn.threads)
        // The simulator stands in for the load balancer: it sends each shopper's address.
        .trusting(&["127.0.0.1/32", "::1/128"])
        .secret(SECRET)
        .store(store.to_string())
        .connect_timeout("1s")
        .read_timeout("10s")
        .extra(rooms);
    Ok(format!(
        "# Written by `crowd --spawn` for one run.\n{}",
        cfg.render()
    ))
}

fn log_file(dir: &Path, name: &str) -> Result<File, String> {
    File::create(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl Fleet {
    /// Starts everything; event times in the room (`{{t+..}}`) count from `start`.
    pub async fn start(
        spawn: &Spawn,
        room: &str,
        flashgate: &Path,
        start: SystemTime,
        out_dir: &Path,
    ) -> Result<Fleet, String> {
        let logs = out_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
        let mut fleet = Fleet {
            children: Vec::new(),
            targets: Vec::new(),
            admin: Vec::new(),
            shop: String::new(),
            redis_url: None,
            logs: logs.clone(),
            summary: String::new(),
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;

        let shop = free_port()?;
        fleet.spawn(
            "shop",
            Command::new(flashgate)
                .args(["shop", "--listen", &format!("127.0.0.1:{shop}")])
                .env("RUST_LOG", "warn"),
            &logs,
        )?;
        fleet.shop = format!("http://127.0.0.1:{shop}");
        fleet
            .wait_http(&http, &format!("{}/healthz", fleet.shop), "shop")
            .await?;

        if spawn.store == Store::Redis {
            let port = free_port()?;
            fleet.spawn(
                "redis",
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"]),
                &logs,
            )?;
            let url = format!("redis://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if redis_info(&url, "server").await.is_ok() {
                    break;
                }
                fleet.check_alive()?;
                if Instant::now() > deadline {
                    return Err("redis-server did not answer within 20 s".into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            fleet.redis_url = Some(url);
        }

        for n in 1..=spawn.nodes {
            let (port, admin) = (free_port()?, free_port()?);
            let text = node_config(
                spawn,
                room,
                port,
                admin,
                shop,
                fleet.redis_url.as_deref(),
                start,
            )?;
            let cfg = logs.join(format!("node-{n}.toml"));
            std::fs::write(&cfg, text).map_err(|e| format!("{}: {e}", cfg.display()))?;
            fleet.spawn(
                &format!("node-{n}"),
                Command::new(flashgate)
                    .arg("run")
                    .arg("-c")
                    .arg(&cfg)
                    .env("RUST_LOG", "warn"),
                &logs,
            )?;
            let base = format!("http://127.0.0.1:{port}");
            let adm = format!("http://127.0.0.1:{admin}");
            fleet
                .targets
                .push(parse_http_url(&base).map_err(|e| e.to_string())?);
            fleet
                .admin
                .push(parse_http_url(&adm).map_err(|e| e.to_string())?);
        }
        for (t, a) in fleet.targets.clone().iter().zip(fleet.admin.clone()) {
            fleet
                .wait_http(&http, &format!("{}/readyz", a.origin()), "flashgate admin")
                .await?;
            fleet
                .wait_http(
                    &http,
                    &format!("{}/.flashgate/assets/waiting.css", t.origin()),
                    "flashgate",
                )
                .await?;
        }
        fleet.summary = format!(
            "demo shop at {}, {} Flashgate node(s) ({} threads each) on the {} store{}",
            fleet.shop,
            spawn.nodes,
            spawn.threads,
            match spawn.store {
                Store::Memory => "memory",
                Store::Redis => "Redis",
            },
            fleet
                .redis_url
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default()
        );
        Ok(fleet)
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command, logs: &Path) -> Result<(), String> {
        let err = log_file(logs, &format!("{name}.log"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    fn check_alive(&mut self) -> Result<(), String> {
        for (name, c) in &mut self.children {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(format!(
                    "{name} exited ({status}); its log ({}):\n{}",
                    self.logs.join(format!("{name}.log")).display(),
                    tail(&self.logs.join(format!("{name}.log")))
                ));
            }
        }
        Ok(())
    }

    async fn wait_http(
        &mut self,
        c: &reqwest::Client,
        url: &str,
        what: &str,
    ) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if c.get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!("{what} at {url} did not become ready within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops every process (also on drop).
    pub fn stop(&mut self) {
        for (_, c) in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `INFO section` of the Redis at `url`.
pub async fn redis_info(url: &str, section: &str) -> Result<String, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut c = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| "redis: connect timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("INFO")
            .arg(section)
            .query_async::<String>(&mut c),
    )
    .await
    .map_err(|_| "redis: INFO timed out".to_owned())?
    .map_err(|e| e.to_string())
}

/// Calls per command from `INFO commandstats` (`cmdstat_evalsha:calls=12,...`).
pub fn command_calls(info: &str) -> std::collections::BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Round trips among `INFO commandstats` calls: the scripts (`evalsha`, `eval`, `script|load`).
/// Redis also counts the commands a script runs inside it, under their own names, so a plain
/// sum would count one script call many times over. Flashgate's only other commands are the
/// plain `SET`s of live changes (and of a shared replay guard), which this leaves out.
pub fn script_calls(by_command: &std::collections::BTreeMap<String, u64>) -> u64 {
    by_command
        .iter()
        .filter(|(k, _)| k.starts_with("eval") || k.starts_with("script") || k.starts_with("fcall"))
        .map(|(_, v)| v)
        .sum()
}

/// `used_memory` from `INFO memory`.
pub fn used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_configs_are_valid_flashgate_configs() {
        let spawn = Spawn {
            nodes: 2,
            store: Store::Redis,
            threads: 3,
            snapshot_interval: "100ms".into(),
            room: "paths = [\"/\"]\nnew_users_per_minute = 60\ntotal_active_users = 100\n".into(),
            extra: "[cache]\nmax_bytes = \"16MiB\"\n".into(),
        };
        let url = Some("redis://127.0.0.1:6390");
        let text = node_config(
            &spawn,
            "drop",
            8080,
            9901,
            3000,
            url,
            SystemTime::UNIX_EPOCH,
        )
        .expect("config");
        let c = flashgate::config::Config::parse("spawn.toml", &text, waitroom::UnixMillis(0))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(c.rooms[0].settings.id, "drop");
        assert!(text.contains("threads = 3\n"), "{text}");
        assert!(text.contains("url = \"redis://127.0.0.1:6390\""), "{text}");
    }

    #[test]
    fn times_are_substituted() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let s = substitute_times("a = \"{{t+0s}}\"\nb = \"{{t+90s}}\"", start).expect("valid");
        assert_eq!(
            s,
            "a = \"2027-01-15T08:00:00Z\"\nb = \"2027-01-15T08:01:30Z\""
        );
        assert!(substitute_times("{{t+soon}}", start).is_err());
        assert!(substitute_times("{{t+1s", start).is_err());
    }

    #[test]
    fn commandstats_and_memory() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=30,usec_per_call=2.5\r\ncmdstat_info:calls=3,usec=1\r\n";
        let c = command_calls(info);
        assert_eq!(c.get("evalsha"), Some(&12));
        assert_eq!(c.get("info"), Some(&3));
        assert_eq!(script_calls(&c), 12);
        assert_eq!(
            used_memory("# Memory\r\nused_memory:1048576\r\nused_memory_human:1M\r\n"),
            Some(1_048_576)
        );
    }
}
