//! The Redis store against a real `redis-server` (started by each test on a free port):
//! the same conformance scenarios as the reference `MemoryStore`, the Cluster key layout and
//! client, ticket batching, the circuit breaker on a dead Redis, and re-seeding after a restart
//! that lost everything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flashgate::store::local::{sync_room, Marks};
use flashgate::store::redis::{room_keys, RedisStore};
use flashgate::store::{redis_stack, BatchingStore};
use testkit::{RedisServer, TestPki};
use waitroom::state::{AdvanceRecord, ControllerState, MinuteCount, ShuffleRange};
use waitroom::{
    CheckIn, ClaimOutcome, ClaimRequest, HighWater, MemoryStore, Overrides, RoomSettings, Store,
    StoreError, UnixMillis,
};

const WINDOW: Duration = Duration::from_secs(10);

fn req(ticket: u64, minute: u32, now: UnixMillis) -> ClaimRequest {
    ClaimRequest {
        ticket,
        position: ticket,
        minute,
        now,
        claim_window: WINDOW,
        max_per_minute: 1000,
        cap: 1000,
        session_minutes: 10,
        unlimited: false,
    }
}

fn active(pairs: &[(u32, u64)]) -> Vec<MinuteCount> {
    pairs
        .iter()
        .map(|&(minute, count)| MinuteCount { minute, count })
        .collect()
}

/// Every behaviour of the `Store` contract, with the outcomes `MemoryStore` gives. Runs on a
/// fresh room of `store`.
async fn conformance(store: &dyn Store, room: &str) {
    let t = flashgate::clock::now();
    let next = issue_and_commit_conformance(store, room, t).await;
    claim_conformance(store, room, t).await;
    check_in_and_release_conformance(store, room, t).await;
    // Claims of advances dropped from the history are forgotten.
    let empty = ControllerState {
        history: Vec::new(),
        ..next.clone()
    };
    assert_eq!(store.commit(room, 1, &empty).await, Ok(true));
    assert_eq!(store.commit(room, 2, &next).await, Ok(true));
    let s = store.snapshot(room, t).await.expect("snapshot");
    assert_eq!(s.ctl.version, 3);
    assert_eq!(s.ctl.history[1].claimed, 0);

    overrides_and_reseed_conformance(store, room, t).await;
}

/// Issue numbers from 1, never let in what is not served yet, and commit the controller state
/// by compare-and-set; returns the state committed.
async fn issue_and_commit_conformance(
    store: &dyn Store,
    room: &str,
    t: UnixMillis,
) -> ControllerState {
    let m = t.minute();
    let claim = |r: ClaimRequest| async move { store.claim(room, &r).await.expect("claim") };
    let snap = || async { store.snapshot(room, t).await.expect("snapshot") };

    // Issue: consecutive numbers from 1.
    assert_eq!(store.issue(room, 1).await, Ok(1));
    assert_eq!(store.issue(room, 11).await, Ok(2));
    let s = snap().await;
    assert_eq!(s.issued, 12);
    assert_eq!(s.ctl, ControllerState::default());
    assert_eq!((s.claimed_total, s.active.len()), (0, 0));
    assert_eq!(s.overrides, Overrides::default());

    // Nothing served yet; unknown numbers are never let in.
    assert_eq!(claim(req(1, m, t)).await, ClaimOutcome::NotYet);
    assert_eq!(claim(req(0, m, t)).await, ClaimOutcome::NotYet);
    assert_eq!(claim(req(13, m, t)).await, ClaimOutcome::NotYet);

    // Commit: compare-and-set on the version.
    let expired = AdvanceRecord {
        at: t.minus(WINDOW * 2),
        serving_after: 5,
        admitted: 5,
        claimed: 0,
    };
    let fresh = AdvanceRecord {
        at: t,
        serving_after: 10,
        admitted: 5,
        claimed: 0,
    };
    let next = ControllerState {
        last_tick: t,
        serving: 10,
        admitted_total: 10,
        history: vec![expired, fresh],
        ranges: vec![ShuffleRange {
            lo: 0,
            hi: 3,
            seed: [7; 32],
        }],
        noshow_milli: 120,
        ..ControllerState::default()
    };
    assert_eq!(store.commit(room, 0, &next).await, Ok(true));
    assert_eq!(
        store.commit(room, 0, &next).await,
        Ok(false),
        "stale version"
    );
    let s = snap().await;
    assert_eq!(s.ctl.version, 1);
    assert_eq!(
        ControllerState {
            version: 0,
            ..s.ctl.clone()
        },
        next
    );
    next
}

/// Claims: a reserved position enters once even when the room is full, late claims meet the
/// capacity, positions beyond serving wait, passthrough rooms and the per-minute cap.
async fn claim_conformance(store: &dyn Store, room: &str, t: UnixMillis) {
    let m = t.minute();
    let claim = |r: ClaimRequest| async move { store.claim(room, &r).await.expect("claim") };
    let snap = || async { store.snapshot(room, t).await.expect("snapshot") };
    // A reserved position enters even when the room is full; exactly once.
    let full = |r: ClaimRequest, cap| ClaimRequest { cap, ..r };
    assert_eq!(claim(full(req(6, m, t), 0)).await, ClaimOutcome::Entered);
    assert_eq!(claim(req(6, m, t)).await, ClaimOutcome::AlreadyEntered);
    // A late claim (its advance's window passed) is checked against capacity:
    // active 1 + pending 4 (the fresh advance's unclaimed) = 5.
    assert_eq!(claim(full(req(1, m, t), 5)).await, ClaimOutcome::Full);
    assert_eq!(claim(full(req(1, m, t), 6)).await, ClaimOutcome::Entered);
    let s = snap().await;
    assert_eq!(
        s.ctl.history[0].claimed, 0,
        "late claims hold no reservation"
    );
    assert_eq!(s.ctl.history[1].claimed, 1);
    assert_eq!(s.claimed_total, 2);
    assert_eq!(s.active, active(&[(m, 2)]));
    assert_eq!((s.claims_minute, s.claims_in_minute), (m, 2));

    // Beyond serving: not yet; passthrough rooms ignore position and caps.
    assert_eq!(claim(req(11, m, t)).await, ClaimOutcome::NotYet);
    let unlimited = ClaimRequest {
        unlimited: true,
        cap: 0,
        max_per_minute: 0,
        ..req(11, m, t)
    };
    assert_eq!(claim(unlimited).await, ClaimOutcome::Entered);

    // The per-minute entry cap; a new minute starts from zero.
    let capped = |r: ClaimRequest| ClaimRequest {
        max_per_minute: 3,
        ..r
    };
    assert_eq!(claim(capped(req(7, m, t))).await, ClaimOutcome::MinuteFull);
    assert_eq!(claim(capped(req(7, m + 1, t))).await, ClaimOutcome::Entered);
    let s = snap().await;
    assert_eq!((s.claims_minute, s.claims_in_minute), (m + 1, 1));
    assert_eq!(s.ctl.history[1].claimed, 2);
    assert_eq!(s.active, active(&[(m, 3), (m + 1, 1)]));
}

/// Check-ins between minutes, and releases that free the count at once and end the ticket.
async fn check_in_and_release_conformance(store: &dyn Store, room: &str, t: UnixMillis) {
    let m = t.minute();
    let claim = |r: ClaimRequest| async move { store.claim(room, &r).await.expect("claim") };
    let snap = || async { store.snapshot(room, t).await.expect("snapshot") };
    // Check-ins move a shopper between minutes; ticket 0 (floor-rate passes) is not counted.
    assert_eq!(store.check_in(room, 6, m, m + 1).await, Ok(CheckIn::Moved));
    assert_eq!(store.check_in(room, 0, m, m + 1).await, Ok(CheckIn::Moved));
    assert_eq!(
        store.check_in(room, 7, m + 1, m + 1).await,
        Ok(CheckIn::Moved)
    );
    assert_eq!(snap().await.active, active(&[(m, 2), (m + 1, 2)]));

    // Release frees the active count at once and ends the ticket for good.
    store.release(room, 1, Some(m)).await.expect("release");
    assert_eq!(claim(req(1, m, t)).await, ClaimOutcome::Ended);
    assert_eq!(store.check_in(room, 1, m, m + 1).await, Ok(CheckIn::Ended));
    store.release(room, 8, None).await.expect("leave the line");
    assert_eq!(claim(req(8, m, t)).await, ClaimOutcome::Ended);
    store.release(room, 1, Some(m)).await.expect("twice");
    store.release(room, 999, Some(m)).await.expect("unknown");
    store.release(room, 0, Some(m)).await.expect("ticket 0");
    let s = snap().await;
    assert_eq!(s.active, active(&[(m, 1), (m + 1, 2)]));
    assert_eq!(s.claimed_total, 4);
}

/// Overrides are stored; a re-seed raises every number to the marks and lowers none; a room
/// the store lost gets its overrides back. Runs on the room [`conformance`] left behind.
async fn overrides_and_reseed_conformance(store: &dyn Store, room: &str, t: UnixMillis) {
    let m = t.minute();
    let snap = || async { store.snapshot(room, t).await.expect("snapshot") };

    // Overrides.
    let o = Overrides {
        new_users_per_minute: Some(120),
        paused: true,
        sold_out: true,
        message: Some("back soon | 50% off".into()),
        ..Overrides::default()
    };
    store.set_overrides(room, &o).await.expect("overrides");
    assert_eq!(snap().await.overrides, o);

    // Re-seed raises every number to the marks and lowers none.
    let marks = HighWater {
        issued: 5,
        claimed_total: 100,
        ctl: ControllerState {
            version: 10,
            serving: 50,
            admitted_total: 60,
            history: vec![AdvanceRecord {
                at: t,
                serving_after: 50,
                admitted: 3,
                claimed: 2,
            }],
            ..ControllerState::default()
        },
        active: active(&[(m, 7)]),
        claims_minute: m + 1,
        claims_in_minute: 9,
        overrides: Overrides::default(),
    };
    store.reseed(room, &marks).await.expect("reseed");
    let s = snap().await;
    assert_eq!(s.issued, 12, "never lowered");
    assert_eq!(s.claimed_total, 100);
    assert_eq!(s.ctl.version, 11, "past both versions");
    assert_eq!((s.ctl.serving, s.ctl.admitted_total), (50, 60));
    assert_eq!(s.ctl.history, marks.ctl.history, "claims restored");
    assert_eq!(s.active, active(&[(m, 7), (m + 1, 2)]));
    assert_eq!((s.claims_minute, s.claims_in_minute), (m + 1, 9));
    store.reseed(room, &marks).await.expect("again");
    let again = snap().await;
    assert_eq!(
        (again.ctl.clone(), again.active.clone(), again.issued),
        (s.ctl, s.active, s.issued),
        "idempotent"
    );
    let more = HighWater {
        issued: 20,
        ..marks
    };
    store.reseed(room, &more).await.expect("raise issued");
    assert_eq!(store.issue(room, 1).await, Ok(21));
    assert_eq!(snap().await.overrides, o, "overrides kept when present");

    // A room the store lost entirely gets its overrides back (a pause stays a pause).
    let lost = format!("{room}-lost");
    let paused = HighWater {
        overrides: Overrides {
            paused: true,
            ..Overrides::default()
        },
        ..HighWater::default()
    };
    store
        .reseed(&lost, &paused)
        .await
        .expect("reseed lost room");
    let s = store.snapshot(&lost, t).await.expect("snapshot");
    assert!(s.overrides.paused);
}

async fn pause_and_minute_conformance(store: &dyn Store, room: &str) {
    let t = flashgate::clock::now();
    let m = t.minute();
    let claim = |r: ClaimRequest| async move { store.claim(room, &r).await.expect("claim") };
    assert_eq!(store.issue(room, 4).await, Ok(1));
    let ctl = ControllerState {
        serving: 4,
        ..ControllerState::default()
    };
    assert_eq!(store.commit(room, 0, &ctl).await, Ok(true));
    for flag in ["paused", "queue_all", "sold_out"] {
        let o = Overrides {
            paused: flag == "paused",
            queue_all: flag == "queue_all",
            sold_out: flag == "sold_out",
            message: Some("a | b".into()),
            ..Overrides::default()
        };
        store.set_overrides(room, &o).await.expect("overrides");
        assert_eq!(claim(req(1, m, t)).await, ClaimOutcome::NotYet, "{flag}");
    }
    let drain = Overrides {
        drain: true,
        ..Overrides::default()
    };
    store.set_overrides(room, &drain).await.expect("overrides");
    assert_eq!(
        claim(req(1, m, t)).await,
        ClaimOutcome::Entered,
        "draining still admits"
    );
    assert_eq!(claim(req(2, m + 1, t)).await, ClaimOutcome::Entered);
    // A claim decided in the minute before, landing late, is retried rather than resetting.
    assert_eq!(claim(req(3, m, t)).await, ClaimOutcome::MinuteFull);
    let s = store.snapshot(room, t).await.expect("snapshot");
    assert_eq!((s.claims_minute, s.claims_in_minute), (m + 1, 1));
    assert_eq!(claim(req(3, m + 1, t)).await, ClaimOutcome::Entered);
}

#[tokio::test]
async fn memory_store_conformance() {
    conformance(&MemoryStore::new(), "conf").await;
    pause_and_minute_conformance(&MemoryStore::new(), "pause").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conformance_and_key_layout() {
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url(), false).expect("store");
    conformance(&store, "conf").await;
    pause_and_minute_conformance(&store, "conf-pause").await;

    // Every key the room uses is under its hash tag; growing keys expire, counters do not.
    let keys: Vec<String> = redis.cmd(redis::cmd("KEYS").arg("*")).expect("KEYS");
    assert!(!keys.is_empty());
    for key in &keys {
        let room = key
            .strip_prefix("{fg:")
            .and_then(|rest| rest.split_once("}:"))
            .map(|(room, _)| room)
            .unwrap_or_else(|| panic!("{key} is not under a room's hash tag"));
        assert!(room.starts_with("conf"), "{key}");
        let k = room_keys(room);
        assert!(k.all().contains(&key.as_str()), "undeclared key {key}");
        let ttl: i64 = redis.cmd(redis::cmd("TTL").arg(key)).expect("TTL");
        let growing = [&k.claims, &k.active, &k.cmin, &k.entered, &k.ended].contains(&key);
        if growing {
            assert!(
                ttl > 24 * 3600,
                "{key} expires after the longest session: {ttl}"
            );
        } else {
            assert_eq!(ttl, -1, "{key} is O(1) and kept");
        }
    }

    // After a restart the script cache is empty: calls fall back to EVAL and go on working.
    redis
        .cmd::<()>(redis::cmd("SCRIPT").arg("FLUSH"))
        .expect("SCRIPT FLUSH");
    assert_eq!(store.issue("conf", 1).await, Ok(22));
}

/// CRC16/XMODEM of the hash tag, as Redis Cluster computes slots.
fn slot(key: &str) -> u16 {
    let tag = match (key.find('{'), key.find('}')) {
        (Some(a), Some(b)) if b > a + 1 => &key[a + 1..b],
        _ => key,
    };
    let mut crc: u16 = 0;
    for &byte in tag.as_bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_client_and_one_slot_per_room() {
    let redis = RedisServer::start_cluster();
    for room in ["conf", "drop", "a-very-long-room-id_0123456789ab"] {
        let k = room_keys(room);
        let slots: Vec<i64> = k
            .all()
            .iter()
            .map(|key| {
                redis
                    .cmd(redis::cmd("CLUSTER").arg("KEYSLOT").arg(*key))
                    .expect("KEYSLOT")
            })
            .collect();
        assert!(slots.iter().all(|s| *s == slots[0]), "{room}: {slots:?}");
        assert_eq!(slots[0], i64::from(slot(&k.issued)), "our CRC16 agrees");
    }
    assert_ne!(slot(&room_keys("conf").ctl), slot(&room_keys("drop").ctl));

    // The same scenarios through the Cluster client (multi-key scripts would fail with
    // CROSSSLOT if any key of a room hashed elsewhere).
    let store = RedisStore::new(&redis.url(), true).expect("cluster store");
    conformance(&store, "conf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_numbers_concurrent_arrivals_with_few_redis_calls() {
    let redis = RedisServer::start();
    let store = Arc::new(BatchingStore::new(
        Arc::new(RedisStore::new(&redis.url(), false).expect("store")),
        Duration::from_millis(2),
    ));
    // Load the scripts, then count.
    assert_eq!(store.issue("b", 1).await, Ok(1));
    let before = redis.calls("evalsha") + redis.calls("eval");
    let n = 400u64;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.issue("b", 1).await })
        })
        .collect();
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.expect("task").expect("issued"));
    }
    let calls = redis.calls("evalsha") + redis.calls("eval") - before;
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (2..=n + 1).collect::<Vec<_>>(),
        "unique and gapless"
    );
    assert!(calls * 10 <= n, "{calls} Redis calls for {n} arrivals");
    eprintln!(
        "batching: {n} concurrent arrivals, {calls} Redis calls ({:.3} per arrival)",
        calls as f64 / n as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_redis_fails_fast_and_a_restart_empty_is_reseeded() {
    let mut redis = RedisServer::start();
    let store =
        redis_stack(&redis.url(), false, None, Duration::from_millis(2), None).expect("stack");
    let settings = RoomSettings::new(
        "r",
        std::num::NonZeroU32::new(600).expect("nonzero"),
        std::num::NonZeroU32::new(1000).expect("nonzero"),
    );
    let marks = parking_lot::Mutex::new(Marks::default());
    let sync = || {
        sync_room(
            store.as_ref(),
            &settings,
            &marks,
            flashgate::clock::now(),
            1.0,
        )
    };

    // A sale in progress: tickets issued, serving advanced by the controller.
    for _ in 0..5 {
        store.issue("r", 20).await.expect("issue");
        sync().await.expect("sync");
    }
    let before = sync().await.expect("sync").snapshot;
    assert!(before.issued >= 100 && before.ctl.serving > 0, "{before:?}");

    // Redis dies: calls fail, and once the breaker is open they fail at once.
    redis.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let started = Instant::now();
        let r = store.snapshot("r", flashgate::clock::now()).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        if started.elapsed() < Duration::from_millis(5) {
            break;
        }
        assert!(Instant::now() < deadline, "breaker never opened");
    }
    // Claims, check-ins and snapshots fail at once, except the one probe per backoff period
    // that the half-open breaker lets through; an issue still waits its batch window.
    let t = flashgate::clock::now();
    let mut slow = Vec::new();
    for i in 0..1000 {
        let started = Instant::now();
        assert!(store.claim("r", &req(i, t.minute(), t)).await.is_err());
        if started.elapsed() > Duration::from_millis(5) {
            slow.push(started.elapsed());
        }
    }
    assert!(slow.len() <= 2, "slow calls on an open breaker: {slow:?}");
    assert!(
        slow.iter().all(|d| *d < Duration::from_millis(1100)),
        "{slow:?}"
    );
    let started = Instant::now();
    assert!(store.issue("r", 1).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(100));

    // Redis comes back empty: numbering is refused until the room is re-seeded...
    redis.restart_empty();
    let deadline = Instant::now() + Duration::from_secs(15);
    let err = loop {
        match store.issue("r", 1).await {
            Err(StoreError::Protocol(e)) => break e,
            Err(StoreError::Unavailable(_)) => {
                assert!(Instant::now() < deadline, "never reconnected");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(n) => panic!("numbered {n} from a store that lost its counter"),
        }
    };
    assert!(err.contains("behind"), "{err}");
    // ...which the next sync does, before its first commit.
    let after = sync().await.expect("sync");
    let seed = after.reseeded.expect("re-seeded");
    let s = after.snapshot;
    assert!(
        s.ctl.serving >= before.ctl.serving,
        "serving never decreases"
    );
    assert!(s.ctl.version > before.ctl.version);
    assert!(s.ctl.admitted_total >= before.ctl.admitted_total);
    assert!(s.issued >= before.issued && seed.issued >= before.issued);
    let next = store.issue("r", 1).await.expect("numbering resumes");
    assert!(next > before.issued, "no number handed out twice: {next}");
}

// ---------------------------------------------------------------------------------------------
// TLS (`rediss://`): a real `redis-server` with `--tls-port`, certificates from a test CA
// (`testkit::TestPki`).

fn identity(pki: &TestPki) -> flashgate::store::ClientIdentity {
    flashgate::store::ClientIdentity {
        cert: pki.client_cert.clone().into_bytes(),
        key: pki.client_key.clone().into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_over_tls_conformance_and_a_wrong_ca_is_refused() {
    let pki = TestPki::new(false);
    let redis = RedisServer::start_tls(pki.server.clone());
    let trusted = flashgate::store::RedisTls {
        ca: Some(pki.ca_pem.clone().into_bytes()),
        client: None,
    };
    // As an ACL user with docs/redis.md's rules: every script of the suite stays within them.
    redis.acl_user("flashgate", "fg-secret", testkit::FLASHGATE_ACL);
    let url = redis
        .tls_url()
        .replace("rediss://", "rediss://flashgate:fg-secret@");
    let store = RedisStore::with_tls(&url, false, Some(&trusted)).expect("store");
    conformance(&store, "tls").await;
    pause_and_minute_conformance(&store, "tls-pause").await;
    let acl: Vec<redis::Value> = redis.cmd(redis::cmd("ACL").arg("LOG")).expect("ACL LOG");
    assert!(acl.is_empty(), "the ACL refused something: {acl:?}");
    // The data went over TLS to that server (read back on its plain port).
    let issued: u64 = redis
        .cmd(redis::cmd("GET").arg(room_keys("tls").issued))
        .expect("GET");
    assert_eq!(issued, 21);

    // A certificate from another CA is refused: no call succeeds, the error says why.
    let other = flashgate::store::RedisTls {
        ca: Some(TestPki::new(false).ca_pem.clone().into_bytes()),
        client: None,
    };
    let stranger = RedisStore::with_tls(&redis.tls_url(), false, Some(&other)).expect("store");
    match stranger.issue("tls", 1).await {
        Err(StoreError::Unavailable(e)) => assert!(
            e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"),
            "{e}"
        ),
        r => panic!("a server signed by an unknown CA answered: {r:?}"),
    }
    // Without a CA of its own, the system's roots do not know the test CA either.
    let system = RedisStore::new(&redis.tls_url(), false).expect("store");
    assert!(system.issue("tls", 1).await.is_err());
    // Plain Redis protocol on the TLS port is no answer.
    let plain = redis.tls_url().replace("rediss://", "redis://");
    let plain = RedisStore::new(&plain, false).expect("store");
    assert!(plain.issue("tls", 1).await.is_err());
    assert_eq!(
        store.issue("tls", 1).await,
        Ok(22),
        "the trusted store still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = TestPki::new(true);
    let redis = RedisServer::start_tls(pki.server.clone());
    let ca_only = flashgate::store::RedisTls {
        ca: Some(pki.ca_pem.clone().into_bytes()),
        client: None,
    };
    let anonymous = RedisStore::with_tls(&redis.tls_url(), false, Some(&ca_only)).expect("store");
    assert!(
        anonymous.issue("m", 1).await.is_err(),
        "a client without a certificate was served"
    );
    let with_cert = flashgate::store::RedisTls {
        client: Some(identity(&pki)),
        ..ca_only
    };
    let store = RedisStore::with_tls(&redis.tls_url(), false, Some(&with_cert)).expect("store");
    assert_eq!(store.issue("m", 1).await, Ok(1));
}
