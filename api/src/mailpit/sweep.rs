//! With `[cluster]`: the Mailpit routes of an API-key instance that name
//! no message but mean every one of the user's, on every host (SCALE.md,
//! "Mailpit"). Each is turned into requests that the rest of the routing
//! already carries across hosts, so no new kind of hop exists:
//!
//! - `latest` (`/api/v1/message/latest`, its `headers`, `raw` and
//!   `part/{part}`, `/view/latest.html|txt`): the newest message is found
//!   by the gathered list (`limit=1`), then the request runs with that id,
//!   so on the owner of its partition;
//! - `DELETE /api/v1/messages` and `PUT /api/v1/messages` without `IDs`,
//!   and `DELETE /api/v1/search?query=`: in rounds, the gathered list or
//!   search (GET member reads only: a write over the member hop would pass
//!   no partition's admission) gives the next page of matching IDs, and
//!   `PUT`/`DELETE /api/v1/messages` with those IDs goes each to its owner
//!   ([`super::route::split_by_owner`], which admits each partition). A
//!   read-all searches `is:unread` (a mark-unread `is:read`), so a marked
//!   message leaves the search as a deleted one leaves the list.
//!
//! The rounds end after one whose gather held every match (its count fits
//! the page): everything that matched when the request started is then
//! done, and mail that arrived meanwhile is done if a round saw it. At most
//! [`MAX_ROUNDS`]; past that the answer is `503` with `Retry-After` saying
//! what happened (the rounds done stay done, a repeat goes on), never a
//! silent partial `ok`. A home that does not answer fails the gather
//! (`503`) before anything of that round is written; a share that fails
//! is the answer, as for a request with `IDs`.

use axum::body::Body;
use axum::extract::{OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uncorreo_engine::MessageId;
use uncorreo_hop::{Cluster, Placement};

use super::handlers::{MessagesSummary, ReadRequest, MAX_IDS};
use super::route;
use super::MailpitError;
use crate::AppState;

/// Most rounds of one write that names no message: at the default
/// `max_page` of 500, 32 000 messages (one host's delete-all scans at most
/// `limits.max_scan`, 10 000 by default).
pub const MAX_ROUNDS: usize = 64;

/// Largest answer of this host's own gathered read, in bytes (a page is
/// at most `max_page` summaries; this is far above that).
const MAX_PAGE_BYTES: usize = 64 << 20;

/// Where the Mailpit routes are mounted (an [`OriginalUri`] starts so).
const MOUNT: &str = "/mailpit";

/// `path` with `latest` replaced by `id`, when it is a `latest` route we
/// serve (the `501` ones are left to answer here).
pub(super) fn latest_as(path: &str, id: &str) -> Option<String> {
    if let Some(rest) = path.strip_prefix("/api/v1/message/latest") {
        let served = rest.is_empty()
            || rest == "/headers"
            || rest == "/raw"
            || rest
                .strip_prefix("/part/")
                .is_some_and(|part| !part.is_empty() && !part.contains('/'));
        return served.then(|| format!("/api/v1/message/{id}{rest}"));
    }
    let rest = path.strip_prefix("/view/latest")?;
    matches!(rest, ".html" | ".txt").then(|| format!("/view/{id}{rest}"))
}

/// `parts` for `method` and `path_and_query` (below the mount), body-less.
fn rewritten(parts: &Parts, method: Method, path_and_query: &str) -> Result<Parts, MailpitError> {
    let internal = || {
        MailpitError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not route the request",
        )
    };
    let uri: Uri = path_and_query.parse().map_err(|_| internal())?;
    let original: Uri = format!("{MOUNT}{path_and_query}")
        .parse()
        .map_err(|_| internal())?;
    let mut parts = parts.clone();
    parts.method = method;
    parts.uri = uri;
    parts.extensions.insert(OriginalUri(original));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    Ok(parts)
}

/// This host's gathered answer to `GET path_and_query` (a list or a
/// search), with the caller's credential; any other answer is returned.
async fn gathered(
    parts: &Parts,
    next: &Next,
    path_and_query: &str,
) -> Result<MessagesSummary, Box<Response>> {
    let get =
        rewritten(parts, Method::GET, path_and_query).map_err(|e| Box::new(e.into_response()))?;
    let answer = next
        .clone()
        .run(Request::from_parts(get, Body::empty()))
        .await;
    if answer.status() != StatusCode::OK {
        return Err(Box::new(answer));
    }
    let bytes = axum::body::to_bytes(answer.into_body(), MAX_PAGE_BYTES)
        .await
        .map_err(|_| broken())?;
    serde_json::from_slice(&bytes).map_err(|_| broken())
}

fn broken() -> Box<Response> {
    Box::new(
        MailpitError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not read the gathered list",
        )
        .into_response(),
    )
}

/// A `latest` route of an API key: the request, with the newest message's
/// id for `latest`, runs on the owner of that id's partition.
pub(super) async fn latest(
    state: &AppState,
    cluster: &Cluster,
    parts: Parts,
    next: Next,
) -> Response {
    let newest = match gathered(&parts, &next, "/api/v1/messages?start=0&limit=1").await {
        Ok(page) => page.messages.into_iter().next(),
        Err(answer) => return *answer,
    };
    let Some(id) = newest.and_then(|m| m.id.parse::<MessageId>().ok()) else {
        return MailpitError::not_found().into_response();
    };
    let Some(path) = latest_as(parts.uri.path(), &id.to_string()) else {
        return next.run(Request::from_parts(parts, Body::empty())).await;
    };
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let named = match rewritten(&parts, parts.method.clone(), &path_and_query) {
        Ok(named) => named,
        Err(error) => return error.into_response(),
    };
    let Some(partition) = cluster.partition_numbered(route::partition_of_id(id)) else {
        return MailpitError::not_found().into_response();
    };
    match cluster.place_partition(partition).await {
        Placement::Local => route::run_here(cluster, partition, named, Body::empty(), next).await,
        Placement::Unavailable => route::unavailable(),
        Placement::Remote(owner) => {
            route::proxy(state, cluster, &owner, partition, &named, &[]).await
        }
    }
}

/// What a write that names no message does, and to which messages.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    /// The gathered read that finds the next page of them (no page bounds).
    find: String,
    /// `None`: delete; `Some(read)`: mark read or unread.
    read: Option<bool>,
}

/// The plan of a `PUT`/`DELETE /api/v1/messages` without `IDs` or a
/// `DELETE /api/v1/search`; `None` for anything else (including a body
/// the handler will refuse, or `IDs` to split by owner).
pub(super) fn plan_of(parts: &Parts, bytes: &[u8]) -> Option<Plan> {
    let query = |text: &str, tz: Option<String>| {
        let mut pairs = vec![("query", text.to_owned())];
        pairs.extend(tz.map(|tz| ("tz", tz)));
        serde_urlencoded::to_string(pairs).ok()
    };
    match (&parts.method, parts.uri.path()) {
        (&Method::DELETE, "/api/v1/search") => {
            let q: super::handlers::PageQuery =
                serde_urlencoded::from_str(parts.uri.query().unwrap_or("")).ok()?;
            Some(Plan {
                find: format!("/api/v1/search?{}", query(&q.query?, q.tz)?),
                read: None,
            })
        }
        (&Method::DELETE, "/api/v1/messages") => {
            let req: super::handlers::DeleteRequest = body_of(bytes)?;
            req.ids.is_empty().then(|| Plan {
                find: "/api/v1/messages".to_owned(),
                read: None,
            })
        }
        (&Method::PUT, "/api/v1/messages") => {
            let req: ReadRequest = body_of(bytes)?;
            if !req.ids.is_empty() {
                return None;
            }
            // Only what the write changes: a marked message leaves the search.
            let state = if req.read { "is:unread" } else { "is:read" };
            let text = format!("{} {state}", req.search);
            Some(Plan {
                find: format!("/api/v1/search?{}", query(text.trim(), None)?),
                read: Some(req.read),
            })
        }
        _ => None,
    }
}

/// The JSON body (empty: defaults), or `None` when the handler should
/// answer it (it refuses what does not parse).
fn body_of<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Option<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Some(T::default());
    }
    serde_json::from_slice(bytes).ok()
}

/// Runs `plan` in rounds (module doc).
pub(super) async fn write(
    state: &AppState,
    cluster: &Cluster,
    parts: Parts,
    plan: Plan,
    next: Next,
) -> Response {
    // Below `max_scan`: a home's count is cut there, and a cut count must
    // never look like one that fits the page.
    let limits = state.limits();
    let page = limits
        .max_page
        .min(limits.max_scan.saturating_sub(1))
        .clamp(1, MAX_IDS);
    let method = match plan.read {
        Some(_) => Method::PUT,
        None => Method::DELETE,
    };
    let by_ids = match rewritten(&parts, method, "/api/v1/messages") {
        Ok(by_ids) => by_ids,
        Err(error) => return error.into_response(),
    };
    let then = if plan.find.contains('?') { '&' } else { '?' };
    let find = format!("{}{then}start=0&limit={page}", plan.find);
    for _ in 0..MAX_ROUNDS {
        let found = match gathered(&parts, &next, &find).await {
            Ok(found) => found,
            Err(answer) => return *answer,
        };
        if found.messages.is_empty() {
            return route::ok_text();
        }
        let held_all = found.messages_count <= found.messages.len() as u64;
        let ids: Vec<String> = found.messages.into_iter().map(|m| m.id).collect();
        let mut body = serde_json::json!({ "IDs": ids });
        if let Some(read) = plan.read {
            body["Read"] = serde_json::Value::Bool(read);
        }
        let body = bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let answer =
            route::split_by_owner(state, cluster, by_ids.clone(), body, next.clone()).await;
        match answer.status() {
            status if status.is_success() => {
                if held_all {
                    return route::ok_text();
                }
            }
            // One of them went meanwhile (another client, expiry): the
            // next round's gather no longer holds it.
            StatusCode::NOT_FOUND => {}
            _ => return answer,
        }
    }
    let mut error = MailpitError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "stopped after {MAX_ROUNDS} rounds of at most {page} messages, with more still \
             matching (mail may be arriving as fast); what was done stays done: send the \
             request again to go on"
        ),
    );
    error.retry_after = Some(1);
    error.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: Method, path: &str) -> Parts {
        axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn latest_routes_we_serve_are_named_by_id() {
        for (path, want) in [
            ("/api/v1/message/latest", Some("/api/v1/message/x-1")),
            (
                "/api/v1/message/latest/raw",
                Some("/api/v1/message/x-1/raw"),
            ),
            (
                "/api/v1/message/latest/headers",
                Some("/api/v1/message/x-1/headers"),
            ),
            (
                "/api/v1/message/latest/part/1.2",
                Some("/api/v1/message/x-1/part/1.2"),
            ),
            ("/view/latest.html", Some("/view/x-1.html")),
            ("/view/latest.txt", Some("/view/x-1.txt")),
            ("/api/v1/message/latest/part/1/thumb", None),
            ("/api/v1/message/latest/html-check", None),
            ("/api/v1/message/latestx", None),
            ("/view/latest.pdf", None),
            ("/api/v1/messages", None),
        ] {
            assert_eq!(latest_as(path, "x-1").as_deref(), want, "{path}");
        }
    }

    #[test]
    fn writes_that_name_no_message_are_planned_and_the_rest_left_alone() {
        let delete_all = Plan {
            find: "/api/v1/messages".to_owned(),
            read: None,
        };
        let cases = [
            (Method::DELETE, "/api/v1/messages", "", Some(delete_all)),
            (
                Method::DELETE,
                "/api/v1/messages",
                r#"{"IDs":[]}"#,
                Some(Plan {
                    find: "/api/v1/messages".to_owned(),
                    read: None,
                }),
            ),
            (
                Method::DELETE,
                "/api/v1/messages",
                r#"{"IDs":["a-1"]}"#,
                None,
            ),
            (Method::DELETE, "/api/v1/messages", "not json", None),
            (
                Method::PUT,
                "/api/v1/messages",
                r#"{"Read":true}"#,
                Some(Plan {
                    find: "/api/v1/search?query=is%3Aunread".to_owned(),
                    read: Some(true),
                }),
            ),
            (
                Method::PUT,
                "/api/v1/messages",
                r#"{"Read":false,"Search":"tag:x"}"#,
                Some(Plan {
                    find: "/api/v1/search?query=tag%3Ax+is%3Aread".to_owned(),
                    read: Some(false),
                }),
            ),
            (
                Method::DELETE,
                "/api/v1/search?query=from:a&tz=UTC",
                "",
                Some(Plan {
                    find: "/api/v1/search?query=from%3Aa&tz=UTC".to_owned(),
                    read: None,
                }),
            ),
            // No query: the handler's `400`.
            (Method::DELETE, "/api/v1/search", "", None),
            (Method::PUT, "/api/v1/tags", "", None),
        ];
        for (method, path, body, want) in cases {
            assert_eq!(
                plan_of(&head(method, path), body.as_bytes()),
                want,
                "{path} {body}"
            );
        }
    }
}
