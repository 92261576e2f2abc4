//! The one Prometheus text parser of the tests.

use std::collections::BTreeSet;
use std::fmt;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `name{labels}` as written.
    pub series: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// Whether the sample has every one of `labels`.
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }
}

/// A metrics page, parsed (the text is kept for messages and substring checks).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `a="x",b="y"` into pairs (values may hold commas and escaped quotes).
fn labels(inner: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = inner;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').trim().to_owned(), value));
        rest = &after[end..];
    }
    out
}

/// One sample line, or `None` for comments, blank lines and lines that are no sample.
fn sample(line: &str) -> Option<Sample> {
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, labels(rest.strip_suffix('}').unwrap_or(rest))),
        None => (series, Vec::new()),
    };
    Some(Sample {
        series: series.to_owned(),
        name: name.to_owned(),
        labels,
        value,
    })
}

impl Metrics {
    /// Every sample of `text`; lines that are not samples are passed over.
    pub fn parse(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            samples: text.lines().filter_map(sample).collect(),
        }
    }

    /// Parses strictly enough to catch a broken page: every sample line is
    /// `flashgate_name{labels} value` with a number, every family has a TYPE (counter, gauge or
    /// histogram) before its samples. Panics on the first line that is not so.
    pub fn parse_strict(text: &str) -> Self {
        let mut typed = BTreeSet::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let name = parts.next().expect("TYPE name");
                let kind = parts.next().expect("TYPE kind");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                typed.insert(name.to_owned());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            let _: f64 = value.parse().unwrap_or_else(|_| panic!("number: {line}"));
            let name = series.split('{').next().unwrap_or("");
            assert!(name.starts_with("flashgate_"), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| typed.contains(*b)))
                .unwrap_or(name);
            assert!(typed.contains(family), "sample before its TYPE: {line}");
            if let Some(labels) = series.strip_prefix(name) {
                assert!(
                    labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                    "{line}"
                );
            }
        }
        Self::parse(text)
    }

    /// The value of the series written exactly `series` (`name{a="x"}`), if present.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.series == series)
            .map(|s| s.value)
    }

    /// [`get`](Self::get), 0 when absent (a counter not yet incremented).
    pub fn value(&self, series: &str) -> f64 {
        self.get(series).unwrap_or(0.0)
    }

    /// The first sample of `name` with every one of `labels`.
    pub fn first(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.has(labels))
            .map(|s| s.value)
    }

    /// The sum of the samples of `name` with every one of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && s.has(labels))
            .map(|s| s.value)
            .sum()
    }

    /// Whether the text contains `needle` (e.g. a whole sample line).
    pub fn contains(&self, needle: &str) -> bool {
        self.text.contains(needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_and_lookups() {
        let m = Metrics::parse(
            "# HELP flashgate_x x\n# TYPE flashgate_x counter\n\
             flashgate_x{room=\"a\",result=\"ok\"} 3\nflashgate_x{room=\"b\",result=\"ok\"} 4\n\
             flashgate_y 1.5\nflashgate_z{msg=\"a,b=\\\"c\\\"\"} 2\n",
        );
        assert_eq!(m.get("flashgate_x{room=\"a\",result=\"ok\"}"), Some(3.0));
        assert_eq!(m.value("flashgate_x{room=\"c\"}"), 0.0);
        assert_eq!(m.sum("flashgate_x", &[("result", "ok")]), 7.0);
        assert_eq!(m.first("flashgate_x", &[("room", "b")]), Some(4.0));
        assert_eq!(m.first("flashgate_y", &[]), Some(1.5));
        assert_eq!(m.first("flashgate_z", &[("msg", "a,b=\"c\"")]), Some(2.0));
        assert_eq!(m.first("flashgate_x", &[("room", "c")]), None);
    }

    #[test]
    #[should_panic(expected = "sample before its TYPE")]
    fn strict_parsing_wants_a_type_first() {
        Metrics::parse_strict("flashgate_x 1\n");
    }
}
