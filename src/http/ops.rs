//! Operations endpoints: liveness, readiness (store + durability), Prometheus metrics.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::error::{ApiError, ErrorCode};
use crate::startup::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the store answers AND its writes are durable (unless the operator chose
/// `store.allow_volatile`): a gateway that would acknowledge payments it could lose in
/// a crash must not receive traffic. Reports the store's durability either way.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.health().await {
        Ok(health) => {
            state.metrics.store_durable.store(
                u64::from(health.durable),
                std::sync::atomic::Ordering::Relaxed,
            );
            if health.durable || state.settings.store.allow_volatile {
                return HttpResponse::Ok().json(json!({ "status": "ready", "store": health }));
            }
            tracing::error!(durability = %health.durability, "store writes are not durable: not ready");
            let error = ApiError::with(
                ErrorCode::StoreUnavailable,
                format!("the store's writes are not durable ({})", health.durability),
            );
            unavailable(&error, Some(json!(health)))
        }
        Err(e) => {
            tracing::warn!(error = %e, "store not ready");
            unavailable(&ApiError::new(ErrorCode::StoreUnavailable), None)
        }
    }
}

/// 503 with the code table's error body, plus what is known of the store.
fn unavailable(error: &ApiError, store: Option<serde_json::Value>) -> HttpResponse {
    let mut body = error.body();
    body["status"] = json!("unavailable");
    if let Some(store) = store {
        body["store"] = store;
    }
    HttpResponse::ServiceUnavailable().json(body)
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(state.renders.renders()))
}
