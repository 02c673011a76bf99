//! `sesame ledger verify`: proves the whole book — every entry balanced, every
//! succeeded order posted exactly once (and nothing else posted as a payment), every
//! refund posting matched by a succeeded refund, and stored balances equal to the
//! sum of the postings.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::domain::MerchantId;
use crate::domain::ledger::{self, EntryKind};
use crate::domain::order::OrderStatus;
use crate::store::{DynStore, OrderFilter, StoreResult};

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub merchants: usize,
    pub entries: usize,
    pub succeeded_orders: usize,
    pub violations: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

pub async fn verify(store: &DynStore) -> StoreResult<Report> {
    let mut report = Report::default();
    let mut after: Option<MerchantId> = None;
    loop {
        let page = store.list_merchants(after.as_ref(), 200).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for merchant in &page {
            report.merchants += 1;
            verify_merchant(store, &merchant.id, &mut report).await?;
        }
    }
    Ok(report)
}

pub async fn verify_merchant(
    store: &DynStore,
    merchant: &MerchantId,
    report: &mut Report,
) -> StoreResult<()> {
    let entries = store.ledger_entries(merchant).await?;
    report.entries += entries.len();
    let mut sums: BTreeMap<(String, String), i128> = BTreeMap::new();
    let mut payments: HashMap<String, usize> = HashMap::new();
    for entry in &entries {
        if !ledger::balances(&entry.postings) {
            report
                .violations
                .push(format!("entry {} does not balance", entry.id));
        }
        if entry.kind == EntryKind::Payment {
            *payments.entry(entry.order_id.to_string()).or_default() += 1;
        }
        for posting in &entry.postings {
            *sums
                .entry((entry.currency.code().to_owned(), posting.account.clone()))
                .or_default() += i128::from(posting.amount);
        }
    }
    let succeeded = OrderFilter {
        status: Some(OrderStatus::Succeeded),
        ..OrderFilter::default()
    };
    let mut cursor = None;
    let mut seen_succeeded = std::collections::HashSet::new();
    loop {
        let page = store
            .list_orders(merchant, &succeeded, cursor.as_ref(), 500)
            .await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.id.clone());
        for order in &page {
            report.succeeded_orders += 1;
            seen_succeeded.insert(order.id.to_string());
            match payments.get(order.id.as_str()).copied().unwrap_or(0) {
                1 => {}
                n => report.violations.push(format!(
                    "succeeded order {} has {n} payment postings",
                    order.id
                )),
            }
            let refunded: i64 = store
                .refunds_of(&order.id)
                .await?
                .iter()
                .filter(|r| r.status == crate::domain::refund::RefundStatus::Succeeded)
                .map(|r| r.amount_minor)
                .sum();
            if refunded != order.refunded_minor {
                report.violations.push(format!(
                    "order {} says {} refunded but its refunds sum to {refunded}",
                    order.id, order.refunded_minor
                ));
            }
        }
    }
    for (order, count) in &payments {
        if !seen_succeeded.contains(order) {
            report.violations.push(format!(
                "order {order} has {count} payment postings but is not succeeded"
            ));
        }
    }
    let stored: BTreeMap<(String, String), i128> = store
        .balances(merchant)
        .await?
        .into_iter()
        .map(|b| {
            (
                (b.currency.code().to_owned(), b.account),
                i128::from(b.balance),
            )
        })
        .collect();
    let keys: std::collections::BTreeSet<_> = stored.keys().chain(sums.keys()).cloned().collect();
    for key in keys {
        let a = stored.get(&key).copied().unwrap_or(0);
        let b = sums.get(&key).copied().unwrap_or(0);
        if a != b {
            report.violations.push(format!(
                "merchant {merchant} {} {}: stored balance {a} but postings sum to {b}",
                key.0, key.1
            ));
        }
    }
    Ok(())
}
