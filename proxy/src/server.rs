//! Assembles the Pingora server from a validated [`Config`]: the gate on the public listeners,
//! the admin API on its own, and the background services (room sync, health checks).

use std::sync::Arc;

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use waitroom::{MemoryStore, Store};

use crate::admin::Admin;
use crate::config::{Branding, Config, StoreKind};
use crate::gate::Gate;
use crate::metrics::Metrics;
use crate::pages::Pages;
use crate::rooms::{RoomSync, Rooms};
use crate::upstream;

/// Pingora's own settings, generated from ours so operators edit one file.
pub fn server_conf(cfg: &Config) -> ServerConf {
    let tag = cfg.server.listen.first().map_or(0, |a| a.port());
    ServerConf {
        threads: cfg.server.threads,
        grace_period_seconds: Some(cfg.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(cfg.server.grace_period.as_secs().max(1)),
        // Distinct per instance so several nodes (and tests) can run on one machine.
        pid_file: format!("/tmp/flashgate-{tag}.pid"),
        upgrade_sock: format!("/tmp/flashgate-{tag}-upgrade.sock"),
        ..ServerConf::default()
    }
}

/// The store a config asks for.
pub fn store_for(cfg: &Config) -> Result<Arc<dyn Store>, String> {
    match &cfg.store {
        StoreKind::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreKind::Redis { .. } => Err(format!(
            "{}: store.kind: \"redis\" is not available in this build yet; use \"memory\"",
            cfg.source.display()
        )),
    }
}

/// Everything a running node shares between its services.
#[derive(Debug, Clone)]
pub struct Node {
    pub rooms: Arc<Rooms>,
    pub metrics: Arc<Metrics>,
}

/// Builds a ready-to-run server. `upgrade` takes the listening sockets over from a running
/// instance (zero-downtime restart).
pub fn build(cfg: &Config, upgrade: bool) -> Result<(Server, Node), String> {
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(cfg));
    server.bootstrap();

    let store = store_for(cfg)?;
    let metrics = Arc::new(Metrics::new());
    let rooms = Arc::new(Rooms::new(cfg.rooms.clone(), store, cfg.snapshot_interval));
    let (pools, health) = upstream::build(&cfg.upstreams).map_err(|e| format!("upstreams: {e}"))?;

    let gate = Gate {
        rooms: rooms.clone(),
        keys: cfg.keys.clone(),
        routes: cfg.routes.clone(),
        pools,
        trusted: cfg.server.trusted_proxies.clone(),
        pages: Pages::default(),
        metrics: metrics.clone(),
        secure_cookies: false,
        default_branding: Branding {
            title: "Flashgate".into(),
            logo_url: String::new(),
            brand_color: "#5b2a86".into(),
            background_color: "#faf7fc".into(),
        },
    };
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gate, "flashgate");
    for addr in &cfg.server.listen {
        proxy.add_tcp(&addr.to_string());
    }
    let mut admin = Service::new(
        "flashgate admin".to_owned(),
        Admin {
            rooms: rooms.clone(),
            metrics: metrics.clone(),
            token: cfg.server.admin_token.clone(),
        },
    );
    admin.add_tcp(&cfg.server.admin_listen.to_string());
    admin.threads = Some(1);

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(background_service("room sync", RoomSync(rooms.clone())));
    for h in health {
        server.add_service(h);
    }
    Ok((server, Node { rooms, metrics }))
}
