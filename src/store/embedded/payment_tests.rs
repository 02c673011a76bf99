//! What the payments conformance suite cannot see in the embedded store: the upgrade
//! of an existing file, the columns behind the documents, failures injected inside a
//! commit, balance overflow, and the query plans of the lists.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::Connection;
use sesame_adapters::money::Currency;

use super::super::DATABASE_FILE;
use super::super::schema::{MIGRATIONS, user_version};
use super::*;
use crate::domain::event::EventKind;
use crate::domain::ledger::{EntryKind, Posting};
use crate::domain::order::{OrderMode, OrderStatus};
use crate::domain::{Merchant, MerchantStatus};
use crate::store::Store;

const T0: i64 = 1_700_000_000_000;

fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join(DATABASE_FILE)).unwrap()
}

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
        row.get(0)
    })
    .unwrap()
}

fn order(merchant: &MerchantId, created_at: i64) -> Order {
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
        status: OrderStatus::Created,
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

fn insert(o: &Order) -> OrderChange {
    OrderChange {
        order: o.clone(),
        expected_version: 0,
        dedupe_key: None,
        refund: None,
        entry: None,
        event: None,
    }
}

fn entry(o: &Order, postings: Vec<Posting>) -> LedgerEntry {
    LedgerEntry {
        id: LedgerEntry::payment_id(&o.id),
        merchant_id: o.merchant_id.clone(),
        currency: o.currency,
        order_id: o.id.clone(),
        kind: EntryKind::Payment,
        postings,
        created_at: T0,
    }
}

fn settle(o: &Order, key: &str) -> OrderChange {
    let mut paid = o.clone();
    paid.status = OrderStatus::Succeeded;
    paid.fee_minor = 120;
    paid.paid_at = Some(T0);
    paid.version = o.version + 1;
    OrderChange {
        order: paid,
        expected_version: o.version,
        dedupe_key: Some(key.to_owned()),
        refund: None,
        entry: Some(entry(
            o,
            ledger::payment_entry("alipay_plus", o.amount_minor, 120).unwrap(),
        )),
        event: Some(Event {
            id: EventId::generate(),
            merchant_id: o.merchant_id.clone(),
            kind: EventKind::OrderSucceeded,
            data: serde_json::json!({"order": o.id.as_str()}),
            created_at: T0,
        }),
    }
}

fn merchant(id: &MerchantId) -> Merchant {
    Merchant {
        id: id.clone(),
        name: "Cafe".to_owned(),
        name_zh: None,
        name_pt: None,
        city: "MACAU".to_owned(),
        country: "MO".to_owned(),
        mcc: "5812".to_owned(),
        currency: Currency::Mop,
        notify_url: None,
        webhook_secret: "whsec_unit".to_owned(),
        fees_bps: BTreeMap::new(),
        status: MerchantStatus::Active,
        created_at: T0,
    }
}

fn balance_of(balances: &[Balance], account: &str) -> Option<i64> {
    balances
        .iter()
        .find(|b| b.account == account)
        .map(|b| b.balance)
}

#[tokio::test]
async fn migrations_upgrade_a_version_1_file_and_keep_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let m = MerchantId::generate();
    {
        // A file as the previous release left it: migration 1 only.
        let conn = raw(dir.path());
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO merchants (id, created_at, doc) VALUES (?1, ?2, ?3)",
            params![
                m.as_str(),
                T0,
                serde_json::to_string(&merchant(&m)).unwrap()
            ],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO secrets (name, value) VALUES ('plate', x'0102')",
            [],
        )
        .unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert_eq!(
        user_version(&raw(dir.path())).unwrap(),
        i64::try_from(MIGRATIONS.len()).unwrap()
    );
    assert_eq!(store.merchant(&m).await.unwrap(), Some(merchant(&m)));
    assert_eq!(store.secret("plate", b"new").await.unwrap(), vec![1, 2]);
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    assert_eq!(
        store.commit(&settle(&o, "k"), T0).await.unwrap(),
        CommitOutcome::Applied
    );
    assert_eq!(store.entries_of(&o.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn migration_3_keeps_orders_and_outbox_rows_and_lets_an_expired_order_come_due() {
    let dir = tempfile::tempdir().unwrap();
    let m = MerchantId::generate();
    let open = order(&m, T0);
    let event_id = EventId::generate();
    {
        // A file as release 2 left it: an open order due at T0 + 60 s, one event.
        let conn = raw(dir.path());
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO orders (id, merchant_id, status, created_at, next_check_at, version, doc)
             VALUES (?1, ?2, 'created', ?3, ?4, 1, ?5)",
            params![
                open.id.as_str(),
                m.as_str(),
                T0,
                open.next_check_at,
                serde_json::to_string(&open).unwrap()
            ],
        )
        .unwrap();
        let event = Event {
            id: event_id.clone(),
            merchant_id: m.clone(),
            kind: EventKind::OrderExpired,
            data: serde_json::json!({}),
            created_at: T0,
        };
        conn.execute(
            "INSERT INTO events (id, merchant_id, created_at, doc) VALUES (?1, ?2, ?3, ?4)",
            params![
                event_id.as_str(),
                m.as_str(),
                T0,
                serde_json::to_string(&event).unwrap()
            ],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO outbox (event_id, merchant_id, state, attempts, next_attempt_at)
             VALUES (?1, ?2, 'dead', 3, ?3)",
            params![event_id.as_str(), m.as_str(), T0],
        )
        .unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert_eq!(store.order(&open.id).await.unwrap(), Some(open.clone()));
    let due = store.orders_due(T0 + 60_000, 10).await.unwrap();
    assert_eq!(due, vec![open.clone()]);
    // An expired order with a grace check is due now; a failed one never is.
    let expired = OrderChange {
        order: Order {
            status: OrderStatus::Expired,
            next_check_at: Some(T0 + 70_000),
            version: 2,
            ..open.clone()
        },
        expected_version: 1,
        ..insert(&open)
    };
    assert_eq!(
        store.commit(&expired, T0).await.unwrap(),
        CommitOutcome::Applied
    );
    assert_eq!(store.orders_due(T0 + 70_000, 10).await.unwrap().len(), 1);
    let failed = order(&m, T0);
    let failed = Order {
        status: OrderStatus::Failed,
        ..failed
    };
    store.commit(&insert(&failed), T0).await.unwrap();
    assert_eq!(store.orders_due(i64::MAX, 10).await.unwrap().len(), 1);
    // The old event's retry window was its creation; a resend starts a new one.
    assert!(store.resend_event(&m, &event_id, T0 + 5_000).await.unwrap());
    let claims = store
        .claim_due_events(T0 + 5_000, 30_000, 10)
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(
        (claims[0].attempt, claims[0].retry_window_from),
        (4, T0 + 5_000)
    );
}

#[tokio::test]
async fn expired_idempotency_records_are_purged_from_the_file_and_live_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let clock = |now| crate::store::IdemClock {
        now,
        lease_ms: 60_000,
        retention_ms: 3_600_000,
    };
    let scope = crate::store::IdemScope::Admin;
    for (key, at) in [("old-1", T0), ("old-2", T0 + 1), ("young", T0 + 1_800_000)] {
        let crate::store::IdemBegin::Started(lease) = store
            .idem_begin(&scope, key, &[7; 32], clock(at))
            .await
            .unwrap()
        else {
            panic!("{key} did not start");
        };
        let response = crate::store::StoredResponse {
            status: 201,
            body: b"sealed response".to_vec(),
        };
        assert!(
            store
                .idem_finish(&scope, key, &lease, &response)
                .await
                .unwrap()
        );
    }
    // One millisecond before the first retention ends: nothing to purge.
    assert_eq!(
        store.idem_purge_expired(T0 + 3_599_999, 100).await.unwrap(),
        0
    );
    assert_eq!(count(&raw(dir.path()), "idempotency"), 3);
    // Both old records are over; the batch limit is honoured.
    assert_eq!(
        store.idem_purge_expired(T0 + 3_600_001, 1).await.unwrap(),
        1
    );
    assert_eq!(
        store.idem_purge_expired(T0 + 3_600_001, 100).await.unwrap(),
        1
    );
    assert_eq!(count(&raw(dir.path()), "idempotency"), 1);
    assert_eq!(
        store.idem_purge_expired(T0 + 3_600_001, 100).await.unwrap(),
        0
    );
    let replay = store
        .idem_begin(&scope, "young", &[7; 32], clock(T0 + 3_600_001))
        .await
        .unwrap();
    assert!(
        matches!(replay, crate::store::IdemBegin::Replay(_)),
        "{replay:?}"
    );
}

#[tokio::test]
async fn a_failure_after_the_first_write_rolls_the_whole_change_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    // The last posting's balance insert fails, after the order, the entry and two
    // balances were written inside the transaction.
    raw(dir.path())
        .execute_batch(
            "CREATE TRIGGER fail_fee_income BEFORE INSERT ON balances
             WHEN NEW.account = 'fee_income'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let change = settle(&o, "wallet-evt-1");
    let err = store.commit(&change, T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert_eq!(store.order(&o.id).await.unwrap(), Some(o.clone()));
    let conn = raw(dir.path());
    for table in ["ledger_entries", "balances", "events", "outbox", "dedupe"] {
        assert_eq!(count(&conn, table), 0, "{table}");
    }
    // Nothing was burnt: the same change applies once the fault is gone.
    conn.execute_batch("DROP TRIGGER fail_fee_income").unwrap();
    assert_eq!(
        store.commit(&change, T0).await.unwrap(),
        CommitOutcome::Applied
    );
    assert_eq!(
        balance_of(&store.balances(&m).await.unwrap(), "fee_income"),
        Some(-120)
    );
}

#[tokio::test]
async fn a_balance_that_would_overflow_is_invalid_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let m = MerchantId::generate();
    let big = order(&m, T0);
    store.commit(&insert(&big), T0).await.unwrap();
    let mut change = settle(&big, "big");
    change.entry = Some(entry(
        &big,
        vec![
            Posting {
                account: "wallet_clearing:alipay_plus".into(),
                amount: i64::MAX,
            },
            Posting {
                account: "merchant_payable".into(),
                amount: -i64::MAX,
            },
        ],
    ));
    store.commit(&change, T0).await.unwrap();
    // i64::MIN - 1 would round back to i64::MIN in SQLite's float fallback.
    let small = order(&m, T0);
    store.commit(&insert(&small), T0).await.unwrap();
    let mut change = settle(&small, "small");
    change.entry = Some(entry(
        &small,
        vec![
            Posting {
                account: "fee_income".into(),
                amount: 2,
            },
            Posting {
                account: "merchant_payable".into(),
                amount: -2,
            },
        ],
    ));
    assert!(matches!(
        store.commit(&change, T0).await,
        Err(StoreError::Invalid("account balance would overflow"))
    ));
    let balances = store.balances(&m).await.unwrap();
    assert_eq!(balance_of(&balances, "merchant_payable"), Some(-i64::MAX));
    assert_eq!(balance_of(&balances, "fee_income"), None);
    assert_eq!(store.order(&small.id).await.unwrap(), Some(small.clone()));
    assert!(store.entries_of(&small.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_terminal_order_leaves_the_due_index_even_if_its_document_keeps_a_check_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let o = order(&MerchantId::generate(), T0);
    store.commit(&insert(&o), T0).await.unwrap();
    // `settle` here keeps `next_check_at` in the document.
    store.commit(&settle(&o, "k"), T0).await.unwrap();
    let column: Option<i64> = raw(dir.path())
        .query_row(
            "SELECT next_check_at FROM orders WHERE id = ?1",
            [o.id.as_str()],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(column, None);
    assert!(store.orders_due(i64::MAX, 10).await.unwrap().is_empty());
    let stored = store.order(&o.id).await.unwrap().unwrap();
    assert_eq!(stored.next_check_at, o.next_check_at);
}

#[tokio::test]
async fn records_of_another_merchant_or_order_in_a_change_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();

    let mut foreign_event = settle(&o, "k");
    if let Some(event) = foreign_event.event.as_mut() {
        event.merchant_id = MerchantId::generate();
    }
    let mut foreign_entry = settle(&o, "k");
    if let Some(entry) = foreign_entry.entry.as_mut() {
        entry.order_id = OrderId::generate_for(&m);
    }
    let mut other_currency = settle(&o, "k");
    if let Some(entry) = other_currency.entry.as_mut() {
        entry.currency = Currency::Hkd;
    }
    let mut misfiled = insert(&order(&m, T0));
    misfiled.order.merchant_id = MerchantId::generate();
    for change in [foreign_event, foreign_entry, other_currency, misfiled] {
        assert!(
            matches!(store.commit(&change, T0).await, Err(StoreError::Invalid(_))),
            "{change:?}"
        );
    }
    assert_eq!(store.order(&o.id).await.unwrap(), Some(o));
}

#[tokio::test]
async fn a_non_positive_lease_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert!(matches!(
        store.claim_due_events(T0, 0, 10).await,
        Err(StoreError::Invalid(_))
    ));
}

/// The plan SQLite picks for `query`, one detail line per step.
fn plan(conn: &Connection, query: &str, args: impl rusqlite::Params) -> String {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
        .unwrap();
    let rows = stmt.query_map(args, |row| row.get::<_, String>(3)).unwrap();
    rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn lists_and_scans_read_their_indexes_without_sorting() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(dir.path()).await.unwrap());
    let conn = raw(dir.path());
    let m = MerchantId::generate();
    let filter = OrderFilter {
        status: Some(OrderStatus::Pending),
        created_from: Some(T0),
        created_to: Some(T0 + 1),
    };
    let cursor = OrderId::generate_for(&m);
    let (query, args) = list_orders_sql(&m, &filter, Some(&cursor), 10);
    let listed = plan(&conn, &query, params_from_iter(args));
    assert!(listed.contains("orders_by_merchant"), "{listed}");
    // A later page starts its range at the cursor, not at the newest order.
    let (query, args) = list_orders_sql(&m, &OrderFilter::default(), Some(&cursor), 10);
    let paged = plan(&conn, &query, params_from_iter(args));
    assert!(
        paged.contains("orders_by_merchant (merchant_id=? AND created_at<?)"),
        "{paged}"
    );
    let due = plan(
        &conn,
        "SELECT doc FROM orders WHERE next_check_at IS NOT NULL AND next_check_at <= ?1
         ORDER BY next_check_at, id LIMIT ?2",
        params![T0, 10],
    );
    assert!(due.contains("orders_due"), "{due}");
    let claim = plan(&conn, CLAIM_DUE, params![T0, 10]);
    assert!(claim.contains("outbox_due"), "{claim}");
    let purge = plan(
        &conn,
        super::super::idempotency::PURGE_EXPIRED,
        params![T0, 10],
    );
    assert!(purge.contains("idempotency_by_expiry"), "{purge}");
    for (what, text) in [
        ("list", &listed),
        ("page", &paged),
        ("due", &due),
        ("claim", &claim),
    ] {
        assert!(!text.contains("TEMP B-TREE"), "{what} sorts: {text}");
        assert!(!text.contains("SCAN o"), "{what} scans a table: {text}");
    }
}
