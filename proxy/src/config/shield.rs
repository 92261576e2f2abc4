//! Origin-shield settings: `[cache]`, the shield keys of routes and upstreams, and
//! `[rooms.origin_aware]`. Defaults leave behaviour as it was without the shield: only
//! `catalog` routes cache, pools are unlimited, admission ignores the origin.

use std::num::NonZeroU32;
use std::time::Duration;

use super::file::{CacheSection, OriginAwareSection, RouteSection, UpstreamSection};
use super::{ConfigError, Ctx, RouteKind};
use crate::shield::settings::{parse_bytes, GIB, KIB, MIB};
use crate::shield::{CacheSettings, OriginAware, PoolShield, RouteShield};

fn size(ctx: &Ctx<'_>, key: &str, s: &str) -> Result<u64, ConfigError> {
    parse_bytes(s).ok_or_else(|| {
        ctx.err(
            key,
            "not a size; write e.g. \"256MiB\", \"64MB\" or a number of bytes",
        )
    })
}

/// A size within `lo..=hi` bytes.
pub(super) fn size_between(
    ctx: &Ctx<'_>,
    key: &str,
    s: &str,
    lo: u64,
    hi: u64,
) -> Result<u64, ConfigError> {
    let n = size(ctx, key, s)?;
    if n < lo || n > hi {
        return Err(ctx.err(key, format!("must be between {lo} and {hi} bytes")));
    }
    Ok(n)
}

fn between(
    ctx: &Ctx<'_>,
    key: &str,
    s: &str,
    lo: Duration,
    hi: Duration,
) -> Result<Duration, ConfigError> {
    let d = ctx.duration(key, s)?;
    if d < lo || d > hi {
        return Err(ctx.err(
            key,
            format!(
                "must be between {} and {}",
                humantime::format_duration(lo),
                humantime::format_duration(hi)
            ),
        ));
    }
    Ok(d)
}

const MS: Duration = Duration::from_millis(1);
const MINUTE: Duration = Duration::from_secs(60);

pub(super) fn build_cache(ctx: &Ctx<'_>, c: &CacheSection) -> Result<CacheSettings, ConfigError> {
    let max_bytes = size(ctx, "cache.max_bytes", &c.max_bytes)?;
    if max_bytes < MIB {
        return Err(ctx.err("cache.max_bytes", "must be at least 1MiB"));
    }
    let max_object = size(ctx, "cache.max_object", &c.max_object)?;
    if max_object < KIB || max_object > max_bytes.min(GIB) {
        return Err(ctx.err(
            "cache.max_object",
            "must be between 1KiB and cache.max_bytes (at most 1GiB)",
        ));
    }
    let max_stale = ctx.duration("cache.max_stale", &c.max_stale)?;
    let capped = |key: &str, s: &str| -> Result<Duration, ConfigError> {
        let d = ctx.duration(key, s)?;
        if d > max_stale {
            return Err(ctx.err(key, "must be at most cache.max_stale"));
        }
        Ok(d)
    };
    Ok(CacheSettings {
        max_bytes,
        max_object: usize::try_from(max_object).unwrap_or(usize::MAX),
        default_ttl: ctx.duration("cache.default_ttl", &c.default_ttl)?,
        stale_while_revalidate: capped("cache.stale_while_revalidate", &c.stale_while_revalidate)?,
        stale_if_error: capped("cache.stale_if_error", &c.stale_if_error)?,
        max_stale,
        lock_timeout: between(ctx, "cache.lock_timeout", &c.lock_timeout, MS * 10, MINUTE)?,
    })
}

pub(super) fn build_route(
    ctx: &Ctx<'_>,
    i: usize,
    r: &RouteSection,
    kind: RouteKind,
    cache: &CacheSettings,
) -> Result<RouteShield, ConfigError> {
    let key = |f: &str| format!("routes[{i}].{f}");
    let cache_ttl = r
        .cache_ttl
        .as_ref()
        .map(|s| ctx.duration(&key("cache_ttl"), s))
        .transpose()?;
    if cache_ttl.is_some_and(|t| t < Duration::from_secs(1)) {
        return Err(ctx.err(key("cache_ttl"), "must be at least 1s"));
    }
    let cached = kind == RouteKind::Catalog || cache_ttl.is_some();
    if !cached {
        let set = [
            ("stale_while_revalidate", r.stale_while_revalidate.is_some()),
            ("stale_if_error", r.stale_if_error.is_some()),
            ("latency_budget", r.latency_budget.is_some()),
        ];
        if let Some((name, _)) = set.iter().find(|(_, is_set)| *is_set) {
            return Err(ctx.err(
                key(name),
                "only applies to cached routes (kind = \"catalog\" or cache_ttl set)",
            ));
        }
        return Ok(RouteShield::default());
    }
    let stale = |name: &str, v: &Option<String>, default: Duration| match v {
        None => Ok(default),
        Some(s) => {
            let d = ctx.duration(&key(name), s)?;
            if d > cache.max_stale {
                return Err(ctx.err(
                    key(name),
                    format!(
                        "must be at most cache.max_stale ({})",
                        humantime::format_duration(cache.max_stale)
                    ),
                ));
            }
            Ok(d)
        }
    };
    Ok(RouteShield {
        cache: cached,
        cache_ttl,
        stale_while_revalidate: stale(
            "stale_while_revalidate",
            &r.stale_while_revalidate,
            cache.stale_while_revalidate,
        )?,
        stale_if_error: stale("stale_if_error", &r.stale_if_error, cache.stale_if_error)?,
        latency_budget: r
            .latency_budget
            .as_ref()
            .map(|s| between(ctx, &key("latency_budget"), s, MS, MINUTE))
            .transpose()?,
    })
}

pub(super) fn build_pool(
    ctx: &Ctx<'_>,
    key: &str,
    u: &UpstreamSection,
) -> Result<PoolShield, ConfigError> {
    let f = |name: &str| format!("{key}.{name}");
    let max_concurrent = match u.max_concurrent {
        None => None,
        Some(n) => {
            Some(NonZeroU32::new(n).ok_or_else(|| ctx.err(f("max_concurrent"), "must be > 0"))?)
        }
    };
    if max_concurrent.is_none() {
        for (name, set) in [
            ("optional_share", u.optional_share.is_some()),
            ("essential_reserve", u.essential_reserve.is_some()),
        ] {
            if set {
                return Err(ctx.err(f(name), "only used with max_concurrent"));
            }
        }
    }
    let defaults = PoolShield::default();
    let optional_share = u.optional_share.unwrap_or(defaults.optional_share);
    if !(optional_share > 0.0 && optional_share <= 1.0) {
        return Err(ctx.err(f("optional_share"), "must be > 0 and at most 1"));
    }
    let essential_reserve = u.essential_reserve.unwrap_or(defaults.essential_reserve);
    if !((0.0..1.0).contains(&essential_reserve)) {
        return Err(ctx.err(f("essential_reserve"), "must be at least 0 and below 1"));
    }
    Ok(PoolShield {
        max_concurrent,
        optional_share,
        essential_reserve,
        latency_target: u
            .latency_target
            .as_ref()
            .map(|s| between(ctx, &f("latency_target"), s, MS, MINUTE))
            .transpose()?,
    })
}

pub(super) fn build_origin_aware(
    ctx: &Ctx<'_>,
    key: &str,
    o: Option<&OriginAwareSection>,
) -> Result<Option<OriginAware>, ConfigError> {
    let Some(o) = o else {
        return Ok(None);
    };
    let f = |name: &str| format!("{key}.{name}");
    let d = OriginAware::default();
    let min_factor = o.min_factor.unwrap_or(d.min_factor);
    if !(min_factor > 0.0 && min_factor <= 1.0) {
        return Err(ctx.err(f("min_factor"), "must be > 0 and at most 1"));
    }
    let error_target = o.error_target.unwrap_or(d.error_target);
    if !(error_target > 0.0 && error_target < 1.0) {
        return Err(ctx.err(f("error_target"), "must be > 0 and below 1"));
    }
    let latency_target = match &o.latency_target {
        None => d.latency_target,
        Some(s) => between(ctx, &f("latency_target"), s, MS, MINUTE)?,
    };
    Ok(Some(OriginAware {
        min_factor,
        latency_target,
        error_target,
    }))
}

impl super::Config {
    /// What the origin shield is built from.
    pub fn shield_plan(&self) -> crate::shield::ShieldPlan {
        let pools = self
            .upstreams
            .iter()
            .map(|(name, u)| (name.clone(), u.shield.clone()))
            .collect();
        let rooms = self
            .rooms
            .iter()
            .filter_map(|room| {
                let oa = room.origin_aware.as_ref()?;
                // The pools a room's shoppers reach: routes under, or above, its paths.
                let mut names: Vec<String> = self
                    .routes
                    .iter()
                    .filter(|rt| {
                        room.paths.iter().any(|p| {
                            super::prefix_matches(&rt.path, p) || super::prefix_matches(p, &rt.path)
                        })
                    })
                    .map(|rt| rt.upstream.clone())
                    .collect();
                names.sort_unstable();
                names.dedup();
                Some(crate::shield::OriginAwareRoom {
                    id: room.settings.id.clone(),
                    settings: oa.clone(),
                    pools: names,
                })
            })
            .collect();
        crate::shield::ShieldPlan {
            cache: self.cache.clone(),
            pools,
            rooms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_fixture::{self, Room, Table, KEYS};
    use super::super::Config;
    use super::*;

    /// The one key, then `rest`.
    fn parse(rest: &str) -> Config {
        test_fixture::parse("t.toml", &format!("{KEYS}{rest}"))
    }

    /// Room `r` over the whole shop, at 10 a minute and 10 active.
    fn room() -> Room {
        Room::new("r").paths(&["/"]).rate(10).capacity(10)
    }

    #[test]
    fn defaults_change_nothing() {
        let routes = [
            test_fixture::shop_pool("127.0.0.1:3000"),
            test_fixture::route("/", None, ""),
            test_fixture::route("/products", Some("catalog"), ""),
        ]
        .concat();
        let c = parse(&format!("{routes}{}", room()));
        assert_eq!(c.cache, CacheSettings::default());
        assert_eq!(c.routes[0].shield, RouteShield::default());
        assert!(!c.routes[0].shield.cache, "only catalog routes cache");
        let catalog = &c.routes[1].shield;
        assert!(catalog.cache);
        assert_eq!(catalog.cache_ttl, None);
        assert_eq!(
            catalog.stale_while_revalidate,
            c.cache.stale_while_revalidate
        );
        assert_eq!(catalog.stale_if_error, c.cache.stale_if_error);
        assert_eq!(catalog.latency_budget, None);
        assert_eq!(c.upstreams["shop"].shield, PoolShield::default());
        assert_eq!(c.rooms[0].origin_aware, None);
    }

    #[test]
    fn every_key_is_read() {
        let cache = Table::new()
            .set("max_bytes", "64MiB")
            .set("max_object", "512KiB")
            .set("default_ttl", "3s")
            .set("stale_while_revalidate", "20s")
            .set("stale_if_error", "30m")
            .set("max_stale", "2h")
            .set("lock_timeout", "750ms");
        let pool = Table::new()
            .set("servers", ["127.0.0.1:3000"])
            .set("max_concurrent", 300)
            .set("optional_share", 0.4)
            .set("essential_reserve", 0.1)
            .set("latency_target", "400ms");
        let catalog = Table::new()
            .set("cache_ttl", "30s")
            .set("stale_while_revalidate", "1m")
            .set("stale_if_error", "2h")
            .set("latency_budget", "250ms");
        let reviews = Table::new().set("cache_ttl", "5s");
        let sections = [
            format!("\n[cache]\n{cache}\n[upstreams.shop]\n{pool}"),
            test_fixture::route("/", Some("catalog"), &catalog.to_string()),
            test_fixture::route("/reviews", Some("optional"), &reviews.to_string()),
        ]
        .concat();
        let health = Table::new()
            .set("min_factor", 0.3)
            .set("latency_target", "250ms")
            .set("error_target", 0.05);
        let c = parse(&format!(
            "{sections}{}",
            room().table("origin_aware", health)
        ));
        let s = Duration::from_secs;
        assert_eq!(
            c.cache,
            CacheSettings {
                max_bytes: 64 * MIB,
                max_object: 512 * 1024,
                default_ttl: s(3),
                stale_while_revalidate: s(20),
                stale_if_error: s(1800),
                max_stale: s(7200),
                lock_timeout: Duration::from_millis(750),
            }
        );
        assert_eq!(
            c.upstreams["shop"].shield,
            PoolShield {
                max_concurrent: NonZeroU32::new(300),
                optional_share: 0.4,
                essential_reserve: 0.1,
                latency_target: Some(Duration::from_millis(400)),
            }
        );
        assert_eq!(
            c.routes[0].shield,
            RouteShield {
                cache: true,
                cache_ttl: Some(s(30)),
                stale_while_revalidate: s(60),
                stale_if_error: s(7200),
                latency_budget: Some(Duration::from_millis(250)),
            }
        );
        let reviews = &c.routes[1].shield;
        assert!(reviews.cache, "cache_ttl turns caching on for any kind");
        assert_eq!(reviews.stale_if_error, s(1800), "the [cache] default");
        assert_eq!(
            c.rooms[0].origin_aware,
            Some(OriginAware {
                min_factor: 0.3,
                latency_target: Duration::from_millis(250),
                error_target: 0.05,
            })
        );
    }

    #[test]
    fn origin_aware_defaults() {
        let aware = room().table("origin_aware", Table::new());
        let c = parse(&format!(
            "{}{aware}",
            test_fixture::shop_pool("127.0.0.1:3000")
        ));
        assert_eq!(c.rooms[0].origin_aware, Some(OriginAware::default()));
    }
}
