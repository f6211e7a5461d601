//! One audit record, with the field names of SPEC §1.

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use crate::quota::format_instant;

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

/// The `extras` field of a stream entry: a JSON object with the optional fields.
#[derive(Debug, Default, Deserialize)]
struct Extras {
    #[serde(default)]
    request: Option<serde_json::Value>,
    #[serde(default)]
    response: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    processing_ms: Option<f64>,
}

/// A record ready for SQLite: the record plus its instant in unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    /// The record.
    pub record: AuditRecord,
    /// `timestamp` in unix milliseconds, for ordering and retention.
    pub ts_ms: i64,
}

/// Builds a row from the fields `lua/consume.lua` XADDs; `None` names what is missing.
pub(crate) fn row_from_fields(
    audit_id: String,
    fields: &[(String, String)],
) -> Result<Row, String> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("field {name} is missing"))
    };
    let number = |name: &str| {
        get(name)?
            .parse::<u64>()
            .map_err(|_| format!("field {name} is not a number"))
    };
    let ts = DateTime::parse_from_rfc3339(get("ts")?).map_err(|_| "field ts is not RFC 3339")?;
    let extras: Extras = match get("extras") {
        Ok(text) if !text.is_empty() => {
            serde_json::from_str(text).map_err(|_| "field extras is not a JSON object")?
        }
        _ => Extras::default(),
    };
    let idem = get("idem").unwrap_or("");
    let record = AuditRecord {
        audit_id,
        key_id: get("key_id")?.to_owned(),
        tier: get("tier")?.to_owned(),
        timestamp: format_instant(ts.to_utc()),
        endpoint: get("endpoint").unwrap_or("").to_owned(),
        cost: number("cost")?,
        used_after: number("used_after")?,
        outcome: get("outcome")?.to_owned(),
        idempotency_key: (!idem.is_empty()).then(|| idem.to_owned()),
        request: extras.request,
        response: extras.response,
        error: extras.error,
        processing_ms: extras.processing_ms,
    };
    Ok(Row {
        record,
        ts_ms: ts.timestamp_millis(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn stream_fields_become_a_record() {
        let f = fields(&[
            ("key_id", "ab"),
            ("tier", "pro"),
            ("ts", "2026-11-27T19:41:14.123Z"),
            ("endpoint", "/v1/x"),
            ("cost", "3"),
            ("used_after", "10"),
            ("outcome", "allowed"),
            ("idem", ""),
            ("extras", r#"{"request":{"a":1},"processing_ms":2.5}"#),
        ]);
        let row = row_from_fields("q001-1-0".into(), &f).unwrap();
        assert_eq!(row.ts_ms, 1_795_808_474_123);
        assert_eq!(row.record.idempotency_key, None);
        assert_eq!(row.record.request, Some(serde_json::json!({"a": 1})));
        assert_eq!(row.record.response, None);
        assert_eq!(row.record.processing_ms, Some(2.5));
        let json = serde_json::to_value(&row.record).unwrap();
        assert_eq!(json["timestamp"], "2026-11-27T19:41:14.123Z");
        assert!(json["error"].is_null() && json["idempotency_key"].is_null());
    }

    #[test]
    fn a_missing_field_is_named() {
        let f = fields(&[("key_id", "ab")]);
        let err = row_from_fields("q001-1-0".into(), &f).unwrap_err();
        assert!(err.contains("is missing"), "{err}");
    }
}
