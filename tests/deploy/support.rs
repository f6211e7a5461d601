//! Fixtures of the deploy kit tests: promtool, a real Prometheus and a real
//! `quotad serve`, each in its own temp dir on free ports, killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::TestRedis;

/// The admin token the quotad of these tests accepts.
pub const ADMIN_TOKEN: &str = "deploy-test-admin-token";

/// How long a process may take to start on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A file of the deploy kit, by its path from the repository root.
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A file of the deploy kit as text.
pub fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// A YAML file of the deploy kit, merge keys (`<<: *anchor`) applied.
pub fn yaml(rel: &str) -> serde_yaml_ng::Value {
    let mut value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is YAML: {e}"));
    value.apply_merge().expect("merge keys apply");
    value
}

/// A binary of Debian's prometheus package, or the path in `env_var`.
fn prometheus_binary(name: &str, env_var: &str) -> String {
    std::env::var(env_var).unwrap_or_else(|_| name.to_owned())
}

/// Runs `promtool` with `args` and returns its output, whatever the exit status.
pub fn promtool(args: &[&str]) -> Output {
    let bin = prometheus_binary("promtool", "QUOTAD_TEST_PROMTOOL");
    Command::new(&bin).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {bin} ({e}); the deploy tests need Debian's promtool: \
             apt-get install -y prometheus, or set QUOTAD_TEST_PROMTOOL"
        )
    })
}

/// Runs `promtool` and fails the test with its output unless it exits 0; returns stdout.
pub fn promtool_ok(args: &[&str]) -> String {
    let out = promtool(args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout.into_owned()
}

/// A port nobody listens on right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Lines of a pipe through a channel, so reads can time out.
fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
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

/// `quotad serve` as a process on 127.0.0.1 and a free port, on `redis`.
pub struct QuotadProcess {
    child: Child,
    /// `127.0.0.1:port` it listens on.
    pub addr: String,
}

impl QuotadProcess {
    /// Starts the binary and waits until it logs its address.
    pub fn start(redis: &TestRedis) -> QuotadProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quotad"))
            .arg("serve")
            .env_clear()
            .env("NO_COLOR", "1")
            .env("QUOTAD_LISTEN", "127.0.0.1:0")
            .env("QUOTAD_REDIS_URL", redis.url())
            .env("QUOTAD_AUDIT_DB", redis.dir().join("audit.db"))
            .env("QUOTAD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("QUOTAD_SHUTDOWN_GRACE_SECS", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("quotad starts");
        let stderr = lines(child.stderr.take().expect("stderr is piped"));
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = stderr
                .recv_timeout(left)
                .expect("quotad logs `quotad listening` within 60 s");
            if let Some(rest) = line
                .split("127.0.0.1:")
                .nth(1)
                .filter(|_| line.contains("quotad listening"))
            {
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                break format!("127.0.0.1:{port}");
            }
        };
        // Keep draining stderr, so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in stderr {});
        QuotadProcess { child, addr }
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for QuotadProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus of this test alone: temp dir, free port, killed on drop.
pub struct TestPrometheus {
    dir: tempfile::TempDir,
    child: Child,
    /// `http://127.0.0.1:port`.
    pub base: String,
    client: reqwest::Client,
}

impl TestPrometheus {
    /// Runs Prometheus on `config` (YAML text), with `alerts.yml` of the kit beside it,
    /// and waits until it is ready.
    pub async fn start(config: &str) -> TestPrometheus {
        let dir = tempfile::tempdir().expect("temp dir for prometheus");
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        std::fs::copy(
            repo_file("deploy/prometheus/alerts.yml"),
            dir.path().join("alerts.yml"),
        )
        .expect("copy alerts.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let bin = prometheus_binary("prometheus", "QUOTAD_TEST_PROMETHEUS");
        let child = Command::new(&bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {bin} ({e}); the deploy tests need Debian's prometheus: \
                     apt-get install -y prometheus, or set QUOTAD_TEST_PROMETHEUS"
                )
            });
        let mut prometheus = TestPrometheus {
            dir,
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: client(),
        };
        prometheus.wait_ready().await;
        prometheus
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll prometheus") {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            let ready = self
                .client
                .get(format!("{}/-/ready", self.base))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready within 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What Prometheus logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>`: the `data` of a successful answer.
    pub async fn api(&self, path: &str) -> serde_json::Value {
        let url = format!("{}/api/v1/{path}", self.base);
        let response = self.client.get(&url).send().await.expect("the API answers");
        let status = response.status();
        let json: serde_json::Value = response.json().await.expect("the API answers JSON");
        assert_eq!(status, 200, "GET {url}: {json}");
        json["data"].clone()
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client whose every request is bounded (5 s).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client")
}
