//! Applying a verified wallet callback (DESIGN §4). The caller has already verified the
//! signature over the raw bytes; this decides what the event means for our books and
//! answers whether the wallet may stop sending it.

use sesame_adapters::contract::{AdapterId, WalletEvent};
use sesame_adapters::money::Money;

use crate::domain::refund::{Refund, RefundStatus};
use crate::domain::{OrderId, RefundId};
use crate::error::{ApiError, ErrorCode};
use crate::services::payments::{self, Paid, SettleResult};
use crate::startup::AppState;

/// What to tell the wallet once the event is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Durably applied, or nothing to apply (duplicate, unknown order, flagged for
    /// review): the wallet may stop retrying.
    Processed,
    /// Cannot be applied yet (a refund reported before its payment is on our books):
    /// the wallet must send it again later.
    RetryLater,
}

pub async fn apply(
    state: &AppState,
    adapter: AdapterId,
    event: WalletEvent,
) -> Result<Handled, ApiError> {
    match event {
        WalletEvent::PaymentSucceeded {
            order_id,
            wallet_ref,
            amount,
            event_id,
            paid_at,
            brand,
        } => {
            let Some(id) = known_order(&order_id) else {
                return Ok(Handled::Processed);
            };
            let paid = Paid {
                wallet_ref,
                amount,
                paid_at: paid_at.map(|t| t.timestamp_millis()),
                brand,
            };
            let settled = payments::settle_payment(state, &id, &paid, &format!("{adapter}:{event_id}"))
                .await
                .map(|result| {
                    if result == SettleResult::Mismatch {
                        tracing::error!(order = %id, "wallet amount or currency differs from the order: flagged for review, nothing posted");
                    }
                    Handled::Processed
                });
            unknown_is_processed(settled, &id)
        }
        WalletEvent::PaymentFailed {
            order_id,
            code,
            message,
            ..
        } => {
            let Some(id) = known_order(&order_id) else {
                return Ok(Handled::Processed);
            };
            let failed = payments::fail_order(state, &id, &format!("{code}: {message}"))
                .await
                .map(|_| Handled::Processed);
            unknown_is_processed(failed, &id)
        }
        WalletEvent::RefundSucceeded {
            order_id,
            refund_id,
            wallet_refund_ref,
            amount,
            refunded_total,
            ..
        } => {
            let Some(id) = RefundId::parse(&refund_id) else {
                tracing::error!(
                    order_id,
                    refund_id,
                    "wallet reported a refund Sesame did not issue"
                );
                return Ok(Handled::Processed);
            };
            let Some(refund) = state.store.refund(&id).await? else {
                // Our refund record is written before the wallet is asked, so an unknown
                // id with our shape is a refund racing its own reservation: ask again.
                return Ok(Handled::RetryLater);
            };
            if refund.status == RefundStatus::Succeeded {
                return Ok(Handled::Processed);
            }
            // The wallet's cumulative total when it reports one (Alipay's `refund_fee`),
            // else this refund's own amount, which must be ours exactly.
            let confirmed = match &refunded_total {
                Some(total) => {
                    let siblings = state.store.refunds_of(&refund.order_id).await?;
                    total.currency() == refund.currency
                        && confirms_cumulative(total.minor(), &refund, &siblings)
                }
                None => amount.minor() == refund.amount_minor,
            };
            if amount.currency() != refund.currency || !confirmed {
                let why = format!(
                    "wallet reported {amount} for refund {} of {}",
                    refund.id,
                    Money::from_minor(refund.amount_minor, refund.currency)
                        .map(|m| m.to_string())
                        .unwrap_or_default()
                );
                payments::flag_refund_review(state, &id, &why).await?;
                return Ok(Handled::Processed);
            }
            // Posted if pending; if recorded failed meanwhile (the wallet contradicts
            // itself: the money moved), posted late when the capture still covers it.
            payments::finish_refund(state, &id, true, wallet_refund_ref, None).await?;
            Ok(Handled::Processed)
        }
        WalletEvent::RefundFailed {
            refund_id,
            code,
            message,
            ..
        } => {
            if let Some(id) = RefundId::parse(&refund_id)
                && state.store.refund(&id).await?.is_some()
            {
                payments::finish_refund(
                    state,
                    &id,
                    false,
                    None,
                    Some(format!("{code}: {message}")),
                )
                .await?;
            }
            Ok(Handled::Processed)
        }
        WalletEvent::Informational { .. } => Ok(Handled::Processed),
    }
}

/// Most subsets of the order's other refunds `confirms_cumulative` tries before it
/// only checks that the reported total lies within what they could add up to.
const MAX_SUBSET_SUMS: usize = 4_096;

/// Whether a wallet's cumulative refunded total (Alipay's `refund_fee`) confirms
/// `refund`: the total counts this refund and whichever of the order's other refunds
/// the wallet had executed when it wrote the notification — any of them, whatever
/// their status here: a confirmed one may have run after this one, a pending one may
/// not be confirmed here yet, one recorded failed may have run after all. So the
/// total less this refund must be the sum of some subset of the others.
fn confirms_cumulative(reported: i64, refund: &Refund, siblings: &[Refund]) -> bool {
    let unexplained = reported - refund.amount_minor;
    if unexplained < 0 {
        return false;
    }
    let others: Vec<i64> = siblings
        .iter()
        .filter(|r| r.id != refund.id)
        .map(|r| r.amount_minor)
        .collect();
    let mut sums = std::collections::BTreeSet::from([0i64]);
    for amount in &others {
        let grown: Vec<i64> = sums.iter().map(|s| s + amount).collect();
        sums.extend(grown);
        if sums.len() > MAX_SUBSET_SUMS {
            return unexplained <= others.iter().sum::<i64>();
        }
    }
    sums.contains(&unexplained)
}

/// Our order id, if the wallet named an id Sesame issued (the order itself is read by
/// the settle, once). Unknown orders are logged and acknowledged: retrying cannot
/// make them known.
fn known_order(order_id: &str) -> Option<OrderId> {
    let id = OrderId::parse(order_id);
    if id.is_none() {
        tracing::error!(order_id, "callback for an order id Sesame never issued");
    }
    id
}

/// An order the wallet named but we do not have is acknowledged, not retried.
fn unknown_is_processed(
    result: Result<Handled, ApiError>,
    order: &OrderId,
) -> Result<Handled, ApiError> {
    match result {
        Err(e) if e.code == ErrorCode::OrderNotFound => {
            tracing::error!(order = %order, "callback for an unknown order");
            Ok(Handled::Processed)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MerchantId;
    use sesame_adapters::money::Currency;

    fn refunds(amounts: &[(i64, RefundStatus)]) -> Vec<Refund> {
        let merchant = MerchantId::generate();
        let order = OrderId::generate_for(&merchant);
        amounts
            .iter()
            .map(|&(amount_minor, status)| Refund {
                id: RefundId::generate_for(&merchant),
                order_id: order.clone(),
                merchant_id: merchant.clone(),
                amount_minor,
                currency: Currency::Cny,
                reason: None,
                status,
                wallet_refund_ref: None,
                failure: None,
                review: None,
                created_at: 0,
                updated_at: 0,
            })
            .collect()
    }

    #[test]
    fn a_cumulative_total_is_this_refund_plus_any_subset_of_the_others() {
        use RefundStatus::{Failed, Pending, Succeeded};
        let all = refunds(&[(1000, Pending), (500, Succeeded), (300, Failed)]);
        let this = &all[0];
        for total in [1000, 1300, 1500, 1800] {
            assert!(confirms_cumulative(total, this, &all), "{total}");
        }
        for total in [0, 999, 1001, 1200, 1900, -5] {
            assert!(!confirms_cumulative(total, this, &all), "{total}");
        }
        // Alone on its order: exactly its own amount.
        assert!(confirms_cumulative(1000, this, &all[..1]));
        assert!(!confirms_cumulative(1500, this, &all[..1]));
    }

    #[test]
    fn past_the_subset_budget_a_total_only_has_to_fit_what_the_others_add_up_to() {
        let many: Vec<(i64, RefundStatus)> = (0..20)
            .map(|i| (1 + i * 7, RefundStatus::Succeeded))
            .collect();
        let all = refunds(&many);
        let rest: i64 = all[1..].iter().map(|r| r.amount_minor).sum();
        assert!(confirms_cumulative(1 + rest, &all[0], &all));
        assert!(!confirms_cumulative(2 + rest, &all[0], &all));
    }
}
