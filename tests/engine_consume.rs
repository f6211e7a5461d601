//! Consume decisions against a real Redis: exact limits under contention, idempotency.

mod common;

use std::sync::Arc;

use common::{engine, engine_with, new_key, new_key_with, TestRedis};
use quotad::engine::{Engine, EngineError, EngineSettings, KeyUpdate};
use quotad::quota::{ApiKey, AuditExtras, ConsumeRequest, Decision, Period};

/// Runs `total` consumes of `cost` spread over `tasks` tasks, alternating engines.
async fn hammer(
    engines: &[Engine],
    key: &ApiKey,
    cost: u64,
    tasks: usize,
    total: usize,
) -> Vec<Decision> {
    let req = Arc::new(ConsumeRequest::simple(cost, "/v1/things").unwrap());
    let mut handles = Vec::new();
    for t in 0..tasks {
        let engine = engines[t % engines.len()].clone();
        let (key, req) = (key.clone(), req.clone());
        let n = total / tasks + usize::from(t < total % tasks);
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(engine.consume(&key, &req).await.expect("decision"));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all
}

/// The key's counter in Redis and the number of audit records it has there.
fn counter(redis: &TestRedis, engine: &Engine, key: &ApiKey) -> (u64, usize) {
    let id = key.id();
    let period = Period::containing(engine.now());
    let records = common::audit_records(redis)
        .iter()
        .filter(|r| r.get("key_id").map(String::as_str) == Some(id.as_str()))
        .count();
    (common::used_in_redis(redis, &id, period), records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_limit_is_allowed_under_64_concurrent_tasks() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let key = new_key(&engine, "free").await;
    let decisions = hammer(std::slice::from_ref(&engine), &key, 1, 64, 1500).await;
    assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 1000);
    assert_eq!(decisions.iter().filter(|d| !d.allowed).count(), 500);
    assert_eq!(counter(&redis, &engine, &key), (1000, 1000));
    let mut used: Vec<u64> = decisions
        .iter()
        .filter(|d| d.allowed)
        .map(|d| d.used)
        .collect();
    used.sort_unstable();
    assert_eq!(
        used,
        (1..=1000).collect::<Vec<_>>(),
        "every unit is handed out exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_seven_allows_142_under_contention() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let key = new_key(&engine, "free").await;
    let decisions = hammer(std::slice::from_ref(&engine), &key, 7, 64, 1500).await;
    assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 142);
    assert_eq!(counter(&redis, &engine, &key), (994, 142));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_shared_by_two_engines_on_two_pools_stays_exact() {
    let redis = TestRedis::start();
    let a = engine(&redis).await;
    let b = engine(&redis).await;
    let key = new_key(&a, "free").await;
    let decisions = hammer(&[a.clone(), b], &key, 1, 64, 1500).await;
    assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 1000);
    assert_eq!(counter(&redis, &a, &key), (1000, 1000));
}

#[tokio::test]
async fn a_cost_that_would_cross_the_limit_is_denied_and_consumes_nothing() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let key = new_key_with(&engine, "free", Some(10)).await;
    let d = engine
        .consume(&key, &ConsumeRequest::simple(8, "/").unwrap())
        .await
        .unwrap();
    assert!(d.allowed);
    let d = engine
        .consume(&key, &ConsumeRequest::simple(3, "/").unwrap())
        .await
        .unwrap();
    assert!(!d.allowed);
    assert_eq!(
        (d.used, d.limit, d.remaining, d.audit_id.as_deref()),
        (8, Some(10), Some(2), None)
    );
    let d = engine
        .consume(&key, &ConsumeRequest::simple(2, "/").unwrap())
        .await
        .unwrap();
    assert!(d.allowed);
    assert_eq!((d.used, d.remaining), (10, Some(0)));
    assert_eq!(counter(&redis, &engine, &key), (10, 2));
}

fn with_idem(cost: u64, endpoint: &str, idem: &str) -> ConsumeRequest {
    ConsumeRequest::new(
        cost,
        endpoint.into(),
        Some(idem.into()),
        AuditExtras::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_replay_returns_the_same_decision_and_consumes_nothing() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let key = new_key(&engine, "free").await;
    let first = engine
        .consume(&key, &with_idem(3, "/a", "req-1"))
        .await
        .unwrap();
    let again = engine
        .consume(&key, &with_idem(3, "/a", "req-1"))
        .await
        .unwrap();
    assert!(!first.replayed);
    assert!(again.replayed);
    assert_eq!(
        Decision {
            replayed: false,
            ..again
        },
        first
    );
    assert_eq!(counter(&redis, &engine, &key), (3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_requests_with_one_idempotency_key_consume_once() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let key = new_key(&engine, "free").await;
    let mut handles = Vec::new();
    for _ in 0..32 {
        let (engine, key) = (engine.clone(), key.clone());
        handles.push(tokio::spawn(async move {
            engine
                .consume(&key, &with_idem(1, "/a", "same"))
                .await
                .unwrap()
        }));
    }
    let mut replays = 0;
    for h in handles {
        let d = h.await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.used, 1);
        replays += usize::from(d.replayed);
    }
    assert_eq!(replays, 31);
    assert_eq!(counter(&redis, &engine, &key), (1, 1));
}

#[tokio::test]
async fn a_reused_idempotency_key_with_other_cost_or_endpoint_is_refused() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let key = new_key(&engine, "free").await;
    engine
        .consume(&key, &with_idem(1, "/a", "k"))
        .await
        .unwrap();
    for req in [with_idem(2, "/a", "k"), with_idem(1, "/b", "k")] {
        let err = engine.consume(&key, &req).await.unwrap_err();
        assert!(matches!(err, EngineError::IdempotencyKeyReused), "{err:?}");
    }
    assert_eq!(counter(&redis, &engine, &key), (1, 1));
}

#[tokio::test]
async fn idempotency_keys_are_scoped_to_one_api_key() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let (a, b) = (
        new_key(&engine, "free").await,
        new_key(&engine, "free").await,
    );
    engine.consume(&a, &with_idem(1, "/a", "k")).await.unwrap();
    let d = engine.consume(&b, &with_idem(1, "/a", "k")).await.unwrap();
    assert!(!d.replayed);
}

#[tokio::test]
async fn a_denial_is_not_stored_so_a_retry_after_an_upgrade_passes() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let key = new_key_with(&engine, "free", Some(1)).await;
    engine
        .consume(&key, &ConsumeRequest::simple(1, "/").unwrap())
        .await
        .unwrap();
    let denied = engine
        .consume(&key, &with_idem(1, "/a", "retry"))
        .await
        .unwrap();
    assert!(!denied.allowed);
    let update = KeyUpdate {
        monthly_limit: Some(Some(5)),
        ..Default::default()
    };
    engine.update_key(&key.id(), update).await.unwrap();
    let passed = engine
        .consume(&key, &with_idem(1, "/a", "retry"))
        .await
        .unwrap();
    assert!(passed.allowed && !passed.replayed);
    assert_eq!(passed.used, 2);
}

#[tokio::test]
async fn an_idempotency_entry_expires_after_its_ttl() {
    let redis = TestRedis::start();
    let settings = EngineSettings {
        idempotency_ttl: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let engine = engine_with(&redis, settings, quotad::engine::system_clock()).await;
    let key = new_key(&engine, "free").await;
    engine
        .consume(&key, &with_idem(1, "/a", "k"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let d = engine
        .consume(&key, &with_idem(1, "/a", "k"))
        .await
        .unwrap();
    assert!(!d.replayed);
    assert_eq!(d.used, 2);
}
