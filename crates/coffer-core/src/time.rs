//! Time as Vault clients expect it: Unix seconds, RFC 3339 in UTC, and durations (`30m`,
//! `768h`, seconds) bounded to what Vault's own duration type can hold.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// RFC 3339 in UTC, as Vault prints times (`2024-01-02T03:04:05Z`).
pub fn rfc3339(unix: u64) -> String {
    let (y, m, d) = civil_from_days((unix / 86_400) as i64);
    let secs = unix % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// RFC 3339 in UTC with the fraction of the second, trailing zeros trimmed, as Go prints a
/// `time.Time` (`2024-01-02T03:04:05.123456789Z`): the `time` of an event notification.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let whole = rfc3339(d.as_secs());
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        return whole;
    }
    let frac = format!("{nanos:09}");
    format!("{}.{}Z", whole.trim_end_matches('Z'), frac.trim_end_matches('0'))
}

/// (year, month 1-12, day 1-31) of a day number since 1970-01-01, in the proleptic Gregorian
/// calendar (Howard Hinnant's civil-from-days).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The longest duration accepted from a request or a config file: what Vault's (Go's)
/// `time.Duration` can hold, about 292 years. Anything longer is refused, so that adding a TTL to
/// a Unix time can never overflow.
pub const MAX_DURATION_SECS: u64 = (i64::MAX / 1_000_000_000) as u64;

/// Parses a duration as Vault accepts it: whole seconds (`3600`, as a number or string) or a Go
/// duration string (`90s`, `30m`, `768h`, `1h30m`, also `d` for days), at most
/// [`MAX_DURATION_SECS`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    parse_duration_unbounded(s).filter(|d| d.as_secs() <= MAX_DURATION_SECS)
}

/// [`parse_duration`] without the ceiling (huge values saturate at `u64::MAX` seconds; nothing
/// overflows), for values stored before the ceiling existed.
pub fn parse_duration_unbounded(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        // Whole seconds beyond u64 saturate too, so the caller can name its limit.
        return Some(Duration::from_secs(s.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let value: f64 = num.parse().ok()?;
        num.clear();
        let scale = match unit.as_str() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return None,
        };
        total += value * scale;
        any = true;
    }
    if !num.is_empty() || !any || !total.is_finite() || total < 0.0 {
        return None;
    }
    // `as` saturates: a value beyond u64 becomes u64::MAX seconds, never a panic or a wrap.
    Some(Duration::from_secs(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logical::fields::duration_field;

    #[test]
    fn nanosecond_times_print_as_go_does() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_450_000);
        assert_eq!(rfc3339_nanos(t), "2023-11-14T22:13:20.12345Z");
        assert_eq!(rfc3339_nanos(UNIX_EPOCH + Duration::from_secs(1)), "1970-01-01T00:00:01Z");
    }

    #[test]
    fn durations_parse_like_vault() {
        assert_eq!(parse_duration("3600"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("768h"), Some(Duration::from_secs(768 * 3600)));
        assert_eq!(parse_duration("1h30m10s"), Some(Duration::from_secs(5410)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        for bad in ["", "h", "10x", "10m5", "-5s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
    #[test]
    fn durations_beyond_vaults_range_are_refused_without_overflow() {
        let max = MAX_DURATION_SECS;
        assert_eq!(parse_duration(&max.to_string()), Some(Duration::from_secs(max)));
        for huge in [
            (max + 1).to_string(),
            u64::MAX.to_string(),
            "18446744073709551616".to_owned(),
            "99999999999999999999999h".to_owned(),
            format!("{}h", u64::MAX),
        ] {
            assert_eq!(parse_duration(&huge), None, "{huge}");
            let e = duration_field(&serde_json::json!(huge), "ttl").expect_err(&huge);
            assert!(e.to_string().contains(&max.to_string()), "names the limit: {e}");
        }
        assert!(duration_field(&serde_json::json!(u64::MAX), "ttl").is_err());
        for huge in ["99999999999999999999999h", "18446744073709551616"] {
            assert_eq!(
                parse_duration_unbounded(huge),
                Some(Duration::from_secs(u64::MAX)),
                "{huge}"
            );
        }
    }
    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
