//! The request-path connection pool and the `Store` handle built on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, FromRedisValue, RedisError, ScriptInvocation};

use super::{from_reply, is_unavailable, keys, Scripts, StoreError};

/// A pooled connection that remembers whether it failed, so bb8 discards it. Clones
/// share the connection (it is multiplexed) and the flag.
#[derive(Clone)]
pub struct PooledConn {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

/// bb8 manager: multiplexed connections with the request-path timeouts.
///
/// redis's own bb8 support uses default timeouts and never reports a connection as
/// broken, so a pool would keep dead connections after a Redis restart; this one
/// drops any connection that saw a connection-level error.
#[derive(Debug, Clone)]
pub struct RedisManager {
    client: Client,
    timeout: Duration,
}

impl RedisManager {
    fn config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
    }
}

impl bb8::ManageConnection for RedisManager {
    type Connection = PooledConn;
    type Error = RedisError;

    async fn connect(&self) -> Result<PooledConn, RedisError> {
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config())
            .await?;
        Ok(PooledConn {
            conn,
            broken: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn is_valid(&self, conn: &mut PooledConn) -> Result<(), RedisError> {
        redis::cmd("PING").query_async::<()>(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut PooledConn) -> bool {
        conn.broken.load(Ordering::Relaxed)
    }
}

/// What `quotad:meta` and the server say at start and on every readiness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The shard count recorded (this node's, unless another node recorded first).
    pub shards: u32,
    /// The catalogue fingerprint recorded.
    pub catalogue: String,
    /// Whether each script of [`Scripts::all`] is in the script cache.
    pub cached: Vec<bool>,
    /// `appendonly` as Redis reports it; `None` when it will not say (managed Redis).
    pub appendonly: Option<bool>,
}

/// The handle every Redis call of the request path goes through.
///
/// Each call is bounded by one deadline (`redis_timeout_ms`) covering checkout,
/// connect and response; past it the call is `Timeout`, never a guess.
#[derive(Debug, Clone)]
pub struct Store {
    pool: bb8::Pool<RedisManager>,
    client: Client,
    timeout: Duration,
}

impl std::fmt::Debug for PooledConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConn")
            .field("broken", &self.broken.load(Ordering::Relaxed))
            .finish()
    }
}

impl Store {
    /// A store for `url` (`redis://`, `rediss://`, `redis+unix://`); connects lazily.
    pub fn new(url: &str, timeout: Duration, pool_size: u32) -> Result<Store, StoreError> {
        let client = Client::open(url).map_err(|e| StoreError::Config(e.to_string()))?;
        let manager = RedisManager {
            client: client.clone(),
            timeout,
        };
        // No PING on checkout: a decision is one round trip. Broken connections are
        // dropped through `has_broken` instead.
        let pool = bb8::Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(Some(pool_size.max(1)))
            .test_on_check_out(false)
            .connection_timeout(timeout)
            .build_unchecked(manager);
        Ok(Store {
            pool,
            client,
            timeout,
        })
    }

    /// The request-path timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A connection of its own, outside the pool, with its own response timeout:
    /// for blocking reads that must never hold up the request path.
    pub async fn dedicated(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(response_timeout));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Runs a script (EVALSHA, reloading on NOSCRIPT).
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.bounded(async {
            let mut pooled = self.checkout().await?;
            let result = invocation.invoke_async(&mut pooled.conn).await;
            pooled.settle(result)
        })
        .await
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.bounded(async {
            let mut pooled = self.checkout().await?;
            let result = cmd.query_async(&mut pooled.conn).await;
            pooled.settle(result)
        })
        .await
    }

    /// Runs a pipeline in one round trip.
    pub async fn query_pipe<T: FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        self.bounded(async {
            let mut pooled = self.checkout().await?;
            let result = pipe.query_async(&mut pooled.conn).await;
            pooled.settle(result)
        })
        .await
    }

    /// Loads every script (so a syntax error stops the boot).
    pub async fn load_scripts(&self, scripts: &Scripts) -> Result<(), StoreError> {
        for script in scripts.all() {
            self.bounded(async {
                let mut pooled = self.checkout().await?;
                let result = script.load_async(&mut pooled.conn).await;
                pooled.settle(result)
            })
            .await?;
        }
        Ok(())
    }

    /// Records this node's shard count and catalogue fingerprint in `quotad:meta` where
    /// none are recorded yet (also after Redis lost its data), and returns, in the same
    /// round trip, what is recorded (which may be another node's), whether each script
    /// is in Redis's script cache, and whether Redis persists (`appendonly`).
    pub async fn claim_meta(
        &self,
        shards: u32,
        fingerprint: &str,
        scripts: &Scripts,
    ) -> Result<Meta, StoreError> {
        let mut pipe = redis::pipe();
        pipe.hset_nx(keys::META, "shards", shards)
            .hset_nx(keys::META, "catalogue", fingerprint)
            .hget(keys::META, "shards")
            .hget(keys::META, "catalogue");
        let exists = pipe.cmd("SCRIPT").arg("EXISTS");
        for script in scripts.all() {
            exists.arg(script.get_hash());
        }
        pipe.cmd("CONFIG").arg("GET").arg("appendonly");
        // Errors one by one: managed Redis may refuse CONFIG, which must not fail the
        // rest; any other error fails the call (sorted, so OOM is unavailable).
        let mut replies: Vec<redis::RedisResult<redis::Value>> =
            self.query_pipe(pipe.ignore_errors()).await?;
        let appendonly = match replies.pop() {
            Some(Ok(value)) => from_reply::<Vec<String>>(value, "CONFIG GET appendonly")
                .ok()
                .and_then(|pair| pair.get(1).map(|v| v == "yes")),
            _ => None,
        };
        let mut rest = Vec::with_capacity(replies.len());
        for reply in replies {
            rest.push(reply.map_err(|e| self.count(StoreError::from(e)))?);
        }
        let mut rest = rest.into_iter().skip(2);
        let mut next = || rest.next().unwrap_or(redis::Value::Nil);
        Ok(Meta {
            shards: from_reply(next(), "recorded shards")?,
            catalogue: from_reply(next(), "recorded catalogue")?,
            cached: from_reply(next(), "SCRIPT EXISTS")?,
            appendonly,
        })
    }

    /// A clone of the next pooled connection; the pool slot is released at once, so
    /// concurrent calls pipeline on the multiplexed connections instead of queueing for
    /// exclusive ones. A connection that fails is flagged and dropped on its next return.
    async fn checkout(&self) -> Result<PooledConn, StoreError> {
        loop {
            let pooled = self.pool.get().await.map_err(|e| match e {
                bb8::RunError::User(e) => StoreError::from(e),
                bb8::RunError::TimedOut => StoreError::Timeout(self.timeout),
            })?;
            // A flagged connection is dropped as its guard goes back; take the next one.
            if !pooled.broken.load(Ordering::Relaxed) {
                return Ok(pooled.clone());
            }
        }
    }

    /// Bounds a whole call (checkout, connect, response) by the request-path timeout,
    /// and counts failures where they leave the store.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(StoreError::Timeout(self.timeout)));
        result.map_err(|e| self.count(e))
    }

    /// Counts a failure in `quotad_redis_errors_total{kind}`.
    fn count(&self, err: StoreError) -> StoreError {
        metrics::counter!(crate::metrics::REDIS_ERRORS, "kind" => err.kind()).increment(1);
        err
    }
}

impl PooledConn {
    /// Marks the connection broken on connection-level errors, so the pool replaces it.
    fn settle<T>(&mut self, result: Result<T, RedisError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            if is_unavailable(e) {
                self.broken.store(true, Ordering::Relaxed);
            }
        }
        Ok(result?)
    }
}
