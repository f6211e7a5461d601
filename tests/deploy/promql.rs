//! promtool on the alert rules, their unit tests, every dashboard query and the
//! Prometheus config.

use std::collections::BTreeSet;

use serde_json::{json, Value as Json};

use crate::kit::{
    alert_rules, check_rules, dashboard, dashboard_queries, family, metric_names, path,
    recording_rules, substituted,
};
use crate::support as d;

#[test]
fn alert_rules_pass_promtool_check() {
    let out = d::promtool_ok(&["check", "rules", &path("deploy/prometheus/alerts.yml")]);
    let expected = format!("SUCCESS: {} rules found", alert_rules().len());
    assert!(out.contains(&expected), "{out}");
}

#[test]
fn alert_unit_tests_pass_promtool_test_rules() {
    let out = d::promtool_ok(&["test", "rules", &path("deploy/prometheus/alerts_test.yml")]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() {
    let tests = d::yaml("deploy/prometheus/alerts_test.yml");
    let cases: Vec<(String, bool)> = tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|t| {
            t["alert_rule_test"]
                .as_sequence()
                .expect("alert_rule_test")
                .iter()
        })
        .map(|c| {
            let fires = !c["exp_alerts"]
                .as_sequence()
                .expect("exp_alerts")
                .is_empty();
            (
                c["alertname"].as_str().expect("alertname").to_owned(),
                fires,
            )
        })
        .collect();
    for (alert, _) in alert_rules() {
        for fires in [true, false] {
            assert!(
                cases.contains(&(alert.clone(), fires)),
                "{alert} has no unit test where it {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
}

#[test]
fn every_dashboard_query_passes_promtool_as_a_recording_rule() {
    let queries: Vec<String> = dashboard_queries().iter().map(|q| substituted(q)).collect();
    let out = check_rules(&recording_rules(&queries));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!("SUCCESS: {} rules found", queries.len());
    assert!(stdout.contains(&expected), "{stdout}");
}

#[test]
fn a_broken_query_fails_the_same_check() {
    let broken = vec!["sum by (tier) (rate(quotad_decisions_total[1m])".to_owned()];
    let out = check_rules(&recording_rules(&broken));
    assert!(!out.status.success(), "promtool accepted {broken:?}");
}

#[test]
fn every_dashboard_query_is_scoped_by_the_job_variable() {
    let variables: Vec<Json> = dashboard()["templating"]["list"]
        .as_array()
        .expect("templating")
        .clone();
    let names: BTreeSet<&str> = variables
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["datasource", "job", "instance"]));
    let instance = variables.iter().find(|v| v["name"] == "instance").unwrap();
    assert_eq!(
        (&instance["multi"], &instance["allValue"]),
        (&json!(true), &json!(".*"))
    );
    for query in dashboard_queries() {
        assert!(
            query.contains("job=\"$job\""),
            "not scoped by $job: {query}"
        );
    }
}

#[test]
fn the_dashboard_shows_decisions_latency_redis_audit_batches_and_rate_limits() {
    let used: BTreeSet<String> = dashboard_queries()
        .iter()
        .flat_map(|q| metric_names(q))
        .map(|n| family(&n).to_owned())
        .collect();
    for needed in [
        "quotad_decisions_total",
        "quotad_decision_duration_seconds",
        "quotad_redis_errors_total",
        "quotad_audit_backlog",
        "quotad_audit_writer_active",
        "quotad_batch_size",
        "quotad_rate_limited_total",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
}

#[test]
fn prometheus_config_passes_promtool_check() {
    let out = d::promtool_ok(&["check", "config", &path("deploy/prometheus/prometheus.yml")]);
    assert!(
        out.contains("is valid prometheus config file syntax"),
        "{out}"
    );
    assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
}
