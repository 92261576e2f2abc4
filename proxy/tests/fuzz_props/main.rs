//! Bad input, property-driven: byte fuzzing of every parser a client or an operator can reach,
//! bounded so it runs in `make test` (a few seconds). Token decoding is fuzzed in
//! `waitroom/tests/props.rs`; the raw-HTTP corpus against a running node is in `hostile.rs`.
//!
//! | parser | who can reach it | property |
//! |---|---|---|
//! | `http_util::cookie`, `strip_own_cookies` | any client (`Cookie`) | never panics; the origin never gets an `fg_` cookie |
//! | `http_util::client_ip` | any client (`X-Forwarded-For`) | only a trusted peer's chain is believed |
//! | `http_util::query_param`, `percent_encode` | any client | never panics; encoding round-trips |
//! | `http_util::canonical_path`, `valid_host` | any client | never panics; canonical paths are normal forms |
//! | `http_util::safe_return_path`, `escape_html` | any client (`return=`), merchants | no open redirect; no markup |
//! | `Config::parse` | operators (files, reload) | never panics; every refusal is one line `FILE: key: reason` |
//! | `bot::parse_solution`, `Signer::verify_solution` | any client (`POST /.flashgate/challenge`) | never panics; only our own challenges verify |
//! | `admin::apply_patch` | operators (`PATCH /api/rooms/ID`) | never panics; accepted values respect the limits |
//! | `events::parse_feedback` | shoppers (`POST /.flashgate/feedback`) | never panics; published text is clean |

mod admin;
mod client_input;
mod config;
mod pow;

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use flashgate::admin::{apply_patch, PatchError};
use flashgate::bot::{self, ChallengeError, Signer};
use flashgate::config::Config;
use flashgate::events::{parse_feedback, EventKind};
use flashgate::http_util::{
    canonical_path, client_ip, cookie, escape_html, percent_encode, query_param, safe_return_path,
    strip_own_cookies, valid_host,
};
use ipnet::IpNet;
use proptest::prelude::*;
use serde_json::Value;
use waitroom::{Overrides, UnixMillis};

const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

/// One of `words`, each as likely as the others (what `prop_oneof![Just(..), ..]` of them
/// draws); weight it by their number beside other strategies.
fn word(words: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    proptest::sample::select(words).prop_map(str::to_owned)
}

/// `n` cases, or `FLASHGATE_FUZZ_CASES` of them for a longer local run
/// (`FLASHGATE_FUZZ_CASES=100000 cargo test --release -p flashgate --test fuzz_props`).
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("FLASHGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        // Shrinking a config mutation can take long; the first failure is informative enough.
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}
