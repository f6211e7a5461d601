//! Consume, quota and key administration in terms of the store. No HTTP types here.
//! Decisions live here; key administration in `admin`.

mod admin;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::metrics as m;
use crate::quota::{
    format_instant, ApiKey, Catalogue, ConsumeRequest, Decision, InputError, KeyId, Period,
};
use crate::store::{from_reply, keys, Scripts, Store, StoreError};
pub use admin::{Created, KeyUpdate, KeyView, NewKey};
use redis::ScriptInvocation;

/// Where the engine gets the current time; injectable so tests can cross month ends.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// How long a usage counter outlives its period, so late reads still see it.
const COUNTER_GRACE_MS: i64 = 35 * 86_400 * 1000;

/// What to do when a shard's audit stream is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BacklogPolicy {
    /// Fail admissions closed with `audit_backlog_full`.
    Reject,
    /// Keep admitting; trim the oldest entries and count them as lost.
    Trim,
}

/// Engine settings that shape every decision.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// S, the number of shards; fixed per deployment.
    pub shards: u32,
    /// How long an allowed decision is kept under its idempotency key.
    pub idempotency_ttl: Duration,
    /// Entries a shard's audit stream may hold before admissions stop (or trim).
    pub max_backlog: u64,
    /// What happens past `max_backlog`.
    pub on_backlog: BacklogPolicy,
    /// Whether denials also leave an audit record.
    pub include_denied: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            shards: 64,
            idempotency_ttl: Duration::from_secs(86_400),
            max_backlog: 1_000_000,
            on_backlog: BacklogPolicy::Reject,
            include_denied: false,
        }
    }
}

/// Why an engine call did not produce a decision.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The API key is unknown or inactive (deliberately not told apart).
    #[error("the API key is unknown or inactive")]
    InvalidKey,
    /// The idempotency key was used before with a different cost or endpoint.
    #[error("the idempotency key was already used with a different cost or endpoint")]
    IdempotencyKeyReused,
    /// The tier is not in this node's catalogue.
    #[error("tier {0:?} is not in the tier catalogue")]
    UnknownTier(String),
    /// The shard's audit stream holds `audit.max_backlog` entries.
    #[error("the audit backlog of shard {0} is full")]
    BacklogFull(u32),
    /// No key has this id.
    #[error("no key with this id")]
    NotFound,
    /// A field breaks a rule.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Redis records another shard count than this node's.
    #[error("redis records {recorded} shards but this node is configured with {configured}")]
    ShardMismatch {
        /// This node's `shards` setting.
        configured: u32,
        /// What `quotad:meta` holds.
        recorded: u32,
    },
    /// Redis trouble (503) or a bug in a script (500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `start` found in `quotad:meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaStatus {
    /// Whether another catalogue fingerprint is recorded than this node's.
    pub catalogue_mismatch: bool,
    /// Whether Redis persists (`appendonly yes`); `None` when it will not say.
    pub appendonly: Option<bool>,
}

/// The quota engine: every decision and key change goes through here.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    scripts: Arc<Scripts>,
    catalogue: Arc<Catalogue>,
    catalogue_args: Arc<Vec<String>>,
    settings: EngineSettings,
    clock: Clock,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Engine {
    /// An engine over `store`; call [`Engine::start`] before serving.
    pub fn new(store: Store, catalogue: Catalogue, settings: EngineSettings, clock: Clock) -> Self {
        Engine {
            store,
            scripts: Arc::new(Scripts::default()),
            catalogue_args: Arc::new(catalogue.script_args()),
            catalogue: Arc::new(catalogue),
            settings,
            clock,
        }
    }

    /// Checks `quotad:meta` and the script cache in one round trip, loading scripts
    /// that are missing (so a syntax error stops the boot): a different shard count is
    /// refused; a different catalogue is logged, counted and reported. Run at start and
    /// by every readiness check, so a Redis that lost its data gets its meta back.
    pub async fn start(&self) -> Result<MetaStatus, EngineError> {
        let fingerprint = self.catalogue.fingerprint();
        let meta = self
            .store
            .claim_meta(self.settings.shards, &fingerprint, &self.scripts)
            .await?;
        if meta.shards != self.settings.shards {
            return Err(EngineError::ShardMismatch {
                configured: self.settings.shards,
                recorded: meta.shards,
            });
        }
        if !meta.cached.iter().all(|&loaded| loaded) {
            self.store.load_scripts(&self.scripts).await?;
        }
        if let Some(appendonly) = meta.appendonly {
            metrics::gauge!(m::REDIS_APPENDONLY).set(if appendonly { 1.0 } else { 0.0 });
        }
        Ok(MetaStatus {
            catalogue_mismatch: self.note_catalogue(&meta.catalogue),
            appendonly: meta.appendonly,
        })
    }

    fn note_catalogue(&self, recorded: &str) -> bool {
        let mismatch = recorded != self.catalogue.fingerprint();
        if mismatch {
            tracing::error!(
                "this node's tier catalogue differs from the one recorded in redis; every node must run the same [tiers]"
            );
        }
        metrics::gauge!(m::TIER_CATALOGUE_MISMATCH).set(if mismatch { 1.0 } else { 0.0 });
        mismatch
    }

    /// The store, for components that share its connections.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The tier catalogue.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The engine settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The engine's current time.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Decides one request in one EVALSHA; allowed or denied is a `Decision`.
    pub async fn consume(
        &self,
        key: &ApiKey,
        req: &ConsumeRequest,
    ) -> Result<Decision, EngineError> {
        let result = self.consume_once(key, req).await;
        let (outcome, tier) = match &result {
            Ok(d) if d.replayed => ("replayed", d.tier.as_str()),
            Ok(d) if d.allowed => ("allowed", d.tier.as_str()),
            Ok(d) => ("denied", d.tier.as_str()),
            Err(EngineError::InvalidKey) => ("invalid_key", ""),
            Err(EngineError::IdempotencyKeyReused) => ("key_reused", ""),
            Err(_) => ("error", ""),
        };
        let tier = tier.to_owned();
        metrics::counter!(m::DECISIONS, "outcome" => outcome, "tier" => tier).increment(1);
        result
    }

    async fn consume_once(
        &self,
        key: &ApiKey,
        req: &ConsumeRequest,
    ) -> Result<Decision, EngineError> {
        let now = self.now();
        let id = key.id();
        let shard = id.shard(self.settings.shards);
        let inv = self.consume_invocation(&id, req, now);
        let reply: redis::Value = self.store.invoke(&inv).await?;
        let (status, tier, limit, used, entry_id, reset_ms, trimmed): (
            String,
            String,
            i64,
            u64,
            String,
            i64,
            u64,
        ) = from_reply(reply, "consume.lua reply")?;
        if trimmed > 0 {
            tracing::warn!(
                shard = shard.0,
                trimmed,
                "audit backlog full: trimmed unpersisted entries"
            );
            metrics::counter!(m::AUDIT_TRIMMED_UNPERSISTED).increment(trimmed);
        }
        let period = period_ending_at(reset_ms)?;
        let limit = u64::try_from(limit).ok();
        let mut decision = Decision::new(&id, tier, limit, used, period);
        match status.as_str() {
            "allowed" | "replayed" => {
                decision.replayed = status == "replayed";
                decision.audit_id = Some(format!("q{:03}-{entry_id}", shard.0));
                Ok(decision)
            }
            "denied" => {
                decision.allowed = false;
                Ok(decision)
            }
            "invalid_key" => Err(EngineError::InvalidKey),
            "key_reused" => Err(EngineError::IdempotencyKeyReused),
            "unknown_tier" => Err(self.unknown_tier(&id, decision.tier)),
            "backlog_full" => Err(EngineError::BacklogFull(shard.0)),
            other => Err(StoreError::Reply(format!("consume.lua status {other:?}")).into()),
        }
    }

    /// The exact EVALSHA one consume sends (keys and arguments of `lua/consume.lua`);
    /// public so benches can measure the raw script against the whole engine.
    pub fn consume_invocation(
        &self,
        id: &KeyId,
        req: &ConsumeRequest,
        now: DateTime<Utc>,
    ) -> ScriptInvocation<'_> {
        let shard = id.shard(self.settings.shards);
        let period = Period::containing(now);
        let now_ms = now.timestamp_millis();
        let reset_ms = period.reset_at().timestamp_millis();
        let idem = req.idempotency_key.as_deref().unwrap_or("");
        let mut inv = self.scripts.consume.prepare_invoke();
        inv.key(keys::record(shard, id))
            .key(keys::usage(shard, id, period))
            .key(keys::idempotency(shard, id, idem))
            .key(keys::audit_stream(shard))
            .arg(id.as_str())
            .arg(req.cost)
            .arg(now_ms)
            .arg(reset_ms - now_ms + COUNTER_GRACE_MS)
            .arg(reset_ms)
            .arg(idem)
            .arg(req.fingerprint())
            .arg(self.settings.idempotency_ttl.as_millis() as u64)
            .arg(self.settings.max_backlog)
            .arg(match self.settings.on_backlog {
                BacklogPolicy::Reject => "reject",
                BacklogPolicy::Trim => "trim",
            })
            .arg(if self.settings.include_denied {
                "1"
            } else {
                "0"
            })
            .arg(format_instant(now))
            .arg(&req.endpoint)
            .arg(req.extras.to_json())
            .arg(self.catalogue_args.as_slice());
        inv
    }

    fn unknown_tier(&self, id: &KeyId, tier: String) -> EngineError {
        tracing::error!(key_id = %id, tier = %tier, "key is on a tier missing from the catalogue");
        EngineError::UnknownTier(tier)
    }

    /// The key's current decision without consuming: `allowed` = something remains.
    pub async fn quota(&self, key: &ApiKey) -> Result<Decision, EngineError> {
        let id = key.id();
        let view = match self.usage_of(&id).await {
            Err(EngineError::NotFound) => return Err(EngineError::InvalidKey),
            other => other?,
        };
        if !view.record.active {
            return Err(EngineError::InvalidKey);
        }
        if !view.tier_known {
            // Never treated as unlimited (SPEC §1), as consumes are not.
            return Err(self.unknown_tier(&id, view.record.tier));
        }
        let period = Period::containing(self.now());
        let mut decision = Decision::new(&id, view.record.tier, view.limit, view.used, period);
        decision.allowed = view.remaining.is_none_or(|r| r > 0);
        Ok(decision)
    }

    fn tier_limit(&self, tier: &str) -> Result<Option<u64>, EngineError> {
        self.catalogue
            .get(tier)
            .map(|t| t.monthly_limit)
            .ok_or_else(|| EngineError::UnknownTier(tier.to_owned()))
    }
}

/// The period whose reset instant is `reset_ms`.
fn period_ending_at(reset_ms: i64) -> Result<Period, StoreError> {
    DateTime::from_timestamp_millis(reset_ms - 1)
        .map(Period::containing)
        .ok_or_else(|| StoreError::Reply(format!("bad reset instant {reset_ms}")))
}
