//! Reading the kit's files: the dashboard's queries, the alert rules, the metric
//! names they select, and recording rules for promtool.

use std::collections::BTreeSet;

use serde_json::{json, Value as Json};

use crate::support as d;

/// Grafana's variables as promtool sees them; `${x}` forms before `$x`.
const DASHBOARD_VARIABLES: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
    ("${job}", "quotad"),
    ("$job", "quotad"),
    ("${instance}", ".*"),
    ("$instance", ".*"),
];

/// The absolute path of a file of the kit, for promtool.
pub fn path(rel: &str) -> String {
    d::repo_file(rel).display().to_string()
}

/// Every PromQL expression of the dashboard's panels, as written (variables included).
pub fn dashboard_queries() -> Vec<String> {
    fn walk(node: &Json, out: &mut Vec<String>) {
        match node {
            Json::Object(map) => {
                if let Some(Json::Array(targets)) = map.get("targets") {
                    out.extend(
                        targets
                            .iter()
                            .filter_map(|t| t["expr"].as_str().map(str::to_owned)),
                    );
                }
                map.values().for_each(|v| walk(v, out));
            }
            Json::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard()["panels"], &mut out);
    out
}

pub fn dashboard() -> Json {
    serde_json::from_str(&d::read("deploy/grafana/quotad.json")).expect("the dashboard is JSON")
}

/// `expr` with Grafana's variables replaced by values promtool accepts.
pub fn substituted(expr: &str) -> String {
    let out = DASHBOARD_VARIABLES
        .iter()
        .fold(expr.to_owned(), |e, (var, value)| e.replace(var, value));
    assert!(
        !out.contains('$'),
        "a variable is left unsubstituted in {out}"
    );
    out
}

/// `(alert name, expression)` of every rule in alerts.yml.
pub fn alert_rules() -> Vec<(String, String)> {
    let rules = d::yaml("deploy/prometheus/alerts.yml");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .map(|r| {
            let name = r["alert"].as_str().expect("every rule is an alert");
            (
                name.to_owned(),
                r["expr"].as_str().expect("expr").to_owned(),
            )
        })
        .collect()
}

/// Metric names (`quotad_…`) an expression selects.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.match_indices("quotad_")
        .filter(|(i, _)| {
            let before = expr[..*i].chars().next_back();
            !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        })
        .map(|(i, _)| {
            expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// The family of a series name: a histogram's `_bucket`, `_sum` and `_count` are one.
pub fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Every metric name the dashboard and the alerts select.
pub fn used_metric_names() -> BTreeSet<String> {
    let dashboard = dashboard_queries().into_iter();
    let alerts = alert_rules().into_iter().map(|(_, expr)| expr);
    dashboard
        .chain(alerts)
        .flat_map(|e| metric_names(&e))
        .collect()
}

/// A rules file that records each of `exprs`, for `promtool check rules`.
pub fn recording_rules(exprs: &[String]) -> String {
    let rules: Vec<Json> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"record": format!("dashboard:query_{i}"), "expr": e}))
        .collect();
    serde_yaml_ng::to_string(&json!({"groups": [{"name": "dashboard", "rules": rules}]}))
        .expect("rules serialize")
}

/// Checks `rules` (YAML text) with promtool from a temp file.
pub fn check_rules(rules: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dashboard_rules.yml");
    std::fs::write(&file, rules).expect("write rules");
    d::promtool(&["check", "rules", &file.display().to_string()])
}
