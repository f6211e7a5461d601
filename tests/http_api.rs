//! SPEC §4 over real HTTP and a real Redis: every route, status code and header.

mod common;

use common::{engine_with, new_key, new_key_with, TestApp, TestClock, TestRedis};
use quotad::engine::EngineSettings;
use quotad::quota::ApiKey;
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
        case("readyz", M::GET, "/readyz"),
        case("metrics", M::GET, "/metrics"),
        case("metrics wrong method", M::POST, "/metrics").expect(405, Some("method_not_allowed")),
    ];
    for c in &cases {
        c.run(&app).await;
    }
    // Exactly the two allowed calls ("consume ok", "authorize ok") were counted.
    let view: Value = app
        .admin(Method::GET, &format!("/v1/keys/{free_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let resp = app
        .client
        .get(app.url("/v1/quota"))
        .bearer_auth(key.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let expected = json!({"allowed": false, "key_id": key.id().to_string(), "tier": "free",
        "limit": 2, "used": 2, "remaining": 0, "reset_at": "2026-12-01T00:00:00Z",
        "replayed": false, "audit_id": null});
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

/// One field of every entry of every audit stream, in stream order.
fn stream_field(redis: &TestRedis, field: &str) -> Vec<String> {
    let mut conn = redis.conn();
    let streams: Vec<String> = redis::cmd("KEYS")
        .arg("quotad:*:audit")
        .query(&mut conn)
        .unwrap();
    let mut out = Vec::new();
    for stream in streams {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .query(&mut conn)
            .unwrap();
        for entry in entries.ids {
            out.push(entry.get::<String>(field).unwrap_or_default());
        }
    }
    out
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
    let urls = [
        (Method::POST, format!("/v1/consume?api_key={k}")),
        (Method::GET, format!("/v1/quota?api_key={k}")),
        (Method::GET, format!("/v1/authorize?api_key={k}")),
        (Method::GET, format!("/v1/authorize/api/x?api_key={k}&a=b")),
    ];
    for (i, (method, path)) in urls.into_iter().enumerate() {
        let resp = c
            .request(method, app.url(&path))
            .header("x-original-uri", format!("/api/y?api_key={k}"))
            .header("idempotency-key", format!("idem-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let resp = c
        .get(app.url(&format!("/v1/authorize/api/z?api_key={k}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let dump = common::dump_everything(&redis);
    assert!(dump.contains("/api/y") && dump.contains("/api/z"), "{dump}");
    assert!(!dump.contains("QUERY-STRING-SECRET"), "{dump}");
}

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
    let view: Value = app
        .admin(Method::GET, &path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let view: Value = app
        .admin(Method::GET, &path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let body: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"status": "ready", "catalogue_mismatch": false})
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

#[tokio::test]
async fn engine_refusals_map_to_500_unknown_tier_and_503_audit_backlog_full() {
    let redis = TestRedis::start();
    // A node whose audit backlog holds one entry per shard.
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
    let ready: Value = node
        .client
        .get(node.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["catalogue_mismatch"], true);
}
