//! The request id: accepted from `X-Request-Id` when it is short and safe, otherwise
//! generated; echoed in the response header, put on every log line (span) and into
//! every error body.

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id, or `"-"` outside a request.
pub fn current() -> String {
    REQUEST_ID
        .try_with(|id| id.clone())
        .unwrap_or_else(|_| "-".to_owned())
}

/// Runs `fut` with `id` as the current request id.
pub async fn scope<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}
