//! The local demo: on `sesame serve` in the local environment, a merchant "Sesame Demo
//! Cafe" (with its Chinese and Portuguese names) and a plate exist, created once. The
//! demo merchant's id is remembered in the store (as a named server value), so every
//! later start finds the same merchant and plate. Its poster is served without the
//! admin token at `/demo/poster.svg`, in the local environment only, so a newcomer can
//! open it in a browser. Must never: run or serve anything outside the local
//! environment, or create a second demo merchant.

use crate::domain::{ApiKey, Merchant, MerchantId, Plate};
use crate::error::ApiError;
use crate::services::merchants::{self, CreateMerchantRequest, NewPlate};
use crate::startup::AppState;
use crate::store::MerchantBundle;

/// Store key remembering the demo merchant's id.
pub const DEMO_MERCHANT_KEY: &str = "demo_merchant_id";

pub struct Demo {
    pub merchant: Merchant,
    pub plate: Plate,
    /// What the shopper scans: `{public_base_url}/q/{token}`.
    pub plate_url: String,
    /// The printable poster, openable in a browser (local environment only).
    pub poster_url: String,
}

/// Where the demo poster is served.
pub const POSTER_PATH: &str = "/demo/poster.svg";

/// Whether this process runs the demo (local environment with `shopper.demo`).
pub fn enabled(settings: &crate::config::Settings) -> bool {
    settings.environment == crate::config::Environment::Local && settings.shopper.demo
}

/// Finds the demo merchant and its first plate, creating them on the first call.
pub async fn ensure(state: &AppState) -> Result<Demo, ApiError> {
    let candidate = MerchantId::generate();
    // The first start stores its candidate id; every later start reads that id back.
    let remembered = state
        .store
        .secret(DEMO_MERCHANT_KEY, candidate.as_str().as_bytes())
        .await?;
    let id = std::str::from_utf8(&remembered)
        .ok()
        .and_then(MerchantId::parse)
        .ok_or_else(|| ApiError::internal("the remembered demo merchant id is malformed"))?;
    let (merchant, plate) = match state.store.merchant(&id).await? {
        Some(merchant) => {
            let plate = state
                .store
                .plates_of(&id)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::internal("the demo merchant has no plate"))?;
            (merchant, plate)
        }
        None => create(state, id).await?,
    };
    let base = &state.settings.server.public_base_url;
    Ok(Demo {
        plate_url: format!("{base}/q/{}", state.tokens.token_for(&plate.id)),
        poster_url: format!("{base}{POSTER_PATH}"),
        merchant,
        plate,
    })
}

async fn create(state: &AppState, id: MerchantId) -> Result<(Merchant, Plate), ApiError> {
    let input = merchants::validate_new_merchant(&CreateMerchantRequest {
        name: "Sesame Demo Cafe".to_owned(),
        city: "MACAU".to_owned(),
        country: "MO".to_owned(),
        mcc: "5812".to_owned(),
        currency: "MOP".to_owned(),
        name_zh: Some("芝麻示範咖啡店".to_owned()),
        name_pt: Some("Café Demo Sesame".to_owned()),
        notify_url: None,
    })?;
    let now = state.clock.now_ms();
    let merchant = Merchant {
        id,
        name: input.name,
        name_zh: input.name_zh,
        name_pt: input.name_pt,
        city: input.city,
        country: input.country,
        mcc: input.mcc,
        currency: input.currency,
        notify_url: input.notify_url,
        webhook_secret: merchants::new_webhook_secret(),
        fees_bps: Default::default(),
        status: crate::domain::MerchantStatus::Active,
        created_at: now,
    };
    let plate = merchants::new_plate(
        &merchant.id,
        NewPlate {
            label: "Counter 1".to_owned(),
            fixed_amount_minor: None,
            format: crate::domain::PayloadFormat::Url,
        },
        now,
    );
    let bundle = MerchantBundle {
        // Nobody needs the demo's API key; an admin can issue a fresh one.
        api_key: ApiKey::generate().record(now),
        first_plate: plate.clone(),
        merchant: merchant.clone(),
    };
    state.store.create_merchant(&bundle).await?;
    Ok((merchant, plate))
}
