//! Queries (keyset pages, time ranges, bad input), retention and the CLI.

mod audit_support;
mod common;

use std::collections::{BTreeMap, HashSet};

use audit_support as s;
use common::{engine_with, new_key, parse_time, TestClock, TestRedis};
use quotad::audit::cli::{run_audit, AuditCommand, Format};
use quotad::audit::{purge_expired, AuditError, AuditQuery, AuditReader};
use quotad::config::AuditConfig;
use quotad::engine::{Engine, EngineSettings};
use quotad::quota::{ApiKey, Catalogue, ConsumeRequest, Tier};

async fn setup(redis: &TestRedis, clock: &TestClock) -> Engine {
    let settings = EngineSettings {
        shards: 4,
        ..EngineSettings::default()
    };
    engine_with(redis, settings, clock.clock()).await
}

async fn consume_at(engine: &Engine, clock: &TestClock, key: &ApiKey, at: &str, n: usize) {
    clock.set(at);
    for _ in 0..n {
        let req = ConsumeRequest::simple(1, at).unwrap();
        engine.consume(key, &req).await.unwrap();
    }
}

/// Follows `next_cursor` from the first page; `between` runs after the first page.
async fn all_pages(
    reader: &AuditReader,
    query: AuditQuery,
    mut between: impl AsyncFnMut(),
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = None;
    let mut first = true;
    loop {
        let page = reader
            .query(AuditQuery {
                cursor,
                ..query.clone()
            })
            .await
            .unwrap();
        assert!(page.records.len() <= query.limit.unwrap() as usize);
        ids.extend(page.records.into_iter().map(|r| r.audit_id));
        if first {
            between().await;
            first = false;
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn pages_hold_every_record_exactly_once_while_records_arrive() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let engine = setup(&redis, &clock).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let key = new_key(&engine, "pro").await;
    // Many records share an instant: the audit_id breaks the tie.
    consume_at(&engine, &clock, &key, "2026-11-10T12:00:00Z", 9).await;
    consume_at(&engine, &clock, &key, "2026-11-10T12:00:01Z", 9).await;
    consume_at(&engine, &clock, &key, "2026-11-10T12:00:02Z", 7).await;
    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    s::wait_drained(&redis, 4).await;
    let records = s::records(&db, &key.id()).await;
    // Newest first; records of the same millisecond in reverse admission order.
    let used: Vec<u64> = records.iter().map(|r| r.used_after).collect();
    assert_eq!(used, (1..=25).rev().collect::<Vec<u64>>());
    let before: Vec<String> = records.into_iter().map(|r| r.audit_id).collect();

    let reader = AuditReader::open(&db).unwrap();
    let query = AuditQuery {
        limit: Some(4),
        ..AuditQuery::new(key.id())
    };
    let paged = all_pages(&reader, query.clone(), async || {
        // Newer records and records at an instant already paged through arrive.
        consume_at(&engine, &clock, &key, "2026-11-10T12:00:03Z", 3).await;
        consume_at(&engine, &clock, &key, "2026-11-10T12:00:01Z", 3).await;
        s::wait_drained(&redis, 4).await;
    })
    .await;
    running.stop().await;
    let unique: HashSet<&String> = paged.iter().collect();
    assert_eq!(unique.len(), paged.len(), "a record was on two pages");
    for id in &before {
        assert!(unique.contains(id), "{id} was skipped");
    }
    // Without concurrent arrivals the pages are exactly the newest-first order.
    let again = all_pages(&reader, query, async || {}).await;
    let full: Vec<String> = s::records(&db, &key.id())
        .await
        .into_iter()
        .map(|r| r.audit_id)
        .collect();
    assert_eq!(again, full);
    assert_eq!(full.len(), 31);
}

#[tokio::test]
async fn time_ranges_are_from_inclusive_to_exclusive() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let engine = setup(&redis, &clock).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let key = new_key(&engine, "pro").await;
    for at in [
        "2026-11-01T00:00:00Z",
        "2026-11-02T00:00:00Z",
        "2026-11-03T00:00:00Z",
    ] {
        consume_at(&engine, &clock, &key, at, 1).await;
    }
    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    s::wait_drained(&redis, 4).await;
    running.stop().await;
    let reader = AuditReader::open(&db).unwrap();
    let page = reader
        .query(AuditQuery {
            from: Some(parse_time("2026-11-02T00:00:00Z")),
            to: Some(parse_time("2026-11-03T00:00:00Z")),
            ..AuditQuery::new(key.id())
        })
        .await
        .unwrap();
    let stamps: Vec<&str> = page.records.iter().map(|r| r.timestamp.as_str()).collect();
    assert_eq!(stamps, ["2026-11-02T00:00:00.000Z"]);
    assert_eq!(page.next_cursor, None);
}

#[tokio::test]
async fn bad_queries_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    assert!(matches!(
        AuditReader::open(&db),
        Err(AuditError::Unavailable(_))
    ));
    drop(quotad::audit::schema::open_writer(&db, quotad::config::Synchronous::Normal).unwrap());
    let reader = AuditReader::open(&db).unwrap();
    let id = quotad::quota::KeyId::parse("0123456789abcdef0123456789abcdef").unwrap();
    for limit in [0, 1001] {
        let err = reader
            .query(AuditQuery {
                limit: Some(limit),
                ..AuditQuery::new(id.clone())
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, AuditError::BadQuery(_)) && err.is_client_error(),
            "{err}"
        );
    }
    let err = reader
        .query(AuditQuery {
            cursor: Some("nope".into()),
            ..AuditQuery::new(id.clone())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::BadCursor) && err.is_client_error());
    let page = reader
        .query(AuditQuery {
            limit: Some(1000),
            ..AuditQuery::new(id)
        })
        .await
        .unwrap();
    assert!(page.records.is_empty() && page.next_cursor.is_none());
}

#[tokio::test]
async fn retention_deletes_only_records_older_than_their_tier_allows() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let engine = setup(&redis, &clock).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let free = new_key(&engine, "free").await; // 7 days
    let pro = new_key(&engine, "pro").await; // 30 days
    for (key, at, n) in [
        (&free, "2026-10-01T00:00:00Z", 3), // 40 d old
        (&free, "2026-11-02T11:59:59Z", 2), // just over 7 d
        (&free, "2026-11-04T00:00:00Z", 4), // 6.5 d
        (&pro, "2026-10-01T00:00:00Z", 2),  // 40 d
        (&pro, "2026-10-20T00:00:00Z", 5),  // 21.5 d
    ] {
        consume_at(&engine, &clock, key, at, n).await;
    }
    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    s::wait_drained(&redis, 4).await;
    running.stop().await;
    let now = parse_time("2026-11-10T12:00:00Z");
    let conn = rusqlite::Connection::open(&db).unwrap();

    // A catalogue without `pro`: its records are kept and reported.
    let mut tiers = BTreeMap::new();
    tiers.insert(
        "free".to_owned(),
        Tier {
            monthly_limit: Some(1000),
            retention_days: 7,
            rate_limits: Vec::new(),
        },
    );
    let report = purge_expired(&conn, &Catalogue::new(tiers), now).unwrap();
    assert_eq!(report.deleted, 5);
    assert_eq!(report.unknown_tiers, ["pro"]);

    let report = purge_expired(&conn, &Catalogue::default(), now).unwrap();
    assert_eq!(report.deleted, 2);
    assert!(report.unknown_tiers.is_empty());
    let left = |key: &ApiKey| {
        let db = db.clone();
        let id = key.id();
        async move {
            let mut stamps: Vec<String> = s::records(&db, &id)
                .await
                .into_iter()
                .map(|r| r.endpoint)
                .collect();
            stamps.dedup();
            stamps
        }
    };
    assert_eq!(left(&free).await, ["2026-11-04T00:00:00Z"]);
    assert_eq!(left(&pro).await, ["2026-10-20T00:00:00Z"]);
    assert_eq!(s::count(&db), 9);
}

#[tokio::test]
async fn cli_prints_json_and_csv() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let engine = setup(&redis, &clock).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let key = new_key(&engine, "pro").await;
    consume_at(&engine, &clock, &key, "2026-11-10T12:00:00Z", 3).await;
    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    s::wait_drained(&redis, 4).await;
    running.stop().await;
    let config = AuditConfig {
        db_path: db.clone(),
        ..AuditConfig::default()
    };
    let cmd = |format| AuditCommand::Query {
        key_id: key.id().to_string(),
        from: Some("2026-11-01T00:00:00Z".into()),
        to: None,
        limit: 2,
        cursor: None,
        format,
    };
    let (mut out, mut note) = (Vec::new(), Vec::new());
    run_audit(&config, cmd(Format::Json), &mut out, &mut note)
        .await
        .unwrap();
    let page: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string());

    let (mut out, mut note) = (Vec::new(), Vec::new());
    run_audit(&config, cmd(Format::Csv), &mut out, &mut note)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("audit_id,key_id,tier,timestamp,"));
    assert!(lines[1].contains(",2026-11-10T12:00:00.000Z,"));
    assert!(String::from_utf8(note)
        .unwrap()
        .starts_with("more records: --cursor "));

    let bad = AuditCommand::Query {
        key_id: "not-an-id".into(),
        from: None,
        to: None,
        limit: 2,
        cursor: None,
        format: Format::Json,
    };
    let err = run_audit(&config, bad, &mut Vec::new(), &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 64);
}
