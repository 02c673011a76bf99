//! QR plates: what a merchant prints. A plate's token (in its URL) is derived from the
//! plate id and a server secret (see `qr::token`), so it is not stored.

use serde::{Deserialize, Serialize};

use super::UnixMillis;
use super::ids::{MerchantId, PlateId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// `{public_base_url}/q/{token}`: every wallet's scanner opens it.
    Url,
    /// EMVCo Merchant-Presented Mode with our template in tag 26.
    Emvco,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plate {
    pub id: PlateId,
    pub merchant_id: MerchantId,
    pub label: String,
    /// Fixed amount in the merchant's currency minor units; `None` = shopper types it.
    pub fixed_amount_minor: Option<i64>,
    pub format: PayloadFormat,
    pub created_at: UnixMillis,
}
