//! Failing closed and shutting down: Redis down or paused, drains with requests in flight.

mod common;

use std::time::{Duration, Instant};

use common::{new_key, TestApp, TestRedis};
use quotad::engine::{system_clock, Engine, EngineSettings};
use quotad::quota::Catalogue;
use quotad::store::Store;
use serde_json::{json, Value};

/// Redis that keeps its data across `kill` + `restart`.
fn durable_redis() -> TestRedis {
    TestRedis::with_args(&["--appendonly", "yes", "--appendfsync", "always"])
}

#[tokio::test]
async fn redis_down_answers_503_never_200_and_the_same_server_recovers() {
    let mut redis = durable_redis();
    let app = TestApp::start(&redis).await;
    let key = new_key(&app.engine, "free").await;
    assert_eq!(app.consume(&key, json!({})).await.status(), 200);

    redis.kill();
    for path in ["/v1/consume", "/v1/quota", "/v1/authorize/x", "/readyz"] {
        for _ in 0..3 {
            let method = if path == "/v1/consume" {
                reqwest::Method::POST
            } else {
                reqwest::Method::GET
            };
            let resp = app
                .client
                .request(method, app.url(path))
                .bearer_auth(key.expose())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 503, "{path}");
            assert_eq!(resp.headers()["retry-after"], "1", "{path}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "backend_unavailable", "{path}");
        }
    }

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.consume(&key, json!({})).await.status().as_u16();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only 503 until Redis is back");
        assert!(Instant::now() < deadline, "service did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let view = app.engine.key(&key.id()).await.unwrap();
    assert_eq!(view.used, 2, "nothing was counted while Redis was down");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn a_paused_redis_is_503_after_the_timeout_then_200() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let key = new_key(&app.engine, "pro").await;
    assert_eq!(app.consume(&key, json!({})).await.status(), 200);
    let mut conn = redis.conn();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(800)
        .arg("ALL")
        .query(&mut conn)
        .unwrap();
    let resp = app.consume(&key, json!({})).await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "backend_unavailable");
    // Every client is paused, this one too: wait for the pause to end by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.consume(&key, json!({})).await.status().as_u16();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only 503 while Redis is paused");
        assert!(Instant::now() < deadline, "service did not resume");
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_and_finishes_requests_in_flight() {
    let redis = TestRedis::start();
    // A generous Redis timeout: the in-flight requests wait out a CLIENT PAUSE.
    let store = Store::new(&redis.url(), Duration::from_secs(5), 16).unwrap();
    let engine = Engine::new(
        store,
        Catalogue::default(),
        EngineSettings::default(),
        system_clock(),
    );
    engine.start().await.unwrap();
    let mut app = TestApp::with_engine(engine, common::unregistered_metrics()).await;
    let key = new_key(&app.engine, "pro").await;
    let mut conn = redis.conn();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(700)
        .arg("WRITE")
        .query(&mut conn)
        .unwrap();
    let in_flight: Vec<_> = (0..8)
        .map(|i| {
            // A client per request: separate connections, all in flight at once.
            let client = reqwest::Client::new();
            let url = app.url("/v1/consume");
            let key = key.expose().to_owned();
            tokio::spawn(async move {
                client
                    .post(url)
                    .bearer_auth(key)
                    .json(&json!({"idempotency_key": format!("drain-{i}")}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(250)).await;
    app.shutdown.cancel();
    for request in in_flight {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    let drained = app.server.take().unwrap().await.unwrap();
    assert!(drained, "the drain finished within the grace period");
    let after = reqwest::Client::new().get(app.url("/healthz")).send().await;
    assert!(after.is_err(), "no new connections after shutdown");
    assert_eq!(app.engine.key(&key.id()).await.unwrap().used, 8);
}
