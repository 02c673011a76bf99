//! Merchant-facing events (`order.succeeded`, `refund.succeeded`, ...) with stable ids,
//! delivered through the durable outbox as signed webhooks.

use serde::{Deserialize, Serialize};

use super::UnixMillis;
use super::ids::{EventId, MerchantId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "order.succeeded")]
    OrderSucceeded,
    #[serde(rename = "order.failed")]
    OrderFailed,
    #[serde(rename = "order.expired")]
    OrderExpired,
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
    #[serde(rename = "refund.failed")]
    RefundFailed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::OrderSucceeded => "order.succeeded",
            EventKind::OrderFailed => "order.failed",
            EventKind::OrderExpired => "order.expired",
            EventKind::RefundSucceeded => "refund.succeeded",
            EventKind::RefundFailed => "refund.failed",
        }
    }
}

/// An event as stored and as sent: `data` is the order or refund as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub merchant_id: MerchantId,
    pub kind: EventKind,
    pub data: serde_json::Value,
    pub created_at: UnixMillis,
}

/// Delivery state of one event in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Gave up after the retry window; `resend` puts it back.
    Dead,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStatus {
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: Option<UnixMillis>,
    pub last_error: Option<String>,
}
