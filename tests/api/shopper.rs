//! The shopper's pages over HTTP through the real server and the wallet sandboxes:
//! plate page, Pay form (errors, signed nonces, idempotency, wallet hand-off), WeChat
//! OAuth + JSAPI, cancel, status page, gateway orders and their QR, languages and
//! formats, security headers, HTML for every address, page weight and rate limits.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sesame::config::StoreBackend;
use sesame_adapters::contract::{AdapterId, OrderRef, WalletStatus};

use crate::payments::{Shop, create, get_order, pay_at_wallet, shop, wait_status};
use crate::support::app::{TestApp, spawn_app, spawn_reachable, spawn_with_clock};

pub const MPAY_UA: &str = "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36 MPay/3.2.1";
pub const WECHAT_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.44(0x18002c2f) NetType/WIFI Language/zh_TW";
pub const PLAIN_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
const KAKAO_UA: &str = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36 KAKAOTALK 10.4.5";

/// A merchant (with a webhook endpoint and local names) and its first plate's token.
pub struct Plated {
    pub shop: Shop,
    pub token: String,
    pub plate_id: String,
}

pub async fn plated(app: &TestApp, currency: &str) -> Plated {
    let shop = shop_in(app, currency).await;
    let plates: Value = app
        .get(
            &format!("/v1/merchants/{}/plates", shop.id),
            Some(&app.admin_token),
        )
        .await
        .json()
        .await
        .unwrap();
    Plated {
        token: plates["data"][0]["token"].as_str().unwrap().to_owned(),
        plate_id: plates["data"][0]["id"].as_str().unwrap().to_owned(),
        shop,
    }
}

async fn shop_in(app: &TestApp, currency: &str) -> Shop {
    if currency == "MOP" {
        return shop(app).await;
    }
    let endpoint = crate::support::merchant_endpoint::MerchantEndpoint::start().await;
    let body = json!({
        "name": "Seoul Bapsang", "name_zh": "首爾飯床", "name_pt": "Mesa de Seul",
        "city": "MACAU", "country": "MO", "mcc": "5812",
        "currency": currency, "notify_url": endpoint.url,
    });
    let created: Value = app.create_merchant(&body).await.json().await.unwrap();
    Shop {
        id: created["merchant"]["id"].as_str().unwrap().to_owned(),
        key: created["api_key"].as_str().unwrap().to_owned(),
        secret: created["webhook_secret"].as_str().unwrap().to_owned(),
        endpoint,
    }
}

pub async fn orders_of(app: &TestApp, shop: &Shop) -> Vec<Value> {
    let list: Value = app
        .get("/v1/orders", Some(&shop.key))
        .await
        .json()
        .await
        .unwrap();
    list["data"].as_array().unwrap().clone()
}

async fn get_page(
    app: &TestApp,
    path: &str,
    ua: &str,
    lang: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let mut req = app.client.get(app.url(path)).header("User-Agent", ua);
    if let Some(lang) = lang {
        req = req.header("Accept-Language", lang);
    }
    let response = req.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// A GET as the client `ip` (behind a trusted proxy on 127.0.0.1).
async fn get_as(app: &TestApp, path: &str, ip: &str) -> (StatusCode, String) {
    let response = app
        .client
        .get(app.url(path))
        .header("User-Agent", MPAY_UA)
        .header("X-Forwarded-For", ip)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn post_form(
    app: &TestApp,
    path: &str,
    ua: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    post_form_as(app, path, ua, None, form).await
}

/// A form POST, with the browser's `Cookie` header when it has one.
async fn post_form_as(
    app: &TestApp,
    path: &str,
    ua: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).header("User-Agent", ua);
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    request.form(form).send().await.unwrap()
}

async fn post_pay(
    app: &TestApp,
    token: &str,
    ua: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    post_form(app, &format!("/q/{token}/pay"), ua, form).await
}

async fn post_pay_as(app: &TestApp, token: &str, ip: &str, form: &[(&str, &str)]) -> StatusCode {
    app.client
        .post(app.url(&format!("/q/{token}/pay")))
        .header("User-Agent", MPAY_UA)
        .header("X-Forwarded-For", ip)
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
}

/// The value of `name="..."`'s hidden input.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {html}"))
        + marker.len();
    unescape(html[at..].split('"').next().unwrap())
}

fn nonce_of(html: &str) -> String {
    hidden(html, "nonce")
}

/// The nonce of the form on the page at `path`.
async fn form_nonce(app: &TestApp, path: &str, ua: &str) -> String {
    let (status, _, html) = get_page(app, path, ua, None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {html}");
    nonce_of(&html)
}

fn unescape(text: &str) -> String {
    text.replace("&#x3d;", "=")
        .replace("&#61;", "=")
        .replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
        .replace("&#38;", "&")
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn assert_strict_csp(headers: &HeaderMap) {
    let csp = headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("CSP header");
    for directive in [
        "default-src 'none';",
        "style-src 'self';",
        "script-src 'self';",
        "img-src 'self' data:;",
        "form-action 'self';",
        "connect-src 'self'",
        "frame-ancestors 'none';",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
}

/// `/o/{id}/wallet` (where a Pay form leads): its meta refresh and its button lead to
/// the same wallet address, which is returned.
async fn wallet_target(app: &TestApp, path: &str, ua: &str) -> String {
    assert!(
        path.starts_with("/o/") && path.ends_with("/wallet"),
        "{path}"
    );
    let (status, headers, html) = get_page(app, path, ua, None).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_strict_csp(&headers);
    let marker = "<meta http-equiv=\"refresh\" content=\"0;url=";
    let at = html.find(marker).unwrap_or_else(|| panic!("{html}")) + marker.len();
    let url = unescape(html[at..].split('"').next().unwrap());
    assert!(
        html.contains("id=\"continue\""),
        "a button for when the refresh does not run"
    );
    let link = unescape(
        html[html.find("id=\"continue\" href=\"").unwrap() + 20..]
            .split('"')
            .next()
            .unwrap(),
    );
    assert_eq!(link, url);
    url
}

fn order_id_in(path: &str) -> String {
    path.trim_start_matches("/o/")
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// Opens the plate and pays `amount` with the detected wallet: the order id.
async fn submit(app: &TestApp, p: &Plated, ua: &str, amount: &str) -> String {
    submit_as_payer(app, p, ua, amount).await.0
}

/// A plate order submitted from a browser: (order id, the payer cookie it was given).
async fn submit_as_payer(app: &TestApp, p: &Plated, ua: &str, amount: &str) -> (String, String) {
    let (_, _, html) = get_page(app, &format!("/q/{}", p.token), ua, None).await;
    let response = post_pay(
        app,
        &p.token,
        ua,
        &[("amount", amount), ("nonce", &nonce_of(&html))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{amount}");
    let id = order_id_in(&location(&response));
    (id, payer_cookie(&response))
}

/// The payer cookie's `Set-Cookie` header on a pay response.
fn payer_set_cookie(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("sesame_payer="))
        .expect("the paying browser gets a payer cookie")
}

/// The `name=value` of the payer cookie a pay response sets.
fn payer_cookie(response: &reqwest::Response) -> String {
    payer_set_cookie(response)
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

async fn get_with_cookie(app: &TestApp, path: &str, ua: &str, cookie: &str) -> String {
    app.client
        .get(app.url(path))
        .header("User-Agent", ua)
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn plate_page_names_the_merchant_and_plate_before_the_amount_and_offers_only_browser_wallets()
{
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (status, headers, html) = get_page(&app, &format!("/q/{}", p.token), PLAIN_UA, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_strict_csp(&headers);
    assert_eq!(headers["cache-control"], "no-store");
    let merchant = html.find("Cafe Nam Van").expect("merchant name");
    let plate = html
        .find("<p id=\"plate\">Pay point: <strong>Main</strong></p>")
        .expect("plate label");
    let amount = html.find("id=\"amount\"").expect("amount field");
    assert!(
        merchant < plate && plate < amount,
        "name and plate come first"
    );
    assert!(html.contains("<label for=\"amount\">Amount (MOP)</label>"));
    for brand in ["alipay_hk", "alipay_cn", "kakao_pay", "mpay"] {
        assert!(
            html.contains(&format!(
                "<input type=\"radio\" name=\"wallet\" id=\"w-{brand}\" value=\"{brand}\">"
            )),
            "{brand} in the picker"
        );
        assert!(html.contains(&format!("<label for=\"w-{brand}\">")));
    }
    assert!(
        !html.contains("w-wechat_pay"),
        "WeChat Pay cannot pay outside WeChat"
    );
    assert!(
        html.contains(
            "id=\"wechat-hint\">To pay with WeChat Pay, scan the QR code with WeChat.</p>"
        )
    );
    assert!(html.len() < 30 * 1024, "page is {} bytes", html.len());
    println!("plate page: {} bytes", html.len());
    assert!(
        orders_of(&app, &p.shop).await.is_empty(),
        "viewing creates nothing"
    );
}

#[tokio::test]
async fn a_detected_wallet_replaces_the_picker() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (_, _, html) = get_page(&app, &format!("/q/{}", p.token), MPAY_UA, None).await;
    assert!(!html.contains("name=\"wallet\""));
    assert!(html.contains("Paying with MPay"));
    let (_, _, html) = get_page(&app, &format!("/q/{}", p.token), WECHAT_UA, Some("zh-TW")).await;
    assert!(html.contains("使用微信支付付款"), "no stray spaces: {html}");
    assert!(
        html.contains("收款點：<strong>Main</strong>"),
        "the separator comes from the messages"
    );
}

#[tokio::test]
async fn forged_or_unknown_addresses_get_a_friendly_html_404() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let unknown_plate = app
        .state
        .tokens
        .token_for(&sesame::domain::PlateId::generate());
    for path in [
        "/q/AAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        "/q/not-a-token".to_owned(),
        format!("/q/{unknown_plate}"),
        format!("/q/{}/", p.token),
        format!("/q/{}/nothing", p.token),
        "/q".to_owned(),
        "/o/ord_nothing".to_owned(),
        "/o/ord_nothing/".to_owned(),
        "/o/ord_nothing/status/x".to_owned(),
        "/static/nothing.css".to_owned(),
    ] {
        let (status, headers, html) = get_page(&app, &path, PLAIN_UA, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert_strict_csp(&headers);
        assert!(html.contains("This QR code or link is not valid"), "{html}");
        assert!(!html.contains("panicked") && !html.contains("error\":"));
    }
    let forged = post_pay(
        &app,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA",
        PLAIN_UA,
        &[("amount", "1")],
    )
    .await;
    assert_eq!(forged.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn shopper_addresses_answer_head_redirect_form_addresses_and_refuse_other_methods_in_html() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let id = submit(&app, &p, MPAY_UA, "3").await;
    for path in [
        format!("/q/{}", p.token),
        format!("/o/{id}"),
        format!("/o/{id}/status"),
        "/static/sesame.css".to_owned(),
        "/static/status.js".to_owned(),
    ] {
        let head = app.client.head(app.url(&path)).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK, "HEAD {path}");
        assert!(head.headers().contains_key("content-type"), "{path}");
        assert!(head.text().await.unwrap().is_empty(), "HEAD has no body");
    }
    for (path, to) in [
        (format!("/q/{}/pay", p.token), format!("/q/{}", p.token)),
        (format!("/o/{id}/pay"), format!("/o/{id}")),
        (format!("/o/{id}/cancel"), format!("/o/{id}")),
    ] {
        let response = app.get(&path, None).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "GET {path}");
        assert_eq!(location(&response), to);
    }
    let put = app
        .client
        .put(app.url(&format!("/q/{}", p.token)))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        put.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(put.text().await.unwrap().contains("<html"));
}

#[tokio::test]
async fn an_invalid_amount_is_shown_next_to_the_field_and_nothing_is_created() {
    let app = spawn_reachable(StoreBackend::Embedded, |s| {
        s.shopper.pay_per_ip_per_minute = 100;
        s.shopper.pay_per_plate_per_minute = 200;
    })
    .await;
    let p = plated(&app, "MOP").await;
    let nonce = form_nonce(&app, &format!("/q/{}", p.token), MPAY_UA).await;
    for (amount, message) in [
        ("", "Enter the amount."),
        ("abc", "Enter a number such as 12.50."),
        ("-5", "Enter a number such as 12.50."),
        ("12 50", "Enter a number such as 12.50."),
        ("0", "The smallest amount is 0.01 MOP."),
        ("1.2345", "MOP amounts have at most 2 decimal places."),
        (
            "1,000",
            "Type the amount without thousands separators, such as 1250.50.",
        ),
        (
            "1.000",
            "Type the amount without thousands separators, such as 1250.50.",
        ),
        ("1000000.01", "The largest amount is 1,000,000.00 MOP."),
    ] {
        let response = post_pay(
            &app,
            &p.token,
            MPAY_UA,
            &[("amount", amount), ("nonce", &nonce)],
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{amount}"
        );
        assert_strict_csp(response.headers());
        let html = response.text().await.unwrap();
        let field = html.find("id=\"amount\"").unwrap();
        let error = html
            .find(&format!(
                "<p class=\"error\" id=\"amount-error\" role=\"alert\">{message}</p>"
            ))
            .unwrap_or_else(|| panic!("{amount}: {html}"));
        assert!(field < error, "the error follows the field");
        assert!(html.contains("aria-describedby=\"amount-error\""));
        assert!(
            html.contains(&format!("value=\"{nonce}\"")),
            "same form kept"
        );
    }
    assert!(orders_of(&app, &p.shop).await.is_empty());
}

#[tokio::test]
async fn amounts_typed_on_phones_are_read_exactly_and_ambiguous_ones_are_refused() {
    let app = spawn_reachable(StoreBackend::Embedded, |s| {
        s.shopper.pay_per_ip_per_minute = 100;
        s.shopper.pay_per_plate_per_minute = 200;
    })
    .await;
    let p = plated(&app, "MOP").await;
    for (typed, charged) in [
        ("１２", "12.00"),
        ("１２．５", "12.50"),
        ("12.", "12.00"),
        (".5", "0.50"),
        ("12,50", "12.50"),
        ("1.000,50", "1000.50"),
        ("1,000.50", "1000.50"),
    ] {
        let id = submit(&app, &p, MPAY_UA, typed).await;
        assert_eq!(
            get_order(&app, &p.shop, &id).await["amount"],
            charged,
            "{typed}"
        );
    }
    let krw = plated(&app, "KRW").await;
    let nonce = form_nonce(&app, &format!("/q/{}", krw.token), KAKAO_UA).await;
    for (typed, message) in [
        ("12.5", "KRW amounts are whole numbers, without decimals."),
        ("12,50", "KRW amounts are whole numbers, without decimals."),
        (
            "12,000",
            "Type the amount without thousands separators, such as 12000.",
        ),
        ("abc", "Enter a number such as 12000."),
    ] {
        let response = post_pay(
            &app,
            &krw.token,
            KAKAO_UA,
            &[("amount", typed), ("nonce", &nonce)],
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = response.text().await.unwrap();
        assert!(html.contains(message), "{typed}: {html}");
    }
    assert!(orders_of(&app, &krw.shop).await.is_empty());
    let id = submit(&app, &krw, KAKAO_UA, "12000").await;
    assert_eq!(get_order(&app, &krw.shop, &id).await["amount"], "12000");
}

#[tokio::test]
async fn portuguese_errors_use_a_decimal_comma_and_grouped_amounts() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (_, _, html) = get_page(&app, &format!("/q/{}", p.token), MPAY_UA, Some("pt")).await;
    let nonce = nonce_of(&html);
    for (typed, message) in [
        ("x", "Introduza um número, por exemplo 12,50."),
        ("2000000", "O montante máximo é 1\u{a0}000\u{a0}000,00 MOP."),
    ] {
        let response = app
            .client
            .post(app.url(&format!("/q/{}/pay", p.token)))
            .header("User-Agent", MPAY_UA)
            .header("Accept-Language", "pt")
            .form(&[("amount", typed), ("nonce", &nonce)])
            .send()
            .await
            .unwrap();
        let html = response.text().await.unwrap();
        assert!(html.contains(message), "{typed}: {html}");
    }
}

#[tokio::test]
async fn the_picker_requires_a_choice_and_routes_to_the_chosen_wallet() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let nonce = form_nonce(&app, &format!("/q/{}", p.token), PLAIN_UA).await;
    let missing = post_pay(
        &app,
        &p.token,
        PLAIN_UA,
        &[("amount", "8.00"), ("nonce", &nonce)],
    )
    .await;
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = missing.text().await.unwrap();
    assert!(
        html.contains("id=\"wallet-error\" role=\"alert\">Choose the wallet you will pay with.")
    );
    assert!(html.contains("value=\"8.00\""), "typed amount kept");
    // WeChat Pay is not offered to an ordinary browser, and not taken when posted.
    let wechat = post_pay(
        &app,
        &p.token,
        PLAIN_UA,
        &[
            ("amount", "8.00"),
            ("wallet", "wechat_pay"),
            ("nonce", &nonce),
        ],
    )
    .await;
    assert_eq!(wechat.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(orders_of(&app, &p.shop).await.is_empty());

    let chosen = post_pay(
        &app,
        &p.token,
        PLAIN_UA,
        &[
            ("amount", "8.00"),
            ("wallet", "alipay_cn"),
            ("nonce", &nonce),
        ],
    )
    .await;
    assert_eq!(chosen.status(), StatusCode::SEE_OTHER);
    let wallet = wallet_target(&app, &location(&chosen), PLAIN_UA).await;
    assert!(wallet.contains("/sandbox/alipay/"), "{wallet}");
    let orders = orders_of(&app, &p.shop).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["wallet"], "alipay_cn");
    assert_eq!(orders[0]["mode"], "static_scan");
    assert_eq!(orders[0]["pay"]["qr"], Value::Null, "the plate is the QR");
}

#[tokio::test]
async fn a_double_submit_is_one_order_paid_once_and_the_status_page_shows_it() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let nonce = form_nonce(&app, &format!("/q/{}", p.token), MPAY_UA).await;
    let form = [("amount", "12.30"), ("nonce", nonce.as_str())];
    let (first, second) = tokio::join!(
        post_pay(&app, &p.token, MPAY_UA, &form),
        post_pay(&app, &p.token, MPAY_UA, &form)
    );
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(second.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&first), location(&second));
    let wallet = wallet_target(&app, &location(&first), MPAY_UA).await;
    assert!(wallet.contains("/sandbox/alipay_plus/"), "{wallet}");
    let again = post_pay(&app, &p.token, MPAY_UA, &form).await;
    assert_eq!(
        location(&again),
        location(&first),
        "a retry is the same order"
    );
    let orders = orders_of(&app, &p.shop).await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    let id = orders[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(orders[0]["wallet"], "mpay");
    assert_eq!(orders[0]["amount"], "12.30");

    let (_, headers, pending) = get_page(&app, &format!("/o/{id}"), MPAY_UA, None).await;
    assert_strict_csp(&headers);
    assert!(pending.contains("data-status=\"pending\""));
    assert!(pending.contains("<noscript><meta http-equiv=\"refresh\" content=\"2\"></noscript>"));
    assert!(pending.contains("<script src=\"/static/status.js?v="));
    assert!(pending.contains(&format!(
        "href=\"/o/{id}/wallet\" id=\"open-wallet\">Open MPay again"
    )));
    let json: Value = app
        .get(&format!("/o/{id}/status"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json, json!({"status": "pending", "watch": true}));

    let order = get_order(&app, &p.shop, &id).await;
    pay_at_wallet(&app, &order).await;
    let paid = wait_status(&app, &p.shop, &id, "succeeded").await;
    assert_eq!(paid["ledger"].as_array().unwrap().len(), 1);
    let (_, _, done) = get_page(&app, &format!("/o/{id}"), MPAY_UA, None).await;
    assert!(done.contains("<h1 id=\"status\" data-status=\"succeeded\">Paid</h1>"));
    assert!(done.contains("<p class=\"amount big\" id=\"amount\">12.30 MOP</p>"));
    assert!(done.contains("<dt>Paid to</dt><dd id=\"merchant\">Cafe Nam Van</dd>"));
    assert!(done.contains(&id));
    assert!(done.contains("(UTC+8)</dd>"));
    assert!(!done.contains("http-equiv=\"refresh\""));
    assert!(!done.contains("data-poll"));
    println!("status page: {} bytes", done.len());
    assert!(done.len() < 30 * 1024);
    let json: Value = app
        .get(&format!("/o/{id}/status"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json, json!({"status": "succeeded", "watch": false}));
    let delivered = p.shop.endpoint.wait_for("order.succeeded", 1, 20).await;
    assert_eq!(delivered[0].body["data"]["mode"], "static_scan");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn kakao_pay_outside_krw_goes_through_alipay_plus() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (_, _, html) = get_page(&app, &format!("/q/{}", p.token), KAKAO_UA, None).await;
    assert!(html.contains("Paying with Kakao Pay"));
    let response = post_pay(
        &app,
        &p.token,
        KAKAO_UA,
        &[("amount", "20"), ("nonce", &nonce_of(&html))],
    )
    .await;
    let wallet = wallet_target(&app, &location(&response), KAKAO_UA).await;
    assert!(wallet.contains("/sandbox/alipay_plus/"), "{wallet}");
    let orders = orders_of(&app, &p.shop).await;
    assert_eq!(orders[0]["wallet"], "kakao_pay");
    assert_eq!(orders[0]["adapter"], "alipay_plus");
}

#[tokio::test]
async fn a_reused_form_with_another_amount_is_refused_with_a_fresh_form() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let nonce = form_nonce(&app, &format!("/q/{}", p.token), MPAY_UA).await;
    let first = post_pay(
        &app,
        &p.token,
        MPAY_UA,
        &[("amount", "5"), ("nonce", &nonce)],
    )
    .await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let reused = post_pay(
        &app,
        &p.token,
        MPAY_UA,
        &[("amount", "50"), ("nonce", &nonce)],
    )
    .await;
    assert_eq!(reused.status(), StatusCode::CONFLICT);
    let html = reused.text().await.unwrap();
    assert!(html.contains("This form was already used."));
    assert_ne!(nonce_of(&html), nonce);
    assert_eq!(orders_of(&app, &p.shop).await.len(), 1);
}

#[tokio::test]
async fn made_up_foreign_or_stale_nonces_get_a_fresh_form_and_create_nothing() {
    let clock = sesame::clock::ManualClock::new(chrono::Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let p = plated(&app, "MOP").await;
    let other: Value = app
        .create_plate(&p.shop.id, &json!({"label": "Terrace"}))
        .await
        .json()
        .await
        .unwrap();
    let (_, _, html) = get_page(
        &app,
        &format!("/q/{}", other["token"].as_str().unwrap()),
        MPAY_UA,
        None,
    )
    .await;
    let foreign = nonce_of(&html);
    let served = form_nonce(&app, &format!("/q/{}", p.token), MPAY_UA).await;
    clock.advance(1_801_000);
    for nonce in [
        "0123456789abcdefghjkmnpqrstvwxyz".to_owned(),
        "a".repeat(48),
        foreign,
        served,
        String::new(),
    ] {
        let response = post_pay(
            &app,
            &p.token,
            MPAY_UA,
            &[("amount", "7.70"), ("nonce", &nonce)],
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{nonce}");
        let html = response.text().await.unwrap();
        assert!(
            html.contains("This form has expired. Check the amount and press Pay again."),
            "{html}"
        );
        assert!(html.contains("value=\"7.70\""), "the typed amount is kept");
        let fresh = nonce_of(&html);
        assert_ne!(fresh, nonce);
        // The fresh form works.
        if nonce.is_empty() {
            let paid = post_pay(
                &app,
                &p.token,
                MPAY_UA,
                &[("amount", "7.70"), ("nonce", &fresh)],
            )
            .await;
            assert_eq!(paid.status(), StatusCode::SEE_OTHER);
        }
    }
    assert_eq!(
        orders_of(&app, &p.shop).await.len(),
        1,
        "only the fresh form's"
    );
}

#[tokio::test]
async fn a_fixed_amount_plate_charges_its_amount_whatever_is_posted() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let plate: Value = app
        .create_plate(
            &p.shop.id,
            &json!({"label": "Set lunch", "amount": "2500.00"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let token = plate["token"].as_str().unwrap();
    let (_, _, html) = get_page(&app, &format!("/q/{token}"), MPAY_UA, None).await;
    assert!(html.contains("id=\"amount-fixed\">2,500.00 MOP</p>"));
    assert!(!html.contains("name=\"amount\""));
    let response = post_pay(
        &app,
        token,
        MPAY_UA,
        &[("amount", "0.01"), ("nonce", &nonce_of(&html))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let orders = orders_of(&app, &p.shop).await;
    assert_eq!(orders[0]["amount"], "2500.00");
}

#[tokio::test]
async fn a_fixed_amount_outside_the_payment_limits_is_refused_at_pay_time() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    // Plates above the limit are refused at creation; this one predates a lowered
    // limit, so it is stored as it was made then.
    let refused = app
        .create_plate(&p.shop.id, &json!({"label": "Car", "amount": "2000000.00"}))
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let plate = sesame::domain::plate::Plate {
        id: sesame::domain::PlateId::generate(),
        merchant_id: sesame::domain::MerchantId::parse(&p.shop.id).unwrap(),
        label: "Car".to_owned(),
        fixed_amount_minor: Some(200_000_000),
        format: sesame::domain::PayloadFormat::Url,
        created_at: app.state.clock.now_ms(),
    };
    app.state.store.insert_plate(&plate).await.unwrap();
    let token = app.state.tokens.token_for(&plate.id);
    let token = token.as_str();
    let (_, _, html) = get_page(&app, &format!("/q/{token}"), MPAY_UA, None).await;
    assert!(html.contains("This amount cannot be paid here. Please ask the shop."));
    let response = post_pay(&app, token, MPAY_UA, &[("nonce", &nonce_of(&html))]).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("id=\"form-error\" role=\"alert\">This amount cannot be paid here.")
    );
    assert!(orders_of(&app, &p.shop).await.is_empty(), "nothing created");
}

#[tokio::test]
async fn a_wallet_refusal_is_explained_with_a_way_back() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let nonce = form_nonce(&app, &format!("/q/{}", p.token), MPAY_UA).await;
    // Alipay+ refuses a payment request id that was cancelled before it ever saw a pay.
    let merchant = app
        .state
        .store
        .merchant(&sesame::domain::MerchantId::parse(&p.shop.id).unwrap())
        .await
        .unwrap()
        .unwrap();
    let plate = sesame::domain::PlateId::parse(&p.plate_id).unwrap();
    let id = sesame::services::shopper::order_id_for(&app.state, &merchant, &plate, &nonce);
    app.state
        .wallets
        .adapter(AdapterId::AlipayPlus)
        .unwrap()
        .close(&OrderRef {
            order_id: id.to_string(),
            wallet_ref: None,
        })
        .await
        .unwrap();
    let response = post_pay(
        &app,
        &p.token,
        MPAY_UA,
        &[("amount", "9.10"), ("nonce", &nonce)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_strict_csp(response.headers());
    let html = response.text().await.unwrap();
    assert!(
        html.contains("<h1>The wallet refused this payment</h1>"),
        "{html}"
    );
    assert!(html.contains("No money was taken."));
    assert!(html.contains(&format!("id=\"again\" href=\"/q/{}\"", p.token)));
    assert!(
        html.contains(&format!("href=\"/q/{}?lang=zh\"", p.token)),
        "language links lead to the plate page"
    );
    assert_eq!(
        get_order(&app, &p.shop, id.as_str()).await["status"],
        "failed"
    );
}

#[tokio::test]
async fn wechat_goes_through_oauth_to_a_jsapi_page_that_pays() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (_, _, html) = get_page(&app, &format!("/q/{}", p.token), WECHAT_UA, None).await;
    assert!(html.contains("Paying with WeChat Pay"));
    let response = post_pay(
        &app,
        &p.token,
        WECHAT_UA,
        &[("amount", "3.50"), ("nonce", &nonce_of(&html))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let id = order_id_in(&location(&response));
    let cookie = payer_cookie(&response);
    let authorize = wallet_target(&app, &location(&response), WECHAT_UA).await;
    assert!(
        authorize.contains("/sandbox/wechat_pay/connect/oauth2/authorize"),
        "{authorize}"
    );
    let back = app.client.get(&authorize).send().await.unwrap();
    let callback = location(&back);
    assert!(
        callback.contains(&format!("/o/{id}/wechat?code=")),
        "{callback}"
    );
    let page = app
        .client
        .get(&callback)
        .header("User-Agent", WECHAT_UA)
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_strict_csp(page.headers());
    let html = page.text().await.unwrap();
    assert!(html.contains("<script src=\"/static/wechat.js?v="));
    assert!(html.contains("data-bridge=\"/sandbox/wechat_pay/jsbridge/getBrandWCPayRequest\""));
    assert!(html.contains(&format!("action=\"/o/{id}/cancel\"")));
    // The language links keep the OAuth return's query, and work.
    let query = callback.split_once('?').unwrap().1;
    let zh = format!("/o/{id}/wechat?{query}&lang=zh");
    assert!(
        unescape(&html).contains(&format!("href=\"{zh}\"")),
        "{html}"
    );
    let (status, _, zh_page) = get_page(&app, &zh, WECHAT_UA, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(zh_page.contains("使用微信支付"));
    let mut params = serde_json::Map::new();
    for name in [
        "appId",
        "timeStamp",
        "nonceStr",
        "package",
        "signType",
        "paySign",
    ] {
        params.insert(name.to_owned(), Value::String(hidden(&html, name)));
    }
    let orders = orders_of(&app, &p.shop).await;
    assert_eq!(orders[0]["wallet"], "wechat_pay");
    let bridge: Value = app
        .client
        .post(app.url("/sandbox/wechat_pay/jsbridge/getBrandWCPayRequest"))
        .json(&Value::Object(params))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bridge["err_msg"], "get_brand_wcpay_request:ok", "{bridge}");
    wait_status(&app, &p.shop, &id, "succeeded").await;
    assert_eq!(orders_of(&app, &p.shop).await.len(), 1);
    app.assert_ledger_ok().await;
}

/// A WeChat plate order at its JSAPI page, seen by the browser that started it:
/// (order id, the page's HTML, the payer cookie).
async fn wechat_order_at_jsapi(app: &TestApp, p: &Plated) -> (String, String, String) {
    let (_, _, html) = get_page(app, &format!("/q/{}", p.token), WECHAT_UA, None).await;
    let response = post_pay(
        app,
        &p.token,
        WECHAT_UA,
        &[("amount", "4.40"), ("nonce", &nonce_of(&html))],
    )
    .await;
    let id = order_id_in(&location(&response));
    let cookie = payer_cookie(&response);
    let authorize = wallet_target(app, &location(&response), WECHAT_UA).await;
    let back = app.client.get(&authorize).send().await.unwrap();
    let page = app
        .client
        .get(location(&back))
        .header("User-Agent", WECHAT_UA)
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    (id, page.text().await.unwrap(), cookie)
}

#[tokio::test]
async fn cancelling_on_the_wechat_page_closes_the_payment_and_says_so() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (id, html, cookie) = wechat_order_at_jsapi(&app, &p).await;
    assert_eq!(get_order(&app, &p.shop, &id).await["status"], "pending");
    assert!(html.contains(&format!("action=\"/o/{id}/cancel\"")));
    // The same page seen by anyone else offers no cancel (the sheet's answer then
    // only leads to the status page).
    let (_, _, other) = get_page(&app, &format!("/o/{id}/wechat"), WECHAT_UA, None).await;
    assert!(
        other.contains("id=\"jsapi\"") && !other.contains("/cancel"),
        "{other}"
    );
    let cancelled = post_form_as(
        &app,
        &format!("/o/{id}/cancel"),
        WECHAT_UA,
        Some(&cookie),
        &[("nonce", &nonce_of(&html))],
    )
    .await;
    assert_eq!(cancelled.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&cancelled), format!("/o/{id}"));
    let order = get_order(&app, &p.shop, &id).await;
    assert_eq!(order["status"], "expired");
    let at_wallet = app
        .state
        .wallets
        .adapter(AdapterId::WechatPay)
        .unwrap()
        .query(&OrderRef {
            order_id: id.clone(),
            wallet_ref: None,
        })
        .await
        .unwrap();
    assert_eq!(at_wallet, WalletStatus::Closed, "closed at WeChat Pay too");
    let (_, _, page) = get_page(&app, &format!("/o/{id}"), WECHAT_UA, None).await;
    assert!(page.contains("<h1 id=\"status\" data-status=\"expired\">Payment not completed</h1>"));
    assert!(page.contains(&format!("id=\"again\" href=\"/q/{}\"", p.token)));
    let hooks = p.shop.endpoint.wait_for("order.expired", 1, 20).await;
    assert_eq!(hooks[0].body["data"]["id"], id.as_str());
}

#[tokio::test]
async fn only_the_browser_that_started_a_plate_payment_can_cancel_it() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (id, cookie) = submit_as_payer(&app, &p, MPAY_UA, "6.00").await;
    let (other_id, other_cookie) = submit_as_payer(&app, &p, MPAY_UA, "7.00").await;
    assert_ne!(cookie, other_cookie);
    let path = format!("/o/{id}");
    // The cookie is scoped to the order's pages and hidden from scripts.
    let (_, _, html) = get_page(&app, &format!("/q/{}", p.token), MPAY_UA, None).await;
    let response = post_pay(
        &app,
        &p.token,
        MPAY_UA,
        &[("amount", "8.00"), ("nonce", &nonce_of(&html))],
    )
    .await;
    let third = order_id_in(&location(&response));
    let set = payer_set_cookie(&response);
    assert!(set.contains(&format!("; Path=/o/{third};")), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );

    // Someone else who learns the order id sees its status, but no way to cancel it.
    let (_, _, stranger) = get_page(&app, &path, MPAY_UA, None).await;
    assert!(stranger.contains("data-status=\"pending\""));
    assert!(!stranger.contains("/cancel"), "{stranger}");
    let other_page = get_with_cookie(&app, &path, MPAY_UA, &other_cookie).await;
    assert!(!other_page.contains("/cancel"), "another order's cookie");
    // Even holding the payer's form, without the payer's cookie nothing is cancelled.
    let payer_page = get_with_cookie(&app, &path, MPAY_UA, &cookie).await;
    let nonce = nonce_of(&payer_page);
    let cancel = format!("/o/{id}/cancel");
    let form = [("nonce", nonce.as_str()), ("next", "shop")];
    for forged in [
        None,
        Some(other_cookie.clone()),
        Some(format!("sesame_payer={}", "a".repeat(26))),
        Some(format!(
            "sesame_payer={}x",
            cookie.trim_start_matches("sesame_payer=")
        )),
    ] {
        let refused = post_form_as(&app, &cancel, MPAY_UA, forged.as_deref(), &form).await;
        assert_eq!(refused.status(), StatusCode::SEE_OTHER, "{forged:?}");
        assert_eq!(location(&refused), path, "{forged:?}");
        assert_eq!(get_order(&app, &p.shop, &id).await["status"], "pending");
    }
    assert_eq!(
        get_order(&app, &p.shop, &other_id).await["status"],
        "pending"
    );
    let back = post_form_as(&app, &cancel, MPAY_UA, Some(&cookie), &form).await;
    assert_eq!(location(&back), format!("/q/{}", p.token));
    assert_eq!(get_order(&app, &p.shop, &id).await["status"], "expired");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn nobody_cancels_a_merchants_gateway_order_from_a_shopper_page() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    let order = gateway_order(&app, &shop, "25.50").await;
    let id = order["id"].as_str().unwrap().to_owned();
    let nonce = form_nonce(&app, &format!("/o/{id}"), PLAIN_UA).await;
    let paid = post_form(
        &app,
        &format!("/o/{id}/pay"),
        PLAIN_UA,
        &[("nonce", &nonce), ("wallet", "alipay_hk")],
    )
    .await;
    assert_eq!(paid.status(), StatusCode::SEE_OTHER);
    assert_eq!(get_order(&app, &shop, &id).await["status"], "pending");
    let (_, _, page) = get_page(&app, &format!("/o/{id}"), PLAIN_UA, None).await;
    assert!(page.contains("data-status=\"pending\"") && !page.contains("/cancel"));
    // Even a form and a cookie only the server could have made cancel nothing: the
    // order's id is on the merchant's screen for anyone near the till.
    let oid = sesame::domain::OrderId::parse(&id).unwrap();
    let nonce = sesame::services::shopper::issue_form(
        &app.state,
        &sesame::services::shopper::cancel_subject(&oid),
    );
    let seal = sesame::services::shopper::payer_seal(&app.state, &oid);
    let refused = post_form_as(
        &app,
        &format!("/o/{id}/cancel"),
        PLAIN_UA,
        Some(&format!("sesame_payer={seal}")),
        &[("nonce", &nonce)],
    )
    .await;
    assert_eq!(location(&refused), format!("/o/{id}"));
    assert_eq!(get_order(&app, &shop, &id).await["status"], "pending");
}

#[tokio::test]
async fn a_merchant_that_no_longer_takes_payments_gets_none_started() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let now = chrono::Utc::now().timestamp_millis();
    let (mut bundle, _) = crate::store_conformance::bundle("Closed Cafe", now);
    bundle.merchant.status = sesame::domain::merchant::MerchantStatus::Suspended;
    app.state.store.create_merchant(&bundle).await.unwrap();
    // A gateway order made before the merchant stopped, still waiting for a wallet.
    let mut order = crate::payment_store_conformance::order(&bundle.merchant.id, now);
    (order.brand, order.adapter) = (None, None);
    app.state
        .store
        .commit(&crate::payment_store_conformance::insert(&order), now)
        .await
        .unwrap();
    let id = order.id.to_string();
    let nonce = form_nonce(&app, &format!("/o/{id}"), PLAIN_UA).await;
    let refused = post_form(
        &app,
        &format!("/o/{id}/pay"),
        PLAIN_UA,
        &[("nonce", &nonce), ("wallet", "alipay_hk")],
    )
    .await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let (status, _, _) = get_page(&app, &format!("/o/{id}/wallet"), PLAIN_UA, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stored = app.state.store.order(&order.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.adapter), (order.status, None));
}

#[tokio::test]
async fn the_pending_page_offers_a_way_back_that_closes_the_payment_first() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (id, cookie) = submit_as_payer(&app, &p, MPAY_UA, "6.00").await;
    let order = get_order(&app, &p.shop, &id).await;
    let pending = get_with_cookie(&app, &format!("/o/{id}"), MPAY_UA, &cookie).await;
    assert!(pending.contains("id=\"back\">Cancel and choose another wallet</button>"));
    // A cancel form we did not serve changes nothing.
    let forged = post_form_as(
        &app,
        &format!("/o/{id}/cancel"),
        MPAY_UA,
        Some(&cookie),
        &[("nonce", "a".repeat(48).as_str()), ("next", "shop")],
    )
    .await;
    assert_eq!(location(&forged), format!("/o/{id}"));
    assert_eq!(get_order(&app, &p.shop, &id).await["status"], "pending");
    let back = post_form_as(
        &app,
        &format!("/o/{id}/cancel"),
        MPAY_UA,
        Some(&cookie),
        &[("nonce", &nonce_of(&pending)), ("next", "shop")],
    )
    .await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&back), format!("/q/{}", p.token));
    assert_eq!(get_order(&app, &p.shop, &id).await["status"], "expired");
    let cashier = crate::payments::cashier_url(&app, &order);
    let refused = app
        .client
        .post(format!("{cashier}/confirm"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::CONFLICT,
        "the old payment can no longer be paid"
    );
}

#[tokio::test]
async fn an_order_never_started_at_a_wallet_says_so_with_a_way_back() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    // WeChat's OAuth never came back.
    let id = submit(&app, &p, WECHAT_UA, "2.00").await;
    let (_, _, page) = get_page(&app, &format!("/o/{id}"), WECHAT_UA, None).await;
    assert!(page.contains(">Payment not started</h1>"), "{page}");
    assert!(page.contains("This payment has not been started in a wallet."));
    assert!(!page.contains("Confirm the payment in your wallet"));
    assert!(page.contains(&format!("id=\"again\" href=\"/q/{}\"", p.token)));
}

#[tokio::test]
async fn language_links_on_pages_answering_a_form_lead_to_its_page() {
    let app = spawn_reachable(StoreBackend::Embedded, |s| {
        s.shopper.pay_per_ip_per_minute = 2;
        s.shopper.pay_per_plate_per_minute = 4;
    })
    .await;
    let p = plated(&app, "MOP").await;
    let nonce = form_nonce(&app, &format!("/q/{}", p.token), MPAY_UA).await;
    let invalid = post_pay(
        &app,
        &p.token,
        MPAY_UA,
        &[("amount", "x"), ("nonce", &nonce)],
    )
    .await;
    let html = invalid.text().await.unwrap();
    let _ = post_pay(
        &app,
        &p.token,
        MPAY_UA,
        &[("amount", "x"), ("nonce", &nonce)],
    )
    .await;
    let limited = post_pay(
        &app,
        &p.token,
        MPAY_UA,
        &[("amount", "x"), ("nonce", &nonce)],
    )
    .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let limited = limited.text().await.unwrap();
    for page in [html, limited] {
        for lang in ["zh", "pt"] {
            let href = format!("/q/{}?lang={lang}", p.token);
            assert!(page.contains(&format!("href=\"{href}\"")), "{page}");
            let (status, headers, _) = get_page(&app, &href, MPAY_UA, None).await;
            assert_eq!(status, StatusCode::OK);
            assert!(
                headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html")
            );
        }
    }
}

#[tokio::test]
async fn pages_follow_accept_language_and_a_remembered_switch() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "KRW").await;
    let path = format!("/q/{}", p.token);
    let (_, headers, zh) = get_page(&app, &path, PLAIN_UA, Some("zh-MO,zh;q=0.9,en;q=0.5")).await;
    assert_eq!(headers["content-language"], "zh-Hant");
    assert!(zh.contains("<html lang=\"zh-Hant\">"));
    assert!(zh.contains("首爾飯床"), "merchant name in Chinese");
    assert!(zh.contains("金額（KRW）"));
    assert!(zh.contains(">付款</button>"));
    let (_, _, en) = get_page(&app, &path, PLAIN_UA, Some("ko-KR")).await;
    assert!(en.contains("Seoul Bapsang") && en.contains(">Pay</button>"));

    let switched = app
        .client
        .get(app.url(&format!("{path}?lang=pt")))
        .header("Accept-Language", "zh-MO")
        .send()
        .await
        .unwrap();
    let cookie = switched.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("sesame_lang=pt;"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    let html = switched.text().await.unwrap();
    assert!(html.contains("Mesa de Seul") && html.contains(">Pagar</button>"));
    assert!(html.contains("Ponto de pagamento: <strong>Main</strong>"));
    assert!(
        html.contains(&format!("href=\"{path}?lang=zh\"")),
        "visible switch"
    );
    let remembered = app
        .client
        .get(app.url(&path))
        .header("Accept-Language", "zh-MO")
        .header("Cookie", "sesame_lang=pt")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(remembered.contains("Montante (KRW)"));
}

#[tokio::test]
async fn the_language_cookie_is_secure_when_the_gateway_is_served_over_https() {
    let app = spawn_app().await;
    let p = plated(&app, "MOP").await;
    let response = app.get(&format!("/q/{}?lang=zh", p.token), None).await;
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
}

#[tokio::test]
async fn failed_and_expired_pages_use_neutral_words_and_keep_watching_for_a_late_payment() {
    let clock = sesame::clock::ManualClock::new(chrono::Utc::now().timestamp_millis());
    let app = spawn_with_clock(StoreBackend::Embedded, clock.clone()).await;
    let p = plated(&app, "MOP").await;
    let id = submit(&app, &p, MPAY_UA, "4").await;
    let closed = app
        .post_json(
            &format!("/v1/orders/{id}/close"),
            Some(&p.shop.key),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(closed.status(), StatusCode::OK);
    let (_, _, page) = get_page(&app, &format!("/o/{id}"), MPAY_UA, None).await;
    assert!(page.contains(">Payment not completed</h1>"));
    assert!(page.contains("<dt>Merchant</dt>"), "{page}");
    assert!(!page.contains("Paid to"));
    assert!(!page.contains("No money was taken"));
    assert!(
        page.contains("If your wallet shows this payment as paid, show this page to the shop.")
    );
    assert!(page.contains("This page keeps checking for a late payment"));
    assert!(page.contains("<noscript><meta http-equiv=\"refresh\" content=\"10\"></noscript>"));
    assert!(page.contains(&format!("data-poll=\"/o/{id}/status\"")));
    assert!(
        page.contains(&format!("href=\"/q/{}\"", p.token)),
        "a way back"
    );
    let (_, _, pt) = get_page(&app, &format!("/o/{id}"), MPAY_UA, Some("pt")).await;
    assert!(pt.contains("<dt>Estabelecimento</dt>"));
    assert!(pt.contains("<dt>Referência do pagamento</dt>"));
    assert!(pt.contains("Pagamento não concluído"));
    let json: Value = app
        .get(&format!("/o/{id}/status"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json, json!({"status": "expired", "watch": true}));

    clock.advance(601_000);
    let json: Value = app
        .get(&format!("/o/{id}/status"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json, json!({"status": "expired", "watch": false}));
    let (_, _, page) = get_page(&app, &format!("/o/{id}"), MPAY_UA, None).await;
    assert!(!page.contains("http-equiv=\"refresh\"") && !page.contains("data-poll"));
    assert!(!page.contains("keeps checking"));
}

#[tokio::test]
async fn the_paid_page_shows_time_and_amount_in_the_shoppers_language() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let id = submit(&app, &p, MPAY_UA, "1234.5").await;
    pay_at_wallet(&app, &get_order(&app, &p.shop, &id).await).await;
    wait_status(&app, &p.shop, &id, "succeeded").await;
    let (_, _, zh) = get_page(&app, &format!("/o/{id}"), MPAY_UA, Some("zh-Hant")).await;
    assert!(zh.contains(">付款成功</h1>"));
    assert!(zh.contains("1,234.50 MOP"));
    assert!(zh.contains("<dt>收款商戶</dt>"));
    assert!(zh.contains("日 ") && zh.contains("（UTC+8）</dd>"), "{zh}");
    let (_, _, pt) = get_page(&app, &format!("/o/{id}"), MPAY_UA, Some("pt")).await;
    assert!(pt.contains("1\u{a0}234,50 MOP"));
    assert!(pt.contains("<dt>Pago a</dt>"));
}

/// Settings where 127.0.0.1 is a trusted proxy, so tests can speak for many clients.
fn behind_a_proxy(s: &mut sesame::config::Settings) {
    s.shopper.trusted_proxies = vec!["127.0.0.1".to_owned()];
}

#[tokio::test]
async fn one_client_cannot_lock_a_plate_for_everyone() {
    let app = spawn_reachable(StoreBackend::Embedded, |s| {
        behind_a_proxy(s);
        s.shopper.rate_per_ip_per_minute = 5;
        s.shopper.pay_per_ip_per_minute = 2;
        s.shopper.pay_per_plate_per_minute = 4;
    })
    .await;
    let p = plated(&app, "MOP").await;
    let path = format!("/q/{}", p.token);
    let mut nonce = String::new();
    for _ in 0..5 {
        let (status, html) = get_as(&app, &path, "198.51.100.1").await;
        assert_eq!(status, StatusCode::OK);
        nonce = nonce_of(&html);
    }
    assert_eq!(
        get_as(&app, &path, "198.51.100.1").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get_as(&app, &path, "198.51.100.2").await.0,
        StatusCode::OK,
        "another shopper still gets the plate"
    );
    let form = [("amount", "5"), ("nonce", nonce.as_str())];
    for _ in 0..2 {
        assert_eq!(
            post_pay_as(&app, &p.token, "198.51.100.1", &form).await,
            StatusCode::SEE_OTHER
        );
    }
    assert_eq!(
        post_pay_as(&app, &p.token, "198.51.100.1", &form).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let (_, html) = get_as(&app, &path, "198.51.100.2").await;
    assert_eq!(
        post_pay_as(
            &app,
            &p.token,
            "198.51.100.2",
            &[("amount", "6"), ("nonce", &nonce_of(&html))]
        )
        .await,
        StatusCode::SEE_OTHER,
        "and can pay"
    );
    assert_eq!(orders_of(&app, &p.shop).await.len(), 2);
}

#[tokio::test]
async fn a_flood_of_orders_on_one_plate_from_many_clients_is_stopped_by_its_shared_budget() {
    let app = spawn_reachable(StoreBackend::Embedded, |s| {
        behind_a_proxy(s);
        s.shopper.pay_per_ip_per_minute = 1;
        s.shopper.pay_per_plate_per_minute = 2;
    })
    .await;
    let p = plated(&app, "MOP").await;
    // Forged forms are turned away before they reach the plate's budget.
    for i in 0..3 {
        let status = post_pay_as(
            &app,
            &p.token,
            &format!("203.0.113.{i}"),
            &[("amount", "1"), ("nonce", &"a".repeat(48))],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let mut answers = Vec::new();
    for client in 10..13 {
        let ip = format!("203.0.113.{client}");
        let (_, html) = get_as(&app, &format!("/q/{}", p.token), &ip).await;
        let nonce = nonce_of(&html);
        answers.push(post_pay_as(&app, &p.token, &ip, &[("amount", "1"), ("nonce", &nonce)]).await);
    }
    assert_eq!(
        answers,
        [
            StatusCode::SEE_OTHER,
            StatusCode::SEE_OTHER,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(orders_of(&app, &p.shop).await.len(), 2);
    // Another plate has its own budget.
    let other: Value = app
        .create_plate(&p.shop.id, &json!({"label": "Terrace"}))
        .await
        .json()
        .await
        .unwrap();
    let token = other["token"].as_str().unwrap();
    let (_, html) = get_as(&app, &format!("/q/{token}"), "203.0.113.50").await;
    assert_eq!(
        post_pay_as(
            &app,
            token,
            "203.0.113.50",
            &[("amount", "1"), ("nonce", &nonce_of(&html))]
        )
        .await,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
    let app = spawn_reachable(StoreBackend::Embedded, |s| {
        s.shopper.rate_per_ip_per_minute = 2;
    })
    .await;
    let p = plated(&app, "MOP").await;
    let path = format!("/q/{}", p.token);
    assert_eq!(get_as(&app, &path, "198.51.100.1").await.0, StatusCode::OK);
    assert_eq!(get_as(&app, &path, "198.51.100.2").await.0, StatusCode::OK);
    assert_eq!(
        get_as(&app, &path, "198.51.100.3").await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "a made-up header does not buy a new bucket"
    );
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_64_behind_a_proxy() {
    let app = spawn_reachable(StoreBackend::Embedded, |s| {
        behind_a_proxy(s);
        s.shopper.rate_per_ip_per_minute = 2;
    })
    .await;
    let p = plated(&app, "MOP").await;
    let path = format!("/q/{}", p.token);
    assert_eq!(
        get_as(&app, &path, "2001:db8:1:2::1").await.0,
        StatusCode::OK
    );
    assert_eq!(
        get_as(&app, &path, "2001:db8:1:2::2").await.0,
        StatusCode::OK
    );
    assert_eq!(
        get_as(&app, &path, "2001:db8:1:2:ffff::3").await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "same /64"
    );
    assert_eq!(
        get_as(&app, &path, "2001:db8:1:3::1").await.0,
        StatusCode::OK,
        "another /64"
    );
}

#[tokio::test]
async fn status_polls_have_their_own_budget_and_never_eat_the_page_budget() {
    let app = spawn_reachable(StoreBackend::Embedded, |s| {
        s.shopper.rate_per_ip_per_minute = 3;
        s.shopper.status_per_ip_per_minute = 4;
    })
    .await;
    let p = plated(&app, "MOP").await;
    let id = submit(&app, &p, MPAY_UA, "5").await;
    for _ in 0..4 {
        assert_eq!(
            app.get(&format!("/o/{id}/status"), None).await.status(),
            StatusCode::OK
        );
    }
    let limited = app.get(&format!("/o/{id}/status"), None).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15).contains(&retry), "{retry}");
    let (status, _, _) = get_page(&app, &format!("/q/{}", p.token), MPAY_UA, None).await;
    assert_eq!(status, StatusCode::OK, "the plate page has its own budget");
}

#[tokio::test]
async fn the_page_limit_answers_429_even_before_the_token_is_checked() {
    let app = spawn_reachable(StoreBackend::Embedded, |s| {
        s.shopper.rate_per_ip_per_minute = 3;
    })
    .await;
    let forged = "/q/AAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for _ in 0..3 {
        assert_eq!(
            get_page(&app, forged, PLAIN_UA, None).await.0,
            StatusCode::NOT_FOUND
        );
    }
    let (status, headers, html) = get_page(&app, forged, PLAIN_UA, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_strict_csp(&headers);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=20).contains(&retry),
        "at most the time one request takes to refill: {retry}"
    );
    assert!(html.contains("Please wait a minute"));
}

#[tokio::test]
async fn the_stylesheet_and_scripts_are_served_with_a_long_cache() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    for (path, kind) in [
        ("/static/sesame.css", "text/css"),
        ("/static/status.js", "text/javascript"),
        ("/static/wechat.js", "text/javascript"),
    ] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert!(
            response.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("max-age=31536000")
        );
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        let revalidated = app
            .client
            .get(app.url(path))
            .header("If-None-Match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    }
}

#[test]
fn trusted_proxies_can_be_set_from_the_environment_as_a_comma_separated_list() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sesame"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SESAME_ENV", "test")
        .env(
            "SESAME__SHOPPER__TRUSTED_PROXIES",
            "10.0.0.0/8, 2001:db8::/32",
        )
        .arg("config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("trusted_proxies = [\"10.0.0.0/8\",\"2001:db8::/32\"]"),
        "{stdout}"
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_sesame"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SESAME_ENV", "test")
        .env("SESAME__SHOPPER__TRUSTED_PROXIES", "10.0.0.0/33")
        .arg("config")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("trusted_proxies"));
}

#[tokio::test]
async fn the_demo_merchant_and_plate_are_created_once_and_its_poster_opens_without_a_token() {
    let app = spawn_reachable(StoreBackend::Embedded, |s| {
        s.environment = sesame::config::Environment::Local;
    })
    .await;
    let first = sesame::services::demo::ensure(&app.state).await.unwrap();
    let again = sesame::services::demo::ensure(&app.state).await.unwrap();
    assert_eq!(first.merchant.id, again.merchant.id);
    assert_eq!(first.plate.id, again.plate.id);
    assert_eq!(app.merchant_count().await, 1);
    let path = first
        .plate_url
        .strip_prefix(&app.address)
        .unwrap()
        .to_owned();
    let (status, _, html) = get_page(&app, &path, PLAIN_UA, Some("zh-Hant")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("芝麻示範咖啡店"));
    let (_, _, html) = get_page(&app, &path, PLAIN_UA, Some("en")).await;
    assert!(
        html.contains("Pay point: <strong>Counter 1</strong>"),
        "{html}"
    );
    let (_, _, html) = get_page(&app, &path, PLAIN_UA, Some("pt")).await;
    assert!(html.contains("Café Demo Sesame"));
    assert_eq!(first.poster_url, format!("{}/demo/poster.svg", app.address));
    let poster = app.get("/demo/poster.svg", None).await;
    assert_eq!(poster.status(), StatusCode::OK);
    assert_eq!(poster.headers()["content-type"], "image/svg+xml");
    assert!(poster.text().await.unwrap().contains("Sesame Demo Cafe"));
}

#[tokio::test]
async fn the_demo_poster_does_not_exist_outside_the_local_environment() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    sesame::services::demo::ensure(&app.state).await.unwrap();
    assert_eq!(
        app.get("/demo/poster.svg", None).await.status(),
        StatusCode::NOT_FOUND
    );
}

// ---------------------------------------------------------------------------------
// Gateway orders: POST /v1/orders without wallet or auth_code
// ---------------------------------------------------------------------------------

async fn gateway_order(app: &TestApp, shop: &Shop, amount: &str) -> Value {
    let order = create(
        app,
        shop,
        json!({"amount": amount, "currency": "MOP", "description": "Table 4 lunch"}),
    )
    .await;
    assert_eq!(order["status"], "created");
    order
}

fn path_of(url: &str) -> String {
    format!("/{}", url.splitn(4, '/').nth(3).unwrap())
}

#[tokio::test]
async fn a_gateway_order_url_shows_the_merchant_the_amount_and_pay() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    let order = gateway_order(&app, &shop, "1225.50").await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(order["pay"]["qr"], order["pay"]["url"]);
    let path = path_of(order["pay"]["url"].as_str().unwrap());
    assert_eq!(path, format!("/o/{id}"));
    let (status, headers, html) = get_page(&app, &path, PLAIN_UA, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_strict_csp(&headers);
    let merchant = html.find("<h1 id=\"merchant\">Cafe Nam Van</h1>").unwrap();
    let line = html
        .find("<p id=\"plate\">For: <strong>Table 4 lunch</strong></p>")
        .unwrap();
    let amount = html.find("id=\"amount-fixed\">1,225.50 MOP</p>").unwrap();
    let pay = html.find("id=\"submit\">Pay</button>").unwrap();
    assert!(merchant < line && line < amount && amount < pay);
    assert!(html.contains(&format!("action=\"/o/{id}/pay\"")));
    assert!(html.contains("id=\"w-alipay_hk\"") && !html.contains("id=\"w-wechat_pay\""));
    let (_, _, mpay) = get_page(&app, &path, MPAY_UA, None).await;
    assert!(mpay.contains("Paying with MPay") && !mpay.contains("name=\"wallet\""));
    assert_eq!(
        get_order(&app, &shop, id).await["status"],
        "created",
        "viewing starts nothing"
    );
}

#[tokio::test]
async fn a_gateway_order_is_paid_with_the_wallet_the_shopper_picks() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    let order = gateway_order(&app, &shop, "25.50").await;
    let id = order["id"].as_str().unwrap().to_owned();
    let nonce = form_nonce(&app, &format!("/o/{id}"), PLAIN_UA).await;
    let missing = post_form(
        &app,
        &format!("/o/{id}/pay"),
        PLAIN_UA,
        &[("nonce", &nonce)],
    )
    .await;
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        missing
            .text()
            .await
            .unwrap()
            .contains("Choose the wallet you will pay with.")
    );
    let unrouted = get_order(&app, &shop, &id).await;
    assert_eq!(unrouted["wallet"], Value::Null);
    assert_eq!(unrouted["status"], "created");
    let forged = post_form(
        &app,
        &format!("/o/{id}/pay"),
        PLAIN_UA,
        &[("nonce", "a".repeat(48).as_str()), ("wallet", "alipay_hk")],
    )
    .await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    assert_eq!(get_order(&app, &shop, &id).await["wallet"], Value::Null);

    let form = [("nonce", nonce.as_str()), ("wallet", "alipay_hk")];
    let pay_path = format!("/o/{id}/pay");
    let (first, second) = tokio::join!(
        post_form(&app, &pay_path, PLAIN_UA, &form),
        post_form(&app, &pay_path, PLAIN_UA, &form)
    );
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&first), format!("/o/{id}/wallet"));
    assert!(
        [format!("/o/{id}/wallet"), format!("/o/{id}")].contains(&location(&second)),
        "{}",
        location(&second)
    );
    let wallet = wallet_target(&app, &format!("/o/{id}/wallet"), PLAIN_UA).await;
    assert!(wallet.contains("/sandbox/alipay_plus/"), "{wallet}");
    let started = get_order(&app, &shop, &id).await;
    assert_eq!(started["wallet"], "alipay_hk");
    assert_eq!(started["adapter"], "alipay_plus");
    assert_eq!(started["status"], "pending");
    assert_eq!(
        started["pay"]["qr"], started["pay"]["url"],
        "the POS QR stays the gateway URL"
    );
    pay_at_wallet(&app, &started).await;
    let paid = wait_status(&app, &shop, &id, "succeeded").await;
    assert_eq!(paid["ledger"].as_array().unwrap().len(), 1);
    assert_eq!(paid["mode"], "dynamic_qr");
    let hooks = shop.endpoint.wait_for("order.succeeded", 1, 20).await;
    assert_eq!(hooks[0].body["data"]["id"], id.as_str());
    // Paid: the gateway URL shows the result, and a late form changes nothing.
    let (_, _, done) = get_page(&app, &format!("/o/{id}"), PLAIN_UA, None).await;
    assert!(done.contains("data-status=\"succeeded\""));
    let late = post_form(&app, &format!("/o/{id}/pay"), PLAIN_UA, &form).await;
    assert_eq!(location(&late), format!("/o/{id}"));
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_gateway_order_chosen_twice_at_once_goes_to_one_wallet_only() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    let order = gateway_order(&app, &shop, "8.80").await;
    let id = order["id"].as_str().unwrap().to_owned();
    let (_, _, a) = get_page(&app, &format!("/o/{id}"), PLAIN_UA, None).await;
    let (_, _, b) = get_page(&app, &format!("/o/{id}"), PLAIN_UA, None).await;
    let pay_path = format!("/o/{id}/pay");
    let (nonce_a, nonce_b) = (nonce_of(&a), nonce_of(&b));
    let form_hk = [("nonce", nonce_a.as_str()), ("wallet", "alipay_hk")];
    let form_cn = [("nonce", nonce_b.as_str()), ("wallet", "alipay_cn")];
    let (hk, cn) = tokio::join!(
        post_form(&app, &pay_path, PLAIN_UA, &form_hk),
        post_form(&app, &pay_path, PLAIN_UA, &form_cn)
    );
    let started = get_order(&app, &shop, &id).await;
    let winner = started["wallet"].as_str().unwrap().to_owned();
    let (won, lost) = if winner == "alipay_hk" {
        (hk, cn)
    } else {
        (cn, hk)
    };
    assert_eq!(location(&won), format!("/o/{id}/wallet"));
    assert!(
        lost.status() == StatusCode::CONFLICT || location(&lost) == format!("/o/{id}"),
        "{} {}",
        lost.status(),
        location(&lost)
    );
    if lost.status() == StatusCode::CONFLICT {
        assert!(
            lost.text()
                .await
                .unwrap()
                .contains("This payment is already open")
        );
    }
}

#[tokio::test]
async fn order_qr_images_encode_the_payload_for_their_merchant_only() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    let other = crate::payments::shop(&app).await;
    let order = gateway_order(&app, &shop, "12.00").await;
    let id = order["id"].as_str().unwrap();
    let png = app
        .get(&format!("/v1/orders/{id}/qr.png?size=256"), Some(&shop.key))
        .await;
    assert_eq!(png.status(), StatusCode::OK);
    assert_eq!(png.headers()["content-type"], "image/png");
    let etag = png.headers()["etag"].to_str().unwrap().to_owned();
    let bytes = png.bytes().await.unwrap();
    let image = image::load_from_memory(&bytes).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    let (_, content) = grids[0].decode().unwrap();
    assert_eq!(content, order["pay"]["url"].as_str().unwrap());
    let again = app
        .client
        .get(app.url(&format!("/v1/orders/{id}/qr.png?size=256")))
        .bearer_auth(&shop.key)
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let svg = app
        .get(&format!("/v1/orders/{id}/qr.svg"), Some(&shop.key))
        .await;
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    for path in [
        format!("/v1/orders/{id}/qr.png"),
        format!("/v1/orders/{id}/qr.svg"),
    ] {
        let foreign = app.get(&path, Some(&other.key)).await;
        crate::support::app::assert_error(foreign, StatusCode::NOT_FOUND, "order_not_found").await;
        let anonymous = app.get(&path, None).await;
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    }
    // An order created with a wallet encodes that wallet's own QR string.
    let wallet = create(
        &app,
        &shop,
        json!({"amount": "3.00", "currency": "MOP", "description": "Tea", "wallet": "alipay_cn"}),
    )
    .await;
    assert_eq!(wallet["pay"]["qr"], wallet["pay"]["action"]["data"]);
    assert!(
        wallet["pay"]["qr"]
            .as_str()
            .unwrap()
            .contains("/sandbox/alipay/")
    );
}

#[tokio::test]
async fn an_expired_gateway_order_shows_its_status_not_a_pay_form() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let shop = shop(&app).await;
    let order = gateway_order(&app, &shop, "5.00").await;
    let id = order["id"].as_str().unwrap();
    let nonce = form_nonce(&app, &format!("/o/{id}"), MPAY_UA).await;
    let closed = app
        .post_json(
            &format!("/v1/orders/{id}/close"),
            Some(&shop.key),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(closed.status(), StatusCode::OK);
    let (_, _, page) = get_page(&app, &format!("/o/{id}"), MPAY_UA, None).await;
    assert!(page.contains("data-status=\"expired\"") && !page.contains("id=\"submit\""));
    let late = post_form(&app, &format!("/o/{id}/pay"), MPAY_UA, &[("nonce", &nonce)]).await;
    assert_eq!(location(&late), format!("/o/{id}"));
    assert_eq!(get_order(&app, &shop, id).await["wallet"], Value::Null);
}

/// A busy plate's page is served from what was read in the last
/// `shopper.plate_cache_ms`; once that is older the store is read again, and a Pay
/// submission always reads the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plate_pages_reuse_a_recent_read_and_pay_always_reads_the_store() {
    let clock = sesame::clock::ManualClock::new(1_800_000_000_000);
    let app = spawn_with_clock(StoreBackend::Redis, clock.clone()).await;
    let ttl = app.state.settings.shopper.plate_cache_ms;
    assert!(ttl > 0);
    let p = plated(&app, "MOP").await;
    let path = format!("/q/{}", p.token);
    let (status, _, html) = get_page(&app, &path, MPAY_UA, None).await;
    assert_eq!(status, StatusCode::OK);
    let nonce = nonce_of(&html);
    // The store goes away.
    let client = redis::Client::open(app.state.settings.store.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _ = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async::<()>(&mut conn)
        .await;
    clock.advance(ttl - 1);
    let (status, _, html) = get_page(&app, &path, MPAY_UA, None).await;
    assert_eq!(status, StatusCode::OK, "served from the recent read");
    assert!(html.contains("Cafe Nam Van"));
    let pay = post_pay(
        &app,
        &p.token,
        MPAY_UA,
        &[("amount", "5.00"), ("nonce", &nonce)],
    )
    .await;
    assert!(
        pay.status().is_server_error(),
        "pay read the store: {}",
        pay.status()
    );
    clock.advance(1);
    let (status, _, _) = get_page(&app, &path, MPAY_UA, None).await;
    assert!(status.is_server_error(), "read again once stale: {status}");
}
