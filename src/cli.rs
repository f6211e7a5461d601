//! The admin subcommands that talk to Redis directly (`quotad keys …`).

use clap::Subcommand;
use serde_json::json;

use crate::engine::{Engine, EngineError, KeyUpdate, NewKey};
use crate::quota::{ApiKey, KeyId, Period, MAX_EXACT_INT};

/// `quotad keys …`: manage keys without the HTTP admin token.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key (generated unless --key is given) and print it once.
    Create {
        /// The tier, from the catalogue.
        #[arg(long)]
        tier: String,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
        /// Use this key instead of generating one (16-256 characters in 0x21-0x7E).
        #[arg(long)]
        key: Option<String>,
        /// A per-key monthly limit that replaces the tier's (at most 2^53 - 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(..=MAX_EXACT_INT))]
        monthly_limit: Option<u64>,
    },
    /// Show a key's record and current usage.
    Show {
        /// The key's id (32 hex characters).
        key_id: String,
    },
    /// Show a key's usage day by day and its forecast for a period.
    Usage {
        /// The key's id (32 hex characters).
        key_id: String,
        /// The period, YYYY-MM; default the current one (UTC).
        #[arg(long)]
        period: Option<String>,
    },
    /// Move a key to another tier.
    SetTier {
        /// The key's id.
        key_id: String,
        /// The new tier.
        tier: String,
    },
    /// Stop a key from consuming.
    Deactivate {
        /// The key's id.
        key_id: String,
    },
    /// Let a deactivated key consume again.
    Activate {
        /// The key's id.
        key_id: String,
    },
}

/// Why a CLI command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An argument is malformed.
    #[error("{0}")]
    Usage(String),
    /// The engine refused or Redis failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Runs one `keys` subcommand and returns the JSON to print.
pub async fn run_keys(engine: &Engine, cmd: KeysCommand) -> Result<serde_json::Value, CliError> {
    run(engine, cmd).await.map_err(|e| match e {
        // A tier named on the command line is an argument like any other.
        CliError::Engine(EngineError::UnknownTier(tier)) => {
            CliError::Usage(unknown_tier(engine, &tier))
        }
        e => e,
    })
}

fn unknown_tier(engine: &Engine, tier: &str) -> String {
    let known: Vec<&str> = engine.catalogue().iter().map(|(name, _)| name).collect();
    format!(
        "unknown tier {tier:?}; the catalogue has {}",
        known.join(", ")
    )
}

async fn run(engine: &Engine, cmd: KeysCommand) -> Result<serde_json::Value, CliError> {
    let update = |key_id: &str, update: KeyUpdate| {
        let engine = engine.clone();
        let id = parse_id(key_id);
        async move { Ok(json!(engine.update_key(&id?, update).await?)) }
    };
    match cmd {
        KeysCommand::Create {
            tier,
            name,
            key,
            monthly_limit,
        } => {
            let key = match key {
                Some(k) => Some(ApiKey::parse(&k).ok_or_else(|| {
                    CliError::Usage("--key must be 16-256 characters in 0x21-0x7E".into())
                })?),
                None => None,
            };
            let created = engine
                .create_key(NewKey {
                    tier,
                    key,
                    name,
                    monthly_limit,
                })
                .await?;
            let mut out = json!(created.record);
            if let Some(key) = created.key {
                out["key"] = json!(key.expose());
            }
            Ok(out)
        }
        KeysCommand::Show { key_id } => Ok(json!(engine.key(&parse_id(&key_id)?).await?)),
        KeysCommand::Usage { key_id, period } => {
            let period = match period {
                Some(p) => Some(Period::parse(&p).ok_or_else(|| {
                    CliError::Usage("--period must be YYYY-MM, e.g. 2026-11".into())
                })?),
                None => None,
            };
            Ok(json!(engine.usage(&parse_id(&key_id)?, period).await?))
        }
        KeysCommand::SetTier { key_id, tier } => {
            update(
                &key_id,
                KeyUpdate {
                    tier: Some(tier),
                    ..Default::default()
                },
            )
            .await
        }
        KeysCommand::Deactivate { key_id } => {
            update(
                &key_id,
                KeyUpdate {
                    active: Some(false),
                    ..Default::default()
                },
            )
            .await
        }
        KeysCommand::Activate { key_id } => {
            update(
                &key_id,
                KeyUpdate {
                    active: Some(true),
                    ..Default::default()
                },
            )
            .await
        }
    }
}

fn parse_id(s: &str) -> Result<KeyId, CliError> {
    KeyId::parse(s)
        .ok_or_else(|| CliError::Usage("KEY_ID must be 32 lowercase hex characters".into()))
}
