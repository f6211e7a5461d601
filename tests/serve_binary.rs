//! `quotad serve` as a process: the generated admin token, refusing to start without
//! one off loopback, and exit 0 on SIGTERM.

mod common;

use std::time::Duration;

use common::serve::{serve_command, wait_for, ServeChild};
use common::TestRedis;
use serde_json::{json, Value};

/// The admin token `t` for a serve command.
fn with_token(mut cmd: std::process::Command) -> std::process::Command {
    cmd.env("QUOTAD_ADMIN_TOKEN", "t");
    cmd
}

/// `CONFIG SET maxmemory <bytes>` on `redis` (1 = out of memory for every write).
fn set_maxmemory(redis: &TestRedis, bytes: &str) {
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(bytes)
        .query(&mut redis.conn())
        .unwrap();
}

/// Polls `/readyz` until it answers 200 (within 15 s) and returns its body.
async fn ready_body(client: &reqwest::Client, base: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let resp = client.get(format!("{base}/readyz")).send().await.unwrap();
        if resp.status() == 200 {
            return resp.json().await.unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn serve_prints_a_generated_token_once_and_exits_0_on_sigterm() {
    let redis = TestRedis::start();
    let mut serve = ServeChild::spawn(serve_command(&redis, "127.0.0.1:0"));
    let stdout = serve.stdout.take().unwrap();
    wait_for(&stdout, "generated admin token");
    let token_line = wait_for(&stdout, "export ADMIN=");
    let token = token_line.strip_prefix("export ADMIN=").unwrap().to_owned();
    let base = serve.base.clone();
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

    assert_eq!(serve.terminate().code(), Some(0));
    let rest: Vec<String> = stdout.try_iter().collect();
    assert!(rest.iter().all(|l| !l.contains(&token)), "printed once");
    let logs: Vec<String> = serve.stderr.try_iter().collect();
    assert!(
        logs.iter().all(|l| !l.contains(&token)),
        "the token is never logged"
    );
}

#[test]
fn serve_refuses_a_public_listener_without_an_admin_token() {
    let redis = TestRedis::start();
    let out = serve_command(&redis, "0.0.0.0:0")
        .output()
        .expect("quotad runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin_token"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn serve_starts_without_redis_answers_503_and_becomes_ready_when_it_appears() {
    let mut redis = TestRedis::start();
    redis.kill();
    let mut serve = ServeChild::spawn(with_token(serve_command(&redis, "127.0.0.1:0")));
    let base = serve.base.clone();
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
    assert_eq!(serve.terminate().code(), Some(0));
}

#[tokio::test]
async fn serve_started_on_an_oom_redis_keeps_running_with_503_and_recovers() {
    let redis = TestRedis::start();
    let engine = common::engine(&redis).await;
    let key = common::new_key(&engine, "free").await;
    set_maxmemory(&redis, "1");
    let mut serve = ServeChild::spawn(with_token(serve_command(&redis, "127.0.0.1:0")));
    let base = serve.base.clone();
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
    assert!(serve.exited().is_none(), "quotad must not exit");

    set_maxmemory(&redis, "0");
    let body = ready_body(&client, &base).await;
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
    assert_eq!(serve.terminate().code(), Some(0));
    let logs: Vec<String> = serve.stderr.try_iter().collect();
    assert!(
        logs.iter().any(|l| l.contains("without appendonly")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn serve_started_while_redis_is_down_keeps_running_when_it_comes_back_full() {
    let mut redis = TestRedis::with_args(&["--maxmemory", "1"]);
    redis.kill();
    let mut serve = ServeChild::spawn(with_token(serve_command(&redis, "127.0.0.1:0")));
    let base = serve.base.clone();
    let client = reqwest::Client::new();
    redis.restart();
    // Several start retries (one a second) meet an out-of-memory Redis.
    for _ in 0..15 {
        let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(serve.exited().is_none(), "quotad must not exit");
    set_maxmemory(&redis, "0");
    ready_body(&client, &base).await;
    assert_eq!(serve.terminate().code(), Some(0));
}
