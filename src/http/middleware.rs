//! Per-request middleware: request id (header, span, error bodies) and metrics.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Data;
use tracing::Instrument;

use super::request_id;
use crate::domain::ids::{base32, random_bytes};
use crate::startup::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A client-supplied id is kept only when short and made of safe characters.
fn incoming_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then(|| value.to_owned())
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = incoming_id(&req).unwrap_or_else(|| format!("req_{}", base32(&random_bytes::<10>())));
    let method = req.method().to_string();
    let path = req.path().to_owned();
    let state = req.app_data::<Data<AppState>>().cloned();
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    let started = Instant::now();
    let result = request_id::scope(id.clone(), next.call(req).instrument(span.clone())).await;
    let mut response = result?;
    let status = response.status().as_u16();
    let pattern = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let elapsed = started.elapsed();
    if let Some(state) = state {
        state.metrics.observe_request(
            metric_method(&method),
            &pattern,
            status,
            elapsed.as_secs_f64(),
        );
    }
    span.in_scope(|| {
        tracing::info!(status, elapsed_ms = elapsed.as_millis() as u64, route = %pattern, "served");
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(response)
}

/// The method as a metric label: a fixed set, so a client inventing methods cannot
/// grow the metrics without bound (the route label is a route pattern, already bounded).
fn metric_method(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("OTHER")
}
