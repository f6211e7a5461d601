//! The command line of `quotad bench`, turned into [`Options`].

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{KeySource, LoadError, Options, Progress};
use crate::quota::ApiKey;

/// A secret from the command line or the environment; `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, to put in a header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// `quotad bench`: load-test a running quotad with `POST /v1/consume`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Base URL of the quotad to load (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Admin token, to create the bench keys (never printed).
    #[arg(long, env = "QUOTAD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// API keys to use, one per line, instead of creating keys (no admin token needed).
    #[arg(long, value_name = "FILE", conflicts_with = "create_keys")]
    pub keys: Option<PathBuf>,
    /// How many keys to create through POST /v1/keys (deactivated again at the end).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub create_keys: usize,
    /// Tier of the created keys; the unlimited `enterprise` keeps quotas from cutting
    /// the run short.
    #[arg(long, default_value = "enterprise")]
    pub tier: String,
    /// Keep-alive HTTP/1.1 connections, one request at a time each.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds to send requests for.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub duration: u64,
    /// Cost of every consume.
    #[arg(long, default_value_t = 1)]
    pub cost: u64,
    /// Share of requests (0.0-1.0) that reuse an earlier idempotency key of the same API
    /// key, so quotad replays them; above 0, every other request carries a fresh one.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub replay_share: f64,
    /// The `endpoint` field of every consume.
    #[arg(long, default_value = "/bench")]
    pub endpoint: String,
    /// Decisions/s in total, open loop: requests are sent at fixed intervals and latency
    /// counts from the scheduled start, so queueing is not hidden. Without it, each
    /// connection sends as soon as it has its answer (closed loop).
    #[arg(long, value_name = "PER_SEC")]
    pub rate: Option<f64>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// The options of this command line; reads the key file. Ranges are checked by
    /// [`super::run`].
    pub fn into_options(self, stop: CancellationToken) -> Result<Options, LoadError> {
        let keys = match &self.keys {
            Some(path) => KeySource::Given(read_keys(path)?),
            None => KeySource::Create {
                count: self.create_keys,
                tier: self.tier,
                admin_token: self.admin_token,
            },
        };
        let progress = if std::io::stderr().is_terminal() {
            Progress::Overwrite
        } else {
            Progress::Lines
        };
        Ok(Options {
            url: self.url,
            keys,
            connections: self.connections,
            duration: Duration::from_secs(self.duration),
            cost: self.cost,
            replay_share: self.replay_share,
            endpoint: self.endpoint,
            rate: self.rate,
            progress,
            stop,
        })
    }
}

/// One key a line; blank lines and `#` comments are skipped. Errors name the line,
/// never the key.
fn read_keys(path: &Path) -> Result<Vec<ApiKey>, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::Usage(format!("--keys {}: {e}", path.display())))?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        keys.push(ApiKey::parse(line).ok_or_else(|| {
            LoadError::Usage(format!(
                "--keys {} line {}: an API key is 16-256 characters in 0x21-0x7E",
                path.display(),
                n + 1
            ))
        })?);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_skip_blanks_and_comments_and_name_the_bad_line_not_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.txt");
        std::fs::write(
            &path,
            "# bench keys\n\nqk_aaaaaaaaaaaaaaaa\n  qk_bbbbbbbbbbbbbbbb  \n",
        )
        .unwrap();
        let keys = read_keys(&path).unwrap();
        assert_eq!(keys[0].expose(), "qk_aaaaaaaaaaaaaaaa");
        assert_eq!(keys[1].expose(), "qk_bbbbbbbbbbbbbbbb");
        assert_eq!(keys.len(), 2);

        std::fs::write(&path, "qk_aaaaaaaaaaaaaaaa\nshort-secret\n").unwrap();
        let err = read_keys(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("short-secret"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }
}
