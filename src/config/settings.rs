//! The table of known settings: each path, its `QUOTAD_*` variable and what it accepts.
//!
//! The table is the one place that maps a variable back to its setting
//! (`QUOTAD_AUDIT_MAX_BACKLOG` is `audit.max_backlog`; splitting on `_` cannot
//! recover that), and it checks every value before serde sees it, so a bad value
//! is reported with what the setting expects rather than a Rust type name.

use std::borrow::Cow;
use std::net::SocketAddr;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::source::Sources;
use super::ConfigError;
use crate::quota::{RateLimit, MAX_EXACT_INT, MAX_WINDOW_SECS};

/// What one setting accepts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// An integer in `min..=max`.
    Int {
        /// Smallest value accepted.
        min: u64,
        /// Largest value accepted.
        max: u64,
    },
    /// `true` or `false` (the environment may also say `1` or `0`).
    Bool,
    /// A string that must not be empty (paths, URLs, names; enums are left to serde).
    Text,
    /// A non-empty string never repeated in an error message (a token).
    Secret,
    /// A socket address such as `127.0.0.1:8080`.
    Addr,
}

/// One known scalar setting.
#[derive(Debug)]
pub(super) struct Setting {
    /// The dotted path, as in the file.
    pub path: &'static str,
    /// What it accepts.
    pub kind: Kind,
}

const fn at_least(min: u64) -> Kind {
    Kind::Int {
        min,
        max: MAX_EXACT_INT,
    }
}

const U32: u64 = u32::MAX as u64;

const fn setting(path: &'static str, kind: Kind) -> Setting {
    Setting { path, kind }
}

/// Every scalar setting; each can also come from its variable (see [`env_name`]).
pub(super) const SETTINGS: &[Setting] = &[
    setting("listen", Kind::Addr),
    setting("redis_url", Kind::Text),
    setting("redis_timeout_ms", at_least(1)),
    setting("redis_pool_size", Kind::Int { min: 1, max: U32 }),
    setting("redis_ca_file", Kind::Text),
    setting("shards", Kind::Int { min: 1, max: 999 }),
    setting("admin_token", Kind::Secret),
    setting("admin_token_file", Kind::Text),
    setting("idempotency_ttl_secs", at_least(1)),
    setting("max_body_bytes", at_least(1)),
    setting("shutdown_grace_secs", at_least(0)),
    setting("log_format", Kind::Text),
    setting("http.header_timeout_secs", at_least(1)),
    setting("http.body_timeout_secs", at_least(1)),
    setting("http.max_connections", at_least(1)),
    setting("batch.max_decisions", Kind::Int { min: 1, max: 4096 }),
    setting("audit.db_path", Kind::Text),
    setting("audit.writer", Kind::Bool),
    setting("audit.consumer", Kind::Text),
    setting("audit.batch_size", at_least(1)),
    setting("audit.synchronous", Kind::Text),
    setting("audit.max_backlog", at_least(1)),
    setting("audit.on_backlog", Kind::Text),
    setting("audit.include_denied", Kind::Bool),
    setting("audit.claim_idle_secs", at_least(0)),
    setting("audit.retention_interval_secs", at_least(1)),
    // At least two months, so the current and the previous period keep all their days.
    setting("usage.history_days", Kind::Int { min: 62, max: 3660 }),
];

/// The settings of each `[tiers.<name>]` table that quotad checks itself.
pub(super) const TIER_SETTINGS: &[Setting] = &[
    // A limit Lua cannot hold exactly would be enforced as another number.
    setting("monthly_limit", at_least(0)),
    setting("retention_days", Kind::Int { min: 0, max: U32 }),
];

/// The settings of each window in a tier's `rate_limits` list.
const WINDOW_SETTINGS: &[Setting] = &[
    setting("limit", at_least(1)),
    setting(
        "window_secs",
        Kind::Int {
            min: 1,
            max: MAX_WINDOW_SECS,
        },
    ),
];

/// The variable that replaces the whole tier catalogue with a TOML table.
pub(super) const TIERS_VAR: &str = "QUOTAD_TIERS";

/// The environment variable of a setting path.
pub fn env_name(path: &str) -> String {
    if path == "audit.db_path" {
        return "QUOTAD_AUDIT_DB".to_owned();
    }
    format!("QUOTAD_{}", path.to_uppercase().replace('.', "_"))
}

/// The known setting at `path`, if any.
pub(super) fn find(path: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.path == path)
}

/// Whether the value at `path` must never appear in a message.
pub(super) fn is_secret(path: &str) -> bool {
    find(path).is_some_and(|s| matches!(s.kind, Kind::Secret))
}

impl Kind {
    /// What the setting expects, for messages.
    pub(super) fn expected(self) -> String {
        match self {
            Kind::Int { min, max } => format!("an integer from {min} to {max}"),
            Kind::Bool => "true or false".to_owned(),
            Kind::Text | Kind::Secret => "a non-empty string".to_owned(),
            Kind::Addr => "a socket address such as 127.0.0.1:8080".to_owned(),
        }
    }

    /// Whether `value` is acceptable.
    pub(super) fn accepts(self, value: &DeValue<'_>) -> bool {
        match (self, value) {
            (Kind::Int { min, max }, DeValue::Integer(i)) => {
                u64::from_str_radix(i.as_str(), i.radix()).is_ok_and(|n| (min..=max).contains(&n))
            }
            (Kind::Bool, DeValue::Boolean(_)) => true,
            (Kind::Text | Kind::Secret, DeValue::String(s)) => !s.is_empty(),
            (Kind::Addr, DeValue::String(s)) => s.parse::<SocketAddr>().is_ok(),
            _ => false,
        }
    }

    /// A variable's text as a TOML value of this kind; text that is not one stays a
    /// string, so the check reports it as this setting's bad value.
    pub(super) fn read_var(self, raw: &str) -> DeValue<'_> {
        let text = || DeValue::String(Cow::Borrowed(raw));
        match self {
            Kind::Int { .. } => match DeValue::parse(raw.trim()).map(Spanned::into_inner) {
                Ok(value @ DeValue::Integer(_)) => value,
                _ => text(),
            },
            Kind::Bool => match raw.trim() {
                "true" | "1" => DeValue::Boolean(true),
                "false" | "0" => DeValue::Boolean(false),
                _ => text(),
            },
            Kind::Text | Kind::Secret | Kind::Addr => text(),
        }
    }
}

/// The value at a dotted `path` of `table`, if present.
pub(super) fn lookup<'t, 'i>(
    table: &'t DeTable<'i>,
    path: &str,
) -> Option<&'t Spanned<DeValue<'i>>> {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let value = table.get(head)?;
    match (rest, value.get_ref()) {
        (None, _) => Some(value),
        (Some(rest), DeValue::Table(inner)) => lookup(inner, rest),
        (Some(_), _) => None,
    }
}

/// Checks every known setting present in `root` against the table.
pub(super) fn check(root: &DeTable<'_>, sources: &Sources<'_>) -> Result<(), ConfigError> {
    for setting in SETTINGS {
        if let Some(value) = lookup(root, setting.path) {
            if !setting.kind.accepts(value.get_ref()) {
                return Err(sources.bad_value(setting.path, &value.span(), setting.kind));
            }
        }
    }
    let Some(DeValue::Table(tiers)) = lookup(root, "tiers").map(Spanned::get_ref) else {
        // Absent, or not a table: serde reports the latter.
        return Ok(());
    };
    for (name, tier) in tiers.iter() {
        let DeValue::Table(fields) = tier.get_ref() else {
            continue;
        };
        let prefix = format!("tiers.{}", name.get_ref());
        check_fields(fields, TIER_SETTINGS, &prefix, sources)?;
        if let Some(DeValue::Array(windows)) = fields.get("rate_limits").map(Spanned::get_ref) {
            check_windows(windows, &format!("{prefix}.rate_limits"), sources)?;
        }
    }
    Ok(())
}

/// Checks the known `settings` of one table whose path is `prefix`.
fn check_fields(
    fields: &DeTable<'_>,
    settings: &[Setting],
    prefix: &str,
    sources: &Sources<'_>,
) -> Result<(), ConfigError> {
    for setting in settings {
        if let Some(value) = fields.get(setting.path) {
            if !setting.kind.accepts(value.get_ref()) {
                let path = format!("{prefix}.{}", setting.path);
                return Err(sources.bad_value(&path, &value.span(), setting.kind));
            }
        }
    }
    Ok(())
}

/// Checks a tier's windows: each field in range, limit × window in ms exact in a Lua
/// double (GCRA's arithmetic), and no window length twice (one TAT per length).
fn check_windows(
    windows: &[Spanned<DeValue<'_>>],
    path: &str,
    sources: &Sources<'_>,
) -> Result<(), ConfigError> {
    let mut seen = Vec::new();
    for (i, window) in windows.iter().enumerate() {
        let DeValue::Table(fields) = window.get_ref() else {
            continue; // serde reports what is not a table
        };
        let prefix = format!("{path}[{i}]");
        check_fields(fields, WINDOW_SETTINGS, &prefix, sources)?;
        let int = |name: &str| match fields.get(name).map(Spanned::get_ref) {
            Some(DeValue::Integer(v)) => u64::from_str_radix(v.as_str(), v.radix()).ok(),
            _ => None,
        };
        let (Some(limit), Some(secs)) = (int("limit"), int("window_secs")) else {
            continue; // serde reports the missing field
        };
        let max = RateLimit::max_limit(secs);
        if limit > max {
            let span = fields.get("limit").map(Spanned::span).unwrap_or_default();
            let kind = Kind::Int { min: 1, max };
            let mut err = sources.bad_value(&format!("{prefix}.limit"), &span, kind);
            if let ConfigError::Setting { problem, .. } = &mut err {
                problem.push_str(&format!(
                    " (for a {secs} s window: limit x window in ms stays within 2^53 - 1)"
                ));
            }
            return Err(err);
        }
        if seen.contains(&secs) {
            let span = fields
                .get("window_secs")
                .map(Spanned::span)
                .unwrap_or_default();
            return Err(ConfigError::Setting {
                setting: format!("{prefix}.window_secs"),
                origin: sources.origin(&span),
                problem: format!("a window of {secs} s is given twice in this tier"),
            });
        }
        seen.push(secs);
    }
    Ok(())
}
