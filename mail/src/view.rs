//! The parsed view of a stored message, derived from its raw bytes with
//! mail-parser: headers as written, decoded addresses, subject and date, the
//! first text and HTML bodies, and the attachments. Pure and synchronous;
//! callers cap the input size and run it off the core threads behind
//! `catch_unwind`, because mail parsers have panicked on hostile input.

use bytes::Bytes;
use mail_parser::{MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};

/// Most headers listed in the parsed view (the raw message has them all).
pub const MAX_HEADERS: usize = 1000;
/// Longest filename reported or sent in `Content-Disposition`, in characters.
pub const MAX_FILENAME_CHARS: usize = 200;

/// One header as written (value unfolded, not decoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeaderView {
    /// Field name as written.
    pub name: String,
    /// Value as written, folding removed.
    pub value: String,
}

/// One mailbox of an address header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddrView {
    /// Display name, decoded.
    pub name: Option<String>,
    /// `local@domain`.
    pub address: Option<String>,
}

/// An attachment as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttachmentView {
    /// Position, for `…/attachments/{index}`.
    pub index: usize,
    /// Filename as the sender gave it (decoded), if any.
    pub filename: Option<String>,
    /// `type/subtype`.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: usize,
}

/// Everything derived from the raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Parsed {
    /// Headers in order.
    pub headers: Vec<HeaderView>,
    /// `From:`.
    pub from: Vec<AddrView>,
    /// `To:`.
    pub to: Vec<AddrView>,
    /// `Cc:`.
    pub cc: Vec<AddrView>,
    /// `Subject:` decoded.
    pub subject: Option<String>,
    /// `Date:` as RFC 3339.
    pub date: Option<String>,
    /// First text body (converted from HTML when there is only HTML).
    pub text: Option<String>,
    /// First HTML body (converted from text when there is only text). Untrusted: render sandboxed.
    pub html: Option<String>,
    /// Attachments.
    pub attachments: Vec<AttachmentView>,
    /// Every link target in the bodies in order of appearance, classified by
    /// purpose (`verify`, `reset`, `sign_in`, `invite`, `unsubscribe`,
    /// `tracking_pixel`, `image`, `social`, `other`); URLs exactly as written,
    /// tracking redirects not followed.
    #[serde(default)]
    pub link_details: Vec<crate::extract::Link>,
    /// One-time codes best first, each as typed (`code`) and as written (`original`).
    #[serde(default)]
    pub code_details: Vec<crate::extract::Code>,
    /// URLs of the action links, best first (what the summary's `links` holds).
    #[serde(skip)]
    pub action_links: Vec<String>,
}

/// Decoded attachment bytes and how to label them.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Decoded bytes.
    pub bytes: Bytes,
    /// Sanitized `type/subtype` (`application/octet-stream` if odd).
    pub content_type: String,
    /// Sanitized filename, if any.
    pub filename: Option<String>,
}

/// The parsed view of `raw`. No size cap and no unwind guard: the caller adds both.
pub fn parse(raw: &[u8]) -> Parsed {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Parsed::default();
    };
    let headers = headers(&msg, raw);
    let addrs = |a| addresses(a, usize::MAX);
    let attachments = msg
        .attachments()
        .enumerate()
        .map(|(index, part)| AttachmentView {
            index,
            filename: part.attachment_name().map(clip_filename),
            content_type: content_type_of(part),
            size: part.contents().len(),
        })
        .collect();
    let extraction = crate::extract::extract_parsed(&msg);
    Parsed {
        headers,
        from: addrs(msg.from()),
        to: addrs(msg.to()),
        cc: addrs(msg.cc()),
        subject: msg.subject().map(str::to_owned),
        date: msg.date().map(|d| d.to_rfc3339()),
        text: msg.body_text(0).map(|t| t.into_owned()),
        html: msg.body_html(0).map(|t| t.into_owned()),
        attachments,
        code_details: extraction.codes,
        link_details: extraction.links,
        action_links: extraction.action_links,
    }
}

/// Attachment `index` of `raw`, decoded; `None` if there is no such attachment.
pub fn attachment(raw: &[u8], index: usize) -> Option<Attachment> {
    let msg = MessageParser::default().parse(raw)?;
    let part = msg.attachments().nth(index)?;
    Some(Attachment {
        bytes: Bytes::copy_from_slice(part.contents()),
        content_type: content_type_of(part),
        filename: part.attachment_name().map(clip_filename),
    })
}

/// Most addresses kept per address header, and most parts listed, in a
/// [`Structure`].
pub const MAX_STRUCTURE_ITEMS: usize = 256;

/// A part a client may fetch on its own: an attachment, or an inline part
/// (one with a Content-ID, such as an image the HTML shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartView {
    /// mail-parser's part number, stable for the same bytes: the id of
    /// [`part_by_id`].
    pub part_id: u32,
    /// Filename as the sender gave it (decoded, path and control characters
    /// removed, clipped), if any.
    pub filename: Option<String>,
    /// Sanitized `type/subtype`.
    pub content_type: String,
    /// Content-ID without angle brackets (empty if none).
    pub content_id: String,
    /// `Content-Disposition: attachment` was given.
    pub marked_attachment: bool,
    /// The decoded bytes.
    pub contents: Bytes,
}

/// The message's structure, for clients that show more than [`Parsed`]
/// (the Mailpit-compatible API): every address header, Message-ID, and the
/// parts with their Content-IDs and decoded bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Structure {
    /// `Message-ID:` without angle brackets.
    pub message_id: Option<String>,
    /// `From:`.
    pub from: Vec<AddrView>,
    /// `To:`.
    pub to: Vec<AddrView>,
    /// `Cc:`.
    pub cc: Vec<AddrView>,
    /// `Bcc:` (rare in received mail).
    pub bcc: Vec<AddrView>,
    /// `Reply-To:`.
    pub reply_to: Vec<AddrView>,
    /// `Subject:` decoded.
    pub subject: Option<String>,
    /// `Date:` as RFC 3339.
    pub date: Option<String>,
    /// First text body (converted from HTML when there is only HTML).
    pub text: Option<String>,
    /// First HTML body, only when the message has one (never converted from text).
    pub html: Option<String>,
    /// Headers in order (at most [`MAX_HEADERS`]).
    pub headers: Vec<HeaderView>,
    /// Attachments and inline parts in order (at most [`MAX_STRUCTURE_ITEMS`]).
    pub parts: Vec<PartView>,
}

/// The structure of `raw`. No size cap and no unwind guard: the caller adds both.
pub fn structure(raw: &[u8]) -> Structure {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Structure::default();
    };
    let parts = msg
        .attachments
        .iter()
        .take(MAX_STRUCTURE_ITEMS)
        .filter_map(|&part_id| {
            let part = msg.part(part_id)?;
            Some(PartView {
                part_id,
                filename: part.attachment_name().map(clip_filename),
                content_type: content_type_of(part),
                content_id: part
                    .content_id()
                    .map(|c| c.trim_matches(['<', '>']).to_owned())
                    .unwrap_or_default(),
                marked_attachment: part
                    .content_disposition()
                    .is_some_and(|d| d.is_attachment()),
                contents: Bytes::copy_from_slice(part.contents()),
            })
        })
        .collect();
    Structure {
        message_id: msg.message_id().map(str::to_owned),
        from: addresses(msg.from(), MAX_STRUCTURE_ITEMS),
        to: addresses(msg.to(), MAX_STRUCTURE_ITEMS),
        cc: addresses(msg.cc(), MAX_STRUCTURE_ITEMS),
        bcc: addresses(msg.bcc(), MAX_STRUCTURE_ITEMS),
        reply_to: addresses(msg.reply_to(), MAX_STRUCTURE_ITEMS),
        subject: msg.subject().map(str::to_owned),
        date: msg.date().map(|d| d.to_rfc3339()),
        text: msg.body_text(0).map(|t| t.into_owned()),
        // mail-parser lists a text part as the HTML body too (converting it
        // on read); only a real text/html part counts here.
        html: msg
            .html_part(0)
            .filter(|p| matches!(p.body, mail_parser::PartType::Html(_)))
            .and_then(|_| msg.body_html(0))
            .map(|t| t.into_owned()),
        headers: headers(&msg, raw),
        parts,
    }
}

/// Part `part_id` of `raw` (an id from [`Structure::parts`]), decoded;
/// `None` for any other part, the message itself included.
pub fn part_by_id(raw: &[u8], part_id: u32) -> Option<Attachment> {
    let msg = MessageParser::default().parse(raw)?;
    if !msg.attachments.contains(&part_id) {
        return None;
    }
    let part = msg.part(part_id)?;
    Some(Attachment {
        bytes: Bytes::copy_from_slice(part.contents()),
        content_type: content_type_of(part),
        filename: part.attachment_name().map(clip_filename),
    })
}

fn headers(msg: &mail_parser::Message<'_>, raw: &[u8]) -> Vec<HeaderView> {
    msg.headers()
        .iter()
        .take(MAX_HEADERS)
        .map(|h| HeaderView {
            name: h.name().to_owned(),
            value: raw_value(raw, h.offset_start(), h.offset_end()),
        })
        .collect()
}

fn addresses(header: Option<&mail_parser::Address<'_>>, max: usize) -> Vec<AddrView> {
    header
        .map(|a| {
            a.iter()
                .take(max)
                .map(|x| AddrView {
                    name: x.name().map(str::to_owned),
                    address: x.address().map(str::to_owned),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A header's value as it stands in `raw[start..end]`, unfolded, trimmed.
pub fn raw_value(raw: &[u8], start: u32, end: u32) -> String {
    let slice = raw.get(start as usize..end as usize).unwrap_or_default();
    let text = String::from_utf8_lossy(slice);
    // Unfold: CRLF followed by whitespace is one space (RFC 5322 §2.2.3).
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i > 0 && !line.is_empty() {
            out.push(' ');
        }
        out.push_str(line.trim());
    }
    out.trim().to_owned()
}

/// A part's `type/subtype`, lowercased; `application/octet-stream` when
/// missing or not made of RFC 2045 tokens.
pub fn content_type_of(part: &mail_parser::MessagePart<'_>) -> String {
    let Some(ct) = part.content_type() else {
        return "application/octet-stream".to_owned();
    };
    let main = ct.ctype();
    let sub = ct.subtype().unwrap_or("octet-stream");
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    if token(main) && token(sub) {
        format!("{}/{}", main.to_ascii_lowercase(), sub.to_ascii_lowercase())
    } else {
        "application/octet-stream".to_owned()
    }
}

/// Strip path parts and control characters and cap the length.
fn clip_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILENAME_CHARS)
        .collect()
}

/// A `Content-Disposition: attachment` value that cannot break out of its
/// quotes: an ASCII fallback plus the exact name as RFC 5987 `filename*`.
pub fn content_disposition(filename: Option<&str>, fallback: &str) -> String {
    let name = filename
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(fallback);
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: Ana <ana@example.com>\r\nTo: a@uncorreo.test, B <b@uncorreo.test>\r\nSubject: Hi\r\n there\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"../../etc/a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nUERG\r\n--b--\r\n";

    #[test]
    fn parses_headers_addresses_bodies_and_attachments() {
        let p = parse(MSG);
        assert_eq!(p.headers[2].name, "Subject");
        assert_eq!(p.headers[2].value, "Hi there");
        assert_eq!(p.from[0].address.as_deref(), Some("ana@example.com"));
        assert_eq!(p.to.len(), 2);
        assert_eq!(p.text.as_deref().map(str::trim), Some("hello"));
        assert_eq!(p.attachments.len(), 1);
        assert_eq!(p.attachments[0].filename.as_deref(), Some("a.pdf"));
        assert_eq!(p.attachments[0].content_type, "application/pdf");
        let a = attachment(MSG, 0).unwrap();
        assert_eq!(&a.bytes[..], b"PDF");
        assert!(attachment(MSG, 1).is_none());
    }

    #[test]
    fn structure_lists_attachments_and_inline_parts_with_their_bytes() {
        const RICH: &[u8] = b"From: Shop <noreply@shop.example>\r\nTo: a@uncorreo.test\r\nBcc: hidden@uncorreo.test\r\nReply-To: help@shop.example\r\nMessage-ID: <m1@shop.example>\r\nSubject: Hi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\nContent-Disposition: inline\r\n\r\nPNG\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"../a.pdf\"\r\n\r\nPDF\r\n--b--\r\n";
        let s = structure(RICH);
        assert_eq!(s.message_id.as_deref(), Some("m1@shop.example"));
        assert_eq!(s.bcc[0].address.as_deref(), Some("hidden@uncorreo.test"));
        assert_eq!(s.reply_to[0].address.as_deref(), Some("help@shop.example"));
        assert_eq!(s.html, None, "a text-only message has no HTML body");
        assert_eq!(s.headers[4].name, "Message-ID");
        let [inline, pdf] = &s.parts[..] else {
            panic!("two parts: {:?}", s.parts)
        };
        assert_eq!(
            (
                inline.content_id.as_str(),
                inline.marked_attachment,
                &inline.contents[..]
            ),
            ("logo", false, &b"PNG"[..])
        );
        assert_eq!(
            (
                pdf.filename.as_deref(),
                pdf.marked_attachment,
                pdf.content_type.as_str()
            ),
            (Some("a.pdf"), true, "application/pdf")
        );
        let fetched = part_by_id(RICH, pdf.part_id).unwrap();
        assert_eq!(&fetched.bytes[..], b"PDF");
        assert!(
            part_by_id(RICH, 0).is_none(),
            "the message itself is not a part"
        );
        let html = structure(b"Content-Type: text/html\r\n\r\n<p>hi</p>\r\n");
        assert_eq!(html.html.as_deref().map(str::trim), Some("<p>hi</p>"));
    }

    #[test]
    fn content_disposition_cannot_be_broken_out_of() {
        let v = content_disposition(Some("a\"; x=\"y\r\n.pdf"), "f");
        assert!(!v.contains('\r') && !v.contains('\n'));
        assert_eq!(v.matches('"').count(), 2, "{v}");
        assert!(
            v.contains("filename*=UTF-8''a%22%3B%20x%3D%22y%0D%0A.pdf"),
            "{v}"
        );
        assert_eq!(
            content_disposition(Some("résumé.pdf"), "f"),
            "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
        );
    }
}
