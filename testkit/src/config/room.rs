//! `[[rooms]]` tables as typed values: a room is its id, what it protects, its rate and its
//! capacity, plus the keys a test varies — rendered as the TOML a node reads. Only what is set
//! is written, so every other key keeps the product's default.
//!
//! ```
//! use testkit::config::{Bot, Room};
//!
//! let room = Room::new("hype").rate(600).capacity(1000).poll("1s")
//!     .bot(Bot::enforce().always(8).max_difficulty(12));
//! let text = room.to_string();
//! assert!(text.contains("new_users_per_minute = 600\n"));
//! assert!(text.contains("[rooms.bot]\nmode = \"enforce\"\nchallenge = \"always\"\ndifficulty = 8\n"));
//! ```

use std::fmt;

/// A TOML value, written as TOML writes it (strings quoted and escaped).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A list of strings.
    List(Vec<String>),
    /// Written as given (an inline table, a value a test wants malformed).
    Raw(String),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Self::Float(f)
    }
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Self {
                Self::Int(i64::from(n))
            }
        }
    )*};
}
int_value!(u8, u16, u32, i32, i64);

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Self::Int(i64::try_from(n).expect("a TOML integer"))
    }
}

impl<const N: usize> From<[&str; N]> for Value {
    fn from(list: [&str; N]) -> Self {
        Self::List(list.iter().map(|s| (*s).to_owned()).collect())
    }
}

impl From<&[&str]> for Value {
    fn from(list: &[&str]) -> Self {
        Self::List(list.iter().map(|s| (*s).to_owned()).collect())
    }
}

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => f.write_str(&quote(s)),
            Self::Int(n) => write!(f, "{n}"),
            Self::Float(x) => write!(f, "{x:?}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::List(l) => {
                let items: Vec<String> = l.iter().map(|s| quote(s)).collect();
                write!(f, "[{}]", items.join(", "))
            }
            Self::Raw(r) => f.write_str(r),
        }
    }
}

/// Setters of one key each: `name(arg)` sets `key` to `arg`.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($arg:ident: $t:ty) => $key:literal;)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub fn $name(self, $arg: $t) -> Self {
            self.set($key, $arg)
        }
    )*};
}

/// The keys of one table, in the order they were first set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table(Vec<(String, Value)>);

impl Table {
    /// A table without keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (in its place if it was set before).
    #[must_use]
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.put(key, value.into());
        self
    }

    fn put(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.0 {
            writeln!(f, "{k} = {v}")?;
        }
        Ok(())
    }
}

/// A room's bot defence (`[rooms.bot]` with its `limits` and `thresholds`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bot {
    pub keys: Table,
    pub limits: Table,
    pub thresholds: Table,
}

impl Bot {
    /// `mode = "enforce"`.
    pub fn enforce() -> Self {
        Self::default().set("mode", "enforce")
    }

    /// `mode = "shadow"`: counts what enforce would do, changes nothing.
    pub fn shadow() -> Self {
        Self::default().set("mode", "shadow")
    }

    /// `challenge = "always"` at `difficulty` leading zero bits.
    #[must_use]
    pub fn always(self, difficulty: u8) -> Self {
        self.challenge("always").set("difficulty", difficulty)
    }

    setters! {
        /// `challenge`: `off`, `suspicious` or `always`.
        challenge(when: &str) => "challenge";
        /// The most leading zero bits the difficulty rises to under pressure.
        max_difficulty(bits: u8) => "max_difficulty";
    }

    /// `pressure_joins_per_second = 0`: the difficulty never rises with the arrival rate.
    #[must_use]
    pub fn no_pressure(self) -> Self {
        self.set("pressure_joins_per_second", 0)
    }

    /// Any other key of `[rooms.bot]`.
    #[must_use]
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.keys.put(key, value.into());
        self
    }

    /// A key of `[rooms.bot.limits]`.
    #[must_use]
    pub fn limit(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.limits.put(key, value.into());
        self
    }

    /// A key of `[rooms.bot.thresholds]`.
    #[must_use]
    pub fn threshold(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.thresholds.put(key, value.into());
        self
    }

    /// The three score thresholds: challenge, tarpit and block at these scores.
    #[must_use]
    pub fn scores(self, challenge_at: u32, tarpit_at: u32, block_at: u32) -> Self {
        self.threshold("challenge_at", challenge_at)
            .threshold("tarpit_at", tarpit_at)
            .threshold("block_at", block_at)
    }
}

/// One `[[rooms]]` table. [`Room::new`] protects the origin's `/echo` at 60 new shoppers a
/// minute and 100 active; the builder methods set the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct Room {
    pub keys: Table,
    /// Sub-tables (`page`, `origin_aware`, `event_stream`, `bot`, ...) by name, in order.
    pub tables: Vec<(String, Table)>,
    /// `[[rooms.events]]` entries.
    pub events: Vec<Table>,
}

impl Room {
    /// Room `id` over `/echo`: 60 new shoppers a minute, 100 active.
    pub fn new(id: &str) -> Self {
        Self {
            keys: Table::new()
                .set("id", id)
                .set("paths", ["/echo"])
                .set("new_users_per_minute", 60)
                .set("total_active_users", 100),
            tables: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The room's id.
    pub fn id(&self) -> &str {
        match self.keys.get("id") {
            Some(Value::Str(id)) => id,
            _ => "",
        }
    }

    /// Any key of the room's table.
    #[must_use]
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.keys.put(key, value.into());
        self
    }

    /// Leaves `key` out (the product's default, or a required key missing).
    #[must_use]
    pub fn unset(mut self, key: &str) -> Self {
        self.keys.remove(key);
        self
    }

    setters! {
        /// The path prefixes it protects.
        paths(paths: &[&str]) => "paths";
        /// The hosts it covers.
        hosts(hosts: &[&str]) => "hosts";
        /// `new_users_per_minute`.
        rate(per_minute: u32) => "new_users_per_minute";
        /// `total_active_users`.
        capacity(active: u32) => "total_active_users";
        /// `poll_interval`, e.g. `"1s"`.
        poll(every: &str) => "poll_interval";
        /// `queueing_status_code` of the waiting page.
        status_code(code: u16) => "queueing_status_code";
        /// The message on the waiting page.
        message(text: &str) => "message";
    }

    /// `abandon_after` (a shopper who stops polling this long loses the place) and
    /// `claim_window` (an admitted shopper has this long to come in).
    #[must_use]
    pub fn windows(self, abandon_after: &str, claim_window: &str) -> Self {
        self.set("abandon_after", abandon_after)
            .set("claim_window", claim_window)
    }

    /// While the store is unreachable, each node admits `per_minute` new shoppers on its own
    /// (`on_store_error = "admit_at_floor_rate"`).
    #[must_use]
    pub fn floor_rate(self, per_minute: u32) -> Self {
        self.set("on_store_error", "admit_at_floor_rate")
            .set("floor_rate_per_minute", per_minute)
    }

    /// A key of the sub-table `[rooms.NAME]` (created empty by [`Room::table`]).
    #[must_use]
    pub fn table_key(mut self, name: &str, key: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        match self.tables.iter_mut().find(|(n, _)| n == name) {
            Some((_, t)) => t.put(key, value),
            None => self
                .tables
                .push((name.to_owned(), Table::new().set(key, value))),
        }
        self
    }

    /// The sub-table `[rooms.NAME]` as a whole (e.g. an empty `origin_aware` for its defaults).
    #[must_use]
    pub fn table(mut self, name: &str, table: Table) -> Self {
        self.tables.retain(|(n, _)| n != name);
        self.tables.push((name.to_owned(), table));
        self
    }

    /// A key of the waiting page's branding (`[rooms.page]`).
    #[must_use]
    pub fn page(self, key: &str, value: &str) -> Self {
        self.table_key("page", key, value)
    }

    /// Bot defence.
    #[must_use]
    pub fn bot(self, bot: Bot) -> Self {
        let Bot {
            keys,
            limits,
            thresholds,
        } = bot;
        let mut room = self.table("bot", keys);
        for (name, t) in [("bot.limits", limits), ("bot.thresholds", thresholds)] {
            if !t.is_empty() {
                room = room.table(name, t);
            }
        }
        room
    }

    /// One sale window (`[[rooms.events]]`).
    #[must_use]
    pub fn event(mut self, event: Table) -> Self {
        self.events.push(event);
        self
    }
}

impl fmt::Display for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n[[rooms]]\n{}", self.keys)?;
        for (name, t) in &self.tables {
            write!(f, "[rooms.{name}]\n{t}")?;
        }
        for e in &self.events {
            write!(f, "[[rooms.events]]\n{e}")?;
        }
        Ok(())
    }
}

/// Several rooms as one TOML text.
pub fn rooms(rooms: &[Room]) -> String {
    rooms.iter().map(Room::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_only_what_is_set_in_order() {
        let r = Room::new("drop")
            .rate(240)
            .poll("1s")
            .windows("60s", "10s")
            .message("<b>\"big\" drop</b>")
            .bot(Bot::enforce().always(4).scores(30, 900, 1000));
        let text = r.to_string();
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        let expected = [
            "[[rooms]]",
            "id = \"drop\"",
            "paths = [\"/echo\"]",
            "new_users_per_minute = 240",
            "total_active_users = 100",
            "poll_interval = \"1s\"",
            "abandon_after = \"60s\"",
            "claim_window = \"10s\"",
            r#"message = "<b>\"big\" drop</b>""#,
            "[rooms.bot]",
            "mode = \"enforce\"",
            "challenge = \"always\"",
            "difficulty = 4",
            "[rooms.bot.thresholds]",
            "challenge_at = 30",
            "tarpit_at = 900",
            "block_at = 1000",
        ];
        assert_eq!(lines, expected);
    }

    #[test]
    fn values_are_toml() {
        assert_eq!(Value::from(0.25).to_string(), "0.25");
        assert_eq!(Value::from(1.0).to_string(), "1.0");
        assert_eq!(Value::from("a\\b").to_string(), r#""a\\b""#);
        assert_eq!(Value::from(["/a", "/b"]).to_string(), r#"["/a", "/b"]"#);
        let r = Room::new("x").unset("paths").set("paths", ["/"]);
        assert!(r.to_string().ends_with("paths = [\"/\"]\n"));
    }
}
