//! Our `Received:` trace header (RFC 5321 §4.4, RFC 5322 §3.6.7) and the
//! RFC 5322 date it ends with (`uncorreo_mail::date`). Everything a client chose (its HELO name) is
//! sanitised before it goes into a header.

use std::fmt::Write;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

pub use uncorreo_mail::date::rfc5322_date;

/// Upper bound on the length of the header we prepend; the message size
/// limit leaves this much room below the engine's limit.
pub const MAX_RECEIVED_BYTES: usize = 1024;

/// What the header says about one transaction.
pub struct Trace<'a> {
    /// The client's HELO/EHLO name as sent.
    pub helo: &'a str,
    /// The client's IP address.
    pub peer: IpAddr,
    /// Our host name.
    pub hostname: &'a str,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA`, … (RFC 3848).
    pub protocol: &'a str,
    /// Our transaction id.
    pub id: &'a str,
    /// Bare LFs we stored as CRLF: said in a comment, so the raw bytes
    /// record that they are not exactly what the client sent.
    pub bare_lf_normalized: u64,
    /// The recipient when there is exactly one.
    pub single_rcpt: Option<&'a str>,
    /// Seconds since the Unix epoch.
    pub unix_secs: u64,
}

/// The header, folded, ending in CRLF. Written into one buffer, the
/// client's words sanitised on the way in, and the date formatted once per
/// second per thread: through `format!` and a `String` per field it cost
/// about 8 k instructions of every SMTP message.
pub fn received(t: &Trace<'_>) -> String {
    let mut s = String::with_capacity(256);
    s.push_str("Received: from ");
    push_sanitized(&mut s, t.helo, 64);
    let _ = write!(s, " ([{}])\r\n\tby ", t.peer);
    push_sanitized(&mut s, t.hostname, 255);
    s.push_str(" (uncorreo) with ");
    s.push_str(t.protocol);
    s.push_str(" id ");
    s.push_str(t.id);
    if t.bare_lf_normalized > 0 {
        let _ = write!(
            s,
            "\r\n\t(normalized {} bare LF to CRLF)",
            t.bare_lf_normalized
        );
    }
    if let Some(r) = t.single_rcpt {
        s.push_str("\r\n\tfor <");
        push_sanitized(&mut s, r, 320);
        s.push('>');
    }
    s.push_str(";\r\n\t");
    push_date(&mut s, t.unix_secs);
    s.push_str("\r\n");
    s
}

/// [`rfc5322_date`] of `unix_secs`, remembered per thread for the second it
/// names (every message of a busy second carries the same date).
fn push_date(s: &mut String, unix_secs: u64) {
    thread_local! {
        static LAST: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != unix_secs {
            *last = (unix_secs, rfc5322_date(unix_secs));
        }
        s.push_str(&last.1);
    });
}

/// Keep printable ASCII except characters with a meaning in the header's
/// grammar; anything else becomes `?`. Truncate to `max` characters.
fn push_sanitized(out: &mut String, s: &str, max: usize) {
    for c in s.chars().take(max) {
        if c.is_ascii_graphic() && !matches!(c, '(' | ')' | ';' | '<' | '>' | '\\' | '"') {
            out.push(c);
        } else {
            out.push('?');
        }
    }
}

/// Seconds since the epoch now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_552_738),
            "Tue, 24 Nov 2026 20:38:58 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn header_shape_and_sanitising() {
        let h = received(&Trace {
            helo: "evil\u{7f}(x);<y>",
            peer: "127.0.0.1".parse().unwrap(),
            hostname: "mx.test",
            protocol: "ESMTPS",
            id: "ABC",
            single_rcpt: Some("box+t@uncorreo.test"),
            unix_secs: 0,
            bare_lf_normalized: 0,
        });
        assert_eq!(
            h,
            "Received: from evil??x???y? ([127.0.0.1])\r\n\tby mx.test (uncorreo) with ESMTPS id ABC\r\n\tfor <box+t@uncorreo.test>;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
        assert!(h.len() < MAX_RECEIVED_BYTES);
    }

    /// The date remembered for one second is never given for another.
    #[test]
    fn the_date_follows_the_clock() {
        let at = |unix_secs| {
            received(&Trace {
                helo: "h",
                peer: "127.0.0.1".parse().unwrap(),
                hostname: "m",
                protocol: "SMTP",
                id: "1",
                single_rcpt: None,
                unix_secs,
                bare_lf_normalized: 0,
            })
        };
        assert!(at(0).ends_with(";\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n"));
        assert!(at(0).ends_with("00:00:00 +0000\r\n"));
        assert!(at(1).ends_with(";\r\n\tThu, 01 Jan 1970 00:00:01 +0000\r\n"));
        assert!(at(0).ends_with("00:00:00 +0000\r\n"));
    }

    #[test]
    fn normalisation_is_recorded() {
        let h = received(&Trace {
            helo: &"h".repeat(300),
            peer: "::1".parse().unwrap(),
            hostname: &"m".repeat(300),
            protocol: "ESMTPSA",
            id: "0123456789ABCDEF",
            single_rcpt: Some(&"r".repeat(400)),
            unix_secs: 0,
            bare_lf_normalized: u64::MAX,
        });
        assert!(
            h.contains("id 0123456789ABCDEF\r\n\t(normalized 18446744073709551615 bare LF to CRLF)\r\n\tfor <"),
            "{h}"
        );
        assert!(h.len() < MAX_RECEIVED_BYTES, "{}", h.len());
    }
}
