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

use std::time::Duration;

use flashgate::config::Config;
use serde_json::json;
use testkit::config::events_file;
use testkit::shopper::{self, get_json, send, Poll, Reply};
use testkit::{wait_for, Bot, Config as NodeConfig, Launch, Node, Origin, Room, SECRET};

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

/// Two rooms whose branding tries every injection it can (`drop` first: the brand checks
/// name `rooms[0]`).
fn hostile(cfg: NodeConfig) -> NodeConfig {
    let drop = Room::new("drop")
        .poll("1s")
        .message("</p><script>alert('message')</script>")
        .page("title", "</title><script>alert('title')</script>")
        .page(
            "logo_url",
            "https://cdn.example/x.png\" onerror=\"alert('logo')",
        )
        .page("brand_color", "#ABCDEF")
        .page("background_color", "#fff");
    let pow = Room::new("pow")
        .paths(&["/pow"])
        .page("title", "<img src=x onerror=alert('pow')>")
        .page("logo_url", "/logo.svg?a=\"><script>alert(1)</script>")
        .bot(Bot::enforce().always(4).scores(30, 900, 1000));
    cfg.room(drop).room(pow)
}

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
    let fg = Node::start(&hostile(NodeConfig::new(origin.addr))).await;
    fg.patch_room("drop", json!({"paused": true})).await;
    let c = fg.shopper();

    // The waiting page, with a hostile query reflected into it (the return address).
    let hostile_query =
        "/echo?x=%22%3E%3Cscript%3Ealert(1)%3C/script%3E&y=\"><script>alert(2)</script>";
    let r = shopper::page(&fg, &c, hostile_query).await;
    assert_eq!(r.status, 200);
    let html = r.body;
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
    let html = shopper::page(&fg, &c, "/echo").await.body;
    assert_inert(&html, "waiting page, live message");
    assert!(html.contains("&lt;img src=x onerror=alert(&#39;live&#39;)&gt;"));
    let (_, st, headers) = get_json(&c, &fg.url("/.flashgate/status?room=drop")).await;
    assert_eq!(
        st["message"], "<img src=x onerror=alert('live')>",
        "JSON carries text"
    );
    assert!(headers["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("application/json"));

    // The challenge page.
    let r = shopper::page(&fg, &fg.shopper(), "/pow?r=\"><script>alert(3)</script>").await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("data-challenge="), "the challenge page");
    assert_inert(&r.body, "challenge page");

    // The closed (sold out) page.
    fg.patch_room("drop", json!({"sold_out": true, "message": null}))
        .await;
    let r = shopper::page(&fg, &fg.shopper(), "/echo").await;
    assert_eq!(r.status, 410);
    assert_inert(&r.body, "sold-out page");

    // The branded error page (origin down), for a shopper with a pass.
    fg.patch_room("drop", json!({"sold_out": false, "paused": false}))
        .await;
    let holder = fg.shopper();
    let html = [("accept", "text/html")];
    let poll = Poll::every(Duration::from_millis(200)).within(Duration::from_secs(20));
    shopper::get_until(&holder, &fg.url("/echo"), &html, poll, "admitted", |r| {
        r.status == 200 && r.body.contains("\"method\"")
    })
    .await;
    origin.shop.set_down(true);
    let r = shopper::page(&fg, &holder, "/echo").await;
    assert_eq!(r.status, 502);
    assert!(r.body.contains("The shop is busy"));
    assert_inert(&r.body, "error page");
    assert!(
        r.body.contains("&lt;/title&gt;"),
        "the room's branding, escaped"
    );
}

/// Every flashgate cookie carries the attributes that keep scripts and other sites off it.
fn assert_cookie_attrs(cookies: &[&str], what: &str) -> usize {
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
    let cfg = NodeConfig::new(origin.addr)
        .table("events", events_file(&events))
        .room(pow_room());
    let mut fg = Node::launch(&cfg, Launch::log("debug")).await;
    fg.patch_room("pow", json!({"paused": true})).await;
    let mut session = Session {
        fg: &fg,
        c: fg.shopper(),
        tokens: Vec::new(),
        cookies_seen: 0,
    };
    session.solve_the_challenge().await;
    session.queue_renew_and_rate().await;
    session.enter_and_leave().await;
    let Session {
        tokens,
        cookies_seen,
        ..
    } = session;
    assert!(
        cookies_seen >= 6,
        "{cookies_seen} flashgate cookies checked"
    );

    // Let the event stream drain, then scan the log and the stream.
    let what = format!("a feedback event in {}", events.display());
    wait_for(&what, Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        text.contains("\"feedback\"")
    })
    .await;
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

/// A room that challenges everyone (difficulty 4).
fn pow_room() -> Room {
    let bot = Bot::enforce().always(4).scores(30, 900, 1000);
    Room::new("pow").rate(600).poll("1s").bot(bot)
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

/// GET `path` with [`BROWSER`]'s headers and `accept`.
async fn browse(fg: &Node, c: &reqwest::Client, path: &str, accept: &str) -> Reply {
    send(with(c.get(fg.url(path))).header("accept", accept)).await
}

/// The token a reply carries for apps (`X-Flashgate-Token`).
fn app_token(r: &Reply) -> String {
    r.header("x-flashgate-token").expect("token").to_owned()
}

/// A shopper's session through the `pow` room: every token it was given, and how many of
/// flashgate's cookies it checked.
struct Session<'a> {
    fg: &'a Node,
    c: reqwest::Client,
    tokens: Vec<(String, String)>,
    cookies_seen: usize,
}

impl Session<'_> {
    /// Checks the cookies `r` sets (as [`assert_cookie_attrs`]); `what` names the step.
    fn check_cookies(&mut self, r: &Reply, what: &str) {
        self.cookies_seen += assert_cookie_attrs(&r.set_cookies(), what);
    }

    fn keep(&mut self, what: &str, token: String) {
        self.tokens.push((what.into(), token));
    }

    /// Step 1, challenged: solve it (a replayed solution is refused, and logged without its
    /// token).
    async fn solve_the_challenge(&mut self) {
        let (fg, c) = (self.fg, self.c.clone());
        let r = browse(fg, &c, "/echo", "application/json").await;
        assert_eq!(r.status, 403);
        let challenge = r.json()["challenge"].as_str().expect("token").to_owned();
        self.keep("challenge", challenge.clone());
        let counter = flashgate::bot::challenge::solve(&challenge, 4).to_string();
        let mut form = vec![
            ("room", "pow"),
            ("challenge", challenge.as_str()),
            ("counter", counter.as_str()),
            ("return", "/echo"),
        ];
        let submit = || with(c.post(fg.url("/.flashgate/challenge")));
        let r = send(submit().form(&form)).await;
        assert_eq!(r.status, 200);
        self.check_cookies(&r, "challenge passed");
        let passed = r.json()["token"].as_str().expect("pass").to_owned();
        self.keep("challenge pass", passed);
        // A replayed solution is refused (and logged without its token).
        form.pop();
        assert_eq!(send(submit().form(&form)).await.status, 409);
    }

    /// Step 2, queued: a ticket (cookie and header), renewed by a status poll; feedback with a
    /// pasted token in its comment.
    async fn queue_renew_and_rate(&mut self) {
        let (fg, c) = (self.fg, self.c.clone());
        let r = browse(fg, &c, "/echo", "application/json").await;
        assert_eq!(r.status, 200);
        self.check_cookies(&r, "ticket");
        self.keep("ticket", app_token(&r));
        let r = send(with(c.get(fg.url("/.flashgate/status?room=pow")))).await;
        self.check_cookies(&r, "renewed ticket");
        if r.header("x-flashgate-token").is_some() {
            self.keep("renewed ticket", app_token(&r));
        }
        // Feedback with a pasted token in the comment: redacted before it is published.
        let pasted = "AAAAbbbbCCCCddddEEEEffffGGGGhhhhIIIIjjjj-pasted";
        let r = with(c.post(fg.url("/.flashgate/feedback?room=pow")))
            .header("content-type", "application/json")
            .body(json!({"rating": 4, "comment": format!("my token {pasted}")}).to_string());
        assert_eq!(send(r).await.status, 204);
        self.keep("pasted", pasted.into());
    }

    /// Steps 3 and 4: admitted, a pass and the ticket cookie cleared; then leaving, both
    /// cookies cleared with the same attributes.
    async fn enter_and_leave(&mut self) {
        let (fg, c) = (self.fg, self.c.clone());
        // 3. Admitted: a pass; the ticket cookie is cleared.
        fg.patch_room("pow", json!({"paused": false})).await;
        let poll = Poll::every(Duration::from_millis(200)).within(Duration::from_secs(20));
        let r = shopper::get_until(&c, &fg.url("/echo"), &BROWSER, poll, "a pass", |r| {
            r.status == 200 && r.set_cookie("fg_p_pow").is_some()
        })
        .await;
        self.check_cookies(&r, "pass");
        self.keep("pass", app_token(&r));

        // 4. Leave: both cookies cleared, with the same attributes.
        let leave = with(c.post(fg.url("/.flashgate/leave?room=pow")));
        let r = send(leave.header("accept", "application/json")).await;
        assert_eq!(r.status, 200);
        self.check_cookies(&r, "leave");
    }
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
    let base = hostile(NodeConfig::new("127.0.0.1:3000".parse().expect("addr")))
        .ports(1, 2)
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
