//! What the writer costs Redis: one blocking XREADGROUP for every shard while idle, and
//! one ack call for all the shards of a batch.

mod audit_support;
mod common;

use std::time::Duration;

use audit_support::{self as s, V2Record};
use common::TestRedis;
use quotad::quota::ApiKey;

const TS: &str = "2026-11-27T19:41:14.123Z";

/// `blocked_clients` of `INFO clients`.
fn blocked_clients(redis: &TestRedis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut redis.conn())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .map(|n| n.trim().parse().unwrap())
        .unwrap()
}

#[tokio::test]
async fn an_idle_writer_of_64_shards_sends_a_handful_of_xreadgroups_per_second() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let store = s::store(&redis);
    let running = s::start_on(&store, s::options_for(64, &db, "node-a")).await;
    // Started and waiting: one client blocked in XREADGROUP.
    s::wait_for("the writer to block", || blocked_clients(&redis) == 1).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis.conn())
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = s::command_calls(&redis, "xreadgroup");
    running.stop().await;
    // BLOCK 1 s over every stream: one or two calls a second (polling each of the 64
    // streams, even once a second, would be 64).
    assert!(calls <= 3, "{calls} XREADGROUP calls in an idle second");
}

#[tokio::test]
async fn a_batch_over_sixteen_shards_is_acknowledged_in_one_call() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    for shard in 0..16 {
        let key = ApiKey::generate().id();
        let r = V2Record::allowed(key.as_str(), "/a", 1, 1);
        s::xadd_v2(&redis, shard, TS, &[r.clone(), r]);
    }
    let store = s::store(&redis);
    let running = s::start_on(&store, s::options_for(16, &db, "node-a")).await;
    s::wait_drained(&redis, 16).await;
    running.stop().await;
    assert_eq!(s::count(&db), 32);
    assert_eq!(s::command_calls(&redis, "evalsha"), 1);
    assert_eq!(s::command_calls(&redis, "xack"), 16);
    assert_eq!(s::command_calls(&redis, "xtrim"), 16);
}
