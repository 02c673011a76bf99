//! Kakao Pay adapter against its sandbox, over real HTTP: the shopper's redirect
//! dance through the cashier (a browser that does not follow redirects, so every
//! hop is checked), the merchant's return route (`parse_return` + `approve`, as the
//! gateway does it), polling, close, refunds and faults.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::Utc;
use sesame_adapters::contract::{
    Ack, AdapterError, ChargeCode, CreateOrder, MerchantInfo, OrderRef, PayAction, PayMode,
    RawCallback, RefundOutcome, RefundRequest, ResultDelivery, WalletAdapter, WalletStatus,
};
use sesame_adapters::crypto::RsaPrivateKey;
use sesame_adapters::kakao_pay::sandbox::{
    KakaoPaySandbox, SANDBOX_MERCHANT_NAME, local, local_secret_key,
};
use sesame_adapters::kakao_pay::{KakaoPayAdapter, KakaoReturn, SecretKey, parse_return, wire};
use sesame_adapters::money::{Currency, Money};
use sesame_adapters::sandbox::{LocalKeys, TimeScale};

const KEY_PEM: &str = include_str!("../testdata/rsa2048_pkcs8.pem");

type Tids = Arc<Mutex<HashMap<String, String>>>;

struct TestApp {
    origin: String,
    sandbox_url: String,
    adapter: Arc<KakaoPayAdapter>,
    sandbox: Arc<KakaoPaySandbox>,
    /// The shopper's browser: never follows redirects, so each hop is asserted.
    browser: reqwest::Client,
    /// order id -> tid, as the gateway's store would keep it.
    tids: Tids,
}

fn test_keys() -> LocalKeys {
    LocalKeys {
        merchant: RsaPrivateKey::from_pem(KEY_PEM).unwrap(),
        wallet: RsaPrivateKey::from_pem(KEY_PEM).unwrap(),
        secret: [0x5a; 32],
    }
}

fn krw(won: i64) -> Money {
    Money::from_minor(won, Currency::Krw).unwrap()
}

fn new_order_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "ord_{}_{}",
        Utc::now().timestamp_micros(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The merchant's return route, as the gateway implements it: recognise the
/// outcome from the query, approve on `approved`, answer what happened.
async fn shop_return(
    adapter: &KakaoPayAdapter,
    tids: &Tids,
    order_id: &str,
    query: &str,
) -> HttpResponse {
    let tid = tids.lock().unwrap().get(order_id).cloned();
    let order = OrderRef {
        order_id: order_id.to_owned(),
        wallet_ref: tid,
    };
    let outcome = match parse_return(query) {
        Ok(KakaoReturn::Approved { pg_token }) => match adapter.approve(&order, &pg_token).await {
            Ok(WalletStatus::Succeeded { amount, .. }) => format!("paid {amount}"),
            Ok(other) => format!("unexpected {other:?}"),
            Err(e) => format!("approve failed: {e}"),
        },
        Ok(KakaoReturn::Cancelled) => "cancelled".to_owned(),
        Ok(KakaoReturn::Failed) => "failed".to_owned(),
        Err(e) => format!("malformed: {e}"),
    };
    HttpResponse::Ok().body(outcome)
}

async fn spawn_app() -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let origin = format!("http://127.0.0.1:{port}");
    let sandbox_url = format!("{origin}/sandbox/kakao_pay");
    let (adapter, sandbox) =
        local(&sandbox_url, &test_keys(), TimeScale { speedup: 1000 }).unwrap();
    let adapter = Arc::new(adapter);
    let tids: Tids = Arc::default();
    let (s, a, t) = (sandbox.clone(), adapter.clone(), tids.clone());
    let server = HttpServer::new(move || {
        let s = s.clone();
        let a = a.clone();
        let t = t.clone();
        App::new()
            .service(web::scope("/sandbox/kakao_pay").configure(move |c| s.configure(c)))
            .route(
                "/shop/return/{order_id}",
                web::get().to(move |req: HttpRequest, order_id: web::Path<String>| {
                    let a = a.clone();
                    let t = t.clone();
                    async move { shop_return(&a, &t, &order_id, req.query_string()).await }
                }),
            )
    })
    .workers(2)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    TestApp {
        origin,
        sandbox_url,
        adapter,
        sandbox,
        browser: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        tids,
    }
}

impl TestApp {
    fn return_url(&self, order_id: &str) -> String {
        format!("{}/shop/return/{order_id}?lang=en", self.origin)
    }

    fn order(&self, won: i64) -> CreateOrder {
        let order_id = new_order_id();
        CreateOrder {
            return_url: Some(self.return_url(&order_id)),
            order_id,
            amount: krw(won),
            description: "Iced americano x2".into(),
            expires_at: Utc::now() + chrono::Duration::minutes(15),
            notify_url: format!("{}/webhooks/kakao_pay", self.origin),
            mode: PayMode::StaticEntry,
            payer_id: None,
            user_agent: Some("Mozilla/5.0 KAKAOTALK 10.4.5".into()),
            brand_params: Default::default(),
            merchant: MerchantInfo {
                merchant_id: "m_1".into(),
                name: "Cafe Nata".into(),
                ..MerchantInfo::default()
            },
        }
    }

    /// Creates a payment; returns its reference and the cashier URL.
    async fn create(&self, won: i64) -> (OrderRef, String) {
        let order = self.order(won);
        let created = self.adapter.create_order(&order).await.unwrap();
        let tid = created.wallet_ref.clone().expect("ready returns a tid");
        self.tids
            .lock()
            .unwrap()
            .insert(order.order_id.clone(), tid.clone());
        let PayAction::Redirect { url } = created.action else {
            panic!("kakao pay redirects, got {:?}", created.action);
        };
        (
            OrderRef {
                order_id: order.order_id,
                wallet_ref: Some(tid),
            },
            url,
        )
    }

    fn tid(order: &OrderRef) -> &str {
        order.wallet_ref.as_deref().unwrap()
    }

    /// The shopper presses a cashier button; returns the 303 Location.
    async fn press(&self, order: &OrderRef, button: &str) -> String {
        let response = self
            .browser
            .post(format!(
                "{}/pay/{}/{button}",
                self.sandbox_url,
                Self::tid(order)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 303, "{button}");
        response.headers()["location"].to_str().unwrap().to_owned()
    }

    /// Opens the cashier, confirms, returns the pg_token from the redirect.
    async fn authenticate(&self, order: &OrderRef, cashier: &str) -> String {
        let page = self.browser.get(cashier).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 200);
        let location = self.press(order, "confirm").await;
        let query = location.split_once('?').unwrap().1;
        match parse_return(query).unwrap() {
            KakaoReturn::Approved { pg_token } => pg_token,
            other => panic!("expected approval, got {other:?}"),
        }
    }

    async fn paid(&self, won: i64) -> OrderRef {
        let (order, cashier) = self.create(won).await;
        let token = self.authenticate(&order, &cashier).await;
        assert!(
            self.adapter
                .approve(&order, &token)
                .await
                .unwrap()
                .is_paid()
        );
        order
    }

    async fn faults(&self, plan: serde_json::Value) {
        let response = self
            .browser
            .post(format!("{}/faults", self.sandbox_url))
            .json(&plan)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    fn adapter_with(
        &self,
        edit: impl FnOnce(&mut sesame_adapters::kakao_pay::KakaoPayConfig),
    ) -> KakaoPayAdapter {
        let mut config = self.adapter.config().clone();
        edit(&mut config);
        KakaoPayAdapter::new(config).unwrap()
    }

    fn refund(&self, order: &OrderRef, refund_id: &str, won: i64) -> RefundRequest {
        RefundRequest {
            order_id: order.order_id.clone(),
            wallet_ref: order.wallet_ref.clone(),
            refund_id: refund_id.into(),
            amount: krw(won),
            total: krw(12000),
            reason: Some("customer asked".into()),
            notify_url: None,
        }
    }
}

fn rejected_code(result: Result<impl std::fmt::Debug, AdapterError>) -> String {
    match result {
        Err(AdapterError::Rejected { code, .. }) => code,
        other => panic!("expected a wallet refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopper_pays_through_the_cashier_and_the_return_route_approves() {
    let app = spawn_app().await;
    let (order, cashier) = app.create(12000).await;
    assert_eq!(
        cashier,
        format!("{}/pay/{}", app.sandbox_url, TestApp::tid(&order))
    );
    assert_eq!(
        app.adapter.query(&order).await.unwrap(),
        WalletStatus::Pending
    );

    let page = app.browser.get(&cashier).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("12000 KRW"), "{html}");
    assert!(html.contains(SANDBOX_MERCHANT_NAME), "{html}");
    assert!(html.contains("Iced americano x2"));
    assert_eq!(
        app.adapter.order_details(&order).await.unwrap().status,
        "OPEN_PAYMENT"
    );

    let location = app.press(&order, "confirm").await;
    let expected_prefix = format!(
        "{}/shop/return/{}?lang=en&result=approved&pg_token=",
        app.origin, order.order_id
    );
    assert!(location.starts_with(&expected_prefix), "{location}");
    // Authenticated but not approved: the redirect alone captures nothing.
    assert_eq!(
        app.adapter.query(&order).await.unwrap(),
        WalletStatus::Pending
    );

    let landed = app.browser.get(&location).send().await.unwrap();
    assert_eq!(landed.text().await.unwrap(), "paid 12000 KRW");

    match app.adapter.query(&order).await.unwrap() {
        WalletStatus::Succeeded {
            wallet_ref,
            amount,
            paid_at,
            brand,
        } => {
            assert_eq!(wallet_ref, TestApp::tid(&order));
            assert_eq!(amount, krw(12000));
            let paid_at = paid_at.expect("approved_at");
            assert!((Utc::now() - paid_at).num_seconds().abs() < 60);
            assert_eq!(brand, None);
        }
        other => panic!("expected success, got {other:?}"),
    }
    // The cashier is done with this payment.
    let again = app.browser.get(&cashier).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_returns_the_captured_amount_and_time() {
    let app = spawn_app().await;
    let (order, cashier) = app.create(8800).await;
    let token = app.authenticate(&order, &cashier).await;
    let approved = app.adapter.approve(&order, &token).await.unwrap();
    let WalletStatus::Succeeded {
        wallet_ref,
        amount,
        paid_at,
        ..
    } = approved
    else {
        panic!("expected success, got {approved:?}");
    };
    assert_eq!(wallet_ref, TestApp::tid(&order));
    assert_eq!(amount, krw(8800));
    assert!(paid_at.is_some());
    let details = app.adapter.order_details(&order).await.unwrap();
    assert_eq!(details.status, "SUCCESS_PAYMENT");
    assert_eq!(details.payment_method_type.as_deref(), Some("MONEY"));
    assert_eq!(details.payment_action_details.len(), 1);
    assert_eq!(
        details.payment_action_details[0].payment_action_type,
        "PAYMENT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopper_cancelling_in_the_cashier_returns_to_the_cancel_url_and_the_payment_fails() {
    let app = spawn_app().await;
    let (order, cashier) = app.create(5000).await;
    app.browser.get(&cashier).send().await.unwrap();
    let location = app.press(&order, "cancel").await;
    assert_eq!(
        location,
        format!(
            "{}/shop/return/{}?lang=en&result=cancelled",
            app.origin, order.order_id
        )
    );
    assert_eq!(
        parse_return(location.split_once('?').unwrap().1),
        Ok(KakaoReturn::Cancelled)
    );
    let landed = app.browser.get(&location).send().await.unwrap();
    assert_eq!(landed.text().await.unwrap(), "cancelled");
    assert_eq!(
        app.adapter.query(&order).await.unwrap(),
        WalletStatus::Failed {
            code: "QUIT_PAYMENT".into()
        }
    );
    // Nothing can approve it any more, not even a guessed token.
    assert_eq!(
        rejected_code(app.adapter.approve(&order, "a1b2c3d4e5f6a7b8c9d0").await),
        "-725"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_returns_to_the_fail_url() {
    let app = spawn_app().await;
    let (order, _) = app.create(5000).await;
    let location = app.press(&order, "fail").await;
    assert!(location.ends_with("?lang=en&result=failed"), "{location}");
    assert_eq!(
        parse_return(location.split_once('?').unwrap().1),
        Ok(KakaoReturn::Failed)
    );
    assert_eq!(
        app.adapter.query(&order).await.unwrap(),
        WalletStatus::Failed {
            code: "FAIL_AUTH_PASSWORD".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_early_and_reused_pg_tokens_are_refused_by_the_wallet() {
    let app = spawn_app().await;
    let (order, cashier) = app.create(12000).await;
    assert_eq!(
        rejected_code(app.adapter.approve(&order, "a1b2c3d4e5f6a7b8c9d0").await),
        "-701",
        "approve before the shopper authenticated"
    );
    let token = app.authenticate(&order, &cashier).await;
    assert_eq!(
        rejected_code(app.adapter.approve(&order, "ffffffffffffffffffff").await),
        "-780",
        "a token that was not issued"
    );
    assert!(app.adapter.approve(&order, &token).await.unwrap().is_paid());
    assert_eq!(
        rejected_code(app.adapter.approve(&order, &token).await),
        "-702",
        "the same token again"
    );
    // A replayed return URL reaches the route, which gets the refusal too.
    let replay = format!(
        "{}?lang=en&result=approved&pg_token={token}",
        app.return_url(&order.order_id).split_once('?').unwrap().0
    );
    let answer = app
        .browser
        .get(&replay)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        answer.starts_with("approve failed: wallet refused: -702"),
        "{answer}"
    );
    assert!(matches!(
        app.adapter.approve(&order, "bad token!").await,
        Err(AdapterError::Malformed(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_refunds_then_the_rest_end_in_cancel_payment() {
    let app = spawn_app().await;
    let order = app.paid(12000).await;
    let first = app
        .adapter
        .refund(&app.refund(&order, "rf_1", 3000))
        .await
        .unwrap();
    let RefundOutcome::Succeeded {
        wallet_refund_ref: Some(first_aid),
    } = first
    else {
        panic!("expected a refund with an aid, got {first:?}");
    };
    assert_eq!(first_aid.len(), 20);
    assert_eq!(
        app.adapter.query(&order).await.unwrap(),
        WalletStatus::Refunded {
            wallet_ref: TestApp::tid(&order).into(),
            amount: krw(12000),
            refunded: Some(krw(3000)),
        }
    );
    app.adapter
        .refund(&app.refund(&order, "rf_2", 4000))
        .await
        .unwrap();
    let details = app.adapter.order_details(&order).await.unwrap();
    assert_eq!(details.status, "PART_CANCEL_PAYMENT");
    assert_eq!(details.canceled_amount.unwrap().total, 7000);
    assert_eq!(details.cancel_available_amount.unwrap().total, 5000);

    app.adapter
        .refund(&app.refund(&order, "rf_3", 5000))
        .await
        .unwrap();
    let details = app.adapter.order_details(&order).await.unwrap();
    assert_eq!(details.status, "CANCEL_PAYMENT");
    assert_eq!(details.cancel_available_amount.unwrap().total, 0);
    assert_eq!(
        app.adapter.query(&order).await.unwrap(),
        WalletStatus::Refunded {
            wallet_ref: TestApp::tid(&order).into(),
            amount: krw(12000),
            refunded: Some(krw(12000)),
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_refund_is_refused_by_the_wallet_and_moves_nothing() {
    let app = spawn_app().await;
    let order = app.paid(12000).await;
    app.adapter
        .refund(&app.refund(&order, "rf_1", 10000))
        .await
        .unwrap();
    assert_eq!(
        rejected_code(app.adapter.refund(&app.refund(&order, "rf_2", 2001)).await),
        "-708"
    );
    let details = app.adapter.order_details(&order).await.unwrap();
    assert_eq!(details.canceled_amount.unwrap().total, 10000);
    assert_eq!(details.status, "PART_CANCEL_PAYMENT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_refund_id_retried_refunds_once() {
    let app = spawn_app().await;
    let order = app.paid(12000).await;
    let request = app.refund(&order, "rf_retry", 3000);
    let first = app.adapter.refund(&request).await.unwrap();
    let second = app.adapter.refund(&request).await.unwrap();
    assert_eq!(
        first, second,
        "the earlier refund, found by its payload: same aid"
    );
    let details = app.adapter.order_details(&order).await.unwrap();
    assert_eq!(details.canceled_amount.unwrap().total, 3000);
    assert_eq!(cancels_of(&details, "rf_retry"), 1);
    // The same id for another amount is a client bug, refused without cancelling.
    assert!(matches!(
        app.adapter
            .refund(&app.refund(&order, "rf_retry", 4000))
            .await,
        Err(AdapterError::AmountMismatch { .. })
    ));
    // Even after a full refund, a retry of the last one still gets its answer.
    let last = app.refund(&order, "rf_rest", 9000);
    let done = app.adapter.refund(&last).await.unwrap();
    assert_eq!(app.adapter.refund(&last).await.unwrap(), done);
    let details = app.adapter.order_details(&order).await.unwrap();
    assert_eq!(details.canceled_amount.unwrap().total, 12000);
    assert_eq!(details.status, "CANCEL_PAYMENT");
}

/// How many `CANCEL` entries of the wallet's record carry `payload`.
fn cancels_of(details: &wire::OrderResponse, payload: &str) -> usize {
    details
        .payment_action_details
        .iter()
        .filter(|a| a.payment_action_type == "CANCEL" && a.payload.as_deref() == Some(payload))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_whose_answer_was_lost_is_reconciled_from_the_order_and_never_repeated() {
    let app = spawn_app().await;
    let order = app.paid(12000).await;
    let request = app.refund(&order, "rf_lost", 5000);
    // The wallet applies the cancel, then the answer is lost (HTTP 500).
    app.faults(serde_json::json!({ "lose_answers": 1 })).await;
    let outcome = app.adapter.refund(&request).await.unwrap();
    let RefundOutcome::Succeeded {
        wallet_refund_ref: Some(aid),
    } = &outcome
    else {
        panic!("expected the reconciled refund, got {outcome:?}");
    };
    let details = app.adapter.order_details(&order).await.unwrap();
    assert_eq!(details.canceled_amount.as_ref().unwrap().total, 5000);
    assert_eq!(cancels_of(&details, "rf_lost"), 1);
    let entry = details
        .payment_action_details
        .iter()
        .find(|a| a.payload.as_deref() == Some("rf_lost"))
        .unwrap();
    assert_eq!(&entry.aid, aid);
    // The gateway retrying the same refund gets the same answer and moves nothing.
    assert_eq!(app.adapter.refund(&request).await.unwrap(), outcome);
    let details = app.adapter.order_details(&order).await.unwrap();
    assert_eq!(details.canceled_amount.unwrap().total, 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_has_no_cancel_dedupe_and_a_stale_cancellable_amount_is_refused() {
    // Kakao's cancel has no idempotency key: what the adapter must never rely on.
    let app = spawn_app().await;
    let order = app.paid(12000).await;
    let secret = local_secret_key(&test_keys()).unwrap();
    let cancel = |available: Option<i64>| wire::CancelRequest {
        cid: wire::TEST_CID.into(),
        cid_secret: None,
        tid: TestApp::tid(&order).into(),
        cancel_amount: 1000,
        cancel_tax_free_amount: 0,
        cancel_vat_amount: None,
        cancel_available_amount: available,
        payload: Some("same_payload".into()),
    };
    let send = |request: wire::CancelRequest| {
        app.browser
            .post(format!("{}{}", app.sandbox_url, wire::CANCEL_PATH))
            .header("Authorization", wire::authorization(secret.expose()))
            .json(&request)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(send(cancel(None)).await.unwrap().status().as_u16(), 200);
    }
    let details = app.adapter.order_details(&order).await.unwrap();
    assert_eq!(cancels_of(&details, "same_payload"), 2, "cancelled twice");
    assert_eq!(details.canceled_amount.unwrap().total, 2000);
    // With the optimistic check, a repeat made on stale knowledge is refused.
    let response = send(cancel(Some(11000))).await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let refusal: wire::ErrorBody = response.json().await.unwrap();
    assert_eq!(refusal.error_code, wire::codes::CANCEL_AVAILABLE_MISMATCH);
    let details = app.adapter.order_details(&order).await.unwrap();
    assert_eq!(details.canceled_amount.unwrap().total, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_before_payment_makes_the_payment_closed_and_unpayable() {
    let app = spawn_app().await;
    let (order, cashier) = app.create(5000).await;
    app.adapter.close(&order).await.unwrap();
    assert_eq!(
        app.adapter.query(&order).await.unwrap(),
        WalletStatus::Closed
    );
    let details = app.adapter.order_details(&order).await.unwrap();
    assert_eq!(details.status, "CANCEL_PAYMENT");
    assert_eq!(details.approved_at, None);
    assert_eq!(details.canceled_amount.unwrap().total, 0);
    // The shopper can no longer pay it, and closing again changes nothing.
    assert_eq!(
        app.browser
            .get(&cashier)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        409
    );
    let press = app
        .browser
        .post(format!("{cashier}/confirm"))
        .send()
        .await
        .unwrap();
    assert_eq!(press.status().as_u16(), 409);
    app.adapter.close(&order).await.unwrap();
    assert_eq!(
        app.adapter.query(&order).await.unwrap(),
        WalletStatus::Closed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_after_authentication_but_before_approve_closes_it() {
    let app = spawn_app().await;
    let (order, cashier) = app.create(5000).await;
    let token = app.authenticate(&order, &cashier).await;
    app.adapter.close(&order).await.unwrap();
    assert_eq!(
        app.adapter.query(&order).await.unwrap(),
        WalletStatus::Closed
    );
    assert_eq!(
        rejected_code(app.adapter.approve(&order, &token).await),
        "-725"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_of_an_unpaid_payment_is_refused_and_does_not_abort_it() {
    let app = spawn_app().await;
    let (order, cashier) = app.create(12000).await;
    assert_eq!(
        rejected_code(
            app.adapter
                .refund(&app.refund(&order, "rf_early", 12000))
                .await
        ),
        "NOT_APPROVED"
    );
    assert_eq!(
        app.adapter.query(&order).await.unwrap(),
        WalletStatus::Pending
    );
    let token = app.authenticate(&order, &cashier).await;
    assert!(app.adapter.approve(&order, &token).await.unwrap().is_paid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_after_approval_is_refused_and_refunds_nothing() {
    let app = spawn_app().await;
    let order = app.paid(12000).await;
    assert_eq!(
        rejected_code(app.adapter.close(&order).await),
        "ALREADY_APPROVED"
    );
    assert!(app.adapter.query(&order).await.unwrap().is_paid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closing_cancel_is_refused_by_the_wallet_once_the_payment_is_approved() {
    // What `close` sends, arriving after our own approve won the race.
    let app = spawn_app().await;
    let order = app.paid(12000).await;
    let secret = local_secret_key(&test_keys()).unwrap();
    let response = app
        .browser
        .post(format!("{}{}", app.sandbox_url, wire::CANCEL_PATH))
        .header("Authorization", wire::authorization(secret.expose()))
        .json(&wire::CancelRequest {
            cid: wire::TEST_CID.into(),
            cid_secret: None,
            tid: TestApp::tid(&order).into(),
            cancel_amount: 12000,
            cancel_tax_free_amount: 0,
            cancel_vat_amount: None,
            cancel_available_amount: Some(0),
            payload: None,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let refusal: wire::ErrorBody = response.json().await.unwrap();
    assert_eq!(refusal.error_code, wire::codes::CANCEL_AVAILABLE_MISMATCH);
    assert!(app.adapter.query(&order).await.unwrap().is_paid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_server_errors_are_retryable_except_for_approve() {
    let app = spawn_app().await;
    let before = app.sandbox.payment_count();
    app.faults(serde_json::json!({ "fail_requests": 1 })).await;
    let order = app.order(12000);
    match app.adapter.create_order(&order).await {
        Err(AdapterError::Transport {
            retryable: true, ..
        }) => {}
        other => panic!("expected a retryable transport error, got {other:?}"),
    }
    assert_eq!(app.sandbox.payment_count(), before);
    assert!(
        app.adapter.create_order(&order).await.is_ok(),
        "retry succeeds"
    );

    let (paid_later, cashier) = app.create(7000).await;
    let token = app.authenticate(&paid_later, &cashier).await;
    app.faults(serde_json::json!({ "fail_requests": 1 })).await;
    match app.adapter.approve(&paid_later, &token).await {
        Err(AdapterError::Transport {
            retryable: false, ..
        }) => {}
        other => panic!("approve failures are not blindly retryable, got {other:?}"),
    }
    // Asking the wallet tells the truth: the injected error happened before approval.
    assert_eq!(
        app.adapter.query(&paid_later).await.unwrap(),
        WalletStatus::Pending
    );
    assert!(
        app.adapter
            .approve(&paid_later, &token)
            .await
            .unwrap()
            .is_paid()
    );

    // A refund's first call reads the order: failing there is safe to repeat.
    app.faults(serde_json::json!({ "fail_requests": 1 })).await;
    let refund = app.refund(&paid_later, "rf_5xx", 1000);
    assert!(
        app.adapter
            .refund(&refund)
            .await
            .unwrap_err()
            .is_retryable()
    );
    assert!(app.adapter.refund(&refund).await.is_ok());
    let details = app.adapter.order_details(&paid_later).await.unwrap();
    assert_eq!(cancels_of(&details, "rf_5xx"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_slower_than_the_adapter_timeout_is_a_retryable_transport_error() {
    let app = spawn_app().await;
    let (order, _) = app.create(5000).await;
    let impatient = app.adapter_with(|c| c.timeout = Duration::from_millis(300));
    app.faults(serde_json::json!({ "slow_ms": 1500 })).await;
    match impatient.query(&order).await {
        Err(AdapterError::Transport {
            retryable: true,
            message,
        }) => assert!(message.contains("timed out"), "{message}"),
        other => panic!("expected a retryable timeout, got {other:?}"),
    }
    app.faults(serde_json::json!({})).await;
    assert_eq!(
        impatient.query(&order).await.unwrap(),
        WalletStatus::Pending
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_key_is_rejected_and_creates_nothing() {
    let app = spawn_app().await;
    let (order, _) = app.create(5000).await;
    let before = app.sandbox.payment_count();
    let stranger = app.adapter_with(|c| {
        c.secret_key = SecretKey::new("DEV00000000000000000000000000000000000000").unwrap()
    });
    match stranger.create_order(&app.order(5000)).await {
        Err(AdapterError::Rejected { code, message }) => {
            assert_eq!(code, "-401");
            assert!(!message.contains("DEV0000"), "{message}");
        }
        other => panic!("expected -401, got {other:?}"),
    }
    assert_eq!(app.sandbox.payment_count(), before);
    assert_eq!(rejected_code(stranger.query(&order).await), "-401");

    let wrong_cid = app.adapter_with(|c| c.cid = "TC0ONEMORE".into());
    assert_eq!(rejected_code(wrong_cid.query(&order).await), "-731");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_error_shape_is_kakaos() {
    let app = spawn_app().await;
    let response = app
        .browser
        .post(format!("{}{}", app.sandbox_url, wire::ORDER_PATH))
        .header("Authorization", "SECRET_KEY DEVWRONG")
        .json(&serde_json::json!({ "cid": "TC0ONETIME", "tid": "T1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error_code"], -401);
    assert!(body["error_message"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_foreign_tids_are_refused() {
    let app = spawn_app().await;
    let unknown = OrderRef {
        order_id: new_order_id(),
        wallet_ref: Some("T0000000000000000000".into()),
    };
    assert_eq!(rejected_code(app.adapter.query(&unknown).await), "-721");
    let (order, _) = app.create(5000).await;
    let foreign = OrderRef {
        order_id: new_order_id(),
        wallet_ref: order.wallet_ref.clone(),
    };
    assert!(matches!(
        app.adapter.query(&foreign).await,
        Err(AdapterError::Malformed(_))
    ));
    let no_tid = OrderRef {
        order_id: order.order_id.clone(),
        wallet_ref: None,
    };
    assert!(matches!(
        app.adapter.query(&no_tid).await,
        Err(AdapterError::Unsupported(_))
    ));
    assert!(matches!(
        app.adapter.close(&no_tid).await,
        Err(AdapterError::Unsupported(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_kakao_cannot_take_are_refused_without_calling_the_wallet() {
    let app = spawn_app().await;
    let before = app.sandbox.payment_count();
    let mut mop = app.order(100);
    mop.amount = Money::parse("12.30", Currency::Mop).unwrap();
    let mut qr = app.order(100);
    qr.mode = PayMode::DynamicQr;
    let mut no_return = app.order(100);
    no_return.return_url = None;
    let mut clashing = app.order(100);
    clashing.return_url = Some(format!("{}/r?result=x", app.origin));
    for order in [mop, qr, no_return, clashing] {
        assert!(
            matches!(
                app.adapter.create_order(&order).await,
                Err(AdapterError::Unsupported(_))
            ),
            "{order:?}"
        );
    }
    assert_eq!(app.sandbox.payment_count(), before);
    let caps = app.adapter.capabilities();
    assert_eq!(caps.modes, vec![PayMode::StaticEntry]);
    assert_eq!(caps.currencies, vec![Currency::Krw]);
    assert_eq!(caps.results, ResultDelivery::Polling);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kakao_sends_no_callbacks_and_takes_no_customer_codes() {
    let app = spawn_app().await;
    let callback = RawCallback::new(
        "POST",
        "/webhooks/kakao_pay",
        vec![("content-type", "application/json")],
        br#"{"tid":"T1","status":"SUCCESS_PAYMENT"}"#.to_vec(),
        Utc::now(),
    );
    assert!(matches!(
        app.adapter.verify_callback(&callback),
        Err(AdapterError::Unsupported(_))
    ));
    for ack in [Ack::Processed, Ack::RetryLater, Ack::Rejected] {
        let answer = app.adapter.ack(ack);
        assert_eq!(answer.status, 200);
        assert!(answer.body.is_empty());
    }
    let charge = ChargeCode {
        order_id: new_order_id(),
        amount: krw(1000),
        auth_code: "280082021234567890120000".into(),
        description: "x".into(),
        notify_url: None,
        brand_params: Default::default(),
        merchant: MerchantInfo::default(),
    };
    assert!(matches!(
        app.adapter.charge_code(&charge).await,
        Err(AdapterError::Unsupported(_))
    ));
    let codes: Vec<serde_json::Value> = app
        .browser
        .get(format!("{}/test-codes", app.sandbox_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(codes.is_empty());
    let (order, _) = app.create(1000).await;
    app.paid(2000).await;
    let deliveries: Vec<serde_json::Value> = app
        .browser
        .get(format!("{}/deliveries", app.sandbox_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(deliveries.is_empty(), "{deliveries:?}");
    assert_eq!(
        app.adapter.query(&order).await.unwrap(),
        WalletStatus::Pending
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_lists_the_paid_and_refunded_payments() {
    let app = spawn_app().await;
    let paid = app.paid(12000).await;
    let refunded = app.paid(9000).await;
    app.adapter
        .refund(&app.refund(&refunded, "rf_s", 4000))
        .await
        .unwrap();
    let (unpaid, _) = app.create(3000).await;
    let details = app.adapter.order_details(&paid).await.unwrap();
    let day = &details.approved_at.unwrap()[..10];
    let response = app
        .browser
        .get(format!("{}/statement?date={day}", app.sandbox_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "tid,partner_order_id,status,amount_krw,canceled_amount_krw,approved_at,canceled_at"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    let row_of = |order: &OrderRef| {
        lines
            .iter()
            .find(|l| l.starts_with(TestApp::tid(order)))
            .map(|l| l.split(',').collect::<Vec<_>>())
    };
    let paid_row = row_of(&paid).unwrap();
    assert_eq!(paid_row[1], paid.order_id);
    assert_eq!(&paid_row[2..5], &["SUCCESS_PAYMENT", "12000", "0"]);
    let refunded_row = row_of(&refunded).unwrap();
    assert_eq!(
        &refunded_row[2..5],
        &["PART_CANCEL_PAYMENT", "9000", "4000"]
    );
    assert!(!refunded_row[6].is_empty());
    assert!(row_of(&unpaid).is_none());

    let bad = app
        .browser
        .get(format!("{}/statement?date=yesterday", app.sandbox_url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}
