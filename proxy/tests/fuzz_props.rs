//! Bad input, property-driven: byte fuzzing of every parser a client or an operator can reach,
//! bounded so it runs in `make test` (a few seconds). Token decoding is fuzzed in
//! `waitroom/tests/props.rs`; the raw-HTTP corpus against a running node is in `hostile.rs`.
//!
//! | parser | who can reach it | property |
//! |---|---|---|
//! | `http_util::cookie`, `strip_own_cookies` | any client (`Cookie`) | never panics; the origin never gets an `fg_` cookie |
//! | `http_util::client_ip` | any client (`X-Forwarded-For`) | only a trusted peer's chain is believed |
//! | `http_util::query_param`, `percent_encode` | any client | never panics; encoding round-trips |
//! | `http_util::canonical_path`, `valid_host` | any client | never panics; canonical paths are normal forms |
//! | `http_util::safe_return_path`, `escape_html` | any client (`return=`), merchants | no open redirect; no markup |
//! | `Config::parse` | operators (files, reload) | never panics; every refusal is one line `FILE: key: reason` |
//! | `bot::parse_solution`, `Signer::verify_solution` | any client (`POST /.flashgate/challenge`) | never panics; only our own challenges verify |
//! | `admin::apply_patch` | operators (`PATCH /api/rooms/ID`) | never panics; accepted values respect the limits |
//! | `events::parse_feedback` | shoppers (`POST /.flashgate/feedback`) | never panics; published text is clean |

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use flashgate::admin::apply_patch;
use flashgate::bot::{self, ChallengeError, Signer};
use flashgate::config::Config;
use flashgate::events::{parse_feedback, EventKind};
use flashgate::http_util::{
    canonical_path, client_ip, cookie, escape_html, percent_encode, query_param, safe_return_path,
    strip_own_cookies, valid_host,
};
use ipnet::IpNet;
use proptest::prelude::*;
use serde_json::Value;
use waitroom::{Overrides, UnixMillis};

const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

/// `n` cases, or `FLASHGATE_FUZZ_CASES` of them for a longer local run
/// (`FLASHGATE_FUZZ_CASES=100000 cargo test --release -p flashgate --test fuzz_props`).
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("FLASHGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        // Shrinking a config mutation can take long; the first failure is informative enough.
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Cookies, client address, query strings, paths, hosts.

/// Cookie-header-ish bytes: mostly `name=value; ` pairs (some of them ours), sometimes noise.
fn cookie_header() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just("fg_p_drop".to_owned()),
        Just("fg_t_drop".to_owned()),
        Just("fg_c_drop".to_owned()),
        Just(" fg_x".to_owned()),
        Just("shop_cart".to_owned()),
        "[ -~]{0,12}",
    ];
    let value = prop_oneof!["[ -~]{0,24}", Just("\"quoted;x\"".to_owned())];
    let pair = (name, value).prop_map(|(n, v)| format!("{n}={v}"));
    prop_oneof![
        4 => proptest::collection::vec(pair, 0..8).prop_map(|p| p.join("; ").into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..128),
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        // Often inside the trusted range, to walk the chain.
        any::<u8>().prop_map(|b| IpAddr::from([10, 0, 0, b])),
    ]
}

fn xff() -> impl Strategy<Value = String> {
    let entry = prop_oneof![
        ip().prop_map(|i| i.to_string()),
        "[ -~]{0,20}",
        Just(String::new()),
    ];
    proptest::collection::vec(entry, 0..6).prop_map(|v| v.join(", "))
}

fn path_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("//".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2F".to_owned()),
        Just("%5c".to_owned()),
        Just("\\".to_owned()),
        Just(";x=1".to_owned()),
        Just("drops".to_owned()),
        Just("%64".to_owned()),
        Just("%".to_owned()),
        Just("%zz".to_owned()),
        "[a-z0-9]{1,4}",
        "\\PC{1,3}",
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn cookie_parsing_never_panics_and_the_origin_never_sees_our_cookies(
        headers in proptest::collection::vec(cookie_header(), 0..3),
        name in prop_oneof![Just("fg_p_drop".to_owned()), "[a-z_]{1,10}"],
    ) {
        let got = cookie(headers.iter().map(Vec::as_slice), &name);
        if let Some(v) = got {
            prop_assert!(!v.contains(';'), "a cookie value never spans pairs: {v:?}");
        }
        for h in &headers {
            let Ok(text) = std::str::from_utf8(h) else { continue };
            if let Some(kept) = strip_own_cookies(text) {
                for pair in kept.split(';') {
                    prop_assert!(!pair.trim().starts_with("fg_"), "{pair:?} left in {kept:?}");
                }
                // What the gate would read from the stripped header: none of ours.
                for ours in ["fg_p_drop", "fg_t_drop", "fg_c_drop", "fg_x"] {
                    prop_assert_eq!(cookie([kept.as_bytes()].into_iter(), ours), None);
                }
            }
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers(peer in ip(), chain in xff()) {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let is_trusted = |i: &IpAddr| trusted.iter().any(|n| n.contains(i));
        let got = client_ip(Some(peer), Some(&chain), &trusted).expect("a peer gives an address");
        if !is_trusted(&peer) {
            prop_assert_eq!(got, peer);
        } else {
            // The peer itself, or an address named in the chain.
            let named: Vec<IpAddr> = chain.split(',').filter_map(|p| p.trim().parse().ok()).collect();
            prop_assert!(got == peer || named.contains(&got), "{got} from {chain:?}");
        }
        prop_assert_eq!(client_ip(None, Some(&chain), &trusted), None);
    }

    #[test]
    fn query_strings_never_panic_and_encoding_round_trips(
        raw in proptest::collection::vec(any::<u8>(), 0..256),
        value in "\\PC{0,40}",
        name in "k[a-z]{0,7}",
    ) {
        let q = String::from_utf8_lossy(&raw);
        let _ = query_param(Some(&q), &name);
        let encoded = format!("x=1&{name}={}&y=2", percent_encode(&value));
        let decoded = query_param(Some(&encoded), &name);
        prop_assert_eq!(decoded.as_deref(), Some(value.as_str()));
    }

    #[test]
    fn canonical_paths_are_normal_forms(raw in path_like()) {
        match canonical_path(&raw) {
            Err(_) => {
                // Only a control character (raw or escaped) is refused.
                let decoded_has_ctl = raw.bytes().any(|b| b.is_ascii_control())
                    || raw.to_ascii_lowercase().as_bytes().windows(3).any(|w| {
                        w[0] == b'%'
                            && std::str::from_utf8(&w[1..])
                                .ok()
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                                .is_some_and(|v| v.is_ascii_control())
                    });
                prop_assert!(decoded_has_ctl, "{raw:?} refused");
            }
            Ok(c) => {
                prop_assert!(c.starts_with('/'), "{c:?}");
                if matches!(c, Cow::Owned(_)) {
                    prop_assert!(!c.contains("//"), "{raw:?} -> {c:?}");
                    prop_assert!(!c.split('/').any(|s| s == "." || s == ".."), "{raw:?} -> {c:?}");
                    prop_assert!(!c.contains(['\\', ';']), "{raw:?} -> {c:?}");
                }
                // Canonical is a fixed point (decoding an already decoded `%` aside).
                if !c.contains('%') {
                    let again = canonical_path(&c).expect("a canonical path is acceptable");
                    prop_assert_eq!(again.as_ref(), c.as_ref());
                }
            }
        }
    }

    #[test]
    fn hosts_never_panic(raw in "\\PC{0,40}") {
        if valid_host(&raw) {
            prop_assert!(raw.is_ascii() && !raw.contains([' ', '/', '@', '?', '#']), "{raw:?}");
        }
    }

    #[test]
    fn return_paths_never_leave_the_site(raw in "[/\\\\\t\n\r a-z.:%]{0,12}") {
        if safe_return_path(&raw) {
            // What a browser makes of it: tabs and newlines dropped, `\` read as `/`.
            let seen: String = raw.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect();
            let seen = seen.replace('\\', "/");
            prop_assert!(seen.starts_with('/') && !seen.starts_with("//"), "{raw:?} -> {seen:?}");
        }
    }

    #[test]
    fn escaped_html_has_no_markup(raw in "\\PC{0,80}") {
        let out = escape_html(&raw);
        prop_assert!(!out.contains(['<', '>', '"', '\'']), "{out}");
        for (i, _) in out.match_indices('&') {
            let rest = &out[i..];
            prop_assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].iter().any(|e| rest.starts_with(e)),
                "{out}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Config files.

/// A config exercising most sections (memory store, inline secrets, loopback only: nothing in
/// it resolves names or reads files, so mutations stay fast and hermetic).
const RICH: &str = r##"
[server]
listen = ["127.0.0.1:8080"]
admin_listen = "127.0.0.1:9901"
threads = 2
trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]
grace_period = "5s"

[keys]
active = 2
[[keys.key]]
id = 1
secret = "fuzz-secret-one-fuzz-secret-one-0123456789"
[[keys.key]]
id = 2
secret = "fuzz-secret-two-fuzz-secret-two-0123456789"

[store]
kind = "memory"
snapshot_interval = "200ms"

[cache]
max_bytes = "64MiB"
max_object = "1MiB"
default_ttl = "10s"

[bot]
table_slots = 4096
replay_slots = 4096
allow_cidrs = ["203.0.113.0/24"]
deny_headers = [{ name = "user-agent", contains = "EvilScraper" }]

[upstreams.shop]
servers = ["127.0.0.1:3000"]
connect_timeout = "1s"
read_timeout = "10s"
max_concurrent = 100
optional_share = 0.5
latency_target = "800ms"
health_check = { kind = "http", path = "/healthz", interval = "1s" }

[[routes]]
path = "/"
upstream = "shop"

[[routes]]
path = "/products"
upstream = "shop"
kind = "catalog"
cache_ttl = "5s"
stale_if_error = "5m"
latency_budget = "300ms"

[[routes]]
path = "/checkout"
upstream = "shop"
kind = "essential"

[[rooms]]
id = "drop"
hosts = ["shop.test"]
paths = ["/drops"]
methods = ["GET", "POST"]
new_users_per_minute = 600
total_active_users = 5000
session_duration = "10m"
queueing_method = "fifo"
queueing_status_code = 202
binding = "ip_prefix"
ip_prefix_v4 = 24
ip_prefix_v6 = 64
on_store_error = "admit_at_floor_rate"
floor_rate_per_minute = 60
message = "Big drop"
[rooms.page]
title = "Aurora"
logo_url = "/logo.svg"
brand_color = "#112233"
background_color = "#fff"
[rooms.bot]
mode = "enforce"
challenge = "suspicious"
difficulty = 18
[rooms.bot.limits]
joins_per_minute_per_ip = 30
[rooms.bot.thresholds]
challenge_at = 30
tarpit_at = 60
block_at = 100
[rooms.origin_aware]
min_factor = 0.3
[[rooms.events]]
name = "launch"
prequeue_at = "+1m"
starts_at = "+5m"
ends_at = "+1h"
shuffle = true
new_users_per_minute = 300

[[rooms]]
id = "checkout"
paths = ["/checkout"]
new_users_per_minute = 60
total_active_users = 100
"##;

/// The shipped example configs, with their secrets inlined, plus [`RICH`].
fn seeds() -> Vec<String> {
    let mut seeds = vec![RICH.to_owned()];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("config/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable config");
        let text = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("admin_token_env"))
            .map(|l| {
                if l.trim_start().starts_with("secret_env") {
                    "secret = \"inline-secret-inline-secret-0123456789\""
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            .replace("0.0.0.0:9901", "127.0.0.1:9901");
        seeds.push(text);
    }
    seeds
}

/// Values an operator (or a typo) might put anywhere. No `host:port` strings: those would make
/// the parser resolve names, which a hermetic test must not do.
const NASTY: &[&str] = &[
    "0",
    "-1",
    "1",
    "4294967296",
    "18446744073709551616",
    "1e400",
    "nan",
    "inf",
    "-inf",
    "-0.0",
    "0.5",
    "true",
    "\"\"",
    "\"x\"",
    "\"0s\"",
    "\"1ns\"",
    "\"99999999999999999d\"",
    "\"+99999999999999999h\"",
    "\"-5s\"",
    "\"1s 1s\"",
    "\"+0s\"",
    "\"1970-01-01T00:00:00Z\"",
    "\"9999-12-31T23:59:59Z\"",
    "\"/\"",
    "\"/.flashgate/x\"",
    "\"../x\"",
    "\"javascript:alert(1)\"",
    "\"<script>alert(1)</script>\"",
    "\"#zzz\"",
    "\"red;}</style>\"",
    "\"0.0.0.0/0\"",
    "\"::/0\"",
    "\"999GiB\"",
    "\"1KiB\"",
    "\"\\u0000\"",
    "[]",
    "[\"\"]",
    "{}",
    "{ kind = \"tcp\", interval = \"0s\" }",
];

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    ReplaceValue(usize, usize),
    InsertBytes(usize, Vec<u8>),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => any::<usize>().prop_map(Mutation::DeleteLine),
        1 => any::<usize>().prop_map(Mutation::DuplicateLine),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        4 => (any::<usize>(), any::<usize>()).prop_map(|(l, v)| Mutation::ReplaceValue(l, v)),
        2 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(p, b)| Mutation::InsertBytes(p, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// Lines whose values are socket addresses or URLs (resolved or connected to when parsed).
fn is_address_line(l: &str) -> bool {
    let k = l.trim_start();
    ["listen", "admin_listen", "servers", "url", "tls_listen"]
        .iter()
        .any(|a| k.starts_with(a))
}

fn apply(text: &str, muts: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for m in muts {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match m {
            Mutation::DeleteLine(i) => {
                lines.remove(i % n);
            }
            Mutation::DuplicateLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::SwapLines(a, b) => lines.swap(a % n, b % n),
            Mutation::ReplaceValue(i, v) => {
                let l = &lines[i % n];
                if let Some((k, _)) = l.split_once('=') {
                    if !is_address_line(l) {
                        lines[i % n] = format!("{k}= {}", NASTY[v % NASTY.len()]);
                    }
                }
            }
            Mutation::InsertBytes(i, bytes) => {
                let l = &lines[i % n];
                if !is_address_line(l) {
                    let mut b = l.clone().into_bytes();
                    let at = i.checked_div(n).unwrap_or(0) % (b.len() + 1);
                    b.splice(at..at, bytes.iter().copied().filter(|c| *c != b':'));
                    lines[i % n] = String::from_utf8_lossy(&b).into_owned();
                }
            }
            Mutation::Truncate(i) => lines.truncate(i % n),
        }
    }
    lines.join("\n")
}

/// Top-level sections an error's key may start with.
const SECTIONS: &[&str] = &[
    "server",
    "keys",
    "store",
    "cache",
    "bot",
    "upstreams",
    "routes",
    "rooms",
    "events",
];

fn check_config_result(name: &str, text: &str) -> Result<(), TestCaseError> {
    match Config::parse(name, text, NOW) {
        Ok(_) => {}
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(
                msg.starts_with(&format!("{name}: ")),
                "names the file: {msg}"
            );
            prop_assert!(!msg.contains('\n'), "one line: {msg:?}");
            prop_assert!(!e.reason.trim().is_empty(), "says why: {msg}");
            if !e.key.is_empty() {
                // A key under a known section, or the unknown key itself.
                prop_assert!(
                    SECTIONS.iter().any(|s| e.key.starts_with(s))
                        || e.reason.starts_with("unknown field"),
                    "names a key: {msg}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn every_seed_config_is_valid() {
    for (i, s) in seeds().iter().enumerate() {
        if let Err(e) = Config::parse("seed.toml", s, NOW) {
            panic!("seed {i} does not parse: {e}");
        }
    }
}

/// Every value of every seed replaced, one at a time, by every nasty value: exhaustive for
/// single-key mistakes (a few thousand parses).
#[test]
fn every_key_with_every_nasty_value() {
    let mut parsed = 0;
    for seed in seeds() {
        let lines: Vec<&str> = seed.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if !l.contains('=') || is_address_line(l) || l.trim_start().starts_with('#') {
                continue;
            }
            for (v, nasty) in NASTY.iter().enumerate() {
                let text = apply(&seed, &[Mutation::ReplaceValue(i, v)]);
                if let Err(e) = check_config_result("nasty.toml", &text) {
                    panic!("line {i} ({l}) = {nasty}: {e}");
                }
                parsed += 1;
            }
        }
    }
    assert!(parsed > 1000, "{parsed} configs");
}

proptest! {
    #![proptest_config(cases(400))]

    #[test]
    fn mutated_configs_are_refused_cleanly(
        seed in any::<proptest::sample::Index>(),
        muts in proptest::collection::vec(mutation(), 1..5),
    ) {
        let seeds = seeds();
        let text = apply(&seeds[seed.index(seeds.len())], &muts);
        check_config_result("fuzz.toml", &text)?;
    }

    #[test]
    fn random_bytes_are_refused_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_config_result("fuzz.toml", &String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn toml_soup_is_refused_cleanly(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("\n[server]\n"), Just("\n[keys]\n"), Just("\n[[keys.key]]\n"),
                Just("\n[store]\n"), Just("\n[upstreams.a]\n"), Just("\n[[routes]]\n"),
                Just("\n[[rooms]]\n"), Just("\n[rooms.page]\n"), Just("\n[rooms.bot]\n"),
                Just("\n[[rooms.events]]\n"), Just("\n[cache]\n"), Just("\n[bot]\n"),
                Just("\n[events]\n"), Just("\n[rooms.origin_aware]\n"),
                Just("id = "), Just("paths = "), Just("servers = [\"127.0.0.1:1\"]\n"),
                Just("secret = \"0123456789abcdef0123456789abcdef\"\n"), Just("active = "),
                Just("new_users_per_minute = "), Just("total_active_users = "),
                Just("path = "), Just("upstream = "), Just("kind = "), Just("tick = "),
                Just("starts_at = "), Just("ends_at = "), Just("difficulty = "),
                Just("\"a\"\n"), Just("\"/\"\n"), Just("1\n"), Just("0\n"), Just("nan\n"),
                Just("[\"/x\"]\n"), Just("\"+1s\"\n"), Just("\"1s\"\n"), Just("=\n"), Just("\"\n"),
            ],
            0..40,
        ),
    ) {
        check_config_result("fuzz.toml", &parts.concat())?;
    }
}

// ---------------------------------------------------------------------------------------------
// Proof-of-work solutions.

const ROOM: &str = "drop";

fn signer() -> Signer {
    Signer::new(&[9u8; 32])
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn solution_bodies_never_panic(body in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..3000),
        (any::<u64>(), "[ -~]{0,300}", "[ -~]{0,40}").prop_map(|(c, tok, room)| {
            format!("room={room}&challenge={tok}&counter={c}&return=%2Fx").into_bytes()
        }),
    ]) {
        let signer = signer();
        match bot::parse_solution(&body) {
            Err(e) => prop_assert_eq!(e, ChallengeError::Malformed),
            Ok(sol) => {
                prop_assert!(!sol.room.is_empty() && !sol.challenge.is_empty());
                // Nothing we did not sign verifies, whatever the counter.
                let r = signer.verify_solution(&sol.room, &sol.challenge, sol.counter, 0, NOW);
                prop_assert!(r.is_err(), "forged solution accepted: {sol:?}");
            }
        }
    }

    #[test]
    fn only_our_own_challenges_verify(
        flip in any::<proptest::sample::Index>(),
        bit in 0u8..8,
        counter in any::<u64>(),
        binding in any::<u64>(),
        at in 0u64..200_000,
    ) {
        let signer = signer();
        let c = signer.challenge(ROOM, 4, 7, NOW, Duration::from_secs(120), [3u8; 16]);
        let solved = bot::challenge::solve(&c.token, 4);
        let now = UnixMillis(NOW.0 + at);
        let honest = signer.verify_solution(ROOM, &c.token, solved, 7, now);
        prop_assert_eq!(honest.is_ok(), at <= 120_000, "{:?}", honest);
        // Another client, another room: refused.
        if binding != 7 {
            prop_assert!(signer.verify_solution(ROOM, &c.token, solved, binding, NOW).is_err());
        }
        prop_assert!(signer.verify_solution("other", &c.token, solved, 7, NOW).is_err());
        // A flipped bit anywhere in the token: refused.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut raw = b64.decode(&c.token).expect("our token decodes");
        let i = flip.index(raw.len());
        raw[i] ^= 1 << bit;
        let forged = b64.encode(&raw);
        prop_assert!(signer.verify_solution(ROOM, &forged, counter, 7, NOW).is_err());
        // Another key: refused.
        let other = Signer::new(&[8u8; 32]);
        prop_assert!(other.verify_solution(ROOM, &c.token, solved, 7, NOW).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Admin API bodies and feedback.

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,20}".prop_map(Value::String),
        (0usize..3000).prop_map(|n| Value::String("m".repeat(n))),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let key = prop_oneof![
            Just("new_users_per_minute".to_owned()),
            Just("total_active_users".to_owned()),
            Just("paused".to_owned()),
            Just("queue_all".to_owned()),
            Just("drain".to_owned()),
            Just("sold_out".to_owned()),
            Just("message".to_owned()),
            "[a-z_]{0,12}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check_patch(v: &Value) -> Result<(), TestCaseError> {
    let mut o = Overrides::default();
    match apply_patch(&mut o, v) {
        Ok(()) => {
            prop_assert!(o.new_users_per_minute.is_none_or(|n| n > 0));
            prop_assert!(o.total_active_users.is_none_or(|n| n > 0));
            prop_assert!(o.message.as_ref().is_none_or(|m| m.len() <= 1024));
        }
        Err(msg) => {
            let keys: Vec<&String> = v
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            prop_assert!(
                msg == "body must be a JSON object"
                    || keys.iter().any(|k| msg.starts_with(&format!("{k}: "))),
                "names the field at fault: {msg}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn admin_patches_never_panic(v in json_value()) {
        check_patch(&v)?;
    }

    #[test]
    fn admin_patch_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            check_patch(&v)?;
        }
    }

    #[test]
    fn feedback_never_panics_and_publishes_clean_text(
        json in any::<bool>(),
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            ("\\PC{0,8}", "\\PC{0,600}").prop_map(|(r, c)| {
                format!("rating={}&comment={}", percent_encode(&r), percent_encode(&c)).into_bytes()
            }),
            (any::<i64>(), "\\PC{0,600}").prop_map(|(r, c)| {
                serde_json::json!({"rating": r, "comment": c}).to_string().into_bytes()
            }),
            ("[1-5]", "[A-Za-z0-9_-]{30,60}").prop_map(|(r, tok)| {
                format!("rating={r}&comment=my+token+{tok}+oops").into_bytes()
            }),
        ],
    ) {
        let ctype = json.then_some("application/json; charset=utf-8");
        if let Ok(EventKind::Feedback { rating, comment }) = parse_feedback(ctype, &body) {
            prop_assert!((1..=5).contains(&rating.get()));
            if let Some(c) = comment {
                let c = c.as_str();
                prop_assert!(!c.is_empty() && c.chars().count() <= 500);
                prop_assert!(!c.chars().any(char::is_control), "{c:?}");
                prop_assert_eq!(c.trim(), c);
                // No token-shaped run survives (pasted cookies never reach the stream).
                let longest = c
                    .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'))
                    .map(str::len)
                    .max()
                    .unwrap_or(0);
                prop_assert!(longest < 32, "{c:?}");
            }
        }
    }
}
