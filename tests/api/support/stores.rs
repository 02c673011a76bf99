//! Fresh store instances for the conformance suite, one per test.

use std::sync::Arc;

use sesame::store::DynStore;
use sesame::store::embedded::EmbeddedStore;
use sesame::store::redis::RedisStore;

use super::redis_server::RedisServer;

/// A store plus whatever must stay alive while it is used.
pub struct TestStore {
    pub store: DynStore,
    _dir: Option<tempfile::TempDir>,
    _redis: Option<RedisServer>,
}

pub async fn embedded() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path())
        .await
        .expect("open embedded store");
    TestStore {
        store: Arc::new(store),
        _dir: Some(dir),
        _redis: None,
    }
}

pub async fn redis() -> TestStore {
    let server = RedisServer::start().await;
    let store = RedisStore::connect(
        &server.url(),
        "test:",
        false,
        std::time::Duration::from_secs(2),
    )
    .await
    .expect("connect redis store");
    TestStore {
        store: Arc::new(store),
        _dir: None,
        _redis: Some(server),
    }
}
