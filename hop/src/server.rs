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
//! | a handover copy for a partition this host serves, or an import refused | `409` |
//! | a handover copy that does not fit on disk | `507` |
//! | a member-only read of a path not in `MEMBER_READS`, or meant for another node | `422` / `409` |
//! | not a request this listener knows | `404` / `422` |
//!
//! A connection carries requests one after another (HTTP/1.1 keep-alive);
//! one left idle is closed by [`HopLimits::header_timeout`], which waits
//! for the next request's head as for the first.
//!
//! The handover routes are the destination's side of a clean handover
//! (`uncorreo_cluster::handover`, `crate::handover` is the source's):
//! `copy` imports one chunk of a mailbox of the moving partition and
//! answers once it is durable (a repeat writes nothing); `adopt` serves the
//! partition from now on, once its home in NATS names this host.

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
use uncorreo_cluster::partition::{partition_of, Partition, PartitionCount};
use uncorreo_engine::{
    DeliverError, Delivery, DeliveryOutcome, Engine, ExportChunk, ImportError, Owner, Recipient,
    UserId,
};

use crate::client::unix_now;
use crate::wire::{
    decode_deliver, frame, unframe, AdoptRequest, CopyHead, DeliverAnswer, HttpAnswerHead,
    HttpEnvelope, MemberAnswerHead, MemberEnvelope, NodeAnswer, Refusal, ResolveAnswer,
    ResolveRequest, ADOPT_PATH, COPY_PATH, DELIVER_PATH, HTTP_PATH, MEMBER_PATH, MEMBER_READS,
    NODE_PATH, RESOLVE_PATH,
};

/// The listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct HopLimits {
    /// Largest request body: the largest request that travels (a
    /// message, or a Mailpit send's JSON) plus room for the envelope.
    pub max_body_bytes: usize,
    /// Connections open at once; past it a new one gets `503` and is closed.
    pub max_connections: usize,
    /// Time to read a request head.
    pub header_timeout: Duration,
}

/// Room for a delivery's envelope (sender, up to a few thousand
/// recipients, key) on top of the message.
pub const ENVELOPE_ROOM: usize = 1 << 20;

/// A request extension: this read is one host's part of a listing that
/// spans hosts, and covers only the partitions in it (those the host
/// served when the read began). Set only by the hop's member-only route and
/// by the asking host for its own part, never from a client's request.
#[derive(Debug, Clone)]
pub struct MemberOnly {
    served: Arc<[bool]>,
}

impl MemberOnly {
    /// The partitions `served` serves at `now`.
    pub fn now(served: &Served, partitions: PartitionCount) -> MemberOnly {
        let now = Instant::now();
        MemberOnly {
            served: (0..partitions.get())
                .map(|p| served.serves(Partition(p), now))
                .collect(),
        }
    }

    /// Whether the read covers `partition`.
    pub fn covers(&self, partition: Partition) -> bool {
        self.served
            .get(usize::from(partition.0))
            .copied()
            .unwrap_or(false)
    }

    /// The partitions covered, in order.
    pub fn partitions(&self) -> Vec<u16> {
        (0..self.served.len())
            .filter(|&p| self.served[p])
            .filter_map(|p| u16::try_from(p).ok())
            .collect()
    }
}

/// The owner's own public API, called in process for a proxied request.
pub trait LocalHttp: Send + Sync {
    /// Runs `request` (from a client at `client`) and returns the answer,
    /// its body bounded by the caller's limit.
    fn call(
        &self,
        request: Request<Bytes>,
        client: std::net::IpAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Bytes>> + Send>>;
}

/// The destination's side of `adopt`: serve a partition whose home moved
/// here (implemented by the appliance, which reads the home in NATS).
pub trait Adopter: Send + Sync {
    /// Serves `partition` from now on if its home names this host; why not
    /// otherwise.
    fn adopt(
        &self,
        partition: Partition,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;
}

/// Tests: the next delivery stops after it was admitted, until released.
#[derive(Debug)]
pub struct DeliveryPause {
    reached: std::sync::mpsc::Receiver<()>,
    release: Option<tokio::sync::oneshot::Sender<()>>,
}

impl DeliveryPause {
    /// Blocks until a delivery has been admitted and stopped, or `limit`
    /// passed; whether it was.
    pub fn reached(&self, limit: Duration) -> bool {
        self.reached.recv_timeout(limit).is_ok()
    }

    /// Lets the stopped delivery go on to the store.
    pub fn release(mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
    }
}

struct PauseHook {
    reached: std::sync::mpsc::Sender<()>,
    release: tokio::sync::oneshot::Receiver<()>,
}

/// How often a handover import refused as busy or saturated is tried again,
/// and how long apart: both clear once this host's writer commits.
const IMPORT_TRIES: u32 = 50;
const IMPORT_RETRY_AFTER: Duration = Duration::from_millis(20);

/// What the owner's side needs.
pub struct HopServer {
    engine: Engine,
    secret: HopSecret,
    node: String,
    served: Arc<Served>,
    partitions: PartitionCount,
    limits: HopLimits,
    fail_next_answer: AtomicBool,
    pause_next_delivery: std::sync::Mutex<Option<PauseHook>>,
    local_http: std::sync::OnceLock<Arc<dyn LocalHttp>>,
    adopter: std::sync::OnceLock<Arc<dyn Adopter>>,
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
            pause_next_delivery: std::sync::Mutex::new(None),
            local_http: std::sync::OnceLock::new(),
            adopter: std::sync::OnceLock::new(),
        }
    }

    /// Gives the server what serves an adopted partition (set once; until
    /// then `adopt` gets `503`).
    pub fn set_adopter(&self, adopter: Arc<dyn Adopter>) {
        let _ = self.adopter.set(adopter);
    }

    /// Tests: the next forwarded delivery stops once admitted, before it is
    /// stored, until the returned pause is released.
    pub fn pause_next_delivery_for_tests(&self) -> DeliveryPause {
        let (reached_tx, reached) = std::sync::mpsc::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel();
        if let Ok(mut hook) = self.pause_next_delivery.lock() {
            *hook = Some(PauseHook {
                reached: reached_tx,
                release: release_rx,
            });
        }
        DeliveryPause {
            reached,
            release: Some(release),
        }
    }

    /// Gives the server this host's public API, for proxied requests
    /// (set once, after the API is built; until then they get `503`).
    pub fn set_local_http(&self, local: Arc<dyn LocalHttp>) {
        let _ = self.local_http.set(local);
    }

    /// Tests: the next delivery is stored, then its connection is closed
    /// without an answer (an owner that dies between its fsync and its
    /// answer, as the accepting host sees it).
    pub fn fail_next_answer_for_tests(&self) {
        self.fail_next_answer.store(true, Ordering::Release);
    }

    /// Whether `address` is answered here: its mailbox's partition, or a
    /// campaign address, sent here as the campaign's home (campaigns never
    /// move; one this host does not keep, deleted or never made, is
    /// refused by its engine: `550`, not a retry).
    fn serves(&self, address: &str) -> bool {
        crate::route::campaign_named(&self.engine, address).is_some()
            || self.engine.campaign_for(address).is_some()
            || self
                .served
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
        ("POST", HTTP_PATH) => Ok(proxied(server, body).await),
        ("POST", MEMBER_PATH) => Ok(member(server, body).await),
        ("POST", COPY_PATH) => Ok(copy(server, body).await),
        ("POST", ADOPT_PATH) => Ok(adopt(server, &body).await),
        ("POST", NODE_PATH) => Ok(answer(
            StatusCode::OK,
            NodeAnswer {
                node: server.node.clone(),
            },
        )),
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
    let refused = match server.engine.resolve(&request.rcpt) {
        Err(e) => Some(Refusal::from(e)),
        Ok(resolved) => request.sender_user.and_then(|user| {
            let owns = server
                .engine
                .mailbox(&resolved.address)
                .is_some_and(|m| m.owner == Owner::User(UserId(user)));
            (!owns).then_some(Refusal::NotYours)
        }),
    };
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
    // Admitted from this check until the store is durable, so a handover
    // that starts meanwhile waits for this delivery before it copies.
    let now = Instant::now();
    let admitted: Result<Vec<_>, _> = envelope
        .rcpts
        .iter()
        // A campaign address is not a mailbox and never moves.
        .filter(|r| {
            server.engine.campaign_for(r).is_none()
                && crate::route::campaign_named(&server.engine, r).is_none()
        })
        .map(|r| server.served.admit(partition_of(r, server.partitions), now))
        .collect();
    let (true, Ok(_admitted)) = (envelope.node == server.node, admitted) else {
        return Ok(problem(
            StatusCode::CONFLICT,
            "this host does not serve that partition",
        ));
    };
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
    let hook = server
        .pause_next_delivery
        .lock()
        .ok()
        .and_then(|mut hook| hook.take());
    if let Some(hook) = hook {
        let _ = hook.reached.send(());
        let _ = hook.release.await;
    }
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

/// End-to-end headers only: the hop's own connection is not the client's.
pub fn end_to_end(name: &str) -> bool {
    !matches!(
        name.to_ascii_lowercase().as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "upgrade"
            | "host"
            | "te"
            | "trailer"
            | "proxy-connection"
    )
}

/// The end-to-end headers of `headers` as text pairs (a value that is not
/// text is left out): what travels with a request or an answer over the hop.
pub fn end_to_end_pairs(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| end_to_end(name.as_str()))
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|value| (name.as_str().to_owned(), value.to_owned()))
        })
        .collect()
}

/// Append the end-to-end ones of `pairs` to `headers` (a name or value
/// that is not valid is left out).
fn append_end_to_end(headers: &mut hyper::HeaderMap, pairs: &[(String, String)]) {
    for (name, value) in pairs {
        if !end_to_end(name) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
}

async fn proxied(server: &HopServer, body: Bytes) -> Response<Full<Bytes>> {
    let Some((envelope, body)) = unframe::<HttpEnvelope>(body) else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "not a proxied request");
    };
    let partition = match envelope.partition {
        None => partition_of(&envelope.address, server.partitions),
        Some(index) => match partition_named(server, index) {
            Some(partition) => partition,
            None => return problem(StatusCode::UNPROCESSABLE_ENTITY, "no such partition"),
        },
    };
    // A proxied request may create, change or delete: admitted until it
    // is done, like a delivery. A campaign address (sent here as the
    // campaign's home) names no mailbox and never moves: the API here
    // answers it.
    let campaign = envelope.partition.is_none()
        && crate::route::campaign_named(&server.engine, &envelope.address).is_some();
    let admitted = match campaign {
        true => Ok(None),
        false => server.served.admit(partition, Instant::now()).map(Some),
    };
    let (true, Ok(_admitted)) = (envelope.node == server.node, admitted) else {
        return problem(
            StatusCode::CONFLICT,
            "this host does not serve that partition",
        );
    };
    let Some(local) = server.local_http.get() else {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "the API is not up yet");
    };
    let mut request = Request::new(body);
    let Ok(method) = hyper::Method::from_bytes(envelope.method.as_bytes()) else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "bad method");
    };
    *request.method_mut() = method;
    let Ok(uri) = envelope.path.parse() else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "bad path");
    };
    *request.uri_mut() = uri;
    append_end_to_end(request.headers_mut(), &envelope.headers);
    let answer = local.call(request, envelope.client).await;
    let head = HttpAnswerHead {
        status: answer.status().as_u16(),
        headers: end_to_end_pairs(answer.headers()),
    };
    let mut response = Response::new(Full::new(Bytes::from(frame(&head, answer.body()))));
    *response.status_mut() = StatusCode::OK;
    response
}

/// A member-only read: no partition named, none admitted (it writes
/// nothing); the read covers what this host serves as it starts, and says
/// which partitions that was.
async fn member(server: &HopServer, body: Bytes) -> Response<Full<Bytes>> {
    let Ok(envelope) = serde_json::from_slice::<MemberEnvelope>(&body) else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "not a member-only read");
    };
    if envelope.node != server.node {
        return problem(StatusCode::CONFLICT, "not the node named");
    }
    let path = envelope.path.split('?').next().unwrap_or_default();
    if !MEMBER_READS.contains(&path) {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a read that spans hosts",
        );
    }
    let Some(local) = server.local_http.get() else {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "the API is not up yet");
    };
    let Ok(uri) = envelope.path.parse() else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "bad path");
    };
    let mut request = Request::new(Bytes::new());
    *request.uri_mut() = uri;
    append_end_to_end(request.headers_mut(), &envelope.headers);
    let only = MemberOnly::now(&server.served, server.partitions);
    let served = only.partitions();
    request.extensions_mut().insert(only);
    let answer = local.call(request, envelope.client).await;
    let head = MemberAnswerHead {
        status: answer.status().as_u16(),
        headers: end_to_end_pairs(answer.headers()),
        served,
    };
    let mut response = Response::new(Full::new(Bytes::from(frame(&head, answer.body()))));
    *response.status_mut() = StatusCode::OK;
    response
}

/// The partition a handover request names, if it is one of the cluster's.
fn partition_named(server: &HopServer, index: u16) -> Option<Partition> {
    (index < server.partitions.get()).then_some(Partition(index))
}

async fn copy(server: &HopServer, body: Bytes) -> Response<Full<Bytes>> {
    let Some((head, chunk)) = unframe::<CopyHead>(body) else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "not a handover copy");
    };
    let Some(partition) = partition_named(server, head.partition) else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "no such partition");
    };
    if head.node != server.node {
        return problem(StatusCode::CONFLICT, "not the destination named");
    }
    // A copy lands only where it is not served: the destination serves the
    // partition after the flip, never while it is still being copied.
    if server.served.serves(partition, Instant::now()) {
        return problem(StatusCode::CONFLICT, "this host serves that partition");
    }
    let chunk = match ExportChunk::decode(chunk) {
        Ok(chunk) => chunk,
        Err(error) => return problem(StatusCode::UNPROCESSABLE_ENTITY, &error.to_string()),
    };
    if partition_of(&chunk.export.mailbox.address.to_string(), server.partitions) != partition {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a mailbox of another partition",
        );
    }
    let mut tries = 0;
    let imported = loop {
        match server.engine.import_chunk(chunk.clone()).await {
            Err(ImportError::Busy | ImportError::Saturated) if tries < IMPORT_TRIES => {
                tries += 1;
                tokio::time::sleep(IMPORT_RETRY_AFTER).await;
            }
            other => break other,
        }
    };
    match imported {
        Ok(report) => answer(
            StatusCode::OK,
            serde_json::json!({
                "created": report.created,
                "appended": report.appended,
                "deleted": report.deleted,
            }),
        ),
        Err(ImportError::DiskFull) => problem(StatusCode::INSUFFICIENT_STORAGE, "storage full"),
        Err(error) => problem(StatusCode::CONFLICT, &error.to_string()),
    }
}

async fn adopt(server: &HopServer, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(request) = serde_json::from_slice::<AdoptRequest>(body) else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "not an adopt request");
    };
    let Some(partition) = partition_named(server, request.partition) else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "no such partition");
    };
    if request.node != server.node {
        return problem(StatusCode::CONFLICT, "not the destination named");
    }
    let Some(adopter) = server.adopter.get() else {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "membership not up yet");
    };
    match adopter.adopt(partition).await {
        Ok(()) => answer(StatusCode::OK, serde_json::json!({})),
        Err(why) => problem(StatusCode::CONFLICT, &why),
    }
}
