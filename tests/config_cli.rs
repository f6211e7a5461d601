//! The `quotad` binary refuses bad settings and bad command lines with one clear
//! line and exit 64 (EX_USAGE), prints help and version with exit 0, and writes
//! logs as configured (JSON lines, or text without colour codes off a terminal).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TestRedis;

const EX_USAGE: i32 = 64;

/// The binary with an empty environment: only what a test sets reaches it.
fn quotad(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quotad"));
    cmd.args(args).env_clear();
    cmd
}

/// Runs `cmd` to its end; a quotad that does not exit within 30 s (a regression that
/// starts serving instead of refusing) is killed and fails the test.
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quotad runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child
        .try_wait()
        .expect("quotad can be waited for")
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("quotad did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("quotad's output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts exit 64 and that stderr is exactly one line starting with `prefix`.
fn assert_usage_error(out: &Output, prefix: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(EX_USAGE), "stderr: {err}");
    assert!(err.starts_with(prefix), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("quotad.toml");
    std::fs::write(&path, text).expect("config file written");
    path
}

#[test]
fn a_typo_in_a_tier_field_exits_64_naming_the_field_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "shards = 4\n[tiers.free]\nmonthy_limit = 5\n");
    let out = run(&mut quotad(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
    ]));
    assert_usage_error(
        &out,
        &format!(
            "quotad: tiers.free.monthy_limit ({} line 3): unknown field; expected one of ",
            config.display()
        ),
    );
    assert!(stderr(&out).contains("monthly_limit"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn a_garbage_listen_variable_exits_64_naming_the_variable() {
    let out = run(quotad(&["serve"]).env("QUOTAD_LISTEN", "garbage"));
    assert_eq!(out.status.code(), Some(EX_USAGE));
    assert_eq!(
        stderr(&out),
        "quotad: listen (from QUOTAD_LISTEN): expected a socket address such as 127.0.0.1:8080, got \"garbage\"\n"
    );
}

#[test]
fn an_unknown_subcommand_exits_64() {
    let out = run(&mut quotad(&["frobnicate"]));
    assert_eq!(out.status.code(), Some(EX_USAGE), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unrecognized subcommand 'frobnicate'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unknown_flag_exits_64() {
    let out = run(&mut quotad(&["serve", "--bogus"]));
    assert_eq!(out.status.code(), Some(EX_USAGE), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unexpected argument '--bogus'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_subcommand_exits_64() {
    let out = run(&mut quotad(&[]));
    assert_eq!(out.status.code(), Some(EX_USAGE), "{}", stderr(&out));
    assert!(stderr(&out).contains("Usage: quotad"), "{}", stderr(&out));
}

#[test]
fn help_exits_0_and_prints_usage_on_stdout() {
    let out = run(&mut quotad(&["--help"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("Usage: quotad"), "{}", stdout(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn version_exits_0_and_prints_the_version() {
    let out = run(&mut quotad(&["--version"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("quotad {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn keys_create_with_an_unknown_tier_exits_64_and_creates_nothing() {
    let redis = TestRedis::start();
    let out =
        run(quotad(&["keys", "create", "--tier", "nosuch"]).env("QUOTAD_REDIS_URL", redis.url()));
    assert_usage_error(
        &out,
        "quotad: unknown tier \"nosuch\"; the catalogue has enterprise, free, premium, pro",
    );
    let records: Vec<String> = redis::cmd("KEYS")
        .arg("quotad:*:key:*")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(records, Vec::<String>::new());
}

#[test]
fn keys_create_with_a_limit_above_2_pow_53_minus_1_exits_64() {
    let out = run(&mut quotad(&[
        "keys",
        "create",
        "--tier",
        "free",
        "--monthly-limit",
        "9007199254740992",
    ]));
    assert_eq!(out.status.code(), Some(EX_USAGE), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("--monthly-limit"), "{err}");
    assert!(
        err.contains("9007199254740992 is not in 0..=9007199254740991"),
        "{err}"
    );
}

/// A running `quotad serve`, killed on drop.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `quotad serve` on a free port with `vars`, and returns its stderr lines
/// up to and including the "quotad listening" line (bounded wait).
fn serve_until_listening(redis: &TestRedis, vars: &[(&str, &str)]) -> (Serving, Vec<String>) {
    let mut cmd = quotad(&["serve"]);
    cmd.env("QUOTAD_LISTEN", "127.0.0.1:0")
        .env("QUOTAD_REDIS_URL", redis.url())
        .env("QUOTAD_AUDIT_DB", redis.dir().join("audit.db"))
        .env("QUOTAD_ADMIN_TOKEN", "test-admin-token")
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Serving(cmd.spawn().expect("quotad starts"));
    let pipe = child.0.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no \"quotad listening\" line within 30 s: {lines:?}"));
        let done = line.contains("quotad listening");
        lines.push(line);
        if done {
            return (child, lines);
        }
    }
}

#[test]
fn serve_writes_json_log_lines_when_log_format_is_json() {
    let redis = TestRedis::start();
    let (_serving, lines) = serve_until_listening(&redis, &[("QUOTAD_LOG_FORMAT", "json")]);
    for line in &lines {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON line: {line:?}");
    }
    let listening: serde_json::Value =
        serde_json::from_str(lines.last().expect("the listening line")).unwrap();
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["message"], "quotad listening");
}

#[test]
fn text_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let redis = TestRedis::start();
    let (_serving, lines) = serve_until_listening(&redis, &[]);
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "escape code in {line:?}");
    }
    assert!(lines.last().unwrap().contains(" INFO "), "{lines:?}");
}

#[test]
fn keys_create_accepts_a_limit_of_2_pow_53_minus_1_exactly() {
    let redis = TestRedis::start();
    let out = run(quotad(&[
        "keys",
        "create",
        "--tier",
        "free",
        "--monthly-limit",
        "9007199254740991",
    ])
    .env("QUOTAD_REDIS_URL", redis.url()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let created: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON on stdout");
    assert_eq!(created["monthly_limit"], 9_007_199_254_740_991_u64);
}
