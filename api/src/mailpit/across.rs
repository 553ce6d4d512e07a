//! With `[cluster]`: the message list and search of an API-key instance
//! cover the user's mailboxes on every host (SCALE.md, "Reads"), through
//! the same gather as `GET /api/v1/mailboxes` ([`crate::gather`]): every
//! home runs the same Mailpit read as a member-only read over its own
//! mailboxes of the partitions it serves, from offset 0 and for
//! `start + limit` summaries (at most `limits.max_scan`, the bound of one
//! host's scan), and this host merges them newest first and cuts the page.
//! A home that does not answer makes the answer `503`, never a partial
//! list. A session-token instance is one mailbox and is not gathered.
//!
//! `info` and `tags` gather the same way (each home's counts and tags over
//! what it serves, added up here); the writes and `latest` that name no
//! message are in [`super::sweep`].

use std::cmp::Reverse;
use std::str::FromStr;

use axum::http::request::Parts;
use axum::http::StatusCode;
use uncorreo_engine::MessageId;

use super::handlers::{MessagesSummary, PageQuery};
use super::{Instance, MailpitError};
use crate::auth::Caller;
use crate::AppState;

/// How this request reads: on its own, as one host's part of a gather
/// (only the partitions it serves), or as the host that gathers.
pub(super) enum Reach {
    /// One host, a session-token instance, or no cluster.
    Here,
    /// One home's part of a gather: the instance is cut to what it serves.
    Member,
    /// This host gathers from every home.
    Gather,
}

/// How `parts` reads for `inst` (the instance cut to the partitions this
/// host serves for a member's part).
pub(super) fn reach(state: &AppState, inst: &mut Instance, parts: &Parts) -> Reach {
    let Some(cluster) = &state.cluster else {
        return Reach::Here;
    };
    if let Some(only) = crate::gather::member_only(parts) {
        crate::gather::keep_covered(only, cluster, &mut inst.mailboxes);
        return Reach::Member;
    }
    match inst.caller {
        Caller::User { .. } => Reach::Gather,
        _ => Reach::Here,
    }
}

/// The `start` and `limit` this host's own summary is made with.
pub(super) fn own_page(reach: &Reach, start: usize, limit: usize) -> (usize, usize) {
    match reach {
        Reach::Gather => (0, start.saturating_add(limit)),
        Reach::Here | Reach::Member => (start, limit),
    }
}

/// Asks every other home for `path` (`/mailpit/api/v1/messages` or
/// `…/search`) with `q`, and cuts this host's instance to what it serves;
/// the other homes' summaries.
pub(super) async fn ask(
    state: &AppState,
    inst: &mut Instance,
    parts: &Parts,
    path: &str,
    q: &PageQuery,
    start: usize,
    limit: usize,
) -> Result<Vec<MessagesSummary>, MailpitError> {
    let mut query = vec![
        ("start", "0".to_owned()),
        ("limit", start.saturating_add(limit).to_string()),
    ];
    if let Some(text) = &q.query {
        query.push(("query", text.clone()));
    }
    if let Some(tz) = &q.tz {
        query.push(("tz", tz.clone()));
    }
    let query = serde_urlencoded::to_string(&query).unwrap_or_default();
    ask_json(state, inst, parts, &format!("{path}?{query}")).await
}

/// Asks every other home for the member-only read `path_and_query` (one of
/// `uncorreo_hop::wire::MEMBER_READS`), and cuts this host's instance to
/// what it serves; the other homes' answers, each read as a `T`.
pub(super) async fn ask_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    inst: &mut Instance,
    parts: &Parts,
    path_and_query: &str,
) -> Result<Vec<T>, MailpitError> {
    let Some(cluster) = &state.cluster else {
        return Ok(Vec::new());
    };
    let gathered = crate::gather::gather(state, cluster, parts, path_and_query)
        .await
        .map_err(MailpitError::from)?;
    crate::gather::keep_covered(&gathered.local, cluster, &mut inst.mailboxes);
    gathered
        .remote
        .iter()
        .map(|body| {
            serde_json::from_slice::<T>(body).map_err(|_| {
                MailpitError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "a host answered what this read does not expect; retry shortly",
                )
            })
        })
        .collect()
}

/// This host's summary and the other homes', as one page from `start`.
pub(super) fn merge(
    mut own: MessagesSummary,
    others: Vec<MessagesSummary>,
    start: usize,
    limit: usize,
) -> MessagesSummary {
    let mut tags: std::collections::BTreeSet<String> = own.tags.drain(..).collect();
    for other in others {
        own.total += other.total;
        own.unread += other.unread;
        own.messages_count += other.messages_count;
        own.messages_unread += other.messages_unread;
        tags.extend(other.tags);
        own.messages.extend(other.messages);
    }
    // Newest first, as one host lists: by arrival, then by id.
    own.messages.sort_by_cached_key(|m| {
        (
            Reverse(m.created.clone()),
            Reverse(MessageId::from_str(&m.id).ok()),
        )
    });
    own.messages = own.messages.into_iter().skip(start).take(limit).collect();
    own.start = start as u64;
    own.tags = tags.into_iter().collect();
    own
}
