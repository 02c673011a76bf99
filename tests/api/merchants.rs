//! Admin API: onboarding merchants, plates and API keys, on both backends.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sesame::config::StoreBackend;
use sesame::qr::emvco;

use crate::support::app::{
    PUBLIC_BASE_URL, TestApp, assert_error, merchant_body, spawn_app, spawn_app_on,
};

async fn onboarding_returns_merchant_key_and_default_plate(app: TestApp) {
    let response = app.create_merchant(&merchant_body("Cafe Nam Van")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let merchant = &body["merchant"];
    assert!(merchant["id"].as_str().unwrap().starts_with("m_"));
    assert_eq!(merchant["name"], "Cafe Nam Van");
    assert_eq!(merchant["name_zh"], "南灣咖啡");
    assert_eq!(merchant["currency"], "MOP");
    assert!(
        merchant.get("webhook_secret").is_none(),
        "secret never shown"
    );
    let key = body["api_key"].as_str().unwrap();
    assert!(key.starts_with("sk_") && key.len() == 55);
    let plate = &body["plate"];
    let token = plate["token"].as_str().unwrap();
    assert_eq!(plate["url"], format!("{PUBLIC_BASE_URL}/q/{token}"));
    assert_eq!(plate["payload"], plate["url"]);
    assert_eq!(plate["format"], "url");

    // The key works for the merchant API and is stored hashed only.
    let plates: Value = app.get("/v1/qr", Some(key)).await.json().await.unwrap();
    assert_eq!(plates["data"][0]["id"], plate["id"]);
    let id = sesame::domain::MerchantId::parse(merchant["id"].as_str().unwrap()).unwrap();
    let stored = app.state.store.merchant(&id).await.unwrap().unwrap();
    assert_eq!(stored.name, "Cafe Nam Van");
    let by_hash = app
        .state
        .store
        .merchant_by_api_key(&sesame::domain::ApiKey::hash_of(key))
        .await
        .unwrap();
    assert!(by_hash.is_some());
    assert!(
        app.state
            .store
            .merchant_by_api_key(key)
            .await
            .unwrap()
            .is_none(),
        "clear key is not a lookup key"
    );

    let fetched: Value = app
        .get(
            &format!("/v1/merchants/{}", merchant["id"].as_str().unwrap()),
            Some(&app.admin_token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(&fetched, merchant);
}

#[tokio::test]
async fn onboarding_returns_merchant_key_and_default_plate_embedded() {
    onboarding_returns_merchant_key_and_default_plate(spawn_app().await).await;
}

#[tokio::test]
async fn onboarding_returns_merchant_key_and_default_plate_redis() {
    onboarding_returns_merchant_key_and_default_plate(spawn_app_on(StoreBackend::Redis).await)
        .await;
}

async fn merchants_are_listed_with_a_cursor(app: TestApp) {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.onboard(&format!("Shop {i}")).await.id);
    }
    let listed = |query: String| {
        let app = &app;
        async move {
            let page: Value = app
                .get(&format!("/v1/merchants?{query}"), Some(&app.admin_token))
                .await
                .json()
                .await
                .unwrap();
            let got: Vec<(String, String)> = page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["created_at"].as_str().unwrap().to_owned(),
                        m["id"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (got, page["next_cursor"].as_str().map(str::to_owned))
        }
    };
    // Creation order; merchants created in the same millisecond are ordered by id.
    let (all, _) = listed("limit=200".to_owned()).await;
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(all, expected, "listed in (created_at, id) order");
    let mut listed_ids: Vec<&String> = all.iter().map(|(_, id)| id).collect();
    listed_ids.sort();
    let mut created: Vec<&String> = ids.iter().collect();
    created.sort();
    assert_eq!(listed_ids, created);

    let (first, cursor) = listed("limit=2".to_owned()).await;
    assert_eq!(first, all[..2]);
    let cursor = cursor.expect("a next cursor after a full page");
    let (rest, _) = listed(format!("limit=3&after={cursor}")).await;
    assert_eq!(rest, all[2..]);
    for bad in [
        "limit=0",
        "limit=201",
        "limit=abc",
        "after=nope",
        "colour=red",
    ] {
        let response = app
            .get(&format!("/v1/merchants?{bad}"), Some(&app.admin_token))
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
}

#[tokio::test]
async fn merchants_are_listed_with_a_cursor_embedded() {
    merchants_are_listed_with_a_cursor(spawn_app().await).await;
}

#[tokio::test]
async fn merchants_are_listed_with_a_cursor_redis() {
    merchants_are_listed_with_a_cursor(spawn_app_on(StoreBackend::Redis).await).await;
}

#[tokio::test]
async fn emvco_plate_with_fixed_amount_encodes_every_field() {
    let app = spawn_app().await;
    let m = app.onboard("Cafe Nam Van").await;
    let response = app
        .create_plate(
            &m.id,
            &json!({"label": "Till 2", "amount": "25.50", "format": "emvco"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let plate: Value = response.json().await.unwrap();
    assert_eq!(plate["fixed_amount"], "25.50");
    let payload = plate["payload"].as_str().unwrap();
    let decoded = emvco::decode(payload).unwrap();
    assert!(decoded.crc_valid);
    let json = decoded.to_json();
    let o = &json["objects"];
    assert_eq!(o["00"], "01");
    assert_eq!(o["01"], "12", "fixed amount = dynamic");
    assert_eq!(o["26"]["00"], "mo.sesame.pay");
    assert_eq!(o["26"]["01"], m.id);
    assert_eq!(o["26"]["02"], plate["url"]);
    assert_eq!(o["52"], "5812");
    assert_eq!(o["53"], "446");
    assert_eq!(o["54"], "25.50");
    assert_eq!(o["58"], "MO");
    assert_eq!(o["59"], "Cafe Nam Van");
    assert_eq!(o["60"], "MACAU");
    assert_eq!(o["62"]["03"], "Till 2");
    assert_eq!(o["62"]["07"], plate["id"]);
    assert_eq!(o["64"]["00"], "ZH");
    assert_eq!(o["64"]["01"], "南灣咖啡");

    let static_plate: Value = app
        .create_plate(&m.id, &json!({"label": "Door", "format": "emvco"}))
        .await
        .json()
        .await
        .unwrap();
    let decoded = emvco::decode(static_plate["payload"].as_str().unwrap())
        .unwrap()
        .to_json();
    assert_eq!(decoded["objects"]["01"], "11");
    assert!(decoded["objects"].get("54").is_none());
}

#[tokio::test]
async fn emvco_plate_that_cannot_fit_is_refused_and_not_stored() {
    let app = spawn_app_on_long_url().await;
    let m = app.onboard("Cafe").await;
    let response = app
        .create_plate(&m.id, &json!({"label": "Door", "format": "emvco"}))
        .await;
    let body = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "qr_field_too_long",
    )
    .await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("26") && message.contains("public_base_url"),
        "{message}"
    );
    let plates: Value = app
        .get("/v1/qr", Some(&m.api_key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plates["data"].as_array().unwrap().len(), 1);
}

async fn spawn_app_on_long_url() -> TestApp {
    crate::support::app::spawn_with(StoreBackend::Embedded, |s| {
        s.server.public_base_url = format!("https://{}.example", "x".repeat(60));
    })
    .await
}

#[tokio::test]
async fn bad_plate_requests_are_rejected_with_the_field_named() {
    let app = spawn_app().await;
    let m = app.onboard("Cafe").await;
    for (body, code) in [
        (json!({"label": ""}), "invalid_field"),
        (json!({"label": "x".repeat(26)}), "invalid_field"),
        (json!({"label": "Till", "amount": "-1"}), "invalid_amount"),
        (json!({"label": "Till", "amount": "0"}), "invalid_amount"),
        (
            json!({"label": "Till", "amount": "1.005"}),
            "invalid_amount",
        ),
        (json!({"label": "Till", "amount": "1e3"}), "invalid_amount"),
        // Above payments.max_amount_minor: a fixed plate must be payable.
        (
            json!({"label": "Big", "amount": "92233720368547758.07"}),
            "invalid_amount",
        ),
        (
            json!({"label": "Big", "amount": "1000000.01"}),
            "invalid_amount",
        ),
        // Tag 62's store label is printable ASCII; a URL plate takes any text.
        (json!({"label": "櫃台", "format": "emvco"}), "invalid_field"),
        (json!({"label": "Till", "amount": 12.5}), "invalid_request"),
        (json!({"label": "Till", "format": "pdf"}), "invalid_request"),
        (json!({"label": "Till", "colour": "red"}), "invalid_request"),
    ] {
        let response = app.create_plate(&m.id, &body).await;
        assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, code).await;
    }
    let plates: Value = app
        .get("/v1/qr", Some(&m.api_key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        plates["data"].as_array().unwrap().len(),
        1,
        "nothing was created"
    );
    let response = app
        .create_plate("m_0000000000000000", &json!({"label": "Till"}))
        .await;
    assert_error(response, StatusCode::NOT_FOUND, "merchant_not_found").await;
    let response = app.create_plate("../etc", &json!({"label": "Till"})).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

async fn rotating_the_api_key_revokes_the_old_one(app: TestApp) {
    let m = app.onboard("Cafe").await;
    let response = app
        .post_json(
            &format!("/v1/merchants/{}/api-keys", m.id),
            Some(&app.admin_token),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let issued: Value = response.json().await.unwrap();
    let new_key = issued["api_key"].as_str().unwrap();
    assert_ne!(new_key, m.api_key);
    assert_error(
        app.get("/v1/qr", Some(&m.api_key)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_eq!(
        app.get("/v1/qr", Some(new_key)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn rotating_the_api_key_revokes_the_old_one_embedded() {
    rotating_the_api_key_revokes_the_old_one(spawn_app().await).await;
}

#[tokio::test]
async fn rotating_the_api_key_revokes_the_old_one_redis() {
    rotating_the_api_key_revokes_the_old_one(spawn_app_on(StoreBackend::Redis).await).await;
}

#[tokio::test]
async fn admin_endpoints_refuse_missing_wrong_and_merchant_credentials() {
    let app = spawn_app().await;
    let m = app.onboard("Cafe").await;
    let before = app.merchant_count().await;
    let body = merchant_body("Intruder");
    for token in [None, Some("wrong"), Some(m.api_key.as_str()), Some("")] {
        let response = app.post_json("/v1/merchants", token, &body, None).await;
        let response_headers = response.headers().clone();
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        assert_eq!(response_headers.get("www-authenticate").unwrap(), "Bearer");
        assert_error(
            app.get("/v1/merchants", token).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
    let basic = app
        .client
        .get(app.url("/v1/merchants"))
        .header("Authorization", format!("Basic {}", app.admin_token))
        .send()
        .await
        .unwrap();
    assert_error(basic, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(app.merchant_count().await, before, "nothing was created");
}

#[tokio::test]
async fn a_merchant_never_reads_another_merchants_plates() {
    let app = spawn_app().await;
    let a = app.onboard("Shop A").await;
    let b = app.onboard("Shop B").await;
    let b_plate = b.plate["id"].as_str().unwrap();
    let a_plate = a.plate["id"].as_str().unwrap();
    for suffix in ["qr.png", "qr.svg", "poster.svg"] {
        let response = app
            .get(&format!("/v1/plates/{b_plate}/{suffix}"), Some(&a.api_key))
            .await;
        assert_error(response, StatusCode::NOT_FOUND, "plate_not_found").await;
        let own = app
            .get(&format!("/v1/plates/{a_plate}/{suffix}"), Some(&a.api_key))
            .await;
        assert_eq!(own.status(), StatusCode::OK);
        let admin = app
            .get(
                &format!("/v1/plates/{b_plate}/{suffix}"),
                Some(&app.admin_token),
            )
            .await;
        assert_eq!(admin.status(), StatusCode::OK);
        let anonymous = app
            .get(&format!("/v1/plates/{a_plate}/{suffix}"), None)
            .await;
        assert_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let listed: Value = app
        .get("/v1/qr", Some(&a.api_key))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a_plate]);
    // A merchant key is not an admin key.
    let response = app
        .get(&format!("/v1/merchants/{}", b.id), Some(&a.api_key))
        .await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

/// With the store down, a made-up token is still refused with the friendly 404 (its
/// MAC fails before any lookup), while a genuine one needs the store and says so.
#[tokio::test]
async fn a_forged_plate_token_is_refused_without_a_store_lookup() {
    let app = spawn_app_on(StoreBackend::Redis).await;
    let shop = app.onboard("Cafe").await;
    let genuine = shop.plate["token"].as_str().unwrap().to_owned();
    let mut forged = genuine.clone().into_bytes();
    forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let client = redis::Client::open(app.state.settings.store.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // SHUTDOWN closes the connection instead of answering.
    let _ = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async::<()>(&mut conn)
        .await;
    let refused = app.get(&format!("/q/{forged}"), None).await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    assert!(refused.text().await.unwrap().contains("<html"));
    let needs_store = app.get(&format!("/q/{genuine}"), None).await;
    assert!(
        needs_store.status().is_server_error(),
        "{}",
        needs_store.status()
    );
}
