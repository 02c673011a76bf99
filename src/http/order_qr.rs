//! A dynamic order's QR code: `GET /v1/orders/{id}/qr.png` and `qr.svg` (merchant API
//! key; another merchant's order is "not found"). It encodes `pay.qr` of the order
//! JSON: the gateway URL any wallet's scanner opens (an order created without
//! `wallet`), or the wallet's own QR string or cashier URL. Rendered and cached
//! exactly as plate images are (`http::plates`), with the same query options.

use actix_web::{HttpRequest, HttpResponse, web};

use super::extract::MerchantAuth;
use super::orders::own_order;
use super::plates::{ImageQuery, image_params, image_response};
use crate::error::{ApiError, ErrorCode};
use crate::qr::render::Kind;
use crate::services::shopper::qr_payload;
use crate::startup::AppState;

async fn image(
    kind: Kind,
    MerchantAuth(merchant): MerchantAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ImageQuery>,
) -> Result<HttpResponse, ApiError> {
    let order = own_order(&state, &merchant, &path).await?;
    let payload = qr_payload(&state, &order).ok_or_else(|| {
        ApiError::with(
            ErrorCode::NotFound,
            "this order has no QR code (a plate order's QR is its plate; a customer-code order has none)",
        )
    })?;
    let params = image_params(&state, &query)?;
    image_response(kind, &req, &state, payload, params, None).await
}

pub async fn png(
    auth: MerchantAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ImageQuery>,
) -> Result<HttpResponse, ApiError> {
    image(Kind::Png, auth, req, state, path, query).await
}

pub async fn svg(
    auth: MerchantAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ImageQuery>,
) -> Result<HttpResponse, ApiError> {
    image(Kind::Svg, auth, req, state, path, query).await
}
