//! The static-plate shopper flow (DESIGN §4 "Static scan"): which plate and merchant a
//! scan names, which wallet routes fit the merchant's currency, checking a typed
//! amount, creating the plate's order idempotently (its id derived from the plate and
//! the form's nonce, so a double tap or a browser retry is the SAME order) and starting
//! it at the wallet. Never sees actix types; never trusts the form for a fixed amount.

use std::net::IpAddr;

use sesame_adapters::brands::Brand;
use sesame_adapters::contract::{AdapterId, PayMode};
use sesame_adapters::money::{Currency, Money, MoneyError};

use crate::domain::ids::{base32, random_bytes};
use crate::domain::order::{Order, OrderMode, OrderStatus};
use crate::domain::plate::Plate;
use crate::domain::{Merchant, OrderId, PlateId};
use crate::error::ApiError;
use crate::services::payments;
use crate::services::rate_limit::RateLimiter;
use crate::startup::AppState;
use crate::store::CommitOutcome;
use crate::wallets::Route;

/// The rate limiters of the public pages (see `[shopper]` in the configuration).
pub struct ShopperLimits {
    pub per_ip: RateLimiter<IpAddr>,
    pub per_plate: RateLimiter<PlateId>,
}

impl ShopperLimits {
    pub fn new(settings: &crate::config::ShopperSettings) -> ShopperLimits {
        ShopperLimits {
            per_ip: RateLimiter::new(settings.rate_per_ip_per_minute, settings.rate_limit_entries),
            per_plate: RateLimiter::new(
                settings.rate_per_plate_per_minute,
                settings.rate_limit_entries,
            ),
        }
    }
}

/// A fresh form nonce (128 random bits).
pub fn new_nonce() -> String {
    base32(&random_bytes::<16>())
}

/// Nonces we issued look like this; anything else is not a form of ours.
pub fn nonce_is_valid(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric())
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

/// The brands a shopper can pick on this merchant's plate, in the picker's order.
pub fn payable_brands(state: &AppState, currency: Currency) -> Vec<&Brand> {
    state
        .wallets
        .brands
        .enabled()
        .filter(|b| static_route(state, b, currency).is_some())
        .collect()
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

/// Why a typed amount is refused (shown next to the field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountError {
    Empty,
    Invalid,
    TooManyDecimals { allowed: u32 },
    BelowMinimum(Money),
    AboveMaximum(Money),
}

/// A typed amount in the merchant's currency, within `[shopper.min_amount_minor,
/// payments.max_amount_minor]`. A comma decimal separator is accepted (as typed in
/// Portuguese); spaces around are ignored.
pub fn parse_amount(
    state: &AppState,
    input: &str,
    currency: Currency,
) -> Result<Money, AmountError> {
    let text = input.trim().replace(',', ".");
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    let min = state.settings.shopper.min_amount_minor;
    let max = state.settings.payments.max_amount_minor;
    let bound = |minor: i64| Money::from_minor(minor, currency).map_err(|_| AmountError::Invalid);
    let money = match Money::parse(&text, currency) {
        Ok(m) => m,
        Err(MoneyError::TooManyDecimals { allowed, .. }) => {
            return Err(AmountError::TooManyDecimals { allowed });
        }
        Err(MoneyError::Zero) => return Err(AmountError::BelowMinimum(bound(min)?)),
        Err(MoneyError::TooLarge) => return Err(AmountError::AboveMaximum(bound(max)?)),
        Err(_) => return Err(AmountError::Invalid),
    };
    if money.minor() < min {
        return Err(AmountError::BelowMinimum(bound(min)?));
    }
    if money.minor() > max {
        return Err(AmountError::AboveMaximum(bound(max)?));
    }
    Ok(money)
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
        fee_bps: payments::fee_bps_for(state, merchant, route.brand.as_deref()),
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
