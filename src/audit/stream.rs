//! The Redis side of the writer: the consumer group on every shard stream, reading new
//! entries, re-reading and claiming pending ones, and ack + trim (`lua/audit_ack.lua`),
//! on connections of its own (never the request pool).
//!
//! New entries come through `new_entries` (one implementation per topology). Everything
//! else goes over the writer's control connection, here: one multi-stream XREADGROUP
//! for pending entries, one ack call per batch for all shards, and per-shard
//! XAUTOCLAIM / XLEN in one pipeline.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use super::entry::{claim_reply, read_reply, Claimed, Entry};
use super::GROUP;
use crate::quota::Shard;
use crate::store::{from_reply, keys, Store, StoreError};

/// Entries by shard, as one read returns them.
pub(crate) type Read = Vec<(usize, Vec<Entry>)>;

/// Whether a Redis error means a group (or its stream) is gone.
fn is_nogroup(err: &redis::RedisError) -> bool {
    err.code() == Some("NOGROUP")
}

/// The shard streams' names, and the way back from a name to its shard.
#[derive(Debug, Clone)]
pub(crate) struct StreamNames {
    keys: Vec<String>,
    shard_of: HashMap<Vec<u8>, usize>,
}

impl StreamNames {
    /// The streams of `shards` shards.
    pub fn new(shards: u32) -> Self {
        let keys: Vec<String> = (0..shards).map(|s| keys::audit_stream(Shard(s))).collect();
        let shard_of = keys
            .iter()
            .enumerate()
            .map(|(s, k)| (k.as_bytes().to_vec(), s))
            .collect();
        StreamNames { keys, shard_of }
    }

    /// The number of shards.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The stream of shard `s`.
    pub fn key(&self, s: usize) -> &str {
        &self.keys[s]
    }

    /// A multi-stream XREADGROUP reply by shard; a stream that is not ours is a bug.
    fn by_shard(&self, reply: Value) -> Result<Read, StoreError> {
        read_reply(reply)?
            .into_iter()
            .map(|(name, entries)| match self.shard_of.get(&name) {
                Some(&s) => Ok((s, entries)),
                None => Err(StoreError::Reply(format!(
                    "XREADGROUP answered for stream {:?}",
                    String::from_utf8_lossy(&name)
                ))),
            })
            .collect()
    }
}

/// `XREADGROUP GROUP quotad-audit <consumer> COUNT <count> [BLOCK ms] STREAMS k… id…`
/// over the shards of `starts` (shard, start id).
pub(crate) fn xreadgroup(
    names: &StreamNames,
    consumer: &str,
    count: usize,
    block: Option<Duration>,
    starts: &[(usize, &str)],
) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count);
    if let Some(block) = block {
        // BLOCK 0 would wait forever.
        cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
    }
    cmd.arg("STREAMS");
    for &(s, _) in starts {
        cmd.arg(names.key(s));
    }
    for &(_, start) in starts {
        cmd.arg(start);
    }
    cmd
}

/// Creates the group on every stream (at `0`, with MKSTREAM); existing groups stay.
pub(crate) async fn create_groups(
    conn: &mut MultiplexedConnection,
    names: &StreamNames,
) -> Result<(), StoreError> {
    let mut pipe = redis::pipe();
    for s in 0..names.len() {
        pipe.cmd("XGROUP")
            .arg("CREATE")
            .arg(names.key(s))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
    }
    let results: Vec<RedisResult<Value>> = pipe.ignore_errors().query_async(conn).await?;
    for result in results {
        match result {
            Err(e) if e.code() != Some("BUSYGROUP") => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// Runs a multi-stream XREADGROUP; on NOGROUP (Redis lost the group, or the stream)
/// re-creates the missing groups at 0 and runs it once more.
pub(crate) async fn read_recreating(
    conn: &mut MultiplexedConnection,
    names: &StreamNames,
    cmd: &redis::Cmd,
) -> Result<Read, StoreError> {
    let reply = match cmd.query_async::<Value>(conn).await {
        Err(e) if is_nogroup(&e) => {
            tracing::warn!("audit consumer group missing; re-creating it at 0");
            create_groups(conn, names).await?;
            cmd.query_async::<Value>(conn).await?
        }
        other => other?,
    };
    names.by_shard(reply)
}

/// The shard streams as one consumer of the `quotad-audit` group handles them, apart
/// from reading new entries: pending re-reads, claims, acks, lengths.
pub(crate) struct Streams {
    store: Store,
    conn: Option<MultiplexedConnection>,
    names: StreamNames,
    consumer: String,
    ack: redis::Script,
    response_timeout: Duration,
}

impl Streams {
    /// The streams of `names`, handled as `consumer`; connects lazily.
    pub fn new(
        store: Store,
        names: StreamNames,
        consumer: String,
        response_timeout: Duration,
    ) -> Self {
        Streams {
            store,
            conn: None,
            names,
            consumer,
            ack: redis::Script::new(include_str!("../../lua/audit_ack.lua")),
            response_timeout,
        }
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.names.len()
    }

    /// Forgets the connection after an error; the next call reconnects.
    pub fn reset(&mut self) {
        self.conn = None;
    }

    /// Connects (if needed): a dedicated connection, the ack script loaded, and the
    /// group present on every shard (created at `0` with MKSTREAM).
    pub async fn connect(&mut self) -> Result<(), StoreError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let mut conn = self.store.dedicated(self.response_timeout).await?;
        self.ack.load_async(&mut conn).await?;
        create_groups(&mut conn, &self.names).await?;
        self.conn = Some(conn);
        Ok(())
    }

    /// A handle on the connection; clones share it, so acks and claims can overlap.
    fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        self.conn
            .clone()
            .ok_or_else(|| StoreError::Reply("audit stream connection not open".to_owned()))
    }

    /// This consumer's pending entries after each start id (`0` = from the first), in
    /// one XREADGROUP over the shards that have a start; at most `count` per stream.
    pub async fn read_pending(
        &self,
        starts: &[Option<String>],
        count: usize,
    ) -> Result<Read, StoreError> {
        let starts: Vec<(usize, &str)> = starts
            .iter()
            .enumerate()
            .filter_map(|(s, start)| start.as_deref().map(|start| (s, start)))
            .collect();
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = xreadgroup(&self.names, &self.consumer, count, None, &starts);
        read_recreating(&mut self.conn()?, &self.names, &cmd).await
    }

    /// XAUTOCLAIM on every shard with a cursor: entries idle longer than `min_idle`
    /// on any consumer become this consumer's.
    pub async fn claim(
        &self,
        cursors: &[Option<String>],
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<(usize, Claimed)>, StoreError> {
        let shards: Vec<usize> = (0..cursors.len())
            .filter(|&s| cursors[s].is_some())
            .collect();
        let mut pipe = redis::pipe();
        for &s in &shards {
            pipe.cmd("XAUTOCLAIM")
                .arg(self.names.key(s))
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(min_idle.as_millis() as u64)
                .arg(cursors[s].as_deref())
                .arg("COUNT")
                .arg(count);
        }
        let results: Vec<RedisResult<Value>> =
            pipe.ignore_errors().query_async(&mut self.conn()?).await?;
        let mut out = Vec::with_capacity(shards.len());
        for (&s, result) in shards.iter().zip(results) {
            match result {
                Ok(value) => out.push((s, claim_reply(value)?)),
                // No group: nothing to claim; the next read re-creates it.
                Err(e) if is_nogroup(&e) => out.push((s, Claimed::default())),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Acknowledges ids per shard (after COMMIT only) and trims each stream up to the
    /// oldest entry still pending, in one call for all shards; returns (acked, trimmed).
    pub async fn ack(&self, acks: &[(usize, Vec<String>)]) -> Result<(u64, u64), StoreError> {
        let acks: Vec<&(usize, Vec<String>)> =
            acks.iter().filter(|(_, ids)| !ids.is_empty()).collect();
        if acks.is_empty() {
            return Ok((0, 0));
        }
        let mut call = self.ack.prepare_invoke();
        call.arg(GROUP);
        for (s, ids) in &acks {
            call.key(self.names.key(*s)).arg(ids.len());
        }
        for (_, ids) in &acks {
            call.arg(ids);
        }
        Ok(call.invoke_async(&mut self.conn()?).await?)
    }

    /// XLEN of every shard stream, in shard order.
    pub async fn lengths(&self) -> Result<Vec<u64>, StoreError> {
        let mut pipe = redis::pipe();
        for s in 0..self.names.len() {
            pipe.cmd("XLEN").arg(self.names.key(s));
        }
        let value: Value = pipe.query_async(&mut self.conn()?).await?;
        from_reply(value, "XLEN replies")
    }
}
