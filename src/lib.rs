//! Sesame: a QR-code merchant payment aggregator (one plate, every wallet).
//!
//! Layout (DESIGN §1): `http` (routes, HTTP only) -> `services` (use cases, no actix
//! types) -> `store` (the only code that knows tables, keys or Lua). `domain` holds
//! the parsed types; `qr` payloads and rendering; `cli` the command line.

pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod i18n;
pub mod metrics;
pub mod qr;
pub mod services;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod wallets;
pub mod workers;
