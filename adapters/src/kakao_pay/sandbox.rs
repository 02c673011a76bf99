//! Kakao Pay sandbox: the wallet's server side of the online single-payment API,
//! for local mode and tests.
//!
//! Owns: an in-memory payment book, the four API endpoints (checking the
//! `SECRET_KEY` header and the `cid` exactly as Kakao would, answering Kakao's
//! error body on refusal), the shopper's cashier (`/pay/{tid}` with Pay / Cancel,
//! plus `/pay/{tid}/fail` to simulate a failed password) that redirects to the
//! merchant's approval / cancel / fail URL with a one-time `pg_token`, a daily
//! statement, and the kit's fault routes.
//! Must never: be mounted in production configuration, send any callback (Kakao
//! has none, so its dispatcher's schedule is empty and it is never given work),
//! or let a `pg_token` approve twice.
//!
//! Modelled behaviour beyond what is public (see `kakao_pay/mod.rs`): `cancel` on
//! a payment still waiting for approval, sent with `cancel_available_amount: 0`,
//! aborts it (`CANCEL_PAYMENT`, nothing captured, no `approved_at`; without that
//! field it is refused with `-725`); `cancel_available_amount` is checked when sent
//! (`-709`). Like the real wallet (wallets.md §4.4), `cancel` has NO idempotency:
//! the `payload` is only stored on the `CANCEL` entry of `payment_action_details`,
//! and the same request sent twice cancels twice unless its
//! `cancel_available_amount` makes the second one fail. There is no tid
//! expiry (Kakao's validity window is not public, wallets.md §11.11). The statement
//! and `/test-codes` are unauthenticated sandbox conveniences: this rail has no
//! customer payment codes, so `/test-codes` is always `[]`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{self, Amount, Status, codes};
use super::{KakaoPayAdapter, KakaoPayConfig, SecretKey};
use crate::contract::AdapterError;
use crate::crypto::{HmacSha256Key, constant_time_eq, random_bytes};
use crate::money::{Currency, Money};
use crate::sandbox::{Dispatcher, Faults, LocalKeys, TimeScale, escape, fault_routes, pay_page};

pub const WALLET_NAME: &str = "Kakao Pay";
/// The merchant registered for the sandbox's cid, shown in the cashier (Kakao
/// shows the name registered for the cid; `ready` carries no merchant name).
pub const SANDBOX_MERCHANT_NAME: &str = "Sesame Sandbox Merchant";

/// The local-mode secret key: `DEV` + the first 40 upper-case hex digits of
/// HMAC-SHA256(`LocalKeys.secret`, `"sesame/kakao_pay/secret_key"`), shaped like a
/// Kakao test secret and never equal to the raw local secret other wallets use.
pub fn local_secret_key(keys: &LocalKeys) -> Result<SecretKey, AdapterError> {
    let tag = HmacSha256Key::new(&keys.secret).sign_hex_upper(b"sesame/kakao_pay/secret_key");
    SecretKey::new(format!("DEV{}", tag.get(..40).unwrap_or(&tag)))
}

/// A sandbox and an adapter configured to talk to it (cid `TC0ONETIME`, secret
/// from [`local_secret_key`]; the RSA keys of `keys` are not used by Kakao).
pub fn local(
    public_base_url: &str,
    keys: &LocalKeys,
    time: TimeScale,
) -> Result<(KakaoPayAdapter, Arc<KakaoPaySandbox>), AdapterError> {
    let secret = local_secret_key(keys)?;
    let sandbox = KakaoPaySandbox::new(public_base_url, wire::TEST_CID, secret.clone(), time);
    let adapter =
        KakaoPayAdapter::new(KakaoPayConfig::new(public_base_url, wire::TEST_CID, secret))?;
    Ok((adapter, sandbox))
}

#[derive(Debug)]
pub struct KakaoPaySandbox {
    base_url: String,
    cid: String,
    secret_key: SecretKey,
    book: Mutex<Book>,
    faults: Arc<Faults>,
    dispatcher: Dispatcher,
}

#[derive(Debug, Default)]
struct Book {
    payments: HashMap<String, Payment>,
    serial: u64,
}

impl Book {
    /// 20-character ids like Kakao's (`T…` tid, `A…` aid): a letter, the Unix
    /// second and a 9-digit serial.
    fn next_id(&mut self, prefix: char) -> String {
        self.serial += 1;
        format!(
            "{prefix}{:010}{:09}",
            Utc::now().timestamp().rem_euclid(10_000_000_000),
            self.serial % 1_000_000_000
        )
    }
}

#[derive(Debug, Clone)]
struct Payment {
    tid: String,
    partner_order_id: String,
    partner_user_id: String,
    item_name: String,
    quantity: u32,
    total: i64,
    tax_free: i64,
    vat: i64,
    approval_url: String,
    cancel_url: String,
    fail_url: String,
    status: Status,
    created_at: DateTime<Utc>,
    approved_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
    /// Issued when the shopper authenticates in the cashier, consumed by approve.
    pg_token: Option<String>,
    canceled: i64,
    canceled_tax_free: i64,
    canceled_vat: i64,
    actions: Vec<wire::PaymentAction>,
}

impl Payment {
    fn approved(&self) -> bool {
        self.approved_at.is_some()
    }

    fn cancel_available(&self) -> i64 {
        if self.approved() {
            self.total - self.canceled
        } else {
            0
        }
    }

    fn amount(&self) -> Amount {
        Amount {
            total: self.total,
            tax_free: self.tax_free,
            vat: self.vat,
            ..Amount::default()
        }
    }

    fn canceled_amount(&self) -> Amount {
        Amount {
            total: self.canceled,
            tax_free: self.canceled_tax_free,
            vat: self.canceled_vat,
            ..Amount::default()
        }
    }

    fn available_amount(&self) -> Amount {
        let available = self.cancel_available();
        if available == 0 {
            return Amount::default();
        }
        Amount {
            total: available,
            tax_free: self.tax_free - self.canceled_tax_free,
            vat: self.vat - self.canceled_vat,
            ..Amount::default()
        }
    }

    fn method(&self) -> Option<String> {
        self.approved().then(|| "MONEY".to_owned())
    }

    fn order_response(&self, cid: &str) -> wire::OrderResponse {
        wire::OrderResponse {
            tid: self.tid.clone(),
            cid: cid.to_owned(),
            status: self.status.as_str().to_owned(),
            partner_order_id: self.partner_order_id.clone(),
            partner_user_id: self.partner_user_id.clone(),
            payment_method_type: self.method(),
            amount: self.amount(),
            canceled_amount: Some(self.canceled_amount()),
            cancel_available_amount: Some(self.available_amount()),
            item_name: Some(self.item_name.clone()),
            quantity: Some(self.quantity),
            created_at: Some(wire::format_time(self.created_at)),
            approved_at: self.approved_at.map(wire::format_time),
            canceled_at: self.canceled_at.map(wire::format_time),
            payment_action_details: self.actions.clone(),
        }
    }

    fn cancel_response(
        &self,
        cid: &str,
        aid: String,
        this: Amount,
        payload: Option<String>,
    ) -> wire::CancelResponse {
        wire::CancelResponse {
            aid,
            tid: self.tid.clone(),
            cid: cid.to_owned(),
            status: self.status.as_str().to_owned(),
            partner_order_id: self.partner_order_id.clone(),
            partner_user_id: self.partner_user_id.clone(),
            payment_method_type: self.method(),
            amount: self.amount(),
            approved_cancel_amount: this,
            canceled_amount: self.canceled_amount(),
            cancel_available_amount: self.available_amount(),
            item_name: Some(self.item_name.clone()),
            quantity: Some(self.quantity),
            created_at: Some(wire::format_time(self.created_at)),
            approved_at: self.approved_at.map(wire::format_time),
            canceled_at: self.canceled_at.map(wire::format_time),
            payload,
        }
    }
}

/// Kakao's refusal: HTTP status and its error body.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: i64,
    message: String,
}

impl Refusal {
    /// Kakao's HTTP 500 answer (injected faults).
    fn internal() -> Refusal {
        Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: codes::INTERNAL,
            message: "internal server error".into(),
        }
    }

    fn bad(code: i64, message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    fn response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(wire::ErrorBody {
            error_code: self.code,
            error_message: self.message.clone(),
            extras: None,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Api {
    Ready,
    Approve,
    Order,
    Cancel,
}

/// Kakao's default VAT: (taxable) / 11, rounded half up.
fn default_vat(taxable: i64) -> i64 {
    (taxable * 2 + 11) / 22
}

fn http_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2048
        && !url.bytes().any(|b| b.is_ascii_control() || b == b' ')
}

fn field(name: &str, value: &str) -> Result<(), Refusal> {
    let chars = value.chars().count();
    if chars == 0 || chars > wire::MAX_FIELD_CHARS {
        return Err(Refusal::bad(
            codes::INVALID_PARAMS,
            format!("{name} must be 1 to 100 characters"),
        ));
    }
    Ok(())
}

fn payload_ok(payload: &Option<String>) -> Result<(), Refusal> {
    match payload {
        Some(p) if p.chars().count() > wire::MAX_PAYLOAD_CHARS => Err(Refusal::bad(
            codes::INVALID_PARAMS,
            "payload must be at most 200 characters",
        )),
        _ => Ok(()),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        Refusal::bad(
            codes::INVALID_PARAMS,
            format!("invalid request parameters: {e}"),
        )
    })
}

fn respond<T: Serialize>(result: Result<T, Refusal>) -> HttpResponse {
    match result {
        Ok(body) => HttpResponse::Ok().json(body),
        Err(refusal) => refusal.response(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn page(status: StatusCode, text: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>{WALLET_NAME} sandbox</title><p>{}</p></html>",
            escape(text)
        ))
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[derive(Debug, serde::Deserialize)]
struct StatementQuery {
    date: String,
}

impl KakaoPaySandbox {
    /// `public_base_url` is where the sandbox is reachable (its cashier links
    /// start with it), e.g. `http://127.0.0.1:8080/sandbox/kakao_pay`.
    pub fn new(
        public_base_url: &str,
        cid: &str,
        secret_key: SecretKey,
        time: TimeScale,
    ) -> Arc<KakaoPaySandbox> {
        let faults = Arc::new(Faults::default());
        Arc::new(KakaoPaySandbox {
            base_url: public_base_url.trim_end_matches('/').to_owned(),
            cid: cid.to_owned(),
            secret_key,
            book: Mutex::new(Book::default()),
            // Kakao Pay sends no callbacks: an empty schedule, and nothing dispatched.
            dispatcher: Dispatcher::new(Vec::new(), time, faults.clone()),
            faults,
        })
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// How many payments `ready` has created (tests: a refused call created none).
    pub fn payment_count(&self) -> usize {
        lock(&self.book).payments.len()
    }

    /// Registers every route, relative to where the caller mounts the sandbox.
    pub fn configure(self: &Arc<Self>, cfg: &mut web::ServiceConfig) {
        fault_routes(cfg, self.faults.clone(), self.dispatcher.clone());
        cfg.route(wire::READY_PATH, self.api_route(Api::Ready))
            .route(wire::APPROVE_PATH, self.api_route(Api::Approve))
            .route(wire::ORDER_PATH, self.api_route(Api::Order))
            .route(wire::CANCEL_PATH, self.api_route(Api::Cancel));
        let s = self.clone();
        cfg.route(
            "/pay/{tid}",
            web::get().to(move |tid: web::Path<String>| {
                let s = s.clone();
                async move { s.cashier(&tid) }
            }),
        );
        for (path, outcome) in [
            ("/pay/{tid}/confirm", Status::AuthPassword),
            ("/pay/{tid}/cancel", Status::QuitPayment),
            ("/pay/{tid}/fail", Status::FailAuthPassword),
        ] {
            let s = self.clone();
            cfg.route(
                path,
                web::post().to(move |tid: web::Path<String>| {
                    let s = s.clone();
                    async move { s.shopper_acts(&tid, outcome) }
                }),
            );
        }
        cfg.route(
            "/test-codes",
            web::get().to(|| async { HttpResponse::Ok().json(Vec::<String>::new()) }),
        )
        .route(
            "/codes/{code}/confirm",
            web::post().to(|| async {
                HttpResponse::NotFound().json(wire::ErrorBody {
                    error_code: codes::INVALID_PARAMS,
                    error_message: "kakao pay online has no customer payment codes".into(),
                    extras: None,
                })
            }),
        );
        let s = self.clone();
        cfg.route(
            "/statement",
            web::get().to(move |query: web::Query<StatementQuery>| {
                let s = s.clone();
                async move { s.statement(&query.date) }
            }),
        );
    }

    fn api_route(self: &Arc<Self>, api: Api) -> actix_web::Route {
        let s = self.clone();
        web::post().to(move |req: HttpRequest, body: web::Bytes| {
            let s = s.clone();
            async move { s.api(api, &req, &body).await }
        })
    }

    async fn api(&self, api: Api, req: &HttpRequest, body: &[u8]) -> HttpResponse {
        if self.faults.gate().await {
            return Refusal::internal().response();
        }
        if let Some(answer) = self.faults.take_http_status() {
            return answer;
        }
        if let Err(refusal) = self.authorize(req) {
            return refusal.response();
        }
        match api {
            Api::Ready => respond(parse(body).and_then(|r| self.ready(r))),
            Api::Approve => respond(parse(body).and_then(|r| self.approve(r))),
            Api::Order => respond(parse(body).and_then(|r| self.order(r))),
            Api::Cancel => {
                let done = parse(body).and_then(|r| self.cancel(r));
                if done.is_ok() && self.faults.take_lost_answer() {
                    // The cancel took effect; the merchant never sees its answer.
                    return Refusal::internal().response();
                }
                respond(done)
            }
        }
    }

    fn authorize(&self, req: &HttpRequest) -> Result<(), Refusal> {
        let mut values = req.headers().get_all(header::AUTHORIZATION);
        let secret = match (values.next(), values.next()) {
            (Some(value), None) => value
                .to_str()
                .ok()
                .and_then(wire::secret_from_authorization),
            _ => None,
        };
        match secret {
            Some(secret)
                if constant_time_eq(secret.as_bytes(), self.secret_key.expose().as_bytes()) =>
            {
                Ok(())
            }
            _ => Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                code: codes::UNAUTHORIZED,
                message: "invalid secret key".into(),
            }),
        }
    }

    fn check_cid(&self, cid: &str) -> Result<(), Refusal> {
        if cid != self.cid {
            return Err(Refusal::bad(codes::INVALID_CID, "invalid cid"));
        }
        Ok(())
    }

    fn cashier_url(&self, tid: &str) -> String {
        format!("{}/pay/{tid}", self.base_url)
    }

    fn ready(&self, r: wire::ReadyRequest) -> Result<wire::ReadyResponse, Refusal> {
        self.check_cid(&r.cid)?;
        field("partner_order_id", &r.partner_order_id)?;
        field("partner_user_id", &r.partner_user_id)?;
        field("item_name", &r.item_name)?;
        if r.quantity == 0 || r.total_amount <= 0 {
            return Err(Refusal::bad(
                codes::INVALID_PARAMS,
                "quantity and total_amount must be positive",
            ));
        }
        if !(0..=r.total_amount).contains(&r.tax_free_amount) {
            return Err(Refusal::bad(
                codes::INVALID_PARAMS,
                "tax_free_amount must be between 0 and total_amount",
            ));
        }
        let taxable = r.total_amount - r.tax_free_amount;
        let vat = r.vat_amount.unwrap_or_else(|| default_vat(taxable));
        if !(0..=taxable).contains(&vat) {
            return Err(Refusal::bad(codes::INVALID_PARAMS, "invalid vat_amount"));
        }
        if ![&r.approval_url, &r.cancel_url, &r.fail_url]
            .iter()
            .all(|u| http_url(u))
        {
            return Err(Refusal::bad(
                codes::INVALID_PARAMS,
                "approval_url, cancel_url and fail_url must be absolute http(s) URLs",
            ));
        }
        let now = Utc::now();
        let mut book = lock(&self.book);
        let tid = book.next_id('T');
        book.payments.insert(
            tid.clone(),
            Payment {
                tid: tid.clone(),
                partner_order_id: r.partner_order_id,
                partner_user_id: r.partner_user_id,
                item_name: r.item_name,
                quantity: r.quantity,
                total: r.total_amount,
                tax_free: r.tax_free_amount,
                vat,
                approval_url: r.approval_url,
                cancel_url: r.cancel_url,
                fail_url: r.fail_url,
                status: Status::Ready,
                created_at: now,
                approved_at: None,
                canceled_at: None,
                pg_token: None,
                canceled: 0,
                canceled_tax_free: 0,
                canceled_vat: 0,
                actions: Vec::new(),
            },
        );
        let cashier = self.cashier_url(&tid);
        let scheme = format!(
            "kakaotalk://kakaopay/pg?url={}",
            wire::percent_encode(&cashier)
        );
        Ok(wire::ReadyResponse {
            tid,
            next_redirect_app_url: Some(cashier.clone()),
            next_redirect_mobile_url: cashier.clone(),
            next_redirect_pc_url: Some(cashier),
            android_app_scheme: Some(scheme.clone()),
            ios_app_scheme: Some(scheme),
            created_at: Some(wire::format_time(now)),
        })
    }

    fn approve(&self, r: wire::ApproveRequest) -> Result<wire::ApproveResponse, Refusal> {
        self.check_cid(&r.cid)?;
        payload_ok(&r.payload)?;
        let mut book = lock(&self.book);
        let aid = book.next_id('A');
        let payment = book
            .payments
            .get_mut(&r.tid)
            .ok_or_else(|| Refusal::bad(codes::TID_NOT_FOUND, "tid does not exist"))?;
        if payment.partner_order_id != r.partner_order_id
            || payment.partner_user_id != r.partner_user_id
        {
            return Err(Refusal::bad(
                codes::INVALID_PARAMS,
                "partner_order_id or partner_user_id differs from ready",
            ));
        }
        if payment.approved() {
            return Err(Refusal::bad(
                codes::ALREADY_APPROVED,
                "payment is already approved",
            ));
        }
        if !payment.status.is_awaiting_approval() {
            return Err(Refusal::bad(
                codes::INVALID_STATUS,
                format!(
                    "payment status {} cannot be approved",
                    payment.status.as_str()
                ),
            ));
        }
        let Some(issued) = payment.pg_token.as_deref() else {
            return Err(Refusal::bad(
                codes::NOT_AUTHENTICATED,
                "the user has not authenticated the payment yet",
            ));
        };
        if !constant_time_eq(issued.as_bytes(), r.pg_token.as_bytes()) {
            return Err(Refusal::bad(
                codes::APPROVAL_FAILED,
                "approval failure: invalid pg_token",
            ));
        }
        if r.total_amount.is_some_and(|t| t != payment.total) {
            return Err(Refusal::bad(
                codes::INVALID_PARAMS,
                "total_amount differs from ready",
            ));
        }
        let now = Utc::now();
        payment.pg_token = None;
        payment.status = Status::SuccessPayment;
        payment.approved_at = Some(now);
        payment.actions.push(wire::PaymentAction {
            aid: aid.clone(),
            approved_at: Some(wire::format_time(now)),
            amount: payment.total,
            point_amount: 0,
            discount_amount: 0,
            green_deposit: 0,
            payment_action_type: wire::ActionType::Payment.as_str().to_owned(),
            payload: r.payload.clone(),
        });
        Ok(wire::ApproveResponse {
            aid,
            tid: payment.tid.clone(),
            cid: self.cid.clone(),
            partner_order_id: payment.partner_order_id.clone(),
            partner_user_id: payment.partner_user_id.clone(),
            payment_method_type: payment.method(),
            amount: payment.amount(),
            item_name: Some(payment.item_name.clone()),
            quantity: Some(payment.quantity),
            created_at: Some(wire::format_time(payment.created_at)),
            approved_at: Some(wire::format_time(now)),
            payload: r.payload,
        })
    }

    fn order(&self, r: wire::OrderRequest) -> Result<wire::OrderResponse, Refusal> {
        self.check_cid(&r.cid)?;
        let book = lock(&self.book);
        let payment = book
            .payments
            .get(&r.tid)
            .ok_or_else(|| Refusal::bad(codes::TID_NOT_FOUND, "tid does not exist"))?;
        Ok(payment.order_response(&self.cid))
    }

    fn cancel(&self, r: wire::CancelRequest) -> Result<wire::CancelResponse, Refusal> {
        self.check_cid(&r.cid)?;
        payload_ok(&r.payload)?;
        if r.cancel_amount <= 0 || !(0..=r.cancel_amount).contains(&r.cancel_tax_free_amount) {
            return Err(Refusal::bad(
                codes::INVALID_PARAMS,
                "cancel_amount must be positive and cancel_tax_free_amount between 0 and it",
            ));
        }
        let mut book = lock(&self.book);
        let aid = book.next_id('A');
        let payment = book
            .payments
            .get_mut(&r.tid)
            .ok_or_else(|| Refusal::bad(codes::TID_NOT_FOUND, "tid does not exist"))?;
        let available = payment.cancel_available();
        if r.cancel_available_amount.is_some_and(|a| a != available) {
            return Err(Refusal::bad(
                codes::CANCEL_AVAILABLE_MISMATCH,
                format!("cancel_available_amount differs (is {available})"),
            ));
        }
        let now = Utc::now();
        let this = if payment.status.is_awaiting_approval() {
            // Abort before approval, only when the caller states that nothing is
            // cancellable: a refund (which never states it) cannot abort by mistake.
            if r.cancel_available_amount != Some(0) {
                return Err(Refusal::bad(
                    codes::INVALID_STATUS,
                    "payment is not approved: only an abort (cancel_available_amount 0) applies",
                ));
            }
            payment.status = Status::CancelPayment;
            payment.pg_token = None;
            payment.canceled_at = Some(now);
            Amount::default()
        } else if !payment.approved() {
            return Err(Refusal::bad(
                codes::INVALID_STATUS,
                format!(
                    "payment status {} cannot be cancelled",
                    payment.status.as_str()
                ),
            ));
        } else {
            let tax_free_left = payment.tax_free - payment.canceled_tax_free;
            if r.cancel_amount > available || r.cancel_tax_free_amount > tax_free_left {
                return Err(Refusal::bad(
                    codes::CANCEL_AMOUNT_EXCEEDED,
                    format!("cancel amount exceeds the cancellable amount ({available})"),
                ));
            }
            let vat_left = payment.vat - payment.canceled_vat;
            let vat = r
                .cancel_vat_amount
                .unwrap_or_else(|| default_vat(r.cancel_amount - r.cancel_tax_free_amount))
                .clamp(0, vat_left);
            payment.canceled += r.cancel_amount;
            payment.canceled_tax_free += r.cancel_tax_free_amount;
            payment.canceled_vat += vat;
            payment.canceled_at = Some(now);
            payment.status = if payment.canceled == payment.total {
                Status::CancelPayment
            } else {
                Status::PartCancelPayment
            };
            payment.actions.push(wire::PaymentAction {
                aid: aid.clone(),
                approved_at: Some(wire::format_time(now)),
                amount: r.cancel_amount,
                point_amount: 0,
                discount_amount: 0,
                green_deposit: 0,
                payment_action_type: wire::ActionType::Cancel.as_str().to_owned(),
                payload: r.payload.clone(),
            });
            Amount {
                total: r.cancel_amount,
                tax_free: r.cancel_tax_free_amount,
                vat,
                ..Amount::default()
            }
        };
        Ok(payment.cancel_response(&self.cid, aid, this, r.payload))
    }

    fn cashier(&self, tid: &str) -> HttpResponse {
        let mut book = lock(&self.book);
        let Some(payment) = book.payments.get_mut(tid) else {
            return page(StatusCode::NOT_FOUND, "Unknown payment.");
        };
        if !matches!(payment.status, Status::Ready | Status::OpenPayment) {
            return page(
                StatusCode::CONFLICT,
                &format!(
                    "This payment can no longer be paid ({}).",
                    payment.status.as_str()
                ),
            );
        }
        payment.status = Status::OpenPayment;
        let amount = Money::from_minor(payment.total, Currency::Krw)
            .map(|m| m.to_string())
            .unwrap_or_else(|_| format!("{} KRW", payment.total));
        let base = self.cashier_url(tid);
        pay_page(
            WALLET_NAME,
            &format!("{SANDBOX_MERCHANT_NAME} ({})", self.cid),
            &amount,
            &payment.item_name,
            &format!("{base}/confirm"),
            &format!("{base}/cancel"),
        )
    }

    /// The shopper authenticates (`AuthPassword`: a one-time `pg_token` is issued
    /// and the browser goes to the approval URL), quits (`QuitPayment`: to the
    /// cancel URL) or fails the password (`FailAuthPassword`: to the fail URL).
    fn shopper_acts(&self, tid: &str, outcome: Status) -> HttpResponse {
        let mut book = lock(&self.book);
        let Some(payment) = book.payments.get_mut(tid) else {
            return page(StatusCode::NOT_FOUND, "Unknown payment.");
        };
        // Once authenticated the cashier is done; only our approve remains.
        if !payment.status.is_awaiting_approval() || payment.status == Status::AuthPassword {
            return page(
                StatusCode::CONFLICT,
                &format!(
                    "This payment can no longer be changed here ({}).",
                    payment.status.as_str()
                ),
            );
        }
        let location = match outcome {
            Status::AuthPassword => {
                let token = match random_bytes(10) {
                    Ok(bytes) => hex::encode(bytes),
                    Err(_) => {
                        return page(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "No randomness available.",
                        );
                    }
                };
                let location =
                    wire::with_query(&payment.approval_url, wire::PG_TOKEN_PARAM, &token);
                payment.pg_token = Some(token);
                location
            }
            Status::QuitPayment => payment.cancel_url.clone(),
            _ => payment.fail_url.clone(),
        };
        payment.status = outcome;
        see_other(&location)
    }

    /// Daily statement: one row per approved payment approved or cancelled on
    /// `date` (KST, Kakao's business day), amounts in whole won.
    fn statement(&self, date: &str) -> HttpResponse {
        let Ok(day) = NaiveDate::parse_from_str(date, "%Y-%m-%d") else {
            return HttpResponse::BadRequest()
                .content_type(ContentType::plaintext())
                .body("date must be YYYY-MM-DD");
        };
        let on_day = |at: Option<DateTime<Utc>>| {
            at.is_some_and(|t| t.with_timezone(&wire::kst()).date_naive() == day)
        };
        let book = lock(&self.book);
        let mut rows: Vec<&Payment> = book
            .payments
            .values()
            .filter(|p| p.approved() && (on_day(p.approved_at) || on_day(p.canceled_at)))
            .collect();
        rows.sort_by(|a, b| (a.approved_at, &a.tid).cmp(&(b.approved_at, &b.tid)));
        let mut csv = String::from(
            "tid,partner_order_id,status,amount_krw,canceled_amount_krw,approved_at,canceled_at\n",
        );
        for p in rows {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                csv_field(&p.tid),
                csv_field(&p.partner_order_id),
                p.status.as_str(),
                p.total,
                p.canceled,
                p.approved_at.map(wire::format_time).unwrap_or_default(),
                p.canceled_at.map(wire::format_time).unwrap_or_default(),
            ));
        }
        HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(csv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_secret_key_is_a_dev_key_derived_from_the_local_secret() {
        let keys = LocalKeys {
            merchant: crate::crypto::RsaPrivateKey::from_pem(include_str!(
                "../../testdata/rsa2048_pkcs8.pem"
            ))
            .unwrap(),
            wallet: crate::crypto::RsaPrivateKey::from_pem(include_str!(
                "../../testdata/rsa2048_pkcs8.pem"
            ))
            .unwrap(),
            secret: [7u8; 32],
        };
        let key = local_secret_key(&keys).unwrap();
        // HMAC-SHA256([7; 32], "sesame/kakao_pay/secret_key"), upper hex, first 40.
        assert_eq!(key.expose(), "DEV24312C5C68229D44CE6027FC94A253BC56AE9B16");
        assert_eq!(
            crate::kakao_pay::wire::authorization(key.expose()),
            "SECRET_KEY DEV24312C5C68229D44CE6027FC94A253BC56AE9B16"
        );
    }

    #[test]
    fn default_vat_is_a_eleventh_rounded_half_up() {
        assert_eq!(default_vat(11000), 1000);
        assert_eq!(default_vat(12000), 1091);
        assert_eq!(default_vat(16), 1);
        assert_eq!(default_vat(5), 0);
        assert_eq!(default_vat(0), 0);
    }

    #[test]
    fn ids_look_like_kakaos() {
        let mut book = Book::default();
        let tid = book.next_id('T');
        assert_eq!(tid.len(), 20);
        assert!(tid.starts_with('T') && tid[1..].bytes().all(|b| b.is_ascii_digit()));
        assert_ne!(book.next_id('T'), tid);
    }
}
