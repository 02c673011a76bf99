//! The cost of the crypto the wallet protocols force on every payment.
//!
//! RSA-2048 PKCS#1 v1.5 SHA-256 sign and verify with aws-lc-rs (what
//! `sesame_adapters::crypto` uses) against the pure-Rust `rsa` crate on the same key
//! and the same 300-byte message (the size of an Alipay+ signing string), plus
//! HMAC-SHA256 and AES-256-GCM decryption of a 1 KiB callback (WeChat Pay v3).
//! Each benchmark is one operation, so criterion's `elem/s` is operations per second.
//!
//! Run: `CARGO_TARGET_DIR=/work/target cargo bench -p sesame-adapters --bench crypto
//! -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer, Verifier};
use sesame_adapters::crypto::{Aes256GcmKey, HmacSha256Key, RsaPrivateKey};
use sha2::Sha256;
use std::hint::black_box;

const PKCS8_PEM: &str = include_str!("../testdata/rsa2048_pkcs8.pem");

/// A 300-byte message shaped like an Alipay+ signing string.
fn message() -> Vec<u8> {
    let mut msg =
        b"POST /aps/api/v1/payments/pay\nSANDBOX_5YBZ1K2ZAP5T.2024-05-01T12:00:00+08:00.".to_vec();
    msg.extend_from_slice(br#"{"paymentRequestId":"o_3kq8x9","paymentAmount":{"currency":"MOP","value":"880"},"order":{"referenceOrderId":"o_3kq8x9"}}"#);
    msg.resize(300, b' ');
    msg
}

fn rsa_sign(c: &mut Criterion) {
    let msg = message();
    let aws = RsaPrivateKey::from_pem(PKCS8_PEM).expect("fixture key");
    let pure = rsa::RsaPrivateKey::from_pkcs8_pem(PKCS8_PEM).expect("fixture key");
    let pure_signer = SigningKey::<Sha256>::new(pure);

    // Same key, deterministic padding: both libraries must produce the same bytes,
    // otherwise the comparison would be between different operations.
    let aws_sig = aws.sign(&msg).expect("sign");
    assert_eq!(pure_signer.sign(&msg).to_vec(), aws_sig);

    let mut group = c.benchmark_group("rsa2048_sha256_sign");
    group.throughput(Throughput::Elements(1));
    group.bench_function("aws_lc_rs", |b| {
        b.iter(|| aws.sign(black_box(&msg)).expect("sign"))
    });
    // Blinded, as aws-lc-rs always is: the fair comparison for a server key.
    group.bench_function("rsa_crate_blinded", |b| {
        let mut rng = rsa::rand_core::OsRng;
        b.iter(|| pure_signer.sign_with_rng(&mut rng, black_box(&msg)))
    });
    group.bench_function("rsa_crate_unblinded", |b| {
        b.iter(|| pure_signer.sign(black_box(&msg)))
    });
    group.finish();
}

fn rsa_verify(c: &mut Criterion) {
    let msg = message();
    let aws = RsaPrivateKey::from_pem(PKCS8_PEM).expect("fixture key");
    let aws_public = aws.public_key().expect("public key");
    let sig = aws.sign(&msg).expect("sign");
    let pure = rsa::RsaPrivateKey::from_pkcs8_pem(PKCS8_PEM).expect("fixture key");
    let pure_verifier = VerifyingKey::<Sha256>::new(pure.to_public_key());
    let pure_sig = Signature::try_from(sig.as_slice()).expect("signature");
    pure_verifier
        .verify(&msg, &pure_sig)
        .expect("rsa crate verifies");
    aws_public.verify(&msg, &sig).expect("aws-lc-rs verifies");

    let mut group = c.benchmark_group("rsa2048_sha256_verify");
    group.throughput(Throughput::Elements(1));
    group.bench_function("aws_lc_rs", |b| {
        b.iter(|| aws_public.verify(black_box(&msg), black_box(&sig)))
    });
    group.bench_function("rsa_crate", |b| {
        b.iter(|| pure_verifier.verify(black_box(&msg), black_box(&pure_sig)))
    });
    group.finish();
}

fn symmetric(c: &mut Criterion) {
    let callback = vec![b'x'; 1024];
    let hmac = HmacSha256Key::new(b"wechat-pay-v2-api-key-0123456789");
    let aes = Aes256GcmKey::new(b"0123456789abcdef0123456789abcdef").expect("key");
    let sealed = aes
        .encrypt(b"fdasflkja484", b"transaction", &callback)
        .expect("encrypt");

    let mut group = c.benchmark_group("callback_1kib");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hmac_sha256", |b| {
        b.iter(|| hmac.sign(black_box(&callback)))
    });
    group.bench_function("aes_256_gcm_decrypt", |b| {
        b.iter(|| {
            aes.decrypt(b"fdasflkja484", b"transaction", black_box(&sealed))
                .expect("decrypt")
        })
    });
    group.finish();
}

criterion_group!(benches, rsa_sign, rsa_verify, symmetric);
criterion_main!(benches);
