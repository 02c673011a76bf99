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

#[tokio::test]
async fn a_token_file_without_a_token_is_refused_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin_token");
    std::fs::write(&path, "").unwrap();
    let err = match sesame::services::admin_token::resolve("", dir.path()) {
        Ok(_) => panic!("an empty token file was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("admin_token") && err.contains("delete it"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"", "left for the operator");
    // Once removed, a fresh token is generated, complete, with no temporary left over.
    std::fs::remove_file(&path).unwrap();
    let resolved = sesame::services::admin_token::resolve("", dir.path()).unwrap();
    assert!(matches!(
        resolved,
        sesame::services::admin_token::Resolved::Generated(..)
    ));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["admin_token".to_owned()]);
}

#[tokio::test]
async fn readiness_fails_and_writes_are_refused_while_redis_is_not_durable() {
    let app = spawn_app_on(StoreBackend::Redis).await;
    assert_eq!(app.get("/readyz", None).await.status(), StatusCode::OK);
    // An operator turns fsync-always off on the running server.
    let client = redis::Client::open(app.state.settings.store.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("everysec")
        .query_async(&mut conn)
        .await
        .unwrap();
    let response = app.get("/readyz", None).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable");
    assert!(body["error"]["request_id"].is_string(), "{body}");
    assert_eq!(body["store"]["durable"], false, "{body}");
    // Nothing is acknowledged meanwhile: the write is refused, not half-promised.
    let refused = app
        .create_merchant(&crate::support::app::merchant_body("Cafe"))
        .await;
    crate::support::app::assert_error(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    )
    .await;
    assert_eq!(app.merchant_count().await, 0);
    // Durable again: ready, and writes are taken.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("always")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(app.get("/readyz", None).await.status(), StatusCode::OK);
    app.onboard("Cafe").await;
    assert_eq!(app.merchant_count().await, 1);
}
