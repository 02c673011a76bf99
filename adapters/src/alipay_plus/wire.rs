//! Alipay+ ACQP wire format: the JSON bodies of `pay`, `inquiryPayment`,
//! `cancelPayment`, `refund` and `notifyPayment`, the signing string and the
//! `Signature` header, amounts in minor units, and the result model.
//!
//! Shared by the adapter (client side) and the sandbox (wallet side), so both ends
//! of the test speak exactly these types and sign exactly these strings.
//! Must never: map a result status it does not know to success (every status enum
//! ends in a `#[serde(other)] Unknown` that becomes [`WalletStatus::Unknown`]), emit
//! an empty string for an optional field (Alipay+ rejects `""`; optional fields are
//! omitted), or touch HTTP.

use chrono::{DateTime, FixedOffset, SecondsFormat, TimeZone};
use serde::{Deserialize, Serialize};

use crate::contract::{AdapterError, WalletStatus};
use crate::crypto::{RsaPrivateKey, RsaPublicKey};
use crate::money::{Currency, Money};

pub const PAY_PATH: &str = "/aps/api/v1/payments/pay";
pub const INQUIRY_PATH: &str = "/aps/api/v1/payments/inquiryPayment";
pub const CANCEL_PATH: &str = "/aps/api/v1/payments/cancelPayment";
pub const REFUND_PATH: &str = "/aps/api/v1/payments/refund";

pub const HEADER_CLIENT_ID: &str = "Client-Id";
pub const HEADER_REQUEST_TIME: &str = "Request-Time";
pub const HEADER_RESPONSE_TIME: &str = "Response-Time";
pub const HEADER_SIGNATURE: &str = "Signature";

/// `productCode` of every in-store scenario (UPM, Order Code, Entry Code).
pub const IN_STORE_PAYMENT: &str = "IN_STORE_PAYMENT";
/// `paymentMethodType` of every Alipay+ wallet payment.
pub const CONNECT_WALLET: &str = "CONNECT_WALLET";
/// The only signature algorithm Alipay+ defines (SHA256withRSA).
pub const ALGORITHM_RSA256: &str = "RSA256";

/// Result codes this module and the sandbox name explicitly.
pub mod codes {
    pub const SUCCESS: &str = "SUCCESS";
    pub const PAYMENT_IN_PROCESS: &str = "PAYMENT_IN_PROCESS";
    pub const UNKNOWN_EXCEPTION: &str = "UNKNOWN_EXCEPTION";
    pub const PROCESS_FAIL: &str = "PROCESS_FAIL";
    pub const PARAM_ILLEGAL: &str = "PARAM_ILLEGAL";
    pub const INVALID_SIGNATURE: &str = "INVALID_SIGNATURE";
    pub const KEY_NOT_FOUND: &str = "KEY_NOT_FOUND";
    pub const ACCESS_DENIED: &str = "ACCESS_DENIED";
    pub const REPEAT_REQ_INCONSISTENT: &str = "REPEAT_REQ_INCONSISTENT";
    pub const ORDER_IS_CLOSED: &str = "ORDER_IS_CLOSED";
    pub const ORDER_NOT_EXIST: &str = "ORDER_NOT_EXIST";
    pub const ORDER_STATUS_INVALID: &str = "ORDER_STATUS_INVALID";
    pub const REFUND_AMOUNT_EXCEED: &str = "REFUND_AMOUNT_EXCEED";
    pub const USER_NOT_EXIST: &str = "USER_NOT_EXIST";
    pub const USER_BALANCE_NOT_ENOUGH: &str = "USER_BALANCE_NOT_ENOUGH";
    pub const CURRENCY_NOT_SUPPORT: &str = "CURRENCY_NOT_SUPPORT";
    pub const UNAVAILABLE_PAYMENT_METHOD: &str = "UNAVAILABLE_PAYMENT_METHOD";
    pub const MERCHANT_NOT_REGISTERED: &str = "MERCHANT_NOT_REGISTERED";

    /// Codes that say our request itself is wrong (authentication, parameters,
    /// idempotency), as opposed to the shopper's payment being declined. They are
    /// reported as `AdapterError::Rejected`, never as a declined payment, so the POS
    /// does not tell a shopper to try another code when our keys are wrong.
    pub const REQUEST_ERRORS: &[&str] = &[
        PARAM_ILLEGAL,
        INVALID_SIGNATURE,
        KEY_NOT_FOUND,
        ACCESS_DENIED,
        REPEAT_REQ_INCONSISTENT,
        MERCHANT_NOT_REGISTERED,
        "INVALID_CLIENT",
        "INVALID_API",
        "CLIENT_INVALID",
        "METHOD_NOT_SUPPORTED",
        "MEDIA_TYPE_NOT_ACCEPTABLE",
    ];

    pub fn is_request_error(code: &str) -> bool {
        REQUEST_ERRORS.contains(&code)
    }
}

// ---------------------------------------------------------------------------------
// Result model (§2.6)

/// `resultStatus`: S success, F failure (final), U unknown (inquire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultStatus {
    S,
    F,
    U,
    /// Anything else. Never success.
    #[serde(other)]
    Unknown,
}

/// `result` (and `paymentResult`): `{resultCode, resultStatus, resultMessage}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResult {
    pub result_code: String,
    pub result_status: ResultStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_message: Option<String>,
}

impl ApiResult {
    pub fn new(status: ResultStatus, code: &str, message: &str) -> ApiResult {
        ApiResult {
            result_code: code.to_owned(),
            result_status: status,
            result_message: non_empty(message),
        }
    }

    pub fn success() -> ApiResult {
        ApiResult::new(ResultStatus::S, codes::SUCCESS, "success")
    }

    pub fn message(&self) -> &str {
        self.result_message.as_deref().unwrap_or("")
    }

    /// `AdapterError::Rejected` carrying this result's code and message.
    pub fn rejected(&self) -> AdapterError {
        AdapterError::Rejected {
            code: truncate(&self.result_code, 64),
            message: truncate(self.message(), 256),
        }
    }
}

// ---------------------------------------------------------------------------------
// Amounts

/// `{"currency":"MOP","value":"2550"}`: `value` in the currency's minor unit
/// (cents for MOP/HKD/CNY/USD, whole won and yen for KRW/JPY), as a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Amount {
    pub currency: String,
    pub value: String,
}

/// Longest minor-unit string we read: `i64` has 19 digits, 18 always fit.
const MAX_VALUE_DIGITS: usize = 18;

impl Amount {
    pub fn from_money(money: &Money) -> Amount {
        Amount {
            currency: money.currency().code().to_owned(),
            value: money.minor().to_string(),
        }
    }

    /// The amount in minor units, digits only (no sign, no decimals, no spaces).
    pub fn minor(&self) -> Result<i64, AdapterError> {
        let value = self.value.as_str();
        if value.is_empty()
            || value.len() > MAX_VALUE_DIGITS
            || !value.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(AdapterError::Malformed(format!(
                "amount value {:?} is not a minor-unit integer",
                truncate(value, 24)
            )));
        }
        value
            .parse()
            .map_err(|_| AdapterError::Malformed("amount value out of range".into()))
    }

    pub fn currency(&self) -> Result<Currency, AdapterError> {
        Currency::parse(&self.currency).map_err(|e| AdapterError::Malformed(e.to_string()))
    }

    pub fn to_money(&self) -> Result<Money, AdapterError> {
        let currency = self.currency()?;
        Money::from_minor(self.minor()?, currency)
            .map_err(|e| AdapterError::Malformed(format!("amount: {e}")))
    }
}

// ---------------------------------------------------------------------------------
// pay (§2.3)

/// `paymentFactor.inStorePaymentScenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scenario {
    /// User-presented mode: the POS scanned the shopper's code.
    PaymentCode,
    /// Dynamic merchant-presented QR for one order.
    OrderCode,
    /// Static merchant QR opened in the wallet's WebView.
    EntryCode,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayRequest {
    pub product_code: String,
    pub payment_request_id: String,
    pub order: Order,
    pub payment_amount: Amount,
    pub payment_method: PaymentMethod,
    pub payment_factor: PaymentFactor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_notify_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_redirect_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_expiry_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_strategy: Option<SettlementStrategy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub reference_order_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_description: Option<String>,
    pub order_amount: Amount,
    pub merchant: Merchant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Env>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Merchant {
    /// Required by Alipay+; `None` only so that an empty id is omitted (and refused
    /// by the wallet as missing) rather than sent as `""`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_merchant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_name: Option<String>,
    #[serde(
        rename = "merchantMCC",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub merchant_mcc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<Store>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// ISO 3166-1 alpha-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Store {
    pub reference_store_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_name: Option<String>,
    #[serde(rename = "storeMCC", default, skip_serializing_if = "Option::is_none")]
    pub store_mcc: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Env {
    /// The shopper's in-app browser User-Agent, verbatim (required for Entry Code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_terminal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_terminal_request_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentMethod {
    pub payment_method_type: String,
    /// UPM: the scanned customer payment code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method_meta_data: Option<PaymentMethodMetaData>,
}

/// ASSUMPTION (see the module doc of `alipay_plus`): the shopper's wallet when the
/// acquirer already knows it (brand parameter `psp`), as the MPP enum of §2.7.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentMethodMetaData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_brand_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentFactor {
    pub in_store_payment_scenario: Scenario,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementStrategy {
    pub settlement_currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayResponse {
    pub result: ApiResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_amount: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psp_id: Option<String>,
    /// Entry Code: the wallet cashier to send the shopper's WebView to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_url: Option<String>,
    /// Order Code: the QR to show (field names are an ASSUMPTION, see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_code_form: Option<OrderCodeForm>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCodeForm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<String>,
    #[serde(default)]
    pub code_details: Vec<CodeDetail>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeDetail {
    pub code_value: String,
    /// `TEXT` (the value to encode in a QR) or an image size (`SMALLIMAGE`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_type: Option<String>,
}

pub const DISPLAY_TEXT: &str = "TEXT";

impl OrderCodeForm {
    /// The value to render as a QR: the `TEXT` entry, else the first non-empty one.
    pub fn qr_value(&self) -> Option<&str> {
        self.code_details
            .iter()
            .find(|d| d.display_type.as_deref() == Some(DISPLAY_TEXT) && !d.code_value.is_empty())
            .or_else(|| self.code_details.iter().find(|d| !d.code_value.is_empty()))
            .map(|d| d.code_value.as_str())
    }
}

// ---------------------------------------------------------------------------------
// inquiryPayment / cancelPayment / refund (§2.4)

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InquiryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
}

/// `result` says whether the inquiry itself worked; `paymentResult` is the payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InquiryResponse {
    pub result: ApiResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_result: Option<ApiResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_amount: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psp_id: Option<String>,
}

impl InquiryResponse {
    /// The payment's status, given that the inquiry itself succeeded (`result` S).
    ///
    /// `paymentResult` S → Succeeded (paymentId and paymentAmount required),
    /// U → Pending, F `ORDER_IS_CLOSED` → Closed, other F → Failed, anything else
    /// (or no `paymentResult`) → Unknown.
    pub fn wallet_status(&self) -> Result<WalletStatus, AdapterError> {
        let Some(payment) = &self.payment_result else {
            return Ok(WalletStatus::Unknown(
                "inquiry succeeded without paymentResult".into(),
            ));
        };
        Ok(match payment.result_status {
            ResultStatus::S => WalletStatus::Succeeded {
                wallet_ref: required(&self.payment_id, "paymentId")?.to_owned(),
                amount: self
                    .payment_amount
                    .as_ref()
                    .ok_or_else(|| AdapterError::Malformed("paymentAmount missing".into()))?
                    .to_money()?,
                paid_at: self.payment_time.as_deref().and_then(parse_time_utc),
                brand: self.psp_id.clone(),
            },
            ResultStatus::U => WalletStatus::Pending,
            ResultStatus::F if payment.result_code == codes::ORDER_IS_CLOSED => {
                WalletStatus::Closed
            }
            ResultStatus::F => WalletStatus::Failed {
                code: truncate(&payment.result_code, 64),
            },
            ResultStatus::Unknown => WalletStatus::Unknown(format!(
                "paymentResult status not S/F/U (resultCode {})",
                truncate(&payment.result_code, 64)
            )),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelResponse {
    pub result: ApiResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundRequest {
    pub refund_request_id: String,
    pub payment_id: String,
    pub refund_amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_notify_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundResponse {
    pub result: ApiResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_amount: Option<Amount>,
}

/// The body of any response, read only for its `result` (error answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultOnly {
    pub result: ApiResult,
}

// ---------------------------------------------------------------------------------
// notifyPayment (§2.5)

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notify {
    /// S or F (Alipay+ notifies final states only).
    pub payment_result: ApiResult,
    pub payment_request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquirer_id: Option<String>,
    /// The MPP that paid (§2.7), present on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psp_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_time: Option<String>,
    pub payment_amount: Amount,
}

/// The acquirer's answer to `notifyPayment`: `{"result":{...}}`, unsigned. Only
/// `resultStatus` S stops the retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyAck {
    pub result: ApiResult,
}

impl NotifyAck {
    /// Did the acquirer acknowledge? HTTP 200 and `result.resultStatus` S.
    pub fn is_ack(status: u16, body: &[u8]) -> bool {
        status == 200
            && serde_json::from_slice::<NotifyAck>(body)
                .is_ok_and(|ack| ack.result.result_status == ResultStatus::S)
    }
}

// ---------------------------------------------------------------------------------
// Signature (§2.2)

/// The exact bytes signed for a request, a response or a notification:
/// `POST <path>\n<clientId>.<time>.<body>` (`time` is `Request-Time` or
/// `Response-Time`, `path` includes the query string if any).
pub fn signing_string(path: &str, client_id: &str, time: &str, body: &[u8]) -> Vec<u8> {
    let head = format!("POST {path}\n{client_id}.{time}.");
    let mut message = Vec::with_capacity(head.len() + body.len());
    message.extend_from_slice(head.as_bytes());
    message.extend_from_slice(body);
    message
}

/// The `Signature` header value for a signature over [`signing_string`].
pub fn sign(
    key: &RsaPrivateKey,
    key_version: u32,
    path: &str,
    client_id: &str,
    time: &str,
    body: &[u8],
) -> Result<String, AdapterError> {
    let signature = key
        .sign_base64(&signing_string(path, client_id, time, body))
        .map_err(|e| AdapterError::Malformed(format!("signing failed: {e}")))?;
    Ok(signature_header(key_version, &signature))
}

/// `algorithm=RSA256,keyVersion=1,signature=<url-encoded base64>`.
pub fn signature_header(key_version: u32, signature_base64: &str) -> String {
    format!(
        "algorithm={ALGORITHM_RSA256},keyVersion={key_version},signature={}",
        url_encode(signature_base64)
    )
}

/// A parsed `Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub algorithm: String,
    pub key_version: Option<String>,
    /// Base64, already URL-decoded.
    pub signature: String,
}

impl SignatureHeader {
    /// Parses `k=v` pairs separated by commas, spaces after commas allowed, in any
    /// order. `algorithm` and `signature` are required; unknown keys are ignored.
    pub fn parse(value: &str) -> Option<SignatureHeader> {
        let mut algorithm = None;
        let mut key_version = None;
        let mut signature = None;
        for part in value.split(',') {
            let (name, v) = part.trim().split_once('=')?;
            match name.trim() {
                "algorithm" => algorithm = Some(v.trim().to_owned()),
                "keyVersion" => key_version = Some(v.trim().to_owned()),
                "signature" => signature = Some(url_decode(v.trim())?),
                _ => {}
            }
        }
        Some(SignatureHeader {
            algorithm: algorithm?,
            key_version,
            signature: signature.filter(|s| !s.is_empty())?,
        })
    }
}

/// Verifies a `Signature` header over [`signing_string`]. Every failure — header
/// unreadable, algorithm other than RSA256, signature wrong — is `BadSignature`.
pub fn verify(
    key: &RsaPublicKey,
    header: &str,
    path: &str,
    client_id: &str,
    time: &str,
    body: &[u8],
) -> Result<(), AdapterError> {
    let parsed = SignatureHeader::parse(header).ok_or(AdapterError::BadSignature)?;
    if parsed.algorithm != ALGORITHM_RSA256 {
        return Err(AdapterError::BadSignature);
    }
    key.verify_base64(
        &signing_string(path, client_id, time, body),
        &parsed.signature,
    )
    .map_err(|_| AdapterError::BadSignature)
}

/// Form-style percent-encoding (what the Alipay+ SDKs apply to the base64
/// signature): everything but `A-Z a-z 0-9 - _ . ~` becomes `%XX`.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes. A literal `+` stays `+` (not a space): the field is
/// base64, which has no spaces, so a sender that forgot to encode is still read
/// right. `None` for a broken escape or non-UTF-8 result.
pub fn url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------------
// Times and small helpers

/// ISO 8601 with offset and whole seconds, e.g. `2024-05-01T12:00:00+08:00`.
pub fn format_time<Tz: TimeZone>(time: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    time.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// ISO 8601 with offset (RFC 3339).
pub fn parse_time(text: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(text).ok()
}

pub fn parse_time_utc(text: &str) -> Option<DateTime<chrono::Utc>> {
    parse_time(text).map(|t| t.with_timezone(&chrono::Utc))
}

/// `Some(text)` unless empty: Alipay+ wants optional fields omitted, never `""`.
pub fn non_empty(text: &str) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// At most `max` characters (wallet text in our errors and logs stays short).
pub fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn required<'a>(field: &'a Option<String>, name: &str) -> Result<&'a str, AdapterError> {
    field
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AdapterError::Malformed(format!("{name} missing")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_string_is_method_path_newline_client_time_body() {
        let message = signing_string(
            "/aps/api/v1/payments/pay",
            "SANDBOX_5Y3A2N2YEB5U01",
            "2024-05-01T12:08:56+08:00",
            br#"{"paymentRequestId":"ord_1"}"#,
        );
        assert_eq!(
            String::from_utf8(message).unwrap(),
            "POST /aps/api/v1/payments/pay\nSANDBOX_5Y3A2N2YEB5U01.2024-05-01T12:08:56+08:00.{\"paymentRequestId\":\"ord_1\"}"
        );
    }

    #[test]
    fn signature_header_url_encodes_base64_and_parses_back() {
        let header = signature_header(1, "ab+c/d==");
        assert_eq!(
            header,
            "algorithm=RSA256,keyVersion=1,signature=ab%2Bc%2Fd%3D%3D"
        );
        let parsed = SignatureHeader::parse(&header).unwrap();
        assert_eq!(parsed.signature, "ab+c/d==");
        assert_eq!(parsed.key_version.as_deref(), Some("1"));
        let spaced =
            SignatureHeader::parse("algorithm=RSA256, keyVersion=2, signature=ab%2Bc").unwrap();
        assert_eq!(spaced.algorithm, "RSA256");
        assert_eq!(spaced.signature, "ab+c");
        assert!(SignatureHeader::parse("algorithm=RSA256,keyVersion=1").is_none());
        assert!(SignatureHeader::parse("algorithm=RSA256,signature=").is_none());
        assert!(SignatureHeader::parse("algorithm=RSA256,signature=%G1").is_none());
        assert!(SignatureHeader::parse("garbage").is_none());
    }

    #[test]
    fn signature_verifies_only_over_the_exact_message() {
        let key = RsaPrivateKey::generate_2048().unwrap();
        let public = key.public_key().unwrap();
        let header = sign(&key, 1, "/n", "C1", "2024-05-01T12:00:00+08:00", b"{}").unwrap();
        assert_eq!(
            verify(
                &public,
                &header,
                "/n",
                "C1",
                "2024-05-01T12:00:00+08:00",
                b"{}"
            ),
            Ok(())
        );
        for (path, client, time, body) in [
            ("/m", "C1", "2024-05-01T12:00:00+08:00", &b"{}"[..]),
            ("/n", "C2", "2024-05-01T12:00:00+08:00", b"{}"),
            ("/n", "C1", "2024-05-01T12:00:01+08:00", b"{}"),
            ("/n", "C1", "2024-05-01T12:00:00+08:00", b"{ }"),
        ] {
            assert_eq!(
                verify(&public, &header, path, client, time, body),
                Err(AdapterError::BadSignature)
            );
        }
        let other_algorithm = header.replace("RSA256", "RSA");
        assert_eq!(
            verify(
                &public,
                &other_algorithm,
                "/n",
                "C1",
                "2024-05-01T12:00:00+08:00",
                b"{}"
            ),
            Err(AdapterError::BadSignature)
        );
    }

    #[test]
    fn amounts_are_minor_units_both_ways() {
        let cases = [
            ("25.50", Currency::Mop, "2550"),
            ("500.00", Currency::Hkd, "50000"),
            ("0.01", Currency::Hkd, "1"),
            ("5000", Currency::Krw, "5000"),
            ("1200", Currency::Jpy, "1200"),
        ];
        for (decimal, currency, minor) in cases {
            let money = Money::parse(decimal, currency).unwrap();
            let amount = Amount::from_money(&money);
            assert_eq!(amount.value, minor);
            assert_eq!(amount.currency, currency.code());
            assert_eq!(amount.to_money().unwrap(), money);
        }
        let json = serde_json::to_string(&Amount::from_money(
            &Money::parse("25.50", Currency::Mop).unwrap(),
        ))
        .unwrap();
        assert_eq!(json, r#"{"currency":"MOP","value":"2550"}"#);
    }

    #[test]
    fn unreadable_amounts_are_malformed() {
        for (currency, value) in [
            ("MOP", "25.50"),
            ("MOP", "-1"),
            ("MOP", ""),
            ("MOP", " 1"),
            ("MOP", "1e3"),
            ("MOP", "9999999999999999999999"),
            ("XXX", "100"),
            ("mop", "100"),
        ] {
            let amount = Amount {
                currency: currency.into(),
                value: value.into(),
            };
            assert!(
                matches!(amount.to_money(), Err(AdapterError::Malformed(_))),
                "{currency} {value}"
            );
        }
    }

    #[test]
    fn unknown_result_status_is_never_success() {
        let result: ApiResult =
            serde_json::from_str(r#"{"resultCode":"SUCCESS","resultStatus":"X"}"#).unwrap();
        assert_eq!(result.result_status, ResultStatus::Unknown);
        let inquiry: InquiryResponse = serde_json::from_str(
            r#"{"result":{"resultCode":"SUCCESS","resultStatus":"S"},
                "paymentResult":{"resultCode":"SUCCESS","resultStatus":"DONE"},
                "paymentId":"P1","paymentAmount":{"currency":"MOP","value":"100"}}"#,
        )
        .unwrap();
        let status = inquiry.wallet_status().unwrap();
        assert!(matches!(status, WalletStatus::Unknown(_)), "{status:?}");
        assert!(!status.is_paid());
        let scenario: Scenario = serde_json::from_str(r#""FaceCode""#).unwrap();
        assert_eq!(scenario, Scenario::Unknown);
    }

    fn inquiry(payment_result: &str, extra: &str) -> InquiryResponse {
        serde_json::from_str(&format!(
            r#"{{"result":{{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}},
                "paymentResult":{payment_result}{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn payment_result_maps_to_wallet_status() {
        let paid = inquiry(
            r#"{"resultCode":"SUCCESS","resultStatus":"S"}"#,
            r#","paymentId":"2024050111","paymentTime":"2024-05-01T12:00:00+08:00",
               "paymentAmount":{"currency":"MOP","value":"2550"},"pspId":"A111253100000000""#,
        );
        assert_eq!(
            paid.wallet_status().unwrap(),
            WalletStatus::Succeeded {
                wallet_ref: "2024050111".into(),
                amount: Money::parse("25.50", Currency::Mop).unwrap(),
                paid_at: parse_time_utc("2024-05-01T04:00:00Z"),
                brand: Some("A111253100000000".into()),
            }
        );
        let pending = inquiry(
            r#"{"resultCode":"PAYMENT_IN_PROCESS","resultStatus":"U"}"#,
            "",
        );
        assert_eq!(pending.wallet_status().unwrap(), WalletStatus::Pending);
        let closed = inquiry(r#"{"resultCode":"ORDER_IS_CLOSED","resultStatus":"F"}"#, "");
        assert_eq!(closed.wallet_status().unwrap(), WalletStatus::Closed);
        let failed = inquiry(
            r#"{"resultCode":"USER_BALANCE_NOT_ENOUGH","resultStatus":"F"}"#,
            "",
        );
        assert_eq!(
            failed.wallet_status().unwrap(),
            WalletStatus::Failed {
                code: "USER_BALANCE_NOT_ENOUGH".into()
            }
        );
        let paid_without_id = inquiry(
            r#"{"resultCode":"SUCCESS","resultStatus":"S"}"#,
            r#","paymentAmount":{"currency":"MOP","value":"2550"}"#,
        );
        assert!(matches!(
            paid_without_id.wallet_status(),
            Err(AdapterError::Malformed(_))
        ));
    }

    #[test]
    fn optional_fields_are_omitted_never_empty() {
        let request = CancelRequest {
            payment_request_id: Some("ord_1".into()),
            payment_id: None,
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"paymentRequestId":"ord_1"}"#
        );
        assert_eq!(non_empty("  "), None);
        assert_eq!(non_empty(" Shop "), Some("Shop".into()));
    }

    #[test]
    fn notify_ack_is_recognised_only_with_status_s_and_http_200() {
        let ok = serde_json::to_vec(&NotifyAck {
            result: ApiResult::success(),
        })
        .unwrap();
        assert_eq!(
            ok,
            br#"{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}"#
        );
        assert!(NotifyAck::is_ack(200, &ok));
        assert!(!NotifyAck::is_ack(500, &ok));
        assert!(!NotifyAck::is_ack(200, b"success"));
        assert!(!NotifyAck::is_ack(
            200,
            br#"{"result":{"resultCode":"UNKNOWN_EXCEPTION","resultStatus":"U"}}"#
        ));
    }

    #[test]
    fn order_code_qr_value_prefers_the_text_entry() {
        let form: OrderCodeForm = serde_json::from_str(
            r#"{"codeDetails":[{"codeValue":"https://img","displayType":"BIGIMAGE"},
                               {"codeValue":"https://qr/1","displayType":"TEXT"}]}"#,
        )
        .unwrap();
        assert_eq!(form.qr_value(), Some("https://qr/1"));
        let untyped: OrderCodeForm =
            serde_json::from_str(r#"{"codeDetails":[{"codeValue":""},{"codeValue":"x"}]}"#)
                .unwrap();
        assert_eq!(untyped.qr_value(), Some("x"));
    }

    #[test]
    fn percent_decoding_rejects_broken_escapes_and_keeps_plus() {
        assert_eq!(url_decode("a%2Bb+c").as_deref(), Some("a+b+c"));
        assert_eq!(url_decode("%2"), None);
        assert_eq!(url_decode("%zz"), None);
        assert_eq!(url_encode("a+/= b"), "a%2B%2F%3D%20b");
    }
}
