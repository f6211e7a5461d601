//! Redis: the connection pool, key names, scripts, and how failures are sorted.

pub mod keys;
mod pool;
mod scripts;

use std::time::Duration;

use redis::{FromRedisValue, RedisError};

pub use pool::{RedisManager, Store};
pub use scripts::Scripts;

/// A Redis failure, sorted where it leaves the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis cannot be reached, dropped the connection, or is loading/busy/OOM: fail closed.
    #[error("redis is unavailable: {0}")]
    Unavailable(#[source] RedisError),
    /// No answer within the request-path timeout; the command may still have run.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error that means a bug (script error, wrong type).
    #[error("redis command failed: {0}")]
    Command(#[source] RedisError),
    /// The reply did not have the shape the script promises.
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
    /// The Redis URL or pool settings are unusable.
    #[error("invalid redis settings: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether the caller should answer 503 (Redis trouble) rather than 500 (a bug).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }

    /// A short, bounded label for `quotad_redis_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Timeout(_) => "timeout",
            StoreError::Command(_) => "command",
            StoreError::Reply(_) => "reply",
            StoreError::Config(_) => "config",
        }
    }
}

impl From<RedisError> for StoreError {
    fn from(err: RedisError) -> Self {
        if is_unavailable(&err) {
            StoreError::Unavailable(err)
        } else {
            StoreError::Command(err)
        }
    }
}

/// Connection trouble, or a server that cannot serve right now: never a bug of ours.
fn is_unavailable(err: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    if err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
    {
        return true;
    }
    if matches!(
        err.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        )
    ) {
        return true;
    }
    matches!(err.code(), Some("OOM" | "BUSY" | "MISCONF" | "NOREPLICAS"))
}

/// Converts a reply, naming what was expected when it does not fit.
pub fn from_reply<T: FromRedisValue>(value: redis::Value, what: &str) -> Result<T, StoreError> {
    T::from_redis_value(value).map_err(|e| StoreError::Reply(format!("{what}: {e}")))
}
