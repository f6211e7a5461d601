//! Stream entries become rows.
//!
//! - **v2** (one entry per shard per batch of decisions): fields `v` = `2`, `ts` = the
//!   batch's instant, then `1`..`n`, each one record whose subfields are joined by the
//!   unit separator `\x1f`: `key_id`, `tier`, `endpoint`, `cost`, `used_after`,
//!   `outcome`, `idempotency_key` (empty = none), `extras` (JSON; empty or `{}` = none).
//!   Subfields past the eighth are for later versions of the script and are ignored.
//! - **v1** (one record per entry, no `v`): the fields `lua/consume.lua` XADDs, named.
//!
//! Parsing borrows from the reply: the only copies are the texts a row keeps.

use std::borrow::Cow;

use chrono::DateTime;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::id::{AuditId, EntryId};
use super::record::Row;

/// Separates the subfields of a v2 record (control characters cannot occur inside them).
const UNIT_SEPARATOR: u8 = 0x1f;

/// Subfields of a record, in v2 order.
const SUBFIELDS: usize = 8;

/// Why an entry, or one record of it, cannot become a row.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum Unreadable {
    /// A required field is absent.
    #[error("field {0} is missing")]
    Missing(&'static str),
    /// A field that must be a decimal integer (at most 2^63 - 1) is not.
    #[error("field {0} is not a number")]
    NotANumber(&'static str),
    /// A text field is not UTF-8.
    #[error("field {0} is not UTF-8")]
    NotText(&'static str),
    /// `ts` is not an RFC 3339 instant.
    #[error("field ts is not an RFC 3339 instant")]
    BadInstant,
    /// `key_id` is not 32 lowercase hex characters.
    #[error("field key_id is not 32 lowercase hex characters")]
    BadKeyId,
    /// `extras` is not a JSON object of the audit extras.
    #[error("field extras is not a JSON object of request, response, error, processing_ms")]
    BadExtras,
    /// The entry's `v` is not one this quotad reads.
    #[error("unknown entry version {0:?}")]
    UnknownVersion(String),
    /// A v2 record has fewer than the eight subfields.
    #[error("the record has {0} subfields, fewer than 8")]
    TooFewSubfields(usize),
    /// A v2 field name that should be a record position is 0 or too large.
    #[error("record position {0:?} is not a number from 1")]
    BadPosition(String),
}

/// What one readable entry holds.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// Its records as rows, in the entry's order.
    pub rows: Vec<Row>,
    /// Records that cannot be read, with their identity (the rest of the entry stands).
    pub unreadable: Vec<(AuditId, Unreadable)>,
}

/// Decodes the fields of `entry` in `shard`'s stream; an error means no record of it
/// can be read (the entry is acknowledged without rows).
pub(crate) fn decode(
    shard: u32,
    entry: EntryId,
    fields: &[(Vec<u8>, Vec<u8>)],
) -> Result<Decoded, Unreadable> {
    match field(fields, "v") {
        None => {
            let row = v1(AuditId::new(shard, entry, 0), fields)?;
            Ok(Decoded {
                rows: vec![row],
                unreadable: Vec::new(),
            })
        }
        Some(b"2") => v2(shard, entry, fields),
        Some(other) => Err(Unreadable::UnknownVersion(
            String::from_utf8_lossy(other).into_owned(),
        )),
    }
}

fn field<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

/// The v1 field names in v2 subfield order, then `ts`; `true` where the field may be
/// absent (read as empty).
const V1_FIELDS: [(&str, bool); SUBFIELDS + 1] = [
    ("key_id", false),
    ("tier", false),
    ("endpoint", true),
    ("cost", false),
    ("used_after", false),
    ("outcome", false),
    ("idem", true),
    ("extras", true),
    ("ts", false),
];

fn v1(id: AuditId, fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Row, Unreadable> {
    // One pass over the fields, each put in its slot.
    let mut slots: [Option<&[u8]>; SUBFIELDS + 1] = [None; SUBFIELDS + 1];
    for (name, value) in fields {
        if let Some(i) = V1_FIELDS.iter().position(|(n, _)| n.as_bytes() == name) {
            slots[i] = Some(value);
        }
    }
    let mut parts: [&[u8]; SUBFIELDS + 1] = [&[]; SUBFIELDS + 1];
    for (i, (name, optional)) in V1_FIELDS.iter().enumerate() {
        parts[i] = match slots[i] {
            Some(value) => value,
            None if *optional => &[],
            None => return Err(Unreadable::Missing(name)),
        };
    }
    let [key_id, tier, endpoint, cost, used_after, outcome, idem, extras, ts] = parts;
    let ts_ms = instant(ts)?;
    row(
        id,
        ts_ms,
        [
            key_id, tier, endpoint, cost, used_after, outcome, idem, extras,
        ],
    )
}

fn v2(shard: u32, entry: EntryId, fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Decoded, Unreadable> {
    let ts_ms = instant(field(fields, "ts").ok_or(Unreadable::Missing("ts"))?)?;
    let mut decoded = Decoded::default();
    for (name, value) in fields {
        // `v`, `ts`, and any entry-level field a later version adds, are not records.
        if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
            continue;
        }
        let pos = std::str::from_utf8(name)
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|&p| p > 0);
        let Some(pos) = pos else {
            let name = String::from_utf8_lossy(name).into_owned();
            decoded
                .unreadable
                .push((AuditId::new(shard, entry, 0), Unreadable::BadPosition(name)));
            continue;
        };
        let id = AuditId::new(shard, entry, pos);
        match subfields(value).and_then(|parts| row(id, ts_ms, parts)) {
            Ok(row) => decoded.rows.push(row),
            Err(why) => decoded.unreadable.push((id, why)),
        }
    }
    Ok(decoded)
}

/// The first eight subfields of a v2 record.
fn subfields(value: &[u8]) -> Result<[&[u8]; SUBFIELDS], Unreadable> {
    let mut parts: [&[u8]; SUBFIELDS] = [&[]; SUBFIELDS];
    let mut found = 0;
    for (slot, part) in parts.iter_mut().zip(value.split(|&b| b == UNIT_SEPARATOR)) {
        *slot = part;
        found += 1;
    }
    match found {
        SUBFIELDS => Ok(parts),
        n => Err(Unreadable::TooFewSubfields(n)),
    }
}

/// A row from the subfields, in v2 order.
fn row(id: AuditId, ts_ms: i64, parts: [&[u8]; SUBFIELDS]) -> Result<Row, Unreadable> {
    let [key_id, tier, endpoint, cost, used_after, outcome, idem, extras] = parts;
    let extras = Extras::parse(extras)?;
    Ok(Row {
        id,
        key_id: key_bytes(key_id)?,
        ts_ms,
        tier: text(tier, "tier")?.to_owned(),
        outcome: text(outcome, "outcome")?.to_owned(),
        endpoint: text(endpoint, "endpoint")?.to_owned(),
        cost: number(cost, "cost")?,
        used_after: number(used_after, "used_after")?,
        idempotency_key: match idem {
            b"" => None,
            idem => Some(text(idem, "idempotency_key")?.to_owned()),
        },
        request: extras.request.map(|v| v.get().to_owned()),
        response: extras.response.map(|v| v.get().to_owned()),
        error: extras.error.map(Cow::into_owned),
        processing_ms: extras.processing_ms,
    })
}

fn text<'a>(bytes: &'a [u8], name: &'static str) -> Result<&'a str, Unreadable> {
    std::str::from_utf8(bytes).map_err(|_| Unreadable::NotText(name))
}

/// A decimal integer that SQLite stores exactly (at most `i64::MAX`).
fn number(bytes: &[u8], name: &'static str) -> Result<u64, Unreadable> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|&n| i64::try_from(n).is_ok())
        .ok_or(Unreadable::NotANumber(name))
}

/// The 16 bytes of a key id written as 32 lowercase hex characters (the only form
/// that renders back to the same text).
pub(crate) fn key_bytes(hex_id: &[u8]) -> Result<[u8; 16], Unreadable> {
    let lower = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if hex_id.len() != 32 || !hex_id.iter().all(lower) {
        return Err(Unreadable::BadKeyId);
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(hex_id, &mut out).map_err(|_| Unreadable::BadKeyId)?;
    Ok(out)
}

/// An RFC 3339 instant as unix milliseconds.
fn instant(bytes: &[u8]) -> Result<i64, Unreadable> {
    let text = std::str::from_utf8(bytes).map_err(|_| Unreadable::BadInstant)?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| Unreadable::BadInstant)
}

/// The optional record fields, borrowed from the entry: JSON values are kept as the
/// text they arrived in (validated, not rebuilt).
#[derive(Debug, Default, Deserialize)]
struct Extras<'a> {
    #[serde(default, borrow)]
    request: Option<&'a RawValue>,
    #[serde(default, borrow)]
    response: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
    #[serde(default)]
    processing_ms: Option<f64>,
}

impl<'a> Extras<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Extras<'a>, Unreadable> {
        match bytes {
            b"" | b"{}" => Ok(Extras::default()),
            _ => serde_json::from_slice(bytes).map_err(|_| Unreadable::BadExtras),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn fields(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn entry() -> EntryId {
        EntryId::parse("1764272474123-0").unwrap()
    }

    #[test]
    fn v1_fields_become_one_row() {
        let f = fields(&[
            ("key_id", KEY),
            ("tier", "pro"),
            ("ts", "2026-11-27T19:41:14.123Z"),
            ("endpoint", "/v1/x"),
            ("cost", "3"),
            ("used_after", "10"),
            ("outcome", "allowed"),
            ("idem", ""),
            (
                "extras",
                r#"{"request":{"a":1},"processing_ms":2.5,"response":null}"#,
            ),
        ]);
        let d = decode(7, entry(), &f).unwrap();
        let row = &d.rows[0];
        assert_eq!(row.id.to_string(), "q007-1764272474123-0");
        assert_eq!(row.ts_ms, 1_795_808_474_123);
        assert_eq!(hex::encode(row.key_id), KEY);
        assert_eq!((row.cost, row.used_after), (3, 10));
        assert_eq!(row.idempotency_key, None);
        assert_eq!(row.request.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(row.response, None);
        assert_eq!(row.processing_ms, Some(2.5));
        assert!(d.unreadable.is_empty());
    }

    #[test]
    fn a_missing_v1_field_is_named() {
        let f = fields(&[("key_id", KEY), ("tier", "pro"), ("cost", "1")]);
        assert_eq!(
            decode(1, entry(), &f).unwrap_err(),
            Unreadable::Missing("used_after")
        );
    }

    #[test]
    fn v2_records_become_rows_with_their_positions() {
        let rec1 = format!("{KEY}\x1fpro\x1f/v1/a\x1f2\x1f12\x1fallowed\x1fidem-1\x1f");
        let rec2 = format!(
            "{KEY}\x1fpro\x1f/v1/b\x1f1\x1f13\x1fallowed\x1f\x1f{{\"error\":\"x\\\"y\"}}\x1f7\x1fextra"
        );
        let f = fields(&[
            ("v", "2"),
            ("ts", "2026-11-27T19:41:14.123Z"),
            ("1", &rec1),
            ("2", &rec2),
        ]);
        let d = decode(3, entry(), &f).unwrap();
        assert!(d.unreadable.is_empty());
        let ids: Vec<String> = d.rows.iter().map(|r| r.id.to_string()).collect();
        assert_eq!(ids, ["q003-1764272474123-0.1", "q003-1764272474123-0.2"]);
        assert_eq!(d.rows[0].idempotency_key.as_deref(), Some("idem-1"));
        assert_eq!(d.rows[0].endpoint, "/v1/a");
        assert_eq!(d.rows[1].error.as_deref(), Some("x\"y"));
        assert_eq!(d.rows[1].used_after, 13);
        assert_eq!(d.rows[1].ts_ms, 1_795_808_474_123);
    }

    #[test]
    fn a_bad_v2_record_leaves_its_entry_mates_standing() {
        let good = format!("{KEY}\x1fpro\x1f/a\x1f1\x1f1\x1fallowed\x1f\x1f");
        let f = fields(&[
            ("v", "2"),
            ("ts", "2026-11-27T19:41:14.123Z"),
            ("1", "short\x1frecord"),
            ("2", &good),
            ("3", &good.replace("pro\x1f/a\x1f1", "pro\x1f/a\x1fone")),
        ]);
        let d = decode(3, entry(), &f).unwrap();
        assert_eq!(d.rows.len(), 1);
        assert_eq!(d.rows[0].id.pos, 2);
        let why: Vec<&Unreadable> = d.unreadable.iter().map(|(_, w)| w).collect();
        assert_eq!(
            why,
            [
                &Unreadable::TooFewSubfields(2),
                &Unreadable::NotANumber("cost")
            ]
        );
    }

    #[test]
    fn an_unknown_version_is_refused_whole() {
        let f = fields(&[("v", "3"), ("ts", "2026-11-27T19:41:14.123Z")]);
        assert_eq!(
            decode(1, entry(), &f).unwrap_err(),
            Unreadable::UnknownVersion("3".into())
        );
    }

    #[test]
    fn key_ids_must_be_lowercase_hex() {
        assert!(key_bytes(KEY.as_bytes()).is_ok());
        for bad in [
            &KEY.to_uppercase(),
            &KEY[1..],
            "zz23456789abcdef0123456789abcdef",
        ] {
            assert_eq!(
                key_bytes(bad.as_bytes()),
                Err(Unreadable::BadKeyId),
                "{bad}"
            );
        }
    }

    #[test]
    fn numbers_past_i64_are_refused() {
        assert_eq!(number(b"9223372036854775807", "cost"), Ok(i64::MAX as u64));
        for bad in [&b"9223372036854775808"[..], b"-1", b"", b"1.0", b" 1"] {
            assert!(number(bad, "cost").is_err());
        }
    }
}
