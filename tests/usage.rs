//! Usage history and forecast (SPEC §9): day buckets kept by the consume script, read by
//! `GET /v1/usage` (the key holder), `GET /v1/keys/{key_id}/usage` (admins) and
//! `quotad keys usage`, with the injected clock crossing days and months.

mod common;

use std::process::Command;

use common::{engine_with, new_key, new_key_with, TestApp, TestClock, TestRedis};
use quotad::engine::{Engine, EngineSettings, KeyUpdate};
use quotad::quota::{ApiKey, ConsumeRequest, Period};
use quotad::store::keys;
use reqwest::Method;
use serde_json::{json, Value};

async fn app_at(redis: &TestRedis, clock: &TestClock) -> TestApp {
    let engine = engine_with(redis, EngineSettings::default(), clock.clock()).await;
    TestApp::with_engine(engine, common::unregistered_metrics()).await
}

async fn consume(engine: &Engine, key: &ApiKey, cost: u64) {
    let req = ConsumeRequest::simple(cost, "/x").unwrap();
    assert!(engine.consume(key, &req).await.unwrap().allowed);
}

/// `GET path` with `key` as Bearer: status and JSON body.
async fn get(app: &TestApp, key: &ApiKey, path: &str) -> (u16, Value) {
    let resp = app
        .client
        .get(app.url(path))
        .bearer_auth(key.expose())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// The `used` of every listed day, in order.
fn day_values(body: &Value) -> Vec<u64> {
    body["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["used"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn days_across_a_utc_midnight_land_on_their_own_day_and_sum_to_used() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-09T23:59:59.900Z");
    let app = app_at(&redis, &clock).await;
    let key = new_key_with(&app.engine, "free", Some(100)).await;
    consume(&app.engine, &key, 3).await;
    clock.set("2026-11-10T00:00:00Z");
    consume(&app.engine, &key, 4).await;
    clock.set("2026-11-10T12:00:00Z");
    let (status, body) = get(&app, &key, "/v1/usage").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(day_values(&body), [0, 0, 0, 0, 0, 0, 0, 0, 3, 4]);
    assert_eq!(body["days"][0], json!({"date": "2026-11-01", "used": 0}));
    assert_eq!(body["days"][9], json!({"date": "2026-11-10", "used": 4}));
    assert_eq!(body["used"], 7);
    assert_eq!(body["remaining"], 93);
    assert_eq!(body["period"], "2026-11");
    assert_eq!(body["reset_at"], "2026-12-01T00:00:00Z");
    assert_eq!(body["key_id"], key.id().to_string());
    assert_eq!(body["tier"], "free");
}

#[tokio::test]
async fn the_forecast_of_a_known_series_projects_the_pace_and_the_day_it_runs_out() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-01T08:00:00Z");
    let app = app_at(&redis, &clock).await;
    let key = new_key_with(&app.engine, "free", Some(200)).await;
    for day in 1..=10 {
        clock.set(&format!("2026-11-{day:02}T08:00:00Z"));
        consume(&app.engine, &key, 10).await;
    }
    // 100 in 10 of 30 days: 300 at this pace, 200 reached on day 20.
    let path = format!("/v1/keys/{}/usage", key.id());
    let admin: Value = common::json_of(app.admin(Method::GET, &path)).await;
    assert_eq!(
        admin["forecast"],
        json!({"projected_used": 300, "exhausted_on": "2026-11-20"})
    );
    assert_eq!(day_values(&admin), [10; 10]);
    // The holder sees exactly what the admin sees.
    let (status, holder) = get(&app, &key, "/v1/usage").await;
    assert_eq!((status, &holder), (200, &admin));
    // Once the limit is reached, the day it was reached.
    for day in 11..=20 {
        clock.set(&format!("2026-11-{day:02}T08:00:00Z"));
        consume(&app.engine, &key, 10).await;
    }
    clock.set("2026-11-25T08:00:00Z");
    let (_, body) = get(&app, &key, "/v1/usage").await;
    assert_eq!(
        body["forecast"],
        json!({"projected_used": 240, "exhausted_on": "2026-11-20"})
    );
    assert_eq!(body["remaining"], 0);
}

#[tokio::test]
async fn a_key_holder_never_sees_another_keys_usage() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let app = app_at(&redis, &clock).await;
    let mine = new_key(&app.engine, "free").await;
    let other = new_key(&app.engine, "pro").await;
    consume(&app.engine, &other, 5).await;
    let (status, body) = get(&app, &mine, &format!("/v1/usage?key_id={}", other.id())).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    assert!(body.get("used").is_none() && body.get("days").is_none());
    // The admin route does not take an API key.
    let (status, body) = get(&app, &mine, &format!("/v1/keys/{}/usage", other.id())).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    // Its own id is fine.
    let (status, body) = get(&app, &mine, &format!("/v1/usage?key_id={}", mine.id())).await;
    assert_eq!((status, body["used"].as_u64()), (200, Some(0)));
}

#[tokio::test]
async fn an_unknown_or_inactive_key_is_403_and_an_unknown_id_404() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let app = app_at(&redis, &clock).await;
    let unknown = ApiKey::presented("never-created-key-123").unwrap();
    let (status, body) = get(&app, &unknown, "/v1/usage").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("invalid_api_key"))
    );
    let key = new_key(&app.engine, "free").await;
    let off = KeyUpdate {
        active: Some(false),
        ..KeyUpdate::default()
    };
    app.engine.update_key(&key.id(), off).await.unwrap();
    assert_eq!(get(&app, &key, "/v1/usage").await.0, 403);
    // Admins still see an inactive key.
    let path = format!("/v1/keys/{}/usage", key.id());
    assert_eq!(
        app.admin(Method::GET, &path).send().await.unwrap().status(),
        200
    );
    let path = format!("/v1/keys/{}/usage", unknown.id());
    let resp = app.admin(Method::GET, &path).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = app.admin(Method::POST, &path).send().await.unwrap();
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn unlimited_keys_have_a_projection_but_no_limit_or_exhaustion_day() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-05T12:00:00Z");
    let app = app_at(&redis, &clock).await;
    let key = new_key(&app.engine, "enterprise").await;
    consume(&app.engine, &key, 1_000_000).await;
    let (status, body) = get(&app, &key, "/v1/usage").await;
    assert_eq!(status, 200);
    assert!(body["limit"].is_null() && body["remaining"].is_null());
    assert_eq!(body["used"], 1_000_000);
    // 1,000,000 in 5 of 30 days.
    assert_eq!(
        body["forecast"],
        json!({"projected_used": 6_000_000, "exhausted_on": null})
    );
}

#[tokio::test]
async fn a_malformed_period_is_400_and_a_period_without_data_is_zeros() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let app = app_at(&redis, &clock).await;
    let key = new_key_with(&app.engine, "free", Some(50)).await;
    consume(&app.engine, &key, 5).await;
    for bad in ["2026-13", "2026-1", "november", ""] {
        let (status, body) = get(&app, &key, &format!("/v1/usage?period={bad}")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_request")),
            "{bad}"
        );
    }
    let path = format!("/v1/keys/{}/usage?period=26-11", key.id());
    assert_eq!(
        app.admin(Method::GET, &path).send().await.unwrap().status(),
        400
    );
    // October: before the key's first use; all 31 days, zero.
    let (status, body) = get(&app, &key, "/v1/usage?period=2026-10").await;
    assert_eq!(status, 200);
    assert_eq!(day_values(&body), [0; 31]);
    assert_eq!(
        (body["used"].as_u64(), body["remaining"].as_u64()),
        (Some(0), Some(50))
    );
    assert_eq!(
        body["forecast"],
        json!({"projected_used": 0, "exhausted_on": null})
    );
    assert_eq!(body["reset_at"], "2026-11-01T00:00:00Z");
    // A period to come has no days yet.
    let (_, body) = get(&app, &key, "/v1/usage?period=2027-01").await;
    assert_eq!(
        (
            body["days"].as_array().unwrap().len(),
            body["used"].as_u64()
        ),
        (0, Some(0))
    );
}

#[tokio::test]
async fn a_past_period_shows_its_counter_and_every_day() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-10-30T12:00:00Z");
    let app = app_at(&redis, &clock).await;
    let key = new_key_with(&app.engine, "free", Some(50)).await;
    consume(&app.engine, &key, 5).await;
    clock.set("2026-10-31T23:59:59Z");
    consume(&app.engine, &key, 6).await;
    clock.set("2026-11-02T12:00:00Z");
    consume(&app.engine, &key, 1).await;
    let (_, body) = get(&app, &key, "/v1/usage?period=2026-10").await;
    let mut expected = [0; 31];
    expected[29] = 5;
    expected[30] = 6;
    assert_eq!(day_values(&body), expected);
    assert_eq!(body["used"], 11);
    // A whole past period projects what it used.
    assert_eq!(body["forecast"]["projected_used"], 11);
    let (_, body) = get(&app, &key, "/v1/usage").await;
    assert_eq!(
        (day_values(&body), body["used"].as_u64()),
        (vec![0, 1], Some(1))
    );
}

#[tokio::test]
async fn units_counted_before_day_buckets_existed_show_on_the_first_day() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-05T12:00:00Z");
    let app = app_at(&redis, &clock).await;
    let key = new_key_with(&app.engine, "free", Some(100)).await;
    // As a key counted by an earlier version left it: a counter, no days.
    let id = key.id();
    let _: () = redis::cmd("HSET")
        .arg(keys::record(id.shard(64), &id))
        .arg("period")
        .arg("2026-11")
        .arg("used")
        .arg(40)
        .query(&mut redis.conn())
        .unwrap();
    consume(&app.engine, &key, 2).await;
    let (_, body) = get(&app, &key, "/v1/usage").await;
    assert_eq!(day_values(&body), [40, 0, 0, 0, 2]);
    assert_eq!(body["used"], 42);
}

/// The `d:<date>` fields of `key`'s record, sorted.
fn day_fields(redis: &TestRedis, key: &ApiKey) -> Vec<String> {
    let id = key.id();
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(keys::record(id.shard(64), &id))
        .query(&mut redis.conn())
        .unwrap();
    let mut days: Vec<String> = fields.into_iter().filter(|f| f.starts_with("d:")).collect();
    days.sort();
    days
}

#[tokio::test]
async fn day_buckets_older_than_history_days_are_deleted_when_a_new_day_is_first_written() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-01-01T10:00:00Z");
    let engine = engine_with(&redis, EngineSettings::default(), clock.clock()).await;
    let key = new_key(&engine, "free").await;
    consume(&engine, &key, 1).await;
    clock.set("2026-01-02T10:00:00Z");
    consume(&engine, &key, 1).await;
    clock.set("2026-03-03T10:00:00Z");
    consume(&engine, &key, 1).await;
    // 2026-03-03 is 61 days after 2026-01-01: 62 days kept, nothing goes yet.
    assert_eq!(
        day_fields(&redis, &key),
        ["d:2026-01-01", "d:2026-01-02", "d:2026-03-03"]
    );
    clock.set("2026-03-04T10:00:00Z");
    consume(&engine, &key, 1).await;
    assert_eq!(
        day_fields(&redis, &key),
        ["d:2026-01-02", "d:2026-03-03", "d:2026-03-04"]
    );
    // A later write on the same day deletes nothing more.
    consume(&engine, &key, 1).await;
    assert_eq!(day_fields(&redis, &key).len(), 3);
    let march = engine.usage(&key.id(), None).await.unwrap();
    assert_eq!(
        (march.used, march.days[2].used, march.days[3].used),
        (3, 1, 2)
    );
}

#[test]
fn history_days_default_to_62_and_fewer_are_refused() {
    let c = quotad::config::Config::load(None, |_| None).unwrap();
    assert_eq!(c.usage.history_days, 62);
    assert_eq!(c.engine_settings().history_days, 62);
    let env = |k: &str| (k == "QUOTAD_USAGE_HISTORY_DAYS").then(|| "400".to_owned());
    let c = quotad::config::Config::load(None, env).unwrap();
    assert_eq!(c.engine_settings().history_days, 400);
    let env = |k: &str| (k == "QUOTAD_USAGE_HISTORY_DAYS").then(|| "61".to_owned());
    let err = quotad::config::Config::load(None, env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "usage.history_days (from QUOTAD_USAGE_HISTORY_DAYS): expected an integer from 62 to \
         3660, got \"61\""
    );
}

#[tokio::test]
async fn keys_usage_on_the_command_line_prints_the_report_and_refuses_a_bad_period() {
    let redis = TestRedis::start();
    let engine = common::engine(&redis).await;
    let key = new_key_with(&engine, "free", Some(10)).await;
    consume(&engine, &key, 3).await;
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_quotad"))
            .args(["keys", "usage"])
            .args(args)
            .env_clear()
            .env("QUOTAD_REDIS_URL", redis.url())
            .output()
            .unwrap()
    };
    let id = key.id().to_string();
    let out = cli(&[&id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (body["key_id"].as_str(), body["used"].as_u64()),
        (Some(id.as_str()), Some(3))
    );
    assert_eq!(day_values(&body).iter().sum::<u64>(), 3);
    let period = Period::containing(chrono::Utc::now()).label();
    assert_eq!(body["period"], period);
    let out = cli(&[&id, "--period", "2020-01"]);
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (body["used"].as_u64(), day_values(&body).len()),
        (Some(0), 31)
    );
    let out = cli(&[&id, "--period", "2020-13"]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "quotad: --period must be YYYY-MM, e.g. 2026-11"
    );
}
