//! Event times (providers/base.py `parse_time` for text), for the two forms MTAs write:
//! the RFC 5322 date of `_RFC5322` ("Fri, 14 Mar 2025 09:12:05 +0000") and a plain ISO
//! 8601 time ("2025-03-14T09:12:05.123Z", "+hh:mm" or no offset).  Anything else (numbers,
//! obsolete zones, missing seconds, `email.utils` forms, other ISO spellings that
//! `datetime.fromisoformat` may or may not read depending on the Python version) is
//! `None`: the engine declines and Python decides.
//!
//! The input is printable ASCII (the engine checks), so `\s` is a space and `\d` an
//! ASCII digit.

fn digits(bytes: &[u8], at: usize, count: usize) -> Option<u32> {
    let part = bytes.get(at..at + count)?;
    let mut value = 0u32;
    for &digit in part {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(digit - b'0');
    }
    Some(value)
}

fn is_leap(year: u32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (valid dates only).
fn days_from_civil(year: u32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// A validated wall-clock time and its UTC offset in minutes (east positive).
struct Moment {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    micros: u32,
    offset_minutes: i64,
}

impl Moment {
    /// `datetime(...)` and `timezone(offset)` refuse what this refuses (and a little
    /// more: minutes of an offset over 59, which Python would add up).
    fn valid(&self) -> bool {
        (1..=12).contains(&self.month)
            && self.year >= 1
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60
            && self.offset_minutes.abs() < 24 * 60
    }

    /// Unix seconds of the instant, if within base.py's `_MIN_TS .. _MAX_TS`, formatted
    /// as `format_time` does: RFC 3339, UTC, milliseconds, `Z`.
    fn format(&self, min_ts: i64, max_ts: i64, out: &mut String) -> bool {
        if !self.valid() {
            return false;
        }
        let local = days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour * 3600 + self.minute * 60 + self.second);
        let seconds = local - self.offset_minutes * 60;
        // `moment.timestamp()` is seconds + micros / 1e6 as a float: over the upper
        // bound as soon as there is any fraction at `max_ts`.
        if seconds < min_ts || seconds > max_ts || (seconds == max_ts && self.micros > 0) {
            return false;
        }
        let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
        let in_day = seconds.rem_euclid(86_400);
        // "YYYY-MM-DDTHH:MM:SS.mmmZ" (the year is 2000..2100 after the range check).
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, value: i64| {
            let mut rest = value;
            for index in (at..at + width).rev() {
                text[index] = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, i64::from(month));
        put(8, 2, i64::from(day));
        put(11, 2, in_day / 3600);
        put(14, 2, in_day / 60 % 60);
        put(17, 2, in_day % 60);
        put(20, 3, i64::from(self.micros / 1000));
        out.push_str(std::str::from_utf8(&text).unwrap_or(""));
        true
    }
}

const MONTHS: [&[u8; 3]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

fn spaces(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at) == Some(&b' ') {
        at += 1;
    }
    at
}

/// base.py `_RFC5322` (full match), with a month name `_MONTHS` knows.
fn rfc5322(bytes: &[u8]) -> Option<Moment> {
    let mut at = 0;
    // (?:[A-Za-z]{3},\s*)?
    if bytes.len() >= 4 && bytes[..3].iter().all(u8::is_ascii_alphabetic) && bytes[3] == b',' {
        at = spaces(bytes, 4);
    }
    // (\d{1,2})\s+
    let day_len = bytes[at..]
        .iter()
        .take(2)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let day = digits(bytes, at, day_len.max(1))?;
    at += day_len;
    let next = spaces(bytes, at);
    if next == at {
        return None;
    }
    at = next;
    // ([A-Za-z]{3})\s+
    let name = bytes.get(at..at + 3)?;
    let lower = [
        name[0].to_ascii_lowercase(),
        name[1].to_ascii_lowercase(),
        name[2].to_ascii_lowercase(),
    ];
    let month = MONTHS.iter().position(|m| **m == lower)? as u32 + 1;
    at += 3;
    let next = spaces(bytes, at);
    if next == at {
        return None;
    }
    at = next;
    // (\d{4})\s+(\d{2}):(\d{2}):(\d{2})\s+([+-])(\d{2})(\d{2})
    let year = digits(bytes, at, 4)?;
    at += 4;
    let next = spaces(bytes, at);
    if next == at {
        return None;
    }
    at = next;
    let hour = digits(bytes, at, 2)?;
    if bytes.get(at + 2) != Some(&b':') {
        return None;
    }
    let minute = digits(bytes, at + 3, 2)?;
    if bytes.get(at + 5) != Some(&b':') {
        return None;
    }
    let second = digits(bytes, at + 6, 2)?;
    at += 8;
    let next = spaces(bytes, at);
    if next == at {
        return None;
    }
    at = next;
    let sign: i64 = match bytes.get(at)? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let off_hours = digits(bytes, at + 1, 2)?;
    let off_minutes = digits(bytes, at + 3, 2)?;
    at += 5;
    // (?:\s+\([^()]*\))?  then the end
    if at < bytes.len() {
        let next = spaces(bytes, at);
        if next == at
            || next + 1 >= bytes.len()
            || bytes[next] != b'('
            || bytes.last() != Some(&b')')
        {
            return None;
        }
        if bytes[next + 1..bytes.len() - 1]
            .iter()
            .any(|&b| b == b'(' || b == b')')
        {
            return None;
        }
    }
    if off_minutes > 59 {
        return None;
    }
    Some(Moment {
        year,
        month,
        day,
        hour,
        minute,
        second,
        micros: 0,
        offset_minutes: sign * i64::from(off_hours * 60 + off_minutes),
    })
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z | [ ]+HH:MM | [ ]-HH:MM]`, as base.py's ISO
/// branch reads it (fraction cut to six digits; no offset means UTC).
fn iso(bytes: &[u8]) -> Option<Moment> {
    let year = digits(bytes, 0, 4)?;
    if bytes.get(4) != Some(&b'-') || bytes.get(7) != Some(&b'-') {
        return None;
    }
    let month = digits(bytes, 5, 2)?;
    let day = digits(bytes, 8, 2)?;
    if !matches!(bytes.get(10), Some(b'T' | b' ')) {
        return None;
    }
    let hour = digits(bytes, 11, 2)?;
    if bytes.get(13) != Some(&b':') || bytes.get(16) != Some(&b':') {
        return None;
    }
    let minute = digits(bytes, 14, 2)?;
    let second = digits(bytes, 17, 2)?;
    let mut at = 19;
    let mut micros = 0u32;
    if bytes.get(at) == Some(&b'.') {
        let count = bytes[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if count == 0 || count > 9 {
            return None;
        }
        let kept = count.min(6);
        micros = digits(bytes, at + 1, kept)? * 10u32.pow((6 - kept) as u32);
        at += 1 + count;
    }
    let offset_minutes = match &bytes[at..] {
        [] => 0,
        [b'Z'] => 0,
        rest => {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            let sign: i64 = match rest.first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest[3] != b':' {
                return None;
            }
            let hours = digits(rest, 1, 2)?;
            let minutes = digits(rest, 4, 2)?;
            if minutes > 59 {
                return None;
            }
            sign * i64::from(hours * 60 + minutes)
        }
    };
    Some(Moment {
        year,
        month,
        day,
        hour,
        minute,
        second,
        micros,
        offset_minutes,
    })
}

/// `parse_time(text)` for a printable-ASCII, non-empty string, or `None` (decline).
pub fn parse_time(value: &str, min_ts: i64, max_ts: i64, out: &mut String) -> bool {
    let text = value.trim_matches(' ').as_bytes();
    // Digits with at most one dot are Unix seconds in base.py: not handled here.
    if text.is_empty()
        || text.len() > 64
        || text.iter().filter(|&&b| b == b'.').count() <= 1
            && text.iter().all(|b| b.is_ascii_digit() || *b == b'.')
    {
        return false;
    }
    let moment = if text.len() >= 4 && text[..4].iter().all(u8::is_ascii_digit) {
        iso(text)
    } else {
        rfc5322(text)
    };
    match moment {
        Some(moment) => moment.format(min_ts, max_ts, out),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    const MIN: i64 = 946_684_800;
    const MAX: i64 = 4_102_444_800;

    fn parse(text: &str) -> Option<String> {
        let mut out = String::new();
        parse_time(text, MIN, MAX, &mut out).then_some(out)
    }

    #[test]
    fn rfc5322_dates() {
        assert_eq!(
            parse("Fri, 14 Mar 2025 09:12:05 +0000").as_deref(),
            Some("2025-03-14T09:12:05.000Z")
        );
        assert_eq!(
            parse("1 jan 2025 00:30:00 +0100 (CET)").as_deref(),
            Some("2024-12-31T23:30:00.000Z")
        );
        assert_eq!(
            parse("Mon,14 Mar 2025 23:59:59 -0230").as_deref(),
            Some("2025-03-15T02:29:59.000Z")
        );
        assert_eq!(
            parse("29 Feb 2024 10:00:00 +0000").as_deref(),
            Some("2024-02-29T10:00:00.000Z")
        );
        for bad in [
            "29 Feb 2025 10:00:00 +0000",
            "14 Mar 2025 09:12 +0000",
            "14 Mar 2025 09:12:05 GMT",
            "14 Foo 2025 09:12:05 +0000",
            "14 Mar 1999 09:12:05 +0000",
            "14 Mar 2025 24:00:00 +0000",
            "14 Mar 2025 09:12:05 +2400",
            "14 Mar 2025 09:12:05 +0000 (a(b))",
            "114 Mar 2025 09:12:05 +0000",
            "12345",
            "1.5",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn iso_times() {
        assert_eq!(
            parse("2025-03-14T09:12:05Z").as_deref(),
            Some("2025-03-14T09:12:05.000Z")
        );
        assert_eq!(
            parse("2025-03-14 09:12:05.1234567 +05:30").as_deref(),
            Some("2025-03-14T03:42:05.123Z")
        );
        assert_eq!(
            parse("2025-03-14T09:12:05.9").as_deref(),
            Some("2025-03-14T09:12:05.900Z")
        );
        assert_eq!(
            parse("2099-12-31T23:59:59.999Z").as_deref(),
            Some("2099-12-31T23:59:59.999Z")
        );
        assert_eq!(
            parse("2100-01-01T00:00:00Z").as_deref(),
            Some("2100-01-01T00:00:00.000Z")
        );
        for bad in [
            "2100-01-01T00:00:00.001Z",
            "2025-03-14T09:12Z",
            "2025-03-14T09:12:05 Z",
            "2025-03-14T09:12:05+0000",
            "2025-13-01T00:00:00Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
