//! Origin pools: round robin over the configured servers, with active health checks (run by
//! [`crate::node::PoolHealth`], which restarts them when a reload rebuilds the pools).
//! Addresses were resolved when the config was loaded.

use std::collections::BTreeMap;
use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::lb::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};

use std::net::SocketAddr;
use std::time::Duration;

use crate::shield::{FetchTarget, PoolShield};

/// How a pool's servers are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    Http { path: String, interval: Duration },
    Tcp { interval: Duration },
}

/// One `[upstreams.<name>]`, validated (built by [`crate::config`]).
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub servers: Vec<SocketAddr>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub host: Option<String>,
    pub health: Option<HealthCheck>,
    /// Origin shield: concurrency limit and shares, latency target.
    pub shield: PoolShield,
}

/// The origin shield's background-refresh targets: one per pool, sharing the pools' load
/// balancers.
pub fn fetch_targets(pools: &Pools) -> BTreeMap<String, FetchTarget> {
    pools
        .iter()
        .map(|(name, p)| {
            let target = FetchTarget {
                lb: p.lb.clone(),
                host: p.cfg.host.clone(),
                connect_timeout: p.cfg.connect_timeout,
                read_timeout: p.cfg.read_timeout,
            };
            (name.clone(), target)
        })
        .collect()
}

/// One pool.
pub struct Pool {
    pub cfg: Upstream,
    pub lb: Arc<LoadBalancer<RoundRobin>>,
    /// The pool's only server, when it has one (most shops): chosen without the load
    /// balancer's selection, whose iterator, seen-set and readiness lookup cost ~1,800
    /// instructions a forwarded request (`loadtests/pass-callgrind.sh`, 2026-12-08); its
    /// health is still asked of the load balancer.
    pub single: Option<Backend>,
}

impl Pool {
    /// A healthy server not in `tried`.
    pub fn select(&self, tried: &[Backend]) -> Option<Backend> {
        match &self.single {
            Some(b) => (tried.is_empty() && self.lb.backends().ready(b)).then(|| b.clone()),
            None => self
                .lb
                .select_with(b"", 256, |b, healthy| healthy && !tried.contains(b)),
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Pools by name.
pub type Pools = BTreeMap<String, Pool>;

/// Builds the pools, with their health checks configured (not yet running).
pub fn build(upstreams: &BTreeMap<String, Upstream>) -> std::io::Result<Pools> {
    let mut pools = BTreeMap::new();
    for (name, u) in upstreams {
        let addrs: Vec<String> = u.servers.iter().map(|a| a.to_string()).collect();
        let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(addrs)?;
        let lb = match &u.health {
            None => Arc::new(lb),
            Some(hc) => {
                let interval = match hc {
                    HealthCheck::Http { path, .. } => {
                        let host = u.host.clone().unwrap_or_else(|| "localhost".into());
                        let mut check = HttpHealthCheck::new(&host, false);
                        let mut req = RequestHeader::build("GET", path.as_bytes(), None)
                            .map_err(|e| std::io::Error::other(e.to_string()))?;
                        req.append_header("host", host.as_str())
                            .map_err(|e| std::io::Error::other(e.to_string()))?;
                        check.req = req;
                        check.peer_template.options.connection_timeout = Some(u.connect_timeout);
                        lb.set_health_check(Box::new(check));
                        hc_interval(hc)
                    }
                    HealthCheck::Tcp { .. } => {
                        lb.set_health_check(TcpHealthCheck::new());
                        hc_interval(hc)
                    }
                };
                lb.health_check_frequency = Some(interval);
                Arc::new(lb)
            }
        };
        let backends = lb.backends().get_backend();
        let single = match backends.len() {
            1 => backends.iter().next().cloned(),
            _ => None,
        };
        pools.insert(
            name.clone(),
            Pool {
                cfg: u.clone(),
                lb,
                single,
            },
        );
    }
    Ok(pools)
}

fn hc_interval(hc: &HealthCheck) -> std::time::Duration {
    match hc {
        HealthCheck::Http { interval, .. } | HealthCheck::Tcp { interval } => *interval,
    }
}
