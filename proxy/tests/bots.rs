//! Bot defence end to end: a swarm of bots and a few real shoppers in one room, in front of a
//! real flashgate process and a real origin (the demo shop) on ephemeral ports; challenges
//! solved, forged and replayed over HTTP; shadow mode; a flood of addresses; and a fleet of
//! two nodes on one real `redis-server` that refuses a solution replayed on the other node.
//!
//! Client addresses: the configs here trust 127.0.0.1 as a proxy, so every simulated client
//! sets its own address with `X-Forwarded-For`. A client that connects from 127.0.0.2 is an
//! untrusted peer: its header must change nothing.
//!
//! Nothing waits on a fixed sleep: the swarm's shoppers poll at the pace the room asks for,
//! and every wait has a deadline.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{free_port, get_json, Flashgate, Origin};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const HEADLESS: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// What a current desktop Chrome sends when it loads a page.
const BROWSER: &[(&str, &str)] = &[
    ("user-agent", CHROME),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    ),
    ("accept-language", "en-GB,en;q=0.9,de;q=0.8"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("sec-fetch-dest", "document"),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-site", "none"),
    ("sec-fetch-user", "?1"),
    ("upgrade-insecure-requests", "1"),
];

/// `BROWSER` without `Accept-Language` (a script that copied most of a browser's headers).
fn browser_without_language() -> Vec<(&'static str, &'static str)> {
    BROWSER
        .iter()
        .copied()
        .filter(|(k, _)| *k != "accept-language")
        .collect()
}

/// Starts flashgate trusting 127.0.0.1 as its proxy (`X-Forwarded-For` from it is believed).
async fn start(origin: SocketAddr, extra: &str) -> Flashgate {
    let (port, admin) = (free_port(), free_port());
    let text = trusting_loopback(&common::config(port, admin, origin, extra));
    Flashgate::start_with(&text, port, admin).await
}

/// Starts a node of a fleet on the Redis at `url`, trusting 127.0.0.1 as its proxy.
async fn start_on_redis(origin: SocketAddr, url: &str, extra: &str) -> Flashgate {
    let (port, admin) = (free_port(), free_port());
    let store = format!(
        "kind = \"redis\"\nurl = \"{url}\"\nsnapshot_interval = \"50ms\"\nbatch_window = \"2ms\""
    );
    let text = trusting_loopback(&common::config_with_store(
        port, admin, origin, &store, extra,
    ));
    Flashgate::start_with(&text, port, admin).await
}

fn trusting_loopback(config: &str) -> String {
    let out = config.replacen(
        "threads = 2\n",
        "threads = 2\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        1,
    );
    assert_ne!(
        out, config,
        "the harness config changed: trusted_proxies not set"
    );
    out
}

fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    h
}

/// A client at address `ip` (through the trusted proxy) sending `headers` on every request,
/// keeping cookies like a browser (or not), never following redirects.
fn client_at(ip: &str, headers: &[(&str, &str)], cookies: bool) -> reqwest::Client {
    let mut h = header_map(headers);
    h.insert(
        "x-forwarded-for",
        HeaderValue::from_str(ip).expect("an address"),
    );
    reqwest::Client::builder()
        .cookie_store(cookies)
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(h)
        .build()
        .expect("client")
}

/// GET `path` with the client's own headers: (status, headers, body).
async fn get(fg: &Flashgate, c: &reqwest::Client, path: &str) -> (u16, HeaderMap, String) {
    let r = c
        .get(format!("{}{path}", fg.base))
        .send()
        .await
        .expect("request");
    let code = r.status().as_u16();
    let headers = r.headers().clone();
    (code, headers, r.text().await.unwrap_or_default())
}

/// The room's status as the waiting page's script asks for it.
async fn status(fg: &Flashgate, c: &reqwest::Client, room: &str) -> (u16, Value, HeaderMap) {
    get_json(c, &format!("{}/.flashgate/status?room={room}", fg.base)).await
}

fn retry_after(h: &HeaderMap) -> u64 {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// Leading zero bits of `SHA-256(challenge || counter as u64 big-endian)`.
fn work(challenge: &str, counter: u64) -> u32 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(challenge.as_bytes());
    ctx.update(&counter.to_be_bytes());
    let mut zeros = 0;
    for b in ctx.finish().as_ref() {
        zeros += b.leading_zeros();
        if *b != 0 {
            break;
        }
    }
    zeros
}

/// What the waiting page's Web Workers do: the first counter with enough leading zero bits.
fn solve(challenge: &str, difficulty: u8) -> u64 {
    (0u64..)
        .find(|c| work(challenge, *c) >= u32::from(difficulty))
        .expect("a solution exists")
}

/// A counter that does *not* solve the challenge.
fn non_solution(challenge: &str, difficulty: u8) -> u64 {
    (0u64..)
        .find(|c| work(challenge, *c) < u32::from(difficulty))
        .expect("most counters fail")
}

/// Asks for the room's challenge as an app does (`Accept: application/json`): the 403 answer.
async fn fetch_challenge(fg: &Flashgate, c: &reqwest::Client, path: &str) -> (String, u8) {
    let (code, body, _) = get_json(c, &format!("{}{path}", fg.base)).await;
    assert_eq!(code, 403, "a challenge: {body}");
    assert_eq!(body["submit"], "/.flashgate/challenge", "{body}");
    let token = body["challenge"]
        .as_str()
        .expect("challenge token")
        .to_owned();
    let difficulty = body["difficulty"]
        .as_u64()
        .and_then(|d| u8::try_from(d).ok())
        .expect("difficulty");
    (token, difficulty)
}

/// `POST /.flashgate/challenge` as the page does: (status, JSON answer, headers).
async fn submit(
    fg: &Flashgate,
    c: &reqwest::Client,
    room: &str,
    challenge: &str,
    counter: u64,
) -> (u16, Value, HeaderMap) {
    let r = c
        .post(format!("{}/.flashgate/challenge", fg.base))
        .header("accept", "application/json")
        .form(&[
            ("room", room),
            ("challenge", challenge),
            ("counter", &counter.to_string()),
            ("return", "/echo"),
        ])
        .send()
        .await
        .expect("submit");
    let code = r.status().as_u16();
    let headers = r.headers().clone();
    (code, r.json().await.unwrap_or(Value::Null), headers)
}

/// The swarm's room: queueing, bot defence enforced with small limits so a test reaches them.
const SWARM: &str = r#"
[[routes]]
path = "/products"
upstream = "shop"
kind = "catalog"

[bot]
deny_cidrs = ["192.0.2.0/24"]
crawler_cidrs = ["66.249.64.0/19"]

[[rooms]]
id = "drop"
paths = ["/echo", "/cart", "/products"]
new_users_per_minute = 300
total_active_users = 1000
poll_interval = "1s"
abandon_after = "60s"
claim_window = "20s"
queueing_status_code = 202

[rooms.bot]
mode = "enforce"
challenge = "suspicious"
difficulty = 8
max_difficulty = 12
pressure_joins_per_second = 0

[rooms.bot.limits]
joins_per_minute_per_ip = 5
polls_per_minute_per_ticket = 60
requests_per_minute_per_ip = 600

[rooms.bot.thresholds]
tickets_per_prefix = 10
addresses_per_token = 3
"#;

/// One simulated client in the room's line.
struct InLine {
    name: String,
    http: reqwest::Client,
    ticket: u64,
}

/// Joins `drop` with a page load (the client's own headers); returns its ticket number.
async fn join_drop(fg: &Flashgate, name: &str, http: reqwest::Client) -> InLine {
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
    let fg = start(origin.addr, SWARM).await;
    fg.patch_room("drop", json!({"paused": true})).await;

    // Arrivals, one at a time so the ticket order is the arrival order: a shopper, then a bot,
    // and so on. Tarpitted bots see exactly what a shopper sees: a waiting page and a ticket.
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
        let s = join_drop(&fg, &format!("shopper {i}"), client_at(&ip, BROWSER, true)).await;
        shoppers.push(s);
        if let Some((kind, headers)) = bot_kinds.get(usize::from(i)) {
            let ip = format!("100.65.{i}.20");
            bots.push(join_drop(&fg, kind, client_at(&ip, headers, true)).await);
        }
    }
    let tickets: Vec<u64> = shoppers.iter().map(|s| s.ticket).collect();
    assert!(
        tickets.windows(2).all(|w| w[0] < w[1]),
        "arrival order: {tickets:?}"
    );

    // Polling faster than told: the header-poor client is tarpitted for good (30 polls back
    // to back are far more than 6 at once plus 3 a second, however slow this machine is) ...
    let fast = bots.last().expect("the fast poller");
    for _ in 0..30 {
        let (code, st, _) = status(&fg, &fast.http, "drop").await;
        assert_eq!(code, 200, "a tarpit looks like a line: {st}");
        assert_eq!(st["admitted"], false);
    }
    // ... and a browser that hammers the status endpoint meets the poll limit: 429.
    let hammer = join_drop(&fg, "hammer", client_at("100.66.0.1", BROWSER, true)).await;
    let mut limited = None;
    for _ in 0..80 {
        let (code, _, headers) = status(&fg, &hammer.http, "drop").await;
        if code == 429 {
            limited = Some(headers);
            break;
        }
        assert_eq!(code, 200);
    }
    let limited = limited.expect("polls per ticket are limited");
    assert!(retry_after(&limited) >= 1, "429 says when: {limited:?}");

    // One ticket from many networks: refused once seen from `addresses_per_token` prefixes
    // (a prefix is a hashed bit, so allow for a collision or two), then refused everywhere.
    let sharer = join_drop(&fg, "sharer", client_at("100.70.0.5", BROWSER, true)).await;
    let (_, headers, _) = get(&fg, &sharer.http, "/echo").await;
    let token = headers
        .get("x-flashgate-token")
        .and_then(|v| v.to_str().ok())
        .expect("the ticket token")
        .to_owned();
    let mut blocked_at = None;
    for n in 1..=8u8 {
        let copy = client_at(&format!("100.{}.0.5", 70 + n), BROWSER, false);
        let r = copy
            .get(format!("{}/.flashgate/status?room=drop", fg.base))
            .header("accept", "application/json")
            .header("x-flashgate-token", &token)
            .send()
            .await
            .expect("poll");
        let code = r.status().as_u16();
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
    let (code, _, _) = status(&fg, &sharer.http, "drop").await;
    assert_eq!(
        code, 403,
        "the copied ticket is burnt for its first holder too"
    );

    // Many joins from one /24 (each address once, so no per-address limit): the prefix
    // signal challenges everything past `tickets_per_prefix`.
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

    // Joining again and again from one address (cookies thrown away): 429 with Retry-After.
    let rejoiner = client_at("203.0.113.77", BROWSER, false);
    let mut codes = Vec::new();
    let mut retry = 0;
    for _ in 0..6 {
        let (code, headers, _) = get(&fg, &rejoiner, "/echo").await;
        codes.push(code);
        retry = retry.max(retry_after(&headers));
    }
    assert_eq!(codes, [202, 202, 202, 202, 202, 429], "joins per address");
    assert!(retry >= 1, "Retry-After on the 429");

    // An untrusted peer rotating X-Forwarded-For is one address all along.
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

    // The deny list: 403, nothing forwarded.
    let denied = client_at("192.0.2.9", BROWSER, true);
    let (code, _, body) = get(&fg, &denied, "/echo").await;
    assert_eq!(code, 403);
    assert!(body.contains("Access denied"), "{body}");

    // A verified crawler skips the paused room on a catalog route only; a shopper waits there,
    // and on a protected route the crawler is just another client without a browser.
    let crawler = client_at(
        "66.249.66.1",
        &[("user-agent", GOOGLEBOT), ("accept", "*/*")],
        true,
    );
    let (code, _, _) = get(&fg, &crawler, "/products").await;
    assert_eq!(code, 200, "the catalog, straight from the origin");
    let (code, _, _) = get(&fg, &shoppers[0].http, "/products").await;
    assert_eq!(
        code, 202,
        "a shopper on the catalog route waits in the room"
    );
    bots.push(join_drop(&fg, "crawler off the catalog", crawler).await);
    let before_open = origin.shop.stats();
    assert_eq!(
        before_open.by_path.catalog, 1,
        "only the crawler got through"
    );
    assert_eq!(before_open.by_path.echo, 0);
    assert_eq!(before_open.by_path.cart, 0);

    // Open the room. Shoppers poll at the pace the page asks for and enter when told; bots
    // keep polling and keep asking the origin for the cart.
    fg.patch_room("drop", json!({"paused": false})).await;
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
            let (code, st, _) = status(&fg, &s.http, "drop").await;
            if code != 200 {
                shopper_refusals += 1;
                continue;
            }
            if st["admitted"] == true {
                let (code, headers, body) = get(&fg, &s.http, "/echo").await;
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
            let (code, st, _) = status(&fg, &b.http, "drop").await;
            assert_eq!(code, 200, "{}: {st}", b.name);
            assert_eq!(
                st["admitted"], false,
                "{} must never be admitted: {st}",
                b.name
            );
            let (code, _, _) = get(&fg, &b.http, "/cart").await;
            assert_eq!(code, 202, "{} keeps waiting", b.name);
            *last = st;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Shoppers entered in the order they arrived, and none was ever refused.
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
        shoppers.len()
    );
    assert_eq!(shopper_refusals, 0, "no shopper poll was refused");

    // Bots whose turn has come are told "you're next", forever.
    let last_shopper = *tickets.last().expect("shoppers");
    for (b, st) in bots.iter().zip(&last_bot_status) {
        if b.ticket < last_shopper {
            assert_eq!(st["position"], 1, "{}: the infinite queue: {st}", b.name);
            assert_eq!(st["ahead"], 0, "{}: {st}", b.name);
        }
    }

    // A pass sold on: the first shopper's pass used from other networks is refused there,
    // and from then on for the shopper too.
    let pass = &passes[0];
    assert!(!pass.is_empty(), "the pass token for apps");
    let mut refused = false;
    for n in 1..=8u8 {
        let buyer = client_at(&format!("100.{}.0.7", 90 + n), BROWSER, false);
        let r = buyer
            .get(format!("{}/.flashgate/status?room=drop", fg.base))
            .header("accept", "application/json")
            .header("x-flashgate-token", pass)
            .send()
            .await
            .expect("poll");
        let code = r.status().as_u16();
        if code == 403 {
            refused = true;
            break;
        }
        assert_eq!(code, 200);
        let st: Value = r.json().await.expect("status");
        assert_eq!(st["admitted"], true, "a pass works until it is seen shared");
    }
    assert!(refused, "a shared pass is refused");
    let (code, _, _) = get(&fg, &shoppers[0].http, "/echo").await;
    assert_eq!(code, 403, "a sold pass is burnt");

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

    // Every action is counted, with its reason.
    let m = fg.metrics().await;
    let actions = |action: &str, reason: &str| {
        metric(
            &m,
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
        metric(
            &m,
            "flashgate_bot_signals_total",
            &[("room", "drop"), ("signal", "no_accept_language")]
        ) >= 2.0
    );
}

const HYPE: &str = r#"
[[rooms]]
id = "hype"
paths = ["/echo"]
new_users_per_minute = 600
total_active_users = 1000
poll_interval = "1s"
abandon_after = "60s"
claim_window = "20s"

[rooms.bot]
mode = "enforce"
challenge = "always"
difficulty = 8
max_difficulty = 12
pass_binding = "ip_prefix"
pressure_joins_per_second = 0
"#;

/// A hyped drop: every arrival solves a proof of work first. A solved challenge sets the
/// `fg_c_hype` cookie and lets the client in; forged, unsolved, foreign and replayed
/// solutions are refused, and the cookie does not work from another network.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn challenges_are_solved_once_and_forgeries_refused() {
    let origin = Origin::start().await;
    let fg = start(origin.addr, HYPE).await;
    let shopper = client_at("100.80.1.10", BROWSER, true);
    let elsewhere = client_at("100.81.1.10", BROWSER, true);

    // A browser gets the challenge page; its scripts are served.
    let (code, headers, body) = get(&fg, &shopper, "/echo?x=1").await;
    assert_eq!(code, 403);
    assert!(headers["content-type"]
        .to_str()
        .is_ok_and(|c| c.starts_with("text/html")));
    assert!(body.contains("data-challenge=\""), "{body}");
    assert!(body.contains("/.flashgate/assets/pow-worker.js"));
    for asset in ["challenge.js", "pow-worker.js"] {
        let (code, _, js) = get(&fg, &shopper, &format!("/.flashgate/assets/{asset}")).await;
        assert_eq!(code, 200, "{asset}");
        assert!(!js.is_empty());
    }
    assert_eq!(
        origin.shop.stats().requests,
        0,
        "nothing reached the origin"
    );

    // An app asks for JSON; the difficulty is the room's.
    let (challenge, difficulty) = fetch_challenge(&fg, &shopper, "/echo").await;
    assert_eq!(difficulty, 8);

    // A forged challenge: one character of the signature changed.
    let mut forged = challenge.clone().into_bytes();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let (code, ans, _) = submit(&fg, &shopper, "hype", &forged, solve(&forged, 8)).await;
    assert_eq!(
        (code, ans["error"].as_str()),
        (403, Some("forged")),
        "{ans}"
    );

    // No work done.
    let lazy = non_solution(&challenge, difficulty);
    let (code, ans, _) = submit(&fg, &shopper, "hype", &challenge, lazy).await;
    assert_eq!(
        (code, ans["error"].as_str()),
        (403, Some("insufficient_work")),
        "{ans}"
    );

    // The real work, from another network than the challenge was issued to.
    let counter = solve(&challenge, difficulty);
    let (code, ans, _) = submit(&fg, &elsewhere, "hype", &challenge, counter).await;
    assert_eq!(
        (code, ans["error"].as_str()),
        (403, Some("wrong_client")),
        "{ans}"
    );

    // The real work, from the client it was issued to: the cookie, and the way in.
    let (code, ans, headers) = submit(&fg, &shopper, "hype", &challenge, counter).await;
    assert_eq!(code, 200, "{ans}");
    assert_eq!(ans["ok"], true);
    assert_eq!(ans["redirect"], "/echo");
    let cookie = headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("fg_c_hype="))
        .expect("the challenge-passed cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let pass = ans["token"].as_str().expect("token for apps").to_owned();

    // The same solution again, from anyone: refused.
    let (code, ans, _) = submit(&fg, &shopper, "hype", &challenge, counter).await;
    assert_eq!(
        (code, ans["error"].as_str()),
        (409, Some("replayed")),
        "{ans}"
    );

    let (code, _, body) = get(&fg, &shopper, "/echo").await;
    assert_eq!(code, 200, "admitted after the challenge: {body}");
    let echo: Value = serde_json::from_str(&body).expect("the origin's echo");
    assert!(
        !echo["headers"]["cookie"]
            .as_str()
            .unwrap_or("")
            .contains("fg_c_"),
        "the origin never sees the challenge cookie"
    );

    // The challenge-passed token copied to another network does not spare it the work,
    // neither as the cookie nor in the header apps use.
    let value = cookie
        .split(';')
        .next()
        .and_then(|c| c.strip_prefix("fg_c_hype="))
        .expect("cookie value");
    let r = elsewhere
        .get(format!("{}/echo", fg.base))
        .header("accept", "application/json")
        .header("cookie", format!("fg_c_hype={value}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 403, "a copied cookie bound to another /24");
    let body: Value = r.json().await.expect("challenge json");
    assert!(body["challenge"].is_string(), "challenged again: {body}");
    let r = elsewhere
        .get(format!("{}/echo", fg.base))
        .header("accept", "application/json")
        .header("x-flashgate-challenge", &pass)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 403, "a pass bound to another /24");
    // ... while from its own network the app header works like the cookie.
    let app = client_at("100.80.1.99", BROWSER, false);
    let r = app
        .get(format!("{}/echo", fg.base))
        .header("accept", "application/json")
        .header("x-flashgate-challenge", &pass)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200, "the same /24 may use the pass");

    let m = fg.metrics().await;
    let result = |r: &str| {
        metric(
            &m,
            "flashgate_bot_challenges_total",
            &[("room", "hype"), ("result", r)],
        )
    };
    assert_eq!(result("solved"), 1.0, "{m}");
    assert_eq!(result("replayed"), 1.0);
    assert_eq!(result("forged"), 1.0);
    assert_eq!(result("insufficient_work"), 1.0);
    assert_eq!(result("wrong_client"), 1.0);
    assert!(result("issued") >= 4.0);
}

/// Shadow mode: bots, deny-listed clients and limit breakers get exactly what they would get
/// without bot defence, and `/metrics` says what enforce mode would have done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_mode_changes_nothing_but_counts() {
    let origin = Origin::start().await;
    let extra = r#"
[bot]
deny_cidrs = ["192.0.2.0/24"]

[[rooms]]
id = "calm"
paths = ["/echo"]
new_users_per_minute = 600
total_active_users = 1000
poll_interval = "1s"
abandon_after = "60s"
claim_window = "20s"

[rooms.bot]
mode = "shadow"
challenge = "always"
difficulty = 8

[rooms.bot.limits]
joins_per_minute_per_ip = 2
"#;
    let fg = start(origin.addr, extra).await;
    let curl = client_at("100.90.0.1", &[("user-agent", "curl/8.5.0")], false);
    for _ in 0..4 {
        let (code, _, body) = get(&fg, &curl, "/echo").await;
        assert_eq!(
            code, 200,
            "shadow: the script goes through as before: {body}"
        );
    }
    let denied = client_at("192.0.2.5", BROWSER, true);
    let (code, _, _) = get(&fg, &denied, "/echo").await;
    assert_eq!(code, 200, "shadow: the deny list only counts");
    let shopper = client_at("100.91.0.1", BROWSER, true);
    let (code, _, _) = get(&fg, &shopper, "/echo").await;
    assert_eq!(code, 200, "shadow: no challenge");
    assert_eq!(origin.shop.stats().by_path.echo, 6);

    let m = fg.metrics().await;
    let shadow = |action: &str, reason: &str| {
        metric(
            &m,
            "flashgate_bot_actions_total",
            &[
                ("room", "calm"),
                ("mode", "shadow"),
                ("action", action),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(shadow("tarpit", "automation_user_agent"), 2.0, "{m}");
    assert_eq!(shadow("limited", "joins_per_ip"), 2.0);
    assert_eq!(shadow("block", "deny_list"), 1.0);
    assert_eq!(shadow("challenge", "always"), 1.0);
    assert_eq!(
        metric(&m, "flashgate_bot_actions_total", &[("mode", "enforce")]),
        0.0,
        "nothing enforced"
    );
    assert_eq!(
        metric(
            &m,
            "flashgate_bot_challenges_total",
            &[("result", "issued")]
        ),
        0.0,
        "no challenge was issued"
    );
}

/// Distinct addresses by the thousand: the per-client tables stay at their fixed size and
/// evict (counted), and an honest client still gets its challenge and its way in afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_addresses_keeps_memory_bounded() {
    let origin = Origin::start().await;
    // Each address may join twice a minute and each /24 once in ten minutes, so every
    // entry stays live (and must be evicted, not forgotten) for the whole flood.
    let extra = r#"
[bot]
table_slots = 1024

[[rooms]]
id = "hype"
paths = ["/echo"]
new_users_per_minute = 600
total_active_users = 1000

[rooms.bot]
mode = "enforce"
challenge = "always"
difficulty = 8
pressure_joins_per_second = 0

[rooms.bot.limits]
joins_per_minute_per_ip = 2

[rooms.bot.thresholds]
tickets_per_prefix = 1
prefix_window = "10m"
"#;
    let fg = std::sync::Arc::new(start(origin.addr, extra).await);
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
    let evicted = |table: &str| {
        metric(
            &m,
            "flashgate_bot_table_evictions_total",
            &[("table", table)],
        )
    };
    assert!(evicted("addresses") > 0.0, "the address table is full: {m}");
    assert!(evicted("prefixes") > 0.0, "the prefix table is full");
    assert_eq!(
        metric(
            &m,
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

/// [`HYPE`] for a fleet that keeps admitting at a floor rate while Redis is down.
const HYPE_FLEET: &str = r#"
[[rooms]]
id = "hype"
paths = ["/echo"]
new_users_per_minute = 600
total_active_users = 1000
poll_interval = "1s"
abandon_after = "60s"
claim_window = "20s"
on_store_error = "admit_at_floor_rate"
floor_rate_per_minute = 600

[rooms.bot]
mode = "enforce"
challenge = "always"
difficulty = 8
max_difficulty = 12
pressure_joins_per_second = 0

[rooms.bot.limits]
joins_per_minute_per_ip = 4
"#;

/// A fleet: a solution redeemed on node A is refused on node B (and the other way round)
/// through the Redis both share; the replay keys expire with their challenges; joins per
/// address are limited across the fleet, not per node; a dead Redis makes redemption fail
/// closed (503), never accept twice, and the floor-rate admission that keeps shoppers moving
/// during the outage never admits a tarpitted bot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replayed_solutions_are_refused_across_nodes_through_redis() {
    let mut redis = RedisServer::start();
    let origin = Origin::start().await;
    let a = start_on_redis(origin.addr, &redis.url(), HYPE_FLEET).await;
    let b = start_on_redis(origin.addr, &redis.url(), HYPE_FLEET).await;
    let shopper = client_at("100.83.0.1", BROWSER, true);

    // Solved on A, replayed on B.
    let (challenge, difficulty) = fetch_challenge(&a, &shopper, "/echo").await;
    let counter = solve(&challenge, difficulty);
    let (code, ans, _) = submit(&a, &shopper, "hype", &challenge, counter).await;
    assert_eq!(code, 200, "{ans}");
    let (code, ans, _) = submit(&b, &shopper, "hype", &challenge, counter).await;
    assert_eq!(
        (code, ans["error"].as_str()),
        (409, Some("replayed")),
        "{ans}"
    );

    // Issued by A, redeemed on B first, replayed on A.
    let other = client_at("100.84.0.1", BROWSER, true);
    let (challenge, difficulty) = fetch_challenge(&a, &other, "/echo").await;
    let counter = solve(&challenge, difficulty);
    let (code, ans, _) = submit(&b, &other, "hype", &challenge, counter).await;
    assert_eq!(code, 200, "{ans}");
    let (code, ans, _) = submit(&a, &other, "hype", &challenge, counter).await;
    assert_eq!(
        (code, ans["error"].as_str()),
        (409, Some("replayed")),
        "{ans}"
    );

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
    let (code, ans, headers) = submit(&a, &third, "hype", &challenge, counter).await;
    assert_eq!(
        (code, ans["error"].as_str()),
        (503, Some("replay_store_error")),
        "{ans}"
    );
    assert!(retry_after(&headers) >= 1);

    // Still without Redis: a shopper who solved earlier (on B) is let in at the floor rate;
    // a script is tarpitted, and the tarpit holds without the store too.
    let echoes = origin.shop.stats().by_path.echo;
    let (code, _, body) = get(&a, &other, "/echo").await;
    assert_eq!(code, 200, "floor-rate admission for a shopper: {body}");
    let curl = client_at("100.86.0.1", &[("user-agent", "curl/8.5.0")], true);
    let (code, _, body) = get(&a, &curl, "/echo").await;
    assert_eq!(code, 503, "a tarpitted bot is not floor-admitted: {body}");
    assert_eq!(origin.shop.stats().by_path.echo, echoes + 1);
    let m = a.metrics().await;
    assert_eq!(
        metric(
            &m,
            "flashgate_bot_challenges_total",
            &[("room", "hype"), ("result", "replay_store_error")]
        ),
        1.0
    );
}
