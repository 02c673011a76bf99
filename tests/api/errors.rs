//! Bad input gets a clear 4xx with a stable code from the one table, and changes nothing.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::{assert_error, merchant_body, spawn_app};

#[tokio::test]
async fn malformed_oversized_and_mistyped_bodies_are_rejected_and_change_nothing() {
    let app = spawn_app().await;
    let token = app.admin_token.clone();
    let valid = serde_json::to_vec(&merchant_body("Cafe")).unwrap();
    let mut huge = merchant_body("Cafe");
    huge["name_pt"] = json!("x".repeat(70 * 1024));
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("application/json", b"{\"name\": ".to_vec(), StatusCode::BAD_REQUEST, "malformed_json"),
        ("application/json", b"not json at all".to_vec(), StatusCode::BAD_REQUEST, "malformed_json"),
        ("application/json", vec![0xff, 0xfe, 0x00], StatusCode::BAD_REQUEST, "malformed_json"),
        ("application/json", b"".to_vec(), StatusCode::BAD_REQUEST, "malformed_json"),
        ("application/json", serde_json::to_vec(&huge).unwrap(), StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        ("application/json", br#"{"name":"Cafe","city":"MACAU","country":"MO","mcc":"5812","currency":"MOP","admin":true}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("application/json", br#"{"name":5,"city":"MACAU","country":"MO","mcc":"5812","currency":"MOP"}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("application/json", br#"{"city":"MACAU","country":"MO","mcc":"5812","currency":"MOP"}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("application/json", br#"[1,2,3]"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("application/json", br#"{"name":"Cafe","city":"MACAU","country":"MO","mcc":"5812","currency":"mop"}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
        ("application/json", br#"{"name":"Cafe","city":"MACAU","country":"MO","mcc":"-812","currency":"MOP"}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
        ("text/plain", valid.clone(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("application/x-www-form-urlencoded", b"name=Cafe".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
    ];
    for (content_type, body, status, code) in cases {
        let response = app
            .post_raw("/v1/merchants", Some(&token), content_type, body)
            .await;
        assert_error(response, status, code).await;
    }
    assert_eq!(
        app.merchant_count().await,
        0,
        "no bad request created anything"
    );
    // The same server still works.
    let ok = app
        .post_raw(
            "/v1/merchants",
            Some(&token),
            "application/json; charset=utf-8",
            valid,
        )
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_body_streamed_past_the_limit_without_length_is_refused() {
    let app = spawn_app().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..80).map(|_| Ok(vec![b' '; 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = app
        .client
        .post(app.url("/v1/merchants"))
        .bearer_auth(&app.admin_token)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
    assert_eq!(app.merchant_count().await, 0);
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json_errors() {
    let app = spawn_app().await;
    assert_error(
        app.get("/v1/nothing-here", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let response = app
        .client
        .delete(app.url("/v1/merchants"))
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let response = app.client.put(app.url("/healthz")).send().await.unwrap();
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    assert_error(
        app.get("/v1/merchants/m_zzzz", Some(&app.admin_token))
            .await,
        StatusCode::NOT_FOUND,
        "merchant_not_found",
    )
    .await;
    assert_error(
        app.get("/v1/merchants/m_0000000000000000", Some(&app.admin_token))
            .await,
        StatusCode::NOT_FOUND,
        "merchant_not_found",
    )
    .await;
}

#[tokio::test]
async fn request_ids_are_echoed_and_unsafe_ones_replaced() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/v1/nothing"))
        .header("X-Request-Id", "trace-abc_123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc_123");
    let body = assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(body["error"]["request_id"], "trace-abc_123");
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("X-Request-Id", "bad id with spaces <script>")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(id.starts_with("req_"), "{id}");
}
