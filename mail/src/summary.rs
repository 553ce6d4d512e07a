//! The listing summary (from, subject, date, attachment count) derived from
//! raw bytes at delivery. Parsing hostile mail is where parsers panic, so the
//! parser runs behind `catch_unwind` and on a bounded prefix for headers; a
//! message that cannot be parsed still gets stored, with an empty summary.

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::{Deserialize, Serialize};

/// Longest `from` / `subject` kept in a summary, in bytes (cut at a char boundary).
pub const MAX_SUMMARY_FIELD: usize = 256;

/// The listing view of a message, extracted once at delivery and stored in
/// the log next to the raw bytes (it is derived, and can be recomputed).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// `From:` as written (decoded), empty if absent.
    pub from: String,
    /// `Subject:` decoded, empty if absent.
    pub subject: String,
    /// `Date:` as RFC 3339 if it parsed.
    pub date: Option<String>,
    /// Number of attachments.
    pub attachments: u16,
    /// Action links (verify, reset, sign in, invite) found in the text or
    /// HTML body, best first (at most [`crate::extract::MAX_LINKS`]); never
    /// unsubscribe, tracking-pixel, logo or social links.
    pub links: Vec<String>,
    /// One-time codes found in the subject or bodies, as typed (`718204`
    /// for `718-204`), best first (at most [`crate::extract::MAX_CODES`]).
    pub codes: Vec<String>,
    /// The [`crate::extract::VERSION`] of the rules this summary was derived
    /// with. A summary stored by older rules is stale: the raw bytes are the
    /// source of truth, so a reader derives it again. Not part of any wire
    /// shape.
    #[serde(skip)]
    pub version: u16,
}

/// Derive the summary. Never panics; garbage in gives an empty summary.
/// Either way it is marked current: deriving again with the same rules would
/// give the same answer (or the same panic).
pub fn summarize(raw: &[u8]) -> Summary {
    let mut summary =
        catch_unwind(AssertUnwindSafe(|| summarize_inner(raw, parser()))).unwrap_or_default();
    summary.version = crate::extract::VERSION;
    summary
}

impl Summary {
    /// True when derived by older rules than this build's extractor.
    pub fn is_stale(&self) -> bool {
        self.version < crate::extract::VERSION
    }
}

fn summarize_inner(raw: &[u8], parser: &mail_parser::MessageParser) -> Summary {
    if looks_like_one_plain_part(raw) {
        if let Some(summary) = plain_text_summary(raw, parser) {
            return summary;
        }
    }
    parsed_summary(raw, parser)
}

/// The summary from mail-parser's parse of the whole message.
fn parsed_summary(raw: &[u8], parser: &mail_parser::MessageParser) -> Summary {
    let Some(msg) = parser.parse(raw) else {
        return Summary::default();
    };
    let extraction = crate::extract::extract_parsed(&msg);
    header_summary(
        &msg,
        extraction,
        u16::try_from(msg.attachment_count()).unwrap_or(u16::MAX),
    )
}

/// The fields read from the headers, with the body's extraction.
fn header_summary(
    msg: &mail_parser::Message<'_>,
    extraction: crate::extract::Extraction,
    attachments: u16,
) -> Summary {
    let from = msg
        .from()
        .and_then(|a| a.first())
        .map(|a| match (a.name(), a.address()) {
            (Some(n), Some(ad)) => format!("{n} <{ad}>"),
            (None, Some(ad)) => ad.to_owned(),
            (Some(n), None) => n.to_owned(),
            (None, None) => String::new(),
        })
        .unwrap_or_default();
    let subject = msg.subject().unwrap_or_default();
    Summary {
        from: clip(from),
        subject: clip(subject.to_owned()),
        date: msg.date().map(|d| d.to_rfc3339()),
        attachments,
        codes: extraction.code_strings(),
        links: extraction.action_links,
        version: crate::extract::VERSION,
    }
}

/// Charsets whose decoder in mail-parser maps every ASCII byte to itself:
/// an ASCII body declared in one of them reads as the bytes.
const ASCII_CHARSETS: [&str; 6] = [
    "us-ascii",
    "ascii",
    "iso-8859-1",
    "latin1",
    "windows-1252",
    "cp1252",
];

/// A cheap look at the header lines: no `Content-Type` other than
/// `text/plain`, no base64 or quoted-printable. Only a routing guess, so a
/// multipart message is not parsed twice; [`plain_text_summary`] checks
/// the parsed headers before it answers.
fn looks_like_one_plain_part(raw: &[u8]) -> bool {
    let mut rest = raw;
    while let Some(end) = memchr::memchr(b'\n', rest) {
        let (line, next) = rest.split_at(end + 1);
        rest = next;
        let line = line
            .strip_suffix(b"\r\n")
            .or(line.strip_suffix(b"\n"))
            .unwrap_or(line);
        if line.is_empty() {
            return true;
        }
        let value = |name: &[u8]| {
            line.get(..name.len())
                .filter(|head| head.eq_ignore_ascii_case(name))
                .map(|_| {
                    line.get(name.len()..)
                        .unwrap_or_default()
                        .trim_ascii_start()
                })
        };
        if let Some(v) = value(b"content-type:") {
            if !v
                .get(..10)
                .is_some_and(|t| t.eq_ignore_ascii_case(b"text/plain"))
            {
                return false;
            }
        } else if let Some(v) = value(b"content-transfer-encoding:") {
            if matches!(v.first(), Some(b'b' | b'B' | b'q' | b'Q')) {
                return false;
            }
        }
    }
    true
}

/// The summary of a message that is one text/plain part, not encoded, in
/// UTF-8 (or ASCII declared in an ASCII-compatible charset), without
/// mail-parser's walk over the body: the body is the bytes after the
/// header block, exactly the part text mail-parser gives such a message
/// (its own UTF-8 pass, `from_utf8_lossy`, and its scan for a boundary
/// that cannot be there were a fifth of a summary). `None` for anything
/// else; the caller then parses the whole message. A property test checks
/// the two agree.
fn plain_text_summary(raw: &[u8], parser: &mail_parser::MessageParser) -> Option<Summary> {
    use mail_parser::{GetHeader, HeaderName, HeaderValue};
    let msg = parser.parse_headers(raw)?;
    let headers = &msg.parts.first()?.headers;
    let content_type = headers
        .header_value(&HeaderName::ContentType)
        .and_then(|v| v.as_content_type());
    let mut ascii_only = false;
    if let Some(ct) = content_type {
        if ct.ctype() != "text" || ct.subtype() != Some("plain") {
            return None;
        }
        if let Some(charset) = ct.attribute("charset") {
            if ["utf-8", "utf8"]
                .iter()
                .any(|c| charset.eq_ignore_ascii_case(c))
            {
                // mail-parser has no decoder for UTF-8: `from_utf8_lossy`.
            } else if ASCII_CHARSETS
                .iter()
                .any(|c| charset.eq_ignore_ascii_case(c))
            {
                ascii_only = true;
            } else {
                return None;
            }
        }
    }
    match headers.header_value(&HeaderName::ContentTransferEncoding) {
        Some(HeaderValue::Text(e))
            if e.eq_ignore_ascii_case("base64") || e.eq_ignore_ascii_case("quoted-printable") =>
        {
            return None
        }
        _ => {}
    }
    if headers
        .header_value(&HeaderName::ContentDisposition)
        .is_some()
    {
        return None;
    }
    // Where mail-parser's header loop ends: past the last field, it skips
    // whitespace up to a line feed, and the body is what follows. Anything
    // else there (a line it could not read as a field) is the slow path's.
    let after = raw.get(headers.last()?.offset_end as usize..)?;
    let gap = after
        .iter()
        .position(|&b| b == b'\n' || !b.is_ascii_whitespace())?;
    if after.get(gap) != Some(&b'\n') {
        return None;
    }
    let text = std::str::from_utf8(after.get(gap + 1..)?).ok()?;
    if ascii_only && !text.is_ascii() {
        return None;
    }
    let subject = msg.subject().unwrap_or_default();
    let extraction = crate::extract::extract(subject, text, "");
    Some(header_summary(&msg, extraction, 0))
}

/// mail-parser's default header parsers, except that `Received:` is skipped
/// unparsed: the summary never reads it, every SMTP message carries at least
/// ours, and parsing it was a twentieth of a summary. The default parser
/// dispatches by a `match` only while its map is empty, so every other
/// header is mapped here to the parser the default gives it.
fn parser() -> &'static mail_parser::MessageParser {
    use mail_parser::{HeaderName as H, MessageParser};
    static PARSER: std::sync::OnceLock<MessageParser> = std::sync::OnceLock::new();
    PARSER.get_or_init(|| {
        let mut p = MessageParser::new().ignore_header(H::Received);
        for h in [
            H::Subject,
            H::Comments,
            H::ContentDescription,
            H::ContentLocation,
            H::ContentTransferEncoding,
        ] {
            p = p.header_text(h);
        }
        for h in [
            H::From,
            H::To,
            H::Cc,
            H::Bcc,
            H::ReplyTo,
            H::Sender,
            H::ResentTo,
            H::ResentFrom,
            H::ResentBcc,
            H::ResentCc,
            H::ResentSender,
            H::ListArchive,
            H::ListHelp,
            H::ListId,
            H::ListOwner,
            H::ListPost,
            H::ListSubscribe,
            H::ListUnsubscribe,
        ] {
            p = p.header_address(h);
        }
        for h in [H::Date, H::ResentDate] {
            p = p.header_date(h);
        }
        for h in [
            H::MessageId,
            H::References,
            H::InReplyTo,
            H::ReturnPath,
            H::ContentId,
            H::ResentMessageId,
        ] {
            p = p.header_id(h);
        }
        for h in [H::Keywords, H::ContentLanguage] {
            p = p.header_comma_separated(h);
        }
        for h in [H::ContentType, H::ContentDisposition] {
            p = p.header_content_type(h);
        }
        // MIME-Version and every other header: raw, the map's default.
        p
    })
}

fn clip(mut s: String) -> String {
    crate::text::clip(&mut s, MAX_SUMMARY_FIELD);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_headers_and_counts_attachments() {
        let raw = b"From: Ana <ana@example.com>\r\nSubject: Your code\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\nPDF\r\n--b--\r\n";
        let s = summarize(raw);
        assert_eq!(s.from, "Ana <ana@example.com>");
        assert_eq!(s.subject, "Your code");
        assert_eq!(s.date.as_deref(), Some("2026-11-24T10:00:00Z"));
        assert_eq!(s.attachments, 1);
    }

    #[test]
    fn carries_links_and_codes_from_the_body() {
        let raw = b"Subject: Sign in\r\nContent-Type: text/plain\r\n\r\nYour code: 902211\r\nOr click https://a.test/login?t=Z\r\n";
        let s = summarize(raw);
        assert_eq!(s.codes, vec!["902211"]);
        assert_eq!(s.links, vec!["https://a.test/login?t=Z"]);
    }

    #[test]
    fn garbage_gives_empty_summary_not_panic() {
        assert_eq!(summarize(b"").subject, "");
        let _ = summarize(&[0xff; 4096]);
    }

    #[test]
    fn every_summary_names_the_rules_it_was_derived_with() {
        let fresh = summarize(b"Subject: x\r\n\r\ncode 123456\r\n");
        assert_eq!(fresh.version, crate::extract::VERSION);
        assert!(!fresh.is_stale());
        assert_eq!(summarize(&[0xff; 64]).version, crate::extract::VERSION);
        let older = Summary {
            version: crate::extract::VERSION - 1,
            ..fresh
        };
        assert!(older.is_stale());
        assert!(Summary::default().is_stale());
    }

    /// Header lines of every kind the summary's parser maps, `Received:`
    /// in the shapes that stress where its tokenizer stops (comments,
    /// quotes, brackets, folding, no value, no line end).
    fn header() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::sample::select(vec![
            "Received: from a.test ([127.0.0.1])\r\n\tby b.test with ESMTP id 1;\r\n\tTue, 24 Nov 2026 10:00:00 +0000\r\n",
            "Received: (from x (y \"q(\" )\r\n z) by\r\n",
            "Received: from [ <a@b> \"unterminated\r\n",
            "Received:\r\n",
            "Received: from x\n by y; 1 Jan 99 00:00 -0100\n",
            "received: by (((\r\n \r\n",
            "Received: from a for <c@d.test>; Mon, 2 Feb 2026 1:2:3 GMT (comment)\r\n",
            "From: Ana <ana@example.com>\r\n",
            "From: =?utf-8?q?Jos=C3=A9?= <j@x.test>, b@y.test\r\n",
            "Subject: Your code 123456\r\n",
            "Subject: =?utf-8?b?w6kgNzE4LTIwNA==?=\r\n\tfolded\r\n",
            "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n",
            "Date: garbage\r\n",
            "Message-ID: <1@x>\r\n",
            "Keywords: a, b\r\n",
            "List-Unsubscribe: <https://x.test/u>\r\n",
            "X-Other: (Received: x)\r\n",
            "MIME-Version: 1.0\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            "Content-Type: text/html\r\n",
            "Content-Transfer-Encoding: quoted-printable\r\n",
            "Content-Disposition: attachment; filename=a.pdf\r\n",
            "Content-Disposition: inline\r\n",
            "Content-Type: text/plain; charset=us-ascii\r\n",
            "Content-Type: TEXT/Plain; charset=\"UTF-8\"\r\n",
            "Content-Type: text/plain; charset=latin1\r\n",
            "Content-Type: text/plain; charset=iso-8859-2\r\n",
            "Content-Type: text/plain; name=a.txt\r\n",
            "Content-Type:\r\n text/plain\r\n",
            "Content-Type: multipart/alternative; boundary=z\r\n",
            "Content-Transfer-Encoding: 7bit\r\n",
            "Content-Transfer-Encoding: BASE64\r\n",
            "not a header line\r\n",
            "X-Junk\r\n",
            " continuation\r\n",
        ])
        .prop_map(str::to_owned)
    }

    fn body() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::sample::select(vec![
            "Your code: 902211\r\n",
            "https://a.test/verify?t=1 \r\n",
            "<p>Code <b>718-204</b> <a href=\"https://a.test/login\">Sign in</a></p>\r\n",
            "=C3=A9 soft=\r\nbreak\r\n",
            "\r\n",
            "Received: from body-line\r\n",
            "é 12 34 56\r\n",
            "Verify: https://a.test/verify?n=café\r\n",
        ])
        .prop_map(str::to_owned)
    }

    use proptest::prelude::*;

    proptest! {
        /// Neither skipping `Received:` nor reading a plain body without
        /// mail-parser changes a summary: the same fields as mail-parser's
        /// default parse of the whole message, whichever path was taken.
        #[test]
        fn the_summary_is_the_default_parse_whichever_path(
            headers in proptest::collection::vec(header(), 0..10),
            nested in proptest::collection::vec(header(), 0..4),
            bodies in proptest::collection::vec(body(), 0..6),
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'1', b' ', b'\r', b'\n', b'\t', 0, 0x7f, 0xc3, 0xa9, 0xe9, 0xff]),
                0..40,
            ),
            multipart in any::<bool>(),
            end in proptest::sample::select(vec!["\r\n", "", "\n"]),
        ) {
            let mut raw = headers.concat();
            if multipart {
                raw.push_str("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n");
                raw.push_str("Content-Type: message/rfc822\r\n\r\n");
                raw.push_str(&nested.concat());
                raw.push_str("\r\n");
                raw.push_str(&bodies.concat());
                raw.push_str("\r\n--b\r\nContent-Type: text/plain\r\n\r\n");
                raw.push_str(&bodies.concat());
                raw.push_str("--b--");
            } else {
                raw.push_str("\r\n");
                raw.push_str(&bodies.concat());
            }
            raw.push_str(end);
            let mut raw = raw.into_bytes();
            raw.extend_from_slice(&bytes);
            let default = mail_parser::MessageParser::default();
            prop_assert_eq!(
                summarize_inner(&raw, parser()),
                parsed_summary(&raw, &default)
            );
        }
    }

    /// Every ASCII byte, in every charset the plain path reads as ASCII,
    /// is read as mail-parser reads it; a byte past ASCII sends the message
    /// to mail-parser.
    #[test]
    fn the_plain_path_reads_ascii_as_mail_parser_does() {
        let ascii: Vec<u8> = (0u8..0x80).collect();
        for charset in ASCII_CHARSETS.iter().chain(&["utf-8", "UTF8"]) {
            let utf8 = "Verify: https://a.test/verify?n=caf\u{e9}\r\n".as_bytes();
            for body in [
                &ascii[..],
                b"Your code: 902211\r\n",
                b"caf\xe9 123456\r\n",
                utf8,
            ] {
                let mut raw =
                    format!("Subject: s\r\nContent-Type: text/plain; charset={charset}\r\n\r\n")
                        .into_bytes();
                raw.extend_from_slice(body);
                let default = mail_parser::MessageParser::default();
                assert_eq!(
                    summarize_inner(&raw, parser()),
                    parsed_summary(&raw, &default),
                    "{charset}"
                );
                let utf8_declared = charset.eq_ignore_ascii_case("utf-8") || *charset == "UTF8";
                assert_eq!(
                    plain_text_summary(&raw, parser()).is_some(),
                    body.is_ascii() || (utf8_declared && std::str::from_utf8(body).is_ok()),
                    "{charset}: only ASCII, or UTF-8 declared so, is read without mail-parser"
                );
            }
        }
    }

    #[test]
    fn the_plain_path_takes_plain_mail_and_nothing_else() {
        let plain = b"From: a@b.test\r\nSubject: Code 718204\r\n\r\nYour code: 718204\r\n";
        assert!(looks_like_one_plain_part(plain));
        assert_eq!(
            plain_text_summary(plain, parser()),
            Some(parsed_summary(plain, parser()))
        );
        for other in [
            &b"Content-Type: text/html\r\n\r\n<p>718204</p>"[..],
            b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--",
            b"Content-Transfer-Encoding: base64\r\n\r\nNzE4MjA0\r\n",
            b"content-transfer-encoding: Quoted-Printable\r\n\r\n=37=31\r\n",
        ] {
            assert!(!looks_like_one_plain_part(other));
            assert_eq!(plain_text_summary(other, parser()), None);
        }
        // A field mail-parser could not read before the blank line, a
        // disposition, no body at all: mail-parser's.
        for other in [
            &b"Subject: a\r\n: no name\r\n\r\nbody 123456"[..],
            b"Subject: a\r\nContent-Disposition: attachment\r\n\r\nbody",
            b"Subject: a\r\n",
            b"Content-Type: text/plain; charset=koi8-r\r\n\r\nbody",
        ] {
            assert_eq!(plain_text_summary(other, parser()), None);
            assert_eq!(
                summarize_inner(other, parser()),
                parsed_summary(other, parser())
            );
        }
    }

    #[test]
    fn received_is_skipped_and_nothing_else() {
        let raw = b"Received: from a.test by b.test; Tue, 24 Nov 2026 10:00:00 +0000\r\nFrom: Ana <ana@example.com>\r\nSubject: Code 123456\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nhi\r\n";
        let msg = parser().parse(&raw[..]).unwrap();
        assert!(msg.received().is_none());
        let full = mail_parser::MessageParser::default()
            .parse(&raw[..])
            .unwrap();
        assert!(full.received().is_some());
        assert_eq!(
            summarize_inner(raw, parser()),
            parsed_summary(raw, &mail_parser::MessageParser::default())
        );
    }

    #[test]
    fn long_subject_is_clipped_on_char_boundary() {
        let raw = format!("Subject: {}\r\n\r\nx", "é".repeat(300));
        let s = summarize(raw.as_bytes());
        assert!(s.subject.len() <= MAX_SUMMARY_FIELD);
        assert!(s.subject.chars().all(|c| c == 'é'));
    }
}
