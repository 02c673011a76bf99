//! The shopper's pages: what a phone shows after scanning a plate (`/q/{token}`) or a
//! dynamic order's gateway QR (`/o/{id}`), the Pay forms, the hand-off to the wallet
//! (`/o/{id}/wallet`), WeChat's OAuth return and JSAPI page, the order status page
//! and its poller, and their static assets. Server-rendered (askama) in English,
//! Traditional Chinese or Portuguese, each page with a strict Content-Security-Policy.
//! Every request passes a rate limiter before any store read or wallet call.
//!
//! Must never: answer a shopper with JSON or a stack trace, trust a posted amount on a
//! fixed amount, accept a form we did not serve, or create a second order for one
//! submitted form.

mod chrome;
mod pay;
mod status;
mod wechat;

use std::net::{IpAddr, Ipv4Addr};

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

pub use chrome::{content_security_policy, css, status_js, wechat_js};
pub use pay::{open_wallet, order_pay, pay, plate_page, to_form_page};
pub use status::{cancel, order_page, status_json};
pub use wechat::{wechat_return, wechat_return_plate};

use crate::domain::merchant::MerchantStatus;
use crate::domain::order::Order;
use crate::domain::{Merchant, OrderId, PlateId};
use crate::error::{ApiError, ErrorCode};
use crate::http::plates::{ImageQuery, plate_image};
use crate::i18n::Lang;
use crate::qr::render::Kind;
use crate::services::{demo, rate_limit};
use crate::startup::AppState;

/// A page answering the request early (a refusal, a not-found), boxed: responses are
/// large and these travel in `Result`s.
type Answered = Box<HttpResponse>;

/// Which budget a request draws on (see `[shopper]` in the configuration).
#[derive(Clone, Copy)]
enum Budget {
    /// Plate page, WeChat return, wallet hand-off.
    Pages,
    /// Pay and cancel submissions: they may create an order at a wallet.
    Pay,
    /// Status page and its poller.
    Status,
}

/// The cookie that marks the browser which started a plate order (path `/o/{id}`).
const PAYER_COOKIE: &str = "sesame_payer";

/// `Set-Cookie` for the browser that just started `order` from a plate.
fn payer_cookie(state: &AppState, order: &OrderId) -> String {
    let secure = chrome::cookie_secure(state);
    format!(
        "{PAYER_COOKIE}={}; Path=/o/{order}; Max-Age=86400; SameSite=Lax; HttpOnly{secure}",
        crate::services::shopper::payer_seal(state, order)
    )
}

/// Whether this request comes from the browser that started `order` from a plate:
/// only it may cancel the payment. Gateway orders (a merchant's dynamic QR) are never
/// cancelled from a shopper page: their id is on the merchant's screen for anyone.
fn may_cancel(state: &AppState, req: &HttpRequest, order: &Order) -> bool {
    order.plate_id.is_some()
        && req.cookie(PAYER_COOKIE).is_some_and(|cookie| {
            crate::services::shopper::is_payer(state, &order.id, cookie.value())
        })
}

/// [`admit_order`] for a request that may start a payment: a merchant that no longer
/// takes payments gets none started (its orders' status pages still show).
async fn admit_payable_order(
    state: &AppState,
    req: &HttpRequest,
    budget: Budget,
) -> Result<(Order, Merchant), Answered> {
    let (order, merchant) = admit_order(state, req, budget).await?;
    if merchant.status != MerchantStatus::Active {
        return Err(Box::new(chrome::not_found(state, req)));
    }
    Ok((order, merchant))
}

/// The client's bucket key: its address (through trusted proxies), IPv6 per /64.
fn client(state: &AppState, req: &HttpRequest) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let trusted = &state.shopper_limits.trusted_proxies;
    let ip = if trusted.is_empty() {
        peer
    } else {
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .collect();
        rate_limit::client_ip(peer, &forwarded, trusted)
    };
    rate_limit::client_key(ip)
}

/// Draws one request from the client's `budget`, or answers the friendly 429.
fn admit(state: &AppState, req: &HttpRequest, budget: Budget) -> Result<(), Answered> {
    let limits = &state.shopper_limits;
    let limiter = match budget {
        Budget::Pages => &limits.pages,
        Budget::Pay => &limits.pay_per_client,
        Budget::Status => &limits.status,
    };
    limiter
        .admit(client(state, req), state.clock.now_ms())
        .map_err(|wait| Box::new(chrome::too_many(state, req, wait)))
}

/// Draws one valid pay submission from a plate's (or gateway order's) shared budget.
fn admit_payee(state: &AppState, req: &HttpRequest, payee: &str) -> Result<(), Answered> {
    state
        .shopper_limits
        .pay_per_payee
        .admit(payee.to_owned(), state.clock.now_ms())
        .map_err(|wait| Box::new(chrome::too_many(state, req, wait)))
}

/// The plate a `/q/{token}` request names, checked without a store read.
fn plate_of(state: &AppState, req: &HttpRequest) -> Result<(String, PlateId), Answered> {
    let token = req.match_info().get("token").unwrap_or_default().to_owned();
    match state.tokens.verify(&token) {
        Some(plate) => Ok((token, plate)),
        None => Err(Box::new(chrome::not_found(state, req))),
    }
}

/// The order a `/o/{id}` request names, with its merchant.
async fn order_of(state: &AppState, req: &HttpRequest) -> Result<(Order, Merchant), Answered> {
    let Some(id) = req.match_info().get("id").and_then(OrderId::parse) else {
        return Err(Box::new(chrome::not_found(state, req)));
    };
    let order = match state.store.order(&id).await {
        Ok(Some(order)) => order,
        Ok(None) => return Err(Box::new(chrome::not_found(state, req))),
        Err(e) => {
            return Err(Box::new(chrome::failure(
                state,
                req,
                &ApiError::from(e),
                None,
            )));
        }
    };
    match state.store.merchant(&order.merchant_id).await {
        Ok(Some(merchant)) => Ok((order, merchant)),
        Ok(None) => Err(Box::new(chrome::not_found(state, req))),
        Err(e) => Err(Box::new(chrome::failure(
            state,
            req,
            &ApiError::from(e),
            None,
        ))),
    }
}

/// The admitted request's order and merchant (`/o/{id}...`), or the page answering it.
async fn admit_order(
    state: &AppState,
    req: &HttpRequest,
    budget: Budget,
) -> Result<(Order, Merchant), Answered> {
    admit(state, req, budget)?;
    order_of(state, req).await
}

fn user_agent(req: &HttpRequest) -> String {
    req.headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn merchant_name(merchant: &Merchant, lang: Lang) -> String {
    let local = match lang {
        Lang::Zh => merchant.name_zh.as_deref(),
        Lang::Pt => merchant.name_pt.as_deref(),
        Lang::En => None,
    };
    local
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(&merchant.name)
        .to_owned()
}

/// The display name of an order's brand in `lang`.
fn brand_name(state: &AppState, order: &Order, lang: Lang) -> String {
    order
        .brand
        .as_deref()
        .and_then(|id| state.wallets.brands.get(id))
        .map(|b| b.names().for_language(lang.tag()).to_owned())
        .unwrap_or_default()
}

/// The plate page an order came from, when it came from a plate.
fn plate_page_of(state: &AppState, order: &Order) -> Option<String> {
    order
        .plate_id
        .as_ref()
        .map(|p| format!("/q/{}", state.tokens.token_for(p)))
}

/// Unknown addresses under `/q/`, `/o/` and `/static/`: the friendly HTML 404.
pub async fn not_found_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    chrome::not_found(&state, &req)
}

/// A method a shopper address does not answer (say `PUT /q/{token}`): HTML, with `Allow`.
pub async fn method_not_allowed_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let mut response = chrome::not_found(&state, &req);
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response.headers_mut().insert(
        header::ALLOW,
        header::HeaderValue::from_static("GET, HEAD, POST"),
    );
    response
}

/// `GET /demo/poster.svg`: the demo plate's printable poster, without the admin token,
/// in the local environment only (anywhere else: 404, as for any unknown address).
pub async fn demo_poster(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ImageQuery>,
) -> Result<HttpResponse, ApiError> {
    if !demo::enabled(&state.settings) {
        return Err(ApiError::new(ErrorCode::NotFound));
    }
    let demo = demo::ensure(&state).await?;
    plate_image(
        Kind::Poster,
        &req,
        &state,
        &demo.merchant,
        &demo.plate,
        &query,
    )
    .await
}
