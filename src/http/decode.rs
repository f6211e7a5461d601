//! Request bodies into engine inputs: consume requests, new keys, key updates.
//! Every check happens here, before the engine is called, so bad input changes nothing.

use hyper::HeaderMap;

use super::extract::{idempotency_header, query_param, JsonObject};
use super::ApiError;
use crate::audit::{AuditQuery, MAX_LIMIT};
use crate::engine::{KeyUpdate, NewKey};
use crate::quota::{
    validate_idempotency_key, ApiKey, AuditExtras, Catalogue, ConsumeRequest, KeyId,
};

/// The longest key name accepted.
const MAX_NAME_CHARS: usize = 256;

/// A consume request from the JSON body and the `Idempotency-Key` header. `endpoint`,
/// when given, wins over the body's (forward-auth takes it from the proxy's headers).
pub fn consume_request(
    body: &JsonObject,
    headers: &HeaderMap,
    endpoint: Option<String>,
) -> Result<ConsumeRequest, ApiError> {
    let cost = body.optional::<u64>("cost")?.unwrap_or(1);
    let endpoint = match endpoint {
        Some(endpoint) => endpoint,
        None => body.optional::<String>("endpoint")?.unwrap_or_default(),
    };
    let idempotency_key = idempotency_key(body, headers)?;
    let extras = AuditExtras {
        request: body.field("request")?,
        response: body.field("response")?,
        error: body.optional("error")?,
        processing_ms: body.optional("processing_ms")?,
    };
    Ok(ConsumeRequest::new(
        cost,
        endpoint,
        idempotency_key,
        extras,
    )?)
}

/// The idempotency key from the body field or the header; both must agree.
fn idempotency_key(body: &JsonObject, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let field = body.optional::<String>("idempotency_key")?;
    let header = idempotency_header(headers)?;
    let key = match (field, header) {
        (Some(f), Some(h)) if f != h => {
            return Err(ApiError::BadRequest(
                "idempotency_key and the Idempotency-Key header differ".into(),
            ))
        }
        (f, h) => f.or(h),
    };
    if let Some(key) = &key {
        validate_idempotency_key(key)?;
    }
    Ok(key)
}

/// `POST /v1/keys`: `{"tier", "key"?, "name"?, "monthly_limit"?}`.
pub fn new_key(body: &JsonObject, catalogue: &Catalogue) -> Result<NewKey, ApiError> {
    body.only(&["tier", "key", "name", "monthly_limit"])?;
    let tier = body
        .optional::<String>("tier")?
        .ok_or_else(|| ApiError::BadRequest("field `tier` is required".into()))?;
    known_tier(&tier, catalogue)?;
    let key = match body.optional::<String>("key")? {
        Some(k) => Some(ApiKey::parse(&k).ok_or_else(|| {
            ApiError::BadRequest("field `key` must be 16-256 characters in 0x21-0x7E".into())
        })?),
        None => None,
    };
    let name = body.optional::<String>("name")?;
    if name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
    {
        return Err(ApiError::BadRequest(format!(
            "field `name` is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(NewKey {
        tier,
        key,
        name,
        monthly_limit: body.optional("monthly_limit")?,
    })
}

/// `PATCH /v1/keys/{key_id}`: absent fields are kept; `monthly_limit: null` clears.
pub fn key_update(body: &JsonObject, catalogue: &Catalogue) -> Result<KeyUpdate, ApiError> {
    body.only(&["tier", "active", "monthly_limit"])?;
    let tier = body.optional::<String>("tier")?;
    if let Some(tier) = &tier {
        known_tier(tier, catalogue)?;
    }
    Ok(KeyUpdate {
        tier,
        active: body.optional("active")?,
        monthly_limit: body.field::<Option<u64>>("monthly_limit")?,
    })
}

/// Admin input must name a tier of this node's catalogue (400, not 500).
fn known_tier(tier: &str, catalogue: &Catalogue) -> Result<(), ApiError> {
    match catalogue.get(tier) {
        Some(_) => Ok(()),
        None => Err(ApiError::UnknownTierInput(tier.to_owned())),
    }
}

/// An audit query from `?from=&to=&limit=&cursor=` (instants in RFC 3339).
pub fn audit_query(key_id: KeyId, query: Option<&str>) -> Result<AuditQuery, ApiError> {
    let instant = |name: &str| {
        query_param(query, name)
            .map(|v| {
                chrono::DateTime::parse_from_rfc3339(&v)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|_| {
                        ApiError::BadRequest(format!("{name} must be an RFC 3339 instant"))
                    })
            })
            .transpose()
    };
    let limit = query_param(query, "limit")
        .map(|v| match v.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "limit must be an integer from 1 to {MAX_LIMIT}"
            ))),
        })
        .transpose()?;
    Ok(AuditQuery {
        from: instant("from")?,
        to: instant("to")?,
        limit,
        cursor: query_param(query, "cursor"),
        ..AuditQuery::new(key_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> JsonObject {
        JsonObject::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn consume_defaults_and_bounds() {
        let h = HeaderMap::new();
        let req = consume_request(&body("{}"), &h, None).unwrap();
        assert_eq!((req.cost, req.endpoint.as_str()), (1, ""));
        for bad in [
            r#"{"cost": 0}"#,
            r#"{"cost": 1000001}"#,
            r#"{"cost": -1}"#,
            r#"{"cost": 1.5}"#,
            r#"{"cost": "1"}"#,
            r#"{"idempotency_key": ""}"#,
            r#"{"idempotency_key": "has space"}"#,
            r#"{"endpoint": 5}"#,
            r#"{"processing_ms": "slow"}"#,
        ] {
            assert!(consume_request(&body(bad), &h, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn patch_tells_null_from_absent() {
        let c = Catalogue::default();
        assert_eq!(key_update(&body("{}"), &c).unwrap().monthly_limit, None);
        let clear = key_update(&body(r#"{"monthly_limit": null}"#), &c).unwrap();
        assert_eq!(clear.monthly_limit, Some(None));
        let set = key_update(&body(r#"{"monthly_limit": 7}"#), &c).unwrap();
        assert_eq!(set.monthly_limit, Some(Some(7)));
        let err = key_update(&body(r#"{"tier": "gold"}"#), &c).unwrap_err();
        assert!(matches!(err, ApiError::UnknownTierInput(_)));
    }
}
