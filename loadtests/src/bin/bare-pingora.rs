//! The baseline for benchmarks: a bare Pingora pass-through proxy with nothing but an upstream
//! peer. Flashgate's pass-through overhead is measured against this, in the same run.
//!
//! `bare-pingora --listen 127.0.0.1:8181 --upstream 127.0.0.1:3000 --threads 1`

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    upstream: SocketAddr,
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

struct Bare(SocketAddr);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        pid_file: format!("/tmp/bare-pingora-{}.pid", args.listen.port()),
        upgrade_sock: format!("/tmp/bare-pingora-{}.sock", args.listen.port()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut svc = pingora::proxy::http_proxy_service(&server.configuration, Bare(args.upstream));
    svc.add_tcp(&args.listen.to_string());
    server.add_service(svc);
    server.run_forever()
}
