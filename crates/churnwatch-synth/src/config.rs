//! What to generate: size, period, seed and noise rates.

use time::macros::date;
use time::{Date, Month, OffsetDateTime};

use crate::error::{ConfigProblem, Error, Result};

/// The largest accepted customer count; customer indexes are stored as `u32`.
pub const MAX_CUSTOMERS: u64 = 100_000_000;

/// The longest accepted period; event times are stored as `u32` seconds since the start.
pub const MAX_MONTHS: u32 = 1200;

/// The process customers' purchases are drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Process {
    /// The fixed archetypes of [`crate::ARCHETYPE_SHARES`] (regulars, decliners, silent churners,
    /// ...), whose churn signals a risk model can learn.
    #[default]
    Archetypes,
    /// The BG/NBD process with known parameters: each customer buys as a Poisson process with
    /// rate λ ~ Gamma(r, α) per week and drops out after each repeat purchase with probability
    /// p ~ Beta(a, b). Every customer is labelled [`crate::Archetype::BgNbd`], with its λ and
    /// dropout time in the truth, so the best possible score is known.
    BgNbd(BgNbdProcess),
}

/// The parameters of [`Process::BgNbd`], time in weeks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdProcess {
    /// Shape of the purchase-rate distribution.
    pub r: f64,
    /// Rate of the purchase-rate distribution (weeks).
    pub alpha: f64,
    /// First shape of the dropout-probability distribution.
    pub a: f64,
    /// Second shape of the dropout-probability distribution.
    pub b: f64,
}

impl Default for BgNbdProcess {
    /// Returns a population where most customers buy once: purchase rates averaging one every
    /// 20 weeks with a long tail of rare buyers, and about one in four dropping out after each
    /// repeat purchase.
    fn default() -> Self {
        Self {
            r: 0.3,
            alpha: 6.0,
            a: 1.0,
            b: 3.0,
        }
    }
}

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
    /// The purchase process.
    pub process: Process,
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
            process: Process::Archetypes,
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
        if let Process::BgNbd(p) = self.process {
            for (field, v) in [("r", p.r), ("alpha", p.alpha), ("a", p.a), ("b", p.b)] {
                if !(v.is_finite() && v > 0.0) {
                    problem(
                        "process",
                        format!("BG/NBD parameter {field} must be positive, got {v}"),
                    );
                }
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
