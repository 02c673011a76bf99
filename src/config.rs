//! Configuration: `config/default.toml`, then the environment overlay
//! (`config/<env>.toml`, env from `SESAME_ENV`, default `local`), then an optional
//! `--config FILE`, then environment variables `SESAME__SECTION__KEY`.
//!
//! Owns the typed settings and `masked()` for printing them. Must never: print or
//! log a secret (admin token, plate secret, Redis password, wallet credentials).
//!
//! Wallet credentials (`[adapters.<id>]`) are [`Credential`]s: inline text (a PEM,
//! a key) or `@/path/to/file`, read when the wallets are built (`wallets::build`).
//! Variables under `SESAME__ADAPTERS__` are taken as text, never parsed as numbers,
//! so an id with a leading zero or an all-digit key stays exactly as written.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Local,
    Test,
    Production,
}

impl Environment {
    pub fn from_env() -> Result<Environment, ConfigError> {
        match std::env::var("SESAME_ENV").as_deref() {
            Err(_) | Ok("local") | Ok("") => Ok(Environment::Local),
            Ok("test") => Ok(Environment::Test),
            Ok("production") => Ok(Environment::Production),
            Ok(other) => Err(ConfigError(format!(
                "SESAME_ENV={other:?}: expected local, test or production"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Local => "local",
            Environment::Test => "test",
            Environment::Production => "production",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// Shortest admin token accepted from configuration.
pub const MIN_ADMIN_TOKEN_LEN: usize = 24;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub environment: Environment,
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub admin: AdminSettings,
    pub qr: QrSettings,
    pub log: LogSettings,
    pub idempotency: IdempotencySettings,
    pub wallets: WalletSettings,
    pub adapters: AdaptersSettings,
    pub payments: PaymentSettings,
    pub workers: WorkerSettings,
    pub shopper: ShopperSettings,
}

/// The public shopper pages (`/q/*`, `/o/*`). See README "Shopper pages" for how the
/// rate limits fit together.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopperSettings {
    /// Page views (plate page, WeChat return, wallet hand-off) one client may make per
    /// minute (burst = this).
    pub rate_per_ip_per_minute: u32,
    /// Pay submissions (`POST .../pay`, cancel) one client may make per minute.
    pub pay_per_ip_per_minute: u32,
    /// Valid pay submissions one plate (or gateway order) may receive per minute from
    /// all clients together; at least twice `pay_per_ip_per_minute`, so no single
    /// client can use it up.
    pub pay_per_plate_per_minute: u32,
    /// Status pages and status polls one client may make per minute.
    pub status_per_ip_per_minute: u32,
    /// Clients (and plates) each limiter remembers at once (LRU beyond that).
    pub rate_limit_entries: usize,
    /// Reverse proxies (IPs or CIDR blocks) whose `X-Forwarded-For` is believed. Empty:
    /// the client is the TCP peer. A TOML list, or one comma-separated string (so the
    /// environment can set it: `SESAME__SHOPPER__TRUSTED_PROXIES=10.0.0.0/8,::1`).
    #[serde(deserialize_with = "string_or_list")]
    pub trusted_proxies: Vec<String>,
    /// Smallest amount a shopper may pay, in minor units of the merchant currency.
    pub min_amount_minor: i64,
    /// How long a Pay form stays valid after it was served, seconds.
    pub form_ttl_secs: i64,
    /// After a payment failed or expired, its page keeps checking for a late payment
    /// this long, seconds.
    pub late_payment_watch_secs: i64,
    /// Milliseconds a plate page may show a plate and its merchant as read earlier
    /// (0 = read the store for every page view). Pay submissions always read afresh.
    pub plate_cache_ms: i64,
    /// Plates whose page data is kept in memory at once (least recently seen forgotten).
    pub plate_cache_entries: usize,
    /// On `sesame serve` in the local environment: create a demo merchant and plate once
    /// and serve its poster at `/demo/poster.svg`.
    pub demo: bool,
}

impl ShopperSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.rate_per_ip_per_minute == 0
            || self.pay_per_ip_per_minute == 0
            || self.status_per_ip_per_minute == 0
        {
            return Err(ConfigError("shopper rate limits must be positive".into()));
        }
        if self.pay_per_plate_per_minute < self.pay_per_ip_per_minute.saturating_mul(2) {
            return Err(ConfigError(
                "shopper.pay_per_plate_per_minute must be at least twice pay_per_ip_per_minute, \
so that one client cannot lock a plate"
                    .into(),
            ));
        }
        if self.min_amount_minor < 1 {
            return Err(ConfigError(
                "shopper.min_amount_minor must be at least 1".into(),
            ));
        }
        if self.plate_cache_ms < 0 || (self.plate_cache_ms > 0 && self.plate_cache_entries == 0) {
            return Err(ConfigError(
                "shopper.plate_cache_ms must not be negative, and a cache needs plate_cache_entries"
                    .into(),
            ));
        }
        if self.form_ttl_secs < 60 || self.late_payment_watch_secs < 0 {
            return Err(ConfigError(
                "shopper.form_ttl_secs must be at least 60 and late_payment_watch_secs not negative"
                    .into(),
            ));
        }
        if let Some(bad) = self
            .trusted_proxies
            .iter()
            .find(|p| crate::services::rate_limit::IpBlock::parse(p).is_none())
        {
            return Err(ConfigError(format!(
                "shopper.trusted_proxies entry {bad:?} must be an IP address or a CIDR block such as 10.0.0.0/8"
            )));
        }
        Ok(())
    }
}

/// A list given as a TOML array or as one comma-separated string (environment values).
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        One(String),
        Many(Vec<String>),
    }
    let items = match Given::deserialize(d)? {
        Given::One(text) => text.split(',').map(str::to_owned).collect(),
        Given::Many(items) => items,
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentSettings {
    /// Merchant discount rate (basis points) for a brand the merchant has no rate for.
    pub default_mdr_bps: u32,
    /// Default lifetime of an order, seconds.
    pub order_ttl_secs: i64,
    /// Longest lifetime a merchant may ask for (`expires_in`), seconds.
    pub max_ttl_secs: i64,
    /// Largest single payment, in minor units of the order currency.
    pub max_amount_minor: i64,
    /// How often an open order is asked about at its wallet (customer codes waiting for
    /// the shopper, orders whose callback is late), milliseconds.
    pub poll_interval_ms: i64,
    /// A new dynamic order is first checked at its wallet after this, milliseconds.
    pub first_check_after_ms: i64,
    /// A refund still pending (no final answer from the wallet, or a lost one) is
    /// asked again at its wallet, with the same refund id, once it is this old and
    /// then at this interval, milliseconds.
    pub refund_check_interval_ms: i64,
    /// An order expired while its close was not confirmed by the wallet is checked for
    /// a late capture (and closed again) for this long after its deadline, seconds.
    pub expired_grace_secs: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Run the outbox dispatcher and the reconciler in this process.
    pub enabled: bool,
    /// Pause between two passes of a worker when it found nothing to do, milliseconds.
    pub idle_ms: u64,
    /// How long a dispatcher holds an event while delivering it, seconds.
    pub outbox_lease_secs: i64,
    /// Timeout of one webhook delivery, seconds.
    pub webhook_timeout_secs: u64,
    /// Timeout of connecting to a merchant's webhook endpoint, seconds.
    pub webhook_connect_timeout_secs: u64,
    /// First retry delay of a failed webhook, seconds (doubles each attempt, with jitter).
    pub webhook_first_retry_secs: i64,
    /// Longest delay between two webhook attempts, seconds.
    pub webhook_max_retry_secs: i64,
    /// Give up (dead letter) when an event is older than this, hours.
    pub webhook_give_up_hours: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    /// Base of every URL we print (plate URLs, poster links); no trailing slash.
    pub public_base_url: String,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Seconds given to in-flight requests on SIGTERM.
    pub shutdown_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    Embedded,
    Redis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub backend: StoreBackend,
    pub path: PathBuf,
    pub redis_url: String,
    /// Prefix of every Redis key (lets several deployments share one server).
    pub redis_prefix: String,
    pub redis_timeout_ms: u64,
    pub allow_volatile: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token of the admin API; empty = generate one in the data dir.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrSettings {
    /// Reverse-domain GUID in EMVCo tag 26 sub-tag 00.
    pub emvco_guid: String,
    /// Rendered images kept in memory (LRU), so a repeated request is not re-rendered.
    pub render_cache_entries: usize,
    /// Largest image edge in pixels a client may ask for.
    pub max_size_px: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info,sesame=debug`; `RUST_LOG` wins.
    pub filter: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    pub retention_hours: i64,
    pub lease_secs: i64,
    /// How often expired records are deleted from the store, seconds.
    pub purge_interval_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalletMode {
    /// Local and test only: the sandboxes are mounted in this server; an enabled
    /// adapter with a `base_url` talks to that host with its configured credentials,
    /// one without talks to its in-process sandbox.
    Sandbox,
    /// Every enabled adapter talks to its `base_url` with its configured credentials;
    /// a missing one stops the start. Nothing is mounted. The production mode.
    Live,
    /// No wallet adapters: onboarding and plates work, payments are refused.
    Disabled,
}

impl WalletMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WalletMode::Sandbox => "sandbox",
            WalletMode::Live => "live",
            WalletMode::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletSettings {
    pub mode: WalletMode,
    /// Where adapters reach the sandboxes; empty = this gateway's listener + `/sandbox`.
    pub sandbox_base_url: String,
    /// Wallet time is divided by this in the sandboxes (retry schedules, confirmations).
    pub sandbox_speedup: u32,
}

/// A wallet credential: the value inline (a PEM, a key) or `@/path/to/file`, read
/// when the wallets are built. `Debug` and `sesame config` print an inline value as
/// `***` and a file reference as it is (a path is not a secret).
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Credential(String);

impl Credential {
    pub fn new(value: impl Into<String>) -> Credential {
        Credential(value.into())
    }

    pub fn is_set(&self) -> bool {
        !self.0.trim().is_empty()
    }

    /// The file of an `@/path` reference.
    pub fn file(&self) -> Option<&Path> {
        self.0.trim().strip_prefix('@').map(|p| Path::new(p.trim()))
    }

    /// How the value may be shown: empty, `@/path`, or `***`.
    pub fn masked(&self) -> String {
        match self.file() {
            _ if !self.is_set() => String::new(),
            Some(path) => format!("@{}", path.display()),
            None => "***".to_owned(),
        }
    }

    /// The inline value, or the contents of the referenced file.
    pub fn read(&self) -> std::io::Result<String> {
        match self.file() {
            Some(path) => std::fs::read_to_string(path),
            None => Ok(self.0.clone()),
        }
    }

    /// Where the value came from, for error messages: `@/path` or `inline`.
    pub fn origin(&self) -> String {
        match self.file() {
            Some(path) => format!("@{}", path.display()),
            None => "inline".to_owned(),
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({:?})", self.masked())
    }
}

impl Serialize for Credential {
    /// Always masked: no serialized form of the settings carries a secret.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

/// `[adapters.<id>]`: how each wallet adapter reaches its wallet. An adapter with a
/// `base_url` talks to that host with these credentials; see [`WalletMode`] for one
/// without.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptersSettings {
    pub alipay: AlipayAdapterSettings,
    pub alipay_plus: AlipayPlusAdapterSettings,
    pub wechat_pay: WechatPayAdapterSettings,
    pub kakao_pay: KakaoPayAdapterSettings,
}

/// `[adapters.alipay]`: Alipay Open API (Alipay CN).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlipayAdapterSettings {
    pub enabled: bool,
    /// Whole-request timeout, milliseconds.
    pub timeout_ms: u64,
    /// Open API host without `/gateway.do`, e.g. `https://openapi.alipay.com`.
    pub base_url: String,
    pub app_id: String,
    /// The app private key (signs our requests).
    pub private_key: Credential,
    /// The Alipay public key (verifies answers and notifications).
    pub wallet_public_key: Credential,
}

/// `[adapters.alipay_plus]`: Alipay+ as acquiring partner (MPay, AlipayHK, Kakao Pay...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlipayPlusAdapterSettings {
    pub enabled: bool,
    pub timeout_ms: u64,
    pub base_url: String,
    pub client_id: String,
    /// `keyVersion` of our signatures.
    pub key_version: u32,
    pub private_key: Credential,
    pub wallet_public_key: Credential,
}

/// `[adapters.wechat_pay]`: WeChat Pay API v3, v2 micropay and Official Account OAuth.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatPayAdapterSettings {
    pub enabled: bool,
    pub timeout_ms: u64,
    /// API host, e.g. `https://api.mch.weixin.qq.com`.
    pub base_url: String,
    /// OAuth authorize host (`https://open.weixin.qq.com`); empty = `base_url`.
    pub oauth_base_url: String,
    /// OAuth token host (`https://api.weixin.qq.com`); empty = `base_url`.
    pub sns_base_url: String,
    pub mchid: String,
    pub appid: String,
    /// Serial number of the merchant API certificate (40 hex).
    pub serial_no: String,
    /// The merchant API private key (`apiclient_key.pem`).
    pub private_key: Credential,
    /// The APIv3 key: 32 ASCII characters, used as they are as the AES-256-GCM key.
    pub api_v3_key: Credential,
    /// `Wechatpay-Serial` of the key below (`PUB_KEY_ID_...` or a platform serial).
    pub platform_serial: String,
    pub platform_public_key: Credential,
    /// The API v2 key (32 characters): signs micropay, orderquery and reverse.
    pub api_v2_key: Credential,
    /// The Official Account AppSecret: exchanges OAuth codes for openids.
    pub app_secret: Credential,
    /// The merchant API certificate (`apiclient_cert.pem`), the TLS client
    /// certificate of `/secapi/` calls (micropay reverse). Required in live mode.
    pub client_cert: Credential,
    /// The certificate's private key; empty = `private_key` (WeChat issues one key).
    pub client_key: Credential,
    /// `spbill_create_ip` of micropay requests.
    pub terminal_ip: String,
}

/// `[adapters.kakao_pay]`: Kakao Pay's own online API (KRW).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KakaoPayAdapterSettings {
    pub enabled: bool,
    pub timeout_ms: u64,
    pub base_url: String,
    pub cid: String,
    pub secret_key: Credential,
}

/// The directory holding `default.toml` and the overlays.
pub fn config_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SESAME_CONFIG_DIR") {
        return PathBuf::from(dir);
    }
    let cwd = PathBuf::from("config");
    if cwd.join("default.toml").exists() {
        return cwd;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// Loads the layered configuration. `extra` is `--config FILE` (must exist).
pub fn load(extra: Option<&Path>) -> Result<Settings, ConfigError> {
    let environment = Environment::from_env()?;
    load_from(&config_dir(), environment, extra, true)
}

/// `use_env_vars`: apply this process's `SESAME__*` environment variables last.
pub fn load_from(
    dir: &Path,
    environment: Environment,
    extra: Option<&Path>,
    use_env_vars: bool,
) -> Result<Settings, ConfigError> {
    let vars = if use_env_vars {
        process_vars()?
    } else {
        Vec::new()
    };
    load_with_vars(dir, environment, extra, &vars)
}

/// This process's `SESAME__*` variables. One that is not Unicode is an error, not
/// silently skipped.
fn process_vars() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if !key.to_ascii_uppercase().starts_with(ENV_PREFIX) {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| ConfigError(format!("environment variable {key} is not valid UTF-8")))?;
        vars.push((key.to_owned(), value));
    }
    Ok(vars)
}

const ENV_PREFIX: &str = "SESAME__";

/// [`load_from`] with the environment variables given (`SESAME__SECTION__KEY`, any
/// others ignored) instead of this process's: how tests exercise the environment
/// layer without touching the environment other tests and child processes share.
pub fn load_with_vars(
    dir: &Path,
    environment: Environment,
    extra: Option<&Path>,
    vars: &[(String, String)],
) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from(dir.join("default.toml")).required(true))
        .add_source(
            config::File::from(dir.join(format!("{}.toml", environment.as_str()))).required(false),
        )
        .set_override("environment", environment.as_str())
        .map_err(|e| ConfigError(e.to_string()))?;
    if let Some(path) = extra {
        if !path.exists() {
            return Err(ConfigError(format!("{} does not exist", path.display())));
        }
        builder = builder.add_source(config::File::from(path).required(true));
    }
    // Values are taken as written: a string stays a string (`00777`, an all-digit
    // key), and only keys typed as numbers or booleans are converted.
    let source: config::Map<String, String> = vars
        .iter()
        .filter(|(key, _)| key.to_ascii_uppercase().starts_with(ENV_PREFIX))
        .cloned()
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("SESAME")
            .prefix_separator("__")
            .separator("__")
            .source(Some(source)),
    );
    let settings: Settings = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError(e.to_string()))?;
    settings.validate()?;
    Ok(settings)
}

impl Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        let base = &self.server.public_base_url;
        if !(base.starts_with("http://") || base.starts_with("https://")) || base.ends_with('/') {
            return Err(ConfigError(format!(
                "server.public_base_url {base:?} must start with http:// or https:// and have no trailing slash"
            )));
        }
        let guid = &self.qr.emvco_guid;
        if guid.is_empty() || guid.len() > 32 || !guid.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(ConfigError(
                "qr.emvco_guid must be 1..=32 ASCII characters".into(),
            ));
        }
        if self.idempotency.retention_hours <= 0
            || self.idempotency.lease_secs <= 0
            || self.idempotency.purge_interval_secs == 0
        {
            return Err(ConfigError("idempotency timings must be positive".into()));
        }
        self.validate_payments()?;
        self.shopper.validate()?;
        if self.qr.max_size_px < 64 {
            return Err(ConfigError("qr.max_size_px must be at least 64".into()));
        }
        let token = &self.admin.token;
        if !token.is_empty()
            && (token.len() < MIN_ADMIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError(format!(
                "admin.token must be at least {MIN_ADMIN_TOKEN_LEN} visible ASCII characters (or empty to generate one)"
            )));
        }
        if self.environment == Environment::Production {
            self.validate_production()?;
        }
        self.validate_wallets()
    }

    /// Production serves real shoppers: its URLs must be public HTTPS, and the admin
    /// token must come from the operator (a generated one would be printed to the
    /// container's log).
    fn validate_production(&self) -> Result<(), ConfigError> {
        let base = &self.server.public_base_url;
        let host = base
            .strip_prefix("https://")
            .and_then(|rest| rest.split(['/', ':']).next())
            .unwrap_or("");
        let local = host.is_empty()
            || host.eq_ignore_ascii_case("localhost")
            || host.starts_with("127.")
            || host.starts_with('[')
            || host == "0.0.0.0";
        if !base.starts_with("https://") || local {
            return Err(ConfigError(format!(
                "server.public_base_url {base:?}: production needs the public https:// address shoppers reach (SESAME__SERVER__PUBLIC_BASE_URL)"
            )));
        }
        if self.admin.token.is_empty() {
            return Err(ConfigError(
                "admin.token must be set in production (SESAME__ADMIN__TOKEN)".into(),
            ));
        }
        Ok(())
    }

    fn validate_wallets(&self) -> Result<(), ConfigError> {
        if self.environment == Environment::Production && self.wallets.mode == WalletMode::Sandbox {
            return Err(ConfigError(
                "wallets.mode = \"sandbox\" is refused in production: sandboxes take payments no wallet made; use \"live\" (or \"disabled\")".into(),
            ));
        }
        let a = &self.adapters;
        let wechat = &a.wechat_pay;
        for (id, enabled, timeout_ms, urls) in [
            (
                "alipay",
                a.alipay.enabled,
                a.alipay.timeout_ms,
                vec![("base_url", &a.alipay.base_url)],
            ),
            (
                "alipay_plus",
                a.alipay_plus.enabled,
                a.alipay_plus.timeout_ms,
                vec![("base_url", &a.alipay_plus.base_url)],
            ),
            (
                "wechat_pay",
                wechat.enabled,
                wechat.timeout_ms,
                vec![
                    ("base_url", &wechat.base_url),
                    ("oauth_base_url", &wechat.oauth_base_url),
                    ("sns_base_url", &wechat.sns_base_url),
                ],
            ),
            (
                "kakao_pay",
                a.kakao_pay.enabled,
                a.kakao_pay.timeout_ms,
                vec![("base_url", &a.kakao_pay.base_url)],
            ),
        ] {
            if !enabled {
                continue;
            }
            if timeout_ms == 0 {
                return Err(ConfigError(format!(
                    "adapters.{id}.timeout_ms must be positive"
                )));
            }
            for (key, url) in urls {
                let https = url.starts_with("https://");
                let shaped = url.is_empty()
                    || ((https || url.starts_with("http://"))
                        && !url.ends_with('/')
                        && !url.contains(char::is_whitespace));
                if !shaped {
                    return Err(ConfigError(format!(
                        "adapters.{id}.{key} {url:?} must start with http:// or https:// and have no trailing slash"
                    )));
                }
                if self.environment == Environment::Production && !url.is_empty() && !https {
                    return Err(ConfigError(format!(
                        "adapters.{id}.{key} {url:?}: production talks to wallets over https only"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The payments, reconciler and outbox keys.
    fn validate_payments(&self) -> Result<(), ConfigError> {
        let payments = &self.payments;
        if payments.default_mdr_bps > crate::domain::ledger::MAX_MDR_BPS {
            return Err(ConfigError(format!(
                "payments.default_mdr_bps {} is above {} (100 %)",
                payments.default_mdr_bps,
                crate::domain::ledger::MAX_MDR_BPS
            )));
        }
        if payments.poll_interval_ms <= 0
            || payments.first_check_after_ms <= 0
            || payments.refund_check_interval_ms <= 0
            || payments.expired_grace_secs < 0
        {
            return Err(ConfigError(
                "payments poll, first check and refund check intervals must be positive, \
                 expired_grace_secs not negative"
                    .into(),
            ));
        }
        let workers = &self.workers;
        if workers.outbox_lease_secs <= 0 {
            return Err(ConfigError(
                "workers.outbox_lease_secs must be positive".into(),
            ));
        }
        // A lease that ends while its delivery may still be connecting or waiting for
        // the merchant lets a second process deliver the same attempt.
        let delivery_secs = workers
            .webhook_timeout_secs
            .saturating_add(workers.webhook_connect_timeout_secs);
        if u64::try_from(workers.outbox_lease_secs).unwrap_or(0) <= delivery_secs {
            return Err(ConfigError(format!(
                "workers.outbox_lease_secs ({}) must be longer than webhook_timeout_secs + \
                 webhook_connect_timeout_secs ({delivery_secs})",
                workers.outbox_lease_secs
            )));
        }
        if workers.webhook_timeout_secs == 0 || workers.webhook_connect_timeout_secs == 0 {
            return Err(ConfigError("webhook timeouts must be positive".into()));
        }
        if workers.webhook_first_retry_secs <= 0
            || workers.webhook_max_retry_secs < workers.webhook_first_retry_secs
            || workers.webhook_give_up_hours <= 0
        {
            return Err(ConfigError(
                "webhook retry delays and give-up window must be positive, the longest \
                 delay at least the first"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The settings as TOML with every secret replaced by `***`.
    pub fn masked(&self) -> String {
        let mut copy = self.clone();
        if !copy.admin.token.is_empty() {
            copy.admin.token = "***".into();
        }
        copy.store.redis_url = mask_url_password(&copy.store.redis_url);
        toml_string(&copy)
    }
}

fn toml_string(settings: &Settings) -> String {
    // Serialize through serde_json to a toml-ish listing: `[section]` or
    // `[section.sub]` headers, then `key = value` lines.
    let value = serde_json::to_value(settings).unwrap_or_default();
    let mut out = String::new();
    if let serde_json::Value::Object(keys) = value {
        write_table(&mut out, "", &keys);
    }
    out.trim_start().to_owned()
}

fn write_table(out: &mut String, name: &str, keys: &serde_json::Map<String, serde_json::Value>) {
    let (tables, values): (Vec<_>, Vec<_>) = keys.iter().partition(|(_, v)| v.is_object());
    if !name.is_empty() && !values.is_empty() {
        out.push_str(&format!("\n[{name}]\n"));
    }
    for (key, v) in values {
        out.push_str(&format!("{key} = {v}\n"));
    }
    for (key, v) in tables {
        if let serde_json::Value::Object(inner) = v {
            let path = if name.is_empty() {
                key.clone()
            } else {
                format!("{name}.{key}")
            };
            write_table(out, &path, inner);
        }
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`; a password given as a query
/// parameter (`?password=` / `?pass=`, as redis-rs accepts for unix sockets) is
/// masked too.
pub fn mask_url_password(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_secret_param(key) => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&masked.join("&"));
    }
    out
}

fn is_secret_param(key: &str) -> bool {
    ["password", "pass", "passwd", "pwd"]
        .iter()
        .any(|secret| key.eq_ignore_ascii_case(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped production configuration, with the two values an operator must
    /// give (public address, admin token).
    fn defaults() -> Settings {
        let vars = [
            ("SESAME__SERVER__PUBLIC_BASE_URL", "https://pay.example.mo"),
            (
                "SESAME__ADMIN__TOKEN",
                "adm_production_test_token_0123456789",
            ),
            ("SESAME__WALLETS__MODE", "disabled"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        load_with_vars(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config"),
            Environment::Production,
            None,
            &vars,
        )
        .expect("the shipped configuration is valid")
    }

    fn refused(change: impl FnOnce(&mut Settings), naming: &str) {
        let mut settings = defaults();
        change(&mut settings);
        let error = settings.validate().expect_err("refused").0;
        assert!(error.contains(naming), "{error}");
    }

    #[test]
    fn an_outbox_lease_must_outlast_a_whole_delivery() {
        refused(|s| s.workers.outbox_lease_secs = 0, "outbox_lease_secs");
        refused(|s| s.workers.outbox_lease_secs = -5, "outbox_lease_secs");
        // 10 s timeout + 5 s connect: a 15 s lease could end while the POST is live.
        refused(
            |s| s.workers.outbox_lease_secs = 15,
            "outbox_lease_secs (15)",
        );
        let mut settings = defaults();
        settings.workers.outbox_lease_secs = 16;
        assert!(settings.validate().is_ok());
        refused(
            |s| s.workers.webhook_connect_timeout_secs = 30,
            "webhook_connect_timeout_secs (40)",
        );
    }

    #[test]
    fn a_default_mdr_above_100_percent_is_refused() {
        refused(
            |s| s.payments.default_mdr_bps = 10_001,
            "default_mdr_bps 10001",
        );
        let mut settings = defaults();
        settings.payments.default_mdr_bps = 10_000;
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn payments_and_purge_intervals_must_be_positive() {
        refused(|s| s.payments.poll_interval_ms = 0, "intervals");
        refused(|s| s.payments.refund_check_interval_ms = -1, "intervals");
        refused(|s| s.payments.expired_grace_secs = -1, "expired_grace_secs");
        refused(|s| s.idempotency.purge_interval_secs = 0, "idempotency");
        refused(|s| s.workers.webhook_give_up_hours = 0, "give-up");
    }

    #[test]
    fn masks_password_in_urls() {
        assert_eq!(
            mask_url_password("redis://:pw@h:6379/0"),
            "redis://:***@h:6379/0"
        );
        assert_eq!(mask_url_password("redis://u:pw@h"), "redis://u:***@h");
        assert_eq!(mask_url_password("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            mask_url_password("redis://h/0?password=zz&db=1"),
            "redis://h/0?password=***&db=1"
        );
        assert_eq!(
            mask_url_password("redis+unix:///run/redis.sock?db=0&PASS=zz"),
            "redis+unix:///run/redis.sock?db=0&PASS=***"
        );
        assert_eq!(
            mask_url_password("rediss://u:pw@h:6380/0?pass=x"),
            "rediss://u:***@h:6380/0?pass=***"
        );
    }
}
