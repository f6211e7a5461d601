//! The HTTP API of SPEC §4: accept loop, routing, handlers, errors.
//!
//! A request goes `accept` (a slot under `max_connections`, hyper-util auto: HTTP/1.1
//! keep-alive and h2c, each connection bounded by [`HttpLimits`]) →
//! `routes::dispatch` (one `match (method, path)`, metrics) → a handler in
//! `handlers` (decode with `extract` → engine → encode with `headers`) →
//! an [`ApiError`] becomes its response in `error`, and nowhere else.

mod auth;
mod conn;
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
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditReader;
use crate::engine::Engine;
use crate::metrics as m;

pub use auth::AdminToken;
pub use error::ApiError;

/// Every response quotad sends.
pub type Response = hyper::Response<Full<Bytes>>;

/// What one connection may hold on to (SPEC §5, `http.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// From accept, or from the end of the previous response, to the end of the
    /// request headers, protocol sniffing included.
    pub header_timeout: Duration,
    /// Reading one request body.
    pub body_timeout: Duration,
    /// Open connections; past it new ones are refused at once.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

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
    /// Timeouts and the connection cap of the listener.
    pub limits: HttpLimits,
}

impl AppState {
    /// State without an audit reader and with default limits; `started` says whether
    /// `engine.start()` succeeded.
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
            limits: HttpLimits::default(),
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
    let open = accept(listener, state, shutdown).await;
    open.drain(Instant::now() + grace).await
}

/// Serves HTTP on `listener` until `shutdown` is cancelled, then stops accepting and
/// returns the connections still open, each already asked to finish and close.
pub async fn accept(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> Draining {
    let limits = state.limits;
    let builder = conn::builder(&limits);
    let slots =
        u32::try_from(limits.max_connections.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(slots as usize));
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
        // Refused at once rather than queued: a connection waiting for a slot would
        // hold on to exactly what the cap protects.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!(m::HTTP_CONNECTIONS_REFUSED).increment(1);
            tracing::debug!("connection refused: max_connections are open");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let in_flight = Arc::new(conn::InFlight::default());
        let service = {
            let (state, in_flight) = (state.clone(), in_flight.clone());
            hyper::service::service_fn(move |req| {
                // Counted from the end of the headers, when hyper calls the service.
                let (state, handling) = (state.clone(), in_flight.start());
                async move {
                    let response = routes::dispatch(&state, req).await;
                    drop(handling);
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(conn::drive(
            connection,
            in_flight,
            limits.header_timeout,
            shutdown.clone(),
            permit,
        ));
    }
    drop(listener);
    Draining { permits, slots }
}

/// The connections still open after the listener stopped accepting.
#[must_use = "the open connections are only waited for by `drain`"]
pub struct Draining {
    /// One permit per connection slot; an open connection holds one.
    permits: Arc<Semaphore>,
    /// All the permits there are.
    slots: u32,
}

impl Draining {
    /// Waits until every connection has closed or `deadline` has passed; whether all
    /// closed in time.
    pub async fn drain(self, deadline: Instant) -> bool {
        // Every permit back means every connection task has ended.
        let all_closed = self.permits.acquire_many(self.slots);
        match tokio::time::timeout_at(deadline, all_closed).await {
            Ok(_) => true,
            Err(_) => {
                let open = self.slots as usize - self.permits.available_permits();
                tracing::warn!(open, "shutdown grace period ran out with connections open");
                false
            }
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
