//! Entries in hand: decoded from stream replies, grouped into batches.

use std::collections::BTreeMap;

use super::decode::decode;
use super::entry::Entry;
use super::id::{AuditId, EntryId};
use super::record::Row;
use crate::metrics as m;

/// One entry in hand: its shard, its id, and its rows (none: trimmed or unreadable).
#[derive(Debug)]
pub(crate) struct Item {
    /// The shard whose stream holds it.
    pub shard: usize,
    /// The stream entry id, to acknowledge.
    pub id: String,
    /// Its records.
    pub rows: Vec<Row>,
}

/// One transaction's worth of entries: the rows to commit, then the ids to XACK.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Rows to insert, entry by entry (kept apart: moving rows costs more than the rows).
    pub rows: Vec<Vec<Row>>,
    /// How many rows that is.
    pub row_count: usize,
    /// Ids to acknowledge per shard after COMMIT (including entries without a row).
    pub acks: Vec<(usize, Vec<String>)>,
    /// How many entries it holds.
    pub entries: usize,
}

impl Batch {
    /// Takes whole entries from `items` until the batch holds `max_entries` entries or
    /// `max_rows` rows (an entry's records are never split over two transactions).
    pub fn take(
        items: &mut std::iter::Peekable<impl Iterator<Item = Item>>,
        max_entries: usize,
        max_rows: usize,
    ) -> Batch {
        let mut acks: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let (mut rows, mut row_count, mut entries) = (Vec::new(), 0, 0);
        while let Some(item) = items.next_if(|_| row_count < max_rows && entries < max_entries) {
            acks.entry(item.shard).or_default().push(item.id);
            if !item.rows.is_empty() {
                row_count += item.rows.len();
                rows.push(item.rows);
            }
            entries += 1;
        }
        Batch {
            rows,
            row_count,
            acks: acks.into_iter().collect(),
            entries,
        }
    }
}

/// Turns per-shard entries (and ids found deleted) into items in hand, decoding each
/// entry only when it is taken (so the first batches commit while the rest decode);
/// entries that were trimmed or cannot be read are logged and kept, without rows, to be
/// acknowledged.
pub(crate) fn items(
    batches: impl IntoIterator<Item = (usize, Vec<Entry>, Vec<String>)>,
) -> impl Iterator<Item = Item> {
    batches.into_iter().flat_map(|(shard, entries, deleted)| {
        let entries = entries.into_iter().map(move |entry| Item {
            shard,
            rows: rows_of(shard, &entry),
            id: entry.id,
        });
        let deleted = deleted.into_iter().map(move |id| {
            trimmed(shard, &id);
            Item {
                shard,
                id,
                rows: Vec::new(),
            }
        });
        entries.chain(deleted)
    })
}

fn trimmed(shard: usize, id: &str) {
    tracing::warn!(audit_id = %format!("q{shard:03}-{id}"), "audit entry was trimmed before it was persisted");
}

fn unreadable(audit_id: &dyn std::fmt::Display, why: &dyn std::fmt::Display) {
    tracing::error!(%audit_id, %why, "unreadable audit record acknowledged without a row");
    metrics::counter!(m::AUDIT_UNREADABLE).increment(1);
}

fn rows_of(shard: usize, entry: &Entry) -> Vec<Row> {
    let Some(fields) = &entry.fields else {
        trimmed(shard, &entry.id);
        return Vec::new();
    };
    let entry_audit_id = || format!("q{shard:03}-{}", entry.id);
    let Some(entry_id) = EntryId::parse(&entry.id) else {
        unreadable(&entry_audit_id(), &"the entry id is not ms-seq");
        return Vec::new();
    };
    match decode(shard as u32, entry_id, fields) {
        Ok(decoded) => {
            for (id, why) in &decoded.unreadable {
                unreadable(id, why);
            }
            decoded.rows
        }
        Err(why) => {
            unreadable(&AuditId::new(shard as u32, entry_id, 0), &why);
            Vec::new()
        }
    }
}
