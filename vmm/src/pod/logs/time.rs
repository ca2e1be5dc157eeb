//! Log timestamps: RFC 3339 in UTC with nanoseconds, as CRI log records
//! carry them, and the `--since`/`--until` values `husk logs` takes
//! (RFC 3339, a date, Unix seconds, or a duration before now such as
//! `10m`, as `docker logs` does).
//!
//! Written by hand (the civil-date conversion is Howard Hinnant's
//! `days_from_civil`/`civil_from_days`): about sixty lines, against adding a
//! date crate to the `husk` binary that every pod's VMM runs.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (UTC). Times before 1970 are not logged.
pub type Nanos = u64;

const NS: u64 = 1_000_000_000;

/// Now, in nanoseconds since the epoch.
pub fn now() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-12-06T17:05:08.123456789Z`: always nine fraction digits, so every
/// record's timestamp has the same width (RFC 3339 and Go's RFC3339Nano
/// parser, which CRI tools use, accept it).
pub fn format(t: Nanos) -> String {
    let secs = (t / NS) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        t % NS
    )
}

/// Parses an RFC 3339 time (`2026-12-06T17:05:08Z`, with any fraction and
/// a `Z` or `±hh:mm` offset; a space for the `T` and a lower-case `t`/`z`
/// are accepted) or a date alone (`2026-12-06`, midnight UTC).
pub fn parse_rfc3339(text: &str) -> Option<Nanos> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(i64::from(y), mo) {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    if b.len() == 10 {
        return to_nanos(days * 86_400, 0);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 20 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac: u64 = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                frac = frac * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            frac *= 10;
        }
    }
    let offset: i64 = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            let oh = i64::from(num(i + 1..i + 3)?);
            let om = i64::from(num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s) - offset;
    to_nanos(secs, frac)
}

fn to_nanos(secs: i64, frac: u64) -> Option<Nanos> {
    u64::try_from(secs).ok()?.checked_mul(NS)?.checked_add(frac)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A duration such as `10m`, `1h30m`, `45s`, `500ms`, `2d` (Go's units as
/// `docker logs --since` takes them, and `d` for days).
pub fn parse_duration(text: &str) -> Option<Nanos> {
    let mut rest = text;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u64 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => NS,
            "m" => 60 * NS,
            "h" => 3600 * NS,
            "d" => 86_400 * NS,
            _ => return None,
        };
        let value: f64 = number.parse().ok()?;
        let ns = value * scale as f64;
        if !ns.is_finite() || !(0.0..=1e19).contains(&ns) {
            return None;
        }
        total = total.checked_add(ns as u64)?;
        rest = tail;
    }
    Some(total)
}

/// A `--since`/`--until` value: RFC 3339, a date, Unix seconds (with an
/// optional fraction), or a duration before `now`.
pub fn parse_point(text: &str, now: Nanos) -> Result<Nanos, String> {
    let t = text.trim();
    if let Some(v) = parse_rfc3339(t) {
        return Ok(v);
    }
    if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
        let secs: u64 = secs.parse().map_err(|_| bad_point(text))?;
        let mut f: u64 = 0;
        for (i, c) in frac.bytes().take(9).enumerate() {
            f += u64::from(c - b'0') * 10u64.pow(8 - i as u32);
        }
        return secs
            .checked_mul(NS)
            .and_then(|s| s.checked_add(f))
            .ok_or_else(|| bad_point(text));
    }
    match parse_duration(t) {
        Some(d) => Ok(now.saturating_sub(d)),
        None => Err(bad_point(text)),
    }
}

fn bad_point(text: &str) -> String {
    format!(
        "{text:?}: expected an RFC 3339 time (2026-12-06T17:05:08Z), a date, Unix seconds, or a duration such as 10m or 1h30m"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_round_trip() {
        assert_eq!(format(0), "1970-01-01T00:00:00.000000000Z");
        let t = 1_796_576_708_123_456_789;
        let s = format(t);
        assert_eq!(s, "2026-12-06T17:05:08.123456789Z");
        assert_eq!(parse_rfc3339(&s), Some(t));
        // Leap day, end of a century.
        let leap = parse_rfc3339("2000-02-29T23:59:59Z").unwrap();
        assert_eq!(format(leap), "2000-02-29T23:59:59.000000000Z");
        assert_eq!(format(leap + NS), "2000-03-01T00:00:00.000000000Z");
    }

    #[test]
    fn rfc3339_variants() {
        let z = parse_rfc3339("2026-12-06T17:05:08Z").unwrap();
        assert_eq!(parse_rfc3339("2026-12-06T18:05:08+01:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-12-06 16:05:08-01:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-12-06T17:05:08.5Z"), Some(z + NS / 2));
        assert_eq!(
            parse_rfc3339("2026-12-06T17:05:08.1234567891Z"),
            Some(z + 123_456_789)
        );
        assert_eq!(
            parse_rfc3339("2026-12-06"),
            Some(z - (17 * 3600 + 5 * 60 + 8) * NS)
        );
        for bad in [
            "",
            "2026-13-01",
            "2026-02-30",
            "2026-12-06T25:00:00Z",
            "2026-12-06T17:05:08",
            "2026-12-06T17:05:08.Z",
            "2026-12-06T17:05:08+1:00",
            "１２３４-12-06",
            "1969-12-31T23:59:59Z",
            "2026-12-06T17:05:08Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn durations_and_points() {
        assert_eq!(parse_duration("10m"), Some(600 * NS));
        assert_eq!(parse_duration("1h30m"), Some(5400 * NS));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("250ms"), Some(250_000_000));
        assert_eq!(parse_duration("2d"), Some(2 * 86_400 * NS));
        for bad in ["", "10", "m", "10x", "-5m", "1e400s", "1..2s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        let now = 10_000 * NS;
        assert_eq!(parse_point("10m", now), Ok(now - 600 * NS));
        assert_eq!(parse_point("100000h", now), Ok(0), "saturates at the epoch");
        assert_eq!(parse_point("1700000000", now), Ok(1_700_000_000 * NS));
        assert_eq!(
            parse_point("1700000000.25", now),
            Ok(1_700_000_000 * NS + NS / 4)
        );
        assert!(parse_point("yesterday", now)
            .unwrap_err()
            .contains("RFC 3339"));
        assert!(parse_point("99999999999999999999", now).is_err());
    }
}
