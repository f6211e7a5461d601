//! Rate windows beside the monthly quota (SPEC §9): GCRA per key and window.
//!
//! A window of `limit` requests per `window_secs` has the emission interval
//! T = window / limit and a burst of `limit`. Its state is the theoretical arrival time
//! (TAT) of the key; a request passes when TAT' = max(TAT, now) + T is at most
//! `now + window`. `lua/consume_batch.lua` decides; this module reads the same state
//! for `GET /v1/quota` and holds the arithmetic both must agree on.
//!
//! T is rarely a whole number of milliseconds (1000 / 3), and rounding it would let a
//! burst lose or gain a request, so times are kept exactly: a TAT is `ms + num/den`
//! milliseconds, `den` being the limit it was written under, and a window's excess
//! d = (TAT − now) × den is an integer (exact in a Lua double while limit × window in
//! ms stays within 2^53 − 1, which the configuration enforces). d / window is the
//! number of requests the window holds, so after a tier change the requests already
//! made count against the new limit until the next admission rewrites the TAT under it.

use serde::{Deserialize, Serialize};

use super::MAX_EXACT_INT;

/// The longest window a tier may have.
pub const MAX_WINDOW_SECS: u64 = 86_400;

/// One window of a tier: at most `limit` requests per `window_secs` (burst = limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per window, at least 1.
    pub limit: u64,
    /// The window, 1 to 86,400 seconds.
    pub window_secs: u64,
}

impl RateLimit {
    /// The largest limit a window of `window_secs` may have: limit × window in ms must
    /// stay exact in a Lua double.
    pub fn max_limit(window_secs: u64) -> u64 {
        MAX_EXACT_INT / (window_secs.max(1) * 1000)
    }

    /// Its item name in the `RateLimit` headers, `"<secs>s"`.
    pub fn item_name(window_secs: u64) -> String {
        format!("{window_secs}s")
    }

    /// The key record field holding a key's TAT for this window.
    pub fn tat_field(window_secs: u64) -> String {
        format!("tat:{window_secs}")
    }

    /// The window's state at `now_ms` given the stored TAT (`None` or unreadable: an
    /// idle window), consuming nothing.
    pub fn state(&self, stored: Option<&str>, now_ms: i64) -> WindowState {
        let (excess, den) = stored
            .and_then(Tat::parse)
            .map_or((0, self.limit), |tat| (tat.excess(now_ms), tat.den));
        self.state_at(excess, den)
    }

    /// The state for an excess d = max(0, TAT − now) × den (requests held × window in
    /// ms) that drains by `den` per ms, as the script reports it after a decision.
    pub fn state_of_excess(&self, excess: u64, den: u64) -> WindowState {
        self.state_at(u128::from(excess), den.max(1))
    }

    fn state_at(&self, excess: u128, den: u64) -> WindowState {
        let (w, den) = (u128::from(self.window_secs) * 1000, u128::from(den));
        let full = w * u128::from(self.limit);
        let narrow = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
        WindowState {
            window_secs: self.window_secs,
            limit: self.limit,
            remaining: narrow(full.saturating_sub(excess) / w),
            reset_after_ms: narrow(excess.div_ceil(den)),
            wait_ms: narrow((excess + w).saturating_sub(full).div_ceil(den)),
        }
    }
}

/// A window's state at one decision (SPEC §9): what remains, when it is full again,
/// and how long a refused request must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WindowState {
    /// The window, in seconds.
    pub window_secs: u64,
    /// Requests per window.
    pub limit: u64,
    /// floor((window − max(0, TAT − now)) / T).
    pub remaining: u64,
    /// max(0, TAT − now), in ms rounded up: when the window is whole again.
    pub reset_after_ms: u64,
    /// Until a request would pass, in ms rounded up; 0 when it would pass now.
    #[serde(skip)]
    pub wait_ms: u64,
}

impl WindowState {
    /// `reset_after_ms` as header seconds: rounded up, at least 1.
    pub fn reset_secs(&self) -> u64 {
        self.reset_after_ms.div_ceil(1000).max(1)
    }
}

/// A stored TAT: `ms + num/den` milliseconds since the epoch, `den` the limit it was
/// written under; the script writes `"<ms>+<num>/<den>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tat {
    ms: i64,
    num: u64,
    den: u64,
}

impl Tat {
    fn parse(s: &str) -> Option<Tat> {
        let (ms, frac) = s.split_once('+')?;
        let (num, den) = frac.split_once('/')?;
        let tat = Tat {
            ms: ms.parse().ok()?,
            num: num.parse().ok()?,
            den: den.parse().ok()?,
        };
        (tat.den > 0).then_some(tat)
    }

    /// d = max(0, TAT − now) × den: the requests the window holds, times its length.
    fn excess(&self, now_ms: i64) -> u128 {
        if self.ms < now_ms {
            return 0;
        }
        (self.ms - now_ms) as u128 * u128::from(self.den) + u128::from(self.num)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_PER_SEC: RateLimit = RateLimit {
        limit: 10,
        window_secs: 1,
    };

    #[test]
    fn an_idle_window_is_whole() {
        let s = TEN_PER_SEC.state(None, 5_000);
        assert_eq!((s.remaining, s.reset_after_ms, s.wait_ms), (10, 0, 0));
        // A TAT in the past means the same.
        let s = TEN_PER_SEC.state(Some("4000+0/10"), 5_000);
        assert_eq!((s.remaining, s.reset_after_ms, s.wait_ms), (10, 0, 0));
    }

    #[test]
    fn remaining_and_reset_follow_the_spec_formulas() {
        // Three requests at once: TAT = now + 300 ms.
        let s = TEN_PER_SEC.state(Some("5300+0/10"), 5_000);
        assert_eq!((s.remaining, s.reset_after_ms, s.wait_ms), (7, 300, 0));
        // A full burst: TAT = now + window; the next request waits one T.
        let s = TEN_PER_SEC.state(Some("6000+0/10"), 5_000);
        assert_eq!((s.remaining, s.reset_after_ms, s.wait_ms), (0, 1000, 100));
        assert_eq!(s.reset_secs(), 1);
    }

    #[test]
    fn fractional_emission_intervals_stay_exact() {
        // 3 per second: T = 333 1/3 ms; three at once end exactly at now + 1000 ms.
        let three = RateLimit {
            limit: 3,
            window_secs: 1,
        };
        let s = three.state(Some("5666+2/3"), 5_000);
        assert_eq!((s.remaining, s.reset_after_ms), (1, 667));
        let s = three.state(Some("6000+0/3"), 5_000);
        assert_eq!((s.remaining, s.wait_ms), (0, 334));
    }

    #[test]
    fn requests_made_under_another_limit_count_against_the_new_one() {
        // Two requests at once on 2 per second (TAT = now + 1000 ms), read by a tier of
        // 10 per second: 2 of 10 are used.
        let s = TEN_PER_SEC.state(Some("6000+0/2"), 5_000);
        assert_eq!((s.remaining, s.wait_ms), (8, 0));
        // Ten on 10 per second read by 2 per second: full, and the excess drains at the
        // rate it was written with until the next admission.
        let two = RateLimit {
            limit: 2,
            window_secs: 1,
        };
        let s = two.state(Some("6000+0/10"), 5_000);
        assert_eq!((s.remaining, s.wait_ms), (0, 900));
    }

    #[test]
    fn garbage_reads_as_idle_and_the_largest_limit_stays_exact() {
        assert_eq!(TEN_PER_SEC.state(Some("x"), 0).remaining, 10);
        assert_eq!(TEN_PER_SEC.state(Some("600"), 0).remaining, 10);
        assert_eq!(TEN_PER_SEC.state(Some("1+1/0"), 0).remaining, 10);
        let max = RateLimit::max_limit(86_400);
        assert!(u128::from(max) * 86_400_000 <= u128::from(MAX_EXACT_INT));
        assert!(u128::from(max + 1) * 86_400_000 > u128::from(MAX_EXACT_INT));
        assert_eq!(RateLimit::item_name(60), "60s");
        assert_eq!(RateLimit::tat_field(60), "tat:60");
    }
}
