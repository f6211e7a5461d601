//! Request bodies into engine inputs: consume requests, new keys, key updates.
//! Every check happens here, before the engine is called, so bad input changes nothing.

use hyper::{HeaderMap, StatusCode};

use super::extract::{idempotency_header, query_param, JsonObject};
use super::ApiError;
use crate::audit::{AuditQuery, MAX_LIMIT};
use crate::engine::{KeyUpdate, NewKey};
use crate::quota::{
    validate_idempotency_key, ApiKey, AuditExtras, Catalogue, ConsumeRequest, KeyId, Period,
    MAX_COST, MAX_EXACT_INT,
};

/// The longest key name accepted.
const MAX_NAME_CHARS: usize = 256;

/// Every field a consume body may have.
const CONSUME_FIELDS: &[&str] = &[
    "api_key",
    "cost",
    "endpoint",
    "idempotency_key",
    "request",
    "response",
    "error",
    "processing_ms",
];

/// A consume request from the JSON body and the `Idempotency-Key` header.
pub fn consume_request(body: &JsonObject, headers: &HeaderMap) -> Result<ConsumeRequest, ApiError> {
    // A typo such as `cots` must not be charged as cost 1.
    body.only(CONSUME_FIELDS)?;
    let cost = body.optional::<u64>("cost")?.unwrap_or(1);
    let endpoint = body.optional::<String>("endpoint")?.unwrap_or_default();
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

/// What the operator's auth URL asks of `/v1/authorize` (its query string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthorizeOptions {
    /// Units each request consumes (`?cost=N`, default 1).
    pub cost: u64,
    /// The status of a denial: 429, or 403 with `?deny_status=403` (nginx passes only
    /// 401 and 403 on from an auth subrequest).
    pub deny_status: StatusCode,
    /// Whether the `Idempotency-Key` header counts (`?idempotency=header`).
    pub idempotency_header: bool,
}

/// The forward-auth options from the auth URL's query. Only the bare `/v1/authorize`
/// path takes them: on `/v1/authorize/<path>` (Envoy appends the original path *and
/// query* to its `path_prefix`) the query is the end user's, so it is ignored and the
/// defaults hold; otherwise a client could opt itself into replays.
pub fn authorize_options(suffix: &str, query: Option<&str>) -> Result<AuthorizeOptions, ApiError> {
    let query = if suffix.is_empty() { query } else { None };
    let cost = match query_param(query, "cost") {
        None => 1,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=MAX_COST).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "cost in the auth URL must be an integer from 1 to {MAX_COST}"
                )))
            }
        },
    };
    let deny_status = match query_param(query, "deny_status").as_deref() {
        None | Some("429") => StatusCode::TOO_MANY_REQUESTS,
        Some("403") => StatusCode::FORBIDDEN,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "deny_status in the auth URL must be 403 or 429".into(),
            ))
        }
    };
    let idempotency_header = match query_param(query, "idempotency").as_deref() {
        None => false,
        Some("header") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "idempotency in the auth URL must be `header`".into(),
            ))
        }
    };
    Ok(AuthorizeOptions {
        cost,
        deny_status,
        idempotency_header,
    })
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
        monthly_limit: exact(body.optional("monthly_limit")?)?,
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
        monthly_limit: body
            .field::<Option<u64>>("monthly_limit")?
            .map(exact)
            .transpose()?,
    })
}

/// A stored integer must stay exact in a Lua double (at most 2^53 − 1).
fn exact(limit: Option<u64>) -> Result<Option<u64>, ApiError> {
    match limit {
        Some(n) if n > MAX_EXACT_INT => Err(ApiError::BadRequest(format!(
            "field `monthly_limit` must be at most {MAX_EXACT_INT} (2^53 - 1)"
        ))),
        other => Ok(other),
    }
}

/// Admin input must name a tier of this node's catalogue (400, not 500).
fn known_tier(tier: &str, catalogue: &Catalogue) -> Result<(), ApiError> {
    match catalogue.get(tier) {
        Some(_) => Ok(()),
        None => Err(ApiError::UnknownTierInput(tier.to_owned())),
    }
}

/// The period of a usage query, `?period=YYYY-MM`; `None` = the current one.
pub fn usage_period(query: Option<&str>) -> Result<Option<Period>, ApiError> {
    match query_param(query, "period") {
        None => Ok(None),
        Some(v) => Period::parse(&v)
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest("period must be YYYY-MM, e.g. 2026-11".to_owned())),
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
        let req = consume_request(&body("{}"), &h).unwrap();
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
            r#"{"cots": 5}"#,
            r#"{"endpoint": "/a\u0000b"}"#,
            r#"{"endpoint": "/a\r\nX-Evil: 1"}"#,
            r#"{"endpoint": "/a\u0007"}"#,
            r#"{"endpoint": "/gnp.\u202eexe"}"#,
        ] {
            assert!(consume_request(&body(bad), &h).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_consume_fields_are_named() {
        let err = consume_request(&body(r#"{"cots": 5}"#), &HeaderMap::new()).unwrap_err();
        assert!(err.to_string().contains("`cots`"), "{err}");
    }

    #[test]
    fn authorize_options_come_from_the_bare_auth_url_only() {
        let o = authorize_options("", Some("cost=3&deny_status=403&idempotency=header")).unwrap();
        assert_eq!(o.cost, 3);
        assert_eq!(o.deny_status, StatusCode::FORBIDDEN);
        assert!(o.idempotency_header);
        let d = authorize_options("", None).unwrap();
        assert_eq!(
            (d.cost, d.deny_status, d.idempotency_header),
            (1, StatusCode::TOO_MANY_REQUESTS, false)
        );
        // Envoy appends the client's path and query: none of it is an option.
        let envoy = authorize_options("/api/x", Some("idempotency=header&cost=9")).unwrap();
        assert_eq!(envoy, d);
        for bad in [
            "cost=0",
            "cost=1000001",
            "cost=x",
            "deny_status=500",
            "idempotency=body",
        ] {
            assert!(authorize_options("", Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_integers_stay_exact_in_lua() {
        let c = Catalogue::default();
        let max = r#"{"tier": "free", "monthly_limit": 9007199254740991}"#;
        assert_eq!(
            new_key(&body(max), &c).unwrap().monthly_limit,
            Some(MAX_EXACT_INT)
        );
        for bad in [
            r#"{"tier": "free", "monthly_limit": 9007199254740992}"#,
            r#"{"tier": "free", "monthly_limit": 9223372036854775807}"#,
        ] {
            assert!(new_key(&body(bad), &c).is_err(), "{bad}");
        }
        let patch = r#"{"monthly_limit": 123456789012345678}"#;
        assert!(key_update(&body(patch), &c).is_err());
    }

    #[test]
    fn usage_periods_are_yyyy_mm_or_absent() {
        assert_eq!(usage_period(None).unwrap(), None);
        assert_eq!(usage_period(Some("x=1")).unwrap(), None);
        let p = usage_period(Some("period=2026-02")).unwrap().unwrap();
        assert_eq!(p.label(), "2026-02");
        for bad in ["period=2026-2", "period=2026-13", "period=", "period=now"] {
            assert!(usage_period(Some(bad)).is_err(), "{bad}");
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
