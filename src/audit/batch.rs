//! Entries in hand: parsed from stream replies, grouped into batches.

use std::collections::BTreeMap;

use super::entry::Entry;
use super::record::{row_from_fields, Row};

/// One entry in hand: its shard, its id, and its row (`None`: trimmed or unreadable).
pub(crate) type Item = (usize, String, Option<Row>);

/// One transaction's worth of entries: the rows to commit, then the ids to XACK.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Rows to insert.
    pub rows: Vec<Row>,
    /// Ids to acknowledge per shard after COMMIT (including entries without a row).
    pub acks: Vec<(usize, Vec<String>)>,
}

impl Batch {
    /// Groups items into rows and per-shard ack lists.
    pub fn from_items(items: impl Iterator<Item = Item>) -> Batch {
        let mut acks: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut rows = Vec::new();
        for (shard, id, row) in items {
            acks.entry(shard).or_default().push(id);
            rows.extend(row);
        }
        Batch {
            rows,
            acks: acks.into_iter().collect(),
        }
    }
}

/// Turns per-shard entries (and ids found deleted) into items in hand.
pub(crate) fn items(batches: impl Iterator<Item = (usize, Vec<Entry>, Vec<String>)>) -> Vec<Item> {
    let mut out = Vec::new();
    for (s, entries, deleted) in batches {
        for entry in entries {
            let audit_id = format!("q{s:03}-{}", entry.id);
            let row = match entry.fields {
                None => {
                    tracing::warn!(%audit_id, "audit entry was trimmed before it was persisted");
                    None
                }
                Some(fields) => match row_from_fields(audit_id.clone(), &fields) {
                    Ok(row) => Some(row),
                    Err(why) => {
                        tracing::error!(%audit_id, %why, "unreadable audit entry acknowledged without a row");
                        None
                    }
                },
            };
            out.push((s, entry.id, row));
        }
        for id in deleted {
            tracing::warn!(audit_id = %format!("q{s:03}-{id}"), "audit entry was trimmed before it was persisted");
            out.push((s, id, None));
        }
    }
    out
}
