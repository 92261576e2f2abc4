//! The gate end to end: a real flashgate process, a real origin, real HTTP over loopback.

use std::time::Duration;

use serde_json::json;
use testkit::shopper::{self, get_json, Events, Poll};
use testkit::{cli, Config, Node, Origin, Room, SECRET};
use waitroom::{KeyRing, Pass, Ticket};

/// A room over the origin's `/echo` (which reports what it received), with a hostile message.
fn echo_room() -> Room {
    Room::new("drop")
        .poll("1s")
        .windows("30s", "10s")
        .status_code(202)
        .message("<script>alert('x')</script> Big drop")
}

/// A node with [`echo_room`] in front of a fresh origin; `paused` holds the line.
async fn echo_node(paused: bool) -> (Origin, Node) {
    let origin = Origin::start().await;
    let fg = Node::start(&Config::new(origin.addr).room(echo_room())).await;
    if paused {
        fg.patch_room("drop", json!({"paused": true})).await;
    }
    (origin, fg)
}

fn now_secs() -> u64 {
    flashgate::clock::now().secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn arrival_ticket_polls_admission_and_forwarding() {
    let (origin, fg) = echo_node(true).await;

    let shopper = fg.shopper();
    let (code, st, headers) = get_json(&shopper, &format!("{}/echo?x=1", fg.base)).await;
    assert_eq!(code, 202, "the room's queueing status code");
    assert_eq!(st["state"], "paused");
    assert_eq!(st["ticket"], 1);
    assert!(headers.get("retry-after").is_some());
    assert!(
        headers.get("x-flashgate-token").is_some(),
        "token for cookie-less apps"
    );
    assert_eq!(
        origin.shop.stats().requests,
        0,
        "a queued shopper never reaches the origin"
    );

    let st = fg.status(&shopper, "drop").await;
    assert_eq!(st["state"], "paused");
    assert_eq!(st["admitted"], false);

    fg.patch_room("drop", json!({"paused": false})).await;
    fg.wait_admitted(&shopper, "drop", Duration::from_secs(20))
        .await;

    // The shop's own cookie (set through the proxy on an unprotected route) must pass through.
    let cart = shopper.post(fg.url("/cart"));
    let r = shopper::send(cart.form(&[("sku", "NOVA-HIGHLIGHTER"), ("qty", "1")])).await;
    assert_eq!(r.status, 303);
    let r = shopper::get(
        &shopper,
        &fg.url("/echo?x=1"),
        &[("x-forwarded-for", "6.6.6.6")],
    )
    .await;
    assert_eq!(r.status, 200);
    let set_cookies = r.set_cookies();
    assert!(set_cookies.iter().any(|c| c.starts_with("fg_p_drop=")
        && c.contains("HttpOnly")
        && c.contains("SameSite=Lax")));
    assert!(
        set_cookies.iter().any(|c| c.starts_with("fg_t_drop=;")),
        "ticket cookie cleared: {set_cookies:?}"
    );
    let echo = r.json();
    let h = &echo["headers"];
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "untrusted X-Forwarded-For is replaced"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(h["x-request-id"].as_str().is_some_and(|s| s.len() == 24));
    let cookie = h["cookie"].as_str().unwrap_or("");
    assert!(
        cookie.contains("shop_cart=") && !cookie.contains("fg_"),
        "own cookies stripped: {cookie}"
    );
    assert_eq!(origin.shop.stats().requests_with_fg_cookie, 0);

    // The pass works for later requests.
    let r = shopper::get(&shopper, &fg.url("/echo?x=2"), &[]).await;
    assert_eq!(r.status, 200);
    let report = fg.room("drop").await;
    assert_eq!(report["entered_total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn html_and_json_negotiation_and_escaping() {
    let (origin, fg) = echo_node(true).await;
    let c = fg.shopper();
    let accept = [("accept", "text/html,application/xhtml+xml")];
    let r = shopper::get(&c, &fg.url("/echo"), &accept).await;
    assert_eq!(r.status, 202);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    let csp = r.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let html = r.body;
    assert!(
        html.contains("http-equiv=\"refresh\""),
        "works without JavaScript"
    );
    assert!(html.contains("aria-live"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Big drop"));
    assert!(
        !html.contains("<script>alert"),
        "merchant strings are escaped"
    );
    let (code, st, _) = get_json(&c, &format!("{}/echo", fg.base)).await;
    assert_eq!(code, 202);
    assert_eq!(st["room"], "drop");
    let asset = shopper::get(&c, &fg.url("/.flashgate/assets/waiting.js"), &[]).await;
    assert_eq!(asset.status, 200);
    let reserved = shopper::get(&c, &fg.url("/.flashgate/nope"), &[]).await;
    assert_eq!(reserved.status, 404);
    assert_eq!(origin.shop.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_expired_and_foreign_tokens_are_requeued() {
    let (origin, fg) = echo_node(true).await;
    let ours = KeyRing::new(&[(1, SECRET.as_bytes())], 1).expect("ring");
    let theirs = KeyRing::new(
        &[(1, b"another-secret-another-secret-0123456789".as_slice())],
        1,
    )
    .expect("ring");
    let now = now_secs();
    let pass = |room: &str, expires_at: u64| Pass {
        room: room.into(),
        event: 0,
        ticket: 1,
        admitted_at: now - 10,
        checkin_minute: (now / 60) as u32,
        expires_at,
        binding: 0,
        fixed_session: false,
    };
    let valid = ours.sign_pass(&pass("drop", now + 600));
    let mut flipped = valid.clone().into_bytes();
    let i = flipped.len() / 2;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let bad_tokens = [
        ("garbage", "not-a-token".to_owned()),
        ("flipped", String::from_utf8(flipped).expect("ascii")),
        ("other key", theirs.sign_pass(&pass("drop", now + 600))),
        ("expired", ours.sign_pass(&pass("drop", now - 120))),
        ("other room", ours.sign_pass(&pass("checkout", now + 600))),
        (
            "ticket as pass",
            ours.sign_ticket(&Ticket {
                room: "drop".into(),
                event: 0,
                number: 1,
                issued_at: now,
                last_seen: now,
                expires_at: now + 60,
                binding: 0,
                serving_at_issue: 0,
            }),
        ),
    ];
    for (what, tok) in &bad_tokens {
        for how in ["cookie", "header"] {
            let c = reqwest::Client::new();
            let req = c
                .get(format!("{}/echo", fg.base))
                .header("accept", "application/json");
            let req = if how == "cookie" {
                req.header("cookie", format!("fg_p_drop={tok}"))
            } else {
                req.header("x-flashgate-token", tok.as_str())
            };
            let r = shopper::send(req).await;
            assert_eq!(r.status, 202, "{what} via {how}: queued, never a 500");
            assert_eq!(r.json()["state"], "paused", "{what} via {how}");
        }
    }
    assert_eq!(
        origin.shop.stats().requests,
        0,
        "no forged token reached the origin"
    );
    // The genuine pass does get through.
    let cookie = format!("fg_p_drop={valid}");
    let r = shopper::get(
        &reqwest::Client::new(),
        &fg.url("/echo"),
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pass_is_renewed_once_a_minute_not_per_request() {
    let (_origin, fg) = echo_node(false).await;
    let ours = KeyRing::new(&[(1, SECRET.as_bytes())], 1).expect("ring");

    // A pass checked in last minute, sent twice within this minute by a client that ignores
    // the renewed cookie (a script): renewed the first time only. Ticket 0 (floor-rate passes,
    // shared by many shoppers) is renewed every time. If the minute turns between the two
    // requests the second is a legitimate renewal: try again with another ticket.
    for (ticket, every_time) in [(7u64, false), (0, true)] {
        let mut checked = false;
        for attempt in 0..3u64 {
            let now = now_secs();
            let tok = ours.sign_pass(&Pass {
                room: "drop".into(),
                event: 0,
                ticket: if ticket == 0 { 0 } else { ticket + attempt },
                admitted_at: now - 100,
                checkin_minute: (now / 60) as u32 - 1,
                expires_at: now + 600,
                binding: 0,
                fixed_session: false,
            });
            let mut seen = Vec::new();
            let cookie = format!("fg_p_drop={tok}");
            for _ in 0..2 {
                let r = shopper::get(
                    &reqwest::Client::new(),
                    &fg.url("/echo"),
                    &[("cookie", &cookie)],
                )
                .await;
                assert_eq!(r.status, 200, "a valid pass is forwarded");
                seen.push(r.set_cookie("fg_p_drop").is_some());
            }
            if now_secs() / 60 != now / 60 {
                continue;
            }
            assert_eq!(seen, [true, every_time], "ticket {ticket}: renewals");
            checked = true;
            break;
        }
        assert!(checked, "three attempts each crossed a minute boundary");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leave_frees_capacity_at_once() {
    let tiny = Room::new("tiny").capacity(1).poll("1s");
    let (_origin, fg) = testkit::shop_with([tiny.windows("30s", "10s")]).await;
    let a = fg.shopper();
    // A quiet room lets the first shopper straight in.
    fg.wait_room("tiny", "the first slot", |r| {
        r["serving"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(shopper::get(&a, &fg.url("/echo"), &[]).await.status, 200);
    fg.wait_room("tiny", "A counted active", |r| r["active"] == 1)
        .await;

    let b = fg.shopper();
    let (code, st, _) = get_json(&b, &format!("{}/echo", fg.base)).await;
    assert_eq!(code, 200, "waiting page status");
    assert_eq!(st["state"], "queueing");
    assert_eq!(st["ticket"], 2);

    let r = shopper::leave(&fg, &a, "tiny").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.cleared_cookies(), 2, "both cookies cleared");
    let report = fg.room("tiny").await;
    assert_eq!(report["active"], 0, "capacity freed at once: {report}");
    // The pass A held is refused now, even if replayed.
    let (code, st, _) = get_json(&a, &format!("{}/echo", fg.base)).await;
    assert_eq!(code, 200);
    assert!(st["ticket"].as_u64().is_some(), "A is queued again: {st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_revoke_ends_the_session_and_is_stripped() {
    let whole_shop = Room::new("shop").paths(&["/"]).poll("1s");
    let (_origin, fg) = testkit::shop_with([whole_shop.windows("30s", "10s")]).await;
    fg.wait_room("shop", "the first slot", |r| {
        r["serving"].as_u64() >= Some(1)
    })
    .await;
    let c = fg.shopper();
    let r = shopper::get(&c, &fg.url("/products"), &[]).await;
    assert_eq!(r.status, 200);
    fg.wait_room("shop", "shopper counted", |r| r["active"] == 1)
        .await;
    let r = shopper::get(&c, &fg.url("/done"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-flashgate-command").is_none(),
        "command stripped"
    );
    let cleared = r.set_cookies().iter().any(|c| c.starts_with("fg_p_shop=;"));
    assert!(cleared, "pass cookie cleared");
    fg.wait_room("shop", "capacity released", |r| r["active"] == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_down_gives_the_branded_error_page() {
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let fg = Node::start(&Config::new(dead)).await;
    let c = reqwest::Client::new();
    let r = shopper::get(&c, &fg.url("/products"), &[]).await;
    assert_eq!(r.status, 502);
    assert!(r.header("retry-after").is_some());
    assert!(r.body.contains("The shop is busy"), "{}", r.body);

    // With a health check the dead server is marked down: 503, no connect attempt.
    let fg = Node::start(
        &Config::new(dead).pool_line("health_check = { kind = \"tcp\", interval = \"100ms\" }"),
    )
    .await;
    let poll = Poll::every(Duration::from_millis(50)).within(Duration::from_secs(20));
    let what = "the health check to mark the server down";
    let r = shopper::get_until(&c, &fg.url("/products"), &[], poll, what, |r| {
        assert!(
            r.status == 503 || r.status == 502,
            "until the check runs, a connect failure: {}",
            r.status
        );
        r.status == 503
    })
    .await;
    assert!(r.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_sent_events_carry_the_status() {
    let (_origin, fg) = echo_node(true).await;
    let c = fg.shopper();
    let _ = get_json(&c, &format!("{}/echo", fg.base)).await;
    let mut sse = Events::open(&c, &fg.url("/.flashgate/events?room=drop")).await;
    let st = sse.next(Duration::from_secs(20)).await;
    assert_eq!(st["state"], "paused");
    assert_eq!(st["ticket"], 1);
    assert_eq!(fg.metrics().await.value("flashgate_event_streams"), 1.0);
    // Unpausing is pushed to the open stream, which then ends: the answer is final.
    fg.patch_room("drop", json!({"paused": false})).await;
    sse.next_where(Duration::from_secs(5), |st| st["admitted"] == true)
        .await;
    assert_eq!(sse.end(Duration::from_secs(5)).await, None);
    assert_eq!(fg.metrics().await.value("flashgate_event_streams"), 0.0);
    // A status poll agrees.
    let (code, st, _) = get_json(&c, &fg.url("/.flashgate/status?room=drop")).await;
    assert_eq!((code, st["admitted"].clone()), (200, json!(true)));
}

/// An open stream keeps its shopper's place however long it lasts: every event renews the
/// ticket in its `id`, which a reconnecting browser sends back as `Last-Event-ID` (and the
/// waiting page as `X-Flashgate-Token`), though the cookie's ticket lapsed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_stream_keeps_the_place_after_the_cookie_lapses() {
    let origin = Origin::start().await;
    let room = Room::new("drop")
        .poll("1s")
        .set("abandon_after", "3s")
        .set("token_leeway", "0s");
    let fg = Node::start(&Config::new(origin.addr).room(room)).await;
    fg.patch_room("drop", json!({"paused": true})).await;
    // An app-like client: the test says which cookie goes with each request.
    let c = shopper::client();
    let (_, st, headers) = get_json(&c, &fg.url("/echo")).await;
    let ticket = st["ticket"].as_u64().expect("a ticket");
    let cookie = headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';')
                .next()
                .filter(|kv| kv.starts_with("fg_t_drop="))
        })
        .expect("the ticket cookie")
        .to_owned();
    let events = fg.url("/.flashgate/events?room=drop");
    let with_cookie = [("cookie", cookie.as_str())];
    let mut sse = Events::open_with(&c, &events, &with_cookie).await;
    assert_eq!(sse.next(Duration::from_secs(5)).await["ticket"], ticket);
    // Keep-alives (one a second here) renew the ticket; read them for twice abandon_after.
    let until = std::time::Instant::now() + Duration::from_secs(6);
    let id = sse
        .read_until(until, Duration::from_secs(10))
        .await
        .expect("renewed tickets");
    drop(sse);
    let status = fg.url("/.flashgate/status?room=drop");
    // The ticket the stream opened with has lapsed: alone, it holds no place any more.
    let (_, st) = shopper::get_app(&c, &status, &with_cookie).await;
    assert_ne!(st["ticket"], ticket, "{st}");
    // The stream's last id holds it, as the browser sends it on reconnecting...
    let resumed = [("cookie", cookie.as_str()), ("last-event-id", id.as_str())];
    let mut sse = Events::open_with(&c, &events, &resumed).await;
    assert_eq!(sse.next(Duration::from_secs(5)).await["ticket"], ticket);
    // ... and as the page sends it with a poll.
    let polled = [
        ("cookie", cookie.as_str()),
        ("x-flashgate-token", id.as_str()),
    ];
    let (_, st) = shopper::get_app(&c, &status, &polled).await;
    assert_eq!(st["ticket"], ticket, "{st}");
}

#[tokio::test]
async fn check_and_run_reject_a_bad_config_with_its_key() {
    let bad = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bad/rate_zero.toml"
    );
    let out = cli(&["check", bad], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rate_zero.toml: rooms[0].new_users_per_minute: must be > 0"),
        "{err}"
    );
    let out = cli(&["run", "-c", bad], &[]);
    assert_eq!(out.status.code(), Some(2));
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo.toml");
    let out = cli(&["check", good], &[]);
    assert_eq!(out.status.code(), Some(0));
}
