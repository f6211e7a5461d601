//! Reading the audit log: one key's records, newest first, in keyset pages.
//!
//! Pages are ordered by `(ts_ms, audit identity)` descending (the identity is the
//! shard, the entry id and the position; one key's records are all in one shard, so
//! within an instant this is stream order), which is the order of the table's primary
//! key after the key id: a page is one backwards range scan. A cursor is the position
//! of the last record served, so every record is on exactly one page even while new
//! records arrive (they sort before the cursor, or after it if they are older).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, Row};
use serde::Serialize;

use super::decode::key_bytes;
use super::id::AuditId;
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

/// A page position: the `(ts_ms, shard, entry_ms, entry_seq, pos)` of the last record
/// served, as stored (entry id parts as SQLite's i64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor([i64; 5]);

impl Cursor {
    /// Above every record.
    const TOP: Cursor = Cursor([i64::MAX; 5]);

    fn encode(&self) -> String {
        let [ts, shard, ms, seq, pos] = self.0;
        URL_SAFE_NO_PAD.encode(format!("v2:{ts}:{shard}:{ms}:{seq}:{pos}"))
    }

    /// Only cursors of this schema decode: a version 1 cursor is a bad request.
    fn decode(text: &str) -> Result<Cursor, AuditError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| AuditError::BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| AuditError::BadCursor)?;
        let rest = text.strip_prefix("v2:").ok_or(AuditError::BadCursor)?;
        let mut parts = rest.split(':').map(|p| p.parse::<i64>());
        let mut out = [0i64; 5];
        for slot in &mut out {
            *slot = parts
                .next()
                .and_then(Result::ok)
                .ok_or(AuditError::BadCursor)?;
        }
        match parts.next() {
            None => Ok(Cursor(out)),
            Some(_) => Err(AuditError::BadCursor),
        }
    }
}

/// Label names come from their table by primary key; as scalar subqueries they cannot
/// change the plan, which must stay one range of the table's primary key.
const SELECT: &str = "SELECT ts_ms, shard, entry_ms, entry_seq, pos,
        (SELECT label FROM audit_labels WHERE id = r.tier),
        (SELECT label FROM audit_labels WHERE id = r.outcome),
        endpoint, cost, used_after, idempotency_key, request, response, error, processing_ms
    FROM audit_rows r
    WHERE key_id = ?1 AND ts_ms >= ?2
        AND (ts_ms, shard, entry_ms, entry_seq, pos) < (?3, ?4, ?5, ?6, ?7)
    ORDER BY ts_ms DESC, shard DESC, entry_ms DESC, entry_seq DESC, pos DESC
    LIMIT ?8";

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
            None => Cursor::TOP,
        };
        let from = query.from.map_or(i64::MIN, |t| t.timestamp_millis());
        // One upper bound, so the range starts right at the page: `ts_ms < to` is
        // `(ts_ms, …) < (to, i64::MIN, …)`.
        let after = match query.to.map(|t| t.timestamp_millis()) {
            Some(to) if to <= after.0[0] => Cursor([to, i64::MIN, i64::MIN, i64::MIN, i64::MIN]),
            _ => after,
        };
        let conn = self.checkout()?;
        let result = page(&conn, &query.key_id, from, &after, limit);
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
    key_id: &KeyId,
    from: i64,
    after: &Cursor,
    limit: u32,
) -> Result<AuditPage, AuditError> {
    let key = key_bytes(key_id.as_str().as_bytes())
        .map_err(|_| AuditError::BadQuery("the key id is not 32 hex characters".into()))?;
    let [ts, shard, ms, seq, pos] = after.0;
    let mut stmt = conn.prepare_cached(SELECT)?;
    let mut records: Vec<(Cursor, AuditRecord)> = stmt
        .query_map(
            params![&key[..], from, ts, shard, ms, seq, pos, limit + 1],
            |row| record(row, key_id),
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

fn record(row: &Row<'_>, key_id: &KeyId) -> rusqlite::Result<(Cursor, AuditRecord)> {
    let mut position = [0i64; 5];
    for (i, slot) in position.iter_mut().enumerate() {
        *slot = row.get(i)?;
    }
    let [ts_ms, shard, ms, seq, pos] = position;
    let id = AuditId {
        shard: shard as u32,
        ms: ms as u64,
        seq: seq as u64,
        pos: pos as u32,
    };
    let json = |i: usize| -> rusqlite::Result<Option<serde_json::Value>> {
        let text: Option<String> = row.get(i)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    };
    let timestamp = DateTime::from_timestamp_millis(ts_ms)
        .map(format_instant)
        .unwrap_or_default();
    Ok((
        Cursor(position),
        AuditRecord {
            audit_id: id.to_string(),
            key_id: key_id.to_string(),
            tier: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
            timestamp,
            endpoint: row.get(7)?,
            cost: row.get::<_, i64>(8)? as u64,
            used_after: row.get::<_, i64>(9)? as u64,
            outcome: row.get::<_, Option<String>>(6)?.unwrap_or_default(),
            idempotency_key: row.get(10)?,
            request: json(11)?,
            response: json(12)?,
            error: row.get(13)?,
            processing_ms: row.get(14)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor([1_764_272_474_123, 7, 1_764_272_474_120, 0, 3]);
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in [
            "",
            "!!",
            "djE6",
            "djE6eDp5",
            // a cursor of schema 1
            &URL_SAFE_NO_PAD.encode("v1:1:2"),
            &URL_SAFE_NO_PAD.encode("v2:1:2:3:4"),
            &URL_SAFE_NO_PAD.encode("v2:1:2:3:4:5:6"),
            &URL_SAFE_NO_PAD.encode("v2:1:2:3:4:x"),
            &URL_SAFE_NO_PAD.encode("v1:1:q001-1-0"),
        ] {
            assert!(
                matches!(Cursor::decode(bad), Err(AuditError::BadCursor)),
                "{bad}"
            );
        }
    }
}
