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

mod challenge;
mod flood;
mod replay;
mod shadow;
mod swarm;

use std::net::SocketAddr;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use testkit::shopper::{self, get_json};
use testkit::{Config, Node, Room};

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

/// A node in front of `origin` that trusts 127.0.0.1 as its proxy (`X-Forwarded-For` from it
/// is believed).
fn trusting(origin: SocketAddr) -> Config {
    Config::new(origin).trusting_loopback()
}

/// Two nodes of a fleet on the Redis at `url` running `room`, trusting 127.0.0.1 as their
/// proxy.
async fn fleet(origin: SocketAddr, url: &str, room: Room) -> [Node; 2] {
    Node::fleet(
        &Config::new(origin)
            .trusting_loopback()
            .redis(url)
            .room(room),
    )
    .await
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
async fn get(fg: &Node, c: &reqwest::Client, path: &str) -> (u16, HeaderMap, String) {
    let r = shopper::get(c, &fg.url(path), &[]).await;
    (r.status, r.headers, r.body)
}

/// The room's status as the waiting page's script asks for it: (status, JSON, headers).
async fn status(fg: &Node, c: &reqwest::Client, room: &str) -> (u16, Value, HeaderMap) {
    get_json(c, &fg.url(&format!("/.flashgate/status?room={room}"))).await
}

fn retry_after(h: &HeaderMap) -> u64 {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
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
async fn fetch_challenge(fg: &Node, c: &reqwest::Client, path: &str) -> (String, u8) {
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

/// Asserts that a submission ([`submit`]'s answer) was refused with `code` and `error`.
fn assert_refused(answer: &(u16, Value, HeaderMap), code: u16, error: &str) {
    let (got, ans, _) = answer;
    assert_eq!((*got, ans["error"].as_str()), (code, Some(error)), "{ans}");
}

/// `POST /.flashgate/challenge` as the page does: (status, JSON answer, headers).
async fn submit(
    fg: &Node,
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
