//! The `flashgate` command line: help, keygen, `admin`, `token inspect`, `check`.

use super::*;

#[test]
fn help_for_every_command() {
    let commands: &[&[&str]] = &[
        &[],
        &["run"],
        &["demo"],
        &["shop"],
        &["check"],
        &["keygen"],
        &["admin"],
        &["admin", "rooms"],
        &["admin", "room"],
        &["admin", "set"],
        &["admin", "pause"],
        &["admin", "resume"],
        &["admin", "drain"],
        &["admin", "sold-out"],
        &["admin", "reload"],
        &["admin", "health"],
        &["token"],
        &["token", "inspect"],
    ];
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = cli(&args, &[]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(stdout.contains("Usage: flashgate"), "{args:?}: {stdout}");
        assert!(stdout.lines().count() >= 3, "{args:?} explains itself");
    }
    let top = text(&cli(&["--help"], &[]).stdout);
    for sub in ["run", "demo", "shop", "check", "keygen", "admin", "token"] {
        assert!(top.contains(&format!("  {sub} ")), "--help lists {sub}");
    }
}

#[test]
fn keygen_prints_fresh_secrets() {
    let a = cli(&["keygen"], &[]);
    let b = cli(&["keygen"], &[]);
    assert!(a.status.success() && b.status.success());
    let (a, b) = (text(&a.stdout), text(&b.stdout));
    for k in [&a, &b] {
        let k = k.trim_end();
        assert_eq!(k.len(), 64, "{k}");
        assert!(k.bytes().all(|c| c.is_ascii_hexdigit()), "{k}");
    }
    assert_ne!(a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_cli_against_a_running_node() {
    let origin = Origin::start().await;
    let node = with_token(&origin, "hi").await;
    let url = format!("127.0.0.1:{}", node.cfg.admin_port);
    let with_token = [("FLASHGATE_ADMIN_TOKEN", ADMIN_TOKEN)];
    let admin = |args: &[&str], env: &[(&str, &str)]| {
        let mut a = vec!["admin", "--url", url.as_str()];
        a.extend_from_slice(args);
        cli(&a, env)
    };
    let ok = |args: &[&str]| {
        let out = admin(args, &with_token);
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };

    // Without the token: refused with the API's answer, exit 2.
    let out = admin(&["rooms"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("admin API answered 401"),
        "{}",
        text(&out.stderr)
    );
    // Health needs none.
    let out = admin(&["health"], &[]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "ready");
    // The token can come from another variable.
    let out = cli(
        &["admin", "--url", &url, "--token-env", "MY_TOKEN", "rooms"],
        &[("MY_TOKEN", ADMIN_TOKEN)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let rooms: Value = serde_json::from_str(&ok(&["rooms"])).expect("rooms JSON");
    assert_eq!(rooms[0]["id"], "drop");
    let one: Value = serde_json::from_str(&ok(&["room", "drop"])).expect("room JSON");
    assert_eq!(one["new_users_per_minute"], 60);

    let set: Value = serde_json::from_str(&ok(&[
        "set",
        "drop",
        "new_users_per_minute=77",
        "message=Back soon",
    ]))
    .expect("set JSON");
    assert_eq!(set["new_users_per_minute"], 77);
    assert_eq!(set["message"], "Back soon");
    assert_eq!(node.room("drop").await["new_users_per_minute"], 77);

    ok(&["pause", "drop"]);
    let r = node.room("drop").await;
    assert_eq!(
        (r["paused"].clone(), r["state"].clone()),
        (json!(true), json!("paused"))
    );
    ok(&["resume", "drop"]);
    assert_eq!(node.room("drop").await["paused"], false);
    ok(&["drain", "drop"]);
    assert_eq!(node.room("drop").await["drain"], true);
    ok(&["sold-out", "drop"]);
    let r = node.room("drop").await;
    assert_eq!(
        (r["sold_out"].clone(), r["state"].clone()),
        (json!(true), json!("sold_out"))
    );
    ok(&[
        "set",
        "drop",
        "sold_out=false",
        "drain=false",
        "message=null",
    ]);
    let r = node.room("drop").await;
    assert_eq!(r["sold_out"], false);
    assert_eq!(
        r["message"], "hi",
        "null clears the override: the config's message"
    );

    let reload: Value = serde_json::from_str(&ok(&["reload"])).expect("reload JSON");
    assert_eq!(reload["reloaded"], true);

    // Errors: unknown room, bad key, unreachable node.
    let out = admin(&["room", "nope"], &with_token);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("404"));
    let out = admin(&["set", "drop", "pause=true"], &with_token);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("pause: unknown field"));
    let out = admin(&["set", "drop", "oops"], &with_token);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("expected key=value"));
    let closed = format!("127.0.0.1:{}", free_port());
    let out = cli(&["admin", "--url", &closed, "health"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot reach the admin API"));

    // The audit log has every change.
    let audits = node
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("flashgate::audit"))
        .count();
    assert!(audits >= 6, "{audits} audit lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_inspect_on_a_real_ticket() {
    let origin = Origin::start().await;
    let cfg = base(&origin).room(room("drop", "/echo", 60, "hi"));
    let node = start(&cfg).await;
    node.admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": true})))
        .await;
    let (code, st, headers) =
        get_json(&reqwest::Client::new(), &format!("{}/echo", node.base)).await;
    assert_eq!(code, 202);
    let token = headers
        .get("x-flashgate-token")
        .and_then(|v| v.to_str().ok())
        .expect("ticket token")
        .to_owned();
    let config = node.config.display().to_string();
    let out = cli(&["token", "inspect", &token, "-c", &config], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("Ticket"), "{printed}");
    assert!(printed.contains("\"drop\""), "{printed}");
    assert!(
        printed.contains(&format!("number: {}", st["ticket"])),
        "{printed}"
    );

    // A forged token (one character changed) does not verify.
    let mut forged = token.clone().into_bytes();
    let i = forged.len() - 3;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let out = cli(&["token", "inspect", &forged, "-c", &config], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("token does not verify"));
}

// ---------------------------------------------------------------------------------------------
// `flashgate check` on the monitoring files
// ---------------------------------------------------------------------------------------------

#[test]
fn check_verifies_monitoring_metric_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dash = root.join("config/monitoring/grafana-dashboard.json");
    let alerts = root.join("config/monitoring/alerts.yml");
    let out = cli(
        &[
            "check",
            dash.to_str().expect("path"),
            alerts.to_str().expect("path"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("grafana-dashboard.json: ok ("), "{stdout}");
    assert!(stdout.contains("alerts.yml: ok ("), "{stdout}");

    let dir = std::env::temp_dir().join(format!("flashgate-ops-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bogus = dir.join("alerts.yml");
    let original = std::fs::read_to_string(&alerts).expect("alerts");
    std::fs::write(
        &bogus,
        original.replace("flashgate_store_degraded", "flashgate_store_is_sad"),
    )
    .expect("write");
    let broken_json = dir.join("dash.json");
    std::fs::write(&broken_json, "{\"panels\": [").expect("write");
    let out = cli(
        &[
            "check",
            bogus.to_str().expect("path"),
            broken_json.to_str().expect("path"),
            dash.to_str().expect("path"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: unknown metric flashgate_store_is_sad",
            bogus.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}: not JSON", broken_json.display())),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
