//! What the events service pays per event to write its JSON line (the largest part of an
//! event's cost; the request path only stamps and queues it):
//! `cargo bench -p flashgate --bench events`.
//!
//! Issue 10's target is end to end (arrivals ≤ 3 % slower with events on,
//! `loadtests/events-bench.sh`); this shows where an event's cost goes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use flashgate::events::{Encoder, Event, EventId, EventKind};
use waitroom::UnixMillis;

const T0: UnixMillis = UnixMillis(1_800_000_000_000);

fn ticket(n: u64) -> Event {
    Event::new("summer-sale", EventKind::TicketIssued { serving: 41_000 }).with_ticket(n)
}

fn encode(c: &mut Criterion) {
    let mut enc = Encoder::new("node-a");
    let mut out = Vec::with_capacity(64 * 1024);
    let e = ticket(42_017);
    let mut n = 0u64;
    c.bench_function("events/encode ticket_issued", |b| {
        b.iter(|| {
            if out.len() > 60 * 1024 {
                out.clear();
            }
            n += 1;
            let at = UnixMillis(T0.0 + n / 64);
            enc.write(&mut out, black_box(&e), EventId(u128::from(n) << 3), at);
        })
    });
}

criterion_group!(benches, encode);
criterion_main!(benches);
