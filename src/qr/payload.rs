//! What a plate's QR code says: the plate URL, or an EMVCo Merchant-Presented Mode
//! payload that carries the same URL in our template (tag 26), so a generic EMVCo
//! reader and a plain camera both get somewhere useful.

use sesame_adapters::money::Money;

use super::emvco::{self, EncodeError, Initiation, LanguageTemplate, MerchantPresented};
use crate::domain::{Merchant, PayloadFormat, Plate};

/// `{public_base_url}/q/{token}`.
pub fn plate_url(public_base_url: &str, token: &str) -> String {
    format!("{public_base_url}/q/{token}")
}

/// The string encoded in the plate's QR code.
pub fn plate_payload(
    merchant: &Merchant,
    plate: &Plate,
    url: &str,
    guid: &str,
) -> Result<String, EncodeError> {
    match plate.format {
        PayloadFormat::Url => Ok(url.to_owned()),
        PayloadFormat::Emvco => emvco::encode(&emvco_fields(merchant, plate, url, guid)),
    }
}

pub fn emvco_fields(
    merchant: &Merchant,
    plate: &Plate,
    url: &str,
    guid: &str,
) -> MerchantPresented {
    let amount = plate
        .fixed_amount_minor
        .and_then(|minor| Money::from_minor(minor, merchant.currency).ok())
        .map(|m| m.to_decimal_string());
    MerchantPresented {
        initiation: if amount.is_some() {
            Initiation::Dynamic
        } else {
            Initiation::Static
        },
        merchant_accounts: vec![(
            26,
            vec![
                (0, guid.to_owned()),
                (1, merchant.id.to_string()),
                (2, url.to_owned()),
            ],
        )],
        mcc: merchant.mcc.clone(),
        currency_numeric: merchant.currency.numeric(),
        amount,
        country: merchant.country.clone(),
        merchant_name: merchant.name.clone(),
        merchant_city: merchant.city.clone(),
        postal_code: None,
        additional: vec![(3, plate.label.clone()), (7, plate.id.to_string())],
        language: merchant.name_zh.as_ref().map(|name| LanguageTemplate {
            language: "ZH".to_owned(),
            merchant_name: name.clone(),
            merchant_city: None,
        }),
    }
}
