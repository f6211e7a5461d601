//! What one connection measured: the latency histogram and the outcome counts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::conn::Answer;

/// Counts by outcome; they sum to the report's `total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    /// 200, charged.
    pub allowed: u64,
    /// 200 with `Idempotent-Replayed: true`, not charged.
    pub replayed: u64,
    /// 429 `quota_exceeded`.
    pub quota_exceeded: u64,
    /// 429 `rate_limited`.
    pub rate_limited: u64,
    /// 403 `invalid_api_key`.
    pub invalid_key: u64,
    /// 503 (`backend_unavailable`, `audit_backlog_full`).
    pub unavailable: u64,
    /// Any other status.
    pub other_error: u64,
    /// No HTTP answer: connect, I/O, timeout.
    pub transport_error: u64,
}

impl Outcomes {
    /// Every request counted.
    pub fn total(&self) -> u64 {
        self.decisions() + self.errors()
    }

    /// Requests quotad decided: allowed, replayed or denied.
    pub fn decisions(&self) -> u64 {
        self.allowed + self.replayed + self.quota_exceeded + self.rate_limited
    }

    /// Requests that got no decision.
    pub fn errors(&self) -> u64 {
        self.invalid_key + self.unavailable + self.other_error + self.transport_error
    }

    fn add(&mut self, o: &Outcomes) {
        self.allowed += o.allowed;
        self.replayed += o.replayed;
        self.quota_exceeded += o.quota_exceeded;
        self.rate_limited += o.rate_limited;
        self.invalid_key += o.invalid_key;
        self.unavailable += o.unavailable;
        self.other_error += o.other_error;
        self.transport_error += o.transport_error;
    }
}

/// How quotad answered one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allowed,
    Replayed,
    QuotaExceeded,
    RateLimited,
    InvalidKey,
    Unavailable,
    Other(StatusCode),
}

/// The only field of an error body the bench reads.
#[derive(Deserialize)]
struct ErrorCode {
    error: Option<String>,
}

impl Outcome {
    /// Sorts an answer; only a 429's body is parsed (its code tells the two apart).
    pub fn of(answer: &Answer) -> Outcome {
        match answer.status {
            StatusCode::OK if answer.replayed => Outcome::Replayed,
            StatusCode::OK => Outcome::Allowed,
            StatusCode::TOO_MANY_REQUESTS => {
                match serde_json::from_slice::<ErrorCode>(&answer.body) {
                    Ok(ErrorCode { error: Some(code) }) if code == "rate_limited" => {
                        Outcome::RateLimited
                    }
                    _ => Outcome::QuotaExceeded,
                }
            }
            StatusCode::FORBIDDEN => Outcome::InvalidKey,
            StatusCode::SERVICE_UNAVAILABLE => Outcome::Unavailable,
            other => Outcome::Other(other),
        }
    }
}

/// 1 µs to 1 hour at 3 significant digits; open-loop queueing can get long.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// One connection's figures (and, merged, the run's).
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    /// Latency in µs of every request that got an HTTP answer.
    pub latency: Histogram<u64>,
    pub outcomes: Outcomes,
    pub other_statuses: BTreeMap<u16, u64>,
    pub unsent: u64,
    pub first_transport_error: Option<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: histogram(),
            outcomes: Outcomes::default(),
            other_statuses: BTreeMap::new(),
            unsent: 0,
            first_transport_error: None,
        }
    }
}

impl Stats {
    /// Counts an answered request and its latency.
    pub fn answered(&mut self, outcome: Outcome, latency: Duration) {
        let o = &mut self.outcomes;
        match outcome {
            Outcome::Allowed => o.allowed += 1,
            Outcome::Replayed => o.replayed += 1,
            Outcome::QuotaExceeded => o.quota_exceeded += 1,
            Outcome::RateLimited => o.rate_limited += 1,
            Outcome::InvalidKey => o.invalid_key += 1,
            Outcome::Unavailable => o.unavailable += 1,
            Outcome::Other(status) => {
                o.other_error += 1;
                *self.other_statuses.entry(status.as_u16()).or_default() += 1;
            }
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros.max(1));
    }

    /// Counts a request that got no answer.
    pub fn transport_error(&mut self, error: &super::TransportError) {
        self.outcomes.transport_error += 1;
        if self.first_transport_error.is_none() {
            self.first_transport_error = Some(error.to_string());
        }
    }

    fn add(&mut self, other: &Stats) {
        self.latency
            .add(&other.latency)
            .expect("every histogram has the same bounds");
        self.outcomes.add(&other.outcomes);
        for (status, n) in &other.other_statuses {
            *self.other_statuses.entry(*status).or_default() += n;
        }
        self.unsent += other.unsent;
        if self.first_transport_error.is_none() {
            self.first_transport_error = other.first_transport_error.clone();
        }
    }

    /// The sum of every connection's figures so far.
    pub fn merged(shards: &[Arc<Mutex<Stats>>]) -> Stats {
        let mut all = Stats::default();
        for shard in shards {
            // A panicked worker leaves counts that are still right; keep them.
            all.add(&shard.lock().unwrap_or_else(PoisonError::into_inner));
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn answer(status: u16, replayed: bool, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            replayed,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn answers_sort_into_outcomes_by_status_header_and_429_code() {
        let cases = [
            (answer(200, false, "{}"), Outcome::Allowed),
            (answer(200, true, "{}"), Outcome::Replayed),
            (
                answer(429, false, r#"{"error":"quota_exceeded"}"#),
                Outcome::QuotaExceeded,
            ),
            (
                answer(429, false, r#"{"error":"rate_limited"}"#),
                Outcome::RateLimited,
            ),
            (answer(403, false, "{}"), Outcome::InvalidKey),
            (answer(503, false, "{}"), Outcome::Unavailable),
            (
                answer(400, false, "{}"),
                Outcome::Other(StatusCode::BAD_REQUEST),
            ),
        ];
        for (answer, expected) in cases {
            assert_eq!(Outcome::of(&answer), expected, "{answer:?}");
        }
    }

    #[test]
    fn merged_stats_sum_counts_and_latencies() {
        let shards: Vec<_> = (0..3)
            .map(|_| Arc::new(Mutex::new(Stats::default())))
            .collect();
        for (i, shard) in shards.iter().enumerate() {
            let mut s = shard.lock().unwrap();
            s.answered(
                Outcome::Allowed,
                Duration::from_micros(100 * (i as u64 + 1)),
            );
            s.answered(
                Outcome::Other(StatusCode::BAD_REQUEST),
                Duration::from_micros(5),
            );
        }
        let all = Stats::merged(&shards);
        assert_eq!(all.outcomes.allowed, 3);
        assert_eq!(all.outcomes.other_error, 3);
        assert_eq!(all.outcomes.total(), 6);
        assert_eq!(all.other_statuses, BTreeMap::from([(400, 3)]));
        assert_eq!(all.latency.len(), 6);
        assert_eq!(all.latency.max(), 300);
    }
}
