//! The swarm: bots that run no JavaScript and shoppers with real browsers in one room.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use flashgate::shop::Shop;
use serde_json::{json, Value};
use testkit::config::Table;
use testkit::shopper::get_json;
use testkit::{Bot, Config, Metrics, Node, Origin, Room, Route};

use super::{
    browser_without_language, client_at, get, header_map, retry_after, status, trusting, BROWSER,
    GOOGLEBOT, HEADLESS,
};

/// The swarm's node: a catalog route, deny and crawler lists, and one queueing room with bot
/// defence enforced with small limits so a test reaches them.
fn swarm(origin: SocketAddr) -> Config {
    let lists = Table::new()
        .set("deny_cidrs", ["192.0.2.0/24"])
        .set("crawler_cidrs", ["66.249.64.0/19"]);
    let bot = Bot::enforce().challenge("suspicious").set("difficulty", 8);
    let bot = bot.max_difficulty(12).no_pressure();
    let bot = bot
        .limit("joins_per_minute_per_ip", 5)
        .limit("polls_per_minute_per_ticket", 60)
        .limit("requests_per_minute_per_ip", 600)
        .threshold("tickets_per_prefix", 10)
        .threshold("addresses_per_token", 3);
    let drop = Room::new("drop").paths(&["/echo", "/cart", "/products"]);
    let drop = drop
        .rate(300)
        .capacity(1000)
        .poll("1s")
        .windows("60s", "20s");
    let cfg = trusting(origin).route(Route::new("/products").kind("catalog"));
    cfg.table("bot", lists).room(drop.status_code(202).bot(bot))
}

/// One simulated client in the room's line.
struct InLine {
    name: String,
    http: reqwest::Client,
    ticket: u64,
}

/// Joins `drop` with a page load (the client's own headers); returns its ticket number.
async fn join_drop(fg: &Node, name: &str, http: reqwest::Client) -> InLine {
    let (code, headers, body) = get(fg, &http, "/echo").await;
    assert_eq!(code, 202, "{name} gets the waiting page: {body}");
    assert!(
        body.contains("<html") || body.contains("<!doctype") || body.contains("<!DOCTYPE"),
        "{name}: an HTML waiting page"
    );
    assert!(headers.get("x-flashgate-token").is_some(), "{name}: ticket");
    let (code, st, _) = status(fg, &http, "drop").await;
    assert_eq!(code, 200, "{name}: {st}");
    let ticket = st["ticket"]
        .as_u64()
        .unwrap_or_else(|| panic!("{name}: a ticket in {st}"));
    InLine {
        name: name.to_owned(),
        http,
        ticket,
    }
}

/// Bots that run no JavaScript, shoppers with real browsers, in one room: bots are tarpitted,
/// limited, challenged or blocked; shoppers get in, in the order they arrived; no tarpitted
/// bot is ever admitted nor reaches the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bot_swarm_never_gets_ahead_of_shoppers() {
    let origin = Origin::start().await;
    let fg = Node::start(&swarm(origin.addr)).await;
    fg.patch_room("drop", json!({"paused": true})).await;

    let (shoppers, mut bots) = arrivals(&fg).await;
    let tickets: Vec<u64> = shoppers.iter().map(|s| s.ticket).collect();
    fast_polls_are_tarpitted_and_hammering_limited(&fg, bots.last().expect("the fast poller"))
        .await;
    a_shared_ticket_is_burnt(&fg).await;
    a_farm_of_one_prefix_is_challenged(&fg).await;
    rejoins_are_limited_whatever_the_forwarded_address(&fg).await;
    bots.push(deny_list_and_crawler(&fg, &origin.shop, &shoppers[0]).await);

    fg.patch_room("drop", json!({"paused": false})).await;
    let opened = open_the_room(&fg, &shoppers, &bots).await;
    shoppers_entered_in_order_and_bots_never(&opened, &tickets, &bots);
    a_sold_pass_is_burnt(&fg, &opened.passes[0], &shoppers[0]).await;

    // The origin saw the shoppers and the crawler, and not one bot request.
    let stats = origin.shop.stats();
    assert_eq!(
        stats.by_path.cart, 0,
        "no tarpitted request reached the origin"
    );
    assert_eq!(stats.by_path.echo, shoppers.len() as u64);
    assert_eq!(stats.by_path.catalog, 1);
    let report = fg.room("drop").await;
    assert_eq!(report["entered_total"], shoppers.len() as u64, "{report}");
    every_action_is_counted(&fg.metrics().await);
}

/// Arrivals, one at a time so the ticket order is the arrival order: a shopper, then a bot,
/// and so on. Tarpitted bots see exactly what a shopper sees: a waiting page and a ticket.
/// Returns (shoppers, bots); the last bot is the fast poller.
async fn arrivals(fg: &Node) -> (Vec<InLine>, Vec<InLine>) {
    let no_language = browser_without_language();
    let bot_kinds: [(&str, Vec<(&str, &str)>); 5] = [
        (
            "curl",
            vec![("user-agent", "curl/8.5.0"), ("accept", "*/*")],
        ),
        (
            "python-requests",
            vec![
                ("user-agent", "python-requests/2.31.0"),
                ("accept", "*/*"),
                ("accept-encoding", "gzip, deflate"),
            ],
        ),
        ("headless-chrome", {
            let mut h: Vec<(&str, &str)> = BROWSER
                .iter()
                .copied()
                .filter(|(k, _)| *k != "user-agent")
                .collect();
            h.push(("user-agent", HEADLESS));
            h
        }),
        ("no-headers", vec![]),
        // Copied a browser's headers but forgot Accept-Language; then polls in a tight loop.
        ("fast-poller", no_language.clone()),
    ];
    let mut shoppers = Vec::new();
    let mut bots = Vec::new();
    for i in 0..6u8 {
        let ip = format!("100.64.{i}.10");
        let s = join_drop(fg, &format!("shopper {i}"), client_at(&ip, BROWSER, true)).await;
        shoppers.push(s);
        if let Some((kind, headers)) = bot_kinds.get(usize::from(i)) {
            let ip = format!("100.65.{i}.20");
            bots.push(join_drop(fg, kind, client_at(&ip, headers, true)).await);
        }
    }
    let tickets: Vec<u64> = shoppers.iter().map(|s| s.ticket).collect();
    assert!(
        tickets.windows(2).all(|w| w[0] < w[1]),
        "arrival order: {tickets:?}"
    );
    (shoppers, bots)
}

/// Polling faster than told: the header-poor client is tarpitted for good (30 polls back to
/// back are far more than 6 at once plus 3 a second, however slow this machine is) ...
async fn fast_polls_are_tarpitted_and_hammering_limited(fg: &Node, fast: &InLine) {
    for _ in 0..30 {
        let (code, st, _) = status(fg, &fast.http, "drop").await;
        assert_eq!(code, 200, "a tarpit looks like a line: {st}");
        assert_eq!(st["admitted"], false);
    }
    // ... and a browser that hammers the status endpoint meets the poll limit: 429.
    let hammer = join_drop(fg, "hammer", client_at("100.66.0.1", BROWSER, true)).await;
    let mut limited = None;
    for _ in 0..80 {
        let (code, _, headers) = status(fg, &hammer.http, "drop").await;
        if code == 429 {
            limited = Some(headers);
            break;
        }
        assert_eq!(code, 200);
    }
    let limited = limited.expect("polls per ticket are limited");
    assert!(retry_after(&limited) >= 1, "429 says when: {limited:?}");
}

/// A status poll for `drop` from a browser at `ip` carrying `token` (a ticket or a pass) in the
/// header apps use: (status, JSON).
async fn poll_from(fg: &Node, ip: &str, token: &str) -> (u16, Value) {
    let copy = client_at(ip, BROWSER, false);
    let url = fg.url("/.flashgate/status?room=drop");
    testkit::shopper::get_app(&copy, &url, &[("x-flashgate-token", token)]).await
}

/// One ticket from many networks: refused once seen from `addresses_per_token` prefixes (a
/// prefix is a hashed bit, so allow for a collision or two), then refused everywhere.
async fn a_shared_ticket_is_burnt(fg: &Node) {
    let sharer = join_drop(fg, "sharer", client_at("100.70.0.5", BROWSER, true)).await;
    let (_, headers, _) = get(fg, &sharer.http, "/echo").await;
    let token = headers
        .get("x-flashgate-token")
        .and_then(|v| v.to_str().ok())
        .expect("the ticket token")
        .to_owned();
    let mut blocked_at = None;
    for n in 1..=8u8 {
        let (code, _) = poll_from(fg, &format!("100.{}.0.5", 70 + n), &token).await;
        if n == 1 {
            assert_eq!(code, 200, "two networks are not yet sharing");
        }
        if code == 403 {
            blocked_at = Some(n);
            break;
        }
        assert_eq!(code, 200);
    }
    assert!(blocked_at.is_some(), "a shared ticket is refused");
    let (code, _, _) = status(fg, &sharer.http, "drop").await;
    assert_eq!(
        code, 403,
        "the copied ticket is burnt for its first holder too"
    );
}

/// Many joins from one /24 (each address once, so no per-address limit): the prefix signal
/// challenges everything past `tickets_per_prefix`.
async fn a_farm_of_one_prefix_is_challenged(fg: &Node) {
    let (mut queued, mut challenged) = (0, 0);
    for host in 1..=14u8 {
        let farm = client_at(&format!("198.51.100.{host}"), BROWSER, true);
        let (code, body, _) = get_json(&farm, &format!("{}/echo", fg.base)).await;
        match code {
            202 => queued += 1,
            403 if body["challenge"].is_string() => challenged += 1,
            other => panic!("farm join: {other} {body}"),
        }
    }
    assert_eq!(
        (queued, challenged),
        (10, 4),
        "the 11th join from one /24 on"
    );
}

/// Joining again and again from one address (cookies thrown away): 429 with Retry-After; and
/// an untrusted peer rotating X-Forwarded-For is one address all along.
async fn rejoins_are_limited_whatever_the_forwarded_address(fg: &Node) {
    let rejoiner = client_at("203.0.113.77", BROWSER, false);
    let mut codes = Vec::new();
    let mut retry = 0;
    for _ in 0..6 {
        let (code, headers, _) = get(fg, &rejoiner, "/echo").await;
        codes.push(code);
        retry = retry.max(retry_after(&headers));
    }
    assert_eq!(codes, [202, 202, 202, 202, 202, 429], "joins per address");
    assert!(retry >= 1, "Retry-After on the 429");

    let untrusted_peer = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .default_headers(header_map(BROWSER))
        .build()
        .expect("client on 127.0.0.2");
    let mut codes = Vec::new();
    for i in 0..6u8 {
        let r = untrusted_peer
            .get(format!("{}/echo", fg.base))
            .header("x-forwarded-for", format!("10.{i}.{i}.1"))
            .send()
            .await
            .expect("request from 127.0.0.2");
        codes.push(r.status().as_u16());
    }
    assert_eq!(
        codes,
        [202, 202, 202, 202, 202, 429],
        "X-Forwarded-For from an untrusted peer is ignored"
    );
}

/// The deny list: 403, nothing forwarded. A verified crawler skips the paused room on a
/// catalog route only; a shopper waits there, and on a protected route the crawler is just
/// another client without a browser (returned: it joins the bots).
async fn deny_list_and_crawler(fg: &Node, shop: &Shop, shopper: &InLine) -> InLine {
    let denied = client_at("192.0.2.9", BROWSER, true);
    let (code, _, body) = get(fg, &denied, "/echo").await;
    assert_eq!(code, 403);
    assert!(body.contains("Access denied"), "{body}");

    let crawler = client_at(
        "66.249.66.1",
        &[("user-agent", GOOGLEBOT), ("accept", "*/*")],
        true,
    );
    let (code, _, _) = get(fg, &crawler, "/products").await;
    assert_eq!(code, 200, "the catalog, straight from the origin");
    let (code, _, _) = get(fg, &shopper.http, "/products").await;
    assert_eq!(
        code, 202,
        "a shopper on the catalog route waits in the room"
    );
    let crawler = join_drop(fg, "crawler off the catalog", crawler).await;
    let before_open = shop.stats();
    assert_eq!(
        before_open.by_path.catalog, 1,
        "only the crawler got through"
    );
    assert_eq!(before_open.by_path.echo, 0);
    assert_eq!(before_open.by_path.cart, 0);
    crawler
}

/// What the open room did: each shopper's entry round and pass, each bot's last status, and
/// how many shopper polls were refused.
struct Opened {
    entered_round: Vec<Option<u32>>,
    passes: Vec<String>,
    last_bot_status: Vec<Value>,
    shopper_refusals: u32,
}

/// Shoppers poll at the pace the page asks for and enter when told; bots keep polling and
/// keep asking the origin for the cart.
async fn open_the_room(fg: &Node, shoppers: &[InLine], bots: &[InLine]) -> Opened {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut entered_round: Vec<Option<u32>> = vec![None; shoppers.len()];
    let mut passes: Vec<String> = vec![String::new(); shoppers.len()];
    let mut last_bot_status: Vec<Value> = vec![Value::Null; bots.len()];
    let mut round = 0u32;
    let mut shopper_refusals = 0;
    while entered_round.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "shoppers not admitted in time: {entered_round:?}"
        );
        // Latest arrival first: if a later shopper is told to enter, every earlier one must
        // be told so in the same round.
        for (i, s) in shoppers.iter().enumerate().rev() {
            if entered_round[i].is_some() {
                continue;
            }
            let (code, st, _) = status(fg, &s.http, "drop").await;
            if code != 200 {
                shopper_refusals += 1;
                continue;
            }
            if st["admitted"] == true {
                let (code, headers, body) = get(fg, &s.http, "/echo").await;
                if code == 200 {
                    let echo: Value = serde_json::from_str(&body).unwrap_or_default();
                    assert_eq!(echo["method"], "GET", "{}: the origin answered", s.name);
                    entered_round[i] = Some(round);
                    passes[i] = headers
                        .get("x-flashgate-token")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                }
            }
        }
        for (b, last) in bots.iter().zip(last_bot_status.iter_mut()) {
            let (code, st, _) = status(fg, &b.http, "drop").await;
            assert_eq!(code, 200, "{}: {st}", b.name);
            assert_eq!(
                st["admitted"], false,
                "{} must never be admitted: {st}",
                b.name
            );
            let (code, _, _) = get(fg, &b.http, "/cart").await;
            assert_eq!(code, 202, "{} keeps waiting", b.name);
            *last = st;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    Opened {
        entered_round,
        passes,
        last_bot_status,
        shopper_refusals,
    }
}

/// Shoppers entered in the order they arrived, and none was ever refused; bots whose turn has
/// come are told "you're next", forever.
fn shoppers_entered_in_order_and_bots_never(opened: &Opened, tickets: &[u64], bots: &[InLine]) {
    let Opened {
        entered_round,
        last_bot_status,
        shopper_refusals,
        ..
    } = opened;
    let rounds: Vec<u32> = entered_round
        .iter()
        .map(|r| r.unwrap_or(u32::MAX))
        .collect();
    assert!(
        rounds.windows(2).all(|w| w[0] <= w[1]),
        "entry rounds in arrival order: {rounds:?} (tickets {tickets:?})"
    );
    println!(
        "false positives: {shopper_refusals} refused polls, 0 of {} shoppers blocked; entry rounds {rounds:?}",
        entered_round.len()
    );
    assert_eq!(*shopper_refusals, 0, "no shopper poll was refused");

    // Bots whose turn has come are told "you're next", forever.
    let last_shopper = *tickets.last().expect("shoppers");
    for (b, st) in bots.iter().zip(last_bot_status) {
        if b.ticket < last_shopper {
            assert_eq!(st["position"], 1, "{}: the infinite queue: {st}", b.name);
            assert_eq!(st["ahead"], 0, "{}: {st}", b.name);
        }
    }
}

/// A pass sold on: the first shopper's pass used from other networks is refused there, and
/// from then on for the shopper too.
async fn a_sold_pass_is_burnt(fg: &Node, pass: &str, owner: &InLine) {
    assert!(!pass.is_empty(), "the pass token for apps");
    let mut refused = false;
    for n in 1..=8u8 {
        let (code, st) = poll_from(fg, &format!("100.{}.0.7", 90 + n), pass).await;
        if code == 403 {
            refused = true;
            break;
        }
        assert_eq!(code, 200);
        assert_eq!(st["admitted"], true, "a pass works until it is seen shared");
    }
    assert!(refused, "a shared pass is refused");
    let (code, _, _) = get(fg, &owner.http, "/echo").await;
    assert_eq!(code, 403, "a sold pass is burnt");
}

/// Every action is counted, with its reason.
fn every_action_is_counted(m: &Metrics) {
    let actions = |action: &str, reason: &str| {
        m.sum(
            "flashgate_bot_actions_total",
            &[
                ("room", "drop"),
                ("mode", "enforce"),
                ("action", action),
                ("reason", reason),
            ],
        )
    };
    assert!(actions("tarpit", "automation_user_agent") >= 3.0, "{m}");
    assert!(actions("tarpit", "no_user_agent") >= 1.0);
    assert!(actions("tarpit", "poll_too_fast") >= 1.0);
    assert!(actions("tarpit", "tarpitted") >= 10.0, "a tarpit sticks");
    assert!(actions("limited", "polls_per_ticket") >= 1.0);
    assert!(actions("limited", "joins_per_ip") >= 2.0);
    assert!(
        actions("block", "shared_token") >= 4.0,
        "ticket and pass, copies and owners"
    );
    assert_eq!(actions("challenge", "prefix_tickets"), 4.0);
    assert_eq!(actions("block", "deny_list"), 1.0);
    assert_eq!(actions("bypass", "crawler"), 1.0);
    assert!(
        m.sum(
            "flashgate_bot_signals_total",
            &[("room", "drop"), ("signal", "no_accept_language")]
        ) >= 2.0
    );
}
