//! The HTTP API of SPEC §4: accept loop, routing, handlers, errors.
//!
//! A request goes `run` (accept, hyper-util auto: HTTP/1.1 keep-alive and h2c) →
//! `routes::dispatch` (one `match (method, path)`, metrics) → a handler in
//! `handlers` (decode with `extract` → engine → encode with `headers`) →
//! an [`ApiError`] becomes its response in `error`, and nowhere else.

mod auth;
mod decode;
mod error;
mod extract;
mod handlers;
mod headers;
mod routes;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditReader;
use crate::engine::Engine;

pub use auth::AdminToken;
pub use error::ApiError;

/// Every response quotad sends.
pub type Response = hyper::Response<Full<Bytes>>;

/// What every handler shares.
pub struct AppState {
    /// Decisions and key administration; reached through [`AppState::engine`].
    engine: Engine,
    /// The admin bearer token.
    pub admin: AdminToken,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Renders `GET /metrics`.
    pub metrics: PrometheusHandle,
    /// Set once the engine has loaded its scripts and checked `quotad:meta`.
    started: AtomicBool,
    /// Reads the audit log; `None` (no writer on this node) answers 503 `audit_unavailable`.
    pub audit: Option<AuditReader>,
}

impl AppState {
    /// State without an audit reader; `started` says whether `engine.start()` succeeded.
    pub fn new(
        engine: Engine,
        admin: AdminToken,
        max_body_bytes: usize,
        metrics: PrometheusHandle,
        started: bool,
    ) -> Self {
        AppState {
            engine,
            admin,
            max_body_bytes,
            metrics,
            started: AtomicBool::new(started),
            audit: None,
        }
    }

    /// The engine, once started; before that every engine route fails closed (503).
    pub fn engine(&self) -> Result<&Engine, ApiError> {
        if self.is_started() {
            Ok(&self.engine)
        } else {
            Err(ApiError::BackendUnavailable)
        }
    }

    /// Whether the engine has started (scripts loaded, meta checked).
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Marks the engine started or not.
    pub fn set_started(&self, started: bool) {
        self.started.store(started, Ordering::Release);
    }
}

/// Serves HTTP on `listener` until `shutdown` is cancelled, then stops accepting and
/// lets in-flight requests finish for at most `grace`. Returns whether the drain
/// completed in time.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    grace: Duration,
) -> bool {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer lets hyper enforce its header read timeout (slow clients).
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(routes::dispatch(&state, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => true,
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "shutdown grace period ran out with requests in flight");
            false
        }
    }
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).expect("response bodies have string keys only");
    let mut response = hyper::Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A response without a body.
pub(crate) fn empty_response(status: StatusCode) -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
