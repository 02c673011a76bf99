//! WeChat Pay wire format: API v3 JSON types and signing strings, the v3 callback
//! envelope and its AES-256-GCM resource, API v2 (micropay) XML, signatures and
//! status enums, the OAuth token answer, and the daily bill (statement) layout.
//!
//! Shared by the adapter and the sandbox on purpose: both sides build and check
//! the same strings with the same functions, so a change to a signing rule is
//! one change, tested once.
//! Must never: perform IO, hold keys beyond a call, or map a status it does not
//! recognise to anything but `Unknown` (every status enum ends in
//! `#[serde(other)] Unknown`, which the adapter turns into `WalletStatus::Unknown`).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, SecondsFormat, TimeZone, Utc};
use serde::de::IntoDeserializer;
use serde::{Deserialize, Serialize};

use crate::crypto::{self, Aes256GcmKey, CryptoError, HmacSha256Key};
use crate::money::{Currency, Money};

/// The mainland API v3 and v2 paths. WeChat Pay Global / Hong Kong (the
/// cross-border API a Macau acquirer contracts) lives on `apihk.mch.weixin.qq.com`
/// under `/v3/global/...` with other bodies (`merchant_category_code`, `trade_type`,
/// institutional `sp_mchid`/`sub_mchid`); switching means replacing THIS module's
/// paths and the request types below, nothing in the adapter's flow.
pub mod paths {
    pub const NATIVE: &str = "/v3/pay/transactions/native";
    pub const JSAPI: &str = "/v3/pay/transactions/jsapi";
    pub const REFUNDS: &str = "/v3/refund/domestic/refunds";
    pub const MICROPAY: &str = "/pay/micropay";
    pub const ORDER_QUERY: &str = "/pay/orderquery";
    pub const REVERSE: &str = "/secapi/pay/reverse";
    pub const OAUTH_AUTHORIZE: &str = "/connect/oauth2/authorize";
    pub const OAUTH_ACCESS_TOKEN: &str = "/sns/oauth2/access_token";

    /// `GET` a payment by our order number (the only way for unpaid orders).
    pub fn query_by_out_trade_no(out_trade_no: &str, mchid: &str) -> String {
        format!("/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={mchid}")
    }

    /// `POST` with `{"mchid":..}`; 204 on success.
    pub fn close(out_trade_no: &str) -> String {
        format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close")
    }

    pub fn refund_query(out_refund_no: &str) -> String {
        format!("/v3/refund/domestic/refunds/{out_refund_no}")
    }
}

/// The `Authorization` scheme of API v3 requests.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// WeChat sends callbacks whose signature starts with this to check that the
/// merchant really verifies; such a callback must fail verification.
pub const SIGNATURE_PROBE_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// The only resource encryption API v3 uses.
pub const AEAD_AES_256_GCM: &str = "AEAD_AES_256_GCM";

/// The JSAPI `signType` for API v3 prepay ids.
pub const JSAPI_SIGN_TYPE: &str = "RSA";

/// Request signing message: method, canonical URL (path and query, no scheme or
/// host), unix seconds, nonce, body (`""` for GET); every line ends with `\n`.
pub fn request_message(
    method: &str,
    canonical_url: &str,
    timestamp: &str,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{canonical_url}\n{timestamp}\n{nonce}\n{body}\n")
}

/// The message WeChat signs on responses and callbacks:
/// `Wechatpay-Timestamp\nWechatpay-Nonce\n<exact body bytes>\n` (empty body for 204).
pub fn wechatpay_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    msg.extend_from_slice(timestamp.as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(nonce.as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(body);
    msg.push(b'\n');
    msg
}

/// The JSAPI `paySign` message: `appId\ntimeStamp\nnonceStr\npackage\n`.
pub fn jsapi_message(app_id: &str, time_stamp: &str, nonce_str: &str, package: &str) -> String {
    format!("{app_id}\n{time_stamp}\n{nonce_str}\n{package}\n")
}

/// The five attributes of an API v3 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub mchid: String,
    pub nonce_str: String,
    pub signature: String,
    pub timestamp: String,
    pub serial_no: String,
}

impl Authorization {
    pub fn to_header(&self) -> String {
        format!(
            "{AUTH_SCHEME} mchid=\"{}\",nonce_str=\"{}\",signature=\"{}\",timestamp=\"{}\",serial_no=\"{}\"",
            self.mchid, self.nonce_str, self.signature, self.timestamp, self.serial_no
        )
    }

    /// Parses the header as WeChat does: the scheme, then the five `name="value"`
    /// attributes in any order, each exactly once. Values never contain `"` or `,`
    /// (ids, digits, base64).
    pub fn parse(header: &str) -> Result<Authorization, String> {
        let rest = header
            .strip_prefix(AUTH_SCHEME)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or_else(|| format!("authorization scheme must be {AUTH_SCHEME}"))?;
        let mut attrs: BTreeMap<&str, &str> = BTreeMap::new();
        for part in rest.split(',') {
            let (name, value) = part
                .trim()
                .split_once('=')
                .ok_or("authorization attribute without '='")?;
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .filter(|v| !v.contains('"'))
                .ok_or("authorization attribute value must be double-quoted")?;
            if attrs.insert(name, value).is_some() {
                return Err(format!("authorization attribute {name} repeated"));
            }
        }
        let mut take = |name: &str| {
            attrs
                .remove(name)
                .map(str::to_owned)
                .ok_or_else(|| format!("authorization attribute {name} missing"))
        };
        let parsed = Authorization {
            mchid: take("mchid")?,
            nonce_str: take("nonce_str")?,
            signature: take("signature")?,
            timestamp: take("timestamp")?,
            serial_no: take("serial_no")?,
        };
        match attrs.keys().next() {
            Some(extra) => Err(format!("unknown authorization attribute {extra}")),
            None => Ok(parsed),
        }
    }
}

/// A random nonce of ASCII letters and digits (WeChat: at most 32 characters).
pub fn nonce_str(len: usize) -> Result<String, CryptoError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // The modulo bias (256 % 62) is irrelevant for a nonce: it only has to be fresh.
    Ok(crypto::random_bytes(len)?
        .into_iter()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect())
}

/// RFC 3986 percent-encoding of everything but unreserved characters (OAuth URLs).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A secret string (API v2 key, OAuth app secret): used verbatim on the wire or as
/// key bytes, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(text: impl Into<String>) -> SecretText {
        SecretText(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(***)")
    }
}

// ---------------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------------

fn beijing() -> FixedOffset {
    // UTC+8 is in range, so the UTC fallback is unreachable.
    FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| Utc.fix())
}

/// RFC 3339 in Beijing time, as WeChat writes `time_expire` and `success_time`
/// (`2024-05-01T12:00:00+08:00`).
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.with_timezone(&beijing())
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

pub fn parse_rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// API v2 `time_end`: `yyyyMMddHHmmss` in Beijing time.
pub fn v2_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&beijing())
        .format("%Y%m%d%H%M%S")
        .to_string()
}

pub fn parse_v2_time(text: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(text, "%Y%m%d%H%M%S").ok()?;
    beijing()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// The bill's `yyyy-MM-dd HH:mm:ss` in Beijing time.
pub fn bill_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&beijing())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The Beijing calendar date of an instant (bills are cut at Beijing midnight).
pub fn beijing_date(at: DateTime<Utc>) -> chrono::NaiveDate {
    at.with_timezone(&beijing()).date_naive()
}

// ---------------------------------------------------------------------------------
// Amounts
// ---------------------------------------------------------------------------------

/// `amount` of orders: integer minor units (`total`, fen for CNY, cents for MOP and
/// HKD, whole units for zero-decimal currencies) and the ISO currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

impl Amount {
    pub fn from_money(money: &Money) -> Amount {
        Amount {
            total: money.minor(),
            currency: Some(money.currency().code().to_owned()),
        }
    }

    pub fn to_money(&self) -> Result<Money, String> {
        money_from_wire(self.total, self.currency.as_deref())
    }
}

/// Minor units and an optional currency (mainland answers may omit it: CNY) into
/// `Money`; a negative total or an unknown currency is an error.
pub fn money_from_wire(total: i64, currency: Option<&str>) -> Result<Money, String> {
    let currency = match currency {
        None => Currency::Cny,
        Some(code) => Currency::parse(code).map_err(|e| e.to_string())?,
    };
    Money::from_minor(total, currency).map_err(|e| format!("amount {total}: {e}"))
}

// ---------------------------------------------------------------------------------
// Status enums
// ---------------------------------------------------------------------------------

/// Parses a wire string into one of the status enums; unknown strings become
/// the enum's `Unknown`.
fn parse_enum<'de, T: Deserialize<'de>>(text: &'de str, unknown: T) -> T {
    T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(text))
        .unwrap_or(unknown)
}

/// `trade_state` (v3 query and callback, v2 orderquery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeState {
    Success,
    /// Paid, then a refund was started (partial or full).
    Refund,
    Notpay,
    Closed,
    /// Reversed (micropay `reverse`).
    Revoked,
    /// The shopper is confirming a micropay charge (PIN).
    Userpaying,
    Payerror,
    #[serde(other)]
    Unknown,
}

impl TradeState {
    pub fn parse(text: &str) -> TradeState {
        parse_enum(text, TradeState::Unknown)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeType {
    Native,
    Jsapi,
    App,
    Mweb,
    Micropay,
    Facepay,
    #[serde(other)]
    Unknown,
}

/// Refund `status` (v3 answer and query) and `refund_status` (callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    Success,
    Closed,
    Processing,
    Abnormal,
    #[serde(other)]
    Unknown,
}

/// Callback `event_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "TRANSACTION.SUCCESS")]
    TransactionSuccess,
    #[serde(rename = "REFUND.SUCCESS")]
    RefundSuccess,
    #[serde(rename = "REFUND.ABNORMAL")]
    RefundAbnormal,
    #[serde(rename = "REFUND.CLOSED")]
    RefundClosed,
    #[serde(other)]
    Unknown,
}

// ---------------------------------------------------------------------------------
// API v3 bodies
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    pub openid: String,
}

/// Body of `POST /v3/pay/transactions/native` and `.../jsapi` (JSAPI adds `payer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepay {
    pub appid: String,
    pub mchid: String,
    pub description: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    pub notify_url: String,
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeAnswer {
    pub code_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsapiAnswer {
    pub prepay_id: String,
}

/// `amount` as the query answer and the callback report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

/// A payment as `GET .../out-trade-no/{id}` answers it and as the decrypted
/// `TRANSACTION.SUCCESS` resource carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<TradeType>,
    pub trade_state: TradeState,
    #[serde(default)]
    pub trade_state_desc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<TransactionAmount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseOrder {
    pub mchid: String,
}

/// `amount` of a refund request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmountRequest {
    pub refund: i64,
    pub total: i64,
    pub currency: String,
}

/// Body of `POST /v3/refund/domestic/refunds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRefund {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    pub out_refund_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    pub amount: RefundAmountRequest,
}

/// `amount` of a refund answer or refund callback. Mainland answers carry no
/// currency on the callback (CNY); Sesame's sandbox adds it for MOP and HKD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    pub total: i64,
    pub refund: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// A refund as the create and query calls answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub out_refund_no: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    pub create_time: String,
    pub status: RefundStatus,
    pub amount: RefundAmount,
}

/// The decrypted `REFUND.*` callback resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotice {
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_status: RefundStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    pub amount: RefundAmount,
}

/// Every non-2xx API v3 answer: `{"code":"PARAM_ERROR","message":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// The callback envelope (signed as raw bytes; only `resource` is encrypted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub create_time: String,
    pub resource_type: String,
    pub event_type: EventType,
    #[serde(default)]
    pub summary: String,
    pub resource: EncryptedResource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    pub original_type: String,
    pub algorithm: String,
    pub ciphertext: String,
    #[serde(default)]
    pub associated_data: String,
    pub nonce: String,
}

/// Seals a callback resource: AES-256-GCM with the APIv3 key, the 12-character
/// `nonce` as IV and `associated_data` as AAD; base64 of `ciphertext || tag`.
pub fn encrypt_resource(
    key: &Aes256GcmKey,
    original_type: &str,
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<EncryptedResource, CryptoError> {
    let sealed = key.encrypt(nonce.as_bytes(), associated_data.as_bytes(), plaintext)?;
    Ok(EncryptedResource {
        original_type: original_type.to_owned(),
        algorithm: AEAD_AES_256_GCM.to_owned(),
        ciphertext: crypto::encode_base64(&sealed),
        associated_data: associated_data.to_owned(),
        nonce: nonce.to_owned(),
    })
}

/// Opens a callback resource; any other algorithm is refused.
pub fn decrypt_resource(
    key: &Aes256GcmKey,
    resource: &EncryptedResource,
) -> Result<Vec<u8>, CryptoError> {
    if resource.algorithm != AEAD_AES_256_GCM {
        return Err(CryptoError::Decrypt);
    }
    let sealed = crypto::decode_base64(&resource.ciphertext)?;
    key.decrypt(
        resource.nonce.as_bytes(),
        resource.associated_data.as_bytes(),
        &sealed,
    )
}

/// `GET /sns/oauth2/access_token` answer: a token and the `openid`, or
/// `{"errcode":40029,"errmsg":"invalid code"}` (still HTTP 200).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OauthToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errmsg: Option<String>,
}

// ---------------------------------------------------------------------------------
// API v2 (micropay): signatures and the flat XML
// ---------------------------------------------------------------------------------

/// API v2 `sign_type`. WeChat's default is MD5; Sesame always sends HMAC-SHA256 and
/// accepts MD5 only on an answer that says `sign_type=MD5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignType {
    Md5,
    HmacSha256,
}

impl SignType {
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::HmacSha256 => "HMAC-SHA256",
        }
    }

    /// Absent means MD5 (WeChat's default); anything else unknown is refused.
    pub fn parse(text: Option<&str>) -> Option<SignType> {
        match text {
            None | Some("MD5") => Some(SignType::Md5),
            Some("HMAC-SHA256") => Some(SignType::HmacSha256),
            Some(_) => None,
        }
    }
}

/// The v2 signing string: non-empty parameters except `sign`, sorted by name
/// (byte order), `k=v` joined by `&`, then `&key=<API v2 key>`.
pub fn v2_sign_string(params: &BTreeMap<String, String>, key: &SecretText) -> String {
    let mut out = String::new();
    for (name, value) in params {
        if name == "sign" || value.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str("key=");
    out.push_str(key.expose());
    out
}

/// The v2 `sign`: upper-case hex MD5 of the signing string, or upper-case hex
/// HMAC-SHA256 of it keyed with the API v2 key.
pub fn v2_sign(params: &BTreeMap<String, String>, key: &SecretText, sign_type: SignType) -> String {
    let text = v2_sign_string(params, key);
    match sign_type {
        SignType::Md5 => crypto::md5_hex_upper(text.as_bytes()),
        SignType::HmacSha256 => {
            HmacSha256Key::new(key.expose().as_bytes()).sign_hex_upper(text.as_bytes())
        }
    }
}

/// Checks `params["sign"]` in constant time.
pub fn v2_verify(
    params: &BTreeMap<String, String>,
    key: &SecretText,
    sign_type: SignType,
) -> Result<(), CryptoError> {
    let given = params.get("sign").ok_or(CryptoError::BadSignature)?;
    let expected = v2_sign(params, key, sign_type);
    if crypto::constant_time_eq(expected.as_bytes(), given.to_ascii_uppercase().as_bytes()) {
        Ok(())
    } else {
        Err(CryptoError::BadSignature)
    }
}

/// v2 `return_code` / `result_code` value for success.
pub const V2_SUCCESS: &str = "SUCCESS";

/// Micropay `err_code`s about our request rather than the shopper's payment
/// (WeChat's v2 error table): keys and signature, parameters, the appid/mchid
/// binding, a reused order number, the transport format. Repeating the same
/// request cannot succeed, and no other payment code would help.
pub const MICROPAY_REQUEST_ERRORS: &[&str] = &[
    "SIGNERROR",
    "PARAM_ERROR",
    "LACK_PARAMS",
    "APPID_NOT_EXIST",
    "MCHID_NOT_EXIST",
    "APPID_MCHID_NOT_MATCH",
    "SUB_MCH_ID_NOT_EXIST",
    "OUT_TRADE_NO_USED",
    "NOAUTH",
    "XML_FORMAT_ERROR",
    "REQUIRE_POST_METHOD",
    "POST_DATA_EMPTY",
    "NOT_UTF8",
    "INVALID_REQUEST",
];

/// The flat XML of API v2: `<xml><name><![CDATA[value]]></name>...</xml>`.
///
/// A deliberately small reader and writer: one root `<xml>`, children that hold
/// only text and CDATA, no attributes, no nesting, no DOCTYPE (so no entity
/// expansion — the classic v2 XXE hole cannot exist), no comments or processing
/// instructions except one leading `<?xml ...?>` declaration.
pub mod xml {
    use std::collections::BTreeMap;

    /// Bodies larger than this are refused before parsing.
    pub const MAX_BYTES: usize = 64 * 1024;
    const MAX_FIELDS: usize = 256;

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("malformed WeChat XML: {0}")]
    pub struct XmlError(pub &'static str);

    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name.len() <= 64
    }

    /// Writes every value as CDATA. A value containing `]]>` is split across two
    /// CDATA sections (`]]` ends one, `>` starts the next), the standard escape.
    pub fn write(fields: &BTreeMap<String, String>) -> Result<String, XmlError> {
        let mut out = String::from("<xml>");
        for (name, value) in fields {
            if !valid_name(name) {
                return Err(XmlError("field name is not a plain XML name"));
            }
            if value
                .chars()
                .any(|c| c != '\t' && c != '\n' && c != '\r' && c < ' ')
            {
                return Err(XmlError("value holds a control character XML cannot carry"));
            }
            out.push('<');
            out.push_str(name);
            out.push_str("><![CDATA[");
            out.push_str(&value.replace("]]>", "]]]]><![CDATA[>"));
            out.push_str("]]></");
            out.push_str(name);
            out.push('>');
        }
        out.push_str("</xml>");
        Ok(out)
    }

    /// Parses the flat shape into name -> value. Duplicated names are refused (which
    /// one was signed would be a guess).
    pub fn parse(text: &str) -> Result<BTreeMap<String, String>, XmlError> {
        if text.len() > MAX_BYTES {
            return Err(XmlError("document too large"));
        }
        let mut rest = text.trim_start();
        if let Some(after) = rest.strip_prefix("<?xml") {
            let end = after
                .find("?>")
                .ok_or(XmlError("unterminated XML declaration"))?;
            rest = after[end + 2..].trim_start();
        }
        rest = rest
            .strip_prefix("<xml>")
            .ok_or(XmlError("root element must be <xml>"))?;
        let mut fields = BTreeMap::new();
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix("</xml>") {
                if !after.trim().is_empty() {
                    return Err(XmlError("content after </xml>"));
                }
                return Ok(fields);
            }
            let after_lt = rest
                .strip_prefix('<')
                .ok_or(XmlError("text outside an element"))?;
            let name_end = after_lt
                .find('>')
                .ok_or(XmlError("unterminated start tag"))?;
            let name = &after_lt[..name_end];
            if !valid_name(name) {
                return Err(XmlError(
                    "start tag is not a plain name (attributes, comments, DOCTYPE and nesting are refused)",
                ));
            }
            let (value, after_element) = element_content(&after_lt[name_end + 1..], name)?;
            if fields.len() >= MAX_FIELDS {
                return Err(XmlError("too many fields"));
            }
            if fields.insert(name.to_owned(), value).is_some() {
                return Err(XmlError("field repeated"));
            }
            rest = after_element;
        }
    }

    /// Reads text and CDATA up to `</name>`; returns the value and what follows.
    fn element_content<'a>(mut rest: &'a str, name: &str) -> Result<(String, &'a str), XmlError> {
        let mut value = String::new();
        loop {
            if let Some(after) = rest.strip_prefix("<![CDATA[") {
                let end = after.find("]]>").ok_or(XmlError("unterminated CDATA"))?;
                value.push_str(&after[..end]);
                rest = &after[end + 3..];
            } else if let Some(after) = rest.strip_prefix("</") {
                let after_name = after
                    .strip_prefix(name)
                    .and_then(|a| a.strip_prefix('>'))
                    .ok_or(XmlError("mismatched end tag"))?;
                return Ok((value, after_name));
            } else if rest.starts_with('<') {
                return Err(XmlError("nested element"));
            } else {
                let end = rest.find('<').ok_or(XmlError("unterminated element"))?;
                value.push_str(&unescape(&rest[..end])?);
                rest = &rest[end..];
            }
        }
    }

    fn unescape(text: &str) -> Result<String, XmlError> {
        if text.contains("]]>") {
            return Err(XmlError("']]>' in text"));
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(amp) = rest.find('&') {
            out.push_str(&rest[..amp]);
            let after = &rest[amp + 1..];
            let semi = after
                .find(';')
                .filter(|&i| i <= 10)
                .ok_or(XmlError("bare '&'"))?;
            let entity = &after[..semi];
            let ch = match entity {
                "lt" => '<',
                "gt" => '>',
                "amp" => '&',
                "quot" => '"',
                "apos" => '\'',
                _ => {
                    let code = if let Some(hex) = entity.strip_prefix("#x") {
                        u32::from_str_radix(hex, 16).ok()
                    } else if let Some(dec) = entity.strip_prefix('#') {
                        dec.parse().ok()
                    } else {
                        None
                    };
                    code.and_then(char::from_u32)
                        .ok_or(XmlError("unknown entity"))?
                }
            };
            out.push(ch);
            rest = &after[semi + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------
// Daily bill (statement)
// ---------------------------------------------------------------------------------

/// The header of WeChat's trade bill (`bill_type=ALL`). Data rows prefix every
/// field with a backtick, as WeChat does so spreadsheets keep long ids as text.
pub const BILL_HEADER: [&str; 27] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
];

/// The bill's summary header, after the data rows.
pub const BILL_SUMMARY_HEADER: [&str; 7] = [
    "总交易单数",
    "应结订单总金额",
    "退款总金额",
    "充值券退款总金额",
    "手续费总金额",
    "订单总金额",
    "申请退款总金额",
];

/// One bill field: a leading backtick and no comma (WeChat bills are not quoted;
/// a comma in free text such as a description is replaced by a space).
pub fn bill_field(value: &str) -> String {
    format!("`{}", value.replace([',', '\n', '\r'], " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_signing_message_has_five_newline_terminated_lines() {
        assert_eq!(
            request_message(
                "GET",
                "/v3/certificates",
                "1554208460",
                "593BEC0C930BF1AFEB40B4A08C8FB242",
                ""
            ),
            "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
        );
        assert_eq!(
            request_message(
                "POST",
                "/v3/pay/transactions/native",
                "1714536000",
                "n1",
                r#"{"mchid":"1900000109"}"#
            ),
            "POST\n/v3/pay/transactions/native\n1714536000\nn1\n{\"mchid\":\"1900000109\"}\n"
        );
    }

    #[test]
    fn response_and_callback_message_covers_the_exact_body_bytes() {
        assert_eq!(
            wechatpay_message("1714536000", "abc", br#"{"id":"EV-1"}"#),
            b"1714536000\nabc\n{\"id\":\"EV-1\"}\n".to_vec()
        );
        assert_eq!(
            wechatpay_message("1714536000", "abc", b""),
            b"1714536000\nabc\n\n".to_vec()
        );
    }

    #[test]
    fn jsapi_pay_sign_message_has_four_lines() {
        assert_eq!(
            jsapi_message(
                "wx8888888888888888",
                "1414561699",
                "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
                "prepay_id=wx201410272009395522657a690389285100"
            ),
            "wx8888888888888888\n1414561699\n5K8264ILTKCH16CQ2502SI8ZNMTM67VS\nprepay_id=wx201410272009395522657a690389285100\n"
        );
    }

    #[test]
    fn authorization_header_round_trips_and_rejects_sloppy_forms() {
        let auth = Authorization {
            mchid: "1900009191".into(),
            nonce_str: "593BEC0C930BF1AFEB40B4A08C8FB242".into(),
            signature: "uOVRnA4qG/MNnYzdQxJanN+zU+lTgIcnU9BxGw5dKjK+VdEUz2FeIoC+D5sB/LN+nGzX3hfZg6r5wT1pl2ZobmIc6p0ldN7J6yDgUzbX8Uk3sD4a4eZVPTBvqNDoUqcYMlZ9uuDdCvNv4TM3c1WzsXUrExwVkI1XO5jCNbgDJ25nkT/c1gIFvqoogl7MdSFGc4W4xZsqCItnqbypR3RuGIlR9h9vlRsy7zJR9PBI83X8alLDIfR1ukt1P7tMnmogZ0cuDY8cZsd8ZlCgLadmvej58SLsIkVxFJ8XyUgx9FmutKSYTmYtWBZ0+tNvfGmbXU7cob8H/4nLBiCwIUFluw==".into(),
            timestamp: "1554208460".into(),
            serial_no: "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C".into(),
        };
        let header = auth.to_header();
        assert!(header.starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1900009191\",nonce_str="));
        assert_eq!(Authorization::parse(&header), Ok(auth.clone()));
        let reordered = format!(
            "{AUTH_SCHEME} serial_no=\"{}\", timestamp=\"{}\",signature=\"{}\",nonce_str=\"{}\",mchid=\"{}\"",
            auth.serial_no, auth.timestamp, auth.signature, auth.nonce_str, auth.mchid
        );
        assert_eq!(Authorization::parse(&reordered), Ok(auth));
        for bad in [
            "",
            "Bearer x",
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=1,nonce_str=\"a\",signature=\"s\",timestamp=\"1\",serial_no=\"x\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1\",mchid=\"2\",nonce_str=\"a\",signature=\"s\",timestamp=\"1\",serial_no=\"x\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1\",nonce_str=\"a\",signature=\"s\",timestamp=\"1\",serial_no=\"x\",extra=\"y\"",
        ] {
            assert!(Authorization::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// The example of WeChat's v2 signature guide ("签名算法"), with its published
    /// MD5 and HMAC-SHA256 results.
    #[test]
    fn v2_signature_matches_the_wechat_guide_example() {
        let params: BTreeMap<String, String> = [
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("device_info", "1000"),
            ("body", "test"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
            ("sign", "ignored"),
            ("empty", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let key = SecretText::new("192006250b4c09247ec02edce69f6a2d");
        assert_eq!(
            v2_sign_string(&params, &key),
            "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA&key=192006250b4c09247ec02edce69f6a2d"
        );
        assert_eq!(
            v2_sign(&params, &key, SignType::Md5),
            "9A0A8659F005D6984697E2CA0A9CF3B7"
        );
        assert_eq!(
            v2_sign(&params, &key, SignType::HmacSha256),
            "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
        );
        let mut signed = params.clone();
        signed.insert(
            "sign".into(),
            "6a9ae1657590fd6257d693a078e1c3e4bb6ba4dc30b23e0ee2496e54170dacd6".into(),
        );
        assert_eq!(v2_verify(&signed, &key, SignType::HmacSha256), Ok(()));
        assert!(v2_verify(&signed, &key, SignType::Md5).is_err());
        signed.insert("body".into(), "test2".into());
        assert!(v2_verify(&signed, &key, SignType::HmacSha256).is_err());
        signed.remove("sign");
        assert!(v2_verify(&signed, &key, SignType::HmacSha256).is_err());
        assert_eq!(SignType::parse(None), Some(SignType::Md5));
        assert_eq!(
            SignType::parse(Some("HMAC-SHA256")),
            Some(SignType::HmacSha256)
        );
        assert_eq!(SignType::parse(Some("SHA1")), None);
    }

    #[test]
    fn xml_round_trips_including_cdata_terminators_and_entities() {
        let fields: BTreeMap<String, String> = [
            ("body", "Coffee <large> & \"cake\""),
            ("tricky", "a]]>b]]>"),
            ("total_fee", "880"),
            ("empty", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let text = xml::write(&fields).unwrap();
        assert!(text.starts_with("<xml><body><![CDATA[Coffee <large>"));
        assert_eq!(xml::parse(&text).unwrap(), fields);
        let plain = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xml>\n  <return_code>SUCCESS</return_code>\n  <msg>a &lt;b&gt; &amp; &#20013;&#x6587;</msg>\n  <mix>x<![CDATA[<y>]]>z</mix>\n</xml>\n";
        let parsed = xml::parse(plain).unwrap();
        assert_eq!(parsed["return_code"], "SUCCESS");
        assert_eq!(parsed["msg"], "a <b> & 中文");
        assert_eq!(parsed["mix"], "x<y>z");
    }

    #[test]
    fn malformed_or_dangerous_xml_is_refused() {
        for bad in [
            "",
            "<xml>",
            "<root><a>1</a></root>",
            "<xml><a>1</b></xml>",
            "<xml><a><b>1</b></a></xml>",
            "<xml><a x=\"1\">1</a></xml>",
            "<xml><a>1</a><a>2</a></xml>",
            "<xml>text<a>1</a></xml>",
            "<xml><a>1</a></xml><b/>",
            "<xml><a><![CDATA[1</a></xml>",
            "<xml><a>&foo;</a></xml>",
            "<xml><a>a & b</a></xml>",
            "<xml><!-- c --><a>1</a></xml>",
            "<!DOCTYPE xml [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml><a>&e;</a></xml>",
            "<xml><!DOCTYPE x><a>1</a></xml>",
            "<xml><a/></xml>",
        ] {
            assert!(xml::parse(bad).is_err(), "{bad:?} accepted");
        }
        let huge = format!("<xml><a>{}</a></xml>", "x".repeat(xml::MAX_BYTES));
        assert!(xml::parse(&huge).is_err());
        let mut bad_name = BTreeMap::new();
        bad_name.insert("a b".to_owned(), "1".to_owned());
        assert!(xml::write(&bad_name).is_err());
        let mut control = BTreeMap::new();
        control.insert("a".to_owned(), "\u{1}".to_owned());
        assert!(xml::write(&control).is_err());
    }

    #[test]
    fn unknown_statuses_parse_as_unknown() {
        let tx: Transaction = serde_json::from_str(
            r#"{"appid":"wx1","mchid":"1","out_trade_no":"o_1","trade_state":"SOMETHING_NEW","trade_type":"HOLOGRAM"}"#,
        )
        .unwrap();
        assert_eq!(tx.trade_state, TradeState::Unknown);
        assert_eq!(tx.trade_type, Some(TradeType::Unknown));
        assert_eq!(TradeState::parse("USERPAYING"), TradeState::Userpaying);
        assert_eq!(TradeState::parse("REVOKED"), TradeState::Revoked);
        assert_eq!(TradeState::parse("success"), TradeState::Unknown);
        let refund_status: RefundStatus = serde_json::from_str("\"PENDING_REVIEW\"").unwrap();
        assert_eq!(refund_status, RefundStatus::Unknown);
        let event: EventType = serde_json::from_str("\"MCHTRANSFER.BILL.FINISHED\"").unwrap();
        assert_eq!(event, EventType::Unknown);
        let event: EventType = serde_json::from_str("\"REFUND.ABNORMAL\"").unwrap();
        assert_eq!(event, EventType::RefundAbnormal);
    }

    #[test]
    fn amounts_convert_to_and_from_minor_units() {
        let mop = Money::parse("12.30", Currency::Mop).unwrap();
        assert_eq!(
            Amount::from_money(&mop),
            Amount {
                total: 1230,
                currency: Some("MOP".into())
            }
        );
        let hkd = Money::parse("0.01", Currency::Hkd).unwrap();
        assert_eq!(Amount::from_money(&hkd).total, 1);
        let krw = Money::parse("5000", Currency::Krw).unwrap();
        assert_eq!(Amount::from_money(&krw).total, 5000);
        let jpy = Amount {
            total: 980,
            currency: Some("JPY".into()),
        };
        assert_eq!(
            jpy.to_money().unwrap(),
            Money::parse("980", Currency::Jpy).unwrap()
        );
        let cny_default = Amount {
            total: 1,
            currency: None,
        };
        assert_eq!(
            cny_default.to_money().unwrap(),
            Money::parse("0.01", Currency::Cny).unwrap()
        );
        assert_eq!(
            Amount::from_money(&mop).to_money().unwrap(),
            mop,
            "round trip"
        );
        assert!(money_from_wire(-1, Some("MOP")).is_err());
        assert!(money_from_wire(1, Some("mop")).is_err());
        assert!(money_from_wire(1, Some("XYZ")).is_err());
        assert!(serde_json::from_str::<Amount>(r#"{"total":"12.30","currency":"MOP"}"#).is_err());
        assert!(serde_json::from_str::<Amount>(r#"{"total":12.3,"currency":"MOP"}"#).is_err());
    }

    #[test]
    fn resources_seal_and_open_with_the_apiv3_key_only() {
        let key = Aes256GcmKey::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let sealed =
            encrypt_resource(&key, "transaction", "fdasflkja484", "transaction", b"{}").unwrap();
        assert_eq!(sealed.algorithm, "AEAD_AES_256_GCM");
        assert_eq!(decrypt_resource(&key, &sealed).unwrap(), b"{}");
        let mut wrong_aad = sealed.clone();
        wrong_aad.associated_data = "refund".into();
        assert!(decrypt_resource(&key, &wrong_aad).is_err());
        let mut other_algorithm = sealed.clone();
        other_algorithm.algorithm = "AEAD_SM4_GCM".into();
        assert!(decrypt_resource(&key, &other_algorithm).is_err());
        let other = Aes256GcmKey::new(b"0123456789abcdef0123456789abcdeX").unwrap();
        assert!(decrypt_resource(&other, &sealed).is_err());
    }

    #[test]
    fn times_are_written_in_beijing_time() {
        let at = DateTime::from_timestamp(1_714_536_000, 0).unwrap(); // 2024-05-01T04:00:00Z
        assert_eq!(rfc3339(at), "2024-05-01T12:00:00+08:00");
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00+08:00"), Some(at));
        assert_eq!(v2_time(at), "20240501120000");
        assert_eq!(parse_v2_time("20240501120000"), Some(at));
        assert_eq!(parse_v2_time("2024-05-01"), None);
        assert_eq!(bill_time(at), "2024-05-01 12:00:00");
        let late = DateTime::from_timestamp(1_714_581_000, 0).unwrap(); // 16:30Z = 00:30 next day
        assert_eq!(beijing_date(late).to_string(), "2024-05-02");
    }

    #[test]
    fn nonces_are_alphanumeric_and_fresh() {
        let a = nonce_str(32).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, nonce_str(32).unwrap());
        assert_eq!(format!("{:?}", SecretText::new("k")), "SecretText(***)");
        assert_eq!(bill_field("a,b"), "`a b");
    }
}
