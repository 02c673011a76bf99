//! The shopper's pages over HTTP through the real server and the wallet sandboxes:
//! plate page, Pay form (errors, idempotency, wallet hand-off), WeChat OAuth + JSAPI,
//! status page, languages, security headers, page weight and rate limits.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sesame::config::StoreBackend;

use crate::payments::{Shop, get_order, pay_at_wallet, shop, wait_status};
use crate::support::app::{TestApp, spawn_reachable};

pub const MPAY_UA: &str = "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36 MPay/3.2.1";
pub const WECHAT_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.44(0x18002c2f) NetType/WIFI Language/zh_TW";
pub const PLAIN_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";

/// A merchant (with a webhook endpoint and local names) and its first plate's token.
pub struct Plated {
    pub shop: Shop,
    pub token: String,
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
    let token = plates["data"][0]["token"].as_str().unwrap().to_owned();
    Plated { shop, token }
}

async fn shop_in(app: &TestApp, currency: &str) -> Shop {
    if currency == "MOP" {
        let shop = shop(app).await;
        return shop;
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

async fn post_pay(
    app: &TestApp,
    token: &str,
    ua: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/q/{token}/pay")))
        .header("User-Agent", ua)
        .form(form)
        .send()
        .await
        .unwrap()
}

fn nonce_of(html: &str) -> String {
    let at = html.find("name=\"nonce\" value=\"").expect("nonce field") + 20;
    html[at..].split('"').next().unwrap().to_owned()
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
        "default-src 'none'",
        "style-src 'self'",
        "script-src 'self'",
        "img-src 'self' data:",
        "form-action 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
}

#[tokio::test]
async fn plate_page_names_the_merchant_and_plate_before_the_amount_and_lists_wallets() {
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
    let plate = html.find("id=\"plate\"").expect("plate label");
    let amount = html.find("id=\"amount\"").expect("amount field");
    assert!(
        merchant < plate && plate < amount,
        "name and plate come first"
    );
    assert!(html.contains("<label for=\"amount\">Amount (MOP)</label>"));
    for brand in ["wechat_pay", "alipay_hk", "alipay_cn", "kakao_pay", "mpay"] {
        assert!(
            html.contains(&format!(
                "<input type=\"radio\" name=\"wallet\" id=\"w-{brand}\" value=\"{brand}\">"
            )),
            "{brand} in the picker"
        );
        assert!(html.contains(&format!("<label for=\"w-{brand}\">")));
    }
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
}

#[tokio::test]
async fn forged_or_unknown_tokens_get_a_friendly_html_404() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let unknown_plate = app
        .state
        .tokens
        .token_for(&sesame::domain::PlateId::generate());
    for path in [
        "/q/AAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        "/q/not-a-token".to_owned(),
        format!("/q/{unknown_plate}"),
        "/o/ord_nothing".to_owned(),
    ] {
        let (status, headers, html) = get_page(&app, &path, PLAIN_UA, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
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
async fn an_invalid_amount_is_shown_next_to_the_field_and_nothing_is_created() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (_, _, html) = get_page(&app, &format!("/q/{}", p.token), MPAY_UA, None).await;
    let nonce = nonce_of(&html);
    for (amount, message) in [
        ("", "Enter the amount."),
        ("abc", "Enter a number such as 12.50."),
        ("-5", "Enter a number such as 12.50."),
        ("0", "The smallest amount is 0.01 MOP."),
        ("1.234", "MOP amounts have at most 2 decimal places."),
        ("1000000.01", "The largest amount is 1000000.00 MOP."),
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
async fn the_picker_requires_a_choice_and_routes_to_the_chosen_wallet() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (_, _, html) = get_page(&app, &format!("/q/{}", p.token), PLAIN_UA, None).await;
    let nonce = nonce_of(&html);
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
    assert!(
        location(&chosen).contains("/sandbox/alipay/"),
        "{}",
        location(&chosen)
    );
    let orders = orders_of(&app, &p.shop).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["wallet"], "alipay_cn");
    assert_eq!(orders[0]["mode"], "static_scan");
}

#[tokio::test]
async fn a_double_submit_is_one_order_paid_once_and_the_status_page_shows_it() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (_, _, html) = get_page(&app, &format!("/q/{}", p.token), MPAY_UA, None).await;
    let nonce = nonce_of(&html);
    let form = [("amount", "12.30"), ("nonce", nonce.as_str())];
    let (first, second) = tokio::join!(
        post_pay(&app, &p.token, MPAY_UA, &form),
        post_pay(&app, &p.token, MPAY_UA, &form)
    );
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(second.status(), StatusCode::SEE_OTHER);
    let wallet = location(&first);
    assert!(wallet.contains("/sandbox/alipay_plus/"), "{wallet}");
    let again = post_pay(&app, &p.token, MPAY_UA, &form).await;
    assert_eq!(location(&again), wallet, "a retry goes to the same cashier");
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
    let json: Value = app
        .get(&format!("/o/{id}/status"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json["status"], "pending");

    let order = get_order(&app, &p.shop, &id).await;
    pay_at_wallet(&app, &order).await;
    let paid = wait_status(&app, &p.shop, &id, "succeeded").await;
    assert_eq!(paid["ledger"].as_array().unwrap().len(), 1);
    let (_, _, done) = get_page(&app, &format!("/o/{id}"), MPAY_UA, None).await;
    assert!(done.contains("<h1 id=\"status\" data-status=\"succeeded\">Paid</h1>"));
    assert!(done.contains("12.30 MOP"));
    assert!(done.contains(&id));
    assert!(done.contains("(UTC+8)"));
    assert!(!done.contains("http-equiv=\"refresh\""));
    println!("status page: {} bytes", done.len());
    assert!(done.len() < 30 * 1024);
    let delivered = p.shop.endpoint.wait_for("order.succeeded", 1, 20).await;
    assert_eq!(delivered[0].body["data"]["mode"], "static_scan");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn kakao_pay_outside_krw_goes_through_alipay_plus() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let ua = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36 KAKAOTALK 10.4.5";
    let (_, _, html) = get_page(&app, &format!("/q/{}", p.token), ua, None).await;
    assert!(html.contains("Paying with Kakao Pay"));
    let response = post_pay(
        &app,
        &p.token,
        ua,
        &[("amount", "20"), ("nonce", &nonce_of(&html))],
    )
    .await;
    assert!(
        location(&response).contains("/sandbox/alipay_plus/"),
        "{}",
        location(&response)
    );
    let orders = orders_of(&app, &p.shop).await;
    assert_eq!(orders[0]["wallet"], "kakao_pay");
    assert_eq!(orders[0]["adapter"], "alipay_plus");
}

#[tokio::test]
async fn a_reused_form_with_another_amount_is_refused_with_a_fresh_form() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (_, _, html) = get_page(&app, &format!("/q/{}", p.token), MPAY_UA, None).await;
    let nonce = nonce_of(&html);
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
async fn a_fixed_amount_plate_charges_its_amount_whatever_is_posted() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let plate: Value = app
        .create_plate(
            &p.shop.id,
            &json!({"label": "Set lunch", "amount": "25.00"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let token = plate["token"].as_str().unwrap();
    let (_, _, html) = get_page(&app, &format!("/q/{token}"), MPAY_UA, None).await;
    assert!(html.contains("id=\"amount-fixed\">25.00 MOP</p>"));
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
    assert_eq!(orders[0]["amount"], "25.00");
}

#[tokio::test]
async fn wechat_goes_through_oauth_to_a_jsapi_page_that_pays() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (_, _, html) = get_page(&app, &format!("/q/{}", p.token), WECHAT_UA, None).await;
    assert!(html.contains("WeChat Pay"));
    let response = post_pay(
        &app,
        &p.token,
        WECHAT_UA,
        &[("amount", "3.50"), ("nonce", &nonce_of(&html))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let authorize = location(&response);
    assert!(
        authorize.contains("/sandbox/wechat_pay/connect/oauth2/authorize"),
        "{authorize}"
    );
    let back = app.client.get(&authorize).send().await.unwrap();
    let callback = location(&back);
    assert!(
        callback.contains(&format!("/q/{}/wechat?code=", p.token)),
        "{callback}"
    );
    let page = app
        .client
        .get(&callback)
        .header("User-Agent", WECHAT_UA)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_strict_csp(page.headers());
    let html = page.text().await.unwrap();
    assert!(html.contains("<script src=\"/static/wechat.js?v="));
    assert!(html.contains("data-bridge=\"/sandbox/wechat_pay/jsbridge/getBrandWCPayRequest\""));
    let mut params = serde_json::Map::new();
    for name in [
        "appId",
        "timeStamp",
        "nonceStr",
        "package",
        "signType",
        "paySign",
    ] {
        let marker = format!("name=\"{name}\" value=\"");
        let at = html
            .find(&marker)
            .unwrap_or_else(|| panic!("{name}: {html}"))
            + marker.len();
        let value = html[at..]
            .split('"')
            .next()
            .unwrap()
            .replace("&#x3d;", "=")
            .replace("&#61;", "=");
        params.insert(name.to_owned(), Value::String(value));
    }
    let orders = orders_of(&app, &p.shop).await;
    let id = orders[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(orders[0]["wallet"], "wechat_pay");
    // A second OAuth return for the same order shows the same payment, not a new one.
    let again = app.client.get(&authorize).send().await.unwrap();
    let page2 = app.client.get(location(&again)).send().await.unwrap();
    assert_eq!(page2.status(), StatusCode::OK);
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
    let html = switched.text().await.unwrap();
    assert!(html.contains("Mesa de Seul") && html.contains(">Pagar</button>"));
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
async fn an_expired_order_page_links_back_to_its_plate() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
    let p = plated(&app, "MOP").await;
    let (_, _, html) = get_page(&app, &format!("/q/{}", p.token), MPAY_UA, None).await;
    post_pay(
        &app,
        &p.token,
        MPAY_UA,
        &[("amount", "4"), ("nonce", &nonce_of(&html))],
    )
    .await;
    let id = orders_of(&app, &p.shop).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let closed = app
        .post_json(
            &format!("/v1/orders/{id}/close"),
            Some(&p.shop.key),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(closed.status(), StatusCode::OK);
    let (_, _, page) = get_page(&app, &format!("/o/{id}"), MPAY_UA, Some("pt")).await;
    assert!(page.contains("O pagamento expirou"));
    assert!(page.contains(&format!("href=\"/q/{}\"", p.token)), "{page}");
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

#[tokio::test]
async fn the_plate_rate_limit_answers_429_before_any_order_is_created() {
    let app = spawn_reachable(StoreBackend::Embedded, |s| {
        s.shopper.rate_per_plate_per_minute = 2;
    })
    .await;
    let p = plated(&app, "MOP").await;
    let path = format!("/q/{}", p.token);
    let (first, _, html) = get_page(&app, &path, MPAY_UA, None).await;
    assert_eq!(first, StatusCode::OK);
    let (second, _, _) = get_page(&app, &path, MPAY_UA, None).await;
    assert_eq!(second, StatusCode::OK);
    let limited = post_pay(
        &app,
        &p.token,
        MPAY_UA,
        &[("amount", "9"), ("nonce", &nonce_of(&html))],
    )
    .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "60");
    assert_strict_csp(limited.headers());
    assert!(
        limited
            .text()
            .await
            .unwrap()
            .contains("Please wait a minute")
    );
    assert!(
        orders_of(&app, &p.shop).await.is_empty(),
        "nothing reached the store"
    );
    // Another plate of the same merchant has its own bucket.
    let other: Value = app
        .create_plate(&p.shop.id, &json!({"label": "Terrace"}))
        .await
        .json()
        .await
        .unwrap();
    let (status, _, _) = get_page(
        &app,
        &format!("/q/{}", other["token"].as_str().unwrap()),
        MPAY_UA,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_ip_rate_limit_answers_429_even_before_the_token_is_checked() {
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
    assert_eq!(
        get_page(&app, forged, PLAIN_UA, None).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get_page(&app, "/o/ord_x", PLAIN_UA, None).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_demo_merchant_and_plate_are_created_once_and_work() {
    let app = spawn_reachable(StoreBackend::Embedded, |_| {}).await;
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
    let (_, _, html) = get_page(&app, &path, PLAIN_UA, Some("pt")).await;
    assert!(html.contains("Café Demo Sesame"));
    let poster = first.poster_url.strip_prefix(&app.address).unwrap();
    assert_eq!(
        app.get(poster, Some(&app.admin_token)).await.status(),
        StatusCode::OK
    );
}
