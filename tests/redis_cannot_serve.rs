//! Redis that answers but cannot serve now (out of memory, a replica, busy with a
//! script) is *unavailable*: 503, never an admission, never a crash, and it recovers.

mod common;

use std::time::{Duration, Instant};

use common::{engine, new_key, TestApp, TestRedis};
use quotad::engine::{system_clock, Engine, EngineError, EngineSettings};
use quotad::quota::{Catalogue, ConsumeRequest};
use quotad::store::Store;
use serde_json::{json, Value};

fn config_set(redis: &TestRedis, name: &str, value: &str) {
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(&mut redis.conn())
        .expect("CONFIG SET");
}

fn audit_entries(redis: &TestRedis) -> usize {
    common::audit_records(redis).len()
}

/// Asks `path` and expects 503 `backend_unavailable`.
async fn expect_503(app: &TestApp, method: reqwest::Method, path: &str, bearer: &str) {
    let resp = app
        .client
        .request(method, app.url(path))
        .bearer_auth(bearer)
        .json(&if path == "/v1/keys" {
            json!({"tier": "free"})
        } else {
            json!({})
        })
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "{path}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "backend_unavailable", "{path}");
}

#[tokio::test]
async fn an_oom_redis_is_503_everywhere_admits_nothing_and_recovers() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let key = new_key(&app.engine, "free").await;
    assert_eq!(app.consume(&key, json!({})).await.status(), 200);
    let entries = audit_entries(&redis);

    config_set(&redis, "maxmemory", "1");
    use reqwest::Method as M;
    for _ in 0..3 {
        expect_503(&app, M::POST, "/v1/consume", key.expose()).await;
        expect_503(&app, M::GET, "/v1/authorize/x", key.expose()).await;
        expect_503(&app, M::GET, "/readyz", key.expose()).await;
        expect_503(&app, M::POST, "/v1/keys", &app.admin).await;
    }
    assert_eq!(audit_entries(&redis), entries, "nothing recorded while OOM");

    config_set(&redis, "maxmemory", "0");
    assert_eq!(app.consume(&key, json!({})).await.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(app.engine.key(&key.id()).await.unwrap().used, 2);
}

#[tokio::test]
async fn a_replica_is_unavailable_at_start_and_for_consumes() {
    let port = common::free_port();
    let master = TestRedis::with_args(&["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    let replica = TestRedis::with_args(&["--replicaof", "127.0.0.1", &port.to_string()]);
    let primary = engine(&master).await;
    let key = new_key(&primary, "free").await;

    let store = Store::new(&replica.url(), Duration::from_millis(250), 4).unwrap();
    let on_replica = Engine::new(
        store,
        Catalogue::default(),
        EngineSettings::default(),
        system_clock(),
    );
    match on_replica.start().await {
        Err(EngineError::Store(e)) => assert!(e.is_unavailable(), "{e:?}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    // The key record has replicated, so this is the replica refusing the write.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !common::dump_everything(&replica).contains(key.id().as_str()) {
        assert!(Instant::now() < deadline, "replication did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let req = ConsumeRequest::simple(1, "/").unwrap();
    for _ in 0..3 {
        match on_replica.consume(&key, &req).await {
            Err(EngineError::Store(e)) => assert!(e.is_unavailable(), "{e:?}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
    assert_eq!(primary.key(&key.id()).await.unwrap().used, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_busy_with_a_script_is_503_and_recovers_when_it_is_killed() {
    let redis = TestRedis::with_args(&["--busy-reply-threshold", "50"]);
    let app = TestApp::start(&redis).await;
    let key = new_key(&app.engine, "free").await;
    let mut conn = redis.conn();
    let busy = std::thread::spawn(move || {
        redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query::<()>(&mut conn)
    });
    // Once the script has run past the threshold, every other client gets BUSY.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ping: redis::RedisResult<String> = redis::cmd("PING").query(&mut redis.conn());
        if ping.is_err_and(|e| e.code() == Some("BUSY")) {
            break;
        }
        assert!(Instant::now() < deadline, "redis never became busy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    expect_503(&app, reqwest::Method::POST, "/v1/consume", key.expose()).await;
    expect_503(&app, reqwest::Method::GET, "/readyz", key.expose()).await;

    let () = redis::cmd("SCRIPT")
        .arg("KILL")
        .query(&mut redis.conn())
        .expect("SCRIPT KILL");
    assert!(busy.join().unwrap().is_err(), "the killed script fails");
    assert_eq!(app.consume(&key, json!({})).await.status(), 200);
    assert_eq!(app.engine.key(&key.id()).await.unwrap().used, 1);
}
