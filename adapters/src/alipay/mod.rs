//! Alipay Open API adapter (mainland "openapi", `version=1.0`, RSA2), AdapterId
//! `alipay`: 当面付 precreate / bar-code pay, query, close, cancel, refund, refund
//! query, and the form-urlencoded trade notification (wallets.md §1).
//!
//! Owns: turning neutral requests into signed `gateway.do` calls, checking Alipay's
//! signature over the exact raw `*_response` text before reading any field, mapping
//! result codes and `trade_status` to neutral outcomes, and verifying notifications.
//! Must never: treat an unsigned or unverifiable answer as success, turn an
//! unrecognised status into a payment, log keys, signatures or notification bodies,
//! or touch the store.
//!
//! Protocol choices and assumptions (where wallets.md leaves a question open, the
//! most plausible reading is written down here, once):
//!
//! - **Transport.** Every call is one form POST (`application/x-www-form-urlencoded;
//!   charset=utf-8`) of ALL parameters (public ones and `biz_content`) to
//!   `{base_url}/gateway.do`; SDKs often put public parameters in the query string,
//!   which is signed identically, so the sandbox accepts both. Timestamps are
//!   `yyyy-MM-dd HH:mm:ss` in GMT+8.
//! - **Request signature** (§1.2): all parameters except `sign` (so `sign_type` IS
//!   signed), empty values skipped, byte-order sort, raw values, SHA256withRSA.
//! - **Response signature** (§1.3): `sign` is verified over the exact bytes of the
//!   `<method>_response` (or `error_response`) member as it appears in the body,
//!   extracted by a boundary scan, never re-serialized. Like Alipay's SDKs, an
//!   unsigned answer is accepted only when it reports a failure (Alipay leaves some
//!   gateway-level errors unsigned); an unsigned `10000`/`10003` is `BadSignature`.
//! - **Result codes** (§1.4): `10000` success; `10003` (bar-code pay only) the
//!   shopper is confirming -> `ChargeOutcome::Pending`, then poll `query`; `20000`
//!   and `40004 ACQ.SYSTEM_ERROR` -> `Transport { retryable: true }` (every call is
//!   idempotent by `out_trade_no` / `out_request_no`, so repeating it is safe);
//!   other failures -> `Rejected { code: sub_code or code }`, except that a `40004`
//!   answer to `pay` is the shopper's refusal -> `ChargeOutcome::Failed`. Transport
//!   failures (connect, timeout, HTTP 5xx) are all retryable for the same reason.
//!   Any other non-2xx (an HTTP 4xx) is `Transport { retryable: false }`, never
//!   `Rejected`: Alipay answers every refusal with HTTP 200 and a (signed) body, so
//!   a 4xx comes from something in front of it (proxy, firewall, wrong URL); it is
//!   unauthenticated and says nothing about the payment, so it must not fail an
//!   order or a refund, and repeating the request would meet the same answer — it
//!   needs a person, and `query` says what happened.
//! - **Modes**: `DynamicQr` = precreate -> `PayAction::QrString { qr_code }`.
//!   `StaticEntry` (the static plate opened inside the Alipay app) = the community
//!   trick of §1.10: precreate, then redirect the in-app browser to `qr_code`
//!   (`PayAction::Redirect`), which Alipay opens as its own cashier. The order's
//!   `return_url` is sent as the `return_url` public parameter in that mode: the real
//!   Alipay ignores it for precreate (the shopper ends on Alipay's result page), the
//!   sandbox's cashier uses it. `Jsapi` (OAuth `buyer_id` + `alipay.trade.create` +
//!   `tradePay`) is not implemented -> `Unsupported`. `CustomerCode` =
//!   `alipay.trade.pay`, `scene=bar_code`.
//! - **Currencies**: CNY, MOP, HKD. `total_amount` is always in the order currency
//!   (major unit, two decimals for all three; zero-decimal currencies would be sent
//!   as integers). For anything but CNY, `trans_currency` is sent (global Open API,
//!   §1.1) and refunds carry `refund_currency`. ASSUMPTION: Alipay echoes
//!   `trans_currency` in pay/query answers and notifications for such trades; an
//!   echoed amount without it is read as CNY, so a silent currency change surfaces
//!   as an amount/currency mismatch in the gateway instead of being trusted.
//! - **Merchant shown to the shopper**: `extend_params` carries
//!   `secondary_merchant_id/name/industry` and `store_name`, modelled on the
//!   cross-border MAPI `extend_params` (§1.11). ASSUMPTION: the Open API accepts them
//!   (unknown `extend_params` keys are ignored by the mainland gateway).
//! - **Expiry**: `timeout_express` = whole minutes left until `expires_at`, rounded
//!   down, at least `1m`.
//! - **Query**: `ACQ.TRADE_NOT_EXIST` -> `Pending` (a precreate trade does not exist
//!   at Alipay until the shopper scans the QR). `TRADE_CLOSED` with any sign of a
//!   capture (`send_pay_date`, or a non-zero `buyer_pay_amount` / `receipt_amount`)
//!   -> `Refunded` (paid, then fully refunded or cancelled: never "never paid"),
//!   without any -> `Closed`. Partial refunds leave `TRADE_SUCCESS` (-> `Succeeded`).
//! - **Close** = `alipay.trade.close` (for `WAIT_BUYER_PAY`). On
//!   `ACQ.TRADE_NOT_EXIST` (QR never scanned) it falls back to `alipay.trade.cancel`,
//!   which per Alipay's cancel doc records the order closed so a later scan cannot
//!   pay (`action` absent); if the shopper paid in the meantime, cancel reverses the
//!   payment in full and `close` returns `Rejected { ACQ.TRADE_HAS_SUCCESS }` (the
//!   gateway's query then reports `Refunded`). On `ACQ.TRADE_STATUS_ERROR` /
//!   `ACQ.TRADE_HAS_CLOSE` it queries: already closed is success (idempotent close),
//!   anything else is the rejection. [`AlipayAdapter::cancel`] is also public, for
//!   POS flows whose pay outcome stayed unknown (§1.6).
//! - **Refund**: `out_request_no` = our refund id (idempotency key). `fund_change=Y`
//!   -> `Succeeded`; `N` (or absent) means "no money moved by THIS call", so the
//!   refund is confirmed with `alipay.trade.fastpay.refund.query` (the same id
//!   retried is `Succeeded`, never a second refund; not found -> `Pending`).
//!   Over-refund is `Rejected { ACQ.REFUND_AMT_NOT_EQUAL_TOTAL }` (Alipay's
//!   "退款金额超限"); the same id with another amount is
//!   `Rejected { ACQ.CONTEXT_INCONSISTENT }`.
//! - **Notifications** (§1.8): verified by removing `sign` AND `sign_type`, sorting,
//!   joining the decoded values (empty ones kept), SHA256withRSA; `sign_type` must be
//!   `RSA2`; repeated parameters are `Malformed`. Alipay's notification has no
//!   timestamp window (it retries for 25 h); deduplication is by `notify_id`
//!   (`event_id`). An authentic notification for another `app_id` is
//!   `BadSignature`: it is not addressed to us, and answering it as authentic would
//!   let one Alipay app's traffic move our orders. The same holds for `seller_id`
//!   when [`AlipayConfig::seller_id`] is set (§1.8 step 4; local mode sets it).
//!   Mapping: `out_biz_no` present -> `RefundSucceeded` (refund id = `out_biz_no`;
//!   `refunded_total` = `refund_fee`, which Alipay defines as the trade's
//!   CUMULATIVE refunded total; the notification names no per-refund amount, so
//!   `amount` is that same cumulative figure — the one adapter where `amount` is
//!   not this refund's amount, and the gateway must check `refunded_total`);
//!   `TRADE_SUCCESS` / `TRADE_FINISHED` -> `PaymentSucceeded` (`total_amount`,
//!   `gmt_payment`); `TRADE_CLOSED` with no sign of a capture (no `gmt_payment`,
//!   and `buyer_pay_amount`, `receipt_amount`, `refund_fee` absent or zero) ->
//!   `PaymentFailed { code: "TRADE_CLOSED" }` (closed unpaid: timeout, close or
//!   cancel); `TRADE_CLOSED` with any of them (paid, then reversed or fully
//!   refunded: wallets.md §0) without `out_biz_no`, `WAIT_BUYER_PAY` or an
//!   unrecognised status -> `Informational` (never a failure; the reconciler's
//!   `query` reports `Refunded`). Amounts are reported faithfully; the gateway
//!   compares them with the order.
//! - **Ack**: `Processed` -> HTTP 200 `text/plain` body exactly `success` (7 bytes);
//!   `RetryLater` -> 500 `fail`; `Rejected` -> 401 `fail` (Alipay retries on anything
//!   but `success`). The sandbox's retry schedule after the first attempt: 4m, 10m,
//!   10m, 1h, 2h, 6h, 15h.
//! - **Test payment codes**: 18 digits starting `28` (inside Alipay's 25-30 space).

pub mod sandbox;
pub mod wire;

use std::fmt;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::contract::{
    Ack, AckResponse, AdapterError, AdapterId, Capabilities, ChargeCode, ChargeOutcome,
    CreateOrder, MerchantInfo, OrderCreated, OrderRef, PayAction, PayMode, RawCallback,
    RefundOutcome, RefundRequest, RefundSupport, ResultDelivery, WalletAdapter, WalletEvent,
    WalletStatus,
};
use crate::crypto::{RsaPrivateKey, RsaPublicKey};
use crate::money::{Currency, Money};

pub use sandbox::{AlipaySandbox, LOCAL_APP_ID, local, local_config};

/// Currencies this adapter accepts (CNY natively, MOP/HKD via `trans_currency`).
pub const CURRENCIES: [Currency; 3] = [Currency::Cny, Currency::Mop, Currency::Hkd];

/// Alipay allows 256 characters of `subject`.
const SUBJECT_MAX_CHARS: usize = 256;

/// Everything the adapter needs to speak for one Alipay app.
pub struct AlipayConfig {
    /// Scheme and host (and path prefix) of the Open API, without `/gateway.do`:
    /// `https://openapi.alipay.com`, `https://openapi-sandbox.dl.alipaydev.com`,
    /// `https://globalopenapi.alipay.com`, or the local sandbox URL.
    pub base_url: String,
    /// `app_id` issued by Alipay.
    pub app_id: String,
    /// The app private key (应用私钥) that signs our requests.
    pub merchant_key: RsaPrivateKey,
    /// The Alipay public key (支付宝公钥) that signs answers and notifications.
    pub alipay_public_key: RsaPublicKey,
    /// Our merchant PID (`2088...`). When set, a notification whose `seller_id` is
    /// not this one is refused (wallets.md §1.8 step 4).
    pub seller_id: Option<String>,
    pub connect_timeout: Duration,
    /// Whole-request deadline (send and read the answer).
    pub timeout: Duration,
}

impl AlipayConfig {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Alipay's own bar-code guidance polls for about 30 s; one call gets 15 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

    pub fn new(
        base_url: impl Into<String>,
        app_id: impl Into<String>,
        merchant_key: RsaPrivateKey,
        alipay_public_key: RsaPublicKey,
    ) -> AlipayConfig {
        AlipayConfig {
            base_url: base_url.into(),
            app_id: app_id.into(),
            merchant_key,
            alipay_public_key,
            seller_id: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

impl fmt::Debug for AlipayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlipayConfig")
            .field("base_url", &self.base_url)
            .field("app_id", &self.app_id)
            .field("merchant_key", &"***")
            .field("alipay_public_key", &self.alipay_public_key)
            .field("seller_id", &self.seller_id)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What `alipay.trade.cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The trade was unpaid and is closed.
    Closed,
    /// The trade was paid and Alipay refunded it in full.
    Refunded,
    /// No trade existed; Alipay recorded the order number closed, so it can no
    /// longer be paid.
    NothingToCancel,
}

/// The Alipay Open API adapter.
pub struct AlipayAdapter {
    config: AlipayConfig,
    gateway_url: String,
    client: reqwest::Client,
}

impl fmt::Debug for AlipayAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlipayAdapter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AlipayAdapter {
    pub fn new(config: AlipayConfig) -> Result<AlipayAdapter, AdapterError> {
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(AdapterError::Malformed(
                "alipay base_url must be an http(s) URL".into(),
            ));
        }
        if config.app_id.is_empty() || config.app_id.len() > 32 {
            return Err(AdapterError::Malformed(
                "alipay app_id must have 1 to 32 characters".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .build()
            .map_err(|_| AdapterError::Transport {
                retryable: false,
                message: "could not build the HTTP client".into(),
            })?;
        Ok(AlipayAdapter {
            gateway_url: format!("{base}{}", wire::GATEWAY_PATH),
            config,
            client,
        })
    }

    pub fn app_id(&self) -> &str {
        &self.config.app_id
    }

    /// `alipay.trade.cancel`: closes an unpaid trade or refunds a paid one in full.
    /// Meant for a bar-code payment whose outcome stayed unknown (wallets.md §1.6);
    /// within 24 h of payment only. `retry_flag=Y` is a retryable transport error.
    pub async fn cancel(&self, order: &OrderRef) -> Result<Cancelled, AdapterError> {
        let opened = self
            .call(wire::method::CANCEL, None, None, &trade_ref(order))
            .await?;
        if !opened.outcome.is_success() {
            return Err(refused(&opened.outcome));
        }
        let response: wire::CancelResponse = opened.parse()?;
        if response.retry_flag == Some(wire::Flag::Y) {
            return Err(AdapterError::Transport {
                retryable: true,
                message: "alipay asks to repeat the cancel (retry_flag=Y)".into(),
            });
        }
        match response.action {
            Some(wire::CancelAction::Close) => Ok(Cancelled::Closed),
            Some(wire::CancelAction::Refund) => Ok(Cancelled::Refunded),
            None => Ok(Cancelled::NothingToCancel),
            Some(wire::CancelAction::Unknown) => {
                Err(AdapterError::Malformed("unrecognised cancel action".into()))
            }
        }
    }

    /// `alipay.trade.fastpay.refund.query`: the amount of refund `refund_id` when
    /// Alipay confirms it, `None` when it does not exist (or is not confirmed yet).
    pub async fn refund_query(
        &self,
        order: &OrderRef,
        refund_id: &str,
    ) -> Result<Option<Money>, AdapterError> {
        let biz = wire::RefundQueryBiz {
            out_trade_no: Some(order.order_id.clone()),
            trade_no: order.wallet_ref.clone(),
            out_request_no: refund_id.to_owned(),
        };
        let opened = self
            .call(wire::method::REFUND_QUERY, None, None, &biz)
            .await?;
        if !opened.outcome.is_success() {
            return Err(refused(&opened.outcome));
        }
        let response: wire::RefundQueryResponse = opened.parse()?;
        match (response.refund_amount.as_deref(), response.refund_status) {
            (Some(amount), None | Some(wire::RefundStatus::RefundSuccess)) => {
                let currency = wire::currency_of(response.trans_currency.as_deref())?;
                wire::parse_amount(amount, currency).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// One signed call; the answer's signature is verified before anything is read.
    async fn call<B: Serialize>(
        &self,
        method: &str,
        notify_url: Option<&str>,
        return_url: Option<&str>,
        biz: &B,
    ) -> Result<wire::Opened, AdapterError> {
        let biz_content = serde_json::to_string(biz)
            .map_err(|e| AdapterError::Malformed(format!("biz_content: {e}")))?;
        let request = wire::Request {
            app_id: &self.config.app_id,
            method,
            timestamp: wire::format_time(Utc::now()),
            notify_url,
            return_url,
            biz_content,
        };
        let form = request
            .signed_form(&self.config.merchant_key)
            .map_err(|e| AdapterError::Malformed(format!("signing the request failed: {e}")))?;
        let response = self
            .client
            .post(&self.gateway_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(form)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if status.is_server_error() {
            return Err(AdapterError::Transport {
                retryable: true,
                message: format!("alipay answered HTTP {}", status.as_u16()),
            });
        }
        if !status.is_success() {
            return Err(AdapterError::Transport {
                retryable: false,
                message: format!("alipay answered HTTP {}", status.as_u16()),
            });
        }
        let body = std::str::from_utf8(&body)
            .map_err(|_| AdapterError::Malformed("alipay answer is not UTF-8".into()))?;
        wire::open_response(body, method, &self.config.alipay_public_key)
    }

    fn check_currency(&self, currency: Currency) -> Result<(), AdapterError> {
        if CURRENCIES.contains(&currency) {
            Ok(())
        } else {
            Err(AdapterError::Unsupported(
                "currency (Alipay takes CNY, MOP and HKD)",
            ))
        }
    }
}

fn transport(error: reqwest::Error) -> AdapterError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not be reached"
    } else {
        "request failed"
    };
    AdapterError::Transport {
        retryable: true,
        message: format!("alipay {what}"),
    }
}

/// A failed outcome as an error: "unknown" answers are retryable, the rest are the
/// wallet's refusal with its most specific code.
fn refused(outcome: &wire::Outcome) -> AdapterError {
    let code = outcome.specific_code().to_owned();
    if outcome.code == wire::code::UNKNOWN
        || outcome.sub_code.as_deref() == Some(wire::sub_code::ACQ_SYSTEM_ERROR)
    {
        return AdapterError::Transport {
            retryable: true,
            message: format!("alipay {code}: {}", outcome.message()),
        };
    }
    AdapterError::Rejected {
        code,
        message: outcome.message(),
    }
}

fn is_sub_code(outcome: &wire::Outcome, sub_codes: &[&str]) -> bool {
    outcome
        .sub_code
        .as_deref()
        .is_some_and(|code| sub_codes.contains(&code))
}

fn trade_ref(order: &OrderRef) -> wire::TradeRef {
    wire::TradeRef {
        out_trade_no: Some(order.order_id.clone()),
        trade_no: order.wallet_ref.clone(),
    }
}

fn subject(description: &str, order_id: &str) -> String {
    let text = description.trim();
    if text.is_empty() {
        format!("Order {order_id}")
    } else {
        text.chars().take(SUBJECT_MAX_CHARS).collect()
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

fn extend_params(merchant: &MerchantInfo) -> Option<wire::ExtendParams> {
    let params = wire::ExtendParams {
        secondary_merchant_id: non_empty(&merchant.merchant_id),
        secondary_merchant_name: non_empty(&merchant.name),
        secondary_merchant_industry: non_empty(&merchant.mcc),
        store_name: merchant.store_name.as_deref().and_then(non_empty),
    };
    (params != wire::ExtendParams::default()).then_some(params)
}

/// A paid `pay` answer as a neutral outcome.
fn charge_succeeded(response: &wire::TradeResponse) -> Result<ChargeOutcome, AdapterError> {
    let wallet_ref = response
        .trade_no
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AdapterError::Malformed("paid answer without trade_no".into()))?;
    let currency = wire::currency_of(response.trans_currency.as_deref())?;
    let amount = response
        .total_amount
        .as_deref()
        .ok_or_else(|| AdapterError::Malformed("paid answer without total_amount".into()))
        .and_then(|a| wire::parse_amount(a, currency))?;
    Ok(ChargeOutcome::Succeeded {
        wallet_ref,
        amount,
        paid_at: response.gmt_payment.as_deref().and_then(wire::parse_time),
        brand: None,
    })
}

/// Translates a VERIFIED notification (see the module doc for the mapping).
pub fn notify_event(notify: &wire::Notify) -> Result<WalletEvent, AdapterError> {
    if notify.notify_id.is_empty() {
        return Err(AdapterError::Malformed(
            "notification without notify_id".into(),
        ));
    }
    let event_id = notify.notify_id.clone();
    let order_id = notify.out_trade_no.clone();
    if notify.notify_type != wire::NOTIFY_TYPE {
        return Ok(WalletEvent::Informational {
            order_id: Some(order_id),
            event_id,
            summary: format!(
                "notify_type {}",
                notify.notify_type.chars().take(64).collect::<String>()
            ),
        });
    }
    let currency = wire::currency_of(notify.trans_currency.as_deref())?;
    if let Some(refund_id) = notify.out_biz_no.as_deref().filter(|r| !r.is_empty()) {
        let refunded_total = notify
            .refund_fee
            .as_deref()
            .ok_or_else(|| AdapterError::Malformed("refund notification without refund_fee".into()))
            .and_then(|a| wire::parse_amount(a, currency))?;
        return Ok(WalletEvent::RefundSucceeded {
            order_id,
            refund_id: refund_id.to_owned(),
            wallet_refund_ref: None,
            // The notification names no per-refund amount: see the module doc.
            amount: refunded_total,
            refunded_total: Some(refunded_total),
            event_id,
        });
    }
    // TRADE_CLOSED is also "paid, then fully refunded" (wallets.md §0): any sign of
    // a capture keeps it from ever reading as a failed payment.
    let captured = notify.gmt_payment.is_some()
        || wire::shows_capture(notify.buyer_pay_amount.as_deref(), currency)
        || wire::shows_capture(notify.receipt_amount.as_deref(), currency)
        || wire::shows_capture(notify.refund_fee.as_deref(), currency);
    match notify.trade_status {
        wire::TradeStatus::TradeSuccess | wire::TradeStatus::TradeFinished => {
            if notify.trade_no.is_empty() {
                return Err(AdapterError::Malformed(
                    "payment notification without trade_no".into(),
                ));
            }
            let amount = notify
                .total_amount
                .as_deref()
                .ok_or_else(|| {
                    AdapterError::Malformed("payment notification without total_amount".into())
                })
                .and_then(|a| wire::parse_amount(a, currency))?;
            Ok(WalletEvent::PaymentSucceeded {
                order_id,
                wallet_ref: notify.trade_no.clone(),
                amount,
                event_id,
                paid_at: notify.gmt_payment.as_deref().and_then(wire::parse_time),
                brand: None,
            })
        }
        wire::TradeStatus::TradeClosed if !captured => Ok(WalletEvent::PaymentFailed {
            order_id,
            event_id,
            code: "TRADE_CLOSED".into(),
            message: "closed unpaid (timeout, close or cancel)".into(),
        }),
        wire::TradeStatus::TradeClosed => Ok(WalletEvent::Informational {
            order_id: Some(order_id),
            event_id,
            summary: "paid trade closed by a cancel reversal or full refund".into(),
        }),
        wire::TradeStatus::WaitBuyerPay => Ok(WalletEvent::Informational {
            order_id: Some(order_id),
            event_id,
            summary: "WAIT_BUYER_PAY".into(),
        }),
        wire::TradeStatus::Unknown => Ok(WalletEvent::Informational {
            order_id: Some(order_id),
            event_id,
            summary: "unrecognised trade_status".into(),
        }),
    }
}

#[async_trait::async_trait]
impl WalletAdapter for AlipayAdapter {
    fn id(&self) -> AdapterId {
        AdapterId::Alipay
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            modes: vec![
                PayMode::DynamicQr,
                PayMode::StaticEntry,
                PayMode::CustomerCode,
            ],
            currencies: CURRENCIES.to_vec(),
            refunds: RefundSupport::Partial,
            results: ResultDelivery::Webhook,
        }
    }

    async fn create_order(&self, req: &CreateOrder) -> Result<OrderCreated, AdapterError> {
        let redirect = match req.mode {
            PayMode::DynamicQr => false,
            PayMode::StaticEntry => true,
            PayMode::Jsapi => {
                return Err(AdapterError::Unsupported(
                    "Alipay JSAPI (trade.create + tradePay); use StaticEntry",
                ));
            }
            PayMode::CustomerCode => {
                return Err(AdapterError::Unsupported(
                    "customer codes are charged with charge_code",
                ));
            }
        };
        let currency = req.amount.currency();
        self.check_currency(currency)?;
        let biz = wire::PrecreateBiz {
            out_trade_no: req.order_id.clone(),
            total_amount: wire::amount_string(&req.amount),
            subject: subject(&req.description, &req.order_id),
            product_code: Some(wire::PRODUCT_CODE.into()),
            trans_currency: wire::trans_currency(currency),
            timeout_express: Some(wire::timeout_express(Utc::now(), req.expires_at)),
            store_id: req.merchant.store_id.clone(),
            terminal_id: req.merchant.terminal_id.clone(),
            extend_params: extend_params(&req.merchant),
        };
        let return_url = if redirect {
            req.return_url.as_deref()
        } else {
            None
        };
        let opened = self
            .call(
                wire::method::PRECREATE,
                Some(&req.notify_url),
                return_url,
                &biz,
            )
            .await?;
        if !opened.outcome.is_success() {
            return Err(refused(&opened.outcome));
        }
        let response: wire::PrecreateResponse = opened.parse()?;
        if response
            .out_trade_no
            .as_deref()
            .is_some_and(|o| o != req.order_id)
        {
            return Err(AdapterError::Malformed(
                "precreate answer names another order".into(),
            ));
        }
        let qr_code = response
            .qr_code
            .filter(|q| !q.is_empty())
            .ok_or_else(|| AdapterError::Malformed("precreate answer without qr_code".into()))?;
        let action = if redirect {
            PayAction::Redirect { url: qr_code }
        } else {
            PayAction::QrString { data: qr_code }
        };
        Ok(OrderCreated {
            wallet_ref: None,
            action,
        })
    }

    async fn charge_code(&self, req: &ChargeCode) -> Result<ChargeOutcome, AdapterError> {
        let currency = req.amount.currency();
        self.check_currency(currency)?;
        let biz = wire::PayBiz {
            out_trade_no: req.order_id.clone(),
            scene: wire::SCENE_BAR_CODE.into(),
            auth_code: req.auth_code.clone(),
            total_amount: wire::amount_string(&req.amount),
            subject: subject(&req.description, &req.order_id),
            product_code: Some(wire::PRODUCT_CODE.into()),
            trans_currency: wire::trans_currency(currency),
            store_id: req.merchant.store_id.clone(),
            terminal_id: req.merchant.terminal_id.clone(),
            extend_params: extend_params(&req.merchant),
        };
        let opened = self
            .call(wire::method::PAY, req.notify_url.as_deref(), None, &biz)
            .await?;
        let outcome = &opened.outcome;
        match outcome.code.as_str() {
            wire::code::SUCCESS => charge_succeeded(&opened.parse()?),
            wire::code::WAITING_FOR_USER => Ok(ChargeOutcome::Pending),
            wire::code::BUSINESS_FAILED
                if is_sub_code(outcome, &[wire::sub_code::TRADE_HAS_SUCCESS]) =>
            {
                // A repeat of a charge that already went through: report that payment.
                let order = OrderRef {
                    order_id: req.order_id.clone(),
                    wallet_ref: None,
                };
                match self.query(&order).await? {
                    WalletStatus::Succeeded {
                        wallet_ref,
                        amount,
                        paid_at,
                        brand,
                    } => Ok(ChargeOutcome::Succeeded {
                        wallet_ref,
                        amount,
                        paid_at,
                        brand,
                    }),
                    _ => Err(refused(outcome)),
                }
            }
            wire::code::BUSINESS_FAILED
                if !is_sub_code(outcome, &[wire::sub_code::ACQ_SYSTEM_ERROR]) =>
            {
                Ok(ChargeOutcome::Failed {
                    code: outcome.specific_code().to_owned(),
                    message: outcome.message(),
                })
            }
            _ => Err(refused(outcome)),
        }
    }

    async fn query(&self, order: &OrderRef) -> Result<WalletStatus, AdapterError> {
        let opened = self
            .call(wire::method::QUERY, None, None, &trade_ref(order))
            .await?;
        if opened.outcome.is_success() {
            return wire::wallet_status(&opened.parse()?, &opened.raw);
        }
        if is_sub_code(&opened.outcome, &[wire::sub_code::TRADE_NOT_EXIST]) {
            return Ok(WalletStatus::Pending);
        }
        Err(refused(&opened.outcome))
    }

    async fn close(&self, order: &OrderRef) -> Result<(), AdapterError> {
        let opened = self
            .call(wire::method::CLOSE, None, None, &trade_ref(order))
            .await?;
        let outcome = &opened.outcome;
        if outcome.is_success() {
            return Ok(());
        }
        if is_sub_code(outcome, &[wire::sub_code::TRADE_NOT_EXIST]) {
            return match self.cancel(order).await? {
                Cancelled::Closed | Cancelled::NothingToCancel => Ok(()),
                Cancelled::Refunded => Err(AdapterError::Rejected {
                    code: wire::sub_code::TRADE_HAS_SUCCESS.into(),
                    message: "paid before it could be closed; Alipay reversed the payment".into(),
                }),
            };
        }
        if is_sub_code(
            outcome,
            &[
                wire::sub_code::TRADE_STATUS_ERROR,
                wire::sub_code::TRADE_HAS_CLOSE,
            ],
        ) && self.query(order).await? == WalletStatus::Closed
        {
            return Ok(());
        }
        Err(refused(outcome))
    }

    async fn refund(&self, req: &RefundRequest) -> Result<RefundOutcome, AdapterError> {
        let currency = req.amount.currency();
        self.check_currency(currency)?;
        let biz = wire::RefundBiz {
            out_trade_no: Some(req.order_id.clone()),
            trade_no: req.wallet_ref.clone(),
            refund_amount: wire::amount_string(&req.amount),
            refund_currency: wire::trans_currency(currency),
            out_request_no: Some(req.refund_id.clone()),
            refund_reason: req
                .reason
                .as_deref()
                .map(|r| r.chars().take(SUBJECT_MAX_CHARS).collect()),
        };
        let opened = self.call(wire::method::REFUND, None, None, &biz).await?;
        if !opened.outcome.is_success() {
            return Err(refused(&opened.outcome));
        }
        let response: wire::RefundResponse = opened.parse()?;
        if response.fund_change == Some(wire::FundChange::Y) {
            return Ok(RefundOutcome::Succeeded {
                wallet_refund_ref: None,
            });
        }
        let order = OrderRef {
            order_id: req.order_id.clone(),
            wallet_ref: req.wallet_ref.clone(),
        };
        match self.refund_query(&order, &req.refund_id).await? {
            Some(amount) if amount == req.amount => Ok(RefundOutcome::Succeeded {
                wallet_refund_ref: None,
            }),
            Some(amount) => Err(AdapterError::AmountMismatch {
                expected: req.amount,
                got: amount,
            }),
            None => Ok(RefundOutcome::Pending),
        }
    }

    fn verify_callback(&self, cb: &RawCallback) -> Result<WalletEvent, AdapterError> {
        if cb.method() != "POST" {
            return Err(AdapterError::Malformed(
                "alipay notifications are POSTs".into(),
            ));
        }
        let body = cb.body_str()?;
        let pairs = wire::decode_form(body).map_err(AdapterError::Malformed)?;
        let sign = wire::param(&pairs, "sign")
            .filter(|s| !s.is_empty())
            .ok_or(AdapterError::BadSignature)?;
        if wire::param(&pairs, "sign_type") != Some(wire::SIGN_TYPE) {
            return Err(AdapterError::BadSignature);
        }
        let content =
            wire::notify_sign_content(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.config
            .alipay_public_key
            .verify_base64(content.as_bytes(), sign)
            .map_err(|_| AdapterError::BadSignature)?;
        let notify: wire::Notify = serde_urlencoded::from_str(body)
            .map_err(|e| AdapterError::Malformed(format!("alipay notification: {e}")))?;
        if notify.app_id != self.config.app_id {
            return Err(AdapterError::BadSignature);
        }
        if let Some(seller) = self.config.seller_id.as_deref()
            && notify.seller_id.as_deref() != Some(seller)
        {
            return Err(AdapterError::BadSignature);
        }
        notify_event(&notify)
    }

    fn ack(&self, ack: Ack) -> AckResponse {
        match ack {
            Ack::Processed => AckResponse::text(200, wire::ACK_SUCCESS),
            Ack::RetryLater => AckResponse::text(500, wire::ACK_FAILURE),
            Ack::Rejected => AckResponse::text(401, wire::ACK_FAILURE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notify(status: wire::TradeStatus) -> wire::Notify {
        wire::Notify {
            notify_time: "2024-05-01 12:00:05".into(),
            notify_type: wire::NOTIFY_TYPE.into(),
            notify_id: "N-1".into(),
            app_id: "2021000000000001".into(),
            charset: None,
            version: None,
            sign_type: Some("RSA2".into()),
            trade_no: "2024050122001000000000000001".into(),
            out_trade_no: "SO1".into(),
            out_biz_no: None,
            buyer_id: None,
            buyer_logon_id: None,
            seller_id: None,
            trade_status: status,
            total_amount: Some("88.80".into()),
            receipt_amount: None,
            buyer_pay_amount: None,
            refund_fee: None,
            trans_currency: Some("MOP".into()),
            subject: None,
            gmt_create: None,
            gmt_payment: None,
            gmt_refund: None,
            gmt_close: None,
        }
    }

    #[test]
    fn paid_notification_reports_the_amount_in_trans_currency() {
        let mut paid = notify(wire::TradeStatus::TradeSuccess);
        paid.gmt_payment = Some("2024-05-01 12:00:00".into());
        assert_eq!(
            notify_event(&paid),
            Ok(WalletEvent::PaymentSucceeded {
                order_id: "SO1".into(),
                wallet_ref: "2024050122001000000000000001".into(),
                amount: Money::parse("88.80", Currency::Mop).unwrap(),
                event_id: "N-1".into(),
                paid_at: chrono::DateTime::from_timestamp(1_714_536_000, 0),
                brand: None,
            })
        );
    }

    #[test]
    fn closed_notifications_distinguish_unpaid_from_reversed() {
        assert!(matches!(
            notify_event(&notify(wire::TradeStatus::TradeClosed)),
            Ok(WalletEvent::PaymentFailed { code, .. }) if code == "TRADE_CLOSED"
        ));
        let mut reversed = notify(wire::TradeStatus::TradeClosed);
        reversed.gmt_payment = Some("2024-05-01 12:00:00".into());
        assert!(matches!(
            notify_event(&reversed),
            Ok(WalletEvent::Informational { .. })
        ));
    }

    #[test]
    fn a_closed_notification_with_any_captured_amount_is_never_a_failed_payment() {
        let edits: [fn(&mut wire::Notify); 4] = [
            |n| n.buyer_pay_amount = Some("88.80".into()),
            |n| n.receipt_amount = Some("88.80".into()),
            |n| n.refund_fee = Some("88.80".into()),
            |n| n.receipt_amount = Some("garbled".into()),
        ];
        for edit in edits {
            let mut closed = notify(wire::TradeStatus::TradeClosed);
            edit(&mut closed);
            let event = notify_event(&closed).unwrap();
            assert!(
                matches!(event, WalletEvent::Informational { .. }),
                "{closed:?} -> {event:?}"
            );
        }
        let mut zero = notify(wire::TradeStatus::TradeClosed);
        zero.buyer_pay_amount = Some("0.00".into());
        zero.receipt_amount = Some("0.00".into());
        assert!(matches!(
            notify_event(&zero),
            Ok(WalletEvent::PaymentFailed { .. })
        ));
    }

    #[test]
    fn refund_notification_carries_out_biz_no_and_cumulative_refund_fee() {
        let mut refund = notify(wire::TradeStatus::TradeClosed);
        refund.out_biz_no = Some("RF-2".into());
        refund.refund_fee = Some("88.80".into());
        assert_eq!(
            notify_event(&refund),
            Ok(WalletEvent::RefundSucceeded {
                order_id: "SO1".into(),
                refund_id: "RF-2".into(),
                wallet_refund_ref: None,
                amount: Money::parse("88.80", Currency::Mop).unwrap(),
                refunded_total: Some(Money::parse("88.80", Currency::Mop).unwrap()),
                event_id: "N-1".into(),
            })
        );
    }

    #[test]
    fn waiting_and_unknown_statuses_are_informational_never_paid() {
        for status in [wire::TradeStatus::WaitBuyerPay, wire::TradeStatus::Unknown] {
            assert!(matches!(
                notify_event(&notify(status)),
                Ok(WalletEvent::Informational { .. })
            ));
        }
    }

    #[test]
    fn unparseable_notification_amount_is_malformed() {
        let mut paid = notify(wire::TradeStatus::TradeSuccess);
        paid.total_amount = Some("88.8.0".into());
        assert!(matches!(
            notify_event(&paid),
            Err(AdapterError::Malformed(_))
        ));
        paid.total_amount = None;
        assert!(matches!(
            notify_event(&paid),
            Err(AdapterError::Malformed(_))
        ));
        let mut odd_currency = notify(wire::TradeStatus::TradeSuccess);
        odd_currency.trans_currency = Some("XBT".into());
        assert!(matches!(
            notify_event(&odd_currency),
            Err(AdapterError::Malformed(_))
        ));
    }

    #[test]
    fn refusals_keep_the_specific_code_and_unknowns_are_retryable() {
        let over = wire::Outcome::failure(
            "40004",
            "Business Failed",
            wire::sub_code::REFUND_AMOUNT_EXCEEDED,
            "退款金额超限",
        );
        assert_eq!(
            refused(&over),
            AdapterError::Rejected {
                code: "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL".into(),
                message: "退款金额超限".into()
            }
        );
        let busy = wire::Outcome::failure(
            "20000",
            "Service Currently Unavailable",
            "isp.unknown-error",
            "系统繁忙",
        );
        assert!(refused(&busy).is_retryable());
        let system =
            wire::Outcome::failure("40004", "Business Failed", "ACQ.SYSTEM_ERROR", "系统错误");
        assert!(refused(&system).is_retryable());
    }

    #[test]
    fn config_debug_masks_the_private_key() {
        let key = RsaPrivateKey::generate_2048().unwrap();
        let public = key.public_key().unwrap();
        let config = AlipayConfig::new(
            "https://openapi.alipay.com",
            "2021000000000001",
            key,
            public,
        );
        let text = format!("{config:?}");
        assert!(text.contains("merchant_key: \"***\"") && !text.contains("PRIVATE"));
        let adapter = AlipayAdapter::new(config).unwrap();
        assert_eq!(adapter.gateway_url, "https://openapi.alipay.com/gateway.do");
    }

    #[test]
    fn ack_answers_are_alipays_exact_bytes() {
        let key = RsaPrivateKey::generate_2048().unwrap();
        let public = key.public_key().unwrap();
        let adapter = AlipayAdapter::new(AlipayConfig::new(
            "http://127.0.0.1:1/",
            "2021000000000001",
            key,
            public,
        ))
        .unwrap();
        let ok = adapter.ack(Ack::Processed);
        assert_eq!((ok.status, ok.body.as_slice()), (200, &b"success"[..]));
        assert_eq!(
            ok.content_type.map(|c| c.starts_with("text/plain")),
            Some(true)
        );
        assert_eq!(adapter.ack(Ack::RetryLater).body, b"fail");
        assert_eq!(adapter.ack(Ack::Rejected).body, b"fail");
        assert_ne!(adapter.ack(Ack::Rejected).status, 200);
    }
}
