//! Bot-defence state a fleet shares through Redis: single use of solved challenges
//! ([`ReplayGuard`]) and the per-address join limit ([`SharedJoinLimit`]). The node installs
//! [`RedisShared`] for both when `store.kind = "redis"`; a single node keeps both in memory.
//!
//! ## Replays: one command per redemption
//!
//! ```text
//! SET {fg:<room>}:pow:<hex id> 1 NX PX <ms until the challenge expires + SKEW_MARGIN>
//!   → OK  : first use             (Ok(true))
//!   → nil : already redeemed      (Ok(false))
//!   error : Err(ReplayError::Store) — fail closed: the gate answers 503, the page retries
//! ```
//!
//! The time to live is relative (`PX`, not `PXAT`), so Redis's own clock does not matter, and
//! it carries [`SKEW_MARGIN`] on top, so a node whose clock lags the redeeming node's by up to
//! that margin still finds the key while it still accepts the challenge.
//!
//! ## Joins per address: one script per join
//!
//! [`JOIN_LIMIT`] is the same GCRA step as [`super::Gcra::step`], on `{fg:<room>}:jl:<addr>`
//! (an IPv4 address, or an IPv6 /64), timed by Redis `TIME` so node clocks do not matter. An
//! allowed join moves the stored arrival time on and sets the key to expire when it carries
//! no information any more (at most one minute later): memory is bounded by the distinct
//! addresses joining per minute, about 100 bytes each. The node's own limiter still runs first
//! (free, and it keeps working without Redis); the shared one only ever refuses more.
//! If Redis fails, the shared limit **fails open** for [`DOWN_PAUSE`] (each node keeps its own
//! limit), so an outage costs no shopper a join and no join a timeout.
//!
//! Both kinds of key sit under the room's hash tag like the store's keys (`docs/redis.md`), so
//! a room's keys share one Cluster slot.
//!
//! ## Connections
//! Like [`crate::store::RedisStore`]: made lazily on first use, inside whichever runtime calls
//! first, with the same connect, answer and call timeouts.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::{FromRedisValue, Script};
use waitroom::UnixMillis;

use super::challenge::ChallengeId;
use super::replay::{ReplayError, ReplayGuard};
use crate::store::redis::{Conn, LazyRedis, RedisTls, CALL_TIMEOUT};

/// Kept on top of a challenge's remaining lifetime (tolerated clock difference between nodes).
pub const SKEW_MARGIN: Duration = Duration::from_secs(5);
/// How long the shared join limit is skipped after Redis failed (each node's own limit holds).
pub const DOWN_PAUSE: Duration = Duration::from_secs(5);

/// The join limit shared by a fleet. `Ok(None)`: allowed (and counted); `Ok(Some(wait))`:
/// over the limit, retry after `wait`; `Err(())`: the shared state is unavailable (the caller
/// falls back to its own limit).
#[async_trait]
pub trait SharedJoinLimit: Send + Sync + fmt::Debug {
    async fn join(
        &self,
        room: &str,
        client: IpAddr,
        per_minute: NonZeroU32,
    ) -> Result<Option<Duration>, SharedUnavailable>;
}

/// The shared state did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared bot-defence state is unavailable")]
pub struct SharedUnavailable;

/// The replay key of challenge `id` in `room` (room ids are `[a-z0-9_-]`: no brace can break
/// the hash tag).
pub fn replay_key(room: &str, id: &ChallengeId) -> String {
    format!(
        "{{fg:{room}}}:pow:{}",
        waitroom::shuffle::hex(id.as_slice())
    )
}

/// The join-limit key of `client` in `room`: per IPv4 address, per IPv6 /64 (as the node's own
/// limiter keys them).
pub fn join_key(room: &str, client: IpAddr) -> String {
    match client.to_canonical() {
        IpAddr::V4(a) => format!("{{fg:{room}}}:jl:{a}"),
        IpAddr::V6(a) => format!("{{fg:{room}}}:jl:{:016x}/64", u128::from(a) >> 64),
    }
}

/// One GCRA step per join, on Redis's clock. KEYS: the address's key. ARGV: interval (µs),
/// burst. Returns 0 when allowed, else the wait in µs. Microsecond times stay below 2^53.
pub const JOIN_LIMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then return ahead - tolerance end
local nxt = tat + interval
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000))
return 0
"#;

/// [`ReplayGuard`] and [`SharedJoinLimit`] on the store's Redis, on one connection. Cheap to
/// build (no I/O); connects on first use.
pub struct RedisShared {
    redis: LazyRedis,
    join_limit: Script,
    /// Unix ms until which the join limit is not asked (Redis failed just before).
    down_until: AtomicU64,
}

impl fmt::Debug for RedisShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the URL: it may carry a password.
        f.debug_struct("RedisShared")
            .field("cluster", &self.redis.is_cluster())
            .field("connected", &self.redis.connected())
            .finish()
    }
}

impl RedisShared {
    /// Shared state on the store's Redis: `url` (`redis://`, `rediss://`, `unix://`,
    /// `redis+sentinel://`), `cluster` with `url` as the seed node, `tls` for `rediss`.
    pub fn new(
        url: &str,
        cluster: bool,
        tls: Option<&RedisTls>,
    ) -> Result<Self, crate::store::UrlError> {
        Ok(Self {
            redis: LazyRedis::new(url, cluster, tls)?,
            join_limit: Script::new(JOIN_LIMIT),
            down_until: AtomicU64::new(0),
        })
    }

    async fn conn(&self) -> redis::RedisResult<Conn> {
        self.redis.conn().await
    }

    /// Runs `cmd` within [`CALL_TIMEOUT`]; `None` on any failure (logged at debug).
    async fn query<T: FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Option<T> {
        let run = async { cmd.query_async::<T>(&mut self.conn().await?).await };
        match tokio::time::timeout(CALL_TIMEOUT, run).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "bot defence: redis {what} failed");
                // The next call connects anew (a restarted Redis, a Sentinel failover).
                if crate::store::connect::needs_new_connection(&e) {
                    self.redis.forget();
                }
                None
            }
            Err(_) => {
                tracing::debug!("bot defence: redis {what}: no answer within {CALL_TIMEOUT:?}");
                self.redis.forget();
                None
            }
        }
    }
}

/// Milliseconds the replay key must live: the challenge's remaining lifetime plus
/// [`SKEW_MARGIN`].
fn ttl_ms(expires_at: UnixMillis, now: UnixMillis) -> u64 {
    let margin = u64::try_from(SKEW_MARGIN.as_millis()).unwrap_or(u64::MAX);
    expires_at.0.saturating_sub(now.0).saturating_add(margin)
}

fn unix_ms() -> u64 {
    crate::clock::now().0
}

#[async_trait]
impl ReplayGuard for RedisShared {
    async fn first_use(
        &self,
        room: &str,
        id: &ChallengeId,
        expires_at: UnixMillis,
        now: UnixMillis,
    ) -> Result<bool, ReplayError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(replay_key(room, id))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(expires_at, now));
        // Fail closed: an unanswered redemption is refused, never accepted on trust.
        self.query::<Option<String>>("replay SET", &cmd)
            .await
            .map(|set| set.is_some())
            .ok_or(ReplayError::Store)
    }
}

#[async_trait]
impl SharedJoinLimit for RedisShared {
    async fn join(
        &self,
        room: &str,
        client: IpAddr,
        per_minute: NonZeroU32,
    ) -> Result<Option<Duration>, SharedUnavailable> {
        if unix_ms() < self.down_until.load(Ordering::Relaxed) {
            return Err(SharedUnavailable);
        }
        let interval_us = 60_000_000 / u64::from(per_minute.get());
        let mut inv = self.join_limit.prepare_invoke();
        inv.key(join_key(room, client))
            .arg(interval_us.max(1))
            .arg(per_minute.get());
        let run = async { inv.invoke_async::<u64>(&mut self.conn().await?).await };
        let answer = match tokio::time::timeout(CALL_TIMEOUT, run).await {
            Ok(Ok(wait_us)) => Some(wait_us),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "bot defence: redis join limit failed");
                None
            }
            Err(_) => None,
        };
        match answer {
            Some(0) => Ok(None),
            Some(wait_us) => Ok(Some(Duration::from_micros(wait_us))),
            None => {
                let pause = u64::try_from(DOWN_PAUSE.as_millis()).unwrap_or(u64::MAX);
                self.down_until
                    .store(unix_ms().saturating_add(pause), Ordering::Relaxed);
                Err(SharedUnavailable)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_store_room_tag_and_replays_live_past_expiry() {
        let id = [0xab; 16];
        assert_eq!(
            replay_key("drop-1", &id),
            "{fg:drop-1}:pow:abababababababababababababababab"
        );
        let v4: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(join_key("drop-1", v4), "{fg:drop-1}:jl:203.0.113.9");
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().expect("ip");
        assert_eq!(join_key("drop-1", mapped), "{fg:drop-1}:jl:203.0.113.9");
        // One key per /64, as the node's own limiter keys IPv6.
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert_eq!(join_key("r", a), join_key("r", b));
        assert_eq!(join_key("r", a), "{fg:r}:jl:20010db800010002/64");
        let now = UnixMillis(1_000_000);
        assert_eq!(ttl_ms(UnixMillis(1_060_000), now), 65_000);
        // Already expired (the verifier refuses those first): still a positive TTL.
        assert_eq!(ttl_ms(UnixMillis(900_000), now), 5_000);
    }

    #[test]
    fn a_bad_url_is_refused_without_io_and_debug_hides_it() {
        assert!(RedisShared::new("not a url", false, None).is_err());
        let r = RedisShared::new("redis://user:secret@127.0.0.1:1", false, None).expect("parses");
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    /// Nobody listens on port 1: replays fail closed, the join limit fails open (and is then
    /// skipped for a while, so an outage costs no join a timeout).
    #[test]
    fn an_unreachable_redis_refuses_solutions_and_skips_the_join_limit() {
        let r = RedisShared::new("redis://127.0.0.1:1", false, None).expect("parses");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let now = UnixMillis(1_000_000);
        let got = rt.block_on(r.first_use("drop", &[1; 16], UnixMillis(1_060_000), now));
        assert_eq!(got, Err(ReplayError::Store));
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        let per_minute = NonZeroU32::new(5).expect("non-zero");
        assert_eq!(
            rt.block_on(r.join("drop", ip, per_minute)),
            Err(SharedUnavailable)
        );
        assert!(r.down_until.load(Ordering::Relaxed) > unix_ms());
        let started = std::time::Instant::now();
        assert_eq!(
            rt.block_on(r.join("drop", ip, per_minute)),
            Err(SharedUnavailable)
        );
        assert!(started.elapsed() < Duration::from_millis(50), "skipped");
    }
}
