//! Money moving end to end: the real server, every wallet's real sandbox (mounted in
//! the server, speaking the wallet's protocol with signatures), a merchant webhook
//! endpoint. Every test ends with `sesame ledger verify` on the store.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sesame::config::StoreBackend;
use sesame::services::notify;

use crate::support::app::{TestApp, assert_error, spawn_reachable};
use crate::support::merchant_endpoint::MerchantEndpoint;

pub struct Shop {
    pub id: String,
    pub key: String,
    pub secret: String,
    pub endpoint: MerchantEndpoint,
}

pub async fn shop(app: &TestApp) -> Shop {
    let endpoint = MerchantEndpoint::start().await;
    let body = json!({
        "name": "Cafe Nam Van", "city": "MACAU", "country": "MO", "mcc": "5812",
        "currency": "MOP", "notify_url": endpoint.url,
    });
    let created: Value = app.create_merchant(&body).await.json().await.unwrap();
    Shop {
        id: created["merchant"]["id"].as_str().unwrap().to_owned(),
        key: created["api_key"].as_str().unwrap().to_owned(),
        secret: created["webhook_secret"].as_str().unwrap().to_owned(),
        endpoint,
    }
}

pub async fn create(app: &TestApp, shop: &Shop, body: Value) -> Value {
    let response = app
        .post_json("/v1/orders", Some(&shop.key), &body, None)
        .await;
    let status = response.status();
    let order: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{order}");
    order
}

pub async fn get_order(app: &TestApp, shop: &Shop, id: &str) -> Value {
    app.get(&format!("/v1/orders/{id}"), Some(&shop.key))
        .await
        .json()
        .await
        .unwrap()
}

pub async fn wait_status(app: &TestApp, shop: &Shop, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let order = get_order(app, shop, id).await;
        if order["status"] == status {
            return order;
        }
        assert!(
            Instant::now() < deadline,
            "order never became {status}: {order}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The wallet cashier URL of an order's pay action.
pub fn cashier_url(app: &TestApp, order: &Value) -> String {
    let action = &order["pay"]["action"];
    let url = action["data"]
        .as_str()
        .or(action["url"].as_str())
        .unwrap_or_default();
    if url.starts_with("weixin://") {
        return app.url(&format!(
            "/sandbox/wechat_pay/pay/{}",
            order["id"].as_str().unwrap()
        ));
    }
    url.to_owned()
}

/// The shopper presses Pay in the wallet; a return redirect to the gateway is followed.
pub async fn pay_at_wallet(app: &TestApp, order: &Value) {
    let url = cashier_url(app, order);
    let page = app.client.get(&url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "cashier {url}");
    let confirm = app
        .client
        .post(format!("{url}/confirm"))
        .send()
        .await
        .unwrap();
    assert!(
        confirm.status().is_success() || confirm.status().is_redirection(),
        "{}",
        confirm.status()
    );
    if let Some(location) = confirm
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        && location.contains("/return/")
    {
        let back = app.client.get(location).send().await.unwrap();
        assert_eq!(back.status(), StatusCode::SEE_OTHER);
    }
}

fn payment_entries(order: &Value) -> usize {
    order["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "payment")
        .count()
}

async fn a_dynamic_order_is_paid_posted_and_announced(
    app: &TestApp,
    wallet: &str,
    amount: &str,
    currency: &str,
) {
    let shop = shop(app).await;
    let order = create(
        app,
        &shop,
        json!({"amount": amount, "currency": currency, "description": "Coffee", "wallet": wallet}),
    )
    .await;
    assert_eq!(order["status"], "pending", "{wallet}: {order}");
    let id = order["id"].as_str().unwrap().to_owned();
    pay_at_wallet(app, &order).await;
    let paid = wait_status(app, &shop, &id, "succeeded").await;
    assert_eq!(paid["amount"], amount);
    assert_eq!(payment_entries(&paid), 1, "{wallet}");
    let delivered = shop.endpoint.wait_for("order.succeeded", 1, 20).await;
    let hook = &delivered[0];
    assert_eq!(hook.body["data"]["id"], id.as_str());
    assert_eq!(hook.body["data"]["status"], "succeeded");
    let now = chrono::Utc::now().timestamp();
    assert!(
        notify::verify(&shop.secret, &hook.signature, &hook.raw, now, 300),
        "signed with the merchant secret"
    );
    assert!(!notify::verify(
        "whsec_other",
        &hook.signature,
        &hook.raw,
        now,
        300
    ));
    let balances: Value = app
        .get("/v1/balances", Some(&shop.key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(balances["data"][0]["currency"], currency);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn mpay_pays_a_dynamic_order_through_alipay_plus() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    a_dynamic_order_is_paid_posted_and_announced(&app, "mpay", "25.50", "MOP").await;
}

#[tokio::test]
async fn alipay_hk_pays_a_dynamic_order_on_redis() {
    let app = spawn_reachable(StoreBackend::Redis, |_| {}).await;
    a_dynamic_order_is_paid_posted_and_announced(&app, "alipay_hk", "88.00", "HKD").await;
}

#[tokio::test]
async fn alipay_cn_pays_a_dynamic_order() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    a_dynamic_order_is_paid_posted_and_announced(&app, "alipay_cn", "12.30", "CNY").await;
}

#[tokio::test]
async fn wechat_pay_pays_a_dynamic_order() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    a_dynamic_order_is_paid_posted_and_announced(&app, "wechat_pay", "19.90", "MOP").await;
}

#[tokio::test]
async fn kakao_pay_is_approved_by_the_return_route() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    a_dynamic_order_is_paid_posted_and_announced(&app, "kakao_pay", "15000", "KRW").await;
}

async fn test_code(app: &TestApp, adapter: &str, behaviour: &str, prefix: &str) -> String {
    let codes: Value = app
        .get(&format!("/sandbox/{adapter}/test-codes"), None)
        .await
        .json()
        .await
        .unwrap();
    codes
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["behaviour"] == behaviour && c["code"].as_str().unwrap().starts_with(prefix))
        .and_then(|c| c["code"].as_str())
        .unwrap_or_else(|| panic!("no {behaviour} code with prefix {prefix} in {codes}"))
        .to_owned()
}

#[tokio::test]
async fn customer_codes_pay_at_once_or_after_the_shopper_confirms() {
    // Wallet time runs at real speed here, so the sandbox's own auto-confirmation (10 s)
    // cannot beat the shopper's confirmation this test makes.
    let app = spawn_reachable(StoreBackend::Embedded, |s| s.wallets.sandbox_speedup = 1).await;
    let shop = shop(&app).await;
    for (adapter, prefix) in [("wechat_pay", "13"), ("alipay_plus", "280853")] {
        let code = test_code(&app, adapter, "pays_at_once", prefix).await;
        let order = create(
            &app,
            &shop,
            json!({"amount": "9.90", "currency": "MOP", "description": "Tea", "auth_code": code}),
        )
        .await;
        assert_eq!(order["status"], "succeeded", "{adapter}: {order}");
        assert_eq!(order["adapter"], adapter);

        let code = test_code(&app, adapter, "needs_confirmation", prefix).await;
        let order = create(&app, &shop, json!({"amount": "120.00", "currency": "MOP", "description": "Cake", "auth_code": code})).await;
        assert_eq!(order["status"], "pending", "{adapter}: {order}");
        let confirm = app
            .client
            .post(app.url(&format!("/sandbox/{adapter}/codes/{code}/confirm")))
            .send()
            .await
            .unwrap();
        assert!(confirm.status().is_success());
        let paid = wait_status(&app, &shop, order["id"].as_str().unwrap(), "succeeded").await;
        assert_eq!(payment_entries(&paid), 1);

        let code = test_code(&app, adapter, "declined", prefix).await;
        let order = create(
            &app,
            &shop,
            json!({"amount": "5.00", "currency": "MOP", "description": "Gum", "auth_code": code}),
        )
        .await;
        assert_eq!(order["status"], "failed", "{adapter}: {order}");
    }
    let mpay: Value = app
        .get("/v1/orders?status=succeeded", Some(&shop.key))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        mpay["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["wallet"] == "mpay"),
        "the rail named the brand"
    );
    shop.endpoint.wait_for("order.failed", 2, 20).await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn refunds_are_partial_repeated_and_never_above_the_capture() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    for wallet in ["mpay", "alipay_cn", "wechat_pay"] {
        let order = create(&app, &shop, json!({"amount": "100.00", "currency": if wallet == "alipay_cn" { "CNY" } else { "MOP" }, "description": "Dinner", "wallet": wallet})).await;
        let id = order["id"].as_str().unwrap().to_owned();
        pay_at_wallet(&app, &order).await;
        wait_status(&app, &shop, &id, "succeeded").await;
        let path = format!("/v1/orders/{id}/refunds");
        let first = app
            .post_json(
                &path,
                Some(&shop.key),
                &json!({"amount": "30.00", "reason": "cold"}),
                Some(&format!("{id}-r1")),
            )
            .await;
        assert_eq!(first.status(), StatusCode::CREATED, "{wallet}");
        let first: Value = first.json().await.unwrap();
        assert_eq!(first["status"], "succeeded");
        // The same Idempotency-Key: the same refund, not a second one.
        let again: Value = app
            .post_json(
                &path,
                Some(&shop.key),
                &json!({"amount": "30.00", "reason": "cold"}),
                Some(&format!("{id}-r1")),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(again["id"], first["id"]);
        let over = app
            .post_json(&path, Some(&shop.key), &json!({"amount": "70.01"}), None)
            .await;
        assert_error(
            over,
            StatusCode::UNPROCESSABLE_ENTITY,
            "refund_exceeds_captured",
        )
        .await;
        let rest = app
            .post_json(&path, Some(&shop.key), &json!({"amount": "70.00"}), None)
            .await;
        assert_eq!(rest.status(), StatusCode::CREATED, "{wallet}");
        let done = get_order(&app, &shop, &id).await;
        assert_eq!(done["refunded"], "100.00");
        assert_eq!(done["refundable"], "0.00");
        assert_eq!(done["ledger"].as_array().unwrap().len(), 3);
        let listed: Value = app.get(&path, Some(&shop.key)).await.json().await.unwrap();
        assert_eq!(listed["data"].as_array().unwrap().len(), 2);
        let more = app
            .post_json(&path, Some(&shop.key), &json!({"amount": "0.01"}), None)
            .await;
        assert_error(
            more,
            StatusCode::UNPROCESSABLE_ENTITY,
            "refund_exceeds_captured",
        )
        .await;
    }
    shop.endpoint.wait_for("refund.succeeded", 6, 20).await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_capture() {
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
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = app.client.clone();
        let url = app.url(&format!("/v1/orders/{id}/refunds"));
        let key = shop.key.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", format!("c{i}"))
                .json(&json!({"amount": "10.00"}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let status = t.await.unwrap();
        if status == StatusCode::CREATED {
            ok += 1;
        } else {
            assert!(
                status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::CONFLICT,
                "{status}"
            );
        }
    }
    assert_eq!(ok, 5, "exactly the captured 50.00 in 10.00 refunds");
    let done = get_order(&app, &shop, &id).await;
    assert_eq!(done["refunded"], "50.00");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn duplicated_callbacks_post_once_and_announce_once() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    for adapter in ["alipay_plus", "alipay", "wechat_pay"] {
        let faults = app
            .client
            .post(app.url(&format!("/sandbox/{adapter}/faults")))
            .json(&json!({"duplicate_callbacks": 9}))
            .send()
            .await
            .unwrap();
        assert!(faults.status().is_success());
    }
    for wallet in ["mpay", "alipay_cn", "wechat_pay"] {
        let currency = if wallet == "alipay_cn" { "CNY" } else { "MOP" };
        let order = create(
            &app,
            &shop,
            json!({"amount": "10.00", "currency": currency, "description": "x", "wallet": wallet}),
        )
        .await;
        let id = order["id"].as_str().unwrap().to_owned();
        pay_at_wallet(&app, &order).await;
        let paid = wait_status(&app, &shop, &id, "succeeded").await;
        // Let all ten deliveries land.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let paid_again = get_order(&app, &shop, &id).await;
        assert_eq!(payment_entries(&paid_again), 1, "{wallet}");
        assert_eq!(paid_again["updated_at"], paid["updated_at"]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events: Value = app
        .get("/v1/events", Some(&shop.key))
        .await
        .json()
        .await
        .unwrap();
    let succeeded = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "order.succeeded")
        .count();
    assert_eq!(succeeded, 3, "one event per order");
    let hooks = shop.endpoint.wait_for("order.succeeded", 3, 20).await;
    let unique: std::collections::HashSet<_> = hooks.iter().map(|h| h.event_id.clone()).collect();
    assert_eq!(unique.len(), 3);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn the_merchant_endpoint_down_for_a_while_gets_each_event_once_later() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    shop.endpoint.set_down(true);
    let order = create(
        &app,
        &shop,
        json!({"amount": "10.00", "currency": "MOP", "description": "x", "wallet": "mpay"}),
    )
    .await;
    let id = order["id"].as_str().unwrap().to_owned();
    pay_at_wallet(&app, &order).await;
    wait_status(&app, &shop, &id, "succeeded").await;
    let events: Value = app
        .get("/v1/events", Some(&shop.key))
        .await
        .json()
        .await
        .unwrap();
    let event_id = events["data"][0]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let event: Value = app
            .get(&format!("/v1/events/{event_id}"), Some(&shop.key))
            .await
            .json()
            .await
            .unwrap();
        if event["delivery"]["attempts"].as_u64().unwrap_or(0) >= 2 {
            assert_eq!(event["delivery"]["state"], "pending");
            assert_eq!(event["delivery"]["last_error"], "HTTP 503");
            break;
        }
        assert!(Instant::now() < deadline, "no retries: {event}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shop.endpoint.set_down(false);
    let delivered = shop.endpoint.wait_for("order.succeeded", 1, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        shop.endpoint.of_kind("order.succeeded").len(),
        1,
        "exactly once after recovery"
    );
    assert_eq!(delivered[0].event_id, event_id);
    // A manual resend delivers it again (same id: the merchant dedupes).
    let resend = app
        .client
        .post(app.url(&format!("/v1/events/{event_id}/resend")))
        .bearer_auth(&shop.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resend.status(), StatusCode::ACCEPTED);
    let again = shop.endpoint.wait_for("order.succeeded", 2, 20).await;
    assert_eq!(again[1].event_id, event_id);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_retry_after_a_wallet_timeout_reuses_the_order_id_and_pays_once() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    app.client
        .post(app.url("/sandbox/alipay_plus/faults"))
        .json(&json!({"fail_requests": 1}))
        .send()
        .await
        .unwrap();
    let body = json!({"amount": "33.00", "currency": "MOP", "description": "x", "wallet": "mpay"});
    let failed = app
        .post_json(
            "/v1/orders",
            Some(&shop.key),
            &body,
            Some("till-3-ticket-9"),
        )
        .await;
    assert_error(
        failed,
        StatusCode::SERVICE_UNAVAILABLE,
        "wallet_unavailable",
    )
    .await;
    let retried = app
        .post_json(
            "/v1/orders",
            Some(&shop.key),
            &body,
            Some("till-3-ticket-9"),
        )
        .await;
    assert_eq!(retried.status(), StatusCode::CREATED);
    let order: Value = retried.json().await.unwrap();
    assert_eq!(order["status"], "pending");
    let listed: Value = app
        .get("/v1/orders", Some(&shop.key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        1,
        "one order, the same id both times"
    );
    pay_at_wallet(&app, &order).await;
    let paid = wait_status(&app, &shop, order["id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(payment_entries(&paid), 1);
    let statement = app
        .get(
            &format!(
                "/sandbox/alipay_plus/statement?date={}",
                chrono::Utc::now()
                    .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
                    .format("%Y-%m-%d")
            ),
            None,
        )
        .await
        .text()
        .await
        .unwrap();
    let lines = statement
        .lines()
        .filter(|l| l.contains(order["id"].as_str().unwrap()))
        .count();
    assert_eq!(lines, 1, "the wallet saw one payment: {statement}");
    app.assert_ledger_ok().await;
}
