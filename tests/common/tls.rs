//! A `redis-server` that speaks only TLS, with a CA and a server certificate made at
//! run time, on a free TCP port of 127.0.0.1, killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use super::TestRedis;

/// How often a start is retried when another process took the free port first.
const PORT_ATTEMPTS: usize = 5;

/// A TLS-only `redis-server` of this test alone (`--port 0 --tls-port P`); clients are
/// not asked for certificates. The binary is as for [`TestRedis`].
pub struct TestTlsRedis {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
}

impl TestTlsRedis {
    /// Makes the certificates, starts the server and waits until it answers PING over TLS.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        write_certificates(&dir);
        let mut redis = TestTlsRedis {
            dir,
            child: None,
            port: 0,
        };
        for _ in 0..PORT_ATTEMPTS {
            redis.port = free_port();
            redis.spawn();
            if redis.wait_ready() {
                return redis;
            }
            redis.kill();
        }
        panic!(
            "redis-server with TLS did not start in {PORT_ATTEMPTS} attempts; its log:\n{}",
            redis.log()
        );
    }

    fn spawn(&mut self) {
        let path = |name: &str| self.dir.path().join(name);
        let child = Command::new(TestRedis::binary())
            .arg("--port")
            .arg("0")
            .arg("--tls-port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "-::1"])
            .arg("--tls-cert-file")
            .arg(path("server.pem"))
            .arg("--tls-key-file")
            .arg(path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(path("ca.pem"))
            .args(["--tls-auth-clients", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", ""])
            .arg("--logfile")
            .arg(path("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); tests need a real Redis with TLS: \
                     apt-get install -y redis-server (Debian's build has TLS), \
                     or set QUOTAD_TEST_REDIS_SERVER",
                    TestRedis::binary()
                )
            });
        self.child = Some(child);
    }

    /// Waits for a TLS PING; false when the server exited (its port was taken).
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = self.client();
        loop {
            if let Ok(mut conn) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return true;
                }
            }
            let child = self.child.as_mut().expect("redis was spawned");
            if child.try_wait().expect("redis-server status").is_some() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server with TLS did not answer within 10 s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The PEM file of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `rediss://localhost:P`: the name the server's certificate is made for.
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    /// A client that trusts [`TestTlsRedis::ca_file`], for assertions on raw Redis state.
    pub fn client(&self) -> redis::Client {
        // rustls needs a process-wide crypto provider before the first handshake.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = std::fs::read(self.ca_file()).expect("CA file");
        let tls = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca),
        };
        redis::Client::build_with_tls(self.url(), tls).expect("TLS client")
    }

    /// A blocking TLS connection, for assertions on raw Redis state.
    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().expect("redis connection")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestTlsRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on right now (another process may still take it first).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Writes `ca.pem`, and `server.pem` + `server.key` for localhost, 127.0.0.1 and ::1
/// signed by that CA, into `dir`.
fn write_certificates(dir: &tempfile::TempDir) {
    let mut ca_params = CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "quotad test CA");
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    let server_params = CertificateParams::new(names).expect("server params");
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");

    let write = |name: &str, text: String| {
        std::fs::write(dir.path().join(name), text).expect("write certificate");
    };
    write("ca.pem", ca_cert.pem());
    write("server.pem", server_cert.pem());
    write("server.key", server_key.serialize_pem());
}
