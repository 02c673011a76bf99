//! Merchant API (bearer API key): the merchant's own plates. A merchant never sees
//! another merchant's data: every lookup is filtered by the authenticated merchant.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::extract::MerchantAuth;
use crate::domain::Merchant;
use crate::error::ApiError;
use crate::services::merchants::PlateContext;
use crate::startup::AppState;

pub async fn plates_response(
    state: &AppState,
    merchant: &Merchant,
) -> Result<HttpResponse, ApiError> {
    let ctx = PlateContext::from_settings(&state.settings, &state.tokens);
    let plates = state.store.plates_of(&merchant.id).await?;
    let views = plates
        .iter()
        .map(|plate| ctx.view(merchant, plate))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(json!({ "data": views })))
}

/// `GET /v1/qr`: the authenticated merchant's plates with their payloads and image URLs.
pub async fn list_plates(
    MerchantAuth(merchant): MerchantAuth,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    plates_response(&state, &merchant).await
}
