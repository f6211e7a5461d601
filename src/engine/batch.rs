//! Group commit: concurrent consumes are queued and decided by one EVALSHA of
//! `lua/consume_batch.lua` (SPEC §7). No timer: while a batch is in flight its
//! successors gather, and the next batch takes up to `max_decisions` of them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use redis::{ScriptInvocation, Value};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{BacklogPolicy, Engine};
use crate::metrics as m;
use crate::quota::{format_instant, ConsumeRequest, KeyId, Period, Shard};
use crate::store::{from_reply, keys, StoreError};

/// Batches in flight at once: one is decided while the next travels, so Redis is not
/// idle during a round trip; more would only queue inside Redis.
const MAX_IN_FLIGHT: usize = 2;

/// What the script answered for one decision.
#[derive(Debug, Clone)]
pub(super) struct Verdict {
    /// allowed | denied | rate_limited | replayed | invalid_key | key_reused |
    /// unknown_tier | backlog_full
    pub status: String,
    /// The key's tier (the stored one, for replays).
    pub tier: String,
    /// -1 = unlimited.
    pub limit: i64,
    /// Units used after the decision.
    pub used: u64,
    /// `<entry id>.<position>` (or a v1 entry id); empty when nothing was recorded.
    pub audit_ref: String,
    /// The reset instant of the decision's period, unix ms.
    pub reset_ms: i64,
    /// Per window of `tier`, shortest first, after the decision: the excess
    /// max(0, TAT − now) × den and den (see `lua/consume_batch.lua`).
    pub windows: Vec<(u64, u64)>,
}

/// One queued consume.
pub(super) struct Job {
    pub id: KeyId,
    pub req: ConsumeRequest,
    pub reply: oneshot::Sender<Result<Verdict, StoreError>>,
}

/// The queue in front of the batch task.
pub(super) type Queue = mpsc::UnboundedSender<Job>;

/// Starts the batch task of `engine`; it ends when every sender is dropped.
pub(super) fn spawn(engine: Engine, rx: mpsc::UnboundedReceiver<Job>) {
    tokio::spawn(run(engine, rx));
}

async fn run(engine: Engine, mut rx: mpsc::UnboundedReceiver<Job>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let max = engine.settings.max_batch.max(1);
    while let Some(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Everything that arrived while the previous batches were in flight, except
        // jobs whose caller has given up (timed out): they are never sent, so they
        // cannot be charged without an answer.
        let mut jobs = Vec::with_capacity(max.min(64));
        jobs.extend(Some(first).filter(|j| !j.reply.is_closed()));
        while jobs.len() < max {
            match rx.try_recv() {
                Ok(job) if job.reply.is_closed() => {}
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let engine = engine.clone();
        tokio::spawn(async move {
            engine.decide(jobs).await;
            drop(permit);
        });
    }
}

impl Engine {
    /// Decides `jobs` in one EVALSHA and answers each; a failed call answers every
    /// job with the same error (an unknown outcome: safe to retry with the same
    /// idempotency key).
    async fn decide(&self, jobs: Vec<Job>) {
        metrics::histogram!(m::BATCH_SIZE).record(jobs.len() as f64);
        let now = self.now();
        let requests: Vec<(&KeyId, &ConsumeRequest)> =
            jobs.iter().map(|j| (&j.id, &j.req)).collect();
        let result = {
            let inv = self.batch_invocation(&requests, now);
            self.store.invoke::<Value>(&inv).await
        };
        let verdicts = result.and_then(|reply| verdicts(reply, jobs.len()));
        match verdicts {
            Ok((trimmed, verdicts)) => {
                if trimmed > 0 {
                    tracing::warn!(trimmed, "audit backlog full: trimmed unpersisted entries");
                    metrics::counter!(m::AUDIT_TRIMMED_UNPERSISTED).increment(trimmed);
                }
                for (job, verdict) in jobs.into_iter().zip(verdicts) {
                    let _ = job.reply.send(Ok(verdict));
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// The exact EVALSHA one batch sends (keys and arguments of
    /// `lua/consume_batch.lua`), decided at `now`; public so benches can measure the
    /// raw script against the whole engine.
    pub fn batch_invocation(
        &self,
        requests: &[(&KeyId, &ConsumeRequest)],
        now: DateTime<Utc>,
    ) -> ScriptInvocation<'_> {
        let settings = &self.settings;
        let period = Period::containing(now);
        let mut streams: Vec<Shard> = Vec::new();
        let mut inv = self.scripts.consume_batch.prepare_invoke();
        let mut per_decision = Vec::with_capacity(requests.len());
        for (id, req) in requests {
            let shard = id.shard(settings.shards);
            let s = match streams.iter().position(|&x| x == shard) {
                Some(i) => i + 1,
                None => {
                    streams.push(shard);
                    streams.len()
                }
            };
            let idem = req.idempotency_key.as_deref().unwrap_or("");
            inv.key(keys::record(shard, id))
                .key(keys::usage(shard, id, period))
                .key(keys::idempotency(shard, id, idem));
            per_decision.push((s, idem));
        }
        for shard in &streams {
            inv.key(keys::audit_stream(*shard));
        }
        inv.arg(requests.len())
            .arg(period.label())
            .arg(period.reset_at().timestamp_millis())
            .arg(format_instant(now))
            .arg(settings.idempotency_ttl.as_millis() as u64)
            .arg(settings.max_backlog)
            .arg(match settings.on_backlog {
                BacklogPolicy::Reject => "reject",
                BacklogPolicy::Trim => "trim",
            })
            .arg(if settings.include_denied { "1" } else { "0" })
            .arg(now.timestamp_millis())
            .arg(now.date_naive().to_string())
            .arg(now.timestamp_millis().div_euclid(DAY_MS))
            .arg(settings.history_days)
            .arg(self.catalogue.len())
            .arg(self.catalogue_args.as_slice());
        for ((id, req), (s, idem)) in requests.iter().zip(per_decision) {
            inv.arg(id.as_str())
                .arg(s)
                .arg(req.cost)
                .arg(idem)
                .arg(req.fingerprint())
                .arg(&req.endpoint)
                .arg(req.extras.to_json());
        }
        inv
    }
}

/// Milliseconds in a UTC day: day numbers are days since the epoch.
const DAY_MS: i64 = 86_400_000;

/// `{trimmed, then 7 values per decision}` into verdicts.
fn verdicts(reply: Value, n: usize) -> Result<(u64, Vec<Verdict>), StoreError> {
    let items: Vec<Value> = from_reply(reply, "consume_batch.lua reply")?;
    if items.len() != 1 + 7 * n {
        return Err(StoreError::Reply(format!(
            "consume_batch.lua: {} values for {n} decisions",
            items.len()
        )));
    }
    let mut items = items.into_iter();
    let trimmed: u64 = from_reply(items.next().unwrap_or(Value::Nil), "trimmed")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut next = || items.next().unwrap_or(Value::Nil);
        out.push(Verdict {
            status: from_reply(next(), "status")?,
            tier: from_reply(next(), "tier")?,
            limit: from_reply(next(), "limit")?,
            used: from_reply(next(), "used")?,
            audit_ref: from_reply(next(), "audit ref")?,
            reset_ms: from_reply(next(), "reset_ms")?,
            windows: windows(from_reply(next(), "windows")?)?,
        });
    }
    Ok((trimmed, out))
}

/// The windows text: `<excess> <den>` per window.
fn windows(text: String) -> Result<Vec<(u64, u64)>, StoreError> {
    let bad = || StoreError::Reply(format!("consume_batch.lua windows {text:?}"));
    let numbers = text
        .split_ascii_whitespace()
        .map(|n| n.parse::<u64>().map_err(|_| bad()))
        .collect::<Result<Vec<u64>, StoreError>>()?;
    if !numbers.len().is_multiple_of(2) {
        return Err(bad());
    }
    Ok(numbers.chunks_exact(2).map(|w| (w[0], w[1])).collect())
}
