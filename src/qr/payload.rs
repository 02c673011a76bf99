//! What a plate's QR code says: the plate URL, or an EMVCo Merchant-Presented Mode
//! payload that carries the same URL in our template (tag 26), so a generic EMVCo
//! reader and a plain camera both get somewhere useful.

use sesame_adapters::money::Money;

use super::emvco::{self, EncodeError, Initiation, LanguageTemplate, MerchantPresented};
use super::token::TOKEN_LEN;
use crate::domain::{Merchant, MerchantId, PayloadFormat, Plate};

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

/// Whether EMVCo plates can be issued with this base URL and GUID: tag 26 holds the
/// GUID, the merchant id and the plate URL, at most 99 characters in all. Checked at
/// startup so an operator learns it before the first plate is refused.
pub fn emvco_template_fits(public_base_url: &str, guid: &str) -> Result<(), EncodeError> {
    let merchant = MerchantId::generate();
    let url = plate_url(public_base_url, &"x".repeat(TOKEN_LEN));
    let template = merchant_account(guid, &merchant, &url);
    emvco::encode(&MerchantPresented {
        initiation: Initiation::Static,
        merchant_accounts: vec![template],
        mcc: "5812".to_owned(),
        currency_numeric: 446,
        amount: None,
        country: "MO".to_owned(),
        merchant_name: "X".to_owned(),
        merchant_city: "X".to_owned(),
        postal_code: None,
        additional: Vec::new(),
        language: None,
    })
    .map(|_| ())
}

/// Our template: tag 26 = GUID (00), merchant id (01), plate URL (02).
fn merchant_account(guid: &str, merchant: &MerchantId, url: &str) -> (u8, Vec<(u8, String)>) {
    (
        26,
        vec![
            (0, guid.to_owned()),
            (1, merchant.to_string()),
            (2, url.to_owned()),
        ],
    )
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
        merchant_accounts: vec![merchant_account(guid, &merchant.id, url)],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_fits_a_short_base_url_and_not_a_long_one() {
        assert!(emvco_template_fits("https://pay.sesame.mo", "mo.sesame.pay").is_ok());
        let err = emvco_template_fits("https://pay.sesame-gateway.example.mo", "mo.sesame.pay")
            .unwrap_err();
        assert!(matches!(err, EncodeError::FieldTooLong { field, .. } if field.starts_with("26 ")));
    }
}
