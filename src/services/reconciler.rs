//! The reconciler: orders whose next check is due are looked at one by one. An open
//! order is asked about at its wallet and settled, failed, expired (and closed at the
//! wallet) or checked again later; customer codes waiting for the shopper and Kakao
//! returns that never came are covered the same way. An expired order whose close
//! the wallet never confirmed is checked for a late capture during its grace period.
//! A succeeded order with refunds in flight has them sent to the wallet again (same
//! refund id) until they are final. Safe to run in several processes at once: every
//! change is a compare-and-set commit.

use crate::services::payments;
use crate::startup::AppState;

/// Orders looked at per pass.
const BATCH: usize = 64;

/// One pass over due orders. Returns how many made progress (something committed:
/// settled, expired, or at least rescheduled); a pass that made none lets the worker
/// rest, so an order that keeps failing never turns the loop into a busy one.
pub async fn reconcile_once(state: &AppState) -> usize {
    let now = state.clock.now_ms();
    let due = match state.store.orders_due(now, BATCH).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "reconciler: store unavailable");
            return 0;
        }
    };
    let mut progressed = 0;
    for order in due {
        match payments::reconcile_order(state, &order).await {
            Ok(true) => progressed += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, order = %order.id, "reconciler: could not settle an order");
            }
        }
    }
    progressed
}
