//! Payments of the Redis store: orders, refunds, ledger, events and the outbox
//! (`trait PaymentStore`).
//!
//! Owns the payments keys (built in `keys`), the scripts that change them
//! (`lua/commit.lua` and the outbox scripts) and the cross-merchant scans. Must never:
//! write part of an [`OrderChange`] (the commit is ONE script over ONE merchant's
//! keys, with every check before its first write), touch two merchants' keys in one
//! command, or send a change it can already tell is invalid.
//!
//! # The commit
//!
//! Rust refuses with `Invalid`, before sending anything, a change whose refund,
//! entry or event belongs to another order or merchant, or whose entry does not
//! balance. The script then decides, in this order: dedupe key recorded, or entry id
//! already in the book -> `Duplicate`; stored version is not `expected_version` (0:
//! the order exists) -> `VersionConflict`; `order.version` does not follow
//! `expected_version` -> `Invalid` (after the version check, so a stale caller learns
//! it is stale); event id taken -> `Conflict`; the refund id is stored under another
//! order -> `Invalid`; a balance would leave the i64 range -> `Invalid`. Only then does it write, and no write after the first can fail.
//!
//! # Key layout (`<p>{m:<id>}` = the merchant's prefix and hash tag)
//!
//! Orders and refunds carry their merchant in their id, so every lookup by id finds
//! the merchant's partition without a global index.
//!
//! | key                                  | type   | holds                                   |
//! |--------------------------------------|--------|-----------------------------------------|
//! | `<p>{m:<id>}:orders`                 | hash   | order id -> order JSON                  |
//! | `<p>{m:<id>}:order-versions`         | hash   | order id -> version (compare-and-set)   |
//! | `<p>{m:<id>}:orders-by-created`      | zset   | order ids scored by `created_at`        |
//! | `<p>{m:<id>}:orders-due`             | zset   | order ids scored by `Order::due_at`     |
//! | `<p>{m:<id>}:orders-due-off`         | string | retire marker (see below)               |
//! | `<p>{m:<id>}:dedupe`                 | set    | dedupe keys of applied changes          |
//! | `<p>{m:<id>}:refunds`                | hash   | refund id -> refund JSON                |
//! | `<p>{m:<id>}:order-refunds:<order>`  | list   | the order's refund ids, creation order  |
//! | `<p>{m:<id>}:entries`                | hash   | ledger entry id -> entry JSON           |
//! | `<p>{m:<id>}:ledger`                 | list   | entry ids in posting order              |
//! | `<p>{m:<id>}:order-entries:<order>`  | list   | the order's entry ids, posting order    |
//! | `<p>{m:<id>}:balances`               | hash   | `<currency>\|<account>` -> minor units  |
//! | `<p>{m:<id>}:events`                 | hash   | event id -> event JSON                  |
//! | `<p>{m:<id>}:event-seq`              | string | last event sequence number (INCR)       |
//! | `<p>{m:<id>}:events-by-seq`          | zset   | event ids scored by sequence number     |
//! | `<p>{m:<id>}:outbox`                 | hash   | `<event id>:<field>`: delivery state (`state`, `attempts`, `next`, `lease`, `lease_until`, `error`, `since` = retry window start, absent until a resend) |
//! | `<p>{m:<id>}:outbox-due`             | zset   | pending event ids scored by when each may next be claimed |
//! | `<p>{m:<id>}:outbox-off`             | string | retire marker (see below)               |
//! | `<p>due-merchants`                   | set    | merchants that may have due orders      |
//! | `<p>outbox-merchants`                | set    | merchants that may have pending events  |
//!
//! `orders-by-created` lists newest first with `ZREVRANGE`: equal scores come in
//! reverse member order, and a merchant's order ids are fixed-length base32 whose
//! alphabet is in ASCII order, so the order is exactly (`created_at` desc, id desc).
//! A cursor is resolved to its rank inside the page script, so paging stays exact
//! while new orders arrive. The `created_at` window is applied by rank in the script;
//! the status filter is applied here, paging on until `limit` matches.
//!
//! A pending event stays in `outbox-due` while leased, scored by its lease expiry, so
//! "due and lease expired" is one range query and a claim moves the score forward in
//! the same atomic step: two claimers never hold a live lease on one event.
//!
//! # Cross-merchant scans and the global sets
//!
//! `orders_due` and `claim_due_events` must not scan every merchant, and a global
//! index cannot join a merchant's script (another cluster slot). So each writer that
//! may add a due order or a pending event first adds the merchant to the global set
//! (`SADD`, write-ahead, like the other global indexes), then runs the merchant's
//! script. A scan reads the set and runs one script per merchant. A merchant whose
//! zset is empty is retired lazily, and the retire must not lose a writer that added
//! the merchant just before:
//!
//! 1. the scan script, finding the zset empty, sets the merchant's off marker to a
//!    fresh token;
//! 2. the scan removes the merchant from the global set (`SREM`);
//! 3. `retire_check.lua` puts it back unless the zset is still empty AND the marker
//!    still holds the token.
//!
//! A writer's script deletes the marker when it adds to the zset, and when the
//! marker was there it adds the merchant to the global set again after the script.
//! Every `SREM` is followed by a check; a writer whose script ran before that check
//! is seen by it (zset not empty, or marker changed), and one whose script ran after
//! found the marker set and re-adds the merchant itself. Without crashes no interleaving
//! leaves a due order or pending event unlisted. A process dying exactly between a
//! retire's `SREM` and its check, or between a relisting writer's script and its
//! `SADD`, can leave the merchant unlisted until its next write (whose write-ahead
//! `SADD` lists it again); a relisting `SADD` that fails is returned as `Unavailable`
//! so the caller's retry repeats the write-ahead.
//!
//! Cost: a scan runs one script per listed merchant (merchants with open orders or
//! undelivered events), concurrently in small batches for `orders_due`.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use futures_util::future::try_join_all;
use rand::seq::SliceRandom;

use super::{RedisStore, from_json, to_json, utf8};
use crate::domain::event::{DeliveryState, DeliveryStatus, Event};
use crate::domain::ledger::{self, LedgerEntry};
use crate::domain::order::Order;
use crate::domain::refund::Refund;
use crate::domain::{EventId, MerchantId, OrderId, RefundId, UnixMillis};
use crate::store::{
    Balance, CommitOutcome, LeaseToken, OrderChange, OrderFilter, OutboxClaim, PaymentStore,
    StoreError, StoreResult,
};
use sesame_adapters::money::Currency;

/// Largest page read per script call (it also bounds Lua's `unpack`).
const PAGE_MAX: usize = 500;
/// `SSCAN COUNT` hint when reading a global set.
const SCAN_COUNT: usize = 500;
/// Merchant scripts `orders_due` runs concurrently.
const SCAN_FANOUT: usize = 32;
/// Times and scores beyond ±2^53 ms would lose precision as Redis scores.
const MAX_TIME: u64 = 1 << 53;

/// What the commit script answered.
enum CommitReply {
    Applied {
        relist_due: bool,
        relist_outbox: bool,
    },
    Duplicate,
    Conflict,
    InvalidVersion,
    EventExists,
    RefundOfAnotherOrder,
    Overflow,
    WrongType,
}

/// A global set of merchants with work to scan, and the merchant keys behind it.
#[derive(Clone, Copy)]
enum Work {
    DueOrders,
    Outbox,
}

fn time(what: &'static str, at: UnixMillis) -> StoreResult<UnixMillis> {
    if at.unsigned_abs() > MAX_TIME {
        return Err(StoreError::Invalid(what));
    }
    Ok(at)
}

/// When the order must be in the reconciler's due set (`Order::due_at`).
fn due_at(order: &Order) -> Option<UnixMillis> {
    order.due_at()
}

/// Checks what can be checked without the stored state, and returns the balance
/// deltas of the entry, one per `<currency>|<account>` field.
fn validate(change: &OrderChange, now: UnixMillis) -> StoreResult<Vec<(String, i64)>> {
    let order = &change.order;
    let merchant = &order.merchant_id;
    if order.id.merchant() != *merchant {
        return Err(StoreError::Invalid("order id names another merchant"));
    }
    time("order created_at is out of range", order.created_at)?;
    if let Some(at) = order.next_check_at {
        time("order next_check_at is out of range", at)?;
    }
    time("commit time is out of range", now)?;
    if let Some(refund) = &change.refund
        && (refund.id.merchant() != *merchant
            || refund.merchant_id != *merchant
            || refund.order_id != order.id)
    {
        return Err(StoreError::Invalid("refund belongs to another order"));
    }
    if let Some(event) = &change.event
        && event.merchant_id != *merchant
    {
        return Err(StoreError::Invalid("event belongs to another merchant"));
    }
    let Some(entry) = &change.entry else {
        return Ok(Vec::new());
    };
    if entry.merchant_id != *merchant || entry.order_id != order.id {
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
    // One delta per account, so the script's overflow check sees the whole change.
    let mut sums: BTreeMap<String, i128> = BTreeMap::new();
    for posting in &entry.postings {
        *sums
            .entry(format!("{}|{}", entry.currency.code(), posting.account))
            .or_default() += i128::from(posting.amount);
    }
    sums.into_iter()
        .map(|(field, sum)| {
            i64::try_from(sum)
                .map(|delta| (field, delta))
                .map_err(|_| StoreError::Invalid("ledger entry amounts overflow"))
        })
        .collect()
}

/// Splits an `{id, record, id, record, ...}` reply.
fn pairs(
    what: &'static str,
    reply: Vec<Option<Vec<u8>>>,
) -> StoreResult<Vec<(String, Option<Vec<u8>>)>> {
    if !reply.len().is_multiple_of(2) {
        return Err(StoreError::Corrupt(format!(
            "redis {what}: reply has an odd length"
        )));
    }
    let mut out = Vec::with_capacity(reply.len() / 2);
    let mut items = reply.into_iter();
    while let (Some(id), Some(record)) = (items.next(), items.next()) {
        let id = id.ok_or_else(|| StoreError::Corrupt(format!("redis {what}: nil id")))?;
        out.push((utf8(what, &id)?, record));
    }
    Ok(out)
}

fn required(what: &str, id: &str, record: Option<Vec<u8>>) -> StoreResult<Vec<u8>> {
    record.ok_or_else(|| StoreError::Corrupt(format!("{what} {id} is listed without its record")))
}

fn decode_order(id: &str, bytes: &[u8]) -> StoreResult<Order> {
    let order: Order = from_json("order", bytes)?;
    if order.id.as_str() != id {
        return Err(StoreError::Corrupt(format!(
            "order record under {id} names another order"
        )));
    }
    Ok(order)
}

fn decode_event(merchant: &MerchantId, id: &str, bytes: &[u8]) -> StoreResult<Event> {
    let event: Event = from_json("event", bytes)?;
    if event.id.as_str() != id || event.merchant_id != *merchant {
        return Err(StoreError::Corrupt(format!(
            "event record under {id} does not match its key"
        )));
    }
    Ok(event)
}

fn parse_number<T: std::str::FromStr>(what: &str, text: &str) -> StoreResult<T> {
    text.parse::<T>()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not a number")))
}

fn lease_prefix() -> String {
    LeaseToken::generate().0
}

impl RedisStore {
    fn work_keys(&self, work: Work, merchant: &MerchantId) -> (String, String, String) {
        match work {
            Work::DueOrders => (
                self.keys.due_merchants(),
                self.keys.orders_due(merchant),
                self.keys.orders_due_off(merchant),
            ),
            Work::Outbox => (
                self.keys.outbox_merchants(),
                self.keys.outbox_due(merchant),
                self.keys.outbox_off(merchant),
            ),
        }
    }

    /// Adds the merchant to the global sets of `works` (write-ahead or relisting).
    async fn list_merchant(&self, merchant: &MerchantId, works: &[Work]) -> StoreResult<()> {
        if works.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for &work in works {
            let (global, _, _) = self.work_keys(work, merchant);
            pipe.cmd("SADD").arg(global).arg(merchant.as_str()).ignore();
        }
        let mut conn = self.conn.clone();
        self.bounded("SADD work merchants", pipe.query_async::<()>(&mut conn))
            .await
    }

    /// Steps 2 and 3 of the retire protocol (module doc), after the scan script set
    /// the merchant's off marker to `token`.
    async fn retire(&self, work: Work, merchant: &MerchantId, token: &str) -> StoreResult<()> {
        let (global, zset, off) = self.work_keys(work, merchant);
        let mut conn = self.conn.clone();
        self.bounded(
            "SREM work merchants",
            redis::cmd("SREM")
                .arg(&global)
                .arg(merchant.as_str())
                .query_async::<()>(&mut conn),
        )
        .await?;
        let check = self
            .bounded(
                "retire_check",
                self.scripts
                    .retire_check
                    .key(zset)
                    .key(off)
                    .arg(token)
                    .invoke_async::<i64>(&mut conn),
            )
            .await;
        match check {
            Ok(0) => Ok(()),
            Ok(_) => self.list_merchant(merchant, &[work]).await,
            Err(error) => {
                // Unsure whether a writer relied on the entry just removed: put it
                // back (a spare entry is only retired again later).
                let _ = self.list_merchant(merchant, &[work]).await;
                Err(error)
            }
        }
    }

    /// Every merchant in a global set (SSCAN, so Redis is never blocked on it).
    async fn work_merchants(&self, work: Work) -> StoreResult<Vec<MerchantId>> {
        let global = match work {
            Work::DueOrders => self.keys.due_merchants(),
            Work::Outbox => self.keys.outbox_merchants(),
        };
        let mut conn = self.conn.clone();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .bounded(
                    "SSCAN work merchants",
                    redis::cmd("SSCAN")
                        .arg(&global)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .query_async(&mut conn),
                )
                .await?;
            for text in batch {
                let id = MerchantId::parse(&text).ok_or_else(|| {
                    StoreError::Corrupt("a work merchants set holds a non-id".to_owned())
                })?;
                if seen.insert(id.clone()) {
                    out.push(id);
                }
            }
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// The records a list names, in list order, paged.
    async fn listed_records(
        &self,
        what: &'static str,
        list: String,
        hash: String,
    ) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        loop {
            let start = out.len();
            let reply: Vec<Option<Vec<u8>>> = self
                .bounded(
                    what,
                    self.scripts
                        .list_records
                        .key(&list)
                        .key(&hash)
                        .arg(start)
                        .arg(start + PAGE_MAX - 1)
                        .invoke_async(&mut conn),
                )
                .await?;
            let page = pairs(what, reply)?;
            let full = page.len() == PAGE_MAX;
            for (id, record) in page {
                let record = required(what, &id, record)?;
                out.push((id, record));
            }
            if !full {
                return Ok(out);
            }
        }
    }

    async fn run_commit(
        &self,
        change: &OrderChange,
        deltas: &[(String, i64)],
        now: UnixMillis,
    ) -> StoreResult<CommitReply> {
        let order = &change.order;
        let merchant = &order.merchant_id;
        let keys = &self.keys;
        let follows = change.expected_version.checked_add(1) == Some(order.version);
        let order_json = to_json("order", order)?;
        let mut invocation = self.scripts.commit.prepare_invoke();
        invocation
            .key(keys.orders(merchant))
            .key(keys.order_versions(merchant))
            .key(keys.orders_by_created(merchant))
            .key(keys.orders_due(merchant))
            .key(keys.orders_due_off(merchant))
            .key(keys.dedupe(merchant))
            .key(keys.refunds(merchant))
            .key(keys.order_refunds(&order.id))
            .key(keys.entries(merchant))
            .key(keys.ledger(merchant))
            .key(keys.order_entries(&order.id))
            .key(keys.balances(merchant))
            .key(keys.events(merchant))
            .key(keys.event_seq(merchant))
            .key(keys.events_by_seq(merchant))
            .key(keys.outbox(merchant))
            .key(keys.outbox_due(merchant))
            .key(keys.outbox_off(merchant))
            .arg(order.id.as_str())
            .arg(change.expected_version)
            .arg(order.version)
            .arg(if follows { "1" } else { "0" })
            .arg(order_json)
            .arg(order.created_at)
            .arg(due_at(order).map(|at| at.to_string()).unwrap_or_default());
        match &change.dedupe_key {
            Some(key) => invocation.arg("1").arg(key.as_bytes()),
            None => invocation.arg("0").arg(""),
        };
        match &change.refund {
            Some(refund) => invocation
                .arg("1")
                .arg(refund.id.as_str())
                .arg(to_json("refund", refund)?),
            None => invocation.arg("0").arg("").arg(""),
        };
        match &change.entry {
            Some(entry) => invocation
                .arg("1")
                .arg(entry.id.as_bytes())
                .arg(to_json("ledger entry", entry)?),
            None => invocation.arg("0").arg("").arg(""),
        };
        match &change.event {
            Some(event) => invocation
                .arg("1")
                .arg(event.id.as_str())
                .arg(to_json("event", event)?),
            None => invocation.arg("0").arg("").arg(""),
        };
        invocation.arg(now).arg(deltas.len());
        for (field, delta) in deltas {
            invocation.arg(field.as_bytes()).arg(*delta);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .bounded("commit", invocation.invoke_async(&mut conn))
            .await?;
        let tags: Vec<&str> = reply.iter().map(String::as_str).collect();
        Ok(match tags.as_slice() {
            ["applied", due, outbox] => CommitReply::Applied {
                relist_due: *due == "1",
                relist_outbox: *outbox == "1",
            },
            ["duplicate"] => CommitReply::Duplicate,
            ["conflict"] => CommitReply::Conflict,
            ["invalid_version"] => CommitReply::InvalidVersion,
            ["event_exists"] => CommitReply::EventExists,
            ["refund_of_another_order"] => CommitReply::RefundOfAnotherOrder,
            ["overflow"] => CommitReply::Overflow,
            ["wrong_type"] => CommitReply::WrongType,
            _ => {
                return Err(StoreError::Corrupt(
                    "commit script gave an unknown answer".to_owned(),
                ));
            }
        })
    }

    /// One page of a merchant's due orders, or `None` when the script started
    /// retiring the merchant.
    async fn due_orders_of(
        &self,
        merchant: &MerchantId,
        now: UnixMillis,
        offset: usize,
        count: usize,
        retire_token: &str,
    ) -> StoreResult<Option<Vec<Order>>> {
        let mut conn = self.conn.clone();
        let reply: Vec<Option<Vec<u8>>> = self
            .bounded(
                "orders_due",
                self.scripts
                    .orders_due
                    .key(self.keys.orders_due(merchant))
                    .key(self.keys.orders(merchant))
                    .key(self.keys.orders_due_off(merchant))
                    .arg(now)
                    .arg(offset)
                    .arg(count)
                    .arg(retire_token)
                    .invoke_async(&mut conn),
            )
            .await?;
        let mut items = reply.into_iter();
        match items.next().flatten().as_deref() {
            Some(b"retire") => Ok(None),
            Some(b"due") => pairs("orders_due", items.collect())?
                .into_iter()
                .map(|(id, record)| decode_order(&id, &required("due order", &id, record)?))
                .collect::<StoreResult<Vec<_>>>()
                .map(Some),
            _ => Err(StoreError::Corrupt(
                "orders_due script gave an unknown answer".to_owned(),
            )),
        }
    }

    /// Every due order of one merchant up to `limit`; `None` when retiring it.
    async fn all_due_orders_of(
        &self,
        merchant: &MerchantId,
        now: UnixMillis,
        limit: usize,
        retire_token: &str,
    ) -> StoreResult<Option<Vec<Order>>> {
        let mut out = Vec::new();
        loop {
            let count = (limit - out.len()).min(PAGE_MAX);
            let Some(page) = self
                .due_orders_of(merchant, now, out.len(), count, retire_token)
                .await?
            else {
                return Ok(if out.is_empty() { None } else { Some(out) });
            };
            let full = page.len() == count;
            out.extend(page);
            if !full || out.len() == limit {
                return Ok(Some(out));
            }
        }
    }

    /// Leases up to `count` of one merchant's claimable events; `None` when the
    /// script started retiring the merchant.
    async fn claim_of(
        &self,
        merchant: &MerchantId,
        now: UnixMillis,
        lease_until: UnixMillis,
        count: usize,
        retire_token: &str,
    ) -> StoreResult<Option<Vec<OutboxClaim>>> {
        let mut conn = self.conn.clone();
        let reply: Vec<Vec<u8>> = self
            .bounded(
                "claim_events",
                self.scripts
                    .claim_events
                    .key(self.keys.outbox_due(merchant))
                    .key(self.keys.outbox(merchant))
                    .key(self.keys.events(merchant))
                    .key(self.keys.outbox_off(merchant))
                    .arg(now)
                    .arg(lease_until)
                    .arg(count)
                    .arg(lease_prefix())
                    .arg(retire_token)
                    .invoke_async(&mut conn),
            )
            .await?;
        let Some((tag, rest)) = reply.split_first() else {
            return Err(StoreError::Corrupt(
                "claim_events script gave an empty answer".to_owned(),
            ));
        };
        match tag.as_slice() {
            b"retire" => return Ok(None),
            b"claimed" if rest.len().is_multiple_of(5) => {}
            b"wrong_type" => {
                return Err(StoreError::Corrupt(format!(
                    "outbox keys of {merchant} hold the wrong kind of value"
                )));
            }
            _ => {
                return Err(StoreError::Corrupt(
                    "claim_events script gave an unknown answer".to_owned(),
                ));
            }
        }
        rest.chunks_exact(5)
            .map(|claim| {
                let id = utf8("claim_events", &claim[0])?;
                let event = decode_event(merchant, &id, &claim[1])?;
                let attempt = parse_number("outbox attempt count", &utf8("claim", &claim[2])?)?;
                let lease = LeaseToken(utf8("claim_events", &claim[3])?);
                let since = utf8("claim_events", &claim[4])?;
                let retry_window_from = if since.is_empty() {
                    event.created_at
                } else {
                    parse_number("outbox retry window start", &since)?
                };
                Ok(OutboxClaim {
                    event,
                    attempt,
                    lease,
                    retry_window_from,
                })
            })
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }

    /// Delivered or dead, while `lease` is live.
    async fn end_claim(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        lease: &LeaseToken,
        state: &str,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let done: i64 = self
            .bounded(
                "event_settle",
                self.scripts
                    .event_settle
                    .key(self.keys.outbox(merchant))
                    .key(self.keys.outbox_due(merchant))
                    .arg(id.as_str())
                    .arg(lease.0.as_str())
                    .arg(state)
                    .arg(if error.is_some() { "1" } else { "0" })
                    .arg(error.unwrap_or_default().as_bytes())
                    .invoke_async(&mut conn),
            )
            .await?;
        lease_answer(merchant, done)
    }
}

fn lease_answer(merchant: &MerchantId, answer: i64) -> StoreResult<bool> {
    match answer {
        1 => Ok(true),
        0 => Ok(false),
        _ => Err(StoreError::Corrupt(format!(
            "outbox keys of {merchant} hold the wrong kind of value"
        ))),
    }
}

#[async_trait]
impl PaymentStore for RedisStore {
    async fn commit(&self, change: &OrderChange, now: UnixMillis) -> StoreResult<CommitOutcome> {
        self.guard_durable("commit")?;
        let deltas = validate(change, now)?;
        let merchant = &change.order.merchant_id;
        let mut ahead = Vec::new();
        if due_at(&change.order).is_some() {
            ahead.push(Work::DueOrders);
        }
        if change.event.is_some() {
            ahead.push(Work::Outbox);
        }
        // Write-ahead: the global sets first (module doc).
        self.list_merchant(merchant, &ahead).await?;
        match self.run_commit(change, &deltas, now).await? {
            CommitReply::Applied {
                relist_due,
                relist_outbox,
            } => {
                let mut again = Vec::new();
                if relist_due {
                    again.push(Work::DueOrders);
                }
                if relist_outbox {
                    again.push(Work::Outbox);
                }
                // A retire ran since the write-ahead: list the merchant again. If this
                // fails the change is written but the caller sees `Unavailable`, and
                // its retry repeats the write-ahead.
                self.list_merchant(merchant, &again).await?;
                Ok(CommitOutcome::Applied)
            }
            CommitReply::Duplicate => Ok(CommitOutcome::Duplicate),
            CommitReply::Conflict => Ok(CommitOutcome::VersionConflict),
            CommitReply::InvalidVersion => Err(StoreError::Invalid(
                "order version must be expected_version + 1",
            )),
            CommitReply::EventExists => Err(StoreError::Conflict("event id exists")),
            CommitReply::RefundOfAnotherOrder => {
                Err(StoreError::Invalid("refund id belongs to another order"))
            }
            CommitReply::Overflow => Err(StoreError::Invalid("account balance would overflow")),
            CommitReply::WrongType => Err(StoreError::Corrupt(format!(
                "payments keys of {merchant} hold the wrong kind of value"
            ))),
        }
    }

    async fn order(&self, id: &OrderId) -> StoreResult<Option<Order>> {
        let mut conn = self.conn.clone();
        let record: Option<Vec<u8>> = self
            .bounded(
                "HGET order",
                redis::cmd("HGET")
                    .arg(self.keys.orders(&id.merchant()))
                    .arg(id.as_str())
                    .query_async(&mut conn),
            )
            .await?;
        record
            .map(|bytes| decode_order(id.as_str(), &bytes))
            .transpose()
    }

    async fn list_orders(
        &self,
        merchant: &MerchantId,
        filter: &OrderFilter,
        after: Option<&OrderId>,
        limit: usize,
    ) -> StoreResult<Vec<Order>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        if let Some(from) = filter.created_from {
            time("created_from is out of range", from)?;
        }
        if let Some(to) = filter.created_to {
            time("created_to is out of range", to)?;
        }
        // With a status filter most of a page may not match: read full pages.
        let batch = if filter.status.is_some() {
            PAGE_MAX
        } else {
            limit.min(PAGE_MAX)
        };
        let from = filter
            .created_from
            .map(|t| t.to_string())
            .unwrap_or_default();
        let to = filter.created_to.map(|t| t.to_string()).unwrap_or_default();
        let mut cursor = after.map(|id| id.as_str().to_owned()).unwrap_or_default();
        let mut conn = self.conn.clone();
        loop {
            let reply: Vec<Option<Vec<u8>>> = self
                .bounded(
                    "orders page",
                    self.scripts
                        .orders_page
                        .key(self.keys.orders_by_created(merchant))
                        .key(self.keys.orders(merchant))
                        .arg(cursor.as_str())
                        .arg(from.as_str())
                        .arg(to.as_str())
                        .arg(batch)
                        .invoke_async(&mut conn),
                )
                .await?;
            let page = pairs("orders page", reply)?;
            let full = page.len() == batch;
            for (id, record) in page {
                let order = decode_order(&id, &required("order", &id, record)?)?;
                cursor = id;
                if filter.status.is_none_or(|status| status == order.status) {
                    out.push(order);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if !full {
                return Ok(out);
            }
        }
    }

    async fn refund(&self, id: &RefundId) -> StoreResult<Option<Refund>> {
        let mut conn = self.conn.clone();
        let record: Option<Vec<u8>> = self
            .bounded(
                "HGET refund",
                redis::cmd("HGET")
                    .arg(self.keys.refunds(&id.merchant()))
                    .arg(id.as_str())
                    .query_async(&mut conn),
            )
            .await?;
        let Some(bytes) = record else {
            return Ok(None);
        };
        let refund: Refund = from_json("refund", &bytes)?;
        if refund.id != *id {
            return Err(StoreError::Corrupt(format!(
                "refund record under {id} names another refund"
            )));
        }
        Ok(Some(refund))
    }

    async fn refunds_of(&self, order: &OrderId) -> StoreResult<Vec<Refund>> {
        let records = self
            .listed_records(
                "refunds of order",
                self.keys.order_refunds(order),
                self.keys.refunds(&order.merchant()),
            )
            .await?;
        records
            .into_iter()
            .map(|(id, bytes)| {
                let refund: Refund = from_json("refund", &bytes)?;
                if refund.id.as_str() != id || refund.order_id != *order {
                    return Err(StoreError::Corrupt(format!(
                        "refund {id} is listed under another order"
                    )));
                }
                Ok(refund)
            })
            .collect()
    }

    async fn entries_of(&self, order: &OrderId) -> StoreResult<Vec<LedgerEntry>> {
        let records = self
            .listed_records(
                "ledger entries of order",
                self.keys.order_entries(order),
                self.keys.entries(&order.merchant()),
            )
            .await?;
        records
            .into_iter()
            .map(|(id, bytes)| {
                let entry: LedgerEntry = from_json("ledger entry", &bytes)?;
                if entry.id != id || entry.order_id != *order {
                    return Err(StoreError::Corrupt(
                        "a ledger entry is listed under another order".to_owned(),
                    ));
                }
                Ok(entry)
            })
            .collect()
    }

    async fn ledger_entries(&self, merchant: &MerchantId) -> StoreResult<Vec<LedgerEntry>> {
        let records = self
            .listed_records(
                "ledger entries",
                self.keys.ledger(merchant),
                self.keys.entries(merchant),
            )
            .await?;
        records
            .into_iter()
            .map(|(id, bytes)| {
                let entry: LedgerEntry = from_json("ledger entry", &bytes)?;
                if entry.id != id || entry.merchant_id != *merchant {
                    return Err(StoreError::Corrupt(
                        "a ledger entry is listed under another merchant".to_owned(),
                    ));
                }
                Ok(entry)
            })
            .collect()
    }

    async fn balances(&self, merchant: &MerchantId) -> StoreResult<Vec<Balance>> {
        let mut conn = self.conn.clone();
        let fields: Vec<(Vec<u8>, Vec<u8>)> = self
            .bounded(
                "HGETALL balances",
                redis::cmd("HGETALL")
                    .arg(self.keys.balances(merchant))
                    .query_async(&mut conn),
            )
            .await?;
        let mut out = fields
            .into_iter()
            .map(|(field, value)| {
                let field = utf8("balances", &field)?;
                let (code, account) = field.split_once('|').ok_or_else(|| {
                    StoreError::Corrupt("a balance field lacks its currency".to_owned())
                })?;
                let currency = Currency::parse(code).map_err(|_| {
                    StoreError::Corrupt("a balance field names an unknown currency".to_owned())
                })?;
                Ok(Balance {
                    currency,
                    account: account.to_owned(),
                    balance: parse_number("a balance", &utf8("balances", &value)?)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by(|a, b| {
            (a.currency.code(), a.account.as_str()).cmp(&(b.currency.code(), b.account.as_str()))
        });
        Ok(out)
    }

    async fn orders_due(&self, now: UnixMillis, limit: usize) -> StoreResult<Vec<Order>> {
        let mut out: Vec<Order> = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        time("now is out of range", now)?;
        let merchants = self.work_merchants(Work::DueOrders).await?;
        let token = lease_prefix();
        for chunk in merchants.chunks(SCAN_FANOUT) {
            let pages = try_join_all(
                chunk
                    .iter()
                    .map(|merchant| self.all_due_orders_of(merchant, now, limit, &token)),
            )
            .await?;
            for (merchant, page) in chunk.iter().zip(pages) {
                match page {
                    Some(orders) => out.extend(orders),
                    None => self.retire(Work::DueOrders, merchant, &token).await?,
                }
            }
            out.sort_by(|a, b| {
                (a.next_check_at, a.id.as_str()).cmp(&(b.next_check_at, b.id.as_str()))
            });
            out.truncate(limit);
        }
        Ok(out)
    }

    async fn events_after(
        &self,
        merchant: &MerchantId,
        after: Option<&EventId>,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        let mut out = Vec::new();
        let mut cursor = after.map(|id| id.as_str().to_owned()).unwrap_or_default();
        let mut conn = self.conn.clone();
        while out.len() < limit {
            let count = (limit - out.len()).min(PAGE_MAX);
            let reply: Vec<Option<Vec<u8>>> = self
                .bounded(
                    "events page",
                    self.scripts
                        .events_page
                        .key(self.keys.events_by_seq(merchant))
                        .key(self.keys.events(merchant))
                        .arg(cursor.as_str())
                        .arg(count)
                        .invoke_async(&mut conn),
                )
                .await?;
            let page = pairs("events page", reply)?;
            let full = page.len() == count;
            for (id, record) in page {
                out.push(decode_event(
                    merchant,
                    &id,
                    &required("event", &id, record)?,
                )?);
                cursor = id;
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }

    async fn event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
    ) -> StoreResult<Option<(Event, DeliveryStatus)>> {
        let field = |name: &str| format!("{id}:{name}");
        let mut pipe = redis::pipe();
        pipe.cmd("HGET")
            .arg(self.keys.events(merchant))
            .arg(id.as_str())
            .cmd("HMGET")
            .arg(self.keys.outbox(merchant))
            .arg(field("state"))
            .arg(field("attempts"))
            .arg(field("next"))
            .arg(field("error"));
        let mut conn = self.conn.clone();
        let (record, delivery): (Option<Vec<u8>>, Vec<Option<String>>) = self
            .bounded("read event", pipe.query_async(&mut conn))
            .await?;
        let Some(bytes) = record else {
            return Ok(None);
        };
        let event = decode_event(merchant, id.as_str(), &bytes)?;
        let [state, attempts, next, error] = <[Option<String>; 4]>::try_from(delivery)
            .map_err(|_| StoreError::Corrupt("redis read event: short reply".to_owned()))?;
        let state = match state.as_deref() {
            Some("pending") => DeliveryState::Pending,
            Some("delivered") => DeliveryState::Delivered,
            Some("dead") => DeliveryState::Dead,
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "event {id} has no valid delivery state"
                )));
            }
        };
        let attempts = parse_number("outbox attempt count", attempts.as_deref().unwrap_or(""))?;
        let next_attempt_at = match (state, next) {
            (DeliveryState::Pending, Some(next)) => Some(parse_number("outbox due time", &next)?),
            (DeliveryState::Pending, None) => {
                return Err(StoreError::Corrupt(format!(
                    "pending event {id} has no due time"
                )));
            }
            _ => None,
        };
        Ok(Some((
            event,
            DeliveryStatus {
                state,
                attempts,
                next_attempt_at,
                last_error: error,
            },
        )))
    }

    async fn claim_due_events(
        &self,
        now: UnixMillis,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<OutboxClaim>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        if lease_ms <= 0 {
            return Err(StoreError::Invalid("lease_ms must be positive"));
        }
        time("now is out of range", now)?;
        let lease_until = time("lease expiry is out of range", now.saturating_add(lease_ms))?;
        let mut merchants = self.work_merchants(Work::Outbox).await?;
        // A random order per call, so one merchant's backlog cannot starve the others.
        merchants.shuffle(&mut rand::rng());
        let token = lease_prefix();
        for merchant in &merchants {
            loop {
                let count = (limit - out.len()).min(PAGE_MAX);
                let Some(claims) = self
                    .claim_of(merchant, now, lease_until, count, &token)
                    .await?
                else {
                    self.retire(Work::Outbox, merchant, &token).await?;
                    break;
                };
                let full = claims.len() == count;
                out.extend(claims);
                if out.len() == limit {
                    return Ok(out);
                }
                if !full {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn complete_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        lease: &LeaseToken,
    ) -> StoreResult<bool> {
        self.end_claim(merchant, id, lease, "delivered", None).await
    }

    async fn reschedule_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        lease: &LeaseToken,
        next_attempt_at: UnixMillis,
        error: &str,
    ) -> StoreResult<bool> {
        time("next_attempt_at is out of range", next_attempt_at)?;
        let mut conn = self.conn.clone();
        let done: i64 = self
            .bounded(
                "event_reschedule",
                self.scripts
                    .event_reschedule
                    .key(self.keys.outbox(merchant))
                    .key(self.keys.outbox_due(merchant))
                    .arg(id.as_str())
                    .arg(lease.0.as_str())
                    .arg(next_attempt_at)
                    .arg(error.as_bytes())
                    .invoke_async(&mut conn),
            )
            .await?;
        lease_answer(merchant, done)
    }

    async fn dead_letter_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        lease: &LeaseToken,
        error: &str,
    ) -> StoreResult<bool> {
        self.guard_durable("dead_letter_event")?;
        self.end_claim(merchant, id, lease, "dead", Some(error))
            .await
    }

    async fn resend_event(
        &self,
        merchant: &MerchantId,
        id: &EventId,
        now: UnixMillis,
    ) -> StoreResult<bool> {
        // The merchant is told the resend is scheduled: it must not be lost.
        self.guard_durable("resend_event")?;
        time("now is out of range", now)?;
        // Write-ahead, as for a commit with an event.
        self.list_merchant(merchant, &[Work::Outbox]).await?;
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .bounded(
                "event_resend",
                self.scripts
                    .event_resend
                    .key(self.keys.events(merchant))
                    .key(self.keys.outbox(merchant))
                    .key(self.keys.outbox_due(merchant))
                    .key(self.keys.outbox_off(merchant))
                    .arg(id.as_str())
                    .arg(now)
                    .invoke_async(&mut conn),
            )
            .await?;
        let tags: Vec<&str> = reply.iter().map(String::as_str).collect();
        match tags.as_slice() {
            ["missing"] => Ok(false),
            ["ok", relist] => {
                if *relist == "1" {
                    self.list_merchant(merchant, &[Work::Outbox]).await?;
                }
                Ok(true)
            }
            ["wrong_type"] => Err(StoreError::Corrupt(format!(
                "outbox keys of {merchant} hold the wrong kind of value"
            ))),
            _ => Err(StoreError::Corrupt(
                "event_resend script gave an unknown answer".to_owned(),
            )),
        }
    }
}
