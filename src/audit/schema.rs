//! The SQLite schema, versioned with `PRAGMA user_version` and migrated forward only.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::AuditError;
use crate::config::Synchronous;

/// Forward migrations; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the records, one index per access path.
    "CREATE TABLE audit_records (
        -- insertion order (a rowid alias, stable across VACUUM): within one key it is
        -- stream order, so it orders records of the same millisecond
        seq             INTEGER PRIMARY KEY,
        audit_id        TEXT NOT NULL UNIQUE,
        key_id          TEXT NOT NULL,
        tier            TEXT NOT NULL,
        ts_ms           INTEGER NOT NULL,
        endpoint        TEXT NOT NULL,
        cost            INTEGER NOT NULL,
        used_after      INTEGER NOT NULL,
        outcome         TEXT NOT NULL,
        idempotency_key TEXT,
        request         TEXT,
        response        TEXT,
        error           TEXT,
        processing_ms   REAL
    );
    -- queries: this key, newest first, within a time range (keyset pagination)
    CREATE INDEX audit_by_key_time ON audit_records (key_id, ts_ms DESC, seq DESC);
    -- retention: this tier, older than its cut-off, in small batches
    CREATE INDEX audit_by_tier_time ON audit_records (tier, ts_ms);",
];

/// The schema version this build writes and reads.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a connection waits for another's write lock (retention vs writer).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache of the writer connection, in KiB (negative = KiB for `cache_size`).
const WRITER_CACHE_KIB: i64 = -65_536;
/// WAL pages written before an automatic checkpoint (SQLite's default is 1,000).
const WAL_CHECKPOINT_PAGES: i64 = 10_000;

/// Opens (creating if needed) the database for writing: WAL, the chosen durability,
/// and the schema migrated to [`VERSION`].
pub fn open_writer(path: &Path, synchronous: Synchronous) -> Result<Connection, AuditError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(AuditError::Unavailable(format!(
            "{} cannot use WAL (journal_mode is {mode})",
            path.display()
        )));
    }
    let sync = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    // A batch touches index pages all over the key index: keep them in memory, and
    // let the WAL grow a little before checkpointing so a page is copied back once
    // per many batches rather than once per batch.
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Opens an existing, initialized database for reading; a missing file is
/// `Unavailable` (a node without a writer must not answer from an empty file).
pub fn open_reader(path: &Path) -> Result<Connection, AuditError> {
    if !path.exists() {
        return Err(AuditError::Unavailable(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", true)?;
    match version(&conn)? {
        VERSION => Ok(conn),
        0 => Err(AuditError::Unavailable(format!(
            "{} holds no audit schema",
            path.display()
        ))),
        found if found > VERSION => Err(AuditError::SchemaTooNew {
            found,
            supported: VERSION,
        }),
        found => Err(AuditError::Unavailable(format!(
            "{} has schema version {found}; start the writer to migrate it",
            path.display()
        ))),
    }
}

/// Opens an existing database for maintenance writes (retention), without migrating.
pub fn open_maintenance(path: &Path) -> Result<Connection, AuditError> {
    let conn = open_reader(path)?;
    conn.pragma_update(None, "query_only", false)?;
    Ok(conn)
}

fn version(conn: &Connection) -> Result<i64, AuditError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Applies every migration the file lacks, each in its own transaction.
pub fn migrate(conn: &Connection) -> Result<(), AuditError> {
    let found = version(conn)?;
    if found > VERSION {
        return Err(AuditError::SchemaTooNew {
            found,
            supported: VERSION,
        });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let to = from as i64 + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {to}; COMMIT;"
        ))?;
        tracing::info!(version = to, "audit database migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        assert!(matches!(
            open_reader(&path),
            Err(AuditError::Unavailable(_))
        ));
        drop(open_writer(&path, Synchronous::Normal).unwrap());
        let conn = open_writer(&path, Synchronous::Full).unwrap();
        assert_eq!(version(&conn).unwrap(), VERSION);
        open_reader(&path).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let conn = open_writer(&path, Synchronous::Normal).unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        assert!(matches!(
            open_reader(&path),
            Err(AuditError::SchemaTooNew { .. })
        ));
        assert!(matches!(
            migrate(&conn),
            Err(AuditError::SchemaTooNew { .. })
        ));
    }
}
