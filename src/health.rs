//! `quotad health`: asks a running quotad for `/healthz` (or `/readyz`), so a container
//! health check needs no curl in the image.
//!
//! One HTTP/1.0 GET over a plain TCP connection: HTTP/1.0 makes the server close the
//! connection after its answer and never use chunked encoding, so reading to the end
//! is the whole response, with no HTTP client in the dependency tree.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the whole check may take: connect, request and response.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// At most this much of a response is read; `/healthz` and `/readyz` answer far less.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// At most this much of the body goes into the one-line message.
const MAX_SHOWN_BODY: usize = 200;

/// Why a health check got no HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The URL is not `http://host[:port][/prefix]`.
    #[error("--url {0:?} is not an http://host:port URL")]
    BadUrl(String),
    /// Connecting, writing or reading failed.
    #[error("{url}: {source}")]
    Io {
        /// The URL that was asked.
        url: String,
        /// What the socket said.
        source: std::io::Error,
    },
    /// No complete answer within the timeout.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// The URL that was asked.
        url: String,
        /// The bound that ran out.
        timeout: Duration,
    },
    /// The answer is not an HTTP response.
    #[error("{0}: the answer is not an HTTP response")]
    Malformed(String),
}

impl HealthError {
    /// The exit code for this failure: 64 (EX_USAGE) for a bad URL, else 1 (unhealthy).
    pub fn exit_code(&self) -> u8 {
        match self {
            HealthError::BadUrl(_) => 64,
            _ => 1,
        }
    }
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The full URL that was asked.
    pub url: String,
    /// The HTTP status code.
    pub status: u16,
    /// The body on one line, shortened.
    pub body: String,
}

impl Answer {
    /// Healthy means exactly 200.
    pub fn healthy(&self) -> bool {
        self.status == 200
    }

    /// The one-line message `quotad health` prints.
    pub fn message(&self) -> String {
        let verdict = if self.healthy() { "ok" } else { "unhealthy" };
        format!(
            "{verdict}: {} answered {} {}",
            self.url, self.status, self.body
        )
        .trim_end()
        .to_owned()
    }
}

/// The URL of a quotad listening on `listen`, as a local client reaches it: a wildcard
/// address (`0.0.0.0`, `[::]`) becomes the loopback of its family.
pub fn default_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// GETs `/healthz` (or `/readyz` when `ready`) below `base`, bounded by `timeout`.
pub async fn check(base: &str, ready: bool, timeout: Duration) -> Result<Answer, HealthError> {
    let target = Target::parse(base, if ready { "readyz" } else { "healthz" })?;
    let url = target.url();
    let raw = tokio::time::timeout(timeout, target.fetch())
        .await
        .map_err(|_| HealthError::Timeout {
            url: url.clone(),
            timeout,
        })?
        .map_err(|source| HealthError::Io {
            url: url.clone(),
            source,
        })?;
    parse_response(&raw)
        .ok_or(HealthError::Malformed(url.clone()))
        .map(|(status, body)| Answer { url, status, body })
}

/// Where to connect and what to ask for.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn parse(base: &str, probe: &str) -> Result<Target, HealthError> {
        let bad = || HealthError::BadUrl(base.to_owned());
        let url = url::Url::parse(base).map_err(|_| bad())?;
        if url.scheme() != "http" || url.query().is_some() || !url.username().is_empty() {
            return Err(bad());
        }
        let host = match url.host().ok_or_else(bad)? {
            url::Host::Domain(d) => d.to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let port = url.port_or_known_default().ok_or_else(bad)?;
        let path = format!("{}/{probe}", url.path().trim_end_matches('/'));
        Ok(Target { host, port, path })
    }

    fn url(&self) -> String {
        match self.host.parse::<Ipv6Addr>() {
            Ok(_) => format!("http://[{}]:{}{}", self.host, self.port, self.path),
            Err(_) => format!("http://{}:{}{}", self.host, self.port, self.path),
        }
    }

    async fn fetch(&self) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        let host = match self.host.parse::<Ipv6Addr>() {
            Ok(_) => format!("[{}]:{}", self.host, self.port),
            Err(_) => format!("{}:{}", self.host, self.port),
        };
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: quotad-health\r\n\r\n",
            self.path
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .await?;
        Ok(raw)
    }
}

/// The status code and the body (on one line, shortened) of a raw HTTP response.
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next()?;
    let mut parts = status_line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    let status = code.parse().ok()?;
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let shown = match one_line.char_indices().nth(MAX_SHOWN_BODY) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    };
    Some((status, shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_reached_over_loopback() {
        let url = |s: &str| default_url(s.parse().unwrap());
        assert_eq!(url("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(url("[::]:9000"), "http://[::1]:9000");
        assert_eq!(url("10.1.2.3:8080"), "http://10.1.2.3:8080");
    }

    #[test]
    fn targets_append_the_probe_to_the_base_path() {
        let t = Target::parse("http://quotad:8081/prefix/", "readyz").unwrap();
        assert_eq!(
            t,
            Target {
                host: "quotad".into(),
                port: 8081,
                path: "/prefix/readyz".into()
            }
        );
        let t = Target::parse("http://[::1]", "healthz").unwrap();
        assert_eq!(t.url(), "http://[::1]:80/healthz");
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        for bad in [
            "https://127.0.0.1:8080",
            "127.0.0.1:8080",
            "http://127.0.0.1:8080/?x=1",
            "http://user@127.0.0.1:8080",
            "",
        ] {
            let err = Target::parse(bad, "healthz").unwrap_err();
            assert!(matches!(err, HealthError::BadUrl(_)), "{bad}");
            assert_eq!(err.exit_code(), 64);
        }
    }

    #[test]
    fn responses_give_their_status_and_a_one_line_body() {
        let raw = b"HTTP/1.0 503 Service Unavailable\r\ncontent-type: application/json\r\n\r\n{\"error\":\n \"backend_unavailable\"}";
        assert_eq!(
            parse_response(raw),
            Some((503, "{\"error\": \"backend_unavailable\"}".to_owned()))
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n"),
            Some((200, String::new()))
        );
        assert_eq!(parse_response(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_response(b""), None);
    }

    #[test]
    fn long_bodies_are_shortened() {
        let raw = format!("HTTP/1.1 200 OK\r\n\r\n{}", "x".repeat(500));
        let (_, body) = parse_response(raw.as_bytes()).unwrap();
        assert_eq!(body.chars().count(), MAX_SHOWN_BODY + 1);
    }
}
