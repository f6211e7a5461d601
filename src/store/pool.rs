//! The request-path connection pool and the `Store` handle built on it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, FromRedisValue, RedisError, ScriptInvocation,
    TlsCertificates,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

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
    /// `rediss://` verifies the server against the system's root certificates.
    pub fn new(url: &str, timeout: Duration, pool_size: u32) -> Result<Store, StoreError> {
        Self::with_ca_file(url, None, timeout, pool_size)
    }

    /// As [`Store::new`]; with `ca_file` (`redis_ca_file`), `rediss://` verifies the
    /// server against the PEM certificates in that file instead of the system's roots.
    pub fn with_ca_file(
        url: &str,
        ca_file: Option<&Path>,
        timeout: Duration,
        pool_size: u32,
    ) -> Result<Store, StoreError> {
        let client = client(url, ca_file)?;
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

/// The one client behind the pool, the dedicated connections and the CLI.
fn client(url: &str, ca_file: Option<&Path>) -> Result<Client, StoreError> {
    select_crypto_provider();
    let client = match ca_file {
        None => Client::open(url).map_err(|e| StoreError::Config(e.to_string()))?,
        Some(path) => client_trusting(url, path)?,
    };
    // Without redis's tls-rustls-insecure feature, `#insecure` fails at every connect
    // (as a command error, not as unavailable); refuse it once, here.
    if let ConnectionAddr::TcpTls { insecure: true, .. } = client.get_connection_info().addr() {
        return Err(StoreError::Config(
            "redis_url asks for #insecure (no certificate check), which quotad does not \
             support; give the server's CA as redis_ca_file instead"
                .into(),
        ));
    }
    Ok(client)
}

/// A `rediss://` client that verifies the server against the certificates in `path`.
fn client_trusting(url: &str, path: &Path) -> Result<Client, StoreError> {
    let ca_error =
        |why: String| StoreError::Config(format!("redis_ca_file {}: {why}", path.display()));
    let tls_url = url
        .get(..9)
        .is_some_and(|s| s.eq_ignore_ascii_case("rediss://"));
    if !tls_url {
        return Err(ca_error("is set, but redis_url is not rediss://".into()));
    }
    let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
    // redis accepts a file without a single certificate and then trusts nothing, which
    // would only show as a refused handshake on every connect; refuse it here instead.
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_error(format!("not a PEM file ({e})")))?;
    if certificates.is_empty() {
        return Err(ca_error("holds no PEM certificate".into()));
    }
    let tls = TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    Client::build_with_tls(url, tls).map_err(|e| ca_error(e.to_string()))
}

/// Makes ring rustls's process-wide crypto provider, unless one is already chosen.
///
/// rustls picks a provider from its crate features only while exactly one is compiled
/// in, and panics at the first TLS connect otherwise; a dependency that enables
/// aws-lc-rs must not turn `rediss://` into a panic.
fn select_crypto_provider() {
    // An error means a provider is already installed, which is all that is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
