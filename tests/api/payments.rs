//! Money moving end to end: the real server, every wallet's real sandbox (mounted in
//! the server, speaking the wallet's protocol with signatures), a merchant webhook
//! endpoint. Every test ends with `sesame ledger verify` on the store.

use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sesame::clock::{Clock, ManualClock};
use sesame::config::StoreBackend;
use sesame::domain::OrderId;
use sesame::domain::order::{Order, OrderStatus};
use sesame::services::notify;
use sesame_adapters::contract::{AdapterId, RefundOutcome, RefundRequest};
use sesame_adapters::money::{Currency, Money};

use crate::support::app::{TestApp, assert_error, spawn_reachable, spawn_with_clock};
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

/// Polls `check` (real time, the workers run on their own) until it holds, or panics
/// naming `what` after 20 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The order as stored.
pub async fn stored_order(app: &TestApp, id: &str) -> Order {
    app.state
        .store
        .order(&OrderId::parse(id).unwrap())
        .await
        .unwrap()
        .unwrap()
}

/// The merchant's events of one type, as `GET /v1/events` lists them.
pub async fn events_of(app: &TestApp, shop: &Shop, kind: &str) -> Vec<Value> {
    let events: Value = app
        .get("/v1/events?limit=200", Some(&shop.key))
        .await
        .json()
        .await
        .unwrap();
    events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .cloned()
        .collect()
}

/// Sets a sandbox's fault plan (an empty object clears it).
pub async fn faults(app: &TestApp, adapter: &str, plan: Value) {
    let response = app
        .client
        .post(app.url(&format!("/sandbox/{adapter}/faults")))
        .json(&plan)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{adapter} faults {plan}");
}

/// Minor units of a decimal amount the API shows.
fn minor(amount: &Value, currency: Currency) -> i64 {
    Money::parse(amount.as_str().unwrap(), currency)
        .map(|m| m.minor())
        .unwrap_or(0)
}

/// What the refund entries of an order gave back of its fee (`fee_income` debits).
fn fee_reversed(order: &Value, currency: Currency) -> i64 {
    order["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "refund")
        .flat_map(|e| e["postings"].as_array().unwrap().clone())
        .filter(|p| p["account"] == "fee_income")
        .map(|p| minor(&p["debit"], currency) - minor(&p["credit"], currency))
        .sum()
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

async fn refunds_are_partial_repeated_and_never_above_the_capture(backend: StoreBackend) {
    let app = spawn_reachable(backend, |_| {}).await;
    let shop = shop(&app).await;
    for wallet in ["mpay", "alipay_cn", "wechat_pay"] {
        let currency = if wallet == "alipay_cn" {
            Currency::Cny
        } else {
            Currency::Mop
        };
        let order = create(&app, &shop, json!({"amount": "100.00", "currency": currency.code(), "description": "Dinner", "wallet": wallet})).await;
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
        let status = rest.status();
        let rest = rest.text().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{wallet}: {rest}");
        let done = get_order(&app, &shop, &id).await;
        assert_eq!(done["refunded"], "100.00");
        assert_eq!(done["refundable"], "0.00");
        assert_eq!(done["ledger"].as_array().unwrap().len(), 3);
        // Refunded in full through parts: the whole fee came back, not a unit more.
        assert_eq!(
            fee_reversed(&done, currency),
            minor(&done["fee"], currency),
            "{wallet}: {done}"
        );
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
async fn refunds_are_partial_repeated_and_never_above_the_capture_embedded() {
    refunds_are_partial_repeated_and_never_above_the_capture(StoreBackend::Embedded).await;
}

#[tokio::test]
async fn refunds_are_partial_repeated_and_never_above_the_capture_on_redis() {
    refunds_are_partial_repeated_and_never_above_the_capture(StoreBackend::Redis).await;
}

async fn concurrent_refunds_never_exceed_the_capture(backend: StoreBackend) {
    let app = spawn_reachable(backend, |_| {}).await;
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
    assert_eq!(done["refunds"].as_array().unwrap().len(), 5);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_capture_embedded() {
    concurrent_refunds_never_exceed_the_capture(StoreBackend::Embedded).await;
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_capture_on_redis() {
    concurrent_refunds_never_exceed_the_capture(StoreBackend::Redis).await;
}

/// The callback deliveries a sandbox made so far that the gateway acknowledged.
async fn acked_deliveries(app: &TestApp, adapter: &str) -> usize {
    let deliveries: Value = app
        .get(&format!("/sandbox/{adapter}/deliveries"), None)
        .await
        .json()
        .await
        .unwrap();
    deliveries
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["acked"] == true)
        .count()
}

async fn duplicated_callbacks_post_once_and_announce_once(backend: StoreBackend) {
    let app = spawn_reachable(backend, |_| {}).await;
    let shop = shop(&app).await;
    for adapter in ["alipay_plus", "alipay", "wechat_pay"] {
        faults(&app, adapter, json!({"duplicate_callbacks": 9})).await;
    }
    for (wallet, adapter) in [
        ("mpay", "alipay_plus"),
        ("alipay_cn", "alipay"),
        ("wechat_pay", "wechat_pay"),
    ] {
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
        // All ten deliveries of the payment callback landed and were acknowledged.
        eventually(
            &format!("{adapter} delivered its callback ten times"),
            || async { acked_deliveries(&app, adapter).await >= 10 },
        )
        .await;
        assert_eq!(acked_deliveries(&app, adapter).await, 10, "{adapter}");
        let paid_again = get_order(&app, &shop, &id).await;
        assert_eq!(payment_entries(&paid_again), 1, "{wallet}");
        assert_eq!(paid_again["updated_at"], paid["updated_at"]);
    }
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
async fn duplicated_callbacks_post_once_and_announce_once_embedded() {
    duplicated_callbacks_post_once_and_announce_once(StoreBackend::Embedded).await;
}

#[tokio::test]
async fn duplicated_callbacks_post_once_and_announce_once_on_redis() {
    duplicated_callbacks_post_once_and_announce_once(StoreBackend::Redis).await;
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

async fn kakao_refunds_partially_then_in_full(backend: StoreBackend) {
    let app = spawn_reachable(backend, |_| {}).await;
    let shop = shop(&app).await;
    let order = create(
        &app,
        &shop,
        json!({"amount": "15000", "currency": "KRW", "description": "Bibimbap", "wallet": "kakao_pay"}),
    )
    .await;
    let id = order["id"].as_str().unwrap().to_owned();
    pay_at_wallet(&app, &order).await;
    wait_status(&app, &shop, &id, "succeeded").await;
    let path = format!("/v1/orders/{id}/refunds");
    for (amount, key) in [("5000", "k-1"), ("10000", "k-2")] {
        let refund = app
            .post_json(
                &path,
                Some(&shop.key),
                &json!({"amount": amount}),
                Some(key),
            )
            .await;
        assert_eq!(refund.status(), StatusCode::CREATED);
        let refund: Value = refund.json().await.unwrap();
        assert_eq!(refund["status"], "succeeded", "{refund}");
        assert!(refund["wallet_reference"].is_string(), "the cancel's aid");
    }
    // The same key again is the same refund: Kakao is not asked to cancel twice.
    let again: Value = app
        .post_json(
            &path,
            Some(&shop.key),
            &json!({"amount": "5000"}),
            Some("k-1"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["status"], "succeeded");
    let over = app
        .post_json(&path, Some(&shop.key), &json!({"amount": "1"}), None)
        .await;
    assert_error(
        over,
        StatusCode::UNPROCESSABLE_ENTITY,
        "refund_exceeds_captured",
    )
    .await;
    let done = get_order(&app, &shop, &id).await;
    assert_eq!(done["refunded"], "15000");
    assert_eq!(done["ledger"].as_array().unwrap().len(), 3);
    assert_eq!(
        fee_reversed(&done, Currency::Krw),
        minor(&done["fee"], Currency::Krw)
    );
    // Kakao itself says the payment is cancelled in full.
    let kakao = app.state.wallets.adapter(AdapterId::KakaoPay).unwrap();
    let status = kakao
        .query(&sesame_adapters::contract::OrderRef {
            order_id: id.clone(),
            wallet_ref: done["wallet_reference"].as_str().map(str::to_owned),
        })
        .await
        .unwrap();
    assert!(
        matches!(
            &status,
            sesame_adapters::contract::WalletStatus::Refunded { refunded: Some(r), .. }
                if r.minor() == 15_000
        ),
        "{status:?}"
    );
    shop.endpoint.wait_for("refund.succeeded", 2, 20).await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn kakao_pay_refunds_partially_then_in_full() {
    kakao_refunds_partially_then_in_full(StoreBackend::Embedded).await;
}

#[tokio::test]
async fn kakao_pay_refunds_partially_then_in_full_on_redis() {
    kakao_refunds_partially_then_in_full(StoreBackend::Redis).await;
}

#[tokio::test]
async fn a_kakao_return_that_never_came_is_polled_then_cancelled_at_the_deadline() {
    let clock = ManualClock::new(Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let shop = shop(&app).await;
    let order = create(
        &app,
        &shop,
        json!({"amount": "9000", "currency": "KRW", "description": "Tea", "wallet": "kakao_pay", "expires_in": 60}),
    )
    .await;
    let id = order["id"].as_str().unwrap().to_owned();
    // The shopper approves in Kakao's cashier, but the browser never comes back: the
    // one-time pg_token that `approve` needs never reaches the gateway.
    let cashier = cashier_url(&app, &order);
    let confirm = app
        .client
        .post(format!("{cashier}/confirm"))
        .send()
        .await
        .unwrap();
    let stale_return = confirm
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("Kakao redirects to the return URL")
        .to_owned();
    assert!(stale_return.contains("pg_token="), "{stale_return}");
    // The reconciler keeps asking Kakao, and keeps the order pending.
    let first = stored_order(&app, &id).await;
    clock.advance(1_000);
    eventually("the reconciler polled the order", || async {
        let now = clock.now_ms();
        let polled = stored_order(&app, &id).await;
        polled.version > first.version && polled.next_check_at.is_some_and(|at| at > now)
    })
    .await;
    assert_eq!(stored_order(&app, &id).await.status, OrderStatus::Pending);
    // The deadline passes: the payment is cancelled at Kakao (nothing was captured)
    // and the order expires.
    clock.advance(60_000);
    let expired = wait_status(&app, &shop, &id, "expired").await;
    assert_eq!(expired["ledger"], json!([]));
    let kakao = app.state.wallets.adapter(AdapterId::KakaoPay).unwrap();
    let at_kakao = kakao
        .query(&sesame_adapters::contract::OrderRef {
            order_id: id.clone(),
            wallet_ref: expired["wallet_reference"].as_str().map(str::to_owned),
        })
        .await
        .unwrap();
    assert_eq!(at_kakao, sesame_adapters::contract::WalletStatus::Closed);
    // The browser finally comes back: approving a cancelled payment captures nothing.
    let back = app.client.get(&stale_return).send().await.unwrap();
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    let still = get_order(&app, &shop, &id).await;
    assert_eq!(still["status"], "expired");
    assert_eq!(still["ledger"], json!([]));
    shop.endpoint.wait_for("order.expired", 1, 20).await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_refund_whose_answer_was_lost_is_asked_again_and_posted_once() {
    let clock = ManualClock::new(Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let shop = shop(&app).await;
    let order = create(
        &app,
        &shop,
        json!({"amount": "80.00", "currency": "MOP", "description": "x", "wallet": "mpay"}),
    )
    .await;
    let id = order["id"].as_str().unwrap().to_owned();
    pay_at_wallet(&app, &order).await;
    let paid = wait_status(&app, &shop, &id, "succeeded").await;
    let path = format!("/v1/orders/{id}/refunds");

    // The wallet answers 5xx: the outcome is unknown, the refund is accepted (202)
    // and stays pending with its amount reserved.
    faults(&app, "alipay_plus", json!({"fail_requests": 1})).await;
    let accepted = app
        .post_json(
            &path,
            Some(&shop.key),
            &json!({"amount": "30.00"}),
            Some("r-1"),
        )
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let lost: Value = accepted.json().await.unwrap();
    assert_eq!(lost["status"], "pending");
    assert_eq!(get_order(&app, &shop, &id).await["refundable"], "50.00");
    // ... but the wallet had executed it (its answer was what got lost).
    let wallet = app.state.wallets.adapter(AdapterId::AlipayPlus).unwrap();
    let executed = wallet
        .refund(&RefundRequest {
            order_id: id.clone(),
            wallet_ref: paid["wallet_reference"].as_str().map(str::to_owned),
            refund_id: lost["id"].as_str().unwrap().to_owned(),
            amount: Money::parse("30.00", Currency::Mop).unwrap(),
            total: Money::parse("80.00", Currency::Mop).unwrap(),
            reason: None,
            notify_url: None,
        })
        .await
        .unwrap();
    assert!(matches!(executed, RefundOutcome::Succeeded { .. }));
    // A second refund, without an Idempotency-Key, while the wallet is down again: the
    // 202 names its id, so the merchant can follow it.
    faults(&app, "alipay_plus", json!({"fail_requests": 1})).await;
    let unkeyed: Value = app
        .post_json(&path, Some(&shop.key), &json!({"amount": "20.00"}), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unkeyed["status"], "pending");
    assert_eq!(get_order(&app, &shop, &id).await["refundable"], "30.00");
    // Once they are a refund check interval old, the reconciler asks the wallet again
    // with the same refund ids: each is posted once.
    clock.advance(app.state.settings.payments.refund_check_interval_ms);
    eventually("both refunds are final", || async {
        let order = get_order(&app, &shop, &id).await;
        order["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "succeeded")
    })
    .await;
    let done = get_order(&app, &shop, &id).await;
    assert_eq!(done["refunded"], "50.00");
    assert_eq!(done["refundable"], "30.00");
    let refund_entries = done["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "refund")
        .count();
    assert_eq!(refund_entries, 2);
    assert_eq!(events_of(&app, &shop, "refund.succeeded").await.len(), 2);
    // Nothing is left for the reconciler.
    eventually("the order leaves the reconciler", || async {
        stored_order(&app, &id).await.next_check_at.is_none()
    })
    .await;
    assert!(
        app.state
            .store
            .orders_due(i64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
    app.assert_ledger_ok().await;
}

/// `delivery` of `GET /v1/events/{id}`.
async fn event_delivery(app: &TestApp, shop: &Shop, event_id: &str) -> Value {
    let event: Value = app
        .get(&format!("/v1/events/{event_id}"), Some(&shop.key))
        .await
        .json()
        .await
        .unwrap();
    event["delivery"].clone()
}

#[tokio::test]
async fn a_resent_dead_letter_gets_a_whole_retry_window_again() {
    let clock = ManualClock::new(Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
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
    let event_id = events_of(&app, &shop, "order.succeeded").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // An attempt is over once the outbox has decided what next: dead, or due again
    // later (while it is in flight its due time is the one it was claimed at).
    let attempt_over = |delivery: &Value, attempts: u64| {
        delivery["attempts"].as_u64() == Some(attempts)
            && (delivery["state"] == "dead"
                || delivery["next_attempt_at"]
                    .as_i64()
                    .is_some_and(|at| at > clock.now_ms()))
    };
    eventually("the first attempt failed", || async {
        attempt_over(&event_delivery(&app, &shop, &event_id).await, 1)
    })
    .await;
    // Three days and an hour later the next attempt fails too: dead letter.
    clock.advance(73 * 3_600_000);
    eventually("the event is dead-lettered", || async {
        event_delivery(&app, &shop, &event_id).await["state"] == "dead"
    })
    .await;
    assert_eq!(event_delivery(&app, &shop, &event_id).await["attempts"], 2);
    // The merchant resends it while its endpoint is still down: the failed attempt is
    // retried later instead of going straight back to the dead letters.
    let resend = app
        .client
        .post(app.url(&format!("/v1/events/{event_id}/resend")))
        .bearer_auth(&shop.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resend.status(), StatusCode::ACCEPTED);
    eventually("the resent event was tried again", || async {
        attempt_over(&event_delivery(&app, &shop, &event_id).await, 3)
    })
    .await;
    let after = event_delivery(&app, &shop, &event_id).await;
    assert_eq!(after["state"], "pending", "{after}");
    assert_eq!(after["last_error"], "HTTP 503");
    shop.endpoint.set_down(false);
    clock.advance(app.state.settings.workers.webhook_max_retry_secs * 1_500);
    let delivered = shop.endpoint.wait_for("order.succeeded", 1, 20).await;
    assert_eq!(delivered[0].event_id, event_id);
    eventually("the event is delivered", || async {
        event_delivery(&app, &shop, &event_id).await["state"] == "delivered"
    })
    .await;
    app.assert_ledger_ok().await;
}
