//! Real-time delivery: WebSocket ([`ws`]), Server-Sent Events ([`sse`]) and
//! long-poll ([`wait`]), all fed from the engine's fan-out and all speaking
//! the one per-mailbox sequence, so a client resumes any of them from the
//! last sequence it saw.
//!
//! Architecture invariant: every stream is built by [`Feed`], which
//! subscribes FIRST, then replays the index past `since` in bounded pages,
//! then forwards live events, dropping those whose sequence was already sent.
//! A message committed before the subscription is in the index when the
//! replay reads it (the engine updates the index before it publishes); one
//! committed after it arrives as an event. So nothing falls between replay
//! and live, and nothing is sent twice.
//!
//! A stream of a mailbox another host owns runs here on the owner's
//! events, with the same order and the same guarantees ([`remote`]).
//!
//! Every subscriber is bounded: its queue (`[engine] subscriber_queue`), the
//! subscribers per mailbox and in total (`[realtime]`), the replay page, and
//! how long one write to a client may take.

pub mod campaign;
pub mod remote;
pub mod sse;
pub mod wait;
pub mod ws;

use std::collections::VecDeque;
use std::time::Duration;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uncorreo_engine::{
    Event, ListEntry, LookupError, MailboxInfo, MessageMeta, SubscribeError, Subscriber,
    SubscriberLimits, SubscriptionEnd,
};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{client_ip, Caller, Credential};
use crate::problem::{Kind, Problem};
use crate::AppState;
use uncorreo_mail::date::rfc3339_millis as rfc3339;

/// Real-time settings (the `[realtime]` table of the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeConfig {
    /// WebSocket ping and SSE keep-alive interval. A WebSocket client that
    /// sends nothing (not even the pong) for two intervals is dropped.
    pub ping_interval_secs: u64,
    /// Longest one write to a client may take before the connection is dropped.
    pub send_timeout_secs: u64,
    /// Messages read from the index per replay step.
    pub replay_page: usize,
    /// Live subscribers (WebSocket, SSE, long-poll) per mailbox; past it `429`.
    pub max_subscribers_per_mailbox: usize,
    /// Live subscribers in the whole process; past it `503`.
    pub max_subscribers: usize,
    /// `wait` without `timeout`.
    pub wait_default_timeout_secs: u64,
    /// Largest `timeout` a `wait` may ask for.
    pub wait_max_timeout_secs: u64,
    /// Largest `count` a `wait` may ask for.
    pub wait_max_count: usize,
    /// Longest `from` / `subject` / `body` match string, in characters.
    pub wait_max_pattern_chars: usize,
    /// Most messages one `wait` reads and parses for a `body` match.
    pub wait_max_body_scans: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            ping_interval_secs: 30,
            send_timeout_secs: 30,
            replay_page: 256,
            max_subscribers_per_mailbox: 100,
            max_subscribers: 50_000,
            wait_default_timeout_secs: 30,
            wait_max_timeout_secs: 300,
            wait_max_count: 100,
            wait_max_pattern_chars: 256,
            wait_max_body_scans: 1000,
        }
    }
}

impl RealtimeConfig {
    pub(crate) fn limits(&self) -> SubscriberLimits {
        SubscriberLimits {
            per_mailbox: self.max_subscribers_per_mailbox,
            total: self.max_subscribers,
        }
    }
    pub(crate) fn ping(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs.max(1))
    }
    pub(crate) fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_secs.max(1))
    }
}

/// Shared by every core: the settings, the shutdown signal, and the tracker
/// of upgraded WebSocket tasks (which outlive their HTTP request).
#[derive(Debug, Clone)]
pub struct Realtime {
    config: RealtimeConfig,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// How long shutdown waits for WebSocket tasks to send their close frames.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

impl Realtime {
    /// New, not shut down.
    pub fn new(config: RealtimeConfig) -> Self {
        Self {
            config,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }
    /// The settings.
    pub fn config(&self) -> &RealtimeConfig {
        &self.config
    }
    /// Cancelling this ends every stream: WebSockets close with 1001, SSE
    /// streams end, waits answer 503. The appliance uses it as its own
    /// shutdown token, so streams end before the HTTP server drains.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
    /// Wait (bounded) until every WebSocket task has sent its close frame.
    pub async fn drained(&self) {
        self.tasks.close();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, self.tasks.wait()).await;
    }
}

/// `?token=` for clients that cannot set headers (browsers' `WebSocket` and
/// `EventSource`). Tokens in URLs end up in access logs and browser
/// history; prefer the header wherever the client can set it.
#[derive(Debug, Default, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// A [`Caller`] from the headers like every route, or else from `?token=`.
pub struct StreamCaller(pub Caller);

impl FromRequestParts<AppState> for StreamCaller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let ip = client_ip(state, parts);
        let mut cred = Credential::from_headers(&parts.headers)?;
        if cred == Credential::None {
            let q = Query::<TokenQuery>::try_from_uri(&parts.uri)
                .map(|Query(q)| q)
                .unwrap_or_default();
            if let Some(t) = q.token {
                cred = Credential::from_token(&t)?;
            }
        }
        crate::auth::catch_up_for(state, &cred).await;
        Caller::authenticate(state, cred, ip).map(StreamCaller)
    }
}

/// One event as every transport sends it (WebSocket text frame, SSE `data:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Always `new_message`.
    pub event: String,
    /// The mailbox address.
    pub mailbox: String,
    /// The message's sequence in the mailbox: resume with `since=<seq>`.
    pub seq: u64,
    /// Message id, for `…/messages/{id}`.
    pub message_id: String,
    /// `From:` as written (decoded).
    pub from: String,
    /// `Subject:` decoded.
    pub subject: String,
    /// When it was stored (RFC 3339).
    pub received_at: String,
    /// Raw size in bytes.
    pub size: u32,
    /// Number of attachments.
    pub attachments: u16,
    /// The first of `plus_tags`.
    pub plus_tag: Option<String>,
    /// Every plus tag it was addressed to in this mailbox.
    pub plus_tags: Vec<String>,
    /// Verification / sign-in links found in the body.
    pub links: Vec<String>,
    /// One-time codes found in the subject or text.
    pub codes: Vec<String>,
}

impl EventView {
    pub(crate) fn from_meta(address: &str, m: &MessageMeta) -> Self {
        Self {
            event: "new_message".to_owned(),
            mailbox: address.to_owned(),
            seq: m.id.seq,
            message_id: m.id.to_string(),
            from: m.summary.from.clone(),
            subject: m.summary.subject.clone(),
            received_at: rfc3339(m.received_at_ms),
            size: m.size,
            attachments: m.summary.attachments,
            plus_tag: m.plus_tag.clone(),
            plus_tags: m.plus_tags.clone(),
            links: m.summary.links.clone(),
            codes: m.summary.codes.clone(),
        }
    }

    fn from_event(address: &str, e: &Event) -> Self {
        Self {
            event: "new_message".to_owned(),
            mailbox: address.to_owned(),
            seq: e.id.seq,
            message_id: e.id.to_string(),
            from: e.summary.from.clone(),
            subject: e.summary.subject.clone(),
            received_at: rfc3339(e.received_at_ms),
            size: e.size,
            attachments: e.summary.attachments,
            plus_tag: e.plus_tag.clone(),
            plus_tags: e.plus_tags.clone(),
            links: e.summary.links.clone(),
            codes: e.summary.codes.clone(),
        }
    }

    /// The JSON text sent on the wire.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A gap in a mailbox's sequence: the message stored at `seq` failed its
/// checksum on disk and is quarantined (never served). Sent in its place, in
/// sequence order, so a client knows it missed nothing by accident and
/// carries on past it; resume with `since=<seq>` like after any event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GapView {
    /// Always `gap`.
    pub event: String,
    /// The mailbox address.
    pub mailbox: String,
    /// The quarantined message's sequence in the mailbox.
    pub seq: u64,
}

/// One item of a real-time stream: a message ([`EventView`], `event:
/// "new_message"`) or a gap ([`GapView`], `event: "gap"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StreamEvent {
    /// A stored message.
    Message(EventView),
    /// A quarantined message's sequence.
    Gap(GapView),
}

impl StreamEvent {
    /// The sequence it stands for: resume with `since=<seq>`.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Message(m) => m.seq,
            Self::Gap(g) => g.seq,
        }
    }

    /// The event's name (the SSE `event:` field, the JSON `event` member).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Message(_) => "new_message",
            Self::Gap(_) => "gap",
        }
    }

    /// The JSON text sent on the wire.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn from_entry(address: &str, entry: &ListEntry) -> Self {
        match entry {
            ListEntry::Message(m) => Self::Message(EventView::from_meta(address, m)),
            ListEntry::Gap { seq } => Self::Gap(GapView {
                event: "gap".to_owned(),
                mailbox: address.to_owned(),
                seq: *seq,
            }),
        }
    }
}

/// Why a feed stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEnd {
    /// The subscriber's queue overflowed; everything up to `last` was sent.
    Lagged {
        /// Last sequence sent: resume with `since=last`.
        last: u64,
    },
    /// The mailbox was deleted or expired.
    MailboxGone,
    /// The engine is shutting down.
    Closed,
    /// The index could not be read.
    Storage,
    /// The mailbox's owner (another host) stopped answering or no longer
    /// holds it; everything up to `last` was sent.
    Unavailable {
        /// Last sequence sent: resume with `since=last`.
        last: u64,
    },
}

/// A mailbox's stream: from this host's engine, or from the owner's events
/// when another host owns it ([`remote`]).
pub enum Feed {
    /// This host serves the mailbox.
    Local(LocalFeed),
    /// Another host does.
    Remote(remote::RemoteFeed),
}

impl Feed {
    /// Subscribe to `mailbox` (counted against the limits) and start after `since`.
    pub fn open(state: &AppState, mailbox: MailboxInfo, since: u64) -> Result<Self, Problem> {
        LocalFeed::open(state, mailbox, since).map(Feed::Local)
    }

    /// Last sequence handed out.
    pub fn last(&self) -> u64 {
        match self {
            Feed::Local(feed) => feed.last(),
            Feed::Remote(feed) => feed.last(),
        }
    }

    /// The next event past everything handed out so far. Cancel-safe.
    pub async fn next(&mut self) -> Result<StreamEvent, FeedEnd> {
        match self {
            Feed::Local(feed) => feed.next().await,
            Feed::Remote(feed) => feed.next().await,
        }
    }
}

/// Subscribe-then-replay-then-live over one mailbox, skipping sequences
/// already sent. See the module documentation for why there is no gap.
pub struct LocalFeed {
    state: AppState,
    mailbox: MailboxInfo,
    address: String,
    sub: Subscriber,
    last: u64,
    pending: VecDeque<ListEntry>,
    replaying: bool,
}

/// The refusal for a subscription the limits do not allow.
pub fn subscribe_problem(e: SubscribeError) -> Problem {
    match e {
        SubscribeError::NotFound => Problem::not_found(),
        SubscribeError::MailboxFull { limit } => Problem::new(
            Kind::RateLimited,
            format!("this mailbox has {limit} live subscribers already; close one or retry later"),
        )
        .retry_after(5),
        SubscribeError::HubFull { .. } => Problem::new(
            Kind::Unavailable,
            "the server has as many live subscribers as it allows; retry later",
        )
        .retry_after(5),
        _ => Problem::new(Kind::Unavailable, "the server is shutting down").retry_after(5),
    }
}

impl LocalFeed {
    /// Subscribe to `mailbox` (counted against the limits) and start after `since`.
    pub fn open(state: &AppState, mailbox: MailboxInfo, since: u64) -> Result<Self, Problem> {
        let sub = state
            .engine
            .subscribe_within(mailbox.id, state.realtime().config().limits())
            .map_err(subscribe_problem)?;
        Ok(Self {
            state: state.clone(),
            address: mailbox.address.to_string(),
            mailbox,
            sub,
            last: since,
            pending: VecDeque::new(),
            replaying: true,
        })
    }

    /// Last sequence handed out.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The next event past everything handed out so far: a message, or a
    /// gap where the replay found a quarantined one. Cancel-safe: the only
    /// await is the subscription's `recv`, and state changes after it.
    ///
    /// Live events carry their summary from the writer, so only the replay
    /// reads records back and only it can meet a corrupt one.
    pub async fn next(&mut self) -> Result<StreamEvent, FeedEnd> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                if entry.seq() <= self.last {
                    continue;
                }
                self.last = entry.seq();
                return Ok(StreamEvent::from_entry(&self.address, &entry));
            }
            if self.replaying {
                let page = self.state.realtime().config().replay_page.max(1);
                let got = match self
                    .state
                    .engine
                    .list_entries(self.mailbox.id, self.last, page)
                {
                    Ok(v) => v,
                    Err(LookupError::NotFound) => return Err(FeedEnd::MailboxGone),
                    Err(e) => {
                        tracing::warn!(error = %e, "replay failed");
                        return Err(FeedEnd::Storage);
                    }
                };
                // A short page means the index had nothing more at this
                // moment; anything later arrives on the subscription.
                self.replaying = got.len() >= page;
                self.pending.extend(got);
                continue;
            }
            match self.sub.recv_shared().await {
                Ok(e) if e.id.seq <= self.last => continue,
                Ok(e) => {
                    self.last = e.id.seq;
                    return Ok(StreamEvent::Message(EventView::from_event(
                        &self.address,
                        &e,
                    )));
                }
                Err(SubscriptionEnd::Lagged) => return Err(FeedEnd::Lagged { last: self.last }),
                Err(SubscriptionEnd::MailboxGone) => return Err(FeedEnd::MailboxGone),
                Err(_) => return Err(FeedEnd::Closed),
            }
        }
    }
}

/// This module's routes, each registered with its documentation.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ws::ws_inbox))
        .routes(routes!(sse::mailbox_events))
        .routes(routes!(wait::wait))
        .routes(routes!(campaign::campaign_report_stream))
}
