//! `quotad serve` as a process: the generated admin token, refusing to start without
//! one off loopback, and exit 0 on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::TestRedis;
use serde_json::{json, Value};

fn quotad(redis: &TestRedis, listen: &str) -> Command {
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

fn wait_for(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no line containing {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// The `http://127.0.0.1:port` the server logs when it listens.
fn base_url(stderr: &mpsc::Receiver<String>) -> String {
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

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill(1) runs");
    assert!(status.success());
}

#[tokio::test]
async fn serve_prints_a_generated_token_once_and_exits_0_on_sigterm() {
    let redis = TestRedis::start();
    let mut child = quotad(&redis, "127.0.0.1:0")
        .spawn()
        .expect("quotad starts");
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    wait_for(&stdout, "generated admin token");
    let token_line = wait_for(&stdout, "export ADMIN=");
    let token = token_line.strip_prefix("export ADMIN=").unwrap().to_owned();
    let base = base_url(&stderr);
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/v1/keys"))
        .bearer_auth(&token)
        .json(&json!({"tier": "free"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let key: Value = created.json().await.unwrap();
    let consumed = client
        .post(format!("{base}/v1/consume"))
        .bearer_auth(key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(consumed.status(), 200);

    sigterm(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = stdout.try_iter().collect();
    assert!(rest.iter().all(|l| !l.contains(&token)), "printed once");
    let logs: Vec<String> = stderr.try_iter().collect();
    assert!(
        logs.iter().all(|l| !l.contains(&token)),
        "the token is never logged"
    );
}

#[test]
fn serve_refuses_a_public_listener_without_an_admin_token() {
    let redis = TestRedis::start();
    let out = quotad(&redis, "0.0.0.0:0").output().expect("quotad runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin_token"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn serve_starts_without_redis_answers_503_and_becomes_ready_when_it_appears() {
    let mut redis = TestRedis::start();
    redis.kill();
    let mut child = quotad(&redis, "127.0.0.1:0")
        .env("QUOTAD_ADMIN_TOKEN", "t")
        .spawn()
        .expect("quotad starts");
    let stderr = lines(child.stderr.take().unwrap());
    let base = base_url(&stderr);
    let client = reqwest::Client::new();
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let consume = client
        .post(format!("{base}/v1/consume"))
        .bearer_auth("qk_some-key-some-key")
        .send()
        .await
        .unwrap();
    assert_eq!(consume.status(), 503);
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(std::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[tokio::test]
async fn serve_started_on_an_oom_redis_keeps_running_with_503_and_recovers() {
    let redis = TestRedis::start();
    let engine = common::engine(&redis).await;
    let key = common::new_key(&engine, "free").await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query(&mut redis.conn())
        .unwrap();
    let mut child = quotad(&redis, "127.0.0.1:0")
        .env("QUOTAD_ADMIN_TOKEN", "t")
        .spawn()
        .expect("quotad starts");
    let stderr = lines(child.stderr.take().unwrap());
    let base = base_url(&stderr);
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503);
        let consume = client
            .post(format!("{base}/v1/consume"))
            .bearer_auth(key.expose())
            .send()
            .await
            .unwrap();
        assert_eq!(consume.status(), 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(child.try_wait().unwrap().is_none(), "quotad must not exit");

    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut redis.conn())
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let body: Value = loop {
        let resp = client.get(format!("{base}/readyz")).send().await.unwrap();
        if resp.status() == 200 {
            break resp.json().await.unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The test Redis does not persist: readiness, the gauge and the log say so.
    assert_eq!(body["appendonly"], false);
    assert_eq!(body["writer"], "active");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("quotad_redis_appendonly 0"), "{metrics}");
    let consume = client
        .post(format!("{base}/v1/consume"))
        .bearer_auth(key.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(consume.status(), 200);
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let logs: Vec<String> = stderr.try_iter().collect();
    assert!(
        logs.iter().any(|l| l.contains("without appendonly")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn serve_started_while_redis_is_down_keeps_running_when_it_comes_back_full() {
    let mut redis = TestRedis::with_args(&["--maxmemory", "1"]);
    redis.kill();
    let mut child = quotad(&redis, "127.0.0.1:0")
        .env("QUOTAD_ADMIN_TOKEN", "t")
        .spawn()
        .expect("quotad starts");
    let stderr = lines(child.stderr.take().unwrap());
    let base = base_url(&stderr);
    let client = reqwest::Client::new();
    redis.restart();
    // Several start retries (one a second) meet an out-of-memory Redis.
    for _ in 0..15 {
        let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(child.try_wait().unwrap().is_none(), "quotad must not exit");
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut redis.conn())
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(std::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
