//! Taking requests apart: the API key, the body within its limit, JSON fields whose
//! errors name the field, the idempotency key, query parameters.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH};
use hyper::HeaderMap;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::ApiError;
use crate::quota::ApiKey;

/// Reads the whole body within `timeout`, refusing anything over `limit` bytes with 413
/// and a body still arriving at the timeout with 408 (a trickled body holds a
/// connection and a handler).
pub async fn body(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::RequestTimeout(timeout.as_secs()))?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge(limit))
        }
        Err(_) => Err(ApiError::BadRequest(
            "the request body could not be read".into(),
        )),
    }
}

/// A JSON object body, read field by field so that every error names its field.
/// An empty body is an empty object; [`JsonObject::only`] refuses unknown fields.
#[derive(Debug, Default)]
pub struct JsonObject(Map<String, Value>);

impl JsonObject {
    /// Parses `bytes` as a JSON object.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonObject::default());
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(ApiError::BadRequest(
                "the body must be a JSON object".into(),
            )),
            Err(e) => Err(ApiError::BadRequest(format!("malformed JSON: {e}"))),
        }
    }

    /// The field `name` as a `T`; `None` when absent. With `T = Option<U>`, an explicit
    /// `null` is `Some(None)`: that tells "clear" from "keep" in a PATCH.
    pub fn field<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|e| ApiError::BadRequest(format!("field `{name}`: {e}"))),
        }
    }

    /// Refuses fields outside `known` (admin bodies: a typo must not be a silent no-op).
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(unknown) => Err(ApiError::BadRequest(format!(
                "unknown field `{unknown}`; expected one of {}",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// The field `name` where `null` means the same as absent.
    pub fn optional<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ApiError> {
        Ok(self.field::<Option<T>>(name)?.flatten())
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(value: &HeaderValue) -> Option<String> {
    let text = String::from_utf8_lossy(value.as_bytes());
    let (scheme, token) = text.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// The end user's API key: `Authorization: Bearer`, `X-API-Key`, the JSON field
/// `api_key`, then the `api_key` query parameter; the first found wins.
pub fn api_key(
    headers: &HeaderMap,
    body: Option<&JsonObject>,
    query: Option<&str>,
) -> Result<ApiKey, ApiError> {
    let from_bearer = || headers.get(AUTHORIZATION).and_then(bearer);
    let from_header = || {
        headers
            .get("x-api-key")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .filter(|k| !k.is_empty())
    };
    let found = match from_bearer().or_else(from_header) {
        Some(key) => Some(key),
        None => match body {
            Some(body) => body.optional::<String>("api_key")?,
            None => None,
        },
    };
    found
        .or_else(|| query_param(query, "api_key"))
        .and_then(|key| ApiKey::presented(&key))
        .ok_or(ApiError::MissingApiKey)
}

/// The `Idempotency-Key` header: the bare key, or an RFC 8941 sf-string whose quotes
/// are stripped.
pub fn idempotency_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::BadRequest("Idempotency-Key must be 1-255 characters in 0x21-0x7E".into())
    })?;
    let text = text.trim();
    if text.starts_with('"') {
        return sf_string(text).map(Some);
    }
    // Bare keys are kept as sent, not parsed as an sf-token: common keys such as UUIDs
    // are no tokens (a leading digit reads as an sf-integer). They are checked later
    // like the body field.
    Ok(Some(text.to_owned()))
}

/// The content of a header that is one RFC 8941 sf-string item; parameters, which no
/// spec defines for this header, are ignored.
fn sf_string(field: &str) -> Result<String, ApiError> {
    let bad = || ApiError::BadRequest("Idempotency-Key is not a valid RFC 8941 string".into());
    let item: sfv::Item = sfv::Parser::new(field).parse().map_err(|_| bad())?;
    match item.bare_item {
        sfv::BareItem::String(s) => Ok(s.into()),
        _ => Err(bad()),
    }
}

/// The first value of query parameter `name`, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The path of a URI or path-with-query: everything before `?` or `#`.
pub fn path_only(uri: &str) -> &str {
    uri.split(['?', '#']).next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn api_key_sources_in_order() {
        let body = JsonObject::parse(br#"{"api_key": "from-body-0000000"}"#).unwrap();
        let all = headers(&[
            ("authorization", "Bearer from-bearer"),
            ("x-api-key", "from-x"),
        ]);
        let q = Some("api_key=from-query");
        let id = |k: &str| ApiKey::presented(k).unwrap().id();
        assert_eq!(
            api_key(&all, Some(&body), q).unwrap().id(),
            id("from-bearer")
        );
        let x = headers(&[("authorization", "Basic abc"), ("x-api-key", "from-x")]);
        assert_eq!(api_key(&x, Some(&body), q).unwrap().id(), id("from-x"));
        let none = HeaderMap::new();
        assert_eq!(
            api_key(&none, Some(&body), q).unwrap().id(),
            id("from-body-0000000")
        );
        assert_eq!(api_key(&none, None, q).unwrap().id(), id("from-query"));
        assert!(matches!(
            api_key(&none, None, None),
            Err(ApiError::MissingApiKey)
        ));
    }

    #[test]
    fn fields_name_themselves_in_errors() {
        let body = JsonObject::parse(br#"{"cost": "5", "limit": null}"#).unwrap();
        let err = body.field::<u64>("cost").unwrap_err().to_string();
        assert!(err.contains("`cost`"), "{err}");
        assert_eq!(body.field::<Option<u64>>("limit").unwrap(), Some(None));
        assert_eq!(body.field::<Option<u64>>("absent").unwrap(), None);
        assert!(JsonObject::parse(b"[1]").is_err());
        assert!(JsonObject::parse(b"{").is_err());
        assert!(JsonObject::parse(b"").is_ok());
    }

    #[test]
    fn idempotency_header_quotes_are_stripped() {
        let h = headers(&[("idempotency-key", "\"abc\"")]);
        assert_eq!(idempotency_header(&h).unwrap().as_deref(), Some("abc"));
        let h = headers(&[("idempotency-key", "abc")]);
        assert_eq!(idempotency_header(&h).unwrap().as_deref(), Some("abc"));
        let h = headers(&[("idempotency-key", r#""a\"b\\c""#)]);
        assert_eq!(idempotency_header(&h).unwrap().as_deref(), Some(r#"a"b\c"#));
        let uuid = "123e4567-e89b-12d3-a456-426614174000";
        let h = headers(&[("idempotency-key", uuid)]);
        assert_eq!(idempotency_header(&h).unwrap().as_deref(), Some(uuid));
        let h = headers(&[("idempotency-key", r#""abc";v=1"#)]);
        assert_eq!(idempotency_header(&h).unwrap().as_deref(), Some("abc"));
        for bad in [r#""a\x""#, r#""a"b""#, r#""a\""#, r#""a", "b""#] {
            let h = headers(&[("idempotency-key", bad)]);
            assert!(idempotency_header(&h).is_err(), "{bad}");
        }
    }

    #[test]
    fn admin_bodies_refuse_unknown_fields() {
        let body = JsonObject::parse(br#"{"tier": "free", "monthly_limt": 5}"#).unwrap();
        let err = body
            .only(&["tier", "monthly_limit"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`monthly_limt`"), "{err}");
        assert!(body.only(&["tier", "monthly_limt"]).is_ok());
    }

    #[test]
    fn path_only_drops_query_and_fragment() {
        assert_eq!(path_only("/a/b?api_key=x"), "/a/b");
        assert_eq!(path_only("/a#f"), "/a");
        assert_eq!(path_only("/a"), "/a");
    }
}
