//! Every Redis key name quotad uses, in one place.
//!
//! All keys of one API key carry the hash tag of its *shard* (`{q007}`), not of the key
//! itself: one script then touches one slot (Redis Cluster routes by the tag), and the
//! shard's audit stream sits in the same slot as the counters it records.

use sha2::{Digest, Sha256};

use crate::quota::{KeyId, Period, Shard};

/// Deployment settings shared by every node: shard count and catalogue fingerprint.
pub const META: &str = "quotad:meta";

/// The key record of `id`: tier, active, created_at, name, monthly_limit.
pub fn record(shard: Shard, id: &KeyId) -> String {
    format!("quotad:{}:key:{id}", shard.tag())
}

/// The usage counter of `id` in `period`.
pub fn usage(shard: Shard, id: &KeyId, period: Period) -> String {
    format!("quotad:{}:use:{id}:{}", shard.tag(), period.label())
}

/// The stored decision of `id` under a client idempotency key (hashed: the client's
/// string may be long, and is kept in the audit record instead).
pub fn idempotency(shard: Shard, id: &KeyId, idempotency_key: &str) -> String {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    format!(
        "quotad:{}:idem:{id}:{}",
        shard.tag(),
        hex::encode(&digest[..16])
    )
}

/// The audit stream of one shard.
pub fn audit_stream(shard: Shard) -> String {
    format!("quotad:{}:audit", shard.tag())
}
