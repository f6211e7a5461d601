//! Crash safety: a writer that dies anywhere loses and duplicates nothing.

mod audit_support;
mod common;

use std::time::Duration;

use audit_support as s;
use common::{engine_with, new_key, TestRedis};
use quotad::audit::Fault;
use quotad::engine::{system_clock, Engine, EngineSettings};
use quotad::quota::{ApiKey, ConsumeRequest, Shard};
use quotad::store::keys;

const SHARDS: u32 = 4;

async fn setup(redis: &TestRedis) -> Engine {
    let settings = EngineSettings {
        shards: SHARDS,
        ..EngineSettings::default()
    };
    engine_with(redis, settings, system_clock()).await
}

/// `n` consumes spread over a few keys; returns the keys and the admitted audit ids.
async fn consume(engine: &Engine, keys: &[ApiKey], n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let req = ConsumeRequest::simple(1, "/c").unwrap();
        let d = engine.consume(&keys[i % keys.len()], &req).await.unwrap();
        ids.push(d.audit_id.unwrap());
    }
    ids
}

async fn keys(engine: &Engine) -> Vec<ApiKey> {
    let mut keys = Vec::new();
    for _ in 0..6 {
        keys.push(new_key(engine, "enterprise").await);
    }
    keys
}

/// The persisted audit ids, sorted; panics on a duplicate.
async fn persisted(db: &std::path::Path, keys: &[ApiKey]) -> Vec<String> {
    let mut ids = Vec::new();
    for key in keys {
        ids.extend(
            s::records(db, &key.id())
                .await
                .into_iter()
                .map(|r| r.audit_id),
        );
    }
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "duplicate audit rows");
    ids
}

/// Runs a writer with `fault` until it dies there.
async fn die_at(engine: &Engine, db: &std::path::Path, consumer: &str, fault: Fault, batch: usize) {
    let mut options = s::options(engine, db, consumer);
    options.fault = Some(fault);
    options.batch_size = batch;
    let running = s::start(engine, options).await;
    let result = tokio::time::timeout(Duration::from_secs(10), running.writer.join())
        .await
        .expect("the faulty writer stops");
    assert!(matches!(result, Err(quotad::audit::AuditError::Fault(f)) if f == fault));
}

#[tokio::test]
async fn writer_dying_before_commit_loses_nothing_across_a_redis_restart() {
    let mut redis = TestRedis::with_args(&["--appendonly", "yes"]);
    let engine = setup(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let keys = keys(&engine).await;
    let mut admitted = consume(&engine, &keys, 60).await;

    die_at(&engine, &db, "node-a", Fault::BeforeCommit, 1000).await;
    assert_eq!(s::count(&db), 0);
    assert_eq!(s::pending(&redis, SHARDS), 60);

    // The pending entries survive a Redis restart (appendonly) and are recovered.
    redis.restart();
    assert_eq!(s::pending(&redis, SHARDS), 60);
    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    s::wait_drained(&redis, SHARDS).await;
    running.stop().await;
    admitted.sort();
    assert_eq!(persisted(&db, &keys).await, admitted);
    assert_eq!(s::pending(&redis, SHARDS), 0);
}

#[tokio::test]
async fn writer_dying_between_commit_and_ack_duplicates_nothing() {
    let redis = TestRedis::with_args(&["--appendonly", "yes"]);
    let engine = setup(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let keys = keys(&engine).await;
    let mut admitted = consume(&engine, &keys, 60).await;

    die_at(&engine, &db, "node-a", Fault::AfterCommit, 10).await;
    // The first batch was committed (and the ones queued behind it may be too).
    let committed = s::count(&db);
    assert!((10..60).contains(&committed), "{committed} rows");
    // One read takes up to a batch per shard; all of it stays pending and in the streams.
    assert!(s::pending(&redis, SHARDS) >= 10, "nothing acknowledged");
    assert_eq!(s::backlog(&redis, SHARDS), 60, "nothing trimmed");

    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    // Admissions continue while it recovers.
    admitted.extend(consume(&engine, &keys, 20).await);
    s::wait_drained(&redis, SHARDS).await;
    running.stop().await;
    admitted.sort();
    assert_eq!(persisted(&db, &keys).await, admitted);
    assert_eq!(s::count(&db), 80);
}

#[tokio::test]
async fn another_consumer_claims_idle_entries() {
    let redis = TestRedis::start();
    let engine = setup(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let keys = keys(&engine).await;
    let mut admitted = consume(&engine, &keys, 40).await;
    die_at(&engine, &db, "node-a", Fault::BeforeCommit, 1000).await;
    assert_eq!(s::pending(&redis, SHARDS), 40);

    let mut options = s::options(&engine, &db, "node-b");
    options.claim_idle = Duration::from_millis(200);
    let running = s::start(&engine, options).await;
    s::wait_drained(&redis, SHARDS).await;
    running.stop().await;
    admitted.sort();
    assert_eq!(persisted(&db, &keys).await, admitted);
    assert_eq!(s::pending(&redis, SHARDS), 0);
}

/// Reads every entry of every shard as `consumer` without acknowledging, then trims
/// the streams empty: the entries stay pending but their content is gone.
fn read_then_trim(redis: &TestRedis, consumer: &str) {
    let mut conn = redis.conn();
    for shard in 0..SHARDS {
        let key = keys::audit_stream(Shard(shard));
        let _: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&key)
            .arg("quotad-audit")
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut conn);
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("quotad-audit")
            .arg(consumer)
            .arg("STREAMS")
            .arg(&key)
            .arg(">")
            .query(&mut conn)
            .unwrap();
        let _: u64 = redis::cmd("XTRIM")
            .arg(&key)
            .arg("MAXLEN")
            .arg(0)
            .query(&mut conn)
            .unwrap();
    }
}

#[tokio::test]
async fn own_trimmed_pending_entries_come_back_empty_and_are_acknowledged() {
    let redis = TestRedis::start();
    let engine = setup(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let keys = keys(&engine).await;
    consume(&engine, &keys, 12).await;
    read_then_trim(&redis, "node-a");
    assert_eq!(
        (s::pending(&redis, SHARDS), s::backlog(&redis, SHARDS)),
        (12, 0)
    );

    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    s::wait_for("the PEL to empty", || s::pending(&redis, SHARDS) == 0).await;
    running.stop().await;
    assert_eq!(s::count(&db), 0);
}

#[tokio::test]
async fn claimed_trimmed_entries_are_dropped_from_the_pel() {
    let redis = TestRedis::start();
    let engine = setup(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let keys = keys(&engine).await;
    consume(&engine, &keys, 12).await;
    read_then_trim(&redis, "node-b");

    let mut options = s::options(&engine, &db, "node-a");
    options.claim_idle = Duration::ZERO;
    let running = s::start(&engine, options).await;
    s::wait_for("the PEL to empty", || s::pending(&redis, SHARDS) == 0).await;
    running.stop().await;
    assert_eq!(s::count(&db), 0);
}

#[tokio::test]
async fn writer_rides_out_a_redis_restart() {
    let mut redis = TestRedis::with_args(&["--appendonly", "yes"]);
    let engine = setup(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let keys = keys(&engine).await;
    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    let mut admitted = consume(&engine, &keys, 30).await;
    redis.restart();
    // The request pool may hand out a dead connection once; retry like a client would.
    for i in 0..30 {
        let req = ConsumeRequest::simple(1, "/c").unwrap();
        loop {
            match engine.consume(&keys[i % keys.len()], &req).await {
                Ok(d) => {
                    admitted.push(d.audit_id.unwrap());
                    break;
                }
                Err(e) => assert!(
                    matches!(&e, quotad::engine::EngineError::Store(s) if s.is_unavailable()),
                    "{e}"
                ),
            }
        }
    }
    s::wait_drained(&redis, SHARDS).await;
    running.stop().await;
    admitted.sort();
    assert_eq!(persisted(&db, &keys).await, admitted);
}

#[tokio::test]
async fn cancel_leaves_nothing_behind_for_the_next_start() {
    let redis = TestRedis::start();
    let engine = setup(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let keys = keys(&engine).await;
    let mut admitted = consume(&engine, &keys, 200).await;
    let mut options = s::options(&engine, &db, "node-a");
    options.batch_size = 7;
    let running = s::start(&engine, options).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    running.stop().await;

    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    s::wait_drained(&redis, SHARDS).await;
    running.stop().await;
    admitted.sort();
    assert_eq!(persisted(&db, &keys).await, admitted);
}

#[tokio::test]
async fn a_lost_group_is_recreated_at_zero_and_nothing_is_skipped() {
    let redis = TestRedis::start();
    let engine = setup(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let keys = keys(&engine).await;
    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    let mut admitted = consume(&engine, &keys, 20).await;
    s::wait_drained(&redis, SHARDS).await;
    // As after a Redis that lost its data: the group is gone, the stream is not.
    let mut conn = redis.conn();
    for shard in 0..SHARDS {
        let _: i64 = redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(keys::audit_stream(Shard(shard)))
            .arg("quotad-audit")
            .query(&mut conn)
            .unwrap();
    }
    admitted.extend(consume(&engine, &keys, 20).await);
    s::wait_drained(&redis, SHARDS).await;
    running.stop().await;
    admitted.sort();
    assert_eq!(persisted(&db, &keys).await, admitted);
}
