//! The Redis store: [`waitroom::Store`] on one Redis (or a Redis Cluster) shared by a fleet.
//!
//! Semantics are exactly those of [`waitroom::MemoryStore`]; every state change is one Lua
//! script ([`super::lua`]), called by SHA with a fallback to EVAL when the server's script
//! cache is empty (after a restart or a failover). A snapshot is one script too, and returns
//! Redis `TIME`, so the controller runs on the store's clock: any node may tick, and the
//! compare-and-set on the controller state's version lets one commit win per slice.
//!
//! ## Keys
//! Every key of room `R` starts with the hash tag `{fg:R}`, so a room lives on one Cluster slot
//! and rooms spread over shards ([`room_keys`]):
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `{fg:R}:issued` | string | ticket counter | never |
//! | `{fg:R}:ctl` | string | controller state ([`super::codec`]) | never |
//! | `{fg:R}:claimed` | string | entries ever | never |
//! | `{fg:R}:ovr` | string | live overrides ([`super::codec`]) | never |
//! | `{fg:R}:claims` | hash | claims per advance record (`serving_after` → n) | [`RETAIN`] after last claim; pruned on commit |
//! | `{fg:R}:active` | hash | active shoppers per check-in minute | [`RETAIN`] after last write; minutes older than 24 h + 2 min pruned on snapshot |
//! | `{fg:R}:cmin` | hash | this minute's entries (`m`, `n`) | [`RETAIN`] after the minute changed |
//! | `{fg:R}:entered` | bitmap | one bit per ticket that entered | [`RETAIN`] after last entry |
//! | `{fg:R}:ended` | bitmap | one bit per ticket given up or revoked | [`RETAIN`] after last release |
//!
//! Memory per room: a few hundred bytes plus two bitmaps of one bit per ticket issued
//! (1,000,000 tickets: 250 KB). [`RETAIN`] (2 days) outlives the longest session (24 h), the
//! longest ticket and the claim window, so a key never expires while a token that needs it can
//! still be presented. Retired rooms keep their four small strings until deleted
//! (`redis-cli --scan --pattern '{fg:R}:*' | xargs redis-cli del`).
//!
//! ## Connections and failures
//! The connection is made lazily, on first use, inside whichever Pingora runtime calls first
//! (Pingora gives each service its own runtime; a client made before `run_forever` would be
//! bound to a runtime that is gone). A single Redis (or a Sentinel's master) uses the crate's
//! `ConnectionManager` (multiplexed, reconnects with a short exponential backoff); a Cluster
//! uses `cluster_async::ClusterConnection` ([`super::connect`]). Connecting and each answer
//! time out after [`CONNECT_TIMEOUT`] / [`RESPONSE_TIMEOUT`], and a whole call after
//! [`CALL_TIMEOUT`], so a dead Redis fails fast; [`super::breaker`] then makes it fail at once,
//! and its probe opens a fresh connection ([`Reconnect`]).
//!
//! The ticket-issue script refuses to number anyone while the counter is below the highest
//! value this node has read (a Redis that restarted empty would otherwise hand out numbers
//! already held by shoppers in line); the node's room sync then re-seeds the room
//! ([`waitroom::Store::reseed`]) and issuing resumes.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::{FromRedisValue, ScriptInvocation};
use waitroom::state::{MinuteCount, Overrides, RoomSnapshot};
use waitroom::store::{
    CheckIn, ClaimOutcome, ClaimRequest, HighWater, Store, StoreError, StoreResult,
};
use waitroom::{state::ControllerState, UnixMillis};

use super::breaker::Reconnect;
use super::codec;
pub(crate) use super::connect::{Conn, LazyRedis};
pub use super::connect::{RedisTls, CALL_TIMEOUT, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use super::lua::Scripts;
/// How long the growing keys (bitmaps, minute buckets, claims) outlive their last write.
pub const RETAIN: Duration = Duration::from_secs(2 * 24 * 3600);
/// Minutes of active buckets kept (the longest session plus slack), as in the memory store.
const KEEP_MINUTES: u32 = 24 * 60 + 2;

/// The names of a room's keys, all under the room's hash tag.
#[derive(Debug, Clone)]
pub struct RoomKeys {
    pub issued: String,
    pub ctl: String,
    pub claims: String,
    pub active: String,
    pub entered: String,
    pub ended: String,
    pub cmin: String,
    pub claimed: String,
    pub ovr: String,
}

impl RoomKeys {
    /// Every key, in the claim script's `KEYS` order.
    pub fn all(&self) -> [&str; 9] {
        [
            &self.issued,
            &self.ctl,
            &self.claims,
            &self.active,
            &self.entered,
            &self.ended,
            &self.cmin,
            &self.claimed,
            &self.ovr,
        ]
    }
}

impl RoomKeys {
    /// The keys a snapshot reads and a re-seed raises, in those scripts' `KEYS` order: all but
    /// the two bitmaps.
    pub fn counters(&self) -> [&str; 7] {
        [
            &self.issued,
            &self.ctl,
            &self.claims,
            &self.active,
            &self.cmin,
            &self.claimed,
            &self.ovr,
        ]
    }
}

/// `script` invoked on `keys` (its `KEYS`, in order); the caller adds the arguments.
fn on_keys<'a>(script: &'a redis::Script, keys: &[&str]) -> ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    for k in keys {
        inv.key(*k);
    }
    inv
}

/// The keys of room `room` (room ids are `[a-z0-9_-]`, so no brace can break the tag).
pub fn room_keys(room: &str) -> RoomKeys {
    let k = |suffix: &str| format!("{{fg:{room}}}:{suffix}");
    RoomKeys {
        issued: k("issued"),
        ctl: k("ctl"),
        claims: k("claims"),
        active: k("active"),
        entered: k("entered"),
        ended: k("ended"),
        cmin: k("cmin"),
        claimed: k("claimed"),
        ovr: k("ovr"),
    }
}

/// [`Store`] on Redis. Cheap to build (no I/O); connects on first use.
pub struct RedisStore {
    url: String,
    redis: LazyRedis,
    scripts: Scripts,
    /// Per room, the highest ticket counter read: issuing below it is refused.
    floors: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &redact(&self.url))
            .field("cluster", &self.redis.is_cluster())
            .field("connected", &self.redis.connected())
            .finish()
    }
}

/// The URL without a password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Transport trouble is `Unavailable` (the circuit breaker counts it); an answer we cannot
/// use is `Protocol`.
fn store_error(e: redis::RedisError) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind};
    match e.kind() {
        ErrorKind::Parse
        | ErrorKind::UnexpectedReturnType
        | ErrorKind::Server(ServerErrorKind::ResponseError) => {
            StoreError::Protocol(format!("redis: {e}"))
        }
        _ => unavailable(e),
    }
}

/// `call` (connecting included) within [`CALL_TIMEOUT`]; no answer in time is `Unavailable`.
async fn within_call_timeout<T>(
    call: impl std::future::Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| unavailable(format!("no answer within {CALL_TIMEOUT:?}")))?
}

fn bad(what: &str) -> StoreError {
    StoreError::Protocol(format!("redis: unexpected {what}"))
}

impl RedisStore {
    /// A store for `url` (`redis://`, `rediss://`, `unix://`, `redis+sentinel://`); `cluster`
    /// uses the Cluster client with `url` as the seed node.
    pub fn new(url: &str, cluster: bool) -> Result<Self, super::UrlError> {
        Self::with_tls(url, cluster, None)
    }

    /// [`RedisStore::new`], trusting `tls`'s CA and presenting its client certificate on
    /// `rediss` URLs.
    pub fn with_tls(
        url: &str,
        cluster: bool,
        tls: Option<&RedisTls>,
    ) -> Result<Self, super::UrlError> {
        Ok(Self {
            url: url.to_owned(),
            redis: LazyRedis::new(url, cluster, tls)?,
            scripts: Scripts::new(),
            floors: Mutex::new(HashMap::new()),
        })
    }

    async fn conn(&self) -> StoreResult<Conn> {
        self.redis.conn().await.map_err(unavailable)
    }

    /// Runs one script, within [`CALL_TIMEOUT`].
    async fn call<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> StoreResult<T> {
        within_call_timeout(async {
            let mut conn = self.conn().await?;
            inv.invoke_async(&mut conn).await.map_err(store_error)
        })
        .await
    }

    fn floor(&self, room: &str) -> u64 {
        self.floors.lock().get(room).copied().unwrap_or(0)
    }

    fn raise_floor(&self, room: &str, issued: u64) {
        let mut f = self.floors.lock();
        match f.get_mut(room) {
            Some(v) => *v = (*v).max(issued),
            None => {
                f.insert(room.to_owned(), issued);
            }
        }
    }

    /// The snapshot without touching the issue floor.
    async fn read(&self, room: &str) -> StoreResult<RoomSnapshot> {
        let k = room_keys(room);
        let mut inv = on_keys(&self.scripts.snapshot, &k.counters());
        inv.arg(KEEP_MINUTES);
        type Raw = (
            u64,
            u64,
            u64,
            String,
            Vec<String>,
            Vec<String>,
            u32,
            u64,
            u64,
            String,
        );
        let (secs, micros, issued, ctl, claims, active, cmin_m, cmin_n, claimed, ovr): Raw =
            self.call(&inv).await?;
        let mut ctl = codec::decode_ctl(&ctl)?;
        let claims = pairs::<u64, u64>(&claims, "claims")?;
        for r in &mut ctl.history {
            r.claimed = claims
                .iter()
                .find(|(k, _)| *k == r.serving_after)
                .map_or(0, |(_, n)| *n);
        }
        let mut active: Vec<MinuteCount> = pairs::<u32, u64>(&active, "active minutes")?
            .into_iter()
            .map(|(minute, count)| MinuteCount { minute, count })
            .collect();
        active.sort_by_key(|m| m.minute);
        Ok(RoomSnapshot {
            time: UnixMillis(secs * 1000 + micros / 1000),
            issued,
            claimed_total: claimed,
            active,
            claims_minute: cmin_m,
            claims_in_minute: cmin_n,
            ctl,
            overrides: codec::decode_overrides(&ovr)?,
        })
    }
}

/// Parses a flat `[field, value, field, value, ...]` reply.
fn pairs<A: std::str::FromStr, B: std::str::FromStr>(
    flat: &[String],
    what: &str,
) -> Result<Vec<(A, B)>, StoreError> {
    if !flat.len().is_multiple_of(2) {
        return Err(bad(what));
    }
    flat.chunks(2)
        .map(|c| match (c[0].parse(), c[1].parse()) {
            (Ok(a), Ok(b)) => Ok((a, b)),
            _ => Err(bad(what)),
        })
        .collect()
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[async_trait]
impl Reconnect for RedisStore {
    /// A fresh connection, checked with `PING` (see [`super::connect`]).
    async fn reconnect(&self) -> StoreResult<()> {
        within_call_timeout(async { self.redis.reconnect().await.map_err(unavailable) }).await
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn issue(&self, room: &str, count: u64) -> StoreResult<u64> {
        let k = room_keys(room);
        let mut inv = on_keys(&self.scripts.issue, &[&k.issued]);
        inv.arg(count).arg(self.floor(room));
        let first: i64 = self.call(&inv).await?;
        u64::try_from(first).map_err(|_| {
            StoreError::Protocol(format!(
                "room {room}: the ticket counter is behind what this node has seen (Redis lost \
                 data); waiting for the room to be re-seeded"
            ))
        })
    }

    async fn snapshot(&self, room: &str, _now: UnixMillis) -> StoreResult<RoomSnapshot> {
        // Snapshots come from the rooms' background refresh: the moment to check that a
        // Sentinel's master is still the one we write to.
        // The sentinels not answering is no reason to fail the read: the master may.
        match tokio::time::timeout(CALL_TIMEOUT / 2, self.redis.follow_master()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "sentinel: could not ask for the master"),
            Err(_) => tracing::debug!("sentinel: no answer about the master in time"),
        }
        let snap = self.read(room).await?;
        self.raise_floor(room, snap.issued);
        Ok(snap)
    }

    async fn commit(&self, room: &str, expected: u64, next: &ControllerState) -> StoreResult<bool> {
        let k = room_keys(room);
        let mut next = next.clone();
        next.version = expected + 1;
        for r in &mut next.history {
            r.claimed = 0; // claims live in the claims hash
        }
        let mut inv = on_keys(&self.scripts.commit, &[&k.ctl, &k.claims]);
        inv.arg(expected).arg(codec::encode_ctl(&next));
        for r in &next.history {
            inv.arg(r.serving_after);
        }
        let won: i64 = self.call(&inv).await?;
        Ok(won == 1)
    }

    async fn claim(&self, room: &str, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
        let k = room_keys(room);
        let mut inv = on_keys(&self.scripts.claim, &k.all());
        inv.arg(req.ticket)
            .arg(req.position)
            .arg(req.minute)
            .arg(req.now.0)
            .arg(millis(req.claim_window))
            .arg(req.max_per_minute)
            .arg(req.cap)
            .arg(req.session_minutes)
            .arg(u8::from(req.unlimited))
            .arg(RETAIN.as_secs());
        let code: i64 = self.call(&inv).await?;
        Ok(match code {
            0 => ClaimOutcome::Entered,
            1 => ClaimOutcome::AlreadyEntered,
            2 => ClaimOutcome::NotYet,
            3 => ClaimOutcome::Full,
            4 => ClaimOutcome::MinuteFull,
            5 => ClaimOutcome::Ended,
            _ => return Err(bad("claim outcome")),
        })
    }

    async fn check_in(&self, room: &str, ticket: u64, from: u32, to: u32) -> StoreResult<CheckIn> {
        if ticket == 0 {
            return Ok(CheckIn::Moved); // minted without the store; never counted
        }
        let k = room_keys(room);
        let mut inv = on_keys(&self.scripts.check_in, &[&k.ended, &k.active]);
        inv.arg(ticket).arg(from).arg(to).arg(RETAIN.as_secs());
        let moved: i64 = self.call(&inv).await?;
        Ok(if moved == 1 {
            CheckIn::Moved
        } else {
            CheckIn::Ended
        })
    }

    async fn release(&self, room: &str, ticket: u64, minute: Option<u32>) -> StoreResult<()> {
        let k = room_keys(room);
        let keys = [&*k.issued, &k.entered, &k.ended, &k.active];
        let mut inv = on_keys(&self.scripts.release, &keys);
        inv.arg(ticket)
            .arg(minute.map(|m| m.to_string()).unwrap_or_default())
            .arg(RETAIN.as_secs());
        let _: i64 = self.call(&inv).await?;
        Ok(())
    }

    async fn set_overrides(&self, room: &str, overrides: &Overrides) -> StoreResult<()> {
        // One SET: atomic on its own, no script needed.
        let k = room_keys(room);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&k.ovr).arg(codec::encode_overrides(overrides));
        within_call_timeout(async {
            let mut conn = self.conn().await?;
            cmd.query_async::<()>(&mut conn).await.map_err(store_error)
        })
        .await
    }

    async fn reseed(&self, room: &str, marks: &HighWater) -> StoreResult<()> {
        let k = room_keys(room);
        for _ in 0..3 {
            let cur = self.read(room).await?;
            let merged = marks.merged_ctl(&cur.ctl);
            let mut inv = on_keys(&self.scripts.reseed, &k.counters());
            inv.arg(cur.ctl.version);
            let claims: Vec<(u64, u64)> = match &merged {
                Some(c) => {
                    let mut stored = c.clone();
                    for r in &mut stored.history {
                        r.claimed = 0;
                    }
                    inv.arg(codec::encode_ctl(&stored));
                    c.history
                        .iter()
                        .filter(|r| r.claimed > 0)
                        .map(|r| (r.serving_after, r.claimed))
                        .collect()
                }
                None => {
                    inv.arg("");
                    Vec::new()
                }
            };
            inv.arg(marks.issued)
                .arg(marks.claimed_total)
                .arg(marks.claims_minute)
                .arg(marks.claims_in_minute)
                .arg(RETAIN.as_secs())
                .arg(codec::encode_overrides(&marks.overrides))
                .arg(claims.len());
            for (sa, n) in &claims {
                inv.arg(*sa).arg(*n);
            }
            for m in &marks.active {
                inv.arg(m.minute).arg(m.count);
            }
            let won: i64 = self.call(&inv).await?;
            if won == 1 {
                return Ok(());
            }
        }
        Err(unavailable(
            "re-seed lost three compare-and-set races in a row",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_room_tag_and_urls_are_redacted() {
        let k = room_keys("drop-1");
        for key in k.all() {
            assert!(key.starts_with("{fg:drop-1}:"), "{key}");
        }
        assert_eq!(
            redact("redis://user:secret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:1"), "redis://127.0.0.1:1");
    }
}
