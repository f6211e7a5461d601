//! The stored record of one API key.

use serde::Serialize;

/// What Redis holds about a key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    /// The key's id.
    pub key_id: String,
    /// The tier the key is on.
    pub tier: String,
    /// Whether the key may consume.
    pub active: bool,
    /// An optional label given at creation.
    pub name: Option<String>,
    /// The per-key limit override; `None` = the tier's limit.
    pub monthly_limit: Option<u64>,
    /// When the key was created, RFC 3339 UTC with milliseconds.
    pub created_at: String,
}

impl KeyRecord {
    /// Builds a record from the HGETALL field/value pairs; `None` when empty or malformed.
    pub fn from_fields(key_id: &str, fields: &[(String, String)]) -> Option<Self> {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(f, _)| f == name)
                .map(|(_, v)| v.clone())
        };
        Some(KeyRecord {
            key_id: key_id.to_owned(),
            tier: get("tier")?,
            active: get("active")? == "1",
            name: get("name"),
            monthly_limit: match get("monthly_limit") {
                Some(v) => Some(v.parse().ok()?),
                None => None,
            },
            created_at: get("created_at").unwrap_or_default(),
        })
    }
}
