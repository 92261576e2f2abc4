//! Slowloris and floods leave shoppers served and memory bounded.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_and_floods_leave_shoppers_served_and_memory_bounded() {
    let origin = RawOrigin::start().await;
    let (mut fg, port) = start(&origin).await;
    let client = reqwest::Client::new();
    let open = fg.url("/open");
    // Warm up (thread pools, connection pools, allocator arenas).
    for _ in 0..200 {
        assert_eq!(shopper::get(&client, &open, &[]).await.status, 200);
    }
    let rss_before = fg.rss_kib();

    let (served, worst) = slowloris_leaves_shoppers_served(port, &client, &open).await;
    let flood_took = flood(port).await;

    let rss_after = fg.rss_kib();
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    eprintln!(
        "slowloris: {SLOW} connections for {TRICKLE:?}, {served} shopper requests meanwhile, \
         worst {worst:?}; flood: 16 x 150 x (malformed + join + empty connection) in \
         {flood_took:?}; RSS {} MiB -> {} MiB",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(rss_before > 0, "RSS readable from /proc");
    assert!(
        growth_mib < 64,
        "RSS grew by {growth_mib} MiB under a bounded flood"
    );
    let after = shopper::get(&client, &open, &[]).await;
    assert_eq!(after.status, 200, "served after the flood");
    assert!(fg.is_running());
    fg.assert_no_panic();
}

/// How many slowloris connections.
const SLOW: usize = 200;
/// How long they trickle.
const TRICKLE: Duration = Duration::from_secs(3);

/// A slowloris crowd: [`SLOW`] connections trickling a request head, a byte every 100 ms, for
/// [`TRICKLE`]; meanwhile shoppers at `open` are served promptly. Returns (requests served, the
/// slowest).
async fn slowloris_leaves_shoppers_served(
    port: u16,
    client: &reqwest::Client,
    open: &str,
) -> (usize, Duration) {
    let mut slow = Vec::new();
    for i in 0..SLOW {
        slow.push(tokio::spawn(async move {
            let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)).await else {
                return 0usize;
            };
            let head = format!("GET /drops/{i} HTTP/1.1\r\nHost: shop.test\r\nX-Slow: ");
            let _ = c.write_all(head.as_bytes()).await;
            let until = Instant::now() + TRICKLE;
            let mut sent = 0;
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if c.write_all(b"a").await.is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        }));
    }
    let mut worst = Duration::ZERO;
    let shopping = Instant::now();
    let mut served = 0;
    while shopping.elapsed() < TRICKLE {
        let r = shopper::get(client, open, &[]).await;
        assert_eq!(r.status, 200, "a shopper is served during slowloris");
        worst = worst.max(r.took);
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for s in slow {
        s.await.expect("slow client");
    }
    assert!(
        worst < Duration::from_secs(1),
        "a shopper waited {worst:?} behind {SLOW} slowloris connections"
    );
    (served, worst)
}

/// A flood: the malformed corpus over and over, new arrivals (each queued), and connections
/// opened and dropped without a byte. Returns how long it took.
async fn flood(port: u16) -> Duration {
    let corpus = Arc::new(corpus());
    let flood_started = Instant::now();
    let mut flood = Vec::new();
    for w in 0..16usize {
        let corpus = corpus.clone();
        flood.push(tokio::spawn(async move {
            for i in 0..150usize {
                let n = (w * 150 + i) % corpus.len();
                let bytes = &corpus[n].1;
                // Skip the few multi-megabyte entries to keep the flood quick.
                if bytes.len() > 300_000 {
                    continue;
                }
                let _ = exchange(
                    port,
                    bytes,
                    Duration::from_millis(50),
                    Duration::from_millis(500),
                )
                .await;
                let join = format!(
                    "GET /drops/{w}-{i} HTTP/1.1\r\nHost: shop.test\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
                );
                let r = exchange(
                    port,
                    join.as_bytes(),
                    Duration::from_millis(50),
                    Duration::from_secs(2),
                )
                .await;
                assert_eq!(r.status, Some(200), "a new arrival is queued");
                drop(TcpStream::connect(("127.0.0.1", port)).await);
            }
        }));
    }
    for f in flood {
        f.await.expect("flood worker");
    }
    flood_started.elapsed()
}
