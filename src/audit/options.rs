//! How the audit writer runs, and the fault points crash tests stop it at.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{AuditConfig, Synchronous};

/// A point where a test makes the writer stop as if the process died there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// With the first batch read but not committed.
    BeforeCommit,
    /// With the first batch committed but not acknowledged.
    AfterCommit,
}

/// How the writer runs; [`WriterOptions::new`] takes it from `[audit]`.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// The SQLite file.
    pub db_path: PathBuf,
    /// SQLite durability.
    pub synchronous: Synchronous,
    /// S, the number of shard streams.
    pub shards: u32,
    /// Stable consumer name in the group.
    pub consumer: String,
    /// Stream entries per transaction (a v1 entry is one record, a v2 entry several,
    /// never split; a transaction also stops at half the records allowed in flight,
    /// max(S, 4) × `batch_size`), and about `batch_size` records per shard per read.
    pub batch_size: usize,
    /// Pending entries of other consumers idle this long are claimed.
    pub claim_idle: Duration,
    /// How long one read waits for new entries while the streams are empty
    /// (XREADGROUP BLOCK); short, so the claim and backlog timers stay on time.
    pub block: Duration,
    /// How often `quotad_audit_backlog` is refreshed.
    pub backlog_refresh: Duration,
    /// Response timeout of the writer's own Redis connections (the blocking one waits
    /// this plus `block`).
    pub redis_timeout: Duration,
    /// Stop at this point of the first batch (crash tests).
    pub fault: Option<Fault>,
}

impl WriterOptions {
    /// Options from the `[audit]` settings for a deployment of `shards` shards.
    pub fn new(shards: u32, config: &AuditConfig) -> Self {
        WriterOptions {
            db_path: config.db_path.clone(),
            synchronous: config.synchronous,
            shards,
            consumer: config.consumer.clone(),
            batch_size: config.batch_size.max(1),
            claim_idle: Duration::from_secs(config.claim_idle_secs),
            block: Duration::from_secs(1),
            backlog_refresh: Duration::from_secs(5),
            redis_timeout: Duration::from_secs(10),
            fault: None,
        }
    }
}
