//! The Alipay adapter against its sandbox, over real HTTP: one actix server per test
//! mounts the sandbox at `/sandbox/alipay` and a receiver at `/webhooks/alipay` that
//! verifies each notification with the adapter and answers its exact ack.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::Utc;
use sesame_adapters::alipay::{
    self, AlipayAdapter, AlipayConfig, AlipaySandbox, Cancelled, LOCAL_APP_ID, wire,
};
use sesame_adapters::contract::{
    Ack, AdapterError, ChargeCode, ChargeOutcome, CreateOrder, MerchantInfo, OrderRef, PayAction,
    PayMode, RawCallback, RefundOutcome, RefundRequest, WalletAdapter, WalletEvent, WalletStatus,
};
use sesame_adapters::crypto::RsaPrivateKey;
use sesame_adapters::money::{Currency, Money};
use sesame_adapters::sandbox::{LocalKeys, TimeScale};

const FAST: TimeScale = TimeScale { speedup: 1000 };

#[derive(Default)]
struct Receiver {
    events: Mutex<Vec<WalletEvent>>,
    errors: Mutex<Vec<AdapterError>>,
    bodies: Mutex<Vec<Vec<u8>>>,
    /// Answer this many notifications with a wrong ack first.
    wrong_acks: AtomicU32,
}

struct ReceiverState {
    adapter: Arc<AlipayAdapter>,
    receiver: Arc<Receiver>,
}

async fn receive(
    state: web::Data<ReceiverState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| request.path().to_owned());
    let callback = RawCallback::new(
        request.method().as_str(),
        &path,
        headers,
        body.to_vec(),
        Utc::now(),
    );
    state.receiver.bodies.lock().unwrap().push(body.to_vec());
    let ack = match state.adapter.verify_callback(&callback) {
        Ok(event) => {
            state.receiver.events.lock().unwrap().push(event);
            Ack::Processed
        }
        Err(error) => {
            state.receiver.errors.lock().unwrap().push(error);
            Ack::Rejected
        }
    };
    let wrong = state
        .receiver
        .wrong_acks
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if wrong {
        // A common mistake: right words, wrong bytes.
        return HttpResponse::Ok()
            .content_type("text/plain")
            .body("Success");
    }
    let answer = state.adapter.ack(ack);
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(answer.status).unwrap());
    if let Some(content_type) = answer.content_type {
        response.content_type(content_type);
    }
    response.body(answer.body)
}

struct TestApp {
    sandbox_url: String,
    notify_url: String,
    adapter: Arc<AlipayAdapter>,
    sandbox: Arc<AlipaySandbox>,
    keys: LocalKeys,
    receiver: Arc<Receiver>,
    http: reqwest::Client,
}

async fn spawn_app() -> TestApp {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let sandbox_url = format!("{base}/sandbox/alipay");
    let keys = LocalKeys::generate().unwrap();
    let (adapter, sandbox) = alipay::local(&sandbox_url, &keys, FAST).unwrap();
    let adapter = Arc::new(adapter);
    let receiver = Arc::new(Receiver::default());
    let state = web::Data::new(ReceiverState {
        adapter: adapter.clone(),
        receiver: receiver.clone(),
    });
    let mounted = sandbox.clone();
    let server = HttpServer::new(move || {
        let mounted = mounted.clone();
        App::new()
            .app_data(state.clone())
            .service(web::scope("/sandbox/alipay").configure(move |c| mounted.configure(c)))
            .route("/webhooks/alipay", web::post().to(receive))
    })
    .workers(2)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    TestApp {
        notify_url: format!("{base}/webhooks/alipay"),
        sandbox_url,
        adapter,
        sandbox,
        keys,
        receiver,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

fn money(amount: &str, currency: Currency) -> Money {
    Money::parse(amount, currency).unwrap()
}

fn merchant() -> MerchantInfo {
    MerchantInfo {
        merchant_id: "M-42".into(),
        name: "Pastelaria Koi Kei".into(),
        mcc: "5814".into(),
        city: "Macau".into(),
        country: "MO".into(),
        store_id: Some("S1".into()),
        ..MerchantInfo::default()
    }
}

fn order_ref(order_id: &str) -> OrderRef {
    OrderRef {
        order_id: order_id.into(),
        wallet_ref: None,
    }
}

async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl TestApp {
    fn order(&self, order_id: &str, amount: Money, mode: PayMode) -> CreateOrder {
        CreateOrder {
            order_id: order_id.into(),
            amount,
            description: "Egg tarts x6".into(),
            expires_at: Utc::now() + chrono::Duration::minutes(15),
            notify_url: self.notify_url.clone(),
            return_url: None,
            mode,
            payer_id: None,
            user_agent: None,
            brand_params: BTreeMap::new(),
            merchant: merchant(),
        }
    }

    fn charge(&self, order_id: &str, amount: Money, code: &str) -> ChargeCode {
        ChargeCode {
            order_id: order_id.into(),
            amount,
            auth_code: code.into(),
            description: "Egg tarts x6".into(),
            notify_url: Some(self.notify_url.clone()),
            brand_params: BTreeMap::new(),
            merchant: merchant(),
        }
    }

    fn refund(
        &self,
        order_id: &str,
        refund_id: &str,
        amount: Money,
        total: Money,
    ) -> RefundRequest {
        RefundRequest {
            order_id: order_id.into(),
            wallet_ref: None,
            refund_id: refund_id.into(),
            amount,
            total,
            reason: Some("customer request".into()),
            notify_url: None,
        }
    }

    /// `(pays at once, needs confirmation, declined)` codes from `/test-codes`.
    async fn test_codes(&self) -> (String, String, String) {
        let codes: Vec<serde_json::Value> = self
            .http
            .get(format!("{}/test-codes", self.sandbox_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let find = |behaviour: &str| {
            codes
                .iter()
                .find(|c| c["behaviour"] == behaviour)
                .and_then(|c| c["code"].as_str())
                .unwrap()
                .to_owned()
        };
        (
            find("pays_at_once"),
            find("needs_confirmation"),
            find("declined"),
        )
    }

    async fn set_faults(&self, plan: serde_json::Value) {
        let status = self
            .http
            .post(format!("{}/faults", self.sandbox_url))
            .json(&plan)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
    }

    async fn deliveries(&self) -> Vec<serde_json::Value> {
        self.http
            .get(format!("{}/deliveries", self.sandbox_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn qr_order(&self, order_id: &str, amount: Money) -> String {
        let created = self
            .adapter
            .create_order(&self.order(order_id, amount, PayMode::DynamicQr))
            .await
            .unwrap();
        match created.action {
            PayAction::QrString { data } => data,
            other => panic!("expected a QR string, got {other:?}"),
        }
    }

    async fn pay_by_code(&self, order_id: &str, amount: Money) -> String {
        let (code, _, _) = self.test_codes().await;
        match self
            .adapter
            .charge_code(&self.charge(order_id, amount, &code))
            .await
            .unwrap()
        {
            ChargeOutcome::Succeeded { wallet_ref, .. } => wallet_ref,
            other => panic!("expected a payment, got {other:?}"),
        }
    }

    fn events(&self) -> Vec<WalletEvent> {
        self.receiver.events.lock().unwrap().clone()
    }

    async fn event_matching(&self, what: &str, pred: impl Fn(&WalletEvent) -> bool) -> WalletEvent {
        eventually(what, || async {
            self.events().into_iter().find(|e| pred(e))
        })
        .await
    }

    async fn first_body(&self) -> Vec<u8> {
        eventually("a notification body", || async {
            self.receiver.bodies.lock().unwrap().first().cloned()
        })
        .await
    }

    fn callback(body: Vec<u8>) -> RawCallback {
        RawCallback::new(
            "POST",
            "/webhooks/alipay",
            [(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
            body,
            Utc::now(),
        )
    }

    fn adapter_with(&self, change: impl FnOnce(&mut AlipayConfig)) -> AlipayAdapter {
        let mut config = alipay::local_config(&self.sandbox_url, &self.keys).unwrap();
        change(&mut config);
        AlipayAdapter::new(config).unwrap()
    }
}

fn pairs(body: &[u8]) -> Vec<(String, String)> {
    wire::decode_form(std::str::from_utf8(body).unwrap()).unwrap()
}

/// Re-signs notification pairs (without `sign`) with `key`, as Alipay would.
fn signed_notification(mut pairs: Vec<(String, String)>, key: &RsaPrivateKey) -> Vec<u8> {
    pairs.retain(|(k, _)| k != "sign");
    let content = wire::notify_sign_content(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    pairs.push(("sign".into(), key.sign_base64(content.as_bytes()).unwrap()));
    serde_urlencoded::to_string(&pairs).unwrap().into_bytes()
}

fn set(pairs: &mut [(String, String)], name: &str, value: &str) {
    pairs.iter_mut().find(|(k, _)| k == name).unwrap().1 = value.into();
}

/// The scenarios, in a module so that `cargo test -p sesame-adapters alipay` selects
/// them together with the unit tests.
mod alipay_sandbox {
    use super::*;

    #[tokio::test]
    async fn dynamic_qr_is_pending_until_the_cashier_confirms_then_succeeds_and_notifies_once() {
        let app = spawn_app().await;
        let qr = app.qr_order("SO1", money("88.80", Currency::Mop)).await;
        assert!(qr.starts_with(&format!("{}/pay/", app.sandbox_url)), "{qr}");
        assert_eq!(
            app.adapter.query(&order_ref("SO1")).await,
            Ok(WalletStatus::Pending)
        );

        let page = app
            .http
            .get(&qr)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("Pastelaria Koi Kei") && page.contains("88.80 MOP"),
            "{page}"
        );
        let confirmed = app.http.post(format!("{qr}/confirm")).send().await.unwrap();
        assert_eq!(confirmed.status(), 200);

        let status = app.adapter.query(&order_ref("SO1")).await.unwrap();
        let WalletStatus::Succeeded {
            wallet_ref,
            amount,
            paid_at,
            ..
        } = status
        else {
            panic!("expected a payment, got {status:?}");
        };
        assert_eq!(amount, money("88.80", Currency::Mop));
        assert!(paid_at.is_some());
        let event = app
            .event_matching("the payment notification", |e| {
                matches!(e, WalletEvent::PaymentSucceeded { .. })
            })
            .await;
        let WalletEvent::PaymentSucceeded {
            order_id,
            wallet_ref: notified_ref,
            amount,
            ..
        } = event
        else {
            unreachable!()
        };
        assert_eq!((order_id.as_str(), notified_ref), ("SO1", wallet_ref));
        assert_eq!(amount, money("88.80", Currency::Mop));

        // The first retry would come 240 ms (4 min / 1000) later: the ack stopped it.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let deliveries = app.deliveries().await;
        assert_eq!(deliveries.len(), 1, "{deliveries:?}");
        assert_eq!(deliveries[0]["acked"], true);
        assert_eq!(deliveries[0]["status"], 200);
    }

    #[tokio::test]
    async fn static_entry_redirects_the_alipay_browser_to_the_cashier_and_back() {
        let app = spawn_app().await;
        let mut order = app.order("SO2", money("12.00", Currency::Cny), PayMode::StaticEntry);
        order.return_url = Some("https://gw.example.mo/o/SO2".into());
        let created = app.adapter.create_order(&order).await.unwrap();
        let PayAction::Redirect { url } = created.action else {
            panic!("expected a redirect, got {:?}", created.action);
        };
        assert!(url.starts_with(&format!("{}/pay/", app.sandbox_url)));
        assert_eq!(app.http.get(&url).send().await.unwrap().status(), 200);
        let confirmed = app
            .http
            .post(format!("{url}/confirm"))
            .send()
            .await
            .unwrap();
        assert_eq!(confirmed.status(), 303);
        assert_eq!(
            confirmed.headers()["location"].to_str().unwrap(),
            "https://gw.example.mo/o/SO2"
        );
        assert!(
            app.adapter
                .query(&order_ref("SO2"))
                .await
                .unwrap()
                .is_paid()
        );
    }

    #[tokio::test]
    async fn jsapi_and_unsupported_currencies_are_refused_before_reaching_alipay() {
        let app = spawn_app().await;
        let jsapi = app.order("SO3", money("1.00", Currency::Cny), PayMode::Jsapi);
        assert!(matches!(
            app.adapter.create_order(&jsapi).await,
            Err(AdapterError::Unsupported(_))
        ));
        let usd = app.order("SO3", money("1.00", Currency::Usd), PayMode::DynamicQr);
        assert!(matches!(
            app.adapter.create_order(&usd).await,
            Err(AdapterError::Unsupported(_))
        ));
        assert_eq!(app.sandbox.trade_status("SO3"), None);
        let caps = app.adapter.capabilities();
        assert_eq!(
            caps.currencies,
            vec![Currency::Cny, Currency::Mop, Currency::Hkd]
        );
    }

    #[tokio::test]
    async fn cashier_cancel_closes_the_order_and_notifies_trade_closed() {
        let app = spawn_app().await;
        let qr = app.qr_order("SO4", money("5.00", Currency::Hkd)).await;
        let cancelled = app.http.post(format!("{qr}/cancel")).send().await.unwrap();
        assert_eq!(cancelled.status(), 200);
        assert_eq!(
            app.adapter.query(&order_ref("SO4")).await,
            Ok(WalletStatus::Closed)
        );
        let event = app
            .event_matching("the closed notification", |e| {
                matches!(e, WalletEvent::PaymentFailed { .. })
            })
            .await;
        assert!(
            matches!(event, WalletEvent::PaymentFailed { code, order_id, .. } if code == "TRADE_CLOSED" && order_id == "SO4")
        );
    }

    #[tokio::test]
    async fn close_makes_an_unpaid_order_closed_and_can_be_repeated() {
        let app = spawn_app().await;
        let qr = app.qr_order("SO5", money("20.00", Currency::Cny)).await;
        app.adapter.close(&order_ref("SO5")).await.unwrap();
        assert_eq!(
            app.adapter.query(&order_ref("SO5")).await,
            Ok(WalletStatus::Closed)
        );
        app.adapter.close(&order_ref("SO5")).await.unwrap();
        let pay = app.http.post(format!("{qr}/confirm")).send().await.unwrap();
        assert_eq!(pay.status(), 409, "a closed order cannot be paid");
        assert_eq!(
            app.adapter.query(&order_ref("SO5")).await,
            Ok(WalletStatus::Closed)
        );
    }

    #[tokio::test]
    async fn close_of_an_order_alipay_never_saw_blocks_any_later_payment() {
        let app = spawn_app().await;
        assert_eq!(
            app.adapter.query(&order_ref("SO6")).await,
            Ok(WalletStatus::Pending)
        );
        app.adapter.close(&order_ref("SO6")).await.unwrap();
        let again = app
            .adapter
            .create_order(&app.order("SO6", money("1.00", Currency::Cny), PayMode::DynamicQr))
            .await;
        assert!(
            matches!(again, Err(AdapterError::Rejected { code, .. }) if code == "ACQ.TRADE_HAS_CLOSE")
        );
    }

    #[tokio::test]
    async fn close_of_a_paid_order_is_refused_with_alipays_code() {
        let app = spawn_app().await;
        app.pay_by_code("SO7", money("9.90", Currency::Cny)).await;
        let closed = app.adapter.close(&order_ref("SO7")).await;
        assert!(
            matches!(closed, Err(AdapterError::Rejected { code, .. }) if code == "ACQ.TRADE_STATUS_ERROR")
        );
        assert!(
            app.adapter
                .query(&order_ref("SO7"))
                .await
                .unwrap()
                .is_paid()
        );
    }

    #[tokio::test]
    async fn customer_code_that_pays_at_once_succeeds_with_the_amount() {
        let app = spawn_app().await;
        let (code, _, _) = app.test_codes().await;
        let outcome = app
            .adapter
            .charge_code(&app.charge("SO8", money("33.30", Currency::Cny), &code))
            .await
            .unwrap();
        let ChargeOutcome::Succeeded {
            wallet_ref,
            amount,
            paid_at,
            ..
        } = outcome
        else {
            panic!("expected a payment, got {outcome:?}");
        };
        assert_eq!(amount, money("33.30", Currency::Cny));
        assert!(paid_at.is_some() && wallet_ref.len() == 28);
        assert!(
            app.adapter
                .query(&order_ref("SO8"))
                .await
                .unwrap()
                .is_paid()
        );
        app.event_matching(
            "the payment notification",
            |e| matches!(e, WalletEvent::PaymentSucceeded { order_id, .. } if order_id == "SO8"),
        )
        .await;
    }

    #[tokio::test]
    async fn customer_code_needing_confirmation_is_pending_until_the_shopper_confirms() {
        let app = spawn_app().await;
        app.sandbox.set_confirm_after(Duration::from_secs(3600));
        let (_, code, _) = app.test_codes().await;
        let outcome = app
            .adapter
            .charge_code(&app.charge("SO9", money("500.00", Currency::Cny), &code))
            .await
            .unwrap();
        assert_eq!(outcome, ChargeOutcome::Pending);
        assert_eq!(
            app.adapter.query(&order_ref("SO9")).await,
            Ok(WalletStatus::Pending)
        );
        let confirmed = app
            .http
            .post(format!("{}/codes/{code}/confirm", app.sandbox_url))
            .send()
            .await
            .unwrap();
        assert_eq!(confirmed.status(), 200);
        let status = app.adapter.query(&order_ref("SO9")).await.unwrap();
        assert!(
            matches!(status, WalletStatus::Succeeded { amount, .. } if amount == money("500.00", Currency::Cny))
        );
    }

    #[tokio::test]
    async fn pending_customer_code_confirms_itself_after_the_wallet_delay() {
        let app = spawn_app().await;
        let (_, code, _) = app.test_codes().await;
        let outcome = app
            .adapter
            .charge_code(&app.charge("SO10", money("8.00", Currency::Cny), &code))
            .await
            .unwrap();
        assert_eq!(outcome, ChargeOutcome::Pending);
        eventually("the automatic confirmation", || async {
            app.adapter
                .query(&order_ref("SO10"))
                .await
                .unwrap()
                .is_paid()
                .then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn declined_customer_code_fails_with_alipays_code_and_creates_nothing() {
        let app = spawn_app().await;
        let (_, _, code) = app.test_codes().await;
        let outcome = app
            .adapter
            .charge_code(&app.charge("SO11", money("8.00", Currency::Cny), &code))
            .await
            .unwrap();
        assert!(
            matches!(outcome, ChargeOutcome::Failed { code, .. } if code == "ACQ.BUYER_BALANCE_NOT_ENOUGH")
        );
        assert_eq!(app.sandbox.trade_status("SO11"), None);
    }

    #[tokio::test]
    async fn repeated_charge_of_a_paid_order_reports_the_same_payment() {
        let app = spawn_app().await;
        let (code, _, _) = app.test_codes().await;
        let charge = app.charge("SO12", money("18.00", Currency::Cny), &code);
        let first = app.adapter.charge_code(&charge).await.unwrap();
        let second = app.adapter.charge_code(&charge).await.unwrap();
        let wallet_ref = |o: &ChargeOutcome| match o {
            ChargeOutcome::Succeeded { wallet_ref, .. } => wallet_ref.clone(),
            other => panic!("expected a payment, got {other:?}"),
        };
        assert_eq!(wallet_ref(&first), wallet_ref(&second));
    }

    #[tokio::test]
    async fn cancel_closes_a_pending_charge_and_reverses_a_paid_one() {
        let app = spawn_app().await;
        app.sandbox.set_confirm_after(Duration::from_secs(3600));
        let (paying, pending, _) = app.test_codes().await;
        let outcome = app
            .adapter
            .charge_code(&app.charge("SO13", money("8.00", Currency::Cny), &pending))
            .await
            .unwrap();
        assert_eq!(outcome, ChargeOutcome::Pending);
        assert_eq!(
            app.adapter.cancel(&order_ref("SO13")).await,
            Ok(Cancelled::Closed)
        );
        assert_eq!(
            app.adapter.query(&order_ref("SO13")).await,
            Ok(WalletStatus::Closed)
        );

        app.adapter
            .charge_code(&app.charge("SO14", money("8.00", Currency::Cny), &paying))
            .await
            .unwrap();
        assert_eq!(
            app.adapter.cancel(&order_ref("SO14")).await,
            Ok(Cancelled::Refunded)
        );
        let status = app.adapter.query(&order_ref("SO14")).await.unwrap();
        assert!(
            matches!(status, WalletStatus::Refunded { refunded: Some(r), .. } if r == money("8.00", Currency::Cny))
        );
    }

    #[tokio::test]
    async fn partial_refunds_then_the_rest_then_an_over_refund_is_refused() {
        let app = spawn_app().await;
        let total = money("100.00", Currency::Mop);
        app.pay_by_code("SO15", total).await;
        for (refund_id, amount) in [("R1", "30.00"), ("R2", "20.00"), ("R3", "50.00")] {
            let outcome = app
                .adapter
                .refund(&app.refund("SO15", refund_id, money(amount, Currency::Mop), total))
                .await
                .unwrap();
            assert_eq!(
                outcome,
                RefundOutcome::Succeeded {
                    wallet_refund_ref: None
                }
            );
        }
        let status = app.adapter.query(&order_ref("SO15")).await.unwrap();
        assert!(
            matches!(status, WalletStatus::Refunded { refunded: Some(r), .. } if r == total),
            "{status:?}"
        );
        let over = app
            .adapter
            .refund(&app.refund("SO15", "R4", money("0.01", Currency::Mop), total))
            .await;
        assert!(
            matches!(over, Err(AdapterError::Rejected { code, .. }) if code == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")
        );

        // Refund notifications carry the refund id and Alipay's cumulative refund_fee,
        // reported as `refunded_total` (the notification names no per-refund amount).
        for (refund_id, cumulative) in [("R1", "30.00"), ("R2", "50.00"), ("R3", "100.00")] {
            let event = app
            .event_matching(refund_id, |e| {
                matches!(e, WalletEvent::RefundSucceeded { refund_id: r, .. } if r == refund_id)
            })
            .await;
            assert!(
                matches!(&event, WalletEvent::RefundSucceeded { refunded_total: Some(total), amount, .. } if *total == money(cumulative, Currency::Mop) && amount == total),
                "{event:?}"
            );
        }
        // The last refund closed the trade (TRADE_CLOSED): never a failed payment.
        assert!(
            !app.events().iter().any(
                |e| matches!(e, WalletEvent::PaymentFailed { order_id, .. } if order_id == "SO15")
            ),
            "{:?}",
            app.events()
        );
    }

    #[tokio::test]
    async fn a_trade_reversed_after_payment_is_refunded_never_closed_unpaid() {
        let app = spawn_app().await;
        let total = money("12.00", Currency::Cny);
        app.pay_by_code("SO40", total).await;
        assert_eq!(
            app.adapter.cancel(&order_ref("SO40")).await,
            Ok(Cancelled::Refunded)
        );
        // The query says TRADE_CLOSED; the capture shows, so it is Refunded.
        let status = app.adapter.query(&order_ref("SO40")).await.unwrap();
        assert!(
            matches!(&status, WalletStatus::Refunded { amount, .. } if *amount == total),
            "{status:?}"
        );
        assert!(!matches!(
            status,
            WalletStatus::Closed | WalletStatus::Failed { .. }
        ));
        // Every notification of the trade, TRADE_CLOSED included, keeps it paid.
        let closed = app
            .event_matching("the closing notification", |e| {
                matches!(e, WalletEvent::Informational { order_id: Some(o), .. } if o == "SO40")
            })
            .await;
        assert!(matches!(closed, WalletEvent::Informational { .. }));
        assert!(!app.events().iter().any(
            |e| matches!(e, WalletEvent::PaymentFailed { order_id, .. } if order_id == "SO40")
        ));
    }

    #[tokio::test]
    async fn an_over_refund_on_a_partly_refunded_order_moves_no_money() {
        let app = spawn_app().await;
        let total = money("10.00", Currency::Cny);
        app.pay_by_code("SO16", total).await;
        app.adapter
            .refund(&app.refund("SO16", "R1", money("4.00", Currency::Cny), total))
            .await
            .unwrap();
        let over = app
            .adapter
            .refund(&app.refund("SO16", "R2", money("6.01", Currency::Cny), total))
            .await;
        assert!(
            matches!(over, Err(AdapterError::Rejected { code, .. }) if code == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")
        );
        assert_eq!(
            app.adapter.refund_query(&order_ref("SO16"), "R2").await,
            Ok(None)
        );
        assert!(
            app.adapter
                .query(&order_ref("SO16"))
                .await
                .unwrap()
                .is_paid()
        );
    }

    #[tokio::test]
    async fn retrying_the_same_refund_id_never_refunds_twice() {
        let app = spawn_app().await;
        let total = money("10.00", Currency::Cny);
        app.pay_by_code("SO17", total).await;
        let five = money("5.00", Currency::Cny);
        for _ in 0..3 {
            let outcome = app
                .adapter
                .refund(&app.refund("SO17", "R1", five, total))
                .await
                .unwrap();
            assert_eq!(
                outcome,
                RefundOutcome::Succeeded {
                    wallet_refund_ref: None
                }
            );
        }
        assert_eq!(
            app.adapter.refund_query(&order_ref("SO17"), "R1").await,
            Ok(Some(five))
        );
        // Only 5.00 was consumed: the other 5.00 is still refundable.
        app.adapter
            .refund(&app.refund("SO17", "R2", five, total))
            .await
            .unwrap();
        let changed = app
            .adapter
            .refund(&app.refund("SO17", "R1", money("6.00", Currency::Cny), total))
            .await;
        assert!(
            matches!(changed, Err(AdapterError::Rejected { code, .. }) if code == "ACQ.CONTEXT_INCONSISTENT")
        );
        let refunds = app
            .events()
            .iter()
            .filter(|e| matches!(e, WalletEvent::RefundSucceeded { .. }))
            .count();
        assert!(refunds <= 2, "one notification per refund that moved money");
    }

    #[tokio::test]
    async fn a_wrong_ack_is_retried_on_alipays_schedule_until_success() {
        let app = spawn_app().await;
        app.receiver.wrong_acks.store(2, Ordering::SeqCst);
        let started = Instant::now();
        app.pay_by_code("SO18", money("1.00", Currency::Cny)).await;
        let deliveries = eventually("an acknowledged delivery", || async {
            let log = app.deliveries().await;
            log.iter().any(|d| d["acked"] == true).then_some(log)
        })
        .await;
        let elapsed = started.elapsed();
        let attempts: Vec<(u64, bool)> = deliveries
            .iter()
            .map(|d| {
                (
                    d["attempt"].as_u64().unwrap(),
                    d["acked"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(attempts, vec![(1, false), (2, false), (3, true)]);
        // 4 min + 10 min of wallet time at 1000x.
        assert!(elapsed >= Duration::from_millis(840), "{elapsed:?}");
        let events = app.events();
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e.event_id() == events[0].event_id()));
    }

    #[tokio::test]
    async fn duplicated_callbacks_arrive_as_identical_events() {
        let app = spawn_app().await;
        app.set_faults(serde_json::json!({ "duplicate_callbacks": 2 }))
            .await;
        app.pay_by_code("SO19", money("2.00", Currency::Cny)).await;
        let events = eventually("three deliveries", || async {
            let events = app.events();
            (events.len() >= 3).then_some(events)
        })
        .await;
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e == &events[0]));
    }

    #[tokio::test]
    async fn forged_callbacks_are_rejected() {
        let app = spawn_app().await;
        app.pay_by_code("SO20", money("66.60", Currency::Cny)).await;
        let body = app.first_body().await;
        assert!(
            app.adapter
                .verify_callback(&TestApp::callback(body.clone()))
                .is_ok()
        );

        // One byte of the amount changed.
        let text = String::from_utf8(body.clone()).unwrap();
        let at = text.find("total_amount=").unwrap() + "total_amount=".len();
        let mut flipped = body.clone();
        flipped[at] = if flipped[at] == b'6' { b'7' } else { b'6' };
        assert_eq!(
            app.adapter.verify_callback(&TestApp::callback(flipped)),
            Err(AdapterError::BadSignature)
        );

        // A valid Alipay signature over a different notification.
        let mut other = pairs(&body);
        set(&mut other, "out_trade_no", "SO-OTHER");
        let other_sign = wire::param(
            &pairs(&signed_notification(other, &app.keys.wallet)),
            "sign",
        )
        .unwrap()
        .to_owned();
        let mut swapped = pairs(&body);
        set(&mut swapped, "sign", &other_sign);
        let swapped = serde_urlencoded::to_string(&swapped).unwrap().into_bytes();
        assert_eq!(
            app.adapter.verify_callback(&TestApp::callback(swapped)),
            Err(AdapterError::BadSignature)
        );

        // Signed by another key.
        let stranger = RsaPrivateKey::generate_2048().unwrap();
        let forged = signed_notification(pairs(&body), &stranger);
        assert_eq!(
            app.adapter.verify_callback(&TestApp::callback(forged)),
            Err(AdapterError::BadSignature)
        );

        // No signature at all, or the legacy SHA1 sign type.
        let mut unsigned = pairs(&body);
        unsigned.retain(|(k, _)| k != "sign");
        let unsigned = serde_urlencoded::to_string(&unsigned).unwrap().into_bytes();
        assert_eq!(
            app.adapter.verify_callback(&TestApp::callback(unsigned)),
            Err(AdapterError::BadSignature)
        );
        let mut sha1 = pairs(&body);
        set(&mut sha1, "sign_type", "RSA");
        let sha1 = serde_urlencoded::to_string(&sha1).unwrap().into_bytes();
        assert_eq!(
            app.adapter.verify_callback(&TestApp::callback(sha1)),
            Err(AdapterError::BadSignature)
        );

        // Authentic Alipay signature, but for another app.
        let mut foreign = pairs(&body);
        set(&mut foreign, "app_id", "2021009999999999");
        let foreign = signed_notification(foreign, &app.keys.wallet);
        assert_eq!(
            app.adapter.verify_callback(&TestApp::callback(foreign)),
            Err(AdapterError::BadSignature)
        );
        // Authentic, for our app, but another seller's trade (or no seller at all).
        let mut other_seller = pairs(&body);
        set(&mut other_seller, "seller_id", "2088999999999999");
        let other_seller = signed_notification(other_seller, &app.keys.wallet);
        assert_eq!(
            app.adapter
                .verify_callback(&TestApp::callback(other_seller.clone())),
            Err(AdapterError::BadSignature)
        );
        let mut no_seller = pairs(&body);
        no_seller.retain(|(k, _)| k != "seller_id");
        let no_seller = signed_notification(no_seller, &app.keys.wallet);
        assert_eq!(
            app.adapter.verify_callback(&TestApp::callback(no_seller)),
            Err(AdapterError::BadSignature)
        );
        // Without a configured seller id the app id alone decides.
        let any_seller = app.adapter_with(|c| c.seller_id = None);
        assert!(
            any_seller
                .verify_callback(&TestApp::callback(other_seller))
                .is_ok()
        );

        // Unreadable: not UTF-8, a repeated parameter, not a POST.
        assert!(matches!(
            app.adapter
                .verify_callback(&TestApp::callback(vec![0xff, 0xfe, b'='])),
            Err(AdapterError::Malformed(_))
        ));
        let mut repeated = body.clone();
        repeated.extend_from_slice(b"&trade_status=TRADE_SUCCESS");
        assert!(matches!(
            app.adapter.verify_callback(&TestApp::callback(repeated)),
            Err(AdapterError::Malformed(_))
        ));
        let get = RawCallback::new(
            "GET",
            "/webhooks/alipay",
            Vec::<(String, String)>::new(),
            body,
            Utc::now(),
        );
        assert!(matches!(
            app.adapter.verify_callback(&get),
            Err(AdapterError::Malformed(_))
        ));

        let rejected = app.adapter.ack(Ack::Rejected);
        assert_eq!(rejected.body, b"fail");
        assert_ne!(rejected.body, b"success");
    }

    #[tokio::test]
    async fn a_callback_amount_is_reported_faithfully_but_an_unparseable_one_is_malformed() {
        let app = spawn_app().await;
        app.pay_by_code("SO21", money("10.00", Currency::Cny)).await;
        let body = app.first_body().await;

        let mut different = pairs(&body);
        set(&mut different, "total_amount", "99.99");
        let event = app
            .adapter
            .verify_callback(&TestApp::callback(signed_notification(
                different,
                &app.keys.wallet,
            )))
            .unwrap();
        assert!(
            matches!(event, WalletEvent::PaymentSucceeded { amount, .. } if amount == money("99.99", Currency::Cny))
        );

        let mut garbage = pairs(&body);
        set(&mut garbage, "total_amount", "ten yuan");
        let result = app
            .adapter
            .verify_callback(&TestApp::callback(signed_notification(
                garbage,
                &app.keys.wallet,
            )));
        assert!(
            matches!(result, Err(AdapterError::Malformed(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn requests_signed_with_another_merchant_key_are_refused_and_create_nothing() {
        let app = spawn_app().await;
        let impostor =
            app.adapter_with(|c| c.merchant_key = RsaPrivateKey::generate_2048().unwrap());
        let result = impostor
            .create_order(&app.order("SO22", money("1.00", Currency::Cny), PayMode::DynamicQr))
            .await;
        assert!(
            matches!(result, Err(AdapterError::Rejected { ref code, .. }) if code == "isv.invalid-signature"),
            "{result:?}"
        );
        assert_eq!(app.sandbox.trade_status("SO22"), None);
        let other_app = app.adapter_with(|c| c.app_id = "2021009999999999".into());
        let result = other_app.query(&order_ref("SO22")).await;
        assert!(
            matches!(result, Err(AdapterError::Rejected { ref code, .. }) if code == "isv.invalid-app-id"),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn answers_that_do_not_verify_with_the_alipay_key_are_bad_signatures() {
        let app = spawn_app().await;
        let misled = app.adapter_with(|c| {
            c.alipay_public_key = RsaPrivateKey::generate_2048()
                .unwrap()
                .public_key()
                .unwrap()
        });
        let result = misled
            .create_order(&app.order("SO23", money("1.00", Currency::Cny), PayMode::DynamicQr))
            .await;
        assert_eq!(result, Err(AdapterError::BadSignature));
        assert_eq!(
            misled.query(&order_ref("SO23")).await,
            Err(AdapterError::BadSignature)
        );
        assert_eq!(
            app.sandbox.trade_status("SO23"),
            Some(wire::TradeStatus::WaitBuyerPay)
        );
        assert_eq!(LOCAL_APP_ID, app.adapter.app_id());
    }

    #[tokio::test]
    async fn an_injected_server_error_is_a_retryable_transport_error_and_the_retry_works() {
        let app = spawn_app().await;
        app.set_faults(serde_json::json!({ "fail_requests": 1 }))
            .await;
        let order = app.order("SO24", money("3.00", Currency::Cny), PayMode::DynamicQr);
        let first = app.adapter.create_order(&order).await;
        assert!(
            matches!(
                first,
                Err(AdapterError::Transport {
                    retryable: true,
                    ..
                })
            ),
            "{first:?}"
        );
        assert!(app.adapter.create_order(&order).await.is_ok());
    }

    #[tokio::test]
    async fn an_unsigned_http_4xx_is_a_non_retryable_transport_error_and_moves_nothing() {
        // Alipay answers every business outcome with HTTP 200 and a signed body; a 4xx
        // comes from something in front of it and must never read as a refusal.
        let app = spawn_app().await;
        for status in [400u16, 403, 404] {
            app.set_faults(serde_json::json!({ "http_status": [status] }))
                .await;
            let order_id = format!("SO5{status}");
            let order = app.order(&order_id, money("3.00", Currency::Cny), PayMode::DynamicQr);
            let first = app.adapter.create_order(&order).await;
            assert!(
                matches!(&first, Err(AdapterError::Transport { retryable: false, message }) if message.contains(&status.to_string())),
                "{status}: {first:?}"
            );
            assert!(app.adapter.create_order(&order).await.is_ok());
        }
        let total = money("10.00", Currency::Cny);
        app.pay_by_code("SO41", total).await;
        app.set_faults(serde_json::json!({ "http_status": [403] }))
            .await;
        let refund = app.refund("SO41", "R1", money("1.00", Currency::Cny), total);
        assert!(matches!(
            app.adapter.refund(&refund).await,
            Err(AdapterError::Transport {
                retryable: false,
                ..
            })
        ));
        assert_eq!(
            app.adapter.refund_query(&order_ref("SO41"), "R1").await,
            Ok(None),
            "the refund never reached Alipay"
        );
        assert!(app.adapter.refund(&refund).await.is_ok());
    }

    #[tokio::test]
    async fn a_slow_answer_beyond_the_timeout_is_a_retryable_transport_error() {
        let app = spawn_app().await;
        let impatient = app.adapter_with(|c| c.timeout = Duration::from_millis(200));
        app.set_faults(serde_json::json!({ "slow_ms": 1000 })).await;
        let result = impatient.query(&order_ref("SO25")).await;
        assert!(
            matches!(
                result,
                Err(AdapterError::Transport {
                    retryable: true,
                    ..
                })
            ),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn hkd_orders_travel_with_trans_currency_both_ways() {
        let app = spawn_app().await;
        let (code, _, _) = app.test_codes().await;
        let outcome = app
            .adapter
            .charge_code(&app.charge("SO26", money("45.50", Currency::Hkd), &code))
            .await
            .unwrap();
        assert!(
            matches!(outcome, ChargeOutcome::Succeeded { amount, .. } if amount == money("45.50", Currency::Hkd))
        );
        let event = app
            .event_matching("the payment notification", |e| {
                matches!(e, WalletEvent::PaymentSucceeded { .. })
            })
            .await;
        assert!(
            matches!(event, WalletEvent::PaymentSucceeded { amount, .. } if amount == money("45.50", Currency::Hkd))
        );
        let body = String::from_utf8(app.first_body().await).unwrap();
        assert!(body.contains("trans_currency=HKD"));
    }

    #[tokio::test]
    async fn test_codes_are_alipay_cn_codes_one_per_behaviour() {
        let app = spawn_app().await;
        let (a, b, c) = app.test_codes().await;
        for code in [&a, &b, &c] {
            assert_eq!(code.len(), 18);
            assert!(code.starts_with("28") && code.bytes().all(|b| b.is_ascii_digit()));
        }
        assert!(a.ends_with("0000") && b.ends_with("1000") && c.ends_with("9000"));
        let (d, _, _) = app.test_codes().await;
        assert_ne!(a, d, "each call issues fresh codes");
    }

    #[tokio::test]
    async fn statement_lists_paid_and_refunded_transactions() {
        let app = spawn_app().await;
        let total = money("40.00", Currency::Cny);
        let paid = app.pay_by_code("SO27", total).await;
        app.adapter
            .refund(&app.refund("SO27", "R27", money("15.00", Currency::Cny), total))
            .await
            .unwrap();
        let other = app.pay_by_code("SO28", money("7.25", Currency::Mop)).await;
        app.qr_order("SO29", money("1.00", Currency::Cny)).await;

        let today = Utc::now().with_timezone(&wire::BEIJING).format("%Y-%m-%d");
        let response = app
            .http
            .get(format!("{}/statement?date={today}", app.sandbox_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let csv = response.text().await.unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert!(
            lines[0].starts_with("支付宝交易号/trade_no,商户订单号/out_trade_no"),
            "{csv}"
        );
        assert_eq!(lines.len(), 4, "{csv}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{paid},SO27,交易/trade"))
                    && l.contains(",40.00,,CNY,,TRADE_SUCCESS")),
            "{csv}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{paid},SO27,退款/refund"))
                    && l.contains(",40.00,15.00,CNY,R27,REFUND_SUCCESS")),
            "{csv}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{other},SO28,")) && l.contains(",7.25,,MOP,")),
            "{csv}"
        );
        assert!(
            !csv.contains("SO29"),
            "unpaid orders are not in the statement"
        );

        let bad = app
            .http
            .get(format!("{}/statement?date=yesterday", app.sandbox_url))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
    }
}
