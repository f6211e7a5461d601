//! v2 stream entries: one entry per shard per batch of decisions, several records each.

mod audit_support;
mod common;

use std::time::Duration;

use audit_support::{self as s, V2Record};
use common::TestRedis;
use quotad::audit::{AuditError, AuditRecord, Fault};
use quotad::quota::{ApiKey, KeyId};

const SHARDS: u32 = 4;
const TS: &str = "2026-11-27T19:41:14.123Z";

fn key() -> KeyId {
    ApiKey::generate().id()
}

/// Records of one key with every kind of field: extras of each sort, idempotency keys,
/// another tier and outcome.
fn varied(key: &KeyId) -> Vec<V2Record> {
    let k = key.as_str();
    vec![
        V2Record {
            idem: Some("idem-1".into()),
            extras: r#"{"request":{"model":"m-large","tokens":[1,2]},"response":{"status":200},"error":"upstream \"slow\"","processing_ms":118.4}"#.into(),
            ..V2Record::allowed(k, "/v1/chat/completions", 3, 3)
        },
        V2Record {
            extras: "{}".into(),
            ..V2Record::allowed(k, "/v1/a,b", 1, 4)
        },
        V2Record {
            tier: "enterprise".into(),
            outcome: "denied".into(),
            extras: r#"{"processing_ms":0.5,"response":null}"#.into(),
            ..V2Record::allowed(k, "/v1/x", 2, 4)
        },
    ]
}

#[tokio::test]
async fn v2_entries_become_one_row_per_record_with_position_ids_and_exact_fields() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let (a, b) = (key(), key());
    let a_records = varied(&a);
    let b_records = vec![
        V2Record::allowed(b.as_str(), "/b", 1, 1),
        V2Record::allowed(b.as_str(), "/b", 5, 6),
    ];
    let e1 = s::xadd_v2(&redis, a.shard(SHARDS).0, TS, &a_records);
    let e2 = s::xadd_v2(&redis, b.shard(SHARDS).0, TS, &b_records);

    let store = s::store(&redis);
    let running = s::start_on(&store, s::options_for(SHARDS, &db, "node-a")).await;
    s::wait_drained(&redis, SHARDS).await;
    running.stop().await;
    assert_eq!(s::count(&db), 5);
    assert_eq!(s::pending(&redis, SHARDS), 0);

    // One instant: newest first is the reverse of the entry's order.
    let expect = |key: &KeyId, entry: &str, records: &[V2Record]| -> Vec<AuditRecord> {
        let shard = key.shard(SHARDS).0;
        let mut out: Vec<AuditRecord> = records
            .iter()
            .enumerate()
            .map(|(i, r)| r.expected(&format!("q{shard:03}-{entry}.{}", i + 1), TS))
            .collect();
        out.reverse();
        out
    };
    assert_eq!(s::records(&db, &a).await, expect(&a, &e1, &a_records));
    assert_eq!(s::records(&db, &b).await, expect(&b, &e2, &b_records));
}

#[tokio::test]
async fn a_stream_mixing_v1_and_v2_entries_keeps_every_record_in_stream_order() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let a = key();
    let shard = a.shard(SHARDS).0;
    let r = |used: u64| V2Record::allowed(a.as_str(), "/m", 1, used);
    let v1_first = s::xadd_v1(&redis, shard, TS, &r(1));
    let v2_two = s::xadd_v2(&redis, shard, TS, &[r(2), r(3)]);
    let v1_next = s::xadd_v1(&redis, shard, TS, &r(4));
    let v2_one = s::xadd_v2(&redis, shard, TS, &[r(5)]);

    let store = s::store(&redis);
    let running = s::start_on(&store, s::options_for(SHARDS, &db, "node-a")).await;
    s::wait_drained(&redis, SHARDS).await;
    running.stop().await;

    let got: Vec<(String, u64)> = s::records(&db, &a)
        .await
        .into_iter()
        .map(|r| (r.audit_id, r.used_after))
        .collect();
    let id = |entry: &str| format!("q{shard:03}-{entry}");
    assert_eq!(
        got,
        [
            (format!("{}.1", id(&v2_one)), 5),
            (id(&v1_next), 4),
            (format!("{}.2", id(&v2_two)), 3),
            (format!("{}.1", id(&v2_two)), 2),
            (id(&v1_first), 1),
        ]
    );
}

/// Runs a writer that commits its first batch and dies before XACK.
async fn commit_then_die(store: &quotad::store::Store, db: &std::path::Path, consumer: &str) {
    let mut options = s::options_for(SHARDS, db, consumer);
    options.fault = Some(Fault::AfterCommit);
    let running = s::start_on(store, options).await;
    let result = tokio::time::timeout(Duration::from_secs(10), running.writer.join())
        .await
        .expect("the faulty writer stops");
    assert!(matches!(result, Err(AuditError::Fault(Fault::AfterCommit))));
}

#[tokio::test]
async fn a_redelivered_v2_entry_inserts_nothing_twice() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let a = key();
    s::xadd_v2(&redis, a.shard(SHARDS).0, TS, &varied(&a));
    let store = s::store(&redis);

    // Committed, then dead before XACK: the entry stays pending with its rows in SQLite.
    commit_then_die(&store, &db, "node-a").await;
    assert_eq!((s::count(&db), s::pending(&redis, SHARDS)), (3, 1));
    let before = s::records(&db, &a).await;
    // Redelivered to the same consumer (its pending entries, re-read on start).
    commit_then_die(&store, &db, "node-a").await;
    assert_eq!((s::count(&db), s::pending(&redis, SHARDS)), (3, 1));

    // Redelivered to another consumer (claimed), which also acknowledges it.
    let mut options = s::options_for(SHARDS, &db, "node-b");
    options.claim_idle = Duration::ZERO;
    let running = s::start_on(&store, options).await;
    s::wait_drained(&redis, SHARDS).await;
    running.stop().await;
    assert_eq!((s::count(&db), s::pending(&redis, SHARDS)), (3, 0));
    assert_eq!(s::records(&db, &a).await, before);
}
