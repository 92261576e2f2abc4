//! Security properties end to end (see `SECURITY.md` for the threat model):
//!
//! - the admin API listens on loopback unless told otherwise, and is unreachable from other
//!   interfaces (the bearer token itself is tested in `ops.rs`);
//! - every merchant string (title, logo URL, colours, message) and every reflected request
//!   value is escaped on every page flashgate renders: waiting, challenge, closed, error;
//! - every cookie flashgate sets is `HttpOnly`, `SameSite=Lax`, `Path=/` (and `Secure` over
//!   TLS: `ops.rs`, `tls_listener_serves_the_gate_with_secure_cookies`);
//! - no key, ticket, pass, challenge or challenge-passed token reaches the logs (text format,
//!   `RUST_LOG=debug`) or the event stream (JSON logs and the admin token: `ops.rs`).

use std::time::{Duration, Instant};

use flashgate::config::Config;
use serde_json::{json, Value};
use testkit::shopper::{get_json, set_cookies};
use testkit::{Config as NodeConfig, Launch, Node, Origin, SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_on_loopback_only() {
    // By default: no `admin_listen` in the file means 127.0.0.1.
    let text = NodeConfig::new("127.0.0.1:3000".parse().expect("addr"))
        .ports(8080, 9901)
        .render()
        .replace("admin_listen = \"127.0.0.1:9901\"\n", "");
    let c = Config::parse("default.toml", &text, flashgate::clock::now()).expect("valid");
    assert!(
        c.server.admin_listen.ip().is_loopback(),
        "{:?}",
        c.server.admin_listen
    );
    assert!(c.server.admin_token.is_none());
    // Public without a token: refused (fixture `admin_public.toml` has the exact message).
    let public = text.replace(
        "threads = 2",
        "threads = 2\nadmin_listen = \"0.0.0.0:9901\"",
    );
    assert!(Config::parse("public.toml", &public, flashgate::clock::now()).is_err());

    // A running node: its admin port answers on loopback and nowhere else.
    let origin = Origin::start().await;
    let fg = Node::start(&NodeConfig::new(origin.addr)).await;
    let admin_port: u16 = fg
        .admin
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("admin port");
    assert_eq!(fg.readyz().await, 200);
    // This machine's address on its default route (a UDP "connect" sends nothing).
    let outward = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip());
    match outward {
        Ok(ip) if !ip.is_loopback() && !ip.is_unspecified() => {
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect((ip, admin_port)),
            )
            .await;
            assert!(
                !matches!(r, Ok(Ok(_))),
                "the admin API answers on {ip}:{admin_port}"
            );
            eprintln!("admin port refused on {ip}, served on 127.0.0.1");
        }
        other => eprintln!("no non-loopback interface to try ({other:?})"),
    }
}

/// A room whose branding tries every injection it can.
const HOSTILE: &str = r##"
[[rooms]]
id = "drop"
paths = ["/echo"]
new_users_per_minute = 60
total_active_users = 100
poll_interval = "1s"
message = "</p><script>alert('message')</script>"
[rooms.page]
title = "</title><script>alert('title')</script>"
logo_url = "https://cdn.example/x.png\" onerror=\"alert('logo')"
brand_color = "#ABCDEF"
background_color = "#fff"

[[rooms]]
id = "pow"
paths = ["/pow"]
new_users_per_minute = 60
total_active_users = 100
[rooms.page]
title = "<img src=x onerror=alert('pow')>"
logo_url = "/logo.svg?a=\"><script>alert(1)</script>"
[rooms.bot]
mode = "enforce"
challenge = "always"
difficulty = 4
[rooms.bot.thresholds]
challenge_at = 30
tarpit_at = 900
block_at = 1000
"##;

/// No markup from a merchant or a client survives into `html`: no raw tag opens, no raw quote
/// closes an attribute (escaped text such as `&lt;img onerror=…&gt;` is inert).
fn assert_inert(html: &str, what: &str) {
    for bad in [
        "<script>alert",
        "onerror=\"alert",
        "\" onerror=",
        "<img src=x",
        "</title><script",
        "\"><script>",
    ] {
        assert!(
            !html.contains(bad),
            "{what}: {bad:?} rendered as markup:\n{html}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merchant_and_client_strings_are_escaped_on_every_page() {
    brand_values_are_refused_by_name();

    let origin = Origin::start().await;
    let fg = Node::start(&NodeConfig::new(origin.addr).extra(HOSTILE)).await;
    fg.patch_room("drop", json!({"paused": true})).await;
    let c = fg.shopper();

    // The waiting page, with a hostile query reflected into it (the return address).
    let r = c
        .get(format!(
            "{}/echo?x=%22%3E%3Cscript%3Ealert(1)%3C/script%3E&y=\"><script>alert(2)</script>",
            fg.base
        ))
        .header("accept", "text/html")
        .send()
        .await
        .expect("waiting page");
    assert_eq!(r.status(), 200);
    let html = r.text().await.expect("html");
    assert_inert(&html, "waiting page");
    assert!(
        html.contains("&lt;/title&gt;&lt;script&gt;alert(&#39;title&#39;)"),
        "title as text"
    );
    assert!(html.contains("&lt;/p&gt;&lt;script&gt;"), "message as text");
    assert!(
        html.contains("x.png&quot; onerror=&quot;"),
        "logo URL kept inside its attribute"
    );
    assert!(html.contains("--brand: #abcdef"), "colours as validated");

    // A message set live through the admin API, and the status JSON it appears in.
    fg.patch_room(
        "drop",
        json!({"message": "<img src=x onerror=alert('live')>"}),
    )
    .await;
    let r = c
        .get(format!("{}/echo", fg.base))
        .header("accept", "text/html")
        .send()
        .await
        .expect("waiting page");
    let html = r.text().await.expect("html");
    assert_inert(&html, "waiting page, live message");
    assert!(html.contains("&lt;img src=x onerror=alert(&#39;live&#39;)&gt;"));
    let (_, st, headers) = get_json(&c, &format!("{}/.flashgate/status?room=drop", fg.base)).await;
    assert_eq!(
        st["message"], "<img src=x onerror=alert('live')>",
        "JSON carries text"
    );
    assert!(headers["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("application/json"));

    // The challenge page.
    let r = fg
        .shopper()
        .get(format!("{}/pow?r=\"><script>alert(3)</script>", fg.base))
        .header("accept", "text/html")
        .send()
        .await
        .expect("challenge page");
    assert_eq!(r.status(), 403);
    let html = r.text().await.expect("html");
    assert!(html.contains("data-challenge="), "the challenge page");
    assert_inert(&html, "challenge page");

    // The closed (sold out) page.
    fg.patch_room("drop", json!({"sold_out": true, "message": null}))
        .await;
    let r = fg
        .shopper()
        .get(format!("{}/echo", fg.base))
        .header("accept", "text/html")
        .send()
        .await
        .expect("closed page");
    assert_eq!(r.status(), 410);
    assert_inert(&r.text().await.expect("html"), "sold-out page");

    // The branded error page (origin down), for a shopper with a pass.
    fg.patch_room("drop", json!({"sold_out": false, "paused": false}))
        .await;
    let holder = fg.shopper();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = holder
            .get(format!("{}/echo", fg.base))
            .header("accept", "text/html")
            .send()
            .await
            .expect("entry");
        if r.status() == 200 && r.text().await.unwrap_or_default().contains("\"method\"") {
            break;
        }
        assert!(Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    origin.shop.set_down(true);
    let r = holder
        .get(format!("{}/echo", fg.base))
        .header("accept", "text/html")
        .send()
        .await
        .expect("error page");
    assert_eq!(r.status(), 502);
    let html = r.text().await.expect("html");
    assert!(html.contains("The shop is busy"));
    assert_inert(&html, "error page");
    assert!(
        html.contains("&lt;/title&gt;"),
        "the room's branding, escaped"
    );
}

/// Every flashgate cookie carries the attributes that keep scripts and other sites off it.
fn assert_cookie_attrs(cookies: &[String], what: &str) -> usize {
    let mut ours = 0;
    for c in cookies.iter().filter(|c| c.starts_with("fg_")) {
        ours += 1;
        for attr in ["; Path=/", "; HttpOnly", "; SameSite=Lax"] {
            assert!(c.contains(attr), "{what}: {c} lacks {attr}");
        }
        assert!(!c.contains("Secure"), "{what}: Secure over plain HTTP: {c}");
        assert!(
            !c.contains("Domain="),
            "{what}: a Domain widens the cookie: {c}"
        );
    }
    ours
}

/// The text-format log at debug level, and the event stream, through a whole session with a
/// proof-of-work challenge: no secret and no token value in either. Also checks every cookie
/// set along the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cookies_are_httponly_and_no_token_reaches_logs_or_events() {
    let origin = Origin::start().await;
    let events = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("security-events-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&events);
    let mut fg = Node::launch(
        &NodeConfig::new(origin.addr).extra(pow_room(&events)),
        Launch::log("debug"),
    )
    .await;
    fg.patch_room("pow", json!({"paused": true})).await;
    let mut tokens: Vec<(String, String)> = Vec::new();
    let c = fg.shopper();
    let mut cookies_seen = solve_the_challenge(&fg, &c, &mut tokens).await;
    cookies_seen += queue_renew_and_rate(&fg, &c, &mut tokens).await;
    cookies_seen += enter_and_leave(&fg, &c, &mut tokens).await;
    assert!(
        cookies_seen >= 6,
        "{cookies_seen} flashgate cookies checked"
    );

    // Let the event stream drain, then scan the log and the stream.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&events)
        .unwrap_or_default()
        .contains("\"feedback\"")
    {
        assert!(
            Instant::now() < deadline,
            "no feedback event in {}",
            events.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fg.kill();
    let log_text = fg.log_text();
    let events_text = std::fs::read_to_string(&events).expect("events");
    assert!(
        log_text.lines().count() > 10,
        "debug logging ran:\n{log_text}"
    );
    assert!(
        events_text.contains("[redacted]"),
        "the pasted token was redacted"
    );
    let secrets = assert_no_token_leaks(&tokens, &log_text, &events_text);
    assert!(!log_text.contains("panicked"));
    eprintln!(
        "{} log lines, {} events scanned for {} secrets; {cookies_seen} cookies checked",
        log_text.lines().count(),
        events_text.lines().count(),
        secrets.len()
    );
}

/// A room that challenges everyone (difficulty 4) and writes events to `events`.
fn pow_room(events: &std::path::Path) -> String {
    format!(
        r#"
[events]
sink = "file"
path = "{}"

[[rooms]]
id = "pow"
paths = ["/echo"]
new_users_per_minute = 600
total_active_users = 100
poll_interval = "1s"
[rooms.bot]
mode = "enforce"
challenge = "always"
difficulty = 4
[rooms.bot.thresholds]
challenge_at = 30
tarpit_at = 900
block_at = 1000
"#,
        events.display()
    )
}

/// What a browser sends on every request.
const BROWSER: [(&str, &str); 3] = [
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"),
        ("accept-language", "en"),
        ("accept-encoding", "gzip"),
];

/// `r` with [`BROWSER`]'s headers.
fn with(r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    BROWSER.iter().fold(r, |r, (k, v)| r.header(*k, *v))
}

/// 1. Challenged: solve it (a replayed solution is refused, and logged without its token); returns the cookies checked.
async fn solve_the_challenge(
    fg: &Node,
    c: &reqwest::Client,
    tokens: &mut Vec<(String, String)>,
) -> usize {
    let mut cookies_seen = 0;
    let r = with(c.get(format!("{}/echo", fg.base)))
        .header("accept", "application/json")
        .send()
        .await
        .expect("challenge");
    assert_eq!(r.status(), 403);
    let ch: Value = r.json().await.expect("challenge json");
    let challenge = ch["challenge"].as_str().expect("token").to_owned();
    tokens.push(("challenge".into(), challenge.clone()));
    let counter = flashgate::bot::challenge::solve(&challenge, 4);
    let r = with(c.post(format!("{}/.flashgate/challenge", fg.base)))
        .form(&[
            ("room", "pow"),
            ("challenge", challenge.as_str()),
            ("counter", counter.to_string().as_str()),
            ("return", "/echo"),
        ])
        .send()
        .await
        .expect("solution");
    assert_eq!(r.status(), 200);
    let set = set_cookies(&r);
    cookies_seen += assert_cookie_attrs(&set, "challenge passed");
    let passed: Value = r.json().await.expect("json");
    tokens.push((
        "challenge pass".into(),
        passed["token"].as_str().expect("pass").to_owned(),
    ));
    // A replayed solution is refused (and logged without its token).
    let r = with(c.post(format!("{}/.flashgate/challenge", fg.base)))
        .form(&[
            ("room", "pow"),
            ("challenge", challenge.as_str()),
            ("counter", counter.to_string().as_str()),
        ])
        .send()
        .await
        .expect("replay");
    assert_eq!(r.status(), 409);
    cookies_seen
}

/// 2. Queued: a ticket (cookie and header), renewed by a status poll; feedback with a pasted token in its comment.
async fn queue_renew_and_rate(
    fg: &Node,
    c: &reqwest::Client,
    tokens: &mut Vec<(String, String)>,
) -> usize {
    let mut cookies_seen = 0;
    let r = with(c.get(format!("{}/echo", fg.base)))
        .header("accept", "application/json")
        .send()
        .await
        .expect("queued");
    assert_eq!(r.status(), 200);
    cookies_seen += assert_cookie_attrs(&set_cookies(&r), "ticket");
    let ticket = r.headers()["x-flashgate-token"]
        .to_str()
        .expect("token")
        .to_owned();
    tokens.push(("ticket".into(), ticket));
    let r = with(c.get(format!("{}/.flashgate/status?room=pow", fg.base)))
        .send()
        .await
        .expect("status");
    cookies_seen += assert_cookie_attrs(&set_cookies(&r), "renewed ticket");
    if let Some(t) = r.headers().get("x-flashgate-token") {
        tokens.push((
            "renewed ticket".into(),
            t.to_str().expect("token").to_owned(),
        ));
    }
    // Feedback with a pasted token in the comment: redacted before it is published.
    let pasted = "AAAAbbbbCCCCddddEEEEffffGGGGhhhhIIIIjjjj-pasted";
    let r = with(c.post(format!("{}/.flashgate/feedback?room=pow", fg.base)))
        .header("content-type", "application/json")
        .body(json!({"rating": 4, "comment": format!("my token {pasted}")}).to_string())
        .send()
        .await
        .expect("feedback");
    assert_eq!(r.status(), 204);
    tokens.push(("pasted".into(), pasted.into()));
    cookies_seen
}

/// 3. Admitted: a pass; the ticket cookie is cleared. 4. Leave: both cookies cleared, with the same attributes.
async fn enter_and_leave(
    fg: &Node,
    c: &reqwest::Client,
    tokens: &mut Vec<(String, String)>,
) -> usize {
    let mut cookies_seen = 0;
    // 3. Admitted: a pass; the ticket cookie is cleared.
    fg.patch_room("pow", json!({"paused": false})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let pass = loop {
        let r = with(c.get(format!("{}/echo", fg.base)))
            .send()
            .await
            .expect("entry");
        let set = set_cookies(&r);
        if r.status() == 200 && set.iter().any(|s| s.starts_with("fg_p_pow=")) {
            cookies_seen += assert_cookie_attrs(&set, "pass");
            break r.headers()["x-flashgate-token"]
                .to_str()
                .expect("pass")
                .to_owned();
        }
        assert!(Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokens.push(("pass".into(), pass));

    // 4. Leave: both cookies cleared, with the same attributes.
    let r = with(c.post(format!("{}/.flashgate/leave?room=pow", fg.base)))
        .header("accept", "application/json")
        .send()
        .await
        .expect("leave");
    assert_eq!(r.status(), 200);
    cookies_seen += assert_cookie_attrs(&set_cookies(&r), "leave");
    cookies_seen
}

/// No token (nor the signing key) in the log or the event stream: not even a 24-character
/// piece of one. Returns what was looked for.
fn assert_no_token_leaks(
    tokens: &[(String, String)],
    log_text: &str,
    events_text: &str,
) -> Vec<(String, String)> {
    let mut secrets = tokens.to_vec();
    secrets.push(("signing key".into(), SECRET.into()));
    for (what, secret) in &secrets {
        // Any 24-character piece of a token is enough to count as a leak.
        let probe = &secret[..secret.len().min(24)];
        let probe_tail = &secret[secret.len().saturating_sub(24)..];
        for (name, text) in [("the log", log_text), ("the event stream", events_text)] {
            assert!(
                !text.contains(probe) && !text.contains(probe_tail),
                "the {what} appears in {name}"
            );
        }
    }
    secrets
}

/// Colours and logo URLs are validated at load (fixtures `color.toml`, `logo.toml`); these
/// values must be refused by name too.
fn brand_values_are_refused_by_name() {
    let base = NodeConfig::new("127.0.0.1:3000".parse().expect("addr"))
        .ports(1, 2)
        .extra(HOSTILE)
        .render();
    for (from, to, key) in [
        (
            "#ABCDEF",
            "red;}</style><script>",
            "rooms[0].page.brand_color",
        ),
        (
            "#ABCDEF",
            r#"#abc\" onload=\"x"#,
            "rooms[0].page.brand_color",
        ),
        (
            "background_color = \"#fff\"",
            "background_color = \"url(javascript:x)\"",
            "rooms[0].page.background_color",
        ),
        (
            "https://cdn.example/x.png",
            "javascript:alert(1)//",
            "rooms[0].page.logo_url",
        ),
        (
            "https://cdn.example/x.png",
            "//evil.example/x.png",
            "rooms[0].page.logo_url",
        ),
        (
            "https://cdn.example/x.png",
            "data:image/svg+xml,<svg onload=alert(1)>",
            "rooms[0].page.logo_url",
        ),
    ] {
        let text = base.replacen(from, to, 1);
        let err = Config::parse("brand.toml", &text, flashgate::clock::now())
            .expect_err("refused")
            .to_string();
        assert!(err.starts_with(&format!("brand.toml: {key}: ")), "{err}");
    }
}
