//! Challenges: solved once, forgeries, lazy, foreign and replayed solutions refused.

use serde_json::Value;
use testkit::{shopper, Bot, Node, Origin, Room};

use super::{
    assert_refused, client_at, fetch_challenge, get, non_solution, solve, submit, trusting, BROWSER,
};

/// A hyped drop: everyone solves a proof of work (difficulty 8, bound to the /24).
fn hype() -> Room {
    let bot = Bot::enforce().always(8).max_difficulty(12);
    let bot = bot.set("pass_binding", "ip_prefix").no_pressure();
    Room::new("hype")
        .rate(600)
        .capacity(1000)
        .poll("1s")
        .windows("60s", "20s")
        .bot(bot)
}

/// A hyped drop: every arrival solves a proof of work first. A solved challenge sets the
/// `fg_c_hype` cookie and lets the client in; forged, unsolved, foreign and replayed
/// solutions are refused, and the cookie does not work from another network.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn challenges_are_solved_once_and_forgeries_refused() {
    let origin = Origin::start().await;
    let fg = Node::start(&trusting(origin.addr).room(hype())).await;
    let shopper = client_at("100.80.1.10", BROWSER, true);
    let elsewhere = client_at("100.81.1.10", BROWSER, true);

    // A browser gets the challenge page; its scripts are served.
    let (code, headers, body) = get(&fg, &shopper, "/echo?x=1").await;
    assert_eq!(code, 403);
    assert!(headers["content-type"]
        .to_str()
        .is_ok_and(|c| c.starts_with("text/html")));
    assert!(body.contains("data-challenge=\""), "{body}");
    assert!(body.contains("/.flashgate/assets/pow-worker.js"));
    for asset in ["challenge.js", "pow-worker.js"] {
        let (code, _, js) = get(&fg, &shopper, &format!("/.flashgate/assets/{asset}")).await;
        assert_eq!(code, 200, "{asset}");
        assert!(!js.is_empty());
    }
    assert_eq!(
        origin.shop.stats().requests,
        0,
        "nothing reached the origin"
    );

    // An app asks for JSON; the difficulty is the room's.
    let (challenge, difficulty) = fetch_challenge(&fg, &shopper, "/echo").await;
    assert_eq!(difficulty, 8);

    // A forged challenge: one character of the signature changed.
    let mut forged = challenge.clone().into_bytes();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    assert_refused(
        &submit(&fg, &shopper, "hype", &forged, solve(&forged, 8)).await,
        403,
        "forged",
    );

    // No work done.
    let lazy = non_solution(&challenge, difficulty);
    assert_refused(
        &submit(&fg, &shopper, "hype", &challenge, lazy).await,
        403,
        "insufficient_work",
    );

    // The real work, from another network than the challenge was issued to.
    let counter = solve(&challenge, difficulty);
    assert_refused(
        &submit(&fg, &elsewhere, "hype", &challenge, counter).await,
        403,
        "wrong_client",
    );

    // The real work, from the client it was issued to: the cookie, and the way in.
    let (code, ans, headers) = submit(&fg, &shopper, "hype", &challenge, counter).await;
    assert_eq!(code, 200, "{ans}");
    assert_eq!(ans["ok"], true);
    assert_eq!(ans["redirect"], "/echo");
    let cookie = headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("fg_c_hype="))
        .expect("the challenge-passed cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let pass = ans["token"].as_str().expect("token for apps").to_owned();

    // The same solution again, from anyone: refused.
    assert_refused(
        &submit(&fg, &shopper, "hype", &challenge, counter).await,
        409,
        "replayed",
    );

    let (code, _, body) = get(&fg, &shopper, "/echo").await;
    assert_eq!(code, 200, "admitted after the challenge: {body}");
    let echo: Value = serde_json::from_str(&body).expect("the origin's echo");
    assert!(
        !echo["headers"]["cookie"]
            .as_str()
            .unwrap_or("")
            .contains("fg_c_"),
        "the origin never sees the challenge cookie"
    );

    copied_tokens_do_not_spare_the_work(&fg, &elsewhere, &cookie, &pass).await;
    let m = fg.metrics().await;
    let result = |r: &str| {
        m.sum(
            "flashgate_bot_challenges_total",
            &[("room", "hype"), ("result", r)],
        )
    };
    assert_eq!(result("solved"), 1.0, "{m}");
    assert_eq!(result("replayed"), 1.0);
    assert_eq!(result("forged"), 1.0);
    assert_eq!(result("insufficient_work"), 1.0);
    assert_eq!(result("wrong_client"), 1.0);
    assert!(result("issued") >= 4.0);
}

/// The challenge-passed token copied to another network does not spare it the work, neither
/// as the cookie nor in the header apps use.
async fn copied_tokens_do_not_spare_the_work(
    fg: &Node,
    elsewhere: &reqwest::Client,
    cookie: &str,
    pass: &str,
) {
    let value = cookie
        .split(';')
        .next()
        .and_then(|c| c.strip_prefix("fg_c_hype="))
        .expect("cookie value");
    let copied = format!("fg_c_hype={value}");
    let (code, body) = shopper::get_app(elsewhere, &fg.url("/echo"), &[("cookie", &copied)]).await;
    assert_eq!(code, 403, "a copied cookie bound to another /24");
    assert!(body["challenge"].is_string(), "challenged again: {body}");
    let as_app = [("x-flashgate-challenge", pass)];
    let (code, _) = shopper::get_app(elsewhere, &fg.url("/echo"), &as_app).await;
    assert_eq!(code, 403, "a pass bound to another /24");
    // ... while from its own network the app header works like the cookie.
    let own = client_at("100.80.1.99", BROWSER, false);
    let (code, _) = shopper::get_app(&own, &fg.url("/echo"), &as_app).await;
    assert_eq!(code, 200, "the same /24 may use the pass");
}
