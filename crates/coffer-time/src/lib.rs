//! Time as Coffer reads and writes it, in one place: calendar dates, RFC 3339 timestamps and
//! Go-syntax durations. No dependencies, no clock reads, no time zones.
//!
//! Guarantees:
//! - Dates are proleptic Gregorian (the Gregorian rules extended back before 1582), computed
//!   with Howard Hinnant's `days_from_civil` / `civil_from_days` ([`mod@civil`]).
//! - Timestamps are UTC only. Formatting always writes `Z`; parsing applies a numeric offset
//!   (`+01:00`) and returns the UTC instant, it never keeps a zone ([`mod@rfc3339`]).
//! - Parsing is exact: fractions of a second and of a duration unit are read in integers (no
//!   floating point), truncated to the nanosecond as Go truncates them.
//! - No function here panics on any input string.
//!
//! Refused (an error, never a guess): leap seconds (`:60`), days that are not in their month
//! (`2024-02-30`), offsets other than `Z`/`z`/`±HH:MM` with HH ≤ 23 and MM ≤ 59, signed or
//! negative durations, units other than `ns us µs μs ms s m h d`, and durations longer than
//! [`std::time::Duration::MAX`]. Callers with narrower rules (Vault's 292-year ceiling, whole
//! seconds) apply them on top; see [`mod@duration`].

#![forbid(unsafe_code)]

pub mod civil;
pub mod duration;
pub mod rfc3339;

pub use civil::{civil_from_days, days_from_civil, days_in_month, is_leap_year};
pub use duration::{
    DurationError, format_go, format_human, parse_duration, parse_duration_or_secs, parse_secs,
};
pub use rfc3339::{
    Fraction, Rfc3339Error, format_rfc3339, format_rfc3339_unix, parse_rfc3339,
    parse_rfc3339_or_naive_utc, rfc3339,
};
