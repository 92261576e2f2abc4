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

#[test]
fn store_tls_reads_the_ca_and_client_certificate_and_names_the_bad_file() {
    use super::test_fixture::{parse, refuse, with_shop};
    let dir = std::env::temp_dir().join(format!("flashgate-store-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca = rcgen::generate_simple_self_signed(vec!["redis-ca".to_owned()]).expect("CA");
    let client = rcgen::generate_simple_self_signed(vec!["flashgate".to_owned()]).expect("cert");
    let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).expect("cert");
    let file = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).expect("write");
        p.display().to_string()
    };
    let ca_file = file("ca.pem", ca.cert.pem());
    let cert_file = file("client.pem", client.cert.pem());
    let key_file = file("client.key", client.signing_key.serialize_pem());
    let other_key = file("other.key", other.signing_key.serialize_pem());
    let store = |url: &str, tls: &str| {
        with_shop(&format!(
            "[store]\nkind = \"redis\"\nurl = \"{url}\"\n[store.tls]\n{tls}"
        ))
    };
    let all = format!(
        "ca_file = \"{ca_file}\"\ncert_file = \"{cert_file}\"\nkey_file = \"{key_file}\"\n"
    );
    let c = parse("tls.toml", &store("rediss://10.0.0.5:6380", &all));
    let StoreKind::Redis { tls: Some(t), .. } = &c.store else {
        panic!("no TLS settings: {:?}", c.store)
    };
    assert_eq!(t.ca.as_deref(), Some(ca.cert.pem().as_bytes()));
    let id = t.client.as_ref().expect("client certificate");
    assert_eq!(id.cert, client.cert.pem().into_bytes());
    assert!(
        !format!("{t:?}").contains("PRIVATE"),
        "no key material in Debug"
    );
    // The events sink on the store's Redis gets the same settings.
    let events = format!(
        "{}\n[events]\nsink = \"redis\"\n",
        store("rediss://10.0.0.5:6380", &all)
    );
    let c = parse("tls-events.toml", &events);
    assert!(matches!(
        &c.events.sink,
        crate::events::settings::EventSink::Redis { tls: Some(_), .. }
    ));
    // Sentinel over TLS takes them too.
    parse(
        "sentinel.toml",
        &store("rediss+sentinel://10.0.0.5:26379/main", &all),
    );

    // Each problem names its key and file.
    let e = refuse(
        "bad.toml",
        &store("rediss://h:1", &format!("ca_file = \"{key_file}\"\n")),
    );
    assert_eq!(e.key, "store.tls.ca_file");
    assert!(e.reason.contains(&key_file), "{e}");
    let mismatched = format!("cert_file = \"{cert_file}\"\nkey_file = \"{other_key}\"\n");
    let e = refuse("bad.toml", &store("rediss://h:1", &mismatched));
    assert_eq!(e.key, "store.tls.key_file");
    assert!(e.reason.contains("not the certificate's key"), "{e}");
    let e = refuse(
        "bad.toml",
        &store("rediss://h:1", &format!("cert_file = \"{cert_file}\"\n")),
    );
    assert_eq!(e.key, "store.tls.key_file");
    let _ = std::fs::remove_dir_all(dir);
}
