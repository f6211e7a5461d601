//! A key's usage in one period, day by day, and where it is heading (SPEC §9).

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use super::{KeyId, Period};

/// The key record field of a UTC day's usage, `d:2026-11-27`.
pub fn day_field(date: NaiveDate) -> String {
    format!("d:{date}")
}

/// One UTC day of a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayUsage {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Units admitted on that day.
    pub used: u64,
}

/// The period's end at its pace so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forecast {
    /// round(rate × days in the period), rate = used / max(1, elapsed days).
    pub projected_used: u64,
    /// The day the limit was reached, else the day within the period the rate would
    /// reach it; `None` when unlimited or not within the period.
    pub exhausted_on: Option<String>,
}

/// A key's usage in one period, as `GET /v1/usage` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// The key's id.
    pub key_id: String,
    /// The key's tier.
    pub tier: String,
    /// `YYYY-MM`.
    pub period: String,
    /// The effective monthly limit; `None` = unlimited.
    pub limit: Option<u64>,
    /// Units used in the period: the counter while it exists, else the sum of the days.
    pub used: u64,
    /// Units left; `None` = unlimited.
    pub remaining: Option<u64>,
    /// When the period resets.
    pub reset_at: String,
    /// Every UTC day of the period up to today (all of a past period), zero-filled.
    pub days: Vec<DayUsage>,
    /// Where the period is heading.
    pub forecast: Forecast,
}

impl Usage {
    /// The report of `period` for a key with `tier` and `limit`, seen on `today`:
    /// `counter` is the period's counter while the record keeps it (this or the previous
    /// period), `day_used` reads a day's bucket (0 when there is none).
    ///
    /// Units the counter holds beyond the days' sum were counted before the key had
    /// day buckets (a key migrated from v1, or counted before this version): they are
    /// shown on the period's first day, so `days` always sums to `used`.
    pub fn new(
        key_id: &KeyId,
        tier: String,
        limit: Option<u64>,
        period: Period,
        today: NaiveDate,
        counter: Option<u64>,
        day_used: impl Fn(NaiveDate) -> u64,
    ) -> Usage {
        let listed = match Period::of_date(today) {
            current if current == period => today.day(),
            current if current > period => period.days(),
            _ => 0,
        };
        let mut days: Vec<DayUsage> = (1..=listed)
            .map(|n| {
                let date = period.date(n);
                DayUsage {
                    date: date.to_string(),
                    used: day_used(date),
                }
            })
            .collect();
        let sum: u64 = days.iter().map(|d| d.used).sum();
        let used = counter.unwrap_or(sum);
        if let Some(first) = days.first_mut() {
            first.used += used.saturating_sub(sum);
        }
        let forecast = forecast(&days, used, limit, period);
        Usage {
            key_id: key_id.as_str().to_owned(),
            tier,
            period: period.label(),
            limit,
            used,
            remaining: limit.map(|l| l.saturating_sub(used)),
            reset_at: period.reset_at_string(),
            days,
            forecast,
        }
    }
}

/// The forecast of SPEC §9, in exact integer arithmetic; elapsed days are the days
/// listed (today included).
fn forecast(days: &[DayUsage], used: u64, limit: Option<u64>, period: Period) -> Forecast {
    let elapsed = u128::from((days.len() as u64).max(1));
    let length = u128::from(period.days());
    let used_n = u128::from(used);
    // round(used × length / elapsed), halves up.
    let projected = (2 * used_n * length + elapsed) / (2 * elapsed);
    let exhausted_on = limit.and_then(|limit| {
        if used >= limit {
            let mut total = 0u64;
            return days
                .iter()
                .find(|d| {
                    total += d.used;
                    total >= limit
                })
                .map(|d| d.date.clone());
        }
        if used == 0 {
            return None;
        }
        // The first day n with rate × n ≥ limit: n = ceil(limit × elapsed / used).
        let n = (u128::from(limit) * elapsed).div_ceil(used_n);
        (n <= length).then(|| period.date(n as u32).to_string())
    });
    Forecast {
        projected_used: u64::try_from(projected).unwrap_or(u64::MAX),
        exhausted_on,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::ApiKey;

    fn report(period: &str, today: &str, limit: Option<u64>, series: &[u64]) -> Usage {
        let period = Period::parse(period).unwrap();
        let today: NaiveDate = today.parse().unwrap();
        let day_used = |d: NaiveDate| {
            let i = d.day() as usize - 1;
            (Period::of_date(d) == period)
                .then(|| series.get(i).copied())
                .flatten()
                .unwrap_or(0)
        };
        let id = ApiKey::presented("k").unwrap().id();
        Usage::new(&id, "free".into(), limit, period, today, None, day_used)
    }

    #[test]
    fn days_run_to_today_zero_filled_and_sum_to_used() {
        let u = report("2026-11", "2026-11-04", Some(100), &[5, 0, 7]);
        let days: Vec<(&str, u64)> = u.days.iter().map(|d| (d.date.as_str(), d.used)).collect();
        assert_eq!(
            days,
            [
                ("2026-11-01", 5),
                ("2026-11-02", 0),
                ("2026-11-03", 7),
                ("2026-11-04", 0)
            ]
        );
        assert_eq!((u.used, u.remaining), (12, Some(88)));
        assert_eq!(u.reset_at, "2026-12-01T00:00:00Z");
    }

    #[test]
    fn the_forecast_extrapolates_the_pace_so_far() {
        // 10 a day for 10 days of a 30-day month: 300 projected; 200 reached on day 20.
        let u = report("2026-11", "2026-11-10", Some(200), &[10; 10]);
        assert_eq!(u.forecast.projected_used, 300);
        assert_eq!(u.forecast.exhausted_on.as_deref(), Some("2026-11-20"));
        // 400 is not reached within the month.
        let u = report("2026-11", "2026-11-10", Some(400), &[10; 10]);
        assert_eq!(u.forecast.exhausted_on, None);
        // Unlimited: a projection, never an exhaustion day.
        let u = report("2026-11", "2026-11-10", None, &[10; 10]);
        assert_eq!(
            (u.forecast.projected_used, u.forecast.exhausted_on),
            (300, None)
        );
    }

    #[test]
    fn a_reached_limit_names_the_day_it_was_reached() {
        let u = report("2026-11", "2026-11-05", Some(20), &[5, 10, 5, 3, 0]);
        assert_eq!(u.forecast.exhausted_on.as_deref(), Some("2026-11-03"));
        assert_eq!(u.remaining, Some(0));
    }

    #[test]
    fn a_past_period_lists_every_day_and_projects_what_it_used() {
        let u = report("2026-02", "2026-03-15", Some(1000), &[1; 28]);
        assert_eq!(u.days.len(), 28);
        assert_eq!((u.used, u.forecast.projected_used), (28, 28));
        assert_eq!(u.forecast.exhausted_on, None);
    }

    #[test]
    fn a_future_or_empty_period_is_zeros() {
        let u = report("2027-01", "2026-11-10", Some(10), &[]);
        assert!(u.days.is_empty());
        assert_eq!((u.used, u.forecast.projected_used), (0, 0));
        assert_eq!(u.forecast.exhausted_on, None);
        let u = report("2026-10", "2026-11-10", Some(10), &[]);
        assert_eq!((u.days.len(), u.used), (31, 0));
    }

    #[test]
    fn a_counter_beyond_the_days_shows_on_the_first_day() {
        let period = Period::parse("2026-11").unwrap();
        let day_used = |d: NaiveDate| if d.day() == 2 { 3 } else { 0 };
        let id = ApiKey::presented("k").unwrap().id();
        let today = "2026-11-02".parse().unwrap();
        let u = Usage::new(&id, "free".into(), None, period, today, Some(10), day_used);
        assert_eq!(u.used, 10);
        assert_eq!((u.days[0].used, u.days[1].used), (7, 3));
    }
}
