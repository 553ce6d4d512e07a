//! The hop client's kept-alive connections, against a real HTTP/1.1 server
//! on loopback that counts connections and requests: reuse, no reuse after
//! a timeout, and a request written on a kept-alive connection that died
//! unanswered sent again only when it is idempotent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use uncorreo_cluster::hop::HopSecret;
use uncorreo_hop::client::{idle_connections, post, HopError, Replay};

#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// Answers `200` to every request, except: `/slow` never answers, and
/// `/dies` on a connection's second or later request closes the
/// connection unanswered (the request was written and read).
async fn server() -> (String, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let counts = Arc::new(Counts::default());
    let shared = Arc::clone(&counts);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let counts = Arc::clone(&shared);
            let on_this = Arc::new(AtomicUsize::new(0));
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let counts = Arc::clone(&counts);
                        let on_this = Arc::clone(&on_this);
                        async move {
                            counts.requests.fetch_add(1, Ordering::SeqCst);
                            let nth = on_this.fetch_add(1, Ordering::SeqCst);
                            match request.uri().path() {
                                "/slow" => std::future::pending::<()>().await,
                                "/dies" if nth > 0 => return Err(Dies),
                                _ => {}
                            }
                            Ok::<_, Dies>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, counts)
}

#[derive(Debug)]
struct Dies;

impl std::fmt::Display for Dies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closed unanswered")
    }
}

impl std::error::Error for Dies {}

fn secret() -> HopSecret {
    HopSecret::new(b"0123456789abcdef0123456789abcdef-pool".to_vec()).expect("secret")
}

const TIMEOUT: Duration = Duration::from_secs(10);

async fn ok(addr: &str, path: &str, replay: Replay) -> Result<u16, HopError> {
    post(addr, &secret(), path, b"{}".to_vec(), TIMEOUT, replay)
        .await
        .map(|(status, _)| status)
}

#[tokio::test(flavor = "current_thread")]
async fn sequential_requests_share_one_connection() {
    let (addr, counts) = server().await;
    for _ in 0..3 {
        assert_eq!(ok(&addr, "/x", Replay::Unsent).await.expect("answer"), 200);
    }
    assert_eq!(counts.requests.load(Ordering::SeqCst), 3);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 1);
    assert_eq!(idle_connections(&addr), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_timed_out_exchange_closes_its_connection() {
    let (addr, counts) = server().await;
    assert_eq!(ok(&addr, "/x", Replay::Unsent).await.expect("answer"), 200);
    let slow = post(
        &addr,
        &secret(),
        "/slow",
        b"{}".to_vec(),
        Duration::from_millis(200),
        Replay::Idempotent,
    )
    .await;
    assert!(matches!(slow, Err(HopError::Timeout(_))), "{slow:?}");
    assert_eq!(idle_connections(&addr), 0, "not pooled after a timeout");
    // The next request cannot get the timed-out connection: a new one.
    assert_eq!(ok(&addr, "/x", Replay::Unsent).await.expect("answer"), 200);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn a_kept_alive_connection_that_dies_unanswered_is_replayed_only_when_idempotent() {
    let (addr, counts) = server().await;
    assert_eq!(
        ok(&addr, "/dies", Replay::Unsent).await.expect("first"),
        200
    );
    assert_eq!(idle_connections(&addr), 1);
    // Written on the kept-alive connection, which dies unanswered: an
    // idempotent request goes once more on a fresh connection and succeeds.
    assert_eq!(
        ok(&addr, "/dies", Replay::Idempotent)
            .await
            .expect("replayed"),
        200
    );
    assert_eq!(counts.connections.load(Ordering::SeqCst), 2);
    assert_eq!(counts.requests.load(Ordering::SeqCst), 3);
    // A delivery is not: the caller gets the failure, and nothing is sent
    // a second time.
    let once = ok(&addr, "/dies", Replay::Unsent).await;
    assert!(matches!(once, Err(HopError::Failed { .. })), "{once:?}");
    assert_eq!(counts.connections.load(Ordering::SeqCst), 2);
    assert_eq!(counts.requests.load(Ordering::SeqCst), 4);
    assert_eq!(idle_connections(&addr), 0, "never reused after an error");
}
