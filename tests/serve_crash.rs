//! `quotad serve` SIGKILLed under load, three times: after a restart the audit log holds
//! exactly one row per admitted request — every 200's audit_id, no duplicates, no gaps
//! (rows = units counted in Redis) — and the audit route pages through them.

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestRedis;
use redis::Commands;
use serde_json::{json, Value};

const ADMIN: &str = "crash-test-admin-token";
const SHARDS: u32 = 8;

struct Quotad {
    child: Child,
    base: String,
}

impl Quotad {
    fn start(redis: &TestRedis) -> Quotad {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_quotad"))
            .arg("serve")
            .env_clear()
            .env("QUOTAD_LISTEN", format!("127.0.0.1:{port}"))
            .env("QUOTAD_REDIS_URL", redis.url())
            .env("QUOTAD_ADMIN_TOKEN", ADMIN)
            .env("QUOTAD_SHARDS", SHARDS.to_string())
            .env("QUOTAD_AUDIT_DB", redis.dir().join("audit.db"))
            .env("QUOTAD_AUDIT_CONSUMER", "node-1")
            .env("QUOTAD_AUDIT_BATCH_SIZE", "25")
            .env("QUOTAD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("quotad binary");
        Quotad {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn wait_ready(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = http.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "quotad did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL quotad");
        self.child.wait().expect("reap quotad");
    }
}

impl Drop for Quotad {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Consumes in `tasks` loops until a request fails (the process died); returns the
/// audit ids of every 200.
async fn load(
    http: &reqwest::Client,
    base: &str,
    keys: &[String],
    admitted: Arc<Mutex<Vec<String>>>,
) {
    let mut handles = Vec::new();
    for (t, key) in keys.iter().enumerate() {
        let (http, url, key, admitted) = (
            http.clone(),
            format!("{base}/v1/consume"),
            key.clone(),
            admitted.clone(),
        );
        handles.push(tokio::spawn(async move {
            for i in 0.. {
                let body = json!({"endpoint": format!("/t{t}/{i}"), "request": {"i": i}});
                let sent = http.post(&url).bearer_auth(&key).json(&body).send().await;
                let Ok(resp) = sent else { return };
                if resp.status() != 200 {
                    return;
                }
                let Ok(decision) = resp.json::<Value>().await else {
                    return;
                };
                let id = decision["audit_id"]
                    .as_str()
                    .expect("audit_id of an admission");
                admitted.lock().unwrap().push(id.to_owned());
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

fn backlog(redis: &TestRedis) -> (usize, usize) {
    let mut conn = redis.conn();
    let mut entries = 0;
    let mut pending = 0;
    for shard in 0..SHARDS {
        let stream = format!("quotad:{{q{shard:03}}}:audit");
        entries += conn.xlen::<_, usize>(&stream).unwrap_or(0);
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(&stream)
            .arg("quotad-audit")
            .query(&mut conn)
            .unwrap_or(redis::Value::Nil);
        if let redis::Value::Array(items) = summary {
            if let Some(redis::Value::Int(n)) = items.first() {
                pending += *n as usize;
            }
        }
    }
    (entries, pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_audit_record_and_duplicates_none() {
    let redis = TestRedis::with_args(&["--appendonly", "yes"]);
    let http = reqwest::Client::new();
    let mut node = Quotad::start(&redis);
    node.wait_ready(&http).await;

    let mut keys = Vec::new();
    for _ in 0..8 {
        let created: Value = common::json_of(
            http.post(format!("{}/v1/keys", node.base))
                .bearer_auth(ADMIN)
                .json(&json!({"tier": "enterprise"})),
        )
        .await;
        keys.push(created["key"].as_str().unwrap().to_owned());
    }

    let admitted = Arc::new(Mutex::new(Vec::new()));
    let mut left_at_kill = Vec::new();
    for round in 0..3u64 {
        let loader = tokio::spawn({
            let (http, base, keys, admitted) = (
                http.clone(),
                node.base.clone(),
                keys.clone(),
                admitted.clone(),
            );
            async move { load(&http, &base, &keys, admitted).await }
        });
        tokio::time::sleep(Duration::from_millis(400 + 150 * round)).await;
        node.kill();
        left_at_kill.push(backlog(&redis));
        loader.await.unwrap();
        node = Quotad::start(&redis);
        node.wait_ready(&http).await;
    }

    eprintln!("(stream entries, pending) left at each kill: {left_at_kill:?}");
    assert!(
        left_at_kill.iter().any(|(entries, _)| *entries > 0),
        "no kill left unpersisted entries behind; the test proved nothing"
    );

    // The restarted writer recovers its pending entries and drains the streams.
    let deadline = Instant::now() + Duration::from_secs(30);
    while backlog(&redis) != (0, 0) {
        assert!(
            Instant::now() < deadline,
            "backlog did not drain: {:?}",
            backlog(&redis)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let admitted = admitted.lock().unwrap().clone();
    eprintln!("admitted over three kills: {}", admitted.len());
    assert!(
        admitted.len() > 100,
        "the load admitted only {}",
        admitted.len()
    );
    let db = rusqlite::Connection::open(redis.dir().join("audit.db")).unwrap();
    let rows: Vec<String> = db
        .prepare("SELECT audit_id FROM audit_records")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let distinct: HashSet<&String> = rows.iter().collect();
    assert_eq!(distinct.len(), rows.len(), "duplicate audit rows");
    let missing: Vec<&String> = admitted
        .iter()
        .filter(|id| !distinct.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} admitted requests have no audit row",
        missing.len()
    );

    // Requests cut off by a kill may still have been admitted; either way every unit
    // Redis counted has exactly one row.
    let mut conn = redis.conn();
    // Counters live in the key records (this test stays inside one period).
    let records: Vec<String> = conn.keys("quotad:*:key:*").unwrap();
    let counted: u64 = records
        .iter()
        .map(|k| {
            conn.hget::<_, _, Option<u64>>(k, "used")
                .unwrap()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(
        rows.len() as u64,
        counted,
        "rows must equal units counted in Redis"
    );
    eprintln!("rows: {}, counted units: {counted}", rows.len());

    // The audit route pages through one key's rows, each exactly once.
    let key_id = {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(keys[0].as_bytes())[..16])
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/keys/{key_id}/audit?limit=7", node.base);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = common::json_of(http.get(url).bearer_auth(ADMIN)).await;
        for r in page["records"].as_array().unwrap() {
            assert_eq!(r["key_id"], key_id.as_str());
            seen.push(r["audit_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM audit_records WHERE key_id = ?1",
            [&key_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(seen.len() as i64, expected);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());

    for bad in [
        "limit=0",
        "limit=1001",
        "cursor=not-a-cursor",
        "from=yesterday",
    ] {
        let url = format!("{}/v1/keys/{key_id}/audit?{bad}", node.base);
        let resp = http.get(url).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "bad_request", "{bad}");
    }
    let unknown = format!("{}/v1/keys/{}/audit", node.base, "0".repeat(32));
    let resp = http.get(unknown).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(resp.status(), 404, "an id no key ever had");
    node.kill();
}
