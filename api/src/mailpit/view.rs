//! What the Mailpit API shows of a message, in Mailpit's JSON field names
//! and shapes (`MessageSummary`, `Message`, `Address`, `Attachment` of its
//! swagger.json), mapped from `uncorreo_mail::view::structure`. Parsing runs
//! on the blocking pool behind `catch_unwind` and a size cap
//! ([`crate::parse::guarded`]); the raw bytes stay the source of truth.
//!
//! Our additions (`Codes`, `Links`, `Mailbox`) are extra fields; no Mailpit
//! field is renamed or retyped.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha1::Digest as _;
use uncorreo_engine::MessageMeta;
use uncorreo_mail::view::{self, AddrView, PartView};

use super::search::Doc;

/// Characters of text in a summary's `Snippet` (Mailpit: 250).
pub const SNIPPET_CHARS: usize = 250;
/// Most `X-Tags` tags taken from one message.
pub const MAX_HEADER_TAGS: usize = 32;

/// Mailpit's `Address`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Addr {
    /// Display name (may be empty).
    pub name: String,
    /// `local@domain`.
    pub address: String,
}

/// Mailpit's attachment `Checksums`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Checksums {
    /// Hex MD5 of the decoded content.
    #[serde(rename = "MD5")]
    pub md5: String,
    /// Hex SHA-1.
    #[serde(rename = "SHA1")]
    pub sha1: String,
    /// Hex SHA-256.
    #[serde(rename = "SHA256")]
    pub sha256: String,
}

/// Mailpit's `Attachment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Part {
    /// For `…/part/{PartID}`.
    #[serde(rename = "PartID")]
    pub part_id: String,
    /// File name (may be empty).
    pub file_name: String,
    /// `type/subtype`.
    pub content_type: String,
    /// Content-ID without angle brackets (may be empty).
    #[serde(rename = "ContentID")]
    pub content_id: String,
    /// Decoded size.
    pub size: u64,
    /// Checksums of the decoded content.
    pub checksums: Checksums,
}

/// Mailpit's `ListUnsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ListUnsubscribe {
    /// The `List-Unsubscribe` value.
    pub header: String,
    /// The `List-Unsubscribe-Post` value.
    pub header_post: String,
    /// `<…>` entries of the header.
    pub links: Vec<String>,
    /// Problems found (empty when none).
    pub errors: String,
}

/// Everything parsed out of the raw bytes, once per message (cached).
#[derive(Debug, Clone, Default)]
pub struct Extracted {
    /// Message-ID without angle brackets.
    pub message_id: String,
    /// From.
    pub from: Option<Addr>,
    /// To.
    pub to: Vec<Addr>,
    /// Cc.
    pub cc: Vec<Addr>,
    /// Bcc (rarely present in stored mail).
    pub bcc: Vec<Addr>,
    /// Reply-To.
    pub reply_to: Vec<Addr>,
    /// Subject, decoded.
    pub subject: String,
    /// `Date:` as RFC 3339.
    pub date: Option<String>,
    /// First text body (empty if none).
    pub text: String,
    /// First HTML body (empty if none).
    pub html: String,
    /// Headers as written (name, unfolded value), in order.
    pub headers: Vec<(String, String)>,
    /// Attachments.
    pub attachments: Vec<Part>,
    /// Inline parts (with a Content-ID and not marked `attachment`).
    pub inline: Vec<Part>,
    /// Tags from `X-Tags`.
    pub header_tags: Vec<String>,
    /// List-Unsubscribe summary.
    pub list_unsubscribe: ListUnsubscribe,
}

/// Mailpit's `MessageSummary` (listings, search, events).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Summary {
    /// Our message id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Message-ID header.
    #[serde(rename = "MessageID")]
    pub message_id: String,
    /// Read flag.
    pub read: bool,
    /// From.
    pub from: Option<Addr>,
    /// To.
    pub to: Vec<Addr>,
    /// Cc.
    pub cc: Vec<Addr>,
    /// Bcc.
    pub bcc: Vec<Addr>,
    /// Reply-To.
    pub reply_to: Vec<Addr>,
    /// Subject.
    pub subject: String,
    /// Received (RFC 3339).
    pub created: String,
    /// Username used to send it (always empty here).
    pub username: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Raw size.
    pub size: u64,
    /// Number of attachments.
    pub attachments: u64,
    /// Up to 250 characters of text.
    pub snippet: String,
    /// Ours: one-time codes found.
    pub codes: Vec<String>,
    /// Ours: verification / sign-in links found.
    pub links: Vec<String>,
    /// Ours: the mailbox it is in.
    pub mailbox: String,
}

/// Mailpit's `Message`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Message {
    /// Our message id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Message-ID header.
    #[serde(rename = "MessageID")]
    pub message_id: String,
    /// From.
    pub from: Option<Addr>,
    /// To.
    pub to: Vec<Addr>,
    /// Cc.
    pub cc: Vec<Addr>,
    /// Bcc.
    pub bcc: Vec<Addr>,
    /// Reply-To.
    pub reply_to: Vec<Addr>,
    /// Envelope sender.
    pub return_path: String,
    /// Subject.
    pub subject: String,
    /// List-Unsubscribe.
    pub list_unsubscribe: ListUnsubscribe,
    /// `Date:` or else the receive time (RFC 3339).
    pub date: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Username (always empty here).
    pub username: String,
    /// Text body.
    pub text: String,
    /// HTML body (untrusted).
    #[serde(rename = "HTML")]
    pub html: String,
    /// Raw size.
    pub size: u64,
    /// Inline parts.
    pub inline: Vec<Part>,
    /// Attachments.
    pub attachments: Vec<Part>,
    /// Ours: one-time codes found.
    pub codes: Vec<String>,
    /// Ours: verification / sign-in links found.
    pub links: Vec<String>,
    /// Ours: the mailbox it is in.
    pub mailbox: String,
}

/// Read flag and tags of a message as the Mailpit API sees them now.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// Read.
    pub read: bool,
    /// Tags.
    pub tags: Vec<String>,
}

/// Tags a message has before anyone sets them: its plus tags and `X-Tags`.
pub fn default_tags(meta: &MessageMeta, x: &Extracted) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for t in meta.plus_tags.iter().chain(x.header_tags.iter()) {
        if !tags.iter().any(|have| have.eq_ignore_ascii_case(t)) {
            tags.push(t.clone());
        }
    }
    tags
}

/// The summary of a message.
pub fn summary(meta: &MessageMeta, address: &str, x: &Extracted, marks: &Flags) -> Summary {
    Summary {
        id: meta.id.to_string(),
        message_id: x.message_id.clone(),
        read: marks.read,
        from: x.from.clone(),
        to: x.to.clone(),
        cc: x.cc.clone(),
        bcc: x.bcc.clone(),
        reply_to: x.reply_to.clone(),
        subject: x.subject.clone(),
        created: uncorreo_mail::date::rfc3339_millis(meta.received_at_ms),
        username: String::new(),
        tags: marks.tags.clone(),
        size: u64::from(meta.size),
        attachments: x.attachments.len() as u64,
        snippet: snippet(&x.text),
        codes: meta.summary.codes.clone(),
        links: meta.summary.links.clone(),
        mailbox: address.to_owned(),
    }
}

/// The full message view.
pub fn message(meta: &MessageMeta, address: &str, x: &Extracted, marks: &Flags) -> Message {
    Message {
        id: meta.id.to_string(),
        message_id: x.message_id.clone(),
        from: x.from.clone(),
        to: x.to.clone(),
        cc: x.cc.clone(),
        bcc: x.bcc.clone(),
        reply_to: x.reply_to.clone(),
        return_path: meta.envelope_from.clone(),
        subject: x.subject.clone(),
        list_unsubscribe: x.list_unsubscribe.clone(),
        date: x
            .date
            .clone()
            .unwrap_or_else(|| uncorreo_mail::date::rfc3339_millis(meta.received_at_ms)),
        tags: marks.tags.clone(),
        username: String::new(),
        text: x.text.clone(),
        html: x.html.clone(),
        size: u64::from(meta.size),
        inline: x.inline.clone(),
        attachments: x.attachments.clone(),
        codes: meta.summary.codes.clone(),
        links: meta.summary.links.clone(),
        mailbox: address.to_owned(),
    }
}

/// What a search sees of a message.
pub fn doc(meta: &MessageMeta, x: &Extracted, marks: &Flags) -> Doc {
    let list = |v: &[Addr]| {
        v.iter()
            .map(|a| format!("{} <{}>", a.name, a.address).to_lowercase())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let from = list(x.from.as_slice());
    let (to, cc, bcc, reply_to) = (list(&x.to), list(&x.cc), list(&x.bcc), list(&x.reply_to));
    let subject = x.subject.to_lowercase();
    let mut text = [subject.as_str(), &from, &to, &cc, &bcc, &reply_to].join(" ");
    text.push(' ');
    text.push_str(&x.text.to_lowercase());
    text.push(' ');
    text.push_str(&x.message_id.to_lowercase());
    for p in x.attachments.iter().chain(&x.inline) {
        text.push(' ');
        text.push_str(&p.file_name.to_lowercase());
    }
    Doc {
        from,
        to,
        cc,
        bcc,
        reply_to,
        subject,
        message_id: x.message_id.to_lowercase(),
        tags: marks.tags.clone(),
        read: marks.read,
        attachments: x.attachments.len(),
        inline: x.inline.len(),
        received_ms: meta.received_at_ms,
        size: u64::from(meta.size),
        text,
    }
}

fn snippet(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() >= SNIPPET_CHARS {
            break;
        }
    }
    out.chars().take(SNIPPET_CHARS).collect()
}

/// Mailpit's fields of `raw` (synchronously; callers go through
/// [`crate::parse::guarded`]), from the one structural parse of
/// `uncorreo_mail::view`.
pub fn extract(raw: &[u8]) -> Extracted {
    let s = view::structure(raw);
    let addrs = |list: Vec<AddrView>| -> Vec<Addr> {
        list.into_iter()
            .map(|a| Addr {
                name: a.name.unwrap_or_default(),
                address: a.address.unwrap_or_default(),
            })
            .collect()
    };
    let headers: Vec<(String, String)> = s.headers.into_iter().map(|h| (h.name, h.value)).collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let header_tags = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("X-Tags"))
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|t| t.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty() && t.len() <= 64)
        .take(MAX_HEADER_TAGS)
        .collect();
    let unsubscribe = header("List-Unsubscribe");
    let links = unsubscribe
        .split(',')
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix('<')?.strip_suffix('>').map(str::to_owned)
        })
        .collect();
    let mut attachments = Vec::new();
    let mut inline = Vec::new();
    for p in &s.parts {
        if !p.content_id.is_empty() && !p.marked_attachment {
            inline.push(part_info(p));
        } else {
            attachments.push(part_info(p));
        }
    }
    Extracted {
        message_id: s.message_id.unwrap_or_default(),
        from: addrs(s.from).into_iter().next(),
        to: addrs(s.to),
        cc: addrs(s.cc),
        bcc: addrs(s.bcc),
        reply_to: addrs(s.reply_to),
        subject: s.subject.unwrap_or_default(),
        date: s.date,
        text: s.text.unwrap_or_default(),
        html: s.html.unwrap_or_default(),
        list_unsubscribe: ListUnsubscribe {
            header: unsubscribe,
            header_post: header("List-Unsubscribe-Post"),
            links,
            errors: String::new(),
        },
        headers,
        attachments,
        inline,
        header_tags,
    }
}

fn part_info(part: &PartView) -> Part {
    let bytes = &part.contents[..];
    Part {
        part_id: part.part_id.to_string(),
        file_name: part.filename.clone().unwrap_or_default(),
        content_type: part.content_type.clone(),
        content_id: part.content_id.clone(),
        size: bytes.len() as u64,
        checksums: Checksums {
            md5: format!("{:x}", md5::compute(bytes)),
            sha1: hex(&sha1::Sha1::digest(bytes)),
            sha256: hex(&sha2::Sha256::digest(bytes)),
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A part's decoded bytes, content type and file name; only parts listed
/// as attachments or inline are served.
pub fn part(raw: &[u8], part_id: &str) -> Option<(Bytes, String, String)> {
    let part = view::part_by_id(raw, part_id.parse().ok()?)?;
    Some((
        part.bytes,
        part.content_type,
        part.filename.unwrap_or_default(),
    ))
}

/// A header name as Go's `textproto` canonicalizes it (what Mailpit's
/// `/headers` keys look like): `message-id` → `Message-Id`.
pub fn canonical_header_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if upper {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: Shop <noreply@shop.example>\r\nTo: Ana <ana@uncorreo.test>\r\nReply-To: help@shop.example\r\nSubject: Hi\r\nMessage-ID: <m1@shop.example>\r\nX-Tags: promo, Weekly\r\nList-Unsubscribe: <mailto:u@shop.example>, <https://shop.example/u>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello   there\r\n--b\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\nContent-Disposition: inline\r\n\r\nPNG\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n\r\nPDF\r\n--b--\r\n";

    #[test]
    fn extracts_mailpit_fields() {
        let x = extract(MSG);
        assert_eq!(x.message_id, "m1@shop.example");
        assert_eq!(x.from.as_ref().unwrap().name, "Shop");
        assert_eq!(x.reply_to[0].address, "help@shop.example");
        assert_eq!(x.header_tags, ["promo", "Weekly"]);
        assert_eq!(x.list_unsubscribe.links.len(), 2);
        assert_eq!(x.inline.len(), 1);
        assert_eq!(x.inline[0].content_id, "logo");
        assert_eq!(x.attachments.len(), 1);
        assert_eq!(x.attachments[0].file_name, "a.pdf");
        let sums = &x.attachments[0].checksums;
        assert_eq!(sums.md5, "bcd1b68617759b1dfcff0403a6b5a8d1");
        assert_eq!(sums.sha1, "d613d88cb2d86f484f6f82d44ac1fc60722abe20");
        assert_eq!(
            sums.sha256,
            "1d393b0081b632c54654eb08c345ff76b92ae4efe0768b4c0f64b9ebbe920492"
        );
        let (bytes, ct, name) = part(MSG, &x.attachments[0].part_id).unwrap();
        assert_eq!(
            (&bytes[..], ct.as_str(), name.as_str()),
            (&b"PDF"[..], "application/pdf", "a.pdf")
        );
        assert!(
            part(MSG, "0").is_none(),
            "the message itself is not a part to serve"
        );
        assert_eq!(snippet(&x.text), "hello there");
    }

    #[test]
    fn header_names_are_canonical_like_go() {
        assert_eq!(canonical_header_name("message-id"), "Message-Id");
        assert_eq!(canonical_header_name("X-TAGS"), "X-Tags");
        assert_eq!(canonical_header_name("subject"), "Subject");
    }
}
