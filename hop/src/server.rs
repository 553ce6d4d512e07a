//! The owner's side of the hop: its own listener, HTTP/1.1, every request
//! signed (`uncorreo_cluster::hop`), bounded in body size, connections and
//! time.
//!
//! | refused | status |
//! |---|---|
//! | no, malformed, stale or wrong signature | `401` |
//! | body over [`HopLimits::max_body_bytes`] | `413` |
//! | connections past [`HopLimits::max_connections`] | `503` + `Retry-After: 1`, closed |
//! | a partition this host does not serve now | `409` (the sender answers `451`) |
//! | not a request this listener knows | `404` / `422` |

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uncorreo_cluster::hop::{HopSecret, HEADER};
use uncorreo_cluster::member::Served;
use uncorreo_cluster::partition::{partition_of, PartitionCount};
use uncorreo_engine::{DeliverError, Delivery, DeliveryOutcome, Engine, Recipient};

use crate::client::unix_now;
use crate::wire::{
    decode_deliver, DeliverAnswer, Refusal, ResolveAnswer, ResolveRequest, DELIVER_PATH,
    RESOLVE_PATH,
};

/// The listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct HopLimits {
    /// Largest request body: the engine's message limit plus room for the
    /// envelope.
    pub max_body_bytes: usize,
    /// Connections open at once; past it a new one gets `503` and is closed.
    pub max_connections: usize,
    /// Time to read a request head.
    pub header_timeout: Duration,
}

/// Room for a delivery's envelope (sender, up to a few thousand
/// recipients, key) on top of the message.
pub const ENVELOPE_ROOM: usize = 1 << 20;

/// What the owner's side needs.
pub struct HopServer {
    engine: Engine,
    secret: HopSecret,
    node: String,
    served: Arc<Served>,
    partitions: PartitionCount,
    limits: HopLimits,
    fail_next_answer: AtomicBool,
}

impl std::fmt::Debug for HopServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopServer")
            .field("node", &self.node)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl HopServer {
    /// The server of host `node`.
    pub fn new(
        engine: Engine,
        secret: HopSecret,
        node: String,
        served: Arc<Served>,
        partitions: PartitionCount,
        limits: HopLimits,
    ) -> HopServer {
        HopServer {
            engine,
            secret,
            node,
            served,
            partitions,
            limits,
            fail_next_answer: AtomicBool::new(false),
        }
    }

    /// Tests: the next delivery is stored, then its connection is closed
    /// without an answer (an owner that dies between its fsync and its
    /// answer, as the accepting host sees it).
    pub fn fail_next_answer_for_tests(&self) {
        self.fail_next_answer.store(true, Ordering::Release);
    }

    fn serves(&self, address: &str) -> bool {
        self.served
            .serves(partition_of(address, self.partitions), Instant::now())
    }
}

/// Accepts hop connections until `shutdown`.
pub async fn serve(listener: TcpListener, server: Arc<HopServer>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(server.limits.max_connections));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut stream, _peer)) = accepted else {
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let server = Arc::clone(&server);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let header_timeout = server.limits.header_timeout;
            let service = hyper::service::service_fn(move |request| {
                let server = Arc::clone(&server);
                async move { handle(&server, request).await }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// The request could not be answered at all (the test hook): hyper closes
/// the connection.
#[derive(Debug, thiserror::Error)]
#[error("answer withheld")]
struct Withheld;

fn answer(status: StatusCode, body: impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn problem(status: StatusCode, detail: &str) -> Response<Full<Bytes>> {
    answer(status, serde_json::json!({ "error": detail }))
}

async fn handle(
    server: &HopServer,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Withheld> {
    let max = server.limits.max_body_bytes;
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Ok(problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body over the hop's limit",
        ));
    }
    let method = request.method().as_str().to_owned();
    let path = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let signature = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match Limited::new(request.into_body(), max).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return Ok(problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body over the hop's limit",
            ));
        }
        Err(_) => return Ok(problem(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    let Some(signature) = signature else {
        return Ok(problem(StatusCode::UNAUTHORIZED, "no hop signature"));
    };
    if let Err(refused) = server
        .secret
        .verify(&signature, &method, &path, unix_now(), &body)
    {
        metrics::counter!(uncorreo_metric_names::HOP_REFUSED_TOTAL).increment(1);
        return Ok(problem(StatusCode::UNAUTHORIZED, &refused.to_string()));
    }
    match (method.as_str(), path.as_str()) {
        ("POST", RESOLVE_PATH) => Ok(resolve(server, &body)),
        ("POST", DELIVER_PATH) => deliver(server, body).await,
        _ => Ok(problem(StatusCode::NOT_FOUND, "no such hop route")),
    }
}

fn resolve(server: &HopServer, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(request) = serde_json::from_slice::<ResolveRequest>(body) else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "not a resolve request");
    };
    if request.node != server.node || !server.serves(&request.rcpt) {
        return problem(
            StatusCode::CONFLICT,
            "this host does not serve that partition",
        );
    }
    let refused = server
        .engine
        .resolve(&request.rcpt)
        .err()
        .map(Refusal::from);
    answer(StatusCode::OK, ResolveAnswer { refused })
}

async fn deliver(server: &HopServer, body: Bytes) -> Result<Response<Full<Bytes>>, Withheld> {
    let Some((envelope, raw)) = decode_deliver(body) else {
        return Ok(problem(StatusCode::UNPROCESSABLE_ENTITY, "not a delivery"));
    };
    let key: Option<[u8; 32]> = hex::decode(&envelope.key)
        .ok()
        .and_then(|k| k.try_into().ok());
    let Some(key) = key else {
        return Ok(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad delivery key",
        ));
    };
    if envelope.node != server.node || !envelope.rcpts.iter().all(|r| server.serves(r)) {
        return Ok(problem(
            StatusCode::CONFLICT,
            "this host does not serve that partition",
        ));
    }
    let mut recipients = Vec::with_capacity(envelope.rcpts.len());
    for rcpt in &envelope.rcpts {
        match Recipient::parse(rcpt) {
            Ok(r) => recipients.push(r),
            Err(_) => return Ok(problem(StatusCode::UNPROCESSABLE_ENTITY, "bad recipient")),
        }
    }
    let delivery = Delivery {
        raw,
        envelope_from: envelope.from,
        recipients,
        dedupe_key: None,
    };
    let result = server
        .engine
        .deliver_forwarded(delivery, server.engine.quota_holds(), key)
        .await;
    if result.is_ok() && server.fail_next_answer.swap(false, Ordering::AcqRel) {
        return Err(Withheld);
    }
    Ok(match result {
        Ok(DeliveryOutcome::Delivered { stored, refused }) => answer(
            StatusCode::OK,
            DeliverAnswer {
                stored: stored.iter().map(ToString::to_string).collect(),
                refused: refused
                    .into_iter()
                    .map(|(r, e)| (crate::wire::rcpt_text(&r), Refusal::from(e)))
                    .collect(),
            },
        ),
        // Forwarded deliveries carry no dedupe key.
        Ok(DeliveryOutcome::Duplicate) => answer(
            StatusCode::OK,
            DeliverAnswer {
                stored: Vec::new(),
                refused: Vec::new(),
            },
        ),
        Err(DeliverError::TooLarge { .. }) => problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message over the owner's limit",
        ),
        Err(DeliverError::DiskFull) => problem(StatusCode::INSUFFICIENT_STORAGE, "storage full"),
        Err(error) => problem(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
    })
}
