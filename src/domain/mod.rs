//! The gateway's domain: identifiers, merchants, plates, API keys.
//!
//! Owns the types that are parsed once at the edge and trusted inside.
//! Must never: know about HTTP, SQL, Redis or wallets' wire formats.

pub mod event;
pub mod ids;
pub mod ledger;
pub mod merchant;
pub mod order;
pub mod plate;
pub mod refund;

pub use ids::{EventId, MerchantId, OrderId, PlateId, RefundId};
pub use merchant::{ApiKey, ApiKeyRecord, Merchant, MerchantStatus, NewMerchant};
pub use plate::{PayloadFormat, Plate};

/// Milliseconds since the Unix epoch. Every timestamp in the store uses it.
pub type UnixMillis = i64;
