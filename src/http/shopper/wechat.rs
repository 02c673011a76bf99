//! WeChat Pay from a shopper page: WeChat's silent OAuth comes back to
//! `GET /o/{id}/wechat?code=` (older plate flows: `/q/{token}/wechat?code=&state=`,
//! `state` being the order id) with the shopper's code; the order is started with
//! their openid (JSAPI) and the page opens WeChat's payment sheet. A shopper who
//! cancels the sheet (or whose sheet fails) is sent through `POST /o/{id}/cancel`,
//! so the payment is closed and the status page says so instead of waiting.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::chrome::{self, Chrome, language, page, see_other};
use super::pay::refused_by_wallet;
use super::{
    Budget, admit, admit_payable_order, may_cancel, merchant_name, plate_of, plate_page_of,
};
use crate::domain::order::{Order, OrderStatus};
use crate::domain::{Merchant, OrderId};
use crate::error::{ApiError, ErrorCode};
use crate::services::shopper;
use crate::startup::AppState;

#[derive(Template)]
#[template(path = "wechat.html")]
struct WechatPage {
    chrome: Chrome,
    merchant_name: String,
    amount: String,
    params: Vec<(String, String)>,
    status_href: String,
    cancel_action: String,
    /// Only for the browser that started a plate order (see `may_cancel`).
    cancel_nonce: Option<String>,
    bridge: Option<String>,
}

#[derive(Deserialize)]
struct OauthReturn {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

fn oauth_return(req: &HttpRequest) -> OauthReturn {
    web::Query::<OauthReturn>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or(OauthReturn {
            code: None,
            state: None,
        })
}

/// `GET /o/{id}/wechat?code=`: WeChat's OAuth return for an order.
pub async fn wechat_return(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (order, merchant) = match admit_payable_order(&state, &req, Budget::Pages).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let query = oauth_return(&req);
    if query
        .state
        .as_deref()
        .is_some_and(|s| s != order.id.as_str())
    {
        return chrome::not_found(&state, &req);
    }
    jsapi(&state, &req, order, &merchant, query.code.as_deref()).await
}

/// `GET /q/{token}/wechat?code=&state=`: the plate-scoped OAuth return (`state` is the
/// order id, which must belong to the plate).
pub async fn wechat_return_plate(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(refused) = admit(&state, &req, Budget::Pages) {
        return *refused;
    }
    let plate_id = match plate_of(&state, &req) {
        Ok((_, plate_id)) => plate_id,
        Err(response) => return *response,
    };
    let query = oauth_return(&req);
    let Some(id) = query.state.as_deref().and_then(OrderId::parse) else {
        return chrome::not_found(&state, &req);
    };
    let order = match state.store.order(&id).await {
        Ok(Some(order)) if order.plate_id.as_ref() == Some(&plate_id) => order,
        Ok(_) => return chrome::not_found(&state, &req),
        Err(e) => return chrome::failure(&state, &req, &ApiError::from(e), None),
    };
    let merchant = match state.store.merchant(&order.merchant_id).await {
        Ok(Some(m)) => m,
        Ok(None) => return chrome::not_found(&state, &req),
        Err(e) => return chrome::failure(&state, &req, &ApiError::from(e), None),
    };
    jsapi(&state, &req, order, &merchant, query.code.as_deref()).await
}

/// Starts the order for the shopper's openid (once) and shows the JSAPI page.
async fn jsapi(
    state: &AppState,
    req: &HttpRequest,
    order: Order,
    merchant: &Merchant,
    code: Option<&str>,
) -> HttpResponse {
    let status_href = format!("/o/{}", order.id);
    let back = plate_page_of(state, &order).unwrap_or_else(|| status_href.clone());
    let unavailable = |state: &AppState| {
        chrome::failure(
            state,
            req,
            &ApiError::new(ErrorCode::WalletUnavailable),
            Some(back.clone()),
        )
    };
    if order.status.is_terminal() {
        return see_other(&status_href);
    }
    let order = if order.status == OrderStatus::Created {
        let (Some(wechat), Some(route)) = (
            state.wallets.wechat.as_ref(),
            shopper::route_of(state, &order),
        ) else {
            return unavailable(state);
        };
        // No code (a reload of an old link): ask WeChat again.
        let Some(code) = code else {
            return see_other(&format!("{status_href}/wallet"));
        };
        let openid = match wechat.exchange_oauth_code(code).await {
            Ok(openid) => openid,
            Err(e) => {
                tracing::warn!(error = %e, order = %order.id, "wechat oauth code exchange failed");
                return unavailable(state);
            }
        };
        match shopper::start_jsapi(state, merchant, order, &route, openid).await {
            Ok(order) => order,
            Err(e) if e.code == ErrorCode::WalletRejected => {
                return refused_by_wallet(state, req, &e, back);
            }
            Err(e) => return chrome::failure(state, req, &e, Some(back)),
        }
    } else {
        order
    };
    let Some(params) = shopper::jsapi_params(&order) else {
        return see_other(&status_href);
    };
    wechat_page(state, req, merchant, &order, params)
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
    let bridge = chrome::sandbox_wechat_base(state)
        .map(|base| format!("{base}/jsbridge/getBrandWCPayRequest"));
    let tpl = WechatPage {
        // The language links keep `code` (and `state`): the order is started, so
        // showing the page again does not use the code a second time.
        chrome: Chrome::new(lang, t.get("wechat_title").to_owned(), &chrome::here(req)),
        merchant_name: merchant_name(merchant, lang),
        amount: t.money_minor(order.amount_minor, order.currency),
        params,
        status_href: format!("/o/{}", order.id),
        cancel_action: format!("/o/{}/cancel", order.id),
        cancel_nonce: may_cancel(state, req, order)
            .then(|| shopper::issue_form(state, &shopper::cancel_subject(&order.id))),
        bridge,
    };
    page(state, StatusCode::OK, lang, remember, tpl.render())
}
