//! A fleet of two nodes on one Redis: a solution redeemed on one is refused on the other.

use testkit::shopper::get_json;
use testkit::{Bot, Node, Origin, RedisServer, Room};

use super::{
    assert_refused, client_at, fetch_challenge, fleet, get, retry_after, solve, submit, BROWSER,
};

/// A hyped drop for a fleet that keeps admitting at a floor rate while Redis is down; four
/// joins a minute per address, counted fleet-wide.
fn hype_fleet() -> Room {
    let bot = Bot::enforce().always(8).max_difficulty(12).no_pressure();
    let room = Room::new("hype").rate(600).capacity(1000).poll("1s");
    room.windows("60s", "20s")
        .floor_rate(600)
        .bot(bot.limit("joins_per_minute_per_ip", 4))
}

/// `c` gets a challenge from `issuer` and solves it; `redeemer` accepts the solution, and
/// `replayer` then refuses it as replayed.
async fn redeem_then_replay(issuer: &Node, redeemer: &Node, replayer: &Node, c: &reqwest::Client) {
    let (challenge, difficulty) = fetch_challenge(issuer, c, "/echo").await;
    let counter = solve(&challenge, difficulty);
    let (code, ans, _) = submit(redeemer, c, "hype", &challenge, counter).await;
    assert_eq!(code, 200, "{ans}");
    let replayed = submit(replayer, c, "hype", &challenge, counter).await;
    assert_refused(&replayed, 409, "replayed");
}

/// A fleet: a solution redeemed on node A is refused on node B (and the other way round)
/// through the Redis both share; the replay keys expire with their challenges; joins per
/// address are limited across the fleet, not per node; a dead Redis makes redemption fail
/// closed (503), never accept twice, and the floor-rate admission that keeps shoppers moving
/// during the outage never admits a tarpitted bot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replayed_solutions_are_refused_across_nodes_through_redis() {
    let mut redis = RedisServer::start();
    let origin = Origin::start().await;
    let [a, b] = fleet(origin.addr, &redis.url(), hype_fleet()).await;
    let shopper = client_at("100.83.0.1", BROWSER, true);

    // Solved on A, replayed on B.
    redeem_then_replay(&a, &a, &b, &shopper).await;

    // Issued by A, redeemed on B first, replayed on A.
    let other = client_at("100.84.0.1", BROWSER, true);
    redeem_then_replay(&a, &b, &a, &other).await;

    // One key per redeemed challenge, under the room's tag, expiring with the challenge.
    let keys: Vec<String> = redis
        .cmd(redis::cmd("KEYS").arg("{fg:hype}:pow:*"))
        .expect("KEYS");
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in &keys {
        let ttl: i64 = redis.cmd(redis::cmd("PTTL").arg(k)).expect("PTTL");
        assert!(
            ttl > 0 && ttl <= 125_000,
            "{k}: lives for the challenge's 2 minutes plus a margin, not {ttl} ms"
        );
    }

    // The cookie from a solve on A lets the shopper in through B.
    let (code, _, body) = get(&b, &shopper, "/echo").await;
    assert_eq!(code, 200, "{body}");

    // Joins per address are counted fleet-wide: spread over two nodes, the fifth join in a
    // minute is refused although neither node has seen more than three.
    let spreader = client_at("100.87.0.1", BROWSER, false);
    let mut codes = Vec::new();
    let mut retry = 0;
    for node in [&a, &b, &a, &b, &a] {
        let (code, _, headers) = get_json(&spreader, &format!("{}/echo", node.base)).await;
        codes.push(code);
        retry = retry.max(retry_after(&headers));
    }
    assert_eq!(
        codes,
        [403, 403, 403, 403, 429],
        "challenged four times, then limited"
    );
    assert!(retry >= 1, "Retry-After on the 429");
    let ttl: i64 = redis
        .cmd(redis::cmd("PTTL").arg("{fg:hype}:jl:100.87.0.1"))
        .expect("PTTL");
    assert!(
        ttl > 0 && ttl <= 60_000,
        "the shared limit's key goes within a minute, not {ttl} ms"
    );

    // Redis gone: a fresh solution is refused, not accepted on trust (the page retries).
    let third = client_at("100.85.0.1", BROWSER, true);
    let (challenge, difficulty) = fetch_challenge(&a, &third, "/echo").await;
    redis.kill();
    let counter = solve(&challenge, difficulty);
    let answer = submit(&a, &third, "hype", &challenge, counter).await;
    assert_refused(&answer, 503, "replay_store_error");
    assert!(retry_after(&answer.2) >= 1);

    // Still without Redis: a shopper who solved earlier (on B) is let in at the floor rate;
    // a script is tarpitted, and the tarpit holds without the store too.
    let echoes = origin.shop.stats().by_path.echo;
    let (code, _, body) = get(&a, &other, "/echo").await;
    assert_eq!(code, 200, "floor-rate admission for a shopper: {body}");
    let curl = client_at("100.86.0.1", &[("user-agent", "curl/8.5.0")], true);
    let (code, _, body) = get(&a, &curl, "/echo").await;
    // It waits like anyone the store cannot number: the room's status code, never a 5xx.
    assert_eq!(code, 200, "a tarpitted bot is not floor-admitted: {body}");
    assert_eq!(origin.shop.stats().by_path.echo, echoes + 1);
    let m = a.metrics().await;
    assert_eq!(
        m.sum(
            "flashgate_bot_challenges_total",
            &[("room", "hype"), ("result", "replay_store_error")]
        ),
        1.0
    );
}
