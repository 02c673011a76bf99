//! Independent checks of every wallet signature scheme against another
//! implementation: the `openssl` command-line tool, run at test time.
//!
//! For each scheme, a signature our code made (over the exact bytes an adapter
//! sent, captured off the wire where the adapter builds the string itself) verifies
//! with `openssl dgst -sha256 -verify`, and a signature `openssl dgst -sha256 -sign`
//! made over the same signing string verifies with our code (the adapter's own
//! `verify_callback` where the scheme is a callback). The v2 HMAC-SHA256 and MD5
//! signs are compared byte for byte with `openssl dgst -hmac` / `-md5`. The WeChat
//! Pay callback resource is a ciphertext produced outside our code (Python's
//! `cryptography`, see [`WECHAT_RESOURCE_CIPHERTEXT`]), decrypted through the
//! adapter, and refused with a wrong key, a tampered tag or wrong associated data.
//!
//! `openssl` is part of every Debian install; when it is missing these tests fail
//! with a message saying so — they never skip.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::Utc;
use serde_json::json;
use sesame_adapters::contract::{
    AdapterError, ChargeCode, MerchantInfo, OrderRef, RawCallback, WalletAdapter, WalletEvent,
};
use sesame_adapters::crypto::{self, Aes256GcmKey, RsaPrivateKey, RsaPublicKey};
use sesame_adapters::money::{Currency, Money};
use sesame_adapters::sandbox::LocalKeys;
use sesame_adapters::{alipay, alipay_plus, wechat_pay};

const PRIVATE_PEM: &str = include_str!("../testdata/rsa2048_pkcs8.pem");
const PUBLIC_PEM: &str = include_str!("../testdata/rsa2048_spki.pem");

/// The APIv3 key of the WeChat Pay fixture (32 ASCII bytes, as in the portal).
const WECHAT_API_V3_KEY: &[u8; 32] = b"sesameAPIv3FixtureKey0123456789a";
const WECHAT_RESOURCE_NONCE: &str = "fixtureNonce";
const WECHAT_RESOURCE_AAD: &str = "transaction";
/// The transaction the fixture resource carries (what WeChat would encrypt).
const WECHAT_RESOURCE_PLAINTEXT: &str = r#"{"mchid":"1900000109","appid":"wxd930ea5d5a258f4f","out_trade_no":"o_fixture_0001","transaction_id":"4200000000202405011234567890","trade_type":"NATIVE","trade_state":"SUCCESS","trade_state_desc":"ok","bank_type":"OTHERS","success_time":"2024-05-01T12:00:00+08:00","payer":{"openid":"oFixtureOpenid0000000000001"},"amount":{"total":880,"payer_total":880,"currency":"MOP","payer_currency":"MOP"}}"#;
/// `ciphertext || tag`, base64, produced once outside our code with Python 3 and
/// `cryptography` 48 (AES-256-GCM; the `openssl enc` tool has no AEAD modes):
///
/// ```text
/// python3 -c 'import base64; from cryptography.hazmat.primitives.ciphers.aead import AESGCM;
///   print(base64.b64encode(AESGCM(b"sesameAPIv3FixtureKey0123456789a").encrypt(
///     b"fixtureNonce", open("plaintext.json","rb").read(), b"transaction")).decode())'
/// ```
///
/// where `plaintext.json` holds [`WECHAT_RESOURCE_PLAINTEXT`] without a newline.
const WECHAT_RESOURCE_CIPHERTEXT: &str = "zyP5ADzf3k8OHZ9G+nin8VSWlTy17f5uiCsjk/4/qGPBBNNtFvHqxH42bnWemt5pJ2lgJwVw9pRi3y6JXDyYcpsjj7rCudU0s93fPeN9WIVGKbjEoZhrDVe2FbTHiDk0BjACQGtA12mBdAb5L1Zl5B5hEBKzLl182odo4ZtWKFGwLE5aSf3+X5lNH8eQDM84N/XLWTocRnS4Leu5BJd4ElNE2AYyNEu+mfohV1ioxFJO1wjkqPRUsYg/yf2WIFoTwDQR70vc8aGGFINp1p0T8iyaIJnyMnHhnIvRJ7+lqVwtBLY2OVHZdYcaYchnbTDNh25qgaVoYrH8I1Jty1XQoGRhLTWDsVe3LGrzgtVeuzn3VFLNyTXDTz7Mi1oxs8EvU05+y5LlYwBMYAP/BI2DXBoGhW9iu5G64uOZcXkc8NcwMt46EitoVXI1g8Tq3Gz59B6BahIJ/TRWWKvqmrbf4sHaLd/c8ojqVnUCSBBw1dPVVeXnAY4m52SBPodzH0vS02GBy/ZhLeN58zQdlcJUQA0+KTdoMlh4kCjY";

fn testdata(name: &str) -> String {
    format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `openssl` with `input` on stdin; its stdout. Panics (never skips) when the
/// tool is missing or fails.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "these tests need the `openssl` command-line tool on PATH (Debian package \
                 `openssl`), which could not be started: {e}"
            )
        });
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .expect("write to openssl");
    let output = child.wait_with_output().expect("openssl output");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A scratch file of its own for this process and call.
fn scratch_file(bytes: &[u8]) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "sesame-openssl-{}-{}.bin",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, bytes).expect("scratch file");
    path
}

/// `openssl dgst -sha256 -sign` with the fixture private key: base64 signature.
fn openssl_sign(message: &[u8]) -> String {
    let key = testdata("rsa2048_pkcs8.pem");
    crypto::encode_base64(&openssl(&["dgst", "-sha256", "-sign", &key], message))
}

/// `openssl dgst -sha256 -verify` with the fixture public key.
fn openssl_verifies(message: &[u8], signature_b64: &str) {
    let signature = crypto::decode_base64(signature_b64).expect("base64 signature");
    let file = scratch_file(&signature);
    let public = testdata("rsa2048_spki.pem");
    let path = file.to_str().expect("utf-8 temp path").to_owned();
    let out = openssl(
        &["dgst", "-sha256", "-verify", &public, "-signature", &path],
        message,
    );
    let _ = std::fs::remove_file(&file);
    assert_eq!(String::from_utf8_lossy(&out).trim(), "Verified OK");
}

fn private_key() -> RsaPrivateKey {
    RsaPrivateKey::from_pem(PRIVATE_PEM).unwrap()
}

fn public_key() -> RsaPublicKey {
    RsaPublicKey::from_pem(PUBLIC_PEM).unwrap()
}

/// The fixture key on both sides: merchant and wallet.
fn fixture_keys(secret: [u8; 32]) -> LocalKeys {
    LocalKeys {
        merchant: private_key(),
        wallet: private_key(),
        secret,
    }
}

/// One request as an adapter sent it.
#[derive(Debug, Clone)]
struct Captured {
    method: String,
    path_and_query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Captured {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

/// A server that records every request and answers 503, so each adapter call
/// stops after sending: `(base URL, the requests)`.
async fn capture_server() -> (String, Arc<Mutex<Vec<Captured>>>) {
    let seen: Arc<Mutex<Vec<Captured>>> = Arc::default();
    let recorder = seen.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let server = HttpServer::new(move || {
        let recorder = recorder.clone();
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            recorder.lock().unwrap().push(Captured {
                method: req.method().as_str().to_owned(),
                path_and_query: req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
                headers: req
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                    .collect(),
                body: body.to_vec(),
            });
            async { HttpResponse::ServiceUnavailable().body("captured") }
        }))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (base, seen)
}

fn order(order_id: &str) -> OrderRef {
    OrderRef {
        order_id: order_id.into(),
        wallet_ref: None,
    }
}

// ---------------------------------------------------------------------------------
// Alipay: RSA2 request signing string, response and notification

#[tokio::test]
async fn alipay_request_signature_verifies_with_openssl_over_the_sent_parameters() {
    let (base, seen) = capture_server().await;
    let adapter = alipay::AlipayAdapter::new(alipay::AlipayConfig::new(
        &base,
        alipay::LOCAL_APP_ID,
        private_key(),
        public_key(),
    ))
    .unwrap();
    assert!(adapter.query(&order("SO_OPENSSL_1")).await.is_err());
    let sent = seen.lock().unwrap()[0].clone();
    let pairs = alipay::wire::decode_form(std::str::from_utf8(&sent.body).unwrap()).unwrap();
    let sign = alipay::wire::param(&pairs, "sign").unwrap().to_owned();
    let content =
        alipay::wire::request_sign_content(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    assert!(content.contains("sign_type=RSA2") && !content.contains("sign="));
    openssl_verifies(content.as_bytes(), &sign);
}

#[tokio::test]
async fn alipay_notification_signed_by_openssl_is_accepted_by_the_adapter() {
    let adapter = alipay::AlipayAdapter::new(alipay::AlipayConfig::new(
        "http://127.0.0.1:9",
        alipay::LOCAL_APP_ID,
        private_key(),
        public_key(),
    ))
    .unwrap();
    let mut pairs: Vec<(String, String)> = [
        ("notify_time", "2024-05-01 12:00:05"),
        ("notify_type", "trade_status_sync"),
        ("notify_id", "N-openssl-1"),
        ("app_id", alipay::LOCAL_APP_ID),
        ("charset", "utf-8"),
        ("version", "1.0"),
        ("sign_type", "RSA2"),
        ("trade_no", "2024050122001000000000000001"),
        ("out_trade_no", "SO_OPENSSL_2"),
        ("trade_status", "TRADE_SUCCESS"),
        ("total_amount", "88.80"),
        ("subject", "蛋撻 x6"),
        ("gmt_payment", "2024-05-01 12:00:00"),
        ("body", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let content =
        alipay::wire::notify_sign_content(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    pairs.push(("sign".into(), openssl_sign(content.as_bytes())));
    let body = serde_urlencoded::to_string(&pairs).unwrap().into_bytes();
    let cb = RawCallback::new(
        "POST",
        "/webhooks/alipay",
        [("content-type", "application/x-www-form-urlencoded")],
        body.clone(),
        Utc::now(),
    );
    let event = adapter.verify_callback(&cb).unwrap();
    assert!(
        matches!(&event, WalletEvent::PaymentSucceeded { order_id, amount, .. } if order_id == "SO_OPENSSL_2" && *amount == Money::parse("88.80", Currency::Cny).unwrap()),
        "{event:?}"
    );
    // And our own notification signature (the sandbox's) verifies with openssl.
    let ours = private_key().sign_base64(content.as_bytes()).unwrap();
    openssl_verifies(content.as_bytes(), &ours);
}

#[test]
fn alipay_response_signatures_agree_with_openssl_both_ways() {
    let method = alipay::wire::method::QUERY;
    let key = alipay::wire::response_key(method);
    let raw = r#"{"code":"10000","msg":"Success","trade_no":"2024050122001000000000000001","out_trade_no":"SO_OPENSSL_3","trade_status":"WAIT_BUYER_PAY","total_amount":"8.80"}"#;
    let by_openssl = openssl_sign(raw.as_bytes());
    let body = alipay::wire::response_body(&key, raw, &by_openssl);
    let opened = alipay::wire::open_response(&body, method, &public_key()).unwrap();
    assert_eq!(opened.raw, raw);
    let ours = private_key().sign_base64(raw.as_bytes()).unwrap();
    openssl_verifies(raw.as_bytes(), &ours);
    assert_eq!(ours, by_openssl, "PKCS#1 v1.5 is deterministic");
}

// ---------------------------------------------------------------------------------
// Alipay+: the Signature header over `POST <path>\n<client>.<time>.<body>`

#[tokio::test]
async fn alipay_plus_request_signature_verifies_with_openssl_over_the_sent_bytes() {
    let (base, seen) = capture_server().await;
    let adapter = alipay_plus::AlipayPlusAdapter::new(alipay_plus::AlipayPlusConfig::new(
        &base,
        "OPENSSL_CLIENT",
        private_key(),
        public_key(),
    ))
    .unwrap();
    assert!(adapter.query(&order("ord_openssl_1")).await.is_err());
    let sent = seen.lock().unwrap()[0].clone();
    assert_eq!(sent.method, "POST");
    let header = alipay_plus::wire::SignatureHeader::parse(sent.header("signature")).unwrap();
    assert_eq!(header.algorithm, "RSA256");
    let message = alipay_plus::wire::signing_string(
        &sent.path_and_query,
        sent.header("client-id"),
        sent.header("request-time"),
        &sent.body,
    );
    assert!(message.starts_with(b"POST /aps/api/v1/payments/inquiryPayment\nOPENSSL_CLIENT."));
    openssl_verifies(&message, &header.signature);
}

#[test]
fn alipay_plus_notification_signed_by_openssl_is_accepted_by_the_adapter() {
    let adapter = alipay_plus::AlipayPlusAdapter::new(alipay_plus::AlipayPlusConfig::new(
        "https://open-sea-global.alipayplus.com",
        "OPENSSL_CLIENT",
        private_key(),
        public_key(),
    ))
    .unwrap();
    let body = r#"{"paymentResult":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"},"paymentRequestId":"ord_openssl_2","paymentId":"20240501120000110000001","pspId":"A111253100000000","paymentTime":"2024-05-01T12:00:00+08:00","paymentAmount":{"currency":"MOP","value":"2550"}}"#;
    let now = Utc::now();
    let time = alipay_plus::wire::format_time(&now);
    let message = alipay_plus::wire::signing_string(
        "/webhooks/alipay_plus",
        "OPENSSL_CLIENT",
        &time,
        body.as_bytes(),
    );
    let header = alipay_plus::wire::signature_header(1, &openssl_sign(&message));
    let cb = RawCallback::new(
        "POST",
        "/webhooks/alipay_plus",
        vec![
            ("Client-Id", "OPENSSL_CLIENT".to_owned()),
            ("Request-Time", time.clone()),
            ("Signature", header),
        ],
        body.as_bytes().to_vec(),
        now,
    );
    let event = adapter.verify_callback(&cb).unwrap();
    assert!(
        matches!(event, WalletEvent::PaymentSucceeded { .. }),
        "{event:?}"
    );
    // The response direction: our header's signature verifies with openssl.
    let ours = alipay_plus::wire::sign(
        &private_key(),
        1,
        "/aps/api/v1/payments/pay",
        "OPENSSL_CLIENT",
        &time,
        body.as_bytes(),
    )
    .unwrap();
    let parsed = alipay_plus::wire::SignatureHeader::parse(&ours).unwrap();
    openssl_verifies(
        &alipay_plus::wire::signing_string(
            "/aps/api/v1/payments/pay",
            "OPENSSL_CLIENT",
            &time,
            body.as_bytes(),
        ),
        &parsed.signature,
    );
}

// ---------------------------------------------------------------------------------
// WeChat Pay: v3 Authorization, answer/callback signature, JSAPI paySign, v2 signs

fn wechat_config(base: &str) -> wechat_pay::WechatPayConfig {
    wechat_pay::WechatPayConfig::local(base, &fixture_keys(*WECHAT_API_V3_KEY)).unwrap()
}

#[tokio::test]
async fn wechat_v3_authorization_verifies_with_openssl_over_the_five_line_message() {
    let (base, seen) = capture_server().await;
    let adapter = wechat_pay::WechatPayAdapter::new(wechat_config(&base)).unwrap();
    assert!(adapter.query(&order("o_openssl_0001")).await.is_err());
    let sent = seen.lock().unwrap()[0].clone();
    let authorization = wechat_pay::wire::Authorization::parse(sent.header("authorization"))
        .expect("the WECHATPAY2-SHA256-RSA2048 header");
    let message = wechat_pay::wire::request_message(
        &sent.method,
        &sent.path_and_query,
        &authorization.timestamp,
        &authorization.nonce_str,
        std::str::from_utf8(&sent.body).unwrap(),
    );
    assert!(message.starts_with("GET\n/v3/pay/transactions/out-trade-no/o_openssl_0001?mchid="));
    openssl_verifies(message.as_bytes(), &authorization.signature);
}

/// A `TRANSACTION.SUCCESS` callback around `resource`, signed by openssl now.
fn wechat_callback(
    adapter: &wechat_pay::WechatPayAdapter,
    resource: serde_json::Value,
) -> RawCallback {
    let body = json!({
        "id": "EV-openssl-1",
        "create_time": "2024-05-01T12:00:00+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": resource,
    })
    .to_string()
    .into_bytes();
    let timestamp = Utc::now().timestamp().to_string();
    let nonce = "opensslNonce0001";
    let signature = openssl_sign(&wechat_pay::wire::wechatpay_message(
        &timestamp, nonce, &body,
    ));
    RawCallback::new(
        "POST",
        "/webhooks/wechat_pay",
        vec![
            (
                "Wechatpay-Serial".to_owned(),
                adapter.config().wallet_public_key_id.clone(),
            ),
            ("Wechatpay-Signature".to_owned(), signature),
            ("Wechatpay-Timestamp".to_owned(), timestamp),
            ("Wechatpay-Nonce".to_owned(), nonce.to_owned()),
        ],
        body,
        Utc::now(),
    )
}

fn fixture_resource() -> serde_json::Value {
    json!({
        "original_type": "transaction",
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": WECHAT_RESOURCE_CIPHERTEXT,
        "associated_data": WECHAT_RESOURCE_AAD,
        "nonce": WECHAT_RESOURCE_NONCE,
    })
}

#[test]
fn wechat_callback_signed_by_openssl_and_sealed_outside_our_code_is_accepted() {
    let adapter = wechat_pay::WechatPayAdapter::new(wechat_config("http://127.0.0.1:9")).unwrap();
    let event = adapter
        .verify_callback(&wechat_callback(&adapter, fixture_resource()))
        .unwrap();
    assert_eq!(
        event,
        WalletEvent::PaymentSucceeded {
            order_id: "o_fixture_0001".into(),
            wallet_ref: "4200000000202405011234567890".into(),
            amount: Money::parse("8.80", Currency::Mop).unwrap(),
            event_id: "EV-openssl-1".into(),
            paid_at: chrono::DateTime::parse_from_rfc3339("2024-05-01T12:00:00+08:00")
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            brand: None,
        }
    );
    // Our AES-256-GCM opens it to the exact plaintext, and seals to the same bytes.
    let key = Aes256GcmKey::new(WECHAT_API_V3_KEY).unwrap();
    let sealed = crypto::decode_base64(WECHAT_RESOURCE_CIPHERTEXT).unwrap();
    let opened = key
        .decrypt(
            WECHAT_RESOURCE_NONCE.as_bytes(),
            WECHAT_RESOURCE_AAD.as_bytes(),
            &sealed,
        )
        .unwrap();
    assert_eq!(opened, WECHAT_RESOURCE_PLAINTEXT.as_bytes());
    assert_eq!(
        key.encrypt(
            WECHAT_RESOURCE_NONCE.as_bytes(),
            WECHAT_RESOURCE_AAD.as_bytes(),
            WECHAT_RESOURCE_PLAINTEXT.as_bytes()
        )
        .unwrap(),
        sealed
    );
}

#[test]
fn wechat_callback_with_a_wrong_key_tampered_tag_or_wrong_associated_data_is_refused() {
    let adapter = wechat_pay::WechatPayAdapter::new(wechat_config("http://127.0.0.1:9")).unwrap();
    let refused =
        |adapter: &wechat_pay::WechatPayAdapter, resource: serde_json::Value, what: &str| {
            let outcome = adapter.verify_callback(&wechat_callback(adapter, resource));
            assert!(
                matches!(&outcome, Err(AdapterError::Malformed(m)) if m.contains("decrypt")),
                "{what}: {outcome:?}"
            );
        };
    // Another APIv3 key.
    let mut other = wechat_config("http://127.0.0.1:9");
    other.api_v3_key = Aes256GcmKey::new(b"sesameAPIv3FixtureKey0123456789b").unwrap();
    let other = wechat_pay::WechatPayAdapter::new(other).unwrap();
    refused(&other, fixture_resource(), "wrong APIv3 key");
    // The last byte of the tag flipped.
    let mut sealed = crypto::decode_base64(WECHAT_RESOURCE_CIPHERTEXT).unwrap();
    let last = sealed.len() - 1;
    sealed[last] ^= 0x01;
    let mut tampered = fixture_resource();
    tampered["ciphertext"] = crypto::encode_base64(&sealed).into();
    refused(&adapter, tampered, "tampered tag");
    // One ciphertext byte flipped.
    let mut sealed = crypto::decode_base64(WECHAT_RESOURCE_CIPHERTEXT).unwrap();
    sealed[5] ^= 0x80;
    let mut flipped = fixture_resource();
    flipped["ciphertext"] = crypto::encode_base64(&sealed).into();
    refused(&adapter, flipped, "tampered ciphertext");
    // Other associated data, and none.
    for aad in ["certificate", ""] {
        let mut wrong_aad = fixture_resource();
        wrong_aad["associated_data"] = aad.into();
        refused(&adapter, wrong_aad, "wrong associated data");
    }
    // The untouched fixture still passes: the refusals are the changes above.
    assert!(
        adapter
            .verify_callback(&wechat_callback(&adapter, fixture_resource()))
            .is_ok()
    );
}

#[test]
fn wechat_answer_signatures_made_by_our_code_verify_with_openssl() {
    let body = br#"{"code_url":"weixin://wxpay/bizpayurl?pr=openssl"}"#;
    let message = wechat_pay::wire::wechatpay_message("1714536000", "n0nce", body);
    assert!(message.ends_with(b"}\n"));
    openssl_verifies(&message, &private_key().sign_base64(&message).unwrap());
    // An empty (204) body is the message `timestamp\nnonce\n\n`.
    let empty = wechat_pay::wire::wechatpay_message("1714536000", "n0nce", b"");
    assert_eq!(empty, b"1714536000\nn0nce\n\n");
    openssl_verifies(&empty, &private_key().sign_base64(&empty).unwrap());
}

#[test]
fn jsapi_pay_sign_agrees_with_openssl_both_ways() {
    let adapter = wechat_pay::WechatPayAdapter::new(wechat_config("http://127.0.0.1:9")).unwrap();
    let params = adapter
        .jsapi_params("wx201410272009395522657a690389285100")
        .unwrap();
    let message = wechat_pay::wire::jsapi_message(
        &params["appId"],
        &params["timeStamp"],
        &params["nonceStr"],
        &params["package"],
    );
    assert_eq!(params["signType"], "RSA");
    openssl_verifies(message.as_bytes(), &params["paySign"]);
    let by_openssl = openssl_sign(message.as_bytes());
    public_key()
        .verify_base64(message.as_bytes(), &by_openssl)
        .unwrap();
    assert_eq!(by_openssl, params["paySign"]);
}

#[tokio::test]
async fn wechat_v2_hmac_sha256_sign_of_the_sent_micropay_matches_openssl() {
    let (base, seen) = capture_server().await;
    let config = wechat_config(&base);
    let v2_key = config.api_v2_key.clone();
    let adapter = wechat_pay::WechatPayAdapter::new(config).unwrap();
    let charge = ChargeCode {
        order_id: "o_openssl_0002".into(),
        amount: Money::parse("3.00", Currency::Mop).unwrap(),
        auth_code: "134567890123450000".into(),
        description: "Till 1".into(),
        notify_url: None,
        brand_params: BTreeMap::new(),
        merchant: MerchantInfo::default(),
    };
    assert!(adapter.charge_code(&charge).await.is_err());
    let sent = seen.lock().unwrap()[0].clone();
    let params = wechat_pay::wire::xml::parse(std::str::from_utf8(&sent.body).unwrap()).unwrap();
    assert_eq!(params["sign_type"], "HMAC-SHA256");
    let string = wechat_pay::wire::v2_sign_string(&params, &v2_key);
    let tag = openssl(
        &["dgst", "-sha256", "-hmac", v2_key.expose(), "-binary"],
        string.as_bytes(),
    );
    assert_eq!(params["sign"], hex::encode_upper(tag));
}

#[test]
fn wechat_v2_md5_and_hmac_signs_made_by_openssl_verify_with_our_code() {
    let key = wechat_pay::wire::SecretText::new("192006250b4c09247ec02edce69f6a2d");
    let mut params: BTreeMap<String, String> = [
        ("appid", "wxd930ea5d5a258f4f"),
        ("mch_id", "10000100"),
        ("device_info", "1000"),
        ("body", "test"),
        ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ("empty_is_skipped", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let string = wechat_pay::wire::v2_sign_string(&params, &key);
    assert_eq!(
        string,
        "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA&key=192006250b4c09247ec02edce69f6a2d"
    );
    let md5 = hex::encode_upper(openssl(&["dgst", "-md5", "-binary"], string.as_bytes()));
    let hmac = hex::encode_upper(openssl(
        &["dgst", "-sha256", "-hmac", key.expose(), "-binary"],
        string.as_bytes(),
    ));
    // The worked example of WeChat Pay's v2 signature documentation gives these.
    assert_eq!(md5, "9A0A8659F005D6984697E2CA0A9CF3B7");
    assert_eq!(
        hmac,
        "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
    );
    use wechat_pay::wire::SignType;
    assert_eq!(wechat_pay::wire::v2_sign(&params, &key, SignType::Md5), md5);
    assert_eq!(
        wechat_pay::wire::v2_sign(&params, &key, SignType::HmacSha256),
        hmac
    );
    params.insert("sign".into(), md5.to_lowercase());
    wechat_pay::wire::v2_verify(&params, &key, SignType::Md5).unwrap();
    params.insert("sign".into(), hmac);
    wechat_pay::wire::v2_verify(&params, &key, SignType::HmacSha256).unwrap();
    assert!(wechat_pay::wire::v2_verify(&params, &key, SignType::Md5).is_err());
}
