//! Entries the writer cannot read are acknowledged without rows, and counted. Its own
//! test binary: it installs the global metrics recorder.

mod audit_support;
mod common;

use audit_support::{self as s, V2Record};
use common::TestRedis;
use metrics_exporter_prometheus::PrometheusBuilder;
use quotad::quota::ApiKey;

const SHARDS: u32 = 2;
const TS: &str = "2026-11-27T19:41:14.123Z";

#[tokio::test]
async fn an_entry_of_unknown_version_is_acknowledged_without_rows_and_counted() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();

    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let key = ApiKey::generate().id();
    let record = V2Record::allowed(key.as_str(), "/u", 1, 1);
    // A later version of the script, between two entries this writer reads.
    s::xadd_v2(&redis, 0, TS, std::slice::from_ref(&record));
    let mut future = s::v2_fields(TS, std::slice::from_ref(&record));
    future[0].1 = "3".to_owned();
    s::xadd_fields(&redis, 0, &future);
    s::xadd_v2(&redis, 1, TS, std::slice::from_ref(&record));

    let store = s::store(&redis);
    let running = s::start_on(&store, s::options_for(SHARDS, &db, "node-a")).await;
    s::wait_drained(&redis, SHARDS).await;
    running.stop().await;
    assert_eq!(s::count(&db), 2);
    assert_eq!(s::pending(&redis, SHARDS), 0);
    let text = handle.render();
    assert_eq!(common::metric(&text, "quotad_audit_unreadable_total"), 1.0);
    assert_eq!(common::metric(&text, "quotad_audit_persisted_total"), 2.0);
}
