//! Metric names (a contract: dashboards and alerts use them), described once at start-up.
//! No key ids or other unbounded values ever go into labels.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Decisions by `outcome` (allowed|denied|rate_limited|replayed|key_reused|invalid_key|error)
/// and `tier`.
pub const DECISIONS: &str = "quotad_decisions_total";
/// HTTP request to response time of decision routes.
pub const DECISION_DURATION: &str = "quotad_decision_duration_seconds";
/// Redis failures by `kind`.
pub const REDIS_ERRORS: &str = "quotad_redis_errors_total";
/// Entries waiting in each shard's audit stream, by `shard`.
pub const AUDIT_BACKLOG: &str = "quotad_audit_backlog";
/// Audit records committed to SQLite.
pub const AUDIT_PERSISTED: &str = "quotad_audit_persisted_total";
/// Time to persist and acknowledge one audit batch.
pub const AUDIT_BATCH_DURATION: &str = "quotad_audit_batch_duration_seconds";
/// Audit entries trimmed before they were persisted (trim mode only).
pub const AUDIT_TRIMMED_UNPERSISTED: &str = "quotad_audit_trimmed_unpersisted_total";
/// Audit records deleted by the retention job.
pub const AUDIT_RETENTION_DELETED: &str = "quotad_audit_retention_deleted_total";
/// Audit entries (or records of one) acknowledged without a row because they cannot be read.
pub const AUDIT_UNREADABLE: &str = "quotad_audit_unreadable_total";
/// 1 when this node's tier catalogue differs from the one recorded in Redis.
pub const TIER_CATALOGUE_MISMATCH: &str = "quotad_tier_catalogue_mismatch";
/// HTTP requests by `route` and `status`.
pub const HTTP_REQUESTS: &str = "quotad_http_requests_total";
/// Decisions per EVALSHA of `lua/consume_batch.lua`.
pub const BATCH_SIZE: &str = "quotad_batch_size";
/// Buckets of [`BATCH_SIZE`]: powers of two up to the largest batch.
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// 1 when Redis persists (`appendonly yes`), 0 when not; absent when it will not say.
pub const REDIS_APPENDONLY: &str = "quotad_redis_appendonly";
/// Requests refused by a rate window (429 `rate_limited`), by `tier`.
pub const RATE_LIMITED: &str = "quotad_rate_limited_total";

/// Every `outcome` of [`DECISIONS`].
pub const DECISION_OUTCOMES: &[&str] = &[
    "allowed",
    "denied",
    "rate_limited",
    "replayed",
    "key_reused",
    "invalid_key",
    "error",
];
/// Every `kind` of [`REDIS_ERRORS`].
pub const REDIS_ERROR_KINDS: &[&str] = &["unavailable", "timeout", "command", "reply", "config"];
/// Connections closed at accept because `http.max_connections` were open.
pub const HTTP_CONNECTIONS_REFUSED: &str = "quotad_http_connections_refused_total";

/// Histogram buckets for request latencies, in seconds (100 µs to 2.5 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Describes every metric to the installed recorder, and creates at 0 the series whose
/// label values are known in advance (SPEC §6), for the tiers of `tiers`.
pub fn describe<'a>(tiers: impl IntoIterator<Item = &'a str>) {
    describe_counter!(DECISIONS, "Quota decisions by outcome and tier");
    describe_histogram!(
        DECISION_DURATION,
        Unit::Seconds,
        "HTTP request to response time of decisions"
    );
    describe_counter!(REDIS_ERRORS, "Redis failures by kind");
    describe_gauge!(AUDIT_BACKLOG, "Entries in each shard's audit stream");
    describe_counter!(AUDIT_PERSISTED, "Audit records committed to SQLite");
    describe_histogram!(
        AUDIT_BATCH_DURATION,
        Unit::Seconds,
        "Time to persist one audit batch"
    );
    describe_counter!(
        AUDIT_TRIMMED_UNPERSISTED,
        "Audit entries trimmed before being persisted"
    );
    describe_counter!(
        AUDIT_RETENTION_DELETED,
        "Audit records deleted by retention"
    );
    describe_counter!(
        AUDIT_UNREADABLE,
        "Audit entries or records that could not be read, acknowledged without a row"
    );
    describe_gauge!(
        TIER_CATALOGUE_MISMATCH,
        "1 when this node's tier catalogue differs from Redis"
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route and status");
    describe_histogram!(BATCH_SIZE, "Decisions per EVALSHA of the batch script");
    describe_gauge!(
        REDIS_APPENDONLY,
        "1 when Redis persists with appendonly, 0 when it does not"
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by a rate window (429 rate_limited), by tier"
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "Connections refused at accept because max_connections were open"
    );
    // Unlabelled series exist from the start, so `rate()` and absence alerts work
    // before the first event.
    for counter in [
        AUDIT_PERSISTED,
        AUDIT_TRIMMED_UNPERSISTED,
        AUDIT_RETENTION_DELETED,
        HTTP_CONNECTIONS_REFUSED,
        AUDIT_UNREADABLE,
    ] {
        metrics::counter!(counter).increment(0);
    }
    metrics::gauge!(TIER_CATALOGUE_MISMATCH).set(0.0);
    for tier in tiers {
        metrics::counter!(RATE_LIMITED, "tier" => tier.to_owned()).increment(0);
        for &outcome in DECISION_OUTCOMES {
            metrics::counter!(DECISIONS, "outcome" => outcome, "tier" => tier.to_owned())
                .increment(0);
        }
    }
    // Decisions that fail before a tier is known are labelled with an empty tier.
    for &outcome in &["invalid_key", "key_reused", "error"] {
        metrics::counter!(DECISIONS, "outcome" => outcome, "tier" => "").increment(0);
    }
    for &kind in REDIS_ERROR_KINDS {
        metrics::counter!(REDIS_ERRORS, "kind" => kind).increment(0);
    }
}
