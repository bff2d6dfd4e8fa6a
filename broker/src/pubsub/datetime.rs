//! XEP-0082 date-times, converted to and from microseconds since the Unix
//! epoch (UTC). Publication times are stamped into commands as integers;
//! this module renders them in XEP-0203 `<delay stamp='…'/>` and parses the
//! `start`/`end` filters of XEP-0313 queries. No clock is read here.

/// Days from 1970-01-01 to the proleptic Gregorian date `y-m-d`
/// (the "days from civil" algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2026-11-25T11:21:43.123456Z` (XEP-0082 DateTime profile, UTC, with
/// microseconds so that distinct publication times stay distinct).
pub fn format_micros(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:06}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Parses a XEP-0082 DateTime (`CCYY-MM-DDThh:mm:ss[.sss]TZD`, TZD `Z` or
/// `±hh:mm`) into microseconds since the epoch. Fractions beyond
/// microseconds are truncated.
pub fn parse_micros(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[10] != b'T' {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let year = i64::from(number(0..4)?);
    let month = number(5..7)?;
    let day = number(8..10)?;
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut fraction_micros = 0i64;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, b) in after_dot.bytes().take(6).enumerate() {
            if i < digits {
                fraction_micros = fraction_micros * 10 + i64::from(b - b'0');
            }
        }
        for _ in digits.min(6)..6 {
            fraction_micros *= 10;
        }
        rest = &after_dot[digits..];
    }
    let offset_seconds = match rest {
        "Z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let hours = i64::from(rest[1..3].parse::<u32>().ok()?);
            let minutes = i64::from(rest[4..6].parse::<u32>().ok()?);
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_seconds;
    Some(seconds * 1_000_000 + fraction_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_formats_as_1970() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn known_instant_round_trips() {
        // 2026-11-25T11:21:43.5Z
        let micros = 1_795_605_703_500_000;
        assert_eq!(format_micros(micros), "2026-11-25T11:21:43.500000Z");
        assert_eq!(parse_micros("2026-11-25T11:21:43.5Z"), Some(micros));
        assert_eq!(
            parse_micros("2026-11-25T12:21:43.500Z"),
            Some(micros + 3_600_000_000)
        );
    }

    #[test]
    fn offsets_are_applied() {
        assert_eq!(
            parse_micros("2026-11-25T13:21:43+02:00"),
            parse_micros("2026-11-25T11:21:43Z")
        );
    }

    #[test]
    fn malformed_datetimes_are_rejected() {
        for bad in [
            "",
            "2026-11-25",
            "2026-13-01T00:00:00Z",
            "2026-11-25T11:21:43",
            "x026-11-25T11:21:43Z",
        ] {
            assert_eq!(parse_micros(bad), None, "{bad}");
        }
    }
}
