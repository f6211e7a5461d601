//! Keys, tiers, periods and what Redis ends up holding.

mod common;

use std::time::Duration;

use common::{engine, engine_with, new_key, new_key_with, TestClock, TestRedis};
use quotad::engine::{Engine, EngineError, EngineSettings, KeyUpdate, NewKey};
use quotad::quota::{ApiKey, Catalogue, ConsumeRequest, Tier};
use quotad::store::Store;
use redis::Commands;

fn one() -> ConsumeRequest {
    ConsumeRequest::simple(1, "/").unwrap()
}

async fn set(engine: &Engine, key: &ApiKey, update: KeyUpdate) {
    engine.update_key(&key.id(), update).await.unwrap();
}

#[tokio::test]
async fn unknown_inactive_and_reactivated_keys() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let unknown = ApiKey::parse("never-created-key-123").unwrap();
    assert!(matches!(
        engine.consume(&unknown, &one()).await,
        Err(EngineError::InvalidKey)
    ));
    assert!(matches!(
        engine.quota(&unknown).await,
        Err(EngineError::InvalidKey)
    ));

    let key = new_key(&engine, "free").await;
    set(
        &engine,
        &key,
        KeyUpdate {
            active: Some(false),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(
        engine.consume(&key, &one()).await,
        Err(EngineError::InvalidKey)
    ));
    set(
        &engine,
        &key,
        KeyUpdate {
            active: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert!(engine.consume(&key, &one()).await.unwrap().allowed);
}

#[tokio::test]
async fn a_tier_change_applies_from_the_next_consume() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let key = new_key(&engine, "free").await;
    assert_eq!(
        engine.consume(&key, &one()).await.unwrap().limit,
        Some(1_000)
    );
    set(
        &engine,
        &key,
        KeyUpdate {
            tier: Some("pro".into()),
            ..Default::default()
        },
    )
    .await;
    let d = engine.consume(&key, &one()).await.unwrap();
    assert_eq!((d.tier.as_str(), d.limit, d.used), ("pro", Some(10_000), 2));
}

#[tokio::test]
async fn the_override_wins_over_the_tier_and_can_be_cleared() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let key = new_key_with(&engine, "pro", Some(2)).await;
    assert!(engine.consume(&key, &one()).await.unwrap().allowed);
    assert!(engine.consume(&key, &one()).await.unwrap().allowed);
    let d = engine.consume(&key, &one()).await.unwrap();
    assert!(!d.allowed);
    assert_eq!(d.limit, Some(2));
    set(
        &engine,
        &key,
        KeyUpdate {
            monthly_limit: Some(None),
            ..Default::default()
        },
    )
    .await;
    let d = engine.consume(&key, &one()).await.unwrap();
    assert_eq!((d.allowed, d.limit), (true, Some(10_000)));
}

#[tokio::test]
async fn the_unlimited_tier_never_denies_and_still_counts() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let key = new_key(&engine, "enterprise").await;
    let big = ConsumeRequest::simple(1_000_000, "/").unwrap();
    for _ in 0..3 {
        let d = engine.consume(&key, &big).await.unwrap();
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining), (None, None));
    }
    let q = engine.quota(&key).await.unwrap();
    assert_eq!((q.used, q.allowed), (3_000_000, true));
}

#[tokio::test]
async fn a_stored_tier_missing_from_the_catalogue_is_an_error_never_unlimited() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let key = new_key(&engine, "free").await;
    let id = key.id();
    let record = quotad::store::keys::record(id.shard(64), &id);
    let _: () = redis.conn().hset(&record, "tier", "gold").unwrap();
    let err = engine.consume(&key, &one()).await.unwrap_err();
    assert!(
        matches!(err, EngineError::UnknownTier(ref t) if t == "gold"),
        "{err:?}"
    );
    assert!(matches!(
        engine.quota(&key).await,
        Err(EngineError::UnknownTier(_))
    ));
    let create = NewKey {
        tier: "gold".into(),
        key: None,
        name: None,
        monthly_limit: None,
    };
    assert!(matches!(
        engine.create_key(create).await,
        Err(EngineError::UnknownTier(_))
    ));
}

#[tokio::test]
async fn get_or_create_returns_an_existing_key_unchanged_and_without_the_key() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let supplied = ApiKey::parse("customer-supplied-key-0001").unwrap();
    let new = |tier: &str| NewKey {
        tier: tier.into(),
        key: Some(supplied.clone()),
        name: Some("n".into()),
        monthly_limit: None,
    };
    let first = engine.create_key(new("free")).await.unwrap();
    assert_eq!(first.key.as_ref(), Some(&supplied));
    let second = engine.create_key(new("pro")).await.unwrap();
    assert!(second.key.is_none());
    assert_eq!(second.record, first.record);
    assert_eq!(second.record.tier, "free");
    assert!(matches!(
        engine
            .update_key(
                &ApiKey::parse("not-there-at-all-1").unwrap().id(),
                KeyUpdate::default()
            )
            .await,
        Err(EngineError::NotFound)
    ));
}

#[tokio::test]
async fn month_rollover_uses_a_new_counter_and_the_right_reset() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-30T23:59:59.999Z");
    let engine = engine_with(&redis, EngineSettings::default(), clock.clock()).await;
    let key = new_key_with(&engine, "free", Some(1)).await;
    let d = engine.consume(&key, &one()).await.unwrap();
    assert_eq!(
        (d.allowed, d.reset_at.reset_at_string()),
        (true, "2026-12-01T00:00:00Z".into())
    );
    assert!(!engine.consume(&key, &one()).await.unwrap().allowed);
    clock.set("2026-12-01T00:00:00Z");
    let d = engine.consume(&key, &one()).await.unwrap();
    assert_eq!((d.allowed, d.used), (true, 1));
    assert_eq!(d.reset_at.reset_at_string(), "2027-01-01T00:00:00Z");
    // The counters live in the key record: this month's, and last month's beside it.
    let id = key.id();
    let record: std::collections::HashMap<String, String> = redis
        .conn()
        .hgetall(quotad::store::keys::record(id.shard(64), &id))
        .unwrap();
    let field = |f: &str| record.get(f).map(String::as_str);
    assert_eq!(field("period"), Some("2026-12"));
    assert_eq!(field("used"), Some("1"));
    assert_eq!(field("prev_period"), Some("2026-11"));
    assert_eq!(field("prev_used"), Some("1"));
}

#[tokio::test]
async fn reset_at_is_right_for_every_month_length() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-01-31T12:00:00Z");
    let engine = engine_with(&redis, EngineSettings::default(), clock.clock()).await;
    let key = new_key(&engine, "free").await;
    let cases = [
        ("2026-01-31T12:00:00Z", "2026-02-01T00:00:00Z"),
        ("2026-04-30T23:00:00Z", "2026-05-01T00:00:00Z"),
        ("2026-02-28T23:59:59Z", "2026-03-01T00:00:00Z"),
        ("2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"),
        ("2026-12-31T23:59:59.999Z", "2027-01-01T00:00:00Z"),
    ];
    for (now, reset) in cases {
        clock.set(now);
        let d = engine.consume(&key, &one()).await.unwrap();
        assert_eq!(d.reset_at.reset_at_string(), reset, "at {now}");
        assert_eq!(d.used, 1, "a new month starts from zero at {now}");
    }
}

#[tokio::test]
async fn counters_live_in_key_records_idempotency_entries_expire_and_no_plaintext_key_is_stored() {
    let redis = TestRedis::start();
    let engine = engine(&redis).await;
    let mut keys = Vec::new();
    for tier in ["free", "pro", "enterprise"] {
        let key = new_key(&engine, tier).await;
        let req =
            ConsumeRequest::new(1, "/x".into(), Some("idem-1".into()), Default::default()).unwrap();
        engine.consume(&key, &req).await.unwrap();
        keys.push(key);
    }
    let mut conn = redis.conn();
    let all: Vec<String> = conn
        .scan::<String>()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!all.iter().any(|k| k.contains(":use:")), "{all:?}");
    for key in &keys {
        let id = key.id();
        let used: Option<String> = conn
            .hget(quotad::store::keys::record(id.shard(64), &id), "used")
            .unwrap();
        assert_eq!(used.as_deref(), Some("1"));
    }
    let idem: Vec<&String> = all.iter().filter(|k| k.contains(":idem:")).collect();
    assert_eq!(idem.len(), 3);
    for k in &idem {
        let pttl: i64 = conn.pttl(*k).unwrap();
        assert!(pttl > 0 && pttl <= 86_400 * 1000, "{k} has PTTL {pttl}");
    }
    for name in &all {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(name).query(&mut conn).unwrap();
        for key in &keys {
            let plain = key.expose().as_bytes();
            assert!(
                !name.contains(key.expose()),
                "plaintext key in key name {name}"
            );
            assert!(
                !dump.windows(plain.len()).any(|w| w == plain),
                "plaintext key in {name}"
            );
        }
    }
}

#[tokio::test]
async fn a_different_shard_count_refuses_to_start() {
    let redis = TestRedis::start();
    let _first = engine(&redis).await;
    let store = Store::new(&redis.url(), Duration::from_millis(250), 4).unwrap();
    let settings = EngineSettings {
        shards: 8,
        ..Default::default()
    };
    let other = Engine::new(
        store,
        Catalogue::default(),
        settings,
        quotad::engine::system_clock(),
    );
    let err = other.start().await.unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::ShardMismatch {
                configured: 8,
                recorded: 64
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_different_catalogue_is_reported_as_a_mismatch() {
    let redis = TestRedis::start();
    let first = engine(&redis).await;
    assert!(!first.start().await.unwrap().catalogue_mismatch);
    let other = other_catalogue_engine(&redis);
    assert!(other.start().await.unwrap().catalogue_mismatch);
}

#[tokio::test]
async fn the_admin_view_shows_usage_of_the_current_period() {
    let redis = TestRedis::start();
    let clock = TestClock::at("2026-11-27T19:41:14.123Z");
    let engine = engine_with(&redis, EngineSettings::default(), clock.clock()).await;
    let key = new_key(&engine, "free").await;
    engine
        .consume(&key, &ConsumeRequest::simple(5, "/").unwrap())
        .await
        .unwrap();
    let view = serde_json::to_value(engine.key(&key.id()).await.unwrap()).unwrap();
    assert_eq!(view["period"], "2026-11");
    assert_eq!(view["used"], 5);
    assert_eq!(view["remaining"], 995);
    assert_eq!(view["reset_at"], "2026-12-01T00:00:00Z");
    assert_eq!(view["created_at"], "2026-11-27T19:41:14.123Z");
    assert_eq!(view["monthly_limit"], serde_json::Value::Null);
}

#[tokio::test]
async fn meta_lost_with_redis_data_is_recorded_again_by_the_next_readiness_check() {
    let redis = TestRedis::start();
    let first = engine(&redis).await;
    let _: () = redis::cmd("FLUSHALL").query(&mut redis.conn()).unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis.conn())
        .unwrap();
    assert!(!first.start().await.unwrap().catalogue_mismatch);
    let meta: std::collections::HashMap<String, String> =
        redis.conn().hgetall("quotad:meta").unwrap();
    assert_eq!(meta["shards"], "64");
    assert_eq!(meta["catalogue"], Catalogue::default().fingerprint());
    let cached: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(redis::Script::new(include_str!("../lua/update_key.lua")).get_hash())
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(
        cached,
        vec![true],
        "the readiness check reloads missing scripts"
    );

    let other = other_catalogue_engine(&redis);
    assert!(other.start().await.unwrap().catalogue_mismatch);
}

/// An engine whose catalogue differs from the default one (free limited to 5).
fn other_catalogue_engine(redis: &TestRedis) -> Engine {
    let tiers = [(
        "free".to_owned(),
        Tier {
            monthly_limit: Some(5),
            retention_days: 7,
            rate_limits: Vec::new(),
        },
    )];
    let store = Store::new(&redis.url(), Duration::from_millis(250), 4).unwrap();
    Engine::new(
        store,
        Catalogue::new(tiers.into_iter().collect()),
        EngineSettings::default(),
        quotad::engine::system_clock(),
    )
}
