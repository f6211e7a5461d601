//! Typed settings, read once from an optional TOML file and `QUOTAD_*` variables.
//!
//! Every setting path (`audit.max_backlog`) can be set in the file or as
//! `QUOTAD_` + the path in upper case with `.` as `_` (`QUOTAD_AUDIT_MAX_BACKLOG`); the
//! environment wins. `audit.db_path` keeps the short name `QUOTAD_AUDIT_DB`, and
//! `QUOTAD_TIERS` takes a TOML table (`free = { monthly_limit = 5 }`) that replaces
//! the catalogue. The lookup is injected, so tests never touch the process environment.
//!
//! A bad setting is refused with its path, where it came from (file and line, or
//! the variable) and what it expects: `settings` holds the table of known
//! settings, `overlay` lays the variables over the file, and `source` holds the
//! spans that lead from an error back to its setting and origin.

mod overlay;
mod settings;
mod source;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::engine::{BacklogPolicy, EngineSettings};
use crate::quota::{Catalogue, Tier};
pub use settings::env_name;
pub use source::Origin;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A setting is wrong: its path, where its value came from, and what was expected.
    #[error("{setting} ({origin}): {problem}")]
    Setting {
        /// The dotted path, e.g. `audit.max_backlog`.
        setting: String,
        /// The file line or the variable.
        origin: Origin,
        /// What is wrong, with what was expected (never the value of a secret).
        problem: String,
    },
    /// The config file is not valid TOML at a place that names no setting.
    #[error("{origin}: {problem}")]
    Syntax {
        /// The file line.
        origin: Origin,
        /// The parser's message.
        problem: String,
    },
    /// An error toml could not place (it places every error it finds in a document).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// SQLite durability of audit commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// WAL + synchronous=NORMAL: survives a crash of quotad, not of the host.
    Normal,
    /// synchronous=FULL: also survives power loss of the SQLite host.
    Full,
}

/// Settings of the audit pipeline (`[audit]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The SQLite file.
    pub db_path: PathBuf,
    /// Whether this node runs the stream-to-SQLite writer.
    pub writer: bool,
    /// Stable consumer name in the `quotad-audit` group.
    pub consumer: String,
    /// Entries per SQLite transaction.
    pub batch_size: usize,
    /// SQLite durability.
    pub synchronous: Synchronous,
    /// Entries a shard's stream may hold before admissions stop (or trim).
    pub max_backlog: u64,
    /// `reject` (fail closed) or `trim` (lossy) past the backlog.
    pub on_backlog: BacklogPolicy,
    /// Whether denials are recorded too.
    pub include_denied: bool,
    /// Idle time after which another consumer's pending entries are claimed.
    pub claim_idle_secs: u64,
    /// How often the retention job runs.
    pub retention_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            db_path: PathBuf::from("quotad-audit.db"),
            writer: true,
            consumer: gethostname::gethostname().to_string_lossy().into_owned(),
            batch_size: 1000,
            synchronous: Synchronous::Normal,
            max_backlog: 1_000_000,
            on_backlog: BacklogPolicy::Reject,
            include_denied: false,
            claim_idle_secs: 30,
            retention_interval_secs: 3600,
        }
    }
}

/// How decisions are batched (`[batch]`, SPEC §7).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// The most decisions one EVALSHA of `lua/consume_batch.lua` carries.
    pub max_decisions: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_decisions: 256 }
    }
}

/// Settings of the HTTP listener (`[http]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Seconds from accept (or the previous response) to the end of the headers.
    pub header_timeout_secs: u64,
    /// Seconds a request body may take to arrive in full.
    pub body_timeout_secs: u64,
    /// Open connections past which new ones are refused at once.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout_secs: 10,
            body_timeout_secs: 10,
            max_connections: 10_000,
        }
    }
}

impl HttpConfig {
    /// The header timeout as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    /// The body timeout as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }
}

/// Usage history (`[usage]`, SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    /// UTC days of usage kept per key in Redis; at least 62, so the current and the
    /// previous month are always whole.
    pub history_days: u32,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig { history_days: 62 }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Every setting of `quotad`, with the defaults of the spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// `redis://`, `rediss://` or `redis+unix://`.
    pub redis_url: String,
    /// Connect and response timeout of the request path, in ms.
    pub redis_timeout_ms: u64,
    /// Connections in the request-path pool.
    pub redis_pool_size: u32,
    /// PEM file of the CA that `rediss://` verifies against (else the system roots).
    pub redis_ca_file: Option<PathBuf>,
    /// S, the number of shards; fixed per deployment.
    pub shards: u32,
    /// The admin bearer token; after [`Config::load`], also one read from `admin_token_file`.
    pub admin_token: Option<String>,
    /// A file whose first line is the admin token; `admin_token` wins over it.
    pub admin_token_file: Option<PathBuf>,
    /// How long an allowed decision is kept under its idempotency key.
    pub idempotency_ttl_secs: u64,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Longest a SIGTERM drain may take.
    pub shutdown_grace_secs: u64,
    /// Text or JSON log lines.
    pub log_format: LogFormat,
    /// The HTTP listener.
    pub http: HttpConfig,
    /// Batched decisions.
    pub batch: BatchConfig,
    /// The audit pipeline.
    pub audit: AuditConfig,
    /// Usage history.
    pub usage: UsageConfig,
    /// The tier catalogue; replaces the defaults when given.
    pub tiers: Option<BTreeMap<String, Tier>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_timeout_ms: 250,
            redis_pool_size: 8,
            redis_ca_file: None,
            shards: 64,
            admin_token: None,
            admin_token_file: None,
            idempotency_ttl_secs: 86_400,
            max_body_bytes: 65_536,
            shutdown_grace_secs: 10,
            log_format: LogFormat::Text,
            http: HttpConfig::default(),
            batch: BatchConfig::default(),
            audit: AuditConfig::default(),
            usage: UsageConfig::default(),
            tiers: None,
        }
    }
}

impl Config {
    /// Reads `file` (if any), overlays the variables `env` finds, validates, and
    /// reads the admin token from `admin_token_file` when `admin_token` is not set.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = match file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.to_owned(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let vars = overlay::read_env(env);
        let (root, sources) = source::merge(file.zip(text.as_deref()), &vars)?;
        settings::check(&root, &sources)?;
        let document = toml::de::Deserializer::from(Spanned::new(0..0, root));
        let mut config = Config::deserialize(document).map_err(|e| sources.de_error(&e))?;
        config.resolve(&sources)?;
        Ok(config)
    }

    /// Checks across settings, and the admin token file.
    fn resolve(&mut self, sources: &source::Sources<'_>) -> Result<(), ConfigError> {
        let error = |setting: &str, problem: String| ConfigError::Setting {
            setting: setting.to_owned(),
            origin: sources.origin_of(setting),
            problem,
        };
        if self.tiers.as_ref().is_some_and(BTreeMap::is_empty) {
            return Err(error("tiers", "expected at least one tier".to_owned()));
        }
        if let (None, Some(path)) = (&self.admin_token, &self.admin_token_file) {
            let token = read_token(path, |problem| error("admin_token_file", problem))?;
            self.admin_token = Some(token);
        }
        Ok(())
    }

    /// The tier catalogue: `[tiers]` when given, else the four defaults.
    pub fn catalogue(&self) -> Catalogue {
        self.tiers.clone().map(Catalogue::new).unwrap_or_default()
    }

    /// The request-path Redis timeout.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// The request-path store: `redis_url` (verified against `redis_ca_file` when
    /// given), with the request-path timeout and pool size. Connects lazily.
    pub fn store(&self) -> Result<crate::store::Store, crate::store::StoreError> {
        crate::store::Store::with_ca_file(
            &self.redis_url,
            self.redis_ca_file.as_deref(),
            self.redis_timeout(),
            self.redis_pool_size,
        )
    }

    /// The engine's part of the settings.
    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            shards: self.shards,
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_secs),
            max_backlog: self.audit.max_backlog,
            on_backlog: self.audit.on_backlog,
            include_denied: self.audit.include_denied,
            max_batch: self.batch.max_decisions,
            history_days: self.usage.history_days,
        }
    }
}

/// The first line of the token file, trimmed; `fail` names the setting, and the
/// problem never quotes the file (it holds a secret).
fn read_token(path: &Path, fail: impl Fn(String) -> ConfigError) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(fail(format!(
            "expected the admin token on the first line of {}, found none",
            path.display()
        )));
    }
    Ok(token.to_owned())
}
