//! A running node: the configuration in force — swapped atomically on reload — and what
//! outlives a reload (the store, metrics, the event stream).
//!
//! Reload (SIGHUP or `POST /api/reload`) reads and validates the whole file first; an invalid
//! file is refused with `FILE: key: reason` and the running config stays. Requests in flight
//! keep the config they started with (each request holds an `Arc<Live>`). Rooms that keep their
//! id keep their live state (view, ETA history, ended sessions); pools are rebuilt only when
//! their settings changed. The TLS certificate and key files are re-read: new handshakes get
//! the new pair. Listeners, the store and the event sink cannot change without a restart
//! (`flashgate run --upgrade` hands the sockets over with no downtime): a reload that changes
//! them is refused and says so.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;
use waitroom::Store;

use crate::bot::{BotGuard, RedisShared};
use crate::clock;
use crate::config::{Config, StoreKind};
use crate::events::Events;
use crate::metrics::Metrics;
use crate::rooms::Rooms;
use crate::shield::{Fetcher, HttpFetcher, Shield};
use crate::tls::CertStore;
use crate::upstream::{self, Pools};

/// The configuration in force and what was built from it.
#[derive(Debug)]
pub struct Live {
    pub config: Config,
    pub rooms: Arc<Rooms>,
    pub pools: Arc<Pools>,
    /// Bumped whenever the pools are rebuilt (health checks restart on it).
    pub pools_generation: u64,
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    live: ArcSwap<Live>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub events: Events,
    /// The origin shield (catalog cache, shedding, origin health). Built once: its cache and
    /// pool limits are sized at start; a reload changes routes' cache rules, not the cache.
    pub shield: Shield,
    /// Bot defence tables, sized at start; rooms' bot settings follow reloads.
    pub bot: Arc<BotGuard>,
    /// The certificate the TLS listeners serve (none without `tls_listen`).
    pub tls: Option<Arc<CertStore>>,
    /// The file a reload reads (none for the demo, whose config is compiled in).
    path: Option<PathBuf>,
    reloading: tokio::sync::Mutex<()>,
    pools_tx: watch::Sender<u64>,
}

/// Why a node could not start or a reload was refused (the running config stays). The text is
/// what the audit log and `POST /api/reload` show.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("this node runs a built-in config (demo): nothing to reload")]
    BuiltIn,
    /// The file is invalid (`FILE: dotted.key: reason`).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The file changes what only a restart can change.
    #[error("{file}: {key}: needs a restart (`flashgate run --upgrade` hands the sockets over)")]
    NeedsRestart { file: String, key: &'static str },
    /// The origin pools could not be built.
    #[error("upstreams: {0}")]
    Upstreams(std::io::Error),
    /// The bot defence's shared Redis could not be set up.
    #[error("{file}: {reason}")]
    BotRedis {
        file: String,
        reason: crate::store::UrlError,
    },
}

impl Node {
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        events: Events,
        path: Option<PathBuf>,
    ) -> Result<Self, NodeError> {
        let pools = upstream::build(&config.upstreams).map_err(NodeError::Upstreams)?;
        let (pools_tx, _) = watch::channel(0);
        let fetcher: Arc<dyn Fetcher> =
            Arc::new(HttpFetcher::new(crate::upstream::fetch_targets(&pools)));
        let shield = Shield::new(config.shield_plan(), metrics.clone(), Some(fetcher));
        let rooms = Rooms::new(
            config.rooms.clone(),
            store.clone(),
            config.snapshot_interval,
        )
        .with_metrics(metrics.clone())
        .with_shield(shield.clone());
        let mut bot = BotGuard::new(
            &config.bot,
            config.keys.derive(crate::bot::KEY_PURPOSE),
            &metrics,
        );
        // A fleet shares single use of solutions and the joins-per-address limit through the
        // store's Redis (one connection, made lazily inside the runtime that first uses it).
        if let StoreKind::Redis {
            url, cluster, tls, ..
        } = &config.store
        {
            let shared = Arc::new(RedisShared::new(url, *cluster, tls.as_ref()).map_err(
                |reason| NodeError::BotRedis {
                    file: config.source.display().to_string(),
                    reason,
                },
            )?);
            bot = bot
                .with_replay(shared.clone())
                .with_shared_join_limit(shared);
        }
        let bot = Arc::new(bot);
        let tls = config.server.tls.as_ref().map(|t| CertStore::new(&t.pair));
        Ok(Self {
            tls,
            live: ArcSwap::from_pointee(Live {
                config,
                rooms: Arc::new(rooms),
                pools: Arc::new(pools),
                pools_generation: 0,
            }),
            store,
            metrics,
            events,
            shield,
            bot,
            path,
            reloading: tokio::sync::Mutex::new(()),
            pools_tx,
        })
    }

    /// The configuration in force (lock-free).
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Re-reads the config file and swaps it in. Returns a one-line summary, or why the file
    /// was refused (the running config stays). `by` says what asked (`SIGHUP`, `admin API`):
    /// either way the outcome is logged on `flashgate::audit` and counted.
    pub async fn reload(&self, by: &str) -> Result<String, NodeError> {
        let result = self.reload_inner().await;
        match &result {
            Ok(summary) => {
                self.metrics.reloads.with_label_values(&["ok"]).inc();
                tracing::info!(target: "flashgate::audit", by, "{summary}");
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["refused"]).inc();
                tracing::error!(target: "flashgate::audit", by, "reload refused, the running config stays: {e}");
            }
        }
        result
    }

    async fn reload_inner(&self) -> Result<String, NodeError> {
        let _one_at_a_time = self.reloading.lock().await;
        let path = self.path.as_ref().ok_or(NodeError::BuiltIn)?;
        let new = Config::load(path, clock::now())?;
        let old = self.live();
        needs_restart(&old.config, &new)?;
        let rooms = Arc::new(old.rooms.reconfigured(new.rooms.clone()));
        let (pools, generation) = if same_upstreams(&old.config, &new) {
            (old.pools.clone(), old.pools_generation)
        } else {
            let pools = upstream::build(&new.upstreams).map_err(NodeError::Upstreams)?;
            (Arc::new(pools), old.pools_generation + 1)
        };
        let renewed = match (&self.tls, &old.config.server.tls, &new.server.tls) {
            (Some(store), Some(was), Some(now)) if was.pair != now.pair => {
                store.replace(&now.pair);
                ", new TLS certificate"
            }
            _ => "",
        };
        let summary = format!(
            "reloaded {}: {} rooms, {} upstreams, {} routes{renewed}",
            path.display(),
            new.rooms.len(),
            new.upstreams.len(),
            new.routes.len()
        );
        self.live.store(Arc::new(Live {
            config: new,
            rooms: rooms.clone(),
            pools,
            pools_generation: generation,
        }));
        self.pools_tx.send_replace(generation);
        rooms.refresh().await;
        Ok(summary)
    }
}

/// Refuses a reload that changes what only a restart can change.
fn needs_restart(old: &Config, new: &Config) -> Result<(), NodeError> {
    let tls_listen = |c: &Config| c.server.tls.as_ref().map(|t| t.listen.clone());
    let changed = [
        ("server.listen", old.server.listen != new.server.listen),
        ("server.tls_listen", tls_listen(old) != tls_listen(new)),
        (
            "server.admin_listen",
            old.server.admin_listen != new.server.admin_listen,
        ),
        ("server.threads", old.server.threads != new.server.threads),
        (
            "server.grace_period",
            old.server.grace_period != new.server.grace_period,
        ),
        (
            "server.write_buffer",
            old.server.write_buffer != new.server.write_buffer,
        ),
        (
            "server.log_format",
            old.server.log_json != new.server.log_json,
        ),
        ("store", old.store != new.store),
        // Built once at start: the catalog cache (sized by `[cache]`) and the bot tables and
        // lists, and the event stream.
        ("cache", old.cache != new.cache),
        ("bot", old.bot != new.bot),
        ("events", old.events != new.events),
    ];
    match changed.iter().find(|(_, changed)| *changed) {
        Some((key, _)) => Err(NodeError::NeedsRestart {
            file: new.source.display().to_string(),
            key,
        }),
        None => Ok(()),
    }
}

fn same_upstreams(old: &Config, new: &Config) -> bool {
    let key = |c: &Config| -> BTreeMap<String, String> {
        c.upstreams
            .iter()
            .map(|(k, u)| (k.clone(), format!("{u:?}")))
            .collect()
    };
    key(old) == key(new)
}

/// Keeps every room's view fresh (and runs the controller slice) for the rooms in force.
#[derive(Debug)]
pub struct RoomSync(pub Arc<Node>);

#[async_trait]
impl BackgroundService for RoomSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let every = self.0.live().config.snapshot_interval;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    let live = self.0.live();
                    live.rooms.refresh().await;
                    for r in live.rooms.all() {
                        let v = r.view();
                        let snap = &v.snapshot;
                        let m = &self.0.metrics;
                        m.serving.with_label_values(&[r.id()]).set(snap.ctl.serving as i64);
                        m.issued.with_label_values(&[r.id()]).set(snap.issued as i64);
                        let active = snap.active_total(clock::now().minute(), v.session_minutes);
                        m.active.with_label_values(&[r.id()]).set(active as i64);
                        for state in waitroom::RoomState::ALL {
                            m.room_state
                                .with_label_values(&[r.id(), state.as_str()])
                                .set(i64::from(v.state == state));
                        }
                        m.admission_target
                            .with_label_values(&[r.id()])
                            .set(i64::from(v.new_users_per_minute));
                    }
                }
            }
        }
    }
}

/// Runs the active health checks of the pools in force, restarting them when a reload rebuilds
/// the pools (Pingora cannot add services after start, so the checks live in this one).
#[derive(Debug)]
pub struct PoolHealth(pub Arc<Node>);

#[async_trait]
impl BackgroundService for PoolHealth {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut generation = self.0.pools_tx.subscribe();
        loop {
            let (stop_tx, stop_rx) = watch::channel(false);
            for pool in self.0.live().pools.values() {
                if pool.cfg.health.is_some() {
                    let lb = pool.lb.clone();
                    let stop = stop_rx.clone();
                    tokio::spawn(async move { lb.start(stop).await });
                }
            }
            tokio::select! {
                _ = shutdown.changed() => {
                    let _ = stop_tx.send(true);
                    return;
                }
                changed = generation.changed() => {
                    let _ = stop_tx.send(true);
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Reloads on SIGHUP, like nginx and HAProxy.
#[derive(Debug)]
pub struct ReloadOnHangup(pub Arc<Node>);

#[async_trait]
impl BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP: reload through the admin API only");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                // The outcome is logged (and counted) by `reload`.
                _ = hup.recv() => { let _ = self.0.reload("SIGHUP").await; }
            }
        }
    }
}
