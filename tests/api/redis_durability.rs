//! The Redis backend's promises beyond the shared conformance suite: it refuses a
//! server that could lose acknowledged writes, keeps every key of a merchant under
//! one cluster hash tag, survives a kill -9 of Redis, and turns a hung server into
//! `Unavailable` within its timeout instead of hanging.
//! Each test runs its own private redis-server (never the machine's Redis).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sesame::domain::ApiKey;
use sesame::store::redis::RedisStore;
use sesame::store::{IdemBegin, IdemClock, IdemScope, Store, StoreError, StoredResponse};
use sha2::{Digest, Sha256};

use crate::store_conformance::{bundle, plate};
use crate::support::redis_server::RedisServer;

const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 24 * 3_600_000;

fn clock(now: i64) -> IdemClock {
    IdemClock {
        now,
        lease_ms: 60_000,
        retention_ms: DAY,
    }
}

async fn connect(server: &RedisServer, allow_volatile: bool) -> Result<RedisStore, StoreError> {
    RedisStore::connect(
        &server.url(),
        "test:",
        allow_volatile,
        Duration::from_secs(2),
    )
    .await
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn all_keys(server: &RedisServer) -> BTreeSet<String> {
    let mut conn = raw(server).await;
    let mut keys = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_without_aof_is_refused_unless_allow_volatile() {
    let server = RedisServer::start_with(&["--appendonly", "no"]).await;
    match connect(&server, false).await.unwrap_err() {
        StoreError::Misconfigured(message) => {
            assert!(message.contains("allow_volatile"), "{message}");
            assert!(message.contains("AOF is off"), "{message}");
        }
        other => panic!("expected Misconfigured, got {other:?}"),
    }
    let store = connect(&server, true).await.unwrap();
    let health = store.health().await.unwrap();
    assert_eq!(health.backend, "redis");
    assert!(!health.durable, "{health:?}");
    assert_eq!(health.durability, "redis volatile (aof off)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_everysec_fsync_is_refused() {
    let server =
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"]).await;
    match connect(&server, false).await.unwrap_err() {
        StoreError::Misconfigured(message) => {
            assert!(message.contains("everysec"), "{message}");
            assert!(message.contains("allow_volatile"), "{message}");
        }
        other => panic!("expected Misconfigured, got {other:?}"),
    }
    let health = connect(&server, true)
        .await
        .unwrap()
        .health()
        .await
        .unwrap();
    assert!(!health.durable);
    assert_eq!(
        health.durability,
        "redis volatile (aof appendfsync=everysec)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_notices_a_durability_change_made_after_connect() {
    let server = RedisServer::start().await;
    let store = connect(&server, false).await.unwrap();
    let health = store.health().await.unwrap();
    assert!(health.durable);
    assert_eq!(health.durability, "redis aof appendfsync=always");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("everysec")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    let health = store.health().await.unwrap();
    assert!(!health.durable, "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_a_merchant_share_one_hash_tag() {
    let server = RedisServer::start().await;
    let store = connect(&server, false).await.unwrap();
    let (b, _old_key) = bundle("Cafe", T0);
    let id = b.merchant.id.clone();
    store.create_merchant(&b).await.unwrap();
    let second = plate(&id, "Till 2", T0 + 1);
    store.insert_plate(&second).await.unwrap();
    let new_key = ApiKey::generate();
    store
        .rotate_api_key(&id, &new_key.record(T0 + 2))
        .await
        .unwrap();
    let scope = IdemScope::Merchant(id.clone());
    let IdemBegin::Started(lease) = store
        .idem_begin(&scope, "order-1", &[1; 32], clock(T0))
        .await
        .unwrap()
    else {
        panic!("expected Started");
    };
    let done = StoredResponse {
        status: 201,
        body: b"{}".to_vec(),
    };
    assert!(
        store
            .idem_finish(&scope, "order-1", &lease, &done)
            .await
            .unwrap()
    );
    store
        .idem_begin(&IdemScope::Admin, "admin-1", &[2; 32], clock(T0))
        .await
        .unwrap();
    store.secret("plate", b"s3cret").await.unwrap();

    let keys = all_keys(&server).await;
    let tag = format!("test:{{m:{id}}}:");
    let scoped: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.contains(id.as_str()))
        .cloned()
        .collect();
    for key in &scoped {
        assert!(key.starts_with(&tag), "{key} lacks the merchant hash tag");
    }
    let expected_scoped: BTreeSet<String> = [
        "merchant".to_owned(),
        "plates".to_owned(),
        "apikey".to_owned(),
        format!("plate:{}", b.first_plate.id),
        format!("plate:{}", second.id),
        format!("idem:{}", sha256_hex("order-1")),
    ]
    .iter()
    .map(|suffix| format!("{tag}{suffix}"))
    .collect();
    assert_eq!(scoped, expected_scoped);

    let global: BTreeSet<String> = keys
        .iter()
        .filter(|k| !k.starts_with("test:{"))
        .cloned()
        .collect();
    let expected_global: BTreeSet<String> = [
        "test:merchants".to_owned(),
        format!("test:plate-owner:{}", b.first_plate.id),
        format!("test:plate-owner:{}", second.id),
        // Only the CURRENT key: rotation dropped the old key's index entry.
        format!("test:apikey:{}", ApiKey::hash_of(new_key.expose())),
        "test:secret:plate".to_owned(),
        format!("test:idem:admin:{}", sha256_hex("admin-1")),
    ]
    .into_iter()
    .collect();
    assert_eq!(global, expected_global);
    assert_eq!(keys.len(), scoped.len() + global.len());

    // Redis drops idempotency records after retention, counted on its own clock
    // (the test's injected time lies in the past).
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{tag}idem:{}", sha256_hex("order-1")))
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert!(pttl > DAY - 60_000 && pttl <= DAY, "pttl {pttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_survives_redis_restart_with_aof() {
    let mut server = RedisServer::start().await;
    let store = connect(&server, false).await.unwrap();
    let (b, key) = bundle("Cafe", T0);
    store.create_merchant(&b).await.unwrap();
    assert!(server.dir().join("appendonlydir").is_dir());

    let port = server.port();
    server.restart().await;
    assert_eq!(
        server.port(),
        port,
        "the store reconnects to the same address"
    );

    // The first call after the crash may see the dropped connection; the manager
    // reconnects and a retry succeeds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let found = loop {
        match store.merchant(&b.merchant.id).await {
            Ok(found) => break found,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("store did not recover: {other:?}"),
        }
    };
    assert_eq!(found, Some(b.merchant.clone()));
    let by_key = store
        .merchant_by_api_key(&ApiKey::hash_of(key.expose()))
        .await
        .unwrap();
    assert_eq!(by_key.map(|m| m.id), Some(b.merchant.id.clone()));
    assert_eq!(
        store.plates_of(&b.merchant.id).await.unwrap(),
        vec![b.first_plate.clone()]
    );
    assert!(store.health().await.unwrap().durable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_timeout_surfaces_as_unavailable() {
    let server = RedisServer::start().await;
    let timeout = Duration::from_millis(300);
    let store = RedisStore::connect(&server.url(), "test:", false, timeout)
        .await
        .unwrap();
    let (b, _) = bundle("Cafe", T0);
    store.create_merchant(&b).await.unwrap();

    // SAFETY: signals our own child process; SIGCONT below (or SIGKILL on drop) ends it.
    unsafe { libc::kill(server.pid(), libc::SIGSTOP) };
    let started = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), store.merchant(&b.merchant.id)).await;
    let read_took = started.elapsed();
    let started = Instant::now();
    let write = tokio::time::timeout(
        Duration::from_secs(10),
        store.idem_begin(&IdemScope::Admin, "k", &[1; 32], clock(T0)),
    )
    .await;
    let write_took = started.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(server.pid(), libc::SIGCONT) };

    assert!(
        matches!(read, Ok(Err(StoreError::Unavailable(_)))),
        "{read:?}"
    );
    assert!(
        matches!(write, Ok(Err(StoreError::Unavailable(_)))),
        "{write:?}"
    );
    let bound = timeout + Duration::from_millis(500);
    assert!(read_took < bound, "read took {read_took:?}");
    assert!(write_took < bound, "write took {write_took:?}");

    // Once Redis answers again, so does the store.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.merchant(&b.merchant.id).await {
            Ok(found) => {
                assert_eq!(found, Some(b.merchant.clone()));
                break;
            }
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("store did not recover: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_unavailable_and_its_password_stays_hidden() {
    // A port nothing listens on: bind, note it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
    let started = Instant::now();
    let err = RedisStore::connect(&url, "test:", false, Duration::from_millis(200))
        .await
        .unwrap_err();
    match &err {
        StoreError::Unavailable(message) => {
            assert!(!message.contains("hunter2"), "{message}");
            assert!(message.contains(":***@127.0.0.1"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(15));
}
