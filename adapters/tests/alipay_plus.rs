//! The Alipay+ adapter against its sandbox over real HTTP: one actix server mounts
//! the sandbox at `/sandbox/alipay_plus` and a callback receiver at
//! `/webhooks/alipay_plus` that verifies with the adapter and answers its ack.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, http::StatusCode, web};
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde_json::{Value, json};

use sesame_adapters::alipay_plus::sandbox::{AlipayPlusSandbox, LOCAL_CLIENT_ID, local};
use sesame_adapters::alipay_plus::{AlipayPlusAdapter, AlipayPlusConfig, wire};
use sesame_adapters::contract::{
    Ack, AdapterError, ChargeCode, ChargeOutcome, CreateOrder, MerchantInfo, OrderCreated,
    OrderRef, PayAction, PayMode, RawCallback, RefundOutcome, RefundRequest, WalletAdapter,
    WalletEvent, WalletStatus,
};
use sesame_adapters::crypto::RsaPrivateKey;
use sesame_adapters::money::{Currency, Money};
use sesame_adapters::sandbox::{LocalKeys, TimeScale};

const MPAY: &str = "A111253100000000";
const ALIPAY_HK: &str = "1022160000000000000";
const KAKAO: &str = "1022172000000000001";
const ALIPAY_CN: &str = "1022088000000000001";
const HK_USER_AGENT: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 AliApp(APHK/15.2.0) AlipayClientHK/15.2.0 Language/zh-Hant";
const MPAY_USER_AGENT: &str = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36 MPay/3.9.1";
const FAST: TimeScale = TimeScale { speedup: 1000 };

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReceiverMode {
    /// Verify and answer the adapter's ack.
    Correct,
    /// Answer Alipay classic's `success` text, which Alipay+ does not take as an ack.
    WrongAck,
}

struct Receiver {
    events: Mutex<Vec<WalletEvent>>,
    raw: Mutex<Vec<RawCallback>>,
    mode: Mutex<ReceiverMode>,
}

struct Wallet {
    adapter: Arc<AlipayPlusAdapter>,
    sandbox: Arc<AlipayPlusSandbox>,
    keys: LocalKeys,
    base: String,
    notify_url: String,
    receiver: Arc<Receiver>,
    http: reqwest::Client,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    adapter: web::Data<AlipayPlusAdapter>,
    receiver: web::Data<Receiver>,
) -> HttpResponse {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.path().to_owned());
    let cb = RawCallback::new(
        req.method().as_str(),
        &path,
        headers,
        body.to_vec(),
        Utc::now(),
    );
    receiver.raw.lock().unwrap().push(cb.clone());
    let ack = match adapter.verify_callback(&cb) {
        Ok(event) => {
            receiver.events.lock().unwrap().push(event);
            Ack::Processed
        }
        Err(_) => Ack::Rejected,
    };
    if *receiver.mode.lock().unwrap() == ReceiverMode::WrongAck {
        return HttpResponse::Ok().body("success");
    }
    let answer = adapter.ack(ack);
    let mut response = HttpResponse::build(StatusCode::from_u16(answer.status).unwrap());
    if let Some(content_type) = answer.content_type {
        response.content_type(content_type);
    }
    response.body(answer.body)
}

impl Wallet {
    async fn start(time: TimeScale) -> Wallet {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let base = format!("{origin}/sandbox/alipay_plus");
        let keys = LocalKeys::generate().unwrap();
        let (adapter, sandbox) = local(&base, &keys, time).unwrap();
        let adapter = Arc::new(adapter);
        let receiver = Arc::new(Receiver {
            events: Mutex::new(Vec::new()),
            raw: Mutex::new(Vec::new()),
            mode: Mutex::new(ReceiverMode::Correct),
        });
        let (a, s, r) = (adapter.clone(), sandbox.clone(), receiver.clone());
        let server = HttpServer::new(move || {
            let sandbox = s.clone();
            App::new()
                .app_data(web::Data::from(a.clone()))
                .app_data(web::Data::from(r.clone()))
                .service(web::scope("/sandbox/alipay_plus").configure(|c| sandbox.configure(c)))
                .route("/webhooks/alipay_plus", web::post().to(receive))
        })
        .workers(2)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Wallet {
            adapter,
            sandbox,
            keys,
            notify_url: format!("{origin}/webhooks/alipay_plus"),
            base,
            receiver,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    fn order(&self, order_id: &str, amount: &str, mode: PayMode) -> CreateOrder {
        CreateOrder {
            order_id: order_id.into(),
            amount: Money::parse(amount, Currency::Mop).unwrap(),
            description: "Egg tarts x6".into(),
            expires_at: Utc::now() + chrono::Duration::minutes(15),
            notify_url: self.notify_url.clone(),
            return_url: Some(format!("https://sesame.example/o/{order_id}")),
            mode,
            payer_id: None,
            user_agent: Some(MPAY_USER_AGENT.into()),
            brand_params: BTreeMap::from([("psp".to_owned(), "MPAY".to_owned())]),
            merchant: merchant(),
        }
    }

    fn charge(&self, order_id: &str, amount: &str, code: &str) -> ChargeCode {
        ChargeCode {
            order_id: order_id.into(),
            amount: Money::parse(amount, Currency::Mop).unwrap(),
            auth_code: code.into(),
            description: "Milk tea".into(),
            notify_url: Some(self.notify_url.clone()),
            brand_params: BTreeMap::new(),
            merchant: merchant(),
        }
    }

    async fn entry_order(&self, order_id: &str, amount: &str) -> OrderCreated {
        self.adapter
            .create_order(&self.order(order_id, amount, PayMode::StaticEntry))
            .await
            .unwrap()
    }

    /// The shopper presses Pay on the cashier; returns (status, Location).
    async fn pay_on_cashier(&self, cashier_url: &str) -> (u16, Option<String>) {
        let response = self
            .http
            .post(format!("{cashier_url}/confirm"))
            .send()
            .await
            .unwrap();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status().as_u16(), location)
    }

    async fn test_code(&self, psp: &str, behaviour: &str) -> String {
        let codes: Vec<Value> = self
            .http
            .get(format!("{}/test-codes", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        codes
            .iter()
            .find(|c| c["psp"] == psp && c["behaviour"] == behaviour)
            .and_then(|c| c["code"].as_str())
            .unwrap()
            .to_owned()
    }

    async fn set_faults(&self, plan: Value) {
        let response = self
            .http
            .post(format!("{}/faults", self.base))
            .json(&plan)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    async fn deliveries(&self) -> Vec<Value> {
        self.http
            .get(format!("{}/deliveries", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn statement(&self, date: NaiveDate) -> String {
        let response = self
            .http
            .get(format!("{}/statement?date={date}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    async fn query(&self, order_id: &str) -> Result<WalletStatus, AdapterError> {
        self.adapter
            .query(&OrderRef {
                order_id: order_id.into(),
                wallet_ref: None,
            })
            .await
    }

    fn events(&self) -> Vec<WalletEvent> {
        self.receiver.events.lock().unwrap().clone()
    }

    async fn wait_for_events(&self, count: usize) -> Vec<WalletEvent> {
        eventually(|| {
            let events = self.events();
            (events.len() >= count).then_some(events)
        })
        .await
    }

    async fn wait_for_deliveries(&self, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = self.deliveries().await;
            if check(&log) {
                return log;
            }
            assert!(Instant::now() < deadline, "deliveries: {log:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn adapter_with(
        &self,
        merchant_key: RsaPrivateKey,
        wallet: &RsaPrivateKey,
    ) -> AlipayPlusAdapter {
        AlipayPlusAdapter::new(AlipayPlusConfig::new(
            &self.base,
            LOCAL_CLIENT_ID,
            merchant_key,
            wallet.public_key().unwrap(),
        ))
        .unwrap()
    }
}

fn merchant() -> MerchantInfo {
    MerchantInfo {
        merchant_id: "m_lotus".into(),
        name: "Lotus Bakery".into(),
        mcc: "5462".into(),
        city: "Macau".into(),
        country: "MO".into(),
        sub_merchant_id: None,
        store_id: Some("senado".into()),
        store_name: Some("Lotus Bakery Senado".into()),
        terminal_id: Some("POS-1".into()),
    }
}

fn mop(amount: &str) -> Money {
    Money::parse(amount, Currency::Mop).unwrap()
}

async fn eventually<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn redirect_url(created: &OrderCreated) -> String {
    match &created.action {
        PayAction::Redirect { url } => url.clone(),
        other => panic!("expected a redirect, got {other:?}"),
    }
}

fn macau_day(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&FixedOffset::east_opt(8 * 3600).unwrap())
        .date_naive()
}

fn copy(key: &RsaPrivateKey) -> RsaPrivateKey {
    RsaPrivateKey::from_pem(&key.to_pkcs8_pem().unwrap()).unwrap()
}

/// Named `alipay_plus::*` so `cargo test -p sesame-adapters alipay_plus` selects them.
mod alipay_plus {
    use super::*;

    // ---------------------------------------------------------------------------------
    // Merchant-presented payments

    #[tokio::test]
    async fn entry_code_redirects_to_the_cashier_and_the_paid_callback_names_the_wallet() {
        let wallet = Wallet::start(FAST).await;
        let created = wallet.entry_order("ord_entry_1", "25.50").await;
        let cashier = redirect_url(&created);
        assert!(
            cashier.starts_with(&format!("{}/pay/", wallet.base)),
            "{cashier}"
        );
        assert!(created.wallet_ref.is_some());

        let page = wallet.http.get(&cashier).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(
            html.contains("Lotus Bakery") && html.contains("25.50 MOP"),
            "{html}"
        );
        assert_eq!(
            wallet.query("ord_entry_1").await.unwrap(),
            WalletStatus::Pending
        );

        let (status, location) = wallet.pay_on_cashier(&cashier).await;
        assert_eq!(status, 303);
        assert_eq!(
            location.as_deref(),
            Some("https://sesame.example/o/ord_entry_1")
        );
        let events = wallet.wait_for_events(1).await;
        match &events[0] {
            WalletEvent::PaymentSucceeded {
                order_id,
                wallet_ref,
                amount,
                brand,
                paid_at,
                ..
            } => {
                assert_eq!(order_id, "ord_entry_1");
                assert_eq!(Some(wallet_ref), created.wallet_ref.as_ref());
                assert_eq!(*amount, mop("25.50"));
                assert_eq!(brand.as_deref(), Some(MPAY));
                assert!(paid_at.is_some());
            }
            other => panic!("{other:?}"),
        }
        match wallet.query("ord_entry_1").await.unwrap() {
            WalletStatus::Succeeded { amount, brand, .. } => {
                assert_eq!(amount, mop("25.50"));
                assert_eq!(brand.as_deref(), Some(MPAY));
            }
            other => panic!("{other:?}"),
        }
        // The receiver's ack stopped the retries: one attempt, acknowledged, and no
        // second one when the first retry slot (2 min / 1000) has long passed.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let log = wallet.deliveries().await;
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0]["acked"], true);
        assert_eq!(log[0]["status"], 200);
    }

    #[tokio::test]
    async fn entry_code_without_a_wallet_hint_is_paid_by_the_wallet_the_user_agent_names() {
        let wallet = Wallet::start(FAST).await;
        let mut order = wallet.order("ord_entry_hk", "8.00", PayMode::StaticEntry);
        order.brand_params.clear();
        order.user_agent = Some(HK_USER_AGENT.into());
        let created = wallet.adapter.create_order(&order).await.unwrap();
        wallet.pay_on_cashier(&redirect_url(&created)).await;
        match wallet.query("ord_entry_hk").await.unwrap() {
            WalletStatus::Succeeded { brand, .. } => assert_eq!(brand.as_deref(), Some(ALIPAY_HK)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn entry_code_without_the_shoppers_user_agent_is_refused_before_reaching_the_wallet() {
        let wallet = Wallet::start(FAST).await;
        let mut order = wallet.order("ord_no_ua", "8.00", PayMode::StaticEntry);
        order.user_agent = None;
        assert!(matches!(
            wallet.adapter.create_order(&order).await,
            Err(AdapterError::Unsupported(_))
        ));
        assert!(matches!(
            wallet.query("ord_no_ua").await,
            Err(AdapterError::Rejected { code, .. }) if code == "ORDER_NOT_EXIST"
        ));
    }

    #[tokio::test]
    async fn order_code_returns_a_qr_of_the_cashier_and_reports_the_shoppers_wallet() {
        let wallet = Wallet::start(FAST).await;
        let mut order = wallet.order("ord_qr_1", "120.00", PayMode::DynamicQr);
        order.brand_params = BTreeMap::from([("psp".to_owned(), "ALIPAY_HK".to_owned())]);
        order.user_agent = None;
        let created = wallet.adapter.create_order(&order).await.unwrap();
        let qr = match &created.action {
            PayAction::QrString { data } => data.clone(),
            other => panic!("{other:?}"),
        };
        assert!(qr.starts_with(&format!("{}/pay/", wallet.base)), "{qr}");
        let page = wallet
            .http
            .get(&qr)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("120.00 MOP") && page.contains("AlipayHK"),
            "{page}"
        );

        wallet.pay_on_cashier(&qr).await;
        let events = wallet.wait_for_events(1).await;
        assert!(matches!(
            &events[0],
            WalletEvent::PaymentSucceeded { brand: Some(b), .. } if b == ALIPAY_HK
        ));
        assert!(wallet.query("ord_qr_1").await.unwrap().is_paid());
    }

    #[tokio::test]
    async fn shopper_cancelling_on_the_cashier_closes_the_payment_and_notifies_a_failure() {
        let wallet = Wallet::start(FAST).await;
        let cashier = redirect_url(&wallet.entry_order("ord_cancel_page", "5.00").await);
        let response = wallet
            .http
            .post(format!("{cashier}/cancel"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303);
        let events = wallet.wait_for_events(1).await;
        assert!(matches!(
            &events[0],
            WalletEvent::PaymentFailed { order_id, code, .. }
                if order_id == "ord_cancel_page" && code == "ORDER_IS_CLOSED"
        ));
        assert_eq!(
            wallet.query("ord_cancel_page").await.unwrap(),
            WalletStatus::Closed
        );
        let (status, _) = wallet.pay_on_cashier(&cashier).await;
        assert_eq!(status, 409);
    }

    #[tokio::test]
    async fn closed_order_reads_closed_and_can_no_longer_be_paid() {
        let wallet = Wallet::start(FAST).await;
        let created = wallet.entry_order("ord_close_1", "9.90").await;
        let order = OrderRef {
            order_id: "ord_close_1".into(),
            wallet_ref: created.wallet_ref.clone(),
        };
        wallet.adapter.close(&order).await.unwrap();
        wallet.adapter.close(&order).await.unwrap();
        assert_eq!(
            wallet.adapter.query(&order).await.unwrap(),
            WalletStatus::Closed
        );
        let (status, _) = wallet.pay_on_cashier(&redirect_url(&created)).await;
        assert_eq!(status, 409);
        assert_eq!(
            wallet.query("ord_close_1").await.unwrap(),
            WalletStatus::Closed
        );
        assert!(wallet.events().is_empty());
    }

    #[tokio::test]
    async fn cancelling_an_order_the_wallet_never_saw_blocks_a_late_payment() {
        let wallet = Wallet::start(FAST).await;
        let order = OrderRef {
            order_id: "ord_timeout".into(),
            wallet_ref: None,
        };
        wallet.adapter.close(&order).await.unwrap();
        assert_eq!(
            wallet.query("ord_timeout").await.unwrap(),
            WalletStatus::Closed
        );
        let late = wallet
            .adapter
            .create_order(&wallet.order("ord_timeout", "10.00", PayMode::StaticEntry))
            .await;
        assert!(
            matches!(&late, Err(AdapterError::Rejected { code, .. }) if code == "ORDER_IS_CLOSED"),
            "{late:?}"
        );
    }

    // ---------------------------------------------------------------------------------
    // Customer codes

    #[tokio::test]
    async fn customer_code_that_pays_at_once_succeeds_with_the_issuers_psp_id() {
        let wallet = Wallet::start(FAST).await;
        for (psp, psp_id, order_id) in [
            ("MPAY", MPAY, "ord_code_mpay"),
            ("KAKAOPAY", KAKAO, "ord_code_kakao"),
            ("ALIPAY_HK", ALIPAY_HK, "ord_code_hk"),
        ] {
            let code = wallet.test_code(psp, "pays_at_once").await;
            let outcome = wallet
                .adapter
                .charge_code(&wallet.charge(order_id, "33.00", &code))
                .await
                .unwrap();
            match outcome {
                ChargeOutcome::Succeeded {
                    amount,
                    brand,
                    paid_at,
                    wallet_ref,
                } => {
                    assert_eq!(amount, mop("33.00"));
                    assert_eq!(brand.as_deref(), Some(psp_id));
                    assert!(paid_at.is_some() && !wallet_ref.is_empty());
                }
                other => panic!("{psp}: {other:?}"),
            }
        }
        let events = wallet.wait_for_events(3).await;
        assert!(
            events
                .iter()
                .all(|e| matches!(e, WalletEvent::PaymentSucceeded { .. }))
        );
    }

    #[tokio::test]
    async fn customer_code_needing_confirmation_is_pending_until_the_shopper_confirms() {
        // Real time: the sandbox's own 10-second auto-confirmation stays out of the way.
        let wallet = Wallet::start(TimeScale::REAL_TIME).await;
        let code = wallet.test_code("MPAY", "needs_confirmation").await;
        let outcome = wallet
            .adapter
            .charge_code(&wallet.charge("ord_code_pin", "480.00", &code))
            .await
            .unwrap();
        assert_eq!(outcome, ChargeOutcome::Pending);
        assert_eq!(
            wallet.query("ord_code_pin").await.unwrap(),
            WalletStatus::Pending
        );

        let confirmed = wallet
            .http
            .post(format!("{}/codes/{code}/confirm", wallet.base))
            .send()
            .await
            .unwrap();
        assert_eq!(confirmed.status(), 200);
        match wallet.query("ord_code_pin").await.unwrap() {
            WalletStatus::Succeeded { amount, brand, .. } => {
                assert_eq!(amount, mop("480.00"));
                assert_eq!(brand.as_deref(), Some(MPAY));
            }
            other => panic!("{other:?}"),
        }
        let events = wallet.wait_for_events(1).await;
        assert!(
            matches!(&events[0], WalletEvent::PaymentSucceeded { order_id, .. } if order_id == "ord_code_pin")
        );
    }

    #[tokio::test]
    async fn customer_code_needing_confirmation_confirms_itself_after_a_while() {
        let wallet = Wallet::start(FAST).await;
        let code = wallet.test_code("KAKAOPAY", "needs_confirmation").await;
        let outcome = wallet
            .adapter
            .charge_code(&wallet.charge("ord_code_auto", "70.00", &code))
            .await
            .unwrap();
        assert_eq!(outcome, ChargeOutcome::Pending);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status = wallet.query("ord_code_auto").await.unwrap();
            if status.is_paid() {
                break;
            }
            assert_eq!(status, WalletStatus::Pending);
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn declined_customer_code_fails_with_the_wallets_code() {
        let wallet = Wallet::start(FAST).await;
        let code = wallet.test_code("ALIPAY_HK", "declined").await;
        let outcome = wallet
            .adapter
            .charge_code(&wallet.charge("ord_code_poor", "999.00", &code))
            .await
            .unwrap();
        assert!(
            matches!(&outcome, ChargeOutcome::Failed { code, .. } if code == "USER_BALANCE_NOT_ENOUGH"),
            "{outcome:?}"
        );
        assert_eq!(
            wallet.query("ord_code_poor").await.unwrap(),
            WalletStatus::Failed {
                code: "USER_BALANCE_NOT_ENOUGH".into()
            }
        );
    }

    #[tokio::test]
    async fn customer_code_from_an_unknown_issuer_fails_as_no_such_user() {
        let wallet = Wallet::start(FAST).await;
        let outcome = wallet
            .adapter
            .charge_code(&wallet.charge("ord_code_unknown", "1.00", "281234020000000000010000"))
            .await
            .unwrap();
        assert!(
            matches!(&outcome, ChargeOutcome::Failed { code, .. } if code == "USER_NOT_EXIST"),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn repeated_payment_request_is_the_same_payment_and_changed_fields_are_refused() {
        let wallet = Wallet::start(FAST).await;
        let code = wallet.test_code("MPAY", "pays_at_once").await;
        let charge = wallet.charge("ord_repeat", "12.00", &code);
        let first = wallet.adapter.charge_code(&charge).await.unwrap();
        let second = wallet.adapter.charge_code(&charge).await.unwrap();
        assert_eq!(first, second);

        let mut changed = charge.clone();
        changed.amount = mop("13.00");
        assert!(matches!(
            wallet.adapter.charge_code(&changed).await,
            Err(AdapterError::Rejected { code, .. }) if code == "REPEAT_REQ_INCONSISTENT"
        ));
        // One payment, one statement row.
        let ChargeOutcome::Succeeded { paid_at, .. } = first else {
            panic!("not paid: {first:?}");
        };
        let csv = wallet.statement(macau_day(paid_at.unwrap())).await;
        assert_eq!(csv.matches("ord_repeat").count(), 1, "{csv}");
    }

    #[tokio::test]
    async fn close_refuses_a_paid_payment_and_only_reverse_gives_the_money_back() {
        let wallet = Wallet::start(FAST).await;
        let code = wallet.test_code("MPAY", "pays_at_once").await;
        let outcome = wallet
            .adapter
            .charge_code(&wallet.charge("ord_reverse", "15.00", &code))
            .await
            .unwrap();
        let ChargeOutcome::Succeeded {
            wallet_ref,
            paid_at,
            ..
        } = outcome
        else {
            panic!("{outcome:?}");
        };
        let order = OrderRef {
            order_id: "ord_reverse".into(),
            wallet_ref: Some(wallet_ref.clone()),
        };
        assert!(matches!(
            wallet.adapter.close(&order).await,
            Err(AdapterError::Rejected { code, .. }) if code == "ORDER_IS_PAID"
        ));
        assert!(wallet.query("ord_reverse").await.unwrap().is_paid());
        let day = macau_day(paid_at.unwrap());
        assert!(
            !wallet.statement(day).await.contains(",CANCEL,"),
            "nothing reversed"
        );

        // The reversal is its own, explicitly named call.
        wallet.adapter.reverse(&order).await.unwrap();
        assert_eq!(
            wallet.query("ord_reverse").await.unwrap(),
            WalletStatus::Closed
        );
        let csv = wallet.statement(day).await;
        assert!(
            csv.contains(&format!(",{wallet_ref},{MPAY},CANCEL,1500,MOP,")),
            "{csv}"
        );
    }

    #[tokio::test]
    async fn legacy_alipay_codes_from_the_shared_code_space_are_paid_by_alipay_cn() {
        let wallet = Wallet::start(FAST).await;
        // The 18-digit `28...` form, as the Alipay sandbox issues it.
        let code = wallet.test_code("ALIPAY_CN", "pays_at_once").await;
        assert!(code.len() == 18 && code.starts_with("28"), "{code}");
        match wallet
            .adapter
            .charge_code(&wallet.charge("ord_cn_code", "9.90", &code))
            .await
            .unwrap()
        {
            ChargeOutcome::Succeeded { brand, amount, .. } => {
                assert_eq!(brand.as_deref(), Some(ALIPAY_CN));
                assert_eq!(amount, mop("9.90"));
            }
            other => panic!("{other:?}"),
        }
        let alipay_sandbox_code = format!("28{}0000", "1".repeat(12));
        assert!(matches!(
            wallet
                .adapter
                .charge_code(&wallet.charge("ord_cn_code_2", "1.00", &alipay_sandbox_code))
                .await
                .unwrap(),
            ChargeOutcome::Succeeded { brand: Some(b), .. } if b == ALIPAY_CN
        ));
        // 16 digits is Alipay CN's shortest code but not an Alipay+ form.
        assert!(matches!(
            wallet
                .adapter
                .charge_code(&wallet.charge("ord_cn_code_3", "1.00", "2812345678900000"))
                .await
                .unwrap(),
            ChargeOutcome::Failed { code, .. } if code == "USER_NOT_EXIST"
        ));
    }

    // ---------------------------------------------------------------------------------
    // Refunds

    async fn paid_order(wallet: &Wallet, order_id: &str, amount: &str) -> (String, DateTime<Utc>) {
        let code = wallet.test_code("MPAY", "pays_at_once").await;
        match wallet
            .adapter
            .charge_code(&wallet.charge(order_id, amount, &code))
            .await
            .unwrap()
        {
            ChargeOutcome::Succeeded {
                wallet_ref,
                paid_at,
                ..
            } => (wallet_ref, paid_at.unwrap()),
            other => panic!("{other:?}"),
        }
    }

    fn refund(
        order_id: &str,
        wallet_ref: Option<&str>,
        refund_id: &str,
        amount: &str,
        total: &str,
    ) -> RefundRequest {
        RefundRequest {
            order_id: order_id.into(),
            wallet_ref: wallet_ref.map(str::to_owned),
            refund_id: refund_id.into(),
            amount: mop(amount),
            total: mop(total),
            reason: Some("customer returned goods".into()),
            notify_url: None,
        }
    }

    #[tokio::test]
    async fn partial_refunds_then_the_rest_and_an_over_refund_is_refused() {
        let wallet = Wallet::start(FAST).await;
        let (payment_id, paid_at) = paid_order(&wallet, "ord_refund", "25.50").await;
        let id = Some(payment_id.as_str());
        for (refund_id, amount) in [("rf_1", "5.00"), ("rf_2", "10.00")] {
            let outcome = wallet
                .adapter
                .refund(&refund("ord_refund", id, refund_id, amount, "25.50"))
                .await
                .unwrap();
            assert!(matches!(
                outcome,
                RefundOutcome::Succeeded {
                    wallet_refund_ref: Some(_)
                }
            ));
        }
        let over = wallet
            .adapter
            .refund(&refund("ord_refund", id, "rf_3", "10.51", "25.50"))
            .await;
        assert!(
            matches!(&over, Err(AdapterError::Rejected { code, .. }) if code == "REFUND_AMOUNT_EXCEED"),
            "{over:?}"
        );
        let rest = wallet
            .adapter
            .refund(&refund("ord_refund", id, "rf_4", "10.50", "25.50"))
            .await
            .unwrap();
        assert!(matches!(rest, RefundOutcome::Succeeded { .. }));
        let nothing_left = wallet
            .adapter
            .refund(&refund("ord_refund", id, "rf_5", "0.01", "25.50"))
            .await;
        assert!(matches!(nothing_left, Err(AdapterError::Rejected { .. })));

        let day = macau_day(paid_at);
        let csv = format!(
            "{}{}",
            wallet.statement(day).await,
            wallet.statement(day.succ_opt().unwrap()).await
        );
        assert!(
            csv.contains(&format!(
                "{payment_id},ord_refund,,{MPAY},PAYMENT,2550,MOP,"
            )),
            "{csv}"
        );
        for (refund_id, value) in [("rf_1", "500"), ("rf_2", "1000"), ("rf_4", "1050")] {
            assert!(
                csv.contains(&format!(
                    ",{refund_id},{payment_id},{MPAY},REFUND,{value},MOP,"
                )),
                "{refund_id}: {csv}"
            );
        }
        assert!(!csv.contains("rf_3") && !csv.contains("rf_5"));
    }

    #[tokio::test]
    async fn retried_refund_id_is_idempotent_and_works_without_the_payment_id() {
        let wallet = Wallet::start(FAST).await;
        let (_, paid_at) = paid_order(&wallet, "ord_refund_twice", "20.00").await;
        let request = refund("ord_refund_twice", None, "rf_same", "7.00", "20.00");
        let first = wallet.adapter.refund(&request).await.unwrap();
        let second = wallet.adapter.refund(&request).await.unwrap();
        assert_eq!(first, second);
        let mut changed = request.clone();
        changed.amount = mop("8.00");
        assert!(matches!(
            wallet.adapter.refund(&changed).await,
            Err(AdapterError::Rejected { code, .. }) if code == "REPEAT_REQ_INCONSISTENT"
        ));
        // 13.00 is left: one refund of 7.00 moved, not two.
        let rest = wallet
            .adapter
            .refund(&refund(
                "ord_refund_twice",
                None,
                "rf_rest",
                "13.00",
                "20.00",
            ))
            .await;
        assert!(
            matches!(rest, Ok(RefundOutcome::Succeeded { .. })),
            "{rest:?}"
        );
        let day = macau_day(paid_at);
        let csv = format!(
            "{}{}",
            wallet.statement(day).await,
            wallet.statement(day.succ_opt().unwrap()).await
        );
        assert_eq!(csv.matches(",rf_same,").count(), 1, "{csv}");
    }

    #[tokio::test]
    async fn refund_of_an_unpaid_order_is_refused() {
        let wallet = Wallet::start(FAST).await;
        let created = wallet.entry_order("ord_unpaid", "5.00").await;
        let outcome = wallet
            .adapter
            .refund(&refund(
                "ord_unpaid",
                created.wallet_ref.as_deref(),
                "rf_unpaid",
                "1.00",
                "5.00",
            ))
            .await;
        assert!(
            matches!(&outcome, Err(AdapterError::Rejected { code, .. }) if code == "ORDER_STATUS_INVALID"),
            "{outcome:?}"
        );
    }

    // ---------------------------------------------------------------------------------
    // Callbacks

    #[tokio::test]
    async fn wrong_ack_is_retried_per_schedule_until_acknowledged() {
        let wallet = Wallet::start(FAST).await;
        *wallet.receiver.mode.lock().unwrap() = ReceiverMode::WrongAck;
        let cashier = redirect_url(&wallet.entry_order("ord_retry", "3.00").await);
        wallet.pay_on_cashier(&cashier).await;
        let log = wallet.wait_for_deliveries(|log| log.len() >= 3).await;
        for (i, attempt) in log.iter().take(3).enumerate() {
            assert_eq!(attempt["attempt"], i as u64 + 1);
            assert_eq!(attempt["status"], 200);
            assert_eq!(attempt["acked"], false);
        }
        // Attempt 2 came one compressed 2-minute slot after attempt 1.
        let times: Vec<DateTime<Utc>> = wallet
            .receiver
            .raw
            .lock()
            .unwrap()
            .iter()
            .map(RawCallback::received_at)
            .collect();
        assert!(
            times[1] - times[0] >= chrono::Duration::milliseconds(100),
            "{times:?}"
        );

        *wallet.receiver.mode.lock().unwrap() = ReceiverMode::Correct;
        let log = wallet
            .wait_for_deliveries(|log| log.iter().any(|d| d["acked"] == true))
            .await;
        let acked = log.iter().find(|d| d["acked"] == true).unwrap();
        assert!(acked["attempt"].as_u64().unwrap() >= 4);
        // Every attempt carried the same, verifiable event.
        let events = wallet.events();
        assert!(events.len() >= 4 && events.iter().all(|e| *e == events[0]));
    }

    #[tokio::test]
    async fn a_retried_notification_resends_the_first_request_time_and_still_verifies() {
        // 100x: the 2-minute first retry comes 1.2 s later, past the header's 1 s resolution.
        let wallet = Wallet::start(TimeScale { speedup: 100 }).await;
        *wallet.receiver.mode.lock().unwrap() = ReceiverMode::WrongAck;
        let cashier = redirect_url(&wallet.entry_order("ord_resend", "3.00").await);
        wallet.pay_on_cashier(&cashier).await;
        wallet.wait_for_deliveries(|log| log.len() >= 2).await;
        *wallet.receiver.mode.lock().unwrap() = ReceiverMode::Correct;
        let attempts: Vec<RawCallback> = wallet.receiver.raw.lock().unwrap()[..2].to_vec();
        for name in ["client-id", "request-time", "signature"] {
            assert_eq!(attempts[0].header(name), attempts[1].header(name), "{name}");
        }
        assert_eq!(attempts[0].body(), attempts[1].body(), "same bytes");
        // Both attempts verified with the adapter, under the one signature.
        assert!(wallet.events().len() >= 2);
        // Received a day later, the same bytes still pass the default window, and
        // the event id is the same, so the gateway applies it once.
        let late = RawCallback::new(
            "POST",
            attempts[1].path(),
            attempts[1].headers().to_vec(),
            attempts[1].body().to_vec(),
            attempts[1].received_at() + chrono::Duration::hours(24),
        );
        let event = wallet.adapter.verify_callback(&late).unwrap();
        assert_eq!(event.event_id(), wallet.events()[0].event_id());
    }

    #[tokio::test]
    async fn duplicated_callbacks_give_identical_events() {
        let wallet = Wallet::start(FAST).await;
        wallet.set_faults(json!({"duplicate_callbacks": 2})).await;
        let cashier = redirect_url(&wallet.entry_order("ord_dup", "4.00").await);
        wallet.pay_on_cashier(&cashier).await;
        let events = wallet.wait_for_events(3).await;
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| *e == events[0]));
        assert_eq!(events[0].event_id(), events[2].event_id());
    }

    #[tokio::test]
    async fn forged_callbacks_are_rejected() {
        let wallet = Wallet::start(FAST).await;
        let cashier = redirect_url(&wallet.entry_order("ord_forge", "6.00").await);
        wallet.pay_on_cashier(&cashier).await;
        wallet.wait_for_events(1).await;
        let genuine = wallet.receiver.raw.lock().unwrap()[0].clone();
        assert!(wallet.adapter.verify_callback(&genuine).is_ok());

        let rebuild = |headers: Vec<(String, String)>, body: Vec<u8>, received: DateTime<Utc>| {
            RawCallback::new("POST", genuine.path(), headers, body, received)
        };
        let with_header = |name: &str, value: Option<String>| {
            let mut headers: Vec<(String, String)> = genuine
                .headers()
                .iter()
                .filter(|(n, _)| n != name)
                .cloned()
                .collect();
            if let Some(value) = value {
                headers.push((name.to_owned(), value));
            }
            headers
        };
        let time = genuine.header("request-time").unwrap().to_owned();
        let resign = |key: &RsaPrivateKey, time: &str| {
            let signature = wire::sign(
                key,
                1,
                genuine.path(),
                LOCAL_CLIENT_ID,
                time,
                genuine.body(),
            )
            .unwrap();
            let mut headers = with_header("signature", Some(signature));
            headers.retain(|(n, _)| n != "request-time");
            headers.push(("request-time".to_owned(), time.to_owned()));
            headers
        };

        let mut flipped = genuine.body().to_vec();
        let at = flipped.iter().position(|b| *b == b'6').unwrap();
        flipped[at] = b'9';
        let other_key = RsaPrivateKey::generate_2048().unwrap();
        let stale = wire::format_time(&(genuine.received_at() - chrono::Duration::hours(37)));
        let forged = [
            (
                "one byte of the body flipped",
                rebuild(genuine.headers().to_vec(), flipped, genuine.received_at()),
            ),
            (
                "a garbage signature",
                rebuild(
                    with_header(
                        "signature",
                        Some("algorithm=RSA256,keyVersion=1,signature=AAAA".into()),
                    ),
                    genuine.body().to_vec(),
                    genuine.received_at(),
                ),
            ),
            (
                "signed by another key",
                rebuild(
                    resign(&other_key, &time),
                    genuine.body().to_vec(),
                    genuine.received_at(),
                ),
            ),
            (
                "no signature",
                rebuild(
                    with_header("signature", None),
                    genuine.body().to_vec(),
                    genuine.received_at(),
                ),
            ),
            (
                "no request time",
                rebuild(
                    with_header("request-time", None),
                    genuine.body().to_vec(),
                    genuine.received_at(),
                ),
            ),
            (
                "no client id",
                rebuild(
                    with_header("client-id", None),
                    genuine.body().to_vec(),
                    genuine.received_at(),
                ),
            ),
            (
                "a validly signed but stale request time",
                rebuild(
                    resign(&wallet.keys.wallet, &stale),
                    genuine.body().to_vec(),
                    genuine.received_at(),
                ),
            ),
            (
                "a genuine callback replayed 37 hours later",
                rebuild(
                    genuine.headers().to_vec(),
                    genuine.body().to_vec(),
                    genuine.received_at() + chrono::Duration::hours(37),
                ),
            ),
        ];
        for (what, cb) in &forged {
            assert_eq!(
                wallet.adapter.verify_callback(cb),
                Err(AdapterError::BadSignature),
                "{what}"
            );
        }
        // With a 5-minute window configured, a replay 6 minutes later is refused.
        let mut config = AlipayPlusConfig::new(
            &wallet.base,
            LOCAL_CLIENT_ID,
            copy(&wallet.keys.merchant),
            wallet.keys.wallet.public_key().unwrap(),
        );
        config.notify_window = Duration::from_secs(5 * 60);
        let narrow = AlipayPlusAdapter::new(config).unwrap();
        assert!(narrow.verify_callback(&genuine).is_ok());
        let replayed = rebuild(
            genuine.headers().to_vec(),
            genuine.body().to_vec(),
            genuine.received_at() + chrono::Duration::minutes(6),
        );
        assert_eq!(
            narrow.verify_callback(&replayed),
            Err(AdapterError::BadSignature)
        );
        assert!(wallet.adapter.verify_callback(&replayed).is_ok());
        // The forging harness itself is sound: re-signed with the wallet key and a
        // fresh time, the same body verifies.
        let fresh = wire::format_time(&Utc::now());
        assert!(
            wallet
                .adapter
                .verify_callback(&rebuild(
                    resign(&copy(&wallet.keys.wallet), &fresh),
                    genuine.body().to_vec(),
                    Utc::now()
                ))
                .is_ok()
        );
        let refusal = wallet.adapter.ack(Ack::Rejected);
        let body: Value = serde_json::from_slice(&refusal.body).unwrap();
        assert_eq!(body["result"]["resultStatus"], "F");
        assert_ne!(refusal.status, 200);
    }

    // ---------------------------------------------------------------------------------
    // Authentication of our requests and of the wallet's answers

    #[tokio::test]
    async fn request_signed_with_another_merchant_key_is_refused_and_creates_nothing() {
        let wallet = Wallet::start(FAST).await;
        let impostor =
            wallet.adapter_with(RsaPrivateKey::generate_2048().unwrap(), &wallet.keys.wallet);
        let outcome = impostor
            .create_order(&wallet.order("ord_impostor", "1.00", PayMode::StaticEntry))
            .await;
        assert!(
            matches!(&outcome, Err(AdapterError::Rejected { code, .. }) if code == "INVALID_SIGNATURE"),
            "{outcome:?}"
        );
        assert!(matches!(
            wallet.query("ord_impostor").await,
            Err(AdapterError::Rejected { code, .. }) if code == "ORDER_NOT_EXIST"
        ));
    }

    #[tokio::test]
    async fn answer_that_does_not_verify_with_the_wallet_key_is_a_bad_signature() {
        let wallet = Wallet::start(FAST).await;
        let misconfigured = wallet.adapter_with(
            copy(&wallet.keys.merchant),
            &RsaPrivateKey::generate_2048().unwrap(),
        );
        let outcome = misconfigured
            .create_order(&wallet.order("ord_wrong_wallet_key", "1.00", PayMode::StaticEntry))
            .await;
        assert_eq!(outcome, Err(AdapterError::BadSignature));
    }

    #[tokio::test]
    async fn injected_server_error_is_a_retryable_transport_error() {
        let wallet = Wallet::start(FAST).await;
        wallet.set_faults(json!({"fail_requests": 1})).await;
        let order = wallet.order("ord_500", "2.00", PayMode::StaticEntry);
        let first = wallet.adapter.create_order(&order).await;
        assert!(
            matches!(
                &first,
                Err(AdapterError::Transport {
                    retryable: true,
                    ..
                })
            ),
            "{first:?}"
        );
        // The retry with the same id goes through.
        assert!(wallet.adapter.create_order(&order).await.is_ok());
    }

    #[tokio::test]
    async fn an_unsigned_http_4xx_is_a_non_retryable_transport_error_never_a_refusal() {
        let wallet = Wallet::start(FAST).await;
        for status in [400u16, 403, 404] {
            wallet.set_faults(json!({"http_status": [status]})).await;
            let order_id = format!("ord_http_{status}");
            let order = wallet.order(&order_id, "2.00", PayMode::StaticEntry);
            let first = wallet.adapter.create_order(&order).await;
            assert!(
                matches!(
                    &first,
                    Err(AdapterError::Transport { retryable: false, message }) if message.contains(&status.to_string())
                ),
                "{status}: {first:?}"
            );
            // Nothing reached the wallet; once the path is clear the same id works.
            assert!(matches!(
                wallet.query(&order_id).await,
                Err(AdapterError::Rejected { code, .. }) if code == "ORDER_NOT_EXIST"
            ));
            assert!(wallet.adapter.create_order(&order).await.is_ok());
        }
        // A refund meeting a 4xx stays undecided (the gateway keeps it pending).
        let (payment_id, _) = paid_order(&wallet, "ord_http_refund", "5.00").await;
        wallet.set_faults(json!({"http_status": [403]})).await;
        let refund = RefundRequest {
            order_id: "ord_http_refund".into(),
            wallet_ref: Some(payment_id),
            refund_id: "rf_http".into(),
            amount: mop("1.00"),
            total: mop("5.00"),
            reason: None,
            notify_url: None,
        };
        assert!(matches!(
            wallet.adapter.refund(&refund).await,
            Err(AdapterError::Transport {
                retryable: false,
                ..
            })
        ));
        assert!(matches!(
            wallet.adapter.refund(&refund).await,
            Ok(RefundOutcome::Succeeded { .. })
        ));
    }

    #[tokio::test]
    async fn empty_merchant_fields_are_omitted_and_the_wallet_refuses_any_empty_string() {
        let wallet = Wallet::start(FAST).await;
        let mut order = wallet.order("ord_no_ids", "2.00", PayMode::StaticEntry);
        order.merchant = MerchantInfo {
            merchant_id: " ".into(),
            name: String::new(),
            mcc: String::new(),
            city: String::new(),
            country: String::new(),
            store_id: Some(String::new()),
            store_name: Some(String::new()),
            ..MerchantInfo::default()
        };
        order.description = String::new();
        // Omitted, not sent as "": the wallet names the missing field.
        assert!(matches!(
            wallet.adapter.create_order(&order).await,
            Err(AdapterError::Rejected { code, message }) if code == "PARAM_ILLEGAL" && message.contains("referenceMerchantId is required")
        ));
        let mut order = wallet.order("ord_no_store", "2.00", PayMode::StaticEntry);
        order.merchant.store_id = Some(String::new());
        order.merchant.store_name = None;
        order.merchant.name = String::new();
        order.description = "  ".into();
        assert!(wallet.adapter.create_order(&order).await.is_ok());

        // A request that does carry "" is refused, whatever the field.
        let body = json!({
            "paymentRequestId": "ord_empty_string",
            "paymentId": "",
        })
        .to_string();
        let time = wire::format_time(&Utc::now());
        let path = format!("/sandbox/alipay_plus{}", wire::INQUIRY_PATH);
        let signature = wire::sign(
            &wallet.keys.merchant,
            1,
            &path,
            LOCAL_CLIENT_ID,
            &time,
            body.as_bytes(),
        )
        .unwrap();
        let answer: Value = wallet
            .http
            .post(format!("{}{}", wallet.base, wire::INQUIRY_PATH))
            .header(wire::HEADER_CLIENT_ID, LOCAL_CLIENT_ID)
            .header(wire::HEADER_REQUEST_TIME, &time)
            .header(wire::HEADER_SIGNATURE, signature)
            .header("Content-Type", "application/json; charset=UTF-8")
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["result"]["resultCode"], "PARAM_ILLEGAL", "{answer}");
        assert!(
            answer["result"]["resultMessage"]
                .as_str()
                .unwrap()
                .contains("paymentId"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn the_user_agent_names_the_wallet_and_the_brand_hint_is_only_a_fallback() {
        let wallet = Wallet::start(FAST).await;
        // An AlipayHK in-app browser, whatever the hint says.
        let mut order = wallet.order("ord_hint_ua", "8.00", PayMode::StaticEntry);
        order.user_agent = Some(HK_USER_AGENT.into());
        let created = wallet.adapter.create_order(&order).await.unwrap();
        wallet.pay_on_cashier(&redirect_url(&created)).await;
        match wallet.query("ord_hint_ua").await.unwrap() {
            WalletStatus::Succeeded { brand, .. } => assert_eq!(brand.as_deref(), Some(ALIPAY_HK)),
            other => panic!("{other:?}"),
        }
        // A hint the wallet does not know is ignored, not a refusal.
        let mut order = wallet.order("ord_hint_unknown", "8.00", PayMode::DynamicQr);
        order.user_agent = None;
        order.brand_params = BTreeMap::from([("psp".to_owned(), "NOT_A_WALLET".to_owned())]);
        let created = wallet.adapter.create_order(&order).await.unwrap();
        let PayAction::QrString { data } = created.action else {
            panic!("{:?}", created.action);
        };
        wallet.pay_on_cashier(&data).await;
        match wallet.query("ord_hint_unknown").await.unwrap() {
            WalletStatus::Succeeded { brand, .. } => assert_eq!(brand.as_deref(), Some(MPAY)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn answer_slower_than_the_timeout_is_a_retryable_transport_error() {
        let wallet = Wallet::start(FAST).await;
        wallet.set_faults(json!({"slow_ms": 1500})).await;
        let mut config = AlipayPlusConfig::new(
            &wallet.base,
            LOCAL_CLIENT_ID,
            copy(&wallet.keys.merchant),
            wallet.keys.wallet.public_key().unwrap(),
        );
        config.timeout = Duration::from_millis(300);
        let impatient = AlipayPlusAdapter::new(config).unwrap();
        let outcome = impatient
            .query(&OrderRef {
                order_id: "ord_slow".into(),
                wallet_ref: None,
            })
            .await;
        assert!(
            matches!(
                &outcome,
                Err(AdapterError::Transport {
                    retryable: true,
                    ..
                })
            ),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn repeated_entry_order_returns_the_same_cashier_and_sends_nothing() {
        let wallet = Wallet::start(FAST).await;
        let created = wallet.entry_order("ord_same", "1.00").await;
        let payment_id = created.wallet_ref.clone().unwrap();
        let again = wallet.entry_order("ord_same", "1.00").await;
        assert_eq!(again, created);
        assert_eq!(
            redirect_url(&again),
            format!("{}/pay/{payment_id}", wallet.base)
        );
        assert!(wallet.sandbox.deliveries().is_empty());
    }
}
