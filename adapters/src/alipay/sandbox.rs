//! Alipay's server side of the Open API, for local mode and tests: `gateway.do`
//! with real RSA2 verification of our requests and signed answers, the cashier
//! behind each precreate `qr_code`, bar-code payments with test codes, signed
//! form notifications with Alipay's retry schedule, and a daily statement.
//!
//! Owns: an in-memory trade book for ONE app (`app_id`), its own wallet key, the
//! merchant's public key, faults and the callback dispatcher.
//! Must never: sign with the merchant's key, accept a request whose signature it
//! did not verify, or be mounted in production configuration.
//!
//! Sandbox choices (the real Alipay may differ, see the adapter's module doc):
//! the trade exists from `precreate` on (the real one appears when the QR is
//! scanned); `timeout_express` (default `120m`) closes an unpaid trade at its real
//! deadline, not scaled by `TimeScale`, with a `TRADE_CLOSED` notification; the
//! cashier's Cancel closes the trade; a declined code (`...9xxx`) creates no trade;
//! a code needing confirmation (`...1xxx`) answers `10003` and is paid by
//! `POST /codes/{code}/confirm` or automatically after 10 s of wallet time; refund
//! notifications go to the trade's `notify_url`; `alipay.trade.cancel` of an unknown
//! `out_trade_no` records it closed. Notifications count as acknowledged only for
//! HTTP 200 with the body exactly `success`. The statement is UTF-8 CSV (the real
//! one is GBK) with bilingual headers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::wire::{self, Outcome, TradeStatus, code, sub_code};
use super::{AlipayAdapter, AlipayConfig};
use crate::contract::AdapterError;
use crate::crypto::{self, RsaPrivateKey, RsaPublicKey};
use crate::money::{Currency, Money};
use crate::sandbox::{
    CodeBehaviour, Dispatcher, Faults, LocalKeys, Outgoing, TimeScale, escape, fault_routes,
    pay_page, test_code,
};

/// The `app_id` of the local app the sandbox serves.
pub const LOCAL_APP_ID: &str = "2021000000000001";
/// The sandbox merchant's Alipay PID (`seller_id`).
pub const SELLER_ID: &str = "2088000000000001";
/// The one sandbox shopper.
const BUYER_ID: &str = "2088102177000001";
const BUYER_LOGON_ID: &str = "159****0001";
/// Alipay CN payment codes as the sandbox issues them: 18 digits starting `28`.
pub const CODE_PREFIX: &str = "28";
pub const CODE_LENGTH: usize = 18;
/// Alipay's notification retries after the first attempt (wallets.md §1.8):
/// 4m, 10m, 10m, 1h, 2h, 6h, 15h, in wallet time.
pub const RETRY_SCHEDULE_SECS: [u64; 7] = [240, 600, 600, 3_600, 7_200, 21_600, 54_000];
/// A pending bar-code payment confirms itself after this much wallet time.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(10);
/// Requests whose `timestamp` is further than this from the sandbox clock are refused.
const TIMESTAMP_WINDOW_MINUTES: i64 = 15;
/// precreate's default QR lifetime.
const DEFAULT_TIMEOUT_MINUTES: i64 = 120;
/// `alipay.trade.cancel` may reverse a payment only within 24 h.
const CANCEL_WINDOW_HOURS: i64 = 24;
/// 100 000 000.00 in minor units (Alipay's upper bound for `total_amount`).
const MAX_TOTAL_MINOR: i64 = 10_000_000_000;

/// The retry schedule as durations (wallet time).
pub fn retry_schedule() -> Vec<Duration> {
    RETRY_SCHEDULE_SECS
        .iter()
        .map(|s| Duration::from_secs(*s))
        .collect()
}

#[derive(Debug, Clone)]
struct RefundRecord {
    /// `None` for the full reversal made by `alipay.trade.cancel`.
    out_request_no: Option<String>,
    amount: Money,
    at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Trade {
    trade_no: String,
    out_trade_no: String,
    subject: String,
    total: Money,
    merchant_name: String,
    notify_url: Option<String>,
    return_url: Option<String>,
    status: TradeStatus,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    paid_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    auth_code: Option<String>,
    refunds: Vec<RefundRecord>,
}

impl Trade {
    fn refunded(&self) -> Money {
        let minor = self.refunds.iter().map(|r| r.amount.minor()).sum();
        Money::from_minor(minor, self.total.currency()).unwrap_or(self.total)
    }

    fn is_paid(&self) -> bool {
        self.paid_at.is_some()
    }

    /// Closes an unpaid trade whose deadline has passed; true when it just did.
    fn expire_if_due(&mut self, now: DateTime<Utc>) -> bool {
        let due = self.expires_at.is_some_and(|at| at <= now);
        if self.status == TradeStatus::WaitBuyerPay && due {
            self.status = TradeStatus::TradeClosed;
            self.closed_at = Some(now);
            return true;
        }
        false
    }

    fn pay(&mut self, now: DateTime<Utc>) {
        self.status = TradeStatus::TradeSuccess;
        self.paid_at = Some(now);
    }

    fn close(&mut self, now: DateTime<Utc>) {
        self.status = TradeStatus::TradeClosed;
        self.closed_at = Some(now);
    }

    fn trade_response(&self, outcome: Outcome) -> wire::TradeResponse {
        let paid = self.is_paid();
        wire::TradeResponse {
            outcome,
            trade_no: Some(self.trade_no.clone()),
            out_trade_no: Some(self.out_trade_no.clone()),
            trade_status: None,
            total_amount: Some(wire::amount_string(&self.total)),
            receipt_amount: paid.then(|| wire::amount_string(&self.total)),
            buyer_pay_amount: paid.then(|| wire::amount_string(&self.total)),
            trans_currency: wire::trans_currency(self.total.currency()),
            buyer_logon_id: Some(BUYER_LOGON_ID.into()),
            buyer_user_id: Some(BUYER_ID.into()),
            gmt_payment: self.paid_at.map(wire::format_time),
            send_pay_date: None,
        }
    }
}

#[derive(Debug, Default)]
struct Book {
    /// By `out_trade_no` (one app, so it is unique).
    trades: HashMap<String, Trade>,
    /// `trade_no` -> `out_trade_no`.
    by_trade_no: HashMap<String, String>,
}

impl Book {
    /// `trade_no` wins when both are given (as at Alipay).
    fn find_mut(&mut self, by: &wire::TradeRef) -> Option<&mut Trade> {
        let key = match by.trade_no.as_deref().filter(|t| !t.is_empty()) {
            Some(trade_no) => self.by_trade_no.get(trade_no)?.clone(),
            None => by.out_trade_no.clone()?,
        };
        self.trades.get_mut(&key)
    }

    fn by_trade_no_mut(&mut self, trade_no: &str) -> Option<&mut Trade> {
        let key = self.by_trade_no.get(trade_no)?.clone();
        self.trades.get_mut(&key)
    }

    fn insert(&mut self, trade: Trade) {
        self.by_trade_no
            .insert(trade.trade_no.clone(), trade.out_trade_no.clone());
        self.trades.insert(trade.out_trade_no.clone(), trade);
    }
}

/// The Alipay sandbox. Build with [`AlipaySandbox::new`] (or [`local`]), mount with
/// [`AlipaySandbox::configure`].
pub struct AlipaySandbox {
    app_id: String,
    wallet_key: RsaPrivateKey,
    merchant_public_key: RsaPublicKey,
    public_base_url: String,
    book: Mutex<Book>,
    faults: Arc<Faults>,
    dispatcher: Dispatcher,
    time: TimeScale,
    confirm_after: Mutex<Duration>,
    serial: AtomicU64,
}

impl std::fmt::Debug for AlipaySandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipaySandbox")
            .field("app_id", &self.app_id)
            .field("public_base_url", &self.public_base_url)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Method handlers answer the full response object, success or failure, plus the
/// notifications to send once the book is unlocked.
struct Handled {
    response: serde_json::Value,
    notify: Vec<Outgoing>,
}

impl Handled {
    fn ok<T: Serialize>(response: &T) -> Handled {
        Handled {
            response: serde_json::to_value(response).unwrap_or_default(),
            notify: Vec::new(),
        }
    }

    fn fail(outcome: Outcome) -> Handled {
        Handled::ok(&outcome)
    }

    fn notifying(mut self, outgoing: Option<Outgoing>) -> Handled {
        self.notify.extend(outgoing);
        self
    }
}

fn business(sub: &str, message: &str) -> Outcome {
    Outcome::failure(code::BUSINESS_FAILED, "Business Failed", sub, message)
}

fn invalid_arguments(sub: &str, message: &str) -> Outcome {
    Outcome::failure(code::INVALID_ARGUMENTS, "Invalid Arguments", sub, message)
}

fn invalid_parameter(message: &str) -> Outcome {
    business(sub_code::ACQ_INVALID_PARAMETER, message)
}

fn valid_out_no(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_auth_code(code: &str) -> bool {
    (16..=24).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_digit())
        && matches!(code.get(..2), Some("25" | "26" | "27" | "28" | "29" | "30"))
}

/// The order amount from `total_amount` + `trans_currency`.
fn order_amount(total_amount: &str, trans_currency: Option<&str>) -> Result<Money, Outcome> {
    let currency = wire::currency_of(trans_currency)
        .map_err(|_| invalid_parameter("trans_currency 不支持"))?;
    let amount = wire::parse_amount(total_amount, currency)
        .map_err(|_| invalid_parameter("total_amount 格式错误"))?;
    if amount.minor() > MAX_TOTAL_MINOR {
        return Err(invalid_parameter("total_amount 超出范围"));
    }
    Ok(amount)
}

fn merchant_name(extend: Option<&wire::ExtendParams>) -> String {
    extend
        .and_then(|e| {
            e.secondary_merchant_name
                .clone()
                .or_else(|| e.store_name.clone())
        })
        .unwrap_or_else(|| "Alipay merchant".into())
}

fn notify_acked(status: u16, body: &[u8]) -> bool {
    status == 200 && body == wire::ACK_SUCCESS.as_bytes()
}

impl AlipaySandbox {
    pub fn new(
        public_base_url: &str,
        app_id: &str,
        wallet_key: RsaPrivateKey,
        merchant_public_key: RsaPublicKey,
        time: TimeScale,
    ) -> Arc<AlipaySandbox> {
        let faults = Arc::new(Faults::default());
        Arc::new(AlipaySandbox {
            app_id: app_id.to_owned(),
            wallet_key,
            merchant_public_key,
            public_base_url: public_base_url.trim_end_matches('/').to_owned(),
            book: Mutex::new(Book::default()),
            dispatcher: Dispatcher::new(retry_schedule(), time, faults.clone()),
            faults,
            time,
            confirm_after: Mutex::new(CONFIRM_AFTER),
            serial: AtomicU64::new(1),
        })
    }

    /// Registers every route relative to where the caller mounts the sandbox
    /// (`/sandbox/alipay` in the gateway).
    pub fn configure(self: &Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::from(self.clone()))
            .route(wire::GATEWAY_PATH, web::post().to(gateway))
            .route("/pay/{trade_no}", web::get().to(cashier))
            .route("/pay/{trade_no}/confirm", web::post().to(cashier_confirm))
            .route("/pay/{trade_no}/cancel", web::post().to(cashier_cancel))
            .route("/test-codes", web::get().to(test_codes))
            .route("/codes/{code}/confirm", web::post().to(code_confirm))
            .route("/statement", web::get().to(statement));
        fault_routes(cfg, self.faults.clone(), self.dispatcher.clone());
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// How long (wallet time) a pending bar-code payment waits before confirming
    /// itself; tests lengthen it to exercise `POST /codes/{code}/confirm`.
    pub fn set_confirm_after(&self, wallet_time: Duration) {
        *lock(&self.confirm_after) = wallet_time;
    }

    /// The status of `out_trade_no` in the book, `None` when no trade exists.
    pub fn trade_status(&self, out_trade_no: &str) -> Option<TradeStatus> {
        lock(&self.book).trades.get(out_trade_no).map(|t| t.status)
    }

    fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }

    /// 28 digits like Alipay's: date, `22001`, serial.
    fn new_trade_no(&self, now: DateTime<Utc>) -> String {
        let date = now.with_timezone(&wire::BEIJING).format("%Y%m%d");
        format!("{date}22001{:015}", self.next_serial())
    }

    fn new_notify_id(&self, trade_no: &str, now: DateTime<Utc>) -> String {
        let seed = format!(
            "{trade_no}|{}|{}",
            self.next_serial(),
            now.timestamp_nanos_opt().unwrap_or_default()
        );
        hex::encode(&crypto::sha256(seed.as_bytes())[..16])
    }

    fn pay_url(&self, trade_no: &str) -> String {
        format!("{}/pay/{trade_no}", self.public_base_url)
    }

    /// The signed notification for the trade's current state (`refund` = the refund
    /// that caused it), when the trade has a `notify_url`.
    fn notification(
        &self,
        trade: &Trade,
        refund: Option<&RefundRecord>,
        now: DateTime<Utc>,
    ) -> Option<Outgoing> {
        let url = trade.notify_url.clone()?;
        let paid = trade.is_paid();
        let total = wire::amount_string(&trade.total);
        let notify = wire::Notify {
            notify_time: wire::format_time(now),
            notify_type: wire::NOTIFY_TYPE.into(),
            notify_id: self.new_notify_id(&trade.trade_no, now),
            app_id: self.app_id.clone(),
            charset: Some(wire::CHARSET.into()),
            version: Some(wire::VERSION.into()),
            sign_type: Some(wire::SIGN_TYPE.into()),
            trade_no: trade.trade_no.clone(),
            out_trade_no: trade.out_trade_no.clone(),
            out_biz_no: refund.and_then(|r| r.out_request_no.clone()),
            buyer_id: paid.then(|| BUYER_ID.into()),
            buyer_logon_id: paid.then(|| BUYER_LOGON_ID.into()),
            seller_id: Some(SELLER_ID.into()),
            trade_status: trade.status,
            total_amount: Some(total.clone()),
            receipt_amount: paid.then(|| total.clone()),
            buyer_pay_amount: paid.then(|| total.clone()),
            refund_fee: refund.map(|_| wire::amount_string(&trade.refunded())),
            trans_currency: wire::trans_currency(trade.total.currency()),
            subject: Some(trade.subject.clone()),
            gmt_create: Some(wire::format_time(trade.created_at)),
            gmt_payment: trade.paid_at.map(wire::format_time),
            gmt_refund: refund.map(|r| wire::format_time(r.at)),
            gmt_close: trade.closed_at.map(wire::format_time),
        };
        match notify.signed_form(&self.wallet_key) {
            Ok(body) => Some(Outgoing {
                url,
                headers: vec![(
                    "content-type".into(),
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                )],
                body: body.into_bytes(),
                acked: notify_acked,
                // Alipay's form notify carries no timestamp header: the signature covers
                // the body (with `notify_time`), so every retry resends the same bytes.
                resign: None,
            }),
            Err(e) => {
                tracing::error!(error = %e, "alipay sandbox could not sign a notification");
                None
            }
        }
    }

    fn dispatch_all(&self, outgoing: Vec<Outgoing>) {
        for callback in outgoing {
            self.dispatcher.dispatch(callback);
        }
    }

    /// Signs `response` exactly as serialized and lays out Alipay's envelope.
    fn respond(&self, key: &str, response: &serde_json::Value) -> HttpResponse {
        let raw = response.to_string();
        match self.wallet_key.sign_base64(raw.as_bytes()) {
            Ok(sign) => HttpResponse::Ok()
                .content_type("application/json;charset=utf-8")
                .body(wire::response_body(key, &raw, &sign)),
            Err(_) => HttpResponse::InternalServerError().finish(),
        }
    }

    /// Verifies the public parameters and the signature; answers with the parsed
    /// parameters or the response key and failure to send.
    fn check_request(
        &self,
        query: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, String)>, (String, Outcome)> {
        let error_key = || wire::ERROR_RESPONSE_KEY.to_owned();
        let body = std::str::from_utf8(body).map_err(|_| {
            (
                error_key(),
                invalid_arguments(sub_code::INVALID_CHARSET, "请求不是 UTF-8"),
            )
        })?;
        let mut params = wire::decode_form(query).map_err(|e| {
            (
                error_key(),
                invalid_arguments(sub_code::INVALID_PARAMETER, &e),
            )
        })?;
        for (name, value) in wire::decode_form(body).map_err(|e| {
            (
                error_key(),
                invalid_arguments(sub_code::INVALID_PARAMETER, &e),
            )
        })? {
            if wire::param(&params, &name).is_some() {
                return Err((
                    error_key(),
                    invalid_arguments(sub_code::INVALID_PARAMETER, "参数重复"),
                ));
            }
            params.push((name, value));
        }
        let method = wire::param(&params, "method").ok_or_else(|| {
            (
                error_key(),
                Outcome::failure(
                    code::MISSING_ARGUMENTS,
                    "Missing Required Arguments",
                    sub_code::MISSING_METHOD,
                    "缺少方法名参数",
                ),
            )
        })?;
        const METHODS: [&str; 7] = [
            wire::method::PRECREATE,
            wire::method::PAY,
            wire::method::QUERY,
            wire::method::CLOSE,
            wire::method::CANCEL,
            wire::method::REFUND,
            wire::method::REFUND_QUERY,
        ];
        if !METHODS.contains(&method) {
            return Err((
                error_key(),
                invalid_arguments(sub_code::INVALID_METHOD, "不存在的方法名"),
            ));
        }
        let key = wire::response_key(method);
        let fail = |sub: &str, message: &str| (key.clone(), invalid_arguments(sub, message));
        if wire::param(&params, "app_id") != Some(self.app_id.as_str()) {
            return Err(fail(sub_code::INVALID_APP_ID, "无效的AppID参数"));
        }
        if wire::param(&params, "format").is_some_and(|f| !f.eq_ignore_ascii_case(wire::FORMAT)) {
            return Err(fail(sub_code::INVALID_FORMAT, "无效的数据格式"));
        }
        if !wire::param(&params, "charset").is_some_and(|c| c.eq_ignore_ascii_case(wire::CHARSET)) {
            return Err(fail(sub_code::INVALID_CHARSET, "字符集错误"));
        }
        if wire::param(&params, "sign_type") != Some(wire::SIGN_TYPE) {
            return Err(fail(sub_code::INVALID_SIGNATURE_TYPE, "无效的签名类型"));
        }
        if wire::param(&params, "version") != Some(wire::VERSION) {
            return Err(fail(sub_code::INVALID_VERSION, "版本号错误"));
        }
        let fresh = wire::param(&params, "timestamp")
            .and_then(wire::parse_time)
            .is_some_and(|at| (now - at).num_minutes().abs() <= TIMESTAMP_WINDOW_MINUTES);
        if !fresh {
            return Err(fail(sub_code::INVALID_TIMESTAMP, "非法的时间戳参数"));
        }
        let sign = wire::param(&params, "sign")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                (
                    key.clone(),
                    Outcome::failure(
                        code::MISSING_ARGUMENTS,
                        "Missing Required Arguments",
                        sub_code::MISSING_SIGNATURE,
                        "缺少签名参数",
                    ),
                )
            })?;
        let content =
            wire::request_sign_content(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if self
            .merchant_public_key
            .verify_base64(content.as_bytes(), sign)
            .is_err()
        {
            return Err(fail(
                sub_code::INVALID_SIGNATURE,
                "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配",
            ));
        }
        Ok(params)
    }

    fn precreate(
        self: &Arc<Self>,
        biz: wire::PrecreateBiz,
        notify_url: Option<&str>,
        return_url: Option<&str>,
        now: DateTime<Utc>,
    ) -> Handled {
        if !valid_out_no(&biz.out_trade_no) || biz.subject.is_empty() {
            return Handled::fail(invalid_parameter("out_trade_no 或 subject 无效"));
        }
        let total = match order_amount(&biz.total_amount, biz.trans_currency.as_deref()) {
            Ok(total) => total,
            Err(outcome) => return Handled::fail(outcome),
        };
        let lifetime = match biz.timeout_express.as_deref() {
            None => chrono::Duration::minutes(DEFAULT_TIMEOUT_MINUTES),
            Some(text) => match wire::parse_timeout_express(text) {
                Some(lifetime) => lifetime,
                None => return Handled::fail(invalid_parameter("timeout_express 格式错误")),
            },
        };
        let mut book = lock(&self.book);
        let mut expired = None;
        if let Some(trade) = book.trades.get_mut(&biz.out_trade_no) {
            if trade.expire_if_due(now) {
                expired = self.notification(trade, None, now);
            }
            let answer = match trade.status {
                TradeStatus::WaitBuyerPay
                    if trade.total == total
                        && trade.subject == biz.subject
                        && trade.auth_code.is_none() =>
                {
                    // The same request again: the same QR, as Alipay answers.
                    Handled::ok(&wire::PrecreateResponse {
                        outcome: Outcome::success(),
                        out_trade_no: Some(trade.out_trade_no.clone()),
                        qr_code: Some(self.pay_url(&trade.trade_no)),
                    })
                }
                TradeStatus::WaitBuyerPay => {
                    Handled::fail(business(sub_code::CONTEXT_INCONSISTENT, "交易信息被篡改"))
                }
                TradeStatus::TradeClosed => {
                    Handled::fail(business(sub_code::TRADE_HAS_CLOSE, "交易已经关闭"))
                }
                _ => Handled::fail(business(sub_code::TRADE_HAS_SUCCESS, "交易已被支付")),
            };
            return answer.notifying(expired);
        }
        let trade_no = self.new_trade_no(now);
        let expires_at = now + lifetime;
        book.insert(Trade {
            trade_no: trade_no.clone(),
            out_trade_no: biz.out_trade_no.clone(),
            subject: biz.subject.clone(),
            total,
            merchant_name: merchant_name(biz.extend_params.as_ref()),
            notify_url: notify_url.map(str::to_owned),
            return_url: return_url.map(str::to_owned),
            status: TradeStatus::WaitBuyerPay,
            created_at: now,
            expires_at: Some(expires_at),
            paid_at: None,
            closed_at: None,
            auth_code: None,
            refunds: Vec::new(),
        });
        drop(book);
        self.schedule_expiry(biz.out_trade_no.clone(), expires_at);
        Handled::ok(&wire::PrecreateResponse {
            outcome: Outcome::success(),
            out_trade_no: Some(biz.out_trade_no),
            qr_code: Some(self.pay_url(&trade_no)),
        })
    }

    fn pay(
        self: &Arc<Self>,
        biz: wire::PayBiz,
        notify_url: Option<&str>,
        now: DateTime<Utc>,
    ) -> Handled {
        if !valid_out_no(&biz.out_trade_no) || biz.subject.is_empty() {
            return Handled::fail(invalid_parameter("out_trade_no 或 subject 无效"));
        }
        if biz.scene != wire::SCENE_BAR_CODE {
            return Handled::fail(invalid_parameter("scene 无效"));
        }
        if !valid_auth_code(&biz.auth_code) {
            return Handled::fail(business(
                sub_code::AUTH_CODE_INVALID,
                "支付失败，获取顾客账户信息失败，请顾客刷新付款码后重新收款",
            ));
        }
        let total = match order_amount(&biz.total_amount, biz.trans_currency.as_deref()) {
            Ok(total) => total,
            Err(outcome) => return Handled::fail(outcome),
        };
        let mut book = lock(&self.book);
        if let Some(trade) = book.trades.get(&biz.out_trade_no) {
            return match trade.status {
                TradeStatus::WaitBuyerPay
                    if trade.auth_code.as_deref() == Some(biz.auth_code.as_str())
                        && trade.total == total =>
                {
                    Handled::ok(&trade.trade_response(Outcome {
                        code: code::WAITING_FOR_USER.into(),
                        msg: "order success pay inprocess".into(),
                        sub_code: None,
                        sub_msg: None,
                    }))
                }
                TradeStatus::WaitBuyerPay => {
                    Handled::fail(business(sub_code::CONTEXT_INCONSISTENT, "交易信息被篡改"))
                }
                TradeStatus::TradeClosed if !trade.is_paid() => {
                    Handled::fail(business(sub_code::TRADE_HAS_CLOSE, "交易已经关闭"))
                }
                _ => Handled::fail(business(sub_code::TRADE_HAS_SUCCESS, "交易已被支付")),
            };
        }
        let behaviour = CodeBehaviour::of(&biz.auth_code);
        if behaviour == CodeBehaviour::Declined {
            return Handled::fail(business(sub_code::BUYER_BALANCE_NOT_ENOUGH, "买家余额不足"));
        }
        let mut trade = Trade {
            trade_no: self.new_trade_no(now),
            out_trade_no: biz.out_trade_no.clone(),
            subject: biz.subject.clone(),
            total,
            merchant_name: merchant_name(biz.extend_params.as_ref()),
            notify_url: notify_url.map(str::to_owned),
            return_url: None,
            status: TradeStatus::WaitBuyerPay,
            created_at: now,
            expires_at: None,
            paid_at: None,
            closed_at: None,
            auth_code: Some(biz.auth_code.clone()),
            refunds: Vec::new(),
        };
        if behaviour == CodeBehaviour::NeedsConfirmation {
            let answer = Handled::ok(&trade.trade_response(Outcome {
                code: code::WAITING_FOR_USER.into(),
                msg: "order success pay inprocess".into(),
                sub_code: None,
                sub_msg: None,
            }));
            book.insert(trade);
            drop(book);
            self.schedule_auto_confirm(biz.auth_code, biz.out_trade_no);
            return answer;
        }
        trade.pay(now);
        let answer = Handled::ok(&trade.trade_response(Outcome::success()));
        let notify = self.notification(&trade, None, now);
        book.insert(trade);
        answer.notifying(notify)
    }

    fn query(&self, by: wire::TradeRef, now: DateTime<Utc>) -> Handled {
        let mut book = lock(&self.book);
        let Some(trade) = book.find_mut(&by) else {
            return Handled::fail(business(sub_code::TRADE_NOT_EXIST, "交易不存在"));
        };
        let expired = if trade.expire_if_due(now) {
            self.notification(trade, None, now)
        } else {
            None
        };
        let mut response = trade.trade_response(Outcome::success());
        response.trade_status = Some(trade.status);
        response.gmt_payment = None;
        response.send_pay_date = trade.paid_at.map(wire::format_time);
        Handled::ok(&response).notifying(expired)
    }

    fn close(&self, by: wire::TradeRef, now: DateTime<Utc>) -> Handled {
        let mut book = lock(&self.book);
        let Some(trade) = book.find_mut(&by) else {
            return Handled::fail(business(sub_code::TRADE_NOT_EXIST, "交易不存在"));
        };
        let expired = if trade.expire_if_due(now) {
            self.notification(trade, None, now)
        } else {
            None
        };
        if trade.status != TradeStatus::WaitBuyerPay {
            return Handled::fail(business(sub_code::TRADE_STATUS_ERROR, "交易状态不合法"))
                .notifying(expired);
        }
        trade.close(now);
        let notify = self.notification(trade, None, now);
        Handled::ok(&wire::CloseResponse {
            outcome: Outcome::success(),
            trade_no: Some(trade.trade_no.clone()),
            out_trade_no: Some(trade.out_trade_no.clone()),
        })
        .notifying(notify)
    }

    fn cancel(&self, by: wire::TradeRef, now: DateTime<Utc>) -> Handled {
        let mut book = lock(&self.book);
        let Some(trade) = book.find_mut(&by) else {
            let Some(out_trade_no) = by.out_trade_no.filter(|o| valid_out_no(o)) else {
                return Handled::fail(business(sub_code::TRADE_NOT_EXIST, "交易不存在"));
            };
            // Nothing to cancel: record the number closed so it can never be paid.
            let Ok(zero) = Money::from_minor(0, Currency::Cny) else {
                return Handled::fail(business(sub_code::ACQ_SYSTEM_ERROR, "系统错误"));
            };
            let trade_no = self.new_trade_no(now);
            book.insert(Trade {
                trade_no,
                out_trade_no: out_trade_no.clone(),
                subject: String::new(),
                total: zero,
                merchant_name: String::new(),
                notify_url: None,
                return_url: None,
                status: TradeStatus::TradeClosed,
                created_at: now,
                expires_at: None,
                paid_at: None,
                closed_at: Some(now),
                auth_code: None,
                refunds: Vec::new(),
            });
            return Handled::ok(&wire::CancelResponse {
                outcome: Outcome::success(),
                trade_no: None,
                out_trade_no: Some(out_trade_no),
                retry_flag: Some(wire::Flag::N),
                action: None,
            });
        };
        trade.expire_if_due(now);
        let mut notify = None;
        let action = match trade.status {
            TradeStatus::WaitBuyerPay => {
                trade.close(now);
                notify = self.notification(trade, None, now);
                wire::CancelAction::Close
            }
            TradeStatus::TradeSuccess => {
                let window_over = trade
                    .paid_at
                    .is_some_and(|at| now - at > chrono::Duration::hours(CANCEL_WINDOW_HOURS));
                if window_over {
                    return Handled::fail(business(
                        "ACQ.TRADE_CANCEL_TIME_OUT",
                        "超过撤销时间范围，请使用退款接口",
                    ));
                }
                if !trade.refunds.is_empty() {
                    return Handled::fail(business(
                        "ACQ.REASON_TRADE_REFUND_FEE_ERR",
                        "已经退款的交易不能再撤销",
                    ));
                }
                let reversal = RefundRecord {
                    out_request_no: None,
                    amount: trade.total,
                    at: now,
                };
                trade.refunds.push(reversal.clone());
                trade.close(now);
                notify = self.notification(trade, Some(&reversal), now);
                wire::CancelAction::Refund
            }
            TradeStatus::TradeClosed
                if trade.refunds.iter().any(|r| r.out_request_no.is_none()) =>
            {
                wire::CancelAction::Refund
            }
            TradeStatus::TradeClosed if !trade.is_paid() => wire::CancelAction::Close,
            _ => return Handled::fail(business(sub_code::TRADE_STATUS_ERROR, "交易状态不合法")),
        };
        Handled::ok(&wire::CancelResponse {
            outcome: Outcome::success(),
            trade_no: Some(trade.trade_no.clone()),
            out_trade_no: Some(trade.out_trade_no.clone()),
            retry_flag: Some(wire::Flag::N),
            action: Some(action),
        })
        .notifying(notify)
    }

    fn refund(&self, biz: wire::RefundBiz, now: DateTime<Utc>) -> Handled {
        let by = wire::TradeRef {
            out_trade_no: biz.out_trade_no.clone(),
            trade_no: biz.trade_no.clone(),
        };
        let mut book = lock(&self.book);
        let Some(trade) = book.find_mut(&by) else {
            return Handled::fail(business(sub_code::TRADE_NOT_EXIST, "交易不存在"));
        };
        let Ok(currency) = wire::currency_of(biz.refund_currency.as_deref()) else {
            return Handled::fail(invalid_parameter("refund_currency 不支持"));
        };
        if currency != trade.total.currency() {
            return Handled::fail(invalid_parameter("refund_currency 与交易币种不一致"));
        }
        let Ok(amount) = wire::parse_amount(&biz.refund_amount, currency) else {
            return Handled::fail(invalid_parameter("refund_amount 格式错误"));
        };
        // Without out_request_no Alipay treats the order number as the refund number.
        let request_no = biz
            .out_request_no
            .clone()
            .unwrap_or_else(|| trade.out_trade_no.clone());
        let answer = |trade: &Trade, fund_change: wire::FundChange| wire::RefundResponse {
            outcome: Outcome::success(),
            trade_no: Some(trade.trade_no.clone()),
            out_trade_no: Some(trade.out_trade_no.clone()),
            buyer_logon_id: Some(BUYER_LOGON_ID.into()),
            fund_change: Some(fund_change),
            refund_fee: Some(wire::amount_string(&trade.refunded())),
            refund_currency: wire::trans_currency(currency),
            gmt_refund_pay: Some(wire::format_time(now)),
        };
        if let Some(existing) = trade
            .refunds
            .iter()
            .find(|r| r.out_request_no.as_deref() == Some(request_no.as_str()))
        {
            if existing.amount != amount {
                return Handled::fail(business(sub_code::CONTEXT_INCONSISTENT, "交易信息被篡改"));
            }
            return Handled::ok(&answer(trade, wire::FundChange::N));
        }
        if !trade.is_paid() {
            return Handled::fail(business(sub_code::TRADE_STATUS_ERROR, "交易状态不合法"));
        }
        if trade.status == TradeStatus::TradeFinished {
            return Handled::fail(business("ACQ.TRADE_HAS_FINISHED", "交易已完结"));
        }
        if trade.refunded().minor() + amount.minor() > trade.total.minor() {
            return Handled::fail(business(sub_code::REFUND_AMOUNT_EXCEEDED, "退款金额超限"));
        }
        let record = RefundRecord {
            out_request_no: Some(request_no),
            amount,
            at: now,
        };
        trade.refunds.push(record.clone());
        if trade.refunded() == trade.total {
            // A full refund closes the trade (wallets.md §1.9).
            trade.close(now);
        }
        let notify = self.notification(trade, Some(&record), now);
        Handled::ok(&answer(trade, wire::FundChange::Y)).notifying(notify)
    }

    fn refund_query(&self, biz: wire::RefundQueryBiz) -> Handled {
        let by = wire::TradeRef {
            out_trade_no: biz.out_trade_no.clone(),
            trade_no: biz.trade_no.clone(),
        };
        let mut book = lock(&self.book);
        let Some(trade) = book.find_mut(&by) else {
            return Handled::fail(business(sub_code::TRADE_NOT_EXIST, "交易不存在"));
        };
        let found = trade
            .refunds
            .iter()
            .find(|r| r.out_request_no.as_deref() == Some(biz.out_request_no.as_str()));
        Handled::ok(&wire::RefundQueryResponse {
            outcome: Outcome::success(),
            trade_no: Some(trade.trade_no.clone()),
            out_trade_no: Some(trade.out_trade_no.clone()),
            out_request_no: Some(biz.out_request_no.clone()),
            refund_amount: found.map(|r| wire::amount_string(&r.amount)),
            total_amount: found.map(|_| wire::amount_string(&trade.total)),
            refund_status: found.map(|_| wire::RefundStatus::RefundSuccess),
            trans_currency: found.and(wire::trans_currency(trade.total.currency())),
        })
    }

    /// Dispatches one verified request to its method.
    fn handle(self: &Arc<Self>, params: &[(String, String)], now: DateTime<Utc>) -> Handled {
        fn biz<T: serde::de::DeserializeOwned>(params: &[(String, String)]) -> Result<T, Handled> {
            let text = wire::param(params, "biz_content").unwrap_or_default();
            serde_json::from_str(text).map_err(|_| {
                Handled::fail(invalid_arguments(
                    sub_code::INVALID_PARAMETER,
                    "biz_content 无效",
                ))
            })
        }
        let notify_url = wire::param(params, "notify_url").filter(|u| !u.is_empty());
        let return_url = wire::param(params, "return_url").filter(|u| !u.is_empty());
        let handled = match wire::param(params, "method").unwrap_or_default() {
            wire::method::PRECREATE => {
                biz(params).map(|b| self.precreate(b, notify_url, return_url, now))
            }
            wire::method::PAY => biz(params).map(|b| self.pay(b, notify_url, now)),
            wire::method::QUERY => biz(params).map(|b| self.query(b, now)),
            wire::method::CLOSE => biz(params).map(|b| self.close(b, now)),
            wire::method::CANCEL => biz(params).map(|b| self.cancel(b, now)),
            wire::method::REFUND => biz(params).map(|b| self.refund(b, now)),
            wire::method::REFUND_QUERY => biz(params).map(|b| self.refund_query(b)),
            _ => Err(Handled::fail(invalid_arguments(
                sub_code::INVALID_METHOD,
                "不存在的方法名",
            ))),
        };
        handled.unwrap_or_else(|failure| failure)
    }

    fn schedule_expiry(self: &Arc<Self>, out_trade_no: String, at: DateTime<Utc>) {
        let sandbox = Arc::downgrade(self);
        let delay = (at - Utc::now()).to_std().unwrap_or_default();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(sandbox) = sandbox.upgrade() else {
                return;
            };
            let now = Utc::now();
            let notify = {
                let mut book = lock(&sandbox.book);
                book.trades.get_mut(&out_trade_no).and_then(|trade| {
                    if trade.expire_if_due(now) {
                        sandbox.notification(trade, None, now)
                    } else {
                        None
                    }
                })
            };
            sandbox.dispatch_all(notify.into_iter().collect());
        });
    }

    fn schedule_auto_confirm(self: &Arc<Self>, auth_code: String, out_trade_no: String) {
        let sandbox = Arc::downgrade(self);
        let delay = self.time.scale(*lock(&self.confirm_after));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(sandbox) = sandbox.upgrade() {
                sandbox.confirm_pending_code(&auth_code, Some(&out_trade_no));
            }
        });
    }

    /// Pays the pending bar-code trade of `auth_code`; the trade as it now stands.
    fn confirm_pending_code(
        &self,
        auth_code: &str,
        out_trade_no: Option<&str>,
    ) -> Option<(String, String, TradeStatus)> {
        let now = Utc::now();
        let mut book = lock(&self.book);
        let trade = book
            .trades
            .values_mut()
            .filter(|t| t.auth_code.as_deref() == Some(auth_code))
            .filter(|t| out_trade_no.is_none_or(|o| o == t.out_trade_no))
            .max_by_key(|t| (t.status == TradeStatus::WaitBuyerPay, t.created_at))?;
        let mut notify = None;
        if trade.status == TradeStatus::WaitBuyerPay {
            trade.pay(now);
            notify = self.notification(trade, None, now);
        }
        let state = (
            trade.out_trade_no.clone(),
            trade.trade_no.clone(),
            trade.status,
        );
        drop(book);
        self.dispatch_all(notify.into_iter().collect());
        Some(state)
    }

    /// The cashier's Pay / Cancel: the trade after the action, or why it failed.
    fn cashier_action(&self, trade_no: &str, pay: bool) -> Result<Trade, (StatusCode, String)> {
        let now = Utc::now();
        let mut book = lock(&self.book);
        let Some(trade) = book.by_trade_no_mut(trade_no) else {
            return Err((StatusCode::NOT_FOUND, "No such payment.".into()));
        };
        let mut notify = None;
        if trade.expire_if_due(now) {
            notify = self.notification(trade, None, now);
        }
        let result = match (trade.status, pay) {
            (TradeStatus::WaitBuyerPay, true) => {
                trade.pay(now);
                notify = self.notification(trade, None, now);
                Ok(trade.clone())
            }
            (TradeStatus::WaitBuyerPay, false) => {
                trade.close(now);
                notify = self.notification(trade, None, now);
                Ok(trade.clone())
            }
            (TradeStatus::TradeSuccess | TradeStatus::TradeFinished, true) => Ok(trade.clone()),
            (TradeStatus::TradeClosed, false) if !trade.is_paid() => Ok(trade.clone()),
            (status, _) => Err((
                StatusCode::CONFLICT,
                format!("This payment is {}.", status.as_str()),
            )),
        };
        drop(book);
        self.dispatch_all(notify.into_iter().collect());
        result
    }

    fn statement_csv(&self, date: NaiveDate) -> String {
        const HEADER: &str = "支付宝交易号/trade_no,商户订单号/out_trade_no,业务类型/type,商品名称/subject,\
创建时间/gmt_create,完成时间/gmt_finish,订单金额/total_amount,退款金额/refund_amount,\
币种/currency,退款批次号/out_request_no,状态/status";
        let on_date = |at: DateTime<Utc>| at.with_timezone(&wire::BEIJING).date_naive() == date;
        let mut rows: Vec<(DateTime<Utc>, String)> = Vec::new();
        let book = lock(&self.book);
        for trade in book.trades.values() {
            let total = wire::amount_string(&trade.total);
            let currency = trade.total.currency().code();
            let created = wire::format_time(trade.created_at);
            if let Some(paid_at) = trade.paid_at.filter(|at| on_date(*at)) {
                let fields = [
                    trade.trade_no.as_str(),
                    &trade.out_trade_no,
                    "交易/trade",
                    &trade.subject,
                    &created,
                    &wire::format_time(paid_at),
                    &total,
                    "",
                    currency,
                    "",
                    "TRADE_SUCCESS",
                ];
                rows.push((paid_at, csv_row(&fields)));
            }
            for refund in trade.refunds.iter().filter(|r| on_date(r.at)) {
                let fields = [
                    trade.trade_no.as_str(),
                    &trade.out_trade_no,
                    "退款/refund",
                    &trade.subject,
                    &created,
                    &wire::format_time(refund.at),
                    &total,
                    &wire::amount_string(&refund.amount),
                    currency,
                    refund.out_request_no.as_deref().unwrap_or(""),
                    "REFUND_SUCCESS",
                ];
                rows.push((refund.at, csv_row(&fields)));
            }
        }
        rows.sort();
        let mut csv = String::from(HEADER);
        csv.push('\n');
        for (_, row) in rows {
            csv.push_str(&row);
            csv.push('\n');
        }
        csv
    }
}

fn csv_row(fields: &[&str]) -> String {
    let mut row = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            row.push(',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            let _ = write!(row, "\"{}\"", field.replace('"', "\"\""));
        } else {
            row.push_str(field);
        }
    }
    row
}

fn small_page(status: StatusCode, title: &str, text: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{title}</title></head>\
<body style=\"font-family:sans-serif;max-width:26rem;margin:2rem auto\">\
<p style=\"color:#a00;font-size:.8rem\">Alipay SANDBOX — no real money moves</p>\
<h1 id=\"result\">{title}</h1><p>{text}</p></body></html>",
            title = escape(title),
            text = escape(text),
        ))
}

fn see_other(url: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, url.to_owned()))
        .finish()
}

// ---------------------------------------------------------------------------------
// Routes

async fn gateway(
    sandbox: web::Data<AlipaySandbox>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if sandbox.faults.gate().await {
        let busy = Outcome::failure(
            code::UNKNOWN,
            "Service Currently Unavailable",
            sub_code::SERVICE_BUSY,
            "系统繁忙",
        );
        let body = serde_json::json!({ wire::ERROR_RESPONSE_KEY: busy });
        return HttpResponse::InternalServerError()
            .content_type("application/json;charset=utf-8")
            .body(body.to_string());
    }
    if let Some(answer) = sandbox.faults.take_http_status() {
        return answer;
    }
    let sandbox = sandbox.into_inner();
    let now = Utc::now();
    let params = match sandbox.check_request(request.query_string(), &body, now) {
        Ok(params) => params,
        Err((key, outcome)) => {
            return sandbox.respond(&key, &serde_json::to_value(&outcome).unwrap_or_default());
        }
    };
    let key = wire::response_key(wire::param(&params, "method").unwrap_or_default());
    let handled = sandbox.handle(&params, now);
    sandbox.dispatch_all(handled.notify);
    sandbox.respond(&key, &handled.response)
}

async fn cashier(sandbox: web::Data<AlipaySandbox>, path: web::Path<String>) -> HttpResponse {
    let trade_no = path.into_inner();
    let now = Utc::now();
    let (trade, notify) = {
        let mut book = lock(&sandbox.book);
        let Some(trade) = book.by_trade_no_mut(&trade_no) else {
            return small_page(StatusCode::NOT_FOUND, "Not found", "No such payment.");
        };
        let notify = if trade.expire_if_due(now) {
            sandbox.notification(trade, None, now)
        } else {
            None
        };
        (trade.clone(), notify)
    };
    sandbox.dispatch_all(notify.into_iter().collect());
    if trade.status != TradeStatus::WaitBuyerPay {
        return small_page(
            StatusCode::OK,
            "Nothing to pay",
            &format!("This payment is {}.", trade.status.as_str()),
        );
    }
    let base = sandbox.pay_url(&trade.trade_no);
    pay_page(
        "Alipay",
        &trade.merchant_name,
        &trade.total.to_string(),
        &trade.subject,
        &format!("{base}/confirm"),
        &format!("{base}/cancel"),
    )
}

async fn cashier_confirm(
    sandbox: web::Data<AlipaySandbox>,
    path: web::Path<String>,
) -> HttpResponse {
    match sandbox.cashier_action(&path.into_inner(), true) {
        Ok(trade) => match trade.return_url.as_deref() {
            Some(url) => see_other(url),
            None => small_page(
                StatusCode::OK,
                "Paid",
                &format!("{} paid to {}.", trade.total, trade.merchant_name),
            ),
        },
        Err((status, text)) => small_page(status, "Not paid", &text),
    }
}

async fn cashier_cancel(
    sandbox: web::Data<AlipaySandbox>,
    path: web::Path<String>,
) -> HttpResponse {
    match sandbox.cashier_action(&path.into_inner(), false) {
        Ok(trade) => match trade.return_url.as_deref() {
            Some(url) => see_other(url),
            None => small_page(StatusCode::OK, "Cancelled", "The payment was cancelled."),
        },
        Err((status, text)) => small_page(status, "Not cancelled", &text),
    }
}

#[derive(Debug, Serialize)]
struct TestCode {
    code: String,
    behaviour: CodeBehaviour,
}

async fn test_codes(sandbox: web::Data<AlipaySandbox>) -> HttpResponse {
    let codes: Vec<TestCode> = [
        CodeBehaviour::PaysAtOnce,
        CodeBehaviour::NeedsConfirmation,
        CodeBehaviour::Declined,
    ]
    .into_iter()
    .map(|behaviour| TestCode {
        code: test_code(CODE_PREFIX, CODE_LENGTH, behaviour, sandbox.next_serial()),
        behaviour,
    })
    .collect();
    HttpResponse::Ok().json(codes)
}

async fn code_confirm(sandbox: web::Data<AlipaySandbox>, path: web::Path<String>) -> HttpResponse {
    match sandbox.confirm_pending_code(&path.into_inner(), None) {
        Some((out_trade_no, trade_no, status)) => HttpResponse::Ok().json(serde_json::json!({
            "out_trade_no": out_trade_no,
            "trade_no": trade_no,
            "trade_status": status,
        })),
        None => HttpResponse::NotFound().json(serde_json::json!({
            "error": "no charge was made with this code",
        })),
    }
}

#[derive(Debug, Deserialize)]
struct StatementQuery {
    date: String,
}

async fn statement(
    sandbox: web::Data<AlipaySandbox>,
    query: web::Query<StatementQuery>,
) -> HttpResponse {
    let Ok(date) = NaiveDate::parse_from_str(&query.date, "%Y-%m-%d") else {
        return HttpResponse::BadRequest().json(serde_json::json!({
            "error": "date must be YYYY-MM-DD (Beijing time)",
        }));
    };
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"alipay-{date}.csv\""),
        ))
        .body(sandbox.statement_csv(date))
}

// ---------------------------------------------------------------------------------
// Local wiring

fn key_error(e: crypto::CryptoError) -> AdapterError {
    AdapterError::Malformed(format!("local alipay keys: {e}"))
}

/// An owned copy of a private key (LocalKeys lends its keys by reference).
fn copy_key(key: &RsaPrivateKey) -> Result<RsaPrivateKey, AdapterError> {
    RsaPrivateKey::from_pem(&key.to_pkcs8_pem().map_err(key_error)?).map_err(key_error)
}

/// The adapter configuration that talks to a local sandbox at `public_base_url`
/// (tests adjust its timeouts or keys before [`AlipayAdapter::new`]).
pub fn local_config(public_base_url: &str, keys: &LocalKeys) -> Result<AlipayConfig, AdapterError> {
    let mut config = AlipayConfig::new(
        public_base_url.trim_end_matches('/'),
        LOCAL_APP_ID,
        copy_key(&keys.merchant)?,
        keys.wallet.public_key().map_err(key_error)?,
    );
    config.seller_id = Some(SELLER_ID.to_owned());
    Ok(config)
}

/// A sandbox reachable at `public_base_url` and an adapter configured to talk to it.
pub fn local(
    public_base_url: &str,
    keys: &LocalKeys,
    time: TimeScale,
) -> Result<(AlipayAdapter, Arc<AlipaySandbox>), AdapterError> {
    let sandbox = AlipaySandbox::new(
        public_base_url,
        LOCAL_APP_ID,
        copy_key(&keys.wallet)?,
        keys.merchant.public_key().map_err(key_error)?,
        time,
    );
    let adapter = AlipayAdapter::new(local_config(public_base_url, keys)?)?;
    Ok((adapter, sandbox))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(
            csv_row(&["a", "b,c", "say \"hi\"", ""]),
            "a,\"b,c\",\"say \"\"hi\"\"\","
        );
    }

    #[test]
    fn an_unpaid_trade_closes_at_its_deadline_and_a_paid_one_never_does() {
        let now = Utc::now();
        let mut trade = Trade {
            trade_no: "T1".into(),
            out_trade_no: "SO1".into(),
            subject: "Tea".into(),
            total: Money::parse("1.00", Currency::Cny).unwrap(),
            merchant_name: "Shop".into(),
            notify_url: None,
            return_url: None,
            status: TradeStatus::WaitBuyerPay,
            created_at: now,
            expires_at: Some(now + chrono::Duration::minutes(1)),
            paid_at: None,
            closed_at: None,
            auth_code: None,
            refunds: Vec::new(),
        };
        assert!(!trade.expire_if_due(now));
        let mut paid = trade.clone();
        assert!(trade.expire_if_due(now + chrono::Duration::minutes(1)));
        assert_eq!(trade.status, TradeStatus::TradeClosed);
        assert!(
            !trade.expire_if_due(now + chrono::Duration::minutes(2)),
            "only once"
        );
        paid.pay(now);
        assert!(!paid.expire_if_due(now + chrono::Duration::hours(1)));
        assert_eq!(paid.status, TradeStatus::TradeSuccess);
    }

    #[test]
    fn retry_schedule_is_alipays() {
        let minutes: Vec<u64> = retry_schedule().iter().map(|d| d.as_secs() / 60).collect();
        assert_eq!(minutes, vec![4, 10, 10, 60, 120, 360, 900]);
    }

    #[test]
    fn auth_codes_follow_alipays_shape() {
        assert!(valid_auth_code("280000000000010000"));
        assert!(valid_auth_code("2500000000000000"));
        assert!(!valid_auth_code("130000000000010000"));
        assert!(!valid_auth_code("280000000000010"));
        assert!(!valid_auth_code("28000000000001000a"));
        let issued = test_code(CODE_PREFIX, CODE_LENGTH, CodeBehaviour::Declined, 7);
        assert!(valid_auth_code(&issued) && issued.starts_with("28") && issued.len() == 18);
    }
}
