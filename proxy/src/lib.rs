//! Flashgate: a flash-sale admission and virtual waiting-room edge proxy on Pingora.
//!
//! | concern | where |
//! |---|---|
//! | config file → validated settings, error messages with keys | [`config`] |
//! | the Pingora `ProxyHttp` adapter, a pipeline: request, credentials, admission, replies, upstream | [`gate`] |
//! | which route and which room a request falls in | [`routing`] |
//! | bot defence: proof of work, limits, scoring, tarpit | [`bot`] |
//! | the GCRA and window-rate steps (bot limits, the store-outage floor rate) | [`gcra`] |
//! | node-local room views, controller ticks | [`rooms`] |
//! | queue/admission event stream (Redis Streams, JSON lines) | [`events`] |
//! | origin pools and health checks | [`upstream`] |
//! | origin shield: catalog cache, coalescing, stale, shedding, origin-aware admission | [`shield`] |
//! | waiting page, closed page, status JSON | [`pages`] |
//! | cookies, client address, escaping | [`http_util`] |
//! | `flashgate check` for the Grafana dashboard and alert rules | [`monitoring`] |
//! | assembling the Pingora server | [`server`] |
//! | the TLS listener's certificate (rustls), swapped on reload | [`tls`] |
//! | the Redis store, ticket batching, circuit breaker | [`store`] |
//! | the demo shop origin | [`shop`] |
//! | `flashgate demo` | [`demo`] |
//!
//! The admission decisions themselves live in the `waitroom` crate.

// One audited exception: `gate::push` duplicates a socket descriptor Pingora owns (the std
// `BorrowedFd::borrow_raw` call), to hold an event stream without Pingora's per-connection state.
#![deny(unsafe_code)]

// `pub` only where the `flashgate` binary, the integration tests, the benches or another crate
// of the workspace use the module; the rest is the crate's own.
pub mod admin;
pub mod admin_client;
pub mod bot;
pub mod clock;
pub mod config;
pub mod demo;
pub mod events;
pub(crate) mod gate;
pub mod gcra;
pub mod http_util;
pub mod metrics;
pub mod monitoring;
pub(crate) mod node;
pub(crate) mod pages;
pub(crate) mod rooms;
pub(crate) mod routing;
pub mod server;
pub mod shield;
/// The demo shop lives in its own crate (`demo-shop/`); re-exported for `flashgate demo` and
/// `flashgate shop`.
pub use demo_shop as shop;
pub mod store;
pub(crate) mod tls;
pub(crate) mod upstream;
