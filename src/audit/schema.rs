//! The SQLite schema, versioned with `PRAGMA user_version` and migrated forward only.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use super::decode::key_bytes;
use super::id::AuditId;
use super::record::Row;
use super::table::{insert_rows, Labels};
use super::AuditError;
use crate::config::Synchronous;

/// Schema 1: text records, one index per access path (kept to migrate old files).
const V1: &str = "CREATE TABLE audit_records (
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
    CREATE INDEX audit_by_key_time ON audit_records (key_id, ts_ms DESC, seq DESC);
    CREATE INDEX audit_by_tier_time ON audit_records (tier, ts_ms);";

/// Schema 2: compact rows in one B-tree, clustered on the query's access path (one key's
/// records in time order, then stream order), so a page of a key's records is one range
/// of it. Retention finds what a tier has per day and key in `audit_days`, one small row
/// per (tier, UTC day, key) rather than an index entry per record: measured, such an
/// index cost a quarter of the writer's SQLite time and 47 bytes per record.
const V2: &str = "CREATE TABLE audit_labels (
        id    INTEGER PRIMARY KEY,
        label TEXT NOT NULL UNIQUE
    );
    CREATE TABLE audit_rows (
        key_id          BLOB NOT NULL,     -- the key id's 16 bytes
        ts_ms           INTEGER NOT NULL,  -- decided at, unix ms
        shard           INTEGER NOT NULL,  -- the audit identity: shard,
        entry_ms        INTEGER NOT NULL,  --   stream entry id,
        entry_seq       INTEGER NOT NULL,
        pos             INTEGER NOT NULL,  --   position in a v2 entry (1..n); 0 in v1
        tier            INTEGER NOT NULL,  -- audit_labels.id
        outcome         INTEGER NOT NULL,  -- audit_labels.id
        endpoint        TEXT NOT NULL,
        cost            INTEGER NOT NULL,
        used_after      INTEGER NOT NULL,
        idempotency_key TEXT,
        request         TEXT,              -- JSON
        response        TEXT,              -- JSON
        error           TEXT,
        processing_ms   REAL,
        PRIMARY KEY (key_id, ts_ms, shard, entry_ms, entry_seq, pos)
    ) WITHOUT ROWID;
    CREATE TABLE audit_days (
        tier   INTEGER NOT NULL,  -- audit_labels.id
        day    INTEGER NOT NULL,  -- ts_ms / 86,400,000: the UTC day
        key_id BLOB NOT NULL,
        PRIMARY KEY (tier, day, key_id)
    ) WITHOUT ROWID;";

/// Schema 2 keeps schema 1's table name as a view in the old shape (text ids, labels),
/// for operators with the sqlite3 shell and for scripts written against version 1.
const V2_VIEW: &str = "CREATE VIEW audit_records AS SELECT
        printf('q%03d-%d-%d', r.shard, r.entry_ms, r.entry_seq)
            || CASE r.pos WHEN 0 THEN '' ELSE '.' || r.pos END AS audit_id,
        lower(hex(r.key_id)) AS key_id,
        (SELECT label FROM audit_labels WHERE id = r.tier) AS tier,
        r.ts_ms, r.endpoint, r.cost, r.used_after,
        (SELECT label FROM audit_labels WHERE id = r.outcome) AS outcome,
        r.idempotency_key, r.request, r.response, r.error, r.processing_ms
    FROM audit_rows r";

/// Rows copied per call while migrating (bounded memory, sorted day summaries).
const COPY_CHUNK: usize = 10_000;

/// One forward step of the schema.
enum Migration {
    /// Statements only.
    Sql(&'static str),
    /// Statements and a copy of the rows, in Rust (the ids need parsing).
    Code(fn(&Connection) -> Result<(), AuditError>),
}

/// Forward migrations; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[Migration] = &[Migration::Sql(V1), Migration::Code(compact_rows)];

/// 1 → 2: every v1 row copied into the compact table, then the v1 table replaced by
/// its view. Runs inside the migration's transaction: it happens whole or not at all.
fn compact_rows(conn: &Connection) -> Result<(), AuditError> {
    conn.execute_batch(V2)?;
    let mut labels = Labels::load(conn)?;
    let mut old = conn.prepare(
        "SELECT audit_id, key_id, tier, ts_ms, endpoint, cost, used_after, outcome,
            idempotency_key, request, response, error, processing_ms
        FROM audit_records ORDER BY seq",
    )?;
    let mut rows = old.query([])?;
    let (mut copied, mut chunk) = (0, Vec::with_capacity(COPY_CHUNK));
    loop {
        let next = rows.next()?;
        let done = next.is_none();
        if let Some(r) = next {
            chunk.push(v1_row(r)?);
        }
        if chunk.len() == COPY_CHUNK || (done && !chunk.is_empty()) {
            let refs: Vec<&Row> = chunk.iter().collect();
            copied += insert_rows(conn, &mut labels, &refs)?;
            chunk.clear();
        }
        if done {
            break;
        }
    }
    drop(rows);
    drop(old);
    conn.execute_batch(&format!("DROP TABLE audit_records; {V2_VIEW};"))?;
    tracing::info!(
        rows = copied,
        "audit records copied into the compact schema"
    );
    Ok(())
}

/// A row of schema 1 in the compact shape; an id that does not parse stops the migration.
fn v1_row(r: &rusqlite::Row<'_>) -> Result<Row, AuditError> {
    let audit_id: String = r.get(0)?;
    let key_id: String = r.get(1)?;
    let corrupt = |what: &str| AuditError::Corrupt(format!("{what} of v1 row {audit_id:?}"));
    Ok(Row {
        id: AuditId::parse(&audit_id).ok_or_else(|| corrupt("the audit_id"))?,
        key_id: key_bytes(key_id.as_bytes()).map_err(|_| corrupt("the key_id"))?,
        tier: r.get(2)?,
        ts_ms: r.get(3)?,
        endpoint: r.get(4)?,
        cost: r.get::<_, i64>(5)? as u64,
        used_after: r.get::<_, i64>(6)? as u64,
        outcome: r.get(7)?,
        idempotency_key: r.get(8)?,
        request: r.get(9)?,
        response: r.get(10)?,
        error: r.get(11)?,
        processing_ms: r.get(12)?,
    })
}

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
    for (from, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let to = from as i64 + 1;
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        match step {
            Migration::Sql(sql) => tx.execute_batch(sql)?,
            Migration::Code(step) => step(&tx)?,
        }
        tx.pragma_update(None, "user_version", to)?;
        tx.commit()?;
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
