//! Use cases. Services take validated input and the store; they never see actix types.

pub mod admin_token;
pub mod idempotency;
pub mod merchants;
