//! Event time: UTC timestamps in whole seconds and calendar months.
//!
//! The core never reads a clock; every "now" arrives as a [`Timestamp`] parameter.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Month, OffsetDateTime};

/// Seconds in one day.
pub const DAY: i64 = 86_400;
/// Seconds in one week, the time unit of the BTYD models.
pub const WEEK: i64 = 7 * DAY;

/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// A point in time as whole seconds since the Unix epoch, UTC.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// A calendar month (UTC) as months since January 1970.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MonthIndex(pub i32);

impl Timestamp {
    /// Returns the timestamp for seconds since the Unix epoch.
    pub const fn from_unix(seconds: i64) -> Self {
        Self(seconds)
    }

    /// Returns the seconds since the Unix epoch.
    pub const fn unix(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 timestamp (any offset; fractions of a second are truncated).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()
            .map(|t| Self(t.unix_timestamp()))
    }

    /// Returns the calendar month (UTC) this instant falls in.
    pub fn month(self) -> MonthIndex {
        // Only the date matters: going through the Julian day skips the time-of-day work of
        // a full `OffsetDateTime`, and this runs several times per evaluation.
        let julian_day = self.0.div_euclid(DAY) + UNIX_EPOCH_JULIAN_DAY;
        match i32::try_from(julian_day)
            .ok()
            .and_then(|d| time::Date::from_julian_day(d).ok())
        {
            Some(d) => MonthIndex((d.year() - 1970) * 12 + (u8::from(d.month()) as i32 - 1)),
            None => MonthIndex(if self.0 < 0 {
                i32::MIN / 2
            } else {
                i32::MAX / 2
            }),
        }
    }

    /// Returns this instant moved by `seconds` (saturating).
    pub const fn plus(self, seconds: i64) -> Self {
        Self(self.0.saturating_add(seconds))
    }

    /// Returns the seconds from `earlier` to `self` (negative when `earlier` is later).
    pub const fn since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Returns the time from `earlier` to `self` in days, as a fraction.
    pub fn days_since(self, earlier: Timestamp) -> f64 {
        self.since(earlier) as f64 / DAY as f64
    }

    /// Returns the time from `earlier` to `self` in weeks, as a fraction.
    pub fn weeks_since(self, earlier: Timestamp) -> f64 {
        self.since(earlier) as f64 / WEEK as f64
    }
}

impl fmt::Display for Timestamp {
    /// Formats the instant as RFC 3339 in UTC, e.g. `2025-03-01T12:00:00Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
        {
            Some(s) => f.write_str(&s),
            None => write!(f, "@{}", self.0),
        }
    }
}

impl MonthIndex {
    /// Returns the month `n` months after this one (before, for negative `n`).
    pub const fn offset(self, n: i32) -> Self {
        Self(self.0 + n)
    }

    /// Returns the instant this month starts (00:00 UTC on its first day).
    pub fn start(self) -> Timestamp {
        let year = 1970 + self.0.div_euclid(12);
        let month = Month::try_from((self.0.rem_euclid(12) + 1) as u8).unwrap_or(Month::January);
        time::Date::from_calendar_date(year, month, 1)
            .map(|d| Timestamp(d.midnight().assume_utc().unix_timestamp()))
            .unwrap_or(Timestamp(0))
    }
}

impl fmt::Display for MonthIndex {
    /// Formats the month as `YYYY-MM`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}",
            1970 + self.0.div_euclid(12),
            self.0.rem_euclid(12) + 1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_offset_is_normalised_to_utc() {
        let a = Timestamp::parse_rfc3339("2025-03-01T01:30:00+02:00").unwrap();
        let b = Timestamp::parse_rfc3339("2025-02-28T23:30:00Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2025-02-28T23:30:00Z");
    }

    #[test]
    fn month_boundaries_are_utc_calendar_months() {
        let last_second_of_feb = Timestamp::parse_rfc3339("2024-02-29T23:59:59Z").unwrap();
        let first_of_march = Timestamp::parse_rfc3339("2024-03-01T00:00:00Z").unwrap();
        assert_eq!(last_second_of_feb.month().offset(1), first_of_march.month());
        assert_eq!(first_of_march.month().start(), first_of_march);
        assert_eq!(first_of_march.month().to_string(), "2024-03");
        assert_eq!(MonthIndex(0).start(), Timestamp(0));
        assert_eq!(Timestamp(-1).month(), MonthIndex(-1), "1969-12");
        for t in [0, 951_782_400, 1_709_251_199, 1_709_251_200, 4_102_444_800] {
            let d = OffsetDateTime::from_unix_timestamp(t).unwrap();
            let expected = (d.year() - 1970) * 12 + u8::from(d.month()) as i32 - 1;
            assert_eq!(Timestamp(t).month(), MonthIndex(expected), "{t}");
        }
    }

    #[test]
    fn not_rfc3339_is_rejected() {
        for bad in [
            "2025-03-01",
            "2025-03-01 10:00:00",
            "yesterday",
            "2025-13-01T00:00:00Z",
            "",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_none(), "{bad}");
        }
    }
}

/// Serde helpers writing a [`Timestamp`] as an RFC 3339 string (for published events) while
/// the stored state keeps compact integers. Reading accepts either form.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Timestamp;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Seconds(i64),
    }

    fn from_either<E: serde::de::Error>(v: Either) -> Result<Timestamp, E> {
        match v {
            Either::Seconds(s) => Ok(Timestamp(s)),
            Either::Text(t) => Timestamp::parse_rfc3339(&t)
                .ok_or_else(|| E::custom(format!("{t:?} is not an RFC 3339 time"))),
        }
    }

    /// Writes the timestamp as RFC 3339.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    /// Reads an RFC 3339 string or seconds since the epoch.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        from_either(Either::deserialize(d)?)
    }

    /// The same for optional timestamps.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        use super::{Either, Timestamp, from_either};

        /// Writes the timestamp as RFC 3339, or null.
        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.collect_str(t),
                None => s.serialize_none(),
            }
        }

        /// Reads an RFC 3339 string, seconds since the epoch, or null.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            Option::<Either>::deserialize(d)?
                .map(from_either)
                .transpose()
        }
    }
}
