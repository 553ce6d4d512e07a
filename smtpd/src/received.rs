//! Our `Received:` trace header (RFC 5321 §4.4, RFC 5322 §3.6.7) and the
//! RFC 5322 date it ends with. Everything a client chose (its HELO name) is
//! sanitised before it goes into a header.

use std::fmt::Write;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// The header, folded, ending in CRLF.
pub fn received(t: &Trace<'_>) -> String {
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "Received: from {} ([{}])\r\n\tby {} (uncorreo) with {} id {}",
        sanitize(t.helo, 64),
        t.peer,
        sanitize(t.hostname, 255),
        t.protocol,
        t.id
    );
    if t.bare_lf_normalized > 0 {
        let _ = write!(
            s,
            "\r\n\t(normalized {} bare LF to CRLF)",
            t.bare_lf_normalized
        );
    }
    if let Some(r) = t.single_rcpt {
        let _ = write!(s, "\r\n\tfor <{}>", sanitize(r, 320));
    }
    let _ = write!(s, ";\r\n\t{}\r\n", rfc5322_date(t.unix_secs));
    s
}

/// Keep printable ASCII except characters with a meaning in the header's
/// grammar; anything else becomes `?`. Truncate to `max` characters.
fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '(' | ')' | ';' | '<' | '>' | '\\' | '"') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Seconds since the epoch now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `Tue, 24 Nov 2026 20:38:58 +0000`.
pub fn rfc5322_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS.get((days % 7) as usize).unwrap_or(&"Thu"),
        d,
        MONTHS.get((m - 1) as usize).unwrap_or(&"Jan"),
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic
/// Gregorian (H. Hinnant's well-known algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
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
