//! Malformed and smuggled requests get clean answers.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_and_smuggled_requests_get_clean_answers() {
    let origin = RawOrigin::start().await;
    let (mut fg, port) = start(&origin).await;
    let started = Instant::now();

    let mut tasks = Vec::new();
    for (name, bytes, want) in corpus() {
        tasks.push(probe(port, bytes, (name, want)));
    }
    let mut table = Vec::new();
    for t in tasks {
        let ((name, want), r) = t.await.expect("exchange");
        table.push(format!("{name:40} {:?}", r.status));
        match want {
            Want::Refused => assert!(
                r.status.is_none_or(|s| (400..500).contains(&s)),
                "{name}: wanted a 4xx or a closed connection, got {:?}: {}",
                r.status,
                String::from_utf8_lossy(&r.raw[..r.raw.len().min(300)])
            ),
            Want::Clean => assert!(
                r.status.is_none_or(|s| s < 500),
                "{name}: got {:?}",
                r.status
            ),
            Want::Queued => {
                assert_eq!(r.status, Some(200), "{name}: queued");
                let st: Value = serde_json::from_str(&r.body_text()).unwrap_or_default();
                assert_eq!(st["state"], "paused", "{name}: {st}");
            }
        }
    }
    eprintln!("{}", table.join("\n"));

    // Smuggling left no trace at the origin, and the next client gets its own answer.
    let r = ask(
        port,
        &req("GET /after HTTP/1.1\nHost: shop.test\nConnection: close\n\n"),
    )
    .await;
    assert_eq!(r.status, Some(200));
    assert_eq!(r.body_text(), "/after", "a response meant for someone else");
    let paths = origin.paths();
    assert!(
        !paths.iter().any(|p| p.contains("drops")),
        "a request for a protected path reached the origin: {paths:?}"
    );
    assert_eq!(
        origin.ambiguous.load(Ordering::Relaxed),
        0,
        "flashgate forwarded a request with both Content-Length and Transfer-Encoding"
    );
    assert!(fg.is_running(), "flashgate died");
    fg.assert_no_panic();
    eprintln!(
        "{} malformed requests in {:?}; the origin saw {} requests",
        table.len(),
        started.elapsed(),
        paths.len()
    );
}
