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
    /// Rows to insert.
    pub rows: Vec<Row>,
    /// Ids to acknowledge per shard after COMMIT (including entries without a row).
    pub acks: Vec<(usize, Vec<String>)>,
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
        let (mut rows, mut entries) = (Vec::new(), 0);
        while let Some(item) = items.next_if(|_| rows.len() < max_rows && entries < max_entries) {
            acks.entry(item.shard).or_default().push(item.id);
            rows.extend(item.rows);
            entries += 1;
        }
        Batch {
            rows,
            acks: acks.into_iter().collect(),
        }
    }
}

/// Turns per-shard entries (and ids found deleted) into items in hand; entries that
/// were trimmed or cannot be read are logged and kept (without rows) to be acknowledged.
pub(crate) fn items(batches: impl Iterator<Item = (usize, Vec<Entry>, Vec<String>)>) -> Vec<Item> {
    let mut out = Vec::new();
    for (shard, entries, deleted) in batches {
        for entry in entries {
            let rows = rows_of(shard, &entry);
            out.push(Item {
                shard,
                id: entry.id,
                rows,
            });
        }
        for id in deleted {
            trimmed(shard, &id);
            out.push(Item {
                shard,
                id,
                rows: Vec::new(),
            });
        }
    }
    out
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
