//! Merchant API for orders, refunds, balances and events (bearer API key). Every
//! lookup is filtered by the authenticated merchant: another merchant's order is
//! "not found".

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use sesame_adapters::money::Money;

use super::extract::{JsonBody, MerchantAuth, RawBody};
use super::idempotent::{self, Reply};
use crate::clock::rfc3339;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::{EventId, Merchant, OrderId};
use crate::error::{ApiError, ErrorCode};
use crate::services::idempotency::HEADER;
use crate::services::payments::{
    self, CreateOrderRequest, CreateRefundRequest, order_view, refund_view,
};
use crate::startup::AppState;
use crate::store::{IdemScope, OrderFilter};

fn idem_key(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The merchant's own order, or 404.
pub async fn own_order(state: &AppState, merchant: &Merchant, id: &str) -> Result<Order, ApiError> {
    let not_found = || ApiError::new(ErrorCode::OrderNotFound);
    let id = OrderId::parse(id).ok_or_else(not_found)?;
    if id.merchant() != merchant.id {
        return Err(not_found());
    }
    state.store.order(&id).await?.ok_or_else(not_found)
}

pub async fn create_order(
    MerchantAuth(merchant): MerchantAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<CreateOrderRequest>,
) -> Result<HttpResponse, ApiError> {
    let input = payments::validate_order(&state, &body.value)?;
    let key = idem_key(&req);
    let scope = IdemScope::Merchant(merchant.id.clone());
    idempotent::run(&req, &state, scope, &body.raw, || async {
        let order = payments::create_order(&state, &merchant, input, key.as_deref()).await?;
        Ok(Reply(StatusCode::CREATED, order_view(&state, &order)))
    })
    .await
}

pub async fn get_order(
    MerchantAuth(merchant): MerchantAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let order = own_order(&state, &merchant, &path).await?;
    let mut view = order_view(&state, &order);
    let entries = state.store.entries_of(&order.id).await?;
    let refunds = state.store.refunds_of(&order.id).await?;
    view["ledger"] = payments::entries_view(&entries);
    view["refunds"] = refunds.iter().map(refund_view).collect();
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListOrdersQuery {
    status: Option<String>,
    created_from: Option<String>,
    created_to: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

fn parse_time(field: &str, value: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::with(
                ErrorCode::InvalidQuery,
                format!("{field}: an RFC 3339 time such as 2026-11-29T12:00:00Z"),
            )
        })
}

pub async fn list_orders(
    MerchantAuth(merchant): MerchantAuth,
    state: web::Data<AppState>,
    query: web::Query<ListOrdersQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::with(
            ErrorCode::InvalidQuery,
            "limit: between 1 and 200",
        ));
    }
    let status = match query.status.as_deref() {
        None => None,
        Some("created") => Some(OrderStatus::Created),
        Some("pending") => Some(OrderStatus::Pending),
        Some("succeeded") => Some(OrderStatus::Succeeded),
        Some("failed") => Some(OrderStatus::Failed),
        Some("expired") => Some(OrderStatus::Expired),
        Some(_) => {
            return Err(ApiError::with(
                ErrorCode::InvalidQuery,
                "status: one of created, pending, succeeded, failed, expired",
            ));
        }
    };
    let filter = OrderFilter {
        status,
        created_from: query
            .created_from
            .as_deref()
            .map(|v| parse_time("created_from", v))
            .transpose()?,
        created_to: query
            .created_to
            .as_deref()
            .map(|v| parse_time("created_to", v))
            .transpose()?,
    };
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            OrderId::parse(c)
                .filter(|id| id.merchant() == merchant.id)
                .ok_or_else(|| {
                    ApiError::with(ErrorCode::InvalidQuery, "cursor: not one of your orders")
                })?,
        ),
    };
    let page = state
        .store
        .list_orders(&merchant.id, &filter, cursor.as_ref(), limit)
        .await?;
    let next_cursor = (page.len() == limit)
        .then(|| page.last().map(|o| o.id.to_string()))
        .flatten();
    let data: Vec<_> = page.iter().map(|o| order_view(&state, o)).collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data, "next_cursor": next_cursor })))
}

pub async fn close_order(
    MerchantAuth(merchant): MerchantAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    RawBody(body): RawBody,
) -> Result<HttpResponse, ApiError> {
    let order = own_order(&state, &merchant, &path).await?;
    let scope = IdemScope::Merchant(merchant.id.clone());
    idempotent::run(&req, &state, scope, &body, || async {
        let closed = payments::close_order(&state, &order).await?;
        Ok(Reply(StatusCode::OK, order_view(&state, &closed)))
    })
    .await
}

pub async fn create_refund(
    MerchantAuth(merchant): MerchantAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonBody<CreateRefundRequest>,
) -> Result<HttpResponse, ApiError> {
    let order = own_order(&state, &merchant, &path).await?;
    let key = idem_key(&req);
    let scope = IdemScope::Merchant(merchant.id.clone());
    idempotent::run(&req, &state, scope, &body.raw, || async {
        let refund = payments::refund_order(&state, &order.id, &body.value, key.as_deref()).await?;
        let status = match refund.status {
            crate::domain::refund::RefundStatus::Pending => StatusCode::ACCEPTED,
            _ => StatusCode::CREATED,
        };
        Ok(Reply(status, refund_view(&refund)))
    })
    .await
}

pub async fn list_refunds(
    MerchantAuth(merchant): MerchantAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let order = own_order(&state, &merchant, &path).await?;
    let refunds = state.store.refunds_of(&order.id).await?;
    let data: Vec<_> = refunds.iter().map(refund_view).collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data })))
}

/// `GET /v1/balances`: per currency, what Sesame owes the merchant and what it earned.
pub async fn balances(
    MerchantAuth(merchant): MerchantAuth,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let balances = state.store.balances(&merchant.id).await?;
    let mut by_currency: std::collections::BTreeMap<
        &str,
        serde_json::Map<String, serde_json::Value>,
    > = std::collections::BTreeMap::new();
    for b in &balances {
        let signed = if b.balance < 0 {
            format!(
                "-{}",
                Money::from_minor(-b.balance, b.currency)
                    .map(|m| m.to_decimal_string())
                    .unwrap_or_default()
            )
        } else {
            Money::from_minor(b.balance, b.currency)
                .map(|m| m.to_decimal_string())
                .unwrap_or_default()
        };
        by_currency
            .entry(b.currency.code())
            .or_default()
            .insert(b.account.clone(), json!(signed));
    }
    let data: Vec<_> = by_currency
        .into_iter()
        .map(|(currency, accounts)| {
            let payable = balances
                .iter()
                .find(|b| b.currency.code() == currency && b.account == crate::domain::ledger::MERCHANT_PAYABLE)
                .map(|b| -b.balance)
                .unwrap_or(0);
            let currency_value = sesame_adapters::money::Currency::parse(currency).ok();
            json!({
                "currency": currency,
                "payable": currency_value.and_then(|c| Money::from_minor(payable.max(0), c).ok()).map(|m| m.to_decimal_string()),
                "accounts": accounts,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/events?after=`: catch-up for merchants whose endpoint missed webhooks.
pub async fn list_events(
    MerchantAuth(merchant): MerchantAuth,
    state: web::Data<AppState>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::with(
            ErrorCode::InvalidQuery,
            "limit: between 1 and 200",
        ));
    }
    let after = match query.after.as_deref() {
        None => None,
        Some(a) => Some(
            EventId::parse(a)
                .ok_or_else(|| ApiError::with(ErrorCode::InvalidQuery, "after: not an event id"))?,
        ),
    };
    let events = state
        .store
        .events_after(&merchant.id, after.as_ref(), limit)
        .await?;
    let data: Vec<_> = events
        .iter()
        .map(|e| json!({"id": e.id, "type": e.kind.as_str(), "created_at": rfc3339(e.created_at), "data": e.data}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data })))
}

/// `GET /v1/events/{id}`: one event with its delivery status.
pub async fn get_event(
    MerchantAuth(merchant): MerchantAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::new(ErrorCode::EventNotFound);
    let id = EventId::parse(&path).ok_or_else(not_found)?;
    let (event, delivery) = state
        .store
        .event(&merchant.id, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(json!({
        "id": event.id,
        "type": event.kind.as_str(),
        "created_at": rfc3339(event.created_at),
        "data": event.data,
        "delivery": delivery,
    })))
}

/// `POST /v1/events/{id}/resend`: puts the event back in the outbox.
pub async fn resend_event(
    MerchantAuth(merchant): MerchantAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::new(ErrorCode::EventNotFound);
    let id = EventId::parse(&path).ok_or_else(not_found)?;
    if !state
        .store
        .resend_event(&merchant.id, &id, state.clock.now_ms())
        .await?
    {
        return Err(not_found());
    }
    Ok(HttpResponse::Accepted().json(json!({ "id": id, "resend": "queued" })))
}
