//! Costs of the origin shield's hot paths: `cargo bench -p flashgate --bench shield`.
//!
//! A cached catalog hit costs: the key (`CacheKey::from_request`), the lookup, and building
//! the response header. Target: well under 10 µs together, so a hit is bounded by the network.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use flashgate::config::Config;
use flashgate::metrics::Metrics;
use flashgate::shield::{CacheKey, CacheStatus, Lookup, Resolved, Shield};
use pingora::http::{RequestHeader, ResponseHeader};
use testkit::Route;
use waitroom::UnixMillis;

/// The test kit's node config (the shop on a port nothing listens on: the bench never
/// fetches) with a catalog route for the pages the bench asks for.
fn config() -> Config {
    let origin = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let products = Route::new("/products").kind("catalog");
    let text = testkit::Config::new(origin).route(products).render();
    Config::parse("bench.toml", &text, UnixMillis::from_secs(1_800_000_000)).expect("bench config")
}

fn bench(c: &mut Criterion) {
    let cfg = config();
    let shield = Shield::new(cfg.shield_plan(), Arc::new(Metrics::new()), None);
    let route = cfg
        .routes
        .iter()
        .find(|r| r.path == "/products")
        .expect("the catalog route");
    let now = Instant::now();
    let mut req = RequestHeader::build("GET", b"/products?sort=new&page=2", None).expect("req");
    req.insert_header("host", "shop.example").expect("host");
    req.insert_header("accept-encoding", "gzip, br")
        .expect("ae");
    let key = CacheKey::from_request(&req, "shop.example").expect("cacheable");

    // One stored page of 16 KiB.
    let Lookup::Ready(Resolved::Miss(Some(mut fill))) =
        shield.lookup(route, &key, &req.headers, now)
    else {
        panic!("first lookup leads");
    };
    let mut resp = ResponseHeader::build(200, None).expect("resp");
    resp.insert_header("cache-control", "public, max-age=600")
        .expect("cc");
    resp.insert_header("content-type", "text/html; charset=utf-8")
        .expect("ct");
    resp.insert_header("vary", "Accept-Encoding").expect("vary");
    fill.header(&resp, now).expect("cacheable");
    fill.chunk(&vec![b'x'; 16 * 1024]);
    fill.finish().expect("stored");

    c.bench_function("shield/key_from_request", |b| {
        b.iter(|| CacheKey::from_request(black_box(&req), "shop.example"))
    });
    c.bench_function("shield/lookup_hit", |b| {
        b.iter(
            || match shield.lookup(route, black_box(&key), &req.headers, now) {
                Lookup::Ready(Resolved::Hit(e)) => e,
                _ => panic!("hit expected"),
            },
        )
    });
    c.bench_function("shield/hit_end_to_end", |b| {
        b.iter(|| {
            let k = CacheKey::from_request(black_box(&req), "shop.example").expect("key");
            match shield.lookup(route, &k, &req.headers, now) {
                Lookup::Ready(Resolved::Hit(e)) => e.response_header(now, CacheStatus::Hit),
                _ => panic!("hit expected"),
            }
        })
    });
    c.bench_function("shield/admit_and_release", |b| {
        b.iter(|| drop(shield.admit(route, now)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
