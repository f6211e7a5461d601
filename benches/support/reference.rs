//! The minimal one-call consume (`benches/minimal_consume.lua`) run by
//! `redis-benchmark` against the bench's own Redis, on database 1 so quotad's data is
//! untouched, at a given concurrency, unpipelined or pipelined.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::redis_stats::{Costs, Probe, Window};

/// The script.
pub const SCRIPT: &str = include_str!("../minimal_consume.lua");
/// The database the reference writes to (flushed before and after each run).
const DB: u8 = 1;
/// Requests of the calibration run, per unit of pipeline depth.
const CALIBRATION_REQUESTS: u64 = 20_000;
/// A limit no bench reaches: every reference call is an admission.
const LIMIT: &str = "1000000000000000";

/// The reference on one Redis: its socket and the script's SHA.
pub struct Reference {
    socket: PathBuf,
    sha: String,
    keys: u64,
}

/// What one redis-benchmark run measured.
#[derive(Debug, Clone)]
pub struct RefRun {
    /// Parallel connections (`-c`).
    pub clients: usize,
    /// Requests per pipeline (`-P`), 1 = unpipelined.
    pub pipeline: usize,
    /// Calls of the script Redis ran (`-n`, or a little more with `-P`).
    pub requests: u64,
    /// requests/s as redis-benchmark reports it.
    pub rate: f64,
    /// Latency percentiles in ms, as redis-benchmark reports them.
    pub p50_ms: f64,
    /// p99 in ms.
    pub p99_ms: f64,
    /// Calls that found their idempotency key already stored (replays, a little cheaper).
    pub replays: u64,
    /// Redis's accounting of the run.
    pub costs: Costs,
}

/// `redis-benchmark`, or `QUOTAD_BENCH_REDIS_BENCHMARK`.
fn binary() -> String {
    std::env::var("QUOTAD_BENCH_REDIS_BENCHMARK").unwrap_or_else(|_| "redis-benchmark".to_owned())
}

impl Reference {
    /// Loads the script into the server at `socket` and checks that one call admits;
    /// `keys` is the number of distinct API keys the calls draw from.
    pub fn load(probe: &mut Probe, socket: PathBuf, keys: u64) -> Reference {
        let version = Command::new(binary()).arg("--version").output();
        if !version.is_ok_and(|o| o.status.success()) {
            panic!(
                "cannot run {}: the benches compare against redis-benchmark; \
                 apt-get install -y redis-tools (or set QUOTAD_BENCH_REDIS_BENCHMARK)",
                binary()
            );
        }
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT)
            .query(probe.conn())
            .expect("SCRIPT LOAD minimal_consume.lua");
        let reference = Reference { socket, sha, keys };
        reference.prepare(probe);
        let reply: Vec<i64> = redis::pipe()
            .cmd("SELECT")
            .arg(DB)
            .ignore()
            .cmd("EVALSHA")
            .arg(&reference.sha)
            .arg(4)
            .arg("mc:idem:check")
            .arg("mc:rec:000000000000")
            .arg("mc:use:000000000000")
            .arg("mc:audit")
            .arg(86_400_000)
            .arg("/bench")
            .cmd("SELECT")
            .arg(0)
            .ignore()
            .query::<(Vec<i64>,)>(probe.conn())
            .expect("one call of minimal_consume.lua")
            .0;
        assert_eq!(
            reply,
            vec![1, 1],
            "minimal_consume.lua admits its first call"
        );
        probe.flush_db(DB);
        reference
    }

    /// Runs the reference at `clients` connections and `pipeline` depth for about
    /// `secs` (a short calibration run sizes `-n`).
    pub fn run(&self, probe: &mut Probe, clients: usize, pipeline: usize, secs: f64) -> RefRun {
        self.prepare(probe);
        let calibration = self.benchmark(clients, pipeline, CALIBRATION_REQUESTS * pipeline as u64);
        let requests = ((calibration.0 * secs) as u64).max(10_000);
        self.prepare(probe);
        let window = Window::open(probe, &[]);
        let (rate, p50_ms, p99_ms) = self.benchmark(clients, pipeline, requests);
        let costs = window.close(probe);
        // Each call SETs once and XADDs once unless it replays; quotad is idle now (an
        // idle audit writer may still send an EVALSHA of its own). With -P,
        // redis-benchmark may send a little more than -n.
        let count = |name: &str| costs.commands.get(name).copied().unwrap_or_default();
        let (evalsha, calls, admitted) =
            (count("evalsha"), count("set").calls, count("xadd").calls);
        assert!(
            evalsha.calls >= calls && calls >= requests && evalsha.failed == 0,
            "every reference call runs without error: {evalsha:?}, {calls} SETs for -n {requests}"
        );
        probe.flush_db(DB);
        RefRun {
            clients,
            pipeline,
            requests: calls,
            rate,
            p50_ms,
            p99_ms,
            replays: calls - admitted,
            costs,
        }
    }

    /// An empty database 1 with every key record in place.
    fn prepare(&self, probe: &mut Probe) {
        probe.flush_db(DB);
        let mut pipe = redis::pipe();
        pipe.cmd("SELECT").arg(DB).ignore();
        for key in 0..self.keys {
            // redis-benchmark writes __rand_int__ as 12 zero-padded digits.
            pipe.cmd("SET")
                .arg(format!("mc:rec:{key:012}"))
                .arg(LIMIT)
                .ignore();
        }
        pipe.cmd("SELECT").arg(0).ignore();
        pipe.query::<()>(probe.conn())
            .expect("key records of the reference");
    }

    /// One redis-benchmark run: (requests/s, p50 ms, p99 ms).
    fn benchmark(&self, clients: usize, pipeline: usize, requests: u64) -> (f64, f64, f64) {
        let output = Command::new(binary())
            .arg("-s")
            .arg(&self.socket)
            .args(["--dbnum", &DB.to_string()])
            .args(["-c", &clients.to_string()])
            .args(["-n", &requests.to_string()])
            .args(["-r", &self.keys.to_string()])
            .args(["-P", &pipeline.to_string()])
            .arg("--csv")
            .args(["EVALSHA", &self.sha, "4"])
            // Two draws make the idempotency keys practically unique (keys² of them).
            .arg("mc:idem:__rand_int__:__rand_int__")
            .arg("mc:rec:__rand_int__")
            .arg("mc:use:__rand_int__")
            .arg("mc:audit")
            .arg(Duration::from_secs(86_400).as_millis().to_string())
            .arg("/bench")
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", binary()));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "redis-benchmark failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        parse_csv(&stdout)
            .unwrap_or_else(|| panic!("cannot read redis-benchmark's CSV output: {stdout}"))
    }
}

/// `"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",…,"p99_latency_ms",…`:
/// (rps, p50, p99) of the last row.
fn parse_csv(out: &str) -> Option<(f64, f64, f64)> {
    let row = out.lines().rev().find(|l| l.starts_with("\"EVALSHA"))?;
    let fields: Vec<&str> = row.split("\",\"").map(|f| f.trim_matches('"')).collect();
    let num = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((num(1)?, num(4)?, num(6)?))
}
