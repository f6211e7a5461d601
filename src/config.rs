//! Typed settings, read once from an optional TOML file and `QUOTAD_*` variables.
//!
//! Every setting path (`audit.max_backlog`) can be set in the file or as
//! `QUOTAD_` + the path in upper case with `.` as `_` (`QUOTAD_AUDIT_MAX_BACKLOG`); the
//! environment wins. `audit.db_path` keeps the short name `QUOTAD_AUDIT_DB`, and
//! `QUOTAD_TIERS` takes a TOML table (`free = { monthly_limit = 5 }`) that replaces
//! the catalogue. The lookup is injected, so tests never touch the process environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::{BacklogPolicy, EngineSettings};
use crate::quota::{Catalogue, Tier};

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
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// An environment variable does not hold the right kind of value.
    #[error("{var}: expected {expected}, got {value:?}")]
    Env {
        /// The variable.
        var: String,
        /// What it should hold.
        expected: &'static str,
        /// What it holds.
        value: String,
    },
    /// A setting has a wrong type, an unknown name or a value out of range.
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
    /// S, the number of shards; fixed per deployment.
    pub shards: u32,
    /// The admin bearer token.
    pub admin_token: Option<String>,
    /// How long an allowed decision is kept under its idempotency key.
    pub idempotency_ttl_secs: u64,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Longest a SIGTERM drain may take.
    pub shutdown_grace_secs: u64,
    /// The audit pipeline.
    pub audit: AuditConfig,
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
            shards: 64,
            admin_token: None,
            idempotency_ttl_secs: 86_400,
            max_body_bytes: 65_536,
            shutdown_grace_secs: 10,
            audit: AuditConfig::default(),
            tiers: None,
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
}

/// Every scalar setting path and its kind, for the environment overlay.
const SETTINGS: &[(&str, Kind)] = &[
    ("listen", Kind::Str),
    ("redis_url", Kind::Str),
    ("redis_timeout_ms", Kind::Int),
    ("redis_pool_size", Kind::Int),
    ("shards", Kind::Int),
    ("admin_token", Kind::Str),
    ("idempotency_ttl_secs", Kind::Int),
    ("max_body_bytes", Kind::Int),
    ("shutdown_grace_secs", Kind::Int),
    ("audit.db_path", Kind::Str),
    ("audit.writer", Kind::Bool),
    ("audit.consumer", Kind::Str),
    ("audit.batch_size", Kind::Int),
    ("audit.synchronous", Kind::Str),
    ("audit.max_backlog", Kind::Int),
    ("audit.on_backlog", Kind::Str),
    ("audit.include_denied", Kind::Bool),
    ("audit.claim_idle_secs", Kind::Int),
    ("audit.retention_interval_secs", Kind::Int),
];

/// The environment variable of a setting path.
pub fn env_name(path: &str) -> String {
    if path == "audit.db_path" {
        return "QUOTAD_AUDIT_DB".to_owned();
    }
    format!("QUOTAD_{}", path.to_uppercase().replace('.', "_"))
}

impl Config {
    /// Reads `file` (if any), overlays the variables `env` finds, and validates.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        for (path, kind) in SETTINGS {
            let var = env_name(path);
            if let Some(raw) = env(&var) {
                set_path(&mut table, path, env_value(&var, raw, *kind)?);
            }
        }
        if let Some(raw) = env("QUOTAD_TIERS") {
            let tiers: toml::Table = raw.parse().map_err(|_| ConfigError::Env {
                var: "QUOTAD_TIERS".to_owned(),
                expected: "a TOML table such as `free = { monthly_limit = 5 }`",
                value: raw.clone(),
            })?;
            table.insert("tiers".to_owned(), toml::Value::Table(tiers));
        }
        let config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Invalid(e.message().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, msg: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid(msg.to_owned()))
            }
        };
        check(
            (1..=999).contains(&self.shards),
            "shards must be from 1 to 999",
        )?;
        check(
            self.redis_timeout_ms > 0,
            "redis_timeout_ms must be at least 1",
        )?;
        check(
            self.redis_pool_size > 0,
            "redis_pool_size must be at least 1",
        )?;
        check(
            self.idempotency_ttl_secs > 0,
            "idempotency_ttl_secs must be at least 1",
        )?;
        check(self.max_body_bytes > 0, "max_body_bytes must be at least 1")?;
        check(
            self.audit.batch_size > 0,
            "audit.batch_size must be at least 1",
        )?;
        check(
            self.audit.max_backlog > 0,
            "audit.max_backlog must be at least 1",
        )?;
        check(
            !self.audit.consumer.is_empty(),
            "audit.consumer must not be empty",
        )?;
        check(
            self.audit.retention_interval_secs > 0,
            "audit.retention_interval_secs must be at least 1",
        )?;
        check(
            self.admin_token.as_ref().is_none_or(|t| !t.is_empty()),
            "admin_token must not be empty",
        )?;
        check(
            !self.catalogue().is_empty(),
            "[tiers] must name at least one tier",
        )
    }

    /// The tier catalogue: `[tiers]` when given, else the four defaults.
    pub fn catalogue(&self) -> Catalogue {
        self.tiers.clone().map(Catalogue::new).unwrap_or_default()
    }

    /// The request-path Redis timeout.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// The engine's part of the settings.
    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            shards: self.shards,
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_secs),
            max_backlog: self.audit.max_backlog,
            on_backlog: self.audit.on_backlog,
            include_denied: self.audit.include_denied,
            ..EngineSettings::default()
        }
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
}

fn env_value(var: &str, raw: String, kind: Kind) -> Result<toml::Value, ConfigError> {
    let err = |expected| ConfigError::Env {
        var: var.to_owned(),
        expected,
        value: raw.clone(),
    };
    match kind {
        Kind::Str => Ok(toml::Value::String(raw.clone())),
        Kind::Int => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| err("an integer")),
        Kind::Bool => match raw.trim() {
            "true" | "1" => Ok(toml::Value::Boolean(true)),
            "false" | "0" => Ok(toml::Value::Boolean(false)),
            _ => Err(err("true or false")),
        },
    }
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    match path.split_once('.') {
        None => {
            table.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = table
                .entry(head.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                set_path(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.redis_timeout_ms, 250);
        assert_eq!(c.shards, 64);
        assert_eq!(c.audit.db_path, PathBuf::from("quotad-audit.db"));
        assert_eq!(c.audit.max_backlog, 1_000_000);
        assert_eq!(c.catalogue(), Catalogue::default());
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("q.toml");
        std::fs::write(
            &file,
            "shards = 8\n[audit]\nmax_backlog = 5\n[tiers.gold]\nmonthly_limit = 3\nretention_days = 1\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("QUOTAD_AUDIT_MAX_BACKLOG", "7"),
                ("QUOTAD_AUDIT_DB", "/x.db"),
                ("QUOTAD_AUDIT_WRITER", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.shards, 8);
        assert_eq!(c.audit.max_backlog, 7);
        assert_eq!(c.audit.db_path, PathBuf::from("/x.db"));
        assert!(!c.audit.writer);
        assert_eq!(c.catalogue().get("gold").unwrap().monthly_limit, Some(3));
        assert!(c.catalogue().get("free").is_none());
    }

    #[test]
    fn tiers_from_the_environment_and_unlimited_without_limit() {
        let c = Config::load(None, env(&[("QUOTAD_TIERS", "x = { retention_days = 2 }")])).unwrap();
        assert_eq!(c.catalogue().get("x").unwrap().monthly_limit, None);
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_named() {
        let err = Config::load(None, env(&[("QUOTAD_SHARDS", "many")])).unwrap_err();
        assert!(err.to_string().contains("QUOTAD_SHARDS"), "{err}");
        let err = Config::load(None, env(&[("QUOTAD_AUDIT_ON_BACKLOG", "drop")])).unwrap_err();
        assert!(err.to_string().contains("drop"), "{err}");
        assert!(Config::load(None, env(&[("QUOTAD_SHARDS", "0")])).is_err());
    }
}
