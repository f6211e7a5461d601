//! Fail closed: Redis down or frozen is an error within the timeout, never an admission.

mod common;

use std::time::{Duration, Instant};

use common::{engine, new_key, TestRedis};
use quotad::engine::EngineError;
use quotad::quota::{AuditExtras, ConsumeRequest};

const TIMEOUT: Duration = Duration::from_millis(250);
/// A failing call returns on its own, bounded by the timeout rather than hanging. The
/// slack is wide on purpose: speed is measured in benches, a loaded CI must not flake.
const BOUNDED: Duration = Duration::from_secs(2);

fn idem(k: &str) -> ConsumeRequest {
    ConsumeRequest::new(1, "/".into(), Some(k.into()), AuditExtras::default()).unwrap()
}

fn assert_unavailable(result: Result<quotad::quota::Decision, EngineError>) {
    match result {
        Err(EngineError::Store(e)) => assert!(e.is_unavailable(), "{e:?}"),
        other => panic!("expected an unavailable store, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_is_unavailable_in_time_and_back_works_without_a_new_engine() {
    // fsync on every write: the key must survive the kill for the test to mean anything.
    let mut redis = TestRedis::with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let engine = engine(&redis).await;
    let key = new_key(&engine, "free").await;
    let req = ConsumeRequest::simple(1, "/").unwrap();
    assert!(engine.consume(&key, &req).await.unwrap().allowed);

    redis.kill();
    for _ in 0..5 {
        let started = Instant::now();
        assert_unavailable(engine.consume(&key, &req).await);
        assert!(started.elapsed() < BOUNDED, "{:?}", started.elapsed());
    }

    // A restarted Redis keeps its data (AOF) but has an empty script cache.
    redis.restart();
    let scripts: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(redis::Script::new(include_str!("../lua/consume_batch.lua")).get_hash())
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(scripts, vec![false]);
    let mut recovered = None;
    for _ in 0..100 {
        match engine.consume(&key, &req).await {
            Ok(d) => {
                recovered = Some(d);
                break;
            }
            Err(e) => {
                assert!(
                    matches!(&e, EngineError::Store(s) if s.is_unavailable()),
                    "{e:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let d = recovered.expect("the engine recovers after Redis is back");
    assert!(d.allowed);
    assert_eq!(d.used, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_times_out_and_the_retry_with_the_same_key_charges_once() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let key = new_key(&engine, "free").await;

    redis.pause();
    let started = Instant::now();
    assert_unavailable(engine.consume(&key, &idem("retry-me")).await);
    let elapsed = started.elapsed();
    redis.resume();
    assert!(elapsed >= TIMEOUT && elapsed < BOUNDED, "{elapsed:?}");

    // The timed-out call may have been applied once Redis woke up: the retry with the
    // same idempotency key must not charge again.
    let mut d = engine.consume(&key, &idem("retry-me")).await;
    for _ in 0..100 {
        if d.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        d = engine.consume(&key, &idem("retry-me")).await;
    }
    let d = d.expect("Redis answers again");
    assert!(d.allowed);
    assert_eq!(d.used, 1);
    let period = quotad::quota::Period::containing(engine.now());
    assert_eq!(common::used_in_redis(&redis, &key.id(), period), 1);
}

#[tokio::test]
async fn an_unreachable_redis_at_start_is_an_error_not_a_hang() {
    let mut redis = TestRedis::start();
    let url = redis.url();
    redis.kill();
    let store = quotad::store::Store::new(&url, TIMEOUT, 4).unwrap();
    let engine = quotad::engine::Engine::new(
        store,
        Default::default(),
        Default::default(),
        quotad::engine::system_clock(),
    );
    let started = Instant::now();
    let err = engine.start().await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Store(s) if s.is_unavailable()),
        "{err:?}"
    );
    assert!(started.elapsed() < BOUNDED);
}
