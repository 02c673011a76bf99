//! Payments: creating orders (dynamic QR, customer code), settling what wallets report,
//! refunds, closing. Every change to an order goes through `commit_with_retry`: read,
//! decide with `domain::order::decide`, commit with compare-and-set, retry on conflict.
//!
//! Invariants: money is posted only by a commit that also moves the order to
//! `succeeded` (or records a refund), deduplicated by the wallet event and by the
//! ledger entry id, so any number of duplicate or concurrent callbacks post once. A
//! wallet amount or currency that differs from the order's posts nothing and flags
//! the order for review. Nothing here sees actix types.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sesame_adapters::contract::{
    AdapterError, AdapterId, ChargeCode, ChargeOutcome, CreateOrder, MerchantInfo, OrderRef,
    PayAction, PayMode, RefundOutcome, RefundRequest, WalletStatus,
};
use sesame_adapters::money::{Currency, Money};
use sha2::Sha256;

use crate::clock::rfc3339;
use crate::domain::event::{Event, EventKind};
use crate::domain::ledger::{self, EntryKind, LedgerEntry};
use crate::domain::order::{Decision, Order, OrderEvent, OrderMode, OrderStatus, decide};
use crate::domain::refund::{Refund, RefundStatus};
use crate::domain::{EventId, Merchant, MerchantId, OrderId, RefundId};
use crate::error::{ApiError, ErrorCode};
use crate::startup::AppState;
use crate::store::{CommitOutcome, OrderChange};
use crate::wallets::Route;

/// Body of `POST /v1/orders`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderRequest {
    /// Decimal string in the currency's unit, e.g. "12.30" (numbers are refused: no floats).
    pub amount: String,
    pub currency: String,
    pub description: String,
    #[serde(default)]
    pub reference: Option<String>,
    /// A brand id (`mpay`, `wechat_pay`, ...): the wallet's own QR or URL instead of ours.
    #[serde(default)]
    pub wallet: Option<String>,
    /// The shopper's payment code scanned by the POS.
    #[serde(default)]
    pub auth_code: Option<String>,
    /// Seconds until the order expires.
    #[serde(default)]
    pub expires_in: Option<i64>,
}

/// Body of `POST /v1/orders/{id}/refunds`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundRequest {
    pub amount: String,
    #[serde(default)]
    pub reason: Option<String>,
}

fn invalid(field: &str, reason: &str) -> ApiError {
    ApiError::with(ErrorCode::InvalidField, format!("{field}: {reason}"))
}

fn money_of(minor: i64, currency: Currency) -> String {
    Money::from_minor(minor.max(0), currency)
        .map(|m| m.to_decimal_string())
        .unwrap_or_default()
}

fn wallet_error(e: AdapterError) -> ApiError {
    match e {
        AdapterError::Rejected { code, message } => {
            ApiError::with(ErrorCode::WalletRejected, format!("{code}: {message}"))
        }
        AdapterError::Unsupported(what) => ApiError::with(ErrorCode::WalletRejected, what),
        other => {
            tracing::warn!(error = %other, "wallet call failed");
            ApiError::new(ErrorCode::WalletUnavailable)
        }
    }
}

/// Order ids derived from the Idempotency-Key: a retry after a wallet transport error
/// creates the SAME order id, so the wallet (which dedupes on it) never sees two payments.
pub fn derived_id(secret: &[u8], merchant: &MerchantId, kind: &str, key: &str) -> [u8; 18] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(kind.as_bytes());
    mac.update(b"\0");
    mac.update(merchant.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(key.as_bytes());
    let tag = mac.finalize().into_bytes();
    let mut bytes = [0u8; 18];
    bytes[..10].copy_from_slice(&merchant.to_bytes());
    bytes[10..].copy_from_slice(&tag[..8]);
    bytes
}

/// The JSON an API client (and a webhook) sees for an order.
pub fn order_view(state: &AppState, order: &Order) -> Value {
    let base = &state.settings.server.public_base_url;
    json!({
        "id": order.id,
        "object": "order",
        "status": order.status.as_str(),
        "amount": money_of(order.amount_minor, order.currency),
        "currency": order.currency,
        "description": order.description,
        "reference": order.reference,
        "mode": order.mode,
        "wallet": order.brand,
        "adapter": order.adapter,
        "wallet_reference": order.wallet_ref,
        "paid_late": order.paid_late,
        "review": order.review,
        "fee": money_of(order.fee_minor, order.currency),
        "refunded": money_of(order.refunded_minor, order.currency),
        "refundable": money_of(order.refundable_minor(), order.currency),
        "pay": {
            "url": format!("{base}/o/{}", order.id),
            "action": order.pay_action,
            "qr": crate::services::shopper::qr_payload(state, order),
        },
        "expires_at": rfc3339(order.expires_at),
        "paid_at": order.paid_at.map(rfc3339),
        "created_at": rfc3339(order.created_at),
        "updated_at": rfc3339(order.updated_at),
    })
}

pub fn refund_view(refund: &Refund) -> Value {
    json!({
        "id": refund.id,
        "object": "refund",
        "order_id": refund.order_id,
        "status": refund.status,
        "amount": money_of(refund.amount_minor, refund.currency),
        "currency": refund.currency,
        "reason": refund.reason,
        "wallet_reference": refund.wallet_refund_ref,
        "failure": refund.failure,
        "created_at": rfc3339(refund.created_at),
        "updated_at": rfc3339(refund.updated_at),
    })
}

fn pay_action_json(action: &PayAction) -> Value {
    match action {
        PayAction::Redirect { url } => json!({"type": "redirect", "url": url}),
        PayAction::QrString { data } => json!({"type": "qr", "data": data}),
        PayAction::Jsapi { params } => json!({"type": "jsapi", "params": params}),
        PayAction::None => json!({"type": "none"}),
    }
}

fn merchant_info(merchant: &Merchant) -> MerchantInfo {
    MerchantInfo {
        merchant_id: merchant.id.to_string(),
        name: merchant.name.clone(),
        mcc: merchant.mcc.clone(),
        city: merchant.city.clone(),
        country: merchant.country.clone(),
        ..MerchantInfo::default()
    }
}

pub(crate) fn fee_bps_for(state: &AppState, merchant: &Merchant, brand: Option<&str>) -> u32 {
    brand
        .and_then(|b| merchant.fees_bps.get(b).copied())
        .unwrap_or(state.settings.payments.default_mdr_bps)
}

fn to_utc(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}

/// Validated `POST /v1/orders` input.
pub struct NewOrder {
    pub amount: Money,
    pub description: String,
    pub reference: Option<String>,
    pub route: Option<Route>,
    pub auth_code: Option<String>,
    pub ttl_ms: i64,
}

pub fn validate_order(state: &AppState, req: &CreateOrderRequest) -> Result<NewOrder, ApiError> {
    let currency =
        Currency::parse(req.currency.trim()).map_err(|e| invalid("currency", &e.to_string()))?;
    let amount = Money::parse(&req.amount, currency)
        .map_err(|e| ApiError::with(ErrorCode::InvalidAmount, format!("amount: {e}")))?;
    if amount.minor() > state.settings.payments.max_amount_minor {
        return Err(ApiError::with(
            ErrorCode::InvalidAmount,
            format!(
                "amount: at most {}",
                money_of(state.settings.payments.max_amount_minor, currency)
            ),
        ));
    }
    let description = req.description.trim();
    if description.is_empty()
        || description.chars().count() > 127
        || description.chars().any(char::is_control)
    {
        return Err(invalid(
            "description",
            "1 to 127 characters, no control characters",
        ));
    }
    let reference = match req.reference.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(r) if r.len() <= 64 && r.bytes().all(|b| (0x21..0x7f).contains(&b)) => {
            Some(r.to_owned())
        }
        Some(_) => {
            return Err(invalid(
                "reference",
                "1 to 64 printable ASCII characters without spaces",
            ));
        }
    };
    let ttl_secs = req
        .expires_in
        .unwrap_or(state.settings.payments.order_ttl_secs);
    if !(60..=state.settings.payments.max_ttl_secs).contains(&ttl_secs) {
        return Err(invalid(
            "expires_in",
            &format!(
                "between 60 and {} seconds",
                state.settings.payments.max_ttl_secs
            ),
        ));
    }
    let auth_code = match req.auth_code.as_deref().map(str::trim) {
        None => None,
        Some(code)
            if (10..=32).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(code.to_owned())
        }
        Some(_) => return Err(invalid("auth_code", "10 to 32 digits")),
    };
    let route = match (&auth_code, req.wallet.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "wallet",
                "give either wallet or auth_code, not both",
            ));
        }
        (Some(code), None) => Some(
            state
                .wallets
                .route_code(code)
                .ok_or_else(|| ApiError::new(ErrorCode::UnknownPaymentCode))?,
        ),
        (None, Some(brand)) => {
            let known = state.wallets.brands.get(brand).is_some_and(|b| b.enabled());
            if !known {
                return Err(ApiError::new(ErrorCode::UnknownWallet));
            }
            Some(
                state
                    .wallets
                    .route_brand_id(brand)
                    .ok_or_else(|| ApiError::new(ErrorCode::WalletUnavailable))?,
            )
        }
        (None, None) => None,
    };
    if let Some(route) = &route
        && !route.adapter.capabilities().supports_currency(currency)
    {
        return Err(invalid(
            "currency",
            &format!("{} does not accept {currency}", route.adapter_id),
        ));
    }
    Ok(NewOrder {
        amount,
        description: description.to_owned(),
        reference,
        route,
        auth_code,
        ttl_ms: ttl_secs * 1000,
    })
}

/// Creates an order and, when routed, starts it at the wallet. `idem_key` (the
/// request's Idempotency-Key) fixes the order id across retries.
pub async fn create_order(
    state: &AppState,
    merchant: &Merchant,
    input: NewOrder,
    idem_key: Option<&str>,
) -> Result<Order, ApiError> {
    let now = state.clock.now_ms();
    let id = match idem_key {
        Some(key) => OrderId::from_bytes(&derived_id(&state.id_secret, &merchant.id, "order", key)),
        None => OrderId::generate_for(&merchant.id),
    };
    let mode = match (&input.auth_code, &input.route) {
        (Some(_), _) => OrderMode::CustomerCode,
        _ => OrderMode::DynamicQr,
    };
    let brand = input.route.as_ref().and_then(|r| r.brand.clone());
    let first_check = if mode == OrderMode::CustomerCode {
        state.settings.payments.poll_interval_ms
    } else {
        state.settings.payments.first_check_after_ms
    };
    let order = Order {
        id: id.clone(),
        merchant_id: merchant.id.clone(),
        plate_id: None,
        amount_minor: input.amount.minor(),
        currency: input.amount.currency(),
        description: input.description.clone(),
        reference: input.reference.clone(),
        mode,
        fee_bps: fee_bps_for(state, merchant, brand.as_deref()),
        brand,
        adapter: input
            .route
            .as_ref()
            .map(|r| r.adapter_id.as_str().to_owned()),
        status: OrderStatus::Created,
        paid_late: false,
        wallet_ref: None,
        pay_action: None,
        fee_minor: 0,
        refunded_minor: 0,
        refund_pending_minor: 0,
        review: None,
        expires_at: now + input.ttl_ms,
        next_check_at: Some(now + first_check),
        paid_at: None,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    let order = match state.store.commit(&insert_change(&order), now).await? {
        CommitOutcome::Applied => order,
        _ => {
            // Same Idempotency-Key after a failed attempt: the order exists. Go on with
            // it (same id toward the wallet) unless it has moved past `created`.
            let existing = state
                .store
                .order(&id)
                .await?
                .ok_or_else(|| ApiError::internal("order vanished"))?;
            if existing.status != OrderStatus::Created
                || existing.amount_minor != order.amount_minor
            {
                return Ok(existing);
            }
            existing
        }
    };
    let Some(route) = input.route else {
        return Ok(order);
    };
    match input.auth_code {
        Some(code) => charge_code(state, merchant, order, &route, &code).await,
        None => {
            // A POS shows a QR: the wallet's own dynamic QR, or, for a wallet that only
            // redirects (Kakao Pay), its cashier URL rendered as a QR.
            let mode = if route
                .adapter
                .capabilities()
                .supports_mode(PayMode::DynamicQr)
            {
                PayMode::DynamicQr
            } else {
                PayMode::StaticEntry
            };
            start_at_wallet(state, merchant, order, &route, mode, None, None).await
        }
    }
}

pub(crate) fn insert_change(order: &Order) -> OrderChange {
    OrderChange {
        order: order.clone(),
        expected_version: 0,
        dedupe_key: None,
        refund: None,
        entry: None,
        event: None,
    }
}

/// Asks the wallet to create the payment and records what the shopper must do.
pub async fn start_at_wallet(
    state: &AppState,
    merchant: &Merchant,
    order: Order,
    route: &Route,
    mode: PayMode,
    payer_id: Option<String>,
    user_agent: Option<String>,
) -> Result<Order, ApiError> {
    let base = &state.settings.server.public_base_url;
    let request = CreateOrder {
        order_id: order.id.to_string(),
        amount: Money::from_minor(order.amount_minor, order.currency)
            .map_err(ApiError::internal)?,
        description: order.description.clone(),
        expires_at: to_utc(order.expires_at),
        notify_url: format!("{base}/webhooks/{}", route.adapter_id),
        return_url: Some(format!("{base}/return/{}/{}", route.adapter_id, order.id)),
        mode,
        payer_id,
        user_agent,
        brand_params: route.params.clone(),
        merchant: merchant_info(merchant),
    };
    match route.adapter.create_order(&request).await {
        Ok(created) => {
            let action = pay_action_json(&created.action);
            change_order(state, &order.id, None, |o| {
                if o.status != OrderStatus::Created {
                    return None;
                }
                let mut next = o.clone();
                next.status = OrderStatus::Pending;
                next.wallet_ref = created.wallet_ref.clone();
                next.pay_action = Some(action.clone());
                next.brand = route.brand.clone().or(next.brand);
                next.adapter = Some(route.adapter_id.as_str().to_owned());
                Some((next, None, None))
            })
            .await
        }
        Err(AdapterError::Rejected { code, message }) => {
            fail_order(state, &order.id, &format!("{code}: {message}")).await?;
            Err(ApiError::with(
                ErrorCode::WalletRejected,
                format!("{code}: {message}"),
            ))
        }
        Err(e) => Err(wallet_error(e)),
    }
}

async fn charge_code(
    state: &AppState,
    merchant: &Merchant,
    order: Order,
    route: &Route,
    code: &str,
) -> Result<Order, ApiError> {
    let base = &state.settings.server.public_base_url;
    let request = ChargeCode {
        order_id: order.id.to_string(),
        amount: Money::from_minor(order.amount_minor, order.currency)
            .map_err(ApiError::internal)?,
        auth_code: code.to_owned(),
        description: order.description.clone(),
        notify_url: Some(format!("{base}/webhooks/{}", route.adapter_id)),
        brand_params: route.params.clone(),
        merchant: merchant_info(merchant),
    };
    match route.adapter.charge_code(&request).await {
        Ok(ChargeOutcome::Succeeded {
            wallet_ref,
            amount,
            paid_at,
            brand,
        }) => {
            let paid = Paid {
                wallet_ref,
                amount,
                paid_at: paid_at.map(|t| t.timestamp_millis()),
                brand,
            };
            settle_payment(state, &order.id, &paid, &format!("charge:{}", order.id)).await?;
        }
        Ok(ChargeOutcome::Pending) => {
            mark_pending(state, &order.id, None).await?;
        }
        Ok(ChargeOutcome::Failed { code, message }) => {
            fail_order(state, &order.id, &format!("{code}: {message}")).await?;
        }
        Err(AdapterError::Rejected { code, message }) => {
            fail_order(state, &order.id, &format!("{code}: {message}")).await?;
        }
        Err(e) => {
            // We do not know whether the wallet charged: keep the order pending and let
            // the reconciler ask the wallet (by our order id) until it knows.
            tracing::warn!(error = %e, order = %order.id, "customer-code charge outcome unknown");
            mark_pending(state, &order.id, None).await?;
        }
    }
    state
        .store
        .order(&order.id)
        .await?
        .ok_or_else(|| ApiError::internal("order vanished"))
}

type Planned = (Order, Option<LedgerEntry>, Option<Event>);

/// Reads the order, lets `plan` decide (None = nothing to do), commits with
/// compare-and-set, and retries on a concurrent change. Returns the stored order.
async fn change_order<F>(
    state: &AppState,
    id: &OrderId,
    dedupe_key: Option<&str>,
    mut plan: F,
) -> Result<Order, ApiError>
where
    F: FnMut(&Order) -> Option<Planned>,
{
    for _ in 0..8 {
        let current = state
            .store
            .order(id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound))?;
        let Some((mut next, entry, event)) = plan(&current) else {
            return Ok(current);
        };
        let now = state.clock.now_ms();
        next.version = current.version + 1;
        next.updated_at = now;
        if next.status.is_terminal() {
            next.next_check_at = None;
        }
        let change = OrderChange {
            order: next.clone(),
            expected_version: current.version,
            dedupe_key: dedupe_key.map(str::to_owned),
            refund: None,
            entry,
            event,
        };
        match state.store.commit(&change, now).await? {
            CommitOutcome::Applied => return Ok(next),
            CommitOutcome::Duplicate => {
                return state
                    .store
                    .order(id)
                    .await?
                    .ok_or_else(|| ApiError::internal("order vanished"));
            }
            CommitOutcome::VersionConflict => continue,
        }
    }
    Err(ApiError::with(
        ErrorCode::RequestInProgress,
        "the order is changing; retry",
    ))
}

fn new_event(state: &AppState, order: &Order, kind: EventKind, data: Value) -> Event {
    Event {
        id: EventId::generate(),
        merchant_id: order.merchant_id.clone(),
        kind,
        data,
        created_at: state.clock.now_ms(),
    }
}

async fn mark_pending(
    state: &AppState,
    id: &OrderId,
    wallet_ref: Option<String>,
) -> Result<Order, ApiError> {
    let poll = state.settings.payments.poll_interval_ms;
    change_order(state, id, None, |o| {
        let Decision::Move { to, .. } = decide(o.status, OrderEvent::WalletAccepted) else {
            return None;
        };
        let mut next = o.clone();
        next.status = to;
        next.wallet_ref = wallet_ref.clone().or(next.wallet_ref);
        next.next_check_at = Some(state.clock.now_ms() + poll);
        Some((next, None, None))
    })
    .await
}

/// A final failure reported by the wallet (or its refusal to create the payment).
pub async fn fail_order(state: &AppState, id: &OrderId, reason: &str) -> Result<Order, ApiError> {
    change_order(state, id, Some(&format!("failed:{id}")), |o| {
        let Decision::Move { to, .. } = decide(o.status, OrderEvent::Declined) else {
            return None;
        };
        let mut next = o.clone();
        next.status = to;
        tracing::info!(order = %next.id, reason, "order failed at the wallet");
        let event = new_event(
            state,
            &next,
            EventKind::OrderFailed,
            order_view(state, &next),
        );
        Some((next, None, Some(event)))
    })
    .await
}

/// Our deadline passed (or the merchant closed the order).
pub async fn expire_order(state: &AppState, id: &OrderId) -> Result<Order, ApiError> {
    change_order(state, id, Some(&format!("expired:{id}")), |o| {
        let Decision::Move { to, .. } = decide(o.status, OrderEvent::DeadlinePassed) else {
            return None;
        };
        let mut next = o.clone();
        next.status = to;
        let event = new_event(
            state,
            &next,
            EventKind::OrderExpired,
            order_view(state, &next),
        );
        Some((next, None, Some(event)))
    })
    .await
}

/// What a wallet says was paid.
#[derive(Debug, Clone)]
pub struct Paid {
    pub wallet_ref: String,
    pub amount: Money,
    pub paid_at: Option<i64>,
    /// The brand as the rail reports it: a registry brand id or an Alipay+ pspId.
    pub brand: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleResult {
    /// Posted now.
    Posted,
    /// Already final (a duplicate or an earlier event won); nothing changed.
    Unchanged,
    /// The wallet's amount or currency differs from the order: flagged, nothing posted.
    Mismatch,
}

/// THE settle: dedupe the wallet event, move the order to `succeeded`, post the
/// balanced entry and enqueue `order.succeeded` — one atomic commit.
pub async fn settle_payment(
    state: &AppState,
    id: &OrderId,
    paid: &Paid,
    dedupe_key: &str,
) -> Result<SettleResult, ApiError> {
    let merchant = state
        .store
        .merchant(&id.merchant())
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound))?;
    let mut result = SettleResult::Unchanged;
    let brand_from_rail = paid.brand.as_deref().map(|b| {
        state
            .wallets
            .brands
            .brand_for_psp_id(b)
            .map(|brand| brand.id().to_owned())
            .unwrap_or_else(|| b.to_owned())
    });
    change_order(state, id, Some(dedupe_key), |o| {
        if paid.amount.minor() != o.amount_minor || paid.amount.currency() != o.currency {
            result = SettleResult::Mismatch;
            if o.review.is_some() {
                return None;
            }
            let mut next = o.clone();
            next.review = Some(format!(
                "wallet reported {} for an order of {}",
                paid.amount,
                Money::from_minor(o.amount_minor, o.currency)
                    .map(|m| m.to_string())
                    .unwrap_or_default()
            ));
            next.wallet_ref = next.wallet_ref.clone().or(Some(paid.wallet_ref.clone()));
            return Some((next, None, None));
        }
        let Decision::Move { to, paid_late } = decide(o.status, OrderEvent::Paid) else {
            result = SettleResult::Unchanged;
            return None;
        };
        let now = state.clock.now_ms();
        let mut next = o.clone();
        next.status = to;
        next.paid_late = paid_late;
        next.wallet_ref = Some(paid.wallet_ref.clone());
        next.paid_at = Some(paid.paid_at.unwrap_or(now));
        if let Some(brand) = &brand_from_rail {
            if next.brand.as_deref() != Some(brand.as_str()) {
                next.fee_bps = fee_bps_for(state, &merchant, Some(brand));
            }
            next.brand = Some(brand.clone());
        }
        let adapter = next.adapter.clone().unwrap_or_else(|| "unknown".to_owned());
        let fee = ledger::fee(next.amount_minor, next.fee_bps).ok()?;
        next.fee_minor = fee;
        let postings = ledger::payment_entry(&adapter, next.amount_minor, fee).ok()?;
        let entry = LedgerEntry {
            id: LedgerEntry::payment_id(&next.id),
            merchant_id: next.merchant_id.clone(),
            currency: next.currency,
            order_id: next.id.clone(),
            kind: EntryKind::Payment,
            postings,
            created_at: now,
        };
        let mut shown = next.clone();
        shown.version += 1;
        let event = new_event(
            state,
            &next,
            EventKind::OrderSucceeded,
            order_view(state, &shown),
        );
        result = SettleResult::Posted;
        Some((next, Some(entry), Some(event)))
    })
    .await?;
    Ok(result)
}

/// Applies what `query` says about an open order (reconciler, return routes).
pub async fn apply_status(
    state: &AppState,
    order: &Order,
    status: WalletStatus,
) -> Result<(), ApiError> {
    let now = state.clock.now_ms();
    match status {
        WalletStatus::Succeeded {
            wallet_ref,
            amount,
            paid_at,
            brand,
        } => {
            let paid = Paid {
                wallet_ref,
                amount,
                paid_at: paid_at.map(|t| t.timestamp_millis()),
                brand,
            };
            settle_payment(state, &order.id, &paid, &format!("query-paid:{}", order.id)).await?;
        }
        // Refunded means it was paid first: the capture must be on the book.
        WalletStatus::Refunded {
            wallet_ref, amount, ..
        } => {
            let paid = Paid {
                wallet_ref,
                amount,
                paid_at: None,
                brand: None,
            };
            settle_payment(state, &order.id, &paid, &format!("query-paid:{}", order.id)).await?;
        }
        WalletStatus::Failed { code } => {
            fail_order(state, &order.id, &code).await?;
        }
        WalletStatus::Closed => {
            expire_order(state, &order.id).await?;
        }
        WalletStatus::Pending | WalletStatus::Unknown(_) => {
            if crate::domain::order::is_overdue(order.expires_at, now) {
                close_at_wallet(state, order).await;
                expire_order(state, &order.id).await?;
            } else {
                reschedule_check(state, &order.id).await?;
            }
        }
    }
    Ok(())
}

/// Pushes the order's next wallet check one poll interval ahead.
pub async fn reschedule_check(state: &AppState, id: &OrderId) -> Result<Order, ApiError> {
    let next_at = state.clock.now_ms() + state.settings.payments.poll_interval_ms;
    change_order(state, id, None, |o| {
        if o.status.is_terminal() {
            return None;
        }
        let mut next = o.clone();
        next.next_check_at = Some(next_at);
        Some((next, None, None))
    })
    .await
}

fn adapter_of(
    state: &AppState,
    order: &Order,
) -> Option<std::sync::Arc<dyn sesame_adapters::contract::WalletAdapter>> {
    let id = AdapterId::parse(order.adapter.as_deref()?).ok()?;
    state.wallets.adapter(id).cloned()
}

fn order_ref(order: &Order) -> OrderRef {
    OrderRef {
        order_id: order.id.to_string(),
        wallet_ref: order.wallet_ref.clone(),
    }
}

/// Best effort: the order is expired on our side either way.
async fn close_at_wallet(state: &AppState, order: &Order) {
    if let Some(adapter) = adapter_of(state, order)
        && let Err(e) = adapter.close(&order_ref(order)).await
    {
        tracing::warn!(error = %e, order = %order.id, "could not close the order at its wallet");
    }
}

/// `POST /v1/orders/{id}/close`: ends an open order (closed at the wallet, `expired` here).
pub async fn close_order(state: &AppState, order: &Order) -> Result<Order, ApiError> {
    if order.status.is_terminal() {
        return Err(ApiError::new(ErrorCode::OrderNotOpen));
    }
    // A payment may have landed just now: ask first, so money is never left unposted.
    if let Some(adapter) = adapter_of(state, order)
        && let Ok(status) = adapter.query(&order_ref(order)).await
        && status.is_paid()
    {
        apply_status(state, order, status).await?;
        return Err(ApiError::with(
            ErrorCode::OrderNotOpen,
            "the order was paid before it could be closed",
        ));
    }
    close_at_wallet(state, order).await;
    expire_order(state, &order.id).await
}

/// One reconciler look at an open order.
pub async fn reconcile_order(state: &AppState, order: &Order) -> Result<(), ApiError> {
    let now = state.clock.now_ms();
    let Some(adapter) = adapter_of(state, order) else {
        // Nobody picked a wallet (a gateway QR nobody paid): expire when due.
        if crate::domain::order::is_overdue(order.expires_at, now) {
            expire_order(state, &order.id).await?;
        } else {
            reschedule_check(state, &order.id).await?;
        }
        return Ok(());
    };
    match adapter.query(&order_ref(order)).await {
        Ok(status) => apply_status(state, order, status).await,
        Err(e) => {
            tracing::info!(error = %e, order = %order.id, "wallet query failed; will ask again");
            if crate::domain::order::is_overdue(order.expires_at, now) && !e.is_retryable() {
                expire_order(state, &order.id).await?;
            } else {
                reschedule_check(state, &order.id).await?;
            }
            Ok(())
        }
    }
}

/// `POST /v1/orders/{id}/refunds`: reserve (atomic, against concurrent refunds), ask the
/// wallet with the refund id as its refund request number, then post or release.
pub async fn refund_order(
    state: &AppState,
    order_id: &OrderId,
    req: &CreateRefundRequest,
    idem_key: Option<&str>,
) -> Result<Refund, ApiError> {
    let order = state
        .store
        .order(order_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound))?;
    let amount = Money::parse(&req.amount, order.currency)
        .map_err(|e| ApiError::with(ErrorCode::InvalidAmount, format!("amount: {e}")))?;
    let reason = match req.reason.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(r) if r.chars().count() <= 80 && !r.chars().any(char::is_control) => {
            Some(r.to_owned())
        }
        Some(_) => {
            return Err(invalid(
                "reason",
                "at most 80 characters, no control characters",
            ));
        }
    };
    let merchant_id = order.merchant_id.clone();
    let refund_id = match idem_key {
        Some(key) => RefundId::from_bytes(&derived_id(
            &state.id_secret,
            &merchant_id,
            &format!("refund:{order_id}"),
            key,
        )),
        None => RefundId::generate_for(&merchant_id),
    };
    if let Some(existing) = state.store.refund(&refund_id).await? {
        if existing.status != RefundStatus::Pending {
            return Ok(existing);
        }
    } else {
        reserve_refund(state, order_id, &refund_id, amount, reason.clone()).await?;
    }
    let order = state
        .store
        .order(order_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound))?;
    let refund = state
        .store
        .refund(&refund_id)
        .await?
        .ok_or_else(|| ApiError::internal("refund vanished"))?;
    let adapter =
        adapter_of(state, &order).ok_or_else(|| ApiError::new(ErrorCode::WalletUnavailable))?;
    let request = RefundRequest {
        order_id: order.id.to_string(),
        wallet_ref: order.wallet_ref.clone(),
        refund_id: refund.id.to_string(),
        amount: Money::from_minor(refund.amount_minor, refund.currency)
            .map_err(ApiError::internal)?,
        total: Money::from_minor(order.amount_minor, order.currency).map_err(ApiError::internal)?,
        reason: refund.reason.clone(),
        notify_url: order
            .adapter
            .as_ref()
            .map(|a| format!("{}/webhooks/{a}", state.settings.server.public_base_url)),
    };
    match adapter.refund(&request).await {
        Ok(RefundOutcome::Succeeded { wallet_refund_ref }) => {
            finish_refund(state, &refund.id, true, wallet_refund_ref, None).await
        }
        Ok(RefundOutcome::Pending) => Ok(refund),
        Ok(RefundOutcome::Failed { code, message })
        | Err(AdapterError::Rejected { code, message }) => {
            finish_refund(
                state,
                &refund.id,
                false,
                None,
                Some(format!("{code}: {message}")),
            )
            .await
        }
        Err(e) => {
            // Unknown outcome: the refund stays pending and reserved; the client retries
            // with the same Idempotency-Key, which reuses the refund id at the wallet.
            Err(wallet_error(e))
        }
    }
}

async fn reserve_refund(
    state: &AppState,
    order_id: &OrderId,
    refund_id: &RefundId,
    amount: Money,
    reason: Option<String>,
) -> Result<(), ApiError> {
    for _ in 0..8 {
        let order = state
            .store
            .order(order_id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound))?;
        if order.status != OrderStatus::Succeeded {
            return Err(ApiError::new(ErrorCode::OrderNotRefundable));
        }
        if amount.currency() != order.currency || amount.minor() > order.refundable_minor() {
            return Err(ApiError::with(
                ErrorCode::RefundExceedsCaptured,
                format!(
                    "at most {} {} can still be refunded",
                    money_of(order.refundable_minor(), order.currency),
                    order.currency
                ),
            ));
        }
        let now = state.clock.now_ms();
        let mut next = order.clone();
        next.refund_pending_minor += amount.minor();
        next.version += 1;
        next.updated_at = now;
        let refund = Refund {
            id: refund_id.clone(),
            order_id: order_id.clone(),
            merchant_id: order.merchant_id.clone(),
            amount_minor: amount.minor(),
            currency: order.currency,
            reason: reason.clone(),
            status: RefundStatus::Pending,
            wallet_refund_ref: None,
            failure: None,
            created_at: now,
            updated_at: now,
        };
        let change = OrderChange {
            order: next,
            expected_version: order.version,
            dedupe_key: Some(format!("refund-reserve:{refund_id}")),
            refund: Some(refund),
            entry: None,
            event: None,
        };
        match state.store.commit(&change, now).await? {
            CommitOutcome::Applied | CommitOutcome::Duplicate => return Ok(()),
            CommitOutcome::VersionConflict => continue,
        }
    }
    Err(ApiError::with(
        ErrorCode::RequestInProgress,
        "the order is changing; retry",
    ))
}

/// Posts a refund the wallet confirmed (or releases one it refused) — one atomic commit.
pub async fn finish_refund(
    state: &AppState,
    refund_id: &RefundId,
    succeeded: bool,
    wallet_refund_ref: Option<String>,
    failure: Option<String>,
) -> Result<Refund, ApiError> {
    for _ in 0..8 {
        let refund = state
            .store
            .refund(refund_id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
        if refund.status != RefundStatus::Pending {
            return Ok(refund);
        }
        let order = state
            .store
            .order(&refund.order_id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound))?;
        let now = state.clock.now_ms();
        let mut next = order.clone();
        next.refund_pending_minor = (next.refund_pending_minor - refund.amount_minor).max(0);
        let mut done = refund.clone();
        done.updated_at = now;
        let (entry, kind) = if succeeded {
            let adapter = order
                .adapter
                .clone()
                .unwrap_or_else(|| "unknown".to_owned());
            let postings = ledger::refund_entry(
                &adapter,
                order.amount_minor,
                order.fee_minor,
                order.refunded_minor,
                refund.amount_minor,
            )
            .map_err(|e| ApiError::internal(format!("refund posting: {e}")))?;
            next.refunded_minor += refund.amount_minor;
            done.status = RefundStatus::Succeeded;
            done.wallet_refund_ref = wallet_refund_ref.clone();
            (
                Some(LedgerEntry {
                    id: LedgerEntry::refund_id(&order.id, &refund.id),
                    merchant_id: order.merchant_id.clone(),
                    currency: order.currency,
                    order_id: order.id.clone(),
                    kind: EntryKind::Refund,
                    postings,
                    created_at: now,
                }),
                EventKind::RefundSucceeded,
            )
        } else {
            done.status = RefundStatus::Failed;
            done.failure = failure.clone();
            (None, EventKind::RefundFailed)
        };
        next.version += 1;
        next.updated_at = now;
        let event = new_event(state, &order, kind, refund_view(&done));
        let change = OrderChange {
            order: next,
            expected_version: order.version,
            dedupe_key: Some(format!("refund-final:{refund_id}")),
            refund: Some(done.clone()),
            entry,
            event: Some(event),
        };
        match state.store.commit(&change, now).await? {
            CommitOutcome::Applied => return Ok(done),
            CommitOutcome::Duplicate => {
                return state
                    .store
                    .refund(refund_id)
                    .await?
                    .ok_or_else(|| ApiError::internal("refund vanished"));
            }
            CommitOutcome::VersionConflict => continue,
        }
    }
    Err(ApiError::with(
        ErrorCode::RequestInProgress,
        "the order is changing; retry",
    ))
}

/// Ledger entries of an order, as the API shows them.
pub fn entries_view(entries: &[LedgerEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "kind": e.kind,
                    "currency": e.currency,
                    "postings": e.postings.iter().map(|p| json!({
                        "account": p.account,
                        "debit": if p.amount > 0 { money_of(p.amount, e.currency) } else { money_of(0, e.currency) },
                        "credit": if p.amount < 0 { money_of(-p.amount, e.currency) } else { money_of(0, e.currency) },
                    })).collect::<Vec<_>>(),
                    "created_at": rfc3339(e.created_at),
                })
            })
            .collect(),
    )
}
