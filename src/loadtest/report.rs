//! The end-of-run [`Report`] (JSON or a table) and the once-a-second progress line.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use super::stats::{Outcomes, Stats};
use super::{Options, Progress};

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each connection sends as soon as it has its answer.
    Closed,
    /// Requests at fixed intervals; latency from the scheduled start.
    Open,
}

/// Latency percentiles in milliseconds, over requests that got an HTTP answer.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// Answers measured.
    pub count: u64,
    /// The mean.
    pub mean: f64,
    /// The median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// The slowest answer.
    pub max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// What a run measured; the JSON fields are documented in the module doc.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The URL loaded.
    pub url: String,
    /// The `endpoint` field sent.
    pub endpoint: String,
    /// The cost of every consume.
    pub cost: u64,
    /// The asked share of replays.
    pub replay_share: f64,
    /// Connections used.
    pub connections: usize,
    /// Closed or open loop.
    pub mode: Mode,
    /// Open loop: decisions/s asked for.
    pub rate: Option<f64>,
    /// The asked duration.
    pub duration_secs: f64,
    /// From the start until the last answer.
    pub elapsed_secs: f64,
    /// API keys used.
    pub keys: usize,
    /// Ids of the keys this run created (and deactivated).
    pub created_key_ids: Vec<String>,
    /// Requests finished: the sum of `outcomes`.
    pub total: u64,
    /// `total` per second of `elapsed_secs`.
    pub total_per_sec: f64,
    /// Requests quotad decided (allowed, replayed, denied).
    pub decisions: u64,
    /// `decisions` per second of `elapsed_secs`.
    pub decisions_per_sec: f64,
    /// Counts by outcome.
    pub outcomes: Outcomes,
    /// `other_error` by status code.
    pub other_statuses: BTreeMap<u16, u64>,
    /// Open-loop slots that came due but were never sent.
    pub unsent: u64,
    /// Latency percentiles.
    pub latency_ms: Latency,
    /// The first transport error's message.
    pub first_transport_error: Option<String>,
    /// The run was interrupted before its duration.
    pub stopped_early: bool,
    /// Problems that did not spoil the figures.
    pub warnings: Vec<String>,
}

impl Report {
    /// The report of a run of `options` that measured `stats` in `elapsed`.
    pub(crate) fn new(
        options: &Options,
        keys: usize,
        created_key_ids: Vec<String>,
        stats: &Stats,
        elapsed: Duration,
        warnings: Vec<String>,
    ) -> Report {
        let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let o = stats.outcomes;
        Report {
            url: options.url.clone(),
            endpoint: options.endpoint.clone(),
            cost: options.cost,
            replay_share: options.replay_share,
            connections: options.connections,
            mode: if options.rate.is_some() {
                Mode::Open
            } else {
                Mode::Closed
            },
            rate: options.rate,
            duration_secs: options.duration.as_secs_f64(),
            elapsed_secs: elapsed.as_secs_f64(),
            keys,
            created_key_ids,
            total: o.total(),
            total_per_sec: o.total() as f64 / secs,
            decisions: o.decisions(),
            decisions_per_sec: o.decisions() as f64 / secs,
            outcomes: o,
            other_statuses: stats.other_statuses.clone(),
            unsent: stats.unsent,
            latency_ms: Latency::of(&stats.latency),
            first_transport_error: stats.first_transport_error.clone(),
            stopped_early: options.stop.is_cancelled(),
            warnings,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let load = match self.rate {
            Some(rate) => format!("open loop at {rate} decisions/s"),
            None => "closed loop".to_owned(),
        };
        writeln!(
            f,
            "quotad bench: {} POST /v1/consume, {} connections, {load}, {} keys, cost {}, replay share {}",
            self.url, self.connections, self.keys, self.cost, self.replay_share
        )?;
        writeln!(
            f,
            "  {} requests in {:.2} s: {:.0} decisions/s ({} decisions){}",
            self.total,
            self.elapsed_secs,
            self.decisions_per_sec,
            self.decisions,
            if self.stopped_early {
                ", stopped early"
            } else {
                ""
            }
        )?;
        writeln!(f, "\n  outcome                  count    share")?;
        let o = &self.outcomes;
        let rows = [
            ("allowed", o.allowed),
            ("replayed", o.replayed),
            ("quota_exceeded (429)", o.quota_exceeded),
            ("rate_limited (429)", o.rate_limited),
            ("invalid_key (403)", o.invalid_key),
            ("unavailable (503)", o.unavailable),
            ("other_error", o.other_error),
            ("transport_error", o.transport_error),
        ];
        for (name, n) in rows {
            let share = 100.0 * n as f64 / self.total.max(1) as f64;
            writeln!(f, "  {name:<20} {n:>10} {share:>7.2}%")?;
        }
        for (status, n) in &self.other_statuses {
            writeln!(f, "    status {status}: {n}")?;
        }
        if self.unsent > 0 {
            // Open loop only: slots that came due while quotad was still answering.
            writeln!(f, "  {:<20} {:>10}", "unsent (fell behind)", self.unsent)?;
        }
        let l = &self.latency_ms;
        let from = match self.mode {
            Mode::Open => "from the scheduled start",
            Mode::Closed => "from send",
        };
        writeln!(f, "\n  latency (ms, {from}, {} answers)", l.count)?;
        for (name, v) in [
            ("p50", l.p50),
            ("p90", l.p90),
            ("p99", l.p99),
            ("p99.9", l.p99_9),
            ("max", l.max),
        ] {
            writeln!(f, "  {name:<6} {v:>10.3}")?;
        }
        if let Some(e) = &self.first_transport_error {
            writeln!(f, "\n  first transport error: {e}")?;
        }
        Ok(())
    }
}

/// Shows a progress line on stderr once a second.
pub(crate) struct Ticker {
    style: Progress,
    start: Instant,
    next: Instant,
    last_decisions: u64,
}

impl Ticker {
    /// A ticker whose first line is due a second after `start`.
    pub fn new(style: Progress, start: Instant) -> Ticker {
        Ticker {
            style,
            start,
            next: start + Duration::from_secs(1),
            last_decisions: 0,
        }
    }

    /// Waits until the next line is due (forever when progress is off).
    pub async fn tick(&mut self) {
        if self.style == Progress::Off {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep_until(self.next).await;
        self.next += Duration::from_secs(1);
    }

    /// Prints the line for `stats`, the figures so far.
    pub fn show(&mut self, stats: &Stats) {
        let decisions = stats.outcomes.decisions();
        let line = format!(
            "{:>4.0} s {:>9} decisions/s {:>7} errors  p99 {:.3} ms",
            self.start.elapsed().as_secs_f64(),
            decisions - self.last_decisions,
            stats.outcomes.errors(),
            stats.latency.value_at_quantile(0.99) as f64 / 1000.0,
        );
        self.last_decisions = decisions;
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not stop the run.
        let _ = match self.style {
            Progress::Overwrite => write!(err, "\r{line}\x1b[K"),
            _ => writeln!(err, "{line}"),
        };
        let _ = err.flush();
    }

    /// Ends an overwritten line, so what follows starts on its own.
    pub fn finish(&self) {
        if self.style == Progress::Overwrite && self.next > self.start + Duration::from_secs(1) {
            eprintln!();
        }
    }
}
