//! The acker: the half of the writer that waits for each batch's COMMIT and then
//! acknowledges and trims it, while the reader goes on reading.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::options::Fault;
use super::sink::Commit;
use super::stream::Streams;
use super::AuditError;
use crate::metrics as m;

/// Where the reader hands batches to the acker, and the records it may have in flight.
pub(crate) struct Sender {
    /// Batches, in the order they were queued on the sink.
    pub queue: mpsc::UnboundedSender<InFlight>,
    /// Records that may be queued and not yet acknowledged.
    pub in_flight: Arc<Semaphore>,
}

/// A batch queued on the sink, waiting for COMMIT before its XACK.
pub(crate) struct InFlight {
    /// Its COMMIT, if it has rows.
    pub commit: Option<Commit>,
    /// Ids to acknowledge per shard.
    pub acks: Vec<(usize, Vec<String>)>,
    /// Its share of the records in flight, given back once it is acknowledged.
    pub rows: OwnedSemaphorePermit,
}

/// The acker: waits for each batch's COMMIT, in the order queued, then XACKs and trims
/// it (never before), until the reader is done and every queued batch is acknowledged.
/// The batch duration is the transaction plus the ack, not the time spent queued.
pub(crate) async fn acknowledge(
    streams: &Streams,
    fault: Option<Fault>,
    mut queued: mpsc::UnboundedReceiver<InFlight>,
) -> Result<(), AuditError> {
    while let Some(InFlight { commit, acks, rows }) = queued.recv().await {
        let had_rows = commit.is_some();
        let committed = match commit {
            Some(commit) => Some(commit.wait().await?),
            None => None,
        };
        if fault == Some(Fault::AfterCommit) && had_rows {
            return Err(AuditError::Fault(Fault::AfterCommit));
        }
        let acked = Instant::now();
        streams.ack(&acks).await?;
        // Acknowledged: the reader may queue this many records more.
        drop(rows);
        let inserted = committed.map_or(0, |c| c.inserted);
        let took = committed.map_or(Duration::ZERO, |c| c.took) + acked.elapsed();
        metrics::counter!(m::AUDIT_PERSISTED).increment(inserted as u64);
        metrics::histogram!(m::AUDIT_BATCH_DURATION).record(took.as_secs_f64());
    }
    Ok(())
}
