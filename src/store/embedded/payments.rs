//! Payments operations of the embedded store. Placeholder until implemented.

use async_trait::async_trait;

use super::EmbeddedStore;
use crate::domain::event::{DeliveryStatus, Event};
use crate::domain::ledger::LedgerEntry;
use crate::domain::order::Order;
use crate::domain::refund::Refund;
use crate::domain::{EventId, MerchantId, OrderId, RefundId, UnixMillis};
use crate::store::{
    Balance, CommitOutcome, LeaseToken, OrderChange, OrderFilter, OutboxClaim, PaymentStore,
    StoreError, StoreResult,
};

fn unbuilt<T>() -> StoreResult<T> {
    Err(StoreError::Misconfigured(
        "payments are not built yet".into(),
    ))
}

#[async_trait]
impl PaymentStore for EmbeddedStore {
    async fn commit(&self, _: &OrderChange, _: UnixMillis) -> StoreResult<CommitOutcome> {
        unbuilt()
    }
    async fn order(&self, _: &OrderId) -> StoreResult<Option<Order>> {
        unbuilt()
    }
    async fn list_orders(
        &self,
        _: &MerchantId,
        _: &OrderFilter,
        _: Option<&OrderId>,
        _: usize,
    ) -> StoreResult<Vec<Order>> {
        unbuilt()
    }
    async fn refund(&self, _: &RefundId) -> StoreResult<Option<Refund>> {
        unbuilt()
    }
    async fn refunds_of(&self, _: &OrderId) -> StoreResult<Vec<Refund>> {
        unbuilt()
    }
    async fn entries_of(&self, _: &OrderId) -> StoreResult<Vec<LedgerEntry>> {
        unbuilt()
    }
    async fn ledger_entries(&self, _: &MerchantId) -> StoreResult<Vec<LedgerEntry>> {
        unbuilt()
    }
    async fn balances(&self, _: &MerchantId) -> StoreResult<Vec<Balance>> {
        unbuilt()
    }
    async fn orders_due(&self, _: UnixMillis, _: usize) -> StoreResult<Vec<Order>> {
        unbuilt()
    }
    async fn events_after(
        &self,
        _: &MerchantId,
        _: Option<&EventId>,
        _: usize,
    ) -> StoreResult<Vec<Event>> {
        unbuilt()
    }
    async fn event(
        &self,
        _: &MerchantId,
        _: &EventId,
    ) -> StoreResult<Option<(Event, DeliveryStatus)>> {
        unbuilt()
    }
    async fn claim_due_events(
        &self,
        _: UnixMillis,
        _: i64,
        _: usize,
    ) -> StoreResult<Vec<OutboxClaim>> {
        unbuilt()
    }
    async fn complete_event(
        &self,
        _: &MerchantId,
        _: &EventId,
        _: &LeaseToken,
    ) -> StoreResult<bool> {
        unbuilt()
    }
    async fn reschedule_event(
        &self,
        _: &MerchantId,
        _: &EventId,
        _: &LeaseToken,
        _: UnixMillis,
        _: &str,
    ) -> StoreResult<bool> {
        unbuilt()
    }
    async fn dead_letter_event(
        &self,
        _: &MerchantId,
        _: &EventId,
        _: &LeaseToken,
        _: &str,
    ) -> StoreResult<bool> {
        unbuilt()
    }
    async fn resend_event(&self, _: &MerchantId, _: &EventId, _: UnixMillis) -> StoreResult<bool> {
        unbuilt()
    }
}
