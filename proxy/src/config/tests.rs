//! Config tests: every shipped config loads; every validation rule has a bad fixture in
//! `proxy/tests/fixtures/bad/` whose first line says the exact message expected.

use std::path::Path;

use super::*;

fn t0() -> UnixMillis {
    UnixMillis::from_secs(1_800_000_000)
}

/// The example configs read their secrets from these variables (CI sets them the same way:
/// see `make check-configs`).
pub const EXAMPLE_ENV: [(&str, &str); 3] = [
    (
        "FLASHGATE_KEY_1",
        "example-key-one-example-key-one-0123456789",
    ),
    (
        "FLASHGATE_KEY_2",
        "example-key-two-example-key-two-0123456789",
    ),
    ("FLASHGATE_ADMIN_TOKEN", "example-admin-token-0123"),
];

#[test]
fn shipped_configs_load() {
    for (k, v) in EXAMPLE_ENV {
        // Edition 2021: set_var is safe; no other test reads these variables.
        std::env::set_var(k, v);
    }
    let files = testkit::toml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../config"));
    for path in &files {
        Config::load(path, t0()).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        files.len() >= 2,
        "config/ holds the demo and the flash-sale examples"
    );
}

#[test]
fn every_bad_fixture_fails_with_its_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures exist") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("readable fixture");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| {
                panic!(
                    "{}: first line must be '# expect: KEY: REASON'",
                    path.display()
                )
            });
        let name = format!(
            "bad/{}",
            path.file_name().and_then(|f| f.to_str()).unwrap_or("")
        );
        let err = Config::parse(&name, &text, t0()).expect_err(&name);
        if expect.is_empty() {
            // Syntax errors: the message comes from the TOML parser; we only pin the shape.
            assert!(err.key.is_empty() && !err.reason.is_empty(), "{err}");
        } else {
            assert_eq!(err.to_string(), format!("{name}: {expect}"));
        }
        n += 1;
    }
    assert!(n >= 40, "one fixture per rule ({n} found)");
}

#[test]
fn relative_event_times_and_defaults() {
    let c = Config::parse("demo", crate::demo::DEMO_TOML, t0()).expect("demo config");
    let e = &c.rooms[0].settings.events[0];
    assert_eq!(e.prequeue_at, Some(t0()));
    assert_eq!(e.starts_at, t0().plus(Duration::from_secs(60)));
    assert_eq!(c.routes.len(), 2);
}
