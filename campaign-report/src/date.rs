//! The sending time of a message, from the header the campaign names: RFC
//! 5322 (`Date:`), RFC 3339, or epoch seconds / milliseconds. Bounded input,
//! no allocation, `None` for anything else.

/// Longest header value we try to read as a time.
const MAX_LEN: usize = 128;

/// Milliseconds since the epoch of `value`, or `None` if it is not a time we read.
pub fn parse_date_ms(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || v.len() > MAX_LEN {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = v.parse().ok()?;
        // Seconds until the year 5138, milliseconds after.
        return Some(if n < 100_000_000_000 { n * 1000 } else { n });
    }
    if v.as_bytes().get(4) == Some(&b'-') {
        return rfc3339(v);
    }
    rfc5322(v)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A civil date and time: (year, month, day), (hour, minute, second, ms).
type Civil = ((i64, u32, u32), (u32, u32, u32, u32));

fn to_ms(((y, mo, d), (h, mi, s, ms)): Civil, offset_min: i64) -> Option<u64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400
        + i64::from(h) * 3600
        + i64::from(mi) * 60
        + i64::from(s)
        - offset_min * 60;
    let total = secs.checked_mul(1000)?.checked_add(i64::from(ms))?;
    u64::try_from(total).ok()
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `2026-12-06T02:05:15.123Z`, `…+01:00`.
fn rfc3339(v: &str) -> Option<u64> {
    let (date, time) = v.split_once(['T', 't', ' '])?;
    let mut dp = date.split('-');
    let y = i64::from(num(dp.next()?)?);
    let mo = num(dp.next()?)?;
    let d = num(dp.next()?)?;
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, z) = time.split_at(at);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = z.get(1..)?.split_once(':')?;
        (c, sign * (i64::from(num(zh)?) * 60 + i64::from(num(zm)?)))
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut tp = hms.split(':');
    let h = num(tp.next()?)?;
    let mi = num(tp.next()?)?;
    let s = num(tp.next()?)?;
    let ms = if frac.is_empty() {
        0
    } else {
        let digits = frac.get(..frac.len().min(3))?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u32 = digits.parse().ok()?;
        n * 10u32.pow(3 - digits.len() as u32)
    };
    to_ms(((y, mo, d), (h, mi, s, ms)), offset)
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// `Sun, 6 Dec 2026 02:05:15 +0000` (day name optional, seconds optional,
/// obsolete zone names GMT/UT/Z; a trailing comment ignored).
fn rfc5322(v: &str) -> Option<u64> {
    let v = v.split_once('(').map_or(v, |(a, _)| a);
    let v = v.split_once(',').map_or(v, |(_, rest)| rest);
    let mut it = v.split_ascii_whitespace();
    let d = num(it.next()?)?;
    let mon = it.next()?.to_ascii_lowercase();
    let mo = MONTHS.iter().position(|m| *m == mon)? as u32 + 1;
    let y = i64::from(num(it.next()?)?);
    let mut tp = it.next()?.split(':');
    let h = num(tp.next()?)?;
    let mi = num(tp.next()?)?;
    let s = tp.next().map_or(Some(0), num)?;
    let offset = match it.next() {
        None => 0,
        Some(z) if z.eq_ignore_ascii_case("gmt") || z.eq_ignore_ascii_case("ut") || z == "Z" => 0,
        Some(z) => {
            let sign = match z.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let n = num(z.get(1..)?)?;
            sign * i64::from(n / 100 * 60 + n % 100)
        }
    };
    to_ms(((y, mo, d), (h, mi, s, 0)), offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_agree() {
        let want = Some(1_796_522_715_000);
        assert_eq!(parse_date_ms("Sun, 06 Dec 2026 02:05:15 +0000"), want);
        assert_eq!(parse_date_ms("6 Dec 2026 03:05:15 +0100 (CET)"), want);
        assert_eq!(parse_date_ms("Sun, 6 Dec 2026 02:05:15 GMT"), want);
        assert_eq!(parse_date_ms("2026-12-06T02:05:15Z"), want);
        assert_eq!(parse_date_ms("2026-12-05T21:05:15-05:00"), want);
        assert_eq!(parse_date_ms("1796522715"), want);
        assert_eq!(parse_date_ms("1796522715000"), want);
        assert_eq!(
            parse_date_ms("2026-12-06T02:05:15.25Z"),
            Some(1_796_522_715_250)
        );
    }

    #[test]
    fn nonsense_is_none() {
        for v in [
            "",
            "yesterday",
            "Sun, 99 Foo 2026 02:05 +0000",
            "2026-13-01T00:00:00Z",
            "x".repeat(200).as_str(),
        ] {
            assert_eq!(parse_date_ms(v), None, "{v}");
        }
    }
}
