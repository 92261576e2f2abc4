//! Config reloads, valid and invalid, under a steady crowd.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_reloads_under_load_lose_nothing() {
    let origin = Origin::start().await;
    let node = Node::start(&Config::new(origin.addr).room(sale())).await;
    let fg = &node;
    let base = fg.base.clone();
    fg.wait_room("drop", "the first slot", |r| {
        r["serving"].as_u64() >= Some(1)
    })
    .await;
    let mut holders = Vec::new();
    for _ in 0..3 {
        let c = fg.shopper();
        assert_eq!(enter(fg, &c).await, (200, true));
        holders.push(c);
    }
    fg.patch_room("drop", json!({"paused": true})).await;
    let mut line = Vec::new();
    for _ in 0..12 {
        let c = fg.shopper();
        let mut w = Watch::new(join(fg, &c).await);
        w.observe(&fg.status(&c, "drop").await, "joined");
        line.push((0usize, c, w));
    }

    // The crowd: holders shop, waiters poll and enter when told, newcomers keep joining.
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let crowd = crowd(&base, holders, &stop, &requests);
    let entries: Arc<Mutex<Vec<(u64, Duration)>>> = Arc::default();
    let started = Instant::now();
    let waiters = tokio::spawn(run_line(
        vec![base.clone()],
        line,
        started,
        entries.clone(),
        Duration::from_secs(40),
    ));

    // Reloads: valid ones (message, rate, a new room and route, the pool rebuilt) and invalid
    // ones (syntax, a bad value, a key that needs a restart), by API and by SIGHUP, with the
    // line released half-way.
    let base = std::fs::read_to_string(&fg.config).expect("config");
    let valid = |i: usize| valid_file(&base, i);
    let invalid = invalid_files(&base, node.cfg.port);
    let http = reqwest::Client::new();
    let mut reloads = (0, 0);
    for i in 0..12 {
        if i == 6 {
            fg.patch_room("drop", json!({"paused": false})).await;
        }
        let bad = i % 3 == 2;
        let (text, what) = if bad {
            let (what, t) = &invalid[(i / 3) % invalid.len()];
            (t.clone(), *what)
        } else {
            (valid(i), "valid")
        };
        std::fs::write(&fg.config, &text).expect("write config");
        if i % 2 == 0 {
            api_reload(fg, what, bad).await;
            if bad {
                reloads.1 += 1;
            } else {
                reloads.0 += 1;
            }
        } else {
            node.signal("HUP");
            if bad {
                reloads.1 += 1;
            } else {
                reloads.0 += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A good file again; the SIGHUP reloads above applied (or refused) asynchronously.
    std::fs::write(&fg.config, valid(100)).expect("write config");
    let r = http
        .post(format!("{}/api/reload", fg.admin))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 200);
    let report = fg.room("drop").await;
    assert_eq!(report["message"], "reload 100", "{report}");
    let log = node.log_text();
    assert!(
        log.matches("reload refused, the running config stays")
            .count()
            >= 2,
        "the refused SIGHUP reloads are logged: {log}"
    );

    let admitted = waiters.await.expect("the line");
    stop.store(true, Ordering::Relaxed);
    for t in crowd {
        t.await.expect("crowd member");
    }
    assert_eq!(admitted.len(), 12);
    assert_within_rate(&entries.lock(), 5.0, 0.0, "reloads under load");
    eprintln!(
        "{} valid and {} invalid reloads under a crowd: {} requests served, 0 errors",
        reloads.0,
        reloads.1,
        requests.load(Ordering::Relaxed)
    );
    node.assert_no_panic();
}

/// The crowd: holders shop, newcomers keep joining, until `stop`; each success counted.
fn crowd(
    base: &str,
    holders: Vec<reqwest::Client>,
    stop: &Arc<AtomicBool>,
    requests: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut crowd = Vec::new();
    for c in holders {
        let (fg, stop, requests) = (base.to_owned(), stop.clone(), requests.clone());
        crowd.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(enter(&fg, &c).await, (200, true), "a holder lost access");
                requests.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }
    {
        let (fg, stop, requests) = (base.to_owned(), stop.clone(), requests.clone());
        crowd.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let c = shopper::browser();
                let r = get(&fg, &c, "/echo").await;
                let code = r.status().as_u16();
                assert_eq!(code, 200, "a newcomer during reloads");
                requests.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    crowd
}

/// `POST /api/reload` of the file just written: a valid one is applied; a `bad` one is refused
/// with `FILE: key: reason` and the running config stays.
async fn api_reload(fg: &Node, what: &str, bad: bool) {
    let before = fg.room("drop").await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/reload", fg.admin))
        .send()
        .await
        .expect("reload");
    let code = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or_default();
    if bad {
        assert_eq!(code, 422, "{what}: {body}");
        let err = body["error"].as_str().unwrap_or("");
        assert!(
            err.starts_with(&format!("{}: ", fg.config.display())),
            "{what}: FILE: key: reason, got {err:?}"
        );
        // The running config stays.
        let after = fg.room("drop").await;
        for k in ["new_users_per_minute", "message", "total_active_users"] {
            assert_eq!(
                before[k], after[k],
                "{what}: {k} changed by a refused reload"
            );
        }
    } else {
        assert_eq!(code, 200, "{body}");
    }
}

/// The `i`th valid reload of `base`: a message, a rate and a new room, the pool rebuilt, or a
/// new route.
fn valid_file(base: &str, i: usize) -> String {
    match i % 4 {
        0 => base.replace(
            "claim_window = \"10s\"",
            &format!("claim_window = \"10s\"\nmessage = \"reload {i}\""),
        ),
        1 => {
            base.replace("new_users_per_minute = 240", "new_users_per_minute = 300")
                + &Room::new(&format!("extra{i}"))
                    .paths(&["/extra"])
                    .capacity(10)
                    .to_string()
        }
        2 => base.replace("read_timeout = \"5s\"", "read_timeout = \"4s\""),
        _ => {
            base.replace(
                "claim_window = \"10s\"",
                &format!("claim_window = \"10s\"\nmessage = \"reload {i}\""),
            ) + "\n[[routes]]\npath = \"/products\"\nupstream = \"shop\"\nkind = \"catalog\"\n"
        }
    }
}

/// Invalid reloads of `base` (listening on `port`): a syntax error, a bad value, a key that
/// needs a restart.
fn invalid_files(base: &str, port: u16) -> [(&'static str, String); 3] {
    [
        ("syntax", base.replace("[[rooms]]", "[[rooms]")),
        (
            "value",
            base.replace("new_users_per_minute = 240", "new_users_per_minute = 0"),
        ),
        (
            "restart",
            base.replace(
                &format!("127.0.0.1:{}", port),
                &format!("127.0.0.1:{}", free_port()),
            ),
        ),
    ]
}
