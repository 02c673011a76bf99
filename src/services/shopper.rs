//! The shopper flow (DESIGN §4 "Static scan", and the gateway QR of a dynamic order):
//! which plate and merchant a scan names, which wallet routes fit the merchant's
//! currency, checking the amount, creating the plate's order idempotently (its id
//! derived from the plate and the form's signed nonce, so a double tap or a browser
//! retry is the SAME order), routing a gateway order to the wallet the shopper chose
//! (once: a compare-and-set), starting either at the wallet and closing one the
//! shopper gave up on. Never sees actix types; never trusts the form for a fixed
//! amount; never offers a wallet the shopper's browser cannot pay with.

mod amount;
mod form;

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use sesame_adapters::brands::Brand;
use sesame_adapters::contract::{AdapterId, PayMode};
use sesame_adapters::money::{Currency, Money};

pub use amount::AmountError;
pub use form::FormCheck;
use form::FormKey;

use crate::domain::order::{Order, OrderMode, OrderStatus};
use crate::domain::plate::Plate;
use crate::domain::{Merchant, OrderId, PlateId, UnixMillis};
use crate::error::{ApiError, ErrorCode};
use crate::services::payments;
use crate::services::rate_limit::{IpBlock, RateLimiter};
use crate::startup::AppState;
use crate::store::{CommitOutcome, OrderChange};
use crate::wallets::Route;

/// The rate limiters of the public pages (see `[shopper]` in the configuration and
/// README "Shopper pages"): per client for page views, pay submissions and status
/// polls, and per payee (plate or gateway order) for valid pay submissions.
pub struct ShopperLimits {
    pub pages: RateLimiter<IpAddr>,
    pub pay_per_client: RateLimiter<IpAddr>,
    pub pay_per_payee: RateLimiter<String>,
    pub status: RateLimiter<IpAddr>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpBlock>,
}

impl ShopperLimits {
    pub fn new(settings: &crate::config::ShopperSettings) -> ShopperLimits {
        let entries = settings.rate_limit_entries;
        ShopperLimits {
            pages: RateLimiter::new(settings.rate_per_ip_per_minute, entries),
            pay_per_client: RateLimiter::new(settings.pay_per_ip_per_minute, entries),
            pay_per_payee: RateLimiter::new(settings.pay_per_plate_per_minute, entries),
            status: RateLimiter::new(settings.status_per_ip_per_minute, entries),
            // Validated when the configuration loaded.
            trusted_proxies: settings
                .trusted_proxies
                .iter()
                .filter_map(|p| IpBlock::parse(p))
                .collect(),
        }
    }
}

/// What a form is for: its nonce is valid for this subject only.
pub fn plate_subject(plate: &PlateId) -> String {
    format!("plate:{plate}")
}

pub fn order_subject(order: &OrderId) -> String {
    format!("order:{order}")
}

pub fn cancel_subject(order: &OrderId) -> String {
    format!("cancel:{order}")
}

/// What a payer cookie seals: the browser that submitted the form creating `order`.
fn payer_subject(order: &OrderId) -> String {
    format!("payer:{order}")
}

/// The seal a paying browser keeps for `order` (see [`is_payer`]).
pub fn payer_seal(state: &AppState, order: &OrderId) -> String {
    form_key(state).seal(&payer_subject(order))
}

/// Whether `seal` shows its browser is the one that started `order` from a plate: only
/// that browser may give the payment up (cancel it), not anyone who learns the id.
pub fn is_payer(state: &AppState, order: &OrderId, seal: &str) -> bool {
    form_key(state).sealed(&payer_subject(order), seal)
}

fn form_key(state: &AppState) -> FormKey {
    FormKey::derive(&state.id_secret)
}

/// A fresh signed nonce for a form about `subject`.
pub fn issue_form(state: &AppState, subject: &str) -> String {
    form_key(state).issue(subject, state.clock.now_ms())
}

/// Whether a submitted nonce is one we issued for `subject`, and still fresh.
pub fn check_form(state: &AppState, subject: &str, nonce: &str) -> FormCheck {
    form_key(state).check(
        subject,
        nonce,
        state.clock.now_ms(),
        state.settings.shopper.form_ttl_secs,
    )
}

/// The order a (plate, nonce) pair names: keyed by the server secret, so a shopper
/// cannot aim a nonce at someone else's order.
pub fn order_id_for(
    state: &AppState,
    merchant: &Merchant,
    plate: &PlateId,
    nonce: &str,
) -> OrderId {
    OrderId::from_bytes(&payments::derived_id(
        &state.id_secret,
        &merchant.id,
        &format!("static:{plate}"),
        nonce,
    ))
}

/// Recently read plates with their merchants, for plate page views (see
/// `shopper.plate_cache_ms`). Only ever holds what `plate_and_merchant` found.
pub struct PlateViews {
    ttl_ms: i64,
    seen: Mutex<LruCache<PlateId, (UnixMillis, Plate, Merchant)>>,
}

impl PlateViews {
    pub fn new(settings: &crate::config::ShopperSettings) -> PlateViews {
        let entries = NonZeroUsize::new(settings.plate_cache_entries).unwrap_or(NonZeroUsize::MIN);
        PlateViews {
            ttl_ms: settings.plate_cache_ms,
            seen: Mutex::new(LruCache::new(entries)),
        }
    }
}

/// [`plate_and_merchant`] for showing a plate page: may answer from what was read in
/// the last `shopper.plate_cache_ms`. Never used where an order is created.
pub async fn plate_and_merchant_for_page(
    state: &AppState,
    plate_id: &PlateId,
) -> Result<Option<(Plate, Merchant)>, ApiError> {
    let views = &state.plate_views;
    if views.ttl_ms == 0 {
        return plate_and_merchant(state, plate_id).await;
    }
    let now = state.clock.now_ms();
    if let Ok(mut seen) = views.seen.lock()
        && let Some((read_at, plate, merchant)) = seen.get(plate_id)
        && now.saturating_sub(*read_at) < views.ttl_ms
    {
        return Ok(Some((plate.clone(), merchant.clone())));
    }
    let found = plate_and_merchant(state, plate_id).await?;
    if let (Some((plate, merchant)), Ok(mut seen)) = (&found, views.seen.lock()) {
        seen.put(plate_id.clone(), (now, plate.clone(), merchant.clone()));
    }
    Ok(found)
}

/// The plate and its merchant, when both exist and the merchant takes payments.
pub async fn plate_and_merchant(
    state: &AppState,
    plate_id: &PlateId,
) -> Result<Option<(Plate, Merchant)>, ApiError> {
    let Some(plate) = state.store.plate(plate_id).await? else {
        return Ok(None);
    };
    let Some(merchant) = state.store.merchant(&plate.merchant_id).await? else {
        return Ok(None);
    };
    if merchant.status != crate::domain::merchant::MerchantStatus::Active {
        return Ok(None);
    }
    Ok(Some((plate, merchant)))
}

/// How a brand is paid from a plate page: WeChat in its own browser (JSAPI), every
/// other wallet by redirect to its cashier (Alipay+ Entry Code, Alipay, Kakao Pay).
pub fn mode_for(adapter: AdapterId) -> PayMode {
    if adapter == AdapterId::WechatPay {
        PayMode::Jsapi
    } else {
        PayMode::StaticEntry
    }
}

/// The route a brand takes from a plate in `currency`: its direct adapter when that
/// adapter accepts the currency and the mode, else its rail (Kakao Pay outside KRW
/// goes through Alipay+). `None` when neither is configured or fits.
pub fn static_route(state: &AppState, brand: &Brand, currency: Currency) -> Option<Route> {
    if !brand.enabled() {
        return None;
    }
    [brand.direct_adapter(), Some(brand.adapter())]
        .into_iter()
        .flatten()
        .find_map(|id| {
            let adapter = state.wallets.adapter(id)?;
            let caps = adapter.capabilities();
            (caps.supports_currency(currency) && caps.supports_mode(mode_for(id))).then(|| Route {
                brand: Some(brand.id().to_owned()),
                adapter_id: id,
                adapter: adapter.clone(),
                params: brand.params().clone(),
            })
        })
}

/// Whether `brand` is paid inside its own app's browser only (WeChat Pay's JSAPI needs
/// WeixinJSBridge and WeChat's OAuth: an ordinary browser cannot pay with it).
fn needs_own_browser(state: &AppState, brand: &Brand, currency: Currency) -> bool {
    static_route(state, brand, currency).is_some_and(|r| mode_for(r.adapter_id) == PayMode::Jsapi)
}

/// What the wallet picker offers an ordinary browser, in the picker's order, and
/// whether a brand payable only in its own app's browser was left out (the page then
/// says how to pay with it).
pub fn picker_brands(state: &AppState, currency: Currency) -> (Vec<&Brand>, bool) {
    let payable = state
        .wallets
        .brands
        .enabled()
        .filter(|b| static_route(state, b, currency).is_some());
    let (own_browser, offered): (Vec<&Brand>, Vec<&Brand>) =
        payable.partition(|b| needs_own_browser(state, b, currency));
    (offered, !own_browser.is_empty())
}

/// The brand a submitted form pays with: the in-app browser's when recognised, else
/// the picker's choice — only a brand the picker offers.
pub fn chosen_brand<'a>(
    state: &'a AppState,
    user_agent: &str,
    choice: Option<&str>,
    currency: Currency,
) -> Option<&'a Brand> {
    if let Some(brand) = detect_brand(state, user_agent, currency) {
        return Some(brand);
    }
    let brand = state.wallets.brands.get(choice?)?;
    (static_route(state, brand, currency).is_some() && !needs_own_browser(state, brand, currency))
        .then_some(brand)
}

/// The brand whose in-app browser this is, when it can pay in `currency`.
pub fn detect_brand<'a>(
    state: &'a AppState,
    user_agent: &str,
    currency: Currency,
) -> Option<&'a Brand> {
    state
        .wallets
        .brands
        .detect_by_user_agent(user_agent)
        .filter(|b| static_route(state, b, currency).is_some())
}

/// The smallest and largest amount a shopper may pay, minor units.
fn bounds(state: &AppState) -> (i64, i64) {
    (
        state.settings.shopper.min_amount_minor,
        state.settings.payments.max_amount_minor,
    )
}

/// A typed amount in the merchant's currency, within the bounds (`amount` module).
pub fn typed_amount(
    state: &AppState,
    input: &str,
    currency: Currency,
) -> Result<Money, AmountError> {
    let (min, max) = bounds(state);
    amount::parse_amount(input, currency, min, max)
}

/// An amount fixed by the merchant (a plate's, a gateway order's), checked against the
/// same bounds at pay time: limits may have changed since it was set.
pub fn fixed_amount(
    state: &AppState,
    minor: i64,
    currency: Currency,
) -> Result<Money, AmountError> {
    let (min, max) = bounds(state);
    let money = Money::from_minor(minor, currency).map_err(|_| AmountError::Invalid)?;
    amount::within_bounds(money, min, max)
}

/// Outcome of creating the plate order for a nonce.
pub enum Created {
    /// This request created it.
    New(Order),
    /// It existed with the same amount and wallet: a double tap or retry.
    Existing(Order),
    /// It existed with another amount or wallet: the form was reused (back button).
    Conflict,
}

/// Creates the order of (plate, nonce), or finds the one an earlier submit created.
pub async fn create_plate_order(
    state: &AppState,
    merchant: &Merchant,
    plate: &Plate,
    nonce: &str,
    amount: Money,
    route: &Route,
) -> Result<Created, ApiError> {
    let id = order_id_for(state, merchant, &plate.id, nonce);
    if let Some(existing) = state.store.order(&id).await? {
        return Ok(same_order(existing, amount, route));
    }
    let now = state.clock.now_ms();
    let description = order_description(plate, merchant);
    let order = Order {
        id: id.clone(),
        merchant_id: merchant.id.clone(),
        plate_id: Some(plate.id.clone()),
        amount_minor: amount.minor(),
        currency: amount.currency(),
        description,
        reference: None,
        mode: OrderMode::StaticScan,
        fee_bps: payments::checked_fee_bps(state, merchant, route.brand.as_deref())?,
        brand: route.brand.clone(),
        adapter: Some(route.adapter_id.as_str().to_owned()),
        status: OrderStatus::Created,
        paid_late: false,
        wallet_ref: None,
        pay_action: None,
        fee_minor: 0,
        refunded_minor: 0,
        refund_pending_minor: 0,
        review: None,
        expires_at: now + state.settings.payments.order_ttl_secs * 1000,
        next_check_at: Some(now + state.settings.payments.first_check_after_ms),
        paid_at: None,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    match state
        .store
        .commit(&payments::insert_change(&order), now)
        .await?
    {
        CommitOutcome::Applied => Ok(Created::New(order)),
        // A concurrent submit of the same form won the insert.
        _ => {
            let existing = state
                .store
                .order(&id)
                .await?
                .ok_or_else(|| ApiError::internal("plate order vanished"))?;
            Ok(same_order(existing, amount, route))
        }
    }
}

fn same_order(existing: Order, amount: Money, route: &Route) -> Created {
    if existing.amount_minor == amount.minor()
        && existing.currency == amount.currency()
        && existing.brand == route.brand
    {
        Created::Existing(existing)
    } else {
        Created::Conflict
    }
}

/// What the wallet shows the shopper: the plate label, else the merchant's name.
fn order_description(plate: &Plate, merchant: &Merchant) -> String {
    let label = plate.label.trim();
    let text = if label.is_empty() {
        merchant.name.as_str()
    } else {
        label
    };
    let clean: String = text.chars().filter(|c| !c.is_control()).take(127).collect();
    if clean.is_empty() {
        "Payment".to_owned()
    } else {
        clean
    }
}

/// The route an existing plate order was created with (its brand, as routed now).
pub fn route_of(state: &AppState, order: &Order) -> Option<Route> {
    let brand = state.wallets.brands.get(order.brand.as_deref()?)?;
    static_route(state, brand, order.currency)
}

/// Starts a redirect-paid order at its wallet (once: an order past `created` is
/// returned as it is). `user_agent` is passed verbatim (Alipay+ Entry Code needs it).
pub async fn start_redirect(
    state: &AppState,
    merchant: &Merchant,
    order: Order,
    route: &Route,
    user_agent: &str,
) -> Result<Order, ApiError> {
    if order.status != OrderStatus::Created {
        return Ok(order);
    }
    payments::start_at_wallet(
        state,
        merchant,
        order,
        route,
        PayMode::StaticEntry,
        None,
        Some(user_agent.to_owned()),
    )
    .await
}

/// Starts a WeChat JSAPI order for the shopper's `openid` (once).
pub async fn start_jsapi(
    state: &AppState,
    merchant: &Merchant,
    order: Order,
    route: &Route,
    openid: String,
) -> Result<Order, ApiError> {
    if order.status != OrderStatus::Created {
        return Ok(order);
    }
    payments::start_at_wallet(
        state,
        merchant,
        order,
        route,
        PayMode::Jsapi,
        Some(openid),
        None,
    )
    .await
}

/// The redirect URL of an order's pay action, if it has one.
pub fn redirect_url(order: &Order) -> Option<String> {
    let action = order.pay_action.as_ref()?;
    (action["type"] == "redirect")
        .then(|| action["url"].as_str().map(str::to_owned))
        .flatten()
}

/// The JSAPI parameters of an order's pay action, if it has them.
pub fn jsapi_params(order: &Order) -> Option<Vec<(String, String)>> {
    let action = order.pay_action.as_ref()?;
    if action["type"] != "jsapi" {
        return None;
    }
    let params = action["params"].as_object()?;
    Some(
        params
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect(),
    )
}

/// A dynamic order created without a wallet (`POST /v1/orders` with neither `wallet`
/// nor `auth_code`) that no shopper has started yet: its gateway URL shows the Pay
/// page.
pub fn awaits_wallet_choice(order: &Order) -> bool {
    order.mode == OrderMode::DynamicQr
        && order.plate_id.is_none()
        && order.status == OrderStatus::Created
        && order.pay_action.is_none()
}

/// Outcome of routing a gateway order to the shopper's wallet.
pub enum Routed {
    /// Routed to this route (now, or by an earlier submit of the same choice).
    Ready(Order),
    /// Another wallet was chosen first (another shopper, another tab): the order stays
    /// with it, so two wallets never hold the same payment.
    Taken(Order),
}

/// Fixes a gateway order's brand, adapter and fee (the merchant's rate for that
/// brand) before it is started at the wallet — once, by compare-and-set, so two
/// concurrent choices cannot both start it.
pub async fn route_gateway_order(
    state: &AppState,
    merchant: &Merchant,
    order: Order,
    route: &Route,
) -> Result<Routed, ApiError> {
    let adapter = route.adapter_id.as_str().to_owned();
    let mut current = order;
    for _ in 0..8 {
        if current.adapter.is_some() {
            let same = current.adapter.as_deref() == Some(adapter.as_str())
                && current.brand == route.brand;
            return Ok(if same {
                Routed::Ready(current)
            } else {
                Routed::Taken(current)
            });
        }
        let now = state.clock.now_ms();
        let mut next = current.clone();
        next.brand = route.brand.clone();
        next.adapter = Some(adapter.clone());
        next.fee_bps = payments::checked_fee_bps(state, merchant, route.brand.as_deref())?;
        next.version = current.version + 1;
        next.updated_at = now;
        let change = OrderChange {
            order: next.clone(),
            expected_version: current.version,
            dedupe_key: None,
            refund: None,
            entry: None,
            event: None,
        };
        match state.store.commit(&change, now).await? {
            CommitOutcome::Applied => return Ok(Routed::Ready(next)),
            CommitOutcome::Duplicate | CommitOutcome::VersionConflict => {
                current = state
                    .store
                    .order(&current.id)
                    .await?
                    .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound))?;
            }
        }
    }
    Err(ApiError::with(
        ErrorCode::RequestInProgress,
        "the order is changing; retry",
    ))
}

/// Ends an open order the shopper gave up on (cancelled the WeChat sheet, chose another
/// wallet) through the payments service: asked at the wallet first, so a payment that
/// landed meanwhile is settled, never lost; otherwise closed there and expired here.
pub async fn cancel_order(state: &AppState, order: &Order) -> Result<Order, ApiError> {
    if order.status.is_terminal() {
        return Ok(order.clone());
    }
    match payments::close_order(state, order).await {
        Ok(closed) => Ok(closed),
        Err(e) if e.code == ErrorCode::OrderNotOpen => state
            .store
            .order(&order.id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound)),
        Err(e) => Err(e),
    }
}

/// The gateway URL of an order: what its QR encodes when no wallet was given, the page
/// any wallet's scanner opens.
pub fn order_url(state: &AppState, order: &Order) -> String {
    format!("{}/o/{}", state.settings.server.public_base_url, order.id)
}

/// What an order's QR code encodes (`pay.qr` in the order JSON, `qr.png` / `qr.svg`):
/// the wallet's own QR string when the order was created with `wallet`, the wallet's
/// cashier URL for a wallet that only redirects (Kakao Pay), else the gateway URL. A
/// gateway order keeps its gateway URL after a shopper chose a wallet (that start is a
/// redirect or JSAPI, never a QR). `None` for plate orders (the plate is the QR) and
/// customer-code orders (the shopper showed a code).
pub fn qr_payload(state: &AppState, order: &Order) -> Option<String> {
    if order.mode != OrderMode::DynamicQr {
        return None;
    }
    let action = order.pay_action.as_ref();
    let kind = action.and_then(|a| a["type"].as_str());
    let wallet_has_qr = order
        .adapter
        .as_deref()
        .and_then(|a| AdapterId::parse(a).ok())
        .and_then(|id| state.wallets.adapter(id))
        .is_some_and(|a| a.capabilities().supports_mode(PayMode::DynamicQr));
    let wallet_string = match kind {
        Some("qr") => action.and_then(|a| a["data"].as_str()),
        Some("redirect") if !wallet_has_qr => action.and_then(|a| a["url"].as_str()),
        _ => None,
    };
    Some(
        wallet_string
            .map(str::to_owned)
            .unwrap_or_else(|| order_url(state, order)),
    )
}
