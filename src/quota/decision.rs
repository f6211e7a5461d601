//! What a consume asks for and what it gets back.

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::{KeyId, Period, WindowState};

/// The largest cost one request may carry.
pub const MAX_COST: u64 = 1_000_000;
/// The largest integer quotad stores (2^53 − 1): every stored integer stays exact in a Lua double.
pub const MAX_EXACT_INT: u64 = (1 << 53) - 1;
/// The most `request`, `response` and `error` may take together, serialized.
pub const MAX_AUDIT_EXTRAS_BYTES: usize = 16 * 1024;
/// The longest endpoint label accepted, in bytes.
const MAX_ENDPOINT_BYTES: usize = 1024;

/// Input that breaks a rule; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Optional context stored with the audit record of an admitted request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditExtras {
    /// Any JSON the caller sends as the request summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<serde_json::Value>,
    /// Any JSON the caller sends as the response summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
    /// An error text, when the request failed upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the upstream took, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processing_ms: Option<f64>,
}

impl AuditExtras {
    /// The extras as one JSON object (empty object when none are set).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("JSON values always serialize")
    }
}

/// One request to consume units, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumeRequest {
    /// Units to consume, 1..=MAX_COST.
    pub cost: u64,
    /// The endpoint label recorded with the audit record.
    pub endpoint: String,
    /// Optional client idempotency key, 1–255 characters in 0x21–0x7E.
    pub idempotency_key: Option<String>,
    /// Context for the audit record.
    pub extras: AuditExtras,
}

impl ConsumeRequest {
    /// Validates every field; the error names the first field that is wrong.
    pub fn new(
        cost: u64,
        endpoint: String,
        idempotency_key: Option<String>,
        extras: AuditExtras,
    ) -> Result<Self, InputError> {
        if !(1..=MAX_COST).contains(&cost) {
            return Err(InputError(format!(
                "cost must be an integer from 1 to {MAX_COST}"
            )));
        }
        validate_endpoint(&endpoint)?;
        if let Some(key) = &idempotency_key {
            validate_idempotency_key(key)?;
        }
        if extras
            .processing_ms
            .is_some_and(|ms| !ms.is_finite() || ms < 0.0)
        {
            return Err(InputError("processing_ms must be a number >= 0".to_owned()));
        }
        let extras_len = serde_json::to_vec(&(&extras.request, &extras.response, &extras.error))
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if extras_len > MAX_AUDIT_EXTRAS_BYTES {
            return Err(InputError(format!(
                "request, response and error together exceed {MAX_AUDIT_EXTRAS_BYTES} bytes"
            )));
        }
        Ok(ConsumeRequest {
            cost,
            endpoint,
            idempotency_key,
            extras,
        })
    }

    /// A plain request of `cost` units at `endpoint`.
    pub fn simple(cost: u64, endpoint: &str) -> Result<Self, InputError> {
        Self::new(cost, endpoint.to_owned(), None, AuditExtras::default())
    }

    /// What a repeat with the same idempotency key must match: cost and endpoint.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(format!("{}\n{}", self.cost, self.endpoint));
        hex::encode(&digest[..12])
    }
}

/// Checks an endpoint label: at most 1,024 bytes, no control characters (NUL, CR, LF,
/// BEL, …) and no bidi controls (which make an audit log lie to its reader).
pub fn validate_endpoint(endpoint: &str) -> Result<(), InputError> {
    if endpoint.len() > MAX_ENDPOINT_BYTES {
        return Err(InputError(format!(
            "endpoint is longer than {MAX_ENDPOINT_BYTES} bytes"
        )));
    }
    let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if endpoint.chars().any(|c| c.is_control() || bidi(c)) {
        return Err(InputError(
            "endpoint must not contain control or bidi-override characters".to_owned(),
        ));
    }
    Ok(())
}

/// Checks an idempotency key: 1–255 characters in 0x21–0x7E.
pub fn validate_idempotency_key(key: &str) -> Result<(), InputError> {
    let ok = (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(InputError(
            "idempotency_key must be 1-255 characters in 0x21-0x7E".to_owned(),
        ))
    }
}

/// The answer to a consume or quota query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The key's id (never the key).
    pub key_id: String,
    /// The key's tier.
    pub tier: String,
    /// The effective monthly limit; `None` = unlimited.
    pub limit: Option<u64>,
    /// Units used this period, after this request if it was allowed.
    pub used: u64,
    /// Units left; `None` = unlimited.
    pub remaining: Option<u64>,
    /// When the period resets.
    #[serde(serialize_with = "serialize_reset")]
    pub reset_at: Period,
    /// Whether this is a stored answer to an earlier request.
    pub replayed: bool,
    /// The audit record's id; `None` when nothing was recorded.
    pub audit_id: Option<String>,
    /// The window the `RateLimit` header names (SPEC §9); `None` when it names the
    /// month or the tier has no windows.
    pub rate_limit: Option<WindowState>,
    /// Every window of the key's tier at this decision, shortest first.
    #[serde(skip)]
    pub windows: Vec<WindowState>,
    /// Whether a rate window refused the request (then `allowed` is false and nothing
    /// was consumed); a refusal by the month leaves it false.
    #[serde(skip)]
    pub rate_limited: bool,
}

/// The item of the `RateLimit` header: the month or one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateItem<'a> {
    /// The monthly quota.
    Monthly,
    /// A rate window.
    Window(&'a WindowState),
}

fn serialize_reset<S: Serializer>(period: &Period, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&period.reset_at_string())
}

impl Decision {
    /// Builds a decision, deriving `remaining` from limit and used.
    pub fn new(
        key_id: &KeyId,
        tier: String,
        limit: Option<u64>,
        used: u64,
        period: Period,
    ) -> Self {
        Decision {
            allowed: true,
            key_id: key_id.as_str().to_owned(),
            tier,
            limit,
            used,
            remaining: limit.map(|l| l.saturating_sub(used)),
            reset_at: period,
            replayed: false,
            audit_id: None,
            rate_limit: None,
            windows: Vec::new(),
            rate_limited: false,
        }
    }

    /// Sets the tier's windows (shortest first) and whether one refused the request.
    pub fn set_windows(&mut self, windows: Vec<WindowState>, rate_limited: bool) {
        self.windows = windows;
        self.rate_limited = rate_limited;
        self.rate_limit = match self.current_item() {
            Some(RateItem::Window(w)) => Some(*w),
            _ => None,
        };
    }

    /// The item `RateLimit` names: on a rate-limited refusal the window with the longest
    /// wait, else the item with the smallest remaining (ties: the shorter window, the
    /// month being the longest); `None` for an unlimited key without windows.
    pub fn current_item(&self) -> Option<RateItem<'_>> {
        if self.rate_limited {
            // Shortest first, so a strictly longer wait is needed to move on.
            let refusing = self.windows.iter().filter(|w| w.wait_ms > 0);
            let longest = refusing.fold(None::<&WindowState>, |best, w| match best {
                Some(b) if b.wait_ms >= w.wait_ms => Some(b),
                _ => Some(w),
            });
            if let Some(w) = longest {
                return Some(RateItem::Window(w));
            }
        }
        let month = self
            .remaining
            .map(|r| (r, self.reset_at.length_secs(), RateItem::Monthly));
        let windows = self
            .windows
            .iter()
            .map(|w| (w.remaining, w.window_secs, RateItem::Window(w)));
        month
            .into_iter()
            .chain(windows)
            .min_by_key(|(remaining, secs, _)| (*remaining, *secs))
            .map(|(_, _, item)| item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_bounds() {
        assert!(ConsumeRequest::simple(0, "/").is_err());
        assert!(ConsumeRequest::simple(MAX_COST + 1, "/").is_err());
        assert!(ConsumeRequest::simple(MAX_COST, "/").is_ok());
    }

    #[test]
    fn idempotency_key_rules() {
        let req =
            |k: &str| ConsumeRequest::new(1, "/".into(), Some(k.into()), AuditExtras::default());
        assert!(req("").is_err());
        assert!(req("has space").is_err());
        assert!(req(&"a".repeat(256)).is_err());
        assert!(req(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn processing_ms_must_be_a_non_negative_number() {
        let with = |ms: f64| AuditExtras {
            processing_ms: Some(ms),
            ..Default::default()
        };
        assert!(ConsumeRequest::new(1, "/".into(), None, with(-5.0)).is_err());
        assert!(ConsumeRequest::new(1, "/".into(), None, with(12.5)).is_ok());
    }

    #[test]
    fn extras_over_16_kib_are_refused() {
        let extras = AuditExtras {
            error: Some("e".repeat(MAX_AUDIT_EXTRAS_BYTES)),
            ..Default::default()
        };
        assert!(ConsumeRequest::new(1, "/".into(), None, extras).is_err());
    }

    #[test]
    fn endpoints_are_bounded_and_printable() {
        assert!(ConsumeRequest::simple(1, &"/".repeat(1024)).is_ok());
        assert!(ConsumeRequest::simple(1, &"/".repeat(1025)).is_err());
        assert!(ConsumeRequest::simple(1, "/caf\u{e9}/\u{65e5}").is_ok());
        for bad in [
            "/a\0b",
            "/a\r\nb",
            "/a\u{7}",
            "/a\u{202e}b",
            "/a\u{2066}b",
            "/\u{85}",
        ] {
            assert!(ConsumeRequest::simple(1, bad).is_err(), "{bad:?}");
        }
    }

    fn window(secs: u64, remaining: u64, wait_ms: u64) -> WindowState {
        WindowState {
            window_secs: secs,
            limit: 100,
            remaining,
            reset_after_ms: 10,
            wait_ms,
        }
    }

    fn decision(limit: Option<u64>, used: u64, windows: &[WindowState], limited: bool) -> Decision {
        let id = super::super::ApiKey::presented("k").unwrap().id();
        let period = Period::parse("2026-11").unwrap();
        let mut d = Decision::new(&id, "free".into(), limit, used, period);
        d.set_windows(windows.to_vec(), limited);
        d
    }

    #[test]
    fn the_named_item_has_the_smallest_remaining_ties_to_the_shorter_window() {
        let (a, b) = (window(1, 5, 0), window(60, 5, 0));
        let d = decision(Some(100), 0, &[a, b], false);
        assert_eq!(d.current_item(), Some(RateItem::Window(&a)));
        assert_eq!(d.rate_limit, Some(a));
        // The month is the longest window: a tie goes to the window.
        let d = decision(Some(5), 0, &[b], false);
        assert_eq!(d.current_item(), Some(RateItem::Window(&b)));
        let d = decision(Some(4), 0, &[a, b], false);
        assert_eq!(
            (d.current_item(), d.rate_limit),
            (Some(RateItem::Monthly), None)
        );
        // Unlimited: only windows, or nothing.
        assert_eq!(decision(None, 0, &[b], false).rate_limit, Some(b));
        assert_eq!(decision(None, 0, &[], false).current_item(), None);
    }

    #[test]
    fn a_rate_limited_refusal_names_the_longest_wait() {
        let (a, b, c) = (window(1, 0, 100), window(60, 0, 900), window(3600, 0, 900));
        let d = decision(Some(100), 0, &[a, b, c], true);
        assert_eq!(d.rate_limit, Some(b));
    }

    #[test]
    fn fingerprint_covers_cost_and_endpoint() {
        let a = ConsumeRequest::simple(1, "/a").unwrap().fingerprint();
        assert_ne!(a, ConsumeRequest::simple(2, "/a").unwrap().fingerprint());
        assert_ne!(a, ConsumeRequest::simple(1, "/b").unwrap().fingerprint());
    }
}
