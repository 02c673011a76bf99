//! Plate images through the real server: decodable PNG, SVG, poster, validation,
//! ETag / Cache-Control, and a repeated request that is not rendered again.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::{assert_error, spawn_app};

fn decode_png(bytes: &[u8]) -> String {
    let image = image::load_from_memory(bytes).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "exactly one QR code in the image");
    grids[0].decode().unwrap().1
}

#[tokio::test]
async fn png_decodes_back_to_the_plate_payload() {
    let app = spawn_app().await;
    let m = app.onboard("Cafe Nam Van").await;
    let emvco = app
        .create_plate(
            &m.id,
            &json!({"label": "Till 2", "amount": "12.00", "format": "emvco"}),
        )
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    for plate in [&m.plate, &emvco] {
        for query in ["", "?size=300&margin=4&ecc=H", "?size=256&ecc=l"] {
            let id = plate["id"].as_str().unwrap();
            let response = app
                .get(&format!("/v1/plates/{id}/qr.png{query}"), Some(&m.api_key))
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["content-type"], "image/png");
            let bytes = response.bytes().await.unwrap();
            assert_eq!(decode_png(&bytes), plate["payload"].as_str().unwrap());
        }
    }
}

#[tokio::test]
async fn svg_and_poster_carry_the_code_names_label_and_wallets() {
    let app = spawn_app().await;
    let m = app.onboard("Cafe Nam Van").await;
    let id = m.plate["id"].as_str().unwrap();
    let svg = app
        .get(&format!("/v1/plates/{id}/qr.svg"), Some(&m.api_key))
        .await;
    assert_eq!(svg.status(), StatusCode::OK);
    assert!(
        svg.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("image/svg+xml")
    );
    let text = svg.text().await.unwrap();
    assert!(text.starts_with("<svg") || text.starts_with("<?xml"));

    let poster = app
        .get(&format!("/v1/plates/{id}/poster.svg"), Some(&m.api_key))
        .await;
    assert_eq!(poster.status(), StatusCode::OK);
    let text = poster.text().await.unwrap();
    for needle in [
        "105mm",
        "148mm",
        "Cafe Nam Van",
        "南灣咖啡",
        "Café Nam Van",
        "Main",
        "MPay",
        "WeChat Pay",
        "AlipayHK",
    ] {
        assert!(text.contains(needle), "poster lacks {needle}");
    }
    let zh_only = app
        .get(
            &format!("/v1/plates/{id}/poster.svg?lang=zh"),
            Some(&m.api_key),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(zh_only.contains("南灣咖啡") && !zh_only.contains("Café Nam Van"));
    let response = app
        .get(
            &format!("/v1/plates/{id}/poster.svg?lang=fr"),
            Some(&m.api_key),
        )
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
}

#[tokio::test]
async fn render_parameters_are_validated() {
    let app = spawn_app().await;
    let m = app.onboard("Cafe").await;
    let id = m.plate["id"].as_str().unwrap();
    for query in [
        "size=abc",
        "size=-5",
        "size=0",
        "size=99999",
        "margin=17",
        "margin=x",
        "ecc=X",
        "zoom=2",
    ] {
        let response = app
            .get(&format!("/v1/plates/{id}/qr.png?{query}"), Some(&m.api_key))
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
    assert_eq!(
        app.metric("sesame_qr_renders_total").await,
        0.0,
        "nothing rendered for bad input"
    );
    // Too small for the code's module count: found out by encoding, then refused.
    let response = app
        .get(
            &format!("/v1/plates/{id}/qr.png?size=64&margin=16"),
            Some(&m.api_key),
        )
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    for bad_id in ["pl_nope", "pl_00000000000000000000", "../../etc/passwd"] {
        let response = app
            .get(&format!("/v1/plates/{bad_id}/qr.png"), Some(&m.api_key))
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn repeated_requests_are_served_from_cache_and_304_when_unchanged() {
    let app = spawn_app().await;
    let m = app.onboard("Cafe").await;
    let path = format!(
        "/v1/plates/{}/qr.png?size=400",
        m.plate["id"].as_str().unwrap()
    );
    let first = app.get(&path, Some(&m.api_key)).await;
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    assert!(
        first.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let first_bytes = first.bytes().await.unwrap();
    assert_eq!(app.metric("sesame_qr_renders_total").await, 1.0);

    let second = app.get(&path, Some(&m.api_key)).await;
    assert_eq!(second.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(second.bytes().await.unwrap(), first_bytes);
    assert_eq!(
        app.metric("sesame_qr_renders_total").await,
        1.0,
        "served from cache"
    );

    let conditional = app
        .client
        .get(app.url(&path))
        .bearer_auth(&m.api_key)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(conditional.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(conditional.headers()["etag"].to_str().unwrap(), etag);

    let other = app.get(&format!("{path}&ecc=H"), Some(&m.api_key)).await;
    assert_ne!(other.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(app.metric("sesame_qr_renders_total").await, 2.0);
}
