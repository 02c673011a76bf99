//! ONE conformance suite, run against every store backend. Each test is written once
//! as an `async fn(DynStore)` and instantiated per backend by `conformance!`.
//! Time is injected (`IdemClock.now`), never slept.

use std::collections::BTreeMap;

use sesame::domain::{ApiKey, Merchant, MerchantId, MerchantStatus, PayloadFormat, Plate, PlateId};
use sesame::store::{
    DynStore, IdemBegin, IdemClock, IdemScope, LeaseToken, MerchantBundle, StoreError,
    StoredResponse,
};
use sesame_adapters::money::Currency;

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_700_000_000_000;

pub fn merchant(name: &str, created_at: i64) -> Merchant {
    Merchant {
        id: MerchantId::generate(),
        name: name.to_owned(),
        name_zh: Some("咖啡店".to_owned()),
        name_pt: None,
        city: "MACAU".to_owned(),
        country: "MO".to_owned(),
        mcc: "5812".to_owned(),
        currency: Currency::Mop,
        notify_url: Some("https://merchant.example/hook".to_owned()),
        webhook_secret: "whsec_test".to_owned(),
        fees_bps: BTreeMap::from([("mpay".to_owned(), 120)]),
        status: MerchantStatus::Active,
        created_at,
    }
}

pub fn plate(merchant: &MerchantId, label: &str, created_at: i64) -> Plate {
    Plate {
        id: PlateId::generate(),
        merchant_id: merchant.clone(),
        label: label.to_owned(),
        fixed_amount_minor: None,
        format: PayloadFormat::Url,
        created_at,
    }
}

pub fn bundle(name: &str, created_at: i64) -> (MerchantBundle, ApiKey) {
    let m = merchant(name, created_at);
    let key = ApiKey::generate();
    let b = MerchantBundle {
        first_plate: plate(&m.id, "Counter 1", created_at),
        api_key: key.record(created_at),
        merchant: m,
    };
    (b, key)
}

fn clock(now: i64) -> IdemClock {
    IdemClock {
        now,
        lease_ms: 60_000,
        retention_ms: 24 * HOUR,
    }
}

fn response(status: u16, body: &str) -> StoredResponse {
    StoredResponse {
        status,
        body: body.as_bytes().to_vec(),
    }
}

async fn health_reports_a_durable_backend(store: DynStore) {
    let health = store.health().await.unwrap();
    assert!(health.durable, "{health:?}");
    assert!(!health.durability.is_empty());
}

async fn secret_is_set_once_and_shared(store: DynStore) {
    let first = store.secret("plate", b"aaaa").await.unwrap();
    assert_eq!(first, b"aaaa");
    let second = store.secret("plate", b"bbbb").await.unwrap();
    assert_eq!(second, b"aaaa");
    let other = store.secret("other", b"cccc").await.unwrap();
    assert_eq!(other, b"cccc");
}

async fn concurrent_secret_initialisation_agrees(store: DynStore) {
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.secret("race", &[i; 8]).await.unwrap()
        }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await.unwrap());
    }
    assert!(values.windows(2).all(|w| w[0] == w[1]));
}

async fn merchant_bundle_round_trips(store: DynStore) {
    let (b, key) = bundle("Cafe", T0);
    store.create_merchant(&b).await.unwrap();
    assert_eq!(
        store.merchant(&b.merchant.id).await.unwrap(),
        Some(b.merchant.clone())
    );
    let by_key = store
        .merchant_by_api_key(&ApiKey::hash_of(key.expose()))
        .await
        .unwrap();
    assert_eq!(by_key.map(|m| m.id), Some(b.merchant.id.clone()));
    assert_eq!(
        store.plate(&b.first_plate.id).await.unwrap(),
        Some(b.first_plate.clone())
    );
    assert_eq!(
        store.plates_of(&b.merchant.id).await.unwrap(),
        vec![b.first_plate.clone()]
    );
}

async fn unknown_things_are_none(store: DynStore) {
    assert_eq!(store.merchant(&MerchantId::generate()).await.unwrap(), None);
    assert_eq!(store.plate(&PlateId::generate()).await.unwrap(), None);
    assert_eq!(
        store
            .merchant_by_api_key(&ApiKey::hash_of("sk_nope"))
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .plates_of(&MerchantId::generate())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn duplicate_merchant_is_a_conflict_and_changes_nothing(store: DynStore) {
    let (b, key) = bundle("Cafe", T0);
    store.create_merchant(&b).await.unwrap();
    let (mut again, _other_key) = bundle("Impostor", T0 + 1);
    again.merchant.id = b.merchant.id.clone();
    again.first_plate.merchant_id = b.merchant.id.clone();
    let err = store.create_merchant(&again).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.merchant(&b.merchant.id).await.unwrap().unwrap().name,
        "Cafe"
    );
    assert_eq!(store.plates_of(&b.merchant.id).await.unwrap().len(), 1);
    assert_eq!(store.plate(&again.first_plate.id).await.unwrap(), None);
    assert!(
        store
            .merchant_by_api_key(&ApiKey::hash_of(key.expose()))
            .await
            .unwrap()
            .is_some()
    );
}

async fn merchants_list_in_creation_order_with_cursor(store: DynStore) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let (b, _) = bundle(&format!("M{i}"), T0 + i);
        store.create_merchant(&b).await.unwrap();
        ids.push(b.merchant.id);
    }
    let all: Vec<_> = store
        .list_merchants(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(all, ids);
    let page1: Vec<_> = store
        .list_merchants(None, 2)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(page1, ids[..2]);
    let page2: Vec<_> = store
        .list_merchants(Some(&ids[1]), 2)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(page2, ids[2..4]);
    let last: Vec<_> = store
        .list_merchants(Some(&ids[4]), 2)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert!(last.is_empty());
}

async fn rotated_key_replaces_the_old_one(store: DynStore) {
    let (b, old) = bundle("Cafe", T0);
    store.create_merchant(&b).await.unwrap();
    let new = ApiKey::generate();
    store
        .rotate_api_key(&b.merchant.id, &new.record(T0 + 5))
        .await
        .unwrap();
    assert_eq!(
        store
            .merchant_by_api_key(&ApiKey::hash_of(old.expose()))
            .await
            .unwrap(),
        None
    );
    let found = store
        .merchant_by_api_key(&ApiKey::hash_of(new.expose()))
        .await
        .unwrap();
    assert_eq!(found.map(|m| m.id), Some(b.merchant.id.clone()));
    let err = store
        .rotate_api_key(&MerchantId::generate(), &ApiKey::generate().record(T0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

async fn plates_belong_to_their_merchant(store: DynStore) {
    let (a, _) = bundle("A", T0);
    let (b, _) = bundle("B", T0 + 1);
    store.create_merchant(&a).await.unwrap();
    store.create_merchant(&b).await.unwrap();
    let mut second = plate(&a.merchant.id, "Till 2", T0 + 10);
    second.fixed_amount_minor = Some(2500);
    second.format = PayloadFormat::Emvco;
    store.insert_plate(&second).await.unwrap();
    assert_eq!(
        store.plates_of(&a.merchant.id).await.unwrap(),
        vec![a.first_plate.clone(), second.clone()]
    );
    assert_eq!(
        store.plates_of(&b.merchant.id).await.unwrap(),
        vec![b.first_plate.clone()]
    );
    assert_eq!(store.plate(&second.id).await.unwrap(), Some(second.clone()));
    let err = store.insert_plate(&second).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let orphan = plate(&MerchantId::generate(), "x", T0);
    let err = store.insert_plate(&orphan).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(store.plate(&orphan.id).await.unwrap(), None);
}

async fn idempotency_started_then_replayed(store: DynStore) {
    let scope = IdemScope::Admin;
    let fp = [1u8; 32];
    let IdemBegin::Started(lease) = store
        .idem_begin(&scope, "k1", &fp, clock(T0))
        .await
        .unwrap()
    else {
        panic!("expected Started");
    };
    assert_eq!(
        store
            .idem_begin(&scope, "k1", &fp, clock(T0 + 1))
            .await
            .unwrap(),
        IdemBegin::InProgress
    );
    assert!(
        store
            .idem_finish(&scope, "k1", &lease, &response(201, "{\"a\":1}"))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .idem_begin(&scope, "k1", &fp, clock(T0 + 2))
            .await
            .unwrap(),
        IdemBegin::Replay(response(201, "{\"a\":1}"))
    );
}

async fn idempotency_key_reused_with_other_body(store: DynStore) {
    let scope = IdemScope::Admin;
    let IdemBegin::Started(lease) = store
        .idem_begin(&scope, "k", &[1; 32], clock(T0))
        .await
        .unwrap()
    else {
        panic!("expected Started");
    };
    assert_eq!(
        store
            .idem_begin(&scope, "k", &[2; 32], clock(T0))
            .await
            .unwrap(),
        IdemBegin::KeyReused
    );
    store
        .idem_finish(&scope, "k", &lease, &response(200, "x"))
        .await
        .unwrap();
    assert_eq!(
        store
            .idem_begin(&scope, "k", &[2; 32], clock(T0))
            .await
            .unwrap(),
        IdemBegin::KeyReused
    );
}

async fn idempotency_scopes_are_separate(store: DynStore) {
    let a = IdemScope::Merchant(MerchantId::generate());
    let b = IdemScope::Merchant(MerchantId::generate());
    assert!(matches!(
        store
            .idem_begin(&a, "same", &[1; 32], clock(T0))
            .await
            .unwrap(),
        IdemBegin::Started(_)
    ));
    assert!(matches!(
        store
            .idem_begin(&b, "same", &[2; 32], clock(T0))
            .await
            .unwrap(),
        IdemBegin::Started(_)
    ));
    assert!(matches!(
        store
            .idem_begin(&IdemScope::Admin, "same", &[3; 32], clock(T0))
            .await
            .unwrap(),
        IdemBegin::Started(_)
    ));
}

async fn idempotency_release_frees_the_key(store: DynStore) {
    let scope = IdemScope::Admin;
    let IdemBegin::Started(lease) = store
        .idem_begin(&scope, "k", &[1; 32], clock(T0))
        .await
        .unwrap()
    else {
        panic!("expected Started");
    };
    assert!(
        !store
            .idem_release(&scope, "k", &LeaseToken("not-mine".into()))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .idem_begin(&scope, "k", &[1; 32], clock(T0))
            .await
            .unwrap(),
        IdemBegin::InProgress
    );
    assert!(store.idem_release(&scope, "k", &lease).await.unwrap());
    // After release even a different body may use the key.
    assert!(matches!(
        store
            .idem_begin(&scope, "k", &[2; 32], clock(T0))
            .await
            .unwrap(),
        IdemBegin::Started(_)
    ));
}

async fn idempotency_expired_lease_is_taken_over_and_old_holder_loses(store: DynStore) {
    let scope = IdemScope::Admin;
    let IdemBegin::Started(old) = store
        .idem_begin(&scope, "k", &[1; 32], clock(T0))
        .await
        .unwrap()
    else {
        panic!("expected Started");
    };
    let later = clock(T0 + 60_001);
    let IdemBegin::Started(new) = store
        .idem_begin(&scope, "k", &[1; 32], later)
        .await
        .unwrap()
    else {
        panic!("expected takeover");
    };
    assert_ne!(old, new);
    assert!(
        !store
            .idem_finish(&scope, "k", &old, &response(200, "old"))
            .await
            .unwrap()
    );
    assert!(!store.idem_release(&scope, "k", &old).await.unwrap());
    assert!(
        store
            .idem_finish(&scope, "k", &new, &response(200, "new"))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .idem_begin(&scope, "k", &[1; 32], clock(T0 + 70_000))
            .await
            .unwrap(),
        IdemBegin::Replay(response(200, "new"))
    );
    // A finished record is never taken over, whatever the lease said.
    assert!(
        !store
            .idem_finish(&scope, "k", &new, &response(500, "again"))
            .await
            .unwrap()
    );
}

async fn idempotency_records_expire_after_retention(store: DynStore) {
    let scope = IdemScope::Admin;
    let IdemBegin::Started(lease) = store
        .idem_begin(&scope, "k", &[1; 32], clock(T0))
        .await
        .unwrap()
    else {
        panic!("expected Started");
    };
    store
        .idem_finish(&scope, "k", &lease, &response(201, "first"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .idem_begin(&scope, "k", &[1; 32], clock(T0 + 24 * HOUR - 1))
            .await
            .unwrap(),
        IdemBegin::Replay(_)
    ));
    assert!(matches!(
        store
            .idem_begin(&scope, "k", &[9; 32], clock(T0 + 24 * HOUR))
            .await
            .unwrap(),
        IdemBegin::Started(_)
    ));
}

async fn concurrent_begins_start_exactly_once(store: DynStore) {
    let scope = IdemScope::Merchant(MerchantId::generate());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            store
                .idem_begin(&scope, "race", &[7; 32], clock(T0))
                .await
                .unwrap()
        }));
    }
    let mut started = 0;
    for t in tasks {
        match t.await.unwrap() {
            IdemBegin::Started(_) => started += 1,
            IdemBegin::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1);
}

async fn odd_idempotency_keys_are_stored_verbatim(store: DynStore) {
    let scope = IdemScope::Admin;
    let key = "a:b{c}\"d' *?[x] \\ ~".to_owned() + &"z".repeat(200);
    let IdemBegin::Started(lease) = store
        .idem_begin(&scope, &key, &[1; 32], clock(T0))
        .await
        .unwrap()
    else {
        panic!("expected Started");
    };
    store
        .idem_finish(&scope, &key, &lease, &response(200, "ok"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .idem_begin(&scope, &key, &[1; 32], clock(T0))
            .await
            .unwrap(),
        IdemBegin::Replay(_)
    ));
    assert!(matches!(
        store
            .idem_begin(&scope, "a:b{c}", &[1; 32], clock(T0))
            .await
            .unwrap(),
        IdemBegin::Started(_)
    ));
}

async fn binary_response_bodies_round_trip(store: DynStore) {
    let scope = IdemScope::Admin;
    let IdemBegin::Started(lease) = store
        .idem_begin(&scope, "bin", &[1; 32], clock(T0))
        .await
        .unwrap()
    else {
        panic!("expected Started");
    };
    let body: Vec<u8> = (0..=255u8).collect();
    let stored = StoredResponse { status: 201, body };
    store
        .idem_finish(&scope, "bin", &lease, &stored)
        .await
        .unwrap();
    assert_eq!(
        store
            .idem_begin(&scope, "bin", &[1; 32], clock(T0))
            .await
            .unwrap(),
        IdemBegin::Replay(stored)
    );
}

macro_rules! conformance {
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
        conformance!(embedded: $($test),*);
        conformance!(redis: $($test),*);
    };
}

all_backends!(
    health_reports_a_durable_backend,
    secret_is_set_once_and_shared,
    concurrent_secret_initialisation_agrees,
    merchant_bundle_round_trips,
    unknown_things_are_none,
    duplicate_merchant_is_a_conflict_and_changes_nothing,
    merchants_list_in_creation_order_with_cursor,
    rotated_key_replaces_the_old_one,
    plates_belong_to_their_merchant,
    idempotency_started_then_replayed,
    idempotency_key_reused_with_other_body,
    idempotency_scopes_are_separate,
    idempotency_release_frees_the_key,
    idempotency_expired_lease_is_taken_over_and_old_holder_loses,
    idempotency_records_expire_after_retention,
    concurrent_begins_start_exactly_once,
    odd_idempotency_keys_are_stored_verbatim,
    binary_response_bodies_round_trip,
);
