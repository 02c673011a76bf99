//! The one integration-test binary: everything runs through the real server
//! (`spawn_app`) or the real store backends (private SQLite dir, private redis-server).

mod support;

mod redis_durability;
mod store_conformance;
