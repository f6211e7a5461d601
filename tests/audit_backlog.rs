//! Back-pressure: the backlog grows while no writer runs and drains when one does;
//! past `max_backlog`, reject mode fails closed.

mod audit_support;
mod common;

use std::sync::Arc;

use audit_support as s;
use common::{engine_with, new_key, TestRedis};
use quotad::engine::{system_clock, EngineError, EngineSettings};
use quotad::quota::ConsumeRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_of_ten_thousand_grows_then_drains_into_sqlite() {
    const N: usize = 10_000;
    const TASKS: usize = 16;
    let redis = TestRedis::start();
    let settings = EngineSettings {
        shards: 16,
        ..EngineSettings::default()
    };
    let engine = engine_with(&redis, settings, system_clock()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let mut keys = Vec::new();
    for _ in 0..TASKS {
        keys.push(new_key(&engine, "enterprise").await);
    }
    let keys = Arc::new(keys);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (engine, keys) = (engine.clone(), keys.clone());
            tokio::spawn(async move {
                let req = ConsumeRequest::simple(1, "/bulk").unwrap();
                for _ in 0..N / TASKS {
                    assert!(engine.consume(&keys[t], &req).await.unwrap().allowed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // Batches carry several records per stream entry: count records, not entries.
    assert_eq!(common::audit_records(&redis).len(), N);

    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    s::wait_drained(&redis, 16).await;
    running.stop().await;
    assert_eq!(s::count(&db), N as u64);
    assert_eq!(s::pending(&redis, 16), 0);
    for key in keys.iter() {
        let records = s::records(&db, &key.id()).await;
        assert_eq!(records.len(), N / TASKS);
        // Newest first: usage counts down from the total.
        let used: Vec<u64> = records.iter().map(|r| r.used_after).collect();
        let expected: Vec<u64> = (1..=(N / TASKS) as u64).rev().collect();
        assert_eq!(used, expected);
    }

    // A year and a day later every record is past the enterprise retention (365 d):
    // retention deletes them all, 5,000 rows per transaction.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let later = chrono::Utc::now() + chrono::Duration::days(366);
    let catalogue = quotad::quota::Catalogue::default();
    let report = quotad::audit::purge_expired(&conn, &catalogue, later).unwrap();
    assert_eq!(report.deleted, N as u64);
    assert_eq!(s::count(&db), 0);
}

#[tokio::test]
async fn reject_mode_fails_closed_past_max_backlog_until_the_writer_drains() {
    let redis = TestRedis::start();
    let settings = EngineSettings {
        shards: 1,
        max_backlog: 5,
        ..EngineSettings::default()
    };
    let engine = engine_with(&redis, settings, system_clock()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let key = new_key(&engine, "pro").await;
    let req = ConsumeRequest::simple(1, "/r").unwrap();
    // Admissions stop once the stream holds more than max_backlog entries.
    for _ in 0..6 {
        engine.consume(&key, &req).await.unwrap();
    }
    let err = engine.consume(&key, &req).await.unwrap_err();
    assert!(matches!(err, EngineError::BacklogFull(0)), "{err}");
    // Nothing was charged for the refused request.
    assert_eq!(engine.key(&key.id()).await.unwrap().used, 6);

    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    s::wait_drained(&redis, 1).await;
    let d = engine.consume(&key, &req).await.unwrap();
    assert_eq!(d.used, 7);
    s::wait_drained(&redis, 1).await;
    running.stop().await;
    assert_eq!(s::count(&db), 7);
}
