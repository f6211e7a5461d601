//! Retention: records older than the retention of the tier recorded with them are
//! deleted, at most [`DELETE_BATCH`] rows per transaction so the writer never waits long.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// The distinct tiers in the table (label ids), found by seeks on the retention index
/// rather than a scan, with their names.
const TIERS: &str = "WITH RECURSIVE t(tier) AS (
        SELECT MIN(tier) FROM audit_rows
        UNION ALL
        SELECT (SELECT MIN(tier) FROM audit_rows WHERE tier > t.tier) FROM t
        WHERE t.tier IS NOT NULL)
    SELECT t.tier, l.label FROM t JOIN audit_labels l ON l.id = t.tier";

/// One small batch: the oldest rows of a tier past its cut-off, found on the retention
/// index, deleted by primary key.
const DELETE: &str = "DELETE FROM audit_rows
    WHERE (key_id, ts_ms, shard, entry_ms, entry_seq, pos) IN (
        SELECT key_id, ts_ms, shard, entry_ms, entry_seq, pos FROM audit_rows
        WHERE tier = ?1 AND ts_ms < ?2 LIMIT ?3)";

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
        let cutoff = now.timestamp_millis() - i64::from(days) * 86_400_000;
        let mut delete = conn.prepare_cached(DELETE)?;
        loop {
            // Autocommit: each batch is its own short transaction.
            let n = delete.execute(params![tier_id, cutoff, DELETE_BATCH as i64])?;
            report.deleted += n as u64;
            metrics::counter!(m::AUDIT_RETENTION_DELETED).increment(n as u64);
            if n < DELETE_BATCH {
                break;
            }
        }
    }
    report.unknown_tiers.sort_unstable();
    Ok(report)
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
