//! The contract between the gateway and every wallet adapter.
//!
//! Owns: the one [`WalletAdapter`] trait and the neutral types it speaks: what to
//! create or charge, what a wallet says about a payment ([`WalletStatus`],
//! [`WalletEvent`]), the raw callback as received ([`RawCallback`]) and the exact
//! answer a wallet expects ([`AckResponse`]), plus the one [`AdapterError`].
//! Must never: carry a wallet's wire format (each adapter keeps its own `wire`
//! module), know about HTTP frameworks or the store, or let an unrecognised wallet
//! status become a success.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::money::{Currency, Money};

/// A wallet protocol Sesame speaks. A *brand* (what the shopper holds) maps to one
/// of these in `config/wallets.toml`; several brands may share one adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AdapterId {
    /// Alipay Open API (mainland, RSA2, form notify).
    Alipay,
    /// Alipay+ ACQP API (MPay, AlipayHK, Kakao Pay and other MPPs).
    AlipayPlus,
    /// WeChat Pay API v3 (v2 micropay for customer codes).
    WechatPay,
    /// Kakao Pay online API (no webhook: return redirect, approve, poll).
    KakaoPay,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown adapter {0:?} (expected one of alipay, alipay_plus, wechat_pay, kakao_pay)")]
pub struct UnknownAdapter(pub String);

impl AdapterId {
    pub const ALL: [AdapterId; 4] = [
        AdapterId::Alipay,
        AdapterId::AlipayPlus,
        AdapterId::WechatPay,
        AdapterId::KakaoPay,
    ];

    /// The stable name used in configuration, URLs (`/webhooks/{adapter}`) and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterId::Alipay => "alipay",
            AdapterId::AlipayPlus => "alipay_plus",
            AdapterId::WechatPay => "wechat_pay",
            AdapterId::KakaoPay => "kakao_pay",
        }
    }

    /// Exact, case-sensitive parse of [`AdapterId::as_str`].
    pub fn parse(name: &str) -> Result<Self, UnknownAdapter> {
        AdapterId::ALL
            .into_iter()
            .find(|id| id.as_str() == name)
            .ok_or_else(|| UnknownAdapter(name.chars().take(32).collect()))
    }
}

impl fmt::Display for AdapterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AdapterId {
    type Err = UnknownAdapter;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AdapterId::parse(s)
    }
}

impl Serialize for AdapterId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AdapterId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AdapterId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How a payment is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayMode {
    /// Merchant shows a one-order QR (Alipay `precreate`, WeChat Native `code_url`,
    /// Alipay+ Order Code).
    DynamicQr,
    /// Shopper scanned the static plate; the wallet's in-app browser is redirected to
    /// a wallet cashier (Alipay+ Entry Code `paymentUrl`, Kakao `next_redirect_*_url`,
    /// Alipay `qr.alipay.com` link).
    StaticEntry,
    /// Shopper scanned the static plate; the page invokes the wallet's JS bridge with
    /// a payer id obtained by OAuth (WeChat `openid`, Alipay `buyer_id`).
    Jsapi,
    /// The POS scans the shopper's payment code: [`WalletAdapter::charge_code`],
    /// never `create_order`.
    CustomerCode,
}

/// Which refunds a wallet accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundSupport {
    None,
    FullOnly,
    /// Several partial refunds up to the captured amount.
    Partial,
}

/// How the final result of a payment reaches Sesame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultDelivery {
    /// Signed server-to-server callback; `query` is the reconciliation fallback.
    Webhook,
    /// No callback (Kakao Pay): the gateway must poll `query` until final.
    Polling,
}

/// What an adapter can do, as configured. The gateway checks it before calling, so
/// an unsupported request is refused with a clear error instead of reaching a wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub modes: Vec<PayMode>,
    pub currencies: Vec<Currency>,
    pub refunds: RefundSupport,
    pub results: ResultDelivery,
}

impl Capabilities {
    pub fn supports_mode(&self, mode: PayMode) -> bool {
        self.modes.contains(&mode)
    }

    pub fn supports_currency(&self, currency: Currency) -> bool {
        self.currencies.contains(&currency)
    }
}

/// Who is selling, as far as a wallet needs to know (shown to the shopper and
/// required by Alipay+ for in-store scenarios).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MerchantInfo {
    /// Our merchant id (Alipay+ `referenceMerchantId`).
    pub merchant_id: String,
    pub name: String,
    /// ISO 18245 merchant category code, 4 digits.
    pub mcc: String,
    pub city: String,
    /// ISO 3166-1 alpha-2, e.g. `MO`.
    pub country: String,
    /// The merchant's id at this wallet when the wallet assigns one (WeChat `sub_mchid`).
    pub sub_merchant_id: Option<String>,
    pub store_id: Option<String>,
    pub store_name: Option<String>,
    pub terminal_id: Option<String>,
}

/// Start a payment other than by customer code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOrder {
    /// Our order id, sent as the wallet's merchant order number (`out_trade_no`,
    /// `paymentRequestId`, `partner_order_id`). The gateway issues ids that fit every
    /// wallet (ASCII letters, digits, `_`, at most 32 characters).
    pub order_id: String,
    pub amount: Money,
    /// Shown in the shopper's wallet bill.
    pub description: String,
    /// The last moment the shopper may pay.
    pub expires_at: DateTime<Utc>,
    /// Where the wallet sends its callback (`/webhooks/{adapter}` on our public URL).
    pub notify_url: String,
    /// Where the shopper's browser returns after paying (redirect modes).
    pub return_url: Option<String>,
    pub mode: PayMode,
    /// The shopper's id at the wallet for [`PayMode::Jsapi`] (`openid`, `buyer_id`).
    pub payer_id: Option<String>,
    /// The shopper's in-app browser User-Agent, verbatim (Alipay+ Entry Code requires it).
    pub user_agent: Option<String>,
    /// Brand parameters from the registry (e.g. Alipay+ `psp = "MPAY"`).
    pub brand_params: BTreeMap<String, String>,
    pub merchant: MerchantInfo,
}

/// What the shopper's device must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayAction {
    /// Send the browser to this wallet cashier URL.
    Redirect { url: String },
    /// Show this string as a QR code (WeChat `weixin://...`, `https://qr.alipay.com/...`).
    QrString { data: String },
    /// Invoke the wallet's JS bridge with these parameters (already signed).
    Jsapi { params: BTreeMap<String, String> },
    /// Nothing to show (the wallet pushes the request to the shopper's phone).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCreated {
    /// The wallet's id for the payment, when it issues one at creation (Kakao `tid`).
    pub wallet_ref: Option<String>,
    pub action: PayAction,
}

/// Charge a payment code the POS scanned from the shopper's phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeCode {
    /// Our order id (see [`CreateOrder::order_id`]).
    pub order_id: String,
    pub amount: Money,
    /// The scanned code, digits only, as detected by the brand registry.
    pub auth_code: String,
    pub description: String,
    pub notify_url: Option<String>,
    pub brand_params: BTreeMap<String, String>,
    pub merchant: MerchantInfo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Succeeded {
        wallet_ref: String,
        amount: Money,
        paid_at: Option<DateTime<Utc>>,
        /// The paying wallet as the rail reports it (Alipay+ `pspId`).
        brand: Option<String>,
    },
    /// The shopper must confirm on the phone (PIN, large amount): poll `query`.
    Pending,
    /// Final refusal; the shopper may try another code.
    Failed { code: String, message: String },
}

/// Identifies a payment at the wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRef {
    /// Our order id (the wallet's merchant order number).
    pub order_id: String,
    /// The wallet's id, when known (required by Kakao Pay, preferred by Alipay+).
    pub wallet_ref: Option<String>,
}

/// What a wallet says about a payment when asked.
///
/// Invariant: every wallet's wire status enum ends in an `Unknown` catch-all
/// (`#[serde(other)]`) that maps to [`WalletStatus::Unknown`], and `Unknown` never
/// maps to success — not here, not in the gateway. A status we cannot read is a
/// reason to ask again or to ask a person, never a reason to release goods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalletStatus {
    /// Created, not paid yet (or the shopper is confirming).
    Pending,
    Succeeded {
        wallet_ref: String,
        /// The amount the wallet says it captured; the gateway compares it with ours.
        amount: Money,
        paid_at: Option<DateTime<Utc>>,
        /// The paying wallet as the rail reports it (Alipay+ `pspId`).
        brand: Option<String>,
    },
    /// Final failure (declined, payment error).
    Failed { code: String },
    /// Closed unpaid (expired, cancelled, revoked).
    Closed,
    /// Was paid, then (partly) refunded.
    Refunded {
        wallet_ref: String,
        /// Captured amount.
        amount: Money,
        /// Cumulative refunded amount, when the wallet reports it.
        refunded: Option<Money>,
    },
    /// A status this code does not know, verbatim (truncated) for the logs.
    Unknown(String),
}

impl WalletStatus {
    /// True only for [`WalletStatus::Succeeded`]; `Unknown` is never paid.
    pub fn is_paid(&self) -> bool {
        matches!(self, WalletStatus::Succeeded { .. })
    }

    /// True when no further change is expected without our action.
    pub fn is_final(&self) -> bool {
        !matches!(self, WalletStatus::Pending | WalletStatus::Unknown(_))
    }
}

/// A verified callback, in neutral terms. `event_id` is the wallet's notification
/// id (or a stable digest of the callback when the wallet has none), used with the
/// adapter and order id to deduplicate at-least-once deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalletEvent {
    PaymentSucceeded {
        order_id: String,
        wallet_ref: String,
        /// What the wallet says was paid; the gateway checks it against the order.
        amount: Money,
        event_id: String,
        paid_at: Option<DateTime<Utc>>,
        /// The paying wallet as the rail reports it (Alipay+ `pspId`), mapped to a
        /// brand with `BrandRegistry::brand_for_psp_id`.
        brand: Option<String>,
    },
    PaymentFailed {
        order_id: String,
        event_id: String,
        code: String,
        message: String,
    },
    RefundSucceeded {
        order_id: String,
        refund_id: String,
        wallet_refund_ref: Option<String>,
        /// THIS refund's amount, where the wallet reports it. Exception, documented
        /// in the adapter: Alipay's notification carries only the cumulative
        /// `refund_fee`, so there `amount` equals `refunded_total`.
        amount: Money,
        /// The order's cumulative refunded amount after this refund, when the wallet
        /// reports it (Alipay `refund_fee`); `None` when it does not (WeChat Pay).
        /// When present it is the figure to check against our books.
        refunded_total: Option<Money>,
        event_id: String,
    },
    RefundFailed {
        order_id: String,
        refund_id: String,
        event_id: String,
        code: String,
        message: String,
    },
    /// Authentic but changes nothing (e.g. Alipay `WAIT_BUYER_PAY`); acknowledged.
    Informational {
        order_id: Option<String>,
        event_id: String,
        summary: String,
    },
}

impl WalletEvent {
    pub fn event_id(&self) -> &str {
        match self {
            WalletEvent::PaymentSucceeded { event_id, .. }
            | WalletEvent::PaymentFailed { event_id, .. }
            | WalletEvent::RefundSucceeded { event_id, .. }
            | WalletEvent::RefundFailed { event_id, .. }
            | WalletEvent::Informational { event_id, .. } => event_id,
        }
    }

    pub fn order_id(&self) -> Option<&str> {
        match self {
            WalletEvent::PaymentSucceeded { order_id, .. }
            | WalletEvent::PaymentFailed { order_id, .. }
            | WalletEvent::RefundSucceeded { order_id, .. }
            | WalletEvent::RefundFailed { order_id, .. } => Some(order_id),
            WalletEvent::Informational { order_id, .. } => order_id.as_deref(),
        }
    }
}

/// Refund part or all of a captured payment. Idempotent by `refund_id`, which is
/// sent as the wallet's refund request number (`out_request_no`, `out_refund_no`,
/// `refundRequestId`) and reused unchanged on every retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub order_id: String,
    /// The wallet's payment id, when known (Alipay+ `paymentId`, Kakao `tid`).
    pub wallet_ref: Option<String>,
    pub refund_id: String,
    /// This refund.
    pub amount: Money,
    /// The captured amount of the order (WeChat requires it).
    pub total: Money,
    pub reason: Option<String>,
    pub notify_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// Money moved (or had already moved for this `refund_id`).
    Succeeded {
        wallet_refund_ref: Option<String>,
    },
    /// Accepted, result later by callback or query.
    Pending,
    Failed {
        code: String,
        message: String,
    },
}

/// A wallet's HTTP request to us, exactly as received, before any parsing.
#[derive(Clone, PartialEq, Eq)]
pub struct RawCallback {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    received_at: DateTime<Utc>,
}

impl fmt::Debug for RawCallback {
    /// Bodies can hold payer data; logs get the shape, not the content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawCallback")
            .field("method", &self.method)
            .field("path", &self.path)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .field("received_at", &self.received_at)
            .finish()
    }
}

impl RawCallback {
    /// `method` is upper-cased and header names lower-cased here, once, so adapters
    /// look headers up by their lower-case name. Values and body are kept verbatim.
    pub fn new<N, V>(
        method: &str,
        path_and_query: &str,
        headers: impl IntoIterator<Item = (N, V)>,
        body: Vec<u8>,
        received_at: DateTime<Utc>,
    ) -> Self
    where
        N: AsRef<str>,
        V: Into<String>,
    {
        RawCallback {
            method: method.to_ascii_uppercase(),
            path: path_and_query.to_owned(),
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.as_ref().to_ascii_lowercase(), v.into()))
                .collect(),
            body,
            received_at,
        }
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    /// Path and query string as received (signing strings include both).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn received_at(&self) -> DateTime<Utc> {
        self.received_at
    }

    /// The first value of `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of a header that must appear exactly once. A repeated signature or
    /// timestamp header is refused: which copy was signed would be a guess.
    pub fn required_header(&self, name: &str) -> Result<&str, AdapterError> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        match (values.next(), values.next()) {
            (Some((_, v)), None) => Ok(v),
            (None, _) => Err(AdapterError::Malformed(format!("missing header {name}"))),
            (Some(_), Some(_)) => Err(AdapterError::Malformed(format!(
                "header {name} appears more than once"
            ))),
        }
    }

    /// The body as UTF-8 (every wallet callback is text).
    pub fn body_str(&self) -> Result<&str, AdapterError> {
        std::str::from_utf8(&self.body)
            .map_err(|_| AdapterError::Malformed("callback body is not UTF-8".into()))
    }
}

/// How the gateway fared with a callback, to be translated into the wallet's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Verified and durably committed (or a duplicate of a committed one): stop sending.
    Processed,
    /// Authentic but we could not commit it now: send it again later.
    RetryLater,
    /// Not authentic or unreadable (bad signature, stale timestamp, malformed).
    Rejected,
}

/// The exact HTTP answer a wallet expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckResponse {
    pub status: u16,
    /// `None` for an empty body.
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

impl AckResponse {
    /// `text/plain` body (Alipay's 7-byte `success`).
    pub fn text(status: u16, body: &str) -> Self {
        AckResponse {
            status,
            content_type: Some("text/plain; charset=utf-8"),
            body: body.as_bytes().to_vec(),
        }
    }

    /// JSON body (Alipay+ `result`, WeChat failure `{"code":"FAIL",...}`).
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        AckResponse {
            status,
            content_type: Some("application/json"),
            body: body.to_string().into_bytes(),
        }
    }

    /// No body at all (WeChat v3 success is 204 or 200 with nothing).
    pub fn empty(status: u16) -> Self {
        AckResponse {
            status,
            content_type: None,
            body: Vec::new(),
        }
    }
}

/// Everything that can go wrong talking to a wallet. Messages never contain keys,
/// signatures or full callback bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// The wallet could not be reached or answered 5xx / garbage at the HTTP level.
    /// `retryable` is false when the request may have been applied (ask `query`).
    #[error("wallet unreachable: {message}")]
    Transport { retryable: bool, message: String },
    /// The wallet refused, with its own code (`ACQ.TRADE_HAS_SUCCESS`, `PARAM_ILLEGAL`...).
    #[error("wallet refused: {code}: {message}")]
    Rejected { code: String, message: String },
    /// A callback or response whose signature (or timestamp window) does not check out.
    #[error("signature verification failed")]
    BadSignature,
    #[error("malformed wallet message: {0}")]
    Malformed(String),
    #[error("amount mismatch: expected {expected}, wallet says {got}")]
    AmountMismatch { expected: Money, got: Money },
    #[error("not supported by this adapter: {0}")]
    Unsupported(&'static str),
}

impl AdapterError {
    /// Whether repeating the same call (same idempotency keys) is safe and useful.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AdapterError::Transport {
                retryable: true,
                ..
            }
        )
    }
}

/// One wallet protocol. Implementations are cheap to share (`Arc<dyn WalletAdapter>`),
/// hold their keys and HTTP client, and never touch the store.
///
/// Every call that reaches a wallet is idempotent by our ids (`order_id`,
/// `refund_id`), so the gateway may repeat it after a timeout.
#[async_trait::async_trait]
pub trait WalletAdapter: Send + Sync {
    fn id(&self) -> AdapterId;

    fn capabilities(&self) -> Capabilities;

    /// Creates the payment at the wallet for every mode except
    /// [`PayMode::CustomerCode`] (which is [`WalletAdapter::charge_code`]).
    async fn create_order(&self, req: &CreateOrder) -> Result<OrderCreated, AdapterError>;

    /// Charges a scanned customer code. `Pending` means the shopper is confirming.
    async fn charge_code(&self, req: &ChargeCode) -> Result<ChargeOutcome, AdapterError>;

    async fn query(&self, order: &OrderRef) -> Result<WalletStatus, AdapterError>;

    /// Closes an unpaid payment so it can no longer be paid.
    async fn close(&self, order: &OrderRef) -> Result<(), AdapterError>;

    async fn refund(&self, req: &RefundRequest) -> Result<RefundOutcome, AdapterError>;

    /// Verifies the signature over the EXACT raw bytes (and the timestamp window
    /// where the protocol has one) before parsing anything, then translates.
    fn verify_callback(&self, cb: &RawCallback) -> Result<WalletEvent, AdapterError>;

    /// The wallet's exact answer for `ack`.
    fn ack(&self, ack: Ack) -> AckResponse;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn adapter_ids_round_trip_through_their_names() {
        for id in AdapterId::ALL {
            assert_eq!(AdapterId::parse(id.as_str()), Ok(id));
            assert_eq!(id.to_string(), id.as_str());
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(serde_json::from_str::<AdapterId>(&json).unwrap(), id);
        }
        assert!(AdapterId::parse("AlipayPlus").is_err());
        assert!(AdapterId::parse("alipay_plus ").is_err());
        assert!(AdapterId::parse("").is_err());
    }

    #[test]
    fn unknown_status_is_never_paid_nor_final() {
        let unknown = WalletStatus::Unknown("TRADE_SOMETHING_NEW".into());
        assert!(!unknown.is_paid());
        assert!(!unknown.is_final());
        assert!(!WalletStatus::Pending.is_final());
        assert!(WalletStatus::Closed.is_final());
        let paid = WalletStatus::Succeeded {
            wallet_ref: "2024050122001".into(),
            amount: Money::parse("8.80", Currency::Mop).unwrap(),
            paid_at: None,
            brand: None,
        };
        assert!(paid.is_paid() && paid.is_final());
    }

    fn callback(headers: Vec<(&str, &str)>) -> RawCallback {
        RawCallback::new(
            "post",
            "/webhooks/wechat_pay?x=1",
            headers,
            b"{\"id\":\"EV-1\"}".to_vec(),
            DateTime::from_timestamp(1_714_536_000, 0).unwrap(),
        )
    }

    #[test]
    fn raw_callback_normalises_names_and_keeps_bytes() {
        let cb = callback(vec![
            ("Wechatpay-Timestamp", "1714536000"),
            ("Wechatpay-Nonce", "n1"),
        ]);
        assert_eq!(cb.method(), "POST");
        assert_eq!(cb.path(), "/webhooks/wechat_pay?x=1");
        assert_eq!(cb.headers()[0].0, "wechatpay-timestamp");
        assert_eq!(cb.header("WECHATPAY-NONCE"), Some("n1"));
        assert_eq!(cb.required_header("wechatpay-timestamp"), Ok("1714536000"));
        assert_eq!(cb.body(), b"{\"id\":\"EV-1\"}");
        assert_eq!(cb.body_str(), Ok("{\"id\":\"EV-1\"}"));
        assert!(!format!("{cb:?}").contains("EV-1"));
    }

    #[test]
    fn repeated_or_missing_signature_headers_are_refused() {
        let cb = callback(vec![("Signature", "a"), ("signature", "b")]);
        assert!(matches!(
            cb.required_header("signature"),
            Err(AdapterError::Malformed(_))
        ));
        assert!(matches!(
            cb.required_header("client-id"),
            Err(AdapterError::Malformed(_))
        ));
    }

    #[test]
    fn only_retryable_transport_errors_are_retryable() {
        assert!(
            AdapterError::Transport {
                retryable: true,
                message: "connect timeout".into()
            }
            .is_retryable()
        );
        assert!(
            !AdapterError::Transport {
                retryable: false,
                message: "read timeout after send".into()
            }
            .is_retryable()
        );
        assert!(!AdapterError::BadSignature.is_retryable());
    }

    #[test]
    fn ack_responses_carry_exact_bytes() {
        assert_eq!(AckResponse::text(200, "success").body, b"success");
        let empty = AckResponse::empty(204);
        assert!(empty.body.is_empty() && empty.content_type.is_none());
        let json = AckResponse::json(500, &serde_json::json!({"code": "FAIL"}));
        assert_eq!(json.body, br#"{"code":"FAIL"}"#);
    }

    /// A wallet that refuses everything: proves the trait is object-safe and usable
    /// behind `Arc<dyn WalletAdapter>` as the gateway holds it.
    struct RefusingWallet;

    #[async_trait::async_trait]
    impl WalletAdapter for RefusingWallet {
        fn id(&self) -> AdapterId {
            AdapterId::KakaoPay
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                modes: vec![PayMode::StaticEntry],
                currencies: vec![Currency::Krw],
                refunds: RefundSupport::Partial,
                results: ResultDelivery::Polling,
            }
        }
        async fn create_order(&self, _: &CreateOrder) -> Result<OrderCreated, AdapterError> {
            Err(AdapterError::Unsupported("create_order"))
        }
        async fn charge_code(&self, _: &ChargeCode) -> Result<ChargeOutcome, AdapterError> {
            Err(AdapterError::Unsupported("customer codes"))
        }
        async fn query(&self, _: &OrderRef) -> Result<WalletStatus, AdapterError> {
            Ok(WalletStatus::Unknown("?".into()))
        }
        async fn close(&self, _: &OrderRef) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn refund(&self, _: &RefundRequest) -> Result<RefundOutcome, AdapterError> {
            Err(AdapterError::Unsupported("refund"))
        }
        fn verify_callback(&self, _: &RawCallback) -> Result<WalletEvent, AdapterError> {
            Err(AdapterError::BadSignature)
        }
        fn ack(&self, _: Ack) -> AckResponse {
            AckResponse::empty(404)
        }
    }

    #[test]
    fn adapters_are_usable_as_shared_trait_objects() {
        let adapter: Arc<dyn WalletAdapter> = Arc::new(RefusingWallet);
        let caps = adapter.capabilities();
        assert!(caps.supports_mode(PayMode::StaticEntry));
        assert!(!caps.supports_mode(PayMode::CustomerCode));
        assert!(caps.supports_currency(Currency::Krw));
        assert!(!caps.supports_currency(Currency::Mop));
        assert_eq!(adapter.id(), AdapterId::KakaoPay);
        assert_eq!(
            adapter.verify_callback(&callback(vec![])),
            Err(AdapterError::BadSignature)
        );
    }
}
