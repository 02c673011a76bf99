//! The shopper's pages: the plate page (`GET /q/{token}`), its Pay form
//! (`POST /q/{token}/pay`), WeChat's OAuth return (`GET /q/{token}/wechat`), the
//! order status page (`GET /o/{id}`, JSON `GET /o/{id}/status`) and their static
//! assets. Server-rendered (askama), in English, Traditional Chinese or Portuguese,
//! each page with a strict Content-Security-Policy. Every request passes the rate
//! limiters before any store read or wallet call.
//!
//! Must never: answer a shopper with JSON or a stack trace, trust a posted amount on
//! a fixed-amount plate, or create a second order for one submitted form.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use sesame_adapters::contract::AdapterId;
use sesame_adapters::money::{Currency, Money};
use sha2::{Digest, Sha256};

use crate::config::WalletMode;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::plate::Plate;
use crate::domain::{Merchant, OrderId, PlateId};
use crate::error::{ApiError, ErrorCode};
use crate::i18n::{LANG_COOKIE, Lang, Messages};
use crate::services::shopper::{self, AmountError, Created};
use crate::startup::AppState;

// ---------------------------------------------------------------------------------
// Page chrome: language, title, language switch, assets, headers
// ---------------------------------------------------------------------------------

pub struct LangLink {
    code: &'static str,
    tag: &'static str,
    label: &'static str,
    href: String,
    current: bool,
}

pub struct Chrome {
    t: &'static Messages,
    assets: &'static Assets,
    lang_tag: &'static str,
    title: String,
    langs: Vec<LangLink>,
}

impl Chrome {
    /// `page` is the GET address the language links point at.
    fn new(lang: Lang, title: String, page: &str) -> Chrome {
        let t = lang.messages();
        let langs = Lang::ALL
            .iter()
            .map(|&l| LangLink {
                code: l.code(),
                tag: l.tag(),
                label: t.get(match l {
                    Lang::En => "lang_en",
                    Lang::Zh => "lang_zh",
                    Lang::Pt => "lang_pt",
                }),
                href: format!("{page}?lang={}", l.code()),
                current: l == lang,
            })
            .collect();
        Chrome {
            t,
            assets: assets(),
            lang_tag: lang.tag(),
            title,
            langs,
        }
    }
}

/// The request's language and whether it was chosen explicitly (`?lang=`).
fn language(req: &HttpRequest) -> (Lang, bool) {
    let query = web::Query::<LangQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().lang);
    let explicit = query.as_deref().and_then(Lang::parse);
    let cookie = req.cookie(LANG_COOKIE).map(|c| c.value().to_owned());
    let accept = req
        .headers()
        .get("accept-language")
        .and_then(|v| v.to_str().ok());
    let lang = Lang::negotiate(query.as_deref(), cookie.as_deref(), accept);
    (lang, explicit.is_some())
}

#[derive(Deserialize)]
struct LangQuery {
    #[serde(default)]
    lang: Option<String>,
}

/// `'self'` plus what the flows leave this origin for: wallet cashiers (a Pay form is
/// answered with a redirect to them, and browsers check `form-action` on that
/// redirect) and, in sandbox mode with sandboxes elsewhere, the sandbox origin.
pub fn content_security_policy(state: &AppState) -> String {
    let mut outside: Vec<String> = state.settings.shopper.wallet_origins.clone();
    let mut connect = String::new();
    if state.settings.wallets.mode == WalletMode::Sandbox
        && let Some(origin) = origin_of(&state.settings.wallets.sandbox_base_url)
    {
        connect = format!(" {origin}");
        outside.push(origin);
    }
    let forms: String = outside.iter().map(|o| format!(" {o}")).collect();
    format!(
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
form-action 'self'{forms}; connect-src 'self'{connect}; frame-ancestors 'none'; base-uri 'none'"
    )
}

fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

fn page(
    state: &AppState,
    status: StatusCode,
    lang: Lang,
    remember: bool,
    body: Result<String, askama::Error>,
) -> HttpResponse {
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "a shopper page did not render");
            return HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .insert_header(("Cache-Control", "no-store"))
                .body(lang.messages().get("error_text").to_owned());
        }
    };
    let mut response = HttpResponse::build(status);
    response
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", content_security_policy(state)))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Content-Language", lang.tag()));
    if remember {
        response.insert_header((
            "Set-Cookie",
            format!(
                "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly",
                lang.code()
            ),
        ));
    }
    response.body(body)
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", location))
        .insert_header(("Cache-Control", "no-store"))
        .finish()
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    chrome: Chrome,
    heading: String,
    text: String,
    back: Option<String>,
}

fn message(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    heading: &str,
    text: &str,
    back: Option<String>,
) -> HttpResponse {
    let (lang, remember) = language(req);
    let t = lang.messages();
    let tpl = MessagePage {
        chrome: Chrome::new(lang, t.get(heading).to_owned(), req.path()),
        heading: t.get(heading).to_owned(),
        text: t.get(text).to_owned(),
        back,
    };
    page(state, status, lang, remember, tpl.render())
}

fn not_found(state: &AppState, req: &HttpRequest) -> HttpResponse {
    message(
        state,
        req,
        StatusCode::NOT_FOUND,
        "not_found_title",
        "not_found_text",
        None,
    )
}

fn too_many(state: &AppState, req: &HttpRequest) -> HttpResponse {
    let mut response = message(
        state,
        req,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited_title",
        "rate_limited_text",
        None,
    );
    response.headers_mut().insert(
        actix_web::http::header::RETRY_AFTER,
        actix_web::http::header::HeaderValue::from_static("60"),
    );
    response
}

fn failure(
    state: &AppState,
    req: &HttpRequest,
    error: &ApiError,
    back: Option<String>,
) -> HttpResponse {
    tracing::warn!(
        code = error.code.code(),
        detail = error.message(),
        "shopper page failed"
    );
    message(
        state,
        req,
        StatusCode::SERVICE_UNAVAILABLE,
        "error_title",
        "error_text",
        back,
    )
}

fn client_ip(req: &HttpRequest) -> IpAddr {
    req.peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn ip_allowed(state: &AppState, req: &HttpRequest) -> bool {
    state
        .shopper_limits
        .per_ip
        .allow(client_ip(req), state.clock.now_ms())
}

/// Why a plate request is turned away before any store read.
enum Refused {
    TooMany,
    NotFound,
}

impl Refused {
    fn page(self, state: &AppState, req: &HttpRequest) -> HttpResponse {
        match self {
            Refused::TooMany => too_many(state, req),
            Refused::NotFound => not_found(state, req),
        }
    }
}

/// The IP limit, then the token (no store read for a forged one), then the plate limit.
fn admit_plate(state: &AppState, req: &HttpRequest) -> Result<(String, PlateId), Refused> {
    if !ip_allowed(state, req) {
        return Err(Refused::TooMany);
    }
    let token = req.match_info().get("token").unwrap_or_default().to_owned();
    let Some(plate_id) = state.tokens.verify(&token) else {
        return Err(Refused::NotFound);
    };
    if !state
        .shopper_limits
        .per_plate
        .allow(plate_id.clone(), state.clock.now_ms())
    {
        return Err(Refused::TooMany);
    }
    Ok((token, plate_id))
}

fn user_agent(req: &HttpRequest) -> String {
    req.headers()
        .get("user-agent")
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

fn show_money(minor: i64, currency: Currency) -> String {
    Money::from_minor(minor, currency)
        .map(|m| m.to_string())
        .unwrap_or_else(|_| format!("- {currency}"))
}

// ---------------------------------------------------------------------------------
// Static assets
// ---------------------------------------------------------------------------------

const CSS: &str = include_str!("../../static/sesame.css");
const STATUS_JS: &str = include_str!("../../static/status.js");
const WECHAT_JS: &str = include_str!("../../static/wechat.js");

/// A short content hash of an asset.
fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))[..16].to_owned()
}

/// Versioned asset addresses (`?v=<content hash>`): a deploy that changes a file
/// changes its address, so browsers may cache each version for a year.
pub struct Assets {
    css: String,
    status_js: String,
    wechat_js: String,
}

fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| Assets {
        css: format!("/static/sesame.css?v={}", content_hash(CSS)),
        status_js: format!("/static/status.js?v={}", content_hash(STATUS_JS)),
        wechat_js: format!("/static/wechat.js?v={}", content_hash(WECHAT_JS)),
    })
}

fn asset(req: &HttpRequest, text: &'static str, content_type: &str) -> HttpResponse {
    let tag = format!("\"{}\"", content_hash(text));
    let cached = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == tag);
    let mut response = if cached {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .content_type(content_type)
        .insert_header(("Cache-Control", "public, max-age=31536000, immutable"))
        .insert_header(("ETag", tag))
        .insert_header(("X-Content-Type-Options", "nosniff"));
    if cached {
        response.finish()
    } else {
        response.body(text)
    }
}

pub async fn css(req: HttpRequest) -> HttpResponse {
    asset(&req, CSS, "text/css; charset=utf-8")
}

pub async fn status_js(req: HttpRequest) -> HttpResponse {
    asset(&req, STATUS_JS, "text/javascript; charset=utf-8")
}

pub async fn wechat_js(req: HttpRequest) -> HttpResponse {
    asset(&req, WECHAT_JS, "text/javascript; charset=utf-8")
}

// ---------------------------------------------------------------------------------
// The plate page and its form
// ---------------------------------------------------------------------------------

pub struct BrandChoice {
    id: String,
    name: String,
    checked: bool,
}

#[derive(Template)]
#[template(path = "pay.html")]
struct PayPage {
    chrome: Chrome,
    merchant_name: String,
    plate_label: String,
    action: String,
    nonce: String,
    currency: String,
    amount_label: String,
    amount: String,
    fixed_amount: Option<String>,
    detected: Option<String>,
    brands: Vec<BrandChoice>,
    amount_error: Option<String>,
    wallet_error: Option<String>,
    form_error: Option<String>,
}

/// What the form shows besides the plate: typed values and errors.
#[derive(Default)]
struct FormState {
    nonce: String,
    amount: String,
    wallet: Option<String>,
    amount_error: Option<String>,
    wallet_error: Option<String>,
    form_error: Option<String>,
}

fn pay_page(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    token: &str,
    plate: &Plate,
    merchant: &Merchant,
    form: FormState,
) -> HttpResponse {
    let (lang, remember) = language(req);
    let t = lang.messages();
    let currency = merchant.currency;
    let name = merchant_name(merchant, lang);
    let ua = user_agent(req);
    let detected = shopper::detect_brand(state, &ua, currency);
    let brands = if detected.is_some() {
        Vec::new()
    } else {
        shopper::payable_brands(state, currency)
            .into_iter()
            .map(|b| BrandChoice {
                id: b.id().to_owned(),
                name: b.names().for_language(lang.tag()).to_owned(),
                checked: form.wallet.as_deref() == Some(b.id()),
            })
            .collect()
    };
    let tpl = PayPage {
        chrome: Chrome::new(
            lang,
            t.fill("pay_title", &[("merchant", &name)]),
            &format!("/q/{token}"),
        ),
        merchant_name: name,
        plate_label: plate.label.clone(),
        action: format!("/q/{token}/pay"),
        nonce: form.nonce,
        currency: currency.code().to_owned(),
        amount_label: t.fill("amount_label", &[("currency", currency.code())]),
        amount: form.amount,
        fixed_amount: plate
            .fixed_amount_minor
            .map(|minor| show_money(minor, currency)),
        detected: detected.map(|b| {
            t.fill(
                "wallet_detected",
                &[("wallet", b.names().for_language(lang.tag()))],
            )
        }),
        brands,
        amount_error: form.amount_error,
        wallet_error: form.wallet_error,
        form_error: form.form_error,
    };
    page(state, status, lang, remember, tpl.render())
}

/// `GET /q/{token}`: the page a plate's QR opens.
pub async fn plate_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (token, plate_id) = match admit_plate(&state, &req) {
        Ok(admitted) => admitted,
        Err(refused) => return refused.page(&state, &req),
    };
    let (plate, merchant) = match shopper::plate_and_merchant(&state, &plate_id).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(&state, &req),
        Err(e) => return failure(&state, &req, &e, None),
    };
    let form = FormState {
        nonce: shopper::new_nonce(),
        ..FormState::default()
    };
    pay_page(
        &state,
        &req,
        StatusCode::OK,
        &token,
        &plate,
        &merchant,
        form,
    )
}

#[derive(Deserialize)]
struct PayForm {
    #[serde(default)]
    amount: String,
    #[serde(default)]
    wallet: Option<String>,
    #[serde(default)]
    nonce: String,
}

fn amount_message(t: &Messages, error: &AmountError, currency: Currency) -> String {
    match error {
        AmountError::Empty => t.get("err_amount_empty").to_owned(),
        AmountError::Invalid => t.get("err_amount_invalid").to_owned(),
        AmountError::TooManyDecimals { allowed } => t.fill(
            "err_amount_decimals",
            &[
                ("currency", currency.code()),
                ("decimals", &allowed.to_string()),
            ],
        ),
        AmountError::BelowMinimum(m) => t.fill("err_amount_min", &[("amount", &m.to_string())]),
        AmountError::AboveMaximum(m) => t.fill("err_amount_max", &[("amount", &m.to_string())]),
    }
}

/// `POST /q/{token}/pay`: check the form, create (or find) the order, go to the wallet.
pub async fn pay(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let (token, plate_id) = match admit_plate(&state, &req) {
        Ok(admitted) => admitted,
        Err(refused) => return refused.page(&state, &req),
    };
    let (plate, merchant) = match shopper::plate_and_merchant(&state, &plate_id).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(&state, &req),
        Err(e) => return failure(&state, &req, &e, None),
    };
    let back = format!("/q/{token}");
    let (lang, _) = language(&req);
    let t = lang.messages();
    let currency = merchant.currency;
    let posted = std::str::from_utf8(&body)
        .ok()
        .and_then(|text| web::Query::<PayForm>::from_query(text).ok())
        .map(web::Query::into_inner);
    let Some(posted) = posted else {
        let form = FormState {
            nonce: shopper::new_nonce(),
            form_error: Some(t.get("err_form_expired").to_owned()),
            ..FormState::default()
        };
        return pay_page(
            &state,
            &req,
            StatusCode::BAD_REQUEST,
            &token,
            &plate,
            &merchant,
            form,
        );
    };
    let mut form = FormState {
        nonce: posted.nonce.trim().to_owned(),
        amount: posted.amount.chars().take(20).collect(),
        wallet: posted.wallet.clone().filter(|w| !w.is_empty()),
        ..FormState::default()
    };
    if !shopper::nonce_is_valid(&form.nonce) {
        form.nonce = shopper::new_nonce();
        form.form_error = Some(t.get("err_form_expired").to_owned());
        return pay_page(
            &state,
            &req,
            StatusCode::BAD_REQUEST,
            &token,
            &plate,
            &merchant,
            form,
        );
    }
    let amount = match plate.fixed_amount_minor {
        Some(minor) => Money::from_minor(minor, currency).map_err(|_| AmountError::Invalid),
        None => shopper::parse_amount(&state, &posted.amount, currency),
    };
    let ua = user_agent(&req);
    let brand = match form.wallet.as_deref() {
        Some(id) => state
            .wallets
            .brands
            .get(id)
            .filter(|b| shopper::static_route(&state, b, currency).is_some()),
        None => shopper::detect_brand(&state, &ua, currency),
    };
    if let Err(e) = &amount {
        form.amount_error = Some(amount_message(t, e, currency));
    }
    if brand.is_none() {
        form.wallet = None;
        form.wallet_error = Some(t.get("err_wallet_missing").to_owned());
    }
    let (Ok(amount), Some(brand)) = (amount, brand) else {
        return pay_page(
            &state,
            &req,
            StatusCode::UNPROCESSABLE_ENTITY,
            &token,
            &plate,
            &merchant,
            form,
        );
    };
    let Some(route) = shopper::static_route(&state, brand, currency) else {
        return failure(
            &state,
            &req,
            &ApiError::new(ErrorCode::WalletUnavailable),
            Some(back),
        );
    };
    let order =
        match shopper::create_plate_order(&state, &merchant, &plate, &form.nonce, amount, &route)
            .await
        {
            Ok(Created::New(order)) | Ok(Created::Existing(order)) => order,
            Ok(Created::Conflict) => {
                form.nonce = shopper::new_nonce();
                form.form_error = Some(t.get("err_form_expired").to_owned());
                return pay_page(
                    &state,
                    &req,
                    StatusCode::CONFLICT,
                    &token,
                    &plate,
                    &merchant,
                    form,
                );
            }
            Err(e) => return failure(&state, &req, &e, Some(back)),
        };
    let status_page = format!("/o/{}", order.id);
    if order.status.is_terminal() {
        return see_other(&status_page);
    }
    if route.adapter_id == AdapterId::WechatPay {
        let Some(wechat) = state.wallets.wechat.as_ref() else {
            return failure(
                &state,
                &req,
                &ApiError::new(ErrorCode::WalletUnavailable),
                Some(back),
            );
        };
        let redirect_uri = format!("{}/q/{token}/wechat", state.settings.server.public_base_url);
        return see_other(&wechat.oauth_authorize_url(&redirect_uri, order.id.as_str()));
    }
    match shopper::start_redirect(&state, &merchant, order, &route, &ua).await {
        Ok(order) => match shopper::redirect_url(&order) {
            Some(url) if order.status == OrderStatus::Pending => see_other(&url),
            _ => see_other(&status_page),
        },
        // The wallet refused: the order is failed and its page says so.
        Err(e) if e.code == ErrorCode::WalletRejected => see_other(&status_page),
        Err(e) => {
            // Unknown outcome: the same form (same nonce, same order id) may retry.
            tracing::warn!(code = e.code.code(), "wallet start failed on a plate order");
            form.form_error = Some(t.get("err_wallet_unavailable").to_owned());
            pay_page(
                &state,
                &req,
                StatusCode::SERVICE_UNAVAILABLE,
                &token,
                &plate,
                &merchant,
                form,
            )
        }
    }
}

// ---------------------------------------------------------------------------------
// WeChat: OAuth return and the JSAPI page
// ---------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "wechat.html")]
struct WechatPage {
    chrome: Chrome,
    merchant_name: String,
    amount: String,
    params: Vec<(String, String)>,
    status_href: String,
    bridge: Option<String>,
}

#[derive(Deserialize)]
struct OauthReturn {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: String,
}

/// `GET /q/{token}/wechat?code=&state=`: WeChat's silent OAuth comes back here with
/// the shopper's code; `state` is the order id.
pub async fn wechat_return(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (token, plate_id) = match admit_plate(&state, &req) {
        Ok(admitted) => admitted,
        Err(refused) => return refused.page(&state, &req),
    };
    let back = Some(format!("/q/{token}"));
    let Ok(query) = web::Query::<OauthReturn>::from_query(req.query_string()) else {
        return not_found(&state, &req);
    };
    let Some(id) = OrderId::parse(&query.state) else {
        return not_found(&state, &req);
    };
    let order = match state.store.order(&id).await {
        Ok(Some(order)) if order.plate_id.as_ref() == Some(&plate_id) => order,
        Ok(_) => return not_found(&state, &req),
        Err(e) => return failure(&state, &req, &ApiError::from(e), back),
    };
    let merchant = match state.store.merchant(&order.merchant_id).await {
        Ok(Some(m)) => m,
        Ok(None) => return not_found(&state, &req),
        Err(e) => return failure(&state, &req, &ApiError::from(e), back),
    };
    if order.status.is_terminal() {
        return see_other(&format!("/o/{id}"));
    }
    let order = if order.status == OrderStatus::Created {
        let (Some(wechat), Some(route), Some(code)) = (
            state.wallets.wechat.as_ref(),
            shopper::route_of(&state, &order),
            query.code.as_deref(),
        ) else {
            return failure(
                &state,
                &req,
                &ApiError::new(ErrorCode::WalletUnavailable),
                back,
            );
        };
        let openid = match wechat.exchange_oauth_code(code).await {
            Ok(openid) => openid,
            Err(e) => {
                tracing::warn!(error = %e, order = %id, "wechat oauth code exchange failed");
                return failure(
                    &state,
                    &req,
                    &ApiError::new(ErrorCode::WalletUnavailable),
                    back,
                );
            }
        };
        match shopper::start_jsapi(&state, &merchant, order, &route, openid).await {
            Ok(order) => order,
            Err(e) if e.code == ErrorCode::WalletRejected => {
                return see_other(&format!("/o/{id}"));
            }
            Err(e) => return failure(&state, &req, &e, back),
        }
    } else {
        order
    };
    let Some(params) = shopper::jsapi_params(&order) else {
        return see_other(&format!("/o/{id}"));
    };
    wechat_page(&state, &req, &merchant, &order, params)
}

fn wechat_page(
    state: &AppState,
    req: &HttpRequest,
    merchant: &Merchant,
    order: &Order,
    params: Vec<(String, String)>,
) -> HttpResponse {
    let (lang, remember) = language(req);
    let t = lang.messages();
    let bridge = (state.settings.wallets.mode == WalletMode::Sandbox).then(|| {
        let base = state
            .settings
            .wallets
            .sandbox_base_url
            .trim_end_matches('/');
        let base = if base.is_empty() { "/sandbox" } else { base };
        format!("{base}/wechat_pay/jsbridge/getBrandWCPayRequest")
    });
    let tpl = WechatPage {
        chrome: Chrome::new(lang, t.get("wechat_title").to_owned(), req.path()),
        merchant_name: merchant_name(merchant, lang),
        amount: show_money(order.amount_minor, order.currency),
        params,
        status_href: format!("/o/{}", order.id),
        bridge,
    };
    page(state, StatusCode::OK, lang, remember, tpl.render())
}

// ---------------------------------------------------------------------------------
// Status page
// ---------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage {
    chrome: Chrome,
    id: String,
    status: &'static str,
    pending: bool,
    headline: String,
    amount: String,
    merchant_name: String,
    time: Option<String>,
    hint: Option<String>,
    back: Option<String>,
    self_href: String,
}

/// Wall-clock time where the merchant is (Macau, Hong Kong and China share UTC+8).
fn local_time(ms: i64, country: &str) -> String {
    let hours = match country {
        "MO" | "HK" | "CN" | "TW" | "SG" | "MY" | "PH" => 8,
        "KR" | "JP" => 9,
        "TH" | "VN" => 7,
        _ => 0,
    };
    let offset = chrono::FixedOffset::east_opt(hours * 3600)
        .unwrap_or_else(|| unreachable!("a whole-hour offset below 24 h is valid"));
    let Some(utc) = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms) else {
        return String::new();
    };
    let label = if hours == 0 {
        "UTC".to_owned()
    } else {
        format!("UTC+{hours}")
    };
    format!(
        "{} ({label})",
        utc.with_timezone(&offset).format("%Y-%m-%d %H:%M:%S")
    )
}

async fn load_order(state: &AppState, req: &HttpRequest) -> Result<Order, HttpResponse> {
    if !ip_allowed(state, req) {
        return Err(too_many(state, req));
    }
    let id = req.match_info().get("id").and_then(OrderId::parse);
    let Some(id) = id else {
        return Err(not_found(state, req));
    };
    match state.store.order(&id).await {
        Ok(Some(order)) => Ok(order),
        Ok(None) => Err(not_found(state, req)),
        Err(e) => Err(failure(state, req, &ApiError::from(e), None)),
    }
}

/// `GET /o/{id}`: where every payment ends; refreshes itself while pending.
pub async fn status_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let order = match load_order(&state, &req).await {
        Ok(order) => order,
        Err(response) => return response,
    };
    let merchant = match state.store.merchant(&order.merchant_id).await {
        Ok(Some(m)) => m,
        Ok(None) => return not_found(&state, &req),
        Err(e) => return failure(&state, &req, &ApiError::from(e), None),
    };
    let (lang, remember) = language(&req);
    let t = lang.messages();
    let back = order
        .plate_id
        .as_ref()
        .map(|p| format!("/q/{}", state.tokens.token_for(p)));
    let (headline, hint, back, time) = match order.status {
        OrderStatus::Created | OrderStatus::Pending => (
            "status_pending",
            Some(t.get("status_pending_hint").to_owned()),
            None,
            None,
        ),
        OrderStatus::Succeeded => (
            "status_succeeded",
            None,
            None,
            Some(local_time(
                order.paid_at.unwrap_or(order.updated_at),
                &merchant.country,
            )),
        ),
        OrderStatus::Failed => (
            "status_failed",
            Some(t.get("status_failed_hint").to_owned()),
            back,
            None,
        ),
        OrderStatus::Expired => (
            "status_expired",
            Some(t.get("status_failed_hint").to_owned()),
            back,
            None,
        ),
    };
    let status = match order.status {
        OrderStatus::Created => OrderStatus::Pending.as_str(),
        other => other.as_str(),
    };
    let tpl = StatusPage {
        chrome: Chrome::new(lang, t.get(headline).to_owned(), req.path()),
        id: order.id.to_string(),
        status,
        pending: !order.status.is_terminal(),
        headline: t.get(headline).to_owned(),
        amount: show_money(order.amount_minor, order.currency),
        merchant_name: merchant_name(&merchant, lang),
        time,
        hint,
        back,
        self_href: req.path().to_owned(),
    };
    page(&state, StatusCode::OK, lang, remember, tpl.render())
}

/// `GET /o/{id}/status`: `{"status": ...}` for the status page's poller.
pub async fn status_json(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match load_order(&state, &req).await {
        Ok(order) => {
            let status = match order.status {
                OrderStatus::Created => OrderStatus::Pending.as_str(),
                other => other.as_str(),
            };
            HttpResponse::Ok()
                .insert_header(("Cache-Control", "no-store"))
                .json(serde_json::json!({ "status": status }))
        }
        Err(response) => response,
    }
}
