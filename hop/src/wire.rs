//! What travels over the hop: paths, request and answer bodies.
//!
//! A delivery's body is a 4-byte big-endian length, that many bytes of JSON
//! envelope, then the raw message exactly as the accepting host will have it
//! stored (its `Received:` line included), so the message is never
//! re-encoded. Everything else is JSON.

use bytes::{Buf, Bytes};
use serde::{Deserialize, Serialize};
use uncorreo_engine::{Recipient, ResolveError};

/// Checks recipients on the owner (SMTP RCPT at another host).
pub const RESOLVE_PATH: &str = "/internal/v1/resolve";
/// Stores a delivery on the owner.
pub const DELIVER_PATH: &str = "/internal/v1/deliver";
/// Runs a public API request on the owner (reads, sends, deletes,
/// creation of a mailbox in a partition it owns), with the caller's
/// credential, which the owner checks.
pub const HTTP_PATH: &str = "/internal/v1/http";

/// A member-only read for a listing that spans hosts (SCALE.md, "Reads"):
/// runs one of [`MEMBER_READS`] on this host over the partitions it serves
/// now, with the caller's credential. It names no mailbox, so no partition
/// is checked or admitted, and it is never a write.
pub const MEMBER_PATH: &str = "/internal/v1/member";

/// The only paths a member-only read may run (without the query): the
/// caller's mailboxes, and the Mailpit API's message list, search, counts
/// (`info`) and tags.
pub const MEMBER_READS: &[&str] = &[
    "/api/v1/mailboxes",
    "/mailpit/api/v1/messages",
    "/mailpit/api/v1/search",
    "/mailpit/api/v1/info",
    "/mailpit/api/v1/tags",
];

/// Copies one chunk of a mailbox of a partition moving here (a handover):
/// answered once the copy is durable; a repeat writes nothing.
pub const COPY_PATH: &str = "/internal/v1/handover/copy";
/// Tells the destination of a handover that the partition's home is it now.
pub const ADOPT_PATH: &str = "/internal/v1/handover/adopt";
/// Who answers here: the node id (a leaving host checks its destination).
pub const NODE_PATH: &str = "/internal/v1/node";

/// The head in front of a copied chunk (`ExportChunk::encode`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyHead {
    /// The destination node the source means.
    pub node: String,
    /// The partition moving.
    pub partition: u16,
}

/// `POST /internal/v1/handover/adopt`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdoptRequest {
    /// The destination node the source means.
    pub node: String,
    /// The partition whose home it is now.
    pub partition: u16,
}

/// The answer to `POST /internal/v1/node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeAnswer {
    /// The node id of the host that answered.
    pub node: String,
}

/// The envelope in front of a proxied API request's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpEnvelope {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query as the client sent them.
    pub path: String,
    /// End-to-end request headers (credential included).
    pub headers: Vec<(String, String)>,
    /// The mailbox address the request is about (its partition's owner
    /// checks that it serves it).
    pub address: String,
    /// The partition the request is about when no address names it (a
    /// Mailpit request routed by a message id or a session token's
    /// prefix); when present the owner checks this one instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u16>,
    /// The node the accepting host believes owns it.
    pub node: String,
    /// The client's address, as the accepting host saw it (for the
    /// owner's per-client limits).
    pub client: std::net::IpAddr,
}

/// `POST /internal/v1/member`: always a `GET`, no body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberEnvelope {
    /// Path and query; the path is one of [`MEMBER_READS`].
    pub path: String,
    /// End-to-end request headers (credential included).
    pub headers: Vec<(String, String)>,
    /// The node the asking host means.
    pub node: String,
    /// The client's address, as the asking host saw it.
    pub client: std::net::IpAddr,
}

/// The envelope in front of a member-only read's answer body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberAnswerHead {
    /// The member's status.
    pub status: u16,
    /// End-to-end answer headers.
    pub headers: Vec<(String, String)>,
    /// The partitions the answer covers: those the member served when it
    /// ran the read (the asking host checks that every home partition is
    /// covered once).
    pub served: Vec<u16>,
}

/// The envelope in front of a proxied API answer's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpAnswerHead {
    /// The owner's status.
    pub status: u16,
    /// End-to-end answer headers.
    pub headers: Vec<(String, String)>,
}

/// Why the owner refuses a recipient; the wire form of [`ResolveError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Not one of the cluster's domains.
    ForeignDomain,
    /// No live mailbox there.
    NoSuchMailbox,
    /// The mailbox is at its maximum.
    MailboxFull,
    /// Not an address.
    BadAddress,
    /// The mailbox is not the sending user's (an `AUTH` session in `keys`
    /// mode may send only to its user's mailboxes).
    NotYours,
}

impl From<ResolveError> for Refusal {
    fn from(error: ResolveError) -> Refusal {
        match error {
            ResolveError::ForeignDomain => Refusal::ForeignDomain,
            ResolveError::MailboxFull => Refusal::MailboxFull,
            ResolveError::BadAddress => Refusal::BadAddress,
            _ => Refusal::NoSuchMailbox,
        }
    }
}

impl From<Refusal> for ResolveError {
    fn from(refusal: Refusal) -> ResolveError {
        match refusal {
            Refusal::ForeignDomain => ResolveError::ForeignDomain,
            // Only asked for with a sender; without one the owner never
            // answers it, and for a stranger the mailbox is as good as absent.
            Refusal::NoSuchMailbox | Refusal::NotYours => ResolveError::NoSuchMailbox,
            Refusal::MailboxFull => ResolveError::MailboxFull,
            Refusal::BadAddress => ResolveError::BadAddress,
        }
    }
}

/// `POST /internal/v1/resolve`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResolveRequest {
    /// The recipient as the sender wrote it.
    pub rcpt: String,
    /// The node the asking host believes owns it.
    pub node: String,
    /// The user an `AUTH` session in `keys` mode sends as: the owner also
    /// refuses ([`Refusal::NotYours`]) a mailbox that user does not own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_user: Option<u64>,
}

/// The answer to a resolve: `None` when the recipient is taken.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResolveAnswer {
    /// Why not, if not.
    pub refused: Option<Refusal>,
}

/// The envelope in front of a forwarded message.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeliverEnvelope {
    /// Envelope sender (empty for `<>`).
    pub from: String,
    /// Recipients on this owner, as written (`box+tag@domain`).
    pub rcpts: Vec<String>,
    /// The delivery key (hex of 32 bytes): the same on every retry.
    pub key: String,
    /// The node the accepting host believes owns these recipients.
    pub node: String,
}

/// The answer to a delivery, sent only once the owner's copies are durable.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeliverAnswer {
    /// Message ids stored (one per mailbox).
    pub stored: Vec<String>,
    /// Recipients refused at commit, with why.
    pub refused: Vec<(String, Refusal)>,
}

/// A recipient as the sender wrote it.
pub fn rcpt_text(rcpt: &Recipient) -> String {
    match &rcpt.plus_tag {
        Some(tag) => {
            let address = rcpt.address.to_string();
            match address.rsplit_once('@') {
                Some((local, domain)) => format!("{local}+{tag}@{domain}"),
                None => address,
            }
        }
        None => rcpt.address.to_string(),
    }
}

/// Frames a delivery.
pub fn encode_deliver(envelope: &DeliverEnvelope, raw: &[u8]) -> Vec<u8> {
    frame(envelope, raw)
}

/// Splits a delivery's body; `None` when it is not one.
pub fn decode_deliver(body: Bytes) -> Option<(DeliverEnvelope, Bytes)> {
    unframe(body)
}

/// A JSON head, then bytes as they are (4-byte big-endian head length).
pub fn frame(head: &impl Serialize, rest: &[u8]) -> Vec<u8> {
    // Serialising plain strings and numbers cannot fail.
    let json = serde_json::to_vec(head).unwrap_or_default();
    let mut body = Vec::with_capacity(4 + json.len() + rest.len());
    body.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_be_bytes());
    body.extend_from_slice(&json);
    body.extend_from_slice(rest);
    body
}

/// The inverse of [`frame`]; `None` when `body` is not one.
pub fn unframe<T: serde::de::DeserializeOwned>(mut body: Bytes) -> Option<(T, Bytes)> {
    if body.len() < 4 {
        return None;
    }
    let len = usize::try_from(body.get_u32()).ok()?;
    if len > body.len() {
        return None;
    }
    let json = body.split_to(len);
    let envelope = serde_json::from_slice(&json).ok()?;
    Some((envelope, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_frames_and_unframes() {
        let envelope = DeliverEnvelope {
            from: "a@b".to_owned(),
            rcpts: vec!["x+t@y".to_owned()],
            key: "00".to_owned(),
            node: "n".to_owned(),
        };
        let body = encode_deliver(&envelope, b"Received: x\r\n\r\nhi");
        let (back, raw) = decode_deliver(Bytes::from(body)).expect("decodes");
        assert_eq!(back.rcpts, envelope.rcpts);
        assert_eq!(&raw[..], b"Received: x\r\n\r\nhi");
        assert!(decode_deliver(Bytes::from_static(b"\0\0\0\x09{}")).is_none());
        assert!(decode_deliver(Bytes::from_static(b"\0")).is_none());
    }

    #[test]
    fn a_tagged_recipient_is_written_back_as_sent() {
        let rcpt = Recipient::parse("box+Tag@example.test").expect("parses");
        assert_eq!(rcpt_text(&rcpt), "box+Tag@example.test");
    }
}
