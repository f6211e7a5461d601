//! Shared test fixtures: a real `redis-server` per test, and an engine on it.
#![allow(dead_code)]

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
    let store = Store::new(&redis.url(), Duration::from_millis(250), 16).expect("store");
    let engine = Engine::new(store, Catalogue::default(), settings, clock);
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
