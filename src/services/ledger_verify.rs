//! `sesame ledger verify`: proves the whole book against the orders and refunds it
//! records, merchant by merchant:
//!
//! - every entry balances, and is in its order's currency;
//! - every succeeded order has exactly one payment entry, which debits the wallet's
//!   clearing account with the order's amount and credits `fee_income` with the
//!   order's `fee_minor`; nothing else has a payment entry;
//! - every succeeded refund has exactly one refund entry (id `<order>:refund:<refund>`)
//!   that credits the clearing account with the refund's amount, and every refund
//!   entry belongs to a succeeded refund of a succeeded order;
//! - an order's `refunded_minor` is the sum of its succeeded refunds; the fee the
//!   refunds reversed is at most the fee taken, and all of it once the order is
//!   refunded in full;
//! - stored balances equal the sum of the postings.
//!
//! Safe beside a running gateway: a merchant whose book changed between the reads of
//! one pass is checked again (up to three passes), and only a violation seen on every
//! pass is reported.
//!
//! Must never: change the store (it only reads), or stop at the first violation.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::domain::ledger::{self, EntryKind, LedgerEntry};
use crate::domain::order::{Order, OrderStatus};
use crate::domain::refund::RefundStatus;
use crate::domain::{MerchantId, OrderId};
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

    fn violation(&mut self, text: String) {
        self.violations.push(text);
    }
}

/// Passes over a merchant with violations before they are reported.
const PASSES: usize = 3;

pub async fn verify(store: &DynStore) -> StoreResult<Report> {
    let mut report = Report::default();
    let mut after: Option<MerchantId> = None;
    loop {
        let page = store.list_merchants(after.as_ref(), 200).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for merchant in &page {
            report.merchants += 1;
            let pass = settled_pass(store, &merchant.id).await?;
            report.entries += pass.entries;
            report.succeeded_orders += pass.succeeded_orders;
            report.violations.extend(pass.violations);
        }
    }
    Ok(report)
}

/// One merchant's check, repeated while it finds violations (at most [`PASSES`]).
/// Entries, orders and balances are separate reads: a payment posted between them (the
/// gateway running) can look like a violation for one pass, while a violation of the
/// stored book is still there on the next. So the merchant is clean when any pass is,
/// else its last pass is reported.
async fn settled_pass(store: &DynStore, merchant: &MerchantId) -> StoreResult<Report> {
    let mut pass = Report::default();
    for _ in 0..PASSES {
        pass = Report::default();
        verify_merchant(store, merchant, &mut pass).await?;
        if pass.is_clean() {
            break;
        }
    }
    Ok(pass)
}

/// The signed sum a kind of account receives in an entry (debits > 0, credits < 0).
fn posted_to(entry: &LedgerEntry, account: impl Fn(&str) -> bool) -> i128 {
    entry
        .postings
        .iter()
        .filter(|p| account(&p.account))
        .map(|p| i128::from(p.amount))
        .sum()
}

fn is_clearing(account: &str) -> bool {
    account.starts_with("wallet_clearing:")
}

fn is_fee(account: &str) -> bool {
    account == ledger::FEE_INCOME
}

pub async fn verify_merchant(
    store: &DynStore,
    merchant: &MerchantId,
    report: &mut Report,
) -> StoreResult<()> {
    let entries = store.ledger_entries(merchant).await?;
    report.entries += entries.len();
    let mut sums: BTreeMap<(String, String), i128> = BTreeMap::new();
    let mut by_order: HashMap<OrderId, Vec<&LedgerEntry>> = HashMap::new();
    for entry in &entries {
        if !ledger::balances(&entry.postings) {
            report.violation(format!("entry {} does not balance", entry.id));
        }
        by_order
            .entry(entry.order_id.clone())
            .or_default()
            .push(entry);
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
    let mut seen_succeeded = HashSet::new();
    loop {
        let page = store
            .list_orders(merchant, &succeeded, cursor.as_ref(), 500)
            .await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.id.clone());
        for order in &page {
            report.succeeded_orders += 1;
            seen_succeeded.insert(order.id.clone());
            let posted = by_order.get(&order.id).map(Vec::as_slice).unwrap_or(&[]);
            verify_order(store, order, posted, report).await?;
        }
    }
    for (order, posted) in &by_order {
        if seen_succeeded.contains(order) {
            continue;
        }
        for kind in [EntryKind::Payment, EntryKind::Refund] {
            let count = posted.iter().filter(|e| e.kind == kind).count();
            if count > 0 {
                report.violation(format!(
                    "order {order} has {count} {} postings but is not succeeded",
                    kind_name(kind)
                ));
            }
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
            report.violation(format!(
                "merchant {merchant} {} {}: stored balance {a} but postings sum to {b}",
                key.0, key.1
            ));
        }
    }
    Ok(())
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Payment => "payment",
        EntryKind::Refund => "refund",
    }
}

/// The checks of one succeeded order against its entries and refunds.
async fn verify_order(
    store: &DynStore,
    order: &Order,
    posted: &[&LedgerEntry],
    report: &mut Report,
) -> StoreResult<()> {
    let id = &order.id;
    for entry in posted {
        if entry.currency != order.currency {
            report.violation(format!(
                "entry {} is in {} but order {id} is in {}",
                entry.id, entry.currency, order.currency
            ));
        }
    }
    let payments: Vec<_> = posted
        .iter()
        .filter(|e| e.kind == EntryKind::Payment)
        .collect();
    match payments.as_slice() {
        [payment] => {
            let captured = posted_to(payment, is_clearing);
            if captured != i128::from(order.amount_minor) {
                report.violation(format!(
                    "order {id} is for {} but its payment entry captures {captured}",
                    order.amount_minor
                ));
            }
            let fee = -posted_to(payment, is_fee);
            if fee != i128::from(order.fee_minor) {
                report.violation(format!(
                    "order {id} took a fee of {} but its payment entry credits {fee}",
                    order.fee_minor
                ));
            }
        }
        other => report.violation(format!(
            "succeeded order {id} has {} payment postings",
            other.len()
        )),
    }
    let refunds = store.refunds_of(id).await?;
    let mut refund_entries: HashMap<&str, &LedgerEntry> = posted
        .iter()
        .filter(|e| e.kind == EntryKind::Refund)
        .map(|e| (e.id.as_str(), *e))
        .collect();
    let mut refunded = 0i64;
    for refund in refunds
        .iter()
        .filter(|r| r.status == RefundStatus::Succeeded)
    {
        refunded += refund.amount_minor;
        let entry_id = LedgerEntry::refund_id(id, &refund.id);
        let Some(entry) = refund_entries.remove(entry_id.as_str()) else {
            report.violation(format!(
                "succeeded refund {} of order {id} has no refund entry",
                refund.id
            ));
            continue;
        };
        let returned = -posted_to(entry, is_clearing);
        if returned != i128::from(refund.amount_minor) {
            report.violation(format!(
                "refund {} is for {} but its entry returns {returned}",
                refund.id, refund.amount_minor
            ));
        }
    }
    // Entry ids are unique, so what is left has no succeeded refund behind it.
    for entry in refund_entries.values() {
        report.violation(format!(
            "refund entry {} of order {id} matches no succeeded refund",
            entry.id
        ));
    }
    if refunded != order.refunded_minor {
        report.violation(format!(
            "order {id} says {} refunded but its refunds sum to {refunded}",
            order.refunded_minor
        ));
    }
    let fee_reversed: i128 = posted
        .iter()
        .filter(|e| e.kind == EntryKind::Refund)
        .map(|e| posted_to(e, is_fee))
        .sum();
    let fee = i128::from(order.fee_minor);
    if fee_reversed > fee || fee_reversed < 0 {
        report.violation(format!(
            "order {id}: refunds reversed a fee of {fee_reversed} out of {fee}"
        ));
    } else if order.refunded_minor == order.amount_minor && fee_reversed != fee {
        report.violation(format!(
            "order {id} is refunded in full but its refunds reversed a fee of {fee_reversed}, not {fee}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sesame_adapters::money::Currency;

    use super::*;
    use crate::domain::ledger::{LedgerEntry, Posting};
    use crate::domain::order::OrderMode;
    use crate::domain::refund::Refund;
    use crate::domain::{Merchant, MerchantStatus, RefundId};
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{CommitOutcome, OrderChange};

    const T0: i64 = 1_700_000_000_000;
    const AMOUNT: i64 = 10_000;
    const FEE: i64 = 150;

    struct Book {
        store: DynStore,
        dir: tempfile::TempDir,
        merchant: MerchantId,
    }

    async fn book() -> Book {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
        let merchant = MerchantId::generate();
        let record = Merchant {
            id: merchant.clone(),
            name: "Cafe".into(),
            name_zh: None,
            name_pt: None,
            city: "MACAU".into(),
            country: "MO".into(),
            mcc: "5812".into(),
            currency: Currency::Mop,
            notify_url: None,
            webhook_secret: "whsec_unit".into(),
            fees_bps: Default::default(),
            status: MerchantStatus::Active,
            created_at: T0,
        };
        let key = crate::domain::ApiKey::generate();
        store
            .create_merchant(&crate::store::MerchantBundle {
                first_plate: crate::domain::Plate {
                    id: crate::domain::PlateId::generate(),
                    merchant_id: merchant.clone(),
                    label: "Counter".into(),
                    fixed_amount_minor: None,
                    format: crate::domain::PayloadFormat::Url,
                    created_at: T0,
                },
                api_key: key.record(T0),
                merchant: record,
            })
            .await
            .unwrap();
        Book {
            store,
            dir,
            merchant,
        }
    }

    fn paid_order(merchant: &MerchantId) -> Order {
        Order {
            id: OrderId::generate_for(merchant),
            merchant_id: merchant.clone(),
            plate_id: None,
            amount_minor: AMOUNT,
            currency: Currency::Mop,
            description: "Dinner".into(),
            reference: None,
            mode: OrderMode::DynamicQr,
            brand: Some("mpay".into()),
            adapter: Some("alipay_plus".into()),
            status: OrderStatus::Succeeded,
            paid_late: false,
            wallet_ref: Some("w-1".into()),
            pay_action: None,
            fee_bps: 150,
            fee_minor: FEE,
            refunded_minor: 0,
            refund_pending_minor: 0,
            review: None,
            expires_at: T0 + 900_000,
            next_check_at: None,
            paid_at: Some(T0),
            created_at: T0,
            updated_at: T0,
            version: 1,
        }
    }

    fn entry(order: &Order, id: String, kind: EntryKind, postings: Vec<Posting>) -> LedgerEntry {
        LedgerEntry {
            id,
            merchant_id: order.merchant_id.clone(),
            currency: order.currency,
            order_id: order.id.clone(),
            kind,
            postings,
            created_at: T0,
        }
    }

    fn payment(order: &Order, amount: i64, fee: i64) -> LedgerEntry {
        entry(
            order,
            LedgerEntry::payment_id(&order.id),
            EntryKind::Payment,
            ledger::payment_entry("alipay_plus", amount, fee).unwrap(),
        )
    }

    /// Commits `order` (inserted or replacing the stored version) with an entry.
    async fn commit(
        book: &Book,
        order: &Order,
        refund: Option<Refund>,
        entry: Option<LedgerEntry>,
    ) {
        let stored = book.store.order(&order.id).await.unwrap();
        let mut next = order.clone();
        next.version = stored.as_ref().map_or(1, |o| o.version + 1);
        let change = OrderChange {
            expected_version: next.version - 1,
            order: next,
            dedupe_key: None,
            refund,
            entry,
            event: None,
        };
        assert_eq!(
            book.store.commit(&change, T0).await.unwrap(),
            CommitOutcome::Applied
        );
    }

    fn refund_of(order: &Order, amount: i64, status: RefundStatus) -> Refund {
        Refund {
            id: RefundId::generate_for(&order.merchant_id),
            order_id: order.id.clone(),
            merchant_id: order.merchant_id.clone(),
            amount_minor: amount,
            currency: order.currency,
            reason: None,
            status,
            wallet_refund_ref: None,
            failure: None,
            review: None,
            created_at: T0,
            updated_at: T0,
        }
    }

    /// Posts a succeeded refund of `amount` the way the service does.
    async fn refund(book: &Book, order: &mut Order, amount: i64) -> Refund {
        let done = refund_of(order, amount, RefundStatus::Succeeded);
        let postings = ledger::refund_entry(
            "alipay_plus",
            order.amount_minor,
            order.fee_minor,
            order.refunded_minor,
            amount,
        )
        .unwrap();
        order.refunded_minor += amount;
        let e = entry(
            order,
            LedgerEntry::refund_id(&order.id, &done.id),
            EntryKind::Refund,
            postings,
        );
        commit(book, order, Some(done.clone()), Some(e)).await;
        done
    }

    async fn violations(book: &Book) -> Vec<String> {
        verify(&book.store).await.unwrap().violations
    }

    async fn assert_one_violation(book: &Book, containing: &str) {
        let found = violations(book).await;
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains(containing), "{found:?}");
    }

    #[tokio::test]
    async fn a_book_refunded_in_parts_is_clean_and_reverses_exactly_the_fee() {
        let book = book().await;
        let mut order = paid_order(&book.merchant);
        commit(&book, &order, None, Some(payment(&order, AMOUNT, FEE))).await;
        for part in [3_333, 3_333, 3_334] {
            refund(&book, &mut order, part).await;
        }
        assert_eq!(violations(&book).await, Vec::<String>::new());
        let reversed: i64 = book
            .store
            .entries_of(&order.id)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.kind == EntryKind::Refund)
            .flat_map(|e| &e.postings)
            .filter(|p| p.account == ledger::FEE_INCOME)
            .map(|p| p.amount)
            .sum();
        assert_eq!(reversed, FEE);
    }

    #[tokio::test]
    async fn a_payment_entry_for_another_amount_than_the_order_is_reported() {
        let book = book().await;
        let order = paid_order(&book.merchant);
        commit(&book, &order, None, Some(payment(&order, AMOUNT - 1, FEE))).await;
        assert_one_violation(&book, "captures 9999").await;
    }

    #[tokio::test]
    async fn a_fee_posting_other_than_the_orders_fee_is_reported() {
        let book = book().await;
        let order = paid_order(&book.merchant);
        commit(&book, &order, None, Some(payment(&order, AMOUNT, FEE + 1))).await;
        assert_one_violation(&book, "took a fee of 150 but its payment entry credits 151").await;
    }

    #[tokio::test]
    async fn a_refund_entry_for_another_amount_than_its_refund_is_reported() {
        let book = book().await;
        let mut order = paid_order(&book.merchant);
        commit(&book, &order, None, Some(payment(&order, AMOUNT, FEE))).await;
        let done = refund_of(&order, 1_000, RefundStatus::Succeeded);
        let postings = ledger::refund_entry("alipay_plus", AMOUNT, FEE, 0, 1_200).unwrap();
        order.refunded_minor = 1_000;
        let e = entry(
            &order,
            LedgerEntry::refund_id(&order.id, &done.id),
            EntryKind::Refund,
            postings,
        );
        commit(&book, &order, Some(done), Some(e)).await;
        assert_one_violation(&book, "is for 1000 but its entry returns 1200").await;
    }

    #[tokio::test]
    async fn a_succeeded_refund_without_an_entry_and_an_entry_without_a_refund_are_reported() {
        let book = book().await;
        let mut order = paid_order(&book.merchant);
        commit(&book, &order, None, Some(payment(&order, AMOUNT, FEE))).await;
        // A refund marked succeeded but never posted.
        order.refunded_minor = 500;
        let unposted = refund_of(&order, 500, RefundStatus::Succeeded);
        commit(&book, &order, Some(unposted), None).await;
        let found = violations(&book).await;
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("has no refund entry"), "{found:?}");

        // A refund posted twice: under its own id and under one of a failed refund.
        let book = self::book().await;
        let mut order = paid_order(&book.merchant);
        commit(&book, &order, None, Some(payment(&order, AMOUNT, FEE))).await;
        refund(&book, &mut order, 500).await;
        let failed = refund_of(&order, 500, RefundStatus::Failed);
        let postings = ledger::refund_entry("alipay_plus", AMOUNT, FEE, 500, 500).unwrap();
        let e = entry(
            &order,
            LedgerEntry::refund_id(&order.id, &failed.id),
            EntryKind::Refund,
            postings,
        );
        commit(&book, &order, Some(failed), Some(e)).await;
        assert_one_violation(&book, "matches no succeeded refund").await;
    }

    #[tokio::test]
    async fn a_full_refund_that_does_not_reverse_the_whole_fee_is_reported() {
        let book = book().await;
        let mut order = paid_order(&book.merchant);
        commit(&book, &order, None, Some(payment(&order, AMOUNT, FEE))).await;
        let done = refund_of(&order, AMOUNT, RefundStatus::Succeeded);
        // The merchant's side pays the whole refund back but only 100 of the fee returns.
        let postings = vec![
            Posting {
                account: ledger::MERCHANT_PAYABLE.into(),
                amount: AMOUNT - 100,
            },
            Posting {
                account: ledger::FEE_INCOME.into(),
                amount: 100,
            },
            Posting {
                account: ledger::wallet_clearing("alipay_plus"),
                amount: -AMOUNT,
            },
        ];
        order.refunded_minor = AMOUNT;
        let e = entry(
            &order,
            LedgerEntry::refund_id(&order.id, &done.id),
            EntryKind::Refund,
            postings,
        );
        commit(&book, &order, Some(done), Some(e)).await;
        assert_one_violation(&book, "reversed a fee of 100, not 150").await;
    }

    #[tokio::test]
    async fn an_entry_in_another_currency_than_its_order_is_reported() {
        let book = book().await;
        let order = paid_order(&book.merchant);
        commit(&book, &order, None, Some(payment(&order, AMOUNT, FEE))).await;
        // The store refuses such an entry, so the file is tampered with directly.
        let db =
            rusqlite::Connection::open(book.dir.path().join(crate::store::embedded::DATABASE_FILE))
                .unwrap();
        db.execute(
            "UPDATE ledger_entries SET doc = replace(doc, '\"MOP\"', '\"HKD\"')",
            [],
        )
        .unwrap();
        db.execute("UPDATE balances SET currency = 'HKD'", [])
            .unwrap();
        assert_one_violation(&book, "is in HKD but order").await;
    }

    #[tokio::test]
    async fn refund_postings_on_an_order_that_is_not_succeeded_are_reported() {
        let book = book().await;
        let mut order = paid_order(&book.merchant);
        commit(&book, &order, None, Some(payment(&order, AMOUNT, FEE))).await;
        refund(&book, &mut order, 500).await;
        order.status = OrderStatus::Failed;
        commit(&book, &order, None, None).await;
        let found = violations(&book).await;
        assert!(
            found
                .iter()
                .any(|v| v.contains("1 refund postings but is not succeeded")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|v| v.contains("1 payment postings but is not succeeded")),
            "{found:?}"
        );
    }
}
