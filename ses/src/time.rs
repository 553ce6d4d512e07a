//! SNS `Timestamp`s (ISO 8601 UTC, `2026-11-24T20:38:57.123Z`) in. Calendar
//! arithmetic is `der::DateTime`'s (already a dependency through x509-cert);
//! the RFC 5322 date of our `Received:` line is `uncorreo_mail::date`'s.

use x509_cert::der::DateTime;

/// Parse an SNS `Timestamp` into milliseconds since the epoch. Accepts
/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` only (what SNS sends); fractions beyond
/// milliseconds are truncated.
pub fn parse_timestamp_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 40 || b.last() != Some(&b'Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u16> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b.get(i) != Some(&c)) {
        return None;
    }
    let dt = DateTime::new(
        num(0..4)?,
        u8::try_from(num(5..7)?).ok()?,
        u8::try_from(num(8..10)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(14..16)?).ok()?,
        u8::try_from(num(17..19)?).ok()?,
    )
    .ok()?;
    let frac = s.get(19..s.len() - 1)?;
    let millis = match frac.strip_prefix('.') {
        None if frac.is_empty() => 0,
        Some(digits) if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) => {
            let mut ms = 0u64;
            for (i, d) in digits.bytes().take(3).enumerate() {
                ms += u64::from(d - b'0') * 10u64.pow(2 - i as u32);
            }
            ms
        }
        _ => return None,
    };
    let secs = dt.unix_duration().as_secs();
    secs.checked_mul(1000)?.checked_add(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sns_timestamps() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_timestamp_ms("2012-04-25T21:49:25.719Z"),
            Some(1_335_390_565_719)
        );
        assert_eq!(
            parse_timestamp_ms("2012-04-25T21:49:25Z"),
            Some(1_335_390_565_000)
        );
        assert_eq!(
            parse_timestamp_ms("2012-04-25T21:49:25.7194567Z"),
            Some(1_335_390_565_719)
        );
        assert_eq!(
            parse_timestamp_ms("2012-04-25T21:49:25.7Z"),
            Some(1_335_390_565_700)
        );
        for bad in [
            "",
            "2012-04-25 21:49:25.719Z",
            "2012-04-25T21:49:25.719",
            "2012-04-25T21:49:25.719+00:00",
            "2012-13-25T21:49:25.719Z",
            "2012-04-25T25:49:25.719Z",
            "2012-04-25T21:49:25.Z",
            "2012-04-25T21:49:25.7a9Z",
            "+012-04-25T21:49:25.719Z",
            "2012-04-25T21:49:25.719ZZ",
        ] {
            assert_eq!(parse_timestamp_ms(bad), None, "{bad}");
        }
    }
}
