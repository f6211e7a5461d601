//! Key administration: get-or-create, read with usage, change. No HTTP types here.

use serde::Serialize;

use super::{Engine, EngineError};
use crate::quota::{format_instant, ApiKey, InputError, KeyId, KeyRecord, Period, MAX_EXACT_INT};
use crate::store::{from_reply, keys, StoreError};

/// A key to create.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The tier; must be in the catalogue.
    pub tier: String,
    /// A caller-supplied key, or `None` to generate one.
    pub key: Option<ApiKey>,
    /// An optional label.
    pub name: Option<String>,
    /// An optional per-key limit override.
    pub monthly_limit: Option<u64>,
}

/// The result of get-or-create.
#[derive(Debug, Clone)]
pub struct Created {
    /// The stored record.
    pub record: KeyRecord,
    /// The plaintext key, only when this call created it (it is shown once).
    pub key: Option<ApiKey>,
}

/// Changes to a key; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    /// A new tier.
    pub tier: Option<String>,
    /// Activate or deactivate.
    pub active: Option<bool>,
    /// `Some(None)` clears the override, `Some(Some(n))` sets it.
    pub monthly_limit: Option<Option<u64>>,
}

/// A key record with its current-period usage, as admins see it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    /// The stored record.
    #[serde(flatten)]
    pub record: KeyRecord,
    /// The current period, `YYYY-MM`.
    pub period: String,
    /// The effective limit; `None` = unlimited.
    pub limit: Option<u64>,
    /// Units used this period.
    pub used: u64,
    /// Units left; `None` = unlimited.
    pub remaining: Option<u64>,
    /// When the period resets.
    pub reset_at: String,
    /// Whether this node's catalogue has the key's tier; when not, `limit` is the
    /// override or null and consumes fail with `unknown_tier` until the tier is fixed.
    pub tier_known: bool,
}

/// Every integer quotad stores stays exact in a Lua double; a larger limit would be
/// enforced as another number (or look unlimited).
fn exact_limit(limit: Option<u64>) -> Result<(), EngineError> {
    match limit {
        Some(n) if n > MAX_EXACT_INT => Err(InputError(format!(
            "monthly_limit must be at most {MAX_EXACT_INT} (2^53 - 1)"
        ))
        .into()),
        _ => Ok(()),
    }
}

/// Units used in `period` from the key record's counter fields (`period`, `used`), or,
/// for a key no batch has counted yet, its v1 counter (`quotad:{q}:use:<id>:<period>`).
fn period_used(fields: &[(String, String)], period: &str, v1_used: Option<u64>) -> u64 {
    let field = |name: &str| fields.iter().find(|(f, _)| f == name).map(|(_, v)| v);
    match field("period") {
        Some(p) if p == period => field("used").and_then(|u| u.parse().ok()).unwrap_or(0),
        Some(_) => 0,
        None => v1_used.unwrap_or(0),
    }
}

impl Engine {
    /// Get-or-create a key. A supplied key that exists is returned unchanged, without it.
    pub async fn create_key(&self, new: NewKey) -> Result<Created, EngineError> {
        self.tier_limit(&new.tier)?;
        exact_limit(new.monthly_limit)?;
        let key = new.key.unwrap_or_else(ApiKey::generate);
        let id = key.id();
        let shard = id.shard(self.settings.shards);
        let mut inv = self.scripts.create_key.prepare_invoke();
        inv.key(keys::record(shard, &id))
            .arg(&new.tier)
            .arg(format_instant(self.now()))
            .arg(new.name.as_deref().unwrap_or(""))
            .arg(new.monthly_limit.map(|l| l.to_string()).unwrap_or_default());
        let (created, record) = self.record_reply(&id, self.store.invoke(&inv).await?)?;
        let record =
            record.ok_or_else(|| StoreError::Reply("create_key.lua: empty record".into()))?;
        Ok(Created {
            record,
            key: created.then_some(key),
        })
    }

    /// A key's record and current-period usage.
    pub async fn key(&self, id: &KeyId) -> Result<KeyView, EngineError> {
        self.usage_of(id).await
    }

    /// Whether a key record exists (active or not).
    pub async fn key_exists(&self, id: &KeyId) -> Result<bool, EngineError> {
        let shard = id.shard(self.settings.shards);
        let record = keys::record(shard, id);
        Ok(self.store.query(redis::cmd("EXISTS").arg(record)).await?)
    }

    /// Changes an existing key; never creates one.
    pub async fn update_key(
        &self,
        id: &KeyId,
        update: KeyUpdate,
    ) -> Result<KeyRecord, EngineError> {
        if let Some(tier) = &update.tier {
            self.tier_limit(tier)?;
        }
        exact_limit(update.monthly_limit.flatten())?;
        let shard = id.shard(self.settings.shards);
        let (mode, limit) = match update.monthly_limit {
            None => ("keep", String::new()),
            Some(None) => ("clear", String::new()),
            Some(Some(l)) => ("set", l.to_string()),
        };
        let mut inv = self.scripts.update_key.prepare_invoke();
        inv.key(keys::record(shard, id))
            .arg(update.tier.as_deref().unwrap_or(""))
            .arg(match update.active {
                None => "",
                Some(true) => "1",
                Some(false) => "0",
            })
            .arg(mode)
            .arg(limit);
        let (_, record) = self.record_reply(id, self.store.invoke(&inv).await?)?;
        record.ok_or(EngineError::NotFound)
    }

    fn record_reply(
        &self,
        id: &KeyId,
        reply: redis::Value,
    ) -> Result<(bool, Option<KeyRecord>), EngineError> {
        let items: Vec<redis::Value> = from_reply(reply, "key script reply")?;
        let mut items = items.into_iter();
        let flag: i64 = from_reply(items.next().unwrap_or(redis::Value::Nil), "key script flag")?;
        let fields: Vec<String> = from_reply(redis::Value::Array(items.collect()), "key fields")?;
        let pairs: Vec<(String, String)> = fields
            .chunks_exact(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        Ok((flag == 1, KeyRecord::from_fields(id.as_str(), &pairs)))
    }

    /// The key record's fields and the v1 counter of `period` in one round trip.
    pub(super) async fn record_fields(
        &self,
        id: &KeyId,
        period: Period,
    ) -> Result<RecordFields, EngineError> {
        let shard = id.shard(self.settings.shards);
        let mut pipe = redis::pipe();
        pipe.hgetall(keys::record(shard, id))
            .get(keys::usage(shard, id, period));
        let (fields, v1_used) = self.store.query_pipe(&pipe).await?;
        Ok(RecordFields { fields, v1_used })
    }

    pub(super) async fn usage_of(&self, id: &KeyId) -> Result<KeyView, EngineError> {
        let period = Period::containing(self.now());
        let read = self.record_fields(id, period).await?;
        self.view(id, period, &read)
    }

    /// The admin view of a record read for the current `period`.
    pub(super) fn view(
        &self,
        id: &KeyId,
        period: Period,
        read: &RecordFields,
    ) -> Result<KeyView, EngineError> {
        let used = period_used(&read.fields, &period.label(), read.v1_used);
        let record =
            KeyRecord::from_fields(id.as_str(), &read.fields).ok_or(EngineError::NotFound)?;
        let tier = self.catalogue.get(&record.tier);
        let limit = record
            .monthly_limit
            .or_else(|| tier.and_then(|t| t.monthly_limit));
        Ok(KeyView {
            period: period.label(),
            limit,
            used,
            remaining: limit.map(|l| l.saturating_sub(used)),
            reset_at: period.reset_at_string(),
            tier_known: tier.is_some(),
            record,
        })
    }
}

/// A key record as HGETALL answers it, and the v1 counter of one period.
pub(super) struct RecordFields {
    /// Field/value pairs; empty when there is no such key.
    pub fields: Vec<(String, String)>,
    /// `quotad:{q}:use:<id>:<period>`, for keys no batch has counted yet.
    pub v1_used: Option<u64>,
}

impl RecordFields {
    /// The value of `name`, if the record has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.as_str())
    }
}
