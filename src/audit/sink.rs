//! The one thread that owns the SQLite write connection: one IMMEDIATE transaction
//! of `INSERT OR IGNORE` per batch, so redelivered entries never duplicate.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::record::Row;
use super::AuditError;

const INSERT: &str = "INSERT OR IGNORE INTO audit_records
    (audit_id, key_id, tier, ts_ms, endpoint, cost, used_after, outcome,
     idempotency_key, request, response, error, processing_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

struct Job {
    rows: Vec<Row>,
    reply: oneshot::Sender<Result<Committed, AuditError>>,
}

/// What one COMMIT did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Committed {
    /// Rows that were new (the rest were already there: redelivery).
    pub inserted: usize,
    /// Time spent in the transaction, without waiting in the queue.
    pub took: Duration,
}

/// Handle to the SQLite writer thread; commits run there, never on the runtime.
#[derive(Debug)]
pub(crate) struct Sink {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// Starts the thread that owns `conn`.
    pub fn start(conn: Connection) -> Result<Sink, AuditError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("quotad-audit-sqlite".to_owned())
            .spawn(move || {
                let mut conn = conn;
                for job in rx {
                    let started = Instant::now();
                    let result = commit(&mut conn, &job.rows).map(|inserted| Committed {
                        inserted,
                        took: started.elapsed(),
                    });
                    // The receiver may be gone (writer task dropped): the commit stands.
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| AuditError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Sink {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queues `rows` to be committed in one transaction, after the batches already queued.
    pub fn submit(&self, rows: Vec<Row>) -> Result<Commit, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or(AuditError::SinkClosed)?
            .send(Job { rows, reply })
            .map_err(|_| AuditError::SinkClosed)?;
        Ok(Commit(answer))
    }

    /// Stops the thread after the jobs already sent and waits for it.
    pub async fn close(mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// A queued commit; await it with [`Commit::wait`].
#[derive(Debug)]
pub(crate) struct Commit(oneshot::Receiver<Result<Committed, AuditError>>);

impl Commit {
    /// Waits for COMMIT.
    pub async fn wait(self) -> Result<Committed, AuditError> {
        self.0.await.map_err(|_| AuditError::SinkClosed)?
    }
}

fn commit(conn: &mut Connection, rows: &[Row]) -> Result<usize, AuditError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut inserted = 0;
    {
        let mut stmt = tx.prepare_cached(INSERT)?;
        for row in rows {
            let r = &row.record;
            let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
            inserted += stmt.execute(params![
                r.audit_id,
                r.key_id,
                r.tier,
                row.ts_ms,
                r.endpoint,
                r.cost as i64,
                r.used_after as i64,
                r.outcome,
                r.idempotency_key,
                json(&r.request),
                json(&r.response),
                r.error,
                r.processing_ms,
            ])?;
        }
    }
    tx.commit()?;
    Ok(inserted)
}
