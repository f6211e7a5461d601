//! Retention: records older than the retention of the tier recorded with them are
//! deleted, at most [`DELETE_BATCH`] rows per transaction so the writer never waits long.
//! The day summaries (`audit_days`: which keys have records of a tier on which UTC day)
//! say where to look; each key's records are then one range of the table's primary key.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::table::DAY_MS;
use super::{schema, AuditError};
use crate::metrics as m;
use crate::quota::Catalogue;

/// Rows deleted per transaction.
pub const DELETE_BATCH: usize = 5_000;

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Records deleted.
    pub deleted: u64,
    /// Tiers found in the records but not in the catalogue (their records are kept).
    pub unknown_tiers: Vec<String>,
}

/// The distinct tiers that have records (label ids), found by seeks on the day
/// summaries rather than a scan, with their names.
const TIERS: &str = "WITH RECURSIVE t(tier) AS (
        SELECT MIN(tier) FROM audit_days
        UNION ALL
        SELECT (SELECT MIN(tier) FROM audit_days WHERE tier > t.tier) FROM t
        WHERE t.tier IS NOT NULL)
    SELECT t.tier, l.label FROM t JOIN audit_labels l ON l.id = t.tier";

/// The next (day, key) summaries of a tier up to the cut-off day, in keyset pages.
const DAYS: &str = "SELECT day, key_id FROM audit_days
    WHERE tier = ?1 AND day <= ?2 AND (day, key_id) > (?3, ?4)
    ORDER BY day, key_id LIMIT ?5";

/// Summaries read per page.
const DAYS_PAGE: i64 = 512;

/// Up to `?5` rows of one key, tier and time range, found on the primary key.
const DELETE_ROWS: &str = "DELETE FROM audit_rows
    WHERE (key_id, ts_ms, shard, entry_ms, entry_seq, pos) IN (
        SELECT key_id, ts_ms, shard, entry_ms, entry_seq, pos FROM audit_rows
        WHERE key_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 AND tier = ?4 LIMIT ?5)";

const DELETE_DAY: &str = "DELETE FROM audit_days WHERE tier = ?1 AND day = ?2 AND key_id = ?3";

/// Deletes every record older than its tier's retention as of `now`.
pub fn purge_expired(
    conn: &Connection,
    catalogue: &Catalogue,
    now: DateTime<Utc>,
) -> Result<RetentionReport, AuditError> {
    let tiers: Vec<(i64, String)> = conn
        .prepare(TIERS)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut report = RetentionReport::default();
    for (tier_id, tier) in tiers {
        let Some(days) = catalogue.get(&tier).map(|t| t.retention_days) else {
            report.unknown_tiers.push(tier);
            continue;
        };
        let cutoff = now.timestamp_millis() - i64::from(days) * DAY_MS;
        report.deleted += purge_tier(conn, tier_id, cutoff)?;
    }
    report.unknown_tiers.sort_unstable();
    Ok(report)
}

/// Deletes a tier's records older than `cutoff` (unix ms), key by key and day by day as
/// the summaries list them, at most [`DELETE_BATCH`] rows per transaction. A day wholly
/// before the cut-off loses its summary in the same transaction as its last rows, so a
/// record written meanwhile either is deleted with them or brings its summary back.
fn purge_tier(conn: &Connection, tier: i64, cutoff: i64) -> Result<u64, AuditError> {
    let cut_day = cutoff.div_euclid(DAY_MS);
    let mut after: (i64, Vec<u8>) = (i64::MIN, Vec::new());
    let mut deleted = 0u64;
    loop {
        let page: Vec<(i64, Vec<u8>)> = conn
            .prepare_cached(DAYS)?
            .query_map(params![tier, cut_day, after.0, after.1, DAYS_PAGE], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let Some(last) = page.last() else {
            return Ok(deleted);
        };
        after = last.clone();
        let mut batch = Batch::begin(conn)?;
        for (day, key_id) in page {
            let range = (day * DAY_MS, ((day + 1) * DAY_MS).min(cutoff));
            loop {
                let limit = DELETE_BATCH - batch.rows;
                let n = conn.prepare_cached(DELETE_ROWS)?.execute(params![
                    key_id,
                    range.0,
                    range.1,
                    tier,
                    limit as i64
                ])?;
                batch.rows += n;
                let finished = n < limit;
                if finished && day < cut_day {
                    conn.prepare_cached(DELETE_DAY)?
                        .execute(params![tier, day, key_id])?;
                }
                if batch.rows >= DELETE_BATCH {
                    deleted += batch.commit()?;
                    batch = Batch::begin(conn)?;
                }
                if finished {
                    break;
                }
            }
        }
        deleted += batch.commit()?;
    }
}

/// One retention transaction and the rows it deleted.
struct Batch<'c> {
    tx: Transaction<'c>,
    rows: usize,
}

impl<'c> Batch<'c> {
    fn begin(conn: &'c Connection) -> Result<Batch<'c>, AuditError> {
        Ok(Batch {
            tx: Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?,
            rows: 0,
        })
    }

    /// Commits; returns (and counts) the rows deleted.
    fn commit(self) -> Result<u64, AuditError> {
        self.tx.commit()?;
        metrics::counter!(m::AUDIT_RETENTION_DELETED).increment(self.rows as u64);
        Ok(self.rows as u64)
    }
}

/// Runs [`purge_expired`] now and then every `interval` on its own connection, off
/// the runtime, until `token` is cancelled. Tiers missing from the catalogue are
/// logged once each.
pub fn spawn_retention(
    path: PathBuf,
    catalogue: Catalogue,
    interval: Duration,
    token: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut warned = HashSet::new();
        loop {
            let (path, catalogue2) = (path.clone(), catalogue.clone());
            let pass = tokio::task::spawn_blocking(move || {
                let conn = schema::open_maintenance(&path)?;
                purge_expired(&conn, &catalogue2, Utc::now())
            })
            .await;
            match pass {
                Ok(Ok(report)) => {
                    if report.deleted > 0 {
                        tracing::info!(deleted = report.deleted, "audit retention pass");
                    }
                    for tier in report.unknown_tiers {
                        if warned.insert(tier.clone()) {
                            tracing::warn!(%tier, "audit records of a tier missing from the catalogue are kept");
                        }
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "audit retention pass failed"),
                Err(e) => tracing::error!(error = %e, "audit retention pass panicked"),
            }
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    })
}
