//! Money: decimal amounts parsed exactly into integer minor units of an ISO 4217 currency, and the
//! exchange-rate table that brings every amount into one reporting currency.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use iso_currency::Currency;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

/// The largest amount accepted, in minor units (ten trillion units of a two-decimal currency).
pub const MAX_MINOR_UNITS: i64 = 1_000_000_000_000_000;

/// An ISO 4217 currency code such as `USD`, known to carry a minor-unit exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CurrencyCode(Currency);

impl CurrencyCode {
    /// Returns the currency for an ISO 4217 code, or `None` when the code is unknown.
    pub fn parse(code: &str) -> Option<Self> {
        Currency::from_code(code).map(Self)
    }

    /// Returns the three-letter code.
    pub fn code(self) -> &'static str {
        // `Currency::code` returns a &'static str for every variant.
        self.0.code()
    }

    /// Returns the number of decimal places of the minor unit (2 for USD, 0 for JPY, 3 for KWD).
    pub fn exponent(self) -> u32 {
        // Currencies without a minor unit (e.g. XAU) have no exponent; treat them as whole units.
        self.0.exponent().map(u32::from).unwrap_or(0)
    }
}

impl Default for CurrencyCode {
    /// Returns US dollars, the default reporting currency.
    fn default() -> Self {
        Self(Currency::USD)
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for CurrencyCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for CurrencyCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown currency {s:?}")))
    }
}

/// Why an amount could not be turned into minor units.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The text is not a decimal number.
    #[error("{0:?} is not a decimal number")]
    NotANumber(String),
    /// The amount is below zero.
    #[error("amount {0} is negative")]
    Negative(String),
    /// The amount has more decimal places than the currency's minor unit.
    #[error(
        "amount {amount} has more than {exponent} decimal places, the minor unit of {currency}"
    )]
    TooPrecise {
        amount: String,
        exponent: u32,
        currency: CurrencyCode,
    },
    /// The amount does not fit the accepted range.
    #[error("amount {0} is too large")]
    TooLarge(String),
}

/// Parses a non-negative decimal amount into minor units of `currency`, exactly.
///
/// `"42.5"` in USD is 4250; `"42.505"` in USD is rejected as too precise rather than rounded,
/// because silently rounding money hides upstream bugs.
pub fn parse_minor_units(text: &str, currency: CurrencyCode) -> Result<i64, AmountError> {
    let trimmed = text.trim();
    let value = Decimal::from_str(trimmed)
        .or_else(|_| Decimal::from_scientific(trimmed))
        .map_err(|_| match trimmed.parse::<f64>() {
            // A number too big for a 96-bit decimal is a real number, just not an amount.
            Ok(f) if f.is_finite() => AmountError::TooLarge(text.to_owned()),
            _ => AmountError::NotANumber(text.to_owned()),
        })?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(AmountError::Negative(text.to_owned()));
    }
    let exponent = currency.exponent();
    let normalized = value.normalize();
    if normalized.scale() > exponent {
        return Err(AmountError::TooPrecise {
            amount: text.to_owned(),
            exponent,
            currency,
        });
    }
    let minor = value
        .checked_mul(Decimal::from(10_i64.pow(exponent)))
        .and_then(|m| m.to_i64())
        .filter(|m| *m <= MAX_MINOR_UNITS)
        .ok_or_else(|| AmountError::TooLarge(text.to_owned()))?;
    Ok(minor)
}

/// Exchange rates into the reporting currency in which customer state is kept.
///
/// A rate is how many units of the reporting currency one unit of the other currency buys.
/// Events in a currency without a rate are rejected with `unsupported_currency`, naming the
/// missing rate, rather than being mixed into totals in the wrong unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxTable {
    /// The currency all customer money is kept in.
    pub reporting: CurrencyCode,
    /// Units of `reporting` per unit of each other currency.
    #[serde(default)]
    pub rates: BTreeMap<CurrencyCode, Decimal>,
}

impl Default for FxTable {
    /// Returns a table that accepts US dollars only.
    fn default() -> Self {
        Self {
            reporting: CurrencyCode::default(),
            rates: BTreeMap::new(),
        }
    }
}

impl FxTable {
    /// Returns a table for `reporting` with the given rates.
    pub fn new(
        reporting: CurrencyCode,
        rates: impl IntoIterator<Item = (CurrencyCode, Decimal)>,
    ) -> Self {
        Self {
            reporting,
            rates: rates.into_iter().collect(),
        }
    }

    /// Parses rates written as `EUR=1.08,GBP=1.27`.
    pub fn parse_rates(reporting: CurrencyCode, text: &str) -> Result<Self, String> {
        let mut rates = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (code, rate) = part
                .split_once('=')
                .ok_or_else(|| format!("exchange rate {part:?} must look like EUR=1.08"))?;
            let currency = CurrencyCode::parse(code.trim()).ok_or_else(|| {
                format!("exchange rate {part:?} names an unknown currency {code:?}")
            })?;
            let rate = Decimal::from_str(rate.trim())
                .ok()
                .filter(|r| r.is_sign_positive() && !r.is_zero())
                .ok_or_else(|| {
                    format!("exchange rate {part:?} must be a positive decimal number")
                })?;
            rates.insert(currency, rate);
        }
        Ok(Self { reporting, rates })
    }

    /// Returns whether amounts in `currency` can be converted.
    pub fn supports(&self, currency: CurrencyCode) -> bool {
        currency == self.reporting || self.rates.contains_key(&currency)
    }

    /// Converts minor units of `currency` into minor units of the reporting currency, rounding
    /// half to even; `None` when there is no rate.
    pub fn to_reporting(&self, minor: i64, currency: CurrencyCode) -> Option<i64> {
        if currency == self.reporting {
            return Some(minor);
        }
        let rate = self.rates.get(&currency)?;
        let units = Decimal::from(minor) / Decimal::from(10_i64.pow(currency.exponent()));
        let reporting_minor = units * rate * Decimal::from(10_i64.pow(self.reporting.exponent()));
        reporting_minor.round().to_i64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> CurrencyCode {
        CurrencyCode::parse("USD").unwrap()
    }

    #[test]
    fn amounts_use_the_currency_exponent() {
        assert_eq!(parse_minor_units("42.5", usd()), Ok(4250));
        assert_eq!(parse_minor_units("42", usd()), Ok(4200));
        assert_eq!(parse_minor_units("42.50", usd()), Ok(4250));
        assert_eq!(
            parse_minor_units("1200", CurrencyCode::parse("JPY").unwrap()),
            Ok(1200)
        );
        assert_eq!(
            parse_minor_units("1.234", CurrencyCode::parse("KWD").unwrap()),
            Ok(1234)
        );
        assert_eq!(parse_minor_units("0", usd()), Ok(0));
    }

    #[test]
    fn too_many_decimals_are_rejected_not_rounded() {
        assert!(matches!(
            parse_minor_units("42.505", usd()),
            Err(AmountError::TooPrecise { .. })
        ));
        assert!(matches!(
            parse_minor_units("12.5", CurrencyCode::parse("JPY").unwrap()),
            Err(AmountError::TooPrecise { .. })
        ));
        // Trailing zeros are not extra precision.
        assert_eq!(parse_minor_units("42.5000", usd()), Ok(4250));
    }

    #[test]
    fn negative_garbage_and_huge_amounts_are_rejected() {
        assert!(matches!(
            parse_minor_units("-1", usd()),
            Err(AmountError::Negative(_))
        ));
        assert!(matches!(
            parse_minor_units("12,50", usd()),
            Err(AmountError::NotANumber(_))
        ));
        assert!(matches!(
            parse_minor_units("", usd()),
            Err(AmountError::NotANumber(_))
        ));
        assert!(matches!(
            parse_minor_units("1e30", usd()),
            Err(AmountError::TooLarge(_))
        ));
    }

    #[test]
    fn unknown_currency_codes_are_not_currencies() {
        assert!(CurrencyCode::parse("XYZ").is_none());
        assert!(CurrencyCode::parse("usd").is_none());
        assert_eq!(CurrencyCode::parse("EUR").unwrap().exponent(), 2);
    }

    #[test]
    fn conversion_uses_both_exponents() {
        let fx = FxTable::parse_rates(usd(), "EUR=1.10, JPY=0.0067").unwrap();
        let eur = CurrencyCode::parse("EUR").unwrap();
        let jpy = CurrencyCode::parse("JPY").unwrap();
        assert_eq!(fx.to_reporting(1000, eur), Some(1100)); // 10.00 EUR = 11.00 USD
        assert_eq!(fx.to_reporting(1000, jpy), Some(670)); // 1000 JPY = 6.70 USD
        assert_eq!(fx.to_reporting(1000, usd()), Some(1000));
        assert_eq!(
            fx.to_reporting(1000, CurrencyCode::parse("GBP").unwrap()),
            None
        );
    }

    #[test]
    fn bad_rate_text_names_the_problem() {
        assert!(
            FxTable::parse_rates(usd(), "EUR")
                .unwrap_err()
                .contains("EUR=1.08")
        );
        assert!(
            FxTable::parse_rates(usd(), "XYZ=1")
                .unwrap_err()
                .contains("unknown currency")
        );
        assert!(
            FxTable::parse_rates(usd(), "EUR=-1")
                .unwrap_err()
                .contains("positive")
        );
    }
}
