//! Wallet callbacks: `POST /webhooks/{adapter}` and the Kakao Pay return route.
//!
//! The raw bytes are verified by the adapter BEFORE anything is parsed; a forged or
//! stale callback is answered 401 and changes nothing. A verified one is applied in
//! one atomic commit, and only then does the wallet get its exact ack.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use sesame_adapters::contract::{Ack, AckResponse, AdapterError, AdapterId, RawCallback};

use super::extract::RawBody;
use crate::error::{ApiError, ErrorCode};
use crate::services::callbacks::{self, Handled};
use crate::startup::AppState;

fn respond(ack: AckResponse, status: Option<u16>) -> HttpResponse {
    let code = StatusCode::from_u16(status.unwrap_or(ack.status)).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(code);
    if let Some(content_type) = ack.content_type {
        response.content_type(content_type);
    }
    response.body(ack.body)
}

pub async fn wallet_callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    RawBody(body): RawBody,
) -> Result<HttpResponse, ApiError> {
    let adapter_id = AdapterId::parse(&path).map_err(|_| ApiError::new(ErrorCode::NotFound))?;
    let adapter = state
        .wallets
        .adapter(adapter_id)
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.path().to_owned());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| (name.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let received_at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(state.clock.now_ms())
        .unwrap_or_default();
    let raw = RawCallback::new(
        req.method().as_str(),
        &path_and_query,
        headers,
        body.to_vec(),
        received_at,
    );
    let event = match adapter.verify_callback(&raw) {
        Ok(event) => event,
        Err(e @ (AdapterError::BadSignature | AdapterError::Malformed(_))) => {
            tracing::warn!(adapter = %adapter_id, error = %e, "callback rejected");
            return Ok(respond(adapter.ack(Ack::Rejected), Some(401)));
        }
        Err(e) => {
            tracing::warn!(adapter = %adapter_id, error = %e, "callback not usable");
            return Ok(respond(adapter.ack(Ack::Rejected), Some(400)));
        }
    };
    match callbacks::apply(&state, adapter_id, event).await {
        Ok(Handled::Processed) => Ok(respond(adapter.ack(Ack::Processed), None)),
        Ok(Handled::RetryLater) => Ok(respond(adapter.ack(Ack::RetryLater), None)),
        Err(e) => {
            // Nothing was committed: the wallet must send it again.
            tracing::error!(adapter = %adapter_id, error = %e, "callback could not be applied");
            Ok(respond(adapter.ack(Ack::RetryLater), None))
        }
    }
}
