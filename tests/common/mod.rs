//! Shared test fixtures: a real `redis-server` per test, and an engine on it.
#![allow(dead_code)]

pub mod serve;

pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use quotad::engine::{Clock, Engine, EngineSettings, NewKey};
use quotad::quota::{ApiKey, Catalogue};
use quotad::store::Store;

/// A `redis-server` of this test alone: own temp dir, a unix socket, killed on drop.
/// The binary is `redis-server` on PATH, or `QUOTAD_TEST_REDIS_SERVER`.
pub struct TestRedis {
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl TestRedis {
    /// Starts a server and waits until it answers PING.
    pub fn start() -> Self {
        Self::with_args(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `--appendonly yes`).
    pub fn with_args(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut redis = TestRedis {
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        redis.spawn();
        redis
    }

    fn binary() -> String {
        std::env::var("QUOTAD_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
    }

    fn spawn(&mut self) {
        let child = Command::new(Self::binary())
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(self.socket())
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); tests need a real Redis: \
                     apt-get install -y redis-server, or set QUOTAD_TEST_REDIS_SERVER",
                    Self::binary()
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = self.client();
        loop {
            if let Ok(mut conn) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The unix socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The server's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `redis+unix://…` for this server.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// A plain client, for assertions on raw Redis state.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("valid redis url")
    }

    /// A blocking connection, for assertions on raw Redis state.
    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().expect("redis connection")
    }

    /// SIGKILLs the server (its data is gone unless appendonly was on).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis is running").id();
        let status = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    /// Starts the server again at the same socket.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A clock tests can set.
#[derive(Clone)]
pub struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    /// A clock standing at `rfc3339`.
    pub fn at(rfc3339: &str) -> Self {
        TestClock(Arc::new(Mutex::new(parse_time(rfc3339))))
    }

    /// Moves the clock to `rfc3339`.
    pub fn set(&self, rfc3339: &str) {
        *self.0.lock().unwrap() = parse_time(rfc3339);
    }

    /// The clock as the engine takes it.
    pub fn clock(&self) -> Clock {
        let inner = self.0.clone();
        Arc::new(move || *inner.lock().unwrap())
    }
}

/// Parses an RFC 3339 instant.
pub fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// An engine on `redis` with default settings and the system clock, started.
pub async fn engine(redis: &TestRedis) -> Engine {
    engine_with(
        redis,
        EngineSettings::default(),
        quotad::engine::system_clock(),
    )
    .await
}

/// An engine on `redis` with its own pool, started.
pub async fn engine_with(redis: &TestRedis, settings: EngineSettings, clock: Clock) -> Engine {
    engine_with_catalogue(redis, Catalogue::default(), settings, clock).await
}

/// An engine on `redis` with its own pool and `catalogue` instead of the default tiers,
/// started.
pub async fn engine_with_catalogue(
    redis: &TestRedis,
    catalogue: Catalogue,
    settings: EngineSettings,
    clock: Clock,
) -> Engine {
    let store = Store::new(&redis.url(), Duration::from_millis(250), 16).expect("store");
    let engine = Engine::new(store, catalogue, settings, clock);
    engine.start().await.expect("engine starts");
    engine
}

/// Creates a generated key on `tier` and returns the plaintext.
pub async fn new_key(engine: &Engine, tier: &str) -> ApiKey {
    new_key_with(engine, tier, None).await
}

/// Creates a generated key on `tier` with an optional override.
pub async fn new_key_with(engine: &Engine, tier: &str, monthly_limit: Option<u64>) -> ApiKey {
    engine
        .create_key(NewKey {
            tier: tier.to_owned(),
            key: None,
            name: None,
            monthly_limit,
        })
        .await
        .expect("key created")
        .key
        .expect("a generated key is returned")
}

/// A quotad HTTP server of this test alone, on 127.0.0.1:0, over an engine.
pub struct TestApp {
    /// The server's address.
    pub addr: std::net::SocketAddr,
    /// The admin token the server accepts.
    pub admin: String,
    /// Cancelling it starts the drain.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The server task; yields whether the drain finished in time.
    pub server: Option<tokio::task::JoinHandle<bool>>,
    /// The engine the server runs on (for setting up keys directly).
    pub engine: Engine,
    /// A client for the tests.
    pub client: reqwest::Client,
}

impl TestApp {
    /// A server on `redis` with default settings and the system clock.
    pub async fn start(redis: &TestRedis) -> TestApp {
        Self::with_engine(engine(redis).await, unregistered_metrics()).await
    }

    /// A server over `engine`, rendering `metrics` on `/metrics`.
    pub async fn with_engine(
        engine: Engine,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    ) -> TestApp {
        Self::with_limits(engine, metrics, quotad::http::HttpLimits::default()).await
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&self.admin)
    }

    /// `GET /v1/quota` with `key` as Bearer.
    pub async fn quota(&self, key: &ApiKey) -> reqwest::Response {
        self.client
            .get(self.url("/v1/quota"))
            .bearer_auth(key.expose())
            .send()
            .await
            .expect("quota request")
    }

    /// `POST /v1/consume` with `key` as Bearer and `body`.
    pub async fn consume(&self, key: &ApiKey, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/consume"))
            .bearer_auth(key.expose())
            .json(&body)
            .send()
            .await
            .expect("consume request")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A metrics handle not installed as the global recorder (renders what it holds).
pub fn unregistered_metrics() -> metrics_exporter_prometheus::PrometheusHandle {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle()
}

/// Every key name and every value in `redis` as text, streams included.
pub fn dump_everything(redis: &TestRedis) -> String {
    let mut conn = redis.conn();
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut out = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).expect("TYPE");
        let value: redis::Value = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).query(&mut conn),
            "hash" => redis::cmd("HGETALL").arg(&key).query(&mut conn),
            "stream" => redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .query(&mut conn),
            "list" => redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut conn),
            "set" => redis::cmd("SMEMBERS").arg(&key).query(&mut conn),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut conn),
            other => panic!("unexpected redis type {other} for {key}"),
        }
        .expect("dump value");
        out.push_str(&format!("{key} => {}\n", value_text(&value)));
    }
    out
}

/// A reply as plain text, bulk strings decoded, nested values flattened.
fn value_text(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(i) => i.to_string(),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().map(value_text).collect::<Vec<_>>().join(" ")
        }
        redis::Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| format!("{} {}", value_text(k), value_text(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => format!("{other:?}"),
    }
}

/// Sends `req` and decodes the JSON body, whatever the status.
pub async fn json_of(req: reqwest::RequestBuilder) -> serde_json::Value {
    req.send()
        .await
        .expect("response")
        .json()
        .await
        .expect("JSON body")
}

/// A TCP port that is free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

impl TestApp {
    /// A server over `engine` whose listener has `limits` instead of the defaults.
    pub async fn with_limits(
        engine: Engine,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
        limits: quotad::http::HttpLimits,
    ) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let admin = "test-admin-token".to_owned();
        let mut state = quotad::http::AppState::new(
            engine.clone(),
            quotad::http::AdminToken::new(&admin),
            65_536,
            metrics,
            true,
        );
        state.limits = limits;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(quotad::http::run(
            listener,
            Arc::new(state),
            shutdown.clone(),
            Duration::from_secs(5),
        ));
        TestApp {
            addr,
            admin,
            shutdown,
            server: Some(server),
            engine,
            client: reqwest::Client::new(),
        }
    }
}

/// Units `id` used in `period`, from its key record's counter fields (or, for a key no
/// batch has counted yet, its v1 counter).
pub fn used_in_redis(
    redis: &TestRedis,
    id: &quotad::quota::KeyId,
    period: quotad::quota::Period,
) -> u64 {
    let shard = id.shard(64);
    let mut conn = redis.conn();
    let (recorded, used): (Option<String>, Option<u64>) = redis::cmd("HMGET")
        .arg(quotad::store::keys::record(shard, id))
        .arg("period")
        .arg("used")
        .query(&mut conn)
        .expect("HMGET");
    match recorded {
        Some(p) if p == period.label() => used.unwrap_or(0),
        Some(_) => 0,
        None => redis::cmd("GET")
            .arg(quotad::store::keys::usage(shard, id, period))
            .query::<Option<u64>>(&mut conn)
            .expect("GET")
            .unwrap_or(0),
    }
}

/// The audit subfields of a v2 record, in their order in the stream.
const RECORD_FIELDS: [&str; 8] = [
    "key_id",
    "tier",
    "endpoint",
    "cost",
    "used_after",
    "outcome",
    "idem",
    "extras",
];

/// Every audit record in the 64 shard streams, shard by shard in stream order, as
/// field → value (v1 entries as they are; v2 entries split into their records, each
/// with the entry's `ts`).
pub fn audit_records(redis: &TestRedis) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut conn = redis.conn();
    let mut out = Vec::new();
    for shard in 0..64 {
        let stream = quotad::store::keys::audit_stream(quotad::quota::Shard(shard));
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .query(&mut conn)
            .expect("XRANGE");
        for entry in entries.ids {
            let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
            if field("v") != "2" {
                let mut rec = std::collections::BTreeMap::new();
                for (k, v) in &entry.map {
                    rec.insert(
                        k.clone(),
                        redis::from_redis_value::<String>(v.clone()).unwrap_or_default(),
                    );
                }
                out.push(rec);
                continue;
            }
            for pos in 1.. {
                let Some(raw) = entry.get::<String>(&pos.to_string()) else {
                    break;
                };
                let mut rec: std::collections::BTreeMap<String, String> = RECORD_FIELDS
                    .iter()
                    .map(|f| f.to_string())
                    .zip(raw.split('\u{1f}').map(str::to_owned))
                    .collect();
                rec.insert("ts".into(), field("ts"));
                out.push(rec);
            }
        }
    }
    out
}

/// The value of the unlabelled series `name` in a Prometheus text rendering (0 when absent).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
