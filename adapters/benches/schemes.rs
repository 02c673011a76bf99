//! The cost of each wallet's signature scheme and of verifying and parsing one
//! callback per adapter, next to the raw RSA-2048 operation they are built on
//! (measured in the same run, so the figures compare as ratios).
//!
//! Groups: `raw` (aws-lc-rs RSA sign / verify of a 300-byte message), `sign` and
//! `verify` per scheme (Alipay RSA2 form, Alipay response, Alipay+ `Signature`
//! header, WeChat v3 `Authorization`, WeChat answer / callback signature, JSAPI
//! `paySign`, v2 HMAC-SHA256 and MD5), and `callback` (`verify_callback`, which
//! checks the signature and parses, per adapter; WeChat's includes the
//! AES-256-GCM decryption). Each benchmark is one operation (`elem/s` = ops/s).
//!
//! Run: `CARGO_TARGET_DIR=/work/target cargo bench -p sesame-adapters --bench
//! schemes -- --warm-up-time 1 --measurement-time 3`

use std::collections::BTreeMap;
use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sesame_adapters::contract::{RawCallback, WalletAdapter};
use sesame_adapters::crypto::{Aes256GcmKey, RsaPrivateKey, RsaPublicKey};
use sesame_adapters::sandbox::LocalKeys;
use sesame_adapters::{alipay, alipay_plus, wechat_pay};

const PKCS8_PEM: &str = include_str!("../testdata/rsa2048_pkcs8.pem");
const SPKI_PEM: &str = include_str!("../testdata/rsa2048_spki.pem");
const CLIENT_ID: &str = "SANDBOX_5YBZ1K2ZAP5T";
const PLUS_BODY: &str = r#"{"paymentResult":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"},"paymentRequestId":"o_3kq8x9","paymentId":"20240501120000110000001","pspId":"A111253100000000","paymentTime":"2024-05-01T12:00:00+08:00","paymentAmount":{"currency":"MOP","value":"880"}}"#;
const WECHAT_TX: &str = r#"{"mchid":"1900000109","appid":"wxd930ea5d5a258f4f","out_trade_no":"o_3kq8x9","transaction_id":"4200000000202405011234567890","trade_type":"NATIVE","trade_state":"SUCCESS","trade_state_desc":"ok","bank_type":"OTHERS","success_time":"2024-05-01T12:00:00+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":880,"payer_total":880,"currency":"MOP","payer_currency":"MOP"}}"#;

fn key() -> RsaPrivateKey {
    RsaPrivateKey::from_pem(PKCS8_PEM).expect("fixture key")
}

fn public() -> RsaPublicKey {
    RsaPublicKey::from_pem(SPKI_PEM).expect("fixture key")
}

fn alipay_request(biz: &str) -> alipay::wire::Request<'_> {
    alipay::wire::Request {
        app_id: alipay::LOCAL_APP_ID,
        method: alipay::wire::method::PRECREATE,
        timestamp: "2024-05-01 12:00:00".into(),
        notify_url: Some("https://gw.example.mo/webhooks/alipay"),
        return_url: None,
        biz_content: biz.to_owned(),
    }
}

fn raw(c: &mut Criterion) {
    let key = key();
    let public = public();
    let mut msg = PLUS_BODY.as_bytes().to_vec();
    msg.resize(300, b' ');
    let sig = key.sign(&msg).expect("sign");
    let mut group = c.benchmark_group("raw_rsa2048");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| b.iter(|| key.sign(black_box(&msg))));
    group.bench_function("verify", |b| {
        b.iter(|| public.verify(black_box(&msg), black_box(&sig)))
    });
    group.finish();
}

fn sign(c: &mut Criterion) {
    let key = key();
    let biz = r#"{"out_trade_no":"o_3kq8x9","total_amount":"8.80","subject":"Egg tarts x6","product_code":"FACE_TO_FACE_PAYMENT","trans_currency":"MOP"}"#;
    let alipay_raw = r#"{"code":"10000","msg":"Success","out_trade_no":"o_3kq8x9","qr_code":"https://qr.alipay.com/bax03431ljhokirwl38f00a7"}"#;
    let v2_key = wechat_pay::wire::SecretText::new("192006250b4c09247ec02edce69f6a2d");
    let v2_params = v2_params();
    let wechat = wechat_adapter();
    let mut group = c.benchmark_group("sign");
    group.throughput(Throughput::Elements(1));
    group.bench_function("alipay_request_form", |b| {
        b.iter(|| alipay_request(black_box(biz)).signed_form(&key))
    });
    group.bench_function("alipay_response", |b| {
        b.iter(|| {
            let sign = key
                .sign_base64(black_box(alipay_raw).as_bytes())
                .expect("sign");
            alipay::wire::response_body("alipay_trade_precreate_response", alipay_raw, &sign)
        })
    });
    group.bench_function("alipay_plus_signature_header", |b| {
        b.iter(|| {
            alipay_plus::wire::sign(
                &key,
                1,
                alipay_plus::wire::PAY_PATH,
                CLIENT_ID,
                "2024-05-01T12:00:00+08:00",
                black_box(PLUS_BODY).as_bytes(),
            )
        })
    });
    group.bench_function("wechat_v3_authorization", |b| {
        b.iter(|| wechat_authorization(&key, black_box(WECHAT_TX)))
    });
    group.bench_function("wechat_answer_signature", |b| {
        b.iter(|| {
            let message = wechat_pay::wire::wechatpay_message(
                "1714536000",
                "n0nce",
                black_box(WECHAT_TX).as_bytes(),
            );
            key.sign_base64(&message)
        })
    });
    group.bench_function("wechat_jsapi_pay_sign", |b| {
        b.iter(|| wechat.jsapi_params(black_box("wx201410272009395522657a690389285100")))
    });
    for (name, sign_type) in V2_SIGN_TYPES {
        group.bench_function(name, |b| {
            b.iter(|| wechat_pay::wire::v2_sign(black_box(&v2_params), &v2_key, sign_type))
        });
    }
    group.finish();
}

/// The two v2 sign types, by benchmark name.
const V2_SIGN_TYPES: [(&str, wechat_pay::wire::SignType); 2] = [
    (
        "wechat_v2_hmac_sha256",
        wechat_pay::wire::SignType::HmacSha256,
    ),
    ("wechat_v2_md5", wechat_pay::wire::SignType::Md5),
];

/// A signed v3 `Authorization` header for a native-order POST of `body`.
fn wechat_authorization(key: &RsaPrivateKey, body: &str) -> String {
    let message = wechat_pay::wire::request_message(
        "POST",
        "/v3/pay/transactions/native",
        "1714536000",
        "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        body,
    );
    wechat_pay::wire::Authorization {
        mchid: "1900000109".into(),
        nonce_str: "5K8264ILTKCH16CQ2502SI8ZNMTM67VS".into(),
        signature: key.sign_base64(message.as_bytes()).expect("sign"),
        timestamp: "1714536000".into(),
        serial_no: "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C".into(),
    }
    .to_header()
}

fn v2_params() -> BTreeMap<String, String> {
    [
        ("appid", "wxd930ea5d5a258f4f"),
        ("mch_id", "1900000109"),
        ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ("body", "Till 1"),
        ("out_trade_no", "o_3kq8x9"),
        ("total_fee", "880"),
        ("fee_type", "MOP"),
        ("spbill_create_ip", "127.0.0.1"),
        ("auth_code", "134567890123450000"),
        ("sign_type", "HMAC-SHA256"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn wechat_adapter() -> wechat_pay::WechatPayAdapter {
    let keys = LocalKeys {
        merchant: key(),
        wallet: key(),
        secret: *b"sesameAPIv3FixtureKey0123456789a",
    };
    let config = wechat_pay::WechatPayConfig::local("http://127.0.0.1:9", &keys).expect("config");
    wechat_pay::WechatPayAdapter::new(config).expect("adapter")
}

fn verify(c: &mut Criterion) {
    let key = key();
    let public = public();
    let biz = r#"{"out_trade_no":"o_3kq8x9","total_amount":"8.80","subject":"Egg tarts x6"}"#;
    let form = alipay_request(biz).signed_form(&key).expect("form");
    let alipay_raw = r#"{"code":"10000","msg":"Success","out_trade_no":"o_3kq8x9","qr_code":"https://qr.alipay.com/bax03431ljhokirwl38f00a7"}"#;
    let alipay_body = alipay::wire::response_body(
        "alipay_trade_precreate_response",
        alipay_raw,
        &key.sign_base64(alipay_raw.as_bytes()).expect("sign"),
    );
    let time = "2024-05-01T12:00:00+08:00";
    let plus_header = alipay_plus::wire::sign(
        &key,
        1,
        alipay_plus::wire::PAY_PATH,
        CLIENT_ID,
        time,
        PLUS_BODY.as_bytes(),
    )
    .expect("sign");
    let authorization = wechat_authorization(&key, WECHAT_TX);
    let answer = wechat_pay::wire::wechatpay_message("1714536000", "n0nce", WECHAT_TX.as_bytes());
    let answer_sig = key.sign_base64(&answer).expect("sign");
    let jsapi = wechat_adapter()
        .jsapi_params("wx201410272009395522657a690389285100")
        .expect("jsapi");
    let v2_key = wechat_pay::wire::SecretText::new("192006250b4c09247ec02edce69f6a2d");

    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    group.bench_function("alipay_request_form", |b| {
        b.iter(|| {
            let pairs = alipay::wire::decode_form(black_box(&form)).expect("form");
            let sign = alipay::wire::param(&pairs, "sign")
                .expect("sign")
                .to_owned();
            let content = alipay::wire::request_sign_content(
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            );
            public.verify_base64(content.as_bytes(), &sign)
        })
    });
    group.bench_function("alipay_response", |b| {
        b.iter(|| {
            alipay::wire::open_response(
                black_box(&alipay_body),
                alipay::wire::method::PRECREATE,
                &public,
            )
        })
    });
    group.bench_function("alipay_plus_signature_header", |b| {
        b.iter(|| {
            alipay_plus::wire::verify(
                &public,
                black_box(&plus_header),
                alipay_plus::wire::PAY_PATH,
                CLIENT_ID,
                time,
                PLUS_BODY.as_bytes(),
            )
        })
    });
    group.bench_function("wechat_v3_authorization", |b| {
        b.iter(|| {
            let parsed =
                wechat_pay::wire::Authorization::parse(black_box(&authorization)).expect("header");
            let message = wechat_pay::wire::request_message(
                "POST",
                "/v3/pay/transactions/native",
                &parsed.timestamp,
                &parsed.nonce_str,
                WECHAT_TX,
            );
            public.verify_base64(message.as_bytes(), &parsed.signature)
        })
    });
    group.bench_function("wechat_answer_signature", |b| {
        b.iter(|| {
            let message = wechat_pay::wire::wechatpay_message(
                "1714536000",
                "n0nce",
                black_box(WECHAT_TX).as_bytes(),
            );
            public.verify_base64(&message, &answer_sig)
        })
    });
    group.bench_function("wechat_jsapi_pay_sign", |b| {
        b.iter(|| {
            let message = wechat_pay::wire::jsapi_message(
                &jsapi["appId"],
                &jsapi["timeStamp"],
                &jsapi["nonceStr"],
                black_box(&jsapi["package"]),
            );
            public.verify_base64(message.as_bytes(), &jsapi["paySign"])
        })
    });
    for (name, sign_type) in V2_SIGN_TYPES {
        let mut signed = v2_params();
        signed.insert(
            "sign".into(),
            wechat_pay::wire::v2_sign(&signed, &v2_key, sign_type),
        );
        group.bench_function(name, |b| {
            b.iter(|| wechat_pay::wire::v2_verify(black_box(&signed), &v2_key, sign_type))
        });
    }
    group.finish();
}

fn callbacks(c: &mut Criterion) {
    let now = Utc::now();
    // Alipay: the form notification of a paid trade.
    let alipay_adapter = alipay::AlipayAdapter::new(alipay::AlipayConfig::new(
        "http://127.0.0.1:9",
        alipay::LOCAL_APP_ID,
        key(),
        public(),
    ))
    .expect("adapter");
    let notify = alipay::wire::Notify {
        notify_time: "2024-05-01 12:00:05".into(),
        notify_type: alipay::wire::NOTIFY_TYPE.into(),
        notify_id: "2024050100222120005ac7cb4a8c1a1f".into(),
        app_id: alipay::LOCAL_APP_ID.into(),
        charset: Some("utf-8".into()),
        version: Some("1.0".into()),
        sign_type: Some("RSA2".into()),
        trade_no: "2024050122001000000000000001".into(),
        out_trade_no: "o_3kq8x9".into(),
        out_biz_no: None,
        buyer_id: Some("2088102177000001".into()),
        buyer_logon_id: Some("159****0001".into()),
        seller_id: Some("2088000000000001".into()),
        trade_status: alipay::wire::TradeStatus::TradeSuccess,
        total_amount: Some("8.80".into()),
        receipt_amount: Some("8.80".into()),
        buyer_pay_amount: Some("8.80".into()),
        refund_fee: None,
        trans_currency: Some("MOP".into()),
        subject: Some("Egg tarts x6".into()),
        gmt_create: Some("2024-05-01 11:59:40".into()),
        gmt_payment: Some("2024-05-01 12:00:00".into()),
        gmt_refund: None,
        gmt_close: None,
    };
    let alipay_cb = RawCallback::new(
        "POST",
        "/webhooks/alipay",
        [("content-type", "application/x-www-form-urlencoded")],
        notify.signed_form(&key()).expect("form").into_bytes(),
        now,
    );
    // Alipay+: notifyPayment.
    let plus_adapter = alipay_plus::AlipayPlusAdapter::new(alipay_plus::AlipayPlusConfig::new(
        "https://open-sea-global.alipayplus.com",
        CLIENT_ID,
        key(),
        public(),
    ))
    .expect("adapter");
    let time = alipay_plus::wire::format_time(&now);
    let plus_cb = RawCallback::new(
        "POST",
        "/webhooks/alipay_plus",
        vec![
            ("Client-Id", CLIENT_ID.to_owned()),
            ("Request-Time", time.clone()),
            (
                "Signature",
                alipay_plus::wire::sign(
                    &key(),
                    1,
                    "/webhooks/alipay_plus",
                    CLIENT_ID,
                    &time,
                    PLUS_BODY.as_bytes(),
                )
                .expect("sign"),
            ),
        ],
        PLUS_BODY.as_bytes().to_vec(),
        now,
    );
    // WeChat Pay: TRANSACTION.SUCCESS with the resource sealed by the APIv3 key.
    let wechat = wechat_adapter();
    let aes = Aes256GcmKey::new(b"sesameAPIv3FixtureKey0123456789a").expect("key");
    let resource = wechat_pay::wire::encrypt_resource(
        &aes,
        "transaction",
        "fdasflkja484",
        "transaction",
        WECHAT_TX.as_bytes(),
    )
    .expect("seal");
    let body = serde_json::json!({
        "id": "EV-2018022511223320873",
        "create_time": "2024-05-01T12:00:00+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": resource,
    })
    .to_string()
    .into_bytes();
    let timestamp = now.timestamp().to_string();
    let signature = key()
        .sign_base64(&wechat_pay::wire::wechatpay_message(
            &timestamp, "n0nce", &body,
        ))
        .expect("sign");
    let wechat_cb = RawCallback::new(
        "POST",
        "/webhooks/wechat_pay",
        vec![
            (
                "Wechatpay-Serial".to_owned(),
                wechat.config().wallet_public_key_id.clone(),
            ),
            ("Wechatpay-Signature".to_owned(), signature),
            ("Wechatpay-Timestamp".to_owned(), timestamp),
            ("Wechatpay-Nonce".to_owned(), "n0nce".to_owned()),
        ],
        body,
        now,
    );
    // Each must verify, or the benchmark would time a refusal.
    alipay_adapter.verify_callback(&alipay_cb).expect("alipay");
    plus_adapter.verify_callback(&plus_cb).expect("alipay_plus");
    wechat.verify_callback(&wechat_cb).expect("wechat_pay");

    let mut group = c.benchmark_group("callback_verify_and_parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("alipay", |b| {
        b.iter(|| alipay_adapter.verify_callback(black_box(&alipay_cb)))
    });
    group.bench_function("alipay_plus", |b| {
        b.iter(|| plus_adapter.verify_callback(black_box(&plus_cb)))
    });
    group.bench_function("wechat_pay", |b| {
        b.iter(|| wechat.verify_callback(black_box(&wechat_cb)))
    });
    group.finish();
}

criterion_group!(benches, raw, sign, verify, callbacks);
criterion_main!(benches);
