//! The audit pipeline: shard streams in Redis → SQLite, queries, retention.
//!
//! # Layout
//!
//! - [`record`]: [`AuditRecord`], one audit record as SPEC §1 names its fields, and
//!   the compact row SQLite keeps of it.
//! - `id`: a record's identity (shard, entry id, position) and its text form.
//! - `entry` and `decode`: stream replies parsed, and entries (v1: one record, v2: one
//!   entry per shard per batch of decisions, several records) decoded into rows.
//! - `stream`: the Redis side: consumer group, pending re-reads, XAUTOCLAIM, and one
//!   ack + trim call per batch for all shards (`lua/audit_ack.lua`); `new_entries`: one
//!   blocking XREADGROUP naming every shard stream, behind `NewEntries` so a Cluster
//!   variant can read per node. Both on connections of their own.
//! - `sink`: the one thread that owns the SQLite write connection; `table`: how a row
//!   is written.
//! - [`writer`]: the task that moves entries from the streams to the sink:
//!   read → COMMIT → XACK → XTRIM MINID, and recovery on start; its reader queues
//!   batches, the `acker` acknowledges them after COMMIT; `options` and `batch` hold
//!   its settings and the entries in hand.
//! - [`schema`]: the versioned SQLite schema (`PRAGMA user_version`), migrated forward.
//! - [`query`]: [`AuditReader`], newest-first keyset pages of one key's records.
//! - [`retention`]: deletes records older than their tier's retention.
//! - [`cli`]: `quotad audit query`.
//!
//! # Wiring (in `serve`)
//!
//! ```text
//! let writer = audit::spawn_writer(&store, shards, catalogue, &config.audit, token).await?;
//! let reader = audit::AuditReader::open(&config.audit.db_path)?;   // after the writer
//! …
//! writer.join().await;   // after cancelling `token`: the batch in hand is committed
//! ```

mod acker;
mod batch;
pub mod cli;
mod decode;
mod entry;
mod id;
mod new_entries;
mod options;
pub mod query;
pub mod record;
pub mod retention;
pub mod schema;
mod sink;
mod stream;
mod table;
pub mod writer;

pub use options::{Fault, WriterOptions};
pub use query::{AuditPage, AuditQuery, AuditReader, DEFAULT_LIMIT, MAX_LIMIT};
pub use record::AuditRecord;
pub use retention::{purge_expired, spawn_retention, RetentionReport};
pub use writer::{spawn_writer, spawn_writer_with, AuditWriter};

use crate::store::StoreError;

/// The consumer group every audit writer of a deployment reads through.
pub const GROUP: &str = "quotad-audit";

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// SQLite failed (disk, lock, corruption).
    #[error("audit database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit database does not exist or is not initialized (503 `audit_unavailable`).
    #[error("the audit log is unavailable: {0}")]
    Unavailable(String),
    /// The database was written by a newer quotad.
    #[error("audit database schema version {found} is newer than this quotad ({supported})")]
    SchemaTooNew {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The database holds a row this quotad cannot read (a migration stops on it).
    #[error("the audit database is corrupt: {0}")]
    Corrupt(String),
    /// The pagination cursor was not issued by this server (400).
    #[error("the cursor is not valid")]
    BadCursor,
    /// A query parameter is out of range (400).
    #[error("{0}")]
    BadQuery(String),
    /// The SQLite writer thread is gone.
    #[error("the audit writer thread stopped")]
    SinkClosed,
    /// An injected fault stopped the writer (tests only).
    #[error("injected fault: {0:?}")]
    Fault(Fault),
}

impl AuditError {
    /// Whether the caller asked for something wrong (HTTP 400) rather than the server failing.
    pub fn is_client_error(&self) -> bool {
        matches!(self, AuditError::BadCursor | AuditError::BadQuery(_))
    }
}
