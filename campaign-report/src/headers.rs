//! The few header fields a campaign needs, read from the raw message
//! without a MIME parser: one pass over at most [`MAX_SCAN_BYTES`] of the
//! header section, folded lines joined.

/// Most bytes of a message read for its header fields (smtpd's default cap
/// on the header section).
pub const MAX_SCAN_BYTES: usize = 256 * 1024;

/// What a campaign reads from a message's header section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scanned {
    /// `Message-ID:`, trimmed.
    pub message_id: Option<String>,
    /// The sending time from the named header, ms.
    pub sent_at_ms: Option<u64>,
    /// Bytes of the header section including the blank line (the whole
    /// scanned part when no blank line was found).
    pub header_len: usize,
}

/// Read `Message-ID:` and the time in header `sent_at_header` (e.g. `Date`)
/// from `raw`. The first occurrence of each wins.
pub fn scan(raw: &[u8], sent_at_header: &str) -> Scanned {
    let limit = raw.len().min(MAX_SCAN_BYTES);
    let head = raw.get(..limit).unwrap_or_default();
    let mut out = Scanned {
        header_len: limit,
        ..Scanned::default()
    };
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while at < head.len() {
        let end = head[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(head.len(), |p| at + p + 1);
        let line = &head[at..end];
        if line == b"\r\n" || line == b"\n" {
            out.header_len = end;
            break;
        }
        match line.first() {
            Some(b' ' | b'\t') => {
                if let Some(last) = fields.last_mut() {
                    last.1 = end;
                }
            }
            _ => fields.push((at, end)),
        }
        at = end;
    }
    for (start, end) in fields {
        let field = &head[start..end];
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &field[..colon];
        let value = || {
            let v = String::from_utf8_lossy(&field[colon + 1..]);
            v.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        if out.message_id.is_none() && name.eq_ignore_ascii_case(b"message-id") {
            let v = value();
            if !v.is_empty() {
                out.message_id = Some(crate::clip(&v, crate::MAX_ID_BYTES).to_owned());
            }
        } else if out.sent_at_ms.is_none() && name.eq_ignore_ascii_case(sent_at_header.as_bytes()) {
            out.sent_at_ms = crate::parse_date_ms(&value());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_folded_fields_and_stops_at_the_body() {
        let raw = b"Received: x\r\nMessage-ID:\r\n <a@b>\r\nDate: Sun, 06 Dec 2026 02:05:15 +0000\r\n\r\nMessage-ID: <body@x>\r\n";
        let s = scan(raw, "Date");
        assert_eq!(s.message_id.as_deref(), Some("<a@b>"));
        assert_eq!(s.sent_at_ms, Some(1_796_522_715_000));
        assert_eq!(&raw[..s.header_len], &raw[..raw.len() - 22]);
        let s = scan(raw, "X-Sent-At");
        assert_eq!(s.sent_at_ms, None);
    }
}
