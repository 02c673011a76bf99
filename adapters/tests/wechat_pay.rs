//! WeChat Pay adapter against its sandbox, over real HTTP: the sandbox is mounted at
//! `/sandbox/wechat_pay` on a test server that also receives the callbacks at
//! `/webhooks/wechat_pay` (verify with the adapter, record, answer the adapter's ack).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use sesame_adapters::contract::{
    Ack, AdapterError, ChargeCode, ChargeOutcome, CreateOrder, MerchantInfo, OrderRef, PayAction,
    PayMode, RawCallback, RefundOutcome, RefundRequest, WalletAdapter, WalletEvent, WalletStatus,
};
use sesame_adapters::crypto::{Aes256GcmKey, RsaPrivateKey};
use sesame_adapters::money::{Currency, Money};
use sesame_adapters::sandbox::{LocalKeys, TimeScale};
use sesame_adapters::wechat_pay::wire::{self, SecretText};
use sesame_adapters::wechat_pay::{WechatPayAdapter, WechatPayConfig, local};

const FAST: TimeScale = TimeScale { speedup: 1000 };

struct Receiver {
    adapter: Arc<WechatPayAdapter>,
    events: Mutex<Vec<WalletEvent>>,
    raw: Mutex<Vec<RawCallback>>,
    wrong_ack: AtomicBool,
}

struct TestWallet {
    base: String,
    sandbox_url: String,
    adapter: Arc<WechatPayAdapter>,
    keys: LocalKeys,
    receiver: Arc<Receiver>,
    http: reqwest::Client,
}

async fn receive(req: HttpRequest, body: web::Bytes, rx: web::Data<Receiver>) -> HttpResponse {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let cb = RawCallback::new(
        req.method().as_str(),
        &path,
        headers,
        body.to_vec(),
        Utc::now(),
    );
    rx.raw.lock().unwrap().push(cb.clone());
    let ack = match rx.adapter.verify_callback(&cb) {
        Ok(event) => {
            rx.events.lock().unwrap().push(event);
            Ack::Processed
        }
        Err(_) => Ack::Rejected,
    };
    if rx.wrong_ack.load(Ordering::SeqCst) {
        // Alipay's answer: WeChat must not take it as an acknowledgement.
        return HttpResponse::Ok().body("success");
    }
    let answer = rx.adapter.ack(ack);
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(answer.status).unwrap());
    if let Some(content_type) = answer.content_type {
        response.content_type(content_type);
    }
    response.body(answer.body)
}

async fn spawn_wallet(time: TimeScale) -> TestWallet {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let sandbox_url = format!("{base}/sandbox/wechat_pay");
    let keys = LocalKeys::generate().unwrap();
    let (adapter, sandbox) = local(&sandbox_url, &keys, time).unwrap();
    let adapter = Arc::new(adapter);
    let receiver = Arc::new(Receiver {
        adapter: adapter.clone(),
        events: Mutex::new(Vec::new()),
        raw: Mutex::new(Vec::new()),
        wrong_ack: AtomicBool::new(false),
    });
    let (server_sandbox, server_receiver) = (sandbox.clone(), receiver.clone());
    let server = HttpServer::new(move || {
        let sandbox = server_sandbox.clone();
        App::new()
            .service(web::scope("/sandbox/wechat_pay").configure(|c| sandbox.configure(c)))
            .app_data(web::Data::from(server_receiver.clone()))
            .route("/webhooks/wechat_pay", web::post().to(receive))
    })
    .workers(2)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    TestWallet {
        base,
        sandbox_url,
        adapter,
        keys,
        receiver,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

fn mop(amount: &str) -> Money {
    Money::parse(amount, Currency::Mop).unwrap()
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl TestWallet {
    fn notify_url(&self) -> String {
        format!("{}/webhooks/wechat_pay", self.base)
    }

    fn order(&self, order_id: &str, amount: Money, mode: PayMode) -> CreateOrder {
        CreateOrder {
            order_id: order_id.into(),
            amount,
            description: "Galão and pastel de nata".into(),
            expires_at: Utc::now() + chrono::Duration::minutes(15),
            notify_url: self.notify_url(),
            return_url: None,
            mode,
            payer_id: None,
            user_agent: None,
            brand_params: BTreeMap::new(),
            merchant: MerchantInfo {
                merchant_id: "m_1".into(),
                name: "Café Sesame".into(),
                mcc: "5812".into(),
                city: "Macau".into(),
                country: "MO".into(),
                ..MerchantInfo::default()
            },
        }
    }

    fn charge(&self, order_id: &str, amount: Money, code: &str) -> ChargeCode {
        ChargeCode {
            order_id: order_id.into(),
            amount,
            auth_code: code.into(),
            description: "Till 1".into(),
            notify_url: None,
            brand_params: BTreeMap::new(),
            merchant: MerchantInfo::default(),
        }
    }

    fn refund(&self, order_id: &str, refund_id: &str, amount: &str, total: &str) -> RefundRequest {
        RefundRequest {
            order_id: order_id.into(),
            wallet_ref: None,
            refund_id: refund_id.into(),
            amount: mop(amount),
            total: mop(total),
            reason: Some("returned".into()),
            notify_url: Some(self.notify_url()),
        }
    }

    /// Another adapter on the same sandbox, with `change` applied to its config.
    fn adapter_with(&self, change: impl FnOnce(&mut WechatPayConfig)) -> WechatPayAdapter {
        let mut config = WechatPayConfig::local(&self.sandbox_url, &self.keys).unwrap();
        change(&mut config);
        WechatPayAdapter::new(config).unwrap()
    }

    async fn query(&self, order_id: &str) -> Result<WalletStatus, AdapterError> {
        self.adapter
            .query(&OrderRef {
                order_id: order_id.into(),
                wallet_ref: None,
            })
            .await
    }

    async fn post(&self, path: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.sandbox_url))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.sandbox_url))
            .send()
            .await
            .unwrap()
    }

    async fn set_faults(&self, plan: Value) {
        let response = self
            .http
            .post(format!("{}/faults", self.sandbox_url))
            .json(&plan)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    async fn deliveries(&self) -> Vec<Value> {
        self.get("/deliveries").await.json().await.unwrap()
    }

    async fn test_code(&self, behaviour: &str) -> String {
        let codes: Vec<Value> = self.get("/test-codes").await.json().await.unwrap();
        codes
            .iter()
            .find(|c| c["behaviour"] == behaviour)
            .and_then(|c| c["code"].as_str())
            .unwrap()
            .to_owned()
    }

    fn events(&self) -> Vec<WalletEvent> {
        self.receiver.events.lock().unwrap().clone()
    }

    async fn paid_native_order(&self, order_id: &str, amount: Money) -> String {
        self.adapter
            .create_order(&self.order(order_id, amount, PayMode::DynamicQr))
            .await
            .unwrap();
        assert_eq!(
            self.post(&format!("/pay/{order_id}/confirm"))
                .await
                .status(),
            200
        );
        match self.query(order_id).await.unwrap() {
            WalletStatus::Succeeded { wallet_ref, .. } => wallet_ref,
            other => panic!("not paid: {other:?}"),
        }
    }

    /// A callback WeChat could have sent: `resource` sealed with the APIv3 key,
    /// signed with `signer` under `serial` at `timestamp`.
    fn craft_callback(
        &self,
        event_type: &str,
        original_type: &str,
        resource: &Value,
        signer: &RsaPrivateKey,
        timestamp: i64,
    ) -> RawCallback {
        let key = Aes256GcmKey::new(&self.keys.secret).unwrap();
        let sealed = wire::encrypt_resource(
            &key,
            original_type,
            "a1b2c3d4e5f6",
            original_type,
            resource.to_string().as_bytes(),
        )
        .unwrap();
        let body = json!({
            "id": "EV-crafted-1",
            "create_time": "2024-05-01T12:00:00+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "crafted",
            "resource": sealed,
        })
        .to_string();
        self.sign_raw(body.into_bytes(), signer, timestamp)
    }

    fn sign_raw(&self, body: Vec<u8>, signer: &RsaPrivateKey, timestamp: i64) -> RawCallback {
        let ts = timestamp.to_string();
        let signature = signer
            .sign_base64(&wire::wechatpay_message(&ts, "crafted-nonce", &body))
            .unwrap();
        RawCallback::new(
            "POST",
            "/webhooks/wechat_pay",
            vec![
                (
                    "Wechatpay-Serial".to_owned(),
                    self.adapter.config().wallet_public_key_id.clone(),
                ),
                ("Wechatpay-Signature".to_owned(), signature),
                ("Wechatpay-Timestamp".to_owned(), ts),
                ("Wechatpay-Nonce".to_owned(), "crafted-nonce".to_owned()),
            ],
            body,
            Utc::now(),
        )
    }
}

fn with_headers(cb: &RawCallback, change: impl Fn(&str, &str) -> Option<String>) -> RawCallback {
    RawCallback::new(
        cb.method(),
        cb.path(),
        cb.headers()
            .iter()
            .filter_map(|(n, v)| change(n, v).map(|v| (n.clone(), v))),
        cb.body().to_vec(),
        cb.received_at(),
    )
}

fn at(cb: &RawCallback, received_at: DateTime<Utc>) -> RawCallback {
    RawCallback::new(
        cb.method(),
        cb.path(),
        cb.headers().to_vec(),
        cb.body().to_vec(),
        received_at,
    )
}

// ---------------------------------------------------------------------------------
// Native, JSAPI, OAuth
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn native_qr_order_is_paid_on_the_cashier_and_its_signed_callback_is_acknowledged() {
    let w = spawn_wallet(FAST).await;
    let order = w.order("o_native_0001", mop("8.80"), PayMode::DynamicQr);
    let created = w.adapter.create_order(&order).await.unwrap();
    let PayAction::QrString { data: code_url } = created.action else {
        panic!("expected a QR string, got {:?}", created.action);
    };
    assert!(
        code_url.starts_with("weixin://wxpay/bizpayurl?pr="),
        "{code_url}"
    );
    let again = w.adapter.create_order(&order).await.unwrap();
    assert_eq!(
        again.action,
        PayAction::QrString {
            data: code_url.clone()
        },
        "create is idempotent"
    );
    assert_eq!(
        w.query("o_native_0001").await.unwrap(),
        WalletStatus::Pending
    );

    let pr = code_url.split("pr=").nth(1).unwrap();
    let scanned = w.get(&format!("/bizpayurl?pr={pr}")).await;
    assert_eq!(scanned.status(), 303);
    assert!(
        scanned.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("/pay/o_native_0001")
    );
    let page = w.get("/pay/o_native_0001").await.text().await.unwrap();
    assert!(
        page.contains("8.80 MOP") && page.contains("Merchant 1900000109"),
        "{page}"
    );

    assert_eq!(w.post("/pay/o_native_0001/confirm").await.status(), 200);
    let event = eventually("the payment callback", async || {
        w.events().into_iter().next()
    })
    .await;
    let WalletEvent::PaymentSucceeded {
        order_id,
        wallet_ref,
        amount,
        event_id,
        paid_at,
        ..
    } = event
    else {
        panic!("unexpected event {event:?}");
    };
    assert_eq!(order_id, "o_native_0001");
    assert_eq!(amount, mop("8.80"));
    assert!(
        wallet_ref.starts_with("4200") && wallet_ref.len() == 28,
        "{wallet_ref}"
    );
    assert!(event_id.starts_with("EV-"));
    assert!(paid_at.is_some());
    match w.query("o_native_0001").await.unwrap() {
        WalletStatus::Succeeded {
            wallet_ref: queried,
            amount,
            ..
        } => {
            assert_eq!((queried, amount), (wallet_ref, mop("8.80")));
        }
        other => panic!("{other:?}"),
    }
    // The ack (204, no body) stopped the retry schedule: one acknowledged attempt,
    // and nothing after the first retry delay (15 s of wallet time = 15 ms) passes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deliveries = w.deliveries().await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0]["acked"], true);
    assert_eq!(deliveries[0]["status"], 204);
    assert!(matches!(
        w.adapter.create_order(&order).await,
        Err(AdapterError::Rejected { code, .. }) if code == "ORDERPAID"
    ));
}

#[tokio::test]
async fn jsapi_order_after_silent_oauth_is_paid_through_the_js_bridge() {
    let w = spawn_wallet(FAST).await;
    let redirect = format!("{}/q/plate_7?lang=pt", w.base);
    let authorize = w.adapter.oauth_authorize_url(&redirect, "st_42");
    assert!(authorize.contains("scope=snsapi_base") && authorize.ends_with("#wechat_redirect"));
    let answer = w.http.get(&authorize).send().await.unwrap();
    assert_eq!(answer.status(), 302);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{redirect}&code=")),
        "{location}"
    );
    assert!(location.ends_with("&state=st_42"), "{location}");
    let code = location
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let openid = w.adapter.exchange_oauth_code(code).await.unwrap();
    assert!(openid.starts_with('o') && openid.len() == 28, "{openid}");
    assert!(
        matches!(
            w.adapter.exchange_oauth_code(code).await,
            Err(AdapterError::Rejected { code, .. }) if code == "40163"
        ),
        "codes are single-use"
    );

    let mut order = w.order("o_jsapi_0001", mop("25.00"), PayMode::Jsapi);
    order.payer_id = Some(openid);
    let created = w.adapter.create_order(&order).await.unwrap();
    let PayAction::Jsapi { params } = created.action else {
        panic!("expected JSAPI params");
    };
    assert_eq!(
        params.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "appId",
            "nonceStr",
            "package",
            "paySign",
            "signType",
            "timeStamp"
        ]
    );
    assert_eq!(params["signType"], "RSA");
    assert_eq!(params["appId"], "wxd930ea5d5a258f4f");
    assert!(params["package"].starts_with("prepay_id=wx"));
    let time_stamp: i64 = params["timeStamp"].parse().unwrap();
    assert!(
        (Utc::now().timestamp() - time_stamp).abs() <= 5,
        "seconds, not milliseconds"
    );
    let message = wire::jsapi_message(
        &params["appId"],
        &params["timeStamp"],
        &params["nonceStr"],
        &params["package"],
    );
    w.keys
        .merchant
        .public_key()
        .unwrap()
        .verify_base64(message.as_bytes(), &params["paySign"])
        .unwrap();

    let bridge = format!("{}/jsbridge/getBrandWCPayRequest", w.sandbox_url);
    let mut forged = params.clone();
    forged.insert("nonceStr".into(), "another-nonce".into());
    let refused: Value = w
        .http
        .post(&bridge)
        .json(&forged)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refused["err_msg"], "get_brand_wcpay_request:fail");
    assert_eq!(
        w.query("o_jsapi_0001").await.unwrap(),
        WalletStatus::Pending
    );

    let paid: Value = w
        .http
        .post(&bridge)
        .json(&params)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paid["err_msg"], "get_brand_wcpay_request:ok");
    assert!(w.query("o_jsapi_0001").await.unwrap().is_paid());
    let event = eventually("the JSAPI callback", async || w.events().into_iter().next()).await;
    assert!(
        matches!(event, WalletEvent::PaymentSucceeded { ref order_id, .. } if order_id == "o_jsapi_0001")
    );
}

#[tokio::test]
async fn jsapi_needs_an_openid_the_wallet_issued() {
    let w = spawn_wallet(FAST).await;
    let mut order = w.order("o_jsapi_0002", mop("5.00"), PayMode::Jsapi);
    assert!(matches!(
        w.adapter.create_order(&order).await,
        Err(AdapterError::Unsupported(_))
    ));
    order.payer_id = Some("oNOTISSUEDBYTHISWALLET000000".into());
    assert!(matches!(
        w.adapter.create_order(&order).await,
        Err(AdapterError::Rejected { code, .. }) if code == "PARAM_ERROR"
    ));
    order.mode = PayMode::StaticEntry;
    assert!(matches!(
        w.adapter.create_order(&order).await,
        Err(AdapterError::Unsupported(_))
    ));
}

#[tokio::test]
async fn oauth_exchange_with_a_wrong_app_secret_or_unknown_code_is_refused() {
    let w = spawn_wallet(FAST).await;
    let answer = w
        .http
        .get(
            w.adapter
                .oauth_authorize_url("https://gw.example.mo/q/p", "s"),
        )
        .send()
        .await
        .unwrap();
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    let code = location
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let wrong = w.adapter_with(|c| c.app_secret = SecretText::new("0".repeat(32)));
    let refused = wrong.exchange_oauth_code(code).await;
    assert!(
        matches!(refused, Err(AdapterError::Rejected { ref code, .. }) if code == "40125"),
        "{refused:?}"
    );
    if let Err(e) = refused {
        assert!(
            !e.to_string().contains(&"0".repeat(32)),
            "the secret never reaches an error"
        );
    }
    assert!(matches!(
        w.adapter.exchange_oauth_code("not-a-code").await,
        Err(AdapterError::Rejected { code, .. }) if code == "40029"
    ));
    // The refused attempt did not burn the code.
    assert!(w.adapter.exchange_oauth_code(code).await.is_ok());
}

// ---------------------------------------------------------------------------------
// Customer codes (v2 micropay)
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn customer_code_that_pays_at_once_succeeds_and_a_retried_charge_reports_the_same_payment() {
    let w = spawn_wallet(FAST).await;
    let code = w.test_code("pays_at_once").await;
    assert!(code.len() == 18 && code.starts_with("13"), "{code}");
    let hkd = Money::parse("12.30", Currency::Hkd).unwrap();
    let charge = w.charge("o_code_0001", hkd, &code);
    let ChargeOutcome::Succeeded {
        wallet_ref,
        amount,
        paid_at,
        ..
    } = w.adapter.charge_code(&charge).await.unwrap()
    else {
        panic!("not paid at once");
    };
    assert_eq!(amount, hkd);
    assert!(paid_at.is_some());
    match w.query("o_code_0001").await.unwrap() {
        WalletStatus::Succeeded {
            wallet_ref: queried,
            amount,
            ..
        } => {
            assert_eq!((queried.as_str(), amount), (wallet_ref.as_str(), hkd));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        w.adapter
            .micropay_query("o_code_0001")
            .await
            .unwrap()
            .is_paid()
    );
    // A timeout-driven retry with the same order id: WeChat says ORDERPAID, the
    // adapter asks and reports the one payment.
    match w.adapter.charge_code(&charge).await.unwrap() {
        ChargeOutcome::Succeeded {
            wallet_ref: again, ..
        } => assert_eq!(again, wallet_ref),
        other => panic!("{other:?}"),
    }
    let codes: Vec<Value> = w.get("/test-codes").await.json().await.unwrap();
    assert_eq!(codes.len(), 3);
    assert!(codes.iter().all(|c| {
        let code = c["code"].as_str().unwrap();
        code.len() == 18 && code.starts_with("13") && code.bytes().all(|b| b.is_ascii_digit())
    }));
}

#[tokio::test]
async fn customer_code_needing_confirmation_is_pending_until_the_shopper_confirms() {
    // Real time, so the sandbox's own 10 s auto-confirm stays out of the way.
    let w = spawn_wallet(TimeScale::REAL_TIME).await;
    let code = w.test_code("needs_confirmation").await;
    let charge = w.charge("o_code_0002", mop("1500.00"), &code);
    assert_eq!(
        w.adapter.charge_code(&charge).await.unwrap(),
        ChargeOutcome::Pending
    );
    assert_eq!(w.query("o_code_0002").await.unwrap(), WalletStatus::Pending);
    assert_eq!(
        w.adapter.charge_code(&charge).await.unwrap(),
        ChargeOutcome::Pending,
        "a retry while confirming"
    );
    assert_eq!(
        w.post(&format!("/codes/{code}/confirm")).await.status(),
        200
    );
    match w.query("o_code_0002").await.unwrap() {
        WalletStatus::Succeeded { amount, .. } => assert_eq!(amount, mop("1500.00")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn customer_code_confirmed_by_the_shopper_is_settled_by_the_pos_flow() {
    let w = spawn_wallet(FAST).await;
    let patient = w.adapter_with(|c| {
        c.micropay_poll_interval = Duration::from_millis(20);
        c.micropay_wait = Duration::from_secs(5);
    });
    let code = w.test_code("needs_confirmation").await;
    let outcome = patient
        .charge_code_until_final(&w.charge("o_code_0003", mop("20.00"), &code))
        .await
        .unwrap();
    assert!(
        matches!(outcome, ChargeOutcome::Succeeded { amount, .. } if amount == mop("20.00")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn unconfirmed_customer_code_is_reversed_when_the_wait_runs_out() {
    let w = spawn_wallet(TimeScale::REAL_TIME).await;
    let impatient = w.adapter_with(|c| {
        c.micropay_poll_interval = Duration::from_millis(50);
        c.micropay_wait = Duration::from_millis(300);
    });
    let code = w.test_code("needs_confirmation").await;
    let charge = w.charge("o_code_0004", mop("20.00"), &code);
    let outcome = impatient.charge_code_until_final(&charge).await.unwrap();
    assert!(
        matches!(outcome, ChargeOutcome::Failed { ref code, .. } if code == "REVERSED"),
        "{outcome:?}"
    );
    assert_eq!(w.query("o_code_0004").await.unwrap(), WalletStatus::Closed);
    assert_eq!(
        w.post(&format!("/codes/{code}/confirm")).await.status(),
        404,
        "nothing left to confirm"
    );
    assert!(matches!(
        w.adapter.charge_code(&charge).await.unwrap(),
        ChargeOutcome::Failed { code, .. } if code == "ORDERREVERSED"
    ));
}

#[tokio::test]
async fn closing_a_customer_code_charge_still_being_confirmed_reverses_it() {
    let w = spawn_wallet(TimeScale::REAL_TIME).await;
    let code = w.test_code("needs_confirmation").await;
    let charge = w.charge("o_code_0008", mop("30.00"), &code);
    assert_eq!(
        w.adapter.charge_code(&charge).await.unwrap(),
        ChargeOutcome::Pending
    );
    let order = OrderRef {
        order_id: "o_code_0008".into(),
        wallet_ref: None,
    };
    w.adapter.close(&order).await.unwrap();
    assert_eq!(w.query("o_code_0008").await.unwrap(), WalletStatus::Closed);
    assert_eq!(
        w.post(&format!("/codes/{code}/confirm")).await.status(),
        404
    );
    w.adapter.close(&order).await.unwrap();
}

#[tokio::test]
async fn declined_or_invalid_customer_codes_fail_with_the_wallet_error_code() {
    let w = spawn_wallet(FAST).await;
    let code = w.test_code("declined").await;
    let outcome = w
        .adapter
        .charge_code(&w.charge("o_code_0005", mop("3.00"), &code))
        .await
        .unwrap();
    assert!(
        matches!(outcome, ChargeOutcome::Failed { ref code, .. } if code == "NOTENOUGH"),
        "{outcome:?}"
    );
    assert_eq!(
        w.query("o_code_0005").await.unwrap(),
        WalletStatus::Failed {
            code: "PAYERROR".into()
        }
    );
    let outcome = w
        .adapter
        .charge_code(&w.charge("o_code_0006", mop("3.00"), "281234567890123456"))
        .await
        .unwrap();
    assert!(
        matches!(outcome, ChargeOutcome::Failed { ref code, .. } if code == "AUTH_CODE_INVALID"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn micropay_request_errors_are_refusals_of_our_request_not_shopper_declines() {
    let w = spawn_wallet(FAST).await;
    let code = w.test_code("pays_at_once").await;
    w.adapter
        .charge_code(&w.charge("o_code_0020", mop("3.00"), &code))
        .await
        .unwrap();
    // The same order number for another amount: WeChat's OUT_TRADE_NO_USED.
    let reused = w
        .adapter
        .charge_code(&w.charge("o_code_0020", mop("4.00"), &code))
        .await;
    assert!(
        matches!(&reused, Err(AdapterError::Rejected { code, .. }) if code == "OUT_TRADE_NO_USED"),
        "{reused:?}"
    );
    // An order number WeChat's format refuses: PARAM_ERROR.
    let bad_id = w
        .adapter
        .charge_code(&w.charge("o_c", mop("3.00"), &code))
        .await;
    assert!(
        matches!(&bad_id, Err(AdapterError::Rejected { code, .. }) if code == "PARAM_ERROR"),
        "{bad_id:?}"
    );
    // The first charge is untouched.
    assert!(w.query("o_code_0020").await.unwrap().is_paid());
}

#[tokio::test]
async fn a_blank_description_is_sent_as_the_order_number_which_wechat_requires() {
    let w = spawn_wallet(FAST).await;
    let mut order = w.order("o_blank_0001", mop("5.00"), PayMode::DynamicQr);
    order.description = "   ".into();
    w.adapter.create_order(&order).await.unwrap();
    let code = w.test_code("pays_at_once").await;
    let mut charge = w.charge("o_blank_0002", mop("5.00"), &code);
    charge.description = String::new();
    assert!(matches!(
        w.adapter.charge_code(&charge).await.unwrap(),
        ChargeOutcome::Succeeded { .. }
    ));
}

#[tokio::test]
async fn micropay_signed_with_another_v2_key_is_refused_and_charges_nothing() {
    let w = spawn_wallet(FAST).await;
    let wrong = w.adapter_with(|c| c.api_v2_key = SecretText::new("f".repeat(32)));
    let code = w.test_code("pays_at_once").await;
    let refused = wrong
        .charge_code(&w.charge("o_code_0007", mop("3.00"), &code))
        .await;
    assert!(
        matches!(refused, Err(AdapterError::Rejected { ref code, ref message }) if code == "FAIL" && message.contains("签名错误")),
        "{refused:?}"
    );
    assert!(matches!(
        w.adapter.micropay_query("o_code_0007").await,
        Err(AdapterError::Rejected { code, .. }) if code == "ORDERNOTEXIST"
    ));
}

// ---------------------------------------------------------------------------------
// Close and refunds
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn closed_order_queries_as_closed_and_can_no_longer_be_paid() {
    let w = spawn_wallet(FAST).await;
    w.adapter
        .create_order(&w.order("o_close_0001", mop("4.00"), PayMode::DynamicQr))
        .await
        .unwrap();
    let order = OrderRef {
        order_id: "o_close_0001".into(),
        wallet_ref: None,
    };
    w.adapter.close(&order).await.unwrap();
    assert_eq!(w.query("o_close_0001").await.unwrap(), WalletStatus::Closed);
    assert_eq!(w.post("/pay/o_close_0001/confirm").await.status(), 409);
    w.adapter.close(&order).await.unwrap();
    w.adapter
        .close(&OrderRef {
            order_id: "o_never_created".into(),
            wallet_ref: None,
        })
        .await
        .unwrap();
    w.paid_native_order("o_close_0002", mop("4.00")).await;
    assert!(matches!(
        w.adapter.close(&OrderRef { order_id: "o_close_0002".into(), wallet_ref: None }).await,
        Err(AdapterError::Rejected { code, .. }) if code == "ORDERPAID"
    ));
    assert!(
        w.query("o_close_0002").await.unwrap().is_paid(),
        "close never touches a paid order"
    );
    assert!(
        w.events()
            .iter()
            .all(|e| e.order_id() != Some("o_close_0001"))
    );
}

#[tokio::test]
async fn refunds_partial_twice_then_the_rest_and_never_more_than_paid() {
    let w = spawn_wallet(FAST).await;
    let wallet_ref = w.paid_native_order("o_refund_0001", mop("10.00")).await;
    let first = w
        .adapter
        .refund(&w.refund("o_refund_0001", "r_0001", "3.00", "10.00"))
        .await
        .unwrap();
    let RefundOutcome::Succeeded {
        wallet_refund_ref: Some(first_ref),
    } = first.clone()
    else {
        panic!("{first:?}");
    };
    assert_eq!(
        w.adapter
            .refund(&w.refund("o_refund_0001", "r_0001", "3.00", "10.00"))
            .await
            .unwrap(),
        first,
        "the same refund id is the same refund"
    );
    let mut by_transaction = w.refund("o_refund_0001", "r_0002", "2.00", "10.00");
    by_transaction.wallet_ref = Some(wallet_ref.clone());
    assert!(matches!(
        w.adapter.refund(&by_transaction).await.unwrap(),
        RefundOutcome::Succeeded { .. }
    ));
    let over = w
        .adapter
        .refund(&w.refund("o_refund_0001", "r_0003", "5.01", "10.00"))
        .await;
    assert!(
        matches!(over, Err(AdapterError::Rejected { ref code, .. }) if code == "INVALID_REQUEST"),
        "{over:?}"
    );
    assert!(matches!(
        w.adapter
            .refund(&w.refund("o_refund_0001", "r_0003", "5.00", "10.00"))
            .await
            .unwrap(),
        RefundOutcome::Succeeded { .. }
    ));
    assert!(matches!(
        w.adapter.refund(&w.refund("o_refund_0001", "r_0004", "0.01", "10.00")).await,
        Err(AdapterError::Rejected { code, .. }) if code == "INVALID_REQUEST"
    ));
    assert_eq!(
        w.adapter.query_refund("r_0001").await.unwrap(),
        RefundOutcome::Succeeded {
            wallet_refund_ref: Some(first_ref)
        }
    );
    assert!(matches!(
        w.query("o_refund_0001").await.unwrap(),
        WalletStatus::Refunded { amount, .. } if amount == mop("10.00")
    ));
    let refunds = eventually("three refund callbacks", async || {
        let refunds: Vec<(String, Money)> = w
            .events()
            .into_iter()
            .filter_map(|e| match e {
                WalletEvent::RefundSucceeded {
                    refund_id, amount, ..
                } => Some((refund_id, amount)),
                _ => None,
            })
            .collect();
        (refunds.len() >= 3).then_some(refunds)
    })
    .await;
    let mut refunds = refunds;
    refunds.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        refunds,
        [
            ("r_0001".into(), mop("3.00")),
            ("r_0002".into(), mop("2.00")),
            ("r_0003".into(), mop("5.00"))
        ]
    );
}

#[tokio::test]
async fn statement_lists_paid_and_refunded_transactions_in_wechat_bill_style() {
    let w = spawn_wallet(FAST).await;
    let wallet_ref = w.paid_native_order("o_bill_0001", mop("9.90")).await;
    w.paid_native_order("o_bill_0002", mop("1.00")).await;
    w.adapter
        .refund(&w.refund("o_bill_0001", "r_bill_0001", "4.00", "9.90"))
        .await
        .unwrap();
    w.adapter
        .create_order(&w.order("o_bill_0003", mop("7.00"), PayMode::DynamicQr))
        .await
        .unwrap();
    let today = wire::beijing_date(Utc::now());
    let csv = w
        .get(&format!("/statement?date={today}"))
        .await
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号"),
        "{csv}"
    );
    assert!(lines[0].contains("货币种类,应结订单金额") && lines[0].contains("退款金额"));
    let row = |needle: &str, state: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle) && l.contains(&format!(",`{state},")))
            .map(|l| l.split(',').collect::<Vec<_>>())
    };
    let paid = row("`o_bill_0001", "SUCCESS").expect("payment row");
    assert_eq!(paid[5], format!("`{wallet_ref}"));
    assert_eq!((paid[11], paid[12]), ("`MOP", "`9.90"));
    let refunded = row("`r_bill_0001", "REFUND").expect("refund row");
    assert_eq!((refunded[6], refunded[16]), ("`o_bill_0001", "`4.00"));
    assert!(row("`o_bill_0002", "SUCCESS").is_some());
    assert!(
        !csv.contains("o_bill_0003"),
        "unpaid orders are not in the bill"
    );
    assert!(lines.iter().any(|l| l.starts_with("总交易单数,")));
    assert_eq!(
        *lines.last().unwrap(),
        "`3,`10.90,`4.00,`0.00,`0.00,`10.90,`4.00"
    );
    assert_eq!(w.get("/statement?date=2024-13-01").await.status(), 400);
}

// ---------------------------------------------------------------------------------
// Signatures both ways
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn an_adapter_with_another_merchant_key_gets_sign_error_and_nothing_is_created() {
    let w = spawn_wallet(FAST).await;
    let impostor = w.adapter_with(|c| c.merchant_key = RsaPrivateKey::generate_2048().unwrap());
    let refused = impostor
        .create_order(&w.order("o_sign_0001", mop("1.00"), PayMode::DynamicQr))
        .await;
    assert!(
        matches!(refused, Err(AdapterError::Rejected { ref code, .. }) if code == "SIGN_ERROR"),
        "{refused:?}"
    );
    assert!(matches!(
        w.query("o_sign_0001").await,
        Err(AdapterError::Rejected { code, .. }) if code == "ORDER_NOT_EXIST"
    ));
}

#[tokio::test]
async fn answers_that_do_not_verify_with_the_wallet_key_are_bad_signatures() {
    let w = spawn_wallet(FAST).await;
    let other = RsaPrivateKey::generate_2048()
        .unwrap()
        .public_key()
        .unwrap();
    let fooled = w.adapter_with(|c| c.wallet_public_key = other);
    assert_eq!(
        fooled
            .create_order(&w.order("o_sign_0002", mop("1.00"), PayMode::DynamicQr))
            .await,
        Err(AdapterError::BadSignature)
    );
    let renamed = w.adapter_with(|c| {
        c.wallet_public_key_id = "PUB_KEY_ID_0000000000000000000000000000".into()
    });
    assert_eq!(w.query("o_sign_0002").await.unwrap(), WalletStatus::Pending);
    assert_eq!(
        renamed
            .query(&OrderRef {
                order_id: "o_sign_0002".into(),
                wallet_ref: None
            })
            .await,
        Err(AdapterError::BadSignature)
    );
}

// ---------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn injected_server_errors_are_transport_errors_retryable_unless_a_charge_may_have_applied() {
    let w = spawn_wallet(FAST).await;
    let order = w.order("o_fault_0001", mop("2.00"), PayMode::DynamicQr);
    w.set_faults(json!({"fail_requests": 1})).await;
    assert!(matches!(
        w.adapter.create_order(&order).await,
        Err(AdapterError::Transport {
            retryable: true,
            ..
        })
    ));
    assert!(
        w.adapter.create_order(&order).await.is_ok(),
        "the fault was consumed"
    );
    w.set_faults(json!({"fail_requests": 1})).await;
    let code = w.test_code("pays_at_once").await;
    assert!(matches!(
        w.adapter
            .charge_code(&w.charge("o_fault_0002", mop("2.00"), &code))
            .await,
        Err(AdapterError::Transport {
            retryable: false,
            ..
        })
    ));
}

#[tokio::test]
async fn a_wallet_slower_than_the_timeout_is_a_retryable_transport_error() {
    let w = spawn_wallet(FAST).await;
    let hasty = w.adapter_with(|c| c.request_timeout = Duration::from_millis(200));
    w.set_faults(json!({"slow_ms": 1000})).await;
    let started = Instant::now();
    let slow = hasty
        .query(&OrderRef {
            order_id: "o_fault_0003".into(),
            wallet_ref: None,
        })
        .await;
    assert!(
        matches!(
            slow,
            Err(AdapterError::Transport {
                retryable: true,
                ..
            })
        ),
        "{slow:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(900));
}

// ---------------------------------------------------------------------------------
// Callbacks
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn duplicated_callbacks_arrive_n_plus_one_times_with_one_event_id() {
    let w = spawn_wallet(FAST).await;
    w.set_faults(json!({"duplicate_callbacks": 2})).await;
    w.paid_native_order("o_dup_0001", mop("6.00")).await;
    let events = eventually("three copies", async || {
        let events = w.events();
        (events.len() >= 3).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e == &events[0]), "identical events");
    // The receiver records before it answers: wait for the sandbox to log the acks.
    let acked = eventually("three acknowledged deliveries", async || {
        let acked = w
            .deliveries()
            .await
            .iter()
            .filter(|d| d["acked"] == true)
            .count();
        (acked >= 3).then_some(acked)
    })
    .await;
    assert_eq!(acked, 3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        w.deliveries().await.len(),
        3,
        "each copy acknowledged at its first attempt"
    );
}

#[tokio::test]
async fn a_receiver_answering_the_wrong_ack_is_retried_on_schedule_until_it_acks() {
    let w = spawn_wallet(FAST).await;
    w.receiver.wrong_ack.store(true, Ordering::SeqCst);
    w.paid_native_order("o_retry_0001", mop("6.00")).await;
    // Attempts at 0, 15, 30 and 60 s of wallet time (0-60 ms here).
    eventually("four unacknowledged attempts", async || {
        let d = w.deliveries().await;
        (d.len() >= 4).then_some(())
    })
    .await;
    w.receiver.wrong_ack.store(false, Ordering::SeqCst);
    let deliveries = eventually("an acknowledged attempt", async || {
        let d = w.deliveries().await;
        d.iter().any(|d| d["acked"] == true).then_some(d)
    })
    .await;
    let attempts: Vec<u64> = deliveries
        .iter()
        .map(|d| d["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, (1..=attempts.len() as u64).collect::<Vec<_>>());
    assert!(
        deliveries[..deliveries.len() - 1]
            .iter()
            .all(|d| d["acked"] == false && d["status"] == 200)
    );
    assert_eq!(deliveries.last().unwrap()["acked"], true);
    let count = deliveries.len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        w.deliveries().await.len(),
        count,
        "no retries after the ack"
    );
    assert!(w.events().len() >= count, "every attempt verified");
}

#[tokio::test]
async fn forged_stale_probe_and_unsigned_callbacks_are_bad_signatures() {
    let w = spawn_wallet(FAST).await;
    w.paid_native_order("o_forged_0001", mop("6.00")).await;
    let genuine = eventually("a genuine callback", async || {
        w.receiver.raw.lock().unwrap().first().cloned()
    })
    .await;
    assert!(w.adapter.verify_callback(&genuine).is_ok());

    let mut flipped_body = genuine.body().to_vec();
    let middle = flipped_body.len() / 2;
    flipped_body[middle] ^= 0x01;
    let flipped = RawCallback::new(
        genuine.method(),
        genuine.path(),
        genuine.headers().to_vec(),
        flipped_body,
        genuine.received_at(),
    );

    let timestamp = genuine.header("wechatpay-timestamp").unwrap().to_owned();
    let nonce = genuine.header("wechatpay-nonce").unwrap().to_owned();
    let other_key_signature = RsaPrivateKey::generate_2048()
        .unwrap()
        .sign_base64(&wire::wechatpay_message(&timestamp, &nonce, genuine.body()))
        .unwrap();
    let wrong_message_signature = w
        .keys
        .wallet
        .sign_base64(&wire::wechatpay_message(
            &timestamp,
            "other-nonce",
            genuine.body(),
        ))
        .unwrap();
    let genuine_signature = genuine.header("wechatpay-signature").unwrap().to_owned();

    let mut forgeries = vec![
        ("flipped body byte", flipped),
        (
            "signature by another key",
            with_headers(&genuine, |n, v| {
                Some(if n == "wechatpay-signature" {
                    other_key_signature.clone()
                } else {
                    v.to_owned()
                })
            }),
        ),
        (
            "signature over another message",
            with_headers(&genuine, |n, v| {
                Some(if n == "wechatpay-signature" {
                    wrong_message_signature.clone()
                } else {
                    v.to_owned()
                })
            }),
        ),
        (
            "WeChat's signature probe",
            with_headers(&genuine, |n, v| {
                Some(if n == "wechatpay-signature" {
                    format!("WECHATPAY/SIGNTEST/{genuine_signature}")
                } else {
                    v.to_owned()
                })
            }),
        ),
        (
            "unknown serial",
            with_headers(&genuine, |n, v| {
                Some(if n == "wechatpay-serial" {
                    "5157F09EFDC096DE15EBE81A47057A7232F1B8E1".to_owned()
                } else {
                    v.to_owned()
                })
            }),
        ),
        (
            "nonce changed",
            with_headers(&genuine, |n, v| {
                Some(if n == "wechatpay-nonce" {
                    "x".to_owned()
                } else {
                    v.to_owned()
                })
            }),
        ),
        (
            "received six minutes late",
            at(
                &genuine,
                genuine.received_at() + chrono::Duration::minutes(6),
            ),
        ),
        (
            "received six minutes early",
            at(
                &genuine,
                genuine.received_at() - chrono::Duration::minutes(6),
            ),
        ),
    ];
    for name in [
        "wechatpay-serial",
        "wechatpay-signature",
        "wechatpay-timestamp",
        "wechatpay-nonce",
    ] {
        forgeries.push((
            "missing header",
            with_headers(&genuine, |n, v| (n != name).then(|| v.to_owned())),
        ));
    }
    for (what, forged) in forgeries {
        assert_eq!(
            w.adapter.verify_callback(&forged),
            Err(AdapterError::BadSignature),
            "{what}"
        );
    }
    let stale = w.craft_callback(
        "TRANSACTION.SUCCESS",
        "transaction",
        &json!({}),
        &w.keys.wallet,
        Utc::now().timestamp() - 301,
    );
    assert_eq!(
        w.adapter.verify_callback(&stale),
        Err(AdapterError::BadSignature),
        "signed six minutes ago"
    );

    let rejected = w.adapter.ack(Ack::Rejected);
    assert_eq!(rejected.status, 401);
    let body: Value = serde_json::from_slice(&rejected.body).unwrap();
    assert_eq!(body["code"], "FAIL");
}

#[tokio::test]
async fn callback_amounts_are_reported_faithfully_and_unreadable_ones_are_malformed() {
    let w = spawn_wallet(FAST).await;
    let now = Utc::now().timestamp();
    let transaction = |amount: Value| {
        json!({
            "appid": "wxd930ea5d5a258f4f", "mchid": "1900000109", "out_trade_no": "o_amount_0001",
            "transaction_id": "4200002024050112345678901234", "trade_type": "NATIVE",
            "trade_state": "SUCCESS", "trade_state_desc": "支付成功",
            "success_time": "2024-05-01T12:00:00+08:00", "amount": amount,
        })
    };
    let cheap = w.craft_callback(
        "TRANSACTION.SUCCESS",
        "transaction",
        &transaction(json!({"total": 1, "currency": "MOP"})),
        &w.keys.wallet,
        now,
    );
    match w.adapter.verify_callback(&cheap).unwrap() {
        WalletEvent::PaymentSucceeded {
            amount,
            event_id,
            order_id,
            ..
        } => {
            assert_eq!(
                amount,
                mop("0.01"),
                "reported as the wallet says; the gateway compares"
            );
            assert_eq!(
                (event_id.as_str(), order_id.as_str()),
                ("EV-crafted-1", "o_amount_0001")
            );
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        json!({"total": "8.80", "currency": "MOP"}),
        json!({"total": -880, "currency": "MOP"}),
        json!({"total": 880, "currency": "XYZ"}),
        json!({"total": 8.8, "currency": "MOP"}),
    ] {
        let cb = w.craft_callback(
            "TRANSACTION.SUCCESS",
            "transaction",
            &transaction(bad.clone()),
            &w.keys.wallet,
            now,
        );
        assert!(
            matches!(
                w.adapter.verify_callback(&cb),
                Err(AdapterError::Malformed(_))
            ),
            "{bad}"
        );
    }
    let mut other_merchant = transaction(json!({"total": 880, "currency": "MOP"}));
    other_merchant["mchid"] = json!("1900000999");
    let cb = w.craft_callback(
        "TRANSACTION.SUCCESS",
        "transaction",
        &other_merchant,
        &w.keys.wallet,
        now,
    );
    assert!(matches!(
        w.adapter.verify_callback(&cb),
        Err(AdapterError::Malformed(_))
    ));
    let unreadable = w.sign_raw(b"{not json".to_vec(), &w.keys.wallet, now);
    assert!(matches!(
        w.adapter.verify_callback(&unreadable),
        Err(AdapterError::Malformed(_))
    ));
}

#[tokio::test]
async fn refund_failures_and_unknown_events_are_translated_not_dropped() {
    let w = spawn_wallet(FAST).await;
    let now = Utc::now().timestamp();
    let notice = |status: &str| {
        json!({
            "mchid": "1900000109", "out_trade_no": "o_rf_0001", "transaction_id": "4200002024050112345678901234",
            "out_refund_no": "r_rf_0001", "refund_id": "50300000000000000000000000001", "refund_status": status,
            "amount": {"total": 1000, "refund": 300, "payer_total": 1000, "payer_refund": 300},
        })
    };
    let abnormal = w.craft_callback(
        "REFUND.ABNORMAL",
        "refund",
        &notice("ABNORMAL"),
        &w.keys.wallet,
        now,
    );
    assert!(matches!(
        w.adapter.verify_callback(&abnormal).unwrap(),
        WalletEvent::RefundFailed { ref refund_id, ref code, .. } if refund_id == "r_rf_0001" && code == "REFUND.ABNORMAL"
    ));
    let closed = w.craft_callback(
        "REFUND.CLOSED",
        "refund",
        &notice("CLOSED"),
        &w.keys.wallet,
        now,
    );
    assert!(matches!(
        w.adapter.verify_callback(&closed).unwrap(),
        WalletEvent::RefundFailed { .. }
    ));
    let success = w.craft_callback(
        "REFUND.SUCCESS",
        "refund",
        &notice("SUCCESS"),
        &w.keys.wallet,
        now,
    );
    assert!(
        matches!(
            w.adapter.verify_callback(&success).unwrap(),
            WalletEvent::RefundSucceeded { amount, .. } if amount == Money::parse("3.00", Currency::Cny).unwrap()
        ),
        "mainland refund callbacks carry no currency: CNY"
    );
    let contradictory = w.craft_callback(
        "REFUND.SUCCESS",
        "refund",
        &notice("CLOSED"),
        &w.keys.wallet,
        now,
    );
    assert!(matches!(
        w.adapter.verify_callback(&contradictory),
        Err(AdapterError::Malformed(_))
    ));
    let unknown = w.craft_callback(
        "MCHTRANSFER.BILL.FINISHED",
        "mch_payment",
        &json!({"mchid": "1900000109"}),
        &w.keys.wallet,
        now,
    );
    assert!(matches!(
        w.adapter.verify_callback(&unknown).unwrap(),
        WalletEvent::Informational { .. }
    ));
}
