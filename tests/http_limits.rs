//! The listener holds on to nothing it should not: header and body timeouts, the
//! connection cap, and one shutdown deadline; raw TCP against a real server and Redis.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{engine, unregistered_metrics, TestApp, TestRedis};
use metrics_exporter_prometheus::PrometheusHandle;
use quotad::config::{AuditConfig, Config};
use quotad::http::{AdminToken, HttpLimits};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Short limits, so that every bound below is the timeout plus one second.
const SHORT: HttpLimits = HttpLimits {
    header_timeout: Duration::from_secs(1),
    body_timeout: Duration::from_secs(1),
    max_connections: 10_000,
};
/// The slack every "closed within" bound allows beyond its timeout.
const SLACK: Duration = Duration::from_secs(1);
/// Longest wait for an answer that should come at once (a loaded machine).
const ANSWER: Duration = Duration::from_secs(10);
/// A complete `GET /healthz` request (40 bytes).
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: quotad\r\n\r\n";

/// A test server on `redis` with `limits` and unregistered metrics.
async fn app_with(redis: &TestRedis, limits: HttpLimits) -> TestApp {
    TestApp::with_limits(engine(redis).await, unregistered_metrics(), limits).await
}

/// Reads until the server closes `stream` (EOF, or a reset), for at most `bound`;
/// returns what it sent before closing.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), bound: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    };
    if tokio::time::timeout(bound, read).await.is_err() {
        panic!("the connection was still open after {bound:?}");
    }
    got
}

/// One HTTP/1.1 response: status, then the body of `Content-Length` bytes.
fn parse_response(bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..end]).expect("an ASCII head");
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let body = bytes.get(end..end + length)?;
    Some((status, body.to_vec()))
}

/// Sends `GET /healthz` and reads its response: the status, or `None` when the
/// server closed the connection without answering.
async fn healthz(stream: &mut TcpStream) -> Option<u16> {
    stream.write_all(HEALTHZ).await.ok()?;
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            if let Some((status, _)) = parse_response(&got) {
                return Some(status);
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(ANSWER, read)
        .await
        .expect("an answer or a close within 10 s")
}

/// `quotad_http_connections_refused_total` as `handle` renders it.
fn refused(handle: &PrometheusHandle) -> Option<f64> {
    handle.render().lines().find_map(|line| {
        line.strip_prefix("quotad_http_connections_refused_total ")
            .map(|v| v.parse().expect("a number"))
    })
}

/// The global recorder, installed once for this test binary (only the cap test
/// refuses connections, so its counter is exact).
fn global_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            quotad::app::install_metrics(&quotad::quota::Catalogue::default())
                .expect("the recorder installs once")
        })
        .clone()
}

#[tokio::test]
async fn a_connection_that_sends_no_byte_is_closed_within_the_header_timeout() {
    let redis = TestRedis::start();
    let app = app_with(&redis, SHORT).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let got = read_until_closed(&mut stream, SHORT.header_timeout + SLACK).await;
    assert!(got.is_empty(), "nothing is sent to a silent connection");
}

#[tokio::test]
async fn a_keep_alive_connection_idle_after_a_response_is_closed_within_the_header_timeout() {
    let redis = TestRedis::start();
    let app = app_with(&redis, SHORT).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(healthz(&mut stream).await, Some(200));
    let got = read_until_closed(&mut stream, SHORT.header_timeout + SLACK).await;
    assert!(got.is_empty(), "nothing follows the response");
}

#[tokio::test]
async fn headers_trickled_byte_by_byte_past_the_header_timeout_are_cut() {
    let redis = TestRedis::start();
    let app = app_with(&redis, SHORT).await;
    let (mut reader, mut writer) = TcpStream::connect(app.addr).await.unwrap().into_split();
    // 40 bytes at 100 ms each: the headers would take 4 s.
    let trickle = tokio::spawn(async move {
        for byte in HEALTHZ {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let got = read_until_closed(&mut reader, SHORT.header_timeout + SLACK).await;
    trickle.abort();
    assert!(got.is_empty(), "no response to incomplete headers");
}

#[tokio::test]
async fn a_body_trickled_after_complete_headers_is_answered_408_within_the_body_timeout() {
    let redis = TestRedis::start();
    let app = app_with(&redis, SHORT).await;
    let (mut reader, mut writer) = TcpStream::connect(app.addr).await.unwrap().into_split();
    writer
        .write_all(
            b"POST /v1/consume HTTP/1.1\r\nHost: quotad\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        )
        .await
        .unwrap();
    // 100 bytes at 100 ms each: the body would take 10 s.
    let trickle = tokio::spawn(async move {
        for byte in std::iter::once(b'{')
            .chain(std::iter::repeat(b' '))
            .take(99)
        {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let got = read_until_closed(&mut reader, SHORT.body_timeout + SLACK).await;
    trickle.abort();
    let (status, body) = parse_response(&got).expect("a complete response before the close");
    assert_eq!(status, 408);
    let body: Value = serde_json::from_slice(&body).expect("a JSON error body");
    assert_eq!(body["error"], "request_timeout");
}

#[tokio::test]
async fn an_idle_h2c_connection_gets_a_goaway_within_the_header_timeout_then_closes() {
    let redis = TestRedis::start();
    let app = app_with(&redis, SHORT).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // The client preface, then an empty SETTINGS frame (length 0, type 4, stream 0).
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    const GOAWAY: u8 = 0x7;
    let frames = async {
        loop {
            let mut header = [0u8; 9];
            stream
                .read_exact(&mut header)
                .await
                .expect("a frame header");
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; length];
            stream
                .read_exact(&mut payload)
                .await
                .expect("a frame payload");
            if header[3] == GOAWAY {
                return;
            }
        }
    };
    tokio::time::timeout(SHORT.header_timeout + SLACK, frames)
        .await
        .expect("a GOAWAY within the header timeout + 1 s");
    // The client never answers the shutdown ping, so the server stops waiting for it.
    read_until_closed(&mut stream, Duration::from_secs(1) + SLACK).await;
}

#[tokio::test]
async fn past_max_connections_new_ones_are_refused_at_once_and_counted_while_the_first_keep_working(
) {
    let redis = TestRedis::start();
    let metrics = global_metrics();
    let limits = HttpLimits {
        header_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(60),
        max_connections: 4,
    };
    let app = TestApp::with_limits(engine(&redis).await, metrics.clone(), limits).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        assert_eq!(healthz(&mut stream).await, Some(200));
        open.push(stream);
    }
    assert_eq!(refused(&metrics), Some(0.0), "the counter exists at 0");

    let mut fifth = TcpStream::connect(app.addr).await.unwrap();
    // Bounded far below the 60 s header timeout: refused, not timed out.
    let got = read_until_closed(&mut fifth, ANSWER).await;
    assert!(got.is_empty(), "a refused connection gets no byte");
    assert_eq!(refused(&metrics), Some(1.0));
    for stream in &mut open {
        assert_eq!(healthz(stream).await, Some(200), "earlier ones still work");
    }

    drop(open.pop());
    // The slot comes back once the server has seen the close; until then, refused.
    let deadline = Instant::now() + ANSWER;
    loop {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        if healthz(&mut stream).await == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "no slot came back after a close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_http_drain_and_the_audit_writer_share_one_shutdown_grace_period() {
    let redis = TestRedis::start();
    let grace = Duration::from_secs(2);
    let db_path = redis.dir().join("audit.db");
    let config = Config {
        redis_url: redis.url(),
        shutdown_grace_secs: grace.as_secs(),
        audit: AuditConfig {
            db_path: db_path.clone(),
            ..AuditConfig::default()
        },
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let admin = AdminToken::new("test-admin-token");
            quotad::app::serve(&config, listener, admin, unregistered_metrics(), shutdown).await
        }
    });
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("http://{addr}/v1/keys"))
        .bearer_auth("test-admin-token")
        .json(&serde_json::json!({"tier": "free"}))
        .send()
        .await
        .expect("serve answers")
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().expect("a generated key").to_owned();

    // A request whose body never comes keeps the HTTP drain busy for the whole grace
    // period (the body timeout is longer); the 100 Continue shows its handler reads.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/consume HTTP/1.1\r\nHost: quotad\r\nExpect: 100-continue\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        )
        .await
        .unwrap();
    let mut continued = [0u8; 25];
    tokio::time::timeout(ANSWER, stream.read_exact(&mut continued))
        .await
        .expect("100 Continue within 10 s")
        .unwrap();
    assert_eq!(&continued, b"HTTP/1.1 100 Continue\r\n\r\n");

    // The audit log locked by another writer holds the writer's COMMIT of the next
    // record for SQLite's 5 s busy timeout, longer than the grace period too.
    let lock = rusqlite::Connection::open(&db_path).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let consumed = client
        .post(format!("http://{addr}/v1/consume"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(consumed.status(), 200);
    // The writer polls every 100 ms: by now it waits on the lock with that record.
    tokio::time::sleep(Duration::from_millis(500)).await;

    shutdown.cancel();
    let result = tokio::time::timeout(grace + SLACK, server)
        .await
        .expect("serve returned within one grace period + 1 s");
    assert!(matches!(result, Ok(Ok(()))), "serve ends cleanly");
    drop(lock);
}
