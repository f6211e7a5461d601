//! The identity of an audit record: its shard, its stream entry id and, for entries
//! carrying several records (v2), its position in the entry.
//!
//! Rendered as `q007-1764272474123-0` (v1: one record per entry) or
//! `q007-1764272474123-0.3` (v2: record 3 of the entry). Stored as four integers.

use std::fmt;

/// One record's identity; unique across shards and stable across redelivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct AuditId {
    /// The shard whose stream held the entry.
    pub shard: u32,
    /// The entry id: milliseconds part.
    pub ms: u64,
    /// The entry id: sequence part.
    pub seq: u64,
    /// The record's position in a v2 entry (1..n); 0 for a v1 entry (no position).
    pub pos: u32,
}

impl AuditId {
    /// The id of the record at `pos` (0: the only record of a v1 entry) of `entry`.
    pub fn new(shard: u32, entry: EntryId, pos: u32) -> AuditId {
        AuditId {
            shard,
            ms: entry.ms,
            seq: entry.seq,
            pos,
        }
    }

    /// Parses a rendered id; only the exact rendering is accepted, so that parsing and
    /// rendering back always give the same text.
    pub fn parse(text: &str) -> Option<AuditId> {
        let rest = text.strip_prefix('q')?;
        let (shard, entry) = rest.split_once('-')?;
        let (entry, pos) = match entry.split_once('.') {
            Some((entry, pos)) => (entry, Some(pos)),
            None => (entry, None),
        };
        let id = AuditId {
            shard: digits(shard)?,
            pos: match pos {
                Some(pos) => digits(pos).filter(|&p| p > 0)?,
                None => 0,
            },
            ..AuditId::new(0, EntryId::parse(entry)?, 0)
        };
        (id.to_string() == text).then_some(id)
    }
}

impl fmt::Display for AuditId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{:03}-{}-{}", self.shard, self.ms, self.seq)?;
        if self.pos > 0 {
            write!(f, ".{}", self.pos)?;
        }
        Ok(())
    }
}

/// A stream entry id, `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct EntryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// Parses `ms-seq` as Redis writes it.
    pub fn parse(text: &str) -> Option<EntryId> {
        let (ms, seq) = text.split_once('-')?;
        Some(EntryId {
            ms: digits(ms)?,
            seq: digits(seq)?,
        })
    }
}

/// A plain decimal number (no sign, no spaces).
fn digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_ids_round_trip() {
        for text in [
            "q007-1764272474123-0",
            "q007-1764272474123-0.3",
            "q063-1-18446744073709551615.64",
            "q1000-5-2",
        ] {
            let id = AuditId::parse(text).unwrap();
            assert_eq!(id.to_string(), text);
        }
        let id = AuditId::parse("q007-1764272474123-0.3").unwrap();
        assert_eq!(
            (id.shard, id.ms, id.seq, id.pos),
            (7, 1_764_272_474_123, 0, 3)
        );
        assert_eq!(AuditId::parse("q007-1-0").unwrap().pos, 0);
    }

    #[test]
    fn anything_but_the_exact_rendering_is_refused() {
        for bad in [
            "",
            "q7-1-0",
            "q007-1",
            "q007-1-0.0",
            "q007-1-0.",
            "q007-01-0",
            "q007-1-+0",
            "x007-1-0",
            "q007-1-0.3.4",
            "q007-a-0",
        ] {
            assert_eq!(AuditId::parse(bad), None, "{bad}");
        }
    }
}
