//! WeChat Pay sandbox: the wallet's side of the same protocol, for local mode and
//! tests. It verifies our API v3 `Authorization` and v2 `sign` exactly as WeChat
//! does (answering `SIGN_ERROR` / `签名错误`), signs every answer and callback with
//! its own wallet key, encrypts callback resources with the APIv3 key, keeps an
//! in-memory order and refund book, serves the cashier (`/pay/{out_trade_no}`), the
//! in-WeChat pieces (OAuth authorize and token, a JS-bridge stand-in that checks
//! `paySign`), customer-code charges with shopper confirmation, a daily bill, and
//! the kit's fault routes.
//!
//! Must never: be mounted in production, sign with the merchant's key, or accept a
//! request whose signature it did not check.
//!
//! Sandbox simplifications (documented, not WeChat behaviour): refunds succeed at
//! once (`status: SUCCESS`, then a `REFUND.SUCCESS` callback when a `notify_url` was
//! given) where WeChat usually answers `PROCESSING`; MOP and HKD are accepted on the
//! mainland paths; `notify_url` may be `http://`; an unpaid order past `time_expire`
//! reads as `CLOSED`; `reverse` of an order it never saw records a `REVOKED`
//! tombstone so a late charge with that number is refused (`ORDERREVERSED`); the
//! client certificate `reverse` needs in production is not checked. Callback
//! headers are signed once per callback and reused on every retry (the kit's
//! dispatcher resends the same bytes), so in real time a retry more than five
//! minutes after the first attempt fails the receiver's timestamp window.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::json;

use super::wire::{self, Authorization, EventType, SecretText, SignType, TradeState, TradeType};
use super::{
    LOCAL_APPID, LOCAL_MCHID, SIGNATURE_WINDOW_SECS, WechatPayAdapter, WechatPayConfig,
    copy_private_key, local_api_v2_key, local_app_secret, local_merchant_serial,
    local_wallet_key_id,
};
use crate::contract::AdapterError;
use crate::crypto::{self, Aes256GcmKey, RsaPrivateKey, RsaPublicKey};
use crate::money::{Currency, Money};
use crate::sandbox::{
    CodeBehaviour, Dispatcher, Faults, LocalKeys, Outgoing, Resign, TimeScale, escape,
    fault_routes, pay_page, test_code,
};

/// Mainland callback retry schedule after the first attempt (wallets.md §3.5):
/// 15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h.
pub const RETRY_SCHEDULE_SECS: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
];

/// A pending customer-code charge confirms itself after this (wallet time).
pub const AUTO_CONFIRM: Duration = Duration::from_secs(10);

/// OAuth codes live five minutes (real time: a browser round trip, not a schedule).
const OAUTH_CODE_TTL_SECS: i64 = 300;

/// Customer payment codes: 18 digits starting `10`..`15` (wallets.md §6); the
/// sandbox issues `13...`.
const CODE_PREFIX: &str = "13";
const CODE_LEN: usize = 18;

const ACCEPTED_CURRENCIES: [Currency; 3] = [Currency::Cny, Currency::Mop, Currency::Hkd];

#[derive(Debug, Clone)]
struct Order {
    out_trade_no: String,
    transaction_id: String,
    trade_type: TradeType,
    state: TradeState,
    description: String,
    total: i64,
    currency: Currency,
    notify_url: Option<String>,
    time_expire: Option<DateTime<Utc>>,
    paid_at: Option<DateTime<Utc>>,
    reversed_at: Option<DateTime<Utc>>,
    pr: Option<String>,
    prepay_id: Option<String>,
    openid: Option<String>,
    auth_code: Option<String>,
    refunded: i64,
}

impl Order {
    fn is_paid(&self) -> bool {
        matches!(self.state, TradeState::Success | TradeState::Refund)
    }

    /// An unpaid order past `time_expire` can no longer be paid.
    fn expire(&mut self, now: DateTime<Utc>) {
        if self.state == TradeState::Notpay && self.time_expire.is_some_and(|t| now > t) {
            self.state = TradeState::Closed;
        }
    }

    fn money(&self, minor: i64) -> String {
        Money::from_minor(minor, self.currency)
            .map(|m| m.to_decimal_string())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
struct RefundRecord {
    refund_id: String,
    out_refund_no: String,
    out_trade_no: String,
    transaction_id: String,
    refund: i64,
    total: i64,
    currency: Currency,
    created_at: DateTime<Utc>,
}

#[derive(Debug)]
struct OauthCode {
    openid: String,
    issued_at: DateTime<Utc>,
    used: bool,
}

#[derive(Debug, Default)]
struct Book {
    orders: HashMap<String, Order>,
    refunds: HashMap<String, RefundRecord>,
    oauth_codes: HashMap<String, OauthCode>,
    openids: HashSet<String>,
}

/// The WeChat Pay sandbox. Build with [`WechatPaySandbox::new`] (or [`local`]) and
/// mount with [`WechatPaySandbox::configure`].
pub struct WechatPaySandbox {
    appid: String,
    mchid: String,
    merchant_serial_no: String,
    merchant_public_key: RsaPublicKey,
    /// Shared with the callbacks' re-signing hooks.
    wallet_key: Arc<RsaPrivateKey>,
    wallet_key_id: String,
    api_v3_key: Aes256GcmKey,
    api_v2_key: SecretText,
    app_secret: SecretText,
    book: Mutex<Book>,
    faults: Arc<Faults>,
    dispatcher: Dispatcher,
    time: TimeScale,
    public_base_url: String,
    serial: AtomicU64,
}

impl std::fmt::Debug for WechatPaySandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatPaySandbox")
            .field("appid", &self.appid)
            .field("mchid", &self.mchid)
            .field("public_base_url", &self.public_base_url)
            .finish_non_exhaustive()
    }
}

/// Builds a sandbox at `public_base_url` (e.g. `http://127.0.0.1:8080/sandbox/wechat_pay`)
/// and an adapter configured to talk to it, from the same local keys. The adapter's
/// micropay polling is compressed by `time` like the sandbox's own clocks.
pub fn local(
    public_base_url: &str,
    keys: &LocalKeys,
    time: TimeScale,
) -> Result<(WechatPayAdapter, Arc<WechatPaySandbox>), AdapterError> {
    let sandbox = Arc::new(WechatPaySandbox::new(public_base_url, keys, time)?);
    let mut config = WechatPayConfig::local(public_base_url, keys)?;
    config.micropay_poll_interval = time.scale(config.micropay_poll_interval);
    config.micropay_wait = time.scale(config.micropay_wait);
    Ok((WechatPayAdapter::new(config)?, sandbox))
}

fn lock(book: &Mutex<Book>) -> MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a v3 handler answers; [`WechatPaySandbox::respond`] signs it.
enum V3 {
    Json(u16, serde_json::Value),
    NoContent,
    Error(u16, &'static str, String),
}

fn param_error(message: impl Into<String>) -> V3 {
    V3::Error(400, "PARAM_ERROR", message.into())
}

fn valid_out_no(id: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'))
}

fn is_wechat_code(code: &str) -> bool {
    code.len() == CODE_LEN
        && code.bytes().all(|b| b.is_ascii_digit())
        && matches!(code.get(..2), Some("10" | "11" | "12" | "13" | "14" | "15"))
}

fn parse_currency(code: Option<&str>) -> Option<Currency> {
    let currency = match code {
        None => Currency::Cny,
        Some(c) => Currency::parse(c).ok()?,
    };
    ACCEPTED_CURRENCIES.contains(&currency).then_some(currency)
}

fn state_desc(state: TradeState) -> &'static str {
    match state {
        TradeState::Success => "支付成功",
        TradeState::Refund => "转入退款",
        TradeState::Notpay => "订单未支付",
        TradeState::Closed => "订单已关闭",
        TradeState::Revoked => "已撤销（付款码支付）",
        TradeState::Userpaying => "用户支付中（付款码支付）",
        TradeState::Payerror => "支付失败",
        TradeState::Unknown => "未知状态",
    }
}

fn wire_name<T: serde::Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn html(status: actix_web::http::StatusCode, title: &str, text: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\
<body><p>WeChat Pay SANDBOX</p><h1 id=\"result\">{t}</h1><p>{x}</p></body></html>",
            t = escape(title),
            x = escape(text)
        ))
}

/// Signs `body` the way WeChat signs answers and callbacks: the current timestamp and
/// a fresh nonce, so no two signatures repeat.
fn signature_headers(
    key: &RsaPrivateKey,
    key_id: &str,
    body: &[u8],
) -> Option<Vec<(String, String)>> {
    let timestamp = Utc::now().timestamp().to_string();
    let nonce = wire::nonce_str(32).ok()?;
    let signature = key
        .sign_base64(&wire::wechatpay_message(&timestamp, &nonce, body))
        .ok()?;
    Some(vec![
        ("Wechatpay-Timestamp".into(), timestamp),
        ("Wechatpay-Nonce".into(), nonce),
        ("Wechatpay-Signature".into(), signature),
        ("Wechatpay-Serial".into(), key_id.to_owned()),
    ])
}

/// The full header list of one callback attempt.
fn callback_headers(
    key: &RsaPrivateKey,
    key_id: &str,
    body: &[u8],
) -> Option<Vec<(String, String)>> {
    let mut headers = signature_headers(key, key_id, body)?;
    headers.push(("Content-Type".into(), "application/json".into()));
    Some(headers)
}

/// WeChat stops retrying on 200/204 with no body (or the older `{"code":"SUCCESS"}`).
fn wechat_acked(status: u16, body: &[u8]) -> bool {
    if status != 200 && status != 204 {
        return false;
    }
    body.is_empty()
        || serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .is_some_and(|v| v.get("code").and_then(|c| c.as_str()) == Some("SUCCESS"))
}

impl WechatPaySandbox {
    pub fn new(
        public_base_url: &str,
        keys: &LocalKeys,
        time: TimeScale,
    ) -> Result<WechatPaySandbox, AdapterError> {
        let key_error =
            |e: crypto::CryptoError| AdapterError::Malformed(format!("sandbox keys: {e}"));
        let merchant_public_key = keys.merchant.public_key().map_err(key_error)?;
        let wallet_public = keys.wallet.public_key().map_err(key_error)?;
        let faults = Arc::new(Faults::default());
        let schedule = RETRY_SCHEDULE_SECS
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect();
        Ok(WechatPaySandbox {
            appid: LOCAL_APPID.to_owned(),
            mchid: LOCAL_MCHID.to_owned(),
            merchant_serial_no: local_merchant_serial(&merchant_public_key),
            merchant_public_key,
            wallet_key: Arc::new(copy_private_key(&keys.wallet)?),
            wallet_key_id: local_wallet_key_id(&wallet_public),
            api_v3_key: Aes256GcmKey::new(&keys.secret).map_err(key_error)?,
            api_v2_key: local_api_v2_key(&keys.secret),
            app_secret: local_app_secret(&keys.secret),
            book: Mutex::new(Book::default()),
            dispatcher: Dispatcher::new(schedule, time, faults.clone()),
            faults,
            time,
            public_base_url: public_base_url.trim_end_matches('/').to_owned(),
            serial: AtomicU64::new(1),
        })
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Registers every route, relative to where the caller mounts the sandbox:
    /// API v3 `POST /v3/pay/transactions/{native,jsapi}`,
    /// `GET /v3/pay/transactions/out-trade-no/{no}?mchid=`, `GET /v3/pay/transactions/id/{id}?mchid=`,
    /// `POST /v3/pay/transactions/out-trade-no/{no}/close`, `POST /v3/refund/domestic/refunds`,
    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`; API v2 `POST /pay/micropay`,
    /// `POST /pay/orderquery`, `POST /secapi/pay/reverse`; OAuth `GET /connect/oauth2/authorize`,
    /// `GET /sns/oauth2/access_token`; shopper side `POST /jsbridge/getBrandWCPayRequest`,
    /// `GET /bizpayurl?pr=`, `GET /pay/{no}`, `POST /pay/{no}/confirm`, `POST /pay/{no}/cancel`,
    /// `GET /test-codes`, `POST /codes/{code}/confirm`; `GET /statement?date=YYYY-MM-DD`;
    /// and the kit's `/faults`, `/callbacks/release`, `/deliveries`.
    pub fn configure(self: &Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::from(self.clone()))
            .route("/v3/pay/transactions/native", web::post().to(native))
            .route("/v3/pay/transactions/jsapi", web::post().to(jsapi))
            .route(
                "/v3/pay/transactions/out-trade-no/{out_trade_no}",
                web::get().to(query_by_out_trade_no),
            )
            .route(
                "/v3/pay/transactions/id/{transaction_id}",
                web::get().to(query_by_transaction_id),
            )
            .route(
                "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
                web::post().to(close),
            )
            .route("/v3/refund/domestic/refunds", web::post().to(create_refund))
            .route(
                "/v3/refund/domestic/refunds/{out_refund_no}",
                web::get().to(query_refund),
            )
            .route("/pay/micropay", web::post().to(micropay))
            .route("/pay/orderquery", web::post().to(orderquery))
            .route("/secapi/pay/reverse", web::post().to(reverse))
            .route("/connect/oauth2/authorize", web::get().to(oauth_authorize))
            .route(
                "/sns/oauth2/access_token",
                web::get().to(oauth_access_token),
            )
            .route(
                "/jsbridge/getBrandWCPayRequest",
                web::post().to(jsbridge_pay),
            )
            .route("/bizpayurl", web::get().to(bizpayurl))
            .route("/pay/{out_trade_no}", web::get().to(cashier))
            .route(
                "/pay/{out_trade_no}/confirm",
                web::post().to(cashier_confirm),
            )
            .route("/pay/{out_trade_no}/cancel", web::post().to(cashier_cancel))
            .route("/test-codes", web::get().to(test_codes))
            .route("/codes/{code}/confirm", web::post().to(code_confirm))
            .route("/statement", web::get().to(statement));
        fault_routes(cfg, self.faults.clone(), self.dispatcher.clone());
    }

    fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }

    /// `4200` + Beijing date + 16 digits: the 28-digit shape of WeChat order ids.
    fn new_transaction_id(&self, now: DateTime<Utc>) -> String {
        let date = wire::beijing_date(now).format("%Y%m%d");
        format!("4200{date}{:016}", self.next_serial())
    }

    fn random_token(&self, len: usize) -> String {
        wire::nonce_str(len).unwrap_or_else(|_| format!("{:0>len$}", self.next_serial()))
    }

    // -----------------------------------------------------------------------------
    // API v3 signatures
    // -----------------------------------------------------------------------------

    /// Checks our `Authorization` as WeChat does: scheme and attributes, merchant,
    /// certificate serial, a timestamp within five minutes, and the RSA signature over
    /// method, path and query as received, timestamp, nonce and the exact body.
    fn verify_request(&self, req: &HttpRequest, body: &[u8]) -> Result<(), String> {
        let header = req
            .headers()
            .get("Authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or("Authorization header missing")?;
        let auth = Authorization::parse(header)?;
        if auth.mchid != self.mchid {
            return Err("mchid does not match the signing merchant".into());
        }
        if auth.serial_no != self.merchant_serial_no {
            return Err("serial_no is not the merchant's API certificate".into());
        }
        let timestamp: i64 = auth
            .timestamp
            .parse()
            .map_err(|_| "timestamp is not unix seconds")?;
        if (Utc::now().timestamp() - timestamp).abs() > SIGNATURE_WINDOW_SECS {
            return Err("timestamp outside the five-minute window".into());
        }
        let canonical = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| req.path().to_owned());
        let body = std::str::from_utf8(body).map_err(|_| "body is not UTF-8")?;
        let message = wire::request_message(
            req.method().as_str(),
            &canonical,
            &auth.timestamp,
            &auth.nonce_str,
            body,
        );
        self.merchant_public_key
            .verify_base64(message.as_bytes(), &auth.signature)
            .map_err(|_| "signature does not verify with the merchant certificate".to_owned())
    }

    /// Signs `body` the way WeChat signs answers and callbacks.
    fn signature_headers(&self, body: &[u8]) -> Option<Vec<(String, String)>> {
        signature_headers(&self.wallet_key, &self.wallet_key_id, body)
    }

    fn respond(&self, answer: V3) -> HttpResponse {
        let (status, body) = match answer {
            V3::Json(status, value) => (status, value.to_string().into_bytes()),
            V3::NoContent => (204, Vec::new()),
            V3::Error(status, code, message) => (
                status,
                json!({"code": code, "message": message})
                    .to_string()
                    .into_bytes(),
            ),
        };
        let Some(headers) = self.signature_headers(&body) else {
            return HttpResponse::InternalServerError()
                .json(json!({"code": "SYSTEM_ERROR", "message": "sandbox could not sign"}));
        };
        let status = actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::OK);
        let mut response = HttpResponse::build(status);
        for (name, value) in headers {
            response.insert_header((name, value));
        }
        response.insert_header(("Request-ID", format!("08{:030}", self.next_serial())));
        if body.is_empty() {
            response.finish()
        } else {
            response.content_type("application/json").body(body)
        }
    }

    /// Faults first, then our signature; `Err` is the answer to send.
    async fn admit_v3(&self, req: &HttpRequest, body: &[u8]) -> Result<(), HttpResponse> {
        if self.faults.gate().await {
            // Injected outage: unsigned, like a failing gateway in front of WeChat.
            return Err(HttpResponse::InternalServerError().json(
                json!({"code": "SYSTEM_ERROR", "message": "系统错误 (sandbox fault injection)"}),
            ));
        }
        if let Some(answer) = self.faults.take_http_status() {
            return Err(answer);
        }
        self.verify_request(req, body)
            .map_err(|why| self.respond(V3::Error(401, "SIGN_ERROR", format!("签名错误: {why}"))))
    }

    // -----------------------------------------------------------------------------
    // API v3 operations
    // -----------------------------------------------------------------------------

    fn create_prepay(&self, body: &[u8], trade_type: TradeType) -> V3 {
        let prepay: wire::Prepay = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => return param_error(format!("invalid body: {e}")),
        };
        if prepay.appid != self.appid || prepay.mchid != self.mchid {
            return V3::Error(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配".into());
        }
        if !valid_out_no(&prepay.out_trade_no, 6, 32) {
            return param_error("out_trade_no must be 6-32 characters of [0-9A-Za-z_-|*]");
        }
        let description_len = prepay.description.chars().count();
        if description_len == 0 || description_len > 127 {
            return param_error("description must be 1-127 characters");
        }
        if prepay.amount.total < 1 {
            return param_error("amount.total must be at least 1");
        }
        let Some(currency) = parse_currency(prepay.amount.currency.as_deref()) else {
            return param_error("amount.currency must be CNY, MOP or HKD");
        };
        let notify_ok = (prepay.notify_url.starts_with("https://")
            || prepay.notify_url.starts_with("http://"))
            && !prepay.notify_url.contains('?');
        if !notify_ok {
            return param_error("notify_url must be an absolute URL without query parameters");
        }
        let time_expire = match prepay.time_expire.as_deref() {
            None => None,
            Some(t) => match wire::parse_rfc3339(t) {
                Some(t) => Some(t),
                None => return param_error("time_expire must be RFC 3339"),
            },
        };
        let openid = match (trade_type, &prepay.payer) {
            (TradeType::Jsapi, Some(payer)) => Some(payer.openid.clone()),
            (TradeType::Jsapi, None) => return param_error("payer.openid is required"),
            _ => None,
        };
        let now = Utc::now();
        let mut book = lock(&self.book);
        if let Some(openid) = &openid
            && !book.openids.contains(openid)
        {
            return param_error("openid does not belong to this appid");
        }
        if let Some(existing) = book.orders.get_mut(&prepay.out_trade_no) {
            existing.expire(now);
            if existing.is_paid() {
                return V3::Error(400, "ORDERPAID", "该订单已支付".into());
            }
            if existing.state != TradeState::Notpay {
                return V3::Error(400, "ORDER_CLOSED", "当前订单已关闭，请重新下单".into());
            }
            let same = existing.trade_type == trade_type
                && existing.total == prepay.amount.total
                && existing.currency == currency
                && existing.description == prepay.description
                && existing.openid == openid;
            if !same {
                return V3::Error(
                    400,
                    "INVALID_REQUEST",
                    "201 商户订单号重复: out_trade_no already used with other parameters".into(),
                );
            }
            return self.prepay_answer(existing);
        }
        let transaction_id = self.new_transaction_id(now);
        let (pr, prepay_id) = match trade_type {
            TradeType::Jsapi => (
                None,
                Some(format!(
                    "wx{}{}",
                    wire::v2_time(now).get(..14).unwrap_or_default(),
                    self.random_token(20)
                )),
            ),
            _ => (Some(self.random_token(11)), None),
        };
        let order = Order {
            out_trade_no: prepay.out_trade_no.clone(),
            transaction_id,
            trade_type,
            state: TradeState::Notpay,
            description: prepay.description,
            total: prepay.amount.total,
            currency,
            notify_url: Some(prepay.notify_url),
            time_expire,
            paid_at: None,
            reversed_at: None,
            pr,
            prepay_id,
            openid,
            auth_code: None,
            refunded: 0,
        };
        let answer = self.prepay_answer(&order);
        book.orders.insert(prepay.out_trade_no, order);
        answer
    }

    fn prepay_answer(&self, order: &Order) -> V3 {
        match (&order.pr, &order.prepay_id) {
            (Some(pr), _) => V3::Json(
                200,
                json!({"code_url": format!("weixin://wxpay/bizpayurl?pr={pr}")}),
            ),
            (None, Some(prepay_id)) => V3::Json(200, json!({"prepay_id": prepay_id})),
            (None, None) => V3::Error(400, "INVALID_REQUEST", "order has no prepay".into()),
        }
    }

    fn transaction_json(&self, order: &Order) -> serde_json::Value {
        let paid = order.paid_at.is_some();
        let tx = wire::Transaction {
            appid: self.appid.clone(),
            mchid: self.mchid.clone(),
            out_trade_no: order.out_trade_no.clone(),
            transaction_id: paid.then(|| order.transaction_id.clone()),
            trade_type: Some(order.trade_type),
            trade_state: order.state,
            trade_state_desc: state_desc(order.state).to_owned(),
            bank_type: paid.then(|| "OTHERS".to_owned()),
            attach: None,
            success_time: order.paid_at.map(wire::rfc3339),
            payer: if paid {
                order.openid.clone().map(|openid| wire::Payer { openid })
            } else {
                None
            },
            amount: Some(wire::TransactionAmount {
                total: order.total,
                payer_total: paid.then_some(order.total),
                currency: Some(order.currency.code().to_owned()),
                payer_currency: Some(order.currency.code().to_owned()),
            }),
        };
        serde_json::to_value(tx).unwrap_or_default()
    }

    fn query(&self, find: impl Fn(&Order) -> bool, mchid: Option<&str>) -> V3 {
        if mchid != Some(self.mchid.as_str()) {
            return param_error("mchid query parameter missing or not this merchant");
        }
        let now = Utc::now();
        let mut book = lock(&self.book);
        match book.orders.values_mut().find(|o| find(o)) {
            Some(order) => {
                order.expire(now);
                V3::Json(200, self.transaction_json(order))
            }
            None => V3::Error(404, "ORDER_NOT_EXIST", "订单不存在".into()),
        }
    }

    fn close(&self, out_trade_no: &str, body: &[u8]) -> V3 {
        match serde_json::from_slice::<wire::CloseOrder>(body) {
            Ok(close) if close.mchid == self.mchid => {}
            Ok(_) => return V3::Error(400, "MCH_NOT_EXISTS", "商户号不存在".into()),
            Err(e) => return param_error(format!("invalid body: {e}")),
        }
        let mut book = lock(&self.book);
        let Some(order) = book.orders.get_mut(out_trade_no) else {
            return V3::Error(404, "ORDER_NOT_EXIST", "订单不存在".into());
        };
        if order.is_paid() {
            return V3::Error(400, "ORDERPAID", "订单已支付".into());
        }
        if order.trade_type == TradeType::Micropay {
            return V3::Error(
                400,
                "INVALID_REQUEST",
                "付款码支付订单不能关单，请调用撤销订单".into(),
            );
        }
        if matches!(order.state, TradeState::Notpay | TradeState::Userpaying) {
            order.state = TradeState::Closed;
        }
        V3::NoContent
    }

    fn create_refund(self: &Arc<Self>, body: &[u8]) -> V3 {
        let request: wire::CreateRefund = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return param_error(format!("invalid body: {e}")),
        };
        if !valid_out_no(&request.out_refund_no, 1, 64) {
            return param_error("out_refund_no must be 1-64 characters of [0-9A-Za-z_-|*]");
        }
        if request.amount.refund < 1 {
            return param_error("amount.refund must be at least 1");
        }
        let Some(currency) = parse_currency(Some(&request.amount.currency)) else {
            return param_error("amount.currency must be CNY, MOP or HKD");
        };
        let now = Utc::now();
        let mut book = lock(&self.book);
        let found = book.orders.values().find(|o| {
            request
                .transaction_id
                .as_ref()
                .is_none_or(|t| *t == o.transaction_id && o.paid_at.is_some())
                && request
                    .out_trade_no
                    .as_ref()
                    .is_none_or(|n| *n == o.out_trade_no)
        });
        let order = match found {
            Some(o) if request.transaction_id.is_some() || request.out_trade_no.is_some() => {
                o.clone()
            }
            _ => return V3::Error(404, "RESOURCE_NOT_EXISTS", "订单不存在".into()),
        };
        if let Some(existing) = book.refunds.get(&request.out_refund_no) {
            if existing.out_trade_no == order.out_trade_no
                && existing.refund == request.amount.refund
                && existing.total == request.amount.total
            {
                return V3::Json(200, self.refund_json(existing));
            }
            return V3::Error(
                400,
                "INVALID_REQUEST",
                "out_refund_no already used with other parameters".into(),
            );
        }
        if !order.is_paid() {
            return V3::Error(400, "INVALID_REQUEST", "订单未支付，不能退款".into());
        }
        if request.amount.total != order.total || currency != order.currency {
            return V3::Error(
                400,
                "INVALID_REQUEST",
                "订单金额或币种与原订单不一致 (amount.total/currency differ from the order)".into(),
            );
        }
        if order.refunded + request.amount.refund > order.total {
            return V3::Error(
                400,
                "INVALID_REQUEST",
                "申请退款金额超过订单可退金额 (refund exceeds the refundable amount)".into(),
            );
        }
        let record = RefundRecord {
            refund_id: format!(
                "5030{}{:020}",
                wire::beijing_date(now).format("%Y%m%d"),
                self.next_serial()
            ),
            out_refund_no: request.out_refund_no.clone(),
            out_trade_no: order.out_trade_no.clone(),
            transaction_id: order.transaction_id.clone(),
            refund: request.amount.refund,
            total: order.total,
            currency,
            created_at: now,
        };
        if let Some(o) = book.orders.get_mut(&order.out_trade_no) {
            o.refunded += record.refund;
            o.state = TradeState::Refund;
        }
        book.refunds
            .insert(record.out_refund_no.clone(), record.clone());
        drop(book);
        if let Some(url) = request.notify_url.as_deref() {
            self.notify_refund(url, &record);
        }
        V3::Json(200, self.refund_json(&record))
    }

    fn refund_wire(&self, record: &RefundRecord) -> wire::Refund {
        wire::Refund {
            refund_id: record.refund_id.clone(),
            out_refund_no: record.out_refund_no.clone(),
            transaction_id: record.transaction_id.clone(),
            out_trade_no: record.out_trade_no.clone(),
            channel: Some("ORIGINAL".into()),
            user_received_account: Some("支付用户零钱".into()),
            success_time: Some(wire::rfc3339(record.created_at)),
            create_time: wire::rfc3339(record.created_at),
            status: wire::RefundStatus::Success,
            amount: wire::RefundAmount {
                total: record.total,
                refund: record.refund,
                payer_total: Some(record.total),
                payer_refund: Some(record.refund),
                currency: Some(record.currency.code().to_owned()),
            },
        }
    }

    fn refund_json(&self, record: &RefundRecord) -> serde_json::Value {
        serde_json::to_value(self.refund_wire(record)).unwrap_or_default()
    }

    // -----------------------------------------------------------------------------
    // Callbacks
    // -----------------------------------------------------------------------------

    /// Encrypts `resource`, wraps it in the notification envelope, signs the exact
    /// bytes and hands them to the dispatcher (mainland retry schedule).
    fn notify(
        &self,
        url: &str,
        event_type: EventType,
        original_type: &str,
        summary: &str,
        resource: &impl serde::Serialize,
    ) {
        let sealed = serde_json::to_vec(resource)
            .ok()
            .zip(wire::nonce_str(12).ok())
            .and_then(|(plaintext, nonce)| {
                wire::encrypt_resource(
                    &self.api_v3_key,
                    original_type,
                    &nonce,
                    original_type,
                    &plaintext,
                )
                .ok()
            });
        let Some(resource) = sealed else {
            tracing::error!("wechat sandbox could not seal a callback resource");
            return;
        };
        let notification = wire::Notification {
            id: format!("EV-{}", self.random_token(24)),
            create_time: wire::rfc3339(Utc::now()),
            resource_type: "encrypt-resource".into(),
            event_type,
            summary: summary.to_owned(),
            resource,
        };
        let Ok(body) = serde_json::to_vec(&notification) else {
            return;
        };
        let Some(headers) = callback_headers(&self.wallet_key, &self.wallet_key_id, &body) else {
            tracing::error!("wechat sandbox could not sign a callback");
            return;
        };
        // WeChat signs every notification attempt with the current timestamp and a
        // fresh nonce, so a retry hours later still passes the replay window.
        let (key, key_id) = (self.wallet_key.clone(), self.wallet_key_id.clone());
        let resign: Resign = Arc::new(move |body: &[u8]| callback_headers(&key, &key_id, body));
        self.dispatcher.dispatch(Outgoing {
            url: url.to_owned(),
            headers,
            body,
            acked: wechat_acked,
            resign: Some(resign),
        });
    }

    fn notify_paid(&self, order: &Order) {
        let Some(url) = order.notify_url.as_deref() else {
            return;
        };
        let resource = self.transaction_json(order);
        self.notify(
            url,
            EventType::TransactionSuccess,
            "transaction",
            "支付成功",
            &resource,
        );
    }

    fn notify_refund(&self, url: &str, record: &RefundRecord) {
        let refund = self.refund_wire(record);
        let notice = wire::RefundNotice {
            mchid: self.mchid.clone(),
            out_trade_no: refund.out_trade_no,
            transaction_id: refund.transaction_id,
            out_refund_no: refund.out_refund_no,
            refund_id: refund.refund_id,
            refund_status: wire::RefundStatus::Success,
            success_time: refund.success_time,
            user_received_account: refund.user_received_account,
            amount: refund.amount,
        };
        self.notify(url, EventType::RefundSuccess, "refund", "退款成功", &notice);
    }

    /// Marks an unpaid Native/JSAPI order paid and sends its callback.
    fn pay(&self, out_trade_no: &str) -> Result<Order, String> {
        let now = Utc::now();
        let mut book = lock(&self.book);
        let order = book
            .orders
            .get_mut(out_trade_no)
            .ok_or_else(|| "no such order".to_owned())?;
        order.expire(now);
        if order.trade_type == TradeType::Micropay {
            return Err("customer-code charges are confirmed on the shopper's phone".into());
        }
        if order.state != TradeState::Notpay {
            return Err(format!("order is {}", wire_name(order.state)));
        }
        order.state = TradeState::Success;
        order.paid_at = Some(now);
        if order.openid.is_none() {
            order.openid = Some(format!("o{}", self.random_token(27)));
        }
        let paid = order.clone();
        drop(book);
        self.notify_paid(&paid);
        Ok(paid)
    }

    // -----------------------------------------------------------------------------
    // API v2 (micropay)
    // -----------------------------------------------------------------------------

    /// Parses and authenticates a v2 request. `Err` is the `return_msg` of the
    /// unsigned `return_code=FAIL` answer WeChat gives when it cannot trust the caller.
    fn admit_v2(&self, body: &[u8]) -> Result<(BTreeMap<String, String>, SignType), &'static str> {
        let text = std::str::from_utf8(body).map_err(|_| "编码格式错误 (not UTF-8)")?;
        let params = wire::xml::parse(text).map_err(|_| "XML格式错误")?;
        let sign_type =
            SignType::parse(params.get("sign_type").map(String::as_str)).ok_or("签名类型错误")?;
        wire::v2_verify(&params, &self.api_v2_key, sign_type).map_err(|_| "签名错误")?;
        if params.get("appid") != Some(&self.appid) || params.get("mch_id") != Some(&self.mchid) {
            return Err("appid和mch_id不匹配");
        }
        Ok((params, sign_type))
    }

    /// A signed v2 answer with `return_code=SUCCESS` plus `fields`.
    fn v2_answer(&self, mut fields: BTreeMap<String, String>, sign_type: SignType) -> HttpResponse {
        fields.insert("return_code".into(), "SUCCESS".into());
        fields.insert("return_msg".into(), "OK".into());
        fields.insert("appid".into(), self.appid.clone());
        fields.insert("mch_id".into(), self.mchid.clone());
        fields.insert("nonce_str".into(), self.random_token(16));
        let sign = wire::v2_sign(&fields, &self.api_v2_key, sign_type);
        fields.insert("sign".into(), sign);
        xml_response(200, &fields)
    }

    fn v2_error(&self, code: &str, description: &str, sign_type: SignType) -> HttpResponse {
        self.v2_answer(
            BTreeMap::from([
                ("result_code".to_owned(), "FAIL".to_owned()),
                ("err_code".to_owned(), code.to_owned()),
                ("err_code_des".to_owned(), description.to_owned()),
            ]),
            sign_type,
        )
    }

    fn paid_fields(&self, order: &Order) -> BTreeMap<String, String> {
        let mut fields = BTreeMap::from([
            ("out_trade_no".to_owned(), order.out_trade_no.clone()),
            ("total_fee".to_owned(), order.total.to_string()),
            ("fee_type".to_owned(), order.currency.code().to_owned()),
            ("trade_type".to_owned(), wire_name(order.trade_type)),
        ]);
        if let Some(paid_at) = order.paid_at {
            fields.insert("transaction_id".into(), order.transaction_id.clone());
            fields.insert("cash_fee".into(), order.total.to_string());
            fields.insert("time_end".into(), wire::v2_time(paid_at));
            fields.insert("bank_type".into(), "OTHERS".into());
            fields.insert("is_subscribe".into(), "N".into());
            if let Some(openid) = &order.openid {
                fields.insert("openid".into(), openid.clone());
            }
        }
        fields
    }

    fn micropay(
        self: &Arc<Self>,
        params: &BTreeMap<String, String>,
        sign_type: SignType,
    ) -> HttpResponse {
        let field = |name: &str| {
            params
                .get(name)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        let (Some(out_trade_no), Some(total_fee), Some(auth_code), Some(body), Some(_ip)) = (
            field("out_trade_no"),
            field("total_fee"),
            field("auth_code"),
            field("body"),
            field("spbill_create_ip"),
        ) else {
            return self.v2_error("LACK_PARAMS", "缺少参数", sign_type);
        };
        if !valid_out_no(out_trade_no, 6, 32) {
            return self.v2_error("PARAM_ERROR", "out_trade_no 格式错误", sign_type);
        }
        let Some(total) = total_fee.parse::<i64>().ok().filter(|t| *t >= 1) else {
            return self.v2_error("PARAM_ERROR", "total_fee 必须为正整数", sign_type);
        };
        let Some(currency) = parse_currency(field("fee_type")) else {
            return self.v2_error("PARAM_ERROR", "fee_type 必须为 CNY, MOP 或 HKD", sign_type);
        };
        if !is_wechat_code(auth_code) {
            return self.v2_error("AUTH_CODE_INVALID", "请扫描微信支付授权码", sign_type);
        }
        let now = Utc::now();
        let mut book = lock(&self.book);
        if let Some(existing) = book.orders.get(out_trade_no) {
            let same = existing.auth_code.as_deref() == Some(auth_code) && existing.total == total;
            let (code, description) = match existing.state {
                _ if !same => ("OUT_TRADE_NO_USED", "商户订单号重复"),
                TradeState::Success | TradeState::Refund => ("ORDERPAID", "订单已支付"),
                TradeState::Revoked => ("ORDERREVERSED", "订单已撤销"),
                TradeState::Userpaying => ("USERPAYING", "需要用户输入支付密码"),
                TradeState::Payerror => ("NOTENOUGH", "余额不足"),
                _ => ("ORDERCLOSED", "订单已关闭"),
            };
            return self.v2_error(code, description, sign_type);
        }
        let behaviour = CodeBehaviour::of(auth_code);
        let mut order = Order {
            out_trade_no: out_trade_no.to_owned(),
            transaction_id: self.new_transaction_id(now),
            trade_type: TradeType::Micropay,
            state: TradeState::Userpaying,
            description: body.to_owned(),
            total,
            currency,
            notify_url: None,
            time_expire: None,
            paid_at: None,
            reversed_at: None,
            pr: None,
            prepay_id: None,
            openid: Some(format!("o{}", self.random_token(27))),
            auth_code: Some(auth_code.to_owned()),
            refunded: 0,
        };
        let answer = match behaviour {
            CodeBehaviour::PaysAtOnce => {
                order.state = TradeState::Success;
                order.paid_at = Some(now);
                let mut fields = self.paid_fields(&order);
                fields.insert("result_code".into(), "SUCCESS".into());
                self.v2_answer(fields, sign_type)
            }
            CodeBehaviour::NeedsConfirmation => {
                let sandbox = self.clone();
                let out_trade_no = out_trade_no.to_owned();
                let delay = self.time.scale(AUTO_CONFIRM);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    sandbox.confirm_code_charge(|o| o.out_trade_no == out_trade_no);
                });
                self.v2_error("USERPAYING", "需要用户输入支付密码", sign_type)
            }
            CodeBehaviour::Declined => {
                order.state = TradeState::Payerror;
                self.v2_error("NOTENOUGH", "余额不足", sign_type)
            }
        };
        book.orders.insert(out_trade_no.to_owned(), order);
        answer
    }

    /// The shopper confirms a pending customer-code charge (or the auto-confirm fires).
    fn confirm_code_charge(&self, find: impl Fn(&Order) -> bool) -> Option<Order> {
        let mut book = lock(&self.book);
        let order = book
            .orders
            .values_mut()
            .find(|o| o.state == TradeState::Userpaying && find(o))?;
        order.state = TradeState::Success;
        order.paid_at = Some(Utc::now());
        Some(order.clone())
    }

    fn orderquery(&self, params: &BTreeMap<String, String>, sign_type: SignType) -> HttpResponse {
        let by_number = params.get("out_trade_no").filter(|v| !v.is_empty());
        let by_id = params.get("transaction_id").filter(|v| !v.is_empty());
        if by_number.is_none() && by_id.is_none() {
            return self.v2_error("LACK_PARAMS", "缺少参数 out_trade_no", sign_type);
        }
        let now = Utc::now();
        let mut book = lock(&self.book);
        let found = book.orders.values_mut().find(|o| {
            by_number.is_none_or(|n| *n == o.out_trade_no)
                && by_id.is_none_or(|t| *t == o.transaction_id && o.paid_at.is_some())
        });
        let Some(order) = found else {
            return self.v2_error("ORDERNOTEXIST", "此交易订单号不存在", sign_type);
        };
        order.expire(now);
        let mut fields = self.paid_fields(order);
        fields.insert("result_code".into(), "SUCCESS".into());
        fields.insert("trade_state".into(), wire_name(order.state));
        fields.insert("trade_state_desc".into(), state_desc(order.state).into());
        self.v2_answer(fields, sign_type)
    }

    fn reverse(&self, params: &BTreeMap<String, String>, sign_type: SignType) -> HttpResponse {
        let Some(out_trade_no) = params.get("out_trade_no").filter(|v| !v.is_empty()) else {
            return self.v2_error("LACK_PARAMS", "缺少参数 out_trade_no", sign_type);
        };
        if !valid_out_no(out_trade_no, 6, 32) {
            return self.v2_error("PARAM_ERROR", "out_trade_no 格式错误", sign_type);
        }
        let now = Utc::now();
        let mut book = lock(&self.book);
        let order = book
            .orders
            .entry(out_trade_no.clone())
            // Never seen: remember the reversal so a late charge cannot go through.
            .or_insert_with(|| Order {
                out_trade_no: out_trade_no.clone(),
                transaction_id: String::new(),
                trade_type: TradeType::Micropay,
                state: TradeState::Revoked,
                description: String::new(),
                total: 0,
                currency: Currency::Cny,
                notify_url: None,
                time_expire: None,
                paid_at: None,
                reversed_at: None,
                pr: None,
                prepay_id: None,
                openid: None,
                auth_code: None,
                refunded: 0,
            });
        if order.trade_type != TradeType::Micropay {
            return self.v2_error("TRADE_ERROR", "只能撤销付款码支付订单", sign_type);
        }
        if order.state == TradeState::Refund {
            return self.v2_error("TRADE_ERROR", "订单已发生退款，不能撤销", sign_type);
        }
        if order.state != TradeState::Revoked {
            order.state = TradeState::Revoked;
            order.reversed_at = Some(now);
        }
        self.v2_answer(
            BTreeMap::from([
                ("result_code".to_owned(), "SUCCESS".to_owned()),
                ("recall".to_owned(), "N".to_owned()),
            ]),
            sign_type,
        )
    }

    // -----------------------------------------------------------------------------
    // Statement
    // -----------------------------------------------------------------------------

    /// The day's bill in WeChat's trade-bill layout (Beijing dates and times):
    /// one `SUCCESS` row per payment, one `REFUND` row per refund, one `REVOKED` row
    /// per reversed paid charge, then one summary row per currency.
    fn statement_csv(&self, date: NaiveDate) -> String {
        let book = lock(&self.book);
        let mut rows: Vec<(DateTime<Utc>, Vec<String>)> = Vec::new();
        let mut totals: BTreeMap<Currency, (u64, i64, i64)> = BTreeMap::new();
        let zero = "0.00";
        for order in book.orders.values() {
            let Some(paid_at) = order.paid_at else {
                continue;
            };
            let trade_type = wire_name(order.trade_type);
            let mut events = vec![(paid_at, "SUCCESS", order.total, 0)];
            if let Some(reversed_at) = order.reversed_at {
                events.push((reversed_at, "REVOKED", 0, order.total));
            }
            for (at, state, settled, refunded) in events {
                if wire::beijing_date(at) != date {
                    continue;
                }
                let entry = totals.entry(order.currency).or_default();
                *entry = (entry.0 + 1, entry.1 + settled, entry.2 + refunded);
                rows.push((
                    at,
                    vec![
                        wire::bill_time(at),
                        self.appid.clone(),
                        self.mchid.clone(),
                        "0".into(),
                        String::new(),
                        order.transaction_id.clone(),
                        order.out_trade_no.clone(),
                        order.openid.clone().unwrap_or_default(),
                        trade_type.clone(),
                        state.into(),
                        "OTHERS".into(),
                        order.currency.code().into(),
                        order.money(settled),
                        zero.into(),
                        "0".into(),
                        "0".into(),
                        order.money(refunded),
                        zero.into(),
                        String::new(),
                        String::new(),
                        order.description.clone(),
                        String::new(),
                        zero.into(),
                        "0.00%".into(),
                        order.money(order.total),
                        order.money(refunded),
                        String::new(),
                    ],
                ));
            }
        }
        for refund in book.refunds.values() {
            if wire::beijing_date(refund.created_at) != date {
                continue;
            }
            let Some(order) = book.orders.get(&refund.out_trade_no) else {
                continue;
            };
            let entry = totals.entry(order.currency).or_default();
            *entry = (entry.0 + 1, entry.1, entry.2 + refund.refund);
            rows.push((
                refund.created_at,
                vec![
                    wire::bill_time(refund.created_at),
                    self.appid.clone(),
                    self.mchid.clone(),
                    "0".into(),
                    String::new(),
                    order.transaction_id.clone(),
                    order.out_trade_no.clone(),
                    order.openid.clone().unwrap_or_default(),
                    wire_name(order.trade_type),
                    "REFUND".into(),
                    "OTHERS".into(),
                    order.currency.code().into(),
                    zero.into(),
                    zero.into(),
                    refund.refund_id.clone(),
                    refund.out_refund_no.clone(),
                    order.money(refund.refund),
                    zero.into(),
                    "ORIGINAL".into(),
                    "SUCCESS".into(),
                    order.description.clone(),
                    String::new(),
                    zero.into(),
                    "0.00%".into(),
                    order.money(order.total),
                    order.money(refund.refund),
                    String::new(),
                ],
            ));
        }
        rows.sort_by_key(|(at, _)| *at);
        let mut csv = wire::BILL_HEADER.join(",");
        csv.push('\n');
        for (_, row) in rows {
            let fields: Vec<String> = row.iter().map(|f| wire::bill_field(f)).collect();
            csv.push_str(&fields.join(","));
            csv.push('\n');
        }
        csv.push_str(&wire::BILL_SUMMARY_HEADER.join(","));
        csv.push('\n');
        let format = |minor: i64, currency: Currency| {
            Money::from_minor(minor, currency)
                .map(|m| m.to_decimal_string())
                .unwrap_or_default()
        };
        for (currency, (count, settled, refunded)) in totals {
            let fields = [
                count.to_string(),
                format(settled, currency),
                format(refunded, currency),
                zero.to_owned(),
                zero.to_owned(),
                format(settled, currency),
                format(refunded, currency),
            ];
            let fields: Vec<String> = fields.iter().map(|f| wire::bill_field(f)).collect();
            csv.push_str(&fields.join(","));
            csv.push('\n');
        }
        csv
    }
}

/// The unsigned `return_code=FAIL` answer.
fn return_fail(return_msg: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("return_code".to_owned(), "FAIL".to_owned()),
        ("return_msg".to_owned(), return_msg.to_owned()),
    ])
}

fn xml_response(status: u16, fields: &BTreeMap<String, String>) -> HttpResponse {
    let status =
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    match wire::xml::write(fields) {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/xml; charset=utf-8")
            .body(body),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

// ---------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------

type Sandbox = web::Data<WechatPaySandbox>;

async fn native(req: HttpRequest, body: web::Bytes, sb: Sandbox) -> HttpResponse {
    if let Err(answer) = sb.admit_v3(&req, &body).await {
        return answer;
    }
    sb.respond(sb.create_prepay(&body, TradeType::Native))
}

async fn jsapi(req: HttpRequest, body: web::Bytes, sb: Sandbox) -> HttpResponse {
    if let Err(answer) = sb.admit_v3(&req, &body).await {
        return answer;
    }
    sb.respond(sb.create_prepay(&body, TradeType::Jsapi))
}

#[derive(Debug, Deserialize)]
struct MchidQuery {
    mchid: Option<String>,
}

async fn query_by_out_trade_no(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<MchidQuery>,
    sb: Sandbox,
) -> HttpResponse {
    if let Err(answer) = sb.admit_v3(&req, &[]).await {
        return answer;
    }
    let out_trade_no = path.into_inner();
    sb.respond(sb.query(|o| o.out_trade_no == out_trade_no, query.mchid.as_deref()))
}

async fn query_by_transaction_id(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<MchidQuery>,
    sb: Sandbox,
) -> HttpResponse {
    if let Err(answer) = sb.admit_v3(&req, &[]).await {
        return answer;
    }
    let id = path.into_inner();
    sb.respond(sb.query(
        |o| o.transaction_id == id && o.paid_at.is_some(),
        query.mchid.as_deref(),
    ))
}

async fn close(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    sb: Sandbox,
) -> HttpResponse {
    if let Err(answer) = sb.admit_v3(&req, &body).await {
        return answer;
    }
    sb.respond(sb.close(&path.into_inner(), &body))
}

async fn create_refund(req: HttpRequest, body: web::Bytes, sb: Sandbox) -> HttpResponse {
    if let Err(answer) = sb.admit_v3(&req, &body).await {
        return answer;
    }
    let sandbox = sb.into_inner();
    sandbox.respond(sandbox.create_refund(&body))
}

async fn query_refund(req: HttpRequest, path: web::Path<String>, sb: Sandbox) -> HttpResponse {
    if let Err(answer) = sb.admit_v3(&req, &[]).await {
        return answer;
    }
    let found = lock(&sb.book).refunds.get(path.as_str()).cloned();
    sb.respond(match found {
        Some(record) => V3::Json(200, sb.refund_json(&record)),
        None => V3::Error(404, "RESOURCE_NOT_EXISTS", "退款单不存在".into()),
    })
}

/// v2 entry: faults, then parse and authenticate, then the operation.
async fn v2_call(
    body: &[u8],
    sb: &Sandbox,
    operation: impl FnOnce(&BTreeMap<String, String>, SignType) -> HttpResponse,
) -> HttpResponse {
    if sb.faults.gate().await {
        let fields = BTreeMap::from([
            ("return_code".to_owned(), "FAIL".to_owned()),
            (
                "return_msg".to_owned(),
                "SYSTEMERROR (sandbox fault injection)".to_owned(),
            ),
        ]);
        return xml_response(500, &fields);
    }
    if let Some(answer) = sb.faults.take_http_status() {
        return answer;
    }
    match sb.admit_v2(body) {
        Ok((params, sign_type)) => operation(&params, sign_type),
        Err(return_msg) => xml_response(200, &return_fail(return_msg)),
    }
}

async fn micropay(body: web::Bytes, sb: Sandbox) -> HttpResponse {
    let sandbox = sb.clone().into_inner();
    v2_call(&body, &sb, |params, sign_type| {
        sandbox.micropay(params, sign_type)
    })
    .await
}

async fn orderquery(body: web::Bytes, sb: Sandbox) -> HttpResponse {
    v2_call(&body, &sb, |params, sign_type| {
        sb.orderquery(params, sign_type)
    })
    .await
}

async fn reverse(body: web::Bytes, sb: Sandbox) -> HttpResponse {
    v2_call(&body, &sb, |params, sign_type| {
        sb.reverse(params, sign_type)
    })
    .await
}

#[derive(Debug, Deserialize)]
struct AuthorizeQuery {
    appid: String,
    redirect_uri: String,
    response_type: String,
    scope: String,
    #[serde(default)]
    state: String,
}

/// WeChat's OAuth page: silently (snsapi_base) redirects to `redirect_uri` with a
/// fresh single-use code for a sandbox openid.
async fn oauth_authorize(query: web::Query<AuthorizeQuery>, sb: Sandbox) -> HttpResponse {
    use actix_web::http::StatusCode;
    if query.appid != sb.appid {
        return html(StatusCode::BAD_REQUEST, "appid 参数错误", "unknown appid");
    }
    if query.response_type != "code"
        || !matches!(query.scope.as_str(), "snsapi_base" | "snsapi_userinfo")
    {
        return html(
            StatusCode::BAD_REQUEST,
            "scope 参数错误",
            "expected response_type=code and scope=snsapi_base",
        );
    }
    if !(query.redirect_uri.starts_with("https://") || query.redirect_uri.starts_with("http://")) {
        return html(
            StatusCode::BAD_REQUEST,
            "redirect_uri 参数错误",
            "redirect_uri must be absolute",
        );
    }
    let code = sb.random_token(32);
    let openid = format!("o{}", sb.random_token(27));
    {
        let mut book = lock(&sb.book);
        book.openids.insert(openid.clone());
        book.oauth_codes.insert(
            code.clone(),
            OauthCode {
                openid,
                issued_at: Utc::now(),
                used: false,
            },
        );
    }
    let separator = if query.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!(
        "{}{separator}code={code}&state={}",
        query.redirect_uri,
        wire::percent_encode(&query.state)
    );
    HttpResponse::Found()
        .insert_header(("Location", location))
        .finish()
}

#[derive(Debug, Deserialize)]
struct AccessTokenQuery {
    appid: String,
    secret: String,
    code: String,
    grant_type: String,
}

async fn oauth_access_token(query: web::Query<AccessTokenQuery>, sb: Sandbox) -> HttpResponse {
    if sb.faults.gate().await {
        return HttpResponse::InternalServerError()
            .json(json!({"errcode": -1, "errmsg": "system error"}));
    }
    let error = |code: i64, message: &str| {
        HttpResponse::Ok().json(wire::OauthToken {
            errcode: Some(code),
            errmsg: Some(message.to_owned()),
            ..wire::OauthToken::default()
        })
    };
    if query.appid != sb.appid {
        return error(40013, "invalid appid");
    }
    if !crypto::constant_time_eq(query.secret.as_bytes(), sb.app_secret.expose().as_bytes()) {
        return error(40125, "invalid appsecret");
    }
    if query.grant_type != "authorization_code" {
        return error(40002, "invalid grant_type");
    }
    let openid = {
        let mut book = lock(&sb.book);
        let Some(entry) = book.oauth_codes.get_mut(&query.code) else {
            return error(40029, "invalid code");
        };
        if entry.used {
            return error(40163, "code been used");
        }
        if (Utc::now() - entry.issued_at).num_seconds() > OAUTH_CODE_TTL_SECS {
            return error(42003, "code expired");
        }
        entry.used = true;
        entry.openid.clone()
    };
    HttpResponse::Ok().json(wire::OauthToken {
        access_token: Some(sb.random_token(64)),
        expires_in: Some(7200),
        refresh_token: Some(sb.random_token(64)),
        openid: Some(openid),
        scope: Some("snsapi_base".into()),
        ..wire::OauthToken::default()
    })
}

/// Stand-in for `WeixinJSBridge.invoke('getBrandWCPayRequest', params)`: checks the
/// merchant's `paySign` as WeChat's client does, then pays the prepay order.
async fn jsbridge_pay(params: web::Json<BTreeMap<String, String>>, sb: Sandbox) -> HttpResponse {
    let fail = |why: &str| {
        HttpResponse::Ok().json(json!({"err_msg": "get_brand_wcpay_request:fail", "err_desc": why}))
    };
    let get = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    if get("appId") != sb.appid {
        return fail("appId does not match");
    }
    if get("signType") != wire::JSAPI_SIGN_TYPE || get("timeStamp").parse::<i64>().is_err() {
        return fail("signType must be RSA and timeStamp unix seconds");
    }
    let message = wire::jsapi_message(
        get("appId"),
        get("timeStamp"),
        get("nonceStr"),
        get("package"),
    );
    if sb
        .merchant_public_key
        .verify_base64(message.as_bytes(), get("paySign"))
        .is_err()
    {
        return fail("支付验证签名失败 (paySign does not verify)");
    }
    let Some(prepay_id) = get("package").strip_prefix("prepay_id=") else {
        return fail("package must be prepay_id=...");
    };
    let out_trade_no = lock(&sb.book)
        .orders
        .values()
        .find(|o| o.prepay_id.as_deref() == Some(prepay_id))
        .map(|o| o.out_trade_no.clone());
    let Some(out_trade_no) = out_trade_no else {
        return fail("unknown prepay_id");
    };
    match sb.pay(&out_trade_no) {
        Ok(_) => HttpResponse::Ok().json(json!({"err_msg": "get_brand_wcpay_request:ok"})),
        Err(why) => fail(&why),
    }
}

#[derive(Debug, Deserialize)]
struct BizPayQuery {
    pr: String,
}

/// Opening a `code_url` (as WeChat's scanner would) leads to the cashier.
async fn bizpayurl(query: web::Query<BizPayQuery>, sb: Sandbox) -> HttpResponse {
    let found = lock(&sb.book)
        .orders
        .values()
        .find(|o| o.pr.as_deref() == Some(query.pr.as_str()))
        .map(|o| o.out_trade_no.clone());
    match found {
        Some(out_trade_no) => HttpResponse::SeeOther()
            .insert_header((
                "Location",
                format!("{}/pay/{out_trade_no}", sb.public_base_url),
            ))
            .finish(),
        None => html(
            actix_web::http::StatusCode::NOT_FOUND,
            "二维码已失效",
            "unknown pr",
        ),
    }
}

async fn cashier(path: web::Path<String>, sb: Sandbox) -> HttpResponse {
    let order = lock(&sb.book).orders.get(path.as_str()).cloned();
    let Some(order) = order else {
        return html(
            actix_web::http::StatusCode::NOT_FOUND,
            "订单不存在",
            "no such order",
        );
    };
    let base = format!("{}/pay/{}", sb.public_base_url, order.out_trade_no);
    pay_page(
        "WeChat Pay",
        &format!("Merchant {}", sb.mchid),
        &format!("{} {}", order.money(order.total), order.currency.code()),
        &order.description,
        &format!("{base}/confirm"),
        &format!("{base}/cancel"),
    )
}

async fn cashier_confirm(path: web::Path<String>, sb: Sandbox) -> HttpResponse {
    use actix_web::http::StatusCode;
    match sb.pay(path.as_str()) {
        Ok(order) => html(
            StatusCode::OK,
            "支付成功 Paid",
            &format!(
                "{} {} paid",
                order.money(order.total),
                order.currency.code()
            ),
        ),
        Err(why) => html(StatusCode::CONFLICT, "无法支付 Cannot pay", &why),
    }
}

async fn cashier_cancel(path: web::Path<String>, sb: Sandbox) -> HttpResponse {
    use actix_web::http::StatusCode;
    let mut book = lock(&sb.book);
    match book.orders.get_mut(path.as_str()) {
        Some(order)
            if order.state == TradeState::Notpay && order.trade_type != TradeType::Micropay =>
        {
            order.state = TradeState::Closed;
            html(StatusCode::OK, "已取消 Cancelled", "the order is closed")
        }
        Some(order) => html(
            StatusCode::CONFLICT,
            "无法取消 Cannot cancel",
            &format!("order is {}", wire_name(order.state)),
        ),
        None => html(StatusCode::NOT_FOUND, "订单不存在", "no such order"),
    }
}

async fn test_codes(sb: Sandbox) -> HttpResponse {
    let codes: Vec<serde_json::Value> = [
        CodeBehaviour::PaysAtOnce,
        CodeBehaviour::NeedsConfirmation,
        CodeBehaviour::Declined,
    ]
    .into_iter()
    .map(|behaviour| {
        json!({
            "code": test_code(CODE_PREFIX, CODE_LEN, behaviour, sb.next_serial()),
            "behaviour": behaviour,
        })
    })
    .collect();
    HttpResponse::Ok().json(codes)
}

async fn code_confirm(path: web::Path<String>, sb: Sandbox) -> HttpResponse {
    let code = path.into_inner();
    match sb.confirm_code_charge(|o| o.auth_code.as_deref() == Some(code.as_str())) {
        Some(order) => HttpResponse::Ok().json(json!({
            "out_trade_no": order.out_trade_no,
            "trade_state": "SUCCESS",
        })),
        None => HttpResponse::NotFound().json(json!({
            "code": "ORDER_NOT_EXIST",
            "message": "no charge with this code is waiting for the shopper",
        })),
    }
}

#[derive(Debug, Deserialize)]
struct StatementQuery {
    date: String,
}

async fn statement(query: web::Query<StatementQuery>, sb: Sandbox) -> HttpResponse {
    match NaiveDate::parse_from_str(&query.date, "%Y-%m-%d") {
        Ok(date) => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(sb.statement_csv(date)),
        Err(_) => HttpResponse::BadRequest().json(json!({
            "code": "PARAM_ERROR",
            "message": "date must be YYYY-MM-DD",
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedule_is_wechats_mainland_schedule() {
        let total: u64 = RETRY_SCHEDULE_SECS.iter().sum();
        assert_eq!(RETRY_SCHEDULE_SECS.len(), 15);
        // 24h04m (wallets.md §3.5: "≈24h4m, 15 tries").
        assert_eq!(total, 24 * 3600 + 4 * 60);
    }

    #[test]
    fn only_an_empty_2xx_or_success_json_stops_retries() {
        assert!(wechat_acked(204, b""));
        assert!(wechat_acked(200, b""));
        assert!(wechat_acked(
            200,
            r#"{"code":"SUCCESS","message":"成功"}"#.as_bytes()
        ));
        assert!(!wechat_acked(200, b"success"));
        assert!(!wechat_acked(200, br#"{"code":"FAIL"}"#));
        assert!(!wechat_acked(500, b""));
        assert!(!wechat_acked(401, br#"{"code":"FAIL","message":"x"}"#));
    }

    #[test]
    fn payment_codes_follow_the_wechat_rule() {
        assert!(is_wechat_code("134567890123450000"));
        assert!(is_wechat_code("104567890123450000"));
        assert!(!is_wechat_code("164567890123450000"));
        assert!(!is_wechat_code("13456789012345000"));
        assert!(!is_wechat_code("13456789012345000a"));
        let issued = test_code(CODE_PREFIX, CODE_LEN, CodeBehaviour::Declined, 5);
        assert!(is_wechat_code(&issued));
    }
}
