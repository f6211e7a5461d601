//! Where the writer's new entries come from, behind [`NewEntries`] so that each topology
//! reads its own way. On one Redis ([`OneRedis`]) one blocking XREADGROUP names every
//! shard stream, on a connection that does nothing else: a blocked command holds up
//! everything behind it on its connection. (On a Cluster a command may not span slots:
//! that variant sends one pipeline per node with one XREADGROUP per shard, and waits
//! for a bell instead of blocking.)

use std::time::Duration;

/// A boxed future, as the object-safe read interface returns.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

use redis::aio::MultiplexedConnection;

use super::stream::{create_groups, read_recreating, xreadgroup, Read, StreamNames};
use crate::store::{Store, StoreError};

/// Where new entries come from; one implementation per topology (a Cluster variant
/// reads with one pipeline per node and waits for a bell instead of blocking).
pub(crate) trait NewEntries: Send + Sync {
    /// Connects if needed, with the group present on every stream.
    fn connect(&mut self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Entries never delivered to the group, at most `count` per stream; waits up to
    /// `block` while there are none (then answers empty).
    fn read(&self, count: usize, block: Duration) -> BoxFuture<'_, Result<Read, StoreError>>;

    /// Forgets the connection after an error; the next `connect` makes a new one.
    fn reset(&mut self);
}

/// One Redis: one blocking XREADGROUP naming every shard stream, on its own connection.
pub(crate) struct OneRedis {
    store: Store,
    conn: Option<MultiplexedConnection>,
    names: StreamNames,
    consumer: String,
    response_timeout: Duration,
}

impl OneRedis {
    /// Reads `names` as `consumer`; replies may take up to `response_timeout`, which must
    /// exceed the longest `block` asked for.
    pub fn new(
        store: Store,
        names: StreamNames,
        consumer: String,
        response_timeout: Duration,
    ) -> Self {
        OneRedis {
            store,
            conn: None,
            names,
            consumer,
            response_timeout,
        }
    }
}

impl NewEntries for OneRedis {
    fn connect(&mut self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.conn.is_none() {
                let mut conn = self.store.dedicated(self.response_timeout).await?;
                create_groups(&mut conn, &self.names).await?;
                self.conn = Some(conn);
            }
            Ok(())
        })
    }

    fn read(&self, count: usize, block: Duration) -> BoxFuture<'_, Result<Read, StoreError>> {
        Box::pin(async move {
            let mut conn = self
                .conn
                .clone()
                .ok_or_else(|| StoreError::Reply("audit read connection not open".into()))?;
            let starts: Vec<(usize, &str)> = (0..self.names.len()).map(|s| (s, ">")).collect();
            let cmd = xreadgroup(&self.names, &self.consumer, count, Some(block), &starts);
            read_recreating(&mut conn, &self.names, &cmd).await
        })
    }

    fn reset(&mut self) {
        self.conn = None;
    }
}
