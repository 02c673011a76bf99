//! The Pay page and its form, for a plate (`/q/{token}`, the shopper types the amount
//! unless the plate fixes it) and for a dynamic order's gateway URL (`/o/{id}`, the
//! amount is the order's), and the hand-off to the wallet.
//!
//! A submitted form is checked in this order: the client's pay budget, the form's
//! signed nonce, the amount and the wallet (errors next to their field, nothing
//! created), the payee's (plate's or order's) shared budget, then the order is
//! created (plate: id derived from the nonce) or routed (gateway order: once) and
//! started at the wallet. The answer is always a same-origin 303 (`/o/{id}/wallet`
//! or the status page), never a redirect to a wallet: browsers apply `form-action` to
//! a form's redirects, and wallet origins vary (app schemes included).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use sesame_adapters::contract::AdapterId;
use sesame_adapters::money::{Currency, Money};

use super::chrome::{self, Chrome, Link, language, page, see_other};
use super::{
    Answered, Budget, admit, admit_payable_order, admit_payee, brand_name, merchant_name,
    payer_cookie, plate_of, plate_page_of, user_agent,
};
use crate::domain::Merchant;
use crate::domain::order::{Order, OrderStatus, is_overdue};
use crate::domain::plate::Plate;
use crate::error::{ApiError, ErrorCode};
use crate::i18n::Messages;
use crate::services::shopper::{self, AmountError, Created, FormCheck, Routed};
use crate::startup::AppState;
use crate::wallets::Route;

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
    line: Option<Line>,
    action: String,
    nonce: String,
    currency: String,
    amount_label: String,
    amount: String,
    fixed_amount: Option<String>,
    detected: Option<String>,
    brands: Vec<BrandChoice>,
    wechat_hint: bool,
    amount_error: Option<String>,
    wallet_error: Option<String>,
    form_error: Option<String>,
}

/// The line under the merchant's name, its value (plate label, order description)
/// set apart.
pub struct Line {
    before: String,
    value: String,
    after: String,
}

/// What a Pay page is about.
#[derive(Clone, Copy)]
enum Payee<'a> {
    Plate {
        token: &'a str,
        plate: &'a Plate,
    },
    /// A dynamic order created without a wallet.
    Order(&'a Order),
}

impl Payee<'_> {
    /// The GET address of the page.
    fn page(&self) -> String {
        match self {
            Payee::Plate { token, .. } => format!("/q/{token}"),
            Payee::Order(order) => format!("/o/{}", order.id),
        }
    }

    fn subject(&self) -> String {
        match self {
            Payee::Plate { plate, .. } => shopper::plate_subject(&plate.id),
            Payee::Order(order) => shopper::order_subject(&order.id),
        }
    }

    /// The shared pay budget's key.
    fn key(&self) -> String {
        match self {
            Payee::Plate { plate, .. } => plate.id.to_string(),
            Payee::Order(order) => order.id.to_string(),
        }
    }

    fn currency(&self, merchant: &Merchant) -> Currency {
        match self {
            Payee::Plate { .. } => merchant.currency,
            Payee::Order(order) => order.currency,
        }
    }

    fn fixed_minor(&self) -> Option<i64> {
        match self {
            Payee::Plate { plate, .. } => plate.fixed_amount_minor,
            Payee::Order(order) => Some(order.amount_minor),
        }
    }

    /// The line under the merchant's name: the plate's label, the order's description.
    fn line(&self, t: &Messages) -> Option<Line> {
        let (key, name, text) = match self {
            Payee::Plate { plate, .. } => ("plate_line", "label", plate.label.trim()),
            Payee::Order(order) => ("order_line", "description", order.description.trim()),
        };
        let (before, after) = t.around(key, name);
        (!text.is_empty()).then(|| Line {
            before,
            value: text.to_owned(),
            after,
        })
    }

    /// The wallet an order was already routed to (it stays with it).
    fn routed_brand(&self) -> Option<&str> {
        match self {
            Payee::Order(order) if order.adapter.is_some() => order.brand.as_deref(),
            _ => None,
        }
    }
}

/// What the form shows besides the payee: typed values and errors.
#[derive(Default)]
struct FormState {
    nonce: String,
    amount: String,
    wallet: Option<String>,
    amount_error: Option<String>,
    wallet_error: Option<String>,
    form_error: Option<String>,
}

fn amount_message(t: &Messages, error: &AmountError, currency: Currency) -> String {
    let example = |decimal: &str| {
        if currency.exponent() == 0 {
            t.get("amount_example_whole").to_owned()
        } else {
            t.get(decimal).to_owned()
        }
    };
    match error {
        AmountError::Empty => t.get("err_amount_empty").to_owned(),
        AmountError::Invalid => t.fill(
            "err_amount_invalid",
            &[("example", &example("amount_example_decimal"))],
        ),
        AmountError::Ambiguous => t.fill(
            "err_amount_ambiguous",
            &[("example", &example("amount_example_large"))],
        ),
        AmountError::WholeOnly => t.fill("err_amount_whole", &[("currency", currency.code())]),
        AmountError::TooManyDecimals { allowed } => t.fill(
            "err_amount_decimals",
            &[
                ("currency", currency.code()),
                ("decimals", &allowed.to_string()),
            ],
        ),
        AmountError::BelowMinimum(m) => t.fill("err_amount_min", &[("amount", &t.money(m))]),
        AmountError::AboveMaximum(m) => t.fill("err_amount_max", &[("amount", &t.money(m))]),
    }
}

fn pay_page(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    payee: Payee,
    merchant: &Merchant,
    mut form: FormState,
) -> HttpResponse {
    let (lang, remember) = language(req);
    let t = lang.messages();
    let currency = payee.currency(merchant);
    let name = merchant_name(merchant, lang);
    let ua = user_agent(req);
    let detected = match payee.routed_brand() {
        Some(id) => state.wallets.brands.get(id),
        None => shopper::detect_brand(state, &ua, currency),
    };
    let (brands, wechat_hint) = match detected {
        Some(_) => (Vec::new(), false),
        None => {
            let (offered, hidden) = shopper::picker_brands(state, currency);
            let choices = offered
                .into_iter()
                .map(|b| BrandChoice {
                    id: b.id().to_owned(),
                    name: b.names().for_language(lang.tag()).to_owned(),
                    checked: form.wallet.as_deref() == Some(b.id()),
                })
                .collect();
            (choices, hidden)
        }
    };
    let fixed = payee.fixed_minor();
    if let Some(minor) = fixed
        && form.form_error.is_none()
        && shopper::fixed_amount(state, minor, currency).is_err()
    {
        form.form_error = Some(t.get("err_fixed_amount").to_owned());
    }
    let tpl = PayPage {
        chrome: Chrome::new(
            lang,
            t.fill("pay_title", &[("merchant", &name)]),
            &payee.page(),
        ),
        merchant_name: name,
        line: payee.line(t),
        action: format!("{}/pay", payee.page()),
        nonce: form.nonce,
        currency: currency.code().to_owned(),
        amount_label: t.fill("amount_label", &[("currency", currency.code())]),
        amount: form.amount,
        fixed_amount: fixed.map(|minor| t.money_minor(minor, currency)),
        detected: detected.map(|b| {
            t.fill(
                "wallet_detected",
                &[("wallet", b.names().for_language(lang.tag()))],
            )
        }),
        brands,
        wechat_hint,
        amount_error: form.amount_error,
        wallet_error: form.wallet_error,
        form_error: form.form_error,
    };
    page(state, status, lang, remember, tpl.render())
}

/// A fresh form for `payee`.
fn fresh_form(state: &AppState, payee: Payee) -> FormState {
    FormState {
        nonce: shopper::issue_form(state, &payee.subject()),
        ..FormState::default()
    }
}

/// The admitted request's plate (token checked before any store read) and merchant.
/// A page view may be answered from the plate cache; a pay submission reads afresh.
async fn admit_plate(
    state: &AppState,
    req: &HttpRequest,
    budget: Budget,
) -> Result<(String, Plate, Merchant), Answered> {
    admit(state, req, budget)?;
    let (token, plate_id) = plate_of(state, req)?;
    let found = match budget {
        Budget::Pages => shopper::plate_and_merchant_for_page(state, &plate_id).await,
        _ => shopper::plate_and_merchant(state, &plate_id).await,
    };
    match found {
        Ok(Some((plate, merchant))) => Ok((token, plate, merchant)),
        Ok(None) => Err(Box::new(chrome::not_found(state, req))),
        Err(e) => Err(Box::new(chrome::failure(state, req, &e, None))),
    }
}

/// `GET /q/{token}`: the page a plate's QR opens.
pub async fn plate_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (token, plate, merchant) = match admit_plate(&state, &req, Budget::Pages).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let payee = Payee::Plate {
        token: &token,
        plate: &plate,
    };
    let form = fresh_form(&state, payee);
    pay_page(&state, &req, StatusCode::OK, payee, &merchant, form)
}

/// The gateway order's Pay page (`GET /o/{id}` while no shopper has started it).
pub(super) fn order_pay_page(
    state: &AppState,
    req: &HttpRequest,
    order: &Order,
    merchant: &Merchant,
) -> HttpResponse {
    let payee = Payee::Order(order);
    let form = fresh_form(state, payee);
    pay_page(state, req, StatusCode::OK, payee, merchant, form)
}

/// `GET` on a form's POST address (a reload, a shared link): the form's page.
pub async fn to_form_page(req: HttpRequest) -> HttpResponse {
    see_other(&chrome::form_page(&req))
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

/// A submitted form: its values, or the fresh form answering a bad or stale one.
fn read_form(
    state: &AppState,
    req: &HttpRequest,
    payee: Payee,
    merchant: &Merchant,
    body: &[u8],
) -> Result<FormState, Answered> {
    let t = language(req).0.messages();
    let posted = std::str::from_utf8(body)
        .ok()
        .and_then(|text| web::Query::<PayForm>::from_query(text).ok())
        .map(web::Query::into_inner);
    let fresh = |state: &AppState| {
        let mut form = fresh_form(state, payee);
        form.form_error = Some(t.get("err_form_expired").to_owned());
        form
    };
    let Some(posted) = posted else {
        return Err(Box::new(pay_page(
            state,
            req,
            StatusCode::BAD_REQUEST,
            payee,
            merchant,
            fresh(state),
        )));
    };
    let nonce = posted.nonce.trim().to_owned();
    if shopper::check_form(state, &payee.subject(), &nonce) != FormCheck::Valid {
        let mut form = fresh(state);
        form.amount = posted.amount.chars().take(20).collect();
        form.wallet = posted.wallet.filter(|w| !w.is_empty());
        return Err(Box::new(pay_page(
            state,
            req,
            StatusCode::BAD_REQUEST,
            payee,
            merchant,
            form,
        )));
    }
    Ok(FormState {
        nonce,
        amount: posted.amount.chars().take(20).collect(),
        wallet: posted.wallet.filter(|w| !w.is_empty()),
        ..FormState::default()
    })
}

/// The amount and the route a valid form pays with, or the form with its errors.
fn checked(
    state: &AppState,
    req: &HttpRequest,
    payee: Payee,
    merchant: &Merchant,
    mut form: FormState,
) -> Result<(Money, Route, FormState), Answered> {
    let t = language(req).0.messages();
    let currency = payee.currency(merchant);
    let amount = match payee.fixed_minor() {
        Some(minor) => shopper::fixed_amount(state, minor, currency).map_err(|e| {
            tracing::warn!(?e, "a fixed amount is outside the payment limits");
            form.form_error = Some(t.get("err_fixed_amount").to_owned());
        }),
        None => shopper::typed_amount(state, &form.amount, currency).map_err(|e| {
            form.amount_error = Some(amount_message(t, &e, currency));
        }),
    };
    // A gateway order already routed (waiting for WeChat's OAuth, or a start to retry)
    // shows its wallet instead of the picker; another choice finds it taken.
    let brand = shopper::chosen_brand(state, &user_agent(req), form.wallet.as_deref(), currency)
        .or_else(|| {
            payee
                .routed_brand()
                .and_then(|id| state.wallets.brands.get(id))
        });
    let route = brand.and_then(|b| shopper::static_route(state, b, currency));
    if route.is_none() {
        form.wallet = None;
        form.wallet_error = Some(t.get("err_wallet_missing").to_owned());
    }
    match (amount, route) {
        (Ok(amount), Some(route)) => Ok((amount, route, form)),
        _ => Err(Box::new(pay_page(
            state,
            req,
            StatusCode::UNPROCESSABLE_ENTITY,
            payee,
            merchant,
            form,
        ))),
    }
}

/// A submitted Pay form, in order: its nonce, its amount and wallet, then the payee's
/// shared budget (drawn only by a valid submission, so forged or mistyped ones cannot
/// use it up).
fn submission(
    state: &AppState,
    req: &HttpRequest,
    payee: Payee,
    merchant: &Merchant,
    body: &[u8],
) -> Result<(Money, Route, FormState), Answered> {
    let form = read_form(state, req, payee, merchant, body)?;
    let valid = checked(state, req, payee, merchant, form)?;
    admit_payee(state, req, &payee.key())?;
    Ok(valid)
}

/// The same form again, saying the wallet could not be reached (its outcome is
/// unknown: the form may retry, as the same order).
fn wallet_unavailable(
    state: &AppState,
    req: &HttpRequest,
    payee: Payee,
    merchant: &Merchant,
    mut form: FormState,
) -> HttpResponse {
    let t = language(req).0.messages();
    form.form_error = Some(t.get("err_wallet_unavailable").to_owned());
    pay_page(
        state,
        req,
        StatusCode::SERVICE_UNAVAILABLE,
        payee,
        merchant,
        form,
    )
}

/// `POST /q/{token}/pay`: check the form, create (or find) the order, go to the wallet.
pub async fn pay(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let (token, plate, merchant) = match admit_plate(&state, &req, Budget::Pay).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let payee = Payee::Plate {
        token: &token,
        plate: &plate,
    };
    let (amount, route, mut form) = match submission(&state, &req, payee, &merchant, &body) {
        Ok(valid) => valid,
        Err(response) => return *response,
    };
    let created =
        shopper::create_plate_order(&state, &merchant, &plate, &form.nonce, amount, &route).await;
    let order = match created {
        Ok(Created::New(order)) | Ok(Created::Existing(order)) => order,
        Ok(Created::Conflict) => {
            form.nonce = shopper::issue_form(&state, &payee.subject());
            form.form_error = Some(language(&req).0.messages().get("err_form_used").to_owned());
            return pay_page(&state, &req, StatusCode::CONFLICT, payee, &merchant, form);
        }
        Err(e) => return chrome::failure(&state, &req, &e, Some(payee.page())),
    };
    let order_id = order.id.clone();
    match hand_off(&state, &req, &merchant, order, &route, payee.page()).await {
        // This browser started the order: it alone may give it up later.
        Started::Answer(mut response) => {
            if let Ok(cookie) = HeaderValue::from_str(&payer_cookie(&state, &order_id)) {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        // Same nonce, same order id: a retry is the same order.
        Started::Unavailable => wallet_unavailable(&state, &req, payee, &merchant, form),
    }
}

/// `POST /o/{id}/pay`: a shopper pays a gateway order with the wallet they hold.
pub async fn order_pay(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> HttpResponse {
    let (order, merchant) = match admit_payable_order(&state, &req, Budget::Pay).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let status_page = format!("/o/{}", order.id);
    if !shopper::awaits_wallet_choice(&order) || is_overdue(order.expires_at, state.clock.now_ms())
    {
        return see_other(&status_page);
    }
    let payee = Payee::Order(&order);
    let (_, route, form) = match submission(&state, &req, payee, &merchant, &body) {
        Ok(valid) => valid,
        Err(response) => return *response,
    };
    let routed = match shopper::route_gateway_order(&state, &merchant, order.clone(), &route).await
    {
        Ok(Routed::Ready(order)) => order,
        Ok(Routed::Taken(order)) => return taken(&state, &req, &order),
        Err(e) => return chrome::failure(&state, &req, &e, Some(status_page)),
    };
    match hand_off(&state, &req, &merchant, routed, &route, status_page).await {
        Started::Answer(response) => response,
        Started::Unavailable => wallet_unavailable(&state, &req, payee, &merchant, form),
    }
}

/// Another wallet holds this gateway order already.
fn taken(state: &AppState, req: &HttpRequest, order: &Order) -> HttpResponse {
    let (lang, _) = language(req);
    let t = lang.messages();
    let text = t.fill(
        "order_taken_text",
        &[("wallet", &brand_name(state, order, lang))],
    );
    let link = Link {
        id: "status-link",
        href: format!("/o/{}", order.id),
        label: t.get("status_title").to_owned(),
    };
    chrome::message(
        state,
        req,
        StatusCode::CONFLICT,
        "order_taken_title",
        text,
        Some(link),
    )
}

enum Started {
    Answer(HttpResponse),
    /// The wallet did not answer: the outcome is unknown, the same form may retry.
    Unavailable,
}

/// Starts `order` at its wallet (once) and answers where the shopper goes next;
/// `back` is where "try again" leads if the wallet refuses.
async fn hand_off(
    state: &AppState,
    req: &HttpRequest,
    merchant: &Merchant,
    order: Order,
    route: &Route,
    back: String,
) -> Started {
    let status_page = format!("/o/{}", order.id);
    let wallet_page = format!("{status_page}/wallet");
    if order.status.is_terminal() {
        return Started::Answer(see_other(&status_page));
    }
    // WeChat starts after its OAuth names the shopper: the wallet page sends them there.
    if route.adapter_id == AdapterId::WechatPay {
        return Started::Answer(see_other(&wallet_page));
    }
    match shopper::start_redirect(state, merchant, order, route, &user_agent(req)).await {
        Ok(order)
            if order.status == OrderStatus::Pending && shopper::redirect_url(&order).is_some() =>
        {
            Started::Answer(see_other(&wallet_page))
        }
        Ok(_) => Started::Answer(see_other(&status_page)),
        Err(e) if e.code == ErrorCode::WalletRejected => {
            Started::Answer(refused_by_wallet(state, req, &e, back))
        }
        Err(e) => {
            tracing::warn!(
                code = e.code.code(),
                detail = e.message(),
                "wallet start failed"
            );
            Started::Unavailable
        }
    }
}

/// The wallet refused to create the payment (the order is failed, nothing was taken).
pub(super) fn refused_by_wallet(
    state: &AppState,
    req: &HttpRequest,
    error: &ApiError,
    back: String,
) -> HttpResponse {
    tracing::info!(
        detail = error.message(),
        "the wallet refused a shopper payment"
    );
    let t = language(req).0.messages();
    chrome::message(
        state,
        req,
        StatusCode::UNPROCESSABLE_ENTITY,
        "err_wallet_rejected",
        t.get("wallet_rejected_text").to_owned(),
        Some(chrome::again_link(req, back)),
    )
}

#[derive(Template)]
#[template(path = "redirect.html")]
struct OpeningPage {
    chrome: Chrome,
    heading: String,
    text: String,
    button: String,
    url: String,
    status_href: String,
}

/// `GET /o/{id}/wallet`: "Opening your wallet…", a same-origin page that sends the
/// shopper to the wallet (its cashier, or WeChat's OAuth) by meta refresh and a link.
pub async fn open_wallet(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (order, _) = match admit_payable_order(&state, &req, Budget::Pages).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let status_href = format!("/o/{}", order.id);
    if order.status.is_terminal() {
        return see_other(&status_href);
    }
    let is_wechat = order.adapter.as_deref() == Some(AdapterId::WechatPay.as_str());
    let url = match (order.status, is_wechat) {
        (OrderStatus::Created, true) => match state.wallets.wechat.as_ref() {
            Some(wechat) => {
                let redirect_uri = format!(
                    "{}/o/{}/wechat",
                    state.settings.server.public_base_url, order.id
                );
                wechat.oauth_authorize_url(&redirect_uri, order.id.as_str())
            }
            None => {
                let back = plate_page_of(&state, &order);
                return chrome::failure(
                    &state,
                    &req,
                    &ApiError::new(ErrorCode::WalletUnavailable),
                    back,
                );
            }
        },
        (OrderStatus::Pending, true) => return see_other(&format!("{status_href}/wechat")),
        (OrderStatus::Pending, false) => match shopper::redirect_url(&order) {
            Some(url) => url,
            None => return see_other(&status_href),
        },
        _ => return see_other(&status_href),
    };
    let (lang, remember) = language(&req);
    let t = lang.messages();
    let wallet = brand_name(&state, &order, lang);
    let heading = t.fill("opening_title", &[("wallet", &wallet)]);
    let tpl = OpeningPage {
        chrome: Chrome::new(lang, heading.clone(), &chrome::here(&req)),
        heading,
        text: t.fill("opening_text", &[("wallet", &wallet)]),
        button: t.fill("opening_button", &[("wallet", &wallet)]),
        url,
        status_href,
    };
    page(&state, StatusCode::OK, lang, remember, tpl.render())
}
