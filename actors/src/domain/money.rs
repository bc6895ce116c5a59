//! Money as integer minor units; no float ever touches a price.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// An ISO 4217 currency with its minor-unit exponent (JPY 0, USD 2, KWD 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: iso_currency::Currency,
    exponent: u32,
}

/// Why a price or currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("'{0}' is not an ISO 4217 currency code")]
    UnknownCurrency(String),
    #[error("'{0}' is not a decimal number")]
    NotADecimal(String),
    #[error("{currency} prices have at most {exponent} decimal places, got '{raw}'")]
    TooPrecise {
        raw: String,
        currency: &'static str,
        exponent: u32,
    },
    #[error("'{0}' is out of range")]
    OutOfRange(String),
    #[error("must be a decimal string or a JSON number")]
    WrongJsonType,
}

impl Currency {
    /// Parses a 3-letter ISO 4217 code. Codes without minor units (XAU and
    /// the like, exponent "N.A." in the standard) are refused: nothing on a
    /// shop shelf is priced in them.
    pub fn parse(raw: &str) -> Result<Self, MoneyError> {
        let unknown = || MoneyError::UnknownCurrency(raw.to_owned());
        if raw.len() != 3 || !raw.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(unknown());
        }
        let code = iso_currency::Currency::from_code(raw).ok_or_else(unknown)?;
        let exponent = u32::from(code.exponent().ok_or_else(unknown)?);
        Ok(Self { code, exponent })
    }

    pub fn code(&self) -> &'static str {
        self.code.code()
    }

    /// Number of decimal places of the minor unit.
    pub fn exponent(&self) -> u32 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Currency::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// An amount in a currency's minor units (pence, cents, yen, fils).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    /// Parses a decimal string such as `"19.99"` (USD) or `"1980"` (JPY).
    /// More decimal places than the currency's minor unit are refused, even
    /// when they are zeros (`"2.550"` for GBP), so a typo never passes.
    pub fn parse(raw: &str, currency: Currency) -> Result<Self, MoneyError> {
        let trimmed = raw.trim();
        let valid_shape = !trimmed.is_empty()
            && trimmed == raw
            && trimmed
                .trim_start_matches('-')
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.')
            && !trimmed.ends_with('.')
            && !trimmed.trim_start_matches('-').starts_with('.');
        if !valid_shape {
            return Err(MoneyError::NotADecimal(raw.to_owned()));
        }
        let value =
            Decimal::from_str(trimmed).map_err(|_| MoneyError::NotADecimal(raw.to_owned()))?;
        if value.scale() > currency.exponent {
            return Err(MoneyError::TooPrecise {
                raw: raw.to_owned(),
                currency: currency.code(),
                exponent: currency.exponent,
            });
        }
        let minor = value
            .checked_mul(Decimal::from(10_i64.pow(currency.exponent)))
            .and_then(|m| i64::try_from(m).ok())
            .ok_or_else(|| MoneyError::OutOfRange(raw.to_owned()))?;
        Ok(Self { minor, currency })
    }

    /// Parses the raw JSON text of a `price` field: a string, or a number that
    /// converts exactly (API.md, Conventions). The number's own digits are
    /// parsed, never a float.
    pub fn parse_json(raw_json: &str, currency: Currency) -> Result<Self, MoneyError> {
        let raw_json = raw_json.trim();
        if let Some(inner) = raw_json.strip_prefix('"') {
            let text: String = serde_json::from_str(raw_json)
                .map_err(|_| MoneyError::NotADecimal(inner.trim_end_matches('"').to_owned()))?;
            return Self::parse(&text, currency);
        }
        if raw_json.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            if raw_json.contains(['e', 'E']) {
                return Err(MoneyError::NotADecimal(raw_json.to_owned()));
            }
            return Self::parse(raw_json, currency);
        }
        Err(MoneyError::WrongJsonType)
    }

    /// The amount as a decimal string with exactly the currency's number of
    /// decimal places (`"2.50"`, `"1980"`, `"1.250"`).
    pub fn to_decimal_string(&self) -> String {
        Decimal::new(self.minor, self.currency.exponent).to_string()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn jpy_usd_and_a_three_decimal_currency_round_trip_exactly() {
        for (raw, code, minor) in [
            ("1980", "JPY", 1980),
            ("19.99", "USD", 1999),
            ("0.01", "USD", 1),
            ("1.250", "KWD", 1250),
            ("92233720368547758.07", "USD", i64::MAX),
        ] {
            let money = Money::parse(raw, cur(code)).unwrap();
            assert_eq!(money.minor, minor);
            assert_eq!(money.to_decimal_string(), raw);
        }
    }

    #[test]
    fn usd_with_three_decimals_is_rejected() {
        assert!(matches!(
            Money::parse("19.999", cur("USD")),
            Err(MoneyError::TooPrecise { .. })
        ));
    }

    #[test]
    fn a_jpy_price_with_decimals_is_rejected() {
        assert!(matches!(
            Money::parse("1000.5", cur("JPY")),
            Err(MoneyError::TooPrecise { .. })
        ));
    }

    #[test]
    fn trailing_zeros_beyond_the_minor_unit_are_rejected() {
        assert!(Money::parse("2.550", cur("GBP")).is_err());
    }

    #[test]
    fn fewer_decimals_than_the_minor_unit_are_fine() {
        assert_eq!(Money::parse("25", cur("GBP")).unwrap().minor, 2500);
        assert_eq!(
            Money::parse("2.5", cur("GBP")).unwrap().to_decimal_string(),
            "2.50"
        );
    }

    #[test]
    fn json_numbers_are_accepted_only_when_exact() {
        assert_eq!(Money::parse_json("19.99", cur("USD")).unwrap().minor, 1999);
        assert_eq!(
            Money::parse_json("\"19.99\"", cur("USD")).unwrap().minor,
            1999
        );
        assert!(Money::parse_json("19.999", cur("USD")).is_err());
        assert!(Money::parse_json("1e3", cur("USD")).is_err());
        assert_eq!(
            Money::parse_json("true", cur("USD")),
            Err(MoneyError::WrongJsonType)
        );
    }

    #[test]
    fn garbage_and_overflow_are_rejected() {
        for bad in [
            "", " 1", "1 ", "abc", "1.2.3", "1,5", "+1", ".5", "5.", "NaN",
        ] {
            assert!(Money::parse(bad, cur("USD")).is_err(), "{bad:?}");
        }
        assert!(matches!(
            Money::parse("99999999999999999999", cur("USD")),
            Err(MoneyError::OutOfRange(_))
        ));
    }

    #[test]
    fn unknown_and_lowercase_currencies_are_rejected() {
        for bad in ["usd", "XXY", "US", "USDD", "XAU"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }
}
