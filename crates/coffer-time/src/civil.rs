//! Days since 1970-01-01 to and from (year, month, day) in the proleptic Gregorian calendar,
//! by Howard Hinnant's algorithms (<https://howardhinnant.github.io/date_algorithms.html>).
//!
//! Exact for day numbers within ±2^50 and years within ±2^40 (far beyond any time Coffer
//! handles); outside that the `i64` arithmetic can overflow. `days_from_civil` does not check
//! that the day exists in its month: callers that read dates check with [`days_in_month`].

/// Days from 0000-03-01 to 1970-01-01: the algorithm counts from a March 1st so that the leap
/// day falls at the end of its year.
const EPOCH_SHIFT: i64 = 719_468;
/// Days in a 400-year Gregorian cycle (an "era").
const DAYS_PER_ERA: i64 = 146_097;

/// (year, month 1-12, day 1-31) of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + EPOCH_SHIFT;
    let era = z.div_euclid(DAYS_PER_ERA);
    let doe = z.rem_euclid(DAYS_PER_ERA);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both values are small and non-negative by construction (day 1-31, month 1-12).
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The day number since 1970-01-01 of a date (month 1-12, day 1-31): the inverse of
/// [`civil_from_days`].
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * DAYS_PER_ERA + doe - EPOCH_SHIFT
}

pub fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in a month (1-12) of a year; 0 for a month outside 1-12.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_days_are_proleptic_gregorian() {
        for (days, date) in [
            (0, (1970, 1, 1)),
            (-1, (1969, 12, 31)),
            (11_016, (2000, 2, 29)),
            (19_675, (2023, 11, 14)),
            (19_723, (2024, 1, 1)),
            (19_782, (2024, 2, 29)),
            (-141_427, (1582, 10, 15)),
            (-141_428, (1582, 10, 14)),
            (-719_528, (0, 1, 1)),
            (2_932_896, (9999, 12, 31)),
        ] {
            assert_eq!(civil_from_days(days), date, "{days}");
            assert_eq!(days_from_civil(date.0, date.1, date.2), days, "{date:?}");
        }
    }

    #[test]
    fn month_lengths_follow_the_leap_rules() {
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2023, 2), 28);
        assert_eq!(days_in_month(2023, 4), 30);
        assert_eq!(days_in_month(2023, 13), 0);
    }

    proptest! {
        #[test]
        fn days_round_trip_through_dates(days in -(1i64 << 40)..(1i64 << 40)) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m));
            prop_assert!(d >= 1 && d <= days_in_month(y, m));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn consecutive_days_are_consecutive_dates(days in -(1i64 << 32)..(1i64 << 32)) {
            let (y0, m0, d0) = civil_from_days(days);
            let next = civil_from_days(days + 1);
            let expected = if d0 < days_in_month(y0, m0) {
                (y0, m0, d0 + 1)
            } else if m0 < 12 {
                (y0, m0 + 1, 1)
            } else {
                (y0 + 1, 1, 1)
            };
            prop_assert_eq!(next, expected);
        }
    }
}
