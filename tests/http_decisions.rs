//! Decisions over HTTP: rate-limit headers, idempotent replays, where the API key
//! comes from, forward-auth headers, and query-string keys never reaching Redis.

mod common;

use common::{engine_with, new_key, new_key_with, TestApp, TestClock, TestRedis};
use quotad::engine::EngineSettings;
use quotad::quota::ApiKey;
use reqwest::Method;
use serde_json::{json, Value};

/// A server whose clock stands still, so every duration header is exact.
async fn app_at(redis: &TestRedis, now: &str) -> TestApp {
    let clock = TestClock::at(now);
    let engine = engine_with(redis, EngineSettings::default(), clock.clock()).await;
    TestApp::with_engine(engine, common::unregistered_metrics()).await
}

#[tokio::test]
async fn decisions_carry_rate_limit_headers_and_denials_retry_after() {
    let redis = TestRedis::start();
    // 2 days before the end of a 30-day month.
    let app = app_at(&redis, "2026-11-29T00:00:00Z").await;
    let key = new_key_with(&app.engine, "free", Some(2)).await;
    let header_table = [
        (200, "1", "\"monthly\";r=1;t=172800"),
        (200, "0", "\"monthly\";r=0;t=172800"),
        (429, "0", "\"monthly\";r=0;t=172800"),
    ];
    for (i, (status, remaining, ratelimit)) in header_table.into_iter().enumerate() {
        let resp = app.consume(&key, json!({})).await;
        assert_eq!(resp.status().as_u16(), status, "call {i}");
        let h = resp.headers().clone();
        assert_eq!(
            h["ratelimit-policy"], "\"monthly\";q=2;w=2592000",
            "call {i}"
        );
        assert_eq!(h["ratelimit"], ratelimit, "call {i}");
        assert_eq!(h["ratelimit-limit"], "2", "call {i}");
        assert_eq!(h["ratelimit-remaining"], remaining, "call {i}");
        assert_eq!(h["ratelimit-reset"], "172800", "call {i}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["reset_at"], "2026-12-01T00:00:00Z");
        if status == 429 {
            assert_eq!(h["retry-after"], "172800");
            assert_eq!(body["error"], "quota_exceeded");
            assert_eq!(body["allowed"], false);
            assert_eq!(body["used"], 2);
            assert_eq!(body["remaining"], 0);
            assert!(body["audit_id"].is_null());
        } else {
            assert!(h.get("retry-after").is_none());
            assert!(body["audit_id"]
                .as_str()
                .is_some_and(|a| a.starts_with('q')));
        }
    }
    // GET /v1/quota: always 200, nothing consumed, allowed = something remains.
    let resp = app.quota(&key).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let expected = json!({"allowed": false, "key_id": key.id().to_string(), "tier": "free",
        "limit": 2, "used": 2, "remaining": 0, "reset_at": "2026-12-01T00:00:00Z",
        "replayed": false, "audit_id": null, "rate_limit": null});
    assert_eq!(body, expected);
    // Unlimited keys carry none of the rate-limit fields.
    let unlimited = new_key(&app.engine, "enterprise").await;
    let resp = app.consume(&unlimited, json!({"cost": 1000000})).await;
    assert_eq!(resp.status(), 200);
    for name in [
        "ratelimit",
        "ratelimit-policy",
        "ratelimit-limit",
        "retry-after",
    ] {
        assert!(resp.headers().get(name).is_none(), "{name}");
    }
    let body: Value = resp.json().await.unwrap();
    assert!(body["limit"].is_null() && body["remaining"].is_null());
}

#[tokio::test]
async fn idempotent_replays_answer_like_the_first_call_and_reuse_is_422() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let key = new_key(&app.engine, "pro").await;
    let first = app
        .client
        .post(app.url("/v1/consume"))
        .bearer_auth(key.expose())
        .header("idempotency-key", "\"order-42\"")
        .json(&json!({"cost": 3, "endpoint": "/orders"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    // The same key as a body field, without quotes, is the same idempotency key.
    let again = app
        .consume(
            &key,
            json!({"cost": 3, "endpoint": "/orders", "idempotency_key": "order-42"}),
        )
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["replayed"], true);
    for field in ["used", "remaining", "audit_id", "limit", "key_id"] {
        assert_eq!(again[field], first[field], "{field}");
    }
    let reused = app
        .consume(
            &key,
            json!({"cost": 4, "endpoint": "/orders", "idempotency_key": "order-42"}),
        )
        .await;
    assert_eq!(reused.status(), 422);
    let body: Value = reused.json().await.unwrap();
    assert_eq!(body["error"], "idempotency_key_reused");
    let view = app.engine.key(&key.id()).await.unwrap();
    assert_eq!(view.used, 3);
}

#[tokio::test]
async fn the_api_key_is_taken_from_bearer_x_api_key_body_then_query() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let key = new_key(&app.engine, "pro").await;
    let k = key.expose();
    let url = app.url("/v1/consume");
    let c = &app.client;
    let requests = vec![
        ("bearer", c.post(&url).bearer_auth(k)),
        ("x-api-key", c.post(&url).header("x-api-key", k)),
        ("body", c.post(&url).json(&json!({"api_key": k}))),
        ("query", c.post(format!("{url}?api_key={k}"))),
        (
            "bearer wins over a wrong x-api-key",
            c.post(&url).bearer_auth(k).header("x-api-key", "wrong"),
        ),
        (
            "x-api-key wins over a wrong body key",
            c.post(&url)
                .header("x-api-key", k)
                .json(&json!({"api_key": "wrong"})),
        ),
    ];
    for (name, req) in requests {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["key_id"], key.id().to_string(), "{name}");
    }
    let resp = c
        .post(&url)
        .bearer_auth("wrong-key-wrong-key")
        .header("x-api-key", k)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "the first key found is the one used");
}

#[tokio::test]
async fn authorize_sets_x_quota_headers_takes_the_endpoint_and_maps_denials() {
    let redis = TestRedis::start();
    let app = app_at(&redis, "2026-11-29T00:00:00Z").await;
    let key = new_key_with(&app.engine, "free", Some(3)).await;
    let k = key.expose();
    let c = &app.client;
    let base = app.url("/v1/authorize");
    let calls = vec![
        (
            "/api/a",
            c.get(&base)
                .bearer_auth(k)
                .header("x-original-uri", "/api/a?x=1"),
        ),
        (
            "/api/b",
            c.post(format!("{base}/ignored"))
                .header("x-api-key", k)
                .header("x-forwarded-uri", "/api/b?y=2"),
        ),
        (
            "/api/c/d",
            c.delete(format!("{base}/api/c/d?z=3")).bearer_auth(k),
        ),
    ];
    for (i, (endpoint, req)) in calls.into_iter().enumerate() {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{endpoint}");
        let h = resp.headers();
        assert_eq!(h["x-quota-key-id"], key.id().to_string());
        assert_eq!(h["x-quota-tier"], "free");
        assert_eq!(h["x-quota-limit"], "3");
        assert_eq!(h["x-quota-remaining"], (2 - i).to_string());
        assert_eq!(h["x-quota-reset"], "172800");
        assert_eq!(h["ratelimit-limit"], "3");
    }
    let endpoints = stream_field(&redis, "endpoint");
    assert_eq!(endpoints, ["/api/a", "/api/b", "/api/c/d"]);
    let denied = c.get(&base).bearer_auth(k).send().await.unwrap();
    assert_eq!(denied.status(), 429);
    assert_eq!(denied.headers()["x-quota-remaining"], "0");
    assert_eq!(denied.headers()["retry-after"], "172800");
    let denied = c
        .get(format!("{base}?deny_status=403"))
        .bearer_auth(k)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"], "quota_exceeded");
    let unlimited = new_key(&app.engine, "enterprise").await;
    let resp = c
        .get(&base)
        .bearer_auth(unlimited.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-quota-tier"], "enterprise");
    assert!(resp.headers().get("x-quota-limit").is_none());
    assert!(resp.headers().get("x-quota-remaining").is_none());
    assert!(resp.headers().get("ratelimit").is_none());
}

/// One field of every audit record, in stream order.
fn stream_field(redis: &TestRedis, field: &str) -> Vec<String> {
    common::audit_records(redis)
        .into_iter()
        .map(|r| r.get(field).cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_key_in_the_query_string_never_reaches_redis() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let key = ApiKey::parse("QUERY-STRING-SECRET-0123456789").unwrap();
    let created = app
        .admin(Method::POST, "/v1/keys")
        .json(&json!({"tier": "pro", "key": key.expose()}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let k = key.expose();
    let c = &app.client;
    // Forward-auth takes the key from headers only (SPEC §4): a query key there is 401.
    let urls = [
        (Method::POST, format!("/v1/consume?api_key={k}"), 200),
        (Method::GET, format!("/v1/quota?api_key={k}"), 200),
        (Method::GET, format!("/v1/authorize?api_key={k}"), 401),
        (
            Method::GET,
            format!("/v1/authorize/api/x?api_key={k}&a=b"),
            401,
        ),
    ];
    for (i, (method, path, status)) in urls.into_iter().enumerate() {
        let resp = c
            .request(method, app.url(&path))
            .header("x-original-uri", format!("/api/y?api_key={k}"))
            .header("idempotency-key", format!("idem-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{path}");
    }
    let resp = c
        .get(app.url(&format!("/v1/authorize/api/z?api_key={k}")))
        .header("x-api-key", k)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let dump = common::dump_everything(&redis);
    assert!(dump.contains("/api/z"), "{dump}");
    assert!(!dump.contains("QUERY-STRING-SECRET"), "{dump}");
}
