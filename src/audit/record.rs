//! One audit record, with the field names of SPEC §1.

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::id::AuditId;

/// One admitted (or, with `include_denied`, denied) request as it is kept and served.
/// Absent optional fields serialize as `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Shard tag + stream entry id, e.g. `q007-1764272474123-0`; unique across shards.
    pub audit_id: String,
    /// The key's id.
    pub key_id: String,
    /// The key's tier when the request was decided.
    pub tier: String,
    /// When the request was decided, RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    /// The endpoint label.
    pub endpoint: String,
    /// Units charged.
    pub cost: u64,
    /// The key's usage after this request.
    pub used_after: u64,
    /// `allowed` or `denied`.
    pub outcome: String,
    /// The client's idempotency key, if it sent one.
    pub idempotency_key: Option<String>,
    /// The caller's request summary (any JSON).
    pub request: Option<serde_json::Value>,
    /// The caller's response summary (any JSON).
    pub response: Option<serde_json::Value>,
    /// An upstream error text.
    pub error: Option<String>,
    /// Upstream processing time in milliseconds.
    pub processing_ms: Option<f64>,
}

impl AuditRecord {
    /// The timestamp as unix milliseconds, if it parses.
    pub fn ts_ms(&self) -> Option<i64> {
        DateTime::parse_from_rfc3339(&self.timestamp)
            .ok()
            .map(|t| t.timestamp_millis())
    }
}

/// A record in the shape SQLite keeps it: integers and blobs where text is not needed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    /// Shard, entry id and position.
    pub id: AuditId,
    /// The key's id as its 16 bytes.
    pub key_id: [u8; 16],
    /// When the request was decided, unix milliseconds.
    pub ts_ms: i64,
    /// The key's tier when the request was decided.
    pub tier: String,
    /// `allowed`, `denied`, …
    pub outcome: String,
    /// The endpoint label.
    pub endpoint: String,
    /// Units charged.
    pub cost: u64,
    /// The key's usage after this request.
    pub used_after: u64,
    /// The client's idempotency key, if it sent one.
    pub idempotency_key: Option<String>,
    /// The caller's request summary, as JSON text.
    pub request: Option<String>,
    /// The caller's response summary, as JSON text.
    pub response: Option<String>,
    /// An upstream error text.
    pub error: Option<String>,
    /// Upstream processing time in milliseconds.
    pub processing_ms: Option<f64>,
}
