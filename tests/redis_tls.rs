//! `rediss://` against a real TLS-only redis-server whose certificates the test makes:
//! trusted through `redis_ca_file`, refused without it, and a bad CA file refused early.

mod common;

use std::path::Path;
use std::time::Duration;

use common::new_key;
use common::tls::TestTlsRedis;
use quotad::engine::{system_clock, Engine, EngineError, EngineSettings};
use quotad::quota::{ApiKey, Catalogue, ConsumeRequest};
use quotad::store::{Store, StoreError};

/// Generous: a TLS handshake on a loaded 2-core machine; failures here are refusals,
/// not timeouts.
const TIMEOUT: Duration = Duration::from_secs(5);

fn store(redis: &TestTlsRedis, ca_file: Option<&Path>) -> Result<Store, StoreError> {
    Store::with_ca_file(&redis.url(), ca_file, TIMEOUT, 2)
}

fn engine_on(store: Store) -> Engine {
    Engine::new(
        store,
        Catalogue::default(),
        EngineSettings::default(),
        system_clock(),
    )
}

/// The pool retries a failed connect until its deadline, so through the engine a refused
/// handshake shows as unavailable or timed out; keep that deadline short.
const REFUSED_WITHIN: Duration = Duration::from_secs(1);

fn assert_unavailable(result: Result<(), EngineError>) {
    match result {
        Err(EngineError::Store(e)) => assert!(e.is_unavailable(), "{e:?}"),
        other => panic!("expected an unavailable store, got {other:?}"),
    }
}

fn config_message(result: Result<Store, StoreError>) -> String {
    match result {
        Err(StoreError::Config(message)) => message,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn consume_over_rediss_with_the_ca_file_is_counted() {
    let redis = TestTlsRedis::start();
    let engine = engine_on(store(&redis, Some(&redis.ca_file())).expect("store"));
    engine.start().await.expect("engine starts over TLS");
    let key = new_key(&engine, "free").await;
    let req = ConsumeRequest::simple(3, "/v1/x").unwrap();
    for _ in 0..2 {
        assert!(engine.consume(&key, &req).await.unwrap().allowed);
    }
    let quota = engine.quota(&key).await.unwrap();
    assert_eq!((quota.used, quota.limit), (6, Some(1000)));
    // Counted in Redis, in the key record, over the TLS connection.
    let used: Option<u64> = redis::cmd("HGET")
        .arg(quotad::store::keys::record(key.id().shard(64), &key.id()))
        .arg("used")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(used, Some(6));
}

#[tokio::test]
async fn dedicated_connections_trust_the_ca_file_too() {
    let redis = TestTlsRedis::start();
    let store = store(&redis, Some(&redis.ca_file())).expect("store");
    let mut conn = store
        .dedicated(TIMEOUT)
        .await
        .expect("dedicated connection");
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn rediss_without_the_ca_file_is_refused_as_unavailable() {
    let redis = TestTlsRedis::start();
    // System roots do not know the test's CA: every handshake fails, and fails closed.
    let store = Store::new(&redis.url(), REFUSED_WITHIN, 2).expect("store");
    match store.dedicated(REFUSED_WITHIN).await {
        Err(StoreError::Unavailable(e)) => assert!(e.to_string().contains("certificate"), "{e}"),
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    let engine = engine_on(store);
    assert_unavailable(engine.start().await.map(|_| ()));
    let key = ApiKey::presented("qk_never-created-on-this-redis").unwrap();
    let req = ConsumeRequest::simple(1, "/").unwrap();
    assert_unavailable(engine.consume(&key, &req).await.map(|_| ()));
}

#[test]
fn a_missing_ca_file_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let message = config_message(Store::with_ca_file(
        "rediss://localhost:6380",
        Some(&missing),
        TIMEOUT,
        1,
    ));
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
}

#[test]
fn a_ca_file_without_certificates_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("ca.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let message = config_message(Store::with_ca_file(
        "rediss://localhost:6380",
        Some(&garbage),
        TIMEOUT,
        1,
    ));
    assert!(
        message.contains(&garbage.display().to_string()),
        "{message}"
    );
    assert!(message.contains("no PEM certificate"), "{message}");
}

#[test]
fn a_ca_file_with_a_plain_redis_url_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "").unwrap();
    let url = "redis://127.0.0.1:6379";
    let message = config_message(Store::with_ca_file(url, Some(&ca), TIMEOUT, 1));
    assert!(message.contains("not rediss://"), "{message}");
}

#[test]
fn an_insecure_rediss_url_is_a_config_error() {
    let url = "rediss://localhost:6380/#insecure";
    let message = config_message(Store::new(url, TIMEOUT, 1));
    assert!(message.contains("#insecure"), "{message}");
}
