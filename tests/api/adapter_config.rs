//! `[adapters.<id>]`: adapters built from configured hosts and credentials (inline or
//! `@file`, set through `SESAME__ADAPTERS__*`), paying through a standalone sandbox
//! process as they would through a wallet; startup refusals that name the key; the
//! production overlay's real hosts; the WeChat client certificate.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sesame::config::{self, Environment, Settings, StoreBackend, WalletMode};
use sesame_adapters::contract::AdapterId;
use sesame_adapters::sandbox::LocalKeys;
use sesame_adapters::{alipay, alipay_plus, kakao_pay, wechat_pay};

use crate::cli::{healthz_ok, sesame, start_on_port_zero};
use crate::payments::{create, pay_at_wallet, shop, wait_status};
use crate::support::app::{TestApp, spawn_reachable, test_settings};

const TEST_KEY: &str = include_str!("../../adapters/testdata/rsa2048_pkcs8.pem");
const TEST_PUBLIC_KEY: &str = include_str!("../../adapters/testdata/rsa2048_spki.pem");
/// A self-signed certificate of `TEST_KEY`, shaped like WeChat's `apiclient_cert.pem`.
const CLIENT_CERT: &str = include_str!("fixtures/wechat_apiclient_cert.pem");
/// The serial number of `CLIENT_CERT` (40 hex, as WeChat's are).
const CLIENT_CERT_SERIAL: &str = "70F28757A38D169029FF1F35B97D82EBBB39B0A7";

/// `sesame sandbox` running in its own process with its own data dir and keys.
struct StandaloneSandbox {
    child: std::process::Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for StandaloneSandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl StandaloneSandbox {
    fn start() -> StandaloneSandbox {
        let dir = tempfile::tempdir().unwrap();
        let mut command = sesame();
        command
            .args(["sandbox", "--bind", "127.0.0.1:0"])
            .env("SESAME__STORE__PATH", dir.path())
            .stderr(Stdio::null());
        let (child, port, _stdout) = start_on_port_zero(command, "Wallet sandboxes listening on ");
        let sandbox = StandaloneSandbox {
            child,
            url: format!("http://127.0.0.1:{port}/sandbox"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !healthz_ok(port) {
            assert!(Instant::now() < deadline, "sandbox did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        sandbox
    }

    /// The keys the sandbox generated on its first start (`sandbox_keys.json`).
    fn keys(&self) -> std::collections::BTreeMap<String, LocalKeys> {
        sesame::wallets::load_or_create_keys(self.dir.path()).unwrap()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    format!("@{}", path.display())
}

fn var(key: &str, value: impl Into<String>) -> (String, String) {
    (key.to_owned(), value.into())
}

/// The environment an operator would set for `sandbox`'s wallets: ids, key files
/// (`@path`) and inline secrets, exactly as each wallet's portal would hand them out.
fn environment_for(sandbox: &StandaloneSandbox, key_dir: &Path) -> Vec<(String, String)> {
    let keys = sandbox.keys();
    let private = |id: &str| keys[id].merchant.to_pkcs8_pem().unwrap();
    let public = |id: &str| keys[id].wallet.public_key().unwrap().to_spki_pem();
    let wechat = &keys["wechat_pay"];
    let api_v3_key = String::from_utf8(wechat.secret.to_vec()).expect("an ASCII APIv3 key");
    vec![
        var(
            "SESAME__ADAPTERS__ALIPAY__BASE_URL",
            format!("{}/alipay", sandbox.url),
        ),
        var("SESAME__ADAPTERS__ALIPAY__APP_ID", alipay::LOCAL_APP_ID),
        var(
            "SESAME__ADAPTERS__ALIPAY__PRIVATE_KEY",
            write(key_dir, "alipay_app_private_key.pem", &private("alipay")),
        ),
        var(
            "SESAME__ADAPTERS__ALIPAY__WALLET_PUBLIC_KEY",
            write(key_dir, "alipay_public_key.pem", &public("alipay")),
        ),
        var(
            "SESAME__ADAPTERS__ALIPAY_PLUS__BASE_URL",
            format!("{}/alipay_plus", sandbox.url),
        ),
        var(
            "SESAME__ADAPTERS__ALIPAY_PLUS__CLIENT_ID",
            alipay_plus::sandbox::LOCAL_CLIENT_ID,
        ),
        var("SESAME__ADAPTERS__ALIPAY_PLUS__KEY_VERSION", "1"),
        var(
            "SESAME__ADAPTERS__ALIPAY_PLUS__PRIVATE_KEY",
            write(
                key_dir,
                "alipay_plus_private_key.pem",
                &private("alipay_plus"),
            ),
        ),
        // Inline PEM works as well as a file.
        var(
            "SESAME__ADAPTERS__ALIPAY_PLUS__WALLET_PUBLIC_KEY",
            public("alipay_plus"),
        ),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__BASE_URL",
            format!("{}/wechat_pay", sandbox.url),
        ),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__MCHID",
            wechat_pay::LOCAL_MCHID,
        ),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__APPID",
            wechat_pay::LOCAL_APPID,
        ),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__SERIAL_NO",
            wechat_pay::local_merchant_serial(&wechat.merchant.public_key().unwrap()),
        ),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__PRIVATE_KEY",
            write(key_dir, "apiclient_key.pem", &private("wechat_pay")),
        ),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__API_V3_KEY",
            write(key_dir, "wechat_api_v3_key.txt", &format!("{api_v3_key}\n")),
        ),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__PLATFORM_SERIAL",
            wechat_pay::local_wallet_key_id(&wechat.wallet.public_key().unwrap()),
        ),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__PLATFORM_PUBLIC_KEY",
            write(key_dir, "wechatpay_public_key.pem", &public("wechat_pay")),
        ),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__API_V2_KEY",
            wechat_pay::local_api_v2_key(&wechat.secret).expose(),
        ),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__APP_SECRET",
            wechat_pay::local_app_secret(&wechat.secret).expose(),
        ),
        var(
            "SESAME__ADAPTERS__KAKAO_PAY__BASE_URL",
            format!("{}/kakao_pay", sandbox.url),
        ),
        var(
            "SESAME__ADAPTERS__KAKAO_PAY__CID",
            kakao_pay::wire::TEST_CID,
        ),
        var(
            "SESAME__ADAPTERS__KAKAO_PAY__SECRET_KEY",
            kakao_pay::sandbox::local_secret_key(&keys["kakao_pay"])
                .unwrap()
                .expose(),
        ),
    ]
}

/// Production also needs its public address and admin token: given here, so each
/// test speaks only of wallets.
const PRODUCTION_BASICS: [(&str, &str); 2] = [
    ("SESAME__SERVER__PUBLIC_BASE_URL", "https://pay.example.mo"),
    (
        "SESAME__ADMIN__TOKEN",
        "adm_production_test_token_0123456789",
    ),
];

fn load(environment: Environment, vars: &[(String, String)]) -> Result<Settings, String> {
    let mut all: Vec<(String, String)> = Vec::new();
    if environment == Environment::Production {
        all.extend(PRODUCTION_BASICS.iter().map(|(k, v)| var(k, *v)));
    }
    all.extend_from_slice(vars);
    config::load_with_vars(&config::config_dir(), environment, None, &all)
        .map_err(|e| e.to_string())
}

/// A `pays_at_once` test payment code starting `prefix` from the sandboxes at `base`.
pub(crate) async fn test_code(base: &str, adapter: &str, prefix: &str) -> String {
    let codes: Value = reqwest::get(format!("{base}/{adapter}/test-codes"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    codes
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["behaviour"] == "pays_at_once" && c["code"].as_str().unwrap().starts_with(prefix)
        })
        .and_then(|c| c["code"].as_str())
        .unwrap_or_else(|| panic!("no code with prefix {prefix} in {codes}"))
        .to_owned()
}

fn statement_url(base: &str, adapter: &str) -> String {
    let today = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .format("%Y-%m-%d");
    format!("{base}/{adapter}/statement?date={today}")
}

async fn text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn adapters_configured_from_the_environment_with_key_files_pay_through_a_standalone_sandbox()
{
    let sandbox = StandaloneSandbox::start();
    let key_dir = tempfile::tempdir().unwrap();
    let loaded = load(
        Environment::Test,
        &environment_for(&sandbox, key_dir.path()),
    )
    .unwrap();
    // The gateway's data dir has sandbox keys of its own: only the configured key
    // files can make the standalone sandbox accept its signatures.
    let app = spawn_reachable(StoreBackend::Embedded, |s| s.adapters = loaded.adapters).await;
    for id in AdapterId::ALL {
        assert_eq!(
            app.state.wallets.endpoint(id),
            Some(format!("{}/{id}", sandbox.url).as_str()),
            "{id} talks to its base_url"
        );
    }
    let shop = shop(&app).await;

    for (wallet, amount, currency, adapter) in [
        ("mpay", "25.50", "MOP", "alipay_plus"),
        ("alipay_cn", "12.30", "CNY", "alipay"),
        ("kakao_pay", "15000", "KRW", "kakao_pay"),
    ] {
        let order = create(
            &app,
            &shop,
            json!({"amount": amount, "currency": currency, "description": "Coffee", "wallet": wallet}),
        )
        .await;
        assert_eq!(order["adapter"], adapter, "{order}");
        assert_eq!(order["status"], "pending", "{order}");
        assert!(
            crate::payments::cashier_url(&app, &order).starts_with(&sandbox.url),
            "the cashier is the standalone sandbox's: {order}"
        );
        pay_at_wallet(&app, &order).await;
        wait_status(&app, &shop, order["id"].as_str().unwrap(), "succeeded").await;
    }

    // WeChat: the sandbox's callback is encrypted with the APIv3 key typed in
    // the configuration, signed with the platform key, and must be decrypted here.
    let order = create(
        &app,
        &shop,
        json!({"amount": "19.90", "currency": "MOP", "description": "Tea", "wallet": "wechat_pay"}),
    )
    .await;
    let id = order["id"].as_str().unwrap();
    let confirm = app
        .client
        .post(format!("{}/wechat_pay/pay/{id}/confirm", sandbox.url))
        .send()
        .await
        .unwrap();
    assert!(confirm.status().is_success(), "{}", confirm.status());
    wait_status(&app, &shop, id, "succeeded").await;

    // Customer codes: WeChat micropay signs with the API v2 key; Alipay+ with the RSA key.
    for (adapter, prefix) in [("wechat_pay", "13"), ("alipay_plus", "280853")] {
        let code = test_code(&sandbox.url, adapter, prefix).await;
        let order = create(
            &app,
            &shop,
            json!({"amount": "9.90", "currency": "MOP", "description": "Cake", "auth_code": code}),
        )
        .await;
        assert_eq!(order["status"], "succeeded", "{adapter}: {order}");
        assert_eq!(order["adapter"], adapter);
    }

    let outside = text(&statement_url(&sandbox.url, "alipay_plus")).await;
    let inside = text(&statement_url(&app.url("/sandbox"), "alipay_plus")).await;
    let paid: Value = app
        .get("/v1/orders?status=succeeded", Some(&shop.key))
        .await
        .json()
        .await
        .unwrap();
    let mpay = paid["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["wallet"] == "mpay" && o["mode"] != "customer_code")
        .unwrap_or_else(|| panic!("{paid}"));
    let mpay_id = mpay["id"].as_str().unwrap();
    assert!(outside.contains(mpay_id), "{outside}");
    assert!(!inside.contains(mpay_id), "never the in-process sandbox");
    assert_eq!(paid["data"].as_array().unwrap().len(), 6);
    app.assert_ledger_ok().await;
}

/// Test settings with every adapter off but `id`, in live mode (no sandbox needed).
fn live_only(dir: &Path, id: AdapterId) -> Settings {
    let mut settings = test_settings(dir);
    settings.wallets.mode = WalletMode::Live;
    let a = &mut settings.adapters;
    a.alipay.enabled = id == AdapterId::Alipay;
    a.alipay_plus.enabled = id == AdapterId::AlipayPlus;
    a.wechat_pay.enabled = id == AdapterId::WechatPay;
    a.kakao_pay.enabled = id == AdapterId::KakaoPay;
    settings
}

async fn startup_error(settings: Settings) -> String {
    match sesame::startup::Application::build(settings).await {
        Ok(_) => panic!("the gateway started"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_key_that_is_missing_unreadable_or_not_a_key_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let alipay = |private_key: &str| {
        let mut settings = live_only(dir.path(), AdapterId::Alipay);
        let s = &mut settings.adapters.alipay;
        s.base_url = "https://openapi.alipay.com".into();
        s.app_id = "2021000000000001".into();
        s.private_key = config::Credential::new(private_key);
        s.wallet_public_key = config::Credential::new(TEST_PUBLIC_KEY);
        settings
    };

    let missing = keys.path().join("nowhere.pem");
    let error = startup_error(alipay(&format!("@{}", missing.display()))).await;
    assert!(
        error.contains("adapters.alipay.private_key")
            && error.contains(&missing.display().to_string())
            && error.contains("cannot be read"),
        "{error}"
    );

    let garbage = write(keys.path(), "garbage.pem", "hello, not a key\n");
    let error = startup_error(alipay(&garbage)).await;
    assert!(
        error.contains("adapters.alipay.private_key")
            && error.contains("not a valid RSA private key"),
        "{error}"
    );

    // A public key where the private key belongs: refused, and nothing of it printed.
    let public = write(keys.path(), "public.pem", TEST_PUBLIC_KEY);
    let error = startup_error(alipay(&public)).await;
    assert!(error.contains("adapters.alipay.private_key"), "{error}");
    let body_line = TEST_PUBLIC_KEY.lines().nth(1).unwrap();
    assert!(!error.contains(body_line), "key material in {error}");

    let error = startup_error(alipay(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
    ))
    .await;
    assert!(
        error.contains("adapters.alipay.private_key (inline)"),
        "{error}"
    );

    // With every key in place the same settings start.
    let settings = alipay(TEST_KEY);
    let wallets = sesame::wallets::build(&settings, "http://127.0.0.1:9").unwrap();
    assert_eq!(wallets.configured(), [AdapterId::Alipay]);
    assert!(wallets.sandboxes.is_none(), "live mode mounts no sandbox");
}

#[tokio::test]
async fn an_adapter_with_a_base_url_but_no_credentials_never_falls_back_to_its_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    assert_eq!(settings.wallets.mode, WalletMode::Sandbox);
    settings.adapters.kakao_pay.base_url = "https://open-api.kakaopay.com".into();
    let error = startup_error(settings).await;
    assert!(
        error.contains("adapters.kakao_pay.cid, adapters.kakao_pay.secret_key not set"),
        "{error}"
    );

    let mut settings = live_only(dir.path(), AdapterId::KakaoPay);
    settings.adapters.kakao_pay.cid = "TC0ONETIME".into();
    settings.adapters.kakao_pay.secret_key = config::Credential::new("DEVSECRET");
    let error = startup_error(settings).await;
    assert!(
        error.contains("wallets.mode = \"live\": adapters.kakao_pay.base_url not set"),
        "live mode needs the host: {error}"
    );
}

#[test]
fn production_refuses_to_start_without_wallet_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let out = sesame()
        .arg("serve")
        .env("SESAME_ENV", "production")
        .envs(PRODUCTION_BASICS)
        .env("SESAME__STORE__PATH", dir.path())
        .env("SESAME__SERVER__BIND", "127.0.0.1:0")
        .env("SESAME__ADAPTERS__ALIPAY__APP_ID", "2021000000000001")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "production started without credentials"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("adapters.alipay.private_key")
            && !stderr.contains("adapters.alipay.app_id")
            && stderr.contains("adapters.wechat_pay.client_cert")
            && stderr.contains("adapters.kakao_pay.secret_key")
            && stderr.contains("SESAME__ADAPTERS__"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("listening"), "{stdout}");

    for (vars, needle) in [
        (
            vec![var("SESAME__WALLETS__MODE", "sandbox")],
            "refused in production",
        ),
        (
            vec![var(
                "SESAME__ADAPTERS__KAKAO_PAY__BASE_URL",
                "http://open-api.kakaopay.com",
            )],
            "https only",
        ),
    ] {
        let error = load(Environment::Production, &vars).unwrap_err();
        assert!(error.contains(needle), "{error}");
    }
}

/// Every production credential, inline or as files in `dir`.
fn production_credentials(dir: &Path) -> Vec<(String, String)> {
    let key = write(dir, "key.pem", TEST_KEY);
    let public = write(dir, "public.pem", TEST_PUBLIC_KEY);
    vec![
        var("SESAME__ADAPTERS__ALIPAY__APP_ID", "2021000000000001"),
        var("SESAME__ADAPTERS__ALIPAY__PRIVATE_KEY", &key),
        var("SESAME__ADAPTERS__ALIPAY__WALLET_PUBLIC_KEY", &public),
        var(
            "SESAME__ADAPTERS__ALIPAY_PLUS__CLIENT_ID",
            "2188120000000001",
        ),
        var("SESAME__ADAPTERS__ALIPAY_PLUS__PRIVATE_KEY", &key),
        var("SESAME__ADAPTERS__ALIPAY_PLUS__WALLET_PUBLIC_KEY", &public),
        var("SESAME__ADAPTERS__WECHAT_PAY__MCHID", "1900000109"),
        var("SESAME__ADAPTERS__WECHAT_PAY__APPID", "wxd930ea5d5a258f4f"),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__SERIAL_NO",
            CLIENT_CERT_SERIAL,
        ),
        var("SESAME__ADAPTERS__WECHAT_PAY__PRIVATE_KEY", &key),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__API_V3_KEY",
            "00000000000000000000000000000123",
        ),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__PLATFORM_SERIAL",
            "PUB_KEY_ID_0114232019092300000000000000000001",
        ),
        var("SESAME__ADAPTERS__WECHAT_PAY__PLATFORM_PUBLIC_KEY", &public),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__API_V2_KEY",
            "192006250b4c09247ec02edce69f6a2d",
        ),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__APP_SECRET",
            "appsecret-of-the-official-account",
        ),
        var(
            "SESAME__ADAPTERS__WECHAT_PAY__CLIENT_CERT",
            write(dir, "apiclient_cert.pem", CLIENT_CERT),
        ),
        var("SESAME__ADAPTERS__KAKAO_PAY__CID", "CT00000001"),
        var(
            "SESAME__ADAPTERS__KAKAO_PAY__SECRET_KEY",
            "PRDSECRETKEY0123456789",
        ),
    ]
}

#[test]
fn production_talks_to_the_real_wallet_hosts_once_every_credential_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let settings = load(Environment::Production, &production_credentials(dir.path())).unwrap();
    assert_eq!(settings.wallets.mode, WalletMode::Live);
    // The all-digit APIv3 key is kept as typed, not read as a number.
    let wallets = sesame::wallets::build(&settings, "http://127.0.0.1:9").unwrap();
    assert!(wallets.sandboxes.is_none());
    for (id, host) in [
        (AdapterId::Alipay, "https://openapi.alipay.com"),
        (
            AdapterId::AlipayPlus,
            "https://open-sea-global.alipayplus.com",
        ),
        (AdapterId::WechatPay, "https://api.mch.weixin.qq.com"),
        (AdapterId::KakaoPay, "https://open-api.kakaopay.com"),
    ] {
        assert_eq!(wallets.endpoint(id), Some(host), "{id}");
    }
    let wechat = wallets.wechat.as_ref().unwrap().config();
    assert_eq!(wechat.oauth_base_url, "https://open.weixin.qq.com");
    assert_eq!(wechat.sns_base_url, "https://api.weixin.qq.com");
    assert!(
        wechat.client_identity.is_some(),
        "the /secapi client certificate"
    );
    assert_eq!(
        wechat.api_v2_key.expose(),
        "192006250b4c09247ec02edce69f6a2d"
    );
    let printed = format!("{wechat:?}");
    assert!(
        !printed.contains("192006250b4c09247ec02edce69f6a2d")
            && !printed.contains("appsecret-of-the-official-account")
            && !printed.contains(TEST_KEY.lines().nth(1).unwrap()),
        "{printed}"
    );
    let debug = format!("{:?}", settings.adapters);
    assert!(
        !debug.contains("PRDSECRETKEY") && !debug.contains("00000000000000000000000000000123"),
        "{debug}"
    );
}

#[test]
fn a_wechat_client_certificate_that_is_not_its_keys_or_no_certificate_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = production_credentials(dir.path());
    for id in ["ALIPAY", "ALIPAY_PLUS", "KAKAO_PAY"] {
        vars.push(var(&format!("SESAME__ADAPTERS__{id}__ENABLED"), "false"));
    }
    let build = |extra: &[(String, String)]| {
        let mut all = vars.clone();
        all.extend_from_slice(extra);
        let settings = load(Environment::Production, &all).unwrap();
        sesame::wallets::build(&settings, "http://127.0.0.1:9")
            .map(|w| w.configured())
            .map_err(|e| e.to_string())
    };
    assert_eq!(build(&[]), Ok(vec![AdapterId::WechatPay]));

    let other_key = sesame_adapters::crypto::RsaPrivateKey::generate_2048()
        .unwrap()
        .to_pkcs8_pem()
        .unwrap();
    let error = build(&[var(
        "SESAME__ADAPTERS__WECHAT_PAY__CLIENT_KEY",
        write(dir.path(), "other_key.pem", &other_key),
    )])
    .unwrap_err();
    assert!(
        error.contains("adapters.wechat_pay.client_cert") && error.contains("does not certify"),
        "{error}"
    );

    let not_a_cert = write(dir.path(), "not_a_cert.pem", TEST_PUBLIC_KEY);
    let error = build(&[var(
        "SESAME__ADAPTERS__WECHAT_PAY__CLIENT_CERT",
        &not_a_cert,
    )])
    .unwrap_err();
    assert!(
        error.contains("adapters.wechat_pay.client_cert") && error.contains(&not_a_cert),
        "{error}"
    );

    let error = build(&[var(
        "SESAME__ADAPTERS__WECHAT_PAY__API_V3_KEY",
        "0123456789abcdef",
    )])
    .unwrap_err();
    assert!(
        error.contains("adapters.wechat_pay.api_v3_key") && error.contains("got 16 characters"),
        "{error}"
    );
}

#[test]
fn an_environment_override_of_a_nested_adapter_key_is_taken_as_text() {
    let settings = load(
        Environment::Test,
        &[
            var("SESAME__ADAPTERS__ALIPAY__APP_ID", "0021000000000001"),
            var("SESAME__ADAPTERS__ALIPAY_PLUS__KEY_VERSION", "2"),
            var("SESAME__ADAPTERS__KAKAO_PAY__ENABLED", "false"),
            var("SESAME__ADAPTERS__WECHAT_PAY__TIMEOUT_MS", "2500"),
            var("SESAME__ADAPTERS__WECHAT_PAY__MCHID", "1900000109"),
            var("SESAME__SERVER__WORKERS", "3"),
        ],
    )
    .unwrap();
    assert_eq!(
        settings.adapters.alipay.app_id, "0021000000000001",
        "leading zero kept"
    );
    assert_eq!(settings.adapters.alipay_plus.key_version, 2);
    assert!(!settings.adapters.kakao_pay.enabled);
    assert!(settings.adapters.alipay.enabled);
    assert_eq!(settings.adapters.wechat_pay.timeout_ms, 2500);
    assert_eq!(settings.adapters.wechat_pay.mchid, "1900000109");
    assert_eq!(settings.server.workers, 3);

    let error = load(
        Environment::Test,
        &[var(
            "SESAME__ADAPTERS__ALIPAY__PRIVATEKEY",
            "@/etc/sesame/alipay.pem",
        )],
    )
    .unwrap_err();
    assert!(
        error.contains("privatekey"),
        "a misspelt key is refused: {error}"
    );
}

#[tokio::test]
async fn a_switched_off_adapter_is_not_configured_and_its_brands_take_their_rail() {
    let app: TestApp = spawn_reachable(StoreBackend::Embedded, |s| {
        s.adapters.kakao_pay.enabled = false;
    })
    .await;
    assert!(!app.state.wallets.is_configured(AdapterId::KakaoPay));
    let shop = shop(&app).await;
    let order = create(
        &app,
        &shop,
        json!({"amount": "15000", "currency": "KRW", "description": "Kimbap", "wallet": "kakao_pay"}),
    )
    .await;
    assert_eq!(order["adapter"], "alipay_plus", "{order}");
    assert_eq!(order["wallet"], "kakao_pay");
    pay_at_wallet(&app, &order).await;
    wait_status(&app, &shop, order["id"].as_str().unwrap(), "succeeded").await;
}
