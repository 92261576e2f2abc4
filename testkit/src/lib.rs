//! Flashgate's test kit: everything an integration test needs to talk to real parts, in one
//! place, so that a test reads as its scenario.
//!
//! - [`Node`]: a real `flashgate run` process (start, ready, stop, kill, restart, upgrade; its
//!   log captured and shown when the test fails), configured with the typed [`Config`] builder
//!   and its rooms as typed [`Room`]s (with [`Bot`] defence, [`Route`]s, `config::Table`s).
//! - [`RedisServer`]: a real `redis-server` on a free port (standalone or a one-node cluster).
//! - [`Origin`]: the demo shop on an ephemeral port, counting what it served.
//! - [`Metrics`]: the one Prometheus text parser.
//! - [`shopper`]: HTTP as shoppers speak it (cookie jar, JSON status, server-sent events).
//! - [`wait_for`]: polling with a deadline (no test synchronises by sleeping).
//!
//! Ports come from [`free_port`], never a fixed number; nothing here touches the machine's own
//! Redis on 6379.
//!
//! ```ignore
//! use testkit::Room;
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn a_shopper_is_queued() {
//!     let (_origin, node) = testkit::shop_with([Room::new("drop").poll("1s")]).await;
//!     node.patch_room("drop", serde_json::json!({"paused": true})).await;
//!     let c = testkit::shopper::browser();
//!     let (_, st, _) = testkit::shopper::get_json(&c, &node.url("/echo")).await;
//!     assert_eq!(st["state"], "paused");
//! }
//! ```

pub mod config;
mod node;
mod origin;
mod pki;
mod ports;
mod prom;
mod redis;
pub mod shopper;
mod wait;

pub use config::{Bot, Config, Room, Route, Secret, Store};
pub use node::{cli, flashgate_bin, Launch, Node, Ready};
pub use origin::Origin;
pub use pki::TestPki;
pub use ports::free_port;
pub use prom::{Metrics, Sample};
pub use redis::{
    ClusterMember, RedisCluster, RedisSentinels, RedisServer, TlsFiles, FLASHGATE_ACL,
    SENTINEL_MASTER,
};
pub use wait::{wait_for, wait_until, DEADLINE};

/// The demo shop, and a node in front of it running `rooms` (the most common set-up).
pub async fn shop_with(rooms: impl IntoIterator<Item = Room>) -> (Origin, Node) {
    let origin = Origin::start().await;
    let cfg = rooms
        .into_iter()
        .fold(Config::new(origin.addr), Config::room);
    let node = Node::start(&cfg).await;
    (origin, node)
}

/// The `.toml` files in `dir` (shipped configs, scenarios, bad fixtures), sorted by name.
pub fn toml_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<_> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// The inline signing secret every test config uses (tests forge tokens with it).
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// The environment variable a node with an admin token reads it from
/// ([`Config::admin_token`]).
pub const ADMIN_TOKEN_ENV: &str = "FG_TEST_ADMIN_TOKEN";
