//! Test harness: private Redis servers, fresh stores, the running app.

pub mod app;
pub mod merchant_endpoint;
pub mod paused_store;
pub mod redis_server;
pub mod stores;
