//! Where a wallet sends the shopper's browser back: `GET /return/{adapter}/{order}`.
//!
//! Kakao Pay has no webhook: its return carries a one-time `pg_token`, and approving
//! with it is what captures the money, so this route drives `approve` and settles the
//! result (the reconciler polls orders whose return never came). For every other
//! wallet the callback is authoritative and the return only leads to the status page.

use actix_web::{HttpRequest, HttpResponse, web};
use sesame_adapters::contract::{AdapterId, OrderRef};
use sesame_adapters::kakao_pay::{self, KakaoReturn};

use crate::domain::OrderId;
use crate::error::{ApiError, ErrorCode};
use crate::services::payments;
use crate::startup::AppState;

fn to_status_page(id: &OrderId) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", format!("/o/{id}")))
        .finish()
}

pub async fn wallet_return(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (adapter, order_id) = path.into_inner();
    let not_found = || ApiError::new(ErrorCode::OrderNotFound);
    let adapter = AdapterId::parse(&adapter).map_err(|_| not_found())?;
    let id = OrderId::parse(&order_id).ok_or_else(not_found)?;
    let order = state.store.order(&id).await?.ok_or_else(not_found)?;
    if adapter != AdapterId::KakaoPay
        || order.adapter.as_deref() != Some(AdapterId::KakaoPay.as_str())
    {
        return Ok(to_status_page(&id));
    }
    let Some(kakao) = state.wallets.kakao.clone() else {
        return Ok(to_status_page(&id));
    };
    match kakao_pay::parse_return(req.query_string()) {
        Ok(KakaoReturn::Approved { pg_token }) => {
            let order_ref = OrderRef {
                order_id: order.id.to_string(),
                wallet_ref: order.wallet_ref.clone(),
            };
            match kakao.approve(&order_ref, &pg_token).await {
                Ok(status) => payments::apply_status(&state, &order, status).await?,
                Err(e) => {
                    // A refused or lost approve may still have captured: ask the wallet.
                    tracing::warn!(error = %e, order = %id, "kakao approve failed; querying");
                    payments::reconcile_order(&state, &order).await?;
                }
            }
        }
        Ok(KakaoReturn::Cancelled) | Ok(KakaoReturn::Failed) => {
            payments::reconcile_order(&state, &order).await?;
        }
        Err(e) => {
            tracing::warn!(error = %e, order = %id, "malformed kakao return");
        }
    }
    Ok(to_status_page(&id))
}
