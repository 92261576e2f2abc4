//! A real headless Chromium, driven through ChromeDriver's WebDriver HTTP API, opens a room
//! whose pre-queue is open: it must see the waiting page count down, and then land in the shop
//! by itself — no manual reload. `make test` installs Debian's `chromium` and
//! `chromium-driver`; without them this test fails and says so.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Flashgate, Origin};
use serde_json::{json, Value};

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
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=420,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
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
    let room = r#"
[[rooms]]
id = "launch"
paths = ["/"]
new_users_per_minute = 60
total_active_users = 100
poll_interval = "1s"
abandon_after = "30s"
claim_window = "10s"
message = "Aurora launch"

[[rooms.events]]
name = "browser-test"
prequeue_at = "+0s"
starts_at = "+6s"
ends_at = "+1h"
shuffle = true
"#;
    let fg = Flashgate::start(origin.addr, room).await;
    let driver = Driver::start().await;
    let profile = std::env::temp_dir().join(format!("fg-chromium-{}", free_port()));
    let sid = driver.session(&profile).await;
    driver
        .call(
            reqwest::Method::POST,
            &format!("/session/{sid}/url"),
            Some(json!({"url": format!("{}/", fg.base)})),
        )
        .await;

    // The waiting page, in the pre-queue, counting down.
    let state = driver
        .script(
            &sid,
            "return document.getElementById('fg')?.dataset.state ?? null",
        )
        .await;
    assert_eq!(state, "prequeue", "the waiting page is shown");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = driver
            .script(
                &sid,
                "return document.getElementById('fg-countdown')?.textContent ?? ''",
            )
            .await;
        if c.as_str().is_some_and(|t| !t.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the countdown never showed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shot = driver
        .call(
            reqwest::Method::GET,
            &format!("/session/{sid}/screenshot"),
            None,
        )
        .await;
    if let Some(b64) = shot.as_str() {
        use base64::Engine as _;
        if let Ok(png) = base64::engine::general_purpose::STANDARD.decode(b64) {
            let _ = std::fs::write(
                concat!(env!("CARGO_TARGET_TMPDIR"), "/waiting-page.png"),
                png,
            );
        }
    }
    assert_eq!(
        origin.shop.stats().requests,
        0,
        "nothing reached the shop while waiting"
    );

    // After the start, the page lets the browser into the shop without a reload by us.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let on_shop = driver
            .script(&sid, "return document.getElementById('fg') === null && document.body.innerText.includes('Aurora')")
            .await;
        if on_shop == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the browser was not let into the shop"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(origin.shop.stats().requests >= 1);
    assert_eq!(origin.shop.stats().requests_with_fg_cookie, 0);
    driver
        .call(reqwest::Method::DELETE, &format!("/session/{sid}"), None)
        .await;
    let _ = std::fs::remove_dir_all(&profile);
}
