//! Key administration over HTTP, readiness, and h2c.

mod common;

use common::{TestApp, TestRedis};
use quotad::quota::ApiKey;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn keys_admin_get_or_create_patch_and_delete() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let resp = app
        .admin(Method::POST, "/v1/keys")
        .json(&json!({"tier": "pro", "name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("qk_"));
    let id = ApiKey::parse(&key).unwrap().id().to_string();
    assert_eq!(created["key_id"], id);
    assert_eq!(created["tier"], "pro");
    assert_eq!(created["active"], true);
    assert_eq!(created["name"], "acme");
    assert!(created["monthly_limit"].is_null());
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    let supplied = json!({"tier": "free", "key": "caller-chosen-key-0001"});
    let first = app
        .admin(Method::POST, "/v1/keys")
        .json(&supplied)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["key"], "caller-chosen-key-0001");
    let again = json!({"tier": "premium", "key": "caller-chosen-key-0001"});
    let second = app
        .admin(Method::POST, "/v1/keys")
        .json(&again)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert!(second.get("key").is_none());
    assert_eq!(
        second["tier"], "free",
        "an existing key is returned unchanged"
    );

    let path = format!("/v1/keys/{id}");
    let patch = |body: Value| app.admin(Method::PATCH, &path).json(&body).send();
    let steps = [
        (json!({"monthly_limit": 5}), json!(5), "pro", true),
        (json!({}), json!(5), "pro", true),
        (json!({"tier": "premium"}), json!(5), "premium", true),
        (json!({"monthly_limit": null}), Value::Null, "premium", true),
        (json!({"active": false}), Value::Null, "premium", false),
        (json!({"active": true}), Value::Null, "premium", true),
    ];
    for (body, limit, tier, active) in steps {
        let resp = patch(body.clone()).await.unwrap();
        assert_eq!(resp.status(), 200, "{body}");
        let record: Value = resp.json().await.unwrap();
        assert_eq!(record["monthly_limit"], limit, "{body}");
        assert_eq!(record["tier"], tier, "{body}");
        assert_eq!(record["active"], active, "{body}");
        assert_eq!(record["name"], "acme", "{body}");
    }
    let view: Value = common::json_of(app.admin(Method::GET, &path)).await;
    for field in [
        "period",
        "limit",
        "used",
        "remaining",
        "reset_at",
        "created_at",
    ] {
        assert!(view.get(field).is_some(), "{field} in {view}");
    }
    assert_eq!(view["limit"], 50_000);
    assert_eq!(view["used"], 0);

    let resp = app.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = app
        .client
        .post(app.url("/v1/consume"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let view: Value = common::json_of(app.admin(Method::GET, &path)).await;
    assert_eq!(view["active"], false);

    let unknown = "/v1/keys/ffffffffffffffffffffffffffffffff";
    let resp = app
        .admin(Method::PATCH, unknown)
        .json(&json!({"tier": "pro"}))
        .send()
        .await;
    assert_eq!(resp.unwrap().status(), 404);
    let resp = app.admin(Method::GET, unknown).send().await.unwrap();
    assert_eq!(resp.status(), 404, "PATCH never creates");
}

#[tokio::test]
async fn readyz_reports_the_catalogue_and_h2c_is_served() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let body: Value = common::json_of(app.client.get(app.url("/readyz"))).await;
    assert_eq!(
        body,
        json!({"status": "ready", "catalogue_mismatch": false, "appendonly": false, "writer": "off"})
    );

    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    let client = Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<bytes::Bytes>>();
    let resp = client
        .get(app.url("/healthz").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"status":"ok"}"#);
}
