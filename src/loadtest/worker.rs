//! One connection's loop: pick a key and an idempotency key, send at the scheduled
//! instant, record the answer.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::Method;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::{bearer, Conn, Target};
use super::stats::{Outcome, Stats};
use super::Options;
use crate::quota::ApiKey;

/// How many allowed idempotency keys a connection remembers for replays.
const RECENT: usize = 64;
/// Pause after a failed reconnect, so a dead server is not hammered in a loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// What every connection shares: the request template and the schedule.
pub(crate) struct Plan {
    target: Arc<Target>,
    /// `Authorization` per key, built once.
    auth: Vec<HeaderValue>,
    /// `{"cost":N,"endpoint":"…"` — the body up to the idempotency key.
    body_head: String,
    replay_share: f64,
    /// Fresh idempotency keys are sent only when some requests replay them.
    idempotent: bool,
    /// Unique per run, so two runs never replay each other's keys.
    run_id: String,
    start: Instant,
    deadline: Instant,
    /// Open loop: the gap between two slots of one connection (connections / rate).
    interval: Option<Duration>,
    /// Open loop: the gap between slots of neighbouring connections (1 / rate).
    stagger: Duration,
    stop: CancellationToken,
}

impl Plan {
    /// The plan for `options`, starting at `start`.
    pub fn new(options: &Options, target: Arc<Target>, keys: &[ApiKey], start: Instant) -> Plan {
        let endpoint = serde_json::to_string(&options.endpoint).expect("a string serializes");
        let per_conn = |rate: f64| Duration::from_secs_f64(options.connections as f64 / rate);
        Plan {
            target,
            auth: keys
                .iter()
                .map(|k| bearer(k.expose()).expect("keys are 0x21-0x7E, valid in a header"))
                .collect(),
            body_head: format!(r#"{{"cost":{},"endpoint":{endpoint}"#, options.cost),
            replay_share: options.replay_share,
            idempotent: options.replay_share > 0.0,
            run_id: format!("{:08x}", rand::random::<u32>()),
            start,
            deadline: start + options.duration,
            interval: options.rate.map(per_conn),
            stagger: options
                .rate
                .map_or(Duration::ZERO, |r| Duration::from_secs_f64(1.0 / r)),
            stop: options.stop.clone(),
        }
    }

    /// When slot `k` of connection `id` is due; `None` once past the deadline.
    fn slot(&self, id: usize, k: u64) -> Option<Instant> {
        let at = match self.interval {
            None => Instant::now(),
            Some(interval) => {
                self.start + self.stagger.mul_f64(id as f64) + interval.mul_f64(k as f64)
            }
        };
        (at < self.deadline).then_some(at)
    }
}

/// The next request of one connection: which key, which idempotency key.
struct Picker {
    worker: usize,
    rng: SmallRng,
    sent: u64,
    /// Allowed (key, idempotency key) pairs; only allowed decisions are stored.
    recent: Vec<(usize, String)>,
}

impl Picker {
    fn next(&mut self, plan: &Plan) -> (usize, Option<String>) {
        if !self.recent.is_empty() && self.rng.random_bool(plan.replay_share) {
            let (key, idem) = &self.recent[self.rng.random_range(0..self.recent.len())];
            return (*key, Some(idem.clone()));
        }
        let key = self.rng.random_range(0..plan.auth.len());
        self.sent += 1;
        let idem = plan
            .idempotent
            .then(|| format!("bench-{}-{}-{}", plan.run_id, self.worker, self.sent));
        (key, idem)
    }

    fn remember(&mut self, key: usize, idem: String) {
        if self.recent.len() < RECENT {
            self.recent.push((key, idem));
        } else {
            let slot = self.rng.random_range(0..RECENT);
            self.recent[slot] = (key, idem);
        }
    }
}

/// Runs connection `id` until the deadline or the stop token; an in-flight request
/// is always finished (bounded by its timeout) so every charge is counted.
pub(crate) async fn work(id: usize, conn: Conn, plan: Arc<Plan>, stats: Arc<Mutex<Stats>>) {
    let mut worker = Worker {
        id,
        conn: Some(conn),
        picker: Picker {
            worker: id,
            rng: SmallRng::from_rng(&mut rand::rng()),
            sent: 0,
            recent: Vec::new(),
        },
        plan,
        stats,
    };
    worker.run().await;
}

/// One connection's state between requests.
struct Worker {
    id: usize,
    /// `None` after a transport error: the next request reconnects first.
    conn: Option<Conn>,
    picker: Picker,
    plan: Arc<Plan>,
    stats: Arc<Mutex<Stats>>,
}

impl Worker {
    async fn run(&mut self) {
        let plan = self.plan.clone();
        let mut k = 0;
        while let Some(scheduled) = plan.slot(self.id, k) {
            tokio::select! {
                () = tokio::time::sleep_until(scheduled) => {}
                () = plan.stop.cancelled() => return,
            }
            if plan.stop.is_cancelled() {
                return;
            }
            if Instant::now() >= plan.deadline {
                // Open loop, running late: these slots came due but were never sent.
                let unsent = (k..)
                    .take_while(|&k| plan.slot(self.id, k).is_some())
                    .count();
                self.stats().unsent += unsent as u64;
                return;
            }
            k += 1;
            self.step(scheduled).await;
        }
    }

    /// Sends one consume (reconnecting first if needed) and records the answer,
    /// its latency counted from `scheduled`.
    async fn step(&mut self, scheduled: Instant) {
        let plan = self.plan.clone();
        // quotad closes connections idle past its header timeout (slow open loops):
        // reconnecting then is not an error, nothing was sent.
        let mut conn = match self.conn.take() {
            Some(conn) if !conn.is_closed() => conn,
            _ => match Conn::open(&plan.target).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    self.stats().transport_error(&e);
                    pause(&plan).await;
                    return;
                }
            },
        };
        let (key, idem) = self.picker.next(&plan);
        let body = match &idem {
            Some(idem) => format!(r#"{},"idempotency_key":"{idem}"}}"#, plan.body_head),
            None => format!("{}}}", plan.body_head),
        };
        let req = plan.target.request(
            Method::POST,
            "/v1/consume",
            Some(&plan.auth[key]),
            Bytes::from(body),
        );
        // After a transport error the connection is dropped: its state is unknown.
        let answer = conn.send(req).await;
        match answer {
            Ok(answer) => {
                self.conn = Some(conn);
                let outcome = Outcome::of(&answer);
                self.stats().answered(outcome, scheduled.elapsed());
                if let (Outcome::Allowed, Some(idem)) = (outcome, idem) {
                    self.picker.remember(key, idem);
                }
            }
            Err(e) => self.stats().transport_error(&e),
        }
    }

    fn stats(&self) -> MutexGuard<'_, Stats> {
        // A panic elsewhere leaves counts that are still right; keep counting.
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Waits [`RECONNECT_PAUSE`] unless the run is stopped first.
async fn pause(plan: &Plan) {
    tokio::select! {
        () = tokio::time::sleep(RECONNECT_PAUSE) => {}
        () = plan.stop.cancelled() => {}
    }
}
