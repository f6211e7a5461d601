//! Helpers shared by the audit tests: writer options, waiting for the drain, reading rows.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quotad::audit::{AuditQuery, AuditReader, AuditRecord, AuditWriter, WriterOptions};
use quotad::config::{AuditConfig, Synchronous};
use quotad::engine::Engine;
use quotad::quota::{KeyId, Shard};
use quotad::store::keys;
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
    conn.query_row("SELECT count(*) FROM audit_records", [], |r| r.get(0))
        .unwrap()
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
