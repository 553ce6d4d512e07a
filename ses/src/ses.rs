//! The SES receipt carried in an SNS `Notification` (the SES "SNS action"):
//! who it is for (`receipt.recipients`), who sent it (`mail.source`) and the
//! raw message (`content`, base64 or UTF-8 per `receipt.action.encoding`).
//! Also builds the bytes we store: our `Received:` line + the raw message.

use base64::Engine as _;
use serde::Deserialize;

/// Most recipients one notification may name (SES itself allows 50 per message).
pub const MAX_RECIPIENTS: usize = 100;
/// Longest envelope sender we keep (RFC 5321 path limit).
pub const MAX_SOURCE_LEN: usize = 256;
/// Longest SNS `MessageId` we accept (real ones are 36-character UUIDs).
pub const MAX_MESSAGE_ID_LEN: usize = 100;

/// What an SES notification told us, ready for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SesEvent {
    /// An email, with its content.
    Received {
        /// Envelope recipients of this receipt rule (as SES wrote them).
        recipients: Vec<String>,
        /// Envelope sender; empty for the null sender.
        source: String,
        /// The raw message as SES received it.
        content: Vec<u8>,
    },
    /// Something we deliberately do not ingest (setup notification, bounces,
    /// other notification types), with its type for the log.
    Other(String),
}

/// Why the notification payload is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SesError {
    /// `Message` is not the JSON of an SES notification.
    #[error("Message is not an SES notification: {0}")]
    NotJson(String),
    /// A `Received` notification without `content` (the rule's action is not SNS,
    /// e.g. S3: the content is elsewhere and we do not fetch it).
    #[error("SES notification has no content (is the receipt action SNS?)")]
    NoContent,
    /// `content` is not valid for its declared encoding.
    #[error("SES content is not valid {0}")]
    BadContent(&'static str),
    /// `receipt.action.encoding` is neither BASE64 nor UTF8.
    #[error("unknown SES content encoding {0:?}")]
    UnknownEncoding(String),
    /// More than [`MAX_RECIPIENTS`] recipients.
    #[error("more than {MAX_RECIPIENTS} recipients")]
    TooManyRecipients,
    /// `mail.source` is over [`MAX_SOURCE_LEN`] or has control characters.
    #[error("mail.source is not a usable envelope sender")]
    BadSource,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    notification_type: Option<String>,
    // `eventType` is what SES event publishing uses instead; never ours.
    event_type: Option<String>,
    #[serde(default)]
    mail: Mail,
    #[serde(default)]
    receipt: Receipt,
    content: Option<String>,
}

#[derive(Deserialize, Default)]
struct Mail {
    #[serde(default)]
    source: String,
}

#[derive(Deserialize, Default)]
struct Receipt {
    #[serde(default)]
    recipients: Vec<String>,
    #[serde(default)]
    action: Action,
}

#[derive(Deserialize, Default)]
struct Action {
    encoding: Option<String>,
}

/// Parse the `Message` of a notification.
pub fn parse(message: &str) -> Result<SesEvent, SesError> {
    let n: Notification =
        serde_json::from_str(message).map_err(|e| SesError::NotJson(e.to_string()))?;
    let kind = n
        .notification_type
        .or(n.event_type)
        .unwrap_or_else(|| "(none)".to_owned());
    if kind != "Received" {
        return Ok(SesEvent::Other(kind));
    }
    let content = n.content.ok_or(SesError::NoContent)?;
    let content = match n.receipt.action.encoding.as_deref() {
        Some(e) if e.eq_ignore_ascii_case("BASE64") => {
            base64::engine::general_purpose::STANDARD
                // SES may wrap base64; whitespace is not content.
                .decode(
                    content
                        .bytes()
                        .filter(|b| !b.is_ascii_whitespace())
                        .collect::<Vec<u8>>(),
                )
                .map_err(|_| SesError::BadContent("base64"))?
        }
        None => content.into_bytes(),
        Some(e) if e.eq_ignore_ascii_case("UTF8") || e.eq_ignore_ascii_case("UTF-8") => {
            content.into_bytes()
        }
        Some(other) => return Err(SesError::UnknownEncoding(other.to_owned())),
    };
    if n.receipt.recipients.len() > MAX_RECIPIENTS {
        return Err(SesError::TooManyRecipients);
    }
    let source = n.mail.source;
    if source.len() > MAX_SOURCE_LEN || source.chars().any(char::is_control) {
        return Err(SesError::BadSource);
    }
    let source = if source == "<>" {
        String::new()
    } else {
        source
    };
    Ok(SesEvent::Received {
        recipients: n.receipt.recipients,
        source,
        content,
    })
}

/// True for an SNS `MessageId` safe to put in a header and a dedupe key.
pub fn is_valid_message_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_MESSAGE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `Received:` line + `content`, the bytes we store. The line ending of our
/// header follows the message's own first line, so a message stays uniformly
/// CRLF (the SMTP norm) or LF.
pub fn with_received_line(content: &[u8], hostname: &str, message_id: &str, date: &str) -> Vec<u8> {
    let eol: &[u8] = match content.iter().position(|&b| b == b'\n') {
        Some(i) if i == 0 || content.get(i - 1) != Some(&b'\r') => b"\n",
        _ => b"\r\n",
    };
    let line = format!(
        "Received: from amazonses.com by {hostname} (uncorreo) with SNS id {message_id}; {date}"
    );
    let mut out = Vec::with_capacity(line.len() + eol.len() + content.len());
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(eol);
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(encoding: Option<&str>, content: &str) -> String {
        let action = match encoding {
            Some(e) => format!(r#"{{"type":"SNS","topicArn":"arn:t","encoding":"{e}"}}"#),
            None => r#"{"type":"SNS","topicArn":"arn:t"}"#.to_owned(),
        };
        format!(
            r#"{{"notificationType":"Received","mail":{{"source":"a@b.test","destination":["x@y"]}},"receipt":{{"recipients":["box@uncorreo.test"],"action":{action}}},"content":{}}}"#,
            serde_json::to_string(content).unwrap()
        )
    }

    #[test]
    fn decodes_both_encodings() {
        let raw = "Subject: hi\r\n\r\nbody\r\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        for (enc, content) in [
            (Some("BASE64"), b64.as_str()),
            (Some("UTF8"), raw),
            (Some("UTF-8"), raw),
            (None, raw),
        ] {
            let got = parse(&received(enc, content)).unwrap();
            assert_eq!(
                got,
                SesEvent::Received {
                    recipients: vec!["box@uncorreo.test".to_owned()],
                    source: "a@b.test".to_owned(),
                    content: raw.as_bytes().to_vec(),
                },
                "{enc:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_payloads_with_reasons() {
        assert!(matches!(parse("nope"), Err(SesError::NotJson(_))));
        assert_eq!(
            parse(&received(Some("BASE64"), "!!!")),
            Err(SesError::BadContent("base64"))
        );
        assert_eq!(
            parse(&received(Some("EBCDIC"), "x")),
            Err(SesError::UnknownEncoding("EBCDIC".to_owned()))
        );
        assert_eq!(
            parse(r#"{"notificationType":"Received","receipt":{"recipients":[]}}"#),
            Err(SesError::NoContent)
        );
        let many: Vec<String> = (0..=MAX_RECIPIENTS).map(|i| format!("b{i}@x")).collect();
        let m = format!(
            r#"{{"notificationType":"Received","receipt":{{"recipients":{}}},"content":"x"}}"#,
            serde_json::to_string(&many).unwrap()
        );
        assert_eq!(parse(&m), Err(SesError::TooManyRecipients));
        assert_eq!(
            parse(r#"{"notificationType":"AMAZON_SES_SETUP_NOTIFICATION"}"#),
            Ok(SesEvent::Other("AMAZON_SES_SETUP_NOTIFICATION".to_owned()))
        );
    }

    #[test]
    fn received_line_follows_the_message_line_ending() {
        let crlf = with_received_line(b"A: b\r\n\r\nx", "h", "id", "D");
        assert_eq!(
            crlf,
            b"Received: from amazonses.com by h (uncorreo) with SNS id id; D\r\nA: b\r\n\r\nx"
        );
        let lf = with_received_line(b"A: b\n\nx", "h", "id", "D");
        assert!(lf.starts_with(
            b"Received: from amazonses.com by h (uncorreo) with SNS id id; D\nA: b\n"
        ));
    }

    #[test]
    fn message_ids_that_could_inject_headers_are_refused() {
        assert!(is_valid_message_id("22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"));
        assert!(!is_valid_message_id("x\r\nBcc: evil@x"));
        assert!(!is_valid_message_id(""));
        assert!(!is_valid_message_id(&"a".repeat(MAX_MESSAGE_ID_LEN + 1)));
    }
}
