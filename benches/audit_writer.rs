//! How fast the audit writer drains full shard streams into SQLite, and how many bytes
//! a stored record takes.
//!
//! Fills 64 shard streams with 200,000 realistic records by direct XADDs, either as v2
//! entries (one entry per shard per batch of decisions, 8–64 records each, as
//! `lua/consume_batch.lua` writes them) or as v1 entries (one record each, as
//! `lua/consume.lua` writes them), then times one writer draining them, for
//! `synchronous = normal` and `full`, three runs each. Bytes per row are the database
//! file's size after a checkpoint divided by the rows.
//!
//! Run: `cargo bench --bench audit_writer` (`AUDIT_BENCH_ROWS` changes the record count,
//! `AUDIT_BENCH_RUNS` the runs per case, `AUDIT_BENCH_ONLY=v2-normal` picks one case).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use quotad::audit::{spawn_writer_with, WriterOptions};
use quotad::config::{AuditConfig, Synchronous};
use quotad::quota::{ApiKey, Shard};
use quotad::store::{keys, Store};
use tokio_util::sync::CancellationToken;

const SHARDS: u32 = 64;
const KEYS: usize = 5_000;

/// Which entries the streams hold.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    V1,
    V2,
}

/// A small deterministic generator, so every run drains the same streams.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// The record subfields of v2 order: key_id, tier, endpoint, cost, used_after, outcome,
/// idempotency key, extras.
fn record(rng: &mut Lcg, key_id: &str, used: &mut u64, n: usize) -> [String; 8] {
    let cost = 1 + rng.next(3);
    *used += cost;
    let endpoint = ["/v1/chat/completions", "/v1/embeddings", "/v1/images"][rng.next(3) as usize];
    let extras = format!(
        r#"{{"request":{{"model":"m-large","input_tokens":{}}},"response":{{"status":200,"output_tokens":{}}},"processing_ms":{}.{}}}"#,
        100 + rng.next(2_000),
        rng.next(600),
        rng.next(400),
        rng.next(10)
    );
    let idem = match n % 4 {
        0 => format!("req-{n:08}"),
        _ => String::new(),
    };
    [
        key_id.to_owned(),
        "pro".to_owned(),
        endpoint.to_owned(),
        cost.to_string(),
        used.to_string(),
        "allowed".to_owned(),
        idem,
        extras,
    ]
}

/// Fills the streams with `rows` records; returns the records written.
fn fill(redis: &common::TestRedis, rows: usize, format: Format) -> usize {
    let mut conn = redis.conn();
    let mut by_shard: Vec<Vec<(String, u64)>> = vec![Vec::new(); SHARDS as usize];
    for i in 0..KEYS {
        let id = ApiKey::parse(&format!("bench-audit-key-{i:08}"))
            .expect("a valid key")
            .id();
        by_shard[id.shard(SHARDS).0 as usize].push((id.to_string(), 0));
    }
    let mut rng = Lcg(7);
    let mut written = 0;
    let mut ts = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let mut pipe = redis::pipe();
    let mut queued = 0;
    while written < rows {
        let shard = rng.next(u64::from(SHARDS)) as usize;
        let size = match format {
            Format::V1 => 1,
            Format::V2 => (8 + rng.next(57) as usize).min(rows - written),
        };
        ts += 1;
        let instant = quotad::quota::format_instant(
            chrono::DateTime::from_timestamp_millis(ts).expect("a valid instant"),
        );
        let cmd = pipe
            .cmd("XADD")
            .arg(keys::audit_stream(Shard(shard as u32)))
            .arg("*");
        if format == Format::V2 {
            cmd.arg("v").arg("2").arg("ts").arg(&instant);
        }
        for pos in 1..=size {
            let keys = &mut by_shard[shard];
            let k = rng.next(keys.len() as u64) as usize;
            let (key_id, used) = &mut keys[k];
            let r = record(&mut rng, key_id, used, written);
            written += 1;
            match format {
                Format::V2 => {
                    cmd.arg(pos).arg(r.join("\x1f"));
                }
                Format::V1 => {
                    for (name, value) in ["key_id", "tier", "endpoint", "cost", "used_after"]
                        .iter()
                        .zip(&r[..5])
                    {
                        cmd.arg(*name).arg(value);
                    }
                    cmd.arg("ts").arg(&instant).arg("outcome").arg(&r[5]);
                    cmd.arg("idem").arg(&r[6]).arg("extras").arg(&r[7]);
                }
            }
        }
        cmd.ignore();
        queued += size;
        if queued >= 10_000 {
            pipe.query::<()>(&mut conn).expect("XADD pipeline");
            pipe = redis::pipe();
            queued = 0;
        }
    }
    if queued > 0 {
        pipe.query::<()>(&mut conn).expect("XADD pipeline");
    }
    written
}

/// CPU seconds used so far by this process's threads whose name starts with `prefix`
/// (all threads for ""), from `/proc/self/task/*/stat` (utime + stime, 100 ticks/s).
fn thread_cpu(prefix: &str) -> f64 {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let Ok(stat) = std::fs::read_to_string(task.expect("task").path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        // After the name: state is field 3, utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        ticks += fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    }
    ticks as f64 / 100.0
}

/// CPU seconds redis-server has used (`INFO cpu`, user + system).
fn redis_cpu(conn: &mut redis::Connection) -> f64 {
    let info: String = redis::cmd("INFO").arg("cpu").query(conn).expect("INFO cpu");
    info.lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_user:")
                .or_else(|| l.strip_prefix("used_cpu_sys:"))
        })
        .map(|v| v.trim().parse::<f64>().unwrap_or(0.0))
        .sum()
}

/// CPU seconds of the SQLite thread, the runtime's workers, and Redis.
fn cpu(conn: &mut redis::Connection) -> [f64; 3] {
    [
        thread_cpu("quotad-audit-sq"),
        thread_cpu("tokio-rt-worker"),
        redis_cpu(conn),
    ]
}

fn backlog(conn: &mut redis::Connection) -> u64 {
    let mut pipe = redis::pipe();
    for s in 0..SHARDS {
        pipe.cmd("XLEN").arg(keys::audit_stream(Shard(s)));
    }
    pipe.query::<Vec<u64>>(conn).expect("XLEN").iter().sum()
}

/// What one drain measured.
struct Drain {
    rows_per_sec: f64,
    bytes_per_row: f64,
    /// CPU µs per row: SQLite thread, runtime workers, Redis.
    cpu_us: [f64; 3],
}

/// One drain of `rows` records.
fn run(rows: usize, format: Format, synchronous: Synchronous) -> Drain {
    let redis = common::TestRedis::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let records = fill(&redis, rows, format);
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
    let before = cpu(&mut conn);
    let started = Instant::now();
    let mut options = WriterOptions::new(SHARDS, &config);
    options.batch_size = env("AUDIT_BENCH_BATCH", options.batch_size);
    let writer = runtime
        .block_on(spawn_writer_with(&store, options, token.clone()))
        .expect("writer starts");
    // Polled every 10 ms (64 XLEN each time): often enough to time a drain of seconds,
    // rarely enough not to take Redis CPU from the writer.
    while backlog(&mut conn) > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    let after = cpu(&mut conn);
    token.cancel();
    runtime.block_on(writer.join()).expect("writer stops");
    let db = rusqlite::Connection::open(&config.db_path).expect("db");
    let stored: i64 = db
        .query_row("SELECT count(*) FROM audit_rows", [], |r| r.get(0))
        .expect("count");
    assert_eq!(stored, records as i64, "every record persisted");
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    let bytes = std::fs::metadata(&config.db_path).expect("db size").len();
    Drain {
        rows_per_sec: records as f64 / elapsed.as_secs_f64(),
        bytes_per_row: bytes as f64 / records as f64,
        cpu_us: [0, 1, 2].map(|i| (after[i] - before[i]) * 1e6 / records as f64),
    }
}

/// `min / median / max` of `values`, with `digits` decimals.
fn spread(mut values: Vec<f64>, digits: usize) -> String {
    values.sort_by(f64::total_cmp);
    let [min, median, max] = [0, values.len() / 2, values.len() - 1].map(|i| values[i]);
    format!("{min:.digits$} / {median:.digits$} / {max:.digits$}")
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rows = env("AUDIT_BENCH_ROWS", 200_000);
    let runs = env("AUDIT_BENCH_RUNS", 3).max(1);
    let only = std::env::var("AUDIT_BENCH_ONLY").unwrap_or_default();
    let cases = [
        ("v2", "v2 entries (8-64 records)", Format::V2),
        ("v1", "v1 entries (1 record)", Format::V1),
    ];
    for (short, label, format) in cases {
        for (name, sync) in [("normal", Synchronous::Normal), ("full", Synchronous::Full)] {
            if !format!("{short}-{name}").contains(&only) {
                continue;
            }
            let drains: Vec<Drain> = (0..runs).map(|_| run(rows, format, sync)).collect();
            let of =
                |f: &dyn Fn(&Drain) -> f64, digits| spread(drains.iter().map(f).collect(), digits);
            println!(
                "audit writer, {label}, synchronous = {name}: {rows} rows, {runs} runs \
                 (min / median / max)\n  rows/s {}\n  bytes per stored row {}\n  \
                 CPU µs per row: SQLite thread {}, runtime workers {}, redis-server {}",
                of(&|d| d.rows_per_sec, 0),
                of(&|d| d.bytes_per_row, 0),
                of(&|d| d.cpu_us[0], 2),
                of(&|d| d.cpu_us[1], 2),
                of(&|d| d.cpu_us[2], 2),
            );
        }
    }
}
