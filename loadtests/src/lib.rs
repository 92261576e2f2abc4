//! Load-test tools for Flashgate.
//!
//! - [`crowd`]: the flash-sale crowd simulator behind the `crowd` binary: scenario files,
//!   simulated shoppers and bots, the checks a run must pass, the JSON/Markdown/SVG report.
//! - [`http1`]: a minimal keep-alive HTTP/1.1 client, used by the `rate` binary (an open-loop
//!   fixed-rate load generator) so that the generator costs as little CPU as possible on the
//!   machine it shares with the proxy.
//! - [`target`]: the loopback guard every tool applies before sending a single request.
//!
//! Every tool here is bounded: a run stops by itself after its maximum duration or request
//! count, and refuses any host but 127.0.0.0/8, `localhost` and `[::1]` unless it is given
//! `--allow-remote` explicitly.

#![forbid(unsafe_code)]

pub mod crowd;
pub mod http1;
pub mod rng;
pub mod target;
