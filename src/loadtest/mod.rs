//! `quotad bench`: a load tester for any running quotad, over plain HTTP/1.1.
//!
//! [`run`] opens a fixed number of keep-alive connections (one task each), sends
//! `POST /v1/consume` on them for a fixed duration, and returns a [`Report`]: an HDR
//! latency histogram (p50, p90, p99, p99.9, max), totals per second and counts by
//! outcome. Keys come from a file or are created through `POST /v1/keys` (and
//! deactivated again at the end; their usage and audit records stay).
//!
//! Closed loop (the default): each connection sends its next request as soon as the
//! previous one is answered. Open loop (`rate`): request *i* of the run is scheduled
//! at `start + i / rate`, spread round-robin over the connections, and its latency
//! is measured from that scheduled instant, so a slow answer that delays the next
//! request shows up as queueing instead of being hidden (coordinated omission).
//! Slots still due when the run ends are counted as `unsent`.
//!
//! # The JSON report (`--json`)
//!
//! One object, nothing else on stdout:
//!
//! - `url`, `endpoint`, `cost`, `replay_share`, `connections`: the load as asked.
//! - `mode`: `"closed"` or `"open"`; `rate`: the asked decisions/s, or null.
//! - `duration_secs`: as asked; `elapsed_secs`: measured, until the last answer.
//! - `keys`: how many API keys were used; `created_key_ids`: the `key_id`s of the
//!   keys the run created (empty with `--keys`), to look up their usage afterwards.
//! - `total`: requests finished, the sum of `outcomes`; `total_per_sec`.
//! - `decisions`: requests quotad decided (allowed, replayed, quota_exceeded,
//!   rate_limited); `decisions_per_sec`.
//! - `outcomes`: `allowed` (200), `replayed` (200 with `Idempotent-Replayed`),
//!   `quota_exceeded` and `rate_limited` (429, by error code), `invalid_key` (403),
//!   `unavailable` (503), `other_error` (any other status), `transport_error`
//!   (connect, I/O or a request over its 10 s timeout).
//! - `other_statuses`: `other_error` by status code, e.g. `{"400": 3}`.
//! - `unsent`: open-loop slots that came due but were never sent (0 closed loop).
//! - `latency_ms`: `count`, `mean`, `p50`, `p90`, `p99`, `p99_9`, `max` over every
//!   request that got an HTTP answer, in milliseconds (µs resolution).
//! - `first_transport_error`: the first transport error's message, or null.
//! - `stopped_early`: true when the run was interrupted (Ctrl-C).
//! - `warnings`: problems that did not spoil the figures (e.g. a key not deactivated).

mod admin;
mod args;
mod cli;
mod conn;
mod report;
mod stats;
mod worker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use args::{BenchArgs, Secret};
pub use cli::main;
pub use conn::TransportError;
pub use report::{Latency, Mode, Report};
pub use stats::Outcomes;

use crate::quota::ApiKey;
use conn::{Conn, Target};
use stats::Stats;

/// The most connections a run opens (quotad's own default `http.max_connections`).
const MAX_CONNECTIONS: usize = 10_000;
/// The most keys a run creates.
const MAX_CREATED_KEYS: usize = 100_000;
/// The longest run: 30 days (bounds every instant the schedule computes).
const MAX_DURATION: Duration = Duration::from_secs(30 * 86_400);
/// The lowest open-loop rate, decisions/s (bounds the gap between two slots).
const MIN_RATE: f64 = 0.01;
/// The largest cost quotad accepts (SPEC §4).
const MAX_COST: u64 = 1_000_000;

/// Where the API keys of a run come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Keys the caller already has (e.g. read from `--keys FILE`).
    Given(Vec<ApiKey>),
    /// Keys the run creates through `POST /v1/keys` and deactivates at the end.
    Create {
        /// How many keys.
        count: usize,
        /// Their tier (`enterprise` is unlimited, so quotas do not cut the run short).
        tier: String,
        /// The admin token (required); never printed.
        admin_token: Option<Secret>,
    },
}

/// How the run shows progress on stderr, once a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// No progress output.
    Off,
    /// One plain line a second (stderr is a pipe or a file).
    Lines,
    /// One line rewritten in place with `\r` (stderr is a terminal).
    Overwrite,
}

/// What to load and how; [`run`] validates it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of quotad, `http://host:port[/prefix]`.
    pub url: String,
    /// The API keys to consume with.
    pub keys: KeySource,
    /// Keep-alive connections, one task each.
    pub connections: usize,
    /// How long requests are sent.
    pub duration: Duration,
    /// The cost of every consume.
    pub cost: u64,
    /// Share (0.0–1.0) of requests that reuse an earlier idempotency key (replays).
    pub replay_share: f64,
    /// The `endpoint` field of every consume.
    pub endpoint: String,
    /// Decisions/s in total (open loop); `None` is closed loop.
    pub rate: Option<f64>,
    /// Progress output on stderr.
    pub progress: Progress,
    /// Cancelling it ends the run early (after in-flight requests); the report says so.
    pub stop: CancellationToken,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A flag or option is out of range or malformed (exit 64).
    #[error("{0}")]
    Usage(String),
    /// quotad cannot be reached at the URL.
    #[error("cannot reach quotad at {url}: {source}")]
    Unreachable {
        /// The URL as given.
        url: String,
        /// What went wrong.
        source: TransportError,
    },
    /// The URL answers, but not like a quotad.
    #[error("{url} does not look like quotad: GET /healthz answered {status}")]
    NotQuotad {
        /// The URL as given.
        url: String,
        /// The status of `/healthz`.
        status: u16,
    },
    /// quotad refused the admin token.
    #[error("quotad refused the admin token (401); pass the deployment's --admin-token or QUOTAD_ADMIN_TOKEN")]
    AdminRefused,
    /// An admin call (creating or deactivating keys) was refused.
    #[error("{call} answered {status}: {message}")]
    Admin {
        /// The call, e.g. `POST /v1/keys`.
        call: &'static str,
        /// Its status.
        status: u16,
        /// The `message` of the error body, or the body.
        message: String,
    },
    /// An admin call (creating or deactivating keys) got no answer.
    #[error("admin request failed: {0}")]
    Transport(#[from] TransportError),
    /// A worker task panicked (a bug).
    #[error("a load task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl LoadError {
    /// The process exit code: 64 (EX_USAGE) for usage errors, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadError::Usage(_) => 64,
            _ => 1,
        }
    }
}

impl Options {
    /// Checks every range and parses the URL.
    fn validate(&self) -> Result<Target, LoadError> {
        let usage = |msg: &str| Err(LoadError::Usage(msg.to_owned()));
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return usage("--connections must be between 1 and 10000");
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return usage("--duration must be between 1 and 2592000 seconds (30 days)");
        }
        if !(1..=MAX_COST).contains(&self.cost) {
            return usage("--cost must be between 1 and 1000000");
        }
        if !(0.0..=1.0).contains(&self.replay_share) {
            return usage("--replay-share must be between 0.0 and 1.0");
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r >= MIN_RATE)) {
            return usage("--rate must be at least 0.01 decisions per second");
        }
        match &self.keys {
            KeySource::Given(keys) if keys.is_empty() => return usage("the key file has no keys"),
            KeySource::Create { count, .. } if !(1..=MAX_CREATED_KEYS).contains(count) => {
                return usage("--create-keys must be between 1 and 100000");
            }
            _ => {}
        }
        Target::parse(&self.url)
    }
}

/// Runs the load described by `options` and reports what quotad answered.
pub async fn run(options: Options) -> Result<Report, LoadError> {
    let target = Arc::new(options.validate()?);
    let (given, to_create) = match &options.keys {
        KeySource::Given(keys) => (keys.clone(), None),
        KeySource::Create {
            count,
            tier,
            admin_token,
        } => {
            let token = admin_token.as_ref().ok_or_else(missing_token)?;
            (Vec::new(), Some((*count, tier.as_str(), token)))
        }
    };
    admin::probe(&target).await?;
    let keys = match to_create {
        Some((count, tier, token)) => admin::create_keys(&target, count, tier, token).await?,
        None => given,
    };
    let admin_token = to_create.map(|(_, _, token)| token);
    let conns = open_connections(&target, options.connections).await?;
    let (stats, elapsed) = drive(&options, &target, &keys, conns).await?;
    let mut warnings = Vec::new();
    let mut created_key_ids = Vec::new();
    if let Some(token) = admin_token {
        created_key_ids = keys.iter().map(|k| k.id().as_str().to_owned()).collect();
        if let Err(e) = admin::deactivate_keys(&target, &created_key_ids, token).await {
            warnings.push(format!("the bench keys were not all deactivated: {e}"));
        }
    }
    Ok(Report::new(
        &options,
        keys.len(),
        created_key_ids,
        &stats,
        elapsed,
        warnings,
    ))
}

/// Opens every connection before the clock starts, so set-up is not measured.
async fn open_connections(target: &Target, n: usize) -> Result<Vec<Conn>, LoadError> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let conn = Conn::open(target)
            .await
            .map_err(|source| LoadError::Unreachable {
                url: target.display.clone(),
                source,
            })?;
        conns.push(conn);
    }
    Ok(conns)
}

fn missing_token() -> LoadError {
    LoadError::Usage(
        "creating bench keys needs --admin-token or QUOTAD_ADMIN_TOKEN; \
         or pass your own keys with --keys FILE"
            .into(),
    )
}

/// Runs one worker per connection until the deadline, printing progress; returns
/// the merged statistics and the elapsed time until the last answer.
async fn drive(
    options: &Options,
    target: &Arc<Target>,
    keys: &[ApiKey],
    conns: Vec<Conn>,
) -> Result<(Stats, Duration), LoadError> {
    let start = Instant::now();
    let plan = Arc::new(worker::Plan::new(options, target.clone(), keys, start));
    let shards: Vec<Arc<Mutex<Stats>>> = (0..conns.len())
        .map(|_| Arc::new(Mutex::new(Stats::default())))
        .collect();
    let mut tasks = JoinSet::new();
    for (id, conn) in conns.into_iter().enumerate() {
        tasks.spawn(worker::work(id, conn, plan.clone(), shards[id].clone()));
    }
    let mut ticker = report::Ticker::new(options.progress, start);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(result) => result?,
                None => break,
            },
            () = ticker.tick() => ticker.show(&Stats::merged(&shards)),
        }
    }
    let elapsed = start.elapsed();
    ticker.finish();
    Ok((Stats::merged(&shards), elapsed))
}
