//! One signed request to another host's hop: HTTP/1.1 on a kept-alive
//! connection to the owner when one is idle, else a fresh one; the whole
//! exchange under one timeout, the answer's size bounded.
//!
//! ## The pool
//!
//! Each thread keeps its own idle connections ([`Pool`]): the core threads
//! run current-thread runtimes, and a connection's driver task lives on the
//! runtime that opened it, so a thread only ever reuses what it opened. A
//! connection goes back to the pool only after a complete `2xx` answer read
//! within the timeout; after an error, a timeout or any other answer it is
//! dropped (closed). At most [`MAX_IDLE_PER_ADDRESS`] idle connections per
//! owner and [`MAX_ADDRESSES`] owners are kept, and none longer than
//! [`IDLE_TIMEOUT`], which is shorter than the owner's own idle limit (its
//! head timeout, 10 s, `src/cluster.rs`), so an owner does not close a
//! connection this side is about to reuse except when it stops.
//!
//! ## When a request is sent twice
//!
//! A request that fails on a **reused** connection before any byte of
//! answer is sent once more, on a fresh connection, only when that is safe:
//!
//! - always when hyper hands the request back unsent (the connection was
//!   found closed before a byte was written): the owner never saw it;
//! - when it was written, only for [`Replay::Idempotent`] requests. Those are
//!   reads (`resolve`) and handover copies (an import makes the copy equal,
//!   a repeat writes nothing). A delivery is **not** replayed once written,
//!   although it carries its delivery key: the key makes a *later* retry
//!   return the ids stored the first time, but a replay at once could meet
//!   the first try still being stored on the owner, and two tries of one key
//!   that are both in flight can both store. The sender gets `451` instead
//!   and retries later, when the key answers.
//!
//! A failure on a fresh connection is never replayed here: that is the
//! caller's (and in the end the SMTP sender's) retry.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use uncorreo_cluster::hop::{HopSecret, HEADER};

/// The largest answer read back (answers are small JSON documents).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Idle connections kept per owner address, per thread: enough for the
/// deliveries a core has in flight to one owner in a burst (each waits for
/// the owner's fsync, so they overlap), few enough that every host's idle
/// connections stay well under an owner's `hop_max_connections` (1,024:
/// e.g. 3 other hosts x 8 cores x 32); and none outlives [`IDLE_TIMEOUT`].
pub const MAX_IDLE_PER_ADDRESS: usize = 32;
/// Owner addresses with idle connections kept, per thread; past it a
/// connection to a new address is closed after its request.
pub const MAX_ADDRESSES: usize = 64;
/// An idle connection older than this is closed instead of reused: well
/// under the owner's head timeout (10 s), which closes idle connections on
/// its side.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Why a hop request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    /// Connecting, sending or reading failed.
    #[error("hop to {addr}: {reason}")]
    Failed {
        /// The owner's hop address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// No answer within the timeout.
    #[error("hop to {0}: no answer in time")]
    Timeout(String),
}

/// Whether a request written on a kept-alive connection that then failed
/// without an answer may be sent again (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Sending it twice does what sending it once does, also when both are
    /// in flight at once (reads, handover copies).
    Idempotent,
    /// Only when it was never written (deliveries, proxied API requests).
    Unsent,
}

/// Seconds since the epoch, for signatures.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// POSTs `body` to `path` on `addr`, signed, and returns the status and
/// answer body.
pub async fn post(
    addr: &str,
    secret: &HopSecret,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
    replay: Replay,
) -> Result<(u16, Bytes), HopError> {
    post_bounded(addr, secret, path, body, timeout, MAX_ANSWER_BYTES, replay).await
}

/// [`post`] with an answer of up to `max_answer` bytes (a proxied read
/// can carry a whole message).
pub async fn post_bounded(
    addr: &str,
    secret: &HopSecret,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
    max_answer: usize,
    replay: Replay,
) -> Result<(u16, Bytes), HopError> {
    let body = Bytes::from(body);
    let exchange = async {
        if let Some(sender) = take_idle(addr) {
            match exchange(sender, addr, secret, path, body.clone(), max_answer).await {
                Ok(answer) => return Ok(answer),
                Err(Failure { sent, .. }) if !sent || replay == Replay::Idempotent => {
                    metrics::counter!(uncorreo_metric_names::HOP_REPLAYED_TOTAL).increment(1);
                }
                Err(Failure { reason, .. }) => return Err(reason),
            }
        }
        let sender = connect(addr).await?;
        exchange(sender, addr, secret, path, body, max_answer)
            .await
            .map_err(|failure| failure.reason)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result.map_err(|reason| HopError::Failed {
            addr: addr.to_owned(),
            reason,
        }),
        Err(_) => Err(HopError::Timeout(addr.to_owned())),
    }
}

/// A failed exchange: why, and whether the request left this host.
struct Failure {
    reason: String,
    sent: bool,
}

async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // Drives the connection until it closes: when the last sender is
    // dropped (an error, a timeout, or eviction from the pool) or the owner
    // closes it.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// One request on `sender`; on a complete `2xx` answer the connection goes
/// back to the pool. Dropped mid-way (the timeout), it is closed.
async fn exchange(
    mut sender: SendRequest<Full<Bytes>>,
    addr: &str,
    secret: &HopSecret,
    path: &str,
    body: Bytes,
    max_answer: usize,
) -> Result<(u16, Bytes), Failure> {
    let unsent = |reason: String| Failure {
        reason,
        sent: false,
    };
    sender
        .ready()
        .await
        .map_err(|e| unsent(format!("connection: {e}")))?;
    let signature = secret.sign("POST", path, unix_now(), &body);
    let request = Request::post(path)
        .header(hyper::header::HOST, addr)
        .header(HEADER, signature)
        .header(hyper::header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))
        .map_err(|e| unsent(format!("request: {e}")))?;
    let answer = match sender.try_send_request(request).await {
        Ok(answer) => answer,
        Err(mut error) => {
            return Err(Failure {
                sent: error.take_message().is_none(),
                reason: format!("send: {}", error.error()),
            })
        }
    };
    let status = answer.status().as_u16();
    let closing = answer
        .headers()
        .get(hyper::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let body = Limited::new(answer.into_body(), max_answer)
        .collect()
        .await
        .map_err(|e| Failure {
            reason: format!("answer: {e}"),
            sent: true,
        })?
        .to_bytes();
    if (200..300).contains(&status) && !closing {
        put_idle(addr, sender);
    }
    Ok((status, body))
}

/// What the pool needs of a connection (a trait so its bounds are tested
/// without sockets).
pub(crate) trait Connection {
    /// The connection was closed (by either side) or its driver is gone.
    fn is_closed(&self) -> bool;
}

impl Connection for SendRequest<Full<Bytes>> {
    fn is_closed(&self) -> bool {
        SendRequest::is_closed(self)
    }
}

/// Idle kept-alive connections by owner address, bounded in count and age.
pub(crate) struct Pool<C> {
    idle: HashMap<String, Vec<(C, Instant)>>,
}

impl<C: Connection> Pool<C> {
    pub(crate) fn new() -> Pool<C> {
        Pool {
            idle: HashMap::new(),
        }
    }

    /// The most recently used open connection to `addr` idle for less than
    /// [`IDLE_TIMEOUT`] at `now`; older or closed ones are dropped.
    pub(crate) fn take(&mut self, addr: &str, now: Instant) -> Option<C> {
        let idle = self.idle.get_mut(addr)?;
        let found = loop {
            match idle.pop() {
                None => break None,
                Some((connection, since)) => {
                    if now.saturating_duration_since(since) < IDLE_TIMEOUT
                        && !connection.is_closed()
                    {
                        break Some(connection);
                    }
                }
            }
        };
        // Everything older than the one taken is older still.
        idle.retain(|(c, since)| {
            now.saturating_duration_since(*since) < IDLE_TIMEOUT && !c.is_closed()
        });
        if idle.is_empty() {
            self.idle.remove(addr);
        }
        found
    }

    /// Keeps `connection` for reuse, within the bounds; otherwise drops it.
    pub(crate) fn put(&mut self, addr: &str, connection: C, now: Instant) {
        if !self.idle.contains_key(addr) && self.idle.len() >= MAX_ADDRESSES {
            self.idle.retain(|_, idle| {
                idle.retain(|(c, since)| {
                    now.saturating_duration_since(*since) < IDLE_TIMEOUT && !c.is_closed()
                });
                !idle.is_empty()
            });
            if self.idle.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let idle = self.idle.entry(addr.to_owned()).or_default();
        if idle.len() >= MAX_IDLE_PER_ADDRESS {
            idle.remove(0);
        }
        idle.push((connection, now));
    }

    /// Idle connections kept for `addr`.
    pub(crate) fn idle(&self, addr: &str) -> usize {
        self.idle.get(addr).map_or(0, Vec::len)
    }
}

thread_local! {
    static POOL: RefCell<Pool<SendRequest<Full<Bytes>>>> = RefCell::new(Pool::new());
}

fn take_idle(addr: &str) -> Option<SendRequest<Full<Bytes>>> {
    POOL.with(|pool| pool.borrow_mut().take(addr, Instant::now()))
}

fn put_idle(addr: &str, sender: SendRequest<Full<Bytes>>) {
    POOL.with(|pool| pool.borrow_mut().put(addr, sender, Instant::now()));
}

/// Idle connections this thread keeps for `addr` (tests).
pub fn idle_connections(addr: &str) -> usize {
    POOL.with(|pool| pool.borrow().idle(addr))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    struct Fake(Rc<Cell<bool>>);

    impl Connection for Fake {
        fn is_closed(&self) -> bool {
            self.0.get()
        }
    }

    fn open() -> (Fake, Rc<Cell<bool>>) {
        let closed = Rc::new(Cell::new(false));
        (Fake(Rc::clone(&closed)), closed)
    }

    #[test]
    fn the_pool_reuses_the_newest_open_connection_within_the_idle_timeout() {
        let mut pool = Pool::new();
        let t0 = Instant::now();
        let (old, _) = open();
        let (new, _) = open();
        pool.put("a", old, t0);
        pool.put("a", new, t0 + Duration::from_secs(1));
        assert!(pool.take("b", t0).is_none(), "per address");
        assert!(pool.take("a", t0 + Duration::from_secs(2)).is_some());
        // The older one is past the idle timeout by now: dropped, not reused.
        assert!(pool.take("a", t0 + IDLE_TIMEOUT).is_none());
        assert_eq!(pool.idle("a"), 0);
    }

    #[test]
    fn the_pool_drops_closed_connections() {
        let mut pool = Pool::new();
        let t0 = Instant::now();
        let (connection, closed) = open();
        pool.put("a", connection, t0);
        closed.set(true);
        assert!(pool.take("a", t0).is_none());
        assert_eq!(pool.idle("a"), 0);
    }

    #[test]
    fn the_pool_is_bounded_per_address_and_in_addresses() {
        let mut pool = Pool::new();
        let t0 = Instant::now();
        for _ in 0..MAX_IDLE_PER_ADDRESS + 3 {
            pool.put("a", open().0, t0);
        }
        assert_eq!(pool.idle("a"), MAX_IDLE_PER_ADDRESS);
        for n in 1..MAX_ADDRESSES + 5 {
            pool.put(&format!("host{n}"), open().0, t0);
        }
        assert_eq!(pool.idle.len(), MAX_ADDRESSES);
        // Once the others have timed out, a new address finds room.
        pool.put("late", open().0, t0 + IDLE_TIMEOUT);
        assert_eq!(pool.idle("late"), 1);
        assert_eq!(pool.idle.len(), 1);
    }
}
