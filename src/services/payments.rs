//! Payments: creating orders (dynamic QR, customer code), settling what wallets report,
//! refunds, closing, and the reconciler's look at one order. Every change to an order
//! goes through `change_order` (or `change_refund`): read, decide (status changes with
//! `domain::order::decide`), commit with compare-and-set, retry on conflict.
//!
//! Invariants: money is posted only by a commit that also moves the order to
//! `succeeded` (or records a refund), deduplicated by the wallet event and by the
//! ledger entry id, so any number of duplicate or concurrent callbacks post once. A
//! wallet amount or currency that differs from ours posts nothing and flags the order
//! (or refund) for review. An order the reconciler looked at never stays due: every
//! look commits at least its next check time. Nothing here sees actix types.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sesame_adapters::brands::Need;
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
        "review": refund.review,
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
                .route_code(code, currency)
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
                    .route_brand_id(brand, &Need::merchant_qr(currency))
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
        fee_bps: checked_fee_bps(state, merchant, brand.as_deref())?,
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
            // The Idempotency-Key names an order that exists: a retry after a failed
            // attempt (same id toward the wallet, which dedupes on it). Only the same
            // request, within the key's retention, may go on with it.
            let existing = state
                .store
                .order(&id)
                .await?
                .ok_or_else(|| ApiError::internal("order vanished"))?;
            same_order_request(state, &existing, &order)?;
            if existing.status != OrderStatus::Created {
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

/// The MDR for a new order, refused when the merchant's rate is above 100 % (such an
/// order could never be posted). Every path that creates an order should use it.
pub(crate) fn checked_fee_bps(
    state: &AppState,
    merchant: &Merchant,
    brand: Option<&str>,
) -> Result<u32, ApiError> {
    let rate = fee_bps_for(state, merchant, brand);
    if rate > ledger::MAX_MDR_BPS {
        return Err(ApiError::internal(format!(
            "merchant {} has an MDR of {rate} bps for {}, above {}",
            merchant.id,
            brand.unwrap_or("its default"),
            ledger::MAX_MDR_BPS
        )));
    }
    Ok(rate)
}

/// `idempotency_key_reused` naming the earlier record, with why it cannot be reused.
fn key_reused(what: &str, id: &str, why: &str) -> ApiError {
    ApiError::with(
        ErrorCode::IdempotencyKeyReused,
        format!("this Idempotency-Key already created {what} {id}, {why}; use a new key"),
    )
}

/// A record derived from an Idempotency-Key is only handed back within the key's
/// retention: afterwards the same key is a new request, which must not silently
/// get yesterday's order (or refund) back.
fn within_retention(
    state: &AppState,
    what: &str,
    id: &str,
    created_at: i64,
) -> Result<(), ApiError> {
    let retention_hours = state.settings.idempotency.retention_hours;
    if state.clock.now_ms() - created_at >= retention_hours.saturating_mul(3_600_000) {
        return Err(key_reused(
            what,
            id,
            &format!(
                "on {}, longer ago than the {retention_hours} h the key is kept",
                rfc3339(created_at)
            ),
        ));
    }
    Ok(())
}

/// Refuses to hand back `existing` (the order an Idempotency-Key names) for a request
/// that differs from the one that created it: amount, currency, description,
/// reference, mode, or the wallet's adapter when the request names a wallet or a
/// payment code. The payment code itself is not compared: codes refresh every
/// minute, and a POS retrying with the shopper's new code is the same payment.
fn same_order_request(state: &AppState, existing: &Order, wanted: &Order) -> Result<(), ApiError> {
    within_retention(state, "order", existing.id.as_str(), existing.created_at)?;
    let differs = [
        ("amount", existing.amount_minor != wanted.amount_minor),
        ("currency", existing.currency != wanted.currency),
        ("description", existing.description != wanted.description),
        ("reference", existing.reference != wanted.reference),
        ("auth_code", existing.mode != wanted.mode),
        (
            "wallet",
            wanted.adapter.is_some() && existing.adapter != wanted.adapter,
        ),
    ]
    .into_iter()
    .find_map(|(field, differs)| differs.then_some(field));
    match differs {
        Some(field) => Err(key_reused(
            "order",
            existing.id.as_str(),
            &format!("for a request with another {field}"),
        )),
        None => Ok(()),
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
            let changed = change_order(state, &order.id, None, |o| {
                let Decision::Move { to, .. } = decide(o.status, OrderEvent::WalletAccepted) else {
                    return None;
                };
                let mut next = o.clone();
                next.status = to;
                next.wallet_ref = created.wallet_ref.clone();
                next.pay_action = Some(action.clone());
                next.brand = route.brand.clone().or(next.brand);
                next.adapter = Some(route.adapter_id.as_str().to_owned());
                Some((next, None, None))
            })
            .await?;
            Ok(changed.order)
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

/// What `change_order` did.
struct Changed {
    /// The order as stored afterwards.
    order: Order,
    /// True when this call committed a change; false when the plan had nothing to do
    /// or the dedupe key (or entry id) was already recorded.
    applied: bool,
}

/// Reads the order, lets `plan` decide (None = nothing to do), commits with
/// compare-and-set, and retries on a concurrent change.
async fn change_order<F>(
    state: &AppState,
    id: &OrderId,
    dedupe_key: Option<&str>,
    plan: F,
) -> Result<Changed, ApiError>
where
    F: FnMut(&Order) -> Option<Planned>,
{
    change_order_from(state, id, dedupe_key, None, plan).await
}

/// [`change_order`] whose first attempt plans on `first`, an order the caller has
/// just read (a compare-and-set conflict reads it again).
async fn change_order_from<F>(
    state: &AppState,
    id: &OrderId,
    dedupe_key: Option<&str>,
    mut first: Option<Order>,
    mut plan: F,
) -> Result<Changed, ApiError>
where
    F: FnMut(&Order) -> Option<Planned>,
{
    for _ in 0..8 {
        let current = match first.take() {
            Some(order) => order,
            None => state
                .store
                .order(id)
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound))?,
        };
        let Some((mut next, entry, event)) = plan(&current) else {
            return Ok(Changed {
                order: current,
                applied: false,
            });
        };
        let now = state.clock.now_ms();
        next.version = current.version + 1;
        next.updated_at = now;
        if next.due_at().is_none() {
            // Nothing left for the reconciler: keep the document as the index sees it.
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
            CommitOutcome::Applied => {
                return Ok(Changed {
                    order: next,
                    applied: true,
                });
            }
            CommitOutcome::Duplicate => {
                let order = state
                    .store
                    .order(id)
                    .await?
                    .ok_or_else(|| ApiError::internal("order vanished"))?;
                return Ok(Changed {
                    order,
                    applied: false,
                });
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
    let changed = change_order(state, id, None, |o| {
        let Decision::Move { to, .. } = decide(o.status, OrderEvent::WalletAccepted) else {
            return None;
        };
        let mut next = o.clone();
        next.status = to;
        next.wallet_ref = wallet_ref.clone().or(next.wallet_ref);
        next.next_check_at = Some(state.clock.now_ms() + poll);
        Some((next, None, None))
    })
    .await?;
    Ok(changed.order)
}

/// A final failure reported by the wallet (or its refusal to create the payment).
pub async fn fail_order(state: &AppState, id: &OrderId, reason: &str) -> Result<Order, ApiError> {
    let changed = change_order(state, id, Some(&format!("failed:{id}")), |o| {
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
    .await?;
    Ok(changed.order)
}

/// Our deadline passed (or the merchant closed the order). `check_again_at` is the
/// first late-capture check when the wallet did not confirm the close (None: it did,
/// or there is no wallet to ask).
async fn expire_order(
    state: &AppState,
    id: &OrderId,
    check_again_at: Option<i64>,
) -> Result<Order, ApiError> {
    let changed = change_order(state, id, Some(&format!("expired:{id}")), |o| {
        let Decision::Move { to, .. } = decide(o.status, OrderEvent::DeadlinePassed) else {
            return None;
        };
        let mut next = o.clone();
        next.status = to;
        next.next_check_at = check_again_at;
        let event = new_event(
            state,
            &next,
            EventKind::OrderExpired,
            order_view(state, &next),
        );
        Some((next, None, Some(event)))
    })
    .await?;
    Ok(changed.order)
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
///
/// A wallet amount or currency that differs from the order's posts nothing: the
/// order is flagged for review and leaves the reconciler (asking again would only
/// repeat the contradiction; a person must look). That flag is not a settle, so it
/// does not record `dedupe_key`: a later correct report still settles. A fee that
/// cannot be computed is an error (the wallet is asked to send again), never a
/// silent acknowledgement of money that was not posted.
pub async fn settle_payment(
    state: &AppState,
    id: &OrderId,
    paid: &Paid,
    dedupe_key: &str,
) -> Result<SettleResult, ApiError> {
    let current = state
        .store
        .order(id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound))?;
    // Amount and currency never change, so this check needs no compare-and-set.
    if paid.amount.minor() != current.amount_minor || paid.amount.currency() != current.currency {
        flag_amount_mismatch(state, id, paid).await?;
        return Ok(SettleResult::Mismatch);
    }
    let brand_from_rail = paid.brand.as_deref().map(|b| {
        state
            .wallets
            .brands
            .brand_for_psp_id(b)
            .map(|brand| brand.id().to_owned())
            .unwrap_or_else(|| b.to_owned())
    });
    // The merchant is read only when the rail names another brand than the order's
    // (its MDR for that brand replaces the order's); most callbacks need one read of
    // the order and one commit.
    let rebrands = |o: &Order| {
        brand_from_rail
            .as_deref()
            .is_some_and(|b| o.brand.as_deref() != Some(b))
    };
    let merchant = if rebrands(&current) {
        Some(
            state
                .store
                .merchant(&id.merchant())
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound))?,
        )
    } else {
        None
    };
    let mut unpostable = None;
    let changed = change_order_from(state, id, Some(dedupe_key), Some(current), |o| {
        let Decision::Move { to, paid_late } = decide(o.status, OrderEvent::Paid) else {
            return None;
        };
        let now = state.clock.now_ms();
        let mut next = o.clone();
        next.status = to;
        next.paid_late = paid_late;
        next.wallet_ref = Some(paid.wallet_ref.clone());
        next.paid_at = Some(paid.paid_at.unwrap_or(now));
        if let Some(brand) = &brand_from_rail {
            if rebrands(o) {
                let Some(merchant) = &merchant else {
                    // The order's brand changed since it was first read (a retry after
                    // a concurrent change): the caller's retry reads the merchant.
                    unpostable = Some("the order changed brand while being settled".to_owned());
                    return None;
                };
                next.fee_bps = fee_bps_for(state, merchant, Some(brand));
            }
            next.brand = Some(brand.clone());
        }
        let adapter = next.adapter.clone().unwrap_or_else(|| "unknown".to_owned());
        let postings = ledger::fee(next.amount_minor, next.fee_bps).and_then(|fee| {
            next.fee_minor = fee;
            ledger::payment_entry(&adapter, next.amount_minor, fee)
        });
        let postings = match postings {
            Ok(postings) => postings,
            Err(e) => {
                unpostable = Some(format!("{e} (MDR {} bps)", next.fee_bps));
                return None;
            }
        };
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
        shown.next_check_at = None;
        let event = new_event(
            state,
            &next,
            EventKind::OrderSucceeded,
            order_view(state, &shown),
        );
        Some((next, Some(entry), Some(event)))
    })
    .await?;
    if let Some(why) = unpostable {
        return Err(ApiError::internal(format!(
            "order {id} was paid but cannot be posted: {why}"
        )));
    }
    Ok(if changed.applied {
        SettleResult::Posted
    } else {
        SettleResult::Unchanged
    })
}

/// Flags an order whose wallet reported another amount or currency, and takes it out
/// of the reconciler. Idempotent: a repeated report changes nothing.
async fn flag_amount_mismatch(state: &AppState, id: &OrderId, paid: &Paid) -> Result<(), ApiError> {
    tracing::error!(order = %id, reported = %paid.amount, "wallet amount or currency differs from the order: flagged for review, nothing posted");
    change_order(state, id, None, |o| {
        if o.review.is_some() && o.next_check_at.is_none() {
            return None;
        }
        let mut next = o.clone();
        if next.review.is_none() {
            next.review = Some(format!(
                "wallet reported {} for an order of {}",
                paid.amount,
                Money::from_minor(o.amount_minor, o.currency)
                    .map(|m| m.to_string())
                    .unwrap_or_default()
            ));
        }
        next.wallet_ref = next.wallet_ref.clone().or(Some(paid.wallet_ref.clone()));
        next.next_check_at = None;
        Some((next, None, None))
    })
    .await?;
    Ok(())
}

/// Applies what `query` (or Kakao's `approve`) says about an order.
pub async fn apply_status(
    state: &AppState,
    order: &Order,
    status: WalletStatus,
) -> Result<(), ApiError> {
    let now = state.clock.now_ms();
    if let Some(paid) = reported_paid(&status) {
        settle_reported(state, &order.id, &paid).await?;
        return Ok(());
    }
    match status {
        WalletStatus::Succeeded { .. } | WalletStatus::Refunded { .. } => {}
        WalletStatus::Failed { code } => {
            fail_order(state, &order.id, &code).await?;
        }
        WalletStatus::Closed => {
            expire_order(state, &order.id, None).await?;
        }
        WalletStatus::Pending | WalletStatus::Unknown(_) => {
            if crate::domain::order::is_overdue(order.expires_at, now) {
                close_and_expire(state, order).await?;
            } else {
                reschedule_check(state, &order.id).await?;
            }
        }
    }
    Ok(())
}

/// The capture a wallet's answer to `query` reports. Refunded means it was paid
/// first: the capture must be on the book.
fn reported_paid(status: &WalletStatus) -> Option<Paid> {
    match status {
        WalletStatus::Succeeded {
            wallet_ref,
            amount,
            paid_at,
            brand,
        } => Some(Paid {
            wallet_ref: wallet_ref.clone(),
            amount: *amount,
            paid_at: paid_at.map(|t| t.timestamp_millis()),
            brand: brand.clone(),
        }),
        WalletStatus::Refunded {
            wallet_ref, amount, ..
        } => Some(Paid {
            wallet_ref: wallet_ref.clone(),
            amount: *amount,
            paid_at: None,
            brand: None,
        }),
        _ => None,
    }
}

/// Settles a capture found by asking the wallet (one dedupe key per order: every
/// query reports the same capture).
async fn settle_reported(state: &AppState, id: &OrderId, paid: &Paid) -> Result<(), ApiError> {
    settle_payment(state, id, paid, &format!("query-paid:{id}")).await?;
    Ok(())
}

/// When the reconciler should look at `order` next, from `now`: a poll interval for
/// an open order; for an expired one in its grace period as long again as the time
/// since its deadline (so checks back off), none after the grace period; a refund
/// check interval while refunds are in flight.
fn next_look(state: &AppState, order: &Order, now: i64) -> Option<i64> {
    let payments = &state.settings.payments;
    match order.status {
        OrderStatus::Created | OrderStatus::Pending => Some(now + payments.poll_interval_ms),
        OrderStatus::Expired => {
            let grace_end = order
                .expires_at
                .saturating_add(payments.expired_grace_secs.saturating_mul(1000));
            let wait = (now - order.expires_at).max(payments.poll_interval_ms);
            let at = now.saturating_add(wait).min(grace_end);
            (now < grace_end).then_some(at)
        }
        OrderStatus::Succeeded => {
            (order.refund_pending_minor > 0).then_some(now + payments.refund_check_interval_ms)
        }
        OrderStatus::Failed => None,
    }
}

/// Moves the order's next reconciler look to `next_look` (or ends the looks).
pub async fn reschedule_check(state: &AppState, id: &OrderId) -> Result<Order, ApiError> {
    let now = state.clock.now_ms();
    let changed = change_order(state, id, None, |o| {
        o.due_at()?;
        let mut next = o.clone();
        next.next_check_at = next_look(state, o, now);
        Some((next, None, None))
    })
    .await?;
    Ok(changed.order)
}

/// Ends the reconciler's looks at an order (it has nothing left to find out).
async fn stop_checking(state: &AppState, id: &OrderId) -> Result<(), ApiError> {
    change_order(state, id, None, |o| {
        o.next_check_at?;
        let mut next = o.clone();
        next.next_check_at = None;
        Some((next, None, None))
    })
    .await?;
    Ok(())
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

/// Closes the order at its wallet and expires it here. A close the wallet refuses
/// (it reports the order paid) or that fails is followed by a query: a capture that
/// landed meanwhile is settled instead (paid late if the order had already expired),
/// and an order the wallet did not confirm closed keeps being checked for a late
/// capture during the grace period.
async fn close_and_expire(state: &AppState, order: &Order) -> Result<Order, ApiError> {
    let Some(adapter) = adapter_of(state, order) else {
        // Nobody picked a wallet: there is nothing to close and nothing can be paid.
        return expire_order(state, &order.id, None).await;
    };
    let Err(close_error) = adapter.close(&order_ref(order)).await else {
        return expire_order(state, &order.id, None).await;
    };
    tracing::warn!(error = %close_error, order = %order.id, "the wallet did not close the order; asking it again");
    let answer = adapter.query(&order_ref(order)).await;
    if let Some(paid) = answer.as_ref().ok().and_then(reported_paid) {
        settle_reported(state, &order.id, &paid).await?;
        return state
            .store
            .order(&order.id)
            .await?
            .ok_or_else(|| ApiError::internal("order vanished"));
    }
    match answer {
        Ok(WalletStatus::Succeeded { .. } | WalletStatus::Refunded { .. }) => {}
        Ok(WalletStatus::Failed { code }) => {
            fail_order(state, &order.id, &code).await?;
        }
        Ok(WalletStatus::Closed) => {
            expire_order(state, &order.id, None).await?;
        }
        Ok(WalletStatus::Pending | WalletStatus::Unknown(_)) | Err(_) => {
            let now = state.clock.now_ms();
            let first_check = now + state.settings.payments.poll_interval_ms;
            expire_order(state, &order.id, Some(first_check)).await?;
        }
    }
    state
        .store
        .order(&order.id)
        .await?
        .ok_or_else(|| ApiError::internal("order vanished"))
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
        return Err(paid_before_close());
    }
    let closed = close_and_expire(state, order).await?;
    if closed.status == OrderStatus::Succeeded {
        return Err(paid_before_close());
    }
    Ok(closed)
}

fn paid_before_close() -> ApiError {
    ApiError::with(
        ErrorCode::OrderNotOpen,
        "the order was paid before it could be closed",
    )
}

/// One reconciler look at a due order; true when something was committed (so a
/// pass that only found failures knows it made no progress). Whatever happens,
/// an error included, the order does not stay due: it is rescheduled when nothing
/// else moved it.
pub async fn reconcile_order(state: &AppState, order: &Order) -> Result<bool, ApiError> {
    let looked = match order.status {
        OrderStatus::Created | OrderStatus::Pending => reconcile_open(state, order).await,
        OrderStatus::Expired => check_expired(state, order).await,
        OrderStatus::Succeeded => reissue_refunds(state, order).await,
        OrderStatus::Failed => Ok(()),
    };
    let now = state.clock.now_ms();
    let mut stored = state
        .store
        .order(&order.id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound))?;
    if stored.version == order.version && stored.due_at().is_some_and(|at| at <= now) {
        stored = reschedule_check(state, &order.id).await?;
    }
    looked.map(|()| stored.version != order.version)
}

async fn reconcile_open(state: &AppState, order: &Order) -> Result<(), ApiError> {
    let now = state.clock.now_ms();
    let overdue = crate::domain::order::is_overdue(order.expires_at, now);
    let Some(adapter) = adapter_of(state, order) else {
        // Nobody picked a wallet (a gateway QR nobody paid): expire when due.
        if overdue {
            expire_order(state, &order.id, None).await?;
        }
        return Ok(());
    };
    match adapter.query(&order_ref(order)).await {
        Ok(status) => apply_status(state, order, status).await,
        Err(e) => {
            tracing::info!(error = %e, order = %order.id, "wallet query failed; will ask again");
            if overdue && !e.is_retryable() {
                close_and_expire(state, order).await?;
            }
            Ok(())
        }
    }
}

/// An expired order whose close the wallet did not confirm: a late capture is
/// settled (paid late), a wallet that now reports it closed or failed ends the
/// checks, and anything else is closed again and checked later, until the grace
/// period is over.
async fn check_expired(state: &AppState, order: &Order) -> Result<(), ApiError> {
    let now = state.clock.now_ms();
    let Some(adapter) = adapter_of(state, order) else {
        return stop_checking(state, &order.id).await;
    };
    if next_look(state, order, now).is_none() {
        tracing::warn!(order = %order.id, "grace period over; the wallet never confirmed the close");
        return stop_checking(state, &order.id).await;
    }
    let answer = adapter.query(&order_ref(order)).await;
    if let Some(paid) = answer.as_ref().ok().and_then(reported_paid) {
        return settle_reported(state, &order.id, &paid).await;
    }
    match answer {
        Ok(WalletStatus::Succeeded { .. } | WalletStatus::Refunded { .. }) => Ok(()),
        Ok(WalletStatus::Closed | WalletStatus::Failed { .. }) => {
            stop_checking(state, &order.id).await
        }
        Ok(WalletStatus::Pending | WalletStatus::Unknown(_)) => {
            match adapter.close(&order_ref(order)).await {
                Ok(()) => stop_checking(state, &order.id).await,
                Err(AdapterError::Rejected { .. }) => {
                    // The wallet refuses to close what it reports paid: a capture
                    // landed between the query and the close. Settle it now.
                    let again = adapter.query(&order_ref(order)).await;
                    match again.as_ref().ok().and_then(reported_paid) {
                        Some(paid) => settle_reported(state, &order.id, &paid).await,
                        None => reschedule_check(state, &order.id).await.map(drop),
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, order = %order.id, "close failed again; will check later");
                    reschedule_check(state, &order.id).await.map(drop)
                }
            }
        }
        Err(e) => {
            tracing::info!(error = %e, order = %order.id, "wallet query failed; will ask again");
            reschedule_check(state, &order.id).await.map(drop)
        }
    }
}

/// The optional reason of a refund request: at most 80 characters, none a control.
fn refund_reason(req: &CreateRefundRequest) -> Result<Option<String>, ApiError> {
    match req.reason.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(r) if r.chars().count() <= 80 && !r.chars().any(char::is_control) => {
            Ok(Some(r.to_owned()))
        }
        Some(_) => Err(invalid(
            "reason",
            "at most 80 characters, no control characters",
        )),
    }
}

/// `POST /v1/orders/{id}/refunds`: reserve (atomic, against concurrent refunds), ask the
/// wallet with the refund id as its refund request number, then post or release. An
/// unknown outcome (timeout, "processing") leaves the refund pending and reserved;
/// the reconciler asks the wallet again with the same refund id until it is final.
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
    let reason = refund_reason(req)?;
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
        same_refund_request(state, &existing, amount, reason.as_deref())?;
        if existing.status != RefundStatus::Pending || existing.review.is_some() {
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
    ask_wallet_to_refund(state, &order, &refund).await
}

/// The refund an Idempotency-Key names is only resumed for the same request (amount,
/// reason) within the key's retention.
fn same_refund_request(
    state: &AppState,
    existing: &Refund,
    amount: Money,
    reason: Option<&str>,
) -> Result<(), ApiError> {
    within_retention(state, "refund", existing.id.as_str(), existing.created_at)?;
    let differs =
        if existing.amount_minor != amount.minor() || existing.currency != amount.currency() {
            Some("amount")
        } else if existing.reason.as_deref() != reason {
            Some("reason")
        } else {
            None
        };
    match differs {
        Some(field) => Err(key_reused(
            "refund",
            existing.id.as_str(),
            &format!("for a request with another {field}"),
        )),
        None => Ok(()),
    }
}

/// Sends (or sends again: the wallet dedupes on the refund id) a pending refund to
/// the wallet and records the answer. Returns the refund as stored afterwards.
async fn ask_wallet_to_refund(
    state: &AppState,
    order: &Order,
    refund: &Refund,
) -> Result<Refund, ApiError> {
    let adapter =
        adapter_of(state, order).ok_or_else(|| ApiError::new(ErrorCode::WalletUnavailable))?;
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
        Err(AdapterError::Unsupported(what)) => {
            finish_refund(state, &refund.id, false, None, Some(what.to_owned())).await
        }
        Err(AdapterError::AmountMismatch { expected, got }) => {
            flag_refund_review(
                state,
                &refund.id,
                &format!("wallet reported a refund of {got} for our refund of {expected}"),
            )
            .await
        }
        Ok(RefundOutcome::Pending) => Ok(refund.clone()),
        Err(e) => {
            // Unknown outcome: the refund stays pending and reserved; the reconciler
            // (or a retry with the same Idempotency-Key) asks again with this id.
            tracing::warn!(error = %e, refund = %refund.id, "refund outcome unknown; will ask the wallet again");
            Ok(refund.clone())
        }
    }
}

/// The reconciler's look at a succeeded order with refunds in flight: each pending
/// refund older than the refund check interval, and not held for review, is sent to
/// the wallet again with its own id. The order is then due again at the interval
/// while such refunds remain, or no longer.
async fn reissue_refunds(state: &AppState, order: &Order) -> Result<(), ApiError> {
    let now = state.clock.now_ms();
    let interval = state.settings.payments.refund_check_interval_ms;
    let waiting = |r: &Refund| r.status == RefundStatus::Pending && r.review.is_none();
    for refund in state.store.refunds_of(&order.id).await? {
        if waiting(&refund) && refund.created_at + interval <= now {
            let current = state
                .store
                .order(&order.id)
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound))?;
            if let Err(e) = ask_wallet_to_refund(state, &current, &refund).await {
                tracing::warn!(error = %e, refund = %refund.id, "could not ask the wallet about a pending refund");
            }
        }
    }
    let remaining = state.store.refunds_of(&order.id).await?;
    let next_at = remaining.iter().any(waiting).then_some(now + interval);
    change_order(state, &order.id, None, |o| {
        if o.next_check_at == next_at || (next_at.is_none() && o.due_at().is_none()) {
            return None;
        }
        let mut next = o.clone();
        next.next_check_at = next_at;
        Some((next, None, None))
    })
    .await?;
    Ok(())
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
        let check_at = now + state.settings.payments.refund_check_interval_ms;
        let mut next = order.clone();
        next.refund_pending_minor += amount.minor();
        next.next_check_at = Some(order.due_at().map_or(check_at, |at| at.min(check_at)));
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
            review: None,
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

/// The refund-posting part of a commit: the order with the refund added to its
/// refunded total and the balanced reversal entry.
fn post_refund(
    order: &Order,
    refund: &Refund,
    next: &mut Order,
    now: i64,
) -> Result<LedgerEntry, ApiError> {
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
    Ok(LedgerEntry {
        id: LedgerEntry::refund_id(&order.id, &refund.id),
        merchant_id: order.merchant_id.clone(),
        currency: order.currency,
        order_id: order.id.clone(),
        kind: EntryKind::Refund,
        postings,
        created_at: now,
    })
}

/// Commits one change to a refund and its order, retrying on a concurrent change of
/// the order. `plan` gets the stored refund and order and returns the order's next
/// state, the refund's, the entry, the event and the dedupe key (None = nothing to
/// do). The order is read before the refund: every refund write bumps its order's
/// version, so a refund changed after the order was read fails the version check
/// instead of being overwritten with a stale copy.
async fn change_refund<F>(
    state: &AppState,
    refund_id: &RefundId,
    mut plan: F,
) -> Result<Refund, ApiError>
where
    F: FnMut(&Refund, &Order, i64) -> Result<Option<RefundPlan>, ApiError>,
{
    let order_id = state
        .store
        .refund(refund_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?
        .order_id;
    for _ in 0..8 {
        let order = state
            .store
            .order(&order_id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound))?;
        let refund = state
            .store
            .refund(refund_id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
        let now = state.clock.now_ms();
        let Some(RefundPlan {
            mut order_next,
            mut refund_next,
            entry,
            event,
            dedupe_key,
        }) = plan(&refund, &order, now)?
        else {
            return Ok(refund);
        };
        order_next.version = order.version + 1;
        order_next.updated_at = now;
        if order_next.due_at().is_none() {
            order_next.next_check_at = None;
        }
        refund_next.updated_at = now;
        let change = OrderChange {
            order: order_next,
            expected_version: order.version,
            dedupe_key,
            refund: Some(refund_next.clone()),
            entry,
            event,
        };
        match state.store.commit(&change, now).await? {
            CommitOutcome::Applied => return Ok(refund_next),
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

/// What one refund commit writes.
struct RefundPlan {
    order_next: Order,
    refund_next: Refund,
    entry: Option<LedgerEntry>,
    event: Option<Event>,
    dedupe_key: Option<String>,
}

/// Records the wallet's final word on a refund — one atomic commit. Confirmed: a
/// pending refund is posted; one we had recorded as failed is posted late when what is
/// left of the capture covers it (see [`late_refund_plan`]), decided on the refund as
/// re-read for the commit, so a failure that raced this confirmation cannot leave
/// moved money off the books. Refused: a pending refund is released; a succeeded one
/// never goes back.
pub async fn finish_refund(
    state: &AppState,
    refund_id: &RefundId,
    succeeded: bool,
    wallet_refund_ref: Option<String>,
    failure: Option<String>,
) -> Result<Refund, ApiError> {
    change_refund(state, refund_id, |refund, order, now| {
        match (refund.status, succeeded) {
            (RefundStatus::Pending, _) => {}
            (RefundStatus::Failed, true) => {
                return late_refund_plan(state, refund, order, now, wallet_refund_ref.clone());
            }
            _ => return Ok(None),
        }
        let mut next = order.clone();
        next.refund_pending_minor = (next.refund_pending_minor - refund.amount_minor).max(0);
        let mut done = refund.clone();
        let (entry, kind) = if succeeded {
            let entry = post_refund(order, refund, &mut next, now)?;
            done.status = RefundStatus::Succeeded;
            done.wallet_refund_ref = wallet_refund_ref.clone();
            (Some(entry), EventKind::RefundSucceeded)
        } else {
            done.status = RefundStatus::Failed;
            done.failure = failure.clone();
            (None, EventKind::RefundFailed)
        };
        let mut shown = done.clone();
        shown.updated_at = now;
        let event = new_event(state, order, kind, refund_view(&shown));
        Ok(Some(RefundPlan {
            order_next: next,
            refund_next: done,
            entry,
            event: Some(event),
            dedupe_key: Some(format!("refund-final:{}", refund.id)),
        }))
    })
    .await
}

/// A wallet confirmed a refund we had recorded as failed: the money moved. It is
/// posted as a late refund (flagged for review, `refund.succeeded` sent) when what is
/// left of the capture covers it; otherwise nothing is posted and the refund and its
/// order are flagged for a person.
fn late_refund_plan(
    state: &AppState,
    refund: &Refund,
    order: &Order,
    now: i64,
    wallet_refund_ref: Option<String>,
) -> Result<Option<RefundPlan>, ApiError> {
    let dedupe_key = Some(format!("refund-late:{}", refund.id));
    let mut next = order.clone();
    let mut done = refund.clone();
    let covered =
        order.status == OrderStatus::Succeeded && refund.amount_minor <= order.refundable_minor();
    if !covered {
        if refund.review.is_some() {
            return Ok(None);
        }
        let why = format!(
            "the wallet completed refund {} of {} after reporting it failed, but only {} is left to refund: not posted",
            refund.id,
            money_of(refund.amount_minor, refund.currency),
            money_of(order.refundable_minor(), order.currency),
        );
        tracing::error!(refund = %refund.id, "{why}");
        done.review = Some(why.clone());
        next.review = next.review.clone().or(Some(why));
        return Ok(Some(RefundPlan {
            order_next: next,
            refund_next: done,
            entry: None,
            event: None,
            dedupe_key,
        }));
    }
    let entry = post_refund(order, refund, &mut next, now)?;
    done.status = RefundStatus::Succeeded;
    done.wallet_refund_ref = wallet_refund_ref.or(done.wallet_refund_ref);
    done.review = Some(format!(
        "the wallet completed this refund after reporting it failed ({}): posted late",
        refund.failure.as_deref().unwrap_or("no reason given")
    ));
    let mut shown = done.clone();
    shown.updated_at = now;
    let event = new_event(
        state,
        order,
        EventKind::RefundSucceeded,
        refund_view(&shown),
    );
    Ok(Some(RefundPlan {
        order_next: next,
        refund_next: done,
        entry: Some(entry),
        event: Some(event),
        dedupe_key,
    }))
}

/// Holds a refund for a person, its status unchanged: a pending one stays pending and
/// reserved (the money may or may not have moved) and is no longer sent to the
/// wallet again; a failed one stays failed and unposted.
pub async fn flag_refund_review(
    state: &AppState,
    refund_id: &RefundId,
    why: &str,
) -> Result<Refund, ApiError> {
    tracing::error!(refund = %refund_id, why, "refund held for review");
    change_refund(state, refund_id, |refund, order, _| {
        if refund.status == RefundStatus::Succeeded || refund.review.is_some() {
            return Ok(None);
        }
        let mut done = refund.clone();
        done.review = Some(why.to_owned());
        Ok(Some(RefundPlan {
            order_next: order.clone(),
            refund_next: done,
            entry: None,
            event: None,
            dedupe_key: None,
        }))
    })
    .await
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
