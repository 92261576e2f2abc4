//! Benchmarks of the hot paths: minting and verifying tokens, the admission decision for a pass
//! holder and for a waiting shopper's poll (FIFO and inside a shuffled pre-queue), and ticket
//! issue under contention.
//!
//! `cargo bench -p waitroom --bench core` (add `-- --warm-up-time 1 --measurement-time 2` for
//! a quick run).

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use futures_executor::block_on;
use waitroom::controller;
use waitroom::eta::EtaEstimator;
use waitroom::token::Expect;
use waitroom::{
    Binding, Credential, Decision, EventSettings, KeyRing, MemoryStore, Pass, RoomSettings,
    RoomView, Store, Ticket, UnixMillis,
};

const ROOM: &str = "drop";
const T0: u64 = 1_750_000_020_000;
const ISSUED: u64 = 100_000;

fn keys() -> KeyRing {
    KeyRing::new(&[(1, &[7u8; 32]), (2, &[9u8; 32])], 2).expect("valid key ring")
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

fn binding() -> u64 {
    Binding::UserAgent.value(b"Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", None)
}

fn pass(now: UnixMillis) -> Pass {
    Pass {
        room: ROOM.into(),
        event: 0,
        ticket: 4_242,
        admitted_at: now.secs() - 30,
        checkin_minute: now.minute(),
        expires_at: now.secs() + 570,
        binding: binding(),
        fixed_session: false,
    }
}

fn ticket(number: u64, now: UnixMillis) -> Ticket {
    Ticket {
        room: ROOM.into(),
        event: 0,
        number,
        issued_at: now.secs() - 60,
        last_seen: now.secs() - 5,
        expires_at: now.secs() + 115,
        binding: binding(),
        serving_at_issue: 0,
    }
}

fn expect(now: UnixMillis) -> Expect<'static> {
    Expect {
        room: ROOM,
        binding: binding(),
        now,
        leeway: Duration::from_secs(5),
    }
}

fn tokens(c: &mut Criterion) {
    let keys = keys();
    let now = UnixMillis(T0);
    let p = pass(now);
    let t = ticket(50_000, now);
    let (pass_token, ticket_token) = (keys.sign_pass(&p), keys.sign_ticket(&t));
    let e = expect(now);
    assert_eq!(keys.verify_pass(&pass_token, &e), Ok(p.clone()));
    assert_eq!(keys.verify_ticket(&ticket_token, &e), Ok(t.clone()));
    let mut g = c.benchmark_group("token");
    g.bench_function("mint_pass", |b| b.iter(|| keys.sign_pass(black_box(&p))));
    g.bench_function("verify_pass", |b| {
        b.iter(|| keys.verify_pass(black_box(&pass_token), &e))
    });
    g.bench_function("verify_ticket", |b| {
        b.iter(|| keys.verify_ticket(black_box(&ticket_token), &e))
    });
    g.finish();
}

/// A room with 100k tickets issued, after `minutes` of controller ticks (so the ETA has a
/// measured rate), and the view a node would answer polls from.
fn busy_room(settings: &RoomSettings, issue_at: u64, until: u64) -> RoomView {
    let store = MemoryStore::new();
    let mut eta = EtaEstimator::new();
    let mut t = T0;
    let mut snap = None;
    while t <= until {
        if t == issue_at {
            block_on(store.issue(ROOM, ISSUED)).expect("issue");
        }
        let s = block_on(controller::tick(&store, settings, UnixMillis(t))).expect("tick");
        eta.observe(s.time, s.ctl.admitted_total);
        snap = Some(s);
        t += 1_000;
    }
    RoomView::new(settings, snap.expect("ticked"), &eta)
}

fn decide(c: &mut Criterion) {
    let fifo = RoomSettings::new(ROOM, nz(600), nz(100_000));
    let now_ms = T0 + 180_000;
    let now = UnixMillis(now_ms);
    let view = busy_room(&fifo, T0, now_ms);

    let mut shuffled = RoomSettings::new(ROOM, nz(600), nz(100_000));
    shuffled.seed_secret = [5u8; 32];
    let (starts_at, ends_at) = (UnixMillis(T0 + 60_000), UnixMillis(T0 + 3_600_000));
    let window = EventSettings::window("launch", Some(UnixMillis(T0)), starts_at, ends_at, true);
    shuffled.events.push(window);
    let shuffled_view = busy_room(&shuffled, T0 + 10_000, now_ms);
    assert_eq!(shuffled_view.snapshot.ctl.prequeue_count, ISSUED);

    let p = pass(now);
    let waiting = ticket(90_000, now);
    for (v, s) in [(&view, &fifo), (&shuffled_view, &shuffled)] {
        assert!(matches!(
            v.decide(s, Credential::Pass(&p), now),
            Decision::Allow { renewed: None, .. }
        ));
        assert!(matches!(
            v.decide(s, Credential::Ticket(&waiting), now),
            Decision::Wait(ref w) if w.position.is_some()
        ));
    }

    let mut g = c.benchmark_group("decide");
    g.bench_function("pass_holder", |b| {
        b.iter(|| view.decide(&fifo, Credential::Pass(black_box(&p)), now))
    });
    g.bench_function("queued_poll", |b| {
        b.iter(|| view.decide(&fifo, Credential::Ticket(black_box(&waiting)), now))
    });
    g.bench_function("queued_poll_shuffled", |b| {
        b.iter(|| shuffled_view.decide(&shuffled, Credential::Ticket(black_box(&waiting)), now))
    });
    g.finish();
}

/// Two threads issue tickets in one room at once; the time reported is wall time per ticket.
// Benches measure wall time: `Instant::now` is banned in the crate (time is an argument), not
// here.
#[allow(clippy::disallowed_methods)]
fn issue_contended(c: &mut Criterion) {
    let store = MemoryStore::new();
    block_on(store.issue(ROOM, 1)).expect("issue");
    let mut g = c.benchmark_group("memory");
    g.bench_function("issue_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Barrier::new(2);
            let store = &store;
            let start = &start;
            std::thread::scope(|scope| {
                let workers: Vec<_> = [iters / 2, iters - iters / 2]
                    .into_iter()
                    .map(|n| {
                        scope.spawn(move || {
                            start.wait();
                            let began = Instant::now();
                            for _ in 0..n {
                                black_box(block_on(store.issue(ROOM, 1)).expect("issue"));
                            }
                            began.elapsed()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("issuing thread"))
                    .max()
                    .unwrap_or_default()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, tokens, decide, issue_contended);
criterion_main!(benches);
