//! 200 concurrent shoppers in a 60-per-minute room: admitted in ticket order, never faster
//! than the rate, and the origin sees exactly the admitted shoppers. Takes about 200 s of
//! real time, because that is what 200 admissions at 60 per minute take.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use testkit::shopper::{get_json, Line};
use testkit::Room;

const SHOPPERS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_shoppers_enter_in_ticket_order_at_the_rate() {
    // No-show compensation off: every shopper here shows up, but on a loaded machine one may
    // claim later than the claim window (or be refused by the minute cap until the next
    // minute); the controller would then learn a "no-show" and, as designed, let the serving
    // number run ahead of the plain rate, which is not what this test measures. (Seen once in
    // four CI runs: serving 95 after 90.3 s against 94 allowed.) Compensation has its own
    // tests in `waitroom` (controller and simulation).
    let room = Room::new("drop")
        .capacity(1000)
        .poll("1s")
        .set("max_noshow_compensation", 0.0);
    let (origin, fg) = testkit::shop_with([room.windows("60s", "10s")]).await;
    let fg = Arc::new(fg);
    // Everyone arrives while the line is held, as in a launch burst.
    fg.patch_room("drop", json!({"paused": true})).await;
    let mut joins = Vec::new();
    for _ in 0..SHOPPERS {
        let fg = fg.clone();
        joins.push(tokio::spawn(async move {
            let c = fg.shopper();
            let (code, st, _) = get_json(&c, &format!("{}/echo", fg.base)).await;
            assert_eq!(code, 200);
            assert!(st["state"].is_string(), "queued, not forwarded: {st}");
            let t = st["ticket"].as_u64().expect("a ticket");
            (c, t)
        }));
    }
    let mut shoppers = Vec::new();
    for j in joins {
        shoppers.push(j.await.expect("join"));
    }
    let mut tickets: Vec<u64> = shoppers.iter().map(|(_, t)| *t).collect();
    tickets.sort_unstable();
    assert_eq!(
        tickets,
        (1..=SHOPPERS).collect::<Vec<_>>(),
        "one distinct ticket each"
    );
    let start_serving = fg.room("drop").await["serving"].as_u64().expect("serving");
    assert!(
        start_serving <= 2,
        "at most the idle lead before the burst: {start_serving}"
    );

    let line = Line::new("drop", "/echo", Duration::from_secs(400));
    let started = line.opened;
    fg.patch_room("drop", json!({"paused": false})).await;
    let mut tasks = Vec::new();
    for (c, ticket) in shoppers {
        let (fg, line) = (fg.clone(), line.clone());
        tasks.push(tokio::spawn(async move {
            let entered = |code: u16, body: &serde_json::Value| {
                assert_eq!(code, 200, "ticket {ticket}");
                // The origin's echo has the request's method; the waiting page JSON has a
                // state. The store may still refuse a claim (minute cap): keep polling then.
                assert!(
                    body["method"] == "GET" || body["state"].is_string(),
                    "ticket {ticket}: neither origin nor waiting: {body}"
                );
            };
            line.wait_and_enter(&*fg, &c, ticket, entered).await;
        }));
    }
    for t in tasks {
        t.await.expect("shopper task");
    }

    let seen = line.seen();
    for s in &seen {
        // FIFO: the serving number decides, in ticket order.
        assert_eq!(s.admitted, s.ticket <= s.serving, "{s:?}");
        if !s.admitted {
            assert_eq!(s.position, Some(s.ticket - s.serving), "{s:?}");
        }
        // The rate: one per second after the bank of two, never faster.
        let allowed = start_serving + 2 + s.at.as_secs() + 1;
        assert!(
            s.serving <= allowed,
            "serving {} after {:?} (allowed {allowed})",
            s.serving,
            s.at
        );
    }
    // Everyone got in; it took at least (200 - bank) seconds at 60 per minute.
    assert!(started.elapsed() >= Duration::from_secs(SHOPPERS - start_serving - 3));
    let stats = origin.shop.stats();
    assert_eq!(
        stats.requests, SHOPPERS,
        "the origin saw exactly the admitted requests"
    );
    assert_eq!(stats.requests_with_fg_cookie, 0);
    let report = fg.room("drop").await;
    assert_eq!(report["entered_total"], SHOPPERS);
}
