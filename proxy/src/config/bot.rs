//! `[bot]` and `[rooms.bot]` → validated [`crate::bot`] settings. Every error names its key;
//! each rule has a fixture in `proxy/tests/fixtures/bad/bot_*.toml`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use ipnet::IpNet;

use crate::bot::settings::{MAX_DIFFICULTY, MAX_SLOTS, MIN_DIFFICULTY, MIN_SLOTS};
use crate::bot::{
    BotGlobal, BotSettings, ChallengeMode, HeaderMatch, HeaderRule, Mode, PassBinding,
};

use super::file::{BotGlobalSection, HeaderRuleSection, RoomBotSection};
use super::{ConfigError, Ctx};

/// Largest per-minute limit or per-second threshold accepted.
const MAX_RATE: u32 = 1_000_000;

/// A rate where 0 means "off".
fn rate(
    ctx: &Ctx<'_>,
    key: &str,
    v: Option<u32>,
    default: Option<NonZeroU32>,
) -> Result<Option<NonZeroU32>, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) if n > MAX_RATE => {
            Err(ctx.err(key, format!("must be at most {MAX_RATE} (0 turns it off)")))
        }
        Some(n) => Ok(NonZeroU32::new(n)),
    }
}

/// A room's `[rooms.bot]` (`key` is `rooms[i].bot`). Absent: bot defence off.
pub(super) fn build_room(
    ctx: &Ctx<'_>,
    key: &str,
    s: Option<&RoomBotSection>,
) -> Result<BotSettings, ConfigError> {
    let d = BotSettings::default();
    let Some(s) = s else { return Ok(d) };
    let k = |f: &str| format!("{key}.{f}");
    let mode = match s.mode.as_deref() {
        None => d.mode,
        Some("off") => Mode::Off,
        Some("shadow") => Mode::Shadow,
        Some("enforce") => Mode::Enforce,
        Some(_) => return Err(ctx.err(k("mode"), "must be one of off, shadow, enforce")),
    };
    let challenge = match s.challenge.as_deref() {
        None => d.challenge,
        Some("off") => ChallengeMode::Off,
        Some("suspicious") => ChallengeMode::Suspicious,
        Some("always") => ChallengeMode::Always,
        Some(_) => return Err(ctx.err(k("challenge"), "must be one of off, suspicious, always")),
    };
    let bits = |f: &str, v: Option<u8>, default: u8| -> Result<u8, ConfigError> {
        let v = v.unwrap_or(default);
        if (MIN_DIFFICULTY..=MAX_DIFFICULTY).contains(&v) {
            Ok(v)
        } else {
            Err(ctx.err(
                k(f),
                format!("must be between {MIN_DIFFICULTY} and {MAX_DIFFICULTY}"),
            ))
        }
    };
    let difficulty = bits("difficulty", s.difficulty, d.difficulty)?;
    let max_difficulty = bits(
        "max_difficulty",
        s.max_difficulty,
        d.max_difficulty.max(difficulty),
    )?;
    if max_difficulty < difficulty {
        return Err(ctx.err(
            k("max_difficulty"),
            format!("must be at least difficulty ({difficulty})"),
        ));
    }
    let challenge_ttl = ctx.duration_between(
        &k("challenge_ttl"),
        s.challenge_ttl.as_ref(),
        d.challenge_ttl,
        (Duration::from_secs(10), "10s"),
        (Duration::from_secs(600), "10m"),
    )?;
    let pass_ttl = ctx.duration_between(
        &k("pass_ttl"),
        s.pass_ttl.as_ref(),
        d.pass_ttl,
        (Duration::from_secs(60), "1m"),
        (Duration::from_secs(24 * 3600), "24h"),
    )?;
    let pass_binding = match s.pass_binding.as_deref() {
        None => d.pass_binding,
        Some("none") => PassBinding::None,
        Some("user_agent") => PassBinding::UserAgent,
        Some("ip_prefix") => PassBinding::IpPrefix,
        Some(_) => {
            return Err(ctx.err(
                k("pass_binding"),
                "must be one of none, user_agent, ip_prefix",
            ))
        }
    };
    let pressure_joins_per_second = rate(
        ctx,
        &k("pressure_joins_per_second"),
        s.pressure_joins_per_second,
        d.pressure_joins_per_second,
    )?;

    let l = &s.limits;
    let dl = d.limits;
    let limits = crate::bot::Limits {
        joins_per_minute_per_ip: rate(
            ctx,
            &k("limits.joins_per_minute_per_ip"),
            l.joins_per_minute_per_ip,
            dl.joins_per_minute_per_ip,
        )?,
        polls_per_minute_per_ticket: rate(
            ctx,
            &k("limits.polls_per_minute_per_ticket"),
            l.polls_per_minute_per_ticket,
            dl.polls_per_minute_per_ticket,
        )?,
        requests_per_minute_per_ip: rate(
            ctx,
            &k("limits.requests_per_minute_per_ip"),
            l.requests_per_minute_per_ip,
            dl.requests_per_minute_per_ip,
        )?,
    };

    let t = &s.thresholds;
    let dt = d.thresholds;
    let challenge_at = t.challenge_at.unwrap_or(dt.challenge_at);
    if challenge_at == 0 {
        return Err(ctx.err(
            k("thresholds.challenge_at"),
            "must be > 0 (use challenge = \"always\" to challenge everyone)",
        ));
    }
    let tarpit_at = t.tarpit_at.unwrap_or(dt.tarpit_at.max(challenge_at));
    if tarpit_at < challenge_at {
        return Err(ctx.err(k("thresholds.tarpit_at"), "must be at least challenge_at"));
    }
    let block_at = t.block_at.unwrap_or(dt.block_at.max(tarpit_at));
    if block_at < tarpit_at {
        return Err(ctx.err(k("thresholds.block_at"), "must be at least tarpit_at"));
    }
    let addresses_per_token = t.addresses_per_token.unwrap_or(dt.addresses_per_token);
    if !(2..=64).contains(&addresses_per_token) {
        return Err(ctx.err(
            k("thresholds.addresses_per_token"),
            "must be between 2 and 64",
        ));
    }
    let thresholds = crate::bot::Thresholds {
        challenge_at,
        tarpit_at,
        block_at,
        tickets_per_prefix: rate(
            ctx,
            &k("thresholds.tickets_per_prefix"),
            t.tickets_per_prefix,
            dt.tickets_per_prefix,
        )?,
        prefix_window: ctx.duration_between(
            &k("thresholds.prefix_window"),
            t.prefix_window.as_ref(),
            dt.prefix_window,
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(24 * 3600), "24h"),
        )?,
        addresses_per_token,
    };
    Ok(BotSettings {
        mode,
        challenge,
        difficulty,
        max_difficulty,
        challenge_ttl,
        pass_ttl,
        pass_binding,
        pressure_joins_per_second,
        limits,
        thresholds,
    })
}

fn nets(ctx: &Ctx<'_>, key: &str, list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            t.parse::<IpNet>()
                .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| ctx.err(format!("{key}[{i}]"), "not an IP address or CIDR"))
        })
        .collect()
}

fn header_rules(
    ctx: &Ctx<'_>,
    key: &str,
    list: &[HeaderRuleSection],
) -> Result<Vec<HeaderRule>, ConfigError> {
    let mut out = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let k = |f: &str| format!("{key}[{i}]{f}");
        let name = http::HeaderName::from_bytes(r.name.as_bytes())
            .map_err(|_| ctx.err(k(".name"), "not a valid header name"))?;
        let matcher = match (&r.equals, &r.contains) {
            (Some(v), None) => HeaderMatch::Equals(v.clone()),
            (None, Some(v)) if v.is_empty() => {
                return Err(ctx.err(k(".contains"), "must not be empty"))
            }
            (None, Some(v)) => HeaderMatch::Contains(v.to_ascii_lowercase()),
            _ => return Err(ctx.err(k(""), "set exactly one of equals or contains")),
        };
        out.push(HeaderRule { name, matcher });
    }
    Ok(out)
}

/// The node-wide `[bot]` table.
pub(super) fn build_global(ctx: &Ctx<'_>, s: &BotGlobalSection) -> Result<BotGlobal, ConfigError> {
    let d = BotGlobal::default();
    let slots = |f: &str, v: Option<usize>, default: usize| -> Result<usize, ConfigError> {
        let v = v.unwrap_or(default);
        if (MIN_SLOTS..=MAX_SLOTS).contains(&v) {
            Ok(v)
        } else {
            Err(ctx.err(
                format!("bot.{f}"),
                format!("must be between {MIN_SLOTS} and {MAX_SLOTS}"),
            ))
        }
    };
    Ok(BotGlobal {
        table_slots: slots("table_slots", s.table_slots, d.table_slots)?,
        replay_slots: slots("replay_slots", s.replay_slots, d.replay_slots)?,
        allow_cidrs: nets(ctx, "bot.allow_cidrs", &s.allow_cidrs)?,
        deny_cidrs: nets(ctx, "bot.deny_cidrs", &s.deny_cidrs)?,
        crawler_cidrs: nets(ctx, "bot.crawler_cidrs", &s.crawler_cidrs)?,
        allow_headers: header_rules(ctx, "bot.allow_headers", &s.allow_headers)?,
        deny_headers: header_rules(ctx, "bot.deny_headers", &s.deny_headers)?,
    })
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use crate::bot::{BotSettings, ChallengeMode, HeaderMatch, Mode, PassBinding};
    use crate::config::test_fixture::{self, Room};
    use crate::config::Config;

    /// The shop, with one room over `/drops`, then `extra`.
    fn parse(extra: &str) -> Config {
        let drop = Room::new("drop").paths(&["/drops"]).capacity(500);
        test_fixture::parse(
            "test.toml",
            &test_fixture::with_shop(&format!("{drop}{extra}")),
        )
    }

    #[test]
    fn absent_means_off_with_defaults() {
        let c = parse("");
        assert_eq!(c.rooms[0].bot, BotSettings::default());
        assert_eq!(c.rooms[0].bot.mode, Mode::Off);
        assert_eq!(c.bot, crate::bot::BotGlobal::default());
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            r#"
[rooms.bot]
mode = "enforce"
challenge = "always"
difficulty = 20
max_difficulty = 26
challenge_ttl = "90s"
pass_ttl = "45m"
pass_binding = "user_agent"
pressure_joins_per_second = 0

[rooms.bot.limits]
joins_per_minute_per_ip = 12
polls_per_minute_per_ticket = 0
requests_per_minute_per_ip = 900

[rooms.bot.thresholds]
challenge_at = 25
tarpit_at = 70
block_at = 120
tickets_per_prefix = 80
prefix_window = "5m"
addresses_per_token = 4

[bot]
table_slots = 131072
replay_slots = 500000
allow_cidrs = ["10.0.0.0/8", "2001:db8::1"]
deny_cidrs = ["192.0.2.0/24"]
crawler_cidrs = ["66.249.64.0/19"]
allow_headers = [{ name = "X-Load-Test", equals = "s3cret" }]
deny_headers = [{ name = "user-agent", contains = "EvilScraper" }]
"#,
        );
        let b = &c.rooms[0].bot;
        assert_eq!(b.mode, Mode::Enforce);
        assert_eq!(b.challenge, ChallengeMode::Always);
        assert_eq!((b.difficulty, b.max_difficulty), (20, 26));
        assert_eq!(b.challenge_ttl, Duration::from_secs(90));
        assert_eq!(b.pass_ttl, Duration::from_secs(45 * 60));
        assert_eq!(b.pass_binding, PassBinding::UserAgent);
        assert_eq!(b.pressure_joins_per_second, None);
        assert_eq!(b.limits.joins_per_minute_per_ip, NonZeroU32::new(12));
        assert_eq!(b.limits.polls_per_minute_per_ticket, None);
        assert_eq!(b.limits.requests_per_minute_per_ip, NonZeroU32::new(900));
        let t = b.thresholds;
        assert_eq!((t.challenge_at, t.tarpit_at, t.block_at), (25, 70, 120));
        assert_eq!(t.tickets_per_prefix, NonZeroU32::new(80));
        assert_eq!(t.prefix_window, Duration::from_secs(300));
        assert_eq!(t.addresses_per_token, 4);
        let g = &c.bot;
        assert_eq!((g.table_slots, g.replay_slots), (131_072, 500_000));
        assert_eq!(g.allow_cidrs.len(), 2);
        assert_eq!(g.allow_cidrs[1].to_string(), "2001:db8::1/128");
        assert_eq!(g.deny_cidrs.len(), 1);
        assert_eq!(g.crawler_cidrs.len(), 1);
        assert_eq!(g.allow_headers[0].name.as_str(), "x-load-test");
        assert_eq!(
            g.deny_headers[0].matcher,
            HeaderMatch::Contains("evilscraper".into())
        );
    }

    #[test]
    fn thresholds_follow_a_raised_lower_one() {
        // Raising challenge_at above the default tarpit_at lifts the defaults above it.
        let c = parse("[rooms.bot.thresholds]\nchallenge_at = 90\n");
        let t = c.rooms[0].bot.thresholds;
        assert_eq!((t.challenge_at, t.tarpit_at, t.block_at), (90, 90, 100));
        let c = parse("[rooms.bot]\ndifficulty = 26\n");
        assert_eq!(c.rooms[0].bot.max_difficulty, 26);
    }
}
