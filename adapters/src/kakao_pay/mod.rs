//! Kakao Pay online single payment (Korea, KRW) — adapter.
//!
//! Owns: the client side of Kakao Pay's current online API (`open-api.kakaopay.com`,
//! paths `/online/v1/payment/{ready,approve,order,cancel}`, JSON bodies, header
//! `Authorization: SECRET_KEY <secret>`; wallets.md §4), the return-URL contract
//! ([`parse_return`]) and the `approve` step the gateway's return route calls.
//! Must never: treat a return redirect as proof of payment (only `approve` or
//! `order` says so), cancel a payment that was approved when asked to close it,
//! log the secret key, or report an unknown Kakao status as paid.
//!
//! # Flow (no webhook)
//! Kakao sends no server-to-server callback, so [`Capabilities::results`] is
//! [`ResultDelivery::Polling`]:
//! 1. `create_order` (only [`PayMode::StaticEntry`], only KRW) calls `ready` and
//!    answers `OrderCreated { wallet_ref: Some(tid), action: Redirect { url:
//!    next_redirect_mobile_url } }` — the mobile URL because a static plate is
//!    scanned with a phone. The gateway must store the `tid`: every later call
//!    needs it (Kakao cannot look a payment up by our order id), and calls without
//!    it fail with [`AdapterError::Unsupported`].
//! 2. The shopper pays in Kakao's cashier; Kakao redirects the browser to one of
//!    the three URLs we gave `ready`, all built from `CreateOrder::return_url` with
//!    one added query parameter (`?` or `&` as needed, before any `#fragment`):
//!    `result=approved` (Kakao then appends `&pg_token=<one-time token>`),
//!    `result=cancelled`, `result=failed`. The return route hands its raw query
//!    string to [`parse_return`], which yields [`KakaoReturn::Approved`] (with a
//!    validated token), [`KakaoReturn::Cancelled`] or [`KakaoReturn::Failed`]; a
//!    `return_url` that already carries `result` or `pg_token` is refused at
//!    creation so the three can never be confused.
//! 3. On `Approved`, the route calls [`KakaoPayAdapter::approve`]: that call, not
//!    the redirect, captures the money. A reused or wrong `pg_token` is refused by
//!    Kakao ([`AdapterError::Rejected`]). `approve` is not idempotent at Kakao (a
//!    second approve is refused whether or not the first went through), so its
//!    ambiguous failures (timeout, 5xx) are `Transport { retryable: false }`: ask
//!    `query`. The approval's `aid` is logged; `wallet_ref` stays the `tid`.
//! 4. Shoppers who never come back (closed the tab) are found by polling `query`.
//!
//! # Identifiers
//! `partner_order_id` = `partner_user_id` = our order id. Kakao means the latter
//! as the shopper's id at the merchant, but a static-plate shopper is anonymous to
//! us, and both must be repeated verbatim on `approve`, which only has an
//! [`OrderRef`]; the order id is the one value always at hand. `item_name` is the
//! order description cut to 100 characters (the order id when empty); `quantity`
//! 1; `total_amount` integer KRW; `tax_free_amount` 0; `vat_amount` omitted (Kakao
//! computes `(total - tax_free) / 11`).
//!
//! # Status (`order`, wallets.md §4.5)
//! `READY`, `SEND_TMS`, `OPEN_PAYMENT`, `SELECT_METHOD`, `ARS_WAITING`,
//! `AUTH_PASSWORD` → Pending; `SUCCESS_PAYMENT` → Succeeded; `PART_CANCEL_PAYMENT`
//! → Refunded (partial); `CANCEL_PAYMENT` → Refunded if the payment was ever
//! approved (`approved_at` set or a `PAYMENT` entry in `payment_action_details`),
//! else Closed; `FAIL_AUTH_PASSWORD`, `QUIT_PAYMENT`, `FAIL_PAYMENT` → Failed with
//! the status as code; anything else (incl. `ISSUED_SID`) → Unknown. Timestamps
//! are KST without offset (`2024-05-01T14:03:07`).
//!
//! # Close, refund (both are `cancel`)
//! Kakao has no "close" call. ASSUMPTION: `cancel` on a payment still waiting for
//! approval, sent with `cancel_available_amount: 0` ("nothing is captured"),
//! aborts it — status `CANCEL_PAYMENT`, nothing captured, no `approved_at` — which
//! `query` reports as Closed; without that field such a cancel is refused (`-725`),
//! so a refund sent for an unpaid payment can never abort it by accident. `close` first asks `order`:
//! already failed/closed → `Ok(())`; approved → refused locally with
//! `Rejected { code: "ALREADY_APPROVED" }` (closing must never refund); waiting →
//! `cancel` with `cancel_available_amount: 0`, Kakao's optimistic check, so if our
//! own `approve` wins a race in between the wallet refuses instead of refunding.
//! A shopper pressing Cancel in the cashier is `QUIT_PAYMENT` (Failed), not Closed.
//! `refund` is `cancel` with `cancel_amount`, `cancel_tax_free_amount: 0` and
//! `payload = refund_id`; partial refunds are allowed until the sum reaches the
//! captured amount (then `CANCEL_PAYMENT`); over-cancel is refused by Kakao.
//! Kakao's cancel has NO idempotency key (wallets.md §4.4): the same cancel sent
//! twice cancels twice. So a refund is made idempotent by refund id the way the
//! wallet allows:
//! 1. read `order` first; a `CANCEL` entry of `payment_action_details` whose
//!    `payload` is our refund id means this refund already happened: `Succeeded`
//!    with that entry's `aid`, nothing sent (its amount must equal ours, else
//!    `AmountMismatch`). A payment never approved is refused locally
//!    (`Rejected { code: "NOT_APPROVED" }`): a cancel could abort it instead.
//! 2. otherwise `cancel` with `cancel_available_amount` = the cancellable amount
//!    just read (§4.4's optimistic check): if anything was cancelled in between —
//!    including an earlier attempt of this very refund whose answer we never saw —
//!    Kakao refuses (`-709`) instead of cancelling again.
//! 3. an unclear outcome (timeout, 5xx, lost answer) is NOT retryable at the HTTP
//!    level; the adapter reads `order` again and reconciles from the payloads: found
//!    → `Succeeded`; not found → `Transport { retryable: false }` (the refund stays
//!    pending; calling `refund` again with the same id starts over at step 1, which
//!    is safe). A `-709` is reconciled the same way before it is reported.
//!
//! `wallet_refund_ref` is the cancel's `aid`. The one window left open: an earlier
//! attempt still in flight at Kakao while the read-back of step 3 runs.
//!
//! # Not on this rail
//! `charge_code` → Unsupported (Kakao Pay customer codes go through Alipay+,
//! wallets.md §4.6). `verify_callback` → Unsupported (no webhook); `ack` answers a
//! plain empty 200 for every [`Ack`], because nothing from Kakao ever reads it.
//! Responses are not signed (TLS only), so there is no response signature to
//! check, and the RSA keys of `LocalKeys` are unused by this protocol.
//!
//! # Errors
//! Kakao's error body is `{"error_code": <negative int>, "error_message": "..."}`
//! (legacy `code` / `msg` also read) with HTTP 4xx → `Rejected { code: "-401", .. }`
//! etc.; HTTP 5xx → `Transport` (retryable except for `approve` and a refund's
//! `cancel`, which are reconciled instead); a 4xx without that body or an
//! unreadable 2xx → `Malformed`. Codes the sandbox uses (Kakao's style;
//! the exact public list was not retrieved, so these are the sandbox's choice):
//! `-1` internal error (HTTP 500); `-2` invalid or missing parameter; `-401` missing or wrong secret key (HTTP 401);
//! `-701` approve before the shopper authenticated; `-702` already approved;
//! `-708` cancel amount above the cancellable amount; `-709` the optimistic
//! `cancel_available_amount` differs; `-721` unknown tid; `-725` status does not
//! allow the call; `-731` wrong cid; `-780` approval failure (wrong or used
//! `pg_token`).
//!
//! # Credentials
//! [`KakaoPayConfig::cid`] is the merchant code (`TC0ONETIME` for tests) and
//! [`KakaoPayConfig::secret_key`] the console's "Secret key" (`DEV…` for test,
//! `PRD…` for production). In local mode the secret is derived from
//! `LocalKeys.secret` by [`sandbox::local_secret_key`].

pub mod sandbox;
pub mod wire;

use std::fmt;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::contract::{
    Ack, AckResponse, AdapterError, AdapterId, Capabilities, ChargeCode, ChargeOutcome,
    CreateOrder, OrderCreated, OrderRef, PayAction, PayMode, RawCallback, RefundOutcome,
    RefundRequest, RefundSupport, ResultDelivery, WalletAdapter, WalletEvent, WalletStatus,
};
use crate::money::Currency;

use wire::Status;

/// Kakao's secret key. Prints as `SecretKey(***)`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    /// 1 to 256 visible ASCII characters without spaces (it goes into a header).
    pub fn new(value: impl Into<String>) -> Result<SecretKey, AdapterError> {
        let value = value.into();
        if value.is_empty() || value.len() > 256 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AdapterError::Malformed(
                "kakao pay secret key must be 1 to 256 visible ASCII characters".into(),
            ));
        }
        Ok(SecretKey(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// How to reach Kakao Pay. `Debug` masks the secret key.
#[derive(Debug, Clone)]
pub struct KakaoPayConfig {
    /// `https://open-api.kakaopay.com`, or the sandbox's URL in local mode.
    pub base_url: String,
    /// Merchant code, 10 characters (`TC0ONETIME` for tests).
    pub cid: String,
    pub secret_key: SecretKey,
    pub connect_timeout: Duration,
    /// Whole request, connect to last byte.
    pub timeout: Duration,
}

impl KakaoPayConfig {
    /// With the default timeouts: 5 s to connect, 15 s per request.
    pub fn new(base_url: &str, cid: &str, secret_key: SecretKey) -> KakaoPayConfig {
        KakaoPayConfig {
            base_url: base_url.to_owned(),
            cid: cid.to_owned(),
            secret_key,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
        }
    }
}

/// The largest response body read (Kakao's are a few KiB).
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Refused return queries above this size: a browser redirect, not an upload.
const MAX_RETURN_QUERY: usize = 4096;

/// Kakao Pay online API client.
#[derive(Debug)]
pub struct KakaoPayAdapter {
    config: KakaoPayConfig,
    authorization: HeaderValue,
    http: reqwest::Client,
}

/// Which API call, for error messages and whether repeating it is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Ready,
    Approve,
    Order,
    Cancel,
    /// `cancel` with `cancel_available_amount: 0`: aborts a payment not yet approved
    /// (`close`). Repeating it is safe: once aborted, or once approved, the wallet
    /// refuses it.
    Abort,
}

impl Call {
    fn path(self) -> &'static str {
        match self {
            Call::Ready => wire::READY_PATH,
            Call::Approve => wire::APPROVE_PATH,
            Call::Order => wire::ORDER_PATH,
            Call::Cancel | Call::Abort => wire::CANCEL_PATH,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Call::Ready => "ready",
            Call::Approve => "approve",
            Call::Order => "order",
            Call::Cancel | Call::Abort => "cancel",
        }
    }

    /// Whether sending the same request again after an unclear failure is safe:
    /// `order` reads; a repeated `ready` leaves an orphan tid nobody is sent to.
    /// `approve` is refused the second time whatever happened the first, and
    /// `cancel` has no idempotency key at all: both are reconciled by reading
    /// `order`, never repeated blindly.
    fn repeatable(self) -> bool {
        !matches!(self, Call::Approve | Call::Cancel)
    }
}

/// Where the shopper's browser came back from Kakao, read from the return URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KakaoReturn {
    /// Authenticated: call [`KakaoPayAdapter::approve`] with this token.
    Approved { pg_token: String },
    /// The shopper quit in the cashier.
    Cancelled,
    /// Authentication or payment failed in the cashier.
    Failed,
}

/// Reads the query string of a return URL (with or without the leading `?`). Our
/// `result` parameter says which URL it is; `pg_token` must come with `approved`
/// and only with it, be 8 to 64 letters or digits, and neither may repeat. Other
/// parameters (the gateway's own) are ignored.
pub fn parse_return(query: &str) -> Result<KakaoReturn, AdapterError> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    if query.len() > MAX_RETURN_QUERY {
        return Err(AdapterError::Malformed("return query is too long".into()));
    }
    let broken = || AdapterError::Malformed("return query has a broken %-escape".into());
    let mut result: Option<String> = None;
    let mut token: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = wire::percent_decode(key).ok_or_else(broken)?;
        let slot = match key.as_str() {
            wire::RESULT_PARAM => &mut result,
            wire::PG_TOKEN_PARAM => &mut token,
            _ => continue,
        };
        if slot.is_some() {
            return Err(AdapterError::Malformed(format!(
                "return query repeats {key}"
            )));
        }
        *slot = Some(wire::percent_decode(value).ok_or_else(broken)?);
    }
    let Some(result) = result else {
        return Err(AdapterError::Malformed(
            "return query has no result parameter".into(),
        ));
    };
    match (result.as_str(), token) {
        (wire::RESULT_APPROVED, Some(token)) if wire::is_valid_pg_token(&token) => {
            Ok(KakaoReturn::Approved { pg_token: token })
        }
        (wire::RESULT_APPROVED, Some(_)) => Err(AdapterError::Malformed(
            "pg_token must be 8 to 64 letters or digits".into(),
        )),
        (wire::RESULT_APPROVED, None) => Err(AdapterError::Malformed(
            "approved return without pg_token".into(),
        )),
        (wire::RESULT_CANCELLED, None) => Ok(KakaoReturn::Cancelled),
        (wire::RESULT_FAILED, None) => Ok(KakaoReturn::Failed),
        (wire::RESULT_CANCELLED | wire::RESULT_FAILED, Some(_)) => Err(AdapterError::Malformed(
            "pg_token on a cancelled or failed return".into(),
        )),
        _ => Err(AdapterError::Malformed(format!(
            "unknown return result {:?}",
            result.chars().take(20).collect::<String>()
        ))),
    }
}

impl KakaoPayAdapter {
    pub fn new(config: KakaoPayConfig) -> Result<KakaoPayAdapter, AdapterError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(AdapterError::Malformed(
                "kakao pay base_url must be an http(s) URL".into(),
            ));
        }
        if config.cid.len() != 10 || !config.cid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(AdapterError::Malformed(
                "kakao pay cid must be 10 letters or digits".into(),
            ));
        }
        let mut authorization =
            HeaderValue::from_str(&wire::authorization(config.secret_key.expose())).map_err(
                |_| AdapterError::Malformed("kakao pay secret key is not a header value".into()),
            )?;
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            // The API never redirects; following one could carry the secret along.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sesame/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AdapterError::Transport {
                retryable: false,
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(KakaoPayAdapter {
            config: KakaoPayConfig { base_url, ..config },
            authorization,
            http,
        })
    }

    pub fn config(&self) -> &KakaoPayConfig {
        &self.config
    }

    /// Approves (captures) the payment after the shopper authenticated, with the
    /// `pg_token` from [`parse_return`]. Returns `Succeeded` with the `tid` as
    /// `wallet_ref`, Kakao's captured amount and `approved_at`.
    pub async fn approve(
        &self,
        order: &OrderRef,
        pg_token: &str,
    ) -> Result<WalletStatus, AdapterError> {
        let tid = tid_of(order)?;
        if !wire::is_valid_pg_token(pg_token) {
            return Err(AdapterError::Malformed(
                "pg_token must be 8 to 64 letters or digits".into(),
            ));
        }
        let partner = partner_id(&order.order_id)?;
        let request = wire::ApproveRequest {
            cid: self.config.cid.clone(),
            cid_secret: None,
            tid: tid.to_owned(),
            partner_order_id: partner.to_owned(),
            partner_user_id: partner.to_owned(),
            pg_token: pg_token.to_owned(),
            payload: None,
            total_amount: None,
        };
        let approved: wire::ApproveResponse = self.post(Call::Approve, &request).await?;
        check_echo(
            tid,
            &order.order_id,
            &approved.tid,
            &approved.partner_order_id,
        )?;
        let amount = wire::krw_money(approved.amount.total)?;
        let paid_at = approved
            .approved_at
            .as_deref()
            .map(wire::parse_time)
            .transpose()?;
        tracing::info!(tid = %approved.tid, aid = %approved.aid, %amount, "kakao pay payment approved");
        Ok(WalletStatus::Succeeded {
            wallet_ref: approved.tid,
            amount,
            paid_at,
            brand: None,
        })
    }

    /// Kakao's full `order` answer (status, amounts, actions), checked to belong to
    /// this order. [`WalletAdapter::query`] maps it with [`wire::order_status`].
    pub async fn order_details(
        &self,
        order: &OrderRef,
    ) -> Result<wire::OrderResponse, AdapterError> {
        let tid = tid_of(order)?;
        let request = wire::OrderRequest {
            cid: self.config.cid.clone(),
            cid_secret: None,
            tid: tid.to_owned(),
        };
        let details: wire::OrderResponse = self.post(Call::Order, &request).await?;
        check_echo(
            tid,
            &order.order_id,
            &details.tid,
            &details.partner_order_id,
        )?;
        Ok(details)
    }

    async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        call: Call,
        body: &B,
    ) -> Result<R, AdapterError> {
        let url = format!("{}{}", self.config.base_url, call.path());
        let response = self
            .http
            .post(&url)
            .header(AUTHORIZATION, self.authorization.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| transport(call, &e))?;
        let status = response.status();
        let bytes = read_capped(call, response).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                AdapterError::Malformed(format!(
                    "kakao pay {} response is not the expected JSON ({:?} at line {} column {})",
                    call.name(),
                    e.classify(),
                    e.line(),
                    e.column()
                ))
            });
        }
        let error = serde_json::from_slice::<wire::ErrorBody>(&bytes).ok();
        let http = status.as_u16();
        match error {
            _ if status.is_server_error() => Err(AdapterError::Transport {
                retryable: call.repeatable(),
                message: format!(
                    "kakao pay {} answered HTTP {http}{}",
                    call.name(),
                    error
                        .map(|e| format!(" ({} {})", e.error_code, clip(&e.error_message)))
                        .unwrap_or_default()
                ),
            }),
            Some(error) if status.is_client_error() => Err(AdapterError::Rejected {
                code: error.error_code.to_string(),
                message: describe_error(&error),
            }),
            _ => Err(AdapterError::Malformed(format!(
                "kakao pay {} answered HTTP {http} without a Kakao error body",
                call.name()
            ))),
        }
    }
}

/// Reads at most [`MAX_RESPONSE_BYTES`]; a failure mid-body is a transport error.
async fn read_capped(call: Call, mut response: reqwest::Response) -> Result<Vec<u8>, AdapterError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(call, &e))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(AdapterError::Malformed(format!(
                "kakao pay {} response is larger than {MAX_RESPONSE_BYTES} bytes",
                call.name()
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport(call: Call, error: &reqwest::Error) -> AdapterError {
    let what = if error.is_connect() {
        "could not connect"
    } else if error.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    AdapterError::Transport {
        // A connection never made carried no request: always safe to repeat.
        retryable: error.is_connect() || call.repeatable(),
        message: format!("kakao pay {}: {what}", call.name()),
    }
}

fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

fn describe_error(error: &wire::ErrorBody) -> String {
    let mut message = clip(&error.error_message);
    if let Some(code) = error
        .extras
        .as_ref()
        .and_then(|x| x.method_result_code.as_deref())
    {
        message.push_str(&format!(" (method result {})", clip(code)));
    }
    message
}

fn tid_of(order: &OrderRef) -> Result<&str, AdapterError> {
    order
        .wallet_ref
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or(AdapterError::Unsupported(
            "kakao pay identifies payments only by tid: OrderRef::wallet_ref is required",
        ))
}

/// Our order id as `partner_order_id` / `partner_user_id` (≤ 100 characters).
fn partner_id(order_id: &str) -> Result<&str, AdapterError> {
    if order_id.is_empty() || order_id.chars().count() > wire::MAX_FIELD_CHARS {
        return Err(AdapterError::Unsupported(
            "kakao pay partner_order_id must be 1 to 100 characters",
        ));
    }
    Ok(order_id)
}

/// A response about another payment is never taken for ours.
fn check_echo(
    tid: &str,
    order_id: &str,
    got_tid: &str,
    got_order_id: &str,
) -> Result<(), AdapterError> {
    if got_tid != tid || got_order_id != order_id {
        return Err(AdapterError::Malformed(
            "kakao pay answered about another payment (tid or partner_order_id differs)".into(),
        ));
    }
    Ok(())
}

/// An absolute http(s) URL without `result` / `pg_token` parameters of its own.
fn check_return_url(url: &str) -> Result<(), AdapterError> {
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.bytes().any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err(AdapterError::Unsupported(
            "kakao pay needs an absolute http(s) return_url",
        ));
    }
    let without_fragment = url.split_once('#').map_or(url, |(u, _)| u);
    if let Some((_, query)) = without_fragment.split_once('?') {
        for pair in query.split('&') {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            let key = wire::percent_decode(key).unwrap_or_default();
            if key == wire::RESULT_PARAM || key == wire::PG_TOKEN_PARAM {
                return Err(AdapterError::Unsupported(
                    "kakao pay return_url must not carry result or pg_token parameters",
                ));
            }
        }
    }
    Ok(())
}

/// This refund in the wallet's record: the `CANCEL` entry carrying our refund id as
/// its `payload`, as `Succeeded` with its `aid`.
fn refund_in(
    details: &wire::OrderResponse,
    req: &RefundRequest,
) -> Result<Option<RefundOutcome>, AdapterError> {
    let mut ours = details.payment_action_details.iter().filter(|action| {
        wire::ActionType::parse(&action.payment_action_type) == wire::ActionType::Cancel
            && action.payload.as_deref() == Some(req.refund_id.as_str())
    });
    let Some(action) = ours.next() else {
        return Ok(None);
    };
    if ours.next().is_some() {
        tracing::error!(tid = %details.tid, refund = %req.refund_id, "kakao pay shows more than one cancel for one refund id");
    }
    let got = wire::krw_money(action.amount)?;
    if got != req.amount {
        return Err(AdapterError::AmountMismatch {
            expected: req.amount,
            got,
        });
    }
    Ok(Some(RefundOutcome::Succeeded {
        wallet_refund_ref: Some(action.aid.clone()),
    }))
}

/// A cancel whose effect we cannot see from its answer: a transport failure, or
/// Kakao's optimistic check failing (something — perhaps our own earlier attempt —
/// cancelled in between).
fn is_unclear_cancel(error: &AdapterError) -> bool {
    match error {
        AdapterError::Transport { .. } => true,
        AdapterError::Rejected { code, .. } => {
            *code == wire::codes::CANCEL_AVAILABLE_MISMATCH.to_string()
        }
        _ => false,
    }
}

fn item_name(description: &str, order_id: &str) -> String {
    let name = description.trim();
    let name = if name.is_empty() { order_id } else { name };
    name.chars().take(wire::MAX_FIELD_CHARS).collect()
}

#[async_trait::async_trait]
impl WalletAdapter for KakaoPayAdapter {
    fn id(&self) -> AdapterId {
        AdapterId::KakaoPay
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            modes: vec![PayMode::StaticEntry],
            currencies: vec![Currency::Krw],
            refunds: RefundSupport::Partial,
            results: ResultDelivery::Polling,
        }
    }

    async fn create_order(&self, req: &CreateOrder) -> Result<OrderCreated, AdapterError> {
        if req.mode != PayMode::StaticEntry {
            return Err(AdapterError::Unsupported(
                "kakao pay supports only static entry (redirect to its cashier)",
            ));
        }
        let total = wire::krw_amount(&req.amount)?;
        let return_url = req.return_url.as_deref().ok_or(AdapterError::Unsupported(
            "kakao pay needs a return_url: approval arrives only by browser redirect",
        ))?;
        check_return_url(return_url)?;
        let partner = partner_id(&req.order_id)?;
        let ready = wire::ReadyRequest {
            cid: self.config.cid.clone(),
            cid_secret: None,
            partner_order_id: partner.to_owned(),
            partner_user_id: partner.to_owned(),
            item_name: item_name(&req.description, &req.order_id),
            item_code: None,
            quantity: 1,
            total_amount: total,
            tax_free_amount: 0,
            vat_amount: None,
            approval_url: wire::with_query(return_url, wire::RESULT_PARAM, wire::RESULT_APPROVED),
            cancel_url: wire::with_query(return_url, wire::RESULT_PARAM, wire::RESULT_CANCELLED),
            fail_url: wire::with_query(return_url, wire::RESULT_PARAM, wire::RESULT_FAILED),
        };
        let created: wire::ReadyResponse = self.post(Call::Ready, &ready).await?;
        if created.tid.is_empty()
            || created.tid.len() > 64
            || !created.tid.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(AdapterError::Malformed(
                "kakao pay ready returned an unusable tid".into(),
            ));
        }
        let url = created.next_redirect_mobile_url;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(AdapterError::Malformed(
                "kakao pay ready returned a redirect that is not an http(s) URL".into(),
            ));
        }
        Ok(OrderCreated {
            wallet_ref: Some(created.tid),
            action: PayAction::Redirect { url },
        })
    }

    async fn charge_code(&self, _req: &ChargeCode) -> Result<ChargeOutcome, AdapterError> {
        Err(AdapterError::Unsupported(
            "kakao pay customer codes go through alipay+",
        ))
    }

    async fn query(&self, order: &OrderRef) -> Result<WalletStatus, AdapterError> {
        let details = self.order_details(order).await?;
        wire::order_status(&details)
    }

    async fn close(&self, order: &OrderRef) -> Result<(), AdapterError> {
        let details = self.order_details(order).await?;
        let status = Status::parse(&details.status);
        if status.is_failure() || (status == Status::CancelPayment && !details.was_approved()) {
            // Already unpayable: closing again is a no-op.
            return Ok(());
        }
        if !status.is_awaiting_approval() {
            return Err(match status {
                Status::Unknown | Status::IssuedSid => AdapterError::Malformed(format!(
                    "kakao pay status {:?} is not understood; not closing",
                    details.status.chars().take(40).collect::<String>()
                )),
                _ => AdapterError::Rejected {
                    code: "ALREADY_APPROVED".into(),
                    message: format!(
                        "payment is {}: refund it instead of closing",
                        status.as_str()
                    ),
                },
            });
        }
        let cancel = wire::CancelRequest {
            cid: self.config.cid.clone(),
            cid_secret: None,
            tid: details.tid.clone(),
            cancel_amount: details.amount.total,
            cancel_tax_free_amount: 0,
            cancel_vat_amount: None,
            // Nothing is captured yet; if an approval slipped in, Kakao refuses.
            cancel_available_amount: Some(0),
            payload: None,
        };
        let cancelled: wire::CancelResponse = self.post(Call::Abort, &cancel).await?;
        check_echo(
            &details.tid,
            &order.order_id,
            &cancelled.tid,
            &cancelled.partner_order_id,
        )?;
        let moved = wire::krw_money(cancelled.approved_cancel_amount.total)?;
        if !moved.is_zero() {
            return Err(AdapterError::AmountMismatch {
                expected: wire::krw_money(0)?,
                got: moved,
            });
        }
        Ok(())
    }

    async fn refund(&self, req: &RefundRequest) -> Result<RefundOutcome, AdapterError> {
        let order = OrderRef {
            order_id: req.order_id.clone(),
            wallet_ref: req.wallet_ref.clone(),
        };
        let tid = tid_of(&order)?;
        let amount = wire::krw_amount(&req.amount)?;
        if req.refund_id.is_empty() || req.refund_id.chars().count() > wire::MAX_PAYLOAD_CHARS {
            return Err(AdapterError::Unsupported(
                "kakao pay refund ids must be 1 to 200 characters (sent as the cancel payload)",
            ));
        }
        // Step 1 of the module doc: has this refund already happened?
        let details = self.order_details(&order).await?;
        if let Some(done) = refund_in(&details, req)? {
            return Ok(done);
        }
        if !details.was_approved() {
            return Err(AdapterError::Rejected {
                code: "NOT_APPROVED".into(),
                message: format!(
                    "payment is {}: nothing was captured to refund",
                    Status::parse(&details.status).as_str()
                ),
            });
        }
        let cancel = wire::CancelRequest {
            cid: self.config.cid.clone(),
            cid_secret: None,
            tid: tid.to_owned(),
            cancel_amount: amount,
            cancel_tax_free_amount: 0,
            cancel_vat_amount: None,
            cancel_available_amount: Some(details.cancellable()),
            payload: Some(req.refund_id.clone()),
        };
        let cancelled: wire::CancelResponse = match self.post(Call::Cancel, &cancel).await {
            Ok(cancelled) => cancelled,
            Err(unclear) if is_unclear_cancel(&unclear) => {
                // Step 3: what the wallet did is read back, never guessed.
                let after =
                    self.order_details(&order)
                        .await
                        .map_err(|_| AdapterError::Transport {
                            retryable: false,
                            message: format!("{unclear}; reading the order back failed too"),
                        })?;
                return match refund_in(&after, req)? {
                    Some(done) => Ok(done),
                    None => Err(unclear),
                };
            }
            Err(refused) => return Err(refused),
        };
        check_echo(
            tid,
            &req.order_id,
            &cancelled.tid,
            &cancelled.partner_order_id,
        )?;
        if cancelled.payload.as_deref() != Some(req.refund_id.as_str()) {
            return Err(AdapterError::Malformed(
                "kakao pay cancel answered for another refund (payload differs)".into(),
            ));
        }
        let got = wire::krw_money(cancelled.approved_cancel_amount.total)?;
        if got != req.amount {
            return Err(AdapterError::AmountMismatch {
                expected: req.amount,
                got,
            });
        }
        Ok(RefundOutcome::Succeeded {
            wallet_refund_ref: Some(cancelled.aid),
        })
    }

    fn verify_callback(&self, _cb: &RawCallback) -> Result<WalletEvent, AdapterError> {
        Err(AdapterError::Unsupported(
            "kakao pay has no webhook; use the return route and approve",
        ))
    }

    fn ack(&self, _ack: Ack) -> AckResponse {
        AckResponse::empty(200)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approved_return_yields_the_token() {
        assert_eq!(
            parse_return("result=approved&pg_token=a1b2c3d4e5f6a7b8c9d0"),
            Ok(KakaoReturn::Approved {
                pg_token: "a1b2c3d4e5f6a7b8c9d0".into()
            })
        );
        assert_eq!(
            parse_return("?lang=en&result=approved&pg_token=a1b2c3d4e5f6a7b8c9d0#x"),
            Ok(KakaoReturn::Approved {
                pg_token: "a1b2c3d4e5f6a7b8c9d0".into()
            })
        );
        assert_eq!(
            parse_return("result=approved&pg%5Ftoken=a1b2c3d4e5f6a7b8c9d0"),
            Ok(KakaoReturn::Approved {
                pg_token: "a1b2c3d4e5f6a7b8c9d0".into()
            })
        );
    }

    #[test]
    fn cancelled_and_failed_returns_are_told_apart() {
        assert_eq!(parse_return("result=cancelled"), Ok(KakaoReturn::Cancelled));
        assert_eq!(
            parse_return("lang=pt&result=failed"),
            Ok(KakaoReturn::Failed)
        );
    }

    #[test]
    fn malformed_returns_are_refused() {
        for bad in [
            "",
            "pg_token=a1b2c3d4e5f6a7b8c9d0",
            "result=approved",
            "result=approved&pg_token=short",
            "result=approved&pg_token=a1b2c3d4e5f6a7b8c9d0%26x",
            "result=approved&pg_token=a1b2c3d4e5f6a7b8c9d0&pg_token=b1b2c3d4e5f6a7b8c9d0",
            "result=approved&result=cancelled&pg_token=a1b2c3d4e5f6a7b8c9d0",
            "result=cancelled&pg_token=a1b2c3d4e5f6a7b8c9d0",
            "result=failed&pg_token=a1b2c3d4e5f6a7b8c9d0",
            "result=paid",
            "result=%zz",
        ] {
            assert!(
                matches!(parse_return(bad), Err(AdapterError::Malformed(_))),
                "{bad:?} accepted"
            );
        }
        assert!(parse_return(&format!("result=failed&x={}", "a".repeat(5000))).is_err());
    }

    #[test]
    fn return_urls_may_not_carry_our_parameters() {
        assert!(check_return_url("https://gw.example/o/1/return").is_ok());
        assert!(check_return_url("https://gw.example/o/1/return?lang=en#top").is_ok());
        for bad in [
            "/o/1/return",
            "ftp://gw.example/",
            "https://gw.example/r?result=x",
            "https://gw.example/r?a=1&pg_token=x",
            "https://gw.example/r x",
        ] {
            assert!(check_return_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn config_debug_masks_the_secret_key() {
        let config = KakaoPayConfig::new(
            "https://open-api.kakaopay.com",
            wire::TEST_CID,
            SecretKey::new("DEVSECRETVALUE1234").unwrap(),
        );
        let printed = format!("{config:?}");
        assert!(printed.contains("SecretKey(***)"), "{printed}");
        assert!(!printed.contains("DEVSECRETVALUE1234"));
        assert!(KakaoPayAdapter::new(config).is_ok());
    }

    #[test]
    fn invalid_configuration_is_refused() {
        let secret = || SecretKey::new("DEVX").unwrap();
        assert!(
            KakaoPayAdapter::new(KakaoPayConfig::new(
                "open-api.kakaopay.com",
                wire::TEST_CID,
                secret()
            ))
            .is_err()
        );
        assert!(KakaoPayAdapter::new(KakaoPayConfig::new("https://x", "TC0", secret())).is_err());
        assert!(SecretKey::new("DEV X").is_err());
        assert!(SecretKey::new("").is_err());
    }

    #[test]
    fn item_name_is_the_description_cut_to_100_characters() {
        assert_eq!(item_name("  Coffee ", "ord_1"), "Coffee");
        assert_eq!(item_name("", "ord_1"), "ord_1");
        assert_eq!(item_name(&"가".repeat(150), "ord_1").chars().count(), 100);
    }
}
