//! With `[cluster] listen`: a Mailpit request about mailboxes another host
//! keeps runs on that host (SCALE.md, "Mailpit"), over the same signed hop
//! request as REST (`POST /internal/v1/http`, the caller's credential, the
//! owner checks the partition again: it answers `409` if it does not serve
//! it, and this host answers `503`). The routing happens here, before
//! [`super::Instance`] is extracted, so the handlers stay single-host code.
//!
//! What goes where:
//! - a session token minted in a cluster names its mailbox's partition
//!   (`ust_<p>_…`, [`crate::auth::session_token_partition`]): the whole
//!   request (list, search, delete-all, read-all, a message, send, …) runs
//!   on that partition's owner, in one hop. Only the probes, the
//!   WebSocket `/api/events` (which follows remote mailboxes itself,
//!   [`super::follow`]) and the owner's summaries for it run here;
//! - a message-id route (`/api/v1/message/{id}…`, `/view/{id}.html|txt`)
//!   runs on the owner of the partition in the id's mailbox bits
//!   (engine/FORMAT.md), whatever the credential (`latest` is not an id);
//! - `PUT`/`DELETE /api/v1/messages` and `PUT /api/v1/tags` with `IDs`
//!   with an API key: the IDs are split by owner and each owner gets the
//!   request with its own IDs (one hop each; this host's share runs here);
//!   the first answer that is not a success is the answer, otherwise `ok`;
//! - with an API key, `latest`, `PUT`/`DELETE /api/v1/messages` without
//!   `IDs` and `DELETE /api/v1/search` mean messages on every host: they
//!   become the requests above ([`super::sweep`]);
//! - everything else (an API key's list, search, `info` and `tags`, which
//!   gather from every home in their handlers, a token without a prefix, a
//!   request without usable Basic credentials, which is `401` here without
//!   a hop) runs here, as on one host.
//!
//! No live owner, or it did not answer: `503` with `Retry-After`, as plain
//! text. A request for another host is read here only once its owner is
//! known (a local one streams to its handler as on one host), bounded as a
//! Mailpit send's body ([`super::send::max_request_bytes`], which the hop
//! carries; `413` above) and under this host's budget of bytes in flight,
//! held until the owner answered (`503` with `Retry-After` when it cannot
//! take it, as the owner's own send would answer).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uncorreo_engine::{MessageId, MAILBOX_ID_PREFIX_SHIFT, MAX_MAILBOX_ID_PREFIX};
use uncorreo_hop::wire::HttpEnvelope;
use uncorreo_hop::{Cluster, Owner, Partition, Placement};

use super::handlers::MAX_WAIT_SECS;
use super::MailpitError;
use crate::cluster::{owner_answer, Proxied};
use crate::inflight::{self, BodyError, FrontEnd};
use crate::AppState;

/// The middleware (mounted on the Mailpit routes only with `[cluster] listen`).
pub async fn to_owner(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(request).await;
    };
    // A member's part of a gather reads only here.
    if request
        .extensions()
        .get::<uncorreo_hop::server::MemberOnly>()
        .is_some()
    {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    // The largest Mailpit body (a send's) travels to its owner, which reads
    // it under its own limit.
    let max_body = super::send::max_request_bytes(state.engine.config().max_message_bytes);
    // Sent here by another host: the routing was done there.
    if parts.extensions.get::<Proxied>().is_some() {
        if route_of(&parts) != Route::ByIds {
            return next.run(Request::from_parts(parts, body)).await;
        }
        let (bytes, _permit) = match read(&state, &parts, body, max_body).await {
            Ok(read) => read,
            Err(refused) => return refused,
        };
        // The hop admitted the one partition it names; the IDs may be of
        // several this host serves, and each is held here.
        let mut share: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for (text, id) in ids_of(&bytes).map(|(_, ids)| ids).unwrap_or_default() {
            share.entry(partition_of_id(id)).or_default().push(text);
        }
        let share: Vec<(Partition, Vec<String>)> = share
            .into_iter()
            .filter_map(|(index, ids)| Some((cluster.partition_numbered(index)?, ids)))
            .collect();
        return run_local_share(&cluster, parts, bytes, &share, next).await;
    }
    let route = route_of(&parts);
    match route {
        Route::Here => next.run(Request::from_parts(parts, body)).await,
        Route::Partition(index) => {
            let Some(partition) = cluster.partition_numbered(index) else {
                // A token naming a partition the cluster lacks is forged or
                // foreign: it opens nothing here either.
                return next.run(Request::from_parts(parts, body)).await;
            };
            match cluster.place_partition(partition).await {
                Placement::Local => run_here(&cluster, partition, parts, body, next).await,
                Placement::Unavailable => unavailable(),
                Placement::Remote(owner) => {
                    // Held until the owner answered: the bytes live until then.
                    let (bytes, _permit) = match read(&state, &parts, body, max_body).await {
                        Ok(read) => read,
                        Err(refused) => return refused,
                    };
                    proxy(&state, &cluster, &owner, partition, &parts, &bytes).await
                }
            }
        }
        Route::Latest => super::sweep::latest(&state, &cluster, parts, next).await,
        Route::ByIds | Route::Sweep => {
            let (bytes, _permit) = match read(&state, &parts, body, max_body).await {
                Ok(read) => read,
                Err(refused) => return refused,
            };
            match super::sweep::plan_of(&parts, &bytes) {
                Some(plan) => super::sweep::write(&state, &cluster, parts, plan, next).await,
                None if route == Route::ByIds => {
                    split_by_owner(&state, &cluster, parts, bytes, next).await
                }
                None => {
                    next.run(Request::from_parts(parts, Body::from(bytes)))
                        .await
                }
            }
        }
    }
}

/// A routed request's body, read under the budget of bytes in flight as
/// its owner reads it; the permit pays for the bytes while they live.
async fn read(
    state: &AppState,
    parts: &Parts,
    body: Body,
    max: usize,
) -> Result<(bytes::Bytes, uncorreo_budget::Permit), Response> {
    inflight::read(state.budget(), &parts.headers, body, max)
        .await
        .map_err(|error| match error {
            BodyError::OverBudget(_) => {
                MailpitError::from(inflight::refused_unread(FrontEnd::Routed)).into_response()
            }
            BodyError::TooLarge | BodyError::Unreadable => too_large(),
        })
}

/// Where a request runs, from its head alone.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// Here, as on one host.
    Here,
    /// On the owner of this partition (whole).
    Partition(u16),
    /// Split by the partitions of the `IDs` in its body, or, without
    /// `IDs`, every message of the instance ([`super::sweep`]).
    ByIds,
    /// `latest` of an API key: the newest message on any host.
    Latest,
    /// `DELETE /api/v1/search` of an API key: its matches on every host.
    Sweep,
}

fn route_of(parts: &Parts) -> Route {
    let path = parts.uri.path();
    // No usable Basic password: the `401` is this host's to give, no hop.
    let Some(password) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| super::basic_password(v).ok())
    else {
        return Route::Here;
    };
    // The owner's summaries for an events socket elsewhere come over the hop.
    let local_only = matches!(path, "/livez" | "/readyz" | "/api/events")
        || path.starts_with(super::follow::SUMMARY_PATH);
    if let Some(p) = crate::auth::session_token_partition(&password) {
        if !local_only {
            return Route::Partition(p);
        }
    }
    if let Some(p) = message_id_in_path(path).map(partition_of_id) {
        return Route::Partition(p);
    }
    let with_ids = matches!(
        (&parts.method, path),
        (&Method::PUT | &Method::DELETE, "/api/v1/messages") | (&Method::PUT, "/api/v1/tags")
    );
    if !password.starts_with(crate::auth::KEY_PREFIX) {
        return Route::Here;
    }
    if with_ids {
        return Route::ByIds;
    }
    if parts.method == Method::GET && super::sweep::latest_as(path, "").is_some() {
        return Route::Latest;
    }
    if parts.method == Method::DELETE && path == "/api/v1/search" {
        return Route::Sweep;
    }
    Route::Here
}

/// The partition a message id's mailbox bits name.
pub(super) fn partition_of_id(id: MessageId) -> u16 {
    // At most 10 bits, so the cast keeps everything.
    ((id.mailbox.0 >> MAILBOX_ID_PREFIX_SHIFT) & u64::from(MAX_MAILBOX_ID_PREFIX)) as u16
}

/// The message id a message route names (not `latest`).
fn message_id_in_path(path: &str) -> Option<MessageId> {
    let id = if let Some(rest) = path.strip_prefix("/api/v1/message/") {
        rest.split_once('/').map_or(rest, |(id, _)| id)
    } else {
        let file = path.strip_prefix("/view/")?;
        file.strip_suffix(".html")
            .or_else(|| file.strip_suffix(".txt"))?
    };
    id.parse().ok()
}

/// Runs the request here, admitted for its partition when it may write
/// (a handover waits for it before copying).
pub(super) async fn run_here(
    cluster: &Cluster,
    partition: Partition,
    parts: Parts,
    body: Body,
    next: Next,
) -> Response {
    let writes = !matches!(parts.method, Method::GET | Method::HEAD);
    let _admitted = if writes {
        match cluster.admit_partition(partition) {
            Ok(admitted) => Some(admitted),
            Err(_) => return unavailable(),
        }
    } else {
        None
    };
    next.run(Request::from_parts(parts, body)).await
}

/// Runs the request on `owner`, which serves `partition`.
pub(super) async fn proxy(
    state: &AppState,
    cluster: &Cluster,
    owner: &Owner,
    partition: Partition,
    parts: &Parts,
    bytes: &[u8],
) -> Response {
    let path = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |original| &original.0);
    let envelope = HttpEnvelope {
        method: parts.method.as_str().to_owned(),
        path: path
            .path_and_query()
            .map_or_else(|| path.path().to_owned(), |p| p.as_str().to_owned()),
        headers: crate::cluster::end_to_end_headers(&parts.headers),
        address: String::new(),
        partition: Some(partition.0),
        node: String::new(),
        client: crate::auth::client_ip(state, parts),
    };
    // A search may wait on the owner for its first match.
    let timeout = cluster.timeout() + Duration::from_secs(search_wait(parts));
    let max_answer = state
        .engine
        .config()
        .max_message_bytes
        .saturating_add(1 << 20);
    match cluster
        .proxy_within(owner, envelope, bytes, max_answer, timeout)
        .await
    {
        Ok((head, body)) => owner_answer(head, body),
        Err(_) => unavailable(),
    }
}

/// The seconds `GET /api/v1/search?wait=` may wait (the owner checks the
/// value; a bad one is refused there at once).
fn search_wait(parts: &Parts) -> u64 {
    if parts.uri.path() != "/api/v1/search" {
        return 0;
    }
    parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("wait="))
        .find_map(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |wait| wait.min(MAX_WAIT_SECS))
}

/// `IDs` split by owner: each owner gets the request with its own IDs.
pub(super) async fn split_by_owner(
    state: &AppState,
    cluster: &Cluster,
    parts: Parts,
    bytes: bytes::Bytes,
    next: Next,
) -> Response {
    let Some((object, ids)) = ids_of(&bytes) else {
        // Not a list of message ids (or none: every message of the
        // instance): the handler here answers as on one host.
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    let mut by_partition: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for (text, id) in ids {
        by_partition
            .entry(partition_of_id(id))
            .or_default()
            .push(text);
    }
    // One group per owner; `None` is this host.
    let mut local: Vec<(Partition, Vec<String>)> = Vec::new();
    let mut remote: BTreeMap<String, (Owner, Partition, Vec<String>)> = BTreeMap::new();
    for (index, ids) in by_partition {
        let Some(partition) = cluster.partition_numbered(index) else {
            return MailpitError::not_found().into_response();
        };
        match cluster.place_partition(partition).await {
            Placement::Local => local.push((partition, ids)),
            Placement::Unavailable => return unavailable(),
            Placement::Remote(owner) => {
                remote
                    .entry(owner.node.clone())
                    .or_insert_with(|| (owner, partition, Vec::new()))
                    .2
                    .extend(ids);
            }
        }
    }
    if remote.is_empty() {
        return run_local_share(cluster, parts, bytes, &local, next).await;
    }
    for (owner, partition, ids) in remote.into_values() {
        let body = with_ids(&object, ids);
        let answer = proxy(state, cluster, &owner, partition, &parts, &body).await;
        if !answer.status().is_success() {
            return answer;
        }
    }
    if local.is_empty() {
        return ok_text();
    }
    let mine = with_ids(
        &object,
        local
            .iter()
            .flat_map(|(_, ids)| ids.iter().cloned())
            .collect(),
    );
    run_local_share(cluster, parts, mine, &local, next).await
}

/// This host's share of a split request, admitted for its partitions.
async fn run_local_share(
    cluster: &Cluster,
    parts: Parts,
    body: bytes::Bytes,
    local: &[(Partition, Vec<String>)],
    next: Next,
) -> Response {
    let mut admitted = Vec::with_capacity(local.len());
    for (partition, _) in local {
        match cluster.admit_partition(*partition) {
            Ok(guard) => admitted.push(guard),
            Err(_) => return unavailable(),
        }
    }
    let answer = next.run(Request::from_parts(parts, Body::from(body))).await;
    drop(admitted);
    answer
}

type Object = serde_json::Map<String, serde_json::Value>;

/// The body's object and its `IDs`, when it has some and each is a message
/// id (anything else is the handler's to refuse or to treat as "all").
fn ids_of(bytes: &[u8]) -> Option<(Object, Vec<(String, MessageId)>)> {
    let serde_json::Value::Object(object) = serde_json::from_slice(bytes).ok()? else {
        return None;
    };
    let serde_json::Value::Array(list) = object.get("IDs")? else {
        return None;
    };
    if list.is_empty() || list.len() > super::handlers::MAX_IDS {
        return None;
    }
    let ids = list
        .iter()
        .map(|v| {
            let text = v.as_str()?;
            Some((text.to_owned(), text.parse::<MessageId>().ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((object, ids))
}

fn with_ids(object: &Object, ids: Vec<String>) -> bytes::Bytes {
    let mut object = object.clone();
    object.insert(
        "IDs".to_owned(),
        serde_json::Value::Array(ids.into_iter().map(serde_json::Value::String).collect()),
    );
    bytes::Bytes::from(serde_json::to_vec(&object).unwrap_or_default())
}

pub(super) fn ok_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
}

fn too_large() -> Response {
    MailpitError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response()
}

/// No live owner, or it did not answer: Mailpit's shape (plain text).
pub(super) fn unavailable() -> Response {
    let mut error = MailpitError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the host that keeps this mailbox is unavailable; retry shortly",
    );
    error.retry_after = Some(1);
    error.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn head(method: Method, path: &str, password: Option<&str>) -> Parts {
        let mut builder = axum::http::Request::builder().method(method).uri(path);
        if let Some(password) = password {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("u:{password}"));
            builder = builder.header(header::AUTHORIZATION, format!("Basic {basic}"));
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_request_is_routed_by_token_prefix_then_message_id() {
        let token = crate::auth::new_session_token(Some(517)).secret;
        let old = crate::auth::new_session_token(None).secret;
        let id = format!("{:x}-3", (9u64 << MAILBOX_ID_PREFIX_SHIFT) | 42);
        let cases = [
            (
                Method::GET,
                "/api/v1/messages".to_owned(),
                Some(token.as_str()),
                Route::Partition(517),
            ),
            (
                Method::GET,
                format!("/api/v1/message/{id}"),
                Some(token.as_str()),
                Route::Partition(517),
            ),
            (
                Method::GET,
                "/api/events".to_owned(),
                Some(token.as_str()),
                Route::Here,
            ),
            (
                Method::GET,
                "/api/v1/messages".to_owned(),
                Some(old.as_str()),
                Route::Here,
            ),
            (
                Method::GET,
                format!("/api/v1/message/{id}/raw"),
                Some(old.as_str()),
                Route::Partition(9),
            ),
            (
                Method::GET,
                format!("/api/v1/message/{id}"),
                Some("uct_k"),
                Route::Partition(9),
            ),
            (
                Method::GET,
                format!("/view/{id}.html"),
                Some("uct_k"),
                Route::Partition(9),
            ),
            (
                Method::GET,
                "/api/v1/message/latest".to_owned(),
                Some("uct_k"),
                Route::Latest,
            ),
            (
                Method::GET,
                "/view/latest.txt".to_owned(),
                Some("uct_k"),
                Route::Latest,
            ),
            // A token's `latest` is its mailbox's, on its owner.
            (
                Method::GET,
                "/api/v1/message/latest".to_owned(),
                Some(token.as_str()),
                Route::Partition(517),
            ),
            (
                Method::DELETE,
                "/api/v1/search?query=x".to_owned(),
                Some("uct_k"),
                Route::Sweep,
            ),
            (
                Method::DELETE,
                "/api/v1/search?query=x".to_owned(),
                Some(old.as_str()),
                Route::Here,
            ),
            (
                Method::GET,
                "/api/v1/messages".to_owned(),
                Some("uct_k"),
                Route::Here,
            ),
            (
                Method::DELETE,
                "/api/v1/messages".to_owned(),
                Some("uct_k"),
                Route::ByIds,
            ),
            (
                Method::PUT,
                "/api/v1/tags".to_owned(),
                Some("uct_k"),
                Route::ByIds,
            ),
            (
                Method::PUT,
                "/api/v1/messages".to_owned(),
                None,
                Route::Here,
            ),
            // No credential: refused here, no hop.
            (
                Method::GET,
                format!("/api/v1/message/{id}"),
                None,
                Route::Here,
            ),
        ];
        for (method, path, password, want) in cases {
            assert_eq!(route_of(&head(method, &path, password)), want, "{path}");
        }
    }

    #[test]
    fn ids_are_read_from_the_body_and_written_back_with_the_rest() {
        let (object, ids) = ids_of(br#"{"IDs":["a-1","200000000000-2"],"Read":true}"#).unwrap();
        assert_eq!(ids.len(), 2);
        // Mailbox 0x2000_0000_0000 is 4 << 43: partition 4.
        assert_eq!(partition_of_id(ids[1].1), 4);
        let body = with_ids(&object, vec!["a-1".into()]);
        let back: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(back, serde_json::json!({"IDs": ["a-1"], "Read": true}));
        for none in [
            &b"{}"[..],
            br#"{"IDs":[]}"#,
            br#"{"IDs":["latest"]}"#,
            b"[1]",
        ] {
            assert!(ids_of(none).is_none());
        }
    }
}
