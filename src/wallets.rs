//! The wallet adapters the gateway routes to, and the brand registry.
//!
//! In sandbox mode (local development, tests, the demo) each adapter talks over HTTP
//! to its wallet's sandbox, mounted in this same server under `/sandbox/<adapter>/`
//! (see `wallets::local`); in `disabled` mode there are no adapters and payments are
//! refused with `wallet_unavailable`.

use std::collections::BTreeMap;
use std::sync::Arc;

use sesame_adapters::brands::{Brand, BrandRegistry, CodeMatch};
use sesame_adapters::contract::{AdapterId, WalletAdapter};

pub struct Wallets {
    pub brands: BrandRegistry,
    adapters: BTreeMap<AdapterId, Arc<dyn WalletAdapter>>,
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
        Wallets { brands, adapters }
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

#[derive(Debug, thiserror::Error)]
pub enum WalletSetupError {
    #[error("wallet brand registry: {0}")]
    Registry(#[from] sesame_adapters::brands::RegistryError),
}

/// Builds the wallets for `settings`. `own_base_url` is where this gateway listens.
pub fn build(
    settings: &crate::config::WalletSettings,
    _data_dir: &std::path::Path,
    _own_base_url: &str,
) -> Result<Wallets, WalletSetupError> {
    let brands = BrandRegistry::default_registry()?;
    let _ = settings.mode;
    Ok(Wallets::new(brands, BTreeMap::new()))
}
