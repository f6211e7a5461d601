//! One HTTP/1.1 keep-alive connection to quotad, and the address it goes to.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::LoadError;

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take, from sending to the end of the body.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request that got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The host name did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// The TCP connect failed.
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The TCP connect took longer than 5 s.
    #[error("connect timed out after 5 s")]
    ConnectTimeout,
    /// The HTTP exchange failed (connection closed, malformed answer).
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    /// No complete answer within 10 s.
    #[error("no answer within 10 s")]
    Timeout,
}

/// Where requests go: the resolved address, the `Host` header, the path prefix.
#[derive(Debug)]
pub(crate) struct Target {
    /// `host:port` as written in the URL, resolved at connect time.
    authority: String,
    /// The `Host` header value.
    host: HeaderValue,
    /// The URL's path without a trailing `/` (quotad behind a path prefix).
    prefix: String,
    /// The URL as given, for messages.
    pub display: String,
}

impl Target {
    /// Parses `http://host[:port][/prefix]`; anything else is a usage error.
    pub fn parse(url: &str) -> Result<Target, LoadError> {
        let usage = |why: &str| LoadError::Usage(format!("--url {url:?}: {why}"));
        let parsed = url::Url::parse(url).map_err(|e| usage(&e.to_string()))?;
        if parsed.scheme() != "http" {
            return Err(usage("only http:// URLs are supported"));
        }
        if parsed.query().is_some() || !parsed.username().is_empty() {
            return Err(usage("no query or user name, please"));
        }
        let host = parsed.host_str().ok_or_else(|| usage("no host"))?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        let authority = format!("{host}:{port}");
        let prefix = parsed.path().trim_end_matches('/').to_owned();
        // Every path sent is the prefix plus fixed ASCII, so this one check covers all.
        format!("{prefix}/v1/consume")
            .parse::<hyper::Uri>()
            .map_err(|_| usage("bad path"))?;
        Ok(Target {
            host: HeaderValue::from_str(&authority).map_err(|_| usage("bad host"))?,
            authority,
            prefix,
            display: url.to_owned(),
        })
    }

    /// A request to `path` (under the prefix), with `authorization` if given.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&HeaderValue>,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = format!("{}{path}", self.prefix)
            .parse()
            .expect("the prefix was checked by Target::parse and paths are plain ASCII");
        let headers = req.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(auth) = authorization {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        req
    }

    async fn resolve(&self) -> Result<SocketAddr, TransportError> {
        tokio::net::lookup_host(&self.authority)
            .await
            .map_err(|_| TransportError::Resolve(self.authority.clone()))?
            .next()
            .ok_or_else(|| TransportError::Resolve(self.authority.clone()))
    }
}

/// `Authorization: Bearer <secret>`, marked sensitive so hyper never shows it.
pub(crate) fn bearer(secret: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {secret}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// An answer: status, whether it was a replay, and the body.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// `Idempotent-Replayed: true` was present.
    pub replayed: bool,
    /// The whole body.
    pub body: Bytes,
}

/// One keep-alive HTTP/1.1 connection; requests go one at a time.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects (bounded by 5 s) and performs the HTTP/1.1 handshake.
    pub async fn open(target: &Target) -> Result<Conn, TransportError> {
        let addr = target.resolve().await?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| TransportError::ConnectTimeout)?
            .map_err(TransportError::Connect)?;
        // Latency figures should not include Nagle's delay.
        stream.set_nodelay(true).map_err(TransportError::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        // The connection task ends when the sender is dropped or the peer closes.
        tokio::spawn(connection);
        Ok(Conn { sender })
    }

    /// The peer closed the connection (e.g. after its idle timeout).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends `req` and reads the whole answer, bounded by 10 s. After an error the
    /// connection is in an unknown state and must be dropped.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, TransportError> {
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(req).await?;
            let status = response.status();
            let replayed = response
                .headers()
                .get("idempotent-replayed")
                .is_some_and(|v| v.as_bytes() == b"true");
            let body = response.into_body().collect().await?.to_bytes();
            Ok(Answer {
                status,
                replayed,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| TransportError::Timeout)?
    }
}
