//! Payments in SQLite: orders, refunds, the ledger and its balances, merchant events
//! and their delivery outbox.
//!
//! Owns `PaymentStore` for `EmbeddedStore`. `commit` is ONE `BEGIN IMMEDIATE`
//! transaction that reads every precondition (dedupe key, entry id, order version)
//! before its first write, so a `Duplicate` or `VersionConflict` writes nothing and any
//! failure after the first write rolls the whole change back. Outbox claims are leases
//! kept in the outbox row: a random token plus an expiry, replaced on every claim.
//! Must never: write part of a change, change a balance except by the entry posted in
//! the same transaction, let arithmetic on a balance wrap, let two dispatchers hold a
//! live lease on one event, or read the clock (callers pass `now`).

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};
use sesame_adapters::money::Currency;

use super::connections::{read, write};
use super::errors::sql;
use super::{EmbeddedStore, from_doc, query_doc, query_docs, to_doc};
use crate::domain::event::{DeliveryState, DeliveryStatus, Event};
use crate::domain::ledger::{self, LedgerEntry};
use crate::domain::order::Order;
use crate::domain::refund::Refund;
use crate::domain::{EventId, MerchantId, OrderId, RefundId, UnixMillis};
use crate::store::{
    Balance, CommitOutcome, LeaseToken, OrderChange, OrderFilter, OutboxClaim, PaymentStore,
    StoreError, StoreResult,
};

/// Outbox states as stored (the `CHECK` of migration 2 lists the same three).
const PENDING: &str = "pending";
const DELIVERED: &str = "delivered";
const DEAD: &str = "dead";

/// SQLite's LIMIT is signed; anything larger means "all".
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A change checked and encoded before the writer is taken, so validation and JSON
/// encoding never hold the write lock that every other commit waits for.
struct PreparedChange {
    merchant: String,
    order_id: String,
    expected_version: i64,
    version: i64,
    status: &'static str,
    created_at: UnixMillis,
    /// `Order::due_at`: NULL for an order the reconciler has nothing left to do with.
    next_check_at: Option<UnixMillis>,
    order_doc: String,
    dedupe_key: Option<String>,
    refund: Option<PreparedRefund>,
    entry: Option<PreparedEntry>,
    event: Option<PreparedEvent>,
}

struct PreparedRefund {
    id: String,
    created_at: UnixMillis,
    doc: String,
}

struct PreparedEntry {
    id: String,
    currency: &'static str,
    created_at: UnixMillis,
    postings: Vec<(String, i64)>,
    doc: String,
}

struct PreparedEvent {
    id: String,
    created_at: UnixMillis,
    doc: String,
}

/// Refuses a change that is inconsistent in itself (a caller bug, not input) before
/// anything is read or written, and encodes its documents.
fn prepare(change: &OrderChange) -> StoreResult<PreparedChange> {
    let order = &change.order;
    if change.expected_version.checked_add(1) != Some(order.version) {
        return Err(StoreError::Invalid(
            "order version must be the expected version + 1",
        ));
    }
    let version = i64::try_from(order.version)
        .map_err(|_| StoreError::Invalid("order version out of range"))?;
    // `version` fits, so the smaller expected version does too.
    let expected_version = version - 1;
    // Orders carry their merchant in their id; a record naming another merchant would
    // be filed where lookups by id never find it.
    if order.id.merchant() != order.merchant_id {
        return Err(StoreError::Invalid(
            "order merchant differs from the merchant its id names",
        ));
    }
    let refund = change
        .refund
        .as_ref()
        .map(|refund| {
            if refund.order_id != order.id || refund.merchant_id != order.merchant_id {
                return Err(StoreError::Invalid("refund belongs to another order"));
            }
            Ok(PreparedRefund {
                id: refund.id.as_str().to_owned(),
                created_at: refund.created_at,
                doc: to_doc("refund", refund)?,
            })
        })
        .transpose()?;
    let entry = change
        .entry
        .as_ref()
        .map(|entry| {
            if entry.order_id != order.id || entry.merchant_id != order.merchant_id {
                return Err(StoreError::Invalid("ledger entry belongs to another order"));
            }
            if entry.currency != order.currency {
                return Err(StoreError::Invalid(
                    "ledger entry currency differs from the order's",
                ));
            }
            if entry.postings.is_empty() {
                return Err(StoreError::Invalid("ledger entry has no postings"));
            }
            if !ledger::balances(&entry.postings) {
                return Err(StoreError::Invalid("ledger entry does not balance"));
            }
            Ok(PreparedEntry {
                id: entry.id.clone(),
                currency: entry.currency.code(),
                created_at: entry.created_at,
                postings: entry
                    .postings
                    .iter()
                    .map(|p| (p.account.clone(), p.amount))
                    .collect(),
                doc: to_doc("ledger entry", entry)?,
            })
        })
        .transpose()?;
    let event = change
        .event
        .as_ref()
        .map(|event| {
            if event.merchant_id != order.merchant_id {
                return Err(StoreError::Invalid("event belongs to another merchant"));
            }
            Ok(PreparedEvent {
                id: event.id.as_str().to_owned(),
                created_at: event.created_at,
                doc: to_doc("event", event)?,
            })
        })
        .transpose()?;
    Ok(PreparedChange {
        merchant: order.merchant_id.as_str().to_owned(),
        order_id: order.id.as_str().to_owned(),
        expected_version,
        version,
        status: order.status.as_str(),
        created_at: order.created_at,
        next_check_at: order.due_at(),
        order_doc: to_doc("order", order)?,
        dedupe_key: change.dedupe_key.clone(),
        refund,
        entry,
        event,
    })
}

/// The body of `commit`, inside its write transaction. Returning `Ok` commits; every
/// outcome but `Applied` returns before the first write.
fn apply(
    tx: &Transaction<'_>,
    change: &PreparedChange,
    now: UnixMillis,
) -> StoreResult<CommitOutcome> {
    if let Some(key) = &change.dedupe_key {
        let seen = tx
            .prepare_cached("SELECT 1 FROM dedupe WHERE merchant_id = ?1 AND key = ?2")
            .map_err(sql)?
            .exists(params![change.merchant, key])
            .map_err(sql)?;
        if seen {
            return Ok(CommitOutcome::Duplicate);
        }
    }
    if let Some(entry) = &change.entry {
        let posted = tx
            .prepare_cached("SELECT 1 FROM ledger_entries WHERE id = ?1")
            .map_err(sql)?
            .exists(params![entry.id])
            .map_err(sql)?;
        if posted {
            return Ok(CommitOutcome::Duplicate);
        }
    }

    // The order write is the compare-and-set and the first write: when it changes no
    // row, nothing has been written yet.
    let moved = if change.expected_version == 0 {
        tx.prepare_cached(
            "INSERT INTO orders (id, merchant_id, status, created_at, next_check_at, version, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO NOTHING",
        )
        .map_err(sql)?
        .execute(params![
            change.order_id,
            change.merchant,
            change.status,
            change.created_at,
            change.next_check_at,
            change.version,
            change.order_doc
        ])
        .map_err(sql)?
    } else {
        tx.prepare_cached(
            "UPDATE orders
             SET status = ?3, created_at = ?4, next_check_at = ?5, version = ?6, doc = ?7
             WHERE id = ?1 AND version = ?2",
        )
        .map_err(sql)?
        .execute(params![
            change.order_id,
            change.expected_version,
            change.status,
            change.created_at,
            change.next_check_at,
            change.version,
            change.order_doc
        ])
        .map_err(sql)?
    };
    if moved == 0 {
        return Ok(CommitOutcome::VersionConflict);
    }

    if let Some(refund) = &change.refund {
        let written = tx
            .prepare_cached(
                "INSERT INTO refunds (id, order_id, merchant_id, created_at, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET created_at = excluded.created_at,
                                                doc = excluded.doc
                 WHERE refunds.order_id = excluded.order_id",
            )
            .map_err(sql)?
            .execute(params![
                refund.id,
                change.order_id,
                change.merchant,
                refund.created_at,
                refund.doc
            ])
            .map_err(sql)?;
        if written == 0 {
            return Err(StoreError::Invalid("refund id belongs to another order"));
        }
    }

    if let Some(entry) = &change.entry {
        tx.prepare_cached(
            "INSERT INTO ledger_entries (id, merchant_id, order_id, created_at, doc)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(sql)?
        .execute(params![
            entry.id,
            change.merchant,
            change.order_id,
            entry.created_at,
            entry.doc
        ])
        .map_err(sql)?;
        for (account, amount) in &entry.postings {
            post(tx, &change.merchant, entry.currency, account, *amount)?;
        }
    }

    if let Some(event) = &change.event {
        tx.prepare_cached(
            "INSERT INTO events (id, merchant_id, created_at, doc) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(sql)?
        .execute(params![
            event.id,
            change.merchant,
            event.created_at,
            event.doc
        ])
        .map_err(sql)?;
        tx.prepare_cached(
            "INSERT INTO outbox (event_id, merchant_id, state, attempts, next_attempt_at)
             VALUES (?1, ?2, 'pending', 0, ?3)",
        )
        .map_err(sql)?
        .execute(params![event.id, change.merchant, now])
        .map_err(sql)?;
    }

    if let Some(key) = &change.dedupe_key {
        tx.prepare_cached("INSERT INTO dedupe (merchant_id, key) VALUES (?1, ?2)")
            .map_err(sql)?
            .execute(params![change.merchant, key])
            .map_err(sql)?;
    }
    Ok(CommitOutcome::Applied)
}

/// Adds `amount` to one account's balance. SQLite turns an overflowing integer sum
/// into a float (and `i64::MIN - 1` rounds back to a valid integer), so the update only
/// runs when the sum fits; when it does not, no row changes and the change is refused.
fn post(
    tx: &Transaction<'_>,
    merchant: &str,
    currency: &str,
    account: &str,
    amount: i64,
) -> StoreResult<()> {
    let changed = tx
        .prepare_cached(
            "INSERT INTO balances (merchant_id, currency, account, balance)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (merchant_id, currency, account)
             DO UPDATE SET balance = balance + excluded.balance
             WHERE CASE WHEN excluded.balance >= 0 THEN balance <= ?5 - excluded.balance
                        ELSE balance >= ?6 - excluded.balance END",
        )
        .map_err(sql)?
        .execute(params![
            merchant,
            currency,
            account,
            amount,
            i64::MAX,
            i64::MIN
        ])
        .map_err(sql)?;
    if changed == 0 {
        return Err(StoreError::Invalid("account balance would overflow"));
    }
    Ok(())
}

/// The text of one delivery state as stored.
fn delivery_state(text: &str) -> StoreResult<DeliveryState> {
    match text {
        PENDING => Ok(DeliveryState::Pending),
        DELIVERED => Ok(DeliveryState::Delivered),
        DEAD => Ok(DeliveryState::Dead),
        _ => Err(StoreError::Corrupt(
            "outbox row with an unknown state".into(),
        )),
    }
}

fn attempts_of(stored: i64) -> StoreResult<u32> {
    u32::try_from(stored)
        .map_err(|_| StoreError::Corrupt("outbox attempt count out of range".into()))
}

/// Runs one single-row outbox update; true when the row matched (for the lease-guarded
/// ones: when the lease still owned the event).
fn update_outbox_row(
    conn: &Connection,
    query: &str,
    args: impl rusqlite::Params,
) -> StoreResult<bool> {
    let changed = conn
        .prepare_cached(query)
        .map_err(sql)?
        .execute(args)
        .map_err(sql)?;
    Ok(changed == 1)
}

/// The query of `list_orders` and its arguments. Only the filters given become
/// conditions, so a time window is a range of the (merchant, created_at desc, id desc)
/// index rather than a filter over all of the merchant's orders.
fn list_orders_sql(
    merchant: &MerchantId,
    filter: &OrderFilter,
    after: Option<&OrderId>,
    limit: usize,
) -> (String, Vec<Value>) {
    let mut query = String::from("SELECT doc FROM orders WHERE merchant_id = ?1");
    let mut args: Vec<Value> = vec![Value::Text(merchant.as_str().to_owned())];
    if let Some(status) = filter.status {
        args.push(Value::Text(status.as_str().to_owned()));
        query.push_str(&format!(" AND status = ?{}", args.len()));
    }
    if let Some(from) = filter.created_from {
        args.push(Value::Integer(from));
        query.push_str(&format!(" AND created_at >= ?{}", args.len()));
    }
    if let Some(to) = filter.created_to {
        args.push(Value::Integer(to));
        query.push_str(&format!(" AND created_at < ?{}", args.len()));
    }
    if let Some(cursor) = after {
        // A cursor naming no order of this merchant compares with NULL: empty page.
        // The bare `created_at <=` bound is implied by the row comparison; it is there
        // so the index range starts at the cursor instead of at the newest order.
        args.push(Value::Text(cursor.as_str().to_owned()));
        let n = args.len();
        query.push_str(&format!(
            " AND created_at <= (SELECT created_at FROM orders
                                 WHERE id = ?{n} AND merchant_id = ?1)
              AND (created_at, id) < (SELECT created_at, id FROM orders
                                      WHERE id = ?{n} AND merchant_id = ?1)"
        ));
    }
    args.push(Value::Integer(sql_limit(limit)));
    query.push_str(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT ?{}",
        args.len()
    ));
    (query, args)
}

/// Pending events due at ?1 whose lease (if any) is over, at most ?2. Ties on the due
/// time go by rowid, i.e. enqueue order, which is the order of the
/// (state, next_attempt_at) index itself: no sort, and the scan stops after ?2 rows.
const CLAIM_DUE: &str = "SELECT o.event_id, o.attempts, e.doc,
            coalesce(o.retry_window_from, e.created_at)
     FROM outbox o JOIN events e ON e.id = o.event_id
     WHERE o.state = 'pending' AND o.next_attempt_at <= ?1
       AND (o.lease_until IS NULL OR o.lease_until <= ?1)
     ORDER BY o.next_attempt_at, o.rowid
     LIMIT ?2";

#[async_trait]
impl PaymentStore for EmbeddedStore {
    async fn commit(&self, change: &OrderChange, now: UnixMillis) -> StoreResult<CommitOutcome> {
        let prepared = prepare(change)?;
        write(&self.conns, move |tx| apply(tx, &prepared, now)).await
    }

    async fn order(&self, id: &OrderId) -> StoreResult<Option<Order>> {
        let id = id.clone();
        read(&self.conns, move |conn| {
            query_doc(
                conn,
                "order",
                "SELECT doc FROM orders WHERE id = ?1",
                params![id.as_str()],
            )
        })
        .await
    }

    async fn list_orders(
        &self,
        merchant: &MerchantId,
        filter: &OrderFilter,
        after: Option<&OrderId>,
        limit: usize,
    ) -> StoreResult<Vec<Order>> {
        let merchant = merchant.clone();
        let filter = filter.clone();
        let after = after.cloned();
        read(&self.conns, move |conn| {
            let (query, args) = list_orders_sql(&merchant, &filter, after.as_ref(), limit);
            query_docs(conn, "order", &query, params_from_iter(args))
        })
        .await
    }

    async fn refund(&self, id: &RefundId) -> StoreResult<Option<Refund>> {
        let id = id.clone();
        read(&self.conns, move |conn| {
            query_doc(
                conn,
                "refund",
                "SELECT doc FROM refunds WHERE id = ?1",
                params![id.as_str()],
            )
        })
        .await
    }

    async fn refunds_of(&self, order: &OrderId) -> StoreResult<Vec<Refund>> {
        let order = order.clone();
        read(&self.conns, move |conn| {
            query_docs(
                conn,
                "refund",
                "SELECT doc FROM refunds WHERE order_id = ?1 ORDER BY created_at, id",
                params![order.as_str()],
            )
        })
        .await
    }

    async fn entries_of(&self, order: &OrderId) -> StoreResult<Vec<LedgerEntry>> {
        let order = order.clone();
        read(&self.conns, move |conn| {
            query_docs(
                conn,
                "ledger entry",
                "SELECT doc FROM ledger_entries WHERE order_id = ?1 ORDER BY seq",
                params![order.as_str()],
            )
        })
        .await
    }

    async fn ledger_entries(&self, merchant: &MerchantId) -> StoreResult<Vec<LedgerEntry>> {
        let merchant = merchant.clone();
        read(&self.conns, move |conn| {
            query_docs(
                conn,
                "ledger entry",
                "SELECT doc FROM ledger_entries WHERE merchant_id = ?1 ORDER BY seq",
                params![merchant.as_str()],
            )
        })
        .await
    }

    async fn balances(&self, merchant: &MerchantId) -> StoreResult<Vec<Balance>> {
        let merchant = merchant.clone();
        read(&self.conns, move |conn| {
            // The primary key's order: currency code, then account.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT currency, account, balance FROM balances WHERE merchant_id = ?1
                     ORDER BY currency, account",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![merchant.as_str()], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .map_err(sql)?;
            let mut out = Vec::new();
            for row in rows {
                let (currency, account, balance) = row.map_err(sql)?;
                let currency = Currency::parse(&currency).map_err(|_| {
                    StoreError::Corrupt("balance row with an unknown currency".into())
                })?;
                out.push(Balance {
                    currency,
                    account,
                    balance,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn orders_due(&self, now: UnixMillis, limit: usize) -> StoreResult<Vec<Order>> {
        read(&self.conns, move |conn| {
            // `next_check_at` is NULL for terminal orders, so the partial index holds
            // exactly the open orders the reconciler may have to act on.
            query_docs(
                conn,
                "order",
                "SELECT doc FROM orders
                 WHERE next_check_at IS NOT NULL AND next_check_at <= ?1
                 ORDER BY next_check_at, id LIMIT ?2",
                params![now, sql_limit(limit)],
            )
        })
        .await
    }

    async fn events_after(
        &self,
        merchant: &MerchantId,
        after: Option<&EventId>,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        let merchant = merchant.clone();
        let after = after.cloned();
        read(&self.conns, move |conn| match after {
            None => query_docs(
                conn,
                "event",
                "SELECT doc FROM events WHERE merchant_id = ?1 ORDER BY seq LIMIT ?2",
                params![merchant.as_str(), sql_limit(limit)],
            ),
            // A cursor naming no event of this merchant yields an empty page.
            Some(cursor) => query_docs(
                conn,
                "event",
                "SELECT doc FROM events
                 WHERE merchant_id = ?1
                   AND seq > (SELECT seq FROM events WHERE id = ?2 AND merchant_id = ?1)
                 ORDER BY seq LIMIT ?3",
                params![merchant.as_str(), cursor.as_str(), sql_limit(limit)],
            ),
        })
        .await
    }

    async fn event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
    ) -> StoreResult<Option<(Event, DeliveryStatus)>> {
        let merchant = merchant.clone();
        let id = id.clone();
        read(&self.conns, move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT e.doc, o.state, o.attempts, o.next_attempt_at, o.last_error
                     FROM events e LEFT JOIN outbox o ON o.event_id = e.id
                     WHERE e.id = ?1 AND e.merchant_id = ?2",
                )
                .map_err(sql)?
                .query_row(params![id.as_str(), merchant.as_str()], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, Option<String>>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                        row.get::<_, Option<i64>>(3)?,
                        row.get::<_, Option<String>>(4)?,
                    ))
                })
                .optional()
                .map_err(sql)?;
            let Some((doc, state, attempts, next_attempt_at, last_error)) = row else {
                return Ok(None);
            };
            // Commit writes an event and its outbox row together.
            let (Some(state), Some(attempts)) = (state, attempts) else {
                return Err(StoreError::Corrupt("event without an outbox row".into()));
            };
            let state = delivery_state(&state)?;
            let status = DeliveryStatus {
                state,
                attempts: attempts_of(attempts)?,
                next_attempt_at: next_attempt_at.filter(|_| state == DeliveryState::Pending),
                last_error,
            };
            Ok(Some((from_doc("event", &doc)?, status)))
        })
        .await
    }

    async fn claim_due_events(
        &self,
        now: UnixMillis,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<OutboxClaim>> {
        if lease_ms <= 0 {
            // A lease that is over when it is taken would let a second dispatcher in.
            return Err(StoreError::Invalid("outbox lease must be positive"));
        }
        write(&self.conns, move |tx| {
            let due = {
                let mut stmt = tx.prepare_cached(CLAIM_DUE).map_err(sql)?;
                let rows = stmt
                    .query_map(params![now, sql_limit(limit)], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, i64>(3)?,
                        ))
                    })
                    .map_err(sql)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sql)?
            };
            let lease_until = now.saturating_add(lease_ms);
            let mut claims = Vec::with_capacity(due.len());
            for (event_id, attempts, doc, retry_window_from) in due {
                let event: Event = from_doc("event", &doc)?;
                let attempt = attempts_of(attempts)?.checked_add(1).ok_or_else(|| {
                    StoreError::Corrupt("outbox attempt count out of range".into())
                })?;
                let lease = LeaseToken::generate();
                tx.prepare_cached(
                    "UPDATE outbox SET attempts = ?2, lease_token = ?3, lease_until = ?4
                     WHERE event_id = ?1",
                )
                .map_err(sql)?
                .execute(params![event_id, attempt, lease.0, lease_until])
                .map_err(sql)?;
                claims.push(OutboxClaim {
                    event,
                    attempt,
                    lease,
                    retry_window_from,
                });
            }
            Ok(claims)
        })
        .await
    }

    async fn complete_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        lease: &LeaseToken,
    ) -> StoreResult<bool> {
        let (merchant, id, lease) = (merchant.clone(), id.clone(), lease.clone());
        write(&self.conns, move |tx| {
            update_outbox_row(
                tx,
                "UPDATE outbox SET state = 'delivered', lease_token = NULL, lease_until = NULL
                 WHERE event_id = ?1 AND merchant_id = ?2 AND state = 'pending'
                   AND lease_token = ?3",
                params![id.as_str(), merchant.as_str(), lease.0],
            )
        })
        .await
    }

    async fn reschedule_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        lease: &LeaseToken,
        next_attempt_at: UnixMillis,
        error: &str,
    ) -> StoreResult<bool> {
        let (merchant, id, lease) = (merchant.clone(), id.clone(), lease.clone());
        let error = error.to_owned();
        write(&self.conns, move |tx| {
            update_outbox_row(
                tx,
                "UPDATE outbox SET next_attempt_at = ?4, last_error = ?5, lease_token = NULL,
                                   lease_until = NULL
                 WHERE event_id = ?1 AND merchant_id = ?2 AND state = 'pending'
                   AND lease_token = ?3",
                params![
                    id.as_str(),
                    merchant.as_str(),
                    lease.0,
                    next_attempt_at,
                    error
                ],
            )
        })
        .await
    }

    async fn dead_letter_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        lease: &LeaseToken,
        error: &str,
    ) -> StoreResult<bool> {
        let (merchant, id, lease) = (merchant.clone(), id.clone(), lease.clone());
        let error = error.to_owned();
        write(&self.conns, move |tx| {
            update_outbox_row(
                tx,
                "UPDATE outbox SET state = 'dead', last_error = ?4, lease_token = NULL,
                                   lease_until = NULL
                 WHERE event_id = ?1 AND merchant_id = ?2 AND state = 'pending'
                   AND lease_token = ?3",
                params![id.as_str(), merchant.as_str(), lease.0, error],
            )
        })
        .await
    }

    async fn resend_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        now: UnixMillis,
    ) -> StoreResult<bool> {
        let (merchant, id) = (merchant.clone(), id.clone());
        write(&self.conns, move |tx| {
            // A delivered or dead event becomes due now with no lease; attempts are
            // kept (they count deliveries tried, not rounds). An event still pending
            // keeps its lease, so a dispatcher working on it is not joined by a
            // second one; it only becomes due no later than now. Either way the
            // retry window starts again now.
            update_outbox_row(
                tx,
                "UPDATE outbox
                 SET next_attempt_at = CASE WHEN state = 'pending'
                                            THEN min(next_attempt_at, ?3) ELSE ?3 END,
                     lease_token = CASE WHEN state = 'pending' THEN lease_token END,
                     lease_until = CASE WHEN state = 'pending' THEN lease_until END,
                     state = 'pending',
                     retry_window_from = ?3
                 WHERE event_id = ?1 AND merchant_id = ?2",
                params![id.as_str(), merchant.as_str(), now],
            )
        })
        .await
    }
}

#[cfg(test)]
#[path = "payment_tests.rs"]
mod tests;
