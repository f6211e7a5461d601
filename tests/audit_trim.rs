//! Trim mode: admissions keep passing, the stream stays bounded, and what was trimmed
//! unpersisted is counted. Its own test binary: it installs the global metrics recorder.

mod audit_support;
mod common;

use audit_support as s;
use common::{engine_with, new_key, TestRedis};
use metrics_exporter_prometheus::PrometheusBuilder;
use quotad::engine::{system_clock, BacklogPolicy, EngineSettings};
use quotad::quota::ConsumeRequest;

#[tokio::test]
async fn trim_mode_keeps_admitting_and_counts_what_it_trimmed() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();

    let redis = TestRedis::start();
    let settings = EngineSettings {
        shards: 1,
        max_backlog: 5,
        on_backlog: BacklogPolicy::Trim,
        ..EngineSettings::default()
    };
    let engine = engine_with(&redis, settings, system_clock()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = s::db_path(&dir);
    let key = new_key(&engine, "pro").await;
    let req = ConsumeRequest::simple(1, "/t").unwrap();
    for _ in 0..20 {
        assert!(engine.consume(&key, &req).await.unwrap().allowed);
        assert!(
            s::backlog(&redis, 1) <= 6,
            "max_backlog + the admission itself"
        );
    }
    let text = handle.render();
    assert_eq!(
        common::metric(&text, "quotad_audit_trimmed_unpersisted_total"),
        14.0
    );

    let running = s::start(&engine, s::options(&engine, &db, "node-a")).await;
    s::wait_drained(&redis, 1).await;
    running.stop().await;
    // Only the six newest survived to be persisted.
    let used: Vec<u64> = s::records(&db, &key.id())
        .await
        .iter()
        .map(|r| r.used_after)
        .collect();
    assert_eq!(used, vec![20, 19, 18, 17, 16, 15]);
    let text = handle.render();
    assert_eq!(common::metric(&text, "quotad_audit_persisted_total"), 6.0);
    // Refreshed when the writer started, before it drained the six entries.
    assert_eq!(
        common::metric(&text, "quotad_audit_backlog{shard=\"0\"}"),
        6.0
    );
    assert!(common::metric(&text, "quotad_audit_batch_duration_seconds_count") >= 1.0);
}
