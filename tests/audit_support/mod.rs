//! Helpers shared by the audit tests: writer options, waiting for the drain, reading rows.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quotad::audit::{AuditQuery, AuditReader, AuditRecord, AuditWriter, WriterOptions};
use quotad::config::{AuditConfig, Synchronous};
use quotad::engine::Engine;
use quotad::quota::{KeyId, Shard};
use quotad::store::{keys, Store};
use tokio_util::sync::CancellationToken;

use crate::common::TestRedis;

/// Writer options for tests: `consumer`, the engine's shard count, otherwise the
/// defaults (new entries wake a blocked read at once; timers wait at most `block`).
pub fn options(engine: &Engine, db: &Path, consumer: &str) -> WriterOptions {
    let config = AuditConfig {
        db_path: db.to_path_buf(),
        consumer: consumer.to_owned(),
        synchronous: Synchronous::Normal,
        ..AuditConfig::default()
    };
    WriterOptions::new(engine.settings().shards, &config)
}

/// A running writer and the token that stops it.
pub struct Running {
    /// The writer.
    pub writer: AuditWriter,
    /// Cancel to stop it.
    pub token: CancellationToken,
}

impl Running {
    /// Cancels and waits; the writer must end cleanly.
    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.writer.join())
            .await
            .expect("writer stops within 10 s")
            .expect("writer ends cleanly");
    }
}

/// Starts a writer with `options` on the engine's store.
pub async fn start(engine: &Engine, options: WriterOptions) -> Running {
    let token = CancellationToken::new();
    let writer = quotad::audit::spawn_writer_with(engine.store(), options, token.clone())
        .await
        .expect("writer starts");
    Running { writer, token }
}

/// The temp file path of an audit database.
pub fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("audit.db")
}

/// Sum of XLEN over the shard streams.
pub fn backlog(redis: &TestRedis, shards: u32) -> u64 {
    let mut conn = redis.conn();
    (0..shards)
        .map(|s| {
            redis::cmd("XLEN")
                .arg(keys::audit_stream(Shard(s)))
                .query::<u64>(&mut conn)
                .unwrap()
        })
        .sum()
}

/// Entries pending in the group over all shards.
pub fn pending(redis: &TestRedis, shards: u32) -> u64 {
    let mut conn = redis.conn();
    (0..shards)
        .map(|s| {
            let summary: redis::Value = redis::cmd("XPENDING")
                .arg(keys::audit_stream(Shard(s)))
                .arg("quotad-audit")
                .query(&mut conn)
                .unwrap_or(redis::Value::Nil);
            match summary {
                redis::Value::Array(items) => match items.first() {
                    Some(redis::Value::Int(n)) => *n as u64,
                    _ => 0,
                },
                _ => 0,
            }
        })
        .sum()
}

/// Waits until every shard stream is empty (everything persisted, acked, trimmed).
pub async fn wait_drained(redis: &TestRedis, shards: u32) {
    wait_for("the audit streams to drain", || backlog(redis, shards) == 0).await;
}

/// Polls `done` every 10 ms for up to 20 s.
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Rows in the audit table.
pub fn count(db: &Path) -> u64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM audit_records", [], |r| r.get(0))
        .unwrap();
    u64::try_from(rows).expect("a row count is never negative")
}

/// Every record of `key_id`, newest first, through the reader (all pages).
pub async fn records(db: &Path, key_id: &KeyId) -> Vec<AuditRecord> {
    let reader = AuditReader::open(db).unwrap();
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = reader
            .query(AuditQuery {
                limit: Some(1000),
                cursor,
                ..AuditQuery::new(key_id.clone())
            })
            .await
            .unwrap();
        out.extend(page.records);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

/// Writer options for `shards` shards without an engine (entries XADDed directly).
pub fn options_for(shards: u32, db: &Path, consumer: &str) -> WriterOptions {
    let config = AuditConfig {
        db_path: db.to_path_buf(),
        consumer: consumer.to_owned(),
        synchronous: Synchronous::Normal,
        ..AuditConfig::default()
    };
    WriterOptions::new(shards, &config)
}

/// A store on `redis`, for writers started without an engine.
pub fn store(redis: &TestRedis) -> Store {
    Store::new(&redis.url(), Duration::from_millis(250), 4).expect("store")
}

/// Starts a writer with `options` on `store`.
pub async fn start_on(store: &Store, options: WriterOptions) -> Running {
    let token = CancellationToken::new();
    let writer = quotad::audit::spawn_writer_with(store, options, token.clone())
        .await
        .expect("writer starts");
    Running { writer, token }
}

/// One record as the batched consume script writes it into a v2 entry.
#[derive(Debug, Clone)]
pub struct V2Record {
    /// 32 lowercase hex characters.
    pub key_id: String,
    /// The tier name.
    pub tier: String,
    /// The endpoint label.
    pub endpoint: String,
    /// Units charged.
    pub cost: u64,
    /// Usage after the request.
    pub used_after: u64,
    /// `allowed`, `denied`, …
    pub outcome: String,
    /// The idempotency key, if any.
    pub idem: Option<String>,
    /// The extras JSON object (`""` or `{}` = none).
    pub extras: String,
}

impl V2Record {
    /// A plain allowed record of `key_id` without extras.
    pub fn allowed(key_id: &str, endpoint: &str, cost: u64, used_after: u64) -> Self {
        V2Record {
            key_id: key_id.to_owned(),
            tier: "pro".to_owned(),
            endpoint: endpoint.to_owned(),
            cost,
            used_after,
            outcome: "allowed".to_owned(),
            idem: None,
            extras: String::new(),
        }
    }

    /// The record's value in the entry: subfields joined by the unit separator.
    pub fn encode(&self) -> String {
        [
            self.key_id.as_str(),
            &self.tier,
            &self.endpoint,
            &self.cost.to_string(),
            &self.used_after.to_string(),
            &self.outcome,
            self.idem.as_deref().unwrap_or(""),
            &self.extras,
        ]
        .join("\x1f")
    }

    /// The record the writer must make of it, at `audit_id` and `timestamp`.
    pub fn expected(&self, audit_id: &str, timestamp: &str) -> AuditRecord {
        let extras: serde_json::Value = match self.extras.as_str() {
            "" => serde_json::json!({}),
            text => serde_json::from_str(text).expect("extras are JSON"),
        };
        let value = |name: &str| extras.get(name).filter(|v| !v.is_null()).cloned();
        AuditRecord {
            audit_id: audit_id.to_owned(),
            key_id: self.key_id.clone(),
            tier: self.tier.clone(),
            timestamp: timestamp.to_owned(),
            endpoint: self.endpoint.clone(),
            cost: self.cost,
            used_after: self.used_after,
            outcome: self.outcome.clone(),
            idempotency_key: self.idem.clone(),
            request: value("request"),
            response: value("response"),
            error: value("error").map(|e| e.as_str().expect("error is text").to_owned()),
            processing_ms: value("processing_ms").map(|p| p.as_f64().expect("a number")),
        }
    }
}

/// XADDs a v2 entry (`v 2 ts <ts> 1 <rec> …`) to `shard`'s stream; returns its id.
pub fn xadd_v2(redis: &TestRedis, shard: u32, ts: &str, records: &[V2Record]) -> String {
    xadd_fields(redis, shard, &v2_fields(ts, records))
}

/// The fields of a v2 entry.
pub fn v2_fields(ts: &str, records: &[V2Record]) -> Vec<(String, String)> {
    let mut fields = vec![
        ("v".to_owned(), "2".to_owned()),
        ("ts".to_owned(), ts.to_owned()),
    ];
    for (i, r) in records.iter().enumerate() {
        fields.push(((i + 1).to_string(), r.encode()));
    }
    fields
}

/// XADDs an entry with exactly `fields` to `shard`'s stream; returns its id.
pub fn xadd_fields(redis: &TestRedis, shard: u32, fields: &[(String, String)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(keys::audit_stream(Shard(shard))).arg("*");
    for (k, v) in fields {
        cmd.arg(k).arg(v);
    }
    cmd.query(&mut redis.conn()).expect("XADD")
}

/// XADDs a v1 entry (the named fields of `lua/consume.lua`) to `shard`'s stream.
pub fn xadd_v1(redis: &TestRedis, shard: u32, ts: &str, r: &V2Record) -> String {
    let fields = [
        ("key_id", r.key_id.as_str()),
        ("tier", &r.tier),
        ("ts", ts),
        ("endpoint", &r.endpoint),
        ("cost", &r.cost.to_string()),
        ("used_after", &r.used_after.to_string()),
        ("outcome", &r.outcome),
        ("idem", r.idem.as_deref().unwrap_or("")),
        ("extras", &r.extras),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    xadd_fields(redis, shard, &fields)
}

/// `INFO commandstats` calls of `command` (lowercase), 0 when never called.
pub fn command_calls(redis: &TestRedis, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.conn())
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a count"))
}

/// The schema version 1 files were written with (quotad before the compact schema),
/// to build such files in migration tests.
pub const V1_SCHEMA: &str = "CREATE TABLE audit_records (
        seq             INTEGER PRIMARY KEY,
        audit_id        TEXT NOT NULL UNIQUE,
        key_id          TEXT NOT NULL,
        tier            TEXT NOT NULL,
        ts_ms           INTEGER NOT NULL,
        endpoint        TEXT NOT NULL,
        cost            INTEGER NOT NULL,
        used_after      INTEGER NOT NULL,
        outcome         TEXT NOT NULL,
        idempotency_key TEXT,
        request         TEXT,
        response        TEXT,
        error           TEXT,
        processing_ms   REAL
    );
    CREATE INDEX audit_by_key_time ON audit_records (key_id, ts_ms DESC, seq DESC);
    CREATE INDEX audit_by_tier_time ON audit_records (tier, ts_ms);
    PRAGMA user_version = 1;";

/// Creates a version 1 audit file at `db` holding `records`, inserted in order.
pub fn write_v1_file(db: &Path, records: &[AuditRecord]) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(V1_SCHEMA).unwrap();
    for r in records {
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
        conn.execute(
            "INSERT INTO audit_records (audit_id, key_id, tier, ts_ms, endpoint, cost,
                used_after, outcome, idempotency_key, request, response, error, processing_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            rusqlite::params![
                r.audit_id,
                r.key_id,
                r.tier,
                r.ts_ms().unwrap(),
                r.endpoint,
                r.cost as i64,
                r.used_after as i64,
                r.outcome,
                r.idempotency_key,
                json(&r.request),
                json(&r.response),
                r.error,
                r.processing_ms,
            ],
        )
        .unwrap();
    }
}
