//! The quota domain: tiers, rate windows, periods, keys, decisions and usage history.
//! Pure values, no I/O.

mod decision;
mod key;
mod period;
mod rate;
mod record;
mod tier;
mod usage;

pub use decision::{
    validate_endpoint, validate_idempotency_key, AuditExtras, ConsumeRequest, Decision, InputError,
    RateItem, MAX_AUDIT_EXTRAS_BYTES, MAX_COST, MAX_EXACT_INT,
};
pub use key::{ApiKey, KeyId, Shard};
pub use period::{format_instant, Period};
pub use rate::{RateLimit, WindowState, MAX_WINDOW_SECS};
pub use record::KeyRecord;
pub use tier::{Catalogue, Tier};
pub use usage::{day_field, DayUsage, Forecast, Usage};
