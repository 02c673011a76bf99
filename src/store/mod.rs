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

use sesame_adapters::money::Currency;

use crate::config::StoreSettings;
use crate::domain::event::{DeliveryStatus, Event};
use crate::domain::ledger::LedgerEntry;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::refund::Refund;
use crate::domain::{
    ApiKeyRecord, EventId, Merchant, MerchantId, OrderId, Plate, PlateId, RefundId, UnixMillis,
};

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
    /// The caller asked for something inconsistent (an unbalanced ledger entry, an
    /// order change whose version does not follow the expected one): a bug, not input.
    #[error("invalid change: {0}")]
    Invalid(&'static str),
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
pub trait Store: PaymentStore + Send + Sync + 'static {
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

    /// Deletes up to `limit` records whose retention ended at or before `now` (stored
    /// responses included) and returns how many it deleted. A record past retention
    /// already counts as absent for `idem_begin`; this reclaims its space. Backends
    /// that expire records by themselves (Redis key TTLs) delete nothing here.
    async fn idem_purge_expired(&self, now: UnixMillis, limit: usize) -> StoreResult<usize>;
}

/// ONE atomic change to an order and everything that goes with it (DESIGN §4, the
/// callback commit): dedupe the wallet event, move the order (compare-and-set on its
/// version), record a refund, post a balanced ledger entry, enqueue a merchant event.
/// Either all of it is written, durably, or none of it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderChange {
    /// The order's new state. `order.version` must be `expected_version + 1`.
    pub order: Order,
    /// The version the caller read; 0 inserts a new order (which must not exist).
    pub expected_version: u64,
    /// Wallet-event or operation key, unique per merchant and kept forever: when it was
    /// already recorded the whole change is a `Duplicate` and nothing is written.
    pub dedupe_key: Option<String>,
    /// Inserted, or replacing the refund with the same id.
    pub refund: Option<Refund>,
    /// Appended to the book; its postings must balance. An entry id already in the
    /// book makes the change a `Duplicate` (postings are idempotent by entry id).
    pub entry: Option<LedgerEntry>,
    /// Appended to the merchant's event log and put in the outbox, due at `now`.
    pub event: Option<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Applied,
    /// The dedupe key or the entry id was already recorded: nothing written.
    Duplicate,
    /// The order's stored version is not `expected_version` (or, for an insert, the
    /// order exists): nothing written; re-read and decide again.
    VersionConflict,
}

/// Filters of `GET /v1/orders`; `created_to` is exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub created_from: Option<UnixMillis>,
    pub created_to: Option<UnixMillis>,
}

/// The balance of one ledger account of a merchant in one currency (debits − credits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub currency: Currency,
    pub account: String,
    pub balance: i64,
}

/// An event handed to one dispatcher for one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxClaim {
    pub event: Event,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub lease: LeaseToken,
    /// When the current retry window started: the event's creation, or its last
    /// `resend_event`. The dispatcher gives up a window's length after it.
    pub retry_window_from: UnixMillis,
}

/// Payments: orders, refunds, ledger, events and the outbox. Every method is one
/// atomic operation on ONE merchant's data, except the cross-merchant scans
/// (`orders_due`, `claim_due_events`), which return records to act on one by one.
#[async_trait]
pub trait PaymentStore: Send + Sync + 'static {
    /// See [`OrderChange`]. `now` stamps the outbox entry of the event.
    async fn commit(&self, change: &OrderChange, now: UnixMillis) -> StoreResult<CommitOutcome>;

    async fn order(&self, id: &OrderId) -> StoreResult<Option<Order>>;

    /// The merchant's orders, newest first (`created_at` desc, then id desc), after
    /// the cursor order when given.
    async fn list_orders(
        &self,
        merchant: &MerchantId,
        filter: &OrderFilter,
        after: Option<&OrderId>,
        limit: usize,
    ) -> StoreResult<Vec<Order>>;

    async fn refund(&self, id: &RefundId) -> StoreResult<Option<Refund>>;

    /// The order's refunds in creation order.
    async fn refunds_of(&self, order: &OrderId) -> StoreResult<Vec<Refund>>;

    /// The order's ledger entries in posting order.
    async fn entries_of(&self, order: &OrderId) -> StoreResult<Vec<LedgerEntry>>;

    /// Every ledger entry of the merchant, in posting order (for `ledger verify`).
    async fn ledger_entries(&self, merchant: &MerchantId) -> StoreResult<Vec<LedgerEntry>>;

    /// The merchant's stored account balances, sorted by currency then account.
    async fn balances(&self, merchant: &MerchantId) -> StoreResult<Vec<Balance>>;

    /// Orders the reconciler must look at — [`Order::due_at`] `<= now` (open orders,
    /// expired ones in their grace period, succeeded ones with refunds in flight) —
    /// earliest first, across merchants.
    async fn orders_due(&self, now: UnixMillis, limit: usize) -> StoreResult<Vec<Order>>;

    /// The merchant's events in creation order, after the cursor event when given.
    async fn events_after(
        &self,
        merchant: &MerchantId,
        after: Option<&EventId>,
        limit: usize,
    ) -> StoreResult<Vec<Event>>;

    async fn event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
    ) -> StoreResult<Option<(Event, DeliveryStatus)>>;

    /// Leases up to `limit` pending events due at `now` whose lease (if any) expired,
    /// across merchants; each returned claim increments the event's attempt count.
    /// Two callers never hold a live lease on the same event.
    async fn claim_due_events(
        &self,
        now: UnixMillis,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<OutboxClaim>>;

    /// Marks a claimed event delivered. False (nothing changed) when `lease` is not the
    /// live lease of a pending event.
    async fn complete_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        lease: &LeaseToken,
    ) -> StoreResult<bool>;

    /// Releases a claim and makes the event due again at `next_attempt_at`.
    async fn reschedule_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        lease: &LeaseToken,
        next_attempt_at: UnixMillis,
        error: &str,
    ) -> StoreResult<bool>;

    /// Gives up on a claimed event (state `dead`).
    async fn dead_letter_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        lease: &LeaseToken,
        error: &str,
    ) -> StoreResult<bool>;

    /// Puts an event (delivered or dead) back in the outbox, due at `now`, and starts
    /// a new retry window at `now`. An event still pending keeps its lease (a
    /// dispatcher holding it is never joined by a second one) and becomes due no later
    /// than `now`. False when the merchant has no such event.
    async fn resend_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        now: UnixMillis,
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
