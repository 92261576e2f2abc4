//! The feedback pulse: the waiting page's one-tap "How is your wait?" rating, end to end on a
//! real flashgate. It works as a plain form (303 back to the page) and as JSON (204), each
//! ticket rates once on a node (429 after that, nothing counted or published), and the ratings
//! show in the metrics, the room report and the event stream.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::config::events_file;
use testkit::shopper::{self, get_json, send, Reply};
use testkit::{wait_until, Config, Metrics, Node, Origin, Room};

/// A node whose events go to the file `events` one by one, with one room over `/echo`.
fn node(origin: &Origin, events: &std::path::Path) -> Config {
    let drop = Room::new("drop").rate(600).poll("1s").windows("30s", "10s");
    Config::new(origin.addr)
        .table("events", events_file(events).set("batch", 1))
        .room(drop)
}

/// `POST /.flashgate/feedback?room=drop&return=/echo` as the no-JS form sends it.
async fn rate_by_form(fg: &Node, c: &reqwest::Client, rating: &str) -> Reply {
    let url = fg.url("/.flashgate/feedback?room=drop&return=/echo%3Fsku%3D1");
    send(c.post(url).form(&[("rating", rating)])).await
}

/// The same as `waiting.js` sends it.
async fn rate_by_json(fg: &Node, c: &reqwest::Client, body: Value) -> (u16, String) {
    let url = fg.url("/.flashgate/feedback?room=drop");
    let r = send(c.post(url).header("accept", "application/json").json(&body)).await;
    (r.status, r.body)
}

/// The value of the `flashgate_feedback_total` sample of `rating` in room `drop`.
fn feedback_sample(metrics: &Metrics, rating: u8) -> Option<f64> {
    let rating = rating.to_string();
    metrics.first(
        "flashgate_feedback_total",
        &[("rating", &rating), ("room", "drop")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_shoppers_rate_the_wait_once() {
    let dir = std::env::temp_dir().join(format!("flashgate-feedback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let events = dir.join("events.jsonl");
    let origin = Origin::start().await;
    let fg = Node::start(&node(&origin, &events)).await;
    fg.patch_room("drop", json!({"paused": true})).await;

    // Two shoppers wait in line; the page they see carries the form, which works without JS.
    let (a, b) = (fg.shopper(), fg.shopper());
    let page = shopper::get(&a, &fg.url("/echo?sku=1"), &[]).await;
    assert_eq!(page.status, 200);
    let html = page.body;
    assert!(
        html.contains(
            r#"<form class="rate" id="fg-rate" method="post" action="/.flashgate/feedback?room=drop&amp;return=/echo%3Fsku%3D1">"#
        ),
        "the rating form posts back to this page: {html}"
    );
    for n in 1..=5 {
        assert!(
            html.contains(&format!(
                r#"<button type="submit" name="rating" value="{n}">"#
            )),
            "a submit button for rating {n}"
        );
    }
    assert!(html.contains(r#"id="fg-thanks""#), "the no-JS thanks note");
    let (_, st, _) = get_json(&b, &fg.url("/echo")).await;
    assert_eq!(st["ticket"], 2, "{st}");

    // Nobody else may rate: no ticket, a bad value (which does not use the rating up).
    let stranger = fg.shopper();
    let (code, body) = rate_by_json(&fg, &stranger, json!({"rating": 5})).await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = rate_by_json(&fg, &b, json!({"rating": 9})).await;
    assert_eq!(code, 400, "{body}");

    // A rates with the form: 303 back to the page, at its thanks note.
    let r = rate_by_form(&fg, &a, "4").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/echo?sku=1#fg-thanks"));
    // A second rating from A, by either route, is refused and counts nothing.
    let (code, body) = rate_by_json(&fg, &a, json!({"rating": 1})).await;
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("already rated"), "{body}");
    let r = rate_by_form(&fg, &a, "1").await;
    assert_eq!(r.status, 429);
    let html = r.body;
    assert!(
        html.contains(r#"<a href="/echo?sku=1">"#),
        "a way back: {html}"
    );
    // B rates with JSON, as waiting.js does: 204.
    let (code, body) = rate_by_json(&fg, &b, json!({"rating": 2, "comment": "slow"})).await;
    assert_eq!((code, body.as_str()), (204, ""));

    // Metrics: one sample per rating given, from the closed set 1..5.
    let metrics = fg.metrics().await;
    assert_eq!(feedback_sample(&metrics, 4), Some(1.0), "{metrics}");
    assert_eq!(feedback_sample(&metrics, 2), Some(1.0));
    assert_eq!(
        feedback_sample(&metrics, 1),
        None,
        "the refused 1 is not counted"
    );
    // The room report: this node's pulse.
    let report = fg.room("drop").await;
    assert_eq!(
        report["feedback"],
        json!({"count": 2, "average": 3.0, "by_rating": [0, 1, 0, 1, 0]}),
        "{report}"
    );

    // Admitted, A's pass carries the same ticket: still one rating.
    fg.patch_room("drop", json!({"paused": false})).await;
    fg.wait_admitted(&a, "drop", Duration::from_secs(20)).await;
    let (code, echo, _) = get_json(&a, &fg.url("/echo")).await;
    assert_eq!((code, &echo["method"]), (200, &json!("GET")), "A entered");
    let (code, body) = rate_by_json(&fg, &a, json!({"rating": 5})).await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(fg.room("drop").await["feedback"]["count"], 2);

    // The event stream got the two accepted ratings and nothing of the refused ones (events
    // leave a node in order, so once B's is written, any from the refusals would be too).
    let feedback = feedback_events(&events).await;
    let got: Vec<(Value, Value, Value)> = feedback
        .iter()
        .map(|e| {
            (
                e["ticket"].clone(),
                e["rating"].clone(),
                e["comment"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (json!(1), json!(4), Value::Null),
            (json!(2), json!(2), json!("slow"))
        ]
    );
    drop(fg);
    let _ = std::fs::remove_dir_all(dir);
}

/// The feedback events in the file `events`, once ticket 2's has been written (deadline 20 s).
async fn feedback_events(events: &std::path::Path) -> Vec<Value> {
    wait_until("ticket 2's feedback event", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(events).unwrap_or_default();
        let all: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|e: &Value| e["kind"] == "feedback")
            .collect();
        all.iter().any(|e| e["ticket"] == 2).then_some(all)
    })
    .await
}
