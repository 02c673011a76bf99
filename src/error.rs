//! Every error a client can see, in ONE table: stable code, HTTP status, message.
//!
//! Owns: `ErrorCode` (the table) and `ApiError` (a code plus an optional detail)
//! which renders the JSON body `{"error": {"code", "message", "request_id"}}`.
//! Must never: put secrets, internal paths or cause chains into a message; the
//! cause of a 5xx is logged once here and the client sees only the code.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::http::request_id;

macro_rules! error_codes {
    ($($variant:ident => ($code:literal, $status:expr, $message:literal),)*) => {
        /// The stable error codes. Clients switch on `code`; never rename one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode { $($variant,)* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];
            pub fn code(self) -> &'static str { match self { $(ErrorCode::$variant => $code,)* } }
            pub fn status(self) -> StatusCode { match self { $(ErrorCode::$variant => $status,)* } }
            pub fn message(self) -> &'static str { match self { $(ErrorCode::$variant => $message,)* } }
        }
    };
}

error_codes! {
    Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED, "Missing or invalid bearer token."),
    Forbidden => ("forbidden", StatusCode::FORBIDDEN, "This credential may not access that resource."),
    NotFound => ("not_found", StatusCode::NOT_FOUND, "No such resource."),
    MerchantNotFound => ("merchant_not_found", StatusCode::NOT_FOUND, "No such merchant."),
    PlateNotFound => ("plate_not_found", StatusCode::NOT_FOUND, "No such plate."),
    MethodNotAllowed => ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED, "Method not allowed on this resource."),
    BodyTooLarge => ("body_too_large", StatusCode::PAYLOAD_TOO_LARGE, "Request body exceeds 64 KiB."),
    UnsupportedMediaType => ("unsupported_media_type", StatusCode::UNSUPPORTED_MEDIA_TYPE, "Send the body as application/json."),
    MalformedJson => ("malformed_json", StatusCode::BAD_REQUEST, "The body is not valid JSON."),
    InvalidRequest => ("invalid_request", StatusCode::UNPROCESSABLE_ENTITY, "The request has an unknown field, a missing field or a field of the wrong type."),
    InvalidField => ("invalid_field", StatusCode::UNPROCESSABLE_ENTITY, "A field has an invalid value."),
    InvalidQuery => ("invalid_query", StatusCode::BAD_REQUEST, "A query parameter is missing or invalid."),
    InvalidAmount => ("invalid_amount", StatusCode::UNPROCESSABLE_ENTITY, "The amount is not valid for this currency."),
    PayloadTooLong => ("qr_field_too_long", StatusCode::UNPROCESSABLE_ENTITY, "A QR payload field exceeds its EMVCo length limit."),
    InvalidIdempotencyKey => ("invalid_idempotency_key", StatusCode::BAD_REQUEST, "Idempotency-Key must be 1 to 255 visible ASCII characters."),
    IdempotencyKeyReused => ("idempotency_key_reused", StatusCode::UNPROCESSABLE_ENTITY, "This Idempotency-Key was used with a different request."),
    RequestInProgress => ("request_in_progress", StatusCode::CONFLICT, "A request with this Idempotency-Key is still in progress; retry later."),
    OrderNotFound => ("order_not_found", StatusCode::NOT_FOUND, "No such order."),
    EventNotFound => ("event_not_found", StatusCode::NOT_FOUND, "No such event."),
    UnknownWallet => ("unknown_wallet", StatusCode::UNPROCESSABLE_ENTITY, "No enabled wallet brand has this id."),
    UnknownPaymentCode => ("unknown_payment_code", StatusCode::UNPROCESSABLE_ENTITY, "No wallet brand issues payment codes like this one."),
    WalletUnavailable => ("wallet_unavailable", StatusCode::SERVICE_UNAVAILABLE, "The wallet did not answer; retry with the same Idempotency-Key."),
    WalletRejected => ("wallet_rejected", StatusCode::UNPROCESSABLE_ENTITY, "The wallet refused the request."),
    OrderNotRefundable => ("order_not_refundable", StatusCode::CONFLICT, "Only succeeded orders can be refunded."),
    RefundExceedsCaptured => ("refund_exceeds_captured", StatusCode::UNPROCESSABLE_ENTITY, "The refund would exceed what is left to refund."),
    OrderNotOpen => ("order_not_open", StatusCode::CONFLICT, "The order is already final."),
    StoreUnavailable => ("store_unavailable", StatusCode::SERVICE_UNAVAILABLE, "The store is unavailable; retry later."),
    Internal => ("internal_error", StatusCode::INTERNAL_SERVER_ERROR, "Internal error."),
}

/// A client-facing error: a code from the table and an optional precise detail
/// (which field, which limit). The detail replaces the generic message.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        ApiError { code, detail: None }
    }

    pub fn with(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: Some(detail.into()),
        }
    }

    /// A 5xx whose cause is logged here, once, and never shown to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(ErrorCode::Internal)
    }

    pub fn message(&self) -> &str {
        self.detail.as_deref().unwrap_or(self.code.message())
    }

    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "code": self.code.code(),
                "message": self.message(),
                "request_id": request_id::current(),
            }
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.code(), self.message())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if self.code == ErrorCode::Unauthorized {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(self.body())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Unavailable(cause) => {
                tracing::error!(error = %cause, "store unavailable");
                ApiError::new(ErrorCode::StoreUnavailable)
            }
            other => ApiError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.code()), "duplicate {}", code.code());
            assert!(
                code.code()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }
}
