//! A store that holds one chosen read (an order's, or a merchant's balances) until the
//! test lets it go: it puts a write of
//! another task exactly between two reads of a service operation, so a race that
//! timing would hit only sometimes is run every time. Everything else is passed to the
//! real store unchanged.

use std::sync::Arc;
use std::sync::Mutex;

use async_trait::async_trait;
use sesame::domain::event::{DeliveryStatus, Event};
use sesame::domain::ledger::LedgerEntry;
use sesame::domain::order::Order;
use sesame::domain::refund::Refund;
use sesame::domain::{
    ApiKeyRecord, EventId, Merchant, MerchantId, OrderId, Plate, PlateId, RefundId,
};
use sesame::store::{
    Balance, CommitOutcome, DynStore, IdemBegin, IdemClock, IdemScope, LeaseToken, MerchantBundle,
    OrderChange, OrderFilter, OutboxClaim, PaymentStore, Store, StoreHealth, StoreResult,
    StoredResponse,
};
use tokio::sync::Notify;

/// The reads a [`Gate`] can hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Read {
    Order,
    Balances,
}

/// Holds the next read of one kind once armed, until released.
#[derive(Default)]
pub struct Gate {
    armed: Mutex<Option<Read>>,
    reached: Notify,
    release: Notify,
}

impl Gate {
    /// The next `read` will wait for [`Gate::release`].
    pub fn arm(&self, read: Read) {
        *self.armed.lock().unwrap() = Some(read);
    }

    /// Waits until a read is held.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    pub fn release(&self) {
        self.release.notify_one();
    }

    async fn pass(&self, read: Read) {
        let held = {
            let mut armed = self.armed.lock().unwrap();
            let held = *armed == Some(read);
            if held {
                *armed = None;
            }
            held
        };
        if held {
            self.reached.notify_one();
            self.release.notified().await;
        }
    }
}

pub struct PausedStore {
    inner: DynStore,
    pub gate: Arc<Gate>,
}

impl PausedStore {
    pub fn wrap(inner: DynStore) -> (DynStore, Arc<Gate>) {
        let gate = Arc::new(Gate::default());
        let store = PausedStore {
            inner,
            gate: gate.clone(),
        };
        (Arc::new(store), gate)
    }
}

#[async_trait]
impl Store for PausedStore {
    async fn health(&self) -> StoreResult<StoreHealth> {
        self.inner.health().await
    }
    async fn secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        self.inner.secret(name, candidate).await
    }
    async fn create_merchant(&self, bundle: &MerchantBundle) -> StoreResult<()> {
        self.inner.create_merchant(bundle).await
    }
    async fn merchant(&self, id: &MerchantId) -> StoreResult<Option<Merchant>> {
        self.inner.merchant(id).await
    }
    async fn list_merchants(
        &self,
        after: Option<&MerchantId>,
        limit: usize,
    ) -> StoreResult<Vec<Merchant>> {
        self.inner.list_merchants(after, limit).await
    }
    async fn merchant_by_api_key(&self, key_hash: &str) -> StoreResult<Option<Merchant>> {
        self.inner.merchant_by_api_key(key_hash).await
    }
    async fn rotate_api_key(&self, merchant: &MerchantId, key: &ApiKeyRecord) -> StoreResult<()> {
        self.inner.rotate_api_key(merchant, key).await
    }
    async fn insert_plate(&self, plate: &Plate) -> StoreResult<()> {
        self.inner.insert_plate(plate).await
    }
    async fn plate(&self, id: &PlateId) -> StoreResult<Option<Plate>> {
        self.inner.plate(id).await
    }
    async fn plates_of(&self, merchant: &MerchantId) -> StoreResult<Vec<Plate>> {
        self.inner.plates_of(merchant).await
    }
    async fn idem_begin(
        &self,
        scope: &IdemScope,
        key: &str,
        fingerprint: &[u8; 32],
        clock: IdemClock,
    ) -> StoreResult<IdemBegin> {
        self.inner.idem_begin(scope, key, fingerprint, clock).await
    }
    async fn idem_finish(
        &self,
        scope: &IdemScope,
        key: &str,
        lease: &LeaseToken,
        response: &StoredResponse,
    ) -> StoreResult<bool> {
        self.inner.idem_finish(scope, key, lease, response).await
    }
    async fn idem_release(
        &self,
        scope: &IdemScope,
        key: &str,
        lease: &LeaseToken,
    ) -> StoreResult<bool> {
        self.inner.idem_release(scope, key, lease).await
    }
    async fn idem_purge_expired(&self, now: i64, limit: usize) -> StoreResult<usize> {
        self.inner.idem_purge_expired(now, limit).await
    }
}

#[async_trait]
impl PaymentStore for PausedStore {
    async fn commit(&self, change: &OrderChange, now: i64) -> StoreResult<CommitOutcome> {
        self.inner.commit(change, now).await
    }
    async fn order(&self, id: &OrderId) -> StoreResult<Option<Order>> {
        self.gate.pass(Read::Order).await;
        self.inner.order(id).await
    }
    async fn list_orders(
        &self,
        merchant: &MerchantId,
        filter: &OrderFilter,
        after: Option<&OrderId>,
        limit: usize,
    ) -> StoreResult<Vec<Order>> {
        self.inner.list_orders(merchant, filter, after, limit).await
    }
    async fn refund(&self, id: &RefundId) -> StoreResult<Option<Refund>> {
        self.inner.refund(id).await
    }
    async fn refunds_of(&self, order: &OrderId) -> StoreResult<Vec<Refund>> {
        self.inner.refunds_of(order).await
    }
    async fn entries_of(&self, order: &OrderId) -> StoreResult<Vec<LedgerEntry>> {
        self.inner.entries_of(order).await
    }
    async fn ledger_entries(&self, merchant: &MerchantId) -> StoreResult<Vec<LedgerEntry>> {
        self.inner.ledger_entries(merchant).await
    }
    async fn balances(&self, merchant: &MerchantId) -> StoreResult<Vec<Balance>> {
        self.gate.pass(Read::Balances).await;
        self.inner.balances(merchant).await
    }
    async fn orders_due(&self, now: i64, limit: usize) -> StoreResult<Vec<Order>> {
        self.inner.orders_due(now, limit).await
    }
    async fn events_after(
        &self,
        merchant: &MerchantId,
        after: Option<&EventId>,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        self.inner.events_after(merchant, after, limit).await
    }
    async fn event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
    ) -> StoreResult<Option<(Event, DeliveryStatus)>> {
        self.inner.event(merchant, id).await
    }
    async fn claim_due_events(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<OutboxClaim>> {
        self.inner.claim_due_events(now, lease_ms, limit).await
    }
    async fn complete_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        lease: &LeaseToken,
    ) -> StoreResult<bool> {
        self.inner.complete_event(merchant, id, lease).await
    }
    async fn reschedule_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        lease: &LeaseToken,
        next_attempt_at: i64,
        error: &str,
    ) -> StoreResult<bool> {
        self.inner
            .reschedule_event(merchant, id, lease, next_attempt_at, error)
            .await
    }
    async fn dead_letter_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        lease: &LeaseToken,
        error: &str,
    ) -> StoreResult<bool> {
        self.inner
            .dead_letter_event(merchant, id, lease, error)
            .await
    }
    async fn resend_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        now: i64,
    ) -> StoreResult<bool> {
        self.inner.resend_event(merchant, id, now).await
    }
}
