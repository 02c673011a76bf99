//! The merchant order API without a wallet round trip: validation, isolation,
//! idempotency, listing, gateway QR orders, closing, events. (Paying through every
//! wallet's sandbox is in `payments.rs`.)

use reqwest::StatusCode;
use serde_json::{Value, json};
use sesame::config::StoreBackend;

use crate::support::app::{TestApp, assert_error, spawn_app, spawn_app_on};

async fn post_order(
    app: &TestApp,
    key: &str,
    body: &Value,
    idem: Option<&str>,
) -> reqwest::Response {
    app.post_json("/v1/orders", Some(key), body, idem).await
}

#[tokio::test]
async fn bad_orders_are_refused_with_a_stable_code_and_create_nothing() {
    let app = spawn_app().await;
    let m = app.onboard("Cafe").await;
    let cases = [
        (
            json!({"amount": 12.5, "currency": "MOP", "description": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"amount": "12.505", "currency": "MOP", "description": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            json!({"amount": "-1", "currency": "MOP", "description": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            json!({"amount": "0", "currency": "MOP", "description": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            json!({"amount": "1e3", "currency": "MOP", "description": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            json!({"amount": "99999999999", "currency": "MOP", "description": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            json!({"amount": "10", "currency": "XXX", "description": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"amount": "10", "currency": "MOP", "description": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"amount": "10", "currency": "MOP", "description": "x", "expires_in": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"amount": "10", "currency": "MOP", "description": "x", "wallet": "paypal"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_wallet",
        ),
        (
            json!({"amount": "10", "currency": "MOP", "description": "x", "auth_code": "9912345678901234"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_payment_code",
        ),
        (
            json!({"amount": "10", "currency": "MOP", "description": "x", "auth_code": "13abc"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"amount": "10", "currency": "MOP", "description": "x", "auth_code": "134567890123450000", "wallet": "mpay"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"amount": "10", "currency": "MOP", "description": "x", "tip": "1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let response = post_order(&app, &m.api_key, &body, None).await;
        assert_error(response, status, code).await;
    }
    let listed: Value = app
        .get("/v1/orders", Some(&m.api_key))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        listed["data"].as_array().unwrap().is_empty(),
        "nothing created"
    );
    let response = post_order(
        &app,
        "sk_wrong",
        &json!({"amount": "10", "currency": "MOP", "description": "x"}),
        None,
    )
    .await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    app.assert_ledger_ok().await;
}

async fn a_gateway_qr_order_is_created_listed_and_closed(app: TestApp) {
    let m = app.onboard("Cafe").await;
    let response = post_order(
        &app,
        &m.api_key,
        &json!({"amount": "25.50", "currency": "MOP", "description": "Lunch", "reference": "T-17"}),
        Some("pos-1-ticket-17"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(order["status"], "created");
    assert_eq!(order["amount"], "25.50");
    assert_eq!(order["reference"], "T-17");
    assert!(
        order["pay"]["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/o/{id}"))
    );

    // Same key, same body: the same order, replayed.
    let again: Value = post_order(
        &app,
        &m.api_key,
        &json!({"amount": "25.50", "currency": "MOP", "description": "Lunch", "reference": "T-17"}),
        Some("pos-1-ticket-17"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(again["id"], order["id"]);
    let list: Value = app
        .get("/v1/orders?status=created", Some(&m.api_key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    let fetched: Value = app
        .get(&format!("/v1/orders/{id}"), Some(&m.api_key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["ledger"], json!([]));
    let closed = app
        .post_json(
            &format!("/v1/orders/{id}/close"),
            Some(&m.api_key),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(closed.status(), StatusCode::OK);
    let closed: Value = closed.json().await.unwrap();
    assert_eq!(closed["status"], "expired");
    let again = app
        .post_json(
            &format!("/v1/orders/{id}/close"),
            Some(&m.api_key),
            &json!({}),
            None,
        )
        .await;
    assert_error(again, StatusCode::CONFLICT, "order_not_open").await;
    let events: Value = app
        .get("/v1/events", Some(&m.api_key))
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["order.expired"]);
    // Nothing was paid, so nothing can be refunded.
    let refund = app
        .post_json(
            &format!("/v1/orders/{id}/refunds"),
            Some(&m.api_key),
            &json!({"amount": "1.00"}),
            None,
        )
        .await;
    assert_error(refund, StatusCode::CONFLICT, "order_not_refundable").await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_gateway_qr_order_is_created_listed_and_closed_embedded() {
    a_gateway_qr_order_is_created_listed_and_closed(spawn_app().await).await;
}

#[tokio::test]
async fn a_gateway_qr_order_is_created_listed_and_closed_redis() {
    a_gateway_qr_order_is_created_listed_and_closed(spawn_app_on(StoreBackend::Redis).await).await;
}

#[tokio::test]
async fn a_merchant_sees_only_its_own_orders_and_events() {
    let app = spawn_app().await;
    let a = app.onboard("Shop A").await;
    let b = app.onboard("Shop B").await;
    let order: Value = post_order(
        &app,
        &a.api_key,
        &json!({"amount": "5", "currency": "MOP", "description": "x"}),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let id = order["id"].as_str().unwrap();
    for path in [
        format!("/v1/orders/{id}"),
        format!("/v1/orders/{id}/refunds"),
    ] {
        assert_error(
            app.get(&path, Some(&b.api_key)).await,
            StatusCode::NOT_FOUND,
            "order_not_found",
        )
        .await;
    }
    let close = app
        .post_json(
            &format!("/v1/orders/{id}/close"),
            Some(&b.api_key),
            &json!({}),
            None,
        )
        .await;
    assert_error(close, StatusCode::NOT_FOUND, "order_not_found").await;
    let listed: Value = app
        .get("/v1/orders", Some(&b.api_key))
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["data"].as_array().unwrap().is_empty());
    let response = app
        .get(&format!("/v1/orders?cursor={id}"), Some(&b.api_key))
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    assert_eq!(
        app.get(&format!("/v1/orders/{id}"), Some(&a.api_key))
            .await
            .status(),
        StatusCode::OK
    );
    let balances: Value = app
        .get("/v1/balances", Some(&b.api_key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(balances["data"], json!([]));
}

#[tokio::test]
async fn orders_page_newest_first_with_filters() {
    let app = spawn_app().await;
    let m = app.onboard("Cafe").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let order: Value = post_order(
            &app,
            &m.api_key,
            &json!({"amount": format!("{}.00", i + 1), "currency": "MOP", "description": "x"}),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    let page: Value = app
        .get("/v1/orders?limit=2", Some(&m.api_key))
        .await
        .json()
        .await
        .unwrap();
    let first: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(first.len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .get(
            &format!("/v1/orders?limit=10&cursor={cursor}"),
            Some(&m.api_key),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["data"].as_array().unwrap().len(), 3);
    let mut all: Vec<String> = first.iter().map(|s| s.to_string()).collect();
    all.extend(
        rest["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned()),
    );
    all.sort();
    ids.sort();
    assert_eq!(all, ids);
    for bad in [
        "status=paid",
        "limit=0",
        "created_from=yesterday",
        "cursor=o_nope",
        "sort=asc",
    ] {
        assert_error(
            app.get(&format!("/v1/orders?{bad}"), Some(&m.api_key))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        )
        .await;
    }
    let future: Value = app
        .get(
            "/v1/orders?created_from=2999-01-01T00:00:00Z",
            Some(&m.api_key),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(future["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_merchant_rate_above_100_percent_refuses_the_order_and_creates_nothing() {
    let app = spawn_app().await;
    let (mut bundle, key) = crate::store_conformance::bundle("Cafe", 1_700_000_000_000);
    bundle.merchant.fees_bps.insert("mpay".to_owned(), 10_001);
    app.state.store.create_merchant(&bundle).await.unwrap();
    let body = json!({"amount": "10.00", "currency": "MOP", "description": "x", "wallet": "mpay"});
    let refused = post_order(&app, key.expose(), &body, None).await;
    assert_error(refused, StatusCode::INTERNAL_SERVER_ERROR, "internal_error").await;
    let listed: Value = app
        .get("/v1/orders", Some(key.expose()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"], json!([]));
    // Brands without a merchant rate use the (valid) default.
    let other =
        json!({"amount": "10.00", "currency": "MOP", "description": "x", "wallet": "wechat_pay"});
    assert_eq!(
        post_order(&app, key.expose(), &other, None).await.status(),
        StatusCode::CREATED
    );
    app.assert_ledger_ok().await;
}
