//! The wallet brand registry: which brands exist, which adapter speaks for each,
//! and how to recognise a brand from a User-Agent or a customer payment code.
//!
//! Owns: parsing and validating `config/wallets.toml` ([`BrandRegistry::from_toml`]),
//! User-Agent detection for static-plate scans, payment-code routing for POS scans
//! (including the shared Alipay / Alipay+ prefix space of wallets.md §6), and the
//! Alipay+ `pspId` -> brand mapping.
//! Must never: do IO during detection (detection is pure and allocation-light, it
//! runs on every scan), guess a brand where the configuration is ambiguous, or let a
//! configuration with overlapping rules load (the order of rules must not matter).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Deserialize;

use crate::contract::{AdapterId, Capabilities, PayMode};
use crate::money::Currency;

/// The registry shipped with Sesame.
const DEFAULT_TOML: &str = include_str!("../../config/wallets.toml");

/// The longest payment code looked at (Alipay+ allows 32 digits); longer input is
/// not a payment code.
const MAX_CODE_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("wallets.toml: {0}")]
    Syntax(String),
    #[error("brand id {0:?} must be 2-32 characters of a-z, 0-9 and _, starting with a letter")]
    BadBrandId(String),
    #[error("brand {0:?} is defined twice")]
    DuplicateBrand(String),
    #[error(
        "brand {brand}: unknown adapter {name:?} (expected alipay, alipay_plus, wechat_pay or kakao_pay)"
    )]
    UnknownAdapter { brand: String, name: String },
    #[error("brand {brand}: direct_adapter must differ from adapter")]
    DirectAdapterSameAsAdapter { brand: String },
    #[error("brands {first} and {second} share priority {priority}; priorities must be unique")]
    DuplicatePriority {
        first: String,
        second: String,
        priority: u32,
    },
    #[error("brand {brand}: display name {lang} is empty")]
    EmptyName { brand: String, lang: &'static str },
    #[error("brand {brand}: empty User-Agent marker list or empty marker string")]
    EmptyMarker { brand: String },
    #[error("brand {brand}: Alipay+ brands need a psp_id to map notifications back")]
    MissingPspId { brand: String },
    #[error("psp_id {psp_id} is used by both {first} and {second}")]
    DuplicatePspId {
        psp_id: String,
        first: String,
        second: String,
    },
    #[error("{owner}: bad code rule: {reason}")]
    BadCodeRule { owner: String, reason: String },
    #[error(
        "code rules of {first} and {second} overlap (prefix {prefix}, lengths {min_len}-{max_len}); \
         make one prefix longer or split the lengths"
    )]
    OverlappingCodeRules {
        first: String,
        second: String,
        prefix: String,
        min_len: usize,
        max_len: usize,
    },
    #[error("brand {brand}: empty parameter name")]
    EmptyParam { brand: String },
}

/// A brand's display names in Macau's languages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayNames {
    pub en: String,
    #[serde(rename = "zh-Hant")]
    pub zh_hant: String,
    pub pt: String,
}

impl DisplayNames {
    /// The name for a BCP 47 language tag: any Chinese tag gets Traditional Chinese
    /// (Macau's written standard), any Portuguese tag Portuguese, all else English.
    pub fn for_language(&self, tag: &str) -> &str {
        let primary = tag.split(['-', '_']).next().unwrap_or("");
        if primary.eq_ignore_ascii_case("zh") {
            &self.zh_hant
        } else if primary.eq_ignore_ascii_case("pt") {
            &self.pt
        } else {
            &self.en
        }
    }
}

/// A brand's User-Agent rule: any marker present and no exclusion present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgentRule {
    markers: Vec<String>,
    exclude: Vec<String>,
    ignore_case: bool,
}

impl UserAgentRule {
    pub fn markers(&self) -> &[String] {
        &self.markers
    }

    pub fn exclude(&self) -> &[String] {
        &self.exclude
    }

    pub fn ignore_case(&self) -> bool {
        self.ignore_case
    }

    /// `haystack` is the User-Agent, ASCII-lower-cased by the caller when
    /// `ignore_case` (markers were lower-cased at load).
    fn matches(&self, haystack: &str) -> bool {
        self.markers.iter().any(|m| haystack.contains(m.as_str()))
            && !self.exclude.iter().any(|x| haystack.contains(x.as_str()))
    }
}

/// Customer-presented code rule: digits only, length in `[min_len, max_len]`,
/// starting with one of `prefixes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRule {
    pub min_len: usize,
    pub max_len: usize,
    pub prefixes: Vec<String>,
}

impl CodeRule {
    /// Length of the longest prefix of this rule that `code` (already known to be
    /// all digits) starts with, if the length fits.
    fn matched_prefix_len(&self, code: &str) -> Option<usize> {
        if code.len() < self.min_len || code.len() > self.max_len {
            return None;
        }
        self.prefixes
            .iter()
            .filter(|p| code.starts_with(p.as_str()))
            .map(String::len)
            .max()
    }

    fn validate(&self, owner: &str) -> Result<(), RegistryError> {
        let bad = |reason: String| RegistryError::BadCodeRule {
            owner: owner.to_owned(),
            reason,
        };
        if self.min_len == 0 || self.min_len > self.max_len || self.max_len > MAX_CODE_LEN {
            return Err(bad(format!(
                "lengths {}-{} must satisfy 1 <= min_len <= max_len <= {MAX_CODE_LEN}",
                self.min_len, self.max_len
            )));
        }
        if self.prefixes.is_empty() {
            return Err(bad("no prefixes".into()));
        }
        for prefix in &self.prefixes {
            if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("prefix {prefix:?} must be digits")));
            }
            if prefix.len() > self.min_len {
                return Err(bad(format!(
                    "prefix {prefix} is longer than min_len {}",
                    self.min_len
                )));
            }
        }
        Ok(())
    }
}

/// What a payment asks of the adapter that takes it: its currency and the ways it may
/// be started (any one of `modes` will do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub currency: Currency,
    pub modes: &'static [PayMode],
}

impl Need {
    /// A POS scans the shopper's payment code.
    pub fn customer_code(currency: Currency) -> Need {
        Need {
            currency,
            modes: &[PayMode::CustomerCode],
        }
    }

    /// The merchant shows a one-order QR: the wallet's own dynamic QR, or the cashier
    /// URL of a wallet that only redirects (Kakao Pay) drawn as a QR.
    pub fn merchant_qr(currency: Currency) -> Need {
        Need {
            currency,
            modes: &[PayMode::DynamicQr, PayMode::StaticEntry],
        }
    }

    /// The shopper scanned a static plate: a redirect to the wallet's cashier, or
    /// WeChat's JS bridge inside WeChat.
    pub fn plate(currency: Currency) -> Need {
        Need {
            currency,
            modes: &[PayMode::StaticEntry, PayMode::Jsapi],
        }
    }

    pub fn met_by(&self, capabilities: &Capabilities) -> bool {
        capabilities.supports_currency(self.currency)
            && self.modes.iter().any(|&m| capabilities.supports_mode(m))
    }
}

/// Where a customer code is charged: the adapter, and the brand when the code names
/// one (`None` for a code of a shared space: the wallet's answer names the brand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeRoute<'a> {
    pub brand: Option<&'a Brand>,
    pub adapter: AdapterId,
}

/// A prefix space several brands share; see `[[shared_code_space]]` in wallets.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCodeSpace {
    pub adapter: AdapterId,
    pub rule: CodeRule,
}

/// One wallet brand as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brand {
    id: String,
    names: DisplayNames,
    adapter: AdapterId,
    direct_adapter: Option<AdapterId>,
    enabled: bool,
    priority: u32,
    psp_id: Option<String>,
    params: BTreeMap<String, String>,
    user_agent: Option<UserAgentRule>,
    codes: Vec<CodeRule>,
}

impl Brand {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn names(&self) -> &DisplayNames {
        &self.names
    }

    /// The rail that always works for this brand.
    pub fn adapter(&self) -> AdapterId {
        self.adapter
    }

    /// A direct integration preferred over [`Brand::adapter`] when configured.
    pub fn direct_adapter(&self) -> Option<AdapterId> {
        self.direct_adapter
    }

    /// The adapter to use given which adapters are `usable` (configured here, and
    /// able to take the payment at hand): the direct one when usable, else the rail,
    /// else none (the brand cannot be paid this way here).
    pub fn route(&self, usable: impl Fn(AdapterId) -> bool) -> Option<AdapterId> {
        self.direct_adapter
            .filter(|&direct| usable(direct))
            .or_else(|| usable(self.adapter).then_some(self.adapter))
    }

    /// [`Brand::route`] by capabilities: an adapter is usable when it is configured
    /// (`capabilities` answers `Some`) and meets `need`. Kakao Pay's direct adapter is
    /// KRW and cashier-redirect only, so a MOP order or a Kakao Pay payment code goes
    /// through the Alipay+ rail.
    pub fn route_for(
        &self,
        need: &Need,
        capabilities: impl Fn(AdapterId) -> Option<Capabilities>,
    ) -> Option<AdapterId> {
        self.route(|id| capabilities(id).is_some_and(|caps| need.met_by(&caps)))
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn priority(&self) -> u32 {
        self.priority
    }

    pub fn psp_id(&self) -> Option<&str> {
        self.psp_id.as_deref()
    }

    /// Parameters handed to the adapter (`CreateOrder::brand_params`).
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.params
    }

    pub fn user_agent(&self) -> Option<&UserAgentRule> {
        self.user_agent.as_ref()
    }

    pub fn code_rules(&self) -> &[CodeRule] {
        &self.codes
    }

    fn code_specificity(&self, code: &str) -> Option<usize> {
        self.codes
            .iter()
            .filter_map(|rule| rule.matched_prefix_len(code))
            .max()
    }
}

impl fmt::Display for Brand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// The outcome of routing a customer payment code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeMatch<'a> {
    Brand(&'a Brand),
    /// The code is in a shared space (Alipay CN vs Alipay+ MPPs) and no rule is more
    /// specific: any of these brands may have issued it. Route it with
    /// [`BrandRegistry::route_code`]; the wallet's answer names the real brand.
    Ambiguous(Vec<&'a Brand>),
    Unknown,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    shared_code_space: Vec<RawSharedSpace>,
    #[serde(default)]
    brand: Vec<RawBrand>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSharedSpace {
    adapter: String,
    prefixes: Vec<String>,
    min_len: usize,
    max_len: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBrand {
    id: String,
    adapter: String,
    direct_adapter: Option<String>,
    enabled: bool,
    priority: u32,
    psp_id: Option<String>,
    names: DisplayNames,
    #[serde(default)]
    params: BTreeMap<String, String>,
    user_agent: Option<RawUserAgent>,
    #[serde(default)]
    codes: Vec<CodeRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUserAgent {
    markers: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    ignore_case: bool,
}

/// All configured brands, sorted by priority, plus the shared code spaces.
#[derive(Debug, Clone)]
pub struct BrandRegistry {
    brands: Vec<Brand>,
    shared: Vec<SharedCodeSpace>,
}

fn valid_brand_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    (2..=32).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

fn parse_adapter(brand: &str, name: &str) -> Result<AdapterId, RegistryError> {
    AdapterId::parse(name).map_err(|_| RegistryError::UnknownAdapter {
        brand: brand.to_owned(),
        name: name.to_owned(),
    })
}

fn build_brand(raw: RawBrand) -> Result<Brand, RegistryError> {
    if !valid_brand_id(&raw.id) {
        return Err(RegistryError::BadBrandId(raw.id));
    }
    let id = raw.id;
    let adapter = parse_adapter(&id, &raw.adapter)?;
    let direct_adapter = raw
        .direct_adapter
        .as_deref()
        .map(|name| parse_adapter(&id, name))
        .transpose()?;
    if direct_adapter == Some(adapter) {
        return Err(RegistryError::DirectAdapterSameAsAdapter { brand: id });
    }
    for (lang, name) in [
        ("en", &raw.names.en),
        ("zh-Hant", &raw.names.zh_hant),
        ("pt", &raw.names.pt),
    ] {
        if name.trim().is_empty() {
            return Err(RegistryError::EmptyName { brand: id, lang });
        }
    }
    if raw.params.keys().any(|k| k.trim().is_empty()) {
        return Err(RegistryError::EmptyParam { brand: id });
    }
    let psp_id = raw.psp_id.filter(|p| !p.trim().is_empty());
    if adapter == AdapterId::AlipayPlus && psp_id.is_none() {
        return Err(RegistryError::MissingPspId { brand: id });
    }
    let user_agent = match raw.user_agent {
        None => None,
        Some(ua) => {
            let empty =
                ua.markers.is_empty() || ua.markers.iter().chain(&ua.exclude).any(|m| m.is_empty());
            if empty {
                return Err(RegistryError::EmptyMarker { brand: id });
            }
            // Lower-cased once here so matching never allocates per marker.
            let fold = |list: Vec<String>| -> Vec<String> {
                if ua.ignore_case {
                    list.into_iter().map(|m| m.to_ascii_lowercase()).collect()
                } else {
                    list
                }
            };
            Some(UserAgentRule {
                markers: fold(ua.markers),
                exclude: fold(ua.exclude),
                ignore_case: ua.ignore_case,
            })
        }
    };
    for rule in &raw.codes {
        rule.validate(&format!("brand {id}"))?;
    }
    Ok(Brand {
        id,
        names: raw.names,
        adapter,
        direct_adapter,
        enabled: raw.enabled,
        priority: raw.priority,
        psp_id,
        params: raw.params,
        user_agent,
        codes: raw.codes,
    })
}

/// Two rules of different brands that a code could match with the same prefix
/// would make the winner depend on rule order: refused.
fn check_overlaps(brands: &[Brand]) -> Result<(), RegistryError> {
    for (i, a) in brands.iter().enumerate() {
        for b in &brands[i + 1..] {
            for ra in &a.codes {
                for rb in &b.codes {
                    let min_len = ra.min_len.max(rb.min_len);
                    let max_len = ra.max_len.min(rb.max_len);
                    if min_len > max_len {
                        continue;
                    }
                    if let Some(prefix) = ra.prefixes.iter().find(|p| rb.prefixes.contains(p)) {
                        return Err(RegistryError::OverlappingCodeRules {
                            first: a.id.clone(),
                            second: b.id.clone(),
                            prefix: prefix.clone(),
                            min_len,
                            max_len,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

impl BrandRegistry {
    /// Parses and validates a registry. Every problem is an error naming the brand;
    /// nothing is silently skipped.
    pub fn from_toml(text: &str) -> Result<BrandRegistry, RegistryError> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| RegistryError::Syntax(e.message().to_owned()))?;

        let mut shared = Vec::with_capacity(raw.shared_code_space.len());
        for space in raw.shared_code_space {
            let owner = format!("shared_code_space {}", space.adapter);
            let adapter =
                AdapterId::parse(&space.adapter).map_err(|_| RegistryError::UnknownAdapter {
                    brand: owner.clone(),
                    name: space.adapter.clone(),
                })?;
            let rule = CodeRule {
                min_len: space.min_len,
                max_len: space.max_len,
                prefixes: space.prefixes,
            };
            rule.validate(&owner)?;
            shared.push(SharedCodeSpace { adapter, rule });
        }

        let mut brands = Vec::with_capacity(raw.brand.len());
        let mut ids = HashSet::new();
        for raw_brand in raw.brand {
            let brand = build_brand(raw_brand)?;
            if !ids.insert(brand.id.clone()) {
                return Err(RegistryError::DuplicateBrand(brand.id));
            }
            if let Some(other) = brands
                .iter()
                .find(|b: &&Brand| b.priority == brand.priority)
            {
                return Err(RegistryError::DuplicatePriority {
                    first: other.id.clone(),
                    second: brand.id,
                    priority: other.priority,
                });
            }
            if let Some(psp_id) = &brand.psp_id
                && let Some(other) = brands
                    .iter()
                    .find(|b: &&Brand| b.psp_id.as_deref() == Some(psp_id.as_str()))
            {
                return Err(RegistryError::DuplicatePspId {
                    psp_id: psp_id.clone(),
                    first: other.id.clone(),
                    second: brand.id.clone(),
                });
            }
            brands.push(brand);
        }
        check_overlaps(&brands)?;
        brands.sort_by_key(|b| b.priority);
        Ok(BrandRegistry { brands, shared })
    }

    /// The registry compiled from `config/wallets.toml`.
    pub fn default_registry() -> Result<BrandRegistry, RegistryError> {
        BrandRegistry::from_toml(DEFAULT_TOML)
    }

    /// Every brand, enabled or not, by priority.
    pub fn all(&self) -> &[Brand] {
        &self.brands
    }

    /// Enabled brands by priority (the wallet picker's order).
    pub fn enabled(&self) -> impl Iterator<Item = &Brand> {
        self.brands.iter().filter(|b| b.enabled)
    }

    pub fn get(&self, id: &str) -> Option<&Brand> {
        self.brands.iter().find(|b| b.id == id)
    }

    pub fn shared_code_spaces(&self) -> &[SharedCodeSpace] {
        &self.shared
    }

    /// The first enabled brand (by priority) whose User-Agent rule matches.
    pub fn detect_by_user_agent(&self, ua: &str) -> Option<&Brand> {
        if ua.is_empty() {
            return None;
        }
        // Lower-cased copy made only if a case-insensitive rule is reached.
        let mut ua_lower: Option<String> = None;
        for brand in self.enabled() {
            let Some(rule) = &brand.user_agent else {
                continue;
            };
            let haystack = if rule.ignore_case {
                ua_lower
                    .get_or_insert_with(|| ua.to_ascii_lowercase())
                    .as_str()
            } else {
                ua
            };
            if rule.matches(haystack) {
                return Some(brand);
            }
        }
        None
    }

    /// The brand whose Alipay+ `pspId` this is (enabled or not: a payment that
    /// happened must be attributed even if the brand was switched off since).
    pub fn brand_for_psp_id(&self, psp_id: &str) -> Option<&Brand> {
        self.brands
            .iter()
            .find(|b| b.psp_id.as_deref() == Some(psp_id))
    }

    /// Routes a scanned customer code (digits only, as scanned; the caller strips
    /// scanner terminators) by the registry alone, every adapter assumed usable. The
    /// longest matching prefix wins; see [`CodeMatch`].
    pub fn detect_by_code(&self, code: &str) -> CodeMatch<'_> {
        self.classify_code(code, &|_| true).0
    }

    /// The adapter a code should be charged through; see [`BrandRegistry::route_code`].
    pub fn rail_for_code(
        &self,
        code: &str,
        usable: impl Fn(AdapterId) -> bool,
    ) -> Option<AdapterId> {
        self.route_code(code, usable).map(|route| route.adapter)
    }

    /// Where a customer code is charged, given which adapters are `usable` (configured
    /// here and able to take the payment). A code claimed by one brand takes that
    /// brand's route; a code of a shared space goes to the space's adapter when it is
    /// usable, and otherwise to the brand that claims the code most specifically (an
    /// Alipay code with only `alipay` configured is charged at Alipay as Alipay CN).
    pub fn route_code(
        &self,
        code: &str,
        usable: impl Fn(AdapterId) -> bool,
    ) -> Option<CodeRoute<'_>> {
        match self.classify_code(code, &usable) {
            (CodeMatch::Ambiguous(_), Some(adapter)) => Some(CodeRoute {
                brand: None,
                adapter,
            }),
            (CodeMatch::Brand(brand), _) => brand.route(&usable).map(|adapter| CodeRoute {
                brand: Some(brand),
                adapter,
            }),
            _ => None,
        }
    }

    fn classify_code(
        &self,
        code: &str,
        usable: &dyn Fn(AdapterId) -> bool,
    ) -> (CodeMatch<'_>, Option<AdapterId>) {
        if code.is_empty() || code.len() > MAX_CODE_LEN || !code.bytes().all(|b| b.is_ascii_digit())
        {
            return (CodeMatch::Unknown, None);
        }
        let mut best_len = 0;
        let mut best: Vec<&Brand> = Vec::new();
        for brand in self.enabled() {
            if let Some(len) = brand.code_specificity(code) {
                if len > best_len {
                    best_len = len;
                    best.clear();
                }
                if len == best_len {
                    best.push(brand);
                }
            }
        }
        // A shared space only applies when its rail is usable (configured, able to
        // take the payment, and some enabled brand on it) and no brand claims the
        // code with a longer prefix.
        let space = self
            .shared
            .iter()
            .filter_map(|s| s.rule.matched_prefix_len(code).map(|len| (s, len)))
            .filter(|(s, len)| {
                *len >= best_len
                    && usable(s.adapter)
                    && self.enabled().any(|b| b.adapter == s.adapter)
            })
            .max_by_key(|(_, len)| *len);
        if let Some((space, _)) = space {
            let mut candidates = best;
            for brand in self.enabled().filter(|b| b.adapter == space.adapter) {
                if !candidates.iter().any(|c| c.id == brand.id) {
                    candidates.push(brand);
                }
            }
            candidates.sort_by_key(|b| b.priority);
            return (CodeMatch::Ambiguous(candidates), Some(space.adapter));
        }
        match best.as_slice() {
            [] => (CodeMatch::Unknown, None),
            [one] => (CodeMatch::Brand(one), Some(one.adapter)),
            // Unreachable with a validated registry (overlaps are refused at load);
            // kept total so a future rule kind cannot turn a tie into a guess.
            _ => (CodeMatch::Ambiguous(best), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPHONE_WECHAT: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.42(0x18002a2a) NetType/WIFI Language/zh_CN";
    const WECHAT_WORK: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 wxwork/4.1.16 MicroMessenger/7.0.1 Language/zh ColorScheme/Light";
    const WINDOWS_WECHAT: &str = "Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/81.0.4044.138 Safari/537.36 NetType/WIFI MicroMessenger/7.0.20.1781(0x6700143B) WindowsWechat(0x63090a13)";
    const ANDROID_ALIPAY: &str = "Mozilla/5.0 (Linux; U; Android 13; zh-CN; SM-S9180 Build/TP1A.220624.014) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/69.0.3497.100 UWS/3.22.2.9999 Mobile Safari/537.36 NebulaSDK/1.8.100112 Nebula AlipayDefined(nt:WIFI,ws:393|0|2.75) AliApp(AP/10.5.36.8100) AlipayClient/10.5.36.8100 Language/zh-Hans useStatusBar/true";
    const ALIPAY_HK_BOTH: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Ariver/1.1.0 AliApp(APHK/15.3.2) Nebula WK RVKType(0) AlipayDefined(nt:WIFI,ws:390|844|3.0) AlipayClientHK/15.3.2 AlipayClient/15.3.2 Language/zh-Hant Region/HK";
    const ALIPAY_HK_AP_APP: &str = "Mozilla/5.0 (Linux; U; Android 12; zh-HK; SM-G9910) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/69.0.3497.100 Mobile Safari/537.36 AliApp(AP/15.2.0.210) AlipayClientHK/15.2.0.210 Language/zh-HK";
    const KAKAOTALK_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; SM-S918N Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.230 Mobile Safari/537.36;KAKAOTALK 2410420";
    const KAKAOTALK_IOS_LOWER: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 kakaotalk 10.4.2";
    const MPAY_ASSUMED: &str = "Mozilla/5.0 (Linux; Android 13; V2203A) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/110.0.5481.153 Mobile Safari/537.36 MPay/3.9.0";
    const DESKTOP_CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

    fn registry() -> BrandRegistry {
        BrandRegistry::default_registry().unwrap()
    }

    fn ua(ua: &str) -> Option<String> {
        registry()
            .detect_by_user_agent(ua)
            .map(|b| b.id().to_owned())
    }

    fn ids(brands: &[&Brand]) -> Vec<String> {
        brands.iter().map(|b| b.id().to_owned()).collect()
    }

    fn code(reg: &BrandRegistry, code: &str) -> Result<String, Option<Vec<String>>> {
        match reg.detect_by_code(code) {
            CodeMatch::Brand(b) => Ok(b.id().to_owned()),
            CodeMatch::Ambiguous(list) => Err(Some(ids(&list))),
            CodeMatch::Unknown => Err(None),
        }
    }

    #[test]
    fn shipped_registry_loads_with_every_brand_in_priority_order() {
        let reg = registry();
        let enabled: Vec<&str> = reg.enabled().map(Brand::id).collect();
        assert_eq!(
            enabled,
            ["wechat_pay", "alipay_hk", "alipay_cn", "kakao_pay", "mpay"]
        );
        let mpay = reg.get("mpay").unwrap();
        assert_eq!(mpay.adapter(), AdapterId::AlipayPlus);
        assert_eq!(mpay.params().get("psp").map(String::as_str), Some("MPAY"));
        assert_eq!(reg.get("alipay_hk").unwrap().params()["psp"], "ALIPAY_HK");
        assert_eq!(reg.get("kakao_pay").unwrap().params()["psp"], "KAKAOPAY");
        assert_eq!(reg.get("alipay_cn").unwrap().adapter(), AdapterId::Alipay);
        assert_eq!(
            reg.get("wechat_pay").unwrap().adapter(),
            AdapterId::WechatPay
        );
        assert_eq!(reg.shared_code_spaces()[0].adapter, AdapterId::AlipayPlus);
    }

    #[test]
    fn display_names_follow_the_language_tag() {
        let reg = registry();
        let mpay = reg.get("mpay").unwrap().names();
        assert_eq!(mpay.for_language("zh-Hant-MO"), "澳門錢包");
        assert_eq!(mpay.for_language("zh_TW"), "澳門錢包");
        assert_eq!(mpay.for_language("pt-PT"), "MPay");
        assert_eq!(mpay.for_language("en"), "MPay");
        assert_eq!(mpay.for_language(""), "MPay");
        let wechat = reg.get("wechat_pay").unwrap().names();
        assert_eq!(wechat.for_language("zh"), "微信支付");
    }

    #[test]
    fn wechat_in_app_browsers_are_wechat_pay() {
        assert_eq!(ua(IPHONE_WECHAT).as_deref(), Some("wechat_pay"));
        assert_eq!(ua(WINDOWS_WECHAT).as_deref(), Some("wechat_pay"));
    }

    #[test]
    fn wechat_work_is_excluded() {
        assert_eq!(ua(WECHAT_WORK), None);
    }

    #[test]
    fn android_alipay_is_alipay_cn() {
        assert_eq!(ua(ANDROID_ALIPAY).as_deref(), Some("alipay_cn"));
    }

    #[test]
    fn alipay_hk_wins_over_plain_alipay_markers_in_the_same_user_agent() {
        assert_eq!(ua(ALIPAY_HK_BOTH).as_deref(), Some("alipay_hk"));
        assert_eq!(ua(ALIPAY_HK_AP_APP).as_deref(), Some("alipay_hk"));
    }

    #[test]
    fn kakaotalk_is_detected_in_any_case() {
        assert_eq!(ua(KAKAOTALK_ANDROID).as_deref(), Some("kakao_pay"));
        assert_eq!(ua(KAKAOTALK_IOS_LOWER).as_deref(), Some("kakao_pay"));
    }

    #[test]
    fn mpay_is_detected_by_its_assumed_marker() {
        assert_eq!(ua(MPAY_ASSUMED).as_deref(), Some("mpay"));
    }

    #[test]
    fn browsers_without_a_wallet_marker_match_nothing() {
        assert_eq!(ua(DESKTOP_CHROME), None);
        assert_eq!(ua(""), None);
        // Case matters where the wallet's marker is case-exact.
        assert_eq!(ua("Mozilla/5.0 micromessenger/8.0"), None);
    }

    #[test]
    fn wechat_payment_code_is_wechat_pay() {
        let reg = registry();
        assert_eq!(code(&reg, "134567890123456789"), Ok("wechat_pay".into()));
        assert_eq!(
            reg.rail_for_code("134567890123456789", |_| true),
            Some(AdapterId::WechatPay)
        );
        assert_eq!(code(&reg, "104567890123456789"), Ok("wechat_pay".into()));
    }

    #[test]
    fn codes_of_wrong_length_or_with_non_digits_are_unknown() {
        let reg = registry();
        for bad in [
            "13456789012345678",                    // 17 digits
            "1345678901234567890",                  // 19 digits
            "13456789012345678X",                   // letter
            " 134567890123456789",                  // scanner whitespace is the caller's job
            "134567890123456789\r",                 // scanner terminator
            "１３４５６７８９０１２３４５６７８９", // full-width digits
            "",
            "-34567890123456789",
            "164567890123456789", // 18 digits but prefix 16
        ] {
            assert_eq!(code(&reg, bad), Err(None), "{bad:?}");
            assert_eq!(reg.rail_for_code(bad, |_| true), None);
        }
        assert_eq!(code(&reg, &"2".repeat(65)), Err(None));
    }

    #[test]
    fn alipay_cn_code_is_ambiguous_and_goes_to_the_alipay_plus_rail() {
        let reg = registry();
        // 18 digits starting 28: Alipay CN, or an Alipay+ legacy `28`+16 code.
        assert_eq!(
            code(&reg, "281234567890123456"),
            Err(Some(vec![
                "alipay_hk".into(),
                "alipay_cn".into(),
                "kakao_pay".into(),
                "mpay".into()
            ]))
        );
        assert_eq!(
            reg.rail_for_code("281234567890123456", |_| true),
            Some(AdapterId::AlipayPlus)
        );
    }

    #[test]
    fn alipay_cn_code_is_alipay_cn_when_no_alipay_plus_brand_is_enabled() {
        let reg =
            BrandRegistry::from_toml(&with_disabled(&["alipay_hk", "kakao_pay", "mpay"])).unwrap();
        assert_eq!(
            reg.enabled().map(Brand::id).collect::<Vec<_>>(),
            ["wechat_pay", "alipay_cn"]
        );
        assert_eq!(code(&reg, "281234567890123456"), Ok("alipay_cn".into()));
        assert_eq!(
            reg.rail_for_code("281234567890123456", |_| true),
            Some(AdapterId::Alipay)
        );
        // Disabled brands are not detected by User-Agent either.
        assert_eq!(reg.detect_by_user_agent(MPAY_ASSUMED), None);
        assert_eq!(
            reg.detect_by_user_agent(ALIPAY_HK_BOTH).map(Brand::id),
            None,
            "AlipayHK excluded from Alipay CN even when AlipayHK is disabled"
        );
    }

    #[test]
    fn alipay_plus_code_with_a_known_issuer_id_is_that_brand() {
        let reg = registry();
        assert_eq!(code(&reg, "280853020123456789012345"), Ok("mpay".into()));
        assert_eq!(
            reg.rail_for_code("280853020123456789012345", |_| true),
            Some(AdapterId::AlipayPlus)
        );
        assert_eq!(
            code(&reg, "280852020123456789012345"),
            Ok("alipay_hk".into())
        );
        assert_eq!(
            code(&reg, "280082020123456789012345"),
            Ok("kakao_pay".into())
        );
        // Same issuer but not a payment code (BTI 01), or the wrong length: not MPay.
        assert!(code(&reg, "280853010123456789012345").is_err());
        assert!(code(&reg, "28085302012345678901234").is_err());
    }

    #[test]
    fn alipay_plus_code_with_an_unknown_issuer_id_goes_to_the_alipay_plus_rail() {
        let reg = registry();
        // The example code of the Alipay+ code-format page.
        let example = "251001020123456789012345";
        assert!(matches!(
            reg.detect_by_code(example),
            CodeMatch::Ambiguous(_)
        ));
        assert_eq!(
            reg.rail_for_code(example, |_| true),
            Some(AdapterId::AlipayPlus)
        );
        // 32 digits is beyond Alipay CN's 24 but inside the Alipay+ range.
        let long = "25100102012345678901234567890123";
        assert_eq!(
            code(&reg, long),
            Err(Some(vec![
                "alipay_hk".into(),
                "kakao_pay".into(),
                "mpay".into()
            ]))
        );
        assert_eq!(
            reg.rail_for_code(long, |_| true),
            Some(AdapterId::AlipayPlus)
        );
    }

    #[test]
    fn unknown_prefixes_are_unknown() {
        let reg = registry();
        assert_eq!(code(&reg, "991234567890123456"), Err(None));
        assert_eq!(code(&reg, "990853020123456789012345"), Err(None));
        assert_eq!(code(&reg, "6212345678901234567"), Err(None)); // UnionPay: no brand
    }

    #[test]
    fn psp_ids_map_back_to_brands() {
        let reg = registry();
        let id = |psp: &str| reg.brand_for_psp_id(psp).map(Brand::id);
        assert_eq!(id("A111253100000000"), Some("mpay"));
        assert_eq!(id("1022160000000000000"), Some("alipay_hk"));
        assert_eq!(id("1022172000000000001"), Some("kakao_pay"));
        assert_eq!(id("1022088000000000001"), Some("alipay_cn"));
        assert_eq!(id("2021234400000000"), None);
        assert_eq!(id(""), None);
    }

    #[test]
    fn kakao_pay_prefers_its_direct_adapter_only_when_configured() {
        let reg = registry();
        let kakao = reg.get("kakao_pay").unwrap();
        assert_eq!(kakao.direct_adapter(), Some(AdapterId::KakaoPay));
        assert_eq!(kakao.route(|_| true), Some(AdapterId::KakaoPay));
        assert_eq!(
            kakao.route(|a| a == AdapterId::AlipayPlus),
            Some(AdapterId::AlipayPlus)
        );
        assert_eq!(kakao.route(|_| false), None);
        let mpay = reg.get("mpay").unwrap();
        assert_eq!(mpay.route(|a| a == AdapterId::KakaoPay), None);
    }

    /// The capabilities the shipped adapters declare, for the adapters in `configured`.
    fn shipped_capabilities(
        configured: &[AdapterId],
    ) -> impl Fn(AdapterId) -> Option<Capabilities> {
        use crate::contract::{RefundSupport, ResultDelivery};
        let configured = configured.to_vec();
        move |id| {
            let (modes, currencies) = match id {
                AdapterId::KakaoPay => (vec![PayMode::StaticEntry], vec![Currency::Krw]),
                AdapterId::AlipayPlus => (
                    vec![
                        PayMode::StaticEntry,
                        PayMode::DynamicQr,
                        PayMode::CustomerCode,
                    ],
                    vec![Currency::Mop, Currency::Hkd, Currency::Krw],
                ),
                AdapterId::WechatPay => (
                    vec![PayMode::DynamicQr, PayMode::Jsapi, PayMode::CustomerCode],
                    vec![Currency::Cny, Currency::Mop],
                ),
                AdapterId::Alipay => (
                    vec![
                        PayMode::DynamicQr,
                        PayMode::StaticEntry,
                        PayMode::CustomerCode,
                    ],
                    vec![Currency::Cny, Currency::Mop],
                ),
            };
            configured.contains(&id).then_some(Capabilities {
                modes,
                currencies,
                refunds: RefundSupport::Partial,
                results: ResultDelivery::Webhook,
            })
        }
    }

    #[test]
    fn kakao_pay_goes_direct_only_for_what_its_direct_adapter_can_take() {
        let reg = registry();
        let kakao = reg.get("kakao_pay").unwrap();
        let both = shipped_capabilities(&AdapterId::ALL);
        let direct = Some(AdapterId::KakaoPay);
        let rail = Some(AdapterId::AlipayPlus);
        assert_eq!(kakao.route_for(&Need::plate(Currency::Krw), &both), direct);
        assert_eq!(
            kakao.route_for(&Need::merchant_qr(Currency::Krw), &both),
            direct
        );
        // KRW only, redirect only: MOP and payment codes take the Alipay+ rail.
        assert_eq!(kakao.route_for(&Need::plate(Currency::Mop), &both), rail);
        assert_eq!(
            kakao.route_for(&Need::merchant_qr(Currency::Mop), &both),
            rail
        );
        assert_eq!(
            kakao.route_for(&Need::customer_code(Currency::Krw), &both),
            rail
        );
        let direct_only = shipped_capabilities(&[AdapterId::KakaoPay]);
        assert_eq!(
            kakao.route_for(&Need::plate(Currency::Krw), &direct_only),
            direct
        );
        assert_eq!(
            kakao.route_for(&Need::plate(Currency::Mop), &direct_only),
            None
        );
        // A brand without a direct adapter only ever takes its rail.
        let wechat = reg.get("wechat_pay").unwrap();
        assert_eq!(
            wechat.route_for(&Need::plate(Currency::Mop), &both),
            Some(AdapterId::WechatPay)
        );
        assert_eq!(wechat.route_for(&Need::plate(Currency::Krw), &both), None);
    }

    #[test]
    fn the_shared_code_space_falls_back_to_alipay_when_alipay_plus_is_not_configured() {
        let reg = registry();
        let code = "281234567890123456";
        let everything = reg.route_code(code, |_| true).unwrap();
        assert_eq!(everything.adapter, AdapterId::AlipayPlus);
        assert_eq!(
            everything.brand, None,
            "the wallet's answer names the brand"
        );
        let alipay_only = reg.route_code(code, |a| a == AdapterId::Alipay).unwrap();
        assert_eq!(alipay_only.adapter, AdapterId::Alipay);
        assert_eq!(alipay_only.brand.map(Brand::id), Some("alipay_cn"));
        assert_eq!(
            reg.rail_for_code(code, |a| a == AdapterId::Alipay),
            Some(AdapterId::Alipay)
        );
        assert_eq!(reg.route_code(code, |_| false), None);
        // 32 digits is beyond Alipay CN's 24: only the Alipay+ rail could take it.
        let long = "25100102012345678901234567890123";
        assert_eq!(reg.rail_for_code(long, |a| a == AdapterId::Alipay), None);
        // The registry's own view does not depend on what is configured.
        assert!(matches!(reg.detect_by_code(code), CodeMatch::Ambiguous(_)));
    }

    #[test]
    fn a_kakao_pay_payment_code_is_charged_through_alipay_plus() {
        let reg = registry();
        let code = "280082020123456789012345";
        let caps = shipped_capabilities(&AdapterId::ALL);
        let need = Need::customer_code(Currency::Krw);
        let route = reg
            .route_code(code, |id| caps(id).is_some_and(|c| need.met_by(&c)))
            .unwrap();
        assert_eq!(route.brand.map(Brand::id), Some("kakao_pay"));
        assert_eq!(route.adapter, AdapterId::AlipayPlus);
        // A brand's code whose adapters cannot take it has no route.
        assert_eq!(
            reg.route_code("134567890123456789", |a| a != AdapterId::WechatPay),
            None
        );
    }

    #[test]
    fn a_new_brand_on_an_existing_adapter_is_configuration_only() {
        let gcash = r#"
[[brand]]
id = "gcash"
adapter = "alipay_plus"
enabled = true
priority = 60
psp_id = "1022170000000000000"
names = { en = "GCash", "zh-Hant" = "GCash", pt = "GCash" }
params = { psp = "GCASH" }

[brand.user_agent]
markers = ["GCash/"]

[[brand.codes]]
min_len = 24
max_len = 24
prefixes = ["28063302"]
"#;
        let reg = BrandRegistry::from_toml(&format!("{DEFAULT_TOML}\n{gcash}")).unwrap();
        let ua = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36 GCash/5.80.0";
        let brand = reg.detect_by_user_agent(ua).unwrap();
        assert_eq!(brand.id(), "gcash");
        assert_eq!(brand.adapter(), AdapterId::AlipayPlus);
        assert_eq!(brand.params()["psp"], "GCASH");
        assert_eq!(code(&reg, "280633020123456789012345"), Ok("gcash".into()));
        assert_eq!(
            reg.brand_for_psp_id("1022170000000000000").map(Brand::id),
            Some("gcash")
        );
        // The new brand joins the Alipay+ candidates of the shared space.
        assert!(matches!(
            reg.detect_by_code("281234567890123456"),
            CodeMatch::Ambiguous(list) if list.iter().any(|b| b.id() == "gcash")
        ));
        // Existing detection is unchanged.
        assert_eq!(
            reg.detect_by_user_agent(IPHONE_WECHAT).map(Brand::id),
            Some("wechat_pay")
        );
    }

    /// The shipped registry with some brands switched off, as an operator would.
    fn with_disabled(disabled: &[&str]) -> String {
        let mut current = String::new();
        let mut out = String::new();
        for line in DEFAULT_TOML.lines() {
            if let Some(id) = line.strip_prefix("id = ") {
                current = id.trim_matches('"').to_owned();
            }
            if line == "enabled = true" && disabled.contains(&current.as_str()) {
                out.push_str("enabled = false\n");
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn one_brand(body: &str) -> String {
        format!(
            r#"
[[brand]]
id = "alpha"
enabled = true
priority = 1
names = {{ en = "A", "zh-Hant" = "A", pt = "A" }}
{body}
"#
        )
    }

    #[test]
    fn unknown_adapter_names_are_rejected() {
        let err = BrandRegistry::from_toml(&one_brand("adapter = \"paypal\"")).unwrap_err();
        assert_eq!(
            err,
            RegistryError::UnknownAdapter {
                brand: "alpha".into(),
                name: "paypal".into()
            }
        );
        let err = BrandRegistry::from_toml(&one_brand(
            "adapter = \"wechat_pay\"\ndirect_adapter = \"WeChat\"",
        ))
        .unwrap_err();
        assert!(matches!(err, RegistryError::UnknownAdapter { .. }));
    }

    #[test]
    fn overlapping_code_rules_are_reported() {
        let clash = r#"
[[brand]]
id = "copycat"
adapter = "wechat_pay"
enabled = false
priority = 99
names = { en = "C", "zh-Hant" = "C", pt = "C" }

[[brand.codes]]
min_len = 17
max_len = 19
prefixes = ["13"]
"#;
        let err = BrandRegistry::from_toml(&format!("{DEFAULT_TOML}\n{clash}")).unwrap_err();
        assert_eq!(
            err,
            RegistryError::OverlappingCodeRules {
                first: "wechat_pay".into(),
                second: "copycat".into(),
                prefix: "13".into(),
                min_len: 18,
                max_len: 18
            }
        );
        // A longer prefix is more specific, not an overlap; so is a disjoint length.
        let specific = clash.replace("[\"13\"]", "[\"1345\"]");
        assert!(BrandRegistry::from_toml(&format!("{DEFAULT_TOML}\n{specific}")).is_ok());
        let disjoint = clash.replace("max_len = 19", "max_len = 17");
        assert!(BrandRegistry::from_toml(&format!("{DEFAULT_TOML}\n{disjoint}")).is_ok());
    }

    #[test]
    fn empty_markers_are_rejected() {
        for ua in [
            "[brand.user_agent]\nmarkers = []",
            "[brand.user_agent]\nmarkers = [\"\"]",
            "[brand.user_agent]\nmarkers = [\"X\"]\nexclude = [\"\"]",
        ] {
            let text = one_brand(&format!("adapter = \"wechat_pay\"\n{ua}"));
            assert_eq!(
                BrandRegistry::from_toml(&text).unwrap_err(),
                RegistryError::EmptyMarker {
                    brand: "alpha".into()
                },
                "{ua}"
            );
        }
    }

    #[test]
    fn inconsistent_registries_are_rejected_with_the_reason() {
        let dup_id = format!(
            "{DEFAULT_TOML}\n{}",
            one_brand("adapter = \"alipay\"").replace("alpha", "mpay")
        );
        assert_eq!(
            BrandRegistry::from_toml(&dup_id).unwrap_err(),
            RegistryError::DuplicateBrand("mpay".into())
        );
        let dup_priority =
            one_brand("adapter = \"alipay\"").replace("priority = 1", "priority = 10");
        assert!(matches!(
            BrandRegistry::from_toml(&format!("{DEFAULT_TOML}\n{dup_priority}")).unwrap_err(),
            RegistryError::DuplicatePriority { priority: 10, .. }
        ));
        let dup_psp = one_brand("adapter = \"alipay_plus\"\npsp_id = \"A111253100000000\"");
        assert!(matches!(
            BrandRegistry::from_toml(&format!("{DEFAULT_TOML}\n{dup_psp}")).unwrap_err(),
            RegistryError::DuplicatePspId { .. }
        ));
        assert_eq!(
            BrandRegistry::from_toml(&one_brand("adapter = \"alipay_plus\"")).unwrap_err(),
            RegistryError::MissingPspId {
                brand: "alpha".into()
            }
        );
        assert!(matches!(
            BrandRegistry::from_toml(
                &one_brand("adapter = \"alipay\"").replace("en = \"A\"", "en = \" \"")
            ),
            Err(RegistryError::EmptyName { lang: "en", .. })
        ));
        assert!(matches!(
            BrandRegistry::from_toml(&one_brand("adapter = \"alipay\"").replace("alpha", "Alpha")),
            Err(RegistryError::BadBrandId(_))
        ));
        assert!(matches!(
            BrandRegistry::from_toml(&one_brand(
                "adapter = \"alipay\"\ndirect_adapter = \"alipay\""
            )),
            Err(RegistryError::DirectAdapterSameAsAdapter { .. })
        ));
        // A typo in a field name is an error, not a silently ignored setting.
        assert!(matches!(
            BrandRegistry::from_toml(&one_brand("adapter = \"alipay\"\npriorty = 3")),
            Err(RegistryError::Syntax(_))
        ));
        assert!(matches!(
            BrandRegistry::from_toml("[[brand]]\nid = "),
            Err(RegistryError::Syntax(_))
        ));
        for rule in [
            "min_len = 0\nmax_len = 4\nprefixes = [\"1\"]",
            "min_len = 5\nmax_len = 4\nprefixes = [\"1\"]",
            "min_len = 4\nmax_len = 99\nprefixes = [\"1\"]",
            "min_len = 4\nmax_len = 4\nprefixes = []",
            "min_len = 4\nmax_len = 4\nprefixes = [\"1a\"]",
            "min_len = 4\nmax_len = 4\nprefixes = [\"\"]",
            "min_len = 2\nmax_len = 4\nprefixes = [\"123\"]",
        ] {
            let text = one_brand(&format!("adapter = \"alipay\"\n[[brand.codes]]\n{rule}"));
            assert!(
                matches!(
                    BrandRegistry::from_toml(&text),
                    Err(RegistryError::BadCodeRule { .. })
                ),
                "{rule}"
            );
        }
    }
}
