//! Routing by what each adapter can take: a brand's direct adapter only for the
//! currencies and modes it supports, else the brand's rail; the shared Alipay code
//! space on whichever Alipay rail is configured.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sesame::config::StoreBackend;

use crate::payments::{create, pay_at_wallet, shop, wait_status};
use crate::support::app::{TestApp, assert_error, spawn_reachable};

async fn test_code(app: &TestApp, adapter: &str, prefix: &str) -> String {
    crate::adapter_config::test_code(&app.url("/sandbox"), adapter, prefix).await
}

#[tokio::test]
async fn kakao_pay_in_mop_takes_the_alipay_plus_rail_and_in_krw_its_own_api() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    for (amount, currency, adapter) in [
        ("88.00", "MOP", "alipay_plus"),
        ("15000", "KRW", "kakao_pay"),
    ] {
        let order = create(
            &app,
            &shop,
            json!({"amount": amount, "currency": currency, "description": "Bibimbap", "wallet": "kakao_pay"}),
        )
        .await;
        assert_eq!(order["adapter"], adapter, "{currency}: {order}");
        assert_eq!(order["wallet"], "kakao_pay");
        pay_at_wallet(&app, &order).await;
        let paid = wait_status(&app, &shop, order["id"].as_str().unwrap(), "succeeded").await;
        assert_eq!(paid["amount"], amount);
    }
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_kakao_pay_payment_code_is_charged_through_alipay_plus_in_any_currency() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    for (amount, currency) in [("9.90", "MOP"), ("12000", "KRW")] {
        // Kakao Pay's own API takes no payment codes: Alipay+ charges them.
        let code = test_code(&app, "alipay_plus", "28008202").await;
        let order = create(
            &app,
            &shop,
            json!({"amount": amount, "currency": currency, "description": "Tteok", "auth_code": code}),
        )
        .await;
        assert_eq!(order["status"], "succeeded", "{currency}: {order}");
        assert_eq!(order["adapter"], "alipay_plus");
        assert_eq!(order["wallet"], "kakao_pay");
    }
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn an_alipay_code_is_charged_at_alipay_when_alipay_plus_is_switched_off() {
    let app = spawn_reachable(StoreBackend::Embedded, |s| {
        s.adapters.alipay_plus.enabled = false;
    })
    .await;
    let shop = shop(&app).await;
    // 18 digits starting 28: Alipay CN's, or an Alipay+ wallet's (the shared space).
    let code = test_code(&app, "alipay", "28").await;
    assert_eq!(code.len(), 18);
    let order = create(
        &app,
        &shop,
        json!({"amount": "20.00", "currency": "MOP", "description": "Egg tart", "auth_code": code}),
    )
    .await;
    assert_eq!(order["status"], "succeeded", "{order}");
    assert_eq!(order["adapter"], "alipay");
    assert_eq!(order["wallet"], "alipay_cn");
    // MPay exists only on the Alipay+ rail.
    let response = app
        .post_json(
            "/v1/orders",
            Some(&shop.key),
            &json!({"amount": "20.00", "currency": "MOP", "description": "x", "wallet": "mpay"}),
            None,
        )
        .await;
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "wallet_unavailable",
    )
    .await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_currency_no_adapter_of_the_brand_takes_is_refused_naming_the_currency() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    let response = app
        .post_json(
            "/v1/orders",
            Some(&shop.key),
            &json!({"amount": "15000", "currency": "KRW", "description": "x", "wallet": "wechat_pay"}),
            None,
        )
        .await;
    let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    assert!(body.to_string().contains("KRW"), "{body}");
    let listed: Value = app
        .get("/v1/orders", Some(&shop.key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        0,
        "nothing created"
    );
}
