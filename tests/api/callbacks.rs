//! Wallet callbacks that try to break the books: forged, replayed, for unknown orders,
//! with another amount or currency, out of order, late; plus expiry and closing.
//! Signed callbacks are built here with the wallet's own key (the sandbox keys in the
//! app's data dir) and the wallet's wire format, exactly as the wallet would send them.

use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sesame::clock::ManualClock;
use sesame::config::StoreBackend;
use sesame_adapters::alipay_plus::sandbox::LOCAL_CLIENT_ID;
use sesame_adapters::alipay_plus::wire::{self, Amount, ApiResult, Notify};
use sesame_adapters::contract::{AdapterId, WalletEvent};
use sesame_adapters::money::{Currency, Money};

use crate::payments::{create, get_order, pay_at_wallet, shop, wait_status};
use crate::support::app::{TestApp, spawn_reachable, spawn_with_clock};

/// A notifyPayment signed with the Alipay+ sandbox's wallet key, `age` in the past.
fn signed_notify(
    app: &TestApp,
    order_id: &str,
    amount: Money,
    age: chrono::Duration,
) -> (Vec<(String, String)>, Vec<u8>) {
    let keys = sesame::wallets::load_or_create_keys(app.dir.path()).unwrap();
    let wallet_key = &keys["alipay_plus"].wallet;
    let notify = Notify {
        payment_result: ApiResult::success(),
        payment_request_id: order_id.to_owned(),
        payment_id: Some(format!("pay-{order_id}")),
        acquirer_id: None,
        psp_id: Some("A111253100000000".to_owned()),
        customer_id: Some("c-1".to_owned()),
        payment_time: Some(wire::format_time(&Utc::now())),
        payment_amount: Amount::from_money(&amount),
    };
    let body = serde_json::to_vec(&notify).unwrap();
    let time = wire::format_time(&(Utc::now() - age));
    let signature = wire::sign(
        wallet_key,
        1,
        "/webhooks/alipay_plus",
        LOCAL_CLIENT_ID,
        &time,
        &body,
    )
    .unwrap();
    (
        vec![
            (
                wire::HEADER_CLIENT_ID.to_owned(),
                LOCAL_CLIENT_ID.to_owned(),
            ),
            (wire::HEADER_REQUEST_TIME.to_owned(), time),
            (wire::HEADER_SIGNATURE.to_owned(), signature),
        ],
        body,
    )
}

async fn send(app: &TestApp, headers: &[(String, String)], body: Vec<u8>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/webhooks/alipay_plus"))
        .header("Content-Type", "application/json; charset=UTF-8")
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

async fn pending_mpay_order(app: &TestApp, shop: &crate::payments::Shop, amount: &str) -> Value {
    create(
        app,
        shop,
        json!({"amount": amount, "currency": "MOP", "description": "x", "wallet": "mpay"}),
    )
    .await
}

#[tokio::test]
async fn a_signed_callback_settles_and_its_duplicates_change_nothing() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    let order = pending_mpay_order(&app, &shop, "42.00").await;
    let id = order["id"].as_str().unwrap();
    let (headers, body) = signed_notify(
        &app,
        id,
        Money::parse("42.00", Currency::Mop).unwrap(),
        chrono::Duration::zero(),
    );
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = app.client.clone();
        let url = app.url("/webhooks/alipay_plus");
        let headers = headers.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body);
            for (n, v) in &headers {
                r = r.header(n, v);
            }
            let response = r.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }));
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let ack: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ack["result"]["resultStatus"], "S", "the exact Alipay+ ack");
    }
    let paid = get_order(&app, &shop, id).await;
    assert_eq!(paid["status"], "succeeded");
    assert_eq!(paid["wallet"], "mpay", "pspId mapped to the brand");
    assert_eq!(paid["ledger"].as_array().unwrap().len(), 1);
    let events: Value = app
        .get("/v1/events", Some(&shop.key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events["data"].as_array().unwrap().len(), 1);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn forged_replayed_unknown_and_mismatched_callbacks_post_nothing() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    let order = pending_mpay_order(&app, &shop, "42.00").await;
    let id = order["id"].as_str().unwrap();
    let right = Money::parse("42.00", Currency::Mop).unwrap();

    // Forged: one byte of the body changed after signing.
    let (headers, mut body) = signed_notify(&app, id, right, chrono::Duration::zero());
    let last = body.len() - 2;
    body[last] ^= 1;
    assert_eq!(
        send(&app, &headers, body).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Forged: no signature at all, and garbage.
    assert_eq!(
        send(&app, &[], b"{}".to_vec()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, &headers, b"\xff\xfe".to_vec()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Replayed outside the window (signed 37 hours ago; the Alipay+ default is 36 h).
    let (headers, body) = signed_notify(&app, id, right, chrono::Duration::hours(37));
    assert_eq!(
        send(&app, &headers, body).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let untouched = get_order(&app, &shop, id).await;
    assert_eq!(untouched["status"], "pending");

    // Authentic but for an order we never issued: acknowledged, nothing posted.
    let ghost = sesame::domain::OrderId::generate_for(
        &sesame::domain::MerchantId::parse(&shop.id).unwrap(),
    );
    let (headers, body) = signed_notify(&app, ghost.as_str(), right, chrono::Duration::zero());
    assert_eq!(send(&app, &headers, body).await.status(), StatusCode::OK);

    // Authentic with another amount, then another currency: flagged, nothing posted.
    for wrong in [
        Money::parse("4.20", Currency::Mop).unwrap(),
        Money::parse("42.00", Currency::Hkd).unwrap(),
    ] {
        let (headers, body) = signed_notify(&app, id, wrong, chrono::Duration::zero());
        assert_eq!(
            send(&app, &headers, body).await.status(),
            StatusCode::OK,
            "the wallet stops retrying"
        );
    }
    let flagged = get_order(&app, &shop, id).await;
    assert_eq!(flagged["status"], "pending");
    assert!(
        flagged["review"].as_str().unwrap().contains("4.20 MOP"),
        "{flagged}"
    );
    assert_eq!(flagged["ledger"], json!([]));
    let balances: Value = app
        .get("/v1/balances", Some(&shop.key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(balances["data"], json!([]));
    let events: Value = app
        .get("/v1/events", Some(&shop.key))
        .await
        .json()
        .await
        .unwrap();
    assert!(events["data"].as_array().unwrap().is_empty());
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_failure_reported_after_success_does_not_regress_the_order() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    let order = pending_mpay_order(&app, &shop, "10.00").await;
    let id = order["id"].as_str().unwrap().to_owned();
    pay_at_wallet(&app, &order).await;
    wait_status(&app, &shop, &id, "succeeded").await;
    let late_failure = WalletEvent::PaymentFailed {
        order_id: id.clone(),
        event_id: "late-failure".into(),
        code: "PROCESS_FAIL".into(),
        message: "arrived out of order".into(),
    };
    let handled =
        sesame::services::callbacks::apply(&app.state, AdapterId::AlipayPlus, late_failure)
            .await
            .unwrap();
    assert_eq!(handled, sesame::services::callbacks::Handled::Processed);
    let still = get_order(&app, &shop, &id).await;
    assert_eq!(still["status"], "succeeded");
    assert_eq!(still["ledger"].as_array().unwrap().len(), 1);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn held_callbacks_released_in_reverse_order_do_not_regress_or_double_post() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    app.client
        .post(app.url("/sandbox/alipay/faults"))
        .json(&json!({"hold_callbacks": true}))
        .send()
        .await
        .unwrap();
    let order = create(
        &app,
        &shop,
        json!({"amount": "80.00", "currency": "CNY", "description": "x", "wallet": "alipay_cn"}),
    )
    .await;
    let id = order["id"].as_str().unwrap().to_owned();
    pay_at_wallet(&app, &order).await;
    // The payment callback is held: the reconciler finds the payment by querying.
    wait_status(&app, &shop, &id, "succeeded").await;
    let refund = app
        .post_json(
            &format!("/v1/orders/{id}/refunds"),
            Some(&shop.key),
            &json!({"amount": "80.00"}),
            None,
        )
        .await;
    assert_eq!(refund.status(), StatusCode::CREATED);
    // Now the wallet delivers its held callbacks, refund first, payment last.
    let released: Value = app
        .client
        .post(app.url("/sandbox/alipay/callbacks/release?order=reverse"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(released["released"].as_u64().unwrap() >= 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let deliveries: Value = app
            .get("/sandbox/alipay/deliveries", None)
            .await
            .json()
            .await
            .unwrap();
        let acked = deliveries
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["acked"] == true)
            .count();
        if acked as u64 >= released["released"].as_u64().unwrap() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "callbacks not acknowledged: {deliveries}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let done = get_order(&app, &shop, &id).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["refunded"], "80.00");
    let kinds: Vec<&str> = done["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["payment", "refund"]);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn unpaid_orders_expire_and_a_payment_after_expiry_is_posted_late() {
    let clock = ManualClock::new(Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let shop = shop(&app).await;
    let body = |amount: &str, wallet: Option<&str>| {
        let mut b =
            json!({"amount": amount, "currency": "MOP", "description": "x", "expires_in": 60});
        if let Some(w) = wallet {
            b["wallet"] = json!(w);
        }
        b
    };
    // One order nobody pays: expired by the reconciler, closed at the wallet.
    let unpaid = create(&app, &shop, body("5.00", Some("mpay"))).await;
    // One the merchant closes while the wallet is failing, then the shopper pays anyway.
    let late = create(&app, &shop, body("7.00", Some("mpay"))).await;
    // A gateway-QR order nobody picks a wallet for.
    let gateway = create(&app, &shop, body("3.00", None)).await;
    let late_id = late["id"].as_str().unwrap().to_owned();
    app.client
        .post(app.url("/sandbox/alipay_plus/faults"))
        .json(&json!({"fail_requests": 2}))
        .send()
        .await
        .unwrap();
    let closed = app
        .post_json(
            &format!("/v1/orders/{late_id}/close"),
            Some(&shop.key),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(closed.status(), StatusCode::OK);
    app.client
        .post(app.url("/sandbox/alipay_plus/faults"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    clock.advance(61_000);
    for id in [
        unpaid["id"].as_str().unwrap(),
        gateway["id"].as_str().unwrap(),
        late_id.as_str(),
    ] {
        wait_status(&app, &shop, id, "expired").await;
    }
    shop.endpoint.wait_for("order.expired", 3, 20).await;
    // The wallet never heard our close: the shopper pays. Money moved, so it is posted.
    pay_at_wallet(&app, &late).await;
    let paid = wait_status(&app, &shop, &late_id, "succeeded").await;
    assert_eq!(paid["paid_late"], true);
    assert_eq!(paid["ledger"].as_array().unwrap().len(), 1);
    shop.endpoint.wait_for("order.succeeded", 1, 20).await;
    // The unpaid one was closed at the wallet: it can no longer be paid there.
    let cashier = crate::payments::cashier_url(&app, &unpaid);
    let refused = app
        .client
        .post(format!("{cashier}/confirm"))
        .send()
        .await
        .unwrap();
    assert!(
        refused.status().is_client_error(),
        "closed at the wallet: {}",
        refused.status()
    );
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn an_undelivered_webhook_survives_a_gateway_restart_and_is_delivered_once() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    shop.endpoint.set_down(true);
    let order = pending_mpay_order(&app, &shop, "11.00").await;
    let id = order["id"].as_str().unwrap().to_owned();
    pay_at_wallet(&app, &order).await;
    wait_status(&app, &shop, &id, "succeeded").await;
    let data_dir = app.dir.path().to_path_buf();
    let settings = app.state.settings.clone();
    app.stop().await;
    shop.endpoint.set_down(false);
    let restarted = crate::support::app::restart(settings, data_dir).await;
    let restarted_state = restarted.state.clone();
    let delivered = shop.endpoint.wait_for("order.succeeded", 1, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(shop.endpoint.of_kind("order.succeeded").len(), 1);
    assert_eq!(delivered[0].body["data"]["id"], id.as_str());
    let report = sesame::services::ledger_verify::verify(&restarted_state.store)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
    restarted.handle.stop(true).await;
}
