//! Costs of the bot engine's hot paths: `cargo bench -p flashgate --bench bot`.
//!
//! Targets (issue 5): solution verification ≤ 5 µs, limiter check ≤ 1 µs.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use flashgate::bot::{
    challenge, BotGlobal, BotGuard, BotSettings, Credential, Gcra, MemoryReplay, Mode,
    RequestFacts, RouteClass, Signer,
};
use flashgate::metrics::Metrics;
use http::HeaderMap;
use waitroom::UnixMillis;

const T0: UnixMillis = UnixMillis(1_800_000_000_000);
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

fn browser() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("user-agent", CHROME),
        ("accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("sec-fetch-mode", "navigate"),
    ] {
        h.insert(k, v.parse().expect("header value"));
    }
    h
}

fn bench(c: &mut Criterion) {
    // Verification: one HMAC + one SHA-256, whatever the difficulty.
    let signer = Signer::new(&[7; 32]);
    let ch = signer.challenge("drop", 12, 42, T0, Duration::from_secs(120), [1; 16]);
    let counter = challenge::solve(&ch.token, 12);
    c.bench_function("bot/verify_solution", |b| {
        b.iter(|| signer.verify_solution(black_box("drop"), black_box(&ch.token), counter, 42, T0))
    });

    let replay = MemoryReplay::new(1 << 20);
    let mut n: u128 = 0;
    c.bench_function("bot/replay_insert", |b| {
        b.iter(|| {
            n += 1;
            replay.insert(&n.to_be_bytes(), T0.plus(Duration::from_secs(120)), T0)
        })
    });

    // The pure GCRA step.
    let g = Gcra::per_minute(std::num::NonZeroU32::new(600).expect("non-zero"));
    let mut tat = 0u64;
    let mut now = T0.0 * 1000;
    c.bench_function("bot/gcra_step", |b| {
        b.iter(|| {
            now += 1_000;
            g.apply(black_box(&mut tat), now)
        })
    });

    // A full check: lists, per-address limits, header scoring, metrics.
    let m = Metrics::new();
    let guard = BotGuard::new(&BotGlobal::default(), [5; 32], &m);
    let cfg = BotSettings {
        mode: Mode::Enforce,
        ..BotSettings::default()
    };
    let h = browser();
    let mut i: u32 = 0;
    c.bench_function("bot/check_join_browser", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i & 0xffff)));
            let f = RequestFacts::new(&h, Some(ip), UnixMillis(T0.0 + u64::from(i)));
            guard.check(black_box("drop"), &cfg, &f)
        })
    });
    c.bench_function("bot/check_pass_holder", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i & 0xffff)));
            let f = RequestFacts {
                credential: Credential::Pass(u64::from(i & 0xffff)),
                route: RouteClass::Protected,
                ..RequestFacts::new(&h, Some(ip), UnixMillis(T0.0 + u64::from(i)))
            };
            guard.check(black_box("drop"), &cfg, &f)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
