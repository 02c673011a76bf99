//! The cryptography every wallet protocol needs, in one place, on aws-lc-rs.
//!
//! Owns: RSA PKCS#1 v1.5 SHA-256 ("RSA2", "RSA256", "SHA256withRSA") signing and
//! verification, PEM / base64-DER key loading, sandbox key generation, HMAC-SHA256,
//! SHA-256, legacy MD5 (WeChat Pay v2 only), AES-256-GCM with associated data (WeChat
//! Pay v3 callbacks and certificates) and constant-time comparison.
//! Must never: log, print or put key material into an error or a `Debug` string
//! (every secret type prints as `Name(***)`), panic on malformed input, or accept a
//! signature it did not check over the exact bytes it was given.
//!
//! Why aws-lc-rs and not the pure-Rust `rsa` crate: every callback, every wallet
//! request and every response check costs one RSA-2048 operation, so RSA is the
//! crypto bound of the whole gateway (DESIGN.md §8). `benches/crypto.rs` measures
//! both on the same key and the same 300-byte message, in one run on the 2-core
//! build machine (`cargo bench -p sesame-adapters --bench crypto -- --warm-up-time 1
//! --measurement-time 3`, load < 1):
//!
//! | RSA-2048 SHA-256 | aws-lc-rs               | `rsa` 0.9.10                         | ratio    |
//! |------------------|-------------------------|--------------------------------------|----------|
//! | sign             | 4 120 ops/s (243 µs)    | 514 ops/s blinded (1.94 ms), 655 unblinded | 8.0 : 1 (6.3 : 1 unblinded) |
//! | verify           | 64 000 ops/s (15.6 µs)  | 5 230 ops/s (191 µs)                 | 12.3 : 1 |
//!
//! A callback ingest target of 10k/s (one verify each) is 16% of one core with
//! aws-lc-rs and would need almost two cores with `rsa`. aws-lc-rs is also
//! constant-time where `rsa` 0.9 is exposed to the Marvin timing attack
//! (RUSTSEC-2023-0071), is already compiled into the gateway, and gives HMAC,
//! SHA-256 and AES-GCM from the same audited library: HMAC-SHA256 of a 1 KiB callback
//! takes 0.77 µs and AES-256-GCM decryption of 1 KiB 0.29 µs, noise next to RSA.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{
    KeyPair as _, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};
use aws_lc_rs::{constant_time, digest, hmac, rand};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::Digest as _;

/// Errors of this module. Messages name the problem, never the key or the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("malformed PEM: {0}")]
    Pem(&'static str),
    #[error("expected a PEM block labelled {expected}, found {found:?}")]
    PemLabel {
        expected: &'static str,
        found: String,
    },
    #[error("malformed base64")]
    Base64,
    #[error("key rejected: {0}")]
    KeyRejected(&'static str),
    #[error("{what} must be {expected} bytes, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("signature does not verify")]
    BadSignature,
    #[error("authenticated decryption failed (wrong key, nonce, associated data or tampered data)")]
    Decrypt,
    #[error("{0} failed")]
    Operation(&'static str),
}

/// One PEM block: its label and the DER bytes of its body.
struct Pem {
    label: String,
    der: Vec<u8>,
}

/// Parses the first PEM block of `text`. Text before `-----BEGIN` (OpenSSL "Bag
/// Attributes", comments) is ignored; RFC 1421 headers such as `Proc-Type:
/// 4,ENCRYPTED` are rejected because they mean an encrypted legacy key.
fn pem_decode(text: &str) -> Result<Pem, CryptoError> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let start = text
        .find(BEGIN)
        .ok_or(CryptoError::Pem("no -----BEGIN line"))?;
    let after_begin = &text[start + BEGIN.len()..];
    let label_end = after_begin
        .find(DASHES)
        .ok_or(CryptoError::Pem("unterminated BEGIN line"))?;
    let label = &after_begin[..label_end];
    if label.is_empty() || label.len() > 64 || label.contains(['\n', '\r']) {
        return Err(CryptoError::Pem("bad label"));
    }
    let rest = &after_begin[label_end + DASHES.len()..];
    let end_marker = format!("-----END {label}-----");
    let body_end = rest
        .find(&end_marker)
        .ok_or(CryptoError::Pem("missing matching -----END line"))?;
    let body = &rest[..body_end];
    if body.contains(':') {
        return Err(CryptoError::Pem(
            "PEM headers (encrypted legacy key) are not supported",
        ));
    }
    let der = decode_base64(body)?;
    if der.is_empty() {
        return Err(CryptoError::Pem("empty body"));
    }
    Ok(Pem {
        label: label.to_owned(),
        der,
    })
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = BASE64.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // RFC 7468: 64 base64 characters per line. Base64 output is ASCII, so byte
    // chunks are valid UTF-8 and `from_utf8` cannot fail; the fallback is unreachable.
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Standard-alphabet base64 with padding; ASCII whitespace anywhere is ignored
/// (keys pasted from wallet portals arrive wrapped at 64 or 76 columns).
pub fn decode_base64(text: &str) -> Result<Vec<u8>, CryptoError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    BASE64.decode(compact).map_err(|_| CryptoError::Base64)
}

/// Standard-alphabet base64 with padding, as every wallet signature header uses.
pub fn encode_base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// An RSA private key (2048 to 8192 bits) that signs with PKCS#1 v1.5 + SHA-256.
pub struct RsaPrivateKey {
    key: KeyPair,
}

impl fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaPrivateKey(***)")
    }
}

impl RsaPrivateKey {
    /// Loads `BEGIN PRIVATE KEY` (PKCS#8, Java / WeChat `apiclient_key.pem`) or
    /// `BEGIN RSA PRIVATE KEY` (PKCS#1, what most non-Java Alipay tools write).
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        let block = pem_decode(pem)?;
        match block.label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&block.der),
            "RSA PRIVATE KEY" => Self::from_pkcs1_der(&block.der),
            "ENCRYPTED PRIVATE KEY" => Err(CryptoError::Pem(
                "encrypted private keys are not supported; decrypt it into the secret store",
            )),
            other => Err(CryptoError::PemLabel {
                expected: "PRIVATE KEY or RSA PRIVATE KEY",
                found: other.to_owned(),
            }),
        }
    }

    /// Base64 DER without PEM armour, PKCS#8 or PKCS#1 (the Alipay+ SDK form).
    pub fn from_base64_der(text: &str) -> Result<Self, CryptoError> {
        let der = decode_base64(text)?;
        Self::from_pkcs8_der(&der).or_else(|_| Self::from_pkcs1_der(&der))
    }

    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        KeyPair::from_pkcs8(der)
            .map(|key| RsaPrivateKey { key })
            .map_err(|e| CryptoError::KeyRejected(e.description_()))
    }

    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, CryptoError> {
        KeyPair::from_der(der)
            .map(|key| RsaPrivateKey { key })
            .map_err(|e| CryptoError::KeyRejected(e.description_()))
    }

    /// A fresh RSA-2048 key, for sandboxes and tests (production keys come from
    /// the wallet portals and the secret store).
    pub fn generate_2048() -> Result<Self, CryptoError> {
        KeyPair::generate(KeySize::Rsa2048)
            .map(|key| RsaPrivateKey { key })
            .map_err(|_| CryptoError::Operation("RSA key generation"))
    }

    /// PKCS#8 PEM of this private key. The caller owns the secret from here on.
    pub fn to_pkcs8_pem(&self) -> Result<String, CryptoError> {
        let der = self
            .key
            .as_der()
            .map_err(|_| CryptoError::Operation("PKCS#8 encoding"))?;
        Ok(pem_encode("PRIVATE KEY", der.as_ref()))
    }

    pub fn public_key(&self) -> Result<RsaPublicKey, CryptoError> {
        RsaPublicKey::from_der(self.key.public_key().as_ref())
    }

    /// Modulus size in bits (2048 for every wallet today).
    pub fn bits(&self) -> usize {
        self.key.public_modulus_len() * 8
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `msg`. Deterministic: the same key and
    /// message always give the same signature. Only an internal library failure
    /// (allocation) can make it fail; that is reported, never turned into an empty
    /// signature.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        // aws-lc-rs ignores the RNG argument for RSA (blinding is internal).
        let rng = rand::SystemRandom::new();
        self.key
            .sign(&RSA_PKCS1_SHA256, &rng, msg, &mut signature)
            .map_err(|_| CryptoError::Operation("RSA signing"))?;
        Ok(signature)
    }

    /// [`RsaPrivateKey::sign`], base64-encoded (standard alphabet, padded).
    pub fn sign_base64(&self, msg: &[u8]) -> Result<String, CryptoError> {
        self.sign(msg).map(|sig| BASE64.encode(sig))
    }
}

/// An RSA public key (2048 to 8192 bits) that verifies PKCS#1 v1.5 + SHA-256.
/// Parsed once at load, so each verification is only the RSA operation.
#[derive(Clone)]
pub struct RsaPublicKey {
    key: ParsedPublicKey,
}

impl fmt::Debug for RsaPublicKey {
    /// Public keys are not secret, but a short fingerprint is all a log needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spki = self.key.as_ref();
        let fingerprint = digest::digest(&digest::SHA256, spki);
        write!(
            f,
            "RsaPublicKey(sha256:{})",
            hex::encode(&fingerprint.as_ref()[..8])
        )
    }
}

impl RsaPublicKey {
    /// Loads `BEGIN PUBLIC KEY` (X.509 SubjectPublicKeyInfo, what Alipay, Alipay+
    /// and WeChat's `pub_key.pem` use) or `BEGIN RSA PUBLIC KEY` (PKCS#1).
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        let block = pem_decode(pem)?;
        match block.label.as_str() {
            "PUBLIC KEY" | "RSA PUBLIC KEY" => Self::from_der(&block.der),
            other => Err(CryptoError::PemLabel {
                expected: "PUBLIC KEY or RSA PUBLIC KEY",
                found: other.to_owned(),
            }),
        }
    }

    /// Base64 of the DER SubjectPublicKeyInfo without PEM armour: the form the
    /// Alipay and Alipay+ portals show and their SDKs expect.
    pub fn from_base64_der(text: &str) -> Result<Self, CryptoError> {
        Self::from_der(&decode_base64(text)?)
    }

    /// DER SubjectPublicKeyInfo or PKCS#1 `RSAPublicKey`. Either is re-encoded
    /// as SubjectPublicKeyInfo, so exports and fingerprints do not depend on the
    /// form a key was delivered in.
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        let rejected =
            |e: aws_lc_rs::error::KeyRejected| CryptoError::KeyRejected(e.description_());
        let spki = aws_lc_rs::rsa::PublicKey::from_der(der)
            .map_err(rejected)?
            .as_der()
            .map_err(|_| CryptoError::Operation("SubjectPublicKeyInfo encoding"))?;
        ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, spki.as_ref())
            .map(|key| RsaPublicKey { key })
            .map_err(rejected)
    }

    /// DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Vec<u8> {
        self.key.as_ref().to_vec()
    }

    /// `BEGIN PUBLIC KEY` PEM, what a sandbox hands to the other side.
    pub fn to_spki_pem(&self) -> String {
        pem_encode("PUBLIC KEY", self.key.as_ref())
    }

    /// Base64 DER SubjectPublicKeyInfo (Alipay / Alipay+ portal form).
    pub fn to_base64_der(&self) -> String {
        BASE64.encode(self.key.as_ref())
    }

    /// Checks an RSASSA-PKCS1-v1_5 SHA-256 signature over exactly `msg`.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        self.key
            .verify_sig(msg, signature)
            .map_err(|_| CryptoError::BadSignature)
    }

    /// [`RsaPublicKey::verify`] of a base64 signature. Undecodable base64 is a bad
    /// signature, not a separate case: to the caller both mean "not authentic".
    pub fn verify_base64(&self, msg: &[u8], signature_b64: &str) -> Result<(), CryptoError> {
        let signature = decode_base64(signature_b64).map_err(|_| CryptoError::BadSignature)?;
        self.verify(msg, &signature)
    }
}

/// An HMAC-SHA256 key (WeChat Pay v2 `HMAC-SHA256` sign type, Sesame's own
/// merchant webhooks and plate tokens).
pub struct HmacSha256Key {
    key: hmac::Key,
}

impl fmt::Debug for HmacSha256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacSha256Key(***)")
    }
}

impl HmacSha256Key {
    pub fn new(secret: &[u8]) -> Self {
        HmacSha256Key {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.key, msg);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Upper-case hex of the tag: the WeChat Pay v2 `sign` field format.
    pub fn sign_hex_upper(&self, msg: &[u8]) -> String {
        hex::encode_upper(self.sign(msg))
    }

    /// Lower-case hex of the tag (Sesame's `Sesame-Signature: v1=`).
    pub fn sign_hex(&self, msg: &[u8]) -> String {
        hex::encode(self.sign(msg))
    }

    /// Constant-time check of a raw tag.
    pub fn verify(&self, msg: &[u8], tag: &[u8]) -> Result<(), CryptoError> {
        hmac::verify(&self.key, msg, tag).map_err(|_| CryptoError::BadSignature)
    }

    /// Constant-time check of a hex tag, either case (WeChat sends upper case,
    /// Sesame's own headers lower case).
    pub fn verify_hex(&self, msg: &[u8], tag_hex: &str) -> Result<(), CryptoError> {
        let tag = hex::decode(tag_hex).map_err(|_| CryptoError::BadSignature)?;
        self.verify(msg, &tag)
    }
}

/// SHA-256 digest.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// MD5 digest. Only for WeChat Pay v2's legacy `MD5` sign type, which the wallet
/// still defaults to; MD5 is broken for collisions and must not be used for anything
/// Sesame chooses itself.
pub fn md5(data: &[u8]) -> [u8; 16] {
    md5::Md5::digest(data).into()
}

/// Upper-case hex MD5 (the WeChat Pay v2 `sign` format).
pub fn md5_hex_upper(data: &[u8]) -> String {
    hex::encode_upper(md5(data))
}

/// An AES-256-GCM key: the WeChat Pay APIv3 key (32 ASCII bytes as set in the
/// merchant portal) that encrypts callback resources and platform certificates.
pub struct Aes256GcmKey {
    key: LessSafeKey,
}

impl fmt::Debug for Aes256GcmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Aes256GcmKey(***)")
    }
}

/// GCM authentication tag length, appended to the ciphertext on the wire.
pub const GCM_TAG_LEN: usize = 16;

impl Aes256GcmKey {
    pub fn new(key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() != 32 {
            return Err(CryptoError::Length {
                what: "AES-256 key",
                expected: 32,
                got: key.len(),
            });
        }
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| CryptoError::Operation("AES key setup"))?;
        Ok(Aes256GcmKey {
            key: LessSafeKey::new(unbound),
        })
    }

    fn nonce(nonce: &[u8]) -> Result<Nonce, CryptoError> {
        Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Length {
            what: "GCM nonce",
            expected: NONCE_LEN,
            got: nonce.len(),
        })
    }

    /// Decrypts `ciphertext || tag` (tag = last 16 bytes) with associated data
    /// `aad` (may be empty). Fails on any tampering before returning plaintext.
    pub fn decrypt(
        &self,
        nonce: &[u8],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let nonce = Self::nonce(nonce)?;
        if ciphertext_and_tag.len() < GCM_TAG_LEN {
            return Err(CryptoError::Decrypt);
        }
        let mut buffer = ciphertext_and_tag.to_vec();
        let plaintext_len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buffer)
            .map_err(|_| CryptoError::Decrypt)?
            .len();
        buffer.truncate(plaintext_len);
        Ok(buffer)
    }

    /// Encrypts to `ciphertext || tag` (what a WeChat sandbox sends). The caller
    /// must never reuse a nonce with the same key.
    pub fn encrypt(
        &self,
        nonce: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let nonce = Self::nonce(nonce)?;
        let mut buffer = Vec::with_capacity(plaintext.len() + GCM_TAG_LEN);
        buffer.extend_from_slice(plaintext);
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(aad), &mut buffer)
            .map_err(|_| CryptoError::Operation("AES-GCM encryption"))?;
        Ok(buffer)
    }
}

/// Equality whose running time does not depend on where `a` and `b` differ (it
/// does depend on their lengths, which are public for every use here).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// `n` random bytes from the operating system's CSPRNG (nonces, sandbox secrets).
pub fn random_bytes(n: usize) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; n];
    rand::fill(&mut out).map_err(|_| CryptoError::Operation("random generation"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKCS8_PEM: &str = include_str!("../testdata/rsa2048_pkcs8.pem");
    const PKCS1_PEM: &str = include_str!("../testdata/rsa2048_pkcs1.pem");
    const SPKI_PEM: &str = include_str!("../testdata/rsa2048_spki.pem");
    const PKCS1_PUBLIC_PEM: &str = include_str!("../testdata/rsa2048_pkcs1_public.pem");
    const OTHER_SPKI_PEM: &str = include_str!("../testdata/other_spki.pem");

    /// An Alipay+-shaped signing string and the signature OpenSSL 3.0 produced for it
    /// with the fixture key (`openssl dgst -sha256 -sign rsa2048_pkcs8.pem`).
    const OPENSSL_MSG: &[u8] =
        b"POST /webhooks/alipay_plus\nclient-1.2024-05-01T12:00:00+08:00.{\"paymentRequestId\":\"o_1\"}";
    const OPENSSL_SIG_B64: &str = "ZVh54k8ObfaMlhof49hEaI7A7/xudNDDX1wnzO0fFUseIQtlRhUBCjv1hXYg/D6kAOY2ZM1loVay064KhjP9FZ76kg372zVZR+UEJp2KvqTGxZRZ7kjYmplDgodnQ0CVpUTioOv6tozueBtx336bGNfAj75zhrK+O5Ne/8gn9WsCoFFQ3kgTmRJqZtxtzSLpU6KYmReSQ+5zp1MmJ0iPgZ5bhl7r3gvyCYY8/AqYK39tT4ToIZtnX/Oq/kWln1hXq/9Dgh4/POw5O78BEO+0IEgQ7DdTvhIs8LZS4THLeDtO2Afuvu3H1zOhnp2STZGDaLvSyr5ak2X6D4W8Nb7Y3Q==";

    #[test]
    fn signature_round_trips_through_the_public_key() {
        let key = RsaPrivateKey::from_pem(PKCS8_PEM).unwrap();
        let public = RsaPublicKey::from_pem(SPKI_PEM).unwrap();
        let sig = key.sign(b"out_trade_no=o_1&total_amount=8.80").unwrap();
        assert_eq!(sig.len(), 256);
        assert_eq!(key.bits(), 2048);
        public
            .verify(b"out_trade_no=o_1&total_amount=8.80", &sig)
            .unwrap();
        let b64 = key.sign_base64(b"abc").unwrap();
        public.verify_base64(b"abc", &b64).unwrap();
    }

    #[test]
    fn signatures_match_openssl_byte_for_byte() {
        let key = RsaPrivateKey::from_pem(PKCS8_PEM).unwrap();
        assert_eq!(key.sign_base64(OPENSSL_MSG).unwrap(), OPENSSL_SIG_B64);
        let public = RsaPublicKey::from_pem(SPKI_PEM).unwrap();
        public.verify_base64(OPENSSL_MSG, OPENSSL_SIG_B64).unwrap();
    }

    #[test]
    fn pkcs1_and_pkcs8_pem_load_the_same_key() {
        let pkcs8 = RsaPrivateKey::from_pem(PKCS8_PEM).unwrap();
        let pkcs1 = RsaPrivateKey::from_pem(PKCS1_PEM).unwrap();
        assert_eq!(pkcs8.sign(b"m").unwrap(), pkcs1.sign(b"m").unwrap());
        assert_eq!(
            pkcs8.public_key().unwrap().to_spki_der(),
            pkcs1.public_key().unwrap().to_spki_der()
        );
        assert_eq!(
            pkcs8.public_key().unwrap().to_spki_pem(),
            SPKI_PEM.replace("\r\n", "\n")
        );
        let pkcs1_public = RsaPublicKey::from_pem(PKCS1_PUBLIC_PEM).unwrap();
        assert_eq!(pkcs1_public.to_spki_pem(), SPKI_PEM.replace("\r\n", "\n"));
        pkcs1_public
            .verify_base64(OPENSSL_MSG, OPENSSL_SIG_B64)
            .unwrap();
    }

    #[test]
    fn base64_der_keys_load_like_alipay_plus_portal_keys() {
        let spki_b64: String = SPKI_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let public = RsaPublicKey::from_base64_der(&spki_b64).unwrap();
        public.verify_base64(OPENSSL_MSG, OPENSSL_SIG_B64).unwrap();
        assert_eq!(public.to_base64_der(), spki_b64);

        let pkcs8_b64: String = PKCS8_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .join("\n");
        let private = RsaPrivateKey::from_base64_der(&pkcs8_b64).unwrap();
        assert_eq!(private.sign_base64(OPENSSL_MSG).unwrap(), OPENSSL_SIG_B64);
    }

    #[test]
    fn generated_keys_export_and_reload() {
        let key = RsaPrivateKey::generate_2048().unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        let reloaded = RsaPrivateKey::from_pem(&pem).unwrap();
        let public = RsaPublicKey::from_pem(&key.public_key().unwrap().to_spki_pem()).unwrap();
        let sig = reloaded.sign(b"sandbox").unwrap();
        public.verify(b"sandbox", &sig).unwrap();
        assert_eq!(key.bits(), 2048);
    }

    #[test]
    fn verify_fails_on_a_flipped_bit_in_signature_or_message() {
        let key = RsaPrivateKey::from_pem(PKCS8_PEM).unwrap();
        let public = key.public_key().unwrap();
        let sig = key.sign(b"total_amount=8.80").unwrap();
        for i in [0, 100, 255] {
            let mut forged = sig.clone();
            forged[i] ^= 0x01;
            assert_eq!(
                public.verify(b"total_amount=8.80", &forged),
                Err(CryptoError::BadSignature)
            );
        }
        assert_eq!(
            public.verify(b"total_amount=9.80", &sig),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            public.verify(b"total_amount=8.80", &sig[..255]),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            public.verify_base64(b"total_amount=8.80", "WECHATPAY/SIGNTEST/abc"),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn verify_fails_with_another_wallets_key() {
        let other = RsaPublicKey::from_pem(OTHER_SPKI_PEM).unwrap();
        assert_eq!(
            other.verify_base64(OPENSSL_MSG, OPENSSL_SIG_B64),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn malformed_keys_are_errors_not_panics() {
        let cases = [
            "",
            "not a key",
            "-----BEGIN PRIVATE KEY-----\n",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
            "-----BEGIN PRIVATE KEY-----\n\n-----END PRIVATE KEY-----\n",
            "-----BEGIN PRIVATE KEY-----\nMIIBAAAA\n-----END PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "-----BEGIN-----\nAAAA\n-----END-----\n",
        ];
        for case in cases {
            assert!(RsaPrivateKey::from_pem(case).is_err(), "{case:?}");
            assert!(RsaPublicKey::from_pem(case).is_err(), "{case:?}");
        }
        let truncated = &PKCS8_PEM[..PKCS8_PEM.len() / 2];
        assert!(RsaPrivateKey::from_pem(truncated).is_err());
        assert!(matches!(
            RsaPrivateKey::from_pem(SPKI_PEM),
            Err(CryptoError::PemLabel { .. })
        ));
        assert!(matches!(
            RsaPublicKey::from_pem(PKCS8_PEM),
            Err(CryptoError::PemLabel { .. })
        ));
        assert!(RsaPublicKey::from_base64_der("bm90IGEga2V5").is_err());
        assert!(RsaPrivateKey::from_base64_der("%%%").is_err());
    }

    #[test]
    fn secrets_are_masked_in_debug_and_errors() {
        let key = RsaPrivateKey::from_pem(PKCS8_PEM).unwrap();
        assert_eq!(format!("{key:?}"), "RsaPrivateKey(***)");
        assert_eq!(
            format!("{:?}", HmacSha256Key::new(b"wechat-v2-key")),
            "HmacSha256Key(***)"
        );
        let aes = Aes256GcmKey::new(b"0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(format!("{aes:?}"), "Aes256GcmKey(***)");
        let public = key.public_key().unwrap();
        assert!(format!("{public:?}").starts_with("RsaPublicKey(sha256:"));
        let err = RsaPrivateKey::from_pem(&PKCS8_PEM.replace("MII", "@@@")).unwrap_err();
        assert!(!err.to_string().contains("MII"));
    }

    #[test]
    fn hmac_sha256_matches_rfc4231_test_case_2() {
        let key = HmacSha256Key::new(b"Jefe");
        let msg = b"what do ya want for nothing?";
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(key.sign_hex(msg), expected);
        assert_eq!(key.sign_hex_upper(msg), expected.to_uppercase());
        key.verify_hex(msg, expected).unwrap();
        key.verify_hex(msg, &expected.to_uppercase()).unwrap();
        assert_eq!(
            key.verify_hex(msg, &expected.replace('5', "6")),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(key.verify_hex(msg, "zz"), Err(CryptoError::BadSignature));
        assert_eq!(key.verify(msg, &[]), Err(CryptoError::BadSignature));
    }

    #[test]
    fn md5_and_sha256_match_known_digests() {
        assert_eq!(md5_hex_upper(b""), "D41D8CD98F00B204E9800998ECF8427E");
        assert_eq!(hex::encode(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// AES-256 GCM test case 16 of McGrew & Viega, "The Galois/Counter Mode of
    /// Operation" (the NIST submission): 12-byte IV, 20-byte AAD, 60-byte plaintext.
    #[test]
    fn aes_256_gcm_matches_the_gcm_spec_test_case_16() {
        let key = hex::decode("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
            .unwrap();
        let plaintext = hex::decode(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        )
        .unwrap();
        let aad = hex::decode("feedfacedeadbeeffeedfacedeadbeefabaddad2").unwrap();
        let nonce = hex::decode("cafebabefacedbaddecaf888").unwrap();
        let expected = hex::decode(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662\
             76fc6ece0f4e1768cddf8853bb2d551b",
        )
        .unwrap();
        let key = Aes256GcmKey::new(&key).unwrap();
        assert_eq!(key.encrypt(&nonce, &aad, &plaintext).unwrap(), expected);
        assert_eq!(key.decrypt(&nonce, &aad, &expected).unwrap(), plaintext);
    }

    #[test]
    fn aes_gcm_detects_tampering_and_wrong_inputs() {
        // WeChat v3 shape: ASCII APIv3 key, 12-character nonce, "transaction" AAD.
        let key = Aes256GcmKey::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let sealed = key
            .encrypt(
                b"fdasflkja484",
                b"transaction",
                br#"{"trade_state":"SUCCESS"}"#,
            )
            .unwrap();
        assert_eq!(
            key.decrypt(b"fdasflkja484", b"transaction", &sealed)
                .unwrap(),
            br#"{"trade_state":"SUCCESS"}"#
        );
        let mut flipped = sealed.clone();
        flipped[3] ^= 0x20;
        assert_eq!(
            key.decrypt(b"fdasflkja484", b"transaction", &flipped),
            Err(CryptoError::Decrypt)
        );
        let mut bad_tag = sealed.clone();
        let last = bad_tag.len() - 1;
        bad_tag[last] ^= 0x01;
        assert_eq!(
            key.decrypt(b"fdasflkja484", b"transaction", &bad_tag),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            key.decrypt(b"fdasflkja484", b"certificate", &sealed),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            key.decrypt(b"fdasflkja485", b"transaction", &sealed),
            Err(CryptoError::Decrypt)
        );
        let other = Aes256GcmKey::new(b"0123456789abcdef0123456789abcdeX").unwrap();
        assert_eq!(
            other.decrypt(b"fdasflkja484", b"transaction", &sealed),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            key.decrypt(b"fdasflkja484", b"", &sealed[..10]),
            Err(CryptoError::Decrypt)
        );
        assert!(matches!(
            key.decrypt(b"short", b"", &sealed),
            Err(CryptoError::Length { .. })
        ));
        assert!(matches!(
            Aes256GcmKey::new(b"too short"),
            Err(CryptoError::Length { got: 9, .. })
        ));
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"success", b"success"));
        assert!(!constant_time_eq(b"success", b"successs"));
        assert!(!constant_time_eq(b"success", b"Success"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn random_bytes_are_fresh() {
        let a = random_bytes(16).unwrap();
        let b = random_bytes(16).unwrap();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
