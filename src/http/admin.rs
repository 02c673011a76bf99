//! Admin API (bearer admin token): onboarding merchants, plates and API keys.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::extract::{AdminAuth, JsonBody, RawBody};
use super::idempotent::{self, Reply};
use crate::domain::MerchantId;
use crate::error::{ApiError, ErrorCode};
use crate::services::merchants::{
    self, CreateMerchantRequest, CreatePlateRequest, MerchantView, PlateContext,
};
use crate::startup::AppState;
use crate::store::IdemScope;

fn to_value<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(ApiError::internal)
}

pub async fn create_merchant(
    _: AdminAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<CreateMerchantRequest>,
) -> Result<HttpResponse, ApiError> {
    let input = merchants::validate_new_merchant(&body.value)?;
    idempotent::run(&req, &state, IdemScope::Admin, &body.raw, || async {
        let ctx = PlateContext::from_settings(&state.settings, &state.tokens);
        let created =
            merchants::create_merchant(&state.store, &ctx, input, state.clock.now_ms()).await?;
        Ok(Reply(StatusCode::CREATED, to_value(&created)?))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
}

pub async fn list_merchants(
    _: AdminAuth,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::with(
            ErrorCode::InvalidQuery,
            "limit: must be between 1 and 200",
        ));
    }
    let after =
        match query.after.as_deref() {
            None => None,
            Some(cursor) => Some(MerchantId::parse(cursor).ok_or_else(|| {
                ApiError::with(ErrorCode::InvalidQuery, "after: not a merchant id")
            })?),
        };
    let page = state.store.list_merchants(after.as_ref(), limit).await?;
    let next_cursor = (page.len() == limit)
        .then(|| page.last().map(|m| m.id.to_string()))
        .flatten();
    let data: Vec<MerchantView> = page.iter().map(MerchantView::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data, "next_cursor": next_cursor })))
}

pub async fn get_merchant(
    _: AdminAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let merchant = merchants::merchant_or_404(&state.store, &path).await?;
    Ok(HttpResponse::Ok().json(MerchantView::from(&merchant)))
}

pub async fn create_plate(
    _: AdminAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonBody<CreatePlateRequest>,
) -> Result<HttpResponse, ApiError> {
    let merchant = merchants::merchant_or_404(&state.store, &path).await?;
    idempotent::run(&req, &state, IdemScope::Admin, &body.raw, || async {
        let ctx = PlateContext::from_settings(&state.settings, &state.tokens);
        let view = merchants::add_plate(
            &state.store,
            &ctx,
            &merchant,
            &body.value,
            state.clock.now_ms(),
        )
        .await?;
        Ok(Reply(StatusCode::CREATED, to_value(&view)?))
    })
    .await
}

pub async fn list_plates(
    _: AdminAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let merchant = merchants::merchant_or_404(&state.store, &path).await?;
    super::merchant::plates_response(&state, &merchant).await
}

pub async fn rotate_api_key(
    _: AdminAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    RawBody(body): RawBody,
) -> Result<HttpResponse, ApiError> {
    // Nothing to send: an empty body or `{}`. It counts for the idempotency fingerprint.
    let empty = body.iter().all(u8::is_ascii_whitespace)
        || super::extract::parse_json::<EmptyObject>(&body).is_ok();
    if !empty {
        return Err(ApiError::with(
            ErrorCode::InvalidRequest,
            "this request takes no body (or {})",
        ));
    }
    let merchant = merchants::merchant_or_404(&state.store, &path).await?;
    idempotent::run(&req, &state, IdemScope::Admin, &body, || async {
        let issued =
            merchants::rotate_api_key(&state.store, &merchant.id, state.clock.now_ms()).await?;
        Ok(Reply(StatusCode::CREATED, to_value(&issued)?))
    })
    .await
}

/// `{}` and nothing else.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyObject {}
