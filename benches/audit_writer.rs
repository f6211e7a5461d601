//! How fast the audit writer drains full shard streams into SQLite.
//!
//! Fills 64 shard streams with 200,000 realistic entries (direct XADDs, as
//! `lua/consume.lua` writes them), then times one writer draining them, for
//! `synchronous = normal` and `full`. Run: `cargo bench --bench audit_writer`
//! (`AUDIT_BENCH_ENTRIES` changes the count).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use quotad::audit::{spawn_writer_with, WriterOptions};
use quotad::config::{AuditConfig, Synchronous};
use quotad::quota::Shard;
use quotad::store::{keys, Store};
use tokio_util::sync::CancellationToken;

const SHARDS: u32 = 64;

fn fill(redis: &common::TestRedis, entries: usize) {
    let mut conn = redis.conn();
    let extras = r#"{"request":{"model":"m-large","input_tokens":812},"response":{"status":200,"output_tokens":164},"processing_ms":118.4}"#;
    for chunk in (0..entries).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let shard = Shard((i as u32 * 2_654_435_761) % SHARDS);
            pipe.cmd("XADD")
                .arg(keys::audit_stream(shard))
                .arg("*")
                .arg("key_id")
                .arg(format!("{:032x}", i % 5_000))
                .arg("tier")
                .arg("pro")
                .arg("ts")
                .arg("2026-11-27T19:41:14.123Z")
                .arg("endpoint")
                .arg("/v1/chat/completions")
                .arg("cost")
                .arg(1)
                .arg("used_after")
                .arg(i / 5_000 + 1)
                .arg("outcome")
                .arg("allowed")
                .arg("idem")
                .arg(if i % 4 == 0 {
                    format!("req-{i}")
                } else {
                    String::new()
                })
                .arg("extras")
                .arg(extras)
                .ignore();
        }
        pipe.query::<()>(&mut conn).expect("XADD pipeline");
    }
}

fn backlog(conn: &mut redis::Connection) -> u64 {
    let mut pipe = redis::pipe();
    for s in 0..SHARDS {
        pipe.cmd("XLEN").arg(keys::audit_stream(Shard(s)));
    }
    pipe.query::<Vec<u64>>(conn).expect("XLEN").iter().sum()
}

fn run(entries: usize, synchronous: Synchronous) -> f64 {
    let redis = common::TestRedis::start();
    let dir = tempfile::tempdir().expect("temp dir");
    fill(&redis, entries);
    let config = AuditConfig {
        db_path: dir.path().join("audit.db"),
        consumer: "bench".to_owned(),
        synchronous,
        ..AuditConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = runtime.enter(); // the pool starts its reaper on the runtime
    let store = Store::new(&redis.url(), Duration::from_millis(250), 4).expect("store");
    let mut conn = redis.conn();
    let token = CancellationToken::new();
    let started = Instant::now();
    let writer = runtime
        .block_on(spawn_writer_with(
            &store,
            WriterOptions::new(SHARDS, &config),
            token.clone(),
        ))
        .expect("writer starts");
    while backlog(&mut conn) > 0 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed();
    token.cancel();
    runtime.block_on(writer.join()).expect("writer stops");
    let db = rusqlite::Connection::open(&config.db_path).expect("db");
    let rows: i64 = db
        .query_row("SELECT count(*) FROM audit_records", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, entries as i64, "every entry persisted");
    entries as f64 / elapsed.as_secs_f64()
}

fn main() {
    let entries = std::env::var("AUDIT_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    for (name, sync) in [("normal", Synchronous::Normal), ("full", Synchronous::Full)] {
        let rate = run(entries, sync);
        println!("audit writer, synchronous = {name}: {entries} entries, {rate:.0} rows/s");
    }
}
