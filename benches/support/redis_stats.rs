//! What Redis itself says a phase cost: `INFO cpu` (the whole process, background
//! threads such as the AOF fsync included) and `INFO commandstats` (calls and µs per
//! command; commands a script calls are counted on their own lines and inside the
//! script's EVALSHA too).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Commands the harness itself sends while measuring; left out of the breakdown.
const HARNESS_COMMANDS: &[&str] = &["info", "config|resetstat"];

/// XLEN calls the harness has sent (backlog samples, from any probe), so the
/// breakdown counts only quotad's own.
static HARNESS_XLEN: AtomicU64 = AtomicU64::new(0);

/// A connection of the harness alone, for Redis's accounting.
pub struct Probe {
    conn: redis::Connection,
    /// [`HARNESS_XLEN`] at the last reset.
    xlen_at_reset: u64,
}

/// Redis CPU seconds so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisCpu {
    /// `used_cpu_sys + used_cpu_user`: the server process, every thread.
    pub server: f64,
    /// `used_cpu_sys_children + used_cpu_user_children`: forks (AOF rewrite, RDB).
    pub children: f64,
}

/// One line of `INFO commandstats`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommandStat {
    /// Calls, from clients and from scripts.
    pub calls: u64,
    /// µs spent in the command (for EVALSHA: the whole script).
    pub usec: u64,
    /// Calls that returned an error.
    pub failed: u64,
}

/// `INFO commandstats` by command name (`evalsha`, `xadd`, `config|get`, …).
pub type Commands = BTreeMap<String, CommandStat>;

impl Probe {
    /// Connects to `client`'s server.
    pub fn new(client: &redis::Client) -> Probe {
        Probe {
            conn: client.get_connection().expect("probe connection to redis"),
            xlen_at_reset: HARNESS_XLEN.load(Ordering::Relaxed),
        }
    }

    /// `INFO cpu`.
    pub fn cpu(&mut self) -> RedisCpu {
        let info = self.info("cpu");
        let field = |name: &str| -> f64 {
            info_field(&info, name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("INFO cpu has no {name}"))
        };
        RedisCpu {
            server: field("used_cpu_sys") + field("used_cpu_user"),
            children: field("used_cpu_sys_children") + field("used_cpu_user_children"),
        }
    }

    /// `CONFIG RESETSTAT`: commandstats start again from zero.
    pub fn reset_stats(&mut self) {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query::<()>(&mut self.conn)
            .expect("CONFIG RESETSTAT");
        self.xlen_at_reset = HARNESS_XLEN.load(Ordering::Relaxed);
    }

    /// `INFO commandstats` since the last reset, without the harness's own commands.
    pub fn commands(&mut self) -> Commands {
        let own_xlen = HARNESS_XLEN.load(Ordering::Relaxed) - self.xlen_at_reset;
        let info = self.info("commandstats");
        let mut out = Commands::new();
        for line in info.lines() {
            let Some((name, stats)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            if HARNESS_COMMANDS.contains(&name) {
                continue;
            }
            let get = |key: &str| -> u64 {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let mut stat = CommandStat {
                calls: get("calls"),
                usec: get("usec"),
                failed: get("failed_calls"),
            };
            if name == "xlen" {
                stat.calls = stat.calls.saturating_sub(own_xlen);
            }
            if stat.calls > 0 {
                out.insert(name.to_owned(), stat);
            }
        }
        out
    }

    /// Audit entries waiting in the `shards` shard streams (sum of XLEN, what
    /// `audit.max_backlog` bounds).
    pub fn backlog(&mut self, shards: u32) -> u64 {
        let mut pipe = redis::pipe();
        for shard in 0..shards {
            pipe.cmd("XLEN")
                .arg(quotad::store::keys::audit_stream(quotad::quota::Shard(
                    shard,
                )));
        }
        let lens: Vec<u64> = pipe
            .query(&mut self.conn)
            .expect("XLEN of the audit streams");
        HARNESS_XLEN.fetch_add(u64::from(shards), Ordering::Relaxed);
        lens.iter().sum()
    }

    /// `FLUSHDB` of database `db` (synchronous, so no background free runs into the
    /// next phase's CPU), back on database 0 afterwards.
    pub fn flush_db(&mut self, db: u8) {
        redis::pipe()
            .cmd("SELECT")
            .arg(db)
            .cmd("FLUSHDB")
            .arg("SYNC")
            .cmd("SELECT")
            .arg(0)
            .query::<()>(&mut self.conn)
            .expect("FLUSHDB");
    }

    /// The connection, for the harness's own setup commands.
    pub fn conn(&mut self) -> &mut redis::Connection {
        &mut self.conn
    }

    fn info(&mut self, section: &str) -> String {
        redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn)
            .unwrap_or_else(|e| panic!("INFO {section}: {e}"))
    }
}

/// `name:value` of an INFO reply.
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// What one phase cost, measured between [`Window::open`] and [`Window::close`].
#[derive(Debug, Clone)]
pub struct Costs {
    /// Wall seconds of the window (load and, with a writer, the drain after it).
    pub secs: f64,
    /// Redis server CPU seconds.
    pub redis_cpu: f64,
    /// Redis fork CPU seconds (AOF rewrite), reported apart.
    pub redis_children: f64,
    /// CPU seconds of each watched process, by label.
    pub processes: Vec<(String, f64)>,
    /// Commands Redis ran.
    pub commands: Commands,
}

/// A phase being measured: Redis CPU, commandstats and process CPU at its start.
pub struct Window {
    started: Instant,
    redis: RedisCpu,
    processes: Vec<(String, Option<u32>, f64)>,
}

impl Window {
    /// Resets commandstats and reads every counter; `processes` are (label, pid),
    /// `None` for this process.
    pub fn open(probe: &mut Probe, processes: &[(&str, Option<u32>)]) -> Window {
        probe.reset_stats();
        let processes = processes
            .iter()
            .map(|(label, pid)| ((*label).to_owned(), *pid, super::process::cpu_seconds(*pid)))
            .collect();
        Window {
            started: Instant::now(),
            redis: probe.cpu(),
            processes,
        }
    }

    /// Reads every counter again; the differences are the phase's costs.
    pub fn close(self, probe: &mut Probe) -> Costs {
        let redis = probe.cpu();
        let commands = probe.commands();
        Costs {
            secs: self.started.elapsed().as_secs_f64(),
            redis_cpu: redis.server - self.redis.server,
            redis_children: redis.children - self.redis.children,
            processes: self
                .processes
                .into_iter()
                .map(|(label, pid, before)| (label, super::process::cpu_seconds(pid) - before))
                .collect(),
            commands,
        }
    }
}

/// Samples the audit backlog every 250 ms on a thread of its own while a phase runs.
/// Its XLENs cost Redis a few µs a second, inside the phase's CPU figure.
pub struct BacklogSampler {
    running: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl BacklogSampler {
    /// Starts sampling the `shards` streams of `client`'s server.
    pub fn start(client: &redis::Client, shards: u32) -> BacklogSampler {
        let running = Arc::new(AtomicBool::new(true));
        let mut probe = Probe::new(client);
        let flag = running.clone();
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            while flag.load(Ordering::Relaxed) {
                max = max.max(probe.backlog(shards));
                std::thread::sleep(Duration::from_millis(250));
            }
            max
        });
        BacklogSampler { running, thread }
    }

    /// Stops sampling; the largest backlog seen.
    pub fn stop(self) -> u64 {
        self.running.store(false, Ordering::Relaxed);
        self.thread.join().expect("backlog sampler")
    }
}

/// Waits until the backlog is 0 or `timeout` passes; the backlog at the end.
pub fn wait_drained(probe: &mut Probe, shards: u32, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let backlog = probe.backlog(shards);
        if backlog == 0 || Instant::now() >= deadline {
            return backlog;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The audit backlog of one phase: during the load, right after it, and after the drain.
#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    /// Whether an audit writer was running (without one the backlog stays).
    pub writer: bool,
    /// The largest sample during the load.
    pub max: u64,
    /// Right after the load stopped.
    pub after: u64,
    /// When the drain ended (0 unless the writer did not keep up).
    pub left: u64,
    /// How long the drain took.
    pub drained_in: Duration,
}

impl Backlog {
    /// Stops `sampler`, reads the backlog, and with a writer waits up to `timeout` for
    /// it to drain.
    pub fn settle(
        sampler: BacklogSampler,
        probe: &mut Probe,
        shards: u32,
        writer: bool,
        timeout: Duration,
    ) -> Backlog {
        let max = sampler.stop();
        let after = probe.backlog(shards);
        let started = Instant::now();
        let left = match writer {
            true => wait_drained(probe, shards, timeout),
            false => after,
        };
        Backlog {
            writer,
            max,
            after,
            left,
            drained_in: started.elapsed(),
        }
    }

    /// False when a writer ran and the backlog did not drain to 0.
    pub fn drained(&self) -> bool {
        !self.writer || self.left == 0
    }

    /// Prints the three figures.
    pub fn print(&self) {
        let secs = self.drained_in.as_secs_f64();
        let end = match (self.writer, self.left) {
            (false, _) => "no writer, so it stays".to_owned(),
            (true, 0) => format!("0 after {secs:.2} s (drained)"),
            (true, n) => format!("STILL {n} after {secs:.1} s: the writer did not keep up"),
        };
        println!(
            "  audit backlog: at most {} entries during the load (sampled every 250 ms), \
             {} right after it, {end}",
            self.max, self.after
        );
    }
}
