//! The quota domain: tiers, periods, keys and decisions. Pure values, no I/O.

mod decision;
mod key;
mod period;
mod record;
mod tier;

pub use decision::{
    validate_idempotency_key, AuditExtras, ConsumeRequest, Decision, InputError,
    MAX_AUDIT_EXTRAS_BYTES, MAX_COST, MAX_EXACT_INT,
};
pub use key::{ApiKey, KeyId, Shard};
pub use period::{format_instant, Period};
pub use record::KeyRecord;
pub use tier::{Catalogue, Tier};
