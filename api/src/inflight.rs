//! Request bodies read under the process-wide budget of bytes in flight
//! ([`uncorreo_budget`]), for the ingest routes: HTTP send (native and
//! Mailpit), the SES webhook, and with `[cluster]` a request's body on its
//! way to the host that keeps its mailbox. The size declared by `Content-Length` is
//! reserved before the first byte is read; without one the reservation grows
//! while reading. What does not fit is refused with `503` and `Retry-After`
//! (the client keeps the message and retries) and counted in
//! `uncorreo_in_flight_refused_total{front_end}`.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body_util::BodyExt;
use uncorreo_budget::{Budget, Exhausted, Permit};

use crate::problem::{Kind, Problem};

/// `Retry-After` (seconds) on an over-budget refusal: bodies in flight
/// finish in about this long.
pub const RETRY_AFTER_SECS: u64 = 1;

/// First reservation for a body without `Content-Length`.
const UNDECLARED_RESERVE: usize = 16 * 1024;

/// Which ingest path refused a body (the metric's `front_end` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    /// `POST /api/v1/mailboxes/{address}/messages`.
    HttpSend,
    /// `POST /mailpit/api/v1/send`.
    MailpitSend,
    /// `POST /api/v1/ses/inbound`.
    Ses,
    /// A request with a body for a mailbox another host keeps, read here
    /// before it goes to the owner (`[cluster]`).
    Routed,
}

impl FrontEnd {
    fn label(self) -> &'static str {
        match self {
            Self::HttpSend => "http_send",
            Self::MailpitSend => "mailpit_send",
            Self::Ses => "ses",
            Self::Routed => "routed",
        }
    }
}

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than the route's limit (declared or read).
    #[error("request body over the limit")]
    TooLarge,
    /// The budget of bytes in flight cannot take it now.
    #[error("too much in flight: {0}")]
    OverBudget(Exhausted),
    /// The connection failed while reading.
    #[error("request body unreadable")]
    Unreadable,
}

/// Count a refusal by `front_end` and answer it as a problem: `503` with
/// `Retry-After`.
pub fn refused(front_end: FrontEnd) -> Problem {
    metrics::counter!(uncorreo_metric_names::IN_FLIGHT_REFUSED_TOTAL, "front_end" => front_end.label())
        .increment(1);
    Problem::new(
        Kind::Unavailable,
        "too much mail is being received right now; retry shortly",
    )
    .retry_after(RETRY_AFTER_SECS)
}

/// [`refused`] for a body refused before it was read to the end: the
/// connection cannot carry another request.
pub fn refused_unread(front_end: FrontEnd) -> Problem {
    refused(front_end).leaving_body_unread()
}

/// Grow `permit` by `bytes` for a copy the route is about to make (our
/// `Received:` line in front, a decoded form), or refuse.
pub fn hold_more(permit: &mut Permit, bytes: usize, front_end: FrontEnd) -> Result<(), Problem> {
    permit
        .try_grow_to(permit.bytes().saturating_add(bytes as u64))
        .map_err(|_| refused(front_end))
}

/// Read `body` (at most `max` bytes) under `budget`; the permit holds the
/// buffer's capacity and must live as long as the bytes are in use.
pub async fn read(
    budget: &Budget,
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<(Bytes, Permit), BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let first = declared
        .map_or(UNDECLARED_RESERVE, |n| usize::try_from(n).unwrap_or(max))
        .min(max);
    let mut permit = budget
        .try_reserve(first as u64)
        .map_err(BodyError::OverBudget)?;
    let mut buf = Vec::with_capacity(first);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Unreadable)?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        let len = buf.len().saturating_add(chunk.len());
        if len > max {
            return Err(BodyError::TooLarge);
        }
        permit
            .make_room(&mut buf, len, max)
            .map_err(BodyError::OverBudget)?;
        buf.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(buf), permit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_length(n: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, n.into());
        h
    }

    #[tokio::test]
    async fn the_declared_length_is_reserved_before_reading_and_released_after() {
        let budget = Budget::new(1000);
        let (bytes, permit) = read(&budget, &with_length(600), Body::from(vec![7u8; 600]), 800)
            .await
            .unwrap();
        assert_eq!(bytes.len(), 600);
        assert_eq!(budget.in_flight(), 600);
        let refused = read(&budget, &with_length(500), Body::from(vec![7u8; 500]), 800).await;
        assert!(matches!(refused, Err(BodyError::OverBudget(_))));
        drop(permit);
        assert_eq!(budget.in_flight(), 0);
        let undeclared = read(&budget, &HeaderMap::new(), Body::from(vec![7u8; 700]), 800)
            .await
            .unwrap();
        assert_eq!(undeclared.0.len(), 700);
        assert!(budget.in_flight() >= 700);
        let too_big = read(
            &Budget::new(10_000),
            &HeaderMap::new(),
            Body::from(vec![1u8; 900]),
            800,
        )
        .await;
        assert!(matches!(too_big, Err(BodyError::TooLarge)));
    }
}
