//! Stream replies (XREADGROUP, XAUTOCLAIM) parsed by hand: an entry whose content was
//! trimmed comes back as `[id, nil]`, which the typed helpers do not accept.

use redis::Value;

use crate::store::{from_reply, StoreError};

/// One stream entry as delivered to the group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The stream entry id, `ms-seq`.
    pub id: String,
    /// The field/value pairs, as bytes; `None` when the entry was trimmed while pending.
    pub fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

fn items(value: Value, what: &str) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(StoreError::Reply(format!("{what}: {other:?}"))),
    }
}

/// A bulk string's bytes, moved out of the reply rather than copied.
fn bytes(value: Value, what: &str) -> Result<Vec<u8>, StoreError> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        other => Err(StoreError::Reply(format!("{what}: {other:?}"))),
    }
}

fn entry(value: Value) -> Result<Entry, StoreError> {
    let mut parts = items(value, "stream entry")?.into_iter();
    let id: String = from_reply(parts.next().unwrap_or(Value::Nil), "stream entry id")?;
    let fields = match parts.next().unwrap_or(Value::Nil) {
        Value::Nil => None,
        body => {
            let flat = items(body, "stream entry fields")?;
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                pairs.push((bytes(k, "field name")?, bytes(v, "field value")?));
            }
            Some(pairs)
        }
    };
    Ok(Entry { id, fields })
}

fn entries(value: Value) -> Result<Vec<Entry>, StoreError> {
    items(value, "stream entries")?
        .into_iter()
        .map(entry)
        .collect()
}

/// Entries by stream name.
pub(crate) type ByStream = Vec<(Vec<u8>, Vec<Entry>)>;

/// The entries of an XREADGROUP over any number of streams, by stream name; a stream
/// with nothing to deliver may be absent (nil = nothing new anywhere).
pub(crate) fn read_reply(value: Value) -> Result<ByStream, StoreError> {
    // RESP3 answers a map of stream name to entries, RESP2 an array of pairs.
    let pairs: Vec<(Value, Value)> = match value {
        Value::Map(pairs) => pairs,
        other => items(other, "XREADGROUP reply")?
            .into_iter()
            .map(|stream| {
                let mut parts = items(stream, "XREADGROUP stream")?.into_iter();
                Ok((
                    parts.next().unwrap_or(Value::Nil),
                    parts.next().unwrap_or(Value::Nil),
                ))
            })
            .collect::<Result<_, StoreError>>()?,
    };
    pairs
        .into_iter()
        .map(|(name, body)| Ok((bytes(name, "stream name")?, entries(body)?)))
        .collect()
}

/// What one XAUTOCLAIM call returns.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    /// Where the next call starts; `0-0` when the whole PEL was scanned.
    pub next: String,
    /// Entries now owned by this consumer (content `None` if trimmed, Redis < 7).
    pub entries: Vec<Entry>,
    /// Pending ids whose entries were trimmed (Redis ≥ 7 drops them from the PEL).
    pub deleted: Vec<String>,
}

/// Parses `[next, entries, deleted?]`.
pub(crate) fn claim_reply(value: Value) -> Result<Claimed, StoreError> {
    let mut parts = items(value, "XAUTOCLAIM reply")?.into_iter();
    let next: String = from_reply(parts.next().unwrap_or(Value::Nil), "XAUTOCLAIM cursor")?;
    let entries = entries(parts.next().unwrap_or(Value::Nil))?;
    let deleted: Vec<String> = match parts.next() {
        None | Some(Value::Nil) => Vec::new(),
        Some(v) => from_reply(v, "XAUTOCLAIM deleted ids")?,
    };
    Ok(Claimed {
        next,
        entries,
        deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Value {
        Value::BulkString(t.as_bytes().to_vec())
    }

    #[test]
    fn trimmed_entries_have_no_fields() {
        let reply = Value::Array(vec![Value::Array(vec![
            s("quotad:{q001}:audit"),
            Value::Array(vec![
                Value::Array(vec![s("1-0"), Value::Array(vec![s("a"), s("b")])]),
                Value::Array(vec![s("2-0"), Value::Nil]),
            ]),
        ])]);
        let got = read_reply(reply).unwrap();
        assert_eq!(got[0].0, b"quotad:{q001}:audit");
        let got = &got[0].1;
        assert_eq!(got[0].fields, Some(vec![(b"a".to_vec(), b"b".to_vec())]));
        assert_eq!(got[1].id, "2-0");
        assert_eq!(got[1].fields, None);
        assert!(read_reply(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn a_resp3_map_names_each_stream() {
        let reply = Value::Map(vec![
            (
                s("x"),
                Value::Array(vec![Value::Array(vec![s("1-0"), Value::Nil])]),
            ),
            (s("y"), Value::Array(vec![])),
        ]);
        let got = read_reply(reply).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0.as_slice(), got[0].1.len()), (&b"x"[..], 1));
        assert!(got[1].1.is_empty());
    }

    #[test]
    fn autoclaim_reports_deleted_ids() {
        let reply = Value::Array(vec![
            s("0-0"),
            Value::Array(vec![]),
            Value::Array(vec![s("3-0")]),
        ]);
        let c = claim_reply(reply).unwrap();
        assert_eq!(c.next, "0-0");
        assert_eq!(c.deleted, vec!["3-0".to_owned()]);
    }
}
