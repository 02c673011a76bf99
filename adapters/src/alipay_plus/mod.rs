//! Alipay+ ACQP adapter: the rail for MPay, AlipayHK, Kakao Pay and every other
//! Alipay+ Mobile Payment Provider (MPP), for in-store Entry Code (static plate),
//! Order Code (dynamic QR) and user-presented payment codes.
//!
//! Owns: calling `pay`, `inquiryPayment`, `cancelPayment` and `refund` of the
//! Alipay+ ACQP API v1 (`/aps/api/v1/payments/*`, wallets.md §2) with RSA256
//! signatures, verifying every response signature, verifying `notifyPayment`
//! callbacks and answering them. Wire types live in [`wire`], the wallet's server
//! side for tests and local mode in [`sandbox`].
//! Must never: treat anything but `resultStatus` S as success, act on a response or
//! callback whose signature was not checked over the exact raw bytes, log keys or
//! signatures, or send an empty string for an optional field.
//!
//! # Protocol reading, and every assumption in one place
//!
//! - API: Alipay+ ACQP API v1, JSON POST, every scalar a string, optional fields
//!   omitted. Amounts are minor units (`{"currency":"MOP","value":"2550"}`; KRW and
//!   JPY whole units).
//! - Signature (§2.2): `Signature: algorithm=RSA256,keyVersion=<n>,signature=<url-
//!   encoded base64>` over `POST <path>\n<Client-Id>.<Request-Time>.<body>`, where
//!   `<path>` is the path (and query) of the URL actually requested, so a base URL
//!   with a path prefix (the sandbox under `/sandbox/alipay_plus`) is signed with it.
//!   `Request-Time` is ISO 8601 with offset. Responses are verified over
//!   `POST <same path>\n<Client-Id>.<Response-Time>.<raw body>` and must echo our
//!   `Client-Id`; an unsigned 2xx is refused. 5xx and 429 answers are not verified
//!   (they come from front doors, not the wallet) and are retryable transport errors.
//!   Any other non-2xx without a `Signature` is `Transport { retryable: false }`,
//!   not `Rejected`: Alipay+ answers its own refusals in a signed `result`, so an
//!   unsigned 4xx comes from something in front of it (proxy, firewall, wrong URL
//!   or path); it proves nothing about the payment, must never fail an order or a
//!   refund, and repeating the same request to the same URL would meet the same
//!   answer — it needs a person (configuration), and `inquiryPayment` says what
//!   happened.
//! - Result model (§2.6): `result.resultStatus` S success, F final failure, U unknown.
//!   F codes about our request itself (signature, key, parameters, idempotency
//!   conflict — [`wire::codes::REQUEST_ERRORS`]) are `AdapterError::Rejected`;
//!   other F codes on a customer-code charge are a declined payment
//!   (`ChargeOutcome::Failed`). U on a charge is `Pending` (the gateway inquires);
//!   U on create/cancel is a retryable transport error; U on refund is
//!   `RefundOutcome::Pending`.
//! - Retries: every call is idempotent by our ids (`paymentRequestId` = order id,
//!   `refundRequestId` = refund id; the same id with the same key fields returns the
//!   same payment or refund, different fields give `REPEAT_REQ_INCONSISTENT`), so a
//!   timeout even after the request was sent is reported as retryable.
//! - `pay` for Entry Code (`PayMode::StaticEntry`) sends `order.env.userAgent` (the
//!   shopper's in-app browser UA verbatim, required: refused locally without it) and
//!   `paymentRedirectUrl` (required as well); the answer is U `PAYMENT_IN_PROCESS`
//!   with `paymentUrl` → `PayAction::Redirect`.
//! - ASSUMPTION (open question §11.6): the Order Code QR is read from
//!   `orderCodeForm.codeDetails[]`, the entry with `displayType` `TEXT` (else the
//!   first non-empty `codeValue`) → `PayAction::QrString`.
//! - ASSUMPTION (not in wallets.md, which names `walletBrandName` only as the §2.7
//!   enum): when the brand registry gives a `psp` parameter (`MPAY`, `ALIPAY_HK`,
//!   `KAKAOPAY`) for an Entry or Order Code payment, it is sent as the optional
//!   hint `paymentMethod.paymentMethodMetaData.walletBrandName`. Nothing depends on
//!   it: Alipay+ identifies the wallet from the User-Agent (Entry Code) or the
//!   scanning app (Order Code), the paying wallet comes back as `pspId`, and the
//!   sandbox prefers the User-Agent and ignores an unknown hint. Confirm with
//!   Alipay+ that the field is accepted (or drop the `psp` parameter) before
//!   production. For customer codes the wallet is the code's issuer (CII prefix).
//! - Optional fields are omitted, never `""` (§2.1): an empty merchant id, store id,
//!   name or description is left out (the sandbox refuses any `""`).
//! - `merchant.store` is required for Entry Code and UPM: when the merchant has no
//!   store, the merchant itself is sent as its single store (`referenceStoreId` =
//!   merchant id); with neither id there is no store (the wallet refuses it).
//! - `inquiryPayment`: `result` says whether the inquiry worked (F → `Rejected`, e.g.
//!   `ORDER_NOT_EXIST`; U → retryable); `paymentResult` is the payment: S →
//!   `Succeeded` with `pspId` as `brand`, U → `Pending`, F `ORDER_IS_CLOSED` →
//!   `Closed`, other F → `Failed`. Alipay+ inquiry does not report refunds, so a
//!   refunded payment still reads `Succeeded` (the gateway holds the refund records).
//! - `close` is for unpaid payments only (the contract), but `cancelPayment` closes an
//!   unpaid payment and REVERSES a paid one (the shopper gets the money back). So
//!   `close` runs `inquiryPayment` first: paid (S) → `Rejected { ORDER_IS_PAID }`
//!   (refund instead; nothing is sent); already closed or failed → `Ok`; pending
//!   (U) or never seen (`ORDER_NOT_EXIST`) → `cancelPayment`. The reversal itself is
//!   [`AlipayPlusAdapter::reverse`], for POS flows whose charge stayed unknown.
//!   Left open: a shopper paying between the inquiry and the cancel is reversed.
//!   After a cancel, inquiry reads F `ORDER_IS_CLOSED` → `Closed`. Cancelling an id
//!   Alipay+ has never seen is accepted and blocks a late `pay` with that id (sandbox
//!   behaviour, the reason cancel exists for timeouts).
//! - `refund` needs Alipay+'s `paymentId`: when the gateway does not have it, the
//!   adapter inquires by `paymentRequestId` first. Over-refund is F
//!   `REFUND_AMOUNT_EXCEED` → `Rejected`.
//! - `notifyPayment` (§2.5): verified over `POST <path the receiver saw>\n<Client-Id>.
//!   <Request-Time>.<raw body>` with the wallet key, `Client-Id` must be ours, and
//!   (our choice, a replay window: Alipay+ defines none, §2.5/§11.5) `Request-Time`
//!   must be within [`AlipayPlusConfig::notify_window`] (default 36 h, covering the
//!   whole retry schedule even if retries resend the first attempt's headers) of
//!   the receipt time. Missing or
//!   repeated auth headers are `BadSignature`. S → `PaymentSucceeded` (amount =
//!   `paymentAmount`, brand = raw `pspId`, mapped by the gateway with
//!   `BrandRegistry::brand_for_psp_id`), F → `PaymentFailed`; any other status is
//!   `Informational` (acknowledged, changes nothing; the reconciler inquires). The
//!   event id is `<paymentId or paymentRequestId>:<S|F>`, identical across retries.
//!   An unreadable `paymentTime` is reported as no time rather than losing the event.
//! - Ack: `Processed` → HTTP 200 `{"result":{"resultCode":"SUCCESS","resultStatus":
//!   "S","resultMessage":"success"}}` (unsigned); `RetryLater` → HTTP 500 with U
//!   `UNKNOWN_EXCEPTION`; `Rejected` → HTTP 401 with F `INVALID_SIGNATURE`. Alipay+
//!   retries anything but result S.
//! - ASSUMPTION (open question §11.5): Alipay+ publishes no retry schedule for
//!   `notifyPayment`, nor whether a retry is re-signed; the sandbox retries
//!   immediately, then after 2 min, 10 min, 10 min, 1 h, 2 h, 6 h and 15 h (8
//!   attempts over about 34 hours), resending the first attempt's headers.

pub mod sandbox;
pub mod wire;

use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::contract::{
    Ack, AckResponse, AdapterError, AdapterId, Capabilities, ChargeCode, ChargeOutcome,
    CreateOrder, MerchantInfo, OrderCreated, OrderRef, PayAction, PayMode, RawCallback,
    RefundOutcome, RefundRequest, RefundSupport, ResultDelivery, WalletAdapter, WalletEvent,
    WalletStatus,
};
use crate::crypto::{RsaPrivateKey, RsaPublicKey};
use crate::money::{Currency, Money};
use wire::{ApiResult, ResultStatus, codes, non_empty, truncate};

/// The code of the refusal when asked to close a payment that succeeded (Alipay
/// answers `ACQ.TRADE_HAS_SUCCESS`, WeChat `ORDERPAID`, Kakao `ALREADY_APPROVED`).
pub const ORDER_IS_PAID: &str = "ORDER_IS_PAID";

/// Production host (accelerated global endpoint, §2.1).
pub const PRODUCTION_BASE_URL: &str = "https://open-sea-global.alipayplus.com";

/// How to reach Alipay+ and prove who we are.
pub struct AlipayPlusConfig {
    /// Scheme, host and optional path prefix, e.g. [`PRODUCTION_BASE_URL`] or
    /// `http://127.0.0.1:8080/sandbox/alipay_plus`.
    pub base_url: String,
    /// Our `Client-Id` at Alipay+.
    pub client_id: String,
    /// `keyVersion` of the `Signature` header.
    pub key_version: u32,
    /// Our private key: signs every request.
    pub merchant_key: RsaPrivateKey,
    /// Alipay+'s public key: verifies every response and notification.
    pub wallet_public_key: RsaPublicKey,
    pub connect_timeout: Duration,
    /// Whole-request timeout (connect, send, wait, read).
    pub timeout: Duration,
    /// Replay window for `notifyPayment`'s `Request-Time`, either side of receipt.
    /// Alipay+ defines none (wallets.md §2.5, §11.5), nor whether a retry is
    /// re-signed; the default [`DEFAULT_NOTIFY_WINDOW`] therefore spans a full day
    /// and a half of retries, and replays inside it are harmless because the gateway
    /// deduplicates by event id. Narrow it only once Alipay+ confirms re-signing.
    pub notify_window: Duration,
}

/// The default `notifyPayment` replay window: 36 hours.
pub const DEFAULT_NOTIFY_WINDOW: Duration = Duration::from_secs(36 * 60 * 60);

impl AlipayPlusConfig {
    /// A configuration with the default timeouts (5 s connect, 15 s overall), key
    /// version 1 and the [`DEFAULT_NOTIFY_WINDOW`].
    pub fn new(
        base_url: &str,
        client_id: &str,
        merchant_key: RsaPrivateKey,
        wallet_public_key: RsaPublicKey,
    ) -> AlipayPlusConfig {
        AlipayPlusConfig {
            base_url: base_url.to_owned(),
            client_id: client_id.to_owned(),
            key_version: 1,
            merchant_key,
            wallet_public_key,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            notify_window: DEFAULT_NOTIFY_WINDOW,
        }
    }
}

impl std::fmt::Debug for AlipayPlusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipayPlusConfig")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("key_version", &self.key_version)
            .field("merchant_key", &"***")
            .field("wallet_public_key", &self.wallet_public_key)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("notify_window", &self.notify_window)
            .finish()
    }
}

/// The Alipay+ ACQP adapter. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct AlipayPlusAdapter {
    config: AlipayPlusConfig,
    http: reqwest::Client,
    /// `base_url` without a trailing slash; endpoint paths are appended.
    base: String,
    /// The path part of `base_url` (empty for a bare host), prefixed to every
    /// signed path.
    base_path: String,
}

impl AlipayPlusAdapter {
    pub fn new(config: AlipayPlusConfig) -> Result<Self, AdapterError> {
        let base = config.base_url.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base)
            .map_err(|e| AdapterError::Malformed(format!("Alipay+ base URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
            return Err(AdapterError::Malformed(
                "Alipay+ base URL must be http(s) without a query".into(),
            ));
        }
        if config.client_id.trim().is_empty() {
            return Err(AdapterError::Malformed("Alipay+ client id is empty".into()));
        }
        let base_path = url.path().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(concat!("sesame/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AdapterError::Transport {
                retryable: false,
                message: format!("HTTP client: {e}"),
            })?;
        Ok(AlipayPlusAdapter {
            config,
            http,
            base,
            base_path,
        })
    }

    pub fn config(&self) -> &AlipayPlusConfig {
        &self.config
    }

    /// One signed call: sign, send, check the HTTP status, verify the response
    /// signature over the raw bytes, then parse.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        endpoint: &str,
        request: &Req,
    ) -> Result<Resp, AdapterError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| AdapterError::Malformed(format!("request encoding: {e}")))?;
        let path = format!("{}{endpoint}", self.base_path);
        let time = wire::format_time(&Utc::now());
        let signature = wire::sign(
            &self.config.merchant_key,
            self.config.key_version,
            &path,
            &self.config.client_id,
            &time,
            &body,
        )?;
        let transport = |e: reqwest::Error| AdapterError::Transport {
            // Every Alipay+ call is idempotent by our ids: repeating is safe.
            retryable: true,
            message: format!("{endpoint}: {}", describe(&e)),
        };
        let response = self
            .http
            .post(format!("{}{endpoint}", self.base))
            .header(wire::HEADER_CLIENT_ID, &self.config.client_id)
            .header(wire::HEADER_REQUEST_TIME, &time)
            .header(wire::HEADER_SIGNATURE, signature)
            .header("Content-Type", "application/json; charset=UTF-8")
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (client_id, response_time, signature) = (
            header(wire::HEADER_CLIENT_ID),
            header(wire::HEADER_RESPONSE_TIME),
            header(wire::HEADER_SIGNATURE),
        );
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(AdapterError::Transport {
                retryable: true,
                message: format!("{endpoint}: HTTP {}", status.as_u16()),
            });
        }
        if !status.is_success() && signature.is_none() {
            return Err(AdapterError::Transport {
                retryable: false,
                message: format!(
                    "{endpoint}: HTTP {} without a wallet answer",
                    status.as_u16()
                ),
            });
        }
        let (Some(client_id), Some(response_time), Some(signature)) =
            (client_id, response_time, signature)
        else {
            return Err(AdapterError::BadSignature);
        };
        if client_id != self.config.client_id {
            return Err(AdapterError::BadSignature);
        }
        wire::verify(
            &self.config.wallet_public_key,
            &signature,
            &path,
            &client_id,
            &response_time,
            &bytes,
        )?;
        serde_json::from_slice(&bytes)
            .map_err(|e| AdapterError::Malformed(format!("{endpoint} response: {e}")))
    }

    fn pay_request(
        &self,
        order_id: &str,
        amount: &Money,
        description: &str,
        merchant: &MerchantInfo,
        scenario: wire::Scenario,
    ) -> wire::PayRequest {
        let wire_amount = wire::Amount::from_money(amount);
        wire::PayRequest {
            product_code: wire::IN_STORE_PAYMENT.to_owned(),
            payment_request_id: order_id.to_owned(),
            order: wire::Order {
                reference_order_id: order_id.to_owned(),
                order_description: non_empty(description).map(|d| truncate(&d, 256)),
                order_amount: wire_amount.clone(),
                merchant: merchant_of(merchant),
                env: None,
            },
            payment_amount: wire_amount,
            payment_method: wire::PaymentMethod {
                payment_method_type: wire::CONNECT_WALLET.to_owned(),
                payment_method_id: None,
                payment_method_meta_data: None,
            },
            payment_factor: wire::PaymentFactor {
                in_store_payment_scenario: scenario,
            },
            payment_notify_url: None,
            payment_redirect_url: None,
            payment_expiry_time: None,
            settlement_strategy: Some(wire::SettlementStrategy {
                settlement_currency: amount.currency().code().to_owned(),
            }),
        }
    }

    async fn inquiry(&self, order: &OrderRef) -> Result<wire::InquiryResponse, AdapterError> {
        self.call(
            wire::INQUIRY_PATH,
            &wire::InquiryRequest {
                payment_request_id: non_empty(&order.order_id),
                payment_id: order.wallet_ref.as_deref().and_then(non_empty),
            },
        )
        .await
    }

    /// `cancelPayment` (§2.4): closes an unpaid payment and REVERSES a paid one —
    /// the shopper gets all the money back. For a customer-code charge whose outcome
    /// stayed unknown at the POS, and for [`WalletAdapter::close`] once it has seen
    /// the payment unpaid. Never call it to "close" a payment that may be paid.
    pub async fn reverse(&self, order: &OrderRef) -> Result<(), AdapterError> {
        let response: wire::CancelResponse = self
            .call(
                wire::CANCEL_PATH,
                &wire::CancelRequest {
                    payment_request_id: non_empty(&order.order_id),
                    payment_id: order.wallet_ref.as_deref().and_then(non_empty),
                },
            )
            .await?;
        match response.result.result_status {
            ResultStatus::S => Ok(()),
            ResultStatus::F => Err(response.result.rejected()),
            ResultStatus::U => Err(unknown_result(wire::CANCEL_PATH, &response.result)),
            ResultStatus::Unknown => Err(AdapterError::Malformed(format!(
                "cancelPayment: result status not S/F/U (resultCode {})",
                truncate(&response.result.result_code, 64)
            ))),
        }
    }

    /// Alipay+'s `paymentId` of an order, by inquiry (refunds need it).
    async fn payment_id_of(&self, order_id: &str) -> Result<String, AdapterError> {
        let order = OrderRef {
            order_id: order_id.to_owned(),
            wallet_ref: None,
        };
        let response = self.inquiry(&order).await?;
        match response.result.result_status {
            ResultStatus::S => response
                .payment_id
                .as_deref()
                .and_then(non_empty)
                .ok_or_else(|| AdapterError::Rejected {
                    code: codes::ORDER_STATUS_INVALID.to_owned(),
                    message: "Alipay+ reports no paymentId for this order".to_owned(),
                }),
            ResultStatus::F => Err(response.result.rejected()),
            ResultStatus::U | ResultStatus::Unknown => {
                Err(unknown_result(wire::INQUIRY_PATH, &response.result))
            }
        }
    }
}

fn merchant_of(merchant: &MerchantInfo) -> wire::Merchant {
    let address = wire::Address {
        region: non_empty(&merchant.country),
        city: non_empty(&merchant.city),
    };
    let merchant_id = non_empty(&merchant.merchant_id);
    let store_id = merchant
        .store_id
        .as_deref()
        .and_then(non_empty)
        .or_else(|| merchant_id.clone());
    let store_name = merchant
        .store_name
        .as_deref()
        .and_then(non_empty)
        .or_else(|| non_empty(&merchant.name));
    wire::Merchant {
        reference_merchant_id: merchant_id,
        merchant_name: non_empty(&merchant.name),
        merchant_mcc: non_empty(&merchant.mcc),
        merchant_address: (address.region.is_some() || address.city.is_some()).then_some(address),
        store: store_id.map(|reference_store_id| wire::Store {
            reference_store_id,
            store_name,
            store_mcc: non_empty(&merchant.mcc),
        }),
    }
}

/// A U (or unreadable) `result`: the outcome is unknown, repeating is safe.
fn unknown_result(endpoint: &str, result: &ApiResult) -> AdapterError {
    AdapterError::Transport {
        retryable: true,
        message: format!(
            "{endpoint}: result unknown ({})",
            truncate(&result.result_code, 64)
        ),
    }
}

fn describe(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "response body unreadable"
    } else {
        "request failed"
    }
}

/// Serialised from the struct (not a `serde_json::Value`) so the keys keep
/// Alipay+'s documented order: `resultCode`, `resultStatus`, `resultMessage`.
fn notify_ack(status: u16, result: ApiResult) -> AckResponse {
    AckResponse {
        status,
        content_type: Some("application/json"),
        body: serde_json::to_vec(&wire::NotifyAck { result }).unwrap_or_default(),
    }
}

#[async_trait::async_trait]
impl WalletAdapter for AlipayPlusAdapter {
    fn id(&self) -> AdapterId {
        AdapterId::AlipayPlus
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            modes: vec![
                PayMode::StaticEntry,
                PayMode::DynamicQr,
                PayMode::CustomerCode,
            ],
            currencies: vec![
                Currency::Mop,
                Currency::Hkd,
                Currency::Cny,
                Currency::Usd,
                Currency::Krw,
                Currency::Sgd,
                Currency::Thb,
                Currency::Jpy,
                Currency::Eur,
            ],
            refunds: RefundSupport::Partial,
            results: ResultDelivery::Webhook,
        }
    }

    async fn create_order(&self, req: &CreateOrder) -> Result<OrderCreated, AdapterError> {
        let scenario = match req.mode {
            PayMode::StaticEntry => wire::Scenario::EntryCode,
            PayMode::DynamicQr => wire::Scenario::OrderCode,
            PayMode::Jsapi => return Err(AdapterError::Unsupported("JSAPI payments on Alipay+")),
            PayMode::CustomerCode => {
                return Err(AdapterError::Unsupported(
                    "customer codes go through charge_code",
                ));
            }
        };
        let mut pay = self.pay_request(
            &req.order_id,
            &req.amount,
            &req.description,
            &req.merchant,
            scenario,
        );
        if scenario == wire::Scenario::EntryCode {
            // Verbatim (not trimmed): Alipay+ identifies the wallet from it.
            let user_agent = req
                .user_agent
                .clone()
                .filter(|ua| !ua.trim().is_empty())
                .ok_or(AdapterError::Unsupported(
                    "Alipay+ Entry Code without the shopper's User-Agent",
                ))?;
            let redirect =
                req.return_url
                    .as_deref()
                    .and_then(non_empty)
                    .ok_or(AdapterError::Unsupported(
                        "Alipay+ Entry Code without a return URL",
                    ))?;
            pay.order.env = Some(wire::Env {
                user_agent: Some(user_agent),
                ..wire::Env::default()
            });
            pay.payment_redirect_url = Some(redirect);
        } else if let Some(url) = req.return_url.as_deref().and_then(non_empty) {
            pay.payment_redirect_url = Some(url);
        }
        pay.payment_notify_url = non_empty(&req.notify_url);
        pay.payment_expiry_time = Some(wire::format_time(&req.expires_at));
        if let Some(psp) = req.brand_params.get("psp").and_then(|p| non_empty(p)) {
            pay.payment_method.payment_method_meta_data = Some(wire::PaymentMethodMetaData {
                wallet_brand_name: Some(psp),
            });
        }
        let response: wire::PayResponse = self.call(wire::PAY_PATH, &pay).await?;
        let action = match scenario {
            wire::Scenario::EntryCode => response
                .payment_url
                .as_deref()
                .and_then(non_empty)
                .map(|url| PayAction::Redirect { url }),
            _ => response
                .order_code_form
                .as_ref()
                .and_then(wire::OrderCodeForm::qr_value)
                .map(|data| PayAction::QrString {
                    data: data.to_owned(),
                }),
        };
        match (response.result.result_status, action) {
            (ResultStatus::S | ResultStatus::U, Some(action)) => Ok(OrderCreated {
                wallet_ref: response.payment_id.as_deref().and_then(non_empty),
                action,
            }),
            // Paid already (a repeated create after the shopper paid): nothing to show.
            (ResultStatus::S, None) => Ok(OrderCreated {
                wallet_ref: response.payment_id.as_deref().and_then(non_empty),
                action: PayAction::None,
            }),
            (ResultStatus::U, None) => Err(unknown_result(wire::PAY_PATH, &response.result)),
            (ResultStatus::F, _) => Err(response.result.rejected()),
            (ResultStatus::Unknown, _) => Err(AdapterError::Malformed(format!(
                "pay: result status not S/F/U (resultCode {})",
                truncate(&response.result.result_code, 64)
            ))),
        }
    }

    async fn charge_code(&self, req: &ChargeCode) -> Result<ChargeOutcome, AdapterError> {
        let code = req.auth_code.trim();
        if code.is_empty() {
            return Err(AdapterError::Unsupported("an empty payment code"));
        }
        let mut pay = self.pay_request(
            &req.order_id,
            &req.amount,
            &req.description,
            &req.merchant,
            wire::Scenario::PaymentCode,
        );
        pay.payment_method.payment_method_id = Some(code.to_owned());
        pay.order.env = Some(wire::Env {
            user_agent: None,
            store_terminal_id: req.merchant.terminal_id.as_deref().and_then(non_empty),
            store_terminal_request_time: Some(wire::format_time(&Utc::now())),
        });
        pay.payment_notify_url = req.notify_url.as_deref().and_then(non_empty);
        let response: wire::PayResponse = self.call(wire::PAY_PATH, &pay).await?;
        let result = &response.result;
        match result.result_status {
            ResultStatus::S => Ok(ChargeOutcome::Succeeded {
                wallet_ref: response
                    .payment_id
                    .as_deref()
                    .and_then(non_empty)
                    .ok_or_else(|| AdapterError::Malformed("pay: paymentId missing".into()))?,
                amount: response
                    .payment_amount
                    .as_ref()
                    .ok_or_else(|| AdapterError::Malformed("pay: paymentAmount missing".into()))?
                    .to_money()?,
                paid_at: response
                    .payment_time
                    .as_deref()
                    .and_then(wire::parse_time_utc),
                brand: response.psp_id.clone(),
            }),
            ResultStatus::F if codes::is_request_error(&result.result_code) => {
                Err(result.rejected())
            }
            ResultStatus::F => Ok(ChargeOutcome::Failed {
                code: truncate(&result.result_code, 64),
                message: truncate(result.message(), 256),
            }),
            // U (PAYMENT_IN_PROCESS: the shopper confirms, or unknown) and anything
            // unreadable: inquire, never assume.
            ResultStatus::U | ResultStatus::Unknown => Ok(ChargeOutcome::Pending),
        }
    }

    async fn query(&self, order: &OrderRef) -> Result<WalletStatus, AdapterError> {
        let response = self.inquiry(order).await?;
        match response.result.result_status {
            ResultStatus::S => response.wallet_status(),
            ResultStatus::F => Err(response.result.rejected()),
            ResultStatus::U => Err(unknown_result(wire::INQUIRY_PATH, &response.result)),
            ResultStatus::Unknown => Ok(WalletStatus::Unknown(format!(
                "inquiry result status not S/F/U (resultCode {})",
                truncate(&response.result.result_code, 64)
            ))),
        }
    }

    async fn close(&self, order: &OrderRef) -> Result<(), AdapterError> {
        // cancelPayment would REVERSE a paid payment (§2.4); close is for unpaid
        // payments only, so the payment is looked at first.
        let inquiry = self.inquiry(order).await?;
        match inquiry.result.result_status {
            ResultStatus::S => match inquiry.wallet_status()? {
                WalletStatus::Pending => {}
                WalletStatus::Succeeded { .. } | WalletStatus::Refunded { .. } => {
                    return Err(AdapterError::Rejected {
                        code: ORDER_IS_PAID.to_owned(),
                        message: "the payment succeeded: refund it instead of closing".to_owned(),
                    });
                }
                // Already unpayable: closing again is a no-op.
                WalletStatus::Closed | WalletStatus::Failed { .. } => return Ok(()),
                WalletStatus::Unknown(status) => {
                    return Err(AdapterError::Malformed(format!(
                        "inquiryPayment status not understood ({status}); not closing"
                    )));
                }
            },
            // Never seen: cancelling records the id closed, so a late pay cannot land.
            ResultStatus::F if inquiry.result.result_code == codes::ORDER_NOT_EXIST => {}
            ResultStatus::F => return Err(inquiry.result.rejected()),
            ResultStatus::U => return Err(unknown_result(wire::INQUIRY_PATH, &inquiry.result)),
            ResultStatus::Unknown => {
                return Err(AdapterError::Malformed(format!(
                    "inquiryPayment: result status not S/F/U (resultCode {})",
                    truncate(&inquiry.result.result_code, 64)
                )));
            }
        }
        self.reverse(order).await
    }

    async fn refund(&self, req: &RefundRequest) -> Result<RefundOutcome, AdapterError> {
        let payment_id = match req.wallet_ref.as_deref().and_then(non_empty) {
            Some(id) => id,
            None => self.payment_id_of(&req.order_id).await?,
        };
        let response: wire::RefundResponse = self
            .call(
                wire::REFUND_PATH,
                &wire::RefundRequest {
                    refund_request_id: req.refund_id.clone(),
                    payment_id,
                    refund_amount: wire::Amount::from_money(&req.amount),
                    refund_reason: req
                        .reason
                        .as_deref()
                        .and_then(non_empty)
                        .map(|r| truncate(&r, 256)),
                    refund_notify_url: req.notify_url.as_deref().and_then(non_empty),
                },
            )
            .await?;
        match response.result.result_status {
            ResultStatus::S => Ok(RefundOutcome::Succeeded {
                wallet_refund_ref: response.refund_id.as_deref().and_then(non_empty),
            }),
            ResultStatus::F => Err(response.result.rejected()),
            ResultStatus::U | ResultStatus::Unknown => Ok(RefundOutcome::Pending),
        }
    }

    fn verify_callback(&self, cb: &RawCallback) -> Result<WalletEvent, AdapterError> {
        if cb.method() != "POST" {
            return Err(AdapterError::BadSignature);
        }
        // A callback without its authentication headers is not authentic, whatever
        // else is wrong with it.
        let auth = |name| {
            cb.required_header(name)
                .map_err(|_| AdapterError::BadSignature)
        };
        let client_id = auth(wire::HEADER_CLIENT_ID)?;
        let request_time = auth(wire::HEADER_REQUEST_TIME)?;
        let signature = auth(wire::HEADER_SIGNATURE)?;
        if client_id != self.config.client_id {
            return Err(AdapterError::BadSignature);
        }
        wire::verify(
            &self.config.wallet_public_key,
            signature,
            cb.path(),
            client_id,
            request_time,
            cb.body(),
        )?;
        // Signed, so the time is the wallet's; it must still be fresh (replay window).
        let sent_at = wire::parse_time_utc(request_time).ok_or(AdapterError::BadSignature)?;
        let skew = (cb.received_at() - sent_at).abs();
        let window =
            chrono::Duration::from_std(self.config.notify_window).unwrap_or(chrono::Duration::MAX);
        if skew > window {
            return Err(AdapterError::BadSignature);
        }
        let notify: wire::Notify = serde_json::from_slice(cb.body())
            .map_err(|e| AdapterError::Malformed(format!("notifyPayment: {e}")))?;
        let order_id = non_empty(&notify.payment_request_id)
            .ok_or_else(|| AdapterError::Malformed("notifyPayment: paymentRequestId".into()))?;
        let payment_id = notify.payment_id.as_deref().and_then(non_empty);
        let result = &notify.payment_result;
        let event_id = |status: &str| {
            format!(
                "{}:{status}",
                payment_id.clone().unwrap_or_else(|| order_id.clone())
            )
        };
        match result.result_status {
            ResultStatus::S => Ok(WalletEvent::PaymentSucceeded {
                wallet_ref: payment_id.clone().ok_or_else(|| {
                    AdapterError::Malformed("notifyPayment: paymentId missing on success".into())
                })?,
                amount: notify.payment_amount.to_money()?,
                event_id: event_id("S"),
                paid_at: notify
                    .payment_time
                    .as_deref()
                    .and_then(wire::parse_time_utc),
                brand: notify.psp_id.as_deref().and_then(non_empty),
                order_id,
            }),
            ResultStatus::F => Ok(WalletEvent::PaymentFailed {
                event_id: event_id("F"),
                code: truncate(&result.result_code, 64),
                message: truncate(result.message(), 256),
                order_id,
            }),
            ResultStatus::U | ResultStatus::Unknown => Ok(WalletEvent::Informational {
                event_id: event_id("U"),
                summary: format!(
                    "notifyPayment without a final status (resultCode {})",
                    truncate(&result.result_code, 64)
                ),
                order_id: Some(order_id),
            }),
        }
    }

    fn ack(&self, ack: Ack) -> AckResponse {
        match ack {
            Ack::Processed => notify_ack(200, ApiResult::success()),
            Ack::RetryLater => notify_ack(
                500,
                ApiResult::new(
                    ResultStatus::U,
                    codes::UNKNOWN_EXCEPTION,
                    "not processed, send again later",
                ),
            ),
            Ack::Rejected => notify_ack(
                401,
                ApiResult::new(
                    ResultStatus::F,
                    codes::INVALID_SIGNATURE,
                    "notification rejected: signature, time or body invalid",
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone};

    use super::*;

    const PATH: &str = "/webhooks/alipay_plus";
    const CLIENT: &str = "SANDBOX_CLIENT_1";

    fn adapter() -> (AlipayPlusAdapter, RsaPrivateKey) {
        let wallet = RsaPrivateKey::generate_2048().unwrap();
        let config = AlipayPlusConfig::new(
            "https://open-sea-global.alipayplus.com",
            CLIENT,
            RsaPrivateKey::generate_2048().unwrap(),
            wallet.public_key().unwrap(),
        );
        (AlipayPlusAdapter::new(config).unwrap(), wallet)
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_714_536_000 + seconds, 0).unwrap()
    }

    fn signed_callback(
        key: &RsaPrivateKey,
        body: &str,
        sent: DateTime<Utc>,
        received: DateTime<Utc>,
    ) -> RawCallback {
        let time = wire::format_time(
            &sent.with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap()),
        );
        let signature = wire::sign(key, 1, PATH, CLIENT, &time, body.as_bytes()).unwrap();
        RawCallback::new(
            "POST",
            PATH,
            vec![
                ("Client-Id", CLIENT.to_owned()),
                ("Request-Time", time),
                ("Signature", signature),
                ("Content-Type", "application/json".to_owned()),
            ],
            body.as_bytes().to_vec(),
            received,
        )
    }

    fn paid_body(value: &str) -> String {
        format!(
            r#"{{"paymentResult":{{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}},"paymentRequestId":"ord_1","paymentId":"20240501120000110000001","pspId":"A111253100000000","paymentTime":"2024-05-01T12:00:00+08:00","paymentAmount":{{"currency":"MOP","value":"{value}"}}}}"#
        )
    }

    #[test]
    fn paid_notification_becomes_payment_succeeded_with_the_psp_id_as_brand() {
        let (adapter, wallet) = adapter();
        let cb = signed_callback(&wallet, &paid_body("2550"), at(0), at(3));
        assert_eq!(
            adapter.verify_callback(&cb).unwrap(),
            WalletEvent::PaymentSucceeded {
                order_id: "ord_1".into(),
                wallet_ref: "20240501120000110000001".into(),
                amount: Money::parse("25.50", Currency::Mop).unwrap(),
                event_id: "20240501120000110000001:S".into(),
                paid_at: Some(at(0)),
                brand: Some("A111253100000000".into()),
            }
        );
    }

    #[test]
    fn notification_amount_is_reported_as_sent_even_when_it_differs() {
        let (adapter, wallet) = adapter();
        let cb = signed_callback(&wallet, &paid_body("1"), at(0), at(0));
        match adapter.verify_callback(&cb).unwrap() {
            WalletEvent::PaymentSucceeded { amount, .. } => {
                assert_eq!(amount, Money::parse("0.01", Currency::Mop).unwrap())
            }
            other => panic!("{other:?}"),
        }
        let unreadable = signed_callback(&wallet, &paid_body("25.50"), at(0), at(0));
        assert!(matches!(
            adapter.verify_callback(&unreadable),
            Err(AdapterError::Malformed(_))
        ));
    }

    #[test]
    fn failed_notification_becomes_payment_failed() {
        let (adapter, wallet) = adapter();
        let body = r#"{"paymentResult":{"resultCode":"ORDER_IS_CLOSED","resultStatus":"F","resultMessage":"closed"},"paymentRequestId":"ord_2","paymentId":"P2","paymentAmount":{"currency":"KRW","value":"5000"}}"#;
        let cb = signed_callback(&wallet, body, at(0), at(0));
        assert_eq!(
            adapter.verify_callback(&cb).unwrap(),
            WalletEvent::PaymentFailed {
                order_id: "ord_2".into(),
                event_id: "P2:F".into(),
                code: "ORDER_IS_CLOSED".into(),
                message: "closed".into(),
            }
        );
    }

    #[test]
    fn notification_with_an_unknown_status_changes_nothing() {
        let (adapter, wallet) = adapter();
        let body = r#"{"paymentResult":{"resultCode":"SUCCESS","resultStatus":"MAYBE"},"paymentRequestId":"ord_3","paymentId":"P3","paymentAmount":{"currency":"MOP","value":"100"}}"#;
        let event = adapter
            .verify_callback(&signed_callback(&wallet, body, at(0), at(0)))
            .unwrap();
        assert!(
            matches!(event, WalletEvent::Informational { .. }),
            "{event:?}"
        );
    }

    #[test]
    fn stale_or_future_request_time_is_refused_outside_the_configured_window() {
        let (default, wallet) = adapter();
        let hours = |h: i64| at(h * 3600);
        // The default window spans the whole retry schedule (about 34 hours).
        let late_retry = signed_callback(&wallet, &paid_body("2550"), at(0), hours(34));
        assert!(default.verify_callback(&late_retry).is_ok());
        for (sent, received) in [
            (at(0), hours(36) + chrono::Duration::seconds(1)),
            (hours(37), at(0)),
        ] {
            let cb = signed_callback(&wallet, &paid_body("2550"), sent, received);
            assert_eq!(
                default.verify_callback(&cb),
                Err(AdapterError::BadSignature)
            );
        }
        // A narrower window, once configured, is enforced to the second.
        let mut config = AlipayPlusConfig::new(
            "https://open-sea-global.alipayplus.com",
            CLIENT,
            RsaPrivateKey::generate_2048().unwrap(),
            wallet.public_key().unwrap(),
        );
        config.notify_window = Duration::from_secs(300);
        let narrow = AlipayPlusAdapter::new(config).unwrap();
        for (sent, received) in [(at(0), at(301)), (at(301), at(0))] {
            let cb = signed_callback(&wallet, &paid_body("2550"), sent, received);
            assert_eq!(narrow.verify_callback(&cb), Err(AdapterError::BadSignature));
        }
        let inside = signed_callback(&wallet, &paid_body("2550"), at(0), at(299));
        assert!(narrow.verify_callback(&inside).is_ok());
    }

    #[test]
    fn notification_for_another_client_or_path_is_refused() {
        let (adapter, wallet) = adapter();
        let cb = signed_callback(&wallet, &paid_body("2550"), at(0), at(0));
        let moved = RawCallback::new(
            "POST",
            "/webhooks/alipay_plus?x=1",
            cb.headers().to_vec(),
            cb.body().to_vec(),
            cb.received_at(),
        );
        assert_eq!(
            adapter.verify_callback(&moved),
            Err(AdapterError::BadSignature)
        );
        let other_client: Vec<(String, String)> = cb
            .headers()
            .iter()
            .map(|(n, v)| {
                let v = if n == "client-id" {
                    "OTHER".to_owned()
                } else {
                    v.clone()
                };
                (n.clone(), v)
            })
            .collect();
        let cb = RawCallback::new(
            "POST",
            PATH,
            other_client,
            cb.body().to_vec(),
            cb.received_at(),
        );
        assert_eq!(
            adapter.verify_callback(&cb),
            Err(AdapterError::BadSignature)
        );
    }

    #[test]
    fn acks_are_the_exact_alipay_plus_result_bodies() {
        let (adapter, _) = adapter();
        let ok = adapter.ack(Ack::Processed);
        assert_eq!(ok.status, 200);
        assert_eq!(ok.content_type, Some("application/json"));
        assert_eq!(
            String::from_utf8(ok.body.clone()).unwrap(),
            r#"{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}"#
        );
        let parsed: wire::NotifyAck = serde_json::from_slice(&ok.body).unwrap();
        assert_eq!(parsed.result, ApiResult::success());
        for ack in [Ack::RetryLater, Ack::Rejected] {
            let answer = adapter.ack(ack);
            assert!(
                !wire::NotifyAck::is_ack(answer.status, &answer.body),
                "{ack:?}"
            );
        }
        let rejected: wire::NotifyAck =
            serde_json::from_slice(&adapter.ack(Ack::Rejected).body).unwrap();
        assert_eq!(rejected.result.result_status, ResultStatus::F);
    }

    #[test]
    fn config_debug_hides_the_private_key() {
        let (adapter, _) = adapter();
        let debug = format!("{:?}", adapter.config());
        assert!(debug.contains("SANDBOX_CLIENT_1") && debug.contains("***"));
        assert!(!debug.contains("PRIVATE"));
    }

    #[test]
    fn capabilities_list_the_three_modes_and_partial_refunds() {
        let (adapter, _) = adapter();
        let caps = adapter.capabilities();
        assert!(caps.supports_mode(PayMode::StaticEntry));
        assert!(caps.supports_mode(PayMode::DynamicQr));
        assert!(caps.supports_mode(PayMode::CustomerCode));
        assert!(!caps.supports_mode(PayMode::Jsapi));
        assert!(Currency::ALL.iter().all(|c| caps.supports_currency(*c)));
        assert_eq!(caps.refunds, RefundSupport::Partial);
        assert_eq!(caps.results, ResultDelivery::Webhook);
        assert_eq!(adapter.id(), AdapterId::AlipayPlus);
    }
}
