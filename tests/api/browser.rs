//! The shopper flow in a real headless Chromium (driven through chromedriver), one
//! wallet's in-app User-Agent per test: open the plate URL (or a POS order's gateway
//! URL), check the merchant, type the amount, Pay, pay (or cancel) on the wallet
//! sandbox's cashier — on this origin or another — and land on the status page; then
//! check the order, its ledger entry and the merchant webhook. Also: double submit,
//! expiry by the order's lifetime, WeChat's sheet cancelled, Chinese and Portuguese,
//! and no sideways scrolling at 320 px. Each final page is saved to
//! `artifacts/screenshots/<test>.png` (not committed).
//!
//! Needs `chromium` and `chromium-driver` (Debian packages; `.ci/run` installs them).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use sesame::config::StoreBackend;
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::payments::{Shop, wait_status};
use crate::shopper::{MPAY_UA, PLAIN_UA, Plated, WECHAT_UA, orders_of, plated};
use crate::support::app::{TestApp, spawn_reachable, spawn_with_clock};

const ALIPAY_HK_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 AliApp(APHK/15.1.0) AlipayClientHK/15.1.0 Language/zh-Hant";
const ALIPAY_CN_UA: &str = "Mozilla/5.0 (Linux; U; Android 13; zh-CN; V2203A) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/69.0 Mobile Safari/537.36 AliApp(AP/10.5.36.8100) AlipayClient/10.5.36.8100 Language/zh-Hans";
const KAKAO_UA: &str = "Mozilla/5.0 (Linux; Android 14; SM-S918N) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36 KAKAOTALK 10.4.5";

/// Browsers running at once (the machine has two cores).
static SLOTS: Semaphore = Semaphore::const_new(2);

struct Browser {
    client: Client,
    driver: Child,
    webdriver: String,
    _profile: tempfile::TempDir,
    _slot: SemaphorePermit<'static>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A chromedriver on a free port, answering `ready` on its own `/status` (another
/// test's server may have taken the port between choosing and binding it: then this
/// driver exits and another port is tried).
async fn start_chromedriver() -> (Child, String) {
    for _attempt in 0..5 {
        let port = free_port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (apt-get install chromium chromium-driver)");
        let webdriver = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = driver.try_wait() {
                break;
            }
            let status = match reqwest::get(format!("{webdriver}/status")).await {
                Ok(response) => response.json::<Value>().await.ok(),
                Err(_) => None,
            };
            if status.is_some_and(|s| s["value"]["ready"] == true) {
                return (driver, webdriver);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = driver.kill().await;
    }
    panic!("chromedriver did not start");
}

fn chromium_binary() -> String {
    std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

impl Browser {
    async fn start(user_agent: &str) -> Browser {
        let slot = SLOTS.acquire().await.expect("browser slots");
        let (driver, webdriver) = start_chromedriver().await;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium_binary(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--window-size=390,844",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--user-agent={user_agent}"),
                ],
            }),
        );
        // chromedriver listens on plain HTTP on loopback: no TLS connector needed.
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&webdriver)
            .await
            .expect("a chromium session");
        Browser {
            client,
            driver,
            webdriver,
            _profile: profile,
            _slot: slot,
        }
    }

    /// Runs `script` at the start of every page this tab loads from now on, before the
    /// page's own scripts (Chrome DevTools `Page.addScriptToEvaluateOnNewDocument`,
    /// through chromedriver): how a test stands in for an app's JavaScript bridge.
    async fn before_every_page(&self, script: &str) {
        let session = self
            .client
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        let response = reqwest::Client::new()
            .post(format!(
                "{}/session/{session}/goog/cdp/execute",
                self.webdriver
            ))
            .json(&json!({
                "cmd": "Page.addScriptToEvaluateOnNewDocument",
                "params": {"source": script},
            }))
            .send()
            .await
            .expect("chromedriver answers");
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    }

    /// The page at `width` px: its viewport and content widths (equal when nothing
    /// scrolls sideways).
    async fn widths_at(&self, width: u32) -> (i64, i64) {
        self.client.set_window_size(width, 700).await.unwrap();
        let widths = self
            .client
            .execute(
                "return [window.innerWidth, document.documentElement.scrollWidth];",
                vec![],
            )
            .await
            .unwrap();
        (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap())
    }

    async fn current_url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// The element's text once it is shown. A page that reloads itself (the status
    /// page does when the order changes) may replace the element between finding and
    /// reading it: find it again until the deadline.
    async fn text(&self, css: &str) -> String {
        self.retry(css, |element| async move { element.text().await })
            .await
    }

    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.retry(css, |element| async move { Ok(element) }).await
    }

    /// Clicks `css` once it is shown. Only an element replaced before the click took
    /// effect (stale) is found and clicked again; a click that started a navigation
    /// may report that navigation as an error, and clicking again would click twice.
    async fn click(&self, css: &str) {
        self.retry(css, |element| async move {
            match element.click().await {
                Err(e) if e.is_stale_element_reference() || e.is_no_such_element() => Err(e),
                _ => Ok(()),
            }
        })
        .await;
    }

    /// Finds `css` and applies `act` to it, retrying for up to 30 s on any WebDriver
    /// error: not found yet, stale after a reload, or "aborted by navigation" while the
    /// page is being replaced. Fails with the page's URL and source.
    async fn retry<T, F, Fut>(&self, css: &str, act: F) -> T
    where
        F: Fn(fantoccini::elements::Element) -> Fut,
        Fut: std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let outcome = match self.client.find(Locator::Css(css)).await {
                Ok(element) => act(element).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(value) => return value,
                Err(e) if Instant::now() >= deadline => {
                    let url = self.client.current_url().await.map(|u| u.to_string());
                    let source = self.client.source().await.unwrap_or_default();
                    panic!("{css} never appeared ({e}); at {url:?}:\n{source}");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    /// Saves the current page and ends the session.
    async fn finish(mut self, test: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{test}.png")), png).expect("save screenshot");
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}

/// A request counter from `/metrics`; 0 until the first such request was served.
async fn requests_served(app: &TestApp, series: &str) -> f64 {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Opens the plate, checks the merchant shown first, types the amount and presses Pay.
async fn open_and_pay(
    browser: &Browser,
    app: &TestApp,
    p: &Plated,
    merchant: &str,
    amount: &str,
    pick: Option<&str>,
) {
    browser
        .client
        .goto(&app.url(&format!("/q/{}", p.token)))
        .await
        .expect("open plate");
    assert_eq!(browser.text("#merchant").await, merchant);
    if let Some(brand) = pick {
        browser.click(&format!("#w-{brand}")).await;
    }
    browser.type_into("#amount", amount).await;
    browser.click("#submit").await;
}

async fn the_only_order(app: &TestApp, shop: &Shop) -> String {
    let orders = orders_of(app, shop).await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    orders[0]["id"].as_str().unwrap().to_owned()
}

/// The order is paid, posted once and announced to the merchant.
async fn assert_paid(app: &TestApp, shop: &Shop, id: &str, amount: &str, wallet: &str, mode: &str) {
    let order = wait_status(app, shop, id, "succeeded").await;
    assert_eq!(order["amount"], amount);
    assert_eq!(order["wallet"], wallet);
    assert_eq!(order["mode"], mode);
    let payments: Vec<&Value> = order["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "payment")
        .collect();
    assert_eq!(payments.len(), 1, "{order}");
    let hooks = shop.endpoint.wait_for("order.succeeded", 1, 20).await;
    assert_eq!(hooks[0].body["data"]["id"], id);
    app.assert_ledger_ok().await;
}

async fn a_wallet_pays_from_the_plate(
    test: &str,
    ua: &str,
    currency: &str,
    amount: &str,
    wallet: &str,
    pick: Option<&str>,
) {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, currency).await;
    let merchant = if currency == "MOP" {
        "Cafe Nam Van"
    } else {
        "Seoul Bapsang"
    };
    let browser = Browser::start(ua).await;
    open_and_pay(&browser, &app, &p, merchant, amount, pick).await;
    if wallet != "wechat_pay" {
        browser.click("#pay").await;
    }
    browser.wait_for("#status[data-status='succeeded']").await;
    assert!(browser.text("#amount").await.contains(currency));
    let id = the_only_order(&app, &p.shop).await;
    assert_eq!(browser.text("#order").await, id);
    assert_paid(&app, &p.shop, &id, amount, wallet, "static_scan").await;
    browser.finish(test).await;
}

#[tokio::test]
async fn browser_mpay_pays_a_plate() {
    a_wallet_pays_from_the_plate("mpay_pays_a_plate", MPAY_UA, "MOP", "12.30", "mpay", None).await;
}

#[tokio::test]
async fn browser_alipay_hk_pays_a_plate() {
    a_wallet_pays_from_the_plate(
        "alipay_hk_pays_a_plate",
        ALIPAY_HK_UA,
        "MOP",
        "7.50",
        "alipay_hk",
        None,
    )
    .await;
}

#[tokio::test]
async fn browser_alipay_cn_pays_a_plate() {
    a_wallet_pays_from_the_plate(
        "alipay_cn_pays_a_plate",
        ALIPAY_CN_UA,
        "MOP",
        "45.00",
        "alipay_cn",
        None,
    )
    .await;
}

#[tokio::test]
async fn browser_wechat_pays_a_plate_through_oauth_and_jsapi() {
    a_wallet_pays_from_the_plate(
        "wechat_pays_a_plate",
        WECHAT_UA,
        "MOP",
        "3.20",
        "wechat_pay",
        None,
    )
    .await;
}

#[tokio::test]
async fn browser_kakao_pays_a_krw_plate_directly() {
    a_wallet_pays_from_the_plate(
        "kakao_pays_a_krw_plate",
        KAKAO_UA,
        "KRW",
        "12000",
        "kakao_pay",
        None,
    )
    .await;
}

#[tokio::test]
async fn browser_unknown_browser_picks_a_wallet_and_pays() {
    a_wallet_pays_from_the_plate(
        "picker_pays_a_plate",
        PLAIN_UA,
        "MOP",
        "18.80",
        "alipay_hk",
        Some("alipay_hk"),
    )
    .await;
}

#[tokio::test]
async fn browser_invalid_amount_is_shown_next_to_the_field() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let browser = Browser::start(MPAY_UA).await;
    // A small phone: the page (here with its error shown) must not scroll sideways.
    browser.client.set_window_size(320, 640).await.unwrap();
    open_and_pay(&browser, &app, &p, "Cafe Nam Van", "12.3456", None).await;
    assert_eq!(
        browser.text("#amount-error").await,
        "MOP amounts have at most 2 decimal places."
    );
    let (viewport, content) = browser.widths_at(320).await;
    assert_eq!(viewport, 320);
    assert!(content <= 320, "content {content} px wider than 320 px");
    let field = browser.wait_for("#amount").await;
    assert_eq!(
        field.attr("aria-describedby").await.unwrap().as_deref(),
        Some("amount-error")
    );
    assert!(orders_of(&app, &p.shop).await.is_empty());
    browser.type_into("#amount", "12.34").await;
    browser.click("#submit").await;
    browser.click("#pay").await;
    browser.wait_for("#status[data-status='succeeded']").await;
    let id = the_only_order(&app, &p.shop).await;
    assert_paid(&app, &p.shop, &id, "12.34", "mpay", "static_scan").await;
    browser.finish("invalid_amount_then_paid").await;
}

#[tokio::test]
async fn browser_double_submit_sends_two_posts_and_makes_one_order() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let browser = Browser::start(MPAY_UA).await;
    browser
        .client
        .goto(&app.url(&format!("/q/{}", p.token)))
        .await
        .unwrap();
    browser.type_into("#amount", "9.90").await;
    // The same form (same nonce) submitted twice: into a second window, then here —
    // two browsing contexts, so neither submission cancels the other.
    browser
        .client
        .execute(
            "var f = document.querySelector('form[method=post]');
             window.open('about:blank', 'second');
             var submit = HTMLFormElement.prototype.submit;
             f.target = 'second'; submit.call(f);
             f.target = '_self'; submit.call(f);
             return true;",
            vec![],
        )
        .await
        .unwrap();
    let posts =
        "sesame_http_requests_total{method=\"POST\",route=\"/q/{token}/pay\",status=\"303\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    while requests_served(&app, posts).await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the browser sent fewer than two POSTs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.click("#pay").await;
    browser.wait_for("#status[data-status='succeeded']").await;
    let id = the_only_order(&app, &p.shop).await;
    assert_paid(&app, &p.shop, &id, "9.90", "mpay", "static_scan").await;
    assert_eq!(requests_served(&app, posts).await, 2.0);
    browser.finish("double_submit_one_order").await;
}

#[tokio::test]
async fn browser_cancelled_payment_fails_tells_the_merchant_and_offers_to_pay_again() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let browser = Browser::start(MPAY_UA).await;
    open_and_pay(&browser, &app, &p, "Cafe Nam Van", "5.00", None).await;
    browser.click("#cancel").await;
    let id = the_only_order(&app, &p.shop).await;
    let order = wait_status(&app, &p.shop, &id, "failed").await;
    assert!(
        order["ledger"].as_array().unwrap().is_empty(),
        "nothing posted"
    );
    let hooks = p.shop.endpoint.wait_for("order.failed", 1, 20).await;
    assert_eq!(hooks[0].body["data"]["id"], id.as_str());
    assert_eq!(hooks[0].body["data"]["status"], "failed");
    browser.wait_for("#status[data-status='failed']").await;
    assert_eq!(browser.text("#status").await, "Payment failed");
    browser.click("#again").await;
    assert_eq!(browser.text("#merchant").await, "Cafe Nam Van");
    browser.finish("cancelled_payment").await;
}

#[tokio::test]
async fn browser_an_order_past_its_lifetime_expires_with_a_way_back() {
    let clock = sesame::clock::ManualClock::new(chrono::Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let p = plated(&app, "MOP").await;
    let browser = Browser::start(MPAY_UA).await;
    open_and_pay(&browser, &app, &p, "Cafe Nam Van", "6.60", None).await;
    browser.wait_for("#pay").await;
    let id = the_only_order(&app, &p.shop).await;
    // The order's lifetime (payments.order_ttl_secs, 900 s) passes: the reconciler
    // closes it at the wallet and expires it.
    clock.advance(901_000);
    wait_status(&app, &p.shop, &id, "expired").await;
    let hooks = p.shop.endpoint.wait_for("order.expired", 1, 20).await;
    assert_eq!(hooks[0].body["data"]["id"], id.as_str());
    browser
        .client
        .goto(&app.url(&format!("/o/{id}")))
        .await
        .unwrap();
    browser.wait_for("#status[data-status='expired']").await;
    assert_eq!(browser.text("#status").await, "Payment not completed");
    let again = browser.wait_for("#again").await;
    assert_eq!(
        again.attr("href").await.unwrap().as_deref(),
        Some(format!("/q/{}", p.token).as_str())
    );
    browser.finish("expired_order").await;
}

#[tokio::test]
async fn browser_status_pages_fit_320_px_in_every_language() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let browser = Browser::start(MPAY_UA).await;
    open_and_pay(&browser, &app, &p, "Cafe Nam Van", "123456.78", None).await;
    browser.click("#pay").await;
    browser.wait_for("#status[data-status='succeeded']").await;
    let id = the_only_order(&app, &p.shop).await;
    // And an expired one, with the longest texts.
    let banquet = crate::payments::create(
        &app,
        &p.shop,
        json!({"amount": "999999.99", "currency": "MOP", "description": "Banquet"}),
    )
    .await;
    let expired = banquet["id"].as_str().unwrap().to_owned();
    let closed = app
        .post_json(
            &format!("/v1/orders/{expired}/close"),
            Some(&p.shop.key),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(closed.status(), reqwest::StatusCode::OK);
    for lang in ["en", "zh", "pt"] {
        for (order, status) in [(&id, "succeeded"), (&expired, "expired")] {
            browser
                .client
                .goto(&app.url(&format!("/o/{order}?lang={lang}")))
                .await
                .unwrap();
            browser
                .wait_for(&format!("#status[data-status='{status}']"))
                .await;
            // A small phone, and a common one: no sideways scrolling, and the
            // reference does not wrap letter by letter beside a long label.
            for width in [320, 390] {
                let (viewport, content) = browser.widths_at(width).await;
                assert_eq!(viewport, i64::from(width));
                assert!(
                    content <= i64::from(width),
                    "{lang} {status}: content {content} px wider than {width} px"
                );
                let reference = browser.wait_for("#order").await;
                let height = reference
                    .rectangle()
                    .await
                    .map(|(_, _, _, h)| h)
                    .unwrap_or(f64::MAX);
                assert!(
                    height < 60.0,
                    "{lang} {status} at {width} px: the reference takes {height} px"
                );
            }
        }
    }
    browser.finish("status_320_px").await;
}

#[tokio::test]
async fn browser_a_shopper_switches_to_chinese_and_pays() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let browser = Browser::start(ALIPAY_HK_UA).await;
    browser
        .client
        .goto(&app.url(&format!("/q/{}", p.token)))
        .await
        .unwrap();
    assert_eq!(browser.text("#submit").await, "Pay");
    browser.click("#lang-zh").await;
    assert_eq!(browser.text("#submit").await, "付款");
    assert_eq!(browser.text("#wallet").await, "使用支付寶香港付款");
    browser.type_into("#amount", "８８").await;
    browser.click("#submit").await;
    browser.click("#pay").await;
    browser.wait_for("#status[data-status='succeeded']").await;
    assert_eq!(browser.text("#status").await, "付款成功");
    assert_eq!(browser.text("#amount").await, "88.00 MOP");
    let id = the_only_order(&app, &p.shop).await;
    assert_paid(&app, &p.shop, &id, "88.00", "alipay_hk", "static_scan").await;
    browser.finish("chinese_pays").await;
}

#[tokio::test]
async fn browser_a_shopper_switches_to_portuguese_and_pays_with_a_decimal_comma() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let browser = Browser::start(MPAY_UA).await;
    browser
        .client
        .goto(&app.url(&format!("/q/{}", p.token)))
        .await
        .unwrap();
    browser.click("#lang-pt").await;
    assert_eq!(browser.text("#submit").await, "Pagar");
    browser.type_into("#amount", "1,000").await;
    browser.click("#submit").await;
    assert_eq!(
        browser.text("#amount-error").await,
        "Escreva o montante sem separador de milhares, por exemplo 1250,50."
    );
    browser.type_into("#amount", "12,50").await;
    browser.click("#submit").await;
    browser.click("#pay").await;
    browser.wait_for("#status[data-status='succeeded']").await;
    assert_eq!(browser.text("#status").await, "Pago");
    assert_eq!(browser.text("#amount").await, "12,50 MOP");
    let id = the_only_order(&app, &p.shop).await;
    assert_paid(&app, &p.shop, &id, "12.50", "mpay", "static_scan").await;
    browser.finish("portuguese_pays").await;
}

#[tokio::test]
async fn browser_a_wallet_on_another_origin_opens_under_the_strict_csp() {
    // The sandboxes on `localhost`, the gateway on `127.0.0.1`: two origins, as a
    // real wallet cashier is to the gateway.
    let app = spawn_reachable(StoreBackend::Embedded, |s| {
        s.wallets.sandbox_base_url = format!("http://localhost:{}/sandbox", s.server.bind.port());
    })
    .await;
    let p = plated(&app, "MOP").await;
    let page = app.get(&format!("/q/{}", p.token), None).await;
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("form-action 'self';"), "{csp}");
    assert!(
        !csp.contains("form-action 'self' "),
        "no wallet origin allowed: {csp}"
    );
    let browser = Browser::start(MPAY_UA).await;
    open_and_pay(&browser, &app, &p, "Cafe Nam Van", "31.00", None).await;
    browser.wait_for("#pay").await;
    let cashier = browser.current_url().await;
    assert!(
        cashier.starts_with("http://localhost:") && cashier.contains("/sandbox/alipay_plus/"),
        "{cashier}"
    );
    browser.click("#pay").await;
    browser.wait_for("#status[data-status='succeeded']").await;
    assert!(browser.current_url().await.starts_with(&app.address));
    let id = the_only_order(&app, &p.shop).await;
    assert_paid(&app, &p.shop, &id, "31.00", "mpay", "static_scan").await;
    browser.finish("cross_origin_wallet").await;
}

#[tokio::test]
async fn browser_cancelling_the_wechat_sheet_closes_the_payment() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let browser = Browser::start(WECHAT_UA).await;
    // WeChat's bridge, answering as when the shopper closes the payment sheet.
    browser
        .before_every_page(
            "window.WeixinJSBridge = { invoke: function (name, params, done) { \
             setTimeout(function () { done({ err_msg: 'get_brand_wcpay_request:cancel' }); }, 0); } };",
        )
        .await;
    open_and_pay(&browser, &app, &p, "Cafe Nam Van", "3.30", None).await;
    browser.wait_for("#status[data-status='expired']").await;
    assert_eq!(browser.text("#status").await, "Payment not completed");
    let id = the_only_order(&app, &p.shop).await;
    assert_eq!(
        crate::payments::get_order(&app, &p.shop, &id).await["status"],
        "expired"
    );
    let at_wallet = app
        .state
        .wallets
        .adapter(sesame_adapters::contract::AdapterId::WechatPay)
        .unwrap()
        .query(&sesame_adapters::contract::OrderRef {
            order_id: id.clone(),
            wallet_ref: None,
        })
        .await
        .unwrap();
    assert_eq!(at_wallet, sesame_adapters::contract::WalletStatus::Closed);
    browser.finish("wechat_cancelled").await;
}

#[tokio::test]
async fn browser_a_pos_order_is_paid_from_its_gateway_qr() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = crate::payments::shop(&app).await;
    let order = crate::payments::create(
        &app,
        &shop,
        json!({"amount": "25.50", "currency": "MOP", "description": "Table 4 lunch", "reference": "T-4"}),
    )
    .await;
    let id = order["id"].as_str().unwrap().to_owned();
    let url = order["pay"]["url"].as_str().unwrap().to_owned();
    assert_eq!(order["pay"]["qr"], url.as_str());
    let browser = Browser::start(MPAY_UA).await;
    browser.client.goto(&url).await.unwrap();
    assert_eq!(browser.text("#merchant").await, "Cafe Nam Van");
    assert_eq!(browser.text("#amount-fixed").await, "25.50 MOP");
    assert_eq!(browser.text("#wallet").await, "Paying with MPay");
    browser.click("#submit").await;
    browser.click("#pay").await;
    browser.wait_for("#status[data-status='succeeded']").await;
    assert_eq!(browser.text("#order").await, id);
    assert_paid(&app, &shop, &id, "25.50", "mpay", "dynamic_qr").await;
    browser.finish("gateway_order_paid").await;
}
