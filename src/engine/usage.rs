//! Usage history (SPEC §9): a key's days of one period and the forecast, read from the
//! `d:<YYYY-MM-DD>` fields the consume script keeps in the key record.

use super::admin::RecordFields;
use super::{Engine, EngineError};
use crate::quota::{day_field, ApiKey, KeyId, KeyRecord, Period, Usage};

impl Engine {
    /// A key's usage in `period` (default: the current one), as admins see it; an id no
    /// key has is `NotFound`.
    pub async fn usage(&self, id: &KeyId, period: Option<Period>) -> Result<Usage, EngineError> {
        let (record, usage) = self.read_usage(id, period).await?;
        usage.ok_or_else(|| self.unknown_tier(id, record.tier))
    }

    /// The presented key's own usage in `period`, for its holder: unknown or inactive
    /// keys are `InvalidKey`, as on consume.
    pub async fn key_usage(
        &self,
        key: &ApiKey,
        period: Option<Period>,
    ) -> Result<Usage, EngineError> {
        let id = key.id();
        let (record, usage) = match self.read_usage(&id, period).await {
            Err(EngineError::NotFound) => return Err(EngineError::InvalidKey),
            other => other?,
        };
        if !record.active {
            return Err(EngineError::InvalidKey);
        }
        usage.ok_or_else(|| self.unknown_tier(&id, record.tier))
    }

    /// The record and its usage report; `None` when the tier is not in the catalogue
    /// (never shown as unlimited, SPEC §1).
    async fn read_usage(
        &self,
        id: &KeyId,
        period: Option<Period>,
    ) -> Result<(KeyRecord, Option<Usage>), EngineError> {
        let now = self.now();
        let period = period.unwrap_or_else(|| Period::containing(now));
        let read = self.record_fields(id, period).await?;
        let record =
            KeyRecord::from_fields(id.as_str(), &read.fields).ok_or(EngineError::NotFound)?;
        let Some(tier) = self.catalogue.get(&record.tier) else {
            return Ok((record, None));
        };
        let limit = record.monthly_limit.or(tier.monthly_limit);
        let day_used = |date| {
            read.get(&day_field(date))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let usage = Usage::new(
            id,
            record.tier.clone(),
            limit,
            period,
            now.date_naive(),
            counter(&read, &period.label()),
            day_used,
        );
        Ok((record, Some(usage)))
    }
}

/// The counter of `period` while the record keeps one: this period's, the previous
/// one's, or (for a key no batch has counted yet) the v1 counter.
fn counter(read: &RecordFields, period: &str) -> Option<u64> {
    let number = |field: &str| read.get(field).and_then(|v| v.parse().ok());
    match read.get("period") {
        Some(p) if p == period => number("used").or(Some(0)),
        Some(_) if read.get("prev_period") == Some(period) => number("prev_used"),
        Some(_) => None,
        None => read.v1_used,
    }
}
