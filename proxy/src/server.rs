//! Assembles the Pingora server from a validated [`Config`]: the gate on the public listeners
//! (plain HTTP, and HTTPS with HTTP/2 when `tls_listen` is set), the admin API on its own, and
//! the background services (room sync, health checks, reload on SIGHUP, the event stream).

use std::path::PathBuf;
use std::sync::Arc;

use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use waitroom::{MemoryStore, Store};

use crate::admin::Admin;
use crate::config::{Branding, Config, StoreKind};
use crate::events::Events;
use crate::gate::Gate;
use crate::metrics::Metrics;
use crate::node::{Node, PoolHealth, ReloadOnHangup, RoomSync};
use crate::pages::Pages;

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

/// Why a node could not be built from a config that parsed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The store's URL makes no client: names the config file and `store.url`.
    #[error("{}: {source}", file.display())]
    Store {
        file: PathBuf,
        source: crate::store::UrlError,
    },
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsSetupError),
}

/// The store a config asks for.
pub fn store_for(cfg: &Config) -> Result<Arc<dyn Store>, BuildError> {
    store_with_metrics(cfg, None)
}

/// The store a config asks for, reporting its circuit breaker's mode changes to `metrics`.
/// Makes no connection: the Redis client connects lazily, inside the Pingora runtime that
/// first uses it.
pub fn store_with_metrics(
    cfg: &Config,
    metrics: Option<Arc<Metrics>>,
) -> Result<Arc<dyn Store>, BuildError> {
    match &cfg.store {
        StoreKind::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreKind::Redis {
            url,
            cluster,
            batch_window,
            tls,
        } => crate::store::redis_stack(url, *cluster, tls.as_ref(), *batch_window, metrics)
            .map_err(|source| BuildError::Store {
                file: cfg.source.clone(),
                source,
            }),
    }
}

/// Builds a ready-to-run server. `path` is the config file a reload re-reads (none for the
/// demo); `upgrade` takes the listening sockets over from a running instance (zero-downtime
/// restart).
pub fn build(
    cfg: &Config,
    path: Option<PathBuf>,
    upgrade: bool,
) -> Result<(Server, Arc<Node>), BuildError> {
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(cfg));
    server.bootstrap();

    let metrics = Arc::new(Metrics::new());
    let store = store_with_metrics(cfg, Some(metrics.clone()))?;
    let (events, events_service) = Events::new(&cfg.events, &metrics);
    let node = Arc::new(Node::new(
        cfg.clone(),
        store,
        metrics.clone(),
        events,
        path,
    )?);

    let gate = Gate {
        node: node.clone(),
        pages: Pages::default(),
        // Per request instead: `Secure` over TLS, or behind a trusted proxy that says https.
        secure_cookies: false,
        default_branding: Branding {
            title: "Flashgate".into(),
            logo_url: String::new(),
            brand_color: "#5b2a86".into(),
            background_color: "#faf7fc".into(),
        },
        hubs: Default::default(),
    };
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gate, "flashgate");
    // Pingora's default write buffer (1460 bytes) sends a response's header and its body in
    // two writes, each waking the client: gather up to `server.write_buffer` bytes first.
    let l4_buffer = L4BufferSettings::default().write(cfg.server.write_buffer);
    for addr in &cfg.server.listen {
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(l4_buffer));
    }
    if let (Some(tls), Some(certs)) = (&cfg.server.tls, &node.tls) {
        for addr in &tls.listen {
            proxy.add_listener(
                ListenerConfig::tcp(addr.to_string())
                    .tls(certs.settings()?)
                    .l4_buffer(l4_buffer),
            );
        }
    }
    let mut admin = Service::new("flashgate admin".to_owned(), Admin { node: node.clone() });
    admin.add_tcp(&cfg.server.admin_listen.to_string());
    admin.threads = Some(1);

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(background_service("room sync", RoomSync(node.clone())));
    server.add_service(background_service(
        "health checks",
        PoolHealth(node.clone()),
    ));
    server.add_service(background_service(
        "reload on SIGHUP",
        ReloadOnHangup(node.clone()),
    ));
    if let Some(svc) = events_service {
        server.add_service(background_service("events", svc));
    }
    Ok((server, node))
}
