//! The deployment files in `config/deploy/` (a Dockerfile and Kubernetes manifests) checked
//! without a container engine or a cluster: every YAML document parses and names itself, the
//! objects refer to each other consistently (labels, ports, the ConfigMap, the Secret's keys),
//! the probes hit admin paths that answer without a token, the grace periods add up, the
//! ConfigMap's `flashgate.toml` passes `flashgate check` (and, pointed at a local Redis and
//! origin, runs), and the Dockerfile's stages and commands are sane. What is left to a real
//! cluster: image pulls, the Redis and shop names resolving, and the scheduler.

mod docker;
mod kubernetes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;
use testkit::shopper::send;
use testkit::RedisServer;
use testkit::{cli, free_port, Config, Launch, Node, Origin};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/deploy")
}
