//! Reading the amount a shopper typed. Phones type many shapes of one number:
//! full-width digits (`１２`), a decimal comma (`12,50`), a trailing or leading mark
//! (`12.`, `.5`), grouped thousands (`1,000.50`, `1.000,50`). The rule that can never
//! charge a wrong amount: a mark is read as grouping or as decimals only when no other
//! reading exists; `1,000` and `1.000` (one mark followed by exactly three digits) mean
//! a thousand in one convention and one in another, so they are refused with a
//! message that asks for the amount without separators. Must never: guess.

use sesame_adapters::money::{Currency, Money, MoneyError};

/// Why a typed (or fixed) amount is refused; shown next to the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountError {
    Empty,
    Invalid,
    /// `1,000` / `1.000`: a thousand, or one? Not guessed.
    Ambiguous,
    /// Decimals in a currency without minor units (KRW).
    WholeOnly,
    TooManyDecimals {
        allowed: u32,
    },
    BelowMinimum(Money),
    AboveMaximum(Money),
}

/// The longest input looked at; longer is not an amount.
const MAX_CHARS: usize = 32;

/// A typed amount in `currency`, within `[min_minor, max_minor]`.
pub fn parse_amount(
    input: &str,
    currency: Currency,
    min_minor: i64,
    max_minor: i64,
) -> Result<Money, AmountError> {
    let (int, frac) = split_number(input)?;
    let allowed = currency.exponent();
    if frac.len() as u32 > allowed {
        return Err(if allowed == 0 {
            AmountError::WholeOnly
        } else {
            AmountError::TooManyDecimals { allowed }
        });
    }
    let plain = if frac.is_empty() {
        int
    } else {
        format!("{int}.{frac}")
    };
    let money = match Money::parse_allow_zero(&plain, currency) {
        Ok(money) => money,
        Err(MoneyError::TooLarge) => return Err(above(max_minor, currency)),
        Err(_) => return Err(AmountError::Invalid),
    };
    within_bounds(money, min_minor, max_minor)
}

/// `money` when it lies within `[min_minor, max_minor]`.
pub fn within_bounds(money: Money, min_minor: i64, max_minor: i64) -> Result<Money, AmountError> {
    if money.minor() < min_minor {
        return Err(Money::from_minor(min_minor, money.currency())
            .map(AmountError::BelowMinimum)
            .unwrap_or(AmountError::Invalid));
    }
    if money.minor() > max_minor {
        return Err(above(max_minor, money.currency()));
    }
    Ok(money)
}

fn above(max_minor: i64, currency: Currency) -> AmountError {
    Money::from_minor(max_minor, currency)
        .map(AmountError::AboveMaximum)
        .unwrap_or(AmountError::Invalid)
}

/// Full-width digits and marks (what CJK keyboards type) as ASCII.
fn half_width(c: char) -> char {
    match c {
        '０'..='９' => char::from(b'0' + (c as u32 - '０' as u32) as u8),
        '．' => '.',
        '，' => ',',
        other => other,
    }
}

/// The integer and fraction digits of `input`, or why it is not one reading of a number.
fn split_number(input: &str) -> Result<(String, String), AmountError> {
    let text: String = input.trim().chars().map(half_width).collect();
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    if text.chars().count() > MAX_CHARS
        || !text
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
    {
        return Err(AmountError::Invalid);
    }
    let dots = text.matches('.').count();
    let commas = text.matches(',').count();
    let (int, frac) = match (dots, commas) {
        (0, 0) => (text.clone(), String::new()),
        // One kind of mark.
        (n, 0) | (0, n) => {
            let mark = if dots > 0 { '.' } else { ',' };
            if n > 1 {
                // Twice the same mark: it can only be grouping.
                (grouped(&text, mark)?, String::new())
            } else {
                let (int, frac) = text.split_once(mark).ok_or(AmountError::Invalid)?;
                if frac.len() == 3 && is_leading_group(int) {
                    return Err(AmountError::Ambiguous);
                }
                (int.to_owned(), frac.to_owned())
            }
        }
        // Both kinds: the last mark is the decimal one and appears once; the other groups.
        _ => {
            let last = text.rfind(['.', ',']).ok_or(AmountError::Invalid)?;
            let decimal = text[last..].chars().next().ok_or(AmountError::Invalid)?;
            let group = if decimal == '.' { ',' } else { '.' };
            let (int, frac) = (&text[..last], &text[last + 1..]);
            if int.contains(decimal) {
                return Err(AmountError::Invalid);
            }
            (grouped(int, group)?, frac.to_owned())
        }
    };
    if int.is_empty() && frac.is_empty() {
        return Err(AmountError::Invalid);
    }
    let int = if int.is_empty() { "0".to_owned() } else { int };
    Ok((int, frac))
}

/// A first group of thousands: 1 to 3 digits, not starting with 0.
fn is_leading_group(digits: &str) -> bool {
    (1..=3).contains(&digits.len()) && !digits.starts_with('0')
}

/// `1,000,000` → `1000000`, when every group after the first has exactly 3 digits.
fn grouped(text: &str, mark: char) -> Result<String, AmountError> {
    let mut groups = text.split(mark);
    let first = groups.next().unwrap_or_default();
    if !is_leading_group(first) {
        return Err(AmountError::Invalid);
    }
    let mut digits = first.to_owned();
    for group in groups {
        if group.len() != 3 {
            return Err(AmountError::Invalid);
        }
        digits.push_str(group);
    }
    Ok(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: i64 = 100_000_000;

    fn mop(input: &str) -> Result<i64, AmountError> {
        parse_amount(input, Currency::Mop, 1, MAX).map(|m| m.minor())
    }

    fn krw(input: &str) -> Result<i64, AmountError> {
        parse_amount(input, Currency::Krw, 1, MAX).map(|m| m.minor())
    }

    #[test]
    fn plain_and_comma_decimals_and_full_width_digits_are_read() {
        for (input, minor) in [
            ("12", 1200),
            ("12.5", 1250),
            ("12,50", 1250),
            (" 12.50 ", 1250),
            ("12.", 1200),
            (".5", 50),
            (",05", 5),
            ("１２", 1200),
            ("１２．５０", 1250),
            ("１２，５", 1250),
            ("\u{3000}7\u{3000}", 700),
            ("0012", 1200),
            ("1234.5", 123_450),
        ] {
            assert_eq!(mop(input), Ok(minor), "{input:?}");
        }
        assert_eq!(krw("12000"), Ok(12_000));
        assert_eq!(krw("12000."), Ok(12_000));
    }

    #[test]
    fn well_formed_grouping_is_unambiguous_and_read() {
        for (input, minor) in [
            ("1,000.50", 100_050),
            ("1.000,50", 100_050),
            ("1,000,000", 100_000_000),
            ("1.000.000", 100_000_000),
            ("12,345.6", 1_234_560),
            ("1,000.", 100_000),
        ] {
            assert_eq!(mop(input), Ok(minor), "{input:?}");
        }
        assert_eq!(krw("1,000,000"), Ok(1_000_000));
        assert_eq!(krw("12.345.678"), Ok(12_345_678));
    }

    #[test]
    fn a_single_mark_before_three_digits_is_never_guessed() {
        for input in ["1,000", "1.000", "12,000", "999.999", "１，０００"] {
            assert_eq!(mop(input), Err(AmountError::Ambiguous), "{input:?}");
            assert_eq!(krw(input), Err(AmountError::Ambiguous), "{input:?}");
        }
        // No grouping reading exists: a plain decimal with too many places.
        assert_eq!(
            mop("0.125"),
            Err(AmountError::TooManyDecimals { allowed: 2 })
        );
        assert_eq!(
            mop("1234.567"),
            Err(AmountError::TooManyDecimals { allowed: 2 })
        );
        assert_eq!(
            mop(".125"),
            Err(AmountError::TooManyDecimals { allowed: 2 })
        );
        assert_eq!(
            mop("01,000"),
            Err(AmountError::TooManyDecimals { allowed: 2 }),
            "a leading zero is no thousands group"
        );
    }

    #[test]
    fn decimals_in_a_whole_currency_get_their_own_error() {
        assert_eq!(krw("12.5"), Err(AmountError::WholeOnly));
        assert_eq!(krw("12,50"), Err(AmountError::WholeOnly));
        assert_eq!(
            mop("1.234"),
            Err(AmountError::Ambiguous),
            "three digits after one mark"
        );
        assert_eq!(
            mop("1.2345"),
            Err(AmountError::TooManyDecimals { allowed: 2 })
        );
    }

    #[test]
    fn malformed_input_is_invalid_and_empty_is_empty() {
        assert_eq!(mop(""), Err(AmountError::Empty));
        assert_eq!(mop("   "), Err(AmountError::Empty));
        for input in [
            "abc",
            "-5",
            "+5",
            "1e3",
            "12 50",
            "1 000",
            "MOP 12",
            ".",
            ",",
            "1,00.50",
            "1.000.00",
            "1,000.000,5",
            "1.5,000",
            "12..5",
            "1,2.3,4",
            "NaN",
            "١٢",
        ] {
            assert_eq!(mop(input), Err(AmountError::Invalid), "{input:?}");
        }
        assert_eq!(mop(&"9".repeat(40)), Err(AmountError::Invalid));
    }

    #[test]
    fn bounds_are_enforced_with_the_limit_in_the_error() {
        assert_eq!(
            mop("0"),
            Err(AmountError::BelowMinimum(
                Money::from_minor(1, Currency::Mop).unwrap()
            ))
        );
        assert_eq!(
            mop("1000000.01"),
            Err(AmountError::AboveMaximum(
                Money::from_minor(MAX, Currency::Mop).unwrap()
            ))
        );
        assert_eq!(mop("1000000"), Ok(MAX));
        assert_eq!(
            mop(&"9".repeat(30)),
            Err(AmountError::AboveMaximum(
                Money::from_minor(MAX, Currency::Mop).unwrap()
            ))
        );
        let fixed = Money::from_minor(MAX + 1, Currency::Mop).unwrap();
        assert!(matches!(
            within_bounds(fixed, 1, MAX),
            Err(AmountError::AboveMaximum(_))
        ));
    }
}
