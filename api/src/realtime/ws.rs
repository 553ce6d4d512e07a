//! `GET /ws/inbox/{address}?since=SEQ`: a mailbox's events over WebSocket.
//!
//! Replays every message past `since`, then continues live (see [`Feed`]).
//! Events are JSON text frames ([`super::EventView`], or [`super::GapView`]
//! in place of a quarantined message). The server pings every
//! `[realtime] ping_interval_secs` and drops a client that sent nothing for
//! two intervals, or whose socket does not take one frame within
//! `send_timeout_secs`. Frames from the client are ignored (and capped at
//! [`MAX_CLIENT_MESSAGE`] bytes).
//!
//! Close codes:
//! - `4008` "lagged; resume with since=N": the client read too slowly and its
//!   bounded queue overflowed; every event up to `N` was sent, reconnect with
//!   `since=N`. (Private-use range: 1008 "policy violation" would also fit but
//!   cannot be told apart from other policy closes.)
//! - `4004` "mailbox gone": deleted or expired; reconnecting gets 404.
//! - `1001` going away: the server is shutting down; reconnect with `since`.
//! - `1011` storage error while replaying; reconnect with `since`.
//! - `1013` "owner unavailable; resume with since=N" (cluster only): the
//!   host that keeps the mailbox stopped answering or gave it up; reconnect
//!   with that `since`.
//!
//! Credentials as for the REST API, or `?token=` (browsers' WebSocket API
//! cannot set headers).

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::remote::{Access, RemoteFeed, StreamAccess};
use super::{Feed, FeedEnd, StreamEvent};
use crate::auth::authorize_mailbox;
use crate::problem::{Kind, Problem, ProblemBody};
use crate::AppState;

/// Close code: the client fell behind; resume with `since`.
pub const CLOSE_LAGGED: u16 = 4008;
/// Close code: the mailbox was deleted or expired.
pub const CLOSE_GONE: u16 = 4004;
/// Close code: server shutting down (RFC 6455 "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: storage failed (RFC 6455 "internal error").
pub const CLOSE_INTERNAL: u16 = 1011;
/// Close code: the host that keeps the mailbox stopped answering (RFC 6455
/// "try again later"); reconnect with `since`.
pub const CLOSE_TRY_AGAIN: u16 = 1013;
/// Largest frame or message a client may send (it has nothing to say).
pub const MAX_CLIENT_MESSAGE: usize = 4096;
/// Read buffer per connection.
const READ_BUFFER: usize = 4096;
/// Bytes a connection may hold unsent when writes fail (one event is a few KiB at most).
const MAX_WRITE_BUFFER: usize = 256 * 1024;

/// Query of the WebSocket route.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    /// Replay messages with a sequence above this first (default 0: all).
    pub since: Option<u64>,
    /// A session token or API key, for clients that cannot set headers.
    /// Ends up in access logs: prefer `Authorization` where possible.
    pub token: Option<String>,
}

/// Watch a mailbox over WebSocket.
#[utoipa::path(
    get,
    path = "/ws/inbox/{address}",
    tag = "realtime",
    description = "Upgrade to a WebSocket that first replays every message with `seq > since`, \
then sends each new message as it is committed, as JSON text frames \
(`EventView`: `{\"event\":\"new_message\",\"mailbox\":…,\"seq\":N,…}`), in sequence order, each \
sequence once. A message found corrupt on disk (quarantined, never served) is sent in its place \
as a `GapView` (`{\"event\":\"gap\",\"mailbox\":…,\"seq\":N}`). Ping every `ping_interval_secs` (30 s). Close codes: 4008 `lagged; resume with \
since=N` (reconnect with that `since`), 4004 `mailbox gone`, 1001 server shutting down, 1011 \
storage error, 1013 owner unavailable (cluster). Credentials: `Authorization: Bearer`, `X-Session-Token`, or `?token=` (browsers).",
    params(("address" = String, Path, description = "`local@domain`"), WsQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; frames are `EventView` (or `GapView`) JSON", body = super::StreamEvent),
        (status = 400, description = "Not a WebSocket upgrade, or a malformed query", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, or not visible with these credentials", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited, or the mailbox has `max_subscribers_per_mailbox` live subscribers", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The server has `max_subscribers` live subscribers, or is shutting down, or (cluster) the host that keeps the mailbox is unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = []), ("query_token" = [])),
)]
pub async fn ws_inbox(
    State(state): State<AppState>,
    StreamAccess(access): StreamAccess,
    Path(address): Path<String>,
    query: Result<Query<WsQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, Response> {
    // Who and what first, so a wrong credential gets the same answer
    // whether or not the request is an upgrade.
    let access = match access {
        Access::Local(caller) => Ok(
            authorize_mailbox(&state, &caller, &address).map_err(IntoResponse::into_response)?
        ),
        Access::Remote(remote) => Err(remote.authorize(&state).await?),
    };
    let Query(q) = query.map_err(IntoResponse::into_response)?;
    let upgrade = upgrade.map_err(|r| {
        Problem::new(
            Kind::BadRequest,
            format!("this route speaks WebSocket only: {}", r.body_text()),
        )
        .into_response()
    })?;
    let since = q.since.unwrap_or(0);
    let feed = match access {
        Ok(mb) => Feed::open(&state, mb, since).map_err(IntoResponse::into_response)?,
        Err(remote) => Feed::Remote(RemoteFeed::open(&state, remote, since).await?),
    };
    let rt = state.realtime().clone();
    let tracked = rt.tasks.token();
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        // tungstenite preallocates 128 KiB per direction by default; a client
        // sends only pongs and closes, and every event is written (and
        // flushed) as it comes, so small buffers keep 10k idle sockets cheap.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            let reason = run(socket, feed, &rt).await;
            metrics::counter!(uncorreo_metric_names::WS_CONNECTIONS_TOTAL, "reason" => reason)
                .increment(1);
            drop(tracked);
        })
        .into_response())
}

/// Serve one connection; returns the close reason (a metric label).
async fn run(mut socket: WebSocket, mut feed: Feed, rt: &super::Realtime) -> &'static str {
    let ping_every = rt.config().ping();
    let send_timeout = rt.config().send_timeout();
    let shutdown = rt.shutdown_token();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Pings sent since the client last sent anything.
    let mut unanswered = 0u32;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                close(&mut socket, CLOSE_GOING_AWAY, "server shutting down", send_timeout).await;
                return "shutdown";
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) => return "client_gone",
                Some(Ok(Message::Close(_))) => {
                    // tungstenite queued the closing reply; flush it.
                    let _ = tokio::time::timeout(send_timeout, socket.send(Message::Close(None))).await;
                    return "client_closed";
                }
                Some(Ok(_)) => unanswered = 0,
            },
            _ = ping.tick() => {
                if unanswered >= 2 {
                    return "ping_timeout";
                }
                unanswered += 1;
                if !send(&mut socket, Message::Ping(Default::default()), send_timeout).await {
                    return "send_timeout";
                }
            }
            next = feed.next() => match next {
                Ok(ev) => {
                    if !send(&mut socket, text(&ev), send_timeout).await {
                        return "send_timeout";
                    }
                    metrics::counter!(uncorreo_metric_names::REALTIME_EVENTS_SENT_TOTAL, "transport" => "ws").increment(1);
                }
                Err(FeedEnd::Lagged { last }) => {
                    let why = format!("lagged; resume with since={last}");
                    close(&mut socket, CLOSE_LAGGED, &why, send_timeout).await;
                    return "lagged";
                }
                Err(FeedEnd::MailboxGone) => {
                    close(&mut socket, CLOSE_GONE, "mailbox gone", send_timeout).await;
                    return "mailbox_gone";
                }
                Err(FeedEnd::Closed) => {
                    close(&mut socket, CLOSE_GOING_AWAY, "server shutting down", send_timeout).await;
                    return "shutdown";
                }
                Err(FeedEnd::Storage) => {
                    let why = format!("storage error; resume with since={}", feed.last());
                    close(&mut socket, CLOSE_INTERNAL, &why, send_timeout).await;
                    return "storage_error";
                }
                Err(FeedEnd::Unavailable { last }) => {
                    let why = format!("owner unavailable; resume with since={last}");
                    close(&mut socket, CLOSE_TRY_AGAIN, &why, send_timeout).await;
                    return "owner_unavailable";
                }
            },
        }
    }
}

fn text(ev: &StreamEvent) -> Message {
    Message::Text(ev.to_json().into())
}

/// Send one frame; false if the client is gone or too slow to take it.
async fn send(socket: &mut WebSocket, msg: Message, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str, limit: Duration) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = send(socket, Message::Close(Some(frame)), limit).await;
}
