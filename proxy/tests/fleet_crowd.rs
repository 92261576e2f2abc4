//! Three `flashgate` nodes sharing one real `redis-server` (started by the test on a free port),
//! in front of a real origin, and 1,000 shoppers spread over the nodes: unique ticket numbers,
//! admission in one global ticket order, the admitted rate within ±5 % of the target over the
//! run, and active shoppers never above the cap. About a minute of real time: 1,000 admissions
//! at 1,200 a minute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::shopper::{get_json, Line};
use testkit::RedisServer;
use testkit::{Config, Node, Origin, Room};

const SHOPPERS: u64 = 1_000;
const RATE: u64 = 1_200; // per minute
const CAP: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_one_thousand_shoppers_one_order_one_rate() {
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    let sale = Room::new("drop").rate(RATE as u32).capacity(CAP as u32);
    let cfg = Config::new(origin.addr).redis(redis.url());
    let cfg = cfg.room(sale.poll("1s").windows("60s", "10s"));
    let nodes = Node::fleet::<3>(&cfg).await.map(Arc::new).to_vec();
    // Everyone arrives while the line is held: a launch burst, spread over the three nodes.
    nodes[0].patch_room("drop", json!({"paused": true})).await;
    for n in &nodes {
        n.wait_room("drop", "the pause on every node", |r| r["paused"] == true)
            .await;
    }
    let mut joins = Vec::new();
    for i in 0..SHOPPERS {
        let fg = nodes[(i % 3) as usize].clone();
        joins.push(tokio::spawn(async move {
            let c = fg.shopper();
            let (code, st, _) = get_json(&c, &format!("{}/echo", fg.base)).await;
            assert_eq!(code, 200, "queued: {st}");
            (c, i % 3, st["ticket"].as_u64().expect("a ticket"))
        }));
    }
    let mut shoppers = Vec::new();
    for j in joins {
        shoppers.push(j.await.expect("join"));
    }
    let mut tickets: Vec<u64> = shoppers.iter().map(|(_, _, t)| *t).collect();
    tickets.sort_unstable();
    tickets.dedup();
    assert_eq!(
        tickets.len() as u64,
        SHOPPERS,
        "ticket numbers are unique across the fleet"
    );
    let start_serving = nodes[0].room("drop").await["serving"]
        .as_u64()
        .expect("serving");

    let line =
        Line::new("drop", "/echo", Duration::from_secs(240)).max_pause(Duration::from_secs(2));
    nodes[1].patch_room("drop", json!({"paused": false})).await;
    let mut tasks = Vec::new();
    for (c, node, ticket) in shoppers {
        // Each shopper keeps to one node, as behind a sticky load balancer; nodes differ.
        let (fg, line) = (nodes[node as usize].clone(), line.clone());
        tasks.push(tokio::spawn(async move {
            line.wait_and_enter(&*fg, &c, ticket, |_, _| {}).await
        }));
    }
    let watch = max_active_while_selling(nodes.clone(), line.opened);
    let mut entered_at = Vec::new();
    for t in tasks {
        entered_at.push(t.await.expect("shopper"));
    }
    let max_active = watch.await.expect("watch");
    assert!(max_active <= CAP, "active {max_active} above the cap {CAP}");

    // One global order, on every node: only tickets ≤ serving are admitted, and a ticket ≤
    // serving that is not (the minute's entries used up, or the room full this instant) is
    // told it is next; nobody behind it is admitted meanwhile (their tickets are > serving).
    for s in &line.seen() {
        if s.admitted {
            assert!(s.ticket <= s.serving, "{s:?}");
        } else if s.ticket <= s.serving {
            assert_eq!(s.position, Some(1), "{s:?}");
        } else {
            assert_eq!(s.position, Some(s.ticket - s.serving), "{s:?}");
        }
    }
    // The rate over the run: (admissions after the bank) ÷ time, within ±5 % of the target.
    let last = entered_at.iter().max().copied().unwrap_or_default();
    let admitted_after_start = SHOPPERS.saturating_sub(start_serving);
    let per_minute = admitted_after_start as f64 / last.as_secs_f64() * 60.0;
    let target = RATE as f64;
    assert!(
        (per_minute - target).abs() <= 0.05 * target + 60.0 / last.as_secs_f64() * 4.0,
        "admitted {per_minute:.0}/min over {last:?} against {target}/min"
    );
    assert_eq!(
        origin.shop.stats().requests,
        SHOPPERS,
        "the origin saw exactly the admitted"
    );
    let total: u64 = {
        let mut t = 0;
        for n in &nodes {
            t = t.max(n.room("drop").await["entered_total"].as_u64().unwrap_or(0));
        }
        t
    };
    assert_eq!(total, SHOPPERS);
}

/// Active shoppers, sampled from every node while the sale runs (until everyone entered, or
/// 240 s after `started`): the highest seen.
fn max_active_while_selling(
    nodes: Vec<Arc<Node>>,
    started: Instant,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut max_active = 0;
        while started.elapsed() < Duration::from_secs(240) {
            for n in &nodes {
                let r = n.room("drop").await;
                max_active = max_active.max(r["active"].as_u64().unwrap_or(0));
                if r["entered_total"].as_u64() >= Some(SHOPPERS) {
                    return max_active;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        max_active
    })
}
