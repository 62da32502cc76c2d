//! Standard five-field cron schedules (`minute hour day-of-month month day-of-week`), as
//! Vault's `rotation_schedule` takes them, evaluated in UTC.
//!
//! Supported in each field: `*`, numbers, ranges `a-b`, steps `*/n`, `a-b/n`, `a/n`, lists of
//! those separated by `,`, and month (`JAN`…) and weekday (`SUN`…) names; weekday 7 is Sunday.
//! When both day fields are restricted a day matches if either does (cron's rule); a day field
//! that allows every value (`*/1`, `1-31`) counts as unrestricted. A step larger than its
//! field's range is refused.
//! Guarantees: parsing never panics; `next_after` always returns a time strictly later than
//! its argument, or `None` when no time in the next five years matches (e.g. `0 0 31 2 *`).
//! Not supported: seconds, `@hourly`-style macros, `L`, `W`, `#`, `?`.

use coffer_core::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    dom_any: bool,
    dow_any: bool,
}

const MONTHS: [&str; 12] =
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Every day of the month (bits 1-31) and every weekday (bits 0-6).
const FULL_DAYS: u64 = ((1 << 32) - 1) & !1;
const FULL_WEEKDAYS: u64 = (1 << 7) - 1;

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid(format!("invalid rotation_schedule: {}", msg.into()))
}

impl Schedule {
    pub(crate) fn parse(s: &str) -> Result<Self> {
        let f: Vec<&str> = s.split_whitespace().collect();
        if f.len() != 5 {
            return Err(bad(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), got {}",
                f.len()
            )));
        }
        let mut weekdays = field(f[4], "day-of-week", 0, 7, &DAYS, 0)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        let days = field(f[2], "day-of-month", 1, 31, &[], 1)?;
        Ok(Self {
            minutes: field(f[0], "minute", 0, 59, &[], 0)?,
            hours: field(f[1], "hour", 0, 23, &[], 0)?,
            days,
            months: field(f[3], "month", 1, 12, &MONTHS, 1)?,
            weekdays,
            // A field that allows every value (`*`, `*/1`, `1-31`) is unrestricted for the
            // day-of-month/day-of-week rule, as robfig/cron (Vault's parser) treats `*/1`.
            dom_any: days == FULL_DAYS,
            dow_any: weekdays == FULL_WEEKDAYS,
        })
    }

    fn day_matches(&self, dom: u32, dow: u32) -> bool {
        let d = self.days & (1 << dom) != 0;
        let w = self.weekdays & (1 << dow) != 0;
        match (self.dom_any, self.dow_any) {
            (false, false) => d || w,
            _ => d && w,
        }
    }

    /// The first matching minute strictly after `unix` (seconds), in unix seconds.
    pub(crate) fn next_after(&self, unix: u64) -> Option<u64> {
        let start = unix / 60 * 60 + 60;
        let first_day = (start / 86_400) as i64;
        let mut first_minute = (start % 86_400) / 60;
        for day in first_day..first_day + 366 * 5 {
            let (_, m, d) = coffer_time::civil_from_days(day);
            let dow = (day + 4).rem_euclid(7) as u32;
            if self.months & (1 << m) != 0 && self.day_matches(d, dow) {
                for minute_of_day in first_minute..1440 {
                    let (h, mi) = (minute_of_day / 60, minute_of_day % 60);
                    if self.hours & (1 << h) != 0 && self.minutes & (1 << mi) != 0 {
                        return Some(day as u64 * 86_400 + minute_of_day * 60);
                    }
                }
            }
            first_minute = 0;
        }
        None
    }
}

/// One field as a bit set of the values it allows.
fn field(s: &str, name: &str, lo: u32, hi: u32, names: &[&str], name_base: u32) -> Result<u64> {
    let mut bits = 0u64;
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => {
                let st: u32 =
                    st.parse().map_err(|_| bad(format!("bad step in {name}: {part:?}")))?;
                if st == 0 {
                    return Err(bad(format!("step cannot be 0 in {name}")));
                }
                if st > hi - lo + 1 {
                    return Err(bad(format!(
                        "step {st} in {name} is larger than its range {lo}-{hi}"
                    )));
                }
                (r, Some(st))
            }
            None => (part, None),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, name, names, name_base)?, value(b, name, names, name_base)?)
        } else {
            let a = value(range, name, names, name_base)?;
            (a, if step.is_some() { hi } else { a })
        };
        if a < lo || b > hi || a > b {
            return Err(bad(format!("{name} {part:?} is outside {lo}-{hi}")));
        }
        let step = step.unwrap_or(1);
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            match v.checked_add(step) {
                Some(n) => v = n,
                None => break,
            }
        }
    }
    Ok(bits)
}

fn value(s: &str, name: &str, names: &[&str], base: u32) -> Result<u32> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + base);
    }
    s.parse().map_err(|_| bad(format!("{name}: {s:?} is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2023-11-14 22:13:20 UTC, a Tuesday.
    const T: u64 = 1_700_000_000;

    fn next(s: &str, t: u64) -> u64 {
        Schedule::parse(s).expect(s).next_after(t).expect("a match")
    }

    #[test]
    fn every_minute_is_the_next_minute() {
        assert_eq!(next("* * * * *", T), 1_700_000_040);
        assert_eq!(next("* * * * *", 1_700_000_040), 1_700_000_100);
    }

    #[test]
    fn steps_ranges_and_lists() {
        // Next quarter hour after 22:13:20 is 22:15.
        assert_eq!(next("*/15 * * * *", T), 1_700_000_100);
        // 23:00 the same day.
        assert_eq!(next("0 23 * * *", T), 1_700_002_800);
        // 09:30 next day (Wednesday) from a 9-17 weekday range.
        assert_eq!(next("30 9-17 * * MON-FRI", T), 1_700_040_600);
        assert_eq!(next("0,30 22 * * *", T), 1_700_001_000);
        assert_eq!(next("5/20 * * * *", T), 1_700_000_100 + 60 * 10);
    }

    #[test]
    fn weekday_names_and_sunday_as_seven() {
        // 2023-11-19 is the next Sunday.
        let sun = 1_700_352_000;
        assert_eq!(next("0 0 * * 7", T), sun);
        assert_eq!(next("0 0 * * SUN", T), sun);
        assert_eq!(next("0 0 * * 0", T), sun);
    }

    #[test]
    fn restricted_day_fields_match_either() {
        // 1st of the month or a Friday: Friday 2023-11-17 comes first.
        assert_eq!(next("0 0 1 * FRI", T), 1_700_179_200);
        // Only the 1st: 2023-12-01.
        assert_eq!(next("0 0 1 * *", T), 1_701_388_800);
        assert_eq!(next("0 0 1 JAN *", T), 1_704_067_200);
    }

    #[test]
    fn a_day_field_covering_every_value_counts_as_unrestricted() {
        // Fridays only: `*/1` is `*`, so the weekday alone decides (2023-11-17).
        assert_eq!(next("0 0 */1 * FRI", T), 1_700_179_200);
        assert_eq!(next("0 0 1-31 * FRI", T), 1_700_179_200);
        // The 1st only: 2023-12-01.
        assert_eq!(next("0 0 1 * */1", T), 1_701_388_800);
        assert_eq!(next("0 0 1 * 0-6", T), 1_701_388_800);
        // Steps that skip values keep the OR rule: the 15th (odd) comes before Friday.
        assert_eq!(next("0 0 */2 * FRI", T), 1_700_006_400);
        // The largest step a field allows: minute 1 only, 23:01.
        assert_eq!(next("1/60 * * * *", T), 1_700_002_860);
    }

    #[test]
    fn impossible_dates_have_no_next() {
        assert_eq!(Schedule::parse("0 0 30 2 *").expect("parse").next_after(T), None);
    }

    #[test]
    fn bad_schedules_name_the_problem() {
        for (s, want) in [
            ("* * * *", "5 fields"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day-of-month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day-of-week"),
            ("*/0 * * * *", "step"),
            ("a * * * *", "not a number"),
            ("5-1 * * * *", "outside"),
            ("@hourly", "5 fields"),
            ("1/4294967295 * * * *", "larger than its range"),
            ("*/4294967295 * * * *", "larger than its range"),
            ("* * * * 1/9", "larger than its range"),
        ] {
            let e = Schedule::parse(s).expect_err(s).to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
