//! The event stream through the gate: real shoppers on a real flashgate produce exactly the
//! expected events, in order per ticket, in a real Redis stream; a dead sink drops and counts
//! events while shoppers are served as usual.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::config::Table;
use testkit::shopper::{self, get_json};
use testkit::{wait_for, wait_until, Config, Node, Origin, RedisServer, Room};

/// A node whose events go to the stream `fg:test` on the Redis at `redis_url` through a
/// buffer of `buffer`, with one room over the whole shop.
fn node(origin: &Origin, redis_url: &str, buffer: usize) -> Config {
    let events = Table::new()
        .set("sink", "redis")
        .set("url", redis_url)
        .set("stream", "fg:test")
        .set("buffer", buffer as u32)
        .set("batch", 4)
        .set("node", "edge-test");
    let drop = Room::new("drop").paths(&["/"]).rate(600).poll("1s");
    Config::new(origin.addr)
        .table("events", events)
        .room(drop.windows("30s", "10s"))
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
    let what = format!("{n} events in the stream");
    wait_until(&what, Duration::from_secs(20), || {
        let ev = stream(redis);
        (ev.len() >= n).then_some(ev)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shoppers_produce_the_expected_events_in_order() {
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    let fg = Node::start(&node(&origin, &redis.url(), 1000)).await;
    fg.patch_room("drop", json!({"paused": true})).await;

    // Three shoppers join while the line is held.
    let shoppers: Vec<reqwest::Client> = (0..3).map(|_| fg.shopper()).collect();
    for c in &shoppers {
        let (_, st, _) = get_json(c, &fg.url("/products")).await;
        assert!(st["ticket"].as_u64().is_some(), "queued: {st}");
    }
    fg.patch_room("drop", json!({"paused": false})).await;
    for c in &shoppers {
        fg.enter_when_admitted(c, "drop", "/products", Duration::from_secs(20))
            .await;
    }
    // 1 leaves; 2 is ended by the origin; 3 rates the wait.
    assert_eq!(shopper::leave(&fg, &shoppers[0], "drop").await.status, 200);
    let revoked = shopper::get(&shoppers[1], &fg.url("/done"), &[]).await;
    assert_eq!(revoked.status, 200);
    let rating = r#"{"rating": 5, "comment": "smooth"}"#;
    assert_eq!(
        shopper::feedback(&fg, &shoppers[2], "drop", rating).await,
        204
    );
    // Without a ticket or pass, feedback is refused.
    let stranger = reqwest::Client::new();
    let code = shopper::feedback(&fg, &stranger, "drop", r#"{"rating": 1}"#).await;
    assert_eq!(code, 403);

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
    let fg = Node::start(&node(&origin, &redis.url(), 8)).await;
    redis.kill();
    // Forty new arrivals: far more events than the buffer holds while the sink is down.
    for _ in 0..40 {
        let r = shopper::get(&fg.shopper(), &fg.url("/products"), &[]).await;
        assert!(
            (200..300).contains(&r.status),
            "shoppers are served as usual: {}",
            r.status
        );
    }
    wait_for(
        "dropped events counted",
        Duration::from_secs(20),
        || async {
            let m = fg.metrics().await;
            m.sum("flashgate_events_dropped_total", &[]) > 0.0
        },
    )
    .await;
    let report = fg.room("drop").await;
    assert!(
        report["entered_total"].as_u64() >= Some(1),
        "admissions went on: {report}"
    );
}
