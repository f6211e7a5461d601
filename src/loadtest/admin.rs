//! Set-up and clean-up: is it a quotad, create the bench keys, deactivate them.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use serde::Deserialize;

use super::conn::{bearer, Answer, Conn, Target};
use super::{LoadError, Secret};
use crate::quota::{ApiKey, KeyId};

/// Connections used for set-up and clean-up calls, so that creating many keys on a
/// distant deployment takes a few round trips' time, not one per key.
const ADMIN_CONNECTIONS: usize = 8;
/// The `name` of every key the bench creates, so operators can tell them apart.
const KEY_NAME: &str = "quotad-bench";

/// Fails with [`LoadError::Unreachable`] or [`LoadError::NotQuotad`] unless
/// `GET /healthz` answers 200.
pub(crate) async fn probe(target: &Target) -> Result<(), LoadError> {
    let unreachable = |source| LoadError::Unreachable {
        url: target.display.clone(),
        source,
    };
    let mut conn = Conn::open(target).await.map_err(unreachable)?;
    let req = target.request(Method::GET, "/healthz", None, Bytes::new());
    let answer = conn.send(req).await.map_err(unreachable)?;
    if answer.status != StatusCode::OK {
        return Err(LoadError::NotQuotad {
            url: target.display.clone(),
            status: answer.status.as_u16(),
        });
    }
    Ok(())
}

/// Creates `count` generated keys on `tier` through `POST /v1/keys`.
pub(crate) async fn create_keys(
    target: &Arc<Target>,
    count: usize,
    tier: &str,
    token: &Secret,
) -> Result<Vec<ApiKey>, LoadError> {
    let auth = admin_auth(token)?;
    let body = Bytes::from(serde_json::json!({"tier": tier, "name": KEY_NAME}).to_string());
    in_parallel(target, vec![(); count], move |target, units| {
        let (auth, body) = (auth.clone(), body.clone());
        async move {
            let mut conn = Conn::open(&target).await?;
            let mut keys = Vec::with_capacity(units.len());
            for () in units {
                let req = target.request(Method::POST, "/v1/keys", Some(&auth), body.clone());
                keys.push(created_key(conn.send(req).await?)?);
            }
            Ok(keys)
        }
    })
    .await
}

/// Deactivates the keys of `key_ids` (`DELETE /v1/keys/{key_id}`).
pub(crate) async fn deactivate_keys(
    target: &Arc<Target>,
    key_ids: &[String],
    token: &Secret,
) -> Result<(), LoadError> {
    let auth = admin_auth(token)?;
    in_parallel(target, key_ids.to_vec(), move |target, ids| {
        let auth = auth.clone();
        async move {
            let mut conn = Conn::open(&target).await?;
            for id in &ids {
                let path = format!("/v1/keys/{id}");
                let req = target.request(Method::DELETE, &path, Some(&auth), Bytes::new());
                let answer = conn.send(req).await?;
                if answer.status != StatusCode::NO_CONTENT {
                    return Err(refusal("DELETE /v1/keys/{key_id}", &answer));
                }
            }
            Ok(Vec::<()>::new())
        }
    })
    .await
    .map(drop)
}

fn admin_auth(token: &Secret) -> Result<HeaderValue, LoadError> {
    bearer(token.expose())
        .ok_or_else(|| LoadError::Usage("the admin token must be printable ASCII".into()))
}

/// Splits `items` over up to [`ADMIN_CONNECTIONS`] tasks running `call` (each on a
/// connection of its own) and returns their results in order.
async fn in_parallel<I, R, F, Fut>(
    target: &Arc<Target>,
    mut items: Vec<I>,
    call: F,
) -> Result<Vec<R>, LoadError>
where
    F: Fn(Arc<Target>, Vec<I>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, LoadError>> + Send + 'static,
    R: Send + 'static,
{
    let per_task = items.len().div_ceil(ADMIN_CONNECTIONS).max(1);
    let mut tasks = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(per_task.min(items.len()));
        tasks.push(tokio::spawn(call(target.clone(), items)));
        items = rest;
    }
    let mut results = Vec::new();
    for task in tasks {
        results.extend(task.await??);
    }
    Ok(results)
}

/// The fields of a `POST /v1/keys` answer the bench needs.
#[derive(Deserialize)]
struct Created {
    key: String,
    key_id: String,
}

fn created_key(answer: Answer) -> Result<ApiKey, LoadError> {
    if answer.status != StatusCode::CREATED {
        return Err(refusal("POST /v1/keys", &answer));
    }
    let bad = || LoadError::Admin {
        call: "POST /v1/keys",
        status: answer.status.as_u16(),
        message: "the answer has no valid key and key_id".into(),
    };
    let created: Created = serde_json::from_slice(&answer.body).map_err(|_| bad())?;
    let key = ApiKey::parse(&created.key).ok_or_else(bad)?;
    // The id goes into later paths; it must be the key's own.
    match KeyId::parse(&created.key_id) {
        Some(id) if id == key.id() => Ok(key),
        _ => Err(bad()),
    }
}

/// The error of a refused admin call, with the `message` quotad gave.
fn refusal(call: &'static str, answer: &Answer) -> LoadError {
    if answer.status == StatusCode::UNAUTHORIZED {
        return LoadError::AdminRefused;
    }
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    let message = match serde_json::from_slice::<Message>(&answer.body) {
        Ok(m) => m.message,
        Err(_) => String::from_utf8_lossy(&answer.body)
            .chars()
            .take(200)
            .collect(),
    };
    LoadError::Admin {
        call,
        status: answer.status.as_u16(),
        message,
    }
}
