//! Audit files of schema version 1 migrate forward to the compact schema, whole or not
//! at all.

mod audit_support;
mod common;

use audit_support::{self as s, V2Record};
use common::TestRedis;
use quotad::audit::{schema, AuditError, AuditRecord};
use quotad::config::Synchronous;
use quotad::quota::{ApiKey, KeyId};
use serde_json::json;

const SHARDS: u32 = 8;

/// A key's history as a version 1 writer stored it: several instants, records sharing
/// an instant, every optional field set and unset, two tiers and two outcomes. `n`
/// keeps the entry ids of different keys apart (two keys may share a shard).
fn history(key: &KeyId, n: u64) -> Vec<AuditRecord> {
    let shard = key.shard(SHARDS).0;
    let at = ["2026-10-30T23:59:59.999Z", "2026-11-02T08:00:00.000Z"];
    (0..6u64)
        .map(|i| AuditRecord {
            audit_id: format!(
                "q{shard:03}-{}-{}",
                1_764_000_000_000 + 100 * n + i / 2,
                i % 2
            ),
            key_id: key.to_string(),
            tier: if i < 4 { "pro" } else { "enterprise" }.to_owned(),
            timestamp: at[(i / 3) as usize].to_owned(),
            endpoint: format!("/v1/e{i}"),
            cost: i + 1,
            used_after: 10 * (i + 1),
            outcome: if i == 2 { "denied" } else { "allowed" }.to_owned(),
            idempotency_key: (i % 2 == 0).then(|| format!("idem-{i}")),
            request: (i % 3 == 0).then(|| json!({"model": "m", "i": i, "list": [1, "x"]})),
            response: (i == 4).then(|| json!("plain")),
            error: (i == 1).then(|| "upstream \"timeout\"".to_owned()),
            processing_ms: (i != 3).then_some(i as f64 + 0.25),
        })
        .collect()
}

#[tokio::test]
async fn a_v1_file_migrates_with_every_row_and_audit_id_intact_and_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let (a, b) = (ApiKey::generate().id(), ApiKey::generate().id());
    let (a_rows, b_rows) = (history(&a, 0), history(&b, 1));
    s::write_v1_file(&db, &[a_rows.clone(), b_rows.clone()].concat());

    drop(schema::open_writer(&db, Synchronous::Normal).unwrap());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::VERSION);

    // Newest first, as version 1 served them: by instant, then in stream order.
    let newest_first = |mut rows: Vec<AuditRecord>| {
        rows.reverse();
        rows.sort_by_key(|r| std::cmp::Reverse(r.ts_ms()));
        rows
    };
    assert_eq!(s::records(&db, &a).await, newest_first(a_rows.clone()));
    assert_eq!(s::records(&db, &b).await, newest_first(b_rows.clone()));
    // The old table name still answers in the old shape.
    let mut ids: Vec<String> = conn
        .prepare("SELECT audit_id FROM audit_records")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    ids.sort();
    let mut expected: Vec<String> = a_rows
        .iter()
        .chain(&b_rows)
        .map(|r| r.audit_id.clone())
        .collect();
    expected.sort();
    assert_eq!(ids, expected);

    // A writer goes on adding v2 records to the migrated file.
    let redis = TestRedis::start();
    let record = V2Record::allowed(a.as_str(), "/new", 1, 61);
    let entry = s::xadd_v2(
        &redis,
        a.shard(SHARDS).0,
        "2026-11-03T00:00:00.000Z",
        &[record],
    );
    let store = s::store(&redis);
    let running = s::start_on(&store, s::options_for(SHARDS, &db, "node-a")).await;
    s::wait_drained(&redis, SHARDS).await;
    running.stop().await;
    let after = s::records(&db, &a).await;
    assert_eq!(after.len(), 7);
    assert_eq!(
        after[0].audit_id,
        format!("q{:03}-{entry}.1", a.shard(SHARDS).0)
    );
    assert_eq!(after[1..], newest_first(a_rows)[..]);
}

#[tokio::test]
async fn a_v1_file_with_an_unreadable_row_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let key = ApiKey::generate().id();
    let mut rows = history(&key, 0);
    rows[3].audit_id = "not-an-audit-id".to_owned();
    s::write_v1_file(&db, &rows);

    let err = schema::open_writer(&db, Synchronous::Normal).unwrap_err();
    assert!(
        matches!(&err, AuditError::Corrupt(why) if why.contains("not-an-audit-id")),
        "{err}"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (version, count): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version), COUNT(*) FROM audit_records",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((version, count), (1, 6));
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('audit_rows', 'audit_labels')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
}
