//! Calendar months in UTC, the unit quotas reset on.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, TimeZone, Utc};

/// One calendar month in UTC, e.g. `2026-11`. Ordered in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period {
    year: i32,
    month: u32,
}

impl Period {
    /// The month that contains `now`.
    pub fn containing(now: DateTime<Utc>) -> Self {
        Period {
            year: now.year(),
            month: now.month(),
        }
    }

    /// Parses `YYYY-MM` exactly (four digits, a dash, a month 01-12); else `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let (year, month) = s.split_once('-')?;
        let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(year, 4) || !digits(month, 2) {
            return None;
        }
        let period = Period {
            year: year.parse().ok()?,
            month: month.parse().ok()?,
        };
        (1..=12).contains(&period.month).then_some(period)
    }

    /// The month of a UTC date.
    pub fn of_date(date: NaiveDate) -> Self {
        Period {
            year: date.year(),
            month: date.month(),
        }
    }

    /// Days in the month.
    pub fn days(&self) -> u32 {
        (self.length_secs() / 86_400) as u32
    }

    /// Day `day` (1-based) of the month; past the end it is clamped to the last day.
    pub fn date(&self, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, day.clamp(1, self.days()))
            .expect("a day within its month always exists")
    }

    /// `YYYY-MM`, as used in counter keys and responses.
    pub fn label(&self) -> String {
        format!("{:04}-{:02}", self.year, self.month)
    }

    /// The first instant of the month.
    pub fn start(&self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0)
            .single()
            .expect("the first of a month at midnight UTC always exists")
    }

    /// The first instant of the next month: when the quota resets.
    pub fn reset_at(&self) -> DateTime<Utc> {
        let (year, month) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        Period { year, month }.start()
    }

    /// `reset_at` written exactly as `2026-12-01T00:00:00Z`.
    pub fn reset_at_string(&self) -> String {
        self.reset_at().to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// Whole seconds in the month.
    pub fn length_secs(&self) -> u64 {
        (self.reset_at() - self.start()).num_seconds() as u64
    }

    /// Seconds from `now` to the reset, rounded up, at least 1.
    pub fn secs_to_reset(&self, now: DateTime<Utc>) -> u64 {
        let ms = (self.reset_at() - now).num_milliseconds().max(0) as u64;
        ms.div_ceil(1000).max(1)
    }
}

/// An instant as RFC 3339 UTC with milliseconds, `2026-11-27T19:41:14.123Z`.
pub fn format_instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn reset_is_first_instant_of_next_month() {
        let cases = [
            ("2026-01-15T00:00:00Z", "2026-02-01T00:00:00Z", 31),
            ("2026-11-30T23:59:59.999Z", "2026-12-01T00:00:00Z", 30),
            ("2026-02-10T00:00:00Z", "2026-03-01T00:00:00Z", 28),
            ("2028-02-29T12:00:00Z", "2028-03-01T00:00:00Z", 29),
            ("2026-12-31T23:59:59.999Z", "2027-01-01T00:00:00Z", 31),
        ];
        for (now, reset, days) in cases {
            let p = Period::containing(at(now));
            assert_eq!(p.reset_at_string(), reset, "{now}");
            assert_eq!(p.length_secs(), days * 86_400, "{now}");
        }
    }

    #[test]
    fn secs_to_reset_rounds_up_and_is_at_least_one() {
        let p = Period::containing(at("2026-11-30T23:59:59.999Z"));
        assert_eq!(p.secs_to_reset(at("2026-11-30T23:59:59.999Z")), 1);
        assert_eq!(p.secs_to_reset(at("2026-11-30T23:59:58.500Z")), 2);
        assert_eq!(p.label(), "2026-11");
    }

    #[test]
    fn periods_parse_strictly() {
        assert_eq!(Period::parse("2026-11").unwrap().label(), "2026-11");
        assert_eq!(Period::parse("2028-02").unwrap().days(), 29);
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-11",
            "2026-11-01",
            "2026/11",
            "",
            "２０２６-11",
        ] {
            assert!(Period::parse(bad).is_none(), "{bad}");
        }
        let p = Period::parse("2026-11").unwrap();
        assert_eq!(p.date(30).to_string(), "2026-11-30");
        assert!(p < Period::parse("2026-12").unwrap() && p > Period::parse("2025-12").unwrap());
    }

    #[test]
    fn instants_have_milliseconds() {
        assert_eq!(
            format_instant(at("2026-11-27T19:41:14.123456Z")),
            "2026-11-27T19:41:14.123Z"
        );
    }
}
