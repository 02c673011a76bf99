//! Where every payment ends: `GET /o/{id}` (the status page, or a gateway order's Pay
//! page while no shopper has started it), its poller `GET /o/{id}/status`, and
//! `POST /o/{id}/cancel` for a shopper who gives up on an open payment.
//!
//! Pending says what to do next and offers a way out (back to the shop, which first
//! closes the payment at its wallet so it cannot also be paid there later). Succeeded
//! is large and clear, with amount, merchant, time and reference: a page to show the
//! cashier. Failed and expired say so gently and keep watching for a while, since a
//! wallet may still report a late payment (`paid_late`). Without JavaScript a meta
//! refresh does the polling; both back off (2 s, 5 s, 10 s).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::chrome::{self, Chrome, language, page, see_other};
use super::{
    Budget, admit_order, brand_name, may_cancel, merchant_name, pay::order_pay_page, plate_page_of,
};
use crate::domain::Merchant;
use crate::domain::order::{Order, OrderStatus, is_overdue};
use crate::services::shopper::{self, FormCheck};
use crate::startup::AppState;

/// A form on the status page that cancels the payment and goes back to the shop.
pub struct CancelForm {
    action: String,
    nonce: String,
    label: String,
}

/// A link on the status page.
pub struct Action {
    id: &'static str,
    href: String,
    label: String,
}

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage {
    chrome: Chrome,
    id: String,
    /// `pending` (also for created), `succeeded`, `failed`, `expired`.
    status: &'static str,
    /// Poll (and refresh without JavaScript) every this many seconds; 0 = final.
    refresh_secs: u32,
    headline: String,
    amount: String,
    merchant_label: String,
    merchant_name: String,
    time: Option<String>,
    hints: Vec<String>,
    /// Button-styled links (pay again, back to the shop).
    buttons: Vec<Action>,
    /// Plain links (refresh, open the wallet again).
    links: Vec<Action>,
    cancel: Option<CancelForm>,
}

/// What the status page and its poller call the order's state.
fn shown_status(order: &Order) -> &'static str {
    match order.status {
        OrderStatus::Created => OrderStatus::Pending.as_str(),
        other => other.as_str(),
    }
}

/// Seconds between two looks at the order (0: it is final, nothing more to watch).
/// Open orders: 2 s for the first 20 s, 5 s up to a minute, then 10 s. A failed or
/// expired order is watched every 10 s for `late_payment_watch_secs`.
fn watch_interval(state: &AppState, order: &Order, now: i64) -> u32 {
    match order.status {
        OrderStatus::Created | OrderStatus::Pending => match now - order.created_at {
            age if age < 20_000 => 2,
            age if age < 60_000 => 5,
            _ => 10,
        },
        OrderStatus::Failed | OrderStatus::Expired => {
            let until = order.updated_at + state.settings.shopper.late_payment_watch_secs * 1000;
            if now < until { 10 } else { 0 }
        }
        OrderStatus::Succeeded => 0,
    }
}

/// Hours east of UTC where the merchant is (Macau, Hong Kong and China share UTC+8).
fn utc_offset_hours(country: &str) -> i32 {
    match country {
        "MO" | "HK" | "CN" | "TW" | "SG" | "MY" | "PH" => 8,
        "KR" | "JP" => 9,
        "TH" | "VN" => 7,
        _ => 0,
    }
}

/// `GET /o/{id}`: a gateway order's Pay page while it awaits a wallet, else the status.
pub async fn order_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (order, merchant) = match admit_order(&state, &req, Budget::Status).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    if shopper::awaits_wallet_choice(&order) && !is_overdue(order.expires_at, state.clock.now_ms())
    {
        return order_pay_page(&state, &req, &order, &merchant);
    }
    status_page(&state, &req, &order, &merchant)
}

fn status_page(
    state: &AppState,
    req: &HttpRequest,
    order: &Order,
    merchant: &Merchant,
) -> HttpResponse {
    let (lang, remember) = language(req);
    let t = lang.messages();
    let now = state.clock.now_ms();
    let refresh_secs = watch_interval(state, order, now);
    let self_href = format!("/o/{}", order.id);
    let plate = plate_page_of(state, order);
    let again = |label: &str| {
        plate.clone().map(|href| Action {
            id: "again",
            href,
            label: t.get(label).to_owned(),
        })
    };
    let mut hints = Vec::new();
    let mut buttons = Vec::new();
    let mut links = Vec::new();
    let mut cancel = None;
    let mut time = None;
    let mut merchant_label = "status_merchant";
    let headline = match order.status {
        OrderStatus::Created => {
            hints.push(t.get("status_not_started_hint").to_owned());
            buttons.extend(again("try_again"));
            "status_not_started"
        }
        OrderStatus::Pending => {
            hints.push(t.get("status_pending_hint").to_owned());
            links.push(Action {
                id: "refresh",
                href: self_href.clone(),
                label: t.get("refresh").to_owned(),
            });
            if shopper::redirect_url(order).is_some() {
                links.push(Action {
                    id: "open-wallet",
                    href: format!("{self_href}/wallet"),
                    label: t.fill(
                        "open_wallet_again",
                        &[("wallet", &brand_name(state, order, lang))],
                    ),
                });
            }
            // Back to the shop closes this payment first, so it cannot be paid twice;
            // offered only to the browser that started this plate payment.
            if may_cancel(state, req, order) {
                cancel = Some(CancelForm {
                    action: format!("{self_href}/cancel"),
                    nonce: shopper::issue_form(state, &shopper::cancel_subject(&order.id)),
                    label: t.get("choose_another").to_owned(),
                });
            }
            "status_pending"
        }
        OrderStatus::Succeeded => {
            merchant_label = "status_paid_to";
            time = Some(t.time(
                order.paid_at.unwrap_or(order.updated_at),
                utc_offset_hours(&merchant.country),
            ));
            "status_succeeded"
        }
        OrderStatus::Failed | OrderStatus::Expired => {
            hints.push(t.get("status_failed_hint").to_owned());
            if refresh_secs > 0 {
                hints.push(t.get("status_watching").to_owned());
                links.push(Action {
                    id: "refresh",
                    href: self_href.clone(),
                    label: t.get("check_again").to_owned(),
                });
            }
            buttons.extend(again("try_again"));
            if order.status == OrderStatus::Failed {
                "status_failed"
            } else {
                "status_expired"
            }
        }
    };
    let headline = t.get(headline).to_owned();
    let tpl = StatusPage {
        chrome: Chrome::new(lang, headline.clone(), &chrome::here(req)),
        id: order.id.to_string(),
        status: shown_status(order),
        refresh_secs,
        headline,
        amount: t.money_minor(order.amount_minor, order.currency),
        merchant_label: t.get(merchant_label).to_owned(),
        merchant_name: merchant_name(merchant, lang),
        time,
        hints,
        buttons,
        links,
        cancel,
    };
    page(state, StatusCode::OK, lang, remember, tpl.render())
}

/// `GET /o/{id}/status`: `{"status", "watch"}` for the status page's poller; `watch`
/// false means nothing more will change that the page should wait for.
pub async fn status_json(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match admit_order(&state, &req, Budget::Status).await {
        Ok((order, _)) => {
            let watch = watch_interval(&state, &order, state.clock.now_ms()) > 0;
            HttpResponse::Ok()
                .insert_header(("Cache-Control", "no-store"))
                .json(serde_json::json!({ "status": shown_status(&order), "watch": watch }))
        }
        Err(response) => *response,
    }
}

#[derive(Deserialize)]
struct CancelFormBody {
    #[serde(default)]
    nonce: String,
    /// `shop`: go back to the plate page afterwards (to choose another wallet).
    #[serde(default)]
    next: Option<String>,
}

/// `POST /o/{id}/cancel`: the shopper gives up on an open payment (cancelled the
/// WeChat sheet, or chose another wallet). Closed at the wallet through the payments
/// service — which settles it instead when it was paid meanwhile — then the status
/// page, or with `next=shop` the plate page.
pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> HttpResponse {
    let (order, _) = match admit_order(&state, &req, Budget::Pay).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let status_href = format!("/o/{}", order.id);
    if !may_cancel(&state, &req, &order) {
        // Not the browser that started this plate payment (or a merchant's gateway
        // order, whose id anyone near the till can read): nothing is cancelled.
        return see_other(&status_href);
    }
    let form = std::str::from_utf8(&body)
        .ok()
        .and_then(|text| web::Query::<CancelFormBody>::from_query(text).ok())
        .map(web::Query::into_inner);
    let Some(form) = form else {
        return see_other(&status_href);
    };
    let subject = shopper::cancel_subject(&order.id);
    if shopper::check_form(&state, &subject, form.nonce.trim()) != FormCheck::Valid {
        // Not a form we served (or a stale one): nothing is cancelled.
        return see_other(&status_href);
    }
    let to_shop = form.next.as_deref() == Some("shop");
    match shopper::cancel_order(&state, &order).await {
        Ok(closed) if closed.status == OrderStatus::Expired && to_shop => {
            see_other(&plate_page_of(&state, &closed).unwrap_or(status_href))
        }
        Ok(_) => see_other(&status_href),
        Err(e) => chrome::failure(&state, &req, &e, Some(status_href)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchants_in_macau_hong_kong_and_korea_get_their_local_time() {
        assert_eq!(utc_offset_hours("MO"), 8);
        assert_eq!(utc_offset_hours("KR"), 9);
        assert_eq!(utc_offset_hours("FR"), 0);
    }
}
