//! Use cases. Services take validated input and the store; they never see actix types.

pub mod admin_token;
pub mod callbacks;
pub mod demo;
pub mod idempotency;
pub mod ledger_verify;
pub mod merchants;
pub mod notify;
pub mod payments;
pub mod rate_limit;
pub mod reconciler;
pub mod shopper;
