//! The embedded store: SQLite in WAL mode in the data directory, durable on return.
//!
//! Owns the `Store` operations over the tables of `schema`: each write is ONE
//! `BEGIN IMMEDIATE` transaction on the single writer connection, each read one
//! statement on a pooled reader, all of it on tokio's blocking pool. Records are
//! JSON documents beside the columns used for keys, lookups and ordering.
//! Must never: block an async worker thread, acknowledge a write before SQLite has
//! fsynced it (`synchronous=FULL`), leave a multi-row write half done, or put a
//! stored value (webhook secrets, API key hashes, response bodies) in an error.

mod connections;
mod errors;
mod idempotency;
mod payments;
mod schema;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::connections::{Connections, read, write};
use self::errors::{decode, encode, sql, task_failed};
use super::{
    IdemBegin, IdemClock, IdemScope, LeaseToken, MerchantBundle, Store, StoreError, StoreHealth,
    StoreResult, StoredResponse,
};
use crate::domain::{ApiKeyRecord, Merchant, MerchantId, Plate, PlateId, UnixMillis};

/// Name of the database file inside the data directory.
pub const DATABASE_FILE: &str = "sesame.db";

/// SQLite store. Cheap to share: clone the `Arc` it lives in, not the store.
pub struct EmbeddedStore {
    conns: Arc<Connections>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store in directory `path` (created owner-only if missing), creating
    /// or migrating `<path>/sesame.db`.
    pub async fn open(path: &Path) -> StoreResult<EmbeddedStore> {
        let dir = path.to_owned();
        let conns = tokio::task::spawn_blocking(move || {
            create_data_dir(&dir)?;
            Connections::open(&dir.join(DATABASE_FILE))
        })
        .await
        .map_err(task_failed)??;
        Ok(EmbeddedStore {
            conns: Arc::new(conns),
        })
    }
}

/// Creates the data directory readable by its owner only: it holds every merchant's
/// webhook secret and the server's own secrets. An existing directory is left as is.
fn create_data_dir(dir: &Path) -> StoreResult<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|err| {
        StoreError::Unavailable(format!(
            "cannot create data directory {}: {err}",
            dir.display()
        ))
    })
}

fn to_doc<T: Serialize>(what: &str, record: &T) -> StoreResult<String> {
    serde_json::to_string(record).map_err(|err| encode(what, &err))
}

fn from_doc<T: DeserializeOwned>(what: &str, doc: &str) -> StoreResult<T> {
    serde_json::from_str(doc).map_err(|err| decode(what, &err))
}

fn merchant_exists(conn: &Connection, id: &MerchantId) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM merchants WHERE id = ?1")
        .map_err(sql)?
        .exists(params![id.as_str()])
        .map_err(sql)
}

fn insert_plate_row(tx: &Transaction<'_>, plate: &Plate) -> StoreResult<()> {
    let doc = to_doc("plate", plate)?;
    tx.prepare_cached(
        "INSERT INTO plates (id, merchant_id, created_at, doc) VALUES (?1, ?2, ?3, ?4)",
    )
    .map_err(sql)?
    .execute(params![
        plate.id.as_str(),
        plate.merchant_id.as_str(),
        plate.created_at,
        doc
    ])
    .map_err(sql)?;
    Ok(())
}

fn insert_api_key_row(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    key: &ApiKeyRecord,
) -> StoreResult<()> {
    let doc = to_doc("api key", key)?;
    tx.prepare_cached("INSERT INTO api_keys (hash, merchant_id, doc) VALUES (?1, ?2, ?3)")
        .map_err(sql)?
        .execute(params![key.hash, merchant.as_str(), doc])
        .map_err(sql)?;
    Ok(())
}

/// Runs a query whose rows are one document column and decodes each.
fn query_docs<T: DeserializeOwned>(
    conn: &Connection,
    what: &str,
    query: &str,
    args: impl rusqlite::Params,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(query).map_err(sql)?;
    let docs = stmt
        .query_map(args, |row| row.get::<_, String>(0))
        .map_err(sql)?;
    let mut out = Vec::new();
    for doc in docs {
        out.push(from_doc(what, &doc.map_err(sql)?)?);
    }
    Ok(out)
}

/// Runs a query returning at most one document column and decodes it.
fn query_doc<T: DeserializeOwned>(
    conn: &Connection,
    what: &str,
    query: &str,
    args: impl rusqlite::Params,
) -> StoreResult<Option<T>> {
    let doc: Option<String> = conn
        .prepare_cached(query)
        .map_err(sql)?
        .query_row(args, |row| row.get(0))
        .optional()
        .map_err(sql)?;
    doc.map(|doc| from_doc(what, &doc)).transpose()
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn health(&self) -> StoreResult<StoreHealth> {
        // Read the settings back from the writer connection itself: `synchronous` is
        // per connection, and it is the writer's that decides durability.
        let conns = Arc::clone(&self.conns);
        let (journal, synchronous) = tokio::task::spawn_blocking(move || {
            let conn = conns.writer()?;
            let journal: String = conn
                .pragma_query_value(None, "journal_mode", |row| row.get(0))
                .map_err(sql)?;
            let synchronous: i64 = conn
                .pragma_query_value(None, "synchronous", |row| row.get(0))
                .map_err(sql)?;
            Ok::<_, StoreError>((journal.to_ascii_lowercase(), synchronous))
        })
        .await
        .map_err(task_failed)??;
        // The readers must answer too, or every lookup would hang.
        read(&self.conns, |conn| {
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| {
                row.get::<_, i64>(0)
            })
            .map_err(sql)
        })
        .await?;
        let synchronous_name = match synchronous {
            0 => "off",
            1 => "normal",
            2 => "full",
            3 => "extra",
            _ => "unknown",
        };
        // WAL with FULL (or EXTRA) fsyncs the log before a commit returns.
        let durable = journal == "wal" && (synchronous == 2 || synchronous == 3);
        Ok(StoreHealth {
            backend: "embedded",
            durable,
            durability: format!("sqlite {journal} synchronous={synchronous_name}"),
        })
    }

    async fn secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        let name = name.to_owned();
        let candidate = candidate.to_vec();
        write(&self.conns, move |tx| {
            tx.prepare_cached("INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)")
                .map_err(sql)?
                .execute(params![name, candidate])
                .map_err(sql)?;
            tx.prepare_cached("SELECT value FROM secrets WHERE name = ?1")
                .map_err(sql)?
                .query_row(params![name], |row| row.get(0))
                .map_err(sql)
        })
        .await
    }

    async fn create_merchant(&self, bundle: &MerchantBundle) -> StoreResult<()> {
        if bundle.first_plate.merchant_id != bundle.merchant.id {
            return Err(StoreError::Conflict(
                "first plate belongs to another merchant",
            ));
        }
        let bundle = bundle.clone();
        write(&self.conns, move |tx| {
            let merchant = &bundle.merchant;
            let doc = to_doc("merchant", merchant)?;
            tx.prepare_cached("INSERT INTO merchants (id, created_at, doc) VALUES (?1, ?2, ?3)")
                .map_err(sql)?
                .execute(params![merchant.id.as_str(), merchant.created_at, doc])
                .map_err(sql)?;
            insert_api_key_row(tx, &merchant.id, &bundle.api_key)?;
            insert_plate_row(tx, &bundle.first_plate)
        })
        .await
    }

    async fn merchant(&self, id: &MerchantId) -> StoreResult<Option<Merchant>> {
        let id = id.clone();
        read(&self.conns, move |conn| {
            query_doc(
                conn,
                "merchant",
                "SELECT doc FROM merchants WHERE id = ?1",
                params![id.as_str()],
            )
        })
        .await
    }

    async fn list_merchants(
        &self,
        after: Option<&MerchantId>,
        limit: usize,
    ) -> StoreResult<Vec<Merchant>> {
        let after = after.cloned();
        // SQLite's LIMIT is signed; anything larger means "all".
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        read(&self.conns, move |conn| match after {
            None => query_docs(
                conn,
                "merchant",
                "SELECT doc FROM merchants ORDER BY created_at, id LIMIT ?1",
                params![limit],
            ),
            // A cursor that names no merchant yields an empty page: merchants are
            // never deleted, so such a cursor did not come from a listing.
            Some(cursor) => query_docs(
                conn,
                "merchant",
                "SELECT doc FROM merchants
                 WHERE (created_at, id) > (SELECT created_at, id FROM merchants WHERE id = ?1)
                 ORDER BY created_at, id LIMIT ?2",
                params![cursor.as_str(), limit],
            ),
        })
        .await
    }

    async fn merchant_by_api_key(&self, key_hash: &str) -> StoreResult<Option<Merchant>> {
        let key_hash = key_hash.to_owned();
        read(&self.conns, move |conn| {
            query_doc(
                conn,
                "merchant",
                "SELECT m.doc FROM api_keys k JOIN merchants m ON m.id = k.merchant_id
                 WHERE k.hash = ?1",
                params![key_hash],
            )
        })
        .await
    }

    async fn rotate_api_key(&self, merchant: &MerchantId, key: &ApiKeyRecord) -> StoreResult<()> {
        let merchant = merchant.clone();
        let key = key.clone();
        write(&self.conns, move |tx| {
            if !merchant_exists(tx, &merchant)? {
                return Err(StoreError::NotFound);
            }
            tx.prepare_cached("DELETE FROM api_keys WHERE merchant_id = ?1")
                .map_err(sql)?
                .execute(params![merchant.as_str()])
                .map_err(sql)?;
            insert_api_key_row(tx, &merchant, &key)
        })
        .await
    }

    async fn insert_plate(&self, plate: &Plate) -> StoreResult<()> {
        let plate = plate.clone();
        write(&self.conns, move |tx| {
            // The foreign key would refuse the row too; checking first says which
            // failure it is without parsing SQLite's message.
            if !merchant_exists(tx, &plate.merchant_id)? {
                return Err(StoreError::NotFound);
            }
            insert_plate_row(tx, &plate)
        })
        .await
    }

    async fn plate(&self, id: &PlateId) -> StoreResult<Option<Plate>> {
        let id = id.clone();
        read(&self.conns, move |conn| {
            query_doc(
                conn,
                "plate",
                "SELECT doc FROM plates WHERE id = ?1",
                params![id.as_str()],
            )
        })
        .await
    }

    async fn plates_of(&self, merchant: &MerchantId) -> StoreResult<Vec<Plate>> {
        let merchant = merchant.clone();
        read(&self.conns, move |conn| {
            query_docs(
                conn,
                "plate",
                "SELECT doc FROM plates WHERE merchant_id = ?1 ORDER BY created_at, id",
                params![merchant.as_str()],
            )
        })
        .await
    }

    async fn idem_begin(
        &self,
        scope: &IdemScope,
        key: &str,
        fingerprint: &[u8; 32],
        clock: IdemClock,
    ) -> StoreResult<IdemBegin> {
        let scope = idempotency::scope_text(scope);
        let key = key.to_owned();
        let fingerprint = *fingerprint;
        write(&self.conns, move |tx| {
            idempotency::begin(tx, &scope, &key, &fingerprint, clock)
        })
        .await
    }

    async fn idem_finish(
        &self,
        scope: &IdemScope,
        key: &str,
        lease: &LeaseToken,
        response: &StoredResponse,
    ) -> StoreResult<bool> {
        let scope = idempotency::scope_text(scope);
        let key = key.to_owned();
        let lease = lease.clone();
        let response = response.clone();
        write(&self.conns, move |tx| {
            idempotency::finish(tx, &scope, &key, &lease, &response)
        })
        .await
    }

    async fn idem_release(
        &self,
        scope: &IdemScope,
        key: &str,
        lease: &LeaseToken,
    ) -> StoreResult<bool> {
        let scope = idempotency::scope_text(scope);
        let key = key.to_owned();
        let lease = lease.clone();
        write(&self.conns, move |tx| {
            idempotency::release(tx, &scope, &key, &lease)
        })
        .await
    }

    async fn idem_purge_expired(&self, now: UnixMillis, limit: usize) -> StoreResult<usize> {
        if limit == 0 {
            return Ok(0);
        }
        write(&self.conns, move |tx| {
            idempotency::purge_expired(tx, now, limit)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
