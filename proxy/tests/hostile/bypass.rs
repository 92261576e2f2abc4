//! A room cannot be bypassed by path or host tricks.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_cannot_be_bypassed_by_path_or_host_tricks() {
    let origin = RawOrigin::start().await;
    let (mut fg, port) = start(&origin).await;

    // Each of these names the protected /drops/x to some origin (nginx merges slashes and
    // resolves dot-segments, servlet containers drop `;params`, frameworks decode escapes, a
    // trailing dot is the same host): each must be queued.
    let paths = [
        "/drops/x",
        "//drops/x",
        "/./drops/x",
        "/static/../drops/x",
        "/open/%2e%2e/drops/x",
        "/%64rops/x",
        "/drops%2Fx",
        "/drops;jsessionid=1/x",
        "/drops\\x",
        "/static/..%2Fdrops/x",
    ];
    let hosts = [
        "shop.test",
        "SHOP.TEST",
        "shop.test.",
        "shop.test:80",
        "Shop.Test.:8080",
    ];
    let mut tasks = Vec::new();
    for p in paths {
        for h in hosts {
            let bytes = format!(
                "GET {p} HTTP/1.1\r\nHost: {h}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
            )
            .into_bytes();
            tasks.push(probe(port, bytes, (p, h)));
        }
    }
    for t in tasks {
        let ((p, h), r) = t.await.expect("exchange");
        assert!(
            r.status.is_some_and(|s| s < 500),
            "{p} on {h}: {:?}",
            r.status
        );
        if r.status == Some(200) {
            let st: Value = serde_json::from_str(&r.body_text()).unwrap_or_default();
            assert_eq!(
                st["state"],
                "paused",
                "{p} on {h} was not queued: {}",
                r.body_text()
            );
        } else {
            assert_eq!(r.status, Some(400), "{p} on {h}: refused or queued");
        }
    }
    // Pipelined: an innocent request, then a protected one in the same write.
    let r = ask(port, &req("GET /open HTTP/1.1\nHost: shop.test\n\nGET //drops/x HTTP/1.1\nHost: shop.test\nAccept: application/json\nConnection: close\n\n")).await;
    // Pingora does not pipeline: it answers the first and closes. Either way the second is
    // never forwarded; if it is answered, it is queued.
    let text = String::from_utf8_lossy(&r.raw);
    if text.matches("HTTP/1.1 200").count() > 1 {
        assert!(text.contains("\"state\":\"paused\""), "{text}");
    }
    let seen = origin.paths();
    assert_eq!(
        seen,
        vec!["/open".to_owned()],
        "only the innocent request got through"
    );
    assert!(fg.is_running());
    fg.assert_no_panic();
}
