//! Redis: the connection pool, key names, scripts, and how failures are sorted.

pub mod keys;
mod pool;
mod scripts;

use std::time::Duration;

use redis::{FromRedisValue, RedisError};

pub use pool::{Meta, RedisManager, Store};
pub use scripts::Scripts;

/// A Redis failure, sorted where it leaves the store. Clone: a failed batch answers
/// each of its decisions with the same error.
#[derive(Debug, Clone, thiserror::Error)]
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

/// Server answers that mean "cannot serve now" (SPEC §2): out of memory, a replica,
/// a failed RDB save, loading, a running script, a cluster in trouble, too few replicas.
const UNAVAILABLE_CODES: &[&str] = &[
    "OOM",
    "READONLY",
    "MISCONF",
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "NOREPLICAS",
];

/// Connection trouble, or a server that cannot serve right now: never a bug of ours.
/// A pipeline's error carries one server error per failed command; any of them that
/// cannot serve now makes the whole call unavailable (fail closed, never a 500).
fn is_unavailable(err: &RedisError) -> bool {
    if err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
    {
        return true;
    }
    if err
        .code()
        .is_some_and(|code| UNAVAILABLE_CODES.contains(&code))
    {
        return true;
    }
    // Cheap: the server errors are shared behind an Arc.
    err.clone().into_server_errors().is_some_and(|errors| {
        errors
            .iter()
            .any(|(_, e)| UNAVAILABLE_CODES.contains(&e.code()))
    })
}

/// Converts a reply, naming what was expected when it does not fit.
pub fn from_reply<T: FromRedisValue>(value: redis::Value, what: &str) -> Result<T, StoreError> {
    T::from_redis_value(value).map_err(|e| StoreError::Reply(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(resp: &str) -> RedisError {
        match redis::parse_redis_value(resp.as_bytes()).expect("a RESP error") {
            redis::Value::ServerError(e) => e.into(),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn every_cannot_serve_now_code_is_unavailable_and_the_rest_are_bugs() {
        let cases = [
            (
                "-OOM command not allowed when used memory > 'maxmemory'.\r\n",
                true,
            ),
            (
                "-READONLY You can't write against a read only replica.\r\n",
                true,
            ),
            (
                "-MISCONF Redis is configured to save RDB snapshots\r\n",
                true,
            ),
            ("-LOADING Redis is loading the dataset in memory\r\n", true),
            ("-BUSY Redis is busy running a script.\r\n", true),
            ("-MASTERDOWN Link with MASTER is down\r\n", true),
            ("-CLUSTERDOWN The cluster is down\r\n", true),
            ("-TRYAGAIN Multiple keys request during rehashing\r\n", true),
            ("-NOREPLICAS Not enough good replicas to write.\r\n", true),
            (
                "-ERR Error running script (call to f_x): @user_script:1: oops\r\n",
                false,
            ),
            (
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
                false,
            ),
            ("-NOSCRIPT No matching script.\r\n", false),
            (
                "-CROSSSLOT Keys in request don't hash to the same slot\r\n",
                false,
            ),
        ];
        for (resp, unavailable) in cases {
            let err = StoreError::from(server_error(resp));
            assert_eq!(err.is_unavailable(), unavailable, "{resp}");
        }
    }

    #[test]
    fn connection_errors_are_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(StoreError::from(RedisError::from(io)).is_unavailable());
        assert!(StoreError::Timeout(Duration::from_millis(1)).is_unavailable());
    }
}
