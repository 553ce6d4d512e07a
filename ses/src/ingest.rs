//! The webhook's logic without HTTP: [`Ingest::handle`] takes the
//! `x-amz-sns-message-type` header and the body and returns one [`Answer`].
//! Cheap checks come first (so a forged request never makes us fetch anything
//! for a topic we do not serve), then the signature, then the action for the
//! message type. Every answer is counted and logged here, so a front end only
//! maps it to its own status codes.

use std::sync::Arc;

use uncorreo_engine::{Delivery, DeliveryOutcome, Recipient};

use crate::message::{MessageType, SnsMessage};
use crate::ses::{self, SesEvent};
use crate::time::parse_timestamp_ms;
use crate::url::SnsUrl;
use crate::verify::{check_before_fetch, verify_with};
use crate::Ingest;

/// How a request ended; the `outcome` label of `uncorreo_ses_notifications_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Stored for at least one local mailbox (durable).
    Delivered,
    /// This `MessageId` was delivered before; nothing stored.
    Duplicate,
    /// Signature, signature version, certificate or certificate URL wrong.
    BadSignature,
    /// `TopicArn` not in `allowed_topic_arns`.
    UnknownTopic,
    /// No recipient is a live local mailbox with room.
    NoLocalRecipient,
    /// `Timestamp` too old or too far in the future.
    Stale,
    /// Not an SNS message we can read, or an unusable SES payload.
    Malformed,
    /// Subscription confirmed by visiting `SubscribeURL`.
    SubscriptionConfirmed,
    /// `UnsubscribeConfirmation` received (nothing to do).
    Unsubscribed,
    /// A valid SES notification that carries no mail (e.g. the setup notification).
    Ignored,
    /// Storage failed; `503` if temporary so SNS retries.
    StorageError,
    /// The signing certificate could not be fetched; `503` so SNS retries.
    CertUnavailable,
    /// Visiting `SubscribeURL` failed; `503` so SNS sends the confirmation again.
    SubscriptionError,
    /// Body over `max_body_bytes`; `413`.
    TooLarge,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Duplicate => "duplicate",
            Self::BadSignature => "bad_signature",
            Self::UnknownTopic => "unknown_topic",
            Self::NoLocalRecipient => "no_local_recipient",
            Self::Stale => "stale",
            Self::Malformed => "malformed",
            Self::SubscriptionConfirmed => "subscription_confirmed",
            Self::Unsubscribed => "unsubscribed",
            Self::Ignored => "ignored",
            Self::StorageError => "storage_error",
            Self::CertUnavailable => "cert_unavailable",
            Self::SubscriptionError => "subscription_error",
            Self::TooLarge => "too_large",
        }
    }
}

/// How one request ended: its outcome, whether SNS should retry, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What happened.
    pub outcome: Outcome,
    /// True when retrying can help (a front end answers so that SNS retries).
    pub retry: bool,
    /// Why, for the log and the response body (clipped to a bounded length).
    pub detail: String,
}

impl Answer {
    fn done(outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            outcome,
            retry: false,
            detail: detail.into(),
        }
    }
    fn retry(outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            outcome,
            retry: true,
            detail: detail.into(),
        }
    }
}

impl Ingest {
    /// Handle one SNS post: `message_type_header` is the
    /// `x-amz-sns-message-type` header when present, `body` the whole request
    /// body (already capped at `max_body_bytes` by the caller). Delivery, when
    /// there is one, is durable before this returns.
    pub async fn handle(&self, message_type_header: Option<&[u8]>, body: &[u8]) -> Answer {
        let mut answer = handle(self, message_type_header, body).await;
        clip(&mut answer.detail);
        count(answer.outcome, &answer.detail);
        answer
    }

    /// The answer for a body over `max_body_bytes`, counted like every other.
    pub fn too_large(&self) -> Answer {
        let answer = Answer::done(
            Outcome::TooLarge,
            format!(
                "request body is over the limit of {} bytes",
                self.inner.config.max_body_bytes
            ),
        );
        count(answer.outcome, "");
        answer
    }

    /// The answer for a body that could not be read at all.
    pub fn unreadable(&self) -> Answer {
        let answer = Answer::done(Outcome::Malformed, "request body unreadable");
        count(answer.outcome, &answer.detail);
        answer
    }
}

/// Longest `detail` we log and answer; details quote request fields.
const MAX_DETAIL: usize = 512;

fn clip(detail: &mut String) {
    if uncorreo_mail::text::clip(detail, MAX_DETAIL) {
        detail.push('…');
    }
}

fn count(outcome: Outcome, detail: &str) {
    metrics::counter!(uncorreo_metric_names::SES_NOTIFICATIONS_TOTAL, "outcome" => outcome.as_str())
        .increment(1);
    match outcome {
        Outcome::Delivered
        | Outcome::Duplicate
        | Outcome::SubscriptionConfirmed
        | Outcome::Unsubscribed
        | Outcome::Ignored => {
            tracing::info!(outcome = outcome.as_str(), detail, "SES webhook")
        }
        Outcome::StorageError | Outcome::CertUnavailable | Outcome::SubscriptionError => {
            tracing::error!(outcome = outcome.as_str(), detail, "SES webhook")
        }
        _ => tracing::warn!(outcome = outcome.as_str(), detail, "SES webhook"),
    }
}

async fn handle(st: &Ingest, message_type_header: Option<&[u8]>, body: &[u8]) -> Answer {
    let cfg = &st.inner.config;
    let msg = match SnsMessage::from_json(body) {
        Ok(m) => m,
        Err(e) => return Answer::done(Outcome::Malformed, format!("not an SNS message: {e}")),
    };
    let kind = match msg.message_type() {
        Ok(k) => k,
        Err(e) => return Answer::done(Outcome::Malformed, e.to_string()),
    };
    if let Some(h) = message_type_header {
        if h != kind.as_str().as_bytes() {
            return Answer::done(
                Outcome::Malformed,
                "x-amz-sns-message-type header disagrees with Type",
            );
        }
    }
    let topic = msg.topic_arn.as_deref().unwrap_or_default();
    if !cfg.allowed_topic_arns.iter().any(|t| t == topic) {
        return Answer::done(
            Outcome::UnknownTopic,
            format!("topic {topic:?} not allowed"),
        );
    }
    let now_ms = st.inner.clock.now_ms();
    let Some(ts) = msg.timestamp.as_deref().and_then(parse_timestamp_ms) else {
        return Answer::done(Outcome::Malformed, "Timestamp missing or not ISO 8601 UTC");
    };
    if now_ms.saturating_sub(ts) > cfg.max_age_secs.saturating_mul(1000) {
        return Answer::done(Outcome::Stale, "Timestamp older than max_age_secs");
    }
    if ts.saturating_sub(now_ms) > cfg.max_future_secs.saturating_mul(1000) {
        return Answer::done(Outcome::Stale, "Timestamp in the future");
    }
    let cert_url = match check_before_fetch(&msg) {
        Ok(u) => u,
        Err(e) => return Answer::done(Outcome::BadSignature, e.to_string()),
    };
    let version = msg.signature_version.as_deref().unwrap_or_default();
    if version.parse::<u8>().unwrap_or(0) < cfg.min_signature_version {
        return Answer::done(
            Outcome::BadSignature,
            format!(
                "SignatureVersion {version} refused (min_signature_version = {})",
                cfg.min_signature_version
            ),
        );
    }
    let cert = match st.inner.certs.get(&cert_url, now_ms).await {
        Ok(c) => c,
        Err(e) if e.is_temporary() => {
            return Answer::retry(Outcome::CertUnavailable, format!("{cert_url}: {e}"))
        }
        Err(e) => return Answer::done(Outcome::BadSignature, format!("{cert_url}: {e}")),
    };
    if let Err(e) = verify_with(&msg, &cert) {
        return Answer::done(Outcome::BadSignature, e.to_string());
    }
    // Only a certificate that verified a real signature is kept where forged
    // URLs cannot evict it.
    st.inner.certs.mark_proven(&cert_url, &cert, now_ms);
    match kind {
        MessageType::SubscriptionConfirmation => confirm(st, &msg).await,
        MessageType::UnsubscribeConfirmation => {
            Answer::done(Outcome::Unsubscribed, format!("unsubscribed from {topic}"))
        }
        MessageType::Notification => notification(st, &msg, now_ms).await,
    }
}

async fn confirm(st: &Ingest, msg: &SnsMessage) -> Answer {
    let raw = msg.subscribe_url.as_deref().unwrap_or_default();
    let url = match SnsUrl::parse(raw) {
        Ok(u) => u,
        Err(e) => return Answer::done(Outcome::Malformed, format!("SubscribeURL: {e}")),
    };
    match st.inner.confirmer.confirm(&url).await {
        Ok(()) => Answer::done(
            Outcome::SubscriptionConfirmed,
            format!(
                "subscribed to {}",
                msg.topic_arn.as_deref().unwrap_or_default()
            ),
        ),
        Err(e) => Answer::retry(Outcome::SubscriptionError, format!("SubscribeURL: {e}")),
    }
}

async fn notification(st: &Ingest, msg: &SnsMessage, now_ms: u64) -> Answer {
    let engine = &st.inner.engine;
    let message_id = msg.message_id.as_deref().unwrap_or_default();
    if !ses::is_valid_message_id(message_id) {
        return Answer::done(Outcome::Malformed, "MessageId has unexpected characters");
    }
    let event = match ses::parse(msg.message.as_deref().unwrap_or_default()) {
        Ok(e) => e,
        Err(e) => return Answer::done(Outcome::Malformed, e.to_string()),
    };
    let (recipients, source, content) = match event {
        SesEvent::Received {
            recipients,
            source,
            content,
        } => (recipients, source, content),
        SesEvent::Other(kind) => {
            return Answer::done(Outcome::Ignored, format!("SES notification type {kind}"))
        }
    };
    let mut ours: Vec<Recipient> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    // Quota is held per mailbox from here to the commit, as SMTP holds it
    // from RCPT: a recipient taken now is not refused as full later.
    let holds = engine.quota_holds();
    let cluster = st.inner.cluster.get().map(Arc::as_ref);
    for rcpt in &recipients {
        let resolved = match cluster {
            None => engine.resolve_held(rcpt, &holds),
            Some(cluster) => match resolve_in_cluster(cluster, engine, rcpt, &holds).await {
                Some(resolved) => resolved,
                // No live owner: nothing stored, SNS retries the whole message.
                None => {
                    return Answer::retry(
                        Outcome::StorageError,
                        format!("{rcpt}: the host that keeps this mailbox is unavailable"),
                    )
                }
            },
        };
        match resolved {
            // Other plus tags of one mailbox share its one stored copy.
            Ok(r) if ours.contains(&r) => {}
            Ok(r) => ours.push(r),
            Err(e) => refused.push(format!("{rcpt}: {e}")),
        }
    }
    if ours.is_empty() {
        return Answer::done(
            Outcome::NoLocalRecipient,
            format!("no local recipient ({})", refused.join("; ")),
        );
    }
    let raw = ses::with_received_line(
        &content,
        &st.inner.hostname,
        message_id,
        &uncorreo_mail::date::rfc5322_date(now_ms / 1000),
    );
    let delivery = Delivery {
        raw: raw.into(),
        envelope_from: source,
        recipients: ours,
        dedupe_key: Some(format!("sns:{message_id}")),
    };
    let mut answer = delivery_answer(
        message_id,
        uncorreo_hop::deliver(engine, cluster, delivery, holds).await,
    );
    if answer.outcome == Outcome::Delivered && !refused.is_empty() {
        // Said, never dropped silently: a full or unknown mailbox among the
        // recipients is named in the answer and the log.
        answer.detail = format!("{}; refused: {}", answer.detail, refused.join("; "));
    }
    answer
}

/// A recipient on a host of a cluster: resolved here, or by its owner;
/// `None` when no live host owns it.
async fn resolve_in_cluster(
    cluster: &uncorreo_hop::Cluster,
    engine: &uncorreo_engine::Engine,
    rcpt: &str,
    holds: &uncorreo_engine::QuotaHolds,
) -> Option<Result<Recipient, uncorreo_engine::ResolveError>> {
    match cluster.place(rcpt).await {
        uncorreo_hop::Placement::Local => Some(engine.resolve_held(rcpt, holds)),
        uncorreo_hop::Placement::Unavailable => None,
        uncorreo_hop::Placement::Remote(owner) => {
            match cluster.resolve_remote(rcpt, &owner).await {
                Err(uncorreo_hop::OwnerUnavailable) => None,
                Ok(Err(e)) => Some(Err(e)),
                Ok(Ok(())) => Some(
                    Recipient::parse(rcpt).map_err(|_| uncorreo_engine::ResolveError::BadAddress),
                ),
            }
        }
    }
}

/// What SNS is told about a delivery: a temporary storage failure is the one
/// case worth a retry (503); everything else is final (200).
fn delivery_answer(
    message_id: &str,
    result: Result<DeliveryOutcome, uncorreo_engine::DeliverError>,
) -> Answer {
    match result {
        Ok(DeliveryOutcome::Duplicate) => Answer::done(
            Outcome::Duplicate,
            format!("MessageId {message_id} seen before"),
        ),
        Ok(DeliveryOutcome::Delivered { stored, refused }) if stored.is_empty() => Answer::done(
            Outcome::NoLocalRecipient,
            format!(
                "every recipient refused at commit: {}",
                refused
                    .iter()
                    .map(|(r, e)| format!("{}: {e}", r.address))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
        Ok(DeliveryOutcome::Delivered { stored, .. }) => Answer::done(
            Outcome::Delivered,
            format!(
                "stored as {}",
                stored
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Err(e) if e.is_temporary() => Answer::retry(Outcome::StorageError, e.to_string()),
        Err(e @ uncorreo_engine::DeliverError::TooLarge { .. }) => {
            Answer::done(Outcome::Malformed, e.to_string())
        }
        Err(e) => Answer::done(Outcome::StorageError, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uncorreo_engine::{DeliverError, StorageError};

    #[test]
    fn only_temporary_storage_failures_ask_for_a_retry() {
        for e in [
            DeliverError::Saturated,
            DeliverError::DiskFull,
            DeliverError::Storage(StorageError::Poisoned),
            DeliverError::Storage(StorageError::Closed),
            DeliverError::Storage(StorageError::Io(std::io::Error::other("eio"))),
        ] {
            let a = delivery_answer("m", Err(e));
            assert_eq!((a.outcome, a.retry), (Outcome::StorageError, true));
        }
        let a = delivery_answer("m", Err(DeliverError::Storage(StorageError::Corrupt)));
        assert_eq!((a.outcome, a.retry), (Outcome::StorageError, false));
        let a = delivery_answer("m", Err(DeliverError::TooLarge { limit: 10 }));
        assert_eq!((a.outcome, a.retry), (Outcome::Malformed, false));
        let a = delivery_answer("m", Ok(DeliveryOutcome::Duplicate));
        assert_eq!((a.outcome, a.retry), (Outcome::Duplicate, false));
    }

    #[test]
    fn details_are_clipped_on_a_char_boundary() {
        let mut d = "é".repeat(MAX_DETAIL);
        clip(&mut d);
        assert!(d.len() <= MAX_DETAIL + '…'.len_utf8());
        assert!(d.ends_with('…'));
    }
}
