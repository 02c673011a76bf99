//! Kakao Pay online single payment, on the wire: the JSON bodies of `ready`,
//! `approve`, `order` and `cancel`, the error body, the `Authorization` header, the
//! return-URL query parameters, amounts (integer KRW) and timestamps (KST), and the
//! mapping of Kakao's payment status to [`WalletStatus`].
//!
//! Shared by the adapter (which serialises requests and reads responses) and the
//! sandbox (which reads requests and writes responses), so both sides speak the
//! exact same shapes. Request types deny unknown fields so the sandbox catches a
//! misspelt field; response types ignore unknown fields because Kakao adds some.
//! Must never: map a status it does not know to anything but
//! [`WalletStatus::Unknown`], accept a fractional or negative amount, or hold the
//! secret key anywhere but in the header value it builds.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::contract::{AdapterError, WalletStatus};
use crate::money::{Currency, Money};

pub const READY_PATH: &str = "/online/v1/payment/ready";
pub const APPROVE_PATH: &str = "/online/v1/payment/approve";
pub const ORDER_PATH: &str = "/online/v1/payment/order";
pub const CANCEL_PATH: &str = "/online/v1/payment/cancel";

/// Kakao's test merchant code for single payments.
pub const TEST_CID: &str = "TC0ONETIME";

/// The `Authorization` scheme of the current API (`open-api.kakaopay.com`).
pub const AUTH_SCHEME: &str = "SECRET_KEY";

/// Return-URL query parameter Sesame adds to tell the three outcomes apart.
pub const RESULT_PARAM: &str = "result";
/// Return-URL query parameter Kakao appends to the approval URL.
pub const PG_TOKEN_PARAM: &str = "pg_token";
pub const RESULT_APPROVED: &str = "approved";
pub const RESULT_CANCELLED: &str = "cancelled";
pub const RESULT_FAILED: &str = "failed";

/// `payload` of `approve` / `cancel` is stored by Kakao, at most 200 characters.
pub const MAX_PAYLOAD_CHARS: usize = 200;
/// `partner_order_id`, `partner_user_id` and `item_name` are at most 100 characters.
pub const MAX_FIELD_CHARS: usize = 100;

/// Error codes the sandbox answers with (Kakao's negative-integer style; the
/// meaning of each is documented in `kakao_pay/mod.rs`).
pub mod codes {
    pub const INTERNAL: i64 = -1;
    pub const INVALID_PARAMS: i64 = -2;
    pub const UNAUTHORIZED: i64 = -401;
    pub const NOT_AUTHENTICATED: i64 = -701;
    pub const ALREADY_APPROVED: i64 = -702;
    pub const CANCEL_AMOUNT_EXCEEDED: i64 = -708;
    pub const CANCEL_AVAILABLE_MISMATCH: i64 = -709;
    pub const TID_NOT_FOUND: i64 = -721;
    pub const INVALID_STATUS: i64 = -725;
    pub const INVALID_CID: i64 = -731;
    pub const APPROVAL_FAILED: i64 = -780;
}

/// `Authorization` header value for `secret`.
pub fn authorization(secret: &str) -> String {
    format!("{AUTH_SCHEME} {secret}")
}

/// The secret carried by an `Authorization` header, if it uses Kakao's scheme.
/// The scheme is matched case-insensitively (RFC 9110 §11.1), the secret exactly.
pub fn secret_from_authorization(header: &str) -> Option<&str> {
    let (scheme, secret) = header.split_once(' ')?;
    (scheme.eq_ignore_ascii_case(AUTH_SCHEME) && !secret.is_empty() && !secret.contains(' '))
        .then_some(secret)
}

// ----------------------------------------------------------------------------
// Requests (adapter -> Kakao) and responses (Kakao -> adapter)
// ----------------------------------------------------------------------------

/// `POST /online/v1/payment/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyRequest {
    pub cid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid_secret: Option<String>,
    pub partner_order_id: String,
    pub partner_user_id: String,
    pub item_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_code: Option<String>,
    pub quantity: u32,
    pub total_amount: i64,
    pub tax_free_amount: i64,
    /// Kakao computes `(total - tax_free) / 11` when absent; Sesame leaves it absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_amount: Option<i64>,
    pub approval_url: String,
    pub cancel_url: String,
    pub fail_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyResponse {
    pub tid: String,
    #[serde(default)]
    pub next_redirect_app_url: Option<String>,
    pub next_redirect_mobile_url: String,
    #[serde(default)]
    pub next_redirect_pc_url: Option<String>,
    #[serde(default)]
    pub android_app_scheme: Option<String>,
    #[serde(default)]
    pub ios_app_scheme: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}

/// `POST /online/v1/payment/approve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    pub cid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid_secret: Option<String>,
    pub tid: String,
    pub partner_order_id: String,
    pub partner_user_id: String,
    pub pg_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<i64>,
}

/// Kakao's amount object (`amount`, `canceled_amount`, `cancel_available_amount`,
/// `approved_cancel_amount`): integers in KRW.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub total: i64,
    #[serde(default)]
    pub tax_free: i64,
    #[serde(default)]
    pub vat: i64,
    #[serde(default)]
    pub point: i64,
    #[serde(default)]
    pub discount: i64,
    #[serde(default)]
    pub green_deposit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproveResponse {
    /// This call's request id (Kakao issues one per approve / cancel).
    pub aid: String,
    pub tid: String,
    pub cid: String,
    pub partner_order_id: String,
    pub partner_user_id: String,
    #[serde(default)]
    pub payment_method_type: Option<String>,
    pub amount: Amount,
    #[serde(default)]
    pub item_name: Option<String>,
    #[serde(default)]
    pub quantity: Option<u32>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub approved_at: Option<String>,
    #[serde(default)]
    pub payload: Option<String>,
}

/// `POST /online/v1/payment/order`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub cid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid_secret: Option<String>,
    pub tid: String,
}

/// One entry of `payment_action_details`: an approval or a cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAction {
    pub aid: String,
    #[serde(default)]
    pub approved_at: Option<String>,
    pub amount: i64,
    #[serde(default)]
    pub point_amount: i64,
    #[serde(default)]
    pub discount_amount: i64,
    #[serde(default)]
    pub green_deposit: i64,
    /// `PAYMENT`, `CANCEL` or `ISSUED_SID`; read with [`ActionType::parse`].
    pub payment_action_type: String,
    #[serde(default)]
    pub payload: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderResponse {
    pub tid: String,
    pub cid: String,
    /// Verbatim, so an unknown value reaches the logs; read with [`Status::parse`].
    pub status: String,
    pub partner_order_id: String,
    pub partner_user_id: String,
    #[serde(default)]
    pub payment_method_type: Option<String>,
    pub amount: Amount,
    #[serde(default)]
    pub canceled_amount: Option<Amount>,
    #[serde(default)]
    pub cancel_available_amount: Option<Amount>,
    #[serde(default)]
    pub item_name: Option<String>,
    #[serde(default)]
    pub quantity: Option<u32>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub approved_at: Option<String>,
    #[serde(default)]
    pub canceled_at: Option<String>,
    #[serde(default)]
    pub payment_action_details: Vec<PaymentAction>,
}

/// `POST /online/v1/payment/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub cid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid_secret: Option<String>,
    pub tid: String,
    pub cancel_amount: i64,
    pub cancel_tax_free_amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_vat_amount: Option<i64>,
    /// Optimistic check: Kakao refuses the cancel unless this equals the payment's
    /// current cancellable amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_available_amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelResponse {
    /// This cancellation's request id: Sesame's `wallet_refund_ref`.
    pub aid: String,
    pub tid: String,
    pub cid: String,
    pub status: String,
    pub partner_order_id: String,
    pub partner_user_id: String,
    #[serde(default)]
    pub payment_method_type: Option<String>,
    pub amount: Amount,
    /// What this call cancelled.
    pub approved_cancel_amount: Amount,
    /// Cumulative.
    pub canceled_amount: Amount,
    pub cancel_available_amount: Amount,
    #[serde(default)]
    pub item_name: Option<String>,
    #[serde(default)]
    pub quantity: Option<u32>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub approved_at: Option<String>,
    #[serde(default)]
    pub canceled_at: Option<String>,
    #[serde(default)]
    pub payload: Option<String>,
}

/// Kakao's error body. The current API writes `error_code` / `error_message`; the
/// legacy `kapi.kakao.com` API wrote `code` / `msg`, accepted as aliases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(alias = "code")]
    pub error_code: i64,
    #[serde(alias = "msg")]
    pub error_message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<ErrorExtras>,
}

/// Card-issuer detail on approval failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorExtras {
    #[serde(default)]
    pub method_result_code: Option<String>,
    #[serde(default)]
    pub method_result_message: Option<String>,
}

// ----------------------------------------------------------------------------
// Status
// ----------------------------------------------------------------------------

/// Kakao payment status (wallets.md §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Ready,
    SendTms,
    OpenPayment,
    SelectMethod,
    ArsWaiting,
    AuthPassword,
    IssuedSid,
    SuccessPayment,
    PartCancelPayment,
    CancelPayment,
    FailAuthPassword,
    QuitPayment,
    FailPayment,
    #[serde(other)]
    Unknown,
}

impl Status {
    /// Reads a status string; anything unrecognised is [`Status::Unknown`].
    pub fn parse(text: &str) -> Status {
        Status::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(text))
            .unwrap_or(Status::Unknown)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "READY",
            Status::SendTms => "SEND_TMS",
            Status::OpenPayment => "OPEN_PAYMENT",
            Status::SelectMethod => "SELECT_METHOD",
            Status::ArsWaiting => "ARS_WAITING",
            Status::AuthPassword => "AUTH_PASSWORD",
            Status::IssuedSid => "ISSUED_SID",
            Status::SuccessPayment => "SUCCESS_PAYMENT",
            Status::PartCancelPayment => "PART_CANCEL_PAYMENT",
            Status::CancelPayment => "CANCEL_PAYMENT",
            Status::FailAuthPassword => "FAIL_AUTH_PASSWORD",
            Status::QuitPayment => "QUIT_PAYMENT",
            Status::FailPayment => "FAIL_PAYMENT",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// Created, the shopper has not finished (or we have not approved) yet.
    pub fn is_awaiting_approval(self) -> bool {
        matches!(
            self,
            Status::Ready
                | Status::SendTms
                | Status::OpenPayment
                | Status::SelectMethod
                | Status::ArsWaiting
                | Status::AuthPassword
        )
    }

    /// Ended without any money captured (cancel before approval is checked by the
    /// caller: `CANCEL_PAYMENT` means either).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Status::FailAuthPassword | Status::QuitPayment | Status::FailPayment
        )
    }
}

/// `payment_action_type` of [`PaymentAction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActionType {
    Payment,
    Cancel,
    IssuedSid,
    #[serde(other)]
    Unknown,
}

impl ActionType {
    pub fn parse(text: &str) -> ActionType {
        ActionType::deserialize(
            serde::de::value::StrDeserializer::<serde::de::value::Error>::new(text),
        )
        .unwrap_or(ActionType::Unknown)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::Payment => "PAYMENT",
            ActionType::Cancel => "CANCEL",
            ActionType::IssuedSid => "ISSUED_SID",
            ActionType::Unknown => "UNKNOWN",
        }
    }
}

impl OrderResponse {
    /// What can still be cancelled: `cancel_available_amount`, or, when Kakao
    /// leaves it out, the captured total less what was cancelled.
    pub fn cancellable(&self) -> i64 {
        match &self.cancel_available_amount {
            Some(available) => available.total,
            None => {
                self.amount.total
                    - self
                        .canceled_amount
                        .as_ref()
                        .map_or(0, |cancelled| cancelled.total)
            }
        }
    }

    /// Whether the payment was ever approved (money captured). Kakao reports
    /// `CANCEL_PAYMENT` both for a payment cancelled before approval and for one
    /// refunded in full; `approved_at` and a `PAYMENT` action exist only after an
    /// approval, so either one present means "was paid".
    pub fn was_approved(&self) -> bool {
        self.approved_at.is_some()
            || self
                .payment_action_details
                .iter()
                .any(|a| ActionType::parse(&a.payment_action_type) == ActionType::Payment)
    }
}

/// The neutral status of an `order` response (wallets.md §4.5):
/// waiting statuses are `Pending`, `SUCCESS_PAYMENT` is `Succeeded`,
/// `PART_CANCEL_PAYMENT` and an approved `CANCEL_PAYMENT` are `Refunded` with the
/// cumulative cancelled amount, `CANCEL_PAYMENT` never approved is `Closed`,
/// failures are `Failed` with the status as code, anything else is `Unknown`.
pub fn order_status(order: &OrderResponse) -> Result<WalletStatus, AdapterError> {
    let status = Status::parse(&order.status);
    Ok(match status {
        s if s.is_awaiting_approval() => WalletStatus::Pending,
        Status::SuccessPayment => WalletStatus::Succeeded {
            wallet_ref: order.tid.clone(),
            amount: krw_money(order.amount.total)?,
            paid_at: order.approved_at.as_deref().map(parse_time).transpose()?,
            brand: None,
        },
        Status::PartCancelPayment => refunded(order)?,
        Status::CancelPayment if order.was_approved() => refunded(order)?,
        Status::CancelPayment => WalletStatus::Closed,
        s if s.is_failure() => WalletStatus::Failed {
            code: s.as_str().to_owned(),
        },
        _ => WalletStatus::Unknown(order.status.chars().take(64).collect()),
    })
}

fn refunded(order: &OrderResponse) -> Result<WalletStatus, AdapterError> {
    Ok(WalletStatus::Refunded {
        wallet_ref: order.tid.clone(),
        amount: krw_money(order.amount.total)?,
        refunded: order
            .canceled_amount
            .map(|a| krw_money(a.total))
            .transpose()?,
    })
}

// ----------------------------------------------------------------------------
// Amounts and time
// ----------------------------------------------------------------------------

/// Our amount as Kakao's integer KRW. Kakao's online API is KRW only.
pub fn krw_amount(money: &Money) -> Result<i64, AdapterError> {
    if money.currency() != Currency::Krw {
        return Err(AdapterError::Unsupported(
            "kakao pay online accepts KRW only",
        ));
    }
    // KRW has no minor unit, so minor units are won.
    Ok(money.minor())
}

/// Kakao's integer KRW as our amount; negative is malformed (zero is allowed:
/// nothing cancelled yet).
pub fn krw_money(won: i64) -> Result<Money, AdapterError> {
    Money::from_minor(won, Currency::Krw)
        .map_err(|_| AdapterError::Malformed(format!("negative KRW amount {won}")))
}

/// Korea Standard Time, the zone of Kakao's offset-less timestamps.
pub fn kst() -> FixedOffset {
    // 9 hours is within ±24 h, so this cannot fail; UTC is the unreachable fallback.
    FixedOffset::east_opt(9 * 3600).unwrap_or(Utc.fix())
}

const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// Kakao writes `2024-05-01T14:03:07` in KST, without an offset. An RFC 3339 value
/// with an offset is accepted too, in case the current API adds one.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, AdapterError> {
    if let Ok(with_offset) = DateTime::parse_from_rfc3339(text) {
        return Ok(with_offset.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(text, TIME_FORMAT).map_err(|_| {
        AdapterError::Malformed(format!(
            "timestamp {:?} is not YYYY-MM-DDTHH:MM:SS",
            text.chars().take(40).collect::<String>()
        ))
    })?;
    kst()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| AdapterError::Malformed("timestamp does not exist in KST".into()))
}

/// A timestamp in Kakao's format (KST, no offset).
pub fn format_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&kst()).format(TIME_FORMAT).to_string()
}

// ----------------------------------------------------------------------------
// Return URLs
// ----------------------------------------------------------------------------

/// `pg_token` as Kakao issues it: 20 alphanumeric characters in practice; we accept
/// 8 to 64 ASCII letters and digits, nothing else, so the token can be passed on
/// without escaping and garbage is refused before reaching Kakao.
pub fn is_valid_pg_token(token: &str) -> bool {
    (8..=64).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Appends `key=value` to `url`'s query, with `?` when it has none yet and `&`
/// otherwise, before any `#fragment`. The value is percent-encoded.
pub fn with_query(url: &str, key: &str, value: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let separator = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let mut out = format!(
        "{base}{separator}{}={}",
        percent_encode(key),
        percent_encode(value)
    );
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
/// `None` for a broken `%` escape or a result that is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(status: &str, approved_at: Option<&str>, canceled: i64) -> OrderResponse {
        OrderResponse {
            tid: "T1714536000000000001".into(),
            cid: TEST_CID.into(),
            status: status.into(),
            partner_order_id: "ord_1".into(),
            partner_user_id: "ord_1".into(),
            payment_method_type: Some("MONEY".into()),
            amount: Amount {
                total: 12000,
                ..Amount::default()
            },
            canceled_amount: Some(Amount {
                total: canceled,
                ..Amount::default()
            }),
            cancel_available_amount: Some(Amount {
                total: 12000 - canceled,
                ..Amount::default()
            }),
            item_name: Some("Coffee".into()),
            quantity: Some(1),
            created_at: Some("2024-05-01T10:00:00".into()),
            approved_at: approved_at.map(str::to_owned),
            canceled_at: None,
            payment_action_details: Vec::new(),
        }
    }

    fn krw(won: i64) -> Money {
        Money::from_minor(won, Currency::Krw).unwrap()
    }

    #[test]
    fn authorization_header_is_the_secret_key_scheme() {
        assert_eq!(
            authorization("DEV0123456789ABCDEF"),
            "SECRET_KEY DEV0123456789ABCDEF"
        );
        assert_eq!(
            secret_from_authorization("SECRET_KEY DEV0123456789ABCDEF"),
            Some("DEV0123456789ABCDEF")
        );
        assert_eq!(secret_from_authorization("secret_key DEVX"), Some("DEVX"));
        assert_eq!(secret_from_authorization("KakaoAK DEVX"), None);
        assert_eq!(secret_from_authorization("SECRET_KEY "), None);
        assert_eq!(secret_from_authorization("SECRET_KEY a b"), None);
        assert_eq!(secret_from_authorization("SECRET_KEYDEVX"), None);
    }

    #[test]
    fn ready_request_serialises_to_kakaos_field_names() {
        let request = ReadyRequest {
            cid: TEST_CID.into(),
            cid_secret: None,
            partner_order_id: "ord_1".into(),
            partner_user_id: "ord_1".into(),
            item_name: "Coffee".into(),
            item_code: None,
            quantity: 1,
            total_amount: 12000,
            tax_free_amount: 0,
            vat_amount: None,
            approval_url: "https://shop.example/r?result=approved".into(),
            cancel_url: "https://shop.example/r?result=cancelled".into(),
            fail_url: "https://shop.example/r?result=failed".into(),
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"cid":"TC0ONETIME","partner_order_id":"ord_1","partner_user_id":"ord_1","item_name":"Coffee","quantity":1,"total_amount":12000,"tax_free_amount":0,"approval_url":"https://shop.example/r?result=approved","cancel_url":"https://shop.example/r?result=cancelled","fail_url":"https://shop.example/r?result=failed"}"#
        );
    }

    #[test]
    fn requests_with_unknown_fields_are_refused() {
        let with_typo = r#"{"cid":"TC0ONETIME","tid":"T1","cancel_amount":1,"cancel_tax_free_amount":0,"cancel_amont":1}"#;
        assert!(serde_json::from_str::<CancelRequest>(with_typo).is_err());
    }

    #[test]
    fn statuses_map_to_neutral_statuses() {
        for waiting in [
            "READY",
            "SEND_TMS",
            "OPEN_PAYMENT",
            "SELECT_METHOD",
            "ARS_WAITING",
            "AUTH_PASSWORD",
        ] {
            assert_eq!(
                order_status(&order(waiting, None, 0)).unwrap(),
                WalletStatus::Pending,
                "{waiting}"
            );
        }
        assert_eq!(
            order_status(&order("SUCCESS_PAYMENT", Some("2024-05-01T10:00:05"), 0)).unwrap(),
            WalletStatus::Succeeded {
                wallet_ref: "T1714536000000000001".into(),
                amount: krw(12000),
                paid_at: Some(
                    DateTime::parse_from_rfc3339("2024-05-01T01:00:05Z")
                        .unwrap()
                        .to_utc()
                ),
                brand: None,
            }
        );
        assert_eq!(
            order_status(&order(
                "PART_CANCEL_PAYMENT",
                Some("2024-05-01T10:00:05"),
                3000
            ))
            .unwrap(),
            WalletStatus::Refunded {
                wallet_ref: "T1714536000000000001".into(),
                amount: krw(12000),
                refunded: Some(krw(3000)),
            }
        );
        for failure in ["FAIL_AUTH_PASSWORD", "QUIT_PAYMENT", "FAIL_PAYMENT"] {
            assert_eq!(
                order_status(&order(failure, None, 0)).unwrap(),
                WalletStatus::Failed {
                    code: failure.into()
                }
            );
        }
    }

    #[test]
    fn cancel_payment_is_refunded_only_when_it_was_approved() {
        assert_eq!(
            order_status(&order("CANCEL_PAYMENT", Some("2024-05-01T10:00:05"), 12000)).unwrap(),
            WalletStatus::Refunded {
                wallet_ref: "T1714536000000000001".into(),
                amount: krw(12000),
                refunded: Some(krw(12000)),
            }
        );
        assert_eq!(
            order_status(&order("CANCEL_PAYMENT", None, 0)).unwrap(),
            WalletStatus::Closed
        );
        let mut approved_by_action = order("CANCEL_PAYMENT", None, 12000);
        approved_by_action
            .payment_action_details
            .push(PaymentAction {
                aid: "A1".into(),
                approved_at: None,
                amount: 12000,
                point_amount: 0,
                discount_amount: 0,
                green_deposit: 0,
                payment_action_type: "PAYMENT".into(),
                payload: None,
            });
        assert!(matches!(
            order_status(&approved_by_action).unwrap(),
            WalletStatus::Refunded { .. }
        ));
    }

    #[test]
    fn unknown_statuses_are_unknown_never_paid() {
        for odd in [
            "ISSUED_SID",
            "SUCCESS",
            "success_payment",
            "",
            "NEW_STATUS_2030",
        ] {
            let status = order_status(&order(odd, Some("2024-05-01T10:00:05"), 0)).unwrap();
            assert_eq!(status, WalletStatus::Unknown(odd.into()), "{odd}");
            assert!(!status.is_paid());
        }
        assert_eq!(Status::parse("SOMETHING"), Status::Unknown);
        assert_eq!(Status::parse("CANCEL_PAYMENT"), Status::CancelPayment);
        assert_eq!(ActionType::parse("REFUND"), ActionType::Unknown);
    }

    #[test]
    fn amounts_are_integer_krw_both_ways() {
        assert_eq!(
            krw_amount(&Money::parse("5000", Currency::Krw).unwrap()),
            Ok(5000)
        );
        assert_eq!(
            krw_money(5000).unwrap(),
            Money::parse("5000", Currency::Krw).unwrap()
        );
        assert_eq!(krw_money(0).unwrap().minor(), 0);
        assert!(matches!(krw_money(-1), Err(AdapterError::Malformed(_))));
        for other in [
            Money::parse("500", Currency::Jpy).unwrap(),
            Money::parse("12.30", Currency::Mop).unwrap(),
            Money::parse("8.80", Currency::Hkd).unwrap(),
        ] {
            assert!(matches!(
                krw_amount(&other),
                Err(AdapterError::Unsupported(_))
            ));
        }
    }

    #[test]
    fn unparseable_amounts_in_responses_are_refused() {
        let base = serde_json::to_value(order("SUCCESS_PAYMENT", None, 0)).unwrap();
        for bad in [
            serde_json::json!(1200.5),
            serde_json::json!("12000"),
            serde_json::json!(null),
        ] {
            let mut value = base.clone();
            value["amount"]["total"] = bad.clone();
            assert!(
                serde_json::from_value::<OrderResponse>(value).is_err(),
                "{bad}"
            );
        }
        let mut negative = order("SUCCESS_PAYMENT", None, 0);
        negative.amount.total = -5;
        assert!(matches!(
            order_status(&negative),
            Err(AdapterError::Malformed(_))
        ));
    }

    #[test]
    fn kakao_times_are_kst_without_offset() {
        let at = parse_time("2024-05-01T09:30:00").unwrap();
        assert_eq!(at.to_rfc3339(), "2024-05-01T00:30:00+00:00");
        assert_eq!(format_time(at), "2024-05-01T09:30:00");
        assert_eq!(parse_time("2024-05-01T09:30:00+09:00").unwrap(), at);
        assert!(matches!(
            parse_time("01/05/2024"),
            Err(AdapterError::Malformed(_))
        ));
    }

    #[test]
    fn query_parameters_are_appended_with_the_right_separator() {
        assert_eq!(
            with_query("https://shop.example/o/1/return", "result", "approved"),
            "https://shop.example/o/1/return?result=approved"
        );
        assert_eq!(
            with_query(
                "https://shop.example/r?result=approved",
                "pg_token",
                "abc123def456"
            ),
            "https://shop.example/r?result=approved&pg_token=abc123def456"
        );
        assert_eq!(
            with_query("https://shop.example/r?", "a", "b c&d"),
            "https://shop.example/r?a=b%20c%26d"
        );
        assert_eq!(
            with_query("https://shop.example/r?x=1#top", "pg_token", "abc"),
            "https://shop.example/r?x=1&pg_token=abc#top"
        );
    }

    #[test]
    fn percent_decoding_round_trips_and_refuses_broken_escapes() {
        assert_eq!(percent_decode("b%20c%26d").as_deref(), Some("b c&d"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%E2%82%A9").as_deref(), Some("₩"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%FF"), None);
        let text = "result=approved&x=₩ 1";
        assert_eq!(percent_decode(&percent_encode(text)).as_deref(), Some(text));
    }

    #[test]
    fn pg_token_shape_is_checked() {
        assert!(is_valid_pg_token("a1b2c3d4e5f6a7b8c9d0"));
        assert!(!is_valid_pg_token("short"));
        assert!(!is_valid_pg_token("a1b2c3d4e5f6a7b8c9d0&x=1"));
        assert!(!is_valid_pg_token("a1b2c3d4-e5f6a7b8c9d0"));
        assert!(!is_valid_pg_token(&"a".repeat(65)));
    }

    #[test]
    fn error_bodies_of_both_api_generations_are_read() {
        let current: ErrorBody =
            serde_json::from_str(r#"{"error_code":-401,"error_message":"invalid secret key"}"#)
                .unwrap();
        assert_eq!(current.error_code, codes::UNAUTHORIZED);
        let legacy: ErrorBody = serde_json::from_str(
            r#"{"code":-780,"msg":"approval failure!","extras":{"method_result_code":"USER_LOCKED","method_result_message":"locked"}}"#,
        )
        .unwrap();
        assert_eq!(legacy.error_code, codes::APPROVAL_FAILED);
        assert_eq!(
            legacy.extras.unwrap().method_result_code.as_deref(),
            Some("USER_LOCKED")
        );
    }
}
