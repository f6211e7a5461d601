//! A real Prometheus scraping a real `quotad serve` with the kit's config and rules.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::common::TestRedis;
use crate::kit::{alert_rules, family, used_metric_names};
use crate::support::{self as d, QuotadProcess, TestPrometheus};
use crate::NOT_YET_EXPORTED;

/// How long the live tests wait for Prometheus to see what quotad exports.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(60);

/// Prometheus's config for the live tests: the kit's file, its quotad job pointed at
/// `target`, scraping and evaluating every second.
fn live_prometheus_config(target: &str) -> String {
    let mut config = d::yaml("deploy/prometheus/prometheus.yml");
    config["global"]["scrape_interval"] = "1s".into();
    config["global"]["evaluation_interval"] = "1s".into();
    let jobs = config["scrape_configs"]
        .as_sequence_mut()
        .expect("scrape_configs");
    jobs.retain(|j| j["job_name"] == "quotad");
    jobs[0]["static_configs"] =
        serde_yaml_ng::from_str(&format!("[{{targets: ['{target}']}}]")).expect("static_configs");
    serde_yaml_ng::to_string(&config).expect("config serializes")
}

/// Waits until quotad's own `/metrics` shows `name`.
async fn wait_for_metric(quotad: &QuotadProcess, name: &str) {
    let client = d::client();
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    loop {
        if let Ok(response) = client.get(quotad.url("/metrics")).send().await {
            if response.text().await.is_ok_and(|t| t.contains(name)) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "quotad never exported {name}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A key, one admitted consume (persisted by the writer), then Redis gone and one
/// failed consume: after it quotad has exported every series it knows.
async fn exercise(quotad: &QuotadProcess, redis: &mut TestRedis) {
    let client = d::client();
    let created: Json = client
        .post(quotad.url("/v1/keys"))
        .bearer_auth(d::ADMIN_TOKEN)
        .json(&json!({"tier": "free"}))
        .send()
        .await
        .expect("create a key")
        .json()
        .await
        .expect("key JSON");
    let key = created["key"].as_str().expect("a generated key").to_owned();
    let consume = || {
        client
            .post(quotad.url("/v1/consume"))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(consume().await.expect("consume").status(), 200);
    wait_for_metric(quotad, "quotad_audit_batch_duration_seconds_bucket").await;
    redis.kill();
    assert_eq!(consume().await.expect("consume").status(), 503);
    wait_for_metric(quotad, "quotad_redis_errors_total").await;
}

#[tokio::test]
async fn prometheus_scraping_quotad_finds_every_metric_the_dashboard_and_alerts_use() {
    let mut redis = TestRedis::start();
    let quotad = QuotadProcess::start(&redis);
    let prometheus = TestPrometheus::start(&live_prometheus_config(&quotad.addr)).await;
    exercise(&quotad, &mut redis).await;

    let used = used_metric_names();
    let expected: BTreeSet<&String> = used
        .iter()
        .filter(|n| !NOT_YET_EXPORTED.contains(&family(n)))
        .collect();
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    let names: BTreeSet<String> = loop {
        let data = prometheus.api("label/__name__/values").await;
        let names: BTreeSet<String> = serde_json::from_value(data).expect("a list of names");
        if expected.iter().all(|n| names.contains(*n)) || Instant::now() > deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let missing: Vec<&&String> = expected.iter().filter(|n| !names.contains(**n)).collect();
    assert!(missing.is_empty(), "Prometheus never saw {missing:?}");
    let landed: Vec<&String> = names
        .iter()
        .filter(|n| NOT_YET_EXPORTED.contains(&family(n)))
        .collect();
    assert!(
        landed.is_empty(),
        "exported now, drop from NOT_YET_EXPORTED: {landed:?}"
    );
}

#[tokio::test]
async fn prometheus_evaluates_every_alert_rule_against_a_live_quotad_without_error() {
    let mut redis = TestRedis::start();
    let quotad = QuotadProcess::start(&redis);
    let prometheus = TestPrometheus::start(&live_prometheus_config(&quotad.addr)).await;
    exercise(&quotad, &mut redis).await;

    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    let rules: Vec<Json> = loop {
        let data = prometheus.api("rules").await;
        let rules: Vec<Json> = data["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules").clone())
            .collect();
        if rules.iter().all(|r| r["health"] != "unknown") || Instant::now() > deadline {
            break rules;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let loaded: BTreeSet<String> = rules
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    let expected: BTreeSet<String> = alert_rules().into_iter().map(|(name, _)| name).collect();
    assert_eq!(loaded, expected);
    let unhealthy: Vec<(&Json, &Json)> = rules
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| (&r["name"], &r["lastError"]))
        .collect();
    assert!(unhealthy.is_empty(), "{unhealthy:?}\n{}", prometheus.log());
}
