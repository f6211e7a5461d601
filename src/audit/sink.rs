//! The one thread that owns the SQLite write connection: one IMMEDIATE transaction
//! of `INSERT OR IGNORE` per batch, so redelivered records never duplicate.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::record::Row;
use super::table::{insert_rows, Labels};
use super::AuditError;

struct Job {
    rows: Vec<Vec<Row>>,
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
        let mut labels = Labels::load(&conn)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("quotad-audit-sqlite".to_owned())
            .spawn(move || {
                let mut conn = conn;
                for job in rx {
                    let started = Instant::now();
                    let result = commit(&mut conn, &mut labels, &job.rows);
                    if result.is_err() {
                        // Labels the rolled-back transaction added are gone again.
                        let _ = labels.reload(&conn);
                    }
                    let result = result.map(|inserted| Committed {
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

    /// Queues `rows` (entry by entry) to be committed in one transaction, after the
    /// batches already queued.
    pub fn submit(&self, rows: Vec<Vec<Row>>) -> Result<Commit, AuditError> {
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

fn commit(
    conn: &mut Connection,
    labels: &mut Labels,
    rows: &[Vec<Row>],
) -> Result<usize, AuditError> {
    // In key order the inserts walk the table's B-tree from left to right, touching
    // each page once per batch instead of jumping between keys. (References are
    // sorted, not rows; the key id as one big-endian integer orders like its bytes.)
    let mut sorted: Vec<&Row> = rows.iter().flatten().collect();
    sorted.sort_unstable_by_key(|r| (u128::from_be_bytes(r.key_id), r.ts_ms, r.id));
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let inserted = insert_rows(&tx, labels, &sorted)?;
    tx.commit()?;
    Ok(inserted)
}
