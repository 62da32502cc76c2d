//! Times and durations as faults and probes read and write them: RFC 3339 UTC timestamps with
//! second precision (`2026-01-02T03:04:05Z`), and durations written as Go/Vault do (`"90s"`,
//! `"1m30s"`, `"250ms"`) or as a number of seconds. Offsets other than `Z`/`+00:00` are read;
//! leap seconds are not. The parsers and the calendar are `coffer_time`'s; a bare number here
//! may have a fraction (`"1.5"` seconds), unlike Vault's.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer};

/// `2026-01-02T03:04:05Z`.
pub fn rfc3339(t: SystemTime) -> String {
    coffer_time::rfc3339(t)
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` ([`coffer_time::parse_rfc3339`]); `None` when
/// it is not one.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    coffer_time::parse_rfc3339(s).ok()
}

/// `"90s"`, `"1m30s"`, `"1.5s"`, `"250ms"`, `"2h"`, or a bare number of seconds (`"60"`,
/// `"1.5"`): [`coffer_time::parse_secs`], else [`coffer_time::parse_duration`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    coffer_time::parse_secs(s).or_else(|_| coffer_time::parse_duration(s)).ok()
}

/// Serde: a duration as a string ([`parse_duration`]) or a number of seconds.
pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(f64),
        Text(String),
    }
    let parsed = match Raw::deserialize(d)? {
        Raw::Num(n) => Duration::try_from_secs_f64(n).ok(),
        Raw::Text(t) => parse_duration(&t),
    };
    parsed.ok_or_else(|| {
        serde::de::Error::custom("invalid duration: write \"90s\", \"1m30s\", \"250ms\" or seconds")
    })
}

/// Serde: an optional duration, as [`de_duration`].
pub(crate) fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "de_duration")] Duration);
    Option::<Wrap>::deserialize(d).map(|o| o.map(|w| w.0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: test code
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn rfc3339_round_trips_and_reads_offsets() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_444_367);
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        assert_eq!(
            parse_rfc3339("2024-02-29T01:00:00+01:00"),
            parse_rfc3339("2024-02-29T00:00:00Z")
        );
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00"), None, "the offset is required");
    }

    #[test]
    fn durations_as_go_writes_them_or_seconds() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        for bad in ["", "s", "5x", "-1s", "1s2", "1h30"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
