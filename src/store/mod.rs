//! The store: domain-level atomic operations, not a key-value API (DESIGN §5).
//!
//! Owns `trait Store` and the records it exchanges. Two backends implement it and
//! pass ONE conformance suite (`tests/api/store_conformance.rs`):
//! `embedded` (SQLite, WAL, durable on return) and `redis` (Lua per atomic operation,
//! every key of a merchant under the hash tag `{m:<merchant>}`).
//! Must never: read the clock (callers pass `now`, so tests inject time), log
//! secrets, or leave a multi-step write half done.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::StoreSettings;
use crate::domain::{ApiKeyRecord, Merchant, MerchantId, Plate, PlateId, UnixMillis};

pub mod embedded;
pub mod redis;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operation refers to a record that does not exist (e.g. a plate for a
    /// missing merchant).
    #[error("not found")]
    NotFound,
    /// A unique id or key is already taken.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// Transport, timeout or I/O failure: the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The backend refuses to run with this configuration (e.g. Redis without AOF).
    #[error("store misconfigured: {0}")]
    Misconfigured(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What `/readyz` reports about the store.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoreHealth {
    pub backend: &'static str,
    /// True when an acknowledged write survives a crash of the store process.
    pub durable: bool,
    /// e.g. `sqlite wal synchronous=full`, `redis aof appendfsync=always`.
    pub durability: String,
}

/// Everything written when a merchant is onboarded: one atomic operation.
#[derive(Debug, Clone)]
pub struct MerchantBundle {
    pub merchant: Merchant,
    pub api_key: ApiKeyRecord,
    pub first_plate: Plate,
}

/// Who owns an idempotency key: the admin API or one merchant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdemScope {
    Admin,
    Merchant(MerchantId),
}

/// The response a finished idempotent request gave, kept for replay. The store
/// treats `body` as opaque bytes (the service may encrypt it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A random token proving the caller owns an in-progress idempotency record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseToken(pub String);

impl LeaseToken {
    pub fn generate() -> LeaseToken {
        LeaseToken(hex::encode(crate::domain::ids::random_bytes::<16>()))
    }
}

/// Outcome of `idem_begin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdemBegin {
    /// No live record existed (or an in-progress one had an expired lease): the caller
    /// now holds the key with this lease and must `idem_finish` or `idem_release`.
    Started(LeaseToken),
    /// Same key, same fingerprint, still in progress under a live lease.
    InProgress,
    /// Same key, same fingerprint, finished: here is the stored response.
    Replay(StoredResponse),
    /// Same key, different fingerprint (whatever the record's state).
    KeyReused,
}

/// Timing of an idempotency record. `retention_ms` counts from the first `begin`;
/// after it the key is free again. A lease that expires lets another caller take over
/// a request whose process died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdemClock {
    pub now: UnixMillis,
    pub lease_ms: i64,
    pub retention_ms: i64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks the store answers and reports its durability.
    async fn health(&self) -> StoreResult<StoreHealth>;

    /// Returns the server-wide secret `name`, storing `candidate` first if there is
    /// none yet. Atomic: concurrent callers all get the same value.
    async fn secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>>;

    /// Writes the merchant, its API key hash and its first plate atomically.
    /// `Conflict` if the merchant id, plate id or key hash exists.
    async fn create_merchant(&self, bundle: &MerchantBundle) -> StoreResult<()>;

    async fn merchant(&self, id: &MerchantId) -> StoreResult<Option<Merchant>>;

    /// Merchants in creation order (ties by id), after the cursor id when given.
    async fn list_merchants(
        &self,
        after: Option<&MerchantId>,
        limit: usize,
    ) -> StoreResult<Vec<Merchant>>;

    /// The merchant whose CURRENT API key has this hash (a rotated-out key finds none).
    async fn merchant_by_api_key(&self, key_hash: &str) -> StoreResult<Option<Merchant>>;

    /// Replaces the merchant's API key: afterwards only `key` authenticates.
    /// `NotFound` if the merchant does not exist.
    async fn rotate_api_key(&self, merchant: &MerchantId, key: &ApiKeyRecord) -> StoreResult<()>;

    /// Adds a plate to an existing merchant (`NotFound` otherwise, `Conflict` on a
    /// duplicate plate id).
    async fn insert_plate(&self, plate: &Plate) -> StoreResult<()>;

    async fn plate(&self, id: &PlateId) -> StoreResult<Option<Plate>>;

    /// The merchant's plates in creation order.
    async fn plates_of(&self, merchant: &MerchantId) -> StoreResult<Vec<Plate>>;

    /// Starts (or resumes, or replays) an idempotent request; see [`IdemBegin`].
    /// `key` is the client's Idempotency-Key (≤ 255 visible ASCII characters);
    /// `fingerprint` identifies the request (method, path, body).
    async fn idem_begin(
        &self,
        scope: &IdemScope,
        key: &str,
        fingerprint: &[u8; 32],
        clock: IdemClock,
    ) -> StoreResult<IdemBegin>;

    /// Stores the response of a started request. Returns false (and changes nothing)
    /// when `lease` no longer owns the record.
    async fn idem_finish(
        &self,
        scope: &IdemScope,
        key: &str,
        lease: &LeaseToken,
        response: &StoredResponse,
    ) -> StoreResult<bool>;

    /// Forgets a started request (it failed before any effect), so the client may
    /// retry with the same key. Returns false when `lease` no longer owns the record.
    async fn idem_release(
        &self,
        scope: &IdemScope,
        key: &str,
        lease: &LeaseToken,
    ) -> StoreResult<bool>;
}

pub type DynStore = Arc<dyn Store>;

/// Opens the backend the settings choose.
pub async fn open(settings: &StoreSettings) -> StoreResult<DynStore> {
    match settings.backend {
        crate::config::StoreBackend::Embedded => Ok(Arc::new(
            embedded::EmbeddedStore::open(&settings.path).await?,
        )),
        crate::config::StoreBackend::Redis => Ok(Arc::new(
            redis::RedisStore::connect(
                &settings.redis_url,
                &settings.redis_prefix,
                settings.allow_volatile,
                std::time::Duration::from_millis(settings.redis_timeout_ms),
            )
            .await?,
        )),
    }
}
