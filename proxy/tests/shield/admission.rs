//! Admission follows the origin's health.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_aware_admission_follows_the_origins_health() {
    let origin = Origin::start().await;
    // 1200 a minute: 20 a second while the origin is healthy, 5 at min_factor 0.25.
    let health = Table::new()
        .set("min_factor", 0.25)
        .set("latency_target", "300ms")
        .set("error_target", 0.05);
    let drop = Room::new("drop")
        .paths(&["/drops"])
        .rate(1200)
        .capacity(100_000);
    let drop = drop.set("tick", "200ms").poll("1s").windows("5m", "2m");
    let fg = Node::start(&Config::new(origin.addr).room(drop.table("origin_aware", health))).await;
    let shop = &origin.shop;
    let c = shopper::client();

    // A long line: 400 shoppers with a ticket each (no cookies: one ticket per request).
    let mut joins = JoinSet::new();
    for w in 0..8 {
        let (c, url) = (c.clone(), format!("{}/drops/velvet", fg.base));
        joins.spawn(async move {
            for i in 0..50 {
                // The first few are let in at once (and get the shop's 404): fine.
                c.get(format!("{url}?w={w}&i={i}"))
                    .header("accept", "application/json")
                    .send()
                    .await
                    .expect("join");
            }
        });
    }
    while let Some(j) = joins.join_next().await {
        j.expect("joining task");
    }
    let room = fg.room("drop").await;
    assert!(room["tickets_issued"].as_u64() >= Some(400), "{room}");
    assert_eq!(room["origin_factor"], 1.0);
    assert_eq!(room["new_users_per_minute"], 1200);
    // Seconds of wait per shopper in line, as the ETA tells it.
    let eta_per_shopper = |r: &Value| {
        let eta = r["eta_back_of_line_seconds"].as_u64().unwrap_or(0) as f64;
        eta / r["waiting"].as_u64().unwrap_or(1).max(1) as f64
    };
    let healthy_eta = eta_per_shopper(&room);

    // Admissions per second over `window`, from the serving number.
    let rate = |window: Duration| {
        let fg = &fg;
        async move {
            let a = fg.room("drop").await;
            let t = Instant::now();
            wait_until("the window", window + Duration::from_secs(1), || {
                (t.elapsed() >= window).then_some(())
            })
            .await;
            let b = fg.room("drop").await;
            let secs = t.elapsed().as_secs_f64();
            assert!(
                b["waiting"].as_u64() > Some(0),
                "the line must not run dry: {b}"
            );
            let served = b["serving"].as_u64().unwrap_or(0) - a["serving"].as_u64().unwrap_or(0);
            served as f64 / secs
        }
    };
    let healthy = rate(Duration::from_secs(2)).await;
    assert!(healthy > 10.0, "about 20 a second: {healthy}");

    // The origin fails every request; traffic on the room's pool keeps telling the shield.
    shop.set_failing(Some(500));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (c, url, stop) = (c.clone(), format!("{}/echo", fg.base), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = c.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let low = fg
        .wait_room("drop", "the factor to fall", |r| {
            r["origin_factor"].as_f64().is_some_and(|f| f <= 0.3)
        })
        .await;
    assert!(low["new_users_per_minute"].as_u64() <= Some(360), "{low}");
    assert!(
        eta_per_shopper(&low) > healthy_eta * 2.0,
        "the ETA follows the lower rate: {low} vs {healthy_eta} s per shopper"
    );
    let gauge = fg
        .metrics()
        .await
        .first("flashgate_origin_health_factor", &[("room", "drop")]);
    assert!(gauge.is_some_and(|g| g <= 0.3), "{gauge:?}");
    let degraded = rate(Duration::from_secs(2)).await;
    assert!(
        degraded < healthy * 0.6,
        "admissions slow down with the origin: {degraded} vs {healthy}"
    );
    // Never below min_factor.
    assert!(fg.room("drop").await["origin_factor"].as_f64() >= Some(0.25));

    // The origin recovers: once its errors leave the window, the rate climbs back.
    shop.set_failing(None);
    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("traffic task");
    let up = fg
        .wait_room("drop", "the factor to recover", |r| {
            r["origin_factor"].as_f64().is_some_and(|f| f >= 0.5)
        })
        .await;
    assert!(up["new_users_per_minute"].as_u64() >= Some(600), "{up}");
    let gauge = fg
        .metrics()
        .await
        .first("flashgate_origin_health_factor", &[("room", "drop")]);
    assert!(gauge.is_some_and(|g| g >= 0.5), "{gauge:?}");
}
