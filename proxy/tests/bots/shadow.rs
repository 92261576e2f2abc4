//! Shadow mode: nothing changes for anyone, and the metrics say what enforce would have done.

use testkit::config::Table;
use testkit::{Bot, Node, Origin, Room};

use super::{client_at, get, trusting, BROWSER};

/// Shadow mode: bots, deny-listed clients and limit breakers get exactly what they would get
/// without bot defence, and `/metrics` says what enforce mode would have done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_mode_changes_nothing_but_counts() {
    let origin = Origin::start().await;
    let bot = Bot::shadow().always(8).limit("joins_per_minute_per_ip", 2);
    let calm = Room::new("calm").rate(600).capacity(1000).poll("1s");
    let global = Table::new().set("deny_cidrs", ["192.0.2.0/24"]);
    let cfg = trusting(origin.addr).table("bot", global);
    let fg = Node::start(&cfg.room(calm.windows("60s", "20s").bot(bot))).await;
    let curl = client_at("100.90.0.1", &[("user-agent", "curl/8.5.0")], false);
    for _ in 0..4 {
        let (code, _, body) = get(&fg, &curl, "/echo").await;
        assert_eq!(
            code, 200,
            "shadow: the script goes through as before: {body}"
        );
    }
    let denied = client_at("192.0.2.5", BROWSER, true);
    let (code, _, _) = get(&fg, &denied, "/echo").await;
    assert_eq!(code, 200, "shadow: the deny list only counts");
    let shopper = client_at("100.91.0.1", BROWSER, true);
    let (code, _, _) = get(&fg, &shopper, "/echo").await;
    assert_eq!(code, 200, "shadow: no challenge");
    assert_eq!(origin.shop.stats().by_path.echo, 6);

    let m = fg.metrics().await;
    let shadow = |action: &str, reason: &str| {
        m.sum(
            "flashgate_bot_actions_total",
            &[
                ("room", "calm"),
                ("mode", "shadow"),
                ("action", action),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(shadow("tarpit", "automation_user_agent"), 2.0, "{m}");
    assert_eq!(shadow("limited", "joins_per_ip"), 2.0);
    assert_eq!(shadow("block", "deny_list"), 1.0);
    assert_eq!(shadow("challenge", "always"), 1.0);
    assert_eq!(
        m.sum("flashgate_bot_actions_total", &[("mode", "enforce")]),
        0.0,
        "nothing enforced"
    );
    assert_eq!(
        m.sum("flashgate_bot_challenges_total", &[("result", "issued")]),
        0.0,
        "no challenge was issued"
    );
}
