//! What the conformance suite cannot see: the file on disk, its settings and schema
//! version, the connections, and failure paths that need a hand on the internals.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::Connection;
use sesame_adapters::money::Currency;

use super::connections::{READERS, read, write};
use super::schema::MIGRATIONS;
use super::*;
use crate::domain::{ApiKey, MerchantStatus, PayloadFormat};

const T0: i64 = 1_700_000_000_000;

fn merchant(name: &str, created_at: i64) -> Merchant {
    Merchant {
        id: MerchantId::generate(),
        name: name.to_owned(),
        name_zh: None,
        name_pt: Some("Café".to_owned()),
        city: "MACAU".to_owned(),
        country: "MO".to_owned(),
        mcc: "5812".to_owned(),
        currency: Currency::Mop,
        notify_url: None,
        webhook_secret: "whsec_unit".to_owned(),
        fees_bps: BTreeMap::from([("alipay".to_owned(), 150)]),
        status: MerchantStatus::Active,
        created_at,
    }
}

fn plate(merchant: &MerchantId, created_at: i64) -> Plate {
    Plate {
        id: PlateId::generate(),
        merchant_id: merchant.clone(),
        label: "Counter".to_owned(),
        fixed_amount_minor: Some(1_000),
        format: PayloadFormat::Emvco,
        created_at,
    }
}

fn bundle(name: &str) -> (MerchantBundle, ApiKey) {
    let merchant = merchant(name, T0);
    let key = ApiKey::generate();
    let bundle = MerchantBundle {
        first_plate: plate(&merchant.id, T0),
        api_key: key.record(T0),
        merchant,
    };
    (bundle, key)
}

fn clock(now: i64) -> IdemClock {
    IdemClock {
        now,
        lease_ms: 60_000,
        retention_ms: 3_600_000,
    }
}

fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join(DATABASE_FILE)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopening_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (b, key) = bundle("Cafe");
    let lease = {
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        store.create_merchant(&b).await.unwrap();
        store.secret("plate", b"s3cret").await.unwrap();
        let IdemBegin::Started(lease) = store
            .idem_begin(&IdemScope::Admin, "k", &[4; 32], clock(T0))
            .await
            .unwrap()
        else {
            panic!("expected Started");
        };
        lease
    };
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert_eq!(
        store.merchant(&b.merchant.id).await.unwrap(),
        Some(b.merchant.clone())
    );
    assert_eq!(
        store
            .merchant_by_api_key(&ApiKey::hash_of(key.expose()))
            .await
            .unwrap()
            .map(|m| m.id),
        Some(b.merchant.id.clone())
    );
    assert_eq!(
        store.plates_of(&b.merchant.id).await.unwrap(),
        vec![b.first_plate.clone()]
    );
    assert_eq!(store.secret("plate", b"other").await.unwrap(), b"s3cret");
    // The lease taken before the reopen still owns its record.
    assert!(
        store
            .idem_finish(
                &IdemScope::Admin,
                "k",
                &lease,
                &StoredResponse {
                    status: 201,
                    body: b"done".to_vec()
                }
            )
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn schema_version_is_recorded_and_reopening_does_not_migrate_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let (b, _) = bundle("Cafe");
    store.create_merchant(&b).await.unwrap();
    drop(store);
    let version: i64 = raw(dir.path())
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
    assert!(version >= 1);
    // Re-running migration 1 would fail on CREATE TABLE; the reopen must skip it.
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert!(store.merchant(&b.merchant.id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(dir.path()).await.unwrap());
    let future = MIGRATIONS.len() as i64 + 1;
    raw(dir.path())
        .pragma_update(None, "user_version", future)
        .unwrap();
    let err = EmbeddedStore::open(dir.path()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Misconfigured(m) if m.contains("newer")),
        "{err:?}"
    );
}

#[tokio::test]
async fn every_connection_runs_wal_with_full_synchronous() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let health = store.health().await.unwrap();
    assert_eq!(
        health,
        StoreHealth {
            backend: "embedded",
            durable: true,
            durability: "sqlite wal synchronous=full".to_owned(),
        }
    );
    {
        let writer = store.conns.writer().unwrap();
        let journal: String = writer
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        let synchronous: i64 = writer
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        let foreign_keys: i64 = writer
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .unwrap();
        assert_eq!((journal.as_str(), synchronous, foreign_keys), ("wal", 2, 1));
    }
    let (synchronous, query_only) = read(&store.conns, |conn| {
        let synchronous: i64 = conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .map_err(sql)?;
        let query_only: i64 = conn
            .pragma_query_value(None, "query_only", |row| row.get(0))
            .map_err(sql)?;
        Ok((synchronous, query_only))
    })
    .await
    .unwrap();
    assert_eq!((synchronous, query_only), (2, 1));
    // WAL is recorded in the file, so any other process opening it uses it too.
    let journal: String = raw(dir.path())
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[cfg(unix)]
#[tokio::test]
async fn a_missing_data_directory_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data").join("sesame");
    let store = EmbeddedStore::open(&dir).await.unwrap();
    store.secret("plate", b"x").await.unwrap();
    for created in [parent.path().join("data"), dir.clone()] {
        let mode = std::fs::metadata(&created).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", created.display());
    }
    assert!(dir.join(DATABASE_FILE).is_file());
}

#[tokio::test]
async fn a_data_path_that_is_a_file_is_unavailable_not_a_panic() {
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = EmbeddedStore::open(&file).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn an_undecodable_document_is_corrupt_and_names_no_stored_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let (b, _) = bundle("Cafe");
    store.create_merchant(&b).await.unwrap();
    raw(dir.path())
        .execute(
            "UPDATE merchants SET doc = '{\"webhook_secret\": \"whsec_leak\"}' WHERE id = ?1",
            [b.merchant.id.as_str()],
        )
        .unwrap();
    let err = store.merchant(&b.merchant.id).await.unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt(_)), "{err:?}");
    assert!(!err.to_string().contains("whsec_leak"), "{err}");
    let err = store.list_merchants(None, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn a_first_plate_of_another_merchant_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let (existing, _) = bundle("Existing");
    store.create_merchant(&existing).await.unwrap();
    let (mut b, key) = bundle("Newcomer");
    b.first_plate.merchant_id = existing.merchant.id.clone();
    let err = store.create_merchant(&b).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.merchant(&b.merchant.id).await.unwrap(), None);
    assert_eq!(store.plate(&b.first_plate.id).await.unwrap(), None);
    assert_eq!(
        store
            .merchant_by_api_key(&ApiKey::hash_of(key.expose()))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_bundle_whose_key_is_taken_conflicts_and_writes_no_merchant_or_plate() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let (first, key) = bundle("First");
    store.create_merchant(&first).await.unwrap();
    let (mut second, _) = bundle("Second");
    second.api_key = first.api_key.clone();
    let err = store.create_merchant(&second).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict("api key already in use")),
        "{err:?}"
    );
    assert_eq!(store.merchant(&second.merchant.id).await.unwrap(), None);
    assert_eq!(store.plate(&second.first_plate.id).await.unwrap(), None);
    assert_eq!(
        store
            .merchant_by_api_key(&ApiKey::hash_of(key.expose()))
            .await
            .unwrap()
            .map(|m| m.id),
        Some(first.merchant.id)
    );
}

#[tokio::test]
async fn rotating_to_a_key_held_by_another_merchant_conflicts_and_keeps_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let (a, a_key) = bundle("A");
    let (b, b_key) = bundle("B");
    store.create_merchant(&a).await.unwrap();
    store.create_merchant(&b).await.unwrap();
    let err = store
        .rotate_api_key(&a.merchant.id, &b.api_key)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // The delete of A's old key was rolled back with the failed insert.
    for (key, owner) in [(a_key, &a.merchant.id), (b_key, &b.merchant.id)] {
        assert_eq!(
            store
                .merchant_by_api_key(&ApiKey::hash_of(key.expose()))
                .await
                .unwrap()
                .map(|m| m.id),
            Some(owner.clone())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_write_transaction_neither_blocks_nor_shows_to_readers() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let (b, _) = bundle("Cafe");
    store.create_merchant(&b).await.unwrap();
    let (hidden, _) = bundle("Hidden");
    // A thread holds the writer inside an uncommitted insert until told to stop.
    let (inserted_tx, inserted_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let conns = Arc::clone(&store.conns);
    let hidden_id = hidden.merchant.id.clone();
    let holder = std::thread::spawn(move || {
        let mut writer = conns.writer().unwrap();
        let tx = writer.transaction().unwrap();
        tx.execute(
            "INSERT INTO merchants (id, created_at, doc) VALUES (?1, ?2, '{}')",
            params![hidden_id.as_str(), T0],
        )
        .unwrap();
        inserted_tx.send(()).unwrap();
        stop_rx.recv().unwrap();
    });
    inserted_rx.recv().unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(2), async {
        (
            store.merchant(&b.merchant.id).await.unwrap(),
            store.merchant(&hidden.merchant.id).await.unwrap(),
        )
    })
    .await
    .expect("reads must not wait for the writer");
    stop_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(seen, (Some(b.merchant.clone()), None));
    // The holder dropped its transaction uncommitted: the row never existed.
    assert_eq!(store.merchant(&hidden.merchant.id).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_read_returns_its_connection_to_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    for _ in 0..READERS {
        let err = read(&store.conns, |_| -> StoreResult<()> {
            panic!("bug in a read")
        })
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }
    let after = tokio::time::timeout(
        Duration::from_secs(2),
        store.merchant(&MerchantId::generate()),
    )
    .await
    .expect("a reader must still be free");
    assert_eq!(after.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_write_rolls_back_alone_and_the_store_keeps_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let err = write(&store.conns, |tx| -> StoreResult<()> {
        tx.execute(
            "INSERT INTO secrets (name, value) VALUES ('half', x'00')",
            [],
        )
        .map_err(sql)?;
        panic!("bug in a write")
    })
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let half: i64 = raw(dir.path())
        .query_row("SELECT count(*) FROM secrets", [], |row| row.get(0))
        .unwrap();
    assert_eq!(half, 0);
    // The panic was caught inside its savepoint: later writes and health work.
    assert_eq!(store.secret("plate", b"x").await.unwrap(), b"x");
    assert!(store.health().await.unwrap().durable);
}

/// Writes queued together commit together, each as if alone: one that fails leaves
/// the others of its batch committed, and each sees the writes queued before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_committed_in_one_batch_stay_independent() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..64u8 {
        let conns = Arc::clone(&store.conns);
        pending.push(tokio::spawn(async move {
            write(&conns, move |tx| -> StoreResult<i64> {
                tx.execute(
                    "INSERT INTO secrets (name, value) VALUES (?1, x'00')",
                    params![format!("s{i}")],
                )
                .map_err(sql)?;
                if i % 8 == 0 {
                    // Fails after writing: only its own insert is undone.
                    return Err(StoreError::Corrupt(format!("refused {i}")));
                }
                tx.query_row("SELECT count(*) FROM secrets", [], |row| row.get(0))
                    .map_err(sql)
            })
            .await
        }));
    }
    let mut seen = Vec::new();
    for (i, task) in pending.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(count) => seen.push(count),
            Err(e) => assert!(i % 8 == 0, "{i}: {e:?}"),
        }
    }
    assert_eq!(seen.len(), 56);
    let committed: i64 = raw(dir.path())
        .query_row("SELECT count(*) FROM secrets", [], |row| row.get(0))
        .unwrap();
    assert_eq!(committed, 56);
    // Each successful write counted itself and every successful write before it.
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 56, "no two writes saw the same state");
}

#[tokio::test]
async fn a_stored_status_out_of_range_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let IdemBegin::Started(lease) = store
        .idem_begin(&IdemScope::Admin, "k", &[1; 32], clock(T0))
        .await
        .unwrap()
    else {
        panic!("expected Started");
    };
    let response = StoredResponse {
        status: 200,
        body: Vec::new(),
    };
    assert!(
        store
            .idem_finish(&IdemScope::Admin, "k", &lease, &response)
            .await
            .unwrap()
    );
    raw(dir.path())
        .execute("UPDATE idempotency SET status = 70000", [])
        .unwrap();
    let err = store
        .idem_begin(&IdemScope::Admin, "k", &[1; 32], clock(T0 + 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[test]
fn merchant_scopes_cannot_collide_with_the_admin_scope() {
    let id = MerchantId::generate();
    assert_eq!(idempotency::scope_text(&IdemScope::Admin), "admin");
    assert_eq!(
        idempotency::scope_text(&IdemScope::Merchant(id.clone())),
        format!("m:{id}")
    );
}
