//! Forward-auth trusts nothing the end user controls (SPEC §4): no body, no client
//! Idempotency-Key unless the operator's auth URL opts in, cost from the auth URL.

mod common;

use common::{new_key_with, TestApp, TestRedis};
use quotad::quota::ApiKey;
use serde_json::{json, Value};

/// `used` of `key` this period, as the admin API reports it.
async fn used(app: &TestApp, key: &ApiKey) -> u64 {
    let view =
        common::json_of(app.admin(reqwest::Method::GET, &format!("/v1/keys/{}", key.id()))).await;
    view["used"].as_u64().expect("used is a number")
}

#[tokio::test]
async fn a_constant_idempotency_key_does_not_pass_requests_through_forward_auth() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let key = new_key_with(&app.engine, "free", Some(2)).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let resp = app
            .client
            .get(app.url("/v1/authorize/api/x"))
            .header("x-api-key", key.expose())
            .header("idempotency-key", "same")
            .send()
            .await
            .unwrap();
        assert!(resp.headers().get("x-quota-replayed").is_none());
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    assert_eq!(used(&app, &key).await, 2);
}

#[tokio::test]
async fn the_request_body_is_never_read() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let key = new_key_with(&app.engine, "free", Some(100)).await;
    let other = new_key_with(&app.engine, "free", Some(100)).await;
    let body = json!({"cost": 50, "idempotency_key": "same", "api_key": other.expose()});
    for _ in 0..3 {
        let resp = app
            .client
            .post(app.url("/v1/authorize"))
            .header("x-api-key", key.expose())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(used(&app, &key).await, 3, "cost 1 each, no replays");
    assert_eq!(
        used(&app, &other).await,
        0,
        "the body's api_key is not used"
    );
    // A key only in the body is no key at all here; malformed JSON is not even parsed.
    for raw in [body.to_string(), "{not json".to_owned()] {
        let resp = app
            .client
            .post(app.url("/v1/authorize"))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "missing_api_key");
    }
    assert_eq!(used(&app, &other).await, 0);
}

#[tokio::test]
async fn the_auth_url_sets_the_cost_and_bad_values_change_nothing() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let key = new_key_with(&app.engine, "free", Some(100)).await;
    let call = |query: &'static str| {
        app.client
            .get(app.url(&format!("/v1/authorize{query}")))
            .bearer_auth(key.expose())
            .send()
    };
    let resp = call("?cost=3").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-quota-remaining"], "97");
    assert_eq!(used(&app, &key).await, 3);
    for bad in ["?cost=0", "?cost=1000001", "?cost=two", "?idempotency=body"] {
        let resp = call(bad).await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "bad_request", "{bad}");
    }
    assert_eq!(used(&app, &key).await, 3);
}

#[tokio::test]
async fn idempotency_header_is_honoured_only_when_the_auth_url_opts_in() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let key = new_key_with(&app.engine, "free", Some(100)).await;
    let call = |path: &'static str| {
        app.client
            .get(app.url(path))
            .bearer_auth(key.expose())
            .header("idempotency-key", "order-42")
            .send()
    };
    let first = call("/v1/authorize?idempotency=header").await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("x-quota-replayed").is_none());
    let again = call("/v1/authorize?idempotency=header").await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["x-quota-replayed"], "true");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(used(&app, &key).await, 1);
    // On /v1/authorize/<path> the query is the end user's (Envoy appends it): it cannot
    // opt in, nor change the cost.
    for _ in 0..2 {
        let resp = call("/v1/authorize/api/x?idempotency=header&cost=9")
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("x-quota-replayed").is_none());
    }
    assert_eq!(used(&app, &key).await, 3);
}
