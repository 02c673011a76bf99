//! Plate images: `qr.png`, `qr.svg` and the printable A6 `poster.svg`.
//!
//! Rendering is CPU work, so it runs on the blocking pool and its result is cached
//! (`RenderCache`); the ETag is computed from the inputs without rendering, so a
//! conditional request (`If-None-Match`) is answered 304 at the cost of two store reads.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::extract::Caller;
use crate::domain::{Merchant, Plate, PlateId};
use crate::error::{ApiError, ErrorCode};
use crate::qr::render::{Kind, Poster, RenderCache, RenderError, RenderParams};
use crate::services::merchants::PlateContext;
use crate::startup::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageQuery {
    size: Option<String>,
    margin: Option<String>,
    ecc: Option<String>,
    /// Poster only: comma-separated languages among `en`, `zh`, `pt`.
    lang: Option<String>,
}

/// Loads the plate if the caller may see it. Someone else's plate is "not found",
/// not "forbidden", so plate ids cannot be probed.
async fn visible_plate(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(Merchant, Plate), ApiError> {
    let not_found = || ApiError::new(ErrorCode::PlateNotFound);
    let id = PlateId::parse(id).ok_or_else(not_found)?;
    let plate = state.store.plate(&id).await?.ok_or_else(not_found)?;
    let merchant = match caller {
        Caller::Merchant(m) if m.id == plate.merchant_id => (**m).clone(),
        Caller::Merchant(_) => return Err(not_found()),
        Caller::Admin => state
            .store
            .merchant(&plate.merchant_id)
            .await?
            .ok_or_else(not_found)?,
    };
    Ok((merchant, plate))
}

fn render_error(e: RenderError) -> ApiError {
    match e {
        RenderError::InvalidParam { .. } | RenderError::TooSmall { .. } => {
            ApiError::with(ErrorCode::InvalidQuery, e.to_string())
        }
        other => ApiError::with(ErrorCode::PayloadTooLong, other.to_string()),
    }
}

/// Merchant names for the poster in the requested languages (default: all it has).
fn poster_names<'a>(merchant: &'a Merchant, lang: Option<&str>) -> Result<Vec<&'a str>, ApiError> {
    let wanted: Vec<&str> = match lang {
        None => vec!["en", "zh", "pt"],
        Some(list) => list.split(',').map(str::trim).collect(),
    };
    let mut names = Vec::new();
    for code in wanted {
        let name = match code {
            "en" => Some(merchant.name.as_str()),
            "zh" => merchant.name_zh.as_deref(),
            "pt" => merchant.name_pt.as_deref(),
            _ => {
                return Err(ApiError::with(
                    ErrorCode::InvalidQuery,
                    "lang: use a comma-separated list of en, zh, pt",
                ));
            }
        };
        if let Some(name) = name
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    if names.is_empty() {
        names.push(merchant.name.as_str());
    }
    Ok(names)
}

/// Owned poster texts, so they can move to the blocking pool.
pub(crate) struct PosterInputs {
    names: Vec<String>,
    label: String,
    amount: Option<String>,
    wallets: Vec<String>,
}

fn poster_of(inputs: &PosterInputs) -> Poster<'_> {
    Poster {
        names: inputs.names.iter().map(String::as_str).collect(),
        label: &inputs.label,
        amount: inputs.amount.as_deref(),
        wallets: inputs.wallets.iter().map(String::as_str).collect(),
        footer: None,
    }
}

async fn image(
    kind: Kind,
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ImageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (merchant, plate) = visible_plate(&state, &caller, &path).await?;
    plate_image(kind, &req, &state, &merchant, &plate, &query).await
}

/// The rendering options a query asks for.
pub(crate) fn image_params(state: &AppState, query: &ImageQuery) -> Result<RenderParams, ApiError> {
    RenderParams::parse(
        query.size.as_deref(),
        query.margin.as_deref(),
        query.ecc.as_deref(),
        state.settings.qr.max_size_px,
    )
    .map_err(render_error)
}

/// A plate's code or poster, for a caller already allowed to see the plate.
pub(crate) async fn plate_image(
    kind: Kind,
    req: &HttpRequest,
    state: &web::Data<AppState>,
    merchant: &Merchant,
    plate: &Plate,
    query: &ImageQuery,
) -> Result<HttpResponse, ApiError> {
    let params = image_params(state, query)?;
    let payload =
        PlateContext::from_settings(&state.settings, &state.tokens).payload(merchant, plate)?;
    let amount = plate
        .fixed_amount_minor
        .and_then(|minor| sesame_adapters::money::Money::from_minor(minor, merchant.currency).ok())
        .map(|m| m.to_string());
    let names: Vec<String> = poster_names(merchant, query.lang.as_deref())?
        .into_iter()
        .map(str::to_owned)
        .collect();
    let wallets = state.accepted_wallets.clone();
    let label = plate.label.clone();
    let poster_inputs = (kind == Kind::Poster).then_some(PosterInputs {
        names,
        label,
        amount,
        wallets,
    });
    image_response(kind, req, state, payload, params, poster_inputs).await
}

/// `payload` rendered as `kind` (plates, orders): the ETag is computed without
/// rendering, a matching `If-None-Match` gets a 304, and a render runs on the blocking
/// pool through the cache.
pub(crate) async fn image_response(
    kind: Kind,
    req: &HttpRequest,
    state: &web::Data<AppState>,
    payload: String,
    params: RenderParams,
    poster_inputs: Option<PosterInputs>,
) -> Result<HttpResponse, ApiError> {
    let etag = RenderCache::etag_for(
        kind,
        &payload,
        &params,
        poster_inputs.as_ref().map(poster_of).as_ref(),
    );
    let cache_control = (header::CACHE_CONTROL, "private, max-age=3600");
    let not_modified = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    if not_modified {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header(cache_control)
            .finish());
    }
    let render_state = state.clone();
    let rendered = web::block(move || {
        render_state.renders.get_or_render(
            kind,
            &payload,
            &params,
            poster_inputs.as_ref().map(poster_of).as_ref(),
        )
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(render_error)?;
    Ok(HttpResponse::Ok()
        .content_type(rendered.content_type)
        .insert_header((header::ETAG, rendered.etag.clone()))
        .insert_header(cache_control)
        .body(rendered.bytes.clone()))
}

pub async fn png(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ImageQuery>,
) -> Result<HttpResponse, ApiError> {
    image(Kind::Png, req, caller, state, path, query).await
}

pub async fn svg(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ImageQuery>,
) -> Result<HttpResponse, ApiError> {
    image(Kind::Svg, req, caller, state, path, query).await
}

pub async fn poster(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ImageQuery>,
) -> Result<HttpResponse, ApiError> {
    image(Kind::Poster, req, caller, state, path, query).await
}
