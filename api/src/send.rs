//! HTTP send: `POST /api/v1/mailboxes/{address}/messages` with a raw
//! RFC 5322 message as the body, for apps and tests that cannot speak SMTP.
//! The Mailpit-compatible JSON `send` builds a message and ends up here too.
//!
//! Architecture invariant: HTTP send is an ingest path like SMTP and SES. It
//! stores through [`Engine::deliver`](uncorreo_engine::Engine::deliver)
//! only, with the same size limit (`engine.max_message_bytes`), the same
//! per-mailbox quota (checked with `Engine::resolve`, as SMTP does at RCPT),
//! and answers `201` only when `deliver` returned, i.e. after the batch's
//! `fdatasync`.

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uncorreo_budget::Permit;
use uncorreo_engine::{Address, Delivery, DeliveryOutcome, MessageId, Recipient, ResolveError};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{authorize_mailbox, Caller};
use crate::inflight::{self, BodyError, FrontEnd};
use crate::problem::{Kind, Problem, ProblemBody};
use crate::AppState;

/// Longest envelope sender accepted (RFC 5321's path limit).
pub const MAX_ENVELOPE_FROM: usize = 256;

/// Query of an HTTP send.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SendQuery {
    /// Envelope sender to record (SMTP `MAIL FROM`); empty or absent for `<>`.
    pub envelope_from: Option<String>,
    /// Plus tag to deliver under (as if sent to `box+TAG@domain`).
    pub tag: Option<String>,
}

/// A stored message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Sent {
    /// Message id (`{mailbox:x}-{seq}`).
    pub id: String,
    /// Sequence number in the mailbox.
    pub seq: u64,
}

/// Deliver a raw message to a mailbox over HTTP.
#[utoipa::path(
    post,
    path = "/api/v1/mailboxes/{address}/messages",
    tag = "messages",
    params(("address" = String, Path, description = "`local@domain`"), SendQuery),
    request_body(content = String, content_type = "message/rfc822", description = "The message exactly as it should be stored (RFC 5322 header section, blank line, body); at most `engine.max_message_bytes`"),
    responses(
        (status = 201, description = "Stored and durable (after fdatasync)", body = Sent),
        (status = 401, description = "No credential, or one that matches nothing (unknown or revoked API key, unknown or expired session token, malformed Authorization)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such mailbox, or not visible with these credentials", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`mailbox-full`: the mailbox holds its plan's maximum of messages", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Larger than `engine.max_message_bytes`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "A JSON body (send raw RFC 5322, or use the Mailpit-compatible JSON send)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Not an RFC 5322 message, or a bad `envelope_from` / `tag`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Storage busy or failed, or too much mail in flight (`Retry-After`); retry", body = ProblemBody, content_type = "application/problem+json"),
        (status = 507, description = "The data disk is full", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session_token" = [])),
)]
pub async fn send_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(address): Path<String>,
    query: Result<Query<SendQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Sent>), Problem> {
    let to = send_address(&state, &caller, &address)?;
    let Query(q) = query?;
    if is_json(&headers) {
        return Err(Problem::new(
            Kind::UnsupportedMediaType,
            "send the raw message (message/rfc822); JSON messages go to /mailpit/api/v1/send",
        ));
    }
    let (raw, mut permit) = read_bounded(&state, &headers, body).await?;
    let envelope_from = q.envelope_from.unwrap_or_default();
    check_envelope_from(&envelope_from)?;
    let rcpt_text = match q.tag.as_deref().filter(|t| !t.is_empty()) {
        Some(tag) => format!("{}+{tag}@{}", to.local(), to.domain()),
        None => to.to_string(),
    };
    let rcpt = Recipient::parse(&rcpt_text).map_err(|_| {
        Problem::new(
            Kind::InvalidRequest,
            "tag: letters, digits, . _ - + only (at most 64)",
        )
    })?;
    let id = deliver_one(
        &state,
        caller.ip(),
        rcpt,
        envelope_from,
        &raw,
        (&mut permit, FrontEnd::HttpSend),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(Sent {
            id: id.to_string(),
            seq: id.seq,
        }),
    ))
}

/// Where an HTTP send to `address` goes: a mailbox the caller may see, or
/// an address of a campaign the caller's API key owns (so HTTP send
/// reaches campaigns like SMTP and SES do); anything else is the one 404.
fn send_address(state: &AppState, caller: &Caller, address: &str) -> Result<Address, Problem> {
    let campaign = state
        .engine
        .campaign_for(address)
        .and_then(|id| state.engine.campaign(id));
    if let (Some(c), Caller::User { user, .. }) = (campaign, caller) {
        if c.owner == uncorreo_engine::Owner::User(*user) {
            return Address::parse(address).map_err(|_| Problem::not_found());
        }
    }
    Ok(authorize_mailbox(state, caller, address)?.address)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || m.ends_with("+json")
        })
        .unwrap_or(false)
}

/// The body, refused with 413 as soon as it is known to pass the message
/// size limit (from `Content-Length` when declared, else while reading), and
/// with 503 when the budget of bytes in flight cannot take it, so memory
/// stays bounded by the limit and the budget.
async fn read_bounded(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Permit), Problem> {
    let max = state.engine.config().max_message_bytes;
    inflight::read(state.budget(), headers, body, max)
        .await
        .map_err(|e| match e {
            BodyError::OverBudget(_) => inflight::refused_unread(FrontEnd::HttpSend),
            BodyError::TooLarge | BodyError::Unreadable => Problem::new(
                Kind::PayloadTooLarge,
                format!("messages are limited to {max} bytes"),
            ),
        })
}

fn check_envelope_from(s: &str) -> Result<(), Problem> {
    let ok = s.len() <= MAX_ENVELOPE_FROM
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
        && (s.is_empty() || s.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(Problem::new(
            Kind::InvalidRequest,
            "envelope_from must be empty or a bare address (local@domain)",
        ))
    }
}

/// Problems that make `raw` not a message we store: we keep bytes as
/// received, so this only refuses what no mail reader could take for a
/// message (no header field on the first line, NUL bytes).
pub fn check_message(raw: &[u8]) -> Result<(), Problem> {
    let bad = |why: &str| {
        Problem::new(
            Kind::InvalidRequest,
            format!("not an RFC 5322 message: {why}"),
        )
    };
    if raw.is_empty() {
        return Err(bad("empty body"));
    }
    if raw.contains(&0) {
        return Err(bad("it contains NUL bytes"));
    }
    let first = raw.split(|&b| b == b'\n').next().unwrap_or_default();
    let name = first.split(|&b| b == b':').next().unwrap_or_default();
    let is_field = name.len() < first.len()
        && !name.is_empty()
        && name.iter().all(|&b| b.is_ascii_graphic() && b != b':');
    if !is_field {
        return Err(bad("the first line is not a header field (Name: value)"));
    }
    Ok(())
}

/// The permit that pays for a request's bytes in flight, and the front end
/// to name when it cannot grow.
pub type Paid<'a> = (&'a mut Permit, FrontEnd);

/// Store `raw` for one recipient through the one delivery entry point, with
/// our `Received:` line in front; returns the id once it is durable.
pub async fn deliver_one(
    state: &AppState,
    client: IpAddr,
    rcpt: Recipient,
    envelope_from: String,
    raw: &[u8],
    paid: Paid<'_>,
) -> Result<MessageId, Problem> {
    let stored = deliver_many(state, client, vec![rcpt], envelope_from, raw, paid).await?;
    stored.into_iter().next().ok_or_else(Problem::not_found)
}

/// Store `raw` for each of `rcpts` (already known to be the caller's); the
/// ids of the stored copies, once durable. Quotas are checked first, as
/// SMTP checks them at RCPT; a recipient that filled up in between is
/// refused by the engine at commit time and reported the same way. The
/// stored copy (our line + `raw`) is paid for from `paid` before it is made.
pub async fn deliver_many(
    state: &AppState,
    client: IpAddr,
    rcpts: Vec<Recipient>,
    envelope_from: String,
    raw: &[u8],
    paid: Paid<'_>,
) -> Result<Vec<MessageId>, Problem> {
    check_message(raw)?;
    let max = state.engine.config().max_message_bytes;
    let received = received_line(state, client, raw);
    if received.len() + raw.len() > max {
        return Err(Problem::new(
            Kind::PayloadTooLarge,
            format!("messages are limited to {max} bytes"),
        ));
    }
    for r in &rcpts {
        state
            .engine
            .resolve(&r.address.to_string())
            .map_err(resolve_problem)?;
    }
    let (permit, front_end) = paid;
    inflight::hold_more(permit, received.len() + raw.len(), front_end)?;
    let mut stored = Vec::with_capacity(received.len() + raw.len());
    stored.extend_from_slice(received.as_bytes());
    stored.extend_from_slice(raw);
    let outcome = state
        .engine
        .deliver(Delivery {
            raw: stored.into(),
            envelope_from,
            recipients: rcpts,
            dedupe_key: None,
        })
        .await?;
    match outcome {
        DeliveryOutcome::Delivered { stored, refused } => {
            if let Some((_, e)) = refused.first() {
                if stored.is_empty() {
                    return Err(resolve_problem(*e));
                }
            }
            metrics::counter!(uncorreo_metric_names::HTTP_SEND_MESSAGES_TOTAL)
                .increment(stored.len() as u64);
            Ok(stored)
        }
        // No dedupe key is given, so the engine cannot call this a duplicate.
        DeliveryOutcome::Duplicate => Err(Problem::new(Kind::Internal, "unexpected duplicate")),
    }
}

fn resolve_problem(e: ResolveError) -> Problem {
    match e {
        ResolveError::MailboxFull => Problem::new(
            Kind::MailboxFull,
            "the mailbox holds its plan's maximum of messages; delete some first",
        ),
        _ => Problem::not_found(),
    }
}

/// Our trace line, with the line ending the message itself uses.
fn received_line(state: &AppState, client: IpAddr, raw: &[u8]) -> String {
    let eol = match raw.iter().position(|&b| b == b'\n') {
        Some(i) if i == 0 || raw.get(i - 1) != Some(&b'\r') => "\n",
        _ => "\r\n",
    };
    let date = uncorreo_mail::date::rfc5322_date(state.engine.now_ms() / 1000);
    format!(
        "Received: from [{client}] by {} (uncorreo) with HTTP; {date}{eol}",
        state.hostname()
    )
}

/// This module's routes, each registered with its documentation.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(send_message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_must_open_with_a_header_field() {
        assert!(check_message(b"Subject: hi\r\n\r\nbody").is_ok());
        assert!(check_message(b"X:\n\n").is_ok());
        for bad in [
            &b""[..],
            b"hello world\r\n",
            b": no name\r\n",
            b"Sub ject: x\r\n",
            b"A: b\0\r\n",
        ] {
            assert_eq!(
                check_message(bad).unwrap_err().kind,
                Kind::InvalidRequest,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn envelope_senders_are_bare_addresses() {
        assert!(check_envelope_from("").is_ok());
        assert!(check_envelope_from("a@b.example").is_ok());
        for bad in ["<a@b>", "a b@c", "nobody", "a@b\r\nRCPT TO:x"] {
            assert!(check_envelope_from(bad).is_err(), "{bad}");
        }
        assert!(check_envelope_from(&format!("{}@b", "a".repeat(300))).is_err());
    }
}
