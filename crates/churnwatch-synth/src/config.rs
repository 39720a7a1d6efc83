//! What to generate: size, period, seed and noise rates.

use time::macros::date;
use time::{Date, Month, OffsetDateTime};

use crate::error::{ConfigProblem, Error, Result};

/// The largest accepted customer count; customer indexes are stored as `u32`.
pub const MAX_CUSTOMERS: u64 = 100_000_000;

/// The longest accepted period; event times are stored as `u32` seconds since the start.
pub const MAX_MONTHS: u32 = 1200;

/// Parameters of one synthetic data set.
///
/// The same configuration always produces byte-identical events and truth.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Number of customers to simulate, 1 to [`MAX_CUSTOMERS`].
    pub customers: u64,
    /// Length of the simulated period in calendar months, 1 to [`MAX_MONTHS`].
    pub months: u32,
    /// Seed of every random choice; each customer derives its own stream from it.
    pub seed: u64,
    /// First day of the simulated period (00:00 UTC).
    pub start: Date,
    /// Probability, per real event, of an extra malformed line next to it, in `[0, 1]`.
    pub malformed_rate: f64,
    /// Probability, per real event, of the event being delivered a second time, in `[0, 1]`.
    pub duplicate_rate: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            customers: 1_000,
            months: 24,
            seed: 42,
            start: date!(2024 - 01 - 01),
            malformed_rate: 0.0,
            duplicate_rate: 0.0,
        }
    }
}

impl SynthConfig {
    /// Returns a configuration with the given size and seed and defaults for the rest.
    pub fn new(customers: u64, months: u32, seed: u64) -> Self {
        Self {
            customers,
            months,
            seed,
            ..Self::default()
        }
    }

    /// Checks every field and reports all problems at once, each naming its field.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        let mut problem = |field: &'static str, message: String| {
            problems.push(ConfigProblem { field, message });
        };
        if self.customers == 0 || self.customers > MAX_CUSTOMERS {
            problem(
                "customers",
                format!(
                    "must be between 1 and {MAX_CUSTOMERS}, got {}",
                    self.customers
                ),
            );
        }
        if self.months == 0 || self.months > MAX_MONTHS {
            problem(
                "months",
                format!("must be between 1 and {MAX_MONTHS}, got {}", self.months),
            );
        }
        // Event parsers reject times before 1990 as implausible (`bad_timestamp`).
        if !(1990..=9000).contains(&self.start.year()) {
            problem(
                "start",
                format!(
                    "must be a date in the years 1990 to 9000, got {}",
                    self.start
                ),
            );
        }
        for (field, rate) in [
            ("malformed_rate", self.malformed_rate),
            ("duplicate_rate", self.duplicate_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                problem(
                    field,
                    format!("must be a probability within [0, 1], got {rate}"),
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidConfig { problems })
        }
    }

    /// Returns the start of the period, 00:00 UTC on `start`.
    pub fn start_time(&self) -> OffsetDateTime {
        self.start.midnight().assume_utc()
    }

    /// Returns the end of the period (exclusive): `start` plus `months` calendar months, 00:00 UTC.
    ///
    /// When the day does not exist in the final month (a start on the 31st), the last day of that
    /// month is used. Returns `None` only for configurations that fail validation.
    pub fn end_time(&self) -> Option<OffsetDateTime> {
        let months = i64::from(self.start.month() as u8) - 1 + i64::from(self.months);
        let year = i32::try_from(i64::from(self.start.year()) + months.div_euclid(12)).ok()?;
        let month = Month::try_from(u8::try_from(months.rem_euclid(12) + 1).ok()?).ok()?;
        let day = self.start.day().min(month.length(year));
        Some(
            Date::from_calendar_date(year, month, day)
                .ok()?
                .midnight()
                .assume_utc(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn end_time_adds_calendar_months() {
        let config = SynthConfig {
            months: 14,
            ..SynthConfig::default()
        };
        assert_eq!(config.end_time(), Some(datetime!(2025-03-01 0:00 UTC)));
        let config = SynthConfig {
            months: 1,
            start: date!(2024 - 01 - 31),
            ..config
        };
        assert_eq!(config.end_time(), Some(datetime!(2024-02-29 0:00 UTC)));
    }
}
