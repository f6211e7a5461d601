//! Input that must be refused (400, nothing changed) and integers that must stay exact.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{new_key, new_key_with, TestApp, TestRedis};
use quotad::engine::{system_clock, Engine, EngineSettings, NewKey};
use quotad::quota::{Catalogue, Tier, MAX_EXACT_INT};
use quotad::store::Store;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn a_replay_answers_exactly_like_the_first_call_at_large_limits() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    for limit in [123_456_789_012_345, MAX_EXACT_INT] {
        let key = new_key_with(&app.engine, "free", Some(limit)).await;
        let call = || {
            app.client
                .post(app.url("/v1/consume"))
                .bearer_auth(key.expose())
                .header("idempotency-key", "exact")
                .json(&json!({"cost": 7}))
        };
        let mut first: Value = common::json_of(call()).await;
        let mut again: Value = common::json_of(call()).await;
        assert_eq!(first["limit"].as_u64(), Some(limit));
        assert_eq!(first["used"].as_u64(), Some(7));
        assert_eq!(first["remaining"].as_u64(), Some(limit - 7));
        assert_eq!(again["replayed"], true);
        first["replayed"] = Value::Null;
        again["replayed"] = Value::Null;
        assert_eq!(first, again, "limit {limit}");
        let view = common::json_of(app.admin(Method::GET, &format!("/v1/keys/{}", key.id()))).await;
        assert_eq!(view["monthly_limit"].as_u64(), Some(limit));
        assert_eq!(view["remaining"].as_u64(), Some(limit - 7));
    }
}

#[tokio::test]
async fn integers_past_2_53_are_refused_and_change_nothing() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let key = new_key_with(&app.engine, "free", Some(5)).await;
    let path = format!("/v1/keys/{}", key.id());
    for limit in [
        "9007199254740992",
        "123456789012345678",
        "9223372036854775807",
    ] {
        let body = format!(r#"{{"tier": "free", "monthly_limit": {limit}}}"#);
        let created = app
            .admin(Method::POST, "/v1/keys")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 400, "{limit}");
        let patch = format!(r#"{{"monthly_limit": {limit}}}"#);
        let patched = app
            .admin(Method::PATCH, &path)
            .header("content-type", "application/json")
            .body(patch)
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), 400, "{limit}");
        let err: Value = patched.json().await.unwrap();
        assert_eq!(err["error"], "bad_request");
    }
    let view = common::json_of(app.admin(Method::GET, &path)).await;
    assert_eq!(view["monthly_limit"], 5);
}

#[tokio::test]
async fn consume_refuses_unknown_fields_and_bad_endpoints_and_charges_nothing() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let key = new_key(&app.engine, "free").await;
    let resp = app.consume(&key, json!({"cots": 5})).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(err["message"].as_str().unwrap().contains("`cots`"), "{err}");
    let long = format!("/{}", "a".repeat(1024));
    for endpoint in [
        "/a\u{0}b",
        "/a\r\nX-Evil: 1",
        "/a\u{7}",
        "/gnp.\u{202e}exe",
        &long,
    ] {
        let resp = app.consume(&key, json!({ "endpoint": endpoint })).await;
        assert_eq!(resp.status(), 400, "{endpoint:?}");
    }
    let ok = app.consume(&key, json!({"endpoint": &long[..1024]})).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(app.engine.key(&key.id()).await.unwrap().used, 1);
}

#[tokio::test]
async fn an_admin_can_read_a_key_whose_tier_this_node_lacks() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    // Another node, whose catalogue has "gold", created the key.
    let gold = Tier {
        monthly_limit: Some(50),
        retention_days: 7,
        rate_limits: Vec::new(),
    };
    let other = Engine::new(
        Store::new(&redis.url(), Duration::from_millis(250), 2).unwrap(),
        Catalogue::new(BTreeMap::from([("gold".to_owned(), gold)])),
        EngineSettings::default(),
        system_clock(),
    );
    let key = other
        .create_key(NewKey {
            tier: "gold".into(),
            key: None,
            name: None,
            monthly_limit: None,
        })
        .await
        .unwrap()
        .key
        .unwrap();
    let view = common::json_of(app.admin(Method::GET, &format!("/v1/keys/{}", key.id()))).await;
    assert_eq!(view["tier"], "gold");
    assert_eq!(view["tier_known"], false);
    assert!(view["limit"].is_null());
    let resp = app.consume(&key, json!({})).await;
    assert_eq!(resp.status(), 500);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"], "unknown_tier");
    let quota = app.quota(&key).await;
    assert_eq!(quota.status(), 500, "never treated as unlimited");
}
