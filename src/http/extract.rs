//! Extractors: JSON bodies (size-capped, strict), bearer credentials.
//!
//! Bodies are read here, not by actix's `Json`, so every failure maps to one code
//! of the table and handlers also get the raw bytes (for idempotency fingerprints).

use std::future::{Future, Ready, ready};
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut, Data};
use actix_web::{FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::domain::{ApiKey, Merchant, MerchantStatus};
use crate::error::{ApiError, ErrorCode};
use crate::startup::AppState;

/// Largest request body accepted anywhere.
pub const MAX_BODY: usize = 64 * 1024;

/// A JSON body, parsed strictly (`deny_unknown_fields` on the target type), with its raw bytes.
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(raw).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::with(ErrorCode::InvalidRequest, e.to_string())
        }
        _ => ApiError::with(ErrorCode::MalformedJson, format!("malformed JSON: {e}")),
    })
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().eq_ignore_ascii_case("application/json"))
        .unwrap_or(false)
}

/// Reads the whole body, refusing more than `MAX_BODY` bytes (before reading, when
/// Content-Length says so).
pub async fn read_body(req: &HttpRequest, payload: &mut Payload) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY) {
        return Err(ApiError::new(ErrorCode::BodyTooLarge));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::with(
                ErrorCode::MalformedJson,
                format!("could not read body: {e}"),
            )
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::new(ErrorCode::BodyTooLarge));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let raw = read_body(&req, &mut payload).await?;
            if !is_json(&req) {
                return Err(ApiError::new(ErrorCode::UnsupportedMediaType));
            }
            let value = parse_json(&raw)?;
            Ok(JsonBody { value, raw })
        })
    }
}

/// The raw request body, read with the same size cap and error codes as JSON bodies
/// (actix's own `Bytes` extractor answers an oversized body in plain text).
pub struct RawBody(pub Bytes);

impl FromRequest for RawBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move { read_body(&req, &mut payload).await.map(RawBody) })
    }
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn state(req: &HttpRequest) -> Result<Data<AppState>, ApiError> {
    req.app_data::<Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("application state missing"))
}

/// The admin bearer token.
pub struct AdminAuth;

impl FromRequest for AdminAuth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(state(req).and_then(|state| match bearer(req) {
            Some(token) if state.admin.matches(token) => Ok(AdminAuth),
            _ => Err(ApiError::new(ErrorCode::Unauthorized)),
        }))
    }
}

async fn merchant_for_key(state: &AppState, token: &str) -> Result<Option<Merchant>, ApiError> {
    // Keys have a fixed shape; anything else is rejected without a store round trip.
    if !token.starts_with(ApiKey::PREFIX) || token.len() != ApiKey::PREFIX.len() + 52 {
        return Ok(None);
    }
    let merchant = state
        .store
        .merchant_by_api_key(&ApiKey::hash_of(token))
        .await?;
    Ok(merchant.filter(|m| m.status == MerchantStatus::Active))
}

/// A merchant authenticated by its API key.
pub struct MerchantAuth(pub Merchant);

impl FromRequest for MerchantAuth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer(req).map(str::to_owned);
        let state = state(req);
        Box::pin(async move {
            let state = state?;
            let token = token.ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?;
            merchant_for_key(&state, &token)
                .await?
                .map(MerchantAuth)
                .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))
        })
    }
}

/// Either the operator (admin token) or one merchant (its API key).
pub enum Caller {
    Admin,
    Merchant(Box<Merchant>),
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer(req).map(str::to_owned);
        let state = state(req);
        Box::pin(async move {
            let state = state?;
            let token = token.ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?;
            if state.admin.matches(&token) {
                return Ok(Caller::Admin);
            }
            merchant_for_key(&state, &token)
                .await?
                .map(|m| Caller::Merchant(Box::new(m)))
                .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))
        })
    }
}

/// Query-string errors use the code table too.
pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default()
        .error_handler(|err, _req| ApiError::with(ErrorCode::InvalidQuery, err.to_string()).into())
}

pub fn path_config() -> actix_web::web::PathConfig {
    actix_web::web::PathConfig::default()
        .error_handler(|_err, _req| ApiError::new(ErrorCode::NotFound).into())
}
