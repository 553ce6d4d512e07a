//! Dates from epoch time, in the two text forms uncorreo writes: RFC 3339
//! for the API (`2026-11-24T10:00:00.123Z`) and RFC 5322 for `Received:`
//! lines (`Tue, 24 Nov 2026 10:00:00 +0000`). Always UTC.

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 to (year, month 1–12, day 1–31) in the proleptic
/// Gregorian calendar (the era method: 400-year cycles of 146 097 days).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March, so the leap day is the last day of the year.
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=31, 1..=12).
    (year, day_clamp(month), day_clamp(day))
}

fn day_clamp(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(1)
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let (year, month, day) = civil_from_days(days_of(secs));
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Seconds since the epoch as an RFC 5322 date: `Tue, 24 Nov 2026 20:38:58 +0000`.
pub fn rfc5322_date(unix_secs: u64) -> String {
    let days = days_of(unix_secs);
    let (year, month, day) = civil_from_days(days);
    let rem = unix_secs % 86_400;
    let weekday = WEEKDAYS
        .get(usize::try_from(days.rem_euclid(7)).unwrap_or(0))
        .copied()
        .unwrap_or("Thu");
    let month = MONTHS
        .get(month.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("Jan");
    format!(
        "{weekday}, {day:02} {month} {year} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn days_of(unix_secs: u64) -> i64 {
    // u64 seconds / 86 400 always fits an i64.
    i64::try_from(unix_secs / 86_400).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_rfc3339_instants() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_795_514_400_123),
            "2026-11-24T10:00:00.123Z"
        );
        assert_eq!(
            rfc3339_millis(4_107_542_399_999),
            "2100-02-28T23:59:59.999Z"
        );
    }

    #[test]
    fn known_rfc5322_dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_335_390_565),
            "Wed, 25 Apr 2012 21:49:25 +0000"
        );
        assert_eq!(
            rfc5322_date(1_795_552_737),
            "Tue, 24 Nov 2026 20:38:57 +0000"
        );
        assert_eq!(
            rfc5322_date(1_795_552_738),
            "Tue, 24 Nov 2026 20:38:58 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn civil_dates_round_trip_every_day_for_four_centuries() {
        // Counting days forward must step through the calendar one day at a time.
        let mut previous = civil_from_days(-1);
        for days in 0..146_097 {
            let (year, month, day) = civil_from_days(days);
            let (py, pm, pd) = previous;
            let next_day = year == py && month == pm && day == pd + 1;
            let next_month = year == py && month == pm + 1 && day == 1;
            let next_year = year == py + 1 && month == 1 && day == 1 && pm == 12 && pd == 31;
            assert!(
                next_day || next_month || next_year,
                "{days}: {previous:?} -> {:?}",
                (year, month, day)
            );
            previous = (year, month, day);
        }
    }
}
