//! HTTP load bench: `quotad serve` as a child process with its default settings (audit
//! writer on) over its own redis-server, driven by N keep-alive connections, beside
//! the same run's minimal one-call consume (`benches/minimal_consume.lua` under
//! redis-benchmark, same Redis, same concurrency, unpipelined and -P 16). It prints
//! decisions/s and latency, Redis CPU per decision (`INFO cpu`, the writer's work
//! included: the window runs until the backlog has drained), quotad's CPU per
//! decision (`/proc/<pid>/stat` of the child), the `INFO commandstats` breakdown, the
//! batch sizes (`quotad_batch_size` from the child's `/metrics`) and the audit backlog.
//!
//! `cargo bench --bench http_load [-- --conns 64 --secs 10 --keys 1000 --hot 0.2
//! --replay 0.1 --writer 1 --appendonly 0 --pool N --max-batch N --ref-keys 10000
//! --drain-secs 60]` (or `QUOTAD_BENCH_CONNS`, …). `--writer 0` turns the audit writer
//! off; `--appendonly 1` starts Redis with `appendonly yes` (everysec), as the run
//! command does; `--pool` and `--max-batch` set `redis_pool_size` and
//! `batch.max_decisions` (unset: quotad's defaults). A share `hot` of the requests
//! goes to one key, a share `replay` repeats a recent idempotency key; keys are on the
//! unlimited `enterprise` tier, so the load is admissions and replays.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use quotad::config::Config;
use quotad::engine::{system_clock, Engine};
use quotad::quota::ApiKey;
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use support::args::Args;
use support::redis_stats::{Backlog, BacklogSampler, Costs, Probe, Window};
use support::reference::{RefRun, Reference};
use support::report::{self, per_decision, Buckets};

const FLAGS: &[&str] = &[
    "conns",
    "secs",
    "keys",
    "hot",
    "replay",
    "writer",
    "appendonly",
    "pool",
    "max-batch",
    "ref-keys",
    "drain-secs",
];

/// How long the child may take to answer `/readyz`, and to exit after SIGTERM.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// Load shape, from flags or the environment.
#[derive(Debug, Clone)]
struct Opts {
    conns: usize,
    secs: u64,
    keys: usize,
    hot: f64,
    replay: f64,
    writer: bool,
    appendonly: bool,
    pool: Option<u32>,
    max_batch: Option<usize>,
    ref_keys: u64,
    drain: Duration,
}

fn opts() -> Opts {
    let args = Args::parse(FLAGS);
    Opts {
        conns: args.get("conns", 64),
        secs: args.get("secs", 10),
        keys: args.get("keys", 1000),
        hot: args.get("hot", 0.2),
        replay: args.get("replay", 0.1),
        writer: args.flag("writer", true),
        appendonly: args.flag("appendonly", false),
        pool: args.optional("pool"),
        max_batch: args.optional("max-batch"),
        ref_keys: args.get("ref-keys", 10_000),
        drain: Duration::from_secs(args.get("drain-secs", 60)),
    }
}

/// `quotad serve` in a child process, SIGKILLed on drop unless stopped.
struct Quotad {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Quotad {
    /// Starts `quotad serve` on a free port over `redis`, with the SQLite file and the
    /// log in `dir`; every setting not named here is quotad's default.
    fn spawn(redis: &common::TestRedis, opts: &Opts, dir: &std::path::Path) -> Quotad {
        let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .expect("address");
        let log = dir.join("quotad.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quotad"));
        cmd.arg("serve")
            .env("QUOTAD_LISTEN", addr.to_string())
            .env("QUOTAD_REDIS_URL", redis.url())
            .env("QUOTAD_AUDIT_DB", dir.join("audit.db"))
            .env("QUOTAD_AUDIT_WRITER", opts.writer.to_string())
            .env("QUOTAD_LOG", "warn")
            // Its stdout carries the generated admin token: never shown.
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("quotad log file"));
        if let Some(pool) = opts.pool {
            cmd.env("QUOTAD_REDIS_POOL_SIZE", pool.to_string());
        }
        if let Some(max) = opts.max_batch {
            cmd.env("QUOTAD_BATCH_MAX_DECISIONS", max.to_string());
        }
        let child = cmd.spawn().expect("spawn quotad serve");
        Quotad { child, addr, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + CHILD_TIMEOUT;
        loop {
            if let Some((200, _)) = get(self.addr, "/readyz").await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("quotad serve exited with {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "quotad not ready within {CHILD_TIMEOUT:?}: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + CHILD_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "quotad exited with {status}: {}",
                    self.log_text()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("quotad did not exit within {CHILD_TIMEOUT:?} of SIGTERM");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Quotad {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One GET on a fresh connection: (status, body), `None` when it cannot be sent.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "bench")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The child's `quotad_batch_size` histogram now.
async fn batch_sizes(addr: SocketAddr) -> Buckets {
    let (status, text) = get(addr, "/metrics").await.expect("GET /metrics answers");
    assert_eq!(status, 200, "GET /metrics");
    Buckets::parse(&text, quotad::metrics::BATCH_SIZE)
}

/// Picks the next request of one worker: which key, which idempotency key.
struct Picker {
    worker: usize,
    sent: u64,
    recent: Vec<(usize, String)>,
    hot: f64,
    replay: f64,
    keys: usize,
}

impl Picker {
    fn next(&mut self, rng: &mut impl Rng) -> (usize, String) {
        if !self.recent.is_empty() && rng.random_bool(self.replay) {
            return self.recent[rng.random_range(0..self.recent.len())].clone();
        }
        let key = if rng.random_bool(self.hot) {
            0
        } else {
            rng.random_range(0..self.keys)
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

/// What one worker (and then the whole phase) measured.
struct Outcome {
    admitted: u64,
    replayed: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Outcome {
    fn decisions(&self) -> u64 {
        self.admitted + self.replayed
    }

    fn rate(&self) -> f64 {
        self.decisions() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `opts.conns` HTTP workers for `opts.secs`, with a progress line a second.
async fn http_phase(addr: SocketAddr, keys: Arc<Vec<ApiKey>>, opts: &Opts) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..opts.conns)
        .map(|w| {
            let picker = Picker {
                worker: w,
                sent: 0,
                recent: Vec::new(),
                hot: opts.hot,
                replay: opts.replay,
                keys: keys.len(),
            };
            tokio::spawn(http_worker(
                addr,
                keys.clone(),
                picker,
                stop.clone(),
                count.clone(),
            ))
        })
        .collect();
    let mut last = 0;
    for second in 1..=opts.secs {
        tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
        let now = count.load(Ordering::Relaxed);
        println!("  http t={second:>2}s {:>8} decisions/s", now - last);
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = Outcome {
        admitted: 0,
        replayed: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: report::histogram(),
    };
    for w in workers {
        let o = w.await.expect("worker");
        total.admitted += o.admitted;
        total.replayed += o.replayed;
        total.errors += o.errors;
        total.latency.add(&o.latency).expect("same bounds");
    }
    total.elapsed = started.elapsed();
    total
}

/// One HTTP worker: one keep-alive connection, one request at a time.
async fn http_worker(
    addr: SocketAddr,
    keys: Arc<Vec<ApiKey>>,
    mut picker: Picker,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> Outcome {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut out = Outcome {
        admitted: 0,
        replayed: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: report::histogram(),
    };
    let mut rng = StdRng::seed_from_u64(picker.worker as u64);
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
        let replayed = resp.headers().contains_key("idempotent-replayed");
        resp.into_body().collect().await.expect("body");
        out.latency
            .saturating_record(t.elapsed().as_micros() as u64);
        match (ok, replayed) {
            (false, _) => out.errors += 1,
            (true, true) => out.replayed += 1,
            (true, false) => out.admitted += 1,
        }
        count.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// Creates the bench's keys straight in Redis, as `quotad keys create` would.
async fn create_keys(redis: &common::TestRedis, n: usize) -> Vec<ApiKey> {
    let url = redis.url();
    let config = Config::load(None, |name| {
        (name == "QUOTAD_REDIS_URL").then(|| url.clone())
    })
    .expect("config");
    let engine = Engine::new(
        config.store().expect("store"),
        config.catalogue(),
        config.engine_settings(),
        system_clock(),
    );
    engine.start().await.expect("engine starts");
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        keys.push(common::new_key(&engine, "enterprise").await);
    }
    keys
}

fn main() {
    let opts = opts();
    println!("http_load: {opts:?}");
    report::print_load_average("at the start");
    let redis = if opts.appendonly {
        common::TestRedis::with_args(&["--appendonly", "yes", "--appendfsync", "everysec"])
    } else {
        common::TestRedis::start()
    };
    let dir = tempfile::tempdir().expect("bench dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let keys = Arc::new(runtime.block_on(create_keys(&redis, opts.keys)));
    let mut quotad = Quotad::spawn(&redis, &opts, dir.path());
    runtime.block_on(quotad.wait_ready());
    println!(
        "quotad serve: pid {} on {} (profile it with perf record -g -p {})",
        quotad.pid(),
        quotad.addr,
        quotad.pid()
    );
    let mut probe = Probe::new(&redis.client());
    let reference = Reference::load(&mut probe, redis.socket(), opts.ref_keys);
    let run = measure_quotad(&runtime, &redis, &mut probe, &quotad, keys, &opts);
    quotad.stop();
    let unpipelined = reference.run(&mut probe, opts.conns, 1, opts.secs as f64);
    let pipelined = reference.run(&mut probe, opts.conns, 16, opts.secs as f64);

    print_quotad(&run, &opts, &dir.path().join("audit.db"));
    report::print_reference(&unpipelined);
    report::print_reference(&pipelined);
    print_summary(&opts, &run, &unpipelined, &pipelined);
    report::print_load_average("at the end");
    assert!(
        run.backlog.drained(),
        "the audit backlog did not drain to 0 within {:?}",
        opts.drain
    );
}

/// What the quotad phase measured.
struct QuotadRun {
    http: Outcome,
    costs: Costs,
    batches: Buckets,
    backlog: Backlog,
}

/// The HTTP load on `quotad`, measured from its start until the writer has drained
/// what it recorded.
fn measure_quotad(
    runtime: &tokio::runtime::Runtime,
    redis: &common::TestRedis,
    probe: &mut Probe,
    quotad: &Quotad,
    keys: Arc<Vec<ApiKey>>,
    opts: &Opts,
) -> QuotadRun {
    let shards = Config::default().shards;
    let before = runtime.block_on(batch_sizes(quotad.addr));
    let sampler = BacklogSampler::start(&redis.client(), shards);
    let window = Window::open(
        probe,
        &[("quotad", Some(quotad.pid())), ("load generator", None)],
    );
    let http = runtime.block_on(http_phase(quotad.addr, keys, opts));
    let backlog = Backlog::settle(sampler, probe, shards, opts.writer, opts.drain);
    let costs = window.close(probe);
    let batches = runtime.block_on(batch_sizes(quotad.addr)).since(&before);
    QuotadRun {
        http,
        costs,
        batches,
        backlog,
    }
}

fn print_quotad(run: &QuotadRun, opts: &Opts, db: &std::path::Path) {
    let (http, costs) = (&run.http, &run.costs);
    let writer = if opts.writer { "on" } else { "off" };
    let aof = if opts.appendonly { "yes" } else { "no" };
    println!(
        "\n== HTTP POST /v1/consume, {} connections, audit writer {writer}, appendonly {aof} ==",
        opts.conns
    );
    println!(
        "quotad: {:.0} decisions/s ({} admitted, {} replayed, {} errors in {:.1} s), {}",
        http.rate(),
        http.admitted,
        http.replayed,
        http.errors,
        http.elapsed.as_secs_f64(),
        report::percentiles(&http.latency)
    );
    run.backlog.print();
    run.batches.print("batch sizes");
    report::print_costs(costs, http.decisions(), "");
    println!(
        "  per admitted decision (replays excluded): Redis CPU {:.2} µs, quotad CPU {:.2} µs",
        per_decision(costs.redis_cpu, http.admitted),
        per_decision(process_cpu(costs, "quotad"), http.admitted)
    );
    if opts.writer {
        report::print_persisted(db, http.admitted);
    }
    report::print_commands(&costs.commands, http.decisions());
}

/// CPU seconds of the process `label` in `costs`.
fn process_cpu(costs: &Costs, label: &str) -> f64 {
    costs
        .processes
        .iter()
        .find(|(l, _)| l == label)
        .map_or(0.0, |(_, s)| *s)
}

/// The figures of the issue's table, with the ratios to the same run's reference.
fn print_summary(opts: &Opts, run: &QuotadRun, unpipelined: &RefRun, pipelined: &RefRun) {
    let (http, costs, batches) = (&run.http, &run.costs, &run.batches);
    let n = http.decisions();
    let redis_us = per_decision(costs.redis_cpu, n);
    println!("\n== summary (same run) ==");
    println!(
        "HTTP decisions/s {:.0}, p99 {:.3} ms; reference -c {} unpipelined {:.0}/s \
         (ratio {:.2}), -P 16 {:.0}/s (ratio {:.2})",
        http.rate(),
        http.latency.value_at_quantile(0.99) as f64 / 1000.0,
        opts.conns,
        unpipelined.rate,
        http.rate() / unpipelined.rate,
        pipelined.rate,
        http.rate() / pipelined.rate
    );
    println!(
        "Redis CPU µs/decision {redis_us:.2} (per admitted {:.2}); reference unpipelined \
         {:.2} (ratio {:.2}), -P 16 {:.2} (ratio {:.2})",
        per_decision(costs.redis_cpu, http.admitted),
        report::ref_redis_us(unpipelined),
        redis_us / report::ref_redis_us(unpipelined),
        report::ref_redis_us(pipelined),
        redis_us / report::ref_redis_us(pipelined)
    );
    println!(
        "quotad CPU µs/decision {:.2}; load generator {:.2}; mean batch {:.1} decisions",
        per_decision(process_cpu(costs, "quotad"), n),
        per_decision(process_cpu(costs, "load generator"), n),
        batches.mean()
    );
}
