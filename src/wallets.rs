//! The wallet adapters the gateway routes to, and the brand registry.
//!
//! Built from `[wallets] mode` and `[adapters.<id>]` (`config::WalletMode`): an
//! enabled adapter with a `base_url` talks to that host with its configured
//! credentials (keys inline or `@file`, read and checked here, at startup). In
//! `sandbox` mode (local and test only) an adapter without one talks over HTTP to its
//! wallet's sandbox, mounted in this same server under `/sandbox/<adapter>/`; in
//! `live` mode every enabled adapter needs its host and credentials or the gateway
//! does not start; in `disabled` mode there are no adapters and payments are refused
//! with `wallet_unavailable`. Routing picks the adapter that can take each payment
//! (currency and mode), preferring a brand's direct adapter over its rail.
//! Must never: fall back to a sandbox outside sandbox mode, or put key material into
//! an error or a log line.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use sesame_adapters::alipay::sandbox::AlipaySandbox;
use sesame_adapters::alipay::{AlipayAdapter, AlipayConfig};
use sesame_adapters::alipay_plus::sandbox::AlipayPlusSandbox;
use sesame_adapters::alipay_plus::{AlipayPlusAdapter, AlipayPlusConfig};
use sesame_adapters::brands::{Brand, BrandRegistry, Need};
use sesame_adapters::contract::{AdapterError, AdapterId, WalletAdapter};
use sesame_adapters::crypto::{Aes256GcmKey, RsaPrivateKey, RsaPublicKey};
use sesame_adapters::kakao_pay::sandbox::KakaoPaySandbox;
use sesame_adapters::kakao_pay::{KakaoPayAdapter, KakaoPayConfig, SecretKey};
use sesame_adapters::money::Currency;
use sesame_adapters::sandbox::{LocalKeys, LocalKeysPem, TimeScale};
use sesame_adapters::wechat_pay::sandbox::WechatPaySandbox;
use sesame_adapters::wechat_pay::wire::SecretText;
use sesame_adapters::wechat_pay::{ClientIdentity, WechatPayAdapter, WechatPayConfig};
use sesame_adapters::{alipay, alipay_plus, kakao_pay, wechat_pay};

use crate::config::{
    AdaptersSettings, AlipayAdapterSettings, AlipayPlusAdapterSettings, Credential,
    KakaoPayAdapterSettings, Settings, WalletMode, WalletSettings, WechatPayAdapterSettings,
};

pub struct Wallets {
    pub brands: BrandRegistry,
    adapters: BTreeMap<AdapterId, Arc<dyn WalletAdapter>>,
    /// Where each configured adapter sends its requests.
    endpoints: BTreeMap<AdapterId, String>,
    /// Kept concrete: the Kakao return route calls `approve`, outside the trait.
    pub kakao: Option<Arc<kakao_pay::KakaoPayAdapter>>,
    /// Kept concrete: the shopper pages call its OAuth (openid) and JSAPI helpers.
    pub wechat: Option<Arc<wechat_pay::WechatPayAdapter>>,
    /// Mounted under `/sandbox/<adapter>/` in sandbox mode.
    pub sandboxes: Option<Sandboxes>,
}

/// Where a payment goes: the brand the shopper holds and the adapter that speaks for it.
#[derive(Clone)]
pub struct Route {
    /// `None` while the brand is unknown (an ambiguous code: the wallet's answer names it).
    pub brand: Option<String>,
    pub adapter_id: AdapterId,
    pub adapter: Arc<dyn WalletAdapter>,
    pub params: BTreeMap<String, String>,
}

impl Wallets {
    pub fn new(
        brands: BrandRegistry,
        adapters: BTreeMap<AdapterId, Arc<dyn WalletAdapter>>,
    ) -> Wallets {
        Wallets {
            brands,
            adapters,
            endpoints: BTreeMap::new(),
            kakao: None,
            wechat: None,
            sandboxes: None,
        }
    }

    pub fn adapter(&self, id: AdapterId) -> Option<&Arc<dyn WalletAdapter>> {
        self.adapters.get(&id)
    }

    pub fn is_configured(&self, id: AdapterId) -> bool {
        self.adapters.contains_key(&id)
    }

    pub fn configured(&self) -> Vec<AdapterId> {
        self.adapters.keys().copied().collect()
    }

    /// The base URL a configured adapter talks to (a wallet host or a sandbox).
    pub fn endpoint(&self, id: AdapterId) -> Option<&str> {
        self.endpoints.get(&id).map(String::as_str)
    }

    /// Is `id` configured here and able to take a payment that needs `need`?
    pub fn can_take(&self, id: AdapterId, need: &Need) -> bool {
        self.adapters
            .get(&id)
            .is_some_and(|adapter| need.met_by(&adapter.capabilities()))
    }

    /// The route of an enabled brand for a payment that needs `need`: its direct
    /// adapter when that can take the payment, else its rail when it can, else none.
    /// (Kakao Pay in MOP, or a Kakao Pay payment code, goes through Alipay+.)
    pub fn route_brand(&self, brand: &Brand, need: &Need) -> Option<Route> {
        if !brand.enabled() {
            return None;
        }
        let adapter_id = brand.route(|id| self.can_take(id, need))?;
        self.route(Some(brand), adapter_id)
    }

    /// [`Wallets::route_brand`] for an API request naming the brand. When no adapter
    /// of the brand can take the payment, the route it would take regardless, so the
    /// caller can tell the merchant what does not fit (`wechat_pay does not accept
    /// KRW`) rather than `wallet_unavailable`.
    pub fn route_brand_id(&self, brand_id: &str, need: &Need) -> Option<Route> {
        let brand = self.brands.get(brand_id).filter(|b| b.enabled())?;
        self.route_brand(brand, need).or_else(|| {
            let adapter_id = brand.route(|id| self.is_configured(id))?;
            self.route(Some(brand), adapter_id)
        })
    }

    /// The route of a customer-presented payment code in `currency`, by the registry's
    /// rules and what the configured adapters can take. An ambiguous code goes to the
    /// shared rail (Alipay+ identifies the wallet itself), or, with that rail not
    /// configured, to the brand that claims it (Alipay CN). As with
    /// [`Wallets::route_brand_id`], a route that cannot take the currency is returned
    /// when there is no other, for the caller to explain.
    pub fn route_code(&self, code: &str, currency: Currency) -> Option<Route> {
        let need = Need::customer_code(currency);
        let found = self
            .brands
            .route_code(code, |id| self.can_take(id, &need))
            .or_else(|| self.brands.route_code(code, |id| self.is_configured(id)))?;
        self.route(found.brand, found.adapter)
    }

    fn route(&self, brand: Option<&Brand>, adapter_id: AdapterId) -> Option<Route> {
        Some(Route {
            brand: brand.map(|b| b.id().to_owned()),
            adapter_id,
            adapter: self.adapters.get(&adapter_id)?.clone(),
            params: brand.map(|b| b.params().clone()).unwrap_or_default(),
        })
    }

    fn insert(&mut self, id: AdapterId, adapter: Arc<dyn WalletAdapter>, endpoint: String) {
        tracing::info!(adapter = %id, base_url = %endpoint, "wallet adapter configured");
        self.adapters.insert(id, adapter);
        self.endpoints.insert(id, endpoint);
    }
}

/// The four sandboxes, mountable in any actix app.
#[derive(Clone)]
pub struct Sandboxes {
    pub alipay: Arc<AlipaySandbox>,
    pub alipay_plus: Arc<AlipayPlusSandbox>,
    pub wechat_pay: Arc<WechatPaySandbox>,
    pub kakao_pay: Arc<KakaoPaySandbox>,
}

impl Sandboxes {
    /// Mounts every sandbox under `/sandbox/<adapter>`.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        let s = self.clone();
        cfg.service(web::scope("/sandbox/alipay").configure(|c| s.alipay.configure(c)))
            .service(web::scope("/sandbox/alipay_plus").configure(|c| s.alipay_plus.configure(c)))
            .service(web::scope("/sandbox/wechat_pay").configure(|c| s.wechat_pay.configure(c)))
            .service(web::scope("/sandbox/kakao_pay").configure(|c| s.kakao_pay.configure(c)));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalletSetupError {
    #[error("wallet brand registry: {0}")]
    Registry(#[from] sesame_adapters::brands::RegistryError),
    #[error("sandbox keys in {path}: {reason}")]
    Keys { path: String, reason: String },
    #[error("adapter {adapter}: {reason}")]
    Adapter {
        adapter: &'static str,
        reason: String,
    },
    /// Credentials an enabled adapter needs and does not have.
    #[error(
        "wallets.mode = \"{mode}\": {} not set. Set each in the configuration or in the environment ({}; a value may be @/path/to/file), or switch the adapter off with adapters.<id>.enabled = false",
        .keys.join(", "),
        env_example(.keys)
    )]
    Missing {
        mode: &'static str,
        keys: Vec<String>,
    },
    /// A credential that cannot be read or is not what its key says (never its value).
    #[error("{key}: {reason}")]
    Credential { key: String, reason: String },
}

/// `adapters.alipay.app_id` → `SESAME__ADAPTERS__ALIPAY__APP_ID=...`.
fn env_example(keys: &[String]) -> String {
    let key = keys
        .first()
        .map(String::as_str)
        .unwrap_or("adapters.<id>.<key>");
    format!(
        "SESAME__{}=...",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

pub const KEYS_FILE: &str = "sandbox_keys.json";

/// Builds the wallets for `settings`. In sandbox mode `own_base_url` (where this
/// gateway listens) locates the sandboxes unless `wallets.sandbox_base_url` is set.
pub fn build(settings: &Settings, own_base_url: &str) -> Result<Wallets, WalletSetupError> {
    let brands = BrandRegistry::default_registry()?;
    let mode = settings.wallets.mode;
    let mut wallets = Wallets::new(brands, BTreeMap::new());
    if mode == WalletMode::Disabled {
        return Ok(wallets);
    }
    let a = &settings.adapters;
    let missing = missing_keys(a, mode);
    if !missing.is_empty() {
        return Err(WalletSetupError::Missing {
            mode: mode.as_str(),
            keys: missing,
        });
    }
    let mut local = match mode {
        WalletMode::Sandbox => Some(local_wallets(
            &settings.wallets,
            &settings.store.path,
            own_base_url,
        )?),
        _ => None,
    };
    let sandbox_url = |id: AdapterId| {
        local
            .as_ref()
            .map(|l| format!("{}/{id}", l.base))
            .unwrap_or_default()
    };
    let (alipay_url, plus_url, wechat_url, kakao_url) = (
        sandbox_url(AdapterId::Alipay),
        sandbox_url(AdapterId::AlipayPlus),
        sandbox_url(AdapterId::WechatPay),
        sandbox_url(AdapterId::KakaoPay),
    );
    if let Some((adapter, url)) = pick(
        a.alipay.enabled,
        &a.alipay.base_url,
        local.as_mut().and_then(|l| l.alipay.take()),
        alipay_url,
        || alipay_adapter(&a.alipay),
    )? {
        wallets.insert(AdapterId::Alipay, Arc::new(adapter), url);
    }
    if let Some((adapter, url)) = pick(
        a.alipay_plus.enabled,
        &a.alipay_plus.base_url,
        local.as_mut().and_then(|l| l.alipay_plus.take()),
        plus_url,
        || alipay_plus_adapter(&a.alipay_plus),
    )? {
        wallets.insert(AdapterId::AlipayPlus, Arc::new(adapter), url);
    }
    if let Some((adapter, url)) = pick(
        a.wechat_pay.enabled,
        &a.wechat_pay.base_url,
        local.as_mut().and_then(|l| l.wechat_pay.take()),
        wechat_url,
        || wechat_pay_adapter(&a.wechat_pay),
    )? {
        let adapter = Arc::new(adapter);
        wallets.wechat = Some(adapter.clone());
        wallets.insert(AdapterId::WechatPay, adapter, url);
    }
    if let Some((adapter, url)) = pick(
        a.kakao_pay.enabled,
        &a.kakao_pay.base_url,
        local.as_mut().and_then(|l| l.kakao_pay.take()),
        kakao_url,
        || kakao_pay_adapter(&a.kakao_pay),
    )? {
        let adapter = Arc::new(adapter);
        wallets.kakao = Some(adapter.clone());
        wallets.insert(AdapterId::KakaoPay, adapter, url);
    }
    wallets.sandboxes = local.map(|l| l.sandboxes);
    Ok(wallets)
}

/// Only the sandboxes (`sesame sandbox`), reached at `own_base_url` unless
/// `sandbox_base_url` is set, with the keys of `data_dir`.
pub fn sandboxes(
    settings: &WalletSettings,
    data_dir: &Path,
    own_base_url: &str,
) -> Result<Sandboxes, WalletSetupError> {
    Ok(local_wallets(settings, data_dir, own_base_url)?.sandboxes)
}

/// An enabled adapter: to its `base_url` when set (`remote`), else to its sandbox.
fn pick<A>(
    enabled: bool,
    base_url: &str,
    sandboxed: Option<A>,
    sandbox_url: String,
    remote: impl FnOnce() -> Result<A, WalletSetupError>,
) -> Result<Option<(A, String)>, WalletSetupError> {
    if !enabled {
        return Ok(None);
    }
    if !base_url.is_empty() {
        return Ok(Some((remote()?, base_url.to_owned())));
    }
    // `missing_keys` refuses an empty base_url outside sandbox mode, so a sandbox
    // adapter exists here; kept total all the same.
    Ok(sandboxed.map(|adapter| (adapter, sandbox_url)))
}

/// Every key an enabled adapter needs and lacks: its credentials when it talks to a
/// `base_url`, and in live mode the `base_url` itself.
fn missing_keys(a: &AdaptersSettings, mode: WalletMode) -> Vec<String> {
    let live = mode == WalletMode::Live;
    let mut missing = Vec::new();
    let mut check = |adapter: &str, enabled: bool, base_url: &str, keys: &[(&str, bool)]| {
        if !enabled || (base_url.is_empty() && !live) {
            return;
        }
        let base = ("base_url", !base_url.is_empty());
        for (key, set) in std::iter::once(&base).chain(keys) {
            if !set {
                missing.push(format!("adapters.{adapter}.{key}"));
            }
        }
    };
    let id = |value: &str| !value.trim().is_empty();
    let s = &a.alipay;
    check(
        "alipay",
        s.enabled,
        &s.base_url,
        &[
            ("app_id", id(&s.app_id)),
            ("private_key", s.private_key.is_set()),
            ("wallet_public_key", s.wallet_public_key.is_set()),
        ],
    );
    let s = &a.alipay_plus;
    check(
        "alipay_plus",
        s.enabled,
        &s.base_url,
        &[
            ("client_id", id(&s.client_id)),
            ("private_key", s.private_key.is_set()),
            ("wallet_public_key", s.wallet_public_key.is_set()),
        ],
    );
    let s = &a.wechat_pay;
    check(
        "wechat_pay",
        s.enabled,
        &s.base_url,
        &[
            ("mchid", id(&s.mchid)),
            ("appid", id(&s.appid)),
            ("serial_no", id(&s.serial_no)),
            ("private_key", s.private_key.is_set()),
            ("api_v3_key", s.api_v3_key.is_set()),
            ("platform_serial", id(&s.platform_serial)),
            ("platform_public_key", s.platform_public_key.is_set()),
            ("api_v2_key", s.api_v2_key.is_set()),
            ("app_secret", s.app_secret.is_set()),
            // Micropay reverse (`/secapi/`) needs it; a local sandbox host does not.
            ("client_cert", !live || s.client_cert.is_set()),
        ],
    );
    let s = &a.kakao_pay;
    check(
        "kakao_pay",
        s.enabled,
        &s.base_url,
        &[("cid", id(&s.cid)), ("secret_key", s.secret_key.is_set())],
    );
    missing
}

/// Reads and checks one adapter's credentials; every error names the key.
struct Credentials {
    adapter: &'static str,
}

impl Credentials {
    fn key(&self, key: &str) -> String {
        format!("adapters.{}.{key}", self.adapter)
    }

    fn invalid(
        &self,
        key: &str,
        value: &Credential,
        reason: impl std::fmt::Display,
    ) -> WalletSetupError {
        WalletSetupError::Credential {
            key: format!("{} ({})", self.key(key), value.origin()),
            reason: reason.to_string(),
        }
    }

    /// The text of a credential, surrounding whitespace (a file's final newline) removed.
    fn text(&self, key: &str, value: &Credential) -> Result<String, WalletSetupError> {
        let text = value
            .read()
            .map_err(|e| self.invalid(key, value, format!("cannot be read: {e}")))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(self.invalid(key, value, "is empty"));
        }
        Ok(text.to_owned())
    }

    /// An RSA private key: PEM (PKCS#8 or PKCS#1) or bare base64 DER (the form the
    /// Alipay portals hand out).
    fn private_key(
        &self,
        key: &str,
        value: &Credential,
    ) -> Result<RsaPrivateKey, WalletSetupError> {
        let text = self.text(key, value)?;
        let parsed = if text.contains("-----BEGIN") {
            RsaPrivateKey::from_pem(&text)
        } else {
            RsaPrivateKey::from_base64_der(&text)
        };
        parsed.map_err(|e| self.invalid(key, value, format!("not a valid RSA private key: {e}")))
    }

    /// An RSA public key: PEM or bare base64 DER.
    fn public_key(&self, key: &str, value: &Credential) -> Result<RsaPublicKey, WalletSetupError> {
        let text = self.text(key, value)?;
        let parsed = if text.contains("-----BEGIN") {
            RsaPublicKey::from_pem(&text)
        } else {
            RsaPublicKey::from_base64_der(&text)
        };
        parsed.map_err(|e| self.invalid(key, value, format!("not a valid RSA public key: {e}")))
    }

    /// A 32-character ASCII key (WeChat's APIv3 and v2 keys), as its bytes.
    fn ascii_key_32(&self, key: &str, value: &Credential) -> Result<String, WalletSetupError> {
        let text = self.text(key, value)?;
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.invalid(
                key,
                value,
                format!(
                    "must be the 32-character key set in the WeChat Pay merchant platform (got {} characters)",
                    text.chars().count()
                ),
            ));
        }
        Ok(text)
    }

    fn adapter_error(&self) -> impl Fn(AdapterError) -> WalletSetupError + '_ {
        |e| WalletSetupError::Adapter {
            adapter: self.adapter,
            reason: reason(e),
        }
    }
}

/// Why an adapter refused a credential, without the "malformed wallet message" frame
/// (the credential came from the configuration, not from a wallet).
fn reason(e: AdapterError) -> String {
    match e {
        AdapterError::Malformed(message) => message,
        other => other.to_string(),
    }
}

/// `timeout_ms` as (connect timeout, whole-request timeout).
fn timeouts(timeout_ms: u64, default_connect: Duration) -> (Duration, Duration) {
    let timeout = Duration::from_millis(timeout_ms);
    (default_connect.min(timeout), timeout)
}

fn alipay_adapter(s: &AlipayAdapterSettings) -> Result<AlipayAdapter, WalletSetupError> {
    let c = Credentials { adapter: "alipay" };
    let mut config = AlipayConfig::new(
        s.base_url.as_str(),
        s.app_id.trim(),
        c.private_key("private_key", &s.private_key)?,
        c.public_key("wallet_public_key", &s.wallet_public_key)?,
    );
    (config.connect_timeout, config.timeout) =
        timeouts(s.timeout_ms, AlipayConfig::DEFAULT_CONNECT_TIMEOUT);
    AlipayAdapter::new(config).map_err(c.adapter_error())
}

fn alipay_plus_adapter(
    s: &AlipayPlusAdapterSettings,
) -> Result<AlipayPlusAdapter, WalletSetupError> {
    let c = Credentials {
        adapter: "alipay_plus",
    };
    let mut config = AlipayPlusConfig::new(
        &s.base_url,
        s.client_id.trim(),
        c.private_key("private_key", &s.private_key)?,
        c.public_key("wallet_public_key", &s.wallet_public_key)?,
    );
    config.key_version = s.key_version;
    (config.connect_timeout, config.timeout) = timeouts(s.timeout_ms, config.connect_timeout);
    AlipayPlusAdapter::new(config).map_err(c.adapter_error())
}

fn wechat_pay_adapter(s: &WechatPayAdapterSettings) -> Result<WechatPayAdapter, WalletSetupError> {
    let c = Credentials {
        adapter: "wechat_pay",
    };
    let serial_no = s.serial_no.trim();
    if serial_no.len() != 40 || !serial_no.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WalletSetupError::Credential {
            key: c.key("serial_no"),
            reason: "must be the 40-hex serial number of the merchant API certificate".into(),
        });
    }
    let merchant_key = c.private_key("private_key", &s.private_key)?;
    let api_v3 = c.ascii_key_32("api_v3_key", &s.api_v3_key)?;
    // The APIv3 key is used as it is typed: its 32 ASCII bytes are the AES-256 key.
    let api_v3_key = Aes256GcmKey::new(api_v3.as_bytes())
        .map_err(|e| c.invalid("api_v3_key", &s.api_v3_key, e))?;
    let client_identity = if s.client_cert.is_set() {
        let certificate = c.text("client_cert", &s.client_cert)?;
        let key = if s.client_key.is_set() {
            c.private_key("client_key", &s.client_key)?
        } else {
            c.private_key("private_key", &s.private_key)?
        };
        Some(
            ClientIdentity::new(&certificate, &key)
                .map_err(|e| c.invalid("client_cert", &s.client_cert, reason(e)))?,
        )
    } else if s.client_key.is_set() {
        return Err(c.invalid(
            "client_key",
            &s.client_key,
            "is set, but client_cert is not",
        ));
    } else {
        None
    };
    let or_base = |url: &str| {
        if url.is_empty() {
            s.base_url.clone()
        } else {
            url.to_owned()
        }
    };
    let (connect_timeout, request_timeout) = timeouts(s.timeout_ms, Duration::from_secs(3));
    let config = WechatPayConfig {
        api_base_url: s.base_url.clone(),
        oauth_base_url: or_base(&s.oauth_base_url),
        sns_base_url: or_base(&s.sns_base_url),
        appid: s.appid.trim().to_owned(),
        mchid: s.mchid.trim().to_owned(),
        merchant_serial_no: serial_no.to_owned(),
        merchant_key,
        wallet_public_key_id: s.platform_serial.trim().to_owned(),
        wallet_public_key: c.public_key("platform_public_key", &s.platform_public_key)?,
        api_v3_key,
        api_v2_key: SecretText::new(c.ascii_key_32("api_v2_key", &s.api_v2_key)?),
        app_secret: SecretText::new(c.text("app_secret", &s.app_secret)?),
        terminal_ip: s.terminal_ip.trim().to_owned(),
        connect_timeout,
        request_timeout,
        // WeChat's POS guidance: ask every 5 s, reverse after 30 s.
        micropay_poll_interval: Duration::from_secs(5),
        micropay_wait: Duration::from_secs(30),
        client_identity,
    };
    WechatPayAdapter::new(config).map_err(c.adapter_error())
}

fn kakao_pay_adapter(s: &KakaoPayAdapterSettings) -> Result<KakaoPayAdapter, WalletSetupError> {
    let c = Credentials {
        adapter: "kakao_pay",
    };
    let secret = SecretKey::new(c.text("secret_key", &s.secret_key)?)
        .map_err(|e| c.invalid("secret_key", &s.secret_key, reason(e)))?;
    let mut config = KakaoPayConfig::new(&s.base_url, s.cid.trim(), secret);
    (config.connect_timeout, config.timeout) = timeouts(s.timeout_ms, config.connect_timeout);
    KakaoPayAdapter::new(config).map_err(c.adapter_error())
}

/// The in-process sandboxes and an adapter for each, paired by the data dir's keys.
/// `build` takes the adapters it uses.
struct LocalWallets {
    base: String,
    alipay: Option<AlipayAdapter>,
    alipay_plus: Option<AlipayPlusAdapter>,
    wechat_pay: Option<WechatPayAdapter>,
    kakao_pay: Option<KakaoPayAdapter>,
    sandboxes: Sandboxes,
}

fn local_wallets(
    settings: &WalletSettings,
    data_dir: &Path,
    own_base_url: &str,
) -> Result<LocalWallets, WalletSetupError> {
    let base = if settings.sandbox_base_url.is_empty() {
        format!("{own_base_url}/sandbox")
    } else {
        settings.sandbox_base_url.trim_end_matches('/').to_owned()
    };
    let keys = load_or_create_keys(data_dir)?;
    let time = TimeScale {
        speedup: settings.sandbox_speedup.max(1),
    };
    let key = |id: AdapterId| {
        keys.get(id.as_str()).ok_or_else(|| WalletSetupError::Keys {
            path: data_dir.join(KEYS_FILE).display().to_string(),
            reason: format!("no keys for {id}"),
        })
    };
    let fail = |adapter: &'static str| {
        move |e: AdapterError| WalletSetupError::Adapter {
            adapter,
            reason: e.to_string(),
        }
    };
    let (alipay_adapter, alipay_sandbox) =
        alipay::sandbox::local(&format!("{base}/alipay"), key(AdapterId::Alipay)?, time)
            .map_err(fail("alipay"))?;
    let (plus_adapter, plus_sandbox) = alipay_plus::sandbox::local(
        &format!("{base}/alipay_plus"),
        key(AdapterId::AlipayPlus)?,
        time,
    )
    .map_err(fail("alipay_plus"))?;
    let (wechat_adapter, wechat_sandbox) = wechat_pay::sandbox::local(
        &format!("{base}/wechat_pay"),
        key(AdapterId::WechatPay)?,
        time,
    )
    .map_err(fail("wechat_pay"))?;
    let (kakao_adapter, kakao_sandbox) = kakao_pay::sandbox::local(
        &format!("{base}/kakao_pay"),
        key(AdapterId::KakaoPay)?,
        time,
    )
    .map_err(fail("kakao_pay"))?;
    Ok(LocalWallets {
        base,
        alipay: Some(alipay_adapter),
        alipay_plus: Some(plus_adapter),
        wechat_pay: Some(wechat_adapter),
        kakao_pay: Some(kakao_adapter),
        sandboxes: Sandboxes {
            alipay: alipay_sandbox,
            alipay_plus: plus_sandbox,
            wechat_pay: wechat_sandbox,
            kakao_pay: kakao_sandbox,
        },
    })
}

/// Reads `<data_dir>/sandbox_keys.json`, or generates every adapter's keys and writes
/// the file (mode 0600) on first start. A corrupt file is an error, never replaced.
pub fn load_or_create_keys(
    data_dir: &Path,
) -> Result<BTreeMap<String, LocalKeys>, WalletSetupError> {
    let path = data_dir.join(KEYS_FILE);
    let error = |reason: String| WalletSetupError::Keys {
        path: path.display().to_string(),
        reason,
    };
    let pems: BTreeMap<String, LocalKeysPem> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| error(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut pems = BTreeMap::new();
            for id in AdapterId::ALL {
                let mut keys = LocalKeys::generate().map_err(|e| error(e.to_string()))?;
                keys.secret = ascii_secret();
                pems.insert(
                    id.as_str().to_owned(),
                    keys.to_pem().map_err(|e| error(e.to_string()))?,
                );
            }
            let bytes = serde_json::to_vec_pretty(&pems).map_err(|e| error(e.to_string()))?;
            write_private(&path, &bytes).map_err(|e| error(e.to_string()))?;
            pems
        }
        Err(e) => return Err(error(e.to_string())),
    };
    pems.iter()
        .map(|(id, pem)| {
            LocalKeys::from_pem(pem)
                .map(|keys| (id.clone(), keys))
                .map_err(|e| error(e.to_string()))
        })
        .collect()
}

/// 32 random letters and digits: the shape of WeChat's APIv3 key, which is typed in
/// the merchant platform and used as its ASCII bytes. Local keys have that shape so
/// a gateway configured by `[adapters.wechat_pay] api_v3_key` can talk to a sandbox.
fn ascii_secret() -> [u8; 32] {
    use rand::Rng;
    let mut secret = [0u8; 32];
    for (byte, c) in secret
        .iter_mut()
        .zip(rand::rng().sample_iter(rand::distr::Alphanumeric))
    {
        *byte = c;
    }
    secret
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        crate::services::admin_token::create_private_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_secrets_have_the_shape_of_an_api_v3_key() {
        let secret = ascii_secret();
        assert!(secret.iter().all(u8::is_ascii_alphanumeric));
        assert_ne!(secret, ascii_secret());
    }

    #[test]
    fn the_missing_keys_error_names_each_key_and_its_environment_variable() {
        let error = WalletSetupError::Missing {
            mode: "live",
            keys: vec![
                "adapters.alipay.app_id".into(),
                "adapters.kakao_pay.secret_key".into(),
            ],
        };
        let text = error.to_string();
        assert!(text.starts_with("wallets.mode = \"live\": adapters.alipay.app_id, adapters.kakao_pay.secret_key not set"), "{text}");
        assert!(
            text.contains("SESAME__ADAPTERS__ALIPAY__APP_ID=..."),
            "{text}"
        );
        assert!(text.contains("enabled = false"), "{text}");
    }
}
