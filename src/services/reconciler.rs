//! The reconciler: open orders whose next check is due are asked about at their
//! wallet and settled, failed, expired (and closed at the wallet) or checked again
//! later. Customer codes waiting for the shopper and Kakao returns that never came
//! are covered the same way. Safe to run in several processes at once: every change
//! is a compare-and-set commit.

use crate::services::payments;
use crate::startup::AppState;

/// One pass over due orders. Returns how many were looked at.
pub async fn reconcile_once(state: &AppState) -> usize {
    let now = state.clock.now_ms();
    let due = match state.store.orders_due(now, 64).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "reconciler: store unavailable");
            return 0;
        }
    };
    let count = due.len();
    for order in due {
        if let Err(e) = payments::reconcile_order(state, &order).await {
            tracing::warn!(error = %e, order = %order.id, "reconciler: could not settle an order");
        }
    }
    count
}
