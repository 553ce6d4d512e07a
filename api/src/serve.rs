//! The HTTP listener: our own accept loop over hyper, so every connection is
//! bounded before any handler runs.
//!
//! - **Connections**: at most `http.max_connections` open in all and
//!   `http.max_connections_per_ip` per peer address, counted across every
//!   core. Past either, the new connection gets a fixed `503` problem with
//!   `Retry-After` and is closed, without reading its request.
//! - **Request heads**: a head must arrive whole within
//!   `http.header_read_timeout_secs` of its first byte (of the accept, for a
//!   connection's first request), else the connection is closed: a client
//!   trickling header bytes (slowloris) holds a slot for that long at most.
//! - **Idle keep-alive**: a connection with no request in flight and no new
//!   request started is closed after `http.idle_timeout_secs`. The default
//!   is longer than a load balancer's usual idle timeout (ALB: 60 s), so the
//!   proxy, not us, closes a connection it might reuse.
//! - **Writes**: one write may stall at most `http.write_timeout_secs`; a
//!   reader that stops reading (an SSE stream, a large download, a
//!   WebSocket after its upgrade) is then cut off.
//!
//! hyper's own header-read timer is left off: it starts as soon as hyper
//! waits for a head, so it would also close idle keep-alive connections at
//! the (short) header deadline.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::{AppState, HttpConfig};

/// Open HTTP connections, shared by every core's accept loop.
#[derive(Debug)]
pub struct Connections {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was refused at accept (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `http.max_connections` are open.
    Total,
    /// `http.max_connections_per_ip` are open from this address.
    PerIp,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::PerIp => "per_ip",
        }
    }
}

/// One admitted connection; frees its place when dropped.
#[derive(Debug)]
pub struct Slot {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    /// Bounds from `[http]`.
    pub fn new(config: &HttpConfig) -> Self {
        Self {
            max_total: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Take a place for a connection from `ip`, or say which bound is full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let mut per_ip = self.per_ip.lock();
        // Under the lock, so two cores cannot both take the last place.
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(Refused::Total);
        }
        let open = per_ip.entry(ip).or_insert(0);
        if *open >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        *open += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(uncorreo_metric_names::HTTP_CONNECTIONS_OPEN).increment(1.0);
        Ok(Slot {
            connections: Arc::clone(self),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_ip = self.connections.per_ip.lock();
        if let Some(open) = per_ip.get_mut(&self.ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                // The map holds only addresses with open connections.
                per_ip.remove(&self.ip);
            }
        }
        self.connections.total.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(uncorreo_metric_names::HTTP_CONNECTIONS_OPEN).decrement(1.0);
    }
}

/// The per-connection timeouts of `[http]`.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
    write: Duration,
    send_buffer_bytes: usize,
}

impl Timeouts {
    fn new(config: &HttpConfig) -> Self {
        Self {
            header_read: Duration::from_secs(config.header_read_timeout_secs.max(1)),
            idle: Duration::from_secs(config.idle_timeout_secs.max(1)),
            write: Duration::from_secs(config.write_timeout_secs.max(1)),
            send_buffer_bytes: config.send_buffer_bytes,
        }
    }
}

/// Refused connections being answered at once, per core; past it a refused
/// connection is closed without the `503` (a flood must not cost tasks).
const MAX_REFUSING: usize = 256;
/// How long a refused connection's request is drained after the `503`, so
/// that closing it does not reset the connection before the client reads it.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_http_response_with_a_problem_body() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 503);
    }

    #[test]
    fn places_are_bounded_per_ip_and_in_all_and_freed_on_drop() {
        let connections = Arc::new(Connections::new(&HttpConfig {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..HttpConfig::default()
        }));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = connections.admit(a).unwrap();
        let _second = connections.admit(a).unwrap();
        assert_eq!(connections.admit(a).unwrap_err(), Refused::PerIp);
        let _third = connections.admit(b).unwrap();
        assert_eq!(connections.admit(b).unwrap_err(), Refused::Total);
        drop(first);
        let _again = connections.admit(a).unwrap();
        assert_eq!(connections.open(), 3);
    }
}

/// Accept on `listener` until `shutdown`, serve each admitted connection
/// with `router`, then wait for the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: &AppState,
    shutdown: CancellationToken,
) {
    let connections = Arc::clone(state.connections());
    let timeouts = Timeouts::new(&state.config().http);
    let tracker = TaskTracker::new();
    let refusing = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match connections.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                metrics::counter!(uncorreo_metric_names::HTTP_CONNECTIONS_REFUSED_TOTAL, "reason" => refused.label())
                    .increment(1);
                if refusing.load(Ordering::Relaxed) < MAX_REFUSING {
                    refusing.fetch_add(1, Ordering::Relaxed);
                    let refusing = Arc::clone(&refusing);
                    tracker.spawn(async move {
                        refuse(stream).await;
                        refusing.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                continue;
            }
        };
        if timeouts.send_buffer_bytes > 0 {
            let _ =
                socket2::SockRef::from(&stream).set_send_buffer_size(timeouts.send_buffer_bytes);
        }
        tracker.spawn(connection(
            stream,
            peer,
            router.clone(),
            timeouts,
            slot,
            shutdown.clone(),
        ));
    }
    tracker.close();
    tracker.wait().await;
}

/// The answer to a connection past a bound: fixed, so refusing costs no
/// handler, no parsing and no allocation per request.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/problem+json\r\n\
cache-control: no-store\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 138\r\n\
\r\n\
{\"type\":\"urn:uncorreo:problem:unavailable\",\"title\":\"Service unavailable\",\"status\":503,\"detail\":\"too many open connections; retry shortly\"}";

async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Small enough to fit any socket buffer: the write does not wait.
    let answered = tokio::time::timeout(REFUSE_LINGER, async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes (bounded in time and
        // bytes): closing with unread data would reset the connection, and
        // the client could lose the 503 before reading it.
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024usize;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        io::Result::Ok(())
    })
    .await;
    if let Ok(Err(e)) = answered {
        tracing::debug!(error = %e, "refused connection");
    }
}

/// Why a connection was closed by us (a metric label).
#[derive(Debug, Clone, Copy)]
enum Cut {
    HeaderTimeout,
    Idle,
}

impl Cut {
    fn label(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::Idle => "idle",
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    timeouts: Timeouts,
    slot: Slot,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Guarded {
        inner: stream,
        activity: Arc::clone(&activity),
        write_timeout: timeouts.write,
        stalled: None,
        _slot: slot,
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = activity.request_started();
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            // A Router is always ready: `call` needs no `poll_ready` first.
            let mut router = router.clone();
            async move {
                let response = match router.call(request).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                // The request counts as in flight until its body is written
                // (or dropped), so a long stream is never "idle".
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        inner: body,
                        _in_flight: in_flight,
                    })
                }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let watchdog = watchdog(Arc::clone(&activity), timeouts);
    tokio::pin!(watchdog);
    let mut draining = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, %peer, "HTTP connection ended");
                }
                break;
            }
            cut = &mut watchdog => {
                metrics::counter!(uncorreo_metric_names::HTTP_CONNECTIONS_CUT_TOTAL, "reason" => cut.label())
                    .increment(1);
                break;
            }
            _ = shutdown.cancelled(), if !draining => {
                // Finish the request in flight, then close.
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// What a connection is doing, as its watchdog sees it.
struct Activity {
    born: Instant,
    /// Requests handed to the router whose response body is not finished.
    in_flight: AtomicUsize,
    /// When the head being read began (ms since `born`), or [`NOT_READING`].
    head_started_ms: AtomicU64,
    /// When the last response finished (ms since `born`).
    idle_since_ms: AtomicU64,
    changed: Notify,
}

const NOT_READING: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            // A new connection owes its first head from the moment it is accepted.
            head_started_ms: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived: if nothing is in flight, a new request head has begun.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self
                .head_started_ms
                .compare_exchange(
                    NOT_READING,
                    self.now_ms(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(NOT_READING, Ordering::Relaxed);
        self.changed.notify_one();
        InFlight(Arc::clone(self))
    }

    /// The next moment the connection is closed unless something happens.
    fn deadline(&self, timeouts: &Timeouts) -> Option<(u64, Cut)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match self.head_started_ms.load(Ordering::Relaxed) {
            NOT_READING => Some((
                self.idle_since_ms
                    .load(Ordering::Relaxed)
                    .saturating_add(ms(timeouts.idle)),
                Cut::Idle,
            )),
            started => Some((
                started.saturating_add(ms(timeouts.header_read)),
                Cut::HeaderTimeout,
            )),
        }
    }
}

/// A request between its head and the end of its response body.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since_ms
            .store(activity.now_ms(), Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        activity.changed.notify_one();
    }
}

/// Resolves when the connection has overstayed its header or idle deadline.
async fn watchdog(activity: Arc<Activity>, timeouts: Timeouts) -> Cut {
    loop {
        match activity.deadline(&timeouts) {
            None => activity.changed.notified().await,
            Some((at, cut)) => {
                let now = activity.now_ms();
                if at <= now {
                    return cut;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(at - now)) => {}
                    _ = activity.changed.notified() => {}
                }
            }
        }
    }
}

/// A response body that keeps its request in flight until it is done.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket: reports reads to the watchdog and bounds how
/// long one write may stall.
struct Guarded {
    inner: TcpStream,
    activity: Arc<Activity>,
    write_timeout: Duration,
    /// Armed when a write first finds the socket full; cleared on progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The connection's place under the bounds, held by the socket so that
    /// an upgraded WebSocket keeps counting until it closes.
    _slot: Slot,
}

impl Guarded {
    /// `Pending` from the socket: still pending, or an error once the
    /// stall has lasted `write_timeout`.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.write_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            metrics::counter!(uncorreo_metric_names::HTTP_CONNECTIONS_CUT_TOTAL, "reason" => "write_timeout")
                .increment(1);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }

    fn progressed<T>(
        &mut self,
        done: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match done {
            Poll::Pending => self.stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        read
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progressed(done, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progressed(done, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let done = Pin::new(&mut self.inner).poll_flush(cx);
        self.progressed(done, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
