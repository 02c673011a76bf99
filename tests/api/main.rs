//! The one integration-test binary: everything runs through the real server
//! (`spawn_app`), the real binary, or the real store backends (private SQLite dir,
//! private redis-server).

mod support;

mod adapter_config;
mod browser;
mod callbacks;
mod cli;
mod errors;
mod idempotency;
mod merchants;
mod ops;
mod orders;
mod payment_store_conformance;
mod payments;
mod plates_render;
mod redis_durability;
mod sandboxes;
mod shopper;
mod store_conformance;
mod wallet_routing;
