//! Engine bench: consume decisions in-process (no HTTP) at 1, 16 and 64 concurrent
//! tasks against a spawned redis-server, with the audit writer running in the same
//! process as in `quotad serve`, each step beside the same run's minimal one-call
//! consume (`benches/minimal_consume.lua` under redis-benchmark, same Redis, same
//! concurrency, unpipelined and -P 16). Per step it prints decisions/s and latency,
//! Redis CPU per decision (`INFO cpu`, the writer's work included: the window runs
//! until the backlog has drained), this process's CPU per decision (`/proc/self`:
//! the load tasks and the writer included), the `INFO commandstats` breakdown, the
//! batch sizes (`quotad_batch_size`) and the audit backlog.
//!
//! `cargo bench --bench engine [-- --secs 5 --tasks 1,16,64 --keys 1000 --idem 1
//! --writer 1 --appendonly 0 --windows 0 --ref-keys 10000 --max-batch N --drain-secs 60]` (or
//! `QUOTAD_BENCH_SECS`, …). `--idem 1` gives every request its own idempotency key, the
//! shape of the reference; keys are on the unlimited `enterprise` tier, so every
//! decision is an admission.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use hdrhistogram::Histogram;
use quotad::config::Config;
use quotad::engine::{system_clock, Engine};
use quotad::quota::{ApiKey, ConsumeRequest};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use support::args::Args;
use support::redis_stats::{Backlog, BacklogSampler, Costs, Probe, Window};
use support::reference::{RefRun, Reference};
use support::report::{self, per_decision, Buckets};
use tokio_util::sync::CancellationToken;

const FLAGS: &[&str] = &[
    "secs",
    "tasks",
    "keys",
    "idem",
    "writer",
    "appendonly",
    "windows",
    "ref-keys",
    "max-batch",
    "drain-secs",
];

/// The bench's shape, from flags or the environment.
#[derive(Debug)]
struct Opts {
    secs: f64,
    tasks: Vec<usize>,
    keys: usize,
    idem: bool,
    writer: bool,
    appendonly: bool,
    windows: bool,
    ref_keys: u64,
    max_batch: Option<usize>,
    drain: Duration,
}

fn opts() -> Opts {
    let args = Args::parse(FLAGS);
    Opts {
        secs: args.get("secs", 5.0),
        tasks: args.list("tasks", &[1, 16, 64]),
        keys: args.get("keys", 1000),
        idem: args.flag("idem", true),
        writer: args.flag("writer", true),
        appendonly: args.flag("appendonly", false),
        windows: args.flag("windows", false),
        ref_keys: args.get("ref-keys", 10_000),
        max_batch: args.optional("max-batch"),
        drain: Duration::from_secs(args.get("drain-secs", 60)),
    }
}

/// What the engine did in one step.
struct Load {
    admitted: u64,
    other: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Load {
    fn decisions(&self) -> u64 {
        self.admitted + self.other
    }

    fn rate(&self) -> f64 {
        self.decisions() as f64 / self.elapsed.as_secs_f64()
    }
}

/// One step's figures, kept for the summary.
struct Step {
    tasks: usize,
    load: Load,
    costs: Costs,
    batches: Buckets,
    backlog: Backlog,
    unpipelined: RefRun,
    pipelined: RefRun,
}

/// Everything a step runs against.
struct Bench<'a> {
    runtime: &'a tokio::runtime::Runtime,
    redis: &'a common::TestRedis,
    engine: &'a Engine,
    keys: &'a Arc<Vec<ApiKey>>,
    metrics: &'a metrics_exporter_prometheus::PrometheusHandle,
    opts: &'a Opts,
    shards: u32,
    writer: bool,
}

impl Bench<'_> {
    /// The engine at `tasks`, measured from its start until the writer has drained
    /// what it recorded, then the reference at the same concurrency.
    fn step(&self, probe: &mut Probe, reference: &Reference, tasks: usize, step: usize) -> Step {
        let batch_size = quotad::metrics::BATCH_SIZE;
        let before = Buckets::parse(&self.metrics.render(), batch_size);
        let sampler = BacklogSampler::start(&self.redis.client(), self.shards);
        let window = Window::open(probe, &[("bench process", None)]);
        let load = self
            .runtime
            .block_on(run_load(self.engine, self.keys, tasks, self.opts, step));
        let backlog = Backlog::settle(sampler, probe, self.shards, self.writer, self.opts.drain);
        let costs = window.close(probe);
        let batches = Buckets::parse(&self.metrics.render(), batch_size).since(&before);
        Step {
            tasks,
            load,
            costs,
            batches,
            backlog,
            unpipelined: reference.run(probe, tasks, 1, self.opts.secs),
            pipelined: reference.run(probe, tasks, 16, self.opts.secs),
        }
    }
}

impl Step {
    /// Everything this step measured, with the ratios.
    fn print(&self, writer: bool) {
        let load = &self.load;
        println!(
            "\n== {} tasks: engine in-process, {} ==",
            self.tasks,
            writer_label(writer)
        );
        println!(
            "engine: {:.0} decisions/s ({} admitted, {} other, {} errors in {:.1} s), {}",
            load.rate(),
            load.admitted,
            load.other,
            load.errors,
            load.elapsed.as_secs_f64(),
            report::percentiles(&load.latency)
        );
        self.backlog.print();
        self.batches.print("batch sizes");
        report::print_costs(
            &self.costs,
            load.decisions(),
            " (the load tasks and the audit writer included)",
        );
        report::print_commands(&self.costs.commands, load.decisions());
        report::print_reference(&self.unpipelined);
        report::print_reference(&self.pipelined);
        print_ratios(self);
    }
}

fn main() {
    let opts = opts();
    println!("engine bench: {opts:?}");
    report::print_load_average("at the start");
    let redis = if opts.appendonly {
        common::TestRedis::with_args(&["--appendonly", "yes", "--appendfsync", "everysec"])
    } else {
        common::TestRedis::start()
    };
    let audit_dir = tempfile::tempdir().expect("audit dir");
    let config = config(&redis, &opts, audit_dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let metrics = quotad::app::install_metrics(&config.catalogue()).expect("metrics recorder");
    let stop_writer = CancellationToken::new();
    let (engine, keys, writer) = runtime.block_on(start(&config, opts.keys, stop_writer.clone()));
    let mut probe = Probe::new(&redis.client());
    let reference = Reference::load(&mut probe, redis.socket(), opts.ref_keys);
    let bench = Bench {
        runtime: &runtime,
        redis: &redis,
        engine: &engine,
        keys: &keys,
        metrics: &metrics,
        opts: &opts,
        shards: config.shards,
        writer: writer.is_some(),
    };
    let mut steps = Vec::new();
    for (i, &tasks) in opts.tasks.iter().enumerate() {
        let step = bench.step(&mut probe, &reference, tasks, i);
        step.print(writer.is_some());
        steps.push(step);
    }
    print_summary(&steps, writer.is_some(), opts.appendonly);
    stop_writer.cancel();
    if let Some(writer) = writer {
        runtime
            .block_on(writer.join())
            .expect("audit writer stops cleanly");
        let admitted = steps.iter().map(|s| s.load.admitted).sum();
        report::print_persisted(&audit_dir.path().join("audit.db"), admitted);
    }
    report::print_load_average("at the end");
    assert!(
        steps.iter().all(|s| s.backlog.drained()),
        "the audit backlog did not drain to 0 within {:?}",
        opts.drain
    );
}

/// The engine as `quotad serve` starts it (with its audit writer when the config says
/// so), and `keys` new keys on the unlimited `enterprise` tier.
async fn start(
    config: &Config,
    keys: usize,
    stop_writer: CancellationToken,
) -> (Engine, Arc<Vec<ApiKey>>, Option<quotad::audit::AuditWriter>) {
    let engine = Engine::new(
        config.store().expect("store"),
        config.catalogue(),
        config.engine_settings(),
        system_clock(),
    );
    engine.start().await.expect("engine starts");
    let writer = match config.audit.writer {
        true => Some(
            quotad::audit::spawn_writer(
                engine.store(),
                config.shards,
                config.catalogue(),
                &config.audit,
                stop_writer,
            )
            .await
            .expect("audit writer starts"),
        ),
        false => None,
    };
    let mut created = Vec::with_capacity(keys);
    for _ in 0..keys {
        created.push(common::new_key(&engine, "enterprise").await);
    }
    (engine, Arc::new(created), writer)
}

/// quotad's default settings on `redis`, as `quotad serve` would read them, with the
/// SQLite file in `dir` and the bench's overrides.
fn config(redis: &common::TestRedis, opts: &Opts, dir: &std::path::Path) -> Config {
    let url = redis.url();
    let db = dir.join("audit.db").display().to_string();
    let writer = opts.writer.to_string();
    let max_batch = opts.max_batch.map(|n| n.to_string());
    // `--windows 1`: the keys' tier gets two rate windows (1 s and 60 s) too wide to
    // refuse anything, so the run measures what checking and writing them costs.
    let tiers = opts.windows.then(|| {
        "enterprise = { retention_days = 365, rate_limits = [\
         { limit = 1000000000, window_secs = 1 }, { limit = 60000000000, window_secs = 60 }] }"
            .to_owned()
    });
    Config::load(None, |name| match name {
        "QUOTAD_TIERS" => tiers.clone(),
        "QUOTAD_REDIS_URL" => Some(url.clone()),
        "QUOTAD_AUDIT_DB" => Some(db.clone()),
        "QUOTAD_AUDIT_WRITER" => Some(writer.clone()),
        "QUOTAD_BATCH_MAX_DECISIONS" => max_batch.clone(),
        _ => None,
    })
    .expect("bench config")
}

/// `tasks` loops of consume for `opts.secs`, each on random keys.
async fn run_load(
    engine: &Engine,
    keys: &Arc<Vec<ApiKey>>,
    tasks: usize,
    opts: &Opts,
    step: usize,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (engine, keys, stop) = (engine.clone(), keys.clone(), stop.clone());
            let idem = opts.idem;
            tokio::spawn(async move { consume_loop(engine, keys, stop, idem, step, task).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(opts.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Load {
        admitted: 0,
        other: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: report::histogram(),
    };
    for handle in handles {
        let load = handle.await.expect("load task");
        total.admitted += load.admitted;
        total.other += load.other;
        total.errors += load.errors;
        total.latency.add(&load.latency).expect("same bounds");
    }
    total.elapsed = started.elapsed();
    total
}

/// One task: consume, one at a time, until `stop`.
async fn consume_loop(
    engine: Engine,
    keys: Arc<Vec<ApiKey>>,
    stop: Arc<AtomicBool>,
    idem: bool,
    step: usize,
    task: usize,
) -> Load {
    let mut rng = StdRng::seed_from_u64((step * 1000 + task) as u64);
    let mut load = Load {
        admitted: 0,
        other: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: report::histogram(),
    };
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        sent += 1;
        let key = &keys[rng.random_range(0..keys.len())];
        let idem = idem.then(|| format!("s{step}-t{task}-{sent}"));
        let req = ConsumeRequest::new(1, "/bench".into(), idem, Default::default())
            .expect("a valid request");
        let t = Instant::now();
        let result = engine.consume(key, &req).await;
        load.latency
            .saturating_record(t.elapsed().as_micros() as u64);
        match result {
            Ok(d) if d.allowed && !d.replayed => load.admitted += 1,
            Ok(_) => load.other += 1,
            Err(_) => load.errors += 1,
        }
    }
    load
}

fn writer_label(writer: bool) -> &'static str {
    match writer {
        true => "audit writer on",
        false => "audit writer off",
    }
}

/// Engine over reference, for decisions/s and for Redis CPU per decision.
fn print_ratios(step: &Step) {
    let redis_us = per_decision(step.costs.redis_cpu, step.load.decisions());
    println!(
        "ratios at {} tasks: engine decisions/s / reference unpipelined {:.2}, / -P 16 {:.2}; \
         Redis CPU per decision / reference unpipelined {:.2}, / -P 16 {:.2}",
        step.tasks,
        step.load.rate() / step.unpipelined.rate,
        step.load.rate() / step.pipelined.rate,
        redis_us / report::ref_redis_us(&step.unpipelined),
        redis_us / report::ref_redis_us(&step.pipelined),
    );
}

/// One line per step with every figure of the table.
fn print_summary(steps: &[Step], writer: bool, appendonly: bool) {
    println!(
        "\n== summary: engine in-process, {}, appendonly {} ==",
        writer_label(writer),
        if appendonly { "yes" } else { "no" }
    );
    println!(
        "{:>5} {:>10} {:>8} {:>9} {:>10} {:>9} {:>10} {:>10} {:>8} {:>8} {:>7} {:>7}",
        "tasks",
        "dec/s",
        "p99 ms",
        "redis µs",
        "bench µs",
        "batch",
        "ref dec/s",
        "P16 dec/s",
        "ref µs",
        "P16 µs",
        "/ref",
        "/P16"
    );
    for s in steps {
        let n = s.load.decisions();
        let bench_cpu = s.costs.processes.first().map_or(0.0, |p| p.1);
        println!(
            "{:>5} {:>10.0} {:>8.3} {:>9.2} {:>10.2} {:>9.1} {:>10.0} {:>10.0} {:>8.2} {:>8.2} {:>7.2} {:>7.2}",
            s.tasks,
            s.load.rate(),
            s.load.latency.value_at_quantile(0.99) as f64 / 1000.0,
            per_decision(s.costs.redis_cpu, n),
            per_decision(bench_cpu, n),
            s.batches.mean(),
            s.unpipelined.rate,
            s.pipelined.rate,
            report::ref_redis_us(&s.unpipelined),
            report::ref_redis_us(&s.pipelined),
            s.load.rate() / s.unpipelined.rate,
            s.load.rate() / s.pipelined.rate,
        );
    }
    println!(
        "(redis µs = Redis CPU per decision from INFO cpu, writer included; bench µs = this \
         process's CPU per decision, load tasks and writer included; batch = mean decisions \
         per EVALSHA; /ref and /P16 = engine decisions/s over the reference's)"
    );
}
