//! Onboarding merchants and issuing plates and API keys.
//!
//! Input is validated here (every field, with the field's name in the error) before
//! anything is written; each write is one atomic store operation, so a rejected
//! request changes nothing.

use serde::{Deserialize, Serialize};
use sesame_adapters::money::{Currency, Money};

use crate::clock::rfc3339;
use crate::config::Settings;
use crate::domain::ids::{base32, random_bytes};
use crate::domain::{
    ApiKey, Merchant, MerchantId, MerchantStatus, NewMerchant, PayloadFormat, Plate, PlateId,
};
use crate::error::{ApiError, ErrorCode};
use crate::qr::emvco::EncodeError;
use crate::qr::payload::{plate_payload, plate_url};
use crate::qr::token::PlateTokens;
use crate::store::{DynStore, MerchantBundle, StoreError};

/// Body of `POST /v1/merchants`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMerchantRequest {
    pub name: String,
    pub city: String,
    pub country: String,
    pub mcc: String,
    pub currency: String,
    #[serde(default)]
    pub name_zh: Option<String>,
    #[serde(default)]
    pub name_pt: Option<String>,
    #[serde(default)]
    pub notify_url: Option<String>,
}

/// Body of `POST /v1/merchants/{id}/plates`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePlateRequest {
    pub label: String,
    /// Fixed amount as a decimal string in the merchant's currency, e.g. "25.00".
    #[serde(default)]
    pub amount: Option<String>,
    #[serde(default)]
    pub format: Option<PayloadFormat>,
}

/// What the API shows of a merchant (never the webhook secret).
#[derive(Debug, Clone, Serialize)]
pub struct MerchantView {
    pub id: String,
    pub name: String,
    pub name_zh: Option<String>,
    pub name_pt: Option<String>,
    pub city: String,
    pub country: String,
    pub mcc: String,
    pub currency: Currency,
    pub notify_url: Option<String>,
    pub status: MerchantStatus,
    pub created_at: String,
}

impl From<&Merchant> for MerchantView {
    fn from(m: &Merchant) -> Self {
        MerchantView {
            id: m.id.to_string(),
            name: m.name.clone(),
            name_zh: m.name_zh.clone(),
            name_pt: m.name_pt.clone(),
            city: m.city.clone(),
            country: m.country.clone(),
            mcc: m.mcc.clone(),
            currency: m.currency,
            notify_url: m.notify_url.clone(),
            status: m.status,
            created_at: rfc3339(m.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlateImages {
    pub png: String,
    pub svg: String,
    pub poster: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlateView {
    pub id: String,
    pub merchant_id: String,
    pub label: String,
    pub format: PayloadFormat,
    pub fixed_amount: Option<String>,
    pub currency: Currency,
    pub token: String,
    pub url: String,
    pub payload: String,
    pub images: PlateImages,
    pub created_at: String,
}

/// Everything needed to turn records into views and payloads.
pub struct PlateContext<'a> {
    pub tokens: &'a PlateTokens,
    pub public_base_url: &'a str,
    pub emvco_guid: &'a str,
    /// A fixed plate amount must be payable: within what a shopper may pay.
    pub amount_limits: AmountLimits,
}

/// Smallest and largest single payment, in minor units of the merchant currency.
#[derive(Debug, Clone, Copy)]
pub struct AmountLimits {
    pub min_minor: i64,
    pub max_minor: i64,
}

impl PlateContext<'_> {
    pub fn from_settings<'a>(settings: &'a Settings, tokens: &'a PlateTokens) -> PlateContext<'a> {
        PlateContext {
            tokens,
            public_base_url: &settings.server.public_base_url,
            emvco_guid: &settings.qr.emvco_guid,
            amount_limits: AmountLimits {
                min_minor: settings.shopper.min_amount_minor,
                max_minor: settings.payments.max_amount_minor,
            },
        }
    }

    /// The QR payload of a plate; fails when a field breaks an EMVCo limit.
    pub fn payload(&self, merchant: &Merchant, plate: &Plate) -> Result<String, ApiError> {
        let url = plate_url(self.public_base_url, &self.tokens.token_for(&plate.id));
        plate_payload(merchant, plate, &url, self.emvco_guid).map_err(|e| encode_error(&e))
    }

    pub fn view(&self, merchant: &Merchant, plate: &Plate) -> Result<PlateView, ApiError> {
        let token = self.tokens.token_for(&plate.id);
        let url = plate_url(self.public_base_url, &token);
        let payload = self.payload(merchant, plate)?;
        let base = format!("{}/v1/plates/{}", self.public_base_url, plate.id);
        Ok(PlateView {
            id: plate.id.to_string(),
            merchant_id: plate.merchant_id.to_string(),
            label: plate.label.clone(),
            format: plate.format,
            fixed_amount: plate
                .fixed_amount_minor
                .and_then(|minor| Money::from_minor(minor, merchant.currency).ok())
                .map(|m| m.to_decimal_string()),
            currency: merchant.currency,
            token,
            url,
            payload,
            images: PlateImages {
                png: format!("{base}/qr.png"),
                svg: format!("{base}/qr.svg"),
                poster: format!("{base}/poster.svg"),
            },
            created_at: rfc3339(plate.created_at),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct CreatedMerchant {
    pub merchant: MerchantView,
    /// Shown only in this response; the store keeps its hash.
    pub api_key: String,
    /// Verifies `Sesame-Signature` on webhooks; shown only in this response.
    pub webhook_secret: String,
    pub plate: PlateView,
}

#[derive(Debug, Serialize)]
pub struct IssuedApiKey {
    pub api_key: String,
    pub prefix: String,
    pub created_at: String,
}

fn invalid(field: &str, reason: &str) -> ApiError {
    ApiError::with(ErrorCode::InvalidField, format!("{field}: {reason}"))
}

/// Trims and checks a free-text field: 1..=max characters, no control characters.
fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, &format!("at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

fn optional_text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, ApiError> {
    value.map(|v| text(field, v, max)).transpose()
}

pub fn validate_new_merchant(req: &CreateMerchantRequest) -> Result<NewMerchant, ApiError> {
    let name = text("name", &req.name, 25)?;
    if !name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(invalid(
            "name",
            "must be printable ASCII (it is printed in EMVCo tag 59); use name_zh / name_pt for other scripts",
        ));
    }
    let city = text("city", &req.city, 15)?;
    if !city.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(invalid("city", "must be printable ASCII"));
    }
    let country = req.country.trim();
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            "country",
            "must be an ISO 3166-1 alpha-2 code such as MO",
        ));
    }
    let mcc = req.mcc.trim();
    if mcc.len() != 4 || !mcc.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "mcc",
            "must be a 4-digit ISO 18245 merchant category code",
        ));
    }
    let currency =
        Currency::parse(req.currency.trim()).map_err(|e| invalid("currency", &e.to_string()))?;
    let notify_url = match req.notify_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => Some(validate_url("notify_url", url)?),
    };
    Ok(NewMerchant {
        name,
        name_zh: optional_text("name_zh", req.name_zh.as_deref(), 25)?,
        name_pt: optional_text("name_pt", req.name_pt.as_deref(), 25)?,
        city,
        country: country.to_owned(),
        mcc: mcc.to_owned(),
        currency,
        notify_url,
    })
}

fn validate_url(field: &str, url: &str) -> Result<String, ApiError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid(field, "must be an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty()
        || url.len() > 2048
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            field,
            "must be an absolute URL without spaces, at most 2048 characters",
        ));
    }
    Ok(url.to_owned())
}

pub struct NewPlate {
    pub label: String,
    pub fixed_amount_minor: Option<i64>,
    pub format: PayloadFormat,
}

/// Why an EMVCo payload cannot be built, under the code that names the fault: a field
/// over its length limit, or a value the format cannot carry.
pub fn encode_error(e: &EncodeError) -> ApiError {
    match e {
        EncodeError::FieldTooLong { field, .. } if field.starts_with("26 ") => ApiError::with(
            ErrorCode::PayloadTooLong,
            format!(
                "{e}: tag 26 carries the GUID, the merchant id and the plate URL; \
                 use format \"url\", or a shorter server.public_base_url or qr.emvco_guid"
            ),
        ),
        EncodeError::FieldTooLong { .. } => {
            ApiError::with(ErrorCode::PayloadTooLong, e.to_string())
        }
        EncodeError::InvalidCharacters { .. } | EncodeError::Invalid { .. } => {
            ApiError::with(ErrorCode::InvalidField, e.to_string())
        }
    }
}

pub fn validate_new_plate(
    req: &CreatePlateRequest,
    currency: Currency,
    limits: AmountLimits,
) -> Result<NewPlate, ApiError> {
    let label = text("label", &req.label, 25)?;
    let fixed_amount_minor = match req.amount.as_deref() {
        None => None,
        Some(amount) => {
            let minor = Money::parse(amount, currency)
                .map_err(|e| ApiError::with(ErrorCode::InvalidAmount, format!("amount: {e}")))?
                .minor();
            let bound = |minor: i64| {
                Money::from_minor(minor, currency)
                    .map(|m| m.to_string())
                    .unwrap_or_default()
            };
            if minor < limits.min_minor {
                return Err(ApiError::with(
                    ErrorCode::InvalidAmount,
                    format!(
                        "amount: below the smallest payment, {}",
                        bound(limits.min_minor)
                    ),
                ));
            }
            if minor > limits.max_minor {
                return Err(ApiError::with(
                    ErrorCode::InvalidAmount,
                    format!(
                        "amount: above the largest payment, {}",
                        bound(limits.max_minor)
                    ),
                ));
            }
            Some(minor)
        }
    };
    if req.format == Some(PayloadFormat::Emvco) && !label.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return Err(ApiError::with(
            ErrorCode::InvalidField,
            "label: an EMVCo plate's label (tag 62 store label) takes printable ASCII only",
        ));
    }
    Ok(NewPlate {
        label,
        fixed_amount_minor,
        format: req.format.unwrap_or(PayloadFormat::Url),
    })
}

pub fn new_plate(merchant: &MerchantId, input: NewPlate, now: i64) -> Plate {
    Plate {
        id: PlateId::generate(),
        merchant_id: merchant.clone(),
        label: input.label,
        fixed_amount_minor: input.fixed_amount_minor,
        format: input.format,
        created_at: now,
    }
}

/// A fresh secret for signing a merchant's webhooks.
pub fn new_webhook_secret() -> String {
    format!("whsec_{}", base32(&random_bytes::<32>()))
}

pub async fn create_merchant(
    store: &DynStore,
    ctx: &PlateContext<'_>,
    input: NewMerchant,
    now: i64,
) -> Result<CreatedMerchant, ApiError> {
    let merchant = Merchant {
        id: MerchantId::generate(),
        name: input.name,
        name_zh: input.name_zh,
        name_pt: input.name_pt,
        city: input.city,
        country: input.country,
        mcc: input.mcc,
        currency: input.currency,
        notify_url: input.notify_url,
        webhook_secret: new_webhook_secret(),
        fees_bps: Default::default(),
        status: MerchantStatus::Active,
        created_at: now,
    };
    let plate = new_plate(
        &merchant.id,
        NewPlate {
            label: "Main".to_owned(),
            fixed_amount_minor: None,
            format: PayloadFormat::Url,
        },
        now,
    );
    // Build the response BEFORE writing, so a payload error cannot follow a write.
    let plate_view = ctx.view(&merchant, &plate)?;
    let key = ApiKey::generate();
    let bundle = MerchantBundle {
        api_key: key.record(now),
        first_plate: plate,
        merchant,
    };
    store.create_merchant(&bundle).await.map_err(|e| match e {
        // 80 random bits: a collision is a bug, not a client error.
        StoreError::Conflict(what) => ApiError::internal(format!("id collision: {what}")),
        other => other.into(),
    })?;
    Ok(CreatedMerchant {
        merchant: MerchantView::from(&bundle.merchant),
        api_key: key.expose().to_owned(),
        webhook_secret: bundle.merchant.webhook_secret.clone(),
        plate: plate_view,
    })
}

pub async fn add_plate(
    store: &DynStore,
    ctx: &PlateContext<'_>,
    merchant: &Merchant,
    req: &CreatePlateRequest,
    now: i64,
) -> Result<PlateView, ApiError> {
    let input = validate_new_plate(req, merchant.currency, ctx.amount_limits)?;
    let plate = new_plate(&merchant.id, input, now);
    let view = ctx.view(merchant, &plate)?;
    store.insert_plate(&plate).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::new(ErrorCode::MerchantNotFound),
        other => other.into(),
    })?;
    Ok(view)
}

pub async fn rotate_api_key(
    store: &DynStore,
    merchant: &MerchantId,
    now: i64,
) -> Result<IssuedApiKey, ApiError> {
    let key = ApiKey::generate();
    let record = key.record(now);
    store
        .rotate_api_key(merchant, &record)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::new(ErrorCode::MerchantNotFound),
            other => other.into(),
        })?;
    Ok(IssuedApiKey {
        api_key: key.expose().to_owned(),
        prefix: record.prefix,
        created_at: rfc3339(now),
    })
}

pub async fn merchant_or_404(store: &DynStore, id: &str) -> Result<Merchant, ApiError> {
    let Some(id) = MerchantId::parse(id) else {
        return Err(ApiError::new(ErrorCode::MerchantNotFound));
    };
    store
        .merchant(&id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::MerchantNotFound))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CreateMerchantRequest {
        CreateMerchantRequest {
            name: "Cafe Nam Van".into(),
            city: "MACAU".into(),
            country: "MO".into(),
            mcc: "5812".into(),
            currency: "MOP".into(),
            name_zh: Some("南灣咖啡".into()),
            name_pt: None,
            notify_url: Some("https://cafe.example/hooks".into()),
        }
    }

    #[test]
    fn a_valid_merchant_passes() {
        let m = validate_new_merchant(&request()).unwrap();
        assert_eq!(m.currency, Currency::Mop);
        assert_eq!(m.name_zh.as_deref(), Some("南灣咖啡"));
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = Box<dyn Fn(&mut CreateMerchantRequest)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("name", Box::new(|r| r.name = "".into())),
            ("name", Box::new(|r| r.name = "x".repeat(26))),
            ("name", Box::new(|r| r.name = "南灣".into())),
            (
                "city",
                Box::new(|r| r.city = "A very long city name".into()),
            ),
            ("country", Box::new(|r| r.country = "mo".into())),
            ("mcc", Box::new(|r| r.mcc = "58a2".into())),
            ("currency", Box::new(|r| r.currency = "XYZ".into())),
            (
                "notify_url",
                Box::new(|r| r.notify_url = Some("ftp://x".into())),
            ),
            (
                "notify_url",
                Box::new(|r| r.notify_url = Some("https://".into())),
            ),
            ("name_zh", Box::new(|r| r.name_zh = Some("\u{7}".into()))),
        ];
        for (field, mutate) in cases {
            let mut r = request();
            mutate(&mut r);
            let err = validate_new_merchant(&r).unwrap_err();
            assert!(
                err.message().starts_with(field),
                "{field}: {}",
                err.message()
            );
        }
    }

    #[test]
    fn plate_amounts_follow_the_currency() {
        let req = |amount: &str| CreatePlateRequest {
            label: "Till".into(),
            amount: Some(amount.into()),
            format: None,
        };
        let limits = AmountLimits {
            min_minor: 10,
            max_minor: 10_000_000,
        };
        assert_eq!(
            validate_new_plate(&req("25.50"), Currency::Mop, limits)
                .unwrap()
                .fixed_amount_minor,
            Some(2550)
        );
        for bad in [
            "25.505",
            "-1",
            "0",
            "0.09",
            "100000.01",
            "92233720368547758.07",
        ] {
            let Err(err) = validate_new_plate(&req(bad), Currency::Mop, limits) else {
                panic!("{bad} accepted");
            };
            assert_eq!(err.code, ErrorCode::InvalidAmount, "{bad}");
        }
        assert!(validate_new_plate(&req("100000.00"), Currency::Mop, limits).is_ok());
        assert!(validate_new_plate(&req("1.5"), Currency::Krw, limits).is_err());
    }
}
