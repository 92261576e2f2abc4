//! A real `redis-server` for tests: started on a free port (never the machine's 6379), without
//! persistence, as a child the test can kill and restart (empty). Readiness is awaited by
//! polling PING with a deadline.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// The least a Flashgate node needs of Redis, as `ACL SETUSER` rules (docs/redis.md, "An ACL
/// user"): its rooms' keys and the events stream, the scripts and the commands they run, the
/// connection's own commands, and what the Cluster client asks. Nothing else: no `KEYS`, no
/// `FLUSHALL`, no `CONFIG`, no other key.
pub const FLASHGATE_ACL: &str = "resetkeys ~{fg:* ~flashgate:* resetchannels -@all +@connection \
    +evalsha +eval +script|load +get +set +incr +incrby +hget +hset +hmget +hgetall +hdel \
    +hkeys +hincrby +getbit +setbit +expire +time +xadd +xtrim +cluster|slots +cluster|shards \
    +readonly +asking";

/// A `redis-server` child process on a free port; killed and its directory removed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// The cluster bus port (a cluster node listens on a second port, by default `port +
    /// 10000`, which nothing checked was free): from the same allocator as `port`.
    cluster_port: Option<u16>,
    /// TLS on a second port (the plain `port` stays open for the kit's own commands).
    tls: Option<(u16, TlsFiles)>,
    /// Extra `redis-server` arguments.
    extra: Vec<String>,
    dir: PathBuf,
}

/// The PEM files of a TLS `redis-server`: its certificate and key, and the CA whose client
/// certificates it accepts.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Refuse clients without a certificate (`tls-auth-clients yes`); otherwise optional.
    pub require_client_cert: bool,
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

    /// A standalone server that also speaks TLS, on [`tls_url`](Self::tls_url).
    pub fn start_tls(files: TlsFiles) -> Self {
        Self::launch_with(false, Some((free_port(), files)), Vec::new())
    }

    /// A standalone server with extra `redis-server` arguments (`["--replicaof", host, port]`).
    pub fn start_with(args: &[&str]) -> Self {
        Self::launch_with(false, None, args.iter().map(|a| a.to_string()).collect())
    }

    /// A Cluster node owning no slots yet (for [`RedisCluster`](crate::RedisCluster)).
    pub fn start_cluster_node() -> Self {
        Self::launch(true)
    }

    fn launch(cluster: bool) -> Self {
        Self::launch_with(cluster, None, Vec::new())
    }

    fn launch_with(cluster: bool, tls: Option<(u16, TlsFiles)>, extra: Vec<String>) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("flashgate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut s = Self {
            child: None,
            port,
            cluster_port: cluster.then(free_port),
            tls,
            extra,
            dir,
        };
        s.spawn();
        s
    }

    /// `rediss://127.0.0.1:<tls port>` (a server started with [`start_tls`](Self::start_tls)).
    pub fn tls_url(&self) -> String {
        let (port, _) = self.tls.as_ref().expect("a TLS server");
        format!("rediss://127.0.0.1:{port}")
    }

    /// Whether the process is running (not killed).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let mut c = Command::new("redis-server");
        // A config file (empty but for what CONFIG REWRITE adds), so that a sentinel's
        // reconfiguration of this server can be saved like in production.
        let conf = self.dir.join("redis.conf");
        if !conf.exists() {
            std::fs::write(&conf, "").expect("redis.conf");
        }
        c.arg(&conf);
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
        if let Some((port, f)) = &self.tls {
            c.arg("--tls-port").arg(port.to_string());
            c.arg("--tls-cert-file").arg(&f.cert);
            c.arg("--tls-key-file").arg(&f.key);
            c.arg("--tls-ca-cert-file").arg(&f.ca);
            let auth = if f.require_client_cert {
                "yes"
            } else {
                "optional"
            };
            c.args(["--tls-auth-clients", auth]);
        }
        c.args(&self.extra);
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

    /// Adds ACL user `user` with `password` and `rules` (as in `ACL SETUSER`, space-separated;
    /// see [`FLASHGATE_ACL`]).
    pub fn acl_user(&self, user: &str, password: &str, rules: &str) {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(user)
            .arg("reset")
            .arg("on")
            .arg(format!(">{password}"));
        for r in rules.split_whitespace() {
            cmd.arg(r);
        }
        self.cmd::<()>(&cmd).expect("ACL SETUSER");
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

/// A Redis Cluster of `masters` masters with one replica each: `2 × masters` `redis-server`s
/// on free ports, joined by `redis-cli --cluster create`. A node that stops answering is
/// failed over after about a second (`cluster-node-timeout 1000`).
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// A node's view of one cluster member (a line of `CLUSTER NODES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// The master it replicates (replicas only).
    pub master_id: Option<String>,
    pub failed: bool,
    /// Slot ranges it serves (masters).
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts and joins the cluster, and waits until every node sees it whole and every
    /// replica is in sync.
    pub fn start(masters: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..masters * 2)
            .map(|_| {
                let timeout = ["--cluster-node-timeout", "1000"];
                RedisServer::launch_with(true, None, timeout.map(str::to_owned).to_vec())
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = create.output().expect("redis-cli on PATH");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = Self { nodes };
        c.wait_settled(Duration::from_secs(30));
        c
    }

    /// Every seed URL, comma-separated (the store's `url` with `cluster = true`).
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The cluster as a running node sees it.
    pub fn members(&self) -> Vec<ClusterMember> {
        for n in self.nodes.iter().filter(|n| n.running()) {
            if let Ok(text) = n.cmd::<String>(redis::cmd("CLUSTER").arg("NODES")) {
                return parse_nodes(&text);
            }
        }
        panic!("no cluster node answers");
    }

    /// The index in [`nodes`](Self::nodes) of the member on `port`.
    pub fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// The index of the master serving `slot`, as a running node sees it.
    pub fn master_of(&self, slot: u16) -> usize {
        let m = self
            .members()
            .into_iter()
            .find(|m| m.master && !m.failed && m.slots.iter().any(|r| r.0 <= slot && slot <= r.1))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"));
        self.index_of(m.port)
    }

    /// The index of a replica of the master at `master`.
    pub fn replica_of(&self, master: usize) -> usize {
        let members = self.members();
        let id = members
            .iter()
            .find(|m| m.port == self.nodes[master].port)
            .map(|m| m.id.clone())
            .expect("the master");
        let r = members
            .iter()
            .find(|m| m.master_id.as_deref() == Some(&id) && !m.failed)
            .expect("a replica");
        self.index_of(r.port)
    }

    /// `CLUSTER FAILOVER` on the replica at `replica` (a coordinated hand-over, no write
    /// lost); returns once it serves as master.
    pub fn failover(&self, replica: usize) {
        self.nodes[replica]
            .cmd::<()>(redis::cmd("CLUSTER").arg("FAILOVER"))
            .expect("CLUSTER FAILOVER");
        self.wait_master(replica, Duration::from_secs(20));
    }

    /// Waits until the node at `i` is a master serving slots, as the cluster sees it.
    pub fn wait_master(&self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let role: String = self.nodes[i]
                .cmd::<Vec<redis::Value>>(&redis::cmd("ROLE"))
                .ok()
                .and_then(|v| v.into_iter().next())
                .and_then(|v| redis::from_redis_value::<String>(v).ok())
                .unwrap_or_default();
            let port = self.nodes[i].port;
            let serving = self
                .members()
                .iter()
                .any(|m| m.port == port && m.master && !m.slots.is_empty());
            if role == "master" && serving && self.state_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} (port {port}) never became a serving master"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn state_ok(&self) -> bool {
        self.nodes.iter().filter(|n| n.running()).all(|n| {
            n.cmd::<String>(redis::cmd("CLUSTER").arg("INFO"))
                .is_ok_and(|i| i.contains("cluster_state:ok"))
        })
    }

    /// Waits until every running node reports the cluster ok and knows every node, and every
    /// running replica's link to its master is up.
    pub fn wait_settled(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let running = self.nodes.iter().filter(|n| n.running()).count();
            let settled = self.nodes.iter().filter(|n| n.running()).all(|n| {
                let info: String = n.cmd(redis::cmd("CLUSTER").arg("INFO")).unwrap_or_default();
                let repl: String = n
                    .cmd(redis::cmd("INFO").arg("replication"))
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            });
            if settled && running > 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster never settled");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn parse_nodes(text: &str) -> Vec<ClusterMember> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            // 127.0.0.1:7000@17000[,hostname]
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = f[2];
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(ClusterMember {
                id: f[0].to_owned(),
                port,
                master: flags.contains("master"),
                master_id: (f[3] != "-").then(|| f[3].to_owned()),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                slots,
            })
        })
        .collect()
}

/// A master, a replica and three sentinels watching them (`mymaster`, quorum 2), all on free
/// ports: the sentinels notice a dead master after `down_after` and promote the replica.
#[derive(Debug)]
pub struct RedisSentinels {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisServer>,
}

/// The master name the sentinels watch.
pub const SENTINEL_MASTER: &str = "mymaster";

impl RedisSentinels {
    pub fn start(down_after: Duration) -> Self {
        let master = RedisServer::start();
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
        let ms = down_after.as_millis().to_string();
        let sentinels = (0..3)
            .map(|_| {
                let port = free_port();
                let dir = std::env::temp_dir()
                    .join(format!("flashgate-sentinel-{}-{port}", std::process::id()));
                std::fs::create_dir_all(&dir).expect("sentinel dir");
                let conf = dir.join("sentinel.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {mport} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} {ms}\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 10000\n\
                         sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                        dir = dir.display(),
                        mport = master.port,
                    ),
                )
                .expect("sentinel.conf");
                let mut s = RedisServer {
                    child: None,
                    port,
                    cluster_port: None,
                    tls: None,
                    extra: vec!["--sentinel".into()],
                    dir,
                };
                s.spawn_sentinel(&conf);
                s
            })
            .collect();
        let s = Self {
            master,
            replica,
            sentinels,
        };
        s.wait_watching(Duration::from_secs(20));
        s
    }

    /// `redis+sentinel://127.0.0.1:<s1>,…/mymaster`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{SENTINEL_MASTER}", hosts.join(","))
    }

    /// The master's port as the sentinels report it (`None` when they disagree or fail).
    pub fn master_port(&self) -> Option<u16> {
        let mut seen = None;
        for s in &self.sentinels {
            let (_, port): (String, u16) = s
                .cmd(
                    redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(SENTINEL_MASTER),
                )
                .ok()?;
            if seen.is_some_and(|p| p != port) {
                return None;
            }
            seen = Some(port);
        }
        seen
    }

    /// Waits until `server` is a replica whose link to its master is up and in sync.
    pub async fn wait_replica_synced(&self, server: &RedisServer, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let info: String = server
                .cmd(redis::cmd("INFO").arg("replication"))
                .unwrap_or_default();
            if info.contains("role:slave") && info.contains("master_link_status:up") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "port {} never became a synced replica: {info}",
                server.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every sentinel knows the replica and the other sentinels.
    fn wait_watching(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ready = self.sentinels.iter().all(|s| {
                let info: Vec<(String, String)> = s
                    .cmd::<Vec<String>>(redis::cmd("SENTINEL").arg("master").arg(SENTINEL_MASTER))
                    .map(|flat| {
                        flat.chunks(2)
                            .filter(|c| c.len() == 2)
                            .map(|c| (c[0].clone(), c[1].clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let get = |k: &str| {
                    info.iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.as_str())
                };
                get("num-slaves") == Some("1") && get("num-other-sentinels") == Some("2")
            });
            let synced = self
                .replica
                .cmd::<String>(redis::cmd("INFO").arg("replication"))
                .is_ok_and(|i| i.contains("master_link_status:up"));
            if ready && synced {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels never saw the set-up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl RedisServer {
    fn spawn_sentinel(&mut self, conf: &std::path::Path) {
        let log = self.dir.join("sentinel.log");
        let child = Command::new("redis-server")
            .arg(conf)
            .arg("--sentinel")
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.cmd::<String>(&redis::cmd("PING")).is_err() {
            assert!(
                Instant::now() < deadline,
                "sentinel on port {} did not start: {}",
                self.port,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
