//! `GET /api/v1/mailboxes/{address}/events`: a mailbox's events as
//! Server-Sent Events.
//!
//! Same replay-then-live [`Feed`] as the WebSocket. Every event carries
//! `id: <seq>`, so a browser's `EventSource` resumes by itself after a drop
//! (it sends `Last-Event-ID`, which wins over `?since=`). Keep-alive comments
//! every `[realtime] ping_interval_secs`.
//!
//! A quarantined (corrupt) message met by the replay is sent in its place as
//! `event: gap` with `id: <seq>` (data: [`super::GapView`]).
//!
//! How a stream ends (a last named event, then the end of the body):
//! - `event: lagged`, data `{"event":"lagged","resume_since":N}`: the client
//!   read too slowly; reconnect (EventSource does) from `N`.
//! - `event: mailbox_gone`: deleted or expired.
//! - `event: shutdown` (also after a storage error), data with `resume_since`.
//! - `event: unavailable` (cluster only), data with `resume_since`: the host
//!   that keeps the mailbox stopped answering; reconnect from `N`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::remote::{Access, RemoteFeed, StreamAccess};
use super::{Feed, FeedEnd};
use crate::auth::authorize_mailbox;
use crate::problem::{Kind, Problem, ProblemBody};
use crate::AppState;

/// Query of the SSE route.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SseQuery {
    /// Replay messages with a sequence above this first (default 0: all).
    /// A `Last-Event-ID` header wins over it.
    pub since: Option<u64>,
    /// A session token or API key, for clients that cannot set headers
    /// (`EventSource`). Ends up in access logs: prefer headers where possible.
    pub token: Option<String>,
}

/// Watch a mailbox as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/v1/mailboxes/{address}/events",
    tag = "realtime",
    description = "A `text/event-stream` that first replays every message with `seq > since` \
(or `> Last-Event-ID`), then streams each new message as it is committed: `event: new_message`, \
`id: <seq>`, `data: <EventView JSON>`. A message stored at a sequence but found corrupt on disk \
(quarantined, never served) is sent in its place as `event: gap`, `id: <seq>`, `data: <GapView JSON>` \
(`{\"event\":\"gap\",\"mailbox\":…,\"seq\":N}`), so a client knows it skipped it and carries on. \
Keep-alive comments every `ping_interval_secs`. The stream \
ends with `event: lagged` (data `{\"event\":\"lagged\",\"resume_since\":N}`; reconnect with \
`Last-Event-ID: N`), `event: mailbox_gone`, `event: shutdown`, or (cluster) `event: unavailable` \
(data `{\"event\":\"unavailable\",\"resume_since\":N}`: the mailbox's host stopped answering).",
    params(
        ("address" = String, Path, description = "`local@domain`"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this sequence (wins over `since`)"),
        SseQuery,
    ),
    responses(
        (status = 200, description = "The event stream", body = String, content_type = "text/event-stream"),
        (status = 400, description = "Malformed query or Last-Event-ID", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, or not visible with these credentials", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited, or the mailbox has `max_subscribers_per_mailbox` live subscribers", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The server has `max_subscribers` live subscribers, or is shutting down, or (cluster) the host that keeps the mailbox is unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = []), ("query_token" = [])),
)]
pub async fn mailbox_events(
    State(state): State<AppState>,
    StreamAccess(access): StreamAccess,
    Path(address): Path<String>,
    headers: HeaderMap,
    query: Result<Query<SseQuery>, QueryRejection>,
) -> Result<Response, Response> {
    let access = match access {
        Access::Local(caller) => Ok(
            authorize_mailbox(&state, &caller, &address).map_err(IntoResponse::into_response)?
        ),
        Access::Remote(remote) => Err(remote.authorize(&state).await?),
    };
    let Query(q) = query.map_err(IntoResponse::into_response)?;
    let since = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                Problem::new(Kind::BadRequest, "Last-Event-ID must be a sequence number")
                    .into_response()
            })?,
        None => q.since.unwrap_or(0),
    };
    let feed = match access {
        Ok(mb) => Feed::open(&state, mb, since).map_err(IntoResponse::into_response)?,
        Err(remote) => Feed::Remote(RemoteFeed::open(&state, remote, since).await?),
    };
    let rt = state.realtime().clone();
    let keep_alive = KeepAlive::new().interval(rt.config().ping());
    let shutdown = rt.shutdown_token();
    let stream = futures_util::stream::unfold(Some(feed), move |feed| {
        let shutdown = shutdown.clone();
        async move {
            let mut feed = feed?;
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Err(FeedEnd::Closed),
                n = feed.next() => n,
            };
            let out = match next {
                Ok(ev) => {
                    metrics::counter!(uncorreo_metric_names::REALTIME_EVENTS_SENT_TOTAL, "transport" => "sse")
                        .increment(1);
                    let ev = Event::default()
                        .event(ev.name())
                        .id(ev.seq().to_string())
                        .data(ev.to_json());
                    return Some((Ok::<_, std::convert::Infallible>(ev), Some(feed)));
                }
                Err(FeedEnd::Lagged { last }) => ("lagged", "lagged", last),
                Err(FeedEnd::MailboxGone) => ("mailbox_gone", "mailbox_gone", feed.last()),
                Err(FeedEnd::Closed) => ("shutdown", "shutdown", feed.last()),
                Err(FeedEnd::Storage) => ("shutdown", "storage_error", feed.last()),
                Err(FeedEnd::Unavailable { last }) => ("unavailable", "owner_unavailable", last),
            };
            let (name, reason, last) = out;
            metrics::counter!(uncorreo_metric_names::SSE_STREAMS_TOTAL, "reason" => reason)
                .increment(1);
            let data = serde_json::json!({ "event": name, "resume_since": last }).to_string();
            // The last event; `None` ends the stream on the next poll.
            Some((Ok(Event::default().event(name).data(data)), None))
        }
    });
    Ok(Sse::new(stream).keep_alive(keep_alive).into_response())
}
