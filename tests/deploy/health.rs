//! `quotad health`, run as a container's HEALTHCHECK runs it.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::TestRedis;
use crate::support::{self as d, QuotadProcess};

/// `quotad health ARGS` with `env`, as a container's HEALTHCHECK runs it.
fn health(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quotad"))
        .arg("health")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("quotad health runs")
}

fn one_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    text
}

#[test]
fn health_exits_0_with_one_line_when_quotad_answers() {
    let redis = TestRedis::start();
    let quotad = QuotadProcess::start(&redis);
    let out = health(&["--url", &quotad.url("")], &[]);
    assert_eq!(out.status.code(), Some(0));
    let line = one_line(&out.stdout);
    assert!(
        line.contains(&format!("{} answered 200", quotad.url("/healthz"))),
        "{line}"
    );
}

#[test]
fn health_defaults_to_the_listen_setting_with_wildcards_on_loopback() {
    let redis = TestRedis::start();
    let quotad = QuotadProcess::start(&redis);
    let port = quotad.addr.rsplit(':').next().expect("a port");
    let out = health(
        &["--ready"],
        &[("QUOTAD_LISTEN", &format!("0.0.0.0:{port}"))],
    );
    assert_eq!(out.status.code(), Some(0));
    let line = one_line(&out.stdout);
    assert!(
        line.contains(&format!("{} answered 200", quotad.url("/readyz"))),
        "{line}"
    );
}

#[test]
fn health_ready_exits_1_when_redis_is_down() {
    let mut redis = TestRedis::start();
    let quotad = QuotadProcess::start(&redis);
    redis.kill();
    let out = health(&["--ready", "--url", &quotad.url("")], &[]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out.stderr);
    assert!(line.contains("answered 503"), "{line}");
    assert!(line.contains("backend_unavailable"), "{line}");
    // The process itself is still alive.
    assert_eq!(
        health(&["--url", &quotad.url("")], &[]).status.code(),
        Some(0)
    );
}

#[test]
fn health_exits_1_when_nothing_listens() {
    let url = format!("http://127.0.0.1:{}", d::free_port());
    let out = health(&["--url", &url], &[]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out.stderr);
    assert!(line.contains(&format!("{url}/healthz")), "{line}");
}

#[test]
fn health_gives_up_on_a_silent_server_within_its_timeout() {
    // The kernel accepts the connection into the backlog; nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", silent.local_addr().expect("addr"));
    let started = Instant::now();
    let out = health(&["--url", &url], &[]);
    let bound = quotad::health::TIMEOUT + Duration::from_secs(3);
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out.stderr);
    assert!(line.contains("no answer within 2s"), "{line}");
}
