//! `/metrics` with the global recorder installed: its own test binary, since a process
//! has one global recorder.

mod common;

use std::collections::BTreeMap;

use common::{engine, new_key, new_key_with, TestApp, TestRedis};
use serde_json::json;

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text exposition format strictly enough to catch malformed output.
fn parse(text: &str) -> Vec<Sample> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(matches!(kind, "TYPE" | "HELP"), "bad comment: {line}");
            assert!(valid_name(name), "bad name in: {line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or("");
                assert!(
                    matches!(t, "counter" | "gauge" | "histogram" | "summary" | "untyped"),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect(line);
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect(line);
                    assert!(valid_name(k), "bad label in: {line}");
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name, labels)
            }
        };
        assert!(valid_name(name), "bad name in: {line}");
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn sum(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name && label.is_none_or(|(k, v)| l.get(k).is_some_and(|x| x == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(app: &TestApp) -> (String, Vec<Sample>) {
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    let samples = parse(&text);
    (text, samples)
}

#[tokio::test]
async fn metrics_parse_and_count_exactly_the_decisions_made() {
    let handle = quotad::app::install_metrics(&quotad::quota::Catalogue::default())
        .expect("the recorder installs once");
    let redis = TestRedis::start();
    let app = TestApp::with_engine(engine(&redis).await, handle).await;
    let key = new_key_with(&app.engine, "free", Some(3)).await;
    let other = new_key(&app.engine, "enterprise").await;
    let (_, before) = scrape(&app).await;
    let decisions = "quotad_decisions_total";
    let base = sum(&before, decisions, None);

    for body in [
        json!({}),
        json!({"idempotency_key": "k1"}),
        json!({"idempotency_key": "k1"}),
    ] {
        assert_eq!(app.consume(&key, body).await.status(), 200);
    }
    assert_eq!(app.consume(&key, json!({})).await.status(), 200);
    assert_eq!(app.consume(&key, json!({})).await.status(), 429);
    assert_eq!(app.consume(&other, json!({})).await.status(), 200);
    let bad = quotad::quota::ApiKey::presented("no-such-key").unwrap();
    assert_eq!(app.consume(&bad, json!({})).await.status(), 403);
    // Rejected before the engine: not a decision.
    assert_eq!(app.consume(&key, json!({"cost": 0})).await.status(), 400);

    let (text, after) = scrape(&app).await;
    assert_eq!(sum(&after, decisions, None) - base, 7.0, "{text}");
    let outcome = |o| {
        sum(&after, decisions, Some(("outcome", o))) - sum(&before, decisions, Some(("outcome", o)))
    };
    assert_eq!(outcome("allowed"), 4.0);
    assert_eq!(outcome("replayed"), 1.0);
    assert_eq!(outcome("denied"), 1.0);
    assert_eq!(outcome("invalid_key"), 1.0);

    let requests = "quotad_http_requests_total";
    let consume_200 = after
        .iter()
        .filter(|(n, l, _)| n == requests && l["route"] == "consume" && l["status"] == "200")
        .map(|(_, _, v)| v)
        .sum::<f64>();
    assert_eq!(consume_200, 5.0, "{text}");
    assert!(after
        .iter()
        .any(|(n, l, _)| n == requests && l["route"] == "metrics"));
    let buckets: Vec<&str> = after
        .iter()
        .filter(|(n, _, _)| n == "quotad_decision_duration_seconds_bucket")
        .filter_map(|(_, l, _)| l.get("le").map(String::as_str))
        .collect();
    assert!(
        buckets.contains(&"0.001") && buckets.contains(&"+Inf"),
        "{text}"
    );
    assert!(!text.contains("quantile"), "histograms, not summaries");
    assert!(!text.contains(key.id().as_str()), "no key ids in labels");
}
