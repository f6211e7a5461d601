//! One function per route: decode → engine → encode.

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use serde_json::json;

use super::extract::{self, JsonObject};
use super::headers::{decision_response, Answer};
use super::{decode, empty_response, json_response, ApiError, AppState, Response};
use crate::engine::{EngineError, KeyUpdate};
use crate::quota::{AuditExtras, ConsumeRequest, KeyId};

/// The result every handler returns; errors become responses in `ApiError`.
pub type Handled = Result<Response, ApiError>;

/// `POST /v1/consume`.
pub async fn consume(state: &AppState, req: Request<Incoming>) -> Handled {
    let engine = state.engine()?;
    let (parts, body) = req.into_parts();
    let body = read_json(state, &parts.headers, body).await?;
    let key = extract::api_key(&parts.headers, Some(&body), parts.uri.query())?;
    let request = decode::consume_request(&body, &parts.headers)?;
    let decision = engine.consume(&key, &request).await?;
    Ok(decision_response(&decision, engine.now(), Answer::CONSUME))
}

/// `GET /v1/quota`: the full decision, consuming nothing.
pub async fn quota(state: &AppState, req: Request<Incoming>) -> Handled {
    let engine = state.engine()?;
    let key = extract::api_key(req.headers(), None, req.uri().query())?;
    let decision = engine.quota(&key).await?;
    Ok(decision_response(&decision, engine.now(), Answer::QUOTA))
}

/// `GET /v1/usage`: the presented key's own usage in `?period=` (default the current
/// one). Never another key's data: a `?key_id=` naming another key is 404, as if it
/// did not exist.
pub async fn usage(state: &AppState, req: Request<Incoming>) -> Handled {
    let engine = state.engine()?;
    let query = req.uri().query();
    let key = extract::api_key(req.headers(), None, query)?;
    let period = decode::usage_period(query)?;
    let usage = engine.key_usage(&key, period).await?;
    if extract::query_param(query, "key_id").is_some_and(|id| id != usage.key_id) {
        return Err(ApiError::NotFound);
    }
    Ok(json_response(StatusCode::OK, &usage))
}

/// Any method on `/v1/authorize` and `/v1/authorize/*`: forward-auth for proxies.
/// `suffix` is the path after `/v1/authorize`.
///
/// Everything the end user controls is untrusted here (proxies may forward the
/// client's headers and body): the body is never read, and `Idempotency-Key` counts
/// only when the operator's auth URL opts in with `idempotency=header`.
pub async fn authorize(state: &AppState, req: Request<Incoming>, suffix: String) -> Handled {
    let engine = state.engine()?;
    let (parts, _untrusted_body) = req.into_parts();
    let options = decode::authorize_options(&suffix, parts.uri.query())?;
    let key = extract::api_key(&parts.headers, None, None)?;
    let original = ["x-original-uri", "x-forwarded-uri"]
        .iter()
        .find_map(|name| parts.headers.get(*name))
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let endpoint = match original {
        Some(uri) => extract::path_only(&uri).to_owned(),
        None if suffix.is_empty() => "/".to_owned(),
        None => suffix,
    };
    let idempotency_key = match options.idempotency_header {
        true => extract::idempotency_header(&parts.headers)?,
        false => None,
    };
    let request = ConsumeRequest::new(
        options.cost,
        endpoint,
        idempotency_key,
        AuditExtras::default(),
    )?;
    let decision = engine.consume(&key, &request).await?;
    Ok(decision_response(
        &decision,
        engine.now(),
        Answer::authorize(options.deny_status),
    ))
}

/// `POST /v1/keys`: get-or-create; 201 with the key once, 200 without it when it existed.
pub async fn create_key(state: &AppState, req: Request<Incoming>) -> Handled {
    // The token first: an unauthenticated caller learns nothing, not even readiness.
    state.admin.require(req.headers())?;
    let engine = state.engine()?;
    let (parts, body) = req.into_parts();
    let body = read_json(state, &parts.headers, body).await?;
    let new = decode::new_key(&body, engine.catalogue())?;
    let created = engine.create_key(new).await?;
    let mut out = json!(created.record);
    let status = match created.key {
        Some(key) => {
            out["key"] = json!(key.expose());
            StatusCode::CREATED
        }
        None => StatusCode::OK,
    };
    Ok(json_response(status, &out))
}

/// `GET /v1/keys/{key_id}`: the record plus current-period usage.
pub async fn get_key(state: &AppState, req: Request<Incoming>, id: &str) -> Handled {
    state.admin.require(req.headers())?;
    let engine = state.engine()?;
    let view = engine.key(&key_id(id)?).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `PATCH /v1/keys/{key_id}`: changes an existing key; never creates one.
pub async fn patch_key(state: &AppState, req: Request<Incoming>, id: &str) -> Handled {
    state.admin.require(req.headers())?;
    let engine = state.engine()?;
    let id = key_id(id)?;
    let (parts, body) = req.into_parts();
    let body = read_json(state, &parts.headers, body).await?;
    let update = decode::key_update(&body, engine.catalogue())?;
    let record = engine.update_key(&id, update).await?;
    Ok(json_response(StatusCode::OK, &record))
}

/// `DELETE /v1/keys/{key_id}`: deactivates; 204.
pub async fn delete_key(state: &AppState, req: Request<Incoming>, id: &str) -> Handled {
    state.admin.require(req.headers())?;
    let engine = state.engine()?;
    let update = KeyUpdate {
        active: Some(false),
        ..KeyUpdate::default()
    };
    engine.update_key(&key_id(id)?, update).await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `GET /v1/keys/{key_id}/usage`: any key's usage in `?period=`, for admins.
pub async fn key_usage(state: &AppState, req: Request<Incoming>, id: &str) -> Handled {
    state.admin.require(req.headers())?;
    let engine = state.engine()?;
    let id = key_id(id)?;
    let period = decode::usage_period(req.uri().query())?;
    let usage = engine.usage(&id, period).await?;
    Ok(json_response(StatusCode::OK, &usage))
}

/// `GET /v1/keys/{key_id}/audit`: answered by the audit reader, when this node has one.
pub async fn key_audit(state: &AppState, req: Request<Incoming>, id: &str) -> Handled {
    state.admin.require(req.headers())?;
    let id = key_id(id)?;
    let reader = state.audit.as_ref().ok_or(ApiError::AuditUnavailable)?;
    let query = decode::audit_query(id.clone(), req.uri().query())?;
    let first_page = query.cursor.is_none();
    let page = reader.query(query).await?;
    // An id no key ever had is 404; asked only when there is nothing to show, so audit
    // queries of known keys do not depend on Redis.
    if first_page && page.records.is_empty() && !state.engine()?.key_exists(&id).await? {
        return Err(ApiError::NotFound);
    }
    Ok(json_response(StatusCode::OK, &page))
}

/// `GET /healthz`: 200 while the process runs.
pub fn healthz() -> Handled {
    Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
}

/// `GET /readyz`: 200 when Redis answers and the scripts are loaded, else 503.
pub async fn readyz(state: &AppState) -> Handled {
    // Not started yet means scripts not loaded: 503 like an unreachable Redis.
    let engine = state.engine()?;
    let meta = match engine.start().await {
        Ok(meta) => meta,
        Err(EngineError::Store(e)) => return Err(EngineError::Store(e).into()),
        Err(e) => {
            // A shard count or script refused by Redis: this node must not serve.
            tracing::error!(error = %e, "not ready");
            return Err(ApiError::BackendUnavailable);
        }
    };
    let writer = if state.audit.is_some() {
        "active"
    } else {
        "off"
    };
    let body = json!({
        "status": "ready",
        "catalogue_mismatch": meta.catalogue_mismatch,
        "appendonly": meta.appendonly,
        "writer": writer,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /metrics`: the Prometheus text exposition format.
pub fn metrics(state: &AppState) -> Handled {
    let mut response = empty_response(StatusCode::OK);
    *response.body_mut() = state.metrics.render().into();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// A key id from a path: 32 lowercase hex characters, else the route does not exist.
fn key_id(id: &str) -> Result<KeyId, ApiError> {
    KeyId::parse(id).ok_or(ApiError::NotFound)
}

async fn read_json(
    state: &AppState,
    headers: &hyper::HeaderMap,
    body: Incoming,
) -> Result<JsonObject, ApiError> {
    let timeout = state.limits.body_timeout;
    let bytes = extract::body(body, headers, state.max_body_bytes, timeout).await?;
    JsonObject::parse(&bytes)
}
