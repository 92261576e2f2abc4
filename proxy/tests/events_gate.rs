//! The event stream through the gate: real shoppers on a real flashgate produce exactly the
//! expected events, in order per ticket, in a real Redis stream; a dead sink drops and counts
//! events while shoppers are served as usual.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::RedisServer;
use testkit::{shopper::get_json, Config, Node, Origin};

fn room(redis_url: &str, buffer: usize) -> String {
    format!(
        r#"
[events]
sink = "redis"
url = "{redis_url}"
stream = "fg:test"
buffer = {buffer}
batch = 4
node = "edge-test"

[[rooms]]
id = "drop"
paths = ["/"]
new_users_per_minute = 600
total_active_users = 100
poll_interval = "1s"
abandon_after = "30s"
claim_window = "10s"
"#
    )
}

/// All events in the stream, parsed.
fn stream(redis: &RedisServer) -> Vec<Value> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis
        .cmd(redis::cmd("XRANGE").arg("fg:test").arg("-").arg("+"))
        .unwrap_or_default();
    entries
        .into_iter()
        .filter_map(|(_, fields)| {
            fields
                .into_iter()
                .find(|(k, _)| k == "event")
                .and_then(|(_, v)| serde_json::from_str(&v).ok())
        })
        .collect()
}

async fn wait_for_events(redis: &RedisServer, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ev = stream(redis);
        if ev.len() >= n {
            return ev;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events arrived: {ev:#?}",
            ev.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn enter(fg: &Node, c: &reqwest::Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, st, _) = get_json(c, &format!("{}/.flashgate/status?room=drop", fg.base)).await;
        if st["admitted"] == true {
            let r = c
                .get(format!("{}/products", fg.base))
                .send()
                .await
                .expect("enter");
            if r.headers()
                .get("set-cookie")
                .is_some_and(|v| v.to_str().unwrap_or("").starts_with("fg_p_drop="))
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "not admitted: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shoppers_produce_the_expected_events_in_order() {
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    let fg = Node::start(&Config::new(origin.addr).extra(room(&redis.url(), 1000))).await;
    fg.patch_room("drop", json!({"paused": true})).await;

    // Three shoppers join while the line is held.
    let shoppers: Vec<reqwest::Client> = (0..3).map(|_| fg.shopper()).collect();
    for c in &shoppers {
        let (_, st, _) = get_json(c, &format!("{}/products", fg.base)).await;
        assert!(st["ticket"].as_u64().is_some(), "queued: {st}");
    }
    fg.patch_room("drop", json!({"paused": false})).await;
    for c in &shoppers {
        enter(&fg, c).await;
    }
    // 1 leaves; 2 is ended by the origin; 3 rates the wait.
    let r = shoppers[0]
        .post(format!("{}/.flashgate/leave?room=drop", fg.base))
        .header("accept", "application/json")
        .send()
        .await
        .expect("leave");
    assert_eq!(r.status(), 200);
    let r = shoppers[1]
        .get(format!("{}/done", fg.base))
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    let r = shoppers[2]
        .post(format!("{}/.flashgate/feedback?room=drop", fg.base))
        .header("content-type", "application/json")
        .body(r#"{"rating": 5, "comment": "smooth"}"#)
        .send()
        .await
        .expect("feedback");
    assert_eq!(r.status(), 204);
    // Without a ticket or pass, feedback is refused.
    let r = reqwest::Client::new()
        .post(format!("{}/.flashgate/feedback?room=drop", fg.base))
        .header("content-type", "application/json")
        .body(r#"{"rating": 1}"#)
        .send()
        .await
        .expect("feedback");
    assert_eq!(r.status(), 403);

    // 2 pauses changes + 3 joins + 3 admissions + leave + revoke + feedback = 11.
    let events = wait_for_events(&redis, 11).await;
    let text = serde_json::to_string(&events).expect("json");
    assert!(!text.contains(testkit::SECRET), "no secret in events");
    assert!(
        !text.contains("fg_p_") && !text.contains("fg_t_"),
        "no raw tokens in events"
    );
    let mut per_ticket: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for e in &events {
        assert_eq!(e["v"], 1, "versioned schema: {e}");
        assert_eq!(e["room"], "drop");
        assert_eq!(e["node"], "edge-test");
        assert!(e["id"].as_str().is_some() && e["time"].as_str().is_some());
        if let Some(t) = e["ticket"].as_u64() {
            per_ticket
                .entry(t)
                .or_default()
                .push(e["kind"].as_str().unwrap_or("").to_owned());
        }
    }
    let kinds = |t: u64| per_ticket.get(&t).cloned().unwrap_or_default();
    assert_eq!(kinds(1), ["ticket_issued", "admitted", "session_ended"]);
    assert_eq!(kinds(2), ["ticket_issued", "admitted", "session_ended"]);
    assert_eq!(kinds(3), ["ticket_issued", "admitted", "feedback"]);
    let reasons: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "session_ended")
        .map(|e| &e["reason"])
        .collect();
    assert_eq!(reasons, [&json!("leave"), &json!("revoke")]);
    let changes: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "room_state_changed")
        .collect();
    assert_eq!(changes.len(), 2, "pause and resume");
    assert_eq!(changes[0]["what"], "paused");
    assert_eq!(changes[0]["after"], true);
    assert!(changes[0]["by"]
        .as_str()
        .is_some_and(|b| b.starts_with("admin")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_sink_drops_and_counts_without_hurting_shoppers() {
    let mut redis = RedisServer::start();
    let origin = Origin::start().await;
    let fg = Node::start(&Config::new(origin.addr).extra(room(&redis.url(), 8))).await;
    redis.kill();
    // Forty new arrivals: far more events than the buffer holds while the sink is down.
    for _ in 0..40 {
        let c = fg.shopper();
        let r = c
            .get(format!("{}/products", fg.base))
            .send()
            .await
            .expect("request");
        assert!(
            r.status().is_success(),
            "shoppers are served as usual: {}",
            r.status()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = fg.metrics().await;
        let dropped = m.sum("flashgate_events_dropped_total", &[]);
        if dropped > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no dropped events counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = fg.room("drop").await;
    assert!(
        report["entered_total"].as_u64() >= Some(1),
        "admissions went on: {report}"
    );
}
