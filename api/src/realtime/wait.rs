//! `GET /api/v1/mailboxes/{address}/wait`: long-poll for the next message,
//! for `count` messages, or for a match, past `since`.
//!
//! Subscribes first, then scans the index past `since`; each event only
//! says "look again", and the scan continues from where it stopped, so a
//! message committed at any moment is seen exactly once. Answers as soon as
//! `count` matches exist (at once if they already do).
//!
//! A quarantined (corrupt) message in the scanned range is never a match; its
//! sequence is listed in `gaps`, a field of the answer, not an error.
//!
//! On timeout the answer is `200` with `timed_out: true`, the matches found
//! so far (fewer than `count`; none for the default `count=1`) and
//! `next_since` unchanged unless something matched — a normal outcome for
//! polling clients, so not an error status and not a bodiless 204.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};
use uncorreo_engine::{
    ListEntry, LookupError, MailboxInfo, MessageMeta, StorageError, SubscriptionEnd,
};
use utoipa::{IntoParams, ToSchema};

use super::remote::{Access, HeaderAccess};
use super::subscribe_problem;
use crate::auth::authorize_mailbox;
use crate::messages::MessageSummaryView;
use crate::problem::{Kind, Problem, ProblemBody};
use crate::AppState;

/// Query of a wait.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Only messages with a sequence above this (default 0).
    pub since: Option<u64>,
    /// Seconds to wait, 0 ..= `wait_max_timeout_secs` (300); default
    /// `wait_default_timeout_secs` (30). 0 checks once and answers.
    pub timeout: Option<u64>,
    /// Answer once this many matching messages exist past `since`, 1 ..= `wait_max_count` (100). Default 1.
    pub count: Option<usize>,
    /// Match: `From:` header or envelope sender contains this (case-insensitive).
    pub from: Option<String>,
    /// Match: `Subject:` contains this (case-insensitive).
    pub subject: Option<String>,
    /// Match: the text body (or the HTML body if there is no text) contains this (case-insensitive).
    pub body: Option<String>,
}

/// The answer of a wait.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WaitResponse {
    /// Matching messages past `since`, ascending, at most `count`.
    pub messages: Vec<MessageSummaryView>,
    /// The sequence of the last message returned, else `since`: pass it as
    /// the next `since`.
    pub next_since: u64,
    /// True if the timeout passed before `count` matches existed.
    pub timed_out: bool,
    /// Sequences this wait examined (after `since`) whose message failed
    /// its checksum on disk: quarantined, never served, so never a match.
    /// Ascending; usually empty.
    pub gaps: Vec<u64>,
}

struct Matcher {
    from: Option<String>,
    subject: Option<String>,
    body: Option<String>,
}

impl Matcher {
    fn meta_matches(&self, m: &MessageMeta) -> bool {
        let has = |hay: &str, needle: &Option<String>| {
            needle
                .as_ref()
                .is_none_or(|n| hay.to_lowercase().contains(n.as_str()))
        };
        let from_ok = self
            .from
            .as_ref()
            .is_none_or(|_| has(&m.summary.from, &self.from) || has(&m.envelope_from, &self.from));
        from_ok && has(&m.summary.subject, &self.subject)
    }
}

fn pattern(p: Option<String>, max: usize, name: &'static str) -> Result<Option<String>, Problem> {
    match p {
        Some(p) if p.chars().count() > max => Err(Problem::new(
            Kind::InvalidRequest,
            format!("{name} must be at most {max} characters"),
        )
        .for_field(name)),
        Some(p) if p.is_empty() => Ok(None),
        p => Ok(p.map(|p| p.to_lowercase())),
    }
}

/// Wait for messages.
#[utoipa::path(
    get,
    path = "/api/v1/mailboxes/{address}/wait",
    tag = "realtime",
    description = "Long-poll: answers as soon as `count` messages past `since` match (at once if \
they already exist), or when `timeout` seconds pass (`200` with `timed_out: true`). Filters \
(`from`, `subject`, `body`) are case-insensitive substrings; without any, every message matches.",
    params(("address" = String, Path, description = "`local@domain`"), WaitQuery),
    responses(
        (status = 200, description = "Matches, or `timed_out: true`", body = WaitResponse),
        (status = 400, description = "Malformed query", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox (or deleted while waiting), or not visible with these credentials", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`timeout`, `count` or a pattern out of range", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited, or the mailbox has `max_subscribers_per_mailbox` live subscribers", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The server has `max_subscribers` live subscribers, or is shutting down, or (cluster) the host that keeps the mailbox is unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = [])),
)]
pub async fn wait(
    State(state): State<AppState>,
    subscribed: Option<Extension<OnSubscribed>>,
    HeaderAccess(access): HeaderAccess,
    Path(address): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, Response> {
    match access {
        Access::Local(caller) => {
            let mb = authorize_mailbox(&state, &caller, &address)
                .map_err(IntoResponse::into_response)?;
            let Query(q) = query.map_err(IntoResponse::into_response)?;
            let answer = wait_for(&state, &mb, q, || subscribed.map_or((), |s| (s.0 .0)()))
                .await
                .map_err(IntoResponse::into_response)?;
            Ok(Json(answer).into_response())
        }
        Access::Remote(remote) => {
            let mailbox = remote.authorize(&state).await?;
            let Query(q) = query.map_err(IntoResponse::into_response)?;
            Ok(
                super::remote::wait(&state, mailbox, q, || subscribed.map_or((), |s| (s.0 .0)()))
                    .await,
            )
        }
    }
}

/// Set on an in-process request to the `wait` route (MCP runs its waits
/// through the API router): called once the wait is subscribed, here or,
/// for a mailbox another host owns, on the owner's notices.
#[derive(Clone)]
pub struct OnSubscribed(pub std::sync::Arc<dyn Fn() + Send + Sync>);

/// Wait for messages of `mb` past `q.since`: the one mechanism behind the
/// long-poll route and MCP's `wait_for_message` / `wait_for_code`. Dropping
/// the future ends the wait and its subscription. `subscribed` runs once the
/// subscription exists, before the first scan: from then on no commit can be
/// missed, so a client may trigger the mail (MCP tells its client through a
/// progress notification).
pub async fn wait_for(
    state: &AppState,
    mb: &MailboxInfo,
    q: WaitQuery,
    subscribed: impl FnOnce(),
) -> Result<WaitResponse, Problem> {
    let cfg = state.realtime().config().clone();
    let timeout = q.timeout.unwrap_or(cfg.wait_default_timeout_secs);
    if timeout > cfg.wait_max_timeout_secs {
        return Err(Problem::new(
            Kind::InvalidRequest,
            format!(
                "timeout must be between 0 and {}",
                cfg.wait_max_timeout_secs
            ),
        )
        .for_field("timeout"));
    }
    let count = q.count.unwrap_or(1);
    if count == 0 || count > cfg.wait_max_count {
        return Err(Problem::new(
            Kind::InvalidRequest,
            format!("count must be between 1 and {}", cfg.wait_max_count),
        )
        .for_field("count"));
    }
    let max = cfg.wait_max_pattern_chars;
    let matcher = Matcher {
        from: pattern(q.from, max, "from")?,
        subject: pattern(q.subject, max, "subject")?,
        body: pattern(q.body, max, "body")?,
    };
    let since = q.since.unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let shutdown = state.realtime().shutdown_token();
    let mut w = Waiter {
        state,
        mb,
        matcher,
        cursor: since,
        found: Vec::new(),
        gaps: Vec::new(),
        count,
        body_scans: 0,
    };
    // Subscribe before the first scan, so nothing committed after the scan is missed.
    let mut sub = state
        .engine
        .subscribe_within(mb.id, cfg.limits())
        .map_err(subscribe_problem)?;
    subscribed();
    loop {
        w.scan().await?;
        if w.found.len() >= count {
            return Ok(answer(since, w, false, "matched"));
        }
        let woke = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                metrics::counter!(uncorreo_metric_names::WAITS_TOTAL, "outcome" => "shutdown").increment(1);
                return Err(Problem::new(Kind::Unavailable, "the server is shutting down").retry_after(5));
            }
            _ = tokio::time::sleep_until(deadline) => None,
            ev = sub.recv() => Some(ev),
        };
        match woke {
            None => {
                // One last look: a message committed just before the deadline counts.
                w.scan().await?;
                let done = w.found.len() >= count;
                let outcome = if done { "matched" } else { "timed_out" };
                return Ok(answer(since, w, !done, outcome));
            }
            Some(Ok(_)) => {}
            Some(Err(SubscriptionEnd::Lagged)) => {
                // Only "look again" was lost; the scan reads the index anyway.
                sub = state
                    .engine
                    .subscribe_within(mb.id, cfg.limits())
                    .map_err(subscribe_problem)?;
            }
            Some(Err(SubscriptionEnd::MailboxGone)) => return Err(Problem::not_found()),
            Some(Err(_)) => {
                return Err(
                    Problem::new(Kind::Unavailable, "the server is shutting down").retry_after(5),
                )
            }
        }
    }
}

fn answer(since: u64, w: Waiter<'_>, timed_out: bool, outcome: &'static str) -> WaitResponse {
    metrics::counter!(uncorreo_metric_names::WAITS_TOTAL, "outcome" => outcome).increment(1);
    let next_since = w.found.last().map_or(since, |m| m.seq);
    WaitResponse {
        messages: w.found,
        next_since,
        timed_out,
        gaps: w.gaps,
    }
}

struct Waiter<'a> {
    state: &'a AppState,
    mb: &'a MailboxInfo,
    matcher: Matcher,
    /// Highest sequence examined.
    cursor: u64,
    found: Vec<MessageSummaryView>,
    /// Quarantined sequences met past `since`.
    gaps: Vec<u64>,
    count: usize,
    body_scans: usize,
}

impl Waiter<'_> {
    /// Examine every message past the cursor until `count` matches exist.
    async fn scan(&mut self) -> Result<(), Problem> {
        let page = self.state.realtime().config().replay_page.max(1);
        while self.found.len() < self.count {
            let entries = match self
                .state
                .engine
                .list_entries(self.mb.id, self.cursor, page)
            {
                Ok(v) => v,
                Err(LookupError::NotFound) => return Err(Problem::not_found()),
                Err(e) => return Err(e.into()),
            };
            let short = entries.len() < page;
            for entry in entries {
                self.cursor = entry.seq();
                let m = match entry {
                    ListEntry::Message(m) => m,
                    ListEntry::Gap { seq } => {
                        self.gaps.push(seq);
                        continue;
                    }
                };
                if self.matches(&m).await? {
                    self.found.push(MessageSummaryView::from(&m));
                    if self.found.len() >= self.count {
                        return Ok(());
                    }
                }
            }
            if short {
                break;
            }
        }
        Ok(())
    }

    async fn matches(&mut self, m: &MessageMeta) -> Result<bool, Problem> {
        if !self.matcher.meta_matches(m) {
            return Ok(false);
        }
        let Some(needle) = &self.matcher.body else {
            return Ok(true);
        };
        let cfg = self.state.realtime().config();
        if self.body_scans >= cfg.wait_max_body_scans {
            return Err(Problem::new(
                Kind::InvalidRequest,
                format!(
                    "a body match reads at most {} messages per wait; pass a later since",
                    cfg.wait_max_body_scans
                ),
            ));
        }
        self.body_scans += 1;
        let raw = match self.state.engine.read_raw(m.id) {
            Ok(raw) => raw,
            // Deleted meanwhile, or quarantined: not a match.
            Err(LookupError::NotFound | LookupError::Storage(StorageError::Corrupt)) => {
                return Ok(false)
            }
            Err(e) => return Err(e.into()),
        };
        // Too large or unparseable messages simply do not match by body.
        let Ok(parsed) = crate::parse::parse(raw, self.state.limits().parse_max_bytes).await else {
            return Ok(false);
        };
        let text = parsed.text.or(parsed.html).unwrap_or_default();
        Ok(text.to_lowercase().contains(needle.as_str()))
    }
}
