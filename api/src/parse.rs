//! The parsed view of a stored message for HTTP: `uncorreo_mail::view` run on
//! the blocking pool (not on a core's event loop), behind `catch_unwind` and a
//! size cap, with failures answered as problem types. The raw bytes stay the
//! source of truth.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use uncorreo_mail::view;
pub use uncorreo_mail::view::{
    content_disposition, AddrView, Attachment, AttachmentView, HeaderView, Parsed,
    MAX_FILENAME_CHARS, MAX_HEADERS,
};

use crate::problem::{Kind, Problem};

/// Why a stored message has no parsed view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Above `limits.parse_max_bytes`.
    #[error("message too large to parse; read it from /raw")]
    TooLarge,
    /// The parser panicked.
    #[error("message could not be parsed; read it from /raw")]
    Unparseable,
}

/// Run `f` over `raw` on the blocking pool behind `catch_unwind`, refusing
/// messages above `max_bytes`: the one guard of every parsed view (REST,
/// MCP, Mailpit).
pub async fn guarded<T: Send + 'static>(
    raw: Bytes,
    max_bytes: usize,
    f: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Result<T, ParseError> {
    if raw.len() > max_bytes {
        metrics::counter!(uncorreo_metric_names::MESSAGE_PARSE_FAILURES_TOTAL, "reason" => "too_large")
            .increment(1);
        return Err(ParseError::TooLarge);
    }
    let joined =
        tokio::task::spawn_blocking(move || catch_unwind(AssertUnwindSafe(|| f(&raw)))).await;
    match joined {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) | Err(_) => {
            metrics::counter!(uncorreo_metric_names::MESSAGE_PARSE_FAILURES_TOTAL, "reason" => "panic")
                .increment(1);
            tracing::warn!("the mail parser panicked on a stored message");
            Err(ParseError::Unparseable)
        }
    }
}

/// [`guarded`] for REST: failures as problems, `None` as not-found.
async fn guarded_problem<T: Send + 'static>(
    raw: Bytes,
    max_bytes: usize,
    f: impl FnOnce(&[u8]) -> Option<T> + Send + 'static,
) -> Result<T, Problem> {
    match guarded(raw, max_bytes, f).await {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(Problem::not_found()),
        Err(ParseError::TooLarge) => Err(Problem::new(
            Kind::MessageTooLargeToParse,
            format!("messages above {max_bytes} bytes are not parsed; read them from …/raw"),
        )),
        Err(ParseError::Unparseable) => Err(Problem::new(
            Kind::Unparseable,
            "the message could not be parsed; read it from …/raw",
        )),
    }
}

/// The parsed view of `raw`.
pub async fn parse(raw: Bytes, max_bytes: usize) -> Result<Parsed, Problem> {
    guarded_problem(raw, max_bytes, |raw| Some(view::parse(raw))).await
}

/// Attachment `index` of `raw`, decoded; `404` if there is no such attachment.
pub async fn attachment(raw: Bytes, max_bytes: usize, index: usize) -> Result<Attachment, Problem> {
    guarded_problem(raw, max_bytes, move |raw| view::attachment(raw, index)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: Ana <ana@example.com>\r\nSubject: Hi\r\n\r\nhello\r\n";

    #[tokio::test]
    async fn oversize_messages_are_refused_with_their_problem_type() {
        let e = parse(Bytes::from_static(MSG), 10).await.unwrap_err();
        assert_eq!(e.kind, Kind::MessageTooLargeToParse);
    }
}
