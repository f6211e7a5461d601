//! Retention by recorded tier, found through the day summaries: whole days, the cut-off
//! day, keys that changed tier, and key-days larger than one delete batch.

mod audit_support;
mod common;

use audit_support::{self as s, V2Record};
use common::{parse_time, TestRedis};
use quotad::audit::purge_expired;
use quotad::quota::{ApiKey, Catalogue, KeyId};

const SHARDS: u32 = 2;

fn record(key: &KeyId, tier: &str, used: u64) -> V2Record {
    V2Record {
        tier: tier.to_owned(),
        ..V2Record::allowed(key.as_str(), "/r", 1, used)
    }
}

/// Persists the entries `(key, instant, records)` through a writer.
async fn persist(
    redis: &TestRedis,
    db: &std::path::Path,
    entries: &[(&KeyId, &str, Vec<V2Record>)],
) {
    for (key, at, records) in entries {
        s::xadd_v2(redis, key.shard(SHARDS).0, at, records);
    }
    let store = s::store(redis);
    let running = s::start_on(&store, s::options_for(SHARDS, db, "node-a")).await;
    s::wait_drained(redis, SHARDS).await;
    running.stop().await;
}

fn summaries(db: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT COUNT(*) FROM audit_days", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn retention_deletes_by_recorded_tier_and_finishes_the_cutoff_day_later() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let (a, b) = (ApiKey::generate().id(), ApiKey::generate().id());
    // free keeps 7 days: at 2026-11-10T12:00Z the cut-off is 2026-11-03T12:00Z.
    persist(
        &redis,
        &db,
        &[
            (
                &a,
                "2026-11-01T10:00:00.000Z",
                vec![record(&a, "free", 1), record(&a, "free", 2)],
            ),
            (&a, "2026-11-03T11:59:59.999Z", vec![record(&a, "free", 3)]),
            (&a, "2026-11-03T12:00:00.000Z", vec![record(&a, "free", 4)]),
            // b moved from free to pro (30 days) on the same old day
            (&b, "2026-11-01T09:00:00.000Z", vec![record(&b, "free", 1)]),
            (&b, "2026-11-01T11:00:00.000Z", vec![record(&b, "pro", 2)]),
        ],
    )
    .await;
    assert_eq!(summaries(&db), 4);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let catalogue = Catalogue::default();
    let used = |key: &KeyId| {
        let (db, key) = (db.clone(), key.clone());
        async move {
            s::records(&db, &key)
                .await
                .iter()
                .map(|r| r.used_after)
                .collect::<Vec<u64>>()
        }
    };

    let report = purge_expired(&conn, &catalogue, parse_time("2026-11-10T12:00:00Z")).unwrap();
    assert_eq!(report.deleted, 4);
    assert_eq!(used(&a).await, [4]);
    assert_eq!(used(&b).await, [2]);
    // Wholly purged days lost their summaries; the cut-off day keeps a's.
    assert_eq!(summaries(&db), 2);

    // A day later the rest of that day is past the cut-off too.
    let report = purge_expired(&conn, &catalogue, parse_time("2026-11-11T12:00:00Z")).unwrap();
    assert_eq!(report.deleted, 1);
    assert!(used(&a).await.is_empty());
    assert_eq!(used(&b).await, [2]);
    assert_eq!(summaries(&db), 1);
}

#[tokio::test]
async fn a_key_day_larger_than_one_delete_batch_is_purged_whole() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let key = ApiKey::generate().id();
    let n = quotad::audit::retention::DELETE_BATCH as u64 * 2 + 300;
    let records: Vec<V2Record> = (1..=n).map(|i| record(&key, "free", i)).collect();
    let entries: Vec<(&KeyId, &str, Vec<V2Record>)> = records
        .chunks(64)
        .map(|chunk| (&key, "2026-10-01T00:00:00.000Z", chunk.to_vec()))
        .collect();
    persist(&redis, &db, &entries).await;
    assert_eq!(s::count(&db), n);

    let conn = rusqlite::Connection::open(&db).unwrap();
    let report = purge_expired(
        &conn,
        &Catalogue::default(),
        parse_time("2026-11-10T12:00:00Z"),
    )
    .unwrap();
    assert_eq!(report.deleted, n);
    assert_eq!(s::count(&db), 0);
    assert_eq!(summaries(&db), 0);
}
