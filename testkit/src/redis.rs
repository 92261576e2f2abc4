//! A real `redis-server` for tests: started on a free port (never the machine's 6379), without
//! persistence, as a child the test can kill and restart (empty). Readiness is awaited by
//! polling PING with a deadline.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A `redis-server` child process on a free port; killed and its directory removed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// The cluster bus port (a cluster node listens on a second port, by default `port +
    /// 10000`, which nothing checked was free): from the same allocator as `port`.
    cluster_port: Option<u16>,
    dir: PathBuf,
}

impl RedisServer {
    /// A standalone server.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// A one-node Redis Cluster owning all 16384 slots.
    pub fn start_cluster() -> Self {
        let s = Self::launch(true);
        s.cmd::<()>(redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(0).arg(16383))
            .expect("CLUSTER ADDSLOTSRANGE");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info: String = s.cmd(redis::cmd("CLUSTER").arg("INFO")).unwrap_or_default();
            if info.contains("cluster_state:ok") {
                return s;
            }
            assert!(Instant::now() < deadline, "cluster never became ok: {info}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn launch(cluster: bool) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("flashgate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut s = Self {
            child: None,
            port,
            cluster_port: cluster.then(free_port),
            dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut c = Command::new("redis-server");
        c.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(&self.dir);
        if let Some(bus) = self.cluster_port {
            let _ = std::fs::remove_file(self.dir.join("nodes.conf"));
            c.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
            ])
            .arg(bus.to_string());
        }
        // The server's own log, for the failure message if it does not come up.
        let log = self.dir.join("redis.log");
        c.arg("--logfile").arg(&log);
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/setup.sh test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.cmd::<String>(&redis::cmd("PING")).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let why = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "redis-server on port {} did not start ({exited:?}); its log:\n{why}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command on a fresh connection.
    pub fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.url())?;
        let mut c = client.get_connection_with_timeout(Duration::from_secs(2))?;
        cmd.query(&mut c)
    }

    /// Calls of one command so far (`INFO commandstats`), e.g. "evalsha".
    pub fn calls(&self, command: &str) -> u64 {
        let info: String = self
            .cmd(redis::cmd("INFO").arg("commandstats"))
            .expect("INFO commandstats");
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Calls clients made so far, all commands together (`INFO commandstats`; a script counts
    /// once, the commands it runs inside are left out, and so are this helper's own INFO calls).
    pub fn client_calls(&self) -> u64 {
        let info: String = self
            .cmd(redis::cmd("INFO").arg("commandstats"))
            .expect("INFO commandstats");
        // Commands scripts run inside: counted by commandstats too, so subtract them by name.
        let inner = [
            "get", "set", "incr", "incrby", "hget", "hset", "hmget", "hgetall", "hdel", "hkeys",
            "hincrby", "getbit", "setbit", "expire", "time",
        ];
        let mut total = 0;
        for line in info.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(":calls="))
            else {
                continue;
            };
            if name == "info" || inner.contains(&name) {
                continue;
            }
            total += rest
                .split(',')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
        total
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers — a hung Redis,
    /// unlike [`kill`](Self::kill) where connections are refused.
    pub fn freeze(&self) {
        self.send_signal("STOP");
    }

    /// Lets a frozen server run again (SIGCONT), with its data.
    pub fn thaw(&self) {
        self.send_signal("CONT");
    }

    fn send_signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill(1)")
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    /// Starts it again on the same port, empty.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
