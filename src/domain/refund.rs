//! Refunds: partial or full, several per order, never above what was captured.
//! The refund id is sent to the wallet as its refund request number and reused on
//! every retry, so a retried refund never moves money twice.

use serde::{Deserialize, Serialize};
use sesame_adapters::money::Currency;

use super::UnixMillis;
use super::ids::{MerchantId, OrderId, RefundId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: RefundId,
    pub order_id: OrderId,
    pub merchant_id: MerchantId,
    pub amount_minor: i64,
    pub currency: Currency,
    pub reason: Option<String>,
    pub status: RefundStatus,
    pub wallet_refund_ref: Option<String>,
    pub failure: Option<String>,
    /// Why a person must look at this refund: the wallet reported another amount (the
    /// refund then stays pending and reserved, and is not re-issued), or it completed
    /// a refund we had recorded as failed.
    #[serde(default)]
    pub review: Option<String>,
    pub created_at: UnixMillis,
    /// Last change, or the last time the refund was asked about at its wallet.
    pub updated_at: UnixMillis,
}
