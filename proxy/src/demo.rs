//! `flashgate demo`: the demo shop, the proxy and the admin API in one process, with a launch
//! whose pre-queue opens now and whose sale opens a minute later (`config/demo.toml`).

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService};

use crate::config::Config;
use crate::shop::{Shop, ShopConfig};

/// The demo config, compiled in so `flashgate demo` works from any directory.
pub const DEMO_TOML: &str = include_str!("../../config/demo.toml");

/// Addresses the demo listens on.
#[derive(Debug, Clone, Copy)]
pub struct DemoPorts {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub shop: SocketAddr,
}

/// Loads the demo config with the given addresses.
/// Why the demo did not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Build(#[from] crate::server::BuildError),
}

pub fn demo_config(ports: DemoPorts) -> Result<Config, crate::config::ConfigError> {
    let mut cfg = Config::parse("config/demo.toml", DEMO_TOML, crate::clock::now())?;
    cfg.server.listen = vec![ports.proxy];
    cfg.server.admin_listen = ports.admin;
    for u in cfg.upstreams.values_mut() {
        u.servers = vec![ports.shop];
    }
    Ok(cfg)
}

/// Runs the demo shop as a background service of the Pingora server.
#[derive(Debug)]
struct ShopService {
    shop: Shop,
    addr: SocketAddr,
}

#[async_trait]
impl BackgroundService for ShopService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let listener = match tokio::net::TcpListener::bind(self.addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("demo shop cannot listen on {}: {e}", self.addr);
                return;
            }
        };
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = self.shop.clone().serve(listener, stop).await {
            tracing::error!("demo shop stopped: {e}");
        }
    }
}

/// Runs the demo until interrupted.
pub fn run(ports: DemoPorts) -> Result<(), DemoError> {
    let cfg = demo_config(ports)?;
    let (mut server, _node) = crate::server::build(&cfg, None, false)?;
    server.add_service(background_service(
        "demo shop",
        ShopService {
            shop: Shop::new(ShopConfig::demo()),
            addr: ports.shop,
        },
    ));
    let start = cfg
        .rooms
        .first()
        .and_then(|r| r.settings.events.first())
        .map(|e| e.starts_at.since(crate::clock::now()).as_secs())
        .unwrap_or(0);
    println!(
        "\nFlashgate demo\n\
         \n  Open the shop through the waiting room:  http://{proxy}/\n\
         \n  The pre-queue is open now; the sale opens in {start} s. Everyone who joins before\n  \
         the start gets a place drawn at random when it opens; the page counts down and lets\n  \
         you in by itself.\n\
         \n  Status JSON:   curl -s -H 'Accept: application/json' http://{proxy}/\n  \
         Admin API:     curl -s http://{admin}/api/rooms\n  \
         Live changes:  curl -s -X PATCH -d '{{\"new_users_per_minute\": 120}}' http://{admin}/api/rooms/launch\n  \
         Metrics:       curl -s http://{admin}/metrics\n  \
         The shop (direct, for comparison): http://{shop}/\n\
         \n  Ctrl-C to stop.\n",
        proxy = ports.proxy,
        admin = ports.admin,
        shop = ports.shop,
    );
    server.run_forever()
}
