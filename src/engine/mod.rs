//! Consume, quota and key administration in terms of the store. No HTTP types here.
//! Decisions live here; key administration in `admin`.

mod admin;
mod batch;
mod usage;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::metrics as m;
use crate::quota::{
    ApiKey, Catalogue, ConsumeRequest, Decision, InputError, KeyId, Period, RateLimit, Tier,
    WindowState,
};
use crate::store::{Scripts, Store, StoreError};
pub use admin::{Created, KeyUpdate, KeyView, NewKey};

/// Where the engine gets the current time; injectable so tests can cross month ends.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

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
    /// The most decisions one EVALSHA carries (`batch.max_decisions`).
    pub max_batch: usize,
    /// UTC days of usage kept per key (`usage.history_days`).
    pub history_days: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            shards: 64,
            idempotency_ttl: Duration::from_secs(86_400),
            max_backlog: 1_000_000,
            on_backlog: BacklogPolicy::Reject,
            include_denied: false,
            max_batch: 256,
            history_days: 62,
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
    /// The batch task's queue, started by the first consume (inside the runtime).
    queue: Arc<OnceLock<batch::Queue>>,
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
            queue: Arc::new(OnceLock::new()),
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
            Ok(d) if d.rate_limited => ("rate_limited", d.tier.as_str()),
            Ok(d) => ("denied", d.tier.as_str()),
            Err(EngineError::InvalidKey) => ("invalid_key", ""),
            Err(EngineError::IdempotencyKeyReused) => ("key_reused", ""),
            Err(_) => ("error", ""),
        };
        let tier = tier.to_owned();
        if outcome == "rate_limited" {
            metrics::counter!(m::RATE_LIMITED, "tier" => tier.clone()).increment(1);
        }
        metrics::counter!(m::DECISIONS, "outcome" => outcome, "tier" => tier).increment(1);
        result
    }

    async fn consume_once(
        &self,
        key: &ApiKey,
        req: &ConsumeRequest,
    ) -> Result<Decision, EngineError> {
        let id = key.id();
        let shard = id.shard(self.settings.shards);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = batch::Job {
            id: id.clone(),
            req: req.clone(),
            reply,
        };
        self.queue().send(job).map_err(|_| queue_gone())?;
        // Waiting in the queue counts too: at most one batch ahead plus this one. A job
        // whose caller gave up is dropped before it is sent (see `batch::run`).
        let wait = self.store.timeout() * 2;
        let verdict = match tokio::time::timeout(wait, answer).await {
            Ok(answer) => answer.map_err(|_| queue_gone())??,
            Err(_) => return Err(StoreError::Timeout(wait).into()),
        };
        let period = period_ending_at(verdict.reset_ms)?;
        let limit = u64::try_from(verdict.limit).ok();
        let windows = self.window_states(&verdict.tier, &verdict.windows)?;
        let mut decision = Decision::new(&id, verdict.tier, limit, verdict.used, period);
        decision.set_windows(windows, verdict.status == "rate_limited");
        match verdict.status.as_str() {
            "allowed" | "replayed" => {
                decision.replayed = verdict.status == "replayed";
                decision.audit_id = Some(format!("q{:03}-{}", shard.0, verdict.audit_ref));
                Ok(decision)
            }
            "denied" | "rate_limited" => {
                decision.allowed = false;
                Ok(decision)
            }
            "invalid_key" => Err(EngineError::InvalidKey),
            "key_reused" => Err(EngineError::IdempotencyKeyReused),
            "unknown_tier" => Err(self.unknown_tier(&id, decision.tier)),
            "backlog_full" => Err(EngineError::BacklogFull(shard.0)),
            other => Err(StoreError::Reply(format!("consume_batch.lua status {other:?}")).into()),
        }
    }

    /// The batch task's queue; the task starts with the first consume.
    fn queue(&self) -> &batch::Queue {
        self.queue.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            // The task's engine has no queue of its own, so it does not keep the sender
            // alive: the task ends when the last engine handle is dropped.
            let mut worker = self.clone();
            worker.queue = Arc::new(OnceLock::new());
            batch::spawn(worker, rx);
            tx
        })
    }

    /// The windows of `tier` from the script's `(excess, den)` per window.
    fn window_states(
        &self,
        tier: &str,
        raw: &[(u64, u64)],
    ) -> Result<Vec<WindowState>, StoreError> {
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        let windows = self.catalogue.get(tier).map_or(&[][..], |t| &t.rate_limits);
        if windows.len() != raw.len() {
            return Err(StoreError::Reply(format!(
                "consume_batch.lua: {} windows for tier {tier:?}",
                raw.len()
            )));
        }
        Ok(windows
            .iter()
            .zip(raw)
            .map(|(w, &(excess, den))| w.state_of_excess(excess, den))
            .collect())
    }

    fn unknown_tier(&self, id: &KeyId, tier: String) -> EngineError {
        tracing::error!(key_id = %id, tier = %tier, "key is on a tier missing from the catalogue");
        EngineError::UnknownTier(tier)
    }

    /// The key's current decision without consuming, windows included: `allowed` = a
    /// request of cost 1 would pass now (something remains in the month and in every
    /// window).
    pub async fn quota(&self, key: &ApiKey) -> Result<Decision, EngineError> {
        let id = key.id();
        let now = self.now();
        let period = Period::containing(now);
        let read = self.record_fields(&id, period).await?;
        let view = match self.view(&id, period, &read) {
            Err(EngineError::NotFound) => return Err(EngineError::InvalidKey),
            other => other?,
        };
        if !view.record.active {
            return Err(EngineError::InvalidKey);
        }
        let Some(tier) = self.catalogue.get(&view.record.tier) else {
            // Never treated as unlimited (SPEC §1), as consumes are not.
            return Err(self.unknown_tier(&id, view.record.tier));
        };
        let windows = windows_at(tier, |field| read.get(field), now.timestamp_millis());
        let mut decision = Decision::new(&id, view.record.tier, view.limit, view.used, period);
        decision.allowed =
            view.remaining.is_none_or(|r| r > 0) && windows.iter().all(|w| w.remaining > 0);
        decision.set_windows(windows, false);
        Ok(decision)
    }

    fn tier_limit(&self, tier: &str) -> Result<Option<u64>, EngineError> {
        self.catalogue
            .get(tier)
            .map(|t| t.monthly_limit)
            .ok_or_else(|| EngineError::UnknownTier(tier.to_owned()))
    }
}

/// Every window of `tier` at `now_ms`, from the key record's `tat:<secs>` fields.
fn windows_at<'a>(
    tier: &Tier,
    field: impl Fn(&str) -> Option<&'a str>,
    now_ms: i64,
) -> Vec<WindowState> {
    tier.rate_limits
        .iter()
        .map(|w| w.state(field(&RateLimit::tat_field(w.window_secs)), now_ms))
        .collect()
}

/// The batch task is gone (the runtime is shutting down): no decision was made.
fn queue_gone() -> EngineError {
    StoreError::Reply("the batch task stopped".to_owned()).into()
}

/// The period whose reset instant is `reset_ms`.
fn period_ending_at(reset_ms: i64) -> Result<Period, StoreError> {
    DateTime::from_timestamp_millis(reset_ms - 1)
        .map(Period::containing)
        .ok_or_else(|| StoreError::Reply(format!("bad reset instant {reset_ms}")))
}
