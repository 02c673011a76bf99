//! Wallet sandboxes inside the gateway (sandbox mode) and standalone (`sesame sandbox`).

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::Value;
use sesame::config::{StoreBackend, WalletMode};
use sesame_adapters::contract::{AdapterId, CreateOrder, MerchantInfo, PayAction, PayMode};
use sesame_adapters::money::{Currency, Money};

use crate::support::app::{spawn_app, spawn_with};

const ADAPTERS: [&str; 4] = ["alipay", "alipay_plus", "wechat_pay", "kakao_pay"];

#[tokio::test]
async fn every_sandbox_is_mounted_and_issues_test_codes() {
    let app = spawn_app().await;
    for adapter in ADAPTERS {
        let response = app
            .get(&format!("/sandbox/{adapter}/test-codes"), None)
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{adapter}");
        let codes: Value = response.json().await.unwrap();
        assert!(codes.is_array() || codes.is_object(), "{adapter}: {codes}");
        let faults = app.get(&format!("/sandbox/{adapter}/faults"), None).await;
        assert_eq!(faults.status(), StatusCode::OK, "{adapter}");
    }
    assert_eq!(app.state.wallets.configured().len(), 4);
}

#[tokio::test]
async fn an_adapter_creates_a_payment_on_its_in_process_sandbox() {
    let app = spawn_app().await;
    let adapter = app.state.wallets.adapter(AdapterId::Alipay).unwrap();
    let order = CreateOrder {
        order_id: "ord_sandbox_wiring_1".to_owned(),
        amount: Money::parse("12.30", Currency::Mop).unwrap(),
        description: "Coffee".to_owned(),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(15),
        notify_url: app.url("/webhooks/alipay"),
        return_url: None,
        mode: PayMode::DynamicQr,
        payer_id: None,
        user_agent: None,
        brand_params: BTreeMap::new(),
        merchant: MerchantInfo {
            merchant_id: "m_0000000000000000".to_owned(),
            name: "Cafe".to_owned(),
            mcc: "5812".to_owned(),
            city: "MACAU".to_owned(),
            country: "MO".to_owned(),
            ..MerchantInfo::default()
        },
    };
    let created = adapter.create_order(&order).await.unwrap();
    let PayAction::QrString { data } = created.action else {
        panic!("expected a QR string, got {:?}", created.action);
    };
    assert!(
        data.starts_with(&app.address),
        "{data} points at this gateway's sandbox"
    );
    let page = app.client.get(&data).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("12.30"));
}

#[tokio::test]
async fn disabled_wallets_mount_no_sandbox() {
    let app = spawn_with(StoreBackend::Embedded, |s| {
        s.wallets.mode = WalletMode::Disabled
    })
    .await;
    let response = app.get("/sandbox/alipay/test-codes", None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(app.state.wallets.configured().is_empty());
}

#[test]
fn sandbox_keys_are_generated_once_with_private_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let first = sesame::wallets::load_or_create_keys(dir.path()).unwrap();
    let path = dir.path().join(sesame::wallets::KEYS_FILE);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let second = sesame::wallets::load_or_create_keys(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "not regenerated"
    );
    assert_eq!(first.len(), 4);
    for (id, keys) in &first {
        assert_eq!(
            keys.to_pem().unwrap().merchant_pem,
            second[id].to_pem().unwrap().merchant_pem
        );
    }
    std::fs::write(&path, b"{not json").unwrap();
    assert!(
        sesame::wallets::load_or_create_keys(dir.path()).is_err(),
        "corrupt keys are an error, not silently replaced"
    );
}
