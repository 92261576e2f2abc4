//! The base every config unit test starts from — the one test key and the `shop` pool — so a
//! test writes only the section it is about, and its rooms as [`Room`] values from the test kit
//! (`testkit::config`). Used by the tests of `config/{bot,shield,event_stream}`, `rooms` and
//! `shield`.

use waitroom::UnixMillis;

use super::{Config, ConfigError};

pub(crate) use testkit::config::{Room, Table};

/// The time fixtures are parsed at (relative sale times count from it).
pub(crate) const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

/// `[keys]` with the one test key.
pub(crate) const KEYS: &str = r#"
[keys]
active = 1
[[keys.key]]
id = 1
secret = "test-secret-test-secret-test-secret-0123"
"#;

/// `[upstreams.shop]` with the one server `addr` (nothing connects in a unit test).
pub(crate) fn shop_pool(addr: &str) -> String {
    format!("\n[upstreams.shop]\nservers = [\"{addr}\"]\n")
}

/// A `[[routes]]` entry to the `shop` pool: `path`, of `kind` (`None`: the default kind), then
/// `more` lines.
pub(crate) fn route(path: &str, kind: Option<&str>, more: &str) -> String {
    let kind = kind
        .map(|k| format!("kind = \"{k}\"\n"))
        .unwrap_or_default();
    format!("\n[[routes]]\npath = \"{path}\"\nupstream = \"shop\"\n{kind}{more}\n")
}

/// [`KEYS`], the `shop` pool on 127.0.0.1:3000, then `rest`.
pub(crate) fn with_shop(rest: &str) -> String {
    format!("{KEYS}{}{rest}", shop_pool("127.0.0.1:3000"))
}

/// `text`, named `name`, parsed at [`NOW`]; panics with the error.
pub(crate) fn parse(name: &str, text: &str) -> Config {
    Config::parse(name, text, NOW).unwrap_or_else(|e| panic!("{e}"))
}

/// The error `text` (named `name`) is refused with at [`NOW`].
pub(crate) fn refuse(name: &str, text: &str) -> ConfigError {
    match Config::parse(name, text, NOW) {
        Ok(_) => panic!("{name}: accepted:\n{text}"),
        Err(e) => e,
    }
}
