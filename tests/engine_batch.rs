//! Batched decisions (SPEC §7): one EVALSHA decides many requests exactly as they
//! would be decided one at a time, fails as a whole with 503, and a batch of one is
//! the single consume.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{engine_with, engine_with_catalogue, TestRedis};
use quotad::engine::{Engine, EngineError, EngineSettings, KeyUpdate, NewKey};
use quotad::quota::{ApiKey, AuditExtras, Catalogue, ConsumeRequest, KeyId, RateLimit, Tier};

/// Keys with fixed plaintexts, so two Redis servers get the same ids and shards.
fn key(name: &str) -> ApiKey {
    ApiKey::parse(&format!("batch-test-key-{name}")).unwrap()
}

fn req(cost: u64, endpoint: &str, idem: Option<&str>) -> ConsumeRequest {
    ConsumeRequest::new(
        cost,
        endpoint.into(),
        idem.map(str::to_owned),
        AuditExtras::default(),
    )
    .unwrap()
}

/// The default tiers plus `burst`, with a window of 2 requests per second.
fn catalogue() -> Catalogue {
    let mut tiers: std::collections::BTreeMap<String, Tier> = Catalogue::default()
        .iter()
        .map(|(name, tier)| (name.to_owned(), tier.clone()))
        .collect();
    let burst = Tier {
        monthly_limit: Some(100),
        retention_days: 7,
        rate_limits: vec![RateLimit {
            limit: 2,
            window_secs: 1,
        }],
    };
    tiers.insert("burst".to_owned(), burst);
    Catalogue::new(tiers)
}

/// The same starting state on `redis`: keys of several tiers and shards, an inactive
/// one, an exhausted one, one with a rate window, and a shard whose audit stream is past
/// the backlog.
async fn setup(redis: &TestRedis) -> Engine {
    let settings = EngineSettings {
        max_backlog: 3,
        ..EngineSettings::default()
    };
    let clock = quotad::engine::system_clock();
    let engine = engine_with_catalogue(redis, catalogue(), settings, clock).await;
    for (name, tier, limit) in [
        ("a", "free", Some(5)),
        ("b", "pro", None),
        ("c", "free", Some(100)),
        ("exhausted", "free", Some(1)),
        ("unlimited", "enterprise", None),
        ("full-0", "free", None),
        ("windowed", "burst", None),
    ] {
        engine
            .create_key(NewKey {
                tier: tier.into(),
                key: Some(key(name)),
                name: None,
                monthly_limit: limit,
            })
            .await
            .unwrap();
    }
    let inactive = KeyUpdate {
        active: Some(false),
        ..KeyUpdate::default()
    };
    engine.update_key(&key("c").id(), inactive).await.unwrap();
    let one = req(1, "/x", None);
    assert!(
        engine
            .consume(&key("exhausted"), &one)
            .await
            .unwrap()
            .allowed
    );
    let full = key("full-0").id().shard(64);
    let mut conn = redis.conn();
    for _ in 0..4 {
        let _: String = redis::cmd("XADD")
            .arg(quotad::store::keys::audit_stream(full))
            .arg("*")
            .arg("filler")
            .arg("1")
            .query(&mut conn)
            .unwrap();
    }
    engine
}

/// One decision as the script answers it, with the audit reference reduced to
/// whether something was recorded (entry ids differ between servers).
fn answers(reply: redis::Value) -> Vec<Vec<String>> {
    let items: Vec<redis::Value> = redis::from_redis_value(reply).unwrap();
    let text: Vec<String> = items
        .into_iter()
        .skip(1)
        .map(|v| redis::from_redis_value(v).unwrap())
        .collect();
    text.chunks(7)
        .map(|d| {
            let mut d = d.to_vec();
            d[4] = if d[4].is_empty() { "-" } else { "recorded" }.into();
            d
        })
        .collect()
}

/// The requests of the table: mixing shards, keys, replays inside the batch, a reused
/// idempotency key, an unknown key, an exhausted key, a shard past its backlog, and one
/// key several times on a window of 2 per second.
fn table() -> Vec<(KeyId, ConsumeRequest)> {
    let unknown = ApiKey::parse("batch-test-key-never-created").unwrap();
    vec![
        (key("a").id(), req(2, "/a", Some("i1"))),
        (key("b").id(), req(1, "/b", None)),
        (key("a").id(), req(2, "/a", Some("i1"))), // replays the first
        (key("a").id(), req(3, "/a", Some("i1"))), // same key, other cost: reused
        (key("a").id(), req(3, "/a", None)),       // 2 + 3 = 5: exactly the limit
        (key("a").id(), req(1, "/a", None)),       // denied
        (key("c").id(), req(1, "/c", None)),       // inactive
        (unknown.id(), req(1, "/u", None)),        // unknown
        (key("exhausted").id(), req(1, "/e", None)),
        (key("full-0").id(), req(1, "/f", None)), // backlog full
        (key("unlimited").id(), req(1_000_000, "/big", Some("i2"))),
        (key("b").id(), req(1, "/b", Some("i3"))),
        (key("unlimited").id(), req(1_000_000, "/big", Some("i2"))), // replay
        (key("windowed").id(), req(1, "/w", None)),
        (key("windowed").id(), req(5, "/w", Some("i4"))), // the window is full now
        (key("windowed").id(), req(1, "/w", None)),       // rate_limited
        (key("windowed").id(), req(5, "/w", Some("i4"))), // a replay passes a full window
        (key("windowed").id(), req(1, "/w", None)),       // rate_limited
    ]
}

#[tokio::test]
async fn a_batch_decides_each_request_exactly_as_one_at_a_time_would() {
    let (batched, single) = (TestRedis::start(), TestRedis::start());
    let (eb, es) = (setup(&batched).await, setup(&single).await);
    let requests = table();
    let now = Utc::now();
    let all: Vec<(&KeyId, &ConsumeRequest)> = requests.iter().map(|(k, r)| (k, r)).collect();
    let inv = eb.batch_invocation(&all, now);
    let together = answers(eb.store().invoke(&inv).await.unwrap());
    let mut one_by_one = Vec::new();
    for (k, r) in &requests {
        let inv = es.batch_invocation(&[(k, r)], now);
        one_by_one.extend(answers(es.store().invoke(&inv).await.unwrap()));
    }
    assert_eq!(together, one_by_one);
    let statuses: Vec<&str> = together.iter().map(|d| d[0].as_str()).collect();
    assert_eq!(
        statuses,
        [
            "allowed",
            "allowed",
            "replayed",
            "key_reused",
            "allowed",
            "denied",
            "invalid_key",
            "invalid_key",
            "denied",
            "backlog_full",
            "allowed",
            "allowed",
            "replayed",
            "allowed",
            "allowed",
            "rate_limited",
            "replayed",
            "rate_limited"
        ]
    );
    for name in ["a", "b", "exhausted", "unlimited", "full-0", "windowed"] {
        let id = key(name).id();
        assert_eq!(
            eb.key(&id).await.unwrap().used,
            es.key(&id).await.unwrap().used,
            "{name}"
        );
    }
    assert_eq!(eb.key(&key("a").id()).await.unwrap().used, 5);
    assert_eq!(eb.key(&key("windowed").id()).await.unwrap().used, 6);
    assert_eq!(
        common::audit_records(&batched).len(),
        common::audit_records(&single).len()
    );
}

#[tokio::test]
async fn batches_of_one_decide_like_the_batched_engine() {
    let redis = TestRedis::start();
    let settings = EngineSettings {
        max_batch: 1,
        ..EngineSettings::default()
    };
    let engine = engine_with(&redis, settings, quotad::engine::system_clock()).await;
    let k = common::new_key_with(&engine, "free", Some(100)).await;
    let mut handles = Vec::new();
    for _ in 0..32 {
        let (engine, k) = (engine.clone(), k.clone());
        handles.push(tokio::spawn(async move {
            let mut allowed = 0;
            for _ in 0..5 {
                if engine
                    .consume(&k, &req(1, "/x", None))
                    .await
                    .unwrap()
                    .allowed
                {
                    allowed += 1;
                }
            }
            allowed
        }));
    }
    let mut allowed = 0;
    for h in handles {
        allowed += h.await.unwrap();
    }
    assert_eq!(allowed, 100);
    assert_eq!(engine.key(&k.id()).await.unwrap().used, 100);
    assert_eq!(common::audit_records(&redis).len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_killed_mid_batch_answers_every_member_503_and_a_retry_charges_once() {
    let mut redis = TestRedis::with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let engine = common::engine(&redis).await;
    let k = common::new_key_with(&engine, "free", Some(1000)).await;
    // Freeze Redis so a whole batch is in flight, then kill it.
    redis.pause();
    let mut handles = Vec::new();
    for i in 0..16 {
        let (engine, k) = (engine.clone(), k.clone());
        let r = req(1, "/x", Some(&format!("retry-{i}")));
        handles.push(tokio::spawn(async move { engine.consume(&k, &r).await }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.kill();
    for h in handles {
        match h.await.unwrap() {
            Err(EngineError::Store(e)) => assert!(e.is_unavailable(), "{e:?}"),
            other => panic!("expected 503, got {other:?}"),
        }
    }
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for i in 0..16 {
        let r = req(1, "/x", Some(&format!("retry-{i}")));
        loop {
            match engine.consume(&k, &r).await {
                Ok(d) => {
                    assert!(d.allowed);
                    break;
                }
                Err(EngineError::Store(e)) if e.is_unavailable() => {
                    assert!(std::time::Instant::now() < deadline, "never recovered");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        // A second retry replays: charged once.
        assert!(engine.consume(&k, &r).await.unwrap().replayed);
    }
    assert_eq!(engine.key(&k.id()).await.unwrap().used, 16);
}
