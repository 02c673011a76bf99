//! The Redis backend's promises beyond the shared conformance suite: it refuses a
//! server that could lose acknowledged writes, keeps every key of a merchant under
//! one cluster hash tag, survives a kill -9 of Redis, and turns a hung server into
//! `Unavailable` within its timeout instead of hanging. The same holds for payments:
//! a commit writes only under the merchant's hash tag (plus the two documented global
//! work sets), and a settle acknowledged before a kill -9 is still there afterwards.
//! Each test runs its own private redis-server (never the machine's Redis).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sesame::domain::event::{DeliveryState, Event, EventKind};
use sesame::domain::ledger::{self, EntryKind, LedgerEntry};
use sesame::domain::order::{Order, OrderMode, OrderStatus};
use sesame::domain::refund::{Refund, RefundStatus};
use sesame::domain::{ApiKey, EventId, MerchantId, OrderId, RefundId};
use sesame::store::redis::RedisStore;
use sesame::store::{
    CommitOutcome, IdemBegin, IdemClock, IdemScope, OrderChange, PaymentStore, Store, StoreError,
    StoredResponse,
};
use sesame_adapters::money::Currency;
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
    // (the test's injected time lies in the past): the purge worker has nothing to
    // delete here, and every record, admin or merchant, carries its TTL.
    assert_eq!(
        store.idem_purge_expired(T0 + 2 * DAY, 100).await.unwrap(),
        0
    );
    for key in [
        format!("{tag}idem:{}", sha256_hex("order-1")),
        format!("test:idem:admin:{}", sha256_hex("admin-1")),
    ] {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut raw(&server).await)
            .await
            .unwrap();
        assert!(pttl > DAY - 60_000 && pttl <= DAY, "{key}: pttl {pttl}");
    }
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
    // Port 1 (tcpmux): nothing listens there, and no test binds it (they all take
    // port 0), unlike a port chosen free and released, which another test may take.
    let url = "redis://:hunter2@127.0.0.1:1/0";
    let started = Instant::now();
    let err = RedisStore::connect(url, "test:", false, Duration::from_millis(200))
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

fn open_order(merchant: &MerchantId, created_at: i64) -> Order {
    Order {
        id: OrderId::generate_for(merchant),
        merchant_id: merchant.clone(),
        plate_id: None,
        amount_minor: 10_000,
        currency: Currency::Mop,
        description: "Coffee".into(),
        reference: None,
        mode: OrderMode::DynamicQr,
        brand: Some("mpay".into()),
        adapter: Some("alipay_plus".into()),
        status: OrderStatus::Pending,
        paid_late: false,
        wallet_ref: None,
        pay_action: None,
        fee_bps: 120,
        fee_minor: 0,
        refunded_minor: 0,
        refund_pending_minor: 0,
        review: None,
        expires_at: created_at + 900_000,
        next_check_at: Some(created_at + 60_000),
        paid_at: None,
        created_at,
        updated_at: created_at,
        version: 1,
    }
}

fn insert_change(order: &Order) -> OrderChange {
    OrderChange {
        order: order.clone(),
        expected_version: 0,
        dedupe_key: None,
        refund: None,
        entry: None,
        event: None,
    }
}

fn merchant_event(merchant: &MerchantId, kind: EventKind, at: i64) -> Event {
    Event {
        id: EventId::generate(),
        merchant_id: merchant.clone(),
        kind,
        data: serde_json::json!({ "at": at }),
        created_at: at,
    }
}

/// The callback's settle: paid, posted, merchant told, deduped by the wallet event.
fn settle_change(order: &Order, wallet_event: &str, at: i64) -> OrderChange {
    let mut paid = order.clone();
    paid.status = OrderStatus::Succeeded;
    paid.fee_minor = 120;
    paid.paid_at = Some(at);
    paid.next_check_at = None;
    paid.updated_at = at;
    paid.version = order.version + 1;
    OrderChange {
        order: paid,
        expected_version: order.version,
        dedupe_key: Some(wallet_event.to_owned()),
        refund: None,
        entry: Some(LedgerEntry {
            id: LedgerEntry::payment_id(&order.id),
            merchant_id: order.merchant_id.clone(),
            currency: order.currency,
            order_id: order.id.clone(),
            kind: EntryKind::Payment,
            postings: ledger::payment_entry("alipay_plus", order.amount_minor, 120).unwrap(),
            created_at: at,
        }),
        event: Some(merchant_event(
            &order.merchant_id,
            EventKind::OrderSucceeded,
            at,
        )),
    }
}

/// A full refund of a settled order in one commit: refund, entry, event, dedupe.
fn refund_change(paid: &Order, at: i64) -> OrderChange {
    let merchant = &paid.merchant_id;
    let refund = Refund {
        id: RefundId::generate_for(merchant),
        order_id: paid.id.clone(),
        merchant_id: merchant.clone(),
        amount_minor: paid.amount_minor,
        currency: paid.currency,
        reason: None,
        status: RefundStatus::Succeeded,
        wallet_refund_ref: Some("w-1".into()),
        failure: None,
        review: None,
        created_at: at,
        updated_at: at,
    };
    let mut refunded = paid.clone();
    refunded.refunded_minor = paid.amount_minor;
    refunded.version = paid.version + 1;
    OrderChange {
        order: refunded,
        expected_version: paid.version,
        dedupe_key: Some(format!("refund:{}", refund.id)),
        entry: Some(LedgerEntry {
            id: LedgerEntry::refund_id(&paid.id, &refund.id),
            merchant_id: merchant.clone(),
            currency: paid.currency,
            order_id: paid.id.clone(),
            kind: EntryKind::Refund,
            postings: ledger::refund_entry("alipay_plus", paid.amount_minor, 120, 0, 10_000)
                .unwrap(),
            created_at: at,
        }),
        refund: Some(refund),
        event: Some(merchant_event(merchant, EventKind::RefundSucceeded, at)),
    }
}

async fn members(server: &RedisServer, key: &str) -> BTreeSet<String> {
    redis::cmd("SMEMBERS")
        .arg(key)
        .query_async(&mut raw(server).await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_keys_of_a_merchant_share_its_hash_tag_except_the_two_work_sets() {
    let server = RedisServer::start().await;
    let store = connect(&server, false).await.unwrap();
    let m = MerchantId::generate();
    let paid_order = open_order(&m, T0);
    let still_open = open_order(&m, T0 + 1);
    for o in [&paid_order, &still_open] {
        assert_eq!(
            store.commit(&insert_change(o), T0).await.unwrap(),
            CommitOutcome::Applied
        );
    }
    let settle = settle_change(&paid_order, "alipay_plus:evt-1", T0 + 5);
    assert_eq!(
        store.commit(&settle, T0 + 5).await.unwrap(),
        CommitOutcome::Applied
    );
    let refund = refund_change(&settle.order, T0 + 10);
    assert_eq!(
        store.commit(&refund, T0 + 10).await.unwrap(),
        CommitOutcome::Applied
    );
    assert_eq!(
        store
            .claim_due_events(T0 + 10, 30_000, 10)
            .await
            .unwrap()
            .len(),
        2
    );

    let keys = all_keys(&server).await;
    let tag = format!("test:{{m:{m}}}:");
    let scoped: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.contains(m.as_str()))
        .cloned()
        .collect();
    let expected_scoped: BTreeSet<String> = [
        "orders".to_owned(),
        "order-versions".to_owned(),
        "orders-by-created".to_owned(),
        "orders-due".to_owned(),
        "dedupe".to_owned(),
        "refunds".to_owned(),
        format!("order-refunds:{}", paid_order.id),
        "entries".to_owned(),
        "ledger".to_owned(),
        format!("order-entries:{}", paid_order.id),
        "balances".to_owned(),
        "events".to_owned(),
        "event-seq".to_owned(),
        "events-by-seq".to_owned(),
        "outbox".to_owned(),
        "outbox-due".to_owned(),
    ]
    .iter()
    .map(|suffix| format!("{tag}{suffix}"))
    .collect();
    assert_eq!(scoped, expected_scoped);
    for key in &scoped {
        assert_eq!(key.matches('{').count(), 1, "{key}");
    }
    let global: BTreeSet<String> = keys.difference(&scoped).cloned().collect();
    let expected_global: BTreeSet<String> = [
        "test:due-merchants".to_owned(),
        "test:outbox-merchants".to_owned(),
    ]
    .into_iter()
    .collect();
    assert_eq!(global, expected_global);
    // The global sets hold merchant ids only, never records.
    for key in &expected_global {
        assert_eq!(members(&server, key).await, [m.to_string()].into());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_merchant_leaves_the_work_sets_and_comes_back_with_new_work() {
    let server = RedisServer::start().await;
    let store = connect(&server, false).await.unwrap();
    let m = MerchantId::generate();
    let first = open_order(&m, T0);
    store.commit(&insert_change(&first), T0).await.unwrap();
    store
        .commit(&settle_change(&first, "e1", T0), T0)
        .await
        .unwrap();
    let claim = store
        .claim_due_events(T0, 30_000, 10)
        .await
        .unwrap()
        .remove(0);
    assert!(
        store
            .complete_event(&m, &claim.event.id, &claim.lease)
            .await
            .unwrap()
    );
    // Nothing due and nothing pending: the scans retire the merchant.
    assert!(store.orders_due(T0 + DAY, 10).await.unwrap().is_empty());
    assert!(
        store
            .claim_due_events(T0 + DAY, 30_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(members(&server, "test:due-merchants").await.is_empty());
    assert!(members(&server, "test:outbox-merchants").await.is_empty());

    // New work lists the merchant again and the scans find it.
    let second = open_order(&m, T0 + DAY);
    store
        .commit(&insert_change(&second), T0 + DAY)
        .await
        .unwrap();
    let due = store.orders_due(T0 + 2 * DAY, 10).await.unwrap();
    assert_eq!(due.iter().map(|o| &o.id).collect::<Vec<_>>(), [&second.id]);
    let settle = settle_change(&second, "e2", T0 + DAY);
    store.commit(&settle, T0 + DAY).await.unwrap();
    let claims = store.claim_due_events(T0 + DAY, 30_000, 10).await.unwrap();
    assert_eq!(
        claims.iter().map(|c| &c.event.id).collect::<Vec<_>>(),
        [&settle.event.as_ref().unwrap().id]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_acknowledged_before_kill_9_survives_the_restart() {
    let mut server = RedisServer::start().await;
    let store = connect(&server, false).await.unwrap();
    let m = MerchantId::generate();
    let order = open_order(&m, T0);
    store.commit(&insert_change(&order), T0).await.unwrap();
    let settle = settle_change(&order, "alipay_plus:evt-9", T0 + 5);
    assert_eq!(
        store.commit(&settle, T0 + 5).await.unwrap(),
        CommitOutcome::Applied
    );

    server.restart().await;

    let deadline = Instant::now() + Duration::from_secs(15);
    let stored = loop {
        match store.order(&order.id).await {
            Ok(found) => break found,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("store did not recover: {other:?}"),
        }
    };
    assert_eq!(stored, Some(settle.order.clone()));
    assert_eq!(
        store.entries_of(&order.id).await.unwrap(),
        vec![settle.entry.clone().unwrap()]
    );
    let fee = store
        .balances(&m)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.account == "fee_income")
        .map(|b| b.balance);
    assert_eq!(fee, Some(-120));
    let event = settle.event.clone().unwrap();
    assert_eq!(
        store.events_after(&m, None, 10).await.unwrap(),
        vec![event.clone()]
    );
    let (_, status) = store.event(&m, &event.id).await.unwrap().unwrap();
    assert_eq!(status.state, DeliveryState::Pending);
    // The dedupe key survived too: the wallet's retry is a duplicate.
    assert_eq!(
        store.commit(&settle, T0 + 6).await.unwrap(),
        CommitOutcome::Duplicate
    );
    let claims = store.claim_due_events(T0 + 6, 30_000, 10).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].event, event);
}
