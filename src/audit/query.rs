//! Reading the audit log: one key's records, newest first, in keyset pages.
//!
//! Pages are ordered by `(ts_ms, seq)` descending (`seq` is the insertion order,
//! which within one key is stream order) and a cursor is the position of the last
//! record served, so every record is on exactly one page even while new records
//! arrive (they sort before the cursor, or after it if they are older).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, Row};
use serde::Serialize;

use super::record::AuditRecord;
use super::{schema, AuditError};
use crate::quota::{format_instant, KeyId};

/// Records per page when no limit is given.
pub const DEFAULT_LIMIT: u32 = 100;
/// The largest page.
pub const MAX_LIMIT: u32 = 1000;

/// Which records to read: `from <= timestamp < to`, newest first.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    /// The key whose records to read.
    pub key_id: KeyId,
    /// Earliest instant, inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Latest instant, exclusive.
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1–1000; `None` = 100.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl AuditQuery {
    /// The first page of a key's records, default size, no time bounds.
    pub fn new(key_id: KeyId) -> Self {
        AuditQuery {
            key_id,
            from: None,
            to: None,
            limit: None,
            cursor: None,
        }
    }
}

/// One page: `{"records": [...], "next_cursor": null | "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    /// Records, newest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A page position: the `(ts_ms, seq)` of the last record served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    ts_ms: i64,
    seq: i64,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1:{}:{}", self.ts_ms, self.seq))
    }

    fn decode(text: &str) -> Result<Cursor, AuditError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| AuditError::BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| AuditError::BadCursor)?;
        let rest = text.strip_prefix("v1:").ok_or(AuditError::BadCursor)?;
        let (ts, seq) = rest.split_once(':').ok_or(AuditError::BadCursor)?;
        Ok(Cursor {
            ts_ms: ts.parse().map_err(|_| AuditError::BadCursor)?,
            seq: seq.parse().map_err(|_| AuditError::BadCursor)?,
        })
    }
}

const SELECT: &str = "SELECT audit_id, key_id, tier, ts_ms, endpoint, cost, used_after, outcome,
        idempotency_key, request, response, error, processing_ms, seq
    FROM audit_records
    WHERE key_id = ?1 AND ts_ms >= ?2 AND (ts_ms, seq) < (?3, ?4)
    ORDER BY ts_ms DESC, seq DESC
    LIMIT ?5";

/// Read access to the audit database; cheap to clone. Queries run off the runtime on
/// connections of their own (WAL lets them read while the writer commits).
#[derive(Debug, Clone)]
pub struct AuditReader {
    path: Arc<PathBuf>,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl AuditReader {
    /// Opens an existing audit database; a missing or uninitialized file is
    /// [`AuditError::Unavailable`].
    pub fn open(path: impl AsRef<Path>) -> Result<AuditReader, AuditError> {
        let path = path.as_ref().to_path_buf();
        let conn = schema::open_reader(&path)?;
        Ok(AuditReader {
            path: Arc::new(path),
            idle: Arc::new(Mutex::new(vec![conn])),
        })
    }

    /// One page of a key's records, newest first.
    pub async fn query(&self, query: AuditQuery) -> Result<AuditPage, AuditError> {
        let reader = self.clone();
        tokio::task::spawn_blocking(move || reader.query_blocking(&query))
            .await
            .map_err(|e| AuditError::Unavailable(format!("audit query task failed: {e}")))?
    }

    /// [`AuditReader::query`] on the calling thread (for the CLI and blocking contexts).
    pub fn query_blocking(&self, query: &AuditQuery) -> Result<AuditPage, AuditError> {
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AuditError::BadQuery(format!(
                "limit must be from 1 to {MAX_LIMIT}"
            )));
        }
        let after = match &query.cursor {
            Some(text) => Cursor::decode(text)?,
            None => Cursor {
                ts_ms: i64::MAX,
                seq: i64::MAX,
            },
        };
        let from = query.from.map_or(i64::MIN, |t| t.timestamp_millis());
        // One upper bound, so the index range starts right at the page: `ts_ms < to`
        // is `(ts_ms, seq) < (to, i64::MIN)`.
        let after = match query.to.map(|t| t.timestamp_millis()) {
            Some(to) if to <= after.ts_ms => Cursor {
                ts_ms: to,
                seq: i64::MIN,
            },
            _ => after,
        };
        let conn = self.checkout()?;
        let result = page(&conn, query.key_id.as_str(), from, &after, limit);
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
        result
    }

    fn checkout(&self) -> Result<Connection, AuditError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match pooled {
            Some(conn) => Ok(conn),
            None => schema::open_reader(&self.path),
        }
    }
}

fn page(
    conn: &Connection,
    key_id: &str,
    from: i64,
    after: &Cursor,
    limit: u32,
) -> Result<AuditPage, AuditError> {
    // Without a cursor, `after` is (i64::MAX, i64::MAX), above every real record.
    let mut stmt = conn.prepare_cached(SELECT)?;
    let mut records: Vec<(Cursor, AuditRecord)> = stmt
        .query_map(
            params![key_id, from, after.ts_ms, after.seq, limit + 1],
            record,
        )?
        .collect::<Result<_, _>>()?;
    let next_cursor = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records.last().map(|(position, _)| position.encode())
    } else {
        None
    };
    Ok(AuditPage {
        records: records.into_iter().map(|(_, r)| r).collect(),
        next_cursor,
    })
}

fn record(row: &Row<'_>) -> rusqlite::Result<(Cursor, AuditRecord)> {
    let ts_ms: i64 = row.get(3)?;
    let position = Cursor {
        ts_ms,
        seq: row.get(13)?,
    };
    let json = |i: usize| -> rusqlite::Result<Option<serde_json::Value>> {
        let text: Option<String> = row.get(i)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    };
    let timestamp = DateTime::from_timestamp_millis(ts_ms)
        .map(format_instant)
        .unwrap_or_default();
    Ok((
        position,
        AuditRecord {
            audit_id: row.get(0)?,
            key_id: row.get(1)?,
            tier: row.get(2)?,
            timestamp,
            endpoint: row.get(4)?,
            cost: row.get::<_, i64>(5)? as u64,
            used_after: row.get::<_, i64>(6)? as u64,
            outcome: row.get(7)?,
            idempotency_key: row.get(8)?,
            request: json(9)?,
            response: json(10)?,
            error: row.get(11)?,
            processing_ms: row.get(12)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            ts_ms: 1_764_272_474_123,
            seq: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in [
            "",
            "!!",
            "djE6",
            "djE6eDp5",
            &URL_SAFE_NO_PAD.encode("v2:1:2"),
            &URL_SAFE_NO_PAD.encode("v1:1:q001-1-0"),
        ] {
            assert!(
                matches!(Cursor::decode(bad), Err(AuditError::BadCursor)),
                "{bad}"
            );
        }
    }
}
