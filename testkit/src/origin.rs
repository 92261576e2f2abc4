//! The origin: the demo shop on an ephemeral port inside the test's runtime. It counts what it
//! served ([`Shop::stats`]) and echoes requests on `/echo`, so tests see what reached it.

use std::net::SocketAddr;
use std::time::Duration;

use demo_shop::{Shop, ShopConfig};
use tokio::sync::oneshot;

/// The demo shop, stopped when dropped.
#[derive(Debug)]
pub struct Origin {
    pub shop: Shop,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Origin {
    /// The demo catalog, answering at once.
    pub async fn start() -> Self {
        Self::with_config(ShopConfig::demo()).await
    }

    /// The demo catalog, waiting `latency` before every response.
    pub async fn with_latency(latency: Duration) -> Self {
        Self::with_config(ShopConfig {
            latency,
            ..ShopConfig::demo()
        })
        .await
    }

    pub async fn with_config(config: ShopConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let shop = Shop::new(config);
        let (tx, rx) = oneshot::channel::<()>();
        let s = shop.clone();
        tokio::spawn(async move {
            let _ = s
                .serve(listener, async move {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            shop,
            addr,
            stop: Some(tx),
        }
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.shop.stats().requests
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
