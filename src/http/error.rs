//! `ApiError`: every way a request can fail, and the one place it becomes a response.

use hyper::header::{HeaderValue, ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::StatusCode;
use serde_json::json;

use super::{json_response, Response};
use crate::audit::AuditError;
use crate::engine::EngineError;
use crate::quota::InputError;

/// A request that ends in an error response (`{"error", "message"}`).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `bad_request`: malformed or out-of-range input; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// 400 `unknown_tier`: admin input names a tier the catalogue lacks.
    #[error("tier {0:?} is not in the tier catalogue")]
    UnknownTierInput(String),
    /// 401 `missing_api_key`: no API key in any of the accepted places.
    #[error("no API key: send Authorization: Bearer <key>, X-API-Key, or api_key")]
    MissingApiKey,
    /// 401 `unauthorized`: the admin token is missing or wrong.
    #[error("admin calls need Authorization: Bearer <admin token>")]
    Unauthorized,
    /// 403 `invalid_api_key`: unknown or inactive (deliberately not told apart).
    #[error("the API key is unknown or inactive")]
    InvalidApiKey,
    /// 404 `not_found`: unknown route or key id.
    #[error("not found")]
    NotFound,
    /// 405 `method_not_allowed`, with the methods the route takes.
    #[error("method not allowed; this route takes {0}")]
    MethodNotAllowed(&'static str),
    /// 408 `request_timeout`: the request body did not arrive within `http.body_timeout_secs`.
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(u64),
    /// 413 `payload_too_large`: the body is over `max_body_bytes`.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 422 `idempotency_key_reused`: same idempotency key, other cost or endpoint.
    #[error("the idempotency key was already used with a different cost or endpoint")]
    IdempotencyKeyReused,
    /// 500 `unknown_tier`: a stored key is on a tier missing from the catalogue.
    #[error("the key's tier {0:?} is not in this node's tier catalogue")]
    UnknownTierStored(String),
    /// 500 `internal`: a bug or broken invariant; the cause is logged, never sent.
    #[error("internal error")]
    Internal,
    /// 503 `backend_unavailable`: Redis cannot be asked; fail closed.
    #[error("the quota backend is unavailable; retry shortly")]
    BackendUnavailable,
    /// 503 `audit_backlog_full`: the shard's audit stream is full; fail closed.
    #[error("the audit backlog is full; retry shortly")]
    AuditBacklogFull,
    /// 503 `audit_unavailable`: this node has no audit reader.
    #[error("this node does not serve audit queries")]
    AuditUnavailable,
}

impl ApiError {
    /// The status and the stable error code of the body.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            UnknownTierInput(_) => (StatusCode::BAD_REQUEST, "unknown_tier"),
            MissingApiKey => (StatusCode::UNAUTHORIZED, "missing_api_key"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            InvalidApiKey => (StatusCode::FORBIDDEN, "invalid_api_key"),
            NotFound => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            UnknownTierStored(_) => (StatusCode::INTERNAL_SERVER_ERROR, "unknown_tier"),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            BackendUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable"),
            AuditBacklogFull => (StatusCode::SERVICE_UNAVAILABLE, "audit_backlog_full"),
            AuditUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
        }
    }

    /// The one place an error becomes a response.
    pub fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response =
            json_response(status, &json!({"error": code, "message": self.to_string()}));
        let headers = response.headers_mut();
        match &self {
            ApiError::MethodNotAllowed(allow) => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::MissingApiKey | ApiError::Unauthorized => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::BackendUnavailable | ApiError::AuditBacklogFull => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::InvalidKey => ApiError::InvalidApiKey,
            EngineError::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            // The engine logs this one where it finds it (with the key id).
            EngineError::UnknownTier(tier) => ApiError::UnknownTierStored(tier),
            EngineError::BacklogFull(_) => ApiError::AuditBacklogFull,
            EngineError::NotFound => ApiError::NotFound,
            EngineError::Input(e) => e.into(),
            EngineError::Store(e) if e.is_unavailable() => {
                // Counted in quotad_redis_errors_total; a flood of warnings would not help.
                tracing::debug!(error = %e, "redis unavailable; failing closed");
                ApiError::BackendUnavailable
            }
            other => {
                tracing::error!(error = %ErrorChain(&other), "internal error");
                ApiError::Internal
            }
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(err: AuditError) -> Self {
        match err {
            e if e.is_client_error() => ApiError::BadRequest(e.to_string()),
            AuditError::Unavailable(reason) => {
                tracing::warn!(%reason, "audit query on a node without an audit log");
                ApiError::AuditUnavailable
            }
            other => {
                tracing::error!(error = %ErrorChain(&other), "audit query failed");
                ApiError::Internal
            }
        }
    }
}

impl From<InputError> for ApiError {
    fn from(err: InputError) -> Self {
        ApiError::BadRequest(err.0)
    }
}

/// Shows an error with its whole source chain, `outer: inner: …`.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use std::time::Duration;

    #[test]
    fn engine_errors_map_to_the_spec_codes() {
        let cases: Vec<(EngineError, u16, &str)> = vec![
            (EngineError::InvalidKey, 403, "invalid_api_key"),
            (
                EngineError::IdempotencyKeyReused,
                422,
                "idempotency_key_reused",
            ),
            (EngineError::UnknownTier("x".into()), 500, "unknown_tier"),
            (EngineError::BacklogFull(3), 503, "audit_backlog_full"),
            (EngineError::NotFound, 404, "not_found"),
            (
                EngineError::Store(StoreError::Timeout(Duration::from_millis(1))),
                503,
                "backend_unavailable",
            ),
            (
                EngineError::Store(StoreError::Reply("bad".into())),
                500,
                "internal",
            ),
        ];
        for (err, status, code) in cases {
            let (s, c) = ApiError::from(err).status_and_code();
            assert_eq!((s.as_u16(), c), (status, code));
        }
    }

    #[test]
    fn internal_causes_are_never_sent() {
        let err = ApiError::from(EngineError::Store(StoreError::Reply("secret".into())));
        assert!(!err.to_string().contains("secret"));
    }
}
