//! The writer persists exactly the admitted requests, field for field.

mod audit_support;
mod common;

use std::collections::BTreeMap;

use audit_support as s;
use common::{engine_with, new_key, new_key_with, TestRedis};
use quotad::engine::{system_clock, EngineSettings};
use quotad::quota::{ApiKey, AuditExtras, ConsumeRequest, Decision};
use serde_json::json;

fn settings(include_denied: bool) -> EngineSettings {
    EngineSettings {
        shards: 8,
        include_denied,
        ..EngineSettings::default()
    }
}

fn request(i: usize, idem: Option<String>) -> ConsumeRequest {
    let extras = match i % 3 {
        0 => AuditExtras::default(),
        1 => AuditExtras {
            request: Some(json!({"i": i, "path": "/a,b"})),
            response: Some(json!([1, "two", null])),
            error: Some(format!("upstream \"failed\" {i}")),
            processing_ms: Some(i as f64 + 0.5),
        },
        _ => AuditExtras {
            processing_ms: Some(3.0),
            ..AuditExtras::default()
        },
    };
    ConsumeRequest::new((i % 4 + 1) as u64, format!("/v1/e{}", i % 5), idem, extras).unwrap()
}

#[tokio::test]
async fn every_admitted_consume_becomes_exactly_one_equal_row() {
    let redis = TestRedis::start();
    let engine = engine_with(&redis, settings(false), system_clock()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let keys: Vec<ApiKey> =
        futures_util::future::join_all((0..3).map(|_| new_key(&engine, "pro"))).await;
    let tight = new_key_with(&engine, "pro", Some(2)).await;

    // Writer running while the consumes happen, so new entries are followed live.
    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    let mut admitted: Vec<(ConsumeRequest, Decision)> = Vec::new();
    for i in 0..30 {
        let key = &keys[i % 3];
        let idem = (i % 2 == 0).then(|| format!("idem-{i}"));
        let req = request(i, idem);
        let decision = engine.consume(key, &req).await.unwrap();
        assert!(decision.allowed && !decision.replayed);
        // A replay answers again and records nothing.
        if req.idempotency_key.is_some() {
            let again = engine.consume(key, &req).await.unwrap();
            assert!(again.replayed);
            assert_eq!(again.audit_id, decision.audit_id);
        }
        admitted.push((req, decision));
    }
    // Two pass on the tight key, the third is denied and records nothing.
    for i in 0..3 {
        let d = engine
            .consume(&tight, &ConsumeRequest::simple(1, "/t").unwrap())
            .await
            .unwrap();
        if i < 2 {
            admitted.push((ConsumeRequest::simple(1, "/t").unwrap(), d));
        } else {
            assert!(!d.allowed);
        }
    }

    s::wait_for("32 rows", || s::count(&db) == 32).await;
    s::wait_drained(&redis, 8).await;
    running.stop().await;
    assert_eq!(s::count(&db), 32);
    assert_eq!(s::pending(&redis, 8), 0);

    let mut by_id = BTreeMap::new();
    for key in keys.iter().chain([&tight]) {
        for r in s::records(&db, &key.id()).await {
            assert!(
                by_id.insert(r.audit_id.clone(), r).is_none(),
                "duplicate row"
            );
        }
    }
    assert_eq!(by_id.len(), admitted.len());
    for (req, d) in &admitted {
        let audit_id = d.audit_id.as_ref().unwrap();
        let r = &by_id[audit_id];
        assert_eq!(r.key_id, d.key_id);
        assert_eq!(r.tier, d.tier);
        assert_eq!(r.used_after, d.used);
        assert_eq!(r.cost, req.cost);
        assert_eq!(r.endpoint, req.endpoint);
        assert_eq!(r.outcome, "allowed");
        assert_eq!(r.idempotency_key, req.idempotency_key);
        assert_eq!(r.request, req.extras.request);
        assert_eq!(r.response, req.extras.response);
        assert_eq!(r.error, req.extras.error);
        assert_eq!(r.processing_ms, req.extras.processing_ms);
        assert!(
            r.timestamp.ends_with('Z') && r.timestamp.len() == 24,
            "{}",
            r.timestamp
        );
    }
}

#[tokio::test]
async fn denials_are_recorded_only_with_include_denied() {
    let redis = TestRedis::start();
    let engine = engine_with(&redis, settings(true), system_clock()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let key = new_key_with(&engine, "free", Some(1)).await;
    let req = ConsumeRequest::simple(1, "/x").unwrap();
    assert!(engine.consume(&key, &req).await.unwrap().allowed);
    let denied = engine.consume(&key, &req).await.unwrap();
    assert!(!denied.allowed && denied.audit_id.is_none());

    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    s::wait_drained(&redis, 8).await;
    running.stop().await;
    let records = s::records(&db, &key.id()).await;
    let outcomes: Vec<(&str, u64)> = records
        .iter()
        .map(|r| (r.outcome.as_str(), r.used_after))
        .collect();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.contains(&("allowed", 1)));
    assert!(outcomes.contains(&("denied", 1)));
}

#[tokio::test]
async fn page_json_uses_the_spec_field_names() {
    let redis = TestRedis::start();
    let engine = engine_with(&redis, settings(false), system_clock()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let key = new_key(&engine, "pro").await;
    let d = engine
        .consume(&key, &ConsumeRequest::simple(2, "/j").unwrap())
        .await
        .unwrap();
    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    s::wait_drained(&redis, 8).await;
    running.stop().await;

    let reader = quotad::audit::AuditReader::open(&db).unwrap();
    let page = reader
        .query(quotad::audit::AuditQuery::new(key.id()))
        .await
        .unwrap();
    let value = serde_json::to_value(&page).unwrap();
    let record = &value["records"][0];
    let mut names: Vec<&str> = record
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "audit_id",
            "cost",
            "endpoint",
            "error",
            "idempotency_key",
            "key_id",
            "outcome",
            "processing_ms",
            "request",
            "response",
            "tier",
            "timestamp",
            "used_after"
        ]
    );
    assert_eq!(record["audit_id"], json!(d.audit_id));
    assert_eq!(record["idempotency_key"], json!(null));
    assert_eq!(record["cost"], json!(2));
    assert_eq!(value["next_cursor"], json!(null));
}
