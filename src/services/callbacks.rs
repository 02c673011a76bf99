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
            let siblings = state.store.refunds_of(&refund.order_id).await?;
            let order_refunded = state
                .store
                .order(&refund.order_id)
                .await?
                .map(|o| o.refunded_minor)
                .unwrap_or(0);
            // The wallet's cumulative total when it reports one (Alipay's `refund_fee`),
            // else this refund's own amount, which must be ours exactly.
            let confirmed = match &refunded_total {
                Some(total) => {
                    total.currency() == refund.currency
                        && confirms_cumulative(total.minor(), &refund, order_refunded, &siblings)
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
            match refund.status {
                RefundStatus::Pending => {
                    payments::finish_refund(state, &id, true, wallet_refund_ref, None).await?;
                }
                // We recorded a failure the wallet now contradicts: the money moved.
                RefundStatus::Failed => {
                    payments::late_refund(state, &id, wallet_refund_ref).await?;
                }
                RefundStatus::Succeeded => {}
            }
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

/// Most subsets of other refunds in flight `confirms_cumulative` tries before it only
/// checks that the reported total lies within what they could add up to.
const MAX_SUBSET_SUMS: usize = 4_096;

/// Whether a wallet's cumulative refunded total (Alipay's `refund_fee`) confirms
/// `refund`: the total counts every refund the wallet has executed on the trade — the
/// ones we have confirmed (`order_refunded`), this one, and any of the order's other
/// refunds still pending here (their confirmations may not have reached us yet).
fn confirms_cumulative(
    reported: i64,
    refund: &Refund,
    order_refunded: i64,
    siblings: &[Refund],
) -> bool {
    let unexplained = reported - order_refunded - refund.amount_minor;
    if unexplained < 0 {
        return false;
    }
    let in_flight: Vec<i64> = siblings
        .iter()
        .filter(|r| r.id != refund.id && r.status == RefundStatus::Pending)
        .map(|r| r.amount_minor)
        .collect();
    // Sums of subsets of the other pending refunds (few in practice).
    let mut sums = std::collections::BTreeSet::from([0i64]);
    for amount in &in_flight {
        let grown: Vec<i64> = sums.iter().map(|s| s + amount).collect();
        sums.extend(grown);
        if sums.len() > MAX_SUBSET_SUMS {
            return unexplained <= in_flight.iter().sum::<i64>();
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
