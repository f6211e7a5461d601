//! One connection: hyper's settings for it, and what closes it when it holds on to
//! the server with nothing to do (the protocol sniff, an idle HTTP/2 connection).

use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::HttpLimits;

/// The largest request header block: HTTP/1 read buffer and HTTP/2 header list.
const MAX_HEADER_BYTES: u32 = 16 * 1024;
/// Requests in flight on one HTTP/2 connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// How long a connection asked to close may stay open once idle (an HTTP/2 GOAWAY
/// waits for the peer's ping reply) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The hyper-util builder with quotad's limits on both protocols.
pub(super) fn builder(limits: &HttpLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's HTTP/1 header timer runs from the end of the sniff and from each
    // response to the next headers; `drive` covers the sniff itself and HTTP/2.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES);
    builder
}

/// Drives one connection until it ends, holding its slot (`_permit`). On shutdown,
/// or once no request has been in flight for `idle_after`, it is asked to close
/// (HTTP/1 closes when idle, HTTP/2 sends GOAWAY; the protocol sniff stops at once);
/// if it is still open `CLOSE_GRACE` after its last request, it is dropped.
///
/// hyper has no idle timeout for HTTP/2 (its keep-alive pings only find dead peers,
/// a live idle peer answers them), and none for hyper-util's sniff: this is both.
pub(super) async fn drive<C>(
    conn: C,
    in_flight: Arc<InFlight>,
    idle_after: Duration,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) where
    C: GracefulConnection,
    C::Error: Display,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        ended = conn.as_mut() => return log_end(ended),
        _ = shutdown.cancelled() => {}
        _ = in_flight.idle_for(idle_after) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        ended = conn.as_mut() => log_end(ended),
        _ = in_flight.idle_for(CLOSE_GRACE) => {
            tracing::debug!("connection dropped: still open after it was asked to close");
        }
    }
}

fn log_end<E: Display>(ended: Result<(), E>) {
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The requests one connection is handling; with none, it is idle.
#[derive(Default)]
pub(super) struct InFlight {
    count: AtomicUsize,
    /// Notified on every start and end; its single waiter is the connection's `drive`.
    changed: Notify,
}

impl InFlight {
    /// Counts a request until the returned guard drops.
    pub(super) fn start(self: &Arc<Self>) -> Handling {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        Handling(self.clone())
    }

    /// Completes once no request has been in flight for `period` in a row.
    async fn idle_for(&self, period: Duration) {
        loop {
            let idle = self.count.load(Ordering::Acquire) == 0;
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(period), if idle => return,
            }
        }
    }
}

/// One request being handled; it ends when this drops (answered or abandoned).
pub(super) struct Handling(Arc<InFlight>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}
