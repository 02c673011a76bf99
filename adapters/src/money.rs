//! Neutral money types shared by the gateway and every wallet adapter.
//!
//! Owns: the ISO 4217 currencies Sesame handles (alpha code, numeric code, minor-unit
//! exponent) and `Money`, a `rust_decimal` amount tied to its currency.
//! Invariants: a `Money` never holds more decimals than its currency allows, is never
//! negative, and always fits in `i64` minor units, so the conversion to the integer
//! representation used by the store and the ledger cannot fail or round.
//! Must never: accept or produce a float, or parse exponent / NaN / locale forms.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// ISO 4217 currencies known to Sesame. Adding one is one line in `TABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Currency {
    Mop,
    Hkd,
    Cny,
    Usd,
    Krw,
    Jpy,
    Sgd,
    Thb,
    Eur,
}

/// (currency, alpha code, numeric code, minor-unit exponent)
const TABLE: &[(Currency, &str, u16, u32)] = &[
    (Currency::Mop, "MOP", 446, 2),
    (Currency::Hkd, "HKD", 344, 2),
    (Currency::Cny, "CNY", 156, 2),
    (Currency::Usd, "USD", 840, 2),
    (Currency::Krw, "KRW", 410, 0),
    (Currency::Jpy, "JPY", 392, 0),
    (Currency::Sgd, "SGD", 702, 2),
    (Currency::Thb, "THB", 764, 2),
    (Currency::Eur, "EUR", 978, 2),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    #[error("unknown currency code {0:?} (expected an ISO 4217 alpha code such as MOP)")]
    UnknownAlpha(String),
    #[error("unknown ISO 4217 numeric currency code {0}")]
    UnknownNumeric(u16),
}

impl Currency {
    pub const ALL: [Currency; 9] = [
        Currency::Mop,
        Currency::Hkd,
        Currency::Cny,
        Currency::Usd,
        Currency::Krw,
        Currency::Jpy,
        Currency::Sgd,
        Currency::Thb,
        Currency::Eur,
    ];

    fn row(self) -> &'static (Currency, &'static str, u16, u32) {
        // Every variant has exactly one row; the `currency_table_is_complete` test proves it.
        TABLE.iter().find(|row| row.0 == self).unwrap_or(&TABLE[0])
    }

    /// ISO 4217 alpha code, e.g. `"MOP"`.
    pub fn code(self) -> &'static str {
        self.row().1
    }

    /// ISO 4217 numeric code, e.g. `446` for MOP (EMVCo tag 53 uses it zero-padded).
    pub fn numeric(self) -> u16 {
        self.row().2
    }

    /// Number of decimals of the minor unit: 2 for MOP, 0 for KRW and JPY.
    pub fn exponent(self) -> u32 {
        self.row().3
    }

    /// Parses an upper-case alpha code. Lower case is rejected on purpose: wire
    /// formats are upper case and silently accepting variants hides client bugs.
    pub fn parse(code: &str) -> Result<Self, CurrencyError> {
        TABLE
            .iter()
            .find(|row| row.1 == code)
            .map(|row| row.0)
            .ok_or_else(|| CurrencyError::UnknownAlpha(code.chars().take(16).collect()))
    }

    pub fn from_numeric(numeric: u16) -> Result<Self, CurrencyError> {
        TABLE
            .iter()
            .find(|row| row.2 == numeric)
            .map(|row| row.0)
            .ok_or(CurrencyError::UnknownNumeric(numeric))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} is not a plain decimal number (digits with an optional '.')")]
    Malformed(String),
    #[error("amount must not be negative")]
    Negative,
    #[error("amount must be greater than zero")]
    Zero,
    #[error("{currency} allows at most {allowed} decimal places")]
    TooManyDecimals { currency: Currency, allowed: u32 },
    #[error("amount is too large")]
    TooLarge,
}

/// A non-negative amount of one currency, exact to its minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

/// The longest amount string we look at; anything longer is malformed, not slow.
const MAX_AMOUNT_CHARS: usize = 32;

impl Money {
    /// Strict parse of a decimal string such as `"12.30"`, rejecting zero.
    ///
    /// Accepts only `digits[.digits]`: no sign, no exponent, no NaN or infinity,
    /// no thousands separators, no surrounding spaces. Trailing zeros beyond the
    /// currency's exponent are rejected too (`"1.000"` for MOP), because a client
    /// that sends them is probably formatting a float.
    pub fn parse(input: &str, currency: Currency) -> Result<Money, MoneyError> {
        let money = Money::parse_allow_zero(input, currency)?;
        if money.amount.is_zero() {
            return Err(MoneyError::Zero);
        }
        Ok(money)
    }

    /// As [`Money::parse`], but zero is a valid amount (balances, fees).
    pub fn parse_allow_zero(input: &str, currency: Currency) -> Result<Money, MoneyError> {
        if input.is_empty() {
            return Err(MoneyError::Empty);
        }
        if input.len() > MAX_AMOUNT_CHARS {
            return Err(MoneyError::TooLarge);
        }
        if input.starts_with('-') {
            return Err(MoneyError::Negative);
        }
        let malformed = || MoneyError::Malformed(input.chars().take(MAX_AMOUNT_CHARS).collect());
        let (int_part, frac_part) = match input.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (input, None),
        };
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        if let Some(frac) = frac_part {
            if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            if frac.len() as u32 > currency.exponent() {
                return Err(MoneyError::TooManyDecimals {
                    currency,
                    allowed: currency.exponent(),
                });
            }
        }
        let amount = Decimal::from_str(input).map_err(|_| MoneyError::TooLarge)?;
        Money::new(amount, currency)
    }

    /// Builds from a decimal that is already a number (no string round trip).
    pub fn new(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative);
        }
        if amount.normalize().scale() > currency.exponent() {
            return Err(MoneyError::TooManyDecimals {
                currency,
                allowed: currency.exponent(),
            });
        }
        let money = Money {
            amount: amount.abs(),
            currency,
        };
        money.checked_minor().ok_or(MoneyError::TooLarge)?;
        Ok(money)
    }

    /// From integer minor units (cents for MOP, won for KRW).
    pub fn from_minor(minor: i64, currency: Currency) -> Result<Money, MoneyError> {
        if minor < 0 {
            return Err(MoneyError::Negative);
        }
        Ok(Money {
            amount: Decimal::new(minor, currency.exponent()),
            currency,
        })
    }

    fn checked_minor(&self) -> Option<i64> {
        let scaled = self
            .amount
            .checked_mul(Decimal::from(10i64.checked_pow(self.currency.exponent())?))?;
        if !scaled.fract().is_zero() {
            return None;
        }
        i64::try_from(scaled).ok()
    }

    /// The amount in integer minor units. Cannot fail: construction guarantees it fits.
    pub fn minor(&self) -> i64 {
        self.checked_minor().unwrap_or(i64::MAX)
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// The amount with exactly the currency's decimals, e.g. `"12.30"`, `"5000"` (KRW).
    pub fn to_decimal_string(&self) -> String {
        let mut value = self.amount;
        value.rescale(self.currency.exponent());
        value.to_string()
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

    #[test]
    fn currency_table_is_complete() {
        for currency in Currency::ALL {
            let rows = TABLE.iter().filter(|row| row.0 == currency).count();
            assert_eq!(rows, 1, "{currency:?}");
            assert_eq!(Currency::parse(currency.code()), Ok(currency));
            assert_eq!(Currency::from_numeric(currency.numeric()), Ok(currency));
        }
        assert_eq!(Currency::Mop.numeric(), 446);
        assert_eq!(Currency::Krw.exponent(), 0);
        assert_eq!(Currency::Jpy.numeric(), 392);
    }

    #[test]
    fn currency_parse_is_strict() {
        assert!(Currency::parse("mop").is_err());
        assert!(Currency::parse(" MOP").is_err());
        assert!(Currency::parse("XXX").is_err());
        assert!(Currency::from_numeric(999).is_err());
    }

    #[test]
    fn parses_plain_amounts_into_minor_units() {
        let m = Money::parse("12.30", Currency::Mop).unwrap();
        assert_eq!(m.minor(), 1230);
        assert_eq!(m.to_decimal_string(), "12.30");
        assert_eq!(Money::parse("12", Currency::Mop).unwrap().minor(), 1200);
        assert_eq!(Money::parse("0.01", Currency::Hkd).unwrap().minor(), 1);
        assert_eq!(Money::parse("5000", Currency::Krw).unwrap().minor(), 5000);
        assert_eq!(
            Money::parse("1.5", Currency::Usd)
                .unwrap()
                .to_decimal_string(),
            "1.50"
        );
        assert_eq!(Money::parse("007.10", Currency::Mop).unwrap().minor(), 710);
    }

    #[test]
    fn rejects_what_is_not_a_plain_amount() {
        for bad in [
            "", " 1", "1 ", "1e3", "1E3", "NaN", "nan", "inf", "+1", "1,000", "1.", ".5", "1..2",
            "0x10", "1.2.3", "١٢", "12a",
        ] {
            assert!(
                Money::parse(bad, Currency::Mop).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn rejects_negative_zero_and_too_many_decimals() {
        assert_eq!(Money::parse("-1", Currency::Mop), Err(MoneyError::Negative));
        assert_eq!(
            Money::parse("-0.00", Currency::Mop),
            Err(MoneyError::Negative)
        );
        assert_eq!(Money::parse("0", Currency::Mop), Err(MoneyError::Zero));
        assert_eq!(Money::parse("0.00", Currency::Mop), Err(MoneyError::Zero));
        assert!(
            Money::parse_allow_zero("0.00", Currency::Mop)
                .unwrap()
                .is_zero()
        );
        assert!(matches!(
            Money::parse("1.001", Currency::Mop),
            Err(MoneyError::TooManyDecimals { .. })
        ));
        assert!(matches!(
            Money::parse("1.000", Currency::Mop),
            Err(MoneyError::TooManyDecimals { .. })
        ));
        assert!(matches!(
            Money::parse("100.5", Currency::Krw),
            Err(MoneyError::TooManyDecimals { .. })
        ));
    }

    #[test]
    fn rejects_amounts_beyond_i64_minor_units() {
        // i64::MAX = 9223372036854775807 minor units = 92233720368547758.07 MOP
        assert_eq!(
            Money::parse("92233720368547758.07", Currency::Mop)
                .unwrap()
                .minor(),
            i64::MAX
        );
        assert_eq!(
            Money::parse("92233720368547758.08", Currency::Mop),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(
            Money::parse("9223372036854775808", Currency::Krw),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(
            Money::parse(&"9".repeat(40), Currency::Krw),
            Err(MoneyError::TooLarge)
        );
    }

    #[test]
    fn minor_units_round_trip() {
        for minor in [0i64, 1, 99, 100, 123_456, i64::MAX] {
            for currency in Currency::ALL {
                let m = Money::from_minor(minor, currency).unwrap();
                assert_eq!(m.minor(), minor);
                let again = Money::parse_allow_zero(&m.to_decimal_string(), currency).unwrap();
                assert_eq!(again, m);
            }
        }
        assert_eq!(
            Money::from_minor(-1, Currency::Mop),
            Err(MoneyError::Negative)
        );
    }

    #[test]
    fn new_rejects_sub_minor_precision() {
        let d = Decimal::from_str("1.005").unwrap();
        assert!(Money::new(d, Currency::Mop).is_err());
        let d = Decimal::from_str("1.500").unwrap();
        assert_eq!(Money::new(d, Currency::Mop).unwrap().minor(), 150);
    }

    #[test]
    fn currency_serializes_as_alpha_code() {
        let json = serde_json::to_string(&Currency::Hkd).unwrap();
        assert_eq!(json, "\"HKD\"");
        let back: Currency = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Currency::Hkd);
        assert!(serde_json::from_str::<Currency>("\"hkd\"").is_err());
    }
}
