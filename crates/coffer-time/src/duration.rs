//! Durations in Go's syntax, as Vault and its tools write them: `90s`, `1h30m`, `250ms`,
//! `1.5h`, plus Vault's `d` (24 hours).
//!
//! The grammar ([`parse_duration`]) is Go's `time.ParseDuration` without the sign: one or more
//! components, each a decimal number (`5`, `1.5`, `.5`, `5.`) followed by a unit (`ns`, `us`,
//! `µs` U+00B5, `μs` U+03BC, `ms`, `s`, `m`, `h`, `d`); a lone `0` is zero. Surrounding ASCII
//! whitespace is ignored; whitespace inside is refused (`5 m`). Arithmetic is in integer
//! nanoseconds; a fraction finer than a nanosecond is truncated, and digits past the 18th of a
//! fraction are read and ignored (Go does the same). The ceiling is [`Duration::MAX`], reported
//! as [`DurationError::Overflow`] so a caller can saturate or name its own limit.
//!
//! Bare numbers, which Go refuses, are read by two named functions because callers differ:
//! [`parse_duration_or_secs`] takes whole seconds (`"3600"`, Vault's `ParseDurationSecond`),
//! [`parse_secs`] takes a decimal number of seconds (`"1.5"`). Vault's 292-year ceiling and
//! rounding to whole seconds are not here: `coffer_core::time` applies them.

use std::fmt;
use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;
/// Nanoseconds in [`Duration::MAX`].
const MAX_NANOS: u128 = u64::MAX as u128 * NANOS_PER_SEC + (NANOS_PER_SEC - 1);
/// Fraction digits kept: 10^18 times the longest unit (a day, 8.64e13 ns) fits a u128.
const FRACTION_DIGITS: u32 = 18;

/// Why a string is not a duration. Carries no part of the input: callers name the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    Empty,
    /// A component does not start with a number (this includes a sign: `-5s`).
    ExpectedNumber,
    /// A number without a unit (`10m5`), which only [`parse_duration_or_secs`] and
    /// [`parse_secs`] accept, and only alone.
    MissingUnit,
    UnknownUnit,
    /// Longer than [`Duration::MAX`].
    Overflow,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self {
            DurationError::Empty => "empty",
            DurationError::ExpectedNumber => "expected a number (no sign)",
            DurationError::MissingUnit => "a number without a unit",
            DurationError::UnknownUnit => "unknown unit (use ns, us, ms, s, m, h or d)",
            DurationError::Overflow => "too long",
        };
        write!(f, "invalid duration: {why}")
    }
}

impl std::error::Error for DurationError {}

/// Go duration syntax (see the module header); a bare number other than `0` is refused.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim_ascii();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = Some(0u128);
    while !rest.is_empty() {
        let (number, after) = Decimal::read(rest)?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "" => return Err(DurationError::MissingUnit),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            "d" => 86_400 * NANOS_PER_SEC,
            _ => return Err(DurationError::UnknownUnit),
        };
        // An overflow is reported only once the whole string is known to be well formed, so
        // that `99999999999999999999999x` is a bad unit, not a long duration.
        total = total.zip(number.nanos(scale)).and_then(|(t, n)| t.checked_add(n));
        rest = next;
    }
    to_duration(total)
}

/// [`parse_duration`], or a bare whole number of seconds (`"3600"`): Vault's
/// `ParseDurationSecond`. A bare fraction (`"1.5"`) is refused, as Vault refuses it.
pub fn parse_duration_or_secs(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim_ascii();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        // All digits, so the only way to fail is a number beyond u64.
        return t.parse().map(Duration::from_secs).map_err(|_| DurationError::Overflow);
    }
    parse_duration(s)
}

/// A bare decimal number of seconds (`"60"`, `"1.5"`, `".25"`), read as exactly as a
/// component of [`parse_duration`]. Anything else, units included, is refused.
pub fn parse_secs(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim_ascii();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    match Decimal::read(s)? {
        (number, "") => to_duration(number.nanos(NANOS_PER_SEC)),
        _ => Err(DurationError::ExpectedNumber),
    }
}

fn to_duration(nanos: Option<u128>) -> Result<Duration, DurationError> {
    let nanos = nanos.filter(|n| *n <= MAX_NANOS).ok_or(DurationError::Overflow)?;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| DurationError::Overflow)?;
    // The remainder of a division by 10^9 fits a u32.
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// `int.frac` as read: `int` is None once it exceeds a u128; `frac / frac_scale` < 1.
struct Decimal {
    int: Option<u128>,
    frac: u128,
    frac_scale: u128,
}

impl Decimal {
    /// Reads digits, an optional dot and digits (at least one digit in all) from the start.
    fn read(s: &str) -> Result<(Decimal, &str), DurationError> {
        let b = s.as_bytes();
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut n = Decimal { int: Some(0), frac: 0, frac_scale: 1 };
        for c in &b[..int_len] {
            n.int = n.int.and_then(|v| v.checked_mul(10)?.checked_add(u128::from(c - b'0')));
        }
        let mut end = int_len;
        let mut frac_len = 0;
        if b.get(int_len) == Some(&b'.') {
            frac_len = b[int_len + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            for c in b[int_len + 1..].iter().take(frac_len.min(FRACTION_DIGITS as usize)) {
                n.frac = n.frac * 10 + u128::from(c - b'0');
                n.frac_scale *= 10;
            }
            end = int_len + 1 + frac_len;
        }
        if int_len + frac_len == 0 {
            return Err(DurationError::ExpectedNumber);
        }
        // `end` follows ASCII bytes only, so it is a char boundary.
        Ok((n, &s[end..]))
    }

    /// The number times `scale` nanoseconds, fraction truncated; None beyond a u128.
    fn nanos(&self, scale: u128) -> Option<u128> {
        self.int?.checked_mul(scale)?.checked_add(self.frac * scale / self.frac_scale)
    }
}

/// Whole seconds as Go's `time.Duration.String` writes them, which is how Vault answers a
/// duration in a read: `0s`, `45s`, `1m30s`, `1h30m0s`.
pub fn format_go(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// [`format_go`] without its zero parts (`2h`, `1h30m`, `1h5s`), as Vault words durations in
/// its warnings (its SDK's `humanDuration`).
pub fn format_human(secs: u64) -> String {
    let mut s = format_go(secs);
    if secs == 0 {
        return s;
    }
    if s.ends_with("m0s") {
        s.truncate(s.len() - 2);
    }
    if let Some(i) = s.find("h0m") {
        s.replace_range(i + 1..i + 3, "");
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: test code
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn secs(n: u64) -> Result<Duration, DurationError> {
        Ok(Duration::from_secs(n))
    }

    #[test]
    fn go_syntax_reads_every_unit() {
        assert_eq!(parse_duration("90s"), secs(90));
        assert_eq!(parse_duration("1m30s"), secs(90));
        assert_eq!(parse_duration("30m"), secs(1800));
        assert_eq!(parse_duration("768h"), secs(768 * 3600));
        assert_eq!(parse_duration("1h30m10s"), secs(5410));
        assert_eq!(parse_duration("2d"), secs(172_800));
        assert_eq!(parse_duration("1.5h"), secs(5400));
        assert_eq!(parse_duration("0"), secs(0));
        assert_eq!(parse_duration("0s"), secs(0));
        assert_eq!(parse_duration(" 90s\n"), secs(90));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5.s"), secs(5));
        assert_eq!(parse_duration("1.1s"), Ok(Duration::new(1, 100_000_000)));
        assert_eq!(parse_duration("3us"), Ok(Duration::from_micros(3)));
        assert_eq!(parse_duration("3µs"), Ok(Duration::from_micros(3)));
        assert_eq!(parse_duration("3μs"), Ok(Duration::from_micros(3)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("1.9ns"), Ok(Duration::from_nanos(1)), "truncated as in Go");
        assert_eq!(
            parse_duration("0.1000000000000000000009s"),
            Ok(Duration::from_millis(100)),
            "fraction digits past the 18th are ignored"
        );
    }

    #[test]
    fn malformed_durations_are_refused_with_the_reason() {
        use DurationError::*;
        for (bad, why) in [
            ("", Empty),
            ("  ", Empty),
            ("s", ExpectedNumber),
            ("h", ExpectedNumber),
            ("m5", ExpectedNumber),
            ("-5s", ExpectedNumber),
            ("+5s", ExpectedNumber),
            (".s", ExpectedNumber),
            ("1.5", MissingUnit),
            ("10m5", MissingUnit),
            ("1s2", MissingUnit),
            ("1..5s", MissingUnit),
            ("60", MissingUnit),
            ("5x", UnknownUnit),
            ("10x", UnknownUnit),
            ("5 m", UnknownUnit),
            ("1hm", UnknownUnit),
            ("99999999999999999999999999999999999999999x", UnknownUnit),
            ("99999999999999999999999h", Overflow),
            ("18446744073709551616s", Overflow),
            ("999999999999999999999999999999999999999999s", Overflow),
        ] {
            assert_eq!(parse_duration(bad), Err(why), "{bad:?}");
        }
        assert_eq!(parse_duration("18446744073709551615.999999999s"), Ok(Duration::MAX));
        assert_eq!(parse_duration("18446744073709551615s999999999ns"), Ok(Duration::MAX));
        assert_eq!(parse_duration("18446744073709551615s1000000000ns"), Err(Overflow));
    }

    #[test]
    fn durations_are_written_as_go_and_vault_write_them() {
        for (secs, go, human) in [
            (0, "0s", "0s"),
            (45, "45s", "45s"),
            (90, "1m30s", "1m30s"),
            (120, "2m0s", "2m"),
            (3605, "1h0m5s", "1h5s"),
            (5400, "1h30m0s", "1h30m"),
            (7200, "2h0m0s", "2h"),
            (2_764_800, "768h0m0s", "768h"),
        ] {
            assert_eq!(format_go(secs), go);
            assert_eq!(format_human(secs), human);
        }
    }

    #[test]
    fn bare_numbers_are_seconds_only_where_asked() {
        assert_eq!(parse_duration_or_secs("3600"), secs(3600));
        assert_eq!(parse_duration_or_secs(" 90 "), secs(90));
        assert_eq!(parse_duration_or_secs("1h30m"), secs(5400));
        assert_eq!(parse_duration_or_secs("1.5"), Err(DurationError::MissingUnit));
        assert_eq!(parse_duration_or_secs("18446744073709551615"), secs(u64::MAX));
        assert_eq!(parse_duration_or_secs("18446744073709551616"), Err(DurationError::Overflow));
        assert_eq!(parse_secs("60"), secs(60));
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs(".25"), Ok(Duration::from_millis(250)));
        for bad in ["", "1s", "1e3", "+5", "-1", "inf", "NaN", "1.2.3"] {
            assert!(parse_secs(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn components_add_up(h in 0u64..10_000, m in 0u64..100, s in 0u64..100, ms in 0u64..1000) {
            let want = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format!("{h}h{m}m{s}s{ms}ms")), Ok(want));
            prop_assert_eq!(parse_duration_or_secs(&format!("{h}h{m}m{s}s{ms}ms")), Ok(want));
        }

        #[test]
        fn fractions_are_exact(whole in 0u64..1_000_000, nanos in 0u32..1_000_000_000) {
            let want = Duration::new(whole, nanos);
            prop_assert_eq!(parse_duration(&format!("{whole}.{nanos:09}s")), Ok(want));
            prop_assert_eq!(parse_secs(&format!("{whole}.{nanos:09}")), Ok(want));
            let ms = format!("{}.{:06}ms", whole * 1000 + u64::from(nanos / 1_000_000), nanos % 1_000_000);
            prop_assert_eq!(parse_duration(&ms), Ok(want));
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,30}", t in "[0-9.a-zµμ ]{0,30}") {
            let _ = parse_duration(&s);
            let _ = parse_duration_or_secs(&t);
            let _ = parse_secs(&t);
        }
    }
}
