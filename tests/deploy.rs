//! The deploy kit (`deploy/`, `Dockerfile`, `quotad health`): the alert rules and their
//! unit tests through promtool, every dashboard query as a recording rule, the compose
//! file's structure, a real Prometheus scraping a real `quotad serve`, and the health
//! check. Needs Debian's prometheus package (`promtool` and `prometheus`).

mod common;
#[path = "deploy/compose.rs"]
mod compose;
#[path = "deploy/health.rs"]
mod health;
#[path = "deploy/kit.rs"]
mod kit;
#[path = "deploy/live.rs"]
mod live;
#[path = "deploy/promql.rs"]
mod promql;
#[path = "deploy/support.rs"]
mod support;

/// Metric families the dashboard or the alerts use that quotad does not export yet,
/// each with the issue that adds it. The live test asserts that each is really absent:
/// remove a name when its feature lands.
const NOT_YET_EXPORTED: &[&str] = &[
    "quotad_audit_writer_active", // issue 9: one audit writer per deployment
    "quotad_threshold_events_total", // issue 11: threshold alerts
    "quotad_webhook_deliveries_total", // issue 11: webhook deliveries
    "quotad_reservations_total",  // issue 11: reserve and settle
];
