//! The wallet adapters the gateway routes to, and the brand registry.
//!
//! In sandbox mode (local development, tests, the demo) each adapter talks over HTTP
//! to its wallet's sandbox, mounted in this same server under `/sandbox/<adapter>/`
//! (see `wallets::local`); in `disabled` mode there are no adapters and payments are
//! refused with `wallet_unavailable`.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::path::Path;

use actix_web::web;
use sesame_adapters::alipay::sandbox::AlipaySandbox;
use sesame_adapters::alipay_plus::sandbox::AlipayPlusSandbox;
use sesame_adapters::brands::{Brand, BrandRegistry, CodeMatch};
use sesame_adapters::contract::{AdapterError, AdapterId, WalletAdapter};
use sesame_adapters::kakao_pay::sandbox::KakaoPaySandbox;
use sesame_adapters::sandbox::{LocalKeys, LocalKeysPem, TimeScale};
use sesame_adapters::wechat_pay::sandbox::WechatPaySandbox;
use sesame_adapters::{alipay, alipay_plus, kakao_pay, wechat_pay};

use crate::config::{WalletMode, WalletSettings};

pub struct Wallets {
    pub brands: BrandRegistry,
    adapters: BTreeMap<AdapterId, Arc<dyn WalletAdapter>>,
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

    /// The route of an enabled brand: its direct adapter when configured, else its rail.
    pub fn route_brand(&self, brand: &Brand) -> Option<Route> {
        if !brand.enabled() {
            return None;
        }
        let adapter_id = brand.route(|id| self.is_configured(id))?;
        let adapter = self.adapters.get(&adapter_id)?.clone();
        Some(Route {
            brand: Some(brand.id().to_owned()),
            adapter_id,
            adapter,
            params: brand.params().clone(),
        })
    }

    pub fn route_brand_id(&self, brand_id: &str) -> Option<Route> {
        self.route_brand(self.brands.get(brand_id)?)
    }

    /// The route of a customer-presented payment code, by the registry's rules. An
    /// ambiguous code goes to the shared rail (Alipay+ identifies the wallet itself).
    pub fn route_code(&self, code: &str) -> Option<Route> {
        match self.brands.detect_by_code(code) {
            CodeMatch::Brand(brand) => self.route_brand(brand),
            CodeMatch::Ambiguous(_) => {
                let rail = self.brands.rail_for_code(code)?;
                let adapter = self.adapters.get(&rail)?.clone();
                Some(Route {
                    brand: None,
                    adapter_id: rail,
                    adapter,
                    params: BTreeMap::new(),
                })
            }
            CodeMatch::Unknown => None,
        }
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
}

pub const KEYS_FILE: &str = "sandbox_keys.json";

/// Builds the wallets for `settings`. In sandbox mode `own_base_url` (where this
/// gateway listens) locates the sandboxes unless `sandbox_base_url` is set.
pub fn build(
    settings: &WalletSettings,
    data_dir: &Path,
    own_base_url: &str,
) -> Result<Wallets, WalletSetupError> {
    let brands = BrandRegistry::default_registry()?;
    if settings.mode == WalletMode::Disabled {
        return Ok(Wallets::new(brands, BTreeMap::new()));
    }
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
    let kakao = Arc::new(kakao_adapter);
    let wechat = Arc::new(wechat_adapter);
    let mut adapters: BTreeMap<AdapterId, Arc<dyn WalletAdapter>> = BTreeMap::new();
    adapters.insert(AdapterId::Alipay, Arc::new(alipay_adapter));
    adapters.insert(AdapterId::AlipayPlus, Arc::new(plus_adapter));
    adapters.insert(AdapterId::WechatPay, wechat.clone());
    adapters.insert(AdapterId::KakaoPay, kakao.clone());
    Ok(Wallets {
        brands,
        adapters,
        kakao: Some(kakao),
        wechat: Some(wechat),
        sandboxes: Some(Sandboxes {
            alipay: alipay_sandbox,
            alipay_plus: plus_sandbox,
            wechat_pay: wechat_sandbox,
            kakao_pay: kakao_sandbox,
        }),
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
                let keys = LocalKeys::generate().map_err(|e| error(e.to_string()))?;
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
