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

/// Every POST, the same bad bodies: each gets its 4xx from the table and nothing moves.
#[tokio::test]
async fn every_post_refuses_bad_bodies_and_bad_credentials_and_changes_nothing() {
    let app = spawn_app().await;
    let shop = app.onboard("Cafe").await;
    let created: serde_json::Value = app
        .post_json(
            "/v1/orders",
            Some(&shop.api_key),
            &json!({"amount": "10.00", "currency": "MOP", "description": "tea"}),
            Some("order-1"),
        )
        .await
        .json()
        .await
        .unwrap();
    let order = created["id"].as_str().unwrap().to_owned();
    let admin = app.admin_token.clone();
    let huge = format!(r#"{{"label":"{}"}}"#, "x".repeat(70 * 1024));
    let endpoints: Vec<(String, &str, &str)> = vec![
        ("/v1/merchants".into(), admin.as_str(), r#"{"name":7}"#),
        (
            format!("/v1/merchants/{}/plates", shop.id),
            admin.as_str(),
            r#"{"label":7}"#,
        ),
        (
            "/v1/orders".into(),
            shop.api_key.as_str(),
            r#"{"amount":10,"currency":"MOP","description":"x"}"#,
        ),
        (
            format!("/v1/orders/{order}/refunds"),
            shop.api_key.as_str(),
            r#"{"amount":1}"#,
        ),
    ];
    for (path, credential, mistyped) in &endpoints {
        let cases: Vec<(Option<&str>, Vec<u8>, StatusCode, &str)> = vec![
            (
                Some(credential),
                huge.clone().into_bytes(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            ),
            (
                Some(credential),
                b"{".to_vec(),
                StatusCode::BAD_REQUEST,
                "malformed_json",
            ),
            (
                Some(credential),
                br#"{"surprise":true}"#.to_vec(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
            ),
            (
                Some(credential),
                mistyped.as_bytes().to_vec(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
            ),
            (
                None,
                br#"{}"#.to_vec(),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                Some("adm_forged_0000000000000000000000"),
                br#"{}"#.to_vec(),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
        ];
        for (token, body, status, code) in cases {
            let response = app.post_raw(path, token, "application/json", body).await;
            let status_seen = response.status();
            let body = assert_error(response, status, code).await;
            assert!(
                body["error"]["request_id"].is_string(),
                "{path}: {status_seen} {body}"
            );
        }
    }
    // Rotating a key takes no body; a large, a non-empty or an unauthenticated one is
    // refused and the current key keeps working.
    let rotate = format!("/v1/merchants/{}/api-keys", shop.id);
    for (token, body, status, code) in [
        (
            Some(admin.as_str()),
            huge.clone().into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            Some(admin.as_str()),
            b"garbage".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            Some(admin.as_str()),
            br#"{"x":1}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            Some(shop.api_key.as_str()),
            Vec::new(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (None, Vec::new(), StatusCode::UNAUTHORIZED, "unauthorized"),
    ] {
        let response = app.post_raw(&rotate, token, "application/json", body).await;
        assert_error(response, status, code).await;
    }
    // A wallet callback body over the limit gets the same JSON error.
    let response = app
        .post_raw(
            "/webhooks/alipay_plus",
            None,
            "application/json",
            huge.clone().into_bytes(),
        )
        .await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;

    // Nothing changed: one merchant, its default plate, the one order, no refund, and
    // the original API key still authenticates.
    assert_eq!(app.merchant_count().await, 1);
    let plates: serde_json::Value = app
        .get("/v1/qr", Some(&shop.api_key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plates["data"].as_array().unwrap().len(), 1, "{plates}");
    let orders: serde_json::Value = app
        .get("/v1/orders", Some(&shop.api_key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(orders["data"].as_array().unwrap().len(), 1, "{orders}");
    let refunds: serde_json::Value = app
        .get(&format!("/v1/orders/{order}/refunds"), Some(&shop.api_key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refunds["data"].as_array().unwrap().len(), 0, "{refunds}");
    app.assert_ledger_ok().await;
}
