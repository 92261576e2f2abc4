//! `[[routes]]` entries and `[upstreams.NAME]` pools as typed values.

use std::fmt;

use super::room::{Table, Value};

/// One `[[routes]]` entry: a path prefix to a pool (`shop` unless told), of a kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub keys: Table,
}

impl Route {
    /// `path` to the `shop` pool, of the default kind.
    pub fn new(path: &str) -> Self {
        Self {
            keys: Table::new().set("path", path).set("upstream", "shop"),
        }
    }

    /// `kind`: `catalog`, `essential`, `optional`, `bypass`.
    #[must_use]
    pub fn kind(self, kind: &str) -> Self {
        self.set("kind", kind)
    }

    /// To the pool `name` instead.
    #[must_use]
    pub fn upstream(self, name: &str) -> Self {
        self.set("upstream", name)
    }

    /// Any other key (`cache_ttl`, `stale_if_error`, `latency_budget`, ...).
    #[must_use]
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.keys = self.keys.set(key, value);
        self
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n[[routes]]\n{}", self.keys)
    }
}
