//! Clock skew between nodes, within the token leeway.

use super::*;

/// The sale with a 5 s token leeway, and a room that challenges everyone.
fn skewed() -> [Room; 2] {
    let pow = Room::new("pow").paths(&["/pow"]).rate(600).capacity(1000);
    let bot = Bot::enforce().always(4).set("pass_binding", "none");
    [
        sale().set("token_leeway", "5s"),
        pow.bot(bot.scores(30, 900, 1000)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clock_skew_within_the_leeway_between_nodes() {
    // Leeway 5 s; node A runs 2 s slow and node B 2 s fast: 4 s apart = leeway − 1 s.
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    let skew = flashgate::clock::SKEW_ENV;
    let a = on_redis(origin.addr, &redis.url(), &skewed(), &[(skew, "-2000")]).await;
    let b = on_redis(origin.addr, &redis.url(), &skewed(), &[(skew, "2000")]).await;
    let (fa, fb) = (&a, &b);
    assert!(
        fa.log_text().contains("FLASHGATE_CLOCK_SKEW_MS is set"),
        "a skewed node says so"
    );
    pause(fa, fb).await;

    // Twelve join, half on each node, and then poll the *other* node too: every token crosses
    // the skew both ways (minted 4 s in the verifier's future, or 4 s in its past).
    let mut line = Vec::new();
    for i in 0..12 {
        let fg = if i % 2 == 0 { fa } else { fb };
        let other = if i % 2 == 0 { fb } else { fa };
        let c = fg.shopper();
        let mut w = Watch::new(join(fg, &c).await);
        w.observe(
            &other.status(&c, "drop").await,
            "minted on one node, read on the other",
        );
        w.observe(&fg.status(&c, "drop").await, "and back");
        line.push((1 - i % 2, c, w));
    }
    let nodes: Vec<String> = vec![fa.base.clone(), fb.base.clone()];
    let entries: Arc<Mutex<Vec<(u64, Duration)>>> = Arc::default();
    let started = Instant::now();
    fa.patch_room("drop", json!({"paused": false})).await;
    // Each polls (and claims at) the node opposite to the one that issued its ticket.
    let admitted = run_line(
        nodes.clone(),
        line,
        started,
        entries.clone(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(admitted.len(), 12);
    // Passes minted on either node work on both.
    for (_, c) in &admitted {
        for fg in &nodes {
            assert_eq!(enter(fg, c).await, (200, true), "a pass across the skew");
        }
    }
    assert_within_rate(&entries.lock(), 4.0, 0.0, "skewed nodes");

    // A proof-of-work challenge issued by B (2 s fast) is redeemed at A (2 s slow), and the
    // challenge-passed cookie from A is honoured by B.
    let c = fb.shopper();
    let (code, ch, _) = get_json(&c, &format!("{}/pow", fb.base)).await;
    assert_eq!(code, 403, "challenged: {ch}");
    let token = ch["challenge"]
        .as_str()
        .expect("challenge token")
        .to_owned();
    let difficulty = ch["difficulty"].as_u64().expect("difficulty") as u8;
    let counter = flashgate::bot::challenge::solve(&token, difficulty);
    let r = c
        .post(format!("{}/.flashgate/challenge", fa.base))
        .form(&[
            ("room", "pow"),
            ("challenge", token.as_str()),
            ("counter", counter.to_string().as_str()),
        ])
        .send()
        .await
        .expect("solution");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let (code, st, _) = get_json(&c, &format!("{}/pow", fb.base)).await;
    assert_ne!(code, 403, "challenged again at the other node: {st}");

    // Beyond the leeway (a third node 9 s ahead of A), a ticket it mints is refused at A:
    // treated as no ticket — a new place, never a 500 and never an entry.
    let far = on_redis(origin.addr, &redis.url(), &skewed(), &[(skew, "7000")]).await;
    fa.patch_room("drop", json!({"paused": true})).await;
    let c = far.shopper();
    let within = Duration::from_secs(5);
    far.wait_status(&c, "drop", within, |st| st["state"] == "paused")
        .await;
    let t = join(&far, &c).await;
    let st = fa.status(&c, "drop").await;
    assert_eq!(
        st["ticket"],
        Value::Null,
        "a token from 9 s ahead verified: {st}"
    );
    let r = get(fa, &c, "/echo").await;
    assert_eq!(r.status(), 200);
    let st: Value = r.json().await.unwrap_or_default();
    assert_ne!(
        st["ticket"].as_u64(),
        Some(t),
        "re-queued with a new number: {st}"
    );
    eprintln!("skew: 12 shoppers across nodes 4 s apart, entries in bound; 9 s apart: re-queued");
    a.assert_no_panic();
    b.assert_no_panic();
    far.assert_no_panic();
}
