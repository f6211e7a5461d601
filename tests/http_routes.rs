//! SPEC §4 over real HTTP and a real Redis: every route and status code, table-driven.

mod common;

use common::{engine_with, new_key, new_key_with, TestApp, TestRedis};
use quotad::engine::EngineSettings;
use reqwest::Method;
use serde_json::{json, Value};

/// One request and what must come back.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
    status: u16,
    error: Option<&'static str>,
    message_has: Option<&'static str>,
}

fn case(name: &'static str, method: Method, path: &str) -> Case {
    Case {
        name,
        method,
        path: path.to_owned(),
        headers: Vec::new(),
        body: None,
        status: 200,
        error: None,
        message_has: None,
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
    fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }
    fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }
    fn expect(mut self, status: u16, error: Option<&'static str>) -> Self {
        self.status = status;
        self.error = error;
        self
    }
    fn naming(mut self, text: &'static str) -> Self {
        self.message_has = Some(text);
        self
    }

    async fn check(&self, app: &TestApp) -> reqwest::Response {
        let mut req = app.client.request(self.method.clone(), app.url(&self.path));
        for (name, value) in &self.headers {
            req = req.header(*name, value);
        }
        if let Some(body) = &self.body {
            req = req
                .header("content-type", "application/json")
                .body(body.clone());
        }
        let resp = req.send().await.expect(self.name);
        assert_eq!(resp.status().as_u16(), self.status, "{}", self.name);
        resp
    }

    async fn run(&self, app: &TestApp) {
        let resp = self.check(app).await;
        let Some(code) = self.error else { return };
        let headers = resp.headers().clone();
        let body: Value = resp.json().await.expect(self.name);
        assert_eq!(body["error"], code, "{}: {body}", self.name);
        let message = body["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{}: {body}", self.name);
        if let Some(text) = self.message_has {
            assert!(message.contains(text), "{}: {message}", self.name);
        }
        if self.status == 401 {
            assert_eq!(headers["www-authenticate"], "Bearer", "{}", self.name);
        }
    }
}

#[tokio::test]
async fn every_route_answers_its_spec_status_and_bad_input_changes_nothing() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let free = new_key(&app.engine, "free").await;
    let spent = new_key_with(&app.engine, "free", Some(1)).await;
    app.consume(&spent, json!({})).await;
    let idle = new_key(&app.engine, "free").await;
    let idle_id = idle.id().to_string();
    app.admin(Method::DELETE, &format!("/v1/keys/{idle_id}"))
        .send()
        .await
        .unwrap();
    let k = free.expose();
    let admin = app.admin.clone();
    let unknown_id = "0123456789abcdef0123456789abcdef";
    let free_id = free.id().to_string();
    let big_extras = json!({"error": "e".repeat(17 * 1024)}).to_string();
    let huge = json!({"error": "e".repeat(70 * 1024)}).to_string();
    use Method as M;
    let cases = vec![
        case("consume ok", M::POST, "/v1/consume")
            .bearer(k)
            .body("{}"),
        case("consume no key", M::POST, "/v1/consume").expect(401, Some("missing_api_key")),
        case("consume unknown key", M::POST, "/v1/consume")
            .bearer("qk_not-a-key-that-exists")
            .expect(403, Some("invalid_api_key")),
        case("consume inactive key", M::POST, "/v1/consume")
            .bearer(idle.expose())
            .expect(403, Some("invalid_api_key")),
        case("consume spent key", M::POST, "/v1/consume")
            .bearer(spent.expose())
            .expect(429, Some("quota_exceeded")),
        case("malformed json", M::POST, "/v1/consume")
            .bearer(k)
            .body("{\"cost\":")
            .expect(400, Some("bad_request")),
        case("json not an object", M::POST, "/v1/consume")
            .bearer(k)
            .body("[]")
            .expect(400, Some("bad_request")),
        case("cost zero", M::POST, "/v1/consume")
            .bearer(k)
            .body(r#"{"cost":0}"#)
            .expect(400, Some("bad_request"))
            .naming("cost"),
        case("cost too big", M::POST, "/v1/consume")
            .bearer(k)
            .body(r#"{"cost":1000001}"#)
            .expect(400, Some("bad_request"))
            .naming("cost"),
        case("cost wrong type", M::POST, "/v1/consume")
            .bearer(k)
            .body(r#"{"cost":"1"}"#)
            .expect(400, Some("bad_request"))
            .naming("cost"),
        case("endpoint wrong type", M::POST, "/v1/consume")
            .bearer(k)
            .body(r#"{"endpoint":7}"#)
            .expect(400, Some("bad_request"))
            .naming("endpoint"),
        case("idempotency key with space", M::POST, "/v1/consume")
            .bearer(k)
            .body(r#"{"idempotency_key":"a b"}"#)
            .expect(400, Some("bad_request"))
            .naming("idempotency_key"),
        case("idempotency header empty", M::POST, "/v1/consume")
            .bearer(k)
            .header("idempotency-key", "\"\"")
            .expect(400, Some("bad_request"))
            .naming("idempotency_key"),
        case("idempotency header too long", M::POST, "/v1/consume")
            .bearer(k)
            .header("idempotency-key", &"i".repeat(256))
            .expect(400, Some("bad_request")),
        case("audit extras over 16 KiB", M::POST, "/v1/consume")
            .bearer(k)
            .body(big_extras)
            .expect(400, Some("bad_request"))
            .naming("request, response and error"),
        case("body over 64 KiB", M::POST, "/v1/consume")
            .bearer(k)
            .body(huge)
            .expect(413, Some("payload_too_large")),
        case("consume wrong method", M::GET, "/v1/consume").expect(405, Some("method_not_allowed")),
        case("quota ok", M::GET, "/v1/quota").bearer(k),
        case("quota no key", M::GET, "/v1/quota").expect(401, Some("missing_api_key")),
        case("quota unknown key", M::GET, "/v1/quota")
            .header("x-api-key", "qk_nope-nope-nope-nope")
            .expect(403, Some("invalid_api_key")),
        case("quota wrong method", M::DELETE, "/v1/quota").expect(405, Some("method_not_allowed")),
        case("authorize no key", M::GET, "/v1/authorize/x").expect(401, Some("missing_api_key")),
        case("authorize ok", M::PUT, "/v1/authorize/x").bearer(k),
        case("unknown route", M::GET, "/v1/nope").expect(404, Some("not_found")),
        case("root", M::GET, "/").expect(404, Some("not_found")),
        case("keys no token", M::POST, "/v1/keys")
            .body(r#"{"tier":"free"}"#)
            .expect(401, Some("unauthorized")),
        case("keys wrong token", M::POST, "/v1/keys")
            .bearer("wrong")
            .body(r#"{"tier":"free"}"#)
            .expect(401, Some("unauthorized")),
        case(
            "keys end-user key is not admin",
            M::GET,
            &format!("/v1/keys/{free_id}"),
        )
        .bearer(k)
        .expect(401, Some("unauthorized")),
        case("keys unknown tier", M::POST, "/v1/keys")
            .bearer(&admin)
            .body(r#"{"tier":"gold"}"#)
            .expect(400, Some("unknown_tier")),
        case("keys missing tier", M::POST, "/v1/keys")
            .bearer(&admin)
            .body("{}")
            .expect(400, Some("bad_request"))
            .naming("tier"),
        case("keys bad supplied key", M::POST, "/v1/keys")
            .bearer(&admin)
            .body(r#"{"tier":"free","key":"short"}"#)
            .expect(400, Some("bad_request"))
            .naming("key"),
        case("keys create", M::POST, "/v1/keys")
            .bearer(&admin)
            .body(r#"{"tier":"free"}"#)
            .expect(201, None),
        case("keys wrong method", M::GET, "/v1/keys").expect(405, Some("method_not_allowed")),
        case("key get", M::GET, &format!("/v1/keys/{free_id}")).bearer(&admin),
        case(
            "key id uppercase",
            M::GET,
            &format!("/v1/keys/{}", free_id.to_uppercase()),
        )
        .bearer(&admin)
        .expect(404, Some("not_found")),
        case("key id short", M::GET, "/v1/keys/abc")
            .bearer(&admin)
            .expect(404, Some("not_found")),
        case("key unknown", M::GET, &format!("/v1/keys/{unknown_id}"))
            .bearer(&admin)
            .expect(404, Some("not_found")),
        case(
            "key patch unknown",
            M::PATCH,
            &format!("/v1/keys/{unknown_id}"),
        )
        .bearer(&admin)
        .body(r#"{"active":true}"#)
        .expect(404, Some("not_found")),
        case(
            "key patch unknown tier",
            M::PATCH,
            &format!("/v1/keys/{free_id}"),
        )
        .bearer(&admin)
        .body(r#"{"tier":"gold"}"#)
        .expect(400, Some("unknown_tier")),
        case(
            "key patch bad active",
            M::PATCH,
            &format!("/v1/keys/{free_id}"),
        )
        .bearer(&admin)
        .body(r#"{"active":"yes"}"#)
        .expect(400, Some("bad_request"))
        .naming("active"),
        case(
            "key patch typo field",
            M::PATCH,
            &format!("/v1/keys/{free_id}"),
        )
        .bearer(&admin)
        .body(r#"{"monthly_limt":5}"#)
        .expect(400, Some("bad_request"))
        .naming("monthly_limt"),
        case("keys create unknown field", M::POST, "/v1/keys")
            .bearer(&admin)
            .body(r#"{"tier":"free","bogus":1}"#)
            .expect(400, Some("bad_request"))
            .naming("bogus"),
        case("consume negative processing_ms", M::POST, "/v1/consume")
            .bearer(free.expose())
            .body(r#"{"processing_ms":-5}"#)
            .expect(400, Some("bad_request"))
            .naming("processing_ms"),
        case(
            "key delete unknown",
            M::DELETE,
            &format!("/v1/keys/{unknown_id}"),
        )
        .bearer(&admin)
        .expect(404, Some("not_found")),
        case("key wrong method", M::PUT, &format!("/v1/keys/{free_id}"))
            .bearer(&admin)
            .expect(405, Some("method_not_allowed")),
        case(
            "audit without reader",
            M::GET,
            &format!("/v1/keys/{free_id}/audit"),
        )
        .bearer(&admin)
        .expect(503, Some("audit_unavailable")),
        case(
            "audit no token",
            M::GET,
            &format!("/v1/keys/{free_id}/audit"),
        )
        .expect(401, Some("unauthorized")),
        case("healthz", M::GET, "/healthz"),
        case("healthz head", M::HEAD, "/healthz"),
        case("readyz", M::GET, "/readyz"),
        case("metrics", M::GET, "/metrics"),
        case("metrics wrong method", M::POST, "/metrics").expect(405, Some("method_not_allowed")),
    ];
    for c in &cases {
        c.run(&app).await;
    }
    // Exactly the two allowed calls ("consume ok", "authorize ok") were counted.
    let view: Value = common::json_of(app.admin(Method::GET, &format!("/v1/keys/{free_id}"))).await;
    assert_eq!(view["used"], 2, "{view}");
    assert_eq!(view["active"], true, "{view}");
    assert_eq!(view["tier"], "free", "{view}");
    assert!(view.get("monthly_limit").is_some_and(Value::is_null));
    let resp = app.client.get(app.url("/v1/consume")).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    let resp = app
        .client
        .put(app.url(&format!("/v1/keys/{free_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "GET, PATCH, DELETE");
}

#[tokio::test]
async fn engine_refusals_map_to_500_unknown_tier_and_503_audit_backlog_full() {
    let redis = TestRedis::start();
    // A node that stops admitting once a shard's stream holds more than one entry.
    let settings = EngineSettings {
        max_backlog: 1,
        ..EngineSettings::default()
    };
    let clock = quotad::engine::system_clock();
    let app = TestApp::with_engine(
        engine_with(&redis, settings, clock).await,
        common::unregistered_metrics(),
    )
    .await;
    let key = new_key(&app.engine, "free").await;
    assert_eq!(app.consume(&key, json!({})).await.status(), 200);
    assert_eq!(app.consume(&key, json!({})).await.status(), 200);
    let full = app.consume(&key, json!({})).await;
    assert_eq!(full.status(), 503);
    assert_eq!(full.headers()["retry-after"], "1");
    let body: Value = full.json().await.unwrap();
    assert_eq!(body["error"], "audit_backlog_full");

    // A node whose catalogue lacks the key's tier: never unlimited, 500 unknown_tier.
    let tiers = std::collections::BTreeMap::from([(
        "gold".to_owned(),
        quotad::quota::Tier {
            monthly_limit: Some(5),
            retention_days: 1,
            rate_limits: Vec::new(),
        },
    )]);
    let store =
        quotad::store::Store::new(&redis.url(), std::time::Duration::from_secs(1), 4).unwrap();
    let other = quotad::engine::Engine::new(
        store,
        quotad::quota::Catalogue::new(tiers),
        EngineSettings::default(),
        quotad::engine::system_clock(),
    );
    other.start().await.unwrap();
    let node = TestApp::with_engine(other, common::unregistered_metrics()).await;
    let resp = node.consume(&key, json!({})).await;
    assert_eq!(resp.status(), 500);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unknown_tier");
    let resp = node
        .client
        .get(node.url("/v1/quota"))
        .bearer_auth(key.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let ready: Value = common::json_of(node.client.get(node.url("/readyz"))).await;
    assert_eq!(ready["catalogue_mismatch"], true);
}
