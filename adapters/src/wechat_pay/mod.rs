//! WeChat Pay adapter: API v3 (mainland "direct merchant" paths) for Native dynamic
//! QR, JSAPI in WeChat's browser, query, close and refunds, v3 callbacks; API v2 XML
//! micropay for customer-presented codes; and the snsapi_base OAuth step that turns
//! an in-WeChat static scan into an `openid` (wallets.md §3, §0, §6).
//!
//! Owns: request signing (`Authorization: WECHATPAY2-SHA256-RSA2048 ...` over the
//! five-line message, merchant key), verification of every 2xx answer and every
//! callback (`Wechatpay-*` headers over `timestamp\nnonce\nbody\n`, wallet key),
//! callback decryption (AES-256-GCM, APIv3 key), v2 HMAC-SHA256 signatures, and the
//! translation of WeChat's states into the neutral contract.
//! Must never: treat an unknown `trade_state` as paid, parse a callback before its
//! signature and timestamp are checked, reverse a micropay charge except when the
//! caller has given up on it (`close`, `charge_code_until_final`), or put keys,
//! secrets or request URLs carrying the app secret into errors or logs.
//!
//! # Assumptions and quirks (the one place they are written down)
//!
//! - **API flavour.** Mainland v3 paths (`/v3/pay/transactions/...`,
//!   `/v3/refund/domestic/refunds`), listed in [`wire::paths`]. A Macau acquirer
//!   normally contracts WeChat Pay Global / HK (`apihk.mch.weixin.qq.com`,
//!   `/v3/global/transactions/native`, `merchant_category_code`, institutional
//!   `sp_mchid`/`sub_mchid`, refunds at `/v3/global/refunds` — unconfirmed, wallets.md
//!   §11.8): switching is a change to `wire::paths` and the request types, not to
//!   this flow. The mainland API only settles CNY; the sandbox also accepts MOP and
//!   HKD so Macau amounts can be exercised end to end.
//! - **Amounts** are integer minor units (`amount.total`, v2 `total_fee`) with the
//!   ISO currency carried (`amount.currency`, `fee_type`); an answer without a
//!   currency is CNY (mainland default).
//! - **Keys.** Requests are signed with the merchant key (`LocalKeys.merchant` in
//!   local mode) under `merchant_serial_no` (40 hex; in local mode the first 20
//!   bytes of SHA-256 of the merchant public key, upper-case hex). Answers and
//!   callbacks are verified with the WeChat Pay public key (`LocalKeys.wallet`)
//!   whose id is `wallet_public_key_id` (`PUB_KEY_ID_...`); any other
//!   `Wechatpay-Serial` is refused (platform-certificate rotation would add keys here).
//!   The APIv3 key is `LocalKeys.secret` (32 bytes). The API v2 key and the OAuth app
//!   secret are DERIVED from it, never equal to it (the app secret travels in a query
//!   string): lower-case hex of HMAC-SHA256(secret, "sesame/wechat_pay/api-v2-key")
//!   and of HMAC-SHA256(secret, "sesame/wechat_pay/app-secret"), first 32 characters
//!   each ([`local_api_v2_key`], [`local_app_secret`]).
//! - **Answer signatures.** Every 2xx answer must be signed and within ±5 minutes of
//!   our clock (as WeChat's own SDKs check). A 4xx answer is verified when it carries
//!   a signature and accepted unsigned otherwise: it can only ever become a refusal,
//!   never a success. 5xx and 429 are retryable transport errors.
//! - **Callbacks.** Verified over the exact raw bytes first; `Wechatpay-Timestamp`
//!   must be within ±5 minutes of `received_at`; a signature starting
//!   `WECHATPAY/SIGNTEST/` (WeChat's probe, wallets.md §11.9) fails like any bad
//!   signature; missing signature headers are `BadSignature`. Then the resource is
//!   decrypted (AAD = `associated_data`, may be empty) and its `mchid` must be ours.
//!   `event_id` is the notification `id`. Ack: 204 with no body; refusal 401 and
//!   retry-later 500, both `{"code":"FAIL","message":...}`. Mainland retry schedule:
//!   15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h, then query.
//! - **Refunds.** `out_refund_no` = our refund id (idempotent, reused on retry); the
//!   request names `transaction_id` when we know it, else `out_trade_no`. Asking for
//!   more than is left is answered 400 `INVALID_REQUEST` (our reading; WeChat's
//!   `NOT_ENOUGH` means the merchant's balance is short, also a refusal).
//!   `PROCESSING` and unknown statuses are `Pending`; `ABNORMAL`/`CLOSED` are `Failed`.
//! - **Micropay (v2).** Sesame always sends `sign_type=HMAC-SHA256` and verifies the
//!   answer with it, accepting MD5 only when the answer itself says `sign_type=MD5`.
//!   An answer with `return_code=FAIL` is unsigned (e.g. `签名错误`) and becomes
//!   `Rejected{code:"FAIL"}`. An `err_code` that says our request is wrong
//!   (signature, parameters, appid/mchid, a reused `out_trade_no`:
//!   [`wire::MICROPAY_REQUEST_ERRORS`]) is `Rejected` too, never a shopper's decline
//!   (`ChargeOutcome::Failed` is kept for `NOTENOUGH`, `AUTH_CODE_INVALID` and the
//!   other payment refusals). `USERPAYING` is `Pending` (the caller polls `WalletAdapter::query`,
//!   which works for micropay orders too); `SYSTEMERROR`/`BANKERROR` and `ORDERPAID`
//!   are resolved with one v2 `orderquery`. A micropay request that may have reached
//!   WeChat (timeout, 5xx) is a NON-retryable transport error: query, don't re-charge.
//!   [`WechatPayAdapter::charge_code_until_final`] runs WeChat's POS flow (poll every
//!   `micropay_poll_interval` up to `micropay_wait`, then `reverse`). `reverse`
//!   (`/secapi/pay/reverse`) needs the merchant's client TLS certificate: every
//!   `/secapi/` call presents [`WechatPayConfig::client_identity`] (the merchant API
//!   certificate and its key). The sandbox is plain HTTP and does not model it, so
//!   mutual TLS is only exercised against WeChat's own host.
//!   Micropay has no callback: `ChargeCode::notify_url` is not sent.
//! - **Close.** v3 `close` cannot close a micropay order, so `close` queries first:
//!   paid → `Rejected{ORDERPAID}` (refund instead), already closed → Ok, micropay →
//!   `reverse`, else v3 close (204). A close of an order WeChat never saw
//!   (`ORDER_NOT_EXIST`) is Ok: nothing exists that could be paid.
//! - **JSAPI.** `PayAction::Jsapi` params are `appId`, `timeStamp` (seconds),
//!   `nonceStr`, `package` (`prepay_id=...`), `signType` (`RSA`) and `paySign`
//!   (merchant key over `appId\ntimeStamp\nnonceStr\npackage\n`). The openid comes
//!   from [`WechatPayAdapter::oauth_authorize_url`] (snsapi_base, silent) and
//!   [`WechatPayAdapter::exchange_oauth_code`] (codes are single-use, 5 minutes).
//!   The OAuth token endpoint is not signed (TLS only) and answers errors as HTTP 200
//!   `{"errcode":..,"errmsg":..}`, mapped to `Rejected{code:<errcode>}`.
//! - **Ids.** `out_trade_no` is 6–32 characters of `[0-9A-Za-z_-|*]` (the sandbox
//!   enforces it as WeChat does); `description` is cut to 127 characters, v2 `body`
//!   to 128 bytes; both are required, so a blank description is sent as
//!   `Order <order id>`.

pub mod sandbox;
pub mod wire;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::Method;
use reqwest::header::HeaderMap;

use crate::contract::{
    Ack, AckResponse, AdapterError, AdapterId, Capabilities, ChargeCode, ChargeOutcome,
    CreateOrder, OrderCreated, OrderRef, PayAction, PayMode, RawCallback, RefundOutcome,
    RefundRequest, RefundSupport, ResultDelivery, WalletAdapter, WalletEvent, WalletStatus,
};
use crate::crypto::{Aes256GcmKey, HmacSha256Key, RsaPrivateKey, RsaPublicKey, sha256};
use crate::money::{Currency, Money};
use crate::sandbox::LocalKeys;

pub use sandbox::{WechatPaySandbox, local};
use wire::{SecretText, SignType, TradeState, TradeType};

/// The appid and mchid of local mode (the examples of WeChat's own documentation).
pub const LOCAL_APPID: &str = "wxd930ea5d5a258f4f";
pub const LOCAL_MCHID: &str = "1900000109";

/// Signed timestamps (answers and callbacks) must be this close to our clock.
pub const SIGNATURE_WINDOW_SECS: i64 = 5 * 60;

/// Everything the adapter needs. `Debug` prints no secret (each key type masks itself).
#[derive(Debug)]
pub struct WechatPayConfig {
    /// API host (`https://api.mch.weixin.qq.com`), or the sandbox URL.
    pub api_base_url: String,
    /// OAuth authorize host (`https://open.weixin.qq.com`), or the sandbox URL.
    pub oauth_base_url: String,
    /// OAuth token host (`https://api.weixin.qq.com`), or the sandbox URL.
    pub sns_base_url: String,
    /// Official Account appid bound to the merchant (JSAPI, OAuth, v2).
    pub appid: String,
    pub mchid: String,
    /// Serial of the merchant API certificate, 40 hex characters.
    pub merchant_serial_no: String,
    pub merchant_key: RsaPrivateKey,
    /// `Wechatpay-Serial` of the key below (`PUB_KEY_ID_...` or a platform cert serial).
    pub wallet_public_key_id: String,
    pub wallet_public_key: RsaPublicKey,
    /// The APIv3 key: decrypts callback resources.
    pub api_v3_key: Aes256GcmKey,
    /// The API v2 key: signs micropay XML.
    pub api_v2_key: SecretText,
    /// The Official Account app secret: exchanges OAuth codes.
    pub app_secret: SecretText,
    /// `spbill_create_ip` of micropay requests (the till's IP).
    pub terminal_ip: String,
    pub connect_timeout: Duration,
    /// Whole request, answer included.
    pub request_timeout: Duration,
    /// Micropay POS flow: how often to ask while the shopper confirms...
    pub micropay_poll_interval: Duration,
    /// ...and how long before reversing.
    pub micropay_wait: Duration,
    /// The TLS client certificate of `/secapi/` calls; `None` in local mode.
    pub client_identity: Option<ClientIdentity>,
}

/// The merchant API certificate (`apiclient_cert.pem`) and its private key, presented
/// as the TLS client certificate on `/secapi/` calls. `Debug` prints nothing of it.
pub struct ClientIdentity {
    /// The private key (PKCS#8 PEM) followed by the certificate chain (PEM): the form
    /// `reqwest::Identity::from_pem` reads.
    pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity(***)")
    }
}

impl ClientIdentity {
    /// `certificate_pem`: `CERTIFICATE` blocks, the merchant's own first. Refused
    /// unless that certificate carries `key`'s public key, so a certificate and key
    /// that do not belong together fail at startup, not on the first reverse.
    pub fn new(certificate_pem: &str, key: &RsaPrivateKey) -> Result<ClientIdentity, AdapterError> {
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        let not_a_certificate =
            |why: &str| AdapterError::Malformed(format!("client certificate: {why}"));
        let body = certificate_pem
            .split_once(BEGIN)
            .and_then(|(_, rest)| rest.split_once(END))
            .map(|(body, _)| body)
            .ok_or_else(|| not_a_certificate("no -----BEGIN CERTIFICATE----- block"))?;
        let der =
            crate::crypto::decode_base64(body).map_err(|e| not_a_certificate(&e.to_string()))?;
        let spki = key.public_key().map_err(key_error)?.to_spki_der();
        // A certificate holds its SubjectPublicKeyInfo verbatim (DER).
        if spki.is_empty() || !der.windows(spki.len()).any(|w| w == spki.as_slice()) {
            return Err(not_a_certificate(
                "it does not certify the client key (the public keys differ)",
            ));
        }
        let mut pem = key.to_pkcs8_pem().map_err(key_error)?;
        pem.push_str(certificate_pem.trim());
        pem.push('\n');
        // What TLS would refuse (a block that is no X.509 certificate), refused now.
        reqwest::Identity::from_pem(pem.as_bytes())
            .and_then(|identity| reqwest::Client::builder().identity(identity).build())
            .map_err(|e| not_a_certificate(&error_chain(&e)))?;
        Ok(ClientIdentity { pem })
    }
}

impl WechatPayConfig {
    /// The configuration of local mode: ids above, keys from `keys` (see the module
    /// doc for the derivations), every base URL = `base_url` (the sandbox).
    pub fn local(base_url: &str, keys: &LocalKeys) -> Result<WechatPayConfig, AdapterError> {
        let base = base_url.trim_end_matches('/').to_owned();
        let merchant_public = keys.merchant.public_key().map_err(key_error)?;
        let wallet_public = keys.wallet.public_key().map_err(key_error)?;
        Ok(WechatPayConfig {
            api_base_url: base.clone(),
            oauth_base_url: base.clone(),
            sns_base_url: base,
            appid: LOCAL_APPID.to_owned(),
            mchid: LOCAL_MCHID.to_owned(),
            merchant_serial_no: local_merchant_serial(&merchant_public),
            merchant_key: copy_private_key(&keys.merchant)?,
            wallet_public_key_id: local_wallet_key_id(&wallet_public),
            wallet_public_key: wallet_public,
            api_v3_key: Aes256GcmKey::new(&keys.secret).map_err(key_error)?,
            api_v2_key: local_api_v2_key(&keys.secret),
            app_secret: local_app_secret(&keys.secret),
            terminal_ip: "127.0.0.1".to_owned(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            micropay_poll_interval: Duration::from_secs(5),
            micropay_wait: Duration::from_secs(30),
            client_identity: None,
        })
    }
}

fn key_error(e: crate::crypto::CryptoError) -> AdapterError {
    AdapterError::Malformed(format!("WeChat Pay key material: {e}"))
}

/// `RsaPrivateKey` is deliberately not `Clone`; local mode copies it through PKCS#8.
pub(crate) fn copy_private_key(key: &RsaPrivateKey) -> Result<RsaPrivateKey, AdapterError> {
    let pem = key.to_pkcs8_pem().map_err(key_error)?;
    RsaPrivateKey::from_pem(&pem).map_err(key_error)
}

fn derived_secret(secret: &[u8; 32], label: &str) -> SecretText {
    let mut hex = HmacSha256Key::new(secret).sign_hex(label.as_bytes());
    hex.truncate(32);
    SecretText::new(hex)
}

/// Local mode's API v2 key (32 hex characters derived from the shared secret).
pub fn local_api_v2_key(secret: &[u8; 32]) -> SecretText {
    derived_secret(secret, "sesame/wechat_pay/api-v2-key")
}

/// Local mode's Official Account app secret (32 hex characters, derived).
pub fn local_app_secret(secret: &[u8; 32]) -> SecretText {
    derived_secret(secret, "sesame/wechat_pay/app-secret")
}

/// Local mode's merchant certificate serial: 40 upper-case hex characters.
pub fn local_merchant_serial(merchant_public: &RsaPublicKey) -> String {
    hex::encode_upper(&sha256(&merchant_public.to_spki_der())[..20])
}

/// Local mode's WeChat Pay public key id: `PUB_KEY_ID_` and 28 digits.
pub fn local_wallet_key_id(wallet_public: &RsaPublicKey) -> String {
    let digits: String = sha256(&wallet_public.to_spki_der())[..14]
        .iter()
        .map(|b| format!("{:02}", b % 100))
        .collect();
    format!("PUB_KEY_ID_{digits}")
}

/// Our ids go into URL paths; WeChat allows `[0-9A-Za-z_-|*]`.
fn path_id(id: &str) -> Result<&str, AdapterError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'));
    if ok {
        Ok(id)
    } else {
        Err(AdapterError::Unsupported(
            "WeChat Pay ids must be letters, digits, _ - | * (at most 32, refunds 64)",
        ))
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// WeChat requires a description (v3 `description`, v2 `body`, shown in the
/// shopper's bill): a blank one becomes `Order <order id>`.
fn description_or_default(description: &str, order_id: &str) -> String {
    let text = description.trim();
    if text.is_empty() {
        format!("Order {order_id}")
    } else {
        text.to_owned()
    }
}

fn truncate_bytes(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn malformed(what: &str, e: impl std::fmt::Display) -> AdapterError {
    AdapterError::Malformed(format!("{what}: {e}"))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A micropay (v2) answer, translated.
enum Micropay {
    Paid(ChargeOutcome),
    UserPaying,
    /// SYSTEMERROR / BANKERROR / ORDERPAID: ask `orderquery`.
    AskAgain,
    Declined {
        code: String,
        message: String,
    },
    /// Our request is wrong ([`wire::MICROPAY_REQUEST_ERRORS`]), not the shopper's
    /// payment: `AdapterError::Rejected`, so the POS never asks for another code.
    RequestRefused {
        code: String,
        message: String,
    },
}

/// The WeChat Pay adapter.
#[derive(Debug)]
pub struct WechatPayAdapter {
    config: WechatPayConfig,
    client: reqwest::Client,
    /// `client` plus the merchant's TLS client certificate, for `/secapi/` paths.
    secapi: Option<reqwest::Client>,
}

impl WechatPayAdapter {
    pub fn new(config: WechatPayConfig) -> Result<WechatPayAdapter, AdapterError> {
        let serial_ok = config.merchant_serial_no.len() == 40
            && config
                .merchant_serial_no
                .bytes()
                .all(|b| b.is_ascii_hexdigit());
        if !serial_ok {
            return Err(AdapterError::Malformed(
                "merchant_serial_no must be 40 hex characters".into(),
            ));
        }
        if config.wallet_public_key_id.is_empty() || config.appid.is_empty() {
            return Err(AdapterError::Malformed(
                "wallet_public_key_id and appid are required".into(),
            ));
        }
        if config.mchid.is_empty() || !config.mchid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AdapterError::Malformed("mchid must be digits".into()));
        }
        for url in [
            &config.api_base_url,
            &config.oauth_base_url,
            &config.sns_base_url,
        ] {
            reqwest::Url::parse(url).map_err(|e| malformed("WeChat Pay base URL", e))?;
        }
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(config.connect_timeout)
                .timeout(config.request_timeout)
                .user_agent(concat!("sesame-wechat-pay/", env!("CARGO_PKG_VERSION")))
        };
        let client = builder().build().map_err(client_error)?;
        let secapi = match &config.client_identity {
            None => None,
            Some(identity) => {
                let identity =
                    reqwest::Identity::from_pem(identity.pem.as_bytes()).map_err(client_error)?;
                Some(builder().identity(identity).build().map_err(client_error)?)
            }
        };
        Ok(WechatPayAdapter {
            config,
            client,
            secapi,
        })
    }

    /// The client for `path`: `/secapi/` calls present the merchant certificate.
    fn client_for(&self, path: &str) -> &reqwest::Client {
        match &self.secapi {
            Some(secapi) if path.starts_with("/secapi/") => secapi,
            _ => &self.client,
        }
    }

    pub fn config(&self) -> &WechatPayConfig {
        &self.config
    }

    // -----------------------------------------------------------------------------
    // API v3 transport
    // -----------------------------------------------------------------------------

    /// Signs, sends and verifies one v3 call; returns the body of a 2xx answer.
    async fn v3(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<String>,
    ) -> Result<Vec<u8>, AdapterError> {
        let url = reqwest::Url::parse(&format!("{}{path_and_query}", self.config.api_base_url))
            .map_err(|e| malformed("WeChat Pay URL", e))?;
        // The canonical URL is exactly what goes on the wire: path and query.
        let canonical = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let body = body.unwrap_or_default();
        let timestamp = Utc::now().timestamp().to_string();
        let nonce = wire::nonce_str(32).map_err(signing_error)?;
        let message = wire::request_message(method.as_str(), &canonical, &timestamp, &nonce, &body);
        let signature = self
            .config
            .merchant_key
            .sign_base64(message.as_bytes())
            .map_err(signing_error)?;
        let authorization = wire::Authorization {
            mchid: self.config.mchid.clone(),
            nonce_str: nonce,
            signature,
            timestamp,
            serial_no: self.config.merchant_serial_no.clone(),
        };
        let mut request = self
            .client
            .request(method, url)
            .header("Authorization", authorization.to_header())
            .header("Accept", "application/json");
        if !body.is_empty() {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        // Every v3 call is idempotent by our ids, so any transport failure may be
        // repeated as is.
        let response = request.send().await.map_err(|e| transport(e, true))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| transport(e, true))?;
        if status >= 500 || status == 429 {
            return Err(AdapterError::Transport {
                retryable: true,
                message: format!("HTTP {status}{}", error_suffix(&bytes)),
            });
        }
        let signed = header(&headers, "wechatpay-signature").is_some();
        if (200..300).contains(&status) || signed {
            self.verify_answer(&headers, &bytes)?;
        }
        if (200..300).contains(&status) {
            return Ok(bytes.to_vec());
        }
        match serde_json::from_slice::<wire::ErrorBody>(&bytes) {
            Ok(error) => Err(AdapterError::Rejected {
                code: error.code,
                message: error.message,
            }),
            Err(_) => Err(AdapterError::Malformed(format!(
                "HTTP {status} without a WeChat Pay error body"
            ))),
        }
    }

    fn verify_answer(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), AdapterError> {
        let get = |name| header(headers, name).ok_or(AdapterError::BadSignature);
        self.verify_signed(
            get("wechatpay-serial")?,
            get("wechatpay-signature")?,
            get("wechatpay-timestamp")?,
            get("wechatpay-nonce")?,
            body,
            Utc::now(),
        )
    }

    /// The one check of WeChat's signature, for answers and callbacks alike.
    fn verify_signed(
        &self,
        serial: &str,
        signature: &str,
        timestamp: &str,
        nonce: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), AdapterError> {
        if serial != self.config.wallet_public_key_id {
            return Err(AdapterError::BadSignature);
        }
        if signature.starts_with(wire::SIGNATURE_PROBE_PREFIX) {
            return Err(AdapterError::BadSignature);
        }
        let signed_at: i64 = timestamp.parse().map_err(|_| AdapterError::BadSignature)?;
        if (now.timestamp() - signed_at).abs() > SIGNATURE_WINDOW_SECS {
            return Err(AdapterError::BadSignature);
        }
        self.config
            .wallet_public_key
            .verify_base64(&wire::wechatpay_message(timestamp, nonce, body), signature)
            .map_err(|_| AdapterError::BadSignature)
    }

    async fn fetch_transaction(
        &self,
        order_id: &str,
    ) -> Result<(wire::Transaction, Vec<u8>), AdapterError> {
        let path = wire::paths::query_by_out_trade_no(path_id(order_id)?, &self.config.mchid);
        let body = self.v3(Method::GET, &path, None).await?;
        let tx: wire::Transaction =
            serde_json::from_slice(&body).map_err(|e| malformed("transaction", e))?;
        if tx.out_trade_no != order_id || tx.mchid != self.config.mchid {
            return Err(AdapterError::Malformed(
                "transaction answer is for another order or merchant".into(),
            ));
        }
        Ok((tx, body))
    }

    // -----------------------------------------------------------------------------
    // API v2 (micropay) transport
    // -----------------------------------------------------------------------------

    /// Signs (HMAC-SHA256), sends and verifies one v2 call. `may_apply`: a request
    /// that may have reached WeChat (timeout, 5xx) is not safely repeatable.
    async fn v2(
        &self,
        path: &str,
        mut params: BTreeMap<String, String>,
        may_apply: bool,
    ) -> Result<BTreeMap<String, String>, AdapterError> {
        params.insert("appid".into(), self.config.appid.clone());
        params.insert("mch_id".into(), self.config.mchid.clone());
        params.insert(
            "nonce_str".into(),
            wire::nonce_str(32).map_err(signing_error)?,
        );
        params.insert("sign_type".into(), SignType::HmacSha256.as_str().into());
        let sign = wire::v2_sign(&params, &self.config.api_v2_key, SignType::HmacSha256);
        params.insert("sign".into(), sign);
        let xml = wire::xml::write(&params).map_err(|e| malformed("micropay request", e))?;
        let response = self
            .client_for(path)
            .post(format!("{}{path}", self.config.api_base_url))
            .header("Content-Type", "text/xml; charset=utf-8")
            .body(xml)
            .send()
            .await
            .map_err(|e| {
                let reached = !e.is_connect();
                transport(e, !(may_apply && reached))
            })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport(e, !may_apply))?;
        if status >= 500 || status == 429 {
            return Err(AdapterError::Transport {
                retryable: !may_apply,
                message: format!("HTTP {status} from WeChat Pay v2"),
            });
        }
        let text = std::str::from_utf8(&bytes).map_err(|e| malformed("v2 answer", e))?;
        let answer = wire::xml::parse(text).map_err(|e| malformed("v2 answer", e))?;
        if answer.get("return_code").map(String::as_str) != Some(wire::V2_SUCCESS) {
            return Err(AdapterError::Rejected {
                code: answer
                    .get("return_code")
                    .cloned()
                    .unwrap_or_else(|| "FAIL".into()),
                message: answer.get("return_msg").cloned().unwrap_or_default(),
            });
        }
        let sign_type = match answer.get("sign_type") {
            None => SignType::HmacSha256,
            Some(named) => SignType::parse(Some(named)).ok_or(AdapterError::BadSignature)?,
        };
        wire::v2_verify(&answer, &self.config.api_v2_key, sign_type)
            .map_err(|_| AdapterError::BadSignature)?;
        if answer.get("appid") != Some(&self.config.appid)
            || answer.get("mch_id") != Some(&self.config.mchid)
        {
            return Err(AdapterError::Malformed(
                "v2 answer is for another appid or merchant".into(),
            ));
        }
        Ok(answer)
    }

    fn micropay_result(&self, answer: &BTreeMap<String, String>) -> Result<Micropay, AdapterError> {
        if answer.get("result_code").map(String::as_str) == Some(wire::V2_SUCCESS) {
            return Ok(Micropay::Paid(ChargeOutcome::Succeeded {
                wallet_ref: required(answer, "transaction_id")?.to_owned(),
                amount: v2_money(answer)?,
                paid_at: answer.get("time_end").and_then(|t| wire::parse_v2_time(t)),
                brand: None,
            }));
        }
        let code = answer.get("err_code").cloned().unwrap_or_default();
        Ok(match code.as_str() {
            "USERPAYING" => Micropay::UserPaying,
            "SYSTEMERROR" | "BANKERROR" | "ORDERPAID" => Micropay::AskAgain,
            _ if wire::MICROPAY_REQUEST_ERRORS.contains(&code.as_str()) => {
                Micropay::RequestRefused {
                    message: answer.get("err_code_des").cloned().unwrap_or_default(),
                    code,
                }
            }
            _ => Micropay::Declined {
                message: answer.get("err_code_des").cloned().unwrap_or_default(),
                code: if code.is_empty() { "FAIL".into() } else { code },
            },
        })
    }

    /// v2 `orderquery`: the micropay view of an order (same states as v3).
    pub async fn micropay_query(&self, order_id: &str) -> Result<WalletStatus, AdapterError> {
        let mut params = BTreeMap::new();
        params.insert("out_trade_no".to_owned(), order_id.to_owned());
        let answer = self.v2(wire::paths::ORDER_QUERY, params, false).await?;
        if answer.get("result_code").map(String::as_str) != Some(wire::V2_SUCCESS) {
            return Err(AdapterError::Rejected {
                code: answer.get("err_code").cloned().unwrap_or_default(),
                message: answer.get("err_code_des").cloned().unwrap_or_default(),
            });
        }
        if answer.get("out_trade_no").map(String::as_str) != Some(order_id) {
            return Err(AdapterError::Malformed(
                "orderquery answer is for another order".into(),
            ));
        }
        let raw_state = required(&answer, "trade_state")?;
        let paid = || -> Result<(String, Money), AdapterError> {
            Ok((
                required(&answer, "transaction_id")?.to_owned(),
                v2_money(&answer)?,
            ))
        };
        Ok(match TradeState::parse(raw_state) {
            TradeState::Success => {
                let (wallet_ref, amount) = paid()?;
                WalletStatus::Succeeded {
                    wallet_ref,
                    amount,
                    paid_at: answer.get("time_end").and_then(|t| wire::parse_v2_time(t)),
                    brand: None,
                }
            }
            TradeState::Refund => {
                let (wallet_ref, amount) = paid()?;
                WalletStatus::Refunded {
                    wallet_ref,
                    amount,
                    refunded: None,
                }
            }
            TradeState::Notpay | TradeState::Userpaying => WalletStatus::Pending,
            TradeState::Closed | TradeState::Revoked => WalletStatus::Closed,
            TradeState::Payerror => WalletStatus::Failed {
                code: "PAYERROR".into(),
            },
            TradeState::Unknown => WalletStatus::Unknown(truncate_chars(raw_state, 64)),
        })
    }

    /// v2 `reverse`: cancels a micropay charge, refunding it if it was paid. Repeats
    /// while WeChat answers `recall=Y` (at most three times).
    pub async fn reverse(&self, order_id: &str) -> Result<(), AdapterError> {
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(self.config.micropay_poll_interval).await;
            }
            let mut params = BTreeMap::new();
            params.insert("out_trade_no".to_owned(), order_id.to_owned());
            let answer = self.v2(wire::paths::REVERSE, params, false).await?;
            if answer.get("result_code").map(String::as_str) == Some(wire::V2_SUCCESS) {
                return Ok(());
            }
            let error = AdapterError::Rejected {
                code: answer.get("err_code").cloned().unwrap_or_default(),
                message: answer.get("err_code_des").cloned().unwrap_or_default(),
            };
            if answer.get("recall").map(String::as_str) != Some("Y") {
                return Err(error);
            }
            last = Some(error);
        }
        Err(last.unwrap_or(AdapterError::Rejected {
            code: "REVERSE_FAILED".into(),
            message: "reverse did not complete".into(),
        }))
    }

    /// WeChat's POS flow for a customer code: charge; while the shopper confirms,
    /// ask `orderquery` every `micropay_poll_interval`; after `micropay_wait`
    /// without a final answer, `reverse` and report `Failed{code:"REVERSED"}`.
    pub async fn charge_code_until_final(
        &self,
        req: &ChargeCode,
    ) -> Result<ChargeOutcome, AdapterError> {
        let first = self.charge_code(req).await;
        match first {
            Ok(ChargeOutcome::Pending) => {}
            // The request may have reached WeChat: find out below instead of guessing.
            Err(AdapterError::Transport {
                retryable: false, ..
            }) => {}
            other => return other,
        }
        let deadline = Instant::now() + self.config.micropay_wait;
        while Instant::now() < deadline {
            tokio::time::sleep(self.config.micropay_poll_interval).await;
            match self.micropay_query(&req.order_id).await {
                Ok(WalletStatus::Succeeded {
                    wallet_ref,
                    amount,
                    paid_at,
                    brand,
                }) => {
                    return Ok(ChargeOutcome::Succeeded {
                        wallet_ref,
                        amount,
                        paid_at,
                        brand,
                    });
                }
                Ok(WalletStatus::Failed { code }) => {
                    return Ok(ChargeOutcome::Failed {
                        message: "payment failed while the shopper was confirming".into(),
                        code,
                    });
                }
                Ok(WalletStatus::Closed) => {
                    return Ok(ChargeOutcome::Failed {
                        code: "CLOSED".into(),
                        message: "the charge was closed or reversed".into(),
                    });
                }
                // Pending, unknown, refunded (cannot happen before success) or a
                // failed query: keep asking until the deadline, then reverse.
                _ => {}
            }
        }
        self.reverse(&req.order_id).await?;
        Ok(ChargeOutcome::Failed {
            code: "REVERSED".into(),
            message: "the shopper did not confirm in time; the charge was reversed".into(),
        })
    }

    // -----------------------------------------------------------------------------
    // JSAPI and OAuth
    // -----------------------------------------------------------------------------

    /// The signed parameters of `WeixinJSBridge.invoke('getBrandWCPayRequest', ...)`
    /// for a prepay id (valid two hours; re-sign freely, e.g. on a page reload).
    pub fn jsapi_params(&self, prepay_id: &str) -> Result<BTreeMap<String, String>, AdapterError> {
        let time_stamp = Utc::now().timestamp().to_string();
        let nonce = wire::nonce_str(32).map_err(signing_error)?;
        let package = format!("prepay_id={prepay_id}");
        let message = wire::jsapi_message(&self.config.appid, &time_stamp, &nonce, &package);
        let pay_sign = self
            .config
            .merchant_key
            .sign_base64(message.as_bytes())
            .map_err(signing_error)?;
        Ok(BTreeMap::from([
            ("appId".to_owned(), self.config.appid.clone()),
            ("timeStamp".to_owned(), time_stamp),
            ("nonceStr".to_owned(), nonce),
            ("package".to_owned(), package),
            ("signType".to_owned(), wire::JSAPI_SIGN_TYPE.to_owned()),
            ("paySign".to_owned(), pay_sign),
        ]))
    }

    /// Where to send the shopper's WeChat browser to learn their openid silently
    /// (snsapi_base). WeChat redirects to `redirect_uri?code=...&state=...`.
    pub fn oauth_authorize_url(&self, redirect_uri: &str, state: &str) -> String {
        format!(
            "{}{}?appid={}&redirect_uri={}&response_type=code&scope=snsapi_base&state={}#wechat_redirect",
            self.config.oauth_base_url,
            wire::paths::OAUTH_AUTHORIZE,
            wire::percent_encode(&self.config.appid),
            wire::percent_encode(redirect_uri),
            wire::percent_encode(state),
        )
    }

    /// Exchanges an OAuth `code` (single use) for the shopper's `openid`.
    pub async fn exchange_oauth_code(&self, code: &str) -> Result<String, AdapterError> {
        let response = self
            .client
            .get(format!(
                "{}{}",
                self.config.sns_base_url,
                wire::paths::OAUTH_ACCESS_TOKEN
            ))
            .query(&[
                ("appid", self.config.appid.as_str()),
                ("secret", self.config.app_secret.expose()),
                ("code", code),
                ("grant_type", "authorization_code"),
            ])
            .send()
            .await
            // A code is single-use: only a request that never left is repeatable.
            .map_err(|e| {
                let retryable = e.is_connect();
                transport(e, retryable)
            })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| transport(e, false))?;
        if status >= 500 {
            return Err(AdapterError::Transport {
                retryable: false,
                message: format!("HTTP {status} from the WeChat OAuth token endpoint"),
            });
        }
        let token: wire::OauthToken =
            serde_json::from_slice(&bytes).map_err(|e| malformed("OAuth token answer", e))?;
        if let Some(code) = token.errcode.filter(|c| *c != 0) {
            return Err(AdapterError::Rejected {
                code: code.to_string(),
                message: token.errmsg.unwrap_or_default(),
            });
        }
        token
            .openid
            .filter(|o| !o.is_empty())
            .ok_or_else(|| AdapterError::Malformed("OAuth token answer without openid".into()))
    }

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
    pub async fn query_refund(&self, refund_id: &str) -> Result<RefundOutcome, AdapterError> {
        let body = self
            .v3(
                Method::GET,
                &wire::paths::refund_query(path_id(refund_id)?),
                None,
            )
            .await?;
        let refund: wire::Refund =
            serde_json::from_slice(&body).map_err(|e| malformed("refund", e))?;
        if refund.out_refund_no != refund_id {
            return Err(AdapterError::Malformed(
                "refund answer is for another refund".into(),
            ));
        }
        Ok(refund_outcome(&refund))
    }

    fn check_currency(&self, money: &Money) -> Result<(), AdapterError> {
        if self.capabilities().supports_currency(money.currency()) {
            Ok(())
        } else {
            Err(AdapterError::Unsupported(
                "WeChat Pay takes CNY, MOP and HKD only",
            ))
        }
    }

    fn event_from_callback(&self, cb: &RawCallback) -> Result<WalletEvent, AdapterError> {
        let notification: wire::Notification =
            serde_json::from_slice(cb.body()).map_err(|e| malformed("notification", e))?;
        let plaintext = wire::decrypt_resource(&self.config.api_v3_key, &notification.resource)
            .map_err(|_| {
                AdapterError::Malformed(
                    "notification resource does not decrypt with the APIv3 key".into(),
                )
            })?;
        let event_id = notification.id.clone();
        match notification.event_type {
            wire::EventType::TransactionSuccess => {
                let tx: wire::Transaction = serde_json::from_slice(&plaintext)
                    .map_err(|e| malformed("transaction resource", e))?;
                self.check_mchid(&tx.mchid)?;
                if tx.trade_state != TradeState::Success {
                    return Ok(WalletEvent::Informational {
                        order_id: Some(tx.out_trade_no),
                        event_id,
                        summary: truncate_chars(&notification.summary, 200),
                    });
                }
                let amount = tx
                    .amount
                    .as_ref()
                    .ok_or_else(|| AdapterError::Malformed("transaction without amount".into()))?;
                Ok(WalletEvent::PaymentSucceeded {
                    wallet_ref: tx.transaction_id.clone().ok_or_else(|| {
                        AdapterError::Malformed("transaction without transaction_id".into())
                    })?,
                    amount: wire::money_from_wire(amount.total, amount.currency.as_deref())
                        .map_err(|e| malformed("transaction amount", e))?,
                    paid_at: tx.success_time.as_deref().and_then(wire::parse_rfc3339),
                    order_id: tx.out_trade_no,
                    event_id,
                    brand: None,
                })
            }
            event @ (wire::EventType::RefundSuccess
            | wire::EventType::RefundAbnormal
            | wire::EventType::RefundClosed) => {
                let notice: wire::RefundNotice = serde_json::from_slice(&plaintext)
                    .map_err(|e| malformed("refund resource", e))?;
                self.check_mchid(&notice.mchid)?;
                let expected = match event {
                    wire::EventType::RefundSuccess => wire::RefundStatus::Success,
                    wire::EventType::RefundAbnormal => wire::RefundStatus::Abnormal,
                    _ => wire::RefundStatus::Closed,
                };
                if notice.refund_status != expected {
                    return Err(AdapterError::Malformed(
                        "event_type and refund_status disagree".into(),
                    ));
                }
                if event == wire::EventType::RefundSuccess {
                    Ok(WalletEvent::RefundSucceeded {
                        amount: wire::money_from_wire(
                            notice.amount.refund,
                            notice.amount.currency.as_deref(),
                        )
                        .map_err(|e| malformed("refund amount", e))?,
                        // The notice carries this refund (`amount.refund`) and the
                        // order total, never the cumulative refunded amount.
                        refunded_total: None,
                        order_id: notice.out_trade_no,
                        refund_id: notice.out_refund_no,
                        wallet_refund_ref: Some(notice.refund_id),
                        event_id,
                    })
                } else {
                    let code = if event == wire::EventType::RefundAbnormal {
                        "REFUND.ABNORMAL"
                    } else {
                        "REFUND.CLOSED"
                    };
                    Ok(WalletEvent::RefundFailed {
                        order_id: notice.out_trade_no,
                        refund_id: notice.out_refund_no,
                        event_id,
                        code: code.into(),
                        message: truncate_chars(&notification.summary, 200),
                    })
                }
            }
            wire::EventType::Unknown => Ok(WalletEvent::Informational {
                order_id: None,
                event_id,
                summary: truncate_chars(&notification.summary, 200),
            }),
        }
    }

    fn check_mchid(&self, mchid: &str) -> Result<(), AdapterError> {
        if mchid == self.config.mchid {
            Ok(())
        } else {
            Err(AdapterError::Malformed(
                "notification is for another merchant".into(),
            ))
        }
    }
}

fn signing_error(e: crate::crypto::CryptoError) -> AdapterError {
    AdapterError::Transport {
        retryable: false,
        message: format!("local signing failed: {e}"),
    }
}

/// A client that cannot be built (bad TLS identity), with every cause: reqwest's own
/// message is only "builder error".
fn client_error(e: reqwest::Error) -> AdapterError {
    AdapterError::Transport {
        retryable: false,
        message: format!("HTTP client: {}", error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(inner) = cause {
        message.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    message
}

/// Maps a reqwest failure; the URL is stripped (the OAuth call carries the secret).
fn transport(e: reqwest::Error, retryable: bool) -> AdapterError {
    let timeout = e.is_timeout();
    let e = e.without_url();
    AdapterError::Transport {
        retryable,
        message: if timeout {
            format!("timed out: {e}")
        } else {
            e.to_string()
        },
    }
}

/// ` CODE: message` of a WeChat error body, when there is one.
fn error_suffix(body: &[u8]) -> String {
    serde_json::from_slice::<wire::ErrorBody>(body)
        .map(|e| format!(" {}: {}", e.code, truncate_chars(&e.message, 200)))
        .unwrap_or_default()
}

fn required<'a>(answer: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, AdapterError> {
    answer
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AdapterError::Malformed(format!("v2 answer without {name}")))
}

fn v2_money(answer: &BTreeMap<String, String>) -> Result<Money, AdapterError> {
    let total: i64 = required(answer, "total_fee")?
        .parse()
        .map_err(|e| malformed("total_fee", e))?;
    wire::money_from_wire(total, answer.get("fee_type").map(String::as_str))
        .map_err(|e| malformed("total_fee", e))
}

/// A v3 transaction as the neutral status. `raw` is the answer, for the verbatim
/// state of `Unknown`.
fn transaction_status(tx: &wire::Transaction, raw: &[u8]) -> Result<WalletStatus, AdapterError> {
    let paid = || -> Result<(String, Money), AdapterError> {
        let wallet_ref = tx
            .transaction_id
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AdapterError::Malformed("paid transaction without id".into()))?;
        let amount = tx
            .amount
            .as_ref()
            .ok_or_else(|| AdapterError::Malformed("paid transaction without amount".into()))?;
        let money = wire::money_from_wire(amount.total, amount.currency.as_deref())
            .map_err(|e| malformed("transaction amount", e))?;
        Ok((wallet_ref, money))
    };
    Ok(match tx.trade_state {
        TradeState::Success => {
            let (wallet_ref, amount) = paid()?;
            WalletStatus::Succeeded {
                wallet_ref,
                amount,
                paid_at: tx.success_time.as_deref().and_then(wire::parse_rfc3339),
                brand: None,
            }
        }
        TradeState::Refund => {
            let (wallet_ref, amount) = paid()?;
            WalletStatus::Refunded {
                wallet_ref,
                amount,
                refunded: None,
            }
        }
        TradeState::Notpay | TradeState::Userpaying => WalletStatus::Pending,
        TradeState::Closed | TradeState::Revoked => WalletStatus::Closed,
        TradeState::Payerror => WalletStatus::Failed {
            code: "PAYERROR".into(),
        },
        TradeState::Unknown => {
            let verbatim = serde_json::from_slice::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| v.get("trade_state")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            WalletStatus::Unknown(truncate_chars(&verbatim, 64))
        }
    })
}

fn refund_outcome(refund: &wire::Refund) -> RefundOutcome {
    match refund.status {
        wire::RefundStatus::Success => RefundOutcome::Succeeded {
            wallet_refund_ref: Some(refund.refund_id.clone()),
        },
        // Unknown is never a success nor a failure: the callback or a query settles it.
        wire::RefundStatus::Processing | wire::RefundStatus::Unknown => RefundOutcome::Pending,
        wire::RefundStatus::Abnormal => RefundOutcome::Failed {
            code: "ABNORMAL".into(),
            message: "refund abnormal: the shopper's account cannot receive it".into(),
        },
        wire::RefundStatus::Closed => RefundOutcome::Failed {
            code: "CLOSED".into(),
            message: "refund closed".into(),
        },
    }
}

#[async_trait::async_trait]
impl WalletAdapter for WechatPayAdapter {
    fn id(&self) -> AdapterId {
        AdapterId::WechatPay
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            modes: vec![PayMode::DynamicQr, PayMode::Jsapi, PayMode::CustomerCode],
            currencies: vec![Currency::Cny, Currency::Mop, Currency::Hkd],
            refunds: RefundSupport::Partial,
            results: ResultDelivery::Webhook,
        }
    }

    async fn create_order(&self, req: &CreateOrder) -> Result<OrderCreated, AdapterError> {
        self.check_currency(&req.amount)?;
        let mut prepay = wire::Prepay {
            appid: self.config.appid.clone(),
            mchid: self.config.mchid.clone(),
            description: truncate_chars(
                &description_or_default(&req.description, &req.order_id),
                127,
            ),
            out_trade_no: path_id(&req.order_id)?.to_owned(),
            time_expire: Some(wire::rfc3339(req.expires_at)),
            attach: None,
            notify_url: req.notify_url.clone(),
            amount: wire::Amount::from_money(&req.amount),
            payer: None,
        };
        match req.mode {
            PayMode::DynamicQr => {
                let body = serde_json::to_string(&prepay).map_err(|e| malformed("native", e))?;
                let answer = self
                    .v3(Method::POST, wire::paths::NATIVE, Some(body))
                    .await?;
                let native: wire::NativeAnswer =
                    serde_json::from_slice(&answer).map_err(|e| malformed("native answer", e))?;
                if native.code_url.is_empty() {
                    return Err(AdapterError::Malformed("empty code_url".into()));
                }
                Ok(OrderCreated {
                    wallet_ref: None,
                    action: PayAction::QrString {
                        data: native.code_url,
                    },
                })
            }
            PayMode::Jsapi => {
                let openid = req.payer_id.clone().filter(|p| !p.is_empty()).ok_or(
                    AdapterError::Unsupported(
                        "JSAPI needs the shopper's openid (run the OAuth step first)",
                    ),
                )?;
                prepay.payer = Some(wire::Payer { openid });
                let body = serde_json::to_string(&prepay).map_err(|e| malformed("jsapi", e))?;
                let answer = self
                    .v3(Method::POST, wire::paths::JSAPI, Some(body))
                    .await?;
                let jsapi: wire::JsapiAnswer =
                    serde_json::from_slice(&answer).map_err(|e| malformed("jsapi answer", e))?;
                if jsapi.prepay_id.is_empty() {
                    return Err(AdapterError::Malformed("empty prepay_id".into()));
                }
                Ok(OrderCreated {
                    wallet_ref: None,
                    action: PayAction::Jsapi {
                        params: self.jsapi_params(&jsapi.prepay_id)?,
                    },
                })
            }
            PayMode::StaticEntry => Err(AdapterError::Unsupported(
                "WeChat has no redirect cashier: use Jsapi after OAuth",
            )),
            PayMode::CustomerCode => Err(AdapterError::Unsupported(
                "customer codes go through charge_code",
            )),
        }
    }

    async fn charge_code(&self, req: &ChargeCode) -> Result<ChargeOutcome, AdapterError> {
        self.check_currency(&req.amount)?;
        let params = BTreeMap::from([
            (
                "body".to_owned(),
                truncate_bytes(
                    &description_or_default(&req.description, &req.order_id),
                    128,
                ),
            ),
            (
                "out_trade_no".to_owned(),
                path_id(&req.order_id)?.to_owned(),
            ),
            ("total_fee".to_owned(), req.amount.minor().to_string()),
            (
                "fee_type".to_owned(),
                req.amount.currency().code().to_owned(),
            ),
            (
                "spbill_create_ip".to_owned(),
                self.config.terminal_ip.clone(),
            ),
            ("auth_code".to_owned(), req.auth_code.clone()),
        ]);
        let answer = self.v2(wire::paths::MICROPAY, params, true).await?;
        if answer.get("result_code").map(String::as_str) == Some(wire::V2_SUCCESS)
            && answer.get("out_trade_no").map(String::as_str) != Some(req.order_id.as_str())
        {
            return Err(AdapterError::Malformed(
                "micropay answer is for another order".into(),
            ));
        }
        match self.micropay_result(&answer)? {
            Micropay::Paid(outcome) => Ok(outcome),
            Micropay::UserPaying => Ok(ChargeOutcome::Pending),
            Micropay::Declined { code, message } => Ok(ChargeOutcome::Failed { code, message }),
            Micropay::RequestRefused { code, message } => {
                Err(AdapterError::Rejected { code, message })
            }
            Micropay::AskAgain => match self.micropay_query(&req.order_id).await {
                Ok(WalletStatus::Succeeded {
                    wallet_ref,
                    amount,
                    paid_at,
                    brand,
                }) => Ok(ChargeOutcome::Succeeded {
                    wallet_ref,
                    amount,
                    paid_at,
                    brand,
                }),
                Ok(WalletStatus::Failed { code }) => Ok(ChargeOutcome::Failed {
                    message: "payment failed".into(),
                    code,
                }),
                Ok(WalletStatus::Closed) => Ok(ChargeOutcome::Failed {
                    code: "CLOSED".into(),
                    message: "the order is closed or reversed".into(),
                }),
                // Still open or unclear: the caller keeps asking `query`.
                _ => Ok(ChargeOutcome::Pending),
            },
        }
    }

    async fn query(&self, order: &OrderRef) -> Result<WalletStatus, AdapterError> {
        let (tx, raw) = self.fetch_transaction(&order.order_id).await?;
        transaction_status(&tx, &raw)
    }

    async fn close(&self, order: &OrderRef) -> Result<(), AdapterError> {
        let tx = match self.fetch_transaction(&order.order_id).await {
            Ok((tx, _)) => Some(tx),
            Err(AdapterError::Rejected { code, .. }) if code == "ORDER_NOT_EXIST" => None,
            Err(e) => return Err(e),
        };
        if let Some(tx) = tx {
            match tx.trade_state {
                TradeState::Success | TradeState::Refund => {
                    return Err(AdapterError::Rejected {
                        code: "ORDERPAID".into(),
                        message: "the order is paid; refund it instead of closing".into(),
                    });
                }
                TradeState::Closed | TradeState::Revoked => return Ok(()),
                _ => {}
            }
            if tx.trade_type == Some(TradeType::Micropay) {
                return self.reverse(&order.order_id).await;
            }
        }
        let body = serde_json::to_string(&wire::CloseOrder {
            mchid: self.config.mchid.clone(),
        })
        .map_err(|e| malformed("close", e))?;
        match self
            .v3(
                Method::POST,
                &wire::paths::close(path_id(&order.order_id)?),
                Some(body),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(AdapterError::Rejected { code, .. }) if code == "ORDER_NOT_EXIST" => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn refund(&self, req: &RefundRequest) -> Result<RefundOutcome, AdapterError> {
        if req.amount.currency() != req.total.currency() {
            return Err(AdapterError::Unsupported(
                "refund and captured amounts must share a currency",
            ));
        }
        self.check_currency(&req.amount)?;
        let (transaction_id, out_trade_no) = match &req.wallet_ref {
            Some(id) if !id.is_empty() => (Some(id.clone()), None),
            _ => (None, Some(path_id(&req.order_id)?.to_owned())),
        };
        let body = serde_json::to_string(&wire::CreateRefund {
            transaction_id,
            out_trade_no,
            out_refund_no: path_id(&req.refund_id)?.to_owned(),
            reason: req.reason.as_ref().map(|r| truncate_chars(r, 80)),
            notify_url: req.notify_url.clone(),
            amount: wire::RefundAmountRequest {
                refund: req.amount.minor(),
                total: req.total.minor(),
                currency: req.amount.currency().code().to_owned(),
            },
        })
        .map_err(|e| malformed("refund", e))?;
        let answer = self
            .v3(Method::POST, wire::paths::REFUNDS, Some(body))
            .await?;
        let refund: wire::Refund =
            serde_json::from_slice(&answer).map_err(|e| malformed("refund answer", e))?;
        if refund.out_refund_no != req.refund_id {
            return Err(AdapterError::Malformed(
                "refund answer is for another refund".into(),
            ));
        }
        Ok(refund_outcome(&refund))
    }

    fn verify_callback(&self, cb: &RawCallback) -> Result<WalletEvent, AdapterError> {
        let signed = |name: &str| match cb.required_header(name) {
            Ok(value) => Ok(value),
            Err(AdapterError::Malformed(m)) if m.starts_with("missing") => {
                Err(AdapterError::BadSignature)
            }
            Err(e) => Err(e),
        };
        self.verify_signed(
            signed("wechatpay-serial")?,
            signed("wechatpay-signature")?,
            signed("wechatpay-timestamp")?,
            signed("wechatpay-nonce")?,
            cb.body(),
            cb.received_at(),
        )?;
        self.event_from_callback(cb)
    }

    fn ack(&self, ack: Ack) -> AckResponse {
        match ack {
            Ack::Processed => AckResponse::empty(204),
            Ack::RetryLater => AckResponse::json(
                500,
                &serde_json::json!({"code": "FAIL", "message": "temporarily unable to process, send again"}),
            ),
            Ack::Rejected => AckResponse::json(
                401,
                &serde_json::json!({"code": "FAIL", "message": "signature verification failed or notification unreadable"}),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter() -> (WechatPayAdapter, LocalKeys) {
        let keys = LocalKeys::generate().unwrap();
        let adapter = WechatPayAdapter::new(
            WechatPayConfig::local("http://127.0.0.1:9/sandbox/wechat_pay", &keys).unwrap(),
        )
        .unwrap();
        (adapter, keys)
    }

    #[test]
    fn oauth_url_is_silent_snsapi_base_with_encoded_redirect() {
        let (adapter, _) = adapter();
        let url = adapter.oauth_authorize_url("https://gw.example.mo/q/abc?x=1&y=2", "st_1");
        assert_eq!(
            url,
            "http://127.0.0.1:9/sandbox/wechat_pay/connect/oauth2/authorize?appid=wxd930ea5d5a258f4f\
&redirect_uri=https%3A%2F%2Fgw.example.mo%2Fq%2Fabc%3Fx%3D1%26y%3D2&response_type=code\
&scope=snsapi_base&state=st_1#wechat_redirect"
        );
    }

    #[test]
    fn ack_answers_are_wechats_exact_shapes() {
        let (adapter, _) = adapter();
        let ok = adapter.ack(Ack::Processed);
        assert_eq!(
            (ok.status, ok.body.is_empty(), ok.content_type),
            (204, true, None)
        );
        for ack in [Ack::RetryLater, Ack::Rejected] {
            let fail = adapter.ack(ack);
            assert!(fail.status >= 400);
            let body: serde_json::Value = serde_json::from_slice(&fail.body).unwrap();
            assert_eq!(body["code"], "FAIL");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        assert_eq!(adapter.ack(Ack::Rejected).status, 401);
        assert_eq!(adapter.ack(Ack::RetryLater).status, 500);
    }

    #[test]
    fn a_client_identity_needs_a_certificate_of_its_own_key() {
        let keys = LocalKeys::generate().unwrap();
        let error = |pem: &str| {
            ClientIdentity::new(pem, &keys.merchant)
                .unwrap_err()
                .to_string()
        };
        assert!(error("").contains("no -----BEGIN CERTIFICATE----- block"));
        assert!(
            error(&keys.merchant.to_pkcs8_pem().unwrap()).contains("CERTIFICATE"),
            "a key is not a certificate"
        );
        // A block that does not hold the key's SubjectPublicKeyInfo, e.g. the other
        // key's, is refused.
        let other = keys.wallet.public_key().unwrap().to_spki_pem();
        let wrong = other.replace("PUBLIC KEY", "CERTIFICATE");
        assert!(error(&wrong).contains("does not certify the client key"));
        // The key's own SubjectPublicKeyInfo passes that check but is no X.509
        // certificate: TLS would refuse it, so it is refused here.
        let own = keys.merchant.public_key().unwrap().to_spki_pem();
        assert!(error(&own.replace("PUBLIC KEY", "CERTIFICATE")).starts_with("malformed"));
    }

    #[test]
    fn config_debug_masks_every_secret() {
        let keys = LocalKeys::generate().unwrap();
        let config = WechatPayConfig::local("http://127.0.0.1:9", &keys).unwrap();
        let v2 = config.api_v2_key.expose().to_owned();
        let app = config.app_secret.expose().to_owned();
        let printed = format!("{config:?}");
        assert!(!printed.contains(&v2) && !printed.contains(&app));
        assert!(!printed.contains(&hex::encode(keys.secret)));
        assert!(printed.contains("RsaPrivateKey(***)") && printed.contains("Aes256GcmKey(***)"));
    }

    #[test]
    fn local_secrets_are_derived_distinct_and_stable() {
        let secret = [7u8; 32];
        let v2 = local_api_v2_key(&secret);
        let app = local_app_secret(&secret);
        assert_eq!(v2.expose().len(), 32);
        assert_eq!(app.expose().len(), 32);
        assert_ne!(v2, app);
        assert_ne!(v2.expose(), &hex::encode(secret)[..32]);
        assert_eq!(v2, local_api_v2_key(&secret));
        assert_ne!(v2, local_api_v2_key(&[8u8; 32]));
    }

    #[test]
    fn local_serials_have_wechats_shapes() {
        let (adapter, _) = adapter();
        let serial = &adapter.config().merchant_serial_no;
        assert_eq!(serial.len(), 40);
        assert!(
            serial
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
        );
        let id = &adapter.config().wallet_public_key_id;
        assert!(id.starts_with("PUB_KEY_ID_") && id.len() == 39);
    }

    #[test]
    fn unknown_trade_state_is_reported_verbatim_and_never_paid() {
        let raw = br#"{"appid":"wx","mchid":"1","out_trade_no":"o_123456","trade_state":"HALF_PAID","transaction_id":"42","amount":{"total":1,"currency":"MOP"}}"#;
        let tx: wire::Transaction = serde_json::from_slice(raw).unwrap();
        let status = transaction_status(&tx, raw).unwrap();
        assert_eq!(status, WalletStatus::Unknown("HALF_PAID".into()));
        assert!(!status.is_paid());
    }

    #[test]
    fn trade_states_map_to_neutral_statuses() {
        let parse = |state: &str| {
            let raw = format!(
                r#"{{"appid":"wx","mchid":"1","out_trade_no":"o_123456","trade_state":"{state}","transaction_id":"4200","success_time":"2024-05-01T12:00:00+08:00","amount":{{"total":880,"currency":"MOP"}}}}"#
            );
            let tx: wire::Transaction = serde_json::from_str(&raw).unwrap();
            transaction_status(&tx, raw.as_bytes()).unwrap()
        };
        let paid = Money::from_minor(880, Currency::Mop).unwrap();
        assert_eq!(
            parse("SUCCESS"),
            WalletStatus::Succeeded {
                wallet_ref: "4200".into(),
                amount: paid,
                paid_at: DateTime::from_timestamp(1_714_536_000, 0),
                brand: None
            }
        );
        assert_eq!(
            parse("REFUND"),
            WalletStatus::Refunded {
                wallet_ref: "4200".into(),
                amount: paid,
                refunded: None
            }
        );
        assert_eq!(parse("NOTPAY"), WalletStatus::Pending);
        assert_eq!(parse("USERPAYING"), WalletStatus::Pending);
        assert_eq!(parse("CLOSED"), WalletStatus::Closed);
        assert_eq!(parse("REVOKED"), WalletStatus::Closed);
        assert_eq!(
            parse("PAYERROR"),
            WalletStatus::Failed {
                code: "PAYERROR".into()
            }
        );
    }

    #[test]
    fn refund_statuses_map_to_outcomes_and_unknown_is_pending() {
        let refund = |status: &str| -> wire::Refund {
            serde_json::from_str(&format!(
                r#"{{"refund_id":"503","out_refund_no":"r_1","transaction_id":"42","out_trade_no":"o_1","create_time":"2024-05-01T12:00:00+08:00","status":"{status}","amount":{{"total":100,"refund":10}}}}"#
            ))
            .unwrap()
        };
        assert_eq!(
            refund_outcome(&refund("SUCCESS")),
            RefundOutcome::Succeeded {
                wallet_refund_ref: Some("503".into())
            }
        );
        assert_eq!(
            refund_outcome(&refund("PROCESSING")),
            RefundOutcome::Pending
        );
        assert_eq!(refund_outcome(&refund("WHATEVER")), RefundOutcome::Pending);
        assert!(matches!(
            refund_outcome(&refund("ABNORMAL")),
            RefundOutcome::Failed { .. }
        ));
        assert!(matches!(
            refund_outcome(&refund("CLOSED")),
            RefundOutcome::Failed { .. }
        ));
    }

    #[test]
    fn ids_unsafe_for_a_url_path_are_refused() {
        assert!(path_id("o_20240501_0001").is_ok());
        assert!(path_id("a-b|c*d").is_ok());
        for bad in ["", "a/b", "a?b", "a b", "a%2F", "é"] {
            assert!(path_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(truncate_bytes("咖啡咖啡", 7), "咖啡");
        assert_eq!(wire::percent_encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
