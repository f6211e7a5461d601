//! HTTP load bench: quotad in-process on 127.0.0.1:0 over its own redis-server, driven
//! by N keep-alive connections; then the same consume script called directly with
//! EVALSHA at the same concurrency, and the ratio of the two.
//!
//! `cargo bench --bench http_load [-- --conns 64 --secs 10 --keys 1000 --hot 0.2 --replay 0.1
//! --pool 32]` (or `QUOTAD_BENCH_CONNS`, `_SECS`, `_KEYS`, `_HOT`, `_REPLAY`, `_POOL`;
//! `pool` is quotad's `redis_pool_size`, default 32 as in the config). Keys are on the
//! unlimited `enterprise` tier so the load is admissions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use quotad::engine::{system_clock, Engine, EngineSettings};
use quotad::http::{AdminToken, AppState};

#[path = "../tests/common/mod.rs"]
mod common;
use quotad::quota::{ApiKey, Catalogue, ConsumeRequest};
use quotad::store::Store;
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;

/// Load shape, from arguments or the environment.
#[derive(Debug, Clone, Copy)]
struct Opts {
    conns: usize,
    secs: u64,
    keys: usize,
    hot: f64,
    replay: f64,
    pool: u32,
    writer: bool,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str, default: f64| -> f64 {
        let flag = format!("--{name}");
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1).cloned())
            .or_else(|| std::env::var(format!("QUOTAD_BENCH_{}", name.to_uppercase())).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Opts {
        conns: get("conns", 64.0) as usize,
        secs: get("secs", 10.0) as u64,
        keys: get("keys", 1000.0) as usize,
        hot: get("hot", 0.2),
        replay: get("replay", 0.1),
        pool: get("pool", 8.0) as u32,
        writer: get("writer", 1.0) != 0.0,
    }
}

/// Picks the next request of one worker: which key, which idempotency key.
struct Picker {
    worker: usize,
    sent: u64,
    recent: Vec<(usize, String)>,
    opts: Opts,
}

impl Picker {
    fn next(&mut self, rng: &mut impl Rng) -> (usize, String) {
        if !self.recent.is_empty() && rng.random_bool(self.opts.replay) {
            return self.recent[rng.random_range(0..self.recent.len())].clone();
        }
        let key = if rng.random_bool(self.opts.hot) {
            0
        } else {
            rng.random_range(0..self.opts.keys)
        };
        self.sent += 1;
        let pick = (key, format!("w{}-{}", self.worker, self.sent));
        if self.recent.len() < 64 {
            self.recent.push(pick.clone());
        } else {
            let slot = (self.sent % 64) as usize;
            self.recent[slot] = pick.clone();
        }
        pick
    }
}

/// What a phase measured.
struct Outcome {
    done: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }

    fn report(&self, name: &str) {
        let q = |p: f64| self.latency.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "{name}: {:.0} decisions/s ({} in {:.1} s, {} errors), latency ms p50 {:.3} p99 {:.3} p99.9 {:.3}",
            self.rate(),
            self.done,
            self.elapsed.as_secs_f64(),
            self.errors,
            q(0.5),
            q(0.99),
            q(0.999)
        );
    }
}

/// Runs `conns` workers for `secs`, each looping `step`, with a progress line a second.
async fn phase<F, Fut>(name: &'static str, opts: Opts, step: F) -> Outcome
where
    F: Fn(usize, Arc<AtomicBool>, Arc<AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = (Histogram<u64>, u64)> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..opts.conns)
        .map(|w| tokio::spawn(step(w, stop.clone(), count.clone())))
        .collect();
    let mut last = 0;
    for second in 1..=opts.secs {
        tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
        let now = count.load(Ordering::Relaxed);
        println!("  {name} t={second:>2}s {:>8} decisions/s", now - last);
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut errors = 0;
    for w in workers {
        let (h, e) = w.await.expect("worker");
        latency.add(h).expect("same bounds");
        errors += e;
    }
    Outcome {
        done: latency.len(),
        errors,
        elapsed: started.elapsed(),
        latency,
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")
}

/// One HTTP worker: one keep-alive connection, one request at a time.
async fn http_worker(
    addr: std::net::SocketAddr,
    keys: Arc<Vec<ApiKey>>,
    opts: Opts,
    worker: usize,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> (Histogram<u64>, u64) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut picker = Picker {
        worker,
        sent: 0,
        recent: Vec::new(),
        opts,
    };
    let (mut hist, mut errors) = (histogram(), 0);
    let mut rng = StdRng::seed_from_u64(worker as u64);
    while !stop.load(Ordering::Relaxed) {
        let (key, idem) = picker.next(&mut rng);
        let body = format!(r#"{{"cost":1,"endpoint":"/bench","idempotency_key":"{idem}"}}"#);
        let req = hyper::Request::post("/v1/consume")
            .header("host", "bench")
            .header("authorization", format!("Bearer {}", keys[key].expose()))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let t = Instant::now();
        let resp = sender.send_request(req).await.expect("response");
        let ok = resp.status() == 200;
        resp.into_body().collect().await.expect("body");
        hist.saturating_record(t.elapsed().as_micros() as u64);
        errors += u64::from(!ok);
        count.fetch_add(1, Ordering::Relaxed);
    }
    (hist, errors)
}

/// One raw worker: the engine's own consume EVALSHA (same keys and arguments), sent
/// on a connection of its own, without the engine around it.
async fn raw_worker(
    client: redis::Client,
    engine: Engine,
    keys: Arc<Vec<ApiKey>>,
    opts: Opts,
    worker: usize,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> (Histogram<u64>, u64) {
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut picker = Picker {
        worker: worker + 1_000_000,
        sent: 0,
        recent: Vec::new(),
        opts,
    };
    let (mut hist, mut errors) = (histogram(), 0);
    let mut rng = StdRng::seed_from_u64(worker as u64);
    while !stop.load(Ordering::Relaxed) {
        let (key, idem) = picker.next(&mut rng);
        let req =
            ConsumeRequest::new(1, "/bench".into(), Some(idem), Default::default()).expect("valid");
        let t = Instant::now();
        let id = keys[key].id();
        let inv = engine.batch_invocation(&[(&id, &req)], chrono::Utc::now());
        let reply: Result<redis::Value, _> = inv.invoke_async(&mut conn).await;
        hist.saturating_record(t.elapsed().as_micros() as u64);
        errors += u64::from(reply.is_err());
        count.fetch_add(1, Ordering::Relaxed);
    }
    (hist, errors)
}

fn main() {
    let opts = opts();
    println!("http_load: {opts:?}");
    let redis = common::TestRedis::start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let handle =
            quotad::app::install_metrics(&quotad::quota::Catalogue::default()).expect("recorder");
        let store = Store::new(&redis.url(), Duration::from_millis(250), opts.pool).expect("store");
        let engine = Engine::new(
            store,
            Catalogue::default(),
            EngineSettings::default(),
            system_clock(),
        );
        engine.start().await.expect("engine starts");
        // The audit writer runs as in `quotad serve`, so the bench shows whether it
        // keeps up with the admission rate (backlog printed after the HTTP phase).
        let audit_dir = tempfile::tempdir().expect("audit dir");
        let audit_token = CancellationToken::new();
        let writer = if opts.writer {
            let config = quotad::config::AuditConfig {
                db_path: audit_dir.path().join("audit.db"),
                ..Default::default()
            };
            let writer = quotad::audit::spawn_writer(
                engine.store(),
                64,
                Catalogue::default(),
                &config,
                audit_token.clone(),
            );
            Some(writer.await.expect("audit writer"))
        } else {
            None
        };
        let mut keys = Vec::with_capacity(opts.keys);
        for _ in 0..opts.keys {
            keys.push(common::new_key(&engine, "enterprise").await);
        }
        let keys = Arc::new(keys);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = AppState::new(
            engine.clone(),
            AdminToken::generate().0,
            65_536,
            handle,
            true,
        );
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(quotad::http::run(
            listener,
            Arc::new(state),
            shutdown.clone(),
            Duration::from_secs(5),
        ));

        // Samples the audit backlog every 100 ms while the HTTP phase runs.
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (client, sampling) = (
                redis::Client::open(redis.url()).expect("client"),
                sampling.clone(),
            );
            std::thread::spawn(move || {
                let mut max = 0;
                while sampling.load(Ordering::Relaxed) {
                    max = max.max(audit_backlog(&client));
                    std::thread::sleep(Duration::from_millis(100));
                }
                max
            })
        };
        let http = phase("http", opts, |w, stop, count| {
            http_worker(addr, keys.clone(), opts, w, stop, count)
        })
        .await;
        let client = redis::Client::open(redis.url()).expect("client");
        sampling.store(false, Ordering::Relaxed);
        let backlog_max = sampler.join().expect("sampler");
        let backlog_after_http = audit_backlog(&client);
        let raw = phase("evalsha", opts, |w, stop, count| {
            raw_worker(
                client.clone(),
                engine.clone(),
                keys.clone(),
                opts,
                w,
                stop,
                count,
            )
        })
        .await;
        shutdown.cancel();
        let _ = server.await;
        audit_token.cancel();
        if let Some(writer) = writer {
            writer.join().await.expect("audit writer stops cleanly");
            let db = rusqlite::Connection::open(audit_dir.path().join("audit.db")).expect("db");
            let rows: i64 = db
                .query_row("SELECT COUNT(*) FROM audit_records", [], |r| r.get(0))
                .expect("count");
            println!(
                "audit writer on: backlog during the HTTP phase at most {backlog_max} entries, \
                 {backlog_after_http} right after it; \
                 {rows} rows persisted by the end"
            );
        }
        http.report("HTTP POST /v1/consume");
        raw.report("raw EVALSHA consume.lua");
        println!("ratio HTTP / raw EVALSHA: {:.2}", http.rate() / raw.rate());
    });
}

/// Entries waiting in all 64 shard streams.
fn audit_backlog(client: &redis::Client) -> u64 {
    let mut conn = client.get_connection().expect("connection");
    (0..64)
        .map(|shard| {
            redis::cmd("XLEN")
                .arg(format!("quotad:{{q{shard:03}}}:audit"))
                .query::<u64>(&mut conn)
                .unwrap_or(0)
        })
        .sum()
}
