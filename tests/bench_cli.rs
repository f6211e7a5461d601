//! `quotad bench` as a process, against a real `quotad serve` child on a real Redis:
//! its counts match what quotad charged, replays, the open-loop rate, progress, and
//! its exit codes.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TestRedis;
use serde_json::{json, Value};

const ADMIN: &str = "bench-test-admin-token";

/// A `quotad serve` child on 127.0.0.1:0 over its own Redis, killed on drop.
struct Serve {
    child: Child,
    base: String,
    _redis: TestRedis,
}

impl Serve {
    /// Starts quotad and waits until `/readyz` answers 200.
    async fn start() -> Serve {
        let redis = TestRedis::start();
        let mut child = Command::new(env!("CARGO_BIN_EXE_quotad"))
            .arg("serve")
            .env_clear()
            .env("NO_COLOR", "1")
            .env("QUOTAD_LISTEN", "127.0.0.1:0")
            .env("QUOTAD_REDIS_URL", redis.url())
            .env("QUOTAD_AUDIT_DB", redis.dir().join("audit.db"))
            .env("QUOTAD_ADMIN_TOKEN", ADMIN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("quotad serve starts");
        let stderr = lines(child.stderr.take().expect("piped stderr"));
        let serve = Serve {
            base: base_url(&stderr),
            child,
            _redis: redis,
        };
        serve.wait_ready().await;
        serve
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            let ready = client.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "quotad not ready within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The sum of `used` of `key_ids`, read back through the admin API.
    async fn used_of(&self, key_ids: &[Value]) -> u64 {
        let client = reqwest::Client::new();
        let mut used = 0;
        for id in key_ids {
            let record: Value = client
                .get(format!("{}/v1/keys/{}", self.base, id.as_str().unwrap()))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            used += record["used"].as_u64().expect("used is a number");
        }
        used
    }

    /// Creates a key on `tier` through the admin API; returns (key, key_id).
    async fn create_key(&self, tier: &str) -> (String, String) {
        let created: Value = reqwest::Client::new()
            .post(format!("{}/v1/keys", self.base))
            .bearer_auth(ADMIN)
            .json(&json!({ "tier": tier }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let text = |f: &str| created[f].as_str().unwrap().to_owned();
        (text("key"), text("key_id"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of a pipe, delivered through a channel so reads can time out.
fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The `http://127.0.0.1:port` quotad logs when it listens.
fn base_url(stderr: &mpsc::Receiver<String>) -> String {
    loop {
        let line = stderr
            .recv_timeout(Duration::from_secs(20))
            .expect("quotad logs its address within 20 s");
        if let Some(rest) = line.split("quotad listening").nth(1) {
            let port: String = rest
                .split("127.0.0.1:")
                .nth(1)
                .expect("the address is logged")
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            return format!("http://127.0.0.1:{port}");
        }
    }
}

/// A finished `quotad bench`.
struct BenchRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl BenchRun {
    /// Stdout as the one JSON object it must be.
    fn report(&self) -> Value {
        assert!(self.status.success(), "bench failed: {}", self.stderr);
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}", self.stdout))
    }
}

/// Runs `quotad bench ARGS` with `env`; fails the test unless it exits `within`.
async fn bench(args: &[&str], env: &[(&str, &str)], within: Duration) -> BenchRun {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quotad"));
    cmd.arg("bench")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("quotad bench starts");
        let read = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                pipe.read_to_string(&mut text).expect("utf-8 output");
                text
            })
        };
        let stdout = read(Box::new(child.stdout.take().unwrap()));
        let stderr = read(Box::new(child.stderr.take().unwrap()));
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("quotad bench did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        BenchRun {
            status,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        }
    })
    .await
    .unwrap()
}

/// The outcome counts of a report, checked to sum to its total.
fn outcomes(report: &Value) -> (u64, Value) {
    let total = report["total"].as_u64().expect("total");
    let outcomes = report["outcomes"].clone();
    let sum: u64 = outcomes
        .as_object()
        .expect("outcomes is an object")
        .values()
        .map(|n| n.as_u64().expect("counts are numbers"))
        .sum();
    assert_eq!(sum, total, "outcomes {outcomes} sum to the total");
    (total, outcomes)
}

const RUN_BOUND: Duration = Duration::from_secs(90);

#[tokio::test]
async fn bench_json_counts_exactly_what_quotad_charged() {
    let serve = Serve::start().await;
    let run = bench(
        &[
            "--url",
            &serve.base,
            "--create-keys",
            "5",
            "--connections",
            "4",
            "--duration",
            "2",
            "--json",
        ],
        &[("QUOTAD_ADMIN_TOKEN", ADMIN)],
        RUN_BOUND,
    )
    .await;
    let report = run.report();
    let (total, outcomes) = outcomes(&report);
    assert!(total > 0, "{report}");
    assert_eq!(outcomes["allowed"].as_u64().unwrap(), total, "{outcomes}");
    let ids = report["created_key_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 5);
    assert_eq!(serve.used_of(ids).await, total);
    assert!(!run.stdout.contains(ADMIN) && !run.stderr.contains(ADMIN));
}

#[tokio::test]
async fn bench_with_replay_share_half_gets_replays_that_quotad_did_not_charge() {
    let serve = Serve::start().await;
    let run = bench(
        &[
            "--url",
            &serve.base,
            "--admin-token",
            ADMIN,
            "--create-keys",
            "5",
            "--connections",
            "4",
            "--duration",
            "2",
            "--replay-share",
            "0.5",
            "--json",
        ],
        &[],
        RUN_BOUND,
    )
    .await;
    let report = run.report();
    let (total, outcomes) = outcomes(&report);
    let allowed = outcomes["allowed"].as_u64().unwrap();
    let replayed = outcomes["replayed"].as_u64().unwrap();
    assert!(replayed > 0, "{outcomes}");
    assert_eq!(allowed + replayed, total, "{outcomes}");
    let ids = report["created_key_ids"].as_array().unwrap();
    assert_eq!(serve.used_of(ids).await, allowed);
}

#[tokio::test]
async fn bench_open_loop_at_50_per_second_for_2_s_sends_about_100() {
    let serve = Serve::start().await;
    let run = bench(
        &[
            "--url",
            &serve.base,
            "--create-keys",
            "5",
            "--connections",
            "4",
            "--rate",
            "50",
            "--duration",
            "2",
            "--json",
        ],
        &[("QUOTAD_ADMIN_TOKEN", ADMIN)],
        RUN_BOUND,
    )
    .await;
    let report = run.report();
    let (total, _) = outcomes(&report);
    assert_eq!(report["mode"], "open");
    assert!((60..=140).contains(&total), "sent {total}: {report}");
}

#[tokio::test]
async fn bench_with_a_key_file_needs_no_admin_token() {
    let serve = Serve::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut file, mut ids) = (String::new(), Vec::new());
    for _ in 0..3 {
        let (key, id) = serve.create_key("enterprise").await;
        file.push_str(&format!("{key}\n"));
        ids.push(Value::String(id));
    }
    let path = dir.path().join("keys.txt");
    std::fs::write(&path, file).unwrap();
    let run = bench(
        &[
            "--url",
            &serve.base,
            "--keys",
            path.to_str().unwrap(),
            "--connections",
            "2",
            "--duration",
            "1",
            "--json",
        ],
        &[],
        RUN_BOUND,
    )
    .await;
    let report = run.report();
    let (total, outcomes) = outcomes(&report);
    assert_eq!(outcomes["allowed"].as_u64().unwrap(), total, "{outcomes}");
    assert_eq!(report["keys"], 3);
    assert_eq!(report["created_key_ids"], json!([]));
    assert_eq!(serve.used_of(&ids).await, total);
}

#[tokio::test]
async fn bench_prints_a_plain_progress_line_a_second_on_stderr_and_a_table_on_stdout() {
    let serve = Serve::start().await;
    let run = bench(
        &[
            "--url",
            &serve.base,
            "--create-keys",
            "2",
            "--connections",
            "2",
            "--duration",
            "3",
        ],
        &[("QUOTAD_ADMIN_TOKEN", ADMIN)],
        RUN_BOUND,
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    let progress = run
        .stderr
        .lines()
        .filter(|l| l.contains("decisions/s") && l.contains("p99"))
        .count();
    assert!(progress >= 2, "progress lines: {}", run.stderr);
    assert!(!run.stderr.contains('\r'), "no \\r when stderr is a pipe");
    for row in ["allowed", "transport_error", "p50", "p90", "p99.9", "max"] {
        assert!(run.stdout.contains(row), "{row} missing: {}", run.stdout);
    }
}

#[tokio::test]
async fn bench_exits_64_naming_an_out_of_range_flag() {
    for (flag, value) in [("--replay-share", "2"), ("--connections", "0")] {
        let run = bench(
            &["--admin-token", ADMIN, flag, value],
            &[],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(
            run.status.code(),
            Some(64),
            "{flag} {value}: {}",
            run.stderr
        );
        assert!(run.stderr.contains(flag), "{}", run.stderr);
        assert!(run.stdout.is_empty());
    }
}

#[tokio::test]
async fn bench_exits_1_within_15_s_when_quotad_is_unreachable() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = bench(
        &["--url", &url, "--admin-token", ADMIN],
        &[],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot reach quotad at"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(ADMIN));
    assert!(run.stdout.is_empty());
}
