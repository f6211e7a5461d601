//! Decision responses: the body, the status, and the rate-limit and `X-Quota-*` headers.

use chrono::{DateTime, Utc};
use hyper::header::{HeaderName, HeaderValue, RETRY_AFTER};
use hyper::{HeaderMap, StatusCode};

use super::{json_response, Response};
use crate::quota::{Decision, RateItem, RateLimit};

/// How a decision is answered.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// The status of a denial: 429, or 403 for proxies that pass only 401/403 on.
    pub deny_status: StatusCode,
    /// Whether to add the `X-Quota-*` headers of forward-auth.
    pub forward_auth: bool,
    /// Whether a denial is an error (`quota_exceeded`, `rate_limited`); `GET /v1/quota`
    /// is always 200.
    pub deny_is_error: bool,
}

impl Answer {
    /// `POST /v1/consume`: 200 or 429.
    pub const CONSUME: Answer = Answer {
        deny_status: StatusCode::TOO_MANY_REQUESTS,
        forward_auth: false,
        deny_is_error: true,
    };
    /// `GET /v1/quota`: always 200.
    pub const QUOTA: Answer = Answer {
        deny_status: StatusCode::OK,
        forward_auth: false,
        deny_is_error: false,
    };

    /// `/v1/authorize`: 200 or `deny_status`, with `X-Quota-*`.
    pub fn authorize(deny_status: StatusCode) -> Answer {
        Answer {
            deny_status,
            forward_auth: true,
            deny_is_error: true,
        }
    }
}

/// The response to a decision made at `now`.
pub fn decision_response(decision: &Decision, now: DateTime<Utc>, answer: Answer) -> Response {
    let denied = !decision.allowed && answer.deny_is_error;
    let secs_to_reset = decision.reset_at.secs_to_reset(now);
    // A refused window: until the request would pass; the month: until it resets.
    let retry_after = match decision.rate_limited {
        true => retry_secs(decision),
        false => secs_to_reset,
    };
    let mut response = if denied {
        let mut body = serde_json::to_value(decision).expect("a decision serializes");
        let (code, message) = match decision.rate_limited {
            true => (
                "rate_limited",
                format!("a rate limit is reached; retry in {retry_after} s"),
            ),
            false => (
                "quota_exceeded",
                format!(
                    "the monthly quota is used up; it resets at {}",
                    decision.reset_at.reset_at_string()
                ),
            ),
        };
        body["error"] = code.into();
        body["message"] = message.into();
        json_response(answer.deny_status, &body)
    } else {
        json_response(StatusCode::OK, decision)
    };
    let headers = response.headers_mut();
    rate_limit_headers(headers, decision, secs_to_reset);
    if denied {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
    }
    if decision.replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if answer.forward_auth {
        quota_headers(headers, decision, secs_to_reset);
    }
    response
}

/// Seconds until a rate-limited request would pass: the longest wait of the refusing
/// windows, rounded up, at least 1.
fn retry_secs(d: &Decision) -> u64 {
    let wait_ms = d.windows.iter().map(|w| w.wait_ms).max().unwrap_or(0);
    wait_ms.div_ceil(1000).max(1)
}

/// `RateLimit-Policy` (the month, then every window as `"<secs>s"`), `RateLimit` (the
/// item the decision names: SPEC §9) and the older `RateLimit-Limit/-Remaining/-Reset`
/// (the month only); an unlimited key without windows gets none.
fn rate_limit_headers(headers: &mut HeaderMap, d: &Decision, secs_to_reset: u64) {
    let month = d.limit.zip(d.remaining);
    let names: Vec<String> = d
        .windows
        .iter()
        .map(|w| RateLimit::item_name(w.window_secs))
        .collect();
    let mut policy: Vec<(&str, [(&str, u64); 2])> = Vec::with_capacity(1 + names.len());
    if let Some((limit, _)) = month {
        policy.push(("monthly", [("q", limit), ("w", d.reset_at.length_secs())]));
    }
    for (w, name) in d.windows.iter().zip(&names) {
        policy.push((name, [("q", w.limit), ("w", w.window_secs)]));
    }
    let current = match d.current_item() {
        Some(RateItem::Monthly) => month.map(|(_, r)| ("monthly".to_owned(), r, secs_to_reset)),
        Some(RateItem::Window(w)) => Some((
            RateLimit::item_name(w.window_secs),
            w.remaining,
            w.reset_secs(),
        )),
        None => None,
    };
    if let Some((name, remaining, reset)) = current {
        let policy: Vec<(&str, &[(&str, u64)])> =
            policy.iter().map(|(n, p)| (*n, p.as_slice())).collect();
        let current = sf_list(&[(&name, &[("r", remaining), ("t", reset)])]);
        // A limit past an sf-integer (15 digits) cannot be written as the draft's fields;
        // they are left out rather than written malformed. The older trio has no such bound.
        if let (Some(policy), Some(current)) = (sf_list(&policy), current) {
            insert_text(headers, "ratelimit-policy", &policy);
            insert_text(headers, "ratelimit", &current);
        }
    }
    if let Some((limit, remaining)) = month {
        headers.insert("ratelimit-limit", HeaderValue::from(limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(secs_to_reset));
    }
}

/// The forward-auth headers a proxy copies onto the upstream request.
fn quota_headers(headers: &mut HeaderMap, d: &Decision, secs_to_reset: u64) {
    insert_text(headers, "x-quota-key-id", &d.key_id);
    insert_text(headers, "x-quota-tier", &d.tier);
    if d.replayed {
        // Only with `idempotency=header`: the upstream answers the repeat from its store.
        headers.insert("x-quota-replayed", HeaderValue::from_static("true"));
    }
    if let (Some(limit), Some(remaining)) = (d.limit, d.remaining) {
        headers.insert("x-quota-limit", HeaderValue::from(limit));
        headers.insert("x-quota-remaining", HeaderValue::from(remaining));
    }
    headers.insert("x-quota-reset", HeaderValue::from(secs_to_reset));
}

/// An RFC 8941 list of string items with integer parameters, e.g.
/// `"monthly";q=1000;w=2592000`; `None` when a name or number cannot be written.
fn sf_list(items: &[(&str, &[(&str, u64)])]) -> Option<String> {
    let mut list = sfv::ListSerializer::new();
    for (name, params) in items {
        let mut item = list.bare_item(sfv::StringRef::from_str(name).ok()?);
        for (key, value) in params.iter() {
            let key = sfv::KeyRef::from_str(key).ok()?;
            item = item.parameter(key, sfv::Integer::try_from(*value).ok()?);
        }
    }
    list.finish()
}

/// Inserts a text header; a value that cannot be a header (a strange tier name) is left out.
fn insert_text(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{ApiKey, Period, WindowState};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn decision(limit: Option<u64>, used: u64) -> Decision {
        let id = ApiKey::presented("k").unwrap().id();
        let period = Period::containing(at("2026-11-29T00:00:00Z"));
        Decision::new(&id, "free".into(), limit, used, period)
    }

    #[test]
    fn limited_decisions_carry_every_rate_limit_header() {
        let now = at("2026-11-29T00:00:00.500Z");
        let r = decision_response(&decision(Some(1000), 10), now, Answer::CONSUME);
        let h = r.headers();
        assert_eq!(h["ratelimit-policy"], "\"monthly\";q=1000;w=2592000");
        assert_eq!(h["ratelimit"], "\"monthly\";r=990;t=172800");
        assert_eq!(h["ratelimit-limit"], "1000");
        assert_eq!(h["ratelimit-remaining"], "990");
        assert_eq!(h["ratelimit-reset"], "172800");
        assert!(h.get(RETRY_AFTER).is_none());
        assert!(h.get("x-quota-key-id").is_none());
    }

    #[test]
    fn limits_past_an_sf_integer_leave_out_only_the_structured_fields() {
        let now = at("2026-11-29T00:00:00Z");
        let huge = (1 << 53) - 1;
        let r = decision_response(&decision(Some(huge), 0), now, Answer::CONSUME);
        let h = r.headers();
        assert!(h.get("ratelimit-policy").is_none() && h.get("ratelimit").is_none());
        assert_eq!(h["ratelimit-limit"], huge.to_string().as_str());
    }

    #[test]
    fn sf_lists_join_items_and_parameters() {
        let window: &[(&str, u64)] = &[("q", 10), ("w", 1)];
        assert_eq!(
            sf_list(&[("monthly", &[("q", 1000), ("w", 2592000)]), ("1s", window)]).unwrap(),
            "\"monthly\";q=1000;w=2592000, \"1s\";q=10;w=1"
        );
        assert_eq!(
            sf_list(&[("monthly", &[("q", 1_000_000_000_000_000)])]),
            None
        );
    }

    #[test]
    fn unlimited_decisions_carry_none_and_forward_auth_omits_limit() {
        let now = at("2026-11-29T00:00:00Z");
        let r = decision_response(
            &decision(None, 10),
            now,
            Answer::authorize(StatusCode::TOO_MANY_REQUESTS),
        );
        let h = r.headers();
        assert!(h.get("ratelimit").is_none() && h.get("ratelimit-limit").is_none());
        assert!(h.get("x-quota-limit").is_none() && h.get("x-quota-remaining").is_none());
        assert_eq!(h["x-quota-tier"], "free");
        assert_eq!(h["x-quota-reset"], "172800");
    }

    #[test]
    fn a_rate_limited_refusal_retries_after_the_longest_wait_and_names_that_window() {
        let now = at("2026-11-29T00:00:00Z");
        let window = |secs, limit, remaining, reset_after_ms, wait_ms| WindowState {
            window_secs: secs,
            limit,
            remaining,
            reset_after_ms,
            wait_ms,
        };
        let mut d = decision(Some(1000), 10);
        d.allowed = false;
        let windows = vec![
            window(1, 10, 0, 1000, 100),
            window(60, 20, 0, 60_000, 2_001),
        ];
        d.set_windows(windows, true);
        let r = decision_response(&d, now, Answer::CONSUME);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = r.headers();
        assert_eq!(h[RETRY_AFTER], "3");
        assert_eq!(
            h["ratelimit-policy"],
            "\"monthly\";q=1000;w=2592000, \"1s\";q=10;w=1, \"60s\";q=20;w=60"
        );
        assert_eq!(h["ratelimit"], "\"60s\";r=0;t=60");
        assert_eq!(h["ratelimit-remaining"], "990");
    }

    #[test]
    fn denials_are_429_with_retry_after_or_the_chosen_status() {
        let now = at("2026-11-29T00:00:00Z");
        let mut d = decision(Some(5), 5);
        d.allowed = false;
        let r = decision_response(&d, now, Answer::CONSUME);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RETRY_AFTER], "172800");
        let r = decision_response(&d, now, Answer::authorize(StatusCode::FORBIDDEN));
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            decision_response(&d, now, Answer::QUOTA).status(),
            StatusCode::OK
        );
    }
}
