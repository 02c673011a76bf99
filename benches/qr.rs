//! QR payload and rendering costs: EMVCo encode/decode, PNG/SVG/poster rendering and a
//! render-cache hit (what a repeated plate request costs). Prints the payload it
//! measures, so a reference encoder (Debian's `qrencode`) can be timed on the same one.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sesame::qr::emvco::{self, Initiation, LanguageTemplate, MerchantPresented};
use sesame::qr::render::{self, Ecc, Kind, Poster, RenderCache, RenderParams};

fn plate() -> MerchantPresented {
    MerchantPresented {
        initiation: Initiation::Static,
        merchant_accounts: vec![(
            26,
            vec![
                (0, "mo.sesame.pay".into()),
                (1, "M000123".into()),
                (2, "PLATE-0042".into()),
            ],
        )],
        mcc: "5812".into(),
        currency_numeric: 446,
        amount: Some("25.00".into()),
        country: "MO".into(),
        merchant_name: "SAMPLE CAFE".into(),
        merchant_city: "MACAU".into(),
        postal_code: None,
        additional: vec![(3, "STORE01".into()), (7, "TILL-2".into())],
        language: Some(LanguageTemplate {
            language: "ZH".into(),
            merchant_name: "澳門小食店".into(),
            merchant_city: Some("澳門".into()),
        }),
    }
}

fn poster() -> Poster<'static> {
    Poster {
        names: vec!["Sample Café", "澳門小食店"],
        label: "Till 2",
        amount: Some("25.00 MOP"),
        wallets: vec!["MPay", "Alipay", "WeChat Pay", "BOC Pay"],
        footer: Some("Scan with any wallet"),
    }
}

fn benches(c: &mut Criterion) {
    let mpm = plate();
    let payload = emvco::encode(&mpm).expect("benchmark plate encodes");
    let params = RenderParams::default();
    let poster = poster();
    // The payload measured, to time another encoder on the same input, e.g.
    // `qrencode -l M -s 16 -m 4 -o out.png "<payload>"` (Debian's qrencode).
    println!("payload ({} bytes): {payload}", payload.len());

    c.bench_function("emvco_encode", |b| {
        b.iter(|| emvco::encode(black_box(&mpm)))
    });
    c.bench_function(
        &format!("emvco_decode_{}_chars", payload.chars().count()),
        |b| b.iter(|| emvco::decode(black_box(&payload))),
    );
    c.bench_function("png_512px_ecc_m", |b| {
        b.iter(|| render::png(black_box(&payload), &params))
    });
    c.bench_function("svg_ecc_m", |b| {
        b.iter(|| render::svg(black_box(&payload), &params))
    });
    c.bench_function("poster_svg", |b| {
        b.iter(|| render::poster_svg(black_box(&payload), &poster, Ecc::M))
    });

    let cache = RenderCache::new(64);
    cache
        .get_or_render(Kind::Png, &payload, &params, None)
        .expect("benchmark plate renders");
    c.bench_function("cache_hit_png_512px", |b| {
        b.iter(|| cache.get_or_render(Kind::Png, black_box(&payload), &params, None))
    });
    c.bench_function("etag_for_png", |b| {
        b.iter(|| RenderCache::etag_for(Kind::Png, black_box(&payload), &params, None))
    });
}

criterion_group!(qr, benches);
criterion_main!(qr);
