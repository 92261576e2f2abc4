//! Free loopback ports for nodes, origins and Redis servers.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// A port nobody listens on right now, below the kernel's ephemeral range. A port from
/// `bind(0)` comes from that range, and until the node binds it any outgoing connection on the
/// machine (another test's client or proxy) may take it as its local port — a node then waits
/// for it in vain (seen once under a full `make test`). Ports below the range are handed out by
/// nobody but this function, which gives each caller in the process a different one.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(LOWEST);
    if span >= 1_000 {
        // Test binaries run one after another; a different start per process keeps a port
        // that a previous binary's node left in TIME_WAIT out of the way.
        let start = std::process::id().wrapping_mul(2_654_435_761) % span;
        for _ in 0..span {
            // 7,919 is prime: consecutive calls spread over the span.
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = LOWEST + (start + n.wrapping_mul(7_919)) % span;
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
                drop(l);
                return port as u16;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}
