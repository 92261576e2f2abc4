//! A real headless Chromium, driven through ChromeDriver's WebDriver HTTP API, opens a room
//! whose pre-queue is open: it must see the waiting page count down, and then land in the shop
//! by itself — no manual reload. `make test` installs Debian's `chromium` and
//! `chromium-driver`; without them this test fails and says so.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::config::Table;
use testkit::{free_port, wait_for, Bot, Config, Node, Origin, Room};

const DRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Self {
        assert!(
            std::path::Path::new(DRIVER).exists(),
            "{DRIVER} is missing: run `make test` (it installs chromium and chromium-driver), \
             or `apt-get install chromium chromium-driver`"
        );
        let port = free_port();
        let child = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let d = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = d.http.get(format!("{}/status", d.url)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("webdriver json");
        v["value"].clone()
    }

    async fn session(&self, profile: &std::path::Path) -> String {
        self.session_with(profile, &[]).await
    }

    /// A session with extra Chromium arguments.
    async fn session_with(&self, profile: &std::path::Path, extra: &[&str]) -> String {
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=420,900",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": args,
            }
        }}});
        let v = self
            .call(reqwest::Method::POST, "/session", Some(caps))
            .await;
        v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned()
    }

    async fn navigate(&self, sid: &str, url: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/session/{sid}/url"),
            Some(json!({ "url": url })),
        )
        .await;
    }

    /// The names of the cookies the browser holds for the current page (HttpOnly ones too).
    async fn cookie_names(&self, sid: &str) -> Vec<String> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/session/{sid}/cookie"),
                None,
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Clicks the first element matching `css`.
    async fn click(&self, sid: &str, css: &str) {
        let el = self
            .call(
                reqwest::Method::POST,
                &format!("/session/{sid}/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = el
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {el}"))
            .to_owned();
        self.call(
            reqwest::Method::POST,
            &format!("/session/{sid}/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Polls `js` (which returns a boolean) until it is true.
    async fn wait_for(&self, sid: &str, what: &str, js: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.script(sid, js).await == true {
                return;
            }
            let text = self
                .script(sid, "return location.href + ' ' + document.body?.innerText")
                .await;
            assert!(
                Instant::now() < deadline,
                "{what}: not seen; the page: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the session and removes its browser profile.
    async fn end(&self, sid: &str, profile: &std::path::Path) {
        self.call(reqwest::Method::DELETE, &format!("/session/{sid}"), None)
            .await;
        let _ = std::fs::remove_dir_all(profile);
    }

    /// Saves a PNG of the page under the test artifacts directory; returns its path.
    async fn screenshot(&self, sid: &str, name: &str) -> std::path::PathBuf {
        use base64::Engine as _;
        let shot = self
            .call(
                reqwest::Method::GET,
                &format!("/session/{sid}/screenshot"),
                None,
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().expect("a screenshot"))
            .expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).expect("save the screenshot");
        path
    }

    /// `document.getElementById(id)?.PROPERTY` in the page.
    async fn by_id(&self, sid: &str, id: &str, property: &str) -> Value {
        let js = format!("return document.getElementById('{id}')?.{property}");
        self.script(sid, &js).await
    }

    async fn script(&self, sid: &str, js: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            &format!("/session/{sid}/execute/sync"),
            Some(json!({"script": js, "args": []})),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_waits_counts_down_and_enters_by_itself() {
    let origin = Origin::start().await;
    let window = Table::new()
        .set("name", "browser-test")
        .set("prequeue_at", "+0s")
        .set("starts_at", "+10s")
        .set("ends_at", "+1h")
        .set("shuffle", true);
    let launch = Room::new("launch")
        .paths(&["/"])
        .poll("1s")
        .windows("30s", "10s");
    let launch = launch.message("Aurora launch").event(window);
    // The browser first: the pre-queue window starts with the node, and a browser that takes
    // long to start on a busy machine must not eat into it.
    let driver = Driver::start().await;
    let profile = std::env::temp_dir().join(format!("fg-chromium-{}", free_port()));
    let sid = driver.session(&profile).await;
    let fg = Node::start(&Config::new(origin.addr).room(launch)).await;
    driver.navigate(&sid, &fg.url("/")).await;

    // The waiting page, in the pre-queue, counting down.
    let state = driver.by_id(&sid, "fg", "dataset.state ?? null").await;
    assert_eq!(state, "prequeue", "the waiting page is shown");
    let js = "return (document.getElementById('fg-countdown')?.textContent ?? '') !== ''";
    driver
        .wait_for(&sid, "the countdown", js, Duration::from_secs(10))
        .await;
    driver.screenshot(&sid, "waiting-page.png").await;
    assert_eq!(
        origin.shop.stats().requests,
        0,
        "nothing reached the shop while waiting"
    );

    // After the start, the page lets the browser into the shop without a reload by us.
    let js = "return document.getElementById('fg') === null && document.body.innerText.includes('Aurora')";
    driver
        .wait_for(
            &sid,
            "the browser let into the shop",
            js,
            Duration::from_secs(60),
        )
        .await;
    assert!(origin.shop.stats().requests >= 1);
    assert_eq!(origin.shop.stats().requests_with_fg_cookie, 0);
    driver.end(&sid, &profile).await;
}

/// The waiting page keeps its place on one event stream after the ticket cookie the stream's
/// response set has lapsed (the browser deletes it): the stream renews the ticket in its
/// events' ids, and the page has the cookie renewed with the last one before it goes in. It
/// does not fall back to polling. (Fails with a page that ignores the ids: the browser comes
/// back without a ticket and gets a second one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browsers_event_stream_keeps_its_place_after_the_cookie_lapses() {
    let origin = Origin::start().await;
    // The ticket cookie lives 6 s; the stream renews the ticket every 2 s in its events' ids.
    let line = Room::new("line").paths(&["/"]).poll("1s");
    let line = line.set("abandon_after", "6s").set("token_leeway", "0s");
    let driver = Driver::start().await;
    let profile = std::env::temp_dir().join(format!("fg-chromium-{}", free_port()));
    let sid = driver.session(&profile).await;
    let fg = Node::start(&Config::new(origin.addr).room(line)).await;
    fg.patch_room("line", json!({"paused": true})).await;
    driver.navigate(&sid, &fg.url("/")).await;
    let streams = || fg.metric("flashgate_event_streams");
    wait_for(
        "the page's event stream",
        Duration::from_secs(20),
        || async { streams().await >= 1.0 },
    )
    .await;
    wait_for(
        "the browser's ticket cookie to lapse",
        Duration::from_secs(30),
        || async {
            !driver
                .cookie_names(&sid)
                .await
                .iter()
                .any(|n| n == "fg_t_line")
        },
    )
    .await;
    let polls = fg
        .metrics()
        .await
        .sum("flashgate_requests_total", &[("decision", "reserved")]);
    // Unpaused, the open stream lets the browser in, with its place.
    fg.patch_room("line", json!({"paused": false})).await;
    wait_for(
        "the browser in the shop",
        Duration::from_secs(30),
        || async {
            driver
                .script(&sid, "return document.getElementById('fg') === null")
                .await
                == true
        },
    )
    .await;
    assert_eq!(origin.shop.stats().requests_with_fg_cookie, 0);
    let after = fg
        .metrics()
        .await
        .sum("flashgate_requests_total", &[("decision", "reserved")]);
    assert!(
        after - polls < 10.0,
        "the page polled instead: {polls} -> {after}"
    );
    // One stream, one ticket: the place outlived the cookie that carried it.
    assert_eq!(fg.metric("flashgate_event_streams_opened_total").await, 1.0);
    let tickets = fg
        .metrics()
        .await
        .sum("flashgate_tickets_issued_total", &[("room", "line")]);
    assert_eq!(tickets, 1.0);
    driver.end(&sid, &profile).await;
}

/// The whole shopper journey in a real browser, through a room that makes every new arrival
/// solve a proof of work: the challenge page's Web Worker solves it, the browser waits in line
/// (screenshot saved as a test artifact), is let in by the page itself, and checks out through
/// the shop's own forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_solves_the_challenge_waits_and_checks_out() {
    let launch = Room::new("launch").paths(&["/"]).poll("1s");
    let launch = launch.message("Aurora Lip Kit launch: one kit per shopper");
    let launch = launch.windows("60s", "10s").page("title", "Aurora Beauty");
    let (origin, fg) = testkit::shop_with([launch.bot(Bot::enforce().always(12))]).await;
    fg.patch_room("launch", json!({"paused": true})).await;
    let driver = Driver::start().await;
    let profile = std::env::temp_dir().join(format!("fg-chromium-{}", free_port()));
    // A desktop Chrome's user agent: the headless marker would (rightly) score as automation.
    let ua = "--user-agent=Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
              Chrome/124.0.0.0 Safari/537.36";
    let sid = driver.session_with(&profile, &[ua, "--lang=en-US"]).await;
    let started = Instant::now();
    driver.navigate(&sid, &format!("{}/", fg.base)).await;

    // The challenge page solves in a Web Worker, posts, and comes back: the waiting page.
    let js = "return document.getElementById('fg')?.dataset.state === 'paused'";
    driver
        .wait_for(
            &sid,
            "the waiting page after the challenge",
            js,
            Duration::from_secs(30),
        )
        .await;
    let solved_after = started.elapsed();
    let m = fg.metrics().await;
    let solved = m.first(
        "flashgate_bot_challenges_total",
        &[("result", "solved"), ("room", "launch")],
    );
    assert_eq!(solved, Some(1.0), "the page solved one challenge:\n{m}");
    let position = driver.by_id(&sid, "fg-position", "textContent").await;
    assert_eq!(position, "1", "first in line");
    let shot = driver.screenshot(&sid, "waiting-room-pow.png").await;
    assert_eq!(
        origin.shop.stats().requests,
        0,
        "nothing reached the shop while waiting"
    );

    // The line opens: the page takes the browser into the shop by itself.
    fg.patch_room("launch", json!({"paused": false})).await;
    let js = "return document.getElementById('fg') === null \
             && document.getElementById('fg-challenge') === null \
             && document.body.innerText.includes('Aurora')";
    driver
        .wait_for(&sid, "the shop's home page", js, Duration::from_secs(30))
        .await;

    // Shop: a product page, "Add to bag", then "Place order" in the bag.
    driver
        .navigate(&sid, &format!("{}/products/AURORA-LIP-KIT", fg.base))
        .await;
    driver.click(&sid, "form[action='/cart'] button").await;
    let js =
        "return location.pathname === '/cart' && document.body.innerText.includes('Your bag') \
             && document.body.innerText.includes('Aurora Lip Kit')";
    driver
        .wait_for(&sid, "the bag", js, Duration::from_secs(10))
        .await;
    driver.click(&sid, "form[action='/checkout'] button").await;
    let js = "return document.body.innerText.includes('Thank you!') \
             && document.body.innerText.includes('ORD-')";
    driver
        .wait_for(&sid, "the order confirmation", js, Duration::from_secs(10))
        .await;
    driver.screenshot(&sid, "order-confirmed.png").await;
    let stats = origin.shop.stats();
    assert_eq!(stats.orders, 1, "one order placed");
    assert_eq!(
        stats.requests_with_fg_cookie, 0,
        "the shop never saw a queue cookie"
    );
    assert_eq!(fg.room("launch").await["entered_total"], 1);
    eprintln!(
        "challenge solved and waiting page shown after {solved_after:?}; checked out after \
         {:?}; screenshot {}",
        started.elapsed(),
        shot.display()
    );
    driver.end(&sid, &profile).await;
}
