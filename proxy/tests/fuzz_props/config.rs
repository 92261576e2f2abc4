//! Config files.

use super::*;

/// A config exercising most sections: `tests/fixtures/fuzz/rich.toml` (memory store, inline
/// secrets, loopback only: nothing in it resolves names or reads files, so mutations stay fast
/// and hermetic).
const RICH: &str = include_str!("../fixtures/fuzz/rich.toml");

/// The shipped example configs, with their secrets inlined, plus [`RICH`].
fn seeds() -> Vec<String> {
    let mut seeds = vec![RICH.to_owned()];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    for f in testkit::toml_files(&dir) {
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
