//! With `[cluster]`: a public API request about a mailbox another host owns
//! runs on that host (SCALE.md, "Reads"). The request goes over the signed
//! internal hop with the caller's credential, which the owner checks as it
//! checks its own callers; the answer comes back as the owner gave it.
//!
//! Routed: every `/api/v1/mailboxes/{address}…` route except the real-time
//! streams (`…/events`, `…/wait` and `/ws/inbox/…`, which run here on the
//! owner's events: `realtime::remote`), and
//! `POST /api/v1/mailboxes`, whose address is chosen here (the random local
//! part too) so the mailbox is created by the owner of its partition, and
//! `GET /api/v1/mailboxes` with a session token whose prefix names another
//! host's partition (`ust_<p>_…`: its one mailbox lives there). No live
//! owner: `503` with `Retry-After`.
//!
//! A body for another host is read once the owner is known, under this
//! host's budget of bytes in flight (held until the owner answered; `503`
//! with `Retry-After` when it cannot take it, `front_end="routed"`); one
//! for this host streams to its handler as on one host.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uncorreo_hop::wire::{HttpAnswerHead, HttpEnvelope};
use uncorreo_hop::Placement;

use crate::inflight::{self, BodyError, FrontEnd};
use crate::problem::{Kind, Problem};
use crate::AppState;

/// Marks a request that arrived over the hop: it runs here, whatever this
/// host believes about its placement (the hop server checked it).
#[derive(Debug, Clone, Copy)]
pub struct Proxied;

/// The middleware (mounted only with `[cluster] listen`).
pub async fn route_to_owner(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(request).await;
    };
    if request.extensions().get::<Proxied>().is_some() {
        return next.run(request).await;
    }
    if let Some(index) = token_listing(&request) {
        return list_on_token_owner(&state, &cluster, index, request, next).await;
    }
    let create = request.method() == Method::POST && request.uri().path() == "/api/v1/mailboxes";
    let named = mailbox_in_path(request.uri().path());
    if !create && named.is_none() {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    // The body of a named route is read only once the owner is known: here
    // it streams to the handler as on one host, and for another host it is
    // read under the budget of bytes in flight, as the owner reads it.
    let (address, body) = match named {
        Some(address) => (address, Unread(body)),
        None => {
            let limit = state.limits().json_body_bytes;
            let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
                return too_large();
            };
            match creation_address(&state, &bytes) {
                Some((address, rewritten)) => {
                    // The body is now JSON whatever it was (an empty body is allowed).
                    parts.headers.insert(
                        axum::http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    (address, Read(rewritten))
                }
                // Not an object: the handler here says what is wrong with it.
                None => {
                    return next
                        .run(Request::from_parts(parts, Body::from(bytes)))
                        .await
                }
            }
        }
    };
    let owner = match cluster.place(&address).await {
        Placement::Local => {
            // Held until the request is done (it may create, send or
            // delete): a handover waits for it before copying.
            let Ok(_admitted) = cluster.admit(&address) else {
                return unavailable();
            };
            return next.run(Request::from_parts(parts, body.into())).await;
        }
        Placement::Unavailable => return unavailable(),
        Placement::Remote(owner) => owner,
    };
    let max_message = state.engine.config().max_message_bytes;
    // Held until the owner answered: the bytes live until then.
    let (bytes, _permit) = match body {
        Read(bytes) => (bytes, None),
        Unread(stream) => {
            let limit = max_message.saturating_add(1 << 16);
            match inflight::read(state.budget(), &parts.headers, stream, limit).await {
                Ok((bytes, permit)) => (bytes, Some(permit)),
                Err(BodyError::OverBudget(_)) => {
                    return inflight::refused_unread(FrontEnd::Routed).into_response()
                }
                Err(BodyError::TooLarge | BodyError::Unreadable) => return too_large(),
            }
        }
    };
    let client = crate::auth::client_ip(&state, &parts);
    let envelope = HttpEnvelope {
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: end_to_end_headers(&parts.headers),
        address,
        partition: None,
        node: String::new(),
        client,
    };
    let max_answer = max_message.saturating_add(1 << 20);
    match cluster.proxy(&owner, envelope, &bytes, max_answer).await {
        Ok((head, body)) => owner_answer(head, body),
        Err(_) => unavailable(),
    }
}

/// For `GET /api/v1/mailboxes` with a session token minted in a cluster:
/// the partition its prefix names, where its one mailbox lives.
fn token_listing(request: &Request) -> Option<u16> {
    if request.method() != Method::GET || request.uri().path() != "/api/v1/mailboxes" {
        return None;
    }
    match crate::auth::Credential::from_headers(request.headers()).ok()? {
        crate::auth::Credential::SessionToken(token) => {
            crate::auth::session_token_partition(&token)
        }
        _ => None,
    }
}

/// A session token's listing, run by the owner of the partition its
/// prefix names (no other host knows the token).
async fn list_on_token_owner(
    state: &AppState,
    cluster: &uncorreo_hop::Cluster,
    index: u16,
    request: Request,
    next: Next,
) -> Response {
    // A partition the cluster lacks: forged or foreign, it opens nothing here either.
    let Some(partition) = cluster.partition_numbered(index) else {
        return next.run(request).await;
    };
    let owner = match cluster.place_partition(partition).await {
        Placement::Local => return next.run(request).await,
        Placement::Unavailable => return unavailable(),
        Placement::Remote(owner) => owner,
    };
    let (parts, _) = request.into_parts();
    let envelope = HttpEnvelope {
        method: "GET".to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: end_to_end_headers(&parts.headers),
        address: String::new(),
        partition: Some(partition.0),
        node: String::new(),
        client: crate::auth::client_ip(state, &parts),
    };
    let max_answer = state
        .engine
        .config()
        .max_message_bytes
        .saturating_add(1 << 20);
    match cluster.proxy(&owner, envelope, &[], max_answer).await {
        Ok((head, body)) => owner_answer(head, body),
        Err(_) => unavailable(),
    }
}

/// A routed request's body: still streaming, or already read (a creation,
/// whose address comes from it).
enum RoutedBody {
    Unread(Body),
    Read(bytes::Bytes),
}
use RoutedBody::{Read, Unread};

impl From<RoutedBody> for Body {
    fn from(body: RoutedBody) -> Self {
        match body {
            Unread(stream) => stream,
            Read(bytes) => Body::from(bytes),
        }
    }
}

fn too_large() -> Response {
    Problem::new(Kind::PayloadTooLarge, "the request body is too large").into_response()
}

/// The owner's answer to a proxied request, as it gave it.
pub(crate) fn owner_answer(head: HttpAnswerHead, body: bytes::Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in head.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// No live owner, or it did not answer.
pub(crate) fn unavailable() -> Response {
    Problem::new(
        Kind::Unavailable,
        "the host that keeps this mailbox is unavailable; retry shortly",
    )
    .retry_after(1)
    .into_response()
}

/// The address a `/api/v1/mailboxes/{address}…` route names, unless it is a
/// real-time stream.
fn mailbox_in_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/v1/mailboxes/")?;
    let (segment, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if tail == "events" || tail == "wait" {
        return None;
    }
    let address = segment.replace("%40", "@");
    address.contains('@').then_some(address)
}

/// For `POST /api/v1/mailboxes`: the address the mailbox will have (a
/// random local part is chosen here and written into the body), and the
/// body to run.
fn creation_address(state: &AppState, body: &[u8]) -> Option<(String, bytes::Bytes)> {
    let mut object = if body.is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<serde_json::Value>(body).ok()? {
            serde_json::Value::Object(object) => object,
            _ => return None,
        }
    };
    let local = match object.get("local_part") {
        Some(serde_json::Value::String(local)) => local.to_ascii_lowercase(),
        Some(_) => return None,
        None => {
            let local = crate::mailboxes::random_local_part();
            object.insert("local_part".to_owned(), local.clone().into());
            local
        }
    };
    let domain = match object.get("domain") {
        Some(serde_json::Value::String(domain)) => domain.clone(),
        Some(_) => return None,
        None => state.engine.config().domains.first()?.clone(),
    };
    let body = serde_json::to_vec(&serde_json::Value::Object(object)).ok()?;
    Some((format!("{local}@{domain}"), bytes::Bytes::from(body)))
}

/// The headers of a request that travel with it to the owner (the
/// caller's credential among them).
pub(crate) fn end_to_end_headers(headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
    uncorreo_hop::server::end_to_end_pairs(headers)
}
