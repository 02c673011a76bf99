//! Orders (one payment attempt) and the ONE function that decides every state change.
//!
//! `created -> pending -> succeeded | failed | expired`. Terminal states never regress.
//! Money that a wallet reports as paid after we gave up on the order (expired, or a
//! failure the wallet later contradicts) has moved all the same: the order becomes
//! `succeeded` with `paid_late = true`, so it is posted and the merchant is told.
//! Callers apply a decision with compare-and-set on `version`; this module never
//! touches the store.

use serde::{Deserialize, Serialize};
use sesame_adapters::money::Currency;

use super::UnixMillis;
use super::ids::{MerchantId, OrderId, PlateId};

/// How the payment was started (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderMode {
    /// A shopper scanned a static plate and typed the amount.
    StaticScan,
    /// The merchant's POS created the order and shows its QR.
    DynamicQr,
    /// The POS scanned the shopper's payment code.
    CustomerCode,
}

/// One payment attempt, as stored. Changed only through `Store::commit` with
/// compare-and-set on `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub merchant_id: MerchantId,
    pub plate_id: Option<PlateId>,
    pub amount_minor: i64,
    pub currency: Currency,
    pub description: String,
    /// The merchant's own reference (its POS ticket number).
    pub reference: Option<String>,
    pub mode: OrderMode,
    /// Wallet brand id from the registry (`mpay`, `wechat_pay`, ...), once known.
    pub brand: Option<String>,
    /// Adapter id (`alipay_plus`, ...), once routed.
    pub adapter: Option<String>,
    pub status: OrderStatus,
    pub paid_late: bool,
    /// The wallet's id for the payment (trade_no, paymentId, transaction_id, tid).
    pub wallet_ref: Option<String>,
    /// What the shopper's device must do (QR string, redirect, JSAPI parameters), as JSON.
    pub pay_action: Option<serde_json::Value>,
    /// MDR applied to this order, fixed when it is routed.
    pub fee_bps: u32,
    /// Fee taken at capture (0 until succeeded).
    pub fee_minor: i64,
    /// Sum of succeeded refunds.
    pub refunded_minor: i64,
    /// Sum of refunds accepted but not final yet (counted against the refundable amount).
    pub refund_pending_minor: i64,
    /// Why a person must look at this order (e.g. the wallet reported another amount).
    pub review: Option<String>,
    pub expires_at: UnixMillis,
    /// When the reconciler should next look at the order: ask the wallet about an open
    /// one, re-check an expired one in its late-capture grace period, re-issue refunds
    /// of a succeeded one that are still in flight. The store indexes it as
    /// [`Order::due_at`] says.
    pub next_check_at: Option<UnixMillis>,
    pub paid_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub version: u64,
}

impl Order {
    /// What can still be refunded: captured − refunded − refunds in flight.
    pub fn refundable_minor(&self) -> i64 {
        if self.status != OrderStatus::Succeeded {
            return 0;
        }
        self.amount_minor - self.refunded_minor - self.refund_pending_minor
    }

    /// True while the reconciler may have to act (not terminal).
    pub fn is_open(&self) -> bool {
        !self.status.is_terminal()
    }

    /// When the order comes due for the reconciler, the ONE rule both store backends
    /// index by: `next_check_at` while the order is open, expired (a capture may still
    /// land while our close is unconfirmed) or succeeded with refunds in flight; never
    /// for a failed order or a settled one with nothing in flight.
    pub fn due_at(&self) -> Option<UnixMillis> {
        let needs_a_look = match self.status {
            OrderStatus::Created | OrderStatus::Pending | OrderStatus::Expired => true,
            OrderStatus::Succeeded => self.refund_pending_minor > 0,
            OrderStatus::Failed => false,
        };
        self.next_check_at.filter(|_| needs_a_look)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Created,
    Pending,
    Succeeded,
    Failed,
    Expired,
}

impl OrderStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Succeeded | OrderStatus::Failed | OrderStatus::Expired
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "created",
            OrderStatus::Pending => "pending",
            OrderStatus::Succeeded => "succeeded",
            OrderStatus::Failed => "failed",
            OrderStatus::Expired => "expired",
        }
    }
}

/// Something that happened to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEvent {
    /// The wallet accepted the order (QR issued, redirect issued, code charge pending).
    WalletAccepted,
    /// The wallet reports the payment captured.
    Paid,
    /// The wallet reports a final failure.
    Declined,
    /// Our deadline passed without a final answer.
    DeadlinePassed,
}

/// What to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Move to `to`; `paid_late` marks money captured after we had given up.
    Move { to: OrderStatus, paid_late: bool },
    /// Nothing changes (a duplicate, or news that would regress a terminal state).
    Keep,
}

/// The transition table. Pure: the same (status, event) always gives the same answer.
pub fn decide(status: OrderStatus, event: OrderEvent) -> Decision {
    use OrderEvent::*;
    use OrderStatus::*;
    match (status, event) {
        (Created, WalletAccepted) => Decision::Move {
            to: Pending,
            paid_late: false,
        },
        (Created | Pending, Paid) => Decision::Move {
            to: Succeeded,
            paid_late: false,
        },
        (Created | Pending, Declined) => Decision::Move {
            to: Failed,
            paid_late: false,
        },
        (Created | Pending, DeadlinePassed) => Decision::Move {
            to: Expired,
            paid_late: false,
        },
        // The wallet captured money after we expired the order, or after it reported
        // a failure it now contradicts: the money moved, so the order is paid (late).
        (Expired | Failed, Paid) => Decision::Move {
            to: Succeeded,
            paid_late: true,
        },
        // Duplicates, and anything that would take a terminal state backwards.
        (Pending, WalletAccepted)
        | (Succeeded, _)
        | (Failed, WalletAccepted | Declined | DeadlinePassed)
        | (Expired, WalletAccepted | Declined | DeadlinePassed) => Decision::Keep,
    }
}

/// True when `now` is past the order's deadline.
pub fn is_overdue(expires_at: UnixMillis, now: UnixMillis) -> bool {
    now >= expires_at
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATUSES: [OrderStatus; 5] = [
        OrderStatus::Created,
        OrderStatus::Pending,
        OrderStatus::Succeeded,
        OrderStatus::Failed,
        OrderStatus::Expired,
    ];
    const ALL_EVENTS: [OrderEvent; 4] = [
        OrderEvent::WalletAccepted,
        OrderEvent::Paid,
        OrderEvent::Declined,
        OrderEvent::DeadlinePassed,
    ];

    #[test]
    fn the_happy_path_moves_forward() {
        assert_eq!(
            decide(OrderStatus::Created, OrderEvent::WalletAccepted),
            Decision::Move {
                to: OrderStatus::Pending,
                paid_late: false
            }
        );
        assert_eq!(
            decide(OrderStatus::Pending, OrderEvent::Paid),
            Decision::Move {
                to: OrderStatus::Succeeded,
                paid_late: false
            }
        );
    }

    #[test]
    fn succeeded_never_changes_whatever_arrives() {
        for event in ALL_EVENTS {
            assert_eq!(
                decide(OrderStatus::Succeeded, event),
                Decision::Keep,
                "{event:?}"
            );
        }
    }

    #[test]
    fn a_late_payment_after_expiry_or_failure_is_succeeded_and_marked_late() {
        for status in [OrderStatus::Expired, OrderStatus::Failed] {
            assert_eq!(
                decide(status, OrderEvent::Paid),
                Decision::Move {
                    to: OrderStatus::Succeeded,
                    paid_late: true
                }
            );
        }
    }

    #[test]
    fn terminal_states_never_regress_to_a_non_terminal_one() {
        for status in ALL_STATUSES.into_iter().filter(|s| s.is_terminal()) {
            for event in ALL_EVENTS {
                if let Decision::Move { to, .. } = decide(status, event) {
                    assert!(to.is_terminal(), "{status:?} + {event:?} -> {to:?}");
                    assert_eq!(
                        to,
                        OrderStatus::Succeeded,
                        "only a capture may follow a terminal state"
                    );
                }
            }
        }
    }

    #[test]
    fn due_at_follows_what_is_left_to_do() {
        let mut order = Order {
            id: OrderId::generate_for(&MerchantId::generate()),
            merchant_id: MerchantId::generate(),
            plate_id: None,
            amount_minor: 1_000,
            currency: Currency::Mop,
            description: "x".into(),
            reference: None,
            mode: OrderMode::DynamicQr,
            brand: None,
            adapter: None,
            status: OrderStatus::Created,
            paid_late: false,
            wallet_ref: None,
            pay_action: None,
            fee_bps: 0,
            fee_minor: 0,
            refunded_minor: 0,
            refund_pending_minor: 0,
            review: None,
            expires_at: 10,
            next_check_at: Some(5),
            paid_at: None,
            created_at: 0,
            updated_at: 0,
            version: 1,
        };
        for (status, pending, due) in [
            (OrderStatus::Created, 0, Some(5)),
            (OrderStatus::Pending, 0, Some(5)),
            (OrderStatus::Expired, 0, Some(5)),
            (OrderStatus::Succeeded, 0, None),
            (OrderStatus::Succeeded, 300, Some(5)),
            (OrderStatus::Failed, 0, None),
        ] {
            order.status = status;
            order.refund_pending_minor = pending;
            assert_eq!(order.due_at(), due, "{status:?} with {pending} in flight");
        }
        order.next_check_at = None;
        assert_eq!(order.due_at(), None);
    }

    #[test]
    fn applying_any_event_twice_is_the_same_as_once() {
        for status in ALL_STATUSES {
            for event in ALL_EVENTS {
                let once = match decide(status, event) {
                    Decision::Move { to, .. } => to,
                    Decision::Keep => status,
                };
                assert_eq!(
                    decide(once, event),
                    Decision::Keep,
                    "{status:?} + {event:?} twice"
                );
            }
        }
    }
}
