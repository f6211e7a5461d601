//! The compact records table (schema v2): how a [`Row`] is written, with tiers and
//! outcomes kept once in `audit_labels` and referenced by id, and each (tier, UTC day,
//! key) that has rows noted once in `audit_days` for retention.

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension};

use super::record::Row;
use super::AuditError;

/// Redelivery of a record inserts nothing: its key id and instant come from the same
/// entry, so the same record always has the same primary key.
const INSERT: &str = "INSERT OR IGNORE INTO audit_rows
    (key_id, ts_ms, shard, entry_ms, entry_seq, pos, tier, outcome, endpoint, cost,
     used_after, idempotency_key, request, response, error, processing_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

/// Records that a tier's rows exist for a key on a day, so retention finds them without
/// an index entry per row.
const INSERT_DAY: &str = "INSERT OR IGNORE INTO audit_days (tier, day, key_id) VALUES (?1, ?2, ?3)";

/// Milliseconds of one UTC day, the unit of `audit_days`.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// The label ids known to be committed, so a batch looks up each tier and outcome in
/// memory; labels added by a transaction that fails are forgotten with [`Labels::reload`].
/// Labels are few (the catalogue's tiers and the outcomes), so a list beats a hash map.
#[derive(Debug, Default)]
pub(crate) struct Labels {
    ids: Vec<(String, i64)>,
}

impl Labels {
    /// Every label in the file.
    pub fn load(conn: &Connection) -> Result<Labels, AuditError> {
        let mut labels = Labels::default();
        labels.reload(conn)?;
        Ok(labels)
    }

    /// Forgets what is cached and reads the table again (after a rolled-back batch).
    pub fn reload(&mut self, conn: &Connection) -> Result<(), AuditError> {
        // Cleared first: if reading fails, lookups fall back to the table.
        self.ids.clear();
        self.ids = conn
            .prepare("SELECT label, id FROM audit_labels")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    /// The id of `label`, added to the table (inside the caller's transaction) if new.
    pub fn id(&mut self, conn: &Connection, label: &str) -> Result<i64, AuditError> {
        if let Some((_, id)) = self.ids.iter().find(|(l, _)| l == label) {
            return Ok(*id);
        }
        let found: Option<i64> = conn
            .prepare_cached("SELECT id FROM audit_labels WHERE label = ?1")?
            .query_row([label], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                conn.prepare_cached("INSERT INTO audit_labels (label) VALUES (?1)")?
                    .execute([label])?;
                conn.last_insert_rowid()
            }
        };
        self.ids.push((label.to_owned(), id));
        Ok(id)
    }
}

/// Inserts the rows that are not there yet, and the day summaries of all of them, in
/// the caller's transaction; returns how many rows were new.
pub(crate) fn insert_rows(
    conn: &Connection,
    labels: &mut Labels,
    rows: &[&Row],
) -> Result<usize, AuditError> {
    let mut stmt = conn.prepare_cached(INSERT)?;
    let mut days = BTreeSet::new();
    let mut last = None;
    let mut inserted = 0;
    for row in rows {
        let tier = labels.id(conn, &row.tier)?;
        let outcome = labels.id(conn, &row.outcome)?;
        // Entry ids are u64 in Redis; SQLite integers are i64. Auto-generated ids never
        // reach 2^63, and the cast is undone exactly when an id is rendered.
        inserted += stmt.execute(params![
            &row.key_id[..],
            row.ts_ms,
            row.id.shard,
            row.id.ms as i64,
            row.id.seq as i64,
            row.id.pos,
            tier,
            outcome,
            row.endpoint,
            row.cost as i64,
            row.used_after as i64,
            row.idempotency_key,
            row.request,
            row.response,
            row.error,
            row.processing_ms,
        ])?;
        // Also for rows already there: a summary goes only with its rows (retention
        // deletes both in one transaction), so adding it again is always safe. Rows
        // come sorted by key and time, so most share the previous row's summary.
        let summary = (
            tier,
            row.ts_ms.div_euclid(DAY_MS),
            u128::from_be_bytes(row.key_id),
        );
        if last != Some(summary) {
            days.insert(summary);
            last = Some(summary);
        }
    }
    let mut day = conn.prepare_cached(INSERT_DAY)?;
    for (tier, d, key_id) in days {
        day.execute(params![tier, d, &key_id.to_be_bytes()[..]])?;
    }
    Ok(inserted)
}
