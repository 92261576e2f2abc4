//! Slowloris and floods leave shoppers served and memory bounded.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_and_floods_leave_shoppers_served_and_memory_bounded() {
    let origin = RawOrigin::start().await;
    let (mut fg, port) = start(&origin).await;
    let client = reqwest::Client::new();
    let base = fg.base.clone();
    // Warm up (thread pools, connection pools, allocator arenas).
    for _ in 0..200 {
        let r = client
            .get(format!("{base}/open"))
            .send()
            .await
            .expect("warm-up request");
        assert_eq!(r.status(), 200);
    }
    let rss_before = fg.rss_kib();

    // A slowloris crowd: 200 connections trickling a request head, a byte every 100 ms, for 3 s.
    const SLOW: usize = 200;
    let trickle = Duration::from_secs(3);
    let mut slow = Vec::new();
    for i in 0..SLOW {
        slow.push(tokio::spawn(async move {
            let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)).await else {
                return 0usize;
            };
            let head = format!("GET /drops/{i} HTTP/1.1\r\nHost: shop.test\r\nX-Slow: ");
            let _ = c.write_all(head.as_bytes()).await;
            let until = Instant::now() + trickle;
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
    // Meanwhile shoppers are served promptly.
    let mut worst = Duration::ZERO;
    let shopping = Instant::now();
    let mut served = 0;
    while shopping.elapsed() < trickle {
        let t = Instant::now();
        let r = client
            .get(format!("{base}/open"))
            .send()
            .await
            .expect("a shopper is served during slowloris");
        assert_eq!(r.status(), 200);
        worst = worst.max(t.elapsed());
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

    // A flood: the malformed corpus over and over, new arrivals, and connections opened and
    // dropped without a byte.
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
    let flood_took = flood_started.elapsed();
    let rss_after = fg.rss_kib();
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    eprintln!(
        "slowloris: {SLOW} connections for {trickle:?}, {served} shopper requests meanwhile, \
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
    let r = client
        .get(format!("{base}/open"))
        .send()
        .await
        .expect("served after the flood");
    assert_eq!(r.status(), 200);
    assert!(fg.is_running());
    fg.assert_no_panic();
}
