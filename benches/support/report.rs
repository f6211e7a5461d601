//! The printed figures: latency percentiles, costs per decision, the commandstats
//! breakdown, the batch-size histogram and the ratios to the reference.

use hdrhistogram::Histogram;

use super::redis_stats::{Commands, Costs};
use super::reference::RefRun;

/// A latency histogram in µs, 1 µs to 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// `p50 … p99 … p99.9 …` in ms.
pub fn percentiles(latency: &Histogram<u64>) -> String {
    let q = |p: f64| latency.value_at_quantile(p) as f64 / 1000.0;
    format!(
        "p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
        q(0.5),
        q(0.99),
        q(0.999)
    )
}

/// µs per decision of `seconds` spread over `decisions`.
pub fn per_decision(seconds: f64, decisions: u64) -> f64 {
    seconds * 1e6 / decisions.max(1) as f64
}

/// Prints Redis CPU and each watched process's CPU per decision.
pub fn print_costs(costs: &Costs, decisions: u64, process_note: &str) {
    println!(
        "  Redis CPU: {:.2} µs/decision ({:.2} s over {:.1} s{})",
        per_decision(costs.redis_cpu, decisions),
        costs.redis_cpu,
        costs.secs,
        children_note(costs)
    );
    for (label, secs) in &costs.processes {
        println!(
            "  {label} CPU: {:.2} µs/decision ({secs:.2} s){process_note}",
            per_decision(*secs, decisions)
        );
    }
}

fn children_note(costs: &Costs) -> String {
    if costs.redis_children > 0.0 {
        format!(
            "; forks such as an AOF rewrite took {:.2} s more",
            costs.redis_children
        )
    } else {
        String::new()
    }
}

/// Prints every command Redis ran in the phase: calls and µs per decision.
pub fn print_commands(commands: &Commands, decisions: u64) {
    let n = decisions.max(1) as f64;
    println!(
        "  commandstats per decision ({decisions} decisions; EVALSHA's µs include the \
         commands its scripts call, which also have their own lines):"
    );
    println!(
        "    {:<18} {:>10} {:>12} {:>10}",
        "command", "calls/dec", "µs/dec", "µs/call"
    );
    let mut rows: Vec<_> = commands.iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1.usec));
    for (name, stat) in rows {
        println!(
            "    {name:<18} {:>10.4} {:>12.3} {:>10.2}{}",
            stat.calls as f64 / n,
            stat.usec as f64 / n,
            stat.usec as f64 / stat.calls.max(1) as f64,
            if stat.failed > 0 {
                format!("  ({} failed)", stat.failed)
            } else {
                String::new()
            }
        );
    }
    let outside: u64 = commands
        .iter()
        .filter(|(name, _)| !name.starts_with("eval"))
        .map(|(_, s)| s.usec)
        .sum();
    let scripts: u64 = commands
        .iter()
        .filter(|(name, _)| name.starts_with("eval"))
        .map(|(_, s)| s.usec)
        .sum();
    println!(
        "    EVALSHA total {:.3} µs/dec; every other command together {:.3} µs/dec",
        scripts as f64 / n,
        outside as f64 / n
    );
}

/// Prints one reference run with its costs and breakdown.
pub fn print_reference(run: &RefRun) {
    println!(
        "minimal one-call consume, redis-benchmark EVALSHA -c {} {}: {:.0} decisions/s \
         ({} calls, {} replays), p50 {:.3} ms, p99 {:.3} ms",
        run.clients,
        pipeline_label(run.pipeline),
        run.rate,
        run.requests,
        run.replays,
        run.p50_ms,
        run.p99_ms
    );
    print_costs(&run.costs, run.requests, "");
    print_commands(&run.costs.commands, run.requests);
}

/// `unpipelined` or `-P 16`.
pub fn pipeline_label(pipeline: usize) -> String {
    if pipeline <= 1 {
        "unpipelined".to_owned()
    } else {
        format!("-P {pipeline}")
    }
}

/// Redis CPU µs per decision of a reference run.
pub fn ref_redis_us(run: &RefRun) -> f64 {
    per_decision(run.costs.redis_cpu, run.requests)
}

/// Cumulative bucket counts of one Prometheus histogram, read from a text exposition.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    /// (upper bound, cumulative count), `+Inf` as infinity.
    pub le: Vec<(f64, u64)>,
    /// `_sum`.
    pub sum: f64,
    /// `_count`.
    pub count: u64,
}

impl Buckets {
    /// The histogram `name` in `text` (empty when absent).
    pub fn parse(text: &str, name: &str) -> Buckets {
        let mut out = Buckets::default();
        let bucket = format!("{name}_bucket{{");
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            if let Some(labels) = series.strip_prefix(&bucket) {
                let le = labels
                    .split("le=\"")
                    .nth(1)
                    .and_then(|v| v.split('"').next())
                    .map(|v| v.parse().unwrap_or(f64::INFINITY))
                    .unwrap_or(f64::INFINITY);
                out.le.push((le, value as u64));
            } else if series == format!("{name}_sum") {
                out.sum = value;
            } else if series == format!("{name}_count") {
                out.count = value as u64;
            }
        }
        out
    }

    /// What was added between `before` and `self`.
    pub fn since(&self, before: &Buckets) -> Buckets {
        let old = |le: f64| {
            before
                .le
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0, |(_, c)| *c)
        };
        Buckets {
            le: self.le.iter().map(|(le, c)| (*le, c - old(*le))).collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// Prints count, mean and the share of batches in each bucket.
    pub fn print(&self, what: &str) {
        if self.count == 0 {
            println!("  {what}: none recorded");
            return;
        }
        let mut parts = Vec::new();
        let mut below = 0;
        let mut lower = 0.0;
        for (le, cumulative) in &self.le {
            let here = cumulative - below;
            if here > 0 {
                let range = if *le == f64::INFINITY {
                    format!(">{lower}")
                } else if lower + 1.0 >= *le {
                    format!("{le}")
                } else {
                    format!("{}-{le}", lower + 1.0)
                };
                parts.push(format!(
                    "{range}: {:.1}%",
                    here as f64 * 100.0 / self.count as f64
                ));
            }
            below = *cumulative;
            lower = *le;
        }
        println!(
            "  {what}: {} batches, mean {:.1} decisions per EVALSHA; {}",
            self.count,
            self.sum / self.count as f64,
            parts.join(", ")
        );
    }

    /// Mean of the recorded values.
    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }
}

/// Prints how many audit rows the writer committed to `db` against the admissions
/// that should have produced them (the writer must have stopped).
pub fn print_persisted(db: &std::path::Path, admitted: u64) {
    let rows = rusqlite::Connection::open(db).and_then(|c| {
        c.query_row("SELECT COUNT(*) FROM audit_rows", [], |r| {
            r.get::<_, i64>(0)
        })
    });
    match rows {
        Ok(rows) => println!(
            "  audit rows persisted: {rows} for {admitted} admitted decisions{}",
            if rows as u64 == admitted {
                ""
            } else {
                " (MISMATCH)"
            }
        ),
        Err(e) => println!("  audit rows persisted: cannot count ({e})"),
    }
}

/// Prints the machine's load average: the benches share their cores with whatever
/// else runs, and the figures are only as quiet as the machine was.
pub fn print_load_average(when: &str) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let fields: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "machine {when}: load average {} (1, 5, 15 min) on {cores} cores",
        fields.join(" ")
    );
}
