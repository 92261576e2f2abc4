//! Reaching Redis: one client built from the config (a single Redis, a Cluster, or a master
//! found through Sentinel; plain or TLS), connected lazily, and re-connected from scratch when
//! the store's circuit breaker probes ([`LazyRedis::reconnect`]).
//!
//! Shared by the store ([`super::RedisStore`]) and bot defence's fleet-wide state
//! (`crate::bot::fleet`). The events sink speaks to Redis on its own blocking connection
//! (`crate::events`), with the same [`RedisTls`].
//!
//! ## Why a probe opens a fresh connection
//! A single Redis is reached through the crate's `ConnectionManager`, which reconnects by itself
//! *after* a call failed on a dead connection. A probe on it after Redis came back would fail
//! once more (the dead connection), and the breaker would wait out a whole backoff again. The
//! probe therefore connects anew, checks the connection with `PING`, and only then puts it in
//! place of the old one; for Sentinel it asks the sentinels for the master again, which is how a
//! failover is followed.

use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, ErrorKind, RedisError, RedisResult, TlsCertificates, TlsMode};

use super::UrlError;

/// How long connecting to Redis may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long Redis may take to answer one command.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one store call may take in all (connecting included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// TLS to Redis beyond what a `rediss://` URL says: the CA that signs the server's certificate
/// (none: the system's roots) and a client certificate for mutual TLS. PEM, read and checked
/// when the config is loaded (`[store.tls]`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RedisTls {
    /// PEM certificates of the CA(s) to trust, instead of the system's roots.
    pub ca: Option<Vec<u8>>,
    /// PEM client certificate chain and private key.
    pub client: Option<ClientIdentity>,
}

/// A client certificate chain and its key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for RedisTls {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl std::fmt::Debug for ClientIdentity {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

impl RedisTls {
    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self.client.as_ref().map(|c| redis::ClientTlsConfig {
                client_cert: c.cert.clone(),
                client_key: c.key.clone(),
            }),
            root_cert: self.ca.clone(),
        }
    }
}

/// A master managed by Sentinel, from `redis+sentinel://` (or `rediss+sentinel://`, TLS to the
/// sentinels and the master alike):
/// `redis+sentinel://[user:password@]host:port[,host:port…]/master-name[/db]`. The user and
/// password are the master's (the sentinels are asked without); a port defaults to 26379.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: bool,
}

/// A `redis+sentinel://` URL that names no sentinel or no master, or has a bad port or
/// database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad Sentinel URL: {0}")]
pub struct BadSentinelUrl(String);

fn invalid(what: &'static str, detail: String) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, what, detail))
}

/// `%XX` escapes decoded (user names and passwords in URLs).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SentinelUrl {
    /// `Ok(None)` when `url` is not a Sentinel URL.
    pub fn parse(url: &str) -> Result<Option<Self>, BadSentinelUrl> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("redis+sentinel://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rediss+sentinel://") {
            (true, r)
        } else {
            return Ok(None);
        };
        let bad = |why: &str| BadSentinelUrl(why.to_owned());
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
            None => (None, None),
            Some((u, p)) => (
                Some(percent_decode(u)).filter(|u| !u.is_empty()),
                Some(percent_decode(p)).filter(|p| !p.is_empty()),
            ),
        };
        let mut sentinels = Vec::new();
        for h in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let (host, port) = match h.rsplit_once(':') {
                Some((host, port)) if !host.ends_with(']') || h.starts_with('[') => {
                    let port = port
                        .parse::<u16>()
                        .map_err(|_| bad(&format!("port of {h}")))?;
                    (host, port)
                }
                _ => (h, 26379),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            sentinels.push((host.to_owned(), port));
        }
        if sentinels.is_empty() {
            return Err(bad("no sentinel host:port before the master name"));
        }
        let mut parts = path.split('/');
        let master = parts.next().unwrap_or("").to_owned();
        if master.is_empty() {
            return Err(bad(
                "no master name: redis+sentinel://host:port/<master-name>",
            ));
        }
        let db = match parts.next().filter(|d| !d.is_empty()) {
            None => 0,
            Some(d) => d.parse().map_err(|_| bad("the database is not a number"))?,
        };
        Ok(Some(Self {
            sentinels,
            master,
            db,
            username,
            password,
            tls,
        }))
    }

    fn client(&self, tls: Option<&RedisTls>) -> RedisResult<SentinelClient> {
        let addr = |(host, port): &(String, u16)| {
            if self.tls {
                ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host.clone(), *port)
            }
        };
        let mut b = SentinelClientBuilder::new(
            self.sentinels.iter().map(addr),
            &self.master,
            SentinelServerType::Master,
        )?
        .set_client_to_redis_db(self.db);
        if let Some(u) = &self.username {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = &self.password {
            b = b.set_client_to_redis_password(p);
        }
        if self.tls {
            b = b
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
            if let Some(t) = tls {
                b = b
                    .set_client_to_redis_certificates(t.certificates())
                    .set_client_to_sentinel_certificates(t.certificates());
            }
        }
        b.build()
    }
}

enum Target {
    Single(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
    Sentinel(Box<Sentinel>),
}

/// A master found through Sentinel: the client that asks, and whom it named last.
struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
    /// The master the connection goes to, and when the sentinels were last asked.
    named: Mutex<(Option<ConnectionAddr>, Option<std::time::Instant>)>,
}

/// How often a node asks the sentinels whether the master changed
/// ([`LazyRedis::follow_master`]).
pub const SENTINEL_CHECK: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Either connection runs commands and scripts (`query_async`, `invoke_async`) the same way.
impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        // Few, quick reconnect attempts: a call waiting on a reconnect must still fail within
        // CALL_TIMEOUT, and the breaker spaces out the probes anyway.
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(100))
}

/// A Redis client built once from the config and connected lazily, inside the Pingora runtime
/// that first uses it (services get their own runtimes).
pub(crate) struct LazyRedis {
    target: Target,
    conn: Mutex<Option<Conn>>,
    /// Held while a connection is being made, so that concurrent first calls make one.
    connecting: tokio::sync::Mutex<()>,
}

impl LazyRedis {
    /// A client for `url`: `redis://`, `rediss://` (TLS), `unix://`, or `redis+sentinel://` /
    /// `rediss+sentinel://` (see [`SentinelUrl`]); `cluster` uses the Cluster client with
    /// `url` as the seed node (several seeds: comma-separated URLs). `tls` adds a CA and a
    /// client certificate to `rediss` URLs. No I/O.
    pub(crate) fn new(url: &str, cluster: bool, tls: Option<&RedisTls>) -> Result<Self, UrlError> {
        if url.starts_with("rediss") {
            // The listener's provider (ring); the first one installed wins.
            pingora::tls::install_default_crypto_provider();
        }
        let target = if let Some(s) = SentinelUrl::parse(url)? {
            if cluster {
                return Err(invalid(
                    "a Sentinel URL",
                    "names a master, not a Cluster: set cluster = false".into(),
                )
                .into());
            }
            Target::Sentinel(Box::new(Sentinel {
                client: tokio::sync::Mutex::new(s.client(tls)?),
                named: Mutex::new((None, None)),
            }))
        } else if cluster {
            let seeds: Vec<&str> = url.split(',').map(str::trim).collect();
            let mut b = ClusterClient::builder(seeds)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(2);
            if let Some(t) = tls.filter(|_| url.starts_with("rediss://")) {
                b = b.certs(t.certificates());
            }
            Target::Cluster(Box::new(b.build()?))
        } else {
            match tls.filter(|_| url.starts_with("rediss://")) {
                Some(t) => Target::Single(Box::new(redis::Client::build_with_tls(
                    url,
                    t.certificates(),
                )?)),
                None => Target::Single(Box::new(redis::Client::open(url)?)),
            }
        };
        Ok(Self {
            target,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    pub(crate) fn connected(&self) -> bool {
        self.conn.lock().is_some()
    }

    /// The connection, made on first use.
    pub(crate) async fn conn(&self) -> RedisResult<Conn> {
        if let Some(c) = self.conn.lock().clone() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.conn.lock().clone() {
            return Ok(c);
        }
        let c = self.open(false).await?;
        *self.conn.lock() = Some(c.clone());
        Ok(c)
    }

    /// Connects anew (for Sentinel: asks for the master again) and checks the new connection
    /// with `PING`; only then do later calls use it. The old connection is dropped. A Cluster
    /// whose seed nodes are all gone is checked on the connection it has (it follows the
    /// cluster's topology by itself).
    pub(crate) async fn reconnect(&self) -> RedisResult<()> {
        let _one = self.connecting.lock().await;
        let fresh = async {
            let mut c = self.open(true).await?;
            ping(&mut c).await?;
            Ok::<_, RedisError>(c)
        };
        match fresh.await {
            Ok(c) => {
                *self.conn.lock() = Some(c);
                Ok(())
            }
            Err(e) => {
                let old = self.conn.lock().clone();
                match old {
                    Some(mut c @ Conn::Cluster(_)) => ping(&mut c).await,
                    _ => Err(e),
                }
            }
        }
    }

    /// For a master found through Sentinel, at most every [`SENTINEL_CHECK`]: asks the
    /// sentinels who the master is and, when they name another one, connects to it. A
    /// failover the sentinels ordered leaves the old master up, and taking writes, until they
    /// get round to demoting it (seconds later; those writes are then lost): without asking,
    /// a node would keep writing there. Called from the rooms' background refresh, never on a
    /// shopper's request. Other targets: nothing to do.
    pub(crate) async fn follow_master(&self) -> RedisResult<()> {
        let Target::Sentinel(s) = &self.target else {
            return Ok(());
        };
        {
            let mut named = s.named.lock();
            match named.1 {
                Some(at) if at.elapsed() < SENTINEL_CHECK => return Ok(()),
                _ => named.1 = Some(std::time::Instant::now()),
            }
        }
        let master = s.client.lock().await.async_get_client().await?;
        let addr = master.get_connection_info().addr().clone();
        if s.named.lock().0.as_ref() == Some(&addr) {
            return Ok(());
        }
        let _one = self.connecting.lock().await;
        let c = ConnectionManager::new_with_config(master, manager_config()).await?;
        tracing::warn!(master = %addr, "sentinel: the master changed; connected to the new one");
        *s.named.lock() = (Some(addr), Some(std::time::Instant::now()));
        *self.conn.lock() = Some(Conn::Single(c));
        Ok(())
    }

    /// Forgets the connection: the next call makes a new one (for Sentinel, after asking for
    /// the master again).
    pub(crate) fn forget(&self) {
        *self.conn.lock() = None;
    }

    /// A connection: `eager` connects now (a single Redis otherwise connects on its first
    /// command).
    async fn open(&self, eager: bool) -> RedisResult<Conn> {
        match &self.target {
            Target::Single(c) if eager => {
                ConnectionManager::new_with_config((**c).clone(), manager_config())
                    .await
                    .map(Conn::Single)
            }
            Target::Single(c) => {
                ConnectionManager::new_lazy_with_config((**c).clone(), manager_config())
                    .map(Conn::Single)
            }
            Target::Cluster(c) => c.get_async_connection().await.map(Conn::Cluster),
            Target::Sentinel(s) => {
                let master = s.client.lock().await.async_get_client().await?;
                let addr = master.get_connection_info().addr().clone();
                let c = ConnectionManager::new_with_config(master, manager_config()).await?;
                *s.named.lock() = (Some(addr), Some(std::time::Instant::now()));
                Ok(Conn::Single(c))
            }
        }
    }
}

/// Whether a failed call calls for a new connection: the old one broke, or it reaches a node
/// that is no longer the master (`READONLY`: a Sentinel failover demoted it).
pub(crate) fn needs_new_connection(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.is_timeout()
        || e.kind() == ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

async fn ping(c: &mut Conn) -> RedisResult<()> {
    redis::cmd("PING").query_async::<()>(c).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls() {
        let s = SentinelUrl::parse("redis+sentinel://:p%40ss@10.0.0.1:26379,10.0.0.2/main/2")
            .expect("parses")
            .expect("sentinel");
        assert_eq!(
            s.sentinels,
            vec![("10.0.0.1".into(), 26379), ("10.0.0.2".into(), 26379)]
        );
        assert_eq!((s.master.as_str(), s.db, s.tls), ("main", 2, false));
        assert_eq!((s.username, s.password.as_deref()), (None, Some("p@ss")));
        let s = SentinelUrl::parse("rediss+sentinel://app:pw@[::1]:5000/m")
            .expect("parses")
            .expect("sentinel");
        assert_eq!(s.sentinels, vec![("::1".into(), 5000)]);
        assert_eq!((s.username.as_deref(), s.tls), (Some("app"), true));
        assert_eq!(SentinelUrl::parse("redis://h:1").expect("plain"), None);
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel:///m",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:1/m/x",
        ] {
            assert!(SentinelUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
