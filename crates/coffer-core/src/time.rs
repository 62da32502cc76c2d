//! Time as Vault clients expect it: Unix seconds, RFC 3339 in UTC, and durations (`30m`,
//! `768h`, seconds) bounded to what Vault's own duration type can hold. The calendar, RFC 3339
//! and Go-duration algorithms are `coffer_time`'s; this module adds Vault's rules on top (whole
//! seconds, the 292-year ceiling).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coffer_time::{DurationError, Fraction};
pub use coffer_time::{civil_from_days, format_go};

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// RFC 3339 in UTC, as Vault prints times (`2024-01-02T03:04:05Z`).
pub fn rfc3339(unix: u64) -> String {
    let secs = i64::try_from(unix).unwrap_or(i64::MAX);
    coffer_time::format_rfc3339_unix(secs, 0, Fraction::None)
}

/// RFC 3339 in UTC with the fraction of the second, trailing zeros trimmed, as Go prints a
/// `time.Time` (`2024-01-02T03:04:05.123456789Z`): the `time` of an event notification.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    coffer_time::format_rfc3339(t, Fraction::Trimmed)
}

/// The longest duration accepted from a request or a config file: what Vault's (Go's)
/// `time.Duration` can hold, about 292 years. Anything longer is refused, so that adding a TTL to
/// a Unix time can never overflow.
pub const MAX_DURATION_SECS: u64 = (i64::MAX / 1_000_000_000) as u64;

/// Parses a duration as Vault accepts it: whole seconds (`3600`, as a number or string) or a Go
/// duration string (`90s`, `30m`, `768h`, `1h30m`, also `d` for days), rounded to the nearest
/// whole second, at most [`MAX_DURATION_SECS`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    parse_duration_unbounded(s).filter(|d| d.as_secs() <= MAX_DURATION_SECS)
}

/// [`parse_duration`] without the ceiling (values beyond what a `Duration` holds saturate at
/// `u64::MAX` seconds; nothing overflows), for values stored before the ceiling existed.
pub fn parse_duration_unbounded(s: &str) -> Option<Duration> {
    match coffer_time::parse_duration_or_secs(s) {
        // Vault's TTLs are whole seconds; a half second rounds up.
        Ok(d) => {
            let up = u64::from(d.subsec_nanos() >= 500_000_000);
            Some(Duration::from_secs(d.as_secs().saturating_add(up)))
        }
        // Saturated rather than refused, so the caller can name its limit.
        Err(DurationError::Overflow) => Some(Duration::from_secs(u64::MAX)),
        Err(
            DurationError::Empty
            | DurationError::ExpectedNumber
            | DurationError::MissingUnit
            | DurationError::UnknownUnit,
        ) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logical::fields::duration_field;

    #[test]
    fn durations_parse_like_vault() {
        assert_eq!(parse_duration("3600"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("768h"), Some(Duration::from_secs(768 * 3600)));
        assert_eq!(parse_duration("1h30m10s"), Some(Duration::from_secs(5410)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        // Vault's TTLs are whole seconds: fractions round to the nearest one.
        assert_eq!(parse_duration("250ms"), Some(Duration::ZERO));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.4s"), Some(Duration::from_secs(1)));
        // A bare number is whole seconds only, as Vault's ParseDurationSecond reads it.
        for bad in ["", "h", "10x", "10m5", "-5s", "1.5"] {
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
}
