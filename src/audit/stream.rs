//! The Redis side of the writer: the consumer group on every shard stream, read,
//! claim, and ack + trim, on a connection of its own (never the request pool).
//!
//! Each command names one stream (a command may not span slots); the commands of all
//! shards go out as one pipeline, which Redis Cluster clients split by node.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use super::entry::{claim_reply, read_reply, Claimed, Entry};
use super::GROUP;
use crate::quota::Shard;
use crate::store::{from_reply, keys, Store, StoreError};

/// Whether a Redis error means the group (or its stream) is gone.
fn is_nogroup(err: &redis::RedisError) -> bool {
    err.code() == Some("NOGROUP")
}

/// The shard streams as one consumer of the `quotad-audit` group sees them.
pub(crate) struct Streams {
    store: Store,
    conn: Option<MultiplexedConnection>,
    keys: Vec<String>,
    consumer: String,
    ack: redis::Script,
    response_timeout: Duration,
}

impl Streams {
    /// The streams of `shards` shards, read as `consumer`; connects lazily.
    pub fn new(store: Store, shards: u32, consumer: String, response_timeout: Duration) -> Self {
        Streams {
            store,
            conn: None,
            keys: (0..shards).map(|s| keys::audit_stream(Shard(s))).collect(),
            consumer,
            ack: redis::Script::new(include_str!("../../lua/audit_ack.lua")),
            response_timeout,
        }
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.keys.len()
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
        self.conn = Some(conn);
        let all: Vec<usize> = (0..self.keys.len()).collect();
        self.create_groups(&all).await
    }

    /// A handle on the connection; clones share it, so reads and acks can overlap.
    fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        self.conn
            .clone()
            .ok_or_else(|| StoreError::Reply("audit stream connection not open".to_owned()))
    }

    async fn create_groups(&self, shards: &[usize]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for &s in shards {
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(&self.keys[s])
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM");
        }
        let results: Vec<RedisResult<Value>> =
            pipe.ignore_errors().query_async(&mut self.conn()?).await?;
        for result in results {
            match result {
                Err(e) if e.code() != Some("BUSYGROUP") => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// XREADGROUP on every shard with a start (`>` for new entries, an id to re-read
    /// this consumer's pending entries after it); shards without a start are skipped.
    /// A shard whose group is gone gets it back and reads nothing this time.
    pub async fn read(
        &self,
        starts: &[Option<String>],
        count: usize,
    ) -> Result<Vec<(usize, Vec<Entry>)>, StoreError> {
        let shards: Vec<usize> = (0..starts.len()).filter(|&s| starts[s].is_some()).collect();
        let mut pipe = redis::pipe();
        for &s in &shards {
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&self.keys[s])
                .arg(starts[s].as_deref());
        }
        let results: Vec<RedisResult<Value>> =
            pipe.ignore_errors().query_async(&mut self.conn()?).await?;
        let mut out = Vec::with_capacity(shards.len());
        let mut lost = Vec::new();
        for (&s, result) in shards.iter().zip(results) {
            match result {
                Ok(value) => out.push((s, read_reply(value)?)),
                Err(e) if is_nogroup(&e) => lost.push(s),
                Err(e) => return Err(e.into()),
            }
        }
        if !lost.is_empty() {
            tracing::warn!(shards = ?lost, "audit consumer group missing; re-creating it at 0");
            self.create_groups(&lost).await?;
            out.extend(lost.into_iter().map(|s| (s, Vec::new())));
        }
        Ok(out)
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
                .arg(&self.keys[s])
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
    /// oldest entry still pending; returns (acknowledged, trimmed).
    pub async fn ack(&self, acks: &[(usize, Vec<String>)]) -> Result<(u64, u64), StoreError> {
        let mut pipe = redis::pipe();
        for (s, ids) in acks.iter().filter(|(_, ids)| !ids.is_empty()) {
            pipe.cmd("EVALSHA")
                .arg(self.ack.get_hash())
                .arg(1)
                .arg(&self.keys[*s])
                .arg(GROUP)
                .arg(ids);
        }
        let replies: Vec<(u64, u64)> = pipe.query_async(&mut self.conn()?).await?;
        Ok(replies
            .into_iter()
            .fold((0, 0), |(a, t), (da, dt)| (a + da, t + dt)))
    }

    /// XLEN of every shard stream, in shard order.
    pub async fn lengths(&self) -> Result<Vec<u64>, StoreError> {
        let mut pipe = redis::pipe();
        for key in &self.keys {
            pipe.cmd("XLEN").arg(key);
        }
        let value: Value = pipe.query_async(&mut self.conn()?).await?;
        from_reply(value, "XLEN replies")
    }
}
