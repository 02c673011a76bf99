//! The Alipay+ sandbox: Alipay+'s side of the ACQP API, for tests and local mode.
//!
//! Owns: verifying our request signatures exactly as Alipay+ would (answering its
//! `result` error shape when they fail), signing its answers and `notifyPayment`
//! callbacks with its own wallet key, an in-memory book of payments and refunds, the
//! MPP that "pays" (from the `psp` hint, the User-Agent, or the payment code's issuer
//! prefix), the cashier page, test payment codes, a settlement-style statement, and
//! the shared fault injection and callback retry schedule.
//! Must never: sign with the merchant's key, accept a request whose signature does
//! not verify, hold its lock across an `.await`, or be mounted in production.
//!
//! Sandbox choices (the protocol reading is in the `alipay_plus` module doc):
//! - Payment codes ([`psp_for_code`], the forms of wallets.md §2.8): 24 digits =
//!   code issuer (CII, chosen in config/wallets.toml: MPay `280853`, AlipayHK
//!   `280852`, Kakao Pay `280082`) + BTI `02` + a 16-digit user number; and the
//!   legacy Alipay forms (`28` + 15/16/17 digits, 17 to 19 long), paid by Alipay
//!   (mainland, pspId `1022088000000000001`) — the form the Alipay sandbox issues,
//!   so the shared 25–30 code space can be charged end to end. Any other code
//!   (reserved lengths, unknown issuer) is F `USER_NOT_EXIST`. The last four digits
//!   decide the outcome ([`CodeBehaviour`]): pays at once, waits for the shopper (U
//!   `PAYMENT_IN_PROCESS` until `POST /codes/{code}/confirm`, or by itself after
//!   10 s of wallet time), or F `USER_BALANCE_NOT_ENOUGH`.
//! - Entry / Order Code wallet: the Alipay+ brand the registry detects from
//!   `env.userAgent` (as Alipay+ identifies it), else the optional
//!   `paymentMethodMetaData.walletBrandName` hint (our assumption, see the
//!   adapter's module doc; an unknown value is ignored), else MPay.
//! - Any `""` value anywhere in a request is F `PARAM_ILLEGAL` (§2.1).
//! - Entry Code `paymentUrl` and the Order Code `TEXT` QR value are both the cashier
//!   `{public base}/pay/{paymentId}`.
//! - A pending payment past its `paymentExpiryTime` (default 30 min; 3 min for codes)
//!   closes when next looked at, without a notification.
//! - The shopper's Cancel on the cashier closes the payment and notifies F
//!   `ORDER_IS_CLOSED`.
//! - Retry schedule of `notifyPayment` (not published by Alipay+, our choice):
//!   immediately, then 2 min, 10 min, 10 min, 1 h, 2 h, 6 h, 15 h (about 34 h).
//!   Every retry resends the bytes AND headers of the first attempt, its
//!   `Request-Time` included: whether Alipay+ re-signs retries is not published
//!   (§2.5, §11.5), and resending is the case a receiver's replay window must
//!   survive. The adapter's default window (36 h) covers the whole schedule.
//! - Times are written in +08:00 (Macau / Hong Kong) and the statement's day is the
//!   +08:00 calendar day.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, FixedOffset, NaiveDate, Offset, Utc};
use serde::{Deserialize, Serialize};

use super::wire::{self, ApiResult, ResultStatus, Scenario, codes};
use super::{AlipayPlusAdapter, AlipayPlusConfig};
use crate::brands::BrandRegistry;
use crate::contract::{AdapterError, AdapterId};
use crate::crypto::{RsaPrivateKey, RsaPublicKey};
use crate::money::{Currency, Money};
use crate::sandbox::{
    CodeBehaviour, Delivery, Dispatcher, Faults, LocalKeys, Outgoing, TimeScale, escape,
    fault_routes, pay_page, test_code,
};

/// The `Client-Id` of Sesame in local mode.
pub const LOCAL_CLIENT_ID: &str = "SESAME_LOCAL_ACQP";
/// The `acquirerId` the sandbox writes in notifications.
pub const ACQUIRER_ID: &str = "SESAME_SANDBOX_ACQUIRER";

/// Delays between `notifyPayment` attempts after the first (immediate) one.
pub const RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(2 * 60),
    Duration::from_secs(10 * 60),
    Duration::from_secs(10 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(2 * 60 * 60),
    Duration::from_secs(6 * 60 * 60),
    Duration::from_secs(15 * 60 * 60),
];

/// A waiting customer-code charge confirms itself after this much wallet time.
pub const CODE_CONFIRM_AFTER: Duration = Duration::from_secs(10);
const DEFAULT_ORDER_EXPIRY: chrono::Duration = chrono::Duration::minutes(30);
const DEFAULT_CODE_EXPIRY: chrono::Duration = chrono::Duration::minutes(3);
const CODE_LEN: usize = 24;
/// Legacy Alipay payment codes Alipay+ still accepts (§2.8): `28…`, 17 to 19 digits.
const LEGACY_PREFIX: &str = "28";
const LEGACY_MIN_LEN: usize = 17;
const LEGACY_MAX_LEN: usize = 19;
/// The length of the legacy codes the sandbox issues (the Alipay sandbox's form).
const LEGACY_ISSUED_LEN: usize = 18;
/// Who pays a legacy code: Alipay (mainland).
const LEGACY_BRAND: &str = "ALIPAY_CN";
const BUSINESS_TYPE_PAYMENT: &str = "02";
const MAX_ID_LEN: usize = 64;

/// An Alipay+ MPP the sandbox can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Psp {
    /// The §2.7 enum (`walletBrandName`), also the `psp` brand parameter.
    pub brand: &'static str,
    pub psp_id: &'static str,
    pub name: &'static str,
    /// The 6-digit code issuer identifier of its payment codes in the sandbox.
    pub code_issuer: Option<&'static str>,
}

/// wallets.md §2.7, with the sandbox CIIs of config/wallets.toml.
pub const PSPS: &[Psp] = &[
    Psp {
        brand: "MPAY",
        psp_id: "A111253100000000",
        name: "MPay",
        code_issuer: Some("280853"),
    },
    Psp {
        brand: "ALIPAY_HK",
        psp_id: "1022160000000000000",
        name: "AlipayHK",
        code_issuer: Some("280852"),
    },
    Psp {
        brand: "KAKAOPAY",
        psp_id: "1022172000000000001",
        name: "Kakao Pay",
        code_issuer: Some("280082"),
    },
    Psp {
        brand: "ALIPAY_CN",
        psp_id: "1022088000000000001",
        name: "Alipay",
        code_issuer: None,
    },
    Psp {
        brand: "NAVERPAY",
        psp_id: "2021234400000000",
        name: "NAVER Pay",
        code_issuer: None,
    },
    Psp {
        brand: "TOSSPAY",
        psp_id: "A111254300000000",
        name: "Toss",
        code_issuer: None,
    },
    Psp {
        brand: "GCASH",
        psp_id: "1022170000000000000",
        name: "GCash",
        code_issuer: None,
    },
    Psp {
        brand: "TNG",
        psp_id: "1022171000000000001",
        name: "TNG eWallet",
        code_issuer: None,
    },
    Psp {
        brand: "TRUEMONEY",
        psp_id: "1022167000000000001",
        name: "TrueMoney",
        code_issuer: None,
    },
];

const DEFAULT_PSP: &Psp = &PSPS[0];

fn psp_by_brand(brand: &str) -> Option<&'static Psp> {
    PSPS.iter().find(|p| p.brand == brand)
}

fn psp_by_id(psp_id: &str) -> Option<&'static Psp> {
    PSPS.iter().find(|p| p.psp_id == psp_id)
}

/// The MPP that issued a payment code, by the forms wallets.md §2.8 lists (digits
/// only, 17 to 32 long):
/// - 24 digits, CII(6) + BTI `02` + 16-digit user number: the MPP with that code
///   issuer (unknown issuers: `None`);
/// - the legacy Alipay forms `28` + 15 digits (17), `28` + 16 (18) and the 19-digit
///   `28[0-8]…` / `289…`: Alipay (mainland), pspId `1022088000000000001` — the
///   form of the Alipay sandbox's own codes;
/// - the reserved lengths 20–23 and 25–32 and anything else: `None`.
pub fn psp_for_code(code: &str) -> Option<&'static Psp> {
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match code.len() {
        LEGACY_MIN_LEN..=LEGACY_MAX_LEN if code.starts_with(LEGACY_PREFIX) => {
            psp_by_brand(LEGACY_BRAND)
        }
        CODE_LEN if &code[6..8] == BUSINESS_TYPE_PAYMENT => {
            PSPS.iter().find(|p| p.code_issuer == Some(&code[..6]))
        }
        _ => None,
    }
}

/// +08:00, the wallet's clock in Macau and Hong Kong.
fn local_offset() -> FixedOffset {
    // Always in range; the fallback only satisfies the type.
    FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| Utc.fix())
}

fn wallet_time(at: DateTime<Utc>) -> String {
    wire::format_time(&at.with_timezone(&local_offset()))
}

/// One freshly issued test payment code (`GET /test-codes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestCode {
    pub code: String,
    pub behaviour: CodeBehaviour,
    pub psp: &'static str,
    pub psp_id: &'static str,
    pub wallet: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Pending,
    Paid {
        at: DateTime<Utc>,
    },
    Failed {
        code: &'static str,
        message: String,
    },
    Closed {
        at: DateTime<Utc>,
        /// When a paid payment was reversed by `cancelPayment`: when it had been paid.
        reversed_paid_at: Option<DateTime<Utc>>,
    },
}

/// The fields whose change on a repeated `paymentRequestId` is an inconsistency.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyFields {
    scenario: Scenario,
    amount: i64,
    currency: Currency,
    code: Option<String>,
    merchant_id: String,
}

#[derive(Debug, Clone)]
struct Payment {
    request_id: String,
    payment_id: String,
    key: KeyFields,
    psp: &'static Psp,
    customer_id: String,
    merchant_name: String,
    description: String,
    notify_url: Option<String>,
    redirect_url: Option<String>,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    state: State,
}

impl Payment {
    fn amount(&self) -> wire::Amount {
        wire::Amount {
            currency: self.key.currency.code().to_owned(),
            value: self.key.amount.to_string(),
        }
    }

    fn display_amount(&self) -> String {
        Money::from_minor(self.key.amount, self.key.currency)
            .map(|m| m.to_string())
            .unwrap_or_else(|_| format!("{} {} (minor units)", self.key.amount, self.key.currency))
    }

    /// Lazy expiry: a pending payment past its expiry is closed.
    fn refresh(&mut self, now: DateTime<Utc>) {
        if self.state == State::Pending && now > self.expires_at {
            self.state = State::Closed {
                at: self.expires_at,
                reversed_paid_at: None,
            };
        }
    }

    fn payment_result(&self) -> ApiResult {
        match &self.state {
            State::Pending => ApiResult::new(
                ResultStatus::U,
                codes::PAYMENT_IN_PROCESS,
                "payment in process",
            ),
            State::Paid { .. } => ApiResult::success(),
            State::Failed { code, message } => ApiResult::new(ResultStatus::F, code, message),
            State::Closed { .. } => {
                ApiResult::new(ResultStatus::F, codes::ORDER_IS_CLOSED, "order is closed")
            }
        }
    }

    fn paid_at(&self) -> Option<DateTime<Utc>> {
        match self.state {
            State::Paid { at } => Some(at),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Refund {
    request_id: String,
    refund_id: String,
    payment_request_id: String,
    amount: i64,
    currency: Currency,
    at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Book {
    /// By `paymentRequestId`.
    payments: HashMap<String, Payment>,
    /// `paymentId` → `paymentRequestId`.
    ids: HashMap<String, String>,
    /// By `refundRequestId`.
    refunds: HashMap<String, Refund>,
    /// `paymentRequestId`s cancelled before any `pay` reached us: a late `pay` is closed.
    cancelled_unseen: HashSet<String>,
    serial: u64,
    code_serial: u64,
}

impl Book {
    fn next_id(&mut self, now: DateTime<Utc>, kind: &str) -> String {
        self.serial += 1;
        format!(
            "{}{kind}{:08}",
            now.with_timezone(&local_offset()).format("%Y%m%d%H%M%S"),
            self.serial
        )
    }

    fn refunded(&self, payment_request_id: &str) -> i64 {
        self.refunds
            .values()
            .filter(|r| r.payment_request_id == payment_request_id)
            .map(|r| r.amount)
            .sum()
    }

    fn find(&mut self, request_id: Option<&str>, payment_id: Option<&str>) -> Option<&mut Payment> {
        let key = match (request_id, payment_id) {
            (Some(request_id), Some(payment_id)) => {
                let found = self.ids.get(payment_id)?;
                if found != request_id {
                    return None;
                }
                found.clone()
            }
            (Some(request_id), None) => request_id.to_owned(),
            (None, Some(payment_id)) => self.ids.get(payment_id)?.clone(),
            (None, None) => return None,
        };
        self.payments.get_mut(&key)
    }
}

/// What the API handlers answer before signing: the `result` plus the body.
type Answer = serde_json::Value;

fn failure(status: ResultStatus, code: &str, message: &str) -> Answer {
    serde_json::to_value(wire::ResultOnly {
        result: ApiResult::new(status, code, message),
    })
    .unwrap_or_default()
}

fn illegal(message: &str) -> Answer {
    failure(ResultStatus::F, codes::PARAM_ILLEGAL, message)
}

fn answer<T: Serialize>(body: &T) -> Answer {
    serde_json::to_value(body).unwrap_or_default()
}

/// Alipay+'s server side, in memory.
pub struct AlipayPlusSandbox {
    client_id: String,
    key_version: u32,
    wallet_key: RsaPrivateKey,
    merchant_public: RsaPublicKey,
    base_url: String,
    book: Mutex<Book>,
    faults: Arc<Faults>,
    dispatcher: Dispatcher,
    time: TimeScale,
    registry: Option<BrandRegistry>,
}

impl std::fmt::Debug for AlipayPlusSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipayPlusSandbox")
            .field("client_id", &self.client_id)
            .field("base_url", &self.base_url)
            .field("time", &self.time)
            .finish_non_exhaustive()
    }
}

/// Builds a sandbox at `public_base_url` and an adapter configured to talk to it
/// (local mode and tests).
pub fn local(
    public_base_url: &str,
    keys: &LocalKeys,
    time: TimeScale,
) -> Result<(AlipayPlusAdapter, Arc<AlipayPlusSandbox>), AdapterError> {
    let sandbox = AlipayPlusSandbox::new(public_base_url, LOCAL_CLIENT_ID, keys, time)?;
    let merchant_key = copy_key(&keys.merchant)?;
    let wallet_public = keys.wallet.public_key().map_err(key_error)?;
    let adapter = AlipayPlusAdapter::new(AlipayPlusConfig::new(
        public_base_url,
        LOCAL_CLIENT_ID,
        merchant_key,
        wallet_public,
    ))?;
    Ok((adapter, sandbox))
}

fn key_error(e: crate::crypto::CryptoError) -> AdapterError {
    AdapterError::Malformed(format!("sandbox key: {e}"))
}

/// The headers of one notification attempt, signed with the current wallet time.
fn notify_headers(
    key: &RsaPrivateKey,
    key_version: u32,
    path: &str,
    client_id: &str,
    body: &[u8],
) -> Option<Vec<(String, String)>> {
    let time = wallet_time(Utc::now());
    let signature = wire::sign(key, key_version, path, client_id, &time, body).ok()?;
    Some(vec![
        (wire::HEADER_CLIENT_ID.to_owned(), client_id.to_owned()),
        (wire::HEADER_REQUEST_TIME.to_owned(), time),
        (wire::HEADER_SIGNATURE.to_owned(), signature),
        (
            "Content-Type".to_owned(),
            "application/json; charset=UTF-8".to_owned(),
        ),
    ])
}

/// Private keys are not `Clone` on purpose; the sandbox needs its own copy.
fn copy_key(key: &RsaPrivateKey) -> Result<RsaPrivateKey, AdapterError> {
    RsaPrivateKey::from_pem(&key.to_pkcs8_pem().map_err(key_error)?).map_err(key_error)
}

fn path_of(req: &HttpRequest) -> String {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.path().to_owned())
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    let mut values = req.headers().get_all(name);
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// Alipay+ refuses `""` for any field (§2.1: optional fields are omitted or
/// `null`): the first empty string found, by its JSON path, is `PARAM_ILLEGAL`.
fn no_empty_strings(body: &[u8]) -> Result<(), Answer> {
    fn find(value: &serde_json::Value, path: &mut Vec<String>) -> bool {
        match value {
            serde_json::Value::String(text) => text.is_empty(),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                path.push(i.to_string());
                let found = find(item, path);
                if !found {
                    path.pop();
                }
                found
            }),
            serde_json::Value::Object(fields) => fields.iter().any(|(name, item)| {
                path.push(name.clone());
                let found = find(item, path);
                if !found {
                    path.pop();
                }
                found
            }),
            _ => false,
        }
    }
    // An unreadable body is refused later, by the endpoint's own parsing.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(());
    };
    let mut path = Vec::new();
    if find(&value, &mut path) {
        return Err(illegal(&format!(
            "{} is an empty string; omit optional fields instead",
            path.join(".")
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Pay,
    Inquiry,
    Cancel,
    Refund,
}

impl AlipayPlusSandbox {
    pub fn new(
        public_base_url: &str,
        client_id: &str,
        keys: &LocalKeys,
        time: TimeScale,
    ) -> Result<Arc<AlipayPlusSandbox>, AdapterError> {
        let faults = Arc::new(Faults::default());
        Ok(Arc::new(AlipayPlusSandbox {
            client_id: client_id.to_owned(),
            key_version: 1,
            wallet_key: copy_key(&keys.wallet)?,
            merchant_public: keys.merchant.public_key().map_err(key_error)?,
            base_url: public_base_url.trim_end_matches('/').to_owned(),
            book: Mutex::new(Book::default()),
            dispatcher: Dispatcher::new(RETRY_SCHEDULE.to_vec(), time, faults.clone()),
            faults,
            time,
            registry: BrandRegistry::default_registry().ok(),
        }))
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Every callback attempt so far (also `GET /deliveries`).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.dispatcher.deliveries()
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers every route, relative to where the caller mounts the sandbox
    /// (`/sandbox/alipay_plus` in the gateway).
    pub fn configure(self: &Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::from(self.clone()))
            .route(
                wire::PAY_PATH,
                web::post().to(
                    |s: web::Data<Self>, r: HttpRequest, b: web::Bytes| async move {
                        s.into_inner().api(Endpoint::Pay, r, b).await
                    },
                ),
            )
            .route(
                wire::INQUIRY_PATH,
                web::post().to(
                    |s: web::Data<Self>, r: HttpRequest, b: web::Bytes| async move {
                        s.into_inner().api(Endpoint::Inquiry, r, b).await
                    },
                ),
            )
            .route(
                wire::CANCEL_PATH,
                web::post().to(
                    |s: web::Data<Self>, r: HttpRequest, b: web::Bytes| async move {
                        s.into_inner().api(Endpoint::Cancel, r, b).await
                    },
                ),
            )
            .route(
                wire::REFUND_PATH,
                web::post().to(
                    |s: web::Data<Self>, r: HttpRequest, b: web::Bytes| async move {
                        s.into_inner().api(Endpoint::Refund, r, b).await
                    },
                ),
            )
            .route("/pay/{id}", web::get().to(cashier_page))
            .route("/pay/{id}/confirm", web::post().to(cashier_confirm))
            .route("/pay/{id}/cancel", web::post().to(cashier_cancel))
            .route("/test-codes", web::get().to(test_codes_route))
            .route("/codes/{code}/confirm", web::post().to(code_confirm))
            .route("/statement", web::get().to(statement_route));
        fault_routes(cfg, self.faults.clone(), self.dispatcher.clone());
    }

    /// One API call: faults, authentication, the operation, a signed answer.
    async fn api(
        self: Arc<Self>,
        endpoint: Endpoint,
        req: HttpRequest,
        body: web::Bytes,
    ) -> HttpResponse {
        if self.faults.gate().await {
            return HttpResponse::InternalServerError().json(wire::ResultOnly {
                result: ApiResult::new(
                    ResultStatus::U,
                    codes::UNKNOWN_EXCEPTION,
                    "sandbox: injected failure",
                ),
            });
        }
        if let Some(answer) = self.faults.take_http_status() {
            return answer;
        }
        let path = path_of(&req);
        let client_id = header(&req, wire::HEADER_CLIENT_ID)
            .unwrap_or(&self.client_id)
            .to_owned();
        let outcome = match self
            .authenticate(&req, &path, &body)
            .and_then(|()| no_empty_strings(&body))
        {
            Err(refusal) => refusal,
            Ok(()) => {
                let now = Utc::now();
                match endpoint {
                    Endpoint::Pay => match serde_json::from_slice(&body) {
                        Ok(request) => self.pay(request, now),
                        Err(e) => illegal(&format!("pay body: {e}")),
                    },
                    Endpoint::Inquiry => match serde_json::from_slice(&body) {
                        Ok(request) => self.inquiry(request, now),
                        Err(e) => illegal(&format!("inquiryPayment body: {e}")),
                    },
                    Endpoint::Cancel => match serde_json::from_slice(&body) {
                        Ok(request) => self.cancel(request, now),
                        Err(e) => illegal(&format!("cancelPayment body: {e}")),
                    },
                    Endpoint::Refund => match serde_json::from_slice(&body) {
                        Ok(request) => self.refund(request, now),
                        Err(e) => illegal(&format!("refund body: {e}")),
                    },
                }
            }
        };
        self.signed(&path, &client_id, &outcome)
    }

    /// Alipay+'s checks of a request: our client, a time, our signature.
    fn authenticate(&self, req: &HttpRequest, path: &str, body: &[u8]) -> Result<(), Answer> {
        let client_id = header(req, wire::HEADER_CLIENT_ID)
            .ok_or_else(|| illegal("Client-Id header missing"))?;
        if client_id != self.client_id {
            return Err(failure(
                ResultStatus::F,
                codes::KEY_NOT_FOUND,
                "no key registered for this Client-Id",
            ));
        }
        let time = header(req, wire::HEADER_REQUEST_TIME)
            .filter(|t| wire::parse_time(t).is_some())
            .ok_or_else(|| illegal("Request-Time header missing or not ISO 8601"))?;
        let signature = header(req, wire::HEADER_SIGNATURE).ok_or_else(|| {
            failure(
                ResultStatus::F,
                codes::INVALID_SIGNATURE,
                "Signature header missing",
            )
        })?;
        wire::verify(
            &self.merchant_public,
            signature,
            path,
            client_id,
            time,
            body,
        )
        .map_err(|_| {
            failure(
                ResultStatus::F,
                codes::INVALID_SIGNATURE,
                "the signature is not validated",
            )
        })
    }

    fn signed(&self, path: &str, client_id: &str, outcome: &Answer) -> HttpResponse {
        let body = serde_json::to_vec(outcome).unwrap_or_default();
        let time = wallet_time(Utc::now());
        match wire::sign(
            &self.wallet_key,
            self.key_version,
            path,
            client_id,
            &time,
            &body,
        ) {
            Ok(signature) => HttpResponse::Ok()
                .insert_header((wire::HEADER_CLIENT_ID, client_id))
                .insert_header((wire::HEADER_RESPONSE_TIME, time))
                .insert_header((wire::HEADER_SIGNATURE, signature))
                .content_type("application/json; charset=UTF-8")
                .body(body),
            Err(_) => HttpResponse::InternalServerError().finish(),
        }
    }

    // -----------------------------------------------------------------------------
    // pay

    fn pay(self: &Arc<Self>, request: wire::PayRequest, now: DateTime<Utc>) -> Answer {
        let checked = match self.check_pay(&request, now) {
            Ok(checked) => checked,
            Err(refusal) => return refusal,
        };
        let (response, notify, confirm_later) = {
            let mut book = self.book();
            if book.cancelled_unseen.contains(&request.payment_request_id) {
                return failure(
                    ResultStatus::F,
                    codes::ORDER_IS_CLOSED,
                    "the payment request was cancelled",
                );
            }
            if let Some(existing) = book.payments.get_mut(&request.payment_request_id) {
                if existing.key != checked.key {
                    return failure(
                        ResultStatus::F,
                        codes::REPEAT_REQ_INCONSISTENT,
                        "paymentRequestId reused with different payment fields",
                    );
                }
                existing.refresh(now);
                return answer(&self.pay_response(existing));
            }
            let payment_id = book.next_id(now, "11");
            let customer_id = match &checked.key.code {
                Some(code) => format!("21{}", &code[code.len().saturating_sub(14)..]),
                None => format!("20{:014}", book.serial),
            };
            let mut payment = Payment {
                request_id: request.payment_request_id.clone(),
                payment_id: payment_id.clone(),
                psp: checked.psp,
                customer_id,
                merchant_name: request
                    .order
                    .merchant
                    .merchant_name
                    .clone()
                    .unwrap_or_else(|| checked.key.merchant_id.clone()),
                description: request.order.order_description.clone().unwrap_or_default(),
                notify_url: request.payment_notify_url.clone(),
                redirect_url: request.payment_redirect_url.clone(),
                expires_at: checked.expires_at,
                created_at: now,
                state: State::Pending,
                key: checked.key,
            };
            let mut confirm_later = false;
            if let Some(code) = &payment.key.code {
                match CodeBehaviour::of(code) {
                    CodeBehaviour::PaysAtOnce => payment.state = State::Paid { at: now },
                    CodeBehaviour::NeedsConfirmation => confirm_later = true,
                    CodeBehaviour::Declined => {
                        payment.state = State::Failed {
                            code: codes::USER_BALANCE_NOT_ENOUGH,
                            message: "the user's balance is not enough".into(),
                        }
                    }
                }
            }
            let notify = (payment.state != State::Pending)
                .then(|| self.notification(&payment))
                .flatten();
            let response = self.pay_response(&payment);
            book.ids.insert(payment_id, payment.request_id.clone());
            book.payments.insert(payment.request_id.clone(), payment);
            (response, notify, confirm_later)
        };
        if let Some(outgoing) = notify {
            self.dispatcher.dispatch(outgoing);
        }
        if confirm_later {
            let sandbox = self.clone();
            let request_id = request.payment_request_id.clone();
            let delay = self.time.scale(CODE_CONFIRM_AFTER);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                sandbox.confirm_by_request_id(&request_id);
            });
        }
        answer(&response)
    }

    fn check_pay(
        &self,
        request: &wire::PayRequest,
        now: DateTime<Utc>,
    ) -> Result<CheckedPay, Answer> {
        if request.product_code != wire::IN_STORE_PAYMENT {
            return Err(failure(
                ResultStatus::F,
                "PRODUCT_CODE_NOT_SUPPORT",
                "productCode must be IN_STORE_PAYMENT",
            ));
        }
        let id = &request.payment_request_id;
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(illegal("paymentRequestId must be 1 to 64 characters"));
        }
        let amount = request
            .payment_amount
            .to_money()
            .map_err(|e| illegal(&format!("paymentAmount: {e}")))?;
        if amount.is_zero() {
            return Err(illegal("paymentAmount must be positive"));
        }
        request
            .order
            .order_amount
            .to_money()
            .map_err(|e| illegal(&format!("order.orderAmount: {e}")))?;
        if request.payment_method.payment_method_type != wire::CONNECT_WALLET {
            return Err(failure(
                ResultStatus::F,
                codes::UNAVAILABLE_PAYMENT_METHOD,
                "paymentMethodType must be CONNECT_WALLET",
            ));
        }
        let merchant = &request.order.merchant;
        let Some(merchant_id) = merchant.reference_merchant_id.clone() else {
            return Err(illegal("order.merchant.referenceMerchantId is required"));
        };
        let scenario = request.payment_factor.in_store_payment_scenario;
        let needs_store = matches!(scenario, Scenario::EntryCode | Scenario::PaymentCode);
        if needs_store && merchant.store.is_none() {
            return Err(illegal(
                "order.merchant.store is required for this scenario",
            ));
        }
        let user_agent = request
            .order
            .env
            .as_ref()
            .and_then(|env| env.user_agent.as_deref());
        let expiry = match request.payment_expiry_time.as_deref() {
            Some(text) => wire::parse_time_utc(text)
                .ok_or_else(|| illegal("paymentExpiryTime is not ISO 8601"))?,
            None if scenario == Scenario::PaymentCode => now + DEFAULT_CODE_EXPIRY,
            None => now + DEFAULT_ORDER_EXPIRY,
        };
        let (psp, code) = match scenario {
            Scenario::PaymentCode => {
                let code = request
                    .payment_method
                    .payment_method_id
                    .clone()
                    .ok_or_else(|| illegal("paymentMethod.paymentMethodId is required"))?;
                let psp = psp_for_code(&code).ok_or_else(|| {
                    failure(
                        ResultStatus::F,
                        codes::USER_NOT_EXIST,
                        "the payment code belongs to no known wallet user",
                    )
                })?;
                (psp, Some(code))
            }
            Scenario::EntryCode | Scenario::OrderCode => {
                if scenario == Scenario::EntryCode {
                    if user_agent.is_none() {
                        return Err(illegal("order.env.userAgent is required for EntryCode"));
                    }
                    if request.payment_redirect_url.is_none() {
                        return Err(illegal("paymentRedirectUrl is required for EntryCode"));
                    }
                }
                if request.payment_notify_url.is_none() {
                    return Err(illegal("paymentNotifyUrl is required"));
                }
                (self.shoppers_wallet(request, user_agent), None)
            }
            Scenario::Unknown => {
                return Err(illegal("unsupported paymentFactor.inStorePaymentScenario"));
            }
        };
        Ok(CheckedPay {
            key: KeyFields {
                scenario,
                amount: amount.minor(),
                currency: amount.currency(),
                code,
                merchant_id,
            },
            psp,
            expires_at: expiry,
        })
    }

    /// The wallet a merchant-presented payment is paid with: the Alipay+ wallet the
    /// User-Agent names (how Alipay+ itself identifies it, §2.3), else the optional
    /// `walletBrandName` hint when it names one, else MPay. The hint never overrides
    /// the User-Agent and is never required.
    fn shoppers_wallet(
        &self,
        request: &wire::PayRequest,
        user_agent: Option<&str>,
    ) -> &'static Psp {
        let detected = user_agent
            .zip(self.registry.as_ref())
            .and_then(|(ua, registry)| registry.detect_by_user_agent(ua))
            .filter(|brand| brand.adapter() == AdapterId::AlipayPlus)
            .and_then(|brand| brand.psp_id())
            .and_then(psp_by_id);
        let hinted = || {
            request
                .payment_method
                .payment_method_meta_data
                .as_ref()
                .and_then(|m| m.wallet_brand_name.as_deref())
                .and_then(psp_by_brand)
        };
        detected.or_else(hinted).unwrap_or(DEFAULT_PSP)
    }

    fn cashier_url(&self, payment_id: &str) -> String {
        format!("{}/pay/{payment_id}", self.base_url)
    }

    fn pay_response(&self, payment: &Payment) -> wire::PayResponse {
        let paid_at = payment.paid_at();
        wire::PayResponse {
            result: payment.payment_result(),
            payment_request_id: Some(payment.request_id.clone()),
            payment_id: Some(payment.payment_id.clone()),
            payment_time: paid_at.map(wallet_time),
            payment_amount: Some(payment.amount()),
            customer_id: paid_at.map(|_| payment.customer_id.clone()),
            psp_id: paid_at.map(|_| payment.psp.psp_id.to_owned()),
            payment_url: (payment.key.scenario == Scenario::EntryCode)
                .then(|| self.cashier_url(&payment.payment_id)),
            order_code_form: (payment.key.scenario == Scenario::OrderCode).then(|| {
                wire::OrderCodeForm {
                    expire_time: Some(wallet_time(payment.expires_at)),
                    code_details: vec![wire::CodeDetail {
                        code_value: self.cashier_url(&payment.payment_id),
                        display_type: Some(wire::DISPLAY_TEXT.to_owned()),
                    }],
                }
            }),
        }
    }

    // -----------------------------------------------------------------------------
    // inquiryPayment, cancelPayment, refund

    fn inquiry(&self, request: wire::InquiryRequest, now: DateTime<Utc>) -> Answer {
        if request.payment_request_id.is_none() && request.payment_id.is_none() {
            return illegal("paymentRequestId or paymentId is required");
        }
        let mut book = self.book();
        let unseen_cancel = request
            .payment_request_id
            .as_ref()
            .is_some_and(|id| book.cancelled_unseen.contains(id));
        let Some(payment) = book.find(
            request.payment_request_id.as_deref(),
            request.payment_id.as_deref(),
        ) else {
            if unseen_cancel {
                return answer(&wire::InquiryResponse {
                    result: ApiResult::success(),
                    payment_result: Some(ApiResult::new(
                        ResultStatus::F,
                        codes::ORDER_IS_CLOSED,
                        "order is closed",
                    )),
                    payment_request_id: request.payment_request_id,
                    payment_id: None,
                    payment_time: None,
                    payment_amount: None,
                    customer_id: None,
                    psp_id: None,
                });
            }
            return failure(
                ResultStatus::F,
                codes::ORDER_NOT_EXIST,
                "the payment does not exist",
            );
        };
        payment.refresh(now);
        let paid_at = payment.paid_at();
        answer(&wire::InquiryResponse {
            result: ApiResult::success(),
            payment_result: Some(payment.payment_result()),
            payment_request_id: Some(payment.request_id.clone()),
            payment_id: Some(payment.payment_id.clone()),
            payment_time: paid_at.map(wallet_time),
            payment_amount: Some(payment.amount()),
            customer_id: paid_at.map(|_| payment.customer_id.clone()),
            psp_id: paid_at.map(|_| payment.psp.psp_id.to_owned()),
        })
    }

    fn cancel(&self, request: wire::CancelRequest, now: DateTime<Utc>) -> Answer {
        if request.payment_request_id.is_none() && request.payment_id.is_none() {
            return illegal("paymentRequestId or paymentId is required");
        }
        let mut book = self.book();
        let refunded = request
            .payment_request_id
            .as_deref()
            .or_else(|| {
                request
                    .payment_id
                    .as_deref()
                    .and_then(|id| book.ids.get(id).map(String::as_str))
            })
            .map(|id| book.refunded(id))
            .unwrap_or(0);
        let cancelled = |request_id: Option<String>, payment_id: Option<String>| {
            answer(&wire::CancelResponse {
                result: ApiResult::success(),
                payment_request_id: request_id,
                payment_id,
                cancel_time: Some(wallet_time(now)),
            })
        };
        match book.find(
            request.payment_request_id.as_deref(),
            request.payment_id.as_deref(),
        ) {
            Some(payment) => {
                payment.refresh(now);
                match payment.state.clone() {
                    State::Pending => {
                        payment.state = State::Closed {
                            at: now,
                            reversed_paid_at: None,
                        }
                    }
                    State::Paid { .. } if refunded > 0 => {
                        return failure(
                            ResultStatus::F,
                            codes::PROCESS_FAIL,
                            "the payment has refunds; refund the rest instead",
                        );
                    }
                    State::Paid { at } => {
                        payment.state = State::Closed {
                            at: now,
                            reversed_paid_at: Some(at),
                        }
                    }
                    State::Failed { .. } | State::Closed { .. } => {}
                }
                cancelled(
                    Some(payment.request_id.clone()),
                    Some(payment.payment_id.clone()),
                )
            }
            None => match (request.payment_request_id, request.payment_id) {
                (Some(request_id), None) if !book.payments.contains_key(&request_id) => {
                    book.cancelled_unseen.insert(request_id.clone());
                    cancelled(Some(request_id), None)
                }
                _ => failure(
                    ResultStatus::F,
                    codes::ORDER_NOT_EXIST,
                    "the payment does not exist",
                ),
            },
        }
    }

    fn refund(&self, request: wire::RefundRequest, now: DateTime<Utc>) -> Answer {
        let id = &request.refund_request_id;
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return illegal("refundRequestId must be 1 to 64 characters");
        }
        let amount = match request.refund_amount.to_money() {
            Ok(amount) if !amount.is_zero() => amount,
            Ok(_) => return illegal("refundAmount must be positive"),
            Err(e) => return illegal(&format!("refundAmount: {e}")),
        };
        let mut book = self.book();
        let Some(payment_request_id) = book.ids.get(&request.payment_id).cloned() else {
            return failure(
                ResultStatus::F,
                codes::ORDER_NOT_EXIST,
                "the payment does not exist",
            );
        };
        if let Some(existing) = book.refunds.get(id) {
            if existing.payment_request_id != payment_request_id
                || existing.amount != amount.minor()
                || existing.currency != amount.currency()
            {
                return failure(
                    ResultStatus::F,
                    codes::REPEAT_REQ_INCONSISTENT,
                    "refundRequestId reused with different refund fields",
                );
            }
            return answer(&refund_response(existing));
        }
        let refunded = book.refunded(&payment_request_id);
        let Some(payment) = book.payments.get_mut(&payment_request_id) else {
            return failure(
                ResultStatus::F,
                codes::ORDER_NOT_EXIST,
                "the payment does not exist",
            );
        };
        payment.refresh(now);
        if !matches!(payment.state, State::Paid { .. }) {
            return failure(
                ResultStatus::F,
                codes::ORDER_STATUS_INVALID,
                "only a successful payment can be refunded",
            );
        }
        if amount.currency() != payment.key.currency {
            return failure(
                ResultStatus::F,
                codes::CURRENCY_NOT_SUPPORT,
                "refund currency differs from the payment currency",
            );
        }
        if refunded + amount.minor() > payment.key.amount {
            return failure(
                ResultStatus::F,
                codes::REFUND_AMOUNT_EXCEED,
                "the total refund amount exceeds the payment amount",
            );
        }
        let refund = Refund {
            request_id: id.clone(),
            refund_id: book.next_id(now, "12"),
            payment_request_id,
            amount: amount.minor(),
            currency: amount.currency(),
            at: now,
        };
        let response = refund_response(&refund);
        book.refunds.insert(id.clone(), refund);
        answer(&response)
    }

    // -----------------------------------------------------------------------------
    // The shopper's side: confirm, cancel, notify

    fn notification(&self, payment: &Payment) -> Option<Outgoing> {
        let url = payment.notify_url.as_deref()?;
        let parsed = reqwest::Url::parse(url).ok()?;
        let path = match parsed.query() {
            Some(query) => format!("{}?{query}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        let paid_at = payment.paid_at();
        let notify = wire::Notify {
            payment_result: payment.payment_result(),
            payment_request_id: payment.request_id.clone(),
            payment_id: Some(payment.payment_id.clone()),
            acquirer_id: Some(ACQUIRER_ID.to_owned()),
            psp_id: paid_at.map(|_| payment.psp.psp_id.to_owned()),
            customer_id: paid_at.map(|_| payment.customer_id.clone()),
            payment_time: paid_at.map(wallet_time),
            payment_amount: payment.amount(),
        };
        let body = serde_json::to_vec(&notify).ok()?;
        let headers = notify_headers(
            &self.wallet_key,
            self.key_version,
            &path,
            &self.client_id,
            &body,
        )?;
        Some(Outgoing {
            url: url.to_owned(),
            headers,
            body,
            acked: wire::NotifyAck::is_ack,
            // Whether Alipay+ re-signs a retry is not published (wallets.md §2.5,
            // §11.5): the sandbox takes the harder case and resends the first
            // attempt's bytes and headers, `Request-Time` included.
            resign: None,
        })
    }

    /// The shopper pays (cashier Pay, code confirmation). Paying twice is a no-op.
    fn confirm(&self, request_id: &str) -> Result<Payment, Refusal> {
        let now = Utc::now();
        let (payment, notify) = {
            let mut book = self.book();
            let payment = book.payments.get_mut(request_id).ok_or(Refusal::NotFound)?;
            payment.refresh(now);
            match payment.state {
                State::Pending => {
                    payment.state = State::Paid { at: now };
                    (payment.clone(), self.notification(payment))
                }
                State::Paid { .. } => (payment.clone(), None),
                State::Failed { .. } | State::Closed { .. } => return Err(Refusal::NotPayable),
            }
        };
        if let Some(outgoing) = notify {
            self.dispatcher.dispatch(outgoing);
        }
        Ok(payment)
    }

    fn confirm_by_request_id(&self, request_id: &str) {
        // A code charge the shopper already confirmed, or that expired, stays as is.
        let _ = self.confirm(request_id);
    }

    /// The shopper cancels on the cashier: closed, notified F `ORDER_IS_CLOSED`.
    fn shopper_cancel(&self, request_id: &str) -> Result<Payment, Refusal> {
        let now = Utc::now();
        let (payment, notify) = {
            let mut book = self.book();
            let payment = book.payments.get_mut(request_id).ok_or(Refusal::NotFound)?;
            payment.refresh(now);
            match payment.state {
                State::Pending => {
                    payment.state = State::Closed {
                        at: now,
                        reversed_paid_at: None,
                    };
                    (payment.clone(), self.notification(payment))
                }
                State::Closed { .. } | State::Failed { .. } => (payment.clone(), None),
                State::Paid { .. } => return Err(Refusal::NotPayable),
            }
        };
        if let Some(outgoing) = notify {
            self.dispatcher.dispatch(outgoing);
        }
        Ok(payment)
    }

    fn request_id_of(&self, payment_id: &str) -> Option<String> {
        self.book().ids.get(payment_id).cloned()
    }

    fn payment(&self, payment_id: &str) -> Option<Payment> {
        let now = Utc::now();
        let mut book = self.book();
        let request_id = book.ids.get(payment_id)?.clone();
        let payment = book.payments.get_mut(&request_id)?;
        payment.refresh(now);
        Some(payment.clone())
    }

    /// Freshly issued test codes: one per wallet with a code issuer and behaviour.
    pub fn test_codes(&self) -> Vec<TestCode> {
        let mut book = self.book();
        let mut codes = Vec::new();
        for psp in PSPS {
            let (prefix, len) = match psp.code_issuer {
                Some(issuer) => (format!("{issuer}{BUSINESS_TYPE_PAYMENT}"), CODE_LEN),
                None if psp.brand == LEGACY_BRAND => (LEGACY_PREFIX.to_owned(), LEGACY_ISSUED_LEN),
                None => continue,
            };
            for behaviour in [
                CodeBehaviour::PaysAtOnce,
                CodeBehaviour::NeedsConfirmation,
                CodeBehaviour::Declined,
            ] {
                book.code_serial += 1;
                codes.push(TestCode {
                    code: test_code(&prefix, len, behaviour, book.code_serial),
                    behaviour,
                    psp: psp.brand,
                    psp_id: psp.psp_id,
                    wallet: psp.name,
                });
            }
        }
        codes
    }

    /// The shopper confirms the latest waiting charge of `code`.
    pub fn confirm_code(&self, code: &str) -> Option<String> {
        let request_id = {
            let book = self.book();
            book.payments
                .values()
                .filter(|p| p.key.code.as_deref() == Some(code) && p.state == State::Pending)
                .max_by_key(|p| p.created_at)
                .map(|p| p.request_id.clone())?
        };
        self.confirm(&request_id).ok().map(|p| p.payment_id)
    }

    /// The settlement-style CSV of `date` (+08:00 day): one row per payment,
    /// reversal (CANCEL) and refund that moved money that day.
    pub fn statement(&self, date: NaiveDate) -> String {
        let offset = local_offset();
        let on_day = |at: &DateTime<Utc>| at.with_timezone(&offset).date_naive() == date;
        let book = self.book();
        let mut rows: Vec<(DateTime<Utc>, String)> = Vec::new();
        for payment in book.payments.values() {
            let row = |kind: &str, id: &str, original: &str, at: DateTime<Utc>| {
                format!(
                    "{id},{},{original},{},{kind},{},{},{}",
                    payment.request_id,
                    payment.psp.psp_id,
                    payment.key.amount,
                    payment.key.currency,
                    wallet_time(at)
                )
            };
            let (paid_at, reversed_at) = match payment.state {
                State::Paid { at } => (Some(at), None),
                State::Closed {
                    at,
                    reversed_paid_at: Some(paid),
                } => (Some(paid), Some(at)),
                _ => (None, None),
            };
            if let Some(at) = paid_at.filter(on_day) {
                rows.push((at, row("PAYMENT", &payment.payment_id, "", at)));
            }
            if let Some(at) = reversed_at.filter(on_day) {
                let id = format!("{}C", payment.payment_id);
                rows.push((at, row("CANCEL", &id, &payment.payment_id, at)));
            }
        }
        for refund in book.refunds.values().filter(|r| on_day(&r.at)) {
            let Some(payment) = book.payments.get(&refund.payment_request_id) else {
                continue;
            };
            rows.push((
                refund.at,
                format!(
                    "{},{},{},{},REFUND,{},{},{}",
                    refund.refund_id,
                    refund.request_id,
                    payment.payment_id,
                    payment.psp.psp_id,
                    refund.amount,
                    refund.currency,
                    wallet_time(refund.at)
                ),
            ));
        }
        rows.sort();
        let mut csv = String::from(STATEMENT_HEADER);
        csv.push('\n');
        for (_, row) in rows {
            csv.push_str(&row);
            csv.push('\n');
        }
        csv
    }
}

/// Columns of the statement, in the style of an Alipay+ settlement file.
pub const STATEMENT_HEADER: &str = "transactionId,transactionRequestId,originalTransactionId,pspId,transactionType,transactionAmountValue,transactionAmountCurrency,transactionTime";

struct CheckedPay {
    key: KeyFields,
    psp: &'static Psp,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotFound,
    NotPayable,
}

fn refund_response(refund: &Refund) -> wire::RefundResponse {
    wire::RefundResponse {
        result: ApiResult::success(),
        refund_request_id: Some(refund.request_id.clone()),
        refund_id: Some(refund.refund_id.clone()),
        refund_time: Some(wallet_time(refund.at)),
        refund_amount: Some(wire::Amount {
            currency: refund.currency.code().to_owned(),
            value: refund.amount.to_string(),
        }),
    }
}

fn small_page(status: actix_web::http::StatusCode, title: &str, text: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{title}</title></head>\
<body><p>Alipay+ SANDBOX</p><h1 id=\"status\">{title}</h1><p>{text}</p></body></html>",
            title = escape(title),
            text = escape(text),
        ))
}

fn refusal_page(refusal: Refusal) -> HttpResponse {
    use actix_web::http::StatusCode;
    match refusal {
        Refusal::NotFound => small_page(StatusCode::NOT_FOUND, "Not found", "No such payment."),
        Refusal::NotPayable => small_page(
            StatusCode::CONFLICT,
            "Closed",
            "This payment can no longer be paid or cancelled.",
        ),
    }
}

fn see_other(url: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, url))
        .finish()
}

async fn cashier_page(
    sandbox: web::Data<AlipayPlusSandbox>,
    id: web::Path<String>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let Some(payment) = sandbox.payment(&id) else {
        return refusal_page(Refusal::NotFound);
    };
    match payment.state {
        State::Pending => pay_page(
            &format!("{} (Alipay+)", payment.psp.name),
            &payment.merchant_name,
            &payment.display_amount(),
            &payment.description,
            &format!("{}/pay/{}/confirm", sandbox.base_url, payment.payment_id),
            &format!("{}/pay/{}/cancel", sandbox.base_url, payment.payment_id),
        ),
        State::Paid { .. } => small_page(StatusCode::OK, "Paid", &payment.display_amount()),
        State::Failed { .. } | State::Closed { .. } => refusal_page(Refusal::NotPayable),
    }
}

async fn cashier_confirm(
    sandbox: web::Data<AlipayPlusSandbox>,
    id: web::Path<String>,
) -> HttpResponse {
    let Some(request_id) = sandbox.request_id_of(&id) else {
        return refusal_page(Refusal::NotFound);
    };
    match sandbox.confirm(&request_id) {
        Ok(payment) => match payment.redirect_url.as_deref() {
            Some(url) => see_other(url),
            None => small_page(
                actix_web::http::StatusCode::OK,
                "Paid",
                &payment.display_amount(),
            ),
        },
        Err(refusal) => refusal_page(refusal),
    }
}

async fn cashier_cancel(
    sandbox: web::Data<AlipayPlusSandbox>,
    id: web::Path<String>,
) -> HttpResponse {
    let Some(request_id) = sandbox.request_id_of(&id) else {
        return refusal_page(Refusal::NotFound);
    };
    match sandbox.shopper_cancel(&request_id) {
        Ok(payment) => match payment.redirect_url.as_deref() {
            Some(url) => see_other(url),
            None => small_page(
                actix_web::http::StatusCode::OK,
                "Cancelled",
                "The payment was cancelled.",
            ),
        },
        Err(refusal) => refusal_page(refusal),
    }
}

async fn test_codes_route(sandbox: web::Data<AlipayPlusSandbox>) -> HttpResponse {
    HttpResponse::Ok().json(sandbox.test_codes())
}

async fn code_confirm(
    sandbox: web::Data<AlipayPlusSandbox>,
    code: web::Path<String>,
) -> HttpResponse {
    match sandbox.confirm_code(&code) {
        Some(payment_id) => HttpResponse::Ok().json(serde_json::json!({
            "paymentId": payment_id,
            "resultStatus": "S",
        })),
        None => HttpResponse::NotFound().json(serde_json::json!({
            "error": "no payment waiting for this code",
        })),
    }
}

#[derive(Debug, Deserialize)]
struct StatementQuery {
    date: String,
}

async fn statement_route(
    sandbox: web::Data<AlipayPlusSandbox>,
    query: web::Query<StatementQuery>,
) -> HttpResponse {
    match NaiveDate::parse_from_str(&query.date, "%Y-%m-%d") {
        Ok(date) => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(sandbox.statement(date)),
        Err(_) => HttpResponse::BadRequest().json(serde_json::json!({
            "error": "date must be YYYY-MM-DD",
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_codes_map_to_their_issuer() {
        assert_eq!(
            psp_for_code("280853020000000000010000").map(|p| p.brand),
            Some("MPAY")
        );
        assert_eq!(
            psp_for_code("280852020000000000010000").map(|p| p.psp_id),
            Some("1022160000000000000")
        );
        assert_eq!(
            psp_for_code("280082020000000000010000").map(|p| p.psp_id),
            Some("1022172000000000001")
        );
        // Wrong business type, reserved length, unknown issuer, not digits.
        assert_eq!(psp_for_code("280853010000000000010000"), None);
        assert_eq!(psp_for_code("28085302000000000001000"), None);
        assert_eq!(psp_for_code("281234020000000000010000"), None);
        assert_eq!(psp_for_code("28085302000000000001000x"), None);
        assert_eq!(psp_for_code("2808530200000000000100001"), None);
    }

    #[test]
    fn legacy_alipay_codes_of_17_to_19_digits_pay_as_alipay_cn() {
        for code in [
            "28123456789010000",
            "281234567890120000",
            "2812345678901230000",
            "2891234567890120000",
        ] {
            assert_eq!(
                psp_for_code(code).map(|p| (p.brand, p.psp_id)),
                Some(("ALIPAY_CN", "1022088000000000001")),
                "{code}"
            );
        }
        // The Alipay sandbox's own codes are of this form.
        let alipay_code = test_code(
            crate::alipay::sandbox::CODE_PREFIX,
            crate::alipay::sandbox::CODE_LENGTH,
            CodeBehaviour::PaysAtOnce,
            7,
        );
        assert_eq!(
            psp_for_code(&alipay_code).map(|p| p.brand),
            Some("ALIPAY_CN")
        );
        // 16 digits (too short for Alipay+), other legacy prefixes, 20 digits.
        for code in [
            "2812345678900000",
            "25123456789010000",
            "28123456789012300000",
        ] {
            assert_eq!(psp_for_code(code), None, "{code}");
        }
    }

    #[test]
    fn issued_test_codes_have_the_right_issuer_length_and_behaviour() {
        let keys = LocalKeys::generate().unwrap();
        let sandbox = AlipayPlusSandbox::new(
            "http://x/sandbox/alipay_plus",
            LOCAL_CLIENT_ID,
            &keys,
            TimeScale::REAL_TIME,
        )
        .unwrap();
        let codes = sandbox.test_codes();
        assert_eq!(codes.len(), 12);
        for code in &codes {
            let len = if code.psp == LEGACY_BRAND {
                LEGACY_ISSUED_LEN
            } else {
                CODE_LEN
            };
            assert_eq!(code.code.len(), len);
            assert_eq!(psp_for_code(&code.code).map(|p| p.brand), Some(code.psp));
            assert_eq!(CodeBehaviour::of(&code.code), code.behaviour);
        }
        let again = sandbox.test_codes();
        assert!(codes.iter().zip(&again).all(|(a, b)| a.code != b.code));
    }

    #[test]
    fn statement_of_an_empty_day_is_the_header_only() {
        let keys = LocalKeys::generate().unwrap();
        let sandbox =
            AlipayPlusSandbox::new("http://x", LOCAL_CLIENT_ID, &keys, TimeScale::REAL_TIME)
                .unwrap();
        let csv = sandbox.statement(NaiveDate::from_ymd_opt(2024, 5, 1).unwrap());
        assert_eq!(csv, format!("{STATEMENT_HEADER}\n"));
    }
}
