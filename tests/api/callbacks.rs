//! Wallet callbacks that try to break the books: forged, replayed, for unknown orders,
//! with another amount or currency, out of order, late; plus expiry and closing.
//! Signed callbacks are built here with the wallet's own key (the sandbox keys in the
//! app's data dir) and the wallet's wire format, exactly as the wallet would send them.

use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sesame::clock::{Clock, ManualClock};
use sesame::config::StoreBackend;
use sesame::domain::order::{Order, OrderStatus};
use sesame::services::callbacks::{self, Handled};
use sesame::services::{ledger_verify, payments, reconciler};
use sesame::store::OrderChange;
use sesame_adapters::alipay_plus::sandbox::LOCAL_CLIENT_ID;
use sesame_adapters::alipay_plus::wire::{self, Amount, ApiResult, Notify};
use sesame_adapters::contract::{AdapterId, WalletEvent, WalletStatus};
use sesame_adapters::money::{Currency, Money};

use crate::payments::{
    create, events_of, eventually, faults, get_order, pay_at_wallet, shop, stored_order,
    wait_status,
};
use crate::support::app::{TestApp, assert_error, spawn_reachable, spawn_with_clock};
use crate::support::paused_store::{PausedStore, Read};

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
    // One the merchant closes while the wallet fails the query and the close (the
    // query after the failed close gets through, and finds it still unpaid): expired
    // here, but the wallet never heard the close, and the shopper pays anyway.
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
    let closed: Value = closed.json().await.unwrap();
    assert_eq!(closed["status"], "expired");
    app.client
        .post(app.url("/sandbox/alipay_plus/faults"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    // Money moved after we expired the order, so it is posted (late).
    pay_at_wallet(&app, &late).await;
    let paid = wait_status(&app, &shop, &late_id, "succeeded").await;
    assert_eq!(paid["paid_late"], true);
    assert_eq!(paid["ledger"].as_array().unwrap().len(), 1);
    shop.endpoint.wait_for("order.succeeded", 1, 20).await;
    clock.advance(61_000);
    for id in [
        unpaid["id"].as_str().unwrap(),
        gateway["id"].as_str().unwrap(),
    ] {
        wait_status(&app, &shop, id, "expired").await;
    }
    shop.endpoint.wait_for("order.expired", 3, 20).await;
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

async fn a_mismatched_capture_leaves_the_reconciler_and_a_later_correct_report_settles(
    backend: StoreBackend,
) {
    let clock = ManualClock::new(Utc::now().timestamp_millis());
    let app = spawn_with_clock(backend, clock.clone()).await;
    let shop = shop(&app).await;
    // By callback: the wallet says it captured 42.10 for an order of 42.00.
    let by_callback = pending_mpay_order(&app, &shop, "42.00").await;
    let first = by_callback["id"].as_str().unwrap().to_owned();
    let (headers, body) = signed_notify(
        &app,
        &first,
        Money::parse("42.10", Currency::Mop).unwrap(),
        chrono::Duration::zero(),
    );
    assert_eq!(send(&app, &headers, body).await.status(), StatusCode::OK);
    // By query: the same answer from the wallet's order query.
    let by_query = pending_mpay_order(&app, &shop, "42.00").await;
    let second = by_query["id"].as_str().unwrap().to_owned();
    let reported = WalletStatus::Succeeded {
        wallet_ref: format!("pay-{second}"),
        amount: Money::parse("42.10", Currency::Mop).unwrap(),
        paid_at: None,
        brand: None,
    };
    payments::apply_status(&app.state, &stored_order(&app, &second).await, reported)
        .await
        .unwrap();
    for id in [&first, &second] {
        let flagged = stored_order(&app, id).await;
        assert_eq!(flagged.status, OrderStatus::Pending);
        assert!(
            flagged
                .review
                .as_deref()
                .unwrap_or("")
                .contains("42.10 MOP"),
            "{flagged:?}"
        );
        assert_eq!(flagged.next_check_at, None, "left the reconciler");
    }
    // Long after their deadline neither order is due: the reconciler has nothing to
    // spin on and makes no progress.
    clock.advance(3_600_000);
    assert!(
        app.state
            .store
            .orders_due(clock.now_ms(), 64)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(reconciler::reconcile_once(&app.state).await, 0);
    // The shopper really pays 42.00 for the second order (its callback is lost); the
    // merchant closes it, the close asks the wallet first, and the capture settles:
    // the mismatch flag did not burn the query's dedupe key.
    faults(&app, "alipay_plus", json!({"drop_all_callbacks": true})).await;
    pay_at_wallet(&app, &by_query).await;
    let close = app
        .post_json(
            &format!("/v1/orders/{second}/close"),
            Some(&shop.key),
            &json!({}),
            None,
        )
        .await;
    assert_error(close, StatusCode::CONFLICT, "order_not_open").await;
    let paid = get_order(&app, &shop, &second).await;
    assert_eq!(paid["status"], "succeeded");
    assert_eq!(paid["amount"], "42.00");
    assert_eq!(paid["ledger"].as_array().unwrap().len(), 1);
    assert!(
        paid["review"].as_str().unwrap().contains("42.10"),
        "kept for a person"
    );
    let untouched = get_order(&app, &shop, &first).await;
    assert_eq!(untouched["ledger"], json!([]));
    assert_eq!(events_of(&app, &shop, "order.succeeded").await.len(), 1);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_mismatched_capture_leaves_the_reconciler_and_a_later_correct_report_settles_embedded() {
    a_mismatched_capture_leaves_the_reconciler_and_a_later_correct_report_settles(
        StoreBackend::Embedded,
    )
    .await;
}

#[tokio::test]
async fn a_mismatched_capture_leaves_the_reconciler_and_a_later_correct_report_settles_on_redis() {
    a_mismatched_capture_leaves_the_reconciler_and_a_later_correct_report_settles(
        StoreBackend::Redis,
    )
    .await;
}

#[tokio::test]
async fn a_payment_whose_fee_cannot_be_computed_is_not_acknowledged_nor_left_due() {
    let clock = ManualClock::new(Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let shop = shop(&app).await;
    let order = pending_mpay_order(&app, &shop, "42.00").await;
    let id = order["id"].as_str().unwrap().to_owned();
    // An operator error put an MDR above 100 % on the order.
    let stored = stored_order(&app, &id).await;
    let broken = Order {
        fee_bps: 10_001,
        version: stored.version + 1,
        ..stored.clone()
    };
    let change = OrderChange {
        order: broken,
        expected_version: stored.version,
        dedupe_key: None,
        refund: None,
        entry: None,
        event: None,
    };
    app.state
        .store
        .commit(&change, clock.now_ms())
        .await
        .unwrap();
    // The callback is answered "send again", never acknowledged unposted.
    let (headers, body) = signed_notify(
        &app,
        &id,
        Money::parse("42.00", Currency::Mop).unwrap(),
        chrono::Duration::zero(),
    );
    let answer = send(&app, &headers, body).await;
    assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let ack: Value = answer.json().await.unwrap();
    assert_eq!(ack["result"]["resultStatus"], "U", "{ack}");
    // The query path finds the capture and fails the same way; the order is then
    // checked again later instead of staying due.
    faults(&app, "alipay_plus", json!({"drop_all_callbacks": true})).await;
    pay_at_wallet(&app, &order).await;
    let before = stored_order(&app, &id).await;
    clock.advance(1_000);
    eventually("the failed settle was rescheduled", || async {
        let now = clock.now_ms();
        let after = stored_order(&app, &id).await;
        after.version > before.version && after.next_check_at.is_some_and(|at| at > now)
    })
    .await;
    assert_eq!(reconciler::reconcile_once(&app.state).await, 0);
    let still = get_order(&app, &shop, &id).await;
    assert_eq!(still["status"], "pending");
    assert_eq!(still["ledger"], json!([]));
    assert!(events_of(&app, &shop, "order.succeeded").await.is_empty());
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_capture_that_lands_just_before_a_close_is_settled_not_expired() {
    let clock = ManualClock::new(Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let shop = shop(&app).await;
    faults(&app, "wechat_pay", json!({"drop_all_callbacks": true})).await;
    let order = create(
        &app,
        &shop,
        json!({"amount": "19.90", "currency": "MOP", "description": "x", "wallet": "wechat_pay"}),
    )
    .await;
    let id = order["id"].as_str().unwrap().to_owned();
    pay_at_wallet(&app, &order).await;
    // The close's first look at the wallet fails, so it does not see the capture; the
    // wallet refuses to close a paid order, and the look after that settles it.
    faults(
        &app,
        "wechat_pay",
        json!({"drop_all_callbacks": true, "fail_requests": 1}),
    )
    .await;
    let close = app
        .post_json(
            &format!("/v1/orders/{id}/close"),
            Some(&shop.key),
            &json!({}),
            None,
        )
        .await;
    let refused = assert_error(close, StatusCode::CONFLICT, "order_not_open").await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("paid before it could be closed")
    );
    let paid = get_order(&app, &shop, &id).await;
    assert_eq!(paid["status"], "succeeded");
    assert_eq!(paid["paid_late"], false);
    assert_eq!(paid["ledger"].as_array().unwrap().len(), 1);
    assert!(events_of(&app, &shop, "order.expired").await.is_empty());
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn an_order_whose_close_failed_is_checked_in_its_grace_period() {
    let clock = ManualClock::new(Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let shop = shop(&app).await;
    let paid_anyway = pending_mpay_order(&app, &shop, "7.00").await;
    let never_paid = pending_mpay_order(&app, &shop, "8.00").await;
    for order in [&paid_anyway, &never_paid] {
        // The wallet fails the look before the close, the close and the look after.
        faults(&app, "alipay_plus", json!({"fail_requests": 3})).await;
        let id = order["id"].as_str().unwrap();
        let closed = app
            .post_json(
                &format!("/v1/orders/{id}/close"),
                Some(&shop.key),
                &json!({}),
                None,
            )
            .await;
        assert_eq!(closed.status(), StatusCode::OK);
        let expired = stored_order(&app, id).await;
        assert_eq!(expired.status, OrderStatus::Expired);
        assert!(
            expired.next_check_at.is_some(),
            "kept for late-capture checks"
        );
    }
    // The wallet never heard the close: the shopper pays, and the callback is lost.
    faults(&app, "alipay_plus", json!({"drop_all_callbacks": true})).await;
    pay_at_wallet(&app, &paid_anyway).await;
    clock.advance(1_000);
    let late_id = paid_anyway["id"].as_str().unwrap();
    let late = wait_status(&app, &shop, late_id, "succeeded").await;
    assert_eq!(late["paid_late"], true);
    assert_eq!(late["ledger"].as_array().unwrap().len(), 1);
    // The unpaid one is closed at the wallet this time, and the checks end.
    let unpaid_id = never_paid["id"].as_str().unwrap();
    eventually("the unpaid order's checks end", || async {
        stored_order(&app, unpaid_id).await.next_check_at.is_none()
    })
    .await;
    assert_eq!(
        stored_order(&app, unpaid_id).await.status,
        OrderStatus::Expired
    );
    let cashier = crate::payments::cashier_url(&app, &never_paid);
    let refused = app
        .client
        .post(format!("{cashier}/confirm"))
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());
    assert_eq!(events_of(&app, &shop, "order.expired").await.len(), 2);
    assert_eq!(events_of(&app, &shop, "order.succeeded").await.len(), 1);
    app.assert_ledger_ok().await;
}

/// A paid Alipay (CN) order of `amount` CNY, on an app whose clock only moves when the
/// test moves it (so pending refunds are not asked about again behind its back).
async fn paid_alipay_order(app: &TestApp, shop: &crate::payments::Shop, amount: &str) -> String {
    let order = create(
        app,
        shop,
        json!({"amount": amount, "currency": "CNY", "description": "x", "wallet": "alipay_cn"}),
    )
    .await;
    let id = order["id"].as_str().unwrap().to_owned();
    pay_at_wallet(app, &order).await;
    wait_status(app, shop, &id, "succeeded").await;
    id
}

/// A refund left pending because the wallet answered 5xx; returns its id.
async fn pending_refund(
    app: &TestApp,
    shop: &crate::payments::Shop,
    order: &str,
    amount: &str,
) -> String {
    faults(app, "alipay", json!({"fail_requests": 1})).await;
    let response = app
        .post_json(
            &format!("/v1/orders/{order}/refunds"),
            Some(&shop.key),
            &json!({"amount": amount}),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let refund: Value = response.json().await.unwrap();
    assert_eq!(refund["status"], "pending");
    refund["id"].as_str().unwrap().to_owned()
}

/// The Alipay adapter's refund notification: it reports the trade's cumulative
/// `refund_fee` as both amounts.
async fn wallet_reports_refund(app: &TestApp, order: &str, refund: &str, amount: &str) -> Handled {
    let total = Money::parse(amount, Currency::Cny).unwrap();
    refund_event(app, order, refund, total, Some(total)).await
}

/// A notification that reports this refund's own amount only (as WeChat Pay's does).
async fn wallet_reports_this_refund(
    app: &TestApp,
    order: &str,
    refund: &str,
    amount: &str,
) -> Handled {
    let amount = Money::parse(amount, Currency::Cny).unwrap();
    refund_event(app, order, refund, amount, None).await
}

async fn refund_event(
    app: &TestApp,
    order: &str,
    refund: &str,
    amount: Money,
    refunded_total: Option<Money>,
) -> Handled {
    let event = WalletEvent::RefundSucceeded {
        order_id: order.to_owned(),
        refund_id: refund.to_owned(),
        wallet_refund_ref: None,
        amount,
        refunded_total,
        event_id: format!("refund-{refund}-{amount}"),
    };
    callbacks::apply(&app.state, AdapterId::Alipay, event)
        .await
        .unwrap()
}

fn refund_in<'a>(order: &'a Value, id: &str) -> &'a Value {
    order["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap()
}

#[tokio::test]
async fn cumulative_refund_totals_confirm_each_of_several_refunds_in_flight() {
    let clock = ManualClock::new(Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let shop = shop(&app).await;
    let id = paid_alipay_order(&app, &shop, "100.00").await;
    let first = pending_refund(&app, &shop, &id, "30.00").await;
    let second = pending_refund(&app, &shop, &id, "20.00").await;
    // Alipay's refund_fee is the trade's refunded total: the second refund's
    // notification arrives first and counts the first one, not confirmed here yet.
    assert_eq!(
        wallet_reports_refund(&app, &id, &second, "50.00").await,
        Handled::Processed
    );
    assert_eq!(
        wallet_reports_refund(&app, &id, &first, "50.00").await,
        Handled::Processed
    );
    let order = get_order(&app, &shop, &id).await;
    assert_eq!(order["refunded"], "50.00");
    assert_eq!(refund_in(&order, &first)["status"], "succeeded");
    assert_eq!(refund_in(&order, &second)["status"], "succeeded");
    assert_eq!(refund_in(&order, &first)["review"], Value::Null);
    // Two more ran at the wallet one after the other (10.00 then 5.00), and the later
    // one's notification comes first: once it is confirmed, the earlier one's total
    // (60.00) no longer counts it, and is still the earlier one's genuine total.
    let third = pending_refund(&app, &shop, &id, "10.00").await;
    let fourth = pending_refund(&app, &shop, &id, "5.00").await;
    wallet_reports_refund(&app, &id, &fourth, "65.00").await;
    wallet_reports_refund(&app, &id, &third, "60.00").await;
    let order = get_order(&app, &shop, &id).await;
    for late in [&third, &fourth] {
        assert_eq!(refund_in(&order, late)["status"], "succeeded");
        assert_eq!(refund_in(&order, late)["review"], Value::Null, "{order}");
    }
    assert_eq!(order["refunded"], "65.00");
    // A total nothing here explains is a mismatch: held for a person, still reserved,
    // and never sent to the wallet again.
    let odd = pending_refund(&app, &shop, &id, "10.00").await;
    wallet_reports_refund(&app, &id, &odd, "99.00").await;
    let order = get_order(&app, &shop, &id).await;
    let held = refund_in(&order, &odd);
    assert_eq!(held["status"], "pending");
    assert!(
        held["review"].as_str().unwrap().contains("99.00 CNY"),
        "{held}"
    );
    assert_eq!(order["refundable"], "25.00");
    clock.advance(app.state.settings.payments.refund_check_interval_ms);
    eventually("the order leaves the reconciler", || async {
        stored_order(&app, &id).await.next_check_at.is_none()
    })
    .await;
    let order = get_order(&app, &shop, &id).await;
    assert_eq!(refund_in(&order, &odd)["status"], "pending");
    assert_eq!(order["refunded"], "65.00");
    assert_eq!(events_of(&app, &shop, "refund.succeeded").await.len(), 4);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_refund_the_wallet_completes_after_reporting_it_failed_is_posted_late_if_covered() {
    let clock = ManualClock::new(Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let shop = shop(&app).await;
    let id = paid_alipay_order(&app, &shop, "100.00").await;
    let failed = |refund: &str| WalletEvent::RefundFailed {
        order_id: id.clone(),
        refund_id: refund.to_owned(),
        event_id: format!("failed-{refund}"),
        code: "REFUND_FAIL".into(),
        message: "declined".into(),
    };
    // Reported failed (released), then completed after all: the money moved, and what
    // is left of the capture covers it, so it is posted late and flagged.
    let covered = pending_refund(&app, &shop, &id, "40.00").await;
    callbacks::apply(&app.state, AdapterId::Alipay, failed(&covered))
        .await
        .unwrap();
    assert_eq!(get_order(&app, &shop, &id).await["refundable"], "100.00");
    assert_eq!(
        wallet_reports_refund(&app, &id, &covered, "40.00").await,
        Handled::Processed
    );
    let order = get_order(&app, &shop, &id).await;
    let late = refund_in(&order, &covered);
    assert_eq!(late["status"], "succeeded");
    assert!(
        late["review"]
            .as_str()
            .unwrap()
            .contains("after reporting it failed")
    );
    assert_eq!(order["refunded"], "40.00");
    // The same notification again changes nothing.
    wallet_reports_refund(&app, &id, &covered, "40.00").await;
    assert_eq!(get_order(&app, &shop, &id).await["refunded"], "40.00");
    // Another one fails, the merchant refunds the rest, then the wallet completes the
    // failed one anyway: nothing is left to cover it, so nothing is posted and a
    // person is asked to look at the refund and the order.
    let uncovered = pending_refund(&app, &shop, &id, "10.00").await;
    callbacks::apply(&app.state, AdapterId::Alipay, failed(&uncovered))
        .await
        .unwrap();
    let rest = app
        .post_json(
            &format!("/v1/orders/{id}/refunds"),
            Some(&shop.key),
            &json!({"amount": "60.00"}),
            None,
        )
        .await;
    assert_eq!(rest.status(), StatusCode::CREATED);
    wallet_reports_this_refund(&app, &id, &uncovered, "10.00").await;
    let order = get_order(&app, &shop, &id).await;
    let stuck = refund_in(&order, &uncovered);
    assert_eq!(stuck["status"], "failed");
    assert!(
        stuck["review"].as_str().unwrap().contains("not posted"),
        "{stuck}"
    );
    assert!(order["review"].as_str().unwrap().contains(&uncovered));
    assert_eq!(order["refunded"], "100.00");
    assert_eq!(
        order["ledger"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "refund")
            .count(),
        2
    );
    assert_eq!(events_of(&app, &shop, "refund.succeeded").await.len(), 2);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_confirmation_that_loses_the_race_to_a_failure_still_posts_the_refund() {
    let clock = ManualClock::new(Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let shop = shop(&app).await;
    let id = paid_alipay_order(&app, &shop, "100.00").await;
    let refund = pending_refund(&app, &shop, &id, "40.00").await;
    let refund_id = sesame::domain::RefundId::parse(&refund).unwrap();
    // The callback read the refund as pending; before it commits, a failure (the
    // wallet's direct answer, or its failure callback) is recorded.
    payments::finish_refund(&app.state, &refund_id, false, None, Some("X: no".into()))
        .await
        .unwrap();
    let confirmed = payments::finish_refund(&app.state, &refund_id, true, None, None)
        .await
        .unwrap();
    assert_eq!(
        confirmed.status,
        sesame::domain::refund::RefundStatus::Succeeded
    );
    let order = get_order(&app, &shop, &id).await;
    assert_eq!(
        order["refunded"], "40.00",
        "the money moved: it is on the books"
    );
    assert!(
        refund_in(&order, &refund)["review"]
            .as_str()
            .unwrap()
            .contains("after reporting it failed")
    );
    // A failure after the success never takes it back.
    payments::finish_refund(&app.state, &refund_id, false, None, Some("X: no".into()))
        .await
        .unwrap();
    assert_eq!(get_order(&app, &shop, &id).await["refunded"], "40.00");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_review_flag_planned_on_a_stale_read_never_takes_a_refund_back_to_pending() {
    let clock = ManualClock::new(Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let shop = shop(&app).await;
    let id = paid_alipay_order(&app, &shop, "100.00").await;
    let refund = pending_refund(&app, &shop, &id, "40.00").await;
    let refund_id = sesame::domain::RefundId::parse(&refund).unwrap();
    // A second view of the gateway on the same store, whose order reads can be held.
    let (mut paused, _) = sesame::startup::build_state(
        app.state.settings.clone(),
        app.state.clock.clone(),
        &app.address,
    )
    .await
    .unwrap();
    let (store, gate) = PausedStore::wrap(app.state.store.clone());
    paused.store = store;
    let paused = std::sync::Arc::new(paused);
    // The flag starts and is held at its order read; the confirmation commits in full
    // meanwhile; then the flag goes on.
    gate.arm(Read::Order);
    let flagging = tokio::spawn({
        let paused = paused.clone();
        let refund_id = refund_id.clone();
        async move { payments::flag_refund_review(&paused, &refund_id, "odd amount").await }
    });
    gate.reached().await;
    payments::finish_refund(&app.state, &refund_id, true, None, None)
        .await
        .unwrap();
    gate.release();
    flagging.await.unwrap().unwrap();
    let stored = app.state.store.refund(&refund_id).await.unwrap().unwrap();
    assert_eq!(
        stored.status,
        sesame::domain::refund::RefundStatus::Succeeded,
        "{stored:?}"
    );
    assert_eq!(stored.review, None, "a succeeded refund is not held");
    let order = get_order(&app, &shop, &id).await;
    assert_eq!(order["refunded"], "40.00");
    assert_eq!(stored_order(&app, &id).await.refund_pending_minor, 0);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn ledger_verify_beside_a_live_payment_reports_only_what_stays_wrong() {
    let clock = ManualClock::new(Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let shop = shop(&app).await;
    paid_alipay_order(&app, &shop, "10.00").await;
    let (store, gate) = PausedStore::wrap(app.state.store.clone());
    let merchant = sesame::domain::MerchantId::parse(&shop.id).unwrap();
    // One pass whose balances are read after a payment it did not see the entry of:
    // it finds a difference that is not in the book.
    gate.arm(Read::Balances);
    let one_pass = tokio::spawn({
        let (store, merchant) = (store.clone(), merchant.clone());
        async move {
            let mut report = ledger_verify::Report::default();
            ledger_verify::verify_merchant(&store, &merchant, &mut report)
                .await
                .map(|_| report)
        }
    });
    gate.reached().await;
    paid_alipay_order(&app, &shop, "20.00").await;
    gate.release();
    let seen = one_pass.await.unwrap().unwrap();
    assert!(
        seen.violations.iter().any(|v| v.contains("stored balance")),
        "{:?}",
        seen.violations
    );
    // The whole check, with the same race on its first pass, looks again and is clean.
    gate.arm(Read::Balances);
    let whole = tokio::spawn({
        let store = store.clone();
        async move { ledger_verify::verify(&store).await }
    });
    gate.reached().await;
    paid_alipay_order(&app, &shop, "30.00").await;
    gate.release();
    let report = whole.await.unwrap().unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
    assert_eq!(report.merchants, 1, "the held read was this merchant's");
    assert_eq!(report.succeeded_orders, 3);
}

/// The wallet sandboxes on a listener of their own, as `sesame sandbox` serves them,
/// so they keep their books while the gateway restarts.
async fn standalone_sandboxes(
    listener: std::net::TcpListener,
    settings: &sesame::config::Settings,
    data_dir: &std::path::Path,
) -> actix_web::dev::ServerHandle {
    let own = sesame::startup::local_base_url(listener.local_addr().unwrap());
    let sandboxes = sesame::wallets::sandboxes(&settings.wallets, data_dir, &own).unwrap();
    let server = actix_web::HttpServer::new(move || {
        let sandboxes = sandboxes.clone();
        actix_web::App::new().configure(move |cfg| sandboxes.configure(cfg))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    handle
}

async fn a_pending_order_paid_while_the_gateway_is_down_settles_once_after_restart(
    backend: StoreBackend,
) {
    let wallet_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let wallet_base = sesame::startup::local_base_url(wallet_listener.local_addr().unwrap());
    let app = spawn_reachable(backend, |s| {
        s.wallets.sandbox_base_url = format!("{wallet_base}/sandbox");
    })
    .await;
    let wallets = standalone_sandboxes(wallet_listener, &app.state.settings, app.dir.path()).await;
    let shop = shop(&app).await;
    let order = pending_mpay_order(&app, &shop, "64.00").await;
    let id = order["id"].as_str().unwrap().to_owned();
    let data_dir = app.dir.path().to_path_buf();
    let settings = app.state.settings.clone();
    app.stop().await;
    // The shopper pays while the gateway is down (the wallet's redirect back to it
    // goes nowhere), and the wallet's callbacks fail.
    let cashier = crate::payments::cashier_url(&app, &order);
    let confirmed = app
        .client
        .post(format!("{cashier}/confirm"))
        .send()
        .await
        .unwrap();
    assert!(
        confirmed.status().is_success() || confirmed.status().is_redirection(),
        "{}",
        confirmed.status()
    );
    let deliveries_url = format!("{wallet_base}/sandbox/alipay_plus/deliveries");
    eventually("a callback attempt failed", || async {
        let deliveries: Value = app
            .client
            .get(&deliveries_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        deliveries
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["acked"] == false)
    })
    .await;
    let restarted = crate::support::app::restart(settings, data_dir).await;
    // The reconciler's query or a callback retry settles it, exactly once.
    let paid = wait_status(&app, &shop, &id, "succeeded").await;
    assert_eq!(paid["ledger"].as_array().unwrap().len(), 1);
    assert_eq!(paid["paid_late"], false);
    assert_eq!(events_of(&app, &shop, "order.succeeded").await.len(), 1);
    shop.endpoint.wait_for("order.succeeded", 1, 20).await;
    let report = sesame::services::ledger_verify::verify(&restarted.state.store)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
    assert_eq!(report.entries, 1);
    restarted.handle.stop(true).await;
    wallets.stop(true).await;
}

#[tokio::test]
async fn a_pending_order_paid_while_the_gateway_is_down_settles_once_after_restart_embedded() {
    a_pending_order_paid_while_the_gateway_is_down_settles_once_after_restart(
        StoreBackend::Embedded,
    )
    .await;
}

#[tokio::test]
async fn a_pending_order_paid_while_the_gateway_is_down_settles_once_after_restart_on_redis() {
    a_pending_order_paid_while_the_gateway_is_down_settles_once_after_restart(StoreBackend::Redis)
        .await;
}
