//! Rate windows beside the monthly quota (SPEC §9): GCRA per key and window, decided in
//! the same script as the month, with the injected clock frozen (exact counts) or the
//! real one (paced load), and their headers, bodies and metrics over HTTP.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{engine_with_catalogue, new_key, new_key_with, TestApp, TestClock, TestRedis};
use quotad::engine::{Engine, EngineSettings, KeyUpdate};
use quotad::quota::{ApiKey, Catalogue, ConsumeRequest, Period, RateLimit, Tier};
use quotad::store::keys;
use serde_json::{json, Value};

fn tier(monthly_limit: Option<u64>, windows: &[(u64, u64)]) -> Tier {
    Tier {
        monthly_limit,
        retention_days: 7,
        rate_limits: windows
            .iter()
            .map(|&(limit, window_secs)| RateLimit { limit, window_secs })
            .collect(),
    }
}

/// Tiers named after their windows (limit per seconds).
fn catalogue() -> Catalogue {
    Catalogue::new(BTreeMap::from([
        ("ten".to_owned(), tier(Some(1000), &[(10, 1)])),
        ("two".to_owned(), tier(Some(1000), &[(2, 1)])),
        ("three_per_10s".to_owned(), tier(Some(1000), &[(3, 10)])),
        ("month_of_3".to_owned(), tier(Some(3), &[(2, 1)])),
        ("both".to_owned(), tier(Some(1000), &[(600, 60), (10, 1)])),
        ("tight".to_owned(), tier(Some(1000), &[(1, 1), (2, 60)])),
        ("unlimited".to_owned(), tier(None, &[(5, 1)])),
        ("metered".to_owned(), tier(Some(1000), &[(1, 1)])),
    ]))
}

async fn engine_at(redis: &TestRedis, clock: &TestClock, settings: EngineSettings) -> Engine {
    engine_with_catalogue(redis, catalogue(), settings, clock.clock()).await
}

async fn app_at(redis: &TestRedis, clock: &TestClock) -> TestApp {
    let engine = engine_at(redis, clock, EngineSettings::default()).await;
    TestApp::with_engine(engine, common::unregistered_metrics()).await
}

fn one() -> ConsumeRequest {
    ConsumeRequest::simple(1, "/x").unwrap()
}

fn cost(n: u64) -> ConsumeRequest {
    ConsumeRequest::simple(n, "/x").unwrap()
}

/// The stored TAT of `key`'s window of `secs` (None while never admitted).
fn tat(redis: &TestRedis, key: &ApiKey, secs: u64) -> Option<String> {
    let id = key.id();
    redis::cmd("HGET")
        .arg(keys::record(id.shard(64), &id))
        .arg(RateLimit::tat_field(secs))
        .query(&mut redis.conn())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_requests_on_ten_per_second_admit_exactly_ten_with_a_frozen_clock() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let app = app_at(&redis, &clock).await;
    let key = new_key(&app.engine, "ten").await;
    let mut handles = Vec::new();
    for _ in 0..64 {
        let (client, url, key) = (app.client.clone(), app.url("/v1/consume"), key.clone());
        handles.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(key.expose())
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let retry = resp.headers().get("retry-after").cloned();
            (
                resp.status().as_u16(),
                retry,
                resp.json::<Value>().await.unwrap(),
            )
        }));
    }
    let mut admitted = 0;
    for h in handles {
        let (status, retry, body) = h.await.unwrap();
        if status == 200 {
            admitted += 1;
            continue;
        }
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"], "rate_limited");
        // One emission interval (100 ms) until the next would pass: 1 s rounded up.
        assert_eq!(retry.unwrap(), "1");
        let window = json!({"window_secs": 1, "limit": 10, "remaining": 0, "reset_after_ms": 1000});
        assert_eq!(body["rate_limit"], window);
        assert_eq!(body["used"], 10);
    }
    assert_eq!(admitted, 10);
    assert_eq!(app.engine.key(&key.id()).await.unwrap().used, 10);
    assert_eq!(common::audit_records(&redis).len(), 10);
}

#[tokio::test]
async fn retry_after_is_the_wait_until_a_request_would_pass_even_with_a_fractional_interval() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let app = app_at(&redis, &clock).await;
    // 3 per 10 s: T = 3333 1/3 ms.
    let key = new_key(&app.engine, "three_per_10s").await;
    for _ in 0..3 {
        assert_eq!(app.consume(&key, json!({})).await.status(), 200);
    }
    let resp = app.consume(&key, json!({})).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "4");
    let body: Value = resp.json().await.unwrap();
    let window = json!({"window_secs": 10, "limit": 3, "remaining": 0, "reset_after_ms": 10000});
    assert_eq!(body["rate_limit"], window);
    // 1 ms before the interval ends it still waits; at 3333 1/3 ms rounded up it passes.
    clock.set("2026-11-10T12:00:03.333Z");
    let resp = app.consume(&key, json!({})).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    clock.set("2026-11-10T12:00:03.334Z");
    assert_eq!(app.consume(&key, json!({})).await.status(), 200);
    assert_eq!(app.engine.key(&key.id()).await.unwrap().used, 4);
}

/// 60 requests paced at 20 per second from a cold window of 10 per second; each
/// request's scheduled offset and whether it was admitted.
async fn paced_run() -> Vec<(Duration, bool)> {
    let redis = TestRedis::start();
    let engine = engine_with_catalogue(
        &redis,
        catalogue(),
        EngineSettings::default(),
        quotad::engine::system_clock(),
    )
    .await;
    let key = new_key(&engine, "ten").await;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut handles = Vec::new();
    // Open loop: each request leaves at its own instant, whatever the others wait for.
    for i in 0..60u32 {
        let (engine, key) = (engine.clone(), key.clone());
        let offset = Duration::from_millis(50) * i;
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + offset).await;
            let d = engine.consume(&key, &one()).await.unwrap();
            assert!(d.allowed || d.rate_limited, "{d:?}");
            (offset, d.allowed)
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_seconds_at_twenty_per_second_on_ten_per_second_from_cold_admit_39_plus_or_minus_1() {
    // A burst of 10 allowed at once, then one per 100 ms: 19 in the first 950 ms while
    // the burst drains, then 20 more.
    let admitted = paced_run().await.iter().filter(|(_, ok)| *ok).count();
    assert!((38..=40).contains(&admitted), "{admitted} admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_one_second_of_warm_up_two_seconds_at_twenty_per_second_admit_20_plus_or_minus_1() {
    let run = paced_run().await;
    let warm = Duration::from_secs(1);
    let admitted = run.iter().filter(|(at, ok)| *at >= warm && *ok).count();
    assert!((19..=21).contains(&admitted), "{admitted} admitted");
}

#[tokio::test]
async fn a_cost_of_fifty_counts_once_in_the_window_and_fifty_in_the_month() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let engine = engine_at(&redis, &clock, EngineSettings::default()).await;
    let key = new_key(&engine, "two").await;
    let d = engine.consume(&key, &cost(50)).await.unwrap();
    assert!(d.allowed);
    assert_eq!((d.used, d.windows[0].remaining), (50, 1));
    let d = engine.consume(&key, &cost(50)).await.unwrap();
    assert!(d.allowed);
    assert_eq!((d.used, d.windows[0].remaining), (100, 0));
    let d = engine.consume(&key, &one()).await.unwrap();
    assert!(!d.allowed && d.rate_limited);
    assert_eq!(engine.key(&key.id()).await.unwrap().used, 100);
}

#[tokio::test]
async fn replays_pass_a_full_window_and_leave_it_untouched() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let engine = engine_at(&redis, &clock, EngineSettings::default()).await;
    let key = new_key(&engine, "two").await;
    let first = ConsumeRequest::new(1, "/x".into(), Some("r1".into()), Default::default()).unwrap();
    assert!(engine.consume(&key, &first).await.unwrap().allowed);
    assert!(engine.consume(&key, &one()).await.unwrap().allowed);
    let full = tat(&redis, &key, 1);
    let replay = engine.consume(&key, &first).await.unwrap();
    assert!(replay.allowed && replay.replayed);
    assert_eq!(replay.windows[0].remaining, 0);
    assert_eq!(tat(&redis, &key, 1), full);
    assert!(engine.consume(&key, &one()).await.unwrap().rate_limited);
    assert_eq!(engine.key(&key.id()).await.unwrap().used, 2);
}

#[tokio::test]
async fn rate_limited_requests_leave_no_trace_in_the_month_the_days_or_the_audit() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let engine = engine_at(&redis, &clock, EngineSettings::default()).await;
    let key = new_key(&engine, "two").await;
    for _ in 0..2 {
        assert!(engine.consume(&key, &one()).await.unwrap().allowed);
    }
    let before = common::dump_everything(&redis);
    for _ in 0..3 {
        let d = engine.consume(&key, &cost(7)).await.unwrap();
        assert!(!d.allowed && d.rate_limited && d.audit_id.is_none());
    }
    assert_eq!(common::dump_everything(&redis), before);
    let usage = engine.usage(&key.id(), None).await.unwrap();
    assert_eq!((usage.used, usage.days[9].used), (2, 2));
    assert_eq!(common::audit_records(&redis).len(), 2);
}

#[tokio::test]
async fn rate_limited_requests_are_audited_as_rate_limited_when_denials_are_recorded() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let settings = EngineSettings {
        include_denied: true,
        ..EngineSettings::default()
    };
    let engine = engine_at(&redis, &clock, settings).await;
    let key = new_key(&engine, "two").await;
    for _ in 0..2 {
        assert!(engine.consume(&key, &one()).await.unwrap().allowed);
    }
    assert!(engine.consume(&key, &cost(7)).await.unwrap().rate_limited);
    let records = common::audit_records(&redis);
    let outcomes: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str(),
                r["cost"].as_str(),
                r["used_after"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("allowed", "1", "1"),
            ("allowed", "1", "2"),
            ("rate_limited", "7", "2")
        ]
    );
    assert_eq!(engine.key(&key.id()).await.unwrap().used, 2);
}

#[tokio::test]
async fn a_request_the_month_refuses_consumes_no_window() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let engine = engine_at(&redis, &clock, EngineSettings::default()).await;
    let key = new_key(&engine, "month_of_3").await;
    for _ in 0..2 {
        assert!(engine.consume(&key, &one()).await.unwrap().allowed);
    }
    clock.set("2026-11-10T12:00:01Z");
    assert!(engine.consume(&key, &one()).await.unwrap().allowed);
    let window = tat(&redis, &key, 1);
    // The window would pass (1 of 2 held); the month is used up.
    let d = engine.consume(&key, &one()).await.unwrap();
    assert!(!d.allowed && !d.rate_limited);
    assert_eq!((d.used, d.windows[0].remaining), (3, 1));
    assert_eq!(tat(&redis, &key, 1), window);
}

#[tokio::test]
async fn windows_run_on_across_a_month_end_while_the_month_resets() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-30T23:59:59.500Z");
    let engine = engine_at(&redis, &clock, EngineSettings::default()).await;
    let key = new_key(&engine, "two").await;
    for _ in 0..2 {
        assert!(engine.consume(&key, &one()).await.unwrap().allowed);
    }
    assert!(engine.consume(&key, &one()).await.unwrap().rate_limited);
    // Half a second later, in December: one of the two the window held has drained.
    clock.set("2026-12-01T00:00:00Z");
    let d = engine.consume(&key, &one()).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.used, 1);
    assert_eq!(d.reset_at.reset_at_string(), "2027-01-01T00:00:00Z");
    let refused = engine.consume(&key, &one()).await.unwrap();
    assert!(refused.rate_limited);
    assert_eq!(refused.windows[0].wait_ms, 500);
    let november = Period::parse("2026-11").unwrap();
    assert_eq!(
        engine.usage(&key.id(), Some(november)).await.unwrap().used,
        2
    );
    assert_eq!(engine.key(&key.id()).await.unwrap().used, 1);
}

#[tokio::test]
async fn a_tier_change_mid_window_takes_effect_on_the_next_decision() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-10T12:00:00Z");
    let engine = engine_at(&redis, &clock, EngineSettings::default()).await;
    let to = |tier: &str| KeyUpdate {
        tier: Some(tier.to_owned()),
        ..KeyUpdate::default()
    };
    // Up: 2 per second used up, then 10 per second: the 2 count against the 10.
    let up = new_key(&engine, "two").await;
    for _ in 0..2 {
        assert!(engine.consume(&up, &one()).await.unwrap().allowed);
    }
    assert!(engine.consume(&up, &one()).await.unwrap().rate_limited);
    engine.update_key(&up.id(), to("ten")).await.unwrap();
    let d = engine.consume(&up, &one()).await.unwrap();
    assert!(d.allowed);
    assert_eq!((d.windows[0].limit, d.windows[0].remaining), (10, 7));
    // Down: 5 of 10 used, then 2 per second: full at once.
    let down = new_key(&engine, "ten").await;
    for _ in 0..5 {
        assert!(engine.consume(&down, &one()).await.unwrap().allowed);
    }
    engine.update_key(&down.id(), to("two")).await.unwrap();
    let d = engine.consume(&down, &one()).await.unwrap();
    assert!(d.rate_limited);
    assert_eq!((d.windows[0].limit, d.windows[0].remaining), (2, 0));
}

async fn get(app: &TestApp, key: &ApiKey, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(key.expose())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_window_is_a_policy_item_and_ratelimit_names_the_smallest_remaining() {
    let redis = TestRedis::start();
    // 2 days before the end of a 30-day month.
    let clock = TestClock::at("2026-11-29T00:00:00Z");
    let app = app_at(&redis, &clock).await;
    let key = new_key(&app.engine, "both").await;
    let resp = app.consume(&key, json!({})).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(
        h["ratelimit-policy"],
        "\"monthly\";q=1000;w=2592000, \"1s\";q=10;w=1, \"60s\";q=600;w=60"
    );
    assert_eq!(h["ratelimit"], "\"1s\";r=9;t=1");
    // The older trio describes the month only.
    assert_eq!(h["ratelimit-limit"], "1000");
    assert_eq!(h["ratelimit-remaining"], "999");
    assert_eq!(h["ratelimit-reset"], "172800");
    let body: Value = resp.json().await.unwrap();
    let window = json!({"window_secs": 1, "limit": 10, "remaining": 9, "reset_after_ms": 100});
    assert_eq!(body["rate_limit"], window);
    // The month is the item with the smallest remaining when its override is low.
    let low = new_key_with(&app.engine, "both", Some(5)).await;
    let resp = app.consume(&low, json!({})).await;
    assert_eq!(resp.headers()["ratelimit"], "\"monthly\";r=4;t=172800");
    assert!(resp.json::<Value>().await.unwrap()["rate_limit"].is_null());
    // A tie goes to the shorter window: 2 left in the month and in the second.
    let tie = new_key_with(&app.engine, "two", Some(2)).await;
    let resp = get(&app, &tie, "/v1/quota").await;
    assert_eq!(resp.headers()["ratelimit"], "\"1s\";r=2;t=1");
}

#[tokio::test]
async fn a_rate_limited_429_names_the_window_with_the_longest_wait() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-29T00:00:00Z");
    let app = app_at(&redis, &clock).await;
    // 1 per second and 2 per minute (T = 30 s).
    let key = new_key(&app.engine, "tight").await;
    assert_eq!(app.consume(&key, json!({})).await.status(), 200);
    let resp = app.consume(&key, json!({})).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["ratelimit"], "\"1s\";r=0;t=1");
    assert_eq!(resp.headers()["retry-after"], "1");
    clock.set("2026-11-29T00:00:01Z");
    assert_eq!(app.consume(&key, json!({})).await.status(), 200);
    // Both refuse now: the second waits 1 s, the minute 29 s (one T, less the 1 s gone).
    let resp = app.consume(&key, json!({})).await;
    assert_eq!(resp.status(), 429);
    let h = resp.headers().clone();
    assert_eq!(h["ratelimit"], "\"60s\";r=0;t=59");
    assert_eq!(h["retry-after"], "29");
    assert_eq!(h["ratelimit-remaining"], "998");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["allowed"], false);
    assert_eq!(body["used"], 2);
    let window = json!({"window_secs": 60, "limit": 2, "remaining": 0, "reset_after_ms": 59000});
    assert_eq!(body["rate_limit"], window);
}

#[tokio::test]
async fn unlimited_keys_carry_their_tiers_windows_only() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-29T00:00:00Z");
    let app = app_at(&redis, &clock).await;
    let key = new_key(&app.engine, "unlimited").await;
    let resp = app.consume(&key, json!({"cost": 1000000})).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["ratelimit-policy"], "\"1s\";q=5;w=1");
    assert_eq!(h["ratelimit"], "\"1s\";r=4;t=1");
    for absent in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
        assert!(h.get(absent).is_none(), "{absent}");
    }
    let body: Value = resp.json().await.unwrap();
    assert!(body["limit"].is_null());
    let window = json!({"window_secs": 1, "limit": 5, "remaining": 4, "reset_after_ms": 200});
    assert_eq!(body["rate_limit"], window);
}

#[tokio::test]
async fn forward_auth_maps_a_rate_limit_like_a_quota_denial() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-29T00:00:00Z");
    let app = app_at(&redis, &clock).await;
    let key = new_key(&app.engine, "two").await;
    let authorize = |query: &'static str| {
        app.client
            .get(app.url(&format!("/v1/authorize{query}")))
            .header("x-api-key", key.expose())
            .send()
    };
    for _ in 0..2 {
        assert_eq!(authorize("").await.unwrap().status(), 200);
    }
    let resp = authorize("").await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["x-quota-remaining"], "998");
    let resp = authorize("?deny_status=403").await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
}

#[tokio::test]
async fn get_quota_shows_the_windows_without_consuming() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-29T00:00:00Z");
    let app = app_at(&redis, &clock).await;
    let key = new_key(&app.engine, "two").await;
    assert_eq!(app.consume(&key, json!({})).await.status(), 200);
    for _ in 0..2 {
        let resp = get(&app, &key, "/v1/quota").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["ratelimit"], "\"1s\";r=1;t=1");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["allowed"], true);
        let window = json!({"window_secs": 1, "limit": 2, "remaining": 1, "reset_after_ms": 500});
        assert_eq!(body["rate_limit"], window);
    }
    assert_eq!(app.consume(&key, json!({})).await.status(), 200);
    // The window is full: a consume would be refused, so nothing is allowed now.
    let body: Value = get(&app, &key, "/v1/quota").await.json().await.unwrap();
    assert_eq!(
        (body["allowed"].clone(), body["used"].clone()),
        (json!(false), json!(2))
    );
    assert_eq!(body["rate_limit"]["remaining"], 0);
    clock.set("2026-11-29T00:00:01Z");
    let body: Value = get(&app, &key, "/v1/quota").await.json().await.unwrap();
    assert_eq!(body["allowed"], true);
    assert_eq!(app.engine.key(&key.id()).await.unwrap().used, 2);
}

#[tokio::test]
async fn rate_limited_decisions_are_counted_by_tier_from_zero() {
    let handle = quotad::app::install_metrics(&catalogue()).expect("the recorder installs once");
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-29T00:00:00Z");
    let engine = engine_at(&redis, &clock, EngineSettings::default()).await;
    let app = TestApp::with_engine(engine, handle).await;
    let series = "quotad_rate_limited_total{tier=\"metered\"}";
    let outcome = "quotad_decisions_total{outcome=\"rate_limited\",tier=\"metered\"}";
    let value = |text: &str, series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .map(|v| v.trim().to_owned())
    };
    let text = app.client.get(app.url("/metrics")).send().await.unwrap();
    let text = text.text().await.unwrap();
    assert_eq!(value(&text, series).as_deref(), Some("0"), "{text}");
    // Only this test uses the tier "metered" (1 per second).
    let key = new_key(&app.engine, "metered").await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(app.consume(&key, json!({})).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 429, 429]);
    let text = app.client.get(app.url("/metrics")).send().await.unwrap();
    let text = text.text().await.unwrap();
    assert_eq!(value(&text, series).as_deref(), Some("2"), "{text}");
    assert_eq!(value(&text, outcome).as_deref(), Some("2"), "{text}");
}

/// The error `Config::load` gives for `text` as the config file, with the file's path
/// replaced by `FILE`.
fn config_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quotad.toml");
    std::fs::write(&path, text).unwrap();
    let err = quotad::config::Config::load(Some(&path), |_| None).unwrap_err();
    err.to_string().replace(&path.display().to_string(), "FILE")
}

#[test]
fn bad_windows_refuse_to_start_naming_the_setting_its_line_and_what_was_expected() {
    let cases = [
        (
            "[tiers.free]\nmonthly_limit = 5\nrate_limits = [{ limit = 0, window_secs = 1 }]\n",
            "tiers.free.rate_limits[0].limit (FILE line 3): expected an integer from 1 to \
             9007199254740991, got 0",
        ),
        (
            "[tiers.free]\nrate_limits = [{ limit = 1, window_secs = 86401 }]\n",
            "tiers.free.rate_limits[0].window_secs (FILE line 2): expected an integer from 1 \
             to 86400, got 86401",
        ),
        (
            "[tiers.free]\nrate_limits = [{ limit = 1, window_secs = 0 }]\n",
            "tiers.free.rate_limits[0].window_secs (FILE line 2): expected an integer from 1 \
             to 86400, got 0",
        ),
        (
            "[tiers.free]\nrate_limits = [{ limit = 1, window = 1 }]\n",
            "tiers.free.rate_limits[0].window (FILE line 2): unknown field; expected one of \
             limit, window_secs",
        ),
        (
            "[tiers.free]\nrate_limits = [{ limit = 1 }]\n",
            "tiers.free.rate_limits[0] (FILE line 2): missing field `window_secs`",
        ),
        (
            "[tiers.free]\nrate_limits = [\n  { limit = 1, window_secs = 1 },\n  \
             { limit = 2, window_secs = 1 },\n]\n",
            "tiers.free.rate_limits[1].window_secs (FILE line 4): a window of 1 s is given \
             twice in this tier",
        ),
        (
            "[tiers.free]\nrate_limits = [{ limit = 104249992, window_secs = 86400 }]\n",
            "tiers.free.rate_limits[0].limit (FILE line 2): expected an integer from 1 to \
             104249991, got 104249992 (for a 86400 s window: limit x window in ms stays within \
             2^53 - 1)",
        ),
        (
            "[tiers.free]\nrate_limits = 5\n",
            "tiers.free.rate_limits (FILE line 2): expected an array, got 5",
        ),
        (
            "[tiers.free]\n[[tiers.free.rate_limits]]\nlimit = -1\nwindow_secs = 1\n",
            "tiers.free.rate_limits[0].limit (FILE line 3): expected an integer from 1 to \
             9007199254740991, got -1",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(config_error(text), expected, "{text}");
    }
}

#[test]
fn a_bad_window_in_quotad_tiers_names_the_variable() {
    let env = |k: &str| {
        (k == "QUOTAD_TIERS")
            .then(|| "free = { rate_limits = [{ limit = 0, window_secs = 1 }] }".to_owned())
    };
    let err = quotad::config::Config::load(None, env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tiers.free.rate_limits[0].limit (from QUOTAD_TIERS): expected an integer from 1 to \
         9007199254740991, got 0"
    );
}

#[test]
fn windows_from_the_config_are_in_the_catalogue_shortest_first_and_in_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quotad.toml");
    let text = "[tiers.free]\nmonthly_limit = 5\nrate_limits = [\n  \
                { limit = 600, window_secs = 60 },\n  { limit = 10, window_secs = 1 },\n]\n";
    std::fs::write(&path, text).unwrap();
    let c = quotad::config::Config::load(Some(&path), |_| None).unwrap();
    let catalogue = c.catalogue();
    let windows = &catalogue.get("free").unwrap().rate_limits;
    let pairs: Vec<(u64, u64)> = windows.iter().map(|w| (w.limit, w.window_secs)).collect();
    assert_eq!(pairs, [(10, 1), (600, 60)]);
    std::fs::write(&path, "[tiers.free]\nmonthly_limit = 5\n").unwrap();
    let without = quotad::config::Config::load(Some(&path), |_| None).unwrap();
    assert_ne!(
        c.catalogue().fingerprint(),
        without.catalogue().fingerprint()
    );
    assert!(without
        .catalogue()
        .get("free")
        .unwrap()
        .rate_limits
        .is_empty());
}

#[test]
fn serve_with_a_bad_window_exits_64_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quotad.toml");
    std::fs::write(
        &path,
        "[tiers.free]\nrate_limits = [{ limit = 0, window_secs = 1 }]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quotad"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("quotad: tiers.free.rate_limits[0].limit ("),
        "{stderr}"
    );
}
