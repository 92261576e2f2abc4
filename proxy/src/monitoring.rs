//! `flashgate check` for the shipped monitoring files (`config/monitoring/`): a Grafana
//! dashboard (`.json`) and Prometheus alert rules (`.yml`). Each must parse, and every
//! `flashgate_*` series it names must be one this process exports (a histogram's `_bucket`,
//! `_sum` and `_count` series count), so a renamed metric cannot leave a panel blank or an
//! alert silently never firing.
//!
//! Errors read like config errors: `FILE: unknown metric NAME`, `FILE: KEY: reason`.

use std::path::Path;

use serde_json::Value;

use crate::metrics::MetricNames;

/// Why a monitoring file was refused: always names the file, and the key or metric at fault.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct CheckError {
    pub file: String,
    pub problem: Problem,
}

/// What is wrong with a monitoring file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error("not JSON: {0}")]
    Json(serde_json::Error),
    #[error("not YAML: {0}")]
    Yaml(serde_yaml::Error),
    /// A key of the file and why it is wrong.
    #[error("{key}: {why}")]
    Key { key: String, why: &'static str },
    #[error("unknown metric {0}")]
    UnknownMetric(String),
}

fn key(key: impl Into<String>, why: &'static str) -> Problem {
    Problem::Key {
        key: key.into(),
        why,
    }
}

/// What a checked file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Distinct `flashgate_*` series referenced.
    pub metrics: usize,
    /// Alert or recording rules (YAML) or panels (JSON).
    pub items: usize,
    /// `rules` or `panels`.
    pub what: &'static str,
}

/// Whether `path` is a monitoring file this check understands (by extension).
pub fn is_monitoring_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("json" | "yml" | "yaml")
    )
}

/// Parses `path` and checks every metric it names against `known`.
pub fn check_file(path: &Path, known: &MetricNames) -> Result<Checked, CheckError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => check_text(&file, &text, known),
        Err(e) => Err(CheckError {
            file,
            problem: Problem::Read(e),
        }),
    }
}

/// [`check_file`] on text; `file` names it in messages and its extension picks the format.
pub fn check_text(file: &str, text: &str, known: &MetricNames) -> Result<Checked, CheckError> {
    check_doc(file, text, known).map_err(|problem| CheckError {
        file: file.to_owned(),
        problem,
    })
}

fn check_doc(file: &str, text: &str, known: &MetricNames) -> Result<Checked, Problem> {
    let (doc, items, what) = if file.ends_with(".json") {
        let doc: Value = serde_json::from_str(text).map_err(Problem::Json)?;
        let panels = count_panels(&doc);
        if panels == 0 {
            return Err(key("panels", "a dashboard needs at least one panel"));
        }
        (doc, panels, "panels")
    } else {
        let doc: Value = serde_yaml::from_str(text).map_err(Problem::Yaml)?;
        let rules = check_rules(&doc)?;
        (doc, rules, "rules")
    };
    let mut names = std::collections::BTreeSet::new();
    walk_strings(&doc, &mut |s| {
        for name in metric_names(s) {
            names.insert(name.to_owned());
        }
    });
    if let Some(bad) = names.iter().find(|n| !known.knows(n)) {
        return Err(Problem::UnknownMetric(bad.clone()));
    }
    Ok(Checked {
        metrics: names.len(),
        items,
        what,
    })
}

/// Prometheus rule files: `groups[i].rules[j]` each with an `expr` and an `alert` or a
/// `record`. Returns the number of rules.
fn check_rules(doc: &Value) -> Result<usize, Problem> {
    let groups = doc
        .get("groups")
        .and_then(Value::as_array)
        .ok_or_else(|| key("groups", "a Prometheus rule file needs a list of groups"))?;
    let mut n = 0;
    for (i, g) in groups.iter().enumerate() {
        if g.get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(key(format!("groups[{i}].name"), "missing"));
        }
        let rules = g
            .get("rules")
            .and_then(Value::as_array)
            .ok_or_else(|| key(format!("groups[{i}].rules"), "missing"))?;
        for (j, r) in rules.iter().enumerate() {
            let key = format!("groups[{i}].rules[{j}]");
            if r.get("expr")
                .and_then(Value::as_str)
                .is_none_or(|e| e.trim().is_empty())
            {
                return Err(self::key(format!("{key}.expr"), "missing"));
            }
            if r.get("alert").or_else(|| r.get("record")).is_none() {
                return Err(self::key(key, "needs `alert` or `record`"));
            }
            n += 1;
        }
    }
    Ok(n)
}

fn count_panels(doc: &Value) -> usize {
    doc.get("panels").and_then(Value::as_array).map_or(0, |ps| {
        ps.iter()
            .map(|p| 1 + count_panels(p)) // rows nest panels
            .sum()
    })
}

fn walk_strings(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| walk_strings(x, f)),
        Value::Object(o) => o.values().for_each(|x| walk_strings(x, f)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The `flashgate_*` identifiers in a string (PromQL, a legend, a description).
pub fn metric_names(s: &str) -> Vec<&str> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    for (i, _) in s.match_indices("flashgate_") {
        let before = s[..i].chars().next_back();
        if before.is_some_and(is_ident) {
            continue; // part of a longer identifier
        }
        let len = s[i..].find(|c: char| !is_ident(c)).unwrap_or(s.len() - i);
        if len > "flashgate_".len() {
            out.push(&s[i..i + len]); // not the bare prefix of `flashgate_*`
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check's answer as the command prints it.
    fn check(file: &str, text: &str, known: &MetricNames) -> Result<Checked, String> {
        check_text(file, text, known).map_err(|e| e.to_string())
    }
    use crate::metrics::Metrics;

    fn known() -> MetricNames {
        (*Metrics::new().names).clone()
    }

    #[test]
    fn finds_names_in_promql() {
        assert_eq!(
            metric_names(
                "sum(rate(flashgate_requests_total{decision=\"queued\"}[5m])) / x_flashgate_y"
            ),
            vec!["flashgate_requests_total"]
        );
        assert_eq!(
            metric_names("histogram_quantile(0.95, flashgate_upstream_seconds_bucket)"),
            vec!["flashgate_upstream_seconds_bucket"]
        );
        assert!(metric_names("every `flashgate_*` metric").is_empty());
    }

    #[test]
    fn rules_are_checked() {
        let good = "groups:\n  - name: flashgate\n    rules:\n      - alert: A\n        expr: rate(flashgate_store_errors_total[5m]) > 0\n";
        let c = check("a.yml", good, &known()).expect("good rules");
        assert_eq!(
            c,
            Checked {
                metrics: 1,
                items: 1,
                what: "rules"
            }
        );
        let bogus = good.replace("store_errors_total", "store_errorz_total");
        assert_eq!(
            check("a.yml", &bogus, &known()),
            Err("a.yml: unknown metric flashgate_store_errorz_total".into())
        );
        let no_expr = "groups:\n  - name: g\n    rules:\n      - alert: A\n";
        assert_eq!(
            check("a.yml", no_expr, &known()),
            Err("a.yml: groups[0].rules[0].expr: missing".into())
        );
        assert!(check("a.yml", "groups: [", &known())
            .expect_err("syntax")
            .starts_with("a.yml: not YAML"));
    }

    #[test]
    fn dashboards_are_checked() {
        let good = r#"{"panels":[{"type":"row","panels":[{"targets":[{"expr":"flashgate_active_users"}]}]}]}"#;
        let c = check("d.json", good, &known()).expect("good dashboard");
        assert_eq!(
            c,
            Checked {
                metrics: 1,
                items: 2,
                what: "panels"
            }
        );
        assert_eq!(
            check("d.json", r#"{"panels":[]}"#, &known()),
            Err("d.json: panels: a dashboard needs at least one panel".into())
        );
        assert_eq!(
            check("d.json", &good.replace("active_users", "actives"), &known()),
            Err("d.json: unknown metric flashgate_actives".into())
        );
    }
}
