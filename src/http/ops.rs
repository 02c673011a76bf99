//! Operations endpoints: liveness, readiness (store + durability), Prometheus metrics.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::startup::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the store answers. Reports the store's durability so an operator sees
/// a volatile Redis at a glance.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.health().await {
        Ok(health) => {
            state.metrics.store_durable.store(
                u64::from(health.durable),
                std::sync::atomic::Ordering::Relaxed,
            );
            HttpResponse::Ok().json(json!({ "status": "ready", "store": health }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "store not ready");
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "error": { "code": "store_unavailable", "message": "The store does not answer." }
            }))
        }
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(state.renders.renders()))
}
