//! `quotad serve` as a child process of a test: its command, its output lines, the
//! address it logs, readiness; killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::TestRedis;

/// How long a child may take to start (and log a line) on a loaded machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `quotad serve` on `redis`, listening on `listen`, with an audit file in the Redis's
/// temp dir; the environment is cleared, stdout and stderr are piped.
pub fn serve_command(redis: &TestRedis, listen: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quotad"));
    cmd.arg("serve")
        .env_clear()
        .env("NO_COLOR", "1")
        .env("QUOTAD_LISTEN", listen)
        .env("QUOTAD_REDIS_URL", redis.url())
        .env("QUOTAD_AUDIT_DB", redis.dir().join("audit.db"))
        .env("QUOTAD_SHUTDOWN_GRACE_SECS", "5")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Lines of a pipe, delivered through a channel so reads can time out.
pub fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
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

/// The next line containing `needle`, within [`START_TIMEOUT`].
pub fn wait_for(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line containing {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// The `http://127.0.0.1:port` the server logs when it listens.
pub fn base_url(stderr: &mpsc::Receiver<String>) -> String {
    let listening = wait_for(stderr, "quotad listening");
    let port: String = listening
        .split("127.0.0.1:")
        .nth(1)
        .expect("the address is logged")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    format!("http://127.0.0.1:{port}")
}

/// A running `quotad serve`, with its output as lines; killed on drop.
pub struct ServeChild {
    child: Child,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// Stdout lines (the generated token, the examples), if it was piped.
    pub stdout: Option<mpsc::Receiver<String>>,
    /// Stderr lines after the "listening" line.
    pub stderr: mpsc::Receiver<String>,
}

impl ServeChild {
    /// Spawns `cmd` (built with [`serve_command`]) and waits until it logs its address.
    pub fn spawn(mut cmd: Command) -> ServeChild {
        let mut child = cmd.spawn().expect("quotad serve starts");
        let stdout = child.stdout.take().map(lines);
        let stderr = lines(child.stderr.take().expect("stderr is piped"));
        let base = base_url(&stderr);
        ServeChild {
            child,
            base,
            stdout,
            stderr,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `/readyz` answers 200, within [`START_TIMEOUT`].
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let client = reqwest::Client::new();
        loop {
            let ready = client.get(self.url("/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "quotad did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll quotad")
    }

    /// Sends SIGTERM (the drain) and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success());
        self.child.wait().expect("reap quotad")
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
