//! Wires the store, the engine and the HTTP server, with one shutdown path: a signal
//! cancels a token, the server stops accepting, and the HTTP drain and the audit
//! writer's last batch share one deadline, the grace period from the signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, AuditError, AuditReader, AuditWriter};
use crate::config::Config;
use crate::engine::{system_clock, Engine, EngineError, MetaStatus};
use crate::http::{self, AdminToken, AppState};
use crate::metrics as m;
use crate::quota::Catalogue;
use crate::store::StoreError;

/// How often a node that started without Redis retries the engine start.
const START_RETRY: Duration = Duration::from_secs(1);

/// Why `serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No admin token is configured and the listener is not on loopback.
    #[error(
        "no admin token: set admin_token, QUOTAD_ADMIN_TOKEN or QUOTAD_ADMIN_TOKEN_FILE to \
         listen on {0} (a token is generated only on loopback addresses)"
    )]
    AdminTokenRequired(SocketAddr),
    /// The Redis settings are unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine refused to start (e.g. another shard count is recorded in Redis).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// The admin token for a listener on `listen`: the configured one, or on loopback a
/// generated one, returned with its plaintext so the caller can show it once.
pub fn admin_token(
    configured: Option<&str>,
    listen: SocketAddr,
) -> Result<(AdminToken, Option<String>), AppError> {
    match configured {
        Some(token) => Ok((AdminToken::new(token), None)),
        None if listen.ip().is_loopback() => {
            let (token, plain) = AdminToken::generate();
            Ok((token, Some(plain)))
        }
        None => Err(AppError::AdminTokenRequired(listen)),
    }
}

/// Installs the global Prometheus recorder, with explicit buckets for every latency
/// histogram, and describes every metric (with `catalogue`'s tiers as known label
/// values). Once per process.
pub fn install_metrics(catalogue: &Catalogue) -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(m::DECISION_DURATION.to_owned()),
            m::LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(m::AUDIT_BATCH_DURATION.to_owned()),
            m::LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full(m::BATCH_SIZE.to_owned()), m::BATCH_BUCKETS)?
        .install_recorder()?;
    m::describe(catalogue.iter().map(|(name, _)| name));
    Ok(handle)
}

/// Runs the recorder's upkeep (histogram maintenance) every few seconds until `shutdown`.
pub async fn metrics_upkeep(handle: PrometheusHandle, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
        _ = shutdown.cancelled() => return,
    }
    tracing::info!("shutting down: draining in-flight requests");
    shutdown.cancel();
}

/// Serves `config` on `listener` until `shutdown` is cancelled, then drains.
///
/// Redis being down at start does not stop the node: it answers 503 (fail closed)
/// and retries the engine start until Redis is back.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    admin: AdminToken,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let store = config.store()?;
    let engine = Engine::new(
        store,
        config.catalogue(),
        config.engine_settings(),
        system_clock(),
    );
    let started = match engine.start().await {
        Ok(meta) => {
            warn_unless_persistent(&meta);
            true
        }
        Err(EngineError::Store(e)) if e.is_unavailable() => {
            tracing::warn!(error = %e, "redis unavailable at start; answering 503 and retrying");
            false
        }
        Err(e) => return Err(e.into()),
    };
    // The writer gets its own token: it stops after the HTTP drain, so it commits and
    // acknowledges what the last requests recorded.
    let audit_token = CancellationToken::new();
    let (writer, reader) = start_audit(config, &engine, audit_token.clone()).await?;
    let mut state = AppState::new(
        engine.clone(),
        admin,
        config.max_body_bytes,
        metrics,
        started,
    );
    state.audit = reader;
    state.limits = http::HttpLimits {
        header_timeout: config.http.header_timeout(),
        body_timeout: config.http.body_timeout(),
        max_connections: config.http.max_connections,
    };
    let state = Arc::new(state);
    let starter =
        (!started).then(|| tokio::spawn(start_engine(engine, state.clone(), shutdown.clone())));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "quotad listening");
    }
    let open = http::accept(listener, state, shutdown.clone()).await;
    // One deadline, set at the signal, for the HTTP drain and the writer together: an
    // orchestrator kills after its own grace period, not after ours twice.
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let deadline = tokio::time::Instant::now() + grace;
    if open.drain(deadline).await {
        tracing::info!("HTTP drained");
    }
    shutdown.cancel();
    audit_token.cancel();
    if let Some(writer) = writer {
        match tokio::time::timeout_at(deadline, writer.join()).await {
            Ok(Ok(())) => tracing::info!("audit writer stopped; its batch is committed"),
            Ok(Err(e)) => tracing::error!(error = %e, "audit writer failed"),
            // Nothing is lost: what it did not acknowledge stays pending for the next start.
            Err(_) => tracing::warn!(
                ?grace,
                "shutdown grace period ran out before the audit writer stopped"
            ),
        }
    }
    match starter {
        None => Ok(()),
        Some(task) => task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "engine start task failed");
            Ok(())
        }),
    }
}

/// Starts the audit writer and opens the reader when `audit.writer` is on; a node
/// without a writer answers audit queries with 503 rather than from an empty file.
async fn start_audit(
    config: &Config,
    engine: &Engine,
    token: CancellationToken,
) -> Result<(Option<AuditWriter>, Option<AuditReader>), AppError> {
    if !config.audit.writer {
        return Ok((None, None));
    }
    let writer = audit::spawn_writer(
        engine.store(),
        config.shards,
        config.catalogue(),
        &config.audit,
        token,
    )
    .await?;
    let reader = AuditReader::open(&config.audit.db_path)?;
    Ok((Some(writer), Some(reader)))
}

/// The audit promise rests on a Redis that persists: say so at start when it does not.
fn warn_unless_persistent(meta: &MetaStatus) {
    match meta.appendonly {
        Some(true) => {}
        Some(false) => tracing::warn!(
            "redis runs without appendonly: admitted requests may lose their audit records \
             if redis restarts; set `appendonly yes`"
        ),
        None => tracing::warn!(
            "redis does not say whether it persists (CONFIG GET appendonly refused); \
             the audit promise needs appendonly yes"
        ),
    }
}

/// Retries the engine start while Redis is unavailable; a fatal refusal (shard
/// mismatch, script error) stops the server.
async fn start_engine(
    engine: Engine,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(START_RETRY) => {},
            _ = shutdown.cancelled() => return Ok(()),
        }
        match engine.start().await {
            Ok(meta) => {
                warn_unless_persistent(&meta);
                state.set_started(true);
                tracing::info!("engine started: scripts loaded, meta checked");
                return Ok(());
            }
            Err(EngineError::Store(e)) if e.is_unavailable() => {
                tracing::debug!(error = %e, "redis still unavailable");
            }
            Err(e) => {
                tracing::error!(error = %e, "the engine cannot start");
                shutdown.cancel();
                return Err(e.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_generated_on_loopback_only() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let v6: SocketAddr = "[::1]:8080".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(admin_token(None, loopback).unwrap().1.is_some());
        assert!(admin_token(None, v6).unwrap().1.is_some());
        assert!(matches!(
            admin_token(None, public),
            Err(AppError::AdminTokenRequired(_))
        ));
        assert!(admin_token(Some("t"), public).unwrap().1.is_none());
    }
}
