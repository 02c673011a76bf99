//! Operations endpoints and the generated admin token.

use reqwest::StatusCode;
use serde_json::Value;
use sesame::config::StoreBackend;

use crate::support::app::{spawn_app, spawn_app_on, spawn_with};

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let health = app.get("/healthz", None).await;
    assert_eq!(health.status(), StatusCode::OK);
    let ready: Value = app.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["store"]["backend"], "embedded");
    assert_eq!(ready["store"]["durable"], true);
    app.onboard("Cafe").await;
    let metrics = app.get("/metrics", None).await;
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(
            r#"sesame_http_requests_total{method="POST",route="/v1/merchants",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("sesame_store_durable 1"));
}

#[tokio::test]
async fn readiness_reports_redis_durability() {
    let app = spawn_app_on(StoreBackend::Redis).await;
    let ready: Value = app.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(ready["store"]["backend"], "redis");
    assert_eq!(ready["store"]["durable"], true);
}

#[tokio::test]
async fn an_unset_admin_token_is_generated_once_with_private_permissions() {
    let app = spawn_with(StoreBackend::Embedded, |s| s.admin.token = String::new()).await;
    let path = app.dir.path().join("admin_token");
    let token = std::fs::read_to_string(&path).unwrap();
    assert!(token.starts_with("adm_"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let response = app.get("/v1/merchants", Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    // A second start on the same data dir reuses it.
    let resolved = sesame::services::admin_token::resolve("", app.dir.path()).unwrap();
    assert!(matches!(
        resolved,
        sesame::services::admin_token::Resolved::Stored(_)
    ));
    assert_eq!(resolved.token().expose(), token);
}
