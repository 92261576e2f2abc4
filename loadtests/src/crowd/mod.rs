//! The flash-sale crowd simulator (the `crowd` binary).
//!
//! A scenario ([`scenario`]) describes an arrival curve, how shoppers and bots behave, and what
//! the run must show. [`run::execute`] releases the crowd against one or several Flashgate
//! nodes, [`analysis::analyse`] turns what each simulated shopper observed into figures and
//! checks, and [`report`] and [`plots`] write `report.md` and SVG plots beside `result.json`.
//! [`spawn`] starts a shop, Redis and nodes for a self-contained run (`crowd --spawn`).

pub mod analysis;
pub mod arrivals;
pub mod jar;
pub mod metrics;
pub mod plots;
pub mod report;
pub mod run;
pub mod scenario;
pub mod shopper;
pub mod spawn;
pub mod token;
