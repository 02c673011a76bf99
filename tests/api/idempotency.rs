//! Stripe semantics for `Idempotency-Key` on admin POSTs, through the real server.

use reqwest::StatusCode;
use serde_json::Value;
use sesame::config::StoreBackend;

use crate::support::app::{TestApp, assert_error, merchant_body, spawn_app, spawn_app_on};

async fn same_key_same_body_replays_the_stored_response(app: TestApp) {
    let body = merchant_body("Cafe");
    let first = app
        .post_json(
            "/v1/merchants",
            Some(&app.admin_token),
            &body,
            Some("onboard-cafe-1"),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = app
        .post_json(
            "/v1/merchants",
            Some(&app.admin_token),
            &body,
            Some("onboard-cafe-1"),
        )
        .await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again, "byte-identical replay, same api key");
    assert_eq!(app.merchant_count().await, 1);
    assert_eq!(app.metric("sesame_idempotent_replays_total").await, 1.0);

    let mut other = merchant_body("Cafe");
    other["city"] = "TAIPA".into();
    let response = app
        .post_json(
            "/v1/merchants",
            Some(&app.admin_token),
            &other,
            Some("onboard-cafe-1"),
        )
        .await;
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(app.merchant_count().await, 1);
}

#[tokio::test]
async fn same_key_same_body_replays_the_stored_response_embedded() {
    same_key_same_body_replays_the_stored_response(spawn_app().await).await;
}

#[tokio::test]
async fn same_key_same_body_replays_the_stored_response_redis() {
    same_key_same_body_replays_the_stored_response(spawn_app_on(StoreBackend::Redis).await).await;
}

#[tokio::test]
async fn json_key_order_and_spacing_do_not_change_the_request() {
    let app = spawn_app().await;
    let a = br#"{"name":"Cafe","city":"MACAU","country":"MO","mcc":"5812","currency":"MOP"}"#;
    let b = b"{ \"currency\": \"MOP\", \"mcc\": \"5812\", \"country\": \"MO\", \"city\": \"MACAU\", \"name\": \"Cafe\" }";
    for body in [a.to_vec(), b.to_vec()] {
        let response = app
            .client
            .post(app.url("/v1/merchants"))
            .bearer_auth(&app.admin_token)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", "k-order")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    assert_eq!(app.merchant_count().await, 1);
}

async fn concurrent_duplicates_create_exactly_one_merchant(app: TestApp) {
    let body = merchant_body("Cafe");
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let client = app.client.clone();
        let url = app.url("/v1/merchants");
        let token = app.admin_token.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", "concurrent-1")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }));
    }
    let mut created_ids = std::collections::HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => {
                created_ids.insert(body["merchant"]["id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => assert_eq!(body["error"]["code"], "request_in_progress"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(
        created_ids.len(),
        1,
        "every success names the same merchant"
    );
    assert_eq!(app.merchant_count().await, 1);
}

#[tokio::test]
async fn concurrent_duplicates_create_exactly_one_merchant_embedded() {
    concurrent_duplicates_create_exactly_one_merchant(spawn_app().await).await;
}

#[tokio::test]
async fn concurrent_duplicates_create_exactly_one_merchant_redis() {
    concurrent_duplicates_create_exactly_one_merchant(spawn_app_on(StoreBackend::Redis).await)
        .await;
}

#[tokio::test]
async fn a_key_held_by_a_running_request_answers_409() {
    let app = spawn_app().await;
    // Take the key as a request in flight would, then call the API with it.
    let body = serde_json::to_vec(&merchant_body("Cafe")).unwrap();
    let fingerprint = sesame::services::idempotency::fingerprint("POST", "/v1/merchants", &body);
    let _pending = app
        .state
        .idempotency
        .begin(sesame::store::IdemScope::Admin, "held", &fingerprint)
        .await
        .unwrap();
    let response = app
        .post_raw(
            "/v1/merchants",
            Some(&app.admin_token),
            "application/json",
            body,
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "no key: not affected"
    );
    let response = app
        .client
        .post(app.url("/v1/merchants"))
        .bearer_auth(&app.admin_token)
        .header("Idempotency-Key", "held")
        .json(&merchant_body("Cafe"))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::CONFLICT, "request_in_progress").await;
    assert_eq!(app.merchant_count().await, 1);
}

#[tokio::test]
async fn a_rejected_request_does_not_burn_its_key_and_bad_keys_are_refused() {
    let app = spawn_app().await;
    let mut bad = merchant_body("Cafe");
    bad["country"] = "Macau".into();
    let response = app
        .post_json(
            "/v1/merchants",
            Some(&app.admin_token),
            &bad,
            Some("retry-me"),
        )
        .await;
    assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    let response = app
        .post_json(
            "/v1/merchants",
            Some(&app.admin_token),
            &merchant_body("Cafe"),
            Some("retry-me"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);

    let long = "k".repeat(256);
    let response = app
        .post_json(
            "/v1/merchants",
            Some(&app.admin_token),
            &merchant_body("X"),
            Some(&long),
        )
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
    let response = app
        .client
        .post(app.url("/v1/merchants"))
        .bearer_auth(&app.admin_token)
        .header(
            "Idempotency-Key",
            reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        )
        .json(&merchant_body("X"))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
    assert_eq!(app.merchant_count().await, 1);
}

#[tokio::test]
async fn plate_creation_and_key_rotation_are_idempotent_too() {
    let app = spawn_app().await;
    let m = app.onboard("Cafe").await;
    let body = serde_json::json!({"label": "Till 9"});
    let path = format!("/v1/merchants/{}/plates", m.id);
    let a: Value = app
        .post_json(&path, Some(&app.admin_token), &body, Some("plate-9"))
        .await
        .json()
        .await
        .unwrap();
    let b: Value = app
        .post_json(&path, Some(&app.admin_token), &body, Some("plate-9"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["id"], b["id"]);
    let plates: Value = app
        .get("/v1/qr", Some(&m.api_key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plates["data"].as_array().unwrap().len(), 2);

    let path = format!("/v1/merchants/{}/api-keys", m.id);
    let k1: Value = app
        .post_json(
            &path,
            Some(&app.admin_token),
            &serde_json::json!({}),
            Some("rot-1"),
        )
        .await
        .json()
        .await
        .unwrap();
    let k2: Value = app
        .post_json(
            &path,
            Some(&app.admin_token),
            &serde_json::json!({}),
            Some("rot-1"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(k1["api_key"], k2["api_key"]);
    assert_eq!(
        app.get("/v1/qr", Some(k1["api_key"].as_str().unwrap()))
            .await
            .status(),
        StatusCode::OK
    );
}

/// The merchant API: an order or refund id is derived from the Idempotency-Key, so
/// the key names that record for good. It is handed back only for the same request
/// and only within the key's retention.
mod derived_ids {
    use chrono::Utc;
    use reqwest::StatusCode;
    use serde_json::{Value, json};
    use sesame::clock::ManualClock;
    use sesame::config::StoreBackend;
    use sesame::error::ErrorCode;
    use sesame::services::payments::{self, CreateRefundRequest};

    use crate::payments::{create, faults, get_order, pay_at_wallet, shop, wait_status};
    use crate::support::app::{assert_error, spawn_reachable, spawn_with_clock};

    #[tokio::test]
    async fn an_order_key_retried_with_another_request_after_a_failure_is_refused() {
        let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
        let shop = shop(&app).await;
        let body =
            json!({"amount": "33.00", "currency": "MOP", "description": "x", "wallet": "mpay"});
        // The first attempt fails at the wallet: the key is released, the order exists.
        faults(&app, "alipay_plus", json!({"fail_requests": 1})).await;
        let failed = app
            .post_json(
                "/v1/orders",
                Some(&shop.key),
                &body,
                Some("till-1-ticket-4"),
            )
            .await;
        assert_error(
            failed,
            StatusCode::SERVICE_UNAVAILABLE,
            "wallet_unavailable",
        )
        .await;
        let listed: Value = app
            .get("/v1/orders", Some(&shop.key))
            .await
            .json()
            .await
            .unwrap();
        let order_id = listed["data"][0]["id"].as_str().unwrap().to_owned();
        for (field, value) in [
            ("amount", json!("34.00")),
            ("description", json!("y")),
            ("reference", json!("T-5")),
            ("wallet", json!("wechat_pay")),
        ] {
            let mut other = body.clone();
            other[field] = value;
            let refused = app
                .post_json(
                    "/v1/orders",
                    Some(&shop.key),
                    &other,
                    Some("till-1-ticket-4"),
                )
                .await;
            let error = assert_error(
                refused,
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
            )
            .await;
            let message = error["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(&order_id) && message.contains(field),
                "{field}: {message}"
            );
        }
        // The same request goes on with the same order.
        let retried = app
            .post_json(
                "/v1/orders",
                Some(&shop.key),
                &body,
                Some("till-1-ticket-4"),
            )
            .await;
        assert_eq!(retried.status(), StatusCode::CREATED);
        let order: Value = retried.json().await.unwrap();
        assert_eq!(order["id"], order_id.as_str());
        assert_eq!(order["status"], "pending");
        app.assert_ledger_ok().await;
    }

    #[tokio::test]
    async fn keys_reused_after_their_retention_are_refused_naming_the_earlier_records() {
        let clock = ManualClock::new(Utc::now().timestamp_millis());
        let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
        let shop = shop(&app).await;
        let body =
            json!({"amount": "12.00", "currency": "MOP", "description": "x", "wallet": "mpay"});
        let created = app
            .post_json(
                "/v1/orders",
                Some(&shop.key),
                &body,
                Some("pos-1-ticket-17"),
            )
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let order: Value = created.json().await.unwrap();
        let id = order["id"].as_str().unwrap().to_owned();
        pay_at_wallet(&app, &order).await;
        wait_status(&app, &shop, &id, "succeeded").await;
        let refunds = format!("/v1/orders/{id}/refunds");
        let refund = app
            .post_json(
                &refunds,
                Some(&shop.key),
                &json!({"amount": "2.00"}),
                Some("refund-1"),
            )
            .await;
        assert_eq!(refund.status(), StatusCode::CREATED);
        let refund: Value = refund.json().await.unwrap();
        // The next day the POS reuses yesterday's ticket key: it must not get
        // yesterday's paid order back (the cashier would hand over unpaid goods).
        clock.advance(25 * 3_600_000);
        let reused = app
            .post_json(
                "/v1/orders",
                Some(&shop.key),
                &body,
                Some("pos-1-ticket-17"),
            )
            .await;
        let error = assert_error(
            reused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
        )
        .await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&id) && message.contains("24 h"),
            "{message}"
        );
        let again = app
            .post_json(
                &refunds,
                Some(&shop.key),
                &json!({"amount": "2.00"}),
                Some("refund-1"),
            )
            .await;
        let error = assert_error(
            again,
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
        )
        .await;
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains(refund["id"].as_str().unwrap())
        );
        let after = get_order(&app, &shop, &id).await;
        assert_eq!(after["refunded"], "2.00");
        assert_eq!(after["refunds"].as_array().unwrap().len(), 1);
        let listed: Value = app
            .get("/v1/orders", Some(&shop.key))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(listed["data"].as_array().unwrap().len(), 1);
        app.assert_ledger_ok().await;
    }

    #[tokio::test]
    async fn a_refund_id_derived_from_a_key_is_never_handed_to_another_request() {
        let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
        let shop = shop(&app).await;
        let order = create(
            &app,
            &shop,
            json!({"amount": "50.00", "currency": "MOP", "description": "x", "wallet": "mpay"}),
        )
        .await;
        let id = order["id"].as_str().unwrap().to_owned();
        pay_at_wallet(&app, &order).await;
        wait_status(&app, &shop, &id, "succeeded").await;
        let first: Value = app
            .post_json(
                &format!("/v1/orders/{id}/refunds"),
                Some(&shop.key),
                &json!({"amount": "5.00", "reason": "cold"}),
                Some("refund-a"),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(first["status"], "succeeded");
        // What a retry meets once the stored response is gone (released after an
        // error): the refund the key derives, compared with the new request.
        let order_id = sesame::domain::OrderId::parse(&id).unwrap();
        let retry = |amount: &str, reason: Option<&str>| CreateRefundRequest {
            amount: amount.to_owned(),
            reason: reason.map(str::to_owned),
        };
        for other in [retry("6.00", Some("cold")), retry("5.00", Some("late"))] {
            let refused = payments::refund_order(&app.state, &order_id, &other, Some("refund-a"))
                .await
                .unwrap_err();
            assert_eq!(refused.code, ErrorCode::IdempotencyKeyReused, "{other:?}");
            assert!(refused.message().contains(first["id"].as_str().unwrap()));
        }
        let same = payments::refund_order(
            &app.state,
            &order_id,
            &retry("5.00", Some("cold")),
            Some("refund-a"),
        )
        .await
        .unwrap();
        assert_eq!(same.id.as_str(), first["id"].as_str().unwrap());
        assert_eq!(get_order(&app, &shop, &id).await["refunded"], "5.00");
        app.assert_ledger_ok().await;
    }
}
