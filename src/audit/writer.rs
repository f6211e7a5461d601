//! The audit writer: moves entries from the shard streams into SQLite.
//!
//! Per batch: COMMIT (one IMMEDIATE transaction of `INSERT OR IGNORE`) → XACK → XTRIM
//! MINID. A crash anywhere leaves the entries pending (before XACK) and their rows,
//! if any, keyed by `audit_id`; the next start re-reads its own pending entries first,
//! then claims other consumers' idle ones, so nothing is lost or duplicated.
//!
//! Two loops run side by side, so that reading, decoding, committing and acknowledging
//! overlap: the *reader* takes one XREADGROUP over every shard stream per round
//! (blocking while they are empty), decodes it and queues its batches on the SQLite
//! thread; the *acker* waits for each batch's COMMIT, in order, and acknowledges it with
//! one call for all its shards. The records queued and not yet acknowledged are bounded
//! (about one read's worth), so the next read is decoded while the SQLite thread works
//! through the last one. On cancel every batch queued is committed and acknowledged;
//! a read cut short leaves its entries pending for the next start.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::acker::{acknowledge, InFlight, Sender};
use super::batch::{items, Batch, Item};
use super::new_entries::{NewEntries, OneRedis};
use super::options::{Fault, WriterOptions};
use super::retention::spawn_retention;
use super::sink::Sink;
use super::stream::{Read, StreamNames, Streams};
use super::{schema, AuditError};
use crate::config::AuditConfig;
use crate::metrics as m;
use crate::quota::Catalogue;
use crate::store::Store;

/// The running writer (and retention job); stop them with the token, then `join`.
#[derive(Debug)]
pub struct AuditWriter {
    task: JoinHandle<Result<(), AuditError>>,
    retention: Option<JoinHandle<()>>,
}

impl AuditWriter {
    /// Waits until the writer has committed and acknowledged the round in hand and stopped.
    pub async fn join(self) -> Result<(), AuditError> {
        let result = match self.task.await {
            Ok(result) => result,
            Err(e) => Err(AuditError::Unavailable(format!(
                "audit writer task failed: {e}"
            ))),
        };
        if let Some(retention) = self.retention {
            let _ = retention.await;
        }
        result
    }

    /// Whether the writer task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts the writer and the retention job from `[audit]`. The database is opened and
/// migrated before this returns, so an [`super::AuditReader`] can open it next.
pub async fn spawn_writer(
    store: &Store,
    shards: u32,
    catalogue: Catalogue,
    config: &AuditConfig,
    token: CancellationToken,
) -> Result<AuditWriter, AuditError> {
    let mut writer =
        spawn_writer_with(store, WriterOptions::new(shards, config), token.clone()).await?;
    let interval = Duration::from_secs(config.retention_interval_secs.max(1));
    writer.retention = Some(spawn_retention(
        config.db_path.clone(),
        catalogue,
        interval,
        token,
    ));
    Ok(writer)
}

/// Starts the writer alone, with explicit options.
pub async fn spawn_writer_with(
    store: &Store,
    options: WriterOptions,
    token: CancellationToken,
) -> Result<AuditWriter, AuditError> {
    let (path, sync) = (options.db_path.clone(), options.synchronous);
    let conn = tokio::task::spawn_blocking(move || schema::open_writer(&path, sync))
        .await
        .map_err(|e| AuditError::Unavailable(e.to_string()))??;
    let sink = Sink::start(conn)?;
    let names = StreamNames::new(options.shards);
    let streams = Streams::new(
        store.clone(),
        names.clone(),
        options.consumer.clone(),
        options.redis_timeout,
    );
    // The blocking read's replies may take the whole BLOCK time on top of the usual.
    let new = OneRedis::new(
        store.clone(),
        names,
        options.consumer.clone(),
        options.redis_timeout + options.block,
    );
    let writer = Writer {
        streams,
        new: Box::new(new),
        sink,
        options,
        token,
        per_entry: AtomicUsize::new(0),
    };
    Ok(AuditWriter {
        task: tokio::spawn(writer.run()),
        retention: None,
    })
}

struct Writer {
    streams: Streams,
    new: Box<dyn NewEntries>,
    sink: Sink,
    options: WriterOptions,
    token: CancellationToken,
    /// Records per entry in the last batch (0 before the first), so that a read holds
    /// about `batch_size` records per shard however many records entries carry.
    per_entry: AtomicUsize,
}

/// Entries per shard of the first read at least (when `batch_size` allows).
const FIRST_COUNT: usize = 16;

impl Writer {
    async fn run(mut self) -> Result<(), AuditError> {
        let mut backoff = Duration::from_millis(100);
        while !self.token.is_cancelled() {
            let started = Instant::now();
            let result = self.session().await;
            if started.elapsed() > Duration::from_secs(30) {
                // A long healthy run: the next failure is a new one.
                backoff = Duration::from_millis(100);
            }
            match result {
                Ok(()) => break,
                Err(AuditError::Fault(fault)) => return Err(AuditError::Fault(fault)),
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?backoff, "audit writer failed; retrying");
                    if let AuditError::Store(store) = &e {
                        metrics::counter!(m::REDIS_ERRORS, "kind" => store.kind()).increment(1);
                    }
                    self.streams.reset();
                    self.new.reset();
                    if self.pause(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.sink.close().await;
        Ok(())
    }

    /// Sleeps unless cancelled first; true when cancelled.
    async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = self.token.cancelled() => true,
            _ = tokio::time::sleep(duration) => false,
        }
    }

    /// Entries per shard to ask for in one read: `batch_size` records' worth once the
    /// records per entry are known; before that, `batch_size` entries over all shards
    /// (and at least [`FIRST_COUNT`] per shard), whatever the entries carry.
    fn count(&self) -> usize {
        let size = self.options.batch_size;
        match self.per_entry.load(Ordering::Relaxed) {
            0 => size
                .div_ceil(self.streams.shards().max(1))
                .max(size.min(FIRST_COUNT)),
            per_entry => (size / per_entry).clamp(1, size),
        }
    }

    /// Learns how many records entries carry, from a batch.
    fn learn(&self, batch: &Batch) {
        if batch.entries > 0 {
            let per_entry = batch.row_count.div_ceil(batch.entries).max(1);
            self.per_entry.store(per_entry, Ordering::Relaxed);
        }
    }

    /// New entries of every shard, waiting up to `block` while there are none; `None`
    /// once cancelled (a read cut short leaves its entries pending for the next start).
    async fn read_new(&self) -> Result<Option<Read>, AuditError> {
        tokio::select! {
            biased;
            _ = self.token.cancelled() => Ok(None),
            read = self.new.read(self.count(), self.options.block) => Ok(Some(read?)),
        }
    }

    /// One connected run: the reader and the acker side by side until cancelled or
    /// one of them fails (batches queued then stay pending for the next run).
    async fn session(&mut self) -> Result<(), AuditError> {
        self.streams.connect().await?;
        self.new.connect().await?;
        let (queue, queued) = mpsc::unbounded_channel();
        let acker = acknowledge(&self.streams, self.options.fault, queued);
        let in_flight = Arc::new(Semaphore::new(self.max_in_flight()));
        tokio::try_join!(self.read_all(Sender { queue, in_flight }), acker)?;
        Ok(())
    }

    /// Records queued and not yet acknowledged: about one read (`batch_size` per shard,
    /// at least four shards' worth so that one shard still overlaps its batches;
    /// permits are counted in `u32`).
    fn max_in_flight(&self) -> usize {
        let shards = self.streams.shards().max(4);
        shards
            .saturating_mul(self.options.batch_size)
            .min(u32::MAX as usize)
    }

    /// Records per transaction: `batch_size` entries, and at most half of what may be in
    /// flight, so that one batch commits while the next is queued.
    fn max_rows(&self) -> usize {
        (self.max_in_flight() / 2).max(self.options.batch_size)
    }

    /// The reader: own pending entries, then idle ones of others, then new ones, each
    /// read decoded and queued for COMMIT; the claim and backlog timers between reads.
    async fn read_all(&self, queue: Sender) -> Result<(), AuditError> {
        self.drain_pending(&queue).await?;
        self.claim_idle(&queue).await?;
        let mut next_claim = Instant::now() + self.options.claim_idle;
        let mut next_gauge = Instant::now();
        while !self.token.is_cancelled() {
            let now = Instant::now();
            if now >= next_gauge {
                self.refresh_backlog().await?;
                next_gauge = now + self.options.backlog_refresh;
            }
            if now >= next_claim {
                self.claim_idle(&queue).await?;
                next_claim = now + self.options.claim_idle;
            }
            let Some(read) = self.read_new().await? else {
                break;
            };
            // Empty: the read waited `block` already; check the timers and read again.
            let items = items(read.into_iter().map(|(s, e)| (s, e, Vec::new())));
            self.queue_all(items, &queue).await?;
        }
        Ok(())
    }

    /// Re-reads this consumer's pending entries (from id 0) until none are left, with
    /// one XREADGROUP per round over the shards that still have some.
    async fn drain_pending(&self, queue: &Sender) -> Result<(), AuditError> {
        let mut starts = vec![Some("0".to_owned()); self.streams.shards()];
        while starts.iter().any(Option::is_some) && !self.token.is_cancelled() {
            let read = self.streams.read_pending(&starts, self.count()).await?;
            // A shard missing from the reply, or answering nothing, is done.
            let mut next = vec![None; starts.len()];
            for (s, entries) in &read {
                next[*s] = entries.last().map(|e| e.id.clone());
            }
            starts = next;
            let entries: usize = read.iter().map(|(_, e)| e.len()).sum();
            if entries > 0 {
                tracing::info!(entries, "audit writer recovering its pending entries");
            }
            let items = items(read.into_iter().map(|(s, e)| (s, e, Vec::new())));
            self.queue_all(items, queue).await?;
        }
        Ok(())
    }

    /// XAUTOCLAIMs entries idle longer than `claim_idle` on any consumer and queues them.
    async fn claim_idle(&self, queue: &Sender) -> Result<(), AuditError> {
        let mut cursors = vec![Some("0-0".to_owned()); self.streams.shards()];
        while cursors.iter().any(Option::is_some) && !self.token.is_cancelled() {
            let claimed = self
                .streams
                .claim(&cursors, self.options.claim_idle, self.count())
                .await?;
            let mut batches = Vec::with_capacity(claimed.len());
            for (s, c) in claimed {
                cursors[s] = (c.next != "0-0" && !c.next.is_empty()).then_some(c.next);
                batches.push((s, c.entries, c.deleted));
            }
            let entries: usize = batches.iter().map(|(_, e, d)| e.len() + d.len()).sum();
            if entries > 0 {
                tracing::info!(entries, "audit writer claimed idle entries");
            }
            self.queue_all(items(batches), queue).await?;
        }
        Ok(())
    }

    /// Queues every batch of `items` on the sink, in order, and hands each to the
    /// acker; waits while too many records are in flight.
    async fn queue_all(
        &self,
        items: impl Iterator<Item = Item>,
        queue: &Sender,
    ) -> Result<(), AuditError> {
        let mut items = items.peekable();
        while items.peek().is_some() {
            let batch = Batch::take(&mut items, self.options.batch_size, self.max_rows());
            self.learn(&batch);
            if self.options.fault == Some(Fault::BeforeCommit) && batch.row_count > 0 {
                return Err(AuditError::Fault(Fault::BeforeCommit));
            }
            // A batch may pass `max_rows` by part of an entry; two must still fit.
            let share = batch.row_count.clamp(1, self.max_rows()) as u32;
            let rows = (queue.in_flight.clone().acquire_many_owned(share).await)
                .map_err(|_| AuditError::SinkClosed)?;
            let commit = match batch.rows.is_empty() {
                true => None,
                false => Some(self.sink.submit(batch.rows)?),
            };
            // The acker is gone only when it failed, and then this run is ending.
            queue
                .queue
                .send(InFlight {
                    commit,
                    acks: batch.acks,
                    rows,
                })
                .map_err(|_| AuditError::SinkClosed)?;
        }
        Ok(())
    }

    async fn refresh_backlog(&self) -> Result<(), AuditError> {
        for (shard, len) in self.streams.lengths().await?.into_iter().enumerate() {
            metrics::gauge!(m::AUDIT_BACKLOG, "shard" => shard.to_string()).set(len as f64);
        }
        Ok(())
    }
}
