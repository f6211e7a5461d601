//! Routing: one `match (method, path)`, and the per-request metrics.

use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Method, Request};

use super::handlers::{self, Handled};
use super::{ApiError, AppState, Response};
use crate::metrics as m;

/// Routes one request, answers errors, and counts it by bounded route name and status.
pub async fn dispatch(state: &AppState, req: Request<Incoming>) -> Response {
    let started = Instant::now();
    let (route, result) = route(state, req).await;
    let response = result.unwrap_or_else(ApiError::into_response);
    let status = response.status().as_u16().to_string();
    metrics::counter!(m::HTTP_REQUESTS, "route" => route, "status" => status).increment(1);
    if matches!(route, "consume" | "authorize" | "quota") {
        metrics::histogram!(m::DECISION_DURATION, "route" => route)
            .record(started.elapsed().as_secs_f64());
    }
    response
}

/// The route name (a metric label: never the raw path) and the handler's result.
async fn route(state: &AppState, req: Request<Incoming>) -> (&'static str, Handled) {
    use ApiError::MethodNotAllowed as NotAllowed;
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match (&method, segments.as_slice()) {
        (&Method::POST, ["v1", "consume"]) => ("consume", handlers::consume(state, req).await),
        (_, ["v1", "consume"]) => ("consume", Err(NotAllowed("POST"))),
        (&Method::GET, ["v1", "quota"]) => ("quota", handlers::quota(state, req).await),
        (_, ["v1", "quota"]) => ("quota", Err(NotAllowed("GET"))),
        (&Method::GET, ["v1", "usage"]) => ("usage", handlers::usage(state, req).await),
        (_, ["v1", "usage"]) => ("usage", Err(NotAllowed("GET"))),
        (_, ["v1", "authorize", ..]) => {
            let suffix = path["/v1/authorize".len()..].to_owned();
            ("authorize", handlers::authorize(state, req, suffix).await)
        }
        (&Method::POST, ["v1", "keys"]) => ("keys", handlers::create_key(state, req).await),
        (_, ["v1", "keys"]) => ("keys", Err(NotAllowed("POST"))),
        (&Method::GET, ["v1", "keys", id]) => ("key", handlers::get_key(state, req, id).await),
        (&Method::PATCH, ["v1", "keys", id]) => ("key", handlers::patch_key(state, req, id).await),
        (&Method::DELETE, ["v1", "keys", id]) => {
            ("key", handlers::delete_key(state, req, id).await)
        }
        (_, ["v1", "keys", _]) => ("key", Err(NotAllowed("GET, PATCH, DELETE"))),
        (&Method::GET, ["v1", "keys", id, "audit"]) => {
            ("key_audit", handlers::key_audit(state, req, id).await)
        }
        (_, ["v1", "keys", _, "audit"]) => ("key_audit", Err(NotAllowed("GET"))),
        (&Method::GET, ["v1", "keys", id, "usage"]) => {
            ("key_usage", handlers::key_usage(state, req, id).await)
        }
        (_, ["v1", "keys", _, "usage"]) => ("key_usage", Err(NotAllowed("GET"))),
        (&Method::GET | &Method::HEAD, ["metrics"]) => ("metrics", handlers::metrics(state)),
        (_, ["metrics"]) => ("metrics", Err(NotAllowed("GET, HEAD"))),
        (&Method::GET | &Method::HEAD, ["healthz"]) => ("healthz", handlers::healthz()),
        (_, ["healthz"]) => ("healthz", Err(NotAllowed("GET, HEAD"))),
        (&Method::GET | &Method::HEAD, ["readyz"]) => ("readyz", handlers::readyz(state).await),
        (_, ["readyz"]) => ("readyz", Err(NotAllowed("GET, HEAD"))),
        _ => ("not_found", Err(ApiError::NotFound)),
    }
}
