//! Runs a POST handler under the `Idempotency-Key` header (see `services::idempotency`).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;

use crate::error::ApiError;
use crate::services::idempotency::{self, Begin, HEADER};
use crate::startup::AppState;
use crate::store::IdemScope;

/// A handler's successful answer: status and JSON body.
pub struct Reply(pub StatusCode, pub Value);

fn respond(status: u16, body: Vec<u8>, replayed: bool) -> HttpResponse {
    let mut response = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK));
    response.content_type("application/json");
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    response.body(body)
}

/// Without the header the handler just runs. With it, a repeated request gets the
/// stored response, and a failure before any effect frees the key again.
pub async fn run<F, Fut>(
    req: &HttpRequest,
    state: &AppState,
    scope: IdemScope,
    body: &[u8],
    handler: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    let key = match req.headers().get(HEADER) {
        None => {
            let Reply(status, value) = handler().await?;
            return Ok(respond(
                status.as_u16(),
                value.to_string().into_bytes(),
                false,
            ));
        }
        Some(value) => value
            .to_str()
            .map_err(|_| ApiError::new(crate::error::ErrorCode::InvalidIdempotencyKey))?
            .to_owned(),
    };
    let fingerprint = idempotency::fingerprint(req.method().as_str(), req.path(), body);
    match state.idempotency.begin(scope, &key, &fingerprint).await? {
        Begin::Replay { status, body } => {
            state
                .metrics
                .idempotent_replays
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(respond(status, body, true))
        }
        Begin::Fresh(pending) => match handler().await {
            Ok(Reply(status, value)) => {
                let bytes = value.to_string().into_bytes();
                // The effect has happened: answer it even if storing the replay copy
                // fails (the lease then expires; the cause is logged by `finish`).
                if let Err(e) = state
                    .idempotency
                    .finish(pending, status.as_u16(), &bytes)
                    .await
                {
                    tracing::error!(error = %e, "could not store idempotent response");
                }
                Ok(respond(status.as_u16(), bytes, false))
            }
            Err(e) => {
                state.idempotency.release(pending).await;
                Err(e)
            }
        },
    }
}
