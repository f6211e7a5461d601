//! Engine throughput: consume decisions/s at 1, 16 and 64 concurrent tasks against a
//! spawned redis-server, beside a raw EVALSHA of the same script through the same pool.
//!
//! `cargo bench --bench engine` (QUOTAD_BENCH_SECS sets seconds per step, default 3).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use quotad::engine::{system_clock, Engine, EngineSettings};
use quotad::quota::{ApiKey, Catalogue, ConsumeRequest};
use quotad::store::Store;

/// Runs `tasks` loops of `op` for `secs`, returning operations per second.
async fn measure<F, Fut>(tasks: usize, secs: f64, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (op, stop, count) = (op.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    op(t, i).await;
                    i += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.expect("bench task");
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let secs: f64 = std::env::var("QUOTAD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let redis = common::TestRedis::start();
    let store = Store::new(&redis.url(), Duration::from_millis(250), 8).expect("store");
    let engine = Engine::new(
        store.clone(),
        Catalogue::default(),
        EngineSettings::default(),
        system_clock(),
    );
    engine.start().await.expect("engine starts");
    let mut api_keys = Vec::new();
    for _ in 0..64 {
        api_keys.push(common::new_key(&engine, "enterprise").await);
    }
    let api_keys = Arc::new(api_keys);
    let request = Arc::new(ConsumeRequest::simple(1, "/bench").expect("request"));

    println!("quotad engine bench: {secs} s per step, unlimited keys, one key per task");
    println!(
        "{:>6} {:>14} {:>14} {:>7}",
        "tasks", "engine dec/s", "raw EVALSHA/s", "ratio"
    );
    for tasks in [1, 16, 64] {
        let (e, k, r) = (engine.clone(), api_keys.clone(), request.clone());
        let engine_rate = measure(tasks, secs, move |t, _| {
            let (e, k, r) = (e.clone(), k.clone(), r.clone());
            async move {
                e.consume(&k[t], &r).await.expect("decision");
            }
        })
        .await;
        let (e, k, r) = (engine.clone(), api_keys.clone(), request.clone());
        let raw_rate = measure(tasks, secs, move |t, _| {
            let (e, key, r) = (e.clone(), k[t].clone(), r.clone());
            async move { raw_consume(&e, &key, &r).await }
        })
        .await;
        println!(
            "{tasks:>6} {engine_rate:>14.0} {raw_rate:>14.0} {:>7.2}",
            engine_rate / raw_rate
        );
    }
}

/// The engine's own EVALSHA of a batch of one through the same pool, without the
/// engine (and its batching) around it.
async fn raw_consume(engine: &Engine, key: &ApiKey, request: &ConsumeRequest) {
    let id = key.id();
    let inv = engine.batch_invocation(&[(&id, request)], chrono::Utc::now());
    let _: redis::Value = engine.store().invoke(&inv).await.expect("raw EVALSHA");
}
