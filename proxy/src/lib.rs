//! Flashgate: a flash-sale admission and virtual waiting-room edge proxy on Pingora.
//!
//! | concern | where |
//! |---|---|
//! | config file → validated settings, error messages with keys | [`config`] |
//! | the Pingora `ProxyHttp` adapter: routes, rooms, tokens, pages | [`gate`] |
//! | node-local room views, controller ticks | [`rooms`] |
//! | origin pools and health checks | [`upstream`] |
//! | waiting page, closed page, status JSON | [`pages`] |
//! | cookies, client address, escaping | [`http_util`] |
//! | assembling the Pingora server | [`server`] |
//! | the demo shop origin | [`shop`] |
//! | `flashgate demo` | [`demo`] |
//!
//! The admission decisions themselves live in the `waitroom` crate.

#![forbid(unsafe_code)]

pub mod admin;
pub mod clock;
pub mod config;
pub mod demo;
pub mod gate;
pub mod http_util;
pub mod metrics;
pub mod pages;
pub mod rooms;
pub mod server;
pub mod shop;
pub mod upstream;
