//! RFC 3339 timestamps in UTC: `2024-01-02T03:04:05Z`, with or without a fraction.
//!
//! Writing: always `Z`, a four-digit year for years 0000-9999 (others, which RFC 3339 cannot
//! express, are written with a sign or more digits rather than refused, so formatting never
//! fails), and the fraction chosen by [`Fraction`].
//!
//! Reading: `YYYY-MM-DD` `T`|`t`|space `HH:MM:SS` [`.` one or more digits] then `Z`, `z` or
//! `±HH:MM` (`-00:00` is UTC). Fraction digits past the ninth are read and ignored. Refused: a
//! day not in its month, hour > 23, minute > 59, second 60 (leap seconds), an offset hour > 23
//! or minute > 59, any other offset spelling (`+0100`, `+1:00`), and anything after the offset.
//! [`parse_rfc3339_or_naive_utc`] also reads a missing offset as UTC, as Python's naive
//! `datetime.isoformat()` writes it (Chaos Toolkit journals).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::civil::{civil_from_days, days_from_civil, days_in_month};

/// How much of the second a formatted time shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fraction {
    /// `2024-01-02T03:04:05Z`, the fraction dropped (not rounded), as Vault prints times.
    None,
    /// `…05.123Z`, always three digits.
    Millis,
    /// `…05.123456Z`, always six digits.
    Micros,
    /// `…05.123456789Z`, always nine digits.
    Nanos,
    /// Go's `RFC3339Nano`: nine digits with trailing zeros trimmed, no dot for a whole second.
    Trimmed,
}

/// `2024-01-02T03:04:05Z`: [`format_rfc3339`] with [`Fraction::None`].
pub fn rfc3339(t: SystemTime) -> String {
    format_rfc3339(t, Fraction::None)
}

/// A `SystemTime` in RFC 3339, UTC. Times before 1970 are written as the dates they are.
pub fn format_rfc3339(t: SystemTime, fraction: Fraction) -> String {
    let (secs, nanos) = split(t);
    format_rfc3339_unix(secs, nanos, fraction)
}

/// Seconds since the epoch (negative before 1970) and nanoseconds within that second
/// (`nanos` ≥ 10^9 is read as 999 999 999) in RFC 3339, UTC.
pub fn format_rfc3339_unix(secs: i64, nanos: u32, fraction: Fraction) -> String {
    let nanos = nanos.min(999_999_999);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Whole seconds in years 0-9999, what every API answer carries: written digit by digit,
    // without the formatting machinery (a KV v2 read formats one or two per request).
    if fraction == Fraction::None
        && let Ok(year) = u32::try_from(y)
        && year <= 9999
    {
        let mut out = String::with_capacity(20);
        let mut two = |n: i64, sep: Option<char>| {
            // Components are in range: month, day, hour, minute, second are < 100.
            let n = n.unsigned_abs() % 100;
            out.push(char::from(b'0' + (n / 10) as u8));
            out.push(char::from(b'0' + (n % 10) as u8));
            if let Some(c) = sep {
                out.push(c);
            }
        };
        two(i64::from(year / 100), None);
        two(i64::from(year % 100), Some('-'));
        two(i64::from(m), Some('-'));
        two(i64::from(d), Some('T'));
        two(h, Some(':'));
        two(mi, Some(':'));
        two(s, Some('Z'));
        return out;
    }
    let frac = match fraction {
        Fraction::None => String::new(),
        Fraction::Millis => format!(".{:03}", nanos / 1_000_000),
        Fraction::Micros => format!(".{:06}", nanos / 1_000),
        Fraction::Nanos => format!(".{nanos:09}"),
        Fraction::Trimmed if nanos == 0 => String::new(),
        Fraction::Trimmed => format!(".{}", format!("{nanos:09}").trim_end_matches('0')),
    };
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}Z")
}

/// Why a string is not an RFC 3339 time. Carries no part of the input: callers name the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339Error(&'static str);

impl fmt::Display for Rfc3339Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an RFC 3339 time (YYYY-MM-DDTHH:MM:SSZ): {}", self.0)
    }
}

impl std::error::Error for Rfc3339Error {}

/// Reads an RFC 3339 time (the forms in this module's header); the offset is required.
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, Rfc3339Error> {
    parse(s, false)
}

/// [`parse_rfc3339`], except that a missing offset means UTC: `2024-01-02T03:04:05.678901` as
/// Python's naive `isoformat()` writes it.
pub fn parse_rfc3339_or_naive_utc(s: &str) -> Result<SystemTime, Rfc3339Error> {
    parse(s, true)
}

fn parse(s: &str, naive_is_utc: bool) -> Result<SystemTime, Rfc3339Error> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return Err(Rfc3339Error("too short"));
    }
    let punct = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if punct.iter().any(|&(i, c)| b[i] != c) || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(Rfc3339Error("separators out of place"));
    }
    let bad_digits = || Rfc3339Error("a date or time field is not all digits");
    let year = i64::from(digits(&b[0..4]).ok_or_else(bad_digits)?);
    let month = digits(&b[5..7]).ok_or_else(bad_digits)?;
    let day = digits(&b[8..10]).ok_or_else(bad_digits)?;
    let hour = digits(&b[11..13]).ok_or_else(bad_digits)?;
    let minute = digits(&b[14..16]).ok_or_else(bad_digits)?;
    let second = digits(&b[17..19]).ok_or_else(bad_digits)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(Rfc3339Error("no such date"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(Rfc3339Error("no such time of day (leap seconds are not read)"));
    }
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err(Rfc3339Error("a dot without digits"));
        }
        // Nine digits are nanoseconds; further digits are below what SystemTime keeps.
        for i in 0..9 {
            nanos = nanos * 10 + frac.get(i).filter(|_| i < n).map_or(0, |c| u32::from(c - b'0'));
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        b"" if naive_is_utc => 0,
        b"" => return Err(Rfc3339Error("no offset (Z or ±HH:MM)")),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = digits(&[*h1, *h2]).ok_or(Rfc3339Error("offset is not ±HH:MM"))?;
            let om = digits(&[*m1, *m2]).ok_or(Rfc3339Error("offset is not ±HH:MM"))?;
            if oh > 23 || om > 59 {
                return Err(Rfc3339Error("offset out of range"));
            }
            let secs = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return Err(Rfc3339Error("offset is not Z or ±HH:MM")),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset;
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    t.ok_or(Rfc3339Error("outside what this system's clock can hold"))
}

/// The value of a run of ASCII digits (at most four here, so no overflow).
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
}

/// Seconds since the epoch (floor, so negative before 1970) and nanoseconds within the second.
fn split(t: SystemTime) -> (i64, u32) {
    let clamp = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (clamp(d.as_secs()), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            match d.subsec_nanos() {
                0 => (-clamp(d.as_secs()), 0),
                n => (-clamp(d.as_secs()) - 1, 1_000_000_000 - n),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: test code
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn known_instants_format_as_vault_and_go_print_them() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400, 0)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_700_000_000, 0)), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(at(1_780_000_000, 0)), "2026-05-28T20:26:40Z");
        let t = at(1_700_000_000, 123_450_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z", "the fraction is dropped, not rounded");
        assert_eq!(format_rfc3339(t, Fraction::Trimmed), "2023-11-14T22:13:20.12345Z");
        assert_eq!(format_rfc3339(at(1, 0), Fraction::Trimmed), "1970-01-01T00:00:01Z");
        assert_eq!(format_rfc3339(t, Fraction::Millis), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_rfc3339(at(1, 0), Fraction::Millis), "1970-01-01T00:00:01.000Z");
        assert_eq!(format_rfc3339(t, Fraction::Micros), "2023-11-14T22:13:20.123450Z");
        assert_eq!(format_rfc3339(t, Fraction::Nanos), "2023-11-14T22:13:20.123450000Z");
        let before = UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(format_rfc3339(before, Fraction::Millis), "1969-12-31T23:59:59.500Z");
        assert_eq!(format_rfc3339_unix(-62_167_219_200, 0, Fraction::None), "0000-01-01T00:00:00Z");
    }

    proptest! {
        #[test]
        fn whole_seconds_are_written_as_the_general_formatter_writes_them(
            secs in -62_167_219_200i64..253_402_300_800,
        ) {
            let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            let (y, m, d) = civil_from_days(days);
            let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
            let general = format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z");
            prop_assert_eq!(format_rfc3339_unix(secs, 0, Fraction::None), general);
        }
    }

    #[test]
    fn offsets_and_fractions_are_read_exactly() {
        let t = at(1_796_444_367, 0);
        assert_eq!(parse_rfc3339(&rfc3339(t)), Ok(t));
        assert_eq!(
            parse_rfc3339("2024-02-29T01:00:00+01:00"),
            parse_rfc3339("2024-02-29T00:00:00Z")
        );
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Ok(UNIX_EPOCH));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00+00:00"), Ok(UNIX_EPOCH));
        assert_eq!(parse_rfc3339("1969-12-31T23:30:00-00:30"), Ok(UNIX_EPOCH));
        assert_eq!(parse_rfc3339("1970-01-01 00:00:00z"), Ok(UNIX_EPOCH));
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00.5Z"), Ok(at(1_704_067_200, 500_000_000)));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Ok(at(1, 500_000_000)));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.123456789999Z"), Ok(at(0, 123_456_789)));
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59.25Z"),
            Ok(UNIX_EPOCH - Duration::from_millis(750))
        );
        assert_eq!(parse_rfc3339_or_naive_utc("2024-02-29T00:00:00"), Ok(at(1_709_164_800, 0)));
        assert_eq!(
            parse_rfc3339_or_naive_utc("2026-01-02T03:04:05.678901"),
            parse_rfc3339("2026-01-02T03:04:05.678901Z")
        );
        assert!(parse_rfc3339("2024-02-29T00:00:00").is_err(), "the offset is required");
    }

    #[test]
    fn malformed_times_are_refused() {
        for bad in [
            "",
            "yesterday",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2024-01-00T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2016-12-31T23:59:60Z",
            "x024-01-01T00:00:00Z",
            "+024-01-01T00:00:00Z",
            "2024-01-01T00x00x00Z",
            "2024-01-01X00:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00+1:00",
            "2024-01-01T00:00:00+-1:00",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00+01:60",
            "2024-01-01T00:00:00ZZ",
            "2024-01-01T00:00:00Z ",
            "2024-01-01T00:00:00UTC",
            "2024-01-01T00:00:0µZ",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
            if bad.len() != 19 {
                assert!(parse_rfc3339_or_naive_utc(bad).is_err(), "{bad:?}");
            }
        }
        let e = parse_rfc3339("2024-02-30T00:00:00Z").unwrap_err().to_string();
        assert!(e.contains("no such date"), "{e}");
    }

    proptest! {
        #[test]
        fn every_fraction_round_trips(
            secs in -62_167_219_200i64..253_402_300_800,
            nanos in 0u32..1_000_000_000,
        ) {
            let exact = format_rfc3339_unix(secs, nanos, Fraction::Nanos);
            let trimmed = format_rfc3339_unix(secs, nanos, Fraction::Trimmed);
            let t = parse_rfc3339(&exact).unwrap();
            prop_assert_eq!(parse_rfc3339(&trimmed).unwrap(), t);
            prop_assert_eq!(split(t), (secs, nanos));
            prop_assert_eq!(format_rfc3339(t, Fraction::Nanos), exact);
            let whole = parse_rfc3339(&format_rfc3339_unix(secs, nanos, Fraction::None)).unwrap();
            prop_assert_eq!(split(whole), (secs, 0));
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}", t in "[0-9T:+.Zz -]{15,35}") {
            let _ = parse_rfc3339(&s);
            let _ = parse_rfc3339_or_naive_utc(&t);
        }
    }
}
