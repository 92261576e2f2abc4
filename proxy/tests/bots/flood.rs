//! A flood of distinct addresses: the per-client tables stay bounded.

use testkit::config::Table;
use testkit::{Bot, Node, Origin, Room};

use super::{client_at, fetch_challenge, get, header_map, solve, submit, trusting, BROWSER};

/// Distinct addresses by the thousand: the per-client tables stay at their fixed size and
/// evict (counted), and an honest client still gets its challenge and its way in afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_addresses_keeps_memory_bounded() {
    let origin = Origin::start().await;
    // Each address may join twice a minute and each /24 once in ten minutes, so every
    // entry stays live (and must be evicted, not forgotten) for the whole flood.
    let bot = Bot::enforce().always(8).no_pressure();
    let bot = bot.limit("joins_per_minute_per_ip", 2);
    let bot = bot
        .threshold("tickets_per_prefix", 1)
        .threshold("prefix_window", "10m");
    let hype = Room::new("hype").rate(600).capacity(1000).bot(bot);
    let cfg = trusting(origin.addr).table("bot", Table::new().set("table_slots", 1024));
    let fg = Node::start(&cfg.room(hype)).await;
    let fg = std::sync::Arc::new(fg);
    const FLOOD: u32 = 2400;
    const TASKS: u32 = 8;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let fg = fg.clone();
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .default_headers(header_map(BROWSER))
                .build()
                .expect("client");
            let url = format!("{}/echo", fg.base);
            for i in (t..FLOOD).step_by(TASKS as usize) {
                // Every address in a /24 of its own: 10.a.b.1.
                let ip = format!("10.{}.{}.1", i >> 8, i & 0xff);
                let code = c
                    .get(&url)
                    .header("accept", "application/json")
                    .header("x-forwarded-for", ip)
                    .send()
                    .await
                    .expect("request")
                    .status()
                    .as_u16();
                assert_eq!(code, 403, "every new address is challenged");
            }
        }));
    }
    for t in tasks {
        t.await.expect("flood task");
    }
    let m = fg.metrics().await;
    let evicted = |table: &str| m.sum("flashgate_bot_table_evictions_total", &[("table", table)]);
    assert!(evicted("addresses") > 0.0, "the address table is full: {m}");
    assert!(evicted("prefixes") > 0.0, "the prefix table is full");
    assert_eq!(
        m.sum(
            "flashgate_bot_challenges_total",
            &[("room", "hype"), ("result", "issued")]
        ),
        f64::from(FLOOD)
    );
    assert_eq!(origin.shop.stats().requests, 0);

    // After the flood: an honest shopper solves and enters as usual.
    let shopper = client_at("100.82.0.1", BROWSER, true);
    let (challenge, difficulty) = fetch_challenge(&fg, &shopper, "/echo").await;
    let counter = solve(&challenge, difficulty);
    let (code, ans, _) = submit(&fg, &shopper, "hype", &challenge, counter).await;
    assert_eq!(code, 200, "{ans}");
    let (code, _, _) = get(&fg, &shopper, "/echo").await;
    assert_eq!(code, 200);
}
