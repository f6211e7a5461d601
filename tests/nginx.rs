//! A real nginx with `auth_request` to quotad in front of a recording upstream.
//! nginx is required: without it this test fails with an install hint.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{new_key, new_key_with, TestApp, TestRedis};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

/// What reached the upstream: path and the `X-Quota-*` headers nginx set.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    key_id: String,
    tier: String,
    remaining: String,
}

/// A tiny upstream that answers 200 and records every request.
async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .map(|v| v.to_str().unwrap_or("").to_owned())
                        .unwrap_or_default()
                };
                log.lock().unwrap().push(Seen {
                    path: req.uri().to_string(),
                    key_id: header("x-quota-key-id"),
                    tier: header("x-quota-tier"),
                    remaining: header("x-quota-remaining"),
                });
                async { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("up")))) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, seen)
}

/// `QUOTAD_TEST_NGINX`, else `nginx` on PATH.
fn nginx_binary() -> PathBuf {
    std::env::var_os("QUOTAD_TEST_NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| "nginx".into())
}

/// nginx on a free port, configured like `examples/nginx.conf`; killed on drop.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(quotad: SocketAddr, upstream: SocketAddr) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        let conf = format!(
            r#"
pid {d}/nginx.pid;
error_log {d}/error.log info;
master_process off;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  upstream quotad {{ server {quotad}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    location = /_quota {{
      internal;
      proxy_pass http://quotad/v1/authorize?deny_status=403;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header Idempotency-Key "";
    }}
    location / {{
      auth_request /_quota;
      auth_request_set $quota_key_id $upstream_http_x_quota_key_id;
      auth_request_set $quota_tier $upstream_http_x_quota_tier;
      auth_request_set $quota_remaining $upstream_http_x_quota_remaining;
      proxy_set_header X-Quota-Key-Id $quota_key_id;
      proxy_set_header X-Quota-Tier $quota_tier;
      proxy_set_header X-Quota-Remaining $quota_remaining;
      proxy_pass http://{upstream};
    }}
  }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            .arg("daemon off;")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); this test needs a real nginx with auth_request: \
                     apt-get install -y nginx-light (put its sbin directory on PATH), \
                     or set QUOTAD_TEST_NGINX to the binary",
                    nginx_binary().display()
                )
            });
        let mut nginx = Nginx { child, dir, port };
        nginx.wait_ready();
        nginx
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.path().join("error.log"));
                panic!("nginx exited with {status}: {log:?}");
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn nginx_auth_request_admits_counts_and_fails_closed() {
    let mut redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let (upstream_addr, seen) = upstream().await;
    let nginx = Nginx::start(app.addr, upstream_addr);
    let free = new_key(&app.engine, "free").await;
    let client = reqwest::Client::new();
    let get = |path: &str, key: Option<&str>| {
        let req = client.get(nginx.url(path));
        match key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
        .send()
    };

    // Allowed requests reach the upstream with the X-Quota-* headers.
    let resp = get("/api/items?page=2", Some(free.expose())).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "up");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/api/items?page=2");
        assert_eq!(seen[0].key_id, free.id().to_string());
        assert_eq!(seen[0].tier, "free");
        assert_eq!(seen[0].remaining, "999");
    }

    // A missing key is 401; it never reaches the upstream.
    let resp = get("/api/items", None).await.unwrap();
    assert_eq!(resp.status(), 401);

    // The free tier allows 1,000 a month: the 1,001st is refused with 403.
    for i in 2..=1000 {
        let status = get("/api/items", Some(free.expose()))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "request {i}");
    }
    let resp = get("/api/items", Some(free.expose())).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(seen.lock().unwrap().len(), 1000);
    assert_eq!(seen.lock().unwrap()[999].remaining, "0");

    // With quotad's Redis down nothing reaches the upstream.
    let other = new_key_with(&app.engine, "pro", None).await;
    redis.kill();
    for _ in 0..5 {
        let status = get("/api/items", Some(other.expose()))
            .await
            .unwrap()
            .status();
        assert!(status.is_server_error(), "got {status}");
    }
    assert_eq!(seen.lock().unwrap().len(), 1000);
}

#[tokio::test]
async fn a_constant_idempotency_key_gets_no_more_than_the_limit_through_nginx() {
    let redis = TestRedis::start();
    let app = TestApp::start(&redis).await;
    let (upstream_addr, seen) = upstream().await;
    let nginx = Nginx::start(app.addr, upstream_addr);
    let key = new_key_with(&app.engine, "free", Some(2)).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let resp = client
            .get(nginx.url("/api/x"))
            .header("x-api-key", key.expose())
            .header("idempotency-key", "same")
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 403, 403, 403]);
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "at most `limit` reach the upstream"
    );
}
