//! The payments half of the store conformance suite (orders, refunds, ledger, events,
//! outbox), run against every backend. Time is injected; nothing sleeps.

use sesame::domain::event::{DeliveryState, Event, EventKind};
use sesame::domain::ledger::{self, EntryKind, LedgerEntry};
use sesame::domain::order::{Order, OrderMode, OrderStatus};
use sesame::domain::refund::{Refund, RefundStatus};
use sesame::domain::{EventId, MerchantId, OrderId, RefundId};
use sesame::store::{CommitOutcome, DynStore, OrderChange, OrderFilter, StoreError};
use sesame_adapters::money::Currency;

const T0: i64 = 1_700_000_000_000;

pub fn order(merchant: &MerchantId, created_at: i64) -> Order {
    Order {
        id: OrderId::generate_for(merchant),
        merchant_id: merchant.clone(),
        plate_id: None,
        amount_minor: 10_000,
        currency: Currency::Mop,
        description: "Coffee".into(),
        reference: Some("POS-1".into()),
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

pub fn insert(o: &Order) -> OrderChange {
    OrderChange {
        order: o.clone(),
        expected_version: 0,
        dedupe_key: None,
        refund: None,
        entry: None,
        event: None,
    }
}

fn next(o: &Order, f: impl FnOnce(&mut Order)) -> Order {
    let mut n = o.clone();
    f(&mut n);
    n.version = o.version + 1;
    n
}

fn event(merchant: &MerchantId, kind: EventKind, created_at: i64) -> Event {
    Event {
        id: EventId::generate(),
        merchant_id: merchant.clone(),
        kind,
        data: serde_json::json!({"n": created_at}),
        created_at,
    }
}

fn payment_entry(o: &Order, at: i64) -> LedgerEntry {
    LedgerEntry {
        id: LedgerEntry::payment_id(&o.id),
        merchant_id: o.merchant_id.clone(),
        currency: o.currency,
        order_id: o.id.clone(),
        kind: EntryKind::Payment,
        postings: ledger::payment_entry("alipay_plus", o.amount_minor, 120).unwrap(),
        created_at: at,
    }
}

/// The settle commit a callback makes: paid, posted, merchant told.
fn settle(o: &Order, key: &str, at: i64) -> OrderChange {
    OrderChange {
        order: next(o, |n| {
            n.status = OrderStatus::Succeeded;
            n.fee_minor = 120;
            n.paid_at = Some(at);
            n.next_check_at = None;
        }),
        expected_version: o.version,
        dedupe_key: Some(key.to_owned()),
        refund: None,
        entry: Some(payment_entry(o, at)),
        event: Some(event(&o.merchant_id, EventKind::OrderSucceeded, at)),
    }
}

async fn orders_insert_once_and_read_back(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    assert_eq!(
        store.commit(&insert(&o), T0).await.unwrap(),
        CommitOutcome::Applied
    );
    assert_eq!(store.order(&o.id).await.unwrap(), Some(o.clone()));
    assert_eq!(
        store.commit(&insert(&o), T0).await.unwrap(),
        CommitOutcome::VersionConflict
    );
    assert_eq!(store.order(&OrderId::generate_for(&m)).await.unwrap(), None);
}

async fn compare_and_set_refuses_a_stale_version(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    let pending = next(&o, |n| n.status = OrderStatus::Pending);
    // Read long ago: version 7 was expected, the store holds 1.
    let stale = OrderChange {
        order: Order {
            version: 8,
            ..pending.clone()
        },
        expected_version: 7,
        ..insert(&pending)
    };
    assert_eq!(
        store.commit(&stale, T0).await.unwrap(),
        CommitOutcome::VersionConflict
    );
    assert_eq!(
        store.order(&o.id).await.unwrap().unwrap().status,
        OrderStatus::Created
    );
    let good = OrderChange {
        expected_version: 1,
        ..insert(&pending)
    };
    assert_eq!(
        store.commit(&good, T0).await.unwrap(),
        CommitOutcome::Applied
    );
    let stored = store.order(&o.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.version), (OrderStatus::Pending, 2));
    // A change whose version does not follow is a caller bug.
    let skip = OrderChange {
        order: Order {
            version: 9,
            ..stored.clone()
        },
        expected_version: 2,
        ..insert(&stored)
    };
    assert!(matches!(
        store.commit(&skip, T0).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn concurrent_compare_and_set_applies_exactly_once(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        let change = OrderChange {
            expected_version: 1,
            ..insert(&next(&o, |n| n.description = format!("writer {i}")))
        };
        tasks.push(tokio::spawn(async move {
            store.commit(&change, T0).await.unwrap()
        }));
    }
    let mut applied = 0;
    for t in tasks {
        if t.await.unwrap() == CommitOutcome::Applied {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(store.order(&o.id).await.unwrap().unwrap().version, 2);
}

async fn a_settle_posts_one_balanced_entry_and_one_event(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    assert_eq!(
        store
            .commit(&settle(&o, "alipay_plus:evt-1", T0 + 5), T0 + 5)
            .await
            .unwrap(),
        CommitOutcome::Applied
    );
    let stored = store.order(&o.id).await.unwrap().unwrap();
    assert_eq!(stored.status, OrderStatus::Succeeded);
    let entries = store.entries_of(&o.id).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert!(ledger::balances(&entries[0].postings));
    let balances = store.balances(&m).await.unwrap();
    let get = |account: &str| {
        balances
            .iter()
            .find(|b| b.account == account)
            .map(|b| b.balance)
    };
    assert_eq!(get("wallet_clearing:alipay_plus"), Some(10_000));
    assert_eq!(get("merchant_payable"), Some(-9_880));
    assert_eq!(get("fee_income"), Some(-120));
    assert!(balances.iter().all(|b| b.currency == Currency::Mop));
    let events = store.events_after(&m, None, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::OrderSucceeded);
    assert_eq!(store.ledger_entries(&m).await.unwrap(), entries);
}

async fn a_duplicate_settle_writes_nothing(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    store.commit(&settle(&o, "k1", T0), T0).await.unwrap();
    let after = store.order(&o.id).await.unwrap().unwrap();
    // Same wallet event again (whatever version it read): duplicate.
    assert_eq!(
        store.commit(&settle(&after, "k1", T0), T0).await.unwrap(),
        CommitOutcome::Duplicate
    );
    // Another key but the same entry id: postings are idempotent by entry id.
    assert_eq!(
        store.commit(&settle(&after, "k2", T0), T0).await.unwrap(),
        CommitOutcome::Duplicate
    );
    assert_eq!(store.order(&o.id).await.unwrap().unwrap(), after);
    assert_eq!(store.entries_of(&o.id).await.unwrap().len(), 1);
    assert_eq!(store.events_after(&m, None, 10).await.unwrap().len(), 1);
    let balances = store.balances(&m).await.unwrap();
    assert_eq!(
        balances
            .iter()
            .find(|b| b.account == "fee_income")
            .unwrap()
            .balance,
        -120
    );
}

/// A writer as the service runs one: read the order, build the change from what it
/// read, commit, and on a version conflict read again and rebuild (with the NEW
/// version) until the store answers Applied or Duplicate.
async fn settle_like_a_callback(store: DynStore, id: OrderId, key: String) -> CommitOutcome {
    loop {
        let current = store.order(&id).await.unwrap().unwrap();
        match store.commit(&settle(&current, &key, T0), T0).await.unwrap() {
            CommitOutcome::VersionConflict => continue,
            outcome => return outcome,
        }
    }
}

async fn concurrent_duplicate_settles_post_once(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    // Every writer first uses the version it read; the losers re-read and come back
    // with the version the winner wrote, so only the dedupe key (or the entry id, for
    // writers with another key) can stop them.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let key = if i % 2 == 0 {
            "same-event"
        } else {
            "other-delivery"
        };
        tasks.push(tokio::spawn(settle_like_a_callback(
            store.clone(),
            o.id.clone(),
            key.to_owned(),
        )));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == CommitOutcome::Applied)
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == CommitOutcome::Duplicate)
            .count(),
        9
    );
    assert_eq!(store.entries_of(&o.id).await.unwrap().len(), 1);
    assert_eq!(store.events_after(&m, None, 10).await.unwrap().len(), 1);
    let stored = store.order(&o.id).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    // A late duplicate built on the settled order's version is a duplicate too.
    assert_eq!(
        store
            .commit(&settle(&stored, "same-event", T0), T0)
            .await
            .unwrap(),
        CommitOutcome::Duplicate
    );
}

fn pending_refund(o: &Order, amount: i64, at: i64) -> Refund {
    Refund {
        id: RefundId::generate_for(&o.merchant_id),
        order_id: o.id.clone(),
        merchant_id: o.merchant_id.clone(),
        amount_minor: amount,
        currency: o.currency,
        reason: None,
        status: RefundStatus::Pending,
        wallet_refund_ref: None,
        failure: None,
        review: None,
        created_at: at,
        updated_at: at,
    }
}

/// A refund reservation as the service makes it: re-read on conflict, give up when
/// what is left to refund does not cover it.
async fn reserve_like_the_service(store: DynStore, id: OrderId, amount: i64) -> bool {
    let merchant = id.merchant();
    loop {
        let current = store.order(&id).await.unwrap().unwrap();
        if current.refundable_minor() < amount {
            return false;
        }
        let refund = pending_refund(&current, amount, T0);
        let change = OrderChange {
            order: next(&current, |n| n.refund_pending_minor += amount),
            expected_version: current.version,
            dedupe_key: Some(format!("refund-reserve:{}", refund.id)),
            refund: Some(refund),
            entry: None,
            event: None,
        };
        assert_eq!(current.merchant_id, merchant);
        match store.commit(&change, T0).await.unwrap() {
            CommitOutcome::Applied => return true,
            CommitOutcome::VersionConflict => continue,
            CommitOutcome::Duplicate => unreachable!("fresh refund ids"),
        }
    }
}

async fn concurrent_refund_reservations_never_exceed_the_capture(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    store.commit(&settle(&o, "pay", T0), T0).await.unwrap();
    // 10 000 captured; twelve concurrent reservations of 1 500: six fit.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        tasks.push(tokio::spawn(reserve_like_the_service(
            store.clone(),
            o.id.clone(),
            1_500,
        )));
    }
    let mut reserved = 0;
    for t in tasks {
        if t.await.unwrap() {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 6);
    let stored = store.order(&o.id).await.unwrap().unwrap();
    assert_eq!(stored.refund_pending_minor, 9_000);
    let refunds = store.refunds_of(&o.id).await.unwrap();
    assert_eq!(refunds.len(), 6);
    assert!(refunds.iter().all(|r| r.status == RefundStatus::Pending));
}

async fn a_refund_id_of_another_order_is_invalid_and_nothing_is_written(store: DynStore) {
    let m = MerchantId::generate();
    let first = order(&m, T0);
    let second = order(&m, T0);
    let refund = pending_refund(&first, 100, T0);
    store
        .commit(
            &OrderChange {
                refund: Some(refund.clone()),
                ..insert(&first)
            },
            T0,
        )
        .await
        .unwrap();
    let stolen = OrderChange {
        refund: Some(Refund {
            order_id: second.id.clone(),
            ..refund.clone()
        }),
        ..insert(&second)
    };
    assert!(matches!(
        store.commit(&stolen, T0).await,
        Err(StoreError::Invalid("refund id belongs to another order"))
    ));
    assert_eq!(store.order(&second.id).await.unwrap(), None);
    assert_eq!(store.refund(&refund.id).await.unwrap(), Some(refund));
    assert!(store.refunds_of(&second.id).await.unwrap().is_empty());
}

async fn an_entry_in_another_currency_than_its_order_is_invalid(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    let mut change = settle(&o, "k", T0);
    if let Some(entry) = change.entry.as_mut() {
        entry.currency = Currency::Hkd;
    }
    assert!(matches!(
        store.commit(&change, T0).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.order(&o.id).await.unwrap(), Some(o));
    assert!(store.balances(&m).await.unwrap().is_empty());
}

async fn an_unbalanced_entry_is_refused_and_nothing_is_written(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    let mut change = settle(&o, "k", T0);
    if let Some(entry) = change.entry.as_mut() {
        entry.postings[0].amount += 1;
    }
    assert!(matches!(
        store.commit(&change, T0).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store.order(&o.id).await.unwrap().unwrap().status,
        OrderStatus::Created
    );
    assert!(store.entries_of(&o.id).await.unwrap().is_empty());
    assert!(
        store
            .balances(&m)
            .await
            .unwrap()
            .iter()
            .all(|b| b.balance == 0)
    );
    // The dedupe key was not burnt.
    assert_eq!(
        store.commit(&settle(&o, "k", T0), T0).await.unwrap(),
        CommitOutcome::Applied
    );
}

async fn refunds_are_recorded_and_replaced_by_id(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    store.commit(&settle(&o, "pay", T0), T0).await.unwrap();
    let paid = store.order(&o.id).await.unwrap().unwrap();
    let refund = Refund {
        id: RefundId::generate_for(&m),
        order_id: o.id.clone(),
        merchant_id: m.clone(),
        amount_minor: 4_000,
        currency: Currency::Mop,
        reason: Some("broken cup".into()),
        status: RefundStatus::Pending,
        wallet_refund_ref: None,
        failure: None,
        review: None,
        created_at: T0 + 10,
        updated_at: T0 + 10,
    };
    let reserve = OrderChange {
        order: next(&paid, |n| n.refund_pending_minor = 4_000),
        expected_version: paid.version,
        dedupe_key: None,
        refund: Some(refund.clone()),
        entry: None,
        event: None,
    };
    assert_eq!(
        store.commit(&reserve, T0 + 10).await.unwrap(),
        CommitOutcome::Applied
    );
    assert_eq!(
        store.refund(&refund.id).await.unwrap(),
        Some(refund.clone())
    );
    let reserved = store.order(&o.id).await.unwrap().unwrap();
    let done = Refund {
        status: RefundStatus::Succeeded,
        wallet_refund_ref: Some("w-1".into()),
        updated_at: T0 + 20,
        ..refund.clone()
    };
    let entry = LedgerEntry {
        id: LedgerEntry::refund_id(&o.id, &refund.id),
        merchant_id: m.clone(),
        currency: Currency::Mop,
        order_id: o.id.clone(),
        kind: EntryKind::Refund,
        postings: ledger::refund_entry("alipay_plus", 10_000, 120, 0, 4_000).unwrap(),
        created_at: T0 + 20,
    };
    let finish = OrderChange {
        order: next(&reserved, |n| {
            n.refund_pending_minor = 0;
            n.refunded_minor = 4_000;
        }),
        expected_version: reserved.version,
        dedupe_key: Some(format!("refund:{}", refund.id)),
        refund: Some(done.clone()),
        entry: Some(entry),
        event: Some(event(&m, EventKind::RefundSucceeded, T0 + 20)),
    };
    assert_eq!(
        store.commit(&finish, T0 + 20).await.unwrap(),
        CommitOutcome::Applied
    );
    assert_eq!(store.refunds_of(&o.id).await.unwrap(), vec![done]);
    let entries = store.entries_of(&o.id).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EntryKind::Payment, EntryKind::Refund]
    );
    let balances = store.balances(&m).await.unwrap();
    assert_eq!(
        balances
            .iter()
            .find(|b| b.account == "wallet_clearing:alipay_plus")
            .unwrap()
            .balance,
        6_000
    );
    let sum: i64 = balances.iter().map(|b| b.balance).sum();
    assert_eq!(sum, 0);
    assert_eq!(
        store.refund(&RefundId::generate_for(&m)).await.unwrap(),
        None
    );
}

async fn orders_are_listed_newest_first_with_filters_and_cursor(store: DynStore) {
    let m = MerchantId::generate();
    let other = MerchantId::generate();
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut o = order(&m, T0 + i * 1_000);
        if i % 2 == 0 {
            o.status = OrderStatus::Pending;
        }
        store.commit(&insert(&o), T0).await.unwrap();
        ids.push(o.id);
    }
    store.commit(&insert(&order(&other, T0)), T0).await.unwrap();
    let all = store
        .list_orders(&m, &OrderFilter::default(), None, 100)
        .await
        .unwrap();
    let got: Vec<_> = all.iter().map(|o| o.id.clone()).collect();
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(got, expected, "newest first, only this merchant");
    let page1 = store
        .list_orders(&m, &OrderFilter::default(), None, 4)
        .await
        .unwrap();
    let page2 = store
        .list_orders(&m, &OrderFilter::default(), Some(&page1[3].id), 4)
        .await
        .unwrap();
    assert_eq!(page1.len() + page2.len(), 6);
    assert_eq!(page2[0].id, expected[4]);
    let pending = OrderFilter {
        status: Some(OrderStatus::Pending),
        ..OrderFilter::default()
    };
    assert_eq!(
        store
            .list_orders(&m, &pending, None, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    let window = OrderFilter {
        created_from: Some(T0 + 1_000),
        created_to: Some(T0 + 3_000),
        ..OrderFilter::default()
    };
    let in_window: Vec<_> = store
        .list_orders(&m, &window, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(in_window, vec![ids[2].clone(), ids[1].clone()]);
}

async fn open_orders_come_due_for_the_reconciler(store: DynStore) {
    let m = MerchantId::generate();
    let early = order(&m, T0);
    let mut late = order(&m, T0);
    late.next_check_at = Some(T0 + 600_000);
    store.commit(&insert(&early), T0).await.unwrap();
    store.commit(&insert(&late), T0).await.unwrap();
    assert!(store.orders_due(T0, 10).await.unwrap().is_empty());
    let due = store.orders_due(T0 + 60_000, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        vec![early.id.clone()]
    );
    // Settled orders leave the reconciler's list.
    store.commit(&settle(&early, "k", T0), T0).await.unwrap();
    let due = store.orders_due(T0 + 700_000, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        vec![late.id.clone()]
    );
}

async fn expired_and_refunding_orders_come_due_but_failed_and_settled_ones_do_not(store: DynStore) {
    let m = MerchantId::generate();
    let ids_due = |due: Vec<Order>| due.into_iter().map(|o| o.id).collect::<Vec<_>>();
    // Expired with a late-capture check at T0 + 1 000.
    let expired = order(&m, T0);
    store.commit(&insert(&expired), T0).await.unwrap();
    let change = OrderChange {
        expected_version: 1,
        ..insert(&next(&expired, |n| {
            n.status = OrderStatus::Expired;
            n.next_check_at = Some(T0 + 1_000);
        }))
    };
    store.commit(&change, T0).await.unwrap();
    // Failed, its document still naming a check time: never due.
    let failed = order(&m, T0);
    store.commit(&insert(&failed), T0).await.unwrap();
    let change = OrderChange {
        expected_version: 1,
        ..insert(&next(&failed, |n| n.status = OrderStatus::Failed))
    };
    store.commit(&change, T0).await.unwrap();
    // Succeeded: due only while a refund is in flight.
    let paid = order(&m, T0);
    store.commit(&insert(&paid), T0).await.unwrap();
    store.commit(&settle(&paid, "pay", T0), T0).await.unwrap();
    assert_eq!(
        ids_due(store.orders_due(T0 + 10_000_000, 10).await.unwrap()),
        vec![expired.id.clone()]
    );
    let settled = store.order(&paid.id).await.unwrap().unwrap();
    let refund = pending_refund(&settled, 500, T0 + 1);
    let reserve = OrderChange {
        order: next(&settled, |n| {
            n.refund_pending_minor = 500;
            n.next_check_at = Some(T0 + 2_000);
        }),
        expected_version: settled.version,
        dedupe_key: None,
        refund: Some(refund.clone()),
        entry: None,
        event: None,
    };
    store.commit(&reserve, T0 + 1).await.unwrap();
    assert_eq!(
        ids_due(store.orders_due(T0 + 2_000, 10).await.unwrap()),
        vec![expired.id.clone(), paid.id.clone()]
    );
    assert_eq!(
        ids_due(store.orders_due(T0 + 1_999, 10).await.unwrap()),
        vec![expired.id.clone()]
    );
    // The refund is final: the order leaves the list, whatever its document says.
    let reserved = store.order(&paid.id).await.unwrap().unwrap();
    let released = OrderChange {
        order: next(&reserved, |n| n.refund_pending_minor = 0),
        expected_version: reserved.version,
        dedupe_key: None,
        refund: Some(Refund {
            status: RefundStatus::Failed,
            ..refund
        }),
        entry: None,
        event: None,
    };
    store.commit(&released, T0 + 3).await.unwrap();
    assert_eq!(
        ids_due(store.orders_due(T0 + 10_000_000, 10).await.unwrap()),
        vec![expired.id.clone()]
    );
}

async fn outbox_leases_events_to_one_dispatcher_at_a_time(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    store.commit(&settle(&o, "k", T0), T0).await.unwrap();
    let claims = store.claim_due_events(T0, 30_000, 10).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].attempt, 1);
    let id = claims[0].event.id.clone();
    assert!(
        store
            .claim_due_events(T0 + 1_000, 30_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    // The lease expires (the dispatcher died): another one takes the event over.
    let retaken = store
        .claim_due_events(T0 + 30_001, 30_000, 10)
        .await
        .unwrap();
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].attempt, 2);
    assert!(
        !store
            .complete_event(&m, &id, &claims[0].lease)
            .await
            .unwrap(),
        "old lease is dead"
    );
    assert!(
        store
            .reschedule_event(&m, &id, &retaken[0].lease, T0 + 90_000, "HTTP 500")
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_due_events(T0 + 89_999, 30_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let third = store
        .claim_due_events(T0 + 90_000, 30_000, 10)
        .await
        .unwrap();
    assert_eq!(third[0].attempt, 3);
    assert!(
        store
            .complete_event(&m, &id, &third[0].lease)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_due_events(T0 + 10_000_000, 30_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let (_, status) = store.event(&m, &id).await.unwrap().unwrap();
    assert_eq!(status.state, DeliveryState::Delivered);
    assert_eq!(status.attempts, 3);
    assert!(
        store
            .event(&MerchantId::generate(), &id)
            .await
            .unwrap()
            .is_none(),
        "other merchant"
    );
}

async fn dead_letters_can_be_resent(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    store.commit(&settle(&o, "k", T0), T0).await.unwrap();
    let claim = store
        .claim_due_events(T0, 30_000, 10)
        .await
        .unwrap()
        .remove(0);
    assert!(
        store
            .dead_letter_event(&m, &claim.event.id, &claim.lease, "gave up after 3 days")
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_due_events(T0 + 10_000_000, 30_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let (_, status) = store.event(&m, &claim.event.id).await.unwrap().unwrap();
    assert_eq!(status.state, DeliveryState::Dead);
    assert_eq!(status.last_error.as_deref(), Some("gave up after 3 days"));
    assert!(
        store
            .resend_event(&m, &claim.event.id, T0 + 20_000_000)
            .await
            .unwrap()
    );
    let again = store
        .claim_due_events(T0 + 20_000_000, 30_000, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert!(
        !store
            .resend_event(&m, &EventId::generate(), T0)
            .await
            .unwrap()
    );
}

async fn resending_an_event_a_dispatcher_holds_keeps_its_lease(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    store.commit(&settle(&o, "k", T0), T0).await.unwrap();
    let claim = store
        .claim_due_events(T0, 30_000, 10)
        .await
        .unwrap()
        .remove(0);
    // The merchant asks for a resend while the delivery is in flight.
    assert!(
        store
            .resend_event(&m, &claim.event.id, T0 + 1_000)
            .await
            .unwrap()
    );
    for at in [T0 + 1_000, T0 + 29_999] {
        assert!(
            store
                .claim_due_events(at, 30_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "a second dispatcher joined the live lease at {at}"
        );
    }
    let (_, status) = store.event(&m, &claim.event.id).await.unwrap().unwrap();
    assert_eq!(status.state, DeliveryState::Pending);
    assert!(
        store
            .complete_event(&m, &claim.event.id, &claim.lease)
            .await
            .unwrap(),
        "the holder still owns its lease"
    );
    let (_, status) = store.event(&m, &claim.event.id).await.unwrap().unwrap();
    assert_eq!(
        (status.state, status.attempts, status.next_attempt_at),
        (DeliveryState::Delivered, 1, None)
    );
    // Resent while leased and the holder died: claimable once the lease is over.
    assert!(
        store
            .resend_event(&m, &claim.event.id, T0 + 40_000)
            .await
            .unwrap()
    );
    let held = store
        .claim_due_events(T0 + 40_000, 30_000, 10)
        .await
        .unwrap()
        .remove(0);
    assert!(
        store
            .resend_event(&m, &held.event.id, T0 + 41_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_due_events(T0 + 69_999, 30_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let retaken = store
        .claim_due_events(T0 + 70_000, 30_000, 10)
        .await
        .unwrap();
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].attempt, 3);
}

async fn a_resend_starts_a_new_retry_window(store: DynStore) {
    let m = MerchantId::generate();
    let o = order(&m, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    let change = settle(&o, "k", T0);
    let created_at = change.event.as_ref().unwrap().created_at;
    store.commit(&change, T0).await.unwrap();
    let claim = store
        .claim_due_events(T0, 30_000, 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        claim.retry_window_from, created_at,
        "from the event's creation"
    );
    assert!(
        store
            .reschedule_event(&m, &claim.event.id, &claim.lease, T0 + 60_000, "HTTP 503")
            .await
            .unwrap()
    );
    let again = store
        .claim_due_events(T0 + 60_000, 30_000, 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        again.retry_window_from, created_at,
        "a retry keeps the window"
    );
    let four_days = 4 * 24 * 3_600_000;
    assert!(
        store
            .dead_letter_event(&m, &again.event.id, &again.lease, "gave up")
            .await
            .unwrap()
    );
    assert!(
        store
            .resend_event(&m, &again.event.id, T0 + four_days)
            .await
            .unwrap()
    );
    let resent = store
        .claim_due_events(T0 + four_days, 30_000, 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(resent.retry_window_from, T0 + four_days);
    assert_eq!(resent.attempt, 3);
}

async fn concurrent_claims_never_share_an_event(store: DynStore) {
    let m = MerchantId::generate();
    for i in 0..8 {
        let o = order(&m, T0 + i);
        store.commit(&insert(&o), T0).await.unwrap();
        store
            .commit(&settle(&o, &format!("k{i}"), T0), T0)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.claim_due_events(T0 + 1, 30_000, 3).await.unwrap()
        }));
    }
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        for claim in t.await.unwrap() {
            assert!(seen.insert(claim.event.id.clone()), "claimed twice");
        }
    }
    assert_eq!(seen.len(), 8);
}

async fn events_page_in_creation_order_per_merchant(store: DynStore) {
    let m = MerchantId::generate();
    let other = MerchantId::generate();
    let mut ids = Vec::new();
    for i in 0..5 {
        let o = order(&m, T0 + i);
        store.commit(&insert(&o), T0).await.unwrap();
        let change = settle(&o, &format!("k{i}"), T0 + i);
        ids.push(change.event.as_ref().unwrap().id.clone());
        store.commit(&change, T0 + i).await.unwrap();
    }
    let o = order(&other, T0);
    store.commit(&insert(&o), T0).await.unwrap();
    store.commit(&settle(&o, "x", T0), T0).await.unwrap();
    let all: Vec<_> = store
        .events_after(&m, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all, ids);
    let rest: Vec<_> = store
        .events_after(&m, Some(&ids[1]), 2)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(rest, ids[2..4]);
}

macro_rules! payment_conformance {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let test_store = crate::support::stores::$backend().await;
                    super::$test(test_store.store.clone()).await;
                }
            )*
        }
    };
}

macro_rules! all_backends {
    ($($test:ident),* $(,)?) => {
        payment_conformance!(embedded: $($test),*);
        payment_conformance!(redis: $($test),*);
    };
}

all_backends!(
    orders_insert_once_and_read_back,
    compare_and_set_refuses_a_stale_version,
    concurrent_compare_and_set_applies_exactly_once,
    a_settle_posts_one_balanced_entry_and_one_event,
    a_duplicate_settle_writes_nothing,
    concurrent_duplicate_settles_post_once,
    concurrent_refund_reservations_never_exceed_the_capture,
    a_refund_id_of_another_order_is_invalid_and_nothing_is_written,
    an_entry_in_another_currency_than_its_order_is_invalid,
    an_unbalanced_entry_is_refused_and_nothing_is_written,
    refunds_are_recorded_and_replaced_by_id,
    orders_are_listed_newest_first_with_filters_and_cursor,
    open_orders_come_due_for_the_reconciler,
    expired_and_refunding_orders_come_due_but_failed_and_settled_ones_do_not,
    outbox_leases_events_to_one_dispatcher_at_a_time,
    dead_letters_can_be_resent,
    resending_an_event_a_dispatcher_holds_keeps_its_lease,
    a_resend_starts_a_new_retry_window,
    concurrent_claims_never_share_an_event,
    events_page_in_creation_order_per_merchant,
);
