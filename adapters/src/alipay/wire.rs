//! Alipay Open API wire format, shared by the adapter and the sandbox.
//!
//! Owns: the public request parameters and their RSA2 signing string (wallets.md
//! §1.2), the extraction of the raw `*_response` text that Alipay signs (§1.3), the
//! `biz_content` and response types of every method Sesame calls, the
//! form-urlencoded notification and its own signing string (§1.8), amount and time
//! formats, and the mapping of `trade_status` to [`WalletStatus`].
//! Must never: re-serialize a signed text before verifying it, let an unrecognised
//! `trade_status` (or any other wallet enum) count as success, or do any IO.

use std::collections::BTreeSet;

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::contract::{AdapterError, WalletStatus};
use crate::crypto::{CryptoError, RsaPrivateKey, RsaPublicKey};
use crate::money::{Currency, Money};

/// Path of the one Open API endpoint, appended to the configured base URL.
pub const GATEWAY_PATH: &str = "/gateway.do";
pub const FORMAT: &str = "JSON";
pub const CHARSET: &str = "utf-8";
/// SHA256withRSA. The legacy `RSA` (SHA1withRSA) is refused on purpose.
pub const SIGN_TYPE: &str = "RSA2";
pub const VERSION: &str = "1.0";
/// 当面付 (face-to-face payment): precreate and bar-code pay.
pub const PRODUCT_CODE: &str = "FACE_TO_FACE_PAYMENT";
/// `alipay.trade.pay` scene for a scanned payment code.
pub const SCENE_BAR_CODE: &str = "bar_code";
/// `notify_type` of trade notifications.
pub const NOTIFY_TYPE: &str = "trade_status_sync";
/// The exact body that stops Alipay's notification retries (7 bytes).
pub const ACK_SUCCESS: &str = "success";
/// Any other body makes Alipay retry; this is the conventional one.
pub const ACK_FAILURE: &str = "fail";
/// Top-level key of gateway-level errors (unknown method, unknown app).
pub const ERROR_RESPONSE_KEY: &str = "error_response";

/// Method names (the `method` public parameter).
pub mod method {
    pub const PRECREATE: &str = "alipay.trade.precreate";
    pub const PAY: &str = "alipay.trade.pay";
    pub const QUERY: &str = "alipay.trade.query";
    pub const CLOSE: &str = "alipay.trade.close";
    pub const CANCEL: &str = "alipay.trade.cancel";
    pub const REFUND: &str = "alipay.trade.refund";
    pub const REFUND_QUERY: &str = "alipay.trade.fastpay.refund.query";
}

/// Gateway-level result codes (wallets.md §1.4).
pub mod code {
    pub const SUCCESS: &str = "10000";
    /// Bar-code pay: the shopper must confirm on the phone; poll `query`.
    pub const WAITING_FOR_USER: &str = "10003";
    /// Service unavailable or outcome unknown: query, never assume.
    pub const UNKNOWN: &str = "20000";
    pub const MISSING_ARGUMENTS: &str = "40001";
    /// Invalid arguments, including a bad request signature.
    pub const INVALID_ARGUMENTS: &str = "40002";
    /// Business failure; `sub_code` says which.
    pub const BUSINESS_FAILED: &str = "40004";
}

/// `sub_code` values Sesame reacts to or the sandbox answers.
pub mod sub_code {
    pub const INVALID_SIGNATURE: &str = "isv.invalid-signature";
    pub const MISSING_SIGNATURE: &str = "isv.missing-signature";
    pub const INVALID_SIGNATURE_TYPE: &str = "isv.invalid-signature-type";
    pub const INVALID_APP_ID: &str = "isv.invalid-app-id";
    pub const INVALID_METHOD: &str = "isv.invalid-method";
    pub const MISSING_METHOD: &str = "isv.missing-method";
    pub const INVALID_TIMESTAMP: &str = "isv.invalid-timestamp";
    pub const INVALID_CHARSET: &str = "isv.invalid-charset";
    pub const INVALID_FORMAT: &str = "isv.invalid-format";
    pub const INVALID_VERSION: &str = "isv.invalid-version";
    pub const INVALID_PARAMETER: &str = "isv.invalid-parameter";
    pub const SERVICE_BUSY: &str = "isp.unknown-error";
    pub const ACQ_INVALID_PARAMETER: &str = "ACQ.INVALID_PARAMETER";
    pub const ACQ_SYSTEM_ERROR: &str = "ACQ.SYSTEM_ERROR";
    pub const TRADE_NOT_EXIST: &str = "ACQ.TRADE_NOT_EXIST";
    pub const TRADE_HAS_SUCCESS: &str = "ACQ.TRADE_HAS_SUCCESS";
    pub const TRADE_HAS_CLOSE: &str = "ACQ.TRADE_HAS_CLOSE";
    pub const TRADE_STATUS_ERROR: &str = "ACQ.TRADE_STATUS_ERROR";
    /// Same `out_trade_no` or `out_request_no` with different content.
    pub const CONTEXT_INCONSISTENT: &str = "ACQ.CONTEXT_INCONSISTENT";
    /// Refund exceeds what is left to refund (Alipay: 退款金额超限).
    pub const REFUND_AMOUNT_EXCEEDED: &str = "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL";
    pub const AUTH_CODE_INVALID: &str = "ACQ.PAYMENT_AUTH_CODE_INVALID";
    pub const BUYER_BALANCE_NOT_ENOUGH: &str = "ACQ.BUYER_BALANCE_NOT_ENOUGH";
}

// ---------------------------------------------------------------------------------
// Time and amounts

/// Alipay's clock: every wire time is `yyyy-MM-dd HH:mm:ss` in GMT+8, no zone.
pub const BEIJING: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    // Evaluated at compile time: 8 h is within FixedOffset's range.
    None => panic!("GMT+8 is a valid offset"),
};

pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

pub fn format_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&BEIJING).format(TIME_FORMAT).to_string()
}

/// Parses a GMT+8 wire time. `None` for anything else (the caller decides whether
/// the field was required).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(text, TIME_FORMAT).ok()?;
    BEIJING
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// Amounts travel as decimal strings in the currency's major unit: yuan with two
/// decimals for CNY (`"8.80"`), the same for MOP and HKD, no decimals for KRW / JPY.
pub fn amount_string(amount: &Money) -> String {
    amount.to_decimal_string()
}

/// Parses a wallet amount; anything that is not a plain positive decimal with at most
/// the currency's decimals is `Malformed` (never rounded, never a float).
pub fn parse_amount(text: &str, currency: Currency) -> Result<Money, AdapterError> {
    Money::parse(text, currency).map_err(|e| {
        AdapterError::Malformed(format!(
            "amount {:?} is not a valid {currency} amount: {e}",
            text.chars().take(32).collect::<String>()
        ))
    })
}

/// `trans_currency` to send: absent for CNY (the mainland rail's own currency), the
/// ISO code otherwise (global Open API, wallets.md §1.1).
pub fn trans_currency(currency: Currency) -> Option<String> {
    (currency != Currency::Cny).then(|| currency.code().to_owned())
}

/// The currency of an echoed amount: `trans_currency` when Alipay sends it, CNY
/// when absent.
pub fn currency_of(trans_currency: Option<&str>) -> Result<Currency, AdapterError> {
    match trans_currency {
        None | Some("") => Ok(Currency::Cny),
        Some(code) => Currency::parse(code).map_err(|e| AdapterError::Malformed(e.to_string())),
    }
}

/// Relative expiry for `timeout_express`: whole minutes left until `expires_at`,
/// rounded down (the wallet must never accept a payment after our deadline), at
/// least `1m`, at most Alipay's 15 days.
pub fn timeout_express(now: DateTime<Utc>, expires_at: DateTime<Utc>) -> String {
    let minutes = (expires_at - now).num_minutes().clamp(1, 15 * 24 * 60);
    format!("{minutes}m")
}

/// Parses `timeout_express` (`90m`, `2h`, `1d`) into a duration.
pub fn parse_timeout_express(text: &str) -> Option<chrono::Duration> {
    let unit = text.chars().last()?;
    let value: i64 = text.get(..text.len() - 1)?.parse().ok()?;
    if value <= 0 {
        return None;
    }
    match unit {
        'm' => Some(chrono::Duration::minutes(value)),
        'h' => Some(chrono::Duration::hours(value)),
        'd' => Some(chrono::Duration::days(value)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------
// Signing strings

/// The request signing string (wallets.md §1.2): every parameter except `sign`
/// (`sign_type` included), empty values dropped, sorted by name in byte order,
/// `name=value` joined with `&`, values raw (not URL-encoded). Callers pass each
/// name once; repeated names are refused before this point.
pub fn request_sign_content<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    join_sorted(
        params
            .into_iter()
            .filter(|(name, value)| *name != "sign" && !value.is_empty()),
    )
}

/// The notification signing string (wallets.md §1.8, the SDK's `rsaCheckV1`):
/// every parameter except `sign` AND `sign_type`, empty values KEPT, sorted, joined.
pub fn notify_sign_content<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    join_sorted(
        params
            .into_iter()
            .filter(|(name, _)| *name != "sign" && *name != "sign_type"),
    )
}

fn join_sorted<'a>(params: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = params.collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::new();
    for (i, (name, value)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Decodes a form body into pairs, refusing a repeated name: which copy was signed
/// would be a guess.
pub fn decode_form(body: &str) -> Result<Vec<(String, String)>, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(body).map_err(|e| format!("form body: {e}"))?;
    let mut seen = BTreeSet::new();
    for (name, _) in &pairs {
        if !seen.insert(name.as_str()) {
            return Err(format!(
                "parameter {:?} appears more than once",
                name.chars().take(32).collect::<String>()
            ));
        }
    }
    Ok(pairs)
}

/// The value of `name` in decoded pairs.
pub fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The public parameters of one request (wallets.md §1.1), before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub app_id: &'a str,
    pub method: &'a str,
    /// `yyyy-MM-dd HH:mm:ss` GMT+8 ([`format_time`]).
    pub timestamp: String,
    pub notify_url: Option<&'a str>,
    /// Honoured only by page-style methods at the real Alipay; the sandbox uses it
    /// to send the shopper back after its cashier.
    pub return_url: Option<&'a str>,
    /// The exact JSON text sent and signed.
    pub biz_content: String,
}

impl Request<'_> {
    /// Every parameter as sent, without `sign`.
    pub fn params(&self) -> Vec<(&'static str, &str)> {
        let mut params = vec![
            ("app_id", self.app_id),
            ("method", self.method),
            ("format", FORMAT),
            ("charset", CHARSET),
            ("sign_type", SIGN_TYPE),
            ("timestamp", self.timestamp.as_str()),
            ("version", VERSION),
            ("biz_content", self.biz_content.as_str()),
        ];
        if let Some(url) = self.notify_url {
            params.push(("notify_url", url));
        }
        if let Some(url) = self.return_url {
            params.push(("return_url", url));
        }
        params
    }

    /// The signed, URL-encoded form body.
    pub fn signed_form(&self, key: &RsaPrivateKey) -> Result<String, CryptoError> {
        let params = self.params();
        let sign = key.sign_base64(request_sign_content(params.iter().copied()).as_bytes())?;
        let mut all: Vec<(&str, &str)> = params;
        all.push(("sign", sign.as_str()));
        serde_urlencoded::to_string(&all).map_err(|_| CryptoError::Operation("form encoding"))
    }
}

// ---------------------------------------------------------------------------------
// Responses: `{"<method>_response": {...}, "sign": "..."}`

/// `alipay.trade.precreate` -> `alipay_trade_precreate_response`.
pub fn response_key(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

/// The top-level members of a JSON object, each value as the exact text of the body
/// (what Alipay signs), keys decoded. `None` when `body` is not one JSON object.
pub fn raw_members(body: &str) -> Option<Vec<(String, &str)>> {
    // Well-formedness first, so the scanner below only has to find boundaries.
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body).ok()?;
    let bytes = body.as_bytes();
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(bytes, i + 1);
    let mut members = Vec::new();
    if bytes.get(i) == Some(&b'}') {
        return Some(members);
    }
    loop {
        let key_end = string_end(bytes, i)?;
        let key: String = serde_json::from_str(body.get(i..key_end)?).ok()?;
        i = skip_ws(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(bytes, i + 1);
        let value_end = value_end(bytes, value_start)?;
        members.push((key, body.get(value_start..value_end)?));
        i = skip_ws(bytes, value_end);
        match bytes.get(i) {
            Some(b',') => i = skip_ws(bytes, i + 1),
            Some(b'}') => return Some(members),
            _ => return None,
        }
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while matches!(bytes.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Index just past the string starting at `start` (which must be `"`).
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    if bytes.get(start) != Some(&b'"') {
        return None;
    }
    let mut i = start + 1;
    loop {
        match bytes.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Index just past the JSON value starting at `start`.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => string_end(bytes, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = start;
            while let Some(c) = bytes.get(i) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

/// Builds a response body exactly as Alipay lays it out (the sandbox's side).
pub fn response_body(key: &str, raw_response: &str, sign: &str) -> String {
    format!("{{\"{key}\":{raw_response},\"sign\":\"{sign}\"}}")
}

/// The common part of every response.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub code: String,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_msg: Option<String>,
}

impl Outcome {
    pub fn success() -> Outcome {
        Outcome {
            code: code::SUCCESS.into(),
            msg: "Success".into(),
            sub_code: None,
            sub_msg: None,
        }
    }

    pub fn failure(code: &str, msg: &str, sub_code: &str, sub_msg: &str) -> Outcome {
        Outcome {
            code: code.into(),
            msg: msg.into(),
            sub_code: Some(sub_code.into()),
            sub_msg: Some(sub_msg.into()),
        }
    }

    pub fn is_success(&self) -> bool {
        self.code == code::SUCCESS
    }

    /// The most specific code: `sub_code` when present, `code` otherwise.
    pub fn specific_code(&self) -> &str {
        self.sub_code
            .as_deref()
            .filter(|c| !c.is_empty())
            .unwrap_or(&self.code)
    }

    pub fn message(&self) -> String {
        self.sub_msg
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or(&self.msg)
            .chars()
            .take(200)
            .collect()
    }
}

/// A response whose signature checked out: the common outcome and the exact signed
/// text, to be parsed into the method's response type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub outcome: Outcome,
    pub raw: String,
}

impl Opened {
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, AdapterError> {
        serde_json::from_str(&self.raw)
            .map_err(|e| AdapterError::Malformed(format!("alipay response: {e}")))
    }
}

/// Finds the method's response (or `error_response`) in `body` and verifies `sign`
/// over its exact raw text with the Alipay public key (wallets.md §1.3).
///
/// As in Alipay's SDKs, a response without `sign` is accepted only when it reports
/// a failure (Alipay leaves some gateway-level errors unsigned); an unsigned success
/// or waiting answer is [`AdapterError::BadSignature`]. A present but wrong `sign`
/// is always `BadSignature`.
pub fn open_response(
    body: &str,
    method: &str,
    alipay_key: &RsaPublicKey,
) -> Result<Opened, AdapterError> {
    let members = raw_members(body)
        .ok_or_else(|| AdapterError::Malformed("alipay response is not a JSON object".into()))?;
    let wanted = response_key(method);
    let mut response = None;
    let mut sign = None;
    for (key, raw) in &members {
        let slot = if *key == wanted || key == ERROR_RESPONSE_KEY {
            &mut response
        } else if key == "sign" {
            &mut sign
        } else {
            continue;
        };
        if slot.replace(*raw).is_some() {
            return Err(AdapterError::Malformed(format!(
                "alipay response repeats {key:?}"
            )));
        }
    }
    let raw = response
        .ok_or_else(|| AdapterError::Malformed(format!("alipay response lacks {wanted}")))?;
    let outcome: Outcome = serde_json::from_str(raw)
        .map_err(|e| AdapterError::Malformed(format!("alipay response: {e}")))?;
    match sign {
        Some(sign) => {
            let sign: String =
                serde_json::from_str(sign).map_err(|_| AdapterError::BadSignature)?;
            alipay_key
                .verify_base64(raw.as_bytes(), &sign)
                .map_err(|_| AdapterError::BadSignature)?;
        }
        None if outcome.code == code::SUCCESS || outcome.code == code::WAITING_FOR_USER => {
            return Err(AdapterError::BadSignature);
        }
        None => {}
    }
    Ok(Opened {
        outcome,
        raw: raw.to_owned(),
    })
}

// ---------------------------------------------------------------------------------
// Status enums: each ends in an `Unknown` catch-all that is never success.

/// `trade_status` (wallets.md §1.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeStatus {
    /// Created, waiting for the shopper.
    WaitBuyerPay,
    /// Paid and refundable (also after partial refunds).
    TradeSuccess,
    /// Paid, refund window over.
    TradeFinished,
    /// Closed unpaid, cancelled, or paid and then fully refunded.
    TradeClosed,
    #[serde(other)]
    Unknown,
}

impl TradeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TradeStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
            TradeStatus::TradeSuccess => "TRADE_SUCCESS",
            TradeStatus::TradeFinished => "TRADE_FINISHED",
            TradeStatus::TradeClosed => "TRADE_CLOSED",
            TradeStatus::Unknown => "UNKNOWN",
        }
    }
}

/// `fund_change` of a refund answer: did THIS call move money?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FundChange {
    Y,
    N,
    #[serde(other)]
    Unknown,
}

/// `action` of a cancel answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelAction {
    /// The trade was unpaid and is now closed.
    Close,
    /// The trade was paid and is now refunded in full.
    Refund,
    #[serde(other)]
    Unknown,
}

/// `refund_status` of a refund query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    RefundSuccess,
    #[serde(other)]
    Unknown,
}

/// `Y` / `N` flags (`retry_flag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flag {
    Y,
    N,
    #[serde(other)]
    Unknown,
}

// ---------------------------------------------------------------------------------
// biz_content of each method

/// Cross-border secondary-merchant details (modelled on the MAPI `extend_params`,
/// wallets.md §1.11): who the shopper is paying, shown by the cashier.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExtendParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_merchant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_merchant_name: Option<String>,
    /// ISO 18245 MCC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_merchant_industry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_name: Option<String>,
}

/// `alipay.trade.precreate` (wallets.md §1.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecreateBiz {
    pub out_trade_no: String,
    pub total_amount: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trans_currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_express: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend_params: Option<ExtendParams>,
}

/// `alipay.trade.pay` (wallets.md §1.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayBiz {
    pub out_trade_no: String,
    pub scene: String,
    pub auth_code: String,
    pub total_amount: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trans_currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend_params: Option<ExtendParams>,
}

/// `alipay.trade.query`, `.close` and `.cancel`: one of the two ids (`trade_no`
/// wins when both are given).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TradeRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
}

/// `alipay.trade.refund` (wallets.md §1.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundBiz {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    pub refund_amount: String,
    /// Global Open API: the currency of `refund_amount` when it is not CNY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_currency: Option<String>,
    /// Our refund id: idempotency key, reused unchanged on every retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_request_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_reason: Option<String>,
}

/// `alipay.trade.fastpay.refund.query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundQueryBiz {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    pub out_request_no: String,
}

// ---------------------------------------------------------------------------------
// Responses of each method

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecreateResponse {
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_code: Option<String>,
}

/// `alipay.trade.pay` and `alipay.trade.query` share their trade fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeResponse {
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    /// Only in `query` answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_status: Option<TradeStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<String>,
    /// What the merchant received; present (and positive) only once paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_amount: Option<String>,
    /// What the shopper paid; present (and positive) only once paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_pay_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trans_currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_logon_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_user_id: Option<String>,
    /// `pay`: when it was paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmt_payment: Option<String>,
    /// `query`: when it was paid; present on a closed trade only if it was paid
    /// before (then fully refunded or cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_pay_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseResponse {
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelResponse {
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_flag: Option<Flag>,
    /// Absent when no trade existed (it is then recorded closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<CancelAction>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResponse {
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_logon_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fund_change: Option<FundChange>,
    /// Cumulative refunded amount of the trade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_fee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmt_refund_pay: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundQueryResponse {
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_request_no: Option<String>,
    /// Present only when the refund exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_status: Option<RefundStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trans_currency: Option<String>,
}

/// Whether an amount field says money was captured: present and not zero. A value
/// that does not parse counts as captured: when in doubt, never "never paid".
pub fn shows_capture(amount: Option<&str>, currency: Currency) -> bool {
    amount
        .filter(|a| !a.trim().is_empty())
        .is_some_and(|a| Money::parse_allow_zero(a, currency).map_or(true, |m| !m.is_zero()))
}

/// What `alipay.trade.query` says, in neutral terms.
///
/// `TRADE_CLOSED` is ambiguous (wallets.md §0 and §1.9): closed unpaid, cancelled, or
/// paid and then fully refunded. Any sign of a capture — `send_pay_date`, or a
/// non-zero `buyer_pay_amount` or `receipt_amount` — makes it
/// [`WalletStatus::Refunded`] (paid, then refunded or reversed in full), which the
/// gateway settles as a capture and never as "never paid"; only a closed trade
/// with none of them is [`WalletStatus::Closed`]. An unrecognised status (or none)
/// is [`WalletStatus::Unknown`] with the text Alipay sent, never success.
pub fn wallet_status(response: &TradeResponse, raw: &str) -> Result<WalletStatus, AdapterError> {
    let paid = |response: &TradeResponse| -> Result<(String, Money), AdapterError> {
        let trade_no = response
            .trade_no
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AdapterError::Malformed("paid trade without trade_no".into()))?;
        let currency = currency_of(response.trans_currency.as_deref())?;
        let amount = response
            .total_amount
            .as_deref()
            .ok_or_else(|| AdapterError::Malformed("paid trade without total_amount".into()))
            .and_then(|a| parse_amount(a, currency))?;
        Ok((trade_no, amount))
    };
    match response.trade_status {
        Some(TradeStatus::WaitBuyerPay) => Ok(WalletStatus::Pending),
        Some(TradeStatus::TradeSuccess | TradeStatus::TradeFinished) => {
            let (wallet_ref, amount) = paid(response)?;
            Ok(WalletStatus::Succeeded {
                wallet_ref,
                amount,
                paid_at: response.send_pay_date.as_deref().and_then(parse_time),
                brand: None,
            })
        }
        Some(TradeStatus::TradeClosed) if was_captured(response)? => {
            let (wallet_ref, amount) = paid(response)?;
            Ok(WalletStatus::Refunded {
                wallet_ref,
                amount,
                refunded: Some(amount),
            })
        }
        Some(TradeStatus::TradeClosed) => Ok(WalletStatus::Closed),
        Some(TradeStatus::Unknown) | None => Ok(WalletStatus::Unknown(raw_trade_status(raw))),
    }
}

/// Did this trade ever capture money (see [`wallet_status`])?
fn was_captured(response: &TradeResponse) -> Result<bool, AdapterError> {
    let currency = currency_of(response.trans_currency.as_deref())?;
    Ok(response.send_pay_date.is_some()
        || shows_capture(response.buyer_pay_amount.as_deref(), currency)
        || shows_capture(response.receipt_amount.as_deref(), currency))
}

/// The `trade_status` text as sent, truncated, for the logs.
fn raw_trade_status(raw: &str) -> String {
    serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| {
            v.get("trade_status")
                .and_then(|s| s.as_str())
                .map(str::to_owned)
        })
        .map(|s| s.chars().take(64).collect())
        .unwrap_or_else(|| "trade_status missing".into())
}

// ---------------------------------------------------------------------------------
// Notifications (form-urlencoded POST to notify_url)

/// A trade notification (wallets.md §1.8), without `sign`. Field names are Alipay's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub notify_time: String,
    pub notify_type: String,
    pub notify_id: String,
    pub app_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_type: Option<String>,
    pub trade_no: String,
    pub out_trade_no: String,
    /// The refund's `out_request_no`, on refund notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_biz_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_logon_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<String>,
    pub trade_status: TradeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_pay_amount: Option<String>,
    /// Cumulative refunded amount of the trade (refund notifications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_fee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trans_currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmt_create: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmt_payment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmt_refund: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmt_close: Option<String>,
}

impl Notify {
    /// The notification's parameters as `(name, value)` pairs, in field order.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map
                .into_iter()
                .filter_map(|(k, v)| match v {
                    serde_json::Value::String(s) => Some((k, s)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The signed, URL-encoded body Alipay POSTs (the sandbox's side).
    pub fn signed_form(&self, wallet_key: &RsaPrivateKey) -> Result<String, CryptoError> {
        let mut pairs = self.to_pairs();
        let content = notify_sign_content(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let sign = wallet_key.sign_base64(content.as_bytes())?;
        pairs.push(("sign".into(), sign));
        serde_urlencoded::to_string(&pairs).map_err(|_| CryptoError::Operation("form encoding"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_signing_string_sorts_drops_sign_and_empty_values_and_keeps_raw_values() {
        let params = [
            ("timestamp", "2024-05-01 12:00:00"),
            ("sign", "SHOULD-NOT-APPEAR"),
            ("method", "alipay.trade.precreate"),
            ("app_id", "2021000000000001"),
            ("format", ""),
            ("version", "1.0"),
            ("sign_type", "RSA2"),
            ("notify_url", "https://gw.example.mo/cb/alipay"),
            ("charset", "utf-8"),
            (
                "biz_content",
                r#"{"out_trade_no":"A1","total_amount":"8.80","subject":"Coffee"}"#,
            ),
        ];
        assert_eq!(
            request_sign_content(params),
            r#"app_id=2021000000000001&biz_content={"out_trade_no":"A1","total_amount":"8.80","subject":"Coffee"}&charset=utf-8&method=alipay.trade.precreate&notify_url=https://gw.example.mo/cb/alipay&sign_type=RSA2&timestamp=2024-05-01 12:00:00&version=1.0"#
        );
    }

    #[test]
    fn notify_signing_string_drops_sign_and_sign_type_but_keeps_empty_values() {
        let params = [
            ("trade_status", "TRADE_SUCCESS"),
            ("sign_type", "RSA2"),
            ("sign", "abc"),
            ("body", ""),
            ("app_id", "2021000000000001"),
            ("buyer_logon_id", "159****5620"),
            ("notify_id", "ac05099524730693a8b330c5ecf72da9786"),
        ];
        assert_eq!(
            notify_sign_content(params),
            "app_id=2021000000000001&body=&buyer_logon_id=159****5620&notify_id=ac05099524730693a8b330c5ecf72da9786&trade_status=TRADE_SUCCESS"
        );
    }

    #[test]
    fn signing_sorts_by_bytes_so_upper_case_comes_first() {
        assert_eq!(
            request_sign_content([("b", "1"), ("B", "2"), ("a_b", "3"), ("a", "4")]),
            "B=2&a=4&a_b=3&b=1"
        );
    }

    #[test]
    fn signed_form_verifies_with_the_public_key_after_decoding() {
        let key = RsaPrivateKey::generate_2048().unwrap();
        let request = Request {
            app_id: "2021000000000001",
            method: method::PRECREATE,
            timestamp: "2024-05-01 12:00:00".into(),
            notify_url: Some("https://gw.example.mo/webhooks/alipay"),
            return_url: None,
            biz_content: r#"{"out_trade_no":"A1","subject":"Café & tea=1+1"}"#.into(),
        };
        let form = request.signed_form(&key).unwrap();
        assert!(form.contains("timestamp=2024-05-01+12%3A00%3A00"));
        let pairs = decode_form(&form).unwrap();
        let content = request_sign_content(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert!(
            content.contains(r#"biz_content={"out_trade_no":"A1","subject":"Café & tea=1+1"}"#)
        );
        let public = key.public_key().unwrap();
        public
            .verify_base64(content.as_bytes(), param(&pairs, "sign").unwrap())
            .unwrap();
    }

    #[test]
    fn repeated_form_parameters_are_refused() {
        assert!(decode_form("a=1&b=2&a=3").is_err());
        assert_eq!(
            decode_form("a=1+2&b=%26").unwrap(),
            vec![("a".into(), "1 2".into()), ("b".into(), "&".into())]
        );
    }

    #[test]
    fn raw_members_return_the_exact_text_of_each_value() {
        let body = "{ \"alipay_trade_query_response\" : {\"code\":\"10000\",\"msg\":\"Success\",\"x\":\"}{\\\"\",\"n\":[1,{\"a\":2}]} ,\"sign\":\"c2ln\"}";
        let members = raw_members(body).unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].0, "alipay_trade_query_response");
        assert_eq!(
            members[0].1,
            "{\"code\":\"10000\",\"msg\":\"Success\",\"x\":\"}{\\\"\",\"n\":[1,{\"a\":2}]}"
        );
        assert_eq!(members[1], ("sign".to_owned(), "\"c2ln\""));
        assert!(raw_members("[1,2]").is_none());
        assert!(raw_members("{\"a\":1").is_none());
        assert_eq!(raw_members("{}").unwrap(), vec![]);
    }

    fn signed(key: &RsaPrivateKey, method: &str, raw: &str) -> String {
        response_body(
            &response_key(method),
            raw,
            &key.sign_base64(raw.as_bytes()).unwrap(),
        )
    }

    #[test]
    fn open_response_verifies_the_exact_raw_bytes() {
        let key = RsaPrivateKey::generate_2048().unwrap();
        let public = key.public_key().unwrap();
        // Spacing Alipay might use: a re-serialization would not reproduce it.
        let raw = "{\"code\": \"10000\", \"msg\": \"Success\", \"qr_code\": \"https://qr.alipay.com/bax1\"}";
        let body = signed(&key, method::PRECREATE, raw);
        let opened = open_response(&body, method::PRECREATE, &public).unwrap();
        assert_eq!(opened.raw, raw);
        let parsed: PrecreateResponse = opened.parse().unwrap();
        assert_eq!(
            parsed.qr_code.as_deref(),
            Some("https://qr.alipay.com/bax1")
        );

        let tampered = body.replace("bax1", "bax2");
        assert_eq!(
            open_response(&tampered, method::PRECREATE, &public),
            Err(AdapterError::BadSignature)
        );
        let other = RsaPrivateKey::generate_2048()
            .unwrap()
            .public_key()
            .unwrap();
        assert_eq!(
            open_response(&body, method::PRECREATE, &other),
            Err(AdapterError::BadSignature)
        );
    }

    #[test]
    fn unsigned_success_is_refused_but_unsigned_failure_is_read() {
        let public = RsaPrivateKey::generate_2048()
            .unwrap()
            .public_key()
            .unwrap();
        let success = "{\"alipay_trade_pay_response\":{\"code\":\"10000\",\"msg\":\"Success\"}}";
        assert_eq!(
            open_response(success, method::PAY, &public),
            Err(AdapterError::BadSignature)
        );
        let waiting = "{\"alipay_trade_pay_response\":{\"code\":\"10003\",\"msg\":\"wait\"}}";
        assert_eq!(
            open_response(waiting, method::PAY, &public),
            Err(AdapterError::BadSignature)
        );
        let failure = "{\"error_response\":{\"code\":\"40002\",\"msg\":\"Invalid Arguments\",\"sub_code\":\"isv.invalid-app-id\",\"sub_msg\":\"无效的AppID参数\"}}";
        let opened = open_response(failure, method::PAY, &public).unwrap();
        assert_eq!(opened.outcome.specific_code(), "isv.invalid-app-id");
        assert_eq!(opened.outcome.message(), "无效的AppID参数");
    }

    #[test]
    fn repeated_or_missing_response_members_are_malformed() {
        let public = RsaPrivateKey::generate_2048()
            .unwrap()
            .public_key()
            .unwrap();
        let twice = "{\"alipay_trade_pay_response\":{\"code\":\"40004\"},\"alipay_trade_pay_response\":{\"code\":\"10000\"}}";
        assert!(matches!(
            open_response(twice, method::PAY, &public),
            Err(AdapterError::Malformed(_))
        ));
        let other_method = "{\"alipay_trade_query_response\":{\"code\":\"10000\"},\"sign\":\"x\"}";
        assert!(matches!(
            open_response(other_method, method::PAY, &public),
            Err(AdapterError::Malformed(_))
        ));
        assert!(matches!(
            open_response("<html>502</html>", method::PAY, &public),
            Err(AdapterError::Malformed(_))
        ));
    }

    fn query(status: &str, send_pay_date: Option<&str>) -> (TradeResponse, String) {
        let mut value = serde_json::json!({
            "code": "10000", "msg": "Success", "trade_no": "2024050122001000000000000001",
            "out_trade_no": "SO1", "trade_status": status, "total_amount": "88.80",
        });
        if let Some(date) = send_pay_date {
            value["send_pay_date"] = date.into();
        }
        let raw = value.to_string();
        (serde_json::from_str(&raw).unwrap(), raw)
    }

    #[test]
    fn a_closed_trade_with_any_sign_of_capture_is_refunded_never_closed_unpaid() {
        let cny = |s| Money::parse(s, Currency::Cny).unwrap();
        let refunded = Ok(WalletStatus::Refunded {
            wallet_ref: "2024050122001000000000000001".into(),
            amount: cny("88.80"),
            refunded: Some(cny("88.80")),
        });
        for (field, value) in [
            ("buyer_pay_amount", "88.80"),
            ("receipt_amount", "88.80"),
            ("receipt_amount", "not a number"),
        ] {
            let (_, raw) = query("TRADE_CLOSED", None);
            let mut value_json: serde_json::Value = serde_json::from_str(&raw).unwrap();
            value_json[field] = value.into();
            let raw = value_json.to_string();
            let response: TradeResponse = serde_json::from_str(&raw).unwrap();
            assert_eq!(wallet_status(&response, &raw), refunded, "{field}={value}");
        }
        let (_, raw) = query("TRADE_CLOSED", None);
        let mut zero: serde_json::Value = serde_json::from_str(&raw).unwrap();
        zero["buyer_pay_amount"] = "0.00".into();
        zero["receipt_amount"] = "".into();
        let raw = zero.to_string();
        let response: TradeResponse = serde_json::from_str(&raw).unwrap();
        assert_eq!(wallet_status(&response, &raw), Ok(WalletStatus::Closed));
    }

    #[test]
    fn trade_status_maps_to_wallet_status_and_unknown_is_never_paid() {
        let cny = |s| Money::parse(s, Currency::Cny).unwrap();
        let (r, raw) = query("WAIT_BUYER_PAY", None);
        assert_eq!(wallet_status(&r, &raw), Ok(WalletStatus::Pending));
        for status in ["TRADE_SUCCESS", "TRADE_FINISHED"] {
            let (r, raw) = query(status, Some("2024-05-01 12:00:00"));
            assert_eq!(
                wallet_status(&r, &raw),
                Ok(WalletStatus::Succeeded {
                    wallet_ref: "2024050122001000000000000001".into(),
                    amount: cny("88.80"),
                    paid_at: DateTime::from_timestamp(1_714_536_000, 0),
                    brand: None,
                })
            );
        }
        let (r, raw) = query("TRADE_CLOSED", None);
        assert_eq!(wallet_status(&r, &raw), Ok(WalletStatus::Closed));
        let (r, raw) = query("TRADE_CLOSED", Some("2024-05-01 12:00:00"));
        assert_eq!(
            wallet_status(&r, &raw),
            Ok(WalletStatus::Refunded {
                wallet_ref: "2024050122001000000000000001".into(),
                amount: cny("88.80"),
                refunded: Some(cny("88.80")),
            })
        );
        let (r, raw) = query("TRADE_PENDING_REVIEW", None);
        assert_eq!(r.trade_status, Some(TradeStatus::Unknown));
        let status = wallet_status(&r, &raw).unwrap();
        assert_eq!(status, WalletStatus::Unknown("TRADE_PENDING_REVIEW".into()));
        assert!(!status.is_paid());
    }

    #[test]
    fn other_wallet_enums_fall_back_to_unknown() {
        assert_eq!(
            serde_json::from_str::<FundChange>("\"P\"").unwrap(),
            FundChange::Unknown
        );
        assert_eq!(
            serde_json::from_str::<CancelAction>("\"freeze\"").unwrap(),
            CancelAction::Unknown
        );
        assert_eq!(
            serde_json::from_str::<RefundStatus>("\"REFUND_PROCESSING\"").unwrap(),
            RefundStatus::Unknown
        );
        assert_eq!(
            serde_json::from_str::<Flag>("\"y\"").unwrap(),
            Flag::Unknown
        );
        assert_eq!(
            serde_json::from_str::<CancelAction>("\"refund\"").unwrap(),
            CancelAction::Refund
        );
    }

    #[test]
    fn amounts_convert_both_ways_in_each_currency_unit() {
        let cases = [
            (Currency::Cny, 880, "8.80"),
            (Currency::Mop, 12345, "123.45"),
            (Currency::Hkd, 100, "1.00"),
            (Currency::Krw, 5000, "5000"),
            (Currency::Jpy, 1, "1"),
        ];
        for (currency, minor, text) in cases {
            let money = Money::from_minor(minor, currency).unwrap();
            assert_eq!(amount_string(&money), text, "{currency}");
            assert_eq!(
                parse_amount(text, currency).unwrap().minor(),
                minor,
                "{currency}"
            );
        }
        assert_eq!(parse_amount("8.8", Currency::Cny).unwrap().minor(), 880);
        for bad in ["", "8.801", "-1.00", "1e3", "8,80", "NaN", " 8.80"] {
            assert!(
                matches!(
                    parse_amount(bad, Currency::Cny),
                    Err(AdapterError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_amount("5000.5", Currency::Krw),
            Err(AdapterError::Malformed(_))
        ));
    }

    #[test]
    fn trans_currency_is_sent_only_outside_cny_and_read_back() {
        assert_eq!(trans_currency(Currency::Cny), None);
        assert_eq!(trans_currency(Currency::Mop).as_deref(), Some("MOP"));
        assert_eq!(currency_of(None), Ok(Currency::Cny));
        assert_eq!(currency_of(Some("HKD")), Ok(Currency::Hkd));
        assert!(matches!(
            currency_of(Some("XYZ")),
            Err(AdapterError::Malformed(_))
        ));
    }

    #[test]
    fn wire_times_are_beijing_time() {
        let at = DateTime::from_timestamp(1_714_536_000, 0).unwrap(); // 04:00 UTC
        assert_eq!(format_time(at), "2024-05-01 12:00:00");
        assert_eq!(parse_time("2024-05-01 12:00:00"), Some(at));
        assert_eq!(parse_time("2024-05-01T12:00:00"), None);
    }

    #[test]
    fn timeout_express_rounds_down_to_whole_minutes() {
        let now = DateTime::from_timestamp(1_714_536_000, 0).unwrap();
        assert_eq!(
            timeout_express(now, now + chrono::Duration::seconds(15 * 60 + 59)),
            "15m"
        );
        assert_eq!(
            timeout_express(now, now + chrono::Duration::seconds(20)),
            "1m"
        );
        assert_eq!(
            parse_timeout_express("90m"),
            Some(chrono::Duration::minutes(90))
        );
        assert_eq!(
            parse_timeout_express("2h"),
            Some(chrono::Duration::hours(2))
        );
        assert_eq!(parse_timeout_express("0m"), None);
        assert_eq!(parse_timeout_express("1c"), None);
        assert_eq!(parse_timeout_express(""), None);
    }

    #[test]
    fn notify_form_round_trips_and_verifies() {
        let key = RsaPrivateKey::generate_2048().unwrap();
        let notify = Notify {
            notify_time: "2024-05-01 12:00:01".into(),
            notify_type: NOTIFY_TYPE.into(),
            notify_id: "n1".into(),
            app_id: "2021000000000001".into(),
            charset: Some(CHARSET.into()),
            version: Some(VERSION.into()),
            sign_type: Some(SIGN_TYPE.into()),
            trade_no: "T1".into(),
            out_trade_no: "SO1".into(),
            out_biz_no: None,
            buyer_id: None,
            buyer_logon_id: None,
            seller_id: None,
            trade_status: TradeStatus::TradeSuccess,
            total_amount: Some("8.80".into()),
            receipt_amount: None,
            buyer_pay_amount: None,
            refund_fee: None,
            trans_currency: None,
            subject: Some("Coffee & cake".into()),
            gmt_create: None,
            gmt_payment: None,
            gmt_refund: None,
            gmt_close: None,
        };
        let form = notify.signed_form(&key).unwrap();
        let pairs = decode_form(&form).unwrap();
        let content = notify_sign_content(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert!(!content.contains("sign_type") && content.contains("subject=Coffee & cake"));
        key.public_key()
            .unwrap()
            .verify_base64(content.as_bytes(), param(&pairs, "sign").unwrap())
            .unwrap();
        let back: Notify = serde_urlencoded::from_str(&form).unwrap();
        assert_eq!(back, notify);
    }
}
