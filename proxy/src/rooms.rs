//! Node-local room state: each room's latest [`RoomView`], refreshed from the store a few times a
//! second by one background task, read lock-free by every request.
//!
//! The refresh also runs the controller slice ([`waitroom::controller::tick`]); with the memory
//! store this node is the only controller, with Redis every node tries and one wins per slice.
//! Status polls and waiting pages are answered from the view: no store call per poll.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use waitroom::eta::EtaEstimator;
use waitroom::{controller, RoomSnapshot, RoomView, Store};

use crate::clock;
use crate::config::{prefix_matches, Room};

/// How many ended sessions a node remembers (leave / revoke), so that a copied pass is refused
/// on this node right away; other nodes learn it at the pass's next minute check-in.
const ENDED_MEMORY: usize = 100_000;

/// A bounded set: the oldest entries are forgotten first.
#[derive(Debug, Default)]
struct Recent {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Recent {
    fn insert(&mut self, v: u64) {
        if self.set.insert(v) {
            self.order.push_back(v);
            if self.order.len() > ENDED_MEMORY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// One room on this node.
#[derive(Debug)]
pub struct RoomRuntime {
    pub cfg: Room,
    view: ArcSwap<RoomView>,
    eta: Mutex<EtaEstimator>,
    ended: Mutex<Recent>,
    store_ok: AtomicBool,
}

impl RoomRuntime {
    fn new(cfg: Room) -> Self {
        let eta = EtaEstimator::new();
        let snap = RoomSnapshot {
            time: clock::now(),
            ..RoomSnapshot::default()
        };
        let view = RoomView::new(&cfg.settings, snap, &eta);
        Self {
            cfg,
            view: ArcSwap::from_pointee(view),
            eta: Mutex::new(eta),
            ended: Mutex::new(Recent::default()),
            store_ok: AtomicBool::new(true),
        }
    }

    pub fn id(&self) -> &str {
        &self.cfg.settings.id
    }

    /// The latest view (lock-free).
    pub fn view(&self) -> Arc<RoomView> {
        self.view.load_full()
    }

    /// Installs a fresh snapshot.
    pub fn install(&self, snap: RoomSnapshot) {
        let mut eta = self.eta.lock();
        eta.observe(snap.time, snap.ctl.admitted_total);
        let view = RoomView::new(&self.cfg.settings, snap, &eta);
        drop(eta);
        self.view.store(Arc::new(view));
    }

    pub fn mark_ended(&self, ticket: u64) {
        self.ended.lock().insert(ticket);
    }

    pub fn is_ended(&self, ticket: u64) -> bool {
        self.ended.lock().set.contains(&ticket)
    }

    pub fn store_ok(&self) -> bool {
        self.store_ok.load(Ordering::Relaxed)
    }

    fn set_store_ok(&self, ok: bool) {
        if self.store_ok.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!(room = self.id(), "store reachable again");
            } else {
                tracing::warn!(
                    room = self.id(),
                    "store unreachable: keeping the last room view"
                );
            }
        }
    }
}

/// All rooms of the running config, and the store they share.
#[derive(Debug)]
pub struct Rooms {
    rooms: Vec<Arc<RoomRuntime>>,
    pub store: Arc<dyn Store>,
    pub refresh_every: Duration,
}

impl Rooms {
    pub fn new(rooms: Vec<Room>, store: Arc<dyn Store>, refresh_every: Duration) -> Self {
        Self {
            rooms: rooms
                .into_iter()
                .map(|r| Arc::new(RoomRuntime::new(r)))
                .collect(),
            store,
            refresh_every,
        }
    }

    pub fn all(&self) -> &[Arc<RoomRuntime>] {
        &self.rooms
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<RoomRuntime>> {
        self.rooms.iter().find(|r| r.id() == id)
    }

    /// The room protecting `host` + `path` + `method`: the longest matching path prefix wins.
    pub fn find(&self, host: &str, path: &str, method: &str) -> Option<&Arc<RoomRuntime>> {
        let mut best: Option<(&Arc<RoomRuntime>, usize)> = None;
        for r in &self.rooms {
            let c = &r.cfg;
            if !c.hosts.is_empty() && !c.hosts.iter().any(|h| h == host) {
                continue;
            }
            if !c.methods.is_empty() && !c.methods.iter().any(|m| m == method) {
                continue;
            }
            for p in &c.paths {
                if prefix_matches(p, path) && best.is_none_or(|(_, len)| p.len() > len) {
                    best = Some((r, p.len()));
                }
            }
        }
        best.map(|(r, _)| r)
    }

    /// Runs the controller slice and refreshes every room's view once.
    pub async fn refresh(&self) {
        for r in &self.rooms {
            match controller::tick(self.store.as_ref(), &r.cfg.settings, clock::now()).await {
                Ok(snap) => {
                    r.set_store_ok(true);
                    r.install(snap);
                }
                Err(e) => {
                    tracing::debug!(room = r.id(), error = %e, "room refresh failed");
                    r.set_store_ok(false);
                }
            }
        }
    }
}

/// The background service that keeps the views fresh.
#[derive(Debug)]
pub struct RoomSync(pub Arc<Rooms>);

#[async_trait]
impl BackgroundService for RoomSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut every = tokio::time::interval(self.0.refresh_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = every.tick() => self.0.refresh().await,
            }
        }
    }
}
