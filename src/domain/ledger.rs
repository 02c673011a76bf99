//! Double-entry postings in integer minor units, per merchant and currency (DESIGN §6).
//!
//! A captured payment: Dr `wallet_clearing:<adapter>` amount, Cr `merchant_payable`
//! amount − fee, Cr `fee_income` fee (the merchant's MDR for the brand, rounded half
//! to even). A refund reverses proportionally; the fee share of refunds is computed on
//! the cumulative refunded amount, so a full refund (in one or many parts) reverses the
//! fee exactly. Debits are positive, credits negative: every entry sums to zero.
//! Must never: use floats, or produce an entry that does not balance.

use serde::{Deserialize, Serialize};

/// One balanced entry of the book: a payment capture or one refund of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// `<order id>:payment` or `<order id>:refund:<refund id>`: postings are idempotent by it.
    pub id: String,
    pub merchant_id: crate::domain::MerchantId,
    pub currency: sesame_adapters::money::Currency,
    pub order_id: crate::domain::ids::OrderId,
    pub kind: EntryKind,
    pub postings: Vec<Posting>,
    pub created_at: crate::domain::UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Payment,
    Refund,
}

impl LedgerEntry {
    pub fn payment_id(order: &crate::domain::ids::OrderId) -> String {
        format!("{order}:payment")
    }

    pub fn refund_id(
        order: &crate::domain::ids::OrderId,
        refund: &crate::domain::ids::RefundId,
    ) -> String {
        format!("{order}:refund:{refund}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account: String,
    /// Debit > 0, credit < 0, in minor units.
    pub amount: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("amount must be positive")]
    NonPositive,
    #[error("refunds would exceed the captured amount")]
    OverRefund,
    #[error("fee rate must be between 0 and 10000 basis points")]
    BadRate,
    #[error("amount too large")]
    Overflow,
}

pub const MERCHANT_PAYABLE: &str = "merchant_payable";
/// The highest merchant discount rate: 10000 basis points = 100 %.
pub const MAX_MDR_BPS: u32 = 10_000;
pub const FEE_INCOME: &str = "fee_income";

pub fn wallet_clearing(adapter: &str) -> String {
    format!("wallet_clearing:{adapter}")
}

/// `value * numerator / denominator`, rounded half to even, in exact integer arithmetic.
pub fn mul_div_half_even(value: i64, numerator: i64, denominator: i64) -> Option<i64> {
    if denominator <= 0 {
        return None;
    }
    let product = i128::from(value).checked_mul(i128::from(numerator))?;
    let d = i128::from(denominator);
    let quotient = product.div_euclid(d);
    let remainder = product.rem_euclid(d);
    let twice = remainder * 2;
    let rounded = if twice > d || (twice == d && quotient % 2 != 0) {
        quotient + 1
    } else {
        quotient
    };
    i64::try_from(rounded).ok()
}

/// The fee for a captured amount at `rate_bps` basis points.
pub fn fee(amount: i64, rate_bps: u32) -> Result<i64, LedgerError> {
    if amount <= 0 {
        return Err(LedgerError::NonPositive);
    }
    if rate_bps > MAX_MDR_BPS {
        return Err(LedgerError::BadRate);
    }
    mul_div_half_even(amount, i64::from(rate_bps), 10_000).ok_or(LedgerError::Overflow)
}

/// The balanced entry for a captured payment.
pub fn payment_entry(adapter: &str, amount: i64, fee: i64) -> Result<Vec<Posting>, LedgerError> {
    if amount <= 0 {
        return Err(LedgerError::NonPositive);
    }
    if !(0..=amount).contains(&fee) {
        return Err(LedgerError::BadRate);
    }
    Ok(vec![
        Posting {
            account: wallet_clearing(adapter),
            amount,
        },
        Posting {
            account: MERCHANT_PAYABLE.into(),
            amount: -(amount - fee),
        },
        Posting {
            account: FEE_INCOME.into(),
            amount: -fee,
        },
    ])
}

/// The balanced entry for a refund of `refund` after `refunded_before` was already
/// refunded on a payment of `captured` that carried `captured_fee`.
pub fn refund_entry(
    adapter: &str,
    captured: i64,
    captured_fee: i64,
    refunded_before: i64,
    refund: i64,
) -> Result<Vec<Posting>, LedgerError> {
    if refund <= 0 || captured <= 0 || refunded_before < 0 {
        return Err(LedgerError::NonPositive);
    }
    let refunded_after = refunded_before
        .checked_add(refund)
        .ok_or(LedgerError::Overflow)?;
    if refunded_after > captured {
        return Err(LedgerError::OverRefund);
    }
    let fee_before =
        mul_div_half_even(captured_fee, refunded_before, captured).ok_or(LedgerError::Overflow)?;
    let fee_after =
        mul_div_half_even(captured_fee, refunded_after, captured).ok_or(LedgerError::Overflow)?;
    let fee_back = fee_after - fee_before;
    Ok(vec![
        Posting {
            account: MERCHANT_PAYABLE.into(),
            amount: refund - fee_back,
        },
        Posting {
            account: FEE_INCOME.into(),
            amount: fee_back,
        },
        Posting {
            account: wallet_clearing(adapter),
            amount: -refund,
        },
    ])
}

/// True when the postings sum to zero (checked in i128, so no overflow hides a fault).
pub fn balances(postings: &[Posting]) -> bool {
    postings.iter().map(|p| i128::from(p.amount)).sum::<i128>() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_even_rounding() {
        assert_eq!(mul_div_half_even(125, 1, 10), Some(12)); // 12.5 -> 12
        assert_eq!(mul_div_half_even(135, 1, 10), Some(14)); // 13.5 -> 14
        assert_eq!(mul_div_half_even(126, 1, 10), Some(13));
        assert_eq!(mul_div_half_even(124, 1, 10), Some(12));
        assert_eq!(mul_div_half_even(0, 5, 10), Some(0));
        assert_eq!(mul_div_half_even(i64::MAX, 10_000, 10_000), Some(i64::MAX));
        assert_eq!(mul_div_half_even(1, 1, 0), None);
    }

    #[test]
    fn fee_uses_basis_points() {
        assert_eq!(fee(10_000, 120), Ok(120)); // 1.2 % of 100.00
        assert_eq!(fee(1_250, 100), Ok(12)); // 12.5 -> 12 (even)
        assert_eq!(fee(1_350, 100), Ok(14)); // 13.5 -> 14
        assert_eq!(fee(1, 10_000), Ok(1));
        assert_eq!(fee(0, 100), Err(LedgerError::NonPositive));
        assert_eq!(fee(100, 10_001), Err(LedgerError::BadRate));
    }

    #[test]
    fn a_payment_entry_balances() {
        let entry = payment_entry("alipay_plus", 2_550, 31).unwrap();
        assert!(balances(&entry));
        assert_eq!(
            entry[0],
            Posting {
                account: "wallet_clearing:alipay_plus".into(),
                amount: 2_550
            }
        );
        assert_eq!(entry[1].amount, -2_519);
        assert_eq!(entry[2].amount, -31);
    }

    #[test]
    fn partial_refunds_reverse_the_fee_exactly_in_total() {
        let captured = 1_001;
        let captured_fee = fee(captured, 150).unwrap(); // 15.015 -> 15
        let mut refunded = 0;
        let mut fee_back_total = 0;
        let mut payable_back_total = 0;
        for part in [333, 333, 335] {
            let entry = refund_entry("wechat_pay", captured, captured_fee, refunded, part).unwrap();
            assert!(balances(&entry));
            payable_back_total += entry[0].amount;
            fee_back_total += entry[1].amount;
            refunded += part;
        }
        assert_eq!(fee_back_total, captured_fee);
        assert_eq!(payable_back_total, captured - captured_fee);
        assert_eq!(
            refund_entry("wechat_pay", captured, captured_fee, refunded, 1),
            Err(LedgerError::OverRefund)
        );
    }

    #[test]
    fn every_refund_split_balances_and_sums_back() {
        for captured in [1i64, 7, 100, 999, 12_345] {
            for rate in [0u32, 1, 99, 150, 333, 10_000] {
                let f = fee(captured, rate).unwrap();
                let mut refunded = 0;
                let mut fee_back = 0;
                let step = (captured / 3).max(1);
                while refunded < captured {
                    let part = step.min(captured - refunded);
                    let entry = refund_entry("alipay", captured, f, refunded, part).unwrap();
                    assert!(balances(&entry));
                    assert!(entry[1].amount >= 0 && entry[0].amount >= 0);
                    fee_back += entry[1].amount;
                    refunded += part;
                }
                assert_eq!(fee_back, f, "captured {captured} rate {rate}");
            }
        }
    }
}
