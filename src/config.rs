//! Configuration: `config/default.toml`, then the environment overlay
//! (`config/<env>.toml`, env from `SESAME_ENV`, default `local`), then an optional
//! `--config FILE`, then environment variables `SESAME__SECTION__KEY`.
//!
//! Owns the typed settings and `masked()` for printing them. Must never: print or
//! log a secret (admin token, plate secret, Redis password).

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalletMode {
    /// Every adapter talks to its wallet's sandbox (mounted in this server).
    Sandbox,
    /// No wallet adapters: onboarding and plates work, payments are refused.
    Disabled,
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

pub fn load_from(
    dir: &Path,
    environment: Environment,
    extra: Option<&Path>,
    use_env_vars: bool,
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
    if use_env_vars {
        builder = builder.add_source(
            config::Environment::with_prefix("SESAME")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
    }
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
        if self.idempotency.retention_hours <= 0 || self.idempotency.lease_secs <= 0 {
            return Err(ConfigError("idempotency timings must be positive".into()));
        }
        self.shopper.validate()?;
        if self.qr.max_size_px < 64 {
            return Err(ConfigError("qr.max_size_px must be at least 64".into()));
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
    // Serialize through serde_json to a toml-ish listing: section.key = value.
    let value = serde_json::to_value(settings).unwrap_or_default();
    let mut out = String::new();
    if let serde_json::Value::Object(sections) = value {
        for (section, body) in sections {
            match body {
                serde_json::Value::Object(keys) => {
                    out.push_str(&format!("\n[{section}]\n"));
                    for (key, v) in keys {
                        out.push_str(&format!("{key} = {v}\n"));
                    }
                }
                other => out.push_str(&format!("{section} = {other}\n")),
            }
        }
    }
    out.trim_start().to_owned()
}

/// `redis://user:secret@host` → `redis://user:***@host`.
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split(':').next().unwrap_or("");
    format!("{scheme}://{user}:***@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_password_in_urls() {
        assert_eq!(
            mask_url_password("redis://:pw@h:6379/0"),
            "redis://:***@h:6379/0"
        );
        assert_eq!(mask_url_password("redis://u:pw@h"), "redis://u:***@h");
        assert_eq!(mask_url_password("redis://h:6379"), "redis://h:6379");
    }
}
